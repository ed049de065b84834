"""ControllerClient against ControllerServer over real ZeroMQ tcp sockets on 127.0.0.1: sessions.

Runs belong to the session that started them; idempotency keys are bound to a session and a
request; keys, sessions, queues and the validation queue are bounded; sessions take turns; held
``run`` and ``fetch`` replies.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import (
    ERR_ABORTED,
    ERR_BAD_PARAMS,
    ERR_FORBIDDEN,
    ERR_PROTOCOL,
    ERR_QUEUE_FULL,
    ERR_UNKNOWN_SESSION,
    OP_ABORT,
    OP_FETCH,
    OP_HELLO,
    OP_RUN,
    OP_UPLOAD,
    decode_reply,
    encode_request,
)
from labqpu.errors import InstrumentCommandError, InstrumentTimeoutError, ProtocolError
from labqpu.firmware_sim.controller_server import ControllerServer

BOUND_S = 5.0  # generous bound on any wait that should end quickly


# -- sessions: runs belong to the client that started them ------------------------------


def test_only_the_session_that_started_a_run_can_fetch_or_abort_it(
    server: ControllerServer, client: ControllerClient, _program
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
                                            context: zmq.Context, _raw_request) -> None:
    for session in (None, "not-a-session"):
        request_id, frames = encode_request(OP_RUN, {"program_id": "p", "shots": 1},
                                            session=session)
        reply = _raw_request(context, server.endpoint, frames)
        assert (reply.id, reply.ok) == (request_id, False)
        assert reply.error["type"] == ERR_UNKNOWN_SESSION
        assert "send hello first" in reply.error["message"]


def test_a_session_idle_past_its_limit_is_forgotten_when_another_opens(
    server: ControllerServer, context: zmq.Context, monkeypatch, _raw_request
) -> None:
    """Sessions are kept in the order they were last used and the idle ones dropped from the
    front when a hello opens another (a review's 100 000 hellos made each hello scan them all:
    3.6 ms instead of 1.1 ms); one used since stays."""
    import labqpu.firmware_sim.sessions as sessions

    monkeypatch.setattr(sessions, "SESSION_IDLE_S", 1.0)

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
    server: ControllerServer, client: ControllerClient, executor, _program
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
    server: ControllerServer, client: ControllerClient, executor,
    context: zmq.Context, monkeypatch, _program, _raw_request
) -> None:
    """A neighbour flooding the controller with keyed runs (512 KiB keys: 2.9 GB in 20 s) or
    with hellos cannot take its memory: a key is at most 128 characters (stated in ``hello``),
    the oldest of more than ``max_keys`` keys is forgotten early, and the least recently used
    of more than ``max_sessions`` sessions is forgotten when another opens."""
    import labqpu.firmware_sim.sessions as sessions

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

    monkeypatch.setattr(sessions, "MAX_KEYS", 3)
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

    monkeypatch.setattr(sessions, "MAX_SESSIONS", 4)  # one held by ``client``, whose runs
    # the controller keeps

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
    assert len(server._sessions) == 4
    # a session between its run and its fetch is never forgotten, however many hellos come
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as waiting:
        run_id = waiting.run(waiting.upload(_program(), {}), shots=2,
                             params={"sleep_s": 0.5})
        for _ in range(10):
            hello()
        assert "sum" in waiting.wait(run_id, timeout_s=BOUND_S)[1]
    assert len(server._sessions) == 4
    # nor one whose run finished, kept (a review's case: a lost reply's retry found its
    # session gone, so a retried run played twice and a retried fetch was refused)
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as lost:
        program_id = lost.upload(_program(), {})
        run_id = lost.run(program_id, shots=2, key="job-9:0")
        while lost.status()["state"] != "idle":
            time.sleep(0.01)
        for _ in range(10):
            hello()
        executions = executor.executions
        assert lost.run(program_id, shots=2, key="job-9:0") == run_id  # the same run
        assert lost.fetch(run_id)[0] == "done" and executor.executions == executions


def test_a_run_is_aborted_by_its_key_whether_it_came_or_not(
    server: ControllerServer, client: ControllerClient, executor, context: zmq.Context,
    _program, _raw_request
) -> None:
    """A host whose ``run`` reply never came (a cancel, a timeout) knows only the request's
    key: ``abort`` by key stops the run the session sent under it, and a key aborted before
    its run came makes that run refused (``Aborted``) when it comes, never played; the same
    key in another session is another run."""
    assert client.hello()["capabilities"]["abort_by_key"] is True
    session = client.hello()["session"]

    def abort(params: dict) -> dict:
        request_id, frames = encode_request(OP_ABORT, params, session=session)
        reply = _raw_request(context, server.endpoint, frames)
        assert reply.id == request_id
        return reply.result if reply.ok else reply.error

    program_id = client.upload(_program(), {})
    playing = client.run(program_id, shots=1, params={"sleep_s": 30.0}, key="job-1:0")
    assert executor.started.wait(BOUND_S)
    assert abort({"key": "job-1:0"}) == {"run_id": playing, "state": "running"}
    with pytest.raises(InstrumentCommandError, match="was aborted"):
        client.wait(playing, timeout_s=BOUND_S)
    queued_behind = client.run(program_id, shots=1, params={"sleep_s": 0.5})
    waiting = client.run(program_id, shots=1, key="job-2:0")
    assert abort({"key": "job-2:0"}) == {"run_id": waiting, "state": "aborted"}

    assert abort({"key": "job-3:0"}) == {"run_id": None, "state": "aborted"}
    assert abort({"key": "job-3:0"}) == {"run_id": None, "state": "aborted"}
    with pytest.raises(InstrumentCommandError, match="was aborted before this run request "
                       "came; nothing runs") as info:
        client.run(program_id, shots=1, key="job-3:0")
    assert info.value.remote_type == ERR_ABORTED
    with ControllerClient(server.endpoint, timeout_s=BOUND_S) as neighbour:
        other = neighbour.run(neighbour.upload(_program(), {}), shots=1, key="job-3:0")
        neighbour.wait(other, timeout_s=BOUND_S)
    client.wait(queued_behind, timeout_s=BOUND_S)
    assert executor.executions == 3  # the run stopped, the one behind it, the neighbour's
    assert client.status()["runs_total"] == 4

    for params, problem in (({"key": 7}, "parameter 'key' must be str"),
                            ({"key": "k" * 129}, "key of 129 characters; at most 128")):
        error = abort(params)
        assert error["type"] == ERR_BAD_PARAMS and problem in error["message"], error


def test_the_parameters_of_queued_runs_are_bounded(executor, _program, monkeypatch) -> None:
    """A review's case: runs queued with 900 kB of parameters each (256 per session, sessions
    free to open) grew the simulator by ~230 MB a session. The request bytes of queued and
    running runs are bounded, all sessions together and a quarter of that for one, with a
    ``QueueFull`` that says so; a neighbour's run still gets in, and room comes back."""
    import labqpu.firmware_sim.controller_server as controller_server

    monkeypatch.setattr(controller_server, "MAX_QUEUED_REQUEST_BYTES", 40_000)
    junk = {"note": "x" * 4_000}
    with (ControllerServer(executor) as srv,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as greedy,
          ControllerClient(srv.endpoint, timeout_s=BOUND_S) as polite):
        assert greedy.hello()["limits"]["max_queued_request_bytes"] == 128 * 1024 * 1024
        program_id = greedy.upload(_program(), {})
        runs = [greedy.run(program_id, shots=1, params={"sleep_s": 0.5, **junk})]
        runs.append(greedy.run(program_id, shots=1, params=junk))
        with pytest.raises(InstrumentCommandError, match="bytes of parameters") as info:
            greedy.run(program_id, shots=1, params=junk)
        assert info.value.remote_type == ERR_QUEUE_FULL
        other = polite.run(program_id, shots=1)
        for run_id in runs:
            greedy.wait(run_id, timeout_s=BOUND_S)
        polite.wait(other, timeout_s=BOUND_S)
        greedy.wait(greedy.run(program_id, shots=1, params=junk), timeout_s=BOUND_S)


def test_a_session_cannot_fill_the_queue(executor, _program) -> None:
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
        executor, _program) -> None:
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


def test_a_held_fetch_is_answered_when_the_run_ends(client: ControllerClient, _program) -> None:
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


def test_a_held_run_reply_brings_a_short_runs_results(client: ControllerClient, _program) -> None:
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
        client: ControllerClient, _program) -> None:
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
        client: ControllerClient, holds: list[float], _program) -> None:
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
        client: ControllerClient, holds: list[float], _program) -> None:
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
        client: ControllerClient, _program) -> None:
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
                                                       client: ControllerClient, _program) -> None:
    program_id = client.upload(_program(), {})
    run_id = client.run(program_id, shots=1, params={"sleep_s": 0.5})
    holder = threading.Thread(target=lambda: client.fetch(run_id, wait_s=1.0))
    holder.start()
    try:
        with ControllerClient(server.endpoint, timeout_s=0.2, retries=0) as other:
            assert other.status()["state"] == "busy"  # answered within 0.2 s
    finally:
        holder.join(BOUND_S)


def test_uploads_waiting_for_validation_are_bounded_in_bytes(
    context, SumExecutor, _program
) -> None:
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


def test_one_clients_upload_flood_leaves_places_for_the_others(
    context, SumExecutor, _program
) -> None:
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
