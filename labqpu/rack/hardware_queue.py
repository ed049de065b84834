"""The seam between jobs and the hardware: ``HardwareQueue``, and ``LocalHardwareQueue``, a
single worker thread in this process that owns a ``RackConnection`` and runs one job's work at
a time, in order.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Protocol

from labqpu.errors import (
    HardwareUnavailableError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    JobCancelledError,
    RackBusyError,
)
from labqpu.pulse.program import PulseProgram
from labqpu.rack.hardware import CANCELLED, RackConnection, RunRecord, RunRequest

log = logging.getLogger(__name__)


class HardwareQueue(Protocol):
    """Where jobs send work that needs the hardware. FIFO; one job touches the rack at a time.

    The work is plain data (programs and run requests), so the queue can live in another
    process (a device server) without the jobs changing.
    """

    @property
    def closed(self) -> bool:
        """True once the queue accepts no more work."""
        ...

    def submit(self, job_id: str, work: list[tuple[PulseProgram, RunRequest]]) -> Future:
        """Queue ``work``; the Future resolves to one ``RunRecord`` (IQ points and provenance)
        per program, or to the exception that stopped it."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or ask a running one to abort; True if it will not complete."""
        ...

    def waiting_for_rack(self) -> bool:
        """True while the job taken from the queue waits for another process to release the
        rack (it has sent nothing yet)."""
        ...

    def describe(self, timeout_s: float | None) -> dict:
        """What the hardware says about itself: controller capabilities, instrument identities."""
        ...

    def capabilities(self, timeout_s: float) -> dict[str, dict]:
        """Each controller's capabilities from its ``hello``, by controller name."""
        ...

    def close(self) -> None:
        """Accept nothing new; cancel what is queued; release the hardware."""
        ...


class LocalHardwareQueue:
    """A ``HardwareQueue`` in this process: one daemon worker thread owns a ``RackConnection``.

    ``health`` (optional) returns why the rack is unusable (e.g. "the simulator exited"), or
    None; it is asked before each job and when a job fails on the hardware, so the user reads
    the cause rather than a string of timeouts. ``recover`` (optional) is given that reason
    before a job and brings the rack back (the embedded simulator started again), returning
    None, or returns why it could not; the job then opens every session afresh. The worker
    is a daemon so that interpreter exit does not run abandoned jobs to completion;
    ``close()`` (also called at exit by the provider) cancels them and waits at most for the
    program on the controller.
    """

    def __init__(self, rack: RackConnection,
                 health: Callable[[], str | None] | None = None,
                 recover: Callable[[str], str | None] | None = None) -> None:
        self.rack = rack
        self._health = health or (lambda: None)
        self._recover = recover or (lambda reason: reason)
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: dict[str, tuple[Future, threading.Event]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._worker = threading.Thread(target=self._serve, name="labqpu-hw", daemon=True)
        self._worker.start()

    @property
    def closed(self) -> bool:
        """True once ``close()`` has been called."""
        return self._closed

    def _enqueue(self, function: Callable[[threading.Event], object],
                 job_id: str | None = None) -> Future:
        future: Future = Future()
        cancel = threading.Event()
        if os.getpid() != self._pid:  # a forked child: the worker thread stayed behind
            raise HardwareUnavailableError(
                f"this provider was opened in process {self._pid}, and process {os.getpid()} "
                "is a child forked from it, where its hardware worker does not run (a job "
                "would wait forever): open a LabProvider in the child, or start children with "
                "the 'spawn' or 'forkserver' method")
        with self._lock:
            if self._closed:
                raise HardwareUnavailableError("the hardware queue is closed "
                                               "(the provider was closed)")
            if job_id is not None:
                self._jobs[job_id] = (future, cancel)
                future.add_done_callback(lambda f: self._forget(job_id, f))
            self._tasks.put((future, function, cancel))
        return future

    def _serve(self) -> None:
        while (item := self._tasks.get()) is not None:
            self._serve_one(*item)
            # nothing of the last job stays referenced while the worker waits for the next: a
            # provider dropped without close() is then collected, and its simulator stopped
            # (a review's notebook kept one ~235 MB simulator per run of a cell)
            item = None

    def _serve_one(self, future: Future, function: Callable[[threading.Event], object],
                   cancel: threading.Event) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            outcome: object = function(cancel)
            failed = False
        except BaseException as exc:  # delivered to whoever waits on the future
            outcome, failed = exc, True
        # The commit point: a cancel before it wins (the job ends cancelled, whatever the
        # work returned), a cancel after it finds no job and returns False.
        with self._lock:
            self._jobs = {k: v for k, v in self._jobs.items() if v[0] is not future}
            if cancel.is_set() and not (failed and isinstance(outcome, JobCancelledError)):
                cancelled = JobCancelledError(CANCELLED)
                cancelled.__cause__ = outcome if failed else None  # what the work said
                outcome, failed = cancelled, True
        if failed:
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    def submit(self, job_id: str, work: list[tuple[PulseProgram, RunRequest]]) -> Future:
        """Queue ``work``; it runs on the worker thread with its own cancel event."""
        return self._enqueue(lambda cancel: self._run(work, cancel), job_id)

    def _run(self, work: list[tuple[PulseProgram, RunRequest]],
             cancel: threading.Event) -> list[RunRecord]:
        out = []
        for program, request in work:
            if cancel.is_set():
                raise JobCancelledError(CANCELLED)
            self._check_usable()
            try:
                out.append(self.rack.execute(program, request, cancel))
            except InstrumentError as exc:
                if not isinstance(exc, InstrumentCommandError | RackBusyError):
                    # A timeout or a broken transport may leave a session half-used (a late
                    # reply on its way, a peer that restarted): the next job opens every
                    # session afresh.
                    self.rack.close()
                reason = self._health()
                if reason and not isinstance(exc, HardwareUnavailableError):
                    raise HardwareUnavailableError(f"{reason} ({exc})") from exc
                raise
        return out

    def _check_usable(self) -> None:
        """``HardwareUnavailableError`` when the rack is down and cannot be brought back."""
        reason = self._health()
        if not reason:
            return
        reason = self._recover(reason)
        if reason:
            raise HardwareUnavailableError(reason)
        self.rack.close()  # sessions with what went down: the next request opens new ones

    def _forget(self, job_id: str, future: Future) -> None:
        with self._lock:
            if self._jobs.get(job_id, (None,))[0] is future:  # not a later batch's entry
                del self._jobs[job_id]

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job outright; ask a running job's controller run to abort. True
        exactly when the job will end cancelled (``JobCancelledError``), False when it has
        already ended or passed its commit point."""
        with self._lock:
            entry = self._jobs.get(job_id)
            if entry is None:
                return False
            future, cancel = entry
            cancel.set()
        future.cancel()
        return True

    def waiting_for_rack(self) -> bool:
        """True while the worker's job waits for another process to release the rack."""
        return self.rack.waiting_for_rack

    def describe(self, timeout_s: float | None) -> dict:
        """Ask every controller and instrument who it is, on the worker (in queue order)."""
        return self._ask(self.rack.describe, timeout_s, "describe")

    def capabilities(self, timeout_s: float) -> dict[str, dict]:
        """Each controller's ``hello`` capabilities, asked on the worker (in queue order)."""
        return self._ask(lambda cancel: {ctrl.name: self.rack.capabilities(ctrl.name, cancel)
                                         for ctrl in self.rack.config.controllers},
                         timeout_s, "hello")

    def _ask(self, question: Callable[[threading.Event], object], timeout_s: float | None,
             command: str):
        """``question(cancel)`` asked on the worker; ``close()`` sets its ``cancel`` (a
        controller's first ``hello`` waited for up to its retries while a Ctrl-C's cleanup
        waited for the worker)."""
        def asked(cancel: threading.Event) -> object:
            self._check_usable()  # what was said before may no longer be true
            return question(cancel)

        task = f"{command}-{uuid.uuid4().hex}"
        future = self._enqueue(asked, task)
        try:
            return future.result(timeout=timeout_s)
        except (CancelledError, JobCancelledError) as exc:
            raise HardwareUnavailableError(f"the provider was closed while {command} waited "
                                           "for the hardware", command=command) from exc
        except FutureTimeoutError as exc:
            if future.cancel():  # it never started: other work held the rack
                why = "it was still queued behind other jobs"
            else:
                self.cancel(task)  # the worker stops waiting too (a hello's retries)
                config = self.rack.config
                asked = [f"{c.name} at {c.endpoint}" for c in config.controllers]
                if command == "describe":
                    asked += [f"{i.name} at {i.resource}" for i in config.instruments]
                hint = self.rack.simulator_hint()
                why = (f"a controller or instrument is not answering (asked: {', '.join(asked)})"
                       + (f"; {hint}" if hint else ""))
            raise InstrumentTimeoutError(
                f"the hardware did not answer {command} within {timeout_s} s: {why}",
                command=command) from exc

    def close(self, timeout_s: float = 60.0) -> None:
        """Cancel queued work, abort the running program, wait for the worker (bounded by
        ``timeout_s``), close the rack's sessions. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            entries = list(self._jobs.values())
            pending = [job_id for job_id, (future, _) in self._jobs.items() if not future.done()]
            self._tasks.put(None)
        if pending:  # each job's error says so too (``LabJob``); a Ctrl-C closes this way
            log.info("closing the provider cancels %d job(s) still queued or running: %s",
                     len(pending), ", ".join(pending))
        for future, cancel in entries:
            cancel.set()
            future.cancel()
        self._worker.join(timeout=timeout_s)
        if self._worker.is_alive():
            log.warning("hardware worker still busy after %s s; closing sessions anyway",
                        timeout_s)
        self.rack.close()
