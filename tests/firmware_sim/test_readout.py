"""The readout model (``labqpu.firmware_sim.readout``) and the shot chain (``shots``).

References are written here independently: ``scipy.integrate.solve_ivp`` of the resonator
equation in the LO frame, a numpy twin of the per-shot jump kernel, the exponential law of the
transition rate, and the decay cascade's closed form. Run-level tests go through
``PhysicsEngine.run`` (no sockets); the backend's end-to-end tests are in
``tests/backend/test_readout_levels.py``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.integrate

import labqpu
from labqpu.firmware_sim.device import load_device, load_rack
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram
from labqpu.firmware_sim.readout import (
    MAX_JUMPS,
    ReadoutPhysics,
    _power,
    _window_kernel,
    acquire_window,
    critical_photon_number,
    level_exponents,
    measurement_dephasing_rate_hz,
)
from labqpu.firmware_sim.shots import cascade_level

DEVICE = load_device("lab5", noise=False)
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
FS = DEVICE.sample_rate_hz
LO_HZ = 7.0e9
TRUTH = DEVICE.qubits[0]
#: A readout tone at the midpoint of |0> and |1> (f_r), as calibration picks it.
IF_HZ = TRUTH.resonator_hz - LO_HZ


def quiet(truth=TRUTH, **changes):
    """``truth`` without noise and relaxation in the window (unless ``changes`` say)."""
    return dataclasses.replace(truth, **{"readout_noise_per_sample": 0.0, **changes})


def tone(n: int, start: int, amp: float, if_hz: float = IF_HZ, rise: int = 0) -> np.ndarray:
    """Samples of a tone at ``if_hz`` from ``start`` on (absolute NCO phase), with a linear
    rise of ``rise`` samples."""
    t = np.arange(start, start + n) / FS
    env = np.ones(n) if not rise else np.minimum(1.0, (np.arange(n) + 1) / rise)
    return amp * env * np.exp(2j * np.pi * if_hz * t)


def reference_field(port: np.ndarray, t_end: int, level: int, tone_hz: float, mixer: float
                    ) -> np.ndarray:
    """beta(t_k) for k in 0..t_end from solve_ivp of the resonator equation in the LO frame,
    d beta/dt = -(kappa/2 - i Delta) beta + (kappa/2) g_mix s(t), with s(t) the samples'
    envelope relative to ``tone_hz`` held per sample and rotated continuously at the IF."""
    kappa = 2 * np.pi * TRUTH.resonator_linewidth_hz
    delta = 2 * np.pi * (TRUTH.resonator_hz + TRUTH.dispersive_shift_hz * (2 * level - 1) - LO_HZ)
    w_if = 2 * np.pi * (tone_hz - LO_HZ)
    k = np.arange(port.size)
    env = mixer * port * np.exp(-1j * w_if * k / FS)

    def rhs(t, y):
        i = min(int(np.floor(t * FS + 1e-9)), port.size - 1)
        beta = y[0] + 1j * y[1]
        d = -(kappa / 2 - 1j * delta) * beta + kappa / 2 * env[i] * np.exp(1j * w_if * t)
        return [d.real, d.imag]

    out = np.zeros(t_end + 1, dtype=complex)
    y = [0.0, 0.0]
    for j in range(t_end):  # one solve per sample: the drive jumps at sample boundaries
        sol = scipy.integrate.solve_ivp(rhs, (j / FS, (j + 1) / FS), y, rtol=1e-10,
                                        atol=1e-13, method="DOP853")
        y = sol.y[:, -1]
        out[j + 1] = y[0] + 1j * y[1]
    return out


@pytest.mark.parametrize("level", [0, 1, 2])
def test_trace_follows_the_resonator_equation_through_ring_up_and_ring_down(level: int) -> None:
    """A tone rising over 20 samples from sample 40, window from 100 to 700, tone off at 400:
    the decimation-1 trace is G beta(t_k) exp(-i 2 pi f_demod t_k), beta from solve_ivp of the
    resonator equation (1e-6 of the steady amplitude), ring-up before the window included."""
    n_total, start, dur, t_on, t_off = 700, 100, 600, 40, 400
    port = np.zeros(n_total, dtype=complex)
    port[t_on:t_off] = tone(t_off - t_on, t_on, 0.3, rise=20)
    truth = quiet(t1_s=1e9)
    mixer = 0.8
    demod = IF_HZ + 3e6
    rec = acquire_window(truth, ReadoutPhysics(), FS, (LO_HZ, 13.0, True), mixer, 5.8e9, port,
                         start, dur, demod, np.full(4, level), np.random.default_rng(0), 1e9,
                         decimation=1)
    ref = reference_field(port, start + dur, level, LO_HZ + IF_HZ, mixer)
    k = np.arange(start, start + dur)
    expected = truth.readout_gain * ref[k] * np.exp(-2j * np.pi * demod * k / FS)
    assert rec.trace.shape == (4, dur)
    np.testing.assert_allclose(rec.trace[0], expected, atol=1e-6 * 0.3 * mixer)
    np.testing.assert_allclose(rec.iq, expected.mean(), atol=1e-9)
    assert np.abs(ref[t_off]) > 5 * np.abs(ref[start + dur])  # it rang down
    assert np.all(rec.end_level == level)


def test_steady_state_is_the_lorentzian_and_an_earlier_drive_counts() -> None:
    """A tone that starts 3 us before the window (beyond ten ring-up times) gives the
    Lorentzian response g_mix a / (1 + 2 i (f - f_l) / kappa) in the window (1e-6); with the
    window's own start as the tone's start the mean is smaller (ring-up)."""
    start, dur, a = 3000, 400, 0.25
    port = tone(start + dur, 0, a)
    truth = quiet(t1_s=1e9)
    for level in (0, 1):
        rec = acquire_window(truth, ReadoutPhysics(), FS, (LO_HZ, 13.0, True), 1.0, 5.8e9,
                             port, start, dur, IF_HZ, np.array([level]),
                             np.random.default_rng(1), 1e9)
        f_l = TRUTH.resonator_hz + TRUTH.dispersive_shift_hz * (2 * level - 1)
        lorentz = a / (1 + 2j * (LO_HZ + IF_HZ - f_l) / TRUTH.resonator_linewidth_hz)
        assert abs(rec.iq[0] - lorentz) < 1e-6
        late = np.zeros_like(port)
        late[start:] = port[start:]
        cold = acquire_window(truth, ReadoutPhysics(), FS, (LO_HZ, 13.0, True), 1.0, 5.8e9,
                              late, start, dur, IF_HZ, np.array([level]),
                              np.random.default_rng(1), 1e9)
        assert abs(cold.iq[0]) < 0.85 * abs(lorentz)


def _window_reference(u, rot, gamma_start, levels, step_e, step_d, photons_per_field2,
                      rate, n_crit, exponent, t1_s, dt, expo, unif, bin_len):
    """numpy twin of ``_window_kernel``: shots vectorised, samples in a loop."""
    shots, n = levels.size, u.size
    n_bins = -(-n // bin_len)
    sums = np.zeros((shots, n_bins), dtype=complex)
    lvl = levels.copy()
    g = gamma_start[lvl]
    used = np.zeros(shots, dtype=int)
    left = expo[:, 0].copy()
    rows = np.arange(shots)
    for k in range(n):
        sums[:, k // bin_len] += g * rot[k]
        down = lvl / t1_s
        photons = photons_per_field2 * np.abs(g) ** 2
        up = np.where(lvl < 2, rate * (photons / n_crit) ** exponent, 0.0)
        total = (down + up) * dt
        active = (used < MAX_JUMPS) & (total > 0)
        left = np.where(active, left - total, left)
        jump = active & (left <= 0)
        u_draw = unif[rows, np.minimum(used, MAX_JUMPS - 1)]
        step = np.where(u_draw * (down + up) < up, 1, -1)
        lvl = np.where(jump, lvl + step, lvl)
        used = used + jump
        left = np.where(jump & (used < MAX_JUMPS), expo[rows, np.minimum(used, MAX_JUMPS - 1)],
                        left)
        g = step_e[lvl] * g + step_d[lvl] * u[k]
    return sums, lvl


def test_window_kernel_matches_numpy_reference() -> None:
    """Random levels, a strong tone (transitions up and T1 down both happen), bins of 7:
    the numba kernel and its numpy twin agree to 1e-12 and on every end level."""
    rng = np.random.default_rng(5)
    shots, n = 300, 500
    lam = level_exponents(LO_HZ + IF_HZ, TRUTH.resonator_hz, TRUTH.dispersive_shift_hz,
                          TRUTH.resonator_linewidth_hz)
    dt = 1 / FS
    step_e = np.exp(lam * dt)
    step_d = np.pi * TRUTH.resonator_linewidth_hz * (step_e - 1) / lam
    u = 0.9 * np.ones(n, dtype=complex)
    rot = np.exp(2j * np.pi * 1e6 * np.arange(n) / FS)
    gamma_start = np.array([0.1 + 0.2j, 0.3j, -0.1 + 0j])
    levels = rng.integers(0, 3, shots)
    expo = rng.exponential(1.0, (shots, MAX_JUMPS))
    unif = rng.random((shots, MAX_JUMPS))
    args = (u, rot, gamma_start, levels, step_e, step_d, 300.0, 5e6, 56.0, 6.0, 2e-6, dt,
            expo, unif, 7)
    sums, end = _window_kernel(*args)
    ref_sums, ref_end = _window_reference(*args)
    np.testing.assert_allclose(sums, ref_sums, atol=1e-12)
    np.testing.assert_array_equal(end, ref_end)
    assert 0 < np.mean(end != levels) < 1  # the test exercises jumps


@pytest.mark.parametrize("p", [1.0, 2.0, 6.0, 8.0, 16.0, 17.0, 2.5, 0.5])
def test_the_rate_power_is_numpys_power(p: float) -> None:
    """The transition rate's power (repeated squaring for whole powers up to 16) against
    numpy's, on photon ratios from 0 to far above critical: equal to 1e-14 relative."""
    x = np.concatenate([[0.0, 1.0], np.geomspace(1e-6, 1e3, 200)])
    got = np.array([_power(v, p) for v in x])
    np.testing.assert_allclose(got, x ** p, rtol=1e-14, atol=0)


def test_measurement_induced_transitions_follow_the_rate_law() -> None:
    """|0> in a steady field of n photons (tone on for 3 us before the window; T1 off):
    P(still |0> after the window) = exp(-Gamma_c (n / n_crit)^p T) within 4 sigma."""
    start, dur, a, shots = 3000, 1000, 0.55, 20000
    truth = quiet(t1_s=1e9)
    physics = ReadoutPhysics(transition_rate_at_critical_hz=1e6, transition_exponent=6.0)
    port = tone(start + dur, 0, a)
    f_q = truth.frequency_hz(0.0)
    rec = acquire_window(truth, physics, FS, (LO_HZ, 13.0, True), 1.0, f_q, port, start, dur,
                         IF_HZ, np.zeros(shots, dtype=int), np.random.default_rng(2), 1e9)
    f0 = TRUTH.resonator_hz - TRUTH.dispersive_shift_hz
    photons = truth.resonator_photons_at_full_scale * abs(
        a / (1 + 2j * (LO_HZ + IF_HZ - f0) / TRUTH.resonator_linewidth_hz)) ** 2
    n_crit = ((f_q - TRUTH.resonator_hz) / (2 * TRUTH.resonator_coupling_hz)) ** 2
    assert n_crit == pytest.approx(critical_photon_number(f_q, TRUTH.resonator_hz,
                                                          TRUTH.resonator_coupling_hz))
    p_stay = math.exp(-1e6 * (photons / n_crit) ** 6 * dur / FS)
    assert 0.2 < p_stay < 0.9
    measured = np.mean(rec.end_level == 0)
    assert abs(measured - p_stay) < 4 * math.sqrt(p_stay * (1 - p_stay) / shots)


def test_measurement_dephasing_rate_is_the_which_state_information_rate() -> None:
    """Gamma_m(n) = kappa |beta_0 - beta_1|^2 / 2 in photon units, with beta_l the steady
    fields of a tone at f_r (states at f_r -+ chi) scaled to n photons on average; 8 chi^2 n /
    kappa when chi << kappa."""
    kappa_hz, chi_hz, n = 2.0e6, 0.9e6, 10.0
    kappa, chi = 2 * np.pi * kappa_hz, 2 * np.pi * chi_hz
    b0, b1 = 1 / (kappa / 2 + 1j * chi), 1 / (kappa / 2 - 1j * chi)
    scale = n / abs(b0) ** 2  # |beta_0|^2 = |beta_1|^2 = n photons
    expected = kappa * scale * abs(b0 - b1) ** 2 / 2
    assert measurement_dephasing_rate_hz(n, chi_hz, kappa_hz) == pytest.approx(expected, 1e-12)
    weak = measurement_dephasing_rate_hz(n, 1e3, kappa_hz)
    assert weak == pytest.approx(8 * (2 * np.pi * 1e3) ** 2 * n / kappa, rel=1e-6)


def test_cascade_matches_the_decay_law() -> None:
    """From |2> after time t: P(2) = e^{-2t/T1}, P(1) = 2 (e^{-t/T1} - e^{-2t/T1}) (4 sigma)."""
    rng = np.random.default_rng(8)
    t1, t, n = 30e-6, 20e-6, 40000
    draws = rng.exponential(1.0, (n, 2))
    levels = np.array([cascade_level(2, t, t1, d) for d in draws])
    p2 = math.exp(-2 * t / t1)
    p1 = 2 * (math.exp(-t / t1) - math.exp(-2 * t / t1))
    for lv, p in ((2, p2), (1, p1)):
        assert abs(np.mean(levels == lv) - p) < 4 * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------ runs through the engine


def _settings() -> Settings:
    los = {name: (0.0, 13.0, True) for name in {c.drive_lo for c in RACK.cabling.values()}}
    los[RACK.cabling[0].drive_lo] = (DEVICE.qubits[0].frequency_hz(0.0) + 80e6, 13.0, True)
    los[RACK.cabling[0].readout_lo] = (LO_HZ, 13.0, True)
    currents = {}
    for q, cab in RACK.cabling.items():
        currents[(cab.flux_source, cab.flux_channel)] = DEVICE.qubits[q].sweet_spot_current_a
    return Settings(los=los, currents=currents)


def _program(pi: bool, readout_amp: float, readout: int = 1000) -> WireProgram:
    """Optionally a pi pulse (Gaussian, 40 samples) on qubit 0, then a readout tone and its
    acquisition over the same ``readout`` samples from sample 48."""
    cab = RACK.cabling[0]
    n_pulse, sigma = 40, 10.0
    x = np.arange(n_pulse) - (n_pulse - 1) / 2
    gauss = np.exp(-x**2 / (2 * sigma**2))
    gauss -= gauss[0]
    pi_amp = 1.0 / (2 * DEVICE.qubits[0].rabi_hz_per_amplitude * gauss.sum() / FS)
    plays = [(cab.drive_port, 0, 0, pi_amp if pi else 0.0, 0.0, -80e6),
             (cab.readout_port, 48, 1, readout_amp, 0.0, IF_HZ)]
    return WireProgram.from_tuples(plays, [gauss, np.ones(readout)],
                                   [(cab.acquire_port, 48, readout, IF_HZ)], 48 + readout)


def _assignment_fidelity(engine: PhysicsEngine, amp: float, shots: int = 3000) -> float:
    """1 - (P(1|0) + P(0|1)) / 2 with the best threshold on the axis between the medians."""
    st = _settings()
    i0 = engine.run(_program(False, amp), st, shots, np.random.default_rng(11))[:, 0]
    i1 = engine.run(_program(True, amp), st, shots, np.random.default_rng(12))[:, 0]
    c0 = np.median(i0.real) + 1j * np.median(i0.imag)
    c1 = np.median(i1.real) + 1j * np.median(i1.imag)
    axis = (c1 - c0) / abs(c1 - c0)
    x0, x1 = np.real((i0 - c0) * np.conj(axis)), np.real((i1 - c0) * np.conj(axis))
    return max(1 - 0.5 * (np.mean(x0 > t) + np.mean(x1 <= t))
               for t in np.linspace(0, abs(c1 - c0), 101))


def test_assignment_fidelity_has_an_interior_maximum_in_readout_amplitude() -> None:
    """Qubit 0, 1 us readout at f_r: fidelity rises with amplitude (signal over noise), then
    falls once n approaches n_crit (measurement-induced transitions). Measured: 0.899 at 0.2,
    0.982 at 0.4, 0.882 at 0.6. Without transitions (rate 0): 0.983 at 0.4, 0.988 at 0.6, so
    the maximum is the transitions' doing."""
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    f = {a: _assignment_fidelity(engine, a) for a in (0.2, 0.4, 0.6)}
    assert f[0.4] > f[0.2] + 0.04, f
    assert f[0.4] > f[0.6] + 0.04, f
    assert f[0.4] > 0.96, f
    no_mit = dataclasses.replace(DEVICE, readout=ReadoutPhysics())
    g = {a: _assignment_fidelity(PhysicsEngine(no_mit, RACK.cabling), a) for a in (0.4, 0.6)}
    assert g[0.6] >= g[0.4] - 0.005, g


def test_short_rep_delay_leaves_the_previous_shot_excited() -> None:
    """X then measure, 3000 shots in sequence. With rep_delay 500 us (> 10 T1) P(1) is the
    readout's (>= 0.93) and a shot does not depend on the one before; with 1 us the previous
    shot's |1> is still there (exp(-2 us / 42 us) = 0.95), X takes it to |0>, and shots
    alternate: P(1) ~ 0.5, and a shot after a 1 reads 1 in < 20 % of cases."""
    engine = PhysicsEngine(DEVICE, RACK.cabling)
    st = _settings()
    prog = _program(True, 0.4)
    c0 = engine.run(_program(False, 0.4), st, 2000, np.random.default_rng(3))[:, 0].mean()
    c1 = engine.run(prog, st, 2000, np.random.default_rng(4), rep_delay_s=500e-6)[:, 0].mean()

    def bits(rep_delay_s: float) -> np.ndarray:
        iq = engine.run(prog, st, 3000, np.random.default_rng(5), rep_delay_s=rep_delay_s)[:, 0]
        return (np.abs(iq - c1) < np.abs(iq - c0)).astype(int)

    slow, fast = bits(500e-6), bits(1e-6)
    assert slow.mean() >= 0.93
    assert slow[1:][slow[:-1] == 1].mean() >= 0.9
    assert 0.4 < fast.mean() < 0.6
    assert fast[1:][fast[:-1] == 1].mean() < 0.2
    independent = engine.run(prog, st, 3000, np.random.default_rng(5))[:, 0]
    assert np.mean(np.abs(independent - c1) < np.abs(independent - c0)) >= 0.93
