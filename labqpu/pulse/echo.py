"""Dynamical decoupling inside dynamic circuits, by the compiler; the staggered echo both it and
the scheduling stage play.

Qiskit's scheduling stage cannot time a circuit with control flow, so it pads no idle window of
one; the compiler schedules such a circuit itself. A qubit left in superposition while another
qubit is measured and the controller waits out the feed-forward latency (~1.2 us on lab5) turns
its phase by the static ZZ of its neighbours (hundreds of kHz) and by its detuning: in
``h(0); cx(0, 1); measure(0); if c0: x(1); measure(1)`` qubit 1 read 0 in 0.58 of the shots
instead of ~0.97. :func:`decouple` fills such windows with the echo the scheduling stage plays
in static circuits (``labqpu.backend.plugins.IdleDynamicalDecoupling``), with the calibrated
pi pulse: **staggered** by the colour of the qubit on the coupling graph (``echo_colours``;
two colours on a line or a ladder), x, x at 1/4 and 3/4 of the slack on colour 0 and four x at
1/8, 3/8, 5/8 and 7/8 on colour 1 (``echo_gaps``). Each refocuses static detuning and the ZZ
of neighbours that are not echoed; the two together also refocus the ZZ between two coupled
qubits that wait over the same window, which one sequence on both would leave: with lab5's
~-400 kHz, a Bell pair that waited 2.4 us beside an ancilla's readout and reset came out as
another Bell state in 0.67-0.72 of the shots (a review's circuit, 2026-12-03).

The same rules as the stage's decide where an echo goes:

* only between two operations on the qubit, not before its first (it waits in |0>) and not
  after its last;
* only while the qubit may be in superposition: not after a measurement or a reset (active
  or passive) until a gate that can make one (sx, sy, a pulse gate, a conditional block
  holding one); an x, rz or cz leaves a measured qubit in a basis state, where an echo
  refocuses nothing;
* not right before a measurement of the qubit: what turns its phase there (detuning, ZZ) is
  diagonal and changes neither its outcome nor, once its neighbours are echoed, theirs, while
  an echo at the same times as a neighbour's would leave their mutual ZZ unrefocused (the run
  before a measurement plays early under "auto", so the qubit often waits there);
* not in a window that overlaps in time a delay the circuit wrote on the qubit or on a coupled
  neighbour (free evolution: a T1 wait, a Ramsey or ``ZZRamsey`` delay);
* not while a coupled neighbour plays a two-qubit gate (the echo would flip a spectator of
  the cz); the parts of the window before and after are echoed on their own;
* only where the window holds the pulses with some slack; else it stays idle.

The echo rows are inserted before the operation that ends each window and fill it exactly, so
scheduling the padded circuit again gives every original operation the start it had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import pairwise

import numpy as np
import rustworkx as rx
from qiskit.circuit import QuantumCircuit

from labqpu.errors import CompilationError
from labqpu.pulse.dynamic import Lowered, with_rows
from labqpu.pulse.kernels import schedule_kernel
from labqpu.pulse.tables import Tables, samples_of

#: Gates that leave a qubit in a basis state in one: after a measurement an echo stays off
#: until another gate has acted.
_KEEP_BASIS = ("x", "rz")


def _coupling_graph(pairs: Iterable[tuple[int, int]], num_qubits: int) -> rx.PyGraph:
    """The graph of ``num_qubits`` qubits (nodes 0..n-1) with an edge per coupled pair among
    them."""
    graph = rx.PyGraph()
    graph.add_nodes_from(range(num_qubits))
    graph.add_edges_from_no_data([(a, b) for a, b in pairs
                                  if a < num_qubits and b < num_qubits and a != b])
    return graph


def echo_colours(pairs: Iterable[tuple[int, int]], num_qubits: int) -> list[int]:
    """The echo colour of each of ``num_qubits`` qubits coupled by ``pairs``: neighbours get
    different colours (two on a bipartite coupling graph such as a line or a ladder: the
    parity of the distance from the lowest qubit of each connected part)."""
    graph = _coupling_graph(pairs, num_qubits)
    colours = rx.two_color(graph)
    if colours is None:
        colours = rx.graph_greedy_color(graph)
    else:
        for part in rx.connected_components(graph):
            if colours.get(min(part), 0):
                for q in part:
                    colours[q] = 1 - colours[q]
    return [int(colours.get(q, 0)) for q in range(num_qubits)]


def echo_gaps(length: int, x_length: int, colour: int, grid: int) -> list[int] | None:
    """The idle stretches (samples) before, between and after the x pulses of the echo of
    colour ``colour`` filling ``length`` samples: 2^(colour + 1) pulses of ``x_length``
    samples centred at (2k + 1) / 2^(colour + 2) of the slack, the stretches on the ``grid``
    (the rounding goes to the last one). The toggling functions of two colours are
    orthogonal, so two coupled qubits echoed over one window refocus their mutual ZZ, which
    the same sequence on both would leave. A window too short for that many pulses with some
    slack between them gets half as many (down to two); None when not even two fit."""
    pulses = 2 ** (colour + 1)
    while pulses >= 2:
        slack = length - pulses * x_length
        if slack > 0:
            edge = slack // (2 * pulses) // grid * grid
            middle = slack // pulses // grid * grid
            return [edge, *[middle] * (pulses - 1), slack - edge - (pulses - 1) * middle]
        pulses //= 2
    return None


def schedule(out: Lowered, tables: Tables, *, alap: bool, early: np.ndarray) -> np.ndarray:
    """Start sample of every row of ``out`` as ``kernels.layout_kernel`` schedules it."""
    n = len(out.rows)
    final = np.zeros(n, dtype=np.int64)
    for i, (eid, *_rest) in enumerate(out.rows):
        if eid >= 0 and tables.effect_rows[eid][12] != 0:
            final[i] = 1
    qptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in out.resources], out=qptr[1:])
    qflat = np.fromiter((r for rs in out.resources for r in rs), dtype=np.int64,
                        count=int(qptr[-1]))
    starts = np.zeros(n, dtype=np.int64)
    schedule_kernel(final, np.array([row[1] for row in out.rows], dtype=np.int64), qptr, qflat,
                    np.array(out.parent, dtype=np.int64), np.array(out.offset, dtype=np.int64),
                    early.astype(np.int64), out.num_resources, alap, starts)
    return starts


def _x_row(tables: Tables, q: int, circuit: QuantumCircuit) -> tuple[int, int] | None:
    """(effect, duration in samples) of the calibrated x on ``q``, or None without one."""
    try:
        duration = tables.channels.timing.pad(samples_of(
            tables.cal.qubit(q, "pulse_duration_s"), tables.fs, f"x on {(q,)}"))
        return tables.effect("x", (q,), duration, circuit), duration
    except CompilationError:
        return None


def _coupled(tables: Tables, num_qubits: int) -> dict[int, set[int]]:
    """Circuit qubits coupled to each one by a calibrated pair."""
    graph = _coupling_graph(tables.snapshot.pairs, num_qubits)
    return {q: set(graph.neighbors(q)) for q in range(num_qubits)}


class _Circuit:
    """What the echo rules need to know of one lowered circuit and its schedule."""

    def __init__(self, out: Lowered, tables: Tables, starts: np.ndarray, num_qubits: int):
        self.out, self.tables, self.starts = out, tables, starts
        self.ends = starts + np.array([row[1] for row in out.rows], dtype=np.int64)
        self.qubits = [[r for r in rs if r < num_qubits] for rs in out.resources]
        keep = {tables.effect_ids.get((name, (q,))) for name in _KEEP_BASIS
                for q in range(num_qubits)}
        keep |= {eid for (name, _), eid in tables.effect_ids.items() if name == "cz"}
        self.basis_effects = keep - {None}
        self.reset_effects = {eid for (name, _), eid in tables.effect_ids.items()
                              if name == "reset"}
        self.members: dict[int, list[int]] = {}
        for i, p in enumerate(out.parent):
            if p >= 0:
                self.members.setdefault(p, []).append(i)
        self.coupled = _coupled(tables, num_qubits)
        # two-qubit plays (cz, two-qubit pulse gates; in a branch too): (start, end, qubits)
        self.interactions = [(starts[i], self.ends[i], set(self.qubits[i]))
                             for i, (eid, *_r) in enumerate(out.rows)
                             if eid != 0 and len(self.qubits[i]) > 1]
        self.delay_rows = set(out.delays)
        self.free = [(starts[i], self.ends[i], set(self.qubits[i])) for i in out.delays
                     if out.rows[i][1] > 0]

    def measures(self, i: int) -> bool:
        eid = self.out.rows[i][0]
        return eid >= 0 and self.tables.effect_rows[eid][11] >= 0

    def resets(self, i: int) -> bool:
        """Whether row ``i`` is a passive reset (a wait the circuit did not write; the qubit
        relaxes to |0>) or an active reset's feed-forward wait."""
        eid, duration, *_rest = self.out.rows[i]
        return eid in self.reset_effects or (
            eid == 0 and duration > 0 and i not in self.members and i not in self.delay_rows
            and len(self.qubits[i]) == len(self.out.resources[i]))

    def keeps_basis(self, i: int, q: int) -> bool:
        """Whether row ``i`` leaves qubit ``q``, in a basis state before it, in one."""
        if i in self.members:
            return all(self.keeps_basis(j, q) for j in self.members[i] if q in self.qubits[j])
        eid = self.out.rows[i][0]
        return eid == 0 or eid in self.basis_effects or self.measures(i)

    def windows(self, q: int) -> list[tuple[int, int, int]]:
        """(start, end, row that ends it) of every idle window of ``q`` an echo may fill."""
        rows = [i for i, qs in enumerate(self.qubits) if q in qs and self.out.parent[i] < 0]
        found = []
        basis = True  # |0> before the first gate
        for prev, nxt in pairwise(rows):
            if self.measures(prev) or self.resets(prev):
                basis = True
            elif not self.keeps_basis(prev, q):
                basis = False
            t0, t1 = int(self.ends[prev]), int(self.starts[nxt])
            if basis or t1 <= t0 or self.measures(nxt) or self._free_evolution(q, t0, t1):
                continue
            found.append((t0, t1, nxt))
        return found

    def _free_evolution(self, q: int, t0: int, t1: int) -> bool:
        near = self.coupled[q] | {q}
        return any(s < t1 and e > t0 and qs & near for s, e, qs in self.free)

    def busy(self, q: int) -> list[tuple[int, int]]:
        """Stretches during which a coupled neighbour of ``q`` plays a two-qubit gate that
        ``q`` is not part of."""
        return sorted((int(s), int(e)) for s, e, qs in self.interactions
                      if q not in qs and qs & self.coupled[q])


def echo_segments(t0: int, t1: int, busy: Iterable[tuple[int, int]], x_length: int,
                  colour: int, grid: int, echoed: Callable[[int, int], bool] | None = None
                  ) -> list[tuple[bool, int]]:
    """The pieces filling [``t0``, ``t1``) (samples or dt) in order, as (is an x pulse,
    length): a plain wait over each ``busy`` stretch (a coupled neighbour's cz), and the echo of
    ``colour`` (``echo_gaps`` with ``x_length``-long pulses) in each stretch between them, or a
    plain wait where it does not fit or ``echoed(start, end)`` says no. Waits of length 0 are
    left out. The compiler's echoes inside dynamic circuits and the scheduling stage's
    (``labqpu.backend.plugins.IdleDynamicalDecoupling``) both fill their windows with this."""
    def echo(a: int, b: int) -> list[tuple[bool, int]]:
        gaps = echo_gaps(b - a, x_length, colour, grid) \
            if echoed is None or echoed(a, b) else None
        if gaps is None:
            return [(False, b - a)]
        pieces = [(False, gaps[0])]
        for gap in gaps[1:]:
            pieces += [(True, x_length), (False, gap)]
        return pieces

    pieces: list[tuple[bool, int]] = []
    t = t0
    for b0, b1 in sorted(busy):
        a, b = max(b0, t), min(b1, t1)
        if b <= a:
            continue
        if a > t:
            pieces += echo(t, a)
        pieces.append((False, b - a))
        t = b
    if t < t1:
        pieces += echo(t, t1)
    return [(is_x, n) for is_x, n in pieces if n > 0]


def decouple(out: Lowered, tables: Tables, circuit: QuantumCircuit) -> Lowered:
    """``out`` with echoes in the idle windows of its qubits (module docstring), scheduled
    ALAP with its early runs, as ``scheduling_method="auto"`` compiles it. Returns ``out``
    itself when no window gets an echo."""
    nq = circuit.num_qubits
    starts = schedule(out, tables, alap=True, early=np.array(out.early, dtype=np.int64))
    view = _Circuit(out, tables, starts, nq)
    grid = tables.channels.timing.grid
    colours = echo_colours(tables.snapshot.pairs, nq)
    inserted: dict[int, list[tuple[tuple, int]]] = {}
    for q in range(nq):
        windows = view.windows(q)
        x = _x_row(tables, q, circuit) if windows else None
        if x is None:
            continue
        busy = view.busy(q)
        for t0, t1, before in windows:
            eid, x_length = x
            pieces = echo_segments(t0, t1, busy, x_length, colours[q], grid)
            if any(is_x for is_x, _ in pieces):
                inserted.setdefault(before, []).extend(
                    ((eid if is_x else 0, n, 0.0, -1), q) for is_x, n in pieces)
    if not inserted:
        return out
    order: list[int | tuple[tuple, int]] = []
    for i in range(len(out.rows)):
        order += inserted.get(i, [])
        order.append(i)
    return with_rows(out, order)
