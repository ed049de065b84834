"""Two labqpu processes on one rack: a job's settings, run and read-back are not interleaved
with another process's job (``labqpu.rack.lock``), so neither fails the other's read-back."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from qiskit import QuantumCircuit

from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InstrumentCommandError, JobCancelledError, RackBusyError
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.pulse.compiler import compile_circuit
from labqpu.rack.config import default_config_path, load_config
from labqpu.rack.hardware import RackConnection, RunRequest
from labqpu.rack.lock import RackLock, rack_lock_path
from labqpu.store import CalibrationStore, SnapshotBuilder


@contextlib.contextmanager
def _held_by_a_thread(lock: RackLock) -> Iterator[threading.Event]:
    """``lock`` held by a thread of its own inside, until the event yielded is set (or the
    block ends)."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock.held(1.0):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        yield release
    finally:
        release.set()
        holder.join(10)


def test_a_held_lock_keeps_another_holder_out_until_its_release(tmp_path) -> None:
    """Two locks on one file (two processes' open files, as far as ``flock`` is concerned):
    the second waits while the first holds, fails after its timeout naming the holder's
    process, stops waiting when cancelled, and gets in once the first lets go."""
    path = tmp_path / "rack.lock"
    first, second = RackLock(path), RackLock(path)
    try:
        with _held_by_a_thread(first) as release:
            t0 = time.monotonic()
            with pytest.raises(RackBusyError, match=rf"in use by another labqpu process \(pid "
                                                    rf"{os.getpid()} lock \w+ since .*waited its "
                                                    r"whole time limit \(0.2 s\)"), \
                    second.held(0.2):
                pass
            assert 0.2 <= time.monotonic() - t0 < 2.0
            cancel = threading.Event()
            threading.Timer(0.1, cancel.set).start()
            with pytest.raises(JobCancelledError), second.held(30.0, cancel):
                pass
            threading.Timer(0.1, release.set).start()
            t0 = time.monotonic()
            with second.held(5.0):
                assert 0.05 < time.monotonic() - t0 < 4.0
    finally:
        first.close()
        second.close()


def test_a_hold_learns_that_another_holder_set_instruments(tmp_path) -> None:
    path = tmp_path / "rack.lock"
    ours, theirs = RackLock(path), RackLock(path)
    try:
        with ours.held(1.0) as others_set:
            assert not others_set  # a new file
            ours.mark_set()
        with ours.held(1.0) as others_set:
            assert not others_set  # its own setting
        with theirs.held(1.0) as others_set:
            assert others_set  # ours set them since theirs last held (never)
            theirs.mark_set()
        with ours.held(1.0) as others_set:
            assert others_set
        with ours.held(1.0) as others_set:
            assert not others_set
    finally:
        ours.close()
        theirs.close()


def test_the_lock_file_names_the_rack_and_every_user_can_open_it(tmp_path, config) -> None:
    fixed = config.with_endpoints({c.name: "tcp://127.0.0.1:47000" for c in config.controllers})
    path = rack_lock_path(fixed, tmp_path)
    named = config.with_endpoints({c.name: "tcp://localhost:47000" for c in config.controllers})
    assert rack_lock_path(named, tmp_path) == path  # the same rack, the same file
    other = config.with_endpoints({c.name: "tcp://127.0.0.1:47001" for c in config.controllers})
    assert rack_lock_path(other, tmp_path) != path
    # A review's case: one wiring with ``TCPIP0::``, another with ``TCPIP::`` took two locks
    # (6-16 of 30 jobs each failed verification beside the other's flux bias)
    spellings = [(f"TCPIP0::127.0.0.1::{47100 + n}::SOCKET",
                  f"tcpip::LOCALHOST::0{47100 + n}::socket") for n in range(len(fixed.instruments))]
    first, second = ({i.name: spelled[k] for i, spelled in zip(fixed.instruments, spellings,
                                                              strict=True)} for k in (0, 1))
    assert rack_lock_path(fixed.with_endpoints(first), tmp_path) \
        == rack_lock_path(fixed.with_endpoints(second), tmp_path)
    moved = {**first, fixed.instruments[0].name: "TCPIP0::127.0.0.1::47099::SOCKET"}
    assert rack_lock_path(fixed.with_endpoints(moved), tmp_path) \
        != rack_lock_path(fixed.with_endpoints(first), tmp_path)
    # and VISA's other resources, with their defaults (a second review's case)
    for one, other in (("TCPIP::localhost::INSTR", "tcpip0::127.0.0.1::INST0::instr"),
                       ("GPIB::12::INSTR", "gpib0::12::instr")):
        name = fixed.instruments[0].name
        assert rack_lock_path(fixed.with_endpoints({**first, name: one}), tmp_path) \
            == rack_lock_path(fixed.with_endpoints({**first, name: other}), tmp_path)
    lock = RackLock(path)
    old = os.umask(0o077)
    try:
        with lock.held(1.0):
            pass
    finally:
        os.umask(old)
        lock.close()
    assert path.stat().st_mode & 0o777 == 0o666


@pytest.mark.parametrize("kind", ["missing folder", "symbolic link", "folder"])
def test_a_lock_file_that_cannot_be_used_runs_without_it_saying_so(tmp_path, caplog,
                                                                    kind) -> None:
    """A lock path in a missing folder, a folder, or a symbolic link (another user's, to a
    file of yours: it was followed and the file overwritten): warned about once, jobs run
    without the lock, and nothing is written through the link."""
    path = tmp_path / "rack.lock"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    if kind == "missing folder":
        path = tmp_path / "missing-folder" / "rack.lock"
    elif kind == "symbolic link":
        path.symlink_to(victim)
    else:
        path.mkdir()
    lock = RackLock(path)
    with caplog.at_level("WARNING", logger="labqpu.rack.lock"):
        for _ in range(2):
            with lock.held(1.0) as others_set:
                assert not others_set
    lock.close()
    assert sum("cannot use the rack's lock file" in r.getMessage()
               for r in caplog.records) == 1
    assert victim.read_text() == "keep me"


def test_a_lock_file_removed_is_opened_again_at_the_next_hold(tmp_path) -> None:
    """Someone removes the lock file (a temporary-file cleaner): the next process creates a
    new one, and a process that had the old one open takes the new one at its next hold, so
    the two exclude each other again."""
    path = tmp_path / "rack.lock"
    first, second = RackLock(path), RackLock(path)
    with first.held(1.0):
        pass
    path.unlink()
    try:
        with _held_by_a_thread(second), pytest.raises(RackBusyError), first.held(0.2):
            pass
    finally:
        first.close()
        second.close()


def test_a_stopped_holder_is_named_as_stopped(tmp_path, caplog) -> None:
    """Another process holds the rack and is stopped (Ctrl-Z): a job waiting for it says so
    after a second (a warning: on the command line, a line on stderr), and the job that waited
    its time limit too, with how to resume it."""
    path = tmp_path / "rack.lock"
    code = ("import sys, time\nfrom labqpu.rack.lock import RackLock\n"
            f"with RackLock({str(path)!r}).held(5.0):\n"
            "    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lock = RackLock(path)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGSTOP)
        with caplog.at_level("WARNING", logger="labqpu.rack.lock"), \
                pytest.raises(RackBusyError, match=rf"pid {holder.pid} lock \w+ since \S+, "
                                                   rf"stopped: resume it with `kill -CONT "
                                                   rf"{holder.pid}`"), \
                lock.held(1.3):
            pass
        (said,) = [r.getMessage() for r in caplog.records]
        assert said.startswith(f"waiting for the rack: it is in use by another labqpu process "
                               f"(pid {holder.pid} lock ")
        assert "this job waits up to its time limit (1.3 s)" in said
    finally:
        lock.close()
        holder.kill()
        holder.wait(10)
        holder.stdout.close()


def test_a_holder_that_is_not_labqpu_is_not_named_by_the_last_labqpus_pid(tmp_path) -> None:
    """A review's case: a lab's script holding the lock file with ``flock`` was reported as
    the pid the last labqpu holder wrote in the file, a process long gone."""
    path = tmp_path / "rack.lock"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    last = RackLock(path)
    try:
        with last.held(1.0):
            pass
    finally:
        last.close()
    text = path.read_text()
    path.write_text(text.replace(text.split()[1], gone.stdout.strip(), 1))  # its last holder
    code = (f"import fcntl, time\nf = open({str(path)!r}, 'rb')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n")
    script = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lock = RackLock(path)
    try:
        assert script.stdout.readline().strip() == "held"
        with pytest.raises(RackBusyError, match=rf"in use by another process: the lock file "
                                                rf"names pid {gone.stdout.strip()} lock .*held "
                                                rf"by a program other than labqpu"), \
                lock.held(0.3):
            pass
    finally:
        lock.close()
        script.kill()
        script.wait(10)
        script.stdout.close()


def test_a_waiter_that_never_takes_its_turn_costs_one_turn(tmp_path) -> None:
    """A process waiting for the rack stops (its shared lock on the queue file stays): the
    holder gives it one turn (at most 50 ms), then takes the rack without waiting for it; 20
    holds took 1 s when each waited its turn."""
    path = tmp_path / "rack.lock"
    lock = RackLock(path)
    with lock.held(1.0):
        pass
    stopped_waiter = os.open(lock.queue_path, os.O_RDWR)
    try:
        fcntl.flock(stopped_waiter, fcntl.LOCK_SH)
        t0 = time.monotonic()
        for _ in range(20):
            with lock.held(1.0):
                pass
        assert time.monotonic() - t0 < 0.5
    finally:
        os.close(stopped_waiter)
        lock.close()


def test_an_embedded_simulator_on_fixed_ports_is_locked_one_on_picked_ports_is_not(
        tmp_path, monkeypatch) -> None:
    """A simulator a provider starts on the ports its wiring names can be reached by other
    processes (they know the ports), so its jobs take the rack lock; one on ports it picked
    (the default device) cannot, and takes none."""
    import socket
    import tempfile

    from labqpu import LabProvider
    from labqpu.testing import use_fresh_home

    use_fresh_home(monkeypatch, tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ports = []
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    free = iter(ports)
    text = re.sub(r"127\.0\.0\.1(:|::)0\b", lambda m: f"127.0.0.1{m[1]}{next(free)}",
                  default_config_path().read_text())
    wiring = tmp_path / "lab.toml"
    wiring.write_text(text)
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    for config, locked in ((None, False), (wiring, True)):
        with LabProvider(config, simulator=True) as provider:
            backend = provider.backend()
            backend.run(qc, shots=10).result(timeout=60)
            assert rack_lock_path(provider.config).exists() == locked
    # While another process holds the rack, a job is QUEUED (a review: RUNNING, though it had
    # sent nothing); it runs once the rack is released.
    other = RackLock(rack_lock_path(load_config(wiring)))
    try:
        with LabProvider(wiring, simulator=True) as provider:
            backend = provider.backend()
            with _held_by_a_thread(other) as release:
                job = backend.run(qc, shots=10)
                seen = set()
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    seen.add(job.status().name)
                    time.sleep(0.02)
                assert seen == {"QUEUED"}, seen
                release.set()
                assert job.result(timeout=60).success
    finally:
        other.close()


@pytest.fixture(scope="module")
def simulated() -> Iterator[SimulatedRack]:
    with SimulatedRack(default_config_path(), seed=8) as rack:
        yield rack


def _program_at_flux(snapshot, channels, tmp_path, shift_a: float):
    """x + measure on qubit 0, compiled from ``snapshot`` with qubit 0's flux bias moved by
    ``shift_a`` (A), as another user's snapshot (or a flux calibration's sweep) has it."""
    builder = SnapshotBuilder.from_snapshot(snapshot)
    builder.set_qubit(0, "flux_bias_a", snapshot.qubit_value(0, "flux_bias_a") + shift_a,
                      "another user's snapshot")
    with CalibrationStore(tmp_path / f"store-{shift_a}.sqlite") as store:
        moved = store.commit(builder.build_document())
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    return compile_circuit(qc, moved, channels)


@pytest.mark.parametrize("locked", [True, False])
def test_two_processes_jobs_at_different_flux_biases_do_not_fail_each_other(
        simulated, snapshot, channels, tmp_path, locked) -> None:
    """Two rack connections (each with its own lock file descriptor, as two processes on one
    host have) run jobs in a loop whose programs want qubit 0's flux bias 20 µA apart, as a
    flux calibration beside another user's jobs does. With the rack lock, no job fails: each
    finds the other's setting before its run, sets its own and reads it back before the other
    can change it again. Without it (the case this prevents), jobs fail a read-back: the one
    after the run ("changed during the run"), or the one after setting the bias."""
    config = load_config(default_config_path()).with_endpoints(simulated.endpoints())
    path = rack_lock_path(config, tmp_path)
    programs = [_program_at_flux(snapshot, channels, tmp_path, shift) for shift in (0, 2e-5)]
    failures: list[str] = []
    done = [0, 0]
    order: list[int] = []

    def loop(i: int) -> None:
        connection = RackConnection(config, lock=RackLock(path) if locked else None)
        try:
            for n in range(25):
                request = RunRequest(shots=20, seed=n, rep_delay_s=50e-6, timeout_s=30,
                                     key=f"{i}-{n}")
                try:
                    connection.execute(programs[i], request, threading.Event())
                    done[i] += 1
                    order.append(i)
                except InstrumentCommandError as exc:  # a read-back found the other's
                    failures.append(str(exc))
        finally:
            connection.close()

    with ControllerClient(config.controllers[0].endpoint) as client:
        runs = client.status()["runs_total"]
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads)
        started = client.status()["runs_total"] - runs
    if locked:
        assert failures == [] and done == [25, 25]
        # they take turns: neither keeps the rack while the other waits
        assert 10 <= order[:25].count(1) <= 15, order
        # a job after the other's set its bias before its run: none started on the other's
        assert started == 50
    else:
        assert failures and all("flux bias flux_bias channel 1 " in f for f in failures), \
            failures
