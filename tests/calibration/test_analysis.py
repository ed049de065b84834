"""The pure analyses of the calibration experiments, on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from labqpu.calibration.experiments import (
    complex_median,
    fit_damped_cosine,
    fit_damped_cosine_curve,
    fit_exponential,
    fit_exponential_curve,
    fit_parabola_vertex,
    fit_peak,
    fit_rabi,
    fit_rabi_curve,
    handedness_from_fringes,
    phase_from_quadratures,
    project,
)
from labqpu.errors import FitError

RNG = np.random.default_rng(7)


def test_fit_peak_finds_a_lorentzian_centre() -> None:
    f = np.linspace(7.034e9, 7.046e9, 61)
    signal = 0.05 + 0.25 / (1 + ((f - 7.04212e9) / 1.05e6) ** 2) + RNG.normal(0, 0.003, f.size)
    centre, width = fit_peak(f, signal, "test")
    assert abs(centre - 7.04212e9) < 30e3
    assert abs(width - 1.05e6) < 0.1e6


def test_fit_peak_refuses_pure_noise() -> None:
    f = np.linspace(5.0e9, 5.1e9, 101)
    with pytest.raises(FitError, match="no peak above the noise"):
        fit_peak(f, RNG.normal(0, 1, f.size), "qubit 3 spectroscopy")


def test_fit_peak_refuses_two_peaks_fitted_as_one() -> None:
    """Two lines 2.2 MHz apart (the resonator moved during the sweep) fitted as one Lorentzian
    gave a centre between them, which was committed; it is a FitError naming the fit."""
    f = np.linspace(7.036e9, 7.048e9, 61)
    signal = 0.05 + sum(0.25 / (1 + ((f - c) / 0.5e6) ** 2) for c in (7.0411e9, 7.0433e9))
    with pytest.raises(FitError, match=r"qubit 0 resonator spectroscopy: the peak between "
                                       r"7.036e\+09 and 7.048e\+09 Hz is not one Lorentzian "
                                       r"\(R² 0\.\d\d < 0.8\)"):
        fit_peak(f, signal + np.random.default_rng(3).normal(0, 0.003, f.size),
                 "qubit 0 resonator spectroscopy")


def test_fit_rabi_returns_half_the_period() -> None:
    amps = np.linspace(0, 0.9, 46)
    signal = 0.4 * np.cos(np.pi * amps / 0.447) + 0.1 + RNG.normal(0, 0.01, amps.size)
    assert abs(fit_rabi(amps, signal, "test") - 0.447) < 0.005


@pytest.mark.parametrize(("top", "pi_amp", "words"), [(0.9, 1.6, "full scale"),
                                                      (0.3, 0.8, "beyond the sweep")])
def test_fit_rabi_refuses_what_the_sweep_cannot_support(top, pi_amp, words) -> None:
    amps = np.linspace(0, top, 31)
    with pytest.raises(FitError, match=words):
        fit_rabi(amps, np.cos(np.pi * amps / pi_amp), "test")


def test_fit_damped_cosine_frequency_and_decay() -> None:
    t = np.linspace(0, 6e-6, 61)
    y = 0.5 + 0.4 * np.exp(-t / 30e-6) * np.cos(2 * np.pi * 1.3e6 * t + 0.3)
    f, tau = fit_damped_cosine(t, y + RNG.normal(0, 0.005, t.size), "test")
    assert abs(f - 1.3e6) < 5e3
    assert 20e-6 < tau < 45e-6


def test_fit_exponential_t1() -> None:
    t = np.linspace(0, 200e-6, 21)
    y = 0.97 * np.exp(-t / 42e-6) + 0.01 + RNG.normal(0, 0.005, t.size)
    assert abs(fit_exponential(t, y, "test") - 42e-6) < 2e-6


def test_fit_exponential_of_a_fast_decay_does_not_collapse_to_its_first_point() -> None:
    """The P(1) of a T1 run on the drifting watch-test device (qubit 2, T1 ~26 us sampled to
    200 us): started at tau = 67 us the fit fell to tau = 0.37 us with an infinite error."""
    t = np.arange(21) * 1e-5  # the run's delays, as the record holds them
    y = np.array([1.0, 0.7098039215686275, 0.4823529411764706, 0.28888888888888886,
                  0.22352941176470587, 0.13202614379084968, 0.1503267973856209,
                  0.08758169934640521, 0.04575163398692811, 0.04836601307189542,
                  0.032679738562091505, 0.011764705882352943, 0.006535947712418301,
                  0.006535947712418301, 0.019607843137254905, 0.006535947712418301,
                  0.0013071895424836594, 0.00915032679738562, 0.0013071895424836594, 0.0,
                  0.01437908496732026])
    fit = fit_exponential_curve(t, y, "test")
    assert 24e-6 < fit.params["tau"] < 29e-6
    assert fit.stderr["tau"] < 2e-6


def test_fit_parabola_vertex_and_no_maximum() -> None:
    x = np.linspace(-0.25e-3, 0.25e-3, 5)
    y = 5.8213e9 - 4e14 * (x - 0.21e-3) ** 2
    xv, yv = fit_parabola_vertex(x, y, "test")
    assert abs(xv - 0.21e-3) < 1e-9
    assert abs(yv - 5.8213e9) < 1.0
    with pytest.raises(FitError, match="no maximum"):
        fit_parabola_vertex(x, -y, "test")


@pytest.mark.parametrize("theta", [0.0, 0.7, np.pi / 2, 3.0, -2.0])
def test_phase_from_quadratures(theta: float) -> None:
    phase, contrast = phase_from_quadratures((1 + np.cos(theta)) / 2, (1 + np.sin(theta)) / 2)
    assert abs(np.angle(np.exp(1j * (phase - theta)))) < 1e-12
    assert abs(contrast - 1) < 1e-12


def test_complex_median_is_componentwise() -> None:
    z = np.array([0 + 10j, 1 + 0j, 2 + 5j])
    assert complex_median(z) == 1 + 5j


def test_project_orders_points_along_their_line() -> None:
    t = np.linspace(0, 1, 11)
    points = (0.2 + 0.1j) + t * (0.3 - 0.4j)
    p = project(points)
    assert np.all(np.diff(p) > 0) or np.all(np.diff(p) < 0)
    assert abs(abs(p[-1] - p[0]) - abs(0.3 - 0.4j)) < 1e-12


def test_working_values_remember_when_they_were_measured() -> None:
    from datetime import datetime

    from labqpu.calibration.working import Working

    work = Working(device={}, qubits={0: {}})
    work.set(0, "t1_s", 5e-5, "t1")
    work.set_pair((0, 1), "cz_amplitude", 0.3, "cz")
    first = datetime.fromisoformat(work.measured_at[(0, "t1_s")])
    assert first.tzinfo is not None
    work.set(0, "t1_s", 6e-5, "t1")
    assert datetime.fromisoformat(work.measured_at[(0, "t1_s")]) >= first
    assert work.records[((0, 1), "cz_amplitude")] == "cz"
    assert ((0, 1), "cz_amplitude") in work.measured_at


def _ramsey_p1(handedness: int, sense: int, detuning_hz: float, t_s: np.ndarray) -> np.ndarray:
    """P(1) of X90(axis 0) - free precession - X90(axis h * sense * 2 pi d t), from 2x2
    matrix exponentials: H = detuning |1><1| (|1> above |0>, drive frame below the qubit) and
    a pulse about cos(a) X + sin(a) Y."""
    x = np.array([[0, 1], [1, 0]], dtype=complex)
    y = np.array([[0, -1j], [1j, 0]])
    n = np.diag([0.0, 1.0])

    def x90(axis_rad: float) -> np.ndarray:
        return expm(-0.25j * np.pi * (np.cos(axis_rad) * x + np.sin(axis_rad) * y))

    out = []
    for t in t_s:
        u = (x90(handedness * sense * 2 * np.pi * detuning_hz * t)
             @ expm(-2j * np.pi * detuning_hz * t * n) @ x90(0.0))
        out.append(abs(u[1, 0]) ** 2)
    return np.array(out)


@pytest.mark.parametrize("handedness", [+1, -1])
def test_handedness_is_the_sense_whose_fringe_runs_at_twice_the_detuning(handedness) -> None:
    """Drive 1 MHz below the qubit (plus a 60 kHz frequency error, as after spectroscopy);
    IQ-like scale and offset, 2 % noise."""
    t = np.linspace(0, 2e-6, 41)
    d = 1.0e6
    advance, retard = (0.31 - 0.22 * _ramsey_p1(handedness, sense, d + 60e3, t)
                       + RNG.normal(0, 0.02 * 0.22, t.size) for sense in (+1, -1))
    assert handedness_from_fringes(t, advance, retard, d, "qubit 0") == handedness


def test_handedness_refuses_fringes_that_do_not_tell() -> None:
    t = np.linspace(0, 2e-6, 41)
    with pytest.raises(FitError, match=r"drive handedness.*neither stands out"):
        handedness_from_fringes(t, RNG.normal(0, 0.01, t.size), RNG.normal(0, 0.01, t.size),
                                1.0e6, "qubit 2")
    same = 0.5 + 0.4 * np.cos(2 * np.pi * 2e6 * t)
    with pytest.raises(FitError, match="neither stands out"):
        handedness_from_fringes(t, same, same, 1.0e6, "qubit 2")


def test_fit_rabi_on_centred_data_is_not_frozen_at_its_start() -> None:
    """Projected IQ is centred (mean ~1e-17), so the offset's start value is within rounding
    of zero; with MINPACK's relative step it used to stay frozen and bias the pi amplitude
    by ~1 %, with an inestimable covariance."""
    amps = np.linspace(0, 0.9, 46)
    noise = np.random.default_rng(7).normal(0, 0.002, amps.size)  # its own: not the order's
    signal = -0.13 * np.cos(np.pi * amps / 0.4911) + noise
    signal -= signal.mean()
    assert 0 < abs(signal.mean()) < 1e-15 or signal.mean() == 0
    fit = fit_rabi_curve(amps, signal, "test")
    # the frozen offset biased it by ~1 %; the noise moves it by ~0.1 % (one standard error)
    assert abs(fit.params["period"]) / 2 == pytest.approx(0.4911, rel=3e-3)
    assert np.isfinite(fit.stderr["period"]) and fit.stderr["period"] < 0.005


def test_fit_damped_cosine_starting_at_its_minimum() -> None:
    """A measured fringe (qubit 3 of lab5 with qubit 2 excited, 1.5 MHz detuning plus ZZ) that
    starts at its minimum: the fit started at a positive amplitude and zero phase ran off to a
    decay of 3 ns (the first point only) at 1.955 MHz; it must find 1.933 MHz and ~17 us."""
    t = np.arange(41) * 1e-7
    y = np.array([
        -0.1488, -0.03161, 0.12797, 0.11948, -0.04163, -0.14405, -0.0654, 0.09899, 0.13238,
        -0.00872, -0.13331, -0.08003, 0.0682, 0.13505, 0.02133, -0.11577, -0.1035, 0.03796,
        0.12661, 0.0492, -0.09839, -0.11621, 0.0168, 0.12595, 0.07125, -0.0785, -0.12873,
        -0.01089, 0.1189, 0.09505, -0.05671, -0.13031, -0.0393, 0.09932, 0.10043, -0.02367,
        -0.11718, -0.05309, 0.07838, 0.10793, -0.00538])
    fit = fit_damped_cosine_curve(t, y - y.mean(), "test")
    assert fit.params["f"] == pytest.approx(1.9328e6, abs=3e3)
    assert 10e-6 < fit.params["tau"] < 30e-6
    assert np.isfinite(fit.stderr["f"])
