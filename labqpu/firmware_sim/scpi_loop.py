"""The thread that serves simulated SCPI instruments: one selector, one or many instruments.

A simulated rack's instruments share one :class:`ScpiLoop`, so a host that reads back three
instruments at once wakes one thread, not three threads taking turns on the interpreter lock
(on lab5's rack, four state queries answered in 81-89 us instead of 233-361 us on this
project's 2-core test machine, ``docs/performance.md``). A lone ``ScpiServer`` gets a loop of
its own. Instruments join and leave a running loop through tasks that the
loop's own thread carries out, so the selector is only ever touched by that thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: Out of file descriptors: accepting a client fails while it stays in the backlog.
_NO_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)
#: How long a listener is not watched when no descriptor could be freed to shed its client (s).
PAUSE_S = 0.1


class Throttled:
    """A warning logged at most once per ``interval_s`` seconds; the ones held back in between
    are counted into the next (a client opening connections in a loop must not flood the
    log)."""

    def __init__(self, log: logging.Logger, interval_s: float = 1.0) -> None:
        self.log = log
        self.interval_s = interval_s
        self._last = -float("inf")
        self._held = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        self.log.warning(message + (f" ({held} more like it held back)" if held else ""),
                         *args)


#: Clients one simulated instrument serves at most (``ScpiServer(max_connections=...)``;
#: a simulated rack gives each fewer when its descriptors are few, :func:`client_budget`).
MAX_CONNECTIONS = 256
#: A client that has sent nothing for this long (s) gives its place to a new one when the
#: instrument serves :data:`MAX_CONNECTIONS` (``ScpiServer(idle_s=...)``).
IDLE_S = 30.0

#: What the loop's thread calls with its selector and its connections (socket -> connection).
Task = Callable[[selectors.BaseSelector, dict], None]


class Served(Protocol):
    """What the loop calls on an instrument (``ScpiServer``): accept a client, read from a
    connection, send what it owes, drop it. A connection knows its instrument (``.server``)."""

    def _accept(self, selector: selectors.BaseSelector, listener: socket.socket,
                connections: dict) -> None: ...

    def _receive(self, selector: selectors.BaseSelector, connection: Any) -> bool: ...

    def _flush(self, selector: selectors.BaseSelector, connection: Any) -> bool: ...

    def _drop(self, selector: selectors.BaseSelector, connections: dict, connection: Any
              ) -> None: ...


@dataclass
class Connection:
    """A client of an instrument on the loop: its socket, the bytes it sent that no line
    ended yet, the reply bytes it has not taken yet."""

    sock: socket.socket
    peer: str
    server: Served
    received: bytearray = field(default_factory=bytearray)
    pending: bytearray = field(default_factory=bytearray)
    discarding: bool = False
    watching_write: bool = False
    #: When the client last sent something (``time.monotonic``, s).
    last_active: float = field(default_factory=time.monotonic)


def reset_on_close(sock: socket.socket) -> None:
    """Make closing ``sock`` a reset, not an orderly close: the client's next read fails at
    once (a closed socket left pyvisa-py waiting for its timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def has_input(sock: socket.socket) -> bool:
    """Whether bytes (or the end of the stream) wait unread on non-blocking ``sock`` (a failed
    connection has nothing waiting to be lost)."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except OSError:  # nothing yet (BlockingIOError), or a failed connection
        return False
    return True


def client_budget(instruments: int) -> int:
    """Clients each of ``instruments`` simulated instruments in one process may serve: at most
    :data:`MAX_CONNECTIONS`, and together at most half the process's file descriptors (its
    soft ``RLIMIT_NOFILE``), so that no neighbour's connections leave the controllers none."""
    try:
        import resource
    except ImportError:  # not POSIX: no descriptor limit to share out
        return MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 2 // max(instruments, 1)))


@dataclass(frozen=True)
class _Listening:
    """The selector's data of a listening socket: the instrument it accepts clients for."""

    server: Served


class ScpiLoop:
    """One thread serving the listening sockets and connections of simulated SCPI instruments.

    Args:
        name: the thread's name.

    :meth:`attach` starts the thread on first use; :meth:`stop` closes every listening socket
    and connection it still serves and joins it. A loop cannot be started again.
    """

    def __init__(self, name: str = "scpi-servers") -> None:
        self.name = name
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wakeup: socket.socket | None = None
        self._stopped = False
        self._no_descriptors = Throttled(logger)
        #: The descriptor kept to shed a client when out of descriptors (-1: none; loop thread).
        self._reserve = -1
        #: Listeners not watched for now (loop thread only): socket -> (its data, until when).
        self._paused: dict[socket.socket, tuple[_Listening, float]] = {}

    @property
    def alive(self) -> bool:
        """True while the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def attach(self, server: Served, listener: socket.socket, timeout_s: float = 5.0
               ) -> None:
        """Serve ``server``'s non-blocking ``listener`` (and the connections it accepts) from
        now on; returns once the loop's thread has registered it.

        Raises:
            RuntimeError: the loop was stopped, or did not take the listener within
                ``timeout_s``.
        """

        def add(selector: selectors.BaseSelector, _connections: dict) -> None:
            selector.register(listener, selectors.EVENT_READ, _Listening(server))

        self._run(add, timeout_s, start=True)

    def detach(self, server: Served, listener: socket.socket, timeout_s: float = 2.0
               ) -> None:
        """Stop serving ``server``: close its listening socket and its connections. The other
        instruments on the loop go on. A stopped loop has closed them already."""

        def remove(selector: selectors.BaseSelector, connections: dict) -> None:
            if self._paused.pop(listener, None) is None:
                selector.unregister(listener)
            listener.close()
            for connection in [c for c in connections.values() if c.server is server]:
                server._drop(selector, connections, connection)

        try:
            self._run(remove, timeout_s, start=False)
        except RuntimeError as exc:
            logger.debug("%s: %s", self.name, exc)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close everything the loop serves and join its thread (``timeout_s``); idempotent."""
        with self._lock:
            self._stopped = True
            thread, wakeup = self._thread, self._wakeup
            self._wakeup = None
        if wakeup is not None:
            self._tasks.put(None)
            try:
                wakeup.send(b"\0")
            except OSError as exc:
                logger.debug("%s: wakeup failed: %s", self.name, exc)
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("%s: serving thread did not stop within %s s", self.name,
                               timeout_s)
        if wakeup is not None:
            wakeup.close()

    def _run(self, task: Task, timeout_s: float, *, start: bool) -> None:
        """Have the loop's thread carry out ``task`` and wait for it (``timeout_s``)."""
        done = threading.Event()
        failure: list[BaseException] = []

        def wrapped(selector: selectors.BaseSelector, connections: dict) -> None:
            try:
                task(selector, connections)
            except BaseException as exc:  # the caller gets it; the loop goes on
                failure.append(exc)
            finally:
                done.set()

        with self._lock:
            if self._stopped:
                raise RuntimeError(f"{self.name} is stopped")
            if self._thread is None:
                if not start:
                    raise RuntimeError(f"{self.name} never started")
                self._start()
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name}'s serving thread has ended")
            self._tasks.put(wrapped)
            try:
                self._wakeup.send(b"\0")
            except OSError as exc:
                raise RuntimeError(f"{self.name} cannot be woken: {exc}") from exc
        if not done.wait(timeout_s):
            raise RuntimeError(f"{self.name} did not answer within {timeout_s} s")
        if failure:
            raise failure[0]

    def _start(self) -> None:
        """Start the serving thread (the caller holds the lock)."""
        wake_reader, wake_writer = socket.socketpair()
        selector = selectors.DefaultSelector()
        try:
            wake_reader.setblocking(False)
            selector.register(wake_reader, selectors.EVENT_READ, None)
        except BaseException:
            for item in (selector, wake_reader, wake_writer):
                item.close()
            raise
        self._wakeup = wake_writer
        self._thread = threading.Thread(target=self._serve, args=(selector, wake_reader),
                                        name=self.name, daemon=True)
        self._thread.start()

    def _serve(self, selector: selectors.BaseSelector, wake_reader: socket.socket) -> None:
        connections: dict[socket.socket, Any] = {}
        # A descriptor kept in reserve: out of descriptors, it is given up to accept and close
        # the client waiting (a listener left readable would spin this loop).
        self._reserve = os.open(os.devnull, os.O_RDONLY)
        try:
            while True:
                timeout = None
                if self._paused:  # out of descriptors lately: wake to watch them again
                    due = min(until for _, until in self._paused.values())
                    timeout = max(0.0, due - time.monotonic())
                for key, events in selector.select(timeout):
                    if selector.get_map().get(key.fd) is not key:
                        continue  # closed by an earlier event or task of this batch
                    if key.fileobj is wake_reader:
                        if not self._carry_out_tasks(selector, connections, wake_reader):
                            return
                    elif isinstance(key.data, _Listening):
                        try:
                            key.data.server._accept(selector, key.fileobj, connections)
                        except Exception as exc:  # one failed accept costs that client only
                            if isinstance(exc, OSError) and exc.errno in _NO_DESCRIPTORS:
                                self._shed(selector, key)
                            else:
                                logger.exception("%r: accept failed", key.data.server)
                    else:
                        self._serve_connection(selector, connections, key.data, events)
                if self._paused:
                    self._resume(selector)
        finally:
            for listener in self._paused:
                listener.close()
            self._paused.clear()
            if self._reserve >= 0:
                os.close(self._reserve)
            for connection in list(connections.values()):
                connection.server._drop(selector, connections, connection)
            for key in list(selector.get_map().values()):
                selector.unregister(key.fileobj)
                key.fileobj.close()
            selector.close()
            logger.info("%s stopped", self.name)

    def _shed(self, selector: selectors.BaseSelector, key: selectors.SelectorKey) -> None:
        """Out of descriptors: give up the reserve to accept the waiting client and close it
        (it sees its connection closed), then take the reserve again. Without a reserve to
        give up (another thread took the descriptor), the listener is not watched for
        :data:`PAUSE_S` (a listener left readable would spin the loop); the reserve is taken
        again when it is watched again."""
        listener, server = key.fileobj, key.data.server
        shed = False
        if self._reserve >= 0:
            os.close(self._reserve)
            self._reserve = -1
            with contextlib.suppress(OSError):
                listener.accept()[0].close()
                shed = True
        self._take_reserve()
        if not shed:
            selector.unregister(listener)
            self._paused[listener] = (key.data, time.monotonic() + PAUSE_S)
        self._no_descriptors.warn("%r: out of file descriptors; %s", server,
                                  "closed a new connection" if shed
                                  else f"not accepting for {PAUSE_S} s")

    def _take_reserve(self) -> None:
        """Hold a reserve descriptor again if there is none and one can be had."""
        if self._reserve < 0:
            with contextlib.suppress(OSError):
                self._reserve = os.open(os.devnull, os.O_RDONLY)

    def _resume(self, selector: selectors.BaseSelector) -> None:
        """Watch again the listeners whose pause is over (and take a reserve again)."""
        now = time.monotonic()
        for listener, (data, until) in list(self._paused.items()):
            if until <= now:
                del self._paused[listener]
                selector.register(listener, selectors.EVENT_READ, data)
        self._take_reserve()

    def _carry_out_tasks(self, selector: selectors.BaseSelector, connections: dict,
                         wake_reader: socket.socket) -> bool:
        """Run the queued tasks; False when the loop is to stop."""
        with contextlib.suppress(BlockingIOError):
            wake_reader.recv(4096)
        while True:
            try:
                task = self._tasks.get_nowait()
            except queue.Empty:
                return True
            if task is None:
                return False
            task(selector, connections)

    @staticmethod
    def _serve_connection(selector: selectors.BaseSelector, connections: dict,
                          connection: Any, events: int) -> None:
        server = connection.server
        try:
            alive = (server._receive(selector, connection) if events & selectors.EVENT_READ
                     else server._flush(selector, connection))
        except Exception:  # one client's failure costs that client only
            logger.exception("%r: dropping %s", server, connection.peer)
            alive = False
        if not alive:
            server._drop(selector, connections, connection)
