"""``LabJob``: one submission of compiled programs to the hardware queue."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import logging
import numbers
import threading
import time
from collections.abc import Iterator

import numpy as np
from qiskit.providers import BackendV2, JobError, JobStatus, JobTimeoutError, JobV1
from qiskit.result import Result

from labqpu.backend.merge import Run
from labqpu.backend.results import (
    check_iq_shape,
    experiment_data,
    experiment_result,
    level_1_memory,
)
from labqpu.drivers.protocol import SEED_LIMIT
from labqpu.errors import InstrumentError, JobCancelledError
from labqpu.pulse.program import PulseProgram
from labqpu.rack.hardware import CANCELLED, RunRecord, RunRequest
from labqpu.rack.hardware_queue import HardwareQueue

log = logging.getLogger(__name__)

#: Longest time limit (s) of one run: the ``timeout`` run option's upper bound, and the cap on a
#: merged run's limit (``timeout`` x its points).
MAX_TIMEOUT_S = 86_400.0


def batches_of(runs: list[Run], size: int) -> list[tuple[int, int]]:
    """Consecutive ranges [first, end) of ``runs`` holding at most ``size`` circuits (points)
    each; a run of more points than ``size`` is a batch of its own (runs are never split)."""
    out: list[tuple[int, int]] = []
    first, count = 0, 0
    for i, run in enumerate(runs):
        if count and count + run.points > size:
            out.append((first, i))
            first, count = i, 0
        count += run.points
    out.append((first, len(runs)))
    return out


def _counts(program: PulseProgram, shots: int, meas_return: str, snapshot, iq: np.ndarray,
            _traces: np.ndarray | None) -> list[dict]:
    """The ``data`` (counts) of a one-point run of ``program`` from its IQ points, as the one
    entry of a list: the hardware worker computes it while the read-back after the run travels
    (``RunRequest.digest``). A function of its arguments only, so that a request does not hold
    its job."""
    return [experiment_data(program, iq, shots=shots, meas_level=2, meas_return=meas_return,
                            memory=False, snapshot=snapshot)]


def wait_bound(timeout: object, name: str = "timeout") -> float | None:
    """``timeout`` (s) as a bound for ``Future.result``: None for no bound (None, or beyond
    what a wait can take: ``math.inf``). Raises ``ValueError`` naming the argument ``name``
    unless it is None or a real number >= 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) \
            or timeout != timeout or timeout < 0:  # NaN != NaN; an int beyond any float is fine
        raise ValueError(f"{name} must be None or a number of seconds >= 0 (math.inf: no "
                         f"bound), got {timeout!r}")
    return None if timeout > threading.TIMEOUT_MAX else float(timeout)


class LabJob(JobV1):
    """A job on a lab backend. Asynchronous: ``submit()`` queues it and returns at once.

    ``result(timeout=...)`` waits at most ``timeout`` seconds (``None``: until done) and raises
    ``JobTimeoutError`` past it; a failure on the hardware path raises ``JobError`` carrying the
    instrument's message.

    A job of more than ``batch_size`` circuits runs as batches of at most that many, in order:
    each batch joins the hardware queue when the one before it has finished, so other jobs
    (another user's, a calibration) may run between them. The split is logged before
    anything is sent; ``cancel()`` stops the job at any point, and one ``Result`` holds every
    circuit.
    """

    def __init__(self, backend: BackendV2, job_id: str, programs: list[PulseProgram],
                 options: dict, queue: HardwareQueue, snapshot, *,
                 runs: list[Run] | None = None, batch_size: int | None = None) -> None:
        super().__init__(backend, job_id)
        self._programs = programs
        #: The uploads and runs on the controllers (``labqpu.backend.merge``); default: one
        #: plain run per program.
        self._runs = runs or [Run(p, None, (p,)) for p in programs]
        self._batches = batches_of(self._runs, batch_size or len(programs))
        self._options = options
        self._queue = queue
        self._snapshot = snapshot
        #: The job's own future: its records once every batch has run, or the first failure.
        self._future: concurrent.futures.Future | None = None
        self._current: concurrent.futures.Future | None = None  # the batch in the queue
        self._done_batches = 0
        self._records: list[RunRecord] = []
        self._work_items: list[tuple[PulseProgram, RunRequest]] = []
        self._cancel_requested = False
        # Re-entrant: cancelling a queued batch runs its done-callback in the cancelling thread.
        self._state_lock = threading.RLock()
        self._result: Result | None = None
        self._result_lock = threading.Lock()

    @property
    def programs(self) -> list[PulseProgram]:
        """The compiled programs this job runs (one per circuit)."""
        return list(self._programs)

    @property
    def batches(self) -> list[int]:
        """Circuits in each batch of the job, in order (one entry unless the job was split)."""
        return [sum(run.points for run in self._runs[a:b]) for a, b in self._batches]

    def submit(self) -> None:
        """Queue the job on the hardware (once): its first batch, the next one when that has
        finished."""
        if self._future is not None:
            raise JobError(f"job {self.job_id()} was already submitted")
        sizes = self.batches
        if len(sizes) > 1:
            log.info("job %s: %d circuits split into %d batches (%s circuits); each batch "
                     "queues when the one before it has finished", self.job_id(), sum(sizes),
                     len(sizes), ", ".join(map(str, sizes)))
        self._work_items = self._work()
        with self._state_lock:
            self._future = concurrent.futures.Future()
            self._queue_batch()

    def _queue_batch(self) -> None:
        """Queue batch ``_done_batches`` (with ``_state_lock`` held)."""
        first, end = self._batches[self._done_batches]
        batch = self._queue.submit(self.job_id(), self._work_items[first:end])
        self._current = batch
        batch.add_done_callback(self._batch_done)

    def _batch_done(self, batch: concurrent.futures.Future) -> None:
        with self._state_lock:
            if batch is not self._current or self._future.done():
                return
            if batch.cancelled():
                self._future.set_exception(JobCancelledError(
                    f"cancelled after {self._done_batches} of {len(self._batches)} batches"
                    if self._done_batches else "cancelled before it ran"))
                return
            failure = batch.exception()
            if failure is not None:
                if self._cancel_requested and self._done_batches < len(self._batches) - 1:
                    # cancel() said True for a batch before the last past its point of no
                    # return: the job ends cancelled, whatever that batch did.
                    cancelled = JobCancelledError(
                        f"cancelled after {self._done_batches} of {len(self._batches)} "
                        f"batches (the batch running then failed: {failure})")
                    cancelled.__cause__ = failure
                    failure = cancelled
                self._future.set_exception(failure)
                return
            self._records.extend(batch.result())
            self._done_batches += 1
            if self._done_batches == len(self._batches):
                self._future.set_result(self._records)
            elif self._cancel_requested:
                self._future.set_exception(JobCancelledError(
                    f"cancelled after {self._done_batches} of {len(self._batches)} batches"))
            else:
                try:
                    self._queue_batch()
                except Exception as exc:  # the queue closed between batches
                    if self._queue.closed:  # the provider was closed: the job is cancelled
                        cancelled = JobCancelledError(
                            f"cancelled after {self._done_batches} of {len(self._batches)} "
                            "batches")
                        cancelled.__cause__ = exc
                        exc = cancelled
                    self._future.set_exception(exc)

    @property
    def uploads(self) -> int:
        """How many distinct programs (by content) this job runs, each uploaded once to a
        controller that keeps programs by content: fewer than :attr:`programs` when
        consecutive programs differing only in numbers run as one controller-bound sweep (a
        sweep run in slices counts once; a controller that does not keep programs gets it
        before each slice) or when programs are the same. A program the controller still holds
        from an earlier job is not sent again, so the wire may carry fewer."""
        return len({run.program.content_hash for run in self._runs})

    def _run_seed(self, i: int) -> int | None:
        """The simulator seed of the job's run ``i``: ``seed_simulator`` + i (None without)."""
        seed = self._options["seed_simulator"]
        return None if seed is None else (seed + i) % SEED_LIMIT

    def _work(self) -> list[tuple[PulseProgram, RunRequest]]:
        opts = self._options
        # The worker counts a one-point run while its read-back travels; memory, IQ lists and
        # a sweep's many points are built by result(), so they do not hold up the next job.
        counts_only = opts["meas_level"] == 2 and not opts["memory"]
        return [(run.program, RunRequest(
            shots=opts["shots"], seed=self._run_seed(i),
            rep_delay_s=opts["rep_delay"],
            # ``timeout`` is per program: a merged run of k programs gets k times it.
            timeout_s=min(opts["timeout"] * (1 if run.explicit else run.points),
                          MAX_TIMEOUT_S),
            key=f"{self.job_id()}:{i}",
            traces=(("avg" if opts["meas_return"] == "avg" else "single")
                    if opts["meas_level"] == 0 else None),
            trace_decimation=opts["trace_decimation"] if opts["meas_level"] == 0 else None,
            param_sets=run.rows,
            digest=functools.partial(_counts, run.members[0], opts["shots"],
                                     opts["meas_return"], self._snapshot)
            if counts_only and run.points == 1 else None,
        )) for i, run in enumerate(self._runs)]

    def _experiments(self, records: list[RunRecord]
                     ) -> Iterator[tuple[Run, RunRecord, int, PulseProgram, np.ndarray]]:
        """(run, its record, point k, the experiment's program, its IQ rows) of every
        experiment, in order.

        Raises:
            JobError: a record holds another number of rows than its run's points x shots.
        """
        shots = self._options["shots"]
        for run, record in zip(self._runs, records, strict=True):
            if record.iq.shape[0] != run.points * shots:
                raise JobError(f"job {self.job_id()}: the controller returned "
                               f"{record.iq.shape[0]} rows for {run.points} point(s) of "
                               f"{shots} shots")
            for k, member in enumerate(run.members):
                yield run, record, k, member, record.iq[k * shots:(k + 1) * shots]

    def _build_result(self, records: list[RunRecord]) -> Result:
        opts = self._options
        backend = self.backend()
        shots = opts["shots"]
        experiments = []
        index = {id(run): i for i, run in enumerate(self._runs)}
        for run, record, k, member, iq in self._experiments(records):
            result = experiment_result(
                member, iq, shots=shots,
                meas_level=opts["meas_level"], meas_return=opts["meas_return"],
                memory=opts["memory"], snapshot=self._snapshot,
                provenance=record.provenance, traces=record.traces,
                trace_decimation=record.trace_decimation,
                data=None if record.digest is None else record.digest[k])
            seed = self._run_seed(index[id(run)])
            if seed is not None:
                result["seed_simulator"] = seed
            if run.explicit:
                result["header"]["metadata"] = {
                    **result["header"]["metadata"],
                    "parameter_binds": dict(zip(run.program.param_names, run.rows[k],
                                                strict=True)),
                    "sweep_point": run.first_point + k}
            elif run.rows is not None:  # merged: this circuit's own program, bound
                result["header"]["reproducibility"]["point_program_hash"] = \
                    member.content_hash
                result["header"]["metadata"] = {**result["header"]["metadata"],
                                                "sweep_point": k}
            experiments.append(result)
        return Result.from_dict({
            "backend_name": backend.name, "backend_version": backend.backend_version,
            "job_id": self.job_id(), "qobj_id": self.job_id(), "success": True,
            "status": "COMPLETED",
            "date": dt.datetime.now(dt.UTC).isoformat(), "results": experiments,
            "header": {"backend_name": backend.name,
                       "calibration_snapshot_id": self._snapshot.snapshot_id,
                       "job_tags": list(opts["job_tags"] or [])},
            "calibration_snapshot_id": self._snapshot.snapshot_id,
            **_time_taken(records),
        })

    def _wait_records(self, timeout: float | None) -> list[RunRecord]:
        """The runs' records; waits at most ``timeout`` seconds (see :meth:`result`)."""
        bound = wait_bound(timeout)
        if self._future is None:
            raise JobError(f"job {self.job_id()} was never submitted")
        try:
            return self._future.result(timeout=bound)
        except concurrent.futures.TimeoutError as exc:
            raise JobTimeoutError(
                f"job {self.job_id()} did not finish within {timeout} s "
                f"(status {self.status().name})") from exc
        except (concurrent.futures.CancelledError, JobCancelledError) as exc:
            said = str(exc)
            closed = self._queue.closed and not self._cancel_requested
            raise JobError(f"job {self.job_id()} was cancelled"
                           + (" by closing its provider" if closed else "")
                           + (f" ({said})" if said and said != CANCELLED else "")) from exc
        except Exception as exc:  # the job boundary: every failure reaches the user as JobError
            where = "on the hardware" if isinstance(exc, InstrumentError) else "before it ran"
            raise JobError(f"job {self.job_id()} failed {where}: {exc}") from exc

    def result(self, timeout: float | None = None) -> Result:
        """The job's ``Result``; waits at most ``timeout`` seconds (None or ``math.inf``: no
        bound).

        Raises ``JobTimeoutError`` when the job is still queued or running at the deadline,
        ``JobError`` when it failed (with the instrument's message) or was cancelled, and
        ``ValueError`` for a ``timeout`` that is not a number of seconds >= 0 (the job is not
        touched).
        """
        records = self._wait_records(timeout)
        with self._result_lock:
            if self._result is None:
                try:
                    self._result = self._build_result(records)
                except (ValueError, KeyError) as exc:
                    raise self._unbuilt(exc) from exc
            return self._result

    def wait_for_final_state(self, timeout: float | None = None, wait: float = 5,
                             callback=None) -> None:
        """Wait until the job is DONE, ERROR or CANCELLED, at most ``timeout`` seconds (None:
        no bound), calling ``callback(job_id, status, job)`` first and then every ``wait``
        seconds while it is not. Returns as soon as the job ends (Qiskit's ``JobV1`` version
        checks every ``wait`` seconds, so it overshot ``timeout`` and a finished job by up to
        5 s). Raises ``JobTimeoutError`` at the deadline; the job is not touched."""
        bound = wait_bound(timeout)
        if isinstance(wait, bool) or not isinstance(wait, numbers.Real) or not wait > 0:
            raise ValueError(f"wait must be a number of seconds > 0, got {wait!r}")
        every = wait_bound(wait, "wait")
        if self._future is None:
            raise JobError(f"job {self.job_id()} was never submitted")
        deadline = None if bound is None else time.monotonic() + bound
        while not self._future.done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobTimeoutError(f"job {self.job_id()} did not finish within {timeout} s "
                                      f"(status {self.status().name})")
            if callback is not None:
                callback(self.job_id(), self.status(), self)
            steps = [x for x in (left, every if callback is not None else None) if x is not None]
            concurrent.futures.wait([self._future], timeout=min(steps) if steps else None)

    def _unbuilt(self, exc: Exception) -> JobError:
        """The error of a job whose results cannot be built from what the controller returned."""
        return JobError(f"job {self.job_id()}: results could not be built: {exc}")

    def memory_arrays(self, timeout: float | None = None) -> list[np.ndarray]:
        """The level-1 memory of every experiment, in order, as complex arrays: what
        ``result().get_memory(i)`` returns ((shots, memory slots) with
        ``meas_return="single"``, (memory slots,) with ``"avg"``), read from the IQ points
        without building the ``Result``, whose memory is nested lists (for 1000 shots of five
        slots, ~2 ms to build and as long to read back). Waits as :meth:`result`.

        Raises:
            JobError: the job did not run with ``meas_level=1``, or failed (as
                :meth:`result`).
        """
        opts = self._options
        if opts["meas_level"] != 1:
            raise JobError(f"job {self.job_id()} ran with meas_level={opts['meas_level']}; "
                           "memory_arrays() reads level-1 memory (meas_level=1)")
        out = []
        for _, _, _, member, iq in self._experiments(self._wait_records(timeout)):
            try:
                check_iq_shape(member, iq, opts["shots"])
            except ValueError as exc:
                raise self._unbuilt(exc) from exc
            out.append(level_1_memory(member, iq, opts["meas_return"]))
        return out

    def cancel(self) -> bool:
        """Cancel a queued job, or abort a running one. True exactly when the job ends
        CANCELLED; False when it had already finished (or was past the point of no return):
        a cancel racing completion gives one final state, never both."""
        with self._state_lock:
            if self._future is None or self._future.done():
                return False
            self._cancel_requested = True
            last = self._done_batches == len(self._batches) - 1
            # A batch past its point of no return still ends the job cancelled unless it is
            # the last one: no further batch is queued.
            return self._queue.cancel(self.job_id()) or not last

    def status(self) -> JobStatus:
        """QUEUED, RUNNING, DONE, ERROR or CANCELLED. A job waiting for another process to
        release the rack (the rack lock) is QUEUED: it has sent nothing yet."""
        with self._state_lock:
            f, batch = self._future, self._current
        if f is None:
            return JobStatus.INITIALIZING
        if f.done():
            exc = f.exception()
            if exc is None:
                return JobStatus.DONE
            return JobStatus.CANCELLED if isinstance(exc, JobCancelledError) else JobStatus.ERROR
        if batch is not None and batch.running() and not self._queue.waiting_for_rack():
            return JobStatus.RUNNING
        return JobStatus.QUEUED


def _time_taken(records: list[RunRecord]) -> dict[str, float]:
    """``{"time_taken": s}``, the controllers' time from accepting each run to its end, summed
    over the job's runs (what qiskit-aer's ``Result.time_taken`` holds for its simulation);
    empty when a controller did not say."""
    elapsed = [r.provenance["controller"]["elapsed_s"] for r in records]
    return {} if None in elapsed else {"time_taken": float(sum(elapsed))}
