"""Benchmarks of labqpu's hot paths, each printed next to a reference measured in the same run.

Usage::

    python benchmarks/run.py            # full run (a few minutes; creates the reference venvs once)
    python benchmarks/run.py --quick    # fewer repeats, one round, smaller batches
    python benchmarks/run.py --only synthesis,compile
    OPENBLAS_NUM_THREADS=1 python benchmarks/run.py   # see README: small-matrix BLAS threads

References are only what a user would otherwise run: legacy Qiskit 1.4 Pulse and
quantify-scheduler (each in its own virtual environment, see ``compile_vs.py``), numpy
vectorised code, and qiskit-aer. Every result line reads::

    name: labqpu X (what) | reference Y (what) | speed-up Z [labqpu Zx faster]

``speed-up`` is always the reference's time divided by labqpu's time for the same work, so
above 1 labqpu is faster, below 1 it is slower. Figures are medians over several repeats;
numba compilation, first-call caches and the simulator's start-up are excluded (one untimed
warm-up call each). Lines starting with ``  .`` are context, not comparisons. Nothing here
asserts on time. Each reference's output is checked against labqpu's before it is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _timing as tm
import numpy as np
import scipy.linalg
from _timing import FULL, QUICK, Budget, Line, dur, emit, fmt, info, rate, seconds_per_call

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_JSON = REPO / "labqpu" / "data" / "lab5_calibration.json"


def throughput_line(name: str, items: int, unit: str, labqpu_s: float, reference_s: float,
                    labqpu_label: str, reference_label: str, note: str = "") -> Line:
    """Compare two timings of a call processing ``items`` ``unit``s, shown as rates."""
    return Line(name, labqpu_s, reference_s,
                f"{rate(items / labqpu_s, unit)} ({dur(labqpu_s)}/call, {labqpu_label})",
                f"{rate(items / reference_s, unit)} ({dur(reference_s)}/call, "
                f"{reference_label})", note)


# --------------------------------------------------------------------------- references


def gaussian_drag_numpy(n: int, sigma: float, beta: float) -> np.ndarray:
    """Vectorised twin of ``kernels._gaussian_drag_kernel``."""
    centre = (n - 1) / 2.0
    x = np.arange(n) - centre
    two_s2 = 2.0 * sigma * sigma
    edge = math.exp(-((centre + 1.0) ** 2) / two_s2)
    norm = 1.0 / (1.0 - edge)
    g = np.exp(-(x * x) / two_s2)
    out = np.empty(n, dtype=np.complex64)
    out.real = (g - edge) * norm
    out.imag = (beta * norm / (sigma * sigma)) * (-x * g)
    return out


def flat_top_numpy(n: int, rise: float) -> np.ndarray:
    """Vectorised twin of ``kernels._flat_top_kernel`` (cosine only on the edges)."""
    out = np.ones(n, dtype=np.complex64)
    if rise > 0:
        m = math.ceil(rise - 0.5)  # samples whose centre k + 1/2 lies within the rise
        t = np.arange(m) + 0.5
        edge = 0.5 * (1.0 - np.cos(np.pi * t / rise))
        out[:m] = edge
        out[n - m:] = edge[::-1]
    return out


def discriminate_numpy(iq: np.ndarray, center0: np.ndarray, center1: np.ndarray) -> np.ndarray:
    """Nearest-centre states with broadcasting (computes in the input's precision)."""
    d0 = iq - center0[None, :]
    d1 = iq - center1[None, :]
    return ((d1.real * d1.real + d1.imag * d1.imag)
            < (d0.real * d0.real + d0.imag * d0.imag)).astype(np.uint8)


def counts_numpy(iq: np.ndarray, center0: np.ndarray, center1: np.ndarray,
                 clbits: np.ndarray) -> dict[str, int]:
    """IQ -> counts dict with integer arrays only (the last acquisition into a clbit wins)."""
    bits = discriminate_numpy(iq, center0, center1).astype(np.uint64)
    values = np.zeros(iq.shape[0], dtype=np.uint64)
    for j, c in enumerate(clbits):
        mask = np.uint64(1) << np.uint64(c)
        values = (values & ~mask) | (bits[:, j] << np.uint64(c))
    uniq, n = np.unique(values, return_counts=True)
    return {hex(int(v)): int(k) for v, k in zip(uniq, n, strict=True)}


def propagate_eigh_batched(h_stack_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """One batched ``numpy.linalg.eigh`` over all samples, then the ordered product
    U_n ... U_1 as a tree of batched matmuls (later @ earlier, pairwise: ~log2(n) numpy calls,
    no Python loop over the samples)."""
    evals, evecs = np.linalg.eigh(h_stack_hz)
    uks = (evecs * np.exp(-2j * np.pi * dt_s * evals)[:, None, :]) @ evecs.conj().transpose(
        0, 2, 1)
    while uks.shape[0] > 1:
        if uks.shape[0] % 2:  # an identity after the last sample keeps the pairs in order
            uks = np.concatenate([uks, np.eye(uks.shape[1], dtype=uks.dtype)[None]])
        uks = uks[1::2] @ uks[0::2]
    return uks[0]


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark reference disagrees with labqpu: {what}")


# --------------------------------------------------------------------------- benchmarks


@functools.cache
def _looped(kernel):
    """A numba loop calling ``kernel`` ``reps`` times on one preallocated output: the kernel's
    own rate on short pulses, without the Python-to-numba call of every real call."""
    from numba import njit

    @njit(cache=False)
    def loop(reps, a, b, out):
        for _ in range(reps):
            kernel(a, b, out)
        return out

    return loop


def _fill_rate_s(n: int, budget: Budget) -> float:
    """Seconds to fill an ``n``-sample complex64 array with numpy (the memory-write floor)."""
    buf = np.empty(n, dtype=np.complex64)
    return seconds_per_call(lambda: buf.fill(1.0 + 0.5j), budget)


def bench_synthesis(budget: Budget, out: list[dict]) -> None:
    from labqpu.pulse import compiler
    from labqpu.pulse.kernels import (
        _flat_top_kernel,
        _gaussian_drag_kernel,
        flat_top,
        gaussian_drag,
    )

    big = 8 << 20  # 64 MiB of complex64: beyond every cache, i.e. memory bandwidth
    t_big = _fill_rate_s(big, Budget(repeats=budget.repeats, min_repeat_s=budget.min_repeat_s))
    print("\n[1] waveform synthesis, one core (labqpu = the call the compiler makes: validation, "
          "numba kernel, complex64 out)")
    info(f"memory fill, numpy complex64 .fill() of {big >> 20} Mi samples (beyond cache): "
         f"{rate(big / t_big, 'samples')} = {fmt(big * 8 / t_big / 1e9)} GB/s")
    sigma, beta = 10.0, -0.388  # the shipped calibration's DRAG (40 samples, sigma 10 ns)
    cases = [
        ("gaussian_drag", 40, "40-sample DRAG (sx/x)",
         lambda n: gaussian_drag(n, sigma, beta), lambda n: gaussian_drag_numpy(n, sigma, beta),
         _gaussian_drag_kernel, (sigma, beta)),
        ("flat_top", 32, "32-sample CZ flat top, 5-sample rise",
         lambda n: flat_top(n, 5.0), lambda n: flat_top_numpy(n, 5.0),
         _flat_top_kernel, (5.0, 0.0)),
        ("flat_top", 1000, "1000-sample readout, 20-sample rise",
         lambda n: flat_top(n, 20.0), lambda n: flat_top_numpy(n, 20.0),
         _flat_top_kernel, (20.0, 0.0)),
        ("gaussian_drag", 160, "160-sample DRAG, sigma 40",
         lambda n: gaussian_drag(n, 40.0, beta), lambda n: gaussian_drag_numpy(n, 40.0, beta),
         _gaussian_drag_kernel, (40.0, beta)),
        ("gaussian_drag", 100_000, "long Gaussian, sigma n/4",
         lambda n: gaussian_drag(n, n / 4, beta), lambda n: gaussian_drag_numpy(n, n / 4, beta),
         _gaussian_drag_kernel, (25_000.0, beta)),
        ("flat_top", 100_000, "long flat top, 20-sample rise",
         lambda n: flat_top(n, 20.0), lambda n: flat_top_numpy(n, 20.0),
         _flat_top_kernel, (20.0, 0.0)),
    ]
    rows = []
    for name, n, what, ours, ref, kernel, args in cases:
        _check(np.allclose(ours(n), ref(n), rtol=1e-5, atol=1e-6), f"{name} n={n}")
        t_ours = seconds_per_call(lambda f=ours, n=n: f(n), budget)
        t_ref = seconds_per_call(lambda f=ref, n=n: f(n), budget)
        o = np.empty(n, dtype=np.complex64)
        reps = max(1, 100_000 // n)
        loop = _looped(kernel)
        t_loop = seconds_per_call(lambda r=reps, a=args, o=o, f=loop: f(r, *a, o), budget) / reps
        t_fill = _fill_rate_s(n, budget)
        rows.append(throughput_line(
            f"{name} n={n} ({what}) vs numpy", n, "samples", t_ours, t_ref,
            f"kernel in a numba loop, no Python call {rate(n / t_loop, 'samples')}; numpy fill "
            f"of the same array {rate(n / t_fill, 'samples')}", "numpy vectorised"))
    emit(rows, out)

    # The compiler does not call the kernels for a waveform it has seen: compiler.waveform
    # returns the cached read-only array of that shape key. Not synthesis; reported apart.
    key, what = ("drag", 40, sigma, beta), "the benchmark's 40-sample DRAG"
    _check(np.array_equal(compiler.waveform(key, what), gaussian_drag(40, sigma, beta)), "cache")
    t_hit = seconds_per_call(lambda: compiler.waveform(key, what), budget)
    t_ref = seconds_per_call(lambda: gaussian_drag_numpy(40, sigma, beta), budget)
    emit([throughput_line("waveform cache hit, 40-sample DRAG (NOT synthesis) vs numpy", 40,
                          "samples", t_hit, t_ref, "compiler's shape-keyed cache, effective",
                          "numpy vectorised synthesis")], out)


def bench_discrimination(budget: Budget, out: list[dict]) -> None:
    from labqpu.backend.results import discriminator_centres, experiment_result
    from labqpu.pulse.kernels import discriminate

    shots, n_acq = 100_000, 5
    points = shots * n_acq
    rng = np.random.default_rng(1)
    c0 = (0.15 + 0.15j) * np.exp(1j * np.arange(n_acq))
    c1 = (0.18 - 0.14j) * np.exp(1j * np.arange(n_acq))
    state = rng.integers(0, 2, size=(shots, n_acq))
    noise = rng.normal(0, 0.08, size=(shots, n_acq, 2)) @ np.array([1.0, 1j])
    iq128 = np.where(state == 1, c1[None, :], c0[None, :]) + noise
    iq64 = iq128.astype(np.complex64)  # what the controller returns

    print(f"\n[2] IQ discrimination ({shots:,} shots x {n_acq} acquisitions; points/s)")
    rows = []
    for label, iq in (("complex128", iq128), ("complex64 (as the controller returns)", iq64)):
        ours = discriminate(iq, c0, c1)
        ref = discriminate_numpy(iq, c0.astype(iq.dtype), c1.astype(iq.dtype))
        _check(np.mean(ours != ref) < 1e-4, f"discriminate {label}")
        t_ours = seconds_per_call(lambda iq=iq: discriminate(iq, c0, c1), budget)
        c0r, c1r = c0.astype(iq.dtype), c1.astype(iq.dtype)
        t_ref = seconds_per_call(lambda iq=iq, a=c0r, b=c1r: discriminate_numpy(iq, a, b),
                                 budget)
        rows.append(throughput_line(f"discriminate {label} vs numpy", points, "points", t_ours,
                                    t_ref, "kernels.discriminate", "numpy broadcasting"))
    emit(rows, out)

    # The step after discrimination: IQ -> counts as a job builds them (experiment_result),
    # for the program of the compile benchmark (5 acquisitions into 5 clbits).
    w = _workload()
    program, snapshot = w.program, w.snapshot
    rng = np.random.default_rng(2)
    c0, c1 = discriminator_centres(snapshot, program.acq_qubit)
    state = rng.integers(0, 2, size=(shots, c0.size))
    noise = rng.normal(0, 0.05, size=(shots, c0.size, 2)) @ np.array([1.0, 1j])
    iq = (np.where(state == 1, c1[None, :], c0[None, :]) + noise).astype(np.complex64)

    def ours() -> dict:
        return experiment_result(program, iq, shots=shots, meas_level=2, meas_return="single",
                                 memory=False, snapshot=snapshot)["data"]["counts"]

    def ref() -> dict:
        return counts_numpy(iq, c0.astype(np.complex64), c1.astype(np.complex64),
                            program.acq_clbit)

    a, b = ours(), ref()
    _check(a.keys() == b.keys() and sum(abs(a[k] - b[k]) for k in a) <= 1e-4 * shots,
           "counts")
    t_ours = seconds_per_call(ours, budget)
    t_ref = seconds_per_call(ref, budget)
    emit([throughput_line(f"IQ->counts ({shots:,} shots x {c0.size}) vs numpy", shots, "shots",
                          t_ours, t_ref, "results.experiment_result",
                          "numpy integer packing + np.unique")], out)


def _calibrated(device: str = "lab5") -> tuple[object, object]:
    """(snapshot, config) of a built-in device's shipped calibration, via a throw-away store."""
    from labqpu.rack.config import builtin_config_path, load_config
    from labqpu.store import CalibrationStore

    path = CALIBRATION_JSON.with_name(f"{device}_calibration.json")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-") as tmp:
        store = CalibrationStore(Path(tmp) / "calibration.sqlite")
        try:
            snapshot = store.import_json(json.loads(path.read_text()))
        finally:
            store.close()
    return snapshot, load_config(builtin_config_path(device))


def random_native_circuit(num_qubits: int = 5, layers: int = 8, seed: int = 1):
    """Layers of rz+sx on every qubit and cz on alternating edges of the line, then measure."""
    from qiskit import QuantumCircuit

    rng = random.Random(seed)
    qc = QuantumCircuit(num_qubits, num_qubits, name="bench_random_layers")
    for layer in range(layers):
        for q in range(num_qubits):
            qc.rz(rng.uniform(-math.pi, math.pi), q)
            qc.sx(q)
        for a in range(layer % 2, num_qubits - 1, 2):
            qc.cz(a, a + 1)
    qc.measure(range(num_qubits), range(num_qubits))
    return qc


@dataclass(frozen=True)
class Workload:
    """The 5-qubit random-layer circuit, before and after transpiling, and its program."""

    snapshot: object
    config: object
    target: object
    circuit: object
    transpiled: object
    program: object


@functools.cache
def _workload() -> Workload:
    from qiskit import transpile

    from labqpu.backend.target import build_target
    from labqpu.pulse.compiler import compile_circuit

    snapshot, config = _calibrated()
    target = build_target(snapshot, config)
    circuit = random_native_circuit()
    tqc = transpile(circuit, target=target, seed_transpiler=1)
    return Workload(snapshot, config, target, circuit, tqc,
                    compile_circuit(tqc, snapshot, config.channels))


def bench_compile(budget: Budget, out: list[dict], quick: bool = False) -> None:
    """labqpu's compiler against legacy Pulse and quantify-scheduler: see compile_vs.py."""
    import compile_vs
    from qiskit import transpile

    from labqpu.pulse.compiler import compile_circuit

    compile_vs.main(["--quick"] if quick else [], out=out)
    w = _workload()
    ops = len(w.transpiled.data)
    t_ours = seconds_per_call(lambda: compile_circuit(w.transpiled, w.snapshot,
                                                      w.config.channels), budget)
    t_tr = seconds_per_call(lambda: transpile(w.circuit, target=w.target, seed_transpiler=1),
                            budget)
    info(f"for scale, not a reference (other work): qiskit.transpile of the same circuit "
         f"(level 2) {dur(t_tr)} = {dur(t_tr / ops)}/op; compile_circuit of its output "
         f"{dur(t_ours)} = {dur(t_ours / ops)}/op")


def bench_propagation(budget: Budget, out: list[dict]) -> None:
    from labqpu.firmware_sim.clusters import _propagate_kernel

    n_samples, dt_s = 160, 1e-9
    rng = np.random.default_rng(3)
    print(f"\n[4] simulator propagation ({n_samples}-sample stack; µs per sample)")
    rows = []
    for d in (3, 9):
        a = rng.normal(size=(n_samples, d, d)) + 1j * rng.normal(size=(n_samples, d, d))
        h = 0.5 * (a + a.conj().transpose(0, 2, 1)) * 5e7  # ~50 MHz scale: phases ~0.3 rad
        u = _propagate_kernel(h, dt_s)
        _check(np.allclose(u, propagate_eigh_batched(h, dt_s), atol=1e-9), f"eigh d={d}")
        t_ours = seconds_per_call(lambda h=h: _propagate_kernel(h, dt_s), budget)
        t_eigh = seconds_per_call(lambda h=h: propagate_eigh_batched(h, dt_s), budget)
        us = 1e6 / n_samples
        rows.append(Line(f"_propagate_kernel {d}x{d} vs numpy batched eigh", t_ours, t_eigh,
                         f"{fmt(t_ours * us)} µs/sample (clusters._propagate_kernel)",
                         f"{fmt(t_eigh * us)} µs/sample (one batched numpy.linalg.eigh, then "
                         "the ordered product)"))
    emit(rows, out)
    info("the simulator's own comparison with qiskit-aer: benchmarks/simulator.py")


def _job_phases(provider, backend, circuit, shots: int, jobs: int) -> dict[str, float]:
    """Median time of each step of a job, driven by hand through a second rack connection."""
    from labqpu.backend.program_checks import default_rep_delay_s
    from labqpu.backend.results import experiment_result
    from labqpu.pulse.compiler import compile_circuit
    from labqpu.rack.hardware import RackConnection

    snapshot, config = backend.snapshot, provider.config
    rack = RackConnection(config)
    steps: dict[str, list[float]] = {}

    def timed(step: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        value = fn()
        steps.setdefault(step, []).append(time.perf_counter() - t0)
        return value

    def spin(client, run_id: str) -> object:
        while True:
            state, _, arrays = client.fetch(run_id)
            if state == "done":
                return arrays["iq"]
            if state in ("error", "aborted"):
                raise RuntimeError(f"run {run_id}: {state}")

    try:
        for i in range(jobs + 1):
            program = timed("compile_circuit",
                            lambda: compile_circuit(circuit, snapshot, config.channels))
            client = rack.controller(program.controller)
            timed("LO + flux-bias settings over VISA (apply_settings)",
                  lambda p=program: rack.apply_settings(p))
            pid = timed("upload", lambda c=client, p=program: c.upload(*p.to_wire()))
            # the job's own default (10 x the longest T1 of the qubits it plays on: the Bell
            # pair's), not a shorter one: the simulator's time grows as the delay shrinks
            params = {"rep_delay_s": default_rep_delay_s(snapshot, {int(q) for q in
                                                                    program.acq_qubit}),
                      "seed": i}
            run_id = client.run(pid, shots, params=params)
            timed("run + wait() (held fetches: answered when the run ends)",
                  lambda c=client, r=run_id: c.wait(r, timeout_s=120))
            run_id = client.run(pid, shots, params=params)
            iq = timed("run + fetch in a tight loop (~ simulator execution)",
                       lambda c=client, r=run_id: spin(c, r))
            timed("IQ -> counts (experiment_result)",
                  lambda p=program, iq=iq: experiment_result(
                      p, iq, shots=shots, meas_level=2, meas_return="single", memory=False,
                      snapshot=snapshot))
    finally:
        rack.close()
    return {step: statistics.median(v[1:]) for step, v in steps.items()}


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def bench_end_to_end(budget: Budget, out: list[dict]) -> None:
    from qiskit import QuantumCircuit, transpile

    from labqpu.backend.provider import LabProvider
    from labqpu.drivers.controller import ControllerClient

    jobs, shots = (20, 2000) if budget.repeats >= 7 else (5, 2000)
    rtt_calls = 300 if budget.repeats >= 7 else 100
    print(f"\n[5] end-to-end job on the firmware simulator (Bell circuit, {shots} shots, "
          f"{jobs} jobs)")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home, \
            _env("LABQPU_HOME", home):
        t0 = time.perf_counter()
        provider = LabProvider()
        try:
            info(f"LabProvider() start-up (simulator process, not in any figure): "
                 f"{dur(time.perf_counter() - t0)}")
            backend = provider.backend()
            bell = QuantumCircuit(2, 2, name="bell")
            bell.h(0)
            bell.cx(0, 1)
            bell.measure([0, 1], [0, 1])
            tbell = transpile(bell, backend=backend, seed_transpiler=1)

            submit, total = [], []
            for i in range(jobs + 1):  # the first job is the warm-up
                t0 = time.perf_counter()
                job = backend.run(tbell, shots=shots, seed_simulator=i)
                t1 = time.perf_counter()
                counts = job.result(timeout=120).get_counts()
                t2 = time.perf_counter()
                if i:
                    submit.append(t1 - t0)
                    total.append(t2 - t0)
            t_job = statistics.median(total)
            t_submit = statistics.median(submit)

            phases = _job_phases(provider, backend, tbell, shots, jobs)
            endpoint = provider.config.controllers[0].endpoint
            with ControllerClient(endpoint) as client:
                client.status()
                rtt = []
                for _ in range(rtt_calls):
                    t0 = time.perf_counter()
                    client.status()
                    rtt.append(time.perf_counter() - t0)
            t_rtt = statistics.median(rtt)
        finally:
            provider.close()

    from qiskit_aer import AerSimulator

    # One thread, as the firmware simulator computes on one (its BLAS limited to one): Aer's
    # default threads made its time swing between ~1.3 and 8-20 ms on a shared 2-core machine.
    aer = AerSimulator(max_parallel_threads=1)
    # The same native circuit; Aer has no sy, so that one gate is given by its definition.
    abell = transpile(tbell, aer, optimization_level=0)
    _check(set(aer.run(abell, shots=shots, seed_simulator=1).result().get_counts())
           <= {"00", "01", "10", "11"}, "aer bell")
    t_aer = seconds_per_call(
        lambda: aer.run(abell, shots=shots, seed_simulator=1).result().get_counts(),
        Budget(repeats=budget.repeats, min_repeat_s=budget.min_repeat_s))
    emit([Line("Bell job, 2000 shots, vs qiskit-aer", t_job, t_aer,
               f"{dur(t_job)}/job median, {1 / t_job:.1f} jobs/s (backend.run() to "
               "get_counts(): compile, VISA settings, upload (the first job only: the "
               "controller holds the program), pulse-level simulation over ZeroMQ, IQ -> "
               "counts)",
               f"{dur(t_aer)}/job (AerSimulator(max_parallel_threads=1), ideal, same transpiled "
               "circuit with sy as ry, in process)",
               "different physics: Aer applies ideal gates; labqpu simulates the pulses on "
               "3-level transmons")], out)
    info(f"bare ZeroMQ round trip to the same controller (ControllerClient.status()): "
         f"{dur(t_rtt)}; a job costs {t_job / t_rtt:,.0f} of them")
    info(f"job latency min {dur(min(total))}, max {dur(max(total))}; backend.run() "
         f"(validate + compile + queue) {dur(t_submit)} median; last counts {counts}")
    info("where a job's time goes (median of each step, same simulator, driven step by step;"
         " not additive with the figure above):")
    for step, seconds in phases.items():
        info(f"  {step:<58} {dur(seconds):>10}")


BENCHMARKS: dict[str, Callable[[Budget, list[dict]], None]] = {
    "synthesis": bench_synthesis,
    "discrimination": bench_discrimination,
    "compile": bench_compile,
    "propagation": bench_propagation,
    "e2e": bench_end_to_end,
}


def _versions() -> str:
    import numba
    import qiskit
    import zmq

    return (f"python {platform.python_version()}, numpy {np.__version__}, numba "
            f"{numba.__version__}, scipy {scipy.__version__}, qiskit {qiskit.__version__}, "
            f"pyzmq {zmq.__version__}")


def _blas_threads() -> str:
    """The thread-count variables OpenBLAS/MKL/OpenMP read (they change small-matrix timings)."""
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    given = [f"{n}={os.environ[n]}" for n in names if n in os.environ]
    return ", ".join(given) if given else "library default (one per core)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, one interleaved round, smaller batches")
    parser.add_argument("--only", default="",
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    budget = QUICK if args.quick else FULL

    print(f"labqpu benchmarks ({'quick' if args.quick else 'full'}), "
          f"{dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"{tm.machine()}, {os.cpu_count()} CPUs; {_versions()}")
    print(f"BLAS threads: {_blas_threads()}; load average at start {tm.load_average()} "
          "(other processes on the machine add noise)")
    print("speed-up = reference time / labqpu time for the same work (> 1: labqpu faster); "
          f"median of {budget.repeats} repeats, warm-up excluded")
    out: list[dict] = []
    t0 = time.perf_counter()
    for name in names:
        if name == "compile":
            bench_compile(budget, out, quick=args.quick)
        else:
            BENCHMARKS[name](budget, out)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.1f} s; load average at end {tm.load_average()}")
    if args.json is not None:
        args.json.write_text(json.dumps({"mode": "quick" if args.quick else "full",
                                         "versions": _versions(), "total_s": total,
                                         "load_average_end": os.getloadavg(),
                                         "results": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
