"""A calibration committed after another writer's: its changes go on top, per parameter."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from labqpu.errors import StaleSnapshotError
from labqpu.store import CalibrationStore, SnapshotBuilder
from labqpu.store.merge import commit_onto_newest, merge_documents


@pytest.fixture
def store(tmp_path):
    with CalibrationStore(tmp_path / "calibration.sqlite") as s:
        s.import_json(json.loads((resources.files("labqpu") / "data" / "lab5_calibration.json")
                                 .read_text())["document"])
        yield s


def _changed(store, base, changes, notes):
    """``base``'s document with ``changes`` ({(qubit, name): value}; None removes)."""
    builder = SnapshotBuilder.from_snapshot(base)
    for (q, name), value in changes.items():
        if value is None:
            builder.remove_qubit(q, name)
        else:
            builder.set_qubit(q, name, value, notes)
    builder.notes = notes
    return builder.build_document()


def test_disjoint_changes_both_land_on_the_newest(store) -> None:
    """Ours sets qubit 2's T1 and removes qubit 3's echo T2; the other writer set qubit 0's
    T1 meanwhile: our commit goes on top of its snapshot, with both changes and our notes."""
    base = store.latest()
    ours = _changed(store, base, {(2, "t1_s"): 31e-6, (3, "t2_echo_s"): None}, "ours")
    theirs = store.commit(_changed(store, base, {(0, "t1_s"): 33e-6}, "theirs"))
    merged = commit_onto_newest(store, ours, base)
    assert merged.parent_id == theirs.snapshot_id
    assert merged.qubit_value(0, "t1_s") == 33e-6 and merged.qubit_value(2, "t1_s") == 31e-6
    assert "t2_echo_s" not in merged.qubits[3] and merged.notes == "ours"
    assert merged.qubits[1] == base.qubits[1]


def test_a_parameter_both_changed_is_refused_naming_it_and_nothing_is_written(store) -> None:
    base = store.latest()
    ours = _changed(store, base, {(2, "t1_s"): 31e-6, (0, "t1_s"): 30e-6}, "ours")
    theirs = store.commit(_changed(store, base, {(2, "t1_s"): 33e-6}, "theirs"))
    with pytest.raises(StaleSnapshotError, match=f"snapshot {theirs.snapshot_id} changed qubit "
                                                 "2 t1_s, which this calibration measured too"):
        commit_onto_newest(store, ours, base)
    assert store.latest_id() == theirs.snapshot_id


def test_the_same_change_made_by_both_is_no_clash(store) -> None:
    base = store.latest()
    ours = _changed(store, base, {(2, "t1_s"): 31e-6}, "ours")
    store.commit(ours)
    assert commit_onto_newest(store, ours, base).qubit_value(2, "t1_s") == 31e-6


def test_a_document_replacing_another_snapshot_is_not_merged(store) -> None:
    """``parent_id`` other than the base (a calibration replacing the store's unusable newest
    snapshot): a writer committing meanwhile makes the commit fail, as before."""
    base = store.latest()
    unusable = store.commit(_changed(store, base, {(0, "t1_s"): 33e-6}, "unusable"))
    store.commit(_changed(store, base, {(1, "t1_s"): 34e-6}, "meanwhile"))
    with pytest.raises(StaleSnapshotError, match="another calibration committed first"):
        commit_onto_newest(store, _changed(store, base, {(2, "t1_s"): 31e-6}, "ours"), base,
                           parent_id=unusable.snapshot_id)


def test_merge_documents_keeps_theirs_where_only_they_changed() -> None:
    entry = {"value": 1.0, "timestamp": "2026-12-05T00:00:00+00:00", "experiment": "x"}
    base = {"qubits": {"0": {"a": entry, "b": entry}}, "pairs": {}, "gates": {}, "notes": "b"}
    ours = {"qubits": {"0": {"a": {**entry, "value": 2.0}, "b": entry}}, "pairs": {},
            "gates": {"sx:0": {"error": entry}}, "notes": "o"}
    theirs = {"qubits": {"0": {"a": entry, "b": {**entry, "value": 3.0}}}, "pairs": {},
              "gates": {}, "notes": "t"}
    merged, clashes = merge_documents(base, ours, theirs)
    assert clashes == []
    assert merged == {"qubits": {"0": {"a": {**entry, "value": 2.0},
                                       "b": {**entry, "value": 3.0}}},
                      "pairs": {}, "gates": {"sx:0": {"error": entry}}, "notes": "o"}
