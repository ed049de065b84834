"""Fault injection on a ControllerServer over real ZeroMQ, the authentication seam, and upload
validation off the serving thread.

The executor is a small real device stand-in (it adds arrays); the faults are armed through
the real loopback control socket, as a test of the simulator process would arm them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import ERR_TIME_LIMIT, ERR_UNAUTHENTICATED
from labqpu.errors import (
    AuthenticationError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    JobCancelledError,
    ProtocolError,
)
from labqpu.firmware_sim.auth import AuthenticationRefused
from labqpu.firmware_sim.controller_server import ControllerServer
from labqpu.firmware_sim.faults import (
    FaultControl,
    FaultControlServer,
    FaultPlan,
    FaultyExecutor,
)

TIMEOUT_S = 0.4  # the client's bound on each reply attempt
BOUND_S = 5.0  # generous bound on any wait that should end quickly


class AddExecutor:
    """Returns a + b; ``load`` can be made to wait on an event the test holds."""

    def __init__(self) -> None:
        self.executions = 0
        self.gate: threading.Event | None = None
        self.loading = threading.Event()

    def capabilities(self) -> dict:
        return {"channels": ["d0"], "sample_rate_hz": 1e9}

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.loading.set()
        if self.gate is not None:
            assert self.gate.wait(BOUND_S), "the test never released the upload"

    def execute(self, arrays: dict[str, np.ndarray], meta: dict, shots: int, params: dict,
                cancel: threading.Event) -> dict[str, np.ndarray]:
        self.executions += 1
        return {"sum": arrays["a"] + arrays["b"]}


def _program() -> dict[str, np.ndarray]:
    a = np.arange(64, dtype=np.float64)
    return {"a": a, "b": 2 * a}


class Rack:
    """A controller with a fault plan, its control socket, and an instrument setting."""

    def __init__(self) -> None:
        self.plan = FaultPlan()
        self.executor = AddExecutor()
        self.settings: dict[tuple[str, str, int], Any] = {}
        self.crashes: list[str] = []
        faulty = FaultyExecutor(self.executor, self.plan,
                                lambda i, s, v, c: self.settings.__setitem__((i, s, c), v),
                                crash=self.crashes.append)
        self.server = ControllerServer(faulty, faults=self.plan)
        self.control_server = FaultControlServer(self.plan)

    def __enter__(self) -> Rack:
        self.server.start()
        self.control_server.start()
        self.control = FaultControl(self.control_server.endpoint)
        return self

    def __exit__(self, *exc: object) -> None:
        self.control_server.stop()
        self.server.stop()


@pytest.fixture
def rack() -> Iterator[Rack]:
    with Rack() as r:
        yield r


@pytest.fixture
def client(rack: Rack) -> Iterator[ControllerClient]:
    with ControllerClient(rack.server.endpoint, timeout_s=TIMEOUT_S, retries=1) as ctrl:
        yield ctrl


def _sum_of_one_run(client: ControllerClient, **run: Any) -> np.ndarray:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, 1, **run)
    _, arrays = client.wait(run_id, timeout_s=BOUND_S)
    return arrays["sum"]


# -- the control socket ------------------------------------------------------------------


def test_faults_are_armed_for_an_op_and_a_count_then_disarm(rack: Rack,
                                                            client: ControllerClient) -> None:
    rack.control.arm("drop", "status", after=1, count=2)
    assert [f["kind"] for f in rack.control.armed()] == ["drop"]
    client.status()  # let through: after=1
    with ControllerClient(rack.server.endpoint, timeout_s=TIMEOUT_S, retries=0) as once:
        for _ in range(2):
            with pytest.raises(InstrumentTimeoutError):
                once.status()
    assert rack.control.armed() == []
    assert client.status()["state"] == "idle"
    assert [(f["kind"], f["on"]) for f in rack.control.fired()] == [("drop", "status")] * 2


@pytest.mark.parametrize(("fault", "message"), [
    ({"kind": "explode", "on": "run"}, "unknown kind"),
    ({"kind": "drop", "on": "launch"}, "'on' must be an op"),
    ({"kind": "crash", "on": "fetch"}, "'on' must be a run point"),
    ({"kind": "delay", "on": "run", "delay_s": 1e9}, "delay_s"),
    ({"kind": "drop", "on": "run", "count": -1}, "count"),
    ({"kind": "lo_change", "on": "start"}, "name the instrument"),
    ({"kind": "lo_change", "on": "start", "instrument": "lo", "value": float("inf")}, "finite"),
    ({"kind": "drop", "on": "run", "colour": "red"}, "unknown field"),
    ({"kind": "drop", "on": "run", "controller": "ctrl9"}, "no controller 'ctrl9'"),
])
def test_a_meaningless_fault_is_refused_and_nothing_is_armed(rack: Rack, fault: dict,
                                                             message: str) -> None:
    kind, on = fault.pop("kind"), fault.pop("on")
    with pytest.raises(ValueError, match=message):
        rack.control.arm(kind, on, **fault)
    assert rack.control.armed() == []


def test_a_server_without_a_plan_has_no_fault_hooks() -> None:
    with ControllerServer(AddExecutor()) as server, \
            ControllerClient(server.endpoint, timeout_s=TIMEOUT_S) as ctrl:
        assert _sum_of_one_run(ctrl)[3] == 9.0


# -- reply faults ------------------------------------------------------------------------


def test_a_delayed_reply_arrives_late_while_others_are_served(rack: Rack,
                                                              client: ControllerClient) -> None:
    rack.control.arm("delay", "status", delay_s=0.3)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.status)
        time.sleep(0.05)
        with ControllerClient(rack.server.endpoint, timeout_s=TIMEOUT_S) as other:
            other.hello()  # answered while the delayed reply waits
            assert not slow.done()
        assert slow.result(timeout=BOUND_S)["state"] == "idle"


@pytest.mark.parametrize("mode", ["header", "array"])
def test_a_corrupted_reply_is_a_protocol_error_never_a_result(rack: Rack,
                                                              client: ControllerClient,
                                                              mode: str) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, 1)
    time.sleep(0.2)
    rack.control.arm("corrupt", "fetch", mode=mode)
    with pytest.raises(ProtocolError, match="crc32" if mode == "array" else "JSON|UTF-8|header"):
        client.fetch(run_id)
    state, _, arrays = client.fetch(run_id)
    assert state == "done"
    assert np.array_equal(arrays["sum"], 3 * np.arange(64))


def test_a_hung_controller_times_out_then_serves_again(rack: Rack,
                                                       client: ControllerClient) -> None:
    rack.control.arm("hang", "status", duration_s=3 * TIMEOUT_S)
    start = time.monotonic()
    with pytest.raises(InstrumentTimeoutError):
        client.status()
    assert time.monotonic() - start < 2 * TIMEOUT_S + 1.0
    deadline = time.monotonic() + BOUND_S
    while True:  # the late replies to the timed-out attempts are discarded, never credited
        try:
            assert client.status()["state"] == "idle"
            break
        except InstrumentTimeoutError:
            assert time.monotonic() < deadline


def test_retry_after_a_dropped_run_reply_executes_once(rack: Rack,
                                                       client: ControllerClient) -> None:
    program_id = client.upload(_program(), {})
    rack.control.arm("drop", "run")
    run_id = client.run(program_id, 1)  # first reply dropped; Lazy Pirate resends the same key
    _, arrays = client.wait(run_id, timeout_s=BOUND_S)
    assert np.array_equal(arrays["sum"], 3 * np.arange(64))
    assert client.status()["runs_total"] == 1
    assert rack.executor.executions == 1


# -- run faults --------------------------------------------------------------------------


def test_a_run_that_never_finishes_is_stopped_by_its_time_limit(rack: Rack,
                                                                client: ControllerClient) -> None:
    rack.control.arm("stall", "start")
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, 1)
    with pytest.raises(InstrumentTimeoutError, match=r"still running .* aborted"):
        client.wait(run_id, timeout_s=0.5)
    state, _, _ = client.fetch(run_id, wait_s=1.0)
    assert state == "aborted"
    assert _sum_of_one_run(client)[1] == 3.0  # the next run plays


def test_a_run_its_client_abandons_is_stopped_at_its_time_limit(rack: Rack,
                                                                client: ControllerClient) -> None:
    """The host gives up on a run and no abort arrives (the client died, or its abort was
    lost): the controller stops the run at its own time limit, so it cannot hold the
    controller for later runs."""
    rack.control.arm("stall", "start")
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, 1, time_limit_s=0.5)
    deadline = time.monotonic() + BOUND_S
    while (reply := client.fetch(run_id, wait_s=1.0))[0] in ("queued", "running"):
        assert time.monotonic() < deadline
    state, result, _ = reply
    assert (state, result["error_type"]) == ("error", ERR_TIME_LIMIT)
    assert "time limit of 0.5 s" in result["error"]
    assert _sum_of_one_run(client)[1] == 3.0


def test_a_run_retried_after_its_session_was_forgotten_is_not_played_twice(
        rack: Rack, client: ControllerClient) -> None:
    """A review's case: the reply to a run is lost, and the controller forgets the client's
    session before the retry comes (a neighbour's flood of hellos): the retry got
    ``UnknownSession``, the client opened a new session and sent the run again, where its
    key was unknown, so it played twice. Now the request fails saying why, and it played
    once."""
    program_id = client.upload(_program(), {})
    session = client.hello()["session"]
    rack.control.arm("drop", "run")
    forgotten = threading.Event()

    def forget_once_played() -> None:
        deadline = time.monotonic() + BOUND_S
        while rack.executor.executions < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        with rack.server._lock:
            rack.server._sessions._forget(session)
        forgotten.set()

    threading.Thread(target=forget_once_played, daemon=True).start()
    with pytest.raises(InstrumentError, match="may have started the run in it: it is not "
                       "sent again in a new session") as info:
        client.run(program_id, 1)
    assert forgotten.is_set() and not isinstance(info.value, InstrumentCommandError)
    assert rack.executor.executions == 1
    assert _sum_of_one_run(client)[1] == 3.0  # the next run plays, in a new session


def _idle_after_one_run(rack: Rack, client: ControllerClient) -> None:
    """Wait until the controller has accepted one run and is idle (asking while it hangs);
    with a ``stall`` armed at the run's start that means the run was aborted, before or after
    it started. Then the next run plays."""
    deadline = time.monotonic() + BOUND_S
    status: dict = {}
    while status.get("runs_total", 0) < 1 or status["state"] != "idle":
        assert time.monotonic() < deadline, status
        with contextlib.suppress(InstrumentTimeoutError):
            status = client.status()
    assert status["runs_total"] == 1
    rack.control.disarm()  # the stall, if the run was aborted before it started
    assert _sum_of_one_run(client)[1] == 3.0


def test_a_run_cancelled_before_its_reply_came_is_aborted_by_its_key(
        rack: Rack, client: ControllerClient) -> None:
    """The controller hangs before it answers a ``run`` (a frozen process) and the host is
    cancelled: it knows no run id, so it aborts by the request's key on the run's connection,
    once, for 1 s (unanswered here, which it says); when the controller reads again it takes
    the run, then the abort, and the run, which would never end on its own (a stall), ends.
    Before, the cancel waited out the run request's retries and the run played on."""
    program_id = client.upload(_program(), {})
    rack.control.arm("stall", "start")
    rack.control.arm("hang", "run", duration_s=2.5)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    start = time.monotonic()
    with pytest.raises(JobCancelledError,
                       match=r"the abort of the run sent under key .* could not be confirmed"):
        client.run(program_id, 1, cancel=cancel)
    assert time.monotonic() - start < 0.2 + 1.0 + 0.5
    _idle_after_one_run(rack, client)


def test_a_run_cancelled_while_its_first_hello_waits_ends_at_once(rack: Rack) -> None:
    """A review's case: a client's first ``run`` opens its session with ``hello``, which the
    cancel did not reach: 15 s on a frozen controller, ending in a timeout of ``hello``."""
    with ControllerClient(rack.server.endpoint, timeout_s=TIMEOUT_S, retries=1) as fresh:
        program_id = fresh.upload(_program(), {})  # an upload needs no session
        rack.control.arm("hang", "hello", duration_s=2.0)
        cancel = threading.Event()
        threading.Timer(0.2, cancel.set).start()
        start = time.monotonic()
        with pytest.raises(JobCancelledError, match="no run was started"):
            fresh.run(program_id, 1, cancel=cancel)
        assert time.monotonic() - start < 0.2 + 0.5
    assert rack.executor.executions == 0


def test_a_run_whose_replies_were_lost_is_aborted_by_its_key(rack: Rack,
                                                             client: ControllerClient) -> None:
    """The controller accepts a run and its replies are lost (both attempts): the request
    fails on its timeout, and the run it started is aborted by the request's key, which the
    error says."""
    program_id = client.upload(_program(), {})
    rack.control.arm("stall", "start")
    rack.control.arm("drop", "run", count=2)
    with pytest.raises(InstrumentTimeoutError,
                       match=r"no reply after 2 attempts .*; the run sent under key \w+ "
                             r"aborted \(controller reports '(running|aborted)'\)"):
        client.run(program_id, 1)
    _idle_after_one_run(rack, client)


def test_crash_and_lo_change_fire_at_their_run_point(rack: Rack,
                                                     client: ControllerClient) -> None:
    rack.control.arm("lo_change", "start", instrument="lo_drive_a", setting="output_on",
                     value=False)
    rack.control.arm("crash", "end")
    _sum_of_one_run(client)
    assert rack.settings == {("lo_drive_a", "output_on", 1): False}
    assert rack.crashes == ["fault injection: crash at run end"]


# -- authentication seam -----------------------------------------------------------------


class OnlyAlice:
    def authenticate(self, credentials: dict | None, session: str) -> str:
        if credentials != {"user": "alice", "token": "s3cret"}:
            raise AuthenticationRefused("unknown user or wrong token")
        return "alice"


def test_the_default_authenticator_names_the_session(client: ControllerClient) -> None:
    hello = client.hello()
    assert hello["identity"] == f"local:{hello['session']}"


def test_a_refused_hello_is_a_typed_error_and_changes_nothing() -> None:
    with ControllerServer(AddExecutor(), authenticator=OnlyAlice()) as server:
        with ControllerClient(server.endpoint, timeout_s=TIMEOUT_S,
                              credentials={"user": "alice", "token": "s3cret"}) as alice:
            assert alice.hello()["identity"] == "alice"
            assert _sum_of_one_run(alice)[2] == 6.0
            before = alice.status()
        with ControllerClient(server.endpoint, timeout_s=TIMEOUT_S,
                              credentials={"user": "mallory"}) as mallory:
            with pytest.raises(AuthenticationError, match="wrong token") as info:
                mallory.hello()
            assert info.value.remote_type == ERR_UNAUTHENTICATED
            with pytest.raises(AuthenticationError):  # a run first needs a session
                mallory.run("0" * 16, 1)
            after = mallory.status()
        assert (after["runs_total"], after["programs"]) == (before["runs_total"],
                                                            before["programs"])


# -- validation off the serving thread ----------------------------------------------------


def test_status_is_answered_while_an_upload_validates(rack: Rack) -> None:
    rack.executor.gate = threading.Event()
    with ControllerClient(rack.server.endpoint, timeout_s=BOUND_S) as uploader, \
            ControllerClient(rack.server.endpoint, timeout_s=TIMEOUT_S) as neighbour, \
            ThreadPoolExecutor(1) as pool:
        upload = pool.submit(uploader.upload, _program(), {})
        assert rack.executor.loading.wait(BOUND_S)
        assert neighbour.status()["uploads_total"] == 0  # answered while validation waits
        assert neighbour.hello()["server"] == rack.server.name
        assert not upload.done()
        rack.executor.gate.set()
        program_id = upload.result(timeout=BOUND_S)
        assert neighbour.status()["uploads_total"] == 1
        run_id = uploader.run(program_id, 1)
        assert uploader.wait(run_id, timeout_s=BOUND_S)[1]["sum"][1] == 3.0
