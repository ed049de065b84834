"""Split-step propagation of cluster blocks with several driven qubits
(``firmware_sim.split``) against an independent reference.

The problem: three coupled three-level transmons in a common frame, the middle one moved by a
flux pulse, the outer two driven by Gaussian pulses (15 MHz peak, constant per sample in their
own frames, which are 450 and 800 MHz from the common frame). The reference integrates
dU/dt = -i 2 pi H(t) U with ``scipy.integrate.solve_ivp`` (DOP853, rtol 1e-11) sample by sample,
with the drives rotating continuously: it shares no code with the engine.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp

from labqpu.firmware_sim import split
from labqpu.firmware_sim.density import _level_numbers
from labqpu.firmware_sim.split import (
    SPLIT_TOL,
    SplitParts,
    _drive_steps,
    _excitation_order,
    _level_rows,
    _split_sample_kernel,
    split_step_adaptive,
    split_step_extrapolated,
    split_step_unitary,
)

FS = 1e9
N_SAMPLES = 26
B0 = 17  # the block's first sample in the program (sets the drives' phases)
A3 = np.diag(np.sqrt([1.0, 2.0]), 1).astype(complex)


def _embed(op: np.ndarray, pos: int, k: int) -> np.ndarray:
    out = np.ones((1, 1), dtype=complex)
    for i in range(k):
        out = np.kron(out, op if i == pos else np.eye(3))
    return out


def problem() -> tuple[np.ndarray, np.ndarray, list[tuple[int, np.ndarray, float]]]:
    """(constant part, diagonal per sample, drives) of the three-transmon block (Hz)."""
    k = 3
    a = [_embed(A3, i, k) for i in range(k)]
    n = [x.conj().T @ x for x in a]
    const = sum(0.5 * alpha * (m @ m - m) for alpha, m in zip((-220e6, -210e6, -200e6), n,
                                                          strict=True))
    for (i, j), g in {(0, 1): 12e6, (1, 2): 10e6}.items():
        const = const + g * (a[i].conj().T @ a[j] + a[i] @ a[j].conj().T)
    t = np.arange(N_SAMPLES)
    flux = -150e6 * np.sin(np.pi * (t + 0.5) / N_SAMPLES) ** 2  # the middle transmon moves
    freqs = np.stack([np.full(N_SAMPLES, 0.3e6), 450e6 + flux, np.full(N_SAMPLES, 801e6)], 1)
    diag = freqs @ _level_numbers(k)
    env = 15e6 * np.exp(-0.5 * ((t - 12.5) / 4.0) ** 2)
    drives = [(0, env * np.exp(0.4j), 0.0), (2, env * np.exp(-1.1j), 800e6)]
    return const, diag, drives


def reference(const: np.ndarray, diag: np.ndarray, drives: list, b0: int = B0) -> np.ndarray:
    """solve_ivp of the time-dependent Hamiltonian, sample by sample."""
    d = const.shape[0]
    k = round(np.log(d) / np.log(3))
    lowering = {pos: _embed(A3, pos, k) for pos, _, _ in drives}
    u = np.eye(d, dtype=complex)
    for s in range(diag.shape[0]):
        h_s = const + np.diag(diag[s])

        def rhs(t, y, h_s=h_s, s=s):
            h = h_s.copy()
            for pos, z, off in drives:
                w = z[s] * np.exp(-2j * np.pi * off * t / FS)
                h += 0.5 * (w * lowering[pos].conj().T + np.conj(w) * lowering[pos])
            return (-2j * np.pi / FS * h @ y.reshape(d, d)).ravel()

        sol = solve_ivp(rhs, (b0 + s, b0 + s + 1), u.ravel(), method="DOP853", rtol=1e-11,
                        atol=1e-13)
        u = sol.y[:, -1].reshape(d, d)
    return u


@pytest.fixture(scope="module")
def exact() -> np.ndarray:
    u = reference(*problem())
    assert np.abs(u.conj().T @ u - np.eye(27)).max() < 1e-9
    return u


def test_the_adaptive_split_is_within_its_tolerance_of_the_exact_propagator(exact) -> None:
    """At the default tolerance the result is within 3 SPLIT_TOL (3e-5) of the reference
    elementwise (measured 3.2e-6, at s = 2), unitary, and the drives really act
    (the propagator without them is more than 0.1 away). It is the extrapolation at the
    sub-steps it returns, so a later propagation of the same shape gives the same operator."""
    const, diag, drives = problem()
    u, sub = split_step_adaptive(const, diag, drives, B0, FS, 3)
    assert np.abs(u - exact).max() <= 3 * SPLIT_TOL
    assert 2 <= sub <= 64
    assert np.abs(u.conj().T @ u - np.eye(27)).max() < 1e-10
    again = split_step_extrapolated(const, diag, drives, B0, FS, 3, sub)
    assert np.array_equal(again, u)
    bare = split_step_unitary(const, diag, [], B0, FS, 3, 1)
    assert np.abs(bare - exact).max() > 0.1


def test_the_adaptive_split_needs_fewer_sub_steps_than_the_split_alone(exact) -> None:
    """For the same error (SPLIT_TOL = 1e-5), the plain split needs 32 sub-steps per sample
    on this problem (error 6.6e-6; 1.1e-4 at 8, 2.7e-5 at 16); the adaptive extrapolation
    propagates at most 4 and 8 (measured: 2 and 4)."""
    const, diag, drives = problem()
    _, sub = split_step_adaptive(const, diag, drives, B0, FS, 3)
    assert sub <= 4
    plain = {s: np.abs(split_step_unitary(const, diag, drives, B0, FS, 3, s) - exact).max()
             for s in (3 * sub, 16)}
    assert plain[3 * sub] > 3 * SPLIT_TOL and plain[16] > SPLIT_TOL


@pytest.mark.parametrize(("tol", "want_sub", "bound"), [(1e-7, 8, 3e-7), (1e-8, 16, 3e-8)])
def test_step_doubling_stops_at_the_first_s_within_the_tolerance(exact, tol: float,
                                                                  want_sub: int,
                                                                  bound: float) -> None:
    """A tighter tolerance doubles s until the extrapolations at s and 2s agree within it:
    1e-7 gives s = 8 (error 1.2e-8), 1e-8 gives s = 16 (1.4e-9); the extrapolations at half
    that s differ by more than the tolerance (so doubling had to go on), and the result is
    within 3x the tolerance of the reference."""
    const, diag, drives = problem()
    u, sub = split_step_adaptive(const, diag, drives, B0, FS, 3, tol=tol)
    assert sub == want_sub
    assert np.abs(u - exact).max() <= bound
    coarser = [split_step_extrapolated(const, diag, drives, B0, FS, 3, s)
               for s in (sub // 2, sub)]
    assert np.abs(coarser[0] - coarser[1]).max() > tol


def test_step_doubling_stops_at_the_most_sub_steps(exact, monkeypatch) -> None:
    """With a tolerance no extrapolation meets (0) and at most 16 sub-steps, the propagator
    is the extrapolation at 8 and 16 sub-steps (s = 8), the finest allowed."""
    monkeypatch.setattr(split, "SPLIT_MAX_SUBSTEPS", 16)
    const, diag, drives = problem()
    u, sub = split_step_adaptive(const, diag, drives, B0, FS, 3, tol=0.0)
    assert sub == 8
    assert np.array_equal(u, split_step_extrapolated(const, diag, drives, B0, FS, 3, 8))


def test_the_split_converges_at_second_order(exact) -> None:
    """Halving the step divides the error by ~4 (between 3 and 5), from 4 to 16 sub-steps."""
    const, diag, drives = problem()
    errors = [np.abs(split_step_unitary(const, diag, drives, B0, FS, 3, sub) - exact).max()
              for sub in (4, 8, 16)]
    for coarse, fine in itertools.pairwise(errors):
        assert 3.0 < coarse / fine < 5.0


def test_the_extrapolation_converges_at_fourth_order_and_stays_unitary(exact) -> None:
    """Halving the step divides the extrapolation's error by ~16 (between 10 and 25), from 2
    to 8 sub-steps (measured 3.2e-6, 2.0e-7, 1.2e-8); each is unitary within 1e-10 (before
    the Newton-Schulz step, its departure from unitarity is ~1e-6 at 2 sub-steps)."""
    const, diag, drives = problem()
    us = [split_step_extrapolated(const, diag, drives, B0, FS, 3, sub) for sub in (2, 4, 8)]
    errors = [np.abs(u - exact).max() for u in us]
    for coarse, fine in itertools.pairwise(errors):
        assert 10.0 < coarse / fine < 25.0
    for u in us:
        assert np.abs(u.conj().T @ u - np.eye(27)).max() < 1e-10


def test_the_common_frame_is_a_choice_not_physics() -> None:
    """The same block computed with the common frame moved by 370 MHz (every diagonal entry
    shifted by -370 MHz x N, every drive's offset by -370 MHz) is the same propagator after
    the frame change exp(i 2 pi 370 MHz N t), within 1e-10."""
    const, diag, drives = problem()
    shift = 370e6
    big_n = _level_numbers(3).sum(axis=0)
    u = split_step_unitary(const, diag, drives, B0, FS, 3, 8)
    moved = split_step_unitary(const, diag - shift * big_n,
                               [(p, z, off - shift) for p, z, off in drives], B0, FS, 3, 8)
    t0, t1 = B0 / FS, (B0 + N_SAMPLES) / FS
    back = (np.exp(-2j * np.pi * shift * big_n * t1)[:, None] * moved) \
        * np.exp(2j * np.pi * shift * big_n * t0)[None, :]
    assert np.abs(back - u).max() < 1e-10


def _dense_split(const: np.ndarray, diag: np.ndarray, drives: list, b0: int, sub: int
                 ) -> np.ndarray:
    """The plain split of ``firmware_sim.split``'s module docstring with dense matrices and
    ``scipy.linalg.expm``, sample by sample: a driven sample half (D full ... full D) half,
    an undriven one exact."""
    d = const.shape[0]
    k = round(np.log(d) / np.log(3))
    lowering = {pos: _embed(A3, pos, k) for pos, _, _ in drives}
    tau = 1.0 / (FS * sub)
    u = np.eye(d, dtype=complex)
    for s in range(diag.shape[0]):
        h = const + np.diag(diag[s])
        if not any(z[s] != 0 for _, z, _ in drives):
            u = scipy.linalg.expm(-2j * np.pi * h / FS) @ u
            continue
        half = scipy.linalg.expm(-1j * np.pi * h * tau)
        u = half @ u
        for m in range(sub):
            t = (b0 + s + (m + 0.5) / sub) / FS
            v = sum(0.5 * (w * lowering[pos].conj().T + np.conj(w) * lowering[pos])
                    for pos, z, off in drives
                    for w in [z[s] * np.exp(-2j * np.pi * off * t)])
            u = scipy.linalg.expm(-2j * np.pi * v * tau) @ u
            u = (scipy.linalg.expm(-2j * np.pi * h * tau) if m < sub - 1 else half) @ u
    return u


def test_consecutive_samples_with_one_diagonal_share_their_half_steps() -> None:
    """Driven samples with the same diagonal (a flux pulse's flat top) join the last half
    step of one to the first of the next; an undriven sample between them, even with that
    diagonal, and a change of diagonal do not. The propagator equals the plain split written
    with dense matrices and expm within 1e-12."""
    const, diag, drives = problem()
    rows = [5, 5, 5, 5, 5, 5, 5, 9, 9, 9]  # sample 4 (undriven) keeps the flat top's row
    flat = diag[rows]
    z = [np.where(np.arange(10) == 4, 0, zs[10:20]) for _, zs, _ in drives]
    flat_drives = [(pos, zs, off) for (pos, _, off), zs in zip(drives, z, strict=True)]
    got = split_step_unitary(const, flat, flat_drives, B0, FS, 3, 3)
    want = _dense_split(const, flat, flat_drives, B0, 3)
    assert np.abs(got - want).max() < 1e-12


def _sample_reference(u, first, full, ops, positions):
    """The split steps of one sample but its last half step, with plain numpy
    (``_split_sample_kernel``'s reference)."""
    d = u.shape[0]
    u = first @ u
    for m in range(ops.shape[0]):
        for j, pos in enumerate(positions):
            u = np.matmul(ops[m, j], u.reshape(3**pos, 3, -1)).reshape(d, d)
        if m < ops.shape[0] - 1:
            u = full @ u
    return u


@pytest.mark.parametrize(("k", "positions", "sub"), [(2, [0, 1], 3), (3, [2, 0], 1),
                                                     (4, [1, 3], 4), (4, [0, 1, 2], 2)])
def test_the_sample_kernel_matches_numpy(k: int, positions: list[int], sub: int) -> None:
    """Random block-diagonal half and full steps (excitation blocks) and random local ops on
    2-4 transmons, on any positions in any order: the numba kernel, which carries the rows in
    excitation order and updates them in place, equals the numpy reference in the plain basis
    within 1e-12 elementwise."""
    rng = np.random.default_rng(k * 10 + sub)
    d = 3**k
    order, starts, offsets = _excitation_order(k)

    def rand(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    def block_diagonal() -> tuple[np.ndarray, np.ndarray]:
        data = rand(offsets[-1]) / d
        dense = np.zeros((d, d), dtype=complex)
        for b in range(starts.size - 1):
            idx = order[starts[b]:starts[b + 1]]
            dense[np.ix_(idx, idx)] = data[offsets[b]:offsets[b + 1]].reshape(idx.size, idx.size)
        return data, dense

    (half, half_dense), (full, full_dense) = block_diagonal(), block_diagonal()
    u = rand(d, d)
    ops = rand(sub, len(positions), 3, 3)
    rows = np.stack([_level_rows(k, p) for p in positions])
    got = u[order].copy()
    _split_sample_kernel(got, half, full, starts, offsets, ops, rows)  # in place
    want = _sample_reference(u, half_dense, full_dense, ops, positions)
    assert np.abs(got - want[order]).max() < 1e-12


def test_kept_blocks_give_the_same_propagator_and_stay_bounded(monkeypatch) -> None:
    """A propagator computed with the blocks of exp(H_s) kept from earlier calls equals one
    computed afresh; a SplitParts that reaches its bound starts over instead of growing."""
    const, diag, drives = problem()
    parts = SplitParts()
    first = split_step_unitary(const, diag, drives, B0, FS, 3, 4, parts)
    kept = len(parts)
    assert kept == len({row.tobytes() for row in diag})
    again = split_step_unitary(const, diag, drives, B0, FS, 3, 4, parts)
    assert np.array_equal(again, first)
    assert np.array_equal(split_step_unitary(const, diag, drives, B0, FS, 3, 4), first)
    cap = 3 * parts.nbytes // kept  # room for about three rows and their step lengths
    monkeypatch.setattr("labqpu.firmware_sim.split.SPLIT_PARTS_BYTES", cap)
    bounded = SplitParts()
    assert np.array_equal(split_step_unitary(const, diag, drives, B0, FS, 3, 4, bounded), first)
    assert 0 < bounded.nbytes <= cap
    assert len(bounded) < kept
    assert bounded.nbytes == _held_bytes(bounded)


def _held_bytes(parts: SplitParts) -> int:
    """The bytes of the arrays ``parts`` really holds (not its own count)."""
    return sum(sum(e.nbytes + w.nbytes for e, w in eig) + sum(b.nbytes for b in steps.values())
               for eig, steps in parts._rows.values())


def test_one_row_with_many_step_lengths_stays_under_the_byte_cap(monkeypatch) -> None:
    """Idle stretches of many lengths at one flux (a delay sweep) add step lengths to one
    row: what the parts hold, counted from the arrays themselves, stays under the cap, and
    every step is still exp(-i 2 pi H_s t) of its own length."""
    const, diag, _ = problem()
    row = diag[0]
    parts = SplitParts()
    one = parts.step(const, row, 3, 1e-9)
    cap = 20 * one.nbytes
    monkeypatch.setattr("labqpu.firmware_sim.split.SPLIT_PARTS_BYTES", cap)
    parts = SplitParts()
    order = _excitation_order(3)[0]
    h = (const + np.diag(row))[np.ix_(order, order)]
    for n in range(1, 200):
        blocks = parts.step(const, row, 3, n * 1e-9)
        assert parts.nbytes == _held_bytes(parts) <= cap
    exact = scipy.linalg.expm(-2j * np.pi * h * 199e-9)
    starts, offsets = _excitation_order(3)[1:]
    for b in range(starts.size - 1):
        s0, s1 = starts[b], starts[b + 1]
        got = blocks[offsets[b]:offsets[b + 1]].reshape(s1 - s0, s1 - s0)
        assert np.abs(got - exact[s0:s1, s0:s1]).max() < 1e-10


def test_drive_steps_computed_in_chunks_give_the_same_propagator(monkeypatch) -> None:
    """The drive exponentials are computed a bounded number of sub-steps at a time (memory
    stays small on long blocks at many sub-steps): chunks of a few samples give the same
    propagator as one chunk."""
    const, diag, drives = problem()
    whole = split_step_unitary(const, diag, drives, B0, FS, 3, 4)
    monkeypatch.setattr("labqpu.firmware_sim.split.DRIVE_STEPS_AT_ONCE", 12)  # 3 samples
    assert np.array_equal(split_step_unitary(const, diag, drives, B0, FS, 3, 4), whole)


def test_the_drive_steps_closed_form_matches_expm() -> None:
    """Each sub-step's 3x3 drive exponential (closed form from V's eigenvalues 0 and
    +-sqrt(3)|w|/2) equals scipy's expm of -i 2 pi V tau within 1e-13, for drives from 0 Hz to
    300 MHz at four sub-steps per sample."""
    rng = np.random.default_rng(5)
    z = np.concatenate([[0.0], 3e8 * rng.random(7)]) * np.exp(1j * rng.uniform(-3, 3, 8))
    t0 = np.arange(8, dtype=float) + 40.0
    steps = _drive_steps(z, 123e6, t0, FS, 4)
    for s in range(8):
        for m in range(4):
            t = (t0[s] + (m + 0.5) / 4) / FS
            w = z[s] * np.exp(-2j * np.pi * 123e6 * t)
            v = 0.5 * (w * A3.conj().T + np.conj(w) * A3)
            want = scipy.linalg.expm(-2j * np.pi * v / (4 * FS))
            assert np.abs(steps[s, m] - want).max() < 1e-13
