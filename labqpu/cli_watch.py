"""``labqpu calibrate --watch``: its options' checks and its loop of rounds."""

from __future__ import annotations

import argparse
import sys
import time


def watch_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the watch options, or None."""
    if not args.watch:
        given = [flag for flag, value in (("--interval", args.interval),
                                          ("--rounds", args.rounds), ("--clock", args.clock),
                                          ("--rb-every", args.rb_every))
                 if value is not None]
        if given:
            return f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --watch"
        return None
    clash = [flag for flag, value in (("--bootstrap", args.bootstrap), ("--rb", args.rb),
                                      ("--no-rb", args.no_rb), ("--force", args.force),
                                      ("--export", args.export),
                                      ("node rb", "rb" in (args.nodes or ())))
             if value]
    if clash:
        about_rb = {"--rb", "--no-rb", "node rb"} & set(clash)
        return (f"--watch checks and recalibrates what drifted, round after round; it takes "
                f"no {', '.join(clash)}"
                + (" (--rb-every N benchmarks the gates every N rounds)" if about_rb else ""))
    from labqpu.calibration.watch import MAX_INTERVAL_S

    if args.interval is not None and not 0 <= args.interval <= MAX_INTERVAL_S:
        return (f"--interval must be a number of seconds from 0 to {MAX_INTERVAL_S:.0f} (30 "
                f"days), got {args.interval}")
    if args.rounds is not None and args.rounds < 1:
        return f"--rounds must be at least 1, got {args.rounds}"
    if args.interval == 0 and args.rounds is None:
        return ("--interval 0 runs rounds back to back, each committing snapshots and records "
                "until Ctrl-C: give --rounds N with it")
    from labqpu.rack.config import resolve_config_path

    simulated = args.simulator or resolve_config_path(args.config)[1]  # a built-in device
    if args.clock == "device" and args.rounds is None and simulated:
        return ("--clock device on the embedded simulator passes each interval in "
                "milliseconds, so rounds follow each other at once, each committing snapshots "
                "and records: give --rounds N with it (until Ctrl-C, the watch waits on the "
                "wall clock)")
    return None


def watch_command(provider, backend, nodes, args: argparse.Namespace, rb_settings) -> int:
    """``calibrate --watch``: rounds of checks and recalibration, one line each, until
    interrupted or ``--rounds`` are done; ``rb_settings`` for ``--rb-every``."""
    from labqpu.calibration.runner import graph_steps
    from labqpu.calibration.watch import DEFAULT_INTERVAL_S, watch

    graph_steps(backend, nodes, args.qubits)  # a selection with nothing to run: no header

    # the device clock runs a bounded watch (a simulated day in a minute), never an endless one
    clock = args.clock or ("device" if provider.simulator is not None and args.rounds
                           else "wall")
    interval = DEFAULT_INTERVAL_S if args.interval is None else args.interval
    t0 = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {line}", flush=True)

    print(f"watching {backend.name}: a round every {interval:g} s on the {clock} clock"
          + (f", randomized benchmarking every {args.rb_every} round(s)" if args.rb_every
             else "")
          + (f", {args.rounds} round(s)" if args.rounds else ", until interrupted (Ctrl-C)"),
          flush=True)
    try:
        report = watch(backend, nodes, interval_s=interval, rounds=args.rounds,
                       qubits=args.qubits, shots=args.shots, clock=clock, say=say,
                       rb_every=args.rb_every, rb_settings=rb_settings,
                       design=args.design)
    except KeyboardInterrupt as interrupt:
        print("watch stopped", flush=True)
        if args.rounds is None:
            return 0  # how a watch until Ctrl-C ends
        # before its --rounds were done: 130 (143 on SIGTERM), so a script can tell
        print(f"labqpu: the watch was interrupted before its {args.rounds} round(s) were done",
              file=sys.stderr, flush=True)
        interrupt.said = True
        raise
    print(f"log of every round: {report.log_path}")
    failed = [r.index for r in report.rounds if r.error is not None or not r.report.ok]
    if failed:  # a script running a bounded watch learns of any, not only the last round's
        print(f"labqpu: round(s) {', '.join(map(str, failed))} of {len(report.rounds)} failed "
              f"(what failed: {report.log_path})", file=sys.stderr)
    unlogged = [r.index for r in report.rounds if r.unlogged is not None]
    if unlogged:  # their snapshots are committed, their lines lost: said above each
        print(f"labqpu: round(s) {', '.join(map(str, unlogged))} of {len(report.rounds)} are "
              f"not in the log {report.log_path} (it could not be written)", file=sys.stderr)
    return 1 if failed or unlogged else 0
