"""Always-on capacitive coupling: the dressed idle Hamiltonian of the coupled transmons.

The idle device Hamiltonian (Hz, lab frame, rotating-wave exchange coupling)

    H/h = sum_q [f_q n_q + (alpha_q / 2) n_q (n_q - 1)] + sum_(p,q) g_pq (a_p^dag a_q + a_p a_q^dag)

with three levels per transmon conserves the total excitation number N, so it is diagonalised
exactly block by block (N <= 4 is all the pair decomposition below needs). Each eigenstate is
labelled by the bare state it overlaps most (an assignment, so labels are unique); these dressed
states are the simulator's computational basis.

From the dressed energies E(n) (n a label, every other qubit in 0):

* dressed frequency       f~_q = E(e_q) - E(0)                 (what spectroscopy measures)
* dressed level energies  L_q(n) = E(n e_q) - E(0) - n f~_q     ([0, 0, alpha~_q])
* pair terms              Z_pq(m, n) = E(m e_p + n e_q) - E(0) - L_p(m) - L_q(n) - m f~_p - n f~_q
  for every coupled pair; Z_pq(1, 1) is the static ZZ (E11 - E10 - E01 + E00) and vanishes when
  either argument is 0.

In the frame rotating at each qubit's dressed frequency the idle evolution is diagonal:
H_idle/h = sum_q L_q(n_q) + sum_(p,q) Z_pq(n_p, n_q) + (three-body and longer-range terms). The
neglected terms (a pair that is not coupled directly, three-body energies) are fourth order in
g / detuning; ``residual_hz`` reports the largest of them for a given device so that the
approximation is checked, not assumed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy.optimize import linear_sum_assignment

LEVELS = 3
MAX_EXCITATIONS = 4


def _configs(k: int, n_exc: int) -> list[tuple[int, ...]]:
    """Level configurations of ``k`` transmons (3 levels) with total excitation ``n_exc``."""
    return [c for c in itertools.product(range(LEVELS), repeat=k) if sum(c) == n_exc]


@lru_cache(maxsize=64)
def _excitation_block(k: int, n_exc: int
                      ) -> tuple[tuple[tuple[int, ...], ...], np.ndarray, np.ndarray]:
    """The bare states of ``k`` transmons with ``n_exc`` excitations: (configurations, their
    levels (states, k), their indices among all 3^k states, first transmon most significant).
    Read-only."""
    basis = tuple(_configs(k, n_exc))
    levels = np.array(basis, dtype=np.int64).reshape(len(basis), k)
    flat = levels @ (LEVELS ** np.arange(k - 1, -1, -1, dtype=np.int64))
    for x in (levels, flat):
        x.flags.writeable = False
    return basis, levels, flat


@lru_cache(maxsize=512)
def _hops(k: int, n_exc: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a_a^dag a_b within the block of ``n_exc`` excitations of ``k`` transmons: (i, j,
    sqrt((n_a + 1) n_b)) for each state i (index in ``_excitation_block``'s basis) it maps to
    state j. Read-only."""
    basis, _, _ = _excitation_block(k, n_exc)
    index = {c: i for i, c in enumerate(basis)}
    hops = []
    for i, c in enumerate(basis):
        if c[a] < LEVELS - 1 and c[b] > 0:
            d = list(c)
            d[a] += 1
            d[b] -= 1
            hops.append((i, index[tuple(d)], np.sqrt((c[a] + 1) * c[b])))
    cols = [np.array(x) for x in zip(*hops, strict=True)] if hops else [np.zeros(0)] * 3
    out = (cols[0].astype(np.int64), cols[1].astype(np.int64), cols[2].astype(float))
    for x in out:
        x.flags.writeable = False
    return out


def _dressed_blocks(freqs_hz: list[float], alphas_hz: list[float],
                    couplings: dict[tuple[int, int], float], max_excitations: int
                    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Exact dressed energies (Hz) of coupled three-level transmons (bare 0-1 frequencies
    ``freqs_hz`` and anharmonicities ``alphas_hz`` of qubits 0..k-1, ``couplings`` (a, b) with
    a < b -> g in Hz), per excitation number up to ``max_excitations``: (excitation number,
    energies, eigenvectors in the block's bare basis), both ordered by label: entry i is the
    dressed state labelled by the block's bare state i (the one it overlaps most, by an
    assignment), its eigenvector (column i) with a positive component on that state."""
    k = len(freqs_hz)
    f = np.asarray(freqs_hz, dtype=float)
    alpha = np.asarray(alphas_hz, dtype=float)
    out = []
    for n_exc in range(max_excitations + 1):
        _, levels, _ = _excitation_block(k, n_exc)
        if not levels.shape[0]:
            continue
        h = np.diag(levels @ f + 0.5 * ((levels * (levels - 1)) @ alpha))
        for (a, b), g in couplings.items():
            i, j, factor = _hops(k, n_exc, a, b)
            h[j, i] += g * factor  # a_a^dag a_b, and its Hermitian conjugate
            h[i, j] += g * factor
        evals, evecs = np.linalg.eigh(h)
        rows, cols = linear_sum_assignment(-np.abs(evecs) ** 2)
        vecs = evecs[:, cols]  # rows are 0..m-1 in order: column r is labelled by state r
        vecs *= np.where(vecs[rows, rows] < 0, -1.0, 1.0)[None, :]
        out.append((n_exc, evals[cols], vecs))
    return out


@dataclass(frozen=True)
class DressedModel:
    """Diagonal idle model of coupled transmons in their dressed basis (all values in Hz).

    ``freq_hz[q]`` dressed 0-1 frequency; ``local_hz[q]`` = L_q(n) for n = 0, 1, 2 in the frame
    rotating at ``freq_hz[q]`` (so [0, 0, dressed anharmonicity]); ``zz_hz[(p, q)]`` (p < q,
    coupled) the 3x3 pair term Z_pq(n_p, n_q); ``bare_freq_hz`` the bare frequencies it was
    built from.
    """

    bare_freq_hz: tuple[float, ...]
    freq_hz: tuple[float, ...]
    local_hz: tuple[np.ndarray, ...]
    zz_hz: dict[tuple[int, int], np.ndarray]
    #: :meth:`pair_energies` per tuple of qubits, computed once.
    _pair_energies: dict[tuple[int, ...], np.ndarray] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def static_zz_hz(self, p: int, q: int) -> float:
        """Static ZZ E11 - E10 - E01 + E00 (Hz) of coupled qubits ``p`` and ``q``."""
        return float(self.zz_hz[(min(p, q), max(p, q))][1, 1])

    def neighbours(self, q: int) -> list[int]:
        """Qubits with a pair term with ``q``."""
        return sorted({b if a == q else a for (a, b) in self.zz_hz if q in (a, b)})

    def pair(self, q: int, p: int) -> np.ndarray:
        """Z as a 3x3 array indexed [level of q, level of p]."""
        z = self.zz_hz[(min(p, q), max(p, q))]
        return z if q < p else z.T

    def local_energies(self, qubits: list[int]) -> np.ndarray:
        """Diagonal sum_q L_q over ``qubits`` (first most significant), 3^k values (Hz)."""
        k = len(qubits)
        levels = np.indices((LEVELS,) * k).reshape(k, -1)
        e = np.zeros(LEVELS**k)
        for i, q in enumerate(qubits):
            e += self.local_hz[q][levels[i]]
        return e

    def pair_energies(self, qubits: list[int]) -> np.ndarray:
        """:meth:`energies` less :meth:`local_energies`: sum_pairs Z over ``qubits`` (first most
        significant), 3^k values (Hz); computed once per tuple of qubits, read-only."""
        key = tuple(qubits)
        e = self._pair_energies.get(key)
        if e is None:
            e = self.energies(qubits) - self.local_energies(qubits)
            e.flags.writeable = False
            self._pair_energies[key] = e
        return e

    def energies(self, qubits: list[int]) -> np.ndarray:
        """Diagonal sum_q L_q + sum_pairs Z over ``qubits`` (first most significant), 3^k values."""
        k = len(qubits)
        levels = np.indices((LEVELS,) * k).reshape(k, -1)
        e = np.zeros(LEVELS**k)
        for i, q in enumerate(qubits):
            e += self.local_hz[q][levels[i]]
        for i, p in enumerate(qubits):
            for j in range(i + 1, k):
                q = qubits[j]
                if (min(p, q), max(p, q)) in self.zz_hz:
                    e += self.pair(p, q)[levels[i], levels[j]]
        return e


def build_dressed_model(freqs_hz: list[float], alphas_hz: list[float],
                        couplings: dict[tuple[int, int], float]) -> tuple[DressedModel, float]:
    """The :class:`DressedModel` of the whole coupled device, and ``residual_hz``: the largest
    difference between an exact dressed energy (up to 4 excitations) and the pair model."""
    k = len(freqs_hz)
    blocks = _dressed_blocks(freqs_hz, alphas_hz, couplings, MAX_EXCITATIONS)
    exact = np.full(LEVELS**k, np.nan)  # E - E(0) by bare label (index), up to 4 excitations
    for n_exc, energies, _ in blocks:
        exact[_excitation_block(k, n_exc)[2]] = energies
    exact -= exact[0]

    def energy(levels: dict[int, int]) -> float:
        return float(exact[sum(n * LEVELS ** (k - 1 - q) for q, n in levels.items())])

    freq = tuple(energy({q: 1}) for q in range(k))
    local = tuple(np.array([0.0, 0.0, energy({q: 2}) - 2 * freq[q]]) for q in range(k))
    zz = {}
    for (p, q) in couplings:
        z = np.zeros((LEVELS, LEVELS))
        for m in range(1, LEVELS):
            for n in range(1, LEVELS):
                z[m, n] = (energy({p: m, q: n}) - local[p][m] - local[q][n]
                           - m * freq[p] - n * freq[q])
        zz[(p, q)] = z
    model = DressedModel(tuple(freqs_hz), freq, local, zz)
    residual = 0.0
    if k <= 8:
        pair_model = model.energies(list(range(k)))
        for n_exc, _, _ in blocks:
            _, levels, flat = _excitation_block(k, n_exc)
            approx = levels @ np.array(freq) + pair_model[flat]
            residual = max(residual, float(np.abs(exact[flat] - approx).max()))
    return model, residual


def dressed_basis(freqs_hz: list[float], alphas_hz: list[float],
                  couplings: dict[tuple[int, int], float]) -> tuple[np.ndarray, np.ndarray]:
    """Labelled eigenbasis of the idle Hamiltonian of ``k`` coupled transmons (all 3^k states).

    Returns (V, E): column i of V (3^k x 3^k, real) is the dressed state labelled by the bare
    state of index i (first transmon most significant), E[i] its energy (Hz) in the frame in
    which ``freqs_hz`` are given.
    """
    k = len(freqs_hz)
    v = np.zeros((LEVELS**k, LEVELS**k))
    e = np.zeros(LEVELS**k)
    for n_exc, energies, vecs in _dressed_blocks(freqs_hz, alphas_hz, couplings, 2 * k):
        flat = _excitation_block(k, n_exc)[2]
        e[flat] = energies
        v[np.ix_(flat, flat)] = vecs
    return v, e


def toggled_projectors(path: np.ndarray) -> np.ndarray:
    """U_k^dag |n><n| U_k for n = 1, 2 at every entry of a cumulative path (shape (m, 3, 3));
    returns shape (m, 2, 3, 3)."""
    rows = path[:, 1:, :]  # (m, 2, 3): row n of U_k
    return rows.conj()[:, :, :, None] * rows[:, :, None, :]


def trapezoid_weights(n_samples: int, dt_s: float) -> np.ndarray:
    """Weights (s) of the trapezoid rule over the n_samples + 1 sample boundaries."""
    w = np.full(n_samples + 1, dt_s)
    w[0] = w[-1] = 0.5 * dt_s
    return w


def _weighted_pair_sum(zz_hz: np.ndarray, weights_s: np.ndarray, a: np.ndarray,
                       b: np.ndarray) -> np.ndarray:
    """sum_k w_k sum_mn Z[m, n] a[k, m] (x) b[k, n] as a 9x9 matrix (``zz_hz`` 2x2, ``a`` and
    ``b`` (k, 2, 3, 3)): one matrix product over (k, n) (an einsum of the four operands took
    ~0.2 ms on 40 samples)."""
    left = weights_s[:, None, None, None] * np.tensordot(a, zz_hz, axes=([1], [0]))
    left = np.moveaxis(left, 3, 1).reshape(-1, 9)  # [(k, n), (a, b)]
    phi = (left.T @ b.reshape(-1, 9)).reshape(3, 3, 3, 3)  # [a, b, c, d]
    return phi.transpose(0, 2, 1, 3).reshape(9, 9)


def magnus_pair_generator(zz_hz: np.ndarray, proj_p: np.ndarray, proj_q: np.ndarray,
                          weights_s: np.ndarray) -> np.ndarray:
    """First-order Magnus generator (9x9, dimensionless cycles) of the pair term
    Z(n_p, n_q) in the toggling frame of two driven transmons: sum_k w_k sum_mn Z[m, n]
    T^p_{m,k} (x) T^q_{n,k}, with T the :func:`toggled_projectors` of each (p first)."""
    return _weighted_pair_sum(zz_hz[1:, 1:], weights_s, proj_p, proj_q)


def sequential_pair_generator(zz_hz: np.ndarray, proj_p: np.ndarray, proj_q: np.ndarray,
                              weights_s: np.ndarray, p_first: bool) -> np.ndarray:
    """To first order in the pair term Z(n_p, n_q), the generator (9x9, cycles, p first) by
    which two one-transmon drives over one block, each conditioned on the other's level and
    applied one after the other (``p_first``: p's first), differ from the joint evolution:
    sum_k w_k sum_mn Z[m, n] (T^p_{m,k} - T^p_{m,end}) (x) (T^q_{n,k} - E_n) when p goes
    first, with the roles swapped otherwise (T the :func:`toggled_projectors`, E_n = |n><n|).
    The second drive is conditioned on the first transmon's level after the first has turned,
    so the term depends on the order; it is second order in the drives' rotations within the
    block."""
    held = np.zeros((2, 3, 3))
    held[0, 1, 1] = held[1, 2, 2] = 1.0
    if p_first:
        a, b = proj_p - proj_p[-1][None], proj_q - held
    else:
        a, b = proj_p - held, proj_q - proj_q[-1][None]
    return _weighted_pair_sum(zz_hz[1:, 1:], weights_s, a, b)


def magnus_conditional_generator(zz_hz: np.ndarray, proj_q: np.ndarray,
                                 weights_s: np.ndarray) -> np.ndarray:
    """First-order Magnus generators (3, 3, 3: idle neighbour level, then 3x3 on the driven
    transmon) of Z(n_q, n_p) (``zz_hz`` indexed [q level, p level]) with ``p`` idle."""
    pi_n = np.einsum("k,knab->nab", weights_s, proj_q)  # integrated projectors, n = 1, 2
    return np.einsum("nm,nab->mab", zz_hz[1:, :], pi_n)
