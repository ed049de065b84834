"""Waveform and discrimination kernels against plain-numpy twins written from their docstrings.

Conventions taken from ``labqpu.pulse.kernels`` (not from its code):

* ``gaussian_drag(N, sigma, beta)``: samples k = 0..N-1, centre c = (N - 1) / 2. The Gaussian
  exp(-(k - c)^2 / (2 sigma^2)) is lifted so that it vanishes one sample outside the window
  (k = -1 and k = N) and rescaled so that the continuous curve peaks at 1. Q = beta x dI/dk.
* ``flat_top(N, rise)``: sample k stands for the time k + 1/2 (samples) in a window [0, N];
  raised-cosine edges sin^2(pi tau / (2 rise)) of ``rise`` samples at both ends, 1 in between.
* ``discriminate``: per column, state 1 iff the point is strictly nearer to ``center1``.

The kernels compute in float64 and store complex64, so the tolerance is rtol = 1e-6 with an
absolute floor of 1e-7 (complex64 resolution near 1.0 is 6e-8).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numpy.testing import assert_allclose, assert_array_equal

from labqpu.pulse.kernels import (
    discriminate,
    early_kernel,
    flat_top,
    gaussian_drag,
    stable_argsort,
)

RTOL = 1e-6
ATOL = 1e-7


def drag_reference(n: int, sigma: float, beta: float) -> np.ndarray:
    """Per-sample DRAG envelope, written with math (no vectorisation shared with the kernel)."""
    c = (n - 1) / 2.0

    def gauss(x: float) -> float:
        return math.exp(-0.5 * (x / sigma) ** 2)

    floor = gauss(c + 1.0)  # value one sample outside the window, on both sides
    out = np.empty(n, dtype=complex)
    for k in range(n):
        x = k - c
        i_val = (gauss(x) - floor) / (1.0 - floor)
        di_dk = -x / sigma**2 * gauss(x) / (1.0 - floor)
        out[k] = complex(i_val, beta * di_dk)
    return out


def flat_top_reference(n: int, rise: float) -> np.ndarray:
    """Per-sample flat top: sample k at tau = k + 1/2, sin^2 edges of ``rise`` samples."""
    out = np.empty(n, dtype=complex)
    for k in range(n):
        tau = k + 0.5
        d_edge = min(tau, n - tau)  # distance to the nearer end of the window
        out[k] = math.sin(math.pi * d_edge / (2 * rise)) ** 2 if d_edge < rise else 1.0
    return out


def nearest_reference(iq: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    d0 = np.abs(iq - c0[None, :])
    d1 = np.abs(iq - c1[None, :])
    return (d1 < d0).astype(np.uint8)


# --------------------------------------------------------------------------- gaussian_drag


@pytest.mark.parametrize(
    ("n", "sigma", "beta"),
    [
        (1, 0.5, 0.0),
        (2, 0.5, 0.0),
        (2, 3.0, 1.5),
        (3, 1.0, -0.7),
        (40, 10.0, 0.0),
        (41, 10.0, 0.0),
        (40, 10.0, 2.3),
        (41, 10.0, -2.3),
        (64, 4.0, 0.9),  # narrow: edges deep in the tail
        (101, 80.0, 0.4),  # wide: the lift is large
        (257, 64.25, -1.1),  # long, non-integer sigma
    ],
)
def test_gaussian_drag_matches_reference(n: int, sigma: float, beta: float) -> None:
    """Kernel vs per-sample formula, rtol 1e-6 / atol 1e-7 (complex64 output)."""
    got = gaussian_drag(n, sigma, beta)
    assert got.dtype == np.complex64
    assert got.shape == (n,)
    assert_allclose(got, drag_reference(n, sigma, beta), rtol=RTOL, atol=ATOL)


def test_gaussian_drag_q_is_beta_times_derivative_of_i() -> None:
    """Q equals beta x dI/dk, checked by a central finite difference of the lifted Gaussian
    evaluated off-grid (independent of the analytic derivative); tolerance 1e-6."""
    n, sigma, beta = 48, 9.0, 1.7
    c = (n - 1) / 2.0
    floor = math.exp(-((c + 1.0) ** 2) / (2 * sigma**2))

    def lifted(x: float) -> float:
        return (math.exp(-(x - c) ** 2 / (2 * sigma**2)) - floor) / (1 - floor)

    h = 1e-4
    fd = np.array([(lifted(k + h) - lifted(k - h)) / (2 * h) for k in range(n)])
    got = gaussian_drag(n, sigma, beta)
    assert_allclose(got.imag, beta * fd, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n", [2, 5, 40, 41, 160])
def test_gaussian_drag_symmetries_and_lifted_edges(n: int) -> None:
    """I symmetric and Q antisymmetric about the centre (up to 1e-7); the lifted Gaussian
    extrapolated one sample outside is 0, so for sigma = N/4 and N >= 40 the edge samples are
    small (< 0.05) and well below the unlifted Gaussian there."""
    sigma = n / 4
    w = gaussian_drag(n, sigma, 1.3)
    assert_allclose(w.real, w.real[::-1], rtol=0, atol=ATOL)
    assert_allclose(w.imag, -w.imag[::-1], rtol=0, atol=ATOL)
    unlifted_edge = math.exp(-(((n - 1) / 2) ** 2) / (2 * sigma**2))
    assert 0 < w.real[0] < unlifted_edge
    if n >= 40:
        assert w.real[0] < 0.05
        assert w.real[0] < 0.5 * unlifted_edge
    # Centre of the window: Q vanishes there for odd lengths.
    if n % 2:
        assert abs(w.imag[n // 2]) < ATOL


@pytest.mark.parametrize("n", [1, 3, 41, 161])
def test_gaussian_drag_odd_length_peaks_at_one(n: int) -> None:
    """Odd lengths sample the centre: I peaks at exactly 1 (within complex64 resolution)."""
    w = gaussian_drag(n, max(n / 5, 0.3), 0.8)
    assert int(np.argmax(w.real)) == n // 2
    assert_allclose(w.real.max(), 1.0, rtol=0, atol=ATOL)


def test_gaussian_drag_beta_zero_has_no_q_and_beta_scales_q_linearly() -> None:
    """beta = 0 gives Q = 0 exactly and the same I as any other beta; Q is linear in beta."""
    w0 = gaussian_drag(60, 12.0, 0.0)
    w1 = gaussian_drag(60, 12.0, 1.0)
    w3 = gaussian_drag(60, 12.0, -3.0)
    assert np.all(w0.imag == 0)
    assert_array_equal(w0.real, w1.real)
    assert_allclose(w3.imag, -3.0 * w1.imag, rtol=RTOL, atol=ATOL)


def test_gaussian_drag_accepts_numpy_scalars() -> None:
    got = gaussian_drag(np.int64(20), np.float32(5.0), np.float64(0.5))
    assert_allclose(got, drag_reference(20, 5.0, 0.5), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ((0, 5.0, 0.0), "duration"),
        ((-3, 5.0, 0.0), "duration"),
        ((10, 0.0, 0.0), "sigma"),
        ((10, -1.0, 0.0), "sigma"),
        ((10, float("nan"), 0.0), "sigma"),
        ((10, 2.0, float("nan")), "beta"),
        ((10, 2.0, float("inf")), "beta"),
        ((10, 2.0, -float("inf")), "beta"),
    ],
)
def test_gaussian_drag_rejects_bad_input(args: tuple, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        gaussian_drag(*args)


# --------------------------------------------------------------------------- flat_top


@pytest.mark.parametrize(
    ("n", "rise"),
    [
        (1, 0.0),
        (2, 0.0),
        (2, 0.5),  # max rise, even
        (7, 3.0),  # max rise, odd
        (10, 4.5),  # max rise, even
        (10, 4.2),
        (100, 0.0),
        (100, 10.0),
        (101, 10.0),
        (101, 12.3),  # fractional rise
        (1000, 37.5),
    ],
)
def test_flat_top_matches_reference(n: int, rise: float) -> None:
    """Kernel vs per-sample sin^2-edge formula, rtol 1e-6 / atol 1e-7; purely real."""
    got = flat_top(n, rise)
    assert got.dtype == np.complex64
    assert got.shape == (n,)
    assert np.all(got.imag == 0)
    ref = flat_top_reference(n, rise) if rise > 0 else np.ones(n, dtype=complex)
    assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("n", "rise"), [(1, 0.0), (9, 0.0), (9, 4.0), (100, 10.0),
                                         (101, 12.3), (64, 31.0)])
def test_flat_top_symmetric_with_peak_one(n: int, rise: float) -> None:
    """Symmetric under k -> N-1-k (1e-7) and peak 1 whenever a sample falls in the flat part."""
    w = flat_top(n, rise).real
    assert_allclose(w, w[::-1], rtol=0, atol=ATOL)
    assert_allclose(w.max(), 1.0, rtol=0, atol=ATOL)
    assert np.all(w > 0)
    assert np.all(w <= 1.0 + ATOL)
    # Edges rise monotonically towards the middle.
    half = w[: (n + 1) // 2]
    assert np.all(np.diff(half) >= -ATOL)


def test_flat_top_rise_zero_is_all_ones() -> None:
    assert_array_equal(flat_top(33, 0.0), np.ones(33, dtype=np.complex64))


@pytest.mark.parametrize(("n", "rise"), [(10, 4.5), (3, 1.0), (11, 5.0)])
def test_flat_top_peak_one_at_maximal_rise(n: int, rise: float) -> None:
    """The longest allowed edges still leave one flat sample, so the peak is exactly 1."""
    assert_allclose(flat_top(n, rise).real.max(), 1.0, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("n", "rise"), [(10, 5.0), (2, 1.0), (10, 4.8), (7, 3.5)])
def test_flat_top_rejects_edges_without_a_flat_sample(n: int, rise: float) -> None:
    with pytest.raises(ValueError, match="rise"):
        flat_top(n, rise)


@pytest.mark.parametrize(
    ("args", "word"),
    [
        ((0, 0.0), "duration"),
        ((-1, 0.0), "duration"),
        ((10, 5.01), "rise"),
        ((10, 20.0), "rise"),
        ((10, -0.1), "rise"),
        ((10, float("nan")), "rise"),
    ],
)
def test_flat_top_rejects_bad_input(args: tuple, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        flat_top(*args)


# --------------------------------------------------------------------------- discriminate


@pytest.mark.parametrize(("shots", "n_acq"), [(1, 1), (7, 3), (1000, 5), (4, 0)])
def test_discriminate_matches_reference(shots: int, n_acq: int) -> None:
    """Random IQ clouds around per-column centres: exact agreement with numpy argmin."""
    rng = np.random.default_rng(shots * 31 + n_acq)
    c0 = rng.normal(size=n_acq) + 1j * rng.normal(size=n_acq)
    c1 = rng.normal(size=n_acq) + 1j * rng.normal(size=n_acq)
    iq = (rng.normal(size=(shots, n_acq)) + 1j * rng.normal(size=(shots, n_acq))) * 1.5
    got = discriminate(iq.astype(np.complex64), c0, c1)
    assert got.dtype == np.uint8
    assert got.shape == (shots, n_acq)
    ref = nearest_reference(iq.astype(np.complex64).astype(complex), c0, c1)
    assert_array_equal(got, ref)


def test_discriminate_uses_each_columns_own_centres() -> None:
    """The same IQ point is 0 in one column and 1 in the other when the centres swap."""
    c0 = np.array([0.0 + 0j, 1.0 + 1j])
    c1 = np.array([1.0 + 1j, 0.0 + 0j])
    iq = np.array([[0.1 + 0.1j, 0.1 + 0.1j], [0.9 + 0.8j, 0.9 + 0.8j],
                   [-5 - 5j, -5 - 5j]])
    assert_array_equal(discriminate(iq, c0, c1), [[0, 1], [1, 0], [0, 1]])


def test_discriminate_tie_goes_to_zero_and_accepts_complex64_centres() -> None:
    c0 = np.array([-1.0 + 0j], dtype=np.complex64)
    c1 = np.array([1.0 + 0j], dtype=np.complex64)
    iq = np.array([[0.0 + 3j], [1e-3 + 0j], [-1e-3 + 0j]])
    assert_array_equal(discriminate(iq, c0, c1), [[0], [1], [0]])


@pytest.mark.parametrize(
    ("iq_shape", "n0", "n1"),
    [
        ((10, 2), 3, 2),
        ((10, 2), 2, 1),
        ((10,), 1, 1),
        ((2, 3, 4), 3, 3),
    ],
)
def test_discriminate_rejects_mismatched_shapes(iq_shape: tuple, n0: int, n1: int) -> None:
    iq = np.zeros(iq_shape, dtype=complex)
    with pytest.raises(ValueError, match="centres"):
        discriminate(iq, np.zeros(n0, dtype=complex), np.zeros(n1, dtype=complex))


# --------------------------------------------------------------------------- fast kernels


def _float32_rounding_excess(fast: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """How far each float32 component of ``fast`` lies beyond half a float32 step from
    ``exact`` (complex128), in float32 steps: <= 0 where ``fast`` is ``exact`` correctly
    rounded."""
    got = fast.view(np.float32).astype(np.float64)
    want = exact.astype(np.complex128).view(np.float64)
    step = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    return (np.abs(got - want) - 0.5 * step) / step


def _drag_exact(n: int, sigma: float, beta: float) -> np.ndarray:
    """The DRAG envelope in 60-digit decimal arithmetic (the lift of a Gaussian much wider than
    its window cancels all but a few digits of float64)."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 60
        c, s2, b = Decimal(n - 1) / 2, Decimal(sigma) ** 2, Decimal(beta)
        edge = (-(c + 1) ** 2 / (2 * s2)).exp()
        out = np.empty(n, dtype=complex)
        for k in range(n):
            x = k - c
            g = (-(x * x) / (2 * s2)).exp()
            out[k] = complex(float((g - edge) / (1 - edge)), float(b * -x / s2 * g / (1 - edge)))
    return out


@njit(cache=True)
def _flat_top_per_sample(rise_samples, beta_samples, out):
    """The flat-top formula as first written (one branch per sample, cos and sin per sample)."""
    n = out.shape[0]
    for k in range(n):
        t = k + 0.5
        if rise_samples > 0 and t < rise_samples:
            v = 0.5 * (1.0 - np.cos(np.pi * t / rise_samples))
            dv = 0.5 * np.pi / rise_samples * np.sin(np.pi * t / rise_samples)
        elif rise_samples > 0 and t > n - rise_samples:
            v = 0.5 * (1.0 - np.cos(np.pi * (n - t) / rise_samples))
            dv = -0.5 * np.pi / rise_samples * np.sin(np.pi * (n - t) / rise_samples)
        else:
            v = 1.0
            dv = 0.0
        out[k] = complex(v, beta_samples * dv)
    return out


def _random_drag_cases(count: int, seed: int) -> list[tuple[int, float, float]]:
    rng = np.random.default_rng(seed)
    cases = [(40, 10.0, 0.5), (40, 10.0, -0.3), (1, 1.0, 1.0), (2, 0.3, 1.0), (31, 7.5, 0.0),
             (1000, 250.0, 0.2), (100_000, 25_000.0, 0.5), (65_537, 900.0, -1.5)]
    for _ in range(count):
        n = int(rng.integers(1, 400))
        cases.append((n, float(rng.uniform(0.2, n)), float(rng.uniform(-3, 3))))
    return cases


def test_gaussian_drag_recurrence_is_float32_rounding_of_the_exact_envelope() -> None:
    """The fast kernel (half window, exp anchors + recurrence) stores each sample within 1e-3
    of a float32 step beyond the float32 rounding of the exact envelope (the per-sample
    reference of this file, in float64), and the bits of the one-exp-per-sample kernel in all
    but a few samples in 1e4; complex128 output takes the one-exp-per-sample formula itself."""
    from labqpu.pulse.kernels import _gaussian_drag_direct_kernel, _gaussian_drag_kernel

    differing = total = 0
    for n, sigma, beta in _random_drag_cases(500, seed=11):
        fast = gaussian_drag(n, sigma, beta)
        exact = drag_reference(n, sigma, beta)
        excess = _float32_rounding_excess(fast, exact)
        assert excess.max() <= 1e-3, (n, sigma, beta, excess.max())
        assert np.isfinite(fast.view(np.float32)).all()
        assert fast.tobytes() == _gaussian_drag_kernel(sigma, beta, np.empty(n, np.complex64)) \
            .tobytes()
        direct = _gaussian_drag_direct_kernel(sigma, beta, np.empty(n, np.complex64))
        differing += int(np.count_nonzero(fast.view(np.float32) != direct.view(np.float32)))
        total += 2 * n
        full = _gaussian_drag_direct_kernel(sigma, beta, np.empty(n, np.complex128))
        assert gaussian_drag(n, sigma, beta, dtype=np.complex128).tobytes() == full.tobytes()
    assert differing <= 1e-4 * total, (differing, total)


def test_gaussian_drag_tails_underflow_without_nan() -> None:
    """Narrow Gaussians in long windows: the far tails underflow to 0 (no inf x 0 = NaN)."""
    for n, sigma in ((1000, 0.05), (3000, 0.3), (100_000, 2.0), (41, 0.01)):
        fast = gaussian_drag(n, sigma, 1.0)
        assert np.isfinite(fast.view(np.float32)).all(), (n, sigma)
        assert fast[0] == 0 and fast[-1] == 0
        assert _float32_rounding_excess(fast, drag_reference(n, sigma, 1.0)).max() <= 1e-3


def _sigma_of_lift_gain(n: int, gain: float) -> float:
    """The sigma (samples) whose lift amplifies rounding ``gain`` times at the window's edge:
    1 / (1 - exp(-n / 2 sigma^2)) = gain."""
    return math.sqrt(n / (2.0 * -math.log1p(-1.0 / gain)))


@pytest.mark.parametrize(("n", "sigma"), [
    (160, 16_000.0), (160, 28_000.0), (40, 4_000.0), (40, 14_000.0), (41, 10_000.0),
    (2, 2_000.0), (160, 1_500.0), (40, 760.0), (1000, 3_800.0), (160, 400.0), (160, 40.0),
    # a review's worst cases with anchors every 20 samples up to a gain of 3e4
    (160, 1548.7581600302804), (39, 764.8175333894941),
    *((n, _sigma_of_lift_gain(n, gain)) for n in (39, 40, 80, 199, 240)
      for gain in (2.9e3, 3.1e3, 2.9e4, 3.1e4)),
])
def test_gaussian_drag_wider_than_its_window_is_correctly_rounded(n: int, sigma: float) -> None:
    """A Gaussian much wider than its window (the lift amplifies the recurrence's rounding up
    to ~1e7 times here, on both sides of the kernel's switches of anchor spacing and of
    formula): before rounding to float32 every sample lies within 1e-2 of a float32 step of
    the exact envelope (60-digit reference), so the stored one is correctly rounded but where
    the exact value is that close to a midpoint."""
    from labqpu.pulse.kernels import _gaussian_drag_kernel

    exact = _drag_exact(n, sigma, 0.7).view(np.float64)
    unrounded = _gaussian_drag_kernel(sigma, 0.7, np.empty(n, np.complex128)).view(np.float64)
    step = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert (np.abs(unrounded - exact) / step).max() <= 1e-2
    fast = gaussian_drag(n, sigma, 0.7)
    assert _float32_rounding_excess(fast, _drag_exact(n, sigma, 0.7)).max() <= 1e-2


@pytest.mark.parametrize(("n", "width", "sigma", "words"), [
    (40, 0.0, 1e8, "0.001..14142.1 samples for a Gaussian part of 40 samples, got 100000000.0 "
                   "(a wider Gaussian is flat"),
    (40, 0.0, 1e-200, "0.001..14142.1 samples for a Gaussian part of 40 samples, got 1e-200"),
    (40, 0.0, 0.0, "got 0.0"), (40, 0.0, math.inf, "got inf"), (40, 0.0, math.nan, "got nan"),
    (100, 98.0, 10_000.0, "for a Gaussian part of 2 samples, got 10000.0"),
])
def test_sigma_outside_its_range_is_refused_by_kernels_and_shapes(n, width, sigma, words):
    """No ZeroDivisionError, NaN or garbage: the kernels and the pulse shapes refuse a sigma
    outside ``sigma_range`` naming the range, the Gaussian part and the value."""
    from labqpu.errors import PulseError
    from labqpu.pulse.kernels import gaussian_square
    from labqpu.pulse.shapes import Drag, GaussianSquare

    with pytest.raises(ValueError, match=re.escape(words)):
        gaussian_square(n, width, sigma, 0.1)
    if width == 0:
        with pytest.raises(ValueError, match=re.escape(words)):
            gaussian_drag(n, sigma, 0.1)
        with pytest.raises(PulseError, match=re.escape(words)):
            Drag(duration_samples=n, amp=0.5, sigma_samples=sigma, beta_samples=0.1)
    else:
        with pytest.raises(PulseError, match=re.escape(words)):
            GaussianSquare(duration_samples=n, amp=0.5, sigma_samples=sigma, width_samples=width)


def test_flat_top_rotation_is_float32_rounding_of_the_per_sample_formula() -> None:
    """The fast kernel (mirrored edges, cos/sin anchors + rotation) stores each sample within
    1e-3 of a float32 step beyond the float32 rounding of the per-sample formula (in float64)
    on every rise ``flat_top`` accepts (0 <= 2 rise <= N - 1); complex128 output takes the
    direct formula."""
    from labqpu.pulse.kernels import _flat_top_direct_kernel

    rng = np.random.default_rng(12)
    cases = [(1, 0.0, 0.0), (2, 0.5, 0.0), (7, 3.0, 1.0), (10, 4.5, -1.0), (1000, 20.0, 0.0),
             (32, 4.0, 0.0), (32, 5.0, 0.0), (30, 5.0, 0.7), (12, 3.0, -0.0),
             (100_000, 20.0, 0.0), (100_000, 49_999.5, 0.4), (65_537, 3_000.3, -1.2)]
    for _ in range(1500):
        n = int(rng.integers(1, 3000))
        half = (n - 1) / 2
        rise = float(rng.choice([0.0, float(rng.integers(0, int(half) + 1)),
                                 rng.uniform(0, half), half]))
        cases.append((n, rise, float(rng.choice([0.0, -0.0, rng.uniform(-2, 2)]))))
    for n, rise, beta in cases:
        fast = flat_top(n, rise, beta)
        full = _flat_top_per_sample(rise, beta, np.empty(n, np.complex128))
        excess = _float32_rounding_excess(fast, full)
        assert excess.max() <= 1e-3, (n, rise, beta, excess.max())
        assert _flat_top_direct_kernel(rise, beta, np.empty(n, np.complex128)).tobytes() \
            == full.tobytes(), (n, rise, beta)
        assert flat_top(n, rise, beta, dtype=np.complex128).tobytes() == full.tobytes()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 1000])
def test_stable_argsort_matches_numpy_stable_sort(n: int) -> None:
    """``stable_argsort`` (the plays' order in ``layout_kernel``) against numpy's stable
    argsort on keys with many ties, on sorted, reversed and constant keys: the same indices."""
    rng = np.random.default_rng(n)
    for key in (rng.integers(0, max(n // 4, 1), n), np.arange(n), np.arange(n)[::-1].copy(),
                np.zeros(n, dtype=np.int64)):
        key = np.ascontiguousarray(key, dtype=np.int64)
        assert_array_equal(stable_argsort(key), np.argsort(key, kind="stable"))


def early_reference(ops: list[tuple[str, tuple[int, ...], int]]) -> list[int]:
    """Per op (kind, qubits, duration) of a circuit without conditional ops: 1 when it plays
    early, written from the rule: a run of single-qubit ops on a qubit after a two-qubit gate
    on it, ended by a measurement of it, plays early (a passive reset is one of them: it plays
    nothing, like a delay); a barrier or a zero delay joins the runs of its qubits when each is
    in one."""
    early = [0] * len(ops)
    run: dict[int, list[int]] = {}
    for i, (kind, qubits, duration) in enumerate(ops):
        if kind in ("barrier", "delay") and duration == 0:
            if qubits and all(q in run for q in qubits):
                for q in qubits:
                    run[q].append(i)
        elif kind == "measure":
            for j in run.pop(qubits[0], []):
                early[j] = 1
        elif kind == "cz":
            for q in qubits:
                run[q] = []
        elif qubits[0] in run:  # a gate, a delay, a passive reset
            run[qubits[0]].append(i)
    return early


_KINDS = {"barrier": 0, "delay": 0, "gate": 1, "cz": 2, "measure": 3, "reset": 0}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(_KINDS)), st.integers(0, 3),
                          st.integers(0, 3), st.integers(0, 2)), max_size=40))
def test_early_kernel_matches_reference(raw) -> None:
    """``kernels.early_kernel`` against the rule written above, on random op lists of four
    qubits (barriers on one to four of them)."""
    ops = []
    for kind, a, b, d in raw:
        if kind == "cz":
            if a == b:
                continue
            qubits = (a, b)
        elif kind == "barrier":
            qubits = tuple(range(min(a, b), max(a, b) + 1))
        else:
            qubits = (a,)
        ops.append((kind, qubits, 0 if kind == "barrier" else d + (kind == "reset")))
    # effect rows: column 11 is the acquisition's index (>= 0: the op acquires)
    effects = np.full((5, 16), -1.0)
    effects[3, 11] = 0.0
    effect = np.array([_KINDS[k] for k, _, _ in ops], dtype=np.int64)
    qptr = np.array([0, *np.cumsum([len(q) for _, q, _ in ops])], dtype=np.int64)
    qflat = np.array([q for _, qs, _ in ops for q in qs], dtype=np.int64)
    duration = np.array([d for _, _, d in ops], dtype=np.int64)
    got = early_kernel(effect, duration, qptr, qflat, effects, 4)
    assert got.tolist() == early_reference(ops)
