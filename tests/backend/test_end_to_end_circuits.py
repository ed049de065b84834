"""Circuits through the whole stack: transpile -> compile -> VISA + ZeroMQ -> simulator process.

Circuits, their results and reproducibility bundles, jobs, the physics a mis-set instrument
shows, and the provider's embedded simulator restarted after it exits. Every test here talks to
the real firmware simulator over real sockets (one process for the session, started by the
``lab_provider`` fixture of ``labqpu.testing``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import platform
import signal
import threading
import time

import numpy as np
import pytest
import qiskit
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ClassicalRegister, Parameter
from qiskit.providers import JobError, JobStatus, JobTimeoutError

import labqpu
from labqpu import LabProvider
from labqpu.drivers.protocol import PROTOCOL_VERSION
from labqpu.errors import HardwareUnavailableError
from labqpu.pulse.program import LoSetting

SHOTS = 2000


@pytest.mark.parametrize("edge", [(0, 1), (1, 2), (2, 3), (3, 4)])
def test_bell_state_on_every_edge(lab_backend, edge, bell) -> None:
    """P(00) + P(11) >= 0.90 at 2000 shots on each calibrated edge."""
    # At Qiskit's default optimization level, as a user calls it; the layout is pinned so
    # that each edge is the one measured.
    native = transpile(bell(*edge), lab_backend, initial_layout=list(range(5)),
                       seed_transpiler=7)
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=11).result().get_counts()
    assert sum(counts.values()) == SHOTS
    assert (counts.get("00", 0) + counts.get("11", 0)) / SHOTS >= 0.90, counts


def test_a_backend_says_which_device_and_wiring_it_is(lab_backend) -> None:
    """Its repr was Python's default (``<labqpu.backend.backend.LabBackend object at 0x..>``)."""
    assert repr(lab_backend) == (f"<LabBackend 'lab5': 5 qubits, "
                                 f"{lab_backend.config.path}>")


def test_bell_state_is_coherent(lab_backend) -> None:
    """Undoing the Bell preparation returns |00>: the correlations are entanglement, not a
    classical mixture of 00 and 11 (which would give 25 % each here)."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(0, 1)
    qc.h(0)
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend, optimization_level=0)
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=3).result().get_counts()
    assert counts.get("00", 0) / SHOTS >= 0.85, counts


@pytest.mark.parametrize("qubit", range(5))
def test_x_flips_each_qubit(lab_backend, qubit) -> None:
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[qubit])
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=5).result().get_counts()
    assert counts.get("1", 0) / SHOTS >= 0.9, counts


def test_registers_split_and_memory_per_shot(lab_backend) -> None:
    qc = QuantumCircuit(2)
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    qc.add_register(a)
    qc.add_register(b)
    qc.x(1)
    qc.measure(0, a[0])
    qc.measure(1, b[1])
    native = transpile(qc, lab_backend)
    result = lab_backend.run(native, shots=200, memory=True, seed_simulator=2).result()
    counts = result.get_counts()
    assert max(counts, key=counts.get) == "10 0"
    memory = result.get_memory()
    assert len(memory) == 200
    assert memory.count("10 0") == counts["10 0"]
    assert result.results[0].header["creg_sizes"] == [["a", 1], ["b", 2]]


def test_result_records_the_calibration_snapshot(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    result = lab_backend.run(native, shots=100).result()
    assert result.to_dict()["calibration_snapshot_id"] == lab_backend.target.snapshot_id
    assert result.backend_name == "lab5"


def test_meas_level_1_returns_iq_per_shot_and_averaged(lab_backend) -> None:
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend)
    single = lab_backend.run(native, shots=300, meas_level=1, seed_simulator=1).result()
    iq = single.get_memory(0)
    assert iq.shape == (300, 1)
    assert np.iscomplexobj(iq)
    avg = lab_backend.run(native, shots=300, meas_level=1, meas_return="avg",
                          seed_simulator=1).result().get_memory(0)
    assert avg.shape == (1,)
    np.testing.assert_allclose(avg[0], iq[:, 0].mean(), rtol=1e-6)
    centers = lab_backend.snapshot.qubits[0]["discriminator"].value["centers"]
    c1 = complex(*centers[1])
    c0 = complex(*centers[0])
    assert abs(avg[0] - c1) < abs(avg[0] - c0)


def test_seed_makes_runs_repeatable(quiet_lab_backend, bell) -> None:
    """On a simulator without drift (``[simulator] noise = false``): with drift on, the device
    may have drifted between two runs (docs/simulator.md, "Noise")."""
    native = transpile(bell(), quiet_lab_backend)
    first = quiet_lab_backend.run(native, shots=500, memory=True, seed_simulator=99).result()
    second = quiet_lab_backend.run(native, shots=500, memory=True, seed_simulator=99).result()
    assert first.get_memory() == second.get_memory()


def test_counts_agree_with_the_memory_of_the_same_run(quiet_lab_backend, bell) -> None:
    """Counts without memory of a one-point run are computed by the hardware worker while the
    read-back after the run travels; with memory, and a merged sweep's points, by ``result()``.
    Seeded alike, both give the same counts, and those are the tally of the memory, for one
    circuit and for each of several in one job; a merged sweep's points each get their own
    counts."""
    native = transpile(bell(), quiet_lab_backend)
    plain = quiet_lab_backend.run(native, shots=500, seed_simulator=98).result()
    with_memory = quiet_lab_backend.run(native, shots=500, memory=True,
                                        seed_simulator=98).result()
    memory = with_memory.get_memory()
    assert plain.get_counts() == with_memory.get_counts()
    assert plain.get_counts() == {k: memory.count(k) for k in set(memory)}
    several = [transpile(bell(a, a + 1), quiet_lab_backend, initial_layout=list(range(5)))
               for a in (0, 1, 3)]  # different qubits, so different discriminators
    plain = quiet_lab_backend.run(several, shots=300, seed_simulator=96,
                                  merge_sweeps=False).result()
    with_memory = quiet_lab_backend.run(several, shots=300, memory=True, seed_simulator=96,
                                        merge_sweeps=False).result()
    for i in range(len(several)):
        memory = with_memory.get_memory(i)
        assert plain.get_counts(i) == {k: memory.count(k) for k in set(memory)}, i
    theta = Parameter("t")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    sweep = [transpile(qc.assign_parameters({theta: t}), quiet_lab_backend, initial_layout=[0])
             for t in (0.2, np.pi - 0.2)]
    job = quiet_lab_backend.run(sweep, shots=400, seed_simulator=97)
    assert job.uploads == 1
    counts = job.result().get_counts()
    assert counts[0].get("0", 0) > 360 and counts[1].get("1", 0) > 360, counts


def test_several_circuits_in_one_job(lab_backend) -> None:
    theta = Parameter("t")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    circuits = [transpile(qc.assign_parameters({theta: t}), lab_backend)
                for t in np.linspace(0, np.pi, 5)]
    result = lab_backend.run(circuits, shots=1000, seed_simulator=4).result()
    p1 = [result.get_counts(i).get("1", 0) / 1000 for i in range(5)]
    assert p1[0] < 0.1
    assert p1[-1] > 0.9
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(p1))


def test_the_largest_seed_runs_and_the_next_circuit_wraps_to_zero(quiet_lab_backend, bell) -> None:
    """Run i of a job gets (seed_simulator + i) mod 2**63, the protocol's range: the second
    circuit of a job seeded 2**63 - 1 draws exactly what a job seeded 0 draws."""
    native = transpile(bell(), quiet_lab_backend)
    pair = quiet_lab_backend.run([native, native], shots=200, memory=True,
                                 seed_simulator=2**63 - 1).result()
    zero = quiet_lab_backend.run(native, shots=200, memory=True, seed_simulator=0).result()
    assert pair.get_memory(1) == zero.get_memory(0)
    # each experiment says the seed it drew with (a review: the result did not say)
    assert [r.seed_simulator for r in pair.results] == [2**63 - 1, 0]
    assert zero.results[0].seed_simulator == 0 and zero.status == "COMPLETED"
    unseeded = quiet_lab_backend.run(native, shots=10).result().results[0]
    assert getattr(unseeded, "seed_simulator", None) is None


def test_a_circuit_without_classical_bits_has_no_outcomes(lab_backend) -> None:
    """As Qiskit's BasicSimulator: no classical bits, so empty counts and memory (not a
    made-up outcome '0')."""
    qc = QuantumCircuit(1)
    qc.x(0)
    result = lab_backend.run(transpile(qc, lab_backend), shots=50, memory=True).result()
    assert result.get_counts() == {}
    assert result.get_memory() == []


# ----------------------------------------------------------------------- jobs


def test_job_is_asynchronous_and_finishes(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    job = lab_backend.run([native] * 20, shots=2000)
    assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)
    with pytest.raises(JobTimeoutError, match="did not finish within"):
        job.result(timeout=1e-4)
    result = job.result(timeout=120)
    assert job.status() is JobStatus.DONE
    assert len(result.results) == 20


def test_a_bad_result_timeout_is_refused_and_an_infinite_one_waits(lab_backend, bell) -> None:
    """``result(timeout=...)`` takes None or seconds >= 0; inf (and a bound beyond what a wait
    can take) means no bound. A bad timeout is the caller's error, not the job's: the job
    still finishes and its result is there."""
    job = lab_backend.run(transpile(bell(), lab_backend), shots=100)
    for bad in (float("nan"), -1.0, "5", True):
        with pytest.raises(ValueError, match="timeout must be None or a number of seconds"):
            job.result(timeout=bad)
    assert job.result(timeout=float("inf")).success
    assert job.result(timeout=1e300).get_counts() == job.result().get_counts()
    assert job.result(timeout=10**400).success  # an int beyond any float: no bound
    assert job.status() is JobStatus.DONE


def test_sync_run_returns_a_finished_job(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    job = lab_backend.run(native, shots=100, sync=True)
    assert job.status() is JobStatus.DONE


def test_an_interrupted_sync_run_cancels_its_job(lab_backend, bell, monkeypatch) -> None:
    """Ctrl-C while ``run(..., sync=True)`` waits leaves the caller no job to cancel (a review:
    the orphan kept the rack 15 s and the next job waited behind it); the job is cancelled and
    the interrupt says so. The jobs are watched through a spy on ``LabJob.submit``."""
    from labqpu.backend.job import LabJob

    native = transpile(bell(), lab_backend)
    lab_backend.run(native, shots=10).result(timeout=60)
    jobs, submit = [], LabJob.submit
    interrupt = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))

    def watched(job: LabJob) -> None:
        jobs.append(job)
        submit(job)
        if len(jobs) == 1:
            interrupt.start()  # the Ctrl-C lands while run() waits for the job

    monkeypatch.setattr(LabJob, "submit", watched)
    try:
        with pytest.raises(KeyboardInterrupt) as caught:
            lab_backend.run([native] * 100, shots=20000, sync=True)
    finally:
        interrupt.cancel()
    job = jobs[0]
    assert f"job {job.job_id()} was cancelled: run() with sync=True was interrupted" in \
        "".join(caught.value.__notes__)
    job.wait_for_final_state(timeout=30)
    assert job.status() is JobStatus.CANCELLED
    assert lab_backend.run(native, shots=10).result(timeout=60).success


def test_wait_for_final_state_returns_when_the_job_ends_and_keeps_its_timeout(lab_backend,
                                                                              bell) -> None:
    """Qiskit's ``JobV1.wait_for_final_state`` looks every ``wait`` (5) seconds: a review's
    10 ms job took 5.0 s to wait for, and ``timeout=0.1`` raised after 5.0 s."""
    native = transpile(bell(), lab_backend)
    lab_backend.run(native, shots=10).result(timeout=60)
    seen = []
    job = lab_backend.run(native, shots=10)
    t0 = time.monotonic()
    job.wait_for_final_state(timeout=60, callback=lambda *a: seen.append(a[1]))
    assert time.monotonic() - t0 < 4.0
    assert job.status() is JobStatus.DONE
    assert all(status in (JobStatus.QUEUED, JobStatus.RUNNING) for status in seen)
    long = lab_backend.run([native] * 100, shots=20000)
    t0 = time.monotonic()
    with pytest.raises(JobTimeoutError, match=r"did not finish within 0\.2 s"):
        long.wait_for_final_state(timeout=0.2)
    assert time.monotonic() - t0 < 4.0
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="wait must be"):
            long.wait_for_final_state(wait=bad)
    assert long.cancel()


def test_instrument_error_reaches_the_user(lab_backend, bell) -> None:
    """A program only the controller can refuse fails the job with the controller's own
    message: two plays each within DAC full scale, overlapping on one port, whose sum exceeds
    it (the backend checks each play; the controller renders the port)."""
    from labqpu.pulse.program import ProgramBuilder

    native = transpile(bell(), lab_backend)
    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("ones", 40), lambda: np.ones(40, np.complex64))
    b.play(0, 0, wid, 0.6)
    b.play(0, 20, wid, 0.6)
    b.acquire(0, 60, 100, 0.0, 0, 0)
    job = lab_backend.run(b.build(num_clbits=1, header={"name": "overlap"}), shots=10,
                          meas_level=1)
    with pytest.raises(JobError, match="full scale"):
        job.result(timeout=60)
    assert job.status() is JobStatus.ERROR
    # The hardware path is still usable afterwards.
    assert lab_backend.run(native, shots=10).result(timeout=60).success


def test_cancel_a_queued_job(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    blocker = lab_backend.run([native] * 30, shots=2000)
    queued = lab_backend.run(native, shots=100)
    assert queued.cancel()
    assert queued.status() is JobStatus.CANCELLED
    with pytest.raises(JobError, match="cancelled"):
        queued.result(timeout=60)
    assert blocker.result(timeout=120).success


# ----------------------------------------------------------------------- physics via VISA


def _p1_of_x(backend, program) -> float:
    result = backend.run(program, shots=SHOTS, seed_simulator=21).result(timeout=60)
    return result.get_counts().get("1", 0) / SHOTS


@pytest.mark.parametrize(("repeats", "min_drop"), [(1, 0.05), (5, 0.2)])
def test_detuned_drive_lo_degrades_x(lab_backend, repeats, min_drop) -> None:
    """The LO frequency travels over VISA to the simulated source; 5 MHz off, X gates no
    longer flip the qubit cleanly (the error grows with the number of gates). The next job
    sets the calibrated LO again."""
    qc = QuantumCircuit(1, 1)
    for _ in range(repeats):
        qc.x(0)
    qc.measure(0, 0)
    program = lab_backend.run(transpile(qc, lab_backend, initial_layout=[0],
                                        optimization_level=0), shots=10).programs[0]
    lo_name = lab_backend.config.qubits[0].drive_lo
    good = program.lo_settings[lo_name]
    detuned = dataclasses.replace(program, lo_settings={
        **program.lo_settings, lo_name: LoSetting(good.frequency_hz + 5e6, good.power_dbm)})
    p_good = _p1_of_x(lab_backend, program)
    p_bad = _p1_of_x(lab_backend, detuned)
    assert p_good >= 0.9
    assert p_bad <= p_good - min_drop, (p_good, p_bad)
    assert _p1_of_x(lab_backend, program) >= 0.9


def test_starved_lo_power_means_no_drive(lab_backend) -> None:
    """The LO power also travels over VISA: at -40 dBm the mixer hardly converts."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    program = lab_backend.run(transpile(qc, lab_backend, initial_layout=[0]),
                              shots=10).programs[0]
    lo_name = lab_backend.config.qubits[0].drive_lo
    starved = dataclasses.replace(program, lo_settings={
        **program.lo_settings,
        lo_name: LoSetting(program.lo_settings[lo_name].frequency_hz, -40.0)})
    assert _p1_of_x(lab_backend, starved) < 0.1


def test_gate_on_a_neighbour_during_readout_runs(lab_backend) -> None:
    """A CZ on (2, 3) next to a measured qubit 1 is scheduled before the readout, so the
    circuit runs instead of tripping the simulator's mid-circuit check."""
    qc = QuantumCircuit(5, 1)
    qc.x(1)
    qc.cz(2, 3)
    qc.measure(1, 0)
    counts = lab_backend.run(qc, shots=500, seed_simulator=8).result(timeout=60).get_counts()
    assert counts.get("1", 0) > 450


def test_provider_closed_is_a_clear_error(lab_home, bell) -> None:
    from labqpu import LabProvider
    from labqpu.errors import LabQpuError

    provider = LabProvider()
    backend = provider.backend()
    native = transpile(bell(), backend)
    provider.close()
    with pytest.raises(LabQpuError, match="provider was closed"):
        backend.run(native)
    with pytest.raises(LabQpuError, match="provider was closed"):  # accepted until 2026-12-07
        backend.set_options(shots=100)
    assert backend.options.shots == 1024


def test_a_dead_embedded_simulator_is_started_again_for_the_next_job(lab_home,
                                                                     caplog, bell) -> None:
    """The provider's own simulator killed between jobs: the next job starts it again on the
    same endpoints (a warning names the exit) and runs right."""
    import os
    import signal

    from labqpu import LabProvider

    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        assert backend.run(native, shots=10).result(timeout=60).success
        pid, endpoints = provider.simulator.pid, dict(provider.simulator.endpoints)
        os.kill(pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        with caplog.at_level(logging.WARNING, logger="labqpu.backend.provider"):
            counts = backend.run(native, shots=400).result(timeout=120).get_counts()
        assert counts.get("00", 0) + counts.get("11", 0) > 360, counts
        assert provider.simulator.pid != pid
        assert provider.simulator.endpoints == endpoints
        assert f"(pid {pid}) exited with code -9" in caplog.text
        assert "started it again" in caplog.text
        assert backend.hardware_status(timeout_s=30)


def test_a_simulator_that_keeps_exiting_is_left_down_and_named(lab_home, monkeypatch, bell) -> None:
    import os
    import signal

    from labqpu import LabProvider
    from labqpu.backend import provider as provider_module

    monkeypatch.setattr(provider_module, "MAX_RESTARTS", 1)
    # wide enough for a restart and a job on a loaded host (3 s were not)
    monkeypatch.setattr(provider_module, "RESTART_WINDOW_S", 60.0)
    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        os.kill(provider.simulator.pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        assert backend.run(native, shots=10).result(timeout=120).success  # started again
        os.kill(provider.simulator.pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        job = backend.run(native, shots=10)
        with pytest.raises(JobError, match=r"firmware simulator .* exited .*2 times within 60 s, "
                                           r"so it is not started again for another \d+ s"):
            job.result(timeout=60)
        with pytest.raises(HardwareUnavailableError, match=r"firmware simulator .* exited"):
            backend.hardware_status(timeout_s=30)  # not what it said while it was alive
        # down for at most the window, as the message says (it said "open a new provider"):
        # a window of 1 s has passed
        monkeypatch.setattr(provider_module, "RESTART_WINDOW_S", 1.0)
        time.sleep(1.0)
        assert backend.run(native, shots=10).result(timeout=120).success


def test_run_options_belong_to_their_job(lab_backend, bell) -> None:
    """A run option changes that job only, and the job keeps the tags it was run with, whatever
    happens to the caller's list (or the backend's default list) afterwards."""
    native = transpile(bell(), lab_backend)
    before = dict(lab_backend.options.__dict__)
    defaults = ["default"]
    lab_backend.set_options(job_tags=defaults)
    try:
        tags = ["first"]
        job = lab_backend.run(native, shots=50, job_tags=tags, rep_delay=2e-4)
        tags.append("later")
        plain = lab_backend.run(native, shots=50)
        defaults.append("changed")
        assert job.result(timeout=60).header["job_tags"] == ["first"]
        assert plain.result(timeout=60).header["job_tags"] == ["default"]
        assert lab_backend.options.rep_delay == before["rep_delay"]
        assert lab_backend.options.shots == before["shots"]
    finally:
        lab_backend.set_options(job_tags=None)


def test_every_result_carries_a_reproducibility_bundle(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    started = time.monotonic()
    job = lab_backend.run(native, shots=100)
    result = job.result(timeout=60)
    waited = time.monotonic() - started
    bundle = result.to_dict()["results"][0]["header"]["reproducibility"]
    program = job.programs[0]
    assert bundle["program_hash"] == program.content_hash
    assert bundle["waveform_hashes"] == [hashlib.sha256(program.waveform(i).tobytes())
                                         .hexdigest() for i in range(program.num_waveforms)]
    assert bundle["calibration_snapshot_id"] == lab_backend.snapshot.snapshot_id
    assert bundle["software"] == {"labqpu": labqpu.__version__, "qiskit": qiskit.__version__,
                                  "numpy": np.__version__,
                                  "python": platform.python_version()}
    assert result.backend_version == labqpu.__version__
    assert bundle["controller"]["protocol_version"] == PROTOCOL_VERSION
    assert bundle["controller"]["firmware"]
    assert 0 < bundle["controller"]["elapsed_s"] < waited  # the run, within the job
    assert result.time_taken == bundle["controller"]["elapsed_s"]  # as qiskit-aer's has one
    los = {r["instrument"] for r in bundle["instruments_before"] if "frequency_hz" in r}
    assert los == set(program.lo_settings)
    assert all(r["identity"] for r in bundle["instruments_after"])


@pytest.mark.slow
def test_the_shipped_calibration_gives_bell_above_095_on_every_edge(
    tmp_path, monkeypatch, bell
) -> None:
    """The shipped lab5 snapshot (measured by the bootstrap from the design values) on a fresh
    store: Bell P(00) + P(11) >= 0.95 on every edge, at Qiskit's default optimization level,
    20 000 shots each (sampling error ~0.0015), seeded so that the figures repeat."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        assert backend.snapshot.snapshot_id == 1
        fidelity = {}
        for edge in [(0, 1), (1, 2), (2, 3), (3, 4)]:
            native = transpile(bell(*edge), backend, initial_layout=list(range(5)),
                               seed_transpiler=7)
            counts = backend.run(native, shots=20000, seed_simulator=11).result().get_counts()
            fidelity[edge] = (counts.get("00", 0) + counts.get("11", 0)) / 20000
    assert min(fidelity.values()) >= 0.95, fidelity


def test_a_failed_restart_is_named_and_does_not_use_up_the_restarts(lab_home,
                                                                      monkeypatch, bell) -> None:
    """The controller's port taken when the simulator is started again: the job names the
    exit and the failed start; once the port is free, a later job starts it (a failed start
    is not one of the MAX_RESTARTS, here 1)."""
    import os
    import signal
    import socket

    from labqpu import LabProvider
    from labqpu.backend import provider as provider_module

    monkeypatch.setattr(provider_module, "MAX_RESTARTS", 1)
    monkeypatch.setattr(provider_module, "RETRY_START_AFTER_S", 0.2)
    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        pid = provider.simulator.pid
        port = int(provider.simulator.endpoints["ctrl0"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        with socket.create_server(("127.0.0.1", port)):
            job = backend.run(native, shots=10)
            with pytest.raises(JobError) as info:
                job.result(timeout=120)
        message = str(info.value)
        assert f"(pid {pid}) exited with code -9" in message, message
        assert "starting it again failed" in message and "Address" in message, message
        time.sleep(0.3)
        assert backend.run(native, shots=10).result(timeout=120).success
