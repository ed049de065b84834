"""Placing a routed circuit again on isomorphic qubits: the search and the scoring that the
feed-forward placement (``labqpu.backend.feedforward_layout``) uses.

A placement maps the circuit's active qubits so that every interacting pair lands on a cz
edge, as routed; its cost is -log of the estimated success of the circuit's ops, each with
the Target's error of its native counterpart where it lands.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import rustworkx as rx
from qiskit.circuit import CONTROL_FLOW_OP_NAMES
from qiskit.converters import circuit_to_dag
from qiskit.dagcircuit import DAGCircuit
from qiskit.transpiler import Target

#: Placements scored per group of qubits at most (VF2 enumerates them; a handful of active
#: qubits on a device of ten gives a few hundred).
MAX_PLACEMENTS = 20_000
_IGNORED = frozenset({"barrier", "delay"})


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
