"""SCPI drivers against the simulator's SCPI servers, over real TCP sessions through pyvisa-py."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import pyvisa
import pyvisa.constants
import pyvisa.errors
import pyvisa.resources

from labqpu.drivers.scpi import (
    CurrentSource,
    SignalGenerator,
    _SocketLink,
    queries_out,
    query_each,
)
from labqpu.errors import (
    InstrumentCommandError,
    InstrumentError,
    InstrumentLimitError,
    ProtocolError,
)
from labqpu.firmware_sim import scpi_server
from labqpu.firmware_sim.scpi_loop import ScpiLoop
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


def _opened(resource: str) -> list[str]:
    return [
        r.resource_name
        for r in pyvisa.ResourceManager("@py").list_opened_resources()
        if r.resource_name == resource
    ]


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


# --- drivers against the simulator ----------------------------------------------------------


def test_identity_names_simulator_model_and_serial(sg: SignalGenerator) -> None:
    manufacturer, model, serial, _ = sg.idn().split(",")
    assert manufacturer == "labqpu simulator"
    assert model == "SGS100A"
    assert serial == "lo-test"
    assert sg.identity == sg.idn()


def test_signal_generator_settings_round_trip(sg: SignalGenerator, sg_server: ScpiServer) -> None:
    sg.frequency_hz = 5.123456789e9
    sg.power_dbm = -12.5
    sg.output_on = True
    assert sg.frequency_hz == 5.123456789e9
    assert sg.power_dbm == -12.5
    assert sg.output_on is True
    assert sg_server.state.snapshot() == {
        "frequency_hz": 5.123456789e9,
        "power_dbm": -12.5,
        "output_on": True,
    }
    sg.output_on = False
    assert sg_server.state.snapshot()["output_on"] is False


def test_configure_sets_everything(sg: SignalGenerator, sg_server: ScpiServer) -> None:
    sg.configure(frequency_hz=6.2e9, power_dbm=3.0)
    assert sg_server.state.snapshot() == {
        "frequency_hz": 6.2e9,
        "power_dbm": 3.0,
        "output_on": True,
    }


def test_reset_restores_factory_settings(sg: SignalGenerator, sg_server: ScpiServer) -> None:
    sg.configure(frequency_hz=6.2e9, power_dbm=3.0)
    sg.reset()
    assert sg_server.state.snapshot() == {
        "frequency_hz": 1e9,
        "power_dbm": -30.0,
        "output_on": False,
    }


def test_current_source_channels_are_independent(cs: CurrentSource, cs_server: ScpiServer) -> None:
    cs.set_current_a(3, -2.5e-3)
    cs.set_output(3, True)
    cs.set_current_a(5, 7e-3)
    assert cs.current_a(3) == -2.5e-3
    assert cs.output_on(3) is True
    assert cs.current_a(5) == 7e-3
    assert cs.output_on(5) is False
    snapshot = cs_server.state.snapshot()
    assert snapshot["current_a"] == {1: 0.0, 2: 0.0, 3: -2.5e-3, 4: 0.0, 5: 7e-3}
    assert snapshot["output_on"] == {1: False, 2: False, 3: True, 4: False, 5: False}


def test_a_query_met_before_reads_the_current_value_and_keeps_its_checks(
        cs_server: ScpiServer) -> None:
    """The server keeps how it parsed a query, not its answer: the same query after a setting
    reads the new value, and a query with an argument or a channel out of range is still
    refused with its SCPI error."""
    assert cs_server.execute("SOUR3:CURR?") == "0.0"
    cs_server.execute("SOUR3:CURR 0.002")
    assert cs_server.execute("SOUR3:CURR?;:SOUR3:CURR?") == "0.002;0.002"
    for refused, code in (("SOUR3:CURR? 1", "-108"), ("SOUR9:CURR?", "-114"),
                          ("SOUR3:CURR?", None)):
        cs_server.execute(refused)
        assert cs_server.execute("SYST:ERR?").startswith(code or "0,")


def test_current_source_reads_several_channels_in_one_round_trip(cs: CurrentSource,
                                                               cs_server: ScpiServer) -> None:
    cs.set_current_a(2, 1.25e-3)
    cs.set_output(2, True)
    cs.set_current_a(4, -3e-4)
    sent = cs_server.state.snapshot()
    assert cs.states([2, 4, 5]) == {2: (1.25e-3, True), 4: (-3e-4, False), 5: (0.0, False)}
    assert cs.states([4]) == {4: cs.state(4)}
    assert cs.states([]) == {}
    with pytest.raises(InstrumentLimitError, match="channel 6"):
        cs.states([1, 6])
    assert cs_server.state.snapshot() == sent  # reading changes nothing


def test_driver_limits_send_nothing(sg_server: ScpiServer) -> None:
    # The driver's limits are narrower than the server's: had anything been sent, the
    # server would have accepted it.
    before = sg_server.state.snapshot()
    with SignalGenerator(
        sg_server.resource, timeout_s=TIMEOUT_S, max_frequency_hz=6e9, max_power_dbm=10.0
    ) as sg:
        with pytest.raises(InstrumentLimitError, match=r"frequency_hz.*6000000000\.0") as info:
            sg.frequency_hz = 8e9
        assert info.value.instrument == sg_server.resource
        with pytest.raises(InstrumentLimitError, match="power_dbm"):
            sg.power_dbm = 15.0
        with pytest.raises(InstrumentLimitError, match="power_dbm"):
            sg.configure(frequency_hz=5e9, power_dbm=15.0)
        with pytest.raises(InstrumentLimitError):
            sg.frequency_hz = float("nan")
        with pytest.raises(TypeError):
            sg.output_on = "OFF"  # type: ignore[assignment]
    assert sg_server.state.snapshot() == before


def test_current_limits_and_channels_send_nothing(cs_server: ScpiServer) -> None:
    before = cs_server.state.snapshot()
    with CurrentSource(
        cs_server.resource, channels=5, max_current_a=1e-3, timeout_s=TIMEOUT_S
    ) as cs:
        for current_a in (2e-3, -2e-3):
            with pytest.raises(InstrumentLimitError, match=r"current_a.*0\.001"):
                cs.set_current_a(1, current_a)
        for channel in (0, 6, True):
            with pytest.raises(InstrumentLimitError, match="channel"):
                cs.set_current_a(channel, 0.5e-3)
            with pytest.raises(InstrumentLimitError, match="channel"):
                cs.set_output(channel, True)
        assert cs.states_query([1]) == "SOUR1:CURR?;:OUTP1?"  # now kept for channel 1
        for channels in ([True], [0], [1, 6], []):  # True == 1 must not find channel 1's
            with pytest.raises((InstrumentLimitError, ValueError), match="channel"):
                cs.states_query(channels)
            with pytest.raises((InstrumentLimitError, ValueError), match="channel"):
                cs.parse_states(channels, "0;0")
    with CurrentSource(cs_server.resource, channels=5, max_current_a=float("inf"),
                       timeout_s=TIMEOUT_S) as unlimited:  # no limit configured
        for current_a in (float("inf"), float("-inf"), float("nan")):
            with pytest.raises(InstrumentLimitError, match="current_a"):
                unlimited.set_current_a(1, current_a)
    assert cs_server.state.snapshot() == before


def test_server_limits_refuse_with_data_out_of_range(
    sg_server: ScpiServer, cs_server: ScpiServer
) -> None:
    before_sg, before_cs = sg_server.state.snapshot(), cs_server.state.snapshot()
    with SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S, max_frequency_hz=20e9) as sg:
        with pytest.raises(InstrumentCommandError, match="Data out of range") as info:
            sg.frequency_hz = 15e9
        assert info.value.remote_type == "-222"
        assert info.value.command == "FREQ 15000000000.0"
    with (
        CurrentSource(cs_server.resource, max_current_a=1.0, timeout_s=TIMEOUT_S) as cs,
        pytest.raises(InstrumentCommandError, match="Data out of range"),
    ):
        cs.set_current_a(2, 0.5)
    assert sg_server.state.snapshot() == before_sg
    assert cs_server.state.snapshot() == before_cs


def test_undefined_command_raises_with_instrument_message(
    sg: SignalGenerator, sg_server: ScpiServer
) -> None:
    with pytest.raises(InstrumentCommandError, match="Undefined header") as info:
        sg.write("FOO:BAR 1")
    assert info.value.remote_type == "-113"
    assert info.value.command == "FOO:BAR 1"
    assert info.value.instrument == sg_server.resource
    sg.check_errors()
    assert sg.power_dbm == -30.0


def test_check_errors_reports_every_queued_error(sg: SignalGenerator, client: _RawClient) -> None:
    client.send(b"FREQ abc")
    client.send(b"NOPE")
    assert client.ask("*OPC?") == "1"  # both lines processed before the driver asks
    with pytest.raises(InstrumentCommandError, match=r"Data type error.*Undefined header") as info:
        sg.check_errors()
    assert info.value.remote_type == "-104"
    sg.check_errors()


def test_another_clients_error_is_not_blamed_on_a_setting(sg: SignalGenerator,
                                                          client: _RawClient) -> None:
    client.send(b"FREQ abc")  # a neighbour's mistake lands in the shared error queue
    assert client.ask("*OPC?") == "1"
    sg.frequency_hz = 5.1e9  # does not raise: the queue is cleared before our command
    assert sg.frequency_hz == 5.1e9
    with pytest.raises(InstrumentCommandError, match="Data out of range"):
        sg.write("FREQ 1e99")  # our own error is still reported


@pytest.mark.parametrize("command", ["FREQ?\nPOW?", "FREQ?\r\nPOW?", "*RST\nFREQ 1"])
def test_multi_line_commands_are_refused_before_sending(sg: SignalGenerator, command: str,
                                                        client: _RawClient) -> None:
    before = sg.frequency_hz
    call = sg.query if command.endswith("?") else sg.write
    with pytest.raises(ProtocolError, match="one line"):
        call(command)
    assert sg.frequency_hz == before  # and the replies that follow are still in step
    assert client.ask("*OPC?") == "1"


def test_query_each_reads_several_instruments(sg: SignalGenerator, sg_server: ScpiServer,
                                              cs: CurrentSource, cs_server: ScpiServer) -> None:
    """One query per instrument; the replies come back in order and parse as the instruments'
    own ``state`` / ``states`` calls do."""
    sg.configure(5.25e9, -3.5, output_on=True)
    cs.set_current_a(3, -1.25e-4)
    cs.set_output(3, True)
    replies = query_each([(sg, sg.STATE_QUERY), (cs, cs.states_query([1, 3]))])
    assert sg.parse_state(replies[0]) == sg.state() == (5.25e9, -3.5, True)
    assert cs.parse_states([1, 3], replies[1]) == cs.states([1, 3])
    assert cs.parse_states([1, 3], replies[1])[3] == (-1.25e-4, True)
    assert query_each([]) == []


def test_queries_out_lets_work_happen_while_replies_travel(sg: SignalGenerator,
                                                          sg_server: ScpiServer) -> None:
    """The queries are out on entry: the instrument answers while the caller does other work
    (here: the state changes after the answer left). Leaving the block
    without reading closes the session, so the unread reply cannot answer a later query."""
    sg_server.state.set("frequency_hz", 5.0e9)
    with queries_out([(sg, "FREQ?")]) as replies:
        time.sleep(0.05)  # the reply is in the socket by now
        sg_server.state.set("frequency_hz", 6.0e9)
        assert replies() == ["5000000000.0"]
    with queries_out([(sg, "FREQ?")]):
        pass  # left before its reply was read
    assert _opened(sg.resource) == []
    sg_server.state.set("power_dbm", -12.0)
    assert sg.query("POW?") == "-12.0"
    assert sg.query("FREQ?") == "6000000000.0"


def test_close_is_idempotent_and_final(sg_server: ScpiServer) -> None:
    sg = SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S)
    assert _opened(sg_server.resource) == [sg_server.resource]
    sg.close()
    sg.close()
    assert _opened(sg_server.resource) == []
    with pytest.raises(InstrumentError, match="closed"):
        sg.idn()


def test_context_manager_closes_when_body_raises(sg_server: ScpiServer) -> None:
    with (
        pytest.raises(InstrumentLimitError),
        SignalGenerator(sg_server.resource, timeout_s=TIMEOUT_S) as sg,
    ):
        sg.frequency_hz = 1e12
    assert _opened(sg_server.resource) == []


def test_one_instrument_shared_by_two_threads(sg: SignalGenerator) -> None:
    identity = sg.identity
    frequencies_hz = [4e9 + i * 1e6 for i in range(40)]

    def set_and_read_frequencies() -> list[float]:
        readings = []
        for frequency_hz in frequencies_hz:
            sg.frequency_hz = frequency_hz
            readings.append(sg.frequency_hz)
        return readings

    def read_identity() -> list[str]:
        return [sg.idn() for _ in frequencies_hz]

    with ThreadPoolExecutor(max_workers=2) as pool:
        setter = pool.submit(set_and_read_frequencies)
        reader = pool.submit(read_identity)
        assert setter.result() == frequencies_hz
        assert reader.result() == [identity] * len(frequencies_hz)


@pytest.mark.skipif(not hasattr(select, "poll"), reason="pyvisa's own write without select.poll")
def test_visa_write_interrupted_halfway_is_never_executed(sg: SignalGenerator,
                                                          sg_server: ScpiServer,
                                                          mocker) -> None:
    """A write cut off halfway (link lost mid-message; not reproducible on loopback, so
    pytest-mock cuts it): the half line is never executed, the call raises naming the
    instrument, and the next call is answered correctly on a fresh session."""
    sg.frequency_hz = 4.25e9
    before = sg_server.state.snapshot()

    def half_write(link, message: str, timeout_s: float) -> None:
        data = (message + "\n").encode("ascii")
        link._sock.sendall(data[: len(data) // 2])
        raise BrokenPipeError("link lost")

    cut = mocker.patch.object(_SocketLink, "send", autospec=True, side_effect=half_write)
    with pytest.raises(InstrumentError, match="connection failed: link lost") as info:
        sg.frequency_hz = 6.5e9
    assert info.value.instrument == sg_server.resource
    assert cut.call_count == 1
    mocker.stopall()
    assert sg.frequency_hz == 4.25e9
    assert sg_server.state.snapshot() == before
    assert _opened(sg_server.resource) == [sg_server.resource]


def test_two_clients_on_one_server(cs_server: ScpiServer) -> None:
    def drive(channel: int) -> list[float]:
        with CurrentSource(cs_server.resource, timeout_s=TIMEOUT_S) as cs:
            readings = []
            for step in range(30):
                cs.set_current_a(channel, channel * 1e-4 + step * 1e-6)
                readings.append(cs.current_a(channel))
            return readings

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = {channel: pool.submit(drive, channel) for channel in (1, 2)}
        for channel, future in results.items():
            assert future.result() == [channel * 1e-4 + step * 1e-6 for step in range(30)]
    assert cs_server.state.snapshot()["current_a"][2] == 2e-4 + 29e-6


# --- the simulated servers -----------------------------------------------------------------


def test_server_stop_closes_connections_and_joins_thread() -> None:
    server = ScpiServer("signal_generator", name="stop-test")
    server.start()
    client = _RawClient(server)
    sg = SignalGenerator(server.resource, timeout_s=TIMEOUT_S)
    try:
        assert client.ask("*OPC?") == "1"
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 1.0
        assert client.sock.recv(4096) == b""
        assert "scpi-server-stop-test" not in [t.name for t in threading.enumerate()]
        with pytest.raises(InstrumentError):
            sg.idn()
        with pytest.raises(OSError):
            socket.create_connection((server.host, server.port), timeout=1.0).close()
    finally:
        sg.close()
        client.sock.close()
        server.stop()


def test_instruments_sharing_a_loop_serve_and_stop_apart() -> None:
    """A rack's instruments share one serving thread; stopping one closes its port and its
    connections only, the others go on serving, and stopping the loop ends the thread."""
    loop = ScpiLoop("scpi-loop-test")
    first = ScpiServer("signal_generator", name="first", loop=loop)
    second = ScpiServer("current_source", name="second", loop=loop)
    first.start()
    second.start()
    clients = [_RawClient(first), _RawClient(second)]
    try:
        assert [t.name for t in threading.enumerate()].count("scpi-loop-test") == 1
        assert "scpi-server-first" not in [t.name for t in threading.enumerate()]
        with SignalGenerator(first.resource, timeout_s=TIMEOUT_S) as sg, \
                CurrentSource(second.resource, timeout_s=TIMEOUT_S) as cs:
            sg.frequency_hz = 4.25e9
            cs.set_current_a(2, 1e-4)
            assert query_each([(sg, "FREQ?"), (cs, "SOUR2:CURR?")]) == ["4250000000.0",
                                                                       "0.0001"]
        first.stop()
        assert not first.serving and second.serving
        assert clients[0].sock.recv(4096) == b""
        with pytest.raises(OSError):
            socket.create_connection((first.host, first.port), timeout=1.0).close()
        assert clients[1].ask("*OPC?") == "1"
        loop.stop()
        assert not second.serving
        assert clients[1].sock.recv(4096) == b""
        assert "scpi-loop-test" not in [t.name for t in threading.enumerate()]
        with pytest.raises(RuntimeError, match="stopped"):
            ScpiServer("signal_generator", name="late", loop=loop).start()
    finally:
        for client in clients:
            client.sock.close()
        second.stop()
        first.stop()
        loop.stop()


def test_stopping_one_instrument_under_traffic_leaves_the_others_serving() -> None:
    """While a shared loop is busy with one instrument, another is stopped and then its client
    sends a query: the loop sees the stop and that client's data in one batch, the stop
    first. The stop closes the connection; its stale event is skipped, so the thread lives on
    and the busy instrument still answers."""
    loop = ScpiLoop("scpi-loop-traffic")
    stopped = ScpiServer("signal_generator", name="stopped", loop=loop)
    busy = ScpiServer("current_source", name="busy", loop=loop)
    execute = busy.execute

    def slow_execute(line: str) -> str | None:
        if line == "*WAI":
            time.sleep(0.3)  # the loop's thread is held here, as by a long command
        return execute(line)

    busy.execute = slow_execute
    try:
        stopped.start()
        busy.start()
        with socket.create_connection((stopped.host, stopped.port), timeout=2.0) as late, \
                socket.create_connection((busy.host, busy.port), timeout=2.0) as work:
            late.sendall(b"*OPC?\n")
            assert late.recv(16) == b"1\n"
            work.sendall(b"*WAI\n")
            time.sleep(0.05)
            stopper = threading.Thread(target=stopped.stop)
            stopper.start()  # its task and wake-up wait for the loop
            time.sleep(0.05)
            late.sendall(b"FREQ?\n")  # ready in the same batch, after the wake-up
            stopper.join(10)
        assert loop.alive and busy.serving and not stopped.serving
        client = _RawClient(busy)
        assert client.ask("*OPC?") == "1"
        client.sock.close()
    finally:
        busy.stop()
        loop.stop()


def test_header_forms_case_and_line_endings(client: _RawClient, sg_server: ScpiServer) -> None:
    client.send(b"FREQ\t3e9")
    assert client.ask("SOURce:FREQuency:CW?") == "3000000000.0"
    client.send(b"sour:freq:cw 2.5GHz\r")
    assert client.ask("FREQuency?") == "2500000000.0"
    assert client.ask(":SOURce:FREQ:CW?") == "2500000000.0"
    client.send(b"POWer:LEVel:IMMediate:AMPLitude -7.25 dBm;outp:stat on")
    assert client.ask("pow?;OUTPut?;*OPC?") == "-7.25;1;1"
    assert client.errors() == []
    assert sg_server.state.snapshot() == {
        "frequency_hz": 2.5e9,
        "power_dbm": -7.25,
        "output_on": True,
    }


def test_server_remembers_a_bounded_number_of_headers(client: _RawClient,
                                                     sg_server: ScpiServer) -> None:
    """Every case form of a header is answered, and the server's table of headers it has
    looked up stays within its bound however many distinct headers a client sends."""
    sg_server.state.set("frequency_hz", 3.25e9)
    forms = {"".join(c.lower() if (i >> k) & 1 else c for k, c in enumerate("FREQUENCY"))
             for i in range(2**9)}
    for form in sorted(forms):
        assert client.ask(f"{form}?") == "3250000000.0"
    assert len(forms) > scpi_server._KNOWN_HEADERS
    assert 0 < len(sg_server._headers) <= scpi_server._KNOWN_HEADERS
    assert client.errors() == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("FOO:BAR 1", -113),
        ("FREQ:BOGUS 1", -113),
        ("FREQu 1e9", -113),
        ("FREQ2 1e9", -113),
        ("FREQ abc", -104),
        ("FREQ 5 furlongs", -131),
        ("FREQ 1e20", -222),
        ("POW 30", -222),
        ("FREQ", -109),
        ("*RST 1", -108),
        ("OUTP maybe", -224),
        ("FREQ!! 1", -102),
    ],
)
def test_malformed_commands_queue_errors(
    client: _RawClient, sg_server: ScpiServer, line: str, code: int
) -> None:
    before = sg_server.state.snapshot()
    client.send(line.encode())
    errors = client.errors()
    assert len(errors) == 1
    assert errors[0].startswith(f"{code},")
    assert sg_server.state.snapshot() == before
    assert client.ask("*OPC?") == "1"


def test_garbage_and_overlong_lines_keep_server_alive(client: _RawClient) -> None:
    client.send(b"\xff\xfe\x00\x01")
    client.send(b"X" * 100_000)
    assert client.ask("*IDN?").startswith("labqpu simulator,SGS100A")
    codes = [entry.split(",")[0] for entry in client.errors()]
    assert codes == ["-102", "-223"]


def test_error_queue_overflow_and_clear(client: _RawClient) -> None:
    for _ in range(12):
        client.send(b"NOPE")
    errors = client.errors()
    assert len(errors) == 10
    assert errors[-1] == '-350,"Queue overflow"'
    client.send(b"NOPE;*CLS")
    client.send(b"NOPE")
    client.send(b"*CLS")
    assert client.errors() == []


def test_current_source_channel_suffix(cs_server: ScpiServer) -> None:
    raw = _RawClient(cs_server)
    try:
        raw.send(b"SOUR:CURR 1mA;:SOURce4:FUNCtion:MODE CURR;:SOUR4:CURR:LEV -20uA;OUTP4 1")
        assert raw.ask("SOUR1:CURR?;SOUR4:CURR?;OUTP4:STAT?;SOUR4:FUNC:MODE?") == (
            "0.001;-2e-05;1;CURR"
        )
        raw.send(b"SOUR6:CURR 1e-3")
        raw.send(b"SOUR2:FUNC:MODE VOLT")
        codes = [entry.split(",")[0] for entry in raw.errors()]
        assert codes == ["-114", "-224"]
    finally:
        raw.sock.close()
    snapshot = cs_server.state.snapshot()
    assert snapshot["current_a"] == {1: 1e-3, 2: 0.0, 3: 0.0, 4: -2e-5, 5: 0.0}
    assert snapshot["output_on"][4] is True


def test_server_rejects_unknown_model_and_reports_port_only_when_started() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        ScpiServer("oscilloscope", name="x")  # type: ignore[arg-type]
    server = ScpiServer("current_source", name="idle")
    with pytest.raises(RuntimeError):
        _ = server.port
    server.stop()


# --- connection floods -----------------------------------------------------------------------


def test_connections_beyond_the_limit_are_closed_and_the_others_served() -> None:
    """Nothing bounded an instrument's clients: a neighbour opening connections in a loop
    used up the simulator's file descriptors, after which no new client (nor the controller's
    own) could connect. Beyond ``max_connections`` a client is accepted and reset at once."""
    with ScpiServer("signal_generator", name="lo-cap", max_connections=3) as server:
        clients = [_RawClient(server) for _ in range(3)]
        try:
            for raw in clients:
                assert raw.ask("*IDN?").startswith("labqpu simulator")
            assert _connect_and_ask(server.port) == b""  # reset, not answered
            assert clients[0].ask("OUTP?") in ("0", "1")  # the others are still served
            # labqpu's driver fails at once, naming the likely cause (a closed connection
            # left it waiting for its timeout)
            start = time.monotonic()
            with pytest.raises(InstrumentError, match="reset the connection: it may already "
                                                      "serve as many clients as it takes"), \
                    SignalGenerator(server.resource, timeout_s=TIMEOUT_S) as refused:
                _ = refused.identity
            assert time.monotonic() - start < 1.0
            clients.pop().sock.close()
            # the closed client's place frees once the server sees it go
            assert _served_again(server.port).startswith(b"labqpu simulator")
        finally:
            for raw in clients:
                raw.sock.close()


def test_a_client_idle_for_idle_s_gives_its_place_to_a_new_one() -> None:
    """A neighbour holding every connection of an instrument shut everyone else out until
    it let go (leaked sessions of crashed scripts do so for ever). When the instrument is full,
    the client that has sent nothing for the longest, if for at least ``idle_s``, is reset and
    the new client served; a client that keeps talking keeps its place, and labqpu's driver,
    its idle session closed so, opens a new one at its next query."""
    with ScpiServer("signal_generator", name="lo-idle", max_connections=2, idle_s=0.5) as server:
        driver = SignalGenerator(server.resource, timeout_s=TIMEOUT_S)
        talking = _RawClient(server)
        try:
            assert driver.identity.startswith("labqpu simulator")
            assert talking.ask("*IDN?").startswith("labqpu simulator")
            assert _connect_and_ask(server.port) == b""  # full, nobody idle long enough
            time.sleep(0.6)
            assert talking.ask("OUTP?") in ("0", "1")  # it keeps talking
            newcomer = _RawClient(server)
            try:
                assert newcomer.ask("*IDN?").startswith("labqpu simulator")
                assert talking.ask("OUTP?") in ("0", "1")
                time.sleep(0.6)  # the newcomer idles now; the driver was the one reset
                assert driver.state()[2] in (True, False)  # on a new session
            finally:
                newcomer.sock.close()
        finally:
            talking.sock.close()
            driver.close()


def test_a_client_whose_line_waits_unread_is_not_the_one_reset() -> None:
    """A review's race: the instruments' loop busy (as a rack's shared loop is), an idle
    client sends a query while a new client connects; the loop takes the new client first and
    reset the idle one with its query unread (``Connection reset by peer``). A client with
    input waiting keeps its place."""
    with (ScpiServer("signal_generator", name="lo-race", max_connections=1, idle_s=0.2)
          as server, SignalGenerator(server.resource, timeout_s=TIMEOUT_S) as driver):
        assert driver.identity.startswith("labqpu simulator")
        time.sleep(0.3)
        held = threading.Event()

        def hold(*_: object) -> None:
            held.set()
            time.sleep(0.3)

        busy = threading.Thread(target=server._loop._run, args=(hold, 2.0),
                                kwargs={"start": False})
        busy.start()
        assert held.wait(2.0)
        newcomer = socket.create_connection((server.host, server.port), timeout=2.0)
        try:
            time.sleep(0.02)
            assert driver.frequency_hz > 0
        finally:
            busy.join()
            newcomer.close()


_OUT_OF_DESCRIPTORS = """
import os, resource, sys, time
from labqpu.firmware_sim.scpi_server import ScpiServer
server = ScpiServer("signal_generator", name="lo-fd", max_connections=10_000)
server.start()
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
if sys.argv[1] == "reserve_lost":
    # Another thread of the process takes the descriptor the loop gives up (a race the
    # loop loses now and then), made certain: the loop's first try to take its reserve
    # again fails.
    import errno, types
    from labqpu.firmware_sim import scpi_loop
    tries = []

    def lost_once(*args):
        tries.append(args)
        if len(tries) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        return os.open(*args)

    scpi_loop.os = types.SimpleNamespace(open=lost_once, close=os.close, devnull=os.devnull,
                                         O_RDONLY=os.O_RDONLY)
print(server.port, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux's /proc")
@pytest.mark.parametrize("other_thread", ["quiet", "reserve_lost"])
def test_an_instrument_out_of_descriptors_neither_spins_nor_floods_its_log(
        tmp_path, other_thread, cpu_s) -> None:
    """Out of file descriptors, a listener whose client cannot be accepted stays readable:
    the loop spun at one full core and wrote ~12 MB/s of warnings. Now it closes each such
    client with a descriptor kept in reserve, or, when the reserve could not be had again
    (another thread of the process took it), stops watching the listener for a while and
    takes the reserve again; it warns at most once a second; once the flood is gone, clients
    are served again, and a second flood is shed, none of its clients left hanging."""
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", _OUT_OF_DESCRIPTORS, other_thread],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    flood: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        for _ in range(40):
            with contextlib.suppress(OSError):
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=2.0))
        time.sleep(0.3)
        before = cpu_s(proc.pid)
        time.sleep(1.0)
        assert cpu_s(proc.pid) - before < 0.3, "the instrument's loop spins"
        assert log.stat().st_size < 20_000, log.read_text()[:500]
        for sock in flood:
            sock.close()
        flood.clear()
        assert _served_again(port).startswith(b"labqpu simulator")
        outcomes = _flood_outcomes(port, 20)
        assert outcomes["hung"] == 0 and outcomes["closed"] > 0, outcomes
    finally:
        for sock in flood:
            sock.close()
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def _flood_outcomes(port: int, n: int) -> dict[str, int]:
    """Open ``n`` connections at once, ask ``*IDN?`` on each: how many were served, closed
    (or reset) and left hanging (no answer within 1.5 s)."""
    socks = []
    for _ in range(n):
        with contextlib.suppress(OSError):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=1.5))
    outcomes = {"served": 0, "closed": n - len(socks), "hung": 0}
    try:
        for sock in socks:
            try:
                sock.sendall(b"*IDN?\n")
                outcomes["served" if sock.recv(4096) else "closed"] += 1
            except (ConnectionResetError, BrokenPipeError):
                outcomes["closed"] += 1
            except TimeoutError:
                outcomes["hung"] += 1
    finally:
        for sock in socks:
            sock.close()
    return outcomes


def _served_again(port: int, within_s: float = 10.0) -> bytes:
    """The first answer to ``*IDN?`` on a new connection to ``port``, trying every 0.05 s
    for at most ``within_s`` seconds (b"" if none came)."""
    deadline = time.monotonic() + within_s
    while not (data := _connect_and_ask(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return data


def _connect_and_ask(port: int) -> bytes:
    """What an instrument on ``port`` answers ``*IDN?`` with on a new connection; b"" when
    it closed or reset the connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.sendall(b"*IDN?\n")
            return sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return b""



_BUDGET = """
import resource
from labqpu.firmware_sim import __main__ as sim_main
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.firmware_sim.scpi_loop import client_budget
from labqpu.rack.config import builtin_config_path
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
rack = SimulatedRack(builtin_config_path("lab5"))
print(client_budget(4), client_budget(8), sorted({i.max_connections for i in
                                                  rack.instruments.values()}))
sim_main._raise_descriptor_limit()
print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX descriptor limits")
def test_the_instruments_share_half_the_descriptors_out_between_their_clients() -> None:
    """256 clients for each of lab5's four instruments filled a process limit of 1024, and then
    the controller took no client and its I/O thread spun. The instruments of a rack now take
    at most half the process's descriptors together, and the simulator process raises its soft
    limit to the hard one first."""
    if resource_limits()[1] <= 1024:
        pytest.skip("the hard descriptor limit is 1024 or less here")
    proc = subprocess.run([sys.executable, "-c", _BUDGET], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    budget, raised = proc.stdout.strip().splitlines()
    assert budget == "128 64 [128]", proc.stdout
    assert raised == "True", proc.stdout


def resource_limits() -> tuple[int, int]:
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)
