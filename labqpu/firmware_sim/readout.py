"""The readout model: the resonator's field under the played readout samples, per shot.

Notation (s, Hz, the sample convention of ``physics``: a sample stream rotating at +IF is a
tone at f_LO + IF). ``dt = 1 / sample_rate_hz``; t_k = k dt.

* The resonator of qubit level l has the frequency f_l = f_r + chi (2 l - 1) (chi: the
  device file's ``dispersive_shift_hz``; |0> and |1> are 2 chi apart). Its field beta (in
  units of a full-scale drive sample) obeys, in the sample convention,

      d beta / dt = -(kappa / 2 - i Delta_l) beta + (kappa / 2) g_mix s(t),

  kappa = 2 pi ``resonator_linewidth_hz``, Delta_l = 2 pi (f_l - f_LO), s the readout port's
  samples, g_mix the mixer's conversion gain. (It is the complex conjugate of the usual
  d alpha / dt = -(kappa / 2 + i Delta_l) alpha + drive, whose lab-frame tones rotate at
  -f.) The drive scale kappa / 2 makes the steady state of a tone at f the Lorentzian
  beta = g_mix s / (1 + 2 i (f - f_l) / ``resonator_linewidth_hz``).
* The tone's frequency f_tone is estimated from the played samples (their mean phase step);
  the envelope u_k = g_mix s_k exp(-i 2 pi (f_tone - f_LO) t_k) is held constant over each
  sample (what the DAC's reconstruction filter passes of a tone: no images), so in the frame
  gamma = beta exp(-i 2 pi (f_tone - f_LO) t) each sample is solved exactly:
  gamma_{k+1} = E_l gamma_k + D_l u_k, E_l = exp(lambda_l dt), D_l = (kappa / 2)(E_l - 1) /
  lambda_l, lambda_l = -kappa / 2 - i 2 pi (f_tone - f_l).
* The field is integrated from the start of the readout drive that reaches the window (back
  to the last silence long enough for the field to decay by 1e-6) to the window's end: the
  ring-up before and inside the window and the ring-down after the pulse ends are in the
  trace. Before the window the qubit holds the level it has at the window's start.
* The trace is d_k = G beta(t_k) exp(-i 2 pi f_demod t_k) (G = ``readout_gain``, the
  amplification chain), plus white noise of ``readout_noise_per_sample`` per quadrature and
  sample; the IQ point is its mean over the window. Traces are returned decimated: the mean of
  each ``decimation`` samples (the last bin holds what remains).
* Within the window each shot is a jump process on the levels: decay l -> l - 1 at rate
  l / T1, and measurement-induced transitions l -> l + 1 (0 -> 1, 1 -> 2; none above |2>) at
  rate Gamma_c (n / n_crit)^p, n = N |beta|^2 the intracavity photon number of the shot's own
  field (N = ``resonator_photons_at_full_scale``, the photons of a full-scale tone on
  resonance), n_crit = (Delta_q / 2 g)^2 (Delta_q = f_q - f_r at the qubit's idle frequency,
  g = ``resonator_coupling_hz``), Gamma_c = [readout] ``transition_rate_at_critical_hz`` and
  p = ``transition_exponent`` of the device file. After a jump the field relaxes from where it
  was towards the new level's response. Thermal excitation in the window is left out
  (r / T1 x 1 us < 3e-4).
* Measurement-induced dephasing Gamma_m(n) = 2 kappa chi^2 n / (kappa^2 / 4 + chi^2)
  (angular rates; n the photons of a tone at f_r, midway between the |0> and |1> responses;
  it is kappa |beta_0 - beta_1|^2 / 2, the rate at which the output tells the states apart)
  is :func:`measurement_dephasing_rate_hz`. The simulator projects the measured qubit at the
  window's start, which removes the coherence it would destroy; pulses on a qubit while its
  resonator rings down after a window (feed-forward) do not see it (not modelled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

LEVELS = 3
#: Field decay (amplitude) below which an earlier readout drive no longer reaches a window.
RINGDOWN_FLOOR = 1e-6
#: Random draws kept per shot for the jump process in one window (further jumps are cut).
MAX_JUMPS = 16


@dataclass(frozen=True)
class ReadoutPhysics:
    """Device-wide measurement-induced transition law (the device file's ``[readout]``).

    ``transition_rate_at_critical_hz`` is Gamma_c (1/s) at n = n_crit and
    ``transition_exponent`` the power p of Gamma_c (n / n_crit)^p; a rate of 0 switches
    measurement-induced transitions off."""

    transition_rate_at_critical_hz: float = 0.0
    transition_exponent: float = 6.0

    @classmethod
    def from_table(cls, table: dict, where: str) -> ReadoutPhysics:
        """Parse a ``[readout]`` table; raises ``ValueError`` naming ``where`` and the field."""
        unknown = sorted(set(table) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"{where}: unknown [readout] field(s) {unknown}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value < math.inf:
                raise ValueError(f"{where}: [readout] {key} must be a finite number >= 0, "
                                 f"got {value!r}")
        return cls(**{k: float(v) for k, v in table.items()})


@dataclass(frozen=True)
class WindowRecord:
    """What one acquisition window gives for its shots.

    ``iq`` complex (shots,), the window mean; ``trace`` complex64 (shots, bins) decimated
    trace or None; ``end_level`` int (shots,), the level at the window's end."""

    iq: np.ndarray
    trace: np.ndarray | None
    end_level: np.ndarray


def critical_photon_number(qubit_hz: float, resonator_hz: float, coupling_hz: float) -> float:
    """n_crit = (Delta / 2 g)^2 with Delta = ``qubit_hz`` - ``resonator_hz`` (Hz) and g
    ``coupling_hz`` (Hz); ``inf`` when g is 0."""
    if coupling_hz == 0.0:
        return math.inf
    return ((qubit_hz - resonator_hz) / (2.0 * coupling_hz)) ** 2


def measurement_dephasing_rate_hz(photons: float, dispersive_shift_hz: float,
                                  linewidth_hz: float) -> float:
    """Gamma_m (1/s) of a qubit whose resonator holds ``photons`` photons of a tone at f_r:
    2 kappa chi^2 n / (kappa^2 / 4 + chi^2), chi and kappa as angular rates from
    ``dispersive_shift_hz`` (the shift of each state from f_r) and ``linewidth_hz`` (Hz)."""
    kappa = 2.0 * np.pi * linewidth_hz
    chi2 = (2.0 * np.pi * dispersive_shift_hz) ** 2
    return float(2.0 * kappa * chi2 * photons / (kappa**2 / 4.0 + chi2))


def level_exponents(tone_hz: float, resonator_hz: float, chi_hz: float, kappa_hz: float
                    ) -> np.ndarray:
    """lambda_l (1/s, complex) of the levels l = 0, 1, 2 for a tone at ``tone_hz``."""
    f_l = resonator_hz + chi_hz * (2.0 * np.arange(LEVELS) - 1.0)
    return -np.pi * kappa_hz - 2j * np.pi * (tone_hz - f_l)


@njit(cache=True, nogil=True)
def _field_kernel(u, gamma0, step_e, step_d):
    """Field gamma at the start of each sample and after the last: gamma_{k+1} = E gamma_k +
    D u_k from ``gamma0``; returns complex (len(u) + 1,)."""
    out = np.empty(u.shape[0] + 1, dtype=np.complex128)
    g = gamma0
    out[0] = g
    for k in range(u.shape[0]):
        g = step_e * g + step_d * u[k]
        out[k + 1] = g
    return out


@njit(cache=True, nogil=True)
def _power(x, p):
    """x ** p for x >= 0; a whole p in 1..16 by repeated squaring (the device files' powers
    are whole: pow() was most of a window's time when shots jump)."""
    k = int(p)
    if k == p and 0 < k <= 16:
        out = 1.0
        base = x
        while k:
            if k & 1:
                out *= base
            base *= base
            k >>= 1
        return out
    return x ** p


@njit(cache=True, nogil=True)
def _window_kernel(u, rot, gamma_start, levels, step_e, step_d, photons_per_field2,
                   up_rate_at_crit_hz, n_crit, exponent, t1_s, dt_s, expo, unif, bin_len):
    """Per shot, the field over a window under the jump process (module docstring).

    ``u`` envelope (n,), ``rot`` (n,) = exp(i 2 pi (f_tone - f_LO) t_k - i 2 pi f_demod t_k),
    ``gamma_start`` (3,) field per level at the window's start, ``levels`` (shots,) levels at
    the start, ``step_e`` / ``step_d`` (3,) per-sample factors, ``expo`` / ``unif``
    (shots, MAX_JUMPS) unit exponential and uniform draws. Returns (bin sums (shots, n_bins)
    of gamma_k rot_k, end levels (shots,)).

    Until its first jump a shot follows its level's deterministic field, whose prefix sums
    and cumulative hazard are computed once per level: the first jump is a binary search and
    the bins are differences of prefix sums. Only after a jump is the shot stepped sample by
    sample (the hazard of sample k uses the field at its start; the jump acts from the field
    update of sample k on)."""
    n = u.shape[0]
    shots = levels.shape[0]
    n_bins = (n + bin_len - 1) // bin_len
    sums = np.zeros((shots, n_bins), dtype=np.complex128)
    end = np.empty(shots, dtype=np.int64)
    n_jumps = expo.shape[1]
    traj = np.empty((LEVELS, n), dtype=np.complex128)
    prefix = np.zeros((LEVELS, n + 1), dtype=np.complex128)
    up_rate = np.zeros((LEVELS, n))
    hazard = np.zeros((LEVELS, n))
    for lv in range(LEVELS):
        g = gamma_start[lv]
        acc = 0.0j
        h = 0.0
        for k in range(n):
            traj[lv, k] = g
            acc += g * rot[k]
            prefix[lv, k + 1] = acc
            if lv < LEVELS - 1 and up_rate_at_crit_hz > 0.0:
                photons = photons_per_field2 * (g.real * g.real + g.imag * g.imag)
                up_rate[lv, k] = up_rate_at_crit_hz * _power(photons / n_crit, exponent)
            h += (lv / t1_s + up_rate[lv, k]) * dt_s
            hazard[lv, k] = h
            g = step_e[lv] * g + step_d[lv] * u[k]
    for s in range(shots):
        lvl = levels[s]
        j = n
        if n > 0 and n_jumps > 0 and hazard[lvl, n - 1] >= expo[s, 0]:
            lo, hi = 0, n  # first k with hazard >= the draw (searchsorted, left)
            while lo < hi:
                mid = (lo + hi) // 2
                if hazard[lvl, mid] < expo[s, 0]:
                    lo = mid + 1
                else:
                    hi = mid
            j = lo
        upto = min(j + 1, n)
        for b in range(n_bins):
            k0 = b * bin_len
            if k0 >= upto:
                break
            k1 = min(k0 + bin_len, upto)
            sums[s, b] += prefix[lvl, k1] - prefix[lvl, k0]
        if j < n:
            down = lvl / t1_s
            up = up_rate[lvl, j]
            g = traj[lvl, j]
            if unif[s, 0] * (down + up) < up:
                lvl += 1
            else:
                lvl -= 1
            used = 1
            left = expo[s, 1] if used < n_jumps else 0.0
            g = step_e[lvl] * g + step_d[lvl] * u[j]
            for k in range(j + 1, n):
                sums[s, k // bin_len] += g * rot[k]
                down = lvl / t1_s
                up = 0.0
                if lvl < LEVELS - 1 and up_rate_at_crit_hz > 0.0:
                    photons = photons_per_field2 * (g.real * g.real + g.imag * g.imag)
                    up = up_rate_at_crit_hz * _power(photons / n_crit, exponent)
                total = (down + up) * dt_s
                if used < n_jumps and total > 0.0:
                    left -= total
                    if left <= 0.0:
                        if unif[s, used] * (down + up) < up:
                            lvl += 1
                        else:
                            lvl -= 1
                        used += 1
                        if used < n_jumps:
                            left = expo[s, used]
                g = step_e[lvl] * g + step_d[lvl] * u[k]
        end[s] = lvl
    return sums, end


def drive_start(port_samples: np.ndarray, start: int, decay_samples: int) -> int:
    """First sample of the readout drive that reaches a window starting at ``start``: the
    start of the run of played samples before it with no silence longer than
    ``decay_samples`` in between (``start`` itself when nothing plays close enough)."""
    nz = np.flatnonzero(port_samples[:start])
    if nz.size == 0 or start - nz[-1] > decay_samples:
        return start
    gaps = np.flatnonzero(np.diff(nz) > decay_samples)
    return int(nz[gaps[-1] + 1]) if gaps.size else int(nz[0])


def tone_hz(samples: np.ndarray, lo_hz: float, sample_rate_hz: float) -> float:
    """The tone frequency (Hz) of ``samples`` on an LO at ``lo_hz``: f_LO plus their mean
    phase step per sample (f_LO when fewer than two samples play)."""
    if samples.size > 1 and np.any(samples):
        step = np.angle(np.sum(samples[1:] * samples[:-1].conj()))
        return lo_hz + step * sample_rate_hz / (2 * np.pi)
    return lo_hz


def acquire_window(truth, physics: ReadoutPhysics, sample_rate_hz: float,
                   lo: tuple[float, float, bool], mixer_gain: float, qubit_hz: float,
                   port_samples: np.ndarray, start: int, duration: int, demod_hz: float,
                   levels: np.ndarray, rng: np.random.Generator, t1_s: float,
                   decimation: int | None = None) -> WindowRecord:
    """One acquisition window of ``duration`` samples from ``start`` on the readout port's
    rendered ``port_samples``, demodulated at ``demod_hz`` (Hz), for the qubit ``truth``
    (``device.QubitTruth``) at idle frequency ``qubit_hz`` (Hz) whose level per shot is
    ``levels`` at the window's start; ``lo`` = (Hz, dBm, on) of the readout LO with conversion
    gain ``mixer_gain``, ``t1_s`` the qubit's T1 (s) during the window. With ``decimation``
    (samples per bin) the record holds the decimated traces."""
    fs = sample_rate_hz
    dt = 1.0 / fs
    kappa_hz = truth.resonator_linewidth_hz
    decay = math.ceil(math.log(1.0 / RINGDOWN_FLOOR) / (np.pi * kappa_hz) * fs)
    t0 = drive_start(port_samples, start, decay)
    end = start + duration
    span = port_samples[t0:end]
    window = port_samples[start:end]
    f_tone = tone_hz(window if np.any(window) else span, lo[0], fs)
    t = np.arange(t0, end) * dt
    u = mixer_gain * span * np.exp(-2j * np.pi * (f_tone - lo[0]) * t)
    lam = level_exponents(f_tone, truth.resonator_hz, truth.dispersive_shift_hz, kappa_hz)
    step_e = np.exp(lam * dt)
    step_d = np.pi * kappa_hz * (step_e - 1.0) / lam
    pre = start - t0
    gamma_start = np.array([_field_kernel(u[:pre], 0j, step_e[lv], step_d[lv])[-1]
                            for lv in range(LEVELS)])
    tw = t[pre:]
    rot = np.exp(2j * np.pi * ((f_tone - lo[0]) - demod_hz) * tw)
    n_crit = critical_photon_number(qubit_hz, truth.resonator_hz, truth.resonator_coupling_hz)
    rate = physics.transition_rate_at_critical_hz if math.isfinite(n_crit) else 0.0
    shots = levels.size
    expo = rng.exponential(1.0, size=(shots, MAX_JUMPS))
    unif = rng.random(size=(shots, MAX_JUMPS))
    bin_len = duration if decimation is None else int(decimation)
    sums, end_level = _window_kernel(
        u[pre:], rot, gamma_start, levels.astype(np.int64), step_e, step_d,
        float(truth.resonator_photons_at_full_scale), float(rate),
        float(n_crit if math.isfinite(n_crit) else 1.0), float(physics.transition_exponent),
        float(t1_s), dt, expo, unif, bin_len)
    counts = np.full(sums.shape[1], bin_len, dtype=float)
    counts[-1] = duration - bin_len * (sums.shape[1] - 1)
    sigma = truth.readout_noise_per_sample / np.sqrt(counts)
    noise = (rng.normal(0.0, 1.0, size=sums.shape)
             + 1j * rng.normal(0.0, 1.0, size=sums.shape)) * sigma
    bins = truth.readout_gain * sums / counts + noise
    iq = bins @ counts / duration
    trace = bins.astype(np.complex64) if decimation is not None else None
    return WindowRecord(iq=iq, trace=trace, end_level=end_level)
