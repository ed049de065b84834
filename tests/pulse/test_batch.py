"""Sweeps compiled once (``labqpu.pulse.batch``): consecutive circuits that differ only in rz
angles, delay durations and pulse-gate parameters give, array for array, the programs
``compile_circuit`` gives each of them, while the compiler proper runs once per structure."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

import labqpu.pulse.batch as batch
from labqpu import pulse
from labqpu.errors import CompilationError
from labqpu.pulse.batch import compile_circuits
from labqpu.pulse.builder import PulseBuilder
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.gates import define_pulse_gate

LATENCY = 200


def t1(delay_dt: int, q: int = 0, name: str | None = None) -> QuantumCircuit:
    qc = QuantumCircuit(5, 1, name=name or f"t1_{delay_dt}", metadata={"xval": delay_dt})
    qc.x(q)
    qc.delay(delay_dt, q, unit="dt")
    qc.measure(q, 0)
    return qc


def ramsey(k: int) -> QuantumCircuit:
    """Point k of a two-qubit Ramsey-like scan: a delay in seconds ((400 + 16 k) ns), a phase
    on qubit 1 and its opposite twice on qubit 0 around a cz: every kind of number a sweep
    changes."""
    phase = 2 * math.pi * k / 12
    qc = QuantumCircuit(5, 2, name=f"ramsey_{k}", metadata={"xval": phase})
    qc.sx(0)
    qc.sx(1)
    qc.delay((400 + 16 * k) * 1e-9, 1, unit="s")
    qc.rz(phase, 1)
    qc.cz(0, 1)
    qc.rz(-2 * phase, 0)
    qc.sx(1)
    qc.measure([0, 1], [0, 1])
    return qc


def each(circuits, snapshot, channels, **options) -> list:
    return [compile_circuit(c, snapshot, channels, **options) for c in circuits]


def same_programs(batched: list, single: list) -> None:
    assert len(batched) == len(single)
    for k, (a, b) in enumerate(zip(batched, single, strict=True)):
        assert a.content_hash == b.content_hash, k
        assert a.header == b.header, k
        assert (a.snapshot_id, a.snapshot_hash) == (b.snapshot_id, b.snapshot_hash), k
        # built without the constructor's checks: the checked constructor agrees
        assert dataclasses.replace(a).content_hash == a.content_hash, k


@pytest.fixture
def compilations(monkeypatch) -> list[str]:
    """The names of the circuits the compiler proper compiled (the ``_compile_read`` calls
    ``compile_circuits`` made; the other circuits are points of a sweep)."""
    names: list[str] = []
    compile_read = batch._compile_read

    def counting(circuit, *args, **kwargs):
        names.append(circuit.name)
        return compile_read(circuit, *args, **kwargs)

    monkeypatch.setattr(batch, "_compile_read", counting)
    return names


@pytest.mark.parametrize("method", ["auto", "alap", "asap"])
def test_a_sweep_gives_each_circuits_own_program_and_compiles_once_per_structure(
        snapshot, channels, compilations, method) -> None:
    """25 T1 points, 12 Ramsey points, then one T1 point on another qubit: three structures,
    three compilations, and the 38 programs that compiling each circuit gives."""
    circuits = ([t1(400 * k + 16) for k in range(25)]
                + [ramsey(k) for k in range(12)]
                + [t1(800, q=2, name="t1_q2")])
    programs = compile_circuits(circuits, snapshot, channels, scheduling_method=method)
    assert compilations == ["t1_16", "ramsey_0", "t1_q2"]
    same_programs(programs, each(circuits, snapshot, channels, scheduling_method=method))
    assert len({p.content_hash for p in programs}) == 38
    starts = [int(p.acq_start[0]) for p in programs[:25]]
    assert starts == sorted(starts) and starts[1] - starts[0] == 400


def test_a_circuit_of_another_structure_breaks_the_sweep(snapshot, channels,
                                                         compilations) -> None:
    """A T1 point whose x is an sx, or whose classical register differs, is not part of the
    sweep around it: it is compiled on its own, and so is the point after it."""
    odd = t1(800, name="odd")
    odd.data[0] = odd.data[0].replace(operation=QuantumCircuit(1).sx(0)[0].operation)
    other_register = QuantumCircuit(5, 2, name="two_clbits")
    other_register.x(0)
    other_register.delay(1200, 0, unit="dt")
    other_register.measure(0, 1)
    circuits = [t1(16), t1(416), odd, t1(816), other_register, t1(1216)]
    programs = compile_circuits(circuits, snapshot, channels)
    assert compilations == ["t1_16", "odd", "t1_816", "two_clbits", "t1_1216"]
    same_programs(programs, each(circuits, snapshot, channels))


def test_dynamic_circuits_compile_one_by_one(snapshot, channels, compilations) -> None:
    """Active resets (feed-forward) are compiled circuit by circuit, as before, to the same
    programs."""
    circuits = []
    for k in range(3):
        qc = QuantumCircuit(5, 1, name=f"reset_{k}")
        qc.x(0)
        qc.reset(0)
        qc.delay(400 * k + 16, 0, unit="dt")
        qc.measure(0, 0)
        circuits.append(qc)
    options = {"feedforward_latency_samples": LATENCY}
    programs = compile_circuits(circuits, snapshot, channels, **options)
    assert compilations == ["reset_0", "reset_1", "reset_2"]
    assert all(p.has_feedforward for p in programs)
    same_programs(programs, each(circuits, snapshot, channels, **options))


def refused_alike(circuits: list, bad: int, snapshot, channels) -> str:
    """The message ``compile_circuits`` refuses ``circuits`` with, checked equal to
    ``compile_circuit``'s for ``circuits[bad]`` alone."""
    with pytest.raises(CompilationError) as swept:
        compile_circuits(circuits, snapshot, channels)
    with pytest.raises(CompilationError) as alone:
        compile_circuit(circuits[bad], snapshot, channels)
    assert str(swept.value) == str(alone.value)
    return str(swept.value)


def test_a_bad_point_in_a_sweep_is_refused_as_on_its_own(snapshot, channels) -> None:
    """An unbound rz angle at point 3, or a delay of no whole number of samples at point 2:
    the error is compile_circuit's for that circuit, naming it."""
    theta = Parameter("theta")
    circuits = [ramsey(k) for k in range(4)]
    circuits[3].data[3] = circuits[3].data[3].replace(
        operation=QuantumCircuit(1).rz(theta, 0)[0].operation)
    message = refused_alike(circuits, 3, snapshot, channels)
    assert "ramsey_3" in message and "unbound" in message
    in_seconds = []
    for ns in (16.0, 32.0, 32.5, 48.0):
        qc = QuantumCircuit(1, 1, name=f"t1_{ns}ns")
        qc.x(0)
        qc.delay(ns * 1e-9, 0, unit="s")
        qc.measure(0, 0)
        in_seconds.append(qc)
    message = refused_alike(in_seconds, 2, snapshot, channels)
    assert "t1_32.5ns" in message and "not a whole number" in message


def test_a_long_sweep_is_laid_out_in_bounded_calls(snapshot, channels, monkeypatch) -> None:
    """With at most 8 op rows per kernel call (here 2 points of 4 ops), 7 points take 3 calls
    after the first compilation and give the same programs; no program keeps a call's
    buffers alive (each holds its own arrays)."""
    calls = []
    kernel = batch.layout_batch_kernel
    monkeypatch.setattr(batch, "BATCH_OP_ROWS", 8)
    monkeypatch.setattr(batch, "layout_batch_kernel",
                        lambda *args: calls.append(args[1].shape[0]) or kernel(*args))
    circuits = [t1(400 * k + 16) for k in range(7)]
    programs = compile_circuits(circuits, snapshot, channels)
    assert calls == [2, 2, 2]
    same_programs(programs, each(circuits, snapshot, channels))
    assert all(p.play_start.base is None and p.acq_start.base is None for p in programs[1:])


def test_a_delay_no_controller_could_play_is_refused_while_reading(snapshot, channels) -> None:
    """A delay of 1e12 s (1e21 samples) is refused by name when its circuit is read, before
    a later point's error, as compile_circuit refuses it (it overflowed the kernel's int64
    once)."""
    theta = Parameter("theta")
    huge = t1(16, name="huge")
    huge.data[1] = huge.data[1].replace(operation=QuantumCircuit(1).delay(1e12, 0, unit="s")[0]
                                        .operation)
    unbound = ramsey(1)
    unbound.data[3] = unbound.data[3].replace(operation=QuantumCircuit(1).rz(theta, 0)[0]
                                              .operation)
    with pytest.raises(CompilationError, match=r"'huge': delay on qubits .* samples; a delay "
                                               r"takes 0 to"):
        compile_circuits([t1(16), huge, t1(48), unbound], snapshot, channels)
    with pytest.raises(CompilationError, match="'huge': delay"):
        compile_circuit(huge, snapshot, channels)


@pytest.fixture
def gates(snapshot, channels) -> dict:
    """Pulse gates with every kind of value a sweep changes: ``rabi`` on qubit 0 (a DRAG's
    amplitude and angle), ``spec`` on qubit 1 (a frequency shift held over a Gaussian, then a
    frame turn), and ``wide`` on qubit 0 (a Gaussian whose width is a parameter: another
    waveform per value)."""
    amp, angle, detuning, phi, sigma = (Parameter(n) for n in ("amp", "angle", "detuning",
                                                                 "phi", "sigma"))
    rabi = PulseBuilder(channels, snapshot, "rabi")
    rabi.play(rabi.calibrated_drag(0, amp=amp, angle_rad=angle), pulse.drive(0))
    spec = PulseBuilder(channels, snapshot, "spec")
    spec.shift_frequency(detuning, pulse.drive(1))
    spec.play(pulse.Gaussian(duration_samples=48, sigma_samples=12, amp=0.2), pulse.drive(1))
    spec.shift_phase(phi, pulse.drive(1))
    wide = PulseBuilder(channels, snapshot, "wide")
    wide.play(pulse.Gaussian(duration_samples=64, sigma_samples=sigma, amp=0.3), pulse.drive(0))
    return {"rabi": {(0,): define_pulse_gate("rabi", rabi, [0], [amp, angle])},
            "spec": {(1,): define_pulse_gate("spec", spec, [1], [detuning, phi])},
            "wide": {(0,): define_pulse_gate("wide", wide, [0])}}


def gate_circuit(gates: dict, name: str, values: tuple, k: int) -> QuantumCircuit:
    """Point k of a pulse-gate scan: the gate with ``values`` between an sx and an rz and a
    delay that change with k, on qubits 0 and 1."""
    qc = QuantumCircuit(5, 2, name=f"{name}_{k}", metadata={"xval": values[0]})
    qc.sx(1)
    qc.rz(0.1 * k, 1)
    qc.delay(16 * k, 1, unit="dt")
    (qubits,) = gates[name]
    qc.append(gates[name][qubits](*values), list(qubits))
    qc.measure([0, 1], [0, 1])
    return qc


@pytest.mark.parametrize("method", ["auto", "alap", "asap"])
def test_a_scan_of_pulse_gate_values_compiles_once(snapshot, channels, gates, compilations,
                                                    method) -> None:
    """A 20-point Rabi (amplitude and angle), then a 10-point spectroscopy (frequency and
    phase), each with its rz angle and delay changing too: one compilation each, and the
    programs compiling each circuit gives. A gate whose waveform is a parameter starts a
    structure per waveform."""
    circuits = ([gate_circuit(gates, "rabi", (a, 0.3 * k), k)
                 for k, a in enumerate(np.linspace(-0.9, 0.9, 20))]
                + [gate_circuit(gates, "spec", (df, 0.2 * k), k)
                   for k, df in enumerate(np.linspace(-20e6, 20e6, 10))]
                + [gate_circuit(gates, "wide", (s,), k)
                   for k, s in enumerate((8.0, 8.0, 10.0))])
    options = {"scheduling_method": method, "pulse_gates": gates}
    programs = compile_circuits(circuits, snapshot, channels, **options)
    assert compilations == ["rabi_0", "spec_0", "wide_0", "wide_2"]
    same_programs(programs, each(circuits, snapshot, channels, **options))
    assert len({p.content_hash for p in programs[:30]}) == 30
    port = channels.output(channels.qubits[0].drive)  # the Rabi pulse's
    amps = [float(p.play_amp[p.play_port == port][0]) for p in programs[:20]]
    assert amps == pytest.approx(np.linspace(-0.9, 0.9, 20), abs=1e-12)


def test_a_bad_pulse_gate_value_in_a_scan_is_refused_as_on_its_own(snapshot, channels,
                                                                    gates) -> None:
    """Point 3 of a Rabi at amplitude 5 (beyond DAC full scale) is refused with the message
    compile_circuit gives that circuit, before the later points are read."""
    circuits = [gate_circuit(gates, "rabi", (a, 0.0), k)
                for k, a in enumerate((0.1, 0.2, 0.3, 5.0, float("nan")))]
    with pytest.raises(CompilationError) as swept:
        compile_circuits(circuits, snapshot, channels, pulse_gates=gates)
    with pytest.raises(CompilationError) as alone:
        compile_circuit(circuits[3], snapshot, channels, pulse_gates=gates)
    assert str(swept.value) == str(alone.value)
    assert "rabi_3" in str(swept.value) and "DAC full scale" in str(swept.value)


def test_pulse_gates_with_feed_forward_compile_one_by_one(snapshot, channels, gates,
                                                          compilations) -> None:
    """A Rabi point followed by an active reset has conditional blocks: each circuit is
    compiled on its own, to the same programs."""
    circuits = []
    for k, a in enumerate((0.2, 0.4, 0.6)):
        qc = QuantumCircuit(5, 1, name=f"rabi_reset_{k}")
        qc.append(gates["rabi"][(0,)](a, 0.0), [0])
        qc.measure(0, 0)
        qc.reset(0)
        qc.x(0)
        qc.measure(0, 0)
        circuits.append(qc)
    options = {"feedforward_latency_samples": LATENCY, "pulse_gates": gates}
    programs = compile_circuits(circuits, snapshot, channels, **options)
    assert compilations == ["rabi_reset_0", "rabi_reset_1", "rabi_reset_2"]
    assert all(p.has_feedforward for p in programs)
    same_programs(programs, each(circuits, snapshot, channels, **options))
