"""What the pulse compiler derives from one calibration snapshot and channel map, cached.

* ``Calibration``: typed access to a snapshot; a missing value raises ``CompilationError``
  naming qubit (or edge), parameter and snapshot id.
* ``duration_samples``: how many samples a native instruction occupies, padded onto the
  controller's timing grid.
* ``Tables``: per (snapshot, channel map), the durations, pulse parameters, waveforms and the
  effect table (``kernels.EFFECT_FIELDS``) that ``layout_kernel`` reads, filled on first use.
* ``waveform`` / ``synthesize``: waveforms by shape key, synthesised once and shared.

Compiling the same gates against the same snapshot gives the same durations, pulse
parameters and waveforms every time, so they are computed once per (snapshot, channel map)
and reused; a compilation then costs little more than reading the circuit. Only successful
look-ups are cached, so an error is raised again, at the same point, on every compilation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NoReturn

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

from labqpu.errors import BackendPropertyError, CompilationError
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.kernels import EFFECT_FIELDS, flat_top, gaussian_drag
from labqpu.pulse.program import ProgramBuilder, pack_waveforms
from labqpu.pulse.shapes import MAX_WAVEFORM_SAMPLES
from labqpu.pulse.timing import TimingConstraints
from labqpu.store import DRIVE_PARAMETERS, READOUT_PARAMETERS, Snapshot, has_all

#: Rise and fall of readout pulses (s); calibration experiments use the same shape.
READOUT_RISE_S = 20e-9
#: Drive-axis angle of ``sy`` relative to ``sx`` (rad): a quarter turn ahead. Its play phase
#: relative to the frame is ``drive_handedness * SY_PHASE_RAD``.
SY_PHASE_RAD = np.pi / 2


def grid_samples(seconds: float, fs: float) -> int | None:
    """``seconds`` at ``fs`` (Hz) as a whole number of samples, within one part in 10^6; None
    when it is not one."""
    n = round(seconds * fs)
    return None if abs(n - seconds * fs) > 1e-6 * max(1.0, abs(n)) else int(n)


def samples_of(seconds: float, fs: float, what: str) -> int:
    n = grid_samples(seconds, fs)
    if n is None:
        raise CompilationError(f"{what}: {seconds} s is not a whole number of samples at {fs} Hz")
    return n


class Calibration:
    """Typed access to what the compiler reads from a snapshot; errors name what is missing."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def qubit(self, q: int, name: str) -> float:
        params = self.snapshot.qubits.get(q, {})
        if name not in params:
            self._missing(f"qubit {q}", (q,), name)
        return params[name].value

    def pair(self, a: int, b: int, name: str):
        params = self.snapshot.pairs.get((min(a, b), max(a, b)), {})
        if name not in params:
            self._missing(f"edge ({a}, {b})", (a, b), name)
        return params[name].value

    def _missing(self, subject: str, qubits: tuple[int, ...], name: str) -> NoReturn:
        cause = BackendPropertyError(f"not in calibration snapshot {self.snapshot.snapshot_id}",
                                     subject=subject, parameter=name)
        raise CompilationError(
            f"{subject} has no calibrated {name!r} in snapshot {self.snapshot.snapshot_id}",
            qubits=qubits, instruction=name) from cause


#: The longest delay the compiler takes (samples): 2^53, where float64 still counts every
#: sample (104 days at 1 GS/s). A controller's ``max_program_samples`` is far below it.
MAX_DELAY_SAMPLES = 2**53
#: Seconds per unit of a delay's duration (Qiskit's units besides "dt").
_DELAY_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}


def unbound_error(circuit_name: str, name: str, qubits: tuple[int, ...], params: list,
                  what: str = "") -> CompilationError:
    """The error for op ``name`` on ``qubits`` whose ``params`` hold unbound parameters: it
    names them, since the transpiler may have turned the gate the user wrote (an rx) into
    others (rz, sx) whose angles carry the user's parameter."""
    names = sorted({p.name for v in params if isinstance(v, ParameterExpression)
                    for p in v.parameters})
    return CompilationError(
        f"circuit {circuit_name!r}: {what or name} on {qubits} has an unbound parameter "
        f"({', '.join(names)}); bind all parameters before run() or give their values with "
        "run(..., parameter_binds=...)", circuit=circuit_name, qubits=qubits,
        instruction=name)


def duration_samples(inst, qubits: tuple[int, ...], cal: Calibration, fs: float,
                      circuit: QuantumCircuit, timing: TimingConstraints) -> int:
    """Samples ``inst`` occupies: calibrated durations padded onto the controller's timing grid
    (``TimingConstraints.pad``); delays must already lie on it."""
    name = inst.name  # the instruction's name, without building its operation object
    if name in ("sx", "sy", "x"):
        return timing.pad(samples_of(cal.qubit(qubits[0], "pulse_duration_s"), fs,
                                   f"{name} on {qubits}"))
    if name == "cz":
        return timing.pad(samples_of(cal.pair(*qubits, "cz_duration_s"), fs, f"cz on {qubits}"))
    if name in ("measure", "measure_mid"):
        return timing.pad(samples_of(cal.qubit(qubits[0], "readout_duration_s"), fs,
                                   f"measure on {qubits}"))
    if name == "reset":
        return timing.pad(samples_of(cal.qubit(qubits[0], "reset_duration_s"), fs,
                                   f"reset on {qubits}"))
    if name == "delay":
        value, unit = inst.operation.duration, inst.operation.unit
        if unit == "expr":
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} lasts a stretch (or an "
                "expression of one), which labqpu does not resolve; give it a fixed duration",
                circuit=circuit.name, qubits=qubits, instruction="delay")
        if isinstance(value, ParameterExpression):
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} has an unbound duration; "
                "bind all parameters before run() or give their values with run(..., "
                "parameter_binds=...)", circuit=circuit.name, qubits=qubits, instruction="delay")
        if unit != "dt" and unit not in _DELAY_UNITS_S:
            raise CompilationError(f"delay on {qubits}: unknown unit {unit!r}",
                                   circuit=circuit.name, qubits=qubits, instruction="delay")
        exact = float(value) * (1.0 if unit == "dt" else _DELAY_UNITS_S[unit] * fs)
        # beyond the range (or not a number): refused below without rounding it
        samples = round(exact) if -1 < exact < MAX_DELAY_SAMPLES + 1 else -1
        if unit == "dt":
            samples = int(value) if samples >= 0 else samples
        elif samples >= 0 and abs(exact - samples) > 1e-6:
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} of {value} {unit} is "
                f"{exact:.6g} samples at {fs:.6g} Hz, not a whole number of samples; give "
                f"it in dt or as a multiple of {1 / fs:.6g} s", circuit=circuit.name,
                qubits=qubits, instruction="delay")
        if not 0 <= samples <= MAX_DELAY_SAMPLES:
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} of {value} {unit} is "
                f"{exact:.6g} samples; a delay takes 0 to {MAX_DELAY_SAMPLES} samples (and a "
                "controller plays far fewer: its max_program_samples)", circuit=circuit.name,
                qubits=qubits, instruction="delay")
        if samples % timing.grid:  # the message is built only for a delay off the grid
            timing.check_delay(samples, f"circuit {circuit.name!r}: delay on qubits {qubits}",
                               circuit=circuit.name, qubits=qubits)
        return samples
    if name in ("rz", "barrier"):
        return 0
    raise CompilationError(
        f"circuit {circuit.name!r}: instruction {name!r} on qubits {qubits} is not a native "
        "operation of this device; transpile the circuit for this backend first",
        circuit=circuit.name, qubits=qubits, instruction=name)


# ------------------------------------------------------------------ caches

#: Synthesised waveforms by shape key (shared across snapshots: same shape, same samples).
_WAVEFORMS: dict[tuple, np.ndarray] = {}
_MAX_WAVEFORMS = 4096
_MAX_TABLES = 16
#: Distinct waveform sets whose tables one ``Tables`` keeps (``Tables.wave_table``).
_MAX_WAVE_SETS = 256
_TABLES: OrderedDict[tuple, Tables] = OrderedDict()
_TABLES_LOCK = threading.Lock()
#: ``(snapshot, channels, tables)`` of the last lookup: a compilation against the same objects
#: as the one before skips the lock and the snapshot's hash (a job's circuits, a sweep).
_LAST: tuple = (None, None, None)


def synthesize(key: tuple) -> np.ndarray:
    """The samples (complex64) of the waveform with shape key ``key``, freshly synthesised:
    ``("drag", samples, sigma, beta)``, ``("flat_top", samples, rise)`` (samples units), or
    ``("padded", inner_key, samples)``: ``inner_key``'s waveform followed by zeros up to
    ``samples`` (a calibrated pulse on a controller's timing grid).

    Raises:
        ValueError: a shape no waveform has (its length beyond :data:`MAX_WAVEFORM_SAMPLES`,
            a width or edge that does not fit it).
    """
    length = key[2] if key[0] == "padded" else key[1]
    if length > MAX_WAVEFORM_SAMPLES:
        raise ValueError(f"a {length}-sample pulse is longer than the {MAX_WAVEFORM_SAMPLES} "
                         "samples a waveform may take")
    if key[0] == "padded":
        inner = synthesize(key[1])
        return np.concatenate([inner, np.zeros(key[2] - inner.shape[0], np.complex64)])
    if key[0] == "drag":
        return gaussian_drag(key[1], key[2], key[3])
    if key[0] == "flat_top":
        return flat_top(key[1], key[2])
    raise ValueError(f"unknown waveform key {key!r}")


def _on_grid(key: tuple, samples: int, timing: TimingConstraints) -> tuple:
    """Shape key of waveform ``key`` (``samples`` long) zero-padded onto the timing grid."""
    padded = timing.pad(samples)
    return key if padded == samples else ("padded", key, padded)


def waveform(key: tuple, what: str) -> np.ndarray:
    """The samples of waveform ``key`` (read-only complex64): synthesised on first use, then
    served from a cache shared by every snapshot (same shape, same samples).

    Raises:
        CompilationError: no waveform has that shape; the message starts with ``what`` (the
            pulse and the calibration values it was made from).
    """
    wave = _WAVEFORMS.get(key)
    if wave is None:
        try:
            wave = synthesize(key)
        except ValueError as exc:
            raise CompilationError(f"{what}: {exc}; check those calibration values") from exc
        wave.setflags(write=False)
        if len(_WAVEFORMS) >= _MAX_WAVEFORMS:
            _WAVEFORMS.clear()
        _WAVEFORMS[key] = wave
    return wave


def effect_row(*, play_port: int = -1, wave: int = -1, amp: float = 0.0, freq: float = 0.0,
            length: int = 0, phase_qubit: int = -1, param_qubit: int = -1,
            shift_qubit_a: int = -1, shift_a: float = 0.0, shift_qubit_b: int = -1,
            shift_b: float = 0.0, acq_port: int = -1, measure: int = 0,
            phase_offset: float = 0.0, param_sign: float = 1.0, phase_ramp: float = 0.0
            ) -> tuple:
    """One row of the effect table, in the order of ``kernels.EFFECT_FIELDS``."""
    return (play_port, wave, amp, freq, length, phase_qubit, param_qubit, shift_qubit_a,
            shift_a, shift_qubit_b, shift_b, acq_port, measure, phase_offset, param_sign,
            phase_ramp)


NO_EFFECT = effect_row()
assert len(NO_EFFECT) == len(EFFECT_FIELDS)


class Tables:
    """What compilation derives from one snapshot and channel map, filled on first use.

    ``durations`` maps ``(gate, qubits)`` to samples; ``drives``, ``czs`` and ``readouts``
    hold each gate's play (port, waveform key, amplitude, frequency...); ``settings`` the LO
    and flux-bias settings for a set of used and measured qubits.
    """

    def __init__(self, snapshot: Snapshot, channels: ChannelMap) -> None:
        self.snapshot = snapshot
        self.channels = channels
        self.cal = Calibration(snapshot)
        self.fs = channels.sample_rate_hz
        self.durations: dict[tuple, int] = {}
        self.drives: dict[tuple, tuple] = {}
        self.czs: dict[tuple, tuple] = {}
        self.readouts: dict[tuple, tuple] = {}
        self.settings: dict[tuple, tuple] = {}
        # effects: one row (``kernels.EFFECT_FIELDS``) per distinct (gate, qubits); row 0 is
        # "nothing" (barrier, delay, reset); waves: the waveforms rows refer to, by global id
        self.effect_ids: dict[tuple, int] = {}
        self.known: dict[tuple, tuple[int, int]] = {}  # (gate, qubits) -> (duration, effect)
        self.effect_rows: list[tuple] = [NO_EFFECT]
        self.wave_ids: dict[tuple, int] = {}
        self.waves: list[np.ndarray] = []
        self._effects = np.array(self.effect_rows, dtype=np.float64)
        self._drive_ports: np.ndarray | None = None
        # the ids of a program's waveforms (bytes of their int64 array) -> its read-only
        # (wave_data, wave_offset); bounded by _MAX_WAVE_SETS
        self._wave_sets: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def effects(self) -> np.ndarray:
        """The effect table as a float64 (rows x fields) array."""
        if self._effects.shape[0] != len(self.effect_rows):
            self._effects = np.array(self.effect_rows, dtype=np.float64)
        return self._effects

    def program_waveforms(self) -> list[tuple]:
        """Shape keys of every waveform compiled against these tables so far."""
        return list(self.wave_ids)

    def wave_table(self, wave_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A program's waveform table for global waveform ids ``wave_ids`` (int64, in the
        program's order): the samples of each, concatenated (complex64), and their offsets.
        Both are read-only and shared by every program with the same waveforms."""
        key = wave_ids.tobytes()
        table = self._wave_sets.get(key)
        if table is None:
            offsets, data = pack_waveforms([self.waves[g] for g in wave_ids.tolist()])
            data.setflags(write=False)
            offsets.setflags(write=False)
            if len(self._wave_sets) >= _MAX_WAVE_SETS:
                self._wave_sets.clear()
            table = self._wave_sets[key] = (data, offsets)
        return table

    def wave(self, key: tuple, wave: np.ndarray) -> int:
        """Global id of waveform ``key``."""
        gid = self.wave_ids.get(key)
        if gid is None:
            gid = self.wave_ids[key] = len(self.waves)
            self.waves.append(wave)
        return gid

    def effect(self, name: str, qubits: tuple, duration: int, circuit: QuantumCircuit) -> int:
        """Row of the effect table for gate ``name`` on ``qubits``: what it plays, which
        frames it reads and shifts, what it acquires. This is the per-gate dispatch."""
        eid = self.effect_ids.get((name, qubits))
        if eid is not None:
            return eid
        row = NO_EFFECT
        if name == "rz":
            row = effect_row(param_qubit=qubits[0], param_sign=self.handedness(qubits[0]))
        elif name == "sx":
            row = self.drive_effect(qubits[0], "pi2_amplitude")
        elif name == "sy":
            row = self.drive_effect(qubits[0], "pi2_amplitude",
                                    phase_offset=self.handedness(qubits[0]) * SY_PHASE_RAD)
        elif name == "x":
            row = self.drive_effect(qubits[0], "pi_amplitude")
        elif name == "cz":
            a, c = sorted(qubits)
            port, key, wave, amp, phase_a, phase_c = self.cz(a, c, duration, circuit)
            row = effect_row(play_port=port, wave=self.wave(key, wave), amp=amp,
                          length=wave.shape[0], shift_qubit_a=a, shift_a=phase_a,
                          shift_qubit_b=c, shift_b=phase_c)
        elif name in ("measure", "measure_mid"):
            # a final readout waits for the end of the gates; a mid-circuit one is a gate
            q = qubits[0]
            port, key, wave, amp, if_hz, acq_port = self.readout(q, duration)
            row = effect_row(play_port=port, wave=self.wave(key, wave), amp=amp, freq=if_hz,
                             length=wave.shape[0], acq_port=acq_port,
                             measure=int(name == "measure"))
        eid = len(self.effect_rows)
        self.effect_rows.append(row)
        self.effect_ids[(name, qubits)] = eid
        return eid

    def handedness(self, q: int) -> float:
        """Qubit ``q``'s calibrated drive handedness, +1.0 or -1.0 (a play phase phi turns its
        drive axis to handedness * phi)."""
        value = self.cal.qubit(q, "drive_handedness")
        if isinstance(value, bool) or value not in (-1, 1):
            cause = BackendPropertyError(f"{value!r} is not +1 or -1", subject=f"qubit {q}",
                                         parameter="drive_handedness")
            raise CompilationError(
                f"qubit {q}: drive_handedness {value!r} in snapshot "
                f"{self.snapshot.snapshot_id} is not +1 or -1", qubits=(q,),
                instruction="drive_handedness") from cause
        return float(value)

    def drive_effect(self, q: int, amplitude_name: str, phase_offset: float = 0.0) -> tuple:
        """A DRAG pulse on qubit ``q`` at the phase of its frame (+ ``phase_offset`` rad)."""
        port, key, wave, amp, if_hz = self.drive(q, amplitude_name)
        return effect_row(play_port=port, wave=self.wave(key, wave), amp=amp, freq=if_hz,
                       length=wave.shape[0], phase_qubit=q, phase_offset=phase_offset)

    def drive(self, q: int, amplitude_name: str) -> tuple:
        """(port, waveform key, samples, amplitude, IF) of a DRAG pulse on qubit ``q``."""
        entry = self.drives.get((q, amplitude_name))
        if entry is None:
            cal, fs = self.cal, self.fs
            dur = samples_of(cal.qubit(q, "pulse_duration_s"), fs, f"qubit {q} pulse")
            sigma = cal.qubit(q, "pulse_sigma_s") * fs
            beta = cal.qubit(q, "drag_beta")
            key = _on_grid(("drag", dur, sigma, beta), dur, self.channels.timing)
            wave = waveform(key, f"qubit {q} pulse (pulse_duration_s, pulse_sigma_s, drag_beta)")
            amplitude = float(cal.qubit(q, amplitude_name))
            peak = abs(amplitude) * float(np.abs(wave).max())  # the DRAG part may lift it
            if peak > 1.0 + 1e-6:
                raise CompilationError(
                    f"qubit {q}: {amplitude_name} {amplitude:.4g} times the peak of its DRAG "
                    f"pulse (drag_beta {beta:.4g}) reaches {peak:.4g} of DAC full scale (max "
                    "1); check those calibration values", qubits=(q,),
                    instruction=amplitude_name)
            if_hz = cal.qubit(q, "frequency_hz") - cal.qubit(q, "drive_lo_frequency_hz")
            entry = (self.channels.output(self.channels.qubits[q].drive), key, wave,
                     amplitude, if_hz)
            self.drives[(q, amplitude_name)] = entry
        return entry

    def cz(self, a: int, c: int, duration: int, circuit: QuantumCircuit) -> tuple:
        """(port, waveform key, samples, amplitude, phase on a, phase on c) of cz (a < c)."""
        entry = self.czs.get((a, c, duration))
        if entry is None:
            cal, fs = self.cal, self.fs
            fq = int(cal.pair(a, c, "cz_flux_qubit"))
            if fq not in (a, c):
                raise CompilationError(f"edge ({a}, {c}): cz_flux_qubit {fq} is not on the edge",
                                       circuit=circuit.name, qubits=(a, c),
                                       instruction="cz_flux_qubit")
            rise = cal.pair(a, c, "cz_rise_s") * fs
            calibrated = samples_of(cal.pair(a, c, "cz_duration_s"), fs, f"cz on ({a}, {c})")
            key = _on_grid(("flat_top", calibrated, rise), calibrated, self.channels.timing)
            wave = waveform(key, f"cz on ({a}, {c}) (cz_duration_s, cz_rise_s)")
            entry = (self.channels.output(self.channels.qubits[fq].flux), key, wave,
                     float(cal.pair(a, c, "cz_amplitude")), cal.pair(a, c, "cz_phase_a_rad"),
                     cal.pair(a, c, "cz_phase_b_rad"))
            self.czs[(a, c, duration)] = entry
        return entry

    def readout(self, q: int, duration: int) -> tuple:
        """(readout port, waveform key, samples, amplitude, IF, acquire port) of measure."""
        entry = self.readouts.get((q, duration))
        if entry is None:
            cal, fs = self.cal, self.fs
            rise = READOUT_RISE_S * fs
            key = ("flat_top", duration, rise)
            wave = waveform(key, f"measure on qubit {q} (readout_duration_s)")
            if_hz = (cal.qubit(q, "readout_frequency_hz")
                     - cal.qubit(q, "readout_lo_frequency_hz"))
            wiring = self.channels.qubits[q]
            entry = (self.channels.output(wiring.readout), key, wave,
                     float(cal.qubit(q, "readout_amplitude")), if_hz,
                     self.channels.input(wiring.acquire))
            self.readouts[(q, duration)] = entry
        return entry

    def discriminator(self, q: int) -> tuple[complex, float]:
        """(axis, threshold) of the controller's linear discriminator for qubit ``q``,
        equivalent to the snapshot's nearest-centre one (``linear_discriminator``)."""
        return linear_discriminator(self.cal.qubit(q, "discriminator")["centers"])

    def drive_ports(self) -> np.ndarray:
        """Drive output port of every device qubit (int64), for conditional phase shifts."""
        if self._drive_ports is None:
            self._drive_ports = np.array(
                [self.channels.output(self.channels.qubits[q].drive)
                 for q in range(self.channels.num_qubits)],
                dtype=np.int64)
        return self._drive_ports

    def lo_and_flux(self, used: frozenset, measured: frozenset,
                    circuit: QuantumCircuit) -> tuple[dict, dict]:
        """(LO settings, flux-bias currents) a program on these qubits assumes."""
        entry = self.settings.get((used, measured))
        if entry is None:
            snapshot, cal, channels = self.snapshot, self.cal, self.channels
            b = ProgramBuilder(channels.controllers[0], self.fs, rack=channels.layout)
            for q, channel, current in flux_biases(snapshot, channels):
                try:
                    b.set_flux_bias(channel, current)
                except ValueError as exc:
                    raise CompilationError(
                        f"qubit {q}: snapshot {snapshot.snapshot_id} asks for two currents "
                        f"on a shared flux-bias channel: {exc}; it carries one: commit one "
                        "flux_bias_a for its qubits, or wire each qubit to a channel of "
                        "its own (docs/wiring.md)", circuit=circuit.name,
                        qubits=(q,), instruction="flux_bias_a") from exc
            for q in range(channels.num_qubits):
                wiring = channels.qubits[q]
                p = snapshot.qubits.get(q, {})
                wanted = []
                if q in used and has_all(p, DRIVE_PARAMETERS):
                    wanted.append((wiring.drive_lo, "drive_lo_frequency_hz",
                                   "drive_lo_power_dbm"))
                if q in measured:
                    wanted.append((wiring.readout_lo, "readout_lo_frequency_hz",
                                   "readout_lo_power_dbm"))
                for lo, f_name, p_name in wanted:
                    try:
                        b.set_lo(lo, cal.qubit(q, f_name), cal.qubit(q, p_name))
                    except ValueError as exc:
                        raise CompilationError(
                            f"qubit {q}: snapshot {snapshot.snapshot_id} asks for incompatible "
                            f"settings of a shared LO: {exc}", circuit=circuit.name,
                            qubits=(q,), instruction=f_name) from exc
            lo_settings, flux_bias_a = b.lo_settings, b.flux_bias_a
            entry = (lo_settings, flux_bias_a)
            self.settings[(used, measured)] = entry
        return entry


def flux_biases(snapshot: Snapshot, channels: ChannelMap
                ) -> list[tuple[int, tuple[str, int], float]]:
    """(qubit, flux-bias channel, current in A) of every bias a program sets and reads back:
    each drivable qubit's (all of ``DRIVE_PARAMETERS``), then that of each other qubit whose
    snapshot holds one, on a channel no drivable qubit uses (its current reaches the used
    qubits through flux crosstalk; on a shared channel, the drivable qubits' current is what
    the channel carries)."""
    drivable, others = [], []
    for q, wiring in channels.qubits.items():
        p = snapshot.qubits.get(q, {})
        if "flux_bias_a" in p:
            (drivable if has_all(p, DRIVE_PARAMETERS) else others).append(
                (q, wiring.flux_bias, p["flux_bias_a"].value))
    claimed = {channel for _, channel, _ in drivable}
    return drivable + [entry for entry in others if entry[1] not in claimed]


def tables_for(snapshot: Snapshot, channels: ChannelMap) -> Tables:
    """The cached tables of (``snapshot``, ``channels``); snapshots are immutable and compare
    by id, creation time and content hash; channel maps by identity."""
    global _LAST
    last = _LAST
    if last[0] is snapshot and last[1] is channels:
        return last[2]
    key = (snapshot, id(channels))
    with _TABLES_LOCK:
        tables = _TABLES.get(key)
        if tables is not None and tables.channels is channels:
            _TABLES.move_to_end(key)
        else:
            tables = Tables(snapshot, channels)
            _TABLES[key] = tables
            if len(_TABLES) > _MAX_TABLES:
                _TABLES.popitem(last=False)
        _LAST = (snapshot, channels, tables)
        return tables


def clear_caches() -> None:
    """Forget every cached duration, pulse parameter, LO setting and synthesised waveform, so
    that the next compilation starts cold (benchmarks; after editing calibration in place)."""
    global _LAST
    with _TABLES_LOCK:
        _TABLES.clear()
        _LAST = (None, None, None)
    _WAVEFORMS.clear()


def linear_discriminator(centers) -> tuple[complex, float]:
    """(axis, threshold) of the linear discriminator that decides as the nearest of the two
    calibrated IQ centres ``centers`` = ((I0, Q0), (I1, Q1)) does: the axis (unit complex)
    points from the |0> to the |1> centre, the threshold is the midpoint's projection; result
    1 iff Re(conj(axis) iq) > threshold. ``ValueError`` if the centres coincide."""
    (i0, q0), (i1, q1) = centers
    c0, c1 = complex(i0, q0), complex(i1, q1)
    if c1 == c0:
        raise ValueError("the discriminator's centres coincide")
    axis = (c1 - c0) / abs(c1 - c0)
    return axis, float(np.real(np.conj(axis) * (c0 + c1) / 2))


def active_reset_possible(snapshot: Snapshot, q: int) -> bool:
    """Whether qubit ``q`` can be reset actively (measure, then an x pulse when the result is
    1): the snapshot holds its drive, readout and discriminator calibration. The Target and
    the compiler use the same rule, on a controller with feed-forward."""
    params = snapshot.qubits.get(q, {})
    return has_all(params, DRIVE_PARAMETERS) and has_all(params, READOUT_PARAMETERS)


def reset_rounds(snapshot: Snapshot, q: int) -> int:
    """How many measure-then-x rounds an active reset of qubit ``q`` plays: the snapshot's
    ``reset_rounds`` (measured by the ``active_reset`` calibration node), 1 without one."""
    param = snapshot.qubits.get(q, {}).get("reset_rounds")
    return 1 if param is None else int(param.value)


def active_reset_samples(snapshot: Snapshot, fs: float, q: int, latency_samples: int,
                         timing: TimingConstraints) -> int:
    """Samples an active reset of qubit ``q`` lasts: per round (:func:`reset_rounds`) the
    readout, the feed-forward latency and the x pulse, each on the timing grid."""
    cal = Calibration(snapshot)
    readout = timing.pad(samples_of(cal.qubit(q, "readout_duration_s"), fs, f"reset on {q}"))
    pulse = timing.pad(samples_of(cal.qubit(q, "pulse_duration_s"), fs, f"reset on {q}"))
    return reset_rounds(snapshot, q) * (readout + timing.pad(latency_samples) + pulse)
