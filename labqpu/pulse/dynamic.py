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
* **Latency.** An ``if_else`` reading clbit c is a *container* op on its qubits and on c,
  preceded by a wait of the controller's feed-forward latency (on the timing grid) on c: the
  container starts no earlier than the end of the acquisition that last wrote c plus the
  latency, in ALAP as in ASAP. The container lasts as long as the longer branch, so later
  gates see one timing whichever branch runs.
* **Branches.** Each branch is scheduled ASAP from the container's start; its ops are
  members of a conditional block: (acquisition that last wrote c, value) for the true
  branch, (same acquisition, 1 - value) for the false one. Plays keep the unconditional
  frame; a virtual Z or a cz phase correction in a branch becomes a phase shift in its block
  on the qubit's drive port, which the controller adds to every later play on that port in
  the shots where the block runs.
* **Conditions.** ``(Clbit, value)`` and ``(ClassicalRegister, value)`` of a one-bit register
  compile exactly. A register of several bits would need a block that runs only when several
  results agree; the controller's blocks read one result each, so such conditions, and
  classical expressions, are refused rather than approximated. So are an ``if_else`` on a bit
  no earlier measurement wrote, measurements, resets and nested control flow inside a branch
  (acquisitions are unconditional and blocks do not nest), and loops.
* **Active reset.** ``reset`` on a qubit that ``tables.active_reset_possible`` allows, with
  feed-forward: a mid-circuit measurement into no classical bit (clbit -1: its result is not
  reported), the latency, then an x pulse in the block (that acquisition, 1). Otherwise the
  passive wait of ``reset_duration_s``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from qiskit.circuit import ClassicalRegister, Clbit, QuantumCircuit

from labqpu.errors import CompilationError
from labqpu.pulse.gates import PulseGate, lower
from labqpu.pulse.tables import (
    Tables,
    active_reset_possible,
    duration_samples,
    reset_rounds,
    samples_of,
)

#: Instructions a branch of ``if_else`` may hold.
_BRANCH_OPS = frozenset({"rz", "sx", "sy", "x", "cz", "delay", "barrier"})


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
    blocks: list[tuple[int, int]] = field(default_factory=list)  # (acquisition, value)
    #: acquisition index -> True when a block reads it (a discriminator is required)
    discriminated: dict[int, bool] = field(default_factory=dict)
    #: effect rows of this circuit's pulse gates (a row's effect -2 - j is local row j; its
    #: ``wave`` -1 - k is local waveform k), kept out of the shared tables
    local_rows: list[tuple] = field(default_factory=list)
    local_waves: list[np.ndarray] = field(default_factory=list)


def _bit_name(circuit: QuantumCircuit, bit: Clbit) -> str:
    loc = circuit.find_bit(bit)
    if loc.registers:
        reg, i = loc.registers[0]
        return f"{reg.name}[{i}] (clbit {loc.index})"
    return f"clbit {loc.index}"


class _Reader:
    """One pass over a circuit's instructions, building a ``Lowered``."""

    def __init__(self, circuit: QuantumCircuit, tables: Tables, latency_samples: int | None,
                 active_reset: bool, pulse_gates: Mapping[str, Mapping[tuple, PulseGate]]
                 ) -> None:
        self.pulse_gates = pulse_gates
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
        self.n_acq = 0
        self.delays: list[int] = []
        self.last_used: dict[int, int] = {}
        self.block_ids: dict[tuple[int, int], int] = {}

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
                raise CompilationError(
                    f"circuit {self.circuit.name!r}: {name} on {qubits} has an unbound "
                    "parameter; bind all parameters before run()", circuit=self.circuit.name,
                    qubits=qubits, instruction=name) from exc
        return tables.effect(name, qubits, duration, self.circuit), duration, param

    def read(self) -> Lowered:
        for inst in self.circuit.data:
            name = inst.operation.name
            qubits = tuple(self.qindex[q] for q in inst.qubits)
            if name == "barrier":
                self.add((0, 0, 0.0, -1), qubits)
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
        try:
            values = [float(v) for v in inst.operation.params]
        except TypeError:
            self.fail(f"pulse gate {name!r} on {qubits} has an unbound parameter; bind all "
                      "parameters before run()", qubits, name)
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
        self.n_acq += 1
        self.out.measured.add(q)
        return row

    def block_id(self, acquisition: int, value: int) -> int:
        key = (acquisition, value)
        bid = self.block_ids.get(key)
        if bid is None:
            bid = self.block_ids[key] = len(self.out.blocks)
            self.out.blocks.append(key)
        self.out.discriminated[acquisition] = True
        return bid

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
                     self.block_id(acquisition, 1))

    def condition(self, inst) -> tuple[int, int]:
        """(clbit, value) of an if_else's condition; refuses what one result cannot decide."""
        target, value = inst.operation.condition if isinstance(
            inst.operation.condition, tuple) else (inst.operation.condition, None)
        if isinstance(target, ClassicalRegister):
            if len(target) != 1:
                self.fail(
                    f"if_else on register {target.name!r} == {value}: the controller's "
                    "feed-forward reads one measurement result per conditional block, so a "
                    f"condition on {len(target)} bits cannot be expressed exactly; condition "
                    "on a single classical bit instead", instruction="if_else")
            target = target[0]
        if not isinstance(target, Clbit) or value is None:
            self.fail(f"if_else with the condition {inst.operation.condition!r}: only a "
                      "single classical bit (or a one-bit register) compared with 0 or 1 can "
                      "be decided by the controller's feed-forward", instruction="if_else")
        return self.cindex[target], int(value)

    def if_else(self, inst, qubits: tuple) -> None:
        if self.latency is None:
            self.fail("if_else needs feed-forward, and the controller states none in its "
                      "capabilities", qubits, "if_else")
        c, value = self.condition(inst)
        if c not in self.writer:
            self.fail(f"if_else on classical bit {_bit_name(self.circuit, self.circuit.clbits[c])}"
                      ", which no earlier measurement writes", qubits, "if_else")
        acquisition, measure_row = self.writer[c]
        self.mid.add(measure_row)
        branches = []
        for body, val in zip(inst.operation.blocks, (value, 1 - value), strict=False):
            branches.append((self.branch(body, inst.qubits), val))
        length = max((b[1] for b, _ in branches), default=0)
        clbit_resource = self.nq + c
        self.add((0, self.wait(), 0.0, -1), (clbit_resource,))
        container = self.add((0, length, 0.0, -1), (*qubits, clbit_resource))
        self.touch(qubits, container)
        for (members, _), val in branches:
            if members:
                bid = self.block_id(acquisition, val)
                for row, resources, start in members:
                    self.add(row, resources, container, start, bid)

    def branch(self, body: QuantumCircuit, outer_qubits) -> tuple[list, int]:
        """The plays of one branch: ([(row, qubits, start offset)], length in samples)."""
        local = {bit: self.qindex[outer] for bit, outer in zip(body.qubits, outer_qubits,
                                                                strict=True)}
        avail: dict[int, int] = {}
        members = []
        for inst in body.data:
            name = inst.operation.name
            qubits = tuple(local[q] for q in inst.qubits)
            if name not in _BRANCH_OPS:
                self.fail(f"{name!r} on qubits {qubits} inside an if_else branch is not "
                          "supported: branches hold native gates (rz, sx, sy, x, cz), delays "
                          "and barriers only; not pulse gates, measurements or resets "
                          "(acquisitions are unconditional and conditional blocks do not nest)",
                          qubits, name)
            start = max((avail.get(q, 0) for q in qubits), default=0)
            if name == "barrier":
                for q in qubits:
                    avail[q] = start
                continue
            eid, duration, param = self.gate(inst, qubits)
            for q in qubits:
                avail[q] = start + duration
            if eid:
                members.append(((eid, duration, param, -1), qubits, start))
        return members, max(avail.values(), default=0)

    def finish(self) -> Lowered:
        out = self.out
        tables = self.tables
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
        # a delay after which its qubit does nothing more is a scheduler's padding
        padding = {i for i in self.delays
                   if all(self.last_used.get(q, -1) < i for q in out.resources[i])}
        if padding:
            keep = [i for i in range(len(out.rows)) if i not in padding]
            new_index = {old: new for new, old in enumerate(keep)}
            out.rows = [out.rows[i] for i in keep]
            out.resources = [out.resources[i] for i in keep]
            out.parent = [new_index[out.parent[i]] if out.parent[i] >= 0 else -1 for i in keep]
            out.offset = [out.offset[i] for i in keep]
            out.block = [out.block[i] for i in keep]
        out.used = set(self.last_used)
        return out


def lower_dynamic(circuit: QuantumCircuit, tables: Tables, *, latency_samples: int | None,
                  active_reset: bool,
                  pulse_gates: Mapping[str, Mapping[tuple, PulseGate]] | None = None) -> Lowered:
    """Read ``circuit`` (physical qubits) into op rows with conditional blocks (module
    docstring). ``latency_samples``: the controller's feed-forward latency (None: it has no
    feed-forward, so if_else is refused and reset is passive); ``active_reset``: reset by
    measurement and a conditional x where possible; ``pulse_gates``: the definitions of the
    circuit's pulse gates by name and qubits (``labqpu.pulse.gates``)."""
    return _Reader(circuit, tables, latency_samples, active_reset, pulse_gates or {}).read()
