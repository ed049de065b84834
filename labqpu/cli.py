"""labqpu: run Qiskit circuits on your lab's quantum processor, calibrate it, simulate it.

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
import json
import logging
import os
import runpy
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from labqpu.cli_calibrate import calibrate_parser
from labqpu.cli_draw import (
    CIRCUIT_NAMES,
    as_run_from_the_command_line,
    draw_command,
    imports_labqpu,
    is_circuit_script,
    load_circuit_file,
    parameter_problem,
    script_reason,
)
from labqpu.cli_options import (
    SIMULATOR_HELP,
    non_negative_int,
    not_a_file,
    shots_and_seed_problem,
)


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
              + (f", simulator pid {provider.simulator.pid} (up in {started - t0:.1f} s)"
                 if provider.simulator else ""))
        try:
            native = transpile(qc, backend, optimization_level=optimization_level,
                               seed_transpiler=1)
        except TranspilerError as exc:
            raise _uncalibrated(backend, qc, exc) from exc
        print(f"transpiled: {dict(native.count_ops())}")
        job = backend.run(native, shots=shots, seed_simulator=seed)
        # the job ends by itself: a wait for a shared rack and its run, each within its limit
        counts = job.result(timeout=2 * backend.options.timeout + 60).get_counts()
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
            f"one with `{backend.provider.command('calibrate --bootstrap')}`")
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
    if shots < BELL_VERDICT_SHOTS:  # said: a dead device passed a 50-shot smoke check
        print(f"labqpu run: not judged whether this is a Bell pair: that takes "
              f"{BELL_VERDICT_SHOTS} shots or more", file=sys.stderr)
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


DEMO_SHOTS = 2000


def _run(args: argparse.Namespace) -> int:
    shared = [f"--{name}" for name in ("config", "shots", "seed")
              if getattr(args, name) is not None] + ["--simulator"] * args.simulator
    if args.demo and args.script:
        print(f"labqpu run: give either a file (an OpenQASM file or a Python script) or "
              f"--demo, not both (got {args.script})", file=sys.stderr)
        return 2
    shots = DEMO_SHOTS if args.shots is None else args.shots
    problem = shots_and_seed_problem(shots, args.seed)
    if problem:
        print(f"labqpu run: {problem}", file=sys.stderr)
        return 2
    if args.demo:
        return _demo(args.config, shots, args.seed, args.simulator)
    if not args.script:
        print("labqpu run: give a script, an OpenQASM file or --demo", file=sys.stderr)
        return 2
    script = Path(args.script)
    if not script.is_file():
        print(f"labqpu: {not_a_file(script)}", file=sys.stderr)
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
        problem = shots_and_seed_problem(opts.shots, opts.seed)
        if problem:
            print(f"labqpu run: {problem}", file=sys.stderr)
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
    # by name: importing the backend would import the provider, which _noted_an_unrun_circuit
    # takes as the script's doing
    backend_log = logging.getLogger("labqpu.backend.backend")
    from logging.handlers import BufferingHandler

    warnings = BufferingHandler(capacity=1 << 20)  # keeps the records it is given
    warnings.setLevel(logging.WARNING)
    backend_log.addHandler(warnings)
    try:
        with as_run_from_the_command_line(script, [str(script), *args.script_args]):
            namespace = runpy.run_path(str(script), run_name="__main__")
    except SyntaxError as exc:
        if exc.filename != str(script):  # the script's own import: its traceback says where
            raise
        qasm = "OPENQASM" in script.read_text(errors="replace").split(";", 1)[0]
        print(f"labqpu run: {script} is not valid Python (line {exc.lineno}: {exc.msg})"
              + ("; an OpenQASM file is read as one when its name ends in .qasm" if qasm
                 else ""), file=sys.stderr)
        return 2
    except Exception as exc:
        from qiskit.transpiler.exceptions import TranspilerError

        if isinstance(exc, TranspilerError):
            from labqpu.backend.backend import NO_GATES
            from labqpu.errors import LabQpuError

            causes = [r.getMessage() for r in warnings.buffer if getattr(r, NO_GATES, False)]
            if causes:  # Qiskit's message names neither the store nor the Target
                raise LabQpuError(f"transpile() failed: {getattr(exc, 'message', exc)}; "
                                  f"{causes[-1]}") from exc
        raise
    finally:
        backend_log.removeHandler(warnings)
    # a file that defines a circuit and imports no labqpu module was meant as a circuit file:
    # that nothing ran fails the command (a CI step expecting counts fails too)
    noted = _noted_an_unrun_circuit(script, namespace)
    return 1 if noted and not imports_labqpu(script) else 0


def _noted_an_unrun_circuit(script: Path, namespace: dict) -> bool:
    """After a script that never opened labqpu's provider (nothing ran on the device), say so
    on stderr when it defines a circuit as a circuit file does (the user likely meant it to
    be one: ``labqpu draw`` takes it); True when it did. A file that would be a circuit file
    but for its circuit's name gets a note too, and False."""
    if "labqpu.backend.provider" in sys.modules or "qiskit" not in sys.modules \
            or script.suffix.lower() != ".py":
        return False
    from qiskit import QuantumCircuit

    name = next((n for n in CIRCUIT_NAMES if isinstance(namespace.get(n), QuantumCircuit)),
                None)
    if name is None:
        others = [f"`{n}`" for n, value in namespace.items()
                  if isinstance(value, QuantumCircuit) and not n.startswith("_")]
        if others and script_reason(script) is None:  # a review's case: a circuit file
            # whose circuit is named `bell` ran silently; a note, not a failure (the script
            # may have run its circuits elsewhere)
            print(f"labqpu run: {script} ran as a script and ran nothing on the device; it "
                  f"defines {', '.join(others)}: the circuit of a circuit file is named "
                  f"{' or '.join(f'`{n}`' for n in CIRCUIT_NAMES)} (labqpu run --help)",
                  file=sys.stderr)
        return False
    why = script_reason(script) or "it is not read as a circuit file"
    print(f"labqpu run: {script} ran as a script, which ran nothing on the device: it "
          f"defines `{name}`, but {why}; move the rest to the file that runs it, or run "
          "the circuit from the script with a LabProvider (labqpu run --help)",
          file=sys.stderr)
    return True


def _sim(args: argparse.Namespace) -> NoReturn:
    """``labqpu sim``: serve the simulated rack until stopped, then end the process with its
    exit code (``exit_now``: no interpreter teardown), also when ``main`` is called in-process."""
    from labqpu.firmware_sim.__main__ import exit_now
    from labqpu.firmware_sim.__main__ import main as sim_main
    from labqpu.rack.config import load_config, resolve_config_path

    path = resolve_config_path(args.lab_toml)[0]
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


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions ``main`` reports as one line (exit code 2) instead of a traceback.

    Every labqpu error (``labqpu.errors``) is a ``QiskitError``.
    """
    from qiskit.exceptions import QiskitError

    return (QiskitError, FileNotFoundError)


def _given(args: argparse.Namespace, filename: object) -> bool:
    """Whether ``filename`` (an ``OSError``'s) is a path the command was given, or a file in
    a directory it was given (``draw -o DIR``)."""
    if not isinstance(filename, str | os.PathLike):
        return False
    path = Path(filename).resolve()
    given = {Path(value).resolve() for value in vars(args).values()
             if isinstance(value, str) and value}
    return path in given or path.parent in given


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are the command's one-line form (``labqpu run:
    argument --shots: invalid int value: '1e3' (labqpu run --help)``), exit code 2; its
    subcommands' parsers are of this class too. ``note`` (optional) follows the message. An
    option's prefix is not taken for the option (``labqpu calibrate --b`` began a bootstrap):
    it is unrecognized, with the option meant named."""

    def __init__(self, *args, note: str | None = None, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.note = note

    def error(self, message: str) -> NoReturn:
        note = f"; {self.note}" if self.note else ""
        if "--log-level" in message and self.prog != "labqpu":  # an option of labqpu itself
            note += (f"; --log-level goes before the command: labqpu --log-level LEVEL "
                     f"{self.prog.removeprefix('labqpu ')} ...")
        self.exit(2, f"{self.prog}: {message}{note} ({self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labqpu`` command; returns the exit code."""
    from labqpu.rack.builtin import BUILTIN_DEVICES

    devices = ", ".join(f"{d} (default)" if d == "lab5" else d for d in BUILTIN_DEVICES)
    parser = _Parser(prog="labqpu", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="WARNING", type=str.upper, choices=LOG_LEVELS,
                        help="logging level of labqpu's messages, a script's own and those "
                             "of installed calibration-node packages (default WARNING); other "
                             "libraries' below WARNING are not shown")
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
    sim.add_argument("--seed", type=non_negative_int, default=None,
                     help="seed of the runs that carry none (default: the file's [simulator] "
                          "seed, else fresh)")
    sim.add_argument("--no-noise", action="store_true",
                     help="switch the device's flux noise, quasi-static noise and drift off")
    sim.set_defaults(func=_sim)

    status = sub.add_parser("status", help="show instruments, controller and calibration")
    status.add_argument("--config", help=f"lab.toml, or a built-in device: {devices}")
    status.add_argument("--simulator", action="store_true", help=SIMULATOR_HELP)
    status.set_defaults(func=_status)

    calibrate_parser(sub, devices)

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
    from labqpu.errors import interrupts_as_such, log_to_stderr

    log_to_stderr(args.log_level)
    # User errors (bad configuration, option or circuit, unreachable instrument, missing
    # file) are one line on stderr, not a traceback; anything else is a bug and keeps its.
    # The except clause is evaluated only when something is raised, so `labqpu sim` does
    # not pay for importing Qiskit.
    hook = sys.unraisablehook
    sys.unraisablehook = _interrupt_again(hook)
    # SIGTERM (`kill`, `timeout`, systemd) ends a command as Ctrl-C does: what it committed
    # is said and logged (a review's watch stopped so left a committed round out of its log)
    terminate = (signal.signal(signal.SIGTERM, _terminated)
                 if threading.current_thread() is threading.main_thread() else None)
    try:
        with interrupts_as_such():
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe fails here, inside the handler below
        return code
    except KeyboardInterrupt as interrupt:  # Ctrl-C: the providers' exits have stopped what
        # they started; a command that said what the interrupt left marked it ``said``
        if not getattr(interrupt, "said", False):
            print(f"labqpu: {interrupt.args[0] if interrupt.args else 'interrupted'}",
                  file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
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
    except OSError as exc:  # a file the command was given that cannot be read or written
        if not _given(args, exc.filename):  # a script's own, or a bug: its traceback
            raise
        print(f"labqpu: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        sys.unraisablehook = hook
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a command ends as on Ctrl-C."""


def _terminated(signum: int, frame: object) -> NoReturn:
    raise Terminated("terminated (SIGTERM)")


def _interrupt_again(hook: Callable) -> Callable:
    """An unraisable-exception hook that delivers a Ctrl-C again when it landed in a
    destructor, which drops exceptions (a ZeroMQ frame's: the calibration then went on and
    exited 0; seen once in a test run), and leaves everything else to ``hook``."""
    import _thread
    import threading

    def deliver(unraisable) -> None:
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            hook(unraisable)
            return
        # From another thread, once this hook has returned: an interrupt that reaches the
        # main thread inside the hook is dropped again (a 1 ms timer fired while a loaded
        # main thread was still starting it: seen in a test run).
        returned = threading.Event()

        def later() -> None:
            returned.wait(1.0)
            time.sleep(0.001)  # the few instructions from setting the event to returning
            _thread.interrupt_main()

        threading.Thread(target=later, name="labqpu-interrupt-again", daemon=True).start()
        returned.set()

    return deliver


if __name__ == "__main__":
    sys.exit(main())
