"""Fast exact propagators for the simulator, and the cache that makes them rare.

* ``_transmon_propagate_kernel`` and ``_transmon_path_kernel`` (from
  :mod:`labqpu.firmware_sim.transmon_kernel`, re-exported here): the product of exact
  per-sample propagators of one three-level transmon, H_k/h = diag(0, d_k, 2 d_k + alpha) +
  (1/2)(z_k a^dag + z_k* a), in numba without LAPACK (closed-form eigenvalues and Newton
  interpolation of the exponential, vectorised over samples).
* Drive-phase covariance: R(phi) = exp(i phi n) turns H(z) into H(z e^{i phi}), so
  U(z e^{i phi}) = R(phi) U(z) R(phi)^dag. A virtual-Z frame change, or the same pulse played
  at another time (another NCO phase), is therefore a diagonal similarity of one cached unitary
  (``drive_phase_key`` splits off the phase).
* ``PropagatorCache``: a bounded, thread-safe LRU map from a key built from the inputs (sample
  bytes, frequencies, flux context) to a unitary.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from numba import njit

from labqpu.firmware_sim.transmon_kernel import (
    _transmon_path_kernel as _transmon_path_kernel,
)
from labqpu.firmware_sim.transmon_kernel import (
    _transmon_propagate_kernel as _transmon_propagate_kernel,
)

#: Grid (Hz) on which a phase-normalised drive is quantised to form a cache key. Two drives
#: that share a key differ by less than half of it per sample, which moves the unitary of an
#: n-sample pulse by at most ~pi * grid * n * dt (1e-10 for 160 samples at 1 GS/s).
KEY_GRID_HZ = 1e-3
#: Samples whose magnitudes differ by less than this fraction count as one peak
#: (:func:`phase_reference`).
PEAK_TIE = 1e-9


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
    return phi, z0, quantised_key(z0)


def quantised_key(z_hz: np.ndarray) -> bytes:
    """``z_hz`` (complex, Hz) quantised on ``KEY_GRID_HZ``, as bytes for a cache key."""
    return np.rint(z_hz.view(np.float64) / KEY_GRID_HZ).astype(np.int64).tobytes()


@njit(cache=True, nogil=True)
def _peak_index(z_hz, tie):
    """Index of the first sample of ``z_hz`` whose magnitude is at least (1 - ``tie``) times
    the largest (0 for an empty or all-zero drive)."""
    top = 0.0
    for i in range(z_hz.size):
        top = max(top, abs(z_hz[i]))
    for i in range(z_hz.size):
        if abs(z_hz[i]) >= (1.0 - tie) * top:
            return i
    return 0


def phase_reference(z_hz: np.ndarray) -> float:
    """Phase (rad) of the first sample of ``z_hz`` whose magnitude is within a relative 1e-9
    of the largest: a symmetric pulse has two equal peaks, and rounding must not decide which
    of them sets the phase (the key would then change with the time a pulse is played at)."""
    w = complex(z_hz[_peak_index(np.ascontiguousarray(z_hz, dtype=np.complex128), PEAK_TIE)])
    return math.atan2(w.imag, w.real)


def rotate_drive_phase(u: np.ndarray, phi_rad: float) -> np.ndarray:
    """R u R^dag with R = exp(i phi n) on one transmon (``u`` 3x3): the unitary of the same
    drive turned by ``phi_rad``."""
    r = np.exp(1j * phi_rad * np.arange(u.shape[0]))
    return (r[:, None] * u) * r.conj()[None, :]


class PropagatorCache:
    """Bounded least-recently-used map from an input key to a unitary (thread-safe): at most
    ``max_entries`` entries and, when ``max_bytes`` is given, at most that many bytes of
    arrays (the newest entry is kept even if it alone is larger).

    ``hits`` and ``misses`` count look-ups since construction.
    """

    def __init__(self, max_entries: int, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held."""
        return self._bytes

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
        """Store ``u`` (made read-only) under ``key``; evicts the oldest entries while the
        cache holds more than its bounds allow."""
        u = np.array(u, dtype=np.complex128)
        u.setflags(write=False)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = u
            self._bytes += u.nbytes
            while len(self._data) > 1 and (
                    len(self._data) > self.max_entries
                    or (self.max_bytes is not None and self._bytes > self.max_bytes)):
                self._bytes -= self._data.popitem(last=False)[1].nbytes
        return u

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = 0


def rotate_drive_phase_stack(u: np.ndarray, phi_rad: float) -> np.ndarray:
    """:func:`rotate_drive_phase` applied to every 3x3 matrix of ``u`` (shape (..., 3, 3))."""
    r = np.exp(1j * phi_rad * np.arange(u.shape[-1]))
    return (r[:, None] * u) * r.conj()[None, :]
