"""The fault catalogue of issue "Hardening", through the whole stack.

Each test names its case. Faults are injected into a real simulator process through its
loopback fault-control socket (``[simulator.faults] control = true``); jobs go through the real
backend, VISA sessions and ZeroMQ. After every fault the next job must run and be right.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.providers import JobError, JobStatus

from labqpu import LabProvider
from labqpu.backend.backend import LabBackend
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InstrumentTimeoutError
from labqpu.firmware_sim.faults import EXIT_CRASH, FaultControl
from labqpu.rack.config import default_config_path
from labqpu.rack.hardware import RackConnection

#: The controller's bound on each reply attempt in these racks (s); with 2 retries a request
#: fails after 3 s, and a job whose controller stops answering fails after its fetch and its
#: abort both did: 6 s.
REPLY_TIMEOUT_S = 1.0
#: The promised bound on a job's ERROR once its controller dies or hangs (s): a fetch and an
#: abort, each (retries + 1) attempts, plus the program's own run time and start-up slack.
ERROR_BOUND_S = 2 * 3 * REPLY_TIMEOUT_S + 6.0
SHOTS = 200


def faulty_lab(directory: Path, *, fixed_ports: bool = False) -> Path:
    """The shipped wiring with fault control on and a 1 s reply timeout (fixed free ports on
    request, so a restarted simulator listens where the old one did)."""
    text = default_config_path().read_text().replace("timeout_s = 5.0",
                                                     f"timeout_s = {REPLY_TIMEOUT_S}")
    if fixed_ports:
        text = text.replace("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{_free_port()}")
        while "::0::SOCKET" in text:
            text = text.replace("::0::SOCKET", f"::{_free_port()}::SOCKET", 1)
    lab = directory / "lab.toml"
    lab.write_text(text + "\n[simulator.faults]\ncontrol = true\n")
    return lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def x_on(qubit: int, flip: bool = True) -> QuantumCircuit:
    """X (or nothing) on ``qubit``, measured: mostly '1' (or '0')."""
    qc = QuantumCircuit(5, 1, name=f"{'x' if flip else 'id'}{qubit}")
    if flip:
        qc.x(qubit)
    qc.measure(qubit, 0)
    return qc


def native(backend: LabBackend, qubit: int, flip: bool = True) -> QuantumCircuit:
    """``x_on`` compiled with each circuit qubit on the physical qubit of its index."""
    return transpile(x_on(qubit, flip), backend, initial_layout=list(range(5)))


def assert_right(backend: LabBackend, qubit: int = 0, flip: bool = True) -> None:
    """A job on ``backend`` finishes and its counts are those of X (or identity)."""
    counts = backend.run(native(backend, qubit, flip), shots=SHOTS).result(
        timeout=60).get_counts()
    assert counts.get("1" if flip else "0", 0) > 0.85 * SHOTS, counts


def error_within_bound(job, bound_s: float = ERROR_BOUND_S) -> str:
    """The job ends ERROR within ``bound_s``; returns its message."""
    start = time.monotonic()
    with pytest.raises(JobError) as info:
        job.result(timeout=bound_s)
    assert time.monotonic() - start < bound_s
    assert job.status() is JobStatus.ERROR
    return str(info.value)


@pytest.fixture(scope="module")
def provider(lab_home, tmp_path_factory) -> Iterator[LabProvider]:
    lab = faulty_lab(tmp_path_factory.mktemp("faulty-lab"))
    with LabProvider(lab, simulator=True) as p:
        yield p


@pytest.fixture(scope="module")
def backend(provider) -> LabBackend:
    return provider.backend()


@pytest.fixture
def faults(provider) -> Iterator[FaultControl]:
    control = FaultControl(provider.simulator.endpoints["fault_control"])
    yield control
    control.disarm()


def controller_status(backend: LabBackend) -> dict:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=2.0) as client:
        return client.status()


def _results_come_with(op: str, monkeypatch) -> None:
    """Make the job's results come in the reply to ``op``: ``run`` (the run's reply held to
    its end, the default for a short run) or ``fetch`` (no hold)."""
    if op == "fetch":
        monkeypatch.setattr(RackConnection, "_hold_s", lambda self, name: 0.0)


@pytest.mark.parametrize("op", ["run", "fetch"])
def test_controller_hung_mid_job_errors_within_bound_and_the_next_job_runs(backend, faults,
                                                                            monkeypatch,
                                                                            op) -> None:
    _results_come_with(op, monkeypatch)
    assert_right(backend)
    faults.arm("hang", op, duration_s=4 * REPLY_TIMEOUT_S)
    job = backend.run(native(backend, 1), shots=SHOTS)
    message = error_within_bound(job)
    assert "no reply" in message
    assert_right(backend, qubit=1)


def _cancelled_at_once(backend: LabBackend, caplog) -> None:
    """Run a job; once it has sent the request its controller leaves unanswered, cancel it:
    it ends CANCELLED within the reply timeout and a half second (WARNINGs of the controller
    client in ``caplog``)."""
    job = backend.run(native(backend, 1), shots=SHOTS)
    deadline = time.monotonic() + 5
    while job.status() is not JobStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the request is sent and not answered
    with caplog.at_level("WARNING", logger="labqpu.drivers.controller"):
        t0 = time.monotonic()
        assert job.cancel()
        while job.status() is JobStatus.RUNNING and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        took_s = time.monotonic() - t0
    assert job.status() is JobStatus.CANCELLED
    assert took_s < 0.5 + REPLY_TIMEOUT_S, took_s


def test_a_job_cancelled_while_its_controller_hangs_ends_cancelled_at_once(backend, faults,
                                                                             monkeypatch,
                                                                             caplog) -> None:
    """The controller stops answering while a job waits for its run's results (a frozen
    process): ``cancel()`` ends the job CANCELLED within ~1 s (the wait for the fetch is
    broken off; the abort is asked once, for 1 s, and its fate logged), where it stayed
    RUNNING through the fetch's and the abort's retries (6 s here, 30 s at the default 5 s
    timeout); the next job runs once the controller answers again."""
    _results_come_with("fetch", monkeypatch)
    assert_right(backend)
    faults.arm("hang", "fetch", duration_s=4 * REPLY_TIMEOUT_S)
    _cancelled_at_once(backend, caplog)
    assert any("could not abort run" in r.getMessage() for r in caplog.records)
    time.sleep(4 * REPLY_TIMEOUT_S)  # the controller answers again
    assert_right(backend, qubit=1)


def test_a_job_cancelled_before_its_run_was_answered_ends_cancelled_and_its_run_stops(
        backend, faults, caplog) -> None:
    """The controller freezes before it answers a job's ``run`` request: ``cancel()`` ends
    the job CANCELLED within ~1 s (before, the run request's three attempts: 3 s here, 15 s
    at the default 5 s timeout), and the run the controller takes once it reads again, which
    would play to the job's time limit (a stall), is stopped by the abort the job sent
    under the request's key."""
    assert_right(backend)
    faults.arm("stall", "start")
    faults.arm("hang", "run", duration_s=4 * REPLY_TIMEOUT_S)
    _cancelled_at_once(backend, caplog)
    assert any("could not abort the run sent under key" in r.getMessage()
               for r in caplog.records)
    deadline = time.monotonic() + 4 * REPLY_TIMEOUT_S + 5
    status: dict = {}
    while status.get("state") != "idle":
        assert time.monotonic() < deadline, status
        with contextlib.suppress(InstrumentTimeoutError):
            status = controller_status(backend)
    faults.disarm()  # the stall, if the run was aborted before it started
    assert_right(backend, qubit=2)


def test_controller_killed_mid_job_errors_within_bound_and_the_next_job_runs(lab_home,
                                                                             tmp_path) -> None:
    """The controller process dies during a run (fault ``crash``); the job fails within the
    bound; once the controller is back on its address, the next job runs, on fresh VISA
    sessions and a new controller session."""
    lab = faulty_lab(tmp_path, fixed_ports=True)

    def start() -> tuple[subprocess.Popen, dict]:
        sim = subprocess.Popen([sys.executable, "-m", "labqpu.firmware_sim", str(lab)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return sim, json.loads(sim.stdout.readline())

    sim, endpoints = start()
    try:
        with LabProvider(lab) as provider:
            backend = provider.backend()
            assert_right(backend)
            FaultControl(endpoints["fault_control"]).arm("crash", "start")
            job = backend.run(native(backend, 0), shots=SHOTS)
            error_within_bound(job)
            assert sim.wait(timeout=10) == EXIT_CRASH
            sim.stdout.close()
            sim.stderr.close()
            sim, _ = start()
            assert_right(backend, qubit=2)
    finally:
        sim.terminate()
        sim.wait(timeout=15)
        sim.stdout.close()
        sim.stderr.close()


def test_embedded_simulator_killed_mid_run_is_reported_at_once(lab_home, tmp_path) -> None:
    """The embedded simulator's process dies while a run plays: the provider watches that
    process, so the job fails naming the exit within 2 s, not after a fetch's and an abort's
    retries (ERROR_BOUND_S, 12 s); the next job starts it again and runs, and so does the
    next provider."""
    lab = faulty_lab(tmp_path)
    with LabProvider(lab, simulator=True) as provider:
        backend = provider.backend()
        assert_right(backend)
        control = FaultControl(provider.simulator.endpoints["fault_control"])
        control.arm("stall", "start")
        job = backend.run(native(backend, 0), shots=SHOTS)
        deadline = time.monotonic() + 30
        while not control.fired():  # the run plays (and never ends by itself)
            assert time.monotonic() < deadline, "the stalled run never started"
            time.sleep(0.01)
        os.kill(provider.simulator.pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(JobError, match=r"firmware simulator \(pid \d+\) exited") as info:
            job.result(timeout=ERROR_BOUND_S)
        assert time.monotonic() - start < 2.0
        message = str(info.value)
        assert message.count("exited with code") == 1, message  # said once
        assert "may still play" not in message, message  # nothing plays on a dead process
        assert job.status() is JobStatus.ERROR
        assert_right(backend)  # the next job starts the simulator again
    with LabProvider(lab, simulator=True) as provider:
        assert_right(provider.backend(), qubit=2)


def test_retried_run_after_a_lost_reply_executes_at_most_once(backend, faults) -> None:
    before = controller_status(backend)["runs_total"]
    faults.arm("drop", "run")
    assert_right(backend, qubit=3)
    assert controller_status(backend)["runs_total"] == before + 1
    assert [f["kind"] for f in faults.fired()][-1] == "drop"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_an_oversized_message_is_refused_without_the_simulator_holding_it(
        provider, backend, peak_rss_bytes) -> None:
    """Malformed and oversized frames: a message of 2000 frames of 1 MiB. libzmq buffered a
    whole message before the controller could count its frames (150 of 4 MiB took the
    simulator from 193 to 810 MB); the controller now reads ZMTP itself and refuses the
    message at its 65th frame, dropping the rest as it arrives."""
    import zmq

    from labqpu.drivers.protocol import decode_reply, encode_request

    peak_before = peak_rss_bytes(provider.simulator.pid)
    request_id, frames = encode_request("status", {})
    block = bytes(1 << 20)
    with zmq.Context() as context, context.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(backend.config.controllers[0].endpoint)
        sock.send_multipart([frames[0], *([block] * 2000)], copy=False)
        assert sock.poll(30_000, zmq.POLLIN), "no reply to the oversized message"
        reply = decode_reply(sock.recv_multipart())
    assert (reply.ok, reply.id, reply.error["type"]) == (False, request_id, "ProtocolError")
    assert "exceeds 64 frames" in reply.error["message"]
    grown = peak_rss_bytes(provider.simulator.pid) - peak_before
    assert grown < 200 << 20, f"the simulator's peak memory grew by {grown >> 20} MiB"
    assert_right(backend)


@pytest.mark.parametrize("op", ["run", "fetch"])
def test_corrupted_result_frame_fails_the_job_and_never_returns_counts(backend, faults,
                                                                       monkeypatch,
                                                                       op) -> None:
    _results_come_with(op, monkeypatch)
    faults.arm("corrupt", op, mode="array", count=10)
    job = backend.run(native(backend, 0), shots=SHOTS)
    message = error_within_bound(job)
    assert "crc32" in message or "header" in message, message
    faults.disarm()
    assert_right(backend)


def test_lo_changed_mid_run_fails_the_job_naming_instrument_and_setting(backend,
                                                                        faults) -> None:
    """The drive LO is switched off after the pulses played, before the run ends, in this
    run and in the next: the read-back after the run fails the job, naming the LO and its
    output.

    The change happens at the end of the run in both, because the read-back that travels
    with the run request may be answered after the run ended: it then sees the LO off, the
    run is aborted and started anew with the LO set again (the second change); otherwise
    the first run's own read-back after the run sees it. Either way the job fails."""
    backend.run(native(backend, 0), shots=SHOTS).result(timeout=60)
    faults.arm("lo_change", "end", instrument="lo_drive_a", setting="output_on", value=False,
               count=2)
    job = backend.run(native(backend, 0), shots=SHOTS)
    message = error_within_bound(job)
    assert "lo_drive_a" in message and "output" in message
    faults.disarm()
    assert_right(backend)  # the next job puts the LO back and verifies it


def test_lo_changed_as_the_run_starts_never_gives_counts_of_the_changed_device(backend,
                                                                              faults) -> None:
    """The drive LO is switched off as the run starts (the run plays without it). The
    read-back that travels with the run request may see it (the run is aborted, the LO set
    again and the run started anew: right counts) or not (the read-back after the run fails
    the job, naming the LO): never counts of the device without its LO."""
    for _ in range(4):
        backend.run(native(backend, 0), shots=SHOTS).result(timeout=60)
        faults.arm("lo_change", "start", instrument="lo_drive_a", setting="output_on",
                   value=False)
        job = backend.run(native(backend, 0), shots=SHOTS)
        try:
            result = job.result(timeout=ERROR_BOUND_S)
        except JobError as exc:
            assert "lo_drive_a" in str(exc) and "output" in str(exc)
            continue
        assert result.get_counts().get("1", 0) > 0.85 * SHOTS, result.get_counts()
        bundle = result.results[0].header["reproducibility"]
        for side in ("instruments_before", "instruments_after"):
            assert all(r["output_on"] for r in bundle[side] if r["instrument"] == "lo_drive_a")
    assert_right(backend)


def test_a_program_that_never_finishes_is_stopped_by_its_time_limit(backend, faults) -> None:
    faults.arm("stall", "start")
    job = backend.run(native(backend, 4), shots=SHOTS, timeout=2.0)
    message = error_within_bound(job, bound_s=2.0 + ERROR_BOUND_S)
    # The host's deadline or the controller's own limit (the same 2 s, from the run's start)
    assert "2.0 s" in message and ("aborted" in message or "time limit" in message)
    # An abort the controller reports as still winding down ("it stops") ends at once after
    # (under a loaded suite a status request came first and read "busy").
    deadline = time.monotonic() + 1.0
    while controller_status(backend)["state"] != "idle":
        assert time.monotonic() < deadline, message
        time.sleep(0.01)
    assert_right(backend, qubit=4)


@pytest.mark.parametrize("jump_s", [3600.0, -3600.0])
def test_wall_clock_jumps_fire_no_timeout_and_change_no_result(backend, mocker, caplog,
                                                               jump_s) -> None:
    """The host's wall clock steps back and forth by an hour, every millisecond, while jobs
    run (an NTP step, made with pytest-mock: a clock cannot be jumped on loopback). Every
    wait of labqpu's reads the monotonic clock, so no timeout fires early (a request would be
    sent again, with a warning) or late (a wait would not end), and every job is right."""
    assert_right(backend)
    caplog.set_level(logging.WARNING, logger="labqpu")
    real = time.time
    offset = [0.0]
    mocker.patch("time.time", side_effect=lambda: real() + offset[0])
    stop = threading.Event()

    def jumping() -> None:
        while not stop.wait(0.001):
            offset[0] = jump_s - offset[0]

    jumper = threading.Thread(target=jumping)
    jumper.start()
    try:
        for qubit in (0, 1, 2, 0, 3, 4) * 3:
            start = time.monotonic()
            assert_right(backend, qubit, flip=qubit != 3)
            assert time.monotonic() - start < REPLY_TIMEOUT_S
    finally:
        stop.set()
        jumper.join(5.0)
    assert time.time.call_count > 0  # pyvisa-py's reads ask it
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_cancel_racing_completion_gives_exactly_one_final_state(backend) -> None:
    """Cancel at random moments around a job's end: each job ends DONE or CANCELLED, the
    state never changes afterwards, ``cancel()`` said True exactly for the cancelled ones,
    and ``result()`` agrees."""
    rng = random.Random(20261129)
    program = native(backend, 0)
    start = time.monotonic()
    backend.run(program, shots=SHOTS).result(timeout=60)
    job_s = time.monotonic() - start
    outcomes = []
    for _ in range(12):
        job = backend.run(program, shots=SHOTS)
        time.sleep(rng.uniform(0.0, 1.5 * job_s))
        said = job.cancel()
        try:
            counts = job.result(timeout=60).get_counts()
        except JobError as exc:
            assert "cancelled" in str(exc)
            counts = None
        final = job.status()
        assert final in (JobStatus.DONE, JobStatus.CANCELLED)
        assert said == (final is JobStatus.CANCELLED)
        assert (counts is None) == (final is JobStatus.CANCELLED)
        if counts is not None:
            assert counts.get("1", 0) > 0.85 * SHOTS
        assert [job.status() for _ in range(3)] == [final] * 3
        assert not job.cancel()
        outcomes.append(final)
    assert controller_status(backend)["state"] == "idle"


def _own_sockets() -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue
    return count


@contextlib.contextmanager
def temp_dir_for_new_files(directory: Path) -> Iterator[None]:
    """Temporary files created inside the block go to ``directory``."""
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(directory)
    tempfile.tempdir = None
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = old
        tempfile.tempdir = None


def assert_nothing_left(threads: set, sockets: int, pid: int, tmp: Path) -> None:
    """No thread or socket beyond those counted before, no simulator process ``pid``, no file
    in ``tmp`` (waits up to 10 s for threads to end)."""
    deadline = time.monotonic() + 10
    while True:
        extra = [t.name for t in threading.enumerate() if t.ident not in threads]
        more_sockets = _own_sockets() - sockets
        if not extra and more_sockets <= 0:
            break
        assert time.monotonic() < deadline, (extra, more_sockets)
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert list(tmp.iterdir()) == []


def test_shutdown_leaves_no_threads_sockets_or_files(lab_home, tmp_path) -> None:
    """A provider that ran jobs and is closed leaves no thread, socket, process or file of its
    own behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    threads = {t.ident for t in threading.enumerate()}
    sockets = _own_sockets()
    with temp_dir_for_new_files(tmp):
        provider = LabProvider()
    pid = provider.simulator.pid
    assert_right(provider.backend())
    provider.close()
    assert_nothing_left(threads, sockets, pid, tmp)


# ----------------------------------------------------------------------------- soak

#: Length of the soak (s); LABQPU_SOAK_S shortens it for a quick local look.
SOAK_S = float(os.environ.get("LABQPU_SOAK_S", "120"))
#: Every job of the soak ends within this bound (s): its own run limit (5 s) and abort, plus
#: the jobs of the other two submitters ahead of it, each as long, plus slack.
SOAK_JOB_BOUND_S = 60.0
SOAK_SHOTS = 100
#: Crashes of the simulator a soak injects at most (each one is started again).
SOAK_CRASHES = 2


def random_fault(rng: random.Random, crash: bool) -> dict:
    """One fault of any kind the simulator can fire; a crash only when ``crash`` (the provider
    starts its simulator again at most MAX_RESTARTS times in 10 minutes)."""
    kinds = ["drop", "delay", "corrupt", "hang", "stall", "lo_change"]
    kind = rng.choice([*kinds, "crash"] if crash else kinds)
    ops = ["hello", "upload", "run", "fetch", "status", "abort"]
    if kind == "drop":
        return {"kind": kind, "on": rng.choice(ops)}
    if kind == "delay":
        return {"kind": kind, "on": rng.choice(ops), "delay_s": round(rng.uniform(0.1, 2.5), 2)}
    if kind == "corrupt":
        return {"kind": kind, "on": rng.choice(["upload", "run", "fetch"]),
                "mode": rng.choice(["header", "array"])}
    if kind == "hang":
        return {"kind": kind, "on": "*", "duration_s": round(rng.uniform(0.3, 2.5), 2)}
    if kind in ("stall", "crash"):
        return {"kind": kind, "on": rng.choice(["start", "end"])}
    instrument, setting, value, channel = rng.choice([
        ("lo_drive_a", "output_on", False, 1), ("lo_drive_b", "power_dbm", -100.0, 1),
        ("lo_drive_a", "frequency_hz", 4.5e9, 1), ("lo_readout", "output_on", False, 1),
        ("flux_bias", "current_a", 0.0, rng.randint(1, 5))])
    return {"kind": kind, "on": "start", "instrument": instrument, "setting": setting,
            "value": value, "channel": channel}


def pattern_circuit(mask: int) -> QuantumCircuit:
    """X on the qubits whose bit is set in ``mask``, every qubit measured: the most frequent
    outcome must be ``mask`` itself. A result credited to another job, played with a wrong
    LO or bias, or damaged on the wire would fail that."""
    qc = QuantumCircuit(5, 5, name=f"pattern{mask:05b}")
    for q in range(5):
        if mask >> q & 1:
            qc.x(q)
    qc.measure(range(5), range(5))
    return qc


@pytest.mark.slow
def test_soak_random_faults_while_three_threads_submit(lab_home, tmp_path) -> None:
    """For SOAK_S seconds three threads submit jobs (and now and then cancel one) while random
    faults fire at random, seeded times. Afterwards every job is DONE, ERROR or CANCELLED
    within its bound, every DONE result is right, and nothing is left behind."""
    seed = int(os.environ.get("LABQPU_SOAK_SEED", random.randrange(2**32)))
    print(f"soak seed {seed} (LABQPU_SOAK_SEED={seed} replays the fault schedule)")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    threads = {t.ident for t in threading.enumerate()}
    sockets = _own_sockets()
    with temp_dir_for_new_files(tmp):
        provider = LabProvider(faulty_lab(tmp_path), simulator=True)
    pid = provider.simulator.pid
    armed: list[tuple[float, dict]] = []
    jobs: list[tuple[object, list[int], bool, JobStatus | str]] = []
    errors: list[str] = []
    lock = threading.Lock()
    try:
        backend = provider.backend()
        control = FaultControl(provider.simulator.endpoints["fault_control"])
        programs = {mask: transpile(pattern_circuit(mask), backend,
                                    initial_layout=list(range(5))) for mask in range(32)}
        start = time.monotonic()
        end = start + SOAK_S

        def inject() -> None:
            rng = random.Random(seed)
            crashes = 0
            while time.monotonic() + 0.5 < end:
                time.sleep(rng.uniform(0.3, 3.0))
                fault = random_fault(rng, crash=crashes < SOAK_CRASHES)
                try:
                    control.arm(**fault)
                except TimeoutError:  # crashed, not yet started again by the next job
                    continue
                crashes += fault["kind"] == "crash"
                armed.append((round(time.monotonic() - start, 2), fault))

        def submit(worker: int) -> None:
            rng = random.Random(seed * 7 + worker)
            while time.monotonic() < end:
                masks = [rng.randrange(32) for _ in range(rng.randint(1, 2))]
                job = backend.run([programs[m] for m in masks], shots=SOAK_SHOTS, timeout=5.0)
                cancelled = rng.random() < 0.1
                if cancelled:
                    time.sleep(rng.uniform(0.0, 0.5))
                    job.cancel()
                try:  # a JobTimeoutError leaves the job QUEUED or RUNNING: not final
                    job.result(timeout=SOAK_JOB_BOUND_S)
                    status: JobStatus | str = job.status()
                except JobError as exc:
                    status = job.status()
                    errors.append(str(exc)[:200])
                except Exception as exc:
                    status = f"{type(exc).__name__}: {exc}"
                with lock:
                    jobs.append((job, masks, cancelled, status))

        workers = [threading.Thread(target=submit, args=(i,), name=f"soak-{i}")
                   for i in range(3)]
        injector = threading.Thread(target=inject, name="soak-faults")
        for thread in (*workers, injector):
            thread.start()
        for thread in (*workers, injector):
            thread.join(SOAK_S + 2 * SOAK_JOB_BOUND_S)
            assert not thread.is_alive(), f"{thread.name} still busy (seed {seed})"
        with contextlib.suppress(TimeoutError):  # down after a crash: the next job starts it
            control.disarm()
        assert_right(backend)  # nothing armed any more
        fired = control.fired()  # since the last crash
        log = f"seed {seed}; faults armed (s, fault): {armed}"
        finals = [status for _, _, _, status in jobs]
        assert all(s in (JobStatus.DONE, JobStatus.ERROR, JobStatus.CANCELLED)
                   for s in finals), (finals, log)
        wrong = []
        for job, masks, _, status in jobs:
            if status is not JobStatus.DONE:
                continue
            result = job.result()
            for i, mask in enumerate(masks):
                counts = result.get_counts(i)
                best = max(counts, key=counts.get)
                if int(best, 2) != mask or counts[best] < 0.5 * SOAK_SHOTS:
                    wrong.append((job.job_id(), mask, counts))
        assert wrong == [], (wrong, log)
        done = finals.count(JobStatus.DONE)
        print(f"soak: {len(jobs)} jobs, {done} done, {finals.count(JobStatus.ERROR)} error, "
              f"{finals.count(JobStatus.CANCELLED)} cancelled; {len(fired)} faults fired since "
              f"the last of {sum(f['kind'] == 'crash' for _, f in armed)} crashes armed; "
              f"errors: {errors}")
        assert done > 0 and (fired or provider.simulator.pid != pid), log
        assert_right(backend)  # the rack is healthy afterwards
    finally:
        pid = provider.simulator.pid
        provider.close()
    assert_nothing_left(threads, sockets, pid, tmp)
