"""Jobs longer than ``max_circuits`` run as batches (``labqpu.backend.job``): the split is
logged before anything is sent, each batch queues when the one before it has finished (so
another job runs between them), one Result holds every circuit in order, and a cancel stops
the job between batches. Batch sizes are made small by setting the backend module's
``MAX_CIRCUITS``; the controller's own ``runs_total`` counts what ran."""

from __future__ import annotations

import logging
from concurrent.futures import Future

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.providers import JobError, JobStatus

import labqpu.backend.backend as backend_module
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import HardwareUnavailableError, InvalidRunInputError


def runs_total(backend) -> int:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=5.0) as client:
        return int(client.status()["runs_total"])


def flips(backend, n: int, prefix: str) -> list[QuantumCircuit]:
    """``n`` circuits; circuit k flips the qubit when k is odd (so merged or not, each result
    is checked against its own circuit)."""
    out = []
    for k in range(n):
        qc = QuantumCircuit(1, 1, name=f"{prefix}{k}")
        if k % 2:
            qc.x(0)
        qc.measure(0, 0)
        out.append(qc)
    return transpile(out, backend, initial_layout=[0])


def test_a_long_job_is_split_logged_first_and_returns_every_circuit(lab_backend, caplog,
                                                                     monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "MAX_CIRCUITS", 4)
    circuits = flips(lab_backend, 10, "long")
    before = runs_total(lab_backend)
    sent_at_log: list[int] = []

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "split into" in record.getMessage():
                sent_at_log.append(runs_total(lab_backend))

    probe = Probe()
    logging.getLogger("labqpu.backend.job").addHandler(probe)
    try:
        with caplog.at_level(logging.INFO, logger="labqpu.backend.job"):
            job = lab_backend.run(circuits, shots=200, merge_sweeps=False)
            result = job.result(timeout=120)
    finally:
        logging.getLogger("labqpu.backend.job").removeHandler(probe)
    assert job.batches == [4, 4, 2]
    assert sent_at_log == [before]  # logged once, before the first run
    assert "10 circuits split into 3 batches (4, 4, 2 circuits)" in caplog.text
    assert runs_total(lab_backend) - before == 10
    assert [r.header["name"] for r in result.results] == [c.name for c in circuits]
    for k in range(10):
        counts = result.get_counts(k)
        assert counts.get(str(k % 2), 0) / 200 > 0.8, (k, counts)


def test_another_job_runs_between_batches(lab_backend, monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "MAX_CIRCUITS", 3)
    long_job = lab_backend.run(flips(lab_backend, 9, "a"), shots=4000, merge_sweeps=False)
    other = lab_backend.run(flips(lab_backend, 1, "b"), shots=100)
    other.result(timeout=120)
    # The other job was queued while the first batch waited or ran: it ran before the second.
    assert long_job.status().name in ("QUEUED", "RUNNING")
    result = long_job.result(timeout=120)
    assert long_job.status().name == "DONE"
    assert [r.header["name"] for r in result.results] == [f"a{k}" for k in range(9)]


def test_cancel_stops_a_split_job_between_batches(lab_backend, monkeypatch) -> None:
    monkeypatch.setattr(backend_module, "MAX_CIRCUITS", 2)
    before = runs_total(lab_backend)
    job = lab_backend.run(flips(lab_backend, 8, "c"), shots=4000, merge_sweeps=False)
    assert job.cancel()
    with pytest.raises(Exception, match="cancelled"):
        job.result(timeout=120)
    assert job.status().name == "CANCELLED"
    assert not job.cancel()
    assert runs_total(lab_backend) - before <= 2  # at most the batch that had started


def test_a_job_beyond_the_job_limit_is_refused_before_anything_is_sent(lab_backend) -> None:
    qc = flips(lab_backend, 1, "x")[0]
    before = runs_total(lab_backend)
    with pytest.raises(InvalidRunInputError, match="takes at most 10000"):
        lab_backend.run([qc] * (backend_module.MAX_JOB_CIRCUITS + 1))
    assert runs_total(lab_backend) == before


class _PastNoReturn:
    """A stand-in hardware queue whose batches are past their point of no return: its
    ``cancel`` finds nothing to stop, and the test decides how each batch ends (the real
    queue's window between its commit point and the job's callback is microseconds)."""

    closed = False

    def __init__(self) -> None:
        self.batches: list[Future] = []

    def submit(self, job_id: str, work: list) -> Future:
        batch: Future = Future()
        batch.set_running_or_notify_cancel()
        self.batches.append(batch)
        return batch

    def cancel(self, job_id: str) -> bool:
        return False

    def waiting_for_rack(self) -> bool:
        return False


@pytest.mark.parametrize("n_circuits", [2, 1])
def test_a_cancel_that_said_true_ends_the_job_cancelled_even_if_its_batch_fails(
        lab_backend, monkeypatch, n_circuits) -> None:
    """``cancel()`` returned True for a batch before the last past its point of no return,
    and when that batch then failed the job ended ERROR. Now it ends CANCELLED, as promised;
    a cancel of the last batch says False and the failure stands."""
    monkeypatch.setattr(backend_module, "MAX_CIRCUITS", 1)
    queue = _PastNoReturn()
    monkeypatch.setattr(lab_backend, "_queue", queue)
    job = lab_backend.run(flips(lab_backend, n_circuits, "race"), shots=10)
    said = job.cancel()
    assert said == (n_circuits == 2)
    queue.batches[0].set_exception(RuntimeError("simulated instrument refusal"))
    assert job.status() is (JobStatus.CANCELLED if said else JobStatus.ERROR)
    with pytest.raises(JobError, match="cancelled" if said else "simulated instrument refusal"):
        job.result(timeout=1)
    assert len(queue.batches) == 1  # nothing more was queued


class _ClosingBetweenBatches(_PastNoReturn):
    """A stand-in hardware queue closed (its provider closed) just as a job's first batch
    ends: the next batch finds it closed, as the real queue says."""

    def submit(self, job_id: str, work: list) -> Future:
        if self.closed:
            raise HardwareUnavailableError("the hardware queue is closed (the provider was "
                                           "closed)")
        return super().submit(job_id, work)


class _Waiting(_PastNoReturn):
    """A stand-in hardware queue whose batches wait in it until the test ends them (a close
    cancels the one waiting)."""

    def submit(self, job_id: str, work: list) -> Future:
        batch: Future = Future()
        self.batches.append(batch)
        return batch


def test_a_provider_closed_between_batches_cancels_the_job(lab_backend, monkeypatch) -> None:
    """A review: a provider closed as one batch of a split job ended left the job ERROR,
    "failed before it ran: the hardware queue is closed"; it ends CANCELLED by the close,
    saying how many batches ran, and a cancel between batches says so too."""
    monkeypatch.setattr(backend_module, "MAX_CIRCUITS", 1)
    queue = _ClosingBetweenBatches()
    monkeypatch.setattr(lab_backend, "_queue", queue)
    job = lab_backend.run(flips(lab_backend, 2, "close"), shots=10)
    queue.closed = True
    queue.batches[0].set_result([])
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(JobError, match=r"cancelled by closing its provider \(cancelled after "
                                       r"1 of 2 batches\)"):
        job.result(timeout=1)
    queue = _Waiting()
    monkeypatch.setattr(lab_backend, "_queue", queue)
    job = lab_backend.run(flips(lab_backend, 2, "later"), shots=10)
    queue.batches[0].set_running_or_notify_cancel()
    queue.batches[0].set_result([])
    queue.closed = True
    assert queue.batches[1].cancel()
    with pytest.raises(JobError, match=r"cancelled by closing its provider \(cancelled after "
                                       r"1 of 2 batches\)"):
        job.result(timeout=1)
