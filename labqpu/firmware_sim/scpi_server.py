"""Simulated SCPI instruments on real TCP sockets.

    ScpiServer              TCP server speaking line-based SCPI (raw socket, like port 5025)

Each server changes its instrument's settings (:mod:`labqpu.firmware_sim.instrument_state`);
the physics model reads those (``snapshot()``), never the socket. Each instrument
model is a command table: SCPI header patterns written as in instrument manuals
(``[SOURce]:FREQuency[:CW]`` — lower-case letters may be omitted, bracketed nodes are
optional, ``#`` takes a channel suffix) mapped to small handlers. Each ``;``-separated command
of a line is resolved from the root of the command tree. A refused command is pushed onto the
instrument's error queue (read with ``SYST:ERR?``) and the rest of its line is discarded;
nothing a client sends can stop the server or close another connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import re
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Literal, Self

from labqpu.errors import InstrumentLimitError
from labqpu.firmware_sim.instrument_state import CurrentSourceState, SignalGeneratorState
from labqpu.firmware_sim.scpi_loop import (
    IDLE_S,
    MAX_CONNECTIONS,
    Connection,
    ScpiLoop,
    Throttled,
    has_input,
    reset_on_close,
)

logger = logging.getLogger(__name__)

_MAX_LINE_BYTES = 64 * 1024
_MAX_PENDING_REPLY_BYTES = 1024 * 1024
_ERROR_QUEUE_LENGTH = 10
_FIRMWARE_VERSION = "1.0"
_NO_ERROR = '0,"No error"'


class _ScpiError(Exception):
    """A command error to push onto the instrument's error queue."""

    def __init__(self, code: int, message: str, detail: str = "") -> None:
        self.code = code
        self.message = message
        self.detail = detail
        super().__init__(f"{code},{message};{detail}")

    def queue_entry(self) -> str:
        detail = self.detail if len(self.detail) <= 80 else f"{self.detail[:77]}..."
        text = f"{self.message};{detail}" if detail else self.message
        quoted = text.replace('"', '""')
        return f'{self.code},"{quoted}"'


def _undefined_header(header: str) -> _ScpiError:
    return _ScpiError(-113, "Undefined header", header)


class _ErrorQueue:
    """An instrument's SCPI error queue: bounded, oldest first, thread-safe."""

    def __init__(self, length: int = _ERROR_QUEUE_LENGTH) -> None:
        self._length = length
        self._entries: deque[str] = deque()
        self._lock = threading.Lock()

    def push(self, error: _ScpiError) -> None:
        """Append ``error``; a full queue ends with -350 Queue overflow instead."""
        with self._lock:
            if len(self._entries) >= self._length:
                self._entries[-1] = _ScpiError(-350, "Queue overflow").queue_entry()
            else:
                self._entries.append(error.queue_entry())

    def pop(self) -> str:
        """Remove and return the oldest entry, or ``0,"No error"``."""
        with self._lock:
            return self._entries.popleft() if self._entries else _NO_ERROR

    def clear(self) -> None:
        """Empty the queue (``*CLS``)."""
        with self._lock:
            self._entries.clear()


# --- parameters ----------------------------------------------------------------------------

# Possessive quantifiers: no backtracking, so matching is linear in the text's length.
_NUMBER = re.compile(r"([+-]?(?:\d++(?:\.\d*+)?|\.\d++)(?:[eE][+-]?\d++)?)\s*+([A-Za-z]*+)")
#: Longest numeric parameter accepted (characters); longer ones are a numeric data error.
_MAX_NUMBER_CHARS = 64


@dataclass(frozen=True)
class _Number:
    """A numeric parameter; ``units`` maps each allowed suffix to its power of ten."""

    units: Mapping[str, int]

    def parse(self, text: str) -> float:
        if len(text) > _MAX_NUMBER_CHARS:
            raise _ScpiError(-120, "Numeric data error", f"{len(text)} characters")
        match = _NUMBER.fullmatch(text)
        if match is None:
            raise _ScpiError(-104, "Data type error", text)
        unit = match.group(2).upper()
        if unit not in self.units:
            raise _ScpiError(-131, "Invalid suffix", text)
        try:
            value = float(Decimal(match.group(1)).scaleb(self.units[unit]))
        except ArithmeticError as exc:  # decimal.Overflow on exponents like 1e999999999
            raise _ScpiError(-222, "Data out of range", text) from exc
        if not math.isfinite(value):
            raise _ScpiError(-222, "Data out of range", text)
        return value

    @staticmethod
    def format(value: float | bool) -> str:
        return repr(float(value))


@dataclass(frozen=True)
class _Boolean:
    """An ``ON|OFF|1|0`` parameter; queries answer ``1`` or ``0``."""

    def parse(self, text: str) -> bool:
        word = text.upper()
        if word in ("ON", "1"):
            return True
        if word in ("OFF", "0"):
            return False
        raise _ScpiError(-224, "Illegal parameter value", text)

    @staticmethod
    def format(value: float | bool) -> str:
        return "1" if value else "0"


_QUANTITIES: dict[str, _Number | _Boolean] = {
    "frequency_hz": _Number({"": 0, "HZ": 0, "KHZ": 3, "MHZ": 6, "GHZ": 9}),
    "power_dbm": _Number({"": 0, "DBM": 0}),
    "current_a": _Number({"": 0, "A": 0, "MA": -3, "UA": -6, "NA": -9}),
    "output_on": _Boolean(),
}


# --- command tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    """One parsed command handed to a handler: the instrument's parts and the arguments."""

    state: SignalGeneratorState | CurrentSourceState
    errors: _ErrorQueue
    identity: str
    channel: int
    argument: str


_Handler = Callable[[_Request], "str | None"]

_PATTERN_NODE = re.compile(r"(\[)?:?(\*?[A-Za-z]+)(#)?\]?")
_HEADER_TOKEN = re.compile(r"(\*?[A-Za-z]+)(\d*)")
#: A header suffix (channel number) longer than this is out of range without being read.
_MAX_SUFFIX_DIGITS = 6


@dataclass(frozen=True)
class _Node:
    short: str
    long: str
    optional: bool
    numbered: bool

    def match(self, token: str) -> tuple[bool, int | None]:
        """Return (matched, channel suffix) for one header token."""
        parsed = _HEADER_TOKEN.fullmatch(token)
        if parsed is None or parsed.group(1).upper() not in (self.short, self.long):
            return False, None
        digits = parsed.group(2)
        if not digits:
            return True, None
        if len(digits) > _MAX_SUFFIX_DIGITS:  # out of range anyway; int() would refuse it
            return (True, 0) if self.numbered else (False, None)
        return (True, int(digits)) if self.numbered else (False, None)


def _compile(pattern: str) -> tuple[_Node, ...]:
    return tuple(
        _Node(
            short="".join(c for c in m.group(2) if not c.islower()),
            long=m.group(2).upper(),
            optional=m.group(1) is not None,
            numbered=m.group(3) is not None,
        )
        for m in _PATTERN_NODE.finditer(pattern)
    )


def _match(nodes: tuple[_Node, ...], tokens: list[str]) -> tuple[bool, int | None]:
    """Match header tokens against pattern nodes (optional nodes may be skipped)."""
    if not nodes:
        return not tokens, None
    node, rest = nodes[0], nodes[1:]
    if tokens:
        matched, suffix = node.match(tokens[0])
        if matched:
            rest_matched, rest_suffix = _match(rest, tokens[1:])
            if rest_matched:
                return True, suffix if suffix is not None else rest_suffix
    if node.optional:
        return _match(rest, tokens)
    return False, None


@dataclass(frozen=True)
class _Command:
    """One entry of an instrument's command table."""

    pattern: str
    on_set: _Handler | None = None
    on_query: _Handler | None = None
    takes_argument: bool = True
    nodes: tuple[_Node, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", _compile(self.pattern))


def _setting(pattern: str, quantity: str) -> _Command:
    """A command that sets and queries one state quantity of the addressed channel."""
    kind = _QUANTITIES[quantity]

    def on_set(request: _Request) -> None:
        value = kind.parse(request.argument)
        try:
            request.state.set(quantity, value, request.channel)
        except InstrumentLimitError as exc:
            raise _ScpiError(-222, "Data out of range", request.argument) from exc

    def on_query(request: _Request) -> str:
        return kind.format(request.state.get(quantity, request.channel))

    return _Command(pattern, on_set=on_set, on_query=on_query)


def _reset(request: _Request) -> None:
    request.state.reset()


def _clear_status(request: _Request) -> None:
    request.errors.clear()


def _next_error(request: _Request) -> str:
    return request.errors.pop()


def _identify(request: _Request) -> str:
    return request.identity


def _operation_complete(request: _Request) -> str:
    return "1"


def _no_operation(request: _Request) -> None:
    return None


def _set_function_mode(request: _Request) -> None:
    if request.argument.upper() not in ("CURR", "CURRENT"):
        raise _ScpiError(-224, "Illegal parameter value", f"{request.argument} (only CURRent)")


def _function_mode(request: _Request) -> str:
    return "CURR"


_COMMON_COMMANDS = (
    _Command("*IDN", on_query=_identify),
    _Command("*RST", on_set=_reset, takes_argument=False),
    _Command("*CLS", on_set=_clear_status, takes_argument=False),
    _Command("*OPC", on_set=_no_operation, on_query=_operation_complete, takes_argument=False),
    _Command("SYSTem:ERRor[:NEXT]", on_query=_next_error),
)


@dataclass(frozen=True)
class _Model:
    """An instrument model: its name in ``*IDN?``, its state and its command table."""

    model: str
    make_state: Callable[..., SignalGeneratorState | CurrentSourceState]
    commands: tuple[_Command, ...]


_MODELS: dict[str, _Model] = {
    "signal_generator": _Model(
        model="SGS100A",
        make_state=lambda channels, **kwargs: SignalGeneratorState(**kwargs),
        commands=(
            *_COMMON_COMMANDS,
            _setting("[SOURce]:FREQuency[:CW]", "frequency_hz"),
            _setting("[SOURce]:POWer[:LEVel][:IMMediate][:AMPLitude]", "power_dbm"),
            _setting("OUTPut[:STATe]", "output_on"),
        ),
    ),
    "current_source": _Model(
        model="B2900",
        make_state=lambda channels, **kwargs: CurrentSourceState(channels=channels, **kwargs),
        commands=(
            *_COMMON_COMMANDS,
            _Command("[SOURce#]:FUNCtion:MODE", on_set=_set_function_mode, on_query=_function_mode),
            _setting("[SOURce#]:CURRent[:LEVel][:IMMediate][:AMPLitude]", "current_a"),
            _setting("OUTPut#[:STATe]", "output_on"),
        ),
    ),
}

#: Headers remembered by :meth:`ScpiServer._lookup`, and queries by
#: :meth:`ScpiServer._execute_command` (each table is emptied when full).
_KNOWN_HEADERS = 256
_HEADER = re.compile(r":?(\*?[A-Za-z]+\d*(?::[A-Za-z]+\d*)*)(\?)?")
_WHITESPACE = re.compile(r"\s+")


# --- server -----------------------------------------------------------------------------------


class ScpiServer:
    """A simulated SCPI instrument on a TCP socket (``\\n``-terminated lines, raw socket).

    Args:
        model: ``"signal_generator"`` (SGS100A subset) or ``"current_source"`` (B2900 style).
        name: instance name, reported as the serial number in ``*IDN?``.
        host: address to listen on.
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        channels: number of output channels (current source only).
        max_connections: most clients connected at once; a client beyond it is accepted and
            its connection reset at once (with a throttled warning), as an instrument's LAN
            interface refuses sockets beyond its own limit, unless a client has sent nothing
            for ``idle_s``: the longest idle one is then reset and the new one served (a
            neighbour's leaked sessions do not shut the rack out; labqpu's driver opens a new
            session when it finds its idle one closed).
        idle_s: seconds without a line after which a client may lose its place (s).
        **state: initial settings and limits passed to :class:`SignalGeneratorState` or
            :class:`CurrentSourceState`.

    One thread serves every connection through a selector (``loop``: a :class:`ScpiLoop`
    shared with other instruments; None: a loop of its own). :meth:`stop` closes the
    listening socket and all connections.
    """

    def __init__(
        self,
        model: Literal["signal_generator", "current_source"],
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        channels: int = 5,
        loop: ScpiLoop | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_s: float = IDLE_S,
        **state: object,
    ) -> None:
        if model not in _MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(_MODELS)}")
        self._model = _MODELS[model]
        self.name = name
        self.host = host
        self._requested_port = port
        self.state: SignalGeneratorState | CurrentSourceState = self._model.make_state(
            channels, **state
        )
        serial = re.sub(r"[,;\s]", "_", name)
        self.identity = f"labqpu simulator,{self._model.model},{serial},{_FIRMWARE_VERSION}"
        self._errors = _ErrorQueue()
        self._headers: dict[str, tuple[_Command, int]] = {}
        #: Valid queries as sent (``FREQ?``) -> (entry, channel), as ``_headers``.
        self._queries: dict[str, tuple[_Command, int]] = {}
        #: Setting commands executed so far (queries and refused commands not counted), so a
        #: test can see whether a client re-sent a setting.
        self.settings_total = 0
        self._port: int | None = None
        self._shared_loop = loop
        self._loop: ScpiLoop | None = None
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self.max_connections = max_connections
        self.idle_s = idle_s
        self._open = 0  # connections accepted and not dropped (the loop's thread only)
        self._refusals = Throttled(logger)

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not started"
        return f"ScpiServer({self._model.model!r}, name={self.name!r}, {where})"

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def resource(self) -> str:
        """VISA resource string of this instrument, e.g. ``TCPIP0::127.0.0.1::5025::SOCKET``."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def start(self) -> None:
        """Bind, listen and start serving (on the shared loop, or on a thread of its own)."""
        if self._loop is not None or self._stopping.is_set():
            raise RuntimeError("a server can be started once")
        listener = socket.create_server((self.host, self._requested_port))
        loop = self._shared_loop or ScpiLoop(f"scpi-server-{self.name}")
        try:
            listener.setblocking(False)
            loop.attach(self, listener)
        except BaseException:
            listener.close()
            if self._shared_loop is None:
                loop.stop()
            raise
        self._port = listener.getsockname()[1]
        self._loop, self._listener = loop, listener
        logger.info("%r listening", self)

    @property
    def serving(self) -> bool:
        """True while the server is started, not stopped, and its loop's thread runs."""
        return self._loop is not None and not self._stopping.is_set() and self._loop.alive

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the listening socket and every connection (``timeout_s``); a server on a
        thread of its own joins it. Idempotent."""
        self._stopping.set()
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if loop is self._shared_loop:
            loop.detach(self, self._listener, timeout_s)
        else:
            loop.stop(timeout_s)
        logger.info("%r stopped", self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def execute(self, line: str) -> str | None:
        """Execute one message line; return the reply (queries joined by ``;``) or None."""
        replies: list[str] = []
        for part in line.split(";"):
            command = part.strip()
            if not command:
                continue
            try:
                reply = self._execute_command(command)
            except _ScpiError as error:
                logger.debug("%r: %r refused: %s", self, command, error)
                self._errors.push(error)
                break
            except Exception:  # a bug must cost one command, never the instrument
                logger.exception("%r: %r failed", self, command)
                self._errors.push(_ScpiError(-300, "Device-specific error", command[:40]))
                break
            if reply is not None:
                replies.append(reply)
        return ";".join(replies) if replies else None

    def _execute_command(self, command: str) -> str | None:
        query = self._queries.get(command)
        if query is not None:  # a query met before: its parse is kept
            entry, channel = query
            return entry.on_query(_Request(self.state, self._errors, self.identity, channel, ""))
        header_text, _, argument = _WHITESPACE.sub(" ", command).partition(" ")
        parsed = _HEADER.fullmatch(header_text)
        if parsed is None:
            raise _ScpiError(-102, "Syntax error", header_text)
        header, is_query = parsed.group(1), parsed.group(2) is not None
        entry, channel = self._lookup(header)
        if is_query:
            if entry.on_query is None:
                raise _undefined_header(header_text)
            if argument:
                raise _ScpiError(-108, "Parameter not allowed", command)
            if len(self._queries) >= _KNOWN_HEADERS:
                self._queries.clear()
            self._queries[command] = entry, channel
            return entry.on_query(_Request(self.state, self._errors, self.identity, channel, ""))
        if entry.on_set is None:
            raise _undefined_header(header_text)
        if entry.takes_argument and not argument:
            raise _ScpiError(-109, "Missing parameter", command)
        if not entry.takes_argument and argument:
            raise _ScpiError(-108, "Parameter not allowed", command)
        entry.on_set(_Request(self.state, self._errors, self.identity, channel, argument))
        self.settings_total += 1
        return None

    def _lookup(self, header: str) -> tuple[_Command, int]:
        """The command table entry and channel of ``header``; headers found before are
        answered from a bounded table (a client sends the same few headers again and again)."""
        found = self._headers.get(header)
        if found is not None:
            return found
        tokens = header.split(":")
        for entry in self._model.commands:
            matched, suffix = _match(entry.nodes, tokens)
            if matched:
                channel = 1 if suffix is None else suffix
                if not 1 <= channel <= self.state.channels:
                    raise _ScpiError(-114, "Header suffix out of range", header)
                if len(self._headers) >= _KNOWN_HEADERS:
                    self._headers.clear()
                self._headers[header] = entry, channel
                return entry, channel
        raise _undefined_header(header)

    def _accept(
        self,
        selector: selectors.BaseSelector,
        listener: socket.socket,
        connections: dict[socket.socket, Connection],
    ) -> None:
        try:
            sock, address = listener.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise  # the loop sheds the client with its reserve descriptor
            self._refusals.warn("%r: accept failed: %s", self, exc)
            return
        if self._open >= self.max_connections and not self._shed_idle(selector, connections):
            reset_on_close(sock)
            sock.close()
            self._refusals.warn("%r: refused a connection from %s: %d clients are connected "
                                "(limit %d)", self, address[0], self._open, self.max_connections)
            return
        self._open += 1
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, f"{address[0]}:{address[1]}", self)
        connections[sock] = connection
        selector.register(sock, selectors.EVENT_READ, connection)
        logger.debug("%r: connection from %s", self, connection.peer)

    def _shed_idle(self, selector: selectors.BaseSelector,
                   connections: dict[socket.socket, Connection]) -> bool:
        """Reset this instrument's longest idle client if it has sent nothing for ``idle_s``
        and has nothing waiting (a line not yet read, a reply not yet taken); True when a
        place was freed so."""
        now = time.monotonic()
        for client in sorted((c for c in connections.values() if c.server is self),
                             key=lambda c: c.last_active):
            if now - client.last_active < self.idle_s:
                return False
            if client.received or client.pending or has_input(client.sock):
                continue
            logger.info("%r: %d clients are connected (limit %d): closing %s, idle for %.0f "
                        "s, for a new client", self, self._open, self.max_connections,
                        client.peer, now - client.last_active)
            reset_on_close(client.sock)
            self._drop(selector, connections, client)
            return True
        return False

    def _receive(self, selector: selectors.BaseSelector, connection: Connection) -> bool:
        """Read and execute complete lines; False when the connection is finished."""
        try:
            data = connection.sock.recv(4096)
        except BlockingIOError:
            return True
        except OSError as exc:
            logger.debug("%r: %s: %s", self, connection.peer, exc)
            return False
        if not data:
            return False
        connection.last_active = time.monotonic()
        connection.received.extend(data)
        while (end := connection.received.find(b"\n")) >= 0:
            raw = bytes(connection.received[:end])
            del connection.received[: end + 1]
            if connection.discarding:
                connection.discarding = False
                continue
            reply = self.execute(raw.decode("ascii", errors="replace").rstrip("\r"))
            if reply is not None:
                connection.pending.extend(reply.encode("ascii", errors="replace") + b"\n")
        if len(connection.received) > _MAX_LINE_BYTES:
            connection.received.clear()
            if not connection.discarding:  # one error per overlong line, however long
                self._errors.push(_ScpiError(-223, "Too much data"))
            connection.discarding = True
        if len(connection.pending) > _MAX_PENDING_REPLY_BYTES:
            logger.warning("%r: %s does not read its replies; closing", self, connection.peer)
            return False
        return self._flush(selector, connection)

    def _flush(self, selector: selectors.BaseSelector, connection: Connection) -> bool:
        """Send pending replies; watch for writability while some remain."""
        if connection.pending:
            try:
                sent = connection.sock.send(connection.pending)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                logger.debug("%r: %s: %s", self, connection.peer, exc)
                return False
            del connection.pending[:sent]
        wants_write = bool(connection.pending)
        if wants_write != connection.watching_write:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants_write else 0)
            selector.modify(connection.sock, events, connection)
            connection.watching_write = wants_write
        return True

    def _drop(
        self,
        selector: selectors.BaseSelector,
        connections: dict[socket.socket, Connection],
        connection: Connection,
    ) -> None:
        if connections.pop(connection.sock, None) is not None:
            self._open -= 1
        with contextlib.suppress(KeyError, ValueError):  # unregistered or closed already
            selector.unregister(connection.sock)
        connection.sock.close()
        logger.debug("%r: closed connection from %s", self, connection.peer)
