"""Cheap checks of calibrated values: a short measurement judged against a tolerance.

Before the runner recalibrates a value that is not too old, it checks it (Google's Optimus
"check data", QUAlibrate's check nodes): a few programs instead of a full sweep. Each check is
an acquisition through the public backend API followed by a pure analysis, and returns a
:class:`CheckResult`; it changes nothing. A check whose data do not fit raises ``FitError``,
which the runner treats as a failed check.

* pi amplitude: six amplitudes (0 and 0.8-1.2 x the calibrated pi amplitude); the fitted
  Rabi maximum must be within the tolerance (relative) of the calibrated value;
* frequency: one Ramsey fringe at a set detuning over 4 us; it must run at the detuning
  within the tolerance (Hz);
* T1: |1> after 0 and after T1, against |0>: the decay must be e^-1 within the tolerance,
  expressed as the T1 it implies (relative);
* readout: single shots of |0> and |1> with the calibrated discriminator; the assignment
  fidelity must not fall more than the tolerance below the calibrated one;
* CZ: the conditional phase and both single-qubit phases at the calibrated pulse must be pi
  and zero (after the corrections) within the tolerance (rad);
* drive LO: no measurement; every IF of the group must lie in the controllers' usable band;
* resonator: |0> read with no pulse; the shots' median must lie near the calibrated |0>
  centre (tolerance: a fraction of the distance between the two centres).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from labqpu.calibration.bootstrap import (
    _cz_phases,
    _prepared_readouts,
    _ramsey_frequency,
    drag_difference,
    drive_if_band_hz,
    ramsey_grids,
)
from labqpu.calibration.experiments import (
    Kit,
    assignment,
    complex_median,
    fit_curve,
    project,
    sweep,
    zero_crossing,
)
from labqpu.errors import FitError


@dataclass(frozen=True)
class CheckResult:
    """What a check measured (``measured``) against the calibrated expectation
    (``expected``), in ``unit``; ``passed`` when within ``tolerance``. ``what`` names the value
    in the summary: "measured", or what a check that measures nothing computed. A check of a
    band (``band``: True) states it as expected +- tolerance."""

    passed: bool
    measured: float
    expected: float
    tolerance: float
    unit: str
    what: str = "measured"
    band: bool = False

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.band:
            return (f"{self.what} {self.measured:.6g}{unit}, "
                    f"{'inside' if self.passed else 'outside'} the band "
                    f"{self.expected - self.tolerance:.6g}..{self.expected + self.tolerance:.6g}"
                    f"{unit}")
        verdict = "within" if self.passed else "outside"
        return (f"{self.what} {self.measured:.6g}{unit}, expected {self.expected:.6g}, "
                f"{verdict} tolerance {self.tolerance:g}")


def _judge(measured: float, expected: float, tolerance: float, unit: str, *,
           relative: bool = False, what: str = "measured") -> CheckResult:
    error = abs(measured / expected - 1) if relative else abs(measured - expected)
    return CheckResult(bool(error <= tolerance), float(measured), float(expected), tolerance,
                       unit, what)


# ---------------------------------------------------------------- pure analyses


def fit_pi_amplitude(amps: np.ndarray, signal: np.ndarray, what: str) -> float:
    """Amplitude of the Rabi maximum from a few points around it: ``signal = offset +
    height sin^2(pi a / (2 a_pi))`` fitted with ``a_pi`` free (the sign of the signal is
    arbitrary). FitError when the fit fails or ``a_pi`` leaves the measured range."""
    amps = np.asarray(amps, dtype=float)
    signal = np.asarray(signal, dtype=float)

    def model(a, a_pi, height, offset):
        return offset + height * np.sin(np.pi * a / (2 * a_pi)) ** 2

    top = amps[int(np.argmax(np.abs(signal - signal[0])))]
    p0 = [top, signal[np.argmax(np.abs(signal - signal[0]))] - signal[0], signal[0]]
    try:
        fit = fit_curve(model, amps, signal, p0, 20000, ("a_pi", "height", "offset"))
    except RuntimeError as exc:
        raise FitError(f"pi-amplitude fit failed: {exc}", subject=what) from exc
    a_pi = abs(fit.params["a_pi"])
    nonzero = amps[amps > 0]
    if not nonzero.min() <= a_pi <= nonzero.max():
        raise FitError(f"Rabi maximum at {a_pi:.4g} lies outside the measured amplitudes "
                       f"{nonzero.min():.4g}-{nonzero.max():.4g}", subject=what)
    return a_pi


def t1_from_decay(t1_s: float, ground: complex, excited: complex, decayed: complex,
                  what: str) -> float:
    """T1 (s) implied by the signal after a wait of ``t1_s``: ``decayed`` between the
    ``excited`` (no wait) and ``ground`` signals, assuming an exponential decay."""
    ratio = ((decayed - ground) / (excited - ground)).real
    if not 0 < ratio < 1:
        raise FitError(f"T1 check: the signal after {t1_s:.3g} s is at {ratio:.3g} of |1>, "
                       "not between |0> and |1>", subject=what)
    return t1_s / -math.log(ratio)


def assignment_fidelity(iq0: np.ndarray, iq1: np.ndarray, centres: list) -> float:
    """Assignment fidelity of single shots prepared in |0> (``iq0``) and |1> (``iq1``) with
    the nearest of the two discriminator ``centres`` ([[I0, Q0], [I1, Q1]])."""
    (i0, q0), (i1, q1) = centres
    return assignment(iq0, iq1, complex(i0, q0), complex(i1, q1))[2]


def wrap(phase_rad: float) -> float:
    """``phase_rad`` in [-pi, pi)."""
    return float(np.mod(phase_rad + np.pi, 2 * np.pi) - np.pi)


# ---------------------------------------------------------------- acquisitions


def measure_pi_amplitude(kit: Kit, q: int, shots: int) -> float:
    """The Rabi maximum near the calibrated pi amplitude (:func:`fit_pi_amplitude` of six
    amplitudes: 0 and 0.8-1.2 x ``pi_amplitude``)."""
    pi = kit.work.qubits[q]["pi_amplitude"]
    amps = pi * np.array([0.0, 0.8, 0.9, 1.0, 1.1, 1.2])
    amps = amps[amps < 1.0]
    iq = kit.run_iq(sweep(kit, q, amps, lambda b, a: kit.drive(b, q, 0, a)), shots)[:, 0]
    return fit_pi_amplitude(amps, project(iq), f"qubit {q} pi amplitude")


def check_pi_amplitude(kit: Kit, q: int, shots: int, tolerance: float) -> CheckResult:
    """The calibrated pi amplitude against the measured Rabi maximum (relative tolerance)."""
    measured = measure_pi_amplitude(kit, q, shots)
    return _judge(measured, kit.work.qubits[q]["pi_amplitude"], tolerance, "full scale",
                  relative=True)


#: The DRAG check's betas either side of the calibrated one (s: 0.5 samples at 1 GS/s). A
#: beta is stored in samples, but its right value is a time (about -0.3 ns on lab5): spans in
#: samples shrank in time on a faster controller (a review at 2 GS/s: 8 of 40 checks failed).
DRAG_CHECK_SPAN_S = 0.5e-9


def check_drag_beta(kit: Kit, q: int, shots: int, tolerance_s: float) -> CheckResult:
    """The calibrated DRAG beta (samples) against where X180.Y90 - Y180.X90 crosses zero,
    measured at it and :data:`DRAG_CHECK_SPAN_S` either side (FitError when the crossing lies
    outside those three: a beta far off); ``tolerance_s`` in seconds, judged in samples of the
    controller's rate."""
    beta = kit.work.qubits[q]["drag_beta"]
    betas = beta + DRAG_CHECK_SPAN_S * kit.fs * np.array([-1.0, 0.0, 1.0])
    diff, _ = drag_difference(kit, q, shots, betas)
    measured = zero_crossing(betas, diff, f"qubit {q} DRAG beta")[0]
    return _judge(measured, beta, tolerance_s * kit.fs, "samples")


def check_frequency(kit: Kit, q: int, shots: int, tolerance_hz: float,
                    detuning_hz: float = 1.5e6) -> CheckResult:
    """Ramsey fringes at +``detuning_hz`` (sampled every 100 ns) and at -``detuning_hz``
    (every 64 ns: :func:`~labqpu.calibration.bootstrap.ramsey_grids`): both run at
    the detuning only when the calibrated frequency is right (Hz); the result is the one
    farther from it. One fringe is not enough: for a frequency error s (in the drive's sense)
    it runs at |s + d|, which an error of s = -2d folds back onto d exactly (a qubit 3 MHz off
    would pass), and so does one grid: fringes sampled every 100 ns fold an error of any
    multiple of 10 MHz onto none. On the two grids, no error within +-60 MHz but 0 gives d
    in both."""
    fringes = [_ramsey_frequency(kit, q, shots, sign * detuning_hz, delays)[0]
               for sign, delays in zip((1, -1), ramsey_grids(kit, 41, 63), strict=True)]
    worst = max(fringes, key=lambda f: abs(f - detuning_hz))
    return _judge(worst, detuning_hz, tolerance_hz, "Hz")


def check_t1(kit: Kit, q: int, shots: int, tolerance: float) -> CheckResult:
    """|1> after no wait and after the calibrated T1, against |0>: the T1 this implies
    (relative tolerance)."""
    t1_s = kit.work.qubits[q]["t1_s"]
    pi = kit.work.qubits[q]["pi_amplitude"]
    wait = float(kit.on_grid(np.array([t1_s]))[0])
    progs = []
    for amplitude, tau in ((0.0, 0.0), (pi, 0.0), (pi, wait)):
        b = kit.builder([q])
        kit.readout(b, q, kit.drive(b, q, 0, amplitude) + kit.samples(tau), 0)
        progs.append(b.build(num_clbits=1))
    iq = kit.run_iq(progs, shots)[:, 0]
    measured = t1_from_decay(wait, iq[0], iq[1], iq[2], f"qubit {q}")
    return _judge(measured, t1_s, tolerance, "s", relative=True)


def check_resonator(kit: Kit, q: int, shots: int, tolerance: float) -> CheckResult:
    """Qubit ``q`` read in |0> (no pulse) at the calibrated readout: how far the median of the
    single shots lies from the calibrated discriminator's |0> centre, in distances between its
    two centres. It needs no drive, so it runs before every drive node: a readout tone off the
    resonator fails here, not as a Rabi fit that finds no contrast. On lab5's five qubits as
    calibrated 0.003-0.02; with the readout 0.5 MHz off 0.10-0.30, 1 MHz off 0.19-0.66, 20
    MHz off 0.71-0.83 (2000 shots)."""
    if "discriminator" not in kit.work.qubits[q]:
        raise FitError(f"qubit {q} has no calibrated discriminator to read |0> against")
    c0, c1 = kit.centres()[q]
    b = kit.builder([q])
    kit.readout(b, q, 0, 0)
    iq = kit.run_iq([b.build(num_clbits=1)], shots, single=True)[0, :, 0]
    off = abs(complex_median(iq) - c0) / abs(c1 - c0)
    return CheckResult(bool(off <= tolerance), float(off), 0.0, tolerance,
                       "x the |0>-|1> distance from its calibrated centre", what="|0> read at")


def check_readout(kit: Kit, q: int, shots: int, tolerance: float) -> CheckResult:
    """Assignment fidelity with the calibrated discriminator, against the calibrated one."""
    p = kit.work.qubits[q]
    iq = kit.run_iq(_prepared_readouts(kit, q, p["pi_amplitude"], None), shots,
                    single=True)[:, :, 0]
    measured = assignment_fidelity(iq[0], iq[1], p["discriminator"]["centers"])
    expected = p["readout_assignment_fidelity"]
    return CheckResult(bool(measured >= expected - tolerance), measured, expected, tolerance,
                       "")


def check_cz(kit: Kit, pair: tuple[int, int], shots: int, tolerance_rad: float) -> CheckResult:
    """Conditional phase and both corrected single-qubit phases of the calibrated CZ; the
    result's ``measured`` is the largest deviation (rad) from pi and from zero, and its
    ``what`` says which it is."""
    lo, hi = pair
    p = kit.work.pairs[pair]
    flux_q = p["cz_flux_qubit"]
    other = hi if flux_q == lo else lo
    duration = kit.samples(p["cz_duration_s"])
    phases = _cz_phases(kit, flux_q, other, duration, p["cz_rise_s"] * kit.fs,
                        p["cz_amplitude"], shots)
    conditional = phases[f"{other}|1"][0] - phases[f"{other}|0"][0]
    deviations = {"conditional phase - pi": wrap(conditional - np.pi),
                  f"qubit {lo}'s corrected phase": wrap(phases[f"{lo}|0"][0]
                                                        + p["cz_phase_a_rad"]),
                  f"qubit {hi}'s corrected phase": wrap(phases[f"{hi}|0"][0]
                                                        + p["cz_phase_b_rad"])}
    name = max(deviations, key=lambda k: abs(deviations[k]))
    return _judge(abs(deviations[name]), 0.0, tolerance_rad, "rad",
                  what=f"largest deviation, {name}:")


def check_drive_lo(kit: Kit, q: int) -> CheckResult:
    """No measurement: qubit ``q``'s drive IF (Hz) must lie in the band of
    :func:`~labqpu.calibration.bootstrap.drive_if_band_hz` at the controller's rate."""
    p = kit.work.qubits[q]
    if_hz = p["frequency_hz"] - p["drive_lo_frequency_hz"]
    lo, hi = drive_if_band_hz(kit.fs)
    middle = (lo + hi) / 2
    judged = _judge(if_hz, middle, (hi - lo) / 2, "Hz",
                    what="drive IF (no measurement: the calibrated frequency less the LO's)")
    return dataclasses.replace(judged, band=True)

