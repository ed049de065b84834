"""A 100-point Rabi as one controller-bound sweep, against the same 100 points as 100 programs;
a 25-point T1 scan of circuits merged into one upload, against the same circuits unmerged;
a 100-point T1 scan and a 100-point Rabi of pulse-gate circuits compiled once, against the same
circuits compiled one by one.

All run on the embedded simulator of lab5, qubit 0, in the same process and the same run:

* **sweep**: one ``PulseProgram`` whose drive amplitude is the parameter ``amp``, run with
  ``parameter_binds={"amp": amplitudes}``: one upload, one run, the controller binding each
  point (docs/protocol.md section 4.7);
* **reference**: what a user does without it: the 100 programs with the amplitude written in
  (``param_values`` replaced point by point), in one job: 100 uploads and 100 runs.

* **merged T1**: 25 circuits (x, delay, measure; delays 0-96 us), ``backend.run(circuits)``:
  the backend merges them into one upload whose delays the controller binds per point
  (``labqpu.backend.merge``);
* **reference**: the same circuits with ``merge_sweeps=False``: 25 uploads and 25 runs, what
  every Qiskit backend does.

* **compiled once**: 100 such circuits (delays 0-396 us) through
  ``labqpu.pulse.batch.compile_circuits``, which ``run()`` uses: the first circuit compiled,
  the others read for their numbers and laid out with it in one kernel call;
* **reference**: the same compiler one circuit at a time (``compile_circuit`` in a loop, as
  ``run()`` compiled them before), alternately with it; both give the same 100 programs.
  The same for 100 Rabi circuits whose drive pulse is a pulse gate with the amplitude as its
  parameter (``backend.add_pulse_gate``; amplitudes 0-2 pi amplitude).

The amplitudes and delays are new each repetition (a small offset), so no program is already
held by the controller. Usage::

    python benchmarks/sweep.py            # 5 repetitions, 200 shots per point
    python benchmarks/sweep.py --quick    # 2 repetitions
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace

import _timing as tm
import numpy as np
from _timing import info

POINTS = 100
SHOTS = 200
QUBIT = 0
T1_POINTS = 25
T1_SHOTS = 1000


def t1_scan(backend, offset_dt: int, points: int = T1_POINTS) -> list:
    """``points`` transpiled T1 circuits, delays 4 us apart plus ``offset_dt`` samples."""
    from qiskit import QuantumCircuit, transpile

    circuits = []
    for k in range(points):
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.delay(4000 * k + offset_dt, 0, unit="dt")
        qc.measure(0, 0)
        circuits.append(qc)
    return transpile(circuits, backend, initial_layout=[QUBIT])


def main() -> None:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = parser.parse_args()
    # a home of its own, removed after (the shipped snapshot, as every benchmark measures)
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home:
        os.environ["LABQPU_HOME"] = home
        _measure(args)


def _measure(args: argparse.Namespace) -> None:
    from labqpu import LabProvider
    from labqpu.calibration.design import default_design_path, load_design
    from labqpu.calibration.experiments import Kit
    from labqpu.calibration.runner import working_from_snapshot
    from labqpu.drivers.controller import ControllerClient

    info(f"machine: {tm.machine()}; load average {tm.load_average()}")
    with LabProvider() as provider:
        backend = provider.backend()
        kit = Kit(backend, working_from_snapshot(
            backend.snapshot, load_design(default_design_path(backend.name))))
        b = kit.builder([QUBIT])
        b.parameter("amp", 0.0)
        kit.readout(b, QUBIT, kit.drive(b, QUBIT, 0, "amp"), 0)
        program = b.build(num_clbits=1)
        endpoint = backend.config.controllers[0].endpoint

        def counters() -> tuple[int, int]:
            with ControllerClient(endpoint, timeout_s=5.0) as client:
                status = client.status()
            return int(status["uploads_total"]), int(status["runs_total"])

        rng = np.random.default_rng(1)
        pi = kit.work.qubits[QUBIT]["pi_amplitude"]
        backend.run(program, shots=10, parameter_binds={"amp": [0.1]}).result()  # warm up
        swept, single, counts = [], [], {}
        reps = 2 if args.quick else 5
        for _ in range(reps):
            amps = np.linspace(0, 2 * pi, POINTS) + rng.uniform(0, 1e-6)
            before = counters()
            t0 = time.perf_counter()
            backend.run(program, shots=SHOTS, parameter_binds={"amp": amps}).result()
            swept.append(time.perf_counter() - t0)
            middle = counters()
            programs = [replace(program, param_values=np.array([a])) for a in amps]
            t0 = time.perf_counter()
            backend.run(programs, shots=SHOTS).result()
            single.append(time.perf_counter() - t0)
            after = counters()
            counts = {"sweep": tuple(int(x) for x in np.subtract(middle, before)),
                      "reference": tuple(int(x) for x in np.subtract(after, middle))}
        merged, unmerged = [], []
        backend.run(t1_scan(backend, 0), shots=10).result()  # warm up
        for rep in range(reps):
            circuits = t1_scan(backend, 16 * (rep + 1))
            before = counters()
            t0 = time.perf_counter()
            backend.run(circuits, shots=T1_SHOTS).result()
            merged.append(time.perf_counter() - t0)
            middle = counters()
            t0 = time.perf_counter()
            backend.run(circuits, shots=T1_SHOTS, merge_sweeps=False).result()
            unmerged.append(time.perf_counter() - t0)
            after = counters()
            counts["merged"] = tuple(int(x) for x in np.subtract(middle, before))
            counts["unmerged"] = tuple(int(x) for x in np.subtract(after, middle))
        compiled = {
            "T1": compile_both(t1_scan(backend, 0, POINTS), backend, reps, {}),
            "pulse-gate Rabi": compile_both(rabi_scan(backend, pi), backend, reps,
                                            {"pulse_gates": backend.pulse_gates,
                                             "scheduling_method": "auto"})}
    s, r = statistics.median(swept), statistics.median(single)
    info(f"{POINTS}-point Rabi, {SHOTS} shots per point, median of {len(swept)}:")
    info(f"  sweep (parameter_binds): {s * 1e3:8.1f} ms   uploads, runs: {counts['sweep']}")
    info(f"  reference (100 programs): {r * 1e3:8.1f} ms   uploads, runs: "
         f"{counts['reference']}")
    info(f"  ratio: the sweep takes {s / r:.2f} of the reference's time ({r / s:.1f}x faster)")
    m, u = statistics.median(merged), statistics.median(unmerged)
    info(f"{T1_POINTS}-point T1 scan of circuits, {T1_SHOTS} shots per point, median of "
         f"{len(merged)}:")
    info(f"  merged (one upload):      {m * 1e3:8.1f} ms   uploads, runs: {counts['merged']}")
    info(f"  reference (merge_sweeps=False): {u * 1e3:8.1f} ms   uploads, runs: "
         f"{counts['unmerged']}")
    info(f"  ratio: merged takes {m / u:.2f} of the reference's time ({u / m:.1f}x faster)")
    for name, (once, each, same) in compiled.items():
        o, e = statistics.median(once), statistics.median(each)
        info(f"compiling a {POINTS}-point {name} scan of circuits, median of {len(once)}, "
             "alternately:")
        info(f"  compiled once (labqpu.pulse.batch.compile_circuits): {o * 1e3:6.2f} ms "
             f"({o / POINTS * 1e6:.1f} us per circuit)")
        info(f"  reference (compile_circuit per circuit): {e * 1e3:6.2f} ms "
             f"({e / POINTS * 1e6:.1f} us per circuit)")
        info(f"  ratio: {e / o:.2f}x faster; the same {POINTS} programs: {same}")


def rabi_scan(backend, pi_amp: float) -> list:
    """``POINTS`` transpiled Rabi circuits: a pulse gate ``bench_rabi`` (the calibrated DRAG
    of ``QUBIT`` with its amplitude a parameter) at amplitudes 0 to 2 ``pi_amp``, then a
    measurement."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter

    from labqpu import pulse

    amp = Parameter("amp")
    with pulse.build(backend, name="bench_rabi") as b:
        pulse.play(pulse.calibrated_drag(QUBIT, amp=amp), pulse.drive(QUBIT))
    gate = backend.add_pulse_gate("bench_rabi", b, qubits=[QUBIT])
    circuits = []
    for a in np.linspace(0, 2 * pi_amp, POINTS):
        qc = QuantumCircuit(1, 1)
        qc.append(gate(float(a)), [0])
        qc.measure(0, 0)
        circuits.append(qc)
    return transpile(circuits, backend, initial_layout=[QUBIT])


def compile_both(scan: list, backend, reps: int, options: dict) -> tuple[list, list, bool]:
    """(times compiled once, times one by one, same programs) of ``scan``, ``reps`` each,
    alternately."""
    from labqpu.pulse.batch import compile_circuits
    from labqpu.pulse.compiler import compile_circuit

    once, each = [], []
    for rep in range(reps):
        for name in ("once", "each") if rep % 2 else ("each", "once"):
            t0 = time.perf_counter()
            if name == "once":
                programs = compile_circuits(scan, backend.snapshot, backend.channels, **options)
                once.append(time.perf_counter() - t0)
            else:
                reference = [compile_circuit(c, backend.snapshot, backend.channels, **options)
                             for c in scan]
                each.append(time.perf_counter() - t0)
    return once, each, [p.content_hash for p in programs] == [p.content_hash
                                                               for p in reference]

if __name__ == "__main__":
    main()
