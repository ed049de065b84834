"""ControllerClient against ControllerServer over real ZeroMQ tcp sockets on 127.0.0.1: round trips.

Uploads, runs, waits and fetches, the bounds on stored programs and finished runs, run outcomes
(executor failures, aborts, deadlines) and typed errors for bad requests. The executor
(``SumExecutor`` in conftest.py) is a small real device stand-in; the transport, the protocol
and both ends are the production code.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import (
    ERR_BAD_PARAMS,
    ERR_INTERNAL,
    ERR_INVALID_PROGRAM,
    ERR_PROTOCOL,
    ERR_QUEUE_FULL,
    ERR_UNKNOWN_OP,
    ERR_UNKNOWN_PROGRAM,
    ERR_UNKNOWN_RUN,
    OP_FETCH,
    OP_RUN,
    OP_UPLOAD,
    PROTOCOL_VERSION,
    Reply,
    decode_reply,
    encode_request,
    salvage_request_id,
)
from labqpu.errors import InstrumentCommandError, InstrumentTimeoutError
from labqpu.firmware_sim.controller_server import ControllerServer

BOUND_S = 5.0  # generous bound on any wait that should end quickly


# -- round trips -------------------------------------------------------------------------


def test_hello_reports_version_server_and_capabilities(client: ControllerClient) -> None:
    info = client.hello()
    assert PROTOCOL_VERSION in info["protocol_versions"]
    assert info["server"] == "sim0"
    assert info["firmware"].startswith("labqpu-sim ")
    assert info["capabilities"]["channels"] == ["d0", "r0"]


def test_upload_run_wait_fetch_round_trip(client: ControllerClient, _program) -> None:
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
    client: ControllerClient, executor, _program
) -> None:
    first = client.upload(_program(), {"name": "p", "x": [1, 2]})
    second = client.upload(_program(), {"x": [1, 2], "name": "p"})
    assert first == second
    assert len(first) == 16 and int(first, 16) >= 0
    assert client.status()["programs"] == 1
    assert client.upload(_program(9), {"name": "p", "x": [1, 2]}) != first
    assert client.upload(_program(), {"name": "q", "x": [1, 2]}) != first
    assert client.status()["programs"] == 3


def test_program_store_is_bounded(executor, _program) -> None:
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


def test_program_memory_is_bounded(executor, _program) -> None:
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


def test_queued_runs_count_their_programs_into_the_memory_bound(executor, _program) -> None:
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
        executor, _program) -> None:
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


def test_finished_runs_are_bounded(executor, _program) -> None:
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


# -- run outcomes ------------------------------------------------------------------------


def test_executor_exception_becomes_command_error_with_its_message(
    client: ControllerClient, _program,
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


def test_uploaded_program_is_immutable(client: ControllerClient, _program) -> None:
    program = _program()
    program_id = client.upload(program, {})
    run_id = client.run(program_id, shots=1, params={"mutate": True})
    with pytest.raises(InstrumentCommandError, match="read-only") as info:
        client.wait(run_id, timeout_s=BOUND_S)
    assert info.value.remote_type == "ValueError"
    _, arrays = client.wait(client.run(program_id, shots=1), timeout_s=BOUND_S)
    np.testing.assert_array_equal(arrays["sum"], program["a"] + program["b"], strict=True)


def test_abort_of_a_running_run(client: ControllerClient, executor, _program) -> None:
    run_id = client.run(client.upload(_program(), {}), shots=1, params={"sleep_s": 30.0})
    assert executor.started.wait(BOUND_S)
    start = time.monotonic()
    assert client.abort(run_id) in ("running", "aborted")
    with pytest.raises(InstrumentCommandError, match="aborted"):
        client.wait(run_id, timeout_s=BOUND_S)
    assert time.monotonic() - start < BOUND_S
    assert client.fetch(run_id)[0] == "aborted"


def test_aborted_queued_run_never_starts(client: ControllerClient, executor, _program) -> None:
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


def test_wait_deadline_raises_timeout(client: ControllerClient, executor, _program) -> None:
    run_id = client.run(client.upload(_program(), {}), shots=1, params={"sleep_s": 30.0})
    start = time.monotonic()
    with pytest.raises(InstrumentTimeoutError, match=r"still (running|queued)") as info:
        client.wait(run_id, timeout_s=0.2)
    assert 0.2 <= time.monotonic() - start < 0.2 + 1.0
    assert info.value.command == OP_FETCH
    client.abort(run_id)


# -- typed errors for bad requests -------------------------------------------------------


def test_unknown_op_gets_a_typed_error(
    server: ControllerServer, context: zmq.Context, _raw_request
) -> None:
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
    params: dict, error_type: str, _raw_request
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
    expected_id: str, _raw_request,
) -> None:
    reply = _raw_request(context, server.endpoint, frames)
    assert (reply.id, reply.ok) == (expected_id, False)
    assert reply.error is not None and reply.error["type"] == ERR_PROTOCOL
    assert salvage_request_id(frames[0]) == expected_id
    assert client.status()["state"] == "idle"


def test_a_req_client_is_answered_and_a_dealers_delimiter_is_named(
    server: ControllerServer, context: zmq.Context, _program, _raw_request
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
    client: ControllerClient, executor
) -> None:
    executor.fail_capabilities = True
    with pytest.raises(InstrumentCommandError, match="capabilities table missing") as info:
        client.hello()
    assert info.value.remote_type == ERR_INTERNAL
    assert client.status()["state"] == "idle"
