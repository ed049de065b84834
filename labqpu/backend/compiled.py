"""Programs compiled before, kept for circuits that are run again.

A lab runs the same circuit again and again: a check before each calibration step, a
benchmark, a user's loop. What the compiler (and ``run()``'s check against the Target) makes of
a circuit depends only on its instructions, the calibration snapshot and Target, the pulse
gates, the compile options and the rack, so a circuit run again under the same snapshot gets
the program compiled before, with a header of its own (name, classical registers, metadata:
not part of the program's content hash). The key reads the circuit exactly: each
instruction's name, its parameters to the bit, a delay's unit, its qubit and classical-bit
indices, and the scheduling stage's op start times when a stage timed it. Circuits with
control flow, unbound parameters or parameters that are not numbers are compiled every time:
their programs depend on more than this key reads; so is a circuit with a non-finite global
phase, which no program comes from (``run()`` refuses it as it compiles it). Jobs of more
than :data:`MAX_CIRCUITS` circuits (sweeps, which ``labqpu.pulse.batch`` compiles once per
shape) and circuits of more than :data:`MAX_INSTRUCTIONS` instructions (whose key costs about
what compiling them does) neither read nor fill it, and after :data:`MISS_STREAK` jobs in a
row that found nothing in it, the next :data:`SKIP_JOBS` jobs do not read it.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from qiskit.circuit import ControlFlowOp, ParameterExpression, QuantumCircuit

from labqpu.pulse.compiler import program_header
from labqpu.pulse.program import PulseProgram

#: Programs kept (least recently used dropped first).
MAX_PROGRAMS = 256
#: Jobs with more circuits than this are compiled without the cache.
MAX_CIRCUITS = 16
#: Circuits with more instructions than this are compiled without it: reading a key costs
#: about as much per instruction as compiling (~2 us).
MAX_INSTRUCTIONS = 64
#: After this many jobs in a row that found nothing in the cache, the next ``SKIP_JOBS`` jobs
#: read no key: work that never runs a circuit twice (new angles every time) pays for keys on
#: one job in eight.
MISS_STREAK = 16
SKIP_JOBS = 112


def circuit_key(circuit: QuantumCircuit) -> tuple | None:
    """What the compiler reads of ``circuit``, exactly, as a hashable key; None for a circuit
    the cache does not hold (control flow, unbound or non-numeric parameters, a non-finite
    global phase: the key leaves the phase out, and ``run()``'s check refuses it)."""
    phase = circuit.global_phase
    if isinstance(phase, float) and not math.isfinite(phase):
        return None
    qubits = {q: i for i, q in enumerate(circuit.qubits)}
    clbits = {c: i for i, c in enumerate(circuit.clbits)}
    rows = []
    for inst in circuit.data:
        op = inst.operation
        if isinstance(op, ControlFlowOp):
            return None
        params = []
        for p in op.params:
            if isinstance(p, ParameterExpression):
                if p.parameters:
                    return None
                p = complex(p)
            if isinstance(p, bool) or not isinstance(p, int | float | complex):
                try:  # numpy scalars; arrays and other objects are not keyed
                    p = p.item()
                except (AttributeError, ValueError):
                    return None
                if not isinstance(p, int | float | complex):
                    return None
            # floats by their bits: -0.0 and 0.0 make programs with different bytes
            params.append(p.hex() if isinstance(p, float)
                          else (p.real.hex(), p.imag.hex()) if isinstance(p, complex) else p)
        rows.append((op.name, tuple(params), getattr(op, "unit", None),
                     tuple(qubits[q] for q in inst.qubits),
                     tuple(clbits[c] for c in inst.clbits)))
    try:
        starts = tuple(circuit.op_start_times)
    except AttributeError:  # not timed by a scheduling stage
        starts = None
    return circuit.num_qubits, circuit.num_clbits, tuple(rows), starts


class CompiledPrograms:
    """Programs by circuit key and context: the objects they were compiled against (snapshot,
    Target, pulse gates, channels), compared by identity, and option values, compared by
    value. At most ``capacity`` programs, least recently used dropped first. Thread-safe."""

    def __init__(self, capacity: int = MAX_PROGRAMS) -> None:
        self._capacity = capacity
        #: (ids of the objects, option values, circuit key) -> (the objects, program).
        self._programs: OrderedDict[tuple, tuple[tuple, PulseProgram]] = OrderedDict()
        self._lock = threading.Lock()
        #: Circuits answered from the cache, and compiled, since the backend was made.
        self.hits = 0
        self.misses = 0
        self._streak = 0  # jobs in a row that missed
        self._skip = 0  # jobs still to compile without reading keys

    def compile(self, circuits: Sequence[QuantumCircuit], objects: tuple, values: tuple,
                compile_all: Callable[[], list[PulseProgram]]) -> list[PulseProgram]:
        """The programs of ``circuits`` compiled against ``objects`` with options ``values``:
        from the cache when every circuit is in it, else ``compile_all()`` (one program per
        circuit, which may raise), whose programs it then keeps."""
        if len(circuits) > MAX_CIRCUITS or any(len(c.data) > MAX_INSTRUCTIONS for c in circuits):
            return compile_all()
        with self._lock:
            skip = self._skip > 0
            self._skip = max(self._skip - 1, 0)
        if skip:
            return compile_all()
        ids = tuple(id(o) for o in objects)
        keys = [(ids, values, key) for key in map(circuit_key, circuits)]
        with self._lock:
            found = [None if key[2] is None else self._programs.get(key) for key in keys]
            if all(entry is not None and all(a is b for a, b in zip(entry[0], objects,
                                                                     strict=True))
                   for entry in found):
                for key in keys:
                    self._programs.move_to_end(key)
                self.hits += len(keys)
                self._streak = 0
                return [entry[1].with_header(program_header(circuit))
                        for entry, circuit in zip(found, circuits, strict=True)]
        programs = compile_all()
        with self._lock:
            self.misses += len(keys)
            self._streak += 1
            if self._streak >= MISS_STREAK:
                self._streak, self._skip = 0, SKIP_JOBS
            for key, program in zip(keys, programs, strict=True):
                if key[2] is not None:
                    self._programs[key] = (objects, program)
                    self._programs.move_to_end(key)
            while len(self._programs) > self._capacity:
                self._programs.popitem(last=False)
        return programs
