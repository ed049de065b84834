"""The fast transmon propagator and the propagator cache against independent references.

References are per-sample ``scipy.linalg.expm`` products of Hamiltonians written out here, and
the engine's evolution with its caches emptied before every block (so every propagator is
computed directly). Tolerances are stated per test.
"""

from __future__ import annotations

import cmath
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
from numpy.testing import assert_allclose

import labqpu
from labqpu.firmware_sim.blocks import RunShare
from labqpu.firmware_sim.device import load_device, load_rack
from labqpu.firmware_sim.noise import with_offsets
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram
from labqpu.firmware_sim.propagation import (
    PropagatorCache,
    _transmon_path_kernel,
    _transmon_propagate_kernel,
    drive_phase_key,
    phase_reference,
    rotate_drive_phase,
)
from labqpu.firmware_sim.transmon_kernel import _acos, _cos_sin

DEVICE = load_device("lab5")
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
DT = 1.0 / DEVICE.sample_rate_hz
NCO_HZ = -80e6
A3 = np.array([[0, 1, 0], [0, 0, math.sqrt(2.0)], [0, 0, 0]], dtype=complex)


def expm_reference(z_hz: np.ndarray, detuning_hz: np.ndarray, alpha_hz: float) -> np.ndarray:
    """prod_k expm(-i 2 pi H_k dt), H_k = diag(0, d, 2d + alpha) + (z a^dag + z* a)/2."""
    u = np.eye(3, dtype=complex)
    for z, d in zip(z_hz, detuning_hz, strict=True):
        h = np.diag([0.0, d, 2 * d + alpha_hz]) + 0.5 * (z * A3.conj().T + np.conj(z) * A3)
        u = scipy.linalg.expm(-2j * np.pi * h * DT) @ u
    return u


def drag(n: int, amp_hz: float, beta: float, phase_rad: float) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (x / (n / 4)) ** 2)
    return amp_hz * (g - 1j * beta * x / (n / 4) ** 2 * g) * np.exp(1j * phase_rad)


def _random_drag(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A DRAG pulse of random length, amplitude, beta, phase and constant detuning."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    z = drag(n, rng.uniform(1e6, 1e8), rng.uniform(-2, 2), rng.uniform(-math.pi, math.pi))
    return z, np.full(n, rng.normal() * 5e7)


ALPHA0 = DEVICE.qubits[0].anharmonicity_hz
RNG = np.random.default_rng(11)
CASES = {
    "drag": (drag(160, 40e6, 0.5, 0.3), np.zeros(160)),
    "zero drive, on resonance (degenerate levels)": (np.zeros(40, complex), np.zeros(40)),
    "tails below 1 Hz and exact zeros": (
        np.concatenate([np.zeros(10), 1e-3 * drag(20, 1.0, 0.0, 1.0), drag(30, 3e7, 0, 0)]),
        np.zeros(60)),
    "flux detuning per sample": (drag(80, 25e6, -0.3, -2.0),
                                 -3e8 * np.sin(np.linspace(0, np.pi, 80)) ** 2),
    "random strong drive": (
        np.random.default_rng(5).normal(size=(50, 2)) @ np.array([1.0, 1j]) * 2e8,
        np.random.default_rng(6).normal(size=50) * 1e8),
    # |0> and |2> degenerate (d = -alpha/2), |1> and |2> degenerate (d = -alpha)
    "1e-9 Hz drive, on resonance": (1e-9 * np.exp(1j * RNG.uniform(-3, 3, 30)), np.zeros(30)),
    "1e-9 Hz drive, d = -alpha/2": (1e-9 * np.exp(1j * RNG.uniform(-3, 3, 30)),
                                    np.full(30, -ALPHA0 / 2)),
    "zero drive, d = -alpha/2": (np.zeros(30, complex), np.full(30, -ALPHA0 / 2)),
    "drag, d = -alpha/2": (drag(100, 2e7, 0.4, 1.1), np.full(100, -ALPHA0 / 2)),
    "drag, d = -alpha/2 + 1e-6 Hz": (drag(100, 2e7, 0.4, 1.1), np.full(100, -ALPHA0 / 2 + 1e-6)),
    "1e-9 Hz drive, d = -alpha": (1e-9 * np.exp(1j * RNG.uniform(-3, 3, 30)),
                                  np.full(30, -ALPHA0)),
    "drag, d = -alpha": (drag(100, 2e7, -0.4, 2.0), np.full(100, -ALPHA0)),
    "large drive (2 GHz) and detuning (1 GHz)": (drag(40, 2e9, 0.3, 0.5), np.full(40, 1e9)),
    "random detuning per sample, 150 samples (crosses chunks)": (
        drag(150, 3e7, 0.7, -0.4), RNG.normal(size=150) * 2e8),
    "random phase per sample, zeros at chunk edges": (
        np.where(np.isin(np.arange(200), [0, 63, 64, 65, 127, 128, 199]), 0,
                 RNG.uniform(1e6, 5e7, 200) * np.exp(1j * RNG.uniform(-3, 3, 200))),
        np.zeros(200)),
    **{f"random drag {seed}": _random_drag(seed) for seed in range(6)},
}
#: Cases with anharmonicity 0: every level degenerate at zero drive (M = 0), and nearly so
#: at a 1e-9 Hz drive.
ZERO_ALPHA_CASES = {
    "zero drive": (np.zeros(20, complex), np.zeros(20)),
    "1e-9 Hz drive": (1e-9 * np.exp(1j * RNG.uniform(-3, 3, 20)), np.zeros(20)),
    "drag": (drag(60, 1e7, 0.2, 0.1), np.zeros(60)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transmon_kernel_matches_expm_product(case: str) -> None:
    """The closed-form numba kernel equals the per-sample expm product elementwise within
    1e-12 (degenerate, near-degenerate, tiny, large and random drives and detunings), and its
    result is unitary within 1e-12."""
    z, d = CASES[case]
    u = _transmon_propagate_kernel(z, d, ALPHA0, DT)
    assert_allclose(u, expm_reference(z, d, ALPHA0), rtol=0, atol=1e-12)
    assert_allclose(u.conj().T @ u, np.eye(3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", list(ZERO_ALPHA_CASES))
def test_transmon_kernel_without_anharmonicity(case: str) -> None:
    """With alpha = 0 the three levels are degenerate at zero drive: still the expm product
    within 1e-12."""
    z, d = ZERO_ALPHA_CASES[case]
    assert_allclose(_transmon_propagate_kernel(z, d, 0.0, DT), expm_reference(z, d, 0.0),
                    rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", ["drag", "random phase per sample, zeros at chunk edges",
                                  "random detuning per sample, 150 samples (crosses chunks)"])
def test_transmon_path_kernel_matches_expm_at_every_sample(case: str) -> None:
    """Entry k of the path kernel is the expm product of the first k samples (1e-12), entry 0
    the identity, and the last entry the propagate kernel's result."""
    z, d = CASES[case]
    path = _transmon_path_kernel(z, d, ALPHA0, DT)
    assert path.shape == (z.size + 1, 3, 3)
    assert_allclose(path[0], np.eye(3), rtol=0, atol=0)
    for k in range(1, z.size + 1, 7):
        assert_allclose(path[k], expm_reference(z[:k], d[:k], ALPHA0), rtol=0, atol=1e-12)
    assert_allclose(path[-1], _transmon_propagate_kernel(z, d, ALPHA0, DT), rtol=0, atol=1e-14)


def test_transmon_kernel_refuses_angles_beyond_its_range() -> None:
    """A detuning of 1e15 Hz at 1 GS/s (~6e6 rad per sample) is refused with an error naming
    the cause, not propagated with an inexact argument reduction."""
    with pytest.raises(ValueError, match="exceeds"):
        _transmon_propagate_kernel(np.zeros(3, complex), np.full(3, 1e15), ALPHA0, DT)
    with pytest.raises(ValueError, match="exceeds"):
        _transmon_path_kernel(np.zeros(3, complex), np.full(3, 1e15), ALPHA0, DT)


def test_kernel_polynomials_match_libm() -> None:
    """The Taylor-polynomial cos/sin (with argument reduction) and acos used inside the kernel
    agree with numpy's within 3e-16 (cos, sin) and 1e-15 (acos, 2 ulp of pi) absolute, at
    quadrant edges and near acos(+-1) too."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-20, 20, 5000), rng.uniform(-4e5, 4e5, 2000),
                        np.arange(-40, 41) * (math.pi / 4), 10.0 ** np.arange(-300, 0, 7)])
    cs = np.array([_cos_sin(v) for v in x])
    assert_allclose(cs[:, 0], np.cos(x), rtol=0, atol=3e-16)
    assert_allclose(cs[:, 1], np.sin(x), rtol=0, atol=3e-16)
    t = np.concatenate([rng.uniform(-1, 1, 5000), [-1.0, -0.5, 0.0, 0.5, 1.0],
                        1 - 10.0 ** -np.arange(1.0, 17.0), -1 + 10.0 ** -np.arange(1.0, 17.0)])
    assert_allclose([_acos(v) for v in t], np.arccos(t), rtol=0, atol=1e-15)


@pytest.mark.parametrize("phi", [0.7, -2.9, math.pi])
def test_drive_phase_is_a_frame_change(phi: float) -> None:
    """U(z e^{i phi}) = R U(z) R^dag with R = diag(1, e^{i phi}, e^{2 i phi}): the rotated
    propagator of the normalised drive equals the expm reference of the turned drive
    (1e-12), and the same pulse at two phases has one key."""
    z, d = CASES["drag"]
    alpha = DEVICE.qubits[1].anharmonicity_hz
    turned = z * np.exp(1j * phi)
    _, z0, k0 = drive_phase_key(z)
    p1, _, k1 = drive_phase_key(turned)
    assert k0 == k1
    u = rotate_drive_phase(_transmon_propagate_kernel(z0, d, alpha, DT), p1)
    assert_allclose(u, expm_reference(turned, d, alpha), rtol=0, atol=1e-12)


def test_cache_is_bounded_lru_and_counts() -> None:
    cache = PropagatorCache(2)
    one = np.eye(3)
    cache.put("a", one)
    cache.put("b", 2 * one)
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", 3 * one)  # evicts "b"
    assert cache.get("b") is None
    assert_allclose(cache.get("c"), 3 * one)
    assert (cache.hits, cache.misses, len(cache)) == (2, 1, 2)
    with pytest.raises(ValueError):
        cache.get("a")[0, 0] = 5.0  # stored unitaries are read-only


def test_cache_is_bounded_in_bytes_too() -> None:
    """With ``max_bytes`` the oldest entries go while the arrays exceed it (a 9x9 complex
    array is 1296 bytes); replacing an entry counts its bytes once; an entry larger than the
    bound alone is kept as the only one."""
    cache = PropagatorCache(10, max_bytes=3000)
    cache.put("a", np.eye(9))
    cache.put("b", np.eye(9))
    cache.put("b", 2 * np.eye(9))
    assert (len(cache), cache.nbytes) == (2, 2592)
    cache.put("c", np.eye(9))  # 3888 bytes > 3000: evicts "a"
    assert cache.get("a") is None and cache.get("b") is not None
    assert cache.nbytes == 2592
    cache.put("big", np.eye(20))  # 6400 bytes alone
    assert (len(cache), cache.nbytes) == (1, 6400)
    cache.clear()
    assert (len(cache), cache.nbytes) == (0, 0)


# --------------------------------------------------------------------------- engine


def lo_settings() -> Settings:
    los = {
        "lo_drive_a": (DEVICE.qubits[0].max_frequency_hz - NCO_HZ + 1.3e6, 13.0, True),
        "lo_drive_b": (DEVICE.qubits[1].max_frequency_hz - NCO_HZ, 13.0, True),
        "lo_readout": (7.0e9, 13.0, True),
    }
    currents = {(cab.flux_source, cab.flux_channel): DEVICE.qubits[q].sweet_spot_current_a
                for q, cab in RACK.cabling.items()}
    return Settings(los=los, currents=currents)


def repeated_pulse_program(solo_pulses: int = 0) -> WireProgram:
    """The same DRAG pulse on qubits 0 and 1 five times at varying phases and start samples
    (so NCO phase, virtual-Z phase and LO detuning all differ between plays), with a
    25-sample CZ-like flux pulse on qubit 0 twice in between; then ``solo_pulses`` of them
    on qubits 0 and 1 in turn, one at a time."""
    n = 40
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (x / 10) ** 2)
    waves = [g - 0.3j * x / 100 * g, np.ones(25)]
    plays = []
    t = 0
    for k, phase in enumerate([0.0, 1.1, -2.3, 0.4, 3.0]):
        plays.append((RACK.cabling[0].drive_port, t, 0, 0.25, phase, NCO_HZ))
        plays.append((RACK.cabling[1].drive_port, t + 3, 0, 0.3, -phase, NCO_HZ))
        t += n + 7 + k
        if k in (1, 3):
            plays.append((RACK.cabling[0].flux_port, t, 1, 0.12, 0.0, 0.0))
            t += 25 + 2
    for k in range(solo_pulses):
        plays.append((RACK.cabling[k % 2].drive_port, t, 0, 0.25, 0.9 * k, NCO_HZ))
        t += n + 5 + k
    return WireProgram.from_tuples(plays, waves, [], t + 10)


class _Uncached(PropagatorCache):
    """A cache that never returns anything: every propagator is computed directly."""

    def get(self, key):
        self.misses += 1
        return None


class _NoHits(dict):
    """A dict cache that never returns anything."""

    def get(self, key, default=None):
        return None


class _DirectEngine(PhysicsEngine):
    """The engine with every propagator computed directly: single transmons by the expm
    reference of their own drive (no phase normalisation, no kernel), for every neighbour
    configuration and along joint blocks; clusters and joint blocks uncached."""

    def __init__(self) -> None:
        super().__init__(DEVICE, RACK.cabling)
        self.cache_nq = _Uncached(1)
        self._joint_cache = _NoHits()

    def _transmon_unitary(self, q, drive_hz, flux_phi0, f_idle_hz):
        truth = self.device.qubits[q]
        z = np.zeros(flux_phi0.size, complex) if drive_hz is None else drive_hz
        d = np.array([truth.frequency_hz(p) for p in flux_phi0]) - f_idle_hz
        return expm_reference(z, d, truth.anharmonicity_hz)

    def _conditional_stack(self, q, z, shifts_hz, alpha_hz):
        return np.array([expm_reference(z, np.full(z.size, sh[1]), alpha_hz + sh[2] - 2 * sh[1])
                         for sh in shifts_hz])

    def _local_path(self, q, z, alpha_hz):
        path = [np.eye(3, dtype=complex)]
        for k in range(z.size):
            path.append(expm_reference(z[k:k + 1], np.zeros(1), alpha_hz) @ path[-1])
        return np.array(path)


def test_cached_evolution_equals_direct_propagation() -> None:
    """Repeated pulses at different phases and times: the engine with its caches (hits from
    the phase frame change and from repeated flux pulses) gives the same density matrix as
    the engine computing every propagator directly (expm per sample for single transmons),
    elementwise within 1e-9; the cached run really reused propagators."""
    prog, st = repeated_pulse_program(), lo_settings()
    cached = PhysicsEngine(DEVICE, RACK.cabling)
    rho = cached.evolve(prog, st).rho.matrix()
    ref = _DirectEngine().evolve(prog, st).rho.matrix()
    assert_allclose(rho, ref, rtol=0, atol=1e-9)
    assert cached.cache_1q.hits + cached.joint_cache_hits >= 4
    assert cached.cache_nq.hits >= 1
    populations = np.real(np.diagonal(ref))
    assert populations[0] < 0.9  # the pulses did something


def tail_under_flux_program(blocks: int = 9) -> WireProgram:
    """``blocks`` 25-sample flux pulses on qubit 0, each with a 20-sample DRAG pulse on qubit 1
    and the same pulse 1e-4 as strong (a pulse's tail) on qubit 0 inside it, both at a new
    phase each time."""
    n = 20
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-0.5 * (x / 5) ** 2)
    plays = []
    t = 0
    for k in range(blocks):
        plays.append((RACK.cabling[0].flux_port, t, 1, 0.12, 0.0, 0.0))
        plays.append((RACK.cabling[1].drive_port, t + 2, 0, 0.3, 0.7 * k, NCO_HZ))
        plays.append((RACK.cabling[0].drive_port, t + 3, 0, 3e-5, -1.9 * k, NCO_HZ))
        t += 25 + 4 + k
    return WireProgram.from_tuples(plays, [g - 0.3j * x / 25 * g, np.ones(25)], [], t + 10)


def test_a_weak_drive_interpolated_in_its_phase_evolves_as_propagated_directly() -> None:
    """Flux pulses on qubit 0 with a pulse on qubit 1 and a weak one on qubit 0 inside, at a
    new relative phase each time: the engine, which builds a phase table for them and
    interpolates the later blocks, gives the density matrix of the engine computing every
    propagator directly, elementwise within 1e-9."""
    prog, st = tail_under_flux_program(), lo_settings()
    cached = PhysicsEngine(DEVICE, RACK.cabling)
    rho = cached.evolve(prog, st).rho.matrix()
    direct = _DirectEngine()
    direct._phase_interpolated = lambda key, rel, propagate: None
    ref = direct.evolve(prog, st).rho.matrix()
    assert len(cached.phase_tables) == 1
    assert_allclose(rho, ref, rtol=0, atol=1e-9)
    assert np.real(np.diagonal(ref))[0] < 0.9  # the pulses did something


def test_chunks_sharing_a_run_evolve_as_if_alone() -> None:
    """The quasi-static chunks of a run share the drive terms, keys and propagators their
    frequency offsets do not change (``RunShare``): each chunk, evolved after another chunk
    with other offsets, gives the density matrix of a fresh engine evolving it alone, within
    1e-12 elementwise, on a program with single and overlapping drives and flux pulses. A
    share is refused for another program."""
    prog, st = repeated_pulse_program(solo_pulses=4), lo_settings()
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    base = engine.conditions(st)[0]
    chunks = [with_offsets(base, {0: 3.0e4, 1: -2.0e4, 2: 1.0e4}),
              with_offsets(base, {0: -5.0e4, 1: 4.0e4}), base]
    share = RunShare(prog, st)
    shared = [engine.evolve(prog, st, conditions=c, share=share).rho.matrix() for c in chunks]
    assert share.stacks and share.splits  # single and joint drive blocks were shared
    for cond, rho in zip(chunks, shared, strict=True):
        alone = PhysicsEngine(DEVICE, RACK.cabling).evolve(prog, st, conditions=cond)
        assert_allclose(rho, alone.rho.matrix(), rtol=0, atol=1e-12)
    assert np.abs(shared[0] - shared[1]).max() > 1e-4  # the offsets matter
    with pytest.raises(ValueError, match="only by evolutions of the program and the settings"):
        engine.evolve(repeated_pulse_program(), st, share=share)


def _phase_reference_numpy(z: np.ndarray) -> float:
    """``phase_reference`` with its peak search in plain numpy (the reference of the numba
    search). The phase of the sample found is ``cmath.phase``, which is the engine's
    ``math.atan2``: numpy's ``angle`` may differ from it in the last bit (numpy 2.4.6 does on
    one of these cases)."""
    mag = np.abs(z)
    return cmath.phase(complex(z[int(np.argmax(mag >= (1.0 - 1e-9) * mag.max()))]))


def test_the_phase_reference_matches_numpy_on_pulses_ties_and_zeros() -> None:
    """Random pulses at random phases, symmetric pulses with two equal peaks (the first one
    sets the phase), peaks that differ by less than the tie, and an all-zero drive: the numba
    peak search gives exactly the numpy reference's phase."""
    rng = np.random.default_rng(11)
    cases = [np.hanning(n) * 3e7 * np.exp(1j * rng.uniform(-np.pi, np.pi)) for n in range(2, 60)]
    cases += [rng.standard_normal(40) + 1j * rng.standard_normal(40) for _ in range(30)]
    cases += [np.array([1 + 1j, -1 - 1j, 1 - 1j]) * 1e6,
              np.array([0.5, 1.0 - 5e-10, -1.0j]) * 2e7, np.zeros(7, dtype=complex)]
    for z in cases:
        assert phase_reference(z) == _phase_reference_numpy(z)
    assert phase_reference(np.array([0.5, 1.0 - 5e-10, -1.0j])) == 0.0  # within the tie: first
