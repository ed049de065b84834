"""The readout model: IQ points of one acquisition window from the qubit's level per shot.

The resonator (frequency f_r, dispersive shift chi, linewidth kappa) transmits the readout tone
with the steady-state Lorentzian response 1 / (1 + 2i (f_tone - f_r - chi (2 l - 1)) / kappa)
of the qubit's level l. The tone frequency is estimated from the played samples (their phase
step per sample), and the window is demodulated at the acquisition's own frequency. A level
that relaxes during the window (T1, sampled per shot) mixes the responses in proportion to the
time spent in each level. White noise of ``readout_noise_per_sample`` is averaged over the
window.
"""

from __future__ import annotations

import numpy as np

LEVELS = 3


def acquire_iq(truth, sample_rate_hz: float, lo: tuple[float, float, bool], mixer_gain: float,
               port_samples: np.ndarray, start: int, duration: int, demod_hz: float,
               levels: np.ndarray, rng: np.random.Generator, t1_s: float) -> np.ndarray:
    """IQ points (complex, one per shot) of a window of ``duration`` samples from ``start`` on
    the readout port's rendered ``port_samples``, demodulated at ``demod_hz`` (Hz), for the
    qubit ``truth`` (``device.QubitTruth``) whose level per shot is ``levels`` at the window's
    start; ``lo`` = (Hz, dBm, on) of the readout LO with conversion gain ``mixer_gain``, ``t1_s``
    the qubit's T1 (s) during the window."""
    fs = sample_rate_hz
    window = port_samples[start:start + duration]
    t = np.arange(start, start + duration) / fs
    demod = np.exp(-2j * np.pi * demod_hz * t)
    a_eff = mixer_gain * truth.readout_gain * np.mean(window * demod)
    if window.size > 1 and np.any(window):
        step = np.angle(np.sum(window[1:] * window[:-1].conj()))
        f_tone = lo[0] + step * fs / (2 * np.pi)
    else:
        f_tone = lo[0]
    chi = truth.dispersive_shift_hz
    kappa = truth.resonator_linewidth_hz
    resp = np.array([
        1.0 / (1.0 + 2j * (f_tone - (truth.resonator_hz + chi * (2 * lvl - 1))) / kappa)
        for lvl in range(LEVELS)
    ])
    window_s = duration / fs
    frac = np.zeros((levels.size, LEVELS))
    cur = levels.copy()
    elapsed = np.zeros(levels.size)
    for lvl in (2, 1):
        at = cur == lvl
        tau = rng.exponential(t1_s / lvl, size=levels.size)
        stay = np.where(at, np.minimum(tau, window_s - elapsed), 0.0)
        frac[:, lvl] += stay / window_s
        elapsed += stay
        cur = np.where(at & (elapsed < window_s), lvl - 1, cur)
    frac[:, 0] += np.clip(1.0 - frac.sum(axis=1), 0.0, 1.0)
    sigma = truth.readout_noise_per_sample / np.sqrt(max(duration, 1))
    noise = rng.normal(0.0, sigma, size=(levels.size, 2)) @ np.array([1.0, 1j])
    return a_eff * (frac @ resp) + noise
