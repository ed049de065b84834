"""One job at a time on a rack, among the labqpu processes of this host.

Each job reads its instruments' settings back before its run and after it, and fails when
they changed in between. Two labqpu processes sharing a rack (two users, or a calibration
beside someone's jobs) set the flux biases and LOs of their own snapshots, so one's job
setting them during the other's run failed that run ("changed during the run: the results
are discarded"), and a flux calibration failed every time beside a client running jobs.
:class:`RackLock` is an exclusive ``flock`` on a file named after the rack's controllers and
instruments (the same rack, the same file, in the temporary directory), held from a job's
settings to its read-back after the run; the next process's job waits for it, within its
run's time limit. A rack the provider started itself on ports it picked (the embedded
simulator) is nobody else's and takes no lock. Not held back: processes on other hosts, with
another temporary directory (``TMPDIR``), or whose wiring names other instruments for the
same rack. The lock files stay in the temporary directory (two per rack, 116 bytes at most):
removing one another process may hold would break the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pyvisa import rname

from labqpu.errors import JobCancelledError, RackBusyError
from labqpu.rack.config import LabConfig, tcp_host, tcp_port

log = logging.getLogger(__name__)

#: First pause (s) between two tries of a lock another process holds; the pauses grow to
#: :data:`SHORT_WAIT_PAUSE_S`, and after :data:`LONG_WAIT_S` of waiting (when the wait is
#: logged, naming the holder) to :data:`LONG_WAIT_PAUSE_S` (a waiter's CPU).
FIRST_PAUSE_S = 0.0002
SHORT_WAIT_PAUSE_S = 0.001
LONG_WAIT_S = 1.0
LONG_WAIT_PAUSE_S = 0.01
#: How long (s) a process that held the rack last lets a waiting process in first; after a
#: turn nobody took (a stopped waiter), it gives none for :data:`NO_TURNS_S`.
TURN_S = 0.05
NO_TURNS_S = 1.0
#: Bytes of the holder's line (who and since when) at the start of the lock file; after it,
#: the count of holds that set instruments (:meth:`RackLock.mark_set`), as decimal digits.
HOLDER_BYTES = 96
COUNT_BYTES = 20


def rack_lock_path(config: LabConfig, directory: str | Path | None = None) -> Path:
    """The lock file of the rack ``config`` wires (in ``directory``, default the temporary
    directory): named after its controllers' endpoints and instruments' resources, each
    spelled one way (:func:`_canonical`: ``localhost`` and ``127.0.0.1``, ``TCPIP::`` and
    ``tcpip0::`` are one rack)."""
    names = sorted(_canonical(address) for address in
                   [*(c.endpoint for c in config.controllers),
                    *(i.resource for i in config.instruments)])
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:20]
    return Path(directory or tempfile.gettempdir()) / f"labqpu-rack-{digest}.lock"


def _canonical(address: str) -> str:
    """One spelling of a controller endpoint or a VISA resource: ``tcp:<IP address>:<port>``
    for a TCP endpoint or ``TCPIP[n]::host::port::SOCKET`` resource (its host name resolved,
    an IPv4 address first; whatever the case, board number or zeros before the port); any
    other VISA resource as pyvisa writes it out in full, whatever its case (VISA reads
    resource names without regard to it) and defaults (``GPIB::12::INSTR`` is
    ``GPIB0::12::INSTR``, ``TCPIP::host::INSTR`` is ``TCPIP0::<IP address>::inst0::INSTR``);
    other endpoints as they are."""
    host, port = tcp_host(address), tcp_port(address)
    if host is not None and port is not None:
        return f"tcp:{_ip(host)}:{port}"
    if "://" in address:
        return address
    try:
        parsed = rname.parse_resource_name(address.upper())
    except rname.InvalidResourceName:
        return address.upper()
    if isinstance(parsed, rname.TCPIPInstr):
        return (f"TCPIP0::{_ip(parsed.host_address)}::{parsed.lan_device_name.lower()}"
                "::INSTR")
    return str(parsed)


def _ip(host: str) -> str:
    """The address ``host`` resolves to, an IPv4 one if it has one (``localhost`` may resolve
    to ``::1`` first); the host, lower-cased, when it does not resolve."""
    for family in (socket.AF_INET, socket.AF_UNSPEC):
        try:
            return str(socket.getaddrinfo(host.strip("[]"), None, family)[0][4][0])
        except (OSError, UnicodeError):
            continue
    return host.lower()


class RackLock:
    """An exclusive lock on one rack among this host's processes (``flock`` on ``path``),
    taken in turns: a process waiting for it holds a shared ``flock`` on ``path.queue`` while
    it waits, and the process that held the rack last lets it in before taking the rack again
    (for at most :data:`TURN_S`), so a process running jobs back to back does not keep another
    out. Its files are opened on first use and closed by :meth:`close`. The rack's one worker
    holds it; :meth:`close` from another thread during a hold closes them when it ends."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.queue_path = self.path.with_name(self.path.name + ".queue")
        self._fds: tuple[int, int] | None = None
        self._unusable = False
        self._guard = threading.Lock()  # held through a hold
        self._closing = False  # close() came during a hold: close the files at its end
        #: The count of holds that set instruments, as this lock last read or wrote it.
        self._count = 0
        #: Who holds the rack, as the lock file says while this lock holds it.
        self._me = f"pid {os.getpid()} lock {uuid.uuid4().hex[:8]}"
        #: Until when (monotonic s) this lock gives no turns: its last one was not taken.
        self._no_turns_until = 0.0
        #: True while :meth:`held` waits for the lock (another process may hold the rack).
        self.waiting = False

    @contextlib.contextmanager
    def held(self, timeout_s: float, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Hold the lock inside; wait at most ``timeout_s`` (s) for another process's. Yields
        whether another holder set instruments (:meth:`mark_set`) since this lock's last hold:
        the settings this process last found in place may have changed.

        Raises:
            RackBusyError: another process held it throughout ``timeout_s`` (named, with its
                process id and whether it is stopped).
            JobCancelledError: ``cancel`` was set while waiting.
        """
        with self._guard:
            self.waiting = True
            try:
                fds = self._open()
                if fds is not None:
                    self._let_a_waiter_in(*fds)
                fd = None if fds is None else self._take(*fds, _Wait(self, timeout_s, cancel))
            finally:
                self.waiting = False
            if fd is None:  # warned once: the read-backs still catch a neighbour's change
                yield False
                return
            try:
                line = f"{self._me} since {datetime.now(UTC).isoformat(timespec='seconds')}"
                os.pwrite(fd, line.encode().ljust(HOLDER_BYTES), 0)
                count = _count(os.pread(fd, COUNT_BYTES, HOLDER_BYTES))
                others_set, self._count = count != self._count, count
                yield others_set
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if self._closing:
                    self._close_files()

    def _let_a_waiter_in(self, fd: int, queue: int) -> None:
        """When this lock held the rack last: while another process waits for it (and for at
        most :data:`TURN_S`), wait until one of them has taken it."""
        now = time.monotonic()
        if now < self._no_turns_until:
            return
        end, pause_s = now + TURN_S, FIRST_PAUSE_S
        while _holder(fd).startswith(self._me + " "):
            try:
                fcntl.flock(queue, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a process waits (its shared lock on the queue file)
                if time.monotonic() >= end:
                    self._no_turns_until = time.monotonic() + NO_TURNS_S
                    return
                time.sleep(pause_s)
                pause_s = min(1.5 * pause_s, SHORT_WAIT_PAUSE_S)
                continue
            fcntl.flock(queue, fcntl.LOCK_UN)
            return  # nobody waits

    def _take(self, fd: int, queue: int, wait: _Wait) -> int | None:
        """Take the lock, waiting in the queue (a shared lock on its file) while another
        process holds it; returns the lock file's descriptor. A lock file removed or replaced
        meanwhile is opened again (None when it then cannot be: warned)."""
        queued = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    if self._same_file(fd):
                        return fd
                    fcntl.flock(fd, fcntl.LOCK_UN)  # held on a removed file: open the new one
                    queued = False  # the queue file's descriptor is closed with it
                    self._close_files()
                    fds = self._open()
                    if fds is None:
                        return None
                    fd, queue = fds
                    continue
                if not queued:
                    try:
                        fcntl.flock(queue, fcntl.LOCK_SH | fcntl.LOCK_NB)
                        queued = True
                    except BlockingIOError:  # a holder is looking for waiters: try again
                        pass
                wait.pause(fd)
        finally:
            if queued:
                fcntl.flock(queue, fcntl.LOCK_UN)

    def _same_file(self, fd: int) -> bool:
        """True while ``path`` is the file open as ``fd`` (not removed or replaced)."""
        try:
            now = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def mark_set(self) -> None:
        """Say, while holding the lock, that this hold sets instruments: the other processes'
        next holds learn that what they found in place may have changed."""
        if self._fds is not None:
            self._count += 1
            os.pwrite(self._fds[0], str(self._count).encode().ljust(COUNT_BYTES),
                      HOLDER_BYTES)

    def _open(self) -> tuple[int, int] | None:
        """The descriptors of the lock file and of its queue file, or None (with a warning,
        once) when they cannot be opened or are not regular files."""
        if self._fds is None and not self._unusable:
            opened: list[int] = []
            path = self.path
            try:
                for path in (self.path, self.queue_path):
                    opened.append(_open_shared(path))
                self._fds = (opened[0], opened[1])
            except OSError as exc:
                for fd in opened:
                    os.close(fd)
                self._unusable = True
                log.warning("cannot use the rack's lock file %s (%s): jobs run without it, so "
                            "another labqpu process's job can change a setting during a run, "
                            "which then fails its read-back", path, exc)
        return self._fds

    def close(self) -> None:
        """Close the lock's files (idempotent); while a hold is in progress (another thread),
        they are closed when it ends."""
        if self._guard.acquire(blocking=False):
            try:
                self._close_files()
            finally:
                self._guard.release()
        else:
            self._closing = True

    def _close_files(self) -> None:
        self._closing = False
        if self._fds is not None:
            fds, self._fds = self._fds, None
            for fd in fds:
                os.close(fd)


class _Wait:
    """The pauses of one wait for the lock (growing, see :data:`FIRST_PAUSE_S`), within
    ``timeout_s``, ended by ``cancel``."""

    def __init__(self, lock: RackLock, timeout_s: float,
                 cancel: threading.Event | None) -> None:
        self.lock, self.timeout_s, self.cancel = lock, timeout_s, cancel
        self.start = time.monotonic()
        self.pause_s = FIRST_PAUSE_S
        self.said = False

    def pause(self, fd: int) -> None:
        """Wait the next pause (``fd``: the lock file, which names its holder).

        Raises:
            RackBusyError: the wait has lasted ``timeout_s``.
            JobCancelledError: ``cancel`` is set.
        """
        waited_s = time.monotonic() - self.start
        left_s = self.timeout_s - waited_s
        if left_s <= 0:
            raise RackBusyError(
                f"the rack is in use by {_described(_holder(fd))}; "
                f"this job waited its whole time limit ({self.timeout_s:g} s) and sent "
                "nothing", instrument=f"rack lock {self.lock.path}", command="rack lock")
        if self.cancel is None:
            time.sleep(min(self.pause_s, left_s))
        elif self.cancel.wait(min(self.pause_s, left_s)):
            raise JobCancelledError("cancelled while another labqpu process used the rack")
        if waited_s >= LONG_WAIT_S and not self.said:
            self.said = True
            log.warning("waiting for the rack: it is in use by %s; "
                        "this job waits up to its time limit (%g s) for it (lock file %s)",
                        _described(_holder(fd)), self.timeout_s, self.lock.path)
        longest = SHORT_WAIT_PAUSE_S if waited_s < LONG_WAIT_S else LONG_WAIT_PAUSE_S
        self.pause_s = min(1.5 * self.pause_s, longest)


def _holder(fd: int) -> str:
    """The holder's line ("pid 1234 lock 0a1b2c3d since ..."), as far as the file says."""
    try:
        return os.pread(fd, HOLDER_BYTES, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _described(holder: str) -> str:
    """Who holds the rack, by the holder's line: another labqpu process (and what to do when
    it is stopped: Ctrl-Z, SIGSTOP), or, when the process the line names is not in /proc,
    a program that locked the file without writing its line (a lab's maintenance script
    running ``flock``: the line is the last labqpu holder's) or labqpu in another PID
    namespace."""
    words = holder.split()
    if len(words) < 2 or words[0] != "pid" or not words[1].isdigit():
        return f"another labqpu process ({holder or 'unknown'})"
    try:
        with open(f"/proc/{words[1]}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # gone, or in another PID namespace (a container)
        return (f"another process: the lock file names {holder}, which this host's /proc "
                "does not show, so the lock is held by a program other than labqpu (`fuser` "
                "on the lock file names it) or by labqpu in another container")
    except (OSError, IndexError):
        return f"another labqpu process ({holder})"
    if state in ("T", "t"):
        return (f"another labqpu process ({holder}, stopped: resume it with `kill -CONT "
                f"{words[1]}` (or `fg` in its shell), or end it)")
    return f"another labqpu process ({holder})"


def _open_shared(path: Path) -> int:
    """``path`` opened for reading and writing, never through a symbolic link and only as a
    regular file (``OSError`` otherwise): without ``O_CREAT`` when it exists (a file of
    another user in a sticky directory cannot be opened with it under Linux's
    ``protected_regular``), else created readable and writable by every user."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
            os.fchmod(fd, 0o666)  # whatever the umask: every user's jobs take it
        except FileExistsError:  # another process created it in between
            fd = os.open(path, flags)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def _count(raw: bytes) -> int:
    """The count of holds that set instruments, from its bytes in the lock file (0 when
    absent or unreadable: a new file)."""
    try:
        return int(raw.decode("ascii").strip() or 0)
    except ValueError:
        return 0
