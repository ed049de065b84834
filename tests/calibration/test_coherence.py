"""Hahn echo and static ZZ nodes on the simulator, against the device file.

* ZZ of each edge within 3 standard errors + 5 kHz of zeta = E11 - E10 - E01 + E00 from the
  exact diagonalisation of the device file's five coupled transmons at the snapshot's biases
  (``conftest.dressed_levels``). The 5 kHz cover the difference between the fringe frequency
  and the level splitting: the control's drive crosstalk and second-order terms of the
  Ramsey analysis.
* The Ramsey T2* within 3 standard errors of its fit + 3 % of what the same exponential fit
  gives on the analytic envelope of the device file's noise (Markovian T2 and quasi-static
  sigma) over the same window; qiskit-experiments' T2Ramsey reads 20.0-20.7 us on qubit 1,
  this 19.3. Measured over 25 runs (qubits 1-3, expected 20.0 / 17.3 / 21.1 us): means
  19.8 / 17.1 / 21.0 us (the 3 % cover that 1 % bias), spread 0.7 / 0.6 / 0.6 us, the fits'
  standard errors 0.8-1.3 us. A flat 12 % (2.4 us on qubit 1) failed one CI run at 22.6 us.
* The echo T2 within 20 % of the device file's T2 (the sweet-spot T2 the simulator's
  Markovian dephasing is built from; a Hahn echo refocuses its quasi-static noise), and no
  longer than 2 T1 (+10 %). Measured 2-8 % short on average with a standard error of 1-2 us
  (six repeats per qubit; at the old span of 4 x T2* the error was twice that and one CI run
  fell 22 % short). T1 drifts (lab5: 0.1 per sqrt(h) in ln T1, up to 17 %) and T2 follows
  half of it; thermal population and the qubits' small offsets from their sweet spots
  (first-order flux noise) shorten it further.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.records import load_record
from labqpu.testing import use_fresh_home

pytestmark = pytest.mark.slow


def fitted_decay(t2_s: float, sigma_hz: float, window_s: float) -> float:
    """The decay time (s) an exponential A exp(-t / tau) fitted over ``window_s`` (61 points)
    gives for the analytic Ramsey envelope exp(-t / T2 - (2 pi sigma t)^2 / 2): Markovian
    dephasing at the device's T2 times the Gaussian decay of quasi-static noise sigma."""
    t = np.linspace(0, window_s, 61)
    envelope = np.exp(-t / t2_s - (2 * np.pi * sigma_hz * t) ** 2 / 2)
    (tau, _), _ = curve_fit(lambda t, tau, a: a * np.exp(-t / tau), t, envelope,
                            p0=[t2_s / 2, 1.0])
    return float(tau)


def test_static_zz_matches_exact_diagonalisation_and_echo_beats_ramsey(
        tmp_path, monkeypatch, truth, exact_levels):
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        report = run_graph(backend, ["ramsey", "zz", "echo"], qubits=[1, 2, 3], force=True)
        assert report.ok, report.table()
        snap = report.snapshot
        flux = {q: snap.qubits[q]["flux_bias_a"].value for q in range(5)}
        level = exact_levels(truth, flux)
        records = {path.stem: path for path in report.records}
        for a, b in ((1, 2), (2, 3)):
            def e(state, a=a, b=b):
                return level(tuple(state[(a, b).index(k)] if k in (a, b) else 0
                                   for k in range(5)))
            zeta = e((1, 1)) - e((1, 0)) - e((0, 1)) + e((0, 0))
            measured = snap.pairs[(a, b)]["zz_hz"]
            rec = load_record(records[measured.experiment])
            value, stderr = rec.values["zz_hz"]
            assert value == pytest.approx(measured.value)
            print(f"edge {a}-{b}: ZZ {value / 1e3:.1f} +- {stderr / 1e3:.1f} kHz, "
                  f"exact {zeta / 1e3:.1f} kHz")
            assert abs(value - zeta) < 3 * stderr + 5e3, (a, b, value, stderr, zeta)
        sigma = truth["noise"]["frequency_noise_hz"]
        for q in (1, 2, 3):
            rec = load_record(records[snap.qubits[q]["t2_s"].experiment])
            t2_star, stderr = rec.values["t2_s"]
            assert t2_star == pytest.approx(snap.qubits[q]["t2_s"].value)
            expected = fitted_decay(truth["qubit"][q]["t2_s"], sigma, rec.settings["window_s"])
            print(f"qubit {q}: T2* {t2_star * 1e6:.1f} +- {stderr * 1e6:.1f} us, "
                  f"expected {expected * 1e6:.1f} us")
            assert abs(t2_star - expected) < 3 * stderr + 0.03 * expected, (q, t2_star, stderr,
                                                                             expected)
        device = {q["index"]: q for q in truth["qubit"]}
        for q in (1, 2, 3):
            t2e = snap.qubits[q]["t2_echo_s"].value
            t2, t1 = device[q]["t2_s"], device[q]["t1_s"]
            print(f"qubit {q}: T2 echo {t2e * 1e6:.1f} us, device T2 {t2 * 1e6:.1f} us, "
                  f"T1 {t1 * 1e6:.1f} us")
            assert abs(t2e / t2 - 1) < 0.2 and t2e < 2 * t1 * 1.1, (q, t2e, t2, t1)
