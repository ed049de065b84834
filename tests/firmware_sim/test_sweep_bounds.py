"""A controller-bound sweep (``param_sets``) of large programs (a review's case).

The controller checked every point of a sweep as a whole program before the first one ran,
and kept all of them parsed: 2000 points of a 300 000-play program grew the simulator by
~200 MB a second to 4.9 GB, and since nothing looked at the run's cancel event meanwhile, an
abort and the run's 1 s time limit took effect only after 25 s (4096 points of 999 000
plays reached 6 GB in 27 s, on the way to tens of GB). Now a point's parse is kept only while
the sweep's kept points fit ``PARSED_PROGRAM_BYTES``; the others are parsed again when their
turn comes, and the cancel event is looked at before each point."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import ERR_TIME_LIMIT
from labqpu.firmware_sim import executor as executor_module
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.rack.config import default_config_path

#: Plays of the large program: one parsed point holds ~20 MB of arrays.
PLAYS = 300_000
#: Longest a run may take beyond its time limit, or after its abort, to end (s).
BOUND_S = 3.0


def _program(plays: int) -> dict[str, np.ndarray]:
    """``plays`` 4-sample plays on output 0, one after another, whose amplitude is parameter
    0, then one acquisition on input 0."""
    return {
        "play_port": np.zeros(plays, np.int32),
        "play_start": np.arange(plays, dtype=np.int64) * 4,
        "play_wave": np.zeros(plays, np.int32), "play_amp": np.zeros(plays),
        "play_amp_ref": np.zeros(plays, np.int32), "play_phase_rad": np.zeros(plays),
        "play_freq_hz": np.zeros(plays), "wave_offset": np.array([0, 4], np.int64),
        "wave_data": np.full(4, 0.5, np.complex64), "acq_port": np.zeros(1, np.int32),
        "acq_start": np.array([4 * plays + 8], np.int64),
        "acq_duration": np.array([100], np.int64), "acq_freq_hz": np.zeros(1),
        "param_values": np.array([0.1]), "play_block": np.full(plays, -1, np.int32),
        "block_acq": np.zeros(0, np.int32), "block_value": np.zeros(0, np.int32),
        "shift_port": np.zeros(0, np.int32), "shift_start": np.zeros(0, np.int64),
        "shift_phase_rad": np.zeros(0), "shift_block": np.zeros(0, np.int32),
        "acq_disc_axis": np.zeros(1, np.complex128), "acq_disc_threshold": np.zeros(1),
    }


def _meta(plays: int) -> dict:
    return {"sample_rate_hz": 1e9, "duration_samples": 4 * plays + 200}


def _rows(points: int) -> list[list[float]]:
    return [[0.01 * (k % 50)] for k in range(points)]


@pytest.fixture(scope="module")
def simulator(lab_home: str) -> Iterator[tuple[int, str]]:
    """A simulator process of its own: (its pid, ctrl0's endpoint)."""
    with LabProvider() as provider:
        yield provider.simulator.pid, provider.simulator.endpoints["ctrl0"]


def _final(client: ControllerClient, run_id: str) -> tuple[str, dict, float]:
    """The run's final state and result, and when it was seen (``time.monotonic``)."""
    deadline = time.monotonic() + 60.0
    while (reply := client.fetch(run_id, wait_s=0.2))[0] in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not end within 60 s"
    return reply[0], reply[1], time.monotonic()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_a_sweep_of_large_points_keeps_memory_bounded_and_stops_at_its_time_limit(
        simulator, peak_rss_bytes) -> None:
    pid, endpoint = simulator
    before = peak_rss_bytes(pid)
    with ControllerClient(endpoint, timeout_s=30.0) as client:
        program_id = client.upload(_program(PLAYS), _meta(PLAYS))
        started = time.monotonic()
        run_id = client.run(program_id, 1, params={"param_sets": _rows(1500), "seed": 1},
                            time_limit_s=1.0)
        state, result, ended = _final(client, run_id)
        assert (state, result["error_type"]) == ("error", ERR_TIME_LIMIT), result
        assert ended - started < 1.0 + BOUND_S
        grown = peak_rss_bytes(pid) - before
        assert grown < 0.5e9, f"the simulator grew by {grown / 1e9:.2f} GB"
        # the controller serves the next run
        small = client.upload(_program(10), _meta(10))
        _, arrays = client.wait(client.run(small, 5, params={"seed": 2}), timeout_s=30.0)
        assert arrays["iq"].shape == (5, 1)


def test_an_abort_stops_a_sweep_while_its_points_are_checked(simulator) -> None:
    _, endpoint = simulator
    with ControllerClient(endpoint, timeout_s=30.0) as client:
        program_id = client.upload(_program(PLAYS), _meta(PLAYS))
        run_id = client.run(program_id, 1, params={"param_sets": _rows(1500), "seed": 1},
                            time_limit_s=600.0)
        time.sleep(0.3)
        aborted = time.monotonic()
        client.abort_quietly(run_id, timeout_s=5.0)
        state, result, ended = _final(client, run_id)
        assert state == "aborted", (state, result)
        assert ended - aborted < BOUND_S


def test_points_parsed_again_at_their_turn_give_the_kept_points_results(monkeypatch) -> None:
    """The same sweep with every point kept from its check and with none kept, each on a
    simulator of its own from the same seed."""
    plays = 50
    params = {"param_sets": [[0.1 * k] for k in range(8)], "seed": 7}
    results = []
    for room in (executor_module.PARSED_PROGRAM_BYTES, 0):
        monkeypatch.setattr(executor_module, "PARSED_PROGRAM_BYTES", room)
        with SimulatedRack(default_config_path(), seed=3) as rack:
            results.append(rack.executor.execute(_program(plays), _meta(plays), 200, params,
                                                 threading.Event()))
    kept, again = results
    assert kept["iq"].shape == (8 * 200, 1)
    np.testing.assert_array_equal(kept["bits"], again["bits"])
    np.testing.assert_array_equal(kept["iq"], again["iq"])
