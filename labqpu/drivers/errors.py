"""Exceptions raised by instrument drivers.

Every error names the instrument it concerns (a VISA resource string or a ZeroMQ
endpoint) and, where it applies, the command or operation that failed.

    InstrumentError
    ├── InstrumentTimeoutError      an instrument did not answer within its bound
    ├── InstrumentCommandError      an instrument refused a command (SCPI error queue,
    │                               typed error reply from a controller)
    ├── InstrumentLimitError        a value is outside the instrument's limits; nothing sent
    └── ProtocolError               a malformed or incompatible message on the wire
"""

from __future__ import annotations


class InstrumentError(Exception):
    """Base class: something went wrong talking to an instrument.

    Attributes:
        instrument: resource string or endpoint of the instrument concerned.
        command: the SCPI command or protocol op that failed, if any.
    """

    def __init__(self, message: str, *, instrument: str = "", command: str = "") -> None:
        self.instrument = instrument
        self.command = command
        where = f"[{instrument}] " if instrument else ""
        what = f" (command {command!r})" if command else ""
        super().__init__(f"{where}{message}{what}")


class InstrumentTimeoutError(InstrumentError):
    """The instrument did not answer within the configured timeout."""


class InstrumentCommandError(InstrumentError):
    """The instrument refused a command; ``remote_type`` is its own error class or code."""

    def __init__(
        self, message: str, *, instrument: str = "", command: str = "", remote_type: str = ""
    ) -> None:
        self.remote_type = remote_type
        super().__init__(message, instrument=instrument, command=command)


class InstrumentLimitError(InstrumentError, ValueError):
    """A requested value lies outside the instrument's limits; nothing was sent."""


class ProtocolError(InstrumentError):
    """A message on the wire was malformed or spoke an unsupported protocol version."""
