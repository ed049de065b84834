"""``ControllerClient``: the host side of the controller wire protocol.

The client speaks ``labqpu.drivers.protocol`` over a ZeroMQ DEALER socket and recovers
from a silent or restarted controller with the Lazy Pirate pattern: when no reply arrives
within ``timeout_s`` it closes the socket, opens a fresh one and resends the very same
request (same request id, same idempotency key), at most ``retries`` times. Because a
retried ``run`` may reach the controller twice, every ``run`` carries an idempotency key
and the controller executes a key once. A client that can tell when its controller is gone
(``peer_failure``: the embedded simulator's process has exited) asks while it waits, and fails
the request at once instead of after its retries.

Typical use::

    with ControllerClient("tcp://127.0.0.1:5555", timeout_s=2.0) as ctrl:
        ctrl.hello()
        program_id = ctrl.upload({"waveforms": table}, {"channels": ["d0"]})
        run_id = ctrl.run(program_id, shots=1000)
        result, arrays = ctrl.wait(run_id, timeout_s=30.0)
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import numpy as np
import zmq

from labqpu.drivers.protocol import (
    ERR_UNAUTHENTICATED,
    ERR_UNKNOWN_SESSION,
    OP_ABORT,
    OP_FETCH,
    OP_HELLO,
    OP_RUN,
    OP_STATUS,
    OP_UPLOAD,
    PROTOCOL_VERSION,
    SESSION_OPS,
    Frame,
    Reply,
    decode_reply,
    encode_request,
)
from labqpu.errors import (
    AuthenticationError,
    HardwareUnavailableError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    JobCancelledError,
    ProtocolError,
)

__all__ = ["ControllerClient"]

logger = logging.getLogger(__name__)

_WAIT_FIRST_BACKOFF_S = 0.001
_WAIT_MAX_BACKOFF_S = 0.02
#: Longest the client asks the controller to hold a fetch or a run's reply (s); it bounds how
#: late a cancel is noticed.
_HOLD_S = 0.25
#: How often a client with ``peer_failure`` asks it while it waits for a reply (s).
_PEER_CHECK_S = 0.1
#: How often a wait for a reply that a cancel may end looks at it (s).
_CANCEL_CHECK_S = 0.05
#: How long (s) the abort of a cancelled run waits for the controller, once: a controller that
#: answered no fetch meanwhile is not waited for again (it stops the run at its time limit).
CANCEL_ABORT_S = 1.0
#: How long (s) the client polls for a reply without sleeping before it blocks (``spin_s``).
DEFAULT_SPIN_S = 0.002
#: The longest ``spin_s`` a client takes (s): beyond it a busy wait costs more than it saves.
MAX_SPIN_S = 0.05
#: Gives the CPU to another runnable thread: ``os.sched_yield`` where the system has it (Unix),
#: else a zero sleep (which releases the interpreter lock and lets the OS switch threads).
_yield_cpu = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


class ControllerClient:
    """Client of one controller (real firmware or ``firmware_sim``) at a ZeroMQ endpoint.

    Thread-safe: a lock serialises requests, so one request is outstanding at a time.

    Args:
        endpoint: ZeroMQ endpoint of the controller, e.g. ``"tcp://10.0.0.5:5555"``.
        timeout_s: bound on the wait for each reply attempt, in seconds.
        retries: resends after a timed-out attempt, each on a fresh socket; a request
            therefore fails after at most ``(retries + 1) * timeout_s`` seconds.
        context: ZeroMQ context to use; when None the client creates one and terminates
            it on ``close()``.
        credentials: JSON-able object sent with ``hello`` for the controller's authenticator
            (the simulator's default allows everyone and needs none).
        peer_failure: says why the controller can no longer answer (its process exited), or
            None while it may; asked every 0.1 s while a reply is awaited (after the busy wait
            of ``spin_s``), so that a request to a dead controller raises
            ``HardwareUnavailableError`` with that reason at once rather than
            ``InstrumentTimeoutError`` after its retries. None: not asked.
        name: what errors and log lines call the controller, with its endpoint (``"ctrl1
            (tcp://10.0.0.5:5555)"``; a rack names it as its lab file does); None: the
            endpoint alone.
        session: a session of an earlier client to go on with (its first ``hello`` keeps it
            while the controller knows it), so that the runs that client left stay this
            one's to abort; None: a new session.
        spin_s: how long (s, 0 to ``MAX_SPIN_S``) the client polls for each reply without
            sleeping before it blocks on the socket, yielding the CPU between polls (so a
            thread woken onto this CPU, such as a simulator's on the same host, is not held
            up).
            A thread blocked on a socket takes tens of microseconds to wake when the reply
            comes (on a virtual machine often ~0.1 ms); a short run's reply, held to its end,
            usually comes within the default 2 ms and is taken as it arrives. The cost is
            one CPU core busy for at most ``spin_s`` per request (a wait for a long run makes
            a held ``fetch`` every 0.25 s: ~1 % of a core at 2 ms); 0 turns it off.

    Raises:
        ValueError: ``timeout_s`` not positive, ``retries`` negative or ``spin_s`` outside
            0 to ``MAX_SPIN_S``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 2,
        context: zmq.Context | None = None,
        credentials: Mapping[str, Any] | None = None,
        peer_failure: Callable[[], str | None] | None = None,
        name: str | None = None,
        session: str | None = None,
        spin_s: float = DEFAULT_SPIN_S,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 s, got {timeout_s!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if isinstance(spin_s, bool) or not 0 <= spin_s <= MAX_SPIN_S:  # also NaN
            raise ValueError(f"spin_s must be 0 to {MAX_SPIN_S} s, got {spin_s!r}")
        self.endpoint = endpoint
        #: How errors and log lines name the controller (``name``, see above).
        self.label = endpoint if name is None else f"{name} ({endpoint})"
        self.timeout_s = float(timeout_s)
        self.spin_s = float(spin_s)
        self.retries = int(retries)
        self._credentials = None if credentials is None else dict(credentials)
        self._peer_failure = peer_failure
        self._own_context = context is None
        self._context: zmq.Context = zmq.Context() if context is None else context
        self._socket: zmq.Socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._session: str | None = session
        #: Keys of ``run`` requests whose reply never came and whose abort by key was not
        #: confirmed (a frozen controller takes neither until it reads again):
        #: :meth:`abort_unconfirmed` asks again.
        self.unconfirmed_keys: list[str] = []
        self._session_lock = threading.RLock()
        #: Whether the controller's ``hello`` states ``abort_by_key``.
        self._aborts_by_key = False

    def __repr__(self) -> str:
        return (f"ControllerClient({self.endpoint!r}, timeout_s={self.timeout_s}, "
                f"spin_s={self.spin_s})")

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket and, if the client created it, terminate the context.

        Idempotent. Waits for a request in flight to finish (bounded by its timeouts).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop_socket()
            if self._own_context:
                self._context.term()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closed

    # -- operations -----------------------------------------------------------------

    def hello(self, *, cancel: threading.Event | None = None) -> dict[str, Any]:
        """Greet the controller and check that it speaks ``PROTOCOL_VERSION``.

        The first ``hello`` opens this client's session; later ones keep it (the controller
        returns the same session while it knows it). Runs belong to the session that started
        them: only this client can fetch or abort them.

        Returns:
            the controller's description: ``protocol_versions``, ``server``,
            ``firmware``, ``capabilities`` (channels, sample_rate_hz, ...) and ``identity``
            (who the controller's authenticator says this client is).

        ``cancel`` set while the reply is awaited ends the wait (``JobCancelledError``).

        Raises:
            ProtocolError: the controller does not speak this protocol version.
            AuthenticationError: the controller refused the credentials; no session opened.
        """
        params = {} if self._credentials is None else {"credentials": self._credentials}
        result = self._request(OP_HELLO, params, cancel=cancel).result
        versions = result.get("protocol_versions")
        if not isinstance(versions, list) or PROTOCOL_VERSION not in versions:
            raise ProtocolError(
                f"controller speaks protocol versions {versions!r}, "
                f"this client speaks {PROTOCOL_VERSION}",
                instrument=self.label,
                command=OP_HELLO,
            )
        session = result.get("session")
        if not isinstance(session, str) or not session:
            raise ProtocolError("hello reply carries no session", instrument=self.label,
                                command=OP_HELLO)
        self._session = session
        capabilities = result.get("capabilities")
        self._aborts_by_key = isinstance(capabilities, dict) \
            and capabilities.get("abort_by_key") is True
        return result

    def upload(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
        """Upload a program; uploading the same program again is harmless.

        Args:
            arrays: the program's arrays (waveform table, per-channel event arrays, ...).
            meta: JSON-able description the controller needs to interpret the arrays.

        Returns:
            the program id (derived from the content by the controller).

        Raises:
            InstrumentCommandError: the controller rejected the program
                (``remote_type == "InvalidProgram"``).
        """
        reply = self._request(OP_UPLOAD, {"meta": dict(meta)}, arrays)
        return self._result_str(reply, "program_id", OP_UPLOAD)

    def run(
        self,
        program_id: str,
        shots: int,
        *,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        time_limit_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> str:
        """Queue a run of an uploaded program; returns without waiting for it.

        Args:
            program_id: id returned by ``upload``.
            shots: number of repetitions, >= 1.
            params: run-time parameters passed to the controller's executor.
            key: idempotency key; the controller executes a key once, so sending the same
                key again returns the first run's id. Defaults to a fresh uuid.
            time_limit_s: the controller stops the run once it has played this long (s) and
                reports it failed (``TimeLimitExceeded``), even if this client is gone.
            cancel: set while the reply is awaited, it ends the wait.

        Returns:
            the run id.

        Raises:
            ValueError: ``shots`` < 1; nothing is sent.
            InstrumentCommandError: unknown program or refused parameters.
            JobCancelledError, InstrumentTimeoutError: ``cancel`` was set, or no reply came;
                the run the controller may have accepted is aborted by its key where the
                controller's ``hello`` states ``abort_by_key`` (:meth:`_abort_unanswered`),
                and the message says what came of it.
        """
        reply = self._send_run(program_id, shots, params, key, time_limit_s, {}, cancel)
        return self._result_str(reply, "run_id", OP_RUN)

    @property
    def max_hold_s(self) -> float:
        """The longest hold (s) this client asks of a controller: 0.25 s, and at most half its
        request timeout, so that a held reply always comes back within it."""
        return min(_HOLD_S, self.timeout_s / 2)

    def run_held(
        self,
        program_id: str,
        shots: int,
        *,
        wait_s: float,
        params: Mapping[str, Any] | None = None,
        key: str | None = None,
        time_limit_s: float | None = None,
        cancel: threading.Event | None = None,
    ) -> tuple[str, tuple[dict[str, Any], dict[str, np.ndarray]] | None]:
        """:meth:`run`, with the reply held by the controller until the run ends or ``wait_s``
        passes (s, at most :attr:`max_hold_s`, and within the ``run_wait.max_wait_s`` the
        controller's ``hello`` states), for a controller whose capabilities state ``run_wait``
        (docs/protocol.md, ``run``): a short run's results come back with its run id, without
        a ``fetch``.

        Returns:
            (run id, (result, arrays)) when the run is done, as :meth:`wait` returns them;
            (run id, None) while it is still queued or running (then :meth:`wait` for it).

        Raises:
            ValueError: ``shots`` < 1 or ``wait_s`` not in (0, :attr:`max_hold_s`]; nothing is
                sent.
            InstrumentCommandError: unknown program or refused parameters; the run failed
                or was aborted.
            JobCancelledError, InstrumentTimeoutError: as :meth:`run`.
        """
        if not 0 < wait_s <= self.max_hold_s:
            raise ValueError(f"wait_s must be in (0, {self.max_hold_s}] s, got {wait_s!r}")
        reply = self._send_run(program_id, shots, params, key, time_limit_s,
                               {"wait_s": float(wait_s)}, cancel)
        run_id = self._result_str(reply, "run_id", OP_RUN)
        state = self._result_str(reply, "state", OP_RUN)
        if self._ended(run_id, state, reply.result):
            return run_id, (reply.result, reply.arrays)
        return run_id, None

    def _send_run(self, program_id: str, shots: int, params: Mapping[str, Any] | None,
                  key: str | None, time_limit_s: float | None, extra: dict[str, Any],
                  cancel: threading.Event | None) -> Reply:
        """Send a ``run`` request (``extra``: further request parameters) and return its reply;
        ``ValueError`` for ``shots`` < 1, before anything is sent. A reply that does not come
        (a cancel, a timeout) leaves a run the controller may have accepted, whose id is not
        known: it is aborted by its key (:meth:`_abort_unanswered`)."""
        shots = operator.index(shots)
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        request_params: dict[str, Any] = {"program_id": program_id, "shots": shots,
                                          "params": dict(params or {}), **extra}
        if time_limit_s is not None:
            request_params["time_limit_s"] = float(time_limit_s)
        key = key or uuid.uuid4().hex
        try:
            return self._request(OP_RUN, request_params, key=key, cancel=cancel)
        except JobCancelledError as exc:
            raise JobCancelledError(f"{exc}; {self._abort_unanswered(key)}") from exc
        except InstrumentTimeoutError as exc:
            raise InstrumentTimeoutError(f"{exc.detail}; {self._abort_unanswered(key)}",
                                         instrument=exc.instrument, command=exc.command
                                         ) from exc

    def _abort_unanswered(self, key: str) -> str:
        """Abort the run of a ``run`` request sent under ``key`` whose reply never came,
        asking the controller once for :data:`CANCEL_ABORT_S` (it had not answered the run);
        returns what came of it and never raises ``InstrumentError``. After a cancel the abort
        goes on the connection the run request went on, so a frozen controller reads it after
        that request once it reads again; after a timeout that connection was replaced, and a
        frozen controller does not take a new one until it reads again: the key is then kept
        in ``unconfirmed_keys`` (:meth:`abort_unconfirmed`; the run stops at its time limit
        in any case). A controller that states
        ``abort_by_key`` stops the run it accepted under the key, or, when the request has not
        reached it yet, refuses it when it comes (docs/protocol.md, ``abort``)."""
        if self._session is None:  # no session, so no run request was sent
            return "no run was started"
        if not self._aborts_by_key:
            return ("its run id never came and the controller aborts no run by its key: a run "
                    "it accepted stops at its time limit")
        try:
            state = self._abort_by_key(key)
        except InstrumentError as exc:
            logger.warning("%s: could not abort the run sent under key %s: %s", self.label,
                           key, exc)
            self.unconfirmed_keys.append(key)
            return (f"the abort of the run sent under key {key} could not be confirmed ({exc}): "
                    "it is asked again before this rack's next run on the controller, and a "
                    "run the controller accepted stops at its time limit")
        return f"the run sent under key {key} aborted (controller reports {state!r})"

    def _abort_by_key(self, key: str) -> object:
        """Ask the controller once, for :data:`CANCEL_ABORT_S` (s), to abort the run sent under
        ``key``; returns the state it reports (``InstrumentError`` when it does not answer)."""
        return self._request(OP_ABORT, {"key": key}, timeout_s=CANCEL_ABORT_S).result.get("state")

    @property
    def session(self) -> str | None:
        """The session ``hello`` opened (None before the first)."""
        return self._session

    def abort_unconfirmed(self) -> None:
        """Ask again for the aborts by key that were not confirmed (``unconfirmed_keys``),
        once each for ``CANCEL_ABORT_S`` (s); those confirmed are forgotten, the others kept.
        Logs what came of each; never raises ``InstrumentError``."""
        for key in list(self.unconfirmed_keys):
            try:
                state = self._abort_by_key(key)
            except InstrumentError as exc:
                logger.warning("%s: the run sent under key %s: its abort is still not "
                               "confirmed (%s)", self.label, key, exc)
                continue
            self.unconfirmed_keys.remove(key)
            logger.warning("%s: the run sent under key %s, whose abort was not confirmed, is "
                           "aborted now (controller reports %r)", self.label, key, state)

    def fetch(self, run_id: str, *, wait_s: float = 0.0, cancel: threading.Event | None = None
              ) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
        """Ask for a run's state and, once done, its results.

        With ``wait_s`` > 0 (s, at most 1) the controller holds its reply until the run ends
        or ``wait_s`` passes, so a waiting client hears of the end at once, without polling.
        ``cancel`` set while the reply is awaited ends the wait (``JobCancelledError``; a
        late reply is discarded).

        Returns:
            (state, result, arrays): state is ``queued``, ``running``, ``done``, ``error``
            or ``aborted``; result holds ``elapsed_s`` (seconds since the run was
            accepted) and, on error, ``error`` and ``error_type``; arrays are the run's
            results when done (views on the received message, no copy).
        """
        params: dict[str, Any] = {"run_id": run_id}
        if wait_s > 0:
            params["wait_s"] = float(wait_s)
        reply = self._request(OP_FETCH, params, cancel=cancel)
        state = self._result_str(reply, "state", OP_FETCH)
        return state, reply.result, reply.arrays

    def wait(
        self, run_id: str, timeout_s: float, *, cancel: threading.Event | None = None,
        waited_s: float = 0.0,
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Wait for a run to end and return its results.

        Each ``fetch`` asks the controller to hold its reply until the run ends (at most
        0.25 s, and half the request timeout), so the end is heard at once, without polling.
        A controller that answers at once instead is asked again after a growing backoff.

        Args:
            run_id: id returned by ``run``.
            timeout_s: deadline for the run to finish, in seconds. A fetch started before
                the deadline may overrun it by at most one request bound.
            cancel: when this event is set, the run is aborted and the wait ends with the
                run's ``aborted`` state.
            waited_s: how long (s) the caller has already waited for the run (a ``run``
                reply held, :meth:`run_held`), counted in ``timeout_s``.

        Returns:
            (result, arrays) of the finished run.

        Raises:
            InstrumentCommandError: the run failed (the executor's message and error
                type) or was aborted.
            InstrumentTimeoutError: the run had not finished by the deadline.
        """
        deadline = time.monotonic() + timeout_s - waited_s
        backoff_s = _WAIT_FIRST_BACKOFF_S
        while True:
            if cancel is not None and cancel.is_set():  # set while the run's reply was held
                self.abort(run_id, timeout_s=CANCEL_ABORT_S)
                cancel = None
            hold_s = min(max(deadline - time.monotonic(), 0.0), self.max_hold_s)
            asked = time.monotonic()
            try:
                state, result, arrays = self.fetch(run_id, wait_s=hold_s, cancel=cancel)
            except JobCancelledError as exc:  # the controller had not answered the fetch
                outcome = self.abort_quietly(run_id, timeout_s=CANCEL_ABORT_S)
                raise JobCancelledError(f"{exc}; {outcome}") from exc
            except HardwareUnavailableError:
                raise  # the controller is gone (peer_failure): no run plays there to abort
            except InstrumentError as exc:
                # The transport failed while the run may still be playing: stop it, and say
                # whether the controller confirmed that.
                outcome = self.abort_quietly(run_id)
                raise type(exc)(f"{exc.detail}; {outcome}", instrument=exc.instrument,
                                command=exc.command) from exc
            if self._ended(run_id, state, result):
                return result, arrays
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                outcome = self.abort_quietly(run_id)
                raise InstrumentTimeoutError(
                    f"run {run_id} still {state} after {timeout_s} s; {outcome}",
                    instrument=self.label,
                    command=OP_FETCH,
                )
            # A controller that held the fetch answered when the run ended or the hold expired;
            # one that answered at once (it does not hold fetches) gets a growing backoff.
            held = time.monotonic() - asked >= hold_s / 2
            pause_s = 0.0 if held else min(backoff_s, remaining_s)
            if cancel is None:
                time.sleep(pause_s)
            elif cancel.is_set() or cancel.wait(pause_s):
                self.abort(run_id, timeout_s=CANCEL_ABORT_S)
                cancel = None
            backoff_s = min(1.5 * backoff_s, _WAIT_MAX_BACKOFF_S)

    def _ended(self, run_id: str, state: str, result: Mapping[str, Any]) -> bool:
        """True if a run in ``state`` is done, False while it is queued or running.

        Raises:
            InstrumentCommandError: the run failed (the executor's message and error type)
                or was aborted.
        """
        if state == "done":
            return True
        if state == "error":
            raise InstrumentCommandError(
                f"run {run_id} failed: {result.get('error', 'no message')}",
                instrument=self.label,
                command=OP_RUN,
                remote_type=str(result.get("error_type", "")),
            )
        if state == "aborted":
            raise InstrumentCommandError(
                f"run {run_id} was aborted",
                instrument=self.label,
                command=OP_RUN,
                remote_type="aborted",
            )
        return False

    def abort_quietly(self, run_id: str, *, timeout_s: float | None = None) -> str:
        """Best-effort abort of a run we stop waiting for, so it does not keep playing; returns
        what happened (for the error the caller raises) and never raises ``InstrumentError``.
        With ``timeout_s`` (s) the controller is asked once and waited for that long, instead
        of ``retries + 1`` times ``timeout_s`` of the client."""
        try:
            state = self.abort(run_id, timeout_s=timeout_s)
        except InstrumentError as exc:
            logger.warning("%s: could not abort run %s: %s", self.label, run_id, exc)
            return f"the abort of run {run_id} could not be confirmed ({exc}): it may still play"
        if state == "running":  # docs/protocol.md, abort: asked to stop, it ends `aborted`
            return (f"run {run_id} aborted: the controller, asked to stop it, reports it still "
                    "running (it stops, and its results are discarded)")
        return f"run {run_id} aborted (controller reports {state!r})"

    def abort(self, run_id: str, *, timeout_s: float | None = None) -> str:
        """Abort a run: a queued run never starts, a running one is asked to stop. With
        ``timeout_s`` (s) the request is sent once and waited for that long (default: the
        client's ``timeout_s``, ``retries`` more times).

        Returns:
            the run's state after the request (``aborted``, or ``running`` while the
            controller winds it down, or its final state if it had already finished).
        """
        reply = self._request(OP_ABORT, {"run_id": run_id}, timeout_s=timeout_s)
        return self._result_str(reply, "state", OP_ABORT)

    def status(self) -> dict[str, Any]:
        """Heartbeat: ``state`` (``idle``/``busy``), ``queued``, ``uptime_s``, ``programs``
        (held now), ``uploads_total`` and ``runs_total`` (since start)."""
        return self._request(OP_STATUS, {}).result

    # -- transport --------------------------------------------------------------------

    def _result_str(self, reply: Reply, name: str, op: str) -> str:
        value = reply.result.get(name)
        if not isinstance(value, str):
            raise ProtocolError(
                f"reply lacks string field {name!r}: {reply.result!r}",
                instrument=self.label,
                command=op,
            )
        return value

    def _open_socket(self) -> zmq.Socket:
        socket = self._context.socket(zmq.DEALER)
        try:
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDTIMEO, max(1, round(self.timeout_s * 1000)))
            socket.connect(self.endpoint)
        except zmq.ZMQError as exc:
            socket.close(linger=0)
            raise InstrumentError(
                f"cannot connect: {exc}", instrument=self.label, command="connect"
            ) from exc
        return socket

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _request(
        self,
        op: str,
        params: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray] | None = None,
        key: str | None = None,
        *,
        cancel: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request, Lazy Pirate style, and return its successful reply.

        Ops on runs carry this client's session, opened by ``hello`` on first need. If the
        controller no longer knows the session (it restarted), a new one is opened and the
        request is sent once more. ``cancel`` and ``timeout_s``: as :meth:`_send`.
        """
        bounds = {"cancel": cancel, "timeout_s": timeout_s}
        if op == OP_HELLO:
            return self._send(op, params, arrays, key, self._session, **bounds)
        if op not in SESSION_OPS:
            return self._send(op, params, arrays, key, None, **bounds)
        with self._session_lock:
            if self._session is None:
                self.hello(cancel=cancel)
        try:
            return self._send(op, params, arrays, key, self._session, **bounds)
        except InstrumentCommandError as exc:
            if exc.remote_type != ERR_UNKNOWN_SESSION:
                raise
            logger.warning("%s: session unknown to the controller (restarted?); opening a "
                           "new one", self.label)
            with self._session_lock:
                self._session = None
                self.hello(cancel=cancel)
            return self._send(op, params, arrays, key, self._session, **bounds)

    def _send(self, op: str, params: Mapping[str, Any],
              arrays: Mapping[str, np.ndarray] | None, key: str | None,
              session: str | None, *, cancel: threading.Event | None = None,
              timeout_s: float | None = None) -> Reply:
        """Send the request and wait for its reply, ``retries`` more times after a timeout of
        ``timeout_s``; with ``timeout_s`` given (s), once. ``cancel`` set while waiting raises
        ``JobCancelledError`` (the reply, should it come, is discarded as a stale one)."""
        request_id, frames = encode_request(op, params, arrays, key=key, session=session)
        attempts = self.retries + 1 if timeout_s is None else 1
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if self._closed:
                raise InstrumentError("client is closed", instrument=self.label, command=op)
            reply = None
            for attempt in range(attempts):
                if self._socket is None:
                    self._socket = self._open_socket()
                reply = self._attempt(self._socket, request_id, frames, op, timeout_s, cancel)
                if reply is not None:
                    break
                logger.warning(
                    "%s: no reply to %s within %.3g s (attempt %d of %d); reconnecting",
                    self.label,
                    op,
                    timeout_s,
                    attempt + 1,
                    attempts,
                )
                self._drop_socket()
            if reply is None:
                raise InstrumentTimeoutError(
                    f"no reply after {attempts} attempt{'s' if attempts > 1 else ''} of "
                    f"{timeout_s} s",
                    instrument=self.label,
                    command=op,
                )
        if not reply.ok:
            error = reply.error or {}
            if op == OP_RUN and attempt > 0 and error.get("type") == ERR_UNKNOWN_SESSION:
                raise InstrumentError(  # not a refusal that _request answers with a new hello
                    "the controller no longer knows this client's session, and an earlier "
                    "attempt of this run request, whose reply was lost, may have started the "
                    "run in it: it is not sent again in a new session, where it could play a "
                    "second time (such a run stops at its time limit)",
                    instrument=self.label, command=op)
            kind = (AuthenticationError if error.get("type") == ERR_UNAUTHENTICATED
                    else InstrumentCommandError)
            raise kind(
                error.get("message", ""),
                instrument=self.label,
                command=op,
                remote_type=error.get("type", ""),
            )
        return reply

    def _attempt(
        self, socket: zmq.Socket, request_id: str, frames: list[Frame], op: str,
        timeout_s: float, cancel: threading.Event | None,
    ) -> Reply | None:
        """Send once and wait up to ``timeout_s`` (s) for the matching reply (polling without
        sleeping for the first ``spin_s``); None on timeout.

        Raises:
            HardwareUnavailableError: ``peer_failure`` said the controller is gone.
            JobCancelledError: ``cancel`` was set while waiting.
        """
        deadline = time.monotonic() + timeout_s
        try:
            socket.send_multipart(frames, copy=False)
        except zmq.Again:
            self._check_peer(op)
            return None
        spin_end = time.perf_counter() + min(self.spin_s, timeout_s)
        while time.perf_counter() < spin_end and not socket.poll(0, zmq.POLLIN):
            _yield_cpu()  # a thread woken onto this CPU (the reply's sender) runs first
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000
            if remaining_ms <= 0:
                self._check_peer(op)
                return None
            slice_ms = remaining_ms if self._peer_failure is None \
                else min(remaining_ms, _PEER_CHECK_S * 1000)
            if cancel is not None:
                slice_ms = min(slice_ms, _CANCEL_CHECK_S * 1000)
            if not socket.poll(max(1, round(slice_ms)), zmq.POLLIN):
                self._check_peer(op)
                if cancel is not None and cancel.is_set():
                    raise JobCancelledError(f"cancelled while {self.label} had not answered "
                                            f"{op}")
                continue
            received = socket.recv_multipart(copy=False)
            try:
                reply = decode_reply(received)
            except ProtocolError as exc:
                raise ProtocolError(str(exc), instrument=self.label, command=op) from exc
            if reply.id == request_id:
                return reply
            logger.debug("%s: discarding reply to stale request %s", self.label, reply.id)

    def _check_peer(self, op: str) -> None:
        """Raise ``HardwareUnavailableError`` if ``peer_failure`` says the controller is gone."""
        reason = None if self._peer_failure is None else self._peer_failure()
        if reason:
            raise HardwareUnavailableError(reason, instrument=self.label, command=op)
