"""Error-amplifying fine amplitude calibration of the pi and pi/2 pulses.

A Rabi fit pins the pi amplitude to about 1 %; repeating the pulse multiplies its rotation
error until it is large enough to measure, so the amplitude settles to well below 0.2 %.

Each sequence puts the qubit on the equator when the pulses are exact and turns it away from
the equator by ``N * eps`` when each of its ``N`` repeated pulses over-rotates by ``eps`` (rad):

* pi pulse: a pi/2 pulse, then ``N = 0, 2, 4 ...`` pi pulses (an even number, so they cancel);
* pi/2 pulse: ``N = 1, 5, 9 ...`` pi/2 pulses (``N = 4m + 1``: a quarter turn plus whole
  turns).

Both give ``P(1) = 1/2 + 1/2 sin(phi0 + N eps)``, whatever the sense of rotation; ``phi0``
absorbs the error of the pi/2 pulse that starts the pi sequence. The fit keeps
``|phi0| < pi/2``, because ``sin(phi0 + N eps) = sin(pi - phi0 - N eps)`` would otherwise leave
the sign of ``eps`` ambiguous. Offset and contrast are not free: with them, a nearly straight
line of data is fitted equally well by many (contrast, ``eps``) pairs. Decoherence over the
longest sequence (2 us against T2 of tens of us) lowers the contrast by a few per cent, which
scales ``eps`` by as much; the next round corrects what is left.
``P(1)`` comes from averaged IQ projected onto the line from the |0> signal (no pulse) to the
|1> signal (one pi pulse), both measured in the same job: averaged IQ is linear in the
populations, and a pi pulse 1 % off still leaves 99.98 % in |1>.

The amplitude that makes the rotation exact is ``a * theta / (theta + eps)``. Short sequences
come first, so errors of several per cent are caught without ambiguity; the long ones then
resolve the rest.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from labqpu.calibration.experiments import FitError, Kit
from labqpu.pulse.program import PulseProgram

#: Longest sequence of each round, in repeated pulses: short first, then long.
ROUNDS = (12, 48)
#: Sequences per round.
POINTS = 13


@dataclass(frozen=True)
class Amplification:
    """Fitted rotation error per pulse: ``eps_rad`` (rad) with its standard error, and the
    sequence's starting phase ``phi0_rad``."""

    eps_rad: float
    eps_stderr_rad: float
    phi0_rad: float

    def corrected(self, amplitude: float, theta_rad: float) -> float:
        """The amplitude that rotates by exactly ``theta_rad`` (full scale)."""
        return amplitude * theta_rad / (theta_rad + self.eps_rad)

    def relative_error(self, theta_rad: float) -> float:
        """The pulse's rotation error relative to ``theta_rad`` (dimensionless)."""
        return self.eps_rad / theta_rad


def _model(n, eps, phi0):
    return 0.5 + 0.5 * np.sin(phi0 + n * eps)


def fit_amplification(n_pulses: np.ndarray, p1: np.ndarray, what: str) -> Amplification:
    """Fit ``p1 = 1/2 + 1/2 sin(phi0 + N eps)`` to the excited population after ``N``
    repeated pulses (pure). Starting points span ``eps`` up to about half a turn over the longest
    sequence, and the best of them is kept, so a large error is not mistaken for a small one.
    FitError when no start converges or the residuals are larger than the signal."""
    n = np.asarray(n_pulses, dtype=float)
    y = np.asarray(p1, dtype=float)
    span = float(n.max() - n.min())
    best = None
    bounds = ([-np.pi / 2, -np.pi / 2], [np.pi / 2, np.pi / 2])
    for eps0 in np.linspace(-3.0, 3.0, 25) / max(span, 1.0):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(_model, n, y, p0=[eps0, 0.0], bounds=bounds,
                                       max_nfev=5000)
        except (RuntimeError, ValueError):
            continue
        cost = float(np.sum((_model(n, *popt) - y) ** 2))
        if best is None or cost < best[0]:
            best = (cost, popt, pcov)
    if best is None:
        raise FitError("fine amplitude: the fit did not converge", subject=what)
    cost, popt, pcov = best
    if cost / len(n) > 0.02:
        raise FitError(f"fine amplitude: residuals {np.sqrt(cost / len(n)):.3g} are of the "
                       "order of the signal; the pulse is far off or the qubit is not driven",
                       subject=what)
    return Amplification(float(popt[0]), float(np.sqrt(max(pcov[0, 0], 0.0))),
                         float(popt[1]))


def populations(iq: np.ndarray, ground: complex, excited: complex) -> np.ndarray:
    """Excited population of averaged IQ points: their projection onto the line from the
    ``ground`` signal to the ``excited`` one (pure)."""
    axis = excited - ground
    return ((np.asarray(iq) - ground) * np.conj(axis)).real / abs(axis) ** 2


def pulse_train(kit: Kit, q: int, amplitudes: list[float]) -> PulseProgram:
    """DRAG pulses of ``amplitudes`` (full scale) back to back on qubit ``q``, then its
    readout."""
    b = kit.builder([q])
    t = 0
    for a in amplitudes:
        t = kit.drive(b, q, t, a)
    kit.readout(b, q, t, 0)
    return b.build(num_clbits=1)


def references(kit: Kit, q: int) -> list[PulseProgram]:
    """The |0> (no pulse) and |1> (one pi pulse) references of :func:`populations`."""
    return [pulse_train(kit, q, []), pulse_train(kit, q, [kit.work.qubits[q]["pi_amplitude"]])]


def _programs(kit: Kit, q: int, which: str, counts: np.ndarray) -> list[PulseProgram]:
    """The two references, then one program per count of repeated pulses."""
    p = kit.work.qubits[q]
    pi, pi2 = p["pi_amplitude"], p["pi2_amplitude"]
    return references(kit, q) + [
        pulse_train(kit, q, [pi2] + [pi] * int(n) if which == "pi" else [pi2] * int(n))
        for n in counts]


def counts_for(which: str, longest: int) -> np.ndarray:
    """Repetition counts of one round: even up to ``longest`` for ``"pi"``, ``4m + 1`` for
    ``"pi2"``, :data:`POINTS` of them."""
    if which == "pi":
        return 2 * np.unique(np.round(np.linspace(0, longest // 2, POINTS))).astype(int)
    return 4 * np.unique(np.round(np.linspace(0, (longest - 1) // 4, POINTS))).astype(int) + 1


def measure(kit: Kit, q: int, which: str, shots: int, longest: int
            ) -> tuple[Amplification, np.ndarray, np.ndarray]:
    """Acquire and fit one round for qubit ``q``'s ``"pi"`` or ``"pi2"`` pulse; returns the
    fit, the repetition counts and the measured populations."""
    counts = counts_for(which, longest)
    iq = kit.run_iq(_programs(kit, q, which, counts), shots)[:, 0]
    p1 = populations(iq[2:], iq[0], iq[1])
    return fit_amplification(counts, p1, f"qubit {q} {which} amplitude"), counts, p1


THETA = {"pi": np.pi, "pi2": np.pi / 2}
PARAMETER = {"pi": "pi_amplitude", "pi2": "pi2_amplitude"}


def fine_amplitude(kit: Kit, q: int, shots: int) -> None:
    """Set qubit ``q``'s pi and pi/2 amplitudes (full scale) from error-amplifying sequences:
    one round per entry of :data:`ROUNDS`, each starting from the last correction."""
    for which in ("pi", "pi2"):
        name = PARAMETER[which]
        old = kit.work.qubits[q][name]
        series, curves, fits, amplitudes = {}, {}, {}, []
        for k, longest in enumerate(ROUNDS):
            amplitude = kit.work.qubits[q][name]
            fit, counts, p1 = measure(kit, q, which, shots, longest)
            value = fit.corrected(amplitude, THETA[which])
            if not 0 < value < 1:
                kit.work.qubits[q][name] = old
                raise FitError(f"fine amplitude: {name} {value:.4g} is outside full scale",
                               subject=f"qubit {q}")
            label = f"round {k + 1}, amplitude {amplitude:.6f}"
            amplitudes.append(amplitude)
            series[label] = {"x": counts, "y": p1}
            n = np.linspace(0, counts.max(), 200)
            curves[label] = {"x": n, "y": 0.5 + 0.5 * np.sin(fit.phi0_rad + n * fit.eps_rad)}
            fits[f"round_{k + 1}_eps_rad"] = fit.eps_rad
            kit.work.qubits[q][name] = float(value)
        err = amplitude * THETA[which] / (THETA[which] + fit.eps_rad) ** 2 * fit.eps_stderr_rad
        rid = kit.record(
            f"fine_amplitude_{which}", q, {name: (value, err)},
            {"x_label": f"{'pi' if which == 'pi' else 'pi/2'} pulses repeated",
             "y_label": "P(1) between the |0> and |1> references", "series": series,
             "round_amplitudes": amplitudes, "theta_rad": THETA[which]},
            fit=fits, curves=curves, old={name: old},
            settings={"shots": shots, "rounds": list(ROUNDS)})
        kit.work.set(q, name, float(value), rid)


def worst_relative_error(kit: Kit, q: int, shots: int) -> float:
    """The larger rotation error of qubit ``q``'s pi and pi/2 pulses, relative to the
    rotation, from one long round each (the check of :func:`fine_amplitude`)."""
    errors = []
    for which in ("pi", "pi2"):
        fit, _, _ = measure(kit, q, which, shots, ROUNDS[-1])
        errors.append(fit.relative_error(THETA[which]))
    return max(errors, key=abs)
