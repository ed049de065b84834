"""Parts shared by the controller-server tests and the physics tests of the simulator.

For ``test_controller_server_*.py``: a summing executor, a server and a client on it over real
ZeroMQ tcp sockets on 127.0.0.1, the program the tests upload, and raw requests that bypass the
client's checks. For ``test_physics_*.py``: random density matrices for the references. A test
that calls a helper directly takes the fixture of the helper's name, which returns it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import Reply, decode_reply
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


@pytest.fixture(scope="session")
def _program():
    def _program(n: int = 8) -> dict[str, np.ndarray]:
        a = (np.arange(n) * (1 + 0.5j)).astype(np.complex64)
        return {"a": a, "b": (a * 2j).astype(np.complex64)}

    return _program


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


@pytest.fixture(scope="session")
def _raw_request():
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

    return _raw_request


@pytest.fixture(name="SumExecutor", scope="session")
def sum_executor_class():
    """:class:`SumExecutor`, for the tests that start servers of their own."""
    return SumExecutor


@pytest.fixture(scope="session")
def random_density_matrix():
    def random_density_matrix(d: int, rng: np.random.Generator) -> np.ndarray:
        x = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
        rho = x @ x.conj().T
        return rho / np.trace(rho)

    return random_density_matrix
