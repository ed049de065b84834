"""A drifted CZ is refined, not scanned again: its pulse kept, the amplitude of a conditional
phase of pi found again near the old one and the phase corrections measured again. A CZ too
far off for that gets the whole scan. Either way the node's own check passes afterwards."""

from __future__ import annotations

import re

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.records import load_record
from labqpu.calibration.refits import refit
from labqpu.firmware_sim.device import load_device
from labqpu.store import SnapshotBuilder
from labqpu.testing import use_fresh_home

pytestmark = pytest.mark.slow

EDGE = (1, 2)


def commit_off(backend, amplitude_off: float, phase_off: float):
    """A snapshot whose CZ on EDGE has its amplitude and both phase corrections off."""
    shipped = backend.snapshot
    builder = SnapshotBuilder.from_snapshot(shipped)
    params = shipped.pairs[EDGE]
    for name, off in (("cz_amplitude", amplitude_off), ("cz_phase_a_rad", phase_off),
                      ("cz_phase_b_rad", -phase_off)):
        builder.set_pair(EDGE, name, params[name].value + off, "test", params[name].timestamp)
    return backend.store.commit(builder.build_document())


def cz_record(report):
    (path,) = [p for p in report.records if load_record(p).kind == "cz"]
    return load_record(path)


def assert_refits(record) -> None:
    """The record's refit gives its amplitude and, from the data it keeps since 2026-12-08,
    its phase corrections (before, those were "not there yet")."""
    again = refit(record)
    assert set(again) == {"cz_amplitude", "cz_phase_a_rad", "cz_phase_b_rad"}
    for name, value in again.items():
        assert value == pytest.approx(record.values[name][0], abs=1e-12), name


def test_a_drifted_cz_is_refined_and_a_lost_one_scanned(tmp_path, monkeypatch, exact_cz) -> None:
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        shipped = backend.snapshot.pairs[EDGE]
        commit_off(backend, 0.0015, 0.3)
        report = run_graph(backend, ["cz"], qubits=list(EDGE))
        assert report.ok, report.table()
        (step,) = [o for o in report.outcomes if o.node == "cz"]
        assert step.status == "calibrated" and "check failed" in step.reason, step
        # which of the three phases is furthest off (a review's case: the number alone did
        # not match the plot's conditional phase)
        assert re.search(r"check failed: largest deviation, (conditional phase - pi|qubit "
                         r"[12]'s corrected phase): [0-9.]+ rad", step.reason), step.reason
        record = cz_record(report)
        assert "refined_from" in record.raw["scan"]
        assert_refits(record)
        refined = report.snapshot.pairs[EDGE]
        assert refined["cz_duration_s"].value == shipped["cz_duration_s"].value
        assert abs(refined["cz_amplitude"].value - shipped["cz_amplitude"].value) < 5e-4
        # The refined pulse is at pi (with the ZZ of the analysis pulses, as calibrated) by
        # exact propagation: repeated refinements spread by 0.1-0.6 deg (docs/calibration.md).
        _, _, conditional = exact_cz(load_device("lab5"), report.snapshot, EDGE,
                                     backend.channels.timing.grid)
        assert abs(np.degrees(conditional) - 180.0) < 3.0, np.degrees(conditional)
        # Back from the 0.3 rad offsets towards the shipped corrections, not onto them: the
        # refined amplitude differs a little (up to 5e-4 here), the flux qubit's own phase moves
        # with it, and the shipped values were measured at another point of the device's
        # drift; two runs found 0.12-0.13 rad on the flux qubit. The check below is the judge:
        # it measures the corrected phases now, against a tolerance of 0.1 rad.
        for name in ("cz_phase_a_rad", "cz_phase_b_rad"):
            assert abs(refined[name].value - shipped[name].value) < 0.2, name
        again = run_graph(backend, ["cz"], qubits=list(EDGE))
        assert [o.status for o in again.outcomes if o.node == "cz"] == ["fresh"]

        commit_off(backend, 0.02, 0.0)  # far from any crossing of pi
        report = run_graph(backend, ["cz"], qubits=list(EDGE))
        assert report.ok, report.table()
        record = cz_record(report)
        assert "crossings" in record.raw["scan"] and "refined_from" not in record.raw["scan"]
        assert_refits(record)
        again = run_graph(backend, ["cz"], qubits=list(EDGE))
        assert [o.status for o in again.outcomes if o.node == "cz"] == ["fresh"]


def test_a_rack_at_2_gs_per_s_scans_the_same_nanoseconds(lab5_at_rate) -> None:
    """A review's case: the CZ scan's durations and rise were counted in samples, so a rack at
    2 GS/s (which docs/wiring.md allows) scanned 14-23 ns pulses, too short for a full
    |11> <-> |20> cycle, and its bootstrap committed CZs leaking 25-53 % without a word. On
    lab5 at 2 GS/s the scanned CZ of edge 3-4 lies in 28-46 ns, with a 5 ns rise, and leaks
    under 2 % (the shipped one at 1 GS/s: 0-1 %)."""
    with LabProvider(lab5_at_rate(2.0e9), simulator=True) as provider:
        backend = provider.backend()
        assert backend.dt == 0.5e-9
        report = run_graph(backend, ["cz", "cz_leakage"], qubits=[3, 4], force=True, rb=False)
        assert report.ok, report.table()
        cz = report.snapshot.pairs[(3, 4)]
    assert 28e-9 <= cz["cz_duration_s"].value <= 46e-9, cz["cz_duration_s"]
    assert cz["cz_rise_s"].value == 5e-9
    assert cz["cz_leakage"].value < 0.02, cz["cz_leakage"]
