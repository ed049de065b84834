"""The cz_leakage node measures what one CZ moves out of |11>, against exact propagation.

The reference is written here from the device file alone: the chain of transmons around the
edge (the edge and the qubits within two couplings of it, 3 levels each, exchange coupling
g), at the DC flux the snapshot's bias currents give (with the device file's DC crosstalk),
with the calibrated flux pulse (flat top, the snapshot's amplitude, duration and rise,
zero-padded onto the timing grid as it is played) propagated sample by sample with
``scipy.linalg.expm``. The leaked population after n CZs is 1 - P(both qubits of the edge in
|1>), starting from the dressed |11> with the spectators in |0> (thermal spectators move it
by < 1e-4 on lab5). Relaxation, noise and readout are in the measurement, not in the
reference: the node's waits-for-CZs subtraction and readout correction must remove them.

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
from labqpu.calibration.bootstrap import CZ_FINALISTS, _eligible
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



#: Lab5's edge 3-4 as its CZ scan sees it: (duration in ns, partner contrast, leakage of one CZ)
#: of each crossing of pi, the means of three scans on 2026-12-07 (the 33 ns crossing's
#: leakage by exact propagation).
EDGE_34_CROSSINGS = [(33, 0.99, 0.0003), (32, 0.96, 0.016), (34, 0.975, 0.013),
                     (35, 0.955, 0.05), (31, 0.95, 0.06), (36, 0.905, 0.12), (30, 0.92, 0.13),
                     (37, 0.856, 0.2), (28, 0.815, 0.33), (38, 0.80, 0.31), (46, 0.81, 0.42),
                     (46, 0.70, 0.39), (40, 0.69, 0.55), (42, 0.53, 0.74), (44, 0.45, 0.77),
                     (44, 0.49, 0.70), (44, 0.18, 0.99)]


def test_the_least_leaking_crossing_survives_the_scans_noise_into_the_finalists() -> None:
    """The CZ scan's contrasts (standard error ~0.03 each) and leakage screen (~0.007) are
    noisy; the crossing that leaks least must still be among the finalists that are measured
    again, or the calibration commits a CZ that leaks 1-2 % (as one run in five did when the
    screen kept crossings within 0.05 of the best contrast: about one scan in ten lost it)."""
    rng = np.random.default_rng(11)
    lost = 0
    for _ in range(2000):
        crossings = [(c + rng.normal(0, 0.03), d, 0.377) for d, c, _ in EDGE_34_CROSSINGS]
        screen = [leak + rng.normal(0, 0.007) for *_, leak in EDGE_34_CROSSINGS]
        finalists = [d for _, d, _ in _eligible(crossings, screen)[:CZ_FINALISTS]]
        lost += 33 not in finalists
    assert lost <= 4, lost

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
        # pulses that the calibration folds into the CZ (docs/calibration.md, item 10). Edge
        # 1-2 loses 0.8-0.9 % (most of it qubit 2's excitation moving to qubit 3), so its
        # measured value is below 1 % only within its error.
        assert reference[1] < 0.01 and value < 0.01 + 3 * stderr, (pair, value, reference)
        assert abs(np.degrees(in_context) - 180.0) < 3.0, (pair, np.degrees(in_context))
