"""Exact per-sample propagators of one three-level transmon, in numba without LAPACK.

H_k/h = diag(0, d_k, 2 d_k + alpha) + (1/2)(z_k a^dag + z_k* a) per sample k (Hz). The two
ladder couplings share the phase p_k = z_k/|z_k|, so with R_k = diag(1, p_k, p_k^2) and
s_k = d_k + alpha/3, H_k = s_k + R_k M_k R_k^dag, where M_k is traceless, real, symmetric and
tridiagonal: diagonal (q0, q1, q2) = (-d_k - alpha/3, -alpha/3, d_k + 2 alpha/3), couplings
b = |z_k|/2 and c = |z_k|/sqrt(2). With tau = 2 pi dt:

* Eigenvalues x0 <= x1 <= x2 of M_k in closed form (trigonometric Cardano): x_j =
  2 sqrt(p) cos(phi + 2 pi j/3) with p = tr(M^2)/6 and phi = acos(det M / (2 p^1.5)) / 3.
* exp(-i tau M) by Newton's interpolation on those eigenvalues, with no eigenvectors:
  f(x0) I + f[x0, x1] (M - x0) + f[x0, x1, x2] (M - x0)(M - x1), f(x) = exp(-i tau x). The
  first divided differences are -i tau exp(-i tau (x + y)/2) sinc(tau (y - x)/2), exact also
  when two eigenvalues coincide (zero drive on resonance); the second divides by the largest
  gap x2 - x0 >= 3 sqrt(p). Why no fallback is needed near degeneracy: Cardano's eigenvalues
  of a nearly double root are off by O(sqrt(ulp)) each, but they are exact roots of a
  characteristic polynomial perturbed by O(ulp p^1.5), and the interpolant's error is that
  perturbation times a third divided difference (<= tau^3/6); an error e in a divided
  difference of order j meets a matrix factor of norm <= (x2 - x0)^j, so the relative error
  of e ~ ulp/(tau (x2 - x0)) in the second one costs only ulp tau (x2 - x0). Every entry is
  thus accurate to a few ulp times a low power of (1 + tau |M|), degenerate or not. Tests
  check 1e-12 against ``scipy.linalg.expm`` on degenerate, near-degenerate, tiny, large and
  random cases.
* Cosines, sines and acos are Taylor polynomials (|error| < 1e-17 before rounding) instead of
  libm calls, so the per-sample work is branch-free and numba/LLVM vectorises it: samples are
  processed in chunks of ``CHUNK``, first every propagator of a chunk (SIMD), then their
  ordered product (scalar). The product carries R_k^dag U, so consecutive drive phases enter as
  the diagonal R_k^dag R_(k-1) folded into each propagator; sum_k s_k enters once, as a
  compensated sum, at the end.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import njit

#: Samples per chunk of vectorised work (one scratch buffer of ``ROWS * STRIDE`` floats).
CHUNK = 64
STRIDE = CHUNK  # a power of two: row distances must not defeat LLVM's vectoriser
#: Scratch rows: |z|, detuning, drive-phase step w (re, im), the nine entries of each folded
#: propagator (re, im), tau sqrt(p) for the range check, the drive phase p_k (re, im), and
#: (row ROW_LAST) the phase of the sample before the chunk on entry, of its last on return.
ROW_R, ROW_D, ROW_WR, ROW_WI, ROW_V, ROW_SCALE, ROW_PR, ROW_PI, ROW_LAST = (
    0, 1, 2, 3, 4, 22, 23, 24, 25)
ROWS = 26
#: Largest |angle| (rad) the argument reduction of :func:`_cos_sin` handles exactly: k pi/2
#: with |k| < 2^21 (see PIO2_HI). A sample's angles are at most sqrt(3) tau sqrt(p), and
#: samples with tau sqrt(p) > MAX_ANGLE / 2 are refused (:func:`_check_range`).
MAX_ANGLE = 1e6
SQRT3 = math.sqrt(3.0)
SQRT_HALF = math.sqrt(0.5)
#: pi/2 in two parts: HI is pi/2 rounded to 32 significant bits (k * HI is exact for
#: |k| < 2^21), LO = pi/2 - HI rounded to float64 (their sum is pi/2 to ~1e-27).
PIO2_HI = 1.5707963267341256
PIO2_LO = 6.077100506506192e-11
#: Taylor coefficients of sin (y^3 .. y^17) and cos (y^2 .. y^18): on |y| <= pi/3 the omitted
#: terms are below 3e-17 and 1e-18 (|y| <= pi/4 after argument reduction: 1e-19, 1e-20).
SIN_TAYLOR = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(1, 9))
COS_TAYLOR = tuple((-1) ** k / math.factorial(2 * k) for k in range(1, 10))
#: Taylor coefficients of asin, highest first (u^49 .. u^3), (2n)! / (4^n n!^2 (2n + 1)); for
#: u <= 1/2 the omitted tail is below 2e-18.
ASIN_TAYLOR = tuple(float(Fraction(math.factorial(2 * n), 4 ** n * math.factorial(n) ** 2
                                   * (2 * n + 1))) for n in range(24, 0, -1))
FASTMATH = {"contract"}  # fused multiply-add only: no reassociation, no approximations


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def _sin_poly(y, y2):
    """sin(y) for |y| <= pi/3 (rad), ``y2`` = y*y."""
    s1, s2, s3, s4, s5, s6, s7, s8 = SIN_TAYLOR
    return y + y * y2 * (s1 + y2 * (s2 + y2 * (s3 + y2 * (s4 + y2 * (s5 + y2 * (s6 + y2 * (
        s7 + y2 * s8)))))))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def _cos_poly(y2):
    """cos(y) for |y| <= pi/3 (rad), from ``y2`` = y*y."""
    c1, c2, c3, c4, c5, c6, c7, c8, c9 = COS_TAYLOR
    return 1.0 + y2 * (c1 + y2 * (c2 + y2 * (c3 + y2 * (c4 + y2 * (c5 + y2 * (c6 + y2 * (
        c7 + y2 * (c8 + y2 * c9))))))))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def _cos_sin(x):
    """(cos x, sin x) for |x| <= MAX_ANGLE (rad), within ~1 ulp, without branches.

    x = k pi/2 + y with |y| <= pi/4 (k * PIO2_HI exact), then the polynomials and the quadrant.
    """
    k = np.rint(x * (2.0 / np.pi))
    y = (x - k * PIO2_HI) - k * PIO2_LO
    y2 = y * y
    s = _sin_poly(y, y2)
    c = _cos_poly(y2)
    q = np.int64(k)
    odd = (q & 1) != 0
    cos_x = s if odd else c
    sin_x = c if odd else s
    cos_x = -cos_x if ((q + 1) & 2) != 0 else cos_x
    sin_x = -sin_x if (q & 2) != 0 else sin_x
    return cos_x, sin_x


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def _acos(t):
    """acos(t) (rad) for t in [-1, 1], absolute error a few ulp, without branches.

    |t| <= 1/2: pi/2 - asin|t|; else 2 asin(sqrt((1 - |t|)/2)) (1 - |t| exact); then
    acos(-a) = pi - acos(a). asin by its Taylor series on [0, 1/2].
    """
    a = abs(t)
    small = a <= 0.5
    u = a if small else np.sqrt((1.0 - a) * 0.5)
    u2 = u * u
    (c24, c23, c22, c21, c20, c19, c18, c17, c16, c15, c14, c13, c12, c11, c10, c9, c8, c7, c6,
     c5, c4, c3, c2, c1) = ASIN_TAYLOR
    acc = (((c24 * u2 + c23) * u2 + c22) * u2 + c21) * u2 + c20
    acc = ((((acc * u2 + c19) * u2 + c18) * u2 + c17) * u2 + c16) * u2 + c15
    acc = ((((acc * u2 + c14) * u2 + c13) * u2 + c12) * u2 + c11) * u2 + c10
    acc = ((((acc * u2 + c9) * u2 + c8) * u2 + c7) * u2 + c6) * u2 + c5
    acc = (((acc * u2 + c4) * u2 + c3) * u2 + c2) * u2 + c1
    asin_u = u + u * u2 * acc
    acos_a = 0.5 * np.pi - asin_u if small else 2.0 * asin_u
    return np.pi - acos_a if t < 0.0 else acos_a


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _fill_chunk(z_hz, detuning_hz, start, m, a3, tau, buf):
    """Fill ``buf`` with the propagators of samples start .. start+m-1, each folded with the
    drive-phase step R_k^dag R_(k-1) on its right (module docstring), as nine complex entries
    row-major in rows ROW_V.., and tau sqrt(p) in ROW_SCALE.

    Rows ROW_PR/ROW_PI get each sample's drive phase; row ROW_LAST holds the phase of the
    sample before ``start`` on entry and that of the chunk's last sample on return. A sample
    without drive takes phase 1: its propagator is diagonal and commutes with any R. The first
    loop (the phase steps) is sequential; the second is branch-free and vectorised.
    """
    qr = buf[ROW_LAST * STRIDE]  # phase of the previous sample
    qi = buf[ROW_LAST * STRIDE + 1]
    for k in range(m):
        zk = z_hz[start + k]
        r = np.sqrt(zk.real * zk.real + zk.imag * zk.imag)
        pr = 1.0
        pi = 0.0
        if r > 0.0:
            pr = zk.real / r
            pi = zk.imag / r
        buf[ROW_R * STRIDE + k] = r
        buf[ROW_D * STRIDE + k] = detuning_hz[start + k]
        buf[ROW_WR * STRIDE + k] = pr * qr + pi * qi  # w = conj(p_k) p_(k-1)
        buf[ROW_WI * STRIDE + k] = pr * qi - pi * qr
        buf[ROW_PR * STRIDE + k] = pr
        buf[ROW_PI * STRIDE + k] = pi
        qr = pr
        qi = pi
    buf[ROW_LAST * STRIDE] = qr
    buf[ROW_LAST * STRIDE + 1] = qi
    for k in range(m):
        r = buf[ROW_R * STRIDE + k]
        d = buf[ROW_D * STRIDE + k]
        q0 = -d - a3
        q1 = -a3
        q2 = d + 2.0 * a3
        b = 0.5 * r
        c = SQRT_HALF * r
        bb = b * b
        cc = c * c
        # p >= 1e-200 Hz^2 keeps p^1.5 normal; at p = 0 (M = 0) the clamp changes the result
        # by tau * 1e-100 at most.
        p = max((q0 * q0 + q1 * q1 + q2 * q2 + 2.0 * (bb + cc)) * (1.0 / 6.0), 1e-200)
        sp = np.sqrt(p)
        det = q0 * (q1 * q2 - cc) - q2 * bb
        t = min(1.0, max(-1.0, det / (2.0 * p * sp)))
        phi = _acos(t) * (1.0 / 3.0)  # in [0, pi/3]
        phi2 = phi * phi
        cp = _cos_poly(phi2)
        sq3 = SQRT3 * _sin_poly(phi, phi2)
        x0 = -sp * (cp + sq3)
        x1 = sp * (sq3 - cp)
        x2 = 2.0 * sp * cp
        g01 = 2.0 * sp * sq3  # x1 - x0
        g12 = sp * (3.0 * cp - sq3)  # x2 - x1
        ca, sa = _cos_sin(0.5 * tau * x2)  # exp(-i tau (x0 + x1)/2)
        cb, sb = _cos_sin(0.5 * tau * x0)  # exp(-i tau (x1 + x2)/2)
        th01 = 0.5 * tau * g01
        th12 = 0.5 * tau * g12
        sinc01 = _cos_sin(th01)[1] / th01 if th01 > 0.0 else 1.0
        sinc12 = _cos_sin(th12)[1] / th12 if th12 > 0.0 else 1.0
        f0r = cb * cb - sb * sb  # f(x0) = exp(-i tau x0)
        f0i = -2.0 * cb * sb
        f01r = tau * sinc01 * sa  # f[x0, x1]
        f01i = -tau * sinc01 * ca
        inv_gap = 1.0 / (g01 + g12)
        f2r = (tau * sinc12 * sb - f01r) * inv_gap  # f[x0, x1, x2]
        f2i = (-tau * sinc12 * cb - f01i) * inv_gap
        a0 = q0 - x0
        a1 = q1 - x0
        a2 = q2 - x0
        m00 = a0 * (q0 - x1) + bb  # (M - x0)(M - x1), symmetric
        m11 = a1 * (q1 - x1) + bb + cc
        m22 = a2 * (q2 - x1) + cc
        e01 = x2 - q2
        e12 = x2 - q0
        v00r = f0r + f01r * a0 + f2r * m00
        v00i = f0i + f01i * a0 + f2i * m00
        v11r = f0r + f01r * a1 + f2r * m11
        v11i = f0i + f01i * a1 + f2i * m11
        v22r = f0r + f01r * a2 + f2r * m22
        v22i = f0i + f01i * a2 + f2i * m22
        v01r = (f01r + f2r * e01) * b
        v01i = (f01i + f2i * e01) * b
        v12r = (f01r + f2r * e12) * c
        v12i = (f01i + f2i * e12) * c
        v02r = f2r * (b * c)
        v02i = f2i * (b * c)
        # columns 1 and 2 of V times w and w^2
        wr = buf[ROW_WR * STRIDE + k]
        wi = buf[ROW_WI * STRIDE + k]
        w2r = wr * wr - wi * wi
        w2i = 2.0 * wr * wi
        o = ROW_V * STRIDE + k
        buf[o] = v00r
        buf[o + STRIDE] = v00i
        buf[o + 2 * STRIDE] = v01r * wr - v01i * wi
        buf[o + 3 * STRIDE] = v01r * wi + v01i * wr
        buf[o + 4 * STRIDE] = v02r * w2r - v02i * w2i
        buf[o + 5 * STRIDE] = v02r * w2i + v02i * w2r
        buf[o + 6 * STRIDE] = v01r
        buf[o + 7 * STRIDE] = v01i
        buf[o + 8 * STRIDE] = v11r * wr - v11i * wi
        buf[o + 9 * STRIDE] = v11r * wi + v11i * wr
        buf[o + 10 * STRIDE] = v12r * w2r - v12i * w2i
        buf[o + 11 * STRIDE] = v12r * w2i + v12i * w2r
        buf[o + 12 * STRIDE] = v02r
        buf[o + 13 * STRIDE] = v02i
        buf[o + 14 * STRIDE] = v12r * wr - v12i * wi
        buf[o + 15 * STRIDE] = v12r * wi + v12i * wr
        buf[o + 16 * STRIDE] = v22r * w2r - v22i * w2i
        buf[o + 17 * STRIDE] = v22r * w2i + v22i * w2r
        buf[ROW_SCALE * STRIDE + k] = tau * sp


@njit(cache=True, nogil=True, fastmath=FASTMATH, error_model="numpy")
def _step(u, buf, k):
    """u <- A_k u for the folded propagator A_k in ``buf`` (chunk slot ``k``); u is 3x3."""
    o = ROW_V * STRIDE + k
    a00 = complex(buf[o], buf[o + STRIDE])
    a01 = complex(buf[o + 2 * STRIDE], buf[o + 3 * STRIDE])
    a02 = complex(buf[o + 4 * STRIDE], buf[o + 5 * STRIDE])
    a10 = complex(buf[o + 6 * STRIDE], buf[o + 7 * STRIDE])
    a11 = complex(buf[o + 8 * STRIDE], buf[o + 9 * STRIDE])
    a12 = complex(buf[o + 10 * STRIDE], buf[o + 11 * STRIDE])
    a20 = complex(buf[o + 12 * STRIDE], buf[o + 13 * STRIDE])
    a21 = complex(buf[o + 14 * STRIDE], buf[o + 15 * STRIDE])
    a22 = complex(buf[o + 16 * STRIDE], buf[o + 17 * STRIDE])
    for j in range(3):
        u0 = u[0, j]
        u1 = u[1, j]
        u2 = u[2, j]
        u[0, j] = a00 * u0 + a01 * u1 + a02 * u2
        u[1, j] = a10 * u0 + a11 * u1 + a12 * u2
        u[2, j] = a20 * u0 + a21 * u1 + a22 * u2


@njit(cache=True, nogil=True)
def _check_range(buf, k):
    """Raise if sample slot ``k`` needs angles beyond the exact argument reduction."""
    if buf[ROW_SCALE * STRIDE + k] > 0.5 * MAX_ANGLE:
        raise ValueError("transmon propagator: drive, detuning or anharmonicity times "
                         "2 pi dt exceeds 5e5 rad per sample")


@njit(cache=True, nogil=True)
def _frame(u, angle_rad, pr, pi):
    """exp(-i angle) R u in place, R = diag(1, p, p^2) with p = pr + i pi."""
    g = complex(np.cos(angle_rad), -np.sin(angle_rad))
    gp = g * complex(pr, pi)
    gpp = gp * complex(pr, pi)
    for j in range(3):
        u[0, j] *= g
        u[1, j] *= gp
        u[2, j] *= gpp


@njit(cache=True, nogil=True)
def _neumaier(total, comp, x):
    """One step of Neumaier's compensated sum: returns the new (total, compensation)."""
    t = total + x
    if abs(total) >= abs(x):
        comp += (total - t) + x
    else:
        comp += (x - t) + total
    return t, comp


@njit(cache=True, nogil=True)
def _transmon_propagate_kernel(z_hz, detuning_hz, anharmonicity_hz, dt_s):
    """Product of exact per-sample propagators of one transmon, last sample leftmost (3x3).

    ``z_hz`` (complex, Hz) is the drive term and ``detuning_hz`` (Hz) the frequency offset
    d_k per sample: H_k/h = diag(0, d_k, 2 d_k + alpha) + (1/2)(z_k a^dag + z_k* a), with
    ``anharmonicity_hz`` = alpha; each sample lasts ``dt_s`` seconds. Method: module docstring.
    """
    n = z_hz.shape[0]
    tau = 2.0 * np.pi * dt_s
    a3 = anharmonicity_hz / 3.0
    buf = np.empty(ROWS * STRIDE)
    buf[ROW_LAST * STRIDE] = 1.0
    buf[ROW_LAST * STRIDE + 1] = 0.0
    u = np.eye(3, dtype=np.complex128)  # R_k^dag U_k ... U_1, without the phase of sum s_k
    d_sum = 0.0
    d_comp = 0.0
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        _fill_chunk(z_hz, detuning_hz, start, m, a3, tau, buf)
        for k in range(m):
            _check_range(buf, k)
            d_sum, d_comp = _neumaier(d_sum, d_comp, detuning_hz[start + k])
            _step(u, buf, k)
    _frame(u, tau * ((d_sum + d_comp) + n * a3), buf[ROW_LAST * STRIDE],
           buf[ROW_LAST * STRIDE + 1])
    return u


@njit(cache=True, nogil=True)
def _transmon_path_kernel(z_hz, detuning_hz, anharmonicity_hz, dt_s):
    """Cumulative propagators of one transmon at every sample boundary, shape (n + 1, 3, 3).

    Entry k is the product of the first k per-sample propagators of
    ``_transmon_propagate_kernel`` (entry 0 the identity, entry n the whole pulse); same
    Hamiltonian and units.
    """
    n = z_hz.shape[0]
    tau = 2.0 * np.pi * dt_s
    a3 = anharmonicity_hz / 3.0
    buf = np.empty(ROWS * STRIDE)
    buf[ROW_LAST * STRIDE] = 1.0
    buf[ROW_LAST * STRIDE + 1] = 0.0
    out = np.zeros((n + 1, 3, 3), dtype=np.complex128)
    u = np.zeros((3, 3), dtype=np.complex128)
    for i in range(3):
        out[0, i, i] = 1.0
        u[i, i] = 1.0
    d_sum = 0.0
    d_comp = 0.0
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        _fill_chunk(z_hz, detuning_hz, start, m, a3, tau, buf)
        for k in range(m):
            _check_range(buf, k)
            d_sum, d_comp = _neumaier(d_sum, d_comp, detuning_hz[start + k])
            _step(u, buf, k)
            for i in range(3):  # element copies: a slice assignment costs seconds to compile
                for j in range(3):
                    out[start + k + 1, i, j] = u[i, j]
            _frame(out[start + k + 1], tau * ((d_sum + d_comp) + (start + k + 1) * a3),
                   buf[ROW_PR * STRIDE + k], buf[ROW_PI * STRIDE + k])
    return out
