"""Validation of calibration documents: keys, parameter names, JSON values and timestamps.

Every check raises :class:`~labqpu.errors.InvalidSnapshotError` naming the qubit, pair or gate
and the parameter at fault. The module also holds the key and hashing helpers the checks share
(``pair_key``, ``gate_key``, ``canonical_json``, ``sha256_hex``) and ``utc_now``, the clock
of default timestamps; nothing here writes anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from labqpu.errors import InvalidSnapshotError
from labqpu.store.parameter import Parameter

SECTIONS = ("qubits", "pairs", "gates")
_DOCUMENT_KEYS = frozenset({"device", "notes", *SECTIONS})
_ENTRY_KEYS = ("value", "timestamp", "experiment")
_INDEX = r"(?:0|[1-9][0-9]*)"
_INDEX_RE = re.compile(_INDEX)
_PAIR_RE = re.compile(rf"({_INDEX})-({_INDEX})")
_GATE_RE = re.compile(rf"([A-Za-z_][A-Za-z0-9_]*):({_INDEX}(?:-{_INDEX})*)")


def utc_now() -> str:
    return datetime.now(UTC).isoformat()


def canonical_json(document: Any) -> str:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def qubit_index(key: object) -> int:
    """A qubit key (``3`` or ``"3"``) as a non-negative int."""
    if isinstance(key, int) and not isinstance(key, bool):
        if key < 0:
            raise InvalidSnapshotError(
                f"qubit index {key} is negative; qubit indices are non-negative integers"
            )
        return key
    if isinstance(key, str) and _INDEX_RE.fullmatch(key):
        return int(key)
    raise InvalidSnapshotError(
        f'qubit key {key!r} is not a non-negative integer (write qubit 3 as 3 or "3")'
    )


def parse_pair(key: object) -> tuple[int, int]:
    """A pair key (``"1-0"``, ``(1, 0)``) as ``(low, high)``."""
    if isinstance(key, str):
        match = _PAIR_RE.fullmatch(key)
        if match is None:
            raise InvalidSnapshotError(
                f"pair key {key!r} is not of the form 'a-b' with non-negative integers a != b"
            )
        a, b = int(match[1]), int(match[2])
    elif isinstance(key, tuple | list) and len(key) == 2:
        a, b = qubit_index(key[0]), qubit_index(key[1])
    else:
        raise InvalidSnapshotError(f"pair {key!r} is neither 'a-b' nor a tuple (a, b)")
    if a == b:
        raise InvalidSnapshotError(f"pair {key!r} couples qubit {a} to itself")
    return (a, b) if a < b else (b, a)


def parse_gate(key: object) -> tuple[str, tuple[int, ...]]:
    """A gate key (``"sx:0"``, ``"cz:0-1"``) as ``(name, qubits)``."""
    match = _GATE_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise InvalidSnapshotError(
            f"gate key {key!r} is not of the form 'name:q' or 'name:q0-q1' (e.g. 'sx:0')"
        )
    qubits = tuple(int(q) for q in match[2].split("-"))
    if len(set(qubits)) != len(qubits):
        raise InvalidSnapshotError(f"gate key {key!r} names the same qubit twice")
    return match[1], qubits


def pair_key(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def check_name(name: object, subject: str) -> str:
    if not (isinstance(name, str) and name.isascii() and name.isidentifier()):
        raise InvalidSnapshotError(
            f"parameter name {name!r} is not a non-empty identifier (e.g. 'frequency_hz')",
            subject=subject,
        )
    return name


def json_value(value: Any, subject: str, parameter: str) -> Any:
    """A calibration value as the store keeps it: plain, finite JSON data (tuples become
    lists, numpy scalars numbers); ``InvalidSnapshotError`` naming ``subject`` and
    ``parameter`` for anything else (NaN, infinity, an array, an object)."""
    return _json_value(value, "value", subject, parameter)


def _json_value(value: Any, path: str, subject: str, parameter: str) -> Any:
    """``value`` as plain, finite JSON data (tuples become lists, numpy scalars numbers)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        number = int(value)
        if not -MAX_ID - 1 <= number <= MAX_ID:  # SQLite's integers, as ids
            raise InvalidSnapshotError(
                f"{path} is an integer of {number.bit_length()} bits, outside the signed "
                "64-bit range (-2**63 to 2**63 - 1) of calibration integers",
                subject=subject,
                parameter=parameter,
            )
        return number
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidSnapshotError(
                f"{path} is {number}; calibration values must be finite",
                subject=subject,
                parameter=parameter,
            )
        return number
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidSnapshotError(
                    f"{path} has key {key!r}; JSON object keys must be strings",
                    subject=subject,
                    parameter=parameter,
                )
            result[key] = _json_value(item, f"{path}[{key!r}]", subject, parameter)
        return result
    if isinstance(value, list | tuple):
        return [
            _json_value(item, f"{path}[{i}]", subject, parameter) for i, item in enumerate(value)
        ]
    raise InvalidSnapshotError(
        f"{path} has type {type(value).__module__}.{type(value).__qualname__}, which is not "
        "JSON (numbers, bools, strings, lists, objects); convert arrays with .tolist()",
        subject=subject,
        parameter=parameter,
    )


def check_timestamp(value: object, subject: str = "", parameter: str = "") -> str:
    """A timezone-aware ISO-8601 string or datetime as ISO-8601 in UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidSnapshotError(
                f"timestamp {value!r} is not ISO-8601", subject=subject, parameter=parameter
            ) from None
    else:
        raise InvalidSnapshotError(
            f"timestamp must be an ISO-8601 string, not {value!r}",
            subject=subject,
            parameter=parameter,
        )
    if moment.utcoffset() is None:
        raise InvalidSnapshotError(
            f"timestamp {value!s} has no time zone; use UTC, e.g. '2026-11-21T23:00:00+00:00'",
            subject=subject,
            parameter=parameter,
        )
    try:
        return moment.astimezone(UTC).isoformat()
    except OverflowError:  # 0001-01-01T00:00+01:00 is before the first representable moment
        raise InvalidSnapshotError(f"timestamp {value!s} is out of range", subject=subject,
                                   parameter=parameter) from None


def check_entry(entry: object, subject: str, parameter: str) -> dict[str, Any]:
    """One parameter entry as ``{"value", "timestamp", "experiment"}``, validated."""
    if isinstance(entry, Parameter):
        entry = {"value": entry.value, "timestamp": entry.timestamp, "experiment": entry.experiment}
    if not isinstance(entry, Mapping):
        raise InvalidSnapshotError(
            f"entry must be an object with 'value', 'timestamp' and 'experiment', not {entry!r}",
            subject=subject,
            parameter=parameter,
        )
    missing = [key for key in _ENTRY_KEYS if key not in entry]
    if missing:
        raise InvalidSnapshotError(
            f"entry is missing {', '.join(map(repr, missing))}",
            subject=subject,
            parameter=parameter,
        )
    unknown = sorted(str(key) for key in entry if key not in _ENTRY_KEYS)
    if unknown:
        raise InvalidSnapshotError(
            f"entry has unknown key(s) {', '.join(map(repr, unknown))}",
            subject=subject,
            parameter=parameter,
        )
    if entry["value"] is None:
        raise InvalidSnapshotError(
            "value is null; leave an uncalibrated parameter out instead",
            subject=subject,
            parameter=parameter,
        )
    experiment = entry["experiment"]
    if not (isinstance(experiment, str) and experiment):
        raise InvalidSnapshotError(
            f"experiment must be a non-empty string, not {experiment!r}",
            subject=subject,
            parameter=parameter,
        )
    return {
        "value": _json_value(entry["value"], "value", subject, parameter),
        "timestamp": check_timestamp(entry["timestamp"], subject, parameter),
        "experiment": experiment,
    }


def _parameters(params: object, subject: str) -> dict[str, dict[str, Any]]:
    if not isinstance(params, Mapping):
        raise InvalidSnapshotError(
            f"must map parameter names to entries, not {type(params).__name__}", subject=subject
        )
    return {
        name: check_entry(params[name], subject, name)
        for name in sorted(check_name(name, subject) for name in params)
    }


def check_device(device: object) -> str:
    if not (isinstance(device, str) and device.strip()):
        raise InvalidSnapshotError(f"device must be a non-empty string, not {device!r}")
    return device


def _section_items(document: Mapping[str, Any], section: str) -> list[tuple[object, object]]:
    content = document.get(section, {})
    if not isinstance(content, Mapping):
        raise InvalidSnapshotError(
            f"{section!r} must be an object keyed by {section[:-1]}, not {type(content).__name__}"
        )
    return list(content.items())


def normalise_document(document: object) -> dict[str, Any]:
    """Validate a calibration document; return it as fresh, canonical plain JSON data.

    Raises:
        InvalidSnapshotError: naming the qubit, pair or gate and the parameter at fault.
    """
    if not isinstance(document, Mapping):
        raise InvalidSnapshotError(
            f"a calibration document must be a JSON object, not {type(document).__name__}"
        )
    unknown = sorted(str(key) for key in document if key not in _DOCUMENT_KEYS)
    if unknown:
        raise InvalidSnapshotError(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(map(repr, sorted(_DOCUMENT_KEYS)))}"
        )
    if "device" not in document:
        raise InvalidSnapshotError("the document has no 'device'")
    device = check_device(document["device"])
    notes = document.get("notes", "")
    if not isinstance(notes, str):
        raise InvalidSnapshotError(f"notes must be a string, not {type(notes).__name__}")

    qubits: dict[int, dict[str, Any]] = {}
    for key, params in _section_items(document, "qubits"):
        index = qubit_index(key)
        _add_unique(qubits, index, _parameters(params, f"qubit {index}"), f"qubit {index}")
    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    for key, params in _section_items(document, "pairs"):
        pair = parse_pair(key)
        subject = f"pair {pair_key(pair)}"
        _add_unique(pairs, pair, _parameters(params, subject), subject)
    gates: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    for key, params in _section_items(document, "gates"):
        gate = parse_gate(key)
        subject = f"gate {key!r}"
        _add_unique(gates, gate, _parameters(params, subject), subject)

    return {
        "device": device,
        "qubits": {str(q): qubits[q] for q in sorted(qubits)},
        "pairs": {pair_key(p): pairs[p] for p in sorted(pairs)},
        "gates": {gate_key(name, qs): gates[(name, qs)] for name, qs in sorted(gates)},
        "notes": notes,
    }


def gate_key(name: str, qubits: tuple[int, ...]) -> str:
    return f"{name}:{'-'.join(map(str, qubits))}"


#: The largest snapshot id (SQLite's largest integer).
MAX_ID = 2**63 - 1


def is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def _add_unique(section: dict[Any, Any], key: Any, params: dict[str, Any], subject: str) -> None:
    if key in section:
        raise InvalidSnapshotError("appears twice in the document", subject=subject)
    section[key] = params
