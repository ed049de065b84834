"""Density-matrix updates of the simulator against plain numpy references written here.

``_band_channel_kernel`` and ``_band_real_kernel`` (a one-transmon channel that conserves the
level difference i - j, applied in place; the second for real weights between populations)
against ``numpy.einsum`` of the 9x9 superoperator on the density tensor;
``DensityMatrix.apply_superop`` on both of its paths; ``DensityMatrix.apply_product`` (a
product of diagonal, plain and conditioned operators as row passes and one adjoint) against
the dense operator L rho L^dag; ``_group_apply_kernel`` (a conditioned operator applied in
place, group of rows by group) against ``numpy.einsum``; ``clusters.propagate_conserving``
(excitation blocks propagated one by one) against a product of ``scipy.linalg.expm``.
Tolerance 1e-12 throughout (the reference and the code round differently), except where a
test says it compares exactly: the product state a ``DensityMatrix`` starts from and
``kron_identity`` against ``numpy.kron``.
"""

from __future__ import annotations

import itertools
import string

import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose

from labqpu.firmware_sim import density
from labqpu.firmware_sim.clusters import propagate_conserving
from labqpu.firmware_sim.density import (
    BAND_COHERENCES,
    BAND_MASK,
    BAND_POPULATIONS,
    DensityMatrix,
    _band_channel_kernel,
    _band_real_kernel,
    _group_apply_kernel,
    _held_rows,
    _level_maps_kernel,
    _row_groups,
    kron_identity,
    relaxation_superop,
)


def _random_matrix(d: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))


def _random_rho(d: int, rng: np.random.Generator) -> np.ndarray:
    x = _random_matrix(d, rng)
    rho = x @ x.conj().T
    return rho / np.trace(rho)


def _random_unitary(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(_random_matrix(d, rng))
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


def _einsum_superop(rho: np.ndarray, superop: np.ndarray, target: int, n: int) -> np.ndarray:
    """sum_kl S[(i j), (k l)] rho[.. k .., .. l ..] on the axes of ``target`` (row-major vec,
    site 0 most significant), by ``numpy.einsum`` on the (3,)*2n tensor."""
    letters = string.ascii_letters
    rows, cols = list(letters[:n]), list(letters[n:2 * n])
    i, j = "YZ"
    src = rows + cols
    dst = list(src)
    dst[target], dst[n + target] = i, j
    spec = f"{i}{j}{rows[target]}{cols[target]},{''.join(src)}->{''.join(dst)}"
    out = np.einsum(spec, superop.reshape(3, 3, 3, 3), rho.reshape((3,) * (2 * n)))
    return out.reshape(3**n, 3**n)


def _random_band_superop(rng: np.random.Generator) -> np.ndarray:
    s = _random_matrix(9, rng)
    return np.where(BAND_MASK, s, 0.0)


def _dense_controlled(u_stack: np.ndarray, controls: list[int], targets: list[int], n: int
                      ) -> np.ndarray:
    """sum_c |c><c| (x) u_stack[c] as a dense 3^n matrix, built basis state by basis state."""
    d = 3**n
    out = np.zeros((d, d), dtype=complex)
    states = list(itertools.product(range(3), repeat=n))
    for a, sa in enumerate(states):
        for b, sb in enumerate(states):
            if any(sa[s] != sb[s] for s in range(n) if s not in targets):
                continue
            c = int(np.ravel_multi_index([sa[s] for s in controls], (3,) * len(controls)))
            ta = int(np.ravel_multi_index([sa[s] for s in targets], (3,) * len(targets)))
            tb = int(np.ravel_multi_index([sb[s] for s in targets], (3,) * len(targets)))
            out[a, b] = u_stack[c, ta, tb]
    return out


@pytest.mark.parametrize(("n", "target"), [(1, 0), (2, 0), (2, 1), (3, 1), (4, 0), (4, 2),
                                            (4, 3)])
def test_band_channel_kernel_matches_einsum(n: int, target: int) -> None:
    """A random band superoperator on a random, non-Hermitian matrix: the kernel reads no
    symmetry of rho, so it must agree with einsum entry by entry (1e-12)."""
    rng = np.random.default_rng(31 * n + target)
    x = _random_matrix(3**n, rng)
    s = _random_band_superop(rng)
    ref = _einsum_superop(x, s, target, n)
    flat = x.copy().reshape(-1)
    _band_channel_kernel(flat, s, 3**target, 3 ** (n - 1 - target), 3**target,
                         3 ** (n - 1 - target))
    assert_allclose(flat.reshape(3**n, 3**n), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "target"), [(1, 0), (2, 0), (2, 1), (3, 1), (4, 0), (4, 2),
                                            (4, 3), (5, 4)])
def test_band_real_kernel_matches_einsum(n: int, target: int) -> None:
    """A random band superoperator with real weights between populations (complex coherence
    weights) on a random, non-Hermitian matrix, through the matrix's float64 view: einsum
    entry by entry (1e-12). Every one of the 19 band entries is read: changing any changes
    the output."""
    rng = np.random.default_rng(17 * n + target)
    x = _random_matrix(3**n, rng)
    s = _random_band_superop(rng)
    s[np.ix_([0, 4, 8], [0, 4, 8])] = s[np.ix_([0, 4, 8], [0, 4, 8])].real
    dims = (3**target, 3 ** (n - 1 - target), 3**target, 3 ** (n - 1 - target))

    def apply(superop: np.ndarray) -> np.ndarray:
        flat = x.copy().reshape(-1)
        _band_real_kernel(flat.view(np.float64), superop.reshape(-1)[BAND_POPULATIONS]
                          .real.reshape(3, 3), superop.reshape(-1)[BAND_COHERENCES], *dims)
        return flat.reshape(3**n, 3**n)

    base = apply(s)
    assert_allclose(base, _einsum_superop(x, s, target, n), rtol=0, atol=1e-12)
    for o, k in zip(*np.nonzero(BAND_MASK), strict=True):
        t = s.copy()
        t[o, k] += 1.0
        assert np.abs(apply(t) - base).max() > 1e-3, (o, k)


def test_apply_superop_with_complex_population_weights_takes_the_complex_kernel() -> None:
    """A band superoperator whose population weights are not real (no physical channel's,
    but apply_superop takes any): the real kernel would drop their imaginary parts, so the
    complex one applies it, and the result still matches einsum (1e-12)."""
    rng = np.random.default_rng(8)
    s = _random_band_superop(rng)
    assert np.abs(s[np.ix_([0, 4, 8], [0, 4, 8])].imag).max() > 0.1
    _check_superop_on_three(s, 1, rng)


def test_band_channel_kernel_ignores_nothing_it_should_read() -> None:
    """Changing one band entry of S changes the kernel's output (the kernel reads all 19),
    and the kernel never touches entries of S outside the band."""
    rng = np.random.default_rng(5)
    x = _random_matrix(27, rng)
    s = _random_band_superop(rng)
    base = x.copy().reshape(-1)
    _band_channel_kernel(base, s, 3, 3, 3, 3)
    for o, k in zip(*np.nonzero(BAND_MASK), strict=True):
        t = s.copy()
        t[o, k] += 1.0
        out = x.copy().reshape(-1)
        _band_channel_kernel(out, t, 3, 3, 3, 3)
        assert np.abs(out - base).max() > 1e-3, (o, k)
    outside = s + np.where(BAND_MASK, 0.0, 1.0)
    out = x.copy().reshape(-1)
    _band_channel_kernel(out, outside, 3, 3, 3, 3)
    assert_allclose(out, base, rtol=0, atol=0)


def _check_superop_on_three(s: np.ndarray, target: int, rng: np.random.Generator) -> None:
    """apply_superop of ``s`` on ``target`` of a random 3-transmon state against einsum."""
    rho = _random_rho(27, rng)
    dm = DensityMatrix([np.array([1.0, 0.0, 0.0])] * 3)
    dm.tensor = rho.reshape((3,) * 6).copy()
    dm.apply_superop(s, target)
    assert_allclose(dm.tensor.reshape(27, 27), _einsum_superop(rho, s, target, 3),
                    rtol=0, atol=1e-12)


@pytest.mark.parametrize("target", [0, 1, 2])
def test_apply_superop_relaxation_takes_the_band_path_and_matches_einsum(target: int,
                                                                        monkeypatch) -> None:
    """A physical channel (T1 towards a thermal state, dephasing, idle |2> phase, composed
    with a diagonal phase) conserves i - j; apply_superop on it matches einsum (1e-12)."""
    rng = np.random.default_rng(target)
    s = relaxation_superop(20e-6, 35e-6, 80e-9, -210e6, 0.02)
    phase = np.exp(1j * np.array([0.0, 0.3, -1.1]))
    s = np.kron(np.diag(phase), np.diag(phase.conj())) @ s
    assert not np.any(s[~BAND_MASK])
    calls = []
    real_kernel = density._band_real_kernel
    monkeypatch.setattr(density, "_band_real_kernel",
                        lambda *args: calls.append(1) or real_kernel(*args))
    _check_superop_on_three(s, target, rng)
    assert calls == [1]  # a physical channel takes the real-weight kernel


@pytest.mark.parametrize("target", [0, 2])
def test_apply_superop_dense_channel_matches_einsum(target: int) -> None:
    """A channel with a unitary that mixes levels (not band) takes the general path (1e-12)."""
    rng = np.random.default_rng(40 + target)
    u = _random_unitary(3, rng)
    s = np.kron(u, u.conj()) @ relaxation_superop(20e-6, 35e-6, 80e-9)
    assert np.any(s[~BAND_MASK])
    _check_superop_on_three(s, target, rng)


def test_apply_product_matches_dense_operator_product() -> None:
    """D, then a pair unitary on adjacent sites, a conditioned one-site drive, a
    pair unitary on non-adjacent reversed sites, and an excitation-conserving pair
    unitary: L rho L^dag with L the dense product (1e-12)."""
    rng = np.random.default_rng(77)
    n = 4
    rho = _random_rho(3**n, rng)
    diagonal = np.exp(1j * rng.uniform(-np.pi, np.pi, 3**n))
    levels = np.array(list(itertools.product(range(3), repeat=2))).sum(axis=1)
    conserving = np.zeros((9, 9), dtype=complex)
    for e in np.unique(levels):
        idx = np.flatnonzero(levels == e)
        conserving[np.ix_(idx, idx)] = _random_unitary(idx.size, rng)
    ops = [
        (_random_unitary(9, rng)[None], [], [1, 2]),
        (np.stack([_random_unitary(3, rng) for _ in range(9)]), [0, 3], [2]),
        (_random_unitary(9, rng)[None], [], [3, 0]),
        (conserving[None], [], [2, 3]),
    ]
    dense = np.diag(diagonal)
    for u, controls, targets in ops:
        dense = _dense_controlled(u, controls, targets, n) @ dense
    dm = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    dm.tensor = rho.reshape((3,) * (2 * n)).copy()
    dm.apply_product(ops, diagonal)
    assert_allclose(dm.tensor.reshape(3**n, 3**n), dense @ rho @ dense.conj().T,
                    rtol=0, atol=1e-12)


def test_states_copied_between_products_evolve_apart() -> None:
    """apply_product keeps a scratch matrix for its BLAS passes between calls. A copy (as a
    feed-forward branch makes) and a projection start without it: products applied to a
    state and to its copy, alternately and repeatedly, give each its own dense reference
    L rho L^dag (1e-12). ``free_scratch`` lets it go; a diagonal of the wrong length is
    refused before anything is applied."""
    rng = np.random.default_rng(12)
    n = 3
    rho = _random_rho(3**n, rng)
    first = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    first.tensor = rho.reshape((3,) * (2 * n)).copy()
    pair_a, pair_b = _random_unitary(9, rng), _random_unitary(9, rng)
    first.apply_product([(pair_a[None], [], [0, 1])])
    second = first.copy()
    ref_first = ref_second = _dense_controlled(pair_a[None], [], [0, 1], n) @ rho \
        @ _dense_controlled(pair_a[None], [], [0, 1], n).conj().T
    for _ in range(3):
        for state, u, targets in ((first, pair_a, [1, 2]), (second, pair_b, [0, 1])):
            diagonal = np.exp(1j * rng.uniform(-np.pi, np.pi, 3**n))
            state.apply_product([(u[None], [], targets)], diagonal)
            dense = _dense_controlled(u[None], [], targets, n) @ np.diag(diagonal)
            if state is first:
                ref_first = dense @ ref_first @ dense.conj().T
            else:
                ref_second = dense @ ref_second @ dense.conj().T
    assert first._scratch is not second._scratch
    assert_allclose(first.tensor.reshape(27, 27), ref_first, rtol=0, atol=1e-12)
    assert_allclose(second.tensor.reshape(27, 27), ref_second, rtol=0, atol=1e-12)
    projected, _ = first.project(0, 0)
    assert projected._scratch is None
    first.free_scratch()
    assert first._scratch is None
    before = first.tensor.copy()
    for bad in (np.ones(26), np.ones(28), np.ones(9)):
        with pytest.raises(ValueError, match="27 values"):
            first.apply_product([(pair_a[None], [], [0, 1])], bad)
        with pytest.raises(ValueError, match="27 values"):
            first.apply_diagonal(bad)
    assert np.array_equal(first.tensor, before)


@pytest.mark.parametrize(("controls", "targets"), [
    ((), (2,)), ((0, 3), (1,)), ((4,), (0,)), ((1,), (3, 0)), ((), (2, 4)), ((2, 0), (4, 1)),
])
def test_group_apply_kernel_matches_einsum(controls: tuple[int, ...],
                                           targets: tuple[int, ...]) -> None:
    """O x in place on the rows of a (3^5, 7) matrix, O = sum_c |c><c| (x) u[c] on ``targets``
    chosen by the levels of ``controls``, against ``numpy.einsum`` on the row tensor (one
    target: the 3-row path; two: the buffered path) (1e-12)."""
    rng = np.random.default_rng(sum(controls) * 10 + sum(targets))
    n, e = 5, 7
    x = rng.normal(size=(3**n, e)) + 1j * rng.normal(size=(3**n, e))
    m = 3 ** len(targets)
    u = np.stack([_random_matrix(m, rng) for _ in range(3 ** len(controls))])
    letters = string.ascii_lowercase
    src = [*letters[:n], "z"]
    dst = list(src)
    for t, new in zip(targets, "PQ", strict=False):
        dst[t] = new
    spec = (f"{''.join(src[c] for c in controls)}{''.join('PQ'[:len(targets)])}"
            f"{''.join(src[t] for t in targets)},{''.join(src)}->{''.join(dst)}")
    u_tensor = u.reshape((3,) * (len(controls) + 2 * len(targets)))
    expected = np.einsum(spec, u_tensor, x.reshape((3,) * n + (e,))).reshape(3**n, e)
    out = _group_apply_kernel(x, u, *_row_groups(n, controls, targets))
    assert out is x
    assert_allclose(x, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("conserving", [True, False])
@pytest.mark.parametrize("real", [False, True])
def test_propagate_conserving_matches_expm_product(conserving: bool, real: bool) -> None:
    """A stack of random Hermitian Hamiltonians on 3 transmons, excitation-conserving (the
    block-by-block path) or not (the whole-matrix path), complex or real symmetric (float64,
    as a drive-free cluster's: the real eigendecomposition): the ordered product of
    ``scipy.linalg.expm`` per step, last step leftmost (1e-12)."""
    rng = np.random.default_rng(11 + 2 * real if conserving else 12 + 2 * real)
    k, steps, dt = 3, 6, 1e-9
    n_exc = np.array(list(itertools.product(range(3), repeat=k))).sum(axis=1)
    h = np.empty((steps, 27, 27), dtype=float if real else complex)
    for s in range(steps):
        x = _random_matrix(27, rng) * 3e7
        x = x.real if real else x
        x = x + x.conj().T
        if conserving:
            x = np.where(n_exc[:, None] == n_exc[None, :], x, 0.0)
        h[s] = x
    ref = np.eye(27, dtype=complex)
    for x in h:
        ref = scipy.linalg.expm(-2j * np.pi * dt * x) @ ref
    out = propagate_conserving(h, dt, k)
    assert_allclose(out, ref, rtol=0, atol=1e-12)
    if conserving:
        assert not np.any(out[n_exc[:, None] != n_exc[None, :]])


# ------------------------------------------------- spectators held by their populations


def _dephased(rho: np.ndarray, held: tuple[int, ...], n: int) -> np.ndarray:
    """rho with every coherence of the ``held`` sites removed (a valid state, diagonal on
    them)."""
    levels = np.indices((3,) * n).reshape(n, -1)
    keep = np.ones((3**n, 3**n), dtype=bool)
    for p in held:
        keep &= levels[p][:, None] == levels[p][None, :]
    return np.where(keep, rho, 0.0)


def _held_copy(rho: np.ndarray, held: tuple[int, ...], n: int) -> DensityMatrix:
    """A DensityMatrix holding ``held`` by their populations, with the state ``rho`` (which
    must be diagonal on them), written by einsum from the dense matrix."""
    dm = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n, held)
    letters = string.ascii_letters
    rows = letters[:n]
    cols = "".join(rows[p] if p in held else letters[n + p] for p in range(n))
    out = rows + "".join(letters[n + p] for p in range(n) if p not in held)
    dm.tensor = np.einsum(f"{rows}{cols}->{out}", rho.reshape((3,) * (2 * n))).copy()
    return dm


def test_spectators_held_by_populations_evolve_as_the_dense_state() -> None:
    """Five transmons, sites 0 and 3 held by their populations: conditioned drives and pair
    unitaries controlled by them, an excitation-conserving pair on adjacent sites (the BLAS
    block path), ZZ diagonals, relaxation of the held sites, band and dense channels on the
    others (physical channels: the state stays Hermitian, which the row passes rely on), a
    controlled channel, and a projection give the dense state's results (matrix, populations,
    probabilities; 1e-12). Operators on a held site are refused."""
    rng = np.random.default_rng(2026)
    n, held = 5, (0, 3)
    rho = _dephased(_random_rho(3**n, rng), held, n)
    dense = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    dense.tensor = rho.reshape((3,) * (2 * n)).copy()
    dm = _held_copy(rho, held, n)
    assert dm.shape == (3**5, 3**3) and dm.active == (1, 2, 4)
    assert_allclose(dm.matrix(), rho, rtol=0, atol=0)
    levels = np.array(list(itertools.product(range(3), repeat=2))).sum(axis=1)
    conserving = np.zeros((9, 9), dtype=complex)
    for e in np.unique(levels):
        idx = np.flatnonzero(levels == e)
        conserving[np.ix_(idx, idx)] = _random_unitary(idx.size, rng)
    relax = relaxation_superop(20e-6, 35e-6, 300e-9, -210e6, 0.05)
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, 3))
    u3 = _random_unitary(3, rng)
    steps = [
        ("apply_product", [(np.stack([_random_unitary(3, rng) for _ in range(9)]), [0, 3], [2]),
                           (conserving[None], [], [1, 2]),
                           (np.stack([_random_unitary(9, rng) for _ in range(3)]), [3], [4, 1])],
         np.exp(1j * rng.uniform(-np.pi, np.pi, 3**n))),
        ("apply_diagonal", np.exp(1j * rng.uniform(-np.pi, np.pi, 3**n))),
        ("apply_superop", relax, 0),
        ("apply_superop", relax, 3),
        ("apply_superop", np.kron(np.diag(phase), np.diag(phase.conj())) @ relax, 2),
        ("apply_superop", np.kron(u3, u3.conj()) @ relax, 4),
        ("apply_controlled_channel", np.stack([_random_unitary(3, rng) for _ in range(9)]),
         relax, [0, 2], 1),
    ]
    for name, *args in steps:
        getattr(dense, name)(*args)
        getattr(dm, name)(*args)
        assert_allclose(dm.matrix(), dense.matrix(), rtol=0, atol=1e-12, err_msg=name)
    assert_allclose(dm.populations(), dense.populations(), rtol=0, atol=1e-12)
    for level in range(3):
        (held_child, p_held), (dense_child, p_dense) = dm.project(4, level), dense.project(4,
                                                                                          level)
        assert abs(p_held - p_dense) < 1e-12 and p_dense > 1e-3
        assert_allclose(held_child.matrix(), dense_child.matrix(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"positions \[3\] are held diagonal"):
        dm.apply_unitary(_random_unitary(9, rng), [2, 3])
    with pytest.raises(ValueError, match="position 0 is held diagonal"):
        dm.apply_superop(np.kron(u3, u3.conj()), 0)


#: (transmons, target, controls in stack order, positions held by their populations); with
#: none held, the kernel computes the blocks on and above the diagonal and mirrors the rest.
CONTROLLED_CASES = [(4, 1, [0, 2, 3], ()), (4, 1, [0, 2, 3], (0, 3)), (4, 0, [3, 1], (1,)),
                    (5, 4, [2, 0, 3], (0, 2)), (3, 2, [], (0,)), (5, 2, [4, 1], (1, 3, 4)),
                    (5, 4, [2, 0, 3], ()), (3, 0, [], ()), (5, 2, [4, 1], ())]


@pytest.mark.parametrize(("n", "target", "controls", "held"), CONTROLLED_CASES)
@pytest.mark.parametrize("channel", ["none", "band", "dense"])
def test_controlled_channel_matches_dense_operators(n: int, target: int, controls: list[int],
                                                    held: tuple[int, ...], channel: str) -> None:
    """``apply_controlled_channel`` (one numba pass over the target's 3x3 blocks) against
    U S(rho) U^dag written densely (the superoperator by einsum, U basis state by basis
    state), with the target turned by a drive phase, on the first, a middle and the last
    position, controls in any order, held by their populations or carrying coherences, and
    no, a band or a dense superoperator: 1e-12 elementwise. A held target and a stack that
    does not match the controls are refused."""
    rng = np.random.default_rng(11)
    phase = 0.7
    rho = _dephased(_random_rho(3**n, rng), held, n)
    u_stack = np.stack([_random_unitary(3, rng) for _ in range(3 ** len(controls))])
    relax = relaxation_superop(20e-6, 35e-6, 300e-9, -210e6, 0.05)
    u3 = _random_unitary(3, rng)
    superop = {"none": None, "band": relax, "dense": np.kron(u3, u3.conj()) @ relax}[channel]
    r = np.exp(1j * phase * np.arange(3))
    u = _dense_controlled(r[None, :, None] * u_stack * r.conj()[None, None, :], controls,
                          [target], n)
    want = rho if superop is None else _einsum_superop(rho, superop, target, n)
    want = u @ want @ u.conj().T
    dm = _held_copy(rho, held, n)
    dm.apply_controlled_channel(u_stack, superop, controls, target, phase)
    assert_allclose(dm.matrix(), want, rtol=0, atol=1e-12)
    assert np.abs(want - rho).max() > 1e-3  # the channel did something (entries ~1/3^n)
    wrong = u_stack[:1] if controls else np.stack([u3] * 3)
    with pytest.raises(ValueError, match="need a stack of shape"):
        dm.apply_controlled_channel(wrong, None, controls, target)
    with pytest.raises(ValueError, match="need a stack of shape"):
        dm.apply_controlled(wrong, controls, [target])
    with pytest.raises(ValueError, match="name a position twice"):
        dm.apply_controlled(np.stack([u3] * 3), [target], [target])
    with pytest.raises(ValueError, match="name a position twice"):
        dm.apply_unitary(np.kron(u3, u3), [target, target])
    if held:
        with pytest.raises(ValueError, match=rf"positions \[{held[0]}\] are held diagonal"):
            dm.apply_controlled_channel(u_stack[:1], None, [], held[0])


@pytest.mark.parametrize(("n", "held", "e"), [(1, (0,), 1), (3, (1,), 9), (4, (0, 3), 27),
                                              (5, (0, 2, 4), 9), (4, (0, 1, 2, 3), 1)])
def test_level_maps_kernel_matches_one_einsum_per_held_transmon(n: int, held: tuple[int, ...],
                                                                e: int) -> None:
    """Real 3x3 maps on the populations of several held transmons, in one in-place sweep,
    against one ``numpy.einsum`` per transmon on the (3,)*n x e array."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(3,) * n + (e,)) + 1j * rng.normal(size=(3,) * n + (e,))
    maps = rng.normal(size=(len(held), 3, 3))
    expected = x
    for m, p in zip(maps, held, strict=True):
        expected = np.moveaxis(np.tensordot(m, expected, axes=([1], [p])), 0, p)
    flat = x.reshape(-1).copy()
    _level_maps_kernel(flat, maps, *_held_rows(n, held), e)
    assert_allclose(flat.reshape(x.shape), expected, rtol=0, atol=1e-12)


def test_held_channels_in_one_sweep_equal_them_one_by_one() -> None:
    """``apply_held_channels`` on three held positions of six (relaxation towards a thermal
    state, with and without diagonal phases) equals the same channels applied one at a time
    on the dense state (1e-12); it refuses a channel that creates coherences, a position that
    is not held and one named twice, and applies nothing then."""
    rng = np.random.default_rng(5)
    n, held = 6, (0, 2, 5)
    rho = _dephased(_random_rho(3**n, rng), held, n)
    dense = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    dense.tensor = rho.reshape((3,) * (2 * n)).copy()
    dm = _held_copy(rho, held, n)
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, 3))
    channels = [(relaxation_superop(20e-6, 35e-6, 300e-9, -210e6, 0.05), 0),
                (np.kron(np.diag(phase), np.diag(phase.conj()))
                 @ relaxation_superop(9e-6, 12e-6, 2e-6, -190e6, 0.1), 2),
                (relaxation_superop(40e-6, 60e-6, 1e-6), 5)]
    for superop, p in channels:
        dense.apply_superop(superop, p)
    dm.apply_held_channels(channels)
    assert_allclose(dm.matrix(), dense.matrix(), rtol=0, atol=1e-12)
    before = dm.tensor.copy()
    u3 = _random_unitary(3, rng)
    for bad, match in [([(np.kron(u3, u3.conj()), 2)], "creates coherences"),
                       ([channels[0], (channels[1][0], 1)], "not held diagonal"),
                       ([channels[0], channels[0]], "named twice")]:
        with pytest.raises(ValueError, match=match):
            dm.apply_held_channels(bad)
        assert_allclose(dm.tensor, before, rtol=0, atol=0)


def test_a_projection_that_holds_the_measured_position_evolves_as_the_dense_one() -> None:
    """``project(..., hold=True)`` (a feed-forward branch after a measurement nothing acts on
    afterwards) keeps the measured position by its populations: the same matrix and
    probability as the plain projection, and every later operation that does not act on
    that position (unitaries, channels, phases, a unitary conditioned on it, its own
    relaxation) gives the same state, within 1e-12. Operating on it is refused."""
    rng = np.random.default_rng(7)
    n, measured = 4, 2
    dense = DensityMatrix([np.array([1.0, 0.0, 0.0])] * n)
    dense.tensor = _random_rho(3**n, rng).reshape((3,) * (2 * n))
    relax = relaxation_superop(20e-6, 35e-6, 300e-9, -210e6, 0.05)
    u3 = _random_unitary(3, rng)
    steps = [
        ("apply_unitary", _random_unitary(9, rng), [0, 1]),
        ("apply_superop", relax, measured),
        ("apply_superop", np.kron(u3, u3.conj()) @ relax, 3),
        ("apply_diagonal", np.exp(1j * rng.uniform(-np.pi, np.pi, 3**n))),
        ("apply_controlled", np.stack([_random_unitary(3, rng) for _ in range(3)]), [measured],
         [1]),
    ]
    for level in range(3):
        plain, p_plain = dense.project(measured, level)
        held, p_held = dense.project(measured, level, hold=True)
        assert held.diagonal == (measured,) and plain.diagonal == ()
        assert abs(p_held - p_plain) < 1e-12 and p_plain > 1e-3
        assert_allclose(held.matrix(), plain.matrix(), rtol=0, atol=1e-12)
        for name, *args in steps:
            getattr(plain, name)(*args)
            getattr(held, name)(*args)
            assert_allclose(held.matrix(), plain.matrix(), rtol=0, atol=1e-12, err_msg=name)
        with pytest.raises(ValueError, match=rf"positions \[{measured}\] are held diagonal"):
            held.apply_unitary(_random_unitary(9, rng), [measured, 3])


def _zz_energy(zz: np.ndarray) -> np.ndarray:
    """sum_{a<b} zz[a, b] n_a n_b over the basis states of len(zz) transmons (first most
    significant)."""
    k = zz.shape[0]
    levels = np.array(list(itertools.product(range(3), repeat=k))).T
    return sum(zz[a, b] * levels[a] * levels[b] for a in range(k) for b in range(a + 1, k))


def test_dropping_a_decoupled_held_position_commutes_with_what_follows() -> None:
    """Positions 0 and 3 of five are held, and position 0 couples (ZZ) only to position 3: a
    unitary on the others, a ZZ diagonal over all five (the 0-3 pair included), relaxation
    of every position, then summing position 0 out, equals summing it out first and then
    the same operations without it (1e-12). Dropping a position with coherences is refused."""
    rng = np.random.default_rng(17)
    n, held = 5, (0, 3)
    dm = _held_copy(_dephased(_random_rho(3**n, rng), held, n), held, n)
    zz = np.triu(rng.normal(size=(n, n)) * 1e6, 1)
    zz[0, [1, 2, 4]] = 0.0  # position 0 couples to position 3 only
    u = _random_unitary(27, rng)
    relax = relaxation_superop(20e-6, 35e-6, 300e-9, -210e6, 0.05)
    first = dm.drop((0,))
    assert first.n == 4 and first.diagonal == (2,) and first.active == (0, 1, 3)
    dm.apply_unitary(u, [1, 2, 4])
    dm.apply_diagonal(np.exp(-2j * np.pi * _zz_energy(zz) * 1e-7))
    for p in range(n):
        dm.apply_superop(relax, p)
    first.apply_unitary(u, [0, 1, 3])
    first.apply_diagonal(np.exp(-2j * np.pi * _zz_energy(zz[1:, 1:]) * 1e-7))
    for p in range(n - 1):
        first.apply_superop(relax, p)
    assert_allclose(first.matrix(), dm.drop((0,)).matrix(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="not held diagonal"):
        dm.drop((1,))


@pytest.mark.parametrize("diagonal", [(), (0,), (1, 3), (0, 1, 2, 3)])
def test_product_state_is_the_kron_of_its_factors(diagonal: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(diagonal))
    populations = [rng.dirichlet(np.ones(3)) for _ in range(4)]
    ref = np.ones((1, 1), dtype=complex)
    for i, p in enumerate(populations):  # a held position contributes rows only
        ref = np.kron(ref, (p[:, None] if i in diagonal else np.diag(p)).astype(complex))
    rho = DensityMatrix(populations, diagonal)
    active = 4 - len(diagonal)
    assert rho.tensor.shape == (3,) * (4 + active)
    np.testing.assert_array_equal(rho.tensor.reshape(3**4, 3**active), ref)


@pytest.mark.parametrize("first", [True, False])
def test_kron_identity_is_numpy_kron(first: bool) -> None:
    rng = np.random.default_rng(5)
    u = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    ref = np.kron(u, np.eye(3)) if first else np.kron(np.eye(3), u)
    out = kron_identity(u, first)
    assert out.dtype == ref.dtype
    np.testing.assert_array_equal(out, ref)


def test_a_state_of_no_positions_is_the_number_one() -> None:
    """A program that evolves no transmon starts from the 1x1 state 1, as the kron of no
    factors is."""
    rho = DensityMatrix([])
    assert rho.tensor.shape == () and rho.tensor == 1.0


def _relaxation_with_phases() -> np.ndarray:
    """A physical one-transmon channel (T1 towards a thermal state, dephasing, idle |2> phase)
    composed with a diagonal phase: it conserves i - j and its population weights are real."""
    phase = np.exp(1j * np.array([0.0, 0.3, -1.1]))
    return (np.kron(np.diag(phase), np.diag(phase.conj()))
            @ relaxation_superop(20e-6, 35e-6, 80e-9, -210e6, 0.02))


@pytest.mark.parametrize("case", ["physical", "tolerance", "above", "nan weight", "complex",
                                  "off band", "nan off band", "fortran", "real dtype"])
def test_band_classification_against_numpy(case: str) -> None:
    """``density._band`` (one numba call) classifies a 9x9 superoperator as the numpy
    expressions it replaced: 0 if an entry outside ``BAND_MASK`` is not exactly 0 (NaN is not
    0), else 2 if every population weight's imaginary part is at most ``REAL_WEIGHT_TOL`` (NaN
    is not), else 1; with the real kernel's operands taken from the entries."""
    s = _relaxation_with_phases()
    pop_entries = np.ix_([0, 4, 8], [0, 4, 8])
    if case == "tolerance":
        s[pop_entries] = s[pop_entries].real + 1j * density.REAL_WEIGHT_TOL
    elif case == "above":
        s[pop_entries] = s[pop_entries].real + 2j * density.REAL_WEIGHT_TOL
    elif case == "nan weight":
        s[0, 4] = complex(s[0, 4].real, np.nan)
    elif case == "complex":
        s[4, 0] += 0.1j
    elif case == "off band":
        s[1, 0] = 1e-300
    elif case == "nan off band":
        s[1, 0] = np.nan
    elif case == "fortran":
        s = np.asfortranarray(s)
    elif case == "real dtype":
        s = _relaxation_with_phases().real * BAND_MASK
    flat, kind, pop, coh = density._band(s)
    ref = np.ascontiguousarray(s, dtype=np.complex128).reshape(-1)
    off = ref[~BAND_MASK.reshape(-1)]
    weights = ref[BAND_POPULATIONS]
    expected = (0 if np.any(off != 0) else
                2 if np.abs(weights.imag).max() <= density.REAL_WEIGHT_TOL else 1)
    assert kind == expected
    assert expected == {"physical": 2, "tolerance": 2, "above": 1, "nan weight": 1,
                        "complex": 1, "off band": 0, "nan off band": 0, "fortran": 2,
                        "real dtype": 2}[case]
    np.testing.assert_array_equal(flat, ref)
    if kind:
        np.testing.assert_array_equal(pop, weights.real.reshape(3, 3))
        np.testing.assert_array_equal(coh, ref[BAND_COHERENCES])
