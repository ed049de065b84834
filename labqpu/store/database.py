"""``CalibrationStore``: every calibration snapshot of one device in one crash-safe SQLite file."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from labqpu.errors import (
    CalibrationError,
    CalibrationMissingError,
    CorruptSnapshotError,
    InvalidSnapshotError,
    StaleSnapshotError,
    did_you_mean,
)
from labqpu.store.files import (
    HOST,
    SCHEMA_VERSION,
    SPARE_PREFIX,
    create_schema,
    new_store_file,
    not_a_database,
    remove_companions,
    remove_orphaned_spares,
)
from labqpu.store.journal import set_aside_journal_of_another_file
from labqpu.store.physics import check_physics
from labqpu.store.properties import document_from_backend_properties, export_backend_properties
from labqpu.store.records import ParameterRecord, SnapshotInfo
from labqpu.store.snapshot import Snapshot, diff_snapshots
from labqpu.store.validation import (
    MAX_ID,
    canonical_json,
    check_timestamp,
    is_id,
    pair_key,
    parse_pair,
    qubit_index,
    sha256_hex,
    utc_now,
)

EXPORT_FORMAT = "labqpu.calibration.snapshot/1"
"""Value of the ``format`` field of :meth:`CalibrationStore.export_json` documents."""


log = logging.getLogger(__name__)

_SNAPSHOT_COLUMNS = "id, created, parent_id, content_hash, document"
#: Store files left in WAL mode that this process has warned of.
_STAYING_WAL: set[Path] = set()


def _noted(conn: sqlite3.Connection, snapshot_id: int | None) -> str:
    """`` ("<its notes>")`` of a snapshot, for a message naming it; empty when it has none or
    its document cannot be read."""
    row = None if snapshot_id is None else conn.execute(
        "SELECT document FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
    try:
        notes = json.loads(row[0]).get("notes") if row else None
    except (ValueError, AttributeError):
        return ""
    return f" ({notes!r})" if isinstance(notes, str) and notes else ""


def _calibration(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot's document without its notes: what a rollback restores."""
    document = snapshot.to_document()
    document.pop("notes", None)
    return document


class CalibrationStore:
    """Every calibration snapshot of one device, kept in one SQLite file.

    The file has a rollback journal (not WAL) and ``synchronous=FULL``; each commit is one
    ``BEGIN IMMEDIATE`` transaction, so a writer that crashes leaves nothing visible, and
    concurrent writers (threads or processes) and readers queue for at most ``timeout_s``
    seconds (a reader waits only while a commit writes, milliseconds). Between commits the file
    holds the whole store: a copy is a whole backup, and a file copied or moved into its place
    is read as it is (docs/reliability.md: why not WAL). A file an older labqpu left in WAL
    mode is switched when a store opens it while no other connection has it open.
    Readers only ever see complete snapshots (``complete = 1``). The first committed snapshot
    fixes the store's device.

    The store is thread-safe: each thread gets its own connection (also after ``fork``).
    ``close()`` (or leaving a ``with`` block) closes them all. A missing parent directory of
    ``path`` is created. A new store file appears whole: its schema is written into a
    temporary file beside it, which is then linked into place, so processes opening a new
    store at once all find a complete one (or the one another made first). Once open, the
    store never creates its file again: if the file is deleted or replaced while open, commits
    fail naming it (nothing is written into the lost file) and new threads cannot open it;
    connections already open go on reading the file they opened.

    ``validators`` run on every commit and import after the physical checks, each given the
    document and the commit's parent document (None without one; a validator may leave values
    unchanged from it alone, as the physical checks do) and raising ``InvalidSnapshotError``
    to refuse it (the provider passes the rack's instrument limits, ``labqpu.rack.limits``).

    Raises:
        CalibrationError: the file is empty (0 bytes), is not a calibration store, or has a
            newer schema. Such a file is never overwritten or reseeded.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0,
                 validators: Sequence[Callable[[Mapping[str, Any], Mapping[str, Any] | None],
                                               None]] = ()) -> None:
        if str(path) == ":memory:":
            raise ValueError(
                "a calibration store needs a file: ':memory:' is private to one "
                "connection and the store opens one per thread"
            )
        self._path = Path(path).absolute()  # a later chdir must not move the store
        self._timeout_s = timeout_s
        self._validators = tuple(validators)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CalibrationError(f"cannot create the directory of calibration store "
                                   f"{self._path}: {exc}") from exc
        remove_orphaned_spares(Path(os.path.realpath(self._path)).parent)
        if not self._path.exists():
            self._create()
        problem = not_a_database(self._path)
        if problem:
            # SQLite would take an empty file (or one of a few bytes) for a new database, and
            # the provider would then seed it with the factory snapshot: the history it once
            # held would be lost.
            raise CalibrationError(
                f"calibration store {self._path} is {problem}, not a calibration store; "
                "restore it from a backup, or delete it to start a new store")
        self._place = Path(os.path.realpath(self._path))  # where SQLite keeps the journal
        self._journal = f"{self._place}-journal"
        self._check_journal()
        try:
            self._file_id = self._identity()
            self._initialise()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        """The SQLite file."""
        return self._path

    def __repr__(self) -> str:
        return f"CalibrationStore({str(self._path)!r})"

    def __enter__(self) -> CalibrationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection of this store; further use raises CalibrationError."""
        with self._lock:
            self._closed = True
            self._set_aside_after_fork()
            connections, self._connections = self._connections, []
        for _, conn in connections:
            conn.close()

    # ------------------------------------------------------------------ connections

    def _create(self) -> None:
        """Make a new store file whole: the schema goes into a temporary file beside it, which
        is linked into place unless another process created the store first (then that one is
        used); the temporary file is removed either way."""
        # a dangling symlink's target is where the store goes, as SQLite would put it
        place = Path(os.path.realpath(self._path))
        if not place.exists():  # a deleted store's journal would be applied to the new one (at
            # once, before another process that makes the store too can have begun writing it)
            remove_companions(place)
        spare = place.with_name(f"{SPARE_PREFIX}{HOST}-{os.getpid()}-{secrets.token_hex(6)}.tmp")
        try:
            new_store_file(spare)
            try:
                os.link(spare, place)
            except FileExistsError:
                pass  # another process made it first: that store is used
            except OSError:  # no hard links on this file system: made in place
                log.debug("cannot link %s into place; the store is made in place", spare)
                new_store_file(place)
        except (OSError, sqlite3.Error) as exc:
            raise CalibrationError(f"cannot create calibration store {self._path}: {exc}") from exc
        finally:
            with suppress(OSError):
                spare.unlink(missing_ok=True)
            remove_companions(spare)

    def _check_journal(self) -> None:
        """Before SQLite reads the file: move aside a rollback journal beside it that is not
        its own (``labqpu.store.journal``), which SQLite would play into it; also for a store
        already open, whose file a restored backup replaced in place (~1 us without one)."""
        if os.path.exists(self._journal):
            set_aside_journal_of_another_file(self._path, self._place)

    def _identity(self) -> tuple[int, int]:
        """(device, inode) of the store file now."""
        try:
            info = self._path.stat()
        except OSError as exc:
            raise CalibrationError(f"calibration store {self._path} is gone: {exc}") from exc
        return info.st_dev, info.st_ino

    def _check_same_file(self) -> None:
        """Raise ``CalibrationError`` if the store's path no longer names the file opened."""
        if self._identity() != self._file_id:
            raise CalibrationError(
                f"calibration store {self._path} was replaced by another file while it was "
                "open; nothing was written: open the store again")

    def _initialise(self) -> None:
        """Create the schema if the file has none (the only time opening a store takes the
        write lock); check the schema version; then switch a WAL file to a rollback journal
        (when no other connection has it open). A file refused (another program's database, a
        schema version this labqpu does not read) is left as it was, journal mode included."""
        conn = self._waiting()
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        if exists is None:
            others = self._query("SELECT name FROM sqlite_master WHERE type = 'table'")
            if others:
                raise CalibrationError(
                    f"{self._path} is an SQLite file with tables "
                    f"{sorted(name for (name,) in others)} but no calibration schema; it is not "
                    "a calibration store")
            with self._transaction() as conn:
                create_schema(conn)
        (version,) = self._query("SELECT max(version) FROM schema_version")[0]
        if version != SCHEMA_VERSION:
            advice = ("a newer labqpu wrote it: update labqpu to read it (in a clone: git pull, "
                      "then pip install -e .)" if version > SCHEMA_VERSION else
                      "this labqpu has no migration from it")
            raise CalibrationError(
                f"calibration store {self._path} has schema version {version}; this labqpu "
                f"reads version {SCHEMA_VERSION}; {advice}; the file is left as it was")
        try:
            self._leave_wal(conn)
        except sqlite3.Error as exc:
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc

    def _leave_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file from WAL to a rollback journal. SQLite refuses while another
        connection has it open, or when the file cannot be written (a store others only
        read): it then stays in WAL, which is said once per process."""
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as exc:
            if self._path not in _STAYING_WAL:
                _STAYING_WAL.add(self._path)
                log.warning(
                    "calibration store %s stays in WAL mode (%s): until a store opens it while "
                    "no other process has it open, its newest commits may be in %s-wal, so copy "
                    "the two files together", self._path, exc, self._path.name)

    def _open(self) -> sqlite3.Connection:
        try:
            # check_same_thread=False only so that close() may close the connections of other
            # threads; otherwise each connection is used by the thread that opened it.
            # mode=rw: an open store never makes a new, empty file at its path (it was deleted).
            conn = sqlite3.connect(
                f"file:{urllib.parse.quote(os.fsencode(self._path.resolve()))}?mode=rw",
                uri=True,
                timeout=self._timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            conn.close()
            raise CalibrationError(f"cannot open calibration store {self._path}: {exc}") from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        local = self._local
        pid = os.getpid()
        if not self._closed and getattr(local, "pid", None) == pid:
            return local.conn
        with self._lock:
            if self._closed:
                raise CalibrationError(f"calibration store {self._path} is closed")
            self._set_aside_after_fork()
            alive = []
            for thread, conn in self._connections:
                if thread.is_alive():
                    alive.append((thread, conn))
                else:
                    conn.close()
            conn = self._open()
            alive.append((threading.current_thread(), conn))
            self._connections = alive
        local.conn, local.pid, local.wait_s = conn, pid, self._timeout_s
        return conn

    def _waiting(self, wait_s: float | None = None) -> sqlite3.Connection:
        """This thread's connection, set to wait at most ``wait_s`` (s; None: the store's
        ``timeout_s``) for a writer holding the file (a pragma only when that changes)."""
        conn = self._connection()
        wait_s = self._timeout_s if wait_s is None else wait_s
        if self._local.wait_s != wait_s:
            conn.execute(f"PRAGMA busy_timeout = {round(wait_s * 1000)}")
            self._local.wait_s = wait_s
        return conn

    def _set_aside_after_fork(self) -> None:
        """In a forked child (called under the lock): set the parent's connections aside,
        neither used nor closed, as SQLite requires; holding them stops the garbage collector
        from closing them."""
        pid = os.getpid()
        if self._pid != pid:
            self._inherited.extend(conn for _, conn in self._connections)
            self._connections = []
            self._pid = pid

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` write transaction, rolled back on any exception, committed
        only if the store's path still names the file opened (checked first as well: SQLite
        refuses to write a moved file as "readonly", which would not say what happened)."""
        conn = self._waiting()
        self._check_same_file()
        self._check_journal()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise CalibrationError(
                f"cannot lock calibration store {self._path} for writing: {exc}"
            ) from exc
        try:
            yield conn
            self._check_same_file()
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise CalibrationError(
                    f"writing calibration store {self._path} failed: {exc}"
                ) from exc
            raise

    def check_writable(self) -> None:
        """Raise ``CalibrationError`` naming the file when a commit could not be written to it
        (a read-only or immutable file, or directory), before a calibration spends its time
        measuring (a review's run measured for minutes, then failed at its commit). Writes
        nothing."""
        conn = self._waiting()
        self._check_same_file()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("UPDATE schema_version SET version = version WHERE 0")
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise CalibrationError(f"calibration store {self._path} cannot be written: {exc}; "
                                   "a calibration could not commit what it measures") from exc
        try:  # a commit writes its journal beside the file
            tempfile.TemporaryFile(dir=self._path.parent).close()
        except OSError as exc:
            raise CalibrationError(f"calibration store {self._path}: its directory cannot be "
                                   f"written ({exc}), where each commit writes its journal; a "
                                   "calibration could not commit what it measures") from exc

    def _query(self, sql: str, parameters: tuple[Any, ...] = (), *,
               wait_s: float | None = None) -> list[Any]:
        self._check_journal()
        try:
            return self._waiting(wait_s).execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise CalibrationError(f"reading calibration store {self._path} failed: {exc}") from exc

    def _document(self, snapshot_id: int, text: str, content_hash: str) -> dict[str, Any]:
        """The stored JSON document of a snapshot, checked against its content hash without
        validating it whole (``history`` reads every snapshot); a corrupt one is an error
        naming it, as in :meth:`_snapshot`."""
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise ValueError(f"its document is a JSON {type(document).__name__}")
            if sha256_hex(text) != content_hash \
                    and sha256_hex(canonical_json(document)) != content_hash:
                raise ValueError(f"its document does not hash to the stored {content_hash}")
        except ValueError as exc:
            raise CorruptSnapshotError(
                f"snapshot {snapshot_id} in {self._path} is corrupt: {exc}") from exc
        return document

    def _snapshot(self, row: tuple[Any, ...]) -> Snapshot:
        snapshot_id, created, parent_id, content_hash, document = row
        try:
            snapshot = Snapshot(json.loads(document), snapshot_id, created, parent_id)
        except ValueError as exc:
            raise CorruptSnapshotError(
                f"snapshot {snapshot_id} in {self._path} is corrupt: {exc}"
            ) from exc
        if snapshot.content_hash != content_hash:
            raise CorruptSnapshotError(
                f"snapshot {snapshot_id} in {self._path} is corrupt: its document hashes to "
                f"{snapshot.content_hash}, not the stored {content_hash}"
            )
        return snapshot

    @staticmethod
    def _device_clause(device: str | None) -> tuple[str, tuple[Any, ...]]:
        return ("", ()) if device is None else (" AND device = ?", (device,))

    # ------------------------------------------------------------------ writing

    def commit(
        self,
        document: Mapping[str, Any],
        *,
        parent_id: int | None = None,
        expect_parent: bool = False,
    ) -> Snapshot:
        """Validate ``document`` and store it as the newest snapshot.

        Args:
            document: the JSON layout of the module docstring (e.g. from
                :meth:`SnapshotBuilder.build_document`).
            parent_id: the snapshot this one derives from; default: the newest snapshot.
            expect_parent: optimistic concurrency for calibration runs: refuse to commit
                unless ``parent_id`` (``None``: no snapshot at all) is still the newest one.

        Returns:
            The stored snapshot, with its new id and creation time.

        Raises:
            InvalidSnapshotError: the document is malformed, holds a value no device can have
                (``labqpu.store.physics``: negative T1, T2 > 2 T1, fidelity above 1, a string
                where a number belongs ...) or one a validator refuses, is for another device
                than the store holds, or ``parent_id`` does not exist. Nothing was written.
            StaleSnapshotError: ``expect_parent`` and another snapshot was committed since
                ``parent_id``. Nothing was written.
        """
        return self._commit(document, parent_id, expect_parent, parent_id)

    def _commit(self, document: Mapping[str, Any], parent_id: int | None, expect_parent: bool,
                kept_id: int | None) -> Snapshot:
        """:meth:`commit`, leaving unchecked the values snapshot ``kept_id`` (None: the newest)
        holds unchanged."""
        if parent_id is not None and not is_id(parent_id):
            raise InvalidSnapshotError(f"parent_id must be None or an int id, not {parent_id!r}")
        draft = Snapshot(document)
        checked = draft.to_document()  # one copy for every check, which only reads it
        kept = self._kept_document(kept_id)
        check_physics(checked, kept)
        for validate in self._validators:
            validate(checked, kept)
        canonical = canonical_json(draft.to_document())
        created = utc_now()
        with self._transaction() as conn:
            first = conn.execute(
                "SELECT device FROM snapshots WHERE complete = 1 ORDER BY id LIMIT 1"
            ).fetchone()
            if first is not None and first[0] != draft.device:
                raise InvalidSnapshotError(
                    f"the document is for device {draft.device!r}, but {self._path} holds "
                    f"calibrations of device {first[0]!r}"
                )
            row = conn.execute(
                "SELECT id FROM snapshots WHERE complete = 1 ORDER BY id DESC LIMIT 1"
            ).fetchone()
            newest = None if row is None else row[0]
            if expect_parent and newest != parent_id:
                raise StaleSnapshotError(
                    f"expected snapshot {parent_id} to be the newest in {self._path}, but "
                    f"snapshot {newest}{_noted(conn, newest)} is: another writer committed "
                    "first; re-read the latest snapshot and redo the update (from "
                    "the command line: run the command again)"
                )
            if (
                parent_id is not None
                and conn.execute(
                    "SELECT 1 FROM snapshots WHERE id = ? AND complete = 1", (parent_id,)
                ).fetchone()
                is None
            ):
                raise InvalidSnapshotError(
                    f"parent snapshot {parent_id} does not exist in {self._path}"
                )
            parent = newest if parent_id is None else parent_id
            cursor = conn.execute(
                "INSERT INTO snapshots (device, created, parent_id, content_hash, document, "
                "complete) VALUES (?, ?, ?, ?, ?, 1)",
                (draft.device, created, parent, draft.content_hash, canonical),
            )
            snapshot_id = cursor.lastrowid
        return Snapshot(draft.to_document(), snapshot_id, created, parent)

    def _kept_document(self, parent_id: int | None) -> dict[str, Any] | None:
        """The normalised document of the snapshot a commit derives from (``parent_id``, else
        the newest), whose unchanged values ``check_physics`` does not check again; None when
        there is none or it cannot be read (then everything is checked)."""
        try:
            parent = self.latest() if parent_id is None else self.get(parent_id)
        except CalibrationError:
            return None
        return parent.to_document()

    def import_json(self, document: Mapping[str, Any], *, if_empty: bool = False
                    ) -> Snapshot | None:
        """Commit an :meth:`export_json` envelope (checking its content hash) or a bare
        document as the newest snapshot. With ``if_empty``, only into a store that holds no
        snapshot, checked in the commit's own transaction (returns None if it holds one), so
        that processes seeding a new store at once seed it once.

        Raises:
            InvalidSnapshotError: unknown format, altered export, or an invalid document.
        """
        if not if_empty:
            return self._import(document)
        try:
            return self._import(document, parent_id=None, expect_parent=True)
        except StaleSnapshotError:
            return None

    def _import(self, document: Mapping[str, Any], **commit_options: Any) -> Snapshot:
        if isinstance(document, Mapping) and "format" in document:
            if document["format"] != EXPORT_FORMAT:
                raise InvalidSnapshotError(
                    f"unknown export format {document['format']!r}; expected {EXPORT_FORMAT!r}"
                )
            draft = Snapshot(document.get("document"))
            expected = document.get("content_hash")
            if expected is not None and expected != draft.content_hash:
                raise InvalidSnapshotError(
                    f"the export's document hashes to {draft.content_hash}, not the "
                    f"{expected} it records: it was altered or corrupted (an export edited on "
                    "purpose imports once its \"content_hash\" field is deleted)"
                )
            document = draft.to_document()
        try:
            return self.commit(document, **commit_options)
        except InvalidSnapshotError as exc:
            if getattr(exc, "parameter", ""):  # a value a rule refuses: say how to go on
                exc.message += ("; to import it, correct that value in the file (and delete "
                                "an export's \"content_hash\" field, which the edit no longer "
                                "matches): an export an older labqpu wrote may hold a value "
                                "that a rule added since refuses")
                exc.args = (exc.message,)
            raise

    def import_backend_properties(
        self, properties: Mapping[str, Any], *, experiment: str = "backend_properties"
    ) -> Snapshot:
        """Commit a snapshot converted from a Qiskit BackendProperties JSON dict (see
        :func:`document_from_backend_properties`)."""
        return self.commit(document_from_backend_properties(properties, experiment=experiment))

    # ------------------------------------------------------------------ reading

    def latest(self, device: str | None = None) -> Snapshot:
        """The newest complete snapshot (of ``device``, if given).

        Raises:
            CalibrationMissingError: there is none.
        """
        clause, parameters = self._device_clause(device)
        rows = self._query(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE complete = 1{clause} "
            "ORDER BY id DESC LIMIT 1",
            parameters,
        )
        if not rows:
            of_device = "" if device is None else f" of device {device!r}"
            raise CalibrationMissingError(
                f"calibration store {self._path} holds no snapshot{of_device}; "
                "run a calibration or import one"
            )
        return self._snapshot(rows[0])

    def latest_id(self, device: str | None = None, *, wait_s: float | None = None
                  ) -> int | None:
        """Id of the newest complete snapshot, or ``None``: one cheap query, for polling.
        ``wait_s``: the longest (s) it waits for a writer that holds the file (default the
        store's ``timeout_s``); then ``CalibrationError``."""
        clause, parameters = self._device_clause(device)
        rows = self._query(
            f"SELECT id FROM snapshots WHERE complete = 1{clause} ORDER BY id DESC LIMIT 1",
            parameters, wait_s=wait_s)
        return rows[0][0] if rows else None

    def get(self, snapshot_id: int) -> Snapshot:
        """The complete snapshot with this id.

        Raises:
            CalibrationMissingError: there is none.
        """
        if not isinstance(snapshot_id, int) or isinstance(snapshot_id, bool):
            raise CalibrationMissingError(
                f"calibration store {self._path} has no snapshot {snapshot_id!r}: snapshot ids "
                f"are whole numbers (int), not {type(snapshot_id).__name__}")
        rows = self._query(
            f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ? AND complete = 1",
            (snapshot_id,),
        ) if is_id(snapshot_id) else []
        if not rows:
            raise CalibrationMissingError(
                f"calibration store {self._path} has no snapshot {snapshot_id}"
            )
        return self._snapshot(rows[0])

    def history(self, limit: int = 50) -> list[SnapshotInfo]:
        """The newest ``limit`` complete snapshots, newest first; a corrupt one is listed with
        its :attr:`~SnapshotInfo.problem` (the list is where a rollback target is chosen)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        rows = self._query(
            f"SELECT device, {_SNAPSHOT_COLUMNS} FROM snapshots WHERE complete = 1 "
            "ORDER BY id DESC LIMIT ?",
            (min(limit, MAX_ID),),
        )
        infos = []
        for device, snapshot_id, created, parent_id, content_hash, document in rows:
            try:
                notes, problem = self._document(snapshot_id, document,
                                                content_hash).get("notes", ""), None
            except CorruptSnapshotError as exc:
                notes, problem = "", str(exc)
            infos.append(SnapshotInfo(snapshot_id, device, created, parent_id, content_hash,
                                      notes, problem))
        return infos

    def diff(self, a_id: int, b_id: int) -> dict[str, Any]:
        """Parameters added, removed and changed from snapshot ``a_id`` to ``b_id``
        (see :func:`diff_snapshots`).

        Raises:
            CalibrationMissingError: either snapshot does not exist.
        """
        return diff_snapshots(self.get(a_id), self.get(b_id))

    def parameter_history(self, name: str, *, qubit: int | None = None,
                          pair: tuple[int, int] | None = None, gate: str | None = None,
                          since: str | datetime | None = None) -> list[ParameterRecord]:
        """Every distinct measurement of one parameter, newest first.

        Name exactly one of ``qubit``, ``pair`` (either order) or ``gate`` (``"sx:0"``).
        A value that several snapshots carry unchanged (same value, timestamp and
        experiment) appears once, with the first snapshot that held it. ``since`` keeps
        measurements taken at or after that time (aware ``datetime`` or ISO-8601), e.g.
        "T1 of qubit 2 over the last week"::

            store.parameter_history("t1_s", qubit=2,
                                    since=datetime.now(UTC) - timedelta(days=7))

        Raises:
            ValueError: not exactly one of ``qubit``, ``pair``, ``gate``.
            CalibrationMissingError: no snapshot holds a parameter of that name in that
                section (the message lists the names it holds and the closest one).
        """
        chosen = [(section, key) for section, key in
                  (("qubits", None if qubit is None else str(qubit_index(qubit))),
                   ("pairs", None if pair is None else pair_key(parse_pair(pair))),
                   ("gates", gate)) if key is not None]
        if len(chosen) != 1:
            raise ValueError("name exactly one of qubit=, pair=, gate=")
        section, key = chosen[0]
        cutoff = None if since is None else datetime.fromisoformat(check_timestamp(since))
        rows = self._query(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots WHERE complete = 1 "
                           "ORDER BY id")
        records: dict[tuple, ParameterRecord] = {}
        names: set[str] = set()
        corrupt = []
        for snapshot_id, _, _, content_hash, document in rows:
            try:
                subjects = self._document(snapshot_id, document, content_hash)[section]
            except CorruptSnapshotError:
                corrupt.append(snapshot_id)
                continue
            names.update(n for params in subjects.values() for n in params)
            entry = subjects.get(key, {}).get(name)
            if entry is None:
                continue
            identity = (canonical_json(entry["value"]), entry["timestamp"], entry["experiment"])
            if identity not in records:
                records[identity] = ParameterRecord(snapshot_id, entry["value"],
                                                    entry["timestamp"], entry["experiment"])
        if corrupt:
            log.warning("calibration store %s: snapshots %s are corrupt and left out of the "
                        "history of %r (`labqpu calibrate history` lists them)", self._path,
                        corrupt, name)
        if names and name not in names:
            raise CalibrationMissingError(
                f"no snapshot holds a {section[:-1]} parameter {name!r}"
                f"{did_you_mean(name, names, cutoff=0.5)} "
                f"({section[:-1]} parameters: {', '.join(sorted(names))})")
        out = [r for r in records.values()
               if cutoff is None or datetime.fromisoformat(r.timestamp) >= cutoff]
        return sorted(out, key=lambda r: (r.timestamp, r.snapshot_id), reverse=True)

    def rollback(self, snapshot_id: int) -> Snapshot:
        """Make the calibration of snapshot ``snapshot_id`` the newest again.

        Nothing is deleted: a new snapshot with the same content is committed on top of the
        newest one, with a note saying where it came from; the history keeps everything. When
        the newest snapshot already holds that calibration (it is that snapshot, or an earlier
        rollback to it), the newest is returned and nothing is committed: a copy would only
        repeat it in the history.

        Raises:
            CalibrationMissingError: there is no snapshot ``snapshot_id``.
        """
        snapshot = self.get(snapshot_id)
        newest = self.latest_id(snapshot.device)
        if newest is not None:
            try:
                current = snapshot if newest == snapshot_id else self.get(newest)
            except CorruptSnapshotError:  # a corrupt newest one: the rollback replaces it
                current = None
            if current is not None and _calibration(current) == _calibration(snapshot):
                return current
        document = snapshot.to_document()
        # a rollback to a rollback names that one's first clause only: notes do not nest
        earlier = document.get("notes", "")
        if earlier.startswith("rollback to snapshot "):
            earlier = earlier.partition("; ")[0]
        document["notes"] = (f"rollback to snapshot {snapshot_id} (newest was {newest})"
                             + (f"; {earlier}" if earlier else ""))
        # what the store holds is restored as it is: rules added since it was committed do
        # not refuse the values it holds (as a commit leaves its parent's values alone)
        return self._commit(document, None, False, snapshot_id)

    def export_json(self, snapshot_id: int) -> dict[str, Any]:
        """Snapshot ``snapshot_id`` as a JSON-ready envelope for :meth:`import_json`::

            {"format": EXPORT_FORMAT, "snapshot_id", "device", "created", "parent_id",
             "content_hash", "document"}

        Raises:
            CalibrationMissingError: the snapshot does not exist.
        """
        snapshot = self.get(snapshot_id)
        return {
            "format": EXPORT_FORMAT,
            "snapshot_id": snapshot.snapshot_id,
            "device": snapshot.device,
            "created": snapshot.created,
            "parent_id": snapshot.parent_id,
            "content_hash": snapshot.content_hash,
            "document": snapshot.to_document(),
        }

    def export_backend_properties(
        self, snapshot: Snapshot | int | None = None, *, backend_version: str | None = None
    ) -> dict[str, Any]:
        """A snapshot (default: the latest; or by id) in the Qiskit BackendProperties JSON
        layout (see :func:`export_backend_properties`)."""
        if snapshot is None:
            snapshot = self.latest()
        elif not isinstance(snapshot, Snapshot):
            snapshot = self.get(snapshot)
        return export_backend_properties(snapshot, backend_version=backend_version)
