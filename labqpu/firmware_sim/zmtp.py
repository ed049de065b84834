"""ZMTP 3 served by the simulated controller itself, so that a whole message is bounded.

libzmq bounds each frame of a message (``MAXMSGSIZE``) but buffers a multipart message in full
before the application sees any of it, whatever its number of frames: one client could make
the controller hold as much memory as it sent in one message. The controller therefore keeps
its TCP connections itself (:class:`ZmtpServer`: one ``selectors`` loop on the serving thread,
non-blocking sockets; what a client does not read waits in a bounded outbox, and TCP pushes
back on what the controller has not read) and speaks ZMTP 3.0 (RFC 23, NULL security, as a
``ROUTER``), counting frames and bytes as they arrive. Clients are plain ZeroMQ ``DEALER``
sockets; nothing changes for them. A ``REQ`` socket works too: the envelope that starts each
of its messages (its frames up to an empty delimiter frame; libzmq's ``REQ_CORRELATE`` puts a
request id before the delimiter) is taken off, so the controller sees the same frames as from
a ``DEALER``, and goes back before the reply to that message, as a ``ROUTER``'s owner echoes
it: :attr:`Inbound.peer` carries it. Without libzmq's I/O thread between the socket and the
serving thread, a request and its reply each take one thread hand-off fewer.

A message is refused (:class:`Inbound` with ``refusal``) as soon as a frame header declares
more than a cap allows, or its bytes, as they arrive, would take the unfinished messages of all
connections beyond theirs; the rest of it is read and dropped, and the connection stays usable
for the next message. Memory is taken as bytes arrive, not as sizes are declared. A
handshake, frame header or message left unfinished, or replies left untaken, for
``max_message_s`` close the connection (:meth:`ZmtpServer.expire`); the replies waiting for
all connections together are bounded too. A connection that breaks the framing (not ZMTP 3,
a mechanism other than NULL, an incompatible socket type, a malformed or second ``READY``,
reserved flag bits, an oversized or ``ERROR`` command, a command inside a message, a ``REQ``
message without its envelope) is closed; nothing a connection sends raises out of
:meth:`ZmtpServer.receive`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from labqpu.firmware_sim.scpi_loop import has_input

logger = logging.getLogger(__name__)

GREETING_BYTES = 64
"""A ZMTP 3 greeting: signature (10), version (2), mechanism (20), as-server (1), filler (31)."""

MAX_COMMAND_BYTES = 4096
"""Largest command frame (``READY``, ``PING``) taken; a larger one closes the connection."""

RECEIVE_BYTES = 1 << 20
"""Most bytes one :meth:`ZmtpServer.receive` reads from one connection, so that a large upload
holds the serving loop for well under a millisecond at a time. Only a read inside a frame with
more than :data:`SHORT_RECEIVE_BYTES` still to come asks for that much."""

SHORT_RECEIVE_BYTES = 1 << 16
"""What one read asks for otherwise (requests, frame headers): Python allocates the whole size
asked before the read, which costs ~15 us at :data:`RECEIVE_BYTES` against ~2 us here."""

ACCEPTS_PER_RECEIVE = 64
"""Most new connections one :meth:`ZmtpServer.receive` takes."""

MAX_UNSENT_BYTES = 1 << 30
"""Most bytes that replies waiting for the connections keep in memory, all together (a part
counts the whole buffer it is a view of, and :data:`PART_COST` more). Beyond it, requests
are not read from connections with replies waiting, and those whose replies have not moved
for :data:`STALLED_S` are closed, the ones holding the most first, as few as it takes."""

PART_COST = 64
"""Bytes each waiting part of a reply is counted with beyond its own, for its bookkeeping."""

STALLED_S = 1.0
"""How long replies must have waited without moving for their connection to be closed when
the replies waiting are over :data:`MAX_UNSENT_BYTES` (s)."""

EXPIRE_EVERY_S = 0.2
"""How often :meth:`ZmtpServer.expire` looks for stale messages and untaken replies (s)."""

_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_MAX_PING_CONTEXT = 16  # RFC 37: a PING's context is 0..16 bytes, echoed in the PONG
_PEER_TYPES = frozenset({b"REQ", b"DEALER", b"ROUTER"})  # what a ROUTER talks to
_WARN_EVERY_S = 1.0
_MAX_PARTS_PER_SEND = 256  # buffers in one sendmsg (Linux takes up to 1024)
_JOIN_BELOW = 1 << 16  # a message this small is copied into one buffer
_LISTENER, _WAKE = object(), object()  # selector keys' data besides peer ids
_ID_BYTES = 8  # a connection's id; a REQ's address is its id and its envelope's bytes
_MAX_ENVELOPE_BYTES = 256  # a REQ's envelope as sent (libzmq's: 2 bytes, 8 with a request id)


def _frame_header(flags: int, size: int) -> bytes:
    if size < 256:
        return bytes((flags, size))
    return struct.pack(">BQ", flags | _LONG, size)


def _command(name: bytes, body: bytes = b"") -> bytes:
    data = bytes([len(name)]) + name + body
    return _frame_header(_COMMAND, len(data)) + data


_GREETING = (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0"
             + bytes(31))
_READY = _command(b"READY", bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"ROUTER")


@dataclass(frozen=True)
class MessageLimits:
    """What one message and all unfinished ones together may take (bytes of frame bodies).

    Attributes:
        max_frames: most frames in one message.
        max_header_bytes: largest first frame (bytes); also the bytes of every message not
            counted against ``max_inbound_bytes``, so that a header and small arrays get in
            whatever other connections hold (and a refusal can name its request).
        max_frame_bytes: largest frame (bytes).
        max_message_bytes: most bytes in one message, all frames together.
        max_inbound_bytes: most bytes of unfinished messages of all connections together
            (each message's first ``max_header_bytes`` aside); a message whose bytes would go
            beyond is refused as ``busy``.
        max_message_s: longest a message may stay unfinished (s); then its connection is
            closed.
        max_connections: most clients connected at once; one beyond is closed at once, unless
            a client has sent nothing for ``connection_idle_s`` and has nothing waiting (a
            message unfinished, a reply untaken, input unread): the longest idle such one is
            closed instead (a DEALER connects again by itself, ~0.1 s later, which may close
            the next idle one: a full server cycles through its idle clients).
        connection_idle_s: how long (s) a client must have sent nothing to give its place to
            a new one.
    """

    max_frames: int
    max_header_bytes: int
    max_frame_bytes: int
    max_message_bytes: int
    max_inbound_bytes: int
    max_message_s: float
    max_connections: int
    connection_idle_s: float = 30.0


@dataclass(frozen=True)
class Inbound:
    """One message read from a client.

    Attributes:
        peer: where the reply goes (give it to :meth:`ZmtpServer.send`): the connection's
            id, and for a ``REQ`` socket the message's envelope too.
        frames: the message's frames (read-only); for a refused message, its first frame if
            it came whole before the refusal (to read a request id from), else none.
        refusal: None, or why the message was refused (a sentence naming the limit).
        busy: True when the refusal is for the unfinished messages held (try again later),
            False when the message itself is over a limit.
    """

    peer: bytes
    frames: list[memoryview]
    refusal: str | None = None
    busy: bool = False


class _FramingError(Exception):
    """The connection broke ZMTP; it is closed."""


class _Peer:
    __slots__ = ("answered", "body", "busy", "delimited", "envelope", "frames", "greeted",
                 "last_active", "message_bytes", "more", "outbox", "owed_since", "pending",
                 "ready", "refusal", "remaining", "req", "sent_at", "sock", "started", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.outbox: deque[bytes | memoryview] = deque()  # what waits for room, in order
        self.unsent = 0  # bytes in the outbox, PART_COST each part included
        self.sent_at = 0.0  # when the outbox last moved (monotonic s)
        self.pending = b""  # bytes of a greeting, frame header or command not yet whole
        self.greeted = self.ready = False
        self.req = False  # a REQ socket: its messages start with an envelope
        self.envelope = b""  # the current message's envelope as it came (frame headers too)
        self.delimited = False  # the current message's envelope ended (its empty frame came)
        self.frames: list[memoryview] = []
        self.message_bytes = 0  # frame bytes held, counted against the inbound budget
        self.refusal: str | None = None
        self.busy = False
        self.answered = False  # the refusal was handed out
        self.body: bytearray | None = None  # the frame being read (None: being dropped)
        self.remaining = 0  # bytes of the current frame still to come
        self.more = False
        self.started: float | None = None  # when the unfinished message's first frame began
        #: Since when the client owes the rest of its handshake, a command or a frame header.
        self.owed_since: float | None = time.monotonic()
        self.last_active = self.owed_since  # when the client last sent anything (monotonic s)


class ZmtpServer:
    """ZMTP 3 on a listening TCP socket: whole messages in, whole messages out.

    One thread (the controller's serving thread) calls :meth:`receive`, which waits (up to a
    timeout) for connections, input, room to send and :meth:`wake`, then reads, and
    :meth:`expire` and :meth:`shutdown`; any thread may call :meth:`send`, :meth:`close` and
    :meth:`wake` (a lock keeps each message whole and in order on its connection).

    Args:
        listener: a listening TCP socket (:func:`listen`); closed by :meth:`shutdown`.
        limits: the bounds on messages.
        max_unsent_bytes: most bytes the replies waiting for the connections keep in
            memory, all together (:data:`MAX_UNSENT_BYTES`).
    """

    def __init__(self, listener: socket.socket, limits: MessageLimits, *,
                 max_unsent_bytes: int = MAX_UNSENT_BYTES) -> None:
        self.limits = limits
        self.max_unsent_bytes = max_unsent_bytes
        self._listener = listener
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._waker, self._wakeup = socket.socketpair()
        for end in (self._waker, self._wakeup):
            end.setblocking(False)
        self._selector.register(self._wakeup, selectors.EVENT_READ, _WAKE)
        self._peers: dict[bytes, _Peer] = {}
        self._ids = itertools.count(1)
        self._accepting_again = 0.0  # after a failed accept (no descriptors left), monotonic s
        self._inbound_bytes = 0
        self._unsent_bytes = 0
        self._warned_at = 0.0
        self._next_expiry = 0.0
        self._lock = threading.RLock()  # the connections' state, for every call but waiting

    @property
    def _over(self) -> bool:
        """More than ``max_unsent_bytes`` wait: requests of connections with replies waiting
        wait too."""
        return self._unsent_bytes > self.max_unsent_bytes

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return self._listener.getsockname()[1]

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._peers)

    def wake(self) -> None:
        """Make a :meth:`receive` that waits return at once (any thread; a no-op once
        :meth:`shutdown` ran)."""
        with contextlib.suppress(OSError):  # full: awake already; closed: shut down
            self._waker.send(b"\0")

    def receive(self, timeout_s: float = 0.0) -> list[Inbound]:
        """The messages that came whole (or were refused), waiting up to ``timeout_s`` (s) for
        anything to happen. Reads at most :data:`RECEIVE_BYTES` from each connection with
        input; greets new connections, sends what waited for room and closes connections
        that broke the framing on the way. Never raises for what a client sent."""
        ready = self._selector.select(timeout_s)
        out: list[Inbound] = []
        with self._lock:
            for key, events in ready:
                if key.data is _LISTENER:
                    self._accept()
                elif key.data is _WAKE:
                    with contextlib.suppress(OSError):
                        self._wakeup.recv(4096)
                elif (peer := self._peers.get(key.data)) is not None:  # not closed meanwhile
                    if events & selectors.EVENT_WRITE and not self._flush(key.data, peer):
                        continue
                    if events & selectors.EVENT_READ:
                        out += self._read(key.data, peer)
        return out

    def expire(self) -> None:
        """Close the connections whose handshake, frame header or message has stayed
        unfinished, or whose replies have not been taken, for longer than ``max_message_s``,
        and, over ``max_unsent_bytes``, those whose replies have not moved for
        :data:`STALLED_S` (looked at most every :data:`EXPIRE_EVERY_S`)."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY_S
        limit = self.limits.max_message_s
        with self._lock:
            if self._accepting_again and now >= self._accepting_again:
                self._accepting_again = 0.0
                self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)
            for peer_id, peer in list(self._peers.items()):
                if peer.started is not None and now - peer.started > limit:
                    self._warn(f"closed a client connection whose message stayed unfinished "
                               f"for {limit} s")
                    self.close(peer_id)
                elif peer.owed_since is not None and now - peer.owed_since > limit:
                    self._warn(f"closed a client connection that left its handshake or a "
                               f"frame header unfinished for {limit} s")
                    self.close(peer_id)
                elif peer.outbox and now - peer.sent_at > limit:
                    self._warn(f"closed a client connection that took none of its replies "
                               f"for {limit} s")
                    self.close(peer_id)
            if self._over:
                self._close_stalled(now)

    def send(self, address: bytes, frames: Sequence[bytes | bytearray | memoryview]) -> bool:
        """Send one message to ``address`` (:attr:`Inbound.peer`), whole (what the socket does
        not take at once waits, in order, for room); False when the connection is gone."""
        last = len(frames) - 1
        parts: list[bytes | memoryview] = []
        for index, frame in enumerate(frames):
            view = memoryview(frame).cast("B")
            parts += [_frame_header(_MORE if index < last else 0, len(view)), view]
        peer_id, envelope = connection_of(address), address[_ID_BYTES:]
        with self._lock:
            peer = self._peers.get(peer_id)
            if peer is None:  # gone: a ROUTER drops such a reply too
                return False
            return self._write(peer_id, peer, [envelope, *parts] if envelope else parts)

    def close(self, address: bytes) -> None:
        """Close the connection of ``address`` (a connection id or :attr:`Inbound.peer`; a
        no-op for one already gone); the client's DEALER connects again by itself."""
        peer_id = connection_of(address)
        with self._lock:
            peer = self._peers.pop(peer_id, None)
            if peer is None:
                return
            self._inbound_bytes -= self._counted(peer)
            self._selector.unregister(peer.sock)
            self._count_unsent(peer_id, peer, -peer.unsent)
            peer.sock.close()

    def shutdown(self) -> None:
        """Close every connection, the listening socket and the wake-up pair."""
        with self._lock:
            for peer_id in list(self._peers):
                self.close(peer_id)
            self._selector.close()
            for sock in (self._listener, self._waker, self._wakeup):
                sock.close()

    # -- connections --------------------------------------------------------------------

    def _close_stalled(self, now: float) -> None:
        """Close the connections whose replies have not moved for :data:`STALLED_S`, those
        holding the most first, until the replies waiting are within ``max_unsent_bytes``."""
        stalled = [(peer.unsent, peer_id) for peer_id, peer in self._peers.items()
                   if peer.outbox and now - peer.sent_at >= STALLED_S]
        for unsent, peer_id in sorted(stalled, reverse=True):
            if not self._over:
                return
            self._warn(f"closed a client connection holding {unsent} bytes of replies it has "
                       f"not taken for {STALLED_S} s ({self._unsent_bytes} wait in all, at "
                       f"most {self.max_unsent_bytes})")
            self.close(peer_id)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_RECEIVE):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # no descriptors left: stop listening for a while
                self._warn(f"cannot accept a client connection: {exc}")
                self._selector.unregister(self._listener)
                self._accepting_again = time.monotonic() + EXPIRE_EVERY_S
                return
            if len(self._peers) >= self.limits.max_connections and not self._shed_idle():
                self._warn(f"closed a new client connection: {len(self._peers)} clients "
                           f"are connected (at most {self.limits.max_connections}), none "
                           f"idle for {self.limits.connection_idle_s} s")
                sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer_id = next(self._ids).to_bytes(_ID_BYTES, "big")
            peer = self._peers[peer_id] = _Peer(sock)
            self._selector.register(sock, selectors.EVENT_READ, peer_id)
            self._write(peer_id, peer, [_GREETING + _READY])

    def _shed_idle(self) -> bool:
        """Close the connection that has sent nothing for the longest, if for at least
        ``connection_idle_s``, skipping those with anything waiting (a message or handshake
        unfinished, a reply untaken, input not read yet), so that a neighbour's idle or leaked
        connections do not shut everyone else out (a review's 1024 idle DEALERs did); True
        when one was closed."""
        now = time.monotonic()
        for peer_id, peer in sorted(self._peers.items(), key=lambda item: item[1].last_active):
            if now - peer.last_active < self.limits.connection_idle_s:
                return False
            if peer.started is not None or peer.owed_since is not None or peer.outbox \
                    or has_input(peer.sock):
                continue
            self._warn(f"closed a client connection idle for {now - peer.last_active:.0f} s: "
                       f"{len(self._peers)} clients are connected (at most "
                       f"{self.limits.max_connections}) and another came")
            self.close(peer_id)
            return True
        return False

    def _read(self, peer_id: bytes, peer: _Peer) -> list[Inbound]:
        try:
            data = peer.sock.recv(RECEIVE_BYTES if peer.remaining > SHORT_RECEIVE_BYTES
                                  else SHORT_RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:  # reset by the client
            data = b""
        if not data:  # the client went
            self.close(peer_id)
            return []
        peer.last_active = time.monotonic()
        try:
            if peer.remaining > len(data):  # inside a long frame: most reads of an upload
                self._fill(peer, memoryview(data), 0)
                if peer.refusal is not None and not peer.answered:
                    return [self._answer(peer_id, peer)]
                return []
            return list(self._feed(peer_id, peer, data))
        except _FramingError as exc:
            self._warn(f"closed a client connection that broke ZMTP: {exc}")
        except Exception:  # a bug here must not end the controller: that client only
            logger.exception("closed a client connection whose input could not be read")
        self.close(peer_id)
        return []

    def _write(self, peer_id: bytes, peer: _Peer, parts: list[bytes | memoryview]) -> bool:
        """Send ``parts`` after what waits already; False (and the connection closed) when
        it is gone."""
        if not peer.outbox:
            try:
                sent = _send(peer.sock, parts)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close(peer_id)
                return False
            parts = _after(parts, sent)
            if not parts:
                return True
            peer.sent_at = time.monotonic()
        if len(parts) > 1 and sum(len(part) for part in parts) < _JOIN_BELOW:
            parts = [b"".join(parts)]
        peer.outbox.extend(parts)
        self._count_unsent(peer_id, peer, _cost(parts))
        return True

    def _flush(self, peer_id: bytes, peer: _Peer) -> bool:
        """Send what waits for room; False (and the connection closed) when it is gone."""
        batch = list(itertools.islice(peer.outbox, _MAX_PARTS_PER_SEND))
        try:
            sent = _send(peer.sock, batch)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.close(peer_id)
            return False
        peer.sent_at = time.monotonic()
        rest = _after(batch, sent)
        for _ in batch:
            peer.outbox.popleft()
        peer.outbox.extendleft(reversed(rest))
        self._count_unsent(peer_id, peer, _cost(rest) - _cost(batch))
        return True

    def _count_unsent(self, peer_id: bytes, peer: _Peer, change: int) -> None:
        """Count ``change`` bytes more waiting for ``peer``, and watch its socket (and, when
        the total crosses ``max_unsent_bytes``, every socket with replies waiting) for what
        it should: room to send while replies wait; requests unless replies wait and the
        total is over the bound."""
        was_over = self._over
        peer.unsent += change
        self._unsent_bytes += change
        if self._over != was_over:
            for other_id, other in self._peers.items():
                if other.outbox:
                    self._watch(other_id, other)
        if peer_id in self._peers:
            self._watch(peer_id, peer)

    def _watch(self, peer_id: bytes, peer: _Peer) -> None:
        events = ((0 if self._over and peer.outbox else selectors.EVENT_READ)
                  | (selectors.EVENT_WRITE if peer.outbox else 0))
        if events != self._selector.get_key(peer.sock).events:
            self._selector.modify(peer.sock, events, peer_id)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(message)

    # -- reading ------------------------------------------------------------------------

    def _feed(self, peer_id: bytes, peer: _Peer, data: bytes) -> Iterator[Inbound]:
        """Each message ``data`` completes or that is refused."""
        if peer.pending:
            data, peer.pending = peer.pending + data, b""
        elif peer.ready:
            peer.owed_since = None
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if peer.remaining:
                pos = self._fill(peer, view, pos)
                if peer.refusal is not None and not peer.answered:
                    yield self._answer(peer_id, peer)
                if not peer.remaining:
                    yield from self._frame_done(peer_id, peer)
                continue
            if not peer.greeted:
                if not self._greeting(data[pos:pos + GREETING_BYTES]):
                    self._owe(peer, data[pos:], progressed=pos > 0)
                    return
                pos += GREETING_BYTES
                peer.greeted = True
                continue
            header = _header(data, pos)
            if header is None:
                self._owe(peer, data[pos:], progressed=pos > 0)
                return
            flags, size, start = header
            if flags & _COMMAND or not peer.ready:
                if not flags & _COMMAND or size > MAX_COMMAND_BYTES:
                    raise _FramingError("a handshake that is not a READY command"
                                        if not peer.ready else f"a command of {size} bytes")
                if peer.started is not None:
                    raise _FramingError("a command inside a message")
                if start + size > end:
                    self._owe(peer, data[pos:], progressed=pos > 0)
                    return
                self._command(peer_id, peer, data[start:start + size])
                pos = start + size
                continue
            if peer.req and not peer.delimited:
                if not flags & _MORE or len(peer.envelope) + start + size - pos \
                        > _MAX_ENVELOPE_BYTES:
                    raise _FramingError("a REQ message that does not start with an envelope "
                                        f"(frames of at most {_MAX_ENVELOPE_BYTES} bytes in "
                                        "all, up to an empty delimiter frame)")
                if start + size > end:
                    self._owe(peer, data[pos:], progressed=pos > 0)
                    return
                peer.envelope += data[pos:start + size]
                peer.delimited = not size
                if peer.started is None:
                    peer.started = time.monotonic()
                pos = start + size
                continue
            pos = start
            self._frame_start(peer, size, bool(flags & _MORE))
            if peer.refusal is not None and not peer.answered:
                yield self._answer(peer_id, peer)
            if not peer.remaining:
                yield from self._frame_done(peer_id, peer)
        if peer.ready:
            peer.owed_since = None

    @staticmethod
    def _owe(peer: _Peer, rest: bytes, *, progressed: bool) -> None:
        """Keep the start of a greeting, command or frame header until the rest comes; it is
        owed from now if the connection had nothing owed or, past its handshake, finished
        something owed before (``progressed``)."""
        peer.pending = rest
        if peer.owed_since is None or (peer.ready and progressed):
            peer.owed_since = time.monotonic()

    def _greeting(self, greeting: bytes) -> bool:
        """True when ``greeting`` is a whole, acceptable greeting; False when more is needed."""
        if greeting[:1] not in (b"", b"\xff") or (len(greeting) >= 10 and greeting[9] != 0x7F):
            raise _FramingError("not a ZMTP greeting")
        if len(greeting) >= 11 and greeting[10] < 3:
            raise _FramingError(f"ZMTP {greeting[10]}.x (this controller speaks 3.x)")
        if len(greeting) < GREETING_BYTES:
            return False
        if greeting[12:32].rstrip(b"\0") != b"NULL":
            raise _FramingError("a security mechanism other than NULL")
        return True

    def _command(self, peer_id: bytes, peer: _Peer, body: bytes) -> None:
        name_size = body[0] if body else 0
        name = body[1:1 + name_size]
        if name == b"READY":
            if peer.ready:
                raise _FramingError("a second READY")
            socket_type = _properties(body[1 + name_size:]).get(b"Socket-Type")
            if socket_type not in _PEER_TYPES:
                raise _FramingError(f"a {socket_type!r} socket (a ROUTER talks to "
                                    "REQ, DEALER and ROUTER sockets)")
            peer.ready = True
            peer.req = socket_type == b"REQ"
        elif not peer.ready:
            raise _FramingError(f"a {name!r} command before READY")
        elif name == b"ERROR":
            raise _FramingError(f"the client sent ERROR {body[1 + name_size:]!r}")
        elif name == b"PING":  # a client with a heartbeat (ZMTP 3.1): PONG with its context
            context = body[1 + name_size + 2:1 + name_size + 2 + _MAX_PING_CONTEXT]
            if not self._write(peer_id, peer, [_command(b"PONG", context)]):
                raise _FramingError("heartbeats while taking none of the replies")

    def _frame_start(self, peer: _Peer, size: int, more: bool) -> None:
        limits = self.limits
        index = len(peer.frames)
        peer.more, peer.remaining = more, size
        if peer.started is None:
            peer.started = time.monotonic()
        if peer.refusal is None:
            if index >= limits.max_frames:
                self._refuse(peer, f"message exceeds {limits.max_frames} frames")
            elif index == 0 and size > limits.max_header_bytes:
                self._refuse(peer, f"header frame of {size} bytes exceeds "
                                   f"{limits.max_header_bytes} bytes")
            elif size > limits.max_frame_bytes:
                self._refuse(peer, f"frame {index} of {size} bytes exceeds "
                                   f"{limits.max_frame_bytes} bytes")
            elif peer.message_bytes + size > limits.max_message_bytes:
                self._refuse(peer, f"message exceeds {limits.max_message_bytes} bytes (its "
                                   f"frames 0..{index} hold {peer.message_bytes + size})")
        peer.body = bytearray() if peer.refusal is None else None

    def _fill(self, peer: _Peer, view: memoryview, pos: int) -> int:
        take = min(peer.remaining, len(view) - pos)
        peer.remaining -= take
        if peer.body is not None:
            counted = self._counted(peer)
            more = max(0, peer.message_bytes + take - self.limits.max_header_bytes) - counted
            if more and self._inbound_bytes + more > self.limits.max_inbound_bytes:
                self._refuse(peer, f"the controller holds {self._inbound_bytes} bytes of "
                                   f"unfinished messages (at most "
                                   f"{self.limits.max_inbound_bytes}); send again later",
                             busy=True)
            else:
                peer.body += view[pos:pos + take]
                peer.message_bytes += take
                self._inbound_bytes += more
        return pos + take

    def _counted(self, peer: _Peer) -> int:
        """The bytes of ``peer``'s unfinished message counted against the inbound budget: all
        but its first ``max_header_bytes``."""
        return max(0, peer.message_bytes - self.limits.max_header_bytes)

    def _refuse(self, peer: _Peer, why: str, *, busy: bool = False) -> None:
        """Refuse the message being read: keep its first frame if whole (for its request
        id), give back the bytes of the others, drop the rest as it arrives."""
        peer.refusal, peer.busy, peer.body = why, busy, None
        self._inbound_bytes -= self._counted(peer)
        del peer.frames[1:]
        peer.message_bytes = len(peer.frames[0]) if peer.frames else 0

    def _answer(self, peer_id: bytes, peer: _Peer) -> Inbound:
        peer.answered = True
        return Inbound(peer_id + peer.envelope, peer.frames[:1], peer.refusal, peer.busy)

    def _frame_done(self, peer_id: bytes, peer: _Peer) -> Iterator[Inbound]:
        if peer.body is not None:  # read-only, as libzmq's frames are
            peer.frames.append(memoryview(peer.body).toreadonly())
            peer.body = None
        if peer.more:
            return
        address = peer_id + peer.envelope
        peer.envelope, peer.delimited = b"", False
        frames, refusal, busy = peer.frames, peer.refusal, peer.busy
        self._inbound_bytes -= self._counted(peer)
        peer.frames, peer.message_bytes, peer.refusal = [], 0, None
        peer.busy = peer.answered = False
        peer.started = None
        if refusal is None:
            yield Inbound(address, frames, None, busy)


def connection_of(address: bytes) -> bytes:
    """The connection an :attr:`Inbound.peer` came on (the same for every message of a
    ``REQ``, whose address also carries each message's envelope)."""
    return address[:_ID_BYTES]


def _header(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(flags, size, body start) of the frame header at ``pos``, None when incomplete."""
    if pos + 2 > len(data):
        return None
    flags = data[pos]
    if flags & ~(_MORE | _LONG | _COMMAND):
        raise _FramingError(f"reserved frame flags {flags:#04x}")
    if not flags & _LONG:
        return flags, data[pos + 1], pos + 2
    if pos + 9 > len(data):
        return None
    return flags, int.from_bytes(data[pos + 1:pos + 9], "big"), pos + 9


def _properties(data: bytes) -> dict[bytes, bytes]:
    """A command's metadata: name-size (1 byte), name, value-size (4 bytes), value, ...;
    ``_FramingError`` when a size runs past the end or a name comes twice."""
    out = {}
    pos = 0
    while pos < len(data):
        name_size = data[pos]
        name = data[pos + 1:pos + 1 + name_size]
        pos += 1 + name_size
        if pos + 4 > len(data):
            raise _FramingError("a truncated READY property")
        value_size = int.from_bytes(data[pos:pos + 4], "big")
        if pos + 4 + value_size > len(data):
            raise _FramingError(f"READY property {name!r} runs past the command")
        if name in out:
            raise _FramingError(f"READY property {name!r} given twice")
        out[name] = data[pos + 4:pos + 4 + value_size]
        pos += 4 + value_size
    return out


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host`` (an IPv4 address or name; ``*`` for every interface)
    and ``port`` (0: a free one); ``OSError`` naming the address when it cannot be bound.
    (Not ``socket.create_server``: its bind error drops which lookup failed.)"""
    host = "0.0.0.0" if host == "*" else host
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(  # IPv4, as libzmq by default
            host, port, socket.AF_INET, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        if sock is not None:
            sock.close()
        why = exc.strerror or str(exc)
        if isinstance(exc, socket.gaierror):
            why += " (the controller listens on an IPv4 address or host name)"
        raise OSError(exc.errno, f"cannot listen on tcp://{host}:{port}: {why}") from exc
    return sock


def _send(sock: socket.socket, parts: list[bytes | memoryview]) -> int:
    """Bytes of ``parts`` the socket took (non-blocking), in one system call."""
    if len(parts) == 1:
        return sock.send(parts[0])
    if sum(len(part) for part in parts) < _JOIN_BELOW:
        return sock.send(b"".join(parts))
    return sock.sendmsg(parts[:_MAX_PARTS_PER_SEND])


def _cost(parts: list[bytes | memoryview]) -> int:
    """What ``parts`` keep in memory while they wait (bytes): a view the whole buffer it
    views (a reply's tail keeps all of it), and :data:`PART_COST` each."""
    return sum(_held(part) for part in parts) + PART_COST * len(parts)


def _held(part: bytes | memoryview) -> int:
    if isinstance(part, memoryview) and part.obj is not None:
        try:
            return memoryview(part.obj).nbytes
        except (TypeError, ValueError):  # an exporter memoryview cannot read again
            pass
    return len(part)


def _after(parts: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What of ``parts`` is left once their first ``sent`` bytes went."""
    for index, part in enumerate(parts):
        if sent < len(part):
            head = memoryview(part)[sent:] if sent else part
            return [head, *parts[index + 1:]]
        sent -= len(part)
    return []
