"""The hardware path: configure VISA sources, then upload and run on the controller.

``RackConnection`` owns every driver session of one rack. ``HardwareQueue`` is the seam the
jobs talk to: the local one is a single worker thread that owns the rack; a device server can
later stand behind the same interface without ``LabJob`` changing.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from labqpu.backend.config import LabConfig
from labqpu.backend.program import PulseProgram
from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.errors import InstrumentCommandError, ProtocolError
from labqpu.drivers.scpi import CurrentSource, SignalGenerator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunRequest:
    """How to run one program: shots, seed (simulator only), repetition delay (s)."""

    shots: int
    seed: int | None
    rep_delay_s: float
    timeout_s: float
    key: str


class JobCancelledError(RuntimeError):
    """The job was cancelled while it held the hardware."""


class RackConnection:
    """Driver sessions of one rack, opened on first use and closed by :meth:`close`.

    Not thread-safe by itself: exactly one worker (the hardware queue) uses it.
    """

    def __init__(self, config: LabConfig) -> None:
        self.config = config
        self._los: dict[str, SignalGenerator] = {}
        self._currents: dict[str, CurrentSource] = {}
        self._controllers: dict[str, ControllerClient] = {}
        self._capabilities: dict[str, dict] = {}

    def controller(self, name: str) -> ControllerClient:
        """The (connected, version-checked) client of controller ``name``."""
        if name not in self._controllers:
            spec = self.config.controller(name)
            client = ControllerClient(spec.endpoint, timeout_s=spec.timeout_s)
            try:
                hello = client.hello()
                if not isinstance(hello.get("capabilities"), dict):
                    raise ProtocolError("hello reply carries no capabilities",
                                        instrument=spec.endpoint, command="hello")
                self._capabilities[name] = hello["capabilities"]
            except BaseException:
                client.close()
                raise
            self._controllers[name] = client
        return self._controllers[name]

    def capabilities(self, name: str) -> dict:
        """What controller ``name`` said about itself in ``hello``."""
        self.controller(name)
        return self._capabilities[name]

    def signal_generator(self, name: str) -> SignalGenerator:
        """The driver session of LO source ``name``."""
        if name not in self._los:
            spec = self.config.instrument(name)
            self._los[name] = SignalGenerator(spec.resource, timeout_s=spec.timeout_s)
        return self._los[name]

    def current_source(self, name: str) -> CurrentSource:
        """The driver session of current source ``name``."""
        if name not in self._currents:
            spec = self.config.instrument(name)
            self._currents[name] = CurrentSource(spec.resource, channels=spec.channels,
                                                 timeout_s=spec.timeout_s)
        return self._currents[name]

    def describe(self) -> dict:
        """Controller capabilities (from ``hello``) and ``*IDN?`` of every VISA instrument."""
        out: dict = {"controllers": {}, "instruments": {}}
        for ctrl in self.config.controllers:
            out["controllers"][ctrl.name] = {"endpoint": ctrl.endpoint,
                                             "capabilities": self.capabilities(ctrl.name)}
        for inst in self.config.instruments:
            session = (self.signal_generator(inst.name) if inst.kind == "signal_generator"
                       else self.current_source(inst.name))
            out["instruments"][inst.name] = {"resource": inst.resource,
                                             "identity": session.identity}
        return out

    def apply_settings(self, program: PulseProgram) -> None:
        """Set every LO and flux-bias current ``program`` assumes (sent every time, so a source
        that someone else changed is put back)."""
        for name, lo in sorted(program.lo_settings.items()):
            self.signal_generator(name).configure(lo.frequency_hz, lo.power_dbm, output_on=True)
        for (name, channel), current in sorted(program.flux_bias_a.items()):
            source = self.current_source(name)
            source.set_current_a(channel, current)
            if not source.output_on(channel):
                source.set_output(channel, True)

    def execute(self, program: PulseProgram, request: RunRequest,
                cancel: threading.Event) -> np.ndarray:
        """Run ``program``; returns IQ points (shots x acquisitions, complex64)."""
        self.apply_settings(program)
        client = self.controller(program.controller)
        arrays, meta = program.to_wire()
        program_id = client.upload(arrays, meta)
        params: dict = {"rep_delay_s": request.rep_delay_s}
        if request.seed is not None:
            params["seed"] = int(request.seed)
        run_id = client.run(program_id, request.shots, params=params, key=request.key)
        _, arrays = client.wait(run_id, timeout_s=request.timeout_s, cancel=cancel)
        if "iq" not in arrays:
            raise InstrumentCommandError("controller returned no 'iq' array",
                                         instrument=client.endpoint, command="fetch")
        return arrays["iq"]

    def close(self) -> None:
        """Close every session (idempotent); errors while closing are logged, not raised."""
        for group in (self._controllers, self._los, self._currents):
            while group:
                name, session = group.popitem()
                try:
                    session.close()
                except Exception:
                    log.exception("closing %s failed", name)


class HardwareQueue(Protocol):
    """Where jobs send work that needs the hardware. FIFO; one job touches the rack at a time.

    The work is plain data (programs and run requests), so the queue can live in another
    process (a device server) without the jobs changing.
    """

    def submit(self, job_id: str, work: list[tuple[PulseProgram, RunRequest]]) -> Future:
        """Queue ``work``; the Future resolves to one IQ array (shots x acquisitions) per
        program, or to the exception that stopped it."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or ask a running one to abort; True if it will not complete."""
        ...

    def describe(self, timeout_s: float) -> dict:
        """What the hardware says about itself: controller capabilities, instrument identities."""
        ...

    def close(self) -> None:
        """Accept nothing new; cancel what is queued; release the hardware."""
        ...


class LocalHardwareQueue:
    """A ``HardwareQueue`` in this process: one worker thread that owns a ``RackConnection``."""

    def __init__(self, rack: RackConnection) -> None:
        self.rack = rack
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labqpu-hw")
        self._jobs: dict[str, tuple[Future, threading.Event]] = {}
        self._lock = threading.Lock()

    def submit(self, job_id: str, work: list[tuple[PulseProgram, RunRequest]]) -> Future:
        """Queue ``work``; it runs on the worker thread with its own cancel event."""
        cancel = threading.Event()
        future = self._pool.submit(self._run, work, cancel)
        with self._lock:
            self._jobs[job_id] = (future, cancel)
        future.add_done_callback(lambda _f: self._forget(job_id))
        return future

    def _run(self, work: list[tuple[PulseProgram, RunRequest]],
             cancel: threading.Event) -> list[np.ndarray]:
        out = []
        for program, request in work:
            if cancel.is_set():
                raise JobCancelledError("cancelled before it finished")
            out.append(self.rack.execute(program, request, cancel))
        return out

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job outright; ask a running job's controller run to abort."""
        with self._lock:
            entry = self._jobs.get(job_id)
        if entry is None:
            return False
        future, cancel = entry
        cancel.set()
        return future.cancel() or future.running()

    def describe(self, timeout_s: float) -> dict:
        """Ask every controller and instrument who it is, on the worker (in queue order)."""
        return self._pool.submit(self.rack.describe).result(timeout=timeout_s)

    def close(self) -> None:
        """Cancel queued work, wait for the running task, close the rack's sessions."""
        with self._lock:
            entries = list(self._jobs.values())
        for future, cancel in entries:
            cancel.set()
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.rack.close()
