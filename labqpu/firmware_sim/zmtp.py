"""ZMTP 3 read by the simulated controller itself, so that a whole message is bounded.

libzmq bounds each frame of a message (``MAXMSGSIZE``) but buffers a multipart message in full
before the application sees any of it, whatever its number of frames: one client could make
the controller hold as much memory as it sent in one message. The controller therefore serves
on a ZeroMQ ``STREAM`` socket (libzmq keeps the TCP connections; at most ``RCVHWM`` chunks of
8 KiB wait unread per connection, then TCP pushes back) and speaks ZMTP 3.0 itself (RFC 23,
NULL security, as a ``ROUTER``), counting frames and bytes as they arrive. Clients are plain
ZeroMQ ``DEALER`` sockets; nothing changes for them.

A message is refused (:class:`Inbound` with ``refusal``) as soon as a frame header declares
more than a cap allows, or its bytes, as they arrive, would take the unfinished messages of all
connections beyond theirs; the rest of it is read and dropped, and the connection stays usable
for the next message. Memory is taken as bytes arrive, not as sizes are declared. A message
left unfinished for ``max_message_s`` has its connection closed (:meth:`ZmtpServer.expire`).
A connection that breaks the framing (not ZMTP 3, a mechanism other than NULL, an
incompatible socket type, a malformed or second ``READY``, reserved flag bits, an oversized
or ``ERROR`` command, a command inside a message) is closed; nothing a connection sends raises
out of :meth:`ZmtpServer.receive`. Used by one thread only (the controller's serving thread).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import zmq

logger = logging.getLogger(__name__)

GREETING_BYTES = 64
"""A ZMTP 3 greeting: signature (10), version (2), mechanism (20), as-server (1), filler (31)."""

MAX_COMMAND_BYTES = 4096
"""Largest command frame (``READY``, ``PING``) taken; a larger one closes the connection."""

CHUNKS_PER_RECEIVE = 64
"""Most chunks (of at most 8 KiB, libzmq's read size) one :meth:`ZmtpServer.receive` takes,
so that a large upload holds the serving loop for well under a millisecond at a time."""

EXPIRE_EVERY_S = 0.2
"""How often :meth:`ZmtpServer.expire` looks for stale messages and pending closes (s)."""

_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_MAX_PING_CONTEXT = 16  # RFC 37: a PING's context is 0..16 bytes, echoed in the PONG
_PEER_TYPES = frozenset({b"REQ", b"DEALER", b"ROUTER"})  # what a ROUTER talks to
_WARN_EVERY_S = 1.0


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
        max_connections: most clients connected at once; one beyond is closed at once.
    """

    max_frames: int
    max_header_bytes: int
    max_frame_bytes: int
    max_message_bytes: int
    max_inbound_bytes: int
    max_message_s: float
    max_connections: int


@dataclass(frozen=True)
class Inbound:
    """One message read from a client.

    Attributes:
        peer: the connection's routing id (give it to :meth:`ZmtpServer.send`).
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
    __slots__ = ("answered", "body", "busy", "frames", "greeted", "message_bytes", "more",
                 "pending", "ready", "refusal", "remaining", "started")

    def __init__(self) -> None:
        self.pending = b""  # bytes of a greeting, frame header or command not yet whole
        self.greeted = self.ready = False
        self.frames: list[memoryview] = []
        self.message_bytes = 0  # frame bytes held, counted against the inbound budget
        self.refusal: str | None = None
        self.busy = False
        self.answered = False  # the refusal was handed out
        self.body: bytearray | None = None  # the frame being read (None: being dropped)
        self.remaining = 0  # bytes of the current frame still to come
        self.more = False
        self.started: float | None = None  # when the unfinished message's first frame began


class ZmtpServer:
    """ZMTP 3 over a bound ``STREAM`` socket: whole messages in, whole messages out.

    Args:
        socket: a ZeroMQ ``STREAM`` socket, bound (connect and disconnect notifications on,
            libzmq's default).
        limits: the bounds on messages.
    """

    def __init__(self, socket: zmq.Socket, limits: MessageLimits) -> None:
        self.socket = socket
        self.limits = limits
        self._peers: dict[bytes, _Peer] = {}
        self._closing: set[bytes] = set()  # closed here; the close waits for room to be sent
        self._inbound_bytes = 0
        self._warned_at = 0.0
        self._next_expiry = 0.0

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._peers)

    def receive(self) -> list[Inbound]:
        """The messages that came whole (or were refused) since the last call, reading what
        the socket holds (at most :data:`CHUNKS_PER_RECEIVE` chunks) without blocking. New
        connections are greeted, and connections that break the framing are closed, on the
        way. Never raises for what a client sent."""
        out: list[Inbound] = []
        for _ in range(CHUNKS_PER_RECEIVE):
            try:
                peer_id, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            peer = self._peers.get(peer_id)
            if not data:  # a connection opened or closed (one closed here is not reported)
                if peer is not None:
                    self._forget(peer_id)
                elif peer_id in self._closing:  # the client went before the close could
                    self._closing.discard(peer_id)
                elif len(self._peers) >= self.limits.max_connections:
                    self._warn(f"closed a new client connection: {len(self._peers)} clients "
                               f"are connected (at most {self.limits.max_connections})")
                    self._write(peer_id, b"", gone_ok=True)
                elif self._write(peer_id, _GREETING + _READY):
                    self._peers[peer_id] = _Peer()
                continue
            if peer is None:  # data after we closed it
                continue
            try:
                if peer.remaining > len(data):  # inside a long frame: most chunks of an upload
                    self._fill(peer, memoryview(data), 0)
                    if peer.refusal is not None and not peer.answered:
                        out.append(Inbound(peer_id, *self._answer(peer)))
                    continue
                out.extend(Inbound(peer_id, *rest) for rest in self._feed(peer_id, peer, data))
            except _FramingError as exc:
                self._warn(f"closed a client connection that broke ZMTP: {exc}")
                self.close(peer_id)
            except Exception:  # a bug here must not end the controller: that client only
                logger.exception("closed a client connection whose input could not be read")
                self.close(peer_id)
        return out

    def expire(self) -> None:
        """Close the connections whose message has stayed unfinished for longer than
        ``max_message_s``, and send the closes that found no room before (at most every
        :data:`EXPIRE_EVERY_S`)."""
        now = time.monotonic()
        if now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRE_EVERY_S
        stale = [peer_id for peer_id, peer in self._peers.items()
                 if peer.started is not None
                 and now - peer.started > self.limits.max_message_s]
        for peer_id in stale:
            self._warn(f"closed a client connection whose message stayed unfinished for "
                       f"{self.limits.max_message_s} s")
            self.close(peer_id)
        for peer_id in list(self._closing):
            if self._write(peer_id, b"", gone_ok=True):
                self._closing.discard(peer_id)

    def send(self, peer_id: bytes, frames: Sequence[bytes | bytearray | memoryview | zmq.Frame]
             ) -> bool:
        """Send one message to a connection, whole or not at all; False (and the connection
        closed) when it is gone or does not take it (libzmq's send queue to it full)."""
        if peer_id not in self._peers:  # gone: a ROUTER drops such a reply too
            return False
        last = len(frames) - 1
        parts: list[bytes | memoryview] = []
        for index, frame in enumerate(frames):
            view = memoryview(frame).cast("B")
            parts += [_frame_header(_MORE if index < last else 0, len(view)), view]
        if self._write(peer_id, b"".join(parts)):
            return True
        self._warn("closed a client connection that took no more replies (gone, or not "
                   "reading them)")
        self.close(peer_id)
        return False

    def close(self, peer_id: bytes) -> None:
        """Close a connection (a no-op for one already gone); the client's DEALER connects
        again by itself."""
        if self._forget(peer_id) and not self._write(peer_id, b"", gone_ok=True):
            self._closing.add(peer_id)

    def _forget(self, peer_id: bytes) -> bool:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return False
        self._inbound_bytes -= self._counted(peer)
        return True

    def _write(self, peer_id: bytes, data: bytes, *, gone_ok: bool = False) -> bool:
        """Queue ``data`` for a connection; False when its queue is full (or, unless
        ``gone_ok``, when it is gone)."""
        try:
            self.socket.send(peer_id, zmq.SNDMORE | zmq.NOBLOCK)
            self.socket.send(data, zmq.NOBLOCK, copy=len(data) < (1 << 16))
        except zmq.Again:
            return False
        except zmq.ZMQError:  # EHOSTUNREACH: the connection is gone
            return gone_ok
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(message)

    # -- reading ------------------------------------------------------------------------

    def _feed(self, peer_id: bytes, peer: _Peer, data: bytes
              ) -> Iterator[tuple[list[memoryview], str | None, bool]]:
        """(frames, refusal, busy) of each message ``data`` completes or that is refused."""
        if peer.pending:
            data, peer.pending = peer.pending + data, b""
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if peer.remaining:
                pos = self._fill(peer, view, pos)
                if peer.refusal is not None and not peer.answered:
                    yield self._answer(peer)
                if not peer.remaining:
                    yield from self._frame_done(peer)
                continue
            if not peer.greeted:
                if not self._greeting(data[pos:pos + GREETING_BYTES]):
                    peer.pending = data[pos:]
                    return
                pos += GREETING_BYTES
                peer.greeted = True
                continue
            header = _header(data, pos)
            if header is None:
                peer.pending = data[pos:]
                return
            flags, size, start = header
            if flags & _COMMAND or not peer.ready:
                if not flags & _COMMAND or size > MAX_COMMAND_BYTES:
                    raise _FramingError("a handshake that is not a READY command"
                                        if not peer.ready else f"a command of {size} bytes")
                if peer.started is not None:
                    raise _FramingError("a command inside a message")
                if start + size > end:
                    peer.pending = data[pos:]
                    return
                self._command(peer_id, peer, data[start:start + size])
                pos = start + size
                continue
            pos = start
            self._frame_start(peer, size, bool(flags & _MORE))
            if peer.refusal is not None and not peer.answered:
                yield self._answer(peer)
            if not peer.remaining:
                yield from self._frame_done(peer)

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
        elif not peer.ready:
            raise _FramingError(f"a {name!r} command before READY")
        elif name == b"ERROR":
            raise _FramingError(f"the client sent ERROR {body[1 + name_size:]!r}")
        elif name == b"PING":  # a client with a heartbeat (ZMTP 3.1): PONG with its context
            context = body[1 + name_size + 2:1 + name_size + 2 + _MAX_PING_CONTEXT]
            self._write(peer_id, _command(b"PONG", context))

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

    def _answer(self, peer: _Peer) -> tuple[list[memoryview], str | None, bool]:
        peer.answered = True
        return peer.frames[:1], peer.refusal, peer.busy

    def _frame_done(self, peer: _Peer
                    ) -> Iterator[tuple[list[memoryview], str | None, bool]]:
        if peer.body is not None:  # read-only, as libzmq's frames are
            peer.frames.append(memoryview(peer.body).toreadonly())
            peer.body = None
        if peer.more:
            return
        frames, refusal, busy = peer.frames, peer.refusal, peer.busy
        self._inbound_bytes -= self._counted(peer)
        peer.frames, peer.message_bytes, peer.refusal = [], 0, None
        peer.busy = peer.answered = False
        peer.started = None
        if refusal is None:
            yield frames, None, busy


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
