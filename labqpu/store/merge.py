"""A calibration committed on top of what another writer committed meanwhile.

Two calibrations run at once on one store (two people, or a watch and a script), each from
the newest snapshot of its start. The first commits; the second found a newer snapshot than
the one it started from and was refused (``StaleSnapshotError``), its measurements lost.
:func:`commit_onto_newest` puts the parameters the second one changed onto the newest
snapshot instead, as long as the other writer did not change any of them too: a three-way
merge, per parameter (section, key, name), with the snapshot both started from as the base.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labqpu.errors import StaleSnapshotError
from labqpu.store.snapshot import Snapshot
from labqpu.store.validation import SECTIONS, canonical_json

if TYPE_CHECKING:
    from labqpu.store.database import CalibrationStore

log = logging.getLogger(__name__)

#: Times a commit is put onto a newer snapshot before it gives up (each try needs yet another
#: writer to commit in between).
MERGE_ATTEMPTS = 5


def merge_documents(base: Mapping[str, Any], ours: Mapping[str, Any],
                    theirs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``theirs`` with the parameters ``ours`` changed from ``base`` (set, changed or removed),
    and the parameters both changed differently (``"qubit 0 t1_s"``), which keep ``theirs``'s
    entry. The notes are ``ours``'s."""
    merged = copy.deepcopy(dict(theirs))
    clashes = []
    for section in SECTIONS:
        for key in base[section].keys() | ours[section].keys():
            was, now = base[section].get(key, {}), ours[section].get(key, {})
            other = theirs[section].get(key, {})
            for name in sorted(was.keys() | now.keys()):
                before, mine, theirs_ = (canonical_json(d[name]) if name in d else None
                                         for d in (was, now, other))
                if mine in (before, theirs_):
                    continue  # not changed here, or changed alike there
                if theirs_ != before:
                    clashes.append(f"{section[:-1]} {key} {name}")
                    continue
                params = merged[section].setdefault(key, {})
                if name in now:
                    params[name] = copy.deepcopy(now[name])
                else:
                    params.pop(name, None)
                if not params:
                    del merged[section][key]
    merged["notes"] = ours.get("notes", "")
    return merged, clashes


def commit_onto_newest(store: CalibrationStore, document: Mapping[str, Any], base: Snapshot,
                       *, parent_id: int | None = None) -> Snapshot:
    """Commit ``document``, made from snapshot ``base``, as the child of ``parent_id`` (default:
    ``base``). When another writer committed since, what ``document`` changed from ``base``
    goes onto the newest snapshot instead (:func:`merge_documents`), unless ``parent_id`` is
    not ``base`` (the document then replaces that snapshot: no merge).

    Raises:
        StaleSnapshotError: a parameter changed here was also changed by the other writer
            (named; nothing was written), or writers kept committing in between.
        InvalidSnapshotError: as :meth:`CalibrationStore.commit` (the merged document too).
    """
    parent = base.snapshot_id if parent_id is None else parent_id
    for _ in range(MERGE_ATTEMPTS):
        try:
            return store.commit(document, parent_id=parent, expect_parent=True)
        except StaleSnapshotError as exc:
            if parent != base.snapshot_id:
                raise
            newest = store.latest(base.device)
            merged, clashes = merge_documents(base.to_document(), document,
                                              newest.to_document())
            if clashes:
                raise StaleSnapshotError(
                    f"{exc}: snapshot {newest.snapshot_id} changed "
                    f"{_listed(clashes)}, which this calibration measured too; nothing was "
                    "written: run it again on the newest snapshot") from exc
            log.info("calibration store %s: snapshot %s was committed since snapshot %s; "
                     "this calibration's values go on top of it (no parameter changed by "
                     "both)", store.path, newest.snapshot_id, base.snapshot_id)
            document, base, parent = merged, newest, newest.snapshot_id
    raise StaleSnapshotError(f"calibration store {store.path}: other writers committed "
                             f"{MERGE_ATTEMPTS} times while this calibration was committed")


def _listed(clashes: list[str], most: int = 5) -> str:
    shown = ", ".join(clashes[:most])
    return shown + (f" and {len(clashes) - most} more" if len(clashes) > most else "")
