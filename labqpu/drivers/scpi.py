"""SCPI instrument drivers over pyvisa (pyvisa-py backend by default).

    ScpiInstrument      one VISA session: bounded queries, error-queue checks, locking
    ├── SignalGenerator     microwave LO source (R&S SGS100A command subset)
    └── CurrentSource       multi-channel DC current source for flux bias (Keysight B2900 style)

Every instrument is addressed by a VISA resource string such as
``TCPIP0::127.0.0.1::5025::SOCKET``. Each query is bounded by ``timeout_s``; after a timeout or
a broken connection the session is closed and reopened on the next call, so a reply that
arrives late can never be read as the answer to a later query. On pyvisa-py TCPIP SOCKET
sessions the messages are written and the reply lines read here (:class:`_SocketLink`), each
within ``timeout_s``: a session whose instrument closed the connection while idle is reopened
before the next message, and a connection closed instead of a reply fails that call at once.
After every setting command the driver reads the instrument's error queue (``SYST:ERR?``), so
a refused command raises :class:`~labqpu.errors.InstrumentCommandError` instead of passing
silently. Values outside the driver's limits raise
:class:`~labqpu.errors.InstrumentLimitError` and nothing is sent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self

import numpy as np
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.resources
from pyvisa_py.tcpip import TCPIPSocketSession

from labqpu.errors import (
    InstrumentCommandError,
    InstrumentError,
    InstrumentLimitError,
    InstrumentTimeoutError,
    ProtocolError,
)

logger = logging.getLogger(__name__)

_TERMINATION = "\n"
_ERROR_QUERY = "SYST:ERR?"
_CLEAR_STATUS = "*CLS"
#: Upper bound on ``SYST:ERR?`` reads in one check, in case an instrument never reports empty.
_MAX_ERROR_QUEUE_READS = 100
#: Longest reply line the drivers read (bytes); an instrument sending more without a line end
#: is a protocol error, not memory taken until the timeout.
_MAX_REPLY_BYTES = 1 << 20
#: Longest single wait of ``poll`` (ms; it takes a C int): a longer timeout waits in turns.
_MAX_POLL_MS = 3_600_000


class _SocketLink:
    """The socket under a pyvisa-py TCPIP SOCKET session, whose reply lines labqpu reads.

    pyvisa-py's read takes an ended stream for "no data yet" and polls it until its timeout, a
    core busy all the while, and a reply that starts late gets a timeout anew: an instrument
    that closed the connection (its restart, its own idle timeout) cost every next transaction
    its whole timeout, and a trickling reply twice that. Its write waits without a bound for
    the socket to take the message: an instrument that stopped reading held the caller
    forever. Here a message is sent and a reply line read with one deadline each, and an
    ended stream ends the wait at once; before a message is sent the connection is checked
    (closed, or bytes waiting that nobody asked for: the session is reopened). Sessions are
    still opened and closed by pyvisa. Other backends, resources and platforms without
    ``select.poll`` are not linked (:meth:`of` returns None) and keep pyvisa's write and read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._readable = select.poll()
        self._readable.register(sock, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(sock, select.POLLOUT)
        #: Bytes that came after a reply's line end: a line nobody asked for.
        self._extra = b""

    @classmethod
    def of(cls, session: pyvisa.resources.MessageBasedResource) -> _SocketLink | None:
        """The link of ``session``'s socket, or None when labqpu leaves it to pyvisa."""
        sessions = getattr(session.visalib, "sessions", None)
        backend_session = sessions.get(session.session) if isinstance(sessions, dict) else None
        # exactly this class: a subclass (Prologix adapters) has a reply asked for in its read
        if type(backend_session) is not TCPIPSocketSession or not hasattr(select, "poll"):
            return None
        sock = getattr(backend_session, "interface", None)
        return cls(sock) if isinstance(sock, socket.socket) else None

    def idle_problem(self) -> str | None:
        """Why the session should not carry a new message, or None when it can."""
        if self._extra:
            return "a line nobody asked for was waiting"
        if not self._readable.poll(0):
            return None
        try:
            ended = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return None
        except OSError as exc:
            return f"the connection had broken ({exc})"
        return ("the instrument had closed the connection" if ended
                else "bytes nobody asked for were waiting")

    def send(self, message: str, timeout_s: float) -> None:
        """Send ``message`` and its line end within ``timeout_s`` in all.

        Raises:
            TimeoutError: the instrument did not take the whole message within ``timeout_s``.
            OSError: the connection broke.
        """
        data = memoryview((message + _TERMINATION).encode("ascii"))
        deadline = time.monotonic() + timeout_s
        while data:
            try:
                data = data[self._sock.send(data, socket.MSG_DONTWAIT):]
                continue
            except BlockingIOError:
                pass
            if not self._wait(self._writable, deadline):
                raise TimeoutError("the instrument did not take the message")

    @staticmethod
    def _wait(poll: select.poll, deadline: float) -> bool:
        """Wait until ``poll`` reports the socket ready (or broken, or ended); False when
        ``deadline`` (``time.monotonic``) passed first."""
        while True:
            left_ms = math.ceil((deadline - time.monotonic()) * 1000)
            if left_ms > 0 and poll.poll(min(left_ms, _MAX_POLL_MS)):
                return True
            if time.monotonic() >= deadline:
                return False

    def read_line(self, timeout_s: float) -> bytes:
        """The next reply line, without its line end, within ``timeout_s`` in all.

        Raises:
            TimeoutError: no whole line within ``timeout_s``.
            EOFError: the instrument closed the connection before a whole line.
            ValueError: a line longer than :data:`_MAX_REPLY_BYTES`.
            OSError: the connection broke.
        """
        deadline = time.monotonic() + timeout_s
        line = bytearray()
        while True:
            if not self._wait(self._readable, deadline):
                raise TimeoutError("no reply")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError
            line += chunk
            end = line.find(b"\n")
            if end >= 0:
                self._extra = bytes(line[end + 1:])
                return bytes(line[:end])
            if len(line) > _MAX_REPLY_BYTES:
                raise ValueError(f"reply longer than {_MAX_REPLY_BYTES} bytes without a "
                                 "line end")


class ScpiInstrument:
    """A SCPI instrument behind one VISA session.

    Args:
        resource: VISA resource string, e.g. ``TCPIP0::192.168.1.20::5025::SOCKET``.
        timeout_s: bound on connecting and on every reply, in seconds.
        resource_manager: pyvisa resource manager to open the session with; by default the
            pyvisa-py one (``pyvisa.ResourceManager("@py")``). It is shared, never closed here.
        name: the instrument's name in the wiring file (``lo_drive_a``), which errors give
            with the resource.

    The constructor opens the session and reads ``*IDN?`` (kept as :attr:`identity`), so an
    unreachable or silent instrument fails here; on any failure the session is closed
    again. One lock serialises all traffic, so the instrument can be shared between threads.

    Raises:
        InstrumentTimeoutError: the instrument did not answer ``*IDN?`` within ``timeout_s``.
        InstrumentError: the resource could not be opened.
    """

    def __init__(
        self,
        resource: str,
        *,
        timeout_s: float = 2.0,
        resource_manager: pyvisa.ResourceManager | None = None,
        name: str = "",
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.resource = resource
        #: How errors name the instrument: its wiring name and resource, or the resource.
        self.label = f"{name} ({resource})" if name else resource
        self.timeout_s = float(timeout_s)
        self._resource_manager = (
            resource_manager if resource_manager is not None else pyvisa.ResourceManager("@py")
        )
        self._lock = threading.Lock()
        self._session: pyvisa.resources.MessageBasedResource | None = None
        self._link: _SocketLink | None = None
        self._closed = False
        try:
            with self._lock:
                self.identity = self._transact("*IDN?")
        except BaseException:
            self.close()
            raise
        logger.info("opened %s: %s", resource, self.identity)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resource!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the VISA session. Safe to call more than once and from any state."""
        with self._lock:
            self._closed = True
            self._drop_session()

    def write(self, command: str) -> None:
        """Send a setting command, then check the error queue.

        ``*CLS``, the command and the first ``SYST:ERR?`` leave in one write, as three
        messages, so the errors checked are the command's own: an error another client left
        in the instrument's shared queue is cleared first, not blamed on this command. (Two
        small writes in a row would also wait for the instrument's delayed ACK: Nagle's
        algorithm, which pyvisa-py cannot switch off on SOCKET resources, ~40 ms each.)

        Raises:
            InstrumentCommandError: the instrument reported an error for the command.
            InstrumentTimeoutError: the error queue could not be read within the timeout.
        """
        self._check_command(command)
        with self._lock:
            first_entry = self._transact(
                f"{_CLEAR_STATUS}{_TERMINATION}{command}{_TERMINATION}{_ERROR_QUERY}", command)
            self._check_errors(command, first_entry)

    def query(self, command: str) -> str:
        """Send a query and return its reply without the termination character.

        Raises:
            InstrumentTimeoutError: no reply within ``timeout_s``.
            ProtocolError: ``command`` holds a line break or is not ASCII (nothing is sent).
        """
        self._check_command(command)
        with self._lock:
            return self._transact(command)

    def _check_command(self, command: str) -> None:
        """Refuse a command with a line break (its extra replies would answer later queries)
        or a character outside ASCII (SCPI's character set), before anything is sent."""
        if "\n" in command or "\r" in command:
            raise ProtocolError("a command must be one line; send one command per call",
                                instrument=self.label, command=command)
        if not command.isascii():
            raise ProtocolError("a command must be ASCII (SCPI's character set)",
                                instrument=self.label, command=command)

    def idn(self) -> str:
        """Return the instrument's ``*IDN?`` string (manufacturer, model, serial, firmware)."""
        return self.query("*IDN?")

    def reset(self) -> None:
        """Reset the instrument to its factory settings (``*RST``)."""
        self.write("*RST")

    def check_errors(self) -> None:
        """Read ``SYST:ERR?`` until the queue is empty.

        Raises:
            InstrumentCommandError: the queue held errors; ``remote_type`` is the first code.
        """
        with self._lock:
            self._check_errors("", self._transact(_ERROR_QUERY))

    def _query_float(self, command: str) -> float:
        return self._number(self.query(command), command)

    def _query_bool(self, command: str) -> bool:
        return self._boolean(self.query(command), command)

    def _number(self, reply: str, command: str) -> float:
        try:
            return float(reply)
        except ValueError as exc:
            raise ProtocolError(
                f"expected a number, got {reply!r}", instrument=self.label, command=command
            ) from exc

    def _boolean(self, reply: str, command: str) -> bool:
        word = reply.strip().upper()
        if word in ("1", "ON"):
            return True
        if word in ("0", "OFF"):
            return False
        raise ProtocolError(
            f"expected a boolean, got {reply!r}", instrument=self.label, command=command
        )

    def _check_limit(self, quantity: str, value: float, low: float, high: float) -> float:
        """Return ``value`` as a float if it is finite and ``low <= value <= high``, else
        raise (an instrument without a configured limit has an infinite one)."""
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise InstrumentLimitError(
                f"{quantity}={number!r} is outside the allowed range [{low!r}, {high!r}]",
                instrument=self.label,
            )
        return number

    def _check_errors(self, command: str, first_entry: str) -> None:
        """Read the error queue from its already read ``first_entry``; caller holds the lock."""
        errors: list[tuple[int, str]] = []
        entry = first_entry
        while (parsed := self._parse_error(entry))[0] != 0:
            errors.append(parsed)
            if len(errors) == _MAX_ERROR_QUEUE_READS:
                logger.warning(
                    "%s: error queue not empty after %d reads", self.label, len(errors)
                )
                break
            entry = self._transact(_ERROR_QUERY)
        if errors:
            text = "; ".join(f"{code},{message!r}" for code, message in errors)
            raise InstrumentCommandError(
                f"instrument reported {text}",
                instrument=self.label,
                command=command,
                remote_type=str(errors[0][0]),
            )

    def _parse_error(self, reply: str) -> tuple[int, str]:
        code_text, _, message = reply.partition(",")
        try:
            code = int(code_text)
        except ValueError as exc:
            raise ProtocolError(
                f"malformed error queue entry {reply!r}",
                instrument=self.label,
                command=_ERROR_QUERY,
            ) from exc
        message = message.strip()
        if len(message) >= 2 and message[0] == message[-1] == '"':
            message = message[1:-1].replace('""', '"')
        return code, message

    def _transact(self, message: str, command: str = "") -> str:
        """Send ``message`` and return one reply; the caller holds the lock.

        Errors name ``command`` (default: the message). On a timeout, a broken connection or
        an undecodable reply the session is closed, so a late reply cannot answer a later
        query; the next transaction reopens it.
        """
        command = command or message
        session = self._open_session()
        logger.debug("%s <- %r", self.resource, message)
        self._send(session, message, command)
        reply = self._read_reply(session, command)
        logger.debug("%s -> %r", self.resource, reply)
        return reply

    def _send(self, session: pyvisa.resources.MessageBasedResource, message: str,
              command: str) -> None:
        """Send ``message`` (for ``command``) on ``session``; the caller holds the lock."""
        try:
            if self._link is None:
                session.write(message)
            else:
                self._link.send(message, self.timeout_s)
        except (pyvisa.errors.VisaIOError, OSError) as exc:
            raise self._failed(exc, command) from exc

    def _read_reply(self, session: pyvisa.resources.MessageBasedResource, command: str
                    ) -> str:
        """Read the reply to ``command``, sent on ``session``; the caller holds the lock."""
        if self._link is None:
            try:
                return session.read().strip()
            except (pyvisa.errors.VisaIOError, OSError, UnicodeDecodeError) as exc:
                raise self._failed(exc, command) from exc
        try:
            return self._link.read_line(self.timeout_s).decode("ascii").strip()
        except (OSError, EOFError, ValueError) as exc:  # ValueError: too long, not ASCII
            raise self._failed(exc, command) from exc

    def _failed(self, exc: Exception, command: str) -> InstrumentError:
        """Close the session after ``exc`` (a reply may still be on its way) and return the
        error to raise; the caller holds the lock."""
        self._drop_session()
        if isinstance(exc, pyvisa.errors.VisaIOError):
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                return InstrumentTimeoutError(f"no reply within {self.timeout_s} s",
                                              instrument=self.label, command=command)
            return InstrumentError(f"VISA I/O error: {exc}", instrument=self.label,
                                   command=command)
        if isinstance(exc, TimeoutError):  # from the driver's own write or read (_SocketLink)
            return InstrumentTimeoutError(f"{exc} within {self.timeout_s} s",
                                          instrument=self.label, command=command)
        if isinstance(exc, EOFError):
            return InstrumentError("the instrument closed the connection instead of replying",
                                   instrument=self.label, command=command)
        if isinstance(exc, UnicodeDecodeError):
            return ProtocolError(f"reply is not ASCII: {exc}", instrument=self.label,
                                 command=command)
        if isinstance(exc, ValueError):
            return ProtocolError(str(exc), instrument=self.label, command=command)
        hint = (" (the instrument reset the connection: it may already serve as many clients "
                "as it takes)" if isinstance(exc, ConnectionResetError) else "")
        return InstrumentError(f"connection failed: {exc}{hint}", instrument=self.label,
                               command=command)

    def _open_session(self) -> pyvisa.resources.MessageBasedResource:
        """Return the open session, opening it if needed; the caller holds the lock."""
        if self._closed:
            raise InstrumentError("instrument is closed", instrument=self.label)
        if self._session is not None:
            problem = self._link.idle_problem() if self._link is not None else None
            if problem is None:
                return self._session
            logger.info("%s: %s; opening a new session", self.label, problem)
            self._drop_session()
        timeout_ms = max(1, round(self.timeout_s * 1000))
        try:
            session = self._resource_manager.open_resource(self.resource, open_timeout=timeout_ms)
        # pyvisa-py reports a failed connect as a bare Exception; it is re-raised with context.
        except Exception as exc:
            hint = ("; this process has more than 1023 files or sockets open, and pyvisa-py "
                    "waits on a TCPIP SOCKET session's connection with select(), which cannot "
                    "take a descriptor beyond 1023: close files, or open the provider before "
                    "the many others") if "out of range in select" in str(exc) else ""
            raise InstrumentError(f"cannot open resource: {exc}{hint}",
                                  instrument=self.label) from exc
        try:
            if not isinstance(session, pyvisa.resources.MessageBasedResource):
                raise InstrumentError(
                    f"{type(session).__name__} is not a message-based resource",
                    instrument=self.label,
                )
            session.timeout = timeout_ms
            session.read_termination = _TERMINATION
            session.write_termination = _TERMINATION
        except BaseException:
            session.close()
            raise
        self._session, self._link = session, _SocketLink.of(session)
        return session

    def _drop_session(self) -> None:
        """Close the session (if any); the next transaction reopens it. Caller holds the lock."""
        session, self._session, self._link = self._session, None, None
        if session is None:
            return
        try:
            session.close()
        except (pyvisa.errors.Error, OSError) as exc:
            logger.warning("%s: error while closing the session: %s", self.label, exc)


#: Default CW frequency range (Hz) and output power range (dBm) of a :class:`SignalGenerator`
#: (an SGS100A's); a wiring file narrows or widens them per instrument.
DEFAULT_FREQUENCY_RANGE_HZ = (1e6, 12.75e9)
DEFAULT_POWER_RANGE_DBM = (-120.0, 25.0)
#: Default output current magnitude limit (A) of a :class:`CurrentSource`.
DEFAULT_MAX_CURRENT_A = 10e-3


class SignalGenerator(ScpiInstrument):
    """Microwave LO source speaking the R&S SGS100A command subset.

    Commands used: ``FREQ <Hz>``, ``FREQ?``, ``POW <dBm>``, ``POW?``, ``OUTP ON|OFF``,
    ``OUTP?``.

    Args:
        resource: VISA resource string.
        timeout_s: bound on every reply, in seconds.
        resource_manager: pyvisa resource manager (default: pyvisa-py).
        min_frequency_hz, max_frequency_hz: allowed CW frequency range, in Hz.
        min_power_dbm, max_power_dbm: allowed output power range, in dBm.
        name: the instrument's name in the wiring file (for errors).
    """

    def __init__(
        self,
        resource: str,
        *,
        timeout_s: float = 2.0,
        resource_manager: pyvisa.ResourceManager | None = None,
        min_frequency_hz: float = DEFAULT_FREQUENCY_RANGE_HZ[0],
        max_frequency_hz: float = DEFAULT_FREQUENCY_RANGE_HZ[1],
        min_power_dbm: float = DEFAULT_POWER_RANGE_DBM[0],
        max_power_dbm: float = DEFAULT_POWER_RANGE_DBM[1],
        name: str = "",
    ) -> None:
        if not min_frequency_hz < max_frequency_hz:
            raise ValueError("min_frequency_hz must be below max_frequency_hz")
        if not min_power_dbm < max_power_dbm:
            raise ValueError("min_power_dbm must be below max_power_dbm")
        self.frequency_range_hz = (float(min_frequency_hz), float(max_frequency_hz))
        self.power_range_dbm = (float(min_power_dbm), float(max_power_dbm))
        super().__init__(resource, timeout_s=timeout_s, resource_manager=resource_manager,
                         name=name)

    @property
    def frequency_hz(self) -> float:
        """CW output frequency, in Hz."""
        return self._query_float("FREQ?")

    @frequency_hz.setter
    def frequency_hz(self, value: float) -> None:
        self.write(f"FREQ {self._frequency(value)!r}")

    @property
    def power_dbm(self) -> float:
        """Output power level, in dBm."""
        return self._query_float("POW?")

    @power_dbm.setter
    def power_dbm(self, value: float) -> None:
        self.write(f"POW {self._power(value)!r}")

    @property
    def output_on(self) -> bool:
        """Whether the RF output is switched on."""
        return self._query_bool("OUTP?")

    @output_on.setter
    def output_on(self, on: bool) -> None:
        self.write(f"OUTP {_on_off(on)}")

    #: The query :meth:`state` sends; :meth:`parse_state` reads its reply.
    STATE_QUERY = "FREQ?;POW?;OUTP?"

    def state(self) -> tuple[float, float, bool]:
        """Frequency (Hz), power (dBm) and output state, read in one round trip."""
        return self.parse_state(self.query(self.STATE_QUERY))

    def parse_state(self, reply: str) -> tuple[float, float, bool]:
        """Frequency (Hz), power (dBm) and output state from the reply to
        :attr:`STATE_QUERY` (sent by :meth:`state` or :func:`query_each`)."""
        command = self.STATE_QUERY
        parts = reply.split(";")
        if len(parts) != 3:
            raise ProtocolError(f"expected three replies, got {parts!r}",
                                instrument=self.label, command=command)
        return (self._number(parts[0], command), self._number(parts[1], command),
                self._boolean(parts[2], command))

    def configure(self, frequency_hz: float, power_dbm: float, output_on: bool = True) -> None:
        """Set frequency (Hz), power (dBm) and output state in one message.

        All values are checked before anything is sent.
        """
        command = (
            f"FREQ {self._frequency(frequency_hz)!r};POW {self._power(power_dbm)!r};"
            f"OUTP {_on_off(output_on)}"
        )
        self.write(command)

    def _frequency(self, value: float) -> float:
        return self._check_limit("frequency_hz", value, *self.frequency_range_hz)

    def _power(self, value: float) -> float:
        return self._check_limit("power_dbm", value, *self.power_range_dbm)


class CurrentSource(ScpiInstrument):
    """Multi-channel DC current source for flux bias (Keysight B2900 command style).

    Commands used: ``SOUR<ch>:FUNC:MODE CURR``, ``SOUR<ch>:CURR <A>``, ``SOUR<ch>:CURR?``,
    ``OUTP<ch> ON|OFF``, ``OUTP<ch>?``; channels are numbered from 1.

    Args:
        resource: VISA resource string.
        channels: number of output channels.
        max_current_a: allowed output current magnitude, in A (the range is symmetric).
        timeout_s: bound on every reply, in seconds.
        resource_manager: pyvisa resource manager (default: pyvisa-py).
        name: the instrument's name in the wiring file (for errors).
    """

    def __init__(
        self,
        resource: str,
        *,
        channels: int = 5,
        max_current_a: float = DEFAULT_MAX_CURRENT_A,
        timeout_s: float = 2.0,
        resource_manager: pyvisa.ResourceManager | None = None,
        name: str = "",
    ) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if not max_current_a > 0:
            raise ValueError(f"max_current_a must be positive, got {max_current_a!r}")
        self.channels = channels
        self.max_current_a = float(max_current_a)
        self._states_queries: dict[tuple[int, ...], str] = {}
        super().__init__(resource, timeout_s=timeout_s, resource_manager=resource_manager,
                         name=name)

    def set_current_a(self, channel: int, current_a: float) -> None:
        """Put ``channel`` in current mode and set its output current, in A."""
        ch = self._channel(channel)
        value = self._check_limit(
            f"current_a (channel {ch})", current_a, -self.max_current_a, self.max_current_a
        )
        self.write(f"SOUR{ch}:FUNC:MODE CURR;:SOUR{ch}:CURR {value!r}")

    def current_a(self, channel: int) -> float:
        """Return the programmed output current of ``channel``, in A."""
        return self._query_float(f"SOUR{self._channel(channel)}:CURR?")

    def state(self, channel: int) -> tuple[float, bool]:
        """Programmed current (A) and output state of ``channel``, read in one round trip."""
        ch = self._channel(channel)
        command = f"SOUR{ch}:CURR?;:OUTP{ch}?"
        parts = self.query(command).split(";")
        if len(parts) != 2:
            raise ProtocolError(f"expected two replies, got {parts!r}",
                                instrument=self.label, command=command)
        return self._number(parts[0], command), self._boolean(parts[1], command)

    def states(self, channels: Sequence[int]) -> dict[int, tuple[float, bool]]:
        """Programmed current (A) and output state of each of ``channels``, all read in one
        round trip (one compound query)."""
        if not channels:
            return {}
        return self.parse_states(channels, self.query(self.states_query(channels)))

    def states_query(self, channels: Sequence[int]) -> str:
        """The one compound query that :meth:`states` sends for ``channels`` (not empty);
        made once per tuple of channels (plain ints) and kept: a job asks it twice."""
        key = tuple(channels)
        plain = all(type(ch) is int for ch in key)  # True == 1 must not find channel 1's query
        query = self._states_queries.get(key) if plain else None
        if query is None:
            if not channels:
                raise ValueError("states_query needs at least one channel")
            query = ";:".join(f"SOUR{ch}:CURR?;:OUTP{ch}?" for ch in map(self._channel, key))
            if plain:
                if len(self._states_queries) >= _KEPT_STATE_QUERIES:
                    self._states_queries.clear()
                self._states_queries[key] = query
        return query

    def parse_states(self, channels: Sequence[int], reply: str
                     ) -> dict[int, tuple[float, bool]]:
        """Current (A) and output state per channel from the reply to
        :meth:`states_query` (sent by :meth:`states` or :func:`query_each`)."""
        command = self.states_query(channels)  # checks the channels
        chs = [int(c) for c in channels]
        parts = reply.split(";")
        if len(parts) != 2 * len(chs):
            raise ProtocolError(f"expected {2 * len(chs)} replies, got {parts!r}",
                                instrument=self.label, command=command)
        return {ch: (self._number(parts[2 * i], command), self._boolean(parts[2 * i + 1], command))
                for i, ch in enumerate(chs)}

    def set_output(self, channel: int, on: bool) -> None:
        """Switch the output of ``channel`` on or off."""
        self.write(f"OUTP{self._channel(channel)} {_on_off(on)}")

    def output_on(self, channel: int) -> bool:
        """Return whether the output of ``channel`` is switched on."""
        return self._query_bool(f"OUTP{self._channel(channel)}?")

    def _channel(self, channel: int) -> int:
        if (
            isinstance(channel, bool)
            or not isinstance(channel, int | np.integer)
            or not 1 <= channel <= self.channels
        ):
            raise InstrumentLimitError(
                f"channel {channel!r} is outside the allowed range [1, {self.channels}]",
                instrument=self.label,
            )
        return int(channel)


#: Compound state queries a current source keeps, per tuple of channels (emptied when full).
_KEPT_STATE_QUERIES = 256


def _on_off(on: bool) -> str:
    if not isinstance(on, bool | np.bool_):
        raise TypeError(f"expected a bool, got {on!r}")
    return "ON" if on else "OFF"


def query_each(queries: Sequence[tuple[ScpiInstrument, str]]) -> list[str]:
    """Send one query to each of several instruments, then read the replies, in order.

    Every query leaves before the first reply is read, so the instruments answer at the same
    time: one round trip in all instead of one per instrument (:func:`queries_out`).
    """
    with queries_out(queries) as replies:
        return replies()


@contextlib.contextmanager
def queries_out(queries: Sequence[tuple[ScpiInstrument, str]]
                ) -> Iterator[Callable[[], list[str]]]:
    """Send one query to each of several instruments on entry; the callable it yields (call it
    once) reads their replies, in order. The caller may do other work (start a run) while the
    replies travel.

    Each instrument is locked from entry to exit (in a fixed order, so two callers cannot
    deadlock). The bounds are those of :meth:`ScpiInstrument.query`. If any step fails, or the
    block is left before every reply was read, every session that may still receive a reply
    is closed (reopened on its next use), so no late reply can answer a later query.

    Raises:
        ValueError: an instrument appears twice (its replies would arrive in one stream).
        ProtocolError: a command holds a line break (nothing is sent).
        InstrumentTimeoutError: a reply did not come within its instrument's ``timeout_s``.
        InstrumentError: a session could not be opened or broke.
    """
    instruments = [instrument for instrument, _ in queries]
    if len({id(i) for i in instruments}) != len(instruments):
        raise ValueError("queries_out takes one query per instrument")
    for instrument, command in queries:
        instrument._check_command(command)
    with contextlib.ExitStack() as locks:
        for instrument in sorted(instruments, key=id):
            locks.enter_context(instrument._lock)
        sent: list[ScpiInstrument] = []  # queries out whose replies are not read yet

        def replies() -> list[str]:
            out = []
            for current, command in queries:
                reply = current._read_reply(current._session, command)
                logger.debug("%s -> %r (%r)", current.resource, reply, command)
                out.append(reply)
                sent.remove(current)
            return out

        try:
            for current, command in queries:
                session = current._open_session()
                logger.debug("%s <- %r", current.resource, command)
                sent.append(current)
                current._send(session, command, command)
            yield replies
        finally:
            for instrument in sent:  # failed or left early: a late reply would answer a
                instrument._drop_session()  # later query
