"""A calibration committed on top of what another writer committed meanwhile.

Two calibrations run at once on one store (two people, or a watch and a script), each from
the newest snapshot of its start. The first commits; the second found a newer snapshot than
the one it started from and was refused (``StaleSnapshotError``), its measurements lost.
:func:`commit_onto_newest` puts the parameters the second one changed onto the newest
snapshot instead, when the two touched different qubits.

Per qubit, not per parameter: a value is measured with the others of its qubit in place (a
frequency at a flux bias, a gate error with the pulse amplitudes, a cz with both qubits'
pulses), so a value of one writer beside another writer's change on the same qubit would
describe neither device. A parameter counts for every qubit its subject names (a pair's two,
a gate's qubits). A flux bias moves every qubit through the device's DC flux crosstalk: a
change of one by either writer refuses the merge.

:func:`commit_apart_onto_newest` goes further for a calibration whose qubits were measured
apart (randomized benchmarking): a clash costs only the qubits it is on. Its values there are
left out (the other writer's stay), the rest is committed, and the caller is told which qubits
were left out and why.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labqpu.errors import InvalidSnapshotError, StaleSnapshotError
from labqpu.store.snapshot import Snapshot, document_changes
from labqpu.store.validation import canonical_json, parse_gate, parse_pair

if TYPE_CHECKING:
    from labqpu.store.database import CalibrationStore

log = logging.getLogger(__name__)

#: Times a commit is put onto a newer snapshot before it gives up (each try needs yet another
#: writer to commit in between).
MERGE_ATTEMPTS = 5
#: Parameters whose change moves every qubit of the device.
DEVICE_WIDE = frozenset({"flux_bias_a"})
#: Parameters one step sets on several qubits at once (every qubit an LO drives): a
#: calibration that changed one is not split by qubit (:func:`commit_apart_onto_newest`).
LINKED = frozenset({"drive_lo_frequency_hz"})

Change = tuple[str, str, str]


def merge_documents(base: Mapping[str, Any], ours: Mapping[str, Any],
                    theirs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``theirs`` with the parameters ``ours`` changed from ``base`` (set, changed or
    removed), and what refuses it: each change of ``theirs`` on a qubit ``ours`` changed too
    (``"qubit 0 pi_amplitude"``), or of a device-wide parameter (:data:`DEVICE_WIDE`) by
    either. The notes are ``ours``'s."""
    mine, other = _changes(base, ours, theirs)
    return _applied(mine, ours, theirs), [_named(c) for c in _clashes(mine, other)]


def _changes(base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
             ) -> tuple[list[Change], list[Change]]:
    """What ``ours`` changed from ``base``, and what ``theirs`` changed otherwise than ours."""
    mine = list(document_changes(base, ours))
    other = [c for c in document_changes(base, theirs)  # alike in both: no clash
             if canonical_json(_entry(ours, c)) != canonical_json(_entry(theirs, c))]
    return mine, other


def _clashes(mine: list[Change], other: list[Change]) -> list[Change]:
    """The changes of ``other`` on a qubit ``mine`` changes, or all of them when either
    changes a device-wide parameter."""
    touched = _touched(mine)
    wide = any(name in DEVICE_WIDE for _, _, name in mine)
    return [c for c in other if wide or c[2] in DEVICE_WIDE or touched & _qubits(c)]


def _touched(changes: list[Change]) -> set[int]:
    return {q for c in changes for q in _qubits(c)}


def _applied(mine: list[Change], ours: Mapping[str, Any], theirs: Mapping[str, Any]
             ) -> dict[str, Any]:
    """``theirs`` with the changes ``mine`` as ``ours`` holds them; the notes ``ours``'s."""
    merged = copy.deepcopy(dict(theirs))
    for section, key, name in mine:
        params = merged[section].setdefault(key, {})
        if name in ours[section].get(key, {}):
            params[name] = copy.deepcopy(ours[section][key][name])
        else:
            params.pop(name, None)
        if not params:
            del merged[section][key]
    merged["notes"] = ours.get("notes", "")
    return merged


def commit_onto_newest(store: CalibrationStore, document: Mapping[str, Any], base: Snapshot,
                       *, parent_id: int | None = None) -> Snapshot:
    """Commit ``document``, made from snapshot ``base``, as the child of ``parent_id`` (default:
    ``base``). When another writer committed since, what ``document`` changed from ``base``
    goes onto the newest snapshot instead (:func:`merge_documents`; its notes say so), unless
    ``parent_id`` is not ``base`` (the document then replaces that snapshot: no merge).

    Raises:
        StaleSnapshotError: the other writer changed a qubit this document changes too, or a
            flux bias (named; nothing was written), the merged document is refused by the
            store's checks, or writers kept committing in between.
        InvalidSnapshotError: as :meth:`CalibrationStore.commit`, for ``document`` itself.
    """
    snapshot, _ = _commit(store, document, base, parent_id, apart=False)
    assert snapshot is not None  # only a commit apart leaves everything out
    return snapshot


def commit_apart_onto_newest(store: CalibrationStore, document: Mapping[str, Any],
                             base: Snapshot, *, parent_id: int | None = None
                             ) -> tuple[Snapshot | None, dict[int, str]]:
    """:func:`commit_onto_newest` for a calibration whose qubits were measured apart (gate
    errors by randomized benchmarking): when the other writer changed some of the qubits this
    document changes, this document's values on those qubits (and on the gates and pairs that
    name them) are left out, the other writer's kept, and the rest goes on top (its notes name
    what was left out). A flux bias changed by either writer, or a parameter one step sets on
    several qubits (:data:`LINKED`) changed by this document, still refuses it all.

    Returns:
        The snapshot committed (None when nothing was left to commit) and, for each qubit
        left out, why (``"snapshot 9 changed qubit 0 pi_amplitude"``).

    Raises:
        StaleSnapshotError, InvalidSnapshotError: as :func:`commit_onto_newest`.
    """
    return _commit(store, document, base, parent_id, apart=True)


def _commit(store: CalibrationStore, document: Mapping[str, Any], base: Snapshot,
            parent_id: int | None, *, apart: bool) -> tuple[Snapshot | None, dict[int, str]]:
    parent, merged_onto = (base.snapshot_id if parent_id is None else parent_id), None
    notes = document.get("notes", "")
    left_out: dict[int, str] = {}
    for _ in range(MERGE_ATTEMPTS):
        try:
            return store.commit(document, parent_id=parent, expect_parent=True), left_out
        except InvalidSnapshotError as exc:
            if merged_onto is None:
                raise
            raise StaleSnapshotError(
                f"this calibration's values on top of snapshot {merged_onto}, committed while "
                f"it measured, are refused: {exc}; nothing was written: run it again on the "
                "newest snapshot") from exc
        except StaleSnapshotError as exc:
            if parent != base.snapshot_id:
                raise
            newest = store.latest(base.device)
            theirs = newest.to_document()
            mine, other = _changes(base.to_document(), document, theirs)
            clashes = _clashes(mine, other)
            if clashes and apart and not any(
                    name in DEVICE_WIDE | LINKED for _, _, name in mine) and not any(
                    name in DEVICE_WIDE for _, _, name in clashes):
                split = _touched(clashes) & _touched(mine)
                left_out.update({q: f"snapshot {newest.snapshot_id} changed "
                                    + _listed([_named(c) for c in clashes if q in _qubits(c)])
                                 for q in sorted(split)})
                mine = [c for c in mine if not _qubits(c) & split]
                clashes = []
                if not mine:
                    return None, left_out
            if clashes:
                raise StaleSnapshotError(
                    f"{exc}: snapshot {newest.snapshot_id} changed "
                    f"{_listed([_named(c) for c in clashes])}, beside what this calibration "
                    "measured; nothing was written: run it again on the newest snapshot"
                ) from exc
            log.info("calibration store %s: snapshot %s was committed since snapshot %s; "
                     "this calibration's values go on top of it (other qubits)", store.path,
                     newest.snapshot_id, base.snapshot_id)
            document = _applied(mine, document, theirs)
            document["notes"] = (f"{notes} (on top of snapshot {newest.snapshot_id}, committed "
                                 f"while it measured"
                                 + "".join(f"; qubit {q} left out: {why}"
                                           for q, why in left_out.items()) + ")")
            base = newest
            parent = merged_onto = newest.snapshot_id
    raise StaleSnapshotError(f"calibration store {store.path}: other writers committed "
                             f"{MERGE_ATTEMPTS} times while this calibration was committed")


def _entry(document: Mapping[str, Any], change: tuple[str, str, str]) -> Any:
    section, key, name = change
    return document[section].get(key, {}).get(name)


def _qubits(change: tuple[str, str, str]) -> set[int]:
    """The qubits a parameter's subject names."""
    section, key, _ = change
    if section == "qubits":
        return {int(key)}
    if section == "pairs":
        return set(parse_pair(key))
    return set(parse_gate(key)[1])


def _named(change: tuple[str, str, str]) -> str:
    section, key, name = change
    return f"{section[:-1]} {key} {name}"


def _listed(clashes: list[str], most: int = 5) -> str:
    shown = ", ".join(clashes[:most])
    return shown + (f" and {len(clashes) - most} more" if len(clashes) > most else "")
