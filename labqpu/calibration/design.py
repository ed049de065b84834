"""Design values: what a lab knows of its chip and rack before calibrating (fab targets,
datasheets, wiring), the starting point of ``labqpu calibrate --bootstrap`` and what a
snapshot does not hold (resonator and Rabi-rate estimates, the flux-line scale, the sweet-spot
search range).

A design file is TOML (``labqpu/data/<device>_design.toml`` ships for each built-in device):
a ``[device]`` table with :data:`DEVICE_FIELDS`, and one ``[[qubit]]`` table per qubit of the
device with its ``index`` and :data:`QUBIT_FIELDS` (a qubit may also preset a calibrated
parameter of the snapshot layout, such as ``drive_lo_frequency_hz`` or ``flux_bias_a``, as a
starting value). :func:`load_design` checks all of it before anything is measured: a missing,
misspelt, mistyped or out-of-range value is a :class:`~labqpu.errors.CalibrationError` naming
the file, the table and the field.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from labqpu.calibration.bootstrap import DRIVE_LO_BELOW_HZ, drive_lo_hz
from labqpu.calibration.working import Working
from labqpu.errors import CalibrationError
from labqpu.store.physics import QUBIT_CHECKS

__all__ = ["DEVICE_FIELDS", "QUBIT_FIELDS", "SHARED_FIELDS", "default_design_path",
           "load_design", "load_wiring_design"]

Check = Callable[[Any], str | None]


#: The store's own checks (``labqpu.store.physics``), by what they take.
_finite: Check = QUBIT_CHECKS["drive_lo_power_dbm"]
_positive: Check = QUBIT_CHECKS["frequency_hz"]
_pulse: Check = QUBIT_CHECKS["pulse_duration_s"]


def _amplitude(value: Any) -> str | None:
    problem = QUBIT_CHECKS["readout_amplitude"](value)
    return problem or (None if value > 0 else "must be a fraction of full scale in (0, 1]")


#: The ``[device]`` table: every field, with its check (units in the names: Hz, dBm, s, A).
DEVICE_FIELDS: dict[str, Check] = {
    "drive_lo_power_dbm": _finite, "readout_lo_power_dbm": _finite,
    "readout_lo_frequency_hz": _positive, "readout_amplitude": _amplitude,
    "readout_duration_s": _pulse, "pulse_duration_s": _pulse, "pulse_sigma_s": _pulse,
    "rabi_hz_per_amplitude": _positive, "flux_line_phi0_per_amplitude": _positive,
    "flux_bias_search_a": _positive,
}
#: ``[device]`` values the experiments read unless a qubit has its own; the snapshot keeps
#: them per qubit, with the experiment "design" until a node measures a qubit's own
#: (``readout_amplitude``, ``readout_duration_s``).
SHARED_FIELDS = ("drive_lo_power_dbm", "readout_lo_frequency_hz", "readout_lo_power_dbm",
                 "readout_amplitude", "readout_duration_s", "pulse_duration_s", "pulse_sigma_s")
#: The fields every ``[[qubit]]`` table holds besides its ``index``.
QUBIT_FIELDS: dict[str, Check] = {
    "frequency_hz": _positive, "anharmonicity_hz": QUBIT_CHECKS["anharmonicity_hz"],
    "resonator_hz": _positive,
}


def default_design_path(device: str) -> Path:
    """The design values shipped for ``device`` (``labqpu/data/<device>_design.toml``)."""
    return Path(str(resources.files("labqpu") / "data" / f"{device}_design.toml"))


def load_wiring_design(design: str | Path | None, wiring: Path | None,
                       wiring_design: Path | None, *, device: str,
                       num_qubits: int | None = None,
                       check: Callable[[Mapping[str, Any]], None] | None = None) -> Working:
    """The design values a bootstrap starts from (:func:`load_design`): ``design`` when given
    (``--design``), else the wiring file's ``[calibration] design`` (``wiring_design``; a
    missing or unreadable file is named with that field of ``wiring``), else those shipped
    for ``device``."""
    named_by = ("" if design or wiring_design is None
                else f"[calibration] design of {wiring or 'the wiring file'}")
    return load_design(design or wiring_design, device=device, num_qubits=num_qubits,
                       check=check, named_by=named_by)


def load_design(path: str | Path | None = None, *, device: str | None = None,
                num_qubits: int | None = None,
                check: Callable[[Mapping[str, Any]], None] | None = None,
                named_by: str = "") -> Working:
    """The design values in ``path`` (None: those shipped for ``device``) as the starting
    ``Working`` set, checked against ``device`` (its name) and its ``num_qubits`` when given,
    and by ``check`` (e.g. the rack's limits, ``labqpu.rack.limits.check_against_wiring``,
    which the CLI passes), given the values a bootstrap commits for every qubit as a snapshot
    document: its ``[device]`` pulse and readout values and each qubit's presets.
    ``named_by`` says where ``path`` was named (``"[calibration] design of lab.toml"``), for
    the errors of a file that is missing or unreadable.

    Raises:
        CalibrationError: the file is missing (for a device without shipped design values:
            how to give them) or not TOML, or a table or field is missing, unknown, mistyped
            or out of range; the message names the file, the table and the field.
    """
    if path is None:
        if device is None:
            raise ValueError("load_design needs a path or a device")
        path = default_design_path(device)
        if not path.is_file():
            raise CalibrationError(
                f"no design values ship with labqpu for device {device!r}: name the chip's "
                "design values in the wiring file ([calibration] design = \"FILE\"), or give "
                "them with --design FILE (design=FILE in Python): a TOML file laid out as "
                "labqpu/data/lab5_design.toml (docs/calibration.md, 'Design values')")
    path = Path(path)
    named = f" ({named_by})" if named_by else ""
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except FileNotFoundError:
        raise CalibrationError(f"design file {path}{named} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"design file {path}{named} cannot be read: {exc}") from exc
    where = f"design file {path}"
    unknown = sorted(set(document) - {"device", "qubit"})
    if unknown:
        raise CalibrationError(f"{where}: unknown table or field {unknown[0]!r} (a design file "
                               "holds [device] and [[qubit]] tables)")
    table = document.get("device")
    if not isinstance(table, dict):
        raise CalibrationError(f"{where} has no [device] table")
    name = table.get("name", device)
    if not isinstance(name, str) or not name:
        raise CalibrationError(f"{where}, [device] name: must be the device's name (a string)")
    if device is not None and name != device:
        raise CalibrationError(f"{where} holds the design values of device {name!r}, not of "
                               f"{device!r}")
    device_values = _checked(table, DEVICE_FIELDS, {"name": lambda _: None}, f"{where}, [device]")
    rows = document.get("qubit")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise CalibrationError(f"{where} has no [[qubit]] tables")
    qubits: dict[int, dict[str, Any]] = {}
    for row in rows:
        index = row.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise CalibrationError(f"{where}, a [[qubit]] table: index {index!r} must be a "
                                   "qubit number (integer >= 0)")
        if index in qubits:
            raise CalibrationError(f"{where}: two [[qubit]] tables have index {index}")
        if num_qubits is not None and index >= num_qubits:
            raise CalibrationError(f"{where}, [[qubit]] index {index}: device {name} has "
                                   f"qubits 0-{num_qubits - 1}")
        optional = {k: v for k, v in QUBIT_CHECKS.items() if k not in QUBIT_FIELDS}
        qubits[index] = _checked({k: v for k, v in row.items() if k != "index"}, QUBIT_FIELDS,
                                 optional, f"{where}, [[qubit]] index {index}")
    if num_qubits is not None:
        missing = [q for q in range(num_qubits) if q not in qubits]
        if missing:
            raise CalibrationError(f"{where} has no [[qubit]] table for qubit(s) "
                                   f"{', '.join(map(str, missing))} of device {name} (qubits "
                                   f"0-{num_qubits - 1})")
    if check is not None:
        shared = {k: v for k, v in device_values.items() if k in SHARED_FIELDS}
        snapshot = {"qubits": {str(q): {k: {"value": v} for k, v in {**shared, **row}.items()}
                               for q, row in qubits.items()}}
        try:
            check(snapshot)
        except CalibrationError as exc:
            raise CalibrationError(f"{where} ([device] values apply to every qubit): "
                                   f"{exc}") from exc
    return Working(device={"name": name, **device_values}, qubits=qubits)


def _checked(table: Mapping[str, Any], required: Mapping[str, Check],
             optional: Mapping[str, Check], where: str) -> dict[str, Any]:
    """``table``'s fields, each of ``required`` present, none outside ``required`` and
    ``optional``, each passing its check; ``name`` is left out of the result."""
    known = {**required, **optional}
    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise CalibrationError(
                f"{where}: unknown field {key!r} ({hint}known: {', '.join(sorted(known))}; a "
                "note goes in a TOML comment, after #)")
        problem = known[key](value)
        if problem:
            raise CalibrationError(f"{where}, {key} = {value!r}: {problem}")
    absent = [key for key in required if key not in table]
    if absent:
        raise CalibrationError(f"{where}: missing {', '.join(absent)}")
    return {k: v for k, v in table.items() if k != "name"}


def check_bootstrap_plan(design: Working, config: Any, where: str) -> None:
    """Refuse design values (from ``where``, a design file) whose bootstrap the rack of
    ``config`` (the wiring file's ``LabConfig``, ``backend.config``) cannot play, before
    anything is measured: a drive LO the plan would set
    (:func:`drive_lo_hz` of the qubits it serves) outside its generator's frequency range,
    or a sweet-spot search (``flux_bias_search_a``, A) beyond a current source's output
    limit. Both failed minutes into a bootstrap, with the driver's refusal naming neither the
    design file nor its field (a review's case: mA written as A)."""
    groups: dict[str, list[int]] = {}
    for q in sorted(design.qubits):
        groups.setdefault(config.qubits[q].drive_lo, []).append(q)
    for source, group in groups.items():
        if all("drive_lo_frequency_hz" in design.qubits[q] for q in group):
            continue  # set by the design (checked against the rack's limits), not planned
        freqs = {q: design.qubits[q]["frequency_hz"] for q in group}
        lo = drive_lo_hz(freqs.values())
        low, high = config.instrument(source).frequency_range_hz
        if not low <= lo <= high:
            lowest = min(freqs, key=freqs.get)
            raise CalibrationError(
                f"{where}: the bootstrap would set drive LO {source!r} (qubits "
                f"{', '.join(map(str, group))}) to {lo / 1e9:.4f} GHz, {DRIVE_LO_BELOW_HZ / 1e6:g}"
                f" MHz below qubit {lowest}'s frequency_hz = {freqs[lowest]:.6g}, outside the "
                f"generator's range {low:.6g}..{high:.6g} Hz ({config.path or 'the wiring file'}"
                f", instrument {source!r}: min_frequency_hz, max_frequency_hz); nothing was "
                "measured", parameter="frequency_hz")
    search = design.device["flux_bias_search_a"]
    for q in sorted(design.qubits):
        current = config.instrument(config.qubits[q].flux_bias[0])
        if search > current.max_current_a:
            raise CalibrationError(
                f"{where}, [device] flux_bias_search_a = {search!r}: the sweet-spot search "
                f"spans +-{search:g} A, beyond the output limit of current source "
                f"{current.name!r} that biases qubit {q}, {current.max_current_a:g} A "
                f"({config.path or 'the wiring file'}, max_current_a; mA written as A?); "
                "nothing was measured", parameter="flux_bias_search_a")
