"""sy and the stage plugins on the firmware simulator: the pulses do what the unitaries say.

The expected probabilities come from exact statevectors of the circuits, not from the code
under test. The simulator knows the device only through what it is played.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.primitives import BackendSamplerV2
from qiskit.quantum_info import Statevector

from labqpu.backend.gates import SYGate
from labqpu.backend.plugins import count_pulses
from labqpu.pulse.compiler import SY_PHASE_RAD, compile_circuit

SHOTS = 2000

SEQUENCES = [
    ("sy",),
    ("sy", "sy"),
    ("sx", "sy"),
    ("sy", "sx"),
    # The two sequences below tell +Y from -Y: with rz(pi/2) between, sy then sx returns to |0>
    # and sx then sy lands in |1>; a sign error in the compiler swaps them.
    ("sy", "rz", "sx"),
    ("sx", "rz", "sy"),
]


def _circuit(seq: tuple[str, ...], qubit: int) -> QuantumCircuit:
    qc = QuantumCircuit(5, 1, name="_".join(seq))
    for g in seq:
        if g == "sy":
            qc.append(SYGate(), [qubit])
        elif g == "sx":
            qc.sx(qubit)
        else:
            qc.rz(math.pi / 2, qubit)
    qc.measure(qubit, 0)
    return qc


def _exact_p1(qc: QuantumCircuit, qubit: int) -> float:
    probs = Statevector(qc.remove_final_measurements(inplace=False)).probabilities([qubit])
    return float(probs[1])


@pytest.mark.parametrize("qubit", [0, 3])
def test_sy_sequences_match_their_unitaries(lab_backend, qubit) -> None:
    circuits = [_circuit(seq, qubit) for seq in SEQUENCES]
    result = lab_backend.run(circuits, shots=SHOTS, seed_simulator=17).result()
    for seq, qc, counts in zip(SEQUENCES, circuits, result.get_counts(), strict=True):
        expected = _exact_p1(qc, qubit)
        measured = counts.get("1", 0) / SHOTS
        assert abs(measured - expected) < 0.06, (seq, measured, expected)
    # the checks that matter most, spelled out
    p = {seq: c.get("1", 0) / SHOTS for seq, c in zip(SEQUENCES, result.get_counts(),
                                                        strict=True)}
    assert abs(p[("sy",)] - 0.5) < 0.06
    assert p[("sy", "sy")] > 0.9
    assert p[("sy", "rz", "sx")] < 0.08 and p[("sx", "rz", "sy")] > 0.92


def test_sy_plays_the_sx_pulse_a_quarter_turn_ahead(lab_backend) -> None:
    a, b = QuantumCircuit(5), QuantumCircuit(5)
    a.sx(1)
    b.append(SYGate(), [1])
    pa = compile_circuit(a, lab_backend.snapshot, lab_backend.config.channels)
    pb = compile_circuit(b, lab_backend.snapshot, lab_backend.config.channels)
    assert pa.play_port.tolist() == pb.play_port.tolist()
    assert np.array_equal(pa.play_amp, pb.play_amp)
    assert np.array_equal(pa.waveform(int(pa.play_wave[0])), pb.waveform(int(pb.play_wave[0])))
    handedness = lab_backend.snapshot.qubit_value(1, "drive_handedness")
    assert pb.play_phase_rad[0] - pa.play_phase_rad[0] == pytest.approx(handedness
                                                                        * SY_PHASE_RAD)
    assert pytest.approx(math.pi / 2) == SY_PHASE_RAD


def test_backend_names_its_plugins_and_transpile_uses_them(lab_backend) -> None:
    assert lab_backend.get_translation_stage_plugin() == "labqpu"
    assert lab_backend.get_scheduling_stage_plugin() == "labqpu"
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 1)
    for i in range(6):
        if i == 3:
            qc.cz(1, 2)
        qc.sx(1)
        qc.sx(2)
        qc.barrier(1, 2)  # keeps the transpiler from merging the pulses
    qc.cx(0, 1)
    qc.measure(range(3), range(3))
    ours = transpile(qc, lab_backend, optimization_level=1, seed_transpiler=4)
    theirs = transpile(qc, lab_backend, optimization_level=1, seed_transpiler=4,
                       translation_method="translator", scheduling_method="alap")
    assert ours.count_ops().get("x", 0) > theirs.count_ops().get("x", 0)  # DD pulses
    # every DD pulse Qiskit inserted is played by the compiled program
    program = lab_backend.run(ours, shots=10).programs[0]
    drive_ports = {lab_backend.config.channels.qubits[q].drive[1] for q in range(5)}
    drive_plays = int(np.isin(program.play_port, list(drive_ports)).sum())
    assert drive_plays == sum(ours.count_ops().get(g, 0) for g in ("sx", "sy", "x"))


def _tvd(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def test_dd_circuit_gives_the_outcomes_of_the_unitary(lab_backend) -> None:
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 1)
    for i in range(4):
        if i == 2:
            qc.cz(1, 2)
        qc.ry(0.4, 1)
        qc.rx(0.7, 2)
        qc.barrier(1, 2)  # keeps the transpiler from merging the pulses
    qc.cx(0, 1)
    qc.measure(range(3), range(3))
    ideal = Statevector(qc.remove_final_measurements(inplace=False)).probabilities_dict()
    with_dd = transpile(qc, lab_backend, optimization_level=1, seed_transpiler=4)
    without = transpile(qc, lab_backend, optimization_level=1, seed_transpiler=4,
                        scheduling_method="alap")
    assert with_dd.count_ops().get("x", 0) > without.count_ops().get("x", 0)
    res = lab_backend.run([with_dd, without], shots=SHOTS, seed_simulator=9).result()
    p_dd, p_plain = ({k: v / SHOTS for k, v in c.items()} for c in res.get_counts())
    # seeds 1-20 (2000 shots, a review): 0.090 mean, 0.0087 sd, 0.107 the largest; the shared
    # simulator's drift moves even a seeded run, so 0.13 (4.6 sd) rather than 0.12 (3.4)
    assert _tvd(p_dd, ideal) < 0.13, (p_dd, ideal)
    # DD echoes the idle ZZ, so the two differ by a TVD of 0.066 (20 000 shots; the same before
    # and after the drive-handedness fix); 2000 shots add up to ~0.04 of sampling noise
    # (seeds 1-9 gave 0.045-0.10).
    assert _tvd(p_dd, p_plain) < 0.11


def test_ghz3_through_backend_sampler_at_default_level(lab_backend) -> None:
    """Qiskit's default optimization level with labqpu's default plugins. 0.90 is the bar of
    issue "Qiskit". The Target carries the shipped snapshot's RB gate errors (sx/sy/x
    5.0-8.8e-4, cz 2.6-7.8e-3) and readout errors (1.4-2.3e-2), so the layout weighs all of
    them; it is 4-3-2 (docs/transpilation.md, "GHZ-3")."""
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    native = transpile(qc, lab_backend, seed_transpiler=1)
    assert count_pulses(native) >= 2
    result = BackendSamplerV2(backend=lab_backend).run([native], shots=4000).result()
    counts = result[0].data.meas.get_counts()
    fidelity = (counts.get("000", 0) + counts.get("111", 0)) / 4000
    print(f"GHZ-3 P(000)+P(111) = {fidelity:.3f}")
    assert fidelity >= 0.90, counts
