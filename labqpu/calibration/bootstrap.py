"""The calibration experiments the graph runs, and the design values they start from.

resonator spectroscopy -> qubit spectroscopy vs flux bias (sweet spot) -> drive LOs -> Rabi ->
drive handedness -> Ramsey (frequency, T2*) -> Rabi again -> DRAG -> readout frequency and
discriminator -> T1 -> CZ (amplitude x duration scan of the conditional phase, then
single-qubit phase corrections).

Each experiment acquires through the public backend API on pulse programs, analyses with the
pure fits of :mod:`labqpu.calibration.experiments` and updates the ``Working`` set explicitly;
:mod:`labqpu.calibration.graph` makes them nodes, and :mod:`labqpu.calibration.runner` walks
them (``bootstrap`` there runs every node from the design values).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from labqpu.calibration.experiments import (
    FitError,
    Kit,
    Working,
    complex_median,
    fit_damped_cosine,
    fit_exponential,
    fit_parabola_vertex,
    fit_peak,
    fit_rabi,
    handedness_from_fringes,
    phase_from_quadratures,
    project,
    sweep,
)

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def load_design(path: str | Path) -> Working:
    """Design values (``labqpu/data/<device>_design.toml``) as the starting ``Working`` set."""
    with Path(path).open("rb") as f:
        doc = tomllib.load(f)
    device = dict(doc["device"])
    qubits = {int(q["index"]): {k: v for k, v in q.items() if k != "index"}
              for q in doc["qubit"]}
    return Working(device=device, qubits=qubits)


def choose_drive_lo(kit: Kit, q: int) -> None:
    """Drive LO of qubit ``q``'s group (Hz): 100 MHz below the group's lowest qubit, so every
    IF is positive; set on every qubit the LO serves."""
    source = kit.config.qubits[q].drive_lo
    group = [p for p in kit.work.qubits if kit.config.qubits[p].drive_lo == source]
    lo = min(kit.work.qubits[p]["frequency_hz"] for p in group) - 100e6
    for p in group:
        kit.work.set(p, "drive_lo_frequency_hz", round(lo, -6), "lo_plan")


def resonator_spectroscopy(kit: Kit, q: int, shots: int) -> None:
    """Readout frequency (Hz): transmission peak of the resonator with the qubit in |0>."""
    centre = kit.work.qubits[q]["resonator_hz"]
    freqs = centre + np.linspace(-6e6, 6e6, 61)
    progs = []
    for f in freqs:
        b = kit.builder([q])
        kit.readout(b, q, 0, 0, frequency_hz=f)
        progs.append(b.build(num_clbits=1))
    iq = kit.run_iq(progs, shots)[:, 0]
    f0, _ = fit_peak(freqs, np.abs(iq), f"qubit {q} resonator spectroscopy")
    kit.work.set(q, "readout_frequency_hz", f0, "resonator_spectroscopy")


def qubit_spectroscopy(kit: Kit, q: int, shots: int, centre_hz: float,
                       span_hz: tuple[float, float]) -> float:
    """0-1 frequency (Hz) from a saturating 200 ns drive swept over ``centre + span``."""
    duration = 200e-9
    amp = 0.5 / (kit.work.device["rabi_hz_per_amplitude"] * duration)
    freqs = centre_hz + np.arange(span_hz[0], span_hz[1], 1.0e6)
    progs = sweep(kit, q, freqs, lambda b, f: kit.square_drive(b, q, 0, duration, amp, f))
    iq = kit.run_iq(progs, shots)[:, 0]
    signal = np.abs(iq - complex_median(iq))
    f0, _ = fit_peak(freqs, signal, f"qubit {q} spectroscopy")
    return f0


def sweet_spot(kit: Kit, q: int, shots: int) -> None:
    """Flux-bias current (A) of the sweet spot: vertex of f01(I) measured at five currents."""
    search = kit.work.device["flux_bias_search_a"]
    currents = np.linspace(-search, search, 5)
    design = kit.work.qubits[q]["frequency_hz"]
    freqs = []
    for current in currents:
        kit.work.qubits[q]["flux_bias_a"] = float(current)
        freqs.append(qubit_spectroscopy(kit, q, shots, design, (-260e6, 60e6)))
    i0, f_max = fit_parabola_vertex(currents, np.array(freqs), f"qubit {q} sweet spot")
    if abs(i0) > 2 * search:
        raise FitError(f"sweet spot: vertex at {i0:.3g} A is far outside the search",
                       subject=f"qubit {q}")
    kit.work.set(q, "flux_bias_a", i0, "flux_sweet_spot")
    kit.work.set(q, "frequency_hz",
                 qubit_spectroscopy(kit, q, shots, f_max, (-20e6, 20e6)), "qubit_spectroscopy")


def rabi(kit: Kit, q: int, shots: int, max_amp: float = 0.9) -> None:
    """pi and pi/2 amplitudes of the DRAG pulse from a Rabi oscillation (project IQ)."""
    amps = np.linspace(0, max_amp, 46)
    progs = sweep(kit, q, amps, lambda b, a: kit.drive(b, q, 0, a))
    iq = kit.run_iq(progs, shots)[:, 0]
    pi_amp = fit_rabi(amps, project(iq), f"qubit {q} Rabi")
    kit.work.set(q, "pi_amplitude", pi_amp, "rabi")
    kit.work.set(q, "pi2_amplitude", pi_amp / 2, "rabi")


def drive_handedness(kit: Kit, q: int, shots: int, detuning_hz: float = 1.0e6) -> None:
    """Drive handedness (+1 or -1): the sense in which a play phase turns qubit ``q``'s drive
    axis, against the qubit's own precession (``handedness_from_fringes``).

    Two Ramsey fringes with the drive ``detuning_hz`` below the qubit, over 2 us; the second
    pulse's play phase advances, then retards, by 2 pi detuning per unit delay. It needs the
    frequency only to well within ``detuning_hz`` (spectroscopy suffices) and the pi/2
    amplitude, and must come before anything that uses a phase against precession (Ramsey).
    """
    pi2 = kit.work.qubits[q]["pi2_amplitude"]
    f_drive = kit.work.qubits[q]["frequency_hz"] - detuning_hz
    delays = kit.on_grid(np.linspace(0, 2e-6, 41))
    iq = []
    for sense in (+1, -1):
        def body(b, tau, sense=sense):
            end = kit.drive(b, q, 0, pi2, frequency_hz=f_drive)
            return kit.drive(b, q, end + kit.samples(tau), pi2,
                             sense * 2 * np.pi * detuning_hz * tau, frequency_hz=f_drive)
        iq.append(kit.run_iq(sweep(kit, q, delays, body), shots)[:, 0])
    both = project(np.concatenate(iq))
    sign = handedness_from_fringes(delays, both[:len(delays)], both[len(delays):], detuning_hz,
                                   f"qubit {q}")
    kit.work.set(q, "drive_handedness", sign, "drive_handedness")


def _ramsey_frequency(kit: Kit, q: int, shots: int, detuning_hz: float,
                      delays_s: np.ndarray) -> tuple[float, float]:
    pi2 = kit.work.qubits[q]["pi2_amplitude"]

    def body(b, tau):
        end = kit.drive(b, q, 0, pi2)
        start = end + kit.samples(tau)
        return kit.drive(b, q, start, pi2, 2 * np.pi * detuning_hz * tau)

    iq = kit.run_iq(sweep(kit, q, delays_s, body), shots)[:, 0]
    return fit_damped_cosine(delays_s, project(iq), f"qubit {q} Ramsey")


def ramsey(kit: Kit, q: int, shots: int) -> None:
    """Qubit frequency (Hz) and T2* (s) from two Ramsey fringes with opposite detunings; the
    measured drive handedness says which sign the frequency error has, and a third fringe at
    the new frequency must come back at the set detuning."""
    delays = kit.on_grid(np.linspace(0, 6e-6, 61))
    d = 1.5e6
    f_plus, _ = _ramsey_frequency(kit, q, shots, +d, delays)
    f_minus, _ = _ramsey_frequency(kit, q, shots, -d, delays)
    # A drive delta below the qubit precesses by -2 pi delta t; the analysis pulse's axis
    # turns by h 2 pi (+-d) t (h the drive handedness), so the fringes run at |delta + h d|
    # (f_plus) and |delta - h d| (f_minus): s = h delta solves |s + d| = f_plus and
    # |s - d| = f_minus.
    candidates = [(abs(abs(s + d) - f_plus) + abs(abs(s - d) - f_minus), s)
                  for s in ((f_plus + f_minus) / 2, -(f_plus + f_minus) / 2,
                            (f_minus - f_plus) / 2, (f_plus - f_minus) / 2)]
    _, s = min(candidates)
    delta = kit.work.qubits[q]["drive_handedness"] * s
    f_now = kit.work.qubits[q]["frequency_hz"]
    kit.work.qubits[q]["frequency_hz"] = f_now + delta
    check, t2 = _ramsey_frequency(kit, q, shots, d, delays)
    if abs(check - d) > 0.1 * d:
        kit.work.qubits[q]["frequency_hz"] = f_now
        raise FitError(f"Ramsey: at the corrected frequency {f_now + delta:.10g} Hz the "
                       f"fringe runs at {check:.4g} Hz, not at the set {d:.4g} Hz",
                       subject=f"qubit {q}")
    if not 0 < t2 < 20 * delays[-1]:
        kit.work.qubits[q]["frequency_hz"] = f_now
        raise FitError(f"Ramsey: T2* {t2:.3g} s is beyond 20x the {delays[-1]:.3g} s window",
                       subject=f"qubit {q}")
    kit.work.set(q, "frequency_hz", f_now + delta, "ramsey")
    # T2* from the fringe at the corrected frequency: the first two may run slowly when the
    # frequency was far off, and a slow fringe does not pin its decay within the window.
    kit.work.set(q, "t2_s", t2, "ramsey")


def drag(kit: Kit, q: int, shots: int) -> None:
    """DRAG beta (samples): where X180.Y90 and Y180.X90 give the same signal."""
    betas = np.linspace(-1.5, 1.5, 21)
    pi, pi2 = kit.work.qubits[q]["pi_amplitude"], kit.work.qubits[q]["pi2_amplitude"]
    signals = []
    for first, second in (((pi, 0.0), (pi2, np.pi / 2)), ((pi, np.pi / 2), (pi2, 0.0))):
        def body(b, beta, first=first, second=second):
            end = kit.drive(b, q, 0, first[0], first[1], beta=beta)
            return kit.drive(b, q, end, second[0], second[1], beta=beta)
        signals.append(kit.run_iq(sweep(kit, q, betas, body), shots)[:, 0])
    both = project(np.concatenate(signals))
    diff = both[:len(betas)] - both[len(betas):]
    slope, intercept = np.polyfit(betas, diff, 1)
    beta = -intercept / slope
    if not betas.min() <= beta <= betas.max():
        raise FitError(f"DRAG: beta {beta:.3g} outside the sweep", subject=f"qubit {q}")
    kit.work.set(q, "drag_beta", float(beta), "drag")


def _prepared_readouts(kit: Kit, q: int, pi_amplitude: float,
                       frequency_hz: float | None) -> list:
    """Two programs: read qubit ``q`` after preparing |0> and after a pi pulse (|1>)."""
    progs = []
    for prep in (0.0, pi_amplitude):
        b = kit.builder([q])
        end = kit.drive(b, q, 0, prep)
        kit.readout(b, q, end, 0, frequency_hz=frequency_hz)
        progs.append(b.build(num_clbits=1))
    return progs


def readout(kit: Kit, q: int, shots: int) -> None:
    """Readout frequency with the best |0>/|1> separation, then discriminator centres,
    assignment matrix and fidelity from single shots."""
    pi = kit.work.qubits[q]["pi_amplitude"]
    centre = kit.work.qubits[q]["readout_frequency_hz"]
    freqs = centre + np.linspace(-2e6, 2e6, 21)
    snr = []
    for f in freqs:
        iq = kit.run_iq(_prepared_readouts(kit, q, pi, f), shots // 4, single=True)[:, :, 0]
        sigma = np.sqrt(0.5 * (iq[0].std() ** 2 + iq[1].std() ** 2))
        snr.append(abs(complex_median(iq[1]) - complex_median(iq[0])) / sigma)
    best = float(freqs[int(np.argmax(snr))])
    kit.work.set(q, "readout_frequency_hz", best, "readout_optimisation")
    iq = kit.run_iq(_prepared_readouts(kit, q, pi, None), shots * 4, single=True)[:, :, 0]
    c0, c1 = complex_median(iq[0]), complex_median(iq[1])
    states = [np.abs(iq[k] - c1) < np.abs(iq[k] - c0) for k in (0, 1)]
    p1_given0, p1_given1 = states[0].mean(), states[1].mean()
    matrix = [[1 - p1_given0, p1_given0], [1 - p1_given1, p1_given1]]
    kit.work.set(q, "discriminator", {"centers": [[float(c0.real), float(c0.imag)],
                                                  [float(c1.real), float(c1.imag)]]},
                 "readout_discrimination")
    kit.work.set(q, "assignment_matrix", [[float(v) for v in row] for row in matrix],
                 "readout_discrimination")
    kit.work.set(q, "readout_assignment_fidelity", float(1 - (p1_given0 + 1 - p1_given1) / 2),
                 "readout_discrimination")


def _p1(kit: Kit, progs, shots: int) -> np.ndarray:
    """P(1) per program and clbit, corrected with the calibrated assignment matrices."""
    centres = {}
    for q, p in kit.work.qubits.items():
        if "discriminator" in p:
            (i0, q0), (i1, q1) = p["discriminator"]["centers"]
            centres[q] = (complex(i0, q0), complex(i1, q1))
    bits = kit.run_bits(progs, shots, centres)
    raw = bits.mean(axis=1)
    out = np.empty_like(raw)
    for i, prog in enumerate(progs):
        for q, c in zip(prog.acq_qubit, prog.acq_clbit, strict=True):
            (_, a01), (_, a11) = kit.work.qubits[int(q)]["assignment_matrix"]
            out[i, c] = np.clip((raw[i, c] - a01) / (a11 - a01), 0, 1)
    return out


def t1(kit: Kit, q: int, shots: int) -> None:
    """T1 (s) from the decay of |1>; passive reset waits 5 T1."""
    delays = kit.on_grid(np.linspace(0, 200e-6, 21))
    pi = kit.work.qubits[q]["pi_amplitude"]
    progs = sweep(kit, q, delays, lambda b, tau: kit.drive(b, q, 0, pi) + kit.samples(tau))
    p1 = _p1(kit, progs, shots)[:, 0]
    value = fit_exponential(delays, p1, f"qubit {q} T1")
    kit.work.set(q, "t1_s", value, "t1")
    kit.work.set(q, "reset_duration_s", round(5 * value, 6), "t1")


def _cz_phases(kit: Kit, flux_q: int, other: int, duration: int, rise: float, amp: float,
               shots: int) -> dict[str, tuple[float, float]]:
    """Phase and contrast of each qubit after the flux pulse, the partner in |0> or |1>."""
    progs = []
    labels = []
    for target, partner in ((other, flux_q), (flux_q, other)):
        for partner_state in (0, 1):
            for analysis_phase in (0.0, np.pi / 2):
                b = kit.builder([flux_q, other])
                pt = kit.work.qubits[partner]
                tt = kit.work.qubits[target]
                t = kit.drive(b, partner, 0, pt["pi_amplitude"] if partner_state else 0.0)
                t = kit.drive(b, target, t, tt["pi2_amplitude"])
                t = kit.flux(b, flux_q, t, duration, rise, amp)
                t = kit.drive(b, target, t, tt["pi2_amplitude"], analysis_phase)
                kit.readout(b, target, t, 0)
                progs.append(b.build(num_clbits=1))
                labels.append((target, partner_state))
    p1 = _p1(kit, progs, shots)[:, 0]
    out = {}
    for k in range(0, len(progs), 2):
        target, state = labels[k]
        phase, contrast = phase_from_quadratures(p1[k], p1[k + 1])
        out[f"{target}|{state}"] = (float(phase), float(contrast))
    return out


def cz(kit: Kit, pair: tuple[int, int], shots: int, progress: Progress) -> None:
    """CZ on ``pair``: flux pulse on the higher-frequency qubit; scan amplitude x duration for a
    conditional phase of pi with the least leakage, then record phase corrections."""
    a, b = pair
    fa, fb = (kit.work.qubits[q]["frequency_hz"] for q in pair)
    flux_q, other = (a, b) if fa > fb else (b, a)
    alpha = kit.work.qubits[flux_q]["anharmonicity_hz"]
    f_target = kit.work.qubits[other]["frequency_hz"] - alpha
    ec = -alpha
    ratio = ((f_target + ec) / (kit.work.qubits[flux_q]["frequency_hz"] + ec)) ** 2
    phi = np.arccos(min(1.0, ratio)) / np.pi
    amp0 = phi / kit.work.device["flux_line_phi0_per_amplitude"]
    rise = 5.0
    best = None
    for duration in range(28, 48, 2):
        amps = amp0 + np.linspace(-0.03, 0.03, 25)
        results = [_cz_phases(kit, flux_q, other, duration, rise, amp, shots) for amp in amps]
        cond = np.array([r[f"{other}|1"][0] - r[f"{other}|0"][0] for r in results])
        cond = np.mod(cond, 2 * np.pi)
        contrast = np.array([r[f"{other}|1"][1] for r in results])
        for i in range(len(amps) - 1):
            lo, hi = cond[i] - np.pi, cond[i + 1] - np.pi
            if lo * hi <= 0 and abs(cond[i] - cond[i + 1]) < np.pi:
                x = amps[i] + (amps[i + 1] - amps[i]) * lo / (lo - hi)
                c = (contrast[i] + contrast[i + 1]) / 2
                if best is None or c > best[0]:
                    best = (c, duration, float(x))
        progress(f"  cz {pair}: {duration} samples scanned, best so far {best}")
    if best is None:
        raise FitError("CZ: no amplitude gives a conditional phase of pi",
                       subject=f"edge {pair}")
    contrast, duration, amp = best
    amps = amp + np.linspace(-0.002, 0.002, 9)
    results = [_cz_phases(kit, flux_q, other, duration, rise, x, shots * 2) for x in amps]
    cond = np.unwrap([r[f"{other}|1"][0] - r[f"{other}|0"][0] for r in results])
    cond = np.mod(cond - np.pi, 2 * np.pi) - np.pi
    slope, intercept = np.polyfit(amps, cond, 1)
    amp = float(-intercept / slope) if slope else amp
    final = _cz_phases(kit, flux_q, other, duration, rise, amp, shots * 4)
    lo_q, hi_q = sorted(pair)
    phase = {other: final[f"{other}|0"][0], flux_q: final[f"{flux_q}|0"][0]}
    exp = "cz_phase_scan"
    kit.work.set_pair((lo_q, hi_q), "cz_flux_qubit", flux_q, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_amplitude", amp, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_duration_s", duration / kit.fs, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_rise_s", rise / kit.fs, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_phase_a_rad", -phase[lo_q], exp)
    kit.work.set_pair((lo_q, hi_q), "cz_phase_b_rad", -phase[hi_q], exp)
    kit.work.set_pair((lo_q, hi_q), "cz_conditional_contrast", final[f"{other}|1"][1], exp)
