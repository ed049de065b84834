"""Wire format: exact round trips, strict rejection of every malformed message."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import zmq

from labqpu.drivers.protocol import (
    ALLOWED_DTYPES,
    OP_RUN,
    OP_UPLOAD,
    PROTOCOL_VERSION,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    salvage_request_id,
)
from labqpu.errors import ProtocolError

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]
SHAPES = [(), (0,), (5,), (2, 3), (0, 4), (2, 1, 3)]


def _sample(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape))
    dt = np.dtype(dtype)
    if dt.kind == "b":
        values = rng.integers(0, 2, size).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        values = rng.integers(info.min, info.max, size, dtype=dt, endpoint=True)
    elif dt.kind == "f":
        values = rng.standard_normal(size).astype(dt)
    else:
        values = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(dt)
    return values.reshape(shape)


def _header(frames: list) -> dict:
    return json.loads(bytes(frames[0]))


def _with_header(frames: list, **changes: object) -> list:
    header = _header(frames)
    header.update(changes)
    return [json.dumps(header).encode(), *frames[1:]]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_request_round_trip_is_exact(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    array = _sample(dtype, shape, rng)
    other = _sample(np.complex64, (3,), rng)
    request_id, frames = encode_request(
        OP_UPLOAD, {"meta": {"n": 1}}, {"a": array, "b": other}, key="k1"
    )
    request = decode_request(frames)
    assert (request.op, request.id, request.key) == (OP_UPLOAD, request_id, "k1")
    assert request.params == {"meta": {"n": 1}}
    assert list(request.arrays) == ["a", "b"]
    decoded = request.arrays["a"]
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array, strict=True)
    np.testing.assert_array_equal(request.arrays["b"], other, strict=True)


def test_reply_round_trip_with_arrays_and_error() -> None:
    iq = np.array([[1 + 2j, -3.5j]], dtype=np.complex64)
    reply = decode_reply(encode_reply("abc", {"state": "done", "elapsed_s": 0.5}, {"iq": iq}))
    assert (reply.id, reply.ok, reply.error) == ("abc", True, None)
    assert reply.result == {"state": "done", "elapsed_s": 0.5}
    np.testing.assert_array_equal(reply.arrays["iq"], iq, strict=True)

    failed = decode_reply(encode_error("abc", "UnknownProgram", "no program 'x'"))
    assert (failed.ok, failed.result, failed.arrays) == (False, {}, {})
    assert failed.error == {"type": "UnknownProgram", "message": "no program 'x'"}


def test_header_is_versioned_json_describing_arrays() -> None:
    request_id, frames = encode_request(OP_RUN, {"shots": 3}, {"w": np.zeros((2, 4), "<c8")},
                                        session="s1")
    header = _header(frames)
    assert header == {
        "v": PROTOCOL_VERSION,
        "op": OP_RUN,
        "id": request_id,
        "key": None,
        "session": "s1",
        "params": {"shots": 3},
        "arrays": [{"name": "w", "dtype": "<c8", "shape": [2, 4]}],
    }
    assert len(request_id) == 32
    assert memoryview(frames[1]).nbytes == 2 * 4 * 8


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::2],
        lambda a: a.T,
        lambda a: np.asfortranarray(a),
        lambda a: a[:, 1],
    ],
    ids=["strided", "transposed", "fortran", "column"],
)
def test_non_contiguous_arrays_arrive_equal(make) -> None:
    base = (np.arange(24) * (1 + 1j)).astype(np.complex64).reshape(4, 6)
    array = make(base)
    _, frames = encode_request(OP_UPLOAD, {}, {"a": array})
    decoded = decode_request(frames).arrays["a"]
    np.testing.assert_array_equal(decoded, array, strict=True)


def test_big_endian_arrays_keep_their_values() -> None:
    array = np.arange(5, dtype=">f8")
    _, frames = encode_request(OP_UPLOAD, {}, {"a": array})
    decoded = decode_request(frames).arrays["a"]
    assert decoded.dtype.str == ">f8"
    np.testing.assert_array_equal(decoded, array)


def test_round_trip_over_a_real_socket_decodes_zero_copy_frames() -> None:
    context = zmq.Context()
    sender = context.socket(zmq.PAIR)
    receiver = context.socket(zmq.PAIR)
    try:
        for socket in (sender, receiver):
            socket.setsockopt(zmq.LINGER, 0)
        port = receiver.bind_to_random_port("tcp://127.0.0.1")
        sender.connect(f"tcp://127.0.0.1:{port}")
        big = (np.arange(200_000) * (1 - 1j)).astype(np.complex128)
        small = np.array(3 - 4j, dtype=np.complex64)
        _, frames = encode_request(OP_UPLOAD, {}, {"big": big, "small": small})
        sender.send_multipart(frames, copy=False)
        assert receiver.poll(5000, zmq.POLLIN)
        received = receiver.recv_multipart(copy=False)
        assert all(isinstance(frame, zmq.Frame) for frame in received)
        arrays = decode_request(received).arrays
        np.testing.assert_array_equal(arrays["big"], big, strict=True)
        np.testing.assert_array_equal(arrays["small"], small, strict=True)
        assert arrays["big"].flags.aligned
    finally:
        sender.close(linger=0)
        receiver.close(linger=0)
        context.term()


def test_allowed_dtypes_are_numeric_only() -> None:
    assert "|b1" in ALLOWED_DTYPES and "<c8" in ALLOWED_DTYPES and ">u8" in ALLOWED_DTYPES
    assert not {"|O", "<f2", "<U1", "|S1", "|V8", "<M8[s]"} & ALLOWED_DTYPES


@pytest.mark.parametrize(
    "value",
    [
        np.array([object(), 1], dtype=object),
        np.array(["a", "b"]),
        np.zeros(3, dtype=np.float16),
        np.zeros(2, dtype=[("x", "<f8")]),
    ],
    ids=["object", "str", "float16", "structured"],
)
def test_encoding_refuses_non_numeric_arrays(value: np.ndarray) -> None:
    with pytest.raises(ProtocolError, match="cannot be sent"):
        encode_request(OP_UPLOAD, {}, {"a": value})


def test_encoding_refuses_non_json_params() -> None:
    with pytest.raises(ProtocolError, match="strict JSON"):
        encode_request(OP_RUN, {"x": float("nan")})
    with pytest.raises(ProtocolError, match="strict JSON"):
        encode_request(OP_RUN, {"x": object()})
    with pytest.raises(ProtocolError, match="strict JSON"):
        encode_reply("id", {"x": {1, 2}})


def _good_request() -> list:
    return encode_request(OP_UPLOAD, {"meta": {}}, {"a": np.arange(4, dtype=np.int32)})[1]


MALFORMED_REQUESTS = {
    "no frames": lambda f: [],
    "not utf8": lambda f: [b"\xff\xfe", *f[1:]],
    "not json": lambda f: [b"{nope", *f[1:]],
    "not an object": lambda f: [b"[1, 2]", *f[1:]],
    "nan constant": lambda f: [_header_bytes(f).replace(b'"meta"', b'"x": NaN, "meta"'), *f[1:]],
    "wrong version": lambda f: _with_header(f, v=99),
    "version as string": lambda f: _with_header(f, v="1"),
    "version as bool": lambda f: _with_header(f, v=True),
    "no version": lambda f: _with_header(f, v=None),
    "op not a string": lambda f: _with_header(f, op=3),
    "empty id": lambda f: _with_header(f, id=""),
    "key not a string": lambda f: _with_header(f, key=5),
    "params not an object": lambda f: _with_header(f, params=[1]),
    "arrays not a list": lambda f: _with_header(f, arrays={"a": 1}),
    "object dtype": lambda f: _with_header(f, arrays=[{"name": "a", "dtype": "|O", "shape": [4]}]),
    "float16 dtype": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": "<f2", "shape": [8]}]
    ),
    "dtype not a string": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": 4, "shape": [4]}]
    ),
    "shape too big for bytes": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": "<i4", "shape": [5]}]
    ),
    "shape too small for bytes": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": "<i4", "shape": [2]}]
    ),
    "negative shape": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": "<i4", "shape": [-4]}]
    ),
    "float shape": lambda f: _with_header(
        f, arrays=[{"name": "a", "dtype": "<i4", "shape": [4.0]}]
    ),
    "missing name": lambda f: _with_header(f, arrays=[{"dtype": "<i4", "shape": [4]}]),
    "extra frame": lambda f: [*f, b"\0" * 16],
    "missing frame": lambda f: f[:1],
    "duplicate name": lambda f: [
        _with_header(
            f,
            arrays=[
                {"name": "a", "dtype": "<i4", "shape": [4]},
                {"name": "a", "dtype": "<i4", "shape": [4]},
            ],
        )[0],
        f[1],
        f[1],
    ],
    "header too large": lambda f: [b" " * (1 << 21), *f[1:]],
}


def _header_bytes(frames: list) -> bytes:
    return bytes(frames[0])


@pytest.mark.parametrize("case", sorted(MALFORMED_REQUESTS))
def test_malformed_request_raises_protocol_error(case: str) -> None:
    frames = MALFORMED_REQUESTS[case](_good_request())
    with pytest.raises(ProtocolError):
        decode_request(frames)


def test_good_request_used_by_malformed_cases_decodes() -> None:
    assert decode_request(_good_request()).arrays["a"].tolist() == [0, 1, 2, 3]


def test_protocol_error_messages_are_clear() -> None:
    with pytest.raises(ProtocolError, match="unsupported protocol version 99"):
        decode_request(_with_header(_good_request(), v=99))
    with pytest.raises(ProtocolError, match="needs 16 bytes, frame holds 20"):
        decode_request([_good_request()[0], b"\0" * 20])
    with pytest.raises(ProtocolError, match="describes 1 arrays but 2 array frames"):
        decode_request([*_good_request(), b""])
    with pytest.raises(ProtocolError, match="NaN is not valid JSON"):
        decode_request(MALFORMED_REQUESTS["nan constant"](_good_request()))
    with pytest.raises(ProtocolError, match=re.escape("dtype '|O' is not allowed")):
        decode_request(
            _with_header(_good_request(), arrays=[{"name": "a", "dtype": "|O", "shape": [2]}])
        )
    with pytest.raises(ProtocolError, match=r"frame 0 is empty.*no empty delimiter frame"):
        decode_request([b"", *_good_request()])  # a DEALER sending a REQ's delimiter


@pytest.mark.parametrize(
    "changes",
    [
        {"ok": "yes"},
        {"ok": False, "error": None},
        {"ok": False, "error": {"type": "X"}},
        {"result": None},
        {"id": 3},
        {"v": 0},
    ],
    ids=["ok not bool", "error missing", "error without message", "result null", "id int", "v0"],
)
def test_malformed_reply_raises_protocol_error(changes: dict) -> None:
    frames = _with_header(encode_reply("abc", {"x": 1}), **changes)
    with pytest.raises(ProtocolError):
        decode_reply(frames)


def test_salvage_request_id() -> None:
    _, frames = encode_request(OP_RUN, {})
    assert salvage_request_id(_with_header(frames, v=9)[0]) == _header(frames)["id"]
    assert salvage_request_id(b"garbage") == ""
    assert salvage_request_id(b'{"id": 5}') == ""
    assert salvage_request_id(b"[]") == ""
