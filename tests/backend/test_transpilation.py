"""The sy gate, its equivalence rules and labqpu's stage plugins, checked on the Target alone.

No simulator: unitaries are compared with ``Operator.from_circuit`` (which undoes the layout
and the routing permutation); durations and gate errors come from the shipped snapshot.
"""

from __future__ import annotations

import importlib
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter
from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary
from qiskit.circuit.library import HGate, RXGate, RYGate, RZGate, SXGate, UnitaryGate, XGate
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import Operator, random_unitary
from qiskit.transpiler.exceptions import TranspilerError
from qiskit.transpiler.preset_passmanagers.plugin import list_stage_plugins

from labqpu.backend import gates as gates_module
from labqpu.backend.gates import SYGate, register_equivalences
from labqpu.backend.plugins import PulseEfficient1q, count_pulses, synthesize_1q
from labqpu.backend.target import build_target
from labqpu.backend.transpile_benchmark import benchmark_circuits, main, pulse_counts

NATIVE = {"rz", "sx", "sy", "x", "cz", "measure", "delay", "reset", "barrier"}


@pytest.fixture(scope="module")
def target(snapshot, config):
    return build_target(snapshot, config)


def padded(circuit: QuantumCircuit, n: int) -> QuantumCircuit:
    """``circuit`` on the first qubits of an n-qubit register (ancillas idle)."""
    wide = QuantumCircuit(n)
    wide.compose(circuit, range(circuit.num_qubits), inplace=True)
    return wide


RANDOM = [random_circuit(2 + i % 4, 5, max_operands=2, seed=900 + i) for i in range(20)]


# ------------------------------------------------------------------------------- sy gate


def test_sy_is_ry_half_pi_and_squares_to_y_up_to_phase():
    sy = Operator(SYGate())
    assert np.allclose(sy.data, RYGate(math.pi / 2).to_matrix())
    assert Operator(SYGate()).compose(SYGate()).equiv(Operator.from_label("Y"))
    assert np.allclose(Operator(SYGate().inverse()).compose(sy).data, np.eye(2))


def test_sy_is_in_the_target_wherever_sx_is_with_sx_calibration(target):
    assert set(target["sy"]) == set(target["sx"]) == {(q,) for q in range(5)}
    for qargs, props in target["sx"].items():
        assert target["sy"][qargs].duration == props.duration
        assert target["sy"][qargs].error == props.error


def test_sy_takes_sx_error_and_its_own_when_measured(store, snapshot, config):
    from labqpu.store import SnapshotBuilder

    builder = SnapshotBuilder.from_snapshot(snapshot)
    for gate in list(snapshot.gates):
        builder.remove_gate(gate)
    snap = store.commit(builder
                        .set_gate("sx:2", "error", 1.1e-3, "rb")
                        .set_gate("sx:3", "error", 1.0e-3, "rb")
                        .set_gate("sy:3", "error", 1.4e-3, "rb").build_document())
    t = build_target(snap, config)
    assert t["sy"][(2,)].error == pytest.approx(1.1e-3)
    assert t["sy"][(3,)].error == pytest.approx(1.4e-3)
    assert t["sy"][(0,)].error is None


# ------------------------------------------------------------------------ equivalences


def _rule_counts() -> dict[str, int]:
    return {g.name: len(SessionEquivalenceLibrary.get_entry(g))
            for g in (SYGate(), SXGate(), HGate(), RXGate(Parameter("t")))}


def test_rules_are_registered_once_even_when_asked_again():
    before = _rule_counts()
    assert before["sy"] == 2
    assert register_equivalences() == 0
    importlib.import_module("labqpu.backend")
    importlib.import_module("labqpu")
    assert gates_module.register_equivalences() == 0
    assert _rule_counts() == before


def test_rules_are_registered_once_in_a_fresh_process():
    code = (
        "import importlib, labqpu, labqpu.backend, labqpu.backend.gates as g\n"
        "from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary as L\n"
        "n = len(L.get_entry(g.SYGate()))\n"
        "importlib.reload(g); importlib.reload(labqpu.backend); import labqpu\n"
        "print(n, len(L.get_entry(g.SYGate())), g.register_equivalences())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == ["2", "2", "0"]


def test_each_rule_is_exact_including_global_phase():
    for gate, circuit in gates_module._rules():
        if gate.params:
            circuit = circuit.assign_parameters({circuit.parameters[0]: 0.731})
            gate = type(gate)(0.731)
        assert np.allclose(Operator(gate).data, Operator(circuit).data), gate.name


def test_sy_translates_to_other_bases():
    qc = QuantumCircuit(1)
    qc.append(SYGate(), [0])
    out = transpile(qc, basis_gates=["rz", "sx", "cx"], optimization_level=0)
    assert set(out.count_ops()) <= {"rz", "sx"}
    assert Operator(out).equiv(Operator(qc))


# ---------------------------------------------------------------- translation plugin


def test_plugins_are_entry_points():
    assert "labqpu" in list_stage_plugins("translation")
    assert "labqpu" in list_stage_plugins("scheduling")


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_random_circuits_translate_exactly_into_the_native_basis(target, level):
    for i, qc in enumerate(RANDOM):
        out = transpile(qc, target=target, optimization_level=level, seed_transpiler=i,
                        translation_method="labqpu")
        assert set(out.count_ops()) <= NATIVE, (i, out.count_ops())
        assert Operator.from_circuit(out).equiv(Operator(padded(qc, target.num_qubits))), i


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_native_basis_with_the_default_translator_too(target, level):
    qc = RANDOM[3]
    out = transpile(qc, target=target, optimization_level=level, seed_transpiler=1,
                    translation_method="translator", scheduling_method="alap")
    assert set(out.count_ops()) <= NATIVE
    assert Operator.from_circuit(out).equiv(Operator(padded(qc, target.num_qubits)))


def test_synthesis_uses_the_fewest_pulses():
    full = frozenset({"rz", "sx", "sy", "x"})
    for u, pulses in [(np.eye(2), 0), (Operator.from_label("Z").data, 0),
                      (Operator.from_label("Y").data, 1), (Operator(HGate()).data, 1),
                      (RXGate(0.3).to_matrix(), 2), (random_unitary(2, seed=4).data, 2)]:
        seq, phase = synthesize_1q(np.asarray(u), full)
        assert sum(n != "rz" for n, _ in seq) == pulses
        qc = QuantumCircuit(1, global_phase=phase)
        for name, angle in seq:
            gate = {"rz": RZGate(angle), "sx": SXGate(), "sy": SYGate(), "x": XGate()}[name]
            qc.append(gate, [0])
        assert np.allclose(Operator(qc).data, u)
    seq, _ = synthesize_1q(Operator(HGate()).data, full)
    assert [n for n, _ in seq] == ["rz", "sy"]  # one frame change fewer than rz sx rz


def test_a_repeated_run_is_synthesised_for_each_qubit_with_its_own_errors():
    """The same single-qubit run on two qubits, three times: each qubit gets the pulse with
    its own smaller error every time (the pass keeps one synthesis per qubit and product)."""
    from qiskit.transpiler import InstructionProperties, Target

    errors = {"sx": (1e-3, 1e-4), "sy": (1e-4, 1e-3), "x": (1e-3, 1e-3), "rz": (0.0, 0.0)}
    tgt = Target(num_qubits=2)
    for gate in (RZGate(Parameter("t")), SXGate(), SYGate(), XGate()):
        tgt.add_instruction(gate, {(q,): InstructionProperties(error=errors[gate.name][q])
                                   for q in (0, 1)})
    qc = QuantumCircuit(2)
    for _ in range(3):
        for q in (0, 1):
            qc.rz(0.3, q)
            qc.append(SYGate(), [q])
            qc.rz(0.5, q)
        qc.barrier()
    out = PulseEfficient1q(tgt)(qc)
    pulses = {q: [i.operation.name for i in out.data
                  if i.operation.name in ("sx", "sy", "x") and out.find_bit(i.qubits[0]).index == q]
              for q in (0, 1)}
    assert pulses == {0: ["sy"] * 3, 1: ["sx"] * 3}
    assert np.allclose(Operator(out).data, Operator(qc).data)


def test_x_like_runs_are_carried_through_cz(target):
    qc = QuantumCircuit(5)
    qc.x(0)
    qc.cz(0, 1)
    qc.sx(0)
    out = PulseEfficient1q(target)(qc)
    assert count_pulses(out) == 2  # cz and one sx-like pulse; the x merged into it
    assert Operator(out).equiv(Operator(qc))
    assert np.allclose(Operator(out).data, Operator(qc).data)
    both = QuantumCircuit(5)
    both.x([0, 1])
    both.cz(0, 1)
    both.h([0, 1])
    out = PulseEfficient1q(target)(both)
    assert count_pulses(out) == 3
    assert np.allclose(Operator(out).data, Operator(both).data)


def test_level_0_keeps_every_written_gate(target):
    qc = QuantumCircuit(1)
    for _ in range(5):
        qc.x(0)
    qc.sx(0)
    qc.append(SYGate(), [0])
    out = transpile(qc, target=target, optimization_level=0, initial_layout=[0])
    assert dict(out.count_ops()) == {"x": 5, "sx": 1, "sy": 1}


def test_parameters_and_barriers_stop_merging(target):
    t = Parameter("t")
    qc = QuantumCircuit(1)
    qc.h(0)
    qc.rz(t, 0)
    qc.h(0)
    qc.barrier()
    qc.x(0)
    out = PulseEfficient1q(target)(qc)
    assert out.parameters == {t}
    bound = out.assign_parameters({t: 0.4})
    assert np.allclose(Operator(bound).data, Operator(qc.assign_parameters({t: 0.4})).data)


def test_unitary_gates_and_user_sy_survive(target):
    qc = QuantumCircuit(2)
    qc.append(UnitaryGate(random_unitary(4, seed=3)), [0, 1])
    qc.append(SYGate(), [1])
    for level in (0, 1, 2, 3):
        out = transpile(qc, target=target, optimization_level=level, seed_transpiler=3)
        assert set(out.count_ops()) <= NATIVE
        assert Operator.from_circuit(out).equiv(Operator(padded(qc, 5)))


def test_labqpu_translation_plays_fewer_pulses_from_level_1(target):
    circuits = benchmark_circuits(num_random=4)
    for level in (1, 2):
        base = sum(pulse_counts(circuits, target, level, "translator"))
        ours = sum(pulse_counts(circuits, target, level, "labqpu"))
        assert ours < base, (level, ours, base)


def test_benchmark_command_prints_the_table(capsys):
    main(["--random", "1"])
    out = capsys.readouterr().out
    assert "| 3 |" in out and "labqpu" in out


# ------------------------------------------------------------------ scheduling plugin


def _idle_circuit() -> QuantumCircuit:
    """Qubit 0 waits while qubits 1-2 run a long chain of single-qubit pulses around one cz
    (no echo plays on 0 during that cz: test_no_echo_on_a_spectator_while_its_cz_plays)."""
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 1)
    for i in range(8):
        if i == 4:
            qc.cz(1, 2)
        qc.sx(1)
        qc.sx(2)
        qc.barrier(1, 2)  # keeps the transpiler from merging the pulses
    qc.cx(0, 1)
    qc.measure(range(3), range(3))
    return qc


def _duration_dt(target, name: str, qargs: tuple[int, ...], op) -> int:
    if name == "delay":
        return int(op.duration)
    if name in ("barrier", "rz"):
        return 0
    return round(target[name][qargs].duration / target.dt)


def test_dd_fills_idle_windows_with_calibrated_x_pulses(target):
    out = transpile(_idle_circuit(), target=target, optimization_level=1, seed_transpiler=2,
                    scheduling_method="labqpu")
    plain = transpile(_idle_circuit(), target=target, optimization_level=1, seed_transpiler=2,
                      scheduling_method="alap")
    assert out.count_ops()["x"] > plain.count_ops().get("x", 0)
    assert out.estimate_duration(target) == plain.estimate_duration(target)  # idle time only
    per_qubit: dict[int, list] = {}
    for inst, t0 in zip(out.data, out.op_start_times, strict=True):
        qargs = tuple(out.find_bit(q).index for q in inst.qubits)
        for q in qargs:
            per_qubit.setdefault(q, []).append((t0, inst.operation, qargs))
    dd_windows = 0
    for q, ops in per_qubit.items():
        end = 0
        for t0, op, qargs in ops:  # contiguous: every op starts where the last one ended
            if op.name == "barrier":
                continue
            assert t0 == end, (q, op.name, t0, end)
            end = t0 + _duration_dt(target, op.name, qargs, op)
        names = "".join("x" if op.name == "x" else "d" if op.name == "delay" else "."
                        for _, op, _ in ops)
        for match in re.finditer(r"d(?:xd)+", names):
            echo = [op for _, op, _ in ops[match.start():match.end()]]
            pulses = len(echo) // 2
            assert pulses in (2, 4), names  # the staggered echo of one colour or the other
            dd_windows += 1
            for x in echo[1::2]:
                assert _duration_dt(target, "x", (q,), x) == \
                    round(target["x"][(q,)].duration / target.dt) == 40
            # x centred at odd multiples of 1 / (2 pulses) of the slack
            gaps = [d.duration for d in echo[0::2]]
            slack = sum(gaps)
            assert abs(gaps[0] - slack / (2 * pulses)) <= 1, gaps
            assert all(abs(g - slack / pulses) <= 1 for g in gaps[1:-1]), gaps
    assert dd_windows >= 1, "no idle window got dynamical decoupling"
    unitary = Operator.from_circuit(out.remove_final_measurements(inplace=False))
    assert unitary.equiv(Operator.from_circuit(plain.remove_final_measurements(inplace=False)))


def test_user_delays_are_not_filled_with_dd(target):
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.delay(20e-6, 0, unit="s")
    qc.measure(0, 0)
    out = transpile(qc, target=target, initial_layout=[2], scheduling_method="labqpu")
    assert out.count_ops()["x"] == 1
    delays = [i.operation for i in out.data if i.operation.name == "delay"
              and out.find_bit(i.qubits[0]).index == 2]
    assert sum(d.duration for d in delays) == round(20e-6 / target.dt)


def test_the_default_scheduling_decouples_idle_qubits(target):
    """The backend's default stage (``labqpu``, checked by name in
    test_native_gates_on_simulator) inserts the echo; ``labqpu_nodd`` leaves the windows
    empty."""
    default = transpile(_idle_circuit(), target=target, optimization_level=1, seed_transpiler=2,
                        scheduling_method="labqpu")
    plain = transpile(_idle_circuit(), target=target, optimization_level=1, seed_transpiler=2,
                      scheduling_method="labqpu_nodd")
    assert default.count_ops().get("x", 0) > plain.count_ops().get("x", 0)
    assert (default.estimate_duration(target, unit="dt")
            == plain.estimate_duration(target, unit="dt"))


def test_zz_ramsey_control_is_not_echoed(target):
    """While the target of qiskit-experiments' ZZRamsey waits, its control idles. An echo on
    the control would refocus the ZZ being measured, so the default scheduling leaves a qubit
    coupled to a waiting qubit alone; an uncoupled idle qubit is still decoupled."""
    from qiskit_experiments.library import ZZRamsey

    exp = ZZRamsey((1, 2), min_delay=0.0, max_delay=4e-6, num_delays=5)
    for circuit in exp.circuits():
        wide = QuantumCircuit(4, 3)
        # in superposition (a qubit in a basis state is never echoed)
        wide.h(0)  # coupled to 1, which waits: left alone
        wide.h(3)  # coupled only to 2, the control, which never waits: decoupled
        wide.barrier()
        wide.compose(circuit, qubits=[1, 2], clbits=[0], inplace=True)
        wide.measure(0, 1)
        wide.measure(3, 2)
        out = transpile(wide, target=target, initial_layout=[0, 1, 2, 3],
                        scheduling_method="labqpu")
        ops = [(t0, i.operation.name, out.find_bit(i.qubits[0]).index)
               for i, t0 in zip(out.data, out.op_start_times, strict=True)]
        pulses = sorted(t0 for t0, name, q in ops if q == 1 and name in ("sx", "sy", "x"))
        wait = (pulses[0] + 40, pulses[-1])  # from the first pi/2 to the last
        inside = {q: sum(1 for t0, name, qq in ops
                         if qq == q and name == "x" and wait[0] <= t0 < wait[1])
                  for q in (0, 2, 3)}
        assert inside[2] == 1, (circuit.metadata, inside)  # the echo ZZRamsey wrote
        assert inside[0] == 0, (circuit.metadata, inside)
        if circuit.metadata["xval"] > 1e-6:
            assert inside[3] > 0, (circuit.metadata, inside)


def test_other_plugins_can_be_chosen_by_name(target):
    qc = _idle_circuit()
    out = transpile(qc, target=target, optimization_level=1, seed_transpiler=2,
                    translation_method="translator", scheduling_method="alap")
    assert out.count_ops().get("x", 0) == 0  # Qiskit's alap pads with delays only


def test_pulse_pass_keeps_the_global_phase_exactly(target):
    for i, qc in enumerate(RANDOM[:10]):
        native = transpile(padded(qc, 5), target=target, optimization_level=1,
                           translation_method="translator", seed_transpiler=i)
        native = native.remove_final_measurements(inplace=False)
        out = PulseEfficient1q(target)(native)
        assert count_pulses(out) <= count_pulses(native), i
        assert np.allclose(Operator(out).data, Operator(native).data), i


def test_qubits_the_circuit_never_uses_are_not_decoupled(lab_backend) -> None:
    """An RB-like circuit on qubits 0 and 2 with a full-width barrier before its readout: the
    idle qubits 1, 3 and 4 get plain delays, no x pulses (nothing to refocus in |0>)."""
    qc = QuantumCircuit(5, 2)
    for _ in range(6):
        qc.sx(0)
        qc.sx(2)
    qc.barrier()
    qc.measure([0, 2], [0, 1])
    isa = transpile(qc, lab_backend, initial_layout=list(range(5)))
    touched = {isa.find_bit(q).index for inst in isa.data
               if inst.operation.name not in ("delay", "barrier") for q in inst.qubits}
    assert touched == {0, 2}
    assert isa.count_ops().get("delay", 0) > 0


def test_a_qubit_in_its_ground_state_is_not_echoed_after_a_barrier(lab_backend) -> None:
    """A review's case: qubit 1 is only measured, and waits in |0> behind a full-width barrier
    while qubits 3 and 4 run a chain; qubits 0 and 2 wait in |+>. Qubit 1 got x pulses (the
    window after the barrier did not count as its start); now only 0 and 2 are echoed."""
    qc = QuantumCircuit(5, 5)
    qc.h(0)
    qc.h(2)
    qc.barrier()
    for i in range(6):
        qc.cx(3, 4)
        qc.rx(0.3 * (i + 1), 3)
        qc.barrier(3, 4)
    qc.barrier()
    qc.h(0)
    qc.h(2)
    qc.measure(range(5), range(5))
    isa = transpile(qc, lab_backend, initial_layout=list(range(5)), seed_transpiler=7)
    echoed = {isa.find_bit(inst.qubits[0]).index for inst in isa.data
              if inst.operation.name == "x"}
    assert 1 not in echoed and {0, 2} <= echoed, echoed


def test_a_qubit_a_cz_leaves_in_a_basis_state_is_not_echoed(lab_backend) -> None:
    """A review's case: qubit 4, the control of a cx in |0>, waited in |0> while qubit 3 was
    measured and reset; the stage echoed it (its first gate, the cz, had passed), so it spent
    ~1.7 us in |1> and read 1 in 6.2 % of shots against 0.55 % without the echo. An x, rz or
    cz leaves a basis state one, as the compiler's echo has it; an sx does not."""
    qc = QuantumCircuit(2, 3)
    qc.cx(0, 1)
    qc.measure(1, 2)
    qc.reset(1)
    qc.measure([0, 1], [0, 1])
    isa = transpile(qc, lab_backend, initial_layout=[4, 3])
    echoed = {isa.find_bit(inst.qubits[0]).index for inst in isa.data
              if inst.operation.name == "x"}
    assert 4 not in echoed, echoed
    counts = lab_backend.run(isa, shots=4000, seed_simulator=3).result().get_counts()
    flipped = sum(n for key, n in counts.items() if key[-1] == "1") / 4000
    assert flipped < 0.02, counts
    superposed = QuantumCircuit(2, 3)  # the same wait in |+> is echoed
    superposed.h(0)
    superposed.cx(0, 1)
    superposed.measure(1, 2)
    superposed.reset(1)
    superposed.measure([0, 1], [0, 1])
    isa = transpile(superposed, lab_backend, initial_layout=[4, 3])
    assert 4 in {isa.find_bit(inst.qubits[0]).index for inst in isa.data
                 if inst.operation.name == "x"}


def test_no_echo_on_a_spectator_while_its_cz_plays(lab_backend) -> None:
    """A review's case: qubit 3 waits 2 us, then cx(1, 2). Qubit 0 idles next to that cz; an
    echo on it during the flux pulse flipped the spectator level the cz's phase depends on, and
    P(0000) fell to 0.65 (0.94 without DD). Now no x overlaps a neighbour's cz, and the
    circuit gives |0000> as often as without decoupling."""
    qc = QuantumCircuit(4)
    qc.delay(2000, 3, unit="ns")
    qc.barrier()
    qc.cx(1, 2)
    qc.measure_all()
    native = transpile(qc, lab_backend, initial_layout=[0, 1, 2, 3])
    target = lab_backend.target

    def span(inst, t0: int) -> tuple[int, int]:
        qargs = tuple(native.find_bit(q).index for q in inst.qubits)
        return t0, t0 + _duration_dt(target, inst.operation.name, qargs, inst.operation)

    timed = list(zip(native.data, native.op_start_times, strict=True))
    cz = [span(inst, t0) for inst, t0 in timed if inst.operation.name == "cz"]
    echoes = [span(inst, t0) for inst, t0 in timed if inst.operation.name == "x"]
    for x0, x1 in echoes:
        assert all(x1 <= c0 or x0 >= c1 for c0, c1 in cz), (x0, x1, cz)
    counts = lab_backend.run(native, shots=2000, seed_simulator=7).result().get_counts()
    assert counts.get("0000", 0) / 2000 >= 0.88, counts


def _plays_of(program, channels, qubit: int, role: str) -> list[int]:
    """Start samples of the plays on ``qubit``'s ``role`` port ("drive" or "flux")."""
    port = getattr(channels.qubits[qubit], role)[1]
    return sorted(int(t) for p, t in zip(program.play_port, program.play_start, strict=True)
                  if int(p) == port)


def test_labqpu_nodd_dynamic_circuits_play_at_the_stages_times(lab_backend) -> None:
    """``labqpu_nodd`` times a circuit without padding it. The compiler used to play every
    timed circuit with a reset or a mid-circuit measurement ASAP, which holds the stage's times
    only when padding fills each qubit's idle time (a review's two cases):
    - h(0); reset(1); cx(0, 1): qubit 0's h played at 0, so it waited the 2.5 us of the active
      reset in superposition;
    - a mid-circuit measurement of qubit 1, then cx(2, 3): the cz played at sample 40, as
      qubit 1's 1000-sample readout window opened, where the stage put it at 1008, ALAP
      beside the final readouts.
    Now such a circuit plays ALAP with early runs, at the stage's times."""
    channels = lab_backend.config.channels
    samples_per_dt = lab_backend.target.dt * channels.sample_rate_hz

    def stage_start(native, name: str, qubit: int) -> int:
        starts = [t0 for inst, t0 in zip(native.data, native.op_start_times, strict=True)
                  if inst.operation.name == name
                  and qubit in [native.find_bit(q).index for q in inst.qubits]]
        return round(min(starts) * samples_per_dt)

    for barrier in (False, True):  # a barrier on every qubit at 0 is not padding
        reset = QuantumCircuit(5, 2)
        if barrier:
            reset.barrier()
        reset.h(0)
        reset.reset(1)
        reset.cx(0, 1)
        reset.measure([0, 1], [0, 1])
        native = transpile(reset, lab_backend, scheduling_method="labqpu_nodd",
                           initial_layout=range(5), seed_transpiler=1)
        program = lab_backend.compile(native)
        first = _plays_of(program, channels, 0, "drive")[0]
        assert first == stage_start(native, "sy", 0) > 2000, (barrier, first)

    mid = QuantumCircuit(4, 5)
    mid.x(1)
    mid.measure(1, 4)
    mid.x(1)
    mid.h(2)
    mid.cx(2, 3)
    mid.measure([0, 1, 2, 3], [0, 1, 2, 3])
    native = transpile(mid, lab_backend, scheduling_method="labqpu_nodd",
                       initial_layout=[0, 1, 2, 3], seed_transpiler=1)
    program = lab_backend.compile(native)
    window = next((int(t), int(t + d)) for q, t, d in zip(
        program.acq_qubit, program.acq_start, program.acq_duration, strict=True) if q == 1)
    (flux,) = [t for q in (2, 3) for t in _plays_of(program, channels, q, "flux")]
    assert flux == stage_start(native, "cz", 2) > window[0] + 900, (flux, window)


def test_a_timed_circuit_changed_afterwards_runs_as_an_untimed_one(lab_backend) -> None:
    """Qiskit keeps a transpiled circuit's ``op_start_times`` through ``copy()`` and
    ``append``; once they no longer match its instructions the compiler treats the circuit as
    untimed (it raised a bare ValueError for a while) and plays it as it plays any untimed
    dynamic circuit."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    changed = transpile(qc, lab_backend, seed_transpiler=1).copy()
    changed.reset(0)
    assert len(changed.op_start_times) != len(changed.data)
    untimed = changed.copy()
    untimed._op_start_times = None
    assert lab_backend.compile(changed).content_hash == lab_backend.compile(untimed).content_hash
    counts = lab_backend.run(changed, shots=400, seed_simulator=5).result().get_counts()
    assert (counts.get("00", 0) + counts.get("11", 0)) / 400 >= 0.9, counts


@pytest.mark.parametrize("method", ["labqpu", "labqpu_nodd"])
def test_a_bell_pair_survives_a_delay_on_one_of_its_qubits(lab_backend, method) -> None:
    """A review's case: h(0), cx(0, 1), a 1 us delay on qubit 0 only, measure both. ALAP put
    the target's last sy of the cx right before its readout, so the target waited 1 us in
    superposition beside the delayed control, unechoed (a delay the circuit wrote is free
    evolution: no echo beside it), and static ZZ scrambled the pair: P(00) + P(11) = 0.63
    with either plugin. A qubit's gates between its last two-qubit gate and its readout now
    play right after that gate, in the scheduling stage and in the compiler, so it waits in
    its measurement basis: >= 0.93 (0.956 measured)."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.delay(1000, 0, unit="ns")
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend, scheduling_method=method, seed_transpiler=1)
    target = lab_backend.target
    timed = list(zip(native.data, native.op_start_times, strict=True))
    (cz, cz_start), = [(inst, t0) for inst, t0 in timed if inst.operation.name == "cz"]
    cz_end = cz_start + _duration_dt(target, "cz", tuple(native.find_bit(q).index
                                                          for q in cz.qubits), cz.operation)
    for q in cz.qubits:
        after = [t0 for inst, t0 in timed if inst.operation.name == "sy" and q in inst.qubits
                 and t0 >= cz_start]
        assert all(t0 == cz_end for t0 in after), (q, after, cz_end)
    program = lab_backend.compile(native)
    channels = lab_backend.config.channels
    drive = {channels.qubits[native.find_bit(q).index].drive[1] for q in cz.qubits}
    samples_per_dt = target.dt * channels.sample_rate_hz
    starts = [int(t) for p, t in zip(program.play_port, program.play_start, strict=True)
              if int(p) in drive]
    assert max(starts) == round(cz_end * samples_per_dt), (starts, cz_end)
    counts = lab_backend.run(native, shots=2000, seed_simulator=3).result().get_counts()
    assert (counts.get("00", 0) + counts.get("11", 0)) / 2000 >= 0.93, counts


def test_classical_bits_of_no_register_are_padded_in_their_order(lab_backend) -> None:
    """A circuit whose classical bits belong to no register transpiles at Qiskit's defaults
    (the padding stage raised ``KeyError`` on them, as Qiskit's own padding does) and its
    counts keep the bit positions (Aer: {'01': shots})."""
    from qiskit import ClassicalRegister, QuantumRegister
    from qiskit.circuit import Clbit
    from qiskit.transpiler.exceptions import TranspilerError

    qc = QuantumCircuit(QuantumRegister(2, "q"), [Clbit(), Clbit()])
    qc.x(0)
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend)
    assert native.clbits == qc.clbits
    counts = lab_backend.run(native, shots=200).result(timeout=60).get_counts()
    assert max(counts, key=counts.get) == "01" and counts["01"] > 170, counts
    # bits of no register before a register's bits: refused rather than reordered
    first_loose = QuantumCircuit(QuantumRegister(2, "q"), [Clbit()], ClassicalRegister(1, "c"))
    first_loose.x(1)
    first_loose.measure([0, 1], [0, 1])
    with pytest.raises(TranspilerError, match="classical bits of no register in order only "
                                              "after those of registers"):
        transpile(first_loose, lab_backend)


def test_a_closing_barrier_changes_nothing_that_plays(lab_backend) -> None:
    """A review's circuit: a cz, a mid-circuit readout of qubit 2, sx on qubit 1, a barrier over
    all, measure(0), then a barrier that ends the circuit. Qubit 1's idle window before that
    barrier (its instructions are over) was filled with echo pulses, which the compiler plays,
    so qubit 0's final readout waited for them (1000 -> 1895 samples). With or without the
    closing barrier, the same pulses and readouts now play."""
    played = []
    for closing in (False, True):
        qc = QuantumCircuit(3, 2)
        qc.x(1)
        qc.x(1)
        qc.cz(0, 1)
        qc.measure(2, 0)
        qc.barrier(0, 2)
        qc.sx(1)
        qc.barrier()
        qc.measure(0, 1)
        if closing:
            qc.barrier()
        program = lab_backend.compile(transpile(qc, lab_backend, initial_layout=[0, 1, 2],
                                                seed_transpiler=1))
        played.append((sorted(zip(program.play_start.tolist(), program.play_port.tolist(),
                                  strict=True)),
                       sorted(zip(program.acq_start.tolist(), program.acq_qubit.tolist(),
                                  strict=True))))
    assert played[0] == played[1]


@pytest.mark.parametrize("loose_first", [False, True])
def test_a_bit_of_no_register_beside_a_register_loses_no_shot(lab_backend, loose_first) -> None:
    """A register and a classical bit of no register: the header named the register alone,
    so Qiskit's counts read the register's bit from the wrong memory slot (loose bit first)
    and merged the outcomes that differ in the other bit, keeping one count per key (508 of
    1000 shots counted). The counts are now whole outcomes, every shot counted: at Qiskit's
    defaults with the loose bit last (as the stage's error for the other order advises), and
    through ``labqpu_nodd`` with it first."""
    from qiskit import ClassicalRegister, QuantumRegister
    from qiskit.circuit import Clbit

    loose, reg = Clbit(), ClassicalRegister(1, "c")
    qc = QuantumCircuit(QuantumRegister(2, "q"), *([[loose], reg] if loose_first
                                                   else [reg, [loose]]))
    qc.x(0)
    qc.h(1)
    qc.measure(0, loose)  # always 1
    qc.measure(1, reg[0])  # 0 or 1
    options = {"scheduling_method": "labqpu_nodd"} if loose_first else {}
    native = transpile(qc, lab_backend, **options)
    counts = lab_backend.run(native, shots=1000).result(timeout=60).get_counts()
    assert sum(counts.values()) == 1000, counts
    slot = native.find_bit(loose).index  # bit k of a key is memory slot k, from the right
    ones = sum(n for key, n in counts.items() if key[::-1][slot] == "1")
    other = sum(n for key, n in counts.items() if key[::-1][1 - slot] == "1")
    assert ones > 950 and 350 < other < 650, counts


@pytest.mark.parametrize("level", [None, 2, 3])
def test_a_non_finite_diagonal_gate_just_before_a_measurement_is_removed_by_qiskit_first(
        lab_backend, level) -> None:
    """The limit of the check below (docs/reliability.md, "Not guaranteed yet"): from level 2
    (Qiskit's default) Qiskit's init stage drops a diagonal gate directly before a measurement
    before labqpu's translation stage sees the circuit, so rz(nan) there vanishes with its
    mistake and the circuit transpiles (at levels 0 and 1 it is refused). If Qiskit stops
    doing this, this test fails and the page must say so."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.rz(math.nan, 0)
    qc.measure(0, 0)
    out = transpile(qc, lab_backend, optimization_level=level)
    assert all(math.isfinite(p) for inst in out.data for p in inst.operation.params
               if isinstance(p, float))
    for low in (0, 1):
        with pytest.raises(TranspilerError, match=r"rz on device qubit \d has the parameter nan"):
            transpile(qc, lab_backend, optimization_level=low)


@pytest.mark.parametrize("level", [None, 0, 1, 2, 3])
def test_a_non_finite_angle_is_refused_at_transpile_before_it_is_optimised_away(
        lab_backend, level) -> None:
    """h, rz(nan), h: Qiskit's single-qubit optimisation (from level 1) merges the three into
    an x, which then ran as if nothing were wrong. labqpu's translation stage refuses the NaN
    first, at every level, naming the gate and its device qubit; inside an if_else body too."""
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.rz(math.nan, 0)
    qc.h(0)
    qc.measure(0, 0)
    with pytest.raises(TranspilerError, match=r"rz on device qubit \d has the parameter nan"):
        transpile(qc, lab_backend, optimization_level=level)
    flow = QuantumCircuit(1, 1)
    flow.measure(0, 0)
    with flow.if_test((flow.clbits[0], 1)):
        flow.rx(math.inf, 0)
    flow.measure(0, 0)
    with pytest.raises(TranspilerError,
                       match=r"rx inside the body of an if_else has the parameter inf"):
        transpile(flow, lab_backend, optimization_level=level)
    huge = QuantumCircuit(1, 1)  # beyond any float: it raised a bare OverflowError
    huge.h(0)
    huge.rz(-10**400, 0)
    huge.h(0)
    huge.measure(0, 0)
    with pytest.raises(TranspilerError, match=r"rz on device qubit \d has the parameter "
                                              r"-10000000000\.\.\. \(402 characters\)"):
        transpile(huge, lab_backend, optimization_level=level)


def test_a_delay_between_barriers_on_an_idle_qubit_makes_the_others_wait(lab_backend) -> None:
    """A review's case: x(0), barrier, a 20 us delay on qubit 1 (which does nothing else),
    barrier, measure(0). The barriers make qubit 0 wait out the delay before its readout. The
    scheduling stage moved the delay after the second barrier and the compiler dropped it as
    padding, so the readout came 20 us early (P(1) 0.98 against ~0.61). At Qiskit's defaults
    the readout now starts 20 us after the x (the default stage decouples qubit 0 while it
    waits, which halves its decay: its echo holds it in |0> for half the wait); without
    decoupling P(1) falls by exp(-20 us / T1) against the circuit without the delay."""
    def circuit(wait_us: float) -> QuantumCircuit:
        qc = QuantumCircuit(2, 1)
        qc.x(0)
        qc.barrier()
        if wait_us:
            qc.delay(wait_us, 1, unit="us")
        qc.barrier()
        qc.measure(0, 0)
        return qc

    fs = lab_backend.config.channels.sample_rate_hz
    for method in (None, "labqpu_nodd"):
        p1 = {}
        for wait_us in (0, 20):
            native = transpile(circuit(wait_us), lab_backend, scheduling_method=method)
            qubit = native.layout.final_index_layout()[0]
            program = lab_backend.compile(native)
            drive = lab_backend.config.channels.qubits[qubit].drive[1]
            first = min(int(t) for p, t in zip(program.play_port, program.play_start,
                                               strict=True) if int(p) == drive)
            assert int(program.acq_start[0]) - first >= round(wait_us * 1e-6 * fs), method
            counts = lab_backend.run(native, shots=4000, seed_simulator=2).result().get_counts()
            p1[wait_us] = counts.get("1", 0) / 4000
        t1 = lab_backend.qubit_properties(qubit).t1
        if method is None:
            assert p1[20] < p1[0] - 0.1, p1
        else:
            expected = p1[0] * np.exp(-20e-6 / t1)
            assert abs(p1[20] - expected) < 0.05, (p1, expected, t1)
