"""Feed-forward stays on one controller: a layout correction for dynamic circuits on a rack.

A controller's feed-forward reads only the results it digitizes itself (docs/protocol.md,
section 4.5): an ``if_else`` whose condition was measured on one controller cannot play a
pulse on another. Qiskit's layout stage knows nothing of controllers. On a rack of several
controllers (lab10: qubits 0-4 on ctrl0, 5-9 on ctrl1), it places a two-qubit feed-forward
circuit on its best-scored qubits, which may lie on both, and ``run()`` then has to refuse it.

:class:`OneControllerFeedForward` runs first in labqpu's translation stage, after layout and
routing, and again first in its scheduling stage (after Qiskit's last ``VF2PostLayout``).
When a control-flow operation reads a classical bit measured on another controller
than one of its own qubits, it moves the circuit's active qubits onto the qubits of one
controller. Every two-qubit interaction must land on a coupler of that controller, and of
all such placements it picks the one with the smallest summed calibrated error (the Target's
``sx``, ``cz`` and ``measure`` errors, by op count). It records the move as the pass
manager's ``post_layout``, which ``ApplyLayout`` applies (as after ``VF2PostLayout``), so
the circuit's layout reports where each virtual qubit went.

It leaves the circuit alone when the user chose the layout (``initial_layout``), when the
circuit has a pulse gate (defined on fixed qubits), when its feed-forward already stays on one
controller, and when no single controller can hold it (``run()`` then refuses it and lists
each controller's qubits). It places the circuit as routed and does not route again: on
lab10, whose controllers each hold a line of qubits, a routed square or a qubit with three
partners cannot be placed.
"""

from __future__ import annotations

import math

from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.dagcircuit import DAGCircuit
from qiskit.transpiler import Layout, Target
from qiskit.transpiler.basepasses import AnalysisPass

from labqpu.backend.placement import error_cost, ops_of, placements


class OneControllerFeedForward(AnalysisPass):
    """Sets ``post_layout`` to a placement of the circuit's active qubits on one controller
    when its feed-forward would otherwise cross controllers (module docstring).

    ``groups``: the qubits of each controller (``LabTarget.feedforward_groups``);
    ``pulse_gates``: the names of the backend's pulse gates (a circuit with one stays put).
    """

    def __init__(self, target: Target, groups: tuple[tuple[int, ...], ...],
                 pulse_gates: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.target = target
        self.groups = groups
        self.group_of = {q: k for k, qubits in enumerate(groups) for q in qubits}
        self.pulse_gates = pulse_gates

    def run(self, dag: DAGCircuit) -> None:
        """Analyse ``dag`` (physical qubits, after routing)."""
        if len(self.groups) < 2 or self.property_set["layout"] is None \
                or not CONTROL_FLOW_OP_NAMES.intersection(dag.count_ops(recurse=False)) \
                or not self._crosses(dag):
            return
        ops = list(ops_of(dag))
        if any(name in self.pulse_gates or len(qubits) > 2 for name, qubits in ops):
            return
        active = sorted({q for _, qubits in ops for q in qubits})
        pairs = {tuple(sorted(qubits)) for _, qubits in ops if len(qubits) == 2}
        best = self._placement(active, pairs, ops)
        if best is None:
            return
        taken = set(best.values())
        free = iter(q for q in range(dag.num_qubits()) if q not in taken)
        self.property_set["post_layout"] = Layout({
            bit: best[i] if i in best else next(free) for i, bit in enumerate(dag.qubits)})

    def _crosses(self, dag: DAGCircuit) -> bool:
        """Whether a control-flow op reads a bit last measured on another controller than
        one of its qubits."""
        writer: dict = {}  # clbit -> physical qubit of its last measurement
        for node in dag.topological_op_nodes():
            if node.op.name == "measure":
                writer[node.cargs[0]] = dag.find_bit(node.qargs[0]).index
            elif node.op.name in CONTROL_FLOW_OP_NAMES:
                qubits = {dag.find_bit(q).index for q in node.qargs}
                qubits |= {writer[c] for c in node.cargs if c in writer}
                if len({self.group_of.get(q, -1) for q in qubits}) > 1:
                    return True
        return False

    def _placement(self, active: list[int], pairs: set[tuple[int, int]],
                   ops: list[tuple[str, tuple[int, ...]]]) -> dict[int, int] | None:
        """The lowest-error map of ``active`` onto one controller's qubits that puts every
        pair of ``pairs`` on a cz edge (``placement.error_cost``), or None."""
        best, best_cost = None, math.inf
        for placed in placements(self.target, self.groups, active, pairs):
            cost = error_cost(self.target, placed, ops)
            if cost < best_cost:
                best, best_cost = placed, cost
        return best
