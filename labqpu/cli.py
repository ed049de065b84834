"""The ``labqpu`` command.

    labqpu run --demo                  Bell circuit on the embedded simulator, counts printed
    labqpu run examples/bell.py        run a script (it uses LabProvider itself)
    labqpu run circuit.qasm            an OpenQASM 2/3 file, transpiled and run, counts printed
    labqpu sim [lab.toml]              run the firmware simulator in the foreground
    labqpu status [--config lab.toml]  instruments, controller and calibration at a glance
    labqpu calibrate --all             check every calibration, recalibrate what fails or aged
    labqpu calibrate ramsey --qubits 2 run one node of the graph (and its prerequisites)
    labqpu calibrate --bootstrap       measure a complete snapshot from design values
    labqpu calibrate history|diff|rollback   the calibration store's history
    labqpu draw bell.py -o bell.png    draw the compiled pulse program of a circuit
                                       (a .py defining `circuit` or `qc`, or a .qasm file)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import runpy
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from labqpu.cli_draw import (
    CIRCUIT_NAMES,
    as_run_from_the_command_line,
    draw_command,
    is_circuit_script,
    load_circuit_file,
    parameter_problem,
    script_reason,
)
from labqpu.cli_store import (
    STORE_COMMANDS,
    export_snapshot,
    file_options_problem,
    store_command,
)
from labqpu.cli_watch import watch_command, watch_problem


def _bell():
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2, 2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    return qc


def _run_circuit(qc, config: str | None, shots: int, seed: int | None, *,
                 simulator: bool = False, optimization_level: int | None = None
                 ) -> tuple[dict[str, int], str, Callable[[str], str]]:
    """Transpile ``qc`` for the device, run it and print the counts; returns them with a
    ``"job <id>, <s> s"`` note and the provider's :meth:`~labqpu.LabProvider.command`."""
    from qiskit import transpile
    from qiskit.transpiler.exceptions import TranspilerError

    from labqpu import LabProvider
    from labqpu.errors import LabQpuError
    from labqpu.rack.config import load_config, resolve_config_path

    wiring = load_config(resolve_config_path(config)[0])
    if qc.num_qubits > wiring.num_qubits:  # before a simulator is started for nothing
        raise LabQpuError(f"cannot run the {qc.num_qubits}-qubit circuit {qc.name!r} on "
                          f"{wiring.device_name}, which has {wiring.num_qubits} qubits")
    t0 = time.perf_counter()
    with LabProvider(config, simulator=simulator or None) as provider:
        backend = provider.backend()
        started = time.perf_counter()
        print(f"backend {backend.name}: {backend.num_qubits} qubits, calibration snapshot "
              f"{backend.target.snapshot_id}"
              + (f", simulator pid {provider.simulator.pid}" if provider.simulator else "")
              + f" (up in {started - t0:.1f} s)")
        try:
            native = transpile(qc, backend, optimization_level=optimization_level,
                               seed_transpiler=1)
        except TranspilerError as exc:
            raise _uncalibrated(backend, qc, exc) from exc
        print(f"transpiled: {dict(native.count_ops())}")
        job = backend.run(native, shots=shots, seed_simulator=seed)
        counts = job.result(timeout=120).get_counts()
        elapsed = time.perf_counter() - started
    print(f"counts ({shots} shots): {dict(sorted(counts.items()))}"
          + ("" if qc.num_clbits else " (the circuit measures nothing into classical bits)"))
    return counts, f"job {job.job_id()[:8]}, {elapsed:.2f} s", provider.command


def _uncalibrated(backend, qc, exc: Exception) -> Exception:
    """The error for a circuit the transpiler refused: when the snapshot leaves some of the
    device's qubits or edges out of the Target, which ones it gives gates and what to run;
    on a Target of the whole device, the transpiler's reason alone (a NaN angle is not a
    calibration's fault)."""
    from labqpu.errors import LabQpuError

    target = backend.target
    drive = sorted(q for (q,) in target.qargs_for_operation_name("sx") or ())
    edges = sorted(target.qargs_for_operation_name("cz") or ()) if "cz" in target else []
    device_edges = {tuple(sorted(edge)) for edge in backend.config.coupling_map}
    if (drive == list(range(backend.num_qubits))
            and device_edges <= {tuple(sorted(edge)) for edge in edges}):
        return LabQpuError(f"cannot run the {qc.num_qubits}-qubit circuit {qc.name!r} on "
                           f"{backend.name}: {getattr(exc, 'message', exc)}")
    if not backend.snapshot.qubits:
        return LabQpuError(
            f"cannot run {qc.name!r} on {backend.name}: calibration store "
            f"{backend.config.store_path} holds no snapshot with a calibrated qubit; measure "
            f"one with `{backend.provider.command('calibrate --bootstrap --design DESIGN.toml')}`")
    return LabQpuError(
        f"cannot run the {qc.num_qubits}-qubit circuit {qc.name!r} on {backend.name}: "
        f"calibration snapshot {target.snapshot_id} in {backend.config.store_path} gives "
        f"gates on qubits {drive or 'none'} and cz on edges {edges or 'none'}; run "
        f"`{backend.provider.command('calibrate --all')}` (or --bootstrap) to measure the rest "
        "(transpiler: "
        f"{getattr(exc, 'message', exc)})")


def _demo(config: str | None, shots: int, seed: int | None, simulator: bool) -> int:
    """Run the Bell demo; 1 when it shows no Bell pair: P(00) + P(11) under
    :data:`BELL_FLOOR`, or 00 and 11 not about as frequent as each other (a pair left in 00
    scores well on P(00) + P(11) alone). Under :data:`BELL_VERDICT_SHOTS` shots, no verdict."""
    counts, note, command = _run_circuit(_bell(), config, shots, seed, simulator=simulator)
    p00, p11 = (counts.get(k, 0) / sum(counts.values()) for k in ("00", "11"))
    print(f"P(00) + P(11) = {p00 + p11:.3f} = {p00:.3f} + {p11:.3f}   ({note})")
    if shots < BELL_VERDICT_SHOTS:
        return 0
    if p00 + p11 < BELL_FLOOR or min(p00, p11) < BELL_BALANCE * (p00 + p11):
        print(f"labqpu: a Bell pair gives 00 and 11, about equally often; this one gave "
              f"{p00:.3f} and {p11:.3f}: its gates are not doing their work; see "
              f"`{command('status')}`, and recalibrate: `{command('calibrate --all')}`",
              file=sys.stderr)
        return 1
    return 0


#: Least P(00) + P(11) of a working Bell pair (a healthy device gives 0.95-0.98; a uniform
#: spread of outcomes gives 0.5).
BELL_FLOOR = 0.75
#: Least share of P(00) + P(11) each of the two may have in a working Bell pair (a healthy
#: device gives ~0.5 each; 0.3 lies ~17 standard deviations below it at 2000 shots, 4 at 100).
BELL_BALANCE = 0.3
#: Fewest shots the demo judges the pair on (below, chance alone fails a perfect pair often).
BELL_VERDICT_SHOTS = 100


SIMULATOR_HELP = ("start the embedded simulator of the --config file (a file whose ports are "
                  "0 needs it; a built-in device always runs on it)")


DEMO_SHOTS = 2000
#: Shots per point of a calibration experiment unless --shots says otherwise.
CALIBRATION_SHOTS = 400


#: The backend's limit on shots per circuit (``labqpu.backend.backend.MAX_SHOTS``, which
#: ``tests/test_cli.py`` checks against this copy; the command does not import the backend
#: to say it).
MAX_SHOTS = 100_000


def _shots_and_seed_problem(shots: int, seed: int | None) -> str | None:
    """What is wrong with ``--shots`` / ``--seed``, before anything starts; None if nothing."""
    if not 1 <= shots <= MAX_SHOTS:
        return f"--shots must be a whole number from 1 to {MAX_SHOTS}, got {shots}"
    from labqpu.drivers.protocol import SEED_LIMIT  # not at import: --help stays light

    if seed is not None and not 0 <= seed < SEED_LIMIT:
        return f"--seed must be a whole number from 0 to 2**63 - 1, got {seed}"
    return None


def _run(args: argparse.Namespace) -> int:
    shared = [f"--{name}" for name in ("config", "shots", "seed")
              if getattr(args, name) is not None] + ["--simulator"] * args.simulator
    if args.demo and args.script:
        print(f"labqpu run: give either a file (an OpenQASM file or a Python script) or "
              f"--demo, not both (got {args.script})", file=sys.stderr)
        return 2
    shots = DEMO_SHOTS if args.shots is None else args.shots
    problem = _shots_and_seed_problem(shots, args.seed)
    if problem:
        print(f"labqpu: {problem}", file=sys.stderr)
        return 2
    if args.demo:
        return _demo(args.config, shots, args.seed, args.simulator)
    if not args.script:
        print("labqpu run: give a script, an OpenQASM file or --demo", file=sys.stderr)
        return 2
    script = Path(args.script)
    if not script.is_file():
        print(f"labqpu: no such file: {script}", file=sys.stderr)
        return 2
    if script.suffix.lower() == ".toml":  # anything else may be a Python script
        print(f"labqpu run: give a Python script or an OpenQASM file (.qasm); {script} looks "
              f"like a wiring file: labqpu run --demo --config {script}", file=sys.stderr)
        return 2
    suffix = script.suffix.lower()
    try:
        circuit_file = suffix == ".qasm" or (suffix == ".py" and is_circuit_script(script))
    except ValueError as exc:  # a .py that does not compile
        print(str(exc), file=sys.stderr)
        return 2
    if circuit_file:
        # Options may also follow the file's path: labqpu run bell.qasm --shots 500.
        qasm = _Parser(prog=f"labqpu run {script}", note=None if suffix == ".qasm" else (
            f"{script} is read as a circuit file (it imports only qiskit, numpy and number "
            "modules, has no __main__ block and defines `circuit` or `qc`), which takes these "
            "options only"))
        qasm.add_argument("--config", default=args.config)
        qasm.add_argument("--shots", type=int, default=shots)
        qasm.add_argument("--seed", type=int, default=args.seed)
        qasm.add_argument("--simulator", action="store_true", default=args.simulator)
        opts = qasm.parse_args(args.script_args)
        problem = _shots_and_seed_problem(opts.shots, opts.seed)
        if problem:
            print(f"labqpu: {problem}", file=sys.stderr)
            return 2
        try:
            circuit = load_circuit_file(script, "run")
        except ValueError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        problem = parameter_problem(circuit)
        if problem:
            print(f"labqpu run: {problem}", file=sys.stderr)
            return 2
        _, note, _ = _run_circuit(circuit, opts.config, opts.shots, opts.seed,
                                  simulator=opts.simulator)
        print(f"({note})")
        return 0
    if shared:
        # The script builds its own LabProvider: these would be silently ignored.
        example = " ".join(opt if opt == "--simulator"
                           else f"{opt} {shlex.quote(str(getattr(args, opt[2:])))}"
                           for opt in shared)
        verb = "is" if len(shared) == 1 else "are"
        print(f"labqpu run: {'/'.join(shared)} {verb} only for --demo and circuit files, "
              f"and {args.script} runs as a script (what a circuit file is: labqpu run "
              "--help); options after the script's path go to the script, so if it takes "
              "them: "
              f"labqpu run {shlex.join([args.script, *args.script_args])} {example}",
              file=sys.stderr)
        return 2
    with as_run_from_the_command_line(script, [str(script), *args.script_args]):
        namespace = runpy.run_path(str(script), run_name="__main__")
    _note_an_unrun_circuit(script, namespace)
    return 0


def _note_an_unrun_circuit(script: Path, namespace: dict) -> None:
    """After a script that never opened labqpu's provider (nothing ran on the device), say so
    on stderr when it defines a circuit as a circuit file does: the user likely meant it to
    be one (``labqpu draw`` takes it)."""
    if "labqpu.backend.provider" in sys.modules or "qiskit" not in sys.modules \
            or script.suffix.lower() != ".py":
        return
    from qiskit import QuantumCircuit

    name = next((n for n in CIRCUIT_NAMES if isinstance(namespace.get(n), QuantumCircuit)),
                None)
    if name is None:
        return
    why = script_reason(script) or "it is not read as a circuit file"
    print(f"labqpu run: {script} ran as a script, which ran nothing on the device: it "
          f"defines `{name}`, but {why}; move the rest to the file that runs it, or run "
          "the circuit from the script with a LabProvider (labqpu run --help)",
          file=sys.stderr)


def _sim(args: argparse.Namespace) -> NoReturn:
    """``labqpu sim``: serve the simulated rack until stopped, then end the process with its
    exit code (``exit_now``: no interpreter teardown), also when ``main`` is called in-process."""
    from labqpu.firmware_sim.__main__ import exit_now
    from labqpu.firmware_sim.__main__ import main as sim_main
    from labqpu.rack.config import load_config, resolve_config_path

    path = resolve_config_path(args.lab_toml)[0]
    if not path.is_file():
        from labqpu.rack.builtin import BUILTIN_DEVICES

        raise FileNotFoundError(f"no such wiring file: {path} (and not a built-in device: "
                                f"{', '.join(BUILTIN_DEVICES)})")
    load_config(path)  # the checks (and messages) of every other command, before a port opens
    argv = [str(path)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    if args.no_noise:
        argv.append("--no-noise")
    exit_now(sim_main([*argv, "--log-level", args.log_level]))


def _status(args: argparse.Namespace) -> int:
    from labqpu import LabProvider

    with LabProvider(args.config, simulator=args.simulator or None) as provider:
        backend = provider.backend()
        report = {
            "device": backend.name,
            "calibration_snapshot": backend.target.snapshot_id,
            "marked": {subject: list(why) for subject, why in backend.target.marks.items()},
            "store": str(backend.config.store_path),
            "qubits": _wiring(backend.channels),
            **backend.hardware_status(timeout_s=30.0),
        }
    print(json.dumps(report, indent=2))
    return 0


def _wiring(channels) -> dict[str, dict[str, str]]:
    """Where each qubit's signals go, as ``controller:port`` / ``instrument:channel`` text."""
    out = {}
    for q, ch in sorted(channels.qubits.items()):
        out[str(q)] = {"drive": f"{ch.drive[0]}:{ch.drive[1]}",
                       "flux": f"{ch.flux[0]}:{ch.flux[1]}",
                       "readout": f"{ch.readout[0]}:{ch.readout[1]}",
                       "acquire": f"{ch.acquire[0]}:{ch.acquire[1]}",
                       "drive_lo": ch.drive_lo, "readout_lo": ch.readout_lo,
                       "flux_bias": f"{ch.flux_bias[0]}:{ch.flux_bias[1]}"}
    return out


def _calibrate(args: argparse.Namespace) -> int:
    from labqpu import LabProvider
    from labqpu.calibration.design import load_wiring_design
    from labqpu.calibration.graph import RB_NODE
    from labqpu.calibration.records import experiments_directory
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
    problem = _shots_and_seed_problem(args.shots, None)
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
        setting, _, why = str(exc).partition(": ")
        option = {"lengths_1q": "--rb-lengths-1q", "lengths_2q": "--rb-lengths-2q",
                  "seeds": "--rb-seeds"}.get(setting, setting)
        print(f"labqpu calibrate: {option}: {why}", file=sys.stderr)
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
    with _empty_store_warning(quiet=args.bootstrap):
        provider = LabProvider(args.config, simulator=args.simulator or None)
    with provider:
        backend = provider.backend()
        t0 = time.perf_counter()

        def progress(msg: str) -> None:
            print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True)

        if args.watch:
            return watch_command(provider, backend, nodes, args,
                                 _rb_settings(args) if args.rb_every else None)
        snapshot = None
        if args.bootstrap:
            records = experiments_directory(backend.config.store_path)
            document = bootstrap(backend, design, shots=args.shots,
                                 progress=progress, record_directory=records)
            snapshot = backend.store.commit(document)
            print(f"committed calibration snapshot {snapshot.snapshot_id} to "
                  f"{backend.config.store_path}; experiment records and plots in {records}")
        elif args.all or nodes:
            report = _run_graph(backend, nodes, args, progress, rb_step)
            snapshot = report.snapshot or backend.snapshot  # nothing committed: the newest
            if not report.ok:
                return 1
            if not (runs_rb or rb_step):
                _report_outdated_gate_errors(backend)
        if runs_rb:
            measured, fitted = _randomized_benchmarking(backend, progress, _rb_settings(args),
                                                        args.qubits)
            snapshot = measured or backend.snapshot
            if not fitted:
                export_snapshot(args, backend, snapshot)
                return 1
        return 0 if export_snapshot(args, backend, snapshot) else 1


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


def _non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _qubit(text: str) -> int:
    """An argparse type: a qubit number (--qubits takes every word after it, so a node name
    written after the list lands here: say so)."""
    try:
        return _non_negative_int(text)
    except argparse.ArgumentTypeError:
        from labqpu.calibration.graph import NODES

        if text in {n.name for n in NODES} | {"rb"} | set(STORE_COMMANDS):
            raise argparse.ArgumentTypeError(
                f"must be qubit numbers, got {text!r}; put node names before --qubits "
                f"(labqpu calibrate {text} --qubits ...) or end the list with --") from None
        raise argparse.ArgumentTypeError(f"must be qubit numbers (whole numbers >= 0), got "
                                         f"{text!r}") from None


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


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


def _randomized_benchmarking(backend, progress, rb_settings, qubits=None):
    """RB of every qubit and cz edge of the backend's newest snapshot (of ``qubits`` and the
    edges between them, when given) with ``rb_settings``; writes each benchmark's record and
    plot next to the store, commits the gate errors that fitted and the record of the qubits
    and edges that failed as a new snapshot (its parent the one measured). Returns (the
    snapshot, or None when nothing was committed; whether every benchmark fitted)."""
    from labqpu.calibration.runner import benchmark_and_record

    snapshot, _, failed = benchmark_and_record(backend, settings=rb_settings,
                                               progress=progress, qubits=qubits)
    for subject, reason in failed.items():
        print(f"randomized benchmarking of {subject} failed: {reason}", file=sys.stderr)
    if snapshot is not None:
        print(f"committed calibration snapshot {snapshot.snapshot_id} (gate errors from "
              f"randomized benchmarking{', failures recorded' if failed else ''}) to "
              f"{backend.config.store_path}")
    return snapshot, not failed


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ``main`` reports as one line (exit code 2) instead of a traceback.

    Every labqpu error (``labqpu.errors``) is a ``QiskitError``.
    """
    from qiskit.exceptions import QiskitError

    return (QiskitError, FileNotFoundError)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are the command's one-line form (``labqpu run:
    argument --shots: invalid int value: '1e3' (labqpu run --help)``), exit code 2; its
    subcommands' parsers are of this class too. ``note`` (optional) follows the message."""

    def __init__(self, *args, note: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.note = note

    def error(self, message: str) -> NoReturn:
        note = f"; {self.note}" if self.note else ""
        self.exit(2, f"{self.prog}: {message}{note} ({self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labqpu`` command; returns the exit code."""
    from labqpu.rack.builtin import BUILTIN_DEVICES

    devices = ", ".join(f"{d} (default)" if d == "lab5" else d for d in BUILTIN_DEVICES)
    parser = _Parser(prog="labqpu", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the demo, a circuit file or a script")
    run.add_argument("script", nargs="?",
                     help="circuit file (transpiled for the device, counts printed): "
                          "OpenQASM 2/3 (.qasm), or a .py that imports only qiskit, numpy and "
                          "the standard library's number modules (math, cmath, fractions, "
                          "decimal, random, itertools, functools, operator, collections, "
                          "dataclasses, enum, typing), has no `if __name__` block and defines "
                          "`circuit` or `qc` outside functions; any other file runs as a "
                          "Python script")
    run.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    run.add_argument("--demo", action="store_true", help="run a Bell circuit and print counts")
    run.add_argument("--config", help="with --demo or a circuit file: lab.toml, or a built-in "
                     f"device on the embedded simulator: {devices}. A script takes "
                     "its own options after its path")
    run.add_argument("--simulator", action="store_true", help=SIMULATOR_HELP)
    run.add_argument("--shots", type=int, default=None,
                     help=f"with --demo or a circuit file: shots (default {DEMO_SHOTS})")
    run.add_argument("--seed", type=int, default=None,
                     help="with --demo or a circuit file: simulator seed (default: fresh)")
    run.set_defaults(func=_run)

    sim = sub.add_parser("sim", help="run the firmware simulator in the foreground")
    sim.add_argument("lab_toml", nargs="?", help=f"wiring file, or a built-in device: {devices}")
    sim.add_argument("--seed", type=_non_negative_int, default=None,
                     help="seed of the runs that carry none (default: the file's [simulator] "
                          "seed, else fresh)")
    sim.add_argument("--no-noise", action="store_true",
                     help="switch the device's flux noise, quasi-static noise and drift off")
    sim.set_defaults(func=_sim)

    status = sub.add_parser("status", help="show instruments, controller and calibration")
    status.add_argument("--config", help=f"lab.toml, or a built-in device: {devices}")
    status.add_argument("--simulator", action="store_true", help=SIMULATOR_HELP)
    status.set_defaults(func=_status)

    cal = sub.add_parser("calibrate", help="calibrate the device")
    cal.add_argument("nodes", nargs="*", metavar="NAME",
                     help="nodes of the calibration graph to check and, where needed, "
                          "recalibrate, with their prerequisites (rabi, ramsey, drag, readout, "
                          "t1, cz ...); or a store command: history, diff A B, rollback ID")
    cal.add_argument("--all", action="store_true", help="every node of the graph, then its "
                     "rb step: randomized benchmarking of the gate errors left out of date")
    cal.add_argument("--qubits", type=_qubit, nargs="+", help="only these qubits (and the "
                     "edges between them); default all")
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
    cal.add_argument("--rb-lengths-1q", type=_positive_int, nargs="+", metavar="M",
                     help="RB: 1-qubit sequence lengths in Cliffords (default 1 50 150 300 600)")
    cal.add_argument("--rb-lengths-2q", type=_positive_int, nargs="+", metavar="M",
                     help="RB: 2-qubit sequence lengths in Cliffords (default 1 10 30 60 100)")
    cal.add_argument("--rb-seeds", type=_positive_int, metavar="N",
                     help="RB: random sequences per length (default 4)")
    cal.add_argument("--watch", action="store_true",
                     help="keep the device calibrated: a round of checks (recalibrating what "
                          "fails) every --interval, until interrupted or --rounds are done")
    cal.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                     help="--watch: time between rounds (s, default 3600)")
    cal.add_argument("--rounds", type=int, default=None, help="--watch: stop after N rounds")
    cal.add_argument("--rb-every", type=_positive_int, default=None, metavar="N",
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
    cal.add_argument("--limit", type=_positive_int, default=None,
                     help="history: rows (default 50)")
    cal.set_defaults(func=_calibrate)

    draw = sub.add_parser("draw", help="draw the pulse program a circuit compiles to")
    draw.add_argument("file", help="a .py file defining `circuit` or `qc`, or a .qasm file")
    draw.add_argument("-o", "--output", help="image file (default: FILE's name with .png)")
    draw.add_argument("--config", help=f"lab.toml, or a built-in device: {devices}")
    draw.add_argument("--simulator", action="store_true", help=SIMULATOR_HELP)
    draw.add_argument("--optimization-level", type=int, default=None, choices=range(4),
                      help="transpiler level (default: Qiskit's default)")
    draw.add_argument("--layout", type=int, nargs="+", metavar="Q",
                      help="physical qubits for the circuit's qubits, in order (default: the "
                           "transpiler's choice)")
    draw.add_argument("--time-range-ns", type=float, nargs=2, metavar=("START", "STOP"),
                      help="draw only this window (ns)")
    draw.add_argument("--dpi", type=int, default=130,
                      help="resolution of the image (dots per inch, 10-1200, default 130)")
    draw.set_defaults(func=draw_command)

    words = sys.argv[1:] if argv is None else list(argv)
    args, unknown = parser.parse_known_args(words)
    if unknown:  # named by the parser they were given to, with the option meant
        from labqpu.errors import did_you_mean

        before = words.index(unknown[0]) < words.index(args.command)
        command = parser if before else sub.choices[args.command]
        known = [o for a in command._actions for o in a.option_strings]
        word = unknown[0].partition("=")[0]
        command.error(f"unrecognized arguments: {' '.join(unknown)}"
                      + (did_you_mean(word, known) if word.startswith("-") else ""))
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # User errors (bad configuration, option or circuit, unreachable instrument, missing
    # file) are one line on stderr, not a traceback; anything else is a bug and keeps its.
    # The except clause is evaluated only when something is raised, so `labqpu sim` does
    # not pay for importing Qiskit.
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below
        return code
    except KeyboardInterrupt:  # Ctrl-C: the providers' exits have stopped what they started
        print("labqpu: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `labqpu calibrate history | head`: the reader has gone. The
        # command stops at that write (a command that writes as it works stops there too);
        # the rest of stdout goes nowhere (it would fail again at exit), and the code is that
        # of a process ended by SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _user_errors() as exc:
        message = getattr(exc, "message", None) or str(exc)  # QiskitError's str() quotes it
        print(f"labqpu: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
