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
a step costs one 3x3 product per driven transmon on the propagator's rows and one product by
the blocks of exp(H_s) (the rows are kept sorted by N, so each block is a contiguous slice:
on four transmons ~1/6 of a dense 81 x 81 product), instead of one 3^k x 3^k
diagonalisation.

The split's error has only even powers of tau (the step is symmetric in time), so the
Richardson combination R(s) = (4 U(2s) - U(s)) / 3 of the propagators at ``s`` and ``2s``
sub-steps is fourth order (:func:`split_step_extrapolated`); one Newton-Schulz step makes it
unitary again (its departure from unitarity is of the order of its error; after the step, of
that squared). :func:`split_step_adaptive` doubles ``s`` from 2 until R(s) is within ``tol`` of
R(2s) (max over entries; R(2s) is ~16x closer to the converged propagator, so the difference
is R(s)'s error). Two 15 MHz pulses on three coupled transmons need s = 2 (six sub-steps per
sample) where the split alone needed 32 for the same error.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit
from scipy.linalg import blas

from labqpu.firmware_sim.density import _excitation_blocks
from labqpu.firmware_sim.density_kernels import FAST_MATH

#: Largest estimated error (max over entries) of a split-step cluster propagator.
SPLIT_TOL = 1e-5
#: Most sub-steps per driven sample :func:`split_step_adaptive` tries (a drive strong or fast
#: enough to need more is propagated at half this many and this many, extrapolated, its
#: estimate above ``SPLIT_TOL``).
SPLIT_MAX_SUBSTEPS = 256
#: Most bytes of arrays a :class:`SplitParts` keeps (on four transmons ~18 KB per sample
#: diagonal and as much per step length used with it).
SPLIT_PARTS_BYTES = 4 * 2**20
#: Most sub-steps' drive exponentials computed together (~160 B each per driven transmon).
DRIVE_STEPS_AT_ONCE = 4096


@lru_cache(maxsize=8)
def _excitation_order(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, offsets) of ``k`` transmons: the basis states sorted by excitation
    number (``order[i]`` is the state at row i), where each excitation block of the rows
    starts, and where each block's matrix starts in a concatenation of the blocks' row-major
    matrices (``_step_blocks``). Read-only."""
    blocks = _excitation_blocks(k)
    order = np.concatenate(blocks)
    sizes = np.array([b.size for b in blocks], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    offsets = np.concatenate([[0], np.cumsum(sizes**2)])
    for x in (order, starts, offsets):
        x.flags.writeable = False
    return order, starts, offsets


@lru_cache(maxsize=32)
def _level_rows(k: int, pos: int) -> np.ndarray:
    """Rows (in ``_excitation_order``) of transmon ``pos``'s levels 0, 1 and 2, one triple
    per configuration of the other transmons: shape (3^(k-1), 3). Read-only."""
    order = _excitation_order(k)[0]
    row_of = np.empty_like(order)
    row_of[order] = np.arange(order.size)
    states = np.arange(3**k).reshape(3**pos, 3, -1)  # [higher digits, level, lower digits]
    rows = row_of[np.moveaxis(states, 1, -1).reshape(-1, 3)]
    rows.flags.writeable = False
    return rows


def _exponentials(const_hz: np.ndarray, diag_hz: np.ndarray, k: int
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(energies (Hz), eigenvectors) of each excitation block of ``const_hz + diag(diag_hz)``
    on ``k`` transmons, in ``_excitation_order``."""
    out = []
    for idx in _excitation_blocks(k):
        block = const_hz[np.ix_(idx, idx)].astype(np.complex128)
        block[np.diag_indices(idx.size)] += diag_hz[idx]
        out.append(np.linalg.eigh(block))
    return out


def _step_blocks(parts: list[tuple[np.ndarray, np.ndarray]], t_s: float) -> np.ndarray:
    """exp(-i 2 pi H_s t) from its excitation blocks (``_exponentials``): the blocks'
    row-major matrices, concatenated (``_excitation_order``'s offsets)."""
    return np.concatenate([((w * np.exp(-2j * np.pi * e * t_s)) @ w.conj().T).ravel()
                           for e, w in parts])


@njit(cache=True, nogil=True)
def _drive_steps(z_hz, offset_hz, t0_samples, fs_hz, sub):
    """exp(-i 2 pi V_q(t_m) tau) on one transmon (3x3) for the ``sub`` midpoints t_m of each
    sample starting at ``t0_samples`` (float, samples), shape (samples, sub, 3, 3): V_q =
    (1/2)(w a^dag + w* a), w = z exp(-i 2 pi offset t), with z (Hz, complex) the sample's
    ``z_hz``. In closed form: V_q's eigenvalues are 0 and +-lam, lam = (sqrt(3) / 2) |w|, so
    V_q^3 = lam^2 V_q and exp(-i x V_q) = 1 - i (sin(x lam) / lam) V_q
    + ((cos(x lam) - 1) / lam^2) V_q^2."""
    n = z_hz.size
    out = np.zeros((n, sub, 3, 3), dtype=np.complex128)
    x = 2.0 * np.pi / (fs_hz * sub)
    r2 = np.sqrt(2.0)
    for s in range(n):
        for m in range(sub):
            angle = -2.0 * np.pi * offset_hz * (t0_samples[s] + (m + 0.5) / sub) / fs_hz
            w = z_hz[s] * complex(np.cos(angle), np.sin(angle))
            e = out[s, m]
            e[0, 0] = 1.0
            e[1, 1] = 1.0
            e[2, 2] = 1.0
            w2 = w.real * w.real + w.imag * w.imag
            if w2 == 0.0:
                continue
            lam = np.sqrt(0.75 * w2)
            c1 = -1j * np.sin(x * lam) / lam  # times V_q = (1/2)(w a^dag + w* a)
            half_sin = np.sin(0.5 * x * lam)  # cos(x lam) - 1 = -2 sin^2(x lam / 2)
            c2 = -2.0 * half_sin * half_sin / (lam * lam)  # times V_q^2
            wc = w.conjugate()
            e[1, 0] = c1 * 0.5 * w
            e[0, 1] = c1 * 0.5 * wc
            e[2, 1] = c1 * 0.5 * r2 * w
            e[1, 2] = c1 * 0.5 * r2 * wc
            e[0, 0] += c2 * 0.25 * w2
            e[1, 1] += c2 * 0.75 * w2
            e[2, 2] += c2 * 0.5 * w2
            e[0, 2] = c2 * 0.25 * r2 * wc * wc
            e[2, 0] = c2 * 0.25 * r2 * w * w
    return out


@njit(cache=True, nogil=True)
def _apply_blocks(u, data, starts, offsets):
    """u -> B u in place for the block-diagonal B whose blocks (rows ``starts[b]`` to
    ``starts[b + 1]``) are row-major in ``data`` from ``offsets[b]``."""
    for b in range(starts.size - 1):
        s = starts[b]
        n = starts[b + 1] - s
        block = data[offsets[b]:offsets[b] + n * n].reshape(n, n)
        u[s:s + n] = block @ u[s:s + n]


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _split_sample_kernel(u, first, full, starts, offsets, ops, rows):
    """One driven sample of split steps applied to ``u`` (d x d, C order, d = 3^k, rows in
    ``_excitation_order``) but for its last half step: (D_{s-1} full ... full D_1 full D_0)
    first, with ``first`` (the sample's first half step, or that merged with the previous
    sample's last) and ``full`` block-diagonal (``_apply_blocks``) and D_m the product over l
    of the 3x3 ``ops[m, l]`` acting on the rows ``rows[l]`` ((3^(k-1), 3) per driven
    transmon, ``_level_rows``); s = ``ops.shape[0]``. In place."""
    d = u.shape[1]
    _apply_blocks(u, first, starts, offsets)
    sub = ops.shape[0]
    for m in range(sub):
        for j in range(rows.shape[0]):
            e = ops[m, j]
            for g in range(rows.shape[1]):
                r0, r1, r2 = rows[j, g, 0], rows[j, g, 1], rows[j, g, 2]
                for c in range(d):
                    v0 = u[r0, c]
                    v1 = u[r1, c]
                    v2 = u[r2, c]
                    u[r0, c] = e[0, 0] * v0 + e[0, 1] * v1 + e[0, 2] * v2
                    u[r1, c] = e[1, 0] * v0 + e[1, 1] * v1 + e[1, 2] * v2
                    u[r2, c] = e[2, 0] * v0 + e[2, 1] * v1 + e[2, 2] * v2
        if m < sub - 1:
            _apply_blocks(u, full, starts, offsets)


class SplitParts:
    """What split steps on one ``const_hz`` keep across calls, by the diagonal of a sample
    (its bytes): the excitation blocks' eigendecompositions (``_exponentials``) and the
    blocks of exp(-i 2 pi H_s t) for the step lengths t used (``_step_blocks``). Bounded:
    cleared when its arrays reach :data:`SPLIT_PARTS_BYTES`."""

    def __init__(self) -> None:
        self._rows: dict[bytes, tuple[list, dict[float, np.ndarray]]] = {}
        #: Bytes of the arrays held.
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    def step(self, const_hz: np.ndarray, row_hz: np.ndarray, k: int, t_s: float
             ) -> np.ndarray:
        """``_step_blocks`` of ``const_hz + diag(row_hz)`` on ``k`` transmons for ``t_s``."""
        key = row_hz.tobytes()
        hit = self._rows.get(key)
        if hit is not None and t_s in hit[1]:
            return hit[1][t_s]
        eig = _exponentials(const_hz, row_hz, k) if hit is None else hit[0]
        blocks = _step_blocks(eig, t_s)
        eig_bytes = sum(e.nbytes + w.nbytes for e, w in eig)
        added = blocks.nbytes + (eig_bytes if hit is None else 0)
        if self.nbytes + added > SPLIT_PARTS_BYTES:  # start over with this row and length
            self._rows.clear()
            self.nbytes, hit, added = 0, None, blocks.nbytes + eig_bytes
        if hit is None:
            hit = self._rows[key] = (eig, {})
        hit[1][t_s] = blocks
        self.nbytes += added
        return blocks


def split_step_unitary(const_hz: np.ndarray, diag_hz: np.ndarray,
                       drives: list[tuple[int, np.ndarray, float]], b0: int, fs_hz: float,
                       k: int, sub: int, parts: SplitParts | None = None) -> np.ndarray:
    """Propagator of ``k`` coupled transmons over the samples of ``diag_hz`` (module docstring).

    ``const_hz`` (3^k x 3^k, Hz) is the sample-independent, excitation-conserving part of H_s;
    ``diag_hz`` (samples x 3^k, Hz) its diagonal per sample (the frequencies in the common
    frame). ``drives`` holds (position, z per sample in Hz in that qubit's frame, f_q - f_ref
    in Hz); the first sample is sample ``b0`` of the program (it sets the drives' phases in the
    common frame). Samples with a drive take ``sub`` split steps, the others one exact step
    (consecutive ones with the same diagonal together). ``parts`` keeps exp(H_s)'s blocks
    across calls on the same ``const_hz``. The propagator is carried with its rows in
    ``_excitation_order``, where exp(H_s) acts block by block.
    """
    n_samples, d = diag_hz.shape
    driven = np.zeros(n_samples, dtype=bool)
    for _, z, _ in drives:
        driven |= z != 0
    parts = SplitParts() if parts is None else parts
    order, starts, offsets = _excitation_order(k)
    tau = 1.0 / (fs_hz * sub)
    samples = np.flatnonzero(driven)
    chunk = max(1, DRIVE_STEPS_AT_ONCE // sub)  # driven samples whose drive steps are computed
    steps: list = []  # together: (rows, on, steps) per drive for samples[first:first + chunk]
    first = -chunk
    u = np.eye(d, dtype=np.complex128)[order]
    pending = None  # the diagonal of the last driven sample, whose last half step is owed
    s = 0
    while s < n_samples:
        row = diag_hz[s]
        merge = driven[s] and pending is not None and np.array_equal(pending, row)
        if pending is not None and not merge:
            _apply_blocks(u, parts.step(const_hz, pending, k, 0.5 * tau), starts, offsets)
            pending = None
        if not driven[s]:
            end = s + 1
            while end < n_samples and not driven[end] and np.array_equal(diag_hz[end], row):
                end += 1
            _apply_blocks(u, parts.step(const_hz, row, k, (end - s) / fs_hz), starts, offsets)
            s = end
            continue
        i = int(np.searchsorted(samples, s))
        if i >= first + chunk:
            first = i
            part = samples[first:first + chunk]
            steps = [(_level_rows(k, pos), z[part] != 0,
                      _drive_steps(z[part], off, b0 + part.astype(float), fs_hz, sub))
                     for pos, z, off in drives]
        local = [(rows, ops[i - first]) for rows, on, ops in steps if on[i - first]]
        # the last half step of the sample before, with the same diagonal, joins this one's
        # first: one full step
        _split_sample_kernel(
            u, parts.step(const_hz, row, k, tau if merge else 0.5 * tau),
            parts.step(const_hz, row, k, tau), starts, offsets,
            np.ascontiguousarray(np.stack([op for _, op in local], axis=1)),
            np.stack([rows for rows, _ in local]))
        pending = row
        s += 1
    if pending is not None:
        _apply_blocks(u, parts.step(const_hz, pending, k, 0.5 * tau), starts, offsets)
    out = np.empty_like(u)
    out[order] = u
    return out


def split_step_extrapolated(const_hz: np.ndarray, diag_hz: np.ndarray,
                            drives: list[tuple[int, np.ndarray, float]], b0: int, fs_hz: float,
                            k: int, sub: int, parts: SplitParts | None = None) -> np.ndarray:
    """The Richardson extrapolation (4 U(2 ``sub``) - U(``sub``)) / 3 of
    :func:`split_step_unitary` (arguments as there), made unitary (module docstring)."""
    parts = SplitParts() if parts is None else parts
    coarse = split_step_unitary(const_hz, diag_hz, drives, b0, fs_hz, k, sub, parts)
    fine = split_step_unitary(const_hz, diag_hz, drives, b0, fs_hz, k, 2 * sub, parts)
    return _unitarised(_richardson(coarse, fine))


def _richardson(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """(4 fine - coarse) / 3: the fourth-order combination of two split propagators whose
    sub-steps differ by a factor 2 (a new array)."""
    out = fine * (4.0 / 3.0)
    out -= coarse * (1.0 / 3.0)
    return out


def _unitarised(u: np.ndarray) -> np.ndarray:
    """One Newton-Schulz step towards the unitary polar factor of ``u``: u (3 - u^dag u) / 2,
    whose departure from unitarity is the square of ``u``'s (to leading order). The Hermitian
    3 - u^dag u by ``zherk`` (half a product) and the product with it by ``zhemm``."""
    gram = blas.zherk(-0.5, u, trans=2)  # -u^dag u / 2, its upper triangle
    gram[np.diag_indices_from(gram)] += 1.5
    return np.ascontiguousarray(blas.zhemm(1.0, gram, u, side=1))


def split_step_adaptive(const_hz: np.ndarray, diag_hz: np.ndarray,
                        drives: list[tuple[int, np.ndarray, float]], b0: int, fs_hz: float,
                        k: int, tol: float = SPLIT_TOL, parts: SplitParts | None = None
                        ) -> tuple[np.ndarray, int]:
    """(propagator, sub) of :func:`split_step_extrapolated` (``parts`` as there) at the first
    ``sub`` from 2 (doubling) whose extrapolation is within ``tol`` of the one at 2 ``sub``
    (max over entries), or at the last ``sub`` for which the finest split tried has at most
    :data:`SPLIT_MAX_SUBSTEPS` sub-steps (from 2: at 1 sub-step the error can still be far from
    its asymptotic behaviour, and two coarse propagators could agree by chance). Later
    propagations of the same shape at ``sub`` give the same operator as this one."""
    sub = 2
    parts = SplitParts() if parts is None else parts

    def split(s: int) -> np.ndarray:
        return split_step_unitary(const_hz, diag_hz, drives, b0, fs_hz, k, s, parts)

    upper = split(2 * sub)
    current = _richardson(split(sub), upper)
    while 4 * sub <= SPLIT_MAX_SUBSTEPS:
        finest = split(4 * sub)
        finer = _richardson(upper, finest)
        if np.abs(finer - current).max() <= tol:
            break
        sub, upper, current = 2 * sub, finest, finer
    return _unitarised(current), sub
