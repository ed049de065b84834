"""Bounds on the results a controller makes and keeps (a review's cases).

A neighbour that ran programs with many acquisitions at 10^6 shots and never fetched them grew
the simulator by ~300 MB a run (the controller kept 64 finished runs, whatever their size),
and such a run's results were larger than any reply may carry: it played for minutes, then its
fetch was refused. Now the finished runs' results are bounded in bytes (the session holding the
most loses its oldest first), and a run whose IQ would not fit one reply frame is refused
before it plays."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from importlib import resources

import numpy as np
import pytest
from qiskit import QuantumCircuit

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import ERR_UNKNOWN_RUN, MAX_FRAME_BYTES
from labqpu.errors import InstrumentCommandError
from labqpu.firmware_sim.controller_server import ControllerServer
from labqpu.firmware_sim.executor import MAX_RESULT_POINTS
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.firmware_sim.runs import DONE, FinishedRuns, Run
from labqpu.pulse.compiler import compile_circuit
from labqpu.rack.config import default_config_path, load_config
from labqpu.store import Snapshot

BOUND_S = 30.0


class ResultExecutor:
    """Returns ``params["points"]`` complex64 IQ points and as many bits (a stand-in device:
    the server, its sockets and its clients are real)."""

    def capabilities(self) -> dict:
        return {"sample_rate_hz": 1e9}

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Every program is valid."""

    def execute(self, arrays: dict, meta: dict, shots: int, params: dict,
                cancel: threading.Event) -> dict[str, np.ndarray]:
        points = int(params["points"])
        return {"iq": np.full(points, 1 + 1j, dtype=np.complex64),
                "bits": np.ones(points, dtype=np.uint8)}


RUN_BYTES = 10_000 * 9  # 10 000 points of IQ (8 bytes) and bits (1 byte)


@pytest.fixture
def server() -> Iterator[ControllerServer]:
    with ControllerServer(ResultExecutor(), max_result_bytes=3 * RUN_BYTES + 1000) as srv:
        yield srv


def _finished(client: ControllerClient, program_id: str, points: int) -> str:
    run_id = client.run(program_id, shots=1, params={"points": points})
    client.wait(run_id, timeout_s=BOUND_S)
    return run_id


def test_a_neighbour_that_never_fetches_loses_its_own_results_first(server) -> None:
    program = {"a": np.zeros(4, dtype=np.float64)}
    with ControllerClient(server.endpoint, timeout_s=5.0) as user, \
            ControllerClient(server.endpoint, timeout_s=5.0) as neighbour:
        assert user.hello()["limits"]["max_result_bytes"] == 3 * RUN_BYTES + 1000
        mine = _finished(user, user.upload(program, {}), 100)
        theirs_id = neighbour.upload(program, {})
        theirs = [_finished(neighbour, theirs_id, 10_000) for _ in range(6)]
        # three of the neighbour's large results and the user's small one fit; the
        # neighbour's oldest went first, the user's stays
        state, _, arrays = user.fetch(mine)
        assert state == DONE and arrays["iq"].shape == (100,)
        for run_id in theirs[:3]:
            with pytest.raises(InstrumentCommandError) as info:
                neighbour.fetch(run_id)
            assert info.value.remote_type == ERR_UNKNOWN_RUN
            assert f"{3 * RUN_BYTES + 1000} bytes of results" in str(info.value)
        for run_id in theirs[3:]:
            assert neighbour.fetch(run_id)[2]["iq"].shape == (10_000,)


def _run(run_id: str, session: str, points: int) -> Run:
    run = Run(run_id, None, None, "p", 1, {}, 0.0, session, state=DONE)
    run.results = {"iq": np.zeros(points, dtype=np.complex64)}
    return run


def test_the_count_bound_forgets_the_largest_holders_oldest_and_keeps_the_newest() -> None:
    kept = FinishedRuns(max_runs=2, max_bytes=1000)
    assert kept.add(_run("a", "s", 10)) == [] and kept.add(_run("b", "t", 10)) == []
    assert kept.add(_run("c", "t", 10)) == ["b"]  # the count: the oldest of t, which holds 2
    assert kept.add(_run("d", "s", 500)) == ["a", "c"]  # 4000 bytes: alone, kept
    assert kept.nbytes == 4000


def test_a_neighbours_many_runs_do_not_push_out_a_users_finished_run() -> None:
    """A review's case: while a user's fetch was retried (its reply lost), a neighbour's
    thousands of 1-shot runs pushed the user's finished run out of the 64 kept, and the
    retry failed "unknown, or forgotten"; the neighbour now loses its own oldest runs."""
    kept = FinishedRuns(max_runs=4, max_bytes=10**6)
    assert kept.add(_run("user", "u", 10)) == []
    forgotten = [run_id for n in range(100) for run_id in kept.add(_run(f"n{n}", "n", 1))]
    assert forgotten == [f"n{n}" for n in range(97)]  # never the user's


def test_the_byte_bound_weighs_each_session_with_its_newest_run() -> None:
    """A review's case: the session tally left out the newest run, so the user (400 + 96 B)
    lost a run to a neighbour whose newest run made it hold more (304 + 304 B)."""
    kept = FinishedRuns(max_runs=64, max_bytes=1000)
    for run_id, session, points in (("u1", "user", 50), ("u2", "user", 12),
                                    ("n1", "neighbour", 38)):
        assert kept.add(_run(run_id, session, points)) == []
    assert kept.add(_run("n2", "neighbour", 38)) == ["n1"]
    assert kept.nbytes == 400 + 96 + 304


def _many_readouts(rounds: int) -> QuantumCircuit:
    qc = QuantumCircuit(5, 5 * rounds)
    for r in range(rounds):
        qc.measure(range(5), range(5 * r, 5 * r + 5))
    return qc


def test_a_run_whose_iq_exceeds_a_reply_frame_is_refused_before_it_plays() -> None:
    """40 acquisitions at 10^6 shots are 4e7 IQ points (320 MB), beyond one frame (256 MiB):
    the run ends in an error naming the most shots this program may take, at once (played, it
    would take minutes and the wait below would time out); a run within the bound plays."""
    config = load_config(default_config_path())
    envelope = json.loads((resources.files("labqpu") / "data" / config.seed_snapshot)
                          .read_text())
    snapshot = Snapshot.from_document(envelope["document"], snapshot_id=1)
    program = compile_circuit(_many_readouts(8), snapshot, config.channels)
    assert program.acq_port.size == 40 and MAX_RESULT_POINTS < 10**6 * 40
    with SimulatedRack(default_config_path(), seed=5) as rack, \
            ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as client:
        assert client.hello()["capabilities"]["max_result_points"] == MAX_FRAME_BYTES // 8
        program_id = client.upload(*program.to_wire())
        run_id = client.run(program_id, 10**6, params={"seed": 1})
        with pytest.raises(InstrumentCommandError) as info:
            client.wait(run_id, timeout_s=BOUND_S)
        assert f"at most {MAX_RESULT_POINTS // 40} shots of this program" in str(info.value)
        _, arrays = client.wait(client.run(program_id, 20, params={"seed": 1}),
                                timeout_s=BOUND_S)
        assert arrays["iq"].shape == (20, 40)
