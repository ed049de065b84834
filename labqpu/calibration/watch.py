"""Watch mode: keep a device calibrated, unattended (``labqpu calibrate --watch``).

Every ``interval_s``, :func:`watch` runs the calibration graph (:func:`run_graph`, not forced):
each node's cheap check judges its values against their tolerance, a value that fails (or is
older than its age limit) is recalibrated, and a round that changed something commits one
snapshot. A running backend picks that snapshot up for its next job.

The graph's own rb step (benchmarking what a recalibration outdated) is left out of the rounds.
With ``rb_every`` N, every N-th round whose graph ran also runs randomized benchmarking of the
watched qubits and their edges after the graph (``runner.benchmark_and_record``) and commits
the gate errors, so the Target's errors follow the device too (a round whose graph raised skips
it). A qubit or edge whose benchmark fails is recorded as failed in that commit (node ``rb``)
and logged with its round, and costs only itself; the graph's commit stands.

Each round is logged as one JSON line in ``watch.jsonl`` beside the calibration store (its
start, the device time, what was fresh, what changed from what to what, what failed) and as
one line of text through ``say``. A round that fails (a fit, a job, a commit that lost a race
with another writer) is logged and the watch goes on: the next round tries again. Only
``KeyboardInterrupt``, ``stop`` or the round count end it.

Time between rounds passes on one of two clocks:

* ``"wall"``: the watch sleeps (what a lab's rack needs: the device drifts in real time);
* ``"device"``: the interval passes on the device, as idle shots (one readout of the first
  watched qubit every IDLE_REP_DELAY_S). The firmware simulator's device drifts against its
  own clock, the sum of shots x (program duration + rep_delay), so a simulated day passes in
  well under a second; on hardware it takes as long as the wall clock and holds the controller.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from qiskit import QuantumCircuit
from qiskit.providers import JobError

from labqpu.calibration.rb import RBSettings
from labqpu.calibration.runner import LineReporter, RunReport, benchmark_and_record, run_graph
from labqpu.calibration.working import json_ready
from labqpu.errors import CalibrationError, InstrumentError, interrupts_as_such

log = logging.getLogger(__name__)

#: The clocks between rounds.
CLOCKS = ("wall", "device")
#: Time between rounds when none is given (s).
DEFAULT_INTERVAL_S = 3600.0
#: The longest time between rounds (s): 30 days (a longer wait overflowed the wall clock's
#: timer after the first round, and on the device clock idled for ever).
MAX_INTERVAL_S = 30 * 24 * 3600.0
#: Repetition delay of the idle shots that pass time on the device clock (s); the backend's
#: largest ``rep_delay``.
IDLE_REP_DELAY_S = 1.0
#: Idle shots per job on the device clock: an hour of device time per job.
IDLE_SHOTS_PER_JOB = 3600
#: Margin on top of an idle job's own length, for its controller timeout and result wait (s).
IDLE_MARGIN_S = 120.0
#: The log of every round, beside the calibration store.
LOG_NAME = "watch.jsonl"
#: What a round may fail with and the watch survive: a fit, a job (or its timeout), an
#: instrument, the calibration store (a commit that lost a race with another writer, a store
#: another process holds: a review's watch exited when a colleague's sqlite3 shell held it
#: for 15 s), the OS.
ROUND_ERRORS = (CalibrationError, JobError, InstrumentError, OSError)


@dataclass
class WatchRound:
    """One round: its number (from 1), when it started (UTC), the time since the watch began
    on its clock (s), the runner's report (None when the round raised) and the error."""

    index: int
    started: datetime
    clock_s: float
    report: RunReport | None
    error: str | None = None
    #: Gate errors the round's randomized benchmarking committed (``sx:1`` -> error; None
    #: when it ran none or none fitted), and the snapshot it committed (gate errors, failure
    #: records); None when it committed nothing.
    gate_errors: dict[str, float] | None = None
    rb_snapshot: int | None = None
    #: Why the round's line is not in the log (it could not be written), or None.
    unlogged: str | None = None

    def summary(self) -> str:
        """One line: what was fresh, what was recalibrated, what failed."""
        head = f"round {self.index} at +{self.clock_s / 3600:.2f} h"
        if self.report is None:
            return f"{head}: failed: {self.error}"
        calibrated = self.report.with_status("calibrated")
        bad = self.report.with_status("failed") + self.report.with_status("blocked")
        text = (f"{head}: {len(self.report.with_status('fresh'))} fresh, "
                f"{len(calibrated)} recalibrated, {len(bad)} failed or blocked")
        if calibrated:
            text += "; recalibrated " + ", ".join(f"{o.node} on {o.subject}" for o in calibrated)
        if bad:
            text += "; " + "; ".join(f"{o.node} on {o.subject} {o.status}: {o.reason}"
                                     for o in bad)
        if self.report.snapshot is not None:
            text += f"; committed snapshot {self.report.snapshot.snapshot_id}"
        if self.report.unchecked:
            names = dict.fromkeys(node for node, _ in self.report.unchecked)
            text += (f"; not watched and built on its changes: {len(self.report.unchecked)} "
                     f"steps of {', '.join(names)}")
        if self.gate_errors is not None:
            text += (f"; RB: {len(self.gate_errors)} gate errors (largest "
                     f"{max(self.gate_errors.values(), default=0.0):.2e}) in snapshot "
                     f"{self.rb_snapshot}")
        if self.error is not None:
            text += f"; {self.error}"
        return text

    def record(self) -> dict:
        """The round as the JSON object of its log line."""
        out: dict = {"round": self.index, "started": self.started.isoformat(),
                     "clock_s": self.clock_s, "error": self.error}
        if self.report is not None:
            out["parent_snapshot"] = self.report.parent_id
            out["snapshot"] = (self.report.snapshot.snapshot_id
                               if self.report.snapshot is not None else None)
            out["steps"] = [{"node": o.node, "subject": o.subject, "status": o.status,
                             "reason": o.reason,
                             "changes": [{"name": c.name, "old": json_ready(c.old),
                                          "new": json_ready(c.new)} for c in o.changes]}
                            for o in self.report.outcomes]
            out["unchecked"] = [{"node": node, "subject": subject}
                                for node, subject in self.report.unchecked]
        if self.gate_errors is not None:
            out["gate_errors"] = self.gate_errors
        if self.rb_snapshot is not None:
            out["rb_snapshot"] = self.rb_snapshot
        return out


@dataclass
class WatchReport:
    """Every round of a watch, and where its log is."""

    rounds: list[WatchRound] = field(default_factory=list)
    log_path: Path | None = None


def _benchmark(backend, this: WatchRound, qubits: Sequence[int] | None,
               settings: RBSettings) -> None:
    """Randomized benchmarking at the end of round ``this`` (``qubits``: None for all), its
    gate errors committed; the qubits and edges that failed, or an error that stopped it, go
    into the round's ``error``."""
    try:
        snapshot, outcomes, failed = benchmark_and_record(backend, qubits=qubits,
                                                          settings=settings, progress=log.debug)
    except ROUND_ERRORS as exc:
        log.exception("watch round %d: randomized benchmarking failed", this.index)
        this.error = f"RB failed: {_error_text(exc)}"
        return
    if snapshot is not None:
        this.rb_snapshot = snapshot.snapshot_id
    if outcomes:
        this.gate_errors = {gate: float(e) for o in outcomes for gate, e in o.errors.items()}
    if failed:
        where = f" (recorded in snapshot {snapshot.snapshot_id})" if snapshot else ""
        this.error = ("RB failed: " + "; ".join(f"{s}: {why}" for s, why in failed.items())
                      + where)
        log.warning("watch round %d: %s", this.index, this.error)


def _log_round(report: WatchReport, this: WatchRound, path: Path,
               say: Callable[[str], None]) -> None:
    """Keep ``this`` in the report, append its line to the log and say its summary; a line
    that cannot be written (the disk full, the file replaced) is said and logged, and the
    watch goes on: the round's snapshot is committed already."""
    report.rounds.append(this)
    say(this.summary())
    try:
        with path.open("a") as f:
            f.write(json.dumps(this.record(), default=str) + "\n")
    except OSError as exc:
        this.unlogged = f"its line could not be written to the log {path}: " \
                        f"{exc.strerror or exc}"
        log.error("watch round %d: %s", this.index, this.unlogged)
        say(f"round {this.index}: {this.unlogged}")


def _error_text(exc: BaseException) -> str:
    """``Type: message`` (a QiskitError's ``str()`` would quote its message)."""
    return f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"


def idle_on_device(backend, seconds: float, qubit: int = 0) -> None:
    """Let ``seconds`` (s) pass on ``backend``'s device: idle shots, one readout of ``qubit``
    every IDLE_REP_DELAY_S, IDLE_SHOTS_PER_JOB per job. Raises ``ValueError`` for a negative
    or non-finite time."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"idle time must be a finite number of seconds >= 0, got {seconds!r}")
    circuit = QuantumCircuit(backend.num_qubits, 1)
    circuit.measure(qubit, 0)
    shot_s = backend.dt * _duration_samples(backend, qubit) + IDLE_REP_DELAY_S
    shots_left = round(seconds / shot_s)
    while shots_left > 0:
        shots = min(shots_left, IDLE_SHOTS_PER_JOB)
        wait_s = shots * shot_s + IDLE_MARGIN_S
        backend.run(circuit, shots=shots, rep_delay=IDLE_REP_DELAY_S,
                    timeout=wait_s).result(timeout=wait_s)
        shots_left -= shots


def _idle_qubit(backend, qubits: Sequence[int] | None) -> int:
    """The first watched qubit (any, without ``qubits``) that the Target can measure;
    ``ValueError`` when there is none."""
    measurable = {qargs[0] for qargs in backend.target["measure"]}
    for q in sorted(qubits) if qubits else range(backend.num_qubits):
        if q in measurable:
            return q
    raise ValueError(f"no watched qubit of {backend.name} has a measure in the Target to pass "
                     "idle time with")


def _duration_samples(backend, qubit: int) -> int:
    """Samples of one idle shot's program: the Target's measure on ``qubit``."""
    return round(backend.target["measure"][(qubit,)].duration / backend.dt)


def watch(backend, nodes: Sequence[str] | None = None, *, interval_s: float,
          rounds: int | None = None, qubits: Sequence[int] | None = None, shots: int = 400,
          clock: str = "wall", say: Callable[[str], None] | None = None,
          after_round: Callable[[WatchRound], None] | None = None,
          stop: threading.Event | None = None, log_path: str | Path | None = None,
          rb_every: int | None = None, rb_settings: RBSettings | None = None,
          design: str | Path | None = None) -> WatchReport:
    """Keep ``backend``'s device calibrated: a round of :func:`run_graph` (``nodes``, default
    all, on ``qubits``, default all; ``shots`` per point), then ``interval_s`` (s) on
    ``clock`` (``"wall"`` or ``"device"``, see the module), for ``rounds`` rounds (None: until
    ``stop`` is set or the process is interrupted).

    Each round is appended to ``log_path`` (default: ``watch.jsonl`` beside the store) and
    said through ``say`` (default: the module's logger); step progress goes to the logger at
    DEBUG. ``after_round`` is called with each round, after it is logged and before the wait.
    With ``rb_every`` N, rounds N, 2N, ... whose graph ran end with randomized benchmarking
    (``rb_settings``, default :class:`RBSettings`) of the watched qubits and their edges.
    ``design`` is :func:`run_graph`'s. Returns the :class:`WatchReport`.

    Raises ``ValueError`` for a bad interval, round count, clock or ``rb_every``, and
    ``CalibrationError`` for a log that cannot be written (before anything runs)."""
    if not 0 <= interval_s <= MAX_INTERVAL_S:  # also NaN
        raise ValueError(f"watch interval must be a number of seconds from 0 to "
                         f"{MAX_INTERVAL_S:.0f} (30 days), got {interval_s!r}")
    if rounds is not None and rounds < 1:
        raise ValueError(f"watch rounds must be at least 1, got {rounds}")
    if clock not in CLOCKS:
        raise ValueError(f"watch clock must be one of {', '.join(CLOCKS)}, got {clock!r}")
    if rb_every is not None and (isinstance(rb_every, bool) or not isinstance(rb_every, int)
                                 or rb_every < 1):
        raise ValueError(f"watch rb_every must be a whole number of rounds >= 1, got "
                         f"{rb_every!r}")
    say = say or log.info
    stop = stop or threading.Event()
    path = Path(log_path) if log_path else Path(backend.config.store_path).parent / LOG_NAME
    try:  # before the first round, which may commit: each snapshot's round goes in the log
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not os.path.lexists(path)  # a dangling link is written through, not replaced
        path.open("a").close()
        if new:  # made by the check: the log appears with its first round, as before
            path.unlink()
    except OSError as exc:
        why = (f"{path.parent} is not a directory" if isinstance(exc, FileExistsError)
               else exc.strerror or exc)
        raise CalibrationError(f"the watch log {path} cannot be written: {why}; nothing was "
                               "run") from exc
    report = WatchReport(log_path=path)
    device_s = 0.0
    begun = time.monotonic()
    index = 0
    while rounds is None or index < rounds:
        index += 1
        started = datetime.now(UTC)
        elapsed = device_s if clock == "device" else time.monotonic() - begun
        parent: int | None = None
        this = None
        try:
            with interrupts_as_such():
                try:
                    parent = backend.store.latest_id()
                    result = run_graph(backend, nodes, qubits=qubits, shots=shots,
                                       design=design, reporter=LineReporter(log.debug), rb=False)
                    this = WatchRound(index, started, elapsed, result)
                except ROUND_ERRORS as exc:
                    log.exception("watch round %d failed", index)
                    this = WatchRound(index, started, elapsed, None, _error_text(exc))
                if rb_every is not None and index % rb_every == 0 and this.report is not None:
                    _benchmark(backend, this, qubits, rb_settings or RBSettings())
        except KeyboardInterrupt:
            # A round interrupted after it committed (its graph, or its benchmarks) is logged
            # too: every snapshot the watch wrote has its round in the log.
            try:
                newest: int | str | None = backend.store.latest_id()
            except CalibrationError:
                newest = "unknown (the store could not be read)"
            note = (f"interrupted; the store's newest snapshot is {newest} (it was {parent} "
                    "when the round began)")
            if this is not None:
                this.error = note if this.error is None else f"{this.error}; {note}"
                _log_round(report, this, path, say)
            elif newest != parent:
                _log_round(report, WatchRound(index, started, elapsed, None, note), path, say)
            raise
        _log_round(report, this, path, say)
        if after_round is not None:
            after_round(this)
        if (rounds is not None and index >= rounds) or stop.is_set():
            break
        if clock == "device":
            try:
                idle_on_device(backend, interval_s, _idle_qubit(backend, qubits))
            except (*ROUND_ERRORS, ValueError) as exc:  # the next round finds out more
                log.exception("watch: the idle time after round %d failed", index)
                say(f"round {index}: the idle time on the device failed: {_error_text(exc)}")
            device_s += interval_s
        elif stop.wait(interval_s):
            break
    return report
