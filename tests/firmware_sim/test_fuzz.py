"""Fuzzing the simulator's servers over real sockets: no request or line takes them down.

Hypothesis throws random frames, JSON headers (deep nesting, wrong types, NaN, huge declared
sizes) at the controller, and random and overlong lines (binary, long digit runs, huge
exponents) at a SCPI instrument. Every request must get an answer, and afterwards a valid
client must still be served.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import (
    MAX_JSON_DEPTH,
    PROTOCOL_VERSION,
    decode_reply,
    encode_request,
)
from labqpu.errors import InstrumentCommandError
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.rack.config import default_config_path

BOUND_S = 5.0
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def rack() -> Iterator[SimulatedRack]:
    with SimulatedRack(default_config_path(), seed=1) as simulated:
        yield simulated


@pytest.fixture(scope="module")
def dealer(rack: SimulatedRack) -> Iterator[zmq.Socket]:
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(rack.controller.endpoint)
    yield sock
    sock.close(linger=0)
    context.term()


def ask_controller(dealer: zmq.Socket, frames: list[bytes]) -> None:
    """Send ``frames``; the controller must answer with a decodable reply within BOUND_S."""
    dealer.send_multipart(frames)
    assert dealer.poll(int(BOUND_S * 1000), zmq.POLLIN), f"no reply to {frames!r:.200}"
    decode_reply(dealer.recv_multipart())


def still_serves(rack: SimulatedRack) -> None:
    with ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as client:
        assert client.hello()["protocol_versions"] == [PROTOCOL_VERSION]
    assert rack.failure() is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(PROTOCOL_VERSION), json_values),
        "op": st.one_of(st.sampled_from(["hello", "upload", "run", "fetch", "status", "abort",
                                         "nope"]), json_values),
        "id": st.one_of(st.text(max_size=12), json_values),
        "key": json_values,
        "params": st.one_of(st.dictionaries(st.sampled_from(
            ["program_id", "run_id", "shots", "meta", "seed", "rep_delay_s", "timeout_s"]),
            json_values, max_size=4), json_values),
        "arrays": st.one_of(st.lists(st.fixed_dictionaries({
            "name": st.one_of(st.text(max_size=6), json_values),
            "dtype": st.sampled_from(["<f8", "<c8", "|u1", "object", "<i8", "bogus"]),
            "shape": st.lists(st.integers(min_value=-2, max_value=2**62), max_size=3),
        }), max_size=3), json_values),
    },
)


@FUZZ
@given(header=headers, blobs=st.lists(st.binary(max_size=64), max_size=3))
def test_random_headers_always_get_a_reply(rack, dealer, header, blobs) -> None:
    ask_controller(dealer, [json.dumps(header).encode(), *blobs])


@FUZZ
@given(frames=st.lists(st.binary(max_size=300), min_size=0, max_size=6))
def test_random_frames_always_get_a_reply(rack, dealer, frames) -> None:
    if not frames:
        frames = [b""]
    ask_controller(dealer, frames)


@pytest.mark.parametrize("nesting", [MAX_JSON_DEPTH + 1, 1000, 100_000])
def test_deeply_nested_header_is_refused_and_the_controller_lives(rack, dealer,
                                                                  nesting) -> None:
    header = ('{"v": 1, "op": "hello", "id": "deep", "params": {"x": '
              + "[" * nesting + "]" * nesting + "}}").encode()
    dealer.send_multipart([header])
    assert dealer.poll(int(BOUND_S * 1000), zmq.POLLIN)
    reply = decode_reply(dealer.recv_multipart())
    assert not reply.ok and reply.error["type"] == "ProtocolError"
    assert "nests deeper" in reply.error["message"]
    assert reply.id == ""  # the id could not be read safely
    still_serves(rack)


def test_nan_and_huge_declared_sizes_are_typed_errors(rack, dealer) -> None:
    """Each gets a ``ProtocolError`` reply with its request id. An empty array declared with an
    axis beyond numpy's (``[0, 10**30]``) got an ``InternalError`` without the id."""
    upload = ('{{"v": 3, "op": "upload", "id": "{id}", "params": {{}}, "arrays": '
              '[{{"name": "a", "dtype": "<c8", "shape": {shape}}}]}}')
    for request_id, text, data in [
            ("n", '{"v": 3, "op": "run", "id": "n", "params": {"shots": NaN}}', b"\0" * 8),
            ("h", upload.format(id="h", shape="[4611686018427387904, 8]"), b"\0" * 8),
            ("z30", upload.format(id="z30", shape=f"[0, {10 ** 30}]"), b""),
            ("z63", upload.format(id="z63", shape=f"[0, {2 ** 63}]"), b""),
            ("z62", upload.format(id="z62", shape=f"[0, {2 ** 62}, {2 ** 62}]"), b""),
            ("z28", upload.format(id="z28", shape=f"[0, {2 ** 28}, {2 ** 28}, {2 ** 28}]"),
             b"")]:
        dealer.send_multipart([text.encode(), data])
        assert dealer.poll(int(BOUND_S * 1000), zmq.POLLIN)
        reply = decode_reply(dealer.recv_multipart())
        assert (reply.ok, reply.error["type"]) == (False, "ProtocolError"), reply.error
        if request_id != "n":  # NaN: the header is not JSON, its id cannot be read
            assert reply.id == request_id
    still_serves(rack)


def test_too_many_frames_is_a_typed_error(rack, dealer) -> None:
    request_id, request = encode_request("status", {})
    dealer.send_multipart([request[0], *([b"x"] * 100)])
    assert dealer.poll(int(BOUND_S * 1000), zmq.POLLIN)
    reply = decode_reply(dealer.recv_multipart())
    assert (reply.ok, reply.error["type"], reply.id) == (False, "ProtocolError", request_id)
    assert "exceeds 64 frames" in reply.error["message"]
    still_serves(rack)


ZMTP_GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32)
ZMTP_READY = b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"
ZMTP_READY_REQ = b"\x04\x19\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ"


@FUZZ
@given(prefix=st.sampled_from([b"", ZMTP_GREETING[:11], ZMTP_GREETING,
                               ZMTP_GREETING + ZMTP_READY, ZMTP_GREETING + ZMTP_READY_REQ,
                               ZMTP_GREETING + ZMTP_READY_REQ + b"\x01\x00"]),
       data=st.binary(max_size=400))
def test_random_bytes_on_the_wire_never_take_the_controller_down(rack, prefix, data) -> None:
    """The controller reads ZMTP itself (to bound whole messages): whatever bytes a raw TCP
    client sends, before, in or after the greeting and the handshake (a DEALER's or a REQ's,
    whose messages start with an envelope), the controller lives and serves a valid
    client."""
    host, port = rack.controller.endpoint.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as raw:
        raw.sendall(prefix + data)
    still_serves(rack)


def test_a_ping_with_a_long_context_leaves_the_controller_serving(rack) -> None:
    """A heartbeat PING carrying a 300-byte context (RFC 37 allows 16) once raised out of the
    controller's reader and ended its serving thread."""
    host, port = rack.controller.endpoint.removeprefix("tcp://").rsplit(":", 1)
    ping = b"\x04PING\x00\x0a" + b"C" * 300
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as raw:
        raw.sendall(ZMTP_GREETING + ZMTP_READY + b"\x06" + len(ping).to_bytes(8, "big") + ping)
        received = b""
        while b"PONG" + b"C" * 16 not in received:
            chunk = raw.recv(4096)
            assert chunk, "the controller closed the connection"
            received += chunk
    still_serves(rack)


# --------------------------------------------------------------------------- SCPI


@pytest.fixture(scope="module")
def scpi(rack: SimulatedRack) -> Iterator[socket.socket]:
    server = rack.instruments["lo_drive_a"]
    with socket.create_connection((server.host, server.port), timeout=BOUND_S) as conn:
        yield conn


def scpi_ask(conn: socket.socket, line: bytes) -> bytes:
    conn.sendall(line + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, "the instrument closed the connection"
        reply += chunk
    return reply.strip()


def scpi_sync(conn: socket.socket) -> None:
    """Ask ``*IDN?`` and read until its answer: whatever the fuzzed line made the instrument
    reply (a query is a valid fuzz result) is skipped, and a stalled instrument times out."""
    conn.sendall(b"*IDN?\n")
    buffer = b""
    while True:
        chunk = conn.recv(65536)
        assert chunk, "the instrument closed the connection"
        buffer += chunk
        lines = buffer.split(b"\n")
        if any(line.startswith(b"labqpu simulator,") for line in lines[:-1]):
            return


def scpi_still_serves(conn: socket.socket) -> None:
    """The instrument answers; errors the fuzzing left are drained."""
    assert scpi_ask(conn, b"*OPC?") == b"1"
    for _ in range(200):
        if scpi_ask(conn, b"SYST:ERR?").startswith(b"0,"):
            break
    assert scpi_ask(conn, b"*IDN?").count(b",") == 3


numbers = st.builds(
    lambda sign, digits, frac, exp: f"{sign}{digits}{frac}{exp}",
    st.sampled_from(["", "+", "-"]),
    st.one_of(st.text("0123456789", min_size=1, max_size=30),
              st.integers(1, 20_000).map(lambda n: "9" * n)),
    st.sampled_from(["", ".", ".5", ".000001"]),
    st.one_of(st.just(""), st.integers(-10**12, 10**12).map(lambda e: f"e{e}")),
)


@FUZZ
@given(command=st.sampled_from([b"FREQ", b"POW", b"OUTP", b"FREQ?", b"SOUR:FREQ", b"*RST"]),
       argument=st.one_of(numbers.map(str.encode), st.binary(max_size=80)))
def test_random_parameters_never_stall_the_instrument(rack, scpi, command, argument) -> None:
    scpi.sendall((command + b" " + argument).replace(b"\n", b" ") + b"\n")
    scpi_sync(scpi)


@FUZZ
@given(line=st.binary(max_size=500))
def test_random_lines_never_stall_the_instrument(rack, scpi, line) -> None:
    scpi.sendall(line.replace(b"\n", b" ") + b"\n")
    scpi_sync(scpi)


@pytest.mark.parametrize("line", [
    b"FREQ 1e999999999",
    b"FREQ " + b"1" * 16_000 + b"x",
    b"FREQ " + b"1" * 200_000,
    b"A" * 70_000,
    b":" * 50_000,
])
def test_hostile_lines_are_refused_and_the_instrument_lives(rack, scpi, line) -> None:
    scpi.sendall(line + b"\n")
    scpi_still_serves(scpi)
    assert rack.failure() is None


def test_a_long_compound_query_is_answered_in_one_line(rack, scpi) -> None:
    reply = scpi_ask(scpi, b"FREQ?;" * 5_000)
    assert reply.count(b";") == 4_999
    scpi_still_serves(scpi)
    assert rack.failure() is None


def test_servers_still_serve_after_all_that(rack, scpi) -> None:
    still_serves(rack)
    scpi_still_serves(scpi)


def test_a_server_that_stops_serving_is_reported() -> None:
    """The simulator's main loop exits non-zero when ``failure()`` names a server: a process
    that looks alive but answers nothing is never left behind."""
    with SimulatedRack(default_config_path(), seed=2) as rack:
        assert rack.failure() is None
        rack.instruments["lo_readout"].stop()
        assert "lo_readout" in rack.failure()


def test_an_oversized_waveform_table_is_refused_by_its_size(rack) -> None:
    """2 M empty waveforms (16 MB) once kept the serving loop busy for 10 s: the table size
    is checked first now, and validation is vectorised."""
    n = 2_000_000
    arrays = {"play_port": np.zeros(1, np.int32), "play_start": np.zeros(1, np.int64),
              "play_wave": np.zeros(1, np.int32), "play_amp": np.ones(1),
              "play_amp_ref": -np.ones(1, np.int32), "play_phase_rad": np.zeros(1),
              "play_freq_hz": np.zeros(1), "wave_offset": np.zeros(n + 1, np.int64),
              "wave_data": np.zeros(0, np.complex64), "acq_port": np.zeros(0, np.int32),
              "acq_start": np.zeros(0, np.int64), "acq_duration": np.zeros(0, np.int64),
              "acq_freq_hz": np.zeros(0), "param_values": np.zeros(0),
              "play_block": -np.ones(1, np.int32), "block_acq": np.zeros(0, np.int32),
              "block_value": np.zeros(0, np.int32), "shift_port": np.zeros(0, np.int32),
              "shift_start": np.zeros(0, np.int64), "shift_phase_rad": np.zeros(0),
              "shift_block": np.zeros(0, np.int32), "acq_disc_axis": np.zeros(0, complex),
              "acq_disc_threshold": np.zeros(0)}
    with ControllerClient(rack.controller.endpoint, timeout_s=BOUND_S) as client:
        with pytest.raises(InstrumentCommandError, match="2000000 waveforms") as info:
            client.upload(arrays, {"sample_rate_hz": 1e9, "duration_samples": 100})
        assert info.value.remote_type == "InvalidProgram"
        limits = client.hello()["capabilities"]
        assert (limits["max_waveforms"], limits["max_plays"]) == (65_536, 1_000_000)
    still_serves(rack)


def test_an_overlong_line_is_one_error_and_a_huge_suffix_is_out_of_range(rack, scpi) -> None:
    scpi_still_serves(scpi)  # an empty error queue to start from
    scpi.sendall(b"A" * 2_000_000 + b"\n")
    assert scpi_ask(scpi, b"SYST:ERR?").startswith(b"-223,")
    assert scpi_ask(scpi, b"SYST:ERR?").startswith(b"0,")
    scpi_still_serves(scpi)
    source = rack.instruments["flux_bias"]  # numbered outputs: OUTP1 .. OUTP5
    with socket.create_connection((source.host, source.port), timeout=BOUND_S) as conn:
        conn.sendall(b"OUTP" + b"9" * 5000 + b" ON\n")
        assert scpi_ask(conn, b"SYST:ERR?").startswith(b"-114,")  # suffix out of range
        assert scpi_ask(conn, b"OUTP1?") in (b"0", b"1")
