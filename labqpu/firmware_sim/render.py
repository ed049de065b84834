"""Rendering a program's plays into per-port samples, and their peaks (numba kernels)."""

from __future__ import annotations

import numpy as np
from numba import njit


def _render_kernel(n_ports: int, n_samples: int, play_port: np.ndarray, play_start: np.ndarray,
                   play_wave: np.ndarray, play_amp: np.ndarray, play_phase_rad: np.ndarray,
                   play_freq_hz: np.ndarray, wave_offset: np.ndarray, wave_data: np.ndarray,
                   sample_rate_hz: float) -> np.ndarray:
    """Render plays into per-port complex samples (ports x ``n_samples``): amp * w[k] *
    exp(i (2 pi f t + phase)).

    ``t`` is the absolute sample time (start + k) / sample_rate_hz (Hz), so NCO phase is
    continuous across plays at the same frequency. Overlapping plays on one port add. The
    array comes zeroed from numpy (``calloc``): the pages of a long program that no play
    touches take neither memory nor the time to clear them (a 2 ms program is ~0.5 GB over
    every port)."""
    out = np.zeros((n_ports, n_samples), dtype=np.complex128)
    _render_into(out, play_port, play_start, play_wave, play_amp, play_phase_rad, play_freq_hz,
                 wave_offset, wave_data, sample_rate_hz)
    return out


@njit(cache=True, nogil=True)
def _render_into(out, play_port, play_start, play_wave, play_amp, play_phase_rad, play_freq_hz,
                 wave_offset, wave_data, sample_rate_hz):
    """Add each play into ``out`` (ports x samples, complex128; :func:`_render_kernel`)."""
    two_pi_over_fs = 2.0 * np.pi / sample_rate_hz
    for i in range(play_port.shape[0]):
        w0 = wave_offset[play_wave[i]]
        w1 = wave_offset[play_wave[i] + 1]
        start = play_start[i]
        step = two_pi_over_fs * play_freq_hz[i]
        rot = np.exp(1j * step)
        ph = play_amp[i] * np.exp(1j * (step * start + play_phase_rad[i]))
        p = play_port[i]
        for k in range(w1 - w0):
            out[p, start + k] += wave_data[w0 + k] * ph
            ph *= rot
            if (k & 63) == 63:
                ph = play_amp[i] * np.exp(1j * (step * (start + k + 1) + play_phase_rad[i]))


@njit(cache=True, nogil=True)
def play_peaks(samples, play_port, play_start, play_length):
    """Per port (row of ``samples``), the largest |sample| among the samples its plays cover:
    the row's largest |sample|, since a rendered row is zero outside its plays
    (:func:`_render_kernel`); a pass over the played samples only, not over every row of
    the program (a 50 us idle renders 50000 samples per port that no play touches)."""
    peaks = np.zeros(samples.shape[0])
    for i in range(play_port.shape[0]):
        p = play_port[i]
        top = peaks[p]
        for k in range(play_start[i], play_start[i] + play_length[i]):
            v = abs(samples[p, k])
            if v > top:
                top = v
        peaks[p] = top
    return peaks
