"""A calibration committed after another writer's: its changes go on top, per parameter; a
calibration measured qubit by qubit loses only the qubits the other writer changed."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from labqpu.errors import StaleSnapshotError
from labqpu.store import CalibrationStore, SnapshotBuilder
from labqpu.store.merge import commit_apart_onto_newest


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
    merged, left_out = commit_apart_onto_newest(store, ours, base)
    assert left_out == {}
    assert merged.parent_id == theirs.snapshot_id
    assert merged.qubit_value(0, "t1_s") == 33e-6 and merged.qubit_value(2, "t1_s") == 31e-6
    assert "t2_echo_s" not in merged.qubits[3]
    assert merged.notes == (f"ours (on top of snapshot {theirs.snapshot_id}, committed while it "
                            "measured)")
    assert merged.qubits[1] == base.qubits[1]


def test_a_merged_document_the_store_refuses_is_a_stale_error_naming_the_merge(
        store, monkeypatch) -> None:
    """Should a store check tie two qubits' values together, the merged document could fail
    it though each writer's passed: that is refused as the race it is, not as this
    calibration's invalid value."""
    from labqpu.errors import InvalidSnapshotError
    from labqpu.store import database

    base = store.latest()
    ours = _changed(store, base, {(2, "t1_s"): 31e-6}, "ours")
    theirs = store.commit(_changed(store, base, {(0, "t1_s"): 33e-6}, "theirs"))
    check = database.check_physics

    def tying(document, *args, **kwargs):
        if document["qubits"]["0"]["t1_s"]["value"] == 33e-6 and \
                document["qubits"]["2"]["t1_s"]["value"] == 31e-6:
            raise InvalidSnapshotError("qubits 0 and 2 disagree")
        return check(document, *args, **kwargs)

    monkeypatch.setattr(database, "check_physics", tying)
    with pytest.raises(StaleSnapshotError, match=f"on top of snapshot {theirs.snapshot_id}, "
                                                 "committed while it measured, are refused: "
                                                 "qubits 0 and 2 disagree"):
        commit_apart_onto_newest(store, ours, base)
    assert store.latest_id() == theirs.snapshot_id


def test_the_same_change_made_by_both_is_no_clash(store) -> None:
    base = store.latest()
    ours = _changed(store, base, {(2, "t1_s"): 31e-6}, "ours")
    store.commit(ours)
    merged, left_out = commit_apart_onto_newest(store, ours, base)
    assert merged.qubit_value(2, "t1_s") == 31e-6 and left_out == {}


def test_a_document_replacing_another_snapshot_is_not_merged(store) -> None:
    """``parent_id`` other than the base (a calibration replacing the store's unusable newest
    snapshot): a writer committing meanwhile makes the commit fail, as before."""
    base = store.latest()
    unusable = store.commit(_changed(store, base, {(0, "t1_s"): 33e-6}, "unusable"))
    store.commit(_changed(store, base, {(1, "t1_s"): 34e-6}, "meanwhile"))
    with pytest.raises(StaleSnapshotError, match=r"but snapshot \d+ \('meanwhile'\) is: another "
                                                 r"writer committed first"):
        commit_apart_onto_newest(store, _changed(store, base, {(2, "t1_s"): 31e-6}, "ours"),
                                 base, parent_id=unusable.snapshot_id)


def _gate_errors(base, errors, notes="rb"):
    """``base``'s document with the gate errors ``errors`` ({gate: error})."""
    builder = SnapshotBuilder.from_snapshot(base)
    for gate, error in errors.items():
        builder.set_gate(gate, "error", error, notes)
    builder.notes = notes
    return builder.build_document()


def test_a_commit_apart_leaves_out_only_the_qubits_the_other_writer_changed(store) -> None:
    """Gate errors of qubits 0 and 2 and of edge 0-1 measured while another writer set qubit 0's
    pi amplitude: qubit 2's error goes on top of that writer's snapshot; qubit 0's and edge
    0-1's (measured with the old pulse) are left out, the writer's pulse and the old errors
    kept, and the return value and the notes say why."""
    base = store.latest()
    ours = _gate_errors(base, {"sx:0": 2e-4, "sx:2": 3e-4, "cz:0-1": 9e-3})
    theirs = store.commit(_changed(store, base, {(0, "pi_amplitude"): 0.3}, "theirs"))
    merged, left_out = commit_apart_onto_newest(store, ours, base)
    assert left_out == {0: f"snapshot {theirs.snapshot_id} changed qubit 0 pi_amplitude"}
    assert merged.parent_id == theirs.snapshot_id and store.latest_id() == merged.snapshot_id
    assert merged.gates["sx:2"]["error"].value == 3e-4
    assert merged.gates["sx:0"]["error"] == base.gates["sx:0"]["error"]
    assert merged.gates["cz:0-1"]["error"] == base.gates["cz:0-1"]["error"]
    assert merged.qubit_value(0, "pi_amplitude") == 0.3
    assert merged.notes == (f"rb (on top of snapshot {theirs.snapshot_id}, committed while it "
                            f"measured; qubit 0 left out: snapshot {theirs.snapshot_id} changed "
                            "qubit 0 pi_amplitude)")


def test_a_commit_apart_with_nothing_left_writes_nothing(store) -> None:
    base = store.latest()
    ours = _gate_errors(base, {"sx:1": 2e-4, "cz:1-2": 9e-3})
    theirs = store.commit(_changed(store, base, {(1, "t1_s"): 33e-6, (2, "t1_s"): 34e-6},
                                   "theirs"))
    snapshot, left_out = commit_apart_onto_newest(store, ours, base)
    assert snapshot is None and sorted(left_out) == [1, 2]
    assert store.latest_id() == theirs.snapshot_id


def test_a_value_measured_with_the_neighbours_driven_is_left_out_with_any_qubit(store) -> None:
    """Edge 0-1's spectator spread was measured driving qubit 2 with this calibration's
    pulses; the other writer changed qubit 2: the spread is left out with qubit 2's values,
    edge 0-1's cz amplitude (its own qubits' pulses) goes on top."""
    base = store.latest()
    builder = SnapshotBuilder.from_snapshot(base)
    builder.set_qubit(2, "t1_s", 31e-6, "ours")
    builder.set_pair((0, 1), "cz_spectator_spread_rad", 0.05, "ours")
    amplitude = base.pairs[(0, 1)]["cz_amplitude"].value * 1.01
    builder.set_pair((0, 1), "cz_amplitude", amplitude, "ours")
    builder.notes = "ours"
    theirs = store.commit(_changed(store, base, {(2, "pi_amplitude"): 0.3}, "theirs"))
    merged, left_out = commit_apart_onto_newest(store, builder.build_document(), base)
    assert list(left_out) == [2] and merged.parent_id == theirs.snapshot_id
    assert merged.pairs[(0, 1)]["cz_amplitude"].value == amplitude
    assert merged.pairs[(0, 1)].get("cz_spectator_spread_rad") == \
        base.pairs[(0, 1)].get("cz_spectator_spread_rad")
    assert merged.qubits[2]["t1_s"] == base.qubits[2]["t1_s"]


def test_writers_committing_in_a_row_each_leave_out_their_qubits(store, monkeypatch) -> None:
    """Two more writers commit while this calibration's commit is put on top of the first:
    each one's qubit is left out, the rest lands on the newest, and the notes name both."""
    from labqpu.store import database

    base = store.latest()
    ours = _gate_errors(base, {"sx:0": 2e-4, "sx:2": 3e-4, "sx:4": 4e-4})
    first = store.commit(_changed(store, base, {(0, "t1_s"): 33e-6}, "first"))
    commit, rivals = database.CalibrationStore.commit, [(2, "second")]

    def another_writer_first(self, document, *args, **kwargs):
        if rivals and kwargs.get("parent_id") == first.snapshot_id:
            q, notes = rivals.pop()
            commit(self, _changed(self, self.latest(), {(q, "t1_s"): 34e-6}, notes))
        return commit(self, document, *args, **kwargs)

    monkeypatch.setattr(database.CalibrationStore, "commit", another_writer_first)
    merged, left_out = commit_apart_onto_newest(store, ours, base)
    assert sorted(left_out) == [0, 2]
    assert merged.gates["sx:4"]["error"].value == 4e-4
    assert merged.gates["sx:2"]["error"] == base.gates["sx:2"]["error"]
    assert merged.qubit_value(2, "t1_s") == 34e-6 and merged.qubit_value(0, "t1_s") == 33e-6
    assert "qubit 0 left out" in merged.notes and "qubit 2 left out" in merged.notes


@pytest.mark.parametrize(("ours_change", "theirs_change", "named"), [
    # a flux bias by the other writer moves every qubit: nothing of ours describes the device
    ({}, {(4, "flux_bias_a"): 1e-4}, "qubit 4 flux_bias_a"),
    # ours by this calibration: nothing of the other writer's describes it
    ({(4, "flux_bias_a"): 1e-4}, {(0, "t1_s"): 33e-6}, "qubit 0 t1_s"),
    # a drive LO set on the qubits it drives by one step: not split by qubit
    ({(1, "drive_lo_frequency_hz"): 4.9e9, (2, "drive_lo_frequency_hz"): 4.9e9},
     {(2, "t1_s"): 34e-6}, "qubit 2 t1_s"),
])
def test_a_commit_apart_still_refuses_what_moves_several_qubits(store, ours_change,
                                                               theirs_change, named) -> None:
    base = store.latest()
    builder = SnapshotBuilder.from_snapshot(base)
    builder.set_gate("sx:3", "error", 2e-4, "rb")
    for (q, name), value in ours_change.items():
        builder.set_qubit(q, name, value, "ours")
    theirs = store.commit(_changed(store, base, theirs_change, "theirs"))
    with pytest.raises(StaleSnapshotError, match=f"changed {named}, beside what this "
                                                 "calibration measured; nothing was written"):
        commit_apart_onto_newest(store, builder.build_document(), base)
    assert store.latest_id() == theirs.snapshot_id
