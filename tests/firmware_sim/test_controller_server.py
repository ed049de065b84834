"""ControllerClient against ControllerServer over real ZeroMQ tcp sockets on 127.0.0.1.

The executor below is a small real device stand-in (it adds and multiplies the uploaded
arrays); the transport, the protocol and both ends are the production code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import (
    ERR_BAD_PARAMS,
    ERR_FORBIDDEN,
    ERR_INTERNAL,
    ERR_INVALID_PROGRAM,
    ERR_PROTOCOL,
    ERR_QUEUE_FULL,
    ERR_UNKNOWN_OP,
    ERR_UNKNOWN_PROGRAM,
    ERR_UNKNOWN_RUN,
    ERR_UNKNOWN_SESSION,
    OP_FETCH,
    OP_HELLO,
    OP_RUN,
    OP_UPLOAD,
    PROTOCOL_VERSION,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    salvage_request_id,
)
from labqpu.errors import (
    HardwareUnavailableError,
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    ProtocolError,
)
from labqpu.firmware_sim.controller_server import ControllerServer

BOUND_S = 5.0  # generous bound on any wait that should end quickly


class SumExecutor:
    """Adds and multiplies arrays 'a' and 'b'; can sleep (cancellable) or fail on request."""

    def __init__(self) -> None:
        self.executions = 0
        self.started = threading.Event()
        self.fail_capabilities = False
        self._lock = threading.Lock()

    def capabilities(self) -> dict:
        if self.fail_capabilities:
            raise KeyError("capabilities table missing")
        return {"channels": ["d0", "r0"], "sample_rate_hz": 1e9, "waveform_memory_samples": 4096}

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if set(arrays) != {"a", "b"}:
            raise ValueError(f"program needs arrays 'a' and 'b', got {sorted(arrays)}")
        if arrays["a"].shape != arrays["b"].shape:
            raise ValueError("arrays 'a' and 'b' differ in shape")

    def execute(
        self,
        arrays: dict[str, np.ndarray],
        meta: dict,
        shots: int,
        params: dict,
        cancel: threading.Event,
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self.executions += 1
        self.started.set()
        cancel.wait(params.get("sleep_s", 0.0))
        if "fail" in params:
            raise RuntimeError(params["fail"])
        if params.get("mutate"):
            arrays["a"][0] = 0
        return {"sum": arrays["a"] + arrays["b"], "prod": arrays["a"] * arrays["b"] * shots}


def _program(n: int = 8) -> dict[str, np.ndarray]:
    a = (np.arange(n) * (1 + 0.5j)).astype(np.complex64)
    return {"a": a, "b": (a * 2j).astype(np.complex64)}


def _wait_until(predicate: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def executor() -> SumExecutor:
    return SumExecutor()


@pytest.fixture
def server(executor: SumExecutor) -> Iterator[ControllerServer]:
    with ControllerServer(executor, name="sim0") as srv:
        yield srv


@pytest.fixture
def client(server: ControllerServer) -> Iterator[ControllerClient]:
    with ControllerClient(server.endpoint, timeout_s=0.5, retries=1) as ctrl:
        yield ctrl


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _raw_request(context: zmq.Context, endpoint: str, frames: list) -> Reply:
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(endpoint)
        socket.send_multipart(frames, copy=False)
        assert socket.poll(int(BOUND_S * 1000), zmq.POLLIN), "server sent no reply"
        return decode_reply(socket.recv_multipart(copy=False))
    finally:
        socket.close(linger=0)


def _server_on_port(executor: SumExecutor, port: int) -> ControllerServer:
    """A started server on ``port``, which a socket closed a moment ago: ZeroMQ releases a
    closed socket's port asynchronously, so binding is retried for up to BOUND_S. The caller
    stops it."""
    deadline = time.monotonic() + BOUND_S
    while True:
        server = ControllerServer(executor, port=port)
        try:
            server.start()
            return server
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class FakeController:
    """A ROUTER on a random port answering each request with frames built by ``respond``."""

    def __init__(
        self, context: zmq.Context, respond: Callable[[Request], list[list]] | None = None
    ) -> None:
        self.requests: list = []
        self.identities: list[bytes] = []
        self._respond = respond
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self.port = self._socket.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._socket.poll(20, zmq.POLLIN):
                    continue
                identity, *frames = self._socket.recv_multipart()
                request = decode_request(frames)
                self.requests.append(request)
                self.identities.append(identity)
                if self._respond is not None:
                    for reply in self._respond(request):
                        self._socket.send_multipart([identity, *reply])
        finally:
            self._socket.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(BOUND_S)
        assert not self._thread.is_alive()


def _first_run_reply(op: str, dropped: list[Reply]) -> bool:
    return op == OP_RUN and not dropped


class LossyRelay:
    """Forwards requests to a server and drops the replies ``drops(op, dropped so far)``
    selects: by default the server's first reply to a ``run``."""

    def __init__(self, context: zmq.Context, server_endpoint: str,
                 drops: Callable[[str, list[Reply]], bool] = _first_run_reply) -> None:
        self.dropped: list[Reply] = []
        self._drops = drops
        self.run_requests: list = []
        self._frontend = context.socket(zmq.ROUTER)
        self._backend = context.socket(zmq.DEALER)
        for socket in (self._frontend, self._backend):
            socket.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self._frontend.bind_to_random_port('tcp://127.0.0.1')}"
        self._backend.connect(server_endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        poller = zmq.Poller()
        poller.register(self._frontend, zmq.POLLIN)
        poller.register(self._backend, zmq.POLLIN)
        senders: dict[str, bytes] = {}
        ops: dict[str, str] = {}
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(20))
                if self._frontend in ready:
                    identity, *frames = self._frontend.recv_multipart()
                    request = decode_request(frames)
                    senders[request.id], ops[request.id] = identity, request.op
                    if request.op == OP_RUN:
                        self.run_requests.append(request)
                    self._backend.send_multipart(frames)
                if self._backend in ready:
                    frames = self._backend.recv_multipart()
                    reply = decode_reply(frames)
                    if self._drops(ops.pop(reply.id), self.dropped):
                        self.dropped.append(reply)
                        continue
                    self._frontend.send_multipart([senders[reply.id], *frames])
        finally:
            self._frontend.close(linger=0)
            self._backend.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(BOUND_S)
        assert not self._thread.is_alive()


# -- round trips -------------------------------------------------------------------------


def test_hello_reports_version_server_and_capabilities(client: ControllerClient) -> None:
    info = client.hello()
    assert PROTOCOL_VERSION in info["protocol_versions"]
    assert info["server"] == "sim0"
    assert info["firmware"].startswith("labqpu-sim ")
    assert info["capabilities"]["channels"] == ["d0", "r0"]


def test_upload_run_wait_fetch_round_trip(client: ControllerClient) -> None:
    program = _program()
    program_id = client.upload(program, {"name": "sum"})
    run_id = client.run(program_id, shots=3)
    result, arrays = client.wait(run_id, timeout_s=BOUND_S)
    assert result["state"] == "done"
    assert result["elapsed_s"] >= 0
    expected_sum = program["a"] + program["b"]
    expected_prod = program["a"] * program["b"] * 3
    np.testing.assert_array_equal(arrays["sum"], expected_sum, strict=True)
    np.testing.assert_array_equal(arrays["prod"], expected_prod, strict=True)
    state, fetched, again = client.fetch(run_id)
    assert state == "done"
    assert fetched["elapsed_s"] == result["elapsed_s"]
    np.testing.assert_array_equal(again["sum"], expected_sum, strict=True)


def test_large_non_contiguous_arrays_round_trip(client: ControllerClient) -> None:
    rng = np.random.default_rng(3)
    wide = (rng.standard_normal((400, 2000)) + 1j).astype(np.complex128)
    program = {"a": wide[:, ::2], "b": wide[:, 1::2]}
    run_id = client.run(client.upload(program, {}), shots=1)
    _, arrays = client.wait(run_id, timeout_s=BOUND_S)
    np.testing.assert_array_equal(arrays["sum"], program["a"] + program["b"], strict=True)


def test_same_program_uploaded_twice_is_stored_once(
    client: ControllerClient, executor: SumExecutor
) -> None:
    first = client.upload(_program(), {"name": "p", "x": [1, 2]})
    second = client.upload(_program(), {"x": [1, 2], "name": "p"})
    assert first == second
    assert len(first) == 16 and int(first, 16) >= 0
    assert client.status()["programs"] == 1
    assert client.upload(_program(9), {"name": "p", "x": [1, 2]}) != first
    assert client.upload(_program(), {"name": "q", "x": [1, 2]}) != first
    assert client.status()["programs"] == 3


def test_program_store_is_bounded(executor: SumExecutor) -> None:
    with (
        ControllerServer(executor, max_programs=2) as srv,
        ControllerClient(srv.endpoint, timeout_s=0.5) as ctrl,
    ):
        oldest = ctrl.upload(_program(1), {})
        for n in (2, 3):
            ctrl.upload(_program(n), {})
        assert ctrl.status()["programs"] == 2
        with pytest.raises(InstrumentCommandError) as info:
            ctrl.run(oldest, shots=1)
        assert info.value.remote_type == ERR_UNKNOWN_PROGRAM


def test_program_memory_is_bounded(executor: SumExecutor) -> None:
    """Programs are evicted by the bytes they hold, not only by count: one client uploading
    max-size programs made the simulator hold ~130 MB each, 64 of them. The newest upload is
    kept even alone beyond the bound; an evicted program is ``UnknownProgram``."""
    size = _program(1000)["a"].nbytes * 2  # bytes of one such program's two arrays
    with (
        ControllerServer(executor, max_program_bytes=int(2.5 * size)) as srv,
        ControllerClient(srv.endpoint, timeout_s=0.5) as ctrl,
    ):
        assert ctrl.hello()["limits"]["max_program_bytes"] == int(2.5 * size)
        ids = [ctrl.upload(_program(1000 + n), {}) for n in range(4)]
        assert ctrl.status()["programs"] == 2
        for evicted in ids[:2]:
            with pytest.raises(InstrumentCommandError) as info:
                ctrl.run(evicted, shots=1)
            assert info.value.remote_type == ERR_UNKNOWN_PROGRAM
        state, _ = ctrl.wait(ctrl.run(ids[3], shots=1), timeout_s=BOUND_S)
        assert state["state"] == "done", state
        huge = ctrl.upload(_program(4000), {})  # alone over the bound: kept, the rest evicted
        assert ctrl.status()["programs"] == 1
        ctrl.run(huge, shots=1)


def test_queued_runs_count_their_programs_into_the_memory_bound(executor: SumExecutor) -> None:
    """A run kept its program however many newer uploads evicted it, and a finished run's
    record kept it too: a client queueing runs of ever new programs behind a long one made
    the controller hold every one of them (up to 256 queued runs of ~130 MB each). Now the
    programs of queued and running runs count into ``max_program_bytes``: an upload they leave
    no room is refused with ``QueueFull``, evicting nothing, and is taken again once they have
    finished, while a finished run's results outlive its program."""
    size = _program(1000)["a"].nbytes * 2
    with (
        ControllerServer(executor, max_program_bytes=int(2.5 * size)) as srv,
        ControllerClient(srv.endpoint, timeout_s=0.5) as ctrl,
    ):
        first, second = (ctrl.upload(_program(1000 + n), {}) for n in range(2))
        blocking = ctrl.run(first, shots=1, params={"sleep_s": 30.0})
        queued = ctrl.run(second, shots=1)
        with pytest.raises(InstrumentCommandError) as info:
            ctrl.upload(_program(1002), {})
        assert info.value.remote_type == ERR_QUEUE_FULL
        assert "queued and running runs hold" in str(info.value)
        assert ctrl.status()["programs"] == 2  # nothing evicted for the refused upload
        ctrl.abort(blocking)
        state, _ = ctrl.wait(queued, timeout_s=BOUND_S)
        assert state["state"] == "done"
        third = ctrl.upload(_program(1002), {})  # the runs have ended: room again
        assert ctrl.fetch(queued)[0] == "done"
        ctrl.upload(_program(1003), {})
        assert ctrl.status()["programs"] == 2
        assert ctrl.wait(ctrl.run(third, shots=1), timeout_s=BOUND_S)[0]["state"] == "done"


def test_a_running_runs_program_is_held_again_and_not_evicted_for_bytes(
        executor: SumExecutor) -> None:
    """A review's cases: evicting the program of a running run for bytes freed nothing and
    pushed out a program whose eviction would have been enough; uploading again a program a
    running run holds was counted twice and refused. Now eviction for bytes skips the programs
    of queued and running runs, and such a program uploaded again is held again as it is."""
    size = _program(1000)["a"].nbytes * 2
    with (
        ControllerServer(executor, max_programs=3, max_program_bytes=int(2.2 * size)) as srv,
        ControllerClient(srv.endpoint, timeout_s=0.5) as ctrl,
    ):
        running = ctrl.upload(_program(1000), {})
        blocking = ctrl.run(running, shots=1, params={"sleep_s": 30.0})
        small = ctrl.upload(_program(500), {})
        ctrl.upload(_program(1001), {})  # over the bytes: the small one goes, not the running
        with pytest.raises(InstrumentCommandError) as info:
            ctrl.run(small, shots=1)
        assert info.value.remote_type == ERR_UNKNOWN_PROGRAM
        queued = ctrl.run(running, shots=1)
        for n in range(3):  # over the count: the least recently used goes, the running too
            ctrl.upload(_program(10 + n), {})
        with pytest.raises(InstrumentCommandError) as info:
            ctrl.run(running, shots=1)
        assert info.value.remote_type == ERR_UNKNOWN_PROGRAM
        assert ctrl.upload(_program(1000), {}) == running  # held again, not counted twice
        again = ctrl.run(running, shots=1)
        ctrl.abort(blocking)
        for run_id in (queued, again):
            assert ctrl.wait(run_id, timeout_s=BOUND_S)[0]["state"] == "done"


def test_finished_runs_are_bounded(executor: SumExecutor) -> None:
    with (
        ControllerServer(executor, max_runs=2) as srv,
        ControllerClient(srv.endpoint, timeout_s=0.5) as ctrl,
    ):
        program_id = ctrl.upload(_program(), {})
        run_ids = [ctrl.run(program_id, shots=1) for _ in range(3)]
        ctrl.wait(run_ids[-1], timeout_s=BOUND_S)
        with pytest.raises(InstrumentCommandError) as info:
            ctrl.fetch(run_ids[0])
        assert info.value.remote_type == ERR_UNKNOWN_RUN
        assert ctrl.fetch(run_ids[1])[0] == "done"


def test_invalid_program_is_refused_with_the_executor_message(client: ControllerClient) -> None:
    with pytest.raises(InstrumentCommandError, match="needs arrays 'a' and 'b'") as info:
        client.upload({"a": np.zeros(3)}, {})
    assert info.value.remote_type == ERR_INVALID_PROGRAM
    assert info.value.instrument == client.endpoint
    assert info.value.command == OP_UPLOAD
    assert client.status()["programs"] == 0


def test_run_of_unknown_program_is_refused(client: ControllerClient) -> None:
    with pytest.raises(InstrumentCommandError) as info:
        client.run("0123456789abcdef", shots=1)
    assert info.value.remote_type == ERR_UNKNOWN_PROGRAM


def test_client_refuses_zero_shots_without_sending(client: ControllerClient) -> None:
    with pytest.raises(ValueError, match="shots"):
        client.run("0123456789abcdef", shots=0)


# -- idempotency and Lazy Pirate -------------------------------------------------------------


def test_same_idempotency_key_executes_once(
    client: ControllerClient, executor: SumExecutor
) -> None:
    program_id = client.upload(_program(), {})
    first = client.run(program_id, shots=1, key="job-42")
    second = client.run(program_id, shots=1, key="job-42")
    assert first == second
    client.wait(first, timeout_s=BOUND_S)
    assert client.run(program_id, shots=1, key="job-42") == first
    other = client.run(program_id, shots=1)
    assert other != first
    client.wait(other, timeout_s=BOUND_S)
    assert executor.executions == 2


def test_retry_after_a_lost_reply_does_not_execute_twice(
    server: ControllerServer, executor: SumExecutor, context: zmq.Context
) -> None:
    relay = LossyRelay(context, server.endpoint)
    try:
        with ControllerClient(relay.endpoint, timeout_s=0.3, retries=2) as ctrl:
            program_id = ctrl.upload(_program(), {})
            run_id = ctrl.run(program_id, shots=2)
            ctrl.wait(run_id, timeout_s=BOUND_S)
    finally:
        relay.close()
    assert len(relay.dropped) == 1
    assert relay.dropped[0].result["run_id"] == run_id
    assert len(relay.run_requests) == 2
    first, retry = relay.run_requests
    assert (first.id, first.key) == (retry.id, retry.key)
    assert first.key
    assert executor.executions == 1


def answer_hello_only(request: Request) -> list[list]:
    """A controller that opens session "s1" on ``hello`` and answers nothing else."""
    if request.op != OP_HELLO:
        return []
    return [encode_reply(request.id, {"protocol_versions": [PROTOCOL_VERSION],
                                      "session": "s1"})]


def test_a_controller_known_to_be_gone_fails_the_request_at_once(
    context: zmq.Context
) -> None:
    """With ``peer_failure`` (the embedded simulator's process watch) a request to a silent
    controller fails within ~0.1 s of the reason appearing, with that reason, instead of
    after ``(retries + 1) * timeout_s`` (15 s here); until then it waits."""
    silent = FakeController(context, answer_hello_only)
    gone_at = [float("inf")]

    def failure() -> str | None:
        return "the firmware simulator (pid 1) exited with code -9" \
            if time.monotonic() >= gone_at[0] else None

    try:
        with ControllerClient(silent.endpoint, timeout_s=5.0, retries=2,
                              peer_failure=failure) as ctrl:
            ctrl.hello()
            gone_at[0] = time.monotonic() + 0.3
            start = time.monotonic()
            with pytest.raises(HardwareUnavailableError, match="exited with code -9") as info:
                ctrl.run("0123456789abcdef", shots=1, key="K")
            assert 0.3 <= time.monotonic() - start < 1.0
            assert (info.value.instrument, info.value.command) == (silent.endpoint, OP_RUN)
    finally:
        silent.close()


def test_silent_controller_times_out_after_all_retries_then_recovers(
    context: zmq.Context, executor: SumExecutor
) -> None:
    silent = FakeController(context, answer_hello_only)
    timeout_s, retries = 0.2, 2
    try:
        with ControllerClient(silent.endpoint, timeout_s=timeout_s, retries=retries) as ctrl:
            ctrl.hello()  # opens the session the run needs
            start = time.monotonic()
            with pytest.raises(InstrumentTimeoutError) as info:
                ctrl.run("0123456789abcdef", shots=1, key="K")
            elapsed = time.monotonic() - start
            bound = (retries + 1) * timeout_s
            assert bound * 0.95 <= elapsed < bound + 1.0
            assert info.value.instrument == silent.endpoint
            assert info.value.command == OP_RUN
            _wait_until(lambda: len(silent.requests) == retries + 2)
            runs = [(r, i) for r, i in zip(silent.requests, silent.identities, strict=True)
                    if r.op == OP_RUN]
            assert {(r.id, r.key, r.session) for r, _ in runs} == {(runs[0][0].id, "K", "s1")}
            assert len({i for _, i in runs}) == retries + 1, "each attempt on a fresh socket"
            silent.close()
            srv = _server_on_port(executor, silent.port)
            try:
                assert srv.endpoint == silent.endpoint
                assert ctrl.status()["state"] == "idle"
            finally:
                srv.stop()
    finally:
        silent.close()


def test_stopped_server_times_out_and_a_restart_on_the_same_port_answers(
    executor: SumExecutor,
) -> None:
    first = ControllerServer(executor)
    first.start()
    with ControllerClient(first.endpoint, timeout_s=0.2, retries=1) as ctrl:
        assert ctrl.status()["state"] == "idle"
        first.stop()
        with pytest.raises(InstrumentTimeoutError):
            ctrl.status()
        with ControllerServer(executor, port=first.port):
            assert ctrl.hello()["server"] == "ctrl0"


def test_stop_releases_the_port(executor: SumExecutor, context: zmq.Context) -> None:
    server = ControllerServer(executor)
    server.start()
    server.stop()
    server.stop()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"tcp://127.0.0.1:{server.port}")
    socket.close(linger=0)


def test_server_starts_once(server: ControllerServer) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        server.start()


def test_stale_reply_with_another_id_is_discarded(context: zmq.Context) -> None:
    def respond(request: Request) -> list[list]:
        stale = encode_reply("stale-request", {"protocol_versions": [99]})
        fresh = encode_reply(request.id, {"protocol_versions": [PROTOCOL_VERSION],
                                          "session": "s1"})
        return [stale, fresh]

    fake = FakeController(context, respond)
    try:
        with ControllerClient(fake.endpoint, timeout_s=0.5, retries=0) as ctrl:
            assert ctrl.hello()["protocol_versions"] == [PROTOCOL_VERSION]
    finally:
        fake.close()


def test_hello_refuses_a_controller_of_another_version(context: zmq.Context) -> None:
    fake = FakeController(context,
                          lambda req: [encode_reply(req.id, {"protocol_versions": [1]})])
    try:
        with (
            ControllerClient(fake.endpoint, timeout_s=0.5, retries=0) as ctrl,
            pytest.raises(ProtocolError, match="versions \\[1\\]"),
        ):
            ctrl.hello()
    finally:
        fake.close()


# -- run outcomes ------------------------------------------------------------------------


def test_executor_exception_becomes_command_error_with_its_message(
    client: ControllerClient,
) -> None:
    run_id = client.run(client.upload(_program(), {}), shots=1, params={"fail": "pulse clipped"})
    with pytest.raises(InstrumentCommandError, match="pulse clipped") as info:
        client.wait(run_id, timeout_s=BOUND_S)
    assert info.value.remote_type == "RuntimeError"
    state, result, arrays = client.fetch(run_id)
    assert (state, result["error"], result["error_type"]) == (
        "error",
        "pulse clipped",
        "RuntimeError",
    )
    assert arrays == {}


def test_uploaded_program_is_immutable(client: ControllerClient) -> None:
    program = _program()
    program_id = client.upload(program, {})
    run_id = client.run(program_id, shots=1, params={"mutate": True})
    with pytest.raises(InstrumentCommandError, match="read-only") as info:
        client.wait(run_id, timeout_s=BOUND_S)
    assert info.value.remote_type == "ValueError"
    _, arrays = client.wait(client.run(program_id, shots=1), timeout_s=BOUND_S)
    np.testing.assert_array_equal(arrays["sum"], program["a"] + program["b"], strict=True)


def test_abort_of_a_running_run(client: ControllerClient, executor: SumExecutor) -> None:
    run_id = client.run(client.upload(_program(), {}), shots=1, params={"sleep_s": 30.0})
    assert executor.started.wait(BOUND_S)
    start = time.monotonic()
    assert client.abort(run_id) in ("running", "aborted")
    with pytest.raises(InstrumentCommandError, match="aborted"):
        client.wait(run_id, timeout_s=BOUND_S)
    assert time.monotonic() - start < BOUND_S
    assert client.fetch(run_id)[0] == "aborted"


def test_aborted_queued_run_never_starts(client: ControllerClient, executor: SumExecutor) -> None:
    program_id = client.upload(_program(), {})
    running = client.run(program_id, shots=1, params={"sleep_s": 30.0})
    queued = client.run(program_id, shots=1)
    assert executor.started.wait(BOUND_S)
    status = client.status()
    assert (status["state"], status["queued"]) == ("busy", 1)
    assert client.abort(queued) == "aborted"
    client.abort(running)
    with pytest.raises(InstrumentCommandError, match="aborted"):
        client.wait(running, timeout_s=BOUND_S)
    assert client.fetch(queued)[0] == "aborted"
    assert executor.executions == 1
    assert client.status()["state"] == "idle"


def test_wait_deadline_raises_timeout(client: ControllerClient, executor: SumExecutor) -> None:
    run_id = client.run(client.upload(_program(), {}), shots=1, params={"sleep_s": 30.0})
    start = time.monotonic()
    with pytest.raises(InstrumentTimeoutError, match=r"still (running|queued)") as info:
        client.wait(run_id, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - start < 0.2 + 1.0
    assert info.value.command == OP_FETCH
    client.abort(run_id)


# -- typed errors for bad requests -------------------------------------------------------


def test_unknown_op_gets_a_typed_error(server: ControllerServer, context: zmq.Context) -> None:
    request_id, frames = encode_request("reboot", {})
    reply = _raw_request(context, server.endpoint, frames)
    assert (reply.id, reply.ok) == (request_id, False)
    assert reply.error is not None
    assert reply.error["type"] == ERR_UNKNOWN_OP
    assert "reboot" in reply.error["message"]


@pytest.mark.parametrize(
    ("op", "params", "error_type"),
    [
        (OP_RUN, {"program_id": "p", "shots": 0}, ERR_BAD_PARAMS),
        (OP_RUN, {"program_id": "p", "shots": "3"}, ERR_BAD_PARAMS),
        (OP_RUN, {"program_id": "p", "shots": True}, ERR_BAD_PARAMS),
        (OP_RUN, {"shots": 3}, ERR_BAD_PARAMS),
        (OP_RUN, {"program_id": "p", "shots": 3, "params": [1]}, ERR_BAD_PARAMS),
        (OP_FETCH, {"run_id": 7}, ERR_BAD_PARAMS),
        (OP_FETCH, {"run_id": "nope"}, ERR_UNKNOWN_RUN),
        ("abort", {"run_id": "nope"}, ERR_UNKNOWN_RUN),
        (OP_UPLOAD, {"meta": [1]}, ERR_BAD_PARAMS),
    ],
)
def test_bad_params_get_typed_errors(
    server: ControllerServer, client: ControllerClient, context: zmq.Context, op: str,
    params: dict, error_type: str
) -> None:
    session = client.hello()["session"]
    request_id, frames = encode_request(op, params, session=session)
    reply = _raw_request(context, server.endpoint, frames)
    assert (reply.id, reply.ok) == (request_id, False)
    assert reply.error is not None and reply.error["type"] == error_type


@pytest.mark.parametrize(
    ("frames", "expected_id"),
    [
        ([b"not json"], ""),
        ([b""], ""),
        ([b'{"v": 99, "op": "hello", "id": "abc", "params": {}, "arrays": []}'], "abc"),
        ([b'{"v": 2, "op": "hello", "id": "abd", "params": {}, "arrays": []}', b"x"], "abd"),
    ],
    ids=["garbage", "empty", "version 99", "extra frame"],
)
def test_malformed_message_gets_an_error_reply_and_the_loop_survives(
    server: ControllerServer,
    client: ControllerClient,
    context: zmq.Context,
    frames: list,
    expected_id: str,
) -> None:
    reply = _raw_request(context, server.endpoint, frames)
    assert (reply.id, reply.ok) == (expected_id, False)
    assert reply.error is not None and reply.error["type"] == ERR_PROTOCOL
    assert salvage_request_id(frames[0]) == expected_id
    assert client.status()["state"] == "idle"


def test_a_req_client_is_answered_and_a_dealers_delimiter_is_named(
    server: ControllerServer, context: zmq.Context
) -> None:
    """A lab member's own pyzmq REQ socket (the usual first client; here with libzmq's
    REQ_CORRELATE, whose envelope holds a request id) gets its replies, a malformed request's
    error and a run's reply held by the worker to the run's end too, instead of waiting for
    replies it cannot take; a DEALER that sends a REQ's empty delimiter frame is told what it
    did."""
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.REQ_CORRELATE, 1)  # the envelope also holds a request id
    req.setsockopt(zmq.REQ_RELAXED, 1)
    req.connect(server.endpoint)

    def exchange(frames: list) -> Reply:
        req.send_multipart(frames, copy=False)
        assert req.poll(int(BOUND_S * 1000), zmq.POLLIN), f"no reply to the REQ's {frames[0]!r}"
        return decode_reply(req.recv_multipart(copy=False))

    def ask(op: str, params: dict, arrays: dict | None = None, **header) -> Reply:
        return exchange(encode_request(op, params, arrays, **header)[1])

    assert ask("status", {}).result["state"] == "idle"
    assert exchange([b"not json"]).error["type"] == ERR_PROTOCOL
    session = ask("hello", {}).result["session"]
    program_id = ask("upload", {"meta": {}}, _program()).result["program_id"]  # the validator
    ran = ask("run", {"program_id": program_id, "shots": 3, "params": {}, "wait_s": 0.2},
              session=session)  # the reply held to the run's end: sent by the worker
    assert ran.result["state"] == "done"
    np.testing.assert_allclose(ran.arrays["sum"], _program()["a"] + _program()["b"])
    req.close(linger=0)
    _, frames = encode_request("status", {})
    reply = _raw_request(context, server.endpoint, [b"", *frames])
    assert not reply.ok and reply.error["type"] == ERR_PROTOCOL
    assert "empty delimiter" in reply.error["message"]


def test_handler_failure_becomes_internal_error(
    client: ControllerClient, executor: SumExecutor
) -> None:
    executor.fail_capabilities = True
    with pytest.raises(InstrumentCommandError, match="capabilities table missing") as info:
        client.hello()
    assert info.value.remote_type == ERR_INTERNAL
    assert client.status()["state"] == "idle"


# -- client lifecycle ----------------------------------------------------------------------


def test_client_close_is_idempotent_and_terminates_its_own_context(
    server: ControllerServer,
) -> None:
    ctrl = ControllerClient(server.endpoint, timeout_s=0.5)
    ctrl.status()
    own_context = ctrl._context
    ctrl.close()
    ctrl.close()
    assert ctrl.closed and own_context.closed
    with pytest.raises(InstrumentError, match="closed"):
        ctrl.status()


def test_client_leaves_a_given_context_open(server: ControllerServer, context: zmq.Context) -> None:
    with ControllerClient(server.endpoint, timeout_s=0.5, context=context) as ctrl:
        ctrl.status()
    assert not context.closed


def test_client_validates_its_bounds() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        ControllerClient("tcp://127.0.0.1:1", timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        ControllerClient("tcp://127.0.0.1:1", retries=-1)
    for spin_s in (-0.001, float("nan"), 0.5, True):
        with pytest.raises(ValueError, match="spin_s"):
            ControllerClient("tcp://127.0.0.1:1", spin_s=spin_s)


@pytest.mark.parametrize("spin_s", [0.0, 0.005])
@pytest.mark.parametrize("delay_s", [0.0, 0.05])
def test_a_reply_is_taken_whether_it_comes_while_the_client_spins_or_later(
    context: zmq.Context, spin_s: float, delay_s: float
) -> None:
    """The client polls without sleeping for ``spin_s``, then blocks: a reply that comes
    during the spin and one that comes after it (or with no spin) are both taken, at the first
    attempt (the controller hears the request once)."""
    def respond(request: Request) -> list[list]:
        time.sleep(delay_s)
        return [encode_reply(request.id, {"protocol_versions": [PROTOCOL_VERSION],
                                          "session": "s1"})]

    fake = FakeController(context, respond)
    try:
        with ControllerClient(fake.endpoint, timeout_s=2.0, retries=1, spin_s=spin_s) as ctrl:
            assert ctrl.spin_s == spin_s
            assert ctrl.hello()["session"] == "s1"
        assert len(fake.requests) == 1
    finally:
        fake.close()


#: A controller in a process of its own (a fake in this process would share the interpreter
#: lock with the busy-waiting client): answers every request after ``argv[1]`` seconds, prints
#: its port, and exits when its stdin closes.
DELAYED_CONTROLLER = """
import json, sys, threading, time, zmq
delay = float(sys.argv[1])
socket = zmq.Context().socket(zmq.ROUTER)
port = socket.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
def serve():
    while True:
        identity, header, *rest = socket.recv_multipart()
        request = json.loads(header)
        time.sleep(delay)
        reply = {"v": request["v"], "id": request["id"], "ok": True, "error": None,
                 "result": {"protocol_versions": [request["v"]], "session": "s1"},
                 "arrays": []}
        socket.send_multipart([identity, json.dumps(reply).encode()])
threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
"""


@pytest.fixture
def delayed_controller() -> Iterator[str]:
    """The endpoint of :data:`DELAYED_CONTROLLER` answering after 5 ms; stopped by its pid."""
    proc = subprocess.Popen([sys.executable, "-c", DELAYED_CONTROLLER, "0.005"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=BOUND_S)
        proc.stdout.close()


def test_the_busy_wait_polls_without_blocking_until_the_reply_comes(
    delayed_controller: str, monkeypatch
) -> None:
    """With ``spin_s`` > 0 the client polls without blocking (timeout 0) until the reply comes:
    a reply 5 ms into a 50 ms busy wait is seen by such a poll, after others that found
    nothing (a loaded machine may run only a few in 5 ms). With ``spin_s`` = 0 the client
    only blocks."""
    polls: list[tuple[int, int, int]] = []  # (socket id, timeout ms, events) of every poll
    real_poll = zmq.Socket.poll

    def recording(self, timeout=None, flags=zmq.POLLIN):
        events = real_poll(self, timeout, flags)
        polls.append((id(self), timeout, events))
        return events

    monkeypatch.setattr(zmq.Socket, "poll", recording)
    for spin_s in (0.05, 0.0):
        with ControllerClient(delayed_controller, timeout_s=2.0, retries=0,
                              spin_s=spin_s) as ctrl:
            ctrl.hello()
            mine = id(ctrl._socket)
            polls.clear()
            ctrl.status()
            seen = [(timeout, events) for sid, timeout, events in polls if sid == mine]
        if spin_s:
            hit = next(i for i, (_, events) in enumerate(seen) if events)
            assert hit >= 1  # polls found nothing first (how many: the machine's load)
            assert all(timeout == 0 for timeout, _ in seen[:hit + 1])  # none of them blocked
        else:
            assert seen and all(timeout != 0 for timeout, _ in seen)


def test_the_busy_wait_ends_with_the_reply(context: zmq.Context) -> None:
    """Ten replies from a controller that answers at once take far less than ten busy waits of
    the longest ``spin_s`` (0.05 s) would: the busy wait ends when the reply comes."""
    def respond(request: Request) -> list[list]:
        return [encode_reply(request.id, {"protocol_versions": [PROTOCOL_VERSION],
                                          "session": "s1"})]

    fake = FakeController(context, respond)
    try:
        with ControllerClient(fake.endpoint, timeout_s=2.0, spin_s=0.05) as ctrl:
            ctrl.hello()
            start = time.monotonic()
            for _ in range(10):
                ctrl.status()
            assert time.monotonic() - start < 0.3  # ten spins to their end: 0.5 s
    finally:
        fake.close()


def test_requests_from_several_threads_are_serialised(client: ControllerClient) -> None:
    program_id = client.upload(_program(), {})
    errors: list[BaseException] = []
    run_ids: list[str] = []

    def submit() -> None:
        try:
            for _ in range(5):
                run_ids.append(client.run(program_id, shots=1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND_S)
    assert not errors
    assert len(set(run_ids)) == 20
    for run_id in run_ids:
        client.wait(run_id, timeout_s=BOUND_S)


def test_malformed_endpoint_fails_fast_and_close_is_bounded() -> None:
    """A mistyped endpoint is an InstrumentError naming it; no socket is left behind, so
    closing the client (which terminates its context) returns at once."""
    client = ControllerClient("tcp://127.0.0.1:abc", timeout_s=0.5, retries=0)
    with pytest.raises(InstrumentError, match="cannot connect"):
        client.hello()
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2.0


def test_a_run_whose_transport_fails_is_aborted_and_the_error_says_so(
    context: zmq.Context, server: ControllerServer, executor: SumExecutor
) -> None:
    # Every reply to a fetch is lost: the transport fails while the run keeps playing.
    relay = LossyRelay(context, server.endpoint, drops=lambda op, _dropped: op == OP_FETCH)
    try:
        with ControllerClient(relay.endpoint, timeout_s=0.3, retries=1) as ctrl:
            program_id = ctrl.upload(_program(), {})
            run_id = ctrl.run(program_id, shots=1, params={"sleep_s": 30.0}, key="T")
            # the controller answers the abort while the run still sleeps
            with pytest.raises(InstrumentTimeoutError,
                               match=f"run {run_id} aborted: the controller, asked to stop "
                                     "it, reports it still running") as info:
                ctrl.wait(run_id, timeout_s=60.0)
            assert info.value.command == OP_FETCH
            assert str(info.value).count(relay.endpoint) == 1
        with ControllerClient(server.endpoint, timeout_s=BOUND_S) as direct:
            # The 30 s run stopped: the controller is idle long before it would have ended.
            _wait_until(lambda: direct.status()["state"] == "idle")
    finally:
        relay.close()


# -- sessions: runs belong to the client that started them ------------------------------


def test_only_the_session_that_started_a_run_can_fetch_or_abort_it(
    server: ControllerServer, client: ControllerClient
) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, shots=1, params={"sleep_s": 0.2})
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as neighbour:
        for call in (lambda: neighbour.fetch(run_id), lambda: neighbour.abort(run_id)):
            with pytest.raises(InstrumentCommandError, match="belongs to another session") as e:
                call()
            assert e.value.remote_type == ERR_FORBIDDEN
    client.wait(run_id, timeout_s=BOUND_S)  # the neighbour did not stop it
    assert client.fetch(run_id)[0] == "done"


def test_a_run_without_a_session_is_refused(server: ControllerServer,
                                            context: zmq.Context) -> None:
    for session in (None, "not-a-session"):
        request_id, frames = encode_request(OP_RUN, {"program_id": "p", "shots": 1},
                                            session=session)
        reply = _raw_request(context, server.endpoint, frames)
        assert (reply.id, reply.ok) == (request_id, False)
        assert reply.error["type"] == ERR_UNKNOWN_SESSION
        assert "send hello first" in reply.error["message"]


def test_a_session_idle_past_its_limit_is_forgotten_when_another_opens(
    server: ControllerServer, context: zmq.Context, monkeypatch
) -> None:
    """Sessions are kept in the order they were last used and the idle ones dropped from the
    front when a hello opens another (a review's 100 000 hellos made each hello scan them all:
    3.6 ms instead of 1.1 ms); one used since stays."""
    import labqpu.firmware_sim.controller_server as controller_server

    monkeypatch.setattr(controller_server, "SESSION_IDLE_S", 1.0)

    def hello() -> str:
        request_id, frames = encode_request(OP_HELLO, {})
        reply = _raw_request(context, server.endpoint, frames)
        assert (reply.id, reply.ok) == (request_id, True)
        return reply.result["session"]

    def known(session: str) -> bool:
        _, frames = encode_request(OP_FETCH, {"run_id": "none"}, session=session)
        reply = _raw_request(context, server.endpoint, frames)
        return reply.error["type"] != ERR_UNKNOWN_SESSION

    used, idle = hello(), hello()  # ``used`` first: using it again moves it behind ``idle``
    time.sleep(0.8)
    assert known(used)  # within the limit, and used again now
    time.sleep(0.6)  # ``idle`` last used 1.4 s ago, ``used`` 0.6 s ago
    hello()
    assert not known(idle)
    assert known(used)


def test_hello_keeps_the_session_and_states_the_key_retention(client: ControllerClient) -> None:
    first = client.hello()
    assert client.hello()["session"] == first["session"]
    assert first["limits"]["key_retention_s"] >= 3600


def test_a_key_is_bound_to_its_session_and_its_request(
    server: ControllerServer, client: ControllerClient, executor: SumExecutor
) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, shots=2, key="job-7:0")
    assert client.run(program_id, shots=2, key="job-7:0") == run_id  # a retry: the same run
    with pytest.raises(InstrumentCommandError, match="used for a different request") as info:
        client.run(program_id, shots=3, key="job-7:0")
    assert info.value.remote_type == ERR_BAD_PARAMS
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as neighbour:
        other = neighbour.run(program_id, shots=2, key="job-7:0")
        assert other != run_id  # the same key in another session is another run
        neighbour.wait(other, timeout_s=BOUND_S)
    client.wait(run_id, timeout_s=BOUND_S)
    assert executor.executions == 2


def test_remembered_keys_and_sessions_are_bounded(
    server: ControllerServer, client: ControllerClient, executor: SumExecutor,
    context: zmq.Context, monkeypatch
) -> None:
    """A neighbour flooding the controller with keyed runs (512 KiB keys: 2.9 GB in 20 s) or
    with hellos cannot take its memory: a key is at most 128 characters (stated in ``hello``),
    the oldest of more than ``max_keys`` keys is forgotten early, and the least recently used
    of more than ``max_sessions`` sessions is forgotten when another opens."""
    import labqpu.firmware_sim.controller_server as controller_server

    limits = client.hello()["limits"]
    assert (limits["max_key_chars"], limits["max_keys"], limits["max_sessions"]) == \
        (128, 65_536, 4096)
    long_key = "k" * 129
    with pytest.raises(ProtocolError, match="idempotency key of 129 characters; at most 128"):
        encode_request(OP_RUN, {"program_id": "p", "shots": 1}, key=long_key)
    request_id, frames = encode_request(OP_RUN, {"program_id": "p", "shots": 1},
                                        session=client.hello()["session"])
    header = json.loads(bytes(frames[0]))
    header["key"] = long_key
    reply = _raw_request(context, server.endpoint, [json.dumps(header).encode(), *frames[1:]])
    assert (reply.id, reply.ok, reply.error["type"]) == (request_id, False, ERR_PROTOCOL)
    assert "idempotency key of 129 characters" in reply.error["message"]

    monkeypatch.setattr(controller_server, "MAX_KEYS", 3)
    program_id = client.upload(_program(), {})
    first = [client.run(program_id, shots=2, key=f"job:{i}") for i in range(4)]
    for run_id in first:
        client.wait(run_id, timeout_s=BOUND_S)
    assert executor.executions == 4
    assert [client.run(program_id, shots=2, key=f"job:{i}") for i in (1, 2, 3)] == first[1:]
    again = client.run(program_id, shots=2, key="job:0")  # forgotten: a new run
    assert again not in first
    client.wait(again, timeout_s=BOUND_S)
    assert executor.executions == 5

    monkeypatch.setattr(controller_server, "MAX_SESSIONS", 3)

    def hello(session: str | None = None) -> str:
        request_id, frames = encode_request(OP_HELLO, {}, session=session)
        reply = _raw_request(context, server.endpoint, frames)
        assert (reply.id, reply.ok) == (request_id, True)
        return reply.result["session"]

    def known(session: str) -> bool:
        _, frames = encode_request(OP_FETCH, {"run_id": "none"}, session=session)
        return _raw_request(context, server.endpoint, frames).error["type"] != \
            ERR_UNKNOWN_SESSION

    sessions = [hello() for _ in range(3)]
    assert hello(sessions[0]) == sessions[0]  # hello again keeps it, now the most recent
    newest = hello()
    assert [known(s) for s in sessions] == [True, False, True]
    assert known(newest)
    assert len(server._sessions) == 3
    # a session between its run and its fetch is never forgotten, however many hellos come
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as waiting:
        run_id = waiting.run(waiting.upload(_program(), {}), shots=2,
                             params={"sleep_s": 0.5})
        for _ in range(10):
            hello()
        assert "sum" in waiting.wait(run_id, timeout_s=BOUND_S)[1]
    assert len(server._sessions) == 3


def test_a_session_cannot_fill_the_queue(executor: SumExecutor) -> None:
    with (ControllerServer(executor, max_queued_per_session=3) as srv,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as greedy,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as polite):
        program_id = greedy.upload(_program(), {})
        runs = [greedy.run(program_id, shots=1, params={"sleep_s": 0.3}) for _ in range(3)]
        with pytest.raises(InstrumentCommandError, match="limit 3") as info:
            greedy.run(program_id, shots=1)
        assert info.value.remote_type == ERR_QUEUE_FULL
        assert greedy.hello()["limits"]["max_queued_per_session"] == 3
        other = polite.run(program_id, shots=1)  # another client is not refused
        for run_id in runs:
            greedy.wait(run_id, timeout_s=BOUND_S)
        polite.wait(other, timeout_s=BOUND_S)
        greedy.wait(greedy.run(program_id, shots=1), timeout_s=BOUND_S)  # room again
        # runs that fail or are aborted free their places too
        failing = greedy.run(program_id, shots=1, params={"fail": "boom"})
        playing = greedy.run(program_id, shots=1, params={"sleep_s": 5.0})
        queued = greedy.run(program_id, shots=1)
        greedy.abort(queued)
        greedy.abort(playing)
        for run_id in (failing, playing):
            with pytest.raises(InstrumentCommandError):
                greedy.wait(run_id, timeout_s=BOUND_S)
        again = [greedy.run(program_id, shots=1) for _ in range(3)]
        for run_id in again:
            greedy.wait(run_id, timeout_s=BOUND_S)


def test_sessions_take_turns_so_a_long_queue_delays_another_client_by_one_run(
        executor: SumExecutor) -> None:
    """Runs are taken one session at a time in turn (``FairQueue``): with ten of one client's
    runs waiting, another client's run plays after at most one more of them, not after all
    ten (a review's neighbour with many queued runs made a lab user's job take 26 s instead of
    0.7 s). Within a session, runs keep their order."""
    with (ControllerServer(executor) as srv,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as busy,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as user):
        program_id = busy.upload(_program(), {})
        queued = [busy.run(program_id, shots=1, params={"sleep_s": 0.2}) for _ in range(10)]
        mine = user.run(program_id, shots=1)
        user.wait(mine, timeout_s=BOUND_S)
        done = [busy.fetch(run_id)[0] == "done" for run_id in queued]
        assert sum(done) <= 3, done  # the one playing when it came, at most one more
        assert done == sorted(done, reverse=True)  # the busy client's runs in their order
        for run_id in queued:
            busy.wait(run_id, timeout_s=BOUND_S)


def test_a_held_fetch_is_answered_when_the_run_ends(client: ControllerClient) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, shots=1, params={"sleep_s": 0.2})
    state, _, arrays = client.fetch(run_id, wait_s=1.0)
    assert state == "done"  # not "running": the reply waited for the end of the run
    assert set(arrays) == {"sum", "prod"}
    quick = client.run(program_id, shots=1, params={"sleep_s": 0.5})
    assert client.fetch(quick, wait_s=0.05)[0] in ("queued", "running")  # the hold expired
    client.wait(quick, timeout_s=BOUND_S)
    with pytest.raises(InstrumentCommandError, match="wait_s must be") as info:
        client.fetch(quick, wait_s=5.0)
    assert info.value.remote_type == ERR_BAD_PARAMS


def test_a_held_run_reply_brings_a_short_runs_results(client: ControllerClient) -> None:
    """``run`` with ``wait_s``: the controller states ``run_wait`` in ``hello``; a run that
    ends within the hold comes back done, with its results and elapsed time, in the run's own
    reply; one that does not comes back queued or running after the hold, and is then waited
    for as any run."""
    assert client.hello()["capabilities"]["run_wait"] == {"max_wait_s": 1.0}
    program_id = client.upload(_program(), {})
    run_id, ended = client.run_held(program_id, shots=3, wait_s=client.max_hold_s)
    assert ended is not None
    result, arrays = ended
    assert result["state"] == "done" and result["run_id"] == run_id
    assert 0 < result["elapsed_s"] < BOUND_S
    expected = _program()
    assert np.array_equal(arrays["prod"], expected["a"] * expected["b"] * 3)
    slow_id, ended = client.run_held(program_id, shots=1, wait_s=0.05,
                                     params={"sleep_s": 0.4})
    assert ended is None  # the hold expired first
    result, arrays = client.wait(slow_id, timeout_s=BOUND_S)
    assert set(arrays) == {"sum", "prod"}
    assert client.status()["runs_total"] == 2


def test_a_held_run_reply_reports_a_failed_run_and_a_bad_hold_is_refused(
        client: ControllerClient) -> None:
    program_id = client.upload(_program(), {})
    with pytest.raises(InstrumentCommandError, match="failed: boom") as info:
        client.run_held(program_id, shots=1, wait_s=0.2, params={"fail": "boom"})
    assert info.value.remote_type == "RuntimeError"
    for bad in (0.0, 0.3, float("nan")):
        with pytest.raises(ValueError, match="wait_s"):
            client.run_held(program_id, shots=1, wait_s=bad)
    runs = client.status()["runs_total"]
    request = {"program_id": program_id, "shots": 1, "params": {}, "wait_s": 5.0}
    with pytest.raises(InstrumentCommandError, match="run: wait_s must be") as info:
        client._request(OP_RUN, request, key="too-long")  # past the client's own check
    assert info.value.remote_type == ERR_BAD_PARAMS
    assert client.status()["runs_total"] == runs  # refused before anything was queued


@pytest.fixture
def holds(monkeypatch) -> list[float]:
    """The hold (``wait_s``, s) of every ``ControllerClient.fetch`` in this process, in order
    (the real method, wrapped to count)."""
    seen: list[float] = []
    fetch = ControllerClient.fetch

    def counting(self, run_id, **kwargs):
        seen.append(kwargs.get("wait_s", 0.0))
        return fetch(self, run_id, **kwargs)

    monkeypatch.setattr(ControllerClient, "fetch", counting)
    return seen


def test_a_cancel_set_while_the_run_reply_was_held_aborts_before_the_next_hold(
        client: ControllerClient, holds: list[float]) -> None:
    """A job cancelled while its run's reply was held: ``wait`` aborts the run before it asks
    the controller to hold another reply, so the cancel costs no second hold."""
    program_id = client.upload(_program(), {})
    run_id, ended = client.run_held(program_id, shots=1, wait_s=0.05, params={"sleep_s": 2.0})
    assert ended is None
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InstrumentCommandError, match="aborted"):
        client.wait(run_id, timeout_s=BOUND_S, cancel=cancel)
    assert len(holds) == 1  # the fetch that found the run aborted, no hold spent before it


def test_a_wait_after_a_held_reply_counts_the_hold_in_its_deadline(
        client: ControllerClient, holds: list[float]) -> None:
    """``waited_s``: time already spent on the run's held reply comes off the deadline; a
    wait with nothing left asks for no hold, aborts the run and names the whole timeout, and
    says that the run, still computing when the controller answered, was asked to stop."""
    program_id = client.upload(_program(), {})
    run_id, ended = client.run_held(program_id, shots=1, wait_s=0.05, params={"sleep_s": 2.0})
    assert ended is None
    with pytest.raises(InstrumentTimeoutError, match=r"still running after 0\.05 s; run \S+ "
                       r"aborted: the controller, asked to stop it, reports it still running"):
        client.wait(run_id, timeout_s=0.05, waited_s=0.05)
    assert holds == [0.0]


def test_a_repeated_key_with_a_held_reply_returns_the_runs_results(
        client: ControllerClient) -> None:
    """A held ``run`` sent again with its key (a retry) runs nothing new: it is held for, or
    answered with, the run the key started, still running or finished."""
    program_id = client.upload(_program(), {})
    first, ended = client.run_held(program_id, shots=2, wait_s=0.01, key="k",
                                   params={"sleep_s": 0.3})
    assert ended is None  # still running
    again, ended = client.run_held(program_id, shots=2, wait_s=0.01, key="k",
                                   params={"sleep_s": 0.3})
    assert again == first and ended is None
    client.wait(first, timeout_s=BOUND_S)
    again, ended = client.run_held(program_id, shots=2, wait_s=0.2, key="k",
                                   params={"sleep_s": 0.3})
    assert again == first
    assert ended is not None and ended[0]["state"] == "done"
    assert set(ended[1]) == {"sum", "prod"}
    assert client.status()["runs_total"] == 1


def test_other_clients_are_served_while_a_fetch_is_held(server: ControllerServer,
                                                       client: ControllerClient) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, shots=1, params={"sleep_s": 0.5})
    holder = threading.Thread(target=lambda: client.fetch(run_id, wait_s=1.0))
    holder.start()
    try:
        with ControllerClient(server.endpoint, timeout_s=0.2, retries=0) as other:
            assert other.status()["state"] == "busy"  # answered within 0.2 s
    finally:
        holder.join(BOUND_S)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_serving_thread_that_dies_is_reported_at_once(executor, monkeypatch) -> None:
    """``serving`` turns False as the serving thread dies, so the simulator's watch exits the
    process (code 70). Its teardown waited in ``context.term()`` for the worker's sockets,
    the thread never ended, and the process went on answering nothing."""
    from labqpu.firmware_sim import zmtp

    read = threading.Event()

    def broken(self, timeout_s=0.0):
        read.wait(BOUND_S)  # until the test has seen the server serving
        raise RuntimeError("a bug in reading")

    monkeypatch.setattr(zmtp.ZmtpServer, "receive", broken)
    with ControllerServer(executor, name="sim0") as server:
        assert server.serving
        read.set()
        _wait_until(lambda: not server.serving, timeout_s=2.0)


def test_uploads_waiting_for_validation_are_bounded_in_bytes(context) -> None:
    """At most ``max_pending_upload_bytes`` of uploads wait for validation: a whole message is
    bounded while it arrives, and the finished ones waiting (16 of up to 512 MiB) were not."""
    release = threading.Event()

    class SlowToValidate(SumExecutor):
        def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
            release.wait(BOUND_S)
            super().load(arrays, meta)

    with ControllerServer(SlowToValidate(), name="sim0",
                          max_pending_upload_bytes=5 * _program(100_000)["a"].nbytes) as server:
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(server.endpoint)
        ids = []
        for k in range(3):  # 1.6 MB each: the first two wait, the third would pass the bound
            program = _program(100_000)
            program["a"][0] = k
            request_id, frames = encode_request(OP_UPLOAD, {"meta": {}}, program)
            ids.append(request_id)
            socket.send_multipart(frames, copy=False)
        assert socket.poll(int(BOUND_S * 1000), zmq.POLLIN)
        refused = decode_reply(socket.recv_multipart())
        assert (refused.id, refused.ok, refused.error["type"]) == (ids[2], False, "QueueFull")
        assert "bytes) are waiting for validation" in refused.error["message"]
        release.set()
        for _ in range(2):
            assert socket.poll(int(BOUND_S * 1000), zmq.POLLIN)
            assert decode_reply(socket.recv_multipart()).ok
        socket.close(linger=0)


def test_one_clients_upload_flood_leaves_places_for_the_others(context) -> None:
    """A client connection holds at most a quarter of the validation queue's places: a
    neighbour sending uploads without waiting for replies filled all of them, and a user's
    upload got ``QueueFull`` for as long as the flood went on (its retries lost the race for
    each freed place)."""
    release = threading.Event()

    class SlowToValidate(SumExecutor):
        def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
            release.wait(BOUND_S)
            super().load(arrays, meta)

    with ControllerServer(SlowToValidate(), name="sim0", max_pending_uploads=8) as server:
        flood = context.socket(zmq.DEALER)
        flood.setsockopt(zmq.LINGER, 0)
        flood.connect(server.endpoint)
        ids = []
        for k in range(5):
            program = _program(1000)
            program["a"][0] = k
            request_id, frames = encode_request(OP_UPLOAD, {"meta": {}}, program)
            ids.append(request_id)
            flood.send_multipart(frames, copy=False)
        refused = []
        for _ in range(3):
            assert flood.poll(int(BOUND_S * 1000), zmq.POLLIN)
            refused.append(decode_reply(flood.recv_multipart()))
        assert [(r.id, r.error["type"]) for r in refused] == [(i, "QueueFull") for i in ids[2:]]
        assert "2 uploads of this client are waiting" in refused[0].error["message"]
        with ControllerClient(server.endpoint, timeout_s=BOUND_S) as user:
            waiter = threading.Timer(0.3, release.set)
            waiter.start()
            assert user.upload(_program(7), {})  # taken, answered once validated
            waiter.join()
        for _ in range(2):
            assert flood.poll(int(BOUND_S * 1000), zmq.POLLIN)
            assert decode_reply(flood.recv_multipart()).ok
        flood.close(linger=0)
