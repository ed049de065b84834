"""A pulse program (or builder) built before a calibration commit and run after it: it plays
the settings of the snapshot it was built from, so its results are discriminated with that
snapshot's centres and name it. Before, the job took the newest snapshot's discriminator and
id while playing the old LO settings (a review swapped the newest snapshot's centres and got
the counts inverted, labelled with the newest snapshot)."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, transpile

from labqpu import LabProvider, pulse
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InvalidRunInputError, PulseError
from labqpu.pulse.program import MAX_CLBITS, PulseProgram
from labqpu.store import SnapshotBuilder


@pytest.fixture
def backend(tmp_path, monkeypatch):
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        yield provider.backend()


def _runs_total(backend) -> int:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=5.0) as client:
        return int(client.status()["runs_total"])


def _x_and_measure(backend):
    with pulse.build(backend) as builder:
        pulse.play(pulse.calibrated_drag(0), pulse.drive(0))
        pulse.measure(0, clbit=0)
    return builder.build()


def _commit_swapped_readout(backend) -> int:
    """Commit a snapshot whose qubit 0 has its drive LO 20 MHz higher (with the qubits that
    share it) and its discriminator's centres swapped: counts read with it from an old program
    come out inverted."""
    snapshot = backend.snapshot
    disc = snapshot.qubits[0]["discriminator"].value
    builder = SnapshotBuilder.from_snapshot(snapshot)
    lo = backend.config.qubits[0].drive_lo
    for q in [q for q, wiring in backend.config.qubits.items() if wiring.drive_lo == lo]:
        builder.set_qubit(q, "drive_lo_frequency_hz",
                          snapshot.qubits[q]["drive_lo_frequency_hz"].value + 20e6, "manual")
    builder.set_qubit(0, "discriminator", {**disc, "centers": disc["centers"][::-1]}, "manual")
    return backend.store.commit(builder.build_document()).snapshot_id


def test_a_program_built_before_a_commit_is_read_and_named_with_its_own_snapshot(
        backend) -> None:
    program = _x_and_measure(backend)
    built = program.snapshot_id
    newest = _commit_swapped_readout(backend)
    assert newest != built
    result = backend.run(program, shots=400, seed_simulator=3).result()
    assert result.to_dict()["calibration_snapshot_id"] == built
    assert result.get_counts().get("1", 0) > 360  # x read with its own snapshot's centres
    bundle = result.to_dict()["results"][0]["header"]["reproducibility"]
    played = {r["instrument"]: r["frequency_hz"] for r in bundle["instruments_before"]
              if "frequency_hz" in r}
    assert played["lo_drive_a"] == program.lo_settings["lo_drive_a"].frequency_hz
    fresh = backend.run(_x_and_measure(backend), shots=400, seed_simulator=3).result()
    assert fresh.to_dict()["calibration_snapshot_id"] == newest


def test_programs_of_two_snapshots_in_one_job_are_refused_before_anything_is_sent(
        backend) -> None:
    old = _x_and_measure(backend)
    _commit_swapped_readout(backend)
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    runs = backend.store.latest_id()
    with pytest.raises(InvalidRunInputError, match=r"one calibration snapshot; these were built "
                                                   r"from snapshots \[1, 2\]"):
        backend.run([old, transpile(qc, backend)], shots=10)
    assert backend.store.latest_id() == runs


def test_a_program_of_a_snapshot_the_store_does_not_hold_is_refused(backend) -> None:
    program = _x_and_measure(backend)
    foreign = program.with_header(program.header)
    object.__setattr__(foreign, "snapshot_id", 999)
    with pytest.raises(InvalidRunInputError, match=r"built from calibration snapshot 999, which "
                                                   r".* does not hold"):
        backend.run(foreign, shots=10)


@pytest.mark.parametrize("clbit", [MAX_CLBITS, 2**31 - 1, 2**31])
def test_a_classical_bit_beyond_the_bound_is_refused_by_the_builder(backend, clbit) -> None:
    """A clbit of 2**31 - 1 made counts keys 2**31 characters long (10 s, 2.2 GB for ten
    shots); 2**31 raised a bare ``OverflowError``."""
    with pytest.raises(PulseError, match=rf"clbit must be an int in 0..{MAX_CLBITS - 1}"), \
            pulse.build(backend):
        pulse.measure(0, clbit=clbit)


def test_a_program_of_another_stores_snapshot_of_the_same_id_is_refused(tmp_path,
                                                                        monkeypatch) -> None:
    """A review saved a program built on store A's snapshot 2 (its centres swapped) and ran it
    on store B, whose snapshot 2 is another: it ran, read with B's centres (counts inverted)
    and named "snapshot 2". Programs record the snapshot's content hash."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "a"))
    with LabProvider() as provider:
        a = provider.backend()
        _commit_swapped_readout(a)
        saved = _x_and_measure(a).to_bytes()
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "b"))
    with LabProvider() as provider:
        b = provider.backend()
        builder = SnapshotBuilder.from_snapshot(b.snapshot)
        builder.set_qubit(1, "t1_s", 0.9 * b.snapshot.qubits[1]["t1_s"].value, "manual")
        b.store.commit(builder.build_document())
        program = PulseProgram.from_bytes(saved)
        assert program.snapshot_id == b.snapshot.snapshot_id == 2
        assert program.snapshot_hash != b.snapshot.content_hash
        runs = _runs_total(b)
        with pytest.raises(InvalidRunInputError, match=r"built from a calibration snapshot 2 "
                                                       r"\(content [0-9a-f]{12}\) that is not "
                                                       r"snapshot 2 of .*build it again"):
            b.run(program, shots=10)
        assert _runs_total(b) == runs
        own = _x_and_measure(b)
        assert PulseProgram.from_bytes(own.to_bytes()).snapshot_hash == b.snapshot.content_hash
        assert sum(b.run(own, shots=10).result(timeout=60).get_counts().values()) == 10
