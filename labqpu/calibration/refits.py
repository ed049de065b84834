"""Redo the analysis of a graph experiment from its record (pure).

Every record of :meth:`labqpu.calibration.experiments.Kit.record` keeps the raw sweep data;
:func:`refit` runs the experiment's own analysis on them again and returns the values it
gives, so that a fit can be checked, or redone with a changed analysis, long after the run.
RB records have :func:`labqpu.calibration.rb.refit`.
"""

from __future__ import annotations

import numpy as np

from labqpu.calibration.bootstrap import cz_corrections, cz_phases_from_p1, frequency_error
from labqpu.calibration.experiments import (
    assignment,
    fit_damped_cosine_curve,
    fit_exponential_curve,
    fit_parabola,
    fit_peak_curve,
    fit_rabi_curve,
    zero_crossing,
)
from labqpu.calibration.fine import fit_amplification
from labqpu.calibration.readout import (
    choose_line_amplitude,
    choose_readout_duration,
    choose_readout_point,
)
from labqpu.calibration.records import ExperimentRecord, qubits_in


def _series(record: ExperimentRecord, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    raw = record.raw
    series = raw["series"]
    data = series[label] if label is not None else next(iter(series.values()))
    if isinstance(data, dict):
        return np.asarray(data["x"], dtype=float), np.asarray(data["y"], dtype=float)
    return np.asarray(raw["x"], dtype=float), np.asarray(data, dtype=float)


def _fine(record: ExperimentRecord) -> dict[str, float]:
    name = next(iter(record.values))
    amplitude = record.raw["round_amplitudes"][-1]
    counts, p1 = _series(record, list(record.raw["series"])[-1])
    fit = fit_amplification(counts, p1, record.subject)
    return {name: fit.corrected(amplitude, record.raw["theta_rad"])}


def _assignment(record: ExperimentRecord) -> dict[str, float]:
    raw = record.raw
    (i0, q0), (i1, q1) = raw["centers"]
    c0, c1 = complex(i0, q0), complex(i1, q1)
    shots = [np.asarray(raw[k][0]) + 1j * np.asarray(raw[k][1]) for k in ("shots_0", "shots_1")]
    p1_given0, p1_given1, fidelity = assignment(*shots, c0, c1)
    return {"readout_assignment_fidelity": fidelity, "p1_given_0": p1_given0,
            "p1_given_1": p1_given1}


def _readout(record: ExperimentRecord) -> dict[str, float]:
    raw = record.raw
    if "fidelity_map" in raw:
        i_f, _, _ = choose_readout_point(np.asarray(raw["fidelity_map"]), record.subject)
        frequency = float(raw["frequencies_hz"][i_f])
    else:  # a record of the frequency-only readout (before 2026-11-30): best SNR
        x, snr = _series(record)
        frequency = float(x[int(np.argmax(snr))])
    return {"readout_frequency_hz": frequency, **_assignment(record)}


def _readout_amplitude(record: ExperimentRecord) -> dict[str, float]:
    raw = record.raw
    line = raw.get("amplitude_line")  # measured again with the chosen window
    if line is not None and "line_scanned_amplitude" in raw:
        value, _ = choose_line_amplitude(np.asarray(line), np.asarray(raw["amplitudes"]),
                                         float(raw["line_scanned_amplitude"]), record.subject,
                                         float(record.settings.get("line_slack",
                                                                   record.settings["slack"])))
        return {"readout_amplitude": value}
    # the map alone, or a record made before the line's amplitude was recorded (2026-12-02)
    fidelity = np.asarray(raw["fidelity_map"] if line is None else [line])
    _, i_a, _ = choose_readout_point(fidelity, record.subject)
    return {"readout_amplitude": float(raw["amplitudes"][i_a])}


def _ramsey(record: ExperimentRecord) -> dict[str, float]:
    """The frequency from the record's first two fringes (+d and -d), its handedness and the
    frequency it started from; a record made before 2026-12-07 keeps no handedness."""
    handedness = record.settings.get("drive_handedness")
    if handedness is None:
        raise ValueError(f"{record.experiment}: this Ramsey record keeps no drive handedness "
                         "(recorded since 2026-12-07), without which its fringes give no sign")
    plus, minus = (abs(fit_damped_cosine_curve(*_series(record, label), record.subject)
                       .params["f"]) for label in list(record.raw["series"])[:2])
    start = record.old_values["frequency_hz"]
    return {"frequency_hz": start + frequency_error(plus, minus, record.settings["detuning_hz"],
                                                    handedness)}


def _sweet_spot(record: ExperimentRecord) -> dict[str, float]:
    c2, c1, _ = fit_parabola(*_series(record), record.subject).params.values()
    return {"flux_bias_a": -c1 / (2 * c2)}


def _static_zz(record: ExperimentRecord) -> dict[str, float]:
    f0, f1 = (abs(fit_damped_cosine_curve(*_series(record, label), record.subject).params["f"])
              for label in record.raw["series"])
    return {"zz_hz": record.settings["drive_handedness"] * (f1 - f0)}


def _cz(record: ExperimentRecord) -> dict[str, float]:
    """The amplitude of a conditional phase of pi and, for a record that keeps their data
    (since 2026-12-08), the phase corrections."""
    out = {"cz_amplitude": zero_crossing(*_series(record), record.subject, within=False)[0]}
    if "final_p1" in record.raw:
        p1 = np.asarray(record.raw["final_p1"], dtype=float)[:, :, None]
        final = cz_phases_from_p1(p1, record.raw["final_labels"])[0]
        out["cz_phase_a_rad"], out["cz_phase_b_rad"] = cz_corrections(
            final, qubits_in(record.subject), int(record.settings["flux_qubit"]))
    return out


_REFITS = {
    "resonator_spectroscopy": lambda r: dict.fromkeys(
        [k for k in ("readout_frequency_hz", "resonator_hz") if k in r.values],
        fit_peak_curve(*_series(r), r.subject).params["f0"]),
    "qubit_spectroscopy": lambda r: {"frequency_hz": fit_peak_curve(
        *_series(r), r.subject).params["f0"]},
    "sweet_spot": _sweet_spot,
    "ramsey": _ramsey,
    "anharmonicity": lambda r: {"anharmonicity_hz": fit_peak_curve(
        *_series(r), r.subject).params["f0"]},
    "rabi": lambda r: {"pi_amplitude": abs(fit_rabi_curve(
        *_series(r), r.subject).params["period"]) / 2},
    "ramsey_t2": lambda r: {"t2_s": abs(fit_damped_cosine_curve(
        *_series(r), r.subject).params["tau"])},
    "drag": lambda r: {"drag_beta": zero_crossing(*_series(r), r.subject)[0]},
    "fine_amplitude_pi": _fine,
    "fine_amplitude_pi2": _fine,
    "readout": _readout,
    "discriminator": _assignment,
    "readout_amplitude": _readout_amplitude,
    "readout_duration": lambda r: {"readout_duration_s": float(r.raw["durations_s"][
        choose_readout_duration(np.asarray(r.raw["fidelity"]), r.subject)[0]])},
    "t1": lambda r: {"t1_s": fit_exponential_curve(*_series(r), r.subject).params["tau"]},
    "hahn_echo": lambda r: {"t2_echo_s": fit_exponential_curve(
        *_series(r), r.subject).params["tau"]},
    "static_zz": _static_zz,
    "cz": _cz,
}


def refit(record: ExperimentRecord) -> dict[str, float]:
    """The values the record's analysis gives on its raw data (a subset of
    ``record.values``: the fitted ones). ``ValueError`` for a kind without a refit."""
    try:
        redo = _REFITS[record.kind]
    except KeyError:
        raise ValueError(f"{record.experiment}: no refit for experiments of kind "
                         f"{record.kind!r} (known: {', '.join(sorted(_REFITS))})") from None
    return {k: float(v) for k, v in redo(record).items()}
