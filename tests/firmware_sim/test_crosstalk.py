"""Crosstalk in the simulated device (``firmware_sim.crosstalk``): the DC flux crosstalk
matrix moves a qubit's frequency as the stated formula says, and a drive's crosstalk on a
detuned neighbour gives the Stark phase that a full two-transmon expm reference with the
crosstalk field rendered at 20-50 GS/s gives.

References are written here independently: the transmon frequency law, and the two-transmon
Hamiltonian in the target's rotating frame (RWA) with the source's drive and the crosstalk
field evaluated continuously in time (the ideal, reconstruction-filtered DAC output).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

import labqpu
from labqpu.errors import SimulationError
from labqpu.firmware_sim.crosstalk import CrosstalkSpec, crosstalk_phases
from labqpu.firmware_sim.device import DeviceTruth, QubitTruth, load_device, load_rack
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram

DEVICE: DeviceTruth = load_device("lab5", noise=False)
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
FS = DEVICE.sample_rate_hz
NCO_HZ = -80e6

A3 = np.array([[0, 1, 0], [0, 0, math.sqrt(2.0)], [0, 0, 0]], dtype=complex)
N3 = np.diag([0.0, 1.0, 2.0]).astype(complex)
I3 = np.eye(3, dtype=complex)


def transmon_frequency_hz(q: QubitTruth, flux_phi0: float) -> float:
    """Symmetric-SQUID transmon: f01 = (f_max - alpha) sqrt|cos(pi Phi)| + alpha."""
    alpha = q.anharmonicity_hz
    return (q.max_frequency_hz - alpha) * math.sqrt(abs(math.cos(math.pi * flux_phi0))) + alpha


def device_with(flux: dict | None = None, drive: dict | None = None) -> DeviceTruth:
    """lab5 without couplings (dressed = bare) and with only the given crosstalk."""
    return dataclasses.replace(DEVICE, couplings={},
                               crosstalk=CrosstalkSpec(flux=flux or {}, drive=drive or {}))


def sweet_currents() -> dict[tuple[str, int], float]:
    return {(cab.flux_source, cab.flux_channel): DEVICE.qubits[q].sweet_spot_current_a
            for q, cab in RACK.cabling.items()}


def settings(lo_a_hz: float, currents: dict | None = None) -> Settings:
    los = {"lo_drive_a": (lo_a_hz, 13.0, True),
           "lo_drive_b": (DEVICE.qubits[1].max_frequency_hz - NCO_HZ, 13.0, True),
           "lo_readout": (7.0e9, 13.0, True)}
    return Settings(los=los, currents=currents or sweet_currents())


# --------------------------------------------------------------------------- DC flux


@pytest.mark.parametrize("delta_i_a", [-1.0e-3, 0.4e-3, 1.5e-3])
def test_dc_flux_crosstalk_moves_the_neighbour_as_the_formula_says(delta_i_a: float) -> None:
    """Qubit 1 biased to Phi = 0.15 (own line); only qubit 0's bias moves by ``delta_i_a``.
    With M_10 = 3 % (and a 0.4 % term from qubit 2, which stays at its sweet spot) qubit 1's
    flux is 0.15 + M_10 a_0 dI: its dressed frequency equals the transmon law there to 1 mHz,
    a resonant square pulse at that frequency gives sin^2(pi R A T) within 1e-3, and the same
    pulse at the frequency without crosstalk (tens of MHz away) misses."""
    m10 = 0.03
    dev = device_with(flux={(1, 0): m10, (1, 2): 0.004})
    eng = PhysicsEngine(dev, RACK.cabling)
    q0, q1 = dev.qubits[0], dev.qubits[1]
    cur = sweet_currents()
    cab0, cab1 = RACK.cabling[0], RACK.cabling[1]
    cur[(cab1.flux_source, cab1.flux_channel)] += 0.15 / q1.phi0_per_ampere
    cur[(cab0.flux_source, cab0.flux_channel)] += delta_i_a
    phi1 = 0.15 + m10 * q0.phi0_per_ampere * delta_i_a
    expected = transmon_frequency_hz(q1, phi1)
    without = transmon_frequency_hz(q1, 0.15)
    assert abs(expected - without) > 8e6  # the check below can tell them apart
    st = Settings(los=settings(6e9).los, currents=cur)
    model = eng.dressed_model(eng._phi_dc(st))
    assert abs(model.freq_hz[1] - expected) < 1e-3
    assert abs(model.freq_hz[0] - transmon_frequency_hz(q0, q0.phi0_per_ampere * delta_i_a)) \
        < 1e-3  # no crosstalk from 1 onto 0 in this device

    n, amp = 200, 0.02
    ports = 15

    def p1(f_drive_hz: float) -> float:
        los = dict(st.los)
        los["lo_drive_b"] = (f_drive_hz - NCO_HZ, 13.0, True)
        s = np.zeros((ports, n), dtype=complex)
        s[cab1.drive_port] = amp * np.exp(2j * np.pi * NCO_HZ * np.arange(n) / FS)
        u = eng.segment_unitary([1], 0, n, s, Settings(los=los, currents=cur))
        return float(abs(u[1, 0]) ** 2)

    assert abs(p1(expected) - math.sin(math.pi * q1.rabi_hz_per_amplitude * amp * n / FS) ** 2) \
        < 1e-3
    assert p1(without) < 0.1


def test_flux_crosstalk_leaves_every_qubit_at_its_sweet_spot_when_all_sit_at_theirs() -> None:
    """The convention: I* is each qubit's sweet-spot current with the others at theirs; a
    realistic matrix (neighbours 0.6-2.7 %, next-nearest 0.1-0.4 %) then leaves every qubit
    at its maximum frequency."""
    matrix = {(1, 0): 0.021, (0, 1): 0.018, (2, 1): -0.012, (1, 2): 0.027, (3, 2): 0.006,
              (2, 3): 0.015, (4, 3): 0.02, (3, 4): 0.009, (2, 0): 0.003, (0, 2): 0.001,
              (3, 1): 0.004, (4, 2): -0.0015}
    device = dataclasses.replace(
        DEVICE, couplings={}, crosstalk=dataclasses.replace(DEVICE.crosstalk, flux=matrix))
    eng = PhysicsEngine(device, RACK.cabling)
    model = eng.dressed_model(eng._phi_dc(settings(6e9)))
    for q in DEVICE.qubits:
        assert abs(model.freq_hz[q.index] - q.max_frequency_hz) < 1e-3


# --------------------------------------------------------------------------- drive crosstalk

SIGMA, N_PULSE = 10.0, 40


def envelope(t_samples: np.ndarray) -> np.ndarray:
    """Gaussian of the pulse at continuous time (samples from its start); sample k holds the
    value at the middle of its interval, k + 1/2."""
    x = t_samples - N_PULSE / 2
    inside = (t_samples >= 0) & (t_samples < N_PULSE)
    return np.where(inside, np.exp(-0.5 * (x / SIGMA) ** 2), 0.0)


def reference_target_phases(dev: DeviceTruth, q: int, p: int, c: complex, amp: float,
                            phase_rad: float, lo_hz: float, nco_hz: float, start: int,
                            steps_per_sample: int) -> np.ndarray:
    """Relative phases (rad) of levels 1 and 2 of ``p`` to level 0 after ``q``'s pulse, from
    expm of the 9x9 Hamiltonian of both transmons in their rotating frames (RWA), with the
    source's drive and the crosstalk field on ``p`` evaluated at the middle of each of
    ``steps_per_sample`` steps per sample; both start in |0> and |0>, |1>, |2> of ``p``'s
    phases are read from U[(0, n), (0, n)], |2>'s without its idle phase 2 pi alpha T."""
    tq, tp = dev.qubits[q], dev.qubits[p]
    fq, fp = tq.max_frequency_hz, tp.max_frequency_hz
    dt = 1.0 / (FS * steps_per_sample)
    t = start / FS + (np.arange(N_PULSE * steps_per_sample) + 0.5) * dt
    s = amp * envelope(t * FS - start) * np.exp(1j * (2 * np.pi * nco_hz * t + phase_rad))
    zq = tq.rabi_hz_per_amplitude * np.conj(s) * np.exp(-2j * np.pi * (lo_hz - fq) * t)
    wp = c * zq * np.exp(-2j * np.pi * (fq - fp) * t)
    hq0 = 0.5 * tq.anharmonicity_hz * (N3 @ N3 - N3)
    hp0 = 0.5 * tp.anharmonicity_hz * (N3 @ N3 - N3)
    u = np.eye(9, dtype=complex)
    for zk, wk in zip(zq, wp, strict=True):
        hq = hq0 + 0.5 * (zk * A3.conj().T + np.conj(zk) * A3)
        hp = hp0 + 0.5 * (wk * A3.conj().T + np.conj(wk) * A3)
        h = np.kron(hq, I3) + np.kron(I3, hp)
        u = scipy.linalg.expm(-2j * np.pi * h * dt) @ u
    up = np.array([u[n, n] for n in range(3)])  # |0_q n_p> -> |0_q n_p>, times U_q[0, 0]
    up[2] *= np.exp(2j * np.pi * tp.anharmonicity_hz * N_PULSE / FS)  # without the idle phase
    assert abs(abs(up[1]) - abs(up[0])) < 1e-3  # p's populations stay put (off-resonant)
    return np.angle(up[1:] / up[0])


@pytest.mark.parametrize(
    ("p", "c", "amp", "steps", "rel_tol"),
    [
        # target 2: 82 MHz above the drive (1-2 transition 160 MHz below), |w| <= 10 MHz
        (2, 0.25 * np.exp(0.7j), 0.8, 20, 0.03),
        # target 1: 774 MHz below, |w| <= 12.5 MHz: a lab5-like neighbour with a large c
        (1, 0.3 * np.exp(-2.1j), 0.8, 50, 0.01),
    ],
)
def test_stark_phase_of_drive_crosstalk_matches_two_transmon_expm(p, c, amp, steps,
                                                                  rel_tol) -> None:
    """A 40 ns Gaussian (sigma 10 ns) on qubit 0's line at its frequency; the phases of the
    target's levels 1 and 2 from ``crosstalk_phases`` match the expm reference within
    ``rel_tol`` of the larger one (level 2's shifts from the two transitions nearly cancel on
    target 2), which covers the model's O((|w| / delta)^2) error (1.6e-2 and
    2.6e-4 here) and the reference's time step."""
    q = 0
    f0 = DEVICE.qubits[q].max_frequency_hz
    lo = f0 - NCO_HZ
    start = 17
    ref = reference_target_phases(DEVICE, q, p, c, amp, 0.3, lo, NCO_HZ, start, steps)
    k = np.arange(start, start + N_PULSE)
    s = amp * envelope(k - start + 0.5) * np.exp(1j * (2 * np.pi * NCO_HZ * k / FS + 0.3))
    z = DEVICE.qubits[q].rabi_hz_per_amplitude * np.conj(s) * np.exp(
        -2j * np.pi * (lo - f0) * k / FS)
    tp = DEVICE.qubits[p]
    d = crosstalk_phases(z, c, f0, tp.max_frequency_hz, tp.anharmonicity_hz, FS, (q, p))
    got = np.angle(d[1:] / d[0])
    assert abs(ref[0]) > 2e-3  # the comparison is not vacuous
    assert np.all(np.abs(got - ref) < rel_tol * np.abs(ref).max()), (got, ref)


def _x90_then_source_pulse(dev: DeviceTruth, amp_q0: float, lo_hz: float, source: int = 0,
                           target: int = 2) -> np.ndarray:
    """Evolve: an X/2 on qubit ``target`` over samples [0, 40), then a Gaussian of amplitude
    ``amp_q0`` on qubit ``source``'s line over [40, 80) (``lo_drive_a`` at ``lo_hz``, NCO
    -80 MHz); the target's reduced density matrix."""
    eng = PhysicsEngine(dev, RACK.cabling)
    los = settings(lo_hz)
    f_t = dev.qubits[target].max_frequency_hz
    lo_t = los.los[RACK.cabling[target].drive_lo][0]
    g = envelope(np.arange(N_PULSE) + 0.5)
    a90 = 0.25 / (dev.qubits[target].rabi_hz_per_amplitude * g.sum() / FS)
    plays = [(RACK.cabling[target].drive_port, 0, 0, a90, 0.0, f_t - lo_t),
             (RACK.cabling[source].drive_port, N_PULSE, 0, amp_q0, 0.3, NCO_HZ)]
    ev = eng.evolve(WireProgram.from_tuples(plays, [g], [], 2 * N_PULSE), los)
    n = ev.rho.n
    t = ev.rho.matrix().reshape([3] * (2 * n))
    i = ev.position[target]
    others = [k for k in range(n) if k != i]
    letters = "abcdefghij"
    row = [letters[k] for k in range(n)]
    col = [letters[k] if k != i else "z" for k in range(n)]
    expr = "".join(row) + "".join(col) + "->" + letters[i] + "z"
    assert others  # qubit 0 is evolved with it
    return np.einsum(expr, t)


def test_engine_applies_the_stark_phase_between_the_targets_own_pulses() -> None:
    """End to end through ``PhysicsEngine.evolve``: qubit 2 in a superposition, then a pulse on
    qubit 0 whose line reaches qubit 2 with c = 0.25 e^{0.7i}. The coherence <0|rho|1> of qubit 2
    turns by the expm reference's phase (within 3 %), relative to the same run without
    crosstalk; its magnitude is unchanged within 1e-6 (the phase is applied at the start of the
    block, before its relaxation: an error of order (T / T1) x phase x rho_12, 1e-8 here)."""
    c = 0.25 * np.exp(0.7j)
    lo = DEVICE.qubits[0].max_frequency_hz - NCO_HZ
    with_xt = _x90_then_source_pulse(device_with(drive={(2, 0): c}), 0.8, lo)
    without = _x90_then_source_pulse(device_with(), 0.8, lo)
    ref = reference_target_phases(DEVICE, 0, 2, c, 0.8, 0.3, lo, NCO_HZ, N_PULSE, 20)
    turn = np.angle(with_xt[0, 1] / without[0, 1])
    assert abs(without[0, 1]) > 0.4
    # U = diag(e^{i theta_n}) turns <0|rho|1> by theta_0 - theta_1 = -ref[0]
    assert abs(turn + ref[0]) < 0.03 * abs(ref[0]), (turn, ref[0])
    assert abs(abs(with_xt[0, 1]) - abs(without[0, 1])) < 1e-6
    assert np.allclose(np.diagonal(with_xt), np.diagonal(without), atol=1e-12)


def test_stark_phase_reaches_a_target_whose_index_is_a_held_position() -> None:
    """With the device's couplings, a pulse on qubit 2 whose line reaches qubit 3 evolves
    qubits 1-4, its idle neighbours 1 and 4 held by their populations at positions 0 and 3:
    qubit 3 (position 2) is driven, not held, and turns by the two-transmon expm reference's
    phase (within 25 %: the couplings, absent from the reference, dress both transmons)."""
    c = 0.25 * np.exp(0.7j)
    lo = DEVICE.qubits[2].max_frequency_hz - NCO_HZ
    coupled = dataclasses.replace(DEVICE, crosstalk=CrosstalkSpec(drive={(3, 2): c}))
    plain = dataclasses.replace(DEVICE, crosstalk=CrosstalkSpec())
    with_xt = _x90_then_source_pulse(coupled, 0.8, lo, source=2, target=3)
    without = _x90_then_source_pulse(plain, 0.8, lo, source=2, target=3)
    ref = reference_target_phases(DEVICE, 2, 3, c, 0.8, 0.3, lo, NCO_HZ, N_PULSE, 20)
    turn = np.angle(with_xt[0, 1] / without[0, 1])
    assert abs(without[0, 1]) > 0.4
    assert abs(ref[0]) > 1e-3
    assert abs(turn + ref[0]) < 0.25 * abs(ref[0]), (turn, ref[0])


def test_crosstalk_near_a_target_transition_is_refused_naming_the_pair() -> None:
    """Qubit 0's drive moved to 10 MHz below qubit 2's frequency (|w| up to 10 MHz): not an
    off-resonant field, so the program is refused with the pair named."""
    c = 0.25
    f2 = DEVICE.qubits[2].max_frequency_hz
    lo = f2 - 10e6 - NCO_HZ
    with pytest.raises(SimulationError, match=r"from qubit 0 to qubit 2.*0-1 transition"):
        _x90_then_source_pulse(device_with(drive={(2, 0): c}), 0.8, lo)


# --------------------------------------------------------------------------- device file


def test_lab5_ships_realistic_crosstalk() -> None:
    """Drive crosstalk between neighbours |c| 0.02-0.08; DC flux crosstalk M 0.5-3 % between
    neighbours (both ways) and 0.1-0.5 % between next-nearest qubits."""
    xt = DEVICE.crosstalk
    assert {pair for pair in xt.flux if abs(pair[0] - pair[1]) == 1} == {
        (q, q + 1) for q in range(4)} | {(q + 1, q) for q in range(4)}
    for (i, j), m in xt.flux.items():
        assert abs(i - j) in (1, 2), (i, j)
        assert (0.005 <= m <= 0.03) if abs(i - j) == 1 else (0.001 <= m <= 0.005), (i, j, m)
    assert len(xt.drive) == 8
    for (p, q), c in xt.drive.items():
        assert abs(p - q) == 1 and 0.02 <= abs(c) <= 0.08, (p, q, c)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("[[flux_crosstalk]]\nsource = 1\ntarget = 1\nfraction = 0.01\n", "both qubit 1"),
        ("[[flux_crosstalk]]\nsource = 0\ntarget = 7\nfraction = 0.01\n", "target must be"),
        ("[[flux_crosstalk]]\nsource = 0\ntarget = 4\nfraction = 1.5\n", "fraction must"),
        ("[[flux_crosstalk]]\nsource = 0\ntarget = 4\nfactor = 0.1\n", "exactly the keys"),
        ("[[drive_crosstalk]]\nsource = 0\ntarget = 4\ncoefficient = 0.1\n", "\\[re, im\\]"),
        ("[[drive_crosstalk]]\nsource = 0\ntarget = 1\ncoefficient = [0.1, 0.0]\n", "twice"),
    ],
)
def test_bad_crosstalk_entries_are_rejected_naming_the_entry(tmp_path, entry, message) -> None:
    """A copy of lab5's device file with one bad entry appended fails to load, naming it."""
    text = (Path(labqpu.__file__).parent / "firmware_sim" / "devices" / "lab5.toml").read_text()
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n" + entry)
    with pytest.raises(ValueError, match=message):
        load_device(path)


def test_drive_targets_lists_each_sources_targets_in_order() -> None:
    """What a drive on a qubit reaches, by target in order; a spec made again from other
    couplings (``dataclasses.replace``) lists its own, and its repr leaves the list out."""
    spec = CrosstalkSpec(drive={(2, 1): 0.1j, (0, 1): 0.2, (1, 0): 0.05, (3, 2): 0.01})
    assert spec.drive_targets(1) == ((0, 0.2), (2, 0.1j))
    assert spec.drive_targets(0) == ((1, 0.05),)
    assert spec.drive_targets(2) == ((3, 0.01),)
    assert spec.drive_targets(4) == ()
    other = dataclasses.replace(spec, drive={(1, 3): 0.3})
    assert other.drive_targets(3) == ((1, 0.3),) and other.drive_targets(1) == ()
    assert "_targets" not in repr(spec)
