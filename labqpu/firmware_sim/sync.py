"""Several controllers, one device: what the simulated controllers of a rack share, and the
trigger that makes their runs one synchronised run (docs/protocol.md, section 4.6).

* **One device.** Every controller of a rack drives the same simulated chip: one physics
  engine, one simulated clock against which the device drifts (the sum of shots x (program
  duration + rep_delay) over every run of the rack, whichever controller ran it), one source
  of entropy for runs without a seed. ``SharedDevice`` holds them; one run computes at a time.
* **Rack-global ports.** The physics knows one set of ports (``device.QubitCabling``):
  controller k's output p is ``output_base + p`` (inputs likewise). Each controller validates
  a program against its own ports and moves it to the rack's (:func:`to_rack_ports`).
* **Synchronised runs.** A run with ``params["sync"]`` belongs to a *group*. A follower's run
  is *armed* when it reaches the front of its controller's queue: it waits for the trigger. The
  leader's run waits (at most ``arm_timeout_s``) until every follower it names is armed in its
  group, checks that they agree on shots, program length and rep_delay_s, then (the trigger)
  executes ONE program: the leader's and the followers' programs merged in that order (leader
  first, then the followers in the order the leader lists them; :func:`merge_parts`). Each
  controller's run returns its own columns (:func:`split_results`). Any failure closes the
  group: every run of it still waiting ends with the same ``SyncError`` message, naming the
  group and the controller at fault, and a run arriving later in a closed group fails at once.
  Every wait is bounded and honours the run's cancel event.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from labqpu.firmware_sim.feedforward import FeedForward
from labqpu.firmware_sim.physics import PhysicsEngine, WireProgram
from labqpu.firmware_sim.shots import trace_points

__all__ = ["DEFAULT_ARM_TIMEOUT_S", "FOLLOWER", "LEADER", "MAX_ARMED_S", "SharedDevice",
           "SyncError", "SyncHub", "SyncPart", "SyncRequest", "merge_parts", "parse_sync",
           "split_results", "to_rack_ports"]

#: How long a leader waits for its followers to arm, unless the wiring says otherwise (s).
DEFAULT_ARM_TIMEOUT_S = 10.0
#: Longest a follower waits, armed and then for the leader's results, when its run has no
#: ``time_limit_s`` (s); with one, the controller stops it at that limit.
MAX_ARMED_S = 3600.0
#: Longest a run waits for another run of the rack to finish computing (s).
MAX_COMPUTE_WAIT_S = 3600.0
#: How often a waiting run looks at its cancel event (s).
POLL_S = 0.05
#: Finished groups remembered, so that a run arriving late in one fails at once.
MAX_GROUPS = 1024
#: Longest group id (characters).
MAX_GROUP_CHARS = 64
LEADER = "leader"
FOLLOWER = "follower"


class SyncError(RuntimeError):
    """A synchronised run that cannot go ahead; the message names the group and the
    controller at fault. A run ending with it has ``error_type`` ``SyncError``
    (``drivers.protocol.ERR_SYNC``: the server reports the exception's class name)."""


class SharedDevice:
    """What the controllers of one rack share: the physics engine, the simulated clock, the
    entropy of runs without a seed, and the right to compute.

    Args:
        engine: the device's physics.
        seed: seed of the sequence unseeded runs draw from (None: fresh OS entropy).
    """

    def __init__(self, engine: PhysicsEngine, seed: int | None) -> None:
        self.engine = engine
        self._seeds = np.random.SeedSequence(seed)
        self._lock = threading.Lock()
        self._computing = threading.Lock()
        #: Simulated time (s) over the rack's life: shots x (program duration + rep_delay) of
        #: every run any of its controllers executed; the device drifts against it.
        self.sim_time_s = 0.0

    def rng(self, seed: int | None) -> np.random.Generator:
        """The generator of a run: from ``seed``, or the next child of the rack's sequence."""
        if seed is not None:
            return np.random.default_rng(seed)
        with self._lock:
            return np.random.default_rng(self._seeds.spawn(1)[0])

    def advance(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The device's drift (``PhysicsEngine.conditions``) at the clock's time; then move the
        clock on by ``duration_s`` (s). Runs read the drift in the order they start."""
        with self._lock:
            drift = self.engine.drift.at(self.sim_time_s)
            self.sim_time_s += duration_s
        return drift

    @contextlib.contextmanager
    def computing(self, cancel: threading.Event) -> Iterator[None]:
        """Hold the device while a run computes; waits for the run computing now (bounded by
        ``MAX_COMPUTE_WAIT_S``) and gives up with ``RuntimeError`` once ``cancel`` is set."""
        deadline = time.monotonic() + MAX_COMPUTE_WAIT_S
        while not self._computing.acquire(timeout=POLL_S):
            if cancel.is_set():
                raise RuntimeError("aborted while another run of the rack computed")
            if time.monotonic() > deadline:
                raise RuntimeError(f"another run of the rack computed for more than "
                                   f"{MAX_COMPUTE_WAIT_S} s")
        try:
            yield
        finally:
            self._computing.release()


@dataclass(frozen=True)
class SyncRequest:
    """A run's ``params["sync"]``, checked: its group, role, the leader's name (the
    controller's own for a leader) and, for a leader, its followers in merge order."""

    group: str
    role: str
    leader: str
    followers: tuple[str, ...] = ()


def parse_sync(value: object, controller: str, controllers: tuple[str, ...]) -> SyncRequest:
    """Check the ``sync`` run parameter of a run on ``controller`` in a rack of
    ``controllers``; raises ``ValueError`` naming the field at fault."""
    if not isinstance(value, dict):
        raise ValueError(f"sync must be an object, got {value!r}")
    group, role = value.get("group"), value.get("role")
    if not isinstance(group, str) or not 1 <= len(group) <= MAX_GROUP_CHARS:
        raise ValueError(f"sync.group must be a string of 1..{MAX_GROUP_CHARS} characters, "
                         f"got {group!r}")
    known = {LEADER: {"group", "role", "followers"}, FOLLOWER: {"group", "role", "leader"}}
    if role not in known:
        raise ValueError(f"sync.role must be 'leader' or 'follower', got {role!r}")
    unknown = sorted(set(value) - known[role])
    if unknown:
        raise ValueError(f"sync of a {role} has unknown field(s) {unknown}")
    if role == FOLLOWER:
        leader = value.get("leader")
        if not isinstance(leader, str) or leader not in controllers or leader == controller:
            raise ValueError(f"sync.leader must name another controller of this rack "
                             f"({[c for c in controllers if c != controller]}), got {leader!r}")
        return SyncRequest(group, role, leader)
    followers = value.get("followers")
    if not isinstance(followers, list) or not followers \
            or not all(isinstance(f, str) for f in followers):
        raise ValueError(f"sync.followers must be a non-empty list of controller names, got "
                         f"{followers!r}")
    if len(set(followers)) != len(followers) or controller in followers:
        raise ValueError(f"sync.followers must name distinct controllers other than the leader "
                         f"{controller}, got {followers}")
    unknown = [f for f in followers if f not in controllers]
    if unknown:
        raise ValueError(f"sync group {group}: leader {controller} names unknown follower(s) "
                         f"{unknown}; this rack has {list(controllers)}")
    return SyncRequest(group, role, controller, tuple(followers))


@dataclass(frozen=True)
class SyncPart:
    """What one controller brings to a synchronised run: its program on rack ports, its
    feed-forward tables, its shots and rep_delay_s (s, None: independent shots)."""

    controller: str
    program: WireProgram
    feedforward: FeedForward
    shots: int
    rep_delay_s: float | None


def to_rack_ports(prog: WireProgram, ff: FeedForward, output_base: int, input_base: int
                  ) -> tuple[WireProgram, FeedForward]:
    """``prog`` and ``ff`` with their controller's ports moved to rack-global ports (the
    objects themselves for the rack's first controller)."""
    if output_base == 0 and input_base == 0:
        return prog, ff
    return (replace(prog, play_port=prog.play_port + np.int32(output_base),
                    acq_port=prog.acq_port + np.int32(input_base)),
            replace(ff, shift_port=ff.shift_port + np.int32(output_base)))


def merge_parts(parts: list[SyncPart]) -> tuple[WireProgram, FeedForward, list[slice]]:
    """One program of every part's plays, waveforms, acquisitions and feed-forward tables, in
    the order of ``parts``: waveform, acquisition and block indices are renumbered into the
    merged tables, so a block still reads its own controller's acquisition. Returns the
    program, its feed-forward tables and each part's columns (a slice of the acquisitions).
    All parts have one ``duration_samples`` (checked by the hub)."""
    programs = [p.program for p in parts]
    ffs = [p.feedforward for p in parts]
    waves = np.cumsum([0] + [q.wave_offset.shape[0] - 1 for q in programs])
    samples = np.cumsum([0] + [q.wave_data.shape[0] for q in programs])
    acqs = np.cumsum([0] + [q.acq_port.shape[0] for q in programs])
    blocks = np.cumsum([0] + [f.block_acq.shape[0] for f in ffs])

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)

    def renumber(ids: np.ndarray, base: int) -> np.ndarray:
        """Block ids moved by ``base``; -1 (unconditional) stays."""
        return np.where(ids >= 0, ids + ids.dtype.type(base), ids)

    prog = WireProgram(
        play_port=cat([q.play_port for q in programs]),
        play_start=cat([q.play_start for q in programs]),
        play_wave=cat([q.play_wave + q.play_wave.dtype.type(waves[k])
                       for k, q in enumerate(programs)]),
        play_amp=cat([q.play_amp for q in programs]),
        play_phase_rad=cat([q.play_phase_rad for q in programs]),
        play_freq_hz=cat([q.play_freq_hz for q in programs]),
        wave_offset=cat([programs[0].wave_offset[:1]]
                        + [q.wave_offset[1:] + q.wave_offset.dtype.type(samples[k])
                           for k, q in enumerate(programs)]),
        wave_data=cat([q.wave_data for q in programs]),
        acq_port=cat([q.acq_port for q in programs]),
        acq_start=cat([q.acq_start for q in programs]),
        acq_duration=cat([q.acq_duration for q in programs]),
        acq_freq_hz=cat([q.acq_freq_hz for q in programs]),
        duration_samples=programs[0].duration_samples,
    )
    ff = FeedForward(
        play_block=cat([renumber(f.play_block, blocks[k]) for k, f in enumerate(ffs)]),
        block_acq=cat([f.block_acq + f.block_acq.dtype.type(acqs[k])
                       for k, f in enumerate(ffs)]),
        block_value=cat([f.block_value for f in ffs]),
        block_parent=cat([renumber(f.block_parent, blocks[k]) for k, f in enumerate(ffs)]),
        shift_port=cat([f.shift_port for f in ffs]),
        shift_start=cat([f.shift_start for f in ffs]),
        shift_phase_rad=cat([f.shift_phase_rad for f in ffs]),
        shift_block=cat([renumber(f.shift_block, blocks[k]) for k, f in enumerate(ffs)]),
        disc_axis=cat([f.disc_axis for f in ffs]),
        disc_threshold=cat([f.disc_threshold for f in ffs]),
    )
    return prog, ff, [slice(int(acqs[k]), int(acqs[k + 1])) for k in range(len(parts))]


def split_results(result: dict[str, np.ndarray], parts: list[SyncPart], columns: list[slice]
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Per controller, its columns of the merged run's ``result`` in the format of a run of
    its own program: ``iq`` and ``bits`` (shots, its acquisitions) and, when present,
    ``traces`` cut to the points of its own longest window, and ``trace_decimation``."""
    out = {}
    for part, cols in zip(parts, columns, strict=True):
        own = {name: np.ascontiguousarray(result[name][:, cols]) for name in ("iq", "bits")}
        if "traces" in result:
            decimation = int(result["trace_decimation"][0])
            points = trace_points(part.program.acq_duration, decimation)
            own["traces"] = np.ascontiguousarray(result["traces"][:, cols, :points])
            own["trace_decimation"] = result["trace_decimation"].copy()
        out[part.controller] = own
    return out


@dataclass
class _Arm:
    """A follower's run, armed in a group: what it brings and what it gets back."""

    part: SyncPart
    leader: str
    taken: bool = False
    result: dict[str, np.ndarray] | None = None
    error: str | None = None


@dataclass
class _Group:
    """One synchronised run as the hub sees it."""

    arms: dict[str, _Arm] = field(default_factory=dict)
    leader: str | None = None
    triggered: bool = False
    #: Why the group failed; every run of it still waiting, or arriving, fails with it.
    error: str | None = None


class SyncHub:
    """The rack's trigger: followers arm in a group, the leader fires it (module docstring).

    Args:
        controllers: the rack's controller names.
        arm_timeout_s: how long a leader waits for its followers to arm (s).
    """

    def __init__(self, controllers: tuple[str, ...], arm_timeout_s: float) -> None:
        if not 0 < arm_timeout_s < math.inf:
            raise ValueError(f"arm_timeout_s must be a number > 0 s, got {arm_timeout_s!r}")
        self.controllers = controllers
        self.arm_timeout_s = float(arm_timeout_s)
        self._cond = threading.Condition()
        self._groups: OrderedDict[str, _Group] = OrderedDict()

    def capability(self) -> dict:
        """The ``sync`` entry of ``hello`` capabilities (docs/protocol.md, section 4.6)."""
        return {"trigger": "star", "arm_timeout_s": self.arm_timeout_s,
                "max_controllers": len(self.controllers)}

    def _group(self, name: str) -> _Group:
        """The group ``name``, created if new; forgets the oldest finished groups beyond
        ``MAX_GROUPS``. Call with the lock held."""
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = _Group()
            finished = [k for k, g in self._groups.items() if g.error is not None or (
                g.triggered and all(a.result is not None or a.error is not None
                                    for a in g.arms.values() if a.taken))]
            for old in finished[:max(0, len(finished) - MAX_GROUPS)]:
                del self._groups[old]
        return group

    def _close(self, group: _Group, message: str) -> None:
        """Fail ``group``: every armed run not yet taken ends with ``message``; lock held."""
        group.error = group.error or message
        for arm in group.arms.values():
            if not arm.taken and arm.error is None:
                arm.error = message
        self._cond.notify_all()

    def follow(self, request: SyncRequest, part: SyncPart, cancel: threading.Event
               ) -> dict[str, np.ndarray]:
        """Arm ``part`` (a follower's run) in its group and wait for the leader's trigger and
        results; returns its own results. Raises ``SyncError`` when the group fails, and
        ``RuntimeError`` once ``cancel`` is set (then the group fails naming this follower
        unless the trigger already took it)."""
        name, where = part.controller, f"sync group {request.group}"
        deadline = time.monotonic() + MAX_ARMED_S
        with self._cond:
            group = self._group(request.group)
            if group.error is not None:
                raise SyncError(group.error)
            if group.triggered:
                raise SyncError(f"{where} already ran (leader {group.leader}); follower "
                                f"{name} armed too late")
            if name in group.arms:
                raise SyncError(f"{where}: follower {name} is already armed in it")
            arm = group.arms[name] = _Arm(part, request.leader)
            self._cond.notify_all()
            while True:
                if arm.error is not None:
                    raise SyncError(arm.error)
                if arm.result is not None:
                    return arm.result
                if cancel.is_set():
                    if not arm.taken:
                        self._close(group, f"{where}: follower {name}'s run was aborted (or "
                                           "stopped at its time limit) while armed")
                    raise RuntimeError(f"{where}: follower {name}'s run was stopped")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    message = (f"{where}: follower {name} waited {MAX_ARMED_S} s without a "
                               "result")
                    if not arm.taken:
                        self._close(group, message)
                    raise SyncError(message)
                self._cond.wait(min(POLL_S, remaining))

    def lead(self, request: SyncRequest, part: SyncPart, cancel: threading.Event
             ) -> list[SyncPart]:
        """Wait (at most ``arm_timeout_s``) until every follower of ``request`` is armed in its
        group, check them and fire the trigger; returns the parts in merge order (the
        leader's first). On failure the group fails with the same message (``SyncError``;
        ``RuntimeError`` once ``cancel`` is set)."""
        name, where = part.controller, f"sync group {request.group}"
        deadline = time.monotonic() + self.arm_timeout_s
        with self._cond:
            group = self._group(request.group)
            if group.error is not None:
                raise SyncError(group.error)
            if group.leader is not None:
                message = f"{where} already has leader {group.leader}; {name} cannot lead it"
                raise SyncError(message)
            group.leader = name
            while True:
                if group.error is not None:
                    raise SyncError(group.error)
                missing = [f for f in request.followers if f not in group.arms]
                if not missing:
                    break
                if cancel.is_set():
                    self._close(group, f"{where}: leader {name}'s run was aborted")
                    raise RuntimeError(f"{where}: leader {name}'s run was stopped")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    message = (f"{where}: follower(s) {missing} of leader {name} did not arm "
                               f"within {self.arm_timeout_s} s")
                    self._close(group, message)
                    raise SyncError(message)
                self._cond.wait(min(POLL_S, remaining))
            problems = self._mismatches(request, part, group)
            if problems:
                message = f"{where}: " + "; ".join(problems)
                self._close(group, message)
                raise SyncError(message)
            for follower in request.followers:
                group.arms[follower].taken = True
            group.triggered = True
            for other, arm in group.arms.items():
                if not arm.taken:
                    arm.error = f"{where}: leader {name} did not name {other} as a follower"
            self._cond.notify_all()
            return [part] + [group.arms[f].part for f in request.followers]

    @staticmethod
    def _mismatches(request: SyncRequest, part: SyncPart, group: _Group) -> list[str]:
        """What the armed followers disagree on with the leader (empty if nothing)."""
        problems = []
        for follower in request.followers:
            arm = group.arms[follower]
            theirs = arm.part
            if arm.leader != part.controller:
                problems.append(f"follower {follower} waits for leader {arm.leader}, not "
                                f"{part.controller}")
            for what, mine, other in (
                    ("shots", part.shots, theirs.shots),
                    ("duration_samples", part.program.duration_samples,
                     theirs.program.duration_samples),
                    ("rep_delay_s", part.rep_delay_s, theirs.rep_delay_s)):
                if mine != other:
                    problems.append(f"follower {follower} has {what} {other}, leader "
                                    f"{part.controller} has {mine}")
        return problems

    def withdraw(self, request: SyncRequest, controller: str, why: str) -> None:
        """``controller``'s run of ``request`` will not take part (it was aborted before it
        started, or its parameters are bad: ``why``): its group fails, unless it already ran
        without it."""
        with self._cond:
            group = self._group(request.group)
            if not group.triggered:
                self._close(group, f"sync group {request.group}: {request.role} {controller}'s "
                                   f"run {why}")

    def deliver(self, group_name: str, results: dict[str, dict[str, np.ndarray]]) -> None:
        """Hand each taken follower of the group its results."""
        with self._cond:
            group = self._groups.get(group_name)
            if group is not None:
                for name, arm in group.arms.items():
                    if arm.taken and name in results:
                        arm.result = results[name]
                self._cond.notify_all()

    def fail(self, group_name: str, message: str) -> None:
        """The leader's merged run failed or was aborted: every follower still waiting for its
        results ends with ``message``."""
        with self._cond:
            group = self._groups.get(group_name)
            if group is None:
                return
            group.error = group.error or message
            for arm in group.arms.values():
                if arm.result is None and arm.error is None:
                    arm.error = message
            self._cond.notify_all()
