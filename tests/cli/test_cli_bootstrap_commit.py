"""`labqpu calibrate --bootstrap` commits its document only onto the snapshot it started from."""

from __future__ import annotations

import json

import pytest

from labqpu.cli_calibrate import commit_bootstrap
from labqpu.errors import StaleSnapshotError
from labqpu.store import CalibrationStore, SnapshotBuilder


@pytest.fixture
def writable(tmp_path, snapshot):
    with CalibrationStore(tmp_path / "s.sqlite") as s:
        s.commit(snapshot.to_document())
        yield s


def test_a_bootstrap_commits_onto_the_snapshot_it_started_from(writable, tmp_path) -> None:
    start = writable.latest_id()
    document = SnapshotBuilder.from_snapshot(writable.latest()).set_qubit(
        0, "t1_s", 45e-6, "t1").build_document()
    committed = commit_bootstrap(writable, document, start, tmp_path / "records")
    assert committed.parent_id == start
    assert committed.qubit_value(0, "t1_s") == 45e-6
    assert not (tmp_path / "records").exists()


def test_a_commit_made_while_a_bootstrap_measured_is_not_undone(writable, tmp_path) -> None:
    """A review's case: a colleague's snapshot committed during a bootstrap vanished under the
    bootstrap's, which named it as its parent."""
    start = writable.latest_id()
    document = SnapshotBuilder.from_snapshot(writable.latest()).set_qubit(
        0, "t1_s", 45e-6, "t1").build_document()
    colleague = SnapshotBuilder.from_snapshot(writable.latest()).set_pair(
        (0, 1), "lab_coupler_note", "retuned", "by hand").commit(writable)
    with pytest.raises(StaleSnapshotError) as info:
        commit_bootstrap(writable, document, start, tmp_path / "records")
    assert writable.latest_id() == colleague.snapshot_id  # nothing written
    saved = list((tmp_path / "records").glob("bootstrap-*.json"))
    assert len(saved) == 1, saved
    message = str(info.value)
    assert f"snapshot {colleague.snapshot_id} was committed while the bootstrap measured" \
        in message, message
    assert f"it started on snapshot {start}" in message and str(saved[0]) in message, message
    # what the message says commits them anyway does
    anyway = writable.commit(json.loads(saved[0].read_text()))
    assert anyway.qubit_value(0, "t1_s") == 45e-6
