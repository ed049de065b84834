"""The benchmark circuit as plain data, shared by labqpu and the reference environments.

Pure Python (no qiskit, no numpy) so that every virtual environment imports the same file and
builds the same circuit: ``layers`` layers of rz(random angle) + sx on every qubit and a
two-qubit gate on alternating edges of a line, then one measurement per qubit.
"""

from __future__ import annotations

import math
import random


def random_layers(num_qubits: int = 5, layers: int = 8, seed: int = 1) -> list[tuple]:
    """Ops as tuples: ("rz", q, angle), ("sx", q), ("cz", a, a + 1), ("measure", q)."""
    rng = random.Random(seed)
    ops: list[tuple] = []
    for layer in range(layers):
        for q in range(num_qubits):
            ops.append(("rz", q, rng.uniform(-math.pi, math.pi)))
            ops.append(("sx", q))
        for a in range(layer % 2, num_qubits - 1, 2):
            ops.append(("cz", a, a + 1))
    ops.extend(("measure", q) for q in range(num_qubits))
    return ops


def count(ops: list[tuple]) -> dict[str, int]:
    out: dict[str, int] = {}
    for op in ops:
        out[op[0]] = out.get(op[0], 0) + 1
    return out
