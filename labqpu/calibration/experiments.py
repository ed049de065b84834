"""Calibration experiments of the bootstrap: acquire (pulse programs through the public backend
API) -> pure analysis (fits, no side effects) -> explicit update of a working parameter set.

Every acquisition builds ``PulseProgram``s with ``ProgramBuilder`` from the parameters known so
far (``Working``) and runs them with ``backend.run(programs, meas_level=1)``. Analyses are plain
functions of arrays; they raise ``FitError`` when the data do not support a result, so a bad
fit stops the calibration instead of writing a wrong number.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from labqpu.calibration.records import ExperimentRecord, uncertainty_problem
from labqpu.calibration.working import Working, json_ready
from labqpu.errors import FitError
from labqpu.pulse.compiler import READOUT_RISE_S
from labqpu.pulse.kernels import flat_top, gaussian_drag
from labqpu.pulse.program import ProgramBuilder, PulseProgram
from labqpu.pulse.split import split_program
from labqpu.store import Snapshot, SnapshotBuilder

log = logging.getLogger(__name__)

def square_rise(samples: int) -> float:
    """Rise (samples) of :meth:`Kit.square_drive`'s flat-top pulse of ``samples``."""
    return min(10.0, (samples - 1) / 2)


class Kit:
    """Builds programs for one backend from a ``Working`` parameter set."""

    def __init__(self, backend, work: Working) -> None:
        self.backend = backend
        self.config = backend.config
        self.work = work
        self.fs = self.config.controllers[0].sample_rate_hz
        #: The controllers' timing rules: every waveform is zero-padded onto their grid (as
        #: the compiler pads calibrated pulses) and every wait is a whole number of grid steps.
        self.timing = backend.channels.timing
        #: Records of the experiments run with this kit, oldest first (:meth:`record`).
        self.records: list[ExperimentRecord] = []

    @property
    def channels(self):
        """The backend's channel map (``labqpu.pulse.channels.ChannelMap``)."""
        return self.backend.channels

    @property
    def feedforward_latency_samples(self) -> int | None:
        """The backend's controller feed-forward latency (samples), or None."""
        return self.backend.feedforward_latency_samples

    @property
    def snapshot(self) -> Snapshot:
        """The backend's calibration snapshot with the working values of this run over it (what
        its earlier steps measured), never committed (id 0): ``pulse.build(kit)`` builds a
        node's programs on it, as ``pulse.build(backend)`` does on the committed snapshot.
        Read anew on each access; run its programs with :meth:`run_iq`, :meth:`corrected_p1`
        or ``run_bits(programs, shots, kit.centres())``, which read them with this run's
        readout centres. Its programs name no snapshot (it was never committed): run through
        the backend at ``meas_level=2`` they would be discriminated, and their results
        named, with the committed snapshot."""
        base = self.backend.snapshot
        builder = SnapshotBuilder.from_snapshot(base)
        with warnings.catch_warnings():  # a lab's own names: the commit warns of them once
            warnings.simplefilter("ignore", UserWarning)
            for sections, setter, held in (
                    (self.work.qubits, builder.set_qubit, base.qubits),
                    (self.work.pairs, builder.set_pair, base.pairs)):
                for subject, params in sections.items():
                    for name, value in params.items():
                        old = held.get(subject, {}).get(name)
                        if old is not None and old.value == value:
                            continue
                        setter(subject, name, value,
                               self.work.records.get((subject, name)) or "design",
                               timestamp=self.work.measured_at.get((subject, name)))
        return Snapshot.from_document(builder.build_document())

    def record(self, kind: str, subject: int | tuple[int, int], values: dict[str, tuple],
               raw: dict, *, fit: dict[str, float] | None = None,
               curves: dict[str, dict] | None = None, chosen: str | None = None,
               old: dict | None = None, settings: dict | None = None,
               rejected: str | None = None) -> str:
        """Keep the record of one experiment on ``subject`` (a qubit or an edge) and return its
        id (``<kind>-q<subject>-<UTC time>``), which the experiment then gives to the values it
        sets, so that the snapshot names the record each value came from.

        ``values`` maps each parameter to ``(value, stderr)`` (stderr None when the analysis
        gives none); the old values come from the working set, unless ``old`` gives them (an
        experiment that changed a working value while it measured). ``raw`` holds the sweep
        data as plain lists (``x`` and ``series``, each series a list or
        ``{"x": ..., "y": ...}``, with ``x_label`` and ``y_label``); ``curves`` the fitted
        curves to draw. ``chosen`` names the parameter swept on the x axis: its new and old
        values are marked on the plot (``raw["marks"]["chosen"]``: the x a value not swept is
        read at, as the CZ leakage at one CZ).

        A value whose standard error exceeds its limit (:func:`uncertainty_problem`), or one
        the experiment's own test refused (``rejected``: why), is kept in the record, with the
        reason under ``settings["rejected"]``, and then refused: this raises ``FitError``
        before the experiment updates anything, and the record and its plot show the data."""
        now = datetime.now(UTC)
        tag = (f"q{subject}" if isinstance(subject, int)
               else f"q{subject[0]}-{subject[1]}")
        experiment = f"{kind}-{tag}-{now.strftime('%Y%m%dT%H%M%S.%fZ')}"
        current = (self.work.qubits.get(subject, {}) if isinstance(subject, int)
                   else self.work.pairs.get(tuple(subject), {}))
        old = {name: json_ready((old or {}).get(name, current.get(name))) for name in values}
        marks = dict(raw.get("marks", {}))  # an x the value is read at, not swept to
        if chosen is not None:
            marks["chosen"] = values[chosen][0]
            if old[chosen] is not None:
                marks["old"] = old[chosen]
        label = (f"qubit {subject}" if isinstance(subject, int)
                 else f"edge ({subject[0]}, {subject[1]})")
        rejected = rejected or uncertainty_problem(kind, values)
        self.records.append(ExperimentRecord(
            experiment=experiment, kind=kind, subject=label, measured_at=now.isoformat(),
            values={k: [json_ready(v), json_ready(e)] for k, (v, e) in values.items()},
            old_values=old, fit=dict(fit or {}),
            raw=json_ready({**raw, "curves": curves or {}, "marks": marks}),
            settings=json_ready({**(settings or {}),
                                 **({"rejected": rejected} if rejected else {})})))
        if rejected:
            raise FitError(f"{label} {kind}: {rejected}; nothing is updated")
        return experiment

    def _output(self, q: int, role: str) -> int:
        """Rack output port of qubit ``q``'s ``role`` ("drive", "flux", "readout")."""
        return self.backend.channels.output(getattr(self.config.qubits[q], role))

    def _input(self, q: int, role: str) -> int:
        """Rack input port of qubit ``q``'s ``role`` ("acquire")."""
        return self.backend.channels.input(getattr(self.config.qubits[q], role))

    def samples(self, seconds: float) -> int:
        """``seconds`` in whole samples."""
        return round(seconds * self.fs)

    def on_samples(self, seconds: float | np.ndarray) -> float | np.ndarray:
        """Times (s) moved to the nearest whole number of samples: the durations a snapshot
        may hold (``labqpu.rack.limits``; a no-op at 1 GS/s for whole nanoseconds)."""
        return np.round(np.asarray(seconds, dtype=float) * self.fs) / self.fs

    def uniform_delays(self, step_s: float, count: int, *, unlike: float | None = None
                       ) -> np.ndarray:
        """``count`` delays (s) from 0, a whole number of timing-grid steps apart, the nearest
        to ``step_s`` (at least one step; another than ``unlike`` when given, so that two
        sampling rates stay apart on a coarse grid). Rounding each delay of a linspace onto
        the grid would space them unevenly, which a Fourier analysis takes for a frequency."""
        grid = self.timing.grid / self.fs
        steps = max(1, round(step_s / grid))
        if unlike is not None and math.isclose(steps * grid, unlike):
            steps += 1
        return np.arange(count) * (steps * grid)

    def on_grid(self, seconds: np.ndarray) -> np.ndarray:
        """Sweep times (s) moved to the nearest whole number of timing-grid steps, so that the
        waits played are the times the analysis fits."""
        step = self.timing.grid / self.fs
        return np.round(np.asarray(seconds, dtype=float) / step) * step

    def _wave(self, b: ProgramBuilder, key: tuple, length: int, make) -> tuple[int, int]:
        """(waveform id, samples played) of shape ``key``: zero-padded onto the timing grid."""
        total = self.timing.pad(length)
        if total == length:
            return b.waves.add(key, make), length
        return b.waves.add(("padded", key, total), lambda: np.concatenate(
            [make(), np.zeros(total - length, np.complex64)])), total

    def builder(self, qubits: Sequence[int]) -> ProgramBuilder:
        """A builder with the LOs of ``qubits`` set from the working values, and the flux bias
        of every qubit that has one: a neighbour's bias moves a qubit through the DC flux
        crosstalk, so an experiment must not inherit whatever bias an earlier job left on a
        channel it does not use (circuits set every calibrated bias too)."""
        channels = self.backend.channels
        b = ProgramBuilder(channels.controllers[0], self.fs, rack=channels.layout)
        dev = self.work.device
        for q in qubits:
            w = self.config.qubits[q]
            p = self.work.qubits[q]
            b.set_lo(w.drive_lo, p["drive_lo_frequency_hz"], dev["drive_lo_power_dbm"])
            b.set_lo(w.readout_lo, dev["readout_lo_frequency_hz"], dev["readout_lo_power_dbm"])
        # the qubits measured last: a flux-bias channel they share with others carries theirs
        for q, p in sorted(self.work.qubits.items(), key=lambda item: item[0] in qubits):
            if "flux_bias_a" in p:
                b.flux_bias_a[self.config.qubits[q].flux_bias] = p["flux_bias_a"]
        return b

    def drive(self, b: ProgramBuilder, q: int, start: int, amplitude: float | str,
              phase_rad: float = 0.0, *, beta: float | None = None,
              frequency_hz: float | None = None) -> int:
        """DRAG pulse on ``q`` from ``start`` (``amplitude``: full scale, or the name of a
        parameter of ``b``); returns the sample after it."""
        p = self.work.qubits[q]
        dur, sigma = self._drag_shape()
        beta = p.get("drag_beta", 0.0) if beta is None else beta
        wid, played = self._wave(b, ("drag", dur, sigma, beta), dur,
                                 lambda: gaussian_drag(dur, sigma, beta))
        f = p["frequency_hz"] if frequency_hz is None else frequency_hz
        b.play(self._output(q, "drive"), start, wid, amplitude, phase_rad,
               f - p["drive_lo_frequency_hz"])
        return start + played

    def _drag_shape(self) -> tuple[int, float]:
        """Length and sigma (samples) of the DRAG pulses :meth:`drive` plays."""
        return (self.samples(self.work.device["pulse_duration_s"]),
                self.work.device["pulse_sigma_s"] * self.fs)

    def pulse_area(self, q: int) -> float:
        """The in-phase area (full scale x samples) of qubit ``q``'s calibrated pi pulse, as
        :meth:`drive` plays it (the DRAG part is in quadrature)."""
        dur, sigma = self._drag_shape()
        return float(self.work.qubits[q]["pi_amplitude"] * np.sum(gaussian_drag(dur, sigma,
                                                                                 0.0).real))

    def square_area(self, duration_s: float) -> float:
        """The area (samples) of :meth:`square_drive`'s flat-top pulse of ``duration_s`` at
        unit amplitude."""
        dur = self.samples(duration_s)
        return float(np.sum(flat_top(dur, square_rise(dur)).real))

    def square_drive(self, b: ProgramBuilder, q: int, start: int, duration_s: float,
                     amplitude: float, frequency_hz: float) -> int:
        """Flat-top drive of ``duration_s`` at ``frequency_hz`` (spectroscopy)."""
        dur = self.samples(duration_s)
        rise = square_rise(dur)
        wid, played = self._wave(b, ("flat", dur, rise), dur, lambda: flat_top(dur, rise))
        b.play(self._output(q, "drive"), start, wid, amplitude, 0.0,
               frequency_hz - self.work.qubits[q]["drive_lo_frequency_hz"])
        return start + played

    def flux(self, b: ProgramBuilder, q: int, start: int, duration: int, rise: float,
             amplitude: float) -> int:
        """Flat-top fast-flux pulse on ``q``."""
        wid, played = self._wave(b, ("flat", duration, rise), duration,
                                 lambda: flat_top(duration, rise))
        b.play(self._output(q, "flux"), start, wid, amplitude)
        return start + played

    def readout_amplitude(self, q: int) -> float:
        """Qubit ``q``'s readout amplitude (fraction of full scale): its calibrated one, else
        the device's design value."""
        return self.work.qubits[q].get("readout_amplitude",
                                       self.work.device["readout_amplitude"])

    def readout(self, b: ProgramBuilder, q: int, start: int, clbit: int,
                frequency_hz: float | None = None,
                discriminator: tuple[complex, float] | None = None,
                amplitude_scale: float = 1.0) -> int:
        """Readout pulse and acquisition on ``q`` into ``clbit`` (-1: none, a result only
        feed-forward reads, with ``discriminator``), at ``frequency_hz`` (default the readout
        frequency) and ``amplitude_scale`` times the readout amplitude; returns the sample
        after it."""
        dev = self.work.device
        dur = self.timing.pad(self.samples(  # as the compiler does
            self.work.qubits[q].get("readout_duration_s", dev["readout_duration_s"])))
        rise = READOUT_RISE_S * self.fs
        wid = b.waves.add(("flat", dur, rise), lambda: flat_top(dur, rise))
        f = self.work.qubits[q]["readout_frequency_hz"] if frequency_hz is None else frequency_hz
        if_hz = f - dev["readout_lo_frequency_hz"]
        b.play(self._output(q, "readout"), start, wid, self.readout_amplitude(q) * amplitude_scale,
               0.0, if_hz)
        b.acquire(self._input(q, "acquire"), start, dur, if_hz, q, clbit, discriminator)
        return start + dur

    def run_iq(self, programs: list[PulseProgram], shots: int, *,
               single: bool = False) -> np.ndarray:
        """Run ``programs`` (split into jobs of at most ``max_circuits``, and of at most the
        backend's shots per job: :meth:`_in_parts`) and return IQ: (n_programs, n_clbits)
        averaged, or (n_programs, shots, n_clbits) single-shot."""
        out = []
        step = self.backend.max_circuits
        for i in range(0, len(programs), step):
            chunk = programs[i:i + step]
            out.extend(self._in_parts(shots, single, lambda n, chunk=chunk: np.array(
                self.backend.run(chunk, shots=n, meas_level=1,
                                 meas_return="single" if single else "avg").memory_arrays())))
        return np.array(out)

    def _in_parts(self, shots: int, single: bool, run: Callable[[int], np.ndarray]
                  ) -> np.ndarray:
        """``run(n)`` (IQ of every program for ``n`` shots) in jobs of at most the backend's
        shots per job (``backend.max_shots``) that add up to ``shots``:
        averages weighted by their shots, single shots one after another. A check asks its
        run's shots times a factor (20 for the pi amplitude), so ``--shots 6000`` asks 120 000
        of one program, which one job cannot take."""
        jobs = -(-shots // self.backend.max_shots)
        parts = [shots // jobs + (k < shots % jobs) for k in range(jobs)]
        arrays = [run(n) for n in parts]
        if len(arrays) == 1:
            return arrays[0]
        if single:
            return np.concatenate(arrays, axis=1)
        return sum(a * n for a, n in zip(arrays, parts, strict=True)) / shots

    def run_sweep(self, program: PulseProgram, binds: dict[str, Sequence[float]], shots: int,
                  *, single: bool = False) -> np.ndarray:
        """Run ``program`` once per point of ``binds`` (its amplitude parameters' values):
        one upload, the controller binding each point (``parameter_binds``), where the
        controller can; otherwise one program per point. IQ as :meth:`run_iq` gives it, one
        row per point."""
        points = len(next(iter(binds.values())))
        parts = split_program(program)
        caps = (self.backend.controller_capabilities(parts[0].controller) if len(parts) == 1
                else {})  # a sweep binds on one controller
        if "param_sets" not in caps or points > caps["param_sets"].get("max_sets", 0):
            names = list(program.param_names)
            programs = []
            for k in range(points):
                values = np.array(program.param_values, dtype=float)
                for name, column in binds.items():
                    values[names.index(name)] = column[k]
                programs.append(replace(program, param_values=values))
            return self.run_iq(programs, shots, single=single)
        return self._in_parts(shots, single, lambda n: np.array(self.backend.run(
            program, shots=n, meas_level=1, meas_return="single" if single else "avg",
            parameter_binds=binds).memory_arrays()))

    def run_bits(self, programs: list[PulseProgram], shots: int,
                 centres: dict[int, tuple[complex, complex]]) -> np.ndarray:
        """Single-shot states (n_programs, shots, n_clbits) by nearest calibrated centre; the
        qubit of each clbit is read from the program's acquisitions."""
        iq = self.run_iq(programs, shots, single=True)
        bits = np.zeros(iq.shape, dtype=np.uint8)
        for i, prog in enumerate(programs):
            for q, c in zip(prog.acq_qubit, prog.acq_clbit, strict=True):
                if c < 0:  # read by feed-forward only
                    continue
                c0, c1 = centres[int(q)]
                bits[i, :, c] = np.abs(iq[i, :, c] - c1) < np.abs(iq[i, :, c] - c0)
        return bits

    def centres(self) -> dict[int, tuple[complex, complex]]:
        """The calibrated |0> and |1> IQ centres of every qubit that has a discriminator."""
        out = {}
        for q, p in self.work.qubits.items():
            if "discriminator" in p:
                (i0, q0), (i1, q1) = p["discriminator"]["centers"]
                out[q] = (complex(i0, q0), complex(i1, q1))
        return out

    def corrected_p1(self, programs: list[PulseProgram], shots: int, *,
                     clip: bool = True) -> np.ndarray:
        """P(1) per program and clbit, corrected with the calibrated assignment matrices (and
        clipped to [0, 1] unless ``clip`` is False: an average of differences near 0 or 1 must
        keep the noise on both sides)."""
        raw = self.run_bits(programs, shots, self.centres()).mean(axis=1)
        out = np.empty_like(raw)
        for i, prog in enumerate(programs):
            for q, c in zip(prog.acq_qubit, prog.acq_clbit, strict=True):
                if c < 0:
                    continue
                (_, a01), (_, a11) = self.work.qubits[int(q)]["assignment_matrix"]
                out[i, c] = (raw[i, c] - a01) / (a11 - a01)
        if clip:
            np.clip(out, 0, 1, out=out)
        return out


def assignment(iq0: np.ndarray, iq1: np.ndarray, c0: complex, c1: complex
               ) -> tuple[float, float, float]:
    """(P(1 | prepared 0), P(1 | prepared 1), assignment fidelity) of single shots prepared in
    |0> (``iq0``) and |1> (``iq1``), each shot read as the nearer of the centres ``c0``,
    ``c1``."""
    p1_given0 = float(np.mean(np.abs(iq0 - c1) < np.abs(iq0 - c0)))
    p1_given1 = float(np.mean(np.abs(iq1 - c1) < np.abs(iq1 - c0)))
    return p1_given0, p1_given1, 1 - (p1_given0 + 1 - p1_given1) / 2


# ---------------------------------------------------------------- pure analyses


@dataclass(frozen=True)
class CurveFit:
    """A least-squares fit: ``params`` (name -> value) with their standard errors ``stderr``
    (from the covariance scaled by the residuals; ``inf`` when it cannot be estimated),
    ``rms_residual`` (the data's units) and ``r_squared``. ``model(x, *values)`` evaluates it."""

    model: Callable
    params: dict[str, float]
    stderr: dict[str, float]
    rms_residual: float
    r_squared: float
    covariance: np.ndarray | None = None

    def curve(self, x: np.ndarray) -> np.ndarray:
        """The fitted model at ``x``."""
        return self.model(np.asarray(x, dtype=float), *self.params.values())

    def quality(self) -> dict[str, float]:
        """Fit-quality figures for an experiment record."""
        return {"rms_residual": self.rms_residual, "r_squared": self.r_squared}

    def propagated(self, gradient: Sequence[float]) -> float:
        """Standard error of a quantity derived from the parameters, given its gradient with
        respect to them (in ``params`` order), through the full covariance; ``inf`` without
        one."""
        if self.covariance is None or not np.all(np.isfinite(self.covariance)):
            return float("inf")
        g = np.asarray(gradient, dtype=float)
        return float(np.sqrt(max(g @ self.covariance @ g, 0.0)))

    def sampled(self, x: np.ndarray, points: int = 300) -> dict[str, list]:
        """The fitted curve on ``points`` points across the range of ``x``, for a record."""
        xs = np.linspace(float(np.min(x)), float(np.max(x)), points)
        return {"x": xs.tolist(), "y": self.curve(xs).tolist()}


def fit_curve(model: Callable, x: np.ndarray, y: np.ndarray, p0: Sequence[float], maxfev: int,
              names: Sequence[str]) -> CurveFit:
    """scipy's curve_fit, with the parameters named ``names``; RuntimeError when it does not
    converge. The covariance warning is muted: an inestimable covariance shows as ``inf``.

    MINPACK's finite-difference step is relative to each parameter, so a start value within
    rounding of zero (the mean of centred data, ~1e-17) would get a step of ~1e-25 and stay
    frozen, biasing the others; such start values begin at exactly zero, where the step is
    absolute."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    floor = 1e-9 * float(np.max(np.abs(y))) if y.size else 0.0
    p0 = [0.0 if abs(p) < floor else p for p in p0]
    # Trial steps may overflow a model (exp(-t / tau) for a tau that strays negative); the
    # optimiser rejects those steps, so their floating-point warnings say nothing.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore",
                                                divide="ignore"):
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov = curve_fit(model, x, y, p0=p0, maxfev=maxfev)
    return _curve(model, x, y, popt, pcov, names)


def _curve(model, x, y, popt, pcov, names: Sequence[str]) -> CurveFit:
    residual = y - model(x, *popt)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else 1.0
    perr = np.sqrt(np.abs(np.diag(pcov)))
    return CurveFit(model, {n: float(v) for n, v in zip(names, popt, strict=True)},
                    {n: float(e) for n, e in zip(names, perr, strict=True)},
                    float(np.sqrt(np.mean(residual ** 2))), r2, np.asarray(pcov, dtype=float))


def polynomial_fit(x: np.ndarray, y: np.ndarray, degree: int, names: Sequence[str]) -> CurveFit:
    """numpy's polyfit of ``degree`` (highest power first, as ``names``) with the standard
    errors of its coefficients; needs more points than coefficients."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if len(x) > degree + 2:
        coef, cov = np.polyfit(x, y, degree, cov=True)
    else:
        coef, cov = np.polyfit(x, y, degree), np.full((degree + 1, degree + 1), np.inf)
    return _curve(lambda t, *c: np.polyval(c, t), x, y, coef, cov, names)


def _lorentzian(f, f0, width, amp, offset):
    return offset + amp / (1.0 + ((f - f0) / width) ** 2)


def fit_peak(freqs_hz: np.ndarray, signal: np.ndarray, what: str) -> tuple[float, float]:
    """Centre and half width (Hz) of the single peak in ``signal`` (:func:`fit_peak_curve`)."""
    fit = fit_peak_curve(freqs_hz, signal, what)
    return fit.params["f0"], abs(fit.params["width"])


#: Least R² of a peak's Lorentzian fit: a clean resonator or qubit line fits with 0.94-0.998;
#: two peaks (a line that moved during the sweep) fitted as one gave 0.27 and a centre between
#: them, which was committed.
MIN_PEAK_R_SQUARED = 0.8


def fit_peak_curve(freqs_hz: np.ndarray, signal: np.ndarray, what: str) -> CurveFit:
    """Lorentzian fit (``f0``, half ``width`` in Hz, ``amp``, ``offset``) of the single peak in
    ``signal``; FitError if none stands out of the noise (peak < 8 x the point-to-point noise),
    the Lorentzian fits it poorly (R² below :data:`MIN_PEAK_R_SQUARED`) or the centre leaves
    the sweep."""
    base = np.median(signal)
    noise = np.std(np.diff(signal)) / np.sqrt(2) + 1e-15
    k = int(np.argmax(signal))
    if signal[k] - base < 8 * noise:
        raise FitError(f"no peak above the noise between {freqs_hz[0]:.6g} and "
                       f"{freqs_hz[-1]:.6g} Hz", subject=what)
    step = abs(freqs_hz[1] - freqs_hz[0])
    p0 = [freqs_hz[k], 2 * step, signal[k] - base, base]
    try:
        fit = fit_curve(_lorentzian, freqs_hz, signal, p0, 20000,
                         ("f0", "width", "amp", "offset"))
    except RuntimeError as exc:
        raise FitError(f"Lorentzian fit failed: {exc}", subject=what) from exc
    if fit.r_squared < MIN_PEAK_R_SQUARED:
        raise FitError(f"the peak between {freqs_hz[0]:.6g} and {freqs_hz[-1]:.6g} Hz is not "
                       f"one Lorentzian (R² {fit.r_squared:.2f} < {MIN_PEAK_R_SQUARED}): two "
                       "peaks, or a line that moved during the sweep", subject=what)
    if not freqs_hz.min() <= fit.params["f0"] <= freqs_hz.max():
        raise FitError(f"fitted peak {fit.params['f0']:.6g} Hz lies outside the sweep",
                       subject=what)
    return fit


def fit_peak_searching(measure: Callable[[np.ndarray], np.ndarray], scan: np.ndarray,
                       search: np.ndarray, around: Callable[[float], np.ndarray], what: str, *,
                       scan_label: str, search_label: str, not_found: str
                       ) -> tuple[np.ndarray, np.ndarray, CurveFit, dict]:
    """The peak (:func:`fit_peak_curve`) of ``measure(x)``, the signal at each x, over
    ``scan``; when it has none (or ``scan`` is empty), ``measure`` over ``search`` finds the
    largest response and the scan runs again over ``around(its x)``. Returns the last scan's
    x, signal and fit, and the first scan and the search as record series (labelled
    ``scan_label`` and ``search_label``; empty when no search ran). ``FitError`` when the
    second scan finds no peak either: ``not_found`` with both reasons."""
    if not len(search):
        raise FitError(f"{not_found}, and nothing to search", subject=what)
    series: dict = {}
    first = "nothing to scan there"
    if len(scan):
        signal = measure(scan)
        try:
            return scan, signal, fit_peak_curve(scan, signal, what), series
        except FitError as exc:
            first = str(exc).removeprefix(f"{exc.subject}: ")
        series[scan_label] = {"x": scan, "y": signal}
    response = measure(search)
    series[search_label] = {"x": search, "y": response}
    x = around(float(search[int(np.argmax(response))]))
    signal = measure(x)
    try:
        return x, signal, fit_peak_curve(x, signal, what), series
    except FitError as again:
        second = str(again).removeprefix(f"{again.subject}: ")
        raise FitError(f"{not_found} ({first}), nor around the largest response of the "
                       f"{search_label} ({second})", subject=what) from again


def complex_median(z: np.ndarray) -> complex:
    """Component-wise median of complex points (numpy's median of complex numbers orders them
    lexicographically, which is not a centre)."""
    return complex(np.median(z.real), np.median(z.imag))


def project(iq: np.ndarray) -> np.ndarray:
    """Project complex points onto their principal axis (real values, arbitrary sign/offset)."""
    centred = iq - iq.mean()
    pts = np.stack([centred.real, centred.imag])
    _, vecs = np.linalg.eigh(pts @ pts.T)
    axis = vecs[:, -1]
    return axis[0] * centred.real + axis[1] * centred.imag


def _rabi_model(a, period, amp, offset):
    return offset + amp * np.cos(2 * np.pi * a / period)


def fit_rabi(amps: np.ndarray, signal: np.ndarray, what: str) -> float:
    """Amplitude of a pi rotation from a Rabi oscillation ``signal(amps)``
    (:func:`fit_rabi_curve`)."""
    return abs(fit_rabi_curve(amps, signal, what).params["period"]) / 2


def fit_rabi_curve(amps: np.ndarray, signal: np.ndarray, what: str) -> CurveFit:
    """Cosine fit (``period``, ``amp``, ``offset``) of a Rabi oscillation ``signal(amps)``;
    half the period is the pi amplitude. FitError when it is beyond full scale or the
    sweep."""
    spec = np.abs(np.fft.rfft(signal - signal.mean()))
    k = max(1, int(np.argmax(spec[1:])) + 1)
    period0 = (amps[-1] - amps[0]) * len(amps) / (len(amps) - 1) / k
    amp0 = signal[0] - signal.mean()
    try:
        fit = fit_curve(_rabi_model, amps, signal, [period0, amp0, signal.mean()], 20000,
                         ("period", "amp", "offset"))
    except RuntimeError as exc:
        raise FitError(f"Rabi fit failed: {exc}", subject=what) from exc
    period = abs(fit.params["period"])
    if not 0 < period / 2 < 1.0:
        raise FitError(f"pi amplitude {period / 2:.4g} is outside full scale", subject=what)
    if period / 2 > amps.max():
        raise FitError(f"pi amplitude {period / 2:.4g} lies beyond the sweep "
                       f"(up to {amps.max():.4g}); extend it", subject=what)
    return fit


def _damped_cosine(t, f, tau, amp, phase, offset):
    return offset + amp * np.exp(-t / tau) * np.cos(2 * np.pi * f * t + phase)


def fit_damped_cosine(t_s: np.ndarray, y: np.ndarray, what: str) -> tuple[float, float]:
    """Frequency (Hz, >= 0) and 1/e decay time (s) of a damped cosine ``y(t)``
    (:func:`fit_damped_cosine_curve`)."""
    fit = fit_damped_cosine_curve(t_s, y, what)
    return abs(fit.params["f"]), abs(fit.params["tau"])


def fit_damped_cosine_curve(t_s: np.ndarray, y: np.ndarray, what: str) -> CurveFit:
    """Damped-cosine fit (``f`` Hz, ``tau`` s, ``amp``, ``phase`` rad, ``offset``) of
    ``y(t)``. It starts from the strongest Fourier component on an 8x finer grid than the
    window gives (frequency, amplitude and phase), with the decay time at one and at five
    windows, and keeps the start that fits best with a decay longer than two samples (a
    shorter one fits the first point and nothing else)."""
    t_s = np.asarray(t_s, dtype=float)
    y = np.asarray(y, dtype=float)
    dt = t_s[1] - t_s[0]
    centred = y - y.mean()
    n_fft = 8 * len(y)
    spec = np.fft.rfft(centred, n_fft)
    k = max(1, int(np.argmax(np.abs(spec[8:]))) + 8)
    f0 = np.fft.rfftfreq(n_fft, dt)[k]
    component = np.sum(centred * np.exp(-2j * np.pi * f0 * t_s)) * 2 / len(y)
    names = ("f", "tau", "amp", "phase", "offset")
    best, error = None, None
    for tau0 in (t_s[-1], 5 * t_s[-1]):
        p0 = [f0, tau0, abs(component), float(np.angle(component)), y.mean()]
        try:
            fit = fit_curve(_damped_cosine, t_s, y, p0, 50000, names)
        except RuntimeError as exc:
            error = exc
            continue
        if fit.params["tau"] > 2 * dt and (best is None or fit.rms_residual < best.rms_residual):
            best = fit
    if best is None:
        reason = error or "the decay is shorter than two samples"
        raise FitError(f"damped-cosine fit failed: {reason}", subject=what)
    return best


def _exponential(t, tau, a, b):
    return a * np.exp(-t / tau) + b


def fit_exponential(t_s: np.ndarray, y: np.ndarray, what: str) -> float:
    """1/e time (s) of ``y = a exp(-t/tau) + b`` (:func:`fit_exponential_curve`)."""
    return fit_exponential_curve(t_s, y, what).params["tau"]


def fit_exponential_curve(t_s: np.ndarray, y: np.ndarray, what: str) -> CurveFit:
    """Fit of ``y = a exp(-t/tau) + b`` (``tau`` s, ``a``, ``b``); FitError when tau is not
    within (0, 10 x the longest time).

    tau starts from the data: the first time y has fallen half way from its first to its last
    value, over ln 2. A fixed start (a third of the longest time) let the optimiser's first
    step land at tau -> 0 on a clean 26 us decay sampled to 200 us, where a exp(-t/tau)
    touches only t = 0 and the fit stops in that flat valley."""
    t_s = np.asarray(t_s, dtype=float)
    y = np.asarray(y, dtype=float)
    half = np.flatnonzero((y - (y[0] + y[-1]) / 2) * np.sign(y[0] - y[-1]) <= 0)
    t_half = t_s[half[0]] if half.size and half[0] > 0 else t_s[-1] / 3 * math.log(2)
    p0 = [t_half / math.log(2), y[0] - y[-1], y[-1]]
    try:
        fit = fit_curve(_exponential, t_s, y, p0, 20000, ("tau", "a", "b"))
    except RuntimeError as exc:
        raise FitError(f"exponential fit failed: {exc}", subject=what) from exc
    if not 0 < fit.params["tau"] < 10 * t_s[-1]:
        raise FitError(f"decay time {fit.params['tau']:.3g} s is outside the measured range",
                       subject=what)
    return fit


def fit_parabola_vertex(x: np.ndarray, y: np.ndarray, what: str) -> tuple[float, float]:
    """(x, y) of the maximum of a downward parabola through the points."""
    fit = fit_parabola(x, y, what)
    c2, c1, c0 = fit.params.values()
    return -c1 / (2 * c2), c0 - c1**2 / (4 * c2)


def fit_parabola(x: np.ndarray, y: np.ndarray, what: str) -> CurveFit:
    """Parabola ``c2 x^2 + c1 x + c0`` through the points; FitError unless it opens
    downward. Its vertex is at ``-c1 / (2 c2)`` (:func:`vertex_stderr`)."""
    fit = polynomial_fit(x, y, 2, ("c2", "c1", "c0"))
    if fit.params["c2"] >= 0:
        raise FitError(f"data have no maximum (curvature {fit.params['c2']:.3g})",
                       subject=what)
    return fit


def vertex_stderr(fit: CurveFit) -> float:
    """Standard error of the vertex ``-c1 / (2 c2)`` of a :func:`fit_parabola` result."""
    c2, c1 = fit.params["c2"], fit.params["c1"]
    return fit.propagated([c1 / (2 * c2 ** 2), -1 / (2 * c2), 0.0])


def zero_crossing(x: np.ndarray, y: np.ndarray, what: str, *, within: bool = True
                  ) -> tuple[float, float, CurveFit]:
    """x (with its standard error) where a straight-line fit of y(x) crosses zero, and the
    fit; FitError without a dependence on x, or, if ``within``, when the crossing lies outside
    the sweep."""
    x = np.asarray(x, dtype=float)
    line = polynomial_fit(x, y, 1, ("slope", "intercept"))
    slope, intercept = line.params.values()
    if slope == 0:
        raise FitError("no dependence on the swept parameter", subject=what)
    x0 = -intercept / slope
    if within and not x.min() <= x0 <= x.max():
        raise FitError(f"zero crossing {x0:.4g} lies outside the sweep", subject=what)
    return float(x0), line.propagated([intercept / slope ** 2, -1 / slope]), line


def phase_from_quadratures(p_x: np.ndarray, p_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phase (rad) and contrast of a qubit from P(1) after X90 and Y90 analysis pulses."""
    c = 2 * np.asarray(p_x) - 1
    s = 2 * np.asarray(p_y) - 1
    return np.arctan2(s, c), np.hypot(s, c)


def _band_amplitude(t_s: np.ndarray, y: np.ndarray, f_lo_hz: float, f_hi_hz: float) -> float:
    """Largest amplitude of a sinusoid in ``y(t)`` with frequency in [f_lo, f_hi] (Hz): the
    normalised Fourier sum of the mean-free signal on a fine frequency grid."""
    freqs = np.linspace(f_lo_hz, f_hi_hz, 201)
    centred = y - y.mean()
    sums = np.exp(-2j * np.pi * np.outer(freqs, t_s)) @ centred
    return float(2 * np.abs(sums).max() / len(t_s))


def handedness_from_fringes(t_s: np.ndarray, with_phase_advance: np.ndarray,
                            with_phase_retard: np.ndarray, detuning_hz: float,
                            what: str) -> int:
    """Drive handedness (+1 or -1) from two Ramsey fringes of a drive ``detuning_hz`` below
    the qubit, whose second pulse's play phase advances (``+2 pi detuning t``) or retards
    (``-2 pi detuning t``) with the delay ``t``.

    The qubit precesses against the drive frame by -2 pi detuning t (Rz, |1> above |0>). A play
    phase phi turns the drive axis to h phi: the sense that turns with the precession leaves a
    fringe near 0 Hz; the other one runs at about twice the detuning. So h is the sense whose
    fringe is fast. Both signals are real projections on one common axis (``project`` of both
    together). Refuses (FitError) unless one fringe has 4x the other's amplitude between 1.5
    and 2.5 times the detuning and stands 8x above the noise.
    """
    t_s = np.asarray(t_s, dtype=float)
    band = (1.5 * detuning_hz, 2.5 * detuning_hz)
    amp = {+1: _band_amplitude(t_s, np.asarray(with_phase_advance, dtype=float), *band),
           -1: _band_amplitude(t_s, np.asarray(with_phase_retard, dtype=float), *band)}
    fast = max(amp, key=amp.get)
    slow = np.asarray(with_phase_retard if fast == +1 else with_phase_advance, dtype=float)
    noise = np.std(np.diff(slow)) / np.sqrt(2) * 2 / np.sqrt(len(t_s)) + 1e-15
    if amp[fast] < 4 * amp[-fast] or amp[fast] < 8 * noise:
        raise FitError(
            f"drive handedness: fringe amplitudes near {2 * detuning_hz:.4g} Hz are "
            f"{amp[+1]:.3g} (phase advancing) and {amp[-1]:.3g} (retarding), noise "
            f"{noise:.3g}; neither stands out", subject=what)
    return fast


# ---------------------------------------------------------------- experiments


def sweep(kit: Kit, q: int, values: Sequence[float],
          body: Callable[[ProgramBuilder, float], int]) -> list[PulseProgram]:
    """One program per value: ``body(builder, value)`` plays from sample 0 and returns where
    the readout of ``q`` starts."""
    progs = []
    for v in values:
        b = kit.builder([q])
        end = body(b, v)
        kit.readout(b, q, end, 0)
        progs.append(b.build(num_clbits=1))
    return progs
