"""Fast exact propagators for the simulator, and the cache that makes them rare.

* ``_transmon_propagate_kernel``: the product of exact per-sample propagators of one
  three-level transmon, H_k/h = diag(0, d_k, 2 d_k + alpha) + (1/2)(z_k a^dag + z_k* a), in
  numba without LAPACK. The two couplings of a ladder share the phase of z_k, so with
  R_k = diag(1, e^{i theta_k}, e^{2 i theta_k}) (theta_k = arg z_k) H_k = R_k H'_k R_k^dag with
  H'_k real, symmetric and tridiagonal. H'_k is diagonalised by cyclic Jacobi rotations
  (robust at degenerate levels, e.g. zero drive on resonance) and
  exp(-i 2 pi H_k dt) = R_k V_k exp(-i 2 pi W_k dt) V_k^T R_k^dag.
* Drive-phase covariance: R(phi) = exp(i phi n) turns H(z) into H(z e^{i phi}), so
  U(z e^{i phi}) = R(phi) U(z) R(phi)^dag. A virtual-Z frame change, or the same pulse played
  at another time (another NCO phase), is therefore a diagonal similarity of one cached unitary
  (``drive_phase_key`` splits off the phase).
* ``PropagatorCache``: a bounded, thread-safe LRU map from a key built from the inputs (sample
  bytes, frequencies, flux context) to a unitary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from numba import njit

#: Grid (Hz) on which a phase-normalised drive is quantised to form a cache key. Two drives
#: that share a key differ by less than half of it per sample, which moves the unitary of an
#: n-sample pulse by at most ~pi * grid * n * dt (1e-10 for 160 samples at 1 GS/s).
KEY_GRID_HZ = 1e-3
#: Samples whose magnitudes differ by less than this fraction count as one peak
#: (:func:`phase_reference`).
PEAK_TIE = 1e-9


@njit(cache=True)
def _jacobi_sym3(a, v):
    """Diagonalise the real symmetric 3x3 ``a`` in place by cyclic Jacobi rotations.

    On return the diagonal of ``a`` holds the eigenvalues and the columns of ``v`` (set to
    the identity first) the eigenvectors. Off-diagonal elements below 1e-18 of the adjacent
    diagonal scale are treated as zero.
    """
    for i in range(3):
        for j in range(3):
            v[i, j] = 1.0 if i == j else 0.0
    for _sweep in range(16):
        off = abs(a[0, 1]) + abs(a[0, 2]) + abs(a[1, 2])
        scale = abs(a[0, 0]) + abs(a[1, 1]) + abs(a[2, 2])
        if off == 0.0 or off <= 1e-18 * scale:
            return
        for p in range(2):
            for q in range(p + 1, 3):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                if theta < 0.0:
                    t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                a[p, p] -= t * apq
                a[q, q] += t * apq
                a[p, q] = 0.0
                a[q, p] = 0.0
                r = 3 - p - q
                arp = a[r, p]
                arq = a[r, q]
                a[r, p] = c * arp - s * arq
                a[p, r] = a[r, p]
                a[r, q] = s * arp + c * arq
                a[q, r] = a[r, q]
                for k in range(3):
                    vkp = v[k, p]
                    vkq = v[k, q]
                    v[k, p] = c * vkp - s * vkq
                    v[k, q] = s * vkp + c * vkq


@njit(cache=True)
def _transmon_propagate_kernel(z_hz, detuning_hz, anharmonicity_hz, dt_s):
    """Product of exact per-sample propagators of one transmon, last sample leftmost (3x3).

    ``z_hz`` (complex, Hz) is the drive term and ``detuning_hz`` (Hz) the frequency offset
    d_k per sample: H_k/h = diag(0, d_k, 2 d_k + alpha) + (1/2)(z_k a^dag + z_k* a), with
    ``anharmonicity_hz`` = alpha; each sample lasts ``dt_s`` seconds.
    """
    u = np.eye(3, dtype=np.complex128)
    a = np.empty((3, 3))
    v = np.empty((3, 3))
    uk = np.empty((3, 3), dtype=np.complex128)
    tmp = np.empty((3, 3), dtype=np.complex128)
    w = np.empty(3, dtype=np.complex128)
    rot = np.empty(3, dtype=np.complex128)
    two_pi_dt = 2.0 * np.pi * dt_s
    sqrt2 = np.sqrt(2.0)
    for k in range(z_hz.shape[0]):
        zk = z_hz[k]
        d = detuning_hz[k]
        r = abs(zk)
        if r == 0.0:
            uk[:, :] = 0.0
            uk[0, 0] = 1.0
            uk[1, 1] = np.exp(-1j * two_pi_dt * d)
            uk[2, 2] = np.exp(-1j * two_pi_dt * (2.0 * d + anharmonicity_hz))
        else:
            a[:, :] = 0.0
            a[1, 1] = d
            a[2, 2] = 2.0 * d + anharmonicity_hz
            a[0, 1] = a[1, 0] = 0.5 * r
            a[1, 2] = a[2, 1] = 0.5 * sqrt2 * r
            _jacobi_sym3(a, v)
            for m in range(3):
                w[m] = np.exp(-1j * two_pi_dt * a[m, m])
            ph = zk / r
            rot[0] = 1.0
            rot[1] = ph
            rot[2] = ph * ph
            for i in range(3):
                for j in range(i, 3):
                    s = v[i, 0] * v[j, 0] * w[0] + v[i, 1] * v[j, 1] * w[1] \
                        + v[i, 2] * v[j, 2] * w[2]
                    uk[i, j] = s * rot[i] * np.conj(rot[j])
                    if j != i:
                        uk[j, i] = s * rot[j] * np.conj(rot[i])
        for i in range(3):
            for j in range(3):
                tmp[i, j] = uk[i, 0] * u[0, j] + uk[i, 1] * u[1, j] + uk[i, 2] * u[2, j]
        u[:, :] = tmp
    return u


def drive_phase_key(z_hz: np.ndarray) -> tuple[float, np.ndarray, bytes]:
    """Split a drive into a phase and a phase-normalised drive, and key the latter.

    Returns (phi_rad, z0_hz, key) with z_hz = z0_hz * exp(i phi_rad); phi is
    :func:`phase_reference`, so z0 is the same array for the same pulse played at any phase.
    ``key`` is z0 quantised on ``KEY_GRID_HZ`` (bytes).
    """
    if z_hz.size == 0:
        return 0.0, z_hz, b""
    phi = phase_reference(z_hz)
    z0 = z_hz * np.exp(-1j * phi)
    key = np.rint(z0.view(np.float64) / KEY_GRID_HZ).astype(np.int64).tobytes()
    return phi, z0, key


def phase_reference(z_hz: np.ndarray) -> float:
    """Phase (rad) of the first sample of ``z_hz`` whose magnitude is within a relative 1e-9
    of the largest: a symmetric pulse has two equal peaks, and rounding must not decide which
    of them sets the phase (the key would then change with the time a pulse is played at)."""
    mag = np.abs(z_hz)
    j = int(np.argmax(mag >= (1.0 - PEAK_TIE) * mag.max()))
    return float(np.angle(z_hz[j]))


def rotate_drive_phase(u: np.ndarray, phi_rad: float) -> np.ndarray:
    """R u R^dag with R = exp(i phi n) on one transmon (``u`` 3x3): the unitary of the same
    drive turned by ``phi_rad``."""
    r = np.exp(1j * phi_rad * np.arange(u.shape[0]))
    return (r[:, None] * u) * r.conj()[None, :]


class PropagatorCache:
    """Bounded least-recently-used map from an input key to a unitary (thread-safe).

    ``hits`` and ``misses`` count look-ups since construction.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The unitary stored under ``key`` (read-only array), or None."""
        with self._lock:
            u = self._data.get(key)
            if u is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return u

    def put(self, key: Hashable, u: np.ndarray) -> np.ndarray:
        """Store ``u`` (made read-only) under ``key``; evicts the oldest entry when full."""
        u = np.array(u, dtype=np.complex128)
        u.setflags(write=False)
        with self._lock:
            self._data[key] = u
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
        return u

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


@njit(cache=True)
def _transmon_path_kernel(z_hz, detuning_hz, anharmonicity_hz, dt_s):
    """Cumulative propagators of one transmon at every sample boundary, shape (n + 1, 3, 3).

    Entry k is the product of the first k per-sample propagators of
    ``_transmon_propagate_kernel`` (entry 0 the identity, entry n the whole pulse); same
    Hamiltonian and units.
    """
    n = z_hz.shape[0]
    out = np.empty((n + 1, 3, 3), dtype=np.complex128)
    out[0] = np.eye(3, dtype=np.complex128)
    for k in range(n):
        uk = _transmon_propagate_kernel(z_hz[k:k + 1], detuning_hz[k:k + 1], anharmonicity_hz,
                                        dt_s)
        for i in range(3):
            for j in range(3):
                out[k + 1, i, j] = (uk[i, 0] * out[k, 0, j] + uk[i, 1] * out[k, 1, j]
                                    + uk[i, 2] * out[k, 2, j])
    return out


def rotate_drive_phase_stack(u: np.ndarray, phi_rad: float) -> np.ndarray:
    """:func:`rotate_drive_phase` applied to every 3x3 matrix of ``u`` (shape (..., 3, 3))."""
    r = np.exp(1j * phi_rad * np.arange(u.shape[-1]))
    return (r[:, None] * u) * r.conj()[None, :]
