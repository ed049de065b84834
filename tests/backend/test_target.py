"""``build_target(snapshot, config)``: the Target is exactly what the calibration snapshot supports.

Expected values are read from the shipped snapshot (``labqpu/data/lab5_calibration.json``) and
wiring (``labqpu/data/lab5.toml``) directly, not from the code under test. Durations are in
seconds; ``dt`` is 1 / the controller sample rate.
"""

from __future__ import annotations

import math

import pytest
from qiskit import QuantumCircuit, transpile

from labqpu.backend.target import build_target
from labqpu.store import SnapshotBuilder

ONE_Q = ("rz", "sx", "sy", "x", "measure", "reset", "delay")


def raw_q(export, q: int, name: str):
    return export["document"]["qubits"][str(q)][name]["value"]


def raw_pair(export, a: int, b: int, name: str):
    return export["document"]["pairs"][f"{a}-{b}"][name]["value"]


def derived(store, snapshot, edit):
    """Commit ``edit(SnapshotBuilder.from_snapshot(snapshot))`` as a new snapshot."""
    return store.commit(edit(SnapshotBuilder.from_snapshot(snapshot)).build_document())


def qargs_of(target, name: str) -> set[tuple[int, ...]]:
    if name not in target.operation_names:
        return set()
    return set(target[name])


def summary(target) -> dict:
    """Every (instruction, qargs) with its (duration, error), comparable across calls."""
    out = {}
    for name in target.operation_names:
        for qargs, props in target[name].items():
            out[(name, qargs)] = None if props is None else (props.duration, props.error)
    return out


# ----------------------------------------------------------------- shipped snapshot


def test_shape_and_dt(snapshot, config):
    target = build_target(snapshot, config)
    assert target.num_qubits == 5
    assert target.dt == pytest.approx(1 / 1.0e9, rel=1e-12)
    assert target.snapshot_id == snapshot.snapshot_id == 1


def test_single_qubit_instructions_everywhere(snapshot, config):
    target = build_target(snapshot, config)
    assert set(target.operation_names) == {*ONE_Q, "cz"}
    for name in ONE_Q:
        assert qargs_of(target, name) == {(q,) for q in range(5)}, name


def test_cz_on_both_directions_of_coupling_edges_only(snapshot, config):
    target = build_target(snapshot, config)
    edges = [(0, 1), (1, 2), (2, 3), (3, 4)]
    expected = {e for a, b in edges for e in ((a, b), (b, a))}
    assert qargs_of(target, "cz") == expected
    assert not target.instruction_supported("cz", (0, 2))
    assert not target.instruction_supported("cz", (0, 4))


def test_durations_are_the_snapshot_values(snapshot, config, export):
    target = build_target(snapshot, config)
    for q in range(5):
        pulse = raw_q(export, q, "pulse_duration_s")
        assert target["sx"][(q,)].duration == pytest.approx(pulse, rel=1e-12)
        assert target["x"][(q,)].duration == pytest.approx(pulse, rel=1e-12)
        assert target["rz"][(q,)].duration == 0.0
        assert target["measure"][(q,)].duration == pytest.approx(
            raw_q(export, q, "readout_duration_s"), rel=1e-12)
        assert target["reset"][(q,)].duration == pytest.approx(
            raw_q(export, q, "reset_duration_s"), rel=1e-12)
    for a, b in [(0, 1), (1, 2), (2, 3), (3, 4)]:
        dur = raw_pair(export, a, b, "cz_duration_s")
        assert target["cz"][(a, b)].duration == pytest.approx(dur, rel=1e-12)
        assert target["cz"][(b, a)].duration == pytest.approx(dur, rel=1e-12)
    # the shipped snapshot has cz durations that differ between edges: they are not shared
    assert target["cz"][(0, 1)].duration != target["cz"][(1, 2)].duration


def test_measure_error_is_one_minus_assignment_fidelity(snapshot, config, export):
    target = build_target(snapshot, config)
    for q in range(5):
        fidelity = raw_q(export, q, "readout_assignment_fidelity")
        assert target["measure"][(q,)].error == pytest.approx(1 - fidelity, rel=1e-9)


def test_qubit_properties_equal_snapshot(snapshot, config, export):
    target = build_target(snapshot, config)
    assert len(target.qubit_properties) == 5
    for q, props in enumerate(target.qubit_properties):
        assert props.t1 == pytest.approx(raw_q(export, q, "t1_s"), rel=1e-12)
        assert props.t2 == pytest.approx(raw_q(export, q, "t2_echo_s"), rel=1e-12)  # Hahn
        assert props.frequency == pytest.approx(raw_q(export, q, "frequency_hz"), rel=1e-12)


def test_gate_errors_come_from_the_snapshot(snapshot, config, export):
    gates = export["document"]["gates"]
    target = build_target(snapshot, config)
    for q in range(5):
        for name in ("sx", "x"):
            assert target[name][(q,)].error == pytest.approx(
                gates[f"{name}:{q}"]["error"]["value"], rel=1e-12)
    for (a, b), props in target["cz"].items():
        key = f"cz:{min(a, b)}-{max(a, b)}"
        assert props.error == pytest.approx(gates[key]["error"]["value"], rel=1e-12)


def test_no_gate_errors_without_gate_entries(store, snapshot, config, export):
    def drop_gates(builder):
        for gate in export["document"]["gates"]:
            builder.remove_gate(gate)
        return builder

    target = build_target(derived(store, snapshot, drop_gates), config)
    for q in range(5):
        assert target["sx"][(q,)].error is None
        assert target["x"][(q,)].error is None
    for props in target["cz"].values():
        assert props.error is None


# ----------------------------------------------------------------- nothing invented


def test_missing_drive_parameter_removes_qubit_gates_and_its_edges(store, snapshot, config):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(2, "pi_amplitude"))
    target = build_target(snap, config)
    for name in ("sx", "x", "rz"):
        assert qargs_of(target, name) == {(0,), (1,), (3,), (4,)}, name
    assert qargs_of(target, "cz") == {(0, 1), (1, 0), (3, 4), (4, 3)}
    # readout of qubit 2 is still calibrated, so measure stays
    assert target.instruction_supported("measure", (2,))
    assert target.instruction_supported("delay", (2,))


def test_a_qubit_without_drive_gates_is_named_with_what_it_lacks(store, snapshot, config,
                                                                 caplog):
    """A store from before ``drive_handedness`` existed: the warning says what to measure,
    instead of leaving the user with the transpiler's message about the coupling map."""
    snap = derived(store, snapshot, lambda b: b.remove_qubit(3, "drive_handedness"))
    with caplog.at_level("WARNING", logger="labqpu.backend.target"):
        target = build_target(snap, config)
    assert "qubits [3] have no drive gates" in caplog.text
    assert "missing drive_handedness" in caplog.text
    # and marked, as docs/calibration.md says of every qubit the Target leaves out
    assert target.marks == {"qubit 3": ("missing drive_handedness: qubit 3's drive gates left "
                                        "out of the Target",)}


@pytest.mark.parametrize("name", ["drag_beta", "flux_bias_a", "drive_lo_frequency_hz",
                                  "pulse_sigma_s", "drive_handedness"])
def test_every_drive_parameter_is_required(store, snapshot, config, name):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(0, name))
    target = build_target(snap, config)
    assert not target.instruction_supported("sx", (0,))
    assert not target.instruction_supported("cz", (0, 1))
    assert target.instruction_supported("sx", (1,))


def test_missing_t1_gives_none(store, snapshot, config, export):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(1, "t1_s"))
    props = build_target(snap, config).qubit_properties
    assert props[1].t1 is None
    assert props[1].t2 == pytest.approx(raw_q(export, 1, "t2_echo_s"), rel=1e-12)
    assert props[0].t1 == pytest.approx(raw_q(export, 0, "t1_s"), rel=1e-12)


def test_qubit_without_calibration_has_only_delay(store, snapshot, config):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(4))
    target = build_target(snap, config)
    assert target.num_qubits == 5
    p = target.qubit_properties[4]
    assert (p.t1, p.t2, p.frequency) == (None, None, None)
    for name in ("rz", "sx", "x", "measure", "reset"):
        assert not target.instruction_supported(name, (4,)), name
    assert target.instruction_supported("delay", (4,))
    assert qargs_of(target, "cz") == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)}


def test_missing_fidelity_keeps_measure_without_error(store, snapshot, config, export):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(3, "readout_assignment_fidelity"))
    target = build_target(snap, config)
    props = target["measure"][(3,)]
    assert props.error is None
    assert props.duration == pytest.approx(raw_q(export, 3, "readout_duration_s"), rel=1e-12)
    assert target["measure"][(2,)].error is not None


def test_missing_readout_parameter_removes_measure(store, snapshot, config):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(3, "discriminator"))
    target = build_target(snap, config)
    assert qargs_of(target, "measure") == {(0,), (1,), (2,), (4,)}
    assert target.instruction_supported("sx", (3,))


def test_missing_reset_duration_removes_reset(store, snapshot, config):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(0, "reset_duration_s"))
    target = build_target(snap, config)
    assert qargs_of(target, "reset") == {(1,), (2,), (3,), (4,)}


@pytest.mark.parametrize("name", ["cz_phase_b_rad", "cz_flux_qubit", "cz_amplitude"])
def test_missing_cz_parameter_removes_only_that_edge(store, snapshot, config, name):
    snap = derived(store, snapshot, lambda b: b.remove_pair((2, 3), name))
    target = build_target(snap, config)
    assert qargs_of(target, "cz") == {(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3)}
    for q in (2, 3):
        assert target.instruction_supported("sx", (q,))


def test_gate_errors_come_from_gate_entries(store, snapshot, config, export):
    def edit(builder):
        for gate in export["document"]["gates"]:
            builder.remove_gate(gate)
        return builder.set_gate("sx:0", "error", 1.5e-3, "rb").set_gate("cz:2-3", "error",
                                                                       2.5e-2, "rb")

    snap = derived(store, snapshot, edit)
    target = build_target(snap, config)
    assert target["sx"][(0,)].error == pytest.approx(1.5e-3)
    assert target["sx"][(1,)].error is None
    assert target["x"][(0,)].error is None
    assert target["cz"][(2, 3)].error == pytest.approx(2.5e-2)
    assert target["cz"][(3, 2)].error == pytest.approx(2.5e-2)
    assert target["cz"][(1, 2)].error is None
    assert target.snapshot_id == snap.snapshot_id != snapshot.snapshot_id


# ----------------------------------------------------------------- purity


def test_pure_same_result_twice_and_snapshot_untouched(snapshot, config):
    before_doc = snapshot.to_document()
    before_hash = snapshot.content_hash
    first = build_target(snapshot, config)
    second = build_target(snapshot, config)
    assert summary(first) == summary(second)
    assert len(summary(first)) == 5 * len(ONE_Q) + 8
    assert [(p.t1, p.t2, p.frequency) for p in first.qubit_properties] == [
        (p.t1, p.t2, p.frequency) for p in second.qubit_properties]
    assert first.dt == second.dt
    assert snapshot.to_document() == before_doc
    assert snapshot.content_hash == before_hash


def test_transpiled_bell_uses_only_target_operations(snapshot, config):
    target = build_target(snapshot, config)
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    out = transpile(qc, target=target, seed_transpiler=7, optimization_level=1)
    names = set(out.count_ops())
    assert "cz" in names and "measure" in names
    assert names <= set(target.operation_names)
    for inst in out.data:
        qargs = tuple(out.find_bit(q).index for q in inst.qubits)
        assert target.instruction_supported(inst.operation.name, qargs), (inst.operation.name,
                                                                          qargs)
        if inst.operation.name == "rz":
            assert math.isfinite(float(inst.operation.params[0]))


def test_snapshot_id_survives_copy_and_pickle(snapshot, config):
    import copy
    import pickle

    target = build_target(snapshot, config)
    for clone in (copy.copy(target), copy.deepcopy(target), pickle.loads(pickle.dumps(target))):
        assert clone.snapshot_id == snapshot.snapshot_id
        assert clone.operation_names == target.operation_names
