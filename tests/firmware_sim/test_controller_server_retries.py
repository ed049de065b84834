"""ControllerClient against ControllerServer over real ZeroMQ tcp sockets on 127.0.0.1: retries.

Idempotency and Lazy Pirate retries (lost replies, silent or gone controllers, stale replies,
another version) and the client's lifecycle: close, bounds, the busy wait for a reply, several
threads, a transport that fails mid-run, a serving thread that dies.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import (
    OP_FETCH,
    OP_HELLO,
    OP_RUN,
    PROTOCOL_VERSION,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
)
from labqpu.errors import (
    HardwareUnavailableError,
    InstrumentError,
    InstrumentTimeoutError,
    ProtocolError,
)
from labqpu.firmware_sim.controller_server import ControllerServer

BOUND_S = 5.0  # generous bound on any wait that should end quickly


def _wait_until(predicate: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _server_on_port(executor, port: int) -> ControllerServer:
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


# -- idempotency and Lazy Pirate -------------------------------------------------------------


def test_same_idempotency_key_executes_once(
    client: ControllerClient, executor, _program
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
    server: ControllerServer, executor, context: zmq.Context, _program
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
    context: zmq.Context, executor
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
    executor,
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


def test_stop_releases_the_port(executor, context: zmq.Context) -> None:
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


def test_requests_from_several_threads_are_serialised(client: ControllerClient, _program) -> None:
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
    context: zmq.Context, server: ControllerServer, executor, _program
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
