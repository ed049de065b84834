"""ZMTP 3 read by the simulated controller itself, so that a whole message is bounded.

libzmq bounds each frame of a message (``MAXMSGSIZE``) but buffers a multipart message in full
before the application sees any of it, whatever its number of frames: one client could make
the controller hold as much memory as it sent in one message. The controller therefore serves
on a ZeroMQ ``STREAM`` socket (libzmq keeps the TCP connections; at most ``RCVHWM`` chunks of
8 KiB wait unread per connection, then TCP pushes back) and speaks ZMTP 3.0 itself (RFC 23,
NULL security, as a ``ROUTER``), counting frames and bytes as they arrive. Clients are plain
ZeroMQ ``DEALER`` sockets; nothing changes for them.

A message over a limit is refused as soon as it goes over (:class:`Inbound` with ``refusal``),
its remaining bytes read and dropped, and the connection stays usable for the next message. A
connection that breaks the framing (not ZMTP 3, a mechanism other than NULL, an incompatible
socket type, reserved flag bits, an oversized or ``ERROR`` command) is closed. Used by one
thread only (the controller's serving thread).
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

CHUNKS_PER_RECEIVE = 256
"""Most chunks (of at most 8 KiB, libzmq's read size) one :meth:`ZmtpServer.receive` takes,
so that a large upload does not hold the serving loop."""

_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
_INLINE_BYTES = 1 << 16  # frames up to this size are copied into one send; larger go on their own
_PEER_TYPES = frozenset({b"REQ", b"DEALER", b"ROUTER"})  # what a ROUTER talks to
_WARN_EVERY_S = 1.0


def _command(name: bytes, body: bytes = b"") -> bytes:
    data = bytes([len(name)]) + name + body
    return bytes([_COMMAND, len(data)]) + data


_GREETING = (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0"
             + bytes(31))
_READY = _command(b"READY", bytes([11]) + b"Socket-Type" + struct.pack(">I", 6) + b"ROUTER")


@dataclass(frozen=True)
class MessageLimits:
    """What one message and all unfinished ones together may take (bytes of frame bodies).

    Attributes:
        max_frames: most frames in one message.
        max_frame_bytes: largest frame (bytes).
        max_message_bytes: most bytes in one message, all frames together.
        max_inbound_bytes: most bytes of unfinished messages of all connections together; a
            message that would go beyond is refused as ``busy``.
    """

    max_frames: int
    max_frame_bytes: int
    max_message_bytes: int
    max_inbound_bytes: int


@dataclass(frozen=True)
class Inbound:
    """One message read from a client.

    Attributes:
        peer: the connection's routing id (give it to :meth:`ZmtpServer.send`).
        frames: the message's frames; for a refused message, its first frame if it came
            whole before the refusal (to read a request id from), else none.
        refusal: None, or why the message was refused (a sentence naming the limit).
        busy: True when the refusal is for other connections' unfinished messages (try again
            later), False when the message itself is over a limit.
    """

    peer: bytes
    frames: list[memoryview]
    refusal: str | None = None
    busy: bool = False


class _FramingError(Exception):
    """The connection broke ZMTP; it is closed."""


class _Peer:
    __slots__ = (
        "body",
        "busy",
        "filled",
        "frames",
        "greeted",
        "message_bytes",
        "more",
        "pending",
        "ready",
        "refusal",
        "remaining",
    )

    def __init__(self) -> None:
        self.pending = b""  # bytes of a greeting, frame header or command not yet whole
        self.greeted = self.ready = False
        self.frames: list[memoryview] = []
        self.message_bytes = 0  # counted against the inbound budget
        self.refusal: str | None = None
        self.busy = False
        self.body: bytearray | None = None  # a frame being filled (None: being dropped)
        self.remaining = 0  # bytes of the current frame still to come
        self.filled = 0
        self.more = False


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
        self._inbound_bytes = 0
        self._warned_at = 0.0

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._peers)

    def receive(self) -> list[Inbound]:
        """The messages that came whole since the last call, reading what the socket holds
        (at most :data:`CHUNKS_PER_RECEIVE` chunks) without blocking. New connections are
        greeted, and connections that break the framing are closed, on the way."""
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
                elif self._write(peer_id, [_GREETING + _READY]):
                    self._peers[peer_id] = _Peer()
                continue
            if peer is None:  # data after we closed it
                continue
            if peer.remaining > len(data):  # inside a long frame: most chunks of an upload
                self._fill(peer, memoryview(data), 0)
                continue
            try:
                out.extend(Inbound(peer_id, *rest) for rest in self._feed(peer_id, peer, data))
            except _FramingError as exc:
                self._warn(f"closed a client connection that broke ZMTP: {exc}")
                self.close(peer_id)
        return out

    def send(self, peer_id: bytes, frames: Sequence[bytes | bytearray | memoryview | zmq.Frame]
             ) -> bool:
        """Send one message to a connection; False (the connection closed) when it is gone or
        reads too slowly to take it now (libzmq's send queue full)."""
        if peer_id not in self._peers:  # gone: a ROUTER drops such a reply too
            return False
        chunks: list[bytes | memoryview] = []
        head = bytearray()
        last = len(frames) - 1
        for index, frame in enumerate(frames):
            view = memoryview(frame).cast("B")
            flags = _MORE if index < last else 0
            if len(view) < 256:
                head += bytes((flags, len(view)))
            else:
                head += struct.pack(">BQ", flags | _LONG, len(view))
            if len(view) <= _INLINE_BYTES:
                head += view
            else:
                chunks += [bytes(head), view]
                head = bytearray()
        if head:
            chunks.append(bytes(head))
        if self._write(peer_id, chunks):
            return True
        self._warn("closed a client connection that took no more replies (gone, or not "
                   "reading them)")
        self.close(peer_id)
        return False

    def close(self, peer_id: bytes) -> None:
        """Close a connection (a no-op for one already gone)."""
        if self._forget(peer_id):
            self._write(peer_id, [b""])

    def _forget(self, peer_id: bytes) -> bool:
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return False
        self._inbound_bytes -= peer.message_bytes
        return True

    def _write(self, peer_id: bytes, chunks: list[bytes | memoryview]) -> bool:
        try:
            for chunk in chunks:
                self.socket.send(peer_id, zmq.SNDMORE | zmq.NOBLOCK)
                self.socket.send(chunk, zmq.NOBLOCK, copy=len(chunk) <= _INLINE_BYTES)
        except zmq.ZMQError:  # EHOSTUNREACH: gone; EAGAIN: not reading its replies
            return False
        return True

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(message)

    # -- reading ------------------------------------------------------------------------

    def _feed(self, peer_id: bytes, peer: _Peer, data: bytes
              ) -> Iterator[tuple[list[memoryview], str | None, bool]]:
        """(frames, refusal, busy) of each message ``data`` completes."""
        if peer.pending:
            data, peer.pending = peer.pending + data, b""
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if peer.remaining:
                pos = self._fill(peer, view, pos)
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
                if start + size > end:
                    peer.pending = data[pos:]
                    return
                self._command(peer_id, peer, data[start:start + size])
                pos = start + size
                continue
            pos = start
            self._frame_start(peer, size, bool(flags & _MORE))
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
        if not peer.ready:
            if name != b"READY":
                raise _FramingError(f"a {name!r} command before READY")
            socket_type = _properties(body[1 + name_size:]).get(b"Socket-Type")
            if socket_type not in _PEER_TYPES:
                raise _FramingError(f"a {socket_type!r} socket (a ROUTER talks to "
                                    "REQ, DEALER and ROUTER sockets)")
            peer.ready = True
        elif name == b"ERROR":
            raise _FramingError(f"the client sent ERROR {body[1 + name_size:]!r}")
        elif name == b"PING":  # a client with a heartbeat: PONG with its context (ZMTP 3.1)
            self._write(peer_id, [_command(b"PONG", body[1 + name_size + 2:])])

    def _frame_start(self, peer: _Peer, size: int, more: bool) -> None:
        limits = self.limits
        peer.more = more
        peer.remaining, peer.filled = size, 0
        if peer.refusal is None:
            count = len(peer.frames) + 1
            if count > limits.max_frames:
                peer.refusal = f"message exceeds {limits.max_frames} frames"
            elif size > limits.max_frame_bytes:
                peer.refusal = (f"frame {count - 1} of {size} bytes exceeds "
                                f"{limits.max_frame_bytes} bytes")
            elif peer.message_bytes + size > limits.max_message_bytes:
                peer.refusal = (f"message exceeds {limits.max_message_bytes} bytes (its frames "
                                f"0..{count - 1} hold {peer.message_bytes + size})")
            elif self._inbound_bytes + size > limits.max_inbound_bytes:
                peer.refusal = (f"the controller is receiving {self._inbound_bytes} bytes "
                                f"of other messages (at most {limits.max_inbound_bytes}); "
                                "send again later")
                peer.busy = True
        if peer.refusal is not None and len(peer.frames) > 1:  # keep the header only
            del peer.frames[1:]
            kept = len(peer.frames[0])
            self._inbound_bytes -= peer.message_bytes - kept
            peer.message_bytes = kept
        if peer.refusal is None:
            peer.message_bytes += size
            self._inbound_bytes += size
            peer.body = bytearray(size)
        else:
            peer.body = None

    def _fill(self, peer: _Peer, view: memoryview, pos: int) -> int:
        take = min(peer.remaining, len(view) - pos)
        if peer.body is not None:
            peer.body[peer.filled:peer.filled + take] = view[pos:pos + take]
        peer.filled += take
        peer.remaining -= take
        return pos + take

    def _frame_done(self, peer: _Peer
                    ) -> Iterator[tuple[list[memoryview], str | None, bool]]:
        if peer.body is not None:  # read-only, as libzmq's frames are
            peer.frames.append(memoryview(peer.body).toreadonly())
            peer.body = None
        if peer.more:
            return
        frames, refusal, busy = peer.frames, peer.refusal, peer.busy
        self._inbound_bytes -= peer.message_bytes
        peer.frames, peer.message_bytes, peer.refusal, peer.busy = [], 0, None, False
        yield (frames[:1] if refusal else frames), refusal, busy


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
    """A command's metadata: name-size (1 byte), name, value-size (4 bytes), value, ..."""
    out = {}
    pos = 0
    while pos < len(data):
        name_size = data[pos]
        name = data[pos + 1:pos + 1 + name_size]
        pos += 1 + name_size
        if pos + 4 > len(data):
            raise _FramingError("a truncated READY property")
        value_size = int.from_bytes(data[pos:pos + 4], "big")
        out[name] = data[pos + 4:pos + 4 + value_size]
        pos += 4 + value_size
    return out
