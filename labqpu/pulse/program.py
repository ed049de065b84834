"""``PulseProgram``: the compiled, plain-data form of one circuit (or one pulse-level experiment).

A program is a struct of arrays: every play is a row (output port, start sample, waveform id,
amplitude, phase, NCO frequency), sorted by port then start; waveforms are stored once each in
a table (complex64, peak 1.0); acquisitions are rows (input port, start, duration, demodulation
frequency, qubit, classical bit). A play's amplitude may instead refer to an entry of the
parameter table (``play_amp_ref`` >= 0), and ``binds`` may set other elements (start samples,
phases, frequencies, the duration; :data:`BINDABLE`) from it, so that a sweep can be one
uploaded program (docs/protocol.md, section 4.7).
Feed-forward: a play may belong to a conditional block (``play_block`` >= 0) that runs only
when the discriminated result of an earlier acquisition equals the block's value
(``block_acq``, ``block_value``) and its parent block, if it has one (``block_parent``), runs;
phase shifts (``shift_*``) add a phase to the later plays of a port, always or when their
block runs; each acquisition carries the linear discriminator the controller applies
(``acq_disc_axis``, a unit vector in the IQ plane or 0 for none, and ``acq_disc_threshold``:
result 1 iff Re(conj(axis) iq) > threshold).
The VISA settings the program assumes (LO frequencies and powers, flux-bias currents) travel
with it: its meaning depends on them.

The program is what the controller runs; ``to_wire`` gives the arrays and the JSON metadata
of an ``upload`` (see ``docs/protocol.md``). ``to_bytes`` / ``from_bytes`` store the whole
program losslessly, without pickle: the magic ``LQPP``, a little-endian uint32 format version
and uint32 header length, a UTF-8 JSON header (settings, header, and per array its name, dtype,
length and byte offset), then the raw little-endian array bytes, and a trailer: ``LQCK`` and
a little-endian uint32 CRC-32 of everything before it, checked before anything is parsed
(programs stored before it came, with 2d8cf59, have none and are read without the check;
older readers ignore it). ``draw()`` plots it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from labqpu.errors import PulseError

PLAY_FIELDS = ("play_port", "play_start", "play_wave", "play_amp", "play_amp_ref",
               "play_phase_rad", "play_freq_hz", "play_block")
ACQ_FIELDS = ("acq_port", "acq_start", "acq_duration", "acq_freq_hz")
#: Classical bits a program may write (its ``num_clbits``): far beyond any lab device's
#: measurements, and each shot's bitstring in the counts is this long.
MAX_CLBITS = 1 << 16
_DTYPES = {
    "play_port": np.int32, "play_start": np.int64, "play_wave": np.int32,
    "play_amp": np.float64, "play_amp_ref": np.int32, "play_phase_rad": np.float64,
    "play_freq_hz": np.float64, "wave_offset": np.int64, "wave_data": np.complex64,
    "acq_port": np.int32, "acq_start": np.int64, "acq_duration": np.int64,
    "acq_freq_hz": np.float64, "acq_qubit": np.int32, "acq_clbit": np.int32,
    "param_values": np.float64,
    "play_block": np.int32, "block_acq": np.int32, "block_value": np.int32,
    "block_parent": np.int32, "shift_port": np.int32, "shift_start": np.int64,
    "shift_phase_rad": np.float64,
    "shift_block": np.int32, "acq_disc_axis": np.complex128, "acq_disc_threshold": np.float64,
}
#: The feed-forward arrays (wire protocol 3); a program without blocks, shifts and
#: discriminators hashes as before they existed.
FEEDFORWARD_FIELDS = ("play_block", "block_acq", "block_value", "shift_port", "shift_start",
                      "shift_phase_rad", "shift_block", "acq_disc_axis", "acq_disc_threshold")
#: Nested blocks (``block_parent``): stored, hashed and sent only when a block has a parent, so
#: a program without nesting is exactly what it was before they existed (docs/protocol.md 4.5).
NESTED_FIELD = "block_parent"


_DTYPE_OBJECTS = tuple((name, np.dtype(dtype)) for name, dtype in _DTYPES.items())
#: The array fields in the order ``content_hash`` takes them.
_HASHED_FIELDS = tuple(sorted(_DTYPES))
_ACQ_ALL = (*ACQ_FIELDS, "acq_qubit", "acq_clbit", "acq_disc_axis", "acq_disc_threshold")


_MAGIC = b"LQPP"
#: The trailer of a stored program: this, then the CRC-32 of everything before it.
_CHECK_MAGIC = b"LQCK"
#: Version 2 added the feed-forward arrays, version 3 ``binds``, version 4 ``block_parent``;
#: older files read as programs without them.
_FORMAT_VERSION = 4
#: The fields ``binds`` may set from the parameter table, with whether they hold whole
#: numbers; ``duration_samples`` has the single index 0.
BINDABLE = {"play_start": True, "play_phase_rad": False, "play_freq_hz": False,
            "acq_start": True, "acq_freq_hz": False, "shift_start": True,
            "shift_phase_rad": False, "duration_samples": True}


@dataclass(frozen=True)
class LoSetting:
    """What one LO source must output while the program runs."""

    frequency_hz: float
    power_dbm: float


@dataclass(frozen=True, eq=False)
class PulseProgram:
    """One compiled program for one controller. All times in samples at ``sample_rate_hz``."""

    controller: str
    sample_rate_hz: float
    duration_samples: int
    play_port: np.ndarray
    play_start: np.ndarray
    play_wave: np.ndarray
    play_amp: np.ndarray
    play_amp_ref: np.ndarray
    play_phase_rad: np.ndarray
    play_freq_hz: np.ndarray
    wave_offset: np.ndarray
    wave_data: np.ndarray
    acq_port: np.ndarray
    acq_start: np.ndarray
    acq_duration: np.ndarray
    acq_freq_hz: np.ndarray
    acq_qubit: np.ndarray
    acq_clbit: np.ndarray
    param_names: tuple[str, ...] = ()
    param_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lo_settings: dict[str, LoSetting] = field(default_factory=dict)
    flux_bias_a: dict[tuple[str, int], float] = field(default_factory=dict)
    num_clbits: int = 0
    header: dict = field(default_factory=dict)
    snapshot_id: int | None = None
    #: The content hash of snapshot ``snapshot_id``, which tells it from another store's
    #: snapshot of the same id (None: not recorded, a program stored by an older labqpu).
    snapshot_hash: str | None = None
    play_block: np.ndarray | None = None
    block_acq: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    block_value: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    #: Each block's parent block (-1: none); a block runs only when its parent runs, and a
    #: parent comes before its children. None: no block has a parent.
    block_parent: np.ndarray | None = None
    shift_port: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    shift_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shift_phase_rad: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shift_block: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    acq_disc_axis: np.ndarray | None = None
    acq_disc_threshold: np.ndarray | None = None
    #: ``(controller, outputs, inputs)`` of each controller of the rack, in rack-port order,
    #: when the program spans several: its ports are then rack ports (``ChannelMap``) and
    #: ``labqpu.pulse.split.split_program`` gives each controller its part. Empty for a
    #: one-controller program.
    rack: tuple[tuple[str, int, int], ...] = ()
    #: ``(field, index, k)``: element ``index`` of ``field`` (one of :data:`BINDABLE`) takes
    #: entry k of the parameter table; the stored element is its value at ``param_values``.
    binds: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rack", tuple((str(n), int(o), int(i)) for n, o, i in self.rack))
        object.__setattr__(self, "binds", tuple((str(f), int(i), int(k))
                                                for f, i, k in self.binds))
        if self.play_block is None:
            object.__setattr__(self, "play_block", np.full(np.shape(self.play_port), -1))
        if self.block_parent is None:
            object.__setattr__(self, "block_parent", np.full(np.shape(self.block_acq), -1))
        for name in ("acq_disc_axis", "acq_disc_threshold"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.zeros(np.shape(self.acq_port)))
        shapes = {}
        for name, dtype in _DTYPE_OBJECTS:
            arr = getattr(self, name)
            if not (type(arr) is np.ndarray and arr.dtype is dtype and arr.flags.c_contiguous):
                arr = np.ascontiguousarray(arr, dtype=dtype)
                object.__setattr__(self, name, arr)
            arr.setflags(write=False)
            shapes[name] = arr.shape
        n_play = shapes["play_port"]
        if len(n_play) != 1 or any(shapes[f] != n_play for f in PLAY_FIELDS):
            raise ValueError("PulseProgram: play arrays must all have the same length")
        n_acq = shapes["acq_port"]
        if len(n_acq) != 1 or any(shapes[f] != n_acq for f in _ACQ_ALL):
            raise ValueError("PulseProgram: acquisition arrays must all have the same length")
        if len(self.param_names) != self.param_values.shape[0]:
            raise ValueError("PulseProgram: parameter names and values differ in length")
        if shapes["block_value"] != shapes["block_acq"] or \
                shapes["block_parent"] != shapes["block_acq"] or any(
                shapes[f] != shapes["shift_port"] for f in ("shift_start", "shift_phase_rad",
                                                            "shift_block")):
            raise ValueError("PulseProgram: block or phase-shift arrays differ in length")
        bad = np.flatnonzero((self.block_parent < -1)
                             | (self.block_parent >= np.arange(shapes["block_acq"][0])))
        if bad.size:
            raise ValueError(f"PulseProgram: block {bad[0]} has the parent "
                             f"{self.block_parent[bad[0]]}; a parent is -1 or an earlier block")
        for name, index, k in self.binds:
            size = 1 if name == "duration_samples" else shapes.get(name, (-1,))[0]
            if name not in BINDABLE or not 0 <= index < size \
                    or not 0 <= k < len(self.param_names):
                raise ValueError(f"PulseProgram: bind {(name, index, k)} names no bindable "
                                 "element or no parameter")
        if len({(name, index) for name, index, _ in self.binds}) != len(self.binds):
            raise ValueError("PulseProgram: an element is bound twice")
        if self.binds and self.rack:
            raise ValueError("PulseProgram: binds apply to a one-controller program")

    @classmethod
    def _assemble(cls, **values: Any) -> PulseProgram:
        """A program from a builder that gives every array field (``_DTYPES``, with
        ``play_block``, ``acq_disc_axis`` and ``acq_disc_threshold``) as a C-contiguous array
        with consistent lengths, and no ``binds``: the compiler. Dtypes are converted and the
        arrays frozen as ``__post_init__`` does; lengths and binds are not checked again (they
        are a compilation's fixed cost; ``tests/pulse/test_compiler_pinned.py`` and
        ``test_dynamic.py`` check that the checked constructor gives the same program).
        """
        program = object.__new__(cls)
        state = program.__dict__
        state.update(_ASSEMBLE_DEFAULTS)
        state.update(values)
        if state.keys() != _FIELD_SET:
            raise TypeError(f"PulseProgram._assemble: missing {sorted(_FIELD_SET - state.keys())}"
                            f", unknown {sorted(state.keys() - _FIELD_SET)}")
        state["rack"] = tuple((str(n), int(o), int(i)) for n, o, i in state["rack"])
        if state["block_parent"] is None:
            n_block = state["block_acq"].shape[0]
            state["block_parent"] = np.full(n_block, -1, np.int32) if n_block else _NO_PARENTS
        for name, dtype in _DTYPE_OBJECTS:
            arr = state[name]
            if arr.dtype is not dtype:
                arr = state[name] = np.ascontiguousarray(arr, dtype=dtype)
            arr.setflags(write=False)
        return program

    def with_header(self, header: dict) -> PulseProgram:
        """This program with ``header`` instead of its own: a shallow copy that shares the
        (read-only) arrays and the content hash, which the header is not part of."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)  # copy.copy's state, without its reduce protocol
        out.__dict__["header"] = header
        return out

    @property
    def display_name(self) -> str:
        """The name errors and logs give the program: its header's ``name``, else the first 12
        hex digits of its content hash."""
        name = self.header.get("name")
        return str(name) if name is not None else self.content_hash[:12]

    @property
    def has_feedforward(self) -> bool:
        """True when the program has conditional blocks, phase shifts or discriminators."""
        return bool(self.block_acq.size or self.shift_port.size
                    or np.any(self.acq_disc_axis != 0))

    @functools.cached_property
    def has_nested_blocks(self) -> bool:
        """True when a conditional block has a parent (docs/protocol.md 4.5, nested blocks)."""
        return bool(np.any(self.block_parent >= 0))

    @functools.cached_property
    def waveform_hashes(self) -> tuple[str, ...]:
        """SHA-256 (hex) of each waveform's samples, in table order: computed once, shared
        with :meth:`with_header` copies."""
        return tuple(hashlib.sha256(self.waveform(i).tobytes()).hexdigest()
                     for i in range(self.num_waveforms))

    @functools.cached_property
    def waveform_peaks(self) -> np.ndarray:
        """Each waveform's peak |sample| (0 for an empty one), in table order: computed once,
        shared with :meth:`with_header` copies. Read-only."""
        peaks = np.zeros(self.num_waveforms)
        filled = np.diff(self.wave_offset) > 0
        if filled.any():
            peaks[filled] = np.maximum.reduceat(np.abs(self.wave_data),
                                                self.wave_offset[:-1][filled])
        peaks.flags.writeable = False
        return peaks

    @property
    def num_waveforms(self) -> int:
        """Number of unique waveforms in the table."""
        return self.wave_offset.shape[0] - 1

    def waveform(self, wave_id: int) -> np.ndarray:
        """Samples (complex64) of waveform ``wave_id``."""
        return self.wave_data[self.wave_offset[wave_id]:self.wave_offset[wave_id + 1]]

    def to_wire(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and metadata of the ``upload`` op (parameter references resolved by the
        controller from ``param_values``); ``PulseError`` for a program that spans several
        controllers (upload each part of ``labqpu.pulse.split.split_program``)."""
        if self.rack:
            raise PulseError(f"program {self.header.get('name', '')!r} spans controllers "
                             f"{[r[0] for r in self.rack]}: upload each part of split_program()",
                             parameter="rack")
        arrays = {name: getattr(self, name) for name in (
            *PLAY_FIELDS, "wave_offset", "wave_data", *ACQ_FIELDS, "param_values",
            *(f for f in FEEDFORWARD_FIELDS if f != "play_block"))}
        if self.has_nested_blocks:
            arrays[NESTED_FIELD] = self.block_parent
        if not np.all(np.isfinite(self.param_values)):
            # A parameter without a value (NaN: left to the run's parameter_binds, which the
            # backend requires) goes on the wire as 0, which every point then replaces.
            arrays["param_values"] = np.nan_to_num(self.param_values, nan=0.0, posinf=0.0,
                                                   neginf=0.0)
        meta = {"sample_rate_hz": self.sample_rate_hz, "duration_samples": self.duration_samples,
                "param_names": list(self.param_names)}
        if self.binds:
            meta["binds"] = [list(b) for b in self.binds]
        return arrays, meta

    @functools.cached_property
    def content_hash(self) -> str:
        """SHA-256 over every array and setting: equal hashes mean the same experiment
        (computed once: the program is frozen and its arrays are read-only)."""
        h = hashlib.sha256()
        skip = (() if self.has_feedforward else FEEDFORWARD_FIELDS) + (
            () if self.has_nested_blocks else (NESTED_FIELD,))
        for name in _HASHED_FIELDS:
            if name in skip:
                continue
            arr = getattr(self, name)
            h.update(f"{name}{arr.shape}".encode())
            h.update(arr)  # C-contiguous (``__post_init__``, ``_assemble``): its bytes
        h.update(json.dumps({
            "controller": self.controller, "fs": self.sample_rate_hz,
            "duration": self.duration_samples, "params": list(self.param_names),
            "lo": {k: [v.frequency_hz, v.power_dbm] for k, v in sorted(self.lo_settings.items())},
            "flux": sorted([f"{s}:{c}", v] for (s, c), v in self.flux_bias_a.items()),
            **({"rack": [list(r) for r in self.rack]} if self.rack else {}),
            **({"binds": [list(b) for b in self.binds]} if self.binds else {}),
        }, sort_keys=True).encode())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        """The whole program, losslessly (see the module docstring for the layout)."""
        arrays = []
        blobs = []
        offset = 0
        nested = self.has_nested_blocks
        for name in sorted(_DTYPES):
            if name == NESTED_FIELD and not nested:
                continue
            raw = getattr(self, name).astype(np.dtype(_DTYPES[name]).newbyteorder("<"),
                                             copy=False).tobytes()
            arrays.append({"name": name, "length": int(getattr(self, name).shape[0]),
                           "offset": offset, "nbytes": len(raw)})
            blobs.append(raw)
            offset += len(raw)
        meta = {
            "controller": self.controller, "sample_rate_hz": self.sample_rate_hz,
            "duration_samples": self.duration_samples, "param_names": list(self.param_names),
            "lo_settings": {k: [v.frequency_hz, v.power_dbm] for k, v in self.lo_settings.items()},
            "flux_bias_a": [[s, c, v] for (s, c), v in self.flux_bias_a.items()],
            "num_clbits": self.num_clbits, "header": self.header,
            "snapshot_id": self.snapshot_id, "snapshot_hash": self.snapshot_hash,
            "arrays": arrays,
            "rack": [list(r) for r in self.rack], "binds": [list(b) for b in self.binds],
        }
        try:
            text = json.dumps(meta, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise PulseError(f"program {self.header.get('name', '')!r}: its header or settings "
                             f"cannot be stored as JSON ({exc})", parameter="header") from exc
        # older readers take what they can read
        version = _FORMAT_VERSION if nested else 3 if self.binds else 2
        data = b"".join([_MAGIC, struct.pack("<II", version, len(text)), text, *blobs])
        return data + _CHECK_MAGIC + struct.pack("<I", zlib.crc32(data))

    @classmethod
    def from_bytes(cls, data: bytes) -> PulseProgram:
        """The program ``to_bytes`` stored; ``PulseError`` if ``data`` is not one (a ``str``
        or another object that is not bytes-like included: open the file in binary mode)."""
        try:
            view = memoryview(data)
        except TypeError:
            raise PulseError(f"a stored PulseProgram is bytes (as to_bytes wrote them; read its "
                             f"file in binary mode), got {type(data).__name__}",
                             parameter="data") from None
        if len(view) < 12 or bytes(view[:4]) != _MAGIC:
            raise PulseError("not a stored PulseProgram (magic 'LQPP' missing)",
                             parameter="magic")
        if len(view) >= 20 and bytes(view[-8:-4]) == _CHECK_MAGIC:
            if zlib.crc32(view[:-8]) != struct.unpack("<I", view[-4:])[0]:
                raise PulseError("stored PulseProgram is damaged: its CRC-32 does not match its "
                                 "bytes", parameter="checksum")
            view = view[:-8]
        version, length = struct.unpack("<II", view[4:12])
        if not 1 <= version <= _FORMAT_VERSION:
            raise PulseError(f"stored PulseProgram has format version {version}; this labqpu "
                             f"reads versions 1-{_FORMAT_VERSION}", parameter="version")
        try:
            meta: dict[str, Any] = json.loads(bytes(view[12:12 + length]))
            body = view[12 + length:]
            values = {}
            for entry in meta["arrays"]:
                name = entry["name"]
                if name not in _DTYPES:
                    raise PulseError(f"stored PulseProgram has an unknown array {name!r}",
                                     parameter=name)
                dtype = np.dtype(_DTYPES[name]).newbyteorder("<")
                start, nbytes = int(entry["offset"]), int(entry["nbytes"])
                if nbytes != entry["length"] * dtype.itemsize or start + nbytes > len(body):
                    raise PulseError(f"stored PulseProgram: array {name!r} is truncated",
                                     parameter=name)
                values[name] = np.frombuffer(body[start:start + nbytes], dtype=dtype)
            end = max((int(e["offset"]) + int(e["nbytes"]) for e in meta["arrays"]), default=0)
            if len(body) != end:  # a trailer cut short or damaged, or bytes added
                raise PulseError(f"stored PulseProgram is damaged: {len(body) - end} byte(s) "
                                 "after its arrays", parameter="checksum")
            snapshot_hash = meta.get("snapshot_hash")
            if not (snapshot_hash is None or isinstance(snapshot_hash, str)):
                raise PulseError(f"stored PulseProgram: snapshot_hash must be text, got "
                                 f"{snapshot_hash!r}", parameter="snapshot_hash")
            optional = {NESTED_FIELD, *(FEEDFORWARD_FIELDS if version == 1 else ())}
            missing = sorted(set(_DTYPES) - set(values) - optional)
            if missing:
                raise PulseError(f"stored PulseProgram lacks array(s) {', '.join(missing)}",
                                 parameter=missing[0])
            return cls(
                controller=meta["controller"], sample_rate_hz=meta["sample_rate_hz"],
                duration_samples=meta["duration_samples"],
                param_names=tuple(meta["param_names"]),
                lo_settings={k: LoSetting(f, p) for k, (f, p) in meta["lo_settings"].items()},
                flux_bias_a={(s, c): v for s, c, v in meta["flux_bias_a"]},
                num_clbits=meta["num_clbits"], header=meta["header"],
                snapshot_id=meta["snapshot_id"], snapshot_hash=snapshot_hash,
                rack=tuple(tuple(r) for r in meta.get("rack", ())),
                binds=tuple(tuple(b) for b in meta.get("binds", ())), **values)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            if isinstance(exc, PulseError):
                raise
            raise PulseError(f"stored PulseProgram is malformed: {exc!r}",
                             parameter="header") from exc

    def draw(self, **options: Any):
        """A matplotlib ``Figure`` of the program: one row per output port and acquisition input,
        amplitude (I, Q and |amp|) against time in ns, phase and frequency changes marked,
        acquisition windows shaded. Options: see ``labqpu.pulse.drawing.draw_program``."""
        from labqpu.pulse.drawing import draw_program

        return draw_program(self, **options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PulseProgram) and self.content_hash == other.content_hash

    def __hash__(self) -> int:
        return hash(self.content_hash)


def _frozen_empty(dtype: type) -> np.ndarray:
    empty = np.zeros(0, dtype)
    empty.setflags(write=False)
    return empty


#: The values ``PulseProgram._assemble`` starts from: the defaults of the fields that have
#: one, with read-only empty arrays (shared: nothing can write to them). The dictionaries
#: (``lo_settings``, ``flux_bias_a``, ``header``) have no shared default: the caller gives them.
_ASSEMBLE_DEFAULTS = {
    "param_names": (), "param_values": _frozen_empty(np.float64), "num_clbits": 0,
    "snapshot_id": None, "snapshot_hash": None,
    "block_acq": _frozen_empty(np.int32), "block_value": _frozen_empty(np.int32),
    "block_parent": None, "shift_port": _frozen_empty(np.int32),
    "shift_start": _frozen_empty(np.int64),
    "shift_phase_rad": _frozen_empty(np.float64), "shift_block": _frozen_empty(np.int32),
    "rack": (), "binds": ()}
_FIELD_SET = frozenset(f.name for f in fields(PulseProgram))
_NO_PARENTS = _frozen_empty(np.int32)  # the block_parent of a program without blocks


class WaveformTable:
    """Collects unique waveforms while compiling: the same key is synthesised and stored once."""

    def __init__(self) -> None:
        self._ids: dict[tuple, int] = {}
        self._waves: list[np.ndarray] = []

    def add(self, key: tuple, synthesize) -> int:
        """Id of the waveform ``key``; ``synthesize()`` is called only the first time."""
        wid = self._ids.get(key)
        if wid is None:
            wid = len(self._waves)
            self._waves.append(np.asarray(synthesize(), dtype=np.complex64))
            self._ids[key] = wid
        return wid

    def waveform(self, wave_id: int) -> np.ndarray:
        """Samples of waveform ``wave_id``."""
        return self._waves[wave_id]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, data): waveform i is data[offsets[i]:offsets[i + 1]]."""
        return pack_waveforms(self._waves)


def pack_waveforms(waves: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A program's waveform table from its waveforms in order: (offsets (int64, one more than
    the waveforms), data (the samples concatenated)); waveform i is
    data[offsets[i]:offsets[i + 1]]."""
    offsets = np.zeros(len(waves) + 1, dtype=np.int64)
    np.cumsum([w.shape[0] for w in waves], out=offsets[1:])
    data = np.concatenate(waves) if len(waves) else np.zeros(0, np.complex64)
    return offsets, data


class ProgramBuilder:
    """Assembles a ``PulseProgram`` play by play; the compiler and calibration experiments use it.

    Ports are the controller's port numbers; times and durations are in samples; amplitudes are
    fractions of DAC full scale; phases in rad; NCO and demodulation frequencies in Hz.
    Plays and phase shifts added inside ``with b.if_result(acq, value):`` form a conditional
    block: the controller executes them only in shots where acquisition ``acq`` (the index
    ``acquire`` returned) was discriminated as ``value``.
    """

    def __init__(self, controller: str, sample_rate_hz: float, *,
                 rack: tuple[tuple[str, int, int], ...] = ()) -> None:
        self.controller = controller
        self.sample_rate_hz = sample_rate_hz
        #: The program's ``rack`` (ports are rack ports when it names several controllers).
        self.rack = rack
        self.waves = WaveformTable()
        self._plays: list[tuple[int, int, int, float, int, float, float, int]] = []
        self._acqs: list[tuple[int, int, int, float, int, int]] = []
        self._discs: dict[int, tuple[complex, float]] = {}
        self._blocks: list[tuple[int, int, int]] = []  # (acquisition, value, parent)
        self._shifts: list[tuple[int, int, float, int]] = []
        self._block = -1
        self._params: dict[str, float] = {}
        self.lo_settings: dict[str, LoSetting] = {}
        self.flux_bias_a: dict[tuple[str, int], float] = {}
        self._end = 0

    def parameter(self, name: str, value: float) -> int:
        """Index of parameter ``name`` in the program's table (added with ``value`` if new)."""
        if name not in self._params:
            self._params[name] = float(value)
        return list(self._params).index(name)

    def play(self, port: int, start: int, wave_id: int, amplitude: float | str = 1.0,
             phase_rad: float = 0.0, frequency_hz: float = 0.0) -> None:
        """Play waveform ``wave_id`` on ``port`` from sample ``start``; a string amplitude names
        an entry of the parameter table."""
        ref = -1
        amp = 0.0
        if isinstance(amplitude, str):
            if amplitude not in self._params:
                raise ValueError(f"unknown parameter {amplitude!r}; declare it with parameter()")
            ref = list(self._params).index(amplitude)
        else:
            amp = float(amplitude)
        length = len(self.waves.waveform(wave_id))
        self._plays.append((port, start, wave_id, amp, ref, phase_rad, frequency_hz,
                            self._block))
        self._end = max(self._end, start + length)

    def shift_phase(self, port: int, start: int, phase_rad: float) -> None:
        """Add ``phase_rad`` (rad) to every play on ``port`` that starts at sample ``start`` or
        later, as the controller executes them (inside ``if_result``: only when its block
        runs)."""
        self._shifts.append((port, start, float(phase_rad), self._block))

    def acquire(self, port: int, start: int, duration: int, frequency_hz: float, qubit: int,
                clbit: int, discriminator: tuple[complex, float] | None = None) -> int:
        """Integrate input ``port`` over [start, start + duration) demodulated at
        ``frequency_hz``; the result belongs to ``qubit`` and lands in classical bit ``clbit``.

        ``discriminator`` = (axis, threshold) lets the controller discriminate the result (1 iff
        Re(conj(axis) iq) > threshold, axis a unit complex number); conditional blocks need
        it. Returns the acquisition's index (its column in the results).
        """
        index = len(self._acqs)
        if discriminator is not None:
            axis, threshold = complex(discriminator[0]), float(discriminator[1])
            if not (abs(abs(axis) - 1.0) <= 1e-6 and np.isfinite(threshold)):
                raise ValueError(f"acquisition {index} on qubit {qubit}: discriminator axis must "
                                 f"be a unit complex number and the threshold finite, got "
                                 f"{discriminator!r}")
            self._discs[index] = (axis, threshold)
        self._acqs.append((port, start, duration, frequency_hz, qubit, clbit))
        self._end = max(self._end, start + duration)
        return index

    @contextlib.contextmanager
    def if_result(self, acquisition: int, value: int) -> Iterator[int]:
        """Plays and phase shifts added in this block run only in shots whose acquisition
        ``acquisition`` was discriminated as ``value`` (0 or 1); yields the block's index (one
        block per acquisition, value and enclosing block: entering it again adds to it).
        Blocks nest: inside another ``if_result`` the block runs only when the enclosing one
        runs too. The controller refuses a block member that starts earlier than the end of
        any acquisition its block or an enclosing block reads, plus its feed-forward latency."""
        if not 0 <= acquisition < len(self._acqs):
            raise ValueError(f"if_result: no acquisition {acquisition} (the program has "
                             f"{len(self._acqs)})")
        if acquisition not in self._discs:
            raise ValueError(f"if_result: acquisition {acquisition} has no discriminator; give "
                             "one to acquire()")
        if value not in (0, 1):
            raise ValueError(f"if_result: value must be 0 or 1, got {value!r}")
        key = (acquisition, int(value), self._block)
        if key not in self._blocks:
            self._blocks.append(key)
        outer, self._block = self._block, self._blocks.index(key)
        try:
            yield self._block
        finally:
            self._block = outer

    def set_lo(self, name: str, frequency_hz: float, power_dbm: float) -> None:
        """Require LO source ``name`` at ``frequency_hz`` / ``power_dbm`` (output on)."""
        setting = LoSetting(float(frequency_hz), float(power_dbm))
        if self.lo_settings.get(name, setting) != setting:
            raise ValueError(f"LO {name} is asked for two settings: {self.lo_settings[name]} "
                             f"and {setting}")
        self.lo_settings[name] = setting

    def set_flux_bias(self, channel: tuple[str, int], current_a: float) -> None:
        """Require flux-bias ``channel`` (current source, channel) at ``current_a`` (A)."""
        current_a = float(current_a)
        if self.flux_bias_a.get(channel, current_a) != current_a:
            raise ValueError(f"flux-bias channel {channel[0]}:{channel[1]} is asked for two "
                             f"currents: {self.flux_bias_a[channel]!r} A and {current_a!r} A")
        self.flux_bias_a[channel] = current_a

    def build(self, *, duration_samples: int | None = None, num_clbits: int = 0,
              header: dict | None = None, snapshot_id: int | None = None,
              snapshot_hash: str | None = None) -> PulseProgram:
        """The finished program; plays sorted by (port, start)."""
        plays = sorted(self._plays, key=lambda r: (r[0], r[1]))
        cols = list(zip(*plays, strict=True)) if plays else [()] * 8
        acols = list(zip(*self._acqs, strict=True)) if self._acqs else [()] * 6
        scols = list(zip(*self._shifts, strict=True)) if self._shifts else [()] * 4
        bcols = list(zip(*self._blocks, strict=True)) if self._blocks else [()] * 3
        discs = [self._discs.get(j, (0j, 0.0)) for j in range(len(self._acqs))]
        offsets, data = self.waves.arrays()
        return PulseProgram(
            controller=self.controller, sample_rate_hz=self.sample_rate_hz,
            duration_samples=max(duration_samples or self._end, self._end, 1),
            play_port=cols[0], play_start=cols[1], play_wave=cols[2], play_amp=cols[3],
            play_amp_ref=cols[4], play_phase_rad=cols[5], play_freq_hz=cols[6],
            play_block=cols[7], wave_offset=offsets, wave_data=data,
            acq_port=acols[0], acq_start=acols[1], acq_duration=acols[2], acq_freq_hz=acols[3],
            acq_qubit=acols[4], acq_clbit=acols[5],
            acq_disc_axis=[a for a, _ in discs], acq_disc_threshold=[t for _, t in discs],
            block_acq=bcols[0], block_value=bcols[1], block_parent=bcols[2],
            shift_port=scols[0],
            shift_start=scols[1], shift_phase_rad=scols[2], shift_block=scols[3],
            param_names=tuple(self._params), param_values=np.array(list(self._params.values())),
            lo_settings=dict(self.lo_settings), flux_bias_a=dict(self.flux_bias_a),
            num_clbits=num_clbits, header=dict(header or {}), snapshot_id=snapshot_id,
            snapshot_hash=snapshot_hash, rack=self.rack,
        )
