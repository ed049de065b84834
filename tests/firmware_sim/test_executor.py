"""The simulated controller's firmware (``SimulatedController``): what it keeps between runs.

A held program's later runs reuse its parse (``SimulatedController._held``); these tests run
real programs through a ``SimulatedRack`` of lab5 over ZeroMQ and check that keeping the
parse changes no result and keeps nothing that could still change.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
from qiskit import QuantumCircuit

from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InstrumentCommandError
from labqpu.firmware_sim import executor as executor_module
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.program import PulseProgram
from labqpu.rack.config import default_config_path, load_config
from labqpu.store import Snapshot

BOUND_S = 30.0
SHOTS = 200


def _program() -> PulseProgram:
    """X on qubits 0 and 1, a readout of qubit 1, an X on qubit 1 when it read 1 (a
    feed-forward reset) and a readout of both, compiled for lab5."""
    config = load_config(default_config_path())
    envelope = json.loads((resources.files("labqpu") / "data" / config.seed_snapshot)
                          .read_text())
    snapshot = Snapshot.from_document(envelope["document"], snapshot_id=1)
    qc = QuantumCircuit(5, 3)
    qc.x([0, 1])
    qc.measure(1, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure([0, 1], [1, 2])
    return compile_circuit(qc, snapshot, config.channels, feedforward_latency_samples=200)


def _three_runs(program: PulseProgram) -> tuple[list[np.ndarray], int]:
    """IQ points of three seeded runs of one upload on a fresh lab5 rack, and how many parsed
    programs its controller keeps afterwards."""
    with SimulatedRack(default_config_path(), seed=5) as rack, \
            ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as client:
        program_id = client.upload(*program.to_wire())
        points = []
        for seed in (1, 2, 1):
            run_id = client.run(program_id, SHOTS, params={"seed": seed, "rep_delay_s": 1e-4})
            points.append(client.wait(run_id, timeout_s=BOUND_S)[1]["iq"])
        return points, len(rack.executor._parsed)


def test_a_held_programs_later_runs_give_what_parsing_anew_gives(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same three runs with the parse kept and with nothing kept give identical IQ
    points, run by run (the device drifts between runs, so runs 1 and 3 differ)."""
    program = _program()
    kept, held = _three_runs(program)
    monkeypatch.setattr(executor_module, "PARSED_PROGRAMS_KEPT", 0)
    anew, none_held = _three_runs(program)
    assert (held, none_held) == (1, 0)
    for a, b in zip(kept, anew, strict=True):
        assert a.shape == (SHOTS, 3)
        np.testing.assert_array_equal(a, b)


def test_only_read_only_arrays_are_kept_and_what_is_kept_is_read_only() -> None:
    """Arrays a caller can still write to are parsed on every run; a kept parse cannot be
    written to, so no run can change what a later one reads."""
    arrays, meta = _program().to_wire()
    writable = {name: np.array(a) for name, a in arrays.items()}
    with SimulatedRack(default_config_path(), seed=5) as rack:
        ex = rack.executor
        ex._held(writable, meta)
        assert not ex._parsed
        for a in writable.values():
            a.flags.writeable = False
        prog, ff = ex._held(writable, meta)
        assert ex._held(writable, meta)[0] is prog  # kept
        for part in (prog, ff):
            for name, value in vars(part).items():
                if isinstance(value, np.ndarray):
                    assert not value.flags.writeable, name


def test_a_program_over_the_byte_cap_is_parsed_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A program whose parsed arrays exceed ``PARSED_PROGRAM_BYTES`` is not kept."""
    monkeypatch.setattr(executor_module, "PARSED_PROGRAM_BYTES", 1024)
    _, held = _three_runs(_program())
    assert held == 0


@pytest.mark.parametrize("rep_delay_s", [1e308, 1.5])
def test_a_rep_delay_beyond_the_limit_fails_that_run_only(rep_delay_s: float) -> None:
    """A neighbour's run asking a repetition delay beyond ``max_rep_delay_s`` (1 s) fails
    naming it, and the device's simulated time does not move: 1e308 s made it infinite, and
    every later run of every client failed ("cannot convert float NaN to integer")."""
    arrays, meta = _program().to_wire()
    with SimulatedRack(default_config_path(), seed=5) as rack, \
            ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as neighbour, \
            ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as user:
        assert neighbour.hello()["capabilities"]["max_rep_delay_s"] == 1.0
        program_id = neighbour.upload(arrays, meta)
        before = rack.executor.sim_time_s
        run_id = neighbour.run(program_id, SHOTS, params={"rep_delay_s": rep_delay_s})
        with pytest.raises(InstrumentCommandError, match=r"rep_delay_s must be a number of "
                                                         r"seconds in 0\.\.1\.0"):
            neighbour.wait(run_id, timeout_s=BOUND_S)
        assert rack.executor.sim_time_s == before
        run_id = user.run(user.upload(arrays, meta), SHOTS, params={"rep_delay_s": 1.0})
        assert user.wait(run_id, timeout_s=BOUND_S)[1]["iq"].shape == (SHOTS, 3)
        assert 0 < rack.executor.sim_time_s - before < SHOTS * 1.01
