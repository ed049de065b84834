"""Fault injection for tests: make the simulated rack misbehave on purpose, on cue.

Off unless enabled: ``python -m labqpu.firmware_sim LAB_TOML --fault-control`` or a
``[simulator.faults]`` table with ``control = true`` in ``lab.toml``. The simulator then opens
a separate control socket (ZeroMQ REP, bound to 127.0.0.1 only, random port) and announces
it as ``"fault_control"`` next to its endpoints. Nothing on the controller's own socket or on
the SCPI sockets can arm a fault, so normal use never reaches this.

The model:

* A **fault** is armed for a chosen *event* and fires on the ``after + 1``-th matching event,
  then on the following ones, ``count`` times in all; then it disarms itself.
* **Reply faults** match the op of a request the controller answers (``hello``, ``upload``,
  ``run``, ``fetch``, ``status``, ``abort``; ``"*"`` matches any):
  ``drop`` (the reply is never sent), ``delay`` (sent ``delay_s`` later; other clients are
  served meanwhile), ``corrupt`` (``mode="header"`` garbles the JSON header,
  ``mode="array"`` flips bits in the first array frame, which the reply's CRC-32 exposes),
  ``hang`` (the serving thread stops answering anyone for ``duration_s`` before handling the
  request: a wedged controller).
* **Run faults** match a point of a run on the controller's worker (``start``: before the
  pulses play; ``end``: after they played, before the results are recorded):
  ``crash`` (the process exits at once with code ``EXIT_CRASH``), ``stall`` (the run never
  finishes on its own; only an abort or shutdown ends it), ``lo_change`` (an instrument's
  setting changes behind the host's back: ``instrument``, ``setting`` one of
  ``frequency_hz``, ``power_dbm``, ``output_on`` or ``current_a``, and ``value``; at
  ``start`` the run plays with the changed setting).

Every fired fault is logged (``fired()``), so a test can say what it injected.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from labqpu.drivers.protocol import OPS, Frame

__all__ = [
    "EXIT_CRASH",
    "REPLY_FAULTS",
    "RUN_FAULTS",
    "Fault",
    "FaultControl",
    "FaultControlServer",
    "FaultPlan",
    "FaultyExecutor",
    "fault_control_enabled",
]

log = logging.getLogger(__name__)

#: Exit code of a simulator crashed on purpose.
EXIT_CRASH = 75
REPLY_FAULTS = frozenset({"drop", "delay", "corrupt", "hang"})
RUN_FAULTS = frozenset({"crash", "stall", "lo_change"})
RUN_POINTS = frozenset({"start", "end"})
SETTINGS = frozenset({"frequency_hz", "power_dbm", "output_on", "current_a"})
#: Longest delay, hang or stall a fault may ask for (s): every fault ends by itself.
MAX_FAULT_S = 600.0
#: Bound on a control request's reply wait (s).
CONTROL_TIMEOUT_S = 5.0


@dataclass
class Fault:
    """One armed fault; see the module docstring for the kinds and their fields.

    Attributes:
        kind: one of ``REPLY_FAULTS`` or ``RUN_FAULTS``.
        on: the op (reply faults, ``"*"`` for any) or the run point (run faults).
        count: how many matching events it fires on before it disarms.
        after: matching events let through before it first fires.
        delay_s: ``delay``: how late the reply is sent (s).
        duration_s: ``hang``: how long the controller answers nobody (s); ``stall``: bound
            on the stall (s).
        mode: ``corrupt``: ``"header"`` or ``"array"``.
        instrument, setting, value, channel: ``lo_change``: what changes, to what.
        controller: the rack's controller it acts on (its name in the wiring file); "": the
            first.
    """

    kind: str
    on: str
    count: int = 1
    after: int = 0
    delay_s: float = 0.0
    duration_s: float = MAX_FAULT_S
    mode: str = "header"
    instrument: str = ""
    setting: str = "frequency_hz"
    value: float | bool = 0.0
    channel: int = 1
    controller: str = ""
    seen: int = field(default=0, repr=False)

    @classmethod
    def from_json(cls, spec: Any) -> Fault:
        """A fault from its JSON form; ``ValueError`` naming the bad field otherwise."""
        if not isinstance(spec, dict):
            raise ValueError(f"a fault is an object, got {spec!r}")
        known = {name for name in cls.__dataclass_fields__ if name != "seen"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"fault: unknown field(s) {unknown}; known: {sorted(known)}")
        try:
            fault = cls(**spec)
        except TypeError as exc:
            raise ValueError(f"fault: {exc}") from exc
        fault.check()
        return fault

    def check(self) -> None:
        """Raise ``ValueError`` naming the field that makes this fault meaningless."""
        if self.kind in REPLY_FAULTS:
            if self.on != "*" and self.on not in OPS:
                raise ValueError(f"fault {self.kind}: 'on' must be an op {sorted(OPS)} or "
                                 f"'*', got {self.on!r}")
        elif self.kind in RUN_FAULTS:
            if self.on not in RUN_POINTS:
                raise ValueError(f"fault {self.kind}: 'on' must be a run point "
                                 f"{sorted(RUN_POINTS)}, got {self.on!r}")
        else:
            raise ValueError(f"fault: unknown kind {self.kind!r}; known: "
                             f"{sorted(REPLY_FAULTS | RUN_FAULTS)}")
        for name in ("count", "after", "channel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"fault {self.kind}: {name} must be an int >= 0, got {value!r}")
        for name in ("delay_s", "duration_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value <= MAX_FAULT_S:
                raise ValueError(f"fault {self.kind}: {name} must be in 0..{MAX_FAULT_S} s, "
                                 f"got {value!r}")
        if self.kind == "corrupt" and self.mode not in ("header", "array"):
            raise ValueError(f"fault corrupt: mode must be 'header' or 'array', got {self.mode!r}")
        if self.kind == "lo_change":
            if not self.instrument:
                raise ValueError("fault lo_change: name the instrument")
            if self.setting not in SETTINGS:
                raise ValueError(f"fault lo_change: setting must be one of {sorted(SETTINGS)}, "
                                 f"got {self.setting!r}")
            if not isinstance(self.value, bool | int | float) or (
                    not isinstance(self.value, bool) and not math.isfinite(self.value)):
                raise ValueError(f"fault lo_change: value must be a finite number or a bool, "
                                 f"got {self.value!r}")

    def describe(self) -> dict[str, Any]:
        """The fault's JSON form."""
        out = asdict(self)
        out.pop("seen")
        return out


class FaultPlan:
    """The armed faults of one simulated rack; thread-safe.

    The controller's serving thread asks :meth:`take` for reply faults, its worker for run
    faults; the control server arms and lists them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[Fault] = []
        self._fired: list[dict[str, Any]] = []
        #: The rack's controllers, the first first (set by the rack): where faults may act.
        self.controllers: list[str] = []

    def arm(self, fault: Fault) -> None:
        """Add ``fault`` (checked) to the armed ones."""
        fault.check()
        if fault.controller and fault.controller not in self.controllers:
            raise ValueError(f"fault {fault.kind}: no controller {fault.controller!r} in this "
                             f"rack (its controllers: {self.controllers})")
        with self._lock:
            self._armed.append(fault)
        log.warning("fault armed: %s", fault.describe())

    def disarm(self) -> int:
        """Disarm every fault; returns how many were armed."""
        with self._lock:
            n, self._armed = len(self._armed), []
        return n

    def armed(self) -> list[dict[str, Any]]:
        """The faults still armed (JSON form)."""
        with self._lock:
            return [f.describe() for f in self._armed]

    def fired(self) -> list[dict[str, Any]]:
        """Every fault fired so far: kind, event and the monotonic time (s) it fired."""
        with self._lock:
            return list(self._fired)

    def take(self, kinds: frozenset[str], event: str, controller: str = "") -> Fault | None:
        """The first armed fault of ``kinds`` that fires on ``event`` now, if any; a fault
        that has fired ``count`` times is disarmed."""
        with self._lock:
            first = self.controllers[0] if self.controllers else None  # None: one controller
            for fault in self._armed:
                if fault.kind not in kinds or fault.on not in (event, "*") or (
                        first is not None and (fault.controller or first) != (controller or first)):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after:
                    continue
                if fault.seen >= fault.after + fault.count:
                    self._armed.remove(fault)
                self._fired.append({"kind": fault.kind, "on": event, "at_s": time.monotonic()})
                log.warning("fault fired: %s on %s", fault.kind, event)
                return fault
        return None


def corrupt(frames: list[Frame], mode: str) -> list[Frame]:
    """A damaged copy of a reply's frames: a garbled header, or flipped bits in its first
    array frame (a reply without arrays gets a garbled header instead)."""
    out = [bytes(memoryview(f)) for f in frames]
    if mode == "array" and len(out) > 1 and out[1]:
        data = bytearray(out[1])
        data[len(data) // 2] ^= 0x5A
        out[1] = bytes(data)
    else:
        out[0] = b"\x00{" + out[0][: len(out[0]) // 2]
    return out


class FaultyExecutor:
    """An ``Executor`` that fires the plan's run faults around the one it wraps.

    Args:
        inner: the simulated device.
        plan: the armed faults.
        change_setting: ``(instrument, setting, value, channel)`` changes an instrument's
            setting as its front panel would (``lo_change``).
        crash: ends the process (``crash``); the default exits with ``EXIT_CRASH``.
        name: the controller's name, which a fault's ``controller`` names.
    """

    def __init__(self, inner: Any, plan: FaultPlan,
                 change_setting: Callable[[str, str, float | bool, int], None],
                 crash: Callable[[str], None] | None = None, name: str = "") -> None:
        self._inner = inner
        self._plan = plan
        self._name = name
        self._change_setting = change_setting
        self._crash = crash or _exit_now

    def capabilities(self) -> dict:
        """The wrapped device's capabilities."""
        return self._inner.capabilities()

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Validate with the wrapped device."""
        self._inner.load(arrays, meta)

    def abandon(self, params: dict) -> None:
        """Tell the wrapped device of a run aborted before it started, if it has such a hook
        (as ``ControllerServer`` asks it: an executor without one had every abort of a queued
        run answered ``InternalError``)."""
        hook = getattr(self._inner, "abandon", None)
        if hook is not None:
            hook(params)

    def execute(self, arrays: dict[str, np.ndarray], meta: dict, shots: int, params: dict,
                cancel: threading.Event) -> dict[str, np.ndarray]:
        """Run on the wrapped device, firing ``start`` faults before and ``end`` ones after."""
        self._fire("start", cancel)
        results = self._inner.execute(arrays, meta, shots, params, cancel)
        self._fire("end", cancel)
        return results

    def _fire(self, point: str, cancel: threading.Event) -> None:
        fault = self._plan.take(RUN_FAULTS, point, self._name)
        if fault is None:
            return
        if fault.kind == "crash":
            self._crash(f"fault injection: crash at run {point}")
        elif fault.kind == "stall":
            cancel.wait(fault.duration_s)
            raise RuntimeError(f"fault injection: run stalled at {point} for up to "
                               f"{fault.duration_s} s")
        else:
            self._change_setting(fault.instrument, fault.setting, fault.value, fault.channel)


def _exit_now(reason: str) -> None:
    print(f"labqpu sim: {reason}; exiting with code {EXIT_CRASH}", file=sys.stderr, flush=True)
    os._exit(EXIT_CRASH)


class FaultControlServer:
    """The control socket: JSON requests on a ZeroMQ REP socket bound to 127.0.0.1.

    Requests: ``{"cmd": "arm", "fault": {...}}``, ``{"cmd": "disarm"}``,
    ``{"cmd": "list"}``. Replies: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
    """

    def __init__(self, plan: FaultPlan, port: int = 0) -> None:
        self.plan = plan
        self.port = port
        self.endpoint = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FaultControlServer({self.endpoint!r})"

    @property
    def serving(self) -> bool:
        """True while the control thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the loopback port (a random one for port 0) and serve in a daemon thread;
        ``zmq.ZMQError`` when it cannot be bound."""
        context = zmq.Context()
        socket = context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, 1 << 16)
        try:
            if self.port:
                socket.bind(f"tcp://127.0.0.1:{self.port}")
            else:
                self.port = socket.bind_to_random_port("tcp://127.0.0.1")
        except zmq.ZMQError:
            socket.close(linger=0)
            context.term()
            raise
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._serve, args=(context, socket),
                                        name="fault-control", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop serving and join the thread (bounded by ``timeout_s``); idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _serve(self, context: zmq.Context, socket: zmq.Socket) -> None:
        try:
            while not self._stopping.is_set():
                if not socket.poll(100):
                    continue
                message = socket.recv()
                try:
                    reply = self._answer(json.loads(message))
                except (ValueError, TypeError, RecursionError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                socket.send(json.dumps(reply).encode())
        finally:
            socket.close(linger=0)
            context.term()

    def _answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise ValueError(f"a control request is an object, got {request!r}")
        cmd = request.get("cmd")
        if cmd == "arm":
            self.plan.arm(Fault.from_json(request.get("fault")))
            return {"ok": True}
        if cmd == "disarm":
            return {"ok": True, "disarmed": self.plan.disarm()}
        if cmd == "list":
            return {"ok": True, "armed": self.plan.armed(), "fired": self.plan.fired()}
        raise ValueError(f"unknown control command {cmd!r}; known: arm, disarm, list")


class FaultControl:
    """Client of a simulator's fault control socket (tests only).

    Each request uses a fresh REQ socket bounded by ``timeout_s``, so a crashed simulator
    makes a call fail with ``TimeoutError`` instead of wedging.
    """

    def __init__(self, endpoint: str, *, timeout_s: float = CONTROL_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def arm(self, kind: str, on: str, **fields: Any) -> None:
        """Arm one fault (fields as in :class:`Fault`); ``ValueError`` if refused."""
        self._ask({"cmd": "arm", "fault": {"kind": kind, "on": on, **fields}})

    def disarm(self) -> int:
        """Disarm every fault; returns how many were still armed."""
        return int(self._ask({"cmd": "disarm"})["disarmed"])

    def armed(self) -> list[dict[str, Any]]:
        """The faults still armed."""
        return self._ask({"cmd": "list"})["armed"]

    def fired(self) -> list[dict[str, Any]]:
        """The faults fired so far."""
        return self._ask({"cmd": "list"})["fired"]

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        with zmq.Context() as context, context.socket(zmq.REQ) as socket:
            socket.setsockopt(zmq.LINGER, 0)
            socket.connect(self.endpoint)
            socket.send(json.dumps(request).encode())
            if not socket.poll(round(self.timeout_s * 1000)):
                raise TimeoutError(f"fault control at {self.endpoint} did not answer within "
                                   f"{self.timeout_s} s")
            reply = json.loads(socket.recv())
        if not reply.get("ok"):
            raise ValueError(f"fault control refused {request}: {reply.get('error')}")
        return reply


def fault_control_enabled(lab_toml: str | Path) -> bool:
    """True if ``lab.toml`` enables the control socket (``[simulator.faults] control``)."""
    try:
        with Path(lab_toml).open("rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{lab_toml}: not valid TOML (UTF-8): {exc}") from exc
    simulator = doc.get("simulator", {})
    section = simulator.get("faults", {}) if isinstance(simulator, dict) else {}
    if not isinstance(section, dict):
        raise ValueError(f"{lab_toml}: [simulator.faults] must be a table")
    unknown = sorted(set(section) - {"control"})
    if unknown:
        raise ValueError(f"{lab_toml}: [simulator.faults] has unknown key(s) {unknown}; "
                         "known: control")
    control = section.get("control", False)
    if not isinstance(control, bool):
        raise ValueError(f"{lab_toml}: [simulator.faults] control must be true or false, "
                         f"got {control!r}")
    return control

