"""Randomized benchmarking sequences: random Cliffords fenced by barriers and closed by
their inverse (:func:`random_sequence`), the rounds that may run together
(:func:`independent_sets`), what a backend benchmarks (:func:`rb_subjects`), and what a
sequence costs a controller (:func:`sequence_cost`), for
:func:`labqpu.calibration.rb.check_rb_lengths`.

The cost is estimated per qubit or edge in three steps, each only when the one before comes
within half of a controller's limit (a review's case: ``--rb-lengths-1q 1 50 100000`` built
and transpiled sequences for 40 s, 1 GB, before ``run()`` refused a program longer than the
controller plays, naming no option):

1. an upper bound from the Target's gate durations (no compiling,
   :func:`sequence_cost_bound`): a Clifford fenced by barriers plays at most
   :data:`MAX_PULSE_BLOCKS` blocks of at most :data:`MAX_BLOCK_PULSES` pulses on each qubit
   and :data:`MAX_CZ` cz's (on two qubits); the default lengths end here;
2. probe programs of :data:`QUICK_PROBE_CLIFFORDS` random Cliffords, compiled;
3. the exact mean over the 24 single-qubit Cliffords, or a sample of
   :data:`CLOSE_PROBE_CLIFFORDS` two-qubit ones, against the limits less
   :data:`LENGTH_MARGIN`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import Clifford, random_clifford

from labqpu.calibration.records import describe

#: Native gates that play one drive pulse (rz plays nothing).
ONE_QUBIT_PULSES = ("sx", "sy", "x")


#: Most circuits and products of Cliffords kept by :func:`random_sequence` (emptied when full).
CLIFFORDS_KEPT = 4096
_circuits: dict[bytes, QuantumCircuit] = {}
_products: dict[tuple[bytes, bytes], Clifford] = {}


def random_sequence(width: int, length: int, rng: np.random.Generator
                    ) -> tuple[QuantumCircuit, int]:
    """``length`` random Cliffords on ``width`` qubits and the inverse of their product.

    Each Clifford's circuit is kept by tableau, and on one qubit (24 Cliffords) so is each
    product of the running total with a Clifford: the kept circuits are appended, never
    changed. Two qubits have 11 520 Cliffords, whose products rarely repeat."""
    qc = QuantumCircuit(width)
    total = Clifford(QuantumCircuit(width))
    for _ in range(length):
        c = random_clifford(width, seed=rng)
        key = c.tableau.tobytes()
        qc.compose(clifford_circuit(c, key), inplace=True)
        qc.barrier()
        if width > 1:
            total = total.compose(c)
            continue
        pair = (total.tableau.tobytes(), key)
        product = _products.get(pair)
        if product is None:
            if len(_products) >= CLIFFORDS_KEPT:
                _products.clear()
            product = _products[pair] = total.compose(c)
        total = product
    qc.compose(total.adjoint().to_circuit(), inplace=True)
    return qc, length + 1


def clifford_circuit(c: Clifford, key: bytes) -> QuantumCircuit:
    """The circuit of Clifford ``c`` (``key``: its tableau's bytes), kept by tableau."""
    circuit = _circuits.get(key)
    if circuit is None:
        if len(_circuits) >= CLIFFORDS_KEPT:
            _circuits.clear()
        circuit = _circuits[key] = c.to_circuit()
    return circuit


def independent_sets(items: Sequence[tuple[int, ...]],
                     coupling_map: Sequence[Sequence[int]],
                     max_round_qubits: int | None = None) -> list[list[tuple[int, ...]]]:
    """Split ``items`` (qubits as 1-tuples, or edges) into rounds that can run simultaneously:
    within a round no two items share a qubit or are coupled by an edge of ``coupling_map``,
    and (with ``max_round_qubits``) the round's qubits and their coupled neighbours number at
    most that. Greedy, in the order given."""
    coupled = {frozenset(e) for e in coupling_map}
    neighbours: dict[int, set[int]] = {}
    for a, b in coupling_map:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)

    def clash(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        return bool(set(a) & set(b)) or any(frozenset((p, q)) in coupled for p in a for q in b)

    def reach(group: Sequence[tuple[int, ...]]) -> set[int]:
        qubits = {q for item in group for q in item}
        return qubits.union(*(neighbours.get(q, set()) for q in qubits))

    rounds: list[list[tuple[int, ...]]] = []
    for item in items:
        for r in rounds:
            if not any(clash(item, other) for other in r) and (
                    max_round_qubits is None or len(reach([*r, item])) <= max_round_qubits):
                r.append(item)
                break
        else:
            rounds.append([item])
    return rounds


def rb_subjects(backend, qubits: Sequence[int] | None,
                edges: Sequence[tuple[int, int]] | None
                ) -> tuple[list[int], list[tuple[int, ...]]]:
    """What :func:`benchmark_gates` benchmarks: the qubits with sx in the Target (those of
    them in ``qubits`` when given) and ``edges`` (default: every cz edge, as (low, high),
    within ``qubits`` when given)."""
    target = backend.target
    chosen = None if qubits is None else set(qubits)
    qubits = sorted(q for (q,) in target.qargs_for_operation_name("sx")
                    if chosen is None or q in chosen)
    if edges is None:
        edges = sorted({tuple(sorted(e)) for e in target.qargs_for_operation_name("cz")
                        if chosen is None or set(e) <= chosen}
                       if "cz" in target.operation_names else set())
    return qubits, [tuple(e) for e in edges]


#: Random Cliffords of the quick probe, and of the close probe of a 2-qubit sequence.
QUICK_PROBE_CLIFFORDS = 48
CLOSE_PROBE_CLIFFORDS = 960
#: The share of a controller's limit the close estimate keeps free, by sequence width: a
#: 1-qubit mean is exact (a sequence's sum spreads ~0.2 % at 60 000 Cliffords); a 2-qubit
#: one is a sample's, which a review measured 1.1-1.4 % under real sequences.
LENGTH_MARGIN = {1: 0.01, 2: 0.05}
#: Upper bounds on what one Clifford plays (the bound of step 1): Qiskit synthesises a
#: 2-qubit Clifford with at most 3 two-qubit gates, so at most 4 single-qubit blocks per
#: qubit between them, each at most 3 pulses (two make any rotation); a cz plays at most
#: :data:`MAX_CZ_PLAYS` pulses, a measurement :data:`MAX_MEASURE_PLAYS` per qubit.
MAX_CZ, MAX_PULSE_BLOCKS, MAX_BLOCK_PULSES = 3, 4, 3
MAX_CZ_PLAYS, MAX_MEASURE_PLAYS = 8, 4

#: (samples at no Clifford, samples per Clifford, plays at none, plays per Clifford,
#: controller: None for every controller) of RB sequences on one qubit or edge.
Cost = tuple[float, float, float, float, str | None]


def sequence_cost_bound(backend, item: tuple[int, ...]) -> Cost | None:
    """An upper bound on the cost of RB sequences on ``item`` from the Target's durations, on
    any controller; None when the Target states no duration of a gate it needs."""
    target = backend.target
    fs = backend.config.controllers[0].sample_rate_hz  # one rate for all (the config's rule)
    names = [n for n in ONE_QUBIT_PULSES if n in target.operation_names]
    needed = [(n, (q,)) for n in (*names, "measure") for q in item]
    if len(item) == 2:
        if "cz" not in target.operation_names:
            return None
        needed.append(("cz", item) if item in target["cz"] else ("cz", item[::-1]))
    durations = {}
    for name, qargs in needed:
        props = target[name].get(qargs) if name in target.operation_names else None
        if props is None or props.duration is None:
            return None
        durations[name] = max(durations.get(name, 0.0), props.duration * fs)
    per = MAX_BLOCK_PULSES * max(durations[n] for n in names)
    plays = MAX_BLOCK_PULSES * len(item)
    if len(item) == 2:
        per = MAX_PULSE_BLOCKS * per + MAX_CZ * durations["cz"]
        plays = MAX_PULSE_BLOCKS * plays + MAX_CZ * MAX_CZ_PLAYS
    return 2 * durations["measure"], per, MAX_MEASURE_PLAYS * len(item), plays, None


def sequence_cost(backend, item: tuple[int, ...], count: int) -> Cost:
    """The cost of RB sequences on ``item`` from compiled probe programs: ``count`` random
    Cliffords (a fixed seed), or on one qubit each of its 24 Cliffords once (their exact
    mean) whatever ``count``."""
    d0, p0, controller = _program(backend, item, [])
    if len(item) == 1:
        cliffords = _one_qubit_cliffords()
    else:
        rng = np.random.default_rng(0)
        cliffords = [random_clifford(2, seed=rng) for _ in range(count)]
    d1, p1, _ = _program(backend, item, cliffords)
    return d0, (d1 - d0) / len(cliffords), p0, (p1 - p0) / len(cliffords), controller


def _program(backend, item: tuple[int, ...], cliffords: Sequence[Clifford]
             ) -> tuple[int, int, str]:
    """Duration (samples), pulse plays and controller of the program that plays
    ``cliffords`` on ``item``, each fenced by a barrier as in an RB sequence, and measures."""
    qc = QuantumCircuit(backend.num_qubits, len(item))
    for c in cliffords:
        qc.compose(clifford_circuit(c, c.tableau.tobytes()), qubits=list(item), inplace=True)
        qc.barrier(list(item))
    qc.measure(list(item), range(len(item)))
    program = backend.compile(transpile(qc, backend,
                                        initial_layout=list(range(backend.num_qubits))))
    return program.duration_samples, int(program.play_port.shape[0]), program.controller


def _one_qubit_cliffords() -> list[Clifford]:
    """The 24 single-qubit Cliffords (generated by h and s)."""
    identity = Clifford(QuantumCircuit(1))
    found = {identity.tableau.tobytes(): identity}
    frontier = [identity]
    while frontier:
        grown = []
        for c in frontier:
            for gate in ("h", "s"):
                step = QuantumCircuit(1)
                getattr(step, gate)(0)
                n = c.compose(Clifford(step))
                if n.tableau.tobytes() not in found:
                    found[n.tableau.tobytes()] = n
                    grown.append(n)
        frontier = grown
    return list(found.values())


def over_limits(backend, costs: dict[tuple[int, ...], Cost], cliffords: int,
                fraction: float) -> list[str]:
    """How RB sequences of ``cliffords`` Cliffords on a round's qubits or edges (``costs``
    of each) would exceed ``fraction`` of a controller's limit (of every controller, for a
    cost on none): the duration per qubit or edge, the plays summed over a controller. One
    phrase per limit exceeded, with the longest length fitting within ``fraction``; none:
    []."""
    def kept(limit: int, unit: str) -> str:
        """What of ``limit`` the estimate keeps free, when it keeps a margin."""
        return (f"; this estimate keeps {1 - fraction:.0%} of it free, {fraction * limit:.0f}"
                f" {unit}" if fraction < 1 else "")

    def controllers(controller: str | None) -> list[str]:
        """The controller a cost is on; every one for a cost on none (a bound)."""
        return [controller] if controller else [c.name for c in backend.config.controllers]

    found = []
    plays: dict[str | None, list] = {}
    for item, (d0, per_d, p0, per_p, controller) in costs.items():
        for name in controllers(controller):
            limit = backend.controller_capabilities(name).get("max_program_samples")
            if limit and per_d > 0 and d0 + cliffords * per_d > fraction * limit:
                us = 1e6 / backend.config.controller(name).sample_rate_hz
                found.append(f"one on {describe(item)} lasts about "
                             f"{(d0 + cliffords * per_d) * us:.0f} us; controller {name} plays "
                             f"at most {limit} samples ({limit * us:.0f} us, its "
                             f"max_program_samples{kept(limit * us, 'us')}): give lengths up "
                             f"to about {int((fraction * limit - d0) / per_d) - 1} Cliffords")
        total = plays.setdefault(controller, [0.0, 0.0, []])
        total[0] += p0
        total[1] += per_p
        total[2].append(describe(item))
    for controller, (p0, per_p, subjects) in plays.items():
        for name in controllers(controller):
            limit = backend.controller_capabilities(name).get("max_plays")
            if limit and per_p > 0 and p0 + cliffords * per_p > fraction * limit:
                found.append(f"those on {', '.join(subjects)} together play about "
                             f"{p0 + cliffords * per_p:.0f} pulses; controller {name} takes "
                             f"at most {limit} (max_plays{kept(limit, 'plays')}): give "
                             f"lengths up to about {int((fraction * limit - p0) / per_p) - 1} "
                             "Cliffords")
    return found
