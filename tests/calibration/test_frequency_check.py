"""The Ramsey check cannot be fooled by a frequency error that aliases its fringe.

One fringe at a detuning d runs at |s + d| for a frequency error s (in the drive's sense), so
an error of s = -2d gives back exactly d: a check on one fringe passes a qubit that is 3 MHz off.
The check reads the fringes at +d and at -d; only a right frequency gives d in both. And one
sampling grid folds an error of a multiple of its rate (10 MHz for 100 ns) onto none: the -d
fringe is sampled on a second grid (64 ns).
"""

from __future__ import annotations

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.experiments import Kit
from labqpu.calibration.records import load_record
from labqpu.store import SnapshotBuilder
from labqpu.testing import use_fresh_home

#: The check's detuning (``checks.check_frequency``), Hz.
DETUNING_HZ = 1.5e6


@pytest.mark.slow
def test_a_frequency_error_that_aliases_one_fringe_is_found(tmp_path, monkeypatch):
    """Qubit 1's frequency set off by 2 d in the direction that folds the +d fringe back onto
    d: the ramsey check fails, the node recalibrates, and the frequency returns to within
    50 kHz of the shipped one."""
    use_fresh_home(monkeypatch, tmp_path)
    q = 1
    with LabProvider() as provider:
        backend = provider.backend()
        shipped = backend.snapshot
        params = shipped.qubits[q]
        # s = h (f_true - f_set) = -2 d  <=>  f_set = f_true + 2 h d
        wrong = params["frequency_hz"].value + 2 * params["drive_handedness"].value * DETUNING_HZ
        builder = SnapshotBuilder.from_snapshot(shipped)
        builder.set_qubit(q, "frequency_hz", wrong, "test", params["frequency_hz"].timestamp)
        backend.store.commit(builder.build_document())

        report = run_graph(backend, ["ramsey"], qubits=[q])

        (ramsey,) = [o for o in report.outcomes if o.node == "ramsey"]
        assert ramsey.status == "calibrated" and "check failed" in ramsey.reason, ramsey.reason
        f = backend.snapshot.qubits[q]["frequency_hz"].value
        assert abs(f - params["frequency_hz"].value) < 50e3, (f, params["frequency_hz"].value)


@pytest.mark.slow
@pytest.mark.parametrize("error_hz", [10e6, -10e6])
def test_an_error_of_a_multiple_of_the_fringes_sampling_rate_is_found(tmp_path, monkeypatch,
                                                                       error_hz):
    """A review's case: qubit 3's frequency 10 MHz off. Fringes sampled every 100 ns fold an
    error of any multiple of 10 MHz onto none: the check passed, and a forced ramsey
    "recalibrated" to the same wrong value, while Bell pairs on the qubit fell to 0.56. Now
    the check (its -d fringe on a 64 ns grid) fails, the calibration fails naming the
    spectroscopy that finds the frequency, and that node, forced, puts it right."""
    use_fresh_home(monkeypatch, tmp_path)
    q = 3
    with LabProvider() as provider:
        backend = provider.backend()
        right = backend.snapshot.qubits[q]["frequency_hz"]
        builder = SnapshotBuilder.from_snapshot(backend.snapshot)
        builder.set_qubit(q, "frequency_hz", right.value + error_hz, "test", right.timestamp)
        backend.store.commit(builder.build_document())

        report = run_graph(backend, ["ramsey"], qubits=[q], rb=False)
        (ramsey,) = [o for o in report.outcomes if o.node == "ramsey"]
        assert ramsey.status == "failed", ramsey
        assert ramsey.reason.startswith("check failed: measured "), ramsey.reason
        assert "the sweet_spot node finds its frequency by spectroscopy: run it forced " \
            f"(labqpu calibrate sweet_spot --qubits {q} --force, not within a watch" \
            in ramsey.reason
        assert backend.snapshot.qubits[q]["frequency_hz"].value == right.value + error_hz
        # the failed calibration leaves its record and plot, marked rejected (a review's
        # case: nothing of the fringes that failed was kept)
        (path,) = [p for p in report.records if p.name.startswith(f"ramsey-q{q}-")]
        record = load_record(path)
        assert "not at the set" in record.settings["rejected"]
        assert len(record.raw["series"]) == 4 and path.with_suffix(".png").exists()

        report = run_graph(backend, ["sweet_spot", "ramsey"], qubits=[q], force=True, rb=False)
        assert report.ok, report.table()
        f = backend.snapshot.qubits[q]["frequency_hz"].value
        assert abs(f - right.value) < 50e3, (f, right.value)


@pytest.mark.parametrize(("grid", "first_ns", "second_ns"), [
    (1, 100, 64), (16, 96, 64), (48, 96, 48), (100, 100, 200), (128, 128, 256)])
def test_the_two_ramsey_grids_are_even_and_apart_on_any_timing_grid(grid, first_ns,
                                                                    second_ns) -> None:
    """A review's case: each delay of a linspace rounded onto a coarse timing grid spaced the
    fringe's samples unevenly (the analysis assumes one step), and on a grid of 100 or 128
    samples the 64 ns grid became the 100/128 ns one, losing what it is there for."""
    from types import SimpleNamespace

    from labqpu.calibration.bootstrap import ramsey_grids

    kit = SimpleNamespace(timing=SimpleNamespace(grid=grid), fs=1e9)
    kit.uniform_delays = lambda *a, **k: Kit.uniform_delays(kit, *a, **k)
    first, second = ramsey_grids(kit, 41, 63)
    assert len(first) == 41 and len(second) == 63
    for delays, step_ns in ((first, first_ns), (second, second_ns)):
        assert np.allclose(np.diff(delays), step_ns * 1e-9), np.diff(delays)[:3]
