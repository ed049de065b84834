"""The cache of cluster propagators (flux blocks, ``firmware_sim.clusters``) against the
uncached computation.

A cluster block's propagator is cached with its drives' time offset and common phase split off
(applied again as a frame change exp(i psi N)). The reference here is the engine's own per-sample
propagation in the common frame (``_cluster_common_frame_unitary``; with several driven qubits
the split steps of ``firmware_sim.split`` at the sub-steps the engine chose) fed the block's
drives as they are, at their absolute time, with no normalisation and no cache, then expressed
in the
dressed basis and frames by the formula of the model: R(b1) V^T U V R(b0)^dag with
R(t) = exp(i 2 pi (f~ - f_ref) . n t / fs). Tolerance 1e-12 elementwise (the frame phases reach
~4000 rad in the 4-transmon case, where double precision rounds at ~1e-12).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import labqpu
from labqpu.firmware_sim import clusters
from labqpu.firmware_sim.blocks import _RunContext
from labqpu.firmware_sim.clusters import cluster_drive_key, rotate_excitation_phase
from labqpu.firmware_sim.density import _level_numbers
from labqpu.firmware_sim.device import load_device, load_rack
from labqpu.firmware_sim.physics import PhysicsEngine, Settings
from labqpu.firmware_sim.split import SPLIT_TOL, split_step_extrapolated

DEVICE = load_device("lab5")
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
FS = DEVICE.sample_rate_hz
N_PORTS = 15
NCO_HZ = -80e6
N_FLUX = 30
N_DRIVE = 24


def settings() -> Settings:
    los = {"lo_drive_a": (DEVICE.qubits[2].max_frequency_hz - NCO_HZ + 0.7e6, 13.0, True),
           "lo_drive_b": (DEVICE.qubits[3].max_frequency_hz - NCO_HZ - 1.1e6, 13.0, True),
           "lo_readout": (7.0e9, 13.0, True)}
    currents = {(cab.flux_source, cab.flux_channel): DEVICE.qubits[q].sweet_spot_current_a
                for q, cab in RACK.cabling.items()}
    return Settings(los=los, currents=currents)


def pulse(n: int) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (x / (n / 4)) ** 2)
    return g - 0.4j * x / (n / 4) ** 2 * g


def add_block(samples: np.ndarray, t0: int, phases: dict[int, float],
              amplitudes: dict[int, float] | None = None) -> None:
    """A flux pulse on qubit 2 from ``t0`` and, overlapping it, a drive on each qubit of
    ``phases`` (NCO at NCO_HZ from absolute sample 0, turned by its phase; amplitude 0.2 of
    full scale unless ``amplitudes`` says otherwise)."""
    samples[RACK.cabling[2].flux_port, t0:t0 + N_FLUX] += 0.08 * np.sin(
        np.pi * (np.arange(N_FLUX) + 0.5) / N_FLUX) ** 2
    t = np.arange(t0 + 3, t0 + 3 + N_DRIVE)
    for q, ph in phases.items():
        amp = (amplitudes or {}).get(q, 0.2)
        samples[RACK.cabling[q].drive_port, t] += amp * pulse(N_DRIVE) * np.exp(
            1j * (2 * np.pi * NCO_HZ * t / FS + ph))


def context(engine: PhysicsEngine, samples: np.ndarray, st: Settings, cluster: list[int],
            anchor: int) -> _RunContext:
    phi_dc = {q: engine._flux_dc_phi0(q, st) for q in range(len(DEVICE.qubits))}
    model = engine.dressed_model(phi_dc)
    return _RunContext(samples, st, phi_dc, model, cluster, {q: i for i, q in enumerate(cluster)},
                       None, {}, np.zeros(1), anchor)


def uncached(engine: PhysicsEngine, ctx: _RunContext, cluster: list[int], b0: int, b1: int,
             sub: int | None = None) -> np.ndarray:
    """The block's propagator computed directly from its drives at their absolute time, in
    the dressed basis and frames, deferred ZZ frame anchored at ``b0``; with several driven
    qubits by split steps, ``sub`` per driven sample."""
    model = ctx.model
    drives = {q: engine._drive_hz(ctx, q, b0, b1) for q in cluster}
    drives = {q: z for q, z in drives.items() if np.any(z)}
    flux = {q: engine._flux_phi(ctx, q, [2], b0, b1) for q in cluster}
    f_bare = [DEVICE.qubits[q].frequency_hz(ctx.phi_dc[q]) for q in cluster]
    f_frame = [model.freq_hz[q] for q in cluster]
    v, h_corr = engine._cluster_dressing(cluster, tuple(f_bare), model)
    # One driven qubit: the engine propagates in its frame (no sub-steps); so does this
    # reference, then it moves to the common frame f_bare[0] by exp(i 2 pi (f - f_c) N t).
    f_c = f_frame[cluster.index(next(iter(drives)))] if len(drives) == 1 else f_bare[0]
    if len(drives) > 1:
        k = len(cluster)
        const = engine._cluster_static(cluster, h_corr)
        diag = (engine._cluster_frequencies(cluster, flux) - f_c) @ _level_numbers(k)
        u = split_step_extrapolated(const, diag, [(cluster.index(q), z,
                                                   f_frame[cluster.index(q)] - f_c)
                                                  for q, z in drives.items()], b0, FS, k, sub)
    else:
        u = engine._cluster_common_frame_unitary(cluster, drives, flux, b0, b1, f_bare,
                                                 f_frame, h_corr, f_c)
    big_n = _level_numbers(len(cluster)).sum(axis=0)
    u = (np.exp(2j * np.pi * (f_bare[0] - f_c) * big_n * b1 / FS)[:, None] * u) \
        * np.exp(-2j * np.pi * (f_bare[0] - f_c) * big_n * b0 / FS)[None, :]
    u = v.T @ u @ v
    frame = (np.array(f_frame) - f_bare[0]) @ _level_numbers(len(cluster))
    zz = model.energies(cluster) - model.local_energies(cluster)
    left = np.exp(2j * np.pi * (frame * b1 + zz * (b1 - b0)) / FS)
    right = np.exp(-2j * np.pi * frame * b0 / FS)
    return (left[:, None] * u) * right[None, :]


def block_matches_uncached(engine: PhysicsEngine, samples: np.ndarray, st: Settings,
                           cluster: list[int], t0: int) -> np.ndarray:
    """The engine's propagator of the flux block from ``t0``, asserted equal to the uncached
    computation within 1e-12 elementwise."""
    b0, b1 = t0, t0 + N_FLUX
    ctx = context(engine, samples, st, cluster, b0)
    got = engine._segment_unitary(ctx, cluster, [2], b0, b1)
    ref = uncached(PhysicsEngine(DEVICE, RACK.cabling), ctx, cluster, b0, b1,
                   max(engine._split_substeps.values(), default=None))
    assert np.abs(got - ref).max() < 1e-12
    return got


CASES = {
    "flux only": ([1, 2, 3], [{}, {}]),
    "one driven neighbour at two phases and times": ([1, 2, 3], [{3: 0.4}, {3: -2.2}]),
    "two driven qubits, same relative phase": ([1, 2, 3, 4], [{3: 0.3, 4: 1.0}, {3: 2.1}]),
}
STARTS = [40, 157]


def same_relative_phase(phases: dict[int, float], first: dict[int, float], st: Settings
                        ) -> dict[int, float]:
    """Phase of qubit 4's play in the second block that gives the two drives the relative
    phase they had in the first: their LOs differ, so the drives (z ~ conj(s)) turn apart
    by 2 pi (f_LO3 - f_LO4) t between the blocks."""
    if 4 not in first:
        return phases
    lo3, lo4 = (st.los[RACK.cabling[q].drive_lo][0] for q in (3, 4))
    drift = 2 * np.pi * (lo3 - lo4) * (STARTS[1] - STARTS[0]) / FS
    return {**phases, 4: phases[3] - (first[3] - first[4]) + drift}


@pytest.mark.parametrize("case", list(CASES))
def test_cached_cluster_propagator_equals_uncached(case: str) -> None:
    """The same flux + drive block at two start samples and drive phases: the second block is
    answered from the cache (frame change of the first), and both propagators equal the
    uncached computation of the whole block in one product within 1e-12 elementwise."""
    cluster, phases = CASES[case]
    st = settings()
    phases = [phases[0], same_relative_phase(phases[1], phases[0], st)]
    samples = np.zeros((N_PORTS, 200), dtype=complex)
    for t0, ph in zip(STARTS, phases, strict=True):
        add_block(samples, t0, ph)
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    for t0 in STARTS:
        got = block_matches_uncached(engine, samples, st, cluster, t0)
        assert np.abs(got.conj().T @ got - np.eye(got.shape[0])).max() < 1e-10
    # Each part of the first block (drive-free stretches and the driven stretch) is computed,
    # every part of the second is a hit.
    assert engine.cache_nq.misses == engine.cache_nq.hits >= 1


def test_a_weak_second_drive_is_interpolated_in_its_phase(monkeypatch) -> None:
    """Seven flux blocks on cluster 1-2-3-4, each with a pulse on qubit 3 and, at another
    relative phase each time, a pulse 1e-4 as strong on qubit 4 (a pulse's tail overlapping
    them; degree K = 2): the first 2K blocks are propagated directly, the next builds the
    table of 2K + 1 phases (as many propagations as it will save), the last two are
    interpolated from it. Every block's propagator equals the uncached computation within
    1e-12 elementwise. (A pulse as strong as the other, the cases above, is too strong for a
    table and is propagated directly.)"""
    cluster = [1, 2, 3, 4]
    # early and close together: the reference's frame phases round at ~1e-12 further on
    starts = [8 + 32 * k for k in range(7)]
    st = settings()
    samples = np.zeros((N_PORTS, 250), dtype=complex)
    for t0, ph in zip(starts, (0.0, 1.3, -2.4, 0.4, 2.9, -0.8, 1.9), strict=True):
        add_block(samples, t0, {3: 0.7, 4: ph}, {4: 2e-5})
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    direct = engine._cluster_split_unitary
    calls = []

    def counted(base_key, cluster, drives, *args):
        calls.append(len(drives))
        return direct(base_key, cluster, drives, *args)

    monkeypatch.setattr(engine, "_cluster_split_unitary", counted)
    per_block = []
    for t0 in starts:
        block_matches_uncached(engine, samples, st, cluster, t0)
        per_block.append(calls.count(2))
        calls.clear()
    (table,) = engine.phase_tables._data.values()
    assert table.shape[0] == 5
    assert per_block == [1, 1, 1, 1, 5, 0, 0]


def test_the_interpolation_order_bounds_the_dyson_tail() -> None:
    """The chosen degree K keeps 2 sum_{n>K} (n - K) x^n / n! (x = 2 beta) below the
    tolerance and K - 1 does not; a drive too strong for the largest degree gets None."""
    from math import factorial

    def tail(x: float, k: int) -> float:
        return 2 * sum((n - k) * x**n / factorial(n) for n in range(k + 1, k + 80))

    for beta in (1e-16, 1e-9, 1e-5, 3e-4, 5e-3):
        k = clusters.phase_interpolation_order(beta)
        assert k is not None and tail(2 * beta, k) <= clusters.PHASE_INTERPOLATION_TOL
        assert k == 0 or tail(2 * beta, k - 1) > clusters.PHASE_INTERPOLATION_TOL
    assert clusters.phase_interpolation_order(0.5) is None


def test_interpolation_weights_reproduce_a_trigonometric_polynomial() -> None:
    """Sampled at 2K + 1 equally spaced phases, a trigonometric polynomial of degree K is
    reproduced at any phase to rounding (1e-13)."""
    rng = np.random.default_rng(4)
    for order in range(4):
        m = 2 * order + 1
        c = rng.standard_normal(m) + 1j * rng.standard_normal(m)

        def poly(theta, c=c, order=order):
            return sum(c[j] * np.exp(1j * (j - order) * theta) for j in range(len(c)))

        samples = np.array([poly(2 * np.pi * j / m) for j in range(m)])
        for theta in rng.uniform(-10, 10, 5):
            w = clusters.phase_interpolation_weights(theta, order)
            assert abs(w @ samples - poly(theta)) < 1e-13


def test_relative_phase_of_two_drives_is_part_of_the_key() -> None:
    """Two driven qubits whose relative phase differs do not share a propagator (an
    excitation-number rotation cannot change a relative phase across an exchange coupling);
    a common phase and a time shift do."""
    z = pulse(N_DRIVE) * 3e7
    offsets = {3: -7.4e8, 4: 5.3e7}
    psi0, _, k0 = cluster_drive_key({3: z, 4: z}, offsets, 0, FS)
    psi1, _, k1 = cluster_drive_key({3: z * np.exp(0.9j), 4: z * np.exp(0.9j)}, offsets, 0, FS)
    assert k1 == k0
    assert abs(psi1 - psi0 - 0.9) < 1e-12
    t = 123
    shifted = {q: z * np.exp(2j * np.pi * off * t / FS) for q, off in offsets.items()}
    assert cluster_drive_key(shifted, offsets, t, FS)[2] == k0
    assert cluster_drive_key({3: z, 4: z * np.exp(0.9j)}, offsets, 0, FS)[2] != k0


def test_excitation_rotation_turns_every_drive_term() -> None:
    """R(psi) H R(psi)^dag with R = exp(i psi N) multiplies each a_q^dag term by e^{i psi}
    and leaves an exchange coupling and diagonal terms unchanged (two transmons, 1e-12)."""
    a = np.diag(np.sqrt([1.0, 2.0]), 1).astype(complex)
    eye = np.eye(3)
    a0, a1 = np.kron(a, eye), np.kron(eye, a)
    exchange = a0.conj().T @ a1 + a0 @ a1.conj().T
    diag = np.diag(np.arange(9.0))
    psi = 0.77
    for op, factor in ((a0.conj().T, np.exp(1j * psi)), (a1.conj().T, np.exp(1j * psi)),
                       (exchange, 1.0), (diag, 1.0)):
        assert np.abs(rotate_excitation_phase(op, psi, 2) - factor * op).max() < 1e-12


def first_block(case: str) -> tuple[PhysicsEngine, _RunContext, list[int], int, int]:
    """A new engine, and the context, cluster and samples [b0, b1) of ``case``'s first block
    alone."""
    cluster, phases = CASES[case]
    samples = np.zeros((N_PORTS, 200), dtype=complex)
    add_block(samples, STARTS[0], phases[0])
    b0, b1 = STARTS[0], STARTS[0] + N_FLUX
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    return engine, context(engine, samples, settings(), cluster, b0), cluster, b0, b1


def test_one_driven_qubit_in_its_own_frame_matches_fine_sub_steps() -> None:
    """A flux block with one driven neighbour is propagated in that neighbour's frame (its
    drive constant per sample, as the model defines it). Against the common-frame computation
    with 640 sub-steps per cycle of the drive's rotation (converged to the same model), it
    agrees within 1e-5 elementwise (measured 1.6e-6); the common frame at 20 sub-steps per
    cycle was off by ~1e-3."""
    engine, ctx, cluster, b0, b1 = first_block("one driven neighbour at two phases and times")
    got = engine._segment_unitary(ctx, cluster, [2], b0, b1)
    model = ctx.model
    drives = {3: engine._drive_hz(ctx, 3, b0, b1)}
    flux = {q: engine._flux_phi(ctx, q, [2], b0, b1) for q in cluster}
    f_bare = [DEVICE.qubits[q].frequency_hz(ctx.phi_dc[q]) for q in cluster]
    f_frame = [model.freq_hz[q] for q in cluster]
    v, h_corr = engine._cluster_dressing(cluster, tuple(f_bare), model)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clusters, "SUBSTEPS_PER_CYCLE", 640)
        u = v.T @ engine._cluster_common_frame_unitary(cluster, drives, flux, b0, b1, f_bare,
                                                       f_frame, h_corr) @ v
    frame = (np.array(f_frame) - f_bare[0]) @ _level_numbers(len(cluster))
    zz = model.energies(cluster) - model.local_energies(cluster)
    left = np.exp(2j * np.pi * (frame * b1 + zz * (b1 - b0)) / FS)
    fine = (left[:, None] * u) * np.exp(-2j * np.pi * frame * b0 / FS)[None, :]
    assert np.abs(got - fine).max() < 1e-5


@pytest.mark.slow
def test_an_engine_block_with_two_driven_neighbours_is_closer_to_converged_than_before() -> None:
    """lab5's cluster 1-2-3-4 with a flux pulse on 2 and 24-sample pulses (~10 MHz) on 3 and 4:
    the engine's split-step part against the common-frame midpoint propagation at 160
    sub-steps per cycle (~6e-6 from converged) is within 4e-5 elementwise (3 SPLIT_TOL and
    the reference's own error; measured 6.6e-6), where that propagation at the 20 sub-steps per
    cycle the engine used before is ~4e-4 off."""
    engine, ctx, cluster, b0, b1 = first_block("two driven qubits, same relative phase")
    drives = {q: engine._drive_hz(ctx, q, b0, b1) for q in (3, 4)}
    assert all(np.abs(z).max() > 5e6 for z in drives.values())
    flux = {q: engine._flux_phi(ctx, q, [2], b0, b1) for q in cluster}
    f_bare = [DEVICE.qubits[q].frequency_hz(ctx.phi_dc[q]) for q in cluster]
    f_frame = [ctx.model.freq_hz[q] for q in cluster]
    _, h_corr = engine._cluster_dressing(cluster, tuple(f_bare), ctx.model)
    # drives from sample 0 of the part, as the engine propagates it
    got = engine._cluster_split_unitary(("block",), cluster, drives, flux, f_bare, f_frame,
                                        h_corr, f_bare[0])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clusters, "SUBSTEPS_PER_CYCLE", 160)
        fine = engine._cluster_common_frame_unitary(cluster, drives, flux, 0, N_FLUX, f_bare,
                                                    f_frame, h_corr, f_bare[0])
    coarse = engine._cluster_common_frame_unitary(cluster, drives, flux, 0, N_FLUX, f_bare,
                                                  f_frame, h_corr, f_bare[0])
    assert np.abs(got - fine).max() <= 3 * SPLIT_TOL + 1e-5
    assert np.abs(coarse - fine).max() > 1e-4
