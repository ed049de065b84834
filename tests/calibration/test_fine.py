"""Error-amplifying fine amplitude: the pure fit on synthetic data with known answers, and the
calibration on the simulator against an error put in on purpose."""

from __future__ import annotations

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.calibration.fine import (
    counts_for,
    fine_amplitude,
    fit_amplification,
    measure,
    populations,
)
from labqpu.errors import FitError
from labqpu.testing import use_fresh_home, write_quiet_wiring

RNG = np.random.default_rng(11)


def _p1(counts: np.ndarray, eps: float, phi0: float, contrast: float = 1.0,
        noise: float = 0.01) -> np.ndarray:
    return 0.5 + 0.5 * contrast * np.sin(phi0 + counts * eps) + RNG.normal(0, noise,
                                                                           counts.size)


@pytest.mark.parametrize("eps", [0.0, 3e-3, -3e-3, 0.02, -0.05])
def test_fit_recovers_the_rotation_error_and_its_sign(eps: float) -> None:
    counts = counts_for("pi", 48)
    fit = fit_amplification(counts, _p1(counts, eps, 0.05), "test")
    assert abs(fit.eps_rad - eps) < max(4 * fit.eps_stderr_rad, 1e-3)
    assert fit.eps_stderr_rad < 1e-3


def test_a_large_error_is_not_aliased_to_a_small_one_in_the_short_round() -> None:
    counts = counts_for("pi", 12)
    fit = fit_amplification(counts, _p1(counts, 0.12, 0.0), "test")  # 4 % of pi
    assert fit.eps_rad == pytest.approx(0.12, abs=0.01)


def test_decay_scales_the_error_by_the_contrast_and_no_more() -> None:
    counts = counts_for("pi2", 48)
    fit = fit_amplification(counts, _p1(counts, 0.01, 0.0, contrast=0.94, noise=0.0), "t")
    assert 0.93 * 0.01 < fit.eps_rad < 1.01 * 0.01


def test_correction_makes_the_rotation_exact() -> None:
    counts = counts_for("pi", 48)
    fit = fit_amplification(counts, _p1(counts, 0.01 * np.pi, 0.0, noise=0.0), "test")
    assert fit.relative_error(np.pi) == pytest.approx(0.01, rel=1e-3)
    assert fit.corrected(0.5, np.pi) == pytest.approx(0.5 / 1.01, rel=1e-3)


def test_counts_put_the_qubit_on_the_equator() -> None:
    assert np.all(counts_for("pi", 48) % 2 == 0) and counts_for("pi", 48).max() == 48
    assert np.all(counts_for("pi2", 48) % 4 == 1) and counts_for("pi2", 48).max() <= 48


def test_populations_project_between_the_references() -> None:
    ground, excited = 1 + 2j, -0.5 + 1j
    p = np.array([0.0, 0.25, 1.0])
    iq = ground + p * (excited - ground) + 0.01j * (excited - ground) * np.array([1, -1, 1])
    assert populations(iq, ground, excited) == pytest.approx(p)


def test_noise_alone_is_refused() -> None:
    counts = counts_for("pi", 48)
    with pytest.raises(FitError, match="qubit 3 pi amplitude"):
        fit_amplification(counts, RNG.uniform(0, 1, counts.size), "qubit 3 pi amplitude")


def test_simulator_rotation_error_follows_the_amplitude(tmp_path, monkeypatch) -> None:
    """On the simulator, a pi pulse made 1 % too strong reads as an over-rotation of 0.75-1.1 %
    (against the same measurement at the calibrated amplitude), and fine_amplitude brings it
    back to within 0.2 % of where the calibrated one measures. The reading is below 1 % because
    the fit holds the contrast at 1 (``labqpu.calibration.fine``): what decoherence takes over
    the 2 us sequence scales eps down. Measured on this private quiet rack, 2026-12-02: 0.866,
    0.904, 0.906, 0.909, 0.926, 0.961 % in six runs, and 0.839 % in one CI run, which the
    earlier bound of 1 +- 0.15 % failed (so did 0.82 and 0.83 % on shared racks before); a
    review's 44 runs: 0.914 % mean, 0.032 % sd (the fits' own standard error 0.033 %), so
    the floor of 0.8 % was 3.6 sd down and is now 0.75 % (5.2 sd). On a
    simulator without drift and a store of its own: on the shared drifting one, qubit 2's
    detuning depends on how much simulated time the tests before it on the same worker used;
    the shared quiet one's store is committed to by other tests."""
    use_fresh_home(monkeypatch, tmp_path / "home")
    with LabProvider(write_quiet_wiring(tmp_path), simulator=True) as provider:
        _rotation_error_follows_the_amplitude(provider.backend())


def _rotation_error_follows_the_amplitude(lab_backend) -> None:
    from labqpu.calibration.design import default_design_path, load_design
    from labqpu.calibration.experiments import Kit
    from labqpu.calibration.runner import working_from_snapshot

    work = working_from_snapshot(lab_backend.snapshot,
                                 load_design(default_design_path(lab_backend.name)))
    kit = Kit(lab_backend, work)
    q = 2
    base, _, _ = measure(kit, q, "pi", 2000, 48)
    pi = work.qubits[q]["pi_amplitude"]
    work.qubits[q]["pi_amplitude"] = pi * 1.01
    off, _, _ = measure(kit, q, "pi", 2000, 48)
    shift = off.relative_error(np.pi) - base.relative_error(np.pi)
    assert 0.0075 <= shift <= 0.011, (base, off)
    fine_amplitude(kit, q, 2000)
    exact = base.corrected(pi, np.pi)
    assert abs(work.qubits[q]["pi_amplitude"] / exact - 1) < 0.002
