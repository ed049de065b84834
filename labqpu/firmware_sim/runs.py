"""The controller's records of programs and runs, the executor that plays them, and the
content ids that name them."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["ABORTED", "ACTIVE", "DONE", "ERROR", "MAX_RESULT_BYTES", "QUEUED", "RUNNING",
           "Executor", "FairQueue", "FinishedRuns", "KeyRecord", "NoRoomForProgramError",
           "Program", "ProgramRefusedError", "Programs", "Run", "program_id_of",
           "queue_refusal", "request_digest"]

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
ERROR = "error"
ABORTED = "aborted"
ACTIVE = (QUEUED, RUNNING)
#: Most bytes of finished runs' results a controller keeps for their clients to fetch (all
#: sessions). One run's results fit a reply frame (its IQ at most 256 MiB, its bits an eighth
#: of that), so at least three of the largest fit; unbounded, a client that ran such runs and
#: never fetched them grew the simulator by ~300 MB a run, up to 64 of them.
MAX_RESULT_BYTES = 1 << 30


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
    program: Program | None  # None once finished
    program_id: str
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
    #: Bytes of the run's request header: what its parameters take to hold, near enough.
    request_bytes: int = 0

    def elapsed_s(self, now: float) -> float:
        """Seconds since the run was accepted, frozen once it finished."""
        end = now if self.finished_at is None else self.finished_at
        return end - self.accepted_at


def queue_refusal(runs: Iterable[Run], session: str, request_bytes: int, *, max_queued: int,
                  max_bytes: int) -> str | None:
    """Why a run of ``session`` whose request holds ``request_bytes`` may not join ``runs``
    (those queued or running count): the session has ``max_queued`` of them, or their
    requests would hold more than ``max_bytes`` of parameters together, or one session more
    than a quarter of that (a review's client queued 256 runs of 900 kB parameters per session,
    ~230 MB each, unbounded); None when it may."""
    count = mine = held = 0
    for run in runs:
        if run.state in ACTIVE:
            held += run.request_bytes
            if run.session == session:
                count += 1
                mine += run.request_bytes
    if count >= max_queued:
        return (f"this session already has {count} runs queued or running (limit "
                f"{max_queued}); wait for some to finish")
    if held + request_bytes > max_bytes or mine + request_bytes > max_bytes // 4:
        return (f"the runs queued or running would hold {held + request_bytes} bytes of "
                f"parameters, {mine + request_bytes} of them this session's (at most "
                f"{max_bytes}, and a quarter of that for one session); wait for some to "
                "finish")
    return None


@dataclass(frozen=True)
class KeyRecord:
    """What an idempotency key ran: the run, a digest of the request, when (monotonic s); no
    run and no digest for a key aborted before a run came under it."""

    run_id: str | None
    content: str | None
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


class NoRoomForProgramError(Exception):
    """An upload that the programs of queued and running runs leave no room (bytes)."""


class Programs:
    """The programs a controller holds by id, least recently uploaded or run first, at most
    ``max_programs`` of them holding at most ``max_bytes`` (s. ``ControllerServer``). Not
    thread-safe: the server's lock guards it."""

    def __init__(self, max_programs: int, max_bytes: int) -> None:
        self.max_programs = max_programs
        self.max_bytes = max_bytes
        self._held: OrderedDict[str, Program] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def use(self, program_id: str) -> Program | None:
        """The program ``program_id`` (None: not held), now the most recently used."""
        program = self._held.get(program_id)
        if program is not None:
            self._held.move_to_end(program_id)
        return program

    def add(self, program_id: str, program: Program, in_use: Mapping[str, Program]
            ) -> list[str]:
        """Hold ``program`` and evict the least recently used beyond the bounds, counting into
        the bytes the programs ``in_use`` (id -> program of queued and running runs, whose
        memory evicting them does not free, so they are evicted for the count only); returns
        the evicted ids. A program in use by this id is held again as it is, taking no more
        memory. Alone it is kept whatever its size.

        Raises:
            NoRoomForProgramError: the programs in use leave it no room; nothing was changed.
        """
        program = in_use.get(program_id, program)
        pinned = {id(p): p.nbytes for p in in_use.values()}
        if pinned and sum((pinned | {id(program): program.nbytes}).values()) > self.max_bytes:
            raise NoRoomForProgramError(
                f"the programs of queued and running runs hold {sum(pinned.values())} bytes; "
                f"with this one ({program.nbytes} bytes) that passes the limit of "
                f"{self.max_bytes} bytes")
        self._held[program_id] = program
        total = sum((pinned | {id(p): p.nbytes for p in self._held.values()}).values())
        evicted = []
        while len(self._held) > 1:
            if len(self._held) > self.max_programs:
                old_id = next(iter(self._held))
            elif total > self.max_bytes:  # the oldest whose eviction frees memory
                old_id = next(k for k, p in self._held.items() if id(p) not in pinned)
            else:
                break
            old = self._held.pop(old_id)
            if id(old) not in pinned:
                total -= old.nbytes
            evicted.append(old_id)
        return evicted


class FinishedRuns:
    """The finished runs a controller keeps, oldest first: at most ``max_runs``, whose results
    hold at most ``max_bytes`` together. Beyond either bound the oldest run of the session that
    holds the most (runs, or bytes of results) is forgotten: a client that leaves many or large
    results unfetched loses its own first, not its neighbours' (a review's neighbour running
    thousands of 1-shot runs pushed out a user's finished run while the user's fetch was
    retried, when the count forgot the oldest run of anyone). The newest is kept whatever its
    size. Not thread-safe: the server's lock guards it."""

    def __init__(self, max_runs: int, max_bytes: int) -> None:
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        #: Run id -> (session, bytes of its results), oldest first.
        self._kept: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.nbytes = 0

    def add(self, run: Run) -> list[str]:
        """Keep the finished ``run``; returns the ids of the runs forgotten to make room."""
        size = sum(array.nbytes for array in run.results.values())
        self._kept[run.run_id] = (run.session, size)
        self.nbytes += size
        forgotten = []
        while len(self._kept) > self.max_runs or (self.nbytes > self.max_bytes
                                                  and len(self._kept) > 1):
            run_id = self._largest_holders_oldest(by_bytes=len(self._kept) <= self.max_runs)
            self.nbytes -= self._kept.pop(run_id)[1]
            forgotten.append(run_id)
        return forgotten

    def _largest_holders_oldest(self, *, by_bytes: bool) -> str:
        """The oldest run, but the newest, of the session whose kept runs (the newest
        included) are the most, or whose results hold the most bytes, among the sessions with
        such a run; of sessions that hold as much, the one with the oldest run."""
        held: Counter[str] = Counter()
        for session, size in self._kept.values():
            held[session] += size if by_bytes else 1
        older = list(self._kept.items())[:-1]
        top = max(dict.fromkeys(session for _, (session, _) in older), key=held.__getitem__)
        return next(run_id for run_id, (session, _) in older if session == top)


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
