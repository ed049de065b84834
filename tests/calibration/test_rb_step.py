"""The graph's rb step: randomized benchmarking of what a recalibration left out of date, on the
simulator, through the store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from labqpu import LabProvider, cli
from labqpu.calibration import runner
from labqpu.calibration.rb import RBSettings, outdated_subjects
from labqpu.calibration.records import load_record
from labqpu.calibration.runner import run_graph
from labqpu.errors import CalibrationError
from labqpu.store import CALIBRATION_FAILED, CalibrationStore, SnapshotBuilder
from labqpu.testing import use_fresh_home

#: Shorter sequences than the defaults: the step's logic, not the figures, is under test.
QUICK = RBSettings(lengths_1q=(1, 40, 120, 300), lengths_2q=(1, 8, 24, 48), seeds=3, shots=200)


def _outdate_qubit_1_and_edge_3_4(backend):
    """Commit the shipped snapshot with qubit 1's pi amplitude and edge 3-4's cz amplitude
    measured half an hour after its gate errors; return (snapshot, the time to judge ages at:
    an hour after the shipped gate errors, whatever day the test runs)."""
    shipped = backend.snapshot
    measured = max(datetime.fromisoformat(g["error"].timestamp)
                   for g in shipped.gates.values() if "error" in g)
    later = (measured + timedelta(minutes=30)).isoformat()
    builder = SnapshotBuilder.from_snapshot(shipped)
    builder.set_qubit(1, "pi_amplitude", shipped.qubits[1]["pi_amplitude"].value,
                      "fine_amplitude-test", timestamp=later)
    builder.set_pair((3, 4), "cz_amplitude", shipped.pairs[(3, 4)]["cz_amplitude"].value,
                     "cz-test", timestamp=later)
    return backend.store.commit(builder.build_document()), measured + timedelta(hours=1)


@pytest.mark.slow
def test_the_rb_step_benchmarks_only_what_a_recalibration_outdated(tmp_path, monkeypatch):
    """Qubit 1's pi amplitude and edge 3-4's cz amplitude measured again after the shipped
    gate errors: ``run_graph(["rb"])`` benchmarks qubit 1 and edge 3-4 and nothing else,
    commits their errors (newer than the pulses, so nothing is out of date afterwards) and
    leaves every other gate error as it was; run again, everything is fresh and nothing is
    committed."""
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        start, now = _outdate_qubit_1_and_edge_3_4(backend)
        later = datetime.fromisoformat(start.qubits[1]["pi_amplitude"].timestamp)

        report = run_graph(backend, ["rb"], rb_settings=QUICK, now=now)

        assert report.ok, report.table()
        steps = {o.subject: o for o in report.outcomes}
        assert all(o.node == "rb" for o in report.outcomes)
        assert {s for s, o in steps.items() if o.status == "calibrated"} == {"qubit 1",
                                                                            "edge 3-4"}
        assert {s for s, o in steps.items() if o.status == "fresh"} == {
            "qubit 0", "qubit 2", "qubit 3", "qubit 4", "edge 0-1", "edge 1-2", "edge 2-3"}
        assert steps["qubit 1"].reason == "sx:1, sy:1, x:1 (measured before pi_amplitude)"
        assert {c.name for c in steps["qubit 1"].changes} == {"sx:1 error", "sy:1 error",
                                                             "x:1 error"}
        final = backend.snapshot
        assert report.committed == [report.snapshot] and final == report.snapshot
        assert final.parent_id == start.snapshot_id
        for gate in ("sx:1", "x:1", "cz:3-4"):
            error = final.gates[gate]["error"]
            assert datetime.fromisoformat(error.timestamp) > later, gate
            assert error.experiment.startswith("rb"), gate
        assert 1e-4 < final.gates["sx:1"]["error"].value < 5e-3
        assert 0 < final.gates["cz:3-4"]["error"].value < 0.05
        for gate in ("sx:0", "x:2", "cz:0-1", "cz:2-3"):
            assert final.gates[gate]["error"] == start.gates[gate]["error"], gate
        assert outdated_subjects(final, {"gate_error": 24.0}, now) == {}
        assert sorted(load_record(p).kind for p in report.records) == ["rb_1q", "rb_2q"]
        assert all(p.with_suffix(".png").is_file() for p in report.records)

        again = run_graph(backend, ["rb"], rb_settings=QUICK, now=now)
        assert {o.status for o in again.outcomes} == {"fresh"} and again.committed == []
        assert backend.snapshot.snapshot_id == final.snapshot_id
        assert "nothing committed" in again.table()


@pytest.mark.slow
def test_a_benchmark_that_fails_costs_only_its_own_subject(tmp_path, monkeypatch,
                                                          edge_decays_do_not_fit):
    """The 2-qubit decay of edge 3-4 made not to fit: qubit 1's gate errors are still
    committed, edge 3-4 is reported failed with the reason and keeps its old cz error."""
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        start, now = _outdate_qubit_1_and_edge_3_4(backend)
        report = run_graph(backend, ["rb"], rb_settings=QUICK, now=now)
        steps = {o.subject: o for o in report.outcomes}
        assert steps["qubit 1"].status == "calibrated"
        assert steps["edge 3-4"].status == "failed"
        assert "made to fail by the test" in steps["edge 3-4"].reason
        assert not report.ok and len(report.committed) == 1
        final = backend.snapshot
        assert final.snapshot_id == report.snapshot.snapshot_id
        assert final.gates["sx:1"]["error"] != start.gates["sx:1"]["error"]
        assert final.gates["cz:3-4"]["error"] == start.gates["cz:3-4"]["error"]
        assert "failed (1):" in report.table()
        assert list(final.pairs[(3, 4)][CALIBRATION_FAILED].value) == ["rb"]  # recorded
        assert CALIBRATION_FAILED not in final.qubits[1]


def _rival_commits(monkeypatch, backend, qubit: int, name: str, value: float) -> list:
    """While the next benchmark measures, another writer (a watch, a colleague) sets ``name``
    of ``qubit``; returns the list its snapshot is appended to."""
    benchmark, committed = runner.benchmark_gates, []
    path = backend.config.store_path

    def with_a_rival(*args, **kwargs):
        out = benchmark(*args, **kwargs)
        with CalibrationStore(path) as store:  # a session of its own, as another process
            rival = SnapshotBuilder.from_snapshot(store.latest())
            rival.set_qubit(qubit, name, value, "another writer")
            rival.notes = "another writer"
            committed.append(store.commit(rival.build_document()))
        return out

    monkeypatch.setattr(runner, "benchmark_gates", with_a_rival)
    return committed


@pytest.mark.slow
def test_gate_errors_of_a_qubit_another_writer_changed_are_left_out_the_rest_committed(
        tmp_path, monkeypatch):
    """Another writer sets qubit 1's pi amplitude while the rb step benchmarks qubit 1 and edge
    3-4 (the review's case: a watch recalibrating a qubit during ``labqpu calibrate rb``):
    edge 3-4's cz error goes on top of that writer's snapshot; qubit 1's gate errors, measured
    with the old pulse, are left out and reported failed with the reason (they were all
    refused, edge 3-4's too)."""
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        start, now = _outdate_qubit_1_and_edge_3_4(backend)
        rival = _rival_commits(monkeypatch, backend, 1, "pi_amplitude", 0.31)
        report = run_graph(backend, ["rb"], rb_settings=QUICK, now=now)
        steps = {o.subject: o for o in report.outcomes}
        assert steps["edge 3-4"].status == "calibrated"
        assert steps["qubit 1"].status == "failed" and steps["qubit 1"].changes == []
        assert steps["qubit 1"].reason.endswith(
            f"measured, not committed: snapshot {rival[0].snapshot_id} changed qubit 1 "
            "pi_amplitude while this measured; run it again")
        assert report.left_out == {1: f"snapshot {rival[0].snapshot_id} changed qubit 1 "
                                      "pi_amplitude"}
        final = backend.store.latest()
        assert report.committed == [final] and final.parent_id == rival[0].snapshot_id
        assert final.gates["cz:3-4"]["error"] != start.gates["cz:3-4"]["error"]
        assert final.gates["sx:1"]["error"] == start.gates["sx:1"]["error"]
        assert final.qubit_value(1, "pi_amplitude") == 0.31
        assert "failed (1):" in report.table()


@pytest.mark.slow
def test_a_commit_lost_to_another_writer_is_reported_not_raised(tmp_path, monkeypatch):
    """Another writer sets a flux bias while the rb step benchmarks: every qubit moves, so the
    step's commit is refused (StaleSnapshotError), the step reports every subject failed with
    that reason, and run_graph still returns its report; the other writer's snapshot stays
    the newest."""
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        _, now = _outdate_qubit_1_and_edge_3_4(backend)
        flux = backend.snapshot.qubit_value(0, "flux_bias_a")
        _rival_commits(monkeypatch, backend, 0, "flux_bias_a", flux + 1e-6)
        report = run_graph(backend, ["rb"], rb_settings=QUICK, now=now)
        failed = {o.subject: o.reason for o in report.with_status("failed")}
        assert set(failed) == {"qubit 1", "edge 3-4"}
        assert all("StaleSnapshotError" in reason and "flux_bias_a" in reason
                   for reason in failed.values()), failed
        assert report.committed == [] and backend.store.latest().notes == "another writer"


def test_calibrate_rb_records_a_failed_benchmark_and_commits_the_rest(tmp_path, monkeypatch,
                                                                      capsys,
                                                                      edge_decays_do_not_fit):
    """``labqpu calibrate --rb`` (in this process, so that the test can make edge 3-4's
    decay not fit): qubits 3 and 4's gate errors are committed, edge 3-4 keeps its cz error
    and is recorded as failed under the node rb, stderr names it, and the exit code is 1.
    (Clearing a record once the step passes is the graph's, tested in test_failure_marks.)"""
    use_fresh_home(monkeypatch, tmp_path)
    argv = ["calibrate", "--rb", "--qubits", "3", "4", "--rb-lengths-1q", "1", "40", "120",
            "300", "--rb-lengths-2q", "1", "8", "24", "48", "--rb-seeds", "3"]
    with LabProvider() as provider:
        start = provider.backend().snapshot
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "randomized benchmarking of edge 3-4 failed: " in err
    assert "made to fail by the test" in err
    with LabProvider() as provider:
        after = provider.backend().snapshot
    assert after.parent_id == start.snapshot_id
    for gate in ("sx:3", "x:4"):
        assert after.gates[gate]["error"] != start.gates[gate]["error"]
    assert after.gates["cz:3-4"]["error"] == start.gates["cz:3-4"]["error"]
    assert list(after.pairs[(3, 4)][CALIBRATION_FAILED].value) == ["rb"]
    assert CALIBRATION_FAILED not in after.qubits[3]


def test_calibrate_rb_leaves_out_a_qubit_another_writer_changed(tmp_path, monkeypatch, capsys,
                                                               edge_decays_do_not_fit):
    """``labqpu calibrate --rb --qubits 3 4`` while another writer sets qubit 3's T1, edge
    3-4's decay made not to fit: qubit 4's gate errors are committed on top of that writer's
    snapshot; qubit 3's are not, nor is edge 3-4's failure record, and stderr says so for
    each; the exit code is 1."""
    use_fresh_home(monkeypatch, tmp_path)
    argv = ["calibrate", "--rb", "--qubits", "3", "4", "--rb-lengths-1q", "1", "40", "120",
            "300", "--rb-lengths-2q", "1", "8", "24", "48", "--rb-seeds", "3"]
    with LabProvider() as provider:
        backend = provider.backend()
        start = backend.snapshot
        rival = _rival_commits(monkeypatch, backend, 3, "t1_s", 33e-6)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    why = (f"not committed: snapshot {rival[0].snapshot_id} changed qubit 3 t1_s while this "
           "measured; run it again")
    assert f"randomized benchmarking of qubit 3 failed: measured, {why}" in err
    assert "randomized benchmarking of edge 3-4 failed: " in err
    assert f"made to fail by the test); the failure {why}" in err
    assert "qubit 4 failed" not in err
    with LabProvider() as provider:
        after = provider.backend().snapshot
    assert after.parent_id == rival[0].snapshot_id
    assert after.gates["x:4"]["error"] != start.gates["x:4"]["error"]
    for gate in ("sx:3", "cz:3-4"):
        assert after.gates[gate]["error"] == start.gates[gate]["error"], gate
    assert after.qubit_value(3, "t1_s") == 33e-6
    assert CALIBRATION_FAILED not in after.pairs[(3, 4)]


def test_rb_lengths_no_controller_plays_are_refused_before_the_graph_measures(
        tmp_path, monkeypatch):
    """A review's case: ``run_graph(..., rb=True)`` with such lengths walked the graph,
    committed it, then recorded the rb step of a healthy qubit as failed (a mark in the
    store). Now the settings are refused first: nothing measured, committed or written."""
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        before = backend.store.latest_id()
        with pytest.raises(CalibrationError, match=r"^lengths_1q: sequences of 100000 "
                                                   r"Cliffords: one on qubit 0 lasts about"):
            run_graph(backend, ["rabi"], qubits=[0], rb=True, force=True,
                      rb_settings=RBSettings(lengths_1q=(1, 50, 100_000)))
        assert backend.store.latest_id() == before
    assert not list(tmp_path.glob("lab5/experiments/*"))
