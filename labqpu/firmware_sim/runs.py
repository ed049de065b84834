"""The controller's records of programs and runs, the executor that plays them, and the
content ids that name them."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["ABORTED", "ACTIVE", "DONE", "ERROR", "QUEUED", "RUNNING", "Executor", "FairQueue",
           "KeyRecord", "Program", "ProgramRefusedError", "Run", "program_id_of",
           "request_digest"]

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
ERROR = "error"
ABORTED = "aborted"
ACTIVE = (QUEUED, RUNNING)


@dataclass
class Program:
    """An uploaded program: its read-only arrays and its meta."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold."""
        return sum(array.nbytes for array in self.arrays.values())


@dataclass
class Run:
    """One accepted ``run`` and its outcome. Times are ``time.monotonic()`` seconds;
    ``time_limit_s`` bounds how long it may play once started (None: no bound), and
    ``expired`` says the controller stopped it at that bound."""

    run_id: str
    key: str | None
    program: Program
    shots: int
    params: dict[str, Any]
    accepted_at: float
    session: str
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = QUEUED
    finished_at: float | None = None
    results: dict[str, np.ndarray] = field(default_factory=dict)
    error: str = ""
    error_type: str = ""
    time_limit_s: float | None = None
    started_at: float | None = None
    expired: bool = False

    def elapsed_s(self, now: float) -> float:
        """Seconds since the run was accepted, frozen once it finished."""
        end = now if self.finished_at is None else self.finished_at
        return end - self.accepted_at


@dataclass(frozen=True)
class KeyRecord:
    """What an idempotency key ran: the run, a digest of the request, when (monotonic s)."""

    run_id: str
    content: str
    seen_at: float


def request_digest(program_id: str, shots: int, params: dict[str, Any]) -> str:
    """Digest of what a ``run`` asks for, so a reused key with other content is refused."""
    text = json.dumps([program_id, shots, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def program_id_of(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str:
    """Content id of a program: first 16 hex digits of a SHA-256 over meta and arrays.

    The digest covers the canonical JSON of ``meta`` and, in name order, every array's
    name, dtype, shape and bytes, so the same program always gets the same id.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name]).reshape(-1)
        descriptor = {"name": name, "dtype": arrays[name].dtype.str, "shape": arrays[name].shape}
        digest.update(b"\0" + json.dumps(descriptor, separators=(",", ":")).encode("utf-8"))
        digest.update(array.view(np.uint8).data)
    return digest.hexdigest()[:16]


class Executor(Protocol):
    """What the simulator plugs into a ``ControllerServer``: the device behind the wire.

    An executor may also have ``abandon(params)``: the server calls it with the run
    parameters of each run aborted before it started."""

    def capabilities(self) -> dict:
        """JSON-able description: channels, sample_rate_hz, waveform_memory_samples, ..."""
        ...

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Validate a program; raise ``ValueError`` with a clear message if it is bad (the
        reply's error type is the exception's ``error_type`` attribute when it has one, e.g.
        ``ProgramRefusedError``, else ``InvalidProgram``).

        The arrays are read-only: a program is immutable once uploaded, and every run of
        it receives the same arrays.
        """
        ...

    def execute(
        self,
        arrays: dict[str, np.ndarray],
        meta: dict,
        shots: int,
        params: dict,
        cancel: threading.Event,
    ) -> dict[str, np.ndarray]:
        """Run a loaded program ``shots`` times (blocking) and return the result arrays.

        Should return early once ``cancel`` is set; any exception marks the run ``error``
        with the exception's type name and message.
        """
        ...


class ProgramRefusedError(ValueError):
    """A program an executor refuses with a specific protocol error type (``ERR_*``)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class FairQueue:
    """Accepted runs waiting for the controller's worker, taken one session at a time in turn:
    a session's next run waits for at most one run of each other session with runs waiting,
    not for all of them (one client that queued hundreds of runs delays another's job by one
    run, not by all of them). Within a session, runs keep their order. Thread-safe."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        #: Session -> its waiting run ids; the session whose turn it is first.
        self._waiting: OrderedDict[str, deque[str]] = OrderedDict()
        self._closed = False

    def put(self, session: str, run_id: str) -> None:
        """Queue ``run_id`` of ``session`` behind that session's earlier runs."""
        with self._ready:
            self._waiting.setdefault(session, deque()).append(run_id)
            self._ready.notify()

    def get(self) -> str | None:
        """The next run id (the first session's first; that session then goes last), waiting
        for one; None once :meth:`close` was called (runs still waiting are left: the server
        aborted them)."""
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            session, runs = self._waiting.popitem(last=False)
            run_id = runs.popleft()
            if runs:
                self._waiting[session] = runs
            return run_id

    def close(self) -> None:
        """Make :meth:`get` return None from now on."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
