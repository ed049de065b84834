"""Calibration snapshots: one immutable, validated document of what calibration measured."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, NoReturn

from labqpu.errors import BackendPropertyError, InvalidSnapshotError
from labqpu.store.parameter import MISSING, Parameter, freeze
from labqpu.store.validation import (
    SECTIONS,
    canonical_json,
    check_timestamp,
    is_id,
    normalise_document,
    pair_key,
    parse_gate,
    parse_pair,
    sha256_hex,
    utc_now,
)


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
        doc = normalise_document(document)
        if not is_id(snapshot_id):
            raise InvalidSnapshotError(
                f"snapshot_id must be a non-negative int, not {snapshot_id!r}"
            )
        if parent_id is not None and not is_id(parent_id):
            raise InvalidSnapshotError(f"parent_id must be None or an int id, not {parent_id!r}")
        init = object.__setattr__
        init(self, "_document", doc)
        init(self, "_content_hash", sha256_hex(canonical_json(doc)))
        init(self, "_snapshot_id", snapshot_id)
        init(self, "_created", utc_now() if created is None else check_timestamp(created))
        init(self, "_parent_id", parent_id)
        init(self, "_qubits", _frozen_section(doc["qubits"], int))
        init(self, "_pairs", _frozen_section(doc["pairs"], parse_pair))
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
            BackendPropertyError: the parameter is absent and no ``default`` was given.
        """
        return self._value(self._qubits.get(qubit), f"qubit {qubit}", name, default)

    def pair_value(self, pair: tuple[int, int], name: str, default: Any = MISSING) -> Any:
        """The value of parameter ``name`` of ``pair`` (either order), in its named unit.

        Raises:
            BackendPropertyError: the parameter is absent and no ``default`` was given.
        """
        key = parse_pair(pair)
        return self._value(self._pairs.get(key), f"pair {pair_key(key)}", name, default)

    def gate_value(self, gate: str, name: str, default: Any = MISSING) -> Any:
        """The value of parameter ``name`` of ``gate`` (``"sx:0"``), in its named unit.

        Raises:
            BackendPropertyError: the parameter is absent and no ``default`` was given.
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
        raise BackendPropertyError(
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
                        freeze(entry["value"]), entry["timestamp"], entry["experiment"]
                    )
                    for param, entry in params.items()
                }
            )
            for key, params in section.items()
        }
    )


def _natural_order(section: str, key: str) -> tuple[Any, ...]:
    if section == "qubits":
        return (int(key),)
    if section == "pairs":
        return parse_pair(key)
    name, qubits = parse_gate(key)
    return (name, qubits)


def document_changes(old: Mapping[str, Any], new: Mapping[str, Any]
                     ) -> Iterator[tuple[str, str, str]]:
    """(section, key, name) of every parameter added, removed or changed from document ``old``
    to ``new`` (value, timestamp or experiment), ordered qubits, pairs, gates, then by key and
    name."""
    for section in SECTIONS:
        old_section, new_section = old[section], new[section]
        keys = sorted(
            old_section.keys() | new_section.keys(), key=lambda k: _natural_order(section, k)
        )
        for key in keys:
            old_params, new_params = old_section.get(key, {}), new_section.get(key, {})
            for name in sorted(old_params.keys() | new_params.keys()):
                if name not in old_params or name not in new_params or \
                        canonical_json(old_params[name]) != canonical_json(new_params[name]):
                    yield section, key, name


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
    for section, key, name in document_changes(old_doc, new_doc):
        old_params, new_params = old_doc[section].get(key, {}), new_doc[section].get(key, {})
        item = {"section": section, "key": key, "name": name}
        if name not in old_params:
            result["added"].append({**item, "new": new_params[name]})
        elif name not in new_params:
            result["removed"].append({**item, "old": old_params[name]})
        else:
            result["changed"].append({**item, "old": old_params[name], "new": new_params[name]})
    return result
