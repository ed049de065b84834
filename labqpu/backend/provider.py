"""``LabProvider``: the entry point. Reads the wiring, opens the calibration store, and, with no
argument, starts the embedded firmware simulator of the default device in its own process."""

from __future__ import annotations

import json
import logging
import os
import selectors
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from qiskit.providers import QiskitBackendNotFoundError

from labqpu.backend.backend import LabBackend
from labqpu.errors import (
    BackendConfigurationError,
    HardwareUnavailableError,
    InvalidSnapshotError,
)
from labqpu.rack.config import LabConfig, load_config, resolve_config_path, tcp_port
from labqpu.rack.hardware import RackConnection
from labqpu.rack.hardware_queue import LocalHardwareQueue
from labqpu.rack.limits import check_against_wiring, wiring_limits
from labqpu.rack.lock import RackLock, rack_lock_path
from labqpu.store import CalibrationStore

log = logging.getLogger(__name__)

#: Bound on the simulator's start-up (s): first start compiles its numba kernels.
SIMULATOR_START_TIMEOUT_S = 180.0
SIMULATOR_STOP_TIMEOUT_S = 10.0
#: An embedded simulator that exited is started again for the next job, at most this many
#: times within ``RESTART_WINDOW_S`` (s); one that keeps exiting is left down.
MAX_RESTARTS = 3
RESTART_WINDOW_S = 600.0
#: After a start that failed (its port taken, say), the next try waits this long (s); failed
#: starts do not count against ``MAX_RESTARTS``.
RETRY_START_AFTER_S = 5.0


class SimulatorProcess:
    """The firmware simulator running as a child process, stopped by :meth:`stop`; one that
    exited is started again on the same endpoints by :meth:`revive`."""

    def __init__(self, lab_toml: Path, *, timeout_s: float = SIMULATOR_START_TIMEOUT_S) -> None:
        self._lab_toml = lab_toml
        #: ``failure()`` is asked from the hardware worker while ``stop()`` may close the log.
        self._log_lock = threading.Lock()
        #: Starting, reviving and stopping the process, from the worker and from ``close()``.
        self._lock = threading.RLock()
        self._stopped = False
        self._restarts: deque[float] = deque()
        #: After a start that failed: why it went down first, the whole story, and when.
        self._down: tuple[str, str, float] | None = None
        self._start({}, timeout_s)

    def _start(self, ports: dict[str, int], timeout_s: float) -> None:
        # Its stderr goes to an unlinked temporary file and its endpoints come back on its
        # stdout, so nothing is left on disk however this process ends (even by SIGKILL).
        self._log = tempfile.TemporaryFile(prefix="labqpu-sim-")  # noqa: SIM115
        self.process = subprocess.Popen(  # -P: a numpy.py in the cwd does not stand in
            [sys.executable, "-P", "-m", "labqpu.firmware_sim", str(self._lab_toml),
             "--parent-pid", str(os.getpid()),
             *(["--ports", json.dumps(ports)] if ports else [])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
        )
        try:
            self.endpoints = self._wait_for(timeout_s)
        except BaseException:
            self._terminate()
            raise

    def failure(self) -> str | None:
        """Why the simulator cannot serve (it exited), or None while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        if self._down is not None:
            return self._down[1]
        return (f"the firmware simulator (pid {self.process.pid}) exited with code {code}: "
                f"{self._stderr() or 'no message'}")

    def revive(self, reason: str) -> str | None:
        """Start the simulator again after it exited (``reason``: :meth:`failure`'s words),
        listening where its clients know it; None once it serves again, else ``reason`` and
        why it was not started. At most :data:`MAX_RESTARTS` times within
        :data:`RESTART_WINDOW_S`: a simulator that keeps exiting is left down until the first
        of those restarts is that old (the message says how long). A start that
        fails is tried again after :data:`RETRY_START_AFTER_S`, not sooner."""
        with self._lock:
            if self._stopped:
                return reason
            if self.process.poll() is None:
                return None
            now = time.monotonic()
            if self._down is not None and now - self._down[2] < RETRY_START_AFTER_S:
                return self._down[1]
            while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
                self._restarts.popleft()
            if len(self._restarts) >= MAX_RESTARTS:
                wait_s = RESTART_WINDOW_S - (now - self._restarts[0])
                return (f"{reason} (it exited {MAX_RESTARTS + 1} times within "
                        f"{RESTART_WINDOW_S:.0f} s, so it is not started again for another "
                        f"{wait_s:.0f} s, when the first of those exits is "
                        f"{RESTART_WINDOW_S:.0f} s old; or open a new provider)")
            cause = self._down[0] if self._down is not None else reason
            known = self.endpoints
            self._close_streams()
            try:
                ports = {name: port for name, address in known.items()
                         if (port := tcp_port(address)) is not None}
                self._start(ports, SIMULATOR_START_TIMEOUT_S)
            except HardwareUnavailableError as exc:
                self._down = (cause, f"{cause} (starting it again failed: {exc}; tried again "
                                     f"{RETRY_START_AFTER_S:.0f} s later)", time.monotonic())
                return self._down[1]
            self._down = None
            self._restarts.append(now)
            if self.endpoints != known:  # cannot happen: it binds the ports it is given
                self.stop()
                return f"{reason} (started again, it announced {self.endpoints}, not {known})"
            log.warning("%s; started it again (pid %d; restart %d within %.0f s)", cause,
                        self.process.pid, len(self._restarts), RESTART_WINDOW_S)
        return None

    @property
    def pid(self) -> int:
        """Process id of the simulator."""
        return self.process.pid

    def _wait_for(self, timeout_s: float) -> dict[str, str]:
        """The endpoints the simulator prints on its stdout once every server listens."""
        deadline = time.monotonic() + timeout_s
        line = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise HardwareUnavailableError(
                        f"the firmware simulator did not come up within {timeout_s} s: "
                        f"{self._stderr()}", instrument="firmware simulator")
                if not selector.select(timeout=min(remaining, 0.5)):
                    continue
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    self.process.wait(timeout=SIMULATOR_STOP_TIMEOUT_S)
                    raise HardwareUnavailableError(
                        f"the firmware simulator exited with code {self.process.returncode}: "
                        f"{self._stderr()}", instrument="firmware simulator")
                line += chunk
        try:
            return json.loads(line)
        except ValueError as exc:
            raise HardwareUnavailableError(
                f"the firmware simulator announced {line[:200]!r}, not its endpoints",
                instrument="firmware simulator") from exc

    def _stderr(self) -> str:
        with self._log_lock:
            if self._log.closed:
                return ""
            self._log.flush()
            self._log.seek(0)
            return self._log.read().decode(errors="replace")[-2000:].strip()

    def stop(self) -> None:
        """Terminate the simulator and wait for it (kill after a bound); idempotent. A stopped
        simulator is not revived."""
        with self._lock:
            self._stopped = True
            self._terminate()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SIMULATOR_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SIMULATOR_STOP_TIMEOUT_S)
        self._close_streams()

    def _close_streams(self) -> None:
        with self._log_lock:
            for stream in (self.process.stdout, self._log):
                if stream is not None and not stream.closed:
                    stream.close()


def seed_store(store: CalibrationStore, config: LabConfig) -> None:
    """Import the wiring file's seed snapshot (``[calibration] seed_snapshot``, beside the file or
    shipped with the package) into an empty store; what `LabProvider` and the `labqpu calibrate`
    store commands do on first use."""
    if store.latest_id() is not None or not config.seed_snapshot:
        return
    candidates = []
    if config.path is not None:
        candidates.append(config.path.parent / config.seed_snapshot)
    candidates.append(Path(str(resources.files("labqpu") / "data" / config.seed_snapshot)))
    for path in candidates:
        if path.is_file():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
                raise BackendConfigurationError(
                    f"seed snapshot {path} ([calibration] seed_snapshot of "
                    f"{config.path or 'the wiring'}) cannot be read as JSON: {exc}",
                    path=config.path or "", field="calibration.seed_snapshot") from exc
            try:
                seeded = store.import_json(document, if_empty=True)
            except InvalidSnapshotError as exc:
                raise BackendConfigurationError(
                    f"seed snapshot {path} ([calibration] seed_snapshot of "
                    f"{config.path or 'the wiring'}) is not a calibration snapshot this "
                    f"store takes: {exc}", path=config.path or "",
                    field="calibration.seed_snapshot") from exc
            if seeded is not None:  # None: another process seeded the store first
                log.info("seeded calibration store %s from %s", config.store_path, path)
            return
    log.warning("seed snapshot %r not found (looked in %s): the store stays empty until a "
                "calibration commits one", config.seed_snapshot, [str(c) for c in candidates])


def _check_store_device(store: CalibrationStore, config: LabConfig) -> None:
    """Refuse a store that holds another device's calibrations (a store path copied from
    another rack's wiring file): its snapshots would drive this device's pulses."""
    if store.latest_id() is None or store.latest_id(config.device_name) is not None:
        return
    raise BackendConfigurationError(
        f"calibration store {config.store_path} ([calibration] store of "
        f"{config.path or 'the wiring'}) holds calibrations of device "
        f"{store.latest().device!r}, but the wiring file describes device "
        f"{config.device_name!r} ([device] name): point [calibration] store at a store of "
        f"{config.device_name!r} or at a new file", path=config.path or "",
        field="calibration.store")


def _warn_outside_the_wiring(backend: LabBackend) -> None:
    """Warn when the snapshot the backend starts on asks what the wiring file's instruments
    cannot be set to (limits narrowed since it was committed, or a commit through a store
    opened without the wiring's checks): jobs fail at the instrument (a job sets every
    qubit's flux bias, so any job fails on a flux bias out of range)."""
    snapshot = backend.snapshot
    if snapshot is None:
        return
    try:
        check_against_wiring(snapshot.to_document(), backend.config)
    except InvalidSnapshotError as exc:
        log.warning("backend %s: calibration snapshot %s is outside the limits of %s "
                    "(narrowed since it was committed, or committed through a store opened "
                    "without them): %s; jobs that set that instrument fail until a "
                    "calibration (or a rollback) commits a snapshot within them", backend.name,
                    snapshot.snapshot_id, backend.config.path or "the wiring file",
                    getattr(exc, "message", None) or exc)


def _close_all(resources_: list) -> None:
    """Call every closer, last first. A Ctrl-C (or ``SystemExit``) in one of them does not
    skip the rest: it is raised again once all have run, so that an interrupted ``close()``
    still stops the simulator and closes the store."""
    interrupted: BaseException | None = None
    while resources_:
        item = resources_.pop()
        try:
            item()
        except Exception:
            log.exception("shutting down labqpu provider")
        except BaseException as exc:
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


class LabProvider:
    """Backends of one lab rack.

    ``LabProvider()`` starts the embedded firmware simulator of the default device ("lab5")
    and connects to it, ``LabProvider("lab10")`` that of another built-in device
    (``labqpu.rack.config.BUILTIN_DEVICES``); ``LabProvider("lab.toml")`` connects to the
    rack the file describes. ``simulator=True`` starts the simulator of any wiring file.
    Close it (or use it as a context manager) to stop the simulator and close every
    instrument session; anything still open is closed at interpreter exit.
    """

    def __init__(self, config: str | os.PathLike | None = None, *,
                 simulator: bool | None = None) -> None:
        if simulator is not None and not isinstance(simulator, bool):
            raise BackendConfigurationError(
                f"simulator must be True, False or None (the default: a built-in device's "
                f"simulator), got {simulator!r}")
        path, builtin = resolve_config_path(config)
        self.config = load_config(path)
        start_sim = builtin if simulator is None else simulator
        picked = self.config.unassigned_addresses()  # ports a simulator started here picks
        unassigned = [] if start_sim else picked
        if unassigned:
            raise BackendConfigurationError(
                f"{path}: {', '.join(unassigned)} listen on port 0, which only the embedded "
                f"simulator fills in: start it with LabProvider({str(config or path)!r}, "
                "simulator=True) (on the command line: --simulator), or give the real "
                "addresses", path=path)
        #: The ``labqpu`` command-line options that open this rack as this provider does
        #: ("" for the default device); :meth:`command` puts them in a suggested command.
        self.cli_options = ("" if config is None else f"--config {shlex.quote(str(config))}"
                            + (" --simulator" if start_sim and not builtin else ""))
        self._closers: list = []
        self._closed = False
        self.simulator: SimulatorProcess | None = None
        try:
            if start_sim:
                self.simulator = SimulatorProcess(path)
                self._closers.append(self.simulator.stop)
                self.config = self.config.with_endpoints(self.simulator.endpoints)
            self.store = CalibrationStore(self.config.store_path,
                                          validators=(wiring_limits(self.config),))
            self._closers.append(self.store.close)
            seed_store(self.store, self.config)
            _check_store_device(self.store, self.config)
            health = self.simulator.failure if self.simulator else None
            # a rack others can reach is shared with their jobs: not a simulator started here
            # on ports it picked (others do not know them)
            private = self.simulator is not None and len(picked) == (
                len(self.config.controllers) + len(self.config.instruments))
            lock = None if private else RackLock(rack_lock_path(self.config))
            self._queue = LocalHardwareQueue(
                RackConnection(self.config, peer_failure=health, lock=lock), health=health,
                recover=self.simulator.revive if self.simulator else None)
            self._closers.append(self._queue.close)
            self._backends = {self.config.device_name: LabBackend(self, self.config, self.store,
                                                                  self._queue)}
            _warn_outside_the_wiring(self._backends[self.config.device_name])
        except BaseException:
            _close_all(self._closers)
            raise
        self._finalizer = weakref.finalize(self, _close_all, self._closers)
        self._lock = threading.Lock()

    def command(self, words: str) -> str:
        """The ``labqpu`` command ``words`` (e.g. ``"calibrate --all"``) for this rack, with
        the options that open it as this provider does (:attr:`cli_options`)."""
        return " ".join(["labqpu", words, *([self.cli_options] if self.cli_options else [])])

    def backends(self, name: str | None = None, filters: Callable[[LabBackend], bool] | None = None,
                 **kwargs) -> list[LabBackend]:
        """Backends of this rack, optionally filtered.

        ``name`` keeps the backend of that name; ``filters`` is a callable that keeps a backend
        when it returns True (``filters=lambda b: b.num_qubits >= 5``); every other keyword
        keeps backends whose attribute of that name equals the value (``num_qubits=5``). An
        attribute no backend has is an error, not an empty list.
        """
        if filters is not None and not callable(filters):
            raise TypeError(f"filters must be a callable taking a backend, got {filters!r}")
        self._check_open()
        out = []
        for backend in self._backends.values():
            if name is not None and backend.name != name:
                continue
            for key in kwargs:
                if not hasattr(backend, key):
                    raise AttributeError(f"backends(): backend {backend.name!r} has no attribute "
                                         f"{key!r} to filter on")
            if all(getattr(backend, k) == v for k, v in kwargs.items()) and (
                    filters is None or filters(backend)):
                out.append(backend)
        return out

    def backend(self, name: str | None = None) -> LabBackend:
        """The backend called ``name`` (the only one when ``name`` is None)."""
        self._check_open()
        if name is None and len(self._backends) == 1:
            return next(iter(self._backends.values()))
        if name not in self._backends:
            raise QiskitBackendNotFoundError(
                f"no backend named {name!r}; this provider has {sorted(self._backends)}")
        return self._backends[name]

    get_backend = backend

    def close(self) -> None:
        """Stop the simulator (if this provider started it) and close every session."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def _check_open(self) -> None:
        if self._closed:
            raise HardwareUnavailableError(
                f"{self!r} was closed: its simulator and sessions are gone; create a new "
                "LabProvider")

    def __enter__(self) -> LabProvider:
        self._check_open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        sim = f", simulator pid {self.simulator.pid}" if self.simulator else ""
        if self._closed:
            sim += ", closed"
        return f"LabProvider({self.config.device_name!r}{sim})"
