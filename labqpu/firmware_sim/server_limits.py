"""The simulated controller's bounds on what clients may make it hold: idempotency keys,
sessions, messages on the wire and uploads waiting for validation. ``hello`` states them
(``limits``; docs/protocol.md)."""

from __future__ import annotations

from labqpu.drivers.protocol import (
    MAX_FRAME_BYTES,
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_KEY_CHARS,
    MAX_MESSAGE_BYTES,
)
from labqpu.firmware_sim.zmtp import MessageLimits

#: How long an idempotency key is remembered after its run was accepted (s).
KEY_RETENTION_S = 3600.0
#: Most idempotency keys remembered (all sessions): beyond it the oldest is forgotten early.
#: A client retries within seconds; 65 536 newer keyed runs take minutes even to a neighbour
#: flooding the controller with 1-shot runs, while unbounded, such a flood took gigabytes.
MAX_KEYS = 65_536
#: A session unused this long is forgotten when the next one opens (s).
SESSION_IDLE_S = 24 * 3600.0
#: Most sessions held: beyond it ``hello`` forgets the least recently used one that holds no
#: run (queued, running, or finished and kept: a lost reply's retry must find its run).
MAX_SESSIONS = 4096
#: Most bytes of unfinished messages held for all clients together: a message that would go
#: beyond is refused with ``QueueFull`` (two clients sending messages of ``MAX_MESSAGE_BYTES``
#: at once still fit).
MAX_INBOUND_BYTES = 2 * MAX_MESSAGE_BYTES
#: Longest a client may take to send one message (s); then its connection is closed, and what
#: it sent of the message freed (512 MiB take ~4 s on a 1 Gb/s link).
MAX_MESSAGE_S = 60.0
#: Most clients connected at once (a new one beyond is closed at once): with the first 1 MiB of
#: each message not counted in ``MAX_INBOUND_BYTES``, it bounds what small messages may hold.
MAX_CONNECTIONS = 1024
#: A client that has sent nothing for this long (s) gives its place to a new one when
#: ``MAX_CONNECTIONS`` are connected (``MessageLimits.connection_idle_s``).
CONNECTION_IDLE_S = 30.0
#: Most bytes of uploads waiting for validation (all clients); beyond them ``upload`` is refused
#: with ``QueueFull``.
MAX_PENDING_UPLOAD_BYTES = MAX_INBOUND_BYTES
#: Most bytes of request headers (the parameters they carry) the runs queued or running hold,
#: all sessions together, one session at most a quarter of them; beyond, ``run`` is refused
#: with ``QueueFull``. A controller-bound sweep's largest table (4096 points) takes ~0.7 MB.
MAX_QUEUED_REQUEST_BYTES = 128 * 1024 * 1024
MESSAGE_LIMITS = MessageLimits(max_frames=MAX_FRAMES, max_header_bytes=MAX_HEADER_BYTES,
                               max_frame_bytes=MAX_FRAME_BYTES,
                               max_message_bytes=MAX_MESSAGE_BYTES,
                               max_inbound_bytes=MAX_INBOUND_BYTES, max_message_s=MAX_MESSAGE_S,
                               max_connections=MAX_CONNECTIONS,
                               connection_idle_s=CONNECTION_IDLE_S)


def stated_limits(*, max_programs: int, max_program_bytes: int, max_runs: int,
                  max_result_bytes: int, max_queued_per_session: int,
                  max_pending_upload_bytes: int) -> dict:
    """``hello``'s ``limits``: these bounds, the protocol's, and a server's own (bytes,
    seconds, counts)."""
    return {"max_header_bytes": MAX_HEADER_BYTES, "max_frames": MAX_FRAMES,
            "max_frame_bytes": MAX_FRAME_BYTES, "max_message_bytes": MAX_MESSAGE_BYTES,
            "max_inbound_bytes": MAX_INBOUND_BYTES, "max_message_s": MAX_MESSAGE_S,
            "max_connections": MAX_CONNECTIONS, "connection_idle_s": CONNECTION_IDLE_S,
            "max_queued_request_bytes": MAX_QUEUED_REQUEST_BYTES,
            "max_pending_upload_bytes": max_pending_upload_bytes,
            "max_json_depth": MAX_JSON_DEPTH, "max_programs": max_programs,
            "max_program_bytes": max_program_bytes, "max_runs": max_runs,
            "max_result_bytes": max_result_bytes,
            "max_queued_per_session": max_queued_per_session, "max_key_chars": MAX_KEY_CHARS,
            "max_keys": MAX_KEYS, "key_retention_s": KEY_RETENTION_S,
            "max_sessions": MAX_SESSIONS, "session_idle_s": SESSION_IDLE_S}
