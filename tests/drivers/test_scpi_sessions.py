"""The SCPI drivers' sessions against instruments that misbehave: late, silent, garbled or
trickling replies, lines nobody asked for, connections closed or refused, instruments
restarted. ``_ScriptedInstrument`` is a raw TCP peer whose every byte the test chooses; the
simulated instruments (``ScpiServer``) stand in where a well-behaved one is needed."""

from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections.abc import Mapping

import pytest
import pyvisa
import pyvisa.errors

from labqpu.drivers.scpi import CurrentSource, ScpiInstrument, SignalGenerator, query_each
from labqpu.errors import InstrumentError, InstrumentTimeoutError, ProtocolError
from labqpu.firmware_sim.scpi_server import ScpiServer

TIMEOUT_S = 0.3
#: Slack allowed on top of TIMEOUT_S for a timed-out call to return.
SLACK_S = 0.5
#: The drivers read a pyvisa-py socket's replies themselves where ``select.poll`` exists.
NEEDS_POLL = pytest.mark.skipif(not hasattr(select, "poll"),
                                reason="pyvisa's own read without select.poll")


def _opened(resource: str) -> list[str]:
    return [
        r.resource_name
        for r in pyvisa.ResourceManager("@py").list_opened_resources()
        if r.resource_name == resource
    ]


class _ScriptedInstrument:
    """A raw TCP peer answering known commands (optionally late) and ignoring the rest; it
    closes the connection on a command of ``hang_up_on`` and, after a command of ``then``,
    sends a line nobody asked for (``{command: (after_s, line)}``). A command of ``parts``
    is answered in pieces, ``(after_s, data)`` each, and ``None`` for data closes the
    connection's sending side. After answering a command of ``deaf_after`` it reads nothing
    more from that connection."""

    def __init__(self, replies: Mapping[str, str], delays_s: Mapping[str, float] | None = None,
                 hang_up_on: frozenset[str] = frozenset(),
                 then: Mapping[str, tuple[float, str]] | None = None,
                 parts: Mapping[str, list[tuple[float, bytes | None]]] | None = None,
                 deaf_after: frozenset[str] = frozenset()):
        self._replies = dict(replies)
        self._delays_s = dict(delays_s or {})
        self._hang_up_on = hang_up_on
        self._then = dict(then or {})
        self._parts = dict(parts or {})
        self._deaf_after = deaf_after
        #: ("in" | "out", command, time.monotonic()) per command received and reply sent.
        self.log: list[tuple[str, str, float]] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.resource = f"TCPIP0::127.0.0.1::{self._listener.getsockname()[1]}::SOCKET"
        self._threads = [threading.Thread(target=self._accept_loop)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join(2.0)
        for thread in self._threads[1:]:
            thread.join(2.0)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,))
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    command = line.decode().strip()
                    self.log.append(("in", command, time.monotonic()))
                    if command in self._hang_up_on:
                        return
                    for after_s, data in self._parts.get(command, []):
                        if self._stop.wait(after_s):
                            return
                        if data is None:
                            conn.shutdown(socket.SHUT_WR)
                        else:
                            conn.sendall(data)
                    if command not in self._replies:
                        continue
                    if self._stop.wait(self._delays_s.get(command, 0.0)):
                        return
                    self.log.append(("out", command, time.monotonic()))
                    after_s, extra = self._then.get(command, (0.0, ""))
                    try:
                        conn.sendall(self._replies[command].encode("latin-1") + b"\n")
                        if extra and not self._stop.wait(after_s):
                            conn.sendall(extra.encode("latin-1") + b"\n")
                    except OSError:
                        return
                    if command in self._deaf_after:
                        self._stop.wait()
                        return


def test_query_timeout_then_no_stale_reply() -> None:
    # SLOW? is answered late: after the driver gave up, before its next query is answered.
    peer = _ScriptedInstrument(
        {"*IDN?": "scripted", "SLOW?": "slow", "FAST?": "fast"},
        delays_s={"SLOW?": 1.5 * TIMEOUT_S},
    )
    try:
        with SignalGenerator(peer.resource, timeout_s=TIMEOUT_S) as sg:
            start = time.monotonic()
            with pytest.raises(InstrumentTimeoutError) as info:
                sg.query("SLOW?")
            assert time.monotonic() - start < TIMEOUT_S + SLACK_S
            assert info.value.command == "SLOW?"
            assert info.value.instrument == peer.resource
            assert f"no reply within {TIMEOUT_S} s" in str(info.value)
            assert sg.query("FAST?") == "fast"
            assert sg.query("FAST?") == "fast"
    finally:
        peer.close()


def test_query_each_sends_every_query_before_reading_a_reply() -> None:
    """The second instrument has its query while the first is still working on its reply."""
    busy = _ScriptedInstrument({"*IDN?": "busy", "WORK?": "done"},
                               delays_s={"WORK?": 0.5 * TIMEOUT_S})
    other = _ScriptedInstrument({"*IDN?": "other", "FREQ?": "1.0"})
    try:
        with SignalGenerator(busy.resource, timeout_s=TIMEOUT_S) as slow, \
                SignalGenerator(other.resource, timeout_s=TIMEOUT_S) as fast:
            assert query_each([(slow, "WORK?"), (fast, "FREQ?")]) == ["done", "1.0"]
        work_answered = next(t for kind, c, t in busy.log if (kind, c) == ("out", "WORK?"))
        freq_asked = next(t for kind, c, t in other.log if (kind, c) == ("in", "FREQ?"))
        assert freq_asked < work_answered
    finally:
        busy.close()
        other.close()


@pytest.mark.parametrize("slow_first", [True, False])
def test_query_each_timeout_names_the_instrument_and_leaves_no_stale_reply(
        slow_first: bool) -> None:
    """A late instrument fails the exchange with an error naming it and its command; every
    session that could still receive a reply of this exchange is closed, so the next queries
    of both instruments get their own replies."""
    peer = _ScriptedInstrument({"*IDN?": "scripted", "SLOW?": "slow", "FAST?": "fast"},
                               delays_s={"SLOW?": 1.5 * TIMEOUT_S})
    try:
        with ScpiServer("signal_generator", name="lo-test") as sg_server, \
                SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S) as sg, \
                SignalGenerator(peer.resource, timeout_s=TIMEOUT_S) as late:
            queries = [(late, "SLOW?"), (sg, "FREQ?")]
            with pytest.raises(InstrumentTimeoutError) as info:
                query_each(queries if slow_first else queries[::-1])
            assert info.value.instrument == peer.resource
            assert info.value.command == "SLOW?"
            assert _opened(peer.resource) == []
            assert late.query("FAST?") == "fast"
            sg_server.state.set("frequency_hz", 4.5e9)
            assert sg.query("POW?") == repr(sg_server.state.get("power_dbm"))
            assert sg.query("FREQ?") == "4500000000.0"
    finally:
        peer.close()


def test_query_each_refuses_before_sending() -> None:
    peer = _ScriptedInstrument({"*IDN?": "scripted", "A?": "a"})
    try:
        with ScpiServer("signal_generator", name="lo-test") as sg_server, \
                SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S) as sg, \
                SignalGenerator(peer.resource, timeout_s=TIMEOUT_S) as other:
            with pytest.raises(ValueError, match="one query per instrument"):
                query_each([(other, "A?"), (sg, "FREQ?"), (other, "A?")])
            with pytest.raises(ProtocolError, match="one line"):
                query_each([(other, "A?"), (sg, "FREQ?\nPOW?")])
            assert [c for kind, c, _ in peer.log if kind == "in"] == ["*IDN?"]
            assert other.query("A?") == "a"
    finally:
        peer.close()


@pytest.mark.parametrize("via", ["query", "query_each"])
def test_a_command_outside_ascii_is_refused_before_sending(via) -> None:
    """A character outside ASCII (SCPI's character set): a protocol error naming the command,
    nothing sent (pyvisa's encoder raised a bare UnicodeEncodeError)."""
    peer = _ScriptedInstrument({"*IDN?": "scripted", "A?": "a"})
    try:
        with SignalGenerator(peer.resource, timeout_s=TIMEOUT_S) as sg:
            with pytest.raises(ProtocolError, match="must be ASCII") as info:
                sg.query("A? 5 µs") if via == "query" else query_each([(sg, "A? 5 µs")])
            assert info.value.command == "A? 5 µs"
            assert [c for kind, c, _ in peer.log if kind == "in"] == ["*IDN?"]
            assert sg.query("A?") == "a"
    finally:
        peer.close()


@NEEDS_POLL
@pytest.mark.parametrize("via", ["query", "query_each"])
def test_an_instrument_that_stopped_reading_fails_the_write_within_timeout_s(via) -> None:
    """An instrument that stopped reading its input (hung firmware): a message larger than
    the connection's buffers fails within ``timeout_s``, saying so (pyvisa-py's write waited
    for the socket without a bound: the call never returned); the session is closed."""
    peer = _ScriptedInstrument({"*IDN?": "scripted"}, deaf_after=frozenset({"*IDN?"}))
    outcome: list[BaseException | None] = []
    big = "SOUR:LIST:FREQ " + ",".join(["5e9"] * 4_000_000)  # 16 MB: more than any buffer

    def call() -> None:
        try:
            sg.query(big) if via == "query" else query_each([(sg, big)])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        sg = SignalGenerator(peer.resource, timeout_s=1.0)
        start = time.monotonic()
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(1.0 + 5 * SLACK_S)
        assert not worker.is_alive(), "the write never returned"
        assert time.monotonic() - start < 1.0 + SLACK_S
        assert isinstance(outcome[0], InstrumentTimeoutError)
        assert "did not take the message within 1.0 s" in str(outcome[0])
        assert _opened(peer.resource) == []
        sg.close()
    finally:
        peer.close()


def test_silent_instrument_times_out_on_open_and_leaves_no_session() -> None:
    peer = _ScriptedInstrument({})
    try:
        start = time.monotonic()
        with pytest.raises(InstrumentTimeoutError) as info:
            SignalGenerator(peer.resource, timeout_s=TIMEOUT_S)
        assert time.monotonic() - start < TIMEOUT_S + SLACK_S
        assert info.value.command == "*IDN?"
        assert _opened(peer.resource) == []
    finally:
        peer.close()


def test_garbage_reply_is_a_protocol_error_and_leaves_no_session() -> None:
    peer = _ScriptedInstrument({"*IDN?": "\xff\xfe"})
    try:
        with pytest.raises(ProtocolError) as info:
            SignalGenerator(peer.resource, timeout_s=TIMEOUT_S)
        assert info.value.command == "*IDN?"
        assert _opened(peer.resource) == []
    finally:
        peer.close()


def test_refused_connection_leaves_no_session() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    resource = f"TCPIP0::127.0.0.1::{port}::SOCKET"
    with pytest.raises(InstrumentError, match=re.escape(resource)):
        CurrentSource(resource, timeout_s=TIMEOUT_S)
    assert _opened(resource) == []


def test_visa_disconnect_is_an_error_then_the_session_reopens() -> None:
    """The instrument goes away (power cycle, cable): each call fails within its bound with
    the instrument named; once it is back on its address, the next call opens a new session
    and is answered by the new instrument, never from the old connection."""
    first = ScpiServer("signal_generator", name="lo-cycled")
    first.start()
    port = first.port
    with SignalGenerator(first.resource, timeout_s=TIMEOUT_S) as sg:
        sg.frequency_hz = 5.5e9
        first.stop()
        for _ in range(2):
            start = time.monotonic()
            with pytest.raises(InstrumentError, match=re.escape(first.resource)):
                sg.frequency_hz  # noqa: B018 - a query
            assert time.monotonic() - start < TIMEOUT_S + SLACK_S
        with ScpiServer("signal_generator", name="lo-cycled", port=port) as second:
            assert sg.frequency_hz == 1e9  # the power-cycled instrument's factory setting
            assert _opened(second.resource) == [second.resource]
            sg.frequency_hz = 5.5e9
            assert second.state.snapshot()["frequency_hz"] == 5.5e9


@NEEDS_POLL
def test_an_instrument_restarted_between_calls_is_reconnected_at_once() -> None:
    """An instrument that closed the connection while idle (its restart, its own idle
    timeout) cost the next call its whole timeout (pyvisa-py reads an ended stream as "no
    data yet"), then an error; now the driver sees the closed connection before sending and
    opens a new session: the call is answered, by the restarted instrument."""
    first = ScpiServer("signal_generator", name="lo-restarted")
    first.start()
    port = first.port
    with SignalGenerator(first.resource, timeout_s=5.0) as sg:
        sg.frequency_hz = 5.5e9
        first.stop()
        with ScpiServer("signal_generator", name="lo-restarted", port=port) as second:
            start = time.monotonic()
            assert sg.frequency_hz == 1e9  # the restarted instrument's factory setting
            assert query_each([(sg, sg.STATE_QUERY)]) == ["1000000000.0;-30.0;0"]
            sg.frequency_hz = 6e9
            assert time.monotonic() - start < 1.0
            assert second.state.snapshot()["frequency_hz"] == 6e9
        start = time.monotonic()  # stopped for good: an error at once, naming it
        with pytest.raises(InstrumentError, match=re.escape(first.resource)):
            sg.frequency_hz  # noqa: B018 - a query
        assert time.monotonic() - start < 1.0


@NEEDS_POLL
@pytest.mark.parametrize("via", ["query", "query_each"])
def test_an_instrument_closing_the_connection_instead_of_replying_fails_at_once(via) -> None:
    """The connection closed by the instrument after a command, with no reply: the call
    fails within milliseconds (not its 5 s timeout) saying so, and the next call is
    answered on a new session."""
    peer = _ScriptedInstrument({"*IDN?": "scripted", "FAST?": "fast"},
                               hang_up_on=frozenset({"BYE?"}))
    try:
        with SignalGenerator(peer.resource, timeout_s=5.0) as sg:
            start = time.monotonic()
            with pytest.raises(InstrumentError, match="closed the connection instead of "
                                                      "replying") as info:
                if via == "query":
                    sg.query("BYE?")
                else:
                    query_each([(sg, "BYE?")])
            assert time.monotonic() - start < 1.0
            assert info.value.command == "BYE?"
            assert info.value.instrument == peer.resource
            assert sg.query("FAST?") == "fast"
    finally:
        peer.close()


@NEEDS_POLL
@pytest.mark.parametrize("via", ["query", "query_each"])
@pytest.mark.parametrize("rest", [b"23\n", None])
def test_a_reply_is_bounded_by_timeout_s_as_a_whole(via, rest) -> None:
    """A reply whose first byte comes just inside the bound and its rest after it (or never)
    times out at the bound: the driver's read started its timeout anew at the first byte
    (1.8 s for a 1 s bound)."""
    timeout_s = 1.0
    tail = [] if rest is None else [(0.9 * timeout_s, rest)]
    peer = _ScriptedInstrument({"*IDN?": "scripted", "FAST?": "fast"},
                               parts={"SLOW?": [(0.9 * timeout_s, b"1"), *tail]})
    try:
        with SignalGenerator(peer.resource, timeout_s=timeout_s) as sg:
            start = time.monotonic()
            with pytest.raises(InstrumentTimeoutError, match=re.escape("no reply within 1.0 s")):
                sg.query("SLOW?") if via == "query" else query_each([(sg, "SLOW?")])
            assert time.monotonic() - start < timeout_s + 0.3
            assert sg.query("FAST?") == "fast"
    finally:
        peer.close()


@NEEDS_POLL
def test_part_of_a_reply_then_a_closed_connection_fails_at_once_without_a_busy_core() -> None:
    """Part of a reply, then the instrument closes the connection: the call fails at once
    saying so. (pyvisa-py's read polled the ended stream until its 5 s timeout, a core busy,
    then reported a timeout.)"""
    peer = _ScriptedInstrument({"*IDN?": "scripted"}, parts={"HALF?": [(0.0, b"12.5"),
                                                                        (0.05, None)]})
    try:
        with SignalGenerator(peer.resource, timeout_s=5.0) as sg:
            start, cpu = time.monotonic(), time.process_time()
            with pytest.raises(InstrumentError, match="closed the connection instead of"):
                sg.query("HALF?")
            assert time.monotonic() - start < 1.0
            assert time.process_time() - cpu < 0.5
    finally:
        peer.close()


@NEEDS_POLL
def test_a_reply_without_a_line_end_is_refused_at_its_cap() -> None:
    """An instrument streaming bytes without a line end: a protocol error once the reply
    passes the drivers' cap (1 MiB), not memory taken until the timeout."""
    peer = _ScriptedInstrument({"*IDN?": "scripted", "FAST?": "fast"},
                               parts={"FLOOD?": [(0.0, b"x" * (1 << 20)), (0.0, b"x" * 4096)]})
    try:
        with SignalGenerator(peer.resource, timeout_s=5.0) as sg:
            with pytest.raises(ProtocolError, match="reply longer than 1048576 bytes"):
                sg.query("FLOOD?")
            assert sg.query("FAST?") == "fast"
    finally:
        peer.close()


def test_a_timeout_of_weeks_is_taken() -> None:
    """``timeout_s`` beyond what one ``poll`` waits (~24.8 days in ms) is waited in turns,
    not an OverflowError."""
    with ScpiServer("signal_generator", name="lo-test") as sg_server, \
            SignalGenerator(sg_server.resource, timeout_s=3e6) as sg:
        assert sg.frequency_hz == sg_server.state.snapshot()["frequency_hz"]


def test_a_prologix_adapter_session_keeps_pyvisas_read() -> None:
    """A Prologix GPIB-Ethernet adapter (pyvisa-py ``PRLGX-TCPIP...::INTFC``, a subclass of
    its SOCKET session) sends a reply only when its read asks the adapter for it: the driver
    leaves those reads to pyvisa (reading the socket itself, it waited for a reply that was
    never asked for)."""
    adapter = _ScriptedInstrument({"++read eoi": "FAKE,DEV,1,1.0"})
    try:
        resource = adapter.resource.replace("TCPIP0::", "PRLGX-TCPIP0::").replace("::SOCKET",
                                                                                    "::INTFC")
        with ScpiInstrument(resource, timeout_s=2.0) as instrument:
            assert instrument.identity == "FAKE,DEV,1,1.0"
    finally:
        adapter.close()


@NEEDS_POLL
@pytest.mark.parametrize("extra_after_s", [0.0, 0.1])
def test_a_line_nobody_asked_for_never_answers_a_later_query(extra_after_s) -> None:
    """An instrument that sends a second line for one query (at once, or a little later):
    that line was read as the answer to the next query. Now the session holding it is
    closed before the next query, which a new session asks."""
    peer = _ScriptedInstrument({"*IDN?": "scripted", "TWICE?": "first", "FAST?": "fast"},
                               then={"TWICE?": (extra_after_s, "second")})
    try:
        with SignalGenerator(peer.resource, timeout_s=TIMEOUT_S) as sg:
            assert sg.query("TWICE?") == "first"
            time.sleep(extra_after_s + 0.1)
            assert sg.query("FAST?") == "fast"
            assert query_each([(sg, "FAST?")]) == ["fast"]
    finally:
        peer.close()


#: A process with more than 1023 descriptors open opens an instrument (``argv[1]``).
_MANY_FILES_OPEN = """
import os, resource, sys
from labqpu.drivers.scpi import SignalGenerator
from labqpu.errors import InstrumentError
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
try:
    with SignalGenerator(sys.argv[1], timeout_s=2.0) as sg:
        print(sg.query("*IDN?"))
except InstrumentError as exc:
    print(exc)
"""


def test_an_instrument_opened_beyond_1023_descriptors_says_why_it_cannot_be(tmp_path) -> None:
    """A review's case: a process with more than ~1020 files open could not reach its
    instruments: pyvisa-py waits on a TCPIP SOCKET connection with select(), which takes no
    descriptor beyond 1023, and the error said only "filedescriptor out of range in
    select()". It now says why, and what to do."""
    import resource
    import subprocess
    import sys

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200:
        pytest.skip("this machine's hard limit on open files is below 1200")
    with ScpiServer("signal_generator", name="lo-fds") as server:
        out = subprocess.run([sys.executable, "-c", _MANY_FILES_OPEN, server.resource],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "out of range in select()" in out.stdout, out.stdout
    assert "more than 1023 files or sockets open" in out.stdout
    assert "close files, or open the provider before the many others" in out.stdout
