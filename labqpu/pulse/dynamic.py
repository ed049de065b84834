"""Dynamic circuits: mid-circuit measurement, ``if_else`` and active ``reset`` lowered onto the
controller's feed-forward (docs/protocol.md section 4.5).

The compiler reads a circuit with ``compiler._lower`` first; a circuit with ``if_else``, an
active ``reset``, a pulse gate or an operation after a measurement of its qubit is read again
here, into the same op rows for ``kernels.layout_kernel`` plus what feed-forward needs:

* **Resources.** Each circuit qubit and each classical bit is a resource of the scheduler
  (qubit q is resource q, clbit c is resource ``num_qubits + c``). A measurement followed by
  anything on its qubit, or read by an ``if_else``, is *mid-circuit*: a gate on its qubit and
  its clbit, so later gates start after the readout ends. A measurement after which nothing
  touches its qubit is *final* and waits for the end of the gates as in a plain circuit.
* **Latency.** An ``if_else`` is a *container* op on its qubits and on a resource of its own
  (after the qubits and classical bits), preceded by one wait of the controller's feed-forward
  latency (on the timing grid) on the bits it reads and that resource: the container starts no
  earlier than the end of the acquisitions that last wrote them plus the latency, in ALAP as
  in ASAP. ``if_else``'s that read the same bits, none written again since, share the wait
  (it holds each one's resource), so a register's corrections on several qubits play at once
  rather than one latency after another. The container lasts as long as the longer branch, so
  later gates see one timing whichever branch runs.
* **Branches.** Each branch is scheduled ALAP within the container (``branches_alap``, the
  default: its ops as late as the ops after them on their qubits allow, and its end at the
  container's end, as the circuit around it is scheduled; "asap" scheduling places them ASAP
  from the container's start). Before 2026-12-07 they were ASAP, so ``x(3)`` written
  after ``cx(1, 2)`` in a branch played while the cz did, with qubit 3 excited beside the
  fluxed qubit 2 (lab5's spectator loss: 0.54 of shots right against 0.91 for the same gates
  outside the branch, where ALAP put the x after the cz). Its ops are
  members of conditional blocks, and plays keep the unconditional frame; a virtual Z or a cz
  phase correction in a branch becomes a phase shift in its block on the qubit's drive port,
  which the controller adds to every later play on that port in the shots where the block
  runs.
* **Conditions.** A condition (a bit or register compared with a value, or a classical
  expression over bits and registers: ``labqpu.pulse.conditions``) becomes a truth table over
  the bits it reads, and each branch a set of disjoint blocks: the leaves of a decision tree
  over those bits in which the condition holds (true branch) or fails (false branch). The
  controller's blocks nest (``block_parent``: a block runs only when its parent runs), so a
  node is a block (acquisition that last wrote the bit, value, parent). ``bit == v`` is the
  pair (acquisition, v) / (acquisition, 1 - v) at the top level, as before nesting existed;
  ``register == v`` is the chain of its bits' values, and its failure one block per bit
  (bit i differs while bits 0..i-1 agree). Each leaf holds a copy of its branch. An
  ``if_else`` inside a branch combines its condition with the enclosing ones (all must take
  their branch) into one tree, so a bit is tested once on any chain and a branch the
  enclosing conditions rule out gets no block; every bit it reads was written before the
  outermost ``if_else``, which waits the latency for all of them. A bit no earlier
  measurement wrote holds 0, as classical bits start in OpenQASM and Qiskit: the condition
  is taken with it 0, and one that reads no written bit is decided when compiling (its
  branch plays unconditionally, or not at all, with no latency; a branch that never plays
  is not read). Refused: conditions the controller cannot decide (``conditions``),
  measurements, resets and pulse gates inside a branch that may play (acquisitions are
  unconditional), and loops.
* **Active reset.** ``reset`` on a qubit that ``tables.active_reset_possible`` allows, with
  feed-forward: a mid-circuit measurement into no classical bit (clbit -1: its result is not
  reported), the latency, then an x pulse in the block (that acquisition, 1). Otherwise the
  passive wait of ``reset_duration_s``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

from labqpu.errors import CompilationError
from labqpu.pulse.conditions import MAX_CONDITION_BITS, ConditionError, truth_table
from labqpu.pulse.gates import PulseGate, lower
from labqpu.pulse.tables import (
    Tables,
    active_reset_possible,
    duration_samples,
    reset_rounds,
    samples_of,
    unbound_error,
)
from labqpu.pulse.timing import held_readouts, padding_delays

#: Instructions a branch of ``if_else`` may hold.
_BRANCH_OPS = frozenset({"rz", "sx", "sy", "x", "cz", "delay", "barrier", "if_else"})

#: A condition: the clbits it reads and its truth table (``conditions.truth_table``).
Condition = tuple[tuple[int, ...], tuple[bool, ...]]
#: Most conditional blocks the conditions of one circuit may need.
_MAX_BLOCKS = 4096


@dataclass
class Lowered:
    """A circuit read into op rows for ``layout_kernel`` (see its docstring)."""

    rows: list[tuple]  # (effect, duration, parameter, clbit) per op
    resources: list[tuple]  # resources per op
    num_resources: int
    used: set[int]
    measured: set[int]
    parent: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    block: list[int] = field(default_factory=list)
    #: (acquisition, value, parent block or -1)
    blocks: list[tuple[int, int, int]] = field(default_factory=list)
    #: acquisition index -> True when a block reads it (a discriminator is required)
    discriminated: dict[int, bool] = field(default_factory=dict)
    #: effect rows of this circuit's pulse gates (a row's effect -2 - j is local row j; its
    #: ``wave`` -1 - k is local waveform k), kept out of the shared tables
    local_rows: list[tuple] = field(default_factory=list)
    local_waves: list[np.ndarray] = field(default_factory=list)
    #: rows that ALAP scheduling plays early (``early_runs``)
    early: list[bool] = field(default_factory=list)
    #: rows of the delays the circuit wrote (free evolution; not feed-forward waits)
    delays: list[int] = field(default_factory=list)


def with_rows(out: Lowered, order: Sequence[int | tuple[tuple, int]]) -> Lowered:
    """A copy of ``out`` whose rows are ``order``: an int is ``out``'s row of that index, whose
    parent and place among the delays follow it (a row left out must be no kept row's
    parent); a (row, qubit) pair is a new unconditional row on that qubit, not early."""
    new = replace(out, rows=[], resources=[], parent=[], offset=[], block=[], early=[],
                  delays=[], used=set(out.used), measured=set(out.measured),
                  blocks=list(out.blocks), discriminated=dict(out.discriminated),
                  local_rows=list(out.local_rows), local_waves=list(out.local_waves))
    index: dict[int, int] = {}
    for item in order:
        if isinstance(item, tuple):
            row, q, parent, offset, block, early = *item, -1, 0, -1, False
        else:
            index[item] = len(new.rows)
            row, q = out.rows[item], None
            parent, offset, block = out.parent[item], out.offset[item], out.block[item]
            early = bool(out.early[item]) if out.early else False
        new.rows.append(row)
        new.resources.append(out.resources[item] if q is None else (q,))
        new.parent.append(parent)
        new.offset.append(offset)
        new.block.append(block)
        new.early.append(early)
    new.parent = [index[p] if p >= 0 else -1 for p in new.parent]
    new.delays = [index[i] for i in out.delays if i in index]
    if not out.early:
        new.early = []
    return new


class _Reader:
    """One pass over a circuit's instructions, building a ``Lowered``."""

    def __init__(self, circuit: QuantumCircuit, tables: Tables, latency_samples: int | None,
                 active_reset: bool, pulse_gates: Mapping[str, Mapping[tuple, PulseGate]],
                 branches_alap: bool) -> None:
        self.pulse_gates = pulse_gates
        self.branches_alap = branches_alap
        self.wave_index: dict[tuple, int] = {}  # local waveform key -> index
        self.circuit = circuit
        self.tables = tables
        self.latency = latency_samples
        self.active_reset = active_reset
        self.nq = circuit.num_qubits
        self.qindex = {bit: i for i, bit in enumerate(circuit.qubits)}
        self.cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
        self.out = Lowered([], [], self.nq + circuit.num_clbits, set(), set())
        self.pending_measure: dict[int, int] = {}  # qubit -> row of its latest measurement
        self.mid: set[int] = set()  # rows of mid-circuit measurements
        self.writer: dict[int, tuple[int, int]] = {}  # clbit -> (acquisition, row)
        #: clbits read together -> the latency wait after their last writes
        self.waited: dict[tuple[int, ...], int] = {}
        self.n_acq = 0
        self.delays: list[int] = []
        self.barriers: set[int] = set()
        self.last_used: dict[int, int] = {}
        self.block_ids: dict[tuple[int, int, int], int] = {}
        self.leaf_cache: dict[tuple, list[int]] = {}  # leaves() by path and acquisitions

    def fail(self, message: str, qubits: tuple = (), instruction: str | None = None):
        raise CompilationError(f"circuit {self.circuit.name!r}: {message}",
                               circuit=self.circuit.name, qubits=qubits,
                               instruction=instruction)

    def add(self, row: tuple, resources: tuple, parent: int = -1, offset: int = 0,
            block: int = -1) -> int:
        out = self.out
        out.rows.append(row)
        out.resources.append(resources)
        out.parent.append(parent)
        out.offset.append(offset)
        out.block.append(block)
        return len(out.rows) - 1

    def touch(self, qubits: tuple, row: int) -> None:
        """Qubits ``qubits`` are busy in ``row``: an earlier measurement of one is mid-circuit."""
        for q in qubits:
            measured = self.pending_measure.pop(q, None)
            if measured is not None:
                self.mid.add(measured)
            self.last_used[q] = row

    def gate(self, inst, qubits: tuple) -> tuple:
        """(effect, duration, parameter) of a native gate or delay on ``qubits``."""
        name = inst.operation.name
        tables = self.tables
        duration = duration_samples(inst, qubits, tables.cal, tables.fs, self.circuit,
                                    tables.channels.timing)
        if name == "delay":
            return 0, duration, 0.0
        param = 0.0
        if inst.operation.params:
            try:
                param = float(inst.operation.params[0])
            except TypeError as exc:
                raise unbound_error(self.circuit.name, name, qubits,
                                    inst.operation.params) from exc
        return tables.effect(name, qubits, duration, self.circuit), duration, param

    def read(self) -> Lowered:
        for inst in self.circuit.data:
            name = inst.operation.name
            qubits = tuple(self.qindex[q] for q in inst.qubits)
            if name == "barrier":
                self.barriers.add(self.add((0, 0, 0.0, -1), qubits))
            elif name == "measure":
                self.measure(qubits[0], self.cindex[inst.clbits[0]])
            elif name == "reset" and self.active_reset and self.latency is not None and \
                    active_reset_possible(self.tables.snapshot, qubits[0]):
                self.reset(qubits[0])
            elif name == "if_else":
                self.if_else(inst, qubits)
            elif name in self.pulse_gates:
                self.pulse_gate(inst, qubits)
            elif name in ("while_loop", "for_loop", "switch_case", "box", "break_loop",
                          "continue_loop"):
                self.fail(f"{name!r} on qubits {qubits} is not supported: the controller's "
                          "feed-forward has conditional blocks (if_else) but no loops or "
                          "switches", qubits, name)
            else:
                eid, duration, param = self.gate(inst, qubits)
                row = self.add((eid, duration, param, -1), qubits)
                if name == "delay":
                    self.delays.append(row)
                else:
                    self.touch(qubits, row)
        return self.finish()

    def pulse_gate(self, inst, qubits: tuple) -> None:
        """A pulse gate: a container row on its qubits for the definition's duration, and its
        plays and frame changes as members at their offsets (unconditional)."""
        name = inst.operation.name
        gate = self.pulse_gates[name].get(qubits)
        if gate is None:
            self.fail(f"pulse gate {name!r} is defined on qubits "
                      f"{sorted(self.pulse_gates[name])}, not on {qubits}", qubits, name)
        params = inst.operation.params
        if any(isinstance(v, ParameterExpression) and v.parameters for v in params):
            raise unbound_error(self.circuit.name, name, qubits, params, f"pulse gate {name!r}")
        try:
            if any(isinstance(v, bool) or not isinstance(v, numbers.Real | ParameterExpression)
                   for v in params):  # as the gate refuses them (PulseGate.__call__)
                raise TypeError("not a real number")
            values = [float(v) for v in params]
        except (TypeError, ValueError):
            self.fail(f"pulse gate {name!r} on {qubits}: its values must be real numbers, got "
                      f"{params!r}", qubits, name)
        if len(values) != len(gate.parameters):
            self.fail(f"pulse gate {name!r} on {qubits} has {len(values)} value(s); its "
                      f"definition takes {len(gate.parameters)}", qubits, name)
        members, waves = lower(gate, values, self.tables, self.circuit.name)
        local = []
        for key, wave in waves:
            if key not in self.wave_index:
                self.wave_index[key] = len(self.out.local_waves)
                self.out.local_waves.append(wave)
            local.append(self.wave_index[key])
        container = self.add((0, gate.duration_samples, 0.0, -1), qubits)
        self.touch(qubits, container)
        for member in members:
            row = list(member.row)
            if row[0] >= 0:  # a play: its waveform, as an index of the circuit's local ones
                row[1] = -1 - local[-1 - int(row[1])]
            if member.channel is not None and member.channel.kind == "readout":
                self.out.measured.add(member.channel.qubit)  # its readout LO must be set
            self.out.local_rows.append(tuple(row))
            eid = -1 - len(self.out.local_rows)
            self.add((eid, member.duration, 0.0, -1), qubits, container, member.offset)

    def measure(self, q: int, c: int) -> int:
        """A measurement of ``q`` into clbit ``c`` (-1: none); returns its row."""
        tables = self.tables
        duration = tables.channels.timing.pad(samples_of(
            tables.cal.qubit(q, "readout_duration_s"), tables.fs, f"measure on {(q,)}"))
        row = self.add((-1, duration, 0.0, c), (q,))
        self.touch((q,), row)
        self.pending_measure[q] = row
        if c >= 0:
            self.writer[c] = (self.n_acq, row)
            self.waited = {bits: row for bits, row in self.waited.items() if c not in bits}
        self.n_acq += 1
        self.out.measured.add(q)
        return row

    def block_id(self, acquisition: int, value: int, parent: int = -1) -> int:
        key = (acquisition, value, parent)
        bid = self.block_ids.get(key)
        if bid is None:
            bid = self.block_ids[key] = len(self.out.blocks)
            self.out.blocks.append(key)
        self.out.discriminated[acquisition] = True
        return bid

    def leaves(self, path: tuple) -> list[int]:
        """The blocks a member under ``path`` ((condition, branch taken) from the outermost
        if_else in) belongs to: the leaves of a decision tree over the bits the conditions
        read, in order, each node a block (bit's acquisition, bit value, parent), pruned where
        the result no longer depends on the remaining bits. The conditions are combined first
        (all must take their branch), so a bit is tested once on any chain, and a branch the
        enclosing conditions rule out gets no block. The leaves are disjoint, so a member
        added to each runs at most once per shot. For bit == v: one block; for register == v:
        the chain of its bits' values, and for its failure one block per bit (bit i differs
        while bits 0..i-1 agree). A leaf -1 means unconditional."""
        clbits = list(dict.fromkeys(c for (bits, _), _ in path for c in bits))
        # the acquisitions that wrote the bits now: a bit measured again is a new result
        key = (path, tuple(self.writer[c][0] for c in clbits))
        out = self.leaf_cache.get(key)
        if out is not None:
            return out
        if len(clbits) > MAX_CONDITION_BITS:
            self.fail(f"nested conditions that read {len(clbits)} classical bits together; at "
                      f"most {MAX_CONDITION_BITS} are supported", instruction="if_else")
        position = {c: j for j, c in enumerate(clbits)}
        table = []
        for k in range(2 ** len(clbits)):
            table.append(all(
                truth[sum(((k >> position[c]) & 1) << i for i, c in enumerate(bits))] == holds
                for (bits, truth), holds in path))
        out = []

        def walk(parent: int, j: int, rows: list[int]) -> None:
            if all(table[k] for k in rows):
                out.append(parent)
                return
            step = 1 << j
            if all(table[k] == table[k | step] for k in rows if not k & step):
                walk(parent, j + 1, rows)  # nothing here depends on bit j: no block for it
                return
            acquisition = self.writer[clbits[j]][0]
            for value in (0, 1):
                sub = [k for k in rows if (k >> j) & 1 == value]
                if any(table[k] for k in sub):
                    walk(self.block_id(acquisition, value, parent), j + 1, sub)

        if any(table):
            walk(-1, 0, list(range(len(table))))
        if len(self.out.blocks) > _MAX_BLOCKS:
            self.fail(f"the conditions of this circuit need {len(self.out.blocks)} conditional "
                      f"blocks; at most {_MAX_BLOCKS} are supported", instruction="if_else")
        self.leaf_cache[key] = out
        return out

    def wait(self) -> int:
        """The feed-forward latency on the controller's timing grid (samples)."""
        return self.tables.channels.timing.pad(self.latency)

    def reset(self, q: int) -> None:
        """Active reset of ``q``: ``reset_rounds`` times a measurement, the feed-forward
        latency, and an x played only if the result was 1."""
        x = QuantumCircuit(1)
        x.x(0)
        for _ in range(reset_rounds(self.tables.snapshot, q)):
            acquisition = self.n_acq
            row = self.measure(q, -1)
            self.mid.add(row)
            self.pending_measure.pop(q, None)
            self.add((0, self.wait(), 0.0, -1), (q,))
            eid, duration, param = self.gate(x.data[0], (q,))
            container = self.add((0, duration, 0.0, -1), (q,))
            self.touch((q,), container)
            self.add((eid, duration, param, -1), (q,), container, 0,
                     self.block_id(acquisition, 1, -1))

    def condition(self, inst, qubits: tuple, cmap: dict) -> Condition:
        """The condition of an if_else as (clbits it reads, truth table;
        ``conditions.truth_table``) over the bits an earlier measurement wrote (``cmap``: the
        branch's classical bits as the circuit's): a bit none wrote holds 0, as every
        classical bit starts (OpenQASM, Qiskit), so with no bit left the condition is decided
        here. Refuses what the controller's blocks cannot decide exactly."""
        def index(bit) -> int:
            return self.cindex[cmap.get(bit, bit)]

        try:
            bits, table = truth_table(inst.operation.condition,
                                      zero=lambda bit: index(bit) not in self.writer)
        except ConditionError as exc:
            self.fail(f"if_else on qubits {qubits}: {exc}", qubits, "if_else")
        return tuple(index(bit) for bit in bits), tuple(table)

    def if_else(self, inst, qubits: tuple) -> None:
        if self.latency is None:
            self.fail("if_else needs feed-forward, and the controller states none in its "
                      "capabilities", qubits, "if_else")
        read: dict[int, None] = {}  # every clbit a condition reads, outer and nested
        members, length = self.conditional(inst, inst.qubits, inst.clbits, {}, 0, (), read)
        # One latency wait on the bits it reads, then the container on its qubits. Both hold a
        # resource of the container's own, not the bits: if_else's that read the same bits,
        # none written again since, share one wait and may play at once.
        reader = self.out.num_resources
        self.out.num_resources += 1
        for c in read:
            self.mid.add(self.writer[c][1])
        bits = tuple(sorted(read))
        wait = self.waited.get(bits)
        if bits and wait is None:  # a condition decided when compiling waits for nothing
            self.waited[bits] = self.add((0, self.wait(), 0.0, -1),
                                         (*(self.nq + c for c in bits), reader))
        elif bits:
            self.out.resources[wait] = (*self.out.resources[wait], reader)
        container = self.add((0, length, 0.0, -1), (*qubits, reader))
        self.touch(qubits, container)
        for row, resources, start, path in members:  # the true branch's first
            for bid in self.leaves(path):
                self.add(row, resources, container, start, bid)

    def conditional(self, inst, outer_qubits, outer_clbits, cmap: dict, start: int,
                    path: tuple, read: dict[int, None]) -> tuple[list, int]:
        """The members of an if_else (at ``start`` in its enclosing branch, under the
        conditions ``path``): [(row, qubits, start offset, path)], where a member's path lists
        (condition, branch taken) from the outermost if_else in; and its length in samples.
        ``outer_qubits``, ``outer_clbits``: its bits as the circuit's; ``cmap``: the enclosing
        branch's classical bits as the circuit's."""
        qubits = tuple(self.qindex[q] for q in outer_qubits)
        condition = self.condition(inst, qubits, cmap)
        read.update(dict.fromkeys(condition[0]))
        branches = []
        for body, holds in zip(inst.operation.blocks, (True, False), strict=False):
            if not condition[0] and condition[1][0] != holds:
                continue  # decided when compiling: a branch that never plays reads nothing
            inner = dict(zip(body.clbits, outer_clbits, strict=True))
            branches.append(self.branch(body, outer_qubits, inner, start,
                                        (*path, (condition, holds)), read))
        length = max((size for _, size in branches), default=0)
        members = []
        for found, size in branches:  # ALAP: a shorter branch ends where the container does
            shift = length - size if self.branches_alap else 0
            members.extend((row, qubits, at + shift, p) for row, qubits, at, p in found)
        return members, length

    def branch(self, body: QuantumCircuit, outer_qubits, cmap: dict, start: int, path: tuple,
               read: dict[int, None]) -> tuple[list, int]:
        """The plays of one branch, from ``start``: ([(row, qubits, start offset, path)],
        length in samples); ``cmap``: the branch's classical bits as the circuit's."""
        local = {bit: outer for bit, outer in zip(body.qubits, outer_qubits, strict=True)}
        avail: dict[int, int] = {}
        members = []
        placed = []  # (qubits, ASAP offset, duration, its members' slice); barriers too
        for inst in body.data:
            name = inst.operation.name
            outer = tuple(local[q] for q in inst.qubits)
            qubits = tuple(self.qindex[q] for q in outer)
            if name not in _BRANCH_OPS:
                self.fail(f"{name!r} on qubits {qubits} inside an if_else branch is not "
                          "supported: branches hold native gates (rz, sx, sy, x, cz), delays, "
                          "barriers and if_else only; not pulse gates, measurements or resets "
                          "(acquisitions are unconditional)", qubits, name)
            at = max((avail.get(q, 0) for q in qubits), default=0)
            first = len(members)
            if name == "barrier":
                placed.append((qubits, at, 0, slice(first, first)))
                for q in qubits:
                    avail[q] = at
                continue
            if name == "if_else":
                clbits = tuple(cmap.get(c, c) for c in inst.clbits)
                found, duration = self.conditional(inst, outer, clbits, cmap, start + at, path,
                                                   read)
                members.extend(found)
            else:
                eid, duration, param = self.gate(inst, qubits)
                if eid:
                    members.append(((eid, duration, param, -1), qubits, start + at, path))
            placed.append((qubits, at, duration, slice(first, len(members))))
            for q in qubits:
                avail[q] = at + duration
        size = max(avail.values(), default=0)
        if self.branches_alap:
            _as_late_as_possible(members, placed, size)
        return members, size

    def finish(self) -> Lowered:
        out = self.out
        tables = self.tables
        delays = set(self.delays)
        padding = padding_delays(out.resources, delays, self.barriers)
        self.mid |= held_readouts(  # a final readout that a barrier puts before later ops
            out.resources, delays, self.barriers,
            {row: q for q, row in self.pending_measure.items()})
        for i, (eid, duration, param, c) in enumerate(out.rows):
            if eid != -1:
                continue
            q = out.resources[i][0]
            mid = i in self.mid
            name = "measure_mid" if mid else "measure"
            out.rows[i] = (tables.effect(name, (q,), duration, self.circuit), duration, param, c)
            if mid and c >= 0:
                out.resources[i] = (q, self.nq + c)
        acquisition = 0
        for i, (eid, *_rest) in enumerate(out.rows):
            if eid >= 0 and tables.effect_rows[eid][11] >= 0:  # pulse gates do not acquire
                if i in self.mid:
                    out.discriminated.setdefault(acquisition, False)
                acquisition += 1
        out.delays = [i for i in self.delays if i not in padding]
        if padding:
            out = with_rows(out, [i for i in range(len(out.rows)) if i not in padding])
        out.used = set(self.last_used)
        out.early = early_runs(out, self.tables, self.nq)
        return out


def _as_late_as_possible(members: list, placed: list, size: int) -> None:
    """Move a branch's ops (``placed``: qubits, ASAP offset, duration and slice of
    ``members`` of each, in circuit order) as late as the ops after them on their qubits allow
    within ``size`` samples; a barrier holds its qubits together; in place."""
    late: dict[int, int] = {}  # qubit -> where the next op on it starts
    for qubits, at, duration, rows in reversed(placed):
        end = min((late.get(q, size) for q in qubits), default=size)
        begin = end - duration
        for i in range(rows.start, rows.stop):  # a nested if_else moves whole
            row, q, offset, path = members[i]
            members[i] = (row, q, offset + begin - at, path)
        for q in qubits:
            late[q] = begin


def early_runs(out: Lowered, tables: Tables, num_qubits: int) -> list[bool]:
    """Per row of ``out``: whether it is part of a run of single-qubit ops (gates, delays)
    between a two-qubit gate on its qubit and a measurement of that qubit. ALAP scheduling
    (``kernels.layout_kernel``'s ``op_early``) plays such a run right after what precedes it
    instead of right before the measurement: the qubit then waits for the other qubits'
    readout and feed-forward in its measurement basis, where static ZZ and detuning (diagonal)
    change nothing, rather than in the superposition a two-qubit gate left it in. Other runs
    stay ALAP: a qubit waits in |0> before its first gate. A barrier or a zero delay does not
    end a run; it plays early with the runs of all its qubits when each of them is in one
    (moving a zero-length op earlier delays nothing)."""
    early = [False] * len(out.rows)
    containers = {p for p in out.parent if p >= 0}
    run: dict[int, list[int]] = {}  # qubit -> its current run after a two-qubit gate
    for i, ((eid, duration, _, _), resources) in enumerate(zip(out.rows, out.resources,
                                                              strict=True)):
        if out.parent[i] >= 0:
            continue
        qubits = [r for r in resources if r < num_qubits]
        measures = eid >= 0 and tables.effect_rows[eid][11] >= 0
        if eid == 0 and duration == 0 and i not in containers:
            # a barrier or a zero delay: the runs go on across it, and it moves with them
            if qubits and all(q in run for q in qubits):
                for q in qubits:
                    run[q].append(i)
            continue
        if measures:
            for q in qubits:
                for j in run.pop(q, ()):
                    early[j] = True
        elif len(qubits) == len(resources) == 1 and i not in containers:
            if qubits[0] in run:
                run[qubits[0]].append(i)
        elif len(qubits) == len(resources) > 1 and i not in containers and eid != 0:
            for q in qubits:
                run[q] = []  # a two-qubit gate: a run may start after it
        else:  # a conditional block, a pulse gate, a reset: no run across it
            for q in qubits:
                run.pop(q, None)
    return early


def lower_dynamic(circuit: QuantumCircuit, tables: Tables, *, latency_samples: int | None,
                  active_reset: bool,
                  pulse_gates: Mapping[str, Mapping[tuple, PulseGate]] | None = None,
                  branches_alap: bool = True) -> Lowered:
    """Read ``circuit`` (physical qubits) into op rows with conditional blocks (module
    docstring). ``latency_samples``: the controller's feed-forward latency (None: it has no
    feed-forward, so if_else is refused and reset is passive); ``active_reset``: reset by
    measurement and a conditional x where possible; ``pulse_gates``: the definitions of the
    circuit's pulse gates by name and qubits (``labqpu.pulse.gates``); ``branches_alap``:
    if_else branches scheduled ALAP (else ASAP) within their container."""
    return _Reader(circuit, tables, latency_samples, active_reset, pulse_gates or {},
                   branches_alap).read()
