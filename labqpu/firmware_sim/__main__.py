"""``python -m labqpu.firmware_sim LAB_TOML``: run a simulated rack until told to stop.

With ``--announce FILE`` the endpoints are written there as JSON (atomically) once every
server listens; with ``--parent-pid PID`` the simulator exits when that process is gone, so a
crashed client never leaves it running. With ``--fault-control`` (or ``[simulator.faults]
control = true`` in the wiring file) a loopback control socket lets tests inject faults
(``labqpu.firmware_sim.faults``); its endpoint is announced as ``"fault_control"``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

import zmq
from threadpoolctl import threadpool_limits

from labqpu.errors import log_to_stderr
from labqpu.firmware_sim.faults import FaultControlServer, FaultPlan, fault_control_enabled
from labqpu.firmware_sim.rack import SimulatedRack

#: Exit code when a server thread died: the provider reports the simulator as gone at once.
EXIT_SERVER_DIED = 70


def _parent_alive(pid: int) -> bool:
    """True while ``pid`` is still this process's parent (a dead parent means re-parenting)."""
    return os.getppid() == pid


def _raise_descriptor_limit() -> None:
    """Raise the process's soft file-descriptor limit to its hard limit (often 1024 against
    524288): the simulated instruments share the descriptors out between their clients
    (``scpi_loop.client_budget``), half of them kept for the controllers."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            logging.getLogger(__name__).info("file-descriptor limit stays %s: %s", soft, exc)


def _ports(text: str) -> dict[str, int]:
    """``--ports``: a JSON object of names and TCP ports."""
    try:
        ports = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(ports, dict) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535
            for p in ports.values()):
        raise argparse.ArgumentTypeError(
            f"want an object of names and ports 0..65535, got {text!r}")
    return ports


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    # the module's own usage (``labqpu sim`` checks its options before it calls this)
    parser = argparse.ArgumentParser(prog="python -m labqpu.firmware_sim", description=__doc__)
    parser.add_argument("lab_toml", help="wiring file (lab.toml)")
    parser.add_argument("--announce", help="write the endpoints as JSON to this file")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--device", help="simulator device file or name (overrides lab.toml)")
    parser.add_argument("--seed", type=int, help="simulator seed (overrides lab.toml)")
    parser.add_argument("--ports", type=_ports, default={}, metavar="JSON",
                        help='ports to listen on instead of the wiring\'s, by controller or '
                             'instrument name (and "fault_control"), e.g. \'{"ctrl0": 5555}\' '
                             "(a restart takes the ports its clients know)")
    parser.add_argument("--no-noise", action="store_true",
                        help="switch the device file's flux noise, quasi-static noise and "
                             "drift off (overrides [simulator] noise of lab.toml)")
    parser.add_argument("--fault-control", action="store_true",
                        help="open a loopback socket through which tests inject faults")
    parser.add_argument("--log-level", default="WARNING", type=str.upper,
                        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    args = parser.parse_args(argv)
    log_to_stderr(args.log_level)
    # The physics works on 3x3 to 243x243 matrices, where BLAS threads only contend (4-5x
    # slower jobs with one OpenBLAS thread per core on 2 cores).
    threadpool_limits(limits=1, user_api="blas")
    _raise_descriptor_limit()
    stop = threading.Event()
    stopped_by: list[int] = []  # the signal that stopped a serving simulator

    def stopping(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    # A terminal's Ctrl-C reaches its whole foreground process group: the provider that
    # started this simulator (--parent-pid) handles it, aborts its runs and then stops it (or
    # this exits once the parent is gone); stopping first failed those aborts.
    signal.signal(signal.SIGINT, signal.SIG_IGN if args.parent_pid is not None else stopping)
    try:
        faults = (FaultPlan() if args.fault_control or fault_control_enabled(args.lab_toml)
                  else None)
        ports = dict(args.ports)
        control_port = ports.pop("fault_control", 0)
        rack = SimulatedRack(args.lab_toml, device=args.device, seed=args.seed,
                             noise=False if args.no_noise else None, faults=faults,
                             ports=ports)
    except (OSError, ValueError, KeyError) as exc:
        print(f"labqpu sim: {exc}", file=sys.stderr)
        return 2
    control = None if faults is None else FaultControlServer(faults, control_port)
    try:
        rack.start()
        if control is not None:
            control.start()
    except (OSError, zmq.ZMQError) as exc:
        rack.stop()
        print(f"labqpu sim: cannot start the simulated rack: {exc}", file=sys.stderr)
        return 2
    try:
        endpoints = rack.endpoints()
        if control is not None:
            endpoints["fault_control"] = control.endpoint
        if stopped_by and args.parent_pid is None:  # interrupted while it started: as a command
            print(f"labqpu sim: interrupted while starting "
                  f"({signal.Signals(stopped_by[0]).name})", file=sys.stderr, flush=True)
            return 128 + stopped_by[0]
        if args.announce:
            tmp = Path(args.announce + ".tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "endpoints": endpoints}))
            tmp.replace(args.announce)
        print(json.dumps(endpoints), flush=True)
        while not stop.wait(0.5):
            if args.parent_pid is not None and not _parent_alive(args.parent_pid):
                break
            failure = rack.failure()
            if failure is not None:
                # A process that looks alive but answers nothing is worse than a dead one.
                print(f"labqpu sim: {failure}; exiting", file=sys.stderr, flush=True)
                return EXIT_SERVER_DIED
    finally:
        rack.stop()
        if control is not None:
            control.stop()
    if stopped_by and args.parent_pid is None:  # a server's normal end: said, exit code 0
        print(f"labqpu sim: stopped ({signal.Signals(stopped_by[0]).name})", file=sys.stderr,
              flush=True)
    return 0


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once :func:`main` has stopped every server: flush the
    log and the standard streams, then skip the interpreter's teardown of qiskit, numba and
    scipy (~0.25 s on every provider close and Ctrl-C). labqpu registers no exit handlers or
    finalizers, and the simulator writes no files after it announced its endpoints; the
    handlers skipped are those of logging (run here), pyzmq and numba. A stream that cannot
    be flushed (closed, a broken pipe) does not change the exit code."""
    try:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(code)


if __name__ == "__main__":
    exit_now(main())

