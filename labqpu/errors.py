"""Every exception labqpu raises, in one tree.

    LabQpuError (QiskitError)        base; ``str()`` is the plain message
    ├── BackendConfigurationError    a lab.toml is missing something or contradicts itself
    │                                (file, field)
    ├── CompilationError             a circuit cannot be compiled for the device
    │   │                            (circuit, qubits, instruction)
    │   └── PulseError               (also ValueError) a pulse-level program or shape is
    │                                malformed: unbound or non-finite parameter, duration off
    │                                the sample grid (parameter)
    ├── InvalidRunInputError         run() refused a circuit or option; nothing was sent (option)
    ├── JobCancelledError            a job was cancelled while it held the hardware
    ├── SimulationError              the firmware simulator cannot execute a program as given
    ├── CalibrationError             calibration data or the calibration store (subject, parameter)
    │   ├── CalibrationMissingError  (also KeyError) no such snapshot, or a parameter is absent
    │   │   └── BackendPropertyError a calibrated property of a qubit, pair or gate is absent
    │   ├── StaleSnapshotError       another writer committed since the snapshot a run started from
    │   ├── CalibrationSettingsError settings no run on the device can use (setting: the field)
    │   ├── CorruptSnapshotError     a stored snapshot no longer matches its content hash
    │   ├── InvalidSnapshotError     (also ValueError) a document or value is malformed; nothing
    │   │                            was written
    │   └── FitError                 an experiment's data do not support its model; nothing is
    │                                written from it
    └── InstrumentError              talking to an instrument failed (instrument, command)
        ├── InstrumentTimeoutError   an instrument did not answer within its bound
        ├── InstrumentCommandError   an instrument refused a command (SCPI error queue, typed
        │   │                        error reply from a controller; remote_type)
        │   ├── InstrumentSettingChangedError  an LO or bias setting read back changed
        │   │                        after a run: its results were discarded
        │   └── AuthenticationError  a controller's authenticator refused this client's hello
        ├── InstrumentLimitError     (also ValueError) a value is outside the instrument's limits;
        │                            nothing was sent
        ├── ProtocolError            a malformed or incompatible message on the wire
        ├── RackBusyError            another labqpu process of this host held the rack
        │                            throughout a job's wait for it
        └── HardwareUnavailableError the rack takes no work: its queue is closed or the
                                     simulator process is gone

``BackendConfigurationError`` and ``BackendPropertyError`` keep the names of the Qiskit 1.x
exceptions that Qiskit 2.0 removed. Everything is a ``QiskitError``, so ``except QiskitError``
in Qiskit code catches labqpu's errors too. Jobs report instrument failures as Qiskit's
``JobError`` carrying the instrument's message, raised ``from`` the ``InstrumentError``. The
context of an error is kept in attributes as well as in the message, so code can react to it
without parsing text.

This module is the ground floor of labqpu: it imports nothing of labqpu.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Iterable, Iterator

from qiskit.exceptions import QiskitError


class LabQpuError(QiskitError):
    """Base class of every labqpu error; ``str()`` is the plain message (QiskitError quotes it)."""

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:
        # Keyword-only context (instrument, qubits, ...) survives pickling, which the default
        # (re-calling __init__ with the formatted message) would drop.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[LabQpuError], args: tuple, state: dict) -> LabQpuError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class BackendConfigurationError(LabQpuError):
    """A lab configuration file is missing something or contradicts itself.

    Attributes:
        path: the file concerned, or ``""`` when the configuration did not come from a file.
        field: the dotted key concerned (``"qubits.3.drive"``), or ``""``.
    """

    def __init__(self, message: str, *, path: str = "", field: str = "") -> None:
        self.path = str(path) if path else ""
        self.field = field
        super().__init__(message)


class CompilationError(LabQpuError):
    """A circuit cannot be compiled for this device; the message names the qubit and gate.

    Attributes:
        circuit: the circuit's name, or ``""``.
        qubits: the device qubits concerned (one qubit, or an edge), or ``()``.
        instruction: the instruction or calibrated parameter concerned, or ``""``.
    """

    def __init__(self, message: str, *, circuit: str = "", qubits: tuple[int, ...] = (),
                 instruction: str = "") -> None:
        self.circuit = circuit
        self.qubits = tuple(qubits)
        self.instruction = instruction
        super().__init__(message)


class PulseError(CompilationError, ValueError):
    """A pulse-level program or pulse shape is malformed; nothing was built or sent.

    Attributes:
        parameter: the name of the parameter or shape field at fault (``"amp"``), or ``""``.
    """

    def __init__(self, message: str, *, parameter: str = "", circuit: str = "",
                 qubits: tuple[int, ...] = (), instruction: str = "") -> None:
        self.parameter = parameter
        super().__init__(message, circuit=circuit, qubits=qubits, instruction=instruction)


class InvalidRunInputError(LabQpuError):
    """A circuit or option given to ``run()`` cannot run on this backend; nothing was sent.

    Attributes:
        option: the run option at fault (``"shots"``), or ``""`` when it is a circuit.
    """

    def __init__(self, message: str, *, option: str = "") -> None:
        self.option = option
        super().__init__(message)


class JobCancelledError(LabQpuError):
    """A job was cancelled while it held the hardware; ``LabJob`` reports it as cancelled."""


class SimulationError(LabQpuError):
    """The firmware simulator cannot execute a program as given (the message says why).

    Raised inside the simulator process; a client sees it as the run's typed error reply.
    """


class CalibrationError(LabQpuError):
    """Something is wrong with calibration data or the calibration store.

    Attributes:
        subject: what the error concerns (``"qubit 3"``, ``"pair 0-1"``, ``"gate 'sx:0'"``),
            or ``""``.
        parameter: the parameter name concerned, or ``""``.
    """

    def __init__(self, message: str, *, subject: str = "", parameter: str = "") -> None:
        self.subject = subject
        self.parameter = parameter
        where = ", ".join(
            part for part in (subject, f"parameter {parameter!r}" if parameter else "") if part
        )
        super().__init__(f"{where}: {message}" if where else message)


class CalibrationMissingError(CalibrationError, KeyError):
    """A snapshot or a calibrated parameter does not exist."""


class BackendPropertyError(CalibrationMissingError):
    """A calibrated property of a qubit, pair or gate is absent from the snapshot.

    The Qiskit 1.x name for this error (``qiskit.providers.exceptions.BackendPropertyError``
    was removed in Qiskit 2.0); ``subject`` and ``parameter`` say which property.
    """


class StaleSnapshotError(CalibrationError):
    """A commit expected a parent snapshot that is no longer the newest one."""


class CalibrationSettingsError(CalibrationError):
    """Calibration settings no run on this device can use (randomized-benchmarking lengths
    longer than a controller plays); ``setting`` names the settings field (``lengths_1q``)
    and the message starts with it."""

    def __init__(self, message: str, *, setting: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")


class CorruptSnapshotError(CalibrationError):
    """A stored snapshot's document no longer matches its content hash, or cannot be read."""


class InvalidSnapshotError(CalibrationError, ValueError):
    """A calibration document or value is malformed; nothing was written."""


class FitError(CalibrationError):
    """The data of an experiment do not support the fitted model (the message says which)."""


class InstrumentError(LabQpuError):
    """Something went wrong talking to an instrument.

    Attributes:
        instrument: resource string or endpoint of the instrument concerned.
        command: the SCPI command or protocol op that failed, if any.
        detail: the message without the instrument and command around it.
    """

    def __init__(self, message: str, *, instrument: str = "", command: str = "") -> None:
        self.instrument = instrument
        self.command = command
        self.detail = message
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


class InstrumentSettingChangedError(InstrumentCommandError):
    """An LO or bias setting a run relied on read back different after the run (another
    process changed it): the run's results were discarded. The message names the instrument
    and the setting."""


class AuthenticationError(InstrumentCommandError):
    """A controller refused this client's ``hello``: its authenticator did not accept the
    credentials. No session was opened."""


class RackBusyError(InstrumentError):
    """Another labqpu process of this host held the rack throughout the time a job waits for
    it (``labqpu.rack.lock``): nothing was sent. The message names that process."""


class InstrumentLimitError(InstrumentError, ValueError):
    """A requested value lies outside the instrument's limits; nothing was sent."""


class ProtocolError(InstrumentError):
    """A message on the wire was malformed or spoke an unsupported protocol version."""


class HardwareUnavailableError(InstrumentError):
    """The rack cannot take work: the queue is closed or the simulator process is gone."""


def did_you_mean(word: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` naming the known word nearest to a misspelt ``word``, or ""
    when none is close (``difflib``'s ratio below ``cutoff``): the tail of an error message."""
    known = list(known)
    same = [k for k in known if k.lower() == word.lower()]  # ``drive_LO``: ``drive_lo``
    close = same or difflib.get_close_matches(word, known, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


@contextlib.contextmanager
def interrupts_as_such() -> Iterator[None]:
    """Let a Ctrl-C (or SIGTERM) that landed while numba loaded or compiled a kernel go on as
    the ``KeyboardInterrupt`` it is. Numba's dispatcher then returns with the interrupt set,
    which Python reports as ``SystemError: CPUDispatcher(...) returned a result with an
    exception set`` caused by it (a calibration interrupted in its first pulse shape exited 1
    with a traceback). Other exceptions pass unchanged."""
    try:
        yield
    except SystemError as exc:
        interrupt = wrapped_interrupt(exc)
        if interrupt is None:
            raise
        raise interrupt from None


def wrapped_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) inside ``exc`` when it is numba's ``SystemError`` caused by one
    (:func:`interrupts_as_such`), else None: for code that catches ``Exception``, which would
    take it for a failure and go on."""
    if isinstance(exc, SystemError) and isinstance(exc.__cause__, KeyboardInterrupt):
        return exc.__cause__
    return None


#: Top-level packages whose loggers ``--log-level`` treats as labqpu's own
#: (:func:`log_as_own`).
_OWN_PACKAGES = {"labqpu", "__main__"}


def log_as_own(package: str) -> None:
    """Log ``package`` (a top-level package name: a lab's calibration nodes, loaded from its
    entry point) at ``--log-level`` as labqpu's own messages, not from WARNING on as other
    libraries'."""
    _OWN_PACKAGES.add(package)


class _OwnMessages(logging.Filter):
    """Pass labqpu's records, a script's (its ``__main__`` logger and the root logger), those
    of the packages :func:`log_as_own` names, and every other library's from ``floor`` (a
    ``logging`` level) on."""

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return (record.levelno >= self.floor or name == "root"
                or name.split(".", 1)[0] in _OWN_PACKAGES)


def log_to_stderr(level: str) -> None:
    """Log labqpu's messages and a script's own (``labqpu run script.py``: its ``__main__``
    logger, and the root logger that ``logging.info`` uses) at ``level`` (a ``logging`` level
    name), and every other library's at that level or WARNING, whichever is higher (a lab's
    own package too, but for its calibration nodes' package, :func:`log_as_own`: a script
    sets its level), on stderr with time and logger name: what
    ``--log-level`` of the ``labqpu`` command and of the simulator does (at INFO, Qiskit's
    transpiler logs every pass of every transpile)."""
    number = logging.getLevelName(level)
    logging.basicConfig(level=number, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OwnMessages(max(number, logging.WARNING)))
