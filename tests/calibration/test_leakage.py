"""The cz_leakage node measures what one CZ moves out of |11>, against exact propagation.

The reference is written here from the device file alone: the chain of transmons around the
edge (the edge and its neighbours, 3 levels each, exchange coupling g), at the DC flux the
snapshot's bias currents give (with the device file's DC crosstalk), with the calibrated flux
pulse (flat top, the snapshot's amplitude, duration and rise, zero-padded onto the timing grid
as it is played) propagated sample by sample with ``scipy.linalg.expm``. The leaked population
after n CZs is 1 - P(partner in |1>), starting from the dressed |11> with the spectators in
|0> (thermal spectators move it by < 1e-4 on lab5). Relaxation, noise and readout are in the
measurement, not in the reference: the node's waits-for-CZs subtraction and readout
correction must remove them.

The same propagation gives each shipped CZ's conditional phase, which must be pi within 3 deg
once the static ZZ its Ramsey's analysis pulses add is counted (what the calibration aims at,
see ``conftest.cz_reference`` and ``conftest.analysis_zz_time_s``).

Tolerances: one CZ within 3 standard errors (the node's own, binomial) plus 0.001 (what the
reference leaves out); the whole curve, n = 0 ... 8, within 4 of the point's standard errors
plus 0.003 (coherent leakage after several CZs is more sensitive to what the reference leaves
out).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.leakage import leakage_per_cz
from labqpu.firmware_sim.device import load_device
from labqpu.testing import use_fresh_home

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_leakage_is_the_difference_after_one_cz_with_its_binomial_error() -> None:
    rng = np.random.default_rng(7)
    shots, read_0, contrast = 40000, 0.02, 0.96
    truth = np.array([0.0, 0.012, 0.0, 0.012, 0.0, 0.012, 0.0, 0.012, 0.0])
    estimates, errors = [], []
    for _ in range(400):
        def measured(p: np.ndarray) -> np.ndarray:
            raw = rng.binomial(shots, read_0 + p * contrast) / shots
            return (raw - read_0) / contrast
        value, stderr, leaked = leakage_per_cz(measured(0.99 - truth), measured(np.full(9, 0.99)),
                                               shots, read_0, contrast)
        estimates.append(value)
        errors.append(stderr)
        assert leaked.shape == (9,) and leaked[1] == value
    assert np.mean(estimates) == pytest.approx(0.012, abs=3 * np.std(estimates) / 20)
    assert np.mean(errors) == pytest.approx(np.std(estimates), rel=0.15)


@pytest.mark.slow
def test_cz_leakage_matches_exact_propagation(tmp_path, monkeypatch, exact_cz) -> None:
    use_fresh_home(monkeypatch, tmp_path)
    device = load_device("lab5")
    with LabProvider() as provider:
        backend = provider.backend()
        backend.set_options(seed_simulator=11)
        report = run_graph(backend, ["cz_leakage"], force=True)
        assert report.ok, report.table()
        grid = backend.channels.timing.grid
    snapshot = report.snapshot
    records = [json.loads(path.read_text()) for path in report.records
               if path.name.startswith("cz_leakage-") and path.suffix == ".json"]
    assert len(records) == len(EDGES)
    for record in records:
        pair = tuple(int(q) for q in record["subject"].removeprefix("edge (")
                     .removesuffix(")").split(", "))
        value, stderr = record["values"]["cz_leakage"]
        reference, own, in_context = exact_cz(device, snapshot, pair, grid)
        print(f"edge {pair}: cz_leakage {value:.4f} +- {stderr:.4f}, exact {reference[1]:.4f}; "
              f"conditional phase {np.degrees(in_context):.2f} deg "
              f"(the pulse alone {np.degrees(own):.2f})")
        assert snapshot.pairs[pair]["cz_leakage"].value == value
        assert abs(value - reference[1]) <= 3 * stderr + 1e-3, (pair, value, stderr, reference)
        leaked = np.asarray(record["raw"]["series"]["leaked"])
        assert np.all(np.abs(leaked - reference) <= 4 * stderr + 3e-3), (pair, leaked, reference)
        # The shipped CZs were calibrated for low leakage and a conditional phase of pi (issue
        # "Calibration": < 1 % per CZ, within 3 deg), counting the static ZZ of the analysis
        # pulses that the calibration folds into the CZ (docs/calibration.md, item 10).
        assert reference[1] < 0.01 and value < 0.01, (pair, value, reference)
        assert abs(np.degrees(in_context) - 180.0) < 3.0, (pair, np.degrees(in_context))
