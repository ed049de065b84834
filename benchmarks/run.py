"""Benchmarks of labqpu's hot paths, each printed next to a reference measured in the same run.

Usage::

    python benchmarks/run.py            # full run (30-55 s on 2 cores)
    python benchmarks/run.py --quick    # fewer repeats, smaller end-to-end run (< ~30 s)
    python benchmarks/run.py --only synthesis,compile
    OPENBLAS_NUM_THREADS=1 python benchmarks/run.py   # see README: small-matrix BLAS threads

Every result line reads::

    name: labqpu X (unit) | reference Y (unit) | ratio Z [plain words]

``ratio`` is always labqpu's time divided by the reference's time for the same work (for
throughputs: reference rate / labqpu rate), so below 1 labqpu is faster, above 1 it is slower.
Figures are medians over several repeats; numba compilation, first-call caches and the
simulator's start-up are excluded (one untimed warm-up call each). Nothing here asserts on
time: the numbers are for people to read. Correctness of each reference is checked against
labqpu's output before it is timed, so the two sides compute the same thing.
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

import numpy as np
import scipy.linalg

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_JSON = REPO / "labqpu" / "data" / "lab5_calibration.json"

#: FACTS.md, "Figures measured on a CI-like machine": legacy Qiskit 1.4 Pulse, 7-qubit circuit
#: of ~100 native ops (~200 Plays): schedule() 68-86 ms plus sampling every waveform 56-65 ms.
LEGACY_PULSE_MS = (68.0 + 56.0, 86.0 + 65.0)
LEGACY_PULSE_OPS = 100


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Budget:
    """How hard to measure: repeats per figure and the minimum duration of one repeat."""

    repeats: int
    min_repeat_s: float
    e2e_jobs: int
    rtt_calls: int


FULL = Budget(repeats=7, min_repeat_s=0.1, e2e_jobs=20, rtt_calls=300)
QUICK = Budget(repeats=3, min_repeat_s=0.02, e2e_jobs=5, rtt_calls=100)


def seconds_per_call(fn: Callable[[], object], budget: Budget) -> float:
    """Median wall time (s) of one ``fn()`` call, after one untimed warm-up call.

    Each repeat runs ``fn`` enough times in a row to last at least ``budget.min_repeat_s``,
    so that timer resolution and loop overhead do not matter for microsecond calls.
    """
    fn()  # warm-up: numba dispatch/compilation, caches, lazy imports
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= budget.min_repeat_s:
            break
        number = max(number * 2, int(number * budget.min_repeat_s / max(elapsed, 1e-9) * 1.2))
    samples = [elapsed / number]
    for _ in range(budget.repeats - 1):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


# --------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Row:
    """One printed comparison; ``*_s`` are seconds for the same unit of work."""

    name: str
    labqpu_s: float
    reference_s: float
    labqpu_text: str
    reference_text: str
    note: str = ""
    words: str = ""  # replaces "labqpu Nx faster/slower" when that reading does not fit

    @property
    def ratio(self) -> float:
        return self.labqpu_s / self.reference_s

    def line(self) -> str:
        r = self.ratio
        words = self.words or (
            f"labqpu {1 / r:.1f}x faster" if r < 1 else f"labqpu {r:.1f}x slower")
        note = f"; {self.note}" if self.note else ""
        return (f"{self.name}: labqpu {self.labqpu_text} | reference {self.reference_text} | "
                f"ratio {_fmt(r)} [{words}{note}]")


def _fmt(x: float) -> str:
    """Three significant figures, no scientific notation for ordinary magnitudes."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"


def _rate(per_s: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{_fmt(per_s / scale)} {prefix}{unit}/s"
    return f"{_fmt(per_s)} {unit}/s"


def _dur(seconds: float) -> str:
    if seconds >= 1:
        return f"{_fmt(seconds)} s"
    if seconds >= 1e-3:
        return f"{_fmt(seconds * 1e3)} ms"
    return f"{_fmt(seconds * 1e6)} µs"


def throughput_row(name: str, items: int, unit: str, labqpu_s: float, reference_s: float,
                   reference_label: str, note: str = "") -> Row:
    """Compare two timings of a call processing ``items`` ``unit``s, shown as rates."""
    return Row(name, labqpu_s, reference_s,
               f"{_rate(items / labqpu_s, unit)} ({_dur(labqpu_s)}/call)",
               f"{_rate(items / reference_s, unit)} ({_dur(reference_s)}/call, "
               f"{reference_label})", note)


def emit(rows: list[Row], out: list[dict]) -> None:
    for row in rows:
        print(row.line(), flush=True)
        out.append({"name": row.name, "labqpu_s": row.labqpu_s, "reference_s": row.reference_s,
                    "labqpu": row.labqpu_text, "reference": row.reference_text,
                    "ratio": row.ratio, "note": row.note})


def info(text: str) -> None:
    """A context line (not a comparison)."""
    print(f"  . {text}", flush=True)


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


def gaussian_drag_python(n: int, sigma: float, beta: float) -> np.ndarray:
    """Per-sample pure-Python loop (math module), the naive way to write it."""
    centre = (n - 1) / 2.0
    two_s2 = 2.0 * sigma * sigma
    edge = math.exp(-((centre + 1.0) ** 2) / two_s2)
    norm = 1.0 / (1.0 - edge)
    vals = []
    for k in range(n):
        x = k - centre
        g = math.exp(-(x * x) / two_s2)
        vals.append(complex((g - edge) * norm, beta * (-x / (sigma * sigma)) * g * norm))
    return np.array(vals, dtype=np.complex64)


def flat_top_numpy(n: int, rise: float) -> np.ndarray:
    """Vectorised twin of ``kernels._flat_top_kernel``."""
    t = np.arange(n) + 0.5
    v = np.ones(n)
    if rise > 0:
        lo = t < rise
        hi = t > n - rise
        v[lo] = 0.5 * (1.0 - np.cos(np.pi * t[lo] / rise))
        v[hi] = 0.5 * (1.0 - np.cos(np.pi * (n - t[hi]) / rise))
    return v.astype(np.complex64)


def flat_top_python(n: int, rise: float) -> np.ndarray:
    """Per-sample pure-Python loop."""
    vals = []
    for k in range(n):
        t = k + 0.5
        if rise > 0 and t < rise:
            v = 0.5 * (1.0 - math.cos(math.pi * t / rise))
        elif rise > 0 and t > n - rise:
            v = 0.5 * (1.0 - math.cos(math.pi * (n - t) / rise))
        else:
            v = 1.0
        vals.append(v)
    return np.array(vals, dtype=np.float64).astype(np.complex64)


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


def propagate_expm(h_stack_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """Per-sample ``scipy.linalg.expm`` loop, last sample leftmost."""
    u = np.eye(h_stack_hz.shape[1], dtype=np.complex128)
    for h in h_stack_hz:
        u = scipy.linalg.expm(-2j * np.pi * dt_s * h) @ u
    return u


def propagate_eigh_batched(h_stack_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """One batched ``numpy.linalg.eigh`` over all samples, then the ordered product."""
    evals, evecs = np.linalg.eigh(h_stack_hz)
    uks = (evecs * np.exp(-2j * np.pi * dt_s * evals)[:, None, :]) @ evecs.conj().transpose(
        0, 2, 1)
    u = np.eye(h_stack_hz.shape[1], dtype=np.complex128)
    for uk in uks:
        u = uk @ u
    return u


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"benchmark reference disagrees with labqpu: {what}")


# --------------------------------------------------------------------------- benchmarks


def bench_synthesis(budget: Budget, out: list[dict]) -> None:
    from labqpu.pulse.kernels import (
        _flat_top_kernel,
        _gaussian_drag_kernel,
        flat_top,
        gaussian_drag,
    )

    print("\n[1] waveform synthesis (samples/s; labqpu = the wrapper the compiler calls)")
    for n in (160, 100_000):
        sigma, beta, rise = n / 4.0, 0.5, n / 8.0
        _check(np.allclose(gaussian_drag(n, sigma, beta), gaussian_drag_numpy(n, sigma, beta),
                           rtol=1e-5, atol=1e-6), f"gaussian_drag n={n}")
        _check(np.allclose(gaussian_drag(n, sigma, beta), gaussian_drag_python(n, sigma, beta),
                           rtol=1e-5, atol=1e-6), f"gaussian_drag python n={n}")
        _check(np.allclose(flat_top(n, rise), flat_top_numpy(n, rise), atol=1e-6),
               f"flat_top n={n}")
        _check(np.allclose(flat_top(n, rise), flat_top_python(n, rise), atol=1e-6),
               f"flat_top python n={n}")
        cases = [
            ("gaussian_drag", lambda n=n, s=sigma, b=beta: gaussian_drag(n, s, b),
             lambda n=n, s=sigma, b=beta: gaussian_drag_numpy(n, s, b),
             lambda n=n, s=sigma, b=beta: gaussian_drag_python(n, s, b)),
            ("flat_top", lambda n=n, r=rise: flat_top(n, r),
             lambda n=n, r=rise: flat_top_numpy(n, r),
             lambda n=n, r=rise: flat_top_python(n, r)),
        ]
        for name, ours, ref_np, ref_py in cases:
            t_ours = seconds_per_call(ours, budget)
            t_np = seconds_per_call(ref_np, budget)
            t_py = seconds_per_call(ref_py, budget)
            emit([
                throughput_row(f"{name} n={n} vs numpy", n, "samples", t_ours, t_np,
                               "numpy vectorised"),
                throughput_row(f"{name} n={n} vs python loop", n, "samples", t_ours, t_py,
                               "pure-Python per-sample loop"),
            ], out)
        if n == 160:
            # How much of a short call is the wrapper (validation + numba dispatch)?
            t_k = seconds_per_call(lambda n=n, s=sigma, b=beta: _gaussian_drag_kernel(n, s, b),
                                   budget)
            t_f = seconds_per_call(lambda n=n, r=rise: _flat_top_kernel(n, r), budget)
            info(f"n=160 kernel alone (no validation): gaussian_drag {_dur(t_k)}/call, "
                 f"flat_top {_dur(t_f)}/call")


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
        rows.append(throughput_row(f"discriminate {label} vs numpy", points, "points", t_ours,
                                   t_ref, "numpy broadcasting"))
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
    emit([throughput_row(f"IQ->counts (experiment_result, {shots:,} shots x {c0.size}) vs numpy",
                         shots, "shots", t_ours, t_ref, "numpy integer packing + np.unique")],
         out)


def _calibrated() -> tuple[object, object]:
    """(snapshot, config) of the shipped lab5 calibration, via a throw-away store."""
    from labqpu.rack.config import default_config_path, load_config
    from labqpu.store import CalibrationStore

    with tempfile.TemporaryDirectory(prefix="labqpu-bench-") as tmp:
        store = CalibrationStore(Path(tmp) / "calibration.sqlite")
        try:
            snapshot = store.import_json(json.loads(CALIBRATION_JSON.read_text()))
        finally:
            store.close()
    return snapshot, load_config(default_config_path())


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


def bench_compile(budget: Budget, out: list[dict]) -> None:
    from qiskit import transpile

    from labqpu.pulse.compiler import compile_circuit

    w = _workload()
    snapshot, config, target, circuit, tqc, program = (
        w.snapshot, w.config, w.target, w.circuit, w.transpiled, w.program)
    ops = sum(1 for inst in tqc.data if inst.operation.name != "barrier")

    print(f"\n[3] compilation (5 qubits, {ops} native ops after transpile: "
          f"{dict(tqc.count_ops())}; {program.play_port.shape[0]} plays, "
          f"{program.num_waveforms} unique waveforms)")
    t_ours = seconds_per_call(lambda: compile_circuit(tqc, snapshot, config.channels), budget)
    t_tr = seconds_per_call(lambda: transpile(circuit, target=target, seed_transpiler=1), budget)
    lo, hi = LEGACY_PULSE_MS
    emit([
        Row("compile_circuit vs qiskit.transpile (same circuit)", t_ours, t_tr,
            f"{_dur(t_ours)}/circuit, {_dur(t_ours / ops)}/op",
            f"{_dur(t_tr)}/circuit, {_dur(t_tr / ops)}/op (qiskit.transpile, level 2)",
            "the cost the user already pays"),
    ], out)
    quoted = Row("compile_circuit vs legacy Qiskit Pulse [QUOTED from FACTS.md, NOT measured "
                 "in this run]", t_ours, (lo + hi) / 2e3,
                 f"{_dur(t_ours)}/circuit ({ops} ops)",
                 f"{lo:.0f}-{hi:.0f} ms/circuit (~{LEGACY_PULSE_OPS} ops, 7 qubits, "
                 f"schedule() + waveform sampling, Qiskit 1.4, other machine)",
                 f"range {_fmt(t_ours / (hi / 1e3))}-{_fmt(t_ours / (lo / 1e3))}")
    print(quoted.line(), flush=True)
    out.append({"name": quoted.name, "labqpu_s": t_ours, "reference_s": None,
                "labqpu": quoted.labqpu_text, "reference": quoted.reference_text,
                "ratio": quoted.ratio, "note": "quoted, not measured"})


def bench_propagation(budget: Budget, out: list[dict]) -> None:
    from labqpu.firmware_sim.physics import _propagate_kernel

    n_samples, dt_s = 160, 1e-9
    rng = np.random.default_rng(3)
    print(f"\n[4] simulator propagation ({n_samples}-sample stack; µs per sample)")
    rows = []
    for d in (3, 9):
        a = rng.normal(size=(n_samples, d, d)) + 1j * rng.normal(size=(n_samples, d, d))
        h = 0.5 * (a + a.conj().transpose(0, 2, 1)) * 5e7  # ~50 MHz scale: phases ~0.3 rad
        u = _propagate_kernel(h, dt_s)
        _check(np.allclose(u, propagate_expm(h, dt_s), atol=1e-9), f"expm d={d}")
        _check(np.allclose(u, propagate_eigh_batched(h, dt_s), atol=1e-9), f"eigh d={d}")
        t_ours = seconds_per_call(lambda h=h: _propagate_kernel(h, dt_s), budget)
        t_expm = seconds_per_call(lambda h=h: propagate_expm(h, dt_s), budget)
        t_eigh = seconds_per_call(lambda h=h: propagate_eigh_batched(h, dt_s), budget)
        us = 1e6 / n_samples
        for label, t_ref in (("scipy.linalg.expm per-sample loop", t_expm),
                             ("numpy batched eigh", t_eigh)):
            rows.append(Row(f"_propagate_kernel {d}x{d} vs {label.split(' per')[0]}",
                            t_ours, t_ref, f"{_fmt(t_ours * us)} µs/sample",
                            f"{_fmt(t_ref * us)} µs/sample ({label})"))
    emit(rows, out)


def _job_phases(provider, backend, circuit, shots: int, jobs: int) -> dict[str, float]:
    """Median time of each step of a job, driven by hand through a second rack connection."""
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
            params = {"rep_delay_s": 100e-6, "seed": i}
            run_id = client.run(pid, shots, params=params)
            timed("run + wait() (ControllerClient's polling backoff)",
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

    jobs, shots = budget.e2e_jobs, 2000
    print(f"\n[5] end-to-end job on the firmware simulator (Bell circuit, {shots} shots, "
          f"{jobs} jobs)")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home, \
            _env("LABQPU_HOME", home):
        t0 = time.perf_counter()
        provider = LabProvider()
        try:
            info(f"LabProvider() start-up (simulator process, not in any figure): "
                 f"{_dur(time.perf_counter() - t0)}")
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
                for _ in range(budget.rtt_calls):
                    t0 = time.perf_counter()
                    client.status()
                    rtt.append(time.perf_counter() - t0)
            t_rtt = statistics.median(rtt)
        finally:
            provider.close()

    emit([Row("job latency vs bare ZeroMQ round trip", t_job, t_rtt,
              f"{_dur(t_job)}/job median, {1 / t_job:.1f} jobs/s",
              f"{_dur(t_rtt)}/round trip (ControllerClient.status(), same controller)",
              words=f"a job costs {t_job / t_rtt:,.0f} bare round trips")], out)
    info(f"job latency min {_dur(min(total))}, max {_dur(max(total))}; backend.run() "
         f"(validate + compile + queue) {_dur(t_submit)} median; last counts {counts}")
    info("where a job's time goes (median of each step, same simulator, driven step by step;"
         " not additive with the figure above):")
    for step, seconds in phases.items():
        info(f"  {step:<58} {_dur(seconds):>10}")


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and end-to-end jobs (total under ~30 s)")
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
    print(f"{platform.platform()}, {os.cpu_count()} CPUs; {_versions()}")
    print(f"BLAS threads: {_blas_threads()}; load average at start "
          f"{os.getloadavg()[0]:.2f} (other processes on the machine add noise)")
    print("ratio = labqpu time / reference time for the same work (<1: labqpu faster); "
          f"median of {budget.repeats} repeats, warm-up excluded")
    out: list[dict] = []
    t0 = time.perf_counter()
    for name in names:
        BENCHMARKS[name](budget, out)
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.1f} s; load average at end {os.getloadavg()[0]:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"mode": "quick" if args.quick else "full",
                                         "versions": _versions(), "total_s": total,
                                         "results": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
