"""``labqpu calibrate`` (:mod:`labqpu.cli`): check and recalibrate the calibration graph's
nodes, bootstrap a snapshot from design values, randomized benchmarking, the watch mode
(:mod:`labqpu.cli_watch`) and the store's history commands (:mod:`labqpu.cli_store`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from labqpu.cli_options import (
    SIMULATOR_HELP,
    non_negative_int,
    positive_int,
    shots_and_seed_problem,
)
from labqpu.cli_store import STORE_COMMANDS, export_snapshot, file_options_problem, store_command
from labqpu.cli_watch import watch_command, watch_problem

#: Shots per point of a calibration experiment unless --shots says otherwise.
CALIBRATION_SHOTS = 400


def calibrate_parser(sub, devices: str) -> None:
    """Declare ``labqpu calibrate`` and its options on the subcommand parsers ``sub``
    (``devices``: the built-in devices, for the ``--config`` help)."""
    cal = sub.add_parser("calibrate", help="calibrate the device")
    cal.add_argument("nodes", nargs="*", metavar="NAME",
                     help="nodes of the calibration graph to check and, where needed, "
                          "recalibrate, with their prerequisites (rabi, ramsey, drag, readout, "
                          "t1, cz ...); or a store command: history, diff A B, rollback ID")
    cal.add_argument("--all", action="store_true", help="every node of the graph, then its "
                     "rb step: randomized benchmarking of the gate errors left out of date")
    cal.add_argument("--qubits", type=_qubit, nargs="+", action="extend",
                     help="only these qubits (and the edges between them); default all; "
                     "given twice, both lists")
    cal.add_argument("--force", action="store_true", help="recalibrate the named nodes (with "
                     "--all: every node, and the rb step benchmarks every gate) without "
                     "checking them first")
    cal.add_argument("--bootstrap", action="store_true",
                     help="measure everything from the design values, then the gate errors")
    cal.add_argument("--rb", action="store_true",
                     help="measure every gate error (randomized benchmarking) of the newest "
                          "snapshot, out of date or not, and commit them (the node rb "
                          "measures only those out of date)")
    cal.add_argument("--no-rb", action="store_true",
                     help="with --bootstrap, --all or node names: skip randomized "
                          "benchmarking (the graph's rb step)")
    cal.add_argument("--rb-lengths-1q", type=positive_int, nargs="+", metavar="M",
                     help="RB: 1-qubit sequence lengths in Cliffords (default 1 50 150 300 600)")
    cal.add_argument("--rb-lengths-2q", type=positive_int, nargs="+", metavar="M",
                     help="RB: 2-qubit sequence lengths in Cliffords (default 1 10 30 60 100)")
    cal.add_argument("--rb-seeds", type=positive_int, metavar="N",
                     help="RB: random sequences per length (default 4)")
    cal.add_argument("--watch", action="store_true",
                     help="keep the device calibrated: a round of checks (recalibrating what "
                          "fails) every --interval, until interrupted or --rounds are done")
    cal.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                     help="--watch: time between rounds (s, default 3600)")
    cal.add_argument("--rounds", type=int, default=None, help="--watch: stop after N rounds")
    cal.add_argument("--rb-every", type=positive_int, default=None, metavar="N",
                     help="--watch: end every N-th round with randomized benchmarking of the "
                          "watched qubits and edges, committing the Target's gate errors "
                          "(--rb-lengths-1q/2q and --rb-seeds apply)")
    cal.add_argument("--clock", choices=("wall", "device"), default=None,
                     help="--watch: let the interval pass as wall time (sleep) or as idle "
                          "shots on the device (default: device on the embedded simulator "
                          "with --rounds, where a simulated hour then passes at once; wall "
                          "otherwise)")
    cal.add_argument("--config", help=f"lab.toml, or a built-in device: {devices}")
    cal.add_argument("--simulator", action="store_true", help=SIMULATOR_HELP)
    cal.add_argument("--design", help="design values (default: the wiring file's "
                     "[calibration] design, else the device's shipped file)")
    cal.add_argument("--shots", type=int, default=None,
                     help=f"shots per point (default {CALIBRATION_SHOTS})")
    cal.add_argument("--export", help="also write the snapshot as JSON to this file")
    cal.add_argument("--param", help="history: a parameter name (e.g. t1_s)")
    cal.add_argument("--qubit", type=int, help="history --param: the qubit")
    cal.add_argument("--pair", type=_pair, help="history --param: the edge, as A-B")
    cal.add_argument("--gate", help="history --param: the gate key, e.g. sx:0")
    cal.add_argument("--since", help="history --param: ISO-8601 time, e.g. 2026-11-22T00:00Z")
    cal.add_argument("--limit", type=positive_int, default=None,
                     help="history: rows (default 50)")
    cal.set_defaults(func=calibrate_command)


def calibrate_command(args: argparse.Namespace) -> int:
    from labqpu import LabProvider
    from labqpu.calibration.design import (
        check_bootstrap_plan,
        default_design_path,
        load_wiring_design,
    )
    from labqpu.calibration.graph import RB_NODE
    from labqpu.calibration.records import check_records_directory, experiments_directory
    from labqpu.calibration.runner import bootstrap

    if args.nodes and args.nodes[0] in STORE_COMMANDS:
        return store_command(args)
    history_only = [f"--{name}" for name in ("param", "qubit", "pair", "gate", "since", "limit")
                    if getattr(args, name) is not None]
    if history_only:
        hint = " (for the qubits to calibrate: --qubits)" if args.qubit is not None else ""
        print(f"labqpu calibrate: {', '.join(history_only)}: only for `labqpu calibrate "
              f"history`{hint}", file=sys.stderr)
        return 2
    if args.shots is None:
        args.shots = CALIBRATION_SHOTS
    nodes = args.nodes or None
    problem = watch_problem(args)
    if problem:
        print(f"labqpu calibrate: {problem}", file=sys.stderr)
        return 2
    if not (args.bootstrap or args.rb or args.all or nodes or args.watch):
        print("labqpu calibrate: give --all or node names, --watch, --bootstrap or --rb, or "
              "one of history, diff, rollback", file=sys.stderr)
        return 2
    if args.all and nodes:
        print(f"labqpu calibrate: give --all or node names ({' '.join(nodes)}), not both",
              file=sys.stderr)
        return 2
    if args.bootstrap and (args.all or nodes or args.qubits or args.force):
        print("labqpu calibrate: --bootstrap runs every node on every qubit; it takes no "
              "--all, node names, --qubits or --force", file=sys.stderr)
        return 2
    problem = shots_and_seed_problem(args.shots, None)
    if problem:
        print(f"labqpu calibrate: {problem}", file=sys.stderr)
        return 2
    rb_options = [flag for flag, value in (("--rb-lengths-1q", args.rb_lengths_1q),
                                           ("--rb-lengths-2q", args.rb_lengths_2q),
                                           ("--rb-seeds", args.rb_seeds)) if value]
    if args.rb and args.no_rb:
        print("labqpu calibrate: --rb and --no-rb contradict each other: give one of them",
              file=sys.stderr)
        return 2
    runs_rb = args.rb or (args.bootstrap and not args.no_rb) or bool(args.watch and args.rb_every)
    # the graph's own rb step: gate errors out of date, after --all or when named
    rb_step = not (args.rb or args.no_rb) and (args.all or RB_NODE in (nodes or ()))
    if args.no_rb and not (args.bootstrap or args.all or nodes):
        print("labqpu calibrate: --no-rb applies to --bootstrap, --all and node names",
              file=sys.stderr)
        return 2
    if args.no_rb and RB_NODE in (nodes or ()):
        print(f"labqpu calibrate: --no-rb with the node {RB_NODE!r}: give one of them",
              file=sys.stderr)
        return 2
    try:
        _rb_settings(args)
    except ValueError as exc:  # "<setting>: why"
        print(f"labqpu calibrate: {_rb_option(exc)}", file=sys.stderr)
        return 2
    if rb_options and not (runs_rb or rb_step):
        print(f"labqpu calibrate: {', '.join(rb_options)} set randomized benchmarking, which "
              "this command does not run; add --rb (or use --all or the node rb, --bootstrap "
              "without --no-rb, or --watch with --rb-every)",
              file=sys.stderr)
        return 2
    if nodes:
        from labqpu.calibration.graph import node

        try:
            for name in nodes:
                if name != RB_NODE:
                    node(name)  # an unknown name is a one-line error before anything starts
        except ValueError as exc:
            print(f"labqpu: {exc}", file=sys.stderr)
            return 2
    config = None  # the wiring file, read once for the checks below that need it
    if args.qubits or args.export or args.bootstrap:
        from labqpu.rack.config import load_config, resolve_config_path

        config = load_config(resolve_config_path(args.config)[0])
    if args.qubits:
        n = config.channels.num_qubits
        off = [q for q in args.qubits if not 0 <= q < n]
        if off:
            print(f"labqpu calibrate: --qubits {' '.join(map(str, off))}: {config.device_name} "
                  f"has qubits 0-{n - 1}", file=sys.stderr)
            return 2
    problem = file_options_problem(args, config)
    if problem:
        print(f"labqpu calibrate: {problem}", file=sys.stderr)
        return 2
    design = None
    if args.bootstrap:  # the design values are checked before anything starts
        from labqpu.rack.limits import check_against_wiring

        design = load_wiring_design(args.design, config.path, config.design_path,
                                    device=config.device_name,
                                    num_qubits=config.channels.num_qubits,
                                    check=lambda document: check_against_wiring(document,
                                                                                config))
        named = args.design or config.design_path or default_design_path(config.device_name)
        check_bootstrap_plan(design, config, f"design file {named}")
    with _empty_store_warning(quiet=args.bootstrap):
        provider = LabProvider(args.config, simulator=args.simulator or None)
    with provider:
        backend = provider.backend()
        backend.store.check_writable()  # before minutes of measurements, not at their commit
        check_records_directory(experiments_directory(backend.config.store_path))
        if runs_rb or rb_step:  # on the newest pulses (none in an empty store: no check)
            from labqpu.calibration.rb import check_rb_lengths
            from labqpu.errors import CalibrationSettingsError

            try:
                check_rb_lengths(backend, _rb_settings(args), qubits=args.qubits)
            except CalibrationSettingsError as exc:
                print(f"labqpu calibrate: {_rb_option(exc)}", file=sys.stderr)
                return 2
        t0 = time.perf_counter()

        def progress(msg: str) -> None:
            print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

        if args.watch:
            return watch_command(provider, backend, nodes, args,
                                 _rb_settings(args) if args.rb_every else None)
        snapshot = None
        with what_an_interrupt_left(backend):
            if args.bootstrap:
                records = experiments_directory(backend.config.store_path)
                start = backend.store.latest_id()
                document = bootstrap(backend, design, shots=args.shots,
                                     progress=progress, record_directory=records)
                snapshot = commit_bootstrap(backend.store, document, start, records)
                print(f"committed calibration snapshot {snapshot.snapshot_id} to "
                      f"{backend.config.store_path}; experiment records and plots in {records}")
            elif args.all or nodes:
                report = _run_graph(backend, nodes, args, progress, rb_step)
                snapshot = report.snapshot or backend.snapshot  # nothing committed: the newest
                if not report.ok:  # what it committed (or the newest) is exported all the same
                    export_snapshot(args, backend, snapshot)
                    return 1
                if not (runs_rb or rb_step):
                    _report_outdated_gate_errors(backend)
            if runs_rb:
                measured, fitted = _randomized_benchmarking(backend, progress,
                                                            _rb_settings(args), args.qubits)
                snapshot = measured or backend.snapshot
                if not fitted:
                    export_snapshot(args, backend, snapshot)
                    return 1
        return 0 if export_snapshot(args, backend, snapshot) else 1


def commit_bootstrap(store, document: dict, start: int | None, records: Path):
    """Commit a bootstrap's ``document`` as the child of snapshot ``start``, the newest when
    it started (None: the store was empty). A snapshot another writer committed meanwhile is
    not undone: the document goes to ``records/bootstrap-<time>.json`` instead and the error
    says so (a review's case: a colleague's commit during a bootstrap vanished under a
    snapshot that named it as its parent).

    Raises:
        StaleSnapshotError: another writer committed since ``start``; nothing was written to
            the store.
    """
    from labqpu.errors import StaleSnapshotError
    from labqpu.store.validation import canonical_json

    try:
        return store.commit(document, parent_id=start, expect_parent=True)
    except StaleSnapshotError as exc:
        path = records / f"bootstrap-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(canonical_json(document) + "\n")
        raise StaleSnapshotError(
            f"calibration store {store.path}: snapshot {store.latest_id()} was committed while "
            f"the bootstrap measured (it started on snapshot {start}); the bootstrap's values "
            f"were not committed over it and are in {path}: run the bootstrap again, or "
            "commit them anyway from Python with "
            "`store.commit(json.loads(Path(file).read_text()))`") from exc


@contextlib.contextmanager
def what_an_interrupt_left(backend) -> Iterator[None]:
    """On Ctrl-C inside, say on stderr what the calibration store holds (a run interrupted
    after it committed its graph's values, during randomized benchmarking, said only
    "interrupted"), then let the interrupt go on, marked as said (``labqpu.cli.main`` then
    adds no second line)."""
    from labqpu.calibration.records import experiments_directory
    from labqpu.errors import LabQpuError, interrupts_as_such

    before = backend.store.latest_id()
    try:
        with interrupts_as_such():
            yield
    except KeyboardInterrupt as interrupt:
        interrupt.said = True
        try:
            what = _what_was_committed(backend, before)
        except LabQpuError as exc:  # the interrupt goes on whatever the store says
            what = f"the calibration store could not be read ({exc})"
        print(f"labqpu calibrate: interrupted; {what}; the experiment records made so far are "
              f"in {experiments_directory(backend.config.store_path)}; the same command again "
              "starts from the newest snapshot", file=sys.stderr, flush=True)
        raise


def _what_was_committed(backend, before: int | None) -> str:
    """Whether the store's newest snapshot is still ``before`` (None: empty), in words."""
    newest = backend.store.latest_id()
    if newest == before:
        return "nothing was committed " + (f"(the store's newest snapshot is still {before})"
                                           if before is not None else "(the store is empty)")
    return (f"the store's newest snapshot is {newest} (it was {before}): what was committed "
            f"before the interrupt stays (`{backend.provider.command('calibrate history')}`)")


@contextlib.contextmanager
def _empty_store_warning(*, quiet: bool) -> Iterator[None]:
    """With ``quiet`` (a bootstrap, which commits the first snapshot), a backend opened inside
    does not warn that its store is empty and say to bootstrap."""
    from labqpu.backend.backend import EMPTY_STORE_LOG

    level = EMPTY_STORE_LOG.level
    if quiet:
        EMPTY_STORE_LOG.setLevel(logging.ERROR)
    try:
        yield
    finally:
        EMPTY_STORE_LOG.setLevel(level)


def _run_graph(backend, nodes, args: argparse.Namespace, progress, rb_step: bool):
    """The graph runner (with its rb step when ``rb_step``) with a progress bar on a terminal,
    plain lines otherwise; prints the summary table and returns the report."""
    from labqpu.calibration.runner import LineReporter, run_graph

    reporter = _BarReporter() if sys.stdout.isatty() else LineReporter(progress)
    report = run_graph(backend, nodes, qubits=args.qubits, force=args.force, shots=args.shots,
                       design=args.design, reporter=reporter, rb=rb_step,
                       rb_settings=_rb_settings(args) if rb_step else None)
    print(report.table())
    if report.records:
        print(f"{len(report.records)} experiment record(s) and plot(s) in "
              f"{report.records[0].parent}")
    return report


class _BarReporter:
    """The runner's progress as a tqdm bar; notes and finished steps printed above it."""

    def __init__(self) -> None:
        self.bar = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def step(self, node: str, subject: str) -> None:
        self.bar.set_description(f"{node} {subject}")

    def done(self, outcome) -> None:
        self.bar.write(f"{outcome.node} {outcome.subject}: {outcome.status} "
                       f"({outcome.reason})")
        self.bar.update(1)

    def note(self, message: str) -> None:
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


def _pair(text: str) -> tuple[int, int]:
    """An argparse type: an edge written A-B (whole numbers)."""
    a, dash, b = text.partition("-")
    if not (dash and a.isascii() and b.isascii() and a.isdigit() and b.isdigit()):
        raise argparse.ArgumentTypeError(f"must be an edge written A-B, e.g. 1-2, got {text!r}")
    return int(a), int(b)


def _qubit(text: str) -> int:
    """An argparse type: a qubit number (--qubits takes every word after it, so a node name
    written after the list lands here: say so)."""
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        from labqpu.calibration.graph import NODES, RESERVED_NAMES, graph_nodes
        from labqpu.errors import CalibrationError

        try:
            nodes = graph_nodes()
        except CalibrationError:  # a lab's broken package: said when a node is looked up
            nodes = NODES
        if text in {n.name for n in nodes} | set(RESERVED_NAMES):  # rb and the store commands
            raise argparse.ArgumentTypeError(
                f"must be qubit numbers, got {text!r}; put node names before --qubits "
                f"(labqpu calibrate {text} --qubits ...) or end the list with --") from None
        raise argparse.ArgumentTypeError(f"must be qubit numbers (whole numbers >= 0), got "
                                         f"{text!r}") from None


def _report_outdated_gate_errors(backend) -> None:
    """Print which gate errors of the backend's newest snapshot no longer describe its gates
    (``labqpu.calibration.rb.outdated_gate_errors``), and how to measure them again."""
    from labqpu.backend.target import age_limits
    from labqpu.calibration.rb import outdated_gate_errors

    due = outdated_gate_errors(backend.snapshot, age_limits(backend.config, defaults=True),
                               datetime.now(UTC))
    if due:
        shown = "; ".join(due[:6]) + (f"; and {len(due) - 6} more" if len(due) > 6 else "")
        print(f"gate errors out of date ({len(due)}): {shown}. The Target's error figures "
              f"(and the layouts they steer) describe the old pulses: "
              f"`{backend.provider.command('calibrate rb')}` measures them again (`--rb`: "
              "every gate).")


def _rb_settings(args: argparse.Namespace):
    """The RB settings of ``--rb-lengths-1q``, ``--rb-lengths-2q`` and ``--rb-seeds`` (the
    defaults of ``RBSettings`` where not given)."""
    from labqpu.calibration.rb import RBSettings

    defaults = RBSettings()
    return RBSettings(lengths_1q=tuple(args.rb_lengths_1q or defaults.lengths_1q),
                      lengths_2q=tuple(args.rb_lengths_2q or defaults.lengths_2q),
                      seeds=args.rb_seeds or defaults.seeds)


def _rb_option(exc: Exception) -> str:
    """An RB settings error "<setting>: why" as "<option>: why"."""
    setting, _, why = str(exc).partition(": ")
    option = {"lengths_1q": "--rb-lengths-1q", "lengths_2q": "--rb-lengths-2q",
              "seeds": "--rb-seeds"}.get(setting, setting)
    return f"{option}: {why}"


def _randomized_benchmarking(backend, progress, rb_settings, qubits=None):
    """RB of every qubit and cz edge of the backend's newest snapshot (of ``qubits`` and the
    edges between them, when given) with ``rb_settings``; writes each benchmark's record and
    plot next to the store, commits the gate errors that fitted and the record of the qubits
    and edges that failed as a new snapshot (its parent the one measured). Returns (the
    snapshot, or None when nothing was committed; whether every benchmark fitted)."""
    from labqpu.calibration.runner import benchmark_and_record
    from labqpu.errors import CalibrationSettingsError

    try:
        snapshot, _, failed = benchmark_and_record(backend, settings=rb_settings,
                                                   progress=progress, qubits=qubits)
    except CalibrationSettingsError as exc:  # lengths the bootstrap's new pulses make too long
        print(f"labqpu calibrate: {_rb_option(exc)}; nothing was benchmarked", file=sys.stderr)
        return None, False
    for subject, reason in failed.items():
        print(f"randomized benchmarking of {subject} failed: {reason}", file=sys.stderr)
    if snapshot is not None:
        print(f"committed calibration snapshot {snapshot.snapshot_id} (gate errors from "
              f"randomized benchmarking{', failures recorded' if failed else ''}) to "
              f"{backend.config.store_path}")
    return snapshot, not failed
