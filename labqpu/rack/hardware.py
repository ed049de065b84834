"""The hardware path: configure VISA sources, then upload and run on the controller.

``RackConnection`` owns every driver session of one rack. ``HardwareQueue``
(``labqpu.rack.hardware_queue``) is the seam the jobs talk to: the local one is a single
worker thread that owns the rack; a device server can later stand behind the same interface
without ``LabJob`` changing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyvisa
import zmq

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import ERR_QUEUE_FULL, ERR_UNKNOWN_PROGRAM, PROTOCOL_VERSION
from labqpu.drivers.scpi import CurrentSource, SignalGenerator
from labqpu.errors import (
    InstrumentCommandError,
    InstrumentError,
    InstrumentTimeoutError,
    JobCancelledError,
    ProtocolError,
)
from labqpu.pulse.program import PulseProgram
from labqpu.pulse.split import ControllerPart, split_program
from labqpu.rack import settings
from labqpu.rack.aborts import abort_runs, tell
from labqpu.rack.config import LabConfig
from labqpu.rack.lock import RackLock

log = logging.getLogger(__name__)

#: What a job cancelled before its work ended raises (``JobCancelledError``), when the work
#: itself said nothing more (a cancelled synchronised run says what became of its parts).
CANCELLED = "cancelled before it finished"
#: How long an upload the controller refuses with ``QueueFull`` is retried (s).
UPLOAD_QUEUE_WAIT_S = 10.0
#: Program ids a connection remembers per controller, to run a program again without
#: uploading it (the reference controller holds 64, docs/protocol.md).
HELD_PROGRAMS = 64


@dataclass(frozen=True)
class RunRequest:
    """How to run one program: shots (per sweep point), seed (simulator only), repetition
    delay (s), and raw traces: ``traces`` None, "single" or "avg" (averaged over shots on the
    controller), with ``trace_decimation`` samples per point (None: the controller's
    default); ``param_sets`` for a controller-bound sweep."""

    shots: int
    seed: int | None
    rep_delay_s: float
    timeout_s: float
    key: str
    traces: str | None = None
    trace_decimation: int | None = None
    #: A controller-bound sweep: one row of the program's parameter table per point.
    param_sets: tuple[tuple[float, ...], ...] | None = None
    #: Work on the run's results, ``digest(iq, traces)``, done while the read-back after the
    #: run travels; what it returns is the record's ``digest`` (None if it raised: whoever
    #: reads the record then does that work again and meets the error there).
    digest: Callable[[np.ndarray, np.ndarray | None], object] | None = None


@dataclass(frozen=True)
class RunRecord:
    """What one program's run returned: IQ points and where they came from.

    Attributes:
        iq: shots x acquisitions, complex64.
        traces: when asked for, complex64 (shots, acquisitions, points) or (1, acquisitions,
            points) averaged; else None.
        trace_decimation: samples per trace point (None without traces).
        digest: what the request's ``digest`` returned (None without one, or if it raised).
        provenance: the reproducibility bundle: program and waveform hashes (SHA-256), the
            controller's identity and protocol version, and every instrument setting read
            back (with the instrument's identity) before and after the run.
    """

    iq: np.ndarray
    provenance: dict
    traces: np.ndarray | None = None
    trace_decimation: int | None = None
    digest: object = None


def _digest(request: RunRequest, iq: np.ndarray, traces: np.ndarray | None) -> object:
    """``request.digest(iq, traces)``, or None without one or when it raises (the error is
    met again, and reported, where the record is read)."""
    if request.digest is None:
        return None
    try:
        return request.digest(iq, traces)
    except (ValueError, KeyError):  # bad results: the reader redoes the work and reports it
        log.debug("a run's digest failed; it is left to the reader", exc_info=True)
    except Exception:  # a fault of the digest itself: the reader still gets the results
        log.warning("a run's digest raised an unexpected error; the results are built "
                    "without it", exc_info=True)
    return None


def _upload(client: ControllerClient, arrays: dict[str, np.ndarray], meta: dict,
            cancel: threading.Event) -> str:
    """Upload a program; an upload refused with ``QueueFull`` (the controller's validation
    queue is full, of another client's uploads perhaps) is sent again after a pause (5 ms,
    doubling to 0.25 s) for at most :data:`UPLOAD_QUEUE_WAIT_S` s before the error stands,
    or until ``cancel`` is set (``JobCancelledError``)."""
    deadline = time.monotonic() + UPLOAD_QUEUE_WAIT_S
    pause = 0.005
    while True:
        try:
            return client.upload(arrays, meta)
        except InstrumentCommandError as exc:
            left = deadline - time.monotonic()
            if exc.remote_type != ERR_QUEUE_FULL or left <= 0:
                raise
        log.info("%s: upload queue full; uploading again in %.3f s", client.label, pause)
        if cancel.wait(min(pause, left)):
            raise JobCancelledError(CANCELLED)
        pause = min(2 * pause, 0.25)


class RackConnection:
    """Driver sessions of one rack, opened on first use and closed by :meth:`close` (a closed
    connection opens its sessions again on next use).

    ``peer_failure`` (optional) says why the controllers can no longer answer (the embedded
    simulator's process exited), or None; the controller clients ask it while they wait for a
    reply, so a job on a dead simulator fails at once (``ControllerClient``). ``lock``
    (optional) is held from each run's settings to its read-back after the run, so that
    another labqpu process's job on the same rack does not change them in between
    (``labqpu.rack.lock``).

    Not thread-safe by itself: exactly one worker (the hardware queue) uses it.
    """

    def __init__(self, config: LabConfig,
                 peer_failure: Callable[[], str | None] | None = None,
                 lock: RackLock | None = None) -> None:
        self.config = config
        self._peer_failure = peer_failure
        self._lock = lock
        self._los: dict[str, SignalGenerator] = {}
        self._currents: dict[str, CurrentSource] = {}
        self._controllers: dict[str, ControllerClient] = {}
        self._capabilities: dict[str, dict] = {}
        self._hellos: dict[str, dict] = {}
        #: Per controller: program content hash -> the id its upload returned, most recently
        #: run last (at most HELD_PROGRAMS; :meth:`_start`).
        self._held: dict[str, OrderedDict[str, str]] = {}
        #: Every instrument setting (``settings.wanted``) as the last read-back found it in
        #: place; emptied when a read-back disagrees or fails (:meth:`_read_and_start`).
        self._confirmed: dict[tuple, tuple] = {}
        #: Per controller, the session and keys of runs whose aborts were not confirmed when
        #: its client was closed: the next client goes on in that session and aborts them.
        self._unconfirmed: dict[str, tuple[str, list[str]]] = {}

    def controller(self, name: str, cancel: threading.Event | None = None) -> ControllerClient:
        """The (connected, version-checked) client of controller ``name``; ``cancel`` set
        while its first ``hello`` is awaited ends the wait (``JobCancelledError``)."""
        if name not in self._controllers:
            spec = self.config.controller(name)
            session, keys = self._unconfirmed.pop(name, (None, []))
            client = ControllerClient(spec.endpoint, timeout_s=spec.timeout_s,
                                      peer_failure=self._peer_failure, name=name,
                                      session=session, spin_s=spec.reply_spin_s)
            client.unconfirmed_keys.extend(keys)
            try:
                try:
                    hello = client.hello(cancel=cancel)
                except InstrumentTimeoutError as exc:
                    hint = self.simulator_hint()
                    raise InstrumentTimeoutError(
                        f"{exc.detail}: is controller {name} on, and at this address?"
                        + (f" ({hint})" if hint else ""),
                        instrument=exc.instrument, command=exc.command) from exc
                if not isinstance(hello.get("capabilities"), dict):
                    raise ProtocolError("hello reply carries no capabilities",
                                        instrument=client.label, command="hello")
                self._capabilities[name] = hello["capabilities"]
                self._hellos[name] = hello
            except BaseException:
                if session is not None:
                    self._unconfirmed[name] = (session, keys)
                client.close()
                raise
            self._controllers[name] = client
            client.abort_unconfirmed()  # a frozen controller's run that arms once it thaws
        return self._controllers[name]

    def simulator_hint(self) -> str:
        """For a rack from a wiring file that this process does not simulate itself: what
        serves it when it is simulated (``labqpu sim FILE``), for a message about a controller
        that does not answer; else "" (the embedded simulator, watched by ``peer_failure``)."""
        if self.config.path is None or self._peer_failure is not None:
            return ""
        return f"a simulated rack: `labqpu sim {self.config.path}` serves it"

    def capabilities(self, name: str, cancel: threading.Event | None = None) -> dict:
        """What controller ``name`` said about itself in ``hello`` (``cancel``: as
        :meth:`controller`)."""
        self.controller(name, cancel)
        return self._capabilities[name]

    def signal_generator(self, name: str) -> SignalGenerator:
        """The driver session of LO source ``name``."""
        if name not in self._los:
            spec = self.config.instrument(name)
            self._los[name] = SignalGenerator(
                spec.resource, timeout_s=spec.timeout_s,
                min_frequency_hz=spec.frequency_range_hz[0],
                max_frequency_hz=spec.frequency_range_hz[1],
                min_power_dbm=spec.power_range_dbm[0], max_power_dbm=spec.power_range_dbm[1],
                name=name)
        return self._los[name]

    def current_source(self, name: str) -> CurrentSource:
        """The driver session of current source ``name``."""
        if name not in self._currents:
            spec = self.config.instrument(name)
            self._currents[name] = CurrentSource(spec.resource, channels=spec.channels,
                                                 max_current_a=spec.max_current_a,
                                                 timeout_s=spec.timeout_s, name=name)
        return self._currents[name]

    def describe(self, cancel: threading.Event | None = None) -> dict:
        """Controller capabilities (from ``hello``) and ``*IDN?`` of every VISA instrument
        (``cancel``: as :meth:`controller`)."""
        out: dict = {"controllers": {}, "instruments": {}}
        for ctrl in self.config.controllers:
            out["controllers"][ctrl.name] = {"endpoint": ctrl.endpoint,
                                             "capabilities": self.capabilities(ctrl.name, cancel)}
        for inst in self.config.instruments:
            session = (self.signal_generator(inst.name) if inst.kind == "signal_generator"
                       else self.current_source(inst.name))
            out["instruments"][inst.name] = {"resource": inst.resource,
                                             "identity": session.identity}
        return out

    def apply_settings(self, program: PulseProgram) -> list[dict]:
        """Bring every LO and flux-bias current ``program`` assumes to its setting, sending
        only what differs, and verify it by reading back (``labqpu.rack.settings``); returns
        the readback."""
        return settings.prepare(self, program)

    def execute(self, program: PulseProgram, request: RunRequest,
                cancel: threading.Event) -> RunRecord:
        """Run ``program``: read back (and set) its settings, upload it unless the controller
        holds it, run it and fetch its results, then read its settings back again.

        A program on the qubits of several controllers is split (``labqpu.pulse.split``):
        each controller gets its part, the followers are armed first and the leader's run
        triggers them all (docs/protocol.md, synchronised runs); the results are put back
        into the program's acquisition order.

        Returns the IQ points (shots x acquisitions, complex64), the run's provenance and what
        ``request.digest`` made of the results while the read-back after the run travelled.
        Raises ``InstrumentSettingChangedError`` (an ``InstrumentCommandError``) if an
        instrument setting changed during the run.
        """
        parts = split_program(program)
        if len(parts) > 1:
            for part in parts:
                caps = self.capabilities(part.controller, cancel)
                if "sync" not in caps:
                    raise InstrumentCommandError(
                        f"program {program.header.get('name', '')!r} plays on controllers "
                        f"{[p.controller for p in parts]}, but {part.controller} does not "
                        "announce synchronised runs (no 'sync' capability in its hello)",
                        instrument=self.controller(part.controller).label, command="hello")
        wanted = settings.wanted(program)
        with (self._lock.held(request.timeout_s, cancel) if self._lock
              else contextlib.nullcontext(False)) as others_set:
            if others_set:  # another process's job set the rack since this one's last
                self._confirmed.clear()
            before, started = self._read_and_start(program, parts, request, wanted, cancel)
            return self._finish(program, parts, request, cancel, wanted, before, started)

    def _finish(self, program: PulseProgram, parts: list[ControllerPart], request: RunRequest,
                cancel: threading.Event, wanted: dict[tuple, tuple], before: list[dict],
                started: list[tuple]) -> RunRecord:
        """Wait for the ``started`` runs (those whose results came with their run's reply are
        not waited for), then read the settings (``wanted``) back again while merging the
        results and making the request's digest; returns the record. ``before``: the
        read-back before the runs.

        Raises:
            InstrumentSettingChangedError: a setting changed during the run.
        """
        waited: list[tuple[dict, dict[str, np.ndarray]]] = []  # (result, arrays) per part
        order = started[::-1]  # the leader first: its end is the followers' end too
        held_s = self._part_hold_s(parts, request)  # spent on the run's held reply
        try:
            for client, run_id, _, ended in order:
                waited.append(ended or client.wait(run_id, timeout_s=request.timeout_s,
                                                   cancel=cancel, waited_s=held_s))
        except BaseException as exc:
            # The failed wait has aborted its own run; stop the others.
            tell(exc, abort_runs(order[len(waited) + 1:], cancel))
            raise
        waited = waited[:1] + waited[1:][::-1]  # back to the order of ``parts``
        ended = [result for result, _ in waited]
        outputs = [arrays for _, arrays in waited]
        try:
            with settings.verifying(self, program) as verified:
                # Work on the results while the read-back's replies travel.
                iq, traces, decimation = self._merge(program, parts, outputs, request)
                digest = _digest(request, iq, traces)
                provenance = self._provenance(program, parts, started, before, ended)
                provenance["instruments_after"] = verified()
        except BaseException:
            self._confirmed.clear()
            raise
        self._confirmed.update(wanted)
        return RunRecord(iq, provenance, traces=traces, trace_decimation=decimation,
                         digest=digest)

    def _provenance(self, program: PulseProgram, parts: list[ControllerPart],
                    started: list[tuple], before: list[dict], ended: list[dict]) -> dict:
        """The run's reproducibility bundle; its ``instruments_after`` is filled in by the
        caller once the read-back after the run has been checked. ``ended``: each part's
        final ``fetch`` result, whose ``elapsed_s`` (the controller's time from accepting the
        run to its end, s) each controller's entry carries."""
        controllers = []
        for part, (client, run_id, *_), result in zip(
                parts, [started[-1], *started[:-1]], ended, strict=True):
            hello = self._hellos[part.controller]
            elapsed = result.get("elapsed_s")
            if isinstance(elapsed, bool) or not isinstance(elapsed, int | float):
                elapsed = None  # a controller that does not say
            controllers.append({"name": part.controller, "endpoint": client.endpoint,
                                "server": hello.get("server"), "firmware": hello.get("firmware"),
                                "protocol_version": PROTOCOL_VERSION, "run_id": run_id,
                                "elapsed_s": None if elapsed is None else float(elapsed)})
        provenance = {
            "program_hash": program.content_hash,
            "waveform_hashes": list(program.waveform_hashes),
            "controller": controllers[0],
            "instruments_before": before,
            "instruments_after": None,
        }
        if len(parts) > 1:
            provenance["controllers"] = controllers
            provenance["sync_group"] = started[0][2]
        return provenance

    def _read_and_start(self, program: PulseProgram, parts: list[ControllerPart],
                        request: RunRequest, wanted: dict[tuple, tuple],
                        cancel: threading.Event) -> tuple[list[dict], list[tuple]]:
        """Read back the settings ``program`` relies on (``wanted``: ``settings.wanted``) and
        start its run; returns the readback and the started runs ((client, run id, sync
        group, results or None) per part, the leader last: ``_start_parts``).

        When this connection last read every one of those settings in place, the read-back's
        queries go out first and their replies are read once the run has started (one round
        trip less per job), or ended, for a run whose reply was held to its end. If a setting
        turns out changed (another process), that run is aborted, or its results discarded,
        before any result is taken, and the job goes the careful way: the settings are read,
        what differs is sent and read back, and only then is the run started, under a new
        request key (the first run keeps its own).
        """
        if all(self._confirmed.get(k) == v for k, v in wanted.items()):
            started: list[tuple] = []
            try:
                with settings.reading(self, program) as in_place:
                    started = self._start_parts(parts, request, request.key, cancel)
                    before = in_place()
            except BaseException as exc:
                self._confirmed.clear()
                tell(exc, abort_runs([run for run in started if run[3] is None], cancel))
                raise
            if before is not None:
                return before, started
            self._confirmed.clear()
            outcomes = [client.abort_quietly(run_id) if ended is None else
                        f"run {run_id} had ended: its results are discarded"
                        for client, run_id, _, ended in started]
            log.warning("a setting of program %s changed since the last run (another process?);"
                        " %s; setting it again and starting anew", program.display_name,
                        "; ".join(outcomes))
            key = f"{request.key}/again"
        else:
            key = request.key
        if self._lock:
            self._lock.mark_set()
        try:
            before = self.apply_settings(program)
        except BaseException:
            self._confirmed.clear()
            raise
        self._confirmed.update(wanted)
        return before, self._start_parts(parts, request, key, cancel)

    def _start_parts(self, parts: list[ControllerPart], request: RunRequest, key: str,
                     cancel: threading.Event) -> list[tuple]:
        """Start every part's run under request key ``key``, the followers armed first and the
        leader last; returns (client, run id, sync group, its results or None) per part in
        that order. A program on one controller whose ``hello`` states ``run_wait`` gets the
        run's reply held until the run ends (``_part_hold_s``), so a short run's results come
        with it, without a ``fetch``. If one part fails to start, the others are aborted."""
        group = uuid.uuid4().hex
        started: list[tuple] = []
        try:
            for i in [*range(1, len(parts)), 0]:  # followers armed first, the leader last
                part = parts[i]
                client = self.controller(part.controller, cancel)
                params = self._run_params(request)
                if len(parts) > 1:
                    params["sync"] = (
                        {"group": group, "role": "leader",
                         "followers": [p.controller for p in parts[1:]]} if i == 0 else
                        {"group": group, "role": "follower", "leader": parts[0].controller})
                # The controller stops the run at the job's limit by itself, so a run whose
                # abort is lost (the transport failed) cannot hold the controller beyond it.
                run_id, ended = self._start(part.controller, part.program, request, params,
                                            key, cancel, self._part_hold_s(parts, request))
                started.append((client, run_id, group, ended))
        except BaseException as exc:  # armed followers would wait for their limit
            tell(exc, abort_runs(started, cancel))
            raise
        return started

    def _part_hold_s(self, parts: list[ControllerPart], request: RunRequest) -> float:
        """The hold (s) asked for a program's run: ``_hold_s`` of its controller, within the
        job's ``timeout_s``, for a program on one controller; 0 for a synchronised run."""
        if len(parts) != 1:
            return 0.0
        return min(self._hold_s(parts[0].controller), request.timeout_s)

    @property
    def waiting_for_rack(self) -> bool:
        """True while a job waits for the rack lock (another process's jobs use the rack)."""
        return self._lock is not None and self._lock.waiting

    def _hold_s(self, name: str) -> float:
        """How long (s) controller ``name`` is asked to hold a run's reply: the client's
        ``max_hold_s``, within the ``run_wait.max_wait_s`` its ``hello`` states; 0 (no hold)
        for a controller that states no ``run_wait`` or no positive number there."""
        wait = self.capabilities(name).get("run_wait")
        limit = wait.get("max_wait_s") if isinstance(wait, dict) else None
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            return 0.0
        try:
            limit = float(limit)
        except OverflowError:  # an integer beyond any float: no bound of its own
            limit = math.inf
        if not limit > 0:  # also NaN
            return 0.0
        return min(self.controller(name).max_hold_s, limit)

    def _start(self, name: str, program: PulseProgram, request: RunRequest, params: dict,
               key: str, cancel: threading.Event, hold_s: float = 0.0
               ) -> tuple[str, tuple[dict, dict[str, np.ndarray]] | None]:
        """Queue a run of ``program`` on controller ``name``; returns the run id and, with
        ``hold_s`` > 0, its (result, arrays) if it ended within ``hold_s`` (s, the reply held,
        ``ControllerClient.run_held``), else None.

        A controller whose ``hello`` states ``program_ids: "content"`` (an id is derived from
        the program's content and never names other content, across restarts too) gets the
        program uploaded only if this connection has not uploaded the same content to it before
        (docs/protocol.md, ``upload``); any other controller gets it before every run. A
        controller that no longer holds it (evicted, restarted) refuses the run with
        ``UnknownProgram``, which records nothing; the program is then uploaded and the run
        sent again with the same key."""
        client = self.controller(name)

        def run(program_id: str) -> tuple[str, tuple[dict, dict[str, np.ndarray]] | None]:
            if hold_s > 0:
                return client.run_held(program_id, request.shots, wait_s=hold_s, params=params,
                                       key=key, time_limit_s=request.timeout_s, cancel=cancel)
            return client.run(program_id, request.shots, params=params, key=key,
                              time_limit_s=request.timeout_s, cancel=cancel), None

        held = self._held.setdefault(name, OrderedDict())
        digest = program.content_hash
        stable = self.capabilities(name).get("program_ids") == "content"
        program_id = held.get(digest) if stable else None
        if program_id is not None:
            try:
                outcome = run(program_id)
                held.move_to_end(digest)
                return outcome
            except InstrumentCommandError as exc:
                if exc.remote_type != ERR_UNKNOWN_PROGRAM:
                    raise
                del held[digest]
                log.info("%s no longer holds program %s: uploading it again", name, program_id)
        arrays, meta = program.to_wire()
        program_id = _upload(client, arrays, meta, cancel)
        if stable:
            held[digest] = program_id
            while len(held) > HELD_PROGRAMS:
                held.popitem(last=False)
        return run(program_id)

    @staticmethod
    def _run_params(request: RunRequest) -> dict:
        params: dict = {"rep_delay_s": request.rep_delay_s}
        if request.seed is not None:
            params["seed"] = int(request.seed)
        if request.param_sets is not None:
            params["param_sets"] = [list(row) for row in request.param_sets]
        if request.traces is not None:
            params["traces"] = request.traces
            if request.trace_decimation is not None:
                params["trace_decimation"] = int(request.trace_decimation)
        return params

    @staticmethod
    def _merge(program: PulseProgram, parts: list, outputs: list[dict[str, np.ndarray]],
               request: RunRequest) -> tuple[np.ndarray, np.ndarray | None, int | None]:
        """(iq, traces, decimation) of the whole program from its parts' results."""
        for part, arrays in zip(parts, outputs, strict=True):
            if "iq" not in arrays:
                raise InstrumentCommandError("controller returned no 'iq' array",
                                             instrument=part.controller, command="fetch")
            if request.traces is not None and (
                    "traces" not in arrays or "trace_decimation" not in arrays):
                raise InstrumentCommandError("controller returned no 'traces' array",
                                             instrument=part.controller, command="fetch")
        decimation = (None if request.traces is None
                      else int(outputs[0]["trace_decimation"][0]))
        if len(parts) == 1:  # the program's own columns (the backend checks the shape)
            return outputs[0]["iq"], outputs[0].get("traces"), decimation
        shots, n_acq = outputs[0]["iq"].shape[0], program.acq_port.shape[0]
        iq = np.zeros((shots, n_acq), dtype=np.complex64)
        for part, arrays in zip(parts, outputs, strict=True):
            if arrays["iq"].shape != (shots, part.acquisitions.shape[0]):
                raise InstrumentCommandError(
                    f"controller returned 'iq' of shape {arrays['iq'].shape}, expected "
                    f"{(shots, part.acquisitions.shape[0])}",
                    instrument=part.controller, command="fetch")
            iq[:, part.acquisitions] = arrays["iq"]
        if request.traces is None:
            return iq, None, None
        points = max(arrays["traces"].shape[2] for arrays in outputs)
        traces = np.zeros((outputs[0]["traces"].shape[0], n_acq, points), dtype=np.complex64)
        for part, arrays in zip(parts, outputs, strict=True):
            traces[:, part.acquisitions, :arrays["traces"].shape[2]] = arrays["traces"]
        return iq, traces, decimation

    def close(self) -> None:
        """Close every session (idempotent); errors while closing are logged, not raised, so
        every session gets its turn. pyvisa's resource manager is process-wide (one per
        backend library) and stays open for other providers."""
        self._held.clear()
        self._confirmed.clear()
        for name, client in self._controllers.items():
            if client.unconfirmed_keys and client.session is not None:
                self._unconfirmed[name] = (client.session, list(client.unconfirmed_keys))
        if self._lock:
            self._lock.close()
        for group in (self._controllers, self._los, self._currents):
            while group:
                name, session = group.popitem()
                try:
                    session.close()
                except (InstrumentError, OSError, zmq.ZMQError, pyvisa.Error) as exc:
                    log.warning("closing %s failed: %s", name, exc)
