"""Versioned calibration snapshots in a crash-safe SQLite store.

A *snapshot* is an immutable document describing what calibration measured on one device::

    {
      "device": "lab5",
      "qubits": {"0": {"frequency_hz": {"value": 5.0213e9,
                                        "timestamp": "2026-11-21T23:00:00+00:00",
                                        "experiment": "ramsey"}, ...}, ...},
      "pairs":  {"0-1": {"cz_amplitude": {...}, "cz_duration_s": {...}, ...}},
      "gates":  {"sx:0": {"error": {...}, "duration_s": {...}}, "cz:0-1": {...}},
      "notes":  "free text"
    }

Every leaf is a :class:`Parameter` — a JSON value (number, bool, string, list or object),
the timezone-aware UTC time it was measured, and the experiment that measured it. Names
carry SI units (``frequency_hz``, ``duration_s``, ``t1_s``); dimensionless quantities
(``error``, ``readout_assignment_fidelity``, ``cz_amplitude``) have none. Pair keys are
normalised to ``"low-high"``; parameters that refer to "the first/second qubit of the pair"
(``cz_phase_0_rad``) refer to that normalised order. Gate keys are ``"name:q"`` or
``"name:q0-q1"`` in the gate's own (directed) qubit order.

:class:`CalibrationStore` keeps every version in SQLite (WAL journal, one ``BEGIN IMMEDIATE``
transaction per write), so a writer that dies mid-commit leaves nothing visible and readers
always get the newest complete snapshot. :class:`SnapshotBuilder` assembles a document
parameter by parameter; :func:`export_backend_properties` and
:func:`document_from_backend_properties` translate to and from the Qiskit BackendProperties
JSON layout.

This module is a leaf: it imports the standard library only.

    CalibrationError
    ├── CalibrationMissingError   (also KeyError) no such snapshot, or a parameter is absent
    ├── StaleSnapshotError        another writer committed since the snapshot a run started from
    └── InvalidSnapshotError      (also ValueError) a document or value is malformed; nothing
                                  was written
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import numbers
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn


class CalibrationError(Exception):
    """Base class: something is wrong with calibration data or the calibration store.

    Attributes:
        subject: what the error concerns (``"qubit 3"``, ``"pair 0-1"``, ``"gate 'sx:0'"``),
            or ``""``.
        parameter: the parameter name concerned, or ``""``.
    """

    def __init__(self, message: str, *, subject: str = "", parameter: str = "") -> None:
        self.subject = subject
        self.parameter = parameter
        where = ", ".join(
            part for part in (subject, f"parameter {parameter!r}" if parameter else "") if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class CalibrationMissingError(CalibrationError, KeyError):
    """A snapshot or a calibrated parameter does not exist."""

    def __str__(self) -> str:
        # KeyError would print the message as a quoted repr.
        return Exception.__str__(self)


class StaleSnapshotError(CalibrationError):
    """A commit expected a parent snapshot that is no longer the newest one."""


class InvalidSnapshotError(CalibrationError, ValueError):
    """A calibration document or value is malformed; nothing was written."""


SCHEMA_VERSION = 1
"""Version of the SQLite schema this module reads and writes."""

EXPORT_FORMAT = "labqpu.calibration.snapshot/1"
"""Value of the ``format`` field of :meth:`CalibrationStore.export_json` documents."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Sentinel default of the ``*_value`` lookups: raise when the parameter is absent."""


@dataclass(frozen=True)
class Parameter:
    """One calibrated value with its provenance.

    Attributes:
        value: a number, bool, string, or a read-only JSON list/object; the unit is the one
            named by the parameter (``frequency_hz`` in Hz, ``duration_s`` in seconds).
        timestamp: when it was measured, ISO-8601 in UTC (``"2026-11-21T23:00:00+00:00"``).
        experiment: the experiment that produced it (``"ramsey"``, ``"rb"``, ``"manual"``).
    """

    value: Any
    timestamp: str
    experiment: str


@dataclass(frozen=True)
class SnapshotInfo:
    """Summary of one stored snapshot, as listed by :meth:`CalibrationStore.history`."""

    snapshot_id: int
    device: str
    created: str
    parent_id: int | None
    content_hash: str
    notes: str


def _read_only(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError("calibration values are read-only; build a new snapshot with SnapshotBuilder")


class _FrozenList(list):
    """A list that refuses mutation; compares equal to the plain list with the same items."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[type, tuple[list]]:
        return (_FrozenList, (list(self),))


class _FrozenDict(dict):
    """A dict that refuses mutation; compares equal to the plain dict with the same items."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (_FrozenDict, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return _FrozenList(_freeze(item) for item in value)
    if isinstance(value, dict):
        return _FrozenDict((key, _freeze(item)) for key, item in value.items())
    return value


# --------------------------------------------------------------------------- validation

_SECTIONS = ("qubits", "pairs", "gates")
_DOCUMENT_KEYS = frozenset({"device", "notes", *_SECTIONS})
_ENTRY_KEYS = ("value", "timestamp", "experiment")
_INDEX = r"(?:0|[1-9][0-9]*)"
_INDEX_RE = re.compile(_INDEX)
_PAIR_RE = re.compile(rf"({_INDEX})-({_INDEX})")
_GATE_RE = re.compile(rf"([A-Za-z_][A-Za-z0-9_]*):({_INDEX}(?:-{_INDEX})*)")


def _utc_now() -> str:
    return datetime.now(UTC).isoformat()


def _canonical_json(document: Any) -> str:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _sha256(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _qubit_index(key: object) -> int:
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


def _pair(key: object) -> tuple[int, int]:
    """A pair key (``"1-0"``, ``(1, 0)``) as ``(low, high)``."""
    if isinstance(key, str):
        match = _PAIR_RE.fullmatch(key)
        if match is None:
            raise InvalidSnapshotError(
                f"pair key {key!r} is not of the form 'a-b' with non-negative integers a != b"
            )
        a, b = int(match[1]), int(match[2])
    elif isinstance(key, tuple | list) and len(key) == 2:
        a, b = _qubit_index(key[0]), _qubit_index(key[1])
    else:
        raise InvalidSnapshotError(f"pair {key!r} is neither 'a-b' nor a tuple (a, b)")
    if a == b:
        raise InvalidSnapshotError(f"pair {key!r} couples qubit {a} to itself")
    return (a, b) if a < b else (b, a)


def _gate(key: object) -> tuple[str, tuple[int, ...]]:
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


def _pair_key(pair: tuple[int, int]) -> str:
    return f"{pair[0]}-{pair[1]}"


def _check_name(name: object, subject: str) -> str:
    if not (isinstance(name, str) and name.isascii() and name.isidentifier()):
        raise InvalidSnapshotError(
            f"parameter name {name!r} is not a non-empty identifier (e.g. 'frequency_hz')",
            subject=subject,
        )
    return name


def _json_value(value: Any, path: str, subject: str, parameter: str) -> Any:
    """``value`` as plain, finite JSON data (tuples become lists, numpy scalars numbers)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
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


def _timestamp(value: object, subject: str = "", parameter: str = "") -> str:
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
    return moment.astimezone(UTC).isoformat()


def _entry(entry: object, subject: str, parameter: str) -> dict[str, Any]:
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
        "timestamp": _timestamp(entry["timestamp"], subject, parameter),
        "experiment": experiment,
    }


def _parameters(params: object, subject: str) -> dict[str, dict[str, Any]]:
    if not isinstance(params, Mapping):
        raise InvalidSnapshotError(
            f"must map parameter names to entries, not {type(params).__name__}", subject=subject
        )
    return {
        name: _entry(params[name], subject, name)
        for name in sorted(_check_name(name, subject) for name in params)
    }


def _device(device: object) -> str:
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


def _normalise_document(document: object) -> dict[str, Any]:
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
    device = _device(document["device"])
    notes = document.get("notes", "")
    if not isinstance(notes, str):
        raise InvalidSnapshotError(f"notes must be a string, not {type(notes).__name__}")

    qubits: dict[int, dict[str, Any]] = {}
    for key, params in _section_items(document, "qubits"):
        index = _qubit_index(key)
        _add_unique(qubits, index, _parameters(params, f"qubit {index}"), f"qubit {index}")
    pairs: dict[tuple[int, int], dict[str, Any]] = {}
    for key, params in _section_items(document, "pairs"):
        pair = _pair(key)
        subject = f"pair {_pair_key(pair)}"
        _add_unique(pairs, pair, _parameters(params, subject), subject)
    gates: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    for key, params in _section_items(document, "gates"):
        gate = _gate(key)
        subject = f"gate {key!r}"
        _add_unique(gates, gate, _parameters(params, subject), subject)

    return {
        "device": device,
        "qubits": {str(q): qubits[q] for q in sorted(qubits)},
        "pairs": {_pair_key(p): pairs[p] for p in sorted(pairs)},
        "gates": {_gate_key(name, qs): gates[(name, qs)] for name, qs in sorted(gates)},
        "notes": notes,
    }


def _gate_key(name: str, qubits: tuple[int, ...]) -> str:
    return f"{name}:{'-'.join(map(str, qubits))}"


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _add_unique(section: dict[Any, Any], key: Any, params: dict[str, Any], subject: str) -> None:
    if key in section:
        raise InvalidSnapshotError("appears twice in the document", subject=subject)
    section[key] = params


# --------------------------------------------------------------------------- snapshot


class Snapshot:
    """One immutable, validated calibration snapshot of one device.

    ``Snapshot(document, snapshot_id, created, parent_id)`` validates ``document`` (raising
    :class:`InvalidSnapshotError`); snapshots read from a :class:`CalibrationStore` carry the
    store's id, creation time and parent. Everything is read-only: the mappings are
    ``MappingProxyType`` views and list/object values refuse mutation. Two snapshots are
    equal when id, creation time, parent and content hash agree; compare ``content_hash``
    to ask whether two snapshots hold the same calibration.

    Attributes:
        snapshot_id: id in the store (0 for a snapshot that was never committed).
        device: device name, e.g. ``"lab5"``.
        created: when the snapshot was committed, ISO-8601 UTC.
        parent_id: the snapshot this one was derived from, or ``None``.
        content_hash: hex SHA-256 of the canonical JSON document (sorted keys, no spaces).
        qubits: ``{qubit: {name: Parameter}}``.
        pairs: ``{(low, high): {name: Parameter}}``.
        gates: ``{"sx:0": {name: Parameter}}``.
        notes: free text.
    """

    __slots__ = (
        "_content_hash",
        "_created",
        "_document",
        "_gates",
        "_pairs",
        "_parent_id",
        "_qubits",
        "_snapshot_id",
    )

    def __init__(
        self,
        document: Mapping[str, Any],
        snapshot_id: int = 0,
        created: str | datetime | None = None,
        parent_id: int | None = None,
    ) -> None:
        doc = _normalise_document(document)
        if not _is_id(snapshot_id):
            raise InvalidSnapshotError(
                f"snapshot_id must be a non-negative int, not {snapshot_id!r}"
            )
        if parent_id is not None and not _is_id(parent_id):
            raise InvalidSnapshotError(f"parent_id must be None or an int id, not {parent_id!r}")
        init = object.__setattr__
        init(self, "_document", doc)
        init(self, "_content_hash", _sha256(_canonical_json(doc)))
        init(self, "_snapshot_id", snapshot_id)
        init(self, "_created", _utc_now() if created is None else _timestamp(created))
        init(self, "_parent_id", parent_id)
        init(self, "_qubits", _frozen_section(doc["qubits"], int))
        init(self, "_pairs", _frozen_section(doc["pairs"], _pair))
        init(self, "_gates", _frozen_section(doc["gates"], str))

    @classmethod
    def from_document(
        cls,
        document: Mapping[str, Any],
        snapshot_id: int = 0,
        created: str | datetime | None = None,
        parent_id: int | None = None,
    ) -> Snapshot:
        """Validate ``document`` (the JSON layout of the module docstring) into a snapshot.

        ``created`` defaults to now (UTC).

        Raises:
            InvalidSnapshotError: naming the qubit/pair/gate and parameter at fault.
        """
        return cls(document, snapshot_id, created, parent_id)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Snapshot is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Snapshot is immutable; cannot delete {name!r}")

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (Snapshot, (self._document, self._snapshot_id, self._created, self._parent_id))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def _identity(self) -> tuple[Any, ...]:
        return (self._snapshot_id, self._created, self._parent_id, self._content_hash)

    def __repr__(self) -> str:
        return (
            f"Snapshot(id={self._snapshot_id}, device={self.device!r}, created={self._created!r},"
            f" qubits={len(self._qubits)}, pairs={len(self._pairs)}, gates={len(self._gates)})"
        )

    @property
    def snapshot_id(self) -> int:
        """Id in the store; 0 for a snapshot that was never committed."""
        return self._snapshot_id

    @property
    def device(self) -> str:
        """Name of the device this snapshot calibrates."""
        return self._document["device"]

    @property
    def created(self) -> str:
        """Commit time, ISO-8601 UTC."""
        return self._created

    @property
    def parent_id(self) -> int | None:
        """The snapshot this one was derived from, or ``None``."""
        return self._parent_id

    @property
    def content_hash(self) -> str:
        """Hex SHA-256 of the canonical JSON document."""
        return self._content_hash

    @property
    def qubits(self) -> Mapping[int, Mapping[str, Parameter]]:
        """Per-qubit parameters, ``{qubit: {name: Parameter}}``."""
        return self._qubits

    @property
    def pairs(self) -> Mapping[tuple[int, int], Mapping[str, Parameter]]:
        """Per-pair parameters keyed by ``(low, high)``."""
        return self._pairs

    @property
    def gates(self) -> Mapping[str, Mapping[str, Parameter]]:
        """Per-gate parameters keyed by ``"name:q"`` / ``"name:q0-q1"``."""
        return self._gates

    @property
    def notes(self) -> str:
        """Free text."""
        return self._document["notes"]

    def to_document(self) -> dict[str, Any]:
        """The snapshot as a fresh, mutable JSON document (the module docstring's layout)."""
        return copy.deepcopy(self._document)

    def qubit_value(self, qubit: int, name: str, default: Any = MISSING) -> Any:
        """The value of parameter ``name`` of ``qubit``, in the unit its name states.

        Raises:
            CalibrationMissingError: the parameter is absent and no ``default`` was given.
        """
        return self._value(self._qubits.get(qubit), f"qubit {qubit}", name, default)

    def pair_value(self, pair: tuple[int, int], name: str, default: Any = MISSING) -> Any:
        """The value of parameter ``name`` of ``pair`` (either order), in its named unit.

        Raises:
            CalibrationMissingError: the parameter is absent and no ``default`` was given.
        """
        key = _pair(pair)
        return self._value(self._pairs.get(key), f"pair {_pair_key(key)}", name, default)

    def gate_value(self, gate: str, name: str, default: Any = MISSING) -> Any:
        """The value of parameter ``name`` of ``gate`` (``"sx:0"``), in its named unit.

        Raises:
            CalibrationMissingError: the parameter is absent and no ``default`` was given.
        """
        return self._value(self._gates.get(gate), f"gate {gate!r}", name, default)

    def _value(
        self, params: Mapping[str, Parameter] | None, subject: str, name: str, default: Any
    ) -> Any:
        if params is not None and name in params:
            return params[name].value
        if default is not MISSING:
            return default
        hint = f"; {subject} has no calibration at all" if params is None else ""
        raise CalibrationMissingError(
            f"not in calibration snapshot {self._snapshot_id} of device {self.device!r}{hint}",
            subject=subject,
            parameter=name,
        )


def _frozen_section(
    section: dict[str, dict[str, dict[str, Any]]], parse_key: Callable[[str], Any]
) -> Mapping[Any, Mapping[str, Parameter]]:
    return MappingProxyType(
        {
            parse_key(key): MappingProxyType(
                {
                    param: Parameter(
                        _freeze(entry["value"]), entry["timestamp"], entry["experiment"]
                    )
                    for param, entry in params.items()
                }
            )
            for key, params in section.items()
        }
    )


# --------------------------------------------------------------------------- builder


class SnapshotBuilder:
    """Assemble a calibration document parameter by parameter.

    Each setter validates its value at once (raising :class:`InvalidSnapshotError` naming the
    qubit, pair or gate and the parameter) and returns the builder, so calls chain::

        doc = (SnapshotBuilder.from_snapshot(store.latest())
               .set_qubit(0, "frequency_hz", 5.0213e9, "ramsey")
               .set_pair((0, 1), "cz_amplitude", 0.41, "cz_chevron")
               .build_document())
        store.commit(doc)

    ``timestamp`` defaults to now; pass an aware ``datetime`` or ISO-8601 string otherwise.
    """

    def __init__(self, device: str, *, notes: str = "") -> None:
        self._device = _device(device)
        self.notes = notes
        self._qubits: dict[int, dict[str, dict[str, Any]]] = {}
        self._pairs: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
        self._gates: dict[tuple[str, tuple[int, ...]], dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> SnapshotBuilder:
        """A builder holding a copy of everything in ``snapshot`` (which stays unchanged)."""
        builder = cls(snapshot.device, notes=snapshot.notes)
        document = snapshot.to_document()
        builder._qubits = {int(key): params for key, params in document["qubits"].items()}
        builder._pairs = {_pair(key): params for key, params in document["pairs"].items()}
        builder._gates = {_gate(key): params for key, params in document["gates"].items()}
        return builder

    @property
    def device(self) -> str:
        """Name of the device the document describes."""
        return self._device

    def set_qubit(
        self,
        qubit: int,
        name: str,
        value: Any,
        experiment: str,
        timestamp: str | datetime | None = None,
    ) -> SnapshotBuilder:
        """Set parameter ``name`` of ``qubit`` (value in the unit the name states)."""
        index = _qubit_index(qubit)
        _set_entry(self._qubits, index, f"qubit {index}", name, value, experiment, timestamp)
        return self

    def set_pair(
        self,
        pair: tuple[int, int],
        name: str,
        value: Any,
        experiment: str,
        timestamp: str | datetime | None = None,
    ) -> SnapshotBuilder:
        """Set parameter ``name`` of ``pair``; the pair is stored as ``(low, high)``."""
        key = _pair(pair)
        _set_entry(self._pairs, key, f"pair {_pair_key(key)}", name, value, experiment, timestamp)
        return self

    def set_gate(
        self,
        gate: str,
        name: str,
        value: Any,
        experiment: str,
        timestamp: str | datetime | None = None,
    ) -> SnapshotBuilder:
        """Set parameter ``name`` (``error``, ``duration_s``) of ``gate`` (``"sx:0"``)."""
        key = _gate(gate)
        _set_entry(self._gates, key, f"gate {gate!r}", name, value, experiment, timestamp)
        return self

    def remove_qubit(self, qubit: int, name: str | None = None) -> SnapshotBuilder:
        """Remove parameter ``name`` of ``qubit``; without ``name``, remove the qubit with
        every pair and gate that involves it.

        Raises:
            CalibrationMissingError: there was nothing to remove.
        """
        index = _qubit_index(qubit)
        subject = f"qubit {index}"
        if name is not None:
            _remove_entry(self._qubits, index, subject, name)
            return self
        found = self._qubits.pop(index, None) is not None
        found |= _remove_where(self._pairs, lambda pair: index in pair)
        found |= _remove_where(self._gates, lambda gate: index in gate[1])
        if not found:
            raise CalibrationMissingError("nothing to remove", subject=subject)
        return self

    def remove_pair(self, pair: tuple[int, int], name: str | None = None) -> SnapshotBuilder:
        """Remove parameter ``name`` of ``pair``; without ``name``, remove the pair with every
        gate acting on exactly its two qubits.

        Raises:
            CalibrationMissingError: there was nothing to remove.
        """
        key = _pair(pair)
        subject = f"pair {_pair_key(key)}"
        if name is not None:
            _remove_entry(self._pairs, key, subject, name)
            return self
        found = self._pairs.pop(key, None) is not None
        found |= _remove_where(self._gates, lambda gate: sorted(gate[1]) == list(key))
        if not found:
            raise CalibrationMissingError("nothing to remove", subject=subject)
        return self

    def remove_gate(self, gate: str, name: str | None = None) -> SnapshotBuilder:
        """Remove parameter ``name`` of ``gate``; without ``name``, the whole gate entry.

        Raises:
            CalibrationMissingError: there was nothing to remove.
        """
        key = _gate(gate)
        subject = f"gate {gate!r}"
        if name is not None:
            _remove_entry(self._gates, key, subject, name)
        elif self._gates.pop(key, None) is None:
            raise CalibrationMissingError("nothing to remove", subject=subject)
        return self

    def build_document(self) -> dict[str, Any]:
        """The document as it stands: fresh, validated, ready for
        :meth:`CalibrationStore.commit`."""
        return _normalise_document(
            {
                "device": self._device,
                "qubits": {str(q): params for q, params in self._qubits.items()},
                "pairs": {_pair_key(pair): params for pair, params in self._pairs.items()},
                "gates": {_gate_key(*gate): params for gate, params in self._gates.items()},
                "notes": self.notes,
            }
        )


def _set_entry(
    section: dict[Any, dict[str, dict[str, Any]]],
    key: Any,
    subject: str,
    name: str,
    value: Any,
    experiment: str,
    timestamp: str | datetime | None,
) -> None:
    _check_name(name, subject)
    entry = {
        "value": value,
        "timestamp": _utc_now() if timestamp is None else timestamp,
        "experiment": experiment,
    }
    section.setdefault(key, {})[name] = _entry(entry, subject, name)


def _remove_entry(
    section: dict[Any, dict[str, dict[str, Any]]], key: Any, subject: str, name: str
) -> None:
    params = section.get(key, {})
    if name not in params:
        raise CalibrationMissingError("nothing to remove", subject=subject, parameter=name)
    del params[name]
    if not params:
        del section[key]


def _remove_where(section: dict[Any, Any], predicate: Callable[[Any], bool]) -> bool:
    doomed = [key for key in section if predicate(key)]
    for key in doomed:
        del section[key]
    return bool(doomed)


# --------------------------------------------------------------------------- diff


def _natural_order(section: str, key: str) -> tuple[Any, ...]:
    if section == "qubits":
        return (int(key),)
    if section == "pairs":
        return _pair(key)
    name, qubits = _gate(key)
    return (name, qubits)


def diff_snapshots(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """What changed from snapshot ``a`` to snapshot ``b``, as JSON-ready data::

        {"from_id": a.snapshot_id, "to_id": b.snapshot_id,
         "added":   [{"section": "qubits", "key": "0", "name": "t1_s", "new": entry}],
         "removed": [{"section": ..., "key": ..., "name": ..., "old": entry}],
         "changed": [{"section": ..., "key": ..., "name": ..., "old": entry, "new": entry}]}

    ``key`` is the document key (``"0"``, ``"0-1"``, ``"sx:0"``); an entry is
    ``{"value", "timestamp", "experiment"}``. A parameter counts as changed when its value,
    timestamp or experiment differs (``1`` and ``1.0`` and ``True`` are different values).
    Lists are ordered qubits, pairs, gates, then by key and name.
    """
    old_doc, new_doc = a.to_document(), b.to_document()
    result: dict[str, Any] = {
        "from_id": a.snapshot_id,
        "to_id": b.snapshot_id,
        "added": [],
        "removed": [],
        "changed": [],
    }
    for section in _SECTIONS:
        old_section, new_section = old_doc[section], new_doc[section]
        keys = sorted(
            old_section.keys() | new_section.keys(), key=lambda k: _natural_order(section, k)
        )
        for key in keys:
            old_params, new_params = old_section.get(key, {}), new_section.get(key, {})
            for name in sorted(old_params.keys() | new_params.keys()):
                item = {"section": section, "key": key, "name": name}
                if name not in old_params:
                    result["added"].append({**item, "new": new_params[name]})
                elif name not in new_params:
                    result["removed"].append({**item, "old": old_params[name]})
                elif _canonical_json(old_params[name]) != _canonical_json(new_params[name]):
                    result["changed"].append(
                        {**item, "old": old_params[name], "new": new_params[name]}
                    )
    return result


# --------------------------------------------------------------------------- BackendProperties

# (snapshot name, BackendProperties name, BackendProperties unit, decimal exponent of that
# unit in SI). readout_error is exported as 1 - readout_assignment_fidelity.
_BP_QUBIT_FIELDS = (
    ("t1_s", "T1", "us", -6),
    ("t2_s", "T2", "us", -6),
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

    Qubit entries: T1 and T2 in µs (``"us"``, from ``t1_s``/``t2_s``), frequency and
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
        | {q for key in snapshot.gates for q in _gate(key)[1]}
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
    for key in sorted(snapshot.gates, key=_gate):
        gate, gate_qubits = _gate(key)
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
        key = _gate_key(str(gate.get("gate")), tuple(_qubit_index(q) for q in gate_qubits))
        found = (
            _bp_entry(entry, gate_fields, f"gate {key!r}", experiment)
            for entry in _bp_items(gate.get("parameters", []), f"parameters of gate {key!r}")
        )
        params = dict(item for item in found if item is not None)
        if params:
            gates[key] = params
    return _normalise_document(
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


# --------------------------------------------------------------------------- store

_SNAPSHOTS_TABLE = """
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    created TEXT NOT NULL,
    parent_id INTEGER REFERENCES snapshots (id),
    content_hash TEXT NOT NULL,
    document TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1))
)
"""
_SNAPSHOT_COLUMNS = "id, created, parent_id, content_hash, document"


class CalibrationStore:
    """Every calibration snapshot of one device, kept in one SQLite file.

    The file is in WAL mode with ``synchronous=FULL``; each commit is one ``BEGIN IMMEDIATE``
    transaction, so a writer that crashes leaves nothing visible, concurrent writers (threads
    or processes) queue for at most ``timeout_s`` seconds, and readers never wait for writers.
    Readers only ever see complete snapshots (``complete = 1``). The first committed snapshot
    fixes the store's device.

    The store is thread-safe: each thread gets its own connection (also after ``fork``).
    ``close()`` (or leaving a ``with`` block) closes them all. A missing parent directory of
    ``path`` is created.

    Raises:
        CalibrationError: the file is not a calibration store, or has a newer schema.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0) -> None:
        if str(path) == ":memory:":
            raise ValueError(
                "a calibration store needs a file: ':memory:' is private to one "
                "connection and the store opens one per thread"
            )
        self._path = Path(path)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._initialise()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    def __repr__(self) -> str:
        return f"CalibrationStore({str(self._path)!r})"

    def __enter__(self) -> CalibrationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection of this store; further use raises CalibrationError."""
        with self._lock:
            self._closed = True
            self._set_aside_after_fork()
            connections, self._connections = self._connections, []
        for _, conn in connections:
            conn.close()

    # ------------------------------------------------------------------ connections

    def _initialise(self) -> None:
        """Switch the file to WAL; create the schema if it has none (the only time opening a
        store takes the write lock); check the schema version."""
        conn = self._connection()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        if exists is None:
            with self._transaction() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                if conn.execute("SELECT 1 FROM schema_version").fetchone() is None:
                    conn.execute(_SNAPSHOTS_TABLE)
                    conn.execute(
                        "INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,)
                    )
        (version,) = self._query("SELECT max(version) FROM schema_version")[0]
        if version != SCHEMA_VERSION:
            raise CalibrationError(
                f"calibration store {self._path} has schema version {version}; "
                f"this labqpu reads version {SCHEMA_VERSION}"
            )

    def _open(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only so that close() may close the connections of other
            # threads; otherwise each connection is used by the thread that opened it.
            conn = sqlite3.connect(
                self._path,
                timeout=self._timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        pid = os.getpid()
        if not self._closed and getattr(local, "pid", None) == pid:
            return local.conn
        with self._lock:
            if self._closed:
                raise CalibrationError(f"calibration store {self._path} is closed")
            self._set_aside_after_fork()
            alive = []
            for thread, conn in self._connections:
                if thread.is_alive():
                    alive.append((thread, conn))
                else:
                    conn.close()
            conn = self._open()
            alive.append((threading.current_thread(), conn))
            self._connections = alive
        local.conn, local.pid = conn, pid
        return conn

    def _set_aside_after_fork(self) -> None:
        """In a forked child (called under the lock): set the parent's connections aside,
        neither used nor closed, as SQLite requires; holding them stops the garbage collector
        from closing them."""
        pid = os.getpid()
        if self._pid != pid:
            self._inherited.extend(conn for _, conn in self._connections)
            self._connections = []
            self._pid = pid

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction, rolled back on any exception."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CalibrationError(
                f"cannot lock calibration store {self._path} for writing: {exc}"
            ) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise CalibrationError(
                    f"writing calibration store {self._path} failed: {exc}"
                ) from exc
            raise

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise CalibrationError(f"reading calibration store {self._path} failed: {exc}") from exc

    def _snapshot(self, row: tuple[Any, ...]) -> Snapshot:
        snapshot_id, created, parent_id, content_hash, document = row
        try:
            snapshot = Snapshot(json.loads(document), snapshot_id, created, parent_id)
        except ValueError as exc:
            raise CalibrationError(
                f"snapshot {snapshot_id} in {self._path} is corrupt: {exc}"
            ) from exc
        if snapshot.content_hash != content_hash:
            raise CalibrationError(
                f"snapshot {snapshot_id} in {self._path} is corrupt: its document hashes to "
                f"{snapshot.content_hash}, not the stored {content_hash}"
            )
        return snapshot

    @staticmethod
    def _device_clause(device: str | None) -> tuple[str, tuple[Any, ...]]:
        return ("", ()) if device is None else (" AND device = ?", (device,))

    # ------------------------------------------------------------------ writing

    def commit(
        self,
        document: Mapping[str, Any],
        *,
        parent_id: int | None = None,
        expect_parent: bool = False,
    ) -> Snapshot:
        """Validate ``document`` and store it as the newest snapshot.

        Args:
            document: the JSON layout of the module docstring (e.g. from
                :meth:`SnapshotBuilder.build_document`).
            parent_id: the snapshot this one derives from; default: the newest snapshot.
            expect_parent: optimistic concurrency for calibration runs: refuse to commit
                unless ``parent_id`` (``None``: no snapshot at all) is still the newest one.

        Returns:
            The stored snapshot, with its new id and creation time.

        Raises:
            InvalidSnapshotError: the document is malformed, is for another device than the
                store holds, or ``parent_id`` does not exist. Nothing was written.
            StaleSnapshotError: ``expect_parent`` and another snapshot was committed since
                ``parent_id``. Nothing was written.
        """
        if parent_id is not None and not _is_id(parent_id):
            raise InvalidSnapshotError(f"parent_id must be None or an int id, not {parent_id!r}")
        draft = Snapshot(document)
        canonical = _canonical_json(draft.to_document())
        created = _utc_now()
        with self._transaction() as conn:
            first = conn.execute(
                "SELECT device FROM snapshots WHERE complete = 1 ORDER BY id LIMIT 1"
            ).fetchone()
            if first is not None and first[0] != draft.device:
                raise InvalidSnapshotError(
                    f"the document is for device {draft.device!r}, but {self._path} holds "
                    f"calibrations of device {first[0]!r}"
                )
            row = conn.execute(
                "SELECT id FROM snapshots WHERE complete = 1 ORDER BY id DESC LIMIT 1"
            ).fetchone()
            newest = None if row is None else row[0]
            if expect_parent and newest != parent_id:
                raise StaleSnapshotError(
                    f"expected snapshot {parent_id} to be the newest in {self._path}, but "
                    f"snapshot {newest} is: another calibration committed first; re-read the "
                    "latest snapshot and redo the update"
                )
            if (
                parent_id is not None
                and conn.execute(
                    "SELECT 1 FROM snapshots WHERE id = ? AND complete = 1", (parent_id,)
                ).fetchone()
                is None
            ):
                raise InvalidSnapshotError(
                    f"parent snapshot {parent_id} does not exist in {self._path}"
                )
            parent = newest if parent_id is None else parent_id
            cursor = conn.execute(
                "INSERT INTO snapshots (device, created, parent_id, content_hash, document, "
                "complete) VALUES (?, ?, ?, ?, ?, 1)",
                (draft.device, created, parent, draft.content_hash, canonical),
            )
            snapshot_id = cursor.lastrowid
        return Snapshot(draft.to_document(), snapshot_id, created, parent)

    def import_json(self, document: Mapping[str, Any]) -> Snapshot:
        """Commit an :meth:`export_json` envelope (checking its content hash) or a bare
        document as the newest snapshot.

        Raises:
            InvalidSnapshotError: unknown format, altered export, or an invalid document.
        """
        if isinstance(document, Mapping) and "format" in document:
            if document["format"] != EXPORT_FORMAT:
                raise InvalidSnapshotError(
                    f"unknown export format {document['format']!r}; expected {EXPORT_FORMAT!r}"
                )
            draft = Snapshot(document.get("document"))
            expected = document.get("content_hash")
            if expected is not None and expected != draft.content_hash:
                raise InvalidSnapshotError(
                    f"the export's document hashes to {draft.content_hash}, not the "
                    f"{expected} it records: it was altered or corrupted"
                )
            return self.commit(draft.to_document())
        return self.commit(document)

    def import_backend_properties(
        self, properties: Mapping[str, Any], *, experiment: str = "backend_properties"
    ) -> Snapshot:
        """Commit a snapshot converted from a Qiskit BackendProperties JSON dict (see
        :func:`document_from_backend_properties`)."""
        return self.commit(document_from_backend_properties(properties, experiment=experiment))

    # ------------------------------------------------------------------ reading

    def latest(self, device: str | None = None) -> Snapshot:
        """The newest complete snapshot (of ``device``, if given).

        Raises:
            CalibrationMissingError: there is none.
        """
        clause, parameters = self._device_clause(device)
        rows = self._query(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE complete = 1{clause} "
            "ORDER BY id DESC LIMIT 1",
            parameters,
        )
        if not rows:
            of_device = "" if device is None else f" of device {device!r}"
            raise CalibrationMissingError(
                f"calibration store {self._path} holds no snapshot{of_device}; "
                "run a calibration or import one"
            )
        return self._snapshot(rows[0])

    def latest_id(self, device: str | None = None) -> int | None:
        """Id of the newest complete snapshot, or ``None``: one cheap query, for polling."""
        clause, parameters = self._device_clause(device)
        rows = self._query(
            f"SELECT id FROM snapshots WHERE complete = 1{clause} ORDER BY id DESC LIMIT 1",
            parameters,
        )
        return rows[0][0] if rows else None

    def get(self, snapshot_id: int) -> Snapshot:
        """The complete snapshot with this id.

        Raises:
            CalibrationMissingError: there is none.
        """
        rows = self._query(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ? AND complete = 1",
            (snapshot_id,),
        )
        if not rows:
            raise CalibrationMissingError(
                f"calibration store {self._path} has no snapshot {snapshot_id}"
            )
        return self._snapshot(rows[0])

    def history(self, limit: int = 50) -> list[SnapshotInfo]:
        """The newest ``limit`` complete snapshots, newest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        rows = self._query(
            "SELECT id, device, created, parent_id, content_hash, document FROM snapshots "
            "WHERE complete = 1 ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            SnapshotInfo(
                snapshot_id,
                device,
                created,
                parent_id,
                content_hash,
                json.loads(document).get("notes", ""),
            )
            for snapshot_id, device, created, parent_id, content_hash, document in rows
        ]

    def diff(self, a_id: int, b_id: int) -> dict[str, Any]:
        """Parameters added, removed and changed from snapshot ``a_id`` to ``b_id``
        (see :func:`diff_snapshots`).

        Raises:
            CalibrationMissingError: either snapshot does not exist.
        """
        return diff_snapshots(self.get(a_id), self.get(b_id))

    def export_json(self, snapshot_id: int) -> dict[str, Any]:
        """Snapshot ``snapshot_id`` as a JSON-ready envelope for :meth:`import_json`::

            {"format": EXPORT_FORMAT, "snapshot_id", "device", "created", "parent_id",
             "content_hash", "document"}

        Raises:
            CalibrationMissingError: the snapshot does not exist.
        """
        snapshot = self.get(snapshot_id)
        return {
            "format": EXPORT_FORMAT,
            "snapshot_id": snapshot.snapshot_id,
            "device": snapshot.device,
            "created": snapshot.created,
            "parent_id": snapshot.parent_id,
            "content_hash": snapshot.content_hash,
            "document": snapshot.to_document(),
        }

    def export_backend_properties(
        self, snapshot: Snapshot | int | None = None, *, backend_version: str | None = None
    ) -> dict[str, Any]:
        """A snapshot (default: the latest; or by id) in the Qiskit BackendProperties JSON
        layout (see :func:`export_backend_properties`)."""
        if snapshot is None:
            snapshot = self.latest()
        elif not isinstance(snapshot, Snapshot):
            snapshot = self.get(snapshot)
        return export_backend_properties(snapshot, backend_version=backend_version)
