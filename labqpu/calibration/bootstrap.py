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
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from labqpu.calibration.experiments import (
    CurveFit,
    FitError,
    Kit,
    complex_median,
    fit_damped_cosine_curve,
    fit_exponential_curve,
    fit_parabola,
    fit_peak_curve,
    fit_peak_searching,
    fit_rabi_curve,
    handedness_from_fringes,
    phase_from_quadratures,
    project,
    sweep,
    vertex_stderr,
    zero_crossing,
)
from labqpu.calibration.leakage import candidate_leakage

log = logging.getLogger(__name__)

#: Lowest drive IF (Hz) the runner accepts without re-planning the LOs
#: (``checks.check_drive_lo``), and the highest as a fraction of the controller's sample rate
#: (450 MHz at 1 GS/s: below its Nyquist frequency, with room for the pulse's bandwidth).
DRIVE_IF_LOWEST_HZ = 20e6
DRIVE_IF_HIGHEST_PER_FS = 0.45


def drive_if_band_hz(fs: float) -> tuple[float, float]:
    """The drive IFs (Hz) the calibration accepts on a controller of ``fs`` samples per
    second."""
    return DRIVE_IF_LOWEST_HZ, DRIVE_IF_HIGHEST_PER_FS * fs

#: How far below the lowest qubit of its group a drive LO is set (Hz).
DRIVE_LO_BELOW_HZ = 100e6

#: Resonator spectroscopy's readout amplitude, as a fraction of the readout amplitude (a
#: quarter of the photons). At the full amplitude the peak of lab5's qubits 2 and 4 had a notch
#: at its centre (measurement-induced transitions, which grow as a high power of the photon
#: number), and their fits landed 70-94 kHz from the resonance (R^2 0.987 and 0.914); at half
#: it, all five qubits' within 1-25 kHz (R^2 0.993-0.997).
SPECTROSCOPY_AMPLITUDE_SCALE = 0.5

Progress = Callable[[str], None]


def drive_lo_hz(frequencies: Iterable[float]) -> float:
    """The drive LO (Hz, to the MHz) of qubits at ``frequencies`` (Hz) that share it:
    :data:`DRIVE_LO_BELOW_HZ` below the lowest, so every IF is positive."""
    return round(min(frequencies) - DRIVE_LO_BELOW_HZ, -6)


def choose_drive_lo(kit: Kit, q: int) -> None:
    """Drive LO of qubit ``q``'s group (Hz): :data:`DRIVE_LO_BELOW_HZ` below the group's lowest
    qubit, so every IF is positive; set on every qubit the LO serves.

    Raises ``FitError`` (the graph's failure of a step; nothing set) when a qubit of the group
    would need a drive IF above :func:`drive_if_band_hz` (the IFs the runner accepts, below the
    controller's Nyquist frequency): one LO cannot drive qubits that far apart, and the rack
    needs another drive LO for some of them.
    """
    source = kit.config.qubits[q].drive_lo
    group = sorted(p for p in kit.work.qubits if kit.config.qubits[p].drive_lo == source)
    freqs = {p: kit.work.qubits[p]["frequency_hz"] for p in group}
    lo = drive_lo_hz(freqs.values())
    highest = drive_if_band_hz(kit.fs)[1]
    far = [p for p in group if freqs[p] - lo > highest]
    if far:
        raise FitError(
            f"qubits {group} share the drive LO {source!r}; set {DRIVE_LO_BELOW_HZ / 1e6:g} MHz "
            f"below the lowest of them ({lo / 1e9:.4f} GHz), it would drive "
            + ", ".join(f"qubit {p} at an IF of {(freqs[p] - lo) / 1e6:.0f} MHz" for p in far)
            + f", above the {highest / 1e6:.0f} MHz the calibration accepts (the "
            f"controller plays IFs only below half its sample rate, "
            f"{kit.fs / 2e6:.0f} MHz); wire those qubits to a drive LO of their own in "
            "lab.toml (drive_lo), as in docs/wiring.md", subject=f"qubit {q}",
            parameter="drive_lo_frequency_hz")
    for p in group:
        kit.work.set(p, "drive_lo_frequency_hz", lo, "lo_plan")


#: Half-span of resonator spectroscopy around the stored resonator (Hz; 61 points), and of the
#: coarse search (1 MHz steps) it falls back on when the peak is not inside that span.
RESONATOR_SPAN_HZ = 6e6
RESONATOR_SEARCH_HZ = 30e6


def _resonator_scan(kit: Kit, q: int, shots: int, freqs: np.ndarray) -> np.ndarray:
    """IQ of qubit ``q``'s readout in |0> at each frequency of ``freqs`` (Hz), at
    :data:`SPECTROSCOPY_AMPLITUDE_SCALE` of the readout amplitude."""
    progs = []
    for f in freqs:
        b = kit.builder([q])
        kit.readout(b, q, 0, 0, frequency_hz=f, amplitude_scale=SPECTROSCOPY_AMPLITUDE_SCALE)
        progs.append(b.build(num_clbits=1))
    return kit.run_iq(progs, shots)[:, 0]


def resonator_spectroscopy(kit: Kit, q: int, shots: int, *,
                           keep_readout_within_hz: float = 0.0) -> None:
    """Resonator frequency (Hz): transmission peak of the resonator with the qubit in |0>,
    kept as the measured ``resonator_hz``, around which the readout node searches; the readout
    frequency moves to it unless it lies within ``keep_readout_within_hz`` of it (a frequency
    the readout node chose off the peak reads better than the peak). Measured at
    :data:`SPECTROSCOPY_AMPLITUDE_SCALE` of the readout amplitude: on resonance the readout's
    photons excite the qubit, which moves the resonator and notches the peak. The scan spans
    :data:`RESONATOR_SPAN_HZ` either side of the stored ``resonator_hz`` (of the readout
    frequency, when no ``resonator_hz`` was measured yet); when its peak is not
    inside, a coarse search over :data:`RESONATOR_SEARCH_HZ` either side finds the largest
    response and the scan runs again there (both are in the record). The record gives the old
    ``resonator_hz`` only when it was measured (the design's estimate is no old value)."""
    work = kit.work.qubits[q]
    measured = (q, "resonator_hz") in kit.work.records
    # A resonator never measured has the design's estimate; a calibrated readout frequency
    # lies within a few MHz of the peak (lab5's shipped snapshot: 1.7 MHz, the design 4.3 MHz
    # off, its peak at the edge of the scan).
    on_readout = not measured and "readout_frequency_hz" in work
    around = "readout frequency" if on_readout else "stored resonator_hz"
    stored = work["readout_frequency_hz" if on_readout else "resonator_hz"]
    span = np.linspace(-RESONATOR_SPAN_HZ, RESONATOR_SPAN_HZ, 61)
    scans = []  # the IQ of each scan: the record keeps the last one's

    def measure(freqs: np.ndarray) -> np.ndarray:
        scans.append(_resonator_scan(kit, q, shots, freqs))
        return np.abs(scans[-1])

    freqs, signal, fit, series = fit_peak_searching(
        measure, stored + span,
        stored + np.arange(-RESONATOR_SEARCH_HZ, RESONATOR_SEARCH_HZ + 1.0, 1e6),
        lambda peak: peak + span, f"qubit {q} resonator spectroscopy",
        scan_label=f"around the {around} {stored:.6g} Hz",
        search_label=f"search, +-{RESONATOR_SEARCH_HZ / 1e6:g} MHz",
        not_found=f"no resonator peak within {RESONATOR_SPAN_HZ / 1e6:g} MHz of the {around} "
                  f"{stored:.6g} Hz" + (" (no resonator_hz measured yet)" if on_readout else ""))
    iq = scans[-1]
    f0 = fit.params["f0"]
    current = work.get("readout_frequency_hz")  # a bootstrap's design may hold none
    moves = current is None or abs(current - f0) > keep_readout_within_hz
    values = {"resonator_hz": (f0, fit.stderr["f0"])}
    if moves:
        values["readout_frequency_hz"] = values["resonator_hz"]
    rid = kit.record(
        "resonator_spectroscopy", q, values,
        {"x": freqs, "x_label": "readout frequency (Hz)", "y_label": "|IQ| (a.u.)",
         "series": {"qubit in |0>": signal, **series}, "iq": [iq.real, iq.imag]},
        fit=fit.quality(), curves={"Lorentzian": fit.sampled(freqs)},
        chosen="resonator_hz", old=None if measured else {"resonator_hz": None},
        settings={"shots": shots,
                  "amplitude": kit.readout_amplitude(q) * SPECTROSCOPY_AMPLITUDE_SCALE,
                  "readout_kept_within_hz": keep_readout_within_hz})
    if moves:
        kit.work.set(q, "readout_frequency_hz", f0, rid)
    kit.work.set(q, "resonator_hz", f0, rid)


def _spectroscopy(kit: Kit, q: int, shots: int, centre_hz: float,
                  span_hz: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, CurveFit]:
    """Drive frequencies (Hz), signal and Lorentzian fit of a saturating 200 ns drive swept
    over ``centre + span``."""
    duration = 200e-9
    amp = 0.5 / (kit.work.device["rabi_hz_per_amplitude"] * duration)
    freqs = centre_hz + np.arange(span_hz[0], span_hz[1], 1.0e6)
    progs = sweep(kit, q, freqs, lambda b, f: kit.square_drive(b, q, 0, duration, amp, f))
    iq = kit.run_iq(progs, shots)[:, 0]
    signal = np.abs(iq - complex_median(iq))
    return freqs, signal, fit_peak_curve(freqs, signal, f"qubit {q} spectroscopy")


def qubit_spectroscopy(kit: Kit, q: int, shots: int, centre_hz: float,
                       span_hz: tuple[float, float]) -> float:
    """0-1 frequency (Hz) from a saturating 200 ns drive swept over ``centre + span``."""
    return _spectroscopy(kit, q, shots, centre_hz, span_hz)[2].params["f0"]


def sweet_spot(kit: Kit, q: int, shots: int) -> None:
    """Flux-bias current (A) of the sweet spot: vertex of f01(I) measured at five currents;
    then the 0-1 frequency (Hz) there, by spectroscopy."""
    search = kit.work.device["flux_bias_search_a"]
    currents = np.linspace(-search, search, 5)
    design = kit.work.qubits[q]["frequency_hz"]
    old_bias = kit.work.qubits[q].get("flux_bias_a")
    peaks, spectra = [], {}
    for current in currents:
        kit.work.qubits[q]["flux_bias_a"] = float(current)
        freqs, signal, fit = _spectroscopy(kit, q, shots, design, (-260e6, 60e6))
        peaks.append(fit.params["f0"])
        spectra[f"{current:.6g} A"] = {"x": freqs, "y": signal}
    parabola = fit_parabola(currents, np.array(peaks), f"qubit {q} sweet spot")
    c2, c1, c0 = parabola.params.values()
    i0, f_max = -c1 / (2 * c2), c0 - c1 ** 2 / (4 * c2)
    if abs(i0) > 2 * search:
        raise FitError(f"sweet spot: vertex at {i0:.3g} A is far outside the search",
                       subject=f"qubit {q}")
    rid = kit.record(
        "sweet_spot", q, {"flux_bias_a": (i0, vertex_stderr(parabola))},
        {"x": currents, "x_label": "flux bias current (A)",
         "y_label": "0-1 frequency from spectroscopy (Hz)", "series": {"peak": peaks},
         "spectra": spectra},
        fit=parabola.quality(), curves={"parabola": parabola.sampled(currents)},
        chosen="flux_bias_a", old={"flux_bias_a": old_bias}, settings={"shots": shots})
    kit.work.set(q, "flux_bias_a", i0, rid)
    freqs, signal, fit = _spectroscopy(kit, q, shots, f_max, (-20e6, 20e6))
    f0 = fit.params["f0"]
    rid = kit.record(
        "qubit_spectroscopy", q, {"frequency_hz": (f0, fit.stderr["f0"])},
        {"x": freqs, "x_label": "drive frequency (Hz)", "y_label": "|IQ - median| (a.u.)",
         "series": {"at the sweet spot": signal}},
        fit=fit.quality(), curves={"Lorentzian": fit.sampled(freqs)},
        chosen="frequency_hz", settings={"shots": shots})
    kit.work.set(q, "frequency_hz", f0, rid)


def rabi(kit: Kit, q: int, shots: int, max_amp: float = 0.9) -> None:
    """pi and pi/2 amplitudes of the DRAG pulse from a Rabi oscillation (project IQ): one
    program whose drive amplitude is a parameter, swept on the controller."""
    amps = np.linspace(0, max_amp, 46)
    b = kit.builder([q])
    b.parameter("amp", 0.0)
    kit.readout(b, q, kit.drive(b, q, 0, "amp"), 0)
    iq = kit.run_sweep(b.build(num_clbits=1), {"amp": amps}, shots)[:, 0]
    signal = project(iq)
    fit = fit_rabi_curve(amps, signal, f"qubit {q} Rabi")
    pi_amp, err = abs(fit.params["period"]) / 2, fit.stderr["period"] / 2
    rid = kit.record(
        "rabi", q, {"pi_amplitude": (pi_amp, err), "pi2_amplitude": (pi_amp / 2, err / 2)},
        {"x": amps, "x_label": "DRAG pulse amplitude (full scale)",
         "y_label": "projected IQ (a.u.)", "series": {"signal": signal},
         "iq": [iq.real, iq.imag]},
        fit=fit.quality(), curves={"cosine": fit.sampled(amps)},
        chosen="pi_amplitude", settings={"shots": shots})
    kit.work.set(q, "pi_amplitude", pi_amp, rid)
    kit.work.set(q, "pi2_amplitude", pi_amp / 2, rid)


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
    rid = kit.record(
        "drive_handedness", q, {"drive_handedness": (sign, None)},
        {"x": delays, "x_label": "delay between the pi/2 pulses (s)",
         "y_label": "projected IQ (a.u.)",
         "series": {"play phase advancing": both[:len(delays)],
                    "play phase retarding": both[len(delays):]}},
        settings={"shots": shots, "detuning_hz": detuning_hz})
    kit.work.set(q, "drive_handedness", sign, rid)


def _ramsey_fringe(kit: Kit, q: int, shots: int, detuning_hz: float,
                   delays_s: np.ndarray) -> tuple[np.ndarray, CurveFit]:
    """Projected signal and damped-cosine fit of one Ramsey fringe whose second pi/2 pulse's
    phase advances by 2 pi ``detuning_hz`` per unit delay."""
    pi2 = kit.work.qubits[q]["pi2_amplitude"]

    def body(b, tau):
        end = kit.drive(b, q, 0, pi2)
        start = end + kit.samples(tau)
        return kit.drive(b, q, start, pi2, 2 * np.pi * detuning_hz * tau)

    signal = project(kit.run_iq(sweep(kit, q, delays_s, body), shots)[:, 0])
    return signal, fit_damped_cosine_curve(delays_s, signal, f"qubit {q} Ramsey")


#: The Ramsey fringes' sampling steps (s): fringes sampled every 100 ns fold a frequency error
#: of any multiple of 10 MHz onto no error at all (a qubit 10 MHz off passed the check, and the
#: calibration kept it), so the frequency check and calibration read one fringe every 64 ns
#: too (15.625 MHz): on a 1 ns timing grid, no error within +-60 MHz but 0 folds onto both (a
#: coarser grid moves both steps to its nearest multiples, kept apart: ``Kit.uniform_delays``).
RAMSEY_STEP_S = 100e-9
SECOND_GRID_STEP_S = 64e-9


def ramsey_grids(kit: Kit, first: int, second: int) -> tuple[np.ndarray, np.ndarray]:
    """Delays (s) of ``first`` points :data:`RAMSEY_STEP_S` apart and of ``second`` points
    :data:`SECOND_GRID_STEP_S` apart, each a whole number of timing-grid steps."""
    one = kit.uniform_delays(RAMSEY_STEP_S, first)
    return one, kit.uniform_delays(SECOND_GRID_STEP_S, second, unlike=float(one[1]))


def _ramsey_frequency(kit: Kit, q: int, shots: int, detuning_hz: float,
                      delays_s: np.ndarray) -> tuple[float, float]:
    """Frequency (Hz) and decay time (s) of one Ramsey fringe (:func:`_ramsey_fringe`)."""
    fit = _ramsey_fringe(kit, q, shots, detuning_hz, delays_s)[1]
    return abs(fit.params["f"]), abs(fit.params["tau"])


def frequency_error(f_plus_hz: float, f_minus_hz: float, detuning_hz: float,
                    handedness: int) -> float:
    """How far (Hz) the qubit lies above the drive, from the fringe frequencies ``f_plus_hz``
    and ``f_minus_hz`` (Hz) of two Ramsey fringes whose analysis pulse's phase advances by
    +-2 pi ``detuning_hz`` per unit delay, and the drive ``handedness`` (+1 or -1). A drive
    delta below the qubit precesses by -2 pi delta t; the analysis pulse's axis turns by
    h 2 pi (+-d) t, so the fringes run at |delta + h d| (f_plus) and |delta - h d| (f_minus):
    s = h delta solves |s + d| = f_plus and |s - d| = f_minus. Pure."""
    d = detuning_hz
    candidates = [(abs(abs(s + d) - f_plus_hz) + abs(abs(s - d) - f_minus_hz), s)
                  for s in ((f_plus_hz + f_minus_hz) / 2, -(f_plus_hz + f_minus_hz) / 2,
                            (f_minus_hz - f_plus_hz) / 2, (f_plus_hz - f_minus_hz) / 2)]
    return handedness * min(candidates)[1]


def ramsey(kit: Kit, q: int, shots: int) -> None:
    """Qubit frequency (Hz) and T2* (s) from two Ramsey fringes with opposite detunings; the
    measured drive handedness says which sign the frequency error has, and a third fringe at
    the new frequency must come back at the set detuning, and so must a fourth on a second
    grid (:func:`ramsey_grids`), which the first three cannot tell from an error of a
    multiple of 10 MHz: the calibration then fails, naming the spectroscopy that finds it."""
    delays, second_grid = ramsey_grids(kit, 61, 94)  # 6 us each
    d = 1.5e6
    plus, fit_plus = _ramsey_fringe(kit, q, shots, +d, delays)
    minus, fit_minus = _ramsey_fringe(kit, q, shots, -d, delays)
    f_plus, f_minus = abs(fit_plus.params["f"]), abs(fit_minus.params["f"])
    handedness = kit.work.qubits[q]["drive_handedness"]
    delta = frequency_error(f_plus, f_minus, d, handedness)
    f_now = kit.work.qubits[q]["frequency_hz"]
    kit.work.qubits[q]["frequency_hz"] = f_now + delta
    third, fit = _ramsey_fringe(kit, q, shots, d, delays)
    check, t2 = abs(fit.params["f"]), abs(fit.params["tau"])
    series = {f"+{d / 1e6:g} MHz": plus, f"-{d / 1e6:g} MHz": minus,
              f"+{d / 1e6:g} MHz at the new frequency": third}
    quality = {**fit.quality(), "fringe_plus_hz": f_plus, "fringe_minus_hz": f_minus,
               "fringe_check_hz": check, "short_window_decay_s": t2}

    def record(rejected: str | None = None) -> str:
        """The record of the fringes measured so far, the working frequency put back (the
        caller sets the new one); with ``rejected``, kept and refused (``FitError``)."""
        kit.work.qubits[q]["frequency_hz"] = f_now
        # the third fringe's offset from the set detuning is what is left of the error
        return kit.record(
            "ramsey", q, {"frequency_hz": (f_now + delta, fit.stderr["f"])},
            {"x": delays, "x_label": "delay between the pi/2 pulses (s)",
             "y_label": "projected IQ (a.u.)", "series": series},
            fit=quality, curves={"damped cosine at the new frequency": fit.sampled(delays)},
            old={"frequency_hz": f_now},
            settings={"shots": shots, "detuning_hz": d, "drive_handedness": handedness},
            rejected=rejected)

    if abs(check - d) > 0.1 * d:
        record(f"at the corrected frequency {f_now + delta:.10g} Hz the fringe runs at "
               f"{check:.4g} Hz, not at the set {d:.4g} Hz")
    folded_signal, folded_fit = _ramsey_fringe(kit, q, shots, -d, second_grid)
    folded = abs(folded_fit.params["f"])
    series[f"-{d / 1e6:g} MHz at the new frequency, every {second_grid[1] * 1e9:.3g} ns"] = \
        {"x": second_grid, "y": folded_signal}
    quality["fringe_second_grid_hz"] = folded
    if abs(folded - d) > 0.1 * d:
        step_ns, rate_mhz = delays[1] * 1e9, 1e-6 / delays[1]
        record(f"at the corrected frequency {f_now + delta:.10g} Hz the fringe sampled every "
               f"{second_grid[1] * 1e9:.4g} ns runs at {folded:.4g} Hz, not at the set "
               f"{d:.4g} Hz: the qubit is off by more than Ramsey fringes sampled every "
               f"{step_ns:.4g} ns tell apart (an error of a multiple of {rate_mhz:.4g} MHz "
               "folds onto none); the sweet_spot node finds its frequency by spectroscopy: "
               f"run it forced (labqpu calibrate sweet_spot --qubits {q} --force, not within "
               "a watch, which forces nothing; or run_graph(backend, 'sweet_spot', "
               f"qubits=[{q}], force=True)), as its values within their age limits leave it "
               "be")
    rid = record()
    kit.work.set(q, "frequency_hz", f_now + delta, rid)
    ramsey_t2(kit, q, shots)


def ramsey_t2(kit: Kit, q: int, shots: int) -> None:
    """T2* (s) of qubit ``q`` from one Ramsey fringe over ``RAMSEY_T2_WINDOWS`` x its previous
    T2* (30 us without one; at most 150 us), with the analysis pulse's phase advancing by four
    turns over the window: a fringe slow enough for 61 points, long enough to pin the decay.
    The frequency must already be right (the fringe runs at 4 / window, ~30 kHz)."""
    window = min(RAMSEY_T2_WINDOWS * kit.work.qubits[q].get("t2_s", 30e-6), 150e-6)
    delays = kit.on_grid(np.linspace(0, window, 61))
    detuning = 4 / window
    signal, fit = _ramsey_fringe(kit, q, shots, detuning, delays)
    t2 = abs(fit.params["tau"])
    if not 0 < t2 < 5 * window:
        raise FitError(f"Ramsey T2*: {t2:.3g} s is beyond 5x the {window:.3g} s window",
                       subject=f"qubit {q}")
    rid = kit.record(
        "ramsey_t2", q, {"t2_s": (t2, fit.stderr["tau"])},
        {"x": delays, "x_label": "delay between the pi/2 pulses (s)",
         "y_label": "projected IQ (a.u.)",
         "series": {f"detuning {detuning / 1e3:.3g} kHz (the analysis pulse's phase)": signal}},
        fit={**fit.quality(), "fringe_hz": abs(fit.params["f"])},
        curves={"damped cosine": fit.sampled(delays)},
        chosen="t2_s",
        settings={"shots": shots, "detuning_hz": detuning, "window_s": window})
    kit.work.set(q, "t2_s", t2, rid)


def drag_difference(kit: Kit, q: int, shots: int, betas: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """X180.Y90 - Y180.X90 (projected IQ, a.u.) at each DRAG beta (samples) of ``betas``, and
    both sequences' signals (``2 len(betas)``: X180.Y90's first). The difference crosses zero
    at the beta that cancels the pulses' phase error."""
    pi, pi2 = kit.work.qubits[q]["pi_amplitude"], kit.work.qubits[q]["pi2_amplitude"]
    signals = []
    for first, second in (((pi, 0.0), (pi2, np.pi / 2)), ((pi, np.pi / 2), (pi2, 0.0))):
        def body(b, beta, first=first, second=second):
            end = kit.drive(b, q, 0, first[0], first[1], beta=beta)
            return kit.drive(b, q, end, second[0], second[1], beta=beta)
        signals.append(kit.run_iq(sweep(kit, q, betas, body), shots)[:, 0])
    both = project(np.concatenate(signals))
    return both[:len(betas)] - both[len(betas):], both


#: Half-width of the DRAG scan (s: +-1.5 samples at 1 GS/s; in samples, a 4 GS/s rack's
#: bootstrap lost a qubit whose beta lay at -1.56 samples).
DRAG_SCAN_S = 1.5e-9


def drag(kit: Kit, q: int, shots: int) -> None:
    """DRAG beta (samples): where X180.Y90 and Y180.X90 give the same signal, scanned over
    :data:`DRAG_SCAN_S` either side of 0."""
    betas = np.linspace(-1.0, 1.0, 21) * DRAG_SCAN_S * kit.fs
    diff, both = drag_difference(kit, q, shots, betas)
    beta, err, line = zero_crossing(betas, diff, f"qubit {q} DRAG beta")
    rid = kit.record(
        "drag", q, {"drag_beta": (beta, err)},
        {"x": betas, "x_label": "DRAG beta (samples)",
         "y_label": "X180.Y90 - Y180.X90, projected IQ (a.u.)", "series": {"difference": diff},
         "x180_y90": both[:len(betas)], "y180_x90": both[len(betas):]},
        fit=line.quality(), curves={"line": line.sampled(betas)},
        chosen="drag_beta", settings={"shots": shots})
    kit.work.set(q, "drag_beta", float(beta), rid)


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


def t1(kit: Kit, q: int, shots: int) -> None:
    """T1 (s) from the decay of |1>; passive reset waits 5 T1."""
    delays = kit.on_grid(np.linspace(0, 200e-6, 21))
    pi = kit.work.qubits[q]["pi_amplitude"]
    progs = sweep(kit, q, delays, lambda b, tau: kit.drive(b, q, 0, pi) + kit.samples(tau))
    p1 = kit.corrected_p1(progs, shots)[:, 0]
    fit = fit_exponential_curve(delays, p1, f"qubit {q} T1")
    value = fit.params["tau"]
    # 5 T1 in whole microseconds, then on the controllers' sample grid (a no-op at 1 GS/s)
    reset = float(kit.on_samples(round(5 * value, 6)))
    rid = kit.record(
        "t1", q, {"t1_s": (value, fit.stderr["tau"]),
                  "reset_duration_s": (reset, 5 * fit.stderr["tau"])},
        {"x": delays, "x_label": "delay after the pi pulse (s)",
         "y_label": "P(1), readout-corrected", "series": {"P(1)": p1}},
        fit=fit.quality(), curves={"exponential": fit.sampled(delays)},
        chosen="t1_s", settings={"shots": shots})
    kit.work.set(q, "t1_s", value, rid)
    kit.work.set(q, "reset_duration_s", reset, rid)


def _cz_phases(kit: Kit, flux_q: int, other: int, duration: int, rise: float, amp: float,
               shots: int, excited: tuple[int, ...] = ()) -> dict[str, tuple[float, float]]:
    """Phase and contrast of each qubit after the flux pulse, the partner in |0> or |1>; the
    qubits ``excited`` (spectators) are put in |1> first. Balanced analysis (see
    :func:`_cz_phase_scan`)."""
    return _cz_phase_scan(kit, flux_q, other, duration, rise, [amp], shots, excited)[0]


#: Analysis phases of a balanced CZ Ramsey: the quadratures are differences of opposite
#: phases, so an offset of P(1) common to them (relaxation during the sequence, thermal
#: population, leakage read as 1, a residual readout error) cancels instead of turning the
#: phase. With only 0 and pi/2 such an offset e moves two phases pi apart in opposite senses,
#: i.e. the conditional phase by up to 2 e / contrast: ~1 deg on lab5's edge 2-3.
BALANCED_PHASES = (0.0, np.pi / 2, np.pi, 3 * np.pi / 2)


def _cz_phase_scan(kit: Kit, flux_q: int, other: int, duration: int, rise: float,
                   amps: Sequence[float], shots: int, excited: tuple[int, ...] = (), *,
                   balanced: bool = True) -> list[dict[str, tuple[float, float]]]:
    """:func:`_cz_phases` at each flux amplitude of ``amps``, in one job: the programs of one
    (target, partner state, analysis phase) differ only in the amplitude, so each such run
    of them is one upload (``labqpu.backend.merge``). ``balanced``: analysis pulses at the four
    :data:`BALANCED_PHASES` (``shots`` each), else at 0 and pi/2 only (half the programs; a
    phase biased by any offset of P(1), good enough to locate crossings)."""
    p1, labels = _cz_phase_p1(kit, flux_q, other, duration, rise, amps, shots, excited,
                              balanced=balanced)
    return cz_phases_from_p1(p1, labels, balanced=balanced)


def _cz_phase_p1(kit: Kit, flux_q: int, other: int, duration: int, rise: float,
                 amps: Sequence[float], shots: int, excited: tuple[int, ...] = (), *,
                 balanced: bool = True) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The corrected P(1) of :func:`_cz_phase_scan`'s programs, (target, partner state) x
    analysis phase x amplitude, and those (target, partner state) labels."""
    analysis = BALANCED_PHASES if balanced else BALANCED_PHASES[:2]
    progs = []
    labels = []
    for target, partner in ((other, flux_q), (flux_q, other)):
        for partner_state in (0, 1):
            for analysis_phase in analysis:
                for amp in amps:
                    b = kit.builder([flux_q, other, *excited])
                    pt = kit.work.qubits[partner]
                    tt = kit.work.qubits[target]
                    for s in excited:
                        kit.drive(b, s, 0, kit.work.qubits[s]["pi_amplitude"])
                    t = kit.drive(b, partner, 0, pt["pi_amplitude"] if partner_state else 0.0)
                    t = kit.drive(b, target, t, tt["pi2_amplitude"])
                    t = kit.flux(b, flux_q, t, duration, rise, amp)
                    t = kit.drive(b, target, t, tt["pi2_amplitude"], analysis_phase)
                    kit.readout(b, target, t, 0)
                    progs.append(b.build(num_clbits=1))
            labels.append((target, partner_state))
    p1 = kit.corrected_p1(progs, shots)[:, 0].reshape(len(labels), len(analysis), len(amps))
    return p1, labels


def cz_phases_from_p1(p1: np.ndarray, labels: Sequence[Sequence[int]], *,
                      balanced: bool = True) -> list[dict[str, tuple[float, float]]]:
    """Per amplitude, ``"target|partner state"`` -> (phase (rad), contrast) from the P(1) of
    :func:`_cz_phase_p1` ((target, partner state) x analysis phase x amplitude)."""
    # balanced: P(1) at 0 and pi/2 with the common offset removed, 1/2 + (P(a) - P(a + pi)) / 2
    quadratures = 0.5 + (p1[:, :2] - p1[:, 2:]) / 2 if balanced else p1
    out: list[dict[str, tuple[float, float]]] = [{} for _ in range(p1.shape[2])]
    for (target, state), (p_x, p_y) in zip(labels, quadratures, strict=True):
        phase, contrast = phase_from_quadratures(p_x, p_y)
        for i in range(p1.shape[2]):
            out[i][f"{target}|{state}"] = (float(phase[i]), float(contrast[i]))
    return out


def cz_corrections(final: dict[str, tuple[float, float]], pair: tuple[int, int],
                   flux_q: int) -> tuple[float, float]:
    """The phase corrections (rad) of ``pair``'s lower and higher qubit from the phases of the
    calibrated CZ with the partner in |0> (:func:`cz_phases_from_p1`): each qubit's phase
    undone."""
    lo_q, hi_q = sorted(pair)
    other = hi_q if flux_q == lo_q else lo_q
    phase = {other: final[f"{other}|0"][0], flux_q: final[f"{flux_q}|0"][0]}
    return -phase[lo_q], -phase[hi_q]


#: The T2* fringe spans this many times the previous T2*.
RAMSEY_T2_WINDOWS = 3.0
#: Flat-top durations (s) the CZ calibration scans first, 28 to 46 ns (each rounded to the
#: controller's samples: 28-46 at 1 GS/s). They were samples until 2026-12-07, and a rack at
#: 2 GS/s scanned 14-23 ns, too short for a full |11> <-> |20> cycle: its CZs leaked 25-53 %.
CZ_DURATIONS_S = tuple(float(ns) * 1e-9 for ns in range(28, 48, 2))
#: Rise (and fall) of the CZ's flux pulse (s).
CZ_RISE_S = 5e-9
#: Leakage to |20> returns to ~0 only at particular durations (a full |11> <-> |20> cycle),
#: and its minima are ~1 ns wide (lab5's edge 3-4, exact propagation: 1.6 %, 0.03 %,
#: 1.3 % at 32, 33, 34 ns). So the durations CZ_NEIGHBOUR_S (at least a sample) either side
#: of the crossings that leak least are scanned too, over this half-width (full scale) around
#: their amplitude, at CZ_NEIGHBOUR_POINTS amplitudes.
CZ_NEIGHBOUR_S = 1e-9
CZ_NEIGHBOUR_SPAN = 0.008
CZ_NEIGHBOUR_POINTS = 9
#: Crossings of pi (duration, amplitude) whose contrast and leakage the CZ calibration
#: measures again.
CZ_FINALISTS = 3
#: How far below the best partner contrast a CZ finalist (contrast measured with 4x the shots)
#: may be and still be chosen for its lower leakage.
CZ_CONTRAST_SLACK = 0.05
#: How far below the best contrast of the scan a crossing may be and still become a finalist.
#: The scan's contrasts have a standard error of ~0.03 and its best is the largest of ~17: at
#: 0.05, lab5's edge 3-4 lost crossings of the three that leak least in two runs of three
#: (32 and 34 ns at 0.949-0.950 against a best of 1.010; 32 ns at 0.931 against 1.001,
#: 2026-12-07). When the one that lost was 33 ns (0.04 %), a 32 or 34 ns CZ leaking 1.2-1.7 %
#: was chosen (one run of the convergence test in five, 2026-12-07).
CZ_SCREEN_SLACK = 0.15
#: Half-width (full scale) of the amplitudes around the chosen crossing that fix its amplitude.
CZ_FINAL_SPAN = 0.002
#: Half-width (full scale) of the amplitudes around the calibrated CZ that a refinement tries.
CZ_REFINE_SPAN = 0.004
#: Shots per program of the 9-amplitude line that fixes a CZ's amplitude, in units of the
#: run's shots. At 400 x 4 (balanced, one job) repeated refinements of lab5's edges put the
#: pulse within a standard deviation of 0.1-0.6 deg (exact propagation), against 1.1 deg at
#: 400 x 2 without balance (2026-12-01).
CZ_LINE_SHOTS = 4


def cz(kit: Kit, pair: tuple[int, int], shots: int, progress: Progress) -> None:
    """CZ on ``pair``: flux pulse on the higher-frequency qubit; scan amplitude x duration for a
    conditional phase of pi; each crossing's leakage (``labqpu.calibration.leakage``) is
    measured, and of the crossings within :data:`CZ_SCREEN_SLACK` of the best partner
    contrast (what leakage and decoherence leave of the Ramsey fringe) the
    :data:`CZ_FINALISTS` that leak least (with the crossings at the durations next to them,
    :data:`CZ_NEIGHBOUR_SPAN`) are measured again, contrast with 4x the shots and leakage with
    40x; the one that leaks least is kept (unless its contrast is more than the
    slack below another finalist's). Then the amplitude is refined by a line through the
    conditional phase around pi, and the phase corrections recorded."""
    a, b = pair
    fa, fb = (kit.work.qubits[q]["frequency_hz"] for q in pair)
    flux_q, other = (a, b) if fa > fb else (b, a)
    alpha = kit.work.qubits[flux_q]["anharmonicity_hz"]
    f_target = kit.work.qubits[other]["frequency_hz"] - alpha
    ec = -alpha
    ratio = ((f_target + ec) / (kit.work.qubits[flux_q]["frequency_hz"] + ec)) ** 2
    phi = np.arccos(min(1.0, ratio)) / np.pi
    amp0 = phi / kit.work.device["flux_line_phi0_per_amplitude"]
    rise = float(round(CZ_RISE_S * kit.fs))
    durations = sorted({round(d * kit.fs) for d in CZ_DURATIONS_S})
    step = max(1, round(CZ_NEIGHBOUR_S * kit.fs))
    crossings = []
    amps = amp0 + np.linspace(-0.03, 0.03, 25)
    scan = {"durations_samples": [], "amplitudes": amps, "conditional_phase_rad": [],
            "contrast": [], "neighbours": []}
    for duration in durations:
        cond, contrast, found = _crossings_of_pi(kit, flux_q, other, duration, rise, amps, shots)
        for key, value in (("durations_samples", duration), ("conditional_phase_rad", cond),
                           ("contrast", contrast)):
            scan[key].append(value)
        crossings += found
        progress(f"  cz {pair}: {duration} samples scanned, {len(crossings)} crossing"
                 f"{'' if len(crossings) == 1 else 's'} of pi")
    if not crossings:
        raise FitError("CZ: no amplitude gives a conditional phase of pi",
                       subject=f"edge {pair}")
    # Leakage first: every crossing's leakage in one job; of those whose contrast is within
    # CZ_SCREEN_SLACK of the best, the CZ_FINALISTS that leak least are measured again (the
    # scan's contrasts have a standard error of ~0.03, the leakage screen ~0.007), and the one
    # that leaks least is kept unless its contrast falls CZ_CONTRAST_SLACK below another's.
    # Before that, the durations next to the least-leaking crossings join the candidates.
    screen = [leak for leak, _ in candidate_leakage(
        kit, flux_q, other, rise, [(d, x) for _, d, x in crossings], shots * 4)]
    scanned = set(durations)
    added = []
    for _, d, x in _eligible(crossings, screen)[:CZ_FINALISTS]:
        for near in (d - step, d + step):
            if near in scanned or near <= 2 * rise:
                continue
            scanned.add(near)
            local = x + np.linspace(-CZ_NEIGHBOUR_SPAN, CZ_NEIGHBOUR_SPAN, CZ_NEIGHBOUR_POINTS)
            cond, contrast, found = _crossings_of_pi(kit, flux_q, other, near, rise, local, shots)
            scan["neighbours"].append([near, local, cond, contrast])
            added += found
    if added:
        crossings += added
        screen += [leak for leak, _ in candidate_leakage(
            kit, flux_q, other, rise, [(d, x) for _, d, x in added], shots * 4)]
        progress(f"  cz {pair}: {len(added)} crossings next to the least leaking")
    scan["crossings"] = [[c, d, x, leak] for (c, d, x), leak in zip(crossings, screen,
                                                                     strict=True)]
    finalists = [(d, x) for _, d, x in _eligible(crossings, screen)[:CZ_FINALISTS]]
    leakage = candidate_leakage(kit, flux_q, other, rise, finalists, shots * 40)
    remeasured = [(_cz_phases(kit, flux_q, other, d, rise, x, shots * 4)[f"{other}|1"][1],
                   leak, d, x) for (d, x), (leak, _) in zip(finalists, leakage, strict=True)]
    scan["finalists"] = [[c, leak, d, x] for c, leak, d, x in remeasured]
    top = max(c for c, *_ in remeasured)
    contrast, _, duration, amp = min((r for r in remeasured if r[0] >= top - CZ_CONTRAST_SLACK),
                                     key=lambda r: r[1])
    _finish_cz(kit, pair, flux_q, other, duration, rise, amp, shots, scan,
               span=CZ_FINAL_SPAN, within=False)


def _crossings_of_pi(kit: Kit, flux_q: int, other: int, duration: int, rise: float,
                     amps: np.ndarray, shots: int) -> tuple[np.ndarray, np.ndarray, list]:
    """The conditional phase (rad, in [0, 2 pi)) and partner contrast at each of ``amps`` for a
    flat top of ``duration`` samples, and the crossings of pi between neighbouring amplitudes
    as (contrast, duration, amplitude), the amplitude interpolated linearly."""
    results = _cz_phase_scan(kit, flux_q, other, duration, rise, amps, shots, balanced=False)
    cond = np.mod(np.array([r[f"{other}|1"][0] - r[f"{other}|0"][0] for r in results]),
                  2 * np.pi)
    contrast = np.array([r[f"{other}|1"][1] for r in results])
    found = []
    for i in range(len(amps) - 1):
        lo, hi = cond[i] - np.pi, cond[i + 1] - np.pi
        if lo * hi <= 0 and abs(cond[i] - cond[i + 1]) < np.pi:
            x = amps[i] + (amps[i + 1] - amps[i]) * lo / (lo - hi)
            found.append(((contrast[i] + contrast[i + 1]) / 2, duration, float(x)))
    return cond, contrast, found


def _eligible(crossings: list, screen: list[float]) -> list[tuple[float, int, float]]:
    """(leakage, duration, amplitude) of the crossings within CZ_SCREEN_SLACK of the best
    contrast, least leakage first."""
    best = max(c for c, _, _ in crossings)
    return sorted((leak, d, x) for (c, d, x), leak in zip(crossings, screen, strict=True)
                  if c >= best - CZ_SCREEN_SLACK)


def refine_cz(kit: Kit, pair: tuple[int, int], shots: int) -> None:
    """Refine the calibrated CZ on ``pair`` (the graph's refinement of the cz node, about 20
    times cheaper than :func:`cz`: drift moves the conditional and local phases, rarely the
    choice of pulse): its flux qubit, duration and rise kept, the
    amplitude of a conditional phase of pi found again within +-:data:`CZ_REFINE_SPAN` of the
    old one, and the phase corrections measured again. ``FitError`` when the crossing is not
    in that span or the partner's contrast fell more than :data:`CZ_CONTRAST_SLACK` below the
    calibrated one (leakage or a collision: the whole scan is needed)."""
    lo_q, hi_q = sorted(pair)
    p = kit.work.pairs[(lo_q, hi_q)]
    flux_q = int(p["cz_flux_qubit"])
    other = hi_q if flux_q == lo_q else lo_q
    _finish_cz(kit, pair, flux_q, other, kit.samples(p["cz_duration_s"]),
               p["cz_rise_s"] * kit.fs, p["cz_amplitude"], shots,
               {"refined_from": p["cz_amplitude"]}, span=CZ_REFINE_SPAN, within=True,
               old_contrast=p.get("cz_conditional_contrast"))


def _finish_cz(kit: Kit, pair: tuple[int, int], flux_q: int, other: int, duration: int,
               rise: float, amp: float, shots: int, scan: dict, *, span: float,
               within: bool, old_contrast: float | None = None) -> float:
    """The amplitude of the pulse (``duration`` samples, ``rise`` samples) refined by a line
    through the conditional phase at 9 amplitudes within +-``span`` of ``amp`` (``within``:
    the crossing must lie in them), the phase corrections measured, recorded and set; returns
    the contrast. ``FitError`` when the contrast is more than CZ_CONTRAST_SLACK below
    ``old_contrast``."""
    amps = amp + np.linspace(-span, span, 9)
    results = _cz_phase_scan(kit, flux_q, other, duration, rise, amps, shots * CZ_LINE_SHOTS)
    cond = np.unwrap([r[f"{other}|1"][0] - r[f"{other}|0"][0] for r in results])
    cond = np.mod(cond, 2 * np.pi) - np.pi  # conditional phase - pi, in [-pi, pi)
    amp, amp_err, line = zero_crossing(amps, cond, f"edge {pair} CZ amplitude",
                                       within=within)
    final_p1, labels = _cz_phase_p1(kit, flux_q, other, duration, rise, [amp], shots * 4)
    final = cz_phases_from_p1(final_p1, labels)[0]
    contrast = final[f"{other}|1"][1]
    if old_contrast is not None and contrast < old_contrast - CZ_CONTRAST_SLACK:
        raise FitError(f"partner contrast {contrast:.3f} is below the calibrated "
                       f"{old_contrast:.3f}", subject=f"edge {pair}")
    lo_q, hi_q = sorted(pair)
    phase_a, phase_b = cz_corrections(final, pair, flux_q)
    exp = kit.record(
        "cz", (lo_q, hi_q),
        {"cz_amplitude": (amp, amp_err), "cz_duration_s": (duration / kit.fs, None),
         "cz_phase_a_rad": (phase_a, None), "cz_phase_b_rad": (phase_b, None),
         "cz_conditional_contrast": (contrast, None)},
        {"x": amps, "x_label": f"flux pulse amplitude on qubit {flux_q} (full scale)",
         "y_label": "conditional phase - pi (rad)",
         "series": {f"pulse of {duration / kit.fs * 1e9:g} ns ({duration} samples)": cond},
         "scan": scan, "final": final,
         # the phase corrections' data: corrected P(1), (target, partner state) x analysis
         # phase (BALANCED_PHASES), for refit()
         "final_p1": final_p1[:, :, 0], "final_labels": labels},
        fit=line.quality(), curves={"line": line.sampled(amps)},
        chosen="cz_amplitude",
        settings={"shots": shots, "flux_qubit": flux_q, "rise_samples": rise})
    kit.work.set_pair((lo_q, hi_q), "cz_flux_qubit", flux_q, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_amplitude", amp, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_duration_s", duration / kit.fs, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_rise_s", rise / kit.fs, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_phase_a_rad", phase_a, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_phase_b_rad", phase_b, exp)
    kit.work.set_pair((lo_q, hi_q), "cz_conditional_contrast", contrast, exp)
    return contrast
