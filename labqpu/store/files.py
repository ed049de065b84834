"""The calibration store's file: its schema, how a new one is made whole, what is not one, and a
rollback journal that is not its own."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import struct
import time
from contextlib import suppress
from pathlib import Path

from labqpu.errors import CalibrationError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the SQLite schema this module reads and writes."""

SNAPSHOTS_TABLE = """
CREATE TABLE snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    created TEXT NOT NULL,
    parent_id INTEGER REFERENCES snapshots (id),
    content_hash TEXT NOT NULL,
    document TEXT NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1))
)
"""


def new_store_file(path: Path) -> None:
    """Write the calibration schema into the SQLite file ``path`` (with a rollback journal,
    SQLite's default: :class:`CalibrationStore` says why)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        create_schema(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


#: A store creation's temporary file: ``{prefix}{host}-{pid}-{random}.tmp`` (and SQLite's
#: journal beside it), named so that an orphan can be told from a file another process is
#: making now without comparing clocks.
SPARE_PREFIX = ".labqpu-store-"
HOST = socket.gethostname().replace("-", "_")


#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def not_a_database(path: Path) -> str | None:
    """What the file at ``path`` is when it exists but holds no SQLite database header (an
    empty file, or a few bytes: SQLite opens those as a new database), else None."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:
        return None  # missing, a directory, not readable: SQLite's own error says which
    if not head:
        return "an empty file (0 bytes)"
    if head != SQLITE_HEADER:
        return f"a {path.stat().st_size}-byte file without SQLite's header"
    return None


#: The files SQLite keeps beside a database: its rollback journal, and a WAL-mode file's log
#: and shared memory.
COMPANIONS = ("-journal", "-wal", "-shm")


def remove_companions(path: Path) -> None:
    """Remove the files SQLite left beside ``path`` (:data:`COMPANIONS`): before a new store
    file is put there, they belong to a file that is gone, and SQLite would apply them to the
    new one (a writer killed in the middle of a commit leaves its journal)."""
    for tail in COMPANIONS:
        with suppress(OSError):
            Path(f"{path}{tail}").unlink(missing_ok=True)


#: A rollback journal segment's header: SQLite's magic, then the number of page records in the
#: segment, a nonce, the file's size in pages when the transaction began, the sector size and
#: the page size (big-endian). Each record is a page number, the page as it was, a checksum.
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
_JOURNAL_HEADER = struct.Struct(">8sIIIII")
_ALL_RECORDS = 0xFFFFFFFF  # "as many as the file holds"
#: Where page 1 keeps the file change counter, which every commit increments.
_CHANGE_COUNTER = slice(24, 28)
#: How long a journal found to belong to another file is watched before it is set aside (s):
#: one a writer is making now changes or goes within it.
JOURNAL_SETTLE_S = 0.05


def journal_page_one(journal: Path) -> bytes | None:
    """The database header (page 1's first 100 bytes) as the rollback journal ``journal``
    saved it when its transaction began; None when there is no journal, when SQLite would not
    play it back (a header it has not written yet, or zeroed), or when it holds no page 1
    (a transaction that changed page 1 journalled it first: every commit does)."""
    try:
        with open(journal, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            start = 0
            while start + _JOURNAL_HEADER.size <= size:
                file.seek(start)
                magic, records, _, _, sector, page = _JOURNAL_HEADER.unpack(
                    file.read(_JOURNAL_HEADER.size))
                if magic != JOURNAL_MAGIC or sector < _JOURNAL_HEADER.size or page < 100:
                    return None
                offset = start + sector
                if records == _ALL_RECORDS:
                    records = (size - offset) // (page + 8)
                for _ in range(records):
                    file.seek(offset)
                    number = file.read(4)
                    if len(number) < 4:
                        return None
                    if int.from_bytes(number, "big") == 1:
                        head = file.read(100)
                        return head if len(head) == 100 else None
                    offset += page + 8
                start = -(-offset // sector) * sector  # the next segment, on a sector boundary
    except OSError:
        return None
    return None


def journal_of_another_file(path: Path) -> str | None:
    """Why the rollback journal beside the store file ``path`` cannot be that file's, or None
    (no journal, or one that may be: SQLite then plays it back, as it must after a writer was
    killed in the middle of a commit). A journal's transaction began at some commit of its
    file, and its file is at that commit or, once the commit began writing it, the next; a
    file at any other commit was put at the path since (a backup restored after the crash)."""
    saved = journal_page_one(Path(f"{path}-journal"))
    if saved is None:
        return None
    try:
        with open(path, "rb") as file:
            head = file.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        return None
    began = int.from_bytes(saved[_CHANGE_COUNTER], "big")
    now = int.from_bytes(head[_CHANGE_COUNTER], "big")
    if now in (began, (began + 1) & 0xFFFFFFFF):
        return None
    return (f"its transaction began at the file's commit {began}, and the file at the path is "
            f"at commit {now}")


def set_aside_journal_of_another_file(store: Path) -> None:
    """Move a rollback journal beside the store file ``store`` that :func:`journal_of_another_file`
    finds, and finds again :data:`JOURNAL_SETTLE_S` later unchanged, to
    ``{file}-journal.{UTC time}.stale`` (kept, where SQLite does not look), with a warning:
    SQLite would roll the pages of the file it came from into this one, which then opens as a
    silent mix of the two (a restored backup with the crashed store's rows).

    Raises:
        CalibrationError: the journal could not be moved (its directory cannot be written).
    """
    place = Path(os.path.realpath(store))  # SQLite keeps a link's journal at its target
    journal = Path(f"{place}-journal")
    if journal_of_another_file(place) is None:
        return
    try:
        before = journal.stat()
        time.sleep(JOURNAL_SETTLE_S)
        why = journal_of_another_file(place)
        after = journal.stat()
    except FileNotFoundError:
        return
    if why is None or (before.st_ino, before.st_size, before.st_mtime_ns) != (
            after.st_ino, after.st_size, after.st_mtime_ns):
        return
    aside = journal.with_name(f"{journal.name}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
                              ".stale")
    try:
        os.rename(journal, aside)
    except FileNotFoundError:  # another process opening the store moved it first
        return
    except OSError as exc:
        raise CalibrationError(
            f"calibration store {store}: the rollback journal {journal} beside it is of an "
            f"earlier file at this path ({why}: its writer was killed in the middle of a "
            f"commit, and the file replaced since), and it cannot be moved away ({exc}); "
            "SQLite would roll it into this file: move it away, then open the store "
            "again") from exc
    log.warning("calibration store %s: the rollback journal beside it was of an earlier file at "
                "this path (%s: its writer was killed in the middle of a commit, and the file "
                "replaced since, as when a backup is restored); it was moved to %s, and the "
                "store is read as it is", store, why, aside)


def remove_orphaned_spares(directory: Path) -> None:
    """Remove the temporary files of store creations in ``directory`` (``CalibrationStore.
    _create``) made on this host by a process that no longer runs (one killed while it made a
    store); those of other hosts (a shared file system) and of running processes are kept."""
    with suppress(OSError):
        for entry in os.scandir(directory):
            name = entry.name
            if not name.startswith(SPARE_PREFIX) or ".tmp" not in name:
                continue
            parts = name[len(SPARE_PREFIX):].split(".tmp", 1)[0].split("-")
            if len(parts) == 3 and parts[0] == HOST and parts[1].isdigit() \
                    and not running(int(parts[1])):
                with suppress(OSError):
                    os.unlink(entry.path)


def running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    return True


def create_schema(conn: sqlite3.Connection) -> None:
    """The calibration schema, inside the caller's write transaction (unless it is there)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    if conn.execute("SELECT 1 FROM schema_version").fetchone() is None:
        conn.execute(SNAPSHOTS_TABLE)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
