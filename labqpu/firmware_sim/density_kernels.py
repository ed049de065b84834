"""The numba kernels of :mod:`labqpu.firmware_sim.density`: in-place passes over the
flattened density matrix (row-major), each checked against a plain numpy reference in
``tests/firmware_sim/test_density_kernels.py``. ``density`` prepares their index tables and
chooses among them; nothing else calls them."""

from __future__ import annotations

import numpy as np
from numba import njit

#: Floating-point licences of the hot kernels: reassociation, contraction into fused
#: multiply-adds, no signed zeros, reciprocals; not "no NaN / no inf", so the compiler may not
#: assume finite values. Results move by rounding only (~1e-16 relative).
FAST_MATH = {"contract", "reassoc", "nsz", "arcp"}


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _group_apply_kernel(x, u, grp_base, grp_ctrl, tgt_off):
    """In place: x -> O x for a conditioned operator on the rows of ``x`` (d, e), returned.

    The rows fall into groups of m = u.shape[1] rows that differ only in the target digits:
    group g holds rows grp_base[g] + tgt_off[t], t = 0..m-1, all with the control index
    grp_ctrl[g], and is mapped by u[grp_ctrl[g]] (``u`` (C, m, m)). Each group reads and
    writes its m rows once: for m = 3 the rows are streamed together, one column's three
    entries at a time; for larger m through a buffer of the m rows (zero entries of u
    skipped)."""
    e = x.shape[1]
    m = u.shape[1]
    if m == 3:
        o0, o1, o2 = tgt_off[0], tgt_off[1], tgt_off[2]
        for g in range(grp_base.size):
            b = grp_base[g]
            c = grp_ctrl[g]
            u00, u01, u02 = u[c, 0, 0], u[c, 0, 1], u[c, 0, 2]
            u10, u11, u12 = u[c, 1, 0], u[c, 1, 1], u[c, 1, 2]
            u20, u21, u22 = u[c, 2, 0], u[c, 2, 1], u[c, 2, 2]
            r0 = x[b + o0]
            r1 = x[b + o1]
            r2 = x[b + o2]
            for k in range(e):
                a0 = r0[k]
                a1 = r1[k]
                a2 = r2[k]
                r0[k] = u00 * a0 + u01 * a1 + u02 * a2
                r1[k] = u10 * a0 + u11 * a1 + u12 * a2
                r2[k] = u20 * a0 + u21 * a1 + u22 * a2
        return x
    rows = np.empty((m, e), dtype=np.complex128)
    for g in range(grp_base.size):  # element loops, not slice assignments: ~7x less to compile
        b = grp_base[g]
        c = grp_ctrl[g]
        for j in range(m):
            src = b + tgt_off[j]
            for k in range(e):
                rows[j, k] = x[src, k]
        for t in range(m):
            dst = b + tgt_off[t]
            for k in range(e):
                x[dst, k] = 0
            for j in range(m):
                coef = u[c, t, j]
                if coef != 0:
                    for k in range(e):
                        x[dst, k] += coef * rows[j, k]
    return x


@njit(cache=True, nogil=True)
def _block_adjoint_kernel(x, rows_of, out):
    """x^dag block by block, written into ``out`` ((d, e), not overlapping ``x``; every entry
    is written): for each spectator level s, the block of rows ``rows_of[s]`` (one per active
    index, e of them) is an (e, e) matrix, replaced by its conjugate transpose. Walks (i, j)
    in 32 x 32 tiles so that rows and columns stay cached."""
    s_dim, a = rows_of.shape
    for s in range(s_dim):
        rs = rows_of[s]
        for i0 in range(0, a, 32):
            i1 = min(i0 + 32, a)
            for j0 in range(0, a, 32):
                j1 = min(j0 + 32, a)
                for i in range(i0, i1):
                    src = x[rs[i]]
                    for j in range(j0, j1):
                        out[rs[j], i] = np.conj(src[j])


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _diagonal_kernel(x, phases, rows_of, level_of_row):
    """In place: x[r, c] *= phases[r] conj(phases[full(r, c)]) on the (d, e) matrix ``x``,
    where full(r, c) = rows_of[level_of_row[r], c] is the basis index of entry (r, c)'s column
    (its row's spectator digits and the active digits c)."""
    d, e = x.shape
    for r in range(d):
        pr = phases[r]
        cols = rows_of[level_of_row[r]]
        row = x[r]
        for c in range(e):
            row[c] *= pr * np.conj(phases[cols[c]])


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _level_maps_kernel(x, maps, held_rows, outer_rows, e):
    """In place: the real 3x3 ``maps[j]`` (k, 3, 3) on the populations of k transmons held
    diagonal, one after the other, in one sweep of the flattened matrix ``x`` (rows of ``e``
    entries, row-major). Row ``o + held_rows[g]`` holds the held levels g (the digits of g in
    base 3, map 0's first) under the other digits ``o`` (``outer_rows``); the maps act on
    each fibre of 3^k rows in turn while it is in cache. The maps are real, so ``x`` may be
    a complex matrix's float64 view (``e`` twice its row length): real and imaginary parts
    go through the same vectorised loop."""
    k = maps.shape[0]
    g_dim = held_rows.shape[0]
    for o in outer_rows:
        for j in range(k):
            m00, m01, m02 = maps[j, 0, 0], maps[j, 0, 1], maps[j, 0, 2]
            m10, m11, m12 = maps[j, 1, 0], maps[j, 1, 1], maps[j, 1, 2]
            m20, m21, m22 = maps[j, 2, 0], maps[j, 2, 1], maps[j, 2, 2]
            step = 3 ** (k - 1 - j)
            for hi in range(0, g_dim, 3 * step):
                for g in range(hi, hi + step):  # the fibre's rows with digit j = 0
                    r0 = (o + held_rows[g]) * e
                    r1 = (o + held_rows[g + step]) * e
                    r2 = (o + held_rows[g + 2 * step]) * e
                    for c in range(e):
                        v0, v1, v2 = x[r0 + c], x[r1 + c], x[r2 + c]
                        x[r0 + c] = m00 * v0 + m01 * v1 + m02 * v2
                        x[r1 + c] = m10 * v0 + m11 * v1 + m12 * v2
                        x[r2 + c] = m20 * v0 + m21 * v1 + m22 * v2


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _band_channel_kernel(x, s, a_dim, b_dim, ca_dim, cb_dim):
    """In place: rho -> S(rho) on one transmon of the flattened density matrix ``x`` (d rows
    of e entries, row-major, d = 3 a_dim b_dim, e = 3 ca_dim cb_dim; the transmon's level is
    the middle digit of a row index (a, level, b) and of a column index (ca, level, cb):
    ``a_dim`` = 3^(row digits before it), ``b_dim`` = 3^(row digits after it), ``ca_dim`` and
    ``cb_dim`` the same for the column digits; equal to a_dim, b_dim for a square matrix).
    ``s`` (9, 9) is the row-major superoperator (entry 3 i + j of vec(rho)) and must conserve
    i - j: only s[3i+j, 3k+l] with i - j = k - l are read (the others must be 0)."""
    e = ca_dim * 3 * cb_dim
    rs = b_dim * e  # one level step of the row index
    cs = cb_dim  # one level step of the column index
    s00, s04, s08 = s[0, 0], s[0, 4], s[0, 8]
    s40, s44, s48 = s[4, 0], s[4, 4], s[4, 8]
    s80, s84, s88 = s[8, 0], s[8, 4], s[8, 8]
    s33, s37, s73, s77 = s[3, 3], s[3, 7], s[7, 3], s[7, 7]
    s11, s15, s51, s55 = s[1, 1], s[1, 5], s[5, 1], s[5, 5]
    s66, s22 = s[6, 6], s[2, 2]
    for a in range(a_dim):
        for b in range(b_dim):
            row = (a * 3 * b_dim + b) * e
            for a2 in range(ca_dim):
                col = row + a2 * 3 * cb_dim
                for b2 in range(cb_dim):
                    k = col + b2
                    x00 = x[k]
                    x11 = x[k + rs + cs]
                    x22 = x[k + 2 * rs + 2 * cs]
                    x10 = x[k + rs]
                    x21 = x[k + 2 * rs + cs]
                    x01 = x[k + cs]
                    x12 = x[k + rs + 2 * cs]
                    x[k] = s00 * x00 + s04 * x11 + s08 * x22
                    x[k + rs + cs] = s40 * x00 + s44 * x11 + s48 * x22
                    x[k + 2 * rs + 2 * cs] = s80 * x00 + s84 * x11 + s88 * x22
                    x[k + rs] = s33 * x10 + s37 * x21
                    x[k + 2 * rs + cs] = s73 * x10 + s77 * x21
                    x[k + cs] = s11 * x01 + s15 * x12
                    x[k + rs + 2 * cs] = s51 * x01 + s55 * x12
                    x[k + 2 * rs] *= s66
                    x[k + 2 * cs] *= s22


@njit(cache=True, nogil=True)
def _zero_at(flat, indices):
    """Whether every entry of ``flat`` at ``indices`` is exactly 0 (NaN is not)."""
    for i in indices:
        v = flat[i]
        if v.real != 0.0 or v.imag != 0.0:
            return False
    return True


@njit(cache=True, nogil=True)
def _band_parts(flat, off_band, populations, coherences, tol):
    """(kind, pop, coh) of a row-major 9x9 superoperator ``flat`` (81 complex), in one call
    where numpy took ~10: kind 0 when an entry at the flat indices ``off_band`` is not 0 (it
    does not conserve i - j; pop and coh are then left unset); otherwise ``pop`` holds the
    real parts of the population weights at ``populations`` (3x3, row-major), ``coh`` the
    entries at ``coherences`` (``_band_real_kernel``'s operands), and kind is 2 when every
    population weight's imaginary part is at most ``tol`` (NaN is not), else 1."""
    pop = np.empty((3, 3))
    coh = np.empty(coherences.size, dtype=np.complex128)
    if not _zero_at(flat, off_band):
        return 0, pop, coh
    kind = 2
    for j in range(populations.size):
        v = flat[populations[j]]
        pop[j // 3, j % 3] = v.real
        if not abs(v.imag) <= tol:
            kind = 1
    for j in range(coherences.size):
        coh[j] = flat[coherences[j]]
    return kind, pop, coh


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _band_real_kernel(x, pop, coh, a_dim, b_dim, ca_dim, cb_dim):
    """``_band_channel_kernel`` for a superoperator whose weights from populations to
    populations are real (every physical channel's are), ~1.4x faster: ``x`` is the float64
    view of the flattened complex matrix (real and imaginary parts interleaved), ``pop`` the
    real 3x3 map of the populations (superoperator rows and columns 0, 4, 8) and ``coh`` the
    10 coherence entries s[3, 3], s[3, 7], s[7, 3], s[7, 7], s[1, 1], s[1, 5], s[5, 1],
    s[5, 5], s[6, 6], s[2, 2] (``BAND_COHERENCES``). The real map acts on the real and the
    imaginary parts alike, in one loop over both."""
    e = ca_dim * 3 * cb_dim
    rs = 2 * b_dim * e  # one level step of the row index, in floats
    cs = 2 * cb_dim  # one level step of the column index, in floats
    p00, p01, p02 = pop[0, 0], pop[0, 1], pop[0, 2]
    p10, p11, p12 = pop[1, 0], pop[1, 1], pop[1, 2]
    p20, p21, p22 = pop[2, 0], pop[2, 1], pop[2, 2]
    a0r, a0i, a1r, a1i = coh[0].real, coh[0].imag, coh[1].real, coh[1].imag
    a2r, a2i, a3r, a3i = coh[2].real, coh[2].imag, coh[3].real, coh[3].imag
    b0r, b0i, b1r, b1i = coh[4].real, coh[4].imag, coh[5].real, coh[5].imag
    b2r, b2i, b3r, b3i = coh[6].real, coh[6].imag, coh[7].real, coh[7].imag
    c0r, c0i, c1r, c1i = coh[8].real, coh[8].imag, coh[9].real, coh[9].imag
    for a in range(a_dim):
        for b in range(b_dim):
            row = 2 * (a * 3 * b_dim + b) * e
            for a2 in range(ca_dim):
                col = row + a2 * 6 * cb_dim
                for k in range(col, col + cs):  # populations: real and imaginary parts alike
                    v0 = x[k]
                    v1 = x[k + rs + cs]
                    v2 = x[k + 2 * rs + 2 * cs]
                    x[k] = p00 * v0 + p01 * v1 + p02 * v2
                    x[k + rs + cs] = p10 * v0 + p11 * v1 + p12 * v2
                    x[k + 2 * rs + 2 * cs] = p20 * v0 + p21 * v1 + p22 * v2
                for k in range(col, col + cs, 2):  # coherences: complex weights
                    ur, ui = x[k + rs], x[k + rs + 1]  # (1, 0) and (2, 1)
                    vr, vi = x[k + 2 * rs + cs], x[k + 2 * rs + cs + 1]
                    x[k + rs] = a0r * ur - a0i * ui + a1r * vr - a1i * vi
                    x[k + rs + 1] = a0r * ui + a0i * ur + a1r * vi + a1i * vr
                    x[k + 2 * rs + cs] = a2r * ur - a2i * ui + a3r * vr - a3i * vi
                    x[k + 2 * rs + cs + 1] = a2r * ui + a2i * ur + a3r * vi + a3i * vr
                    ur, ui = x[k + cs], x[k + cs + 1]  # (0, 1) and (1, 2)
                    vr, vi = x[k + rs + 2 * cs], x[k + rs + 2 * cs + 1]
                    x[k + cs] = b0r * ur - b0i * ui + b1r * vr - b1i * vi
                    x[k + cs + 1] = b0r * ui + b0i * ur + b1r * vi + b1i * vr
                    x[k + rs + 2 * cs] = b2r * ur - b2i * ui + b3r * vr - b3i * vi
                    x[k + rs + 2 * cs + 1] = b2r * ui + b2i * ur + b3r * vi + b3i * vr
                    ur, ui = x[k + 2 * rs], x[k + 2 * rs + 1]  # (2, 0)
                    x[k + 2 * rs] = c0r * ur - c0i * ui
                    x[k + 2 * rs + 1] = c0r * ui + c0i * ur
                    ur, ui = x[k + 2 * cs], x[k + 2 * cs + 1]  # (0, 2)
                    x[k + 2 * cs] = c1r * ur - c1i * ui
                    x[k + 2 * cs + 1] = c1r * ui + c1i * ur


@njit(cache=True, nogil=True, fastmath=FAST_MATH)
def _fibre_channel_kernel(x, e, u, s, mode, theta, rows, row_ctrl, row_col_ctrl, cols,
                          col_ctrl, rs, cs, hermitian):
    """In place: X -> A S(X) B^dag on every 3x3 fibre X of the flattened (d, e) matrix ``x``
    (row-major). The fibres are (rows[i], cols[j]) for every i, j: fibre (r, c) holds the
    entries (r + k rs, c + l cs), k, l the target's row and column levels. A =
    u[row_ctrl[i]] and B = u[row_col_ctrl[i] + col_ctrl[j]] (``u`` (C, 3, 3)), turned by
    exp(i ``theta`` n) (entry (k, l) times exp(i theta (k - l))); ``s`` (9, 9) row-major acts
    on vec(X) first: ``mode`` 0 skips it, 1 applies all of it, 2 only its entries that
    conserve k - l (``BAND_MASK``; the others must be 0).

    ``hermitian``: ``x`` is a Hermitian square matrix, ``rows`` equal ``cols`` and ``rs``
    equals ``cs``, and S preserves Hermiticity (every channel does): only the fibres with
    j >= i are computed, and fibre (j, i) is written as the conjugate transpose of fibre
    (i, j)'s result (about two thirds of the time: the mirror writes are strided; the blocks
    off the diagonal come out exactly Hermitian, those on it to rounding)."""
    w = np.empty(3, dtype=np.complex128)  # element by element: array expressions and slice
    for i in range(3):  # assignments cost seconds to compile
        w[i] = np.exp(1j * theta * float(i))
    ut = np.empty_like(u)
    for c in range(u.shape[0]):
        for i in range(3):
            for j in range(3):
                ut[c, i, j] = u[c, i, j] * w[i] * np.conj(w[j])
    xs = np.empty(9, dtype=np.complex128)
    y = np.empty(9, dtype=np.complex128)
    t = np.empty(9, dtype=np.complex128)
    for fi in range(rows.size):
        a = ut[row_ctrl[fi]]
        for fj in range(fi if hermitian else 0, cols.size):
            base = rows[fi] * e + cols[fj]
            for i in range(3):
                for j in range(3):
                    xs[3 * i + j] = x[base + i * rs * e + j * cs]
            if mode == 2:  # entry 3 k + l of vec(X) only from entries with the same k - l
                for k in (0, 4, 8):
                    y[k] = s[k, 0] * xs[0] + s[k, 4] * xs[4] + s[k, 8] * xs[8]
                for k in (1, 5):
                    y[k] = s[k, 1] * xs[1] + s[k, 5] * xs[5]
                for k in (3, 7):
                    y[k] = s[k, 3] * xs[3] + s[k, 7] * xs[7]
                y[2] = s[2, 2] * xs[2]
                y[6] = s[6, 6] * xs[6]
            elif mode == 1:
                for k in range(9):
                    acc = 0j
                    for m in range(9):
                        acc += s[k, m] * xs[m]
                    y[k] = acc
            else:
                for k in range(9):
                    y[k] = xs[k]
            b = ut[row_col_ctrl[fi] + col_ctrl[fj]]
            for i in range(3):  # t = A Y
                for j in range(3):
                    t[3 * i + j] = a[i, 0] * y[j] + a[i, 1] * y[3 + j] + a[i, 2] * y[6 + j]
            for i in range(3):  # A Y B^dag
                for j in range(3):
                    y[3 * i + j] = (t[3 * i] * np.conj(b[j, 0]) + t[3 * i + 1] * np.conj(b[j, 1])
                                    + t[3 * i + 2] * np.conj(b[j, 2]))
                    x[base + i * rs * e + j * cs] = y[3 * i + j]
            if hermitian and fj != fi:  # the mirror fibre (fj, fi): the conjugate transpose
                mirror = rows[fj] * e + cols[fi]
                for i in range(3):
                    for j in range(3):
                        x[mirror + i * rs * e + j * cs] = np.conj(y[3 * j + i])
