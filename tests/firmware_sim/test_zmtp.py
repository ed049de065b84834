"""The controller's own ZMTP reader: whole messages from real ZeroMQ DEALER clients, bounded
while they arrive, and connections that break the framing closed alone."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
import zmq

from labqpu.firmware_sim import zmtp
from labqpu.firmware_sim.server_limits import MESSAGE_LIMITS
from labqpu.firmware_sim.zmtp import (
    GREETING_BYTES,
    MAX_UNSENT_BYTES,
    STALLED_S,
    MessageLimits,
    ZmtpServer,
    listen,
)

BOUND_S = 5.0
MIB = 1 << 20
LIMITS = MessageLimits(max_frames=8, max_header_bytes=1 << 16, max_frame_bytes=MIB,
                       max_message_bytes=2 * MIB, max_inbound_bytes=3 * MIB, max_message_s=1.0,
                       max_connections=8)
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32)


def command(body: bytes) -> bytes:
    if len(body) < 256:
        return bytes((0x04, len(body))) + body
    return b"\x06" + struct.pack(">Q", len(body)) + body


def ready(socket_type: bytes) -> bytes:
    return command(b"\x05READY\x0bSocket-Type" + struct.pack(">I", len(socket_type))
                   + socket_type)


READY = ready(b"DEALER")


class EchoServer:
    """A ZmtpServer on a thread of its own that sends every message back; a refused one is
    answered ``[b"refused", reason, b"busy" or b"over"]``."""

    def __init__(self, limits: MessageLimits, max_unsent_bytes: int = MAX_UNSENT_BYTES
                 ) -> None:
        self.wire = ZmtpServer(listen("127.0.0.1", 0), limits,
                               max_unsent_bytes=max_unsent_bytes)
        self.port = self.wire.port
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.errors: list[BaseException] = []
        self.peers: list[bytes] = []  # the connections messages came from, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                messages = self.wire.receive(0.02)
                self.wire.expire()  # as the controller's loop: on every turn
                for message in messages:
                    self.peers.append(message.peer)
                    if message.refusal is None:
                        self.wire.send(message.peer, message.frames)
                    else:
                        self.wire.send(message.peer, [b"refused", message.refusal.encode(),
                                                      b"busy" if message.busy else b"over"])
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.wire.shutdown()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(BOUND_S)
        assert not self._thread.is_alive()
        assert not self.errors


@pytest.fixture
def server() -> Iterator[EchoServer]:
    echo = EchoServer(LIMITS)
    yield echo
    echo.close()


class Clients:
    """DEALER sockets of one test, all closed at its end."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket] = []

    def dealer(self, endpoint: str) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        self.sockets.append(sock)
        return sock


@pytest.fixture
def clients() -> Iterator[Clients]:
    made = Clients()
    yield made
    for sock in made.sockets:
        sock.close(linger=0)
    made.context.term()


def ask(sock: zmq.Socket, frames: list) -> list[bytes]:
    sock.send_multipart(frames, copy=False)
    assert sock.poll(int(BOUND_S * 1000), zmq.POLLIN), "no reply"
    return sock.recv_multipart()


def test_messages_arrive_whole_and_replies_reach_their_client(server, clients) -> None:
    """Frames of every header form (short, long, empty, beyond one 8 KiB read, beyond the
    size sent inline) come back byte for byte, to the client that sent them."""
    a, b = clients.dealer(server.endpoint), clients.dealer(server.endpoint)
    sizes = [0, 1, 255, 256, 8193, 70_000, MIB - 1000]
    frames = [bytes((i * 7 + n) % 251 for n in range(size)) for i, size in enumerate(sizes)]
    assert ask(a, frames) == frames
    assert ask(b, [b"b"]) == [b"b"]
    a.send_multipart([b"a1"])
    b.send_multipart([b"b1"])
    a.send_multipart([b"a2", b"x" * 300])
    for sock, expected in ((a, [[b"a1"], [b"a2", b"x" * 300]]), (b, [[b"b1"]])):
        for message in expected:
            assert sock.poll(int(BOUND_S * 1000), zmq.POLLIN)
            assert sock.recv_multipart() == message


def test_a_message_over_a_limit_is_refused_and_the_connection_serves_the_next(
        server, clients) -> None:
    sock = clients.dealer(server.endpoint)
    for frames, reason in [
            ([b"head", *([b"x"] * 8)], b"message exceeds 8 frames"),
            ([b"head", bytes(MIB + 1)], b"frame 1 of 1048577 bytes exceeds 1048576 bytes"),
            ([b"head", bytes(MIB), bytes(MIB)], b"message exceeds 2097152 bytes")]:
        refused, why, kind = ask(sock, frames)
        assert (refused, kind) == (b"refused", b"over")
        assert why.startswith(reason), why
        assert ask(sock, [b"next", bytes(1000)]) == [b"next", bytes(1000)]


def test_a_refused_message_is_not_held_while_it_arrives(clients) -> None:
    """50 MiB sent as one message under a 2 MiB cap: what the reader allocates stays near the
    cap (libzmq alone buffers a whole message before the application sees any frame)."""
    server = EchoServer(dataclasses.replace(LIMITS, max_frames=1000))
    block = bytes(256 << 10)
    tracemalloc.start()
    try:
        sock = clients.dealer(server.endpoint)
        refused, why, _ = ask(sock, [b"head", *([block] * 200)])
        peak = tracemalloc.get_traced_memory()[1]
        assert (refused, why[:30]) == (b"refused", b"message exceeds 2097152 bytes ")
        assert ask(sock, [b"ok"]) == [b"ok"]
    finally:
        tracemalloc.stop()
        server.close()
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB held for a message refused at 2 MiB"


def test_other_clients_unfinished_messages_make_a_message_wait(server, clients) -> None:
    """The bytes of all unfinished messages are bounded too: a message that would go beyond
    is refused as busy, and goes through once the others have arrived. (A libzmq client sends
    a message only once it is whole, so the slow sender here writes ZMTP by hand.)"""
    b = clients.dealer(server.endpoint)
    half = bytes(MIB)
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as slow:
        part = bytes(768 << 10)  # 1.5 MiB held unfinished; b's 2 MiB would make 3.5 > 3
        long_more = b"\x03" + struct.pack(">Q", len(part))
        slow.sendall(GREETING + READY + b"\x01\x04head" + long_more + part + long_more + part)
        deadline = time.monotonic() + BOUND_S
        while len(reply := ask(b, [b"h", half, bytes(MIB - 16)])) == 3 and reply[0] == b"h":
            assert time.monotonic() < deadline, "b's message was never refused"
        refused, why, kind = reply
        assert (refused, kind) == (b"refused", b"busy"), why
        assert b"send again later" in why
        small = [b"h", bytes(60_000)]  # under the first 64 KiB a message may hold uncounted
        assert ask(b, small) == small
        slow.sendall(b"\x00\x03end")
        received = b""
        while not received.endswith(b"\x00\x03end"):
            try:
                chunk = slow.recv(1 << 16)
            except TimeoutError:
                raise AssertionError(f"slow's echo stopped after {len(received)} bytes: "
                                     f"{received[-40:]!r}") from None
            assert chunk, f"slow closed after {len(received)} bytes: {received[-40:]!r}"
            received += chunk
    assert [len(f) for f in ask(b, [b"h", half, bytes(MIB - 16)])] == [1, MIB, MIB - 16]


def closed_by_server(data: bytes, endpoint_port: int) -> bool:
    """Send ``data`` on a raw TCP connection; True when the server then closes it."""
    with socket.create_connection(("127.0.0.1", endpoint_port), timeout=BOUND_S) as raw:
        greeting = b""
        while len(greeting) < GREETING_BYTES:
            chunk = raw.recv(GREETING_BYTES - len(greeting))
            assert chunk, "closed before greeting"
            greeting += chunk
        assert greeting[:1] == b"\xff" and greeting[9:11] == b"\x7f\x03"
        try:
            raw.sendall(data)
            while chunk := raw.recv(4096):
                pass
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):  # closed with some of data unread
            pass
        return True


@pytest.mark.parametrize("data", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(GREETING[:10] + b"\x02\x00" + bytes(52), id="zmtp2"),
    pytest.param(GREETING[:12] + b"PLAIN".ljust(20, b"\0") + bytes(32), id="plain-mechanism"),
    pytest.param(GREETING + b"\x01\x03abc", id="message-before-ready"),
    pytest.param(GREETING + ready(b"PUB"), id="pub-socket"),
    pytest.param(GREETING + READY + b"\x08\x01x", id="reserved-flags"),
    pytest.param(GREETING + READY + b"\x06" + struct.pack(">Q", 1 << 40), id="huge-command"),
    pytest.param(GREETING + READY + READY, id="second-ready"),
    pytest.param(GREETING + command(b"\x05READY\x0bSocket-Type" + struct.pack(">I", 1000)
                                    + b"DEALER"), id="ready-property-past-its-end"),
    pytest.param(GREETING + READY + b"\x01\x01a" + command(b"\x04PING\x00\x0a"),
                 id="command-inside-a-message"),
    pytest.param(GREETING + ready(b"REQ") + b"\x00\x02hi", id="req-without-envelope"),
    pytest.param(GREETING + ready(b"REQ") + b"\x00\x00\x00\x02hi",
                 id="req-delimiter-without-more"),
    pytest.param(GREETING + ready(b"REQ") + b"\x01\x04abcd\x00\x02hi",
                 id="req-envelope-without-delimiter"),
    pytest.param(GREETING + ready(b"REQ") + b"\x01\xff" + bytes(255) + b"\x01\x00\x00\x01x",
                 id="req-envelope-too-long"),
])
def test_a_connection_that_breaks_zmtp_is_closed_and_others_are_served(
        server, clients, data) -> None:
    assert closed_by_server(data, server.port)
    assert ask(clients.dealer(server.endpoint), [b"still"]) == [b"still"]
    assert server.wire.connections == 1


def test_a_req_socket_is_answered_through_its_envelope(server, clients) -> None:
    """A REQ socket's envelope (its empty delimiter frame, and with REQ_CORRELATE a request id
    before it) is taken off, so the server sees the frames a DEALER would send, and put back
    before the reply, which the REQ therefore takes; DEALERs on the same server are
    unaffected."""
    plain, correlated = (clients.context.socket(zmq.REQ) for _ in range(2))
    correlated.setsockopt(zmq.REQ_CORRELATE, 1)  # its envelope: a request id, the delimiter
    correlated.setsockopt(zmq.REQ_RELAXED, 1)
    dealer = clients.dealer(server.endpoint)
    for req in (plain, correlated):
        req.setsockopt(zmq.LINGER, 0)
        req.connect(server.endpoint)
        clients.sockets.append(req)
        for frames in ([b"one"], [b"head", bytes(70_000), b""], [b""]):
            assert ask(req, frames) == frames
            assert ask(dealer, [b"d", *frames]) == [b"d", *frames]
        refused, why, kind = ask(req, [b"head", *([b"x"] * 8)])
        assert (refused, kind) == (b"refused", b"over") and why.startswith(b"message exceeds 8")
        assert ask(req, [b"after"]) == [b"after"]


def test_each_reply_to_a_req_carries_the_envelope_of_its_own_request(server) -> None:
    """Pipelined messages of a REQ peer (libzmq's REQ_RELAXED with REQ_CORRELATE sends a new
    request before the last reply came) get their replies each behind its own envelope, so the
    socket can tell a stale reply from the one it waits for."""
    requests = [b"\x01\x04id-" + bytes([n]) + b"\x01\x00\x00\x03m-" + bytes([n])
                for n in range(3)]
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as raw:
        raw.sendall(GREETING + ready(b"REQ") + b"".join(requests))
        received = read_until(raw, requests[-1])
    assert received[GREETING_BYTES:].endswith(b"".join(requests))


def test_a_raw_client_speaking_zmtp_is_served(server) -> None:
    """The reader follows RFC 23, not only libzmq: a hand-written client's message (greeting
    and READY in pieces, one long frame header) is answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as raw:
        for piece in (GREETING[:5], GREETING[5:40], GREETING[40:], READY[:9], READY[9:],
                      b"\x01\x02hi", b"\x02" + struct.pack(">Q", 3), b"you"):
            raw.sendall(piece)
        received = b""
        while not received.endswith(b"\x00\x03you"):
            chunk = raw.recv(4096)
            assert chunk
            received += chunk
    assert received[GREETING_BYTES:].endswith(b"\x01\x02hi\x00\x03you")


def test_connections_leave_nothing_behind(server, clients) -> None:
    """Clients that come and go, well-behaved or closed for breaking ZMTP, leave no state in
    the reader (a neighbour connecting in a loop must not grow the controller)."""
    for index in range(30):
        sock = clients.dealer(server.endpoint)
        assert ask(sock, [b"%d" % index]) == [b"%d" % index]
        sock.close(linger=0)  # libzmq closes it in its own thread, a moment later
        assert closed_by_server(b"GET / HTTP/1.1\r\n\r\n", server.port)
        deadline = time.monotonic() + BOUND_S  # (the limit here is 8 connections)
        while server.wire.connections:
            assert time.monotonic() < deadline, f"{server.wire.connections} connections kept"
            time.sleep(0.01)


def seconds_until_closed(raw: socket.socket) -> float:
    """Seconds until the server closes ``raw``, what comes meanwhile read and dropped."""
    start = time.monotonic()
    try:
        while raw.recv(1 << 16):
            pass
    except TimeoutError:
        raise AssertionError("the connection was never closed") from None
    return time.monotonic() - start


def read_until(raw: socket.socket, ending: bytes) -> bytes:
    received = b""
    while not received.endswith(ending):
        chunk = raw.recv(1 << 16)
        assert chunk, f"closed after {received[-40:]!r}"
        received += chunk
    return received


def test_a_ping_with_a_long_context_gets_a_pong_and_the_server_lives(server) -> None:
    """A PING's context is at most 16 bytes (RFC 37); one of 300 made the PONG's one-byte
    size overflow, and the exception ended the controller's serving thread."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as raw:
        raw.sendall(GREETING + READY + command(b"\x04PING\x00\x0a" + b"C" * 300)
                    + b"\x00\x02ok")
        received = read_until(raw, b"\x00\x02ok")
    assert command(b"\x04PONG" + b"C" * 16) + b"\x00\x02ok" in received
    assert not server.errors


def test_a_heartbeating_client_stays_connected(server, clients) -> None:
    sock = clients.dealer(server.endpoint)
    for option, value in ((zmq.HEARTBEAT_IVL, 50), (zmq.HEARTBEAT_TIMEOUT, 150),
                          (zmq.HEARTBEAT_TTL, 300)):
        sock.setsockopt(option, value)
    sock.disconnect(server.endpoint)
    sock.connect(server.endpoint)
    assert ask(sock, [b"a"]) == [b"a"]
    time.sleep(0.6)  # a dozen PINGs: without PONGs libzmq drops the connection after 150 ms
    assert ask(sock, [b"b"]) == [b"b"]
    assert server.wire.connections == 1


def test_memory_is_taken_as_bytes_arrive_not_as_sizes_are_declared(clients) -> None:
    """Four connections declaring frames of the largest size and sending nothing took the
    simulator 1 GiB at once and made every other client "busy" (the controller's limits)."""
    server = EchoServer(MESSAGE_LIMITS)
    raws = [socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)
            for _ in range(4)]
    tracemalloc.start()
    try:
        for raw in raws:
            raw.sendall(GREETING + READY + b"\x01\x01h\x03"
                        + struct.pack(">Q", MESSAGE_LIMITS.max_frame_bytes))
        big = [b"h", bytes(MIB)]
        assert ask(clients.dealer(server.endpoint), big) == big
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        for raw in raws:
            raw.close()
        server.close()
    assert peak < 16 * MIB, f"{peak / MIB:.1f} MiB"


def test_a_message_left_unfinished_closes_its_connection_and_frees_its_bytes(server,
                                                                             clients) -> None:
    b = clients.dealer(server.endpoint)
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as slow:
        slow.sendall(GREETING + READY + b"\x01\x01h\x03" + struct.pack(">Q", MIB)
                     + bytes(MIB - 1))  # one byte short, and then nothing
        assert seconds_until_closed(slow) < LIMITS.max_message_s + 1.0
    assert [len(f) for f in ask(b, [b"h", bytes(MIB), bytes(MIB - 10)])] == [1, MIB, MIB - 10]


def test_a_refusal_is_answered_before_the_message_ends(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as raw:
        raw.sendall(GREETING + READY + b"\x01\x04head\x03" + struct.pack(">Q", 2**64 - 1))
        received = read_until(raw, b"\x00\x04over")
    assert b"frame 1 of 18446744073709551615 bytes exceeds" in received


def test_a_client_that_reads_no_replies_is_closed_for_real() -> None:
    """Its replies pile up unsent beyond ``max_unsent_bytes``, and once they have not moved
    for ``STALLED_S`` its connection is closed (on a ``STREAM`` socket that close found no
    room and was lost, so the connection stayed open and answered nothing). Here 1 MiB may
    wait: four replies."""
    server = EchoServer(dataclasses.replace(LIMITS, max_message_s=30.0), max_unsent_bytes=MIB)
    raw = socket.socket()
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        raw.settimeout(BOUND_S)
        raw.connect(("127.0.0.1", server.port))
        request = b"\x01\x01h\x02" + struct.pack(">Q", 256 << 10) + bytes(256 << 10)

        def send() -> None:  # 10 MiB of replies asked for, none read for a while
            with contextlib.suppress(OSError):  # the server may close before all is sent
                raw.sendall(GREETING + READY + request * 40)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(STALLED_S + 0.5)
        total = 0
        try:
            while chunk := raw.recv(1 << 16):  # ends once the close has gone out
                total += len(chunk)
        except ConnectionResetError:  # closed with some of our requests unread there
            pass
        except TimeoutError:
            raise AssertionError(f"no end of the connection after {total} bytes") from None
        assert total < 40 * ((256 << 10) + 12)  # it was closed: not every reply came
        assert server.wire.connections == 0
        sender.join(BOUND_S)
    finally:
        raw.close()
        server.close()


def test_connections_beyond_the_limit_are_closed_and_the_others_served(server, clients) -> None:
    socks = [clients.dealer(server.endpoint) for _ in range(LIMITS.max_connections)]
    for index, sock in enumerate(socks):
        assert ask(sock, [b"%d" % index]) == [b"%d" % index]
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as extra:
        assert extra.recv(GREETING_BYTES) == b"", "a client beyond the limit was served"
    assert all(ask(sock, [b"still"]) == [b"still"] for sock in socks)
    assert server.wire.connections == LIMITS.max_connections


def _echoing(raw: socket.socket, body: bytes) -> None:
    """Send one single-frame message on a raw ZMTP connection and read its echo."""
    raw.sendall(bytes((0, len(body))) + body)
    received = b""
    while not received.endswith(body):
        chunk = raw.recv(4096)
        assert chunk, "closed"
        received += chunk


def _open(raw: socket.socket) -> bool:
    """Whether the server still keeps ``raw`` (no end of stream within 0.2 s)."""
    raw.settimeout(0.2)
    try:
        return raw.recv(1 << 16) != b""
    except TimeoutError:
        return True
    finally:
        raw.settimeout(BOUND_S)


def test_a_client_idle_for_connection_idle_s_gives_its_place_to_a_new_one() -> None:
    """A review's case: a neighbour's 1024 idle DEALERs shut every other client out of the
    controller for as long as they stayed. With ``max_connections`` connected, a new client
    now takes the place of the one that has sent nothing for the longest, if for
    ``connection_idle_s``; one that talked since keeps its place, and so does one whose
    message is unfinished, however long ago it began."""
    limits = dataclasses.replace(LIMITS, max_message_s=30.0, connection_idle_s=1.0)
    server = EchoServer(limits)
    raws = [socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S)
            for _ in range(limits.max_connections)]
    try:
        for index, raw in enumerate(raws):
            raw.sendall(GREETING + READY)
            _echoing(raw, b"%d" % index)
        raws[0].sendall(b"\x00\x64" + bytes(10))  # 10 bytes of a 100-byte frame
        time.sleep(0.6)
        _echoing(raws[1], b"awake")
        with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as early:
            assert early.recv(GREETING_BYTES) == b"", "served before anyone was idle for 1 s"
        time.sleep(0.6)
        with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as new:
            new.sendall(GREETING + READY)
            _echoing(new, b"in")
            assert [_open(raw) for raw in raws[:4]] == [True, True, False, True]
            assert server.wire.connections == limits.max_connections
    finally:
        for raw in raws:
            raw.close()
        server.close()


def test_replies_sent_from_other_threads_arrive_whole_and_in_order(server, clients,
                                                                   monkeypatch) -> None:
    """The controller's worker sends a held run's reply itself while the serving thread
    answers other requests of the same client: messages must neither interleave nor change
    order. Here three threads send at once, round after round, and every send first gives the
    other threads time and then takes only part of what it is given (a socket whose buffer
    fills, at the worst moment): without the lock, messages interleave (four runs of four
    failed without it; a test that relied on timing alone failed one run in six)."""
    real_send = zmtp._send

    def slow_partial_send(sock: socket.socket, parts: list) -> int:
        time.sleep(0.002)
        data = b"".join(bytes(part) for part in parts)
        return real_send(sock, [data[:max(1, len(data) // 2)]])

    monkeypatch.setattr(zmtp, "_send", slow_partial_send)
    sock = clients.dealer(server.endpoint)
    assert ask(sock, [b"hello"]) == [b"hello"]
    peer = server.peers[-1]
    body, rounds, kinds = bytes(3000), 5, [b"a", b"b", b"c"]
    start = threading.Barrier(len(kinds) + 1, timeout=BOUND_S)

    def from_thread(kind: bytes) -> None:
        for index in range(rounds):
            start.wait()
            assert server.wire.send(peer, [kind, index.to_bytes(4, "big"), body])

    senders = [threading.Thread(target=from_thread, args=(kind,), daemon=True)
               for kind in kinds]
    for sender in senders:
        sender.start()
    got: dict[bytes, list[int]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        start.wait()  # the replies of the round before have all arrived: nothing waits
        for _ in kinds:
            assert sock.poll(int(BOUND_S * 1000), zmq.POLLIN), f"{got} so far"
            kind, index, rest = sock.recv_multipart()
            assert rest == body
            got[kind].append(int.from_bytes(index, "big"))
    for sender in senders:
        sender.join(BOUND_S)
    assert got == {kind: list(range(rounds)) for kind in got}


def test_replies_left_untaken_close_the_connection(server) -> None:
    """A client that asks for replies and takes none is closed ``max_message_s`` after its
    replies stopped moving (well under ``max_unsent_bytes`` here), freeing what waits."""
    request = b"\x01\x01h\x02" + struct.pack(">Q", 768 << 10) + bytes(768 << 10)
    raw = socket.socket()
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        raw.settimeout(BOUND_S)
        raw.connect(("127.0.0.1", server.port))
        raw.sendall(GREETING + READY + request * 24)  # 18 MiB of replies asked for
        time.sleep(LIMITS.max_message_s + 0.5)
        total = 0
        try:
            while chunk := raw.recv(1 << 16):
                total += len(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"still open after {total} bytes") from None
        assert total < 24 * len(request)
        assert server.wire.connections == 0
    finally:
        raw.close()


_OUT_OF_DESCRIPTORS = """
import os, resource, sys
from labqpu.firmware_sim.server_limits import MESSAGE_LIMITS
from labqpu.firmware_sim.zmtp import ZmtpServer, listen
wire = ZmtpServer(listen("127.0.0.1", 0), MESSAGE_LIMITS)
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 2, hard))
print(wire.port, flush=True)
while True:
    for message in wire.receive(0.05):
        wire.send(message.peer, message.frames)
    wire.expire()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
def test_a_controller_out_of_descriptors_neither_spins_nor_drops_waiting_clients(
        tmp_path, clients, cpu_s) -> None:
    """A listener whose client cannot be accepted stays readable: the loop would spin. Out
    of descriptors, the reader stops listening for a while; the clients wait in the
    backlog and are served once descriptors are free again."""
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _OUT_OF_DESCRIPTORS],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        endpoint = f"tcp://127.0.0.1:{int(proc.stdout.readline())}"
        first = [clients.dealer(endpoint) for _ in range(2)]
        assert [ask(sock, [b"%d" % i]) for i, sock in enumerate(first)] == [[b"0"], [b"1"]]
        waiting = [clients.dealer(endpoint) for _ in range(6)]
        for sock in waiting:
            sock.send_multipart([b"waiting"])
        time.sleep(0.3)
        before = cpu_s(proc.pid)
        time.sleep(1.0)
        assert cpu_s(proc.pid) - before < 0.3, "the reader's loop spins"
        assert not all(sock.poll(0, zmq.POLLIN) for sock in waiting), "descriptors to spare"
        for sock in first:
            sock.close(linger=0)
        for sock in waiting:
            assert sock.poll(int(BOUND_S * 1000), zmq.POLLIN), "a waiting client was dropped"
            assert sock.recv_multipart() == [b"waiting"]
            sock.close(linger=0)  # frees its descriptor for the next
    finally:
        proc.kill()
        proc.wait(BOUND_S)
        proc.stdout.close()



@pytest.mark.parametrize("sent", [
    pytest.param(b"", id="nothing"),
    pytest.param(GREETING[:20], id="half-a-greeting"),
    pytest.param(GREETING, id="greeting-without-ready"),
    pytest.param(GREETING + READY[:5], id="half-a-ready"),
    pytest.param(GREETING + READY + b"\x02\x00\x00", id="half-a-frame-header"),
    pytest.param(GREETING + ready(b"REQ") + b"\x01\x00", id="a-req-envelope-only"),
])
def test_a_handshake_or_header_left_unfinished_closes_its_connection(server, clients,
                                                                      sent) -> None:
    """Connections stalled before a message began held a connection slot and a descriptor
    for ever: a neighbour could fill ``max_connections`` without finishing a handshake."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as stalled:
        stalled.sendall(sent)
        assert seconds_until_closed(stalled) < LIMITS.max_message_s + 1.0
    assert ask(clients.dealer(server.endpoint), [b"next"]) == [b"next"]


def test_over_the_bound_a_client_not_taking_its_replies_is_closed_and_readers_are_not(
        ) -> None:
    """``max_unsent_bytes`` bounds the replies waiting for all connections together (each
    connection could hold it alone, 1024 of them). Over it, a connection whose replies have
    not moved for ``STALLED_S`` is closed, the one holding the most first, as few as it
    takes; one that reads is not (closing the largest closed healthy clients fetching large
    results at once). Here, under a 24 MiB bound, one client asks 20 MiB and reads as it
    comes, another asks 40 MiB and reads nothing, a third asks 1 MiB and reads it at the
    end."""
    server = EchoServer(dataclasses.replace(LIMITS, max_message_s=30.0),
                        max_unsent_bytes=24 * MIB)
    request = b"\x01\x01h\x02" + struct.pack(">Q", 256 << 10) + bytes(256 << 10)
    small, reader, idle = raws = [socket.socket() for _ in range(3)]
    got: list[int | None] = []
    try:
        for raw in raws:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
            raw.settimeout(BOUND_S)
            raw.connect(("127.0.0.1", server.port))
        small.sendall(GREETING + READY + request * 4)
        reading = threading.Thread(target=lambda: got.append(
            _replies_until_closed(reader, request, quiet_s=STALLED_S + 1.0)), daemon=True)
        reading.start()
        reader.sendall(GREETING + READY + request * 80)
        idle.settimeout(STALLED_S)
        with contextlib.suppress(OSError):  # its requests wait, then it is closed
            idle.sendall(GREETING + READY + request * 160)
        reading.join(2 * BOUND_S)
        assert got == [80]
        assert _replies_until_closed(idle, request) is None
        assert _replies_until_closed(small, request) == 4
        assert server.wire.connections == 2
    finally:
        for raw in raws:
            raw.close()
        server.close()


def test_over_the_bound_requests_wait_while_their_clients_replies_do() -> None:
    """Over ``max_unsent_bytes``, the requests of a connection with replies waiting are not
    read (as TCP pushes back on a sender): a client asking 50 MiB of replies and reading
    none made the reader queue all of them before anything could close it."""
    server = EchoServer(dataclasses.replace(LIMITS, max_message_s=30.0),
                        max_unsent_bytes=4 * MIB)
    request = b"\x01\x01h\x02" + struct.pack(">Q", 256 << 10) + bytes(256 << 10)
    raw = socket.socket()
    tracemalloc.start()
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        raw.settimeout(0.5)
        raw.connect(("127.0.0.1", server.port))
        with contextlib.suppress(OSError):  # TCP pushes back; the server closes it later
            raw.sendall(GREETING + READY)
            for _ in range(200):
                raw.sendall(request)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        raw.close()
        server.close()
    assert peak < 16 * MIB, f"{peak / MIB:.1f} MiB held for 50 MiB of replies asked"


def _replies_until_closed(raw: socket.socket, request: bytes, quiet_s: float = 0.5
                          ) -> int | None:
    """How many echoes of ``request`` ``raw`` receives until nothing more comes for
    ``quiet_s``, or None when the connection ends before its echoes do (the server closed
    it)."""
    received = b""
    raw.settimeout(quiet_s)
    while True:
        try:
            chunk = raw.recv(1 << 20)
        except ConnectionResetError:
            return None
        except TimeoutError:  # nothing more comes: all that was asked came, or not
            return received.count(request[:12]) if received.endswith(request) else -1
        if not chunk:
            return None
        received += chunk


def test_the_controller_listens_on_ipv4_as_libzmq_does() -> None:
    """Where ``localhost`` names ``::1`` first, listening there left the advertised endpoint
    unreachable for a DEALER (IPv6 off, libzmq's default); an IPv6 address is refused,
    naming it, as libzmq refused it."""
    sock = listen("localhost", 0)
    try:
        assert sock.family == socket.AF_INET
    finally:
        sock.close()
    with pytest.raises(OSError, match=r"cannot listen on tcp://::1:0: .*IPv4 address or host"):
        listen("::1", 0)


def test_whole_requests_split_inside_the_next_header_keep_the_connection(server) -> None:
    """A client sending a whole message every 0.3 s, each read ending inside the next frame
    header, was closed after ``max_message_s``: what it owed was timed from the first
    header it left unfinished, not from the last."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=BOUND_S) as raw:
        raw.sendall(GREETING + READY + b"\x00")
        for _ in range(7):  # 2.1 s, over the 1 s of max_message_s
            time.sleep(0.3)
            raw.sendall(b"\x02ok\x00")
        received = read_until(raw, b"\x00\x02ok" * 7)
    assert received.count(b"\x00\x02ok") == 7
