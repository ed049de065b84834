"""Pulse compiler: a transpiled circuit and a calibration snapshot in, a ``PulseProgram`` out.

* Timing: ALAP (default) or ASAP from the calibrated durations, in samples; barriers
  synchronise their qubits.
* ``rz`` is virtual: it shifts the phase of the qubit's drive frame for every later pulse.
  The qubit's calibrated ``drive_handedness`` h (+1 or -1) says in which sense a play phase
  phi turns the drive axis: to h phi, in the frame where free evolution at a detuning
  delta = f_qubit - f_drive is Rz(-2 pi delta t) (Qiskit's convention, |1> above |0>). The
  ideal ``rz(t)`` turns the axis of every later pulse by -t, so it adds ``-h t`` to the play
  phase. rz then precesses the same way as the qubit does on its own: Ramsey detunings, ZZ
  and T2Ramsey frequencies come out with their physical signs.
* ``sx`` / ``x``: one DRAG pulse shape per qubit, played at the pi/2 or pi amplitude, at the
  calibrated IF on the drive LO, at the play phase of the frame.
* ``sy`` (sqrt(Y) = RY(pi/2)): the same DRAG pulse at the pi/2 amplitude, with its axis a
  quarter turn ahead of sx's (play phase + h pi/2), so ``sy`` = ``rz(-pi/2); sx; rz(pi/2)``
  exactly, and costs what sx costs.
* ``cz``: a flat-top flux pulse on the pair's tunable qubit, then the calibrated single-qubit
  phase corrections as frame changes on both qubits. ``cz_phase_*_rad`` are play-phase
  shifts, measured as such by the calibration (its analysis pulses are play phases), so they
  do not depend on the handedness.
* ``measure``: a readout pulse and an acquisition window over the same samples.
* ``delay`` plays nothing; a delay after which its qubit does nothing more (a scheduler's
  padding) is dropped, so it cannot hold back the readout. ``reset`` is passive: the qubit
  is left idle for the calibrated thermalisation time (several T1).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import accumulate, chain
from typing import NoReturn

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

from labqpu.errors import BackendPropertyError, CompilationError
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.kernels import EFFECT_FIELDS, flat_top, gaussian_drag, layout_kernel
from labqpu.pulse.program import ProgramBuilder, PulseProgram
from labqpu.pulse.timing import TimingConstraints
from labqpu.store import DRIVE_PARAMETERS, Snapshot, has_all

#: Rise and fall of readout pulses (s); calibration experiments use the same shape.
READOUT_RISE_S = 20e-9
#: Drive-axis angle of ``sy`` relative to ``sx`` (rad): a quarter turn ahead. Its play phase
#: relative to the frame is ``drive_handedness * SY_PHASE_RAD``.
SY_PHASE_RAD = np.pi / 2
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
                      circuit: QuantumCircuit, timing: TimingConstraints) -> int:
    """Samples ``inst`` occupies: calibrated durations padded onto the controller's timing grid
    (``TimingConstraints.pad``); delays must already lie on it."""
    name = inst.operation.name
    if name in ("sx", "sy", "x"):
        return timing.pad(_samples(cal.qubit(qubits[0], "pulse_duration_s"), fs,
                                   f"{name} on {qubits}"))
    if name == "cz":
        return timing.pad(_samples(cal.pair(*qubits, "cz_duration_s"), fs, f"cz on {qubits}"))
    if name == "measure":
        return timing.pad(_samples(cal.qubit(qubits[0], "readout_duration_s"), fs,
                                   f"measure on {qubits}"))
    if name == "reset":
        return timing.pad(_samples(cal.qubit(qubits[0], "reset_duration_s"), fs,
                                   f"reset on {qubits}"))
    if name == "delay":
        value, unit = inst.operation.duration, inst.operation.unit
        if unit == "expr" or isinstance(value, ParameterExpression):
            raise CompilationError(
                f"circuit {circuit.name!r}: delay on qubits {qubits} has an unbound duration; "
                "bind all parameters before run()", circuit=circuit.name, qubits=qubits,
                instruction="delay")
        if unit == "dt":
            samples = int(value)
        else:
            scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "ps": 1e-12}
            if unit not in scale:
                raise CompilationError(f"delay on {qubits}: unknown unit {unit!r}",
                                       circuit=circuit.name, qubits=qubits,
                                       instruction="delay")
            samples = round(float(value) * scale[unit] * fs)
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


def synthesize(key: tuple) -> np.ndarray:
    """The samples (complex64) of the waveform with shape key ``key``, freshly synthesised:
    ``("drag", samples, sigma, beta)``, ``("flat_top", samples, rise)`` (samples units), or
    ``("padded", inner_key, samples)``: ``inner_key``'s waveform followed by zeros up to
    ``samples`` (a calibrated pulse on a controller's timing grid)."""
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


def waveform(key: tuple) -> np.ndarray:
    """The samples of waveform ``key`` (read-only complex64): synthesised on first use, then
    served from a cache shared by every snapshot (same shape, same samples)."""
    wave = _WAVEFORMS.get(key)
    if wave is None:
        wave = synthesize(key)
        wave.setflags(write=False)
        if len(_WAVEFORMS) >= _MAX_WAVEFORMS:
            _WAVEFORMS.clear()
        _WAVEFORMS[key] = wave
    return wave


def _effect(*, play_port: int = -1, wave: int = -1, amp: float = 0.0, freq: float = 0.0,
            length: int = 0, phase_qubit: int = -1, param_qubit: int = -1,
            shift_qubit_a: int = -1, shift_a: float = 0.0, shift_qubit_b: int = -1,
            shift_b: float = 0.0, acq_port: int = -1, measure: int = 0,
            phase_offset: float = 0.0, param_sign: float = 1.0) -> tuple:
    """One row of the effect table, in the order of ``kernels.EFFECT_FIELDS``."""
    return (play_port, wave, amp, freq, length, phase_qubit, param_qubit, shift_qubit_a,
            shift_a, shift_qubit_b, shift_b, acq_port, measure, phase_offset, param_sign)


_NO_EFFECT = _effect()
assert len(_NO_EFFECT) == len(EFFECT_FIELDS)


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
        # effects: one row (``kernels.EFFECT_FIELDS``) per distinct (gate, qubits); row 0 is
        # "nothing" (barrier, delay, reset); waves: the waveforms rows refer to, by global id
        self.effect_ids: dict[tuple, int] = {}
        self.known: dict[tuple, tuple[int, int]] = {}  # (gate, qubits) -> (duration, effect)
        self.effect_rows: list[tuple] = [_NO_EFFECT]
        self.wave_ids: dict[tuple, int] = {}
        self.waves: list[np.ndarray] = []
        self._effects = np.array(self.effect_rows, dtype=np.float64)

    def effects(self) -> np.ndarray:
        """The effect table as a float64 (rows x fields) array."""
        if self._effects.shape[0] != len(self.effect_rows):
            self._effects = np.array(self.effect_rows, dtype=np.float64)
        return self._effects

    def program_waveforms(self) -> list[tuple]:
        """Shape keys of every waveform compiled against these tables so far."""
        return list(self.wave_ids)

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
        row = _NO_EFFECT
        if name == "rz":
            row = _effect(param_qubit=qubits[0], param_sign=self.handedness(qubits[0]))
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
            row = _effect(play_port=port, wave=self.wave(key, wave), amp=amp,
                          length=wave.shape[0], shift_qubit_a=a, shift_a=phase_a,
                          shift_qubit_b=c, shift_b=phase_c)
        elif name == "measure":
            q = qubits[0]
            port, key, wave, amp, if_hz, acq_port = self.readout(q, duration)
            row = _effect(play_port=port, wave=self.wave(key, wave), amp=amp, freq=if_hz,
                          length=wave.shape[0], acq_port=acq_port, measure=1)
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
        return _effect(play_port=port, wave=self.wave(key, wave), amp=amp, freq=if_hz,
                       length=wave.shape[0], phase_qubit=q, phase_offset=phase_offset)

    def drive(self, q: int, amplitude_name: str) -> tuple:
        """(port, waveform key, samples, amplitude, IF) of a DRAG pulse on qubit ``q``."""
        entry = self.drives.get((q, amplitude_name))
        if entry is None:
            cal, fs = self.cal, self.fs
            dur = _samples(cal.qubit(q, "pulse_duration_s"), fs, f"qubit {q} pulse")
            sigma = cal.qubit(q, "pulse_sigma_s") * fs
            beta = cal.qubit(q, "drag_beta")
            key = _on_grid(("drag", dur, sigma, beta), dur, self.channels.timing)
            wave = waveform(key)
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
            calibrated = _samples(cal.pair(a, c, "cz_duration_s"), fs, f"cz on ({a}, {c})")
            key = _on_grid(("flat_top", calibrated, rise), calibrated, self.channels.timing)
            wave = waveform(key)
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
            wave = waveform(key)
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


def _lower(circuit: QuantumCircuit, tables: _Tables):
    """Read the circuit once: per op its effect row, duration, first parameter, clbit and
    qubits (as arrays for ``layout_kernel``), and the qubits used and measured.

    Errors come in the order of a plain per-op compiler: reading errors (unbound parameters,
    durations, non-native gates) in circuit order, then a gate after a measurement, then
    pulse-parameter errors of the ops in circuit order. The effect of a gate already compiled
    against these tables is known and cannot fail; the others are resolved after the whole
    circuit has been read.
    """
    qindex = {bit: i for i, bit in enumerate(circuit.qubits)}
    cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
    known = tables.known  # (gate, qubits) -> (duration, effect), once both are known
    durations = tables.durations
    timing = tables.channels.timing
    effect_ids = tables.effect_ids
    cal, fs = tables.cal, tables.fs
    rows: list[tuple] = []  # (effect, duration, parameter, clbit) per op
    op_qubits: list[tuple] = []
    pending: list[tuple] = []  # (op, name, qubits) whose effect is not known yet
    measured: set[int] = set()
    late = None  # first instruction that follows a measurement of one of its qubits
    qubit_of = qindex.__getitem__
    add_row = rows.append
    add_qubits = op_qubits.append
    delays: list[int] = []  # rows of delays, checked for trailing padding at the end
    last_used: dict[int, int] = {}  # qubit -> last row that plays or measures on it
    for inst in circuit.data:
        name = inst.name
        qargs = inst.qubits
        qubits = (qubit_of(qargs[0]),) if len(qargs) == 1 else tuple(map(qubit_of, qargs))
        add_qubits(qubits)
        if name == "barrier":
            add_row((0, 0, 0.0, -1))
            continue
        if name == "delay":
            delays.append(len(rows))
        else:
            for q in qubits:
                last_used[q] = len(rows)
        param = 0.0
        if name != "delay":
            raw = inst.params
            if raw:
                try:
                    values = tuple(map(float, raw))  # every parameter must be bound
                except TypeError as exc:
                    raise CompilationError(
                        f"circuit {circuit.name!r}: {name} on {qubits} has an unbound "
                        "parameter; bind all parameters before run()", circuit=circuit.name,
                        qubits=qubits, instruction=name) from exc
                param = values[0]
            key = (name, qubits)
            hit = known.get(key)
            if hit is not None:
                duration, eid = hit
            else:
                duration = durations.get(key)
                if duration is None:
                    duration = _duration_samples(inst, qubits, cal, fs, circuit, timing)
                    durations[key] = duration
                eid = effect_ids.get(key)
        else:
            duration = _duration_samples(inst, qubits, cal, fs, circuit, timing)
            eid = 0  # a delay plays nothing
        if (measured and late is None and name != "delay"
                and not measured.isdisjoint(qubits)):
            late = (name, min(measured.intersection(qubits)))
        clbit = -1
        if name == "measure":
            measured.update(qubits)
            clbit = cindex[inst.clbits[0]]
        if eid is None:
            pending.append((len(rows), name, qubits))
            eid = 0
        add_row((eid, duration, param, clbit))
    if late is not None:
        name, q = late
        raise CompilationError(
            f"circuit {circuit.name!r}: {name!r} on qubit {q} follows its "
            "measurement; mid-circuit measurement is not supported yet",
            circuit=circuit.name, qubits=(q,), instruction=name)
    for i, name, qubits in pending:
        _, duration, param, clbit = rows[i]
        eid = tables.effect(name, qubits, duration, circuit)
        known[(name, qubits)] = (duration, eid)
        rows[i] = (eid, duration, param, clbit)
    # A delay after which its qubit does nothing more is a scheduler's padding: it plays
    # nothing and would only hold back the readout. A delay before a measurement is kept.
    padding = {i for i in delays
               if all(last_used.get(q, -1) < i for q in op_qubits[i])}
    if padding:
        rows = [row for i, row in enumerate(rows) if i not in padding]
        op_qubits = [qs for i, qs in enumerate(op_qubits) if i not in padding]
    qptr = [0]
    qptr.extend(accumulate(map(len, op_qubits)))
    qflat = list(chain.from_iterable(op_qubits))
    return rows, qptr, qflat, set(last_used), measured


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
    rows, qptr, qflat, used, measured = _lower(circuit, tables)
    if rows:
        effect, duration, param, clbit = zip(*rows, strict=True)
    else:
        effect = duration = param = clbit = ()
    n = len(rows)
    plays = (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int32),
             np.empty(n), np.empty(n), np.empty(n))
    acqs = (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n),
            np.empty(n, np.int32), np.empty(n, np.int32))
    wave_order = np.empty(max(n, 1), np.int64)
    total, n_play, n_acq, n_waves, end = layout_kernel(
        np.array(effect, dtype=np.int64), np.array(duration, dtype=np.int64),
        np.array(param, dtype=np.float64), np.array(clbit, dtype=np.int64),
        np.array(qptr, dtype=np.int64), np.array(qflat, dtype=np.int64),
        circuit.num_qubits, channels.num_qubits, scheduling_method == "alap",
        tables.effects(), len(tables.waves), *plays, *acqs, wave_order)
    lo_settings, flux_bias_a = tables.lo_and_flux(frozenset(used), frozenset(measured), circuit)
    waves = [tables.waves[g] for g in wave_order[:n_waves].tolist()]
    offsets = np.zeros(n_waves + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.array([w.shape[0] for w in waves], dtype=np.int64))
    start, port, wave, amp, phase, freq = (c[:n_play] for c in plays)
    a_start, a_port, a_duration, a_freq, a_qubit, a_clbit = (c[:n_acq] for c in acqs)
    creg_sizes = [[reg.name, reg.size] for reg in circuit.cregs]
    return PulseProgram(
        controller=channels.controllers[0], sample_rate_hz=channels.sample_rate_hz,
        duration_samples=max(total or end, end, 1),
        play_port=port, play_start=start, play_wave=wave, play_amp=amp,
        play_amp_ref=np.full(n_play, -1, dtype=np.int32), play_phase_rad=phase,
        play_freq_hz=freq, wave_offset=offsets,
        wave_data=np.concatenate(waves) if waves else np.zeros(0, np.complex64),
        acq_port=a_port, acq_start=a_start, acq_duration=a_duration, acq_freq_hz=a_freq,
        acq_qubit=a_qubit, acq_clbit=a_clbit,
        lo_settings=dict(lo_settings), flux_bias_a=dict(flux_bias_a),
        num_clbits=circuit.num_clbits,
        header={"name": circuit.name, "creg_sizes": creg_sizes,
                "memory_slots": circuit.num_clbits, "metadata": dict(circuit.metadata or {})},
        snapshot_id=snapshot.snapshot_id,
    )


def clear_caches() -> None:
    """Forget every cached duration, pulse parameter, LO setting and synthesised waveform, so
    that the next compilation starts cold (benchmarks; after editing calibration in place)."""
    with _TABLES_LOCK:
        _TABLES.clear()
    _WAVEFORMS.clear()
