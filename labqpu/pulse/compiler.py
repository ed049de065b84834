"""Pulse compiler: a transpiled circuit and a calibration snapshot in, a ``PulseProgram`` out.

* Timing: ALAP (default) or ASAP from the calibrated durations, in samples; barriers
  synchronise their qubits.
* ``rz`` is virtual: it shifts the phase of the qubit's drive frame for every later pulse.
* ``sx`` / ``x``: one DRAG pulse shape per qubit, played at the pi/2 or pi amplitude, at the
  calibrated IF on the drive LO.
* ``cz``: a flat-top flux pulse on the pair's tunable qubit, then the calibrated single-qubit
  phase corrections as frame changes on both qubits.
* ``measure``: a readout pulse and an acquisition window over the same samples.
* ``delay`` plays nothing; ``reset`` is passive: the qubit is left idle for the calibrated
  thermalisation time (several T1).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NoReturn

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

from labqpu.errors import BackendPropertyError, CompilationError
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.kernels import flat_top, gaussian_drag
from labqpu.pulse.program import ProgramBuilder, PulseProgram
from labqpu.store import DRIVE_PARAMETERS, Snapshot, has_all

#: Rise and fall of readout pulses (s); calibration experiments use the same shape.
READOUT_RISE_S = 20e-9
SCHEDULING_METHODS = ("alap", "asap")


def _samples(seconds: float, fs: float, what: str) -> int:
    n = round(seconds * fs)
    if abs(n - seconds * fs) > 1e-6 * max(1.0, abs(n)):
        raise CompilationError(f"{what}: {seconds} s is not a whole number of samples at {fs} Hz")
    return int(n)


class _Calibration:
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


def _duration_samples(inst, qubits: tuple[int, ...], cal: _Calibration, fs: float,
                      circuit: QuantumCircuit) -> int:
    name = inst.operation.name
    if name in ("sx", "x"):
        return _samples(cal.qubit(qubits[0], "pulse_duration_s"), fs, f"{name} on {qubits}")
    if name == "cz":
        return _samples(cal.pair(*qubits, "cz_duration_s"), fs, f"cz on {qubits}")
    if name == "measure":
        return _samples(cal.qubit(qubits[0], "readout_duration_s"), fs, f"measure on {qubits}")
    if name == "reset":
        return _samples(cal.qubit(qubits[0], "reset_duration_s"), fs, f"reset on {qubits}")
    if name == "delay":
        value, unit = inst.operation.duration, inst.operation.unit
        if unit == "expr" or isinstance(value, ParameterExpression):
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} has an unbound duration; "
                "bind all parameters before run()", circuit=circuit.name, qubits=qubits,
                instruction="delay")
        if unit == "dt":
            return int(value)
        scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}
        if unit not in scale:
            raise CompilationError(f"delay on {qubits}: unknown unit {unit!r}",
                                   circuit=circuit.name, qubits=qubits, instruction="delay")
        return round(float(value) * scale[unit] * fs)
    if name in ("rz", "barrier"):
        return 0
    raise CompilationError(
        f"circuit {circuit.name!r}: instruction {name!r} on qubits {qubits} is not a native "
        "operation of this device; transpile the circuit for this backend first",
        circuit=circuit.name, qubits=qubits, instruction=name)


def _schedule(ops: list[tuple], num_qubits: int, method: str) -> tuple[list[int], int]:
    """Start sample of every op of ``ops`` (``(name, qubits, clbits, params, duration)``) and
    the total duration (samples).

    Gates are scheduled ALAP or ASAP; then every measurement starts at the same sample, when
    the last gate has ended (simultaneous readout, so that no pulse reaches a qubit, or its
    coupled neighbours, while it is being read out).
    """
    n = len(ops)
    starts = [0] * n
    avail = [0] * num_qubits
    order = range(n) if method == "asap" else range(n - 1, -1, -1)
    for i in order:
        name, qubits, _, _, duration = ops[i]
        if name == "measure":
            continue
        if len(qubits) == 1:
            q = qubits[0]
            start = avail[q]
            avail[q] = start + duration
        else:
            start = max([avail[q] for q in qubits], default=0)
            end = start + duration
            for q in qubits:
                avail[q] = end
        starts[i] = start
    gates_end = max(avail, default=0)
    total = gates_end
    if method == "alap":
        for i in range(n):
            name, _, _, _, duration = ops[i]
            if name != "measure":
                starts[i] = gates_end - starts[i] - duration
    for i in range(n):
        name, _, _, _, duration = ops[i]
        if name == "measure":
            starts[i] = gates_end
            total = max(total, gates_end + duration)
    return starts, total


# ------------------------------------------------------------------ caches
#
# Compiling the same gates against the same snapshot gives the same durations, pulse
# parameters and waveforms every time, so they are computed once per (snapshot, channel map)
# and reused; a compilation then costs little more than reading the circuit. Only successful
# look-ups are cached, so an error is raised again, at the same point, on every compilation.

#: Synthesised waveforms by shape key (shared across snapshots: same shape, same samples).
_WAVEFORMS: dict[tuple, np.ndarray] = {}
_MAX_WAVEFORMS = 4096
_MAX_TABLES = 16
_TABLES: OrderedDict[tuple, _Tables] = OrderedDict()
_TABLES_LOCK = threading.Lock()


def _waveform(key: tuple, synthesize) -> np.ndarray:
    """The samples of waveform ``key`` (read-only complex64), synthesised on first use."""
    wave = _WAVEFORMS.get(key)
    if wave is None:
        wave = np.asarray(synthesize(), dtype=np.complex64)
        wave.setflags(write=False)
        if len(_WAVEFORMS) >= _MAX_WAVEFORMS:
            _WAVEFORMS.clear()
        _WAVEFORMS[key] = wave
    return wave


class _Tables:
    """What compilation derives from one snapshot and channel map, filled on first use.

    ``durations`` maps ``(gate, qubits)`` to samples; ``drives``, ``czs`` and ``readouts``
    hold each gate's play (port, waveform key, amplitude, frequency...); ``settings`` the LO
    and flux-bias settings for a set of used and measured qubits.
    """

    def __init__(self, snapshot: Snapshot, channels: ChannelMap) -> None:
        self.snapshot = snapshot
        self.channels = channels
        self.cal = _Calibration(snapshot)
        self.fs = channels.sample_rate_hz
        self.durations: dict[tuple, int] = {}
        self.drives: dict[tuple, tuple] = {}
        self.czs: dict[tuple, tuple] = {}
        self.readouts: dict[tuple, tuple] = {}
        self.settings: dict[tuple, tuple] = {}

    def drive(self, q: int, amplitude_name: str) -> tuple:
        """(port, waveform key, samples, amplitude, IF) of a DRAG pulse on qubit ``q``."""
        entry = self.drives.get((q, amplitude_name))
        if entry is None:
            cal, fs = self.cal, self.fs
            dur = _samples(cal.qubit(q, "pulse_duration_s"), fs, f"qubit {q} pulse")
            sigma = cal.qubit(q, "pulse_sigma_s") * fs
            beta = cal.qubit(q, "drag_beta")
            key = ("drag", dur, sigma, beta)
            wave = _waveform(key, lambda: gaussian_drag(dur, sigma, beta))
            if_hz = cal.qubit(q, "frequency_hz") - cal.qubit(q, "drive_lo_frequency_hz")
            entry = (self.channels.qubits[q].drive[1], key, wave,
                     float(cal.qubit(q, amplitude_name)), if_hz)
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
            key = ("flat_top", duration, rise)
            wave = _waveform(key, lambda: flat_top(duration, rise))
            entry = (self.channels.qubits[fq].flux[1], key, wave,
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
            wave = _waveform(key, lambda: flat_top(duration, rise))
            if_hz = (cal.qubit(q, "readout_frequency_hz")
                     - cal.qubit(q, "readout_lo_frequency_hz"))
            wiring = self.channels.qubits[q]
            entry = (wiring.readout[1], key, wave, float(cal.qubit(q, "readout_amplitude")),
                     if_hz, wiring.acquire[1])
            self.readouts[(q, duration)] = entry
        return entry

    def lo_and_flux(self, used: frozenset, measured: frozenset,
                    circuit: QuantumCircuit) -> tuple[dict, dict]:
        """(LO settings, flux-bias currents) a program on these qubits assumes."""
        entry = self.settings.get((used, measured))
        if entry is None:
            snapshot, cal, channels = self.snapshot, self.cal, self.channels
            b = ProgramBuilder(channels.controllers[0], self.fs)
            for q in range(channels.num_qubits):
                wiring = channels.qubits[q]
                p = snapshot.qubits.get(q, {})
                if has_all(p, DRIVE_PARAMETERS):
                    b.flux_bias_a[wiring.flux_bias] = float(p["flux_bias_a"].value)
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


def _tables(snapshot: Snapshot, channels: ChannelMap) -> _Tables:
    """The cached tables of (``snapshot``, ``channels``); snapshots are immutable and compare
    by id, creation time and content hash; channel maps by identity."""
    key = (snapshot, id(channels))
    with _TABLES_LOCK:
        tables = _TABLES.get(key)
        if tables is not None and tables.channels is channels:
            _TABLES.move_to_end(key)
            return tables
        tables = _Tables(snapshot, channels)
        _TABLES[key] = tables
        if len(_TABLES) > _MAX_TABLES:
            _TABLES.popitem(last=False)
        return tables


def _lower(circuit: QuantumCircuit, tables: _Tables) -> tuple[list[tuple], set[int]]:
    """The circuit's instructions as ``(name, qubits, clbits, params, duration)`` tuples
    (qubits and clbits as indices), and the set of qubits any instruction touches."""
    qindex = {bit: i for i, bit in enumerate(circuit.qubits)}
    cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
    durations = tables.durations
    cal, fs = tables.cal, tables.fs
    ops = []
    used: set[int] = set()
    measured: set[int] = set()
    late = None  # first instruction that follows a measurement of one of its qubits
    qubit_of = qindex.__getitem__
    for inst in circuit.data:
        name = inst.name
        qargs = inst.qubits
        qubits = (qubit_of(qargs[0]),) if len(qargs) == 1 else tuple(map(qubit_of, qargs))
        used.update(qubits)
        if name == "barrier":
            ops.append(("barrier", qubits, (), (), 0))
            continue
        cargs = inst.clbits
        clbits = tuple(map(cindex.__getitem__, cargs)) if cargs else ()
        params = ()
        if name != "delay":
            raw = inst.params
            if raw:
                try:
                    params = tuple(map(float, raw))
                except TypeError as exc:
                    raise CompilationError(
                        f"circuit {circuit.name!r}: {name} on {qubits} has an unbound "
                        "parameter; bind all parameters before run()", circuit=circuit.name,
                        qubits=qubits, instruction=name) from exc
            duration = durations.get((name, qubits))
            if duration is None:
                duration = _duration_samples(inst, qubits, cal, fs, circuit)
                durations[(name, qubits)] = duration
        else:
            duration = _duration_samples(inst, qubits, cal, fs, circuit)
        if late is None and measured and not measured.isdisjoint(qubits):
            late = (name, min(measured.intersection(qubits)))
        if name == "measure":
            measured.update(qubits)
        ops.append((name, qubits, clbits, params, duration))
    if late is not None:
        name, q = late
        raise CompilationError(
            f"circuit {circuit.name!r}: {name!r} on qubit {q} follows its "
            "measurement; mid-circuit measurement is not supported yet",
            circuit=circuit.name, qubits=(q,), instruction=name)
    return ops, used


def compile_circuit(circuit: QuantumCircuit, snapshot: Snapshot, channels: ChannelMap, *,
                    scheduling_method: str = "alap") -> PulseProgram:
    """Compile one transpiled circuit (physical qubits = device qubits) into a PulseProgram.

    ``channels`` says where each qubit's pulses are played (``LabConfig.channels`` of the
    rack's wiring file); ``snapshot`` supplies every pulse parameter.
    """
    if scheduling_method not in SCHEDULING_METHODS:
        raise CompilationError(
            f"scheduling_method must be one of {SCHEDULING_METHODS}, got {scheduling_method!r}")
    if circuit.num_qubits > channels.num_qubits:
        raise CompilationError(
            f"circuit {circuit.name!r} has {circuit.num_qubits} qubits; "
            f"{channels.device_name} has {channels.num_qubits}", circuit=circuit.name)
    if len(channels.controllers) != 1:
        raise CompilationError("programs spanning several controllers are not supported yet")
    tables = _tables(snapshot, channels)
    ops, used = _lower(circuit, tables)
    starts, total = _schedule(ops, circuit.num_qubits, scheduling_method)

    frame = [0.0] * channels.num_qubits
    measured: set[int] = set()
    plays: list[tuple] = []  # (port, start, wave id, amplitude, phase, frequency, length)
    acqs: list[tuple] = []  # (port, start, duration, frequency, qubit, clbit)
    wave_ids: dict[tuple, int] = {}  # waveform key -> id, in order of first use
    waves: list[np.ndarray] = []
    add_play = plays.append

    def wave_id(key: tuple, wave: np.ndarray) -> int:
        wid = wave_ids.get(key)
        if wid is None:
            wid = wave_ids[key] = len(waves)
            waves.append(wave)
        return wid

    drives: dict[tuple, tuple] = {}  # (qubit, amplitude) -> play fields, this program's ids

    def drive(q: int, start: int, amplitude_name: str) -> None:
        d = drives.get((q, amplitude_name))
        if d is None:
            port, key, wave, amp, if_hz = tables.drive(q, amplitude_name)
            d = drives[(q, amplitude_name)] = (port, wave_id(key, wave), amp, if_hz,
                                               wave.shape[0])
        add_play((d[0], start, d[1], d[2], frame[q], d[3], d[4]))

    for (name, qubits, clbits, params, duration), start in zip(ops, starts, strict=True):
        if name == "rz":
            frame[qubits[0]] -= params[0]
        elif name == "sx":
            drive(qubits[0], start, "pi2_amplitude")
        elif name == "x":
            drive(qubits[0], start, "pi_amplitude")
        elif name == "cz":
            a, c = sorted(qubits)
            port, key, wave, amp, phase_a, phase_c = tables.cz(a, c, duration, circuit)
            add_play((port, start, wave_id(key, wave), amp, 0.0, 0.0, wave.shape[0]))
            frame[a] -= phase_a
            frame[c] -= phase_c
        elif name == "measure":
            q, clbit = qubits[0], clbits[0]
            measured.add(q)
            port, key, wave, amp, if_hz, acq_port = tables.readout(q, duration)
            add_play((port, start, wave_id(key, wave), amp, 0.0, if_hz, wave.shape[0]))
            acqs.append((acq_port, start, duration, if_hz, q, clbit))

    lo_settings, flux_bias_a = tables.lo_and_flux(frozenset(used), frozenset(measured), circuit)
    return _assemble(channels, plays, acqs, waves, total, circuit, lo_settings, flux_bias_a,
                     snapshot.snapshot_id)


def _assemble(channels: ChannelMap, plays: list[tuple], acqs: list[tuple],
              waves: list[np.ndarray], total: int, circuit: QuantumCircuit, lo_settings: dict,
              flux_bias_a: dict, snapshot_id: int | None) -> PulseProgram:
    """The program from its rows: plays sorted by port, then start (stable)."""
    if plays:
        port, start, wave, amp, phase, freq, length = zip(*plays, strict=True)
        port = np.array(port, dtype=np.int32)
        start = np.array(start, dtype=np.int64)
        end = int((start + np.array(length, dtype=np.int64)).max())
    else:
        port = start = wave = amp = phase = freq = np.zeros(0)
        end = 0
    order = np.lexsort((start, port))
    if acqs:
        acols = list(zip(*acqs, strict=True))
        end = max(end, max(s + d for _, s, d, _, _, _ in acqs))
    else:
        acols = [()] * 6
    lengths = [w.shape[0] for w in waves]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.concatenate(waves) if waves else np.zeros(0, np.complex64)
    creg_sizes = [[reg.name, reg.size] for reg in circuit.cregs]
    return PulseProgram(
        controller=channels.controllers[0], sample_rate_hz=channels.sample_rate_hz,
        duration_samples=max(total or end, end, 1),
        play_port=port[order], play_start=start[order],
        play_wave=np.array(wave, dtype=np.int32)[order],
        play_amp=np.array(amp, dtype=np.float64)[order],
        play_amp_ref=np.full(len(plays), -1, dtype=np.int32),
        play_phase_rad=np.array(phase, dtype=np.float64)[order],
        play_freq_hz=np.array(freq, dtype=np.float64)[order],
        wave_offset=offsets, wave_data=data,
        acq_port=acols[0], acq_start=acols[1], acq_duration=acols[2], acq_freq_hz=acols[3],
        acq_qubit=acols[4], acq_clbit=acols[5],
        lo_settings=dict(lo_settings), flux_bias_a=dict(flux_bias_a),
        num_clbits=circuit.num_clbits,
        header={"name": circuit.name, "creg_sizes": creg_sizes,
                "memory_slots": circuit.num_clbits, "metadata": dict(circuit.metadata or {})},
        snapshot_id=snapshot_id,
    )


def clear_caches() -> None:
    """Forget every cached duration, pulse parameter, LO setting and synthesised waveform, so
    that the next compilation starts cold (benchmarks; after editing calibration in place)."""
    with _TABLES_LOCK:
        _TABLES.clear()
    _WAVEFORMS.clear()
