"""The local hardware queue says why a question to the rack timed out: still queued behind other
work, or asked and not answered (naming the addresses asked)."""

from __future__ import annotations

import threading

import pytest

from labqpu.errors import InstrumentTimeoutError
from labqpu.rack.config import default_config_path, load_config
from labqpu.rack.hardware import LocalHardwareQueue, RackConnection


def test_a_status_that_times_out_says_why(monkeypatch) -> None:
    released = threading.Event()
    # An instrument that never answers, without waiting for a real socket's timeouts.
    monkeypatch.setattr(RackConnection, "describe", lambda self: released.wait(30))
    queue = LocalHardwareQueue(RackConnection(load_config(default_config_path())))
    try:
        with pytest.raises(InstrumentTimeoutError, match=r"not answering \(asked: ctrl0 at "
                                                         r"tcp://127.0.0.1:0, .*lo_drive_a at "):
            queue.describe(timeout_s=0.3)
        with pytest.raises(InstrumentTimeoutError, match="still queued behind other jobs"):
            queue.describe(timeout_s=0.3)  # the first question still holds the worker
    finally:
        released.set()
        queue.close(timeout_s=10)
