"""One job at a time on a rack, among the labqpu processes of this host.

Each job reads its instruments' settings back before its run and after it, and fails when
they changed in between. Two labqpu processes sharing a rack (two users, or a calibration
beside someone's jobs) set the flux biases and LOs of their own snapshots, so one's job
setting them during the other's run failed that run ("changed during the run: the results
are discarded"), and a flux calibration failed every time beside a client running jobs.
:class:`RackLock` is an exclusive ``flock`` on a file named after the rack's controllers and
instruments (the same rack, the same file, in the temporary directory), held from a job's
settings to its read-back after the run; the next process's job waits for it, within its
run's time limit. A rack the provider started itself (the embedded simulator) is nobody
else's and takes no lock. Processes on other hosts, or with another temporary directory
(``TMPDIR``), are not held back.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from labqpu.errors import InstrumentTimeoutError, JobCancelledError
from labqpu.rack.config import LabConfig

log = logging.getLogger(__name__)

#: First and longest pause (s) between two tries of a lock another process holds.
FIRST_PAUSE_S = 0.0002
LONGEST_PAUSE_S = 0.001
#: How long (s) a process that held the rack last lets a waiting process in first.
TURN_S = 0.05
#: Bytes of the holder's line (who and since when) at the start of the lock file; after it,
#: the count of holds that set instruments (:meth:`RackLock.mark_set`), as decimal digits.
HOLDER_BYTES = 96
COUNT_BYTES = 20


def rack_lock_path(config: LabConfig, directory: str | Path | None = None) -> Path:
    """The lock file of the rack ``config`` wires (in ``directory``, default the temporary
    directory): named after its controllers' endpoints and instruments' resources."""
    names = sorted([c.endpoint for c in config.controllers]
                   + [i.resource for i in config.instruments])
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:20]
    return Path(directory or tempfile.gettempdir()) / f"labqpu-rack-{digest}.lock"


class RackLock:
    """An exclusive lock on one rack among this host's processes (``flock`` on ``path``),
    taken in turns: a process waiting for it holds a shared ``flock`` on ``path.queue`` while
    it waits, and the process that held the rack last lets it in before taking the rack again
    (for at most :data:`TURN_S`), so a process running jobs back to back does not keep another
    out. Its files are opened on first use and closed by :meth:`close`. Not thread-safe by
    itself: the rack's one worker holds it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.queue_path = self.path.with_name(self.path.name + ".queue")
        self._fds: tuple[int, int] | None = None
        self._unusable = False
        #: The count of holds that set instruments, as this lock last read or wrote it.
        self._count = 0
        #: Who holds the rack, as the lock file says while this lock holds it.
        self._me = f"pid {os.getpid()} lock {uuid.uuid4().hex[:8]}"

    @contextlib.contextmanager
    def held(self, timeout_s: float, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Hold the lock inside; wait at most ``timeout_s`` (s) for another process's. Yields
        whether another holder set instruments (:meth:`mark_set`) since this lock's last hold:
        the settings this process last found in place may have changed.

        Raises:
            InstrumentTimeoutError: another process held it throughout ``timeout_s`` (named,
                with its process id).
            JobCancelledError: ``cancel`` was set while waiting.
        """
        fds = self._open()
        if fds is None:  # warned once: the read-backs still catch a neighbour's change
            yield False
            return
        fd, queue = fds
        wait = _Wait(self, fd, timeout_s, cancel)
        if self._holder(fd).startswith(self._me + " "):
            self._let_a_waiter_in(fd, queue, wait)
        self._take(fd, queue, wait)
        try:
            line = f"{self._me} since {datetime.now(UTC).isoformat(timespec='seconds')}"
            os.pwrite(fd, line.encode().ljust(HOLDER_BYTES), 0)
            count = _count(os.pread(fd, COUNT_BYTES, HOLDER_BYTES))
            others_set, self._count = count != self._count, count
            yield others_set
        finally:
            if self._fds == fds:  # not closed meanwhile (closing released it)
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _let_a_waiter_in(self, fd: int, queue: int, wait: _Wait) -> None:
        """This lock held the rack last: while another process waits for it (and for at most
        :data:`TURN_S`), wait until one of them has taken it."""
        end = time.monotonic() + TURN_S
        while time.monotonic() < end and self._holder(fd).startswith(self._me + " "):
            try:
                fcntl.flock(queue, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                wait.pause()  # a process waits (its shared lock on the queue file)
                continue
            fcntl.flock(queue, fcntl.LOCK_UN)
            return  # nobody waits

    def _take(self, fd: int, queue: int, wait: _Wait) -> None:
        """Take the lock, waiting in the queue (a shared lock on its file) while another
        process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        fcntl.flock(queue, fcntl.LOCK_SH)  # waits only while a holder looks for waiters
        try:
            while True:
                wait.pause()
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except BlockingIOError:
                    pass
        finally:
            fcntl.flock(queue, fcntl.LOCK_UN)

    def mark_set(self) -> None:
        """Say, while holding the lock, that this hold sets instruments: the other processes'
        next holds learn that what they found in place may have changed."""
        if self._fds is not None:
            self._count += 1
            os.pwrite(self._fds[0], str(self._count).encode().ljust(COUNT_BYTES),
                      HOLDER_BYTES)

    def _open(self) -> tuple[int, int] | None:
        """The descriptors of the lock file and of its queue file, or None (with a warning,
        once) when they cannot be opened."""
        if self._fds is None and not self._unusable:
            opened: list[int] = []
            try:
                for path in (self.path, self.queue_path):
                    opened.append(_open_shared(path))
                self._fds = (opened[0], opened[1])
            except OSError as exc:
                for fd in opened:
                    os.close(fd)
                self._unusable = True
                log.warning("cannot open the rack's lock file %s (%s): jobs run without it, "
                            "so another labqpu process's job can change a setting during a "
                            "run, which then fails its read-back", path, exc)
        return self._fds

    def _holder(self, fd: int) -> str:
        """The holder's line ("pid 1234 lock 0a1b2c3d since ..."), as far as the file says."""
        try:
            return os.pread(fd, HOLDER_BYTES, 0).decode(errors="replace").strip()
        except OSError:
            return ""

    def close(self) -> None:
        """Close the lock's files (releasing the lock if held). Idempotent."""
        if self._fds is not None:
            fds, self._fds = self._fds, None
            for fd in fds:
                os.close(fd)


class _Wait:
    """The pauses of one wait for the lock: growing from :data:`FIRST_PAUSE_S` to
    :data:`LONGEST_PAUSE_S`, within ``timeout_s``, ended by ``cancel``."""

    def __init__(self, lock: RackLock, fd: int, timeout_s: float,
                 cancel: threading.Event | None) -> None:
        self.lock, self.fd, self.timeout_s, self.cancel = lock, fd, timeout_s, cancel
        self.deadline = time.monotonic() + timeout_s
        self.pause_s = FIRST_PAUSE_S

    def pause(self) -> None:
        """Wait the next pause.

        Raises:
            InstrumentTimeoutError: the wait has lasted ``timeout_s``.
            JobCancelledError: ``cancel`` is set.
        """
        left_s = self.deadline - time.monotonic()
        if left_s <= 0:
            raise InstrumentTimeoutError(
                f"another labqpu process ({self.lock._holder(self.fd) or 'unknown'}) used "
                f"the rack throughout the {self.timeout_s:g} s this job waits for its run; "
                f"lock file {self.lock.path}", instrument=str(self.lock.path),
                command="rack lock")
        if self.cancel is None:
            time.sleep(min(self.pause_s, left_s))
        elif self.cancel.wait(min(self.pause_s, left_s)):
            raise JobCancelledError("cancelled while another labqpu process used the rack")
        self.pause_s = min(1.5 * self.pause_s, LONGEST_PAUSE_S)


def _open_shared(path: Path) -> int:
    """``path`` opened for reading and writing: without ``O_CREAT`` when it exists (a file of
    another user in a sticky directory cannot be opened with it under Linux's
    ``protected_regular``), else created readable and writable by every user."""
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:  # another process created it in between
        return os.open(path, os.O_RDWR)
    os.fchmod(fd, 0o666)  # whatever the umask: every user's jobs take it
    return fd


def _count(raw: bytes) -> int:
    """The count of holds that set instruments, from its bytes in the lock file (0 when
    absent or unreadable: a new file)."""
    try:
        return int(raw.decode("ascii").strip() or 0)
    except ValueError:
        return 0
