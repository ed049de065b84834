"""Pulse compiler: a transpiled circuit and a calibration snapshot in, a ``PulseProgram`` out.

* Timing: ALAP (default) or ASAP from the calibrated durations, in samples; barriers
  synchronise their qubits.
* ``rz`` is virtual: it shifts the phase of the qubit's drive frame for every later pulse.
* ``sx`` / ``x``: one DRAG pulse shape per qubit, played at the pi/2 or pi amplitude, at the
  calibrated IF on the drive LO.
* ``sy`` (sqrt(Y) = RY(pi/2)): the same DRAG pulse at the pi/2 amplitude, played a quarter turn
  ahead of the frame (phase + pi/2). With the frame convention of ``rz`` below (``rz(t)`` adds
  ``-t`` to the frame), a play at frame phase ``f`` rotates about cos(f) X + sin(f) Y, so
  ``sy`` = ``rz(-pi/2); sx; rz(pi/2)`` exactly, and costs what sx costs.
* ``cz``: a flat-top flux pulse on the pair's tunable qubit, then the calibrated single-qubit
  phase corrections as frame changes on both qubits.
* ``measure``: a readout pulse and an acquisition window over the same samples.
* ``delay`` plays nothing; a delay after which its qubit does nothing more (a scheduler's
  padding) is dropped, so it cannot hold back the readout. ``reset`` is passive: the qubit
  is left idle for the calibrated thermalisation time (several T1).
"""

from __future__ import annotations

from dataclasses import dataclass
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
#: Phase (rad) added to the frame when ``sy`` is played: a quarter turn, X axis -> Y axis.
SY_PHASE_RAD = np.pi / 2
SCHEDULING_METHODS = ("alap", "asap")


@dataclass
class _Op:
    name: str
    qubits: tuple[int, ...]
    clbits: tuple[int, ...]
    params: tuple
    duration: int
    start: int = 0


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
    if name in ("sx", "sy", "x"):
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


def _schedule(ops: list[_Op], num_qubits: int, method: str) -> int:
    """Assign start samples in place; returns the total duration (samples).

    Gates are scheduled ALAP or ASAP; then every measurement starts at the same sample, when
    the last gate has ended (simultaneous readout, so that no pulse reaches a qubit, or its
    coupled neighbours, while it is being read out).
    """
    gates = [op for op in ops if op.name != "measure"]
    seq = gates if method == "asap" else list(reversed(gates))
    avail = np.zeros(num_qubits, dtype=np.int64)
    for op in seq:
        start = int(max((avail[q] for q in op.qubits), default=0))
        op.start = start
        for q in op.qubits:
            avail[q] = start + op.duration
    gates_end = int(avail.max()) if num_qubits else 0
    if method == "alap":
        for op in gates:
            op.start = gates_end - op.start - op.duration
    total = gates_end
    for op in ops:
        if op.name == "measure":
            op.start = gates_end
            total = max(total, gates_end + op.duration)
    return total


def _without_trailing_delays(ops: list[_Op]) -> list[_Op]:
    """Drop delays after which their qubit does nothing more (a scheduler's padding of idle
    qubits): they play nothing, and counting them would hold back the readout of the others.
    A delay before a measurement (the wait of a T1 experiment) is kept."""
    last_used: dict[int, int] = {}
    for i, op in enumerate(ops):
        if op.name not in ("delay", "barrier"):
            for q in op.qubits:
                last_used[q] = i
    return [op for i, op in enumerate(ops)
            if op.name != "delay" or any(last_used.get(q, -1) > i for q in op.qubits)]


def _check_terminal_measurements(ops: list[_Op], circuit: QuantumCircuit) -> None:
    """Measurements must be the last operation on their qubit (barriers aside)."""
    measured: set[int] = set()
    for op in ops:
        if op.name == "barrier":
            continue
        late = measured.intersection(op.qubits)
        if late:
            raise CompilationError(
                f"circuit {circuit.name!r}: {op.name!r} on qubit {min(late)} follows its "
                "measurement; mid-circuit measurement is not supported yet",
                circuit=circuit.name, qubits=(min(late),), instruction=op.name)
        if op.name == "measure":
            measured.update(op.qubits)


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
    fs = channels.sample_rate_hz
    cal = _Calibration(snapshot)
    ops = []
    for inst in circuit.data:
        qubits = tuple(circuit.find_bit(q).index for q in inst.qubits)
        clbits = tuple(circuit.find_bit(c).index for c in inst.clbits)
        if inst.operation.name == "barrier":
            ops.append(_Op("barrier", qubits, (), (), 0))
            continue
        if inst.operation.name == "delay":
            params = ()
        else:
            try:
                params = tuple(float(p) for p in inst.operation.params)
            except TypeError as exc:
                raise CompilationError(
                    f"circuit {circuit.name!r}: {inst.operation.name} on {qubits} has an unbound "
                    "parameter; bind all parameters before run()", circuit=circuit.name,
                    qubits=qubits, instruction=inst.operation.name) from exc
        ops.append(_Op(inst.operation.name, qubits, clbits, params,
                       _duration_samples(inst, qubits, cal, fs, circuit)))
    ops = _without_trailing_delays(ops)
    _check_terminal_measurements(ops, circuit)
    total = _schedule(ops, circuit.num_qubits, scheduling_method)

    b = ProgramBuilder(channels.controllers[0], fs)
    frame = np.zeros(channels.num_qubits)
    used: set[int] = set()
    measured: set[int] = set()

    def drive(q: int, start: int, amplitude_name: str, phase: float = 0.0) -> None:
        dur = _samples(cal.qubit(q, "pulse_duration_s"), fs, f"qubit {q} pulse")
        sigma = cal.qubit(q, "pulse_sigma_s") * fs
        beta = cal.qubit(q, "drag_beta")
        wid = b.waves.add(("drag", dur, sigma, beta), lambda: gaussian_drag(dur, sigma, beta))
        if_hz = cal.qubit(q, "frequency_hz") - cal.qubit(q, "drive_lo_frequency_hz")
        b.play(channels.qubits[q].drive[1], start, wid, cal.qubit(q, amplitude_name),
               frame[q] + phase, if_hz)

    def flat(duration: int, rise: float) -> int:
        return b.waves.add(("flat_top", duration, rise), lambda: flat_top(duration, rise))

    for op in ops:
        if op.name not in ("delay", "barrier"):
            used.update(op.qubits)  # a qubit that only waits needs no drive LO
        if op.name == "rz":
            frame[op.qubits[0]] -= op.params[0]
        elif op.name == "sx":
            drive(op.qubits[0], op.start, "pi2_amplitude")
        elif op.name == "sy":
            drive(op.qubits[0], op.start, "pi2_amplitude", SY_PHASE_RAD)
        elif op.name == "x":
            drive(op.qubits[0], op.start, "pi_amplitude")
        elif op.name == "cz":
            a, c = sorted(op.qubits)
            fq = int(cal.pair(a, c, "cz_flux_qubit"))
            if fq not in (a, c):
                raise CompilationError(f"edge ({a}, {c}): cz_flux_qubit {fq} is not on the edge",
                                       circuit=circuit.name, qubits=(a, c),
                                       instruction="cz_flux_qubit")
            wid = flat(op.duration, cal.pair(a, c, "cz_rise_s") * fs)
            b.play(channels.qubits[fq].flux[1], op.start, wid, cal.pair(a, c, "cz_amplitude"))
            frame[a] -= cal.pair(a, c, "cz_phase_a_rad")
            frame[c] -= cal.pair(a, c, "cz_phase_b_rad")
        elif op.name == "measure":
            q, clbit = op.qubits[0], op.clbits[0]
            measured.add(q)
            wid = flat(op.duration, READOUT_RISE_S * fs)
            if_hz = (cal.qubit(q, "readout_frequency_hz")
                     - cal.qubit(q, "readout_lo_frequency_hz"))
            b.play(channels.qubits[q].readout[1], op.start, wid,
                   cal.qubit(q, "readout_amplitude"), 0.0, if_hz)
            b.acquire(channels.qubits[q].acquire[1], op.start, op.duration, if_hz, q, clbit)

    for q in range(channels.num_qubits):
        wiring = channels.qubits[q]
        p = snapshot.qubits.get(q, {})
        if has_all(p, DRIVE_PARAMETERS):
            b.flux_bias_a[wiring.flux_bias] = float(p["flux_bias_a"].value)
        wanted = []
        if q in used and has_all(p, DRIVE_PARAMETERS):
            wanted.append((wiring.drive_lo, "drive_lo_frequency_hz", "drive_lo_power_dbm"))
        if q in measured:
            wanted.append((wiring.readout_lo, "readout_lo_frequency_hz", "readout_lo_power_dbm"))
        for lo, f_name, p_name in wanted:
            try:
                b.set_lo(lo, cal.qubit(q, f_name), cal.qubit(q, p_name))
            except ValueError as exc:
                raise CompilationError(
                    f"qubit {q}: snapshot {snapshot.snapshot_id} asks for incompatible settings "
                    f"of a shared LO: {exc}", circuit=circuit.name, qubits=(q,),
                    instruction=f_name) from exc
    creg_sizes = [[reg.name, reg.size] for reg in circuit.cregs]
    return b.build(
        duration_samples=total, num_clbits=circuit.num_clbits,
        header={"name": circuit.name, "creg_sizes": creg_sizes,
                "memory_slots": circuit.num_clbits, "metadata": dict(circuit.metadata or {})},
        snapshot_id=snapshot.snapshot_id,
    )
