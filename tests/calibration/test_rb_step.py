"""The graph's rb step: randomized benchmarking of what a recalibration left out of date, on the
simulator, through the store."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from labqpu import LabProvider
from labqpu.calibration.rb import RBSettings, outdated_subjects
from labqpu.calibration.records import load_record
from labqpu.calibration.runner import run_graph
from labqpu.store import SnapshotBuilder

#: Shorter sequences than the defaults: the step's logic, not the figures, is under test.
QUICK = RBSettings(lengths_1q=(1, 40, 120, 300), lengths_2q=(1, 8, 24, 48), seeds=3, shots=200)


@pytest.mark.slow
def test_the_rb_step_benchmarks_only_what_a_recalibration_outdated(tmp_path, monkeypatch):
    """Qubit 1's pi amplitude and edge 3-4's cz amplitude measured again after the shipped
    gate errors: ``run_graph(["rb"])`` benchmarks qubit 1 and edge 3-4 and nothing else,
    commits their errors (newer than the pulses, so nothing is out of date afterwards) and
    leaves every other gate error as it was; run again, everything is fresh and nothing is
    committed."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        shipped = backend.snapshot
        # ages are judged an hour after the shipped gate errors, whatever day the test runs
        measured = max(datetime.fromisoformat(g["error"].timestamp)
                       for g in shipped.gates.values() if "error" in g)
        now, later = measured + timedelta(hours=1), (measured + timedelta(minutes=30))
        builder = SnapshotBuilder.from_snapshot(shipped)
        builder.set_qubit(1, "pi_amplitude", shipped.qubits[1]["pi_amplitude"].value,
                          "fine_amplitude-test", timestamp=later.isoformat())
        builder.set_pair((3, 4), "cz_amplitude", shipped.pairs[(3, 4)]["cz_amplitude"].value,
                         "cz-test", timestamp=later.isoformat())
        start = backend.store.commit(builder.build_document())

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
