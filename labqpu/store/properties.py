"""Calibration snapshots to and from the Qiskit BackendProperties JSON layout."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from labqpu.errors import InvalidSnapshotError
from labqpu.store.snapshot import Snapshot
from labqpu.store.validation import gate_key, normalise_document, parse_gate, qubit_index

# (snapshot name, BackendProperties name, BackendProperties unit, decimal exponent of that
# unit in SI). readout_error is exported as 1 - readout_assignment_fidelity. T2 is the
# Hahn-echo T2, as IBM's properties and the Target's QubitProperties give it (the Ramsey T2*,
# ``t2_s``, has no field there).
_BP_QUBIT_FIELDS = (
    ("t1_s", "T1", "us", -6),
    ("t2_echo_s", "T2", "us", -6),
    ("frequency_hz", "frequency", "GHz", 9),
    ("anharmonicity_hz", "anharmonicity", "GHz", 9),
    ("readout_assignment_fidelity", "readout_error", "", 0),
    ("readout_duration_s", "readout_length", "ns", -9),
)
_BP_GATE_FIELDS = (
    ("error", "gate_error", "", 0),
    ("duration_s", "gate_length", "ns", -9),
)
# unit -> (dimension, decimal exponent in SI)
_BP_UNITS = {
    "": ("", 0),
    "s": ("s", 0),
    "ms": ("s", -3),
    "us": ("s", -6),
    "µs": ("s", -6),
    "ns": ("s", -9),
    "Hz": ("Hz", 0),
    "kHz": ("Hz", 3),
    "MHz": ("Hz", 6),
    "GHz": ("Hz", 9),
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shift(value: float, exponent: int) -> float:
    """``value * 10**exponent`` done on the decimal digits of ``repr(value)``, so that unit
    changes are exact as written: ``60e-9`` s is ``60.0`` ns, ``5.0213e9`` Hz ``5.0213`` GHz."""
    return float(Decimal(repr(float(value))).scaleb(exponent))


def _one_minus(value: float) -> float:
    """``1 - value`` on decimal digits: fidelity ``0.97`` is error ``0.03``, not 0.0300...03."""
    return float(1 - Decimal(repr(float(value))))


def export_backend_properties(
    snapshot: Snapshot, *, backend_version: str | None = None
) -> dict[str, Any]:
    """``snapshot`` in the Qiskit BackendProperties JSON layout.

    Qubit entries: T1 and T2 in µs (``"us"``, from ``t1_s``/``t2_echo_s``: the Hahn-echo
    T2, as IBM gives it), frequency and
    anharmonicity in GHz (from ``frequency_hz``/``anharmonicity_hz``), readout_error
    (1 - ``readout_assignment_fidelity``), readout_length in ns (``readout_duration_s``).
    Gate entries: ``gate_error`` (``error``) and ``gate_length`` in ns (``duration_s``) for
    every gate key. Each entry's ``date`` is the parameter's timestamp; ``qubits`` is indexed
    by qubit number. Parameters the snapshot lacks (or holds as non-numbers) are left out,
    never invented. ``backend_version`` defaults to ``"snapshot-<id>"``; ``last_update_date``
    is the newest exported timestamp (the snapshot's creation time if nothing is exported).
    """
    indices = (
        set(snapshot.qubits)
        | {q for pair in snapshot.pairs for q in pair}
        | {q for key in snapshot.gates for q in parse_gate(key)[1]}
    )
    qubits: list[list[dict[str, Any]]] = [[] for _ in range(max(indices, default=-1) + 1)]
    dates: list[str] = []
    for index, params in snapshot.qubits.items():
        for name, bp_name, unit, exponent in _BP_QUBIT_FIELDS:
            param = params.get(name)
            if param is None or not _is_number(param.value):
                continue
            value = (
                _one_minus(param.value)
                if bp_name == "readout_error"
                else _shift(param.value, -exponent)
            )
            qubits[index].append(
                {"date": param.timestamp, "name": bp_name, "unit": unit, "value": value}
            )
            dates.append(param.timestamp)
    gates = []
    for key in sorted(snapshot.gates, key=parse_gate):
        gate, gate_qubits = parse_gate(key)
        parameters = []
        for name, bp_name, unit, exponent in _BP_GATE_FIELDS:
            param = snapshot.gates[key].get(name)
            if param is None or not _is_number(param.value):
                continue
            parameters.append(
                {
                    "date": param.timestamp,
                    "name": bp_name,
                    "unit": unit,
                    "value": _shift(param.value, -exponent),
                }
            )
            dates.append(param.timestamp)
        if parameters:
            gates.append(
                {
                    "gate": gate,
                    "name": f"{gate}{'_'.join(map(str, gate_qubits))}",
                    "qubits": list(gate_qubits),
                    "parameters": parameters,
                }
            )
    return {
        "backend_name": snapshot.device,
        "backend_version": backend_version or f"snapshot-{snapshot.snapshot_id}",
        "last_update_date": max(dates, key=datetime.fromisoformat, default=snapshot.created),
        "qubits": qubits,
        "gates": gates,
        "general": [],
    }


def _bp_items(container: object, what: str) -> list[Any]:
    if not isinstance(container, list | tuple):
        raise InvalidSnapshotError(
            f"BackendProperties {what} must be a list, not {type(container).__name__}"
        )
    return list(container)


def _bp_entry(
    entry: object, fields: Mapping[str, tuple[str, str, str, int]], subject: str, experiment: str
) -> tuple[str, dict[str, Any]] | None:
    """One BackendProperties ``{date, name, unit, value}`` as (snapshot name, entry), or None
    for a name this store does not keep."""
    if not isinstance(entry, Mapping):
        raise InvalidSnapshotError(
            f"BackendProperties entry {entry!r} is not an object", subject=subject
        )
    field = fields.get(entry.get("name"))
    if field is None:
        return None
    name, bp_name, expected_unit, _ = field
    unit = entry.get("unit", "")
    dimension, exponent = _BP_UNITS.get(unit, (None, 0))
    if dimension != _BP_UNITS[expected_unit][0]:
        raise InvalidSnapshotError(
            f"BackendProperties {bp_name!r} has unit {unit!r}; expected one like {expected_unit!r}",
            subject=subject,
            parameter=name,
        )
    raw = entry.get("value")
    if not _is_number(raw):
        raise InvalidSnapshotError(
            f"BackendProperties {bp_name!r} value {raw!r} is not a number",
            subject=subject,
            parameter=name,
        )
    value = _one_minus(raw) if bp_name == "readout_error" else _shift(raw, exponent)
    return name, {"value": value, "timestamp": entry.get("date"), "experiment": experiment}


def document_from_backend_properties(
    properties: Mapping[str, Any], *, experiment: str = "backend_properties"
) -> dict[str, Any]:
    """A calibration document from a Qiskit BackendProperties JSON dict.

    The inverse of :func:`export_backend_properties`: the same names and units, converted
    back to SI (any time unit s/ms/us/ns and frequency unit Hz/kHz/MHz/GHz is accepted).
    Entries this store has no name for (``prob_meas0_prep1``, ``general``) are skipped.
    Every imported parameter is attributed to ``experiment``; ``date`` becomes its timestamp.

    Raises:
        InvalidSnapshotError: malformed layout, unknown unit, non-numeric value, bad date.
    """
    if not isinstance(properties, Mapping):
        raise InvalidSnapshotError(
            f"BackendProperties must be a JSON object, not {type(properties).__name__}"
        )
    qubit_fields = {field[1]: field for field in _BP_QUBIT_FIELDS}
    gate_fields = {field[1]: field for field in _BP_GATE_FIELDS}
    qubits: dict[str, dict[str, Any]] = {}
    for index, entries in enumerate(_bp_items(properties.get("qubits", []), "'qubits'")):
        subject = f"qubit {index}"
        found = (
            _bp_entry(entry, qubit_fields, subject, experiment)
            for entry in _bp_items(entries, f"entries of {subject}")
        )
        params = dict(item for item in found if item is not None)
        if params:
            qubits[str(index)] = params
    gates: dict[str, dict[str, Any]] = {}
    for gate in _bp_items(properties.get("gates", []), "'gates'"):
        if not isinstance(gate, Mapping):
            raise InvalidSnapshotError(f"BackendProperties gate {gate!r} is not an object")
        gate_qubits = _bp_items(gate.get("qubits"), "gate 'qubits'")
        name, indices = str(gate.get("gate")), tuple(qubit_index(q) for q in gate_qubits)
        if name == "cz":  # one gate, which IBM's properties list in both directions
            if tuple(sorted(indices)) != indices and gate_key(name, tuple(sorted(indices))) \
                    in gates:
                continue
            indices = tuple(sorted(indices))
        key = gate_key(name, indices)
        found = (
            _bp_entry(entry, gate_fields, f"gate {key!r}", experiment)
            for entry in _bp_items(gate.get("parameters", []), f"parameters of gate {key!r}")
        )
        params = dict(item for item in found if item is not None)
        if params:
            gates[key] = params
    return normalise_document(
        {
            "device": properties.get("backend_name"),
            "qubits": qubits,
            "gates": gates,
            "notes": (
                f"imported from BackendProperties version {properties.get('backend_version')!s}"
                f" of {properties.get('last_update_date')!s}"
            ),
        }
    )
