"""The calibration store's file: its schema, how a new one is made whole, and what is not one."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
from contextlib import suppress
from pathlib import Path

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
    empty file, or a few bytes: SQLite opens those as a new database) or is no regular file
    (a named pipe, whose opening waits for a writer for ever, a device), else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # missing, or not reachable: SQLite's own error says which
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device file")
        return kind
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
