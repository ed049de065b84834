"""Dynamic circuits on lab10's simulator against qiskit-aer's density-matrix simulation of the
same circuits (issue "Physics": feed-forward at a usable speed on the larger device).

Two circuits on five of lab10's qubits (5-9), transpiled at Qiskit's default level for the
lab10 backend and run through ``backend.run()`` on its embedded simulator (pulse level, three
levels per transmon, always-on coupling, noise), after one unmeasured 10-shot run of each:

* **one if**: h on q0-q2, measure them, x on q3 if c0, measure q3 and q4;
* **two ifs**: h q0, measure, x q1 if c0, h q2, measure q1, x q3 if c1, measure q2-q4.

The reference is what a user would otherwise run, in the same process and the same run:
``AerSimulator(method="density_matrix")`` with thermal relaxation after every gate and the
Target's readout error (``simulator._aer_noise_model``), one thread, on the same transpiled
circuit. Different models: the figure says what labqpu's physics costs next to Aer's. Each figure is
the median of ``REPEATS`` calls, labqpu and Aer alternately.
Usage::

    python benchmarks/feedforward.py            # 100 and 1000 shots
    python benchmarks/feedforward.py --quick    # 100 shots
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

import _timing as tm
from _timing import Line, dur, emit, info

#: Timed calls of each figure, labqpu and Aer alternately; the figure is their median.
REPEATS = 3


def circuits():
    """(name, circuit) of the two dynamic circuits (5 qubits, 5 clbits)."""
    from qiskit import QuantumCircuit

    one = QuantumCircuit(5, 5)
    one.h([0, 1, 2])
    one.measure([0, 1, 2], [0, 1, 2])
    with one.if_test((one.clbits[0], 1)):
        one.x(3)
    one.measure([3, 4], [3, 4])
    two = QuantumCircuit(5, 5)
    two.h(0)
    two.measure(0, 0)
    with two.if_test((two.clbits[0], 1)):
        two.x(1)
    two.h(2)
    two.measure(1, 1)
    with two.if_test((two.clbits[1], 1)):
        two.x(3)
    two.measure([2, 3, 4], [2, 3, 4])
    return [("one if", one), ("two ifs", two)]


def _top(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: -kv[1])[:4]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="100 shots only")
    args = parser.parse_args(argv)
    shot_counts = [100] if args.quick else [100, 1000]

    from qiskit import transpile
    from qiskit_aer import AerSimulator
    from simulator import _aer_noise_model
    from threadpoolctl import threadpool_limits

    from labqpu import LabProvider

    print("labqpu feed-forward on lab10 (qubits 5-9) vs qiskit-aer density matrix")
    print(f"{tm.machine()}, {os.cpu_count()} CPUs; load average at start {tm.load_average()}")
    with tempfile.TemporaryDirectory(prefix="labqpu-bench-home-") as home, \
            threadpool_limits(1):
        os.environ["LABQPU_HOME"] = home
        with LabProvider("lab10") as provider:
            backend = provider.backend()
            aer = AerSimulator(method="density_matrix", max_parallel_threads=1,
                               noise_model=_aer_noise_model(backend.target, backend.num_qubits))
            for name, qc in circuits():
                native = transpile(qc, backend, initial_layout=[5, 6, 7, 8, 9])
                # Aer knows rz, sx, x, cz, not labqpu's other native gates (sy): the same
                # circuit on the same physical qubits in its basis.
                for_aer = transpile(native, basis_gates=["rz", "sx", "x", "cz"],
                                    optimization_level=0)
                backend.run(native, shots=10, seed_simulator=0).result(timeout=900)
                aer.run(for_aer, shots=10, seed_simulator=0).result()
                for shots in shot_counts:
                    counts: dict = {}

                    def ours(native=native, shots=shots, counts=counts) -> None:
                        counts["labqpu"] = backend.run(native, shots=shots, seed_simulator=1) \
                            .result(timeout=900).get_counts()

                    def theirs(for_aer=for_aer, shots=shots, counts=counts) -> None:
                        counts["aer"] = aer.run(for_aer, shots=shots,
                                                seed_simulator=1).result().get_counts()

                    # alternately, after one untimed call of each: medians of REPEATS
                    ours_s, theirs_s = tm.interleaved([ours, theirs], REPEATS)
                    labqpu_s, aer_s = statistics.median(ours_s), statistics.median(theirs_s)
                    emit([Line(f"{name}, {shots} shots", labqpu_s, aer_s,
                               f"{dur(labqpu_s)} (backend.run() to counts; median of "
                               f"{REPEATS}, {dur(min(ours_s))}-{dur(max(ours_s))})",
                               f"{dur(aer_s)} (AerSimulator density_matrix, T1/T2 + "
                               f"readout, 1 thread; {dur(min(theirs_s))}-"
                               f"{dur(max(theirs_s))})")], [])
                    info(f"most frequent counts: labqpu {_top(counts['labqpu'])}, Aer "
                         f"{_top(counts['aer'])}")
    print(f"load average at end {tm.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
