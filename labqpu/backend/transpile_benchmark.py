"""Pulse counts of the ``labqpu`` translation stage against Qiskit's default translator.

    python -m labqpu.backend.transpile_benchmark [--seed N] [--random N]

Transpiles a fixed benchmark set (random circuits of 2-5 qubits, QFT, GHZ, QAOA-like MaxCut
layers, and circuits of single-qubit rotations between cz/cx) for the Target of the shipped lab5
calibration snapshot, at optimization levels 0-3, once with ``translation_method="translator"``
(Qiskit's default) and once with ``"labqpu"``. Scheduling is left out so that dynamical
decoupling pulses do not enter the counts. A *pulse* is one sx, sy, x (drive) or cz (flux)
instruction: exactly the non-readout plays of the compiled ``PulseProgram``; rz is a frame
change and plays nothing. No simulator is needed; the Target is enough.
"""

from __future__ import annotations

import argparse
import json
import math
from importlib import resources

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import QFTGate
from qiskit.circuit.random import random_circuit

from labqpu.backend.plugins import count_pulses
from labqpu.backend.target import LabTarget, build_target
from labqpu.rack.config import default_config_path, load_config
from labqpu.store import Snapshot

LEVELS = (0, 1, 2, 3)


def shipped_target() -> LabTarget:
    """The Target of the shipped lab5 wiring and calibration snapshot (no simulator)."""
    config = load_config(default_config_path())
    envelope = json.loads((resources.files("labqpu") / "data" / config.seed_snapshot)
                          .read_text())
    return build_target(Snapshot.from_document(envelope["document"], snapshot_id=1), config)


def _ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n, name=f"ghz{n}")
    qc.h(0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    return qc


def _qaoa(n: int, layers: int, rng: np.random.Generator) -> QuantumCircuit:
    qc = QuantumCircuit(n, name=f"qaoa{n}x{layers}")
    qc.h(range(n))
    for _ in range(layers):
        gamma, beta = rng.uniform(0, math.pi, 2)
        for q in range(n - 1):
            qc.rzz(gamma, q, q + 1)
        qc.rx(2 * beta, range(n))
    return qc


def _rotations(n: int, depth: int, rng: np.random.Generator) -> QuantumCircuit:
    """Layers of random Pauli and Clifford+T rotations between cz, as error-amplifying or
    tomography circuits are written."""
    qc = QuantumCircuit(n, name=f"rot{n}x{depth}")
    one_q = ["x", "y", "h", "s", "sx", "t", "z"]
    for d in range(depth):
        for q in range(n):
            getattr(qc, str(rng.choice(one_q)))(q)
        for q in range(d % 2, n - 1, 2):
            qc.cz(q, q + 1)
    return qc


def benchmark_circuits(seed: int = 2026, num_random: int = 20) -> list[QuantumCircuit]:
    """The benchmark set: ``num_random`` random circuits (2-5 qubits, depth 6), QFT 3-5,
    GHZ 3-5, QAOA-like 4 and 5 qubits x 2 layers, and 4 Clifford+T rotation circuits."""
    rng = np.random.default_rng(seed)
    circuits = []
    for i in range(num_random):
        qc = random_circuit(2 + i % 4, 6, max_operands=2, seed=seed + i)
        qc.name = f"random{i}"
        circuits.append(qc)
    for n in (3, 4, 5):
        qc = QuantumCircuit(n, name=f"qft{n}")
        qc.append(QFTGate(n), range(n))
        circuits.append(qc)
    circuits += [_ghz(n) for n in (3, 4, 5)]
    circuits += [_qaoa(n, 2, rng) for n in (4, 5)]
    circuits += [_rotations(n, 6, rng) for n in (3, 4, 5, 5)]
    return circuits


def pulse_counts(circuits: list[QuantumCircuit], target: LabTarget, level: int,
                 method: str, seed_transpiler: int = 11) -> list[int]:
    """Pulses of each circuit after ``transpile`` with ``translation_method=method``."""
    return [count_pulses(transpile(qc, target=target, optimization_level=level,
                                   translation_method=method, seed_transpiler=seed_transpiler))
            for qc in circuits]


def main(argv: list[str] | None = None) -> None:
    """Print a Markdown table: total and mean pulses per circuit, both ways, per level."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--random", type=int, default=20, help="number of random circuits")
    args = parser.parse_args(argv)
    target = shipped_target()
    circuits = benchmark_circuits(args.seed, args.random)
    print(f"{len(circuits)} circuits; pulses = sx + sy + x + cz after transpile")
    print("| level | default translator: total (mean) | labqpu: total (mean) | change | "
          "circuits fewer / equal / more |")
    print("| --- | --- | --- | --- | --- |")
    for level in LEVELS:
        base = pulse_counts(circuits, target, level, "translator")
        ours = pulse_counts(circuits, target, level, "labqpu")
        fewer = sum(o < b for o, b in zip(ours, base, strict=True))
        more = sum(o > b for o, b in zip(ours, base, strict=True))
        n = len(circuits)
        change = 100.0 * (sum(ours) - sum(base)) / sum(base)
        print(f"| {level} | {sum(base)} ({sum(base) / n:.1f}) | {sum(ours)} ({sum(ours) / n:.1f})"
              f" | {change:+.1f} % | {fewer} / {n - fewer - more} / {more} |")


if __name__ == "__main__":
    main()
