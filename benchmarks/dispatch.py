"""What a trivial job costs beyond the round trips it needs (issue "Hardening": <= 1 ms).

A 1-qubit job (x, measure; 100 shots) runs through ``backend.run()`` on the embedded simulator.
Its time is compared with what it cannot avoid, measured in the same run:

* the simulator's own time for the run (``elapsed_s`` of the same program run directly on the
  controller, from acceptance to the end of the run; and, per job, the ``elapsed_s`` of the
  job's own run, which its result's reproducibility bundle carries);
* the round trips the job makes, counted by wrapping the drivers' send functions during one
  job: ZeroMQ requests (hello, upload, run; a ``fetch`` whose request travels during the run
  counts half a round trip, its reply; a short run needs none, its run's reply being held
  until it ends) and SCPI exchanges (the settings read back before and after the run: one
  compound query per instrument, all sent before the first reply is read, so an exchange
  counts one round trip however many instruments it asks), each priced at a raw echo round
  trip: a pyzmq REQ/REP echo and a line-echo TCP socket, served by a separate process on
  loopback. The read-back before the run is not counted when it travels with the run request
  (sent first, read once the run has started or ended: ``settings.reading``). The read-back
  after the run is counted; its replies are read after the worker has merged the results and
  counted them (``settings.verifying``), so the SCPI time in the breakdown is the wait left
  after that work.

The simulator's run alone is taken as a job takes it (``ControllerClient.run_held``), so the
two runs are the same work.

The difference is labqpu's dispatch overhead: compile, validation, the job thread, the SCPI
drivers' and the protocol's encoding, IQ -> counts. What the settings read-backs (issue
"Hardening": before and after every run) cost a job is measured in the same run, jobs with
them alternating with jobs whose read-backs a patch of ``labqpu.rack.settings`` skips
(``read_backs_skipped``; a measurement only, labqpu has no such mode). Usage::

    python benchmarks/dispatch.py                  # 400 jobs
    python benchmarks/dispatch.py --quick          # 100 jobs
    python benchmarks/dispatch.py --reply-spin 0   # without the host's busy wait for replies
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import _timing as tm
from _timing import Line, dur, emit, info

#: A separate process serving a pyzmq REP echo and a TCP line echo on loopback; it prints its
#: two ports and exits when its stdin closes.
ECHO_SERVER = textwrap.dedent("""
    import socket, sys, threading, zmq
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    zport = rep.bind_to_random_port("tcp://127.0.0.1")
    listener = socket.create_server(("127.0.0.1", 0))
    tport = listener.getsockname()[1]

    def zmq_echo():
        while True:
            rep.send_multipart(rep.recv_multipart())

    def tcp_echo():
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                conn.sendall(line)

    threading.Thread(target=zmq_echo, daemon=True).start()
    threading.Thread(target=tcp_echo, daemon=True).start()
    print(zport, tport, flush=True)
    sys.stdin.read()
""")


@contextlib.contextmanager
def echo_server() -> Iterator[tuple[int, int]]:
    """The echo process's (ZeroMQ port, TCP port); stopped on exit."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        zport, tport = (int(p) for p in proc.stdout.readline().split())
        yield zport, tport
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def alternate_medians(first: Callable[[], object], second: Callable[[], object],
                      calls: int) -> tuple[float, float]:
    """Median seconds of ``first`` and of ``second``, called alternately ``calls`` times each
    after one unmeasured call of each (``_timing.interleaved``)."""
    a, b = tm.interleaved([first, second], calls)
    return statistics.median(a), statistics.median(b)


def raw_round_trips(zport: int, tport: int, calls: int) -> tuple[float, float]:
    """Median seconds of a pyzmq REQ/REP echo and of a TCP line echo (``*IDN?``-sized)."""
    import zmq

    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{zport}")
    tcp = socket.create_connection(("127.0.0.1", tport), timeout=5)
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = tcp.makefile("rb")
    def zmq_echo() -> None:
        req.send_multipart([b'{"op":"status","id":"0123456789abcdef"}'])
        req.recv_multipart()

    def tcp_echo() -> None:
        tcp.sendall(b"SOUR:FREQ?\n")
        reader.readline()

    try:
        return alternate_medians(zmq_echo, tcp_echo, calls)
    finally:
        reader.close()
        tcp.close()
        req.close(linger=0)
        ctx.term()


def scpi_transaction_costs(resource: str, calls: int) -> tuple[float, float]:
    """Median seconds of one state query (``FREQ?;POW?;OUTP?``) to the simulated LO source at
    ``resource``: through labqpu's driver (which writes the query to its pyvisa-py session's
    socket and reads the reply from it), and as a line on a raw TCP socket to the same
    instrument, alternately."""
    from labqpu.drivers.scpi import SignalGenerator

    host, port = resource.split("::")[1:3]
    source = SignalGenerator(resource)
    raw = socket.create_connection((host, int(port)), timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = raw.makefile("rb")
    line = (source.STATE_QUERY + "\n").encode()

    def raw_query() -> None:
        raw.sendall(line)
        reader.readline()

    try:
        return alternate_medians(lambda: source.query(source.STATE_QUERY), raw_query, calls)
    finally:
        reader.close()
        raw.close()
        source.close()


@contextlib.contextmanager
def counted_round_trips() -> Iterator[tuple[Counter, Counter]]:
    """Count the drivers' ZeroMQ requests (by op) and SCPI exchanges while inside, and sum
    the seconds spent in each kind (waiting for the reply included)."""
    from labqpu.drivers.controller import ControllerClient
    from labqpu.drivers.scpi import ScpiInstrument
    from labqpu.rack import settings

    counts: Counter = Counter()
    seconds: Counter = Counter()
    send, transact = ControllerClient._send, ScpiInstrument._transact
    query_each, queries_out = settings.query_each, settings.queries_out
    reading, verifying = settings.reading, settings.verifying

    def counting_send(self, op, *args, **kwargs):
        counts[f"zmq {op}"] += 1
        t0 = time.perf_counter()
        try:
            return send(self, op, *args, **kwargs)
        finally:
            seconds["zmq"] += time.perf_counter() - t0

    def counting_transact(self, message, *args, **kwargs):
        counts["scpi"] += 1
        t0 = time.perf_counter()
        try:
            return transact(self, message, *args, **kwargs)
        finally:
            seconds["scpi"] += time.perf_counter() - t0

    def counting_query_each(queries):
        counts["scpi"] += 1
        counts["scpi instruments asked"] += len(queries)
        t0 = time.perf_counter()
        try:
            return query_each(queries)
        finally:
            seconds["scpi"] += time.perf_counter() - t0

    @contextlib.contextmanager
    def counting_queries_out(queries):
        counts["scpi instruments asked"] += len(queries)
        with queries_out(queries) as replies:
            yield replies

    @contextlib.contextmanager
    def counting_reading(*args):
        counts["scpi overlapped"] += 1
        with reading(*args) as in_place:
            yield in_place

    @contextlib.contextmanager
    def counting_verifying(*args):
        # A round trip the job needs; its replies are read after the results have been
        # worked on, so the time counted is the wait that is left.
        counts["scpi"] += 1
        with verifying(*args) as verified:
            def timed():
                t0 = time.perf_counter()
                try:
                    return verified()
                finally:
                    seconds["scpi"] += time.perf_counter() - t0

            yield timed

    ControllerClient._send, ScpiInstrument._transact = counting_send, counting_transact
    settings.query_each, settings.queries_out = counting_query_each, counting_queries_out
    settings.reading, settings.verifying = counting_reading, counting_verifying
    try:
        yield counts, seconds
    finally:
        ControllerClient._send, ScpiInstrument._transact = send, transact
        settings.query_each, settings.queries_out = query_each, queries_out
        settings.reading, settings.verifying = reading, verifying


@contextlib.contextmanager
def read_backs_skipped() -> Iterator[None]:
    """Inside, jobs skip the settings read-backs before and after their runs (a patch of
    ``labqpu.rack.settings`` for this measurement only: labqpu has no such mode), so that
    what the read-backs cost a job is measured in the same run."""
    from labqpu.rack import settings

    reading, verifying = settings.reading, settings.verifying

    @contextlib.contextmanager
    def nothing_read(*_args):
        yield lambda: []

    settings.reading, settings.verifying = nothing_read, nothing_read
    try:
        yield
    finally:
        settings.reading, settings.verifying = reading, verifying


def read_back_cost(job: Callable[[int], object], calls: int) -> tuple[float, float]:
    """Median seconds of ``job(i)`` with its read-backs and without them, alternately."""
    def skipping(i: int) -> None:
        with read_backs_skipped():
            job(i)

    seeds = iter(range(10 ** 6))
    return alternate_medians(lambda: job(next(seeds)), lambda: skipping(next(seeds)), calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="100 jobs instead of 400")
    parser.add_argument("--reply-spin", type=float, metavar="S",
                        help="the controller's reply_spin_s for this run (s; default 0.002, which "
                             "lab5.toml leaves as it is; 0 turns the host's busy wait off)")
    args = parser.parse_args(argv)
    jobs, shots = (100 if args.quick else 400), 100

    from qiskit import QuantumCircuit, transpile

    from labqpu import LabProvider
    from labqpu.backend.backend import default_rep_delay_s
    from labqpu.drivers.controller import ControllerClient
    from labqpu.pulse.compiler import compile_circuit
    from labqpu.rack.config import default_config_path

    print(f"labqpu dispatch benchmark, {jobs} jobs of x + measure on qubit 0, {shots} shots")
    print(f"{tm.machine()}, {os.cpu_count()} CPUs; load average at start {tm.load_average()}")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home:
        os.environ["LABQPU_HOME"] = home
        config = None
        if args.reply_spin is not None:  # lab5.toml with the spin set on its controller
            config = Path(home) / "lab.toml"
            config.write_text(default_config_path().read_text().replace(
                "[[controllers]]\n", f"[[controllers]]\nreply_spin_s = {args.reply_spin!r}\n"))
        with LabProvider(config, simulator=True) as provider, echo_server() as (zport, tport):
            spin_s = provider.config.controllers[0].reply_spin_s
            print(f"host busy wait for replies: reply_spin_s = {spin_s} s")
            backend = provider.backend()
            qc = QuantumCircuit(1, 1)
            qc.x(0)
            qc.measure(0, 0)
            native = transpile(qc, backend, initial_layout=[0])
            for i in range(3):  # warm-up: numba, caches, sessions, settings in place
                backend.run(native, shots=shots, seed_simulator=i).result(timeout=60)
            with counted_round_trips() as (counts, _):
                backend.run(native, shots=shots, seed_simulator=3).result(timeout=60)

            job_s, own_run_s = [], []
            for i in range(jobs):
                t0 = time.perf_counter()
                result = backend.run(native, shots=shots, seed_simulator=10 + i).result(timeout=60)
                counts_out = result.get_counts()
                job_s.append(time.perf_counter() - t0)
                own_run_s.append(result.results[0].header["reproducibility"]["controller"]
                                 ["elapsed_s"])
            with_read_backs, without = read_back_cost(
                lambda i: backend.run(native, shots=shots, seed_simulator=i).result(timeout=60)
                .get_counts(), jobs)
            with counted_round_trips() as (_, waited):  # where the time goes (separate jobs)
                t0 = time.perf_counter()
                for i in range(jobs):
                    backend.run(native, shots=shots, seed_simulator=10 + i).result(timeout=60)
                spent = time.perf_counter() - t0

            program = compile_circuit(native, backend.snapshot, provider.config.channels)
            run_params = {"rep_delay_s": backend.options.rep_delay
                          or default_rep_delay_s(backend.snapshot)}
            exec_s = []
            with ControllerClient(provider.config.controllers[0].endpoint,
                                  spin_s=spin_s) as client:
                program_id = client.upload(*program.to_wire())
                for i in range(jobs + 1):  # as a job runs it: the run's reply held to its end
                    run_id, ended = client.run_held(program_id, shots, wait_s=client.max_hold_s,
                                                    params={**run_params, "seed": i})
                    result, _ = ended or client.wait(run_id, timeout_s=60)
                    if i:
                        exec_s.append(result["elapsed_s"])
            zmq_rtt, tcp_rtt = raw_round_trips(zport, tport, 300)
            lo = next(i for i in provider.config.instruments if i.kind == "signal_generator")
            visa_query, raw_query = scpi_transaction_costs(lo.resource, 300)

    t_job, t_exec = statistics.median(job_s), statistics.median(exec_s)
    fetches = counts.pop("zmq fetch", 0)
    zmq_trips = sum(n for op, n in counts.items() if op.startswith("zmq "))
    trips = (zmq_trips + 0.5 * min(fetches, 1)) * zmq_rtt + counts["scpi"] * tcp_rtt
    needed = t_exec + trips
    # Each job less its own run on the controller (elapsed_s in its reproducibility bundle):
    # the run's time within the job, not a separate run's.
    own = [j - r - trips for j, r in zip(job_s, own_run_s, strict=True)]
    t_own_run = statistics.median(own_run_s)
    emit([Line("trivial 1-qubit job vs the time it cannot avoid", t_job, needed,
               f"{dur(t_job)}/job median (backend.run() to get_counts())",
               f"{dur(needed)} (simulator run {dur(t_exec)} + {zmq_trips} ZeroMQ and "
               f"{counts['scpi']} SCPI raw round trips)")], [])
    asked = counts.pop("scpi instruments asked", 0)
    overlapped = counts.pop("scpi overlapped", 0)
    info(f"round trips of one job: {dict(counts)}, plus {fetches} fetch(es) held during the "
         f"run (counted as half a round trip) and {overlapped} SCPI exchange(s) read once "
         f"the run has started or ended (the read-back before the run: not counted, it travels "
         f"with the run request); the SCPI exchanges asked {asked} instruments")
    info(f"raw round trips (separate process, loopback): pyzmq REQ/REP echo {dur(zmq_rtt)}, "
         f"TCP line echo {dur(tcp_rtt)}")
    info(f"dispatch overhead (job - simulator run - raw round trips): {dur(t_job - needed)} "
         "(issue 'Hardening' asks <= 1 ms)")
    info(f"dispatch overhead of each job less its own run (its bundle's elapsed_s, median "
         f"{dur(t_own_run)}; the runs above, made alone: {dur(t_exec)}) and the raw round "
         f"trips: median {dur(statistics.median(own))}, range {dur(min(own))}-{dur(max(own))}")
    zmq_s, scpi_s = waited["zmq"] / jobs, waited["scpi"] / jobs
    info(f"where a job's time goes (means over {jobs} more jobs, {dur(spent / jobs)} each): "
         f"ZeroMQ requests {dur(zmq_s)} (simulator run and raw round trips "
         f"{dur(t_exec + (zmq_trips + 0.5 * min(fetches, 1)) * zmq_rtt)}; the rest is the "
         "controller's request handling and the protocol's encoding), SCPI exchanges "
         f"{dur(scpi_s)} (raw {dur(counts['scpi'] * tcp_rtt)}; the rest is the driver, the "
         "instruments' parsing and the queries after the first), host code "
         f"{dur(spent / jobs - zmq_s - scpi_s)} (validation, compile, the job thread, "
         "reading the read-back that travelled with the run request, merging and counting the "
         "results while the read-back after the run travels, the Result)")
    info(f"the settings read-backs (before and after the run, {asked} instruments asked): "
         f"{dur(with_read_backs - without)} per job (jobs {dur(with_read_backs)} with them, "
         f"{dur(without)} without, alternately, {jobs} each; the jobs without are a "
         "measurement only, labqpu always reads back); overhead without them "
         f"{dur(without - t_exec - zmq_trips * zmq_rtt)}")
    info(f"one state query to the simulated LO source {lo.name}: {dur(visa_query)} through "
         f"labqpu's driver, {dur(raw_query)} as a line on a raw TCP "
         f"socket (same instrument, alternately): the driver's own cost is "
         f"{dur(visa_query - raw_query)} per transaction, "
         f"{dur(asked * (visa_query - raw_query))} for the {asked} the job asks")
    info(f"job time min {dur(min(job_s))}, max {dur(max(job_s))}; last counts {counts_out}")
    print(f"load average at end {tm.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
