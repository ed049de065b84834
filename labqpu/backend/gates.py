"""labqpu's native gates beyond Qiskit's standard library, and their equivalence rules.

``SYGate`` is sqrt(Y) = RY(pi/2): on the device it is the qubit's calibrated DRAG pulse at the
pi/2 amplitude, a quarter turn ahead of the drive frame (``labqpu.pulse.compiler``), so it
costs exactly what ``sx`` costs.

:func:`register_equivalences` adds the rules that relate ``sy`` to standard gates to Qiskit's
process-global ``SessionEquivalenceLibrary``. It is idempotent: a rule already present (same
gate, same circuit, same global phase) is not added again, so importing labqpu twice or
reloading this module never duplicates rules. ``labqpu.backend`` calls it on import.
"""

from __future__ import annotations

import math

import numpy as np
from qiskit.circuit import EquivalenceLibrary, Gate, Parameter, QuantumCircuit
from qiskit.circuit.equivalence_library import SessionEquivalenceLibrary
from qiskit.circuit.library import HGate, RXGate, RYGate, RZGate, SXGate

#: Names of labqpu's own native gates (not in qiskit.circuit.library).
CUSTOM_GATES = ("sy",)


class SYGate(Gate):
    r"""sqrt(Y): the single-qubit rotation RY(pi/2).

    .. math::

        \sqrt{Y} = RY(\pi/2) = \frac{1}{\sqrt{2}} \begin{pmatrix} 1 & -1 \\ 1 & 1 \end{pmatrix}

    Unlike Qiskit's ``SXGate`` (which is ``exp(i pi/4) RX(pi/2)``) there is no global phase:
    ``sy`` *is* ``ry(pi/2)``, and ``sy`` twice is ``ry(pi) = -iY``.
    """

    def __init__(self, label: str | None = None) -> None:
        super().__init__("sy", 1, [], label=label)

    def _define(self) -> None:
        qc = QuantumCircuit(1, name=self.name)
        qc.append(RYGate(math.pi / 2), [0])
        self.definition = qc

    def inverse(self, annotated: bool = False) -> Gate:
        """RY(-pi/2), the inverse of sqrt(Y)."""
        return RYGate(-math.pi / 2)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        s = 1 / math.sqrt(2)
        return np.array([[s, -s], [s, s]], dtype=dtype or complex)

    def __eq__(self, other: object) -> bool:
        # Compare by name so that a reloaded module's SYGate equals this one.
        return isinstance(other, Gate) and other.name == "sy" and other.num_qubits == 1 \
            and not other.params

    def __hash__(self) -> int:
        return hash(("sy", 1))


def _rules() -> list[tuple[Gate, QuantumCircuit]]:
    """(gate, equivalent circuit) pairs that relate sy to Qiskit's standard gates."""
    rules = []
    # sy -> ry(pi/2): every standard basis reaches sy through ry.
    qc = QuantumCircuit(1, name="sy")
    qc.append(RYGate(math.pi / 2), [0])
    rules.append((SYGate(), qc))
    # sy -> rz(-pi/2) sx rz(pi/2): one sx pulse, frame turned a quarter turn around it.
    qc = QuantumCircuit(1, name="sy", global_phase=-math.pi / 4)
    qc.append(RZGate(-math.pi / 2), [0])
    qc.append(SXGate(), [0])
    qc.append(RZGate(math.pi / 2), [0])
    rules.append((SYGate(), qc))
    # sx -> rz(pi/2) sy rz(-pi/2): the other way round.
    qc = QuantumCircuit(1, name="sx", global_phase=math.pi / 4)
    qc.append(RZGate(math.pi / 2), [0])
    qc.append(SYGate(), [0])
    qc.append(RZGate(-math.pi / 2), [0])
    rules.append((SXGate(), qc))
    # h -> rz(pi) sy: H = RY(pi/2) Z, one pulse and a frame change.
    qc = QuantumCircuit(1, name="h", global_phase=math.pi / 2)
    qc.append(RZGate(math.pi), [0])
    qc.append(SYGate(), [0])
    rules.append((HGate(), qc))
    # rx(theta) = ry(pi/2) rz(theta) ry(-pi/2), and ry(-pi/2) = -rz(pi) sy rz(pi):
    # two pulses, like Qiskit's own rx rule, but in the sy basis.
    theta = Parameter("theta")
    qc = QuantumCircuit(1, name="rx", global_phase=math.pi)
    qc.append(RZGate(math.pi), [0])
    qc.append(SYGate(), [0])
    qc.append(RZGate(theta + math.pi), [0])
    qc.append(SYGate(), [0])
    rules.append((RXGate(theta), qc))
    return rules


def _signature(gate: Gate, circuit: QuantumCircuit) -> tuple:
    """What identifies a rule regardless of object identity (class reloads, copies)."""
    ops = tuple(
        (inst.operation.name, tuple(str(p) for p in inst.operation.params),
         tuple(circuit.find_bit(q).index for q in inst.qubits))
        for inst in circuit.data)
    return (gate.name, gate.num_qubits, len(gate.params), str(circuit.global_phase), ops)


def register_equivalences(library: EquivalenceLibrary | None = None) -> int:
    """Add the sy rules to ``library`` (default: ``SessionEquivalenceLibrary``) unless present.

    Returns how many rules were added (0 when they were all there already).
    """
    lib = SessionEquivalenceLibrary if library is None else library
    added = 0
    for gate, circuit in _rules():
        present = {_signature(gate, c) for c in lib.get_entry(gate)} \
            if lib.has_entry(gate) else set()
        if _signature(gate, circuit) in present:
            continue
        lib.add_equivalence(gate, circuit)
        added += 1
    return added
