"""Noise terms of the simulator (``labqpu/firmware_sim/noise.py``) against independent references.

* Lindblad channel with thermal excitation: ``solve_ivp`` of the Lindblad equation written
  here (1e-8); its steady state: Boltzmann p_n ~ exp(-n h f / k T) (1e-9).
* Initial state of a shot: Boltzmann at the qubit's frequency (1e-12).
* T2 away from the sweet spot (flux noise): 1/(2 T1) + 1/T_phi0 + 2 pi sqrt(ln 2) A |df/dPhi|,
  df/dPhi by finite differences (1e-3 relative).
* Ramsey under quasi-static noise: exp(-(2 pi sigma t)^2 / 2) x the same Ramsey without it,
  and exp(-t / T2) times that envelope overall (2e-3); Hahn echo: the echo without it (1e-3).
* Drift walk: the exact Ornstein-Uhlenbeck variance over many walks (4 sigma of the estimate);
  reproducible from its seed; a Ramsey fringe precesses at its offset after simulated hours.
* A Ramsey run through ``PhysicsEngine.run``: the chunk-averaged population (0.02).
* The ``[simulator] noise`` switch and the ``[noise]`` table's validation.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.constants
import scipy.integrate

import labqpu
from labqpu.firmware_sim.device import DeviceTruth, load_device, load_rack
from labqpu.firmware_sim.feedforward import FeedForward, run_with_feedforward
from labqpu.firmware_sim.noise import (
    DRIFT_STEP_S,
    DriftWalk,
    NoiseSpec,
    pulse_spans_s,
    quasi_static_chunks,
    with_offsets,
)
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram, relaxation_superop
from labqpu.firmware_sim.shots import RunAbortedError, run_shots

DEVICE: DeviceTruth = load_device("lab5")
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
FS = DEVICE.sample_rate_hz
NCO_HZ = -80e6
PULSE = 40
SIGMA = 10.0
LEVELS = 3


def gaussian(n: int, sigma: float) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    return np.exp(-0.5 * (x / sigma) ** 2)


def bare_frequency(q: int, flux_phi0: float) -> float:
    """f01 = (f_max - alpha) sqrt|cos(pi Phi)| + alpha, written out here."""
    t = DEVICE.qubits[q]
    return (t.max_frequency_hz - t.anharmonicity_hz) * math.sqrt(
        abs(math.cos(math.pi * flux_phi0))) + t.anharmonicity_hz


def quiet_uncoupled(**noise) -> DeviceTruth:
    """lab5 without couplings (dressed = bare) and with only the given noise terms."""
    return dataclasses.replace(DEVICE, couplings={}, noise=NoiseSpec(**noise))


def settings(flux_phi0: float = 0.0) -> Settings:
    """Drive LO of qubit 0 resonant with it at DC flux ``flux_phi0`` (others at the sweet spot)."""
    q0 = DEVICE.qubits[0]
    los = {"lo_drive_a": (bare_frequency(0, flux_phi0) - NCO_HZ, 13.0, True),
           "lo_drive_b": (DEVICE.qubits[1].max_frequency_hz - NCO_HZ, 13.0, True),
           "lo_readout": (7.0e9, 13.0, True)}
    currents = {(c.flux_source, c.flux_channel): DEVICE.qubits[q].sweet_spot_current_a
                for q, c in RACK.cabling.items()}
    cab = RACK.cabling[0]
    currents[(cab.flux_source, cab.flux_channel)] = (q0.sweet_spot_current_a
                                                    + flux_phi0 / q0.phi0_per_ampere)
    return Settings(los=los, currents=currents)


def program(pulses: list[tuple[int, float, float]], duration: int) -> WireProgram:
    """Gaussian drives on qubit 0: (start sample, rotation angle in rad, phase in rad), and an
    acquisition on it at sample ``duration`` (qubit 0 evolves up to there)."""
    rabi = DEVICE.qubits[0].rabi_hz_per_amplitude
    w = gaussian(PULSE, SIGMA)
    amp = [theta / (2 * math.pi * rabi * w.sum() / FS) for _, theta, _ in pulses]
    cab = RACK.cabling[0]
    plays = [(cab.drive_port, start, 0, a, phase, NCO_HZ)
             for (start, _, phase), a in zip(pulses, amp, strict=True)]
    return WireProgram.from_tuples(plays, [w], [(cab.acquire_port, duration, 1, 0.0)],
                                   duration + 1)


def qubit0_state(engine: PhysicsEngine, prog: WireProgram, st: Settings, conditions=None
                 ) -> np.ndarray:
    """Reduced 3x3 density matrix of qubit 0 after ``prog``."""
    ev = engine.evolve(prog, st, conditions=conditions)
    n = ev.rho.n
    t = ev.rho.matrix().reshape([3] * (2 * n))
    p = ev.position[0]
    others = [i for i in range(n) if i != p]
    labels = [*range(n), *(k - n if k - n in others else k for k in range(n, 2 * n))]
    return np.einsum(t, labels, [p, n + p])


# --------------------------------------------------------------------------- thermal equilibrium


def lindblad_reference(rho0: np.ndarray, t1_s: float, t_phi_s: float, ratio: float,
                       t_s: float) -> np.ndarray:
    """solve_ivp of d rho/dt = sum_k L_k rho L_k^dag - {L_k^dag L_k, rho}/2 with L = a sqrt(g_d),
    a^dag sqrt(g_u), n sqrt(2/T_phi); g_d = 1/(T1 (1 + r)), g_u = r g_d."""
    a = np.diag(np.sqrt([1.0, 2.0]), 1).astype(complex)
    n = np.diag([0.0, 1.0, 2.0]).astype(complex)
    g_d = 1.0 / (t1_s * (1.0 + ratio))
    ops = [math.sqrt(g_d) * a, math.sqrt(ratio * g_d) * a.conj().T, math.sqrt(2 / t_phi_s) * n]

    def rhs(_t, y):
        r = y.reshape(3, 3)
        out = np.zeros((3, 3), dtype=complex)
        for op in ops:
            od = op.conj().T
            out += op @ r @ od - 0.5 * (od @ op @ r + r @ od @ op)
        return out.reshape(-1)

    sol = scipy.integrate.solve_ivp(rhs, (0.0, t_s), rho0.reshape(-1).astype(complex),
                                    rtol=1e-12, atol=1e-13, method="DOP853")
    return sol.y[:, -1].reshape(3, 3)


def test_relaxation_with_thermal_excitation_matches_lindblad() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    rho0 = x @ x.conj().T
    rho0 /= np.trace(rho0)
    t1, t_phi, ratio, t = 40e-6, 25e-6, 0.02, 17e-6
    s = relaxation_superop(t1, t_phi, t, 0.0, ratio)
    got = (s @ rho0.reshape(-1)).reshape(3, 3)
    np.testing.assert_allclose(got, lindblad_reference(rho0, t1, t_phi, ratio, t), atol=1e-8)


def test_relaxation_goes_to_boltzmann_not_ground() -> None:
    """After 40 T1 from |1> the populations are p_n ~ r^n with r = exp(-h f / k T)."""
    f, temp = 5.0e9, 0.055
    r = math.exp(-scipy.constants.h * f / (scipy.constants.k * temp))
    s = relaxation_superop(30e-6, 20e-6, 40 * 30e-6, 0.0, r)
    rho = (s @ np.diag([0.0, 1.0, 0.0]).astype(complex).reshape(-1)).reshape(3, 3)
    boltz = np.array([1.0, r, r * r]) / (1 + r + r * r)
    np.testing.assert_allclose(np.real(np.diag(rho)), boltz, atol=1e-9)
    assert 0.005 < boltz[1] < 0.02


def test_each_shot_starts_thermal_at_the_qubits_frequency() -> None:
    """No pulse: qubit 0's state at the end is diagonal Boltzmann at its frequency, from the
    device file's effective temperature (lab5: 55 mK)."""
    eng = PhysicsEngine(dataclasses.replace(DEVICE, couplings={}), RACK.cabling)
    rho = qubit0_state(eng, program([(0, 0.0, 0.0)], PULSE), settings())
    r = math.exp(-scipy.constants.h * bare_frequency(0, 0.0)
                 / (scipy.constants.k * DEVICE.noise.effective_temperature_k))
    boltz = np.array([1.0, r, r * r]) / (1 + r + r * r)
    np.testing.assert_allclose(rho, np.diag(boltz), atol=1e-12)


# --------------------------------------------------------------------------- flux noise


@pytest.mark.parametrize("flux_phi0", [0.0, 0.05, 0.15])
def test_t2_follows_the_flux_slope(flux_phi0: float) -> None:
    """pi/2 pulse, then the coherence |rho_01| after 2 and 12 us of idle: it decays at
    1/(2 T1) + 1/T_phi0 + 2 pi sqrt(ln 2) A_Phi |df/dPhi| (zero temperature, so no upward
    jumps mix in)."""
    a_phi = 5e-6
    eng = PhysicsEngine(quiet_uncoupled(flux_noise_phi0=a_phi), RACK.cabling)
    st = settings(flux_phi0)
    coh = []
    for gap_us in (2, 12):
        n = PULSE + gap_us * 1000
        coh.append(abs(qubit0_state(eng, program([(0, math.pi / 2, 0.0)], n), st)[0, 1]))
    h = 1e-7
    slope = (bare_frequency(0, flux_phi0 + h) - bare_frequency(0, flux_phi0 - h)) / (2 * h)
    t = DEVICE.qubits[0]
    rate = 0.5 / t.t1_s + (1 / t.t2_s - 0.5 / t.t1_s) \
        + 2 * math.pi * math.sqrt(math.log(2)) * a_phi * abs(slope)
    measured = -math.log(coh[1] / coh[0]) / 10e-6
    assert measured == pytest.approx(rate, rel=1e-3)
    if flux_phi0 == 0.15:
        assert 1 / rate < 0.6 * t.t2_s  # T2 really falls away from the sweet spot


# --------------------------------------------------------------------------- quasi-static noise


def ramsey_signal(eng: PhysicsEngine, gap: int, echo: bool, chunks: list, st: Settings
                  ) -> float:
    """(P1(second pulse at phase 0) - P1(at phase pi)) / 2 averaged over ``chunks``
    (weight, offsets): the part of a Ramsey (or echo) signal that the coherence carries."""
    base, _ = eng.conditions(st)
    out = 0.0
    for phase in (0.0, math.pi):
        if echo:
            pulses = [(0, math.pi / 2, 0.0), (PULSE + gap // 2, math.pi, 0.0),
                      (2 * PULSE + gap, math.pi / 2, phase)]
        else:
            pulses = [(0, math.pi / 2, 0.0), (PULSE + gap, math.pi / 2, phase)]
        prog = program(pulses, pulses[-1][0] + PULSE)
        p1 = sum(w * np.real(qubit0_state(eng, prog, st, with_offsets(base, offs))[1, 1])
                 for w, offs in chunks)
        out += p1 if phase == 0.0 else -p1
    return out / 2


SIGMA_HZ = 50e3


@pytest.fixture(scope="module")
def noisy() -> PhysicsEngine:
    return PhysicsEngine(quiet_uncoupled(frequency_noise_hz=SIGMA_HZ), RACK.cabling)


def test_ramsey_decay_is_the_gaussian_envelope(noisy: PhysicsEngine) -> None:
    """Averaged over the run's chunks, the Ramsey signal is the noiseless one times
    exp(-(2 pi sigma t)^2 / 2), t the time between the pulses' centres (2e-3; measured
    < 1e-5), and the whole decay is exp(-t / T2) times that envelope (2e-3; measured
    < 1e-4), down to an envelope of 0.17."""
    st = settings()
    chunks = quasi_static_chunks({q: SIGMA_HZ if q == 0 else 0.0 for q in range(5)},
                                 np.random.default_rng(8))
    assert len(chunks) == 8 and sum(w for w, _ in chunks) == pytest.approx(1.0)
    s0 = ramsey_signal(noisy, 0, False, chunks, st)
    t = DEVICE.qubits[0]
    for gap in (1000, 3500, 6000):
        tau = (gap + PULSE) / FS
        envelope = math.exp(-(2 * math.pi * SIGMA_HZ * tau) ** 2 / 2)
        plain = ramsey_signal(noisy, gap, False, [(1.0, {})], st)
        noisy_s = ramsey_signal(noisy, gap, False, chunks, st)
        assert noisy_s == pytest.approx(envelope * plain, abs=2e-3)
        assert noisy_s / s0 == pytest.approx(math.exp(-gap / FS / t.t2_s) * envelope, abs=2e-3)
    assert envelope < 0.2  # the last point is well into the decay


def test_hahn_echo_refocuses_quasi_static_noise(noisy: PhysicsEngine) -> None:
    """The echo signal with the noise equals the one without it within 1e-3 (measured
    1e-4 to 4e-4: the Gaussian pi pulse, without DRAG, is not an exact pi rotation, and the
    part of the signal it leaves unrefocused carries the offset's phase)."""
    st = settings()
    chunks = quasi_static_chunks({q: SIGMA_HZ for q in range(5)}, np.random.default_rng(9))
    for gap in (2000, 6000):
        plain = ramsey_signal(noisy, gap, True, [(1.0, {})], st)
        assert abs(plain) > 0.2
        assert ramsey_signal(noisy, gap, True, chunks, st) == pytest.approx(plain, abs=1e-3)
        # control: without the echo pulse the same noise takes its Gaussian envelope
        envelope = math.exp(-(2 * math.pi * SIGMA_HZ * (gap + PULSE) / FS) ** 2 / 2)
        assert envelope < 0.85
        assert ramsey_signal(noisy, gap, False, chunks, st) == pytest.approx(
            envelope * ramsey_signal(noisy, gap, False, [(1.0, {})], st), abs=2e-3)


# --------------------------------------------------------------------------- drift


def test_drift_walk_is_reproducible_from_its_seed() -> None:
    spec = DEVICE.noise
    a, b = DriftWalk(spec, 5), DriftWalk(spec, 5)
    times = [0.0, 59.0, 600.0, 3600.0, 5 * 3600.0]
    for t in times:
        fa, ta = a.at(t)
        fb, tb = b.at(t)
        np.testing.assert_array_equal(fa, fb)
        np.testing.assert_array_equal(ta, tb)
    other = DriftWalk(dataclasses.replace(spec, drift_seed=spec.drift_seed + 1), 5)
    assert not np.array_equal(other.at(times[-1])[0], fa)
    # a walk asked only for the last time lands on the same state as one asked step by step
    np.testing.assert_array_equal(DriftWalk(spec, 5).at(times[-1])[0], fa)
    with pytest.raises(ValueError, match="cannot go back"):
        a.at(0.0)


@pytest.mark.parametrize("hours", [0.25, 12.0])
def test_drift_walk_has_the_stated_diffusion(hours: float) -> None:
    """Over 4000 independent walks (qubits), Var f(t) = s^2 (tau / 2 h) (1 - exp(-2 t / tau)):
    s^2 t / h while t << tau, s^2 tau / 2 h once t >> tau; the same for ln T1. Tolerance:
    4 standard errors of the variance estimate (sqrt(2 / 4000) relative)."""
    spec = DEVICE.noise
    n = 4000
    walk = DriftWalk(spec, n)
    t = hours * 3600.0
    f_hz, t1_factor = walk.at(t)
    t_grid = (t // DRIFT_STEP_S) * DRIFT_STEP_S
    tau = spec.drift_correlation_time_s
    shape = (tau / 7200.0) * (1 - math.exp(-2 * t_grid / tau))
    tol = 4 * math.sqrt(2 / n)
    assert np.var(f_hz) == pytest.approx(spec.drift_frequency_hz ** 2 * shape, rel=tol)
    assert np.var(np.log(t1_factor)) == pytest.approx(spec.drift_t1_fraction ** 2 * shape,
                                                       rel=tol)
    if hours < 1:
        assert shape == pytest.approx(t_grid / 3600.0, rel=0.05)  # still diffusing


def ramsey_phase(eng: PhysicsEngine, st: Settings, drift, gap: int) -> float:
    """Phase (rad) of a Ramsey fringe of qubit 0 after ``gap`` samples, read with the second
    pulse at phases 0 and pi/2."""
    base, _ = eng.conditions(st, drift)
    sig = []
    for phase in (0.0, math.pi / 2, math.pi, 3 * math.pi / 2):
        pulses = [(0, math.pi / 2, 0.0), (PULSE + gap, math.pi / 2, phase)]
        sig.append(np.real(qubit0_state(eng, program(pulses, 2 * PULSE + gap), st, base)[1, 1]))
    return math.atan2(sig[1] - sig[3], sig[0] - sig[2])


def test_a_calibrated_frequency_goes_stale_over_simulated_hours() -> None:
    """lab5's drift: a Ramsey fringe measured at the start and after 1, 3 and 6 simulated hours
    precesses at the walk's frequency offset (within 50 Hz of it, from the phase over 5 us),
    and after hours that offset is many kHz: the calibrated frequency is stale."""
    eng = PhysicsEngine(dataclasses.replace(DEVICE, couplings={}), RACK.cabling)
    st = settings()
    gap = 5000
    phase0 = ramsey_phase(eng, st, eng.drift.at(0.0), gap)
    offsets = []
    for hours in (1.0, 3.0, 6.0):
        drift = eng.drift.at(hours * 3600.0)
        dphi = (ramsey_phase(eng, st, drift, gap) - phase0 + math.pi) % (2 * math.pi) - math.pi
        measured_hz = dphi / (2 * math.pi * (gap + PULSE) / FS)
        assert measured_hz == pytest.approx(drift[0][0], abs=50.0)
        offsets.append(abs(measured_hz))
    assert max(offsets) > 5e3


# --------------------------------------------------------------------------- runs


def measured_program(pulses: list[tuple[int, float, float]], readout_start: int) -> WireProgram:
    """``program`` with a 1 us readout tone on qubit 0 and its acquisition at
    ``readout_start``."""
    base = program(pulses, readout_start)
    if_hz = DEVICE.qubits[0].resonator_hz - 7.0e9
    return dataclasses.replace(
        base,
        play_port=np.append(base.play_port, RACK.cabling[0].readout_port).astype(np.int32),
        play_start=np.append(base.play_start, readout_start),
        play_wave=np.append(base.play_wave, 1).astype(np.int32),
        play_amp=np.append(base.play_amp, 0.5),
        play_phase_rad=np.append(base.play_phase_rad, 0.0),
        play_freq_hz=np.append(base.play_freq_hz, if_hz),
        wave_offset=np.array([0, PULSE, PULSE + 1000], dtype=np.int64),
        wave_data=np.concatenate([base.wave_data, np.ones(1000, dtype=complex)]),
        acq_duration=np.array([1000], dtype=np.int64), acq_freq_hz=np.array([if_hz]),
        duration_samples=readout_start + 1000)


def test_run_samples_the_chunks_and_repeats_with_its_seed(noisy: PhysicsEngine) -> None:
    """A Ramsey run (5 us between the pi/2 pulses, sigma 50 kHz: envelope 0.01) through
    ``PhysicsEngine.run``: its excited fraction, read from the mean IQ against |0> and |1>
    references, is the chunk-averaged population (0.02 at 20000 shots; without the averaging
    it would be ~0.3 higher); the same seed repeats the IQ exactly, another seed does not."""
    st = settings()
    shots = 20000
    gap = 5000
    ramsey = measured_program([(0, math.pi / 2, 0.0), (PULSE + gap, math.pi / 2, 0.0)],
                              2 * PULSE + gap)
    m0 = noisy.run(measured_program([], PULSE), st, shots, np.random.default_rng(1)).mean()
    m1 = noisy.run(measured_program([(0, math.pi, 0.0)], PULSE), st, shots,
                   np.random.default_rng(2)).mean()
    iq = noisy.run(ramsey, st, shots, np.random.default_rng(3))
    p1_est = float(np.real((iq.mean() - m0) / (m1 - m0)))
    base, _ = noisy.conditions(st)
    chunks = quasi_static_chunks({0: SIGMA_HZ}, np.random.default_rng(0))
    pulses = [(0, math.pi / 2, 0.0), (PULSE + gap, math.pi / 2, 0.0)]
    prog = program(pulses, 2 * PULSE + gap)
    p1_avg = sum(w * np.real(qubit0_state(noisy, prog, st, with_offsets(base, o))[1, 1])
                 for w, o in chunks)
    p1_plain = np.real(qubit0_state(noisy, prog, st, base)[1, 1])
    assert p1_plain - p1_avg > 0.25
    p1_ref = float(np.real(qubit0_state(noisy, program([(0, math.pi, 0.0)], PULSE), st)[1, 1]))
    assert p1_est == pytest.approx(p1_avg / p1_ref, abs=0.02)
    np.testing.assert_array_equal(noisy.run(ramsey, st, 500, np.random.default_rng(3)),
                                  noisy.run(ramsey, st, 500, np.random.default_rng(3)))
    assert not np.array_equal(noisy.run(ramsey, st, 500, np.random.default_rng(3)),
                              noisy.run(ramsey, st, 500, np.random.default_rng(4)))


# --------------------------------------------------------------------------- noise switch


def _lab_toml(tmp_path: Path, line: str) -> Path:
    text = (Path(labqpu.__file__).parent / "data" / "lab5.toml").read_text()
    path = tmp_path / "lab.toml"
    path.write_text(text.replace("\n[simulator]\n", f"\n[simulator]\n{line}\n", 1))
    return path


def test_simulator_option_switches_noise_and_drift_off(tmp_path: Path) -> None:
    """``[simulator] noise = false`` loads the device with flux noise, quasi-static noise and
    drift at 0 and the thermal equilibrium kept; ``SimulatedRack(noise=...)`` overrides it;
    a non-boolean is refused naming the key."""
    from labqpu.firmware_sim.rack import SimulatedRack

    quiet = SimulatedRack(_lab_toml(tmp_path, "noise = false")).device.noise
    assert (quiet.flux_noise_phi0, quiet.frequency_noise_hz, quiet.drift_frequency_hz,
            quiet.drift_t1_fraction) == (0.0, 0.0, 0.0, 0.0)
    assert quiet.effective_temperature_k == DEVICE.noise.effective_temperature_k > 0
    assert not DriftWalk(quiet, 5).enabled
    assert SimulatedRack(_lab_toml(tmp_path, "noise = false"), noise=True).device.noise \
        == DEVICE.noise
    assert DEVICE.noise.frequency_noise_hz > 0 and DriftWalk(DEVICE.noise, 5).enabled
    with pytest.raises(ValueError, match=r"\[simulator\] noise must be true or false"):
        load_rack(_lab_toml(tmp_path, 'noise = "off"'))


def test_simulator_table_refuses_unknown_keys(tmp_path: Path) -> None:
    """A misspelt ``[simulator]`` key (which would leave noise on) is refused, naming the file,
    the key and the nearest known one."""
    path = _lab_toml(tmp_path, "nosie = false")
    with pytest.raises(ValueError, match=r"lab\.toml: \[simulator\] has unknown key 'nosie' "
                                         r"\(known: .*\); did you mean 'noise'\?"):
        load_rack(path)


def test_device_file_noise_table_is_validated(tmp_path: Path) -> None:
    """A bad ``[noise]`` field is refused with a message naming it."""
    text = (Path(labqpu.__file__).parent / "firmware_sim" / "devices" / "lab5.toml").read_text()
    start = text.index("[noise]")
    without = text[:start] + text[text.index("[[qubit]]", start):]
    for bad, message in (("flux_noise_phi0 = -1.0", "flux_noise_phi0 must be >= 0"),
                         ("flux_nosie_phi0 = 1.0", r"unknown \[noise\] field"),
                         ('drift_seed = "x"', "drift_seed must be a number"),
                         ("drift_correlation_time_s = 0", "must be > 0")):
        path = tmp_path / "dev.toml"
        path.write_text(f"{without}\n[noise]\n{bad}\n")
        with pytest.raises(ValueError, match=message):
            load_device(path)
    path.write_text(without)
    assert load_device(path).noise == NoiseSpec()  # no table: every term off


def test_a_branched_run_averages_the_quasi_static_noise_too(noisy: PhysicsEngine) -> None:
    """The Ramsey run of the test above with a mid-circuit measurement of qubit 2 (a branch
    point: qubit 2 is driven after it) goes through the feed-forward branch tree, one tree per
    chunk: qubit 0's excited fraction is again the chunk-averaged population (0.02)."""
    st = settings()
    shots = 20000
    gap = 5000
    pulses = [(0, math.pi / 2, 0.0), (PULSE + gap, math.pi / 2, 0.0)]
    ramsey = measured_program(pulses, 2 * PULSE + gap)
    branched, ff = _branched(ramsey)
    m0 = noisy.run(measured_program([], PULSE), st, shots, np.random.default_rng(1)).mean()
    m1 = noisy.run(measured_program([(0, math.pi, 0.0)], PULSE), st, shots,
                   np.random.default_rng(2)).mean()
    iq, _ = run_with_feedforward(noisy, branched, ff, st, shots, np.random.default_rng(3))
    p1_est = float(np.real((iq[:, 0].mean() - m0) / (m1 - m0)))
    base, _ = noisy.conditions(st)
    prog = program(pulses, 2 * PULSE + gap)
    p1_avg = sum(w * np.real(qubit0_state(noisy, prog, st, with_offsets(base, o))[1, 1])
                 for w, o in quasi_static_chunks({0: SIGMA_HZ}, np.random.default_rng(0)))
    p1_ref = float(np.real(qubit0_state(noisy, program([(0, math.pi, 0.0)], PULSE), st)[1, 1]))
    assert p1_est == pytest.approx(p1_avg / p1_ref, abs=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pulse_spans_match_a_play_by_play_reference(seed: int) -> None:
    """Per qubit, first start to last end (s) of the plays on its drive and flux ports,
    against a loop over the plays; readout plays and other qubits' plays do not count, and a
    qubit without one has 0."""
    rng = np.random.default_rng(seed)
    waves = [np.ones(n) for n in (8, 40, 72)]
    ports = [c.drive_port for c in RACK.cabling.values()] + \
        [c.flux_port for q, c in RACK.cabling.items() if q != 4] + [RACK.cabling[0].readout_port]
    plays = [(int(rng.choice(ports)), int(rng.integers(0, 500)), int(rng.integers(0, 3)), 0.1,
              0.0, 0.0) for _ in range(12)]
    prog = WireProgram.from_tuples(plays, waves, [], 600)
    for q, cab in RACK.cabling.items():
        mine = [(s, s + waves[w].size) for p, s, w, *_ in plays
                if p in (cab.drive_port, cab.flux_port)]
        want = (max(e for _, e in mine) - min(s for s, _ in mine)) / FS if mine else 0.0
        assert pulse_spans_s(prog, RACK.cabling, FS)[q] == want
    alone = WireProgram.from_tuples([(RACK.cabling[0].readout_port, 0, 0, 0.1, 0.0, 0.0)],
                                    waves, [], 600)
    assert set(pulse_spans_s(alone, RACK.cabling, FS).values()) == {0.0}


def test_a_cancelled_run_stops_at_its_next_chunk(noisy: PhysicsEngine, monkeypatch) -> None:
    """An abort that arrives while a run is computed (the run's cancel event set during its
    first noise chunk) ends it before the next chunk, with ``RunAbortedError``, on the plain
    path and on the branch-tree path (a mid-circuit measurement) alike. Before, the run
    computed to its end: a cancelled 100 000-shot job's status turned CANCELLED only 7 s
    later, and ``close()`` waited for it."""
    st = settings()
    pulses = [(0, math.pi / 2, 0.0), (PULSE + 5000, math.pi / 2, 0.0)]
    ramsey = measured_program(pulses, 2 * PULSE + 5000)
    evolve = noisy.evolve
    calls: list[int] = []
    cancel = threading.Event()

    def evolving(*args, **kwargs):
        calls.append(1)
        if armed:
            cancel.set()
        return evolve(*args, **kwargs)

    monkeypatch.setattr(noisy, "evolve", evolving)
    armed = False
    run_shots(noisy, ramsey, st, 2000, np.random.default_rng(3), cancel=cancel)
    assert len(calls) > 2, "the run has several chunks"
    armed = True
    for run in (lambda: run_shots(noisy, ramsey, st, 2000, np.random.default_rng(3),
                                  cancel=cancel),
                lambda: run_with_feedforward(noisy, *_branched(ramsey), st, 2000,
                                             np.random.default_rng(3), cancel=cancel)):
        calls.clear()
        cancel.clear()
        with pytest.raises(RunAbortedError, match="aborted while it was computed"):
            run()
        assert len(calls) == 1


def _branched(ramsey: WireProgram) -> tuple[WireProgram, FeedForward]:
    """``ramsey`` with a mid-circuit measurement of qubit 2 that qubit 2's later drive
    follows (a branch point), and its feed-forward part."""
    q2 = RACK.cabling[2]
    if2 = DEVICE.qubits[2].resonator_hz - 7.0e9
    branched = dataclasses.replace(
        ramsey,
        play_port=np.append(ramsey.play_port, [q2.readout_port, q2.drive_port]).astype(np.int32),
        play_start=np.append(ramsey.play_start, [0, 2000]),
        play_wave=np.append(ramsey.play_wave, [1, 0]).astype(np.int32),
        play_amp=np.append(ramsey.play_amp, [0.5, 0.1]),
        play_phase_rad=np.append(ramsey.play_phase_rad, [0.0, 0.0]),
        play_freq_hz=np.append(ramsey.play_freq_hz, [if2, NCO_HZ]),
        acq_port=np.append(ramsey.acq_port, q2.acquire_port).astype(np.int32),
        acq_start=np.append(ramsey.acq_start, 0), acq_duration=np.append(ramsey.acq_duration, 1000),
        acq_freq_hz=np.append(ramsey.acq_freq_hz, if2))
    n_play = branched.play_port.shape[0]
    empty_i, empty_f = np.zeros(0, dtype=np.int32), np.zeros(0)
    ff = FeedForward(play_block=np.full(n_play, -1, dtype=np.int32), block_acq=empty_i,
                     block_value=empty_i, shift_port=empty_i, shift_start=np.zeros(0, np.int64),
                     shift_phase_rad=empty_f, shift_block=empty_i,
                     disc_axis=np.zeros(2, dtype=complex), disc_threshold=np.zeros(2))
    return branched, ff
