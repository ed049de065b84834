"""Experiment records: what a calibration experiment measured, kept so the fit can be redone.

Every experiment run leaves, next to the calibration store (:func:`experiments_directory`:
``experiments/``, or ``<name>_experiments/`` beside a store not named ``calibration.sqlite``),
two files named by its experiment id:

* ``<id>.json``, an :class:`ExperimentRecord`:
  - what was measured (``kind``, ``subject``);
  - when (``measured_at``, ISO-8601 UTC);
  - the values with their standard errors, and the values they replace;
  - the fit quality;
  - the raw sweep data, so that the fit can be redone later with the same pure analysis
    (:func:`labqpu.calibration.rb.refit` for RB);
* ``<id>.png``, its plot: data, fit, the chosen value, and the old value for comparison.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labqpu.errors import CalibrationError

#: Format version of the JSON record.
RECORD_FORMAT = 1


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment's result.

    ``values`` maps a parameter (``"sx:2.error"``, ``"epc"``) to ``[value, stderr]`` (stderr
    ``None`` when the analysis gives none); ``old_values`` the same parameters' values before
    the run (``None``: there was none); ``fit`` the fit's quality figures
    (``reduced_chi2`` ...); ``raw`` the sweep data as plain lists; ``settings`` what the
    acquisition was asked for (lengths, shots ...).
    """

    experiment: str
    kind: str
    subject: str
    measured_at: str
    values: dict[str, list]
    old_values: dict[str, float | None]
    fit: dict[str, float]
    raw: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The record as JSON (non-finite numbers as ``null``)."""
        doc = {"format": RECORD_FORMAT, **asdict(self)}
        return json.dumps(_finite(doc), indent=1) + "\n"

    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/<experiment>.json`` atomically; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.experiment}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)
        return path


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def load_record(path: str | Path) -> ExperimentRecord:
    """Read a record written by :meth:`ExperimentRecord.save`; ``ValueError`` names the file
    and the field when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable experiment record ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: field 'format' must be {RECORD_FORMAT}")
    names = [f for f in ExperimentRecord.__dataclass_fields__]
    missing = [n for n in names if n not in doc and n != "settings"]
    if missing:
        raise ValueError(f"{path}: missing field {missing[0]!r}")
    return ExperimentRecord(**{n: doc[n] for n in names if n in doc})


def experiments_directory(store_path: str | Path) -> Path:
    """Where the records of the calibration store at ``store_path`` go: ``experiments``
    beside the default store (``calibration.sqlite``), ``<name>_experiments`` beside any other
    (``lab_b.sqlite``: ``lab_b_experiments``), so that stores in one folder keep their own."""
    path = Path(store_path)
    return path.parent / ("experiments" if path.name == "calibration.sqlite"
                          else f"{path.stem}_experiments")


def describe(subject: int | tuple[int, ...]) -> str:
    """``"qubit 2"`` or ``"edge 1-2"`` (a qubit also as a 1-tuple)."""
    if not isinstance(subject, int) and len(subject) == 1:
        subject = subject[0]
    return f"qubit {subject}" if isinstance(subject, int) else f"edge {subject[0]}-{subject[1]}"


def qubits_in(label: str) -> tuple[int, ...]:
    """The qubits a subject's label names: ``"qubit 2"`` (2,), ``"edge 1-2"`` (:func:`describe`)
    and a record's ``"edge (1, 2)"`` (1, 2)."""
    return tuple(int(q) for q in re.findall(r"\d+", label))


def check_records_directory(directory: str | Path) -> None:
    """Raise ``CalibrationError`` naming ``directory`` when the experiment records could not be
    written there (a file in its place, a directory that cannot be written), before a run
    measures for minutes and commits, only to fail on its records (a review's case: the
    snapshot was committed, then a traceback, and the records it names never written).
    Makes the directory if it is missing; writes nothing else."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise CalibrationError(f"the experiment records cannot be written to {path} ({exc}); "
                               "a calibration could not keep what it measures") from exc


#: The largest standard error a value may have and still be used: ``(absolute, relative)``
#: per parameter, the bound being the larger of ``absolute`` and ``relative x |value|`` (units
#: of the parameter: Hz, s, full scale, A). An entry under ``"<kind>:<parameter>"`` applies to
#: that experiment kind only. They sit 5x or more above the largest standard error seen in
#: calibration runs on the simulator (2026-11-30: ~490 records, and a review's bootstrap), so
#: they catch a fit that found nothing, not a noisy one: e.g. a Ramsey frequency is known to
#: 0.9-1.4 kHz, the bound is 20 kHz; T2* to 5-10 %, the bound is 50 %. The readout node's
#: frequency has none: its error is half the step of its grid, whatever the data.
UNCERTAINTY_LIMITS: dict[str, tuple[float, float]] = {
    "ramsey:frequency_hz": (20e3, 0.0),
    "qubit_spectroscopy:frequency_hz": (1e6, 0.0),
    "resonator_spectroscopy:readout_frequency_hz": (1e6, 0.0),
    "resonator_hz": (1e6, 0.0),
    "anharmonicity_hz": (1e6, 0.0),
    "pi_amplitude": (0.0, 0.05),
    "pi2_amplitude": (0.0, 0.05),
    "drag_beta": (0.5, 0.0),
    "t1_s": (0.0, 0.3),
    "t2_s": (0.0, 0.5),
    "t2_echo_s": (0.0, 0.3),
    "flux_bias_a": (1e-6, 0.1),
    "readout_assignment_fidelity": (0.02, 0.0),
    "zz_hz": (5e3, 0.1),
    "cz_amplitude": (0.0, 0.01),
    "cz_leakage": (0.01, 0.0),
}


def uncertainty_problem(kind: str, values: dict[str, tuple]) -> str | None:
    """Why the standard errors of ``values`` (parameter -> ``(value, stderr)``, as given to
    ``Kit.record``) are too large to use them (:data:`UNCERTAINTY_LIMITS`), or None. Values
    without a standard error, and parameters without a limit, pass. Pure."""
    for name, (value, stderr) in values.items():
        limit = UNCERTAINTY_LIMITS.get(f"{kind}:{name}", UNCERTAINTY_LIMITS.get(name))
        if limit is None or stderr is None or not isinstance(value, int | float):
            continue
        bound = max(limit[0], limit[1] * abs(value))
        if not (math.isfinite(stderr) and stderr <= bound):
            return (f"{name} = {value:.6g} with a standard error of {stderr:.3g}, above the "
                    f"{bound:.3g} a usable fit gives (UNCERTAINTY_LIMITS)")
    return None
