"""A qubit or edge whose calibration step failed is marked: the runner records the failure in
the store (values unchanged), the Target marks the subject and keeps its last good values,
and the mark goes once the step passes again. Stale subjects are marked too."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from datetime import datetime, timedelta

import pytest

from labqpu import LabProvider
from labqpu.backend.target import build_target
from labqpu.calibration import graph
from labqpu.calibration.runner import Outcome, record_failures, run_graph
from labqpu.errors import FitError, InvalidSnapshotError
from labqpu.rack.config import default_config_path
from labqpu.store import CALIBRATION_FAILED, Snapshot, SnapshotBuilder
from labqpu.store.physics import check_physics
from labqpu.testing import seed_fresh_store

SUBJECTS = [0, 1, 2, (0, 1), (1, 2)]


def _after(snapshot: Snapshot, outcomes: list[Outcome]) -> tuple[Snapshot, list[str]]:
    builder = SnapshotBuilder.from_snapshot(snapshot)
    changed = record_failures(builder, snapshot, outcomes, SUBJECTS)
    return Snapshot(builder.build_document(), snapshot_id=snapshot.snapshot_id + 1), changed


def test_failures_are_recorded_marked_in_the_target_and_cleared_when_they_pass(
        snapshot, config, caplog) -> None:
    first, changed = _after(snapshot, [
        Outcome("rabi", "qubit 2", "calibrated", "forced"),
        Outcome("ramsey", "qubit 2", "failed", "forced; calibration failed: no fringes"),
        Outcome("cz", "edge 1-2", "failed", "check failed: phase 171 deg"),
        Outcome("cz", "edge 0-1", "blocked", "a prerequisite did not pass"),
        Outcome("rabi", "qubit 3", "failed", "not among the subjects of this run"),
    ])
    assert changed == ["qubit 2", "edge 1-2"]
    assert first.qubits[2][CALIBRATION_FAILED].value == {
        "ramsey": "forced; calibration failed: no fringes"}
    assert first.pairs[(1, 2)][CALIBRATION_FAILED].value == {
        "cz": "check failed: phase 171 deg"}
    assert CALIBRATION_FAILED not in first.pairs[(0, 1)]  # blocked is not failed
    assert CALIBRATION_FAILED not in first.qubits[3]
    for q in (2, 3):  # nothing else changed
        assert {k: p.value for k, p in first.qubits[q].items() if k != CALIBRATION_FAILED} \
            == {k: p.value for k, p in snapshot.qubits[q].items()}

    with caplog.at_level(logging.WARNING, logger="labqpu.backend.target"):
        target = build_target(first, config)
    assert set(target.marks) == {"qubit 2", "edge 1-2"}
    assert target.marks["qubit 2"][0].startswith("ramsey calibration failed (recorded ")
    assert target.marks["qubit 2"][0].endswith("): forced; calibration failed: no fringes")
    assert "edge 1-2 is marked: its cz calibration failed" in caplog.text
    assert target.instruction_supported("x", (2,))  # its last good values still play
    assert target.instruction_supported("cz", (1, 2))
    assert target.instruction_supported("x", (2,)) and target["x"][(2,)].duration == \
        build_target(snapshot, config)["x"][(2,)].duration
    assert pickle.loads(pickle.dumps(target)).marks == target.marks
    assert build_target(snapshot, config).marks == {}

    again, changed = _after(first, [
        Outcome("ramsey", "qubit 2", "failed", "calibration failed: a different reason")])
    assert changed == []  # the same steps still fail: the first record stays
    assert again.qubits[2][CALIBRATION_FAILED] == first.qubits[2][CALIBRATION_FAILED]

    more, changed = _after(first, [
        Outcome("drag", "qubit 2", "failed", "calibration failed: no minimum")])
    assert changed == ["qubit 2"]
    assert set(more.qubits[2][CALIBRATION_FAILED].value) == {"ramsey", "drag"}

    cleared, changed = _after(more, [Outcome("ramsey", "qubit 2", "fresh", "check passed"),
                                     Outcome("drag", "qubit 2", "calibrated", "forced"),
                                     Outcome("cz", "edge 1-2", "blocked", "")])
    assert changed == ["qubit 2"]
    assert CALIBRATION_FAILED not in cleared.qubits[2]
    assert set(build_target(cleared, config).marks) == {"edge 1-2"}


def test_a_stale_subject_is_marked_as_it_is_left_out(snapshot, config) -> None:
    # judged an hour after the newest frequency, so that only qubit 1's is stale on any day
    now = max(datetime.fromisoformat(params["frequency_hz"].timestamp)
              for params in snapshot.qubits.values()) + timedelta(hours=1)
    builder = SnapshotBuilder.from_snapshot(snapshot)
    old = snapshot.qubits[1]["frequency_hz"]
    builder.set_qubit(1, "frequency_hz", old.value, old.experiment,
                      timestamp=now - timedelta(hours=30))
    aged = Snapshot(builder.build_document(), snapshot_id=7)
    limited = dataclasses.replace(config, raw={**config.raw, "calibration": {
        **config.raw["calibration"], "max_age_h": {"frequency": 24}}})
    target = build_target(aged, limited, now=now)
    assert not target.instruction_supported("x", (1,))
    assert list(target.marks) == ["qubit 1"]
    assert target.marks["qubit 1"][0].startswith("stale frequency_hz (30.0 h > 24 h)")


@pytest.mark.parametrize("value", [{}, {"ramsey": 5}, "ramsey failed", {"": "why"}])
def test_a_malformed_failure_record_is_refused(snapshot, value) -> None:
    builder = SnapshotBuilder.from_snapshot(snapshot)
    builder.set_qubit(0, CALIBRATION_FAILED, value, "calibration runner")
    with pytest.raises(InvalidSnapshotError, match="calibration_failed") as info:
        check_physics(builder.build_document())
    assert "qubit 0" in str(info.value)


def test_the_runner_records_a_failed_step_in_the_store_and_clears_it_when_it_passes(
        tmp_path, monkeypatch) -> None:
    """On the simulator: a drive_lo calibration that measures, then fails its fit, leaves
    qubit 0's values as they were and commits only its failure; the Target of the next job
    marks qubit 0 and still plays it; the next run that passes clears the mark."""
    store = seed_fresh_store(tmp_path / "home")
    lab = tmp_path / "lab.toml"
    lab.write_text(default_config_path().read_text().replace(
        'store = ""', f'store = "{store}"', 1))
    nodes = graph.NODES
    real = {n.name: n for n in nodes}["drive_lo"]

    def measure_then_fail(kit, q, shots, progress):
        real.calibrate(kit, q, shots, progress)
        raise FitError("the LO plan does not fit", subject=f"qubit {q}")

    failing = tuple(dataclasses.replace(n, calibrate=measure_then_fail)
                    if n.name == "drive_lo" else n for n in nodes)
    with LabProvider(str(lab), simulator=True) as provider:
        backend = provider.backend()
        before = backend.snapshot
        monkeypatch.setattr(graph, "NODES", failing)
        report = run_graph(backend, ["drive_lo"], qubits=[0], force=True, rb=False)
        assert not report.ok
        [committed] = report.committed
        assert committed.parent_id == before.snapshot_id
        assert "record of failed steps of qubit 0 updated" in committed.notes
        marked = committed.qubits[0]
        assert list(marked[CALIBRATION_FAILED].value) == ["drive_lo"]
        assert "the LO plan does not fit" in marked[CALIBRATION_FAILED].value["drive_lo"]
        assert {k: p for k, p in marked.items() if k != CALIBRATION_FAILED} \
            == dict(before.qubits[0])
        assert list(backend.target.marks) == ["qubit 0"]
        assert backend.target.instruction_supported("x", (0,))

        again = run_graph(backend, ["drive_lo"], qubits=[0], force=True, rb=False)
        assert not again.ok and again.committed == []  # already recorded

        monkeypatch.setattr(graph, "NODES", nodes)
        passed = run_graph(backend, ["drive_lo"], qubits=[0], force=True, rb=False)
        assert passed.ok
        assert CALIBRATION_FAILED not in passed.snapshot.qubits[0]
        assert backend.target.marks == {}


def test_run_graph_takes_one_node_name_and_one_qubit(tmp_path) -> None:
    """``run_graph(backend, "drive_lo", qubits=0)``: a single node name or qubit number
    stands for a list of one (a string was split into letters, "no calibration node 'd'",
    and a number raised a bare ``TypeError``)."""
    store = seed_fresh_store(tmp_path / "home")
    lab = tmp_path / "lab.toml"
    lab.write_text(default_config_path().read_text().replace(
        'store = ""', f'store = "{store}"', 1))
    with LabProvider(str(lab), simulator=True) as provider:
        report = run_graph(provider.backend(), "drive_lo", qubits=0, force=True, rb=False,
                           commit=False)
    assert ("drive_lo", "qubit 0") in [(o.node, o.subject) for o in report.outcomes]
    assert {o.subject for o in report.outcomes} == {"qubit 0"}


@pytest.mark.parametrize(("name", "value", "node", "status"), [
    ("t1_s", 5e-3, "t1", "calibrated"),  # the T1 scan outlasts the controller
    ("drag_beta", 50.0, "rabi", "failed"),  # its pulses exceed the DAC's full scale
])
def test_a_stored_value_whose_programs_the_backend_refuses_fails_a_check_not_the_run(
        tmp_path, name, value, node, status) -> None:
    """A review's cases: a T1 stored in the wrong unit, a DRAG beta 100x too large. The
    backend refuses the node's programs before sending them (``InvalidRunInputError``), which
    ended the whole run, watch mode included, throwing away the steps already measured. Now
    the check fails, saying why, and the node is calibrated: the T1 scan starts from the
    design values and measures T1 again; the Rabi scan plays the stored beta and fails too,
    leaving the values as they were. The run goes on and reports."""
    store = seed_fresh_store(tmp_path / "home")
    lab = tmp_path / "lab.toml"
    lab.write_text(default_config_path().read_text().replace(
        'store = ""', f'store = "{store}"', 1))
    with LabProvider(str(lab), simulator=True) as provider:
        backend = provider.backend()
        SnapshotBuilder.from_snapshot(backend.store.latest()).set_qubit(
            1, name, value, "typo").commit(backend.store)
        report = run_graph(backend, [node], qubits=[1], rb=False, commit=False)
    outcomes = {(o.node, o.subject): o for o in report.outcomes}
    step = outcomes[(node, "qubit 1")]
    assert step.status == status, step
    assert step.reason.startswith("check failed: InvalidRunInputError: "), step.reason
    assert "nothing was sent" in step.reason
    if status == "failed":
        assert "; calibration failed: InvalidRunInputError: " in step.reason
        assert not report.ok
    else:
        [change] = [c for c in step.changes if c.name == name]
        assert change.old == value and 20e-6 < change.new < 100e-6, change
    assert all(o.status != "failed" for key, o in outcomes.items() if key[0] != node)


def test_shots_a_check_multiplies_past_a_jobs_limit_run_as_several_jobs(tmp_path,
                                                                       monkeypatch) -> None:
    """A review's case: `labqpu calibrate rabi --shots 6000` made the Rabi check ask 20 x 6000
    = 120 000 shots of one job, which the backend refuses; the check "failed" on that and the
    node was calibrated again. The kit now runs such shots as several jobs (averages weighted
    by their shots, single shots one after another), and the check passes."""
    from labqpu.calibration.bootstrap import _prepared_readouts
    from labqpu.calibration.design import default_design_path, load_design
    from labqpu.calibration.experiments import Kit
    from labqpu.calibration.runner import working_from_snapshot

    seed_fresh_store(tmp_path)
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        report = run_graph(backend, ["rabi"], qubits=[0], shots=6000, rb=False, commit=False)
        (rabi,) = [o for o in report.outcomes if o.node == "rabi"]
        assert rabi.status == "fresh" and rabi.reason.startswith("check passed"), rabi.reason

        kit = Kit(backend, working_from_snapshot(backend.snapshot,
                                                 load_design(default_design_path("lab5"))))
        programs = _prepared_readouts(kit, 0, kit.work.qubits[0]["pi_amplitude"], None)
        sizes = []
        run = backend.run
        monkeypatch.setattr(backend, "run",
                            lambda *a, **k: sizes.append(k["shots"]) or run(*a, **k))
        monkeypatch.setattr(type(backend), "max_shots", 100)
        single = kit.run_iq(programs, 250, single=True)
        assert sizes == [84, 83, 83] and single.shape == (2, 250, 1)
        averaged = kit.run_iq(programs, 250)
        assert averaged.shape == (2, 1)
        # |0> and |1> read apart as in one job
        assert abs(averaged[0, 0] - averaged[1, 0]) > 0.5 * abs(
            single[0, :, 0].mean() - single[1, :, 0].mean())


def test_a_fitted_value_the_store_would_refuse_fails_its_step() -> None:
    """A review's risk: a T1 fitted beyond the store's 10 ms would have failed the whole run's
    commit; the working set refuses it where it is set, as a FitError of that step, naming
    the qubit (or pair) and the parameter, and keeps the value it had."""
    import numpy as np

    from labqpu.calibration.working import Working

    work = Working({}, {2: {"t1_s": 40e-6}}, {(1, 2): {}})
    with pytest.raises(FitError, match=r"t1_s must be a finite number in \(0, 0\.01\] s") as info:
        work.set(2, "t1_s", np.float64(55.0), "t1-q2")
    assert info.value.subject == "qubit 2" and work.qubits[2]["t1_s"] == 40e-6
    with pytest.raises(FitError, match=r"cz_leakage .* the calibration store would refuse it"):
        work.set_pair((1, 2), "cz_leakage", 1.5, "cz_leakage-q1-2")
    work.set(2, "t1_s", 41e-6, "t1-q2")
    assert work.qubits[2]["t1_s"] == 41e-6
    # a lab's value of None: the store refuses it too (a review: it broke Kit.snapshot)
    with pytest.raises(FitError, match=r"lab_value is None: the calibration store would refuse"):
        work.set(2, "lab_value", None, "lab-q2")
    assert "lab_value" not in work.qubits[2]
