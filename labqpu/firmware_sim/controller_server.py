"""``ControllerServer``: the simulator's controller, a ZeroMQ ROUTER to its clients.

The server speaks ``labqpu.drivers.protocol`` exactly as controller firmware would and
delegates the physics to an ``Executor``. Three threads:

* the serving thread reads the connections (``zmtp.ZmtpServer`` speaks ZMTP on them itself,
  so that a whole message is bounded): it decodes each request, answers it at once and never
  blocks on a run;
* the worker thread executes queued runs one at a time, in FIFO order, records their
  outcome in a lock-protected table that the serving thread reads, and answers the requests
  held for a run as it ends;
* the validator thread checks uploaded programs (hash, ``Executor.load``), so a large
  upload never keeps other clients' requests waiting.

Every request gets a reply: malformed messages, unknown ops and bad parameters get typed
error replies (``protocol.ERR_*``), and a failure inside a handler becomes an
``InternalError`` reply instead of a dead loop. A ``run`` carrying an idempotency key
already seen returns the first run's id and is never executed twice. ``hello`` asks a
pluggable ``Authenticator`` (``firmware_sim.auth``) who the client is. With a ``FaultPlan``
(``firmware_sim.faults``, tests only) replies can be dropped, delayed, corrupted or held up.
"""

from __future__ import annotations

import importlib.metadata
import logging
import queue
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from labqpu.drivers.protocol import (
    ERR_ABORTED,
    ERR_BAD_PARAMS,
    ERR_FORBIDDEN,
    ERR_INTERNAL,
    ERR_INVALID_PROGRAM,
    ERR_PROTOCOL,
    ERR_QUEUE_FULL,
    ERR_RUN_EXPIRED,
    ERR_TIME_LIMIT,
    ERR_UNAUTHENTICATED,
    ERR_UNKNOWN_OP,
    ERR_UNKNOWN_PROGRAM,
    ERR_UNKNOWN_RUN,
    ERR_UNKNOWN_SESSION,
    MAX_KEY_CHARS,
    OP_ABORT,
    OP_FETCH,
    OP_HELLO,
    OP_RUN,
    OP_STATUS,
    OP_UPLOAD,
    PROTOCOL_VERSION,
    Frame,
    Request,
    as_wire_arrays,
    decode_request,
    encode_error,
    encode_reply,
    salvage_request_id,
)
from labqpu.errors import ProtocolError
from labqpu.firmware_sim.auth import AuthenticationRefused, Authenticator, LocalAuthenticator
from labqpu.firmware_sim.faults import REPLY_FAULTS, FaultPlan, corrupt
from labqpu.firmware_sim.request_params import (
    MAX_FETCH_WAIT_S,
    RequestError,
    param,
    run_params,
    wait_s,
)
from labqpu.firmware_sim.runs import (
    ABORTED,
    ACTIVE,
    DONE,
    ERROR,
    MAX_RESULT_BYTES,
    QUEUED,
    RUNNING,
    Executor,
    FairQueue,
    FinishedRuns,
    KeyRecord,
    NoRoomForProgramError,
    Program,
    ProgramRefusedError,
    Programs,
    Run,
    program_id_of,
    queue_refusal,
    request_digest,
)
from labqpu.firmware_sim.server_limits import (
    MAX_PENDING_UPLOAD_BYTES,
    MAX_QUEUED_REQUEST_BYTES,
    MESSAGE_LIMITS,
    stated_limits,
)
from labqpu.firmware_sim.sessions import Sessions
from labqpu.firmware_sim.zmtp import Inbound, ZmtpServer, connection_of, listen

__all__ = ["ControllerServer", "Executor", "ProgramRefusedError", "program_id_of"]

logger = logging.getLogger(__name__)


_POLL_INTERVAL_S = 0.05

try:
    _FIRMWARE = f"labqpu-sim {importlib.metadata.version('labqpu')}"
except importlib.metadata.PackageNotFoundError:
    _FIRMWARE = "labqpu-sim (not installed)"


class ControllerServer:
    """A controller at ``tcp://host:port`` (a ROUTER to its clients), backed by an ``Executor``.

    Args:
        executor: the simulated device that validates and executes programs.
        host: interface to bind.
        port: TCP port; 0 binds a random free port (see ``endpoint`` after ``start``).
        name: server name reported by ``hello``.
        max_programs: programs kept; the least recently uploaded or run are evicted beyond it.
        max_program_bytes: bytes of program arrays kept (waveforms, plays ...), those of
            the programs that queued and running runs hold included; the least recently
            uploaded or run are evicted beyond it (never the newest upload). A client that
            runs an evicted program gets ``UnknownProgram`` and uploads it again; an upload
            that queued runs' programs leave no room gets ``QueueFull``.
        max_runs: finished runs whose results are kept; older ones are forgotten.
        max_result_bytes: bytes of finished runs' results kept; beyond them the oldest run of
            the session whose results hold the most is forgotten (``FinishedRuns``).
        max_queued_per_session: most runs one session may have queued or running; a ``run``
            beyond it is refused with ``QueueFull``, so no client can fill the queue.
        max_pending_uploads: most uploads waiting for validation, a quarter of them (at
            least one) from one client connection; beyond, ``upload`` is refused with
            ``QueueFull``, so that one client's flood leaves room for the others.
        max_pending_upload_bytes: most bytes of uploads waiting for validation; beyond them
            ``upload`` is refused with ``QueueFull``.
        authenticator: who a ``hello`` comes from (default: everyone, identity = session).
        faults: armed faults to fire on replies (tests only; None in normal use).

    Use as a context manager (``with ControllerServer(ex) as srv: srv.endpoint``) or
    call ``start()`` and ``stop()``. A server starts once.
    """

    def __init__(
        self,
        executor: Executor,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "ctrl0",
        max_programs: int = 64,
        max_program_bytes: int = 256 * 1024 * 1024,
        max_runs: int = 64,
        max_result_bytes: int = MAX_RESULT_BYTES,
        max_queued_per_session: int = 256,
        max_pending_uploads: int = 16,
        max_pending_upload_bytes: int = MAX_PENDING_UPLOAD_BYTES,
        authenticator: Authenticator | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        if max_programs < 1 or max_runs < 1:
            raise ValueError("max_programs and max_runs must be >= 1")
        self.name = name
        self.host = host
        self.port = port
        self.endpoint = ""
        self._executor = executor
        self._max_queued = max_queued_per_session
        self._max_pending_uploads = max_pending_uploads
        self._max_pending_upload_bytes = max_pending_upload_bytes
        self._authenticator: Authenticator = authenticator or LocalAuthenticator()
        self._faults = faults
        self._uploads: queue.SimpleQueue[tuple[Frame, Request, int] | None] = (
            queue.SimpleQueue())
        self._pending_upload_bytes = 0
        #: Uploads waiting for validation, by client connection (``zmtp.connection_of``).
        self._pending_by_client: Counter[Frame] = Counter()
        self._validated: list[tuple[Frame, list[Frame]]] = []
        self._delayed: list[tuple[float, Frame, list[Frame]]] = []
        self._validator_thread: threading.Thread | None = None
        self._running: Run | None = None
        self._programs = Programs(max_programs, max_program_bytes)
        self._uploads_total = 0
        self._runs_total = 0
        self._runs: dict[str, Run] = {}
        self._sessions = Sessions()
        #: Held replies: (identity, request id, run, deadline, op: ``fetch`` or ``run``).
        self._held: list[tuple[Frame, str, Run, float, str]] = []
        self._wire: ZmtpServer | None = None  # made by start()
        self._finished = FinishedRuns(max_runs, max_result_bytes)
        self._lock = threading.Lock()
        self._queue = FairQueue()
        #: Runs accepted by the request being answered; the serving thread hands them to the
        #: worker only after the reply has left (:meth:`_serve`).
        self._accepted: list[tuple[str, str]] = []  # (session, run id) to queue
        self._stopping = threading.Event()
        self._started_at = 0.0
        self._serve_thread: threading.Thread | None = None
        self._worker_thread: threading.Thread | None = None
        self._handlers: dict[str, Callable[[Request], tuple[dict, dict | None]]] = {
            OP_HELLO: self._hello,
            OP_UPLOAD: self._upload,
            OP_RUN: self._run,
            OP_FETCH: self._fetch,
            OP_ABORT: self._abort,
            OP_STATUS: self._status,
        }

    def __repr__(self) -> str:
        return f"ControllerServer({self.name!r}, endpoint={self.endpoint!r})"

    def __enter__(self) -> ControllerServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Bind the port and start the serving, worker and validator threads.

        Raises:
            RuntimeError: the server was started before.
            OSError: the address cannot be bound (e.g. the port is in use).
        """
        if self._serve_thread is not None:
            raise RuntimeError(f"{self!r} was already started")
        wire = ZmtpServer(listen(self.host, self.port), MESSAGE_LIMITS)
        self.port = wire.port
        connect_host = "127.0.0.1" if self.host in ("0.0.0.0", "*") else self.host
        self.endpoint = f"tcp://{connect_host}:{self.port}"
        self._started_at = time.monotonic()
        self._wire = wire
        self._serve_thread = threading.Thread(
            target=self._serve, args=(wire,), name=f"{self.name}-serve", daemon=True
        )
        self._worker_thread = threading.Thread(
            target=self._work, name=f"{self.name}-worker", daemon=True
        )
        self._validator_thread = threading.Thread(
            target=self._validate, name=f"{self.name}-validator", daemon=True
        )
        self._worker_thread.start()
        self._validator_thread.start()
        self._serve_thread.start()
        logger.info("%s serving on %s", self.name, self.endpoint)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: abort active runs, join the threads, release the port.

        Idempotent. The serving thread closes its sockets on the way out, so once this
        returns the port can be bound again.

        Args:
            timeout_s: bound on the wait for each thread to finish, in seconds.
        """
        if self._serve_thread is None or self._stopping.is_set():
            return
        self._stopping.set()
        self._wire.wake()
        with self._lock:
            dropped = [run for run in self._runs.values() if run.state == QUEUED]
            for run in list(self._runs.values()):
                if run.state in ACTIVE:
                    run.cancel.set()
                if run.state == QUEUED:
                    self._finish(run, ABORTED)
        self._abandon(dropped)
        self._queue.close()
        self._uploads.put(None)
        for thread in self._threads:
            if thread is not None:
                thread.join(timeout_s)
                if thread.is_alive():
                    logger.error("%s: thread %s did not stop within %s s", self, thread, timeout_s)
        logger.info("%s stopped", self.name)

    # -- serving thread ---------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """True while the serving, worker and validator threads run (False before start and
        after stop, and once the serving thread dies)."""
        return all(thread is not None and thread.is_alive() for thread in self._threads)

    @property
    def _threads(self) -> tuple[threading.Thread | None, ...]:
        return self._serve_thread, self._worker_thread, self._validator_thread

    def _serve(self, wire: ZmtpServer) -> None:
        try:
            while not self._stopping.is_set():
                for message in wire.receive(self._poll_timeout_s()):
                    self._serve_one(wire, message)
                wire.expire()
                self._expire_runs()
                for identity, op, reply in self._due_fetches():
                    self._deliver(wire, identity, op, reply)
                with self._lock:
                    validated, self._validated = self._validated, []
                for identity, reply in validated:
                    self._deliver(wire, identity, OP_UPLOAD, reply)
                for identity, reply in self._due_delayed():
                    wire.send(identity, reply)
        except BaseException:
            logger.critical("%s: serving thread died", self.name, exc_info=True)
            raise
        finally:
            wire.shutdown()

    def _serve_one(self, wire: ZmtpServer, message: Inbound) -> None:
        """Answer one message: a refused one with its error, a request through ``_handle``."""
        if message.refusal is not None:
            request_id = salvage_request_id(message.frames[0]) if message.frames else ""
            logger.warning("%s: refused a message: %s", self.name, message.refusal)
            wire.send(message.peer, encode_error(
                request_id, ERR_QUEUE_FULL if message.busy else ERR_PROTOCOL, message.refusal))
            return
        try:
            op, reply = self._handle(message.frames, message.peer)
        except Exception as exc:  # _handle should not raise; the loop outlives it
            logger.exception("%s: request handling failed", self.name)
            op = ""
            reply = encode_error("", ERR_INTERNAL, f"{type(exc).__name__}: {exc}")
        if reply is not None:
            self._deliver(wire, message.peer, op, reply)
        # Started after its reply has left: a worker that starts simulating first holds the
        # GIL while the client waits for its run id.
        for session, run_id in self._accepted:
            self._queue.put(session, run_id)
        self._accepted.clear()

    def _deliver(self, wire: ZmtpServer, identity: bytes, op: str, reply: list[Frame]) -> None:
        """Send a reply to ``op``, unless an armed fault drops, delays, corrupts or holds it."""
        fault = None if self._faults is None else self._faults.take(REPLY_FAULTS, op, self.name)
        if fault is None:
            wire.send(identity, reply)
        elif fault.kind == "delay":
            self._delayed.append((time.monotonic() + fault.delay_s, identity, reply))
        elif fault.kind == "corrupt":
            wire.send(identity, corrupt(reply, fault.mode))
        elif fault.kind == "hang":  # a wedged controller: nobody is answered meanwhile
            self._stopping.wait(fault.duration_s)
            wire.send(identity, reply)
        # "drop": the reply is never sent

    def _due_delayed(self) -> list[tuple[Frame, list[Frame]]]:
        """Delayed replies whose time has come (serving thread only)."""
        now = time.monotonic()
        due = [(identity, reply) for at, identity, reply in self._delayed if at <= now]
        self._delayed = [item for item in self._delayed if item[0] > now]
        return due

    def _poll_timeout_s(self) -> float:
        """Until the next held fetch's or delayed reply's time, at most one poll interval
        (s)."""
        with self._lock:
            deadlines = [held[3] for held in self._held]
        deadlines += [at for at, _, _ in self._delayed]
        if not deadlines:
            return _POLL_INTERVAL_S
        return max(0.0, min(_POLL_INTERVAL_S, min(deadlines) - time.monotonic()))

    def _due_fetches(self) -> list[tuple[Frame, str, list[Frame]]]:
        """(identity, op, reply) of held replies (``fetch``, or ``run`` with ``wait_s``) whose
        run ended or whose wait expired."""
        now = time.monotonic()
        stopping = self._stopping.is_set()
        return self._take_held(lambda run, deadline: run.state not in ACTIVE
                               or deadline <= now or stopping)

    def _take_held(self, due: Callable[[Run, float], bool]
                   ) -> list[tuple[Frame, str, list[Frame]]]:
        """(identity, op, reply) of the held replies for which ``due(run, deadline)``, taken
        off the held list and answered with their run's state (any thread)."""
        out = []
        with self._lock:
            keep = []
            for held in self._held:
                identity, request_id, run, deadline, op = held
                if not due(run, deadline):
                    keep.append(held)
                    continue
                result, arrays = self._fetch_result(run)
                out.append((identity, op, encode_reply(request_id, result, arrays)))
            self._held = keep
        return out

    def _handle(self, frames: list[Frame], identity: Frame) -> tuple[str, list[Frame] | None]:
        """Turn one request (without its identity frame) into its op and reply frames; the
        reply is None for a ``fetch`` held until its run ends and for an ``upload`` handed to
        the validator. Never raises."""
        try:
            request = decode_request(frames)
        except (ProtocolError, RecursionError, MemoryError) as exc:
            logger.warning("%s: malformed request: %s", self.name, exc)
            request_id = salvage_request_id(frames[0]) if frames else ""
            return "", encode_error(request_id, ERR_PROTOCOL, str(exc))
        if request.op not in self._handlers:
            known = ", ".join(sorted(self._handlers))
            return request.op, encode_error(
                request.id, ERR_UNKNOWN_OP, f"unknown op {request.op!r}; known ops: {known}"
            )
        if request.op == OP_UPLOAD:
            size = sum(array.nbytes for array in request.arrays.values())
            refusal = self._admit_upload(identity, size)
            if refusal is not None:
                return request.op, encode_error(request.id, ERR_QUEUE_FULL, refusal)
            self._uploads.put((identity, request, size))
            return request.op, None
        return request.op, self._reply_to(request, identity)

    @property
    def _pending_uploads(self) -> int:
        """Uploads waiting for validation, of all clients."""
        return self._pending_by_client.total()

    def _admit_upload(self, identity: Frame, size: int) -> str | None:
        """Take a place in the validation queue for an upload of ``size`` bytes from
        ``identity`` (whose connection holds at most a quarter of the places); None, or why
        there is none."""
        share = max(1, self._max_pending_uploads // 4)
        client = connection_of(identity)
        with self._lock:
            if self._pending_by_client[client] >= share:
                return (f"{share} uploads of this client are waiting for validation (at most "
                        f"a quarter of the {self._max_pending_uploads} places); retry")
            if (self._pending_uploads >= self._max_pending_uploads
                    or self._pending_upload_bytes + size > self._max_pending_upload_bytes):
                return (f"{self._pending_uploads} uploads ({self._pending_upload_bytes} bytes) "
                        f"are waiting for validation (at most {self._max_pending_uploads}, "
                        f"{self._max_pending_upload_bytes} bytes); retry")
            self._pending_upload_bytes += size
            self._pending_by_client[client] += 1
        return None

    def _reply_to(self, request: Request, identity: Frame) -> list[Frame] | None:
        """Run a decoded request's handler; every failure becomes a typed error reply."""
        try:
            if request.op == OP_FETCH and self._hold(request, identity):
                return None
            if request.op == OP_RUN:
                return self._run_reply(request, identity)
            result, arrays = self._handlers[request.op](request)
            return encode_reply(request.id, result, arrays)
        except RequestError as exc:
            return encode_error(request.id, exc.error_type, exc.message)
        except Exception as exc:  # a handler failure must become a reply, not a dead loop
            logger.exception("%s: %s failed", self.name, request.op)
            return encode_error(request.id, ERR_INTERNAL, f"{type(exc).__name__}: {exc}")

    def _hello(self, request: Request) -> tuple[dict, None]:
        credentials = request.params.get("credentials")
        if credentials is not None and not isinstance(credentials, dict):
            raise RequestError(ERR_BAD_PARAMS,
                                f"hello: 'credentials' must be an object, got {credentials!r}")
        with self._lock:
            # A client that already holds a session keeps it; otherwise it gets a new one.
            session = (request.session if request.session in self._sessions
                       else secrets.token_hex(16))
        try:
            identity = self._authenticator.authenticate(credentials, session)
        except AuthenticationRefused as exc:
            raise RequestError(ERR_UNAUTHENTICATED, f"hello refused: {exc}") from exc
        if not isinstance(identity, str) or not identity:
            raise RequestError(ERR_INTERNAL, f"the authenticator returned no identity: "
                                              f"{identity!r}")
        with self._lock:
            self._sessions.open(session, identity,
                                busy=lambda: {run.session for run in self._runs.values()})
        return {
            "session": session,
            "identity": identity,
            "protocol_versions": [PROTOCOL_VERSION],
            "server": self.name,
            "firmware": _FIRMWARE,
            "capabilities": {**self._executor.capabilities(),
                             "run_wait": {"max_wait_s": MAX_FETCH_WAIT_S},
                             "abort_by_key": True},
            "limits": stated_limits(
                max_programs=self._programs.max_programs,
                max_program_bytes=self._programs.max_bytes, max_runs=self._finished.max_runs,
                max_result_bytes=self._finished.max_bytes,
                max_queued_per_session=self._max_queued,
                max_pending_upload_bytes=self._max_pending_upload_bytes),
        }, None

    def _upload(self, request: Request) -> tuple[dict, None]:
        meta = request.params.get("meta", {})
        if not isinstance(meta, dict):
            raise RequestError(ERR_BAD_PARAMS, f"upload: 'meta' must be an object, got {meta!r}")
        for array in request.arrays.values():
            array.flags.writeable = False
        program_id = program_id_of(request.arrays, meta)
        with self._lock:
            if self._programs.use(program_id) is not None:
                return {"program_id": program_id}, None
        try:
            self._executor.load(request.arrays, meta)
        except ValueError as exc:
            raise RequestError(getattr(exc, "error_type", ERR_INVALID_PROGRAM), str(exc)
                                ) from exc
        with self._lock:
            in_use = {r.program_id: r.program for r in self._runs.values()
                      if r.state in ACTIVE and r.program is not None}
            try:
                evicted = self._programs.add(program_id, Program(request.arrays, meta), in_use)
            except NoRoomForProgramError as exc:
                raise RequestError(ERR_QUEUE_FULL, f"upload: {exc}; upload it again once runs "
                                   "have finished") from exc
            self._uploads_total += 1
        for old in evicted:
            logger.debug("%s: evicted program %s", self.name, old)
        return {"program_id": program_id}, None

    def _run(self, request: Request) -> tuple[dict, None]:
        checked = run_params(request)
        key = request.key
        content = request_digest(checked.program_id, checked.shots, checked.params)
        with self._lock:
            session = self._session_of(request)
            now = time.monotonic()
            previous_key = None if key is None else self._sessions.key(session, key)
            if previous_key is not None:
                if previous_key.run_id is None:
                    raise RequestError(ERR_ABORTED, f"idempotency key {key!r} was aborted "
                                       "before this run request came; nothing runs")
                if previous_key.content != content:
                    raise RequestError(
                        ERR_BAD_PARAMS,
                        f"idempotency key {key!r} was used for a different request (another "
                        "program, shot count or parameters); use a new key")
                previous = self._runs.get(previous_key.run_id)
                if previous is None:
                    raise RequestError(
                        ERR_RUN_EXPIRED,
                        f"idempotency key {key!r} already ran as {previous_key.run_id}, whose "
                        "record is gone")
                logger.info("%s: repeated key %s returns run %s", self.name, key,
                            previous_key.run_id)
                return {"run_id": previous.run_id, "state": previous.state}, None
            program = self._programs.use(checked.program_id)  # a program in use goes last
            if program is None:
                raise RequestError(ERR_UNKNOWN_PROGRAM,
                                   f"no program {checked.program_id!r} loaded")
            if self._stopping.is_set():
                raise RequestError(ERR_INTERNAL, f"{self.name} is shutting down")
            refusal = queue_refusal(self._runs.values(), session, request.header_bytes,
                                    max_queued=self._max_queued,
                                    max_bytes=MAX_QUEUED_REQUEST_BYTES)
            if refusal:
                raise RequestError(ERR_QUEUE_FULL, refusal)
            self._runs_total += 1
            run = Run(
                run_id=uuid.uuid4().hex,
                key=key,
                program=program,
                program_id=checked.program_id,
                shots=checked.shots,
                params=checked.params,
                accepted_at=now,
                session=session,
                time_limit_s=checked.time_limit_s,
                request_bytes=request.header_bytes,
            )
            self._runs[run.run_id] = run
            if key is not None:
                self._sessions.bind(session, key, KeyRecord(run.run_id, content, now))
        self._accepted.append((session, run.run_id))
        return {"run_id": run.run_id, "state": QUEUED}, None

    def _lookup(self, request: Request) -> Run:
        """The run named by the ``run_id`` parameter, if it belongs to the request's session;
        call with the lock held."""
        session = self._session_of(request)
        run_id = param(request.params, "run_id", str, op=request.op)
        run = self._runs.get(run_id)
        if run is None:
            raise RequestError(ERR_UNKNOWN_RUN, f"no run {run_id!r}: unknown, or forgotten (the "
                               f"controller keeps {self._finished.max_runs} finished runs, "
                               f"{self._finished.max_bytes} bytes of results)")
        if run.session != session:
            raise RequestError(ERR_FORBIDDEN, f"run {run_id} belongs to another session")
        return run

    def _session_of(self, request: Request) -> str:
        """The request's session, which ``hello`` must have opened; call with the lock held."""
        if not self._sessions.use(request.session):
            raise RequestError(
                ERR_UNKNOWN_SESSION,
                f"{request.op} needs a session: send hello first"
                + ("" if request.session is None else
                   f" (session {request.session[:8]}... is not one of {self.name}'s)"))
        return request.session

    def _fetch(self, request: Request) -> tuple[dict, dict | None]:
        with self._lock:
            return self._fetch_result(self._lookup(request))

    def _fetch_result(self, run: Run) -> tuple[dict, dict | None]:
        """A fetch's reply for ``run``; lock held."""
        result: dict[str, Any] = {
            "run_id": run.run_id,
            "state": run.state,
            "elapsed_s": run.elapsed_s(time.monotonic()),
        }
        if run.state == ERROR:
            result["error"] = run.error
            result["error_type"] = run.error_type
        return result, run.results if run.state == DONE else None

    def _run_reply(self, request: Request, identity: Frame) -> list[Frame] | None:
        """The reply to ``run``; with ``wait_s`` > 0 (checked before the run is queued) held
        until the run ends or the wait expires, and then a fetch's reply (state, elapsed_s,
        results) with the run id (``_due_fetches``): None while held."""
        wait = wait_s(request, OP_RUN)
        result, arrays = self._run(request)
        if wait == 0:
            return encode_reply(request.id, result, arrays)
        with self._lock:
            run = self._runs.get(result["run_id"])
            if run is not None:
                if run.state in ACTIVE:
                    self._held.append((identity, request.id, run, time.monotonic() + wait,
                                       OP_RUN))
                    return None
                result, arrays = self._fetch_result(run)
        return encode_reply(request.id, result, arrays)

    def _hold(self, request: Request, identity: Frame) -> bool:
        """Hold a ``fetch`` with ``wait_s`` > 0 of a run still active, to be answered when
        the run ends or the wait expires (``_due_fetches``); True if held."""
        wait = wait_s(request, OP_FETCH)
        if wait == 0:
            return False
        with self._lock:
            run = self._lookup(request)
            if run.state not in ACTIVE:
                return False
            self._held.append((identity, request.id, run, time.monotonic() + wait, OP_FETCH))
        return True

    def _abort(self, request: Request) -> tuple[dict, None]:
        with self._lock:
            if "key" in request.params:
                run = self._run_of_key(request)
                if run is None:
                    return {"run_id": None, "state": ABORTED}, None
            else:
                run = self._lookup(request)
            queued = run.state == QUEUED
            if run.state in ACTIVE:
                run.cancel.set()
            if queued:
                self._finish(run, ABORTED)
        self._abandon([run] if queued else [])
        return {"run_id": run.run_id, "state": run.state}, None

    def _run_of_key(self, request: Request) -> Run | None:
        """The run the request's session sent under the idempotency key ``key`` (an abort by
        key: the host never got that run's reply), or None (``Sessions.run_to_abort``)."""
        session = self._session_of(request)
        key = param(request.params, "key", str, op=request.op)
        if len(key) > MAX_KEY_CHARS:
            raise RequestError(ERR_BAD_PARAMS, f"abort: key of {len(key)} characters; at most "
                               f"{MAX_KEY_CHARS}")
        run_id = self._sessions.run_to_abort(session, key)
        if run_id is not None and run_id not in self._runs:
            raise RequestError(ERR_UNKNOWN_RUN, f"key {key!r} ran as {run_id}, whose record "
                               "is gone")
        return None if run_id is None else self._runs[run_id]

    def _abandon(self, runs: list[Run]) -> None:
        """Tell the executor (``abandon(params)``, if it has one) of runs aborted before they
        started, so that runs waiting for them (synchronised runs) stop waiting."""
        hook = getattr(self._executor, "abandon", None)
        for run in runs if hook is not None else ():
            hook(run.params)

    def _status(self, request: Request) -> tuple[dict, None]:
        with self._lock:
            active = [run.state for run in self._runs.values() if run.state in ACTIVE]
            programs = len(self._programs)
            uploads, runs = self._uploads_total, self._runs_total
        return {
            "state": "busy" if active else "idle",
            "queued": active.count(QUEUED),
            "uptime_s": time.monotonic() - self._started_at,
            "programs": programs,
            "uploads_total": uploads,
            "runs_total": runs,
        }, None

    # -- validator thread -------------------------------------------------------------

    def _validate(self) -> None:
        """Answer uploads, one at a time, off the serving thread; wake it for each reply."""
        while (item := self._uploads.get()) is not None:
            identity, request, size = item
            reply = self._reply_to(request, identity)
            with self._lock:
                self._pending_upload_bytes -= size
                client = connection_of(identity)
                self._pending_by_client[client] -= 1
                if not self._pending_by_client[client]:
                    del self._pending_by_client[client]
                if reply is not None:
                    self._validated.append((identity, reply))
            self._wire.wake()

    # -- worker thread ----------------------------------------------------------------

    def _work(self) -> None:
        while (run_id := self._queue.get()) is not None:
            with self._lock:
                run = self._runs.get(run_id)
                if run is None or run.state != QUEUED:
                    continue
                run.state = RUNNING
                run.started_at = time.monotonic()
                self._running = run
            self._execute(run)
            if self._faults is None:
                self._answer_held(run)
            else:  # the serving thread answers, so that faults act on these replies too
                self._wire.wake()

    def _answer_held(self, run: Run) -> None:
        """Answer the requests held for ``run`` (``run`` with ``wait_s``, ``fetch``) as it
        ends, from this thread: waking the serving thread to do it took a thread hand-off."""
        for identity, _, reply in self._take_held(lambda held, _deadline: held is run):
            self._wire.send(identity, reply)

    def _execute(self, run: Run) -> None:
        program = run.program
        try:
            results = self._executor.execute(
                program.arrays, program.meta, run.shots, run.params, run.cancel
            )
            results = as_wire_arrays(results)
        except Exception as exc:  # the executor's failure is the run's outcome
            logger.info("%s: run %s failed: %s: %s", self.name, run.run_id, type(exc).__name__, exc)
            with self._lock:
                if run.expired:
                    self._finish_expired(run)
                elif run.cancel.is_set():
                    self._finish(run, ABORTED)
                else:
                    run.error = str(exc)
                    run.error_type = getattr(exc, "error_type", type(exc).__name__)
                    self._finish(run, ERROR)
            return
        with self._lock:
            if run.expired:
                self._finish_expired(run)
            elif run.cancel.is_set():
                self._finish(run, ABORTED)
            else:
                run.results = results
                self._finish(run, DONE)

    def _expire_runs(self) -> None:
        """Stop the running run once it played past its time limit (serving thread, at every
        poll, so within one poll interval of the limit)."""
        with self._lock:
            run = self._running
            if run is None or run.state != RUNNING or run.time_limit_s is None \
                    or run.cancel.is_set() or run.started_at is None \
                    or time.monotonic() - run.started_at <= run.time_limit_s:
                return
            run.expired = True
            run.cancel.set()
        logger.warning("%s: run %s passed its time limit of %s s; stopping it", self.name,
                       run.run_id, run.time_limit_s)

    def _finish_expired(self, run: Run) -> None:
        """Record a run stopped at its time limit; lock held."""
        run.error = f"run {run.run_id} was stopped at its time limit of {run.time_limit_s} s"
        run.error_type = ERR_TIME_LIMIT
        self._finish(run, ERROR)

    def _finish(self, run: Run, state: str) -> None:
        """Record a final state and forget the oldest finished runs; lock held."""
        run.state = state
        run.finished_at = time.monotonic()
        run.program = None  # its results are kept, its program is not
        for run_id in self._finished.add(run):
            del self._runs[run_id]

