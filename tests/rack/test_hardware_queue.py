"""The local hardware queue says why a question to the rack timed out: still queued behind other
work, or asked and not answered (naming the addresses asked)."""

from __future__ import annotations

import threading
import time

import pytest
import zmq

from labqpu.errors import InstrumentTimeoutError
from labqpu.rack.config import default_config_path, load_config
from labqpu.rack.hardware import RackConnection
from labqpu.rack.hardware_queue import LocalHardwareQueue


def test_a_status_that_times_out_says_why(monkeypatch) -> None:
    released = threading.Event()
    # An instrument that never answers, without waiting for a real socket's timeouts.
    monkeypatch.setattr(RackConnection, "describe", lambda self, cancel=None: released.wait(30))
    queue = LocalHardwareQueue(RackConnection(load_config(default_config_path())))
    try:
        asked = r"not answering \(asked: ctrl0 at tcp://127.0.0.1:0, .*lo_drive_a at "
        with pytest.raises(InstrumentTimeoutError, match=asked) as info:
            queue.describe(timeout_s=0.3)
        assert str(info.value).endswith(
            f"; a simulated rack: `labqpu sim {default_config_path()}` serves it (command "
            "'describe')"), str(info.value)
        with pytest.raises(InstrumentTimeoutError, match="still queued behind other jobs"):
            queue.describe(timeout_s=0.3)  # the first question still holds the worker
    finally:
        released.set()
        queue.close(timeout_s=10)


def test_closing_while_a_controller_does_not_answer_hello_does_not_wait_for_its_retries(
        ) -> None:
    """A review's case: Ctrl-C during ``labqpu status`` on a rack whose controller answers
    nothing exited 13 s later (the worker's ``hello`` went through its three attempts of 5 s
    while the command's cleanup waited for the worker; 180 s at a 60 s timeout)."""
    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)  # a controller that takes requests and never answers
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    config = load_config(default_config_path()).with_endpoints(
        {"ctrl0": f"tcp://127.0.0.1:{port}"})
    queue = LocalHardwareQueue(RackConnection(config))
    try:
        with pytest.raises(InstrumentTimeoutError, match="not answering"):
            queue.capabilities(timeout_s=0.3)
        t0 = time.monotonic()
        queue.close(timeout_s=20)
        took_s = time.monotonic() - t0
        assert took_s < 2.0, took_s  # the hello's wait ends at the close (5 s x 3 before)
        assert not queue._worker.is_alive()
    finally:
        queue.close(timeout_s=20)
        silent.close(linger=0)
        context.term()


def test_a_controller_that_answers_no_hello_is_named_with_what_to_check() -> None:
    """A review's case: "no reply after 3 attempts of 5.0 s (command 'hello')", with no word
    of which controller, or of the simulator a wiring file on fixed ports needs running."""
    from dataclasses import replace

    context = zmq.Context()
    silent = context.socket(zmq.ROUTER)
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    config = load_config(default_config_path()).with_endpoints(
        {"ctrl0": f"tcp://127.0.0.1:{port}"})
    config = replace(config, controllers=(replace(config.controllers[0], timeout_s=0.1),))
    rack = RackConnection(config)
    try:
        with pytest.raises(InstrumentTimeoutError) as info:
            rack.controller("ctrl0")
        assert info.value.instrument == f"ctrl0 (tcp://127.0.0.1:{port})"
        assert str(info.value).startswith(
            f"[ctrl0 (tcp://127.0.0.1:{port})] no reply after 3 attempts of 0.1 s: is "
            f"controller ctrl0 on, and at this address? (a simulated rack: `labqpu sim "
            f"{default_config_path()}` serves it) (command 'hello')"), str(info.value)
    finally:
        rack.close()
        silent.close(linger=0)
        context.term()


def test_a_question_the_close_ends_says_so(monkeypatch) -> None:
    """A review's case: ``close()`` left a ``describe()`` waiting in the queue with a bare
    ``concurrent.futures.CancelledError`` and the one asked with "cancelled before it
    finished"; both now say the provider was closed (``HardwareUnavailableError``)."""
    from labqpu.errors import HardwareUnavailableError

    monkeypatch.setattr(RackConnection, "describe",
                        lambda self, cancel=None: cancel.wait(30) and {})
    queue = LocalHardwareQueue(RackConnection(load_config(default_config_path())))
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            queue.describe(timeout_s=30)
        except BaseException as exc:  # what each caller meets
            errors.append(exc)

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for t in askers:
        t.start()
    time.sleep(0.3)  # one asked, one queued behind it
    queue.close(timeout_s=10)
    for t in askers:
        t.join(timeout=10)
    assert [type(e) for e in errors] == [HardwareUnavailableError] * 2, errors
    assert all("the provider was closed while describe waited" in str(e) for e in errors)
