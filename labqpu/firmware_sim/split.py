"""Split-step propagation of a cluster block in which several coupled qubits are driven.

In a cluster's common frame (every qubit rotating at one frequency f_ref) the Hamiltonian of
a sample is H(t) = H_s + V(t): H_s (the transmons' frequencies at that sample's flux, their
anharmonicities, the exchange couplings and the dressing correction) conserves the total
excitation number N, and the drives V(t) = sum_q (1/2)(z_q e^{-i 2 pi (f_q - f_ref) t} a_q^dag
+ h.c.) rotate (z_q constant over the sample in qubit q's own frame f_q). With two or more
driven qubits no frame makes every drive constant, so the sample is cut into ``sub`` steps of
length tau = 1 / (f_s sub), each propagated by the symmetric (Strang) split

    exp(-i 2 pi H_s tau / 2) exp(-i 2 pi V(t_m) tau) exp(-i 2 pi H_s tau / 2)

with V taken at the step's midpoint t_m. exp(H_s) is exact and cheap (H_s is block-diagonal
in N: blocks of at most 19 states on four transmons); exp(V) is a product of one 3x3
exponential per driven qubit (drives on different transmons commute). The split's error is
second order in tau and independent of f_ref (exp(H_s) carries each qubit's frame exactly);
a step costs one 3^k x 3^k product instead of one 3^k x 3^k diagonalisation.

:func:`split_step_adaptive` doubles ``sub`` until two successive propagators differ by at most
3 ``tol`` (max over entries): for a second-order method the finer one is then within ~``tol``
of the converged propagator (Richardson: err(2s) ~ |U(s) - U(2s)| / 3).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from labqpu.firmware_sim.density import _excitation_blocks, _ladder

#: Largest estimated error (max over entries) of a split-step cluster propagator.
SPLIT_TOL = 1e-5
#: Most sub-steps per driven sample :func:`split_step_adaptive` tries (a drive strong or fast
#: enough to need more is propagated at this many, its estimate above ``SPLIT_TOL``).
SPLIT_MAX_SUBSTEPS = 256


@lru_cache(maxsize=8)
def _block_indices(k: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """For each excitation block of ``k`` transmons: its basis indices and the flat indices
    of its entries in a 3^k x 3^k matrix (row-major)."""
    d = 3**k
    return tuple((idx, (idx[:, None] * d + idx[None, :]).ravel())
                 for idx in _excitation_blocks(k))


def _exponentials(const_hz: np.ndarray, diag_hz: np.ndarray, k: int
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(flat indices, energies (Hz), eigenvectors) of each excitation block of
    ``const_hz + diag(diag_hz)`` on ``k`` transmons."""
    out = []
    flat_const = const_hz.ravel()
    for idx, flat in _block_indices(k):
        block = flat_const[flat].reshape(idx.size, idx.size)
        block[np.diag_indices(idx.size)] += diag_hz[idx]
        e, w = np.linalg.eigh(block)
        out.append((flat, e, w))
    return out


def _static_step(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], d: int, t_s: float
                 ) -> np.ndarray:
    """exp(-i 2 pi H_s t) from its excitation blocks (``_exponentials``), dense d x d."""
    u = np.zeros(d * d, dtype=np.complex128)
    for flat, e, w in parts:
        u[flat] = ((w * np.exp(-2j * np.pi * e * t_s)) @ w.conj().T).ravel()
    return u.reshape(d, d)


def _drive_steps(z_hz: complex, offset_hz: float, t0_samples: float, fs_hz: float, sub: int
                 ) -> np.ndarray:
    """exp(-i 2 pi V_q(t_m) tau) on one transmon (3x3) for the ``sub`` midpoints t_m of a sample
    starting at ``t0_samples``: V_q = (1/2)(w a^dag + w* a), w = z exp(-i 2 pi offset t)."""
    t = (t0_samples + (np.arange(sub) + 0.5) / sub) / fs_hz
    w = z_hz * np.exp(-2j * np.pi * offset_hz * t)
    a = _ladder()
    h = 0.5 * (w[:, None, None] * a.T[None] + np.conj(w)[:, None, None] * a[None])
    e, v = np.linalg.eigh(h)
    phase = np.exp(-2j * np.pi * e / (fs_hz * sub))
    return (v * phase[:, None, :]) @ np.conj(np.swapaxes(v, 1, 2))


@njit(cache=True, nogil=True)
def _split_sample_kernel(u, half, full, ops, positions):
    """One driven sample of split steps applied to ``u`` (d x d, C order, d = 3^k):
    half (D_{s-1} full ... full D_1 full D_0) half, with D_m the product over l of the 3x3
    ``ops[m, l]`` acting on transmon ``positions[l]`` (first most significant) and s =
    ``ops.shape[0]``. Returns the new d x d array."""
    d = u.shape[0]
    u = half @ u
    sub = ops.shape[0]
    for m in range(sub):
        for j in range(positions.size):
            e = ops[m, j]
            stride = d
            span = 1
            for _ in range(positions[j] + 1):
                stride //= 3
            for _ in range(positions[j]):
                span *= 3
            x = u.reshape(span, 3, stride * d)
            for a in range(span):
                for b in range(stride * d):
                    v0 = x[a, 0, b]
                    v1 = x[a, 1, b]
                    v2 = x[a, 2, b]
                    x[a, 0, b] = e[0, 0] * v0 + e[0, 1] * v1 + e[0, 2] * v2
                    x[a, 1, b] = e[1, 0] * v0 + e[1, 1] * v1 + e[1, 2] * v2
                    x[a, 2, b] = e[2, 0] * v0 + e[2, 1] * v1 + e[2, 2] * v2
        u = (full if m < sub - 1 else half) @ u
    return u


def split_step_unitary(const_hz: np.ndarray, diag_hz: np.ndarray,
                       drives: list[tuple[int, np.ndarray, float]], b0: int, fs_hz: float,
                       k: int, sub: int, parts: dict[bytes, list] | None = None
                       ) -> np.ndarray:
    """Propagator of ``k`` coupled transmons over the samples of ``diag_hz`` (module docstring).

    ``const_hz`` (3^k x 3^k, Hz) is the sample-independent, excitation-conserving part of H_s;
    ``diag_hz`` (samples x 3^k, Hz) its diagonal per sample (the frequencies in the common
    frame). ``drives`` holds (position, z per sample in Hz in that qubit's frame, f_q - f_ref
    in Hz); the first sample is sample ``b0`` of the program (it sets the drives' phases in the
    common frame). Samples with a drive take ``sub`` split steps, the others one exact step
    (consecutive ones with the same diagonal together). ``parts`` keeps the excitation blocks'
    eigendecompositions by diagonal across calls on the same ``const_hz``.
    """
    n_samples, d = diag_hz.shape
    driven = np.zeros(n_samples, dtype=bool)
    for _, z, _ in drives:
        driven |= z != 0
    parts = {} if parts is None else parts
    u = np.eye(d, dtype=np.complex128)
    s = 0
    while s < n_samples:
        row = diag_hz[s]
        key = row.tobytes()
        if key not in parts:
            parts[key] = _exponentials(const_hz, row, k)
        if not driven[s]:
            end = s + 1
            while end < n_samples and not driven[end] and np.array_equal(diag_hz[end], row):
                end += 1
            u = _static_step(parts[key], d, (end - s) / fs_hz) @ u
            s = end
            continue
        tau = 1.0 / (fs_hz * sub)
        half = _static_step(parts[key], d, 0.5 * tau)
        full = half @ half
        local = [(pos, _drive_steps(z[s], off, b0 + s, fs_hz, sub))
                 for pos, z, off in drives if z[s] != 0]
        ops = np.ascontiguousarray(np.stack([op for _, op in local], axis=1))
        positions = np.array([pos for pos, _ in local], dtype=np.int64)
        u = _split_sample_kernel(u, half, full, ops, positions)
        s += 1
    return u


def split_step_adaptive(const_hz: np.ndarray, diag_hz: np.ndarray,
                        drives: list[tuple[int, np.ndarray, float]], b0: int, fs_hz: float,
                        k: int, tol: float = SPLIT_TOL) -> tuple[np.ndarray, int]:
    """(propagator, sub-steps per driven sample) of :func:`split_step_unitary`, doubling the
    sub-steps from 2 until the propagator moves by at most 3 ``tol`` (max over entries), or
    :data:`SPLIT_MAX_SUBSTEPS` is reached (from 2: at 1 sub-step the error can still be far
    from its second-order behaviour, and two coarse propagators could agree by chance)."""
    sub = 2
    parts: dict[bytes, list] = {}
    u = split_step_unitary(const_hz, diag_hz, drives, b0, fs_hz, k, sub, parts)
    while 2 * sub <= SPLIT_MAX_SUBSTEPS:
        finer = split_step_unitary(const_hz, diag_hz, drives, b0, fs_hz, k, 2 * sub, parts)
        sub *= 2
        converged = np.abs(finer - u).max() <= 3.0 * tol
        u = finer
        if converged:
            break
    return u, sub
