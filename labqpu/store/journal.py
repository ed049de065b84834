"""A rollback journal beside the calibration store that is not its file's.

A writer killed in the middle of a commit leaves its rollback journal beside the store file,
and SQLite plays it back into whatever file is at that path when it next reads it. When the
file was replaced since (a backup restored after the crash), that mixes the two files with no
error: a backup of 3 snapshots opened with 5. Such a journal is told from the file's own by
what it saved when its transaction began, and moved aside before SQLite reads the file.

SQLite writes page 1 to the file only with its change counter set to the transaction's
starting counter plus one (and journals it first). So the file a journal belongs to has,
while the journal is there, either page 1's header exactly as the journal saved it (page 1 not
written yet), or the next counter (written); a journal that saved no page 1 never changed it,
and its file still has the page count the journal's header gives for the transaction's start.
A file that has neither is another file.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
from pathlib import Path

from labqpu.errors import CalibrationError

__all__ = ["journal_of_another_file", "read_journal", "set_aside_journal_of_another_file"]

log = logging.getLogger(__name__)

#: A rollback journal segment's header: SQLite's magic, then the number of page records in the
#: segment, a nonce, the file's size in pages when the transaction began, the sector size and
#: the page size (big-endian). Each record is a page number, the page as it was, a checksum.
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
_JOURNAL_HEADER = struct.Struct(">8sIIIII")
_ALL_RECORDS = 0xFFFFFFFF  # "as many as the file holds"
#: The database header's first 16 bytes, its change counter (every commit increments it), its
#: size in pages, and the counter that size is valid for.
_SQLITE_HEADER = b"SQLite format 3\x00"
_COUNTER, _PAGES, _VALID_FOR = slice(24, 28), slice(28, 32), slice(92, 96)
#: How long a journal found to belong to another file is watched before it is set aside (s):
#: one a writer is making now changes or goes within it.
JOURNAL_SETTLE_S = 0.05


def read_journal(journal: Path) -> tuple[int, bytes | None] | None:
    """(the file's size in pages when the journal's transaction began, page 1's first 100
    bytes as the journal saved them, or None when it saved no page 1) of the rollback journal
    ``journal``; None when there is none, or SQLite would not play it back (a header it has
    not written yet, or zeroed)."""
    try:
        with open(journal, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            start, pages = 0, None
            while start + _JOURNAL_HEADER.size <= size:
                file.seek(start)
                magic, records, _, orig, sector, page = _JOURNAL_HEADER.unpack(
                    file.read(_JOURNAL_HEADER.size))
                if magic != JOURNAL_MAGIC or sector < _JOURNAL_HEADER.size or page < 100:
                    break
                pages = orig if pages is None else pages
                offset = start + sector
                if records == _ALL_RECORDS:
                    records = (size - offset) // (page + 8)
                for _ in range(records):
                    file.seek(offset)
                    number = file.read(4)
                    if len(number) < 4:
                        break
                    if int.from_bytes(number, "big") == 1:
                        head = file.read(100)
                        return pages, head if len(head) == 100 else None
                    offset += page + 8
                start = -(-offset // sector) * sector  # the next segment, on a sector boundary
    except OSError:
        return None
    return None if pages is None else (pages, None)


def journal_of_another_file(path: Path) -> str | None:
    """Why the rollback journal beside the store file ``path`` cannot be that file's (see the
    module's docstring), or None: no journal, or one that may be the file's (SQLite then plays
    it back, as it must after a writer was killed in the middle of a commit)."""
    journal = read_journal(Path(f"{path}-journal"))
    if journal is None:
        return None
    pages, saved = journal
    try:
        with open(path, "rb") as file:
            head = file.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(_SQLITE_HEADER):
        return None
    now = int.from_bytes(head[_COUNTER], "big")
    if saved is not None:
        began = int.from_bytes(saved[_COUNTER], "big")
        if head == saved or now == (began + 1) & 0xFFFFFFFF:
            return None
        return (f"its transaction began at the file's commit {began}, and the file at the path "
                f"is at commit {now}" + (" with another header" if now == began else ""))
    if head[_VALID_FOR] != head[_COUNTER] or int.from_bytes(head[_PAGES], "big") == pages:
        return None
    return (f"its transaction began on a file of {pages} pages, and the file at the path has "
            f"{int.from_bytes(head[_PAGES], 'big')}")


def set_aside_journal_of_another_file(store: Path, place: Path) -> None:
    """Move a rollback journal beside the store file ``store`` (``place``: the file it names
    at the end of any symbolic links, where SQLite keeps the journal) that
    :func:`journal_of_another_file` finds, and finds again :data:`JOURNAL_SETTLE_S` later
    unchanged, to ``{file}-journal.{UTC time}.{random}.stale`` (kept, where SQLite does not
    look), with a warning. Should another process have moved it first and a writer have made
    a new journal at the path in between, the one moved is checked to be the one judged, and
    put back otherwise.

    Raises:
        CalibrationError: the journal could not be moved (its directory cannot be written).
    """
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
    judged = (before.st_ino, before.st_size, before.st_mtime_ns)
    if why is None or judged != (after.st_ino, after.st_size, after.st_mtime_ns):
        return
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = journal.with_name(f"{journal.name}.{stamp}.{secrets.token_hex(3)}.stale")
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
    if aside.stat().st_ino != judged[0]:  # a live writer's, made after another moved ours
        os.rename(aside, journal)
        return
    log.warning("calibration store %s: the rollback journal beside it was of an earlier file at "
                "this path (%s: its writer was killed in the middle of a commit, and the file "
                "replaced since, as when a backup is restored); it was moved to %s, and the "
                "store is read as it is", store, why, aside)
