"""A rack of two controllers driving one device, and synchronised runs across them.

Every test talks to ``SimulatedRack`` controllers over real ZeroMQ with ``ControllerClient``.
The key test runs one physical program (X on qubits 2 and 3, their readout, and a
feed-forward reset of qubit 3) split over the two controllers of
``data/lab5_two_controllers.toml`` as a synchronised run, and checks that every IQ point, bit
and trace point is identical to the same program run as one program on the one-controller
lab5 rack with the same seed: the merged program acquires in the same order (leader first),
so the randomness is drawn in the same order.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from qiskit import QuantumCircuit

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import ERR_SYNC
from labqpu.errors import InstrumentCommandError
from labqpu.firmware_sim.device import Rack, load_rack
from labqpu.firmware_sim.feedforward import FeedForward
from labqpu.firmware_sim.physics import WireProgram
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.firmware_sim.sync import SyncPart, merge_parts
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.program import ProgramBuilder, PulseProgram
from labqpu.rack.config import default_config_path, load_config
from labqpu.store import Snapshot

TWO = Path(__file__).parent / "data" / "lab5_two_controllers.toml"
BOUND_S = 10.0
ARM_TIMEOUT_S = 1.0
SHOTS = 400
SEED = 11
REP_DELAY_S = 50e-6


def _snapshot_and_config():
    config = load_config(default_config_path())
    envelope = json.loads((resources.files("labqpu") / "data" / config.seed_snapshot)
                          .read_text())
    return Snapshot.from_document(envelope["document"], snapshot_id=1), config


def _reference_program() -> PulseProgram:
    """X on qubits 2 and 3, readout of both, then X on qubit 3 when its result was 1 (a
    feed-forward reset) and a second readout of qubit 3, compiled for lab5's one controller."""
    snapshot, config = _snapshot_and_config()
    qc = QuantumCircuit(5, 3)
    qc.x([2, 3])
    qc.measure([2, 3], [0, 1])
    with qc.if_test((qc.clbits[1], 1)):
        qc.x(3)
    qc.measure(3, 2)
    return compile_circuit(qc, snapshot, config.channels, feedforward_latency_samples=200)


def _controller_of(rack: Rack, port: int, kind: str) -> tuple[str, int]:
    """(controller, its own port) of rack-global ``port`` (``kind``: "output" or "input")."""
    for c in rack.controllers:
        base, count = ((c.output_base, c.outputs) if kind == "output"
                       else (c.input_base, c.inputs))
        if base <= port < base + count:
            return c.name, port - base
    raise AssertionError(f"no controller holds {kind} {port}")


def split(single: PulseProgram, wiring: Rack) -> dict[str, PulseProgram]:
    """The plays, phase shifts and acquisitions of ``single`` (lab5's ports) per controller of
    ``wiring``, each controller's built with ``ProgramBuilder`` at ``single``'s length, its
    acquisitions in ``single``'s order and blocks reading their own controller's results."""
    lab5 = load_rack(default_config_path())
    role_of = {}
    for q, cab in lab5.cabling.items():
        for role in ("drive", "flux", "readout"):
            role_of[getattr(cab, f"{role}_port")] = (q, role)
    acq_qubit = {cab.acquire_port: q for q, cab in lab5.cabling.items()}

    def out_port(port: int) -> tuple[str, int]:
        q, role = role_of[port]
        return _controller_of(wiring, getattr(wiring.cabling[q], f"{role}_port"), "output")

    builders = {c.name: ProgramBuilder(c.name, single.sample_rate_hz) for c in wiring.controllers}
    local_acq = {}
    for j in range(single.acq_port.shape[0]):
        ctrl, port = _controller_of(wiring, wiring.cabling[acq_qubit[int(single.acq_port[j])]]
                                    .acquire_port, "input")
        axis = complex(single.acq_disc_axis[j])
        local_acq[j] = (ctrl, builders[ctrl].acquire(
            port, int(single.acq_start[j]), int(single.acq_duration[j]),
            float(single.acq_freq_hz[j]), int(single.acq_qubit[j]), int(single.acq_clbit[j]),
            discriminator=None if axis == 0 else (axis, float(single.acq_disc_threshold[j]))))
    waves: dict[tuple[str, int], int] = {}
    for i in range(single.play_port.shape[0]):
        ctrl, port = out_port(int(single.play_port[i]))
        b, w = builders[ctrl], int(single.play_wave[i])
        if (ctrl, w) not in waves:
            waves[ctrl, w] = b.waves.add(("wave", w), lambda w=w: single.waveform(w))
        args = (port, int(single.play_start[i]), waves[ctrl, w], float(single.play_amp[i]),
                float(single.play_phase_rad[i]), float(single.play_freq_hz[i]))
        block = int(single.play_block[i])
        if block < 0:
            b.play(*args)
            continue
        owner, acq = local_acq[int(single.block_acq[block])]
        assert owner == ctrl, "a block may only read its own controller's acquisitions"
        with b.if_result(acq, int(single.block_value[block])):
            b.play(*args)
    for s in range(single.shift_port.shape[0]):
        ctrl, port = out_port(int(single.shift_port[s]))
        args = (port, int(single.shift_start[s]), float(single.shift_phase_rad[s]))
        block = int(single.shift_block[s])
        if block < 0:
            builders[ctrl].shift_phase(*args)
            continue
        _, acq = local_acq[int(single.block_acq[block])]
        with builders[ctrl].if_result(acq, int(single.block_value[block])):
            builders[ctrl].shift_phase(*args)
    return {name: b.build(duration_samples=single.duration_samples)
            for name, b in builders.items()}


def configure(rack: SimulatedRack, program: PulseProgram) -> None:
    """Set the LOs and flux-bias currents ``program`` needs on the rack's instruments, as
    the host does over VISA before a run."""
    for name, lo in program.lo_settings.items():
        rack.change_setting(name, "frequency_hz", lo.frequency_hz)
        rack.change_setting(name, "power_dbm", lo.power_dbm)
        rack.change_setting(name, "output_on", True)
    for (source, channel), amps in program.flux_bias_a.items():
        rack.change_setting(source, "current_a", amps, channel)
        rack.change_setting(source, "output_on", True, channel)


@pytest.fixture(scope="module")
def reference() -> PulseProgram:
    return _reference_program()


@pytest.fixture
def two() -> Iterator[SimulatedRack]:
    with SimulatedRack(TWO, seed=5, arm_timeout_s=ARM_TIMEOUT_S) as rack:
        yield rack


@pytest.fixture
def clients(two: SimulatedRack) -> Iterator[dict[str, ControllerClient]]:
    out = {name: ControllerClient(server.endpoint, timeout_s=BOUND_S)
           for name, server in two.controllers.items()}
    try:
        yield out
    finally:
        for client in out.values():
            client.close()


def _tiny(controller: str, duration: int = 100) -> PulseProgram:
    """A program with one acquisition on input 0 and nothing played."""
    b = ProgramBuilder(controller, 1e9)
    b.acquire(0, 0, 50, 0.0, 0, 0)
    return b.build(duration_samples=duration)


def _sync(role: str, group: str, other: str | list[str]) -> dict:
    if role == "leader":
        return {"group": group, "role": "leader", "followers": other}
    return {"group": group, "role": "follower", "leader": other}


def _state(client: ControllerClient, run_id: str, until: tuple[str, ...],
           bound_s: float = BOUND_S) -> tuple[str, dict]:
    """Poll ``run_id`` until its state is one of ``until`` (at most ``bound_s``)."""
    deadline = time.monotonic() + bound_s
    while True:
        state, result, _ = client.fetch(run_id)
        if state in until or time.monotonic() > deadline:
            return state, result
        time.sleep(0.01)


def _failure(client: ControllerClient, run_id: str) -> InstrumentCommandError:
    with pytest.raises(InstrumentCommandError) as info:
        client.wait(run_id, BOUND_S)
    return info.value


# --------------------------------------------------------------------------- wiring


def test_wiring_gives_each_controller_its_rack_ports(two: SimulatedRack) -> None:
    """ctrl1's outputs and inputs follow ctrl0's: its port p is rack port 9 + p (input 3 + p);
    every controller has its own endpoint, and ``failure`` watches all of them."""
    rack = two.rack
    assert [(c.name, c.output_base, c.input_base) for c in rack.controllers] == [
        ("ctrl0", 0, 0), ("ctrl1", 9, 3)]
    assert (rack.cabling[2].drive_port, rack.cabling[2].acquire_port) == (2, 2)
    assert (rack.cabling[3].drive_port, rack.cabling[3].readout_port,
            rack.cabling[3].acquire_port) == (9, 13, 3)
    endpoints = two.endpoints()
    assert endpoints["ctrl0"] != endpoints["ctrl1"]
    assert endpoints["ctrl0"].startswith("tcp://") and endpoints["ctrl1"].startswith("tcp://")
    assert two.failure() is None


@pytest.mark.parametrize(("old", "new", "message"), [
    ('drive = "ctrl1:0"', 'drive = "ctrl7:0"',
     r"qubit 3 drive names unknown controller 'ctrl7'"),
    ('acquire = "ctrl1:1"', 'acquire = "ctrl1:2"',
     r"qubit 4 acquire is 'ctrl1:2', but controller ctrl1 has inputs 0\.\.1"),
    ('flux = "ctrl0:5"', 'flux = "ctrl0:9"',
     r"qubit 2 flux is 'ctrl0:9', but controller ctrl0 has outputs 0\.\.8"),
    # a review's case: a second table for qubit 3 replaced the first without a word
    ("[qubits.3]", "[qubits.03]",
     r"\[qubits\.03\]: a qubit index is a number without leading zeros"),
])
def test_wiring_errors_name_qubit_role_and_file(tmp_path: Path, old: str, new: str,
                                                message: str) -> None:
    text = TWO.read_text()
    assert old in text
    path = tmp_path / "lab5_two_controllers.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=r"lab5_two_controllers\.toml: " + message):
        load_rack(path)


def test_controllers_at_different_sample_rates_are_refused(tmp_path: Path) -> None:
    text = TWO.read_text()
    second = text.index('name = "ctrl1"')
    path = tmp_path / "lab.toml"
    path.write_text(text[:second] + text[second:].replace("sample_rate_hz = 1.0e9",
                                                          "sample_rate_hz = 2.0e9", 1))
    with pytest.raises(ValueError, match=r"controller ctrl1 runs at 2000000000.0 Hz, "
                                         r"controller ctrl0 at 1000000000.0 Hz"):
        load_rack(path)


@pytest.mark.parametrize(("old", "new", "words"), [
    ("sample_rate_hz = 1.0e9", "sample_rate_hz = 2.0e9",
     r"controller ctrl0 runs at 2000000000.0 Hz \(wiring file {wiring}, sample_rate_hz\), the "
     r"device file lab5 says 1000000000.0 Hz \(\[device\] sample_rate_hz\): they must agree"),
    ('name = "lab5"', 'name = "lab-5"',
     r"device file lab5 is for device 'lab5', the wiring file {wiring} for 'lab-5'"),
])
def test_a_device_file_at_odds_with_the_wiring_names_both_files(tmp_path: Path, old: str,
                                                                new: str, words: str) -> None:
    """A review's case: the simulator's refusal named neither file."""
    from labqpu.firmware_sim.rack import SimulatedRack
    from labqpu.rack.config import default_config_path

    path = tmp_path / "lab.toml"
    text = default_config_path().read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=words.format(wiring=re.escape(str(path)))):
        SimulatedRack(path)


def test_hello_states_the_sync_capability(clients) -> None:
    for client in clients.values():
        caps = client.hello()["capabilities"]
        assert caps["sync"] == {"trigger": "star", "arm_timeout_s": ARM_TIMEOUT_S,
                                "max_controllers": 2}


# --------------------------------------------------------------------------- the key test


def test_a_synchronised_run_equals_the_same_program_on_one_controller(reference) -> None:
    """The program split over ctrl0 (qubit 2) and ctrl1 (qubit 3, with its feed-forward
    reset) and run as one synchronised run returns, per controller, exactly the columns (IQ,
    bits, traces) of the one-controller run with the same seed; and it did what it says:
    both qubits were excited and the reset brought qubit 3 back to 0."""
    assert [int(q) for q in reference.acq_qubit] == [2, 3, 3]
    params = {"seed": SEED, "rep_delay_s": REP_DELAY_S, "traces": "single",
              "trace_decimation": 50}
    with SimulatedRack(default_config_path(), seed=5) as one:
        configure(one, reference)
        alone = split(reference, one.rack)["ctrl0"]
        with ControllerClient(one.controller.endpoint, timeout_s=BOUND_S) as client:
            run_id = client.run(client.upload(*alone.to_wire()), SHOTS, params=params)
            _, ref = client.wait(run_id, 120.0)
    parts = split(reference, load_rack(TWO))
    assert [int(q) for q in parts["ctrl0"].acq_qubit] == [2]
    assert [int(q) for q in parts["ctrl1"].acq_qubit] == [3, 3]
    with SimulatedRack(TWO, seed=5) as two, \
            ControllerClient(two.controllers["ctrl0"].endpoint, timeout_s=BOUND_S) as c0, \
            ControllerClient(two.controllers["ctrl1"].endpoint, timeout_s=BOUND_S) as c1:
        configure(two, reference)
        follower = c1.run(c1.upload(*parts["ctrl1"].to_wire()), SHOTS, params={
            **params, "sync": _sync("follower", "key-test", "ctrl0")}, time_limit_s=120.0)
        leader = c0.run(c0.upload(*parts["ctrl0"].to_wire()), SHOTS, params={
            **params, "sync": _sync("leader", "key-test", ["ctrl1"])}, time_limit_s=120.0)
        _, res0 = c0.wait(leader, 120.0)
        _, res1 = c1.wait(follower, 120.0)
        clock = (two.executors["ctrl0"].sim_time_s, two.executors["ctrl1"].sim_time_s)
    assert res0["iq"].shape == (SHOTS, 1) and res1["iq"].shape == (SHOTS, 2)
    for name in ("iq", "bits", "traces"):
        np.testing.assert_array_equal(res0[name], ref[name][:, :1])
        np.testing.assert_array_equal(res1[name], ref[name][:, 1:])
    assert int(res0["trace_decimation"][0]) == int(res1["trace_decimation"][0]) == 50
    assert res0["traces"].shape == (SHOTS, 1, 20)
    # Physics, not only bookkeeping: qubit 3 was found excited, then reset to 0.
    assert res1["bits"][:, 0].mean() > 0.8
    assert (res1["bits"][:, 1] == 0).mean() > 0.8
    # One device, one clock: the run advanced it once, for both controllers.
    shot_s = reference.duration_samples / 1e9 + REP_DELAY_S
    assert clock[0] == clock[1] == pytest.approx(SHOTS * shot_s)


# --------------------------------------------------------------------------- errors


def test_a_follower_that_never_arms_fails_the_leader_within_the_arm_timeout(clients) -> None:
    c0 = clients["ctrl0"]
    start = time.monotonic()
    run_id = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "lonely", ["ctrl1"])})
    error = _failure(c0, run_id)
    assert time.monotonic() - start < ARM_TIMEOUT_S + 5.0
    assert error.remote_type == ERR_SYNC
    assert "sync group lonely" in str(error) and "['ctrl1']" in str(error)
    assert f"within {ARM_TIMEOUT_S} s" in str(error)
    # The controller keeps serving: a plain run afterwards works.
    _, arrays = c0.wait(c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10), BOUND_S)
    assert arrays["iq"].shape == (10, 1)


def test_an_unknown_follower_or_a_bad_sync_object_fails_the_run(clients) -> None:
    c0 = clients["ctrl0"]
    program_id = c0.upload(*_tiny("ctrl0").to_wire())
    cases = [(_sync("leader", "g1", ["ctrl9"]), r"unknown follower\(s\) \['ctrl9'\]"),
             (_sync("leader", "g2", ["ctrl0"]), "other than the leader ctrl0"),
             ({**_sync("leader", "g5", ["ctrl1"]), "extra": 1},
              r"unknown field\(s\) \['extra'\]"),
             ({"group": "", "role": "leader", "followers": ["ctrl1"]}, "sync.group"),
             ({"group": "g3", "role": "boss"}, "sync.role"),
             (_sync("follower", "g4", "ctrl0"), "sync.leader must name another controller"),
             ("ctrl1", "sync must be an object")]
    for sync, message in cases:
        error = _failure(c0, c0.run(program_id, 5, params={"sync": sync}))
        assert error.remote_type == "ValueError"
        assert re.search(message, str(error)), str(error)


def test_mismatched_shots_fail_leader_and_follower(clients) -> None:
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 100,
                      params={"sync": _sync("follower", "shots", "ctrl0")}, time_limit_s=5.0)
    assert _state(c1, follower, ("running",))[0] == "running"
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 200,
                    params={"sync": _sync("leader", "shots", ["ctrl1"])}, time_limit_s=5.0)
    for client, run_id in ((c0, leader), (c1, follower)):
        error = _failure(client, run_id)
        assert error.remote_type == ERR_SYNC
        assert "sync group shots: follower ctrl1 has shots 100, leader ctrl0 has 200" \
            in str(error)


def test_mismatched_program_lengths_fail_both(clients) -> None:
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    follower = c1.run(c1.upload(*_tiny("ctrl1", duration=300).to_wire()), 10,
                      params={"sync": _sync("follower", "length", "ctrl0")}, time_limit_s=5.0)
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "length", ["ctrl1"])}, time_limit_s=5.0)
    for client, run_id in ((c0, leader), (c1, follower)):
        assert "follower ctrl1 has duration_samples 300, leader ctrl0 has 100" \
            in str(_failure(client, run_id))


def test_an_armed_follower_leaves_the_servers_answering_and_aborting_it_fails_the_leader(
        clients) -> None:
    """While a follower is armed both controllers answer hello and status; aborting it ends
    it ``aborted``, and the leader that comes later fails at once naming it."""
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                      params={"sync": _sync("follower", "quit", "ctrl0")})
    assert _state(c1, follower, ("running",))[0] == "running"
    time.sleep(0.2)
    assert c1.status()["state"] == "busy"
    assert "sync" in c1.hello()["capabilities"]
    assert c0.status()["state"] == "idle"
    assert c1.fetch(follower)[0] == "running"
    c1.abort(follower)
    with pytest.raises(InstrumentCommandError) as info:
        c1.wait(follower, BOUND_S)
    assert info.value.remote_type == "aborted"
    start = time.monotonic()
    error = _failure(c0, c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                                params={"sync": _sync("leader", "quit", ["ctrl1"])}))
    assert time.monotonic() - start < ARM_TIMEOUT_S  # it did not wait for the arm timeout
    assert "sync group quit: follower ctrl1's run was aborted" in str(error)


def test_aborting_a_queued_leader_releases_its_armed_follower(clients) -> None:
    """ctrl0 is busy (its own armed follower run of another group); the leader of group
    "release" waits in its queue while ctrl1's follower is armed. Aborting the queued leader
    ends the follower ``error`` naming the leader, at once."""
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    blocker = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                     params={"sync": _sync("follower", "blocker", "ctrl1")}, time_limit_s=8.0)
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                      params={"sync": _sync("follower", "release", "ctrl0")}, time_limit_s=8.0)
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "release", ["ctrl1"])})
    assert _state(c1, follower, ("running",))[0] == "running"
    assert c0.fetch(leader)[0] == "queued"
    assert c0.abort(leader) == "aborted"
    start = time.monotonic()
    error = _failure(c1, follower)
    assert time.monotonic() - start < 2.0
    assert error.remote_type == ERR_SYNC
    assert "sync group release: leader ctrl0's run was aborted" in str(error)
    c0.abort(blocker)


def test_aborting_a_waiting_leader_fails_its_late_follower_at_once(clients) -> None:
    """The leader waits for a follower queued behind another run on ctrl1; aborted, it ends
    ``aborted``, and the follower, armed later, fails at once naming the leader."""
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    blocker = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                     params={"sync": _sync("follower", "busy", "ctrl0")}, time_limit_s=0.8)
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                      params={"sync": _sync("follower", "late", "ctrl0")}, time_limit_s=8.0)
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "late", ["ctrl1"])})
    assert _state(c0, leader, ("running",))[0] == "running"
    c0.abort(leader)
    assert _state(c0, leader, ("aborted", "error", "done"))[0] == "aborted"
    error = _failure(c1, follower)
    assert "sync group late: leader ctrl0's run was aborted" in str(error)
    assert _state(c1, blocker, ("error",))[1]["error_type"] == "TimeLimitExceeded"


def test_an_armed_follower_is_stopped_at_its_time_limit(clients) -> None:
    c1 = clients["ctrl1"]
    run_id = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                    params={"sync": _sync("follower", "limit", "ctrl0")}, time_limit_s=0.3)
    assert _failure(c1, run_id).remote_type == "TimeLimitExceeded"


def test_independent_runs_on_both_controllers_share_one_clock(clients, two) -> None:
    """Plain runs on each controller run on their own and advance the one simulated clock."""
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    results = {}

    def go(name: str, client: ControllerClient, shots: int) -> None:
        run_id = client.run(client.upload(*_tiny(name).to_wire()), shots,
                            params={"rep_delay_s": 1e-5})
        results[name] = client.wait(run_id, BOUND_S)[1]["iq"].shape

    threads = [threading.Thread(target=go, args=(n, c, s))
               for n, c, s in (("ctrl0", c0, 30), ("ctrl1", c1, 70))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BOUND_S)
    assert results == {"ctrl0": (30, 1), "ctrl1": (70, 1)}
    expected = 100 * (100e-9 + 1e-5)
    assert two.executors["ctrl0"].sim_time_s == pytest.approx(expected)
    assert two.executors["ctrl1"].sim_time_s == pytest.approx(expected)


@pytest.fixture
def three(tmp_path: Path) -> Iterator[dict[str, ControllerClient]]:
    """The two-controller rack with a third controller, ctrl2, that reaches no qubit."""
    path = tmp_path / "lab5_three_controllers.toml"
    path.write_text(TWO.read_text() + '\n[[controllers]]\nname = "ctrl2"\n'
                    'endpoint = "tcp://127.0.0.1:0"\nsample_rate_hz = 1.0e9\noutputs = 1\n'
                    'inputs = 1\n')
    with SimulatedRack(path, seed=5, arm_timeout_s=ARM_TIMEOUT_S) as rack:
        out = {name: ControllerClient(server.endpoint, timeout_s=BOUND_S)
               for name, server in rack.controllers.items()}
        try:
            yield out
        finally:
            for client in out.values():
                client.close()


@pytest.mark.parametrize("abort", [False, True])
def test_armed_followers_are_released_when_the_leader_fails_or_is_aborted(three, abort
                                                                          ) -> None:
    """ctrl1 is armed, ctrl2 never arms: when the leader gives up at its arm timeout (or is
    aborted while it waits), ctrl1's run ends ``error`` at once naming the leader, instead of
    waiting for its own time limit."""
    c0, c1 = three["ctrl0"], three["ctrl1"]
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                      params={"sync": _sync("follower", "trio", "ctrl0")}, time_limit_s=30.0)
    assert _state(c1, follower, ("running",))[0] == "running"
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "trio", ["ctrl1", "ctrl2"])})
    assert _state(c0, leader, ("running",))[0] == "running"
    start = time.monotonic()
    if abort:
        c0.abort(leader)
        assert _state(c0, leader, ("aborted", "error", "done"))[0] == "aborted"
        expected = "sync group trio: leader ctrl0's run was aborted"
    else:
        assert "follower(s) ['ctrl2'] of leader ctrl0 did not arm" in str(_failure(c0, leader))
        expected = "sync group trio: follower(s) ['ctrl2'] of leader ctrl0 did not arm"
    error = _failure(c1, follower)
    assert time.monotonic() - start < ARM_TIMEOUT_S + 2.0
    assert error.remote_type == ERR_SYNC and expected in str(error)
    assert three["ctrl2"].hello()["capabilities"]["sync"]["max_controllers"] == 3


def test_a_failing_merged_run_fails_leader_and_follower_naming_the_leader(clients) -> None:
    """ctrl1's part drives qubit 3 during its own acquisition window, which the simulator
    cannot execute: the leader's run ends ``error`` with the simulator's error, and the
    follower's ends ``error`` naming the leader's failure."""
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    b = ProgramBuilder("ctrl1", 1e9)
    b.play(0, 0, b.waves.add(("flat", 40), lambda: np.full(40, 0.1)), 1.0)
    b.acquire(0, 0, 50, 0.0, 3, 0)
    follower = c1.run(c1.upload(*b.build(duration_samples=100).to_wire()), 10,
                      params={"sync": _sync("follower", "doomed", "ctrl0")}, time_limit_s=8.0)
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10,
                    params={"sync": _sync("leader", "doomed", ["ctrl1"])}, time_limit_s=8.0)
    lead_error = _failure(c0, leader)
    assert lead_error.remote_type == "SimulationError"
    error = _failure(c1, follower)
    assert error.remote_type == ERR_SYNC
    assert "sync group doomed: leader ctrl0's run failed: SimulationError" in str(error)


def test_a_leader_with_bad_run_parameters_releases_its_armed_follower(clients) -> None:
    c0, c1 = clients["ctrl0"], clients["ctrl1"]
    follower = c1.run(c1.upload(*_tiny("ctrl1").to_wire()), 10,
                      params={"sync": _sync("follower", "badparams", "ctrl0")},
                      time_limit_s=30.0)
    assert _state(c1, follower, ("running",))[0] == "running"
    leader = c0.run(c0.upload(*_tiny("ctrl0").to_wire()), 10, params={
        "rep_delay_s": "soon", "sync": _sync("leader", "badparams", ["ctrl1"])})
    assert _failure(c0, leader).remote_type == "ValueError"
    start = time.monotonic()
    error = _failure(c1, follower)
    assert time.monotonic() - start < 2.0
    assert "sync group badparams: leader ctrl0's run failed: rep_delay_s must be a number" \
        in str(error)


def test_merged_parts_keep_each_blocks_parent_within_its_controller() -> None:
    """Merging ctrl0's part (one block) with ctrl1's (a block nested in another) renumbers
    ctrl1's blocks, parents included, and its acquisitions: its inner block still hangs on
    its own outer block and reads its own acquisition."""
    def part(name: str, acq_count: int, parents: list[int]) -> SyncPart:
        wave = [np.ones(16)]
        acqs = [(0, 100 * j, 50, 0.0) for j in range(acq_count)]
        prog = WireProgram.from_tuples([(0, 1000, 0, 0.1, 0.0, 0.0)] * len(parents), wave,
                                       acqs, 2000)
        n = len(parents)
        ff = FeedForward(
            play_block=np.arange(n, dtype=np.int32), block_acq=np.arange(n, dtype=np.int32),
            block_value=np.ones(n, np.int32), shift_port=np.zeros(0, np.int32),
            shift_start=np.zeros(0, np.int64), shift_phase_rad=np.zeros(0),
            shift_block=np.zeros(0, np.int32), disc_axis=np.ones(acq_count, complex),
            disc_threshold=np.zeros(acq_count), block_parent=np.array(parents, np.int32))
        return SyncPart(name, prog, ff, 10, None)

    _, ff, columns = merge_parts([part("ctrl0", 1, [-1]), part("ctrl1", 2, [-1, 0])])
    assert ff.block_parent.tolist() == [-1, -1, 1]
    assert ff.block_acq.tolist() == [0, 1, 2]
    assert ff.play_block.tolist() == [0, 1, 2]
    assert ff.block_runs(2, {1: 1, 2: 1}) is True and ff.block_runs(2, {1: 0, 2: 1}) is False
    assert columns == [slice(0, 1), slice(1, 3)]


@pytest.mark.parametrize("seed", [-1, 2**63, True, 1.5])
def test_a_seed_outside_the_protocols_range_fails_the_run(clients, seed) -> None:
    """``seed`` is an int in 0..2**63 - 1 (docs/protocol.md): another value fails the run
    with a message naming it, and the controller serves the next run."""
    c0 = clients["ctrl0"]
    program_id = c0.upload(*_tiny("ctrl0").to_wire())
    error = _failure(c0, c0.run(program_id, 10, params={"seed": seed}))
    assert error.remote_type == "ValueError"
    assert f"seed must be an int in 0..2**63 - 1, got {seed!r}" in str(error)
    good = c0.run(program_id, 10, params={"seed": 2**63 - 1})
    c0.wait(good, BOUND_S)
    assert c0.fetch(good)[0] == "done"
