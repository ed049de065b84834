"""A calibration committed on top of what another writer committed meanwhile.

Two calibrations run at once on one store (two people, or a watch and a script), each from
the newest snapshot of its start. The first commits; the second found a newer snapshot than
the one it started from and was refused (``StaleSnapshotError``), its measurements lost.
:func:`commit_apart_onto_newest` puts the parameters the second one changed onto the newest
snapshot instead, except those of the qubits the first one changed too: those are left out
(the first writer's values stay), and the caller is told which qubits and why.

Per qubit, not per parameter: a value is measured with the others of its qubit in place (a
frequency at a flux bias, a gate error with the pulse amplitudes, a cz with both qubits'
pulses), so a value of one writer beside another writer's change on the same qubit would
describe neither device. A parameter counts for every qubit its subject names (a pair's two,
a gate's qubits); one measured with more qubits driven (:data:`WITH_NEIGHBOURS`) is left out
with any qubit. A flux bias moves every qubit through the device's DC flux crosstalk: a
change of one by either writer refuses the whole commit, as does a change by the other writer
beside one of :data:`LINKED` by this one (values one step sets on several qubits at once).
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
#: calibration that changed one is not split by qubit.
LINKED = frozenset({"drive_lo_frequency_hz"})
#: Parameters of a pair measured with its neighbours driven too (the cz's spectators): left
#: out whenever a qubit is.
WITH_NEIGHBOURS = frozenset({"cz_spectator_spread_rad"})

#: A parameter of a document: (section, key, name), as ``document_changes`` yields them.
Key = tuple[str, str, str]


def commit_apart_onto_newest(store: CalibrationStore, document: Mapping[str, Any],
                             base: Snapshot, *, parent_id: int | None = None
                             ) -> tuple[Snapshot | None, dict[int, str]]:
    """Commit ``document``, made from snapshot ``base``, as the child of ``parent_id``
    (default: ``base``). When another writer committed since, what ``document`` changed from
    ``base`` goes onto the newest snapshot instead, without its values on the qubits the
    other writer changed (and on the gates and pairs that name them, and
    :data:`WITH_NEIGHBOURS`): those are left out, the other writer's kept, and the snapshot's
    notes say so. No merge when ``parent_id`` is not ``base`` (the document then replaces
    that snapshot).

    Returns:
        The snapshot committed (None when everything was left out) and, for each qubit left
        out, why (``"snapshot 9 changed qubit 0 pi_amplitude"``).

    Raises:
        StaleSnapshotError: a flux bias changed by either writer, or a :data:`LINKED`
            parameter changed by this document beside the other writer's changes (named;
            nothing was written); the merged document refused by the store's checks; or
            writers kept committing in between.
        InvalidSnapshotError: as :meth:`CalibrationStore.commit`, for ``document`` itself.
    """
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
            if clashes and not _splittable(mine, clashes):
                raise StaleSnapshotError(
                    f"{exc}: snapshot {newest.snapshot_id} changed "
                    f"{_listed([_named(c) for c in clashes])}, beside what this calibration "
                    "measured; nothing was written: run it again on the newest snapshot"
                ) from exc
            split = _touched(clashes) & _touched(mine)
            left_out.update({q: f"snapshot {newest.snapshot_id} changed "
                                + _listed([_named(c) for c in clashes if q in _qubits(c)])
                             for q in sorted(split)})
            if split:
                mine = [c for c in mine
                        if not _qubits(c) & split and c[2] not in WITH_NEIGHBOURS]
            if not mine:
                return None, left_out
            log.info("calibration store %s: snapshot %s was committed since snapshot %s; "
                     "this calibration's values go on top of it (qubits left out: %s)",
                     store.path, newest.snapshot_id, base.snapshot_id, sorted(left_out))
            document = _applied(mine, document, theirs)
            document["notes"] = (f"{notes} (on top of snapshot {newest.snapshot_id}, committed "
                                 f"while it measured"
                                 + "".join(f"; qubit {q} left out: {why}"
                                           for q, why in left_out.items()) + ")")
            base = newest
            parent = merged_onto = newest.snapshot_id
    raise StaleSnapshotError(f"calibration store {store.path}: other writers committed "
                             f"{MERGE_ATTEMPTS} times while this calibration was committed")


def _changes(base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
             ) -> tuple[list[Key], list[Key]]:
    """What ``ours`` changed from ``base``, and what ``theirs`` changed otherwise than ours."""
    mine = list(document_changes(base, ours))
    other = [c for c in document_changes(base, theirs)  # alike in both: no clash
             if canonical_json(_entry(ours, c)) != canonical_json(_entry(theirs, c))]
    return mine, other


def _clashes(mine: list[Key], other: list[Key]) -> list[Key]:
    """The changes of ``other`` on a qubit ``mine`` changes, or all of them when either
    changes a device-wide parameter."""
    touched = _touched(mine)
    wide = any(name in DEVICE_WIDE for _, _, name in mine)
    return [c for c in other if wide or c[2] in DEVICE_WIDE or touched & _qubits(c)]


def _splittable(mine: list[Key], clashes: list[Key]) -> bool:
    """True when leaving out the clashing qubits leaves a consistent rest: no flux bias
    changed by either writer, no :data:`LINKED` parameter changed by this one."""
    return not any(name in DEVICE_WIDE | LINKED for _, _, name in mine) and \
        not any(name in DEVICE_WIDE for _, _, name in clashes)


def _touched(changes: list[Key]) -> set[int]:
    """The qubits ``changes`` name."""
    return {q for c in changes for q in _qubits(c)}


def _applied(mine: list[Key], ours: Mapping[str, Any], theirs: Mapping[str, Any]
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


def _entry(document: Mapping[str, Any], change: Key) -> Any:
    section, key, name = change
    return document[section].get(key, {}).get(name)


def _qubits(change: Key) -> set[int]:
    """The qubits a parameter's subject names."""
    section, key, _ = change
    if section == "qubits":
        return {int(key)}
    if section == "pairs":
        return set(parse_pair(key))
    return set(parse_gate(key)[1])


def _named(change: Key) -> str:
    section, key, name = change
    return f"{section[:-1]} {key} {name}"


def _listed(clashes: list[str], most: int = 5) -> str:
    shown = ", ".join(clashes[:most])
    return shown + (f" and {len(clashes) - most} more" if len(clashes) > most else "")
