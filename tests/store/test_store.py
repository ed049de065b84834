"""Tests of labqpu.store: snapshots, the builder, the SQLite store, its crash
and concurrency behaviour, and the BackendProperties translation."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import multiprocessing
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from labqpu.errors import (
    CalibrationError,
    CalibrationMissingError,
    InvalidSnapshotError,
    StaleSnapshotError,
)
from labqpu.store import (
    EXPORT_FORMAT,
    CalibrationStore,
    Parameter,
    Snapshot,
    SnapshotBuilder,
    document_from_backend_properties,
    export_backend_properties,
)

T0 = "2026-11-21T23:00:00+00:00"
T1 = "2026-11-22T08:30:00+00:00"


def entry(value: Any, experiment: str = "manual", timestamp: str = T0) -> dict[str, Any]:
    return {"value": value, "timestamp": timestamp, "experiment": experiment}


def lab5_document(frequency_hz: float = 5.0213e9, notes: str = "initial") -> dict[str, Any]:
    """A two-qubit document using every kind of value the store must keep exactly."""
    return {
        "device": "lab5",
        "qubits": {
            "0": {
                "frequency_hz": entry(frequency_hz, "ramsey"),
                "anharmonicity_hz": entry(-2.1e8, "spectroscopy"),
                "t1_s": entry(4.5e-5, "t1"),
                "t2_echo_s": entry(3.1e-5, "t2_echo", T1),
                "readout_assignment_fidelity": entry(0.97, "readout"),
                "readout_duration_s": entry(1.2e-6, "readout"),
                "pi_amplitude": entry(0.4123456789012345, "rabi"),
                "lo_frequency_hz": entry(4_900_000_000),
                "flux_at_sweet_spot": entry(True, "flux"),
                "readout_port": entry("ro0"),
                "discriminator": entry({"centers": [[0.1, -0.2], [0.35, 0.4]]}, "readout"),
                "assignment_matrix": entry([[0.98, 0.02], [0.04, 0.96]], "readout"),
            },
            "1": {"frequency_hz": entry(4.8765e9, "ramsey")},
        },
        "pairs": {
            "0-1": {
                "cz_amplitude": entry(0.41, "cz"),
                "cz_duration_s": entry(6e-8, "cz"),
                "cz_phase_0_rad": entry(-0.123, "cz"),
                "cz_phase_1_rad": entry(2.5, "cz"),
            }
        },
        "gates": {
            "sx:0": {"error": entry(2.1e-4, "rb"), "duration_s": entry(3.2e-8, "rb")},
            "cz:0-1": {"error": entry(6.5e-3, "rb")},
        },
        "notes": notes,
    }


def canonical_hash(document: dict[str, Any]) -> str:
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def row_count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CalibrationStore]:
    with CalibrationStore(tmp_path / "calibration.db") as calibration_store:
        yield calibration_store


# --------------------------------------------------------------------------- round trip


def test_round_trip_keeps_every_value_exactly(store: CalibrationStore) -> None:
    document = lab5_document()
    committed = store.commit(document)
    with CalibrationStore(store.path) as reopened:
        reread = reopened.latest()
    for snapshot in (committed, store.latest(), store.get(committed.snapshot_id), reread):
        assert snapshot == committed
        assert snapshot.to_document() == document
        assert snapshot.device == "lab5"
        assert snapshot.notes == "initial"
        assert snapshot.content_hash == canonical_hash(document)
        assert snapshot.qubits[0]["frequency_hz"] == Parameter(5.0213e9, T0, "ramsey")
        assert snapshot.qubit_value(0, "pi_amplitude") == 0.4123456789012345
        assert type(snapshot.qubit_value(0, "lo_frequency_hz")) is int
        assert snapshot.qubit_value(0, "flux_at_sweet_spot") is True
        assert snapshot.qubit_value(0, "readout_port") == "ro0"
        assert snapshot.qubit_value(0, "assignment_matrix") == [[0.98, 0.02], [0.04, 0.96]]
        assert snapshot.qubit_value(0, "discriminator") == {"centers": [[0.1, -0.2], [0.35, 0.4]]}
        assert snapshot.qubits[0]["t2_echo_s"].timestamp == T1
        assert list(snapshot.pairs) == [(0, 1)]
        assert snapshot.pair_value((1, 0), "cz_phase_1_rad") == 2.5
        assert snapshot.gate_value("sx:0", "duration_s") == 3.2e-8


def test_snapshot_is_read_only_and_pickles(store: CalibrationStore) -> None:
    snapshot = store.commit(lab5_document())
    with pytest.raises(TypeError):
        snapshot.qubits[0]["assignment_matrix"].value[0].append(1.0)
    with pytest.raises(TypeError):
        snapshot.qubits[0]["discriminator"].value["centers"] = []
    with pytest.raises(TypeError):
        snapshot.qubits[0]["t1_s"] = Parameter(1.0, T0, "t1")  # type: ignore[index]
    with pytest.raises(AttributeError):
        snapshot.notes = "changed"  # type: ignore[misc]
    document = snapshot.to_document()
    document["qubits"]["0"]["t1_s"]["value"] = 1.0
    assert snapshot.qubit_value(0, "t1_s") == 4.5e-5

    revived = pickle.loads(pickle.dumps(snapshot))
    assert revived == snapshot
    assert revived.to_document() == snapshot.to_document()


def test_builder_validates_normalises_and_copies() -> None:
    builder = SnapshotBuilder("lab5", notes="from builder")
    builder.set_qubit(0, "frequency_hz", 5.0213e9, "ramsey", "2026-11-22T09:30:00+01:00")
    builder.set_qubit(0, "iq_offset", (0.5, -0.25), "readout", T0)
    builder.set_qubit(1, "frequency_hz", 4.8e9, "ramsey", T0)
    builder.set_pair((1, 0), "cz_amplitude", 0.41, "cz", T0)
    builder.set_gate("cz:0-1", "error", 6.5e-3, "rb", T0)
    builder.set_gate("sx:1", "error", 3e-4, "rb", T0)
    document = builder.build_document()
    assert document["qubits"]["0"]["frequency_hz"]["timestamp"] == T1
    assert document["qubits"]["0"]["iq_offset"]["value"] == [0.5, -0.25]
    assert list(document["pairs"]) == ["0-1"]
    assert document["notes"] == "from builder"

    original = Snapshot.from_document(document, snapshot_id=7)
    edited = SnapshotBuilder.from_snapshot(original).remove_qubit(1).build_document()
    assert list(edited["qubits"]) == ["0"]
    assert edited["pairs"] == {}
    assert list(edited["gates"]) == []
    assert original.to_document() == document

    with pytest.raises(InvalidSnapshotError, match=r"qubit 2, parameter 'drag_beta'.*nan"):
        builder.set_qubit(2, "drag_beta", float("nan"), "drag")
    with pytest.raises(InvalidSnapshotError, match=r"pair 3-4, parameter 'cz_amplitude'.*inf"):
        builder.set_pair((4, 3), "cz_amplitude", [0.1, float("inf")], "cz")
    with pytest.raises(InvalidSnapshotError, match=r"qubit 0, parameter 'foo'.*integer of "
                                                   r"16610 bits, outside the signed 64-bit "
                                                   r"range"):
        builder.set_qubit(0, "foo", 10**5000, "manual")  # was a bare ValueError at commit
    with pytest.raises(InvalidSnapshotError, match=r"an integer of 64 bits"):
        builder.set_qubit(0, "foo", 2**63, "manual")
    builder.set_qubit(0, "foo", -(2**63), "manual").remove_qubit(0, "foo")  # fits
    with pytest.raises(InvalidSnapshotError, match=r"couples qubit 2 to itself"):
        builder.set_pair((2, 2), "cz_amplitude", 0.4, "cz")
    with pytest.raises(InvalidSnapshotError, match=r"qubit index -3 is negative"):
        builder.set_qubit(-3, "frequency_hz", 5e9, "ramsey")
    with pytest.raises(InvalidSnapshotError, match=r"qubit 0.*'not a name'"):
        builder.set_qubit(0, "not a name", 1.0, "manual")
    with pytest.raises(CalibrationMissingError, match="qubit 5"):
        builder.remove_qubit(5)
    assert builder.build_document() == document


# --------------------------------------------------------------------------- store semantics


def test_newest_complete_snapshot_wins(store: CalibrationStore) -> None:
    store.commit(lab5_document(notes="first"))
    second = store.commit(lab5_document(frequency_hz=5.0214e9, notes="second"))
    staged = lab5_document(frequency_hz=9.9e9, notes="staged")
    with closing(sqlite3.connect(store.path)) as conn, conn:
        cursor = conn.execute(
            "INSERT INTO snapshots (device, created, parent_id, content_hash, document, complete)"
            " VALUES ('lab5', ?, ?, ?, ?, 0)",
            (T1, second.snapshot_id, canonical_hash(staged), json.dumps(staged)),
        )
        staged_id = cursor.lastrowid
    assert staged_id > second.snapshot_id
    assert store.latest() == second
    assert store.latest("lab5").qubit_value(0, "frequency_hz") == 5.0214e9
    assert store.latest_id() == second.snapshot_id
    assert [info.notes for info in store.history()] == ["second", "first"]
    with pytest.raises(CalibrationMissingError, match=f"no snapshot {staged_id}"):
        store.get(staged_id)


def test_history_is_newest_first_and_chains_parents(store: CalibrationStore) -> None:
    snapshots = [store.commit(lab5_document(notes=f"run {i}")) for i in range(4)]
    history = store.history()
    assert [info.snapshot_id for info in history] == [s.snapshot_id for s in reversed(snapshots)]
    assert [info.notes for info in history] == ["run 3", "run 2", "run 1", "run 0"]
    assert [info.parent_id for info in history] == [
        snapshots[2].snapshot_id,
        snapshots[1].snapshot_id,
        snapshots[0].snapshot_id,
        None,
    ]
    assert history[0].content_hash == snapshots[3].content_hash
    assert history[0].created == snapshots[3].created
    assert [info.snapshot_id for info in store.history(limit=2)] == [
        snapshots[3].snapshot_id,
        snapshots[2].snapshot_id,
    ]


def test_an_edited_snapshot_does_not_take_its_parents_notes(store: CalibrationStore) -> None:
    """A newcomer's case: a snapshot edited by hand after a rollback read "rollback to snapshot
    1 ..." in the history, its parent's description, and a rollback to it chained that text
    on. The builder's notes say where the edit came from until they are set."""
    from labqpu.store import SnapshotBuilder

    parent = store.commit(lab5_document(notes="rollback to snapshot 1"))
    edited = SnapshotBuilder.from_snapshot(parent).set_qubit(
        0, "t1_s", 45e-6, "t1").commit(store)
    assert edited.notes == f"edited from snapshot {parent.snapshot_id}"
    builder = SnapshotBuilder.from_snapshot(edited).set_qubit(0, "t1_s", 46e-6, "t1")
    builder.notes = "T1 by hand"
    assert builder.commit(store).notes == "T1 by hand"


def test_diff_lists_added_removed_and_changed_parameters(store: CalibrationStore) -> None:
    before = store.commit(lab5_document())
    builder = SnapshotBuilder.from_snapshot(before)
    builder.set_qubit(0, "frequency_hz", 5.0215e9, "ramsey", T1)
    builder.set_qubit(1, "t1_s", 6.1e-5, "t1", T1)
    builder.remove_gate("cz:0-1")
    builder.set_pair((0, 1), "cz_amplitude", 0.41, "cz", T1)
    after = store.commit(builder.build_document())

    diff = store.diff(before.snapshot_id, after.snapshot_id)
    assert (diff["from_id"], diff["to_id"]) == (before.snapshot_id, after.snapshot_id)
    assert diff["added"] == [
        {"section": "qubits", "key": "1", "name": "t1_s", "new": entry(6.1e-5, "t1", T1)}
    ]
    assert diff["removed"] == [
        {"section": "gates", "key": "cz:0-1", "name": "error", "old": entry(6.5e-3, "rb")}
    ]
    assert [(c["section"], c["key"], c["name"]) for c in diff["changed"]] == [
        ("qubits", "0", "frequency_hz"),
        ("pairs", "0-1", "cz_amplitude"),
    ]
    assert diff["changed"][0]["old"]["value"] == 5.0213e9
    assert diff["changed"][0]["new"]["value"] == 5.0215e9
    assert store.diff(after.snapshot_id, after.snapshot_id)["changed"] == []
    assert json.loads(json.dumps(diff)) == diff


def _set_path(document: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        (
            ("qubits", "0", "frequency_hz", "value"),
            float("nan"),
            ["qubit 0", "'frequency_hz'", "nan", "finite"],
        ),
        (
            ("qubits", "0", "assignment_matrix", "value"),
            [[0.98, 0.02], [float("-inf"), 0.96]],
            ["qubit 0", "'assignment_matrix'", "value[1][0]", "-inf"],
        ),
        (("qubits", "-1"), {"frequency_hz": entry(5e9)}, ["'-1'", "non-negative"]),
        (("device",), "lab7", ["'lab7'", "'lab5'"]),
        (
            ("qubits", "1", "frequency_hz", "timestamp"),
            _DELETE,
            ["qubit 1", "'frequency_hz'", "missing 'timestamp'"],
        ),
        (
            ("qubits", "0", "t1_s", "timestamp"),
            "2026-11-21T23:00:00",
            ["qubit 0", "'t1_s'", "no time zone"],
        ),
        (("qubits", "0", "t1_s", "value"), None, ["qubit 0", "'t1_s'", "null"]),
        (("pairs", "1-1"), {"cz_amplitude": entry(0.4)}, ["'1-1'", "itself"]),
        (("gates", "sx"), {"error": entry(1e-4)}, ["gate key 'sx'"]),
        (("qubits", "1", "frequency_hz", "experiment"), "", ["qubit 1", "experiment"]),
        (("calibrated_by",), "alice", ["unknown top-level key", "'calibrated_by'"]),
    ],
    ids=[
        "nan",
        "nested-inf",
        "negative-qubit",
        "wrong-device",
        "missing-timestamp",
        "naive-timestamp",
        "null-value",
        "self-pair",
        "gate-key",
        "empty-experiment",
        "unknown-key",
    ],
)
def test_invalid_document_is_refused_and_changes_nothing(
    store: CalibrationStore, path: tuple[str, ...], value: Any, fragments: list[str]
) -> None:
    good = store.commit(lab5_document())
    bad = lab5_document(notes="bad")
    _set_path(bad, path, value)
    with pytest.raises(InvalidSnapshotError) as caught:
        store.commit(bad)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert store.latest_id() == good.snapshot_id
    assert store.latest() == good
    assert row_count(store.path) == 1


def test_expect_parent_detects_a_concurrent_commit(store: CalibrationStore) -> None:
    with pytest.raises(StaleSnapshotError):
        store.commit(lab5_document(), parent_id=1, expect_parent=True)
    base = store.commit(lab5_document(notes="base"), parent_id=None, expect_parent=True)
    winner = store.commit(
        lab5_document(notes="run B"), parent_id=base.snapshot_id, expect_parent=True
    )
    assert winner.parent_id == base.snapshot_id
    with pytest.raises(StaleSnapshotError,
                       match=rf"snapshot {winner.snapshot_id} \('run B'\) is: another writer"):
        store.commit(lab5_document(notes="run A"), parent_id=base.snapshot_id, expect_parent=True)
    with pytest.raises(StaleSnapshotError):
        store.commit(lab5_document(notes="run C"), expect_parent=True)
    assert store.latest() == winner
    assert row_count(store.path) == 2
    with pytest.raises(InvalidSnapshotError, match="parent snapshot 99 does not exist"):
        store.commit(lab5_document(), parent_id=99)
    branch = store.commit(lab5_document(notes="rollback"), parent_id=base.snapshot_id)
    assert branch.parent_id == base.snapshot_id


def test_a_builders_commit_refuses_to_undo_another_writers_snapshot(
        store: CalibrationStore) -> None:
    """Two writers each make a builder from the newest snapshot and change one value: the
    second ``builder.commit(store)`` is refused (it would have put the first writer's value
    back, recording the first writer's snapshot as its parent), and, made again from the
    newest snapshot, keeps both values. A builder made from scratch commits as before."""
    base = store.commit(lab5_document(notes="base"))
    first = SnapshotBuilder.from_snapshot(store.latest()).set_qubit(0, "t1_s", 45e-6, "t1")
    second = SnapshotBuilder.from_snapshot(store.latest()).set_qubit(1, "t1_s", 35e-6, "t1")
    assert first.parent_id == second.parent_id == base.snapshot_id
    winner = first.commit(store)
    assert winner.parent_id == base.snapshot_id
    with pytest.raises(StaleSnapshotError):
        second.commit(store)
    assert store.latest() == winner and row_count(store.path) == 2
    again = SnapshotBuilder.from_snapshot(store.latest()).set_qubit(1, "t1_s", 35e-6, "t1")
    both = again.commit(store)
    assert both.qubits[0]["t1_s"].value == 45e-6 and both.qubits[1]["t1_s"].value == 35e-6
    assert both.parent_id == winner.snapshot_id
    again.set_qubit(0, "t1_s", 44e-6, "t1")  # the same builder again: it follows its commit
    assert again.commit(store).parent_id == both.snapshot_id
    scratch = SnapshotBuilder("lab5").set_qubit(0, "t1_s", 50e-6, "t1")
    assert scratch.parent_id is None
    assert scratch.commit(store).parent_id == both.snapshot_id + 1


def test_missing_parameters_name_the_qubit_or_pair(store: CalibrationStore) -> None:
    with pytest.raises(CalibrationMissingError, match="holds no snapshot"):
        store.latest()
    assert store.latest_id() is None
    snapshot = store.commit(lab5_document())
    with pytest.raises(CalibrationMissingError) as caught:
        snapshot.qubit_value(1, "drag_beta")
    assert isinstance(caught.value, KeyError)
    assert str(caught.value).startswith("qubit 1, parameter 'drag_beta': not in calibration")
    assert (caught.value.subject, caught.value.parameter) == ("qubit 1", "drag_beta")
    with pytest.raises(CalibrationMissingError, match="qubit 4 has no calibration at all"):
        snapshot.qubit_value(4, "frequency_hz")
    with pytest.raises(CalibrationMissingError, match="pair 1-2, parameter 'cz_amplitude'"):
        snapshot.pair_value((2, 1), "cz_amplitude")
    with pytest.raises(CalibrationMissingError, match="gate 'x:0', parameter 'error'"):
        snapshot.gate_value("x:0", "error")
    assert snapshot.qubit_value(1, "drag_beta", default=None) is None
    assert snapshot.pair_value((1, 0), "cz_leakage", 0.0) == 0.0
    with pytest.raises(CalibrationMissingError, match="device 'lab7'"):
        store.latest("lab7")
    with pytest.raises(CalibrationMissingError, match="no snapshot 42"):
        store.get(42)
    for wrong, kind in (("1", "str"), (1.0, "float"), (True, "bool")):
        # "has no snapshot 1" while snapshot 1 exists: the type is the problem
        with pytest.raises(CalibrationMissingError, match=rf"no snapshot {wrong!r}: snapshot "
                                                          rf"ids are whole numbers \(int\), "
                                                          rf"not {kind}"):
            store.get(wrong)
        with pytest.raises(CalibrationMissingError, match=f"not {kind}"):
            store.rollback(wrong)
    assert store.latest_id() == snapshot.snapshot_id


# --------------------------------------------------------------------------- crashes, threads

_CRASHING_WRITER = """
import json, os, sys
from labqpu.store import CalibrationStore

store = CalibrationStore(sys.argv[1])
inserted = False

def die_before_commit(statement):
    global inserted
    if statement.startswith("INSERT INTO snapshots"):
        inserted = True
    elif statement == "COMMIT" and inserted:
        os._exit(17)  # the row is written inside the transaction; COMMIT never runs

store._connection().set_trace_callback(die_before_commit)
store.commit(json.loads(sys.argv[2]))
os._exit(0)
"""


def test_writer_killed_mid_transaction_leaves_latest_intact(store: CalibrationStore) -> None:
    base = store.commit(lab5_document(notes="before the crash"))
    doomed = lab5_document(frequency_hz=6e9, notes="never visible")
    child = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(store.path), json.dumps(doomed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 17, child.stderr
    assert store.latest() == base
    assert store.latest_id() == base.snapshot_id
    assert row_count(store.path) == 1
    with CalibrationStore(store.path) as reopened:
        assert reopened.latest() == base
        after = reopened.commit(lab5_document(notes="after the crash"))
    assert store.latest() == after
    assert after.parent_id == base.snapshot_id


def test_readers_in_threads_only_see_complete_snapshots(store: CalibrationStore) -> None:
    def generation_document(generation: int) -> dict[str, Any]:
        builder = SnapshotBuilder("lab5", notes=str(generation))
        for qubit in range(8):
            builder.set_qubit(qubit, "generation", generation, "soak", T0)
            builder.set_qubit(qubit, "frequency_hz", 5e9 + generation, "soak", T0)
        return builder.build_document()

    store.commit(generation_document(0))
    generations = 40
    done = threading.Event()
    start = threading.Barrier(4)
    errors: list[str] = []
    reads: list[int] = []

    def reader() -> None:
        last_id, count = 0, 0
        start.wait()
        try:
            while not done.is_set() or count == 0:
                snapshot = store.latest()
                generation = int(snapshot.notes)
                values = {snapshot.qubit_value(q, "generation") for q in range(8)}
                if values != {generation} or len(snapshot.qubits) != 8:
                    errors.append(f"torn snapshot {snapshot.snapshot_id}: {values}")
                if snapshot.content_hash != canonical_hash(snapshot.to_document()):
                    errors.append(f"hash mismatch in snapshot {snapshot.snapshot_id}")
                if snapshot.snapshot_id < last_id:
                    errors.append(f"went back from {last_id} to {snapshot.snapshot_id}")
                last_id, count = snapshot.snapshot_id, count + 1
                time.sleep(0)  # let the writer have the GIL back; it still races the readers
        except Exception as exc:  # reported below: a reader thread must not die silently
            errors.append(repr(exc))
        reads.append(count)

    def writer() -> None:
        start.wait()
        try:
            for generation in range(1, generations + 1):
                store.commit(generation_document(generation))
        finally:
            done.set()

    threads = [threading.Thread(target=reader) for _ in range(3)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(reads) == 3 and min(reads) > 0
    assert store.latest().notes == str(generations)


def test_optimistic_writers_in_threads_form_one_linear_history(store: CalibrationStore) -> None:
    root = store.commit(lab5_document(notes="root"))
    errors: list[str] = []

    def calibration_run(worker: int) -> None:
        try:
            for step in range(5):
                document = lab5_document(notes=f"worker {worker} step {step}")
                while True:  # on a conflict, re-read the newest snapshot and redo the update
                    parent = store.latest()
                    with contextlib.suppress(StaleSnapshotError):
                        store.commit(document, parent_id=parent.snapshot_id, expect_parent=True)
                        break
        except Exception as exc:  # reported below: a worker must not die silently
            errors.append(repr(exc))

    threads = [threading.Thread(target=calibration_run, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    history = list(reversed(store.history(limit=100)))
    assert len(history) == 21
    assert history[0].snapshot_id == root.snapshot_id
    assert sorted(info.notes for info in history[1:]) == sorted(
        f"worker {w} step {s}" for w in range(4) for s in range(5)
    )
    for parent, child in itertools.pairwise(history):
        assert child.parent_id == parent.snapshot_id


def _commit_in_forked_child(store: CalibrationStore, inherited: list[sqlite3.Connection]) -> None:
    """Exit 0 if the child commits on a connection of its own and leaves the parent's
    connections untouched (SQLite forbids using or closing them after fork)."""
    own = store._connection()
    store.commit(lab5_document(notes="from the child"))
    if any(own is conn for conn in inherited):
        sys.exit(3)
    try:
        for conn in inherited:
            conn.cursor().close()  # raises only if the connection was closed; no file access
    except sqlite3.ProgrammingError:
        sys.exit(4)
    sys.exit(0)


def test_store_survives_fork(store: CalibrationStore) -> None:
    store.commit(lab5_document(notes="parent"))
    inherited = [store._connection()]
    helper = threading.Thread(target=lambda: inherited.append(store._connection()))
    helper.start()
    helper.join(timeout=60)
    assert len(inherited) == 2
    child = multiprocessing.get_context("fork").Process(
        target=_commit_in_forked_child, args=(store, inherited)
    )
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert store.latest().notes == "from the child"
    assert store.commit(lab5_document(notes="parent again")).notes == "parent again"


# --------------------------------------------------------------------------- import / export


def test_json_export_round_trips_and_detects_tampering(store: CalibrationStore) -> None:
    original = store.commit(lab5_document(notes="to export"))
    exported = json.loads(json.dumps(store.export_json(original.snapshot_id)))
    assert exported["format"] == EXPORT_FORMAT
    assert exported["content_hash"] == original.content_hash
    assert exported["document"] == lab5_document(notes="to export")

    imported = store.import_json(exported)
    assert imported.snapshot_id != original.snapshot_id
    assert imported.content_hash == original.content_hash
    assert imported.parent_id == original.snapshot_id
    assert store.import_json(lab5_document(notes="bare")).notes == "bare"

    tampered = copy.deepcopy(exported)
    tampered["document"]["qubits"]["0"]["frequency_hz"]["value"] = 5.5e9
    count = row_count(store.path)
    with pytest.raises(InvalidSnapshotError, match="altered or corrupted"):
        store.import_json(tampered)
    with pytest.raises(InvalidSnapshotError, match="unknown export format"):
        store.import_json({**exported, "format": "something/9"})
    assert row_count(store.path) == count
    # An export holding a value a rule refuses (an older labqpu's, before the rule): the error
    # names the value and how to go on; the export edited as it says imports (a review).
    refused = copy.deepcopy(exported)
    refused["document"]["qubits"]["0"]["t1_s"]["value"] = -1e-6
    refused["content_hash"] = Snapshot(refused["document"]).content_hash
    with pytest.raises(InvalidSnapshotError, match=r"qubit 0.*t1_s.*to import it, correct "
                                                   r"that value in the file .*content_hash"):
        store.import_json(refused)
    other = copy.deepcopy(refused)  # an error not about a value gets no such advice
    other["document"]["qubits"]["0"]["t1_s"]["value"] = 31e-6
    other["document"]["device"] = "lab10"
    del other["content_hash"]
    with pytest.raises(InvalidSnapshotError) as info:
        store.import_json(other)
    assert "lab10" in str(info.value) and "to import it" not in str(info.value), info.value
    assert row_count(store.path) == count
    refused["document"]["qubits"]["0"]["t1_s"]["value"] = 31e-6
    del refused["content_hash"]
    assert store.import_json(refused).qubits[0]["t1_s"].value == 31e-6


def test_backend_properties_export_uses_qiskit_units_and_omits_absent_values(
    store: CalibrationStore,
) -> None:
    snapshot = store.commit(lab5_document())
    properties = store.export_backend_properties()
    assert properties == export_backend_properties(snapshot)
    assert properties["backend_name"] == "lab5"
    assert properties["backend_version"] == f"snapshot-{snapshot.snapshot_id}"
    assert properties["last_update_date"] == T1
    assert properties["general"] == []

    qubit0 = {item["name"]: item for item in properties["qubits"][0]}
    assert {name: (item["unit"], item["value"]) for name, item in qubit0.items()} == {
        "T1": ("us", 45.0),
        "T2": ("us", 31.0),
        "frequency": ("GHz", 5.0213),
        "anharmonicity": ("GHz", -0.21),
        "readout_error": ("", 0.03),
        "readout_length": ("ns", 1200.0),
    }
    assert qubit0["T2"]["date"] == T1
    assert qubit0["T1"]["date"] == T0
    assert properties["qubits"][1] == [
        {"date": T0, "name": "frequency", "unit": "GHz", "value": 4.8765}
    ]
    assert properties["gates"] == [
        {
            "gate": "cz",
            "name": "cz0_1",
            "qubits": [0, 1],
            "parameters": [{"date": T0, "name": "gate_error", "unit": "", "value": 6.5e-3}],
        },
        {
            "gate": "sx",
            "name": "sx0",
            "qubits": [0],
            "parameters": [
                {"date": T0, "name": "gate_error", "unit": "", "value": 2.1e-4},
                {"date": T0, "name": "gate_length", "unit": "ns", "value": 32.0},
            ],
        },
    ]
    assert json.loads(json.dumps(properties)) == properties

    bare = Snapshot.from_document({"device": "lab5", "gates": {"x:2": {"note": entry("n/a")}}})
    assert export_backend_properties(bare)["qubits"] == [[], [], []]
    assert export_backend_properties(bare)["gates"] == []


def test_backend_properties_listing_cz_in_both_directions_import_as_one_gate(
        store: CalibrationStore) -> None:
    """A review's case: IBM's properties list each cz in both directions; the store refuses
    the key ``cz:1-0`` (the Target reads ``cz:0-1``), so such an import was refused."""
    import copy

    properties = export_backend_properties(store.commit(lab5_document()))
    cz = next(g for g in properties["gates"] if g["gate"] == "cz")
    turned = {**copy.deepcopy(cz), "qubits": cz["qubits"][::-1]}
    for gates in ([*properties["gates"], turned],
                  [turned if g is cz else g for g in properties["gates"]]):
        imported = store.import_backend_properties({**properties, "gates": gates})
        key = f"cz:{min(cz['qubits'])}-{max(cz['qubits'])}"
        assert key in imported.gates and not any(
            k.startswith("cz:") and int(k[3:].split("-")[0]) > int(k.split("-")[1])
            for k in imported.gates), sorted(imported.gates)


def test_backend_properties_import_inverts_export(store: CalibrationStore) -> None:
    snapshot = store.commit(lab5_document())
    properties = export_backend_properties(snapshot)
    document = document_from_backend_properties(properties, experiment="ibm_import")
    assert document["qubits"]["0"]["frequency_hz"] == entry(5.0213e9, "ibm_import")
    assert document["qubits"]["0"]["t2_echo_s"] == entry(3.1e-5, "ibm_import", T1)
    assert document["qubits"]["0"]["readout_duration_s"]["value"] == 1.2e-6
    assert document["qubits"]["0"]["readout_assignment_fidelity"]["value"] == 0.97
    assert "pi_amplitude" not in document["qubits"]["0"]
    assert document["gates"]["sx:0"]["duration_s"]["value"] == 3.2e-8
    assert export_backend_properties(Snapshot.from_document(document)) == {
        **properties,
        "backend_version": "snapshot-0",
    }

    properties["qubits"][1][0].update(unit="MHz", value=4876.5)
    properties["qubits"][1].append({"date": T0, "name": "prob_meas0_prep1", "unit": "", "value": 0})
    imported = store.import_backend_properties(properties)
    assert imported.qubits[1] == {"frequency_hz": Parameter(4.8765e9, T0, "backend_properties")}

    properties["qubits"][1][0]["unit"] = "us"
    with pytest.raises(InvalidSnapshotError, match=r"qubit 1, parameter 'frequency_hz'.*'us'"):
        store.import_backend_properties(properties)
    assert store.latest() == imported


# --------------------------------------------------------------------------- the file itself


def test_store_file_is_created_with_a_rollback_journal_and_a_schema_version(
        tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    with CalibrationStore(path) as created:
        created.commit(lab5_document())
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        conn.execute("UPDATE schema_version SET version = 2")
        conn.commit()
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    before = path.read_bytes()
    with pytest.raises(CalibrationError, match=r"schema version 2.*a newer labqpu wrote it: "
                                               r"update labqpu"):
        CalibrationStore(path)
    # refused, and left as it was (a review: its journal mode was switched before the check)
    assert path.read_bytes() == before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE samples (x REAL)")
        conn.commit()
    with pytest.raises(CalibrationError, match="not a calibration store"):
        CalibrationStore(other)
    with closing(sqlite3.connect(other)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(CalibrationError, match=r"garbage\.db"):
        CalibrationStore(garbage)

    closed = CalibrationStore(tmp_path / "closed.db")
    closed.close()
    with pytest.raises(CalibrationError, match="closed"):
        closed.latest_id()


def test_corrupted_row_is_reported_not_returned(store: CalibrationStore) -> None:
    snapshot = store.commit(lab5_document())
    altered = lab5_document(frequency_hz=5.5e9)
    with closing(sqlite3.connect(store.path)) as conn, conn:
        conn.execute("UPDATE snapshots SET document = ?", (json.dumps(altered),))
    with pytest.raises(CalibrationError, match=f"snapshot {snapshot.snapshot_id} .* corrupt"):
        store.latest()


# --------------------------------------------------------------------------- history, rollback


def test_parameter_history_lists_each_measurement_once_newest_first(tmp_path) -> None:
    with CalibrationStore(tmp_path / "h.sqlite") as store:
        builder = SnapshotBuilder("lab5")
        builder.set_qubit(2, "t1_s", 50e-6, "t1", timestamp=T0)
        builder.set_qubit(2, "t2_s", 40e-6, "ramsey", timestamp=T0)
        first = store.commit(builder.build_document())
        builder.set_qubit(2, "t2_s", 41e-6, "ramsey", timestamp=T1)  # t1_s carried unchanged
        store.commit(builder.build_document())
        builder.set_qubit(2, "t1_s", 55e-6, "t1", timestamp="2026-11-23T08:00:00+00:00")
        third = store.commit(builder.build_document())
        history = store.parameter_history("t1_s", qubit=2)
        assert [(r.value, r.snapshot_id) for r in history] == [
            (55e-6, third.snapshot_id), (50e-6, first.snapshot_id)]
        assert history[0].experiment == "t1"
        recent = store.parameter_history("t1_s", qubit=2, since="2026-11-22T12:00:00+00:00")
        assert [r.value for r in recent] == [55e-6]
        assert store.parameter_history("t1_s", qubit=3) == []  # no measurement of qubit 3
        with pytest.raises(CalibrationMissingError, match="did you mean 't1_s'"):
            store.parameter_history("t1", qubit=2)
        with pytest.raises(ValueError, match="exactly one"):
            store.parameter_history("t1_s", qubit=2, gate="sx:2")


def test_rollback_commits_the_old_content_and_keeps_the_history(tmp_path) -> None:
    with CalibrationStore(tmp_path / "r.sqlite") as store:
        builder = SnapshotBuilder("lab5").set_qubit(0, "t1_s", 50e-6, "t1", timestamp=T0)
        first = store.commit(builder.build_document())
        builder.set_qubit(0, "t1_s", 20e-6, "t1", timestamp=T1)
        second = store.commit(builder.build_document())
        back = store.rollback(first.snapshot_id)
        assert back.snapshot_id == second.snapshot_id + 1
        assert back.parent_id == second.snapshot_id
        assert back.qubit_value(0, "t1_s") == 50e-6
        assert f"rollback to snapshot {first.snapshot_id}" in back.notes
        assert [info.snapshot_id for info in store.history()] == [3, 2, 1]
        assert store.rollback(3).snapshot_id == 3  # already the newest: nothing committed
        assert store.rollback(first.snapshot_id).snapshot_id == 3  # 3 holds 1's calibration
        assert [info.snapshot_id for info in store.history()] == [3, 2, 1]
        with pytest.raises(CalibrationMissingError, match="no snapshot 9"):
            store.rollback(9)


def test_rollbacks_of_rollbacks_do_not_nest_their_notes(tmp_path) -> None:
    """A review's case: each rollback quoted the whole notes of the one it restored, 481
    characters after six; a rollback to a rollback now names that one's first clause only."""
    with CalibrationStore(tmp_path / "r.sqlite") as store:
        builder = SnapshotBuilder("lab5").set_qubit(0, "t1_s", 50e-6, "t1", timestamp=T0)
        builder.notes = "bootstrap"
        store.commit(builder.build_document())
        for i in range(6):
            builder.set_qubit(0, "t1_s", (21 + i) * 1e-6, "t1", timestamp=T1)
            store.commit(builder.build_document())
            back = store.rollback(store.latest_id() - 1)
        restored = back.snapshot_id - 2  # the rollback before the last commit
        assert back.notes == (f"rollback to snapshot {restored} (newest was "
                              f"{back.snapshot_id - 1}); "
                              f"{store.get(restored).notes.partition('; ')[0]}"), back.notes
        assert back.notes.count("rollback to snapshot") == 2

