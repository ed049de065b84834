"""Placing a routed circuit again on isomorphic qubits: what the feed-forward and the
spectator-aware placements share, and the spectator-aware placement itself.

Qiskit's layout stage scores a placement by the Target's error rates. Two things they cannot
say decide where some circuits run well on labqpu's devices:

* a controller reads back only its own results (``labqpu.backend.feedforward_layout``);
* a calibrated cz's conditional phase moves when a neighbour of its edge is excited, by up to
  ``cz_spectator_spread_rad`` (the ``cz_spectators`` calibration node; lab5's edge 1-2: 0.54-
  0.59 rad with qubit 3 in |1>). On a line, GHZ-4 on qubits 4-3-2-1 plays the cz on 2-1 after
  qubit 3 has joined the state, and read 0.83 at the defaults; on 1-2-3-4, the same edges,
  that cz plays while qubit 3 is still in |0>: 0.92.

:class:`SpectatorAwarePlacement` moves a routed circuit onto the placement (every
interacting pair of qubits on a cz edge, as routed) with the lowest estimated error: each op
with the Target's error of its native counterpart where it lands, and each cz with a
penalty of (1/2) sin^2(spread / 2) for each neighbour of its fluxed qubit (``cz_flux_qubit``)
that an earlier gate may have excited (a gate other than rz or a measurement on it, not
since a reset). The flux pulse moves that qubit's levels past its neighbours', which is where
the shift comes from (lab5: qubit 3 beside edge 1-2, fluxed on 2); the other qubit stays at
its idle frequency. The snapshot holds the largest shift over the neighbours, so the penalty
is an upper estimate for one that shifts the phase less. The circuit moves only when that
gains more than :data:`MIN_GAIN` in estimated success.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import rustworkx as rx
from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.converters import circuit_to_dag
from qiskit.dagcircuit import DAGCircuit
from qiskit.transpiler import Layout, Target
from qiskit.transpiler.basepasses import AnalysisPass

#: Placements scored per group of qubits at most (VF2 enumerates them; a handful of active
#: qubits on a device of ten gives a few hundred).
MAX_PLACEMENTS = 20_000
#: Estimated success (as -log) a new placement must gain over the routed one to be taken.
MIN_GAIN = 0.005
_IGNORED = frozenset({"barrier", "delay"})
#: Operations that leave a qubit in |0> if it was (no spectator penalty from it).
_KEEP_GROUND = frozenset({"rz", "measure"})


def ops_of(dag: DAGCircuit, outer: tuple[int, ...] | None = None
           ) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(name, physical qubits) of every operation of ``dag`` in order, inside control flow
    too (a block's qubits are its op's qubits); barriers and delays left out."""
    for node in dag.topological_op_nodes():
        if node.op.name in _IGNORED:
            continue
        qubits = tuple(dag.find_bit(q).index for q in node.qargs)
        if outer is not None:
            qubits = tuple(outer[q] for q in qubits)
        if node.op.name in CONTROL_FLOW_OP_NAMES:
            for block in node.op.blocks:
                yield from ops_of(circuit_to_dag(block), qubits)
        else:
            yield node.op.name, qubits


def target_error(target: Target, name: str, qubits: tuple[int, ...]) -> float:
    """The Target's error of ``name`` on ``qubits`` (0 when it has none)."""
    if name not in target.operation_names:
        return 0.0
    props = target[name].get(qubits)
    return 0.0 if props is None or props.error is None else float(props.error)


def placements(target: Target, groups: tuple[tuple[int, ...], ...], active: list[int],
               pairs: set[tuple[int, int]]) -> Iterator[dict[int, int]]:
    """Maps of ``active`` onto the qubits of one of ``groups`` that put every pair of
    ``pairs`` on a cz edge of ``target`` (at most :data:`MAX_PLACEMENTS` per group)."""
    interaction = rx.PyGraph()
    node = {q: interaction.add_node(q) for q in active}
    for a, b in pairs:
        interaction.add_edge(node[a], node[b], None)
    edges = set(target.qargs_for_operation_name("cz") or ()) \
        if "cz" in target.operation_names else set()
    for qubits in groups:
        if len(qubits) < len(active):
            continue
        device = rx.PyGraph()
        index = {q: device.add_node(q) for q in qubits}
        for a, b in edges:
            if a < b and a in index and b in index:
                device.add_edge(index[a], index[b], None)
        found = rx.vf2_mapping(device, interaction, subgraph=True, induced=False,
                               id_order=False, call_limit=10 * MAX_PLACEMENTS)
        for count, mapping in enumerate(found):
            if count >= MAX_PLACEMENTS:
                break
            yield {interaction[v]: device[d] for d, v in mapping.items()}


def error_cost(target: Target, placed: dict[int, int], ops: list[tuple[str, tuple[int, ...]]]
               ) -> float:
    """-log of the estimated success of ``ops`` with qubits ``placed``: each op counted
    with the Target's error of its native counterpart there (measure, cz, else sx)."""
    cost = 0.0
    for name, qubits in ops:
        where = tuple(placed[q] for q in qubits)
        kind = "measure" if name == "measure" else "cz" if len(where) == 2 else "sx"
        cost -= math.log1p(-min(target_error(target, kind, where), 0.999999))
    return cost


def spectator_cost(target: Target, placed: dict[int, int],
                   ops: list[tuple[str, tuple[int, ...]]]) -> float:
    """-log of the estimated success of ``ops``' cz gates with qubits ``placed`` against
    their spectators (module docstring): (1/2) sin^2(spread / 2) per neighbour of the cz's
    fluxed qubit that an earlier op may have excited."""
    spectators = getattr(target, "cz_spectators", {})
    if not spectators:
        return 0.0
    neighbours: dict[int, set[int]] = {}
    for a, b in spectators:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    excited: set[int] = set()
    cost = 0.0
    for name, qubits in ops:
        where = tuple(placed[q] for q in qubits)
        if len(where) == 2 and (min(where), max(where)) in spectators:
            spread, fluxed = spectators[(min(where), max(where))]
            near = neighbours.get(fluxed, set()) - set(where)
            p = 0.5 * math.sin(spread / 2) ** 2
            cost -= len(near & excited) * math.log1p(-min(p, 0.999999))
        if name == "reset":
            excited.difference_update(where)
        elif name not in _KEEP_GROUND:
            excited.update(where)
    return cost


class SpectatorAwarePlacement(AnalysisPass):
    """Sets ``post_layout`` to the placement of the routed circuit's active qubits with the
    lowest estimated error counting cz spectators (module docstring), when it gains more than
    :data:`MIN_GAIN` over where the circuit is. Only a circuit whose spectator penalty where it
    is exceeds :data:`MIN_GAIN` is searched (the others keep Qiskit's layout, which weighed
    the error rates).

    Leaves the circuit alone when the Target has no spectator shifts, when another pass has set a
    ``post_layout``, when the circuit has a pulse gate (``pulse_gate_names``: defined on
    fixed qubits), an op on more than two qubits, or control flow on a Target of several
    controllers (``labqpu.backend.feedforward_layout`` places those)."""

    def __init__(self, target: Target, pulse_gates: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.target = target
        self.pulse_gates = pulse_gates

    def run(self, dag: DAGCircuit) -> None:
        """Analyse ``dag`` (physical qubits, after routing)."""
        target = self.target
        if not getattr(target, "cz_spectators", None) \
                or self.property_set["layout"] is None \
                or self.property_set["post_layout"] is not None:
            return
        if len(getattr(target, "feedforward_groups", ())) > 1 \
                and CONTROL_FLOW_OP_NAMES.intersection(dag.count_ops(recurse=False)):
            return
        ops = list(ops_of(dag))
        if any(name in self.pulse_gates or len(qubits) > 2 for name, qubits in ops):
            return
        pairs = {tuple(sorted(qubits)) for _, qubits in ops if len(qubits) == 2}
        if not pairs:
            return
        active = sorted({q for _, qubits in ops for q in qubits})

        def cost(placed: dict[int, int]) -> float:
            return error_cost(target, placed, ops) + spectator_cost(target, placed, ops)

        here_placed = {q: q for q in active}
        if spectator_cost(target, here_placed, ops) <= MIN_GAIN:
            return  # nothing to gain here that Qiskit's layout by error rates has not weighed
        here = cost(here_placed)
        best, best_cost = None, here - MIN_GAIN
        for placed in placements(target, (tuple(range(target.num_qubits)),), active, pairs):
            c = cost(placed)
            if c < best_cost:
                best, best_cost = placed, c
        if best is None:
            return
        taken = set(best.values())
        free = iter(q for q in range(dag.num_qubits()) if q not in taken)
        self.property_set["post_layout"] = Layout({
            bit: best[i] if i in best else next(free) for i, bit in enumerate(dag.qubits)})
