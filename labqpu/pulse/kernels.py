"""Waveform synthesis kernels (numba) and the validating wrappers the compiler calls.

Every kernel takes and returns flat arrays; lengths and widths are in samples. Envelopes are
normalised to a peak of 1.0: the controller applies amplitude, phase and NCO frequency at play
time, so one waveform serves every amplitude (sx and x share their shape).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _gaussian_drag_kernel(duration_samples, sigma_samples, beta_samples):
    """Lifted Gaussian centred in the window plus i * beta * d/dt (per sample) on Q."""
    out = np.empty(duration_samples, dtype=np.complex64)
    centre = (duration_samples - 1) / 2.0
    edge = np.exp(-((centre + 1.0) ** 2) / (2.0 * sigma_samples**2))
    norm = 1.0 / (1.0 - edge)
    for k in range(duration_samples):
        x = k - centre
        g = np.exp(-(x * x) / (2.0 * sigma_samples**2))
        dg = -x / (sigma_samples**2) * g
        out[k] = complex((g - edge) * norm, beta_samples * dg * norm)
    return out


@njit(cache=True)
def _flat_top_kernel(duration_samples, rise_samples):
    """Flat top of height 1 with Gaussian-error-function-like cosine edges of ``rise_samples``."""
    out = np.empty(duration_samples, dtype=np.complex64)
    for k in range(duration_samples):
        t = k + 0.5
        if rise_samples > 0 and t < rise_samples:
            v = 0.5 * (1.0 - np.cos(np.pi * t / rise_samples))
        elif rise_samples > 0 and t > duration_samples - rise_samples:
            v = 0.5 * (1.0 - np.cos(np.pi * (duration_samples - t) / rise_samples))
        else:
            v = 1.0
        out[k] = complex(v, 0.0)
    return out


def gaussian_drag(duration_samples: int, sigma_samples: float, beta_samples: float) -> np.ndarray:
    """DRAG envelope (complex64, peak 1 on I): Gaussian of width ``sigma_samples`` lifted to
    zero at the edges; Q = ``beta_samples`` x dI/dk, k in samples."""
    if duration_samples < 1:
        raise ValueError(f"pulse duration must be >= 1 sample, got {duration_samples}")
    if not sigma_samples > 0:
        raise ValueError(f"Gaussian sigma must be > 0 samples, got {sigma_samples}")
    if not np.isfinite(beta_samples):
        raise ValueError(f"DRAG beta must be finite, got {beta_samples}")
    return _gaussian_drag_kernel(int(duration_samples), float(sigma_samples), float(beta_samples))


def flat_top(duration_samples: int, rise_samples: float) -> np.ndarray:
    """Flat-top envelope (complex64, real, peak 1) with raised-cosine edges of ``rise_samples``;
    at least one sample of the flat top remains, so the peak is exactly 1."""
    if duration_samples < 1:
        raise ValueError(f"pulse duration must be >= 1 sample, got {duration_samples}")
    if not 0 <= 2 * rise_samples <= duration_samples - 1:
        raise ValueError(
            f"rise time {rise_samples} samples: two edges must leave at least one flat sample "
            f"of the {duration_samples}-sample pulse"
        )
    return _flat_top_kernel(int(duration_samples), float(rise_samples))


@njit(cache=True)
def _nearest_center_kernel(iq, center0, center1, n_columns):
    """State (0/1) per IQ point: 1 where the point is closer to ``center1[column]``.

    ``iq`` is a flat row-major (shots x n_columns) array; returns uint8 of the same length.
    """
    out = np.empty(iq.shape[0], dtype=np.uint8)
    for i in range(iq.shape[0]):
        c = i % n_columns
        d0 = iq[i] - center0[c]
        d1 = iq[i] - center1[c]
        out[i] = 1 if (d1.real * d1.real + d1.imag * d1.imag) < (
            d0.real * d0.real + d0.imag * d0.imag) else 0
    return out


def discriminate(iq: np.ndarray, center0: np.ndarray, center1: np.ndarray) -> np.ndarray:
    """Assign each IQ point of ``iq`` (shots x acquisitions, complex) to the nearer of its
    column's two calibrated centres; returns uint8 states of the same shape."""
    iq = np.ascontiguousarray(iq, dtype=np.complex128)
    center0 = np.asarray(center0)
    center1 = np.asarray(center1)
    if iq.ndim != 2 or center0.shape != (iq.shape[1],) or center1.shape != (iq.shape[1],):
        raise ValueError(f"need (shots, n) IQ and n centres per state; got {iq.shape}, "
                         f"{center0.shape}, {center1.shape}")
    flat = _nearest_center_kernel(iq.reshape(-1), center0.astype(np.complex128),
                                  center1.astype(np.complex128), max(iq.shape[1], 1))
    return flat.reshape(iq.shape)
