"""Readout calibration: the readout frequency, amplitude and duration that maximise assignment
fidelity, then the discriminator and the assignment matrix.

Assignment fidelity rises with the tone's amplitude (the |0> and |1> responses separate) until
measurement-induced transitions set in, and where they set in depends on how many photons the
tone puts in the resonator, i.e. on its detuning from the resonator: the optimum is a ridge
in (frequency, amplitude), not a point on either axis. So the readout node measures the
fidelity on a grid of both (:func:`fidelity_map`), smooths it, and keeps the smallest amplitude
whose smoothed fidelity is within :data:`READOUT_FIDELITY_SLACK` of the best
(:func:`choose_readout_point`): fewest photons, furthest from the transitions.

The duration is a trade too: a longer window integrates more signal against the amplifier's
noise, but |1> decays while it is read (T1) and the resonator needs its ring-up. At the chosen
frequency and amplitude the node measures the fidelity at each of :data:`READOUT_DURATIONS_S`
and keeps the shortest whose fidelity (smoothed over neighbours) is within
:data:`READOUT_DURATION_SLACK` of the best (:func:`choose_readout_duration`). The two depend on
each other (a stronger tone wants a shorter window, a shorter window a stronger tone), so the
amplitude is chosen again on a line at the chosen window (:data:`READOUT_LINE_SHOTS` times the
map's shots, within :data:`READOUT_LINE_SLACK`), then the window at that amplitude, until the
window stays at an amplitude a line chose, the amplitude is within the line's slack of its best
(a step would gain less than the noise can show; the amplitude, whose window was just
scanned, is kept), or the search returns to a point chosen before (at most
:data:`READOUT_ROUNDS` rounds). Then single shots at that point give the discriminator centres,
the assignment matrix and the fidelity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from labqpu.calibration.bootstrap import _prepared_readouts, resonator_spectroscopy
from labqpu.calibration.experiments import FitError, Kit, assignment, complex_median

#: Readout detunings the calibration sweeps (Hz), from the measured resonator frequency (or,
#: without one, from the current readout frequency), and how far they reach either side.
READOUT_DETUNINGS_HZ = np.linspace(-3e6, 3e6, 13)
READOUT_SPAN_HZ = float(np.abs(READOUT_DETUNINGS_HZ).max())
#: Detunings added beyond an edge of the readout map (in the map's step) when the chosen
#: frequency lies on that edge, and how many times at most: far below the resonator a stronger
#: tone reads as well, so the ridge of good points can run past the map, and a choice on the
#: edge says nothing of what lies beyond it. Two extensions reach 5 MHz past an edge.
READOUT_EXTENSION_POINTS = 5
READOUT_EXTENSIONS = 2
#: How far from the resonator the readout node may choose (Hz): its map's span and the
#: extensions' reach. A calibrated readout frequency this close to a newly measured resonator
#: stays (:func:`resonator_and_discriminator`).
READOUT_REACH_HZ = READOUT_SPAN_HZ + READOUT_EXTENSIONS * READOUT_EXTENSION_POINTS * float(
    READOUT_DETUNINGS_HZ[1] - READOUT_DETUNINGS_HZ[0])
#: Readout amplitudes the calibration sweeps (full scale).
READOUT_AMPLITUDES = np.linspace(0.2, 1.0, 13)
#: How far below the best smoothed assignment fidelity the chosen point may be.
READOUT_FIDELITY_SLACK = 0.005
#: Assignment fidelity below which a sweep has found no readout at all.
READOUT_FIDELITY_FLOOR = 0.75
#: Width of the smoothing of the fidelity map (grid points).
READOUT_SMOOTHING = 0.7
#: Readout windows the calibration compares (s).
READOUT_DURATIONS_S = np.array([0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0]) * 1e-6
#: How far below the best (smoothed) fidelity the chosen, shortest duration may be.
READOUT_DURATION_SLACK = 0.003
#: Most rounds of (window at the amplitude, amplitude at the window) before the readout
#: calibration keeps what it has (the records say whether it converged).
READOUT_ROUNDS = 3
#: Shots of the amplitude line scanned again at a new window, as a multiple of the map's shots
#: per point. The line decides the amplitude, and with the map's shots its noise (~0.003 in
#: fidelity per point) sometimes let an amplitude one step below the optimum pass the slack;
#: 13 points at 4x cost a third of the 169-point map.
READOUT_LINE_SHOTS = 4
#: How far below the line's best smoothed fidelity the amplitude chosen on the line may be: the
#: map's slack scaled to the line's noise (READOUT_LINE_SHOTS times the shots, half the noise).
#: With the map's slack, an amplitude one step below the optimum (0.006-0.011 lower) passed in
#: about one search in ten.
READOUT_LINE_SLACK = READOUT_FIDELITY_SLACK / READOUT_LINE_SHOTS ** 0.5

__all__ = ["READOUT_AMPLITUDES", "READOUT_DETUNINGS_HZ", "READOUT_DURATIONS_S",
           "READOUT_DURATION_SLACK", "READOUT_EXTENSIONS", "READOUT_EXTENSION_POINTS",
           "READOUT_FIDELITY_FLOOR", "READOUT_FIDELITY_SLACK", "READOUT_LINE_SLACK",
           "READOUT_REACH_HZ", "READOUT_ROUNDS", "READOUT_SPAN_HZ", "assignment_fidelity_of",
           "bracketed_readout_point", "choose_readout_duration", "choose_readout_point",
           "discriminate", "duration_scan", "fidelity_map", "readout",
           "resonator_and_discriminator"]


def assignment_fidelity_of(iq0: np.ndarray, iq1: np.ndarray) -> float:
    """Assignment fidelity of single shots after |0> and after |1>, each shot assigned to the
    nearer of the two medians."""
    return assignment(iq0, iq1, complex_median(iq0), complex_median(iq1))[2]


def fidelity_map(kit: Kit, q: int, freqs: np.ndarray, amps: np.ndarray,
                 shots: int) -> np.ndarray:
    """Assignment fidelity of qubit ``q`` read at each frequency (Hz, rows) and amplitude
    (full scale, columns), ``shots`` single shots per state and point, in one sweep."""
    return _fidelities(kit, q, "readout_amplitude", np.tile(amps, len(freqs)),
                       np.repeat(freqs, len(amps)), shots).reshape(len(freqs), len(amps))


def duration_scan(kit: Kit, q: int, durations_s: np.ndarray, shots: int) -> np.ndarray:
    """Assignment fidelity of qubit ``q`` read with each window of ``durations_s`` (s) at its
    working readout frequency and amplitude, ``shots`` single shots per state and duration."""
    return _fidelities(kit, q, "readout_duration_s", durations_s, None, shots)


def _fidelities(kit: Kit, q: int, name: str, values: np.ndarray, freqs: np.ndarray | None,
                shots: int) -> np.ndarray:
    """Assignment fidelity of qubit ``q`` read with its working value ``name`` set to each of
    ``values`` in turn (and the readout frequency to ``freqs``, Hz, point by point; None: the
    working one): the |0> and |1> programs of every point in one run, the working value
    restored afterwards."""
    work = kit.work.qubits[q]
    old = work.get(name, kit.work.device[name])
    progs = []
    try:
        for k, value in enumerate(values):
            work[name] = float(value)
            progs += _prepared_readouts(kit, q, work["pi_amplitude"],
                                        None if freqs is None else float(freqs[k]))
    finally:
        work[name] = old
    iq = kit.run_iq(progs, shots, single=True)[:, :, 0]
    return np.array([assignment_fidelity_of(iq[k], iq[k + 1]) for k in range(0, len(progs), 2)])


def choose_readout_duration(fidelity: np.ndarray, what: str) -> tuple[int, np.ndarray]:
    """Pure analysis of a duration scan (durations ascending): the fidelities smoothed over
    neighbours (a three-point mean, two at the ends) and the index of the shortest duration
    within :data:`READOUT_DURATION_SLACK` of the best. ``FitError`` naming ``what`` when the
    best is below :data:`READOUT_FIDELITY_FLOOR`."""
    f = np.asarray(fidelity, dtype=float)
    smooth = np.array([f[max(i - 1, 0):i + 2].mean() for i in range(f.size)])
    best = float(smooth.max())
    if best < READOUT_FIDELITY_FLOOR:
        raise FitError(f"{what}: the best assignment fidelity of the duration scan is "
                       f"{best:.3f}, below {READOUT_FIDELITY_FLOOR}: no readout")
    return int(np.argmax(smooth >= best - READOUT_DURATION_SLACK)), smooth


def _within_slack(smooth: np.ndarray, grid: np.ndarray, value: float, slack: float) -> bool:
    """Whether ``value`` is a point of ``grid`` whose smoothed fidelity ``smooth`` is within
    ``slack`` of the best: a step away from it would gain less than the noise can show."""
    at = np.flatnonzero(np.isclose(grid, value, rtol=1e-9, atol=0.0))
    return bool(at.size) and float(smooth[at[0]]) >= float(smooth.max()) - slack


def choose_line_amplitude(line: np.ndarray, amplitudes: np.ndarray, scanned_amplitude: float,
                          what: str, slack: float = READOUT_LINE_SLACK
                          ) -> tuple[float, np.ndarray]:
    """Pure analysis of an amplitude line (fidelity against ``amplitudes``, ascending) measured
    with the window chosen at ``scanned_amplitude``: (the amplitude to keep, the smoothed line).
    ``scanned_amplitude`` itself when its smoothed fidelity is within ``slack`` of the line's
    best (a step would gain less than the noise can show, and its window is the one just
    scanned), else the smallest amplitude within ``slack`` of the best
    (:func:`choose_readout_point`). The readout node and its refit both decide through here."""
    _, i_line, smooth = choose_readout_point(np.asarray(line, dtype=float)[None, :], what,
                                             slack)
    if _within_slack(smooth[0], amplitudes, scanned_amplitude, slack):
        return float(scanned_amplitude), smooth[0]
    return float(amplitudes[i_line]), smooth[0]


def choose_readout_point(fidelity: np.ndarray, what: str,
                         slack: float = READOUT_FIDELITY_SLACK) -> tuple[int, int, np.ndarray]:
    """Pure analysis of a fidelity map (frequencies x amplitudes, amplitudes ascending): the
    map smoothed (Gaussian, :data:`READOUT_SMOOTHING` grid points) and the (frequency index,
    amplitude index) of the smallest amplitude whose smoothed fidelity is within ``slack`` of
    its maximum (the best such frequency). ``FitError``
    naming ``what`` when the best is below :data:`READOUT_FIDELITY_FLOOR`."""
    smooth = gaussian_filter(np.asarray(fidelity, dtype=float), READOUT_SMOOTHING,
                             mode="nearest")
    best = float(smooth.max())
    if best < READOUT_FIDELITY_FLOOR:
        raise FitError(f"{what}: the best assignment fidelity of the readout sweep is "
                       f"{best:.3f}, below {READOUT_FIDELITY_FLOOR}: no readout")
    near = smooth >= best - slack
    i_amp = int(np.argmax(near.any(axis=0)))
    i_freq = int(np.argmax(np.where(near[:, i_amp], smooth[:, i_amp], -np.inf)))
    return i_freq, i_amp, smooth


def bracketed_readout_point(freqs: np.ndarray, fidelity: np.ndarray,
                            measure: Callable[[np.ndarray], np.ndarray], what: str
                            ) -> tuple[np.ndarray, np.ndarray, int, int, np.ndarray, int]:
    """:func:`choose_readout_point` on a fidelity map over ``freqs`` (Hz, ascending, evenly
    spaced; rows of ``fidelity``), extended while the chosen frequency lies on an edge of the
    map: :data:`READOUT_EXTENSION_POINTS` more frequencies beyond that edge, their rows from
    ``measure(frequencies)``, at most :data:`READOUT_EXTENSIONS` times. Returns the
    frequencies and the map as extended, the (frequency, amplitude) indices chosen on it, the
    smoothed map and the number of extensions."""
    freqs, fidelity = np.asarray(freqs, dtype=float), np.asarray(fidelity, dtype=float)
    i_f, i_a, smooth = choose_readout_point(fidelity, what)
    extensions = 0
    while extensions < READOUT_EXTENSIONS and i_f in (0, freqs.size - 1):
        below = i_f == 0
        ahead = float(freqs[1] - freqs[0]) * np.arange(1, READOUT_EXTENSION_POINTS + 1)
        more = freqs[0] - ahead[::-1] if below else freqs[-1] + ahead
        rows = measure(more)
        freqs = np.concatenate([more, freqs] if below else [freqs, more])
        fidelity = np.vstack([rows, fidelity] if below else [fidelity, rows])
        extensions += 1
        i_f, i_a, smooth = choose_readout_point(fidelity, what)
    return freqs, fidelity, i_f, i_a, smooth, extensions


def readout(kit: Kit, q: int, shots: int) -> None:
    """Readout frequency and amplitude (:func:`choose_readout_point` on a
    :func:`fidelity_map` with ``2 shots`` per state and point, centred on the resonator that
    resonator spectroscopy measured, so that recalibrations in a row cannot walk the frequency
    away from it; on the current readout frequency when no measured resonator is known;
    extended past an edge the choice lies on: :func:`bracketed_readout_point`), then
    in turn the window at that amplitude (:func:`choose_readout_duration` on a
    :func:`duration_scan`, as many shots) and the amplitude again on a line at the chosen
    frequency and window (:data:`READOUT_LINE_SHOTS` times the shots, decided within
    :data:`READOUT_LINE_SLACK`: :func:`choose_line_amplitude`), until the window stays at an
    amplitude a line chose, the amplitude is within the line's slack of its best (it is kept),
    the search returns to a point chosen before, or :data:`READOUT_ROUNDS` rounds have run (the
    records' settings say how many and whether it converged); then discriminator centres,
    assignment matrix and fidelity from ``4 shots`` single shots per state. The amplitude is
    always decided on a line: the map's noise and slack let an amplitude one step below the
    optimum through."""
    work = kit.work.qubits[q]
    old_f = work["readout_frequency_hz"]
    old_amp = kit.readout_amplitude(q)
    measured = (q, "resonator_hz") in kit.work.records
    freqs = (work["resonator_hz"] if measured else old_f) + READOUT_DETUNINGS_HZ
    freqs, fidelity, i_f, i_a, smooth, extensions = bracketed_readout_point(
        freqs, fidelity_map(kit, q, freqs, READOUT_AMPLITUDES, shots * 2),
        lambda more: fidelity_map(kit, q, more, READOUT_AMPLITUDES, shots * 2),
        f"qubit {q} readout")
    best_f, amp = float(freqs[i_f]), float(READOUT_AMPLITUDES[i_a])
    sweep_raw = {"frequencies_hz": freqs, "amplitudes": READOUT_AMPLITUDES,
                 "fidelity_map": fidelity}
    settings = {"shots_per_state_and_point": shots * 2, "slack": READOUT_FIDELITY_SLACK,
                "smoothing_points": READOUT_SMOOTHING, "map_extensions": extensions}
    work["readout_amplitude"] = amp
    work["readout_frequency_hz"] = best_f
    old_duration = work.get("readout_duration_s", kit.work.device["readout_duration_s"])
    duration = old_duration
    line, line_smooth = fidelity[i_f], smooth[i_f]
    rounds, converged = 0, False
    durations = kit.on_samples(READOUT_DURATIONS_S)
    visited = {(amp, duration)}
    while rounds < READOUT_ROUNDS and not converged:
        # the window at this amplitude, then the amplitude at that window, until the window
        # stays at an amplitude a line chose, the amplitude step would gain nothing (the
        # amplitude is within the slack of the line's best: the fidelity is flat there within
        # the noise, and the windows would otherwise wander along their flat part; the
        # amplitude is kept, since its window was just scanned) or the search returns to a
        # point already chosen (two neighbouring points the noise cannot tell apart would
        # alternate). A stronger tone wants a shorter window, a shorter window a stronger tone.
        rounds += 1
        work["readout_amplitude"] = scan_amp = amp
        by_duration = duration_scan(kit, q, durations, shots * 2)
        i_d, smooth_d = choose_readout_duration(by_duration, f"qubit {q} readout")
        converged = float(durations[i_d]) == duration
        duration = float(durations[i_d])
        work["readout_duration_s"] = duration
        if (converged or (amp, duration) in visited) and "amplitude_line" in sweep_raw:
            converged = True
            break
        visited.add((amp, duration))
        line = fidelity_map(kit, q, np.array([best_f]), READOUT_AMPLITUDES,
                            shots * 2 * READOUT_LINE_SHOTS)[0]
        sweep_raw["amplitude_line"] = line
        sweep_raw["line_scanned_amplitude"] = amp  # what the refit needs to decide the same
        chosen, line_smooth = choose_line_amplitude(line, READOUT_AMPLITUDES, amp,
                                                    f"qubit {q} readout")
        if chosen == amp:
            converged = True  # keep the amplitude whose window was just scanned
            break
        amp = chosen
        converged = (amp, duration) in visited
        visited.add((amp, duration))
    step = np.diff(durations)
    duration_id = kit.record(
        "readout_duration", q,
        {"readout_duration_s": (duration, float(step[min(i_d, step.size - 1)]) / 2)},
        {"x": durations, "x_label": "readout window (s)",
         "y_label": "assignment fidelity",
         "series": {f"at {best_f / 1e9:.5f} GHz, amplitude {scan_amp:.3f}": by_duration},
         "durations_s": durations, "fidelity": by_duration},
        curves={"smoothed": {"x": durations, "y": smooth_d}},
        chosen="readout_duration_s", old={"readout_duration_s": old_duration},
        settings={"shots_per_state_and_point": shots * 2, "slack": READOUT_DURATION_SLACK,
                  "rounds": rounds, "converged": converged})
    work["readout_duration_s"] = duration
    settings = {**settings, "rounds": rounds, "converged": converged,
                "line_shots_per_state_and_point": shots * 2 * READOUT_LINE_SHOTS,
                "line_slack": READOUT_LINE_SLACK}
    amp_id = kit.record(
        "readout_amplitude", q,
        {"readout_amplitude": (amp, float(READOUT_AMPLITUDES[1] - READOUT_AMPLITUDES[0]) / 2)},
        {"x": READOUT_AMPLITUDES, "x_label": "readout amplitude (full scale)",
         "y_label": "assignment fidelity",
         "series": {f"at {best_f / 1e9:.5f} GHz, window {duration * 1e6:.2f} µs": line},
         **sweep_raw},
        curves={"smoothed": {"x": READOUT_AMPLITUDES, "y": line_smooth}},
        chosen="readout_amplitude", old={"readout_amplitude": old_amp}, settings=settings)
    work["readout_amplitude"] = amp
    shots_raw, values, centres = _single_shots(kit, q, shots * 4)
    rid = kit.record(
        "readout", q,
        {"readout_frequency_hz": (best_f, float(freqs[1] - freqs[0]) / 2), **values},
        {"x": freqs, "x_label": "readout frequency (Hz)", "y_label": "assignment fidelity",
         "series": {f"at amplitude {READOUT_AMPLITUDES[i_a]:.3f}, window "
                    f"{old_duration * 1e6:.2f} µs": fidelity[:, i_a]}, **sweep_raw,
         **shots_raw},
        curves={"smoothed": {"x": freqs, "y": smooth[:, i_a]}},
        chosen="readout_frequency_hz", old={"readout_frequency_hz": old_f},
        settings={**settings, "shots": shots * 4})
    kit.work.set(q, "readout_amplitude", amp, amp_id)
    kit.work.set(q, "readout_duration_s", duration, duration_id)
    kit.work.set(q, "readout_frequency_hz", best_f, rid)
    _set_discriminator(kit, q, centres, values, rid)


def _single_shots(kit: Kit, q: int, shots: int) -> tuple[dict, dict, tuple[complex, complex]]:
    """``shots`` single shots of |0> and of |1> (the calibrated pi pulse) at the working
    readout settings: their raw data for a record (the shots and the centres), the assignment
    values with their standard errors, and the centres (medians)."""
    iq = kit.run_iq(_prepared_readouts(kit, q, kit.work.qubits[q]["pi_amplitude"], None), shots,
                    single=True)[:, :, 0]
    c0, c1 = complex_median(iq[0]), complex_median(iq[1])
    p1_given0, p1_given1, fid = assignment(iq[0], iq[1], c0, c1)
    n = iq.shape[1]
    values = {
        "readout_assignment_fidelity": (
            fid, float(np.sqrt((p1_given0 * (1 - p1_given0)
                                + p1_given1 * (1 - p1_given1)) / n) / 2)),
        "p1_given_0": (float(p1_given0), float(np.sqrt(p1_given0 * (1 - p1_given0) / n))),
        "p1_given_1": (float(p1_given1), float(np.sqrt(p1_given1 * (1 - p1_given1) / n)))}
    raw = {"shots_0": [iq[0].real, iq[0].imag], "shots_1": [iq[1].real, iq[1].imag],
           "centers": [[c0.real, c0.imag], [c1.real, c1.imag]]}
    return raw, values, (c0, c1)


def _set_discriminator(kit: Kit, q: int, centres: tuple[complex, complex], values: dict,
                       rid: str) -> None:
    """Store the discriminator's centres, the assignment matrix and the fidelity of
    :func:`_single_shots` in the working set, as measured by record ``rid``."""
    c0, c1 = centres
    p1_given0, p1_given1 = values["p1_given_0"][0], values["p1_given_1"][0]
    matrix = [[1 - p1_given0, p1_given0], [1 - p1_given1, p1_given1]]
    kit.work.set(q, "discriminator", {"centers": [[float(c0.real), float(c0.imag)],
                                                  [float(c1.real), float(c1.imag)]]}, rid)
    kit.work.set(q, "assignment_matrix", [[float(v) for v in row] for row in matrix], rid)
    kit.work.set(q, "readout_assignment_fidelity", values["readout_assignment_fidelity"][0],
                 rid)


def discriminate(kit: Kit, q: int, shots: int) -> None:
    """The discriminator's centres, the assignment matrix and the fidelity measured again at
    the working readout settings (``shots`` single shots per state), recorded as kind
    ``discriminator``."""
    raw, values, centres = _single_shots(kit, q, shots)
    p1 = [values["p1_given_0"][0], values["p1_given_1"][0]]
    rid = kit.record(
        "discriminator", q, values,
        {"x": [0.0, 1.0], "x_ticks": ["|0>", "|1>"],
         "x_label": "state prepared", "y_label": "P(read 1) with the new centres",
         "y_range": [0.0, 1.0], "series": {"P(read 1)": p1}, **raw},
        settings={"shots": shots})
    _set_discriminator(kit, q, centres, values, rid)


def resonator_and_discriminator(kit: Kit, q: int, shots: int) -> None:
    """The graph's ``resonator_spectroscopy`` node: :func:`resonator_spectroscopy`; on a
    qubit read with a discriminator already, the readout frequency stays where the readout
    node chose it when it lies within that node's reach (:data:`READOUT_REACH_HZ`) of the new
    peak (a review's case: moved onto the peak, lab5's assignment fidelities fell from 0.98
    to 0.75-0.93), else it moves to the peak; then :func:`discriminate` at that frequency
    (4x ``shots`` per state), so that the store never holds a readout frequency with centres
    measured at another (a run that ends before the readout node, or without it, read |0> as
    1 on that qubit). The readout node later chooses its frequency, amplitude and window
    again, when its check fails or the resonator was measured after them."""
    calibrated = "discriminator" in kit.work.qubits[q]
    resonator_spectroscopy(kit, q, shots, keep_readout_within_hz=READOUT_REACH_HZ
                           if calibrated else 0.0)
    if calibrated:
        discriminate(kit, q, shots * 4)
