"""Parts shared by the SCPI tests (``test_scpi_drivers.py``, ``test_scpi_servers.py``): the
simulator's signal generator and current source (``sg_server``, ``cs_server``), the drivers on
them (``sg``, ``cs``), and :class:`_RawClient`, a plain socket client (``client``). A test that
builds raw clients of its own takes the class as a fixture of its name.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from labqpu.drivers.scpi import CurrentSource, SignalGenerator
from labqpu.firmware_sim.scpi_server import ScpiServer

TIMEOUT_S = 0.3


class _RawClient:
    """A plain socket client for talking SCPI to a server directly."""

    def __init__(self, server: ScpiServer) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=2.0)
        self._buffer = b""

    def send(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def ask(self, line: str) -> str:
        self.send(line.encode())
        while b"\n" not in self._buffer:
            data = self.sock.recv(4096)
            assert data, "server closed the connection"
            self._buffer += data
        reply, self._buffer = self._buffer.split(b"\n", 1)
        return reply.decode()

    def errors(self) -> list[str]:
        entries = []
        while (entry := self.ask("SYST:ERR?")) != '0,"No error"':
            entries.append(entry)
        return entries


@pytest.fixture
def sg_server() -> Iterator[ScpiServer]:
    with ScpiServer("signal_generator", name="lo-test") as server:
        yield server


@pytest.fixture
def cs_server() -> Iterator[ScpiServer]:
    with ScpiServer("current_source", name="flux-test", channels=5) as server:
        yield server


@pytest.fixture
def sg(sg_server: ScpiServer) -> Iterator[SignalGenerator]:
    with SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S) as instrument:
        yield instrument


@pytest.fixture
def cs(cs_server: ScpiServer) -> Iterator[CurrentSource]:
    with CurrentSource(cs_server.resource, channels=5, timeout_s=TIMEOUT_S) as instrument:
        yield instrument


@pytest.fixture
def client(sg_server: ScpiServer) -> Iterator[_RawClient]:
    raw = _RawClient(sg_server)
    yield raw
    raw.sock.close()


@pytest.fixture(name="_RawClient", scope="session")
def raw_client_class():
    """:class:`_RawClient`, for raw clients a test opens itself."""
    return _RawClient
