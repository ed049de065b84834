"""The simulator's density matrices against independent references written in this file.

``DensityMatrix`` (product states, populations, unitaries on one or two targets, superoperators)
against dense Kronecker products, and the relaxation superoperator's physical decay laws
(jump operators sqrt(1/T1) a and sqrt(2/T_phi) n, row-major vectorisation, three levels per
transmon, as in test_physics_drive.py). No reference calls the code under test. Tolerances are
stated per test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.constants
import scipy.integrate
import scipy.linalg
import scipy.optimize
from numpy.testing import assert_allclose

from labqpu.firmware_sim.device import DeviceTruth, load_device
from labqpu.firmware_sim.physics import DensityMatrix, relaxation_superop

DEVICE: DeviceTruth = load_device("lab5")


I3 = np.eye(3, dtype=complex)


def embed_dense(op: np.ndarray, targets: list[int], n: int) -> np.ndarray:
    """Dense operator on n three-level sites acting as ``op`` on ``targets`` (targets[0] most
    significant inside ``op``), identity elsewhere; site 0 is the most significant overall."""
    d = 3**n
    full = np.zeros((d, d), dtype=complex)
    shape = (3,) * n
    for i in range(d):
        di = np.unravel_index(i, shape)
        for j in range(d):
            dj = np.unravel_index(j, shape)
            if any(di[s] != dj[s] for s in range(n) if s not in targets):
                continue
            oi = np.ravel_multi_index([di[s] for s in targets], (3,) * len(targets))
            oj = np.ravel_multi_index([dj[s] for s in targets], (3,) * len(targets))
            full[i, j] = op[oi, oj]
    return full


def random_unitary(d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    q, r = np.linalg.qr(x)
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


@pytest.mark.parametrize("qubit", [0, 3])
@pytest.mark.parametrize("t_s", [1e-6, 25e-6, 90e-6])
def test_relaxation_superop_physical_decay_laws(qubit: int, t_s: float) -> None:
    """|1> decays as exp(-t/T1); |2> as exp(-2t/T1) with the cascade population
    2 (e^{-t/T1} - e^{-2t/T1}) in |1>; a 0-1 coherence decays as exp(-t/T2) with the device's
    T2 (1/T2 = 1/(2 T1) + 1/T_phi). Tolerance 1e-12."""
    q = DEVICE.qubits[qubit]
    sop = relaxation_superop(q.t1_s, q.t_phi_s, t_s)

    def evolve(rho):
        return (sop @ rho.reshape(-1)).reshape(3, 3)

    e1 = math.exp(-t_s / q.t1_s)
    r = evolve(np.diag([0.0, 1.0, 0.0]).astype(complex))
    assert_allclose(np.real(np.diagonal(r)), [1 - e1, e1, 0.0], rtol=0, atol=1e-12)
    r = evolve(np.diag([0.0, 0.0, 1.0]).astype(complex))
    assert_allclose(np.real(np.diagonal(r)), [1 - 2 * e1 + e1**2, 2 * (e1 - e1**2), e1**2],
                    rtol=0, atol=1e-12)
    plus = np.zeros((3, 3), dtype=complex)
    plus[:2, :2] = 0.5
    r = evolve(plus)
    assert_allclose(r[0, 1], 0.5 * math.exp(-t_s / q.t2_s), rtol=0, atol=1e-12)
    assert_allclose(r[1, 0], 0.5 * math.exp(-t_s / q.t2_s), rtol=0, atol=1e-12)
    assert_allclose(np.trace(r), 1.0, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- DensityMatrix


def _dm(rho: np.ndarray, n: int) -> DensityMatrix:
    dm = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    dm.tensor = rho.reshape([3] * (2 * n)).copy()
    return dm


def _dense(dm: DensityMatrix) -> np.ndarray:
    d = 3**dm.n
    return dm.tensor.reshape(d, d)


def test_density_matrix_product_state_and_populations() -> None:
    """Constructor = kron of diagonal states, qubit 0 most significant (exact)."""
    p = [np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.9, 0.0]), np.array([0.5, 0.0, 0.5])]
    dm = DensityMatrix(p)
    ref = np.diag(np.kron(np.kron(p[0], p[1]), p[2]))
    assert_allclose(_dense(dm), ref, rtol=0, atol=1e-15)
    assert_allclose(dm.populations(), ref.diagonal().real.reshape(3, 3, 3), rtol=0, atol=1e-15)
    assert_allclose(dm.populations().sum(axis=(1, 2)), p[0], rtol=0, atol=1e-15)


@pytest.mark.parametrize(("n", "targets"), [(2, [0]), (2, [1]), (2, [0, 1]), (2, [1, 0]),
                                            (3, [1]), (3, [2, 0]), (3, [0, 2]), (3, [1, 2])])
def test_apply_unitary_matches_dense_kronecker(
    n: int, targets: list[int], random_density_matrix
) -> None:
    """U rho U^+ with U on ``targets`` (first target most significant) vs the dense operator
    built index by index: tolerance 1e-12. Non-adjacent and reversed targets included."""
    rng = np.random.default_rng(10 * n + sum(targets) + 3 * targets[0])
    rho = random_density_matrix(3**n, rng)
    u = random_unitary(3 ** len(targets), rng)
    dm = _dm(rho, n)
    dm.apply_unitary(u, targets)
    full = embed_dense(u, targets, n)
    assert_allclose(_dense(dm), full @ rho @ full.conj().T, rtol=0, atol=1e-12)


def excitation_conserving_unitary(k: int, rng: np.random.Generator) -> np.ndarray:
    """A random unitary on ``k`` three-level sites that maps each subspace of fixed total
    excitation number onto itself (as a flux pulse without drives does)."""
    levels = np.array(list(np.ndindex(*(3,) * k))).sum(axis=1)
    u = np.zeros((3**k, 3**k), dtype=complex)
    for n in np.unique(levels):
        idx = np.flatnonzero(levels == n)
        u[np.ix_(idx, idx)] = random_unitary(idx.size, rng)
    return u


@pytest.mark.parametrize(("n", "targets"), [(2, [0, 1]), (3, [1, 2]), (4, [0, 1, 2]),
                                            (4, [1, 2, 3]), (3, [0])])
def test_apply_unitary_excitation_conserving_matches_dense(
    n: int, targets: list[int], random_density_matrix
) -> None:
    """An excitation-conserving U (applied block by block inside apply_unitary) on
    consecutive targets vs the dense operator: tolerance 1e-12."""
    rng = np.random.default_rng(7 * n + targets[0])
    rho = random_density_matrix(3**n, rng)
    u = excitation_conserving_unitary(len(targets), rng)
    dm = _dm(rho, n)
    dm.apply_unitary(u, targets)
    full = embed_dense(u, targets, n)
    assert_allclose(_dense(dm), full @ rho @ full.conj().T, rtol=0, atol=1e-12)


def test_apply_unitary_two_targets_is_kron_with_identity(random_density_matrix) -> None:
    """Cross-check of the reference itself: targets [0, 1] of 3 sites is U (x) I (1e-12)."""
    rng = np.random.default_rng(42)
    u = random_unitary(9, rng)
    rho = random_density_matrix(27, rng)
    dm = _dm(rho, 3)
    dm.apply_unitary(u, [0, 1])
    full = np.kron(u, I3)
    assert_allclose(_dense(dm), full @ rho @ full.conj().T, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "target"), [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2)])
def test_apply_superop_matches_dense_kraus(n: int, target: int, random_density_matrix) -> None:
    """A random 3-Kraus channel given as a row-major 9x9 superoperator vs
    sum_m K_m rho K_m^+ with K_m embedded densely on ``target``: tolerance 1e-12."""
    rng = np.random.default_rng(100 + 10 * n + target)
    raw = [rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3)) for _ in range(3)]
    s = scipy.linalg.sqrtm(sum(k.conj().T @ k for k in raw))
    kraus = [k @ np.linalg.inv(s) for k in raw]
    assert_allclose(sum(k.conj().T @ k for k in kraus), I3, atol=1e-12)
    superop = np.zeros((9, 9), dtype=complex)
    for k in kraus:  # row-major vec: (K rho K^+)[i, j] = sum_kl K[i, k] rho[k, l] K*[j, l]
        for i in range(3):
            for j in range(3):
                for kk in range(3):
                    for ll in range(3):
                        superop[3 * i + j, 3 * kk + ll] += k[i, kk] * np.conj(k[j, ll])
    rho = random_density_matrix(3**n, rng)
    dm = _dm(rho, n)
    dm.apply_superop(superop, target)
    ref = sum(embed_dense(k, [target], n) @ rho @ embed_dense(k, [target], n).conj().T
              for k in kraus)
    assert_allclose(_dense(dm), ref, rtol=0, atol=1e-12)


def test_apply_superop_relaxes_only_its_target() -> None:
    """T1 channel on qubit 1 of |1,1>: qubit 1 decays by exp(-t/T1), qubit 0 stays (1e-12)."""
    dm = DensityMatrix([np.array([0.0, 1.0, 0.0]), np.array([0.0, 1.0, 0.0])])
    t1, t = 30e-6, 10e-6
    dm.apply_superop(relaxation_superop(t1, math.inf, t), 1)
    pops = dm.populations()
    e = math.exp(-t / t1)
    assert_allclose(pops, [[0, 0, 0], [1 - e, e, 0], [0, 0, 0]], rtol=0, atol=1e-12)
