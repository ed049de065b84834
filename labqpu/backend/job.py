"""``LabJob``: one submission of compiled programs to the hardware queue."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading

from qiskit.providers import BackendV2, JobError, JobStatus, JobTimeoutError, JobV1
from qiskit.result import Result

from labqpu.backend.merge import Run
from labqpu.backend.results import experiment_result
from labqpu.errors import InstrumentError, JobCancelledError
from labqpu.pulse.program import PulseProgram
from labqpu.rack.hardware import HardwareQueue, RunRecord, RunRequest

#: Longest time limit (s) of one run: the ``timeout`` run option's upper bound, and the cap on a
#: merged run's limit (``timeout`` x its points).
MAX_TIMEOUT_S = 86_400.0


class LabJob(JobV1):
    """A job on a lab backend. Asynchronous: ``submit()`` queues it and returns at once.

    ``result(timeout=...)`` waits at most ``timeout`` seconds (``None``: until done) and raises
    ``JobTimeoutError`` past it; a failure on the hardware path raises ``JobError`` carrying the
    instrument's message.
    """

    def __init__(self, backend: BackendV2, job_id: str, programs: list[PulseProgram],
                 options: dict, queue: HardwareQueue, snapshot, *,
                 runs: list[Run] | None = None) -> None:
        super().__init__(backend, job_id)
        self._programs = programs
        #: The uploads and runs on the controllers (``labqpu.backend.merge``); default: one
        #: plain run per program.
        self._runs = runs or [Run(p, None, (p,)) for p in programs]
        self._options = options
        self._queue = queue
        self._snapshot = snapshot
        self._future: concurrent.futures.Future | None = None
        self._result: Result | None = None
        self._result_lock = threading.Lock()

    @property
    def programs(self) -> list[PulseProgram]:
        """The compiled programs this job runs (one per circuit)."""
        return list(self._programs)

    def submit(self) -> None:
        """Queue the job on the hardware (once)."""
        if self._future is not None:
            raise JobError(f"job {self.job_id()} was already submitted")
        self._future = self._queue.submit(self.job_id(), self._work())

    @property
    def uploads(self) -> int:
        """How many programs this job uploads: fewer than :attr:`programs` when consecutive
        programs differing only in numbers run as one controller-bound sweep."""
        return len(self._runs)

    def _work(self) -> list[tuple[PulseProgram, RunRequest]]:
        opts = self._options
        seed = opts["seed_simulator"]
        return [(run.program, RunRequest(
            shots=opts["shots"], seed=None if seed is None else seed + i,
            rep_delay_s=opts["rep_delay"],
            # ``timeout`` is per program: a merged run of k programs gets k times it.
            timeout_s=min(opts["timeout"] * (1 if run.explicit else run.points),
                          MAX_TIMEOUT_S),
            key=f"{self.job_id()}:{i}",
            traces=(("avg" if opts["meas_return"] == "avg" else "single")
                    if opts["meas_level"] == 0 else None),
            trace_decimation=opts["trace_decimation"] if opts["meas_level"] == 0 else None,
            param_sets=run.rows,
        )) for i, run in enumerate(self._runs)]

    def _build_result(self, records: list[RunRecord]) -> Result:
        opts = self._options
        backend = self.backend()
        shots = opts["shots"]
        experiments = []
        for run, record in zip(self._runs, records, strict=True):
            if record.iq.shape[0] != run.points * shots:
                raise JobError(f"job {self.job_id()}: the controller returned "
                               f"{record.iq.shape[0]} rows for {run.points} point(s) of "
                               f"{shots} shots")
            for k, member in enumerate(run.members):
                result = experiment_result(
                    member, record.iq[k * shots:(k + 1) * shots], shots=shots,
                    meas_level=opts["meas_level"], meas_return=opts["meas_return"],
                    memory=opts["memory"], snapshot=self._snapshot,
                    provenance=record.provenance, traces=record.traces,
                    trace_decimation=record.trace_decimation)
                if run.explicit:
                    result["header"]["metadata"] = {
                        **result["header"]["metadata"],
                        "parameter_binds": dict(zip(run.program.param_names, run.rows[k],
                                                    strict=True)),
                        "sweep_point": k}
                elif run.rows is not None:  # merged: this circuit's own program, bound
                    result["header"]["reproducibility"]["point_program_hash"] = \
                        member.content_hash
                    result["header"]["metadata"] = {**result["header"]["metadata"],
                                                    "sweep_point": k}
                experiments.append(result)
        return Result.from_dict({
            "backend_name": backend.name, "backend_version": backend.backend_version,
            "job_id": self.job_id(), "qobj_id": self.job_id(), "success": True,
            "date": dt.datetime.now(dt.UTC).isoformat(), "results": experiments,
            "header": {"backend_name": backend.name,
                       "calibration_snapshot_id": self._snapshot.snapshot_id,
                       "job_tags": list(opts["job_tags"] or [])},
            "calibration_snapshot_id": self._snapshot.snapshot_id,
        })

    def result(self, timeout: float | None = None) -> Result:
        """The job's ``Result``; waits at most ``timeout`` seconds (None: no bound).

        Raises ``JobTimeoutError`` when the job is still queued or running at the deadline and
        ``JobError`` when it failed (with the instrument's message) or was cancelled.
        """
        if self._future is None:
            raise JobError(f"job {self.job_id()} was never submitted")
        try:
            records = self._future.result(timeout=timeout)
        except concurrent.futures.TimeoutError as exc:
            raise JobTimeoutError(
                f"job {self.job_id()} did not finish within {timeout} s "
                f"(status {self.status().name})") from exc
        except (concurrent.futures.CancelledError, JobCancelledError) as exc:
            raise JobError(f"job {self.job_id()} was cancelled") from exc
        except Exception as exc:  # the job boundary: every failure reaches the user as JobError
            where = "on the hardware" if isinstance(exc, InstrumentError) else "before it ran"
            raise JobError(f"job {self.job_id()} failed {where}: {exc}") from exc
        with self._result_lock:
            if self._result is None:
                try:
                    self._result = self._build_result(records)
                except (ValueError, KeyError) as exc:
                    raise JobError(f"job {self.job_id()}: results could not be built: "
                                   f"{exc}") from exc
            return self._result

    def cancel(self) -> bool:
        """Cancel a queued job, or abort a running one. True exactly when the job ends
        CANCELLED; False when it had already finished (or was past the point of no return):
        a cancel racing completion gives one final state, never both."""
        if self._future is None or self._future.done():
            return False
        return self._queue.cancel(self.job_id())

    def status(self) -> JobStatus:
        """QUEUED, RUNNING, DONE, ERROR or CANCELLED."""
        f = self._future
        if f is None:
            return JobStatus.INITIALIZING
        if f.cancelled():
            return JobStatus.CANCELLED
        if f.running():
            return JobStatus.RUNNING
        if f.done():
            exc = f.exception()
            if exc is None:
                return JobStatus.DONE
            return JobStatus.CANCELLED if isinstance(exc, JobCancelledError) else JobStatus.ERROR
        return JobStatus.QUEUED
