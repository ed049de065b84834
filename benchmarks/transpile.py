"""Transpiling for a lab device: labqpu's stage plugins against Qiskit's own stages.

``transpile(circuits, backend)`` on lab5 runs labqpu's translation stage (Qiskit's translator,
then ``PulseEfficient1q``, which re-synthesises every single-qubit run with the fewest
physical pulses) and its scheduling stage (the compiler's ALAP times, echoes in idle windows).
The reference is what a user would otherwise get from Qiskit for the same circuits and backend:
``translation_method="translator", scheduling_method="alap"`` (Qiskit's translation and ALAP
scheduling), called in turn with labqpu's in the same run. Two sets of circuits:

* RB: what ``labqpu.calibration.rb.acquire_rb`` transpiles, simultaneous single-qubit
  sequences on qubits 0, 2 and 4 (lengths 1, 20, 50, 100, 200 Cliffords, 6 seeds each:
  30 circuits, ~22 000 gates), each Clifford fenced by a barrier;
* random: 40 random 5-qubit circuits of depth 8 (``qiskit.circuit.random.random_circuit``).

labqpu's stages do more than Qiskit's (fewer pulses for the same unitary, the compiler's
timing, echoes in idle windows: docs/transpilation.md has the pulse counts), so the ratio is
what that costs; the time inside ``PulseEfficient1q`` is printed beside it. Usage::

    python benchmarks/transpile.py            # 5 rounds
    python benchmarks/transpile.py --quick    # 2 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import _timing as tm
import numpy as np
from _timing import Line, dur, emit, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="2 rounds instead of 5")
    args = parser.parse_args(argv)
    rounds = 2 if args.quick else 5

    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit.random import random_circuit

    from labqpu import LabProvider
    from labqpu.backend import plugins
    from labqpu.calibration.rb_sequences import random_sequence

    print(f"labqpu transpile benchmark, {rounds} rounds")
    print(f"{tm.machine()}, {os.cpu_count()} CPUs; load average at start {tm.load_average()}")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home:
        os.environ["LABQPU_HOME"] = home
        with LabProvider() as provider:
            backend = provider.backend()
            n = backend.num_qubits
            rng = np.random.default_rng(1)
            t0 = time.perf_counter()
            rb = []
            for length in (1, 20, 50, 100, 200):
                for _ in range(6):
                    qc = QuantumCircuit(n, 3)
                    for q in (0, 2, 4):
                        seq, _ = random_sequence(1, length, rng)
                        qc.compose(seq, qubits=[q], inplace=True)
                    qc.barrier()
                    qc.measure([0, 2, 4], range(3))
                    rb.append(qc)
            sequences_s = time.perf_counter() - t0
            random = [random_circuit(n, 8, max_operands=2, seed=s, measure=True)
                      for s in range(40)]
            layout = list(range(n))
            spent = {"pass": 0.0}
            run = plugins.PulseEfficient1q.run

            def timed_run(self, dag):
                t = time.perf_counter()
                try:
                    return run(self, dag)
                finally:
                    spent["pass"] += time.perf_counter() - t

            plugins.PulseEfficient1q.run = timed_run
            lines = []
            for name, circuits in (("RB", rb), ("random", random)):
                gates = sum(len(c.data) for c in circuits)

                def labqpu_stages(circuits=circuits):
                    transpile(circuits, backend, initial_layout=layout, seed_transpiler=7)

                def qiskit_stages(circuits=circuits):
                    transpile(circuits, backend, initial_layout=layout, seed_transpiler=7,
                              translation_method="translator", scheduling_method="alap")

                spent["pass"] = 0.0
                ours, theirs = tm.interleaved([labqpu_stages, qiskit_stages], rounds)
                in_pass = spent["pass"] / (rounds + 1)
                t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
                lines.append(Line(
                    f"transpile {len(circuits)} {name} circuits ({gates} gates) for lab5",
                    t_ours, t_theirs, f"{dur(t_ours)} (its translation and scheduling stages)",
                    f"{dur(t_theirs)} (Qiskit's translator and ALAP)"))
                lines.append(f"{name}: labqpu's PulseEfficient1q pass {dur(in_pass)} per "
                             "transpile; labqpu/Qiskit per round "
                             + ", ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs,
                                                                          strict=True)))
            plugins.PulseEfficient1q.run = run
            for line in lines:
                if isinstance(line, Line):
                    emit([line], [])
                else:
                    info(line)
            info(f"building the RB circuits (random Cliffords, their inverses): "
                 f"{dur(sequences_s)}")
    print(f"load average at end {tm.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
