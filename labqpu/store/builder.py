"""``SnapshotBuilder``: assemble a calibration document parameter by parameter."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labqpu.errors import CalibrationMissingError, did_you_mean
from labqpu.store.physics import GATE_CHECKS, PAIR_CHECKS, QUBIT_CHECKS
from labqpu.store.snapshot import Snapshot

if TYPE_CHECKING:
    from labqpu.store.database import CalibrationStore
from labqpu.store.validation import (
    check_device,
    check_entry,
    check_name,
    gate_key,
    normalise_document,
    pair_key,
    parse_gate,
    parse_pair,
    qubit_index,
    utc_now,
)


class SnapshotBuilder:
    """Assemble a calibration document parameter by parameter.

    Each setter validates its value at once (raising :class:`InvalidSnapshotError` naming the
    qubit, pair or gate and the parameter) and returns the builder, so calls chain::

        snapshot = (SnapshotBuilder.from_snapshot(store.latest())
                    .set_qubit(0, "frequency_hz", 5.0213e9, "ramsey")
                    .set_pair((0, 1), "cz_amplitude", 0.41, "cz_chevron")
                    .commit(store))

    :meth:`commit` refuses (``StaleSnapshotError``) when another writer committed since the
    snapshot the builder was made from, whose values the document would otherwise silently
    undo; read the newest snapshot again and apply the change to it.

    ``timestamp`` defaults to now; pass an aware ``datetime`` or ISO-8601 string otherwise.
    """

    def __init__(self, device: str, *, notes: str = "") -> None:
        self._device = check_device(device)
        self.notes = notes
        #: The snapshot the builder was made from (:meth:`from_snapshot`), or None.
        self.parent_id: int | None = None
        self._qubits: dict[int, dict[str, dict[str, Any]]] = {}
        self._pairs: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
        self._gates: dict[tuple[str, tuple[int, ...]], dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> SnapshotBuilder:
        """A builder holding a copy of everything in ``snapshot`` (which stays unchanged) but
        its notes, which describe that snapshot's change: the new one's say "edited from
        snapshot N" until set (``builder.notes``)."""
        notes = f"edited from snapshot {snapshot.snapshot_id}" if snapshot.snapshot_id else ""
        builder = cls(snapshot.device, notes=notes)
        builder.parent_id = snapshot.snapshot_id or None  # 0: never committed
        document = snapshot.to_document()
        builder._qubits = {int(key): params for key, params in document["qubits"].items()}
        builder._pairs = {parse_pair(key): params for key, params in document["pairs"].items()}
        builder._gates = {parse_gate(key): params for key, params in document["gates"].items()}
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
        index = qubit_index(qubit)
        _set_entry(self._qubits, index, f"qubit {index}", name, value, experiment, timestamp,
                   QUBIT_CHECKS)
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
        key = parse_pair(pair)
        _set_entry(self._pairs, key, f"pair {pair_key(key)}", name, value, experiment, timestamp,
                   PAIR_CHECKS)
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
        key = parse_gate(gate)
        _set_entry(self._gates, key, f"gate {gate!r}", name, value, experiment, timestamp,
                   GATE_CHECKS)
        return self

    def remove_qubit(self, qubit: int, name: str | None = None) -> SnapshotBuilder:
        """Remove parameter ``name`` of ``qubit``; without ``name``, remove the qubit with
        every pair and gate that involves it.

        Raises:
            CalibrationMissingError: there was nothing to remove.
        """
        index = qubit_index(qubit)
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
        key = parse_pair(pair)
        subject = f"pair {pair_key(key)}"
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
        key = parse_gate(gate)
        subject = f"gate {gate!r}"
        if name is not None:
            _remove_entry(self._gates, key, subject, name)
        elif self._gates.pop(key, None) is None:
            raise CalibrationMissingError("nothing to remove", subject=subject)
        return self

    def commit(self, store: CalibrationStore) -> Snapshot:
        """Commit the document to ``store`` as the child of the snapshot the builder was made
        from (:meth:`from_snapshot`; a builder made from scratch: of the newest), or of the
        one its last commit made.

        Raises:
            StaleSnapshotError: another snapshot was committed since the one the builder was
                made from (nothing was written): its values would be undone.
            InvalidSnapshotError: as :meth:`CalibrationStore.commit`.
        """
        snapshot = store.commit(self.build_document(), parent_id=self.parent_id,
                                expect_parent=self.parent_id is not None)
        self.parent_id = snapshot.snapshot_id  # a later commit of this builder follows it
        return snapshot

    def build_document(self) -> dict[str, Any]:
        """The document as it stands: fresh, validated, ready for
        :meth:`CalibrationStore.commit`."""
        return normalise_document(
            {
                "device": self._device,
                "qubits": {str(q): params for q, params in self._qubits.items()},
                "pairs": {pair_key(pair): params for pair, params in self._pairs.items()},
                "gates": {gate_key(*gate): params for gate, params in self._gates.items()},
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
    known: Mapping[str, object],
) -> None:
    check_name(name, subject)
    _warn_if_misspelt(name, subject, known)
    entry = {
        "value": value,
        "timestamp": utc_now() if timestamp is None else timestamp,
        "experiment": experiment,
    }
    section.setdefault(key, {})[name] = check_entry(entry, subject, name)


def _warn_if_misspelt(name: str, subject: str, known: Mapping[str, object]) -> None:
    """A ``UserWarning`` for a name labqpu does not read that looks like one it does: the
    start of one or of a few (``t1`` for ``t1_s``, ``pi_amp``, ``t2`` for ``t2_s`` or
    ``t2_echo_s``), in other case, or a letter or two off. A lab's own names
    (``flux_period_a``) are stored as they are, without a word."""
    if name in known:
        return
    started = sorted(k for k in known if k.startswith(name))
    hint = (f"; did you mean {' or '.join(map(repr, started))}?" if 0 < len(started) <= 3
            else did_you_mean(name, known, cutoff=0.88))
    if hint:
        warnings.warn(f"{subject}: {name!r} is not a parameter labqpu knows{hint} It is stored "
                      "as the lab's own parameter, which labqpu does not use.", UserWarning,
                      stacklevel=4)


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
