"""The simulator's physics against independent references written in this file.

The conventions are those of the ``labqpu.firmware_sim.physics`` module docstring:

* rendered sample = amp * w[k] * exp(i (2 pi f (start + k) / fs + phase)), plays add;
* each transmon has 3 levels; in the frame rotating at its idle frequency f_idle
  H/h = (f(Phi) - f_idle) n + (alpha/2) n (n - 1) + (R/2) (z a^dag + z* a),
  z_k = g_mix s_k exp(i 2 pi (f_LO - f_idle) t_k), t_k = k / fs (zero-order hold per sample);
* single-transmon physics is checked here on lab5 without its couplings (dressed = bare); the
  always-on coupling, static ZZ and CZ are checked in test_coupling.py;
* relaxation: jump operators sqrt(1/T1) a and sqrt(2/T_phi) n, row-major vectorisation.

This file checks the render and propagate kernels, relaxation against Lindblad integration,
single-qubit drive, ``run()`` end to end, SimulationError and idle gaps; the DensityMatrix
operations and the relaxation superoperator's decay laws are in test_physics_density_matrix.py.
References use scipy.linalg.expm, scipy.integrate.solve_ivp and dense Kronecker products; none
calls the code under test. Tolerances are stated per test.
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
import scipy.linalg
import scipy.optimize
from numpy.testing import assert_allclose

import labqpu
from labqpu.errors import SimulationError
from labqpu.firmware_sim.clusters import _propagate_kernel
from labqpu.firmware_sim.crosstalk import CrosstalkSpec
from labqpu.firmware_sim.device import DeviceTruth, QubitTruth, load_device, load_rack
from labqpu.firmware_sim.noise import NoiseSpec
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram, relaxation_superop
from labqpu.firmware_sim.render import _render_kernel, play_peaks

DEVICE: DeviceTruth = load_device("lab5")
RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")
FS = DEVICE.sample_rate_hz
DT = 1.0 / FS
N_PORTS = 15
NCO_HZ = -80e6  # drive IF used throughout: LO = f_qubit - NCO_HZ is resonant
READOUT_LO_HZ = 7.0e9

# --------------------------------------------------------------------------- references


def ladder() -> np.ndarray:
    """Annihilation operator of a three-level system, written out by hand."""
    s2 = math.sqrt(2.0)
    return np.array([[0, 1, 0], [0, 0, s2], [0, 0, 0]], dtype=complex)


A3 = ladder()
N3 = np.diag([0.0, 1.0, 2.0]).astype(complex)
I3 = np.eye(3, dtype=complex)


def transmon_frequency_hz(q: QubitTruth, flux_phi0: float) -> float:
    """Symmetric-SQUID transmon: f01 = (f_max - alpha) sqrt|cos(pi Phi)| + alpha."""
    alpha = q.anharmonicity_hz
    return (q.max_frequency_hz - alpha) * math.sqrt(abs(math.cos(math.pi * flux_phi0))) + alpha


def flux_for_frequency(q: QubitTruth, f_hz: float) -> float:
    """Inverse of ``transmon_frequency_hz`` on the first branch (Phi in [0, 1/2))."""
    alpha = q.anharmonicity_hz
    ratio = (f_hz - alpha) / (q.max_frequency_hz - alpha)
    return math.acos(ratio**2) / math.pi


def render_reference(n_ports, n_samples, plays, waves, fs=FS) -> np.ndarray:
    """plays: (port, start, wave, amp, phase_rad, freq_hz); direct per-play evaluation."""
    out = np.zeros((n_ports, n_samples), dtype=complex)
    for port, start, wave, amp, phase, freq in plays:
        w = np.asarray(waves[wave], dtype=complex)
        t = (start + np.arange(w.size)) / fs
        out[port, start:start + w.size] += amp * w * np.exp(1j * (2 * np.pi * freq * t + phase))
    return out


def expm_product(h_stack_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """prod_k expm(-2 pi i H_k dt), last sample leftmost."""
    u = np.eye(h_stack_hz.shape[1], dtype=complex)
    for h in h_stack_hz:
        u = scipy.linalg.expm(-2j * np.pi * h * dt_s) @ u
    return u


def gaussian(n: int, sigma: float) -> np.ndarray:
    x = np.arange(n) - (n - 1) / 2
    return np.exp(-0.5 * (x / sigma) ** 2)


def settings(drive_lo_hz: dict[str, float] | None = None, power_dbm: float = 13.0,
             on: bool = True) -> Settings:
    """LOs at 13 dBm (on), every flux bias at its qubit's sweet spot. By default each drive
    LO sits 80 MHz above qubit 0 (lo_drive_a) and qubit 1 (lo_drive_b)."""
    los = {
        "lo_drive_a": (DEVICE.qubits[0].max_frequency_hz - NCO_HZ, power_dbm, on),
        "lo_drive_b": (DEVICE.qubits[1].max_frequency_hz - NCO_HZ, power_dbm, on),
        "lo_readout": (READOUT_LO_HZ, 13.0, True),
    }
    for name, f in (drive_lo_hz or {}).items():
        los[name] = (f, power_dbm, on)
    currents = {(cab.flux_source, cab.flux_channel): DEVICE.qubits[q].sweet_spot_current_a
                for q, cab in RACK.cabling.items()}
    return Settings(los=los, currents=currents)


#: lab5 without its couplings and crosstalk: single-transmon physics is checked on it against
#: single-transmon references (dressed = bare). The coupled physics is checked in
#: test_coupling.py, crosstalk in test_crosstalk.py.
UNCOUPLED: DeviceTruth = dataclasses.replace(DEVICE, couplings={}, crosstalk=CrosstalkSpec())


def engine() -> PhysicsEngine:
    return PhysicsEngine(UNCOUPLED, RACK.cabling)


IDLE_F = {q: transmon_frequency_hz(DEVICE.qubits[q], 0.0) for q in range(len(DEVICE.qubits))}


def drive_reference_unitary(q: int, s: np.ndarray, start: int, lo_hz: float) -> np.ndarray:
    """One transmon in its idle rotating frame under rendered drive samples ``s`` that begin
    at absolute sample ``start`` (mixer gain 1)."""
    truth = DEVICE.qubits[q]
    r = truth.rabi_hz_per_amplitude
    t = (start + np.arange(s.size)) / FS
    z = np.conj(s) * np.exp(-2j * np.pi * (lo_hz - IDLE_F[q]) * t)
    h0 = 0.5 * truth.anharmonicity_hz * (N3 @ N3 - N3)
    hs = np.array([h0 + 0.5 * r * (zk * A3.conj().T + np.conj(zk) * A3) for zk in z])
    return expm_product(hs, DT)


def assert_unitary_close_up_to_phase(u: np.ndarray, ref: np.ndarray, atol: float) -> None:
    phase = np.angle(np.trace(ref.conj().T @ u))
    assert_allclose(u * np.exp(-1j * phase), ref, rtol=0, atol=atol)


# --------------------------------------------------------------------------- _render_kernel


def _call_render(n_ports, n_samples, plays, waves):
    lengths = [len(w) for w in waves]
    col = list(zip(*plays, strict=True))
    return _render_kernel(
        n_ports, n_samples,
        np.array(col[0], dtype=np.int32), np.array(col[1], dtype=np.int64),
        np.array(col[2], dtype=np.int32), np.array(col[3], dtype=np.float64),
        np.array(col[4], dtype=np.float64), np.array(col[5], dtype=np.float64),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.concatenate([np.asarray(w, dtype=complex) for w in waves]), FS,
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_render_kernel_matches_reference_on_random_programs(seed: int) -> None:
    """Random overlapping plays, waveforms of 1..1000 samples (several > 64, crossing the
    kernel's 64-sample phase re-synchronisation), NCO up to Nyquist: rtol 1e-9 of the peak."""
    rng = np.random.default_rng(seed)
    lengths = [1, 2, 63, 64, 65, 129, 300, 1000]
    waves = [rng.normal(size=n) + 1j * rng.normal(size=n) for n in lengths]
    n_ports, n_samples = 4, 2500
    plays = []
    for _ in range(40):
        w = int(rng.integers(len(waves)))
        start = int(rng.integers(0, n_samples - lengths[w] + 1))
        plays.append((int(rng.integers(n_ports)), start, w, float(rng.uniform(-1, 1)),
                      float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(-0.5, 0.5) * FS)))
    got = _call_render(n_ports, n_samples, plays, waves)
    ref = render_reference(n_ports, n_samples, plays, waves)
    assert got.shape == (n_ports, n_samples)
    assert_allclose(got, ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_play_peaks_are_the_rows_largest_magnitudes(seed: int) -> None:
    """Random overlapping plays on 5 ports, one of them never played: the peaks taken over
    the played samples only equal numpy's largest |sample| of each rendered row, to 1e-15
    relative (numba's and numpy's |z| may differ in the last bit)."""
    rng = np.random.default_rng(seed)
    waves = [rng.normal(size=n) + 1j * rng.normal(size=n) for n in (3, 40, 160)]
    plays = [(int(rng.integers(4)), int(rng.integers(0, 800)), int(rng.integers(3)),
              float(rng.uniform(-1, 1)), 0.3, float(rng.uniform(-0.5, 0.5) * FS))
             for _ in range(30)]
    samples = _call_render(5, 1000, plays, waves)
    col = list(zip(*plays, strict=True))
    got = play_peaks(samples, np.array(col[0], dtype=np.int32), np.array(col[1], np.int64),
                     np.array([len(waves[w]) for w in col[2]], dtype=np.int64))
    assert got[4] == 0.0
    assert_allclose(got, np.abs(samples).max(axis=1), rtol=1e-15, atol=0)


def test_render_kernel_uses_absolute_time_far_into_a_program() -> None:
    """A 5000-sample play starting at sample 10^6 at 437.3 MHz: the phase follows the absolute
    sample time (tolerance 1e-9, limited by float64 phase at 2.7e6 rad)."""
    wave = np.linspace(0.2, 1.0, 5000)
    plays = [(0, 1_000_000, 0, 0.7, 0.3, 437.3e6)]
    got = _call_render(1, 1_005_000, plays, [wave])
    ref = render_reference(1, 1_005_000, plays, [wave])
    assert_allclose(got[0, 1_000_000:], ref[0, 1_000_000:], rtol=0, atol=1e-9)
    assert not np.any(got[0, :1_000_000])


def test_render_kernel_nco_phase_is_continuous_across_plays() -> None:
    """Two back-to-back plays of a constant waveform at one frequency equal one long play
    (1e-12): the NCO runs on absolute time, not per play."""
    f = 123.4e6
    one = _call_render(1, 300, [(0, 10, 0, 0.5, 0.2, f)], [np.ones(200)])
    two = _call_render(1, 300, [(0, 10, 0, 0.5, 0.2, f), (0, 110, 0, 0.5, 0.2, f)],
                       [np.ones(100)])
    assert_allclose(two, one, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- _propagate_kernel


@pytest.mark.parametrize(("d", "n_samples", "seed"), [(3, 1, 0), (3, 60, 1), (9, 40, 2)])
def test_propagate_kernel_matches_expm_product(d: int, n_samples: int, seed: int) -> None:
    """Random Hermitian stacks (entries up to ~300 MHz, dt 1 ns) vs the product of
    scipy.linalg.expm per sample: elementwise tolerance 1e-10."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, d, d)) + 1j * rng.normal(size=(n_samples, d, d))
    h = 150e6 * (x + np.conj(np.swapaxes(x, 1, 2)))
    got = _propagate_kernel(h, DT)
    assert_allclose(got, expm_product(h, DT), rtol=0, atol=1e-10)
    assert_allclose(got @ got.conj().T, np.eye(d), rtol=0, atol=1e-10)


def test_propagate_kernel_order_is_last_sample_leftmost() -> None:
    """Non-commuting samples: the result is U_1 U_0, not U_0 U_1 (tolerance 1e-12)."""
    sx = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=complex) * 125e6
    sy = np.array([[0, -1j, 0], [1j, 0, 0], [0, 0, 0]], dtype=complex) * 125e6
    got = _propagate_kernel(np.array([sx, sy]), DT)
    u0 = scipy.linalg.expm(-2j * np.pi * sx * DT)
    u1 = scipy.linalg.expm(-2j * np.pi * sy * DT)
    assert_allclose(got, u1 @ u0, rtol=0, atol=1e-12)
    assert np.max(np.abs(got - u0 @ u1)) > 0.1


def test_propagate_kernel_empty_stack_is_identity() -> None:
    assert_allclose(_propagate_kernel(np.zeros((0, 9, 9), dtype=complex), DT), np.eye(9))


# --------------------------------------------------------------------------- relaxation


def lindblad_solution(rho0: np.ndarray, t1_s: float, t_phi_s: float, t_s: float,
                      h_hz: np.ndarray | None = None) -> np.ndarray:
    """Integrate d rho/dt = -i 2 pi [H, rho] + sum_L L rho L^+ - {L^+ L, rho}/2 with solve_ivp
    (time in us; H in Hz, 0 when ``h_hz`` is None)."""
    h = np.zeros((3, 3), dtype=complex) if h_hz is None else h_hz
    jumps = [math.sqrt(1.0 / t1_s) * A3]
    if math.isfinite(t_phi_s):
        jumps.append(math.sqrt(2.0 / t_phi_s) * N3)

    def rhs(_t, y):
        rho = (y[:9] + 1j * y[9:]).reshape(3, 3)
        drho = -2j * np.pi * (h @ rho - rho @ h)
        for L in jumps:
            ld = L.conj().T
            drho += L @ rho @ ld - 0.5 * (ld @ L @ rho + rho @ ld @ L)
        drho *= 1e-6  # per microsecond
        return np.concatenate([drho.real.ravel(), drho.imag.ravel()])

    y0 = np.concatenate([rho0.real.ravel(), rho0.imag.ravel()])
    sol = scipy.integrate.solve_ivp(rhs, (0.0, t_s * 1e6), y0, method="DOP853",
                                    rtol=1e-11, atol=1e-13)
    y = sol.y[:, -1]
    return (y[:9] + 1j * y[9:]).reshape(3, 3)


@pytest.mark.parametrize(("qubit", "t_s"), [(0, 0.3e-6), (1, 12e-6), (4, 70e-6)])
def test_relaxation_superop_matches_lindblad_integration(
    qubit: int, t_s: float, random_density_matrix
) -> None:
    """The 9x9 channel applied (row-major vec) to a random 3x3 state equals the integrated
    Lindblad equation: elementwise tolerance 1e-8."""
    q = DEVICE.qubits[qubit]
    rho0 = random_density_matrix(3, np.random.default_rng(qubit))
    sop = relaxation_superop(q.t1_s, q.t_phi_s, t_s)
    got = (sop @ rho0.reshape(-1)).reshape(3, 3)
    assert_allclose(got, lindblad_solution(rho0, q.t1_s, q.t_phi_s, t_s), rtol=0, atol=1e-8)


def test_relaxation_superop_without_pure_dephasing_matches_lindblad(random_density_matrix) -> None:
    """T_phi = inf (T2 = 2 T1): only ladder decay; tolerance 1e-8."""
    rho0 = random_density_matrix(3, np.random.default_rng(7))
    got = (relaxation_superop(20e-6, math.inf, 9e-6) @ rho0.reshape(-1)).reshape(3, 3)
    assert_allclose(got, lindblad_solution(rho0, 20e-6, math.inf, 9e-6), rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- single-qubit drive


@pytest.mark.parametrize(
    ("detuning_hz", "beta", "phase_rad", "start"),
    [(0.0, 0.0, 0.0, 0), (2.5e6, 0.8, 0.7, 123), (-7e6, -0.5, -2.0, 1001)],
)
def test_segment_unitary_drive_matches_expm_reference(detuning_hz, beta, phase_rad,
                                                      start) -> None:
    """A 40-sample DRAG pulse (amplitude 0.4, near a pi pulse) on qubit 0, LO at 13 dBm
    ``detuning_hz`` off resonance, starting at absolute sample ``start``: the engine's segment
    unitary equals the per-sample expm reference in the idle frame up to a global phase,
    elementwise tolerance 1e-8."""
    n = 40
    g = gaussian(n, 10.0)
    x = np.arange(n) - (n - 1) / 2
    env = g + 1j * beta * (-x / 100.0) * g
    lo = IDLE_F[0] - NCO_HZ + detuning_hz
    plays = [(RACK.cabling[0].drive_port, start, 0, 0.4, phase_rad, NCO_HZ)]
    samples = render_reference(N_PORTS, start + n + 5, plays, [env])
    st = settings({"lo_drive_a": lo})
    u = engine().segment_unitary([0], start, start + n, samples, st)
    ref = drive_reference_unitary(0, samples[RACK.cabling[0].drive_port, start:start + n],
                                  start, lo)
    assert_unitary_close_up_to_phase(u, ref, atol=1e-8)
    assert abs(ref[1, 0]) ** 2 > 0.5  # the pulse does something: the comparison is not vacuous


def square_drive_population(amplitude: float, n: int, lo_hz: float, power_dbm: float = 13.0,
                            on: bool = True) -> float:
    """|<1|U|0>|^2 of the engine's segment unitary for a square pulse on qubit 0."""
    plays = [(RACK.cabling[0].drive_port, 0, 0, amplitude, 0.0, NCO_HZ)]
    samples = render_reference(N_PORTS, n, plays, [np.ones(n)])
    st = settings({"lo_drive_a": lo_hz}, power_dbm=power_dbm, on=on)
    u = engine().segment_unitary([0], 0, n, samples, st)
    return float(abs(u[1, 0]) ** 2)


@pytest.mark.parametrize("amplitude", [0.004, 0.01, 0.02])
@pytest.mark.parametrize("n", [100, 200])
def test_resonant_rabi_matches_two_level_formula(amplitude: float, n: int) -> None:
    """Resonant square pulse (LO + NCO = f_q): P1 = sin^2(pi R A T) within 1e-3 (three-level
    corrections are O((R A / alpha)^2) for these weak drives)."""
    r = DEVICE.qubits[0].rabi_hz_per_amplitude
    p = square_drive_population(amplitude, n, IDLE_F[0] - NCO_HZ)
    assert abs(p - math.sin(math.pi * r * amplitude * n * DT) ** 2) < 1e-3


@pytest.mark.parametrize("n", [100, 150, 230])
def test_detuned_lo_gives_detuned_rabi(n: int) -> None:
    """LO 5 MHz above resonance, Omega = R A = 3.12 MHz: P1 = Omega^2 / (Omega^2 + Delta^2)
    sin^2(pi sqrt(Omega^2 + Delta^2) T) within 1e-2, and clearly unlike the resonant value
    (the physics uses the LO frequency it is given)."""
    amplitude, delta = 0.06, 5e6
    omega = DEVICE.qubits[0].rabi_hz_per_amplitude * amplitude
    w = math.hypot(omega, delta)
    expected = omega**2 / w**2 * math.sin(math.pi * w * n * DT) ** 2
    p = square_drive_population(amplitude, n, IDLE_F[0] - NCO_HZ + delta)
    assert abs(p - expected) < 1e-2
    resonant = math.sin(math.pi * omega * n * DT) ** 2
    p_res = square_drive_population(amplitude, n, IDLE_F[0] - NCO_HZ)
    assert abs(p_res - resonant) < 1e-2
    assert abs(p - p_res) > 0.1


def test_lo_off_means_no_drive_and_power_above_nominal_saturates() -> None:
    """LO output off: mixer gain 0, |1> is not reached (1e-12). LO above the mixer's nominal
    power gives the same rotation as at nominal (1e-12)."""
    lo = IDLE_F[0] - NCO_HZ
    assert square_drive_population(0.05, 100, lo, on=False) < 1e-12
    nominal = square_drive_population(0.05, 100, lo, power_dbm=13.0)
    assert abs(square_drive_population(0.05, 100, lo, power_dbm=16.0) - nominal) < 1e-12
    assert nominal > 0.1


# --------------------------------------------------------------------------- end to end: run()

READOUT_START = 48
READOUT_SAMPLES = 1000
PULSE_SAMPLES = 40
PULSE_SIGMA = 10.0
#: Readout amplitude near the assignment optimum of lab5 (higher powers cause measurement-
#: induced transitions, readout module).
READOUT_AMP = 0.4


def _readout_if(q: int) -> float:
    return DEVICE.qubits[q].resonator_hz - READOUT_LO_HZ


def _drive_then_readout(amp_q0: float, acquire: list[int], drive_q1: float = 0.0) -> WireProgram:
    """Gaussian on qubit 0 (and optionally qubit 1), then readout pulse + acquisition per
    qubit in ``acquire`` (in that acquisition order)."""
    waves = [gaussian(PULSE_SAMPLES, PULSE_SIGMA), np.ones(READOUT_SAMPLES)]
    plays = [(RACK.cabling[0].drive_port, 0, 0, amp_q0, 0.0, NCO_HZ)]
    if drive_q1:
        plays.append((RACK.cabling[1].drive_port, 0, 0, drive_q1, 0.0, NCO_HZ))
    acqs = []
    for q in acquire:
        plays.append((RACK.cabling[q].readout_port, READOUT_START, 1, READOUT_AMP, 0.0,
                      _readout_if(q)))
        acqs.append((RACK.cabling[q].acquire_port, READOUT_START, READOUT_SAMPLES,
                     _readout_if(q)))
    return WireProgram.from_tuples(plays, waves, acqs, READOUT_START + READOUT_SAMPLES)


def _reference_p1(amplitude: float, thermal: float = 0.0) -> float:
    """Excited population after the Gaussian on qubit 0, from the expm reference, starting
    from the thermal state diag(1 - thermal, thermal, 0)."""
    s = render_reference(N_PORTS, PULSE_SAMPLES,
                         [(RACK.cabling[0].drive_port, 0, 0, amplitude, 0.0, NCO_HZ)],
                         [gaussian(PULSE_SAMPLES, PULSE_SIGMA)])[RACK.cabling[0].drive_port]
    u = drive_reference_unitary(0, s, 0, IDLE_F[0] - NCO_HZ)
    return float((1 - thermal) * abs(u[1, 0]) ** 2 + thermal * abs(u[1, 1]) ** 2)


def test_run_end_to_end_population_matches_reference() -> None:
    """Gaussian drive on qubit 0 then readout, 20000 shots per run. IQ centres come from runs
    with amplitude 0 and with the reference's own pi amplitude (maximising the reference P1);
    a third run at 0.62 x pi amplitude is discriminated against those centres. The excited
    fractions of the three runs are mapped affinely onto the reference populations of the
    first two (this removes readout errors: decay during the window, thermal population), and
    the third then matches its reference population within 0.015 (statistics ~0.004 at
    1 sigma; T1/T2 during the 40 ns pulse ~0.1 %)."""
    pi_amp = scipy.optimize.minimize_scalar(lambda a: -_reference_p1(a), bounds=(0.2, 0.7),
                                            method="bounded",
                                            options={"xatol": 1e-6}).x
    assert _reference_p1(pi_amp) > 0.99
    part_amp = 0.62 * pi_amp
    # thermal equilibrium at the effective temperature: p_n ~ exp(-n h f / k T), 3 levels
    r = math.exp(-scipy.constants.h * IDLE_F[0]
                 / (scipy.constants.k * DEVICE.noise.effective_temperature_k))
    p_th = r / (1 + r + r * r)
    assert 0.004 < p_th < 0.02
    p_ref = [_reference_p1(a, p_th) for a in (0.0, pi_amp, part_amp)]
    assert 0.6 < p_ref[2] < 0.9
    eng, st, shots = engine(), settings(), 20000
    rng = np.random.default_rng(20261121)
    iq = [eng.run(_drive_then_readout(a, [0]), st, shots, rng)[:, 0]
          for a in (0.0, pi_amp, part_amp)]
    assert iq[2].shape == (shots,)
    c0, c1 = iq[0].mean(), iq[1].mean()
    assert abs(c1 - c0) > 0.2  # readout resolves the states (noise sigma ~0.06)
    f = [float(np.mean(np.abs(x - c1) < np.abs(x - c0))) for x in iq]
    assert f[0] < 0.02
    assert f[1] > 0.95
    p_est = p_ref[0] + (f[2] - f[0]) * (p_ref[1] - p_ref[0]) / (f[1] - f[0])
    assert abs(p_est - p_ref[2]) < 0.015


def test_run_reports_acquisitions_in_program_order() -> None:
    """Qubit 0 flipped, qubit 1 left alone; acquisitions listed (0, 1) and (1, 0): each
    qubit's column mean is the same in both programs (0.02; the states differ by ~0.5)."""
    eng, st = engine(), settings()
    pi_amp = 1.0 / (2 * DEVICE.qubits[0].rabi_hz_per_amplitude
                    * gaussian(PULSE_SAMPLES, PULSE_SIGMA).sum() * DT)
    a = eng.run(_drive_then_readout(pi_amp, [0, 1]), st, 4000, np.random.default_rng(1))
    b = eng.run(_drive_then_readout(pi_amp, [1, 0]), st, 4000, np.random.default_rng(2))
    ground0 = eng.run(_drive_then_readout(0.0, [0]), st, 4000, np.random.default_rng(3))
    assert abs(a[:, 0].mean() - b[:, 1].mean()) < 0.02  # qubit 0
    assert abs(a[:, 1].mean() - b[:, 0].mean()) < 0.02  # qubit 1
    assert abs(a[:, 0].mean() - ground0[:, 0].mean()) > 0.2  # qubit 0 really was flipped


def test_a_repeated_run_starts_with_the_earlier_runs_share_and_gives_a_fresh_engines_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of a program already run under the same settings (here a new, equal program
    object) starts with the earlier run's share (its drive terms are there before it evolves)
    and gives the IQ points of a fresh engine for the same seed; settings with a drive LO 1 MHz
    off get a share of their own, and again a fresh engine's points; another thread gets its
    own shares (a share is filled while its run evolves); shares over the byte budget are let
    go when their run ends."""
    prog = _drive_then_readout(0.3, [0, 1], drive_q1=0.2)
    st = settings()
    eng = PhysicsEngine(DEVICE, RACK.cabling)
    eng.run(prog, st, 50, np.random.default_rng(0))
    again = dataclasses.replace(prog, play_amp=prog.play_amp.copy())
    share = eng.run_shares.get(again, st)
    assert share.drives and share.program is again and share.settings is st
    iq = eng.run(again, st, 300, np.random.default_rng(5))
    fresh = PhysicsEngine(DEVICE, RACK.cabling).run(prog, st, 300, np.random.default_rng(5))
    assert_allclose(iq, fresh, rtol=0, atol=1e-6)
    off = settings({"lo_drive_a": st.los["lo_drive_a"][0] + 1e6})
    assert not eng.run_shares.get(prog, off).drives
    assert_allclose(eng.run(prog, off, 300, np.random.default_rng(5)),
                    PhysicsEngine(DEVICE, RACK.cabling).run(prog, off, 300,
                                                            np.random.default_rng(5)),
                    rtol=0, atol=1e-6)
    other: list = []
    thread = threading.Thread(target=lambda: other.append(eng.run_shares.get(prog, st)))
    thread.start()
    thread.join(5)
    assert other and not other[0].drives
    from labqpu.firmware_sim import blocks

    monkeypatch.setattr(blocks, "RUN_SHARES_BYTES", 1000)
    eng.run(prog, st, 50, np.random.default_rng(0))
    assert not eng.run_shares.get(prog, st).drives


def test_a_repeated_run_takes_its_flux_blocks_from_the_share_and_gives_a_fresh_engines_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A flux pulse on qubit 1 with pulses on 0 and 1 before it and one on 0 overlapping its
    end: the second run of the program under the same settings computes no flux-block
    propagator (they are in the run's share) and gives the IQ points of a fresh engine for
    the same seed; with no bytes allowed for them a share keeps none, and the points are the
    same."""
    waves = [gaussian(PULSE_SAMPLES, PULSE_SIGMA), np.ones(READOUT_SAMPLES),
             np.sin(np.pi * (np.arange(30) + 0.5) / 30) ** 2]
    plays = [(RACK.cabling[0].drive_port, 0, 0, 0.3, 0.0, NCO_HZ),
             (RACK.cabling[1].drive_port, 0, 0, 0.5, 0.0, NCO_HZ),
             (RACK.cabling[1].flux_port, PULSE_SAMPLES, 2, 0.1, 0.0, 0.0),
             (RACK.cabling[0].drive_port, PULSE_SAMPLES + 20, 0, 0.4, 0.7, NCO_HZ)]
    acqs, start = [], PULSE_SAMPLES + 70
    for q in (0, 1):
        plays.append((RACK.cabling[q].readout_port, start, 1, READOUT_AMP, 0.0,
                      _readout_if(q)))
        acqs.append((RACK.cabling[q].acquire_port, start, READOUT_SAMPLES,
                     _readout_if(q)))
    prog = WireProgram.from_tuples(plays, waves, acqs, start + READOUT_SAMPLES)
    st = settings()
    eng = PhysicsEngine(DEVICE, RACK.cabling)
    eng.run(prog, st, 50, np.random.default_rng(0))
    assert eng.run_shares.get(prog, st).segments
    computed = []
    segment = eng._segment_unitary
    monkeypatch.setattr(eng, "_segment_unitary",
                        lambda *args: computed.append(args[1]) or segment(*args))
    iq = eng.run(prog, st, 300, np.random.default_rng(5))
    assert computed == []
    fresh = PhysicsEngine(DEVICE, RACK.cabling).run(prog, st, 300, np.random.default_rng(5))
    assert_allclose(iq, fresh, rtol=0, atol=1e-6)
    from labqpu.firmware_sim import blocks

    monkeypatch.setattr(blocks, "RUN_SHARE_SEGMENT_BYTES", 0)  # over budget: kept none
    capped = PhysicsEngine(DEVICE, RACK.cabling)
    assert_allclose(capped.run(prog, st, 300, np.random.default_rng(5)), fresh, rtol=0,
                    atol=1e-6)
    assert not capped.run_shares.get(prog, st).segments


# --------------------------------------------------------------------------- SimulationError


def test_two_acquisitions_on_one_qubit_raise() -> None:
    waves = [np.ones(100)]
    plays = [(RACK.cabling[0].readout_port, 0, 0, 0.5, 0.0, _readout_if(0)),
             (RACK.cabling[0].readout_port, 200, 0, 0.5, 0.0, _readout_if(0))]
    acqs = [(RACK.cabling[0].acquire_port, 0, 100, _readout_if(0)),
            (RACK.cabling[0].acquire_port, 200, 100, _readout_if(0))]
    prog = WireProgram.from_tuples(plays, waves, acqs, 300)
    with pytest.raises(SimulationError, match="two acquisitions"):
        engine().run(prog, settings(), 10, np.random.default_rng(0))


@pytest.mark.parametrize("late", ["drive", "neighbour_flux", "own_flux", "overlapping_drive"])
def test_pulse_after_acquisition_raises(late: str) -> None:
    """A drive on the measured qubit, or a flux pulse on it or on a coupled neighbour, that
    ends after the qubit's acquisition starts is refused."""
    waves = [np.ones(100), gaussian(40, 10.0)]
    plays = [(RACK.cabling[0].readout_port, 100, 0, 0.5, 0.0, _readout_if(0))]
    if late == "drive":
        plays.append((RACK.cabling[0].drive_port, 250, 1, 0.3, 0.0, NCO_HZ))
    elif late == "overlapping_drive":
        plays.append((RACK.cabling[0].drive_port, 80, 1, 0.3, 0.0, NCO_HZ))
    elif late == "own_flux":
        plays.append((RACK.cabling[0].flux_port, 250, 1, 0.1, 0.0, 0.0))
    else:
        plays.append((RACK.cabling[1].flux_port, 250, 1, 0.1, 0.0, 0.0))
    acqs = [(RACK.cabling[0].acquire_port, 100, 100, _readout_if(0))]
    prog = WireProgram.from_tuples(plays, waves, acqs, 300)
    with pytest.raises(SimulationError, match="after its acquisition"):
        PhysicsEngine(DEVICE, RACK.cabling).run(prog, settings(), 10, np.random.default_rng(0))


def test_pulse_on_uncoupled_qubit_after_acquisition_is_allowed() -> None:
    """Control for the test above: a drive on qubit 2 (not coupled to 0) after qubit 0's
    acquisition runs fine."""
    waves = [np.ones(100), gaussian(40, 10.0)]
    plays = [(RACK.cabling[0].readout_port, 100, 0, 0.5, 0.0, _readout_if(0)),
             (RACK.cabling[2].drive_port, 250, 1, 0.3, 0.0, NCO_HZ)]
    acqs = [(RACK.cabling[0].acquire_port, 100, 100, _readout_if(0))]
    iq = PhysicsEngine(DEVICE, RACK.cabling).run(WireProgram.from_tuples(plays, waves, acqs, 300),
                                                 settings(), 10, np.random.default_rng(0))
    assert iq.shape == (10, 1)


def test_an_undriven_qubits_lo_need_not_be_set_but_a_driven_ones_must() -> None:
    """lab5 couples qubits 0 and 1: a drive on qubit 0 during a flux pulse on its line is a
    block on the cluster (0, 1), which asks for both qubits' drives. Qubit 1's drive LO
    (lo_drive_b) plays no sample, so settings without it give the very same evolution; a
    pulse on qubit 1 without it is refused, naming the LO."""
    plays = [(RACK.cabling[0].drive_port, 0, 0, 0.3, 0.0, NCO_HZ),
             (RACK.cabling[0].flux_port, 0, 0, 0.05, 0.0, 0.0)]
    prog = WireProgram.from_tuples(plays, [gaussian(40, 10.0)], [], 40)
    full = settings()
    partial = Settings(los={k: v for k, v in full.los.items() if k != "lo_drive_b"},
                       currents=full.currents)
    with_lo = PhysicsEngine(DEVICE, RACK.cabling).evolve(prog, full)
    without = PhysicsEngine(DEVICE, RACK.cabling).evolve(prog, partial)
    assert 1 in with_lo.position  # qubit 1 is evolved with qubit 0: not a vacuous check
    assert without.position == with_lo.position
    assert_allclose(without.rho.matrix(), with_lo.rho.matrix(), rtol=0, atol=0)
    on_q1 = WireProgram.from_tuples([(RACK.cabling[1].drive_port, 0, 0, 0.3, 0.0, NCO_HZ)],
                                    [gaussian(40, 10.0)], [], 40)
    with pytest.raises(SimulationError, match="lo_drive_b"):
        PhysicsEngine(DEVICE, RACK.cabling).evolve(on_q1, partial)

def test_play_on_an_uncabled_port_renders_inside_the_buffer() -> None:
    """A controller may have more outputs than the cabling uses; a play there is rendered
    (and plays no role in the physics) instead of writing past the buffer."""
    n_cabled = 1 + max(max(c.drive_port, c.flux_port, c.readout_port)
                       for c in RACK.cabling.values())
    waves = [np.ones(8)]
    prog = WireProgram.from_tuples([(n_cabled + 4, 0, 0, 2.0, 0.0, 0.0)], waves, [], 16)
    with pytest.raises(SimulationError, match=f"port {n_cabled + 4} exceeds DAC full scale"):
        engine().run(prog, settings(), 10, np.random.default_rng(0))


# --------------------------------------------------------------------------- idle gaps


def _lossless_device() -> DeviceTruth:
    """lab5 without couplings, with T1 = T2 = 1e3 s and no thermal population: over a
    microsecond decoherence changes the state by < 1e-8, so the evolution can be compared
    with a pure-state reference."""
    qubits = tuple(dataclasses.replace(q, t1_s=1e3, t2_s=1e3) for q in DEVICE.qubits)
    return dataclasses.replace(UNCOUPLED, qubits=qubits, noise=NoiseSpec())


LEAKY_SAMPLES = 24
#: LO at the two-photon 0-2 resonance, f01 + alpha/2: a strong Gaussian leaks into |2>.
LEAKY_LO_HZ = IDLE_F[0] - NCO_HZ + DEVICE.qubits[0].anharmonicity_hz / 2


def leaky_settings() -> Settings:
    return settings({"lo_drive_a": LEAKY_LO_HZ})


def _pulse_gap_pulse(gap: int) -> tuple[WireProgram, np.ndarray]:
    """Two identical Gaussians (24 samples, sigma 6, amplitude 0.9) on qubit 0 separated by
    ``gap`` idle samples, LO at the two-photon resonance; returns the program and its
    rendered samples (reference renderer)."""
    env = gaussian(LEAKY_SAMPLES, 6.0)
    plays = [(RACK.cabling[0].drive_port, 0, 0, 0.9, 0.0, NCO_HZ),
             (RACK.cabling[0].drive_port, LEAKY_SAMPLES + gap, 0, 0.9, 0.0, NCO_HZ)]
    n = 2 * LEAKY_SAMPLES + gap
    return WireProgram.from_tuples(plays, [env], [], n), render_reference(N_PORTS, n, plays, [env])


def _pulse_gap_pulse_reference(gap: int, samples: np.ndarray, idle_phase: bool) -> np.ndarray:
    """|psi> after pulse - gap - pulse from |0>: per-sample expm of the full three-level
    Hamiltonian in the idle frame during each pulse, and expm(-i 2 pi H0 t_gap) with
    H0 = (alpha/2) n (n - 1) over the gap (H0 = 0 when ``idle_phase`` is False, which is what
    the simulator did before the fix)."""
    drive = samples[RACK.cabling[0].drive_port]
    lo = LEAKY_LO_HZ
    first = drive_reference_unitary(0, drive[:LEAKY_SAMPLES], 0, lo)
    start2 = LEAKY_SAMPLES + gap
    second = drive_reference_unitary(0, drive[start2:start2 + LEAKY_SAMPLES], start2, lo)
    h0 = 0.5 * DEVICE.qubits[0].anharmonicity_hz * (N3 @ N3 - N3)
    gap_u = scipy.linalg.expm(-2j * np.pi * h0 * gap * DT) if idle_phase else I3
    return second @ gap_u @ first @ np.array([1.0, 0.0, 0.0], dtype=complex)


@pytest.mark.parametrize("gap", [3, 7, 13])
def test_idle_gap_gives_level_two_its_phase(gap: int) -> None:
    """Pulse - idle gap - pulse on qubit 0 with ~13 % leakage to |2> after the first pulse:
    the engine's final density matrix equals |psi><psi| of a per-sample expm reference of the
    full three-level Hamiltonian (including exp(-i 2 pi alpha t) on |2> during the gap), state
    fidelity >= 1 - 1e-8 and elementwise tolerance 1e-7 (decoherence of the lossless device
    contributes < 1e-8). Without the idle phase the reference differs by > 0.01 in fidelity,
    so the comparison can fail."""
    prog, samples = _pulse_gap_pulse(gap)
    ev = PhysicsEngine(_lossless_device(), RACK.cabling).evolve(prog, leaky_settings())
    assert list(ev.position) == [0]
    rho = ev.rho.matrix()
    psi = _pulse_gap_pulse_reference(gap, samples, idle_phase=True)
    first = drive_reference_unitary(0, samples[RACK.cabling[0].drive_port, :LEAKY_SAMPLES], 0,
                                    LEAKY_LO_HZ)
    assert abs(first[2, 0]) ** 2 > 0.1  # the first pulse leaks: the gap phase matters
    assert np.real(psi.conj() @ rho @ psi) >= 1 - 1e-8
    assert_allclose(rho, np.outer(psi, psi.conj()), rtol=0, atol=1e-7)
    wrong = _pulse_gap_pulse_reference(gap, samples, idle_phase=False)
    assert abs(np.vdot(wrong, psi)) ** 2 < 1 - 1e-2


def test_relaxation_superop_with_idle_hamiltonian_matches_lindblad(random_density_matrix) -> None:
    """The channel with the idle Hamiltonian (alpha/2) n (n - 1) equals solve_ivp of the
    Lindblad equation with that Hamiltonian, elementwise tolerance 1e-8; the 0-2 coherence
    really rotates (by 2 pi alpha t)."""
    q = DEVICE.qubits[2]
    t_s = 0.37e-6
    rho0 = random_density_matrix(3, np.random.default_rng(11))
    h0 = 0.5 * q.anharmonicity_hz * (N3 @ N3 - N3)
    got = (relaxation_superop(q.t1_s, q.t_phi_s, t_s, q.anharmonicity_hz)
           @ rho0.reshape(-1)).reshape(3, 3)
    ref = lindblad_solution(rho0, q.t1_s, q.t_phi_s, t_s, h0)
    assert_allclose(got, ref, rtol=0, atol=1e-8)
    without = (relaxation_superop(q.t1_s, q.t_phi_s, t_s) @ rho0.reshape(-1)).reshape(3, 3)
    assert abs(without[0, 2] - got[0, 2]) > 0.01
