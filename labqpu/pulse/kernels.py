"""Waveform synthesis kernels (numba) and the validating wrappers the compiler and the pulse
shapes (``labqpu.pulse.shapes``) call.

Every kernel fills a flat output array whose length is the pulse duration; lengths, widths and
DRAG betas are in samples. Envelopes are normalised so that the continuous curve peaks at 1.0:
the controller applies amplitude, phase and NCO frequency at play time, so one waveform serves
every amplitude (sx and x share their shape). The kernels compute in float64 and store into
the dtype of ``out``: complex64 for the waveform table, complex128 for full precision.

Conventions (k = 0 .. N-1 is the sample index):

* Gaussian family (``gaussian_drag``, ``gaussian_square``): sample k sits at position k; the
  window centre is c = (N - 1) / 2; the Gaussian is lifted to vanish one sample outside the
  window (k = -1 and k = N) and rescaled by 1 / (1 - lift).
* Cosine family (``flat_top``, ``cosine``): sample k stands for the time k + 1/2 in [0, N].
* DRAG: Q = beta x dI/dk with the analytic derivative.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Samples between exact anchors: ``exp`` of the Gaussian recurrence, cos and sin of the
#: flat top's rotation (see the kernels). A value carries at most ~j^2 / 2 float64 roundings
#: after j steps of a recurrence (~200 ulp, 3e-14 relative, for 20 steps): far below the
#: float32 rounding (6e-8) the waveform table stores.
_ANCHOR_EVERY = 20
#: The lift of a Gaussian wider than its window amplifies the recurrence's rounding of sample x
#: by g(x) / (g(x) - g(c + 1)), most at the window's edge. Where that gain exceeds
#: ``_LIFT_GAIN_ANCHOR_EVERY`` the DRAG kernel anchors every ``_ANCHOR_EVERY_WIDE`` samples
#: instead of ``_ANCHOR_EVERY`` (the error grows as the square of the spacing), and a Gaussian
#: whose edge gain exceeds ``_MAX_LIFT_GAIN`` takes the direct formula. Measured against a
#: 60-digit reference, the error before rounding to float32 then stays below 0.006 of a
#: float32 step (0.043 with 20 samples at a gain of 3e4).
_LIFT_GAIN_ANCHOR_EVERY = 3e3
_ANCHOR_EVERY_WIDE = 8
_MAX_LIFT_GAIN = 3e4
#: Narrowest Gaussian sigma (samples): narrower is one sample wide anyway, and 1 / sigma^2
#: would overflow.
MIN_SIGMA_SAMPLES = 1e-3
#: Smallest step from the lifted edge to the first sample, relative to the peak, that a
#: Gaussian may have: a wider one is flat across its window, and lifting it divides rounding
#: errors by that step (float64: ~1e-16 / 1e-7, within float32's rounding).
_MIN_EDGE_STEP = 1e-7


@njit(cache=True, nogil=True)
def _gaussian_drag_kernel(sigma_samples, beta_samples, out):
    """Fill ``out`` (length N): Gaussian centred at (N - 1) / 2, lifted to vanish one sample
    outside the window and rescaled to a continuous peak of 1, on I; Q = beta * dI/dk.

    The samples are those of the direct formula ``g = exp(-x^2 / (2 sigma^2))`` at
    x = k - (N - 1) / 2 (``_gaussian_drag_direct_kernel``, one ``exp`` per sample) to within the
    recurrence's rounding (a few 1e-14 relative), computed faster:

    * the envelope is even and Q odd, so only half the window is evaluated and mirrored;
    * from the centre outwards, between anchors every ``_ANCHOR_EVERY`` samples where ``exp``
      is called (the first anchor and q share one), g follows the exact recurrence
      g(x - 1) = g(x) r(x), r(x - 1) = r(x) q with r = exp((2x - 1) / 2s^2) and
      q = exp(-1 / s^2): two multiplications instead of an ``exp``. Outwards g and r only
      shrink, so the tails underflow to 0 as the direct formula does, without overflow.

    A Gaussian wider than its window, whose lift amplifies the recurrence's rounding, is
    anchored more often, and beyond ``_MAX_LIFT_GAIN`` (sigma^2 > ~15 000 N) takes the direct
    formula instead.

    Stored as complex64, each sample is the exact envelope rounded to float32, and differs from
    the direct formula's float32 in under 1 of 1e4 samples (a few in 1e6 on random shapes), by
    one float32 step (tested); complex128 output takes the direct formula (``gaussian_drag``).
    """
    n = out.shape[0]
    inv_s2 = 1.0 / sigma_samples**2
    # 1 / lift gain at the edge = 1 - g(c + 1) / g(c) = 1 - exp(-N / 2s^2) ~ N / 2s^2
    if 0.5 * n * inv_s2 * _MAX_LIFT_GAIN < 1.0:
        return _gaussian_drag_direct_kernel(sigma_samples, beta_samples, out)
    centre = (n - 1) / 2.0
    edge = np.exp(-0.5 * ((centre + 1.0) ** 2) * inv_s2)
    norm = 1.0 / (1.0 - edge)
    edge_norm = edge * norm
    beta_norm = beta_samples * norm
    # the centre-most anchor from u = exp(-1 / 8s^2): at x = -1/2 (even N) g = u and
    # r = u^8; at x = 0 (odd N) g = 1 and r = u^4; q = u^8 (one exp instead of three)
    u = np.exp(-0.125 * inv_s2)
    u4 = (u * u) ** 2
    q = u4 * u4
    first = (n + 1) // 2 - 1  # the centre-most sample of the first half
    k = first
    while k >= 0:
        x = k - centre
        if k == first:
            g = u if n % 2 == 0 else 1.0
            r = q if n % 2 == 0 else u4
        else:  # anchor: the direct formula
            g = np.exp(-0.5 * (x * x) * inv_s2)
            r = np.exp((x - 0.5) * inv_s2)
        xs = x * inv_s2  # x / s^2, stepped by -1 / s^2 below
        re = g * norm - edge_norm
        im = -beta_norm * xs * g
        out[k] = complex(re, im)
        if n - 1 - k != k:
            out[n - 1 - k] = complex(re, -im)
        # the gain of the block's outermost sample, 1 / (1 - exp(-(d^2 - x^2) / 2s^2)) with
        # d = c + 1 (~ 2s^2 / (d^2 - x^2) when large): the denser spacing only near the edges
        far = centre - max(k - _ANCHOR_EVERY + 1, 0)
        dense = 0.5 * (centre + 1.0 - far) * (centre + 1.0 + far) * inv_s2 \
            * _LIFT_GAIN_ANCHOR_EVERY < 1.0
        stop = max(k - (_ANCHOR_EVERY_WIDE if dense else _ANCHOR_EVERY), -1)
        for j in range(k - 1, stop, -1):
            g = g * r
            r = r * q
            xs = xs - inv_s2
            re = g * norm - edge_norm
            im = -beta_norm * xs * g
            out[j] = complex(re, im)
            out[n - 1 - j] = complex(re, -im)
        k = stop
    return out


@njit(cache=True, nogil=True)
def _gaussian_drag_direct_kernel(sigma_samples, beta_samples, out):
    """The direct formula of ``_gaussian_drag_kernel``, one ``exp`` per sample: what
    ``gaussian_drag`` uses for complex128 output, and for a Gaussian much wider than its
    window. The lifted difference g - g(c + 1) is computed as g (1 - exp(-(d^2 - x^2) / 2s^2))
    with d = c + 1 and ``expm1``, so it keeps its digits when the two are close."""
    n = out.shape[0]
    centre = (n - 1) / 2.0
    d = centre + 1.0
    inv_s2 = 1.0 / sigma_samples**2
    norm = -1.0 / np.expm1(-0.5 * d * d * inv_s2)  # 1 / (1 - g(c + 1))
    for k in range(n):
        x = k - centre
        g = np.exp(-0.5 * (x * x) * inv_s2)
        lifted = -g * np.expm1(-0.5 * ((d - x) * (d + x)) * inv_s2)  # g - g(c + 1)
        out[k] = complex(lifted * norm, beta_samples * (-x * inv_s2 * g) * norm)
    return out


@njit(cache=True, nogil=True)
def _gaussian_square_kernel(width_samples, sigma_samples, beta_samples, out):
    """Fill ``out`` (length N): 1 on the flat part [c - w/2, c + w/2] around c = (N - 1) / 2,
    Gaussian flanks of ``sigma_samples`` outside it, lifted to vanish one sample outside the
    window; Q = beta * dI/dk. ``width_samples`` = 0 gives the envelope of ``gaussian_drag``
    (the same formula, evaluated per sample)."""
    n = out.shape[0]
    centre = (n - 1) / 2.0
    left = centre - width_samples / 2.0
    right = centre + width_samples / 2.0
    d = left + 1.0  # from a flank's centre to the sample just outside the window
    inv_s2 = 1.0 / sigma_samples**2
    norm = -1.0 / np.expm1(-0.5 * d * d * inv_s2)  # 1 / (1 - lift), as in the DRAG kernel
    for k in range(n):
        if k < left:
            x = k - left
        elif k > right:
            x = k - right
        else:
            out[k] = complex(1.0, 0.0)
            continue
        g = np.exp(-0.5 * (x * x) * inv_s2)
        lifted = -g * np.expm1(-0.5 * ((d - x) * (d + x)) * inv_s2)  # g - lift
        out[k] = complex(lifted * norm, beta_samples * (-x * inv_s2 * g) * norm)
    return out


@njit(cache=True, inline="always")
def _flat_top_edge_samples(rise_samples):
    """Samples of each edge of a flat top: those whose time k + 1/2 lies within the rise."""
    m = 0
    if rise_samples > 0:
        while m + 0.5 < rise_samples:
            m += 1
    return m


@njit(cache=True, inline="always")
def _flat_top_edge(rise_samples, beta_samples, k):
    """Sample k of the rising edge by the direct formula: (I, Q) at time t = k + 1/2."""
    phi = np.pi * (k + 0.5) / rise_samples
    return (0.5 * (1.0 - np.cos(phi)),
            beta_samples * (0.5 * np.pi / rise_samples * np.sin(phi)))


@njit(cache=True, nogil=True)
def _flat_top_kernel(rise_samples, beta_samples, out):
    """Fill ``out`` (length N, complex64; 2 rise <= N - 1, as ``flat_top`` checks): sample k at
    time t = k + 1/2 (samples); raised-cosine edges 0.5 (1 - cos(pi t / rise)) of
    ``rise_samples`` at both ends, 1 between; Q = beta * dI/dk.

    The samples are those of the direct formula, one cos and one sin per edge sample
    (``_flat_top_direct_kernel``), to within the rotation's rounding (~1e-14), computed faster:

    * the falling edge is the rising one mirrored (the time from the end, N - t, is the same
      float64 as the rising edge's t; Q changes sign exactly);
    * between anchors every ``_ANCHOR_EVERY`` samples, where cos and sin are called, the edge
      follows the exact rotation (cos, sin)(phi + d) from (cos, sin)(phi) and of the step
      d = pi / rise, which is twice the first angle: a few multiplications instead of two
      trigonometric calls.

    Stored as complex64, a sample differs from the direct formula's float32 rarely, by one
    float32 rounding step (tested).
    """
    n = out.shape[0]
    m = _flat_top_edge_samples(rise_samples)  # samples [0, m) rise, [n - m, n) fall
    if m > 0:
        a = 0.5 * np.pi / rise_samples
        cos_d = 0.0
        sin_d = 0.0
        k = 0
        while k < m:
            phi = np.pi * (k + 0.5) / rise_samples
            c = np.cos(phi)
            s = np.sin(phi)
            if k == 0:
                cos_d = c * c - s * s
                sin_d = 2.0 * s * c
            re, im = 0.5 * (1.0 - c), beta_samples * (a * s)
            out[k] = complex(re, im)
            out[n - 1 - k] = complex(re, -im)
            stop = min(k + _ANCHOR_EVERY, m)
            for j in range(k + 1, stop):
                c, s = c * cos_d - s * sin_d, s * cos_d + c * sin_d
                re, im = 0.5 * (1.0 - c), beta_samples * (a * s)
                out[j] = complex(re, im)
                out[n - 1 - j] = complex(re, -im)
            k = stop
    flat = complex(1.0, beta_samples * 0.0)
    for k in range(m, n - m):
        out[k] = flat
    return out


@njit(cache=True, nogil=True)
def _flat_top_direct_kernel(rise_samples, beta_samples, out):
    """The direct formula of ``_flat_top_kernel``, one cos and one sin per edge sample (the
    falling edge mirrored): what ``flat_top`` uses for complex128 output, and the reference of
    the fast kernel."""
    n = out.shape[0]
    m = _flat_top_edge_samples(rise_samples)
    for k in range(m):
        re, im = _flat_top_edge(rise_samples, beta_samples, k)
        out[k] = complex(re, im)
        out[n - 1 - k] = complex(re, -im)
    flat = complex(1.0, beta_samples * 0.0)
    for k in range(m, n - m):
        out[k] = flat
    return out


@njit(cache=True, nogil=True)
def _cosine_kernel(beta_samples, out):
    """Fill ``out`` (length N): raised cosine (Hann) 0.5 (1 - cos(2 pi t / N)) at t = k + 1/2
    (samples), continuous peak 1 at the centre of the window; Q = beta * dI/dk."""
    n = out.shape[0]
    w = 2.0 * np.pi / n
    for k in range(n):
        t = k + 0.5
        out[k] = complex(0.5 * (1.0 - np.cos(w * t)), beta_samples * 0.5 * w * np.sin(w * t))
    return out


_COMPLEX64 = np.dtype(np.complex64)


def _out(duration_samples: int, dtype) -> np.ndarray:
    if not duration_samples >= 1:
        raise ValueError(f"pulse duration must be >= 1 sample, got {duration_samples}")
    return np.empty(int(duration_samples), dtype=dtype)


def sigma_range(gaussian_samples: float) -> tuple[float, float]:
    """(narrowest, widest) Gaussian sigma (samples) for a Gaussian part of
    ``gaussian_samples`` samples (a pulse's duration minus its flat width): the widest is the
    one whose first sample stands 1e-7 of the peak above the lifted edge."""
    return MIN_SIGMA_SAMPLES, math.sqrt(max(gaussian_samples, 1.0) / (2.0 * _MIN_EDGE_STEP))


def sigma_problem(sigma_samples: float, gaussian_samples: float) -> str | None:
    """Why ``sigma_samples`` cannot shape a Gaussian part of ``gaussian_samples`` samples (see
    :func:`sigma_range`), or None when it can."""
    low, high = sigma_range(gaussian_samples)
    if low <= sigma_samples <= high:
        return None
    why = (" (a wider Gaussian is flat across its window: use a constant or flat-top envelope)"
           if sigma_samples > high else "")
    return (f"Gaussian sigma must be {low:g}..{high:.6g} samples for a Gaussian part of "
            f"{gaussian_samples:g} samples, got {sigma_samples}{why}")


def _check_sigma(sigma_samples: float, gaussian_samples: float) -> float:
    problem = sigma_problem(sigma_samples, gaussian_samples)
    if problem:
        raise ValueError(problem)
    return float(sigma_samples)


def _check_beta(beta_samples: float) -> float:
    if not math.isfinite(beta_samples):
        raise ValueError(f"DRAG beta must be finite, got {beta_samples}")
    return float(beta_samples)


def gaussian_drag(duration_samples: int, sigma_samples: float, beta_samples: float,
                  dtype: type = np.complex64) -> np.ndarray:
    """DRAG envelope (peak 1 on I): Gaussian of width ``sigma_samples`` lifted to zero one sample
    outside the window; Q = ``beta_samples`` x dI/dk, k in samples. ``dtype``: complex64 (the
    waveform table's) or complex128 (full precision)."""
    out = _out(duration_samples, dtype)
    # the recurrence's rounding (~1e-14) is far below float32's; full precision takes the
    # direct formula, one exp per sample
    kernel = _gaussian_drag_kernel if out.dtype is _COMPLEX64 else _gaussian_drag_direct_kernel
    return kernel(_check_sigma(sigma_samples, out.shape[0]), _check_beta(beta_samples), out)


def gaussian_square(duration_samples: int, width_samples: float, sigma_samples: float,
                    beta_samples: float = 0.0, dtype: type = np.complex64) -> np.ndarray:
    """Gaussian-square envelope (peak 1 on I): a flat part of ``width_samples`` in the middle of
    the window, Gaussian flanks of ``sigma_samples`` lifted to zero one sample outside it,
    optional DRAG Q = ``beta_samples`` x dI/dk. Width 0 is ``gaussian_drag``."""
    out = _out(duration_samples, dtype)
    if not 0 <= width_samples <= duration_samples - 1:
        raise ValueError(f"flat width {width_samples} samples must lie in 0..{duration_samples - 1}"
                         f" for a {duration_samples}-sample pulse")
    sigma = _check_sigma(sigma_samples, duration_samples - width_samples)
    return _gaussian_square_kernel(float(width_samples), sigma, _check_beta(beta_samples), out)


def flat_top(duration_samples: int, rise_samples: float, beta_samples: float = 0.0,
             dtype: type = np.complex64) -> np.ndarray:
    """Flat-top envelope (peak 1) with raised-cosine edges of ``rise_samples``; at least one
    sample of the flat top remains, so the peak is exactly 1. Optional DRAG
    Q = ``beta_samples`` x dI/dk (0 gives a real envelope)."""
    out = _out(duration_samples, dtype)
    if not 0 <= 2 * rise_samples <= duration_samples - 1:
        raise ValueError(
            f"rise time {rise_samples} samples: two edges must leave at least one flat sample "
            f"of the {duration_samples}-sample pulse"
        )
    # the rotation's rounding is far below float32's; full precision takes the direct formula
    kernel = _flat_top_kernel if out.dtype is _COMPLEX64 else _flat_top_direct_kernel
    return kernel(float(rise_samples), _check_beta(beta_samples), out)


def cosine(duration_samples: int, beta_samples: float = 0.0,
           dtype: type = np.complex64) -> np.ndarray:
    """Raised-cosine (Hann) envelope over the whole window, continuous peak 1 at its centre;
    optional DRAG Q = ``beta_samples`` x dI/dk."""
    out = _out(duration_samples, dtype)
    return _cosine_kernel(_check_beta(beta_samples), out)




@njit(cache=True, nogil=True)
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


# --------------------------------------------------------------------------- compiler layout

#: Columns of the compiler's effect table (one row per distinct gate on distinct qubits):
#: what an op does, whatever its gate. See ``layout_kernel``.
EFFECT_FIELDS = ("play_port", "wave", "amp", "freq", "length", "phase_qubit", "param_qubit",
                 "shift_qubit_a", "shift_a", "shift_qubit_b", "shift_b", "acq_port",
                 "measure", "phase_offset", "param_sign", "phase_ramp")


@njit(cache=True, nogil=True)
def stable_argsort(key):
    """Indices that sort the int64 array ``key``, equal keys in their original order (what
    ``np.argsort(key, kind="stable")`` returns): a bottom-up merge sort that copies runs
    already in order. numba's own argsort takes ~1.3 s to compile into ``layout_kernel``,
    this ~0.3 s."""
    n = key.size
    idx = np.empty(n, dtype=np.int64)
    for k in range(n):
        idx[k] = k
    tmp = np.empty(n, dtype=np.int64)
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            if mid == hi or key[idx[mid - 1]] <= key[idx[mid]]:
                for k in range(lo, hi):  # the runs are already in order (sorted input: O(n))
                    tmp[k] = idx[k]
                continue
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if key[idx[j]] < key[idx[i]]:  # strict: a tie takes the left run first
                    tmp[k] = idx[j]
                    j += 1
                else:
                    tmp[k] = idx[i]
                    i += 1
                k += 1
            while i < mid:
                tmp[k] = idx[i]
                i += 1
                k += 1
            while j < hi:
                tmp[k] = idx[j]
                j += 1
                k += 1
        idx, tmp = tmp, idx
        width *= 2
    return idx


@njit(cache=True, nogil=True)
def early_kernel(op_effect, op_duration, op_qptr, op_qubits, effects, num_resources):
    """``op_early`` of a circuit without conditional ops (:func:`layout_kernel`'s columns):
    1 for an op in a run of single-qubit ops (gates, delays) on a qubit between a two-qubit
    gate on it and a measurement of it (an op whose effect acquires), as
    ``dynamic.early_runs`` marks a dynamic circuit's rows. A barrier or a zero delay (effect
    0, duration 0) joins the runs of its qubits when each is in one, and does not end them."""
    n = op_effect.shape[0]
    early = np.zeros(n, dtype=np.int64)
    in_run = np.zeros(num_resources, dtype=np.bool_)
    head = np.full(num_resources, -1, dtype=np.int64)  # each qubit's run: a linked list
    tail = np.full(num_resources, -1, dtype=np.int64)
    entry_op = np.empty(op_qubits.shape[0] + 1, dtype=np.int64)
    entry_next = np.empty(op_qubits.shape[0] + 1, dtype=np.int64)
    used = 0
    for i in range(n):
        e = op_effect[i]
        k0, k1 = op_qptr[i], op_qptr[i + 1]
        joins = False
        if e == 0 and op_duration[i] == 0:
            joins = k1 > k0
            for k in range(k0, k1):
                if not in_run[op_qubits[k]]:
                    joins = False
        elif effects[e, 11] >= 0:
            for k in range(k0, k1):
                q = op_qubits[k]
                j = head[q]
                while j >= 0:
                    early[entry_op[j]] = 1
                    j = entry_next[j]
                in_run[q] = False
            continue
        elif k1 - k0 == 1:
            joins = in_run[op_qubits[k0]]
        elif e != 0:
            for k in range(k0, k1):
                q = op_qubits[k]
                in_run[q] = True
                head[q] = -1
                tail[q] = -1
            continue
        else:
            for k in range(k0, k1):
                in_run[op_qubits[k]] = False
            continue
        if joins:
            for k in range(k0, k1):
                q = op_qubits[k]
                entry_op[used] = i
                entry_next[used] = -1
                if tail[q] >= 0:
                    entry_next[tail[q]] = used
                else:
                    head[q] = used
                tail[q] = used
                used += 1
    return early


@njit(cache=True, nogil=True)
def schedule_kernel(op_final, op_duration, op_qptr, op_qubits, op_parent, op_offset, op_early,
                    num_resources, alap, starts):
    """Start sample of every op of one circuit, into ``starts``; returns the total duration
    (samples). ``op_final[i]`` is 1 for a final measurement; the other inputs are
    :func:`layout_kernel`'s. Ops ALAP (``alap``) or ASAP from their durations, per resource;
    every final measurement starts at the end of the gates; a conditional op starts
    ``op_offset[i]`` after its container; with ALAP an op with ``op_early[i]`` then starts as
    soon as the ops before it on its resources have ended."""
    n = op_duration.shape[0]
    avail = np.zeros(num_resources, dtype=np.int64)
    for step in range(n):
        i = n - 1 - step if alap else step
        if op_final[i] != 0 or op_parent[i] >= 0:
            continue
        start = 0
        for j in range(op_qptr[i], op_qptr[i + 1]):
            if avail[op_qubits[j]] > start:
                start = avail[op_qubits[j]]
        end = start + op_duration[i]
        for j in range(op_qptr[i], op_qptr[i + 1]):
            avail[op_qubits[j]] = end
        starts[i] = start
    gates_end = 0
    for q in range(num_resources):
        if avail[q] > gates_end:
            gates_end = avail[q]
    total = gates_end
    for i in range(n):
        if op_final[i] != 0:
            starts[i] = gates_end
            if gates_end + op_duration[i] > total:
                total = gates_end + op_duration[i]
        elif op_parent[i] >= 0:
            starts[i] = starts[op_parent[i]] + op_offset[i]
        elif alap:
            starts[i] = gates_end - starts[i] - op_duration[i]
    if alap and op_early.any():
        ended = np.zeros(num_resources, dtype=np.int64)
        for i in range(n):
            if op_final[i] != 0 or op_parent[i] >= 0:
                continue
            if op_early[i]:
                start = 0
                for j in range(op_qptr[i], op_qptr[i + 1]):
                    if ended[op_qubits[j]] > start:
                        start = ended[op_qubits[j]]
                starts[i] = start
            end = starts[i] + op_duration[i]
            for j in range(op_qptr[i], op_qptr[i + 1]):
                if end > ended[op_qubits[j]]:
                    ended[op_qubits[j]] = end
    return total


@njit(cache=True, nogil=True)
def layout_kernel(op_effect, op_duration, op_param, op_clbit, op_qptr, op_qubits,
                  op_parent, op_offset, op_block, op_early, num_resources, num_device_qubits,
                  alap,
                  effects, num_waves, drive_port,
                  p_start, p_port, p_wave, p_amp, p_phase, p_freq, p_block,
                  a_start, a_port, a_dur, a_freq, a_qubit, a_clbit, wave_order,
                  s_port, s_start, s_phase, s_block):
    """Schedule the ops of one circuit and emit their plays, acquisitions and phase shifts.

    ``op_*`` (one entry per op, in circuit order): effect row, duration (samples), first
    parameter (0 if none), classical bit (-1 if none); the resources of op i are
    ``op_qubits[op_qptr[i]:op_qptr[i + 1]]`` (circuit qubits 0..n-1 first, the qubit of a
    measurement first among its resources; dynamic circuits add one resource per classical
    bit). ``effects`` is a float64 (rows x 16) table with the columns of ``EFFECT_FIELDS``: a
    play on ``play_port`` (< 0: none) of global waveform ``wave`` at ``amp`` and ``freq`` whose
    phase is the frame of ``phase_qubit`` (< 0: 0.0) plus ``phase_offset``, plus
    ``phase_ramp`` (rad per sample) times the play's start sample (each added only when
    non-zero; a pulse gate's frequency changes keep the carrier phase-continuous); before
    it, the frame of ``param_qubit`` (>= 0) is shifted by minus ``param_sign`` (+1 or -1, the
    qubit's drive handedness) times the op's parameter (virtual Z); after it, the frames of
    ``shift_qubit_a`` / ``_b`` by minus ``shift_a`` / ``_b``; an acquisition on ``acq_port``
    (>= 0) of the op's qubit into its clbit; ``measure`` marks final readouts, which all start
    when the last gate has ended.

    Conditional ops (feed-forward): ``op_parent[i]`` >= 0 makes op i a member of the block
    container op ``op_parent[i]`` (an earlier op that occupies the block's resources for the
    longest branch): it starts ``op_offset[i]`` samples after its container and belongs to
    conditional block ``op_block[i]``. Its plays carry that block; its frame changes do not
    touch the tracked (unconditional) frames but become phase shifts on the qubit's drive
    port ``drive_port[q]`` in that block, from the op's start (virtual Z) or end (cz
    corrections), which the controller adds to every later play on the port when the block
    runs. Unconditional ops have ``op_parent`` -1 and ``op_block`` -1.

    Timing: :func:`schedule_kernel` (ALAP or ASAP, final measurements together at the end of
    the gates, ``op_early`` runs early under ALAP: ``dynamic.early_runs``). Frames change in
    circuit order with the same float64 operations as a per-op loop.

    Fills the play columns ``p_*`` (sorted by port, then start; stable), the acquisition
    columns ``a_*`` (circuit order), the phase-shift columns ``s_*`` (circuit order; at least
    twice as long as the number of ops) and ``wave_order`` (local waveform id -> global id, in
    order of first use), each at least as long as the number of ops. Returns (total duration
    of the schedule, plays, acquisitions, local waveforms, end of the last play or
    acquisition, phase shifts).
    """
    n = op_effect.shape[0]
    op_final = np.zeros(n, dtype=np.int64)
    for i in range(n):
        if effects[op_effect[i], 12] != 0.0:
            op_final[i] = 1
    starts = np.zeros(n, dtype=np.int64)
    total = schedule_kernel(op_final, op_duration, op_qptr, op_qubits, op_parent, op_offset,
                            op_early, num_resources, alap, starts)

    frame = np.zeros(num_device_qubits)
    local = np.full(num_waves, -1, dtype=np.int64)
    n_local = 0
    play_op = np.empty(n, dtype=np.int64)
    play_phase = np.empty(n)
    n_play = 0
    n_acq = 0
    n_shift = 0
    last = 0
    for i in range(n):
        e = op_effect[i]
        block = op_block[i]
        param_qubit = int(effects[e, 6])
        if param_qubit >= 0:
            if block < 0:
                frame[param_qubit] -= effects[e, 14] * op_param[i]
            else:
                s_port[n_shift] = drive_port[param_qubit]
                s_start[n_shift] = starts[i]
                s_phase[n_shift] = -(effects[e, 14] * op_param[i])
                s_block[n_shift] = block
                n_shift += 1
        if effects[e, 0] >= 0:
            g = int(effects[e, 1])
            if local[g] < 0:
                local[g] = n_local
                wave_order[n_local] = g
                n_local += 1
            phase_qubit = int(effects[e, 5])
            play_op[n_play] = i
            phase = frame[phase_qubit] if phase_qubit >= 0 else 0.0
            if effects[e, 13] != 0.0:
                phase += effects[e, 13]
            if effects[e, 15] != 0.0:
                phase += effects[e, 15] * starts[i]
            play_phase[n_play] = phase
            if starts[i] + int(effects[e, 4]) > last:
                last = starts[i] + int(effects[e, 4])
            n_play += 1
        for col in (7, 9):
            if effects[e, col] >= 0:
                if block < 0:
                    frame[int(effects[e, col])] -= effects[e, col + 1]
                else:
                    s_port[n_shift] = drive_port[int(effects[e, col])]
                    s_start[n_shift] = starts[i] + op_duration[i]
                    s_phase[n_shift] = -effects[e, col + 1]
                    s_block[n_shift] = block
                    n_shift += 1
        if effects[e, 11] >= 0:
            a_start[n_acq] = starts[i]
            a_port[n_acq] = int(effects[e, 11])
            a_dur[n_acq] = op_duration[i]
            a_freq[n_acq] = effects[e, 3]
            a_qubit[n_acq] = op_qubits[op_qptr[i]]
            a_clbit[n_acq] = op_clbit[i]
            if starts[i] + op_duration[i] > last:
                last = starts[i] + op_duration[i]
            n_acq += 1
    # plays sorted by (port, start), ties in circuit order
    key = np.empty(n_play, dtype=np.int64)
    span = total + 1
    for k in range(n_play):
        i = play_op[k]
        key[k] = int(effects[op_effect[i], 0]) * span + starts[i]
    order = stable_argsort(key)
    for k in range(n_play):
        src = order[k]
        i = play_op[src]
        e = op_effect[i]
        p_start[k] = starts[i]
        p_port[k] = int(effects[e, 0])
        p_wave[k] = local[int(effects[e, 1])]
        p_amp[k] = effects[e, 2]
        p_phase[k] = play_phase[src]
        p_freq[k] = effects[e, 3]
        p_block[k] = op_block[i]
    return total, n_play, n_acq, n_local, last, n_shift


@njit(cache=True, nogil=True)
def layout_batch_kernel(op_effect, op_duration, op_param, op_clbit, op_qptr, op_qubits,
                        op_parent, op_offset, op_block, op_early, num_resources,
                        num_device_qubits, alap,
                        effects, num_waves, drive_port,
                        p_start, p_port, p_wave, p_amp, p_phase, p_freq, p_block,
                        a_start, a_port, a_dur, a_freq, a_qubit, a_clbit, wave_order,
                        s_port, s_start, s_phase, s_block, counts):
    """:func:`layout_kernel` for the points of one circuit structure in one call: row k of
    ``op_effect``, ``op_duration`` and ``op_param`` (points x ops) holds point k's effect rows
    (of ``effects``, which holds every point's), durations (samples) and parameters; every
    other ``op_*`` input is shared. Each output column is a (points x length) array whose row k
    receives point k's column, and ``counts[k]`` (points x 6, int64) what layout_kernel returns
    for it: (total duration, plays, acquisitions, waveforms, end, phase shifts)."""
    for k in range(op_duration.shape[0]):
        total, n_play, n_acq, n_waves, end, n_shift = layout_kernel(
            op_effect[k], op_duration[k], op_param[k], op_clbit, op_qptr, op_qubits, op_parent,
            op_offset, op_block, op_early, num_resources, num_device_qubits, alap, effects,
            num_waves, drive_port, p_start[k], p_port[k], p_wave[k], p_amp[k], p_phase[k],
            p_freq[k], p_block[k], a_start[k], a_port[k], a_dur[k], a_freq[k], a_qubit[k],
            a_clbit[k], wave_order[k], s_port[k], s_start[k], s_phase[k], s_block[k])
        counts[k, 0] = total
        counts[k, 1] = n_play
        counts[k, 2] = n_acq
        counts[k, 3] = n_waves
        counts[k, 4] = end
        counts[k, 5] = n_shift
