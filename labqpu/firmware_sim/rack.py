"""A whole simulated rack: its controllers on ZeroMQ and every VISA instrument on TCP.

Started from the same ``lab.toml`` the backend reads. Ports given as 0 are chosen free at
start; :meth:`SimulatedRack.endpoints` tells where everything actually listens. The
controllers drive one device: one physics engine, one simulated clock, and a trigger that
makes their runs one synchronised run when asked (``sync`` module).
"""

from __future__ import annotations

import logging
from pathlib import Path

from labqpu.firmware_sim.controller_server import ControllerServer
from labqpu.firmware_sim.device import Rack, load_device, load_rack
from labqpu.firmware_sim.executor import SimulatedController
from labqpu.firmware_sim.faults import FaultPlan, FaultyExecutor
from labqpu.firmware_sim.physics import PhysicsEngine, Settings
from labqpu.firmware_sim.scpi_loop import ScpiLoop, client_budget
from labqpu.firmware_sim.scpi_server import ScpiServer
from labqpu.firmware_sim.sync import DEFAULT_ARM_TIMEOUT_S, SharedDevice, SyncHub

log = logging.getLogger(__name__)


class SimulatedRack:
    """Controller servers + SCPI servers + physics for one ``lab.toml``.

    Args:
        lab_toml: the wiring file.
        device: override of the simulator device (name in ``devices/`` or a path).
        seed: seed of the runs that carry none (overrides ``[simulator] seed``); without
            either, those runs draw fresh OS entropy.
        noise: False switches the device's flux noise, quasi-static noise and drift off
            (overrides ``[simulator] noise``, default true).
        faults: faults to fire on cue (tests only, ``firmware_sim.faults``), on the
            controller each names (default: the wiring's first); None in normal use.
        arm_timeout_s: how long a synchronised run's leader waits for its followers to arm
            (s; overrides ``[simulator] sync_arm_timeout_s``, default
            ``sync.DEFAULT_ARM_TIMEOUT_S``).
        ports: ports to listen on instead of the wiring's, by controller or instrument name.

    ``controllers`` and ``executors`` hold each controller's server and simulated firmware
    by name; ``controller`` and ``executor`` are the first controller's.
    """

    def __init__(self, lab_toml: str | Path, *, device: str | None = None,
                 seed: int | None = None, noise: bool | None = None,
                 faults: FaultPlan | None = None, arm_timeout_s: float | None = None,
                 ports: dict[str, int] | None = None) -> None:
        self.rack: Rack = load_rack(lab_toml).with_ports(ports or {})
        named = device or self.rack.simulator_device
        self.device = load_device(named,
                                  noise=self.rack.simulator_noise if noise is None else noise)
        if self.device.name != self.rack.device_name:
            raise ValueError(f"device file {named} is for device {self.device.name!r}, the "
                             f"wiring file {lab_toml} for {self.rack.device_name!r} ([device] "
                             "name of each)")
        missing = sorted(set(range(len(self.device.qubits))) - set(self.rack.cabling))
        if missing:
            raise ValueError(f"wiring has no cabling for qubit(s) {missing}")
        #: One thread serves every instrument, as one host query wakes them together.
        self.scpi_loop = ScpiLoop(f"scpi-servers-{self.rack.device_name}")
        clients = client_budget(len(self.rack.instruments))
        self.instruments: dict[str, ScpiServer] = {
            spec.name: ScpiServer(spec.kind, name=spec.name, host=spec.host, port=spec.port,
                                  channels=spec.channels, loop=self.scpi_loop,
                                  max_connections=clients, **spec.limits)
            for spec in self.rack.instruments
        }
        for ctrl in self.rack.controllers:
            if ctrl.sample_rate_hz != self.device.sample_rate_hz:
                raise ValueError(f"controller {ctrl.name} runs at {ctrl.sample_rate_hz} Hz "
                                 f"(wiring file {lab_toml}, sample_rate_hz), the device file "
                                 f"{named} says {self.device.sample_rate_hz} Hz ([device] "
                                 "sample_rate_hz): they must agree")
        # Runs that carry no seed draw from this sequence: fresh OS entropy unless a seed is
        # configured, so an unseeded experiment repeated in a new session gives new data.
        run_seed = seed if seed is not None else self.rack.simulator_seed
        self.shared = SharedDevice(PhysicsEngine(self.device, self.rack.cabling), run_seed)
        names = tuple(c.name for c in self.rack.controllers)
        if faults is not None:
            faults.controllers = list(names)
        self.hub = SyncHub(names, arm_timeout_s or self.rack.simulator_arm_timeout_s
                           or DEFAULT_ARM_TIMEOUT_S)
        self.executors: dict[str, SimulatedController] = {}
        self.controllers: dict[str, ControllerServer] = {}
        for ctrl in self.rack.controllers:
            executor = SimulatedController(ctrl, self.shared.engine, self.settings, None,
                                           shared=self.shared, hub=self.hub)
            self.executors[ctrl.name] = executor
            self.controllers[ctrl.name] = ControllerServer(
                executor if faults is None else FaultyExecutor(executor, faults,
                                                               self.change_setting,
                                                               name=ctrl.name),
                host=ctrl.host, port=ctrl.port, name=ctrl.name, faults=faults)
        self.executor = self.executors[names[0]]
        self.controller = self.controllers[names[0]]
        self._started: list = []

    def settings(self) -> Settings:
        """What the VISA instruments output right now (LOs, flux-bias currents)."""
        los = {}
        currents = {}
        for name, server in self.instruments.items():
            snap = server.state.snapshot()
            if "frequency_hz" in snap:
                los[name] = (float(snap["frequency_hz"]), float(snap["power_dbm"]),
                             bool(snap["output_on"]))
            else:
                for ch, amps in snap["current_a"].items():
                    currents[(name, int(ch))] = float(amps) if snap["output_on"][ch] else 0.0
        return Settings(los=los, currents=currents)

    def change_setting(self, instrument: str, setting: str, value: float | bool,
                       channel: int = 1) -> None:
        """Change an instrument's setting as its front panel would, behind the host's back
        (fault ``lo_change``). ``setting``: ``frequency_hz`` (Hz), ``power_dbm`` (dBm),
        ``output_on`` or ``current_a`` (A, of ``channel``)."""
        server = self.instruments.get(instrument)
        if server is None:
            raise ValueError(f"no instrument {instrument!r}; the rack has "
                             f"{sorted(self.instruments)}")
        server.state.set(setting, value if setting == "output_on" else float(value), channel)

    def start(self) -> None:
        """Start every server; on failure, stop the ones already started and re-raise."""
        try:
            for server in self.instruments.values():
                server.start()
                self._started.append(server)
            for controller in self.controllers.values():
                controller.start()
                self._started.append(controller)
        except BaseException:
            self.stop()
            raise
        log.info("simulated rack %s up: %s", self.rack.device_name, self.endpoints())

    def stop(self) -> None:
        """Stop every server that was started (idempotent)."""
        try:
            while self._started:
                self._started.pop().stop()
        finally:
            self.scpi_loop.stop()

    def failure(self) -> str | None:
        """Which started server stopped serving (its thread died), or None if all serve."""
        for server in self._started:
            if not server.serving:
                return f"{server!r} stopped serving"
        return None

    def endpoints(self) -> dict[str, str]:
        """Where each controller and instrument listens, by name."""
        out = {name: server.endpoint for name, server in self.controllers.items()}
        for name, server in self.instruments.items():
            out[name] = server.resource
        return out

    def __enter__(self) -> SimulatedRack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
