"""The calibration runner: walk the graph, check what is fresh, recalibrate what is not, commit
one snapshot.

For each step (node, subject) of :func:`labqpu.calibration.graph.plan`, in dependency order:

* a prerequisite failed or was blocked: the step is **blocked** (nothing run); so is its
  calibration (not its check, nor its refinement) when a node it ``starts_from`` did;
* forced, a watched value missing, or older than its kind's age limit: **calibrate**; so is a
  node whose watched value is still the design's where the node calls it an estimate
  (``Node.design_estimates``: the shipped snapshots' anharmonicities);
* a failed check: **refine** first where the node has a cheaper refinement (the CZ), then
  **calibrate** if that fails;
* a node that ``measures`` another node's calibration (the CZ whose leakage it reads) holds
  values measured before that node's: **calibrate**;
* otherwise, run the node's check (if it has one): passed -> **fresh**, failed -> calibrate;
* a calibration that raises ``FitError``, or whose programs the backend refuses before sending
  them (:data:`STEP_ERRORS`: a value in the store that makes a pulse exceed full scale or a
  scan outlast the controller's limit), is **failed**: the working values it touched are
  restored, so it changes nothing, and it is reported; the run goes on with the steps that do
  not depend on it. A check that raises one of them has failed. A job or an instrument that
  fails (``JobError``, ``InstrumentError``) ends the run: the rack, not a value, is at fault.

Everything runs on a working copy of the newest snapshot (:func:`working_from_snapshot`);
:func:`run_graph` commits the values measured in the run as one new snapshot whose parent is
the one it started from; when someone else committed meanwhile, its values go on top of that
snapshot, except those of the qubits the other writer changed, which are left out and
reported failed (:func:`~labqpu.store.merge.commit_apart_onto_newest`); a flux bias changed
by either, or a drive LO plan of this run beside the other's change, fails the commit instead
of silently overwriting or mixing them. Its rb step then
benchmarks the gate errors the run left out of date and commits them as a second snapshot on
the first (:func:`run_graph`). :func:`bootstrap` runs every
node, forced, from the design values and returns the document.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from qiskit.providers import JobError

from labqpu.calibration.bootstrap import choose_drive_lo
from labqpu.calibration.checks import CheckResult
from labqpu.calibration.design import SHARED_FIELDS, check_bootstrap_plan, load_wiring_design
from labqpu.calibration.experiments import Kit
from labqpu.calibration.freshness import age_reason, measured_again, values_of
from labqpu.calibration.graph import (
    NODES,
    RB_NODE,
    Node,
    Subject,
    graph_nodes,
    plan,
)
from labqpu.calibration.plots import save_records
from labqpu.calibration.rb import (
    RBOutcome,
    RBSettings,
    benchmark_gates,
    check_rb_lengths,
    commit_benchmarks,
    outdated_subjects,
)
from labqpu.calibration.rb_sequences import rb_subjects
from labqpu.calibration.records import (
    ExperimentRecord,
    check_records_directory,
    describe,
    experiments_directory,
)
from labqpu.calibration.report import (
    Change,
    Outcome,
    RunReport,
    left_out_reason,
    mark_left_out,
    subject_qubits,
    unchecked,
)
from labqpu.calibration.working import Working
from labqpu.errors import (
    CalibrationError,
    CompilationError,
    FitError,
    InstrumentError,
    InvalidRunInputError,
    LabQpuError,
    wrapped_interrupt,
)
from labqpu.store import CALIBRATION_FAILED, Snapshot, SnapshotBuilder
from labqpu.store.merge import commit_apart_onto_newest
from labqpu.store.staleness import (
    wiring_age_limits,
)

log = logging.getLogger(__name__)


class LineReporter:
    """Progress as plain lines through ``say`` (default: the module's logger at INFO)."""

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say or log.info
        self.total = 0
        self.count = 0

    def start(self, total: int) -> None:
        """The run has ``total`` steps."""
        self.total = total

    def step(self, node: str, subject: str) -> None:
        """A step begins."""
        self.count += 1

    def done(self, outcome: Outcome) -> None:
        """A step ended."""
        self.say(f"[{self.count}/{self.total}] {outcome.node} {outcome.subject}: "
                 f"{outcome.status} ({outcome.reason}, {outcome.seconds:.1f} s)")

    def note(self, message: str) -> None:
        """Detail from inside a step."""
        self.say(message)

    def close(self) -> None:
        """The run ended."""


def working_from_snapshot(snapshot: Snapshot, design: Working) -> Working:
    """A working set holding ``snapshot``'s values (with their experiment and time) over the
    ``design`` values (which supply what a snapshot does not hold: resonator and Rabi-rate
    estimates, the flux-line scale, the sweet-spot search range)."""
    device = dict(design.device)
    qubits = {q: dict(params) for q, params in design.qubits.items()}
    work = Working(device=device, qubits=qubits)
    for q, params in snapshot.qubits.items():
        target = work.qubits.setdefault(q, {})
        for name, p in params.items():
            if name in SHARED_FIELDS:
                device[name] = p.value
            target[name] = copy.deepcopy(p.value)
            work.records[(q, name)] = p.experiment
            work.measured_at[(q, name)] = p.timestamp
    for pair, params in snapshot.pairs.items():
        for name, p in params.items():
            work.pairs.setdefault(pair, {})[name] = copy.deepcopy(p.value)
            work.records[(pair, name)] = p.experiment
            work.measured_at[(pair, name)] = p.timestamp
    return work


def _available_nodes(backend) -> tuple[Node, ...]:
    """The graph's nodes this rack can run: those that need feed-forward only with it, and
    only with their prerequisites and the nodes they start from (a lab's node may build on
    ``active_reset``)."""
    if backend.feedforward_latency_samples is not None:
        return graph_nodes()
    kept: list[Node] = []
    for n in graph_nodes():  # prerequisites first
        names = {m.name for m in kept}
        if not n.needs_feedforward and all(m in names for m in (*n.requires, *n.starts_from)):
            kept.append(n)
    return tuple(kept)


def _state(work: Working) -> tuple:
    return (copy.deepcopy(work.qubits), copy.deepcopy(work.pairs), dict(work.records),
            dict(work.measured_at))


def _restore(work: Working, state: tuple) -> None:
    work.qubits, work.pairs, work.records, work.measured_at = copy.deepcopy(state)


def _changes(work: Working, before: tuple) -> list[Change]:
    """Values measured since ``before`` (a :func:`_state`), old -> new; a value that was not
    measured before (a design's estimate, such as the resonator frequency a bootstrap starts
    from) has no old value."""
    qubits, pairs, _, stamps = before
    out = []
    for key, stamp in work.measured_at.items():
        if stamps.get(key) == stamp:
            continue
        subject, name = key
        values, held = (work.qubits, qubits) if isinstance(subject, int) else (work.pairs, pairs)
        old = held.get(subject, {}).get(name) if key in stamps else None
        out.append(Change(describe(subject), name, old, values[subject][name]))
    return sorted(out, key=lambda c: (c.subject, c.name))


def walk(kit: Kit, steps: Sequence[tuple[Node, Subject]], *, shots: int,
         forced: Iterable[str] = (), limits: dict[str, float] | None = None,
         now: datetime | None = None, reporter: LineReporter | None = None) -> list[Outcome]:
    """Run ``steps`` on ``kit.work`` as the module docstring says; returns their outcomes.
    ``forced`` names nodes calibrated without looking at age or check; ages are judged at
    ``now`` (default: the current time) against ``limits`` (hours per kind; none: age is not
    judged)."""
    forced = set(forced)
    limits = limits or {}
    now = now or datetime.now(UTC)
    reporter = reporter or LineReporter()
    status: dict[tuple[str, Subject], str] = {}
    by_name = {n.name: n for n, _ in steps}  # a step's prerequisites are among them
    #: (subject label, parameter) -> the node that measured it anew in this walk
    measured_by: dict[tuple[str, str], str] = {}
    outcomes = []
    reporter.start(len(steps))
    for n, subject in steps:
        label = describe(subject)
        reporter.step(n.name, label)
        t0 = time.perf_counter()
        bad = [f"prerequisite {name} on {describe(s)}" for name, s in n.prerequisites(subject)
               if status.get((name, s)) in ("failed", "blocked")]
        # a node it starts from that failed stops only its calibration (not its check or
        # refinement, which start from its own values)
        no_start = [f"{name} on {describe(s)}, which its calibration starts from,"
                    for name, s in n.starting_points(subject)
                    if status.get((name, s)) in ("failed", "blocked")]
        check = None
        if bad:
            outcome = Outcome(n.name, label, "blocked", f"{bad[0]} did not pass")
        else:
            reason = "forced" if n.name in forced else (
                measured_again(n, label, measured_by)
                or age_reason(kit.work, n, subject, limits, now, by_name))
            checked = reason is None and n.check is not None
            if checked:
                try:
                    check = n.check(kit, subject, shots)
                    reason = None if check.passed else f"check failed: {check}"
                except _step_errors(n) as exc:
                    _raise_rack_fault(exc)
                    reason = f"check failed: {_why(exc, n)}"
            if reason is None:
                outcome = Outcome(n.name, label, "fresh",
                                  f"check passed: {check}" if check
                                  else "values within their age limits; the node has no check"
                                  if n.watches else
                                  "the node watches no value and has no check (--force "
                                  "measures it again)", check)
            else:
                outcome = _calibrate(kit, n, subject, shots, reason, check, reporter,
                                     refine=checked, no_start=no_start)
        outcome.seconds = time.perf_counter() - t0
        status[(n.name, subject)] = outcome.status
        measured_by.update({(c.subject, c.name): n.name for c in outcome.changes
                            if outcome.status == "calibrated" and c.new != c.old})
        outcomes.append(outcome)
        reporter.done(outcome)
    reporter.close()
    return outcomes


def _calibrate(kit: Kit, n: Node, subject: Subject, shots: int, reason: str,
               check: CheckResult | None, reporter: LineReporter, *,
               refine: bool = False, no_start: Sequence[str] = ()) -> Outcome:
    """Calibrate ``n`` on ``subject``; with ``refine`` (its check failed) the node's
    refinement first, where it has one. ``no_start``: the nodes it starts from that failed
    in this run (their description), which block the calibration, not the refinement."""
    before = _state(kit.work)
    label = describe(subject)
    if refine and n.refine is not None:
        try:
            n.refine(kit, subject, shots, reporter.note)
            return Outcome(n.name, label, "calibrated", f"{reason}; refined", check,
                           _changes(kit.work, before))
        except _step_errors(n) as exc:
            _raise_rack_fault(exc)
            _restore(kit.work, before)
            reporter.note(f"  {n.name} on {label}: refinement failed ({_why(exc, n)}); "
                          + ("calibration blocked" if no_start else "calibrating"))
    if no_start:
        return Outcome(n.name, label, "blocked", f"{reason}; {no_start[0]} did not pass",
                       check)
    try:
        n.calibrate(kit, subject, shots, reporter.note)
    except _step_errors(n) as exc:
        _raise_rack_fault(exc)
        _restore(kit.work, before)
        return Outcome(n.name, label, "failed",
                       f"{reason}; calibration failed: {_why(exc, n)}", check)
    unset = [name for name in n.watches if name not in values_of(kit.work, subject)]
    if unset:  # a lab node's calibrate that sets nothing would be "calibrated" every run
        _restore(kit.work, before)
        return Outcome(n.name, label, "failed",
                       f"{reason}; calibration failed: it left {', '.join(unset)} unset, "
                       "which the node watches", check)
    return Outcome(n.name, label, "calibrated", reason, check, _changes(kit.work, before))


#: What fails one step, not the run: a fit that does not converge, and programs the backend
#: refuses before anything is sent (a stored value that makes a pulse exceed full scale or a
#: scan outlast the controller).
STEP_ERRORS = (FitError, InvalidRunInputError, CompilationError)


def _step_errors(n: Node) -> tuple[type[Exception], ...]:
    """What fails a step of ``n``: :data:`STEP_ERRORS` for labqpu's own nodes; any error for
    a lab's (:func:`~labqpu.calibration.graph.register_node`), whose bug must not end a
    watch: its traceback is logged."""
    return STEP_ERRORS if n in NODES else (Exception,)


def _raise_rack_fault(exc: Exception) -> None:
    """Raise ``exc`` again when the rack, not a value, is at fault (a job or an instrument
    that failed), and the Ctrl-C numba wrapped in it: they end the run, also from a lab's
    node, whose other errors fail only its step (:func:`_step_errors`)."""
    if isinstance(exc, JobError | InstrumentError):
        raise exc
    interrupt = wrapped_interrupt(exc)
    if interrupt is not None:
        raise interrupt from None


def _why(exc: Exception, n: Node) -> str:
    """A step's failure as its report says it: a fit's own words, else the error's type too
    (a lab node's unexpected error is logged with its traceback)."""
    if isinstance(exc, FitError):
        return str(exc)
    if not isinstance(exc, STEP_ERRORS):
        log.error("calibration node %s raised", n.name, exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _records_kept_if_stopped(records: list[ExperimentRecord],
                             directory: str | Path) -> Iterator[None]:
    """Inside, an exception (a Ctrl-C, a failed walk) first writes ``records`` to
    ``directory``, what was measured until then; one that cannot be written is a warning,
    and the exception goes on."""
    try:
        yield
    except BaseException:
        try:
            save_records(records, directory)
        except CalibrationError as exc:
            log.warning("%s", exc)
        raise


def graph_steps(backend, nodes: Sequence[str] | None = None, qubits: Sequence[int] | None = None
                ) -> tuple[list[int], list[tuple[Node, Subject]]]:
    """The qubits chosen (``qubits``, default all) and the graph's steps (node, qubit or edge)
    that :func:`run_graph` would walk for ``nodes`` (default all; the ``rb`` step is not one of
    them), without running anything.

    Raises:
        ValueError: a qubit is not a qubit number of the device, or ``nodes`` is empty.
        CalibrationError: a node needs feed-forward that no controller states, or a named
            node has nothing to calibrate among ``qubits`` (an edge node without an edge).
    """
    n_qubits = backend.config.num_qubits
    if nodes is not None and not list(nodes):
        raise ValueError("nodes is empty: name the nodes to check, or give None for all")
    chosen = list(range(n_qubits)) if qubits is None else \
        [] if isinstance(qubits, str) else list(qubits)
    if isinstance(qubits, str) or any(isinstance(q, bool) or not isinstance(q, numbers.Integral)
                                      for q in chosen):
        raise ValueError(f"qubits must be qubit numbers (int), got {qubits!r}")
    chosen = [int(q) for q in chosen]
    unknown = [q for q in chosen if not 0 <= q < n_qubits]
    if unknown:
        raise ValueError(f"qubit {unknown[0]} is not on device {backend.name} "
                         f"(qubits 0-{n_qubits - 1})")
    available = _available_nodes(backend)
    missing = sorted((set(nodes or ()) & {n.name for n in graph_nodes()})
                     - {n.name for n in available})
    if missing:
        controllers = ", ".join(c.name for c in backend.config.controllers)
        raise CalibrationError(f"{', '.join(missing)} needs feed-forward, and no controller of "
                               f"{backend.name} ({controllers}) states a feed-forward latency "
                               "in its capabilities; reset stays passive there")
    if nodes is not None:
        nodes = [name for name in nodes if name != RB_NODE]
    steps = plan(nodes, chosen, backend.config.coupling_map, available)
    idle = [name for name in nodes or () if not any(n.name == name for n, _ in steps)]
    if idle and not chosen:
        raise CalibrationError(f"{', '.join(idle)}: no qubit chosen; nothing was run")
    if idle:
        edges = ", ".join(f"{a}-{b}" for a, b in sorted({(min(e), max(e)) for e in
                                                          backend.config.coupling_map}))
        raise CalibrationError(
            (f"the node {idle[0]} calibrates" if len(idle) == 1 else
             f"the nodes {', '.join(idle)} calibrate")
            + f" edges, and qubits {sorted(set(chosen))} hold "
            f"none of {backend.name}'s edges ({edges}): give both qubits of an edge, e.g. "
            "--qubits 0 1; nothing was run")
    return chosen, steps


def run_graph(backend, nodes: Sequence[str] | None = None, *,
              qubits: Sequence[int] | None = None, force: bool = False, shots: int = 400,
              design: str | Path | None = None, now: datetime | None = None,
              reporter: LineReporter | None = None, commit: bool = True,
              record_directory: str | Path | None = None, rb: bool | None = None,
              rb_settings: RBSettings | None = None) -> RunReport:
    """Keep ``backend``'s device calibrated: walk the graph (``nodes``, default all, with
    their prerequisites) on ``qubits`` (default all) and the edges between them, from the
    newest snapshot; commit what was measured as one new snapshot (unless ``commit`` is
    false or nothing changed). ``force`` recalibrates the named nodes (all, when ``nodes`` is
    None) without checking them. Age limits are the wiring file's over the defaults
    (:func:`labqpu.store.staleness.wiring_age_limits`), judged at ``now`` (default: the current
    time). ``design`` (default: the wiring file's ``[calibration] design``, else the device's
    shipped design values) supplies what a snapshot does not hold. Every experiment that ran
    leaves its record and plot in ``record_directory`` (default: the calibration store's,
    :func:`~labqpu.calibration.records.experiments_directory`), whether or not the run
    commits.

    The ``rb`` step (:data:`labqpu.calibration.graph.RB_NODE`) runs when ``nodes`` is None or
    names it and ``commit`` is true, unless ``rb`` is False (True: always, and then it needs
    ``commit``). On the snapshot the graph committed, it benchmarks (``rb_settings``, default
    :class:`RBSettings`) the qubits and edges among ``qubits`` whose gate errors are out of
    date (:func:`labqpu.calibration.rb.outdated_subjects`; all of them when forced), except
    those whose graph steps failed or were blocked, and commits the gate errors that fitted as
    a second snapshot; a qubit or edge whose benchmark failed is reported failed (an edge
    whose qubit failed, too). Records go to the store's records directory.

    Returns the :class:`RunReport`; its ``table()`` is the summary. A single node name or
    qubit number stands for a list of one."""
    if isinstance(nodes, str):
        nodes = [nodes]
    if isinstance(qubits, int) and not isinstance(qubits, bool):
        qubits = [qubits]
    parent = backend.snapshot
    # on top of the newest snapshot when the backend could not use it (replacing it)
    base_id = backend.unusable_snapshot_id or parent.snapshot_id
    if rb is False and nodes is not None and RB_NODE in nodes:
        raise ValueError(f"nodes names {RB_NODE!r} and rb=False leaves it out: drop one")
    chosen, steps = graph_steps(backend, nodes, qubits)
    with_rb = rb if rb is not None else commit and (nodes is None or RB_NODE in nodes)
    if with_rb and not commit:
        raise ValueError("the rb step commits the gate errors it measures: give commit=True or "
                         "rb=False")
    directory = record_directory or experiments_directory(backend.config.store_path)
    if commit:
        backend.store.check_writable()  # before the measurements, not at their commit
        check_records_directory(directory)
    if with_rb:  # lengths no controller plays are a settings error, before any measurement
        check_rb_lengths(backend, rb_settings or RBSettings(), qubits=chosen)
    rb_forced = force and (nodes is None or RB_NODE in nodes)
    # the graph's steps leave rb out (graph_steps), so naming it among the forced is harmless
    forced = ({n.name for n in graph_nodes()} if nodes is None else set(nodes)) if force \
        else set()
    design_work = load_wiring_design(design, backend.config.path, backend.config.design_path,
                                     device=backend.name,
                                     num_qubits=backend.config.num_qubits)
    kit = Kit(backend, working_from_snapshot(parent, design_work))
    initial = dict(kit.work.measured_at)
    limits = wiring_age_limits(backend.config.raw, defaults=True)
    now = now or datetime.now(UTC)
    with _records_kept_if_stopped(kit.records, directory):
        outcomes = walk(kit, steps, shots=shots, forced=forced, limits=limits, now=now,
                        reporter=reporter)
    report = RunReport(outcomes, parent.snapshot_id, base_id=base_id,
                       unchecked=unchecked(steps, outcomes, _available_nodes(backend),
                                           backend.config.coupling_map))
    # before the commit: a snapshot never names a record that could not be written
    report.records = save_records(kit.records, directory, then="nothing was committed")
    measured = [c for o in outcomes for c in o.changes]
    builder = SnapshotBuilder.from_snapshot(parent)
    marked = record_failures(builder, parent, outcomes, [s for _, s in steps])
    if commit and (measured or marked):
        names = sorted({o.node for o in outcomes if o.status == "calibrated"})
        notes = [f"{', '.join(names)} recalibrated"] if names else []
        notes += [f"record of failed steps of {', '.join(marked)} updated"] if marked else []
        builder.notes = f"calibration runner: {'; '.join(notes)}"
        for (subject, name), stamp in kit.work.measured_at.items():
            if initial.get((subject, name)) == stamp:
                continue
            if isinstance(subject, int):
                builder.set_qubit(subject, name, kit.work.qubits[subject][name],
                                  kit.work.records[(subject, name)], timestamp=stamp)
            else:
                builder.set_pair(subject, name, kit.work.pairs[subject][name],
                                 kit.work.records[(subject, name)], timestamp=stamp)
        report.snapshot, left_out = commit_apart_onto_newest(
            backend.store, builder.build_document(), parent, parent_id=base_id)
        report.committed += [report.snapshot] if report.snapshot else []
        mark_left_out(report, {describe(s): s for _, s in steps}, left_out)
    if with_rb:
        _benchmark_outdated(backend, report, chosen, forced=rb_forced, limits=limits, now=now,
                            settings=rb_settings or RBSettings(),
                            reporter=reporter or LineReporter())
    return report


def _benchmark_outdated(backend, report: RunReport, qubits: Sequence[int], *, forced: bool,
                        limits: dict[str, float], now: datetime, settings: RBSettings,
                        reporter: LineReporter) -> None:
    """The ``rb`` step of :func:`run_graph`: benchmark what it must, commit, add the outcomes
    (one per qubit and edge; "fresh" for those whose gate errors still hold) to ``report``."""
    snapshot = backend.snapshot
    one_q, edges = rb_subjects(backend, qubits, None)
    subjects: list[Subject] = [*one_q, *edges]
    due = ({s: ["forced"] for s in subjects} if forced else
           {s: why for s, why in outdated_subjects(snapshot, limits, now).items()
            if s in subjects})
    stopped = {o.subject for o in report.outcomes if o.status in ("failed", "blocked")}
    todo: dict[Subject, str] = {}
    for s in sorted(subjects, key=lambda s: (isinstance(s, tuple), s)):
        label = describe(s)
        own = [label] + ([describe(q) for q in s] if isinstance(s, tuple) else [])
        if s not in due:
            report.outcomes.append(Outcome(
                RB_NODE, label, "fresh",
                "gate errors measured after their pulses and within their age limit"))
        elif any(x in stopped for x in own):
            report.outcomes.append(Outcome(RB_NODE, label, "blocked",
                                           "a calibration step of it did not pass"))
        else:
            todo[s] = "; ".join(due[s])
    if todo:
        reporter.note(f"randomized benchmarking of {', '.join(describe(s) for s in todo)}")
        _benchmark(backend, report, snapshot, todo, settings, reporter, subjects)
    else:
        _commit_failures(backend, report, snapshot, subjects, reporter)
    mine = [o for o in report.outcomes if o.node == RB_NODE]
    others = [o for o in report.outcomes if o.node != RB_NODE]
    report.outcomes = others + sorted(mine, key=lambda o: (o.subject.startswith("edge"),
                                                           o.subject))


def _benchmark(backend, report: RunReport, snapshot: Snapshot, todo: dict[Subject, str],
               settings: RBSettings, reporter: LineReporter, subjects: list[Subject]) -> None:
    """Benchmark ``todo`` (subject -> why) on ``snapshot``; add one outcome per subject to
    ``report`` ("calibrated", gate errors old -> new, or "failed"); commit the gate errors
    that fitted with the rb step's failure records (:func:`record_failures`) as one snapshot."""
    t0 = time.perf_counter()
    failed: dict[tuple[int, ...], str] = {}
    try:
        outcomes = benchmark_gates(backend, qubits=[s for s in todo if isinstance(s, int)],
                                   edges=[s for s in todo if isinstance(s, tuple)],
                                   settings=settings, progress=reporter.note, failed=failed)
    except (LabQpuError, JobError) as exc:  # a job or an instrument
        report.outcomes.extend(Outcome(RB_NODE, describe(s), "failed",
                                       f"{why}; {type(exc).__name__}: {exc}")
                               for s, why in todo.items())
        _commit_failures(backend, report, snapshot, subjects, reporter)
        return
    seconds = (time.perf_counter() - t0) / len(todo)
    for outcome in outcomes:
        s = _subject(outcome.data.qubits)
        label = describe(s)
        changes = []
        for gate, new in sorted(outcome.errors.items()):
            old = snapshot.gates.get(gate, {}).get("error")
            changes.append(Change(label, f"{gate} error", None if old is None else old.value,
                                  new))
        report.outcomes.append(Outcome(RB_NODE, label, "calibrated", todo[s],
                                       changes=changes, seconds=seconds))
    for qubits_of, reason in failed.items():
        s = _subject(qubits_of)
        report.outcomes.append(Outcome(RB_NODE, describe(s), "failed",
                                       f"{todo[s]}; randomized benchmarking failed: {reason}"))
    if not outcomes:
        _commit_failures(backend, report, snapshot, subjects, reporter)
        return
    builder, marked = _rb_failures(report, snapshot, subjects)
    try:
        committed, paths, left_out = commit_benchmarks(backend, snapshot, outcomes,
                                                       reporter.note, builder=builder)
    except CalibrationError as exc:  # another writer committed meanwhile, or a record not written
        lost = f"{type(exc).__name__}: {exc}"
        report.outcomes = [replace(o, status="failed", reason=f"{o.reason}; {lost}", changes=[])
                           if o.node == RB_NODE and o.status == "calibrated" else o
                           for o in report.outcomes]
        return
    mark_left_out(report, {describe(s): s for s in subjects}, left_out, node=RB_NODE)
    report.records.extend(paths)
    if committed is None:
        return
    if marked:
        reporter.note(f"record of failed steps of {', '.join(marked)} updated")
    report.snapshot = committed
    report.committed.append(committed)


def benchmark_and_record(backend, *, settings: RBSettings | None = None,
                         qubits: Sequence[int] | None = None, progress=None
                         ) -> tuple[Snapshot | None, list[RBOutcome], dict[str, str]]:
    """Randomized benchmarking of every qubit and cz edge of the backend's newest snapshot
    (of ``qubits`` and the edges between them, when given; ``settings`` default
    :class:`RBSettings`), as ``labqpu calibrate --rb`` and watch mode run it: a qubit or edge
    whose decay does not fit costs only itself. The gate errors that fitted and the record of
    the failed steps (node ``rb``, :func:`record_failures`) are committed as one snapshot whose
    parent is the one measured. Returns (the snapshot committed, None when nothing changed;
    the outcomes committed; {"qubit 2" / "edge 1-2": why} of the failures). When another
    writer committed meanwhile it goes on top of that writer's snapshot, without the gate
    errors of the qubits that writer changed and of their edges, which count as failures
    (:func:`~labqpu.store.merge.commit_apart_onto_newest`)."""
    measured = backend.snapshot
    base_id = backend.unusable_snapshot_id or measured.snapshot_id
    failed: dict[tuple[int, ...], str] = {}
    outcomes = benchmark_gates(backend, settings=settings or RBSettings(), progress=progress,
                               qubits=qubits, failed=failed)
    fitted = [_subject(o.data.qubits) for o in outcomes]
    why = {_subject(q): reason for q, reason in failed.items()}
    steps = ([Outcome(RB_NODE, describe(s), "calibrated", "") for s in fitted]
             + [Outcome(RB_NODE, describe(s), "failed", reason) for s, reason in why.items()])
    builder = SnapshotBuilder.from_snapshot(measured)
    marked = record_failures(builder, measured, steps, [*fitted, *why])
    if outcomes:
        snapshot, _, left_out = commit_benchmarks(backend, measured, outcomes, progress,
                                                  builder=builder, parent_id=base_id)
    elif marked:
        builder.notes = f"randomized benchmarking: failed steps of {', '.join(marked)} recorded"
        snapshot, left_out = commit_apart_onto_newest(backend.store, builder.build_document(),
                                                      measured, parent_id=base_id)
    else:
        snapshot, left_out = None, {}
    for s in [*fitted, *why]:
        lost = left_out_reason(subject_qubits(s), left_out)
        if lost:
            why[s] = f"{why[s]}; the failure {lost}" if s in why else f"measured, {lost}"
    outcomes = [o for o in outcomes if _subject(o.data.qubits) not in why]
    return snapshot, outcomes, {describe(s): reason for s, reason in why.items()}


def _commit_failures(backend, report: RunReport, snapshot: Snapshot, subjects: list[Subject],
                     reporter: LineReporter) -> None:
    """Commit the rb step's failure records (:func:`record_failures`) on ``snapshot`` when
    they changed; a commit refused (another writer) is noted, and the report stands."""
    builder, marked = _rb_failures(report, snapshot, subjects)
    if not marked:
        return
    builder.notes = f"calibration runner: failed steps of {', '.join(marked)} recorded"
    try:
        committed, left_out = commit_apart_onto_newest(backend.store, builder.build_document(),
                                                       snapshot)
    except CalibrationError as exc:
        reporter.note(f"the failed steps of {', '.join(marked)} were not recorded: {exc}")
        return
    mark_left_out(report, {describe(s): s for s in subjects}, left_out, node=RB_NODE)
    if committed is not None:
        report.snapshot = committed
        report.committed.append(committed)


def _rb_failures(report: RunReport, snapshot: Snapshot, subjects: list[Subject]
                 ) -> tuple[SnapshotBuilder, list[str]]:
    """A builder on ``snapshot`` holding the rb step's failure records after ``report``'s rb
    outcomes (:func:`record_failures`), and the subjects whose record changed."""
    builder = SnapshotBuilder.from_snapshot(snapshot)
    outcomes = [o for o in report.outcomes if o.node == RB_NODE]
    return builder, record_failures(builder, snapshot, outcomes, subjects)


def record_failures(builder: SnapshotBuilder, snapshot: Snapshot, outcomes: Iterable[Outcome],
                    subjects: Iterable[Subject]) -> list[str]:
    """Keep ``snapshot``'s record of failed calibration steps (``CALIBRATION_FAILED``) true
    after ``outcomes``, in ``builder``: a step that failed is added (with its reason), one that
    passed (fresh or calibrated) is removed, a blocked one is left as it was. A subject's record
    is rewritten only when the set of its failed steps changes, so it keeps the time and the
    reasons of its first failures. Returns the labels of the subjects (among ``subjects``)
    whose record changed."""
    by_label = {describe(s): s for s in subjects}
    results: dict[Subject, dict[str, str | None]] = {}
    for o in outcomes:
        if o.subject in by_label and o.status != "blocked":
            results.setdefault(by_label[o.subject], {})[o.node] = \
                o.reason if o.status == "failed" else None
    changed = []
    for subject, steps in results.items():
        params = (snapshot.qubits if isinstance(subject, int) else snapshot.pairs).get(subject, {})
        old = dict(params[CALIBRATION_FAILED].value) if CALIBRATION_FAILED in params else {}
        new = {**{node: why for node, why in steps.items() if why is not None}, **old}
        for node in [node for node, why in steps.items() if why is None]:
            new.pop(node, None)
        if new.keys() == old.keys():
            continue
        changed.append(describe(subject))
        if isinstance(subject, int):
            if new:
                builder.set_qubit(subject, CALIBRATION_FAILED, new, "calibration runner")
            else:
                builder.remove_qubit(subject, CALIBRATION_FAILED)
        elif new:
            builder.set_pair(subject, CALIBRATION_FAILED, new, "calibration runner")
        else:
            builder.remove_pair(subject, CALIBRATION_FAILED)
    return changed


def _subject(qubits: Sequence[int]) -> Subject:
    """The qubit of a 1-qubit benchmark, the (low, high) edge of a 2-qubit one."""
    return qubits[0] if len(qubits) == 1 else (min(qubits), max(qubits))


def bootstrap(backend, design: Working, *, shots: int = 400,
              progress: Callable[[str], None] = log.info,
              record_directory: str | Path | None = None) -> dict:
    """Run every node of the graph on ``backend``, forced, starting from ``design``; returns
    the snapshot document (not yet committed). Raises ``FitError`` naming every step that
    failed or was blocked, so a failure leaves the store as it was. Every experiment's record
    and plot are written to ``record_directory`` (default: the calibration store's,
    :func:`~labqpu.calibration.records.experiments_directory`), checked before anything is
    measured, also when a step failed (they are what was measured): the document names them
    (a review's case: without a directory none were written)."""
    check_bootstrap_plan(design, backend.config, "the design values")
    directory = record_directory or experiments_directory(backend.config.store_path)
    check_records_directory(directory)
    kit = Kit(backend, design)
    dev = design.device
    qubits = sorted(design.qubits)
    for q in qubits:
        design.qubits[q].setdefault("flux_bias_a", 0.0)
    for q in qubits:  # a first LO plan from the design frequencies, for spectroscopy
        if "drive_lo_frequency_hz" not in design.qubits[q]:
            choose_drive_lo(kit, q)
    steps = plan(None, qubits, backend.config.coupling_map, _available_nodes(backend))
    with _records_kept_if_stopped(kit.records, directory):
        outcomes = walk(kit, steps, shots=shots, forced={n.name for n in graph_nodes()},
                        reporter=LineReporter(progress))
    save_records(kit.records, directory, then="nothing was committed")
    bad = [o for o in outcomes if o.status in ("failed", "blocked")]
    if bad:
        raise FitError("bootstrap: " + "; ".join(f"{o.node} on {o.subject}: {o.reason}"
                                                 for o in bad))
    builder = SnapshotBuilder(backend.config.device_name,
                              notes="bootstrap calibration (labqpu calibrate --bootstrap)")
    for q in qubits:
        for name in SHARED_FIELDS:
            builder.set_qubit(q, name, dev[name], "design")
        for name, value in design.qubits[q].items():
            if name == "resonator_hz" and (q, name) not in design.records:
                continue  # the design's estimate, not a measurement
            builder.set_qubit(q, name, value, design.records.get((q, name), "design"),
                              timestamp=design.measured_at.get((q, name)))
    for pair, params in design.pairs.items():
        for name, value in params.items():
            builder.set_pair(pair, name, value, design.records[(pair, name)],
                             timestamp=design.measured_at.get((pair, name)))
    return builder.build_document()
