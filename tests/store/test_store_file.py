"""The store's file: made whole when new (processes opening a new store at once), never made
again once open (deleted or replaced under an open store), and corrupt rows named wherever
they are read."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labqpu.errors import CalibrationError
from labqpu.store import CalibrationStore
from labqpu.store.files import new_store_file
from labqpu.store.journal import JOURNAL_MAGIC, read_journal
from labqpu.testing import shipped_export

OPENERS = 6


def lab5_document(frequency_hz: float | None = None, notes: str = "initial") -> dict:
    """lab5's shipped calibration document, with qubit 0's frequency (Hz) and the notes
    changed if asked."""
    document = shipped_export("lab5")["document"]
    if frequency_hz is not None:
        document["qubits"]["0"]["frequency_hz"]["value"] = frequency_hz
    document["notes"] = notes
    return document


def row_count(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT count(*) FROM snapshots").fetchone()[0]


def _open_and_seed(path: str, start: multiprocessing.synchronize.Barrier,
                   outcomes: multiprocessing.Queue) -> None:
    """Open the store at ``path`` when every opener is ready and seed it if it is empty; put
    what happened on ``outcomes``."""
    try:
        start.wait(timeout=30)
        with CalibrationStore(path) as store:
            seeded = store.import_json(lab5_document(), if_empty=True)
            outcomes.put("seeded" if seeded is not None else "found seeded")
    except Exception as exc:  # reported to the test, which fails on it
        outcomes.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("trial", range(3))
def test_processes_opening_a_new_store_at_once_all_open_it_and_seed_it_once(
        tmp_path: Path, trial: int) -> None:
    """Six processes open the same new store at the same instant and seed it if empty: every
    one opens it (none meets a half-made, empty file) and exactly one snapshot is seeded."""
    context = multiprocessing.get_context("fork")
    start, outcomes = context.Barrier(OPENERS), context.Queue()
    path = tmp_path / f"new-{trial}" / "calibration.sqlite"
    openers = [context.Process(target=_open_and_seed, args=(str(path), start, outcomes))
               for _ in range(OPENERS)]
    for opener in openers:
        opener.start()
    try:
        results = sorted(outcomes.get(timeout=60) for _ in openers)
    finally:
        for opener in openers:
            opener.join(timeout=30)
            if opener.is_alive():
                opener.kill()
                opener.join(timeout=5)
    assert results == ["found seeded"] * (OPENERS - 1) + ["seeded"], results
    assert row_count(path) == 1
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")], \
        "a temporary store file was left beside the store"


def test_a_commit_into_a_deleted_store_fails_and_no_empty_file_appears(tmp_path: Path) -> None:
    """The store file is deleted while the store is open: a commit fails naming the file (it
    would go into the deleted file and be lost), and a new thread's read does not make a new,
    empty file that the next opener would refuse."""
    path = tmp_path / "calibration.sqlite"
    with CalibrationStore(path) as store:
        store.commit(lab5_document())
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        with pytest.raises(CalibrationError, match=f"calibration store {path}"):
            store.commit(lab5_document(notes="lost"))
        errors: list[Exception] = []

        def read() -> None:
            try:
                store.latest_id()
            except CalibrationError as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=30)
        assert errors and str(path) in str(errors[0])
        assert not path.exists()


def test_a_replaced_store_file_refuses_the_commit(tmp_path: Path) -> None:
    """Another file moved into the store's path while it is open: the commit is refused and
    neither file gets it."""
    path = tmp_path / "calibration.sqlite"
    other = tmp_path / "other.sqlite"
    with CalibrationStore(other) as elsewhere:
        elsewhere.commit(lab5_document(notes="other"))
    with CalibrationStore(path) as store:
        store.commit(lab5_document())
        other.replace(path)
        with pytest.raises(CalibrationError, match="replaced by another file"):
            store.commit(lab5_document(notes="second"))
    assert row_count(path) == 1


def _backup(path: Path, commits: int) -> None:
    """A store at ``path`` holding ``commits`` snapshots, the newest noted "backup"."""
    with CalibrationStore(path) as backup:
        for i in range(commits):
            backup.commit(lab5_document(notes="backup" if i == commits - 1 else f"old {i}"))


@pytest.mark.parametrize("how", ["copied over it", "moved into place"])
def test_a_backup_put_in_place_of_an_open_store_is_read_as_it_is(tmp_path: Path,
                                                                 how: str) -> None:
    """A review's case: with the store in WAL mode, the commits of a store still open lived in
    its ``-wal`` file, which SQLite applied to the backup put at the path: the next opener saw
    the old history, and the backup's file was overwritten with it when the store closed."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, 3)
    with CalibrationStore(path) as store:
        for i in range(5):
            store.commit(lab5_document(notes=f"open {i}"))
        if how == "copied over it":
            path.write_bytes(backup.read_bytes())  # the same file, new content
        else:
            backup.replace(path)
        with CalibrationStore(path) as opened:
            assert opened.latest().notes == "backup"
    assert row_count(path) == 3
    with CalibrationStore(path) as reopened:
        assert reopened.latest().notes == "backup"


def test_a_backup_restored_after_a_writer_was_killed_is_read_as_it_is(tmp_path: Path) -> None:
    """A review's case: a writer SIGKILLed after its commits left them in the ``-wal`` file
    (WAL mode), and a backup copied into place then opened with that history instead of its
    own."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, 3)
    writer = (
        "import os, signal, sys\n"
        "from labqpu.store import CalibrationStore\n"
        "from labqpu.testing import shipped_export\n"
        "store = CalibrationStore(sys.argv[1])\n"
        "for i in range(5):\n"
        "    document = shipped_export('lab5')['document']\n"
        "    document['notes'] = f'killed {i}'\n"
        "    store.commit(document)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", writer, str(path)], timeout=60)
    assert proc.returncode == -9
    path.write_bytes(backup.read_bytes())
    with CalibrationStore(path) as restored:
        assert restored.latest().notes == "backup"
    assert row_count(path) == 3


#: A writer stopped in the middle of a commit: its pages spill into the file (a cache of one
#: page), so its journal is hot, then it is SIGKILLed. ``argv[2]``: its change to every
#: document (one that grows them journals page 1; one of the same length may not).
KILLED_MID_COMMIT = (
    "import os, signal, sqlite3, sys\n"
    "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "conn.execute('PRAGMA cache_size=1')\n"
    "conn.execute('BEGIN IMMEDIATE')\n"
    "conn.execute(sys.argv[2])\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n")
GROWN = "UPDATE snapshots SET document = document || ' '"
SAME_LENGTH = "UPDATE snapshots SET document = replace(document, 'e', 'E')"
#: A first snapshot into a new store file.
FIRST = ("INSERT INTO snapshots (device, created, content_hash, document) "
         "VALUES ('lab5', 'now', 'h', printf('%.*c', 200000, 'x'))")


def _killed_mid_commit(path: Path, change: str = GROWN) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_COMMIT, str(path), change],
                          timeout=60)
    assert proc.returncode == -9 and Path(f"{path}-journal").stat().st_size > 0


def test_a_new_store_where_a_killed_writers_journal_lies_is_whole(tmp_path: Path) -> None:
    """A review's case: a store deleted to start a new one, beside the journal of a writer
    killed in the middle of a commit: SQLite rolled that journal into the new file, which was
    then malformed. A new store file removes what SQLite left beside its path."""
    path = tmp_path / "calibration.sqlite"
    _backup(path, 3)
    _killed_mid_commit(path)
    path.unlink()
    with CalibrationStore(path) as fresh:
        assert fresh.latest_id() is None
        fresh.commit(lab5_document(notes="new"))
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert row_count(path) == 1


def test_a_killed_writers_journal_is_played_back_into_its_own_file(tmp_path: Path) -> None:
    """The journal a writer killed in the middle of a commit leaves beside its own file is
    SQLite's to play back (the file holds half a commit until then: malformed)."""
    path = tmp_path / "calibration.sqlite"
    _backup(path, 3)
    _killed_mid_commit(path)
    with CalibrationStore(path) as store:
        assert store.latest().notes == "backup"
        assert [s.notes for s in store.history()] == ["backup", "old 1", "old 0"]
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.sqlite"]


def _restored(path: Path, backup: Path) -> None:
    """``backup`` is read as it is at ``path``, whole, and the dead writer's journal kept
    aside."""
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert path.read_bytes() == backup.read_bytes()
    (aside,) = path.parent.glob("calibration.sqlite-journal.*.stale")
    assert not Path(f"{path}-journal").exists() and aside.stat().st_size > 0


@pytest.mark.parametrize(("commits", "change"), [(3, GROWN), (8, GROWN), (3, SAME_LENGTH)])
def test_a_backup_restored_after_a_writer_was_killed_mid_commit_is_read_as_it_is(
        tmp_path: Path, commits: int, change: str, caplog) -> None:
    """A backup (older or newer) copied over a store whose writer was killed in the middle of
    a commit: SQLite rolled the dead writer's journal into the backup, which then opened as a
    mix of the two files with no error (5 snapshots from a backup of 3, 5 of 8), or malformed
    (a journal without page 1, a review's case). The journal is moved aside, kept, named."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, commits)
    _backup(path, 5)
    _killed_mid_commit(path, change)
    assert (read_journal(Path(f"{path}-journal"))[1] is None) == (change == SAME_LENGTH)
    path.write_bytes(backup.read_bytes())
    with CalibrationStore(path) as restored:
        assert restored.latest().notes == "backup"
        assert restored.latest_id() == commits
    _restored(path, backup)
    assert "of an earlier file at this path" in caplog.text


def test_a_backup_restored_under_an_open_store_is_read_as_it_is(tmp_path: Path) -> None:
    """A review's case: the check ran only when a store opened, so a store already open (a
    running provider's) read a backup copied over its file through the dead writer's journal:
    5 snapshots from a backup of 3."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, 3)
    _backup(path, 5)
    with CalibrationStore(path) as store:
        assert store.latest_id() == 5
        _killed_mid_commit(path)
        path.write_bytes(backup.read_bytes())  # the same inode: the store cannot tell
        assert store.latest_id() == 3
        assert [s.notes for s in store.history()] == ["backup", "old 1", "old 0"]
    _restored(path, backup)


def test_a_copy_by_sqlites_backup_api_is_not_taken_for_the_journals_file(tmp_path: Path
                                                                         ) -> None:
    """A review's case: SQLite's backup API (``.backup``, ``VACUUM INTO``) makes files at
    change counter 1, as is a new store's file during its first commit; a writer killed then
    left a journal that began at 1, which the counter alone took for the backup's own. The
    header saved with page 1 (the file's size among it) tells them apart."""
    path, source, backup = (tmp_path / name for name in
                            ("calibration.sqlite", "source.sqlite", "backup.sqlite"))
    _backup(source, 5)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(backup)) as dst:
        src.backup(dst)
    new_store_file(path)
    assert _counter(path) == _counter(backup) == 1
    _killed_mid_commit(path, FIRST)
    path.write_bytes(backup.read_bytes())
    with CalibrationStore(path) as restored:
        assert restored.latest_id() == 5
    _restored(path, backup)


def _counter(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[24:28], "big")


def test_a_journal_moved_by_another_opener_is_never_a_live_writers(tmp_path: Path,
                                                                   mocker) -> None:
    """A review's case: another opener moved the stale journal first, and a writer made a
    new one at the path before this opener's move: the move took the live writer's journal
    (which a crash then could not play back). The file moved is checked to be the one judged,
    and put back otherwise."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, 3)
    _backup(path, 5)
    _killed_mid_commit(path)
    path.write_bytes(backup.read_bytes())
    journal = Path(f"{path}-journal")
    rename, calls = os.rename, []

    def others_first(source, target):  # the other opener's move, then a live writer's journal
        if not calls:
            rename(journal, tmp_path / "moved-by-another-opener")
            journal.write_bytes(b"a live writer's journal")
        calls.append((source, target))
        rename(source, target)

    mocker.patch("labqpu.store.journal.os.rename", side_effect=others_first)
    with CalibrationStore(path):
        mocker.stopall()
    assert len(calls) == 2 and calls[1] == calls[0][::-1]  # moved, then put back
    assert not list(tmp_path.glob("calibration.sqlite-journal.*.stale"))
    assert (tmp_path / "moved-by-another-opener").stat().st_size > 1000  # the dead writer's


def test_a_journal_of_another_file_that_cannot_be_moved_is_an_error(tmp_path: Path,
                                                                    mocker) -> None:
    """Where the journal cannot be moved away (a directory the user cannot write: faked, as
    root writes everywhere), opening the store is an error naming the journal, and neither
    file is touched."""
    path, backup = tmp_path / "calibration.sqlite", tmp_path / "backup.sqlite"
    _backup(backup, 3)
    _backup(path, 5)
    _killed_mid_commit(path)
    path.write_bytes(backup.read_bytes())
    journal = Path(f"{path}-journal").read_bytes()
    mocker.patch("labqpu.store.journal.os.rename", side_effect=PermissionError(13, "denied"))
    with pytest.raises(CalibrationError, match=r"rollback journal .*calibration\.sqlite-journal"
                       r" beside it is of an earlier file .* cannot be moved away"):
        CalibrationStore(path)
    assert path.read_bytes() == backup.read_bytes()
    assert Path(f"{path}-journal").read_bytes() == journal


@settings(max_examples=300, deadline=None)
@given(header=st.tuples(*[st.sampled_from([0, 1, 28, 100, 512, 4096, 2**31, 2**32 - 1])] * 5),
       body=st.binary(max_size=6000))
def test_a_damaged_journal_is_read_without_error(tmp_path_factory, header, body) -> None:
    """Any journal with SQLite's magic, whatever its counts, sizes and records, is read to an
    answer (its file's size and page 1's header, or none) without an error."""
    journal = tmp_path_factory.mktemp("journal") / "calibration.sqlite-journal"
    journal.write_bytes(JOURNAL_MAGIC + b"".join(n.to_bytes(4, "big") for n in header) + body)
    read = read_journal(journal)
    assert read is None or (read[0] >= 0 and (read[1] is None or len(read[1]) == 100))


def test_a_store_left_in_wal_mode_is_switched_when_opened_alone(tmp_path: Path) -> None:
    """A file an older labqpu left in WAL mode: a store opening it beside another connection
    works in WAL mode; one opening it alone switches it to a rollback journal."""
    path = tmp_path / "calibration.sqlite"
    _backup(path, 2)
    with closing(sqlite3.connect(path)) as older:
        assert older.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
        older.execute("SELECT count(*) FROM snapshots").fetchone()
        with CalibrationStore(path) as beside:
            beside.commit(lab5_document(notes="beside"))
        assert older.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with CalibrationStore(path) as alone:
        assert alone.latest().notes == "beside"
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert not Path(f"{path}-wal").exists()


def test_history_names_a_corrupt_snapshot(tmp_path: Path, caplog) -> None:
    """A stored document that is not JSON, or no longer matches its hash: ``history`` lists
    the snapshot with the problem (it raised, so the list a rollback target is chosen from
    could not be had), ``parameter_history`` leaves it out with a warning naming it, and
    reading the snapshot itself is an error naming it."""
    with CalibrationStore(tmp_path / "calibration.sqlite") as store:
        first = store.commit(lab5_document())
        second = store.commit(lab5_document(frequency_hz=5.03e9))
        for damage in ('{"device": "lab5", "qub', json.dumps(lab5_document(frequency_hz=6e9))):
            with closing(sqlite3.connect(store.path)) as conn, conn:
                conn.execute("UPDATE snapshots SET document = ? WHERE id = ?",
                             (damage, first.snapshot_id))
            listed = {info.snapshot_id: info for info in store.history()}
            assert listed[second.snapshot_id].problem is None
            assert re.fullmatch(f"snapshot {first.snapshot_id} in .* is corrupt: .*",
                                listed[first.snapshot_id].problem)
            caplog.clear()
            records = store.parameter_history("frequency_hz", qubit=0)
            assert [r.value for r in records] == [5.03e9]
            assert f"snapshots [{first.snapshot_id}] are corrupt" in caplog.text
            with pytest.raises(CalibrationError,
                               match=f"snapshot {first.snapshot_id} in .* is corrupt"):
                store.get(first.snapshot_id)
            caplog.clear()  # a name only the corrupt snapshot could hold: missing, and why
            with pytest.raises(CalibrationError, match="no snapshot holds"):
                store.parameter_history("only_in_the_corrupt_one", qubit=0)
            assert f"snapshots [{first.snapshot_id}] are corrupt" in caplog.text


def test_a_store_is_made_in_place_where_hard_links_are_not_supported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a file system without hard links (vfat, some network mounts: not available on this
    machine, so ``os.link`` is made to fail as it fails there) the new store is made in place,
    and no temporary file is left."""
    def no_links(*_args: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "store.sqlite"
    with CalibrationStore(path) as store:
        assert store.commit(lab5_document()).snapshot_id == 1
    assert row_count(path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]


@pytest.mark.parametrize("name", ["with space %20?#;.sqlite", os.fsdecode(b"bad\xff.sqlite")])
def test_store_names_that_need_quoting_open_and_commit(tmp_path: Path, name: str) -> None:
    """The connections open the file by a ``file:`` URI: spaces, ``%``, ``?``, ``#`` and a
    name that is not UTF-8 reach the same file."""
    with CalibrationStore(tmp_path / name) as store:
        store.commit(lab5_document())
        assert store.commit(lab5_document(notes="second")).snapshot_id == 2
    assert row_count(tmp_path / name) == 2


def test_a_relative_store_path_survives_a_change_of_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with CalibrationStore("store.sqlite") as store:
        store.commit(lab5_document())
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert store.commit(lab5_document(notes="second")).snapshot_id == 2
    assert row_count(tmp_path / "store.sqlite") == 2


def test_a_dangling_symlink_makes_the_store_at_its_target(tmp_path: Path) -> None:
    (tmp_path / "link.sqlite").symlink_to(tmp_path / "target.sqlite")
    with CalibrationStore(tmp_path / "link.sqlite") as store:
        store.commit(lab5_document())
    assert row_count(tmp_path / "target.sqlite") == 1


def test_a_store_creations_leftovers_from_a_killed_process_are_removed_on_open(tmp_path) -> None:
    """A process SIGKILLed while it made a store file leaves its temporary file (and SQLite's
    -wal and -shm beside it) in the store's directory. The next store opened there removes
    those of a process of this host that no longer runs; it keeps those of a running process
    (it may be making its store now), those of another host (a shared file system) and every
    other file."""
    from labqpu.store.files import HOST, SPARE_PREFIX

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True, timeout=60)
    dead = int(ended.stdout)
    orphans = [tmp_path / f"{SPARE_PREFIX}{HOST}-{dead}-0a1b2c3d4e5f.tmp{tail}"
               for tail in ("", "-wal", "-shm")]
    kept = [tmp_path / f"{SPARE_PREFIX}{HOST}-{os.getpid()}-ffffffffffff.tmp",
            tmp_path / f"{SPARE_PREFIX}other_host-{dead}-123456abcdef.tmp",
            tmp_path / "notes.tmp", tmp_path / f"{SPARE_PREFIX}readme.txt"]
    for path in [*orphans, *kept]:
        path.write_bytes(b"x")
    with CalibrationStore(tmp_path / "calibration.sqlite") as store:
        assert store.latest_id() is None
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in kept)
    spares = {p for p in tmp_path.iterdir() if p.name.startswith(SPARE_PREFIX)}
    assert spares == {kept[0], kept[1], kept[3]}  # this open's own temporary file went too
