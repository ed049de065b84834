"""Simulator benchmarks: labqpu's pulse-level physics against qiskit-aer and plain references.

Five comparisons, each measured in the same run on the same machine, single-threaded on both
sides (threadpoolctl limits BLAS to one thread; Aer gets ``max_parallel_threads=1``, and is
also shown with its default threads as context):

(a) the 5-qubit random-layer circuit of ``run.py`` at depth ~50 (17 layers: 85 rz, 85 sx,
    ~32 cz after transpiling), 1000 shots. labqpu: the firmware simulator's
    ``PhysicsEngine.run`` on the compiled program (3 levels per transmon, always-on exchange
    coupling in the dressed basis with static ZZ, exact per-sample propagation, T1/T_phi
    Lindblad channels, readout IQ per shot). Shown cold (a new engine, built before the timed
    call as Aer's simulator object is: every unique propagator is computed) and warm (the
    engine's propagator cache already holds them, as in a long-running simulator serving
    repeated jobs), each called in turn with Aer, call by call (the ratios are per pair), and
    with new angles (the same layers, other random angles: each circuit run once, followed by
    Aer on the same circuit). Reference:
    ``AerSimulator(method="density_matrix")`` on the same transpiled circuit with thermal
    relaxation (T1, T2 and gate durations from the calibrated Target) after every gate and
    readout errors. The two models differ (Aer's gates are ideal qubit gates); the Hellinger
    fidelity of their counts is printed as a sanity check.
(c) the same random-layer circuit on 2, 3 and 5 qubits at 5, 17 and 34 layers (depth ~15,
    ~50, ~100), warm, each next to Aer on the same circuit: how the cost grows with active
    qubits and depth (also the number of blocks the engine applies).
(b) one 160-sample DRAG drive pulse on a three-level transmon: labqpu's numba propagator
    (``_transmon_propagate_kernel``) against one batched ``numpy.linalg.eigh`` over the
    samples (then the ordered product) and against a per-sample ``scipy.linalg.expm`` loop;
    both references receive the Hamiltonian stack ready-made. A context line shows the
    engine's own call for the same pulse (it computes, it does not cache).
(d) a 1-qubit sequence of 1500 random sx, x and rz with barriers on lab5's qubit 3 (the shape
    of a randomized-benchmarking circuit, whose cost is per pulse), 1000 shots, warm, next to
    Aer on the same circuit with the same noise model as (a).
(e) 6 layers on lab5's qubits 0-4, each an sx (after a random rz) on every qubit, then a cz on
    (1, 2) while qubits 3 and 4 each play an sx, barriers making the cz and those pulses end
    together (as a user's barrier or a scheduler that fills the cz's time would): the flux
    pulse's cluster 1-2-3-4 then holds two strong drives at once, propagated by split steps.
    Cold (a new engine) and with new angles (the warm engine, another circuit of this
    shape), each call next to Aer on the same circuit, as in (a).

    python benchmarks/simulator.py            # full: 7 repeats per figure
    python benchmarks/simulator.py --quick    # 3 repeats
    python benchmarks/simulator.py --quick --only scaling  # circuit|scaling|pulse|sequence|overlap

Each headline line prints ``speed-up`` = reference time / labqpu time (above 1: labqpu
faster), as every benchmark does; the per-pair lines and the scaling table's ``ratio``
column are labqpu time / reference time (above 1: labqpu slower), the way a slowdown
against Aer reads. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import (
    FULL,
    QUICK,
    Budget,
    Line,
    dur,
    fmt,
    info,
    interleaved,
    seconds_per_call,
    summary,
)
from run import (
    _calibrated,
    _check,
    _versions,
    propagate_eigh_batched,
    random_native_circuit,
)


def propagate_expm(h_stack_hz: np.ndarray, dt_s: float) -> np.ndarray:
    """Per-sample ``scipy.linalg.expm`` loop, last sample leftmost (the reference a user would
    write with scipy)."""
    import scipy.linalg

    u = np.eye(h_stack_hz.shape[1], dtype=np.complex128)
    for h in h_stack_hz:
        u = scipy.linalg.expm(-2j * np.pi * dt_s * h) @ u
    return u

SHOTS = 1000
LAYERS = 17  # depth ~50 after transpiling
SCALING_QUBITS = (2, 3, 5)
SCALING_LAYERS = (5, 17, 34)
#: The same circuits on the larger built-in device (a 2 x 5 ladder on two controllers), laid
#: on lines of physical qubits: every qubit's idle neighbours are evolved too (static ZZ), so
#: the 5-qubit line 5-0-1-6-7 evolves 7 transmons (the untouched ones held by their
#: populations); the rungs 0-5, 1-6 play on both controllers.
SCALING_LAB10 = {2: [0, 1], 3: [0, 1, 2], 5: [5, 0, 1, 6, 7]}
SCALING_LAB10_LAYERS = (5, 17, 34)
#: The 1-qubit sequence of part (d): gates before transpiling, and its qubit (two coupled
#: neighbours, held by their populations).
SEQUENCE_GATES = 1500
SEQUENCE_QUBIT = 3
OVERLAP_LAYERS = 6
PULSE_SAMPLES = 160


def _engine(device: str = "lab5"):
    """A fresh PhysicsEngine of a built-in device (default lab5) and its wiring."""
    from labqpu.firmware_sim.device import load_device, load_rack
    from labqpu.firmware_sim.physics import PhysicsEngine
    from labqpu.rack.config import builtin_config_path

    rack = load_rack(builtin_config_path(device))
    engine = PhysicsEngine(load_device(rack.simulator_device), rack.cabling)
    return engine, rack


def _aer_noise_model(target, num_qubits: int):
    """Thermal relaxation (T1, T2 of the Target, each gate's duration) after every rz/sx/cz,
    and a symmetric readout error equal to the Target's measure error."""
    from qiskit_aer.noise import NoiseModel, ReadoutError, thermal_relaxation_error

    nm = NoiseModel(basis_gates=["rz", "sx", "x", "cz"])
    props = target.qubit_properties
    for q in range(num_qubits):
        t1, t2 = props[q].t1, min(props[q].t2, 2 * props[q].t1)
        for gate in ("sx", "x"):
            if gate in target and (q,) in target[gate]:
                dur = target[gate][(q,)].duration or 0.0
                nm.add_quantum_error(thermal_relaxation_error(t1, t2, dur), gate, [q])
        err = target["measure"][(q,)].error or 0.0
        nm.add_readout_error(ReadoutError([[1 - err, err], [err, 1 - err]]), [q])
    for (a, b), inst in target["cz"].items():
        dur = inst.duration or 0.0
        e = [thermal_relaxation_error(props[x].t1, min(props[x].t2, 2 * props[x].t1), dur)
             for x in (a, b)]
        nm.add_quantum_error(e[0].expand(e[1]), "cz", [a, b])
    return nm


@dataclass(frozen=True)
class Prepared:
    """One random-layer circuit, transpiled and compiled, ready for both simulators."""

    transpiled: object
    program: object
    wire: object
    settings: object
    engine: object
    noise: object


def _prepare(num_qubits: int, layers: int, seed: int = 1, device: str = "lab5",
             layout: list[int] | None = None, circuit=None) -> Prepared:
    """The random-layer circuit on ``num_qubits`` (a line; on ``layout``'s physical qubits if
    given), or ``circuit``, transpiled and compiled for ``device``, with an engine of that
    device."""
    from qiskit import transpile

    from labqpu.backend.target import build_target
    from labqpu.firmware_sim.executor import SimulatedController
    from labqpu.firmware_sim.physics import Settings
    from labqpu.pulse.compiler import compile_circuit

    snapshot, config = _calibrated(device)
    target = build_target(snapshot, config)
    if circuit is None:
        circuit = random_native_circuit(num_qubits=num_qubits, layers=layers, seed=seed)
    tqc = transpile(circuit, target=target, seed_transpiler=1, initial_layout=layout)
    program = compile_circuit(tqc, snapshot, config.channels)
    engine, rack = _engine(device)
    settings = Settings(
        los={k: (v.frequency_hz, v.power_dbm, True) for k, v in program.lo_settings.items()},
        currents=dict(program.flux_bias_a))
    spec = rack.controllers[0]
    if program.rack:
        # On rack ports the program is what a synchronised run's leader executes merged
        # (docs/protocol.md 4.6): checked here as one controller holding every port.
        spec = replace(spec, outputs=sum(c.outputs for c in rack.controllers),
                       inputs=sum(c.inputs for c in rack.controllers))
        program = replace(program, rack=())
    controller = SimulatedController(spec, engine, lambda: settings, 1)
    wire, _ = controller._parse(*program.to_wire())  # the controller's own upload check
    return Prepared(tqc, program, wire, settings, engine,
                    _aer_noise_model(target, target.num_qubits))


def _cold_runs(wire, settings, calls: int) -> Callable[[], np.ndarray]:
    """A function that runs ``wire`` (``SHOTS`` shots) on a new lab5 engine at each of its
    ``calls`` calls, so that every propagator is computed. The engines are built here, before
    any call is timed, as Aer's simulator object is built before its timed calls: building one
    is reading the device file (~2 ms), not simulating."""
    engines = [_engine()[0] for _ in range(calls)]

    def run() -> np.ndarray:
        return engines.pop().run(wire, settings, SHOTS, np.random.default_rng(7))

    return run


def _new_circuits(engine, others: list[Prepared], aer_sim) -> tuple[list[float], list[float]]:
    """Wall time (s) of ``engine`` running each of ``others`` once, each followed by
    ``aer_sim`` on the same transpiled circuit: (labqpu's times, Aer's)."""
    ours, ref = [], []
    for o in others:
        t0 = time.perf_counter()
        engine.run(o.wire, o.settings, SHOTS, np.random.default_rng(7))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        aer_sim.run(o.transpiled, shots=SHOTS, seed_simulator=7).result().get_counts()
        ref.append(time.perf_counter() - t0)
    return ours, ref


def _pairs(ours: list[float], ref: list[float]) -> str:
    """The per-pair ratios labqpu / Aer of calls made one after the other, summarised."""
    ratios = [a / b for a, b in zip(ours, ref, strict=True)]
    return (f"median {fmt(statistics.median(ratios))}x, range {fmt(min(ratios))}-"
            f"{fmt(max(ratios))}x over {len(ratios)} pairs")


def bench_circuit(budget: Budget) -> None:
    from qiskit.quantum_info import hellinger_fidelity
    from qiskit_aer import AerSimulator

    from labqpu.backend.results import experiment_result

    snapshot, _ = _calibrated()
    prep = _prepare(5, LAYERS)
    tqc, program, wire, settings, engine = (prep.transpiled, prep.program, prep.wire,
                                            prep.settings, prep.engine)
    ops = dict(tqc.count_ops())
    print(f"\n[a] 5-qubit circuit, depth {tqc.depth()}, {ops}, {SHOTS} shots; "
          f"{program.play_port.shape[0]} plays, {program.duration_samples} samples")

    def labqpu_warm():
        return engine.run(wire, settings, SHOTS, np.random.default_rng(7))

    noise = prep.noise
    aer_1 = AerSimulator(method="density_matrix", noise_model=noise, max_parallel_threads=1)
    aer_n = AerSimulator(method="density_matrix", noise_model=noise)

    def aer(sim):
        return sim.run(tqc, shots=SHOTS, seed_simulator=7).result().get_counts()

    # labqpu and Aer (1 thread) in turn, call by call: the machine's speed drifts (up to ~2x
    # over minutes here), and only figures taken in the same seconds make a ratio.
    rounds = 2 * budget.repeats + 1
    cold_s, aer_cold_s = interleaved([_cold_runs(wire, settings, rounds + 1), lambda: aer(aer_1)],
                                     rounds)
    t_cold, t_aer_cold = statistics.median(cold_s), statistics.median(aer_cold_s)
    t_aer_n = seconds_per_call(lambda: aer(aer_n), budget)
    warm_s, aer_s = interleaved([labqpu_warm, lambda: aer(aer_1)], 2 * budget.repeats + 1)
    t_warm, t_aer = statistics.median(warm_s), statistics.median(aer_s)
    # The same layers with other random angles on the warm engine, each run once: what a
    # simulator serving new circuits of a known structure pays (drive phases are frame
    # changes, so most propagators hit; blocks with two driven qubits at a new relative phase
    # do not, unless one drive is weak enough to be interpolated in its phase from a table,
    # which the first of these runs may build). Each run is next to Aer on the same circuit.
    others = [_prepare(5, LAYERS, seed=s) for s in range(2, 2 + budget.repeats)]
    t_other, aer_other = _new_circuits(engine, others, aer_1)
    t_new, t_aer_new = statistics.median(t_other), statistics.median(aer_other)

    iq = labqpu_warm()
    res = experiment_result(program, iq, shots=SHOTS, meas_level=2, meas_return="single",
                            memory=False, snapshot=snapshot)
    ours = {format(int(k, 16), "05b"): v for k, v in res["data"]["counts"].items()}
    fid = hellinger_fidelity(ours, aer(aer_1))
    for label, t, t_ref in (("cold: new engine, every propagator computed", t_cold,
                             t_aer_cold),
                            ("new angles: warm engine, a circuit it has not seen", t_new,
                             t_aer_new),
                            ("warm: propagator cache filled by an earlier run", t_warm, t_aer)):
        ref = f"{dur(t_ref)}/circuit (AerSimulator density_matrix, T1/T2 + readout, 1 thread)"
        print(Line(f"simulator circuit ({label}) vs qiskit-aer", t, t_ref,
                   f"{dur(t)}/circuit", ref).text(), flush=True)
    for label, ours_s, ref_s in (("cold", cold_s, aer_cold_s), ("warm", warm_s, aer_s),
                                 ("new angles", t_other, aer_other)):
        info(f"{label}: labqpu / Aer of calls made one after the other (Aer on the same "
             f"circuit), {_pairs(ours_s, ref_s)} (issue 'Physics' asks <= 10x)")
    info(f"new angles, each run: {', '.join(dur(t) for t in t_other)} (phase tables held "
         f"after them: {len(engine.phase_tables)})")
    info(f"qiskit-aer with its default threads: {dur(t_aer_n)}/circuit; labqpu warm / that "
         f"= {fmt(t_warm / t_aer_n)}")
    info(f"engine cache after the runs: {len(engine.cache_1q)} single-transmon and "
         f"{len(engine.cache_nq)} cluster propagators; hits/misses "
         f"{engine.cache_1q.hits}/{engine.cache_1q.misses} and "
         f"{engine.cache_nq.hits}/{engine.cache_nq.misses}")
    info(f"Hellinger fidelity of labqpu's counts to Aer's (different models, same circuit): "
         f"{fid:.3f}")


def sequence_circuit(gates: int, seed: int = 3):
    """A 1-qubit sequence of ``gates`` random sx, x and rz(theta), each followed by a barrier
    (as randomized benchmarking plays Cliffords one after the other), then a measurement."""
    from qiskit import QuantumCircuit

    rng = np.random.default_rng(seed)
    qc = QuantumCircuit(1, 1)
    for choice, theta in zip(rng.integers(0, 3, gates), rng.uniform(-np.pi, np.pi, gates),
                             strict=True):
        if choice == 0:
            qc.sx(0)
        elif choice == 1:
            qc.x(0)
        else:
            qc.rz(float(theta), 0)
        qc.barrier()
    qc.measure(0, 0)
    return qc


def bench_sequence(budget: Budget) -> None:
    """A long 1-qubit sequence (the shape of a randomized-benchmarking circuit) on lab5's
    qubit 3, warm, next to Aer on the same circuit."""
    from qiskit_aer import AerSimulator

    prep = _prepare(1, 0, layout=[SEQUENCE_QUBIT], circuit=sequence_circuit(SEQUENCE_GATES))
    ops = dict(prep.transpiled.count_ops())
    pulses = sum(ops.get(g, 0) for g in ("sx", "x", "sy"))
    print(f"\n[d] 1-qubit sequence on lab5 qubit {SEQUENCE_QUBIT}: {SEQUENCE_GATES} random sx, "
          f"x and rz with barriers ({pulses} pulses after transpiling), {SHOTS} shots")
    engine, wire, settings = prep.engine, prep.wire, prep.settings
    engine.run(wire, settings, SHOTS, np.random.default_rng(7))
    sim = AerSimulator(method="density_matrix", noise_model=prep.noise, max_parallel_threads=1)
    t_ours = seconds_per_call(
        lambda: engine.run(wire, settings, SHOTS, np.random.default_rng(7)), budget)
    t_aer = seconds_per_call(
        lambda: sim.run(prep.transpiled, shots=SHOTS, seed_simulator=7).result(), budget)
    print(Line("1-qubit sequence (warm) vs qiskit-aer", t_ours, t_aer,
               f"{dur(t_ours)}/circuit, {dur(t_ours / pulses)}/pulse",
               f"{dur(t_aer)}/circuit (AerSimulator density_matrix, 1 thread)").text(),
          flush=True)


def bench_scaling(budget: Budget) -> None:
    """Warm cost against circuit qubits and depth, each next to Aer on the same circuit."""
    from qiskit_aer import AerSimulator

    print(f"\n[c] warm cost against active qubits and depth (random layers, {SHOTS} shots; "
          "'evolved' counts the transmons in the density matrix: the circuit's qubits and "
          "their idle neighbours; 'held' those of them held by their populations)")
    print(f"  {'device':>6} {'qubits':>6} {'evolved':>7} {'held':>4} {'layers':>6} "
          f"{'depth':>5} {'blocks':>6} {'labqpu':>10} {'per layer':>10} {'qiskit-aer':>10} "
          f"{'ratio':>6}")
    rows = [("lab5", n, layers, None) for n in SCALING_QUBITS for layers in SCALING_LAYERS]
    rows += [("lab10", n, layers, layout) for n, layout in SCALING_LAB10.items()
             for layers in SCALING_LAB10_LAYERS]
    for device, num_qubits, layers, layout in rows:
        prep = _prepare(num_qubits, layers, device=device, layout=layout)
        engine, wire, settings = prep.engine, prep.wire, prep.settings
        rho = engine.evolve(wire, settings).rho
        blocks = _count_blocks(engine, wire, settings)
        sim = AerSimulator(method="density_matrix", noise_model=prep.noise,
                           max_parallel_threads=1)
        t_ours = seconds_per_call(
            lambda e=engine, w=wire, s=settings: e.run(w, s, SHOTS, np.random.default_rng(7)),
            budget)
        t_aer = seconds_per_call(
            lambda p=prep, a=sim: a.run(p.transpiled, shots=SHOTS,
                                        seed_simulator=7).result(), budget)
        print(f"  {device:>6} {num_qubits:>6} {rho.n:>7} {len(rho.diagonal):>4} {layers:>6} "
              f"{prep.transpiled.depth():>5} "
              f"{blocks:>6} {dur(t_ours):>10} {dur(t_ours / layers):>10} "
              f"{dur(t_aer):>10} {fmt(t_ours / t_aer):>6}", flush=True)


def _count_blocks(engine, wire, settings) -> int:
    """Blocks the engine applies for ``wire`` (by evolving once with a counting wrapper)."""
    counted: list[int] = []
    original = engine._blocks

    def counting(drive_iv, flux_iv):
        out = original(drive_iv, flux_iv)
        counted.append(len(out))
        return out

    engine._blocks = counting
    engine._block_cache.clear()  # the decomposition is cached per schedule: recompute it
    try:
        engine.evolve(wire, settings)
    finally:
        del engine._blocks
    return counted[0]


def _drag_hamiltonians(n: int, alpha_hz: float, rabi_hz: float):
    """z per sample (Hz) of a DRAG pulse near a pi pulse, and its Hamiltonian stack (Hz)."""
    x = np.arange(n) - (n - 1) / 2
    sigma = n / 4
    g = np.exp(-0.5 * (x / sigma) ** 2)
    env = g - 0.4j * x / sigma**2 * g
    env *= 0.5 / (env.real.sum() * 1e-9 * rabi_hz)  # area of a pi pulse
    z = rabi_hz * np.conj(env) * np.exp(-2j * np.pi * 0.7e6 * np.arange(n) * 1e-9)
    a = np.diag(np.sqrt([1.0, 2.0]), 1).astype(complex)
    h0 = np.diag([0.0, 0.0, alpha_hz]).astype(complex)
    h = np.array([h0 + 0.5 * (zk * a.conj().T + np.conj(zk) * a) for zk in z])
    return z, h


def bench_pulse(budget: Budget) -> None:
    from labqpu.firmware_sim.propagation import _transmon_propagate_kernel

    engine, _ = _engine()
    q = engine.device.qubits[0]
    dt_s = 1.0 / engine.device.sample_rate_hz
    z, h = _drag_hamiltonians(PULSE_SAMPLES, q.anharmonicity_hz, q.rabi_hz_per_amplitude)
    detuning = np.zeros(PULSE_SAMPLES)
    print(f"\n[b] one {PULSE_SAMPLES}-sample DRAG pulse on a 3-level transmon (alpha "
          f"{q.anharmonicity_hz / 1e6:.1f} MHz)")
    u = _transmon_propagate_kernel(z, detuning, q.anharmonicity_hz, dt_s)
    _check(np.allclose(u, propagate_expm(h, dt_s), rtol=0, atol=1e-11), "expm 160-sample pulse")
    _check(np.allclose(u, propagate_eigh_batched(h, dt_s), rtol=0, atol=1e-11),
           "eigh 160-sample pulse")
    info(f"P(|1>) after the pulse {abs(u[1, 0]) ** 2:.4f}, leakage {abs(u[2, 0]) ** 2:.1e}")
    t_ours = seconds_per_call(
        lambda: _transmon_propagate_kernel(z, detuning, q.anharmonicity_hz, dt_s), budget)
    t_eigh = seconds_per_call(lambda: propagate_eigh_batched(h, dt_s), budget)
    t_expm = seconds_per_call(lambda: propagate_expm(h, dt_s), budget)
    us = 1e6 / PULSE_SAMPLES
    for label, t_ref in (("numpy batched eigh", t_eigh),
                         ("scipy.linalg.expm per-sample loop", t_expm)):
        print(Line(f"_transmon_propagate_kernel vs {label}", t_ours, t_ref,
                  f"{dur(t_ours)}/pulse ({fmt(t_ours * us)} µs/sample)",
                  f"{dur(t_ref)}/pulse ({fmt(t_ref * us)} µs/sample, {label})").text(),
              flush=True)
    phi = np.full(PULSE_SAMPLES, 0.0)
    f_idle = q.frequency_hz(0.0)
    engine._transmon_unitary(0, z, phi, f_idle)
    t_hit = seconds_per_call(lambda: engine._transmon_unitary(0, z * np.exp(0.3j), phi, f_idle),
                             budget)
    info(f"the same pulse through the engine (PhysicsEngine._transmon_unitary: detuning array "
         f"and kernel, no cache): {dur(t_hit)}/pulse, {fmt(t_eigh / t_hit)}x faster than "
         "batched eigh")


def overlap_circuit(layers: int, seed: int):
    """(e): ``layers`` of sx after a random rz on qubits 0-4, then cz(1, 2) beside an sx
    (after a random rz) on qubits 3 and 4, with barriers around each half; measured."""
    from qiskit import QuantumCircuit

    rng = np.random.default_rng(seed)
    qc = QuantumCircuit(5)
    for _ in range(layers):
        for q in range(5):
            qc.rz(float(rng.uniform(-np.pi, np.pi)), q)
            qc.sx(q)
        qc.barrier()
        qc.cz(1, 2)
        for q in (3, 4):
            qc.rz(float(rng.uniform(-np.pi, np.pi)), q)
            qc.sx(q)
        qc.barrier()
    qc.measure_all()
    return qc


def bench_overlap(budget: Budget) -> None:
    """(e): a cz beside two strong drives in its cluster, cold and with new angles, each call
    next to Aer on the same circuit."""
    from qiskit_aer import AerSimulator

    prep = _prepare(5, 0, layout=list(range(5)), circuit=overlap_circuit(OVERLAP_LAYERS, 1))
    ops = dict(prep.transpiled.count_ops())
    print(f"\n[e] {OVERLAP_LAYERS} layers of sx on 5 qubits, then cz(1, 2) beside sx on 3 and 4 "
          f"(barriers), {ops}, {SHOTS} shots")
    wire, settings = prep.wire, prep.settings
    aer_1 = AerSimulator(method="density_matrix", noise_model=prep.noise, max_parallel_threads=1)

    cold_s, aer_cold_s = interleaved(
        [_cold_runs(wire, settings, budget.repeats + 1),
         lambda: aer_1.run(prep.transpiled, shots=SHOTS, seed_simulator=7).result().get_counts()],
        budget.repeats)
    engine = prep.engine
    engine.run(wire, settings, SHOTS, np.random.default_rng(7))
    others = [_prepare(5, 0, layout=list(range(5)), circuit=overlap_circuit(OVERLAP_LAYERS, seed))
              for seed in range(2, 2 + budget.repeats)]
    t_other, aer_other = _new_circuits(engine, others, aer_1)
    for label, ours, ref in (("cold: new engine", cold_s, aer_cold_s),
                             ("new angles: warm engine, a circuit it has not seen", t_other,
                              aer_other)):
        t, t_ref = statistics.median(ours), statistics.median(ref)
        print(Line(f"cz beside two driven neighbours ({label}) vs qiskit-aer", t, t_ref,
                   f"{dur(t)}/circuit",
                   f"{dur(t_ref)}/circuit (AerSimulator density_matrix, 1 thread)").text(),
              flush=True)
        info(f"per pair: {_pairs(ours, ref)}")
    info(f"sub-steps s per driven sample chosen by step doubling (a part is propagated at s "
         f"and 2s and extrapolated): {sorted(set(engine._split_substeps.values()))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="3 repeats per figure")
    parser.add_argument("--only",
                        choices=["circuit", "scaling", "pulse", "sequence", "overlap"],
                        default=None)
    args = parser.parse_args(argv)
    if args.only != "pulse" and importlib.util.find_spec("qiskit_aer") is None:
        print("benchmarks/simulator.py: its reference, qiskit-aer, is not installed: "
              "pip install -e \".[bench]\" (only --only pulse runs without it)", file=sys.stderr)
        return 2
    budget = QUICK if args.quick else FULL
    print(f"labqpu simulator benchmarks ({'quick' if args.quick else 'full'}), "
          f"{dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"{platform.platform()}, {os.cpu_count()} CPUs; {_versions()}")
    import labqpu  # an editable install may point at another checkout than this script's

    print(f"labqpu imported from {Path(labqpu.__file__).parent}")
    print(f"BLAS limited to 1 thread (threadpoolctl); load average at start "
          f"{os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    with threadpool_limits(limits=1):
        if args.only in (None, "circuit"):
            bench_circuit(budget)
        if args.only in (None, "scaling"):
            bench_scaling(budget)
        if args.only in (None, "pulse"):
            bench_pulse(budget)
        if args.only in (None, "sequence"):
            bench_sequence(budget)
        if args.only in (None, "overlap"):
            bench_overlap(budget)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s; load average at end "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
