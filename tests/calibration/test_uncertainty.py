"""A fit whose uncertainty is too large is a failed calibration: reported, recorded, and the
store unchanged."""

from __future__ import annotations

import math

import pytest

from labqpu import LabProvider
from labqpu.calibration import records, run_graph
from labqpu.calibration.records import load_record, uncertainty_problem
from labqpu.store import CALIBRATION_FAILED
from labqpu.testing import use_fresh_home


def test_uncertainty_limits_are_absolute_or_relative_and_per_kind() -> None:
    """A Ramsey frequency is bounded at 20 kHz, a spectroscopy frequency at 1 MHz; T1 at 30 %
    of itself; a drag beta near 0 by its absolute bound; values without a standard error or
    without a limit pass; NaN never does."""
    assert uncertainty_problem("ramsey", {"frequency_hz": (5.1e9, 1.4e3)}) is None
    problem = uncertainty_problem("ramsey", {"frequency_hz": (5.1e9, 25e3)})
    assert problem is not None and "frequency_hz" in problem and "2e+04" in problem
    assert uncertainty_problem("qubit_spectroscopy", {"frequency_hz": (5.1e9, 25e3)}) is None
    assert uncertainty_problem("t1", {"t1_s": (50e-6, 14e-6)}) is None
    assert "t1_s" in uncertainty_problem("t1", {"t1_s": (50e-6, 16e-6)})
    assert uncertainty_problem("drag", {"drag_beta": (0.01, 0.3)}) is None
    assert uncertainty_problem("drag", {"drag_beta": (0.01, 0.6)}) is not None
    assert uncertainty_problem("t1", {"t1_s": (50e-6, None)}) is None
    assert uncertainty_problem("anything", {"p1_given_0": (0.01, 0.5)}) is None
    assert uncertainty_problem("t1", {"t1_s": (50e-6, math.nan)}) is not None


@pytest.mark.slow
def test_a_too_uncertain_fit_fails_its_step_and_changes_nothing(tmp_path, monkeypatch):
    """With T1's limit made impossibly tight, ``run_graph(["t1"])`` on qubit 0 reports t1 as
    failed, naming the standard error; no value is committed (the one snapshot committed
    records the failure on qubit 0 and holds every value as before); the measurement is kept
    as a record with its plot, marked rejected."""
    use_fresh_home(monkeypatch, tmp_path)
    monkeypatch.setitem(records.UNCERTAINTY_LIMITS, "t1_s", (0.0, 1e-6))
    with LabProvider() as provider:
        backend = provider.backend()
        start = backend.snapshot
        report = run_graph(backend, ["t1"], qubits=[0], force=True)
        (t1,) = [o for o in report.outcomes if o.node == "t1"]
        assert t1.status == "failed" and "standard error" in t1.reason, t1.reason
        assert not report.ok and report.committed == [backend.snapshot]
        final = backend.snapshot
        assert final.parent_id == start.snapshot_id
        assert list(final.qubits[0][CALIBRATION_FAILED].value) == ["t1"]
        assert "standard error" in final.qubits[0][CALIBRATION_FAILED].value["t1"]
        assert {k: p for k, p in final.qubits[0].items() if k != CALIBRATION_FAILED} \
            == dict(start.qubits[0])
        assert all(final.qubits[q] == start.qubits[q] for q in range(1, 5))
        assert final.pairs == start.pairs and final.gates == start.gates
        (path,) = [p for p in report.records if load_record(p).kind == "t1"]
        record = load_record(path)
        assert "t1_s" in record.settings["rejected"]
        assert path.with_suffix(".png").is_file()
