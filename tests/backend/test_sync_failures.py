"""A synchronised run (lab10's rungs, on both controllers) that fails or is cancelled while
the controllers answer nothing: every part's run is aborted within its bound, and the job's
error says what became of each, naming the controllers as the lab file does.

The simulator process is frozen (SIGSTOP) during the run, as a controller that hangs would
be, and thawed before the test ends; the controllers' reply timeout is 1 s here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.providers import JobError, JobStatus

from labqpu import LabProvider
from labqpu.backend.backend import LabBackend
from labqpu.drivers.controller import CANCEL_ABORT_S
from labqpu.firmware_sim.faults import FaultControl
from labqpu.rack.config import default_config_path

pytestmark = pytest.mark.slow

#: The controllers' bound on each reply attempt (s); a request fails after 3 attempts.
REPLY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def provider(lab_home, tmp_path_factory) -> Iterator[LabProvider]:
    data = default_config_path().parent
    text = (data / "lab10.toml").read_text()
    text = text.replace("timeout_s = 5.0", f"timeout_s = {REPLY_TIMEOUT_S}")
    text = text.replace('seed_snapshot = "lab10_calibration.json"',
                        f'seed_snapshot = "{data / "lab10_calibration.json"}"')
    lab = Path(tmp_path_factory.mktemp("lab10-fast-timeout")) / "lab.toml"
    lab.write_text(text + "\n[simulator.faults]\ncontrol = true\n")
    with LabProvider(lab, simulator=True) as p:
        yield p


@pytest.fixture(scope="module")
def backend(provider) -> LabBackend:
    return provider.backend()


def rung_bell(backend: LabBackend) -> QuantumCircuit:
    """A Bell pair on the rung 1-6: its cz plays on ctrl0 and ctrl1 in lockstep."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return transpile(qc, backend, initial_layout=[1, 6])


def ghz5(backend: LabBackend) -> QuantumCircuit:
    """GHZ-5 on 2-7-8-3-4, on both controllers: one synchronised run of ~4 s on 2 cores at
    20 000 shots (frozen while it plays, not while it arms)."""
    qc = QuantumCircuit(5, 5)
    qc.h(0)
    for i in range(4):
        qc.cx(i, i + 1)
    qc.measure(range(5), range(5))
    return transpile(qc, backend, initial_layout=[2, 7, 8, 3, 4])


def frozen_during_its_run(provider: LabProvider, backend: LabBackend):
    """A long synchronised job, running, with the simulator frozen; returns the job."""
    job = backend.run(ghz5(backend), shots=20_000)
    deadline = time.monotonic() + 30
    while job.status() is not JobStatus.RUNNING:
        assert time.monotonic() < deadline, job.status()
        time.sleep(0.02)
    time.sleep(0.5)  # both parts armed and playing
    os.kill(provider.simulator.pid, signal.SIGSTOP)
    assert job.status() is JobStatus.RUNNING
    return job


def thaw_and_check(provider: LabProvider, backend: LabBackend) -> None:
    os.kill(provider.simulator.pid, signal.SIGCONT)
    counts = backend.run(rung_bell(backend), shots=400).result(timeout=60).get_counts()
    assert counts.get("00", 0) + counts.get("11", 0) > 0.85 * 400, counts


def test_a_cancelled_synchronised_job_aborts_each_part_within_its_bound(provider,
                                                                        backend) -> None:
    """A review's case: the leader's abort was bounded at 1 s, the follower's went through
    the client's three attempts (15 s at the default 5 s timeout), and the worker, the next
    job and ``close()`` waited for them."""
    job = frozen_during_its_run(provider, backend)
    try:
        t0 = time.monotonic()
        assert job.cancel()
        while job.status() is JobStatus.RUNNING and time.monotonic() - t0 < 30:
            time.sleep(0.01)
        took_s = time.monotonic() - t0
        assert job.status() is JobStatus.CANCELLED
        with pytest.raises(JobError) as info:  # what became of each part is said
            job.result(timeout=5)
        message = str(info.value)
        assert "was cancelled (cancelled while ctrl0 (tcp://127.0.0.1:" in message, message
        assert "; the job's runs: ctrl1 (tcp://127.0.0.1:" in message, message
        # one abort per controller, each asked once (before: 1 s + 3 x 1 s)
        assert took_s < 2 * CANCEL_ABORT_S + 1.5, took_s
    finally:
        thaw_and_check(provider, backend)


def test_a_failed_synchronised_job_says_what_became_of_every_part(provider, backend) -> None:
    """A review's case: the job's error named only the leader's run; the follower's abort,
    unconfirmed, went to the log alone, so nobody was told its run may still play."""
    job = frozen_during_its_run(provider, backend)
    try:
        with pytest.raises(JobError) as info:
            job.result(timeout=60)
    finally:
        thaw_and_check(provider, backend)
    message = str(info.value)
    assert message.count("may still play") == 2, message
    assert "[ctrl0 (tcp://127.0.0.1:" in message, message
    assert "; the job's runs: ctrl1 (tcp://127.0.0.1:" in message, message


def test_a_follower_a_hung_controller_armed_late_is_aborted_before_the_next_job(
        provider, backend) -> None:
    """Found by this file's tests: ctrl1 hangs as it takes a rung's follower run, so the
    request's retries and the abort by its key go on new connections it takes only once it
    answers again; the first request's run then arms there and waits for a leader that never
    comes, for the job's timeout (300 s by default), and every synchronised job on ctrl1
    failed meanwhile (its leader waited 10 s for its follower). The next job's connection
    goes on in the failed one's session and aborts that run by its key first."""
    faults = FaultControl(provider.simulator.endpoints["fault_control"])
    hang_s = 5 * REPLY_TIMEOUT_S  # past the run request's 3 attempts and its abort's one
    try:
        faults.arm("hang", "run", duration_s=hang_s, controller="ctrl1")
        t0 = time.monotonic()
        with pytest.raises(JobError, match="could not be confirmed") as info:
            backend.run(rung_bell(backend), shots=400).result(timeout=60)
        assert "[ctrl1 (tcp://127.0.0.1:" in str(info.value), str(info.value)
        time.sleep(max(0.0, hang_s + 1.0 - (time.monotonic() - t0)))  # ctrl1 answers again
        counts = backend.run(rung_bell(backend), shots=400).result(timeout=60).get_counts()
        assert counts.get("00", 0) + counts.get("11", 0) > 0.85 * 400, counts
    finally:
        faults.disarm()
