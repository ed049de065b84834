"""The wire format spoken between the host (``ControllerClient``) and a controller.

A message is one ZeroMQ multipart message:

* frame 0: a UTF-8 JSON header (an object; strict JSON, no NaN or Infinity);
* frames 1..n: the raw bytes of C-contiguous numpy arrays, one frame per entry of the
  header's ``arrays`` list, in the same order.

Request header::

    {"v": 3, "op": "run", "id": "<uuid4 hex>", "key": "<idempotency key>" | null,
     "params": {...}, "arrays": [{"name": "a", "dtype": "<c8", "shape": [2, 160]}, ...]}

Reply header::

    {"v": 3, "id": "<request id>", "ok": true, "result": {...},
     "error": {"type": "UnknownProgram", "message": "..."} | null, "arrays": [...]}

The host talks through a DEALER socket and the controller answers through a ROUTER
socket, so no empty delimiter frame precedes the header. A reply's array descriptors also
carry ``"crc32"``, the CRC-32 (zlib) of the array's bytes; a decoder checks it whenever a
descriptor has one, so a frame damaged on its way is an error, never a result. Only plain
numeric dtypes cross the wire (see ``ALLOWED_DTYPES``); objects are never pickled. Arrays
are sent without copies and received as views on the ZeroMQ frames (``np.frombuffer``).

Every violation of this format raises ``ProtocolError``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labqpu.errors import ProtocolError

__all__ = [
    "ALLOWED_DTYPES",
    "ERR_ABORTED",
    "ERR_BAD_PARAMS",
    "ERR_FEEDFORWARD_LATENCY",
    "ERR_FORBIDDEN",
    "ERR_INTERNAL",
    "ERR_INVALID_PROGRAM",
    "ERR_PROTOCOL",
    "ERR_QUEUE_FULL",
    "ERR_RUN_EXPIRED",
    "ERR_SYNC",
    "ERR_TIME_LIMIT",
    "ERR_UNAUTHENTICATED",
    "ERR_UNKNOWN_OP",
    "ERR_UNKNOWN_PROGRAM",
    "ERR_UNKNOWN_RUN",
    "ERR_UNKNOWN_SESSION",
    "IQ_BYTES",
    "MAX_FRAMES",
    "MAX_FRAME_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_IQ_PER_FRAME",
    "MAX_JSON_DEPTH",
    "MAX_MESSAGE_BYTES",
    "OPS",
    "OP_ABORT",
    "OP_FETCH",
    "OP_HELLO",
    "OP_RUN",
    "OP_STATUS",
    "OP_UPLOAD",
    "PROTOCOL_VERSION",
    "SESSION_OPS",
    "Frame",
    "Reply",
    "Request",
    "as_wire_arrays",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_reply",
    "encode_request",
    "salvage_request_id",
]

PROTOCOL_VERSION = 3
#: Run ``seed`` values are below this (a 63-bit unsigned integer).
SEED_LIMIT = 2**63

OP_HELLO = "hello"
OP_UPLOAD = "upload"
OP_RUN = "run"
OP_FETCH = "fetch"
OP_STATUS = "status"
OP_ABORT = "abort"
OPS = frozenset({OP_HELLO, OP_UPLOAD, OP_RUN, OP_FETCH, OP_STATUS, OP_ABORT})

# Error types a controller puts in ``error.type`` of a reply.
ERR_PROTOCOL = "ProtocolError"  # the request could not be decoded
ERR_UNKNOWN_OP = "UnknownOp"  # the op is not one of ``OPS``
ERR_BAD_PARAMS = "BadParams"  # missing or ill-typed parameters
ERR_INVALID_PROGRAM = "InvalidProgram"  # the controller rejected an uploaded program
# a conditional play or phase shift starts before its acquisition's result can be known
ERR_FEEDFORWARD_LATENCY = "FeedForwardLatency"
ERR_UNKNOWN_PROGRAM = "UnknownProgram"  # run of a program id the controller does not hold
ERR_UNKNOWN_RUN = "UnknownRun"  # fetch/abort of a run id the controller does not hold
ERR_RUN_EXPIRED = "RunExpired"  # idempotency key seen before; its run's record is gone
ERR_ABORTED = "Aborted"  # run under an idempotency key aborted before the run came
ERR_INTERNAL = "InternalError"  # the controller failed while handling the request
ERR_UNKNOWN_SESSION = "UnknownSession"  # no session, or one the controller does not hold
ERR_FORBIDDEN = "Forbidden"  # the run belongs to another session
ERR_QUEUE_FULL = "QueueFull"  # the session has as many runs queued as the controller allows
ERR_UNAUTHENTICATED = "Unauthenticated"  # hello refused by the controller's authenticator
ERR_TIME_LIMIT = "TimeLimitExceeded"  # a run played past its time_limit_s and was stopped
# a run's error_type: a synchronised run across controllers could not go ahead (its group)
ERR_SYNC = "SyncError"

#: Ops that need the session ``hello`` opened: they act on runs, which belong to a session.
SESSION_OPS = frozenset({OP_RUN, OP_FETCH, OP_ABORT})

MAX_HEADER_BYTES = 1 << 20
"""Largest JSON header accepted, in bytes; array data travels in the other frames."""

MAX_FRAMES = 64
"""Most frames in one message: the header and at most 63 arrays."""

MAX_FRAME_BYTES = 256 << 20
"""Largest frame accepted, in bytes."""

IQ_BYTES = 8
"""Bytes of one IQ result (complex64, ``<c8``): a run's IQ travels as one frame."""

MAX_IQ_PER_FRAME = MAX_FRAME_BYTES // IQ_BYTES
"""Most IQ results one frame carries: shots x acquisitions of one run, all points of a sweep
together."""

MAX_MESSAGE_BYTES = 512 << 20
"""Most bytes in one message, all its frames together. A controller counts frames and bytes as
they arrive and refuses a message as soon as it goes over a cap, holding none of the rest."""

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays accepted in a header."""

MAX_KEY_CHARS = 128
"""Longest idempotency key accepted (characters): a controller remembers keys for a while, so
their size bounds its memory (the host's keys are a job id and a run index, ~40)."""

_MAX_NDIM = 32

_ALLOWED_TYPES = (
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
)

ALLOWED_DTYPES: frozenset[str] = frozenset(
    np.dtype(t).newbyteorder(order).str for t in _ALLOWED_TYPES for order in "<>"
)
"""Dtype strings (``numpy.dtype.str``, either byte order) that may appear on the wire."""

Frame = bytes | bytearray | memoryview
"""One frame of a multipart message: anything exposing the buffer protocol (including
the ``zmq.Frame`` objects returned by ``recv_multipart(copy=False)``)."""


@dataclass(frozen=True)
class Request:
    """A decoded request.

    Attributes:
        op: the operation, normally one of ``OPS`` (a controller answers others with
            ``UnknownOp``).
        id: request id (uuid4 hex); the reply carries it back.
        key: idempotency key, or None; a controller executes a keyed ``run`` once.
        params: JSON parameters of the operation.
        arrays: named arrays, views on the received frames (no copy).
        session: the session ``hello`` opened, or None; runs belong to the session that
            started them.
        header_bytes: the size of its JSON header frame (bytes): what its parameters take
            to hold, near enough.
    """

    op: str
    id: str
    key: str | None
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    session: str | None = None
    header_bytes: int = 0


@dataclass(frozen=True)
class Reply:
    """A decoded reply.

    Attributes:
        id: the id of the request this reply answers.
        ok: True on success; False when ``error`` describes a refusal.
        result: JSON result of the operation (empty on error).
        error: ``{"type": str, "message": str}`` when ``ok`` is False, else None.
        arrays: named result arrays, views on the received frames.
    """

    id: str
    ok: bool
    result: dict[str, Any]
    error: dict[str, str] | None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def as_wire_arrays(arrays: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Check and convert arrays so they can be sent: C-contiguous, of an allowed dtype.

    Args:
        arrays: name → array-like; None means no arrays.

    Returns:
        name → C-contiguous ``np.ndarray`` (the input itself when already conforming).

    Raises:
        ProtocolError: a name is not a non-empty string, or a dtype is not in
            ``ALLOWED_DTYPES`` (object, string, float16, ... arrays never cross the wire).
    """
    if arrays is None:
        return {}
    if not isinstance(arrays, Mapping):
        raise ProtocolError(f"arrays must be a mapping of name to array, got {type(arrays)}")
    wire: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"array names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.dtype.str not in ALLOWED_DTYPES:
            raise ProtocolError(
                f"array {name!r} has dtype {array.dtype!r}, which cannot be sent; "
                "allowed: bool, (u)int8..64, float32/64, complex64/128"
            )
        if array.ndim > _MAX_NDIM:
            raise ProtocolError(f"array {name!r} has {array.ndim} dimensions (max {_MAX_NDIM})")
        wire[name] = array if array.flags.c_contiguous else array.copy(order="C")
    return wire


#: One strict, compact encoder and one decoder refusing NaN and infinities, made once: json's
#: ``dumps`` and ``loads`` build a new one on every call that passes options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dump_header(header: dict[str, Any]) -> bytes:
    try:
        text = _ENCODER.encode(header)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"header is not strict JSON: {exc}") from exc
    data = text.encode("utf-8")
    if len(data) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(data)} bytes exceeds {MAX_HEADER_BYTES} bytes")
    return data


def _encode(header: dict[str, Any], arrays: Mapping[str, Any] | None, *,
            checksum: bool = False) -> list[Frame]:
    wire = as_wire_arrays(arrays)
    data = [memoryview(array.reshape(-1).view(np.uint8)) for array in wire.values()]
    header["arrays"] = [
        {"name": name, "dtype": array.dtype.str, "shape": list(array.shape)}
        for name, array in wire.items()
    ]
    if checksum:
        for descriptor, frame in zip(header["arrays"], data, strict=True):
            descriptor["crc32"] = zlib.crc32(frame)
    frames: list[Frame] = [_dump_header(header)]
    frames.extend(data)
    return frames


def _check_key_length(key: str | None) -> None:
    if key is not None and len(key) > MAX_KEY_CHARS:
        raise ProtocolError(f"idempotency key of {len(key)} characters; at most "
                            f"{MAX_KEY_CHARS}")


def encode_request(
    op: str,
    params: Mapping[str, Any] | None,
    arrays: Mapping[str, Any] | None = None,
    key: str | None = None,
    session: str | None = None,
) -> tuple[str, list[Frame]]:
    """Build the frames of a request with a fresh request id.

    Send the frames with ``socket.send_multipart(frames, copy=False)``; the array frames
    are views on the arrays' memory, so do not modify the arrays until the reply arrived.

    Args:
        op: operation name (one of ``OPS``).
        params: JSON-able parameters; None means ``{}``.
        arrays: name → array to send after the header (made C-contiguous if needed).
        key: idempotency key, or None.
        session: the session ``hello`` opened (needed by ``run``, ``fetch`` and ``abort``).

    Returns:
        (request id, frames).

    Raises:
        ProtocolError: params not strict JSON, or an array cannot be sent.
    """
    if not isinstance(op, str) or not op:
        raise ProtocolError(f"op must be a non-empty string, got {op!r}")
    if key is not None and not isinstance(key, str):
        raise ProtocolError(f"idempotency key must be a string or None, got {key!r}")
    _check_key_length(key)
    if session is not None and not isinstance(session, str):
        raise ProtocolError(f"session must be a string or None, got {session!r}")
    request_id = uuid.uuid4().hex
    header = {
        "v": PROTOCOL_VERSION,
        "op": op,
        "id": request_id,
        "key": key,
        "session": session,
        "params": dict(params or {}),
    }
    return request_id, _encode(header, arrays)


def encode_reply(
    request_id: str, result: Mapping[str, Any], arrays: Mapping[str, Any] | None = None
) -> list[Frame]:
    """Build the frames of a successful reply.

    Args:
        request_id: id of the request answered.
        result: JSON-able result.
        arrays: name → result array.

    Raises:
        ProtocolError: result not strict JSON, or an array cannot be sent.
    """
    header = {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": True,
        "result": dict(result),
        "error": None,
    }
    return _encode(header, arrays, checksum=True)


def encode_error(request_id: str, type: str, message: str) -> list[Frame]:
    """Build the frames of an error reply.

    Args:
        request_id: id of the request answered ("" if it could not be read).
        type: error type, e.g. ``ERR_UNKNOWN_OP``.
        message: human-readable explanation.
    """
    header = {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "result": {},
        "error": {"type": str(type), "message": str(message)},
    }
    return _encode(header, None)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _bytes_to_text(view: memoryview) -> str:
    try:
        return view.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from exc


# An escape pair (consumed whole, so an escaped quote never ends a string), or a quote or
# bracket.
_JSON_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than ``MAX_JSON_DEPTH`` before parsing it (the parser would
    recurse once per level); one linear scan over quotes, brackets and escapes, skipped when
    the text has too few opening brackets to nest that deep."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    in_string = False
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token == '"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ProtocolError(f"header nests deeper than {MAX_JSON_DEPTH} levels")
        else:
            depth -= 1


def _load_header(frame: Frame) -> dict[str, Any]:
    view = memoryview(frame)
    if not view.nbytes:
        raise ProtocolError("frame 0 is empty: the header must be the first frame, with no "
                            "empty delimiter frame before it (docs/protocol.md §1: a DEALER "
                            "sends none, a REQ socket adds its own)")
    if view.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {view.nbytes} bytes exceeds {MAX_HEADER_BYTES} bytes")
    text = _bytes_to_text(view)
    _check_depth(text)
    try:
        header = _DECODER.decode(text)
    except ValueError as exc:
        raise ProtocolError(f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a JSON object, got {type(header).__name__}")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version!r}; this side speaks {PROTOCOL_VERSION}"
        )
    return header


def _field(header: dict[str, Any], name: str, kind: type) -> Any:
    if name not in header:
        raise ProtocolError(f"header lacks field {name!r}")
    value = header[name]
    if not isinstance(value, kind):
        raise ProtocolError(f"header field {name!r} has the wrong type: {value!r}")
    return value


def _decode_arrays(descriptors: Any, frames: Sequence[Frame]) -> dict[str, np.ndarray]:
    if not isinstance(descriptors, list):
        raise ProtocolError(f"header field 'arrays' must be a list, got {descriptors!r}")
    if len(descriptors) != len(frames):
        raise ProtocolError(
            f"header describes {len(descriptors)} arrays but {len(frames)} array frames arrived"
        )
    arrays: dict[str, np.ndarray] = {}
    for descriptor, frame in zip(descriptors, frames, strict=True):
        if not isinstance(descriptor, dict):
            raise ProtocolError(f"array descriptor must be an object, got {descriptor!r}")
        name = descriptor.get("name")
        dtype_str = descriptor.get("dtype")
        shape = descriptor.get("shape")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"array name must be a non-empty string, got {name!r}")
        if name in arrays:
            raise ProtocolError(f"array {name!r} appears twice")
        if not isinstance(dtype_str, str) or dtype_str not in ALLOWED_DTYPES:
            raise ProtocolError(f"array {name!r}: dtype {dtype_str!r} is not allowed on the wire")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_NDIM
            or not all(type(n) is int and 0 <= n <= MAX_FRAME_BYTES for n in shape)
        ):
            raise ProtocolError(f"array {name!r}: shape {shape!r} is not a list of sizes in "
                                f"0..{MAX_FRAME_BYTES}")
        dtype = np.dtype(dtype_str)
        buffer = memoryview(frame)
        expected = math.prod(shape) * dtype.itemsize
        if buffer.nbytes != expected:
            raise ProtocolError(
                f"array {name!r}: {dtype_str} {shape} needs {expected} bytes, "
                f"frame holds {buffer.nbytes}"
            )
        crc = descriptor.get("crc32")
        if crc is not None and (type(crc) is not int or zlib.crc32(buffer.cast("B")) != crc):
            raise ProtocolError(f"array {name!r}: its bytes do not match its crc32 {crc!r} "
                                "(damaged in transit)")
        try:
            array = np.frombuffer(buffer.cast("B"), dtype=dtype).reshape(shape)
        except ValueError as exc:  # an empty array whose axes numpy cannot hold together
            raise ProtocolError(f"array {name!r}: shape {shape!r}: {exc}") from exc
        if not array.flags.aligned:
            array = array.copy()
        arrays[name] = array
    return arrays


def _check_frames(frames: Sequence[Frame]) -> None:
    if len(frames) == 0:
        raise ProtocolError("empty message: no header frame")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError(f"message of {len(frames)} frames exceeds {MAX_FRAMES} frames")
    for index, frame in enumerate(frames):
        size = memoryview(frame).nbytes
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame {index} of {size} bytes exceeds {MAX_FRAME_BYTES} bytes")


def decode_request(frames: Sequence[Frame]) -> Request:
    """Decode and validate the frames of a request (without any routing identity).

    Raises:
        ProtocolError: wrong version, bad JSON, missing or ill-typed fields, disallowed
            dtype, shape/byte-length mismatch, or frame count ≠ array descriptor count.
    """
    _check_frames(frames)
    header = _load_header(frames[0])
    op = _field(header, "op", str)
    request_id = _field(header, "id", str)
    if not op or not request_id:
        raise ProtocolError("header fields 'op' and 'id' must be non-empty")
    key = header.get("key")
    if key is not None and not isinstance(key, str):
        raise ProtocolError(f"header field 'key' must be a string or null, got {key!r}")
    _check_key_length(key)
    session = header.get("session")
    if session is not None and not isinstance(session, str):
        raise ProtocolError(f"header field 'session' must be a string or null, got {session!r}")
    params = _field(header, "params", dict)
    arrays = _decode_arrays(header.get("arrays"), frames[1:])
    return Request(op=op, id=request_id, key=key, params=params, arrays=arrays,
                   session=session, header_bytes=len(frames[0]))


def decode_reply(frames: Sequence[Frame]) -> Reply:
    """Decode and validate the frames of a reply.

    Raises:
        ProtocolError: as ``decode_request``; also a failed reply without an error
            ``{"type": str, "message": str}``.
    """
    _check_frames(frames)
    header = _load_header(frames[0])
    request_id = _field(header, "id", str)
    ok = _field(header, "ok", bool)
    result = _field(header, "result", dict)
    error = header.get("error")
    if not ok and not (
        isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    ):
        raise ProtocolError(f"failed reply needs error {{type, message}}, got {error!r}")
    arrays = _decode_arrays(header.get("arrays"), frames[1:])
    return Reply(
        id=request_id,
        ok=ok,
        result=result,
        error=None if ok else {"type": error["type"], "message": error["message"]},
        arrays=arrays,
    )


def salvage_request_id(frame: Frame) -> str:
    """Best-effort request id from a header that failed validation; "" if none.

    A controller uses it to address an error reply to a request it could not decode.
    """
    try:
        view = memoryview(frame)
        if view.nbytes > MAX_HEADER_BYTES:
            return ""
        text = view.tobytes().decode("utf-8")
        _check_depth(text)
        header = json.loads(text)
    except (TypeError, UnicodeDecodeError, ValueError, ProtocolError):
        return ""
    request_id = header.get("id") if isinstance(header, dict) else None
    return request_id if isinstance(request_id, str) else ""
