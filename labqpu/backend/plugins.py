"""labqpu's transpiler stage plugins: pulse-aware translation and ALAP scheduling with DD.

Both are registered as entry points named ``labqpu`` (groups ``qiskit.transpiler.translation``
and ``qiskit.transpiler.scheduling``, see ``pyproject.toml``) and ``LabBackend`` names them in
``get_translation_stage_plugin()`` / ``get_scheduling_stage_plugin()``, so
``transpile(qc, backend)`` uses them. Any other plugin is still chosen by name:
``transpile(qc, backend, translation_method="translator", scheduling_method="alap")``.

Translation (:class:`LabTranslationPlugin`): Qiskit's own translation (unitary and high-level
synthesis, then ``BasisTranslator`` with the ``SessionEquivalenceLibrary``, which holds the sy
rules of :mod:`labqpu.backend.gates`), followed by :class:`PulseEfficient1q`. That pass
re-synthesises every single-qubit run into rz/sx/sy/x with the fewest *physical* pulses (rz is a
frame change: free) and carries Pauli-X-like runs through ``cz`` (``cz (X (x) I) =
(X (x) Z) cz``), so that they merge with the next run on the qubit instead of costing a pulse of
their own. docs/transpilation.md has the pulse counts against Qiskit's default translation.

Scheduling (:class:`LabSchedulingPlugin`): time-unit conversion, ALAP analysis with the
calibrated durations of the Target, timed as labqpu's pulse compiler times the circuit
(:class:`CompilerALAP`: every final measurement starts when the last gate has ended, so the
schedule Qiskit pads is the one that plays), alignment to the Target's timing constraints, then
:class:`IdleDynamicalDecoupling`, which fills idle windows with a staggered echo of the
calibrated x pulse (``labqpu.pulse.echo``: x, x at 1/4 and 3/4 of the slack on one colour of the
coupling graph, four x at odd eighths on the other, so that two coupled qubits echoed together
refocus their mutual ZZ) and leaves free evolution alone: a ``delay`` written by the user
(a T1, Ramsey or ZZRamsey wait) is physics, not idle time, for its qubit and for the qubits
coupled to it. A circuit with control flow (``if_else``, ``reset`` is not control flow) skips
this stage: Qiskit's scheduling passes cannot time a conditional block, and labqpu's pulse
compiler schedules such circuits itself, honouring the controller's feed-forward latency
(docs/transpilation.md, "Dynamic circuits"), and echoes their idle windows itself
(``labqpu.pulse.echo.decouple``). A static circuit with a delay whose duration is a parameter
skips it too (:class:`UnboundDelays`): the compiler times each bound circuit and echoes its
idle windows as a dynamic circuit's.
"""

from __future__ import annotations

import bisect
import cmath
import math

import numpy as np
from qiskit.circuit import CONTROL_FLOW_OP_NAMES, Delay, Gate, ParameterExpression
from qiskit.circuit.library import RZGate, SXGate, XGate
from qiskit.converters import circuit_to_dag
from qiskit.dagcircuit import DAGCircuit, DAGInNode, DAGOpNode, DAGOutNode
from qiskit.passmanager import ConditionalController
from qiskit.synthesis import OneQubitEulerDecomposer
from qiskit.transpiler import PassManager, Target
from qiskit.transpiler.basepasses import AnalysisPass, TransformationPass
from qiskit.transpiler.exceptions import TranspilerError
from qiskit.transpiler.passes import (
    ALAPScheduleAnalysis,
    ApplyLayout,
    ConstrainedReschedule,
    ContainsInstruction,
    InstructionDurationCheck,
    PadDynamicalDecoupling,
    TimeUnitConversion,
)
from qiskit.transpiler.passmanager_config import PassManagerConfig
from qiskit.transpiler.preset_passmanagers import common
from qiskit.transpiler.preset_passmanagers.plugin import PassManagerStagePlugin

from labqpu.backend.feedforward_layout import OneControllerFeedForward
from labqpu.backend.gates import SYGate
from labqpu.errors import CompilationError
from labqpu.pulse.echo import echo_colours, echo_segments
from labqpu.pulse.gates import RESERVED_NAMES
from labqpu.pulse.shapes import brief, finite
from labqpu.pulse.timing import held_readouts, last_that_matter, padding_delays

#: Native gates that play one physical pulse each (rz is a frame change and plays nothing).
PULSE_GATES = frozenset({"sx", "sy", "x", "cz"})
#: Tolerance on Euler angles and matrix entries when classifying a single-qubit unitary.
_ATOL = 1e-9
_Z = np.diag([1.0, -1.0]).astype(complex)
_ZYZ = OneQubitEulerDecomposer("ZYZ")


def count_pulses(circuit) -> int:
    """Physical pulses a native circuit plays: one per sx, sy, x and cz (rz is virtual;
    measure, reset, delay and barrier are not counted)."""
    ops = circuit.count_ops()
    return int(sum(n for name, n in ops.items() if name in PULSE_GATES))


def _wrap(angle: float) -> float:
    """``angle`` in (-pi, pi]."""
    a = math.remainder(angle, 2 * math.pi)
    return math.pi if math.isclose(a, -math.pi, abs_tol=_ATOL) else a


def _read_only(gate: Gate) -> np.ndarray:
    m = np.asarray(gate.to_matrix(), dtype=complex)
    m.flags.writeable = False
    return m


_PULSE_CLASSES = {"sx": SXGate, "sy": SYGate, "x": XGate}
#: The fixed pulses' matrices (Qiskit's conventions: ``SXGate`` carries exp(i pi/4)).
_PULSE_MATRICES = {name: _read_only(cls()) for name, cls in _PULSE_CLASSES.items()}


def _rz_phases(angle: float) -> np.ndarray:
    """The diagonal of rz(angle): (e^{-i angle/2}, e^{i angle/2})."""
    return np.array([cmath.exp(-0.5j * angle), cmath.exp(0.5j * angle)])


def _matrix(seq: list[tuple[str, float]]) -> np.ndarray:
    """The product of ``seq`` ((name, angle) in circuit order): rz(a) = diag(e^{-ia/2},
    e^{ia/2}), the pulses from :data:`_PULSE_MATRICES`."""
    m = np.eye(2, dtype=complex)
    for name, angle in seq:
        m = _rz_phases(angle)[:, None] * m if name == "rz" else _PULSE_MATRICES[name] @ m
    return m


def _clean(seq: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Wrap rz angles and drop the ones that do nothing."""
    out = []
    for name, angle in seq:
        if name == "rz":
            angle = _wrap(angle)
            if abs(angle) < _ATOL:
                continue
        out.append((name, angle))
    return out


def synthesize_1q(unitary: np.ndarray, available: frozenset[str],
                  errors: dict[str, float] | None = None) -> tuple[list[tuple[str, float]], float]:
    """A circuit for ``unitary`` in rz/sx/sy/x with the fewest physical pulses.

    Returns ``(sequence, global_phase)``: ``sequence`` is a list of ``(name, angle)`` in circuit
    order (the angle matters for rz only) and ``unitary = exp(i global_phase) * product``.
    0 pulses when the unitary is diagonal, 1 when its ZYZ polar angle is pi/2 (sx or sy, the
    fewer frame changes first, then the smaller error in ``errors``) or pi (x), 2 otherwise.
    ``available`` must contain rz and sx.
    """
    theta, phi, lam, _ = _ZYZ.angles_and_phase(unitary)
    errors = errors or {}
    candidates: list[list[tuple[str, float]]] = []
    if abs(theta) < _ATOL:
        candidates.append([("rz", phi + lam)])
    elif abs(theta - math.pi) < _ATOL and "x" in available:
        # RY(pi) = RZ(pi/2) X RZ(-pi/2); X RZ(t) = RZ(-t) X moves both frame changes after x.
        candidates.append([("x", 0.0), ("rz", phi - lam + math.pi)])
    elif abs(theta - math.pi / 2) < _ATOL:
        if "sy" in available:
            candidates.append([("rz", lam), ("sy", 0.0), ("rz", phi)])
        candidates.append([("rz", lam - math.pi / 2), ("sx", 0.0), ("rz", phi + math.pi / 2)])
    if not candidates:
        # U = RZ(phi + pi) SX RZ(theta + pi) SX RZ(lam), up to a global phase.
        candidates.append([("rz", lam), ("sx", 0.0), ("rz", theta + math.pi), ("sx", 0.0),
                           ("rz", phi + math.pi)])

    def cost(seq: list[tuple[str, float]]) -> tuple:
        pulses = [n for n, _ in seq if n != "rz"]
        err = sum(errors.get(n) or 0.0 for n in pulses)
        return (len(pulses), len(seq), err)

    best = min((_clean(c) for c in candidates), key=cost)
    overlap = np.vdot(_matrix(best), unitary)  # tr(M^dag U)
    return best, cmath.phase(overlap)


def _gate(name: str, angle: float) -> Gate:
    return RZGate(angle) if name == "rz" else _PULSE_CLASSES[name]()


class PulseGatePlacement(AnalysisPass):
    """Stops a transpilation whose layout put a pulse gate (``LabBackend.add_pulse_gate``) on
    qubits it has no definition for, with a ``TranspilerError`` that says where it is defined;
    Qiskit's synthesis would otherwise fail with "unable to synthesize". A pulse gate is a
    pulse program on particular qubits: lay the circuit out with ``initial_layout``."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.names = frozenset(target.operation_names) - RESERVED_NAMES  # the pulse gates

    def run(self, dag: DAGCircuit) -> None:
        if not self.names:
            return
        for node in dag.op_nodes():
            name = node.op.name
            if name not in self.names:
                continue
            qargs = tuple(dag.find_bit(q).index for q in node.qargs)
            if not self.target.instruction_supported(name, qargs):
                defined = sorted(self.target.qargs_for_operation_name(name) or ())
                raise TranspilerError(
                    f"pulse gate {name!r} landed on physical qubits {qargs}, but it is defined "
                    f"only on {defined}; lay the circuit out so that it lands there "
                    "(transpile(..., initial_layout=...)), or define it on these qubits too")


class PulseEfficient1q(TransformationPass):
    """Re-synthesise single-qubit runs with the fewest physical pulses, across ``cz``.

    Walks the circuit once, keeping per qubit the not-yet-emitted product of its single-qubit
    gates. At a ``cz``, a pending product that is diagonal (rz-like) or anti-diagonal
    (x-like) is carried through, using ``cz (A (x) B) = (-1)^(a b) (A Z^b (x) B Z^a) cz`` where
    ``a``/``b`` say whether A/B are x-like; any other pending product is emitted before the
    ``cz`` by :func:`synthesize_1q`. Everything else (measure, reset, delay, barrier, gates with
    unbound parameters, control flow) emits the pending products of its qubits first and is
    kept as it is. The circuit's unitary is unchanged (global phase included).
    Qubits where the Target lacks ``rz`` or ``sx`` are left untouched.
    """

    def __init__(self, target: Target, *, merge: bool = True) -> None:
        """``merge=False`` synthesises every single-qubit gate on its own (no merging of
        neighbours, nothing carried through cz): what optimization level 0 asks for, where a
        circuit of five x gates must still play five pulses."""
        super().__init__()
        self.target = target
        self.merge = merge

    def _basis(self, q: int) -> frozenset[str] | None:
        names = frozenset(n for n in ("rz", "sx", "sy", "x")
                          if self.target.instruction_supported(n, (q,)))
        return names if {"rz", "sx"} <= names else None

    def _errors(self, q: int, names: frozenset[str]) -> dict[str, float]:
        out = {}
        for n in names:
            props = self.target[n].get((q,))
            if props is not None and props.error is not None:
                out[n] = props.error
        return out

    def run(self, dag: DAGCircuit) -> DAGCircuit:
        """Return the re-synthesised DAG: one sweep forward, then one backward (x-like runs
        that reached a measurement or the end move back into the run before them)."""
        index = {q: dag.find_bit(q).index for q in dag.qubits}
        basis = {q: self._basis(index[q]) for q in dag.qubits}
        errors = {q: self._errors(index[q], b) for q, b in basis.items() if b is not None}
        # The DAG's nodes themselves: a node's op is built only if it is kept as it is.
        items = [(node, node.qargs, node.cargs) for node in dag.topological_op_nodes()]
        synthesised: dict = {}  # (qubit, product's bytes) -> synthesize_1q's answer
        items, phase1 = self._sweep(items, basis, errors, synthesised, forward=True)
        phase2 = 0.0
        if self.merge:
            items, phase2 = self._sweep(items, basis, errors, synthesised, forward=False)
        new = dag.copy_empty_like()
        for op, qargs, cargs in items:
            new.apply_operation_back(op.op if isinstance(op, DAGOpNode) else op, qargs, cargs,
                                     check=False)
        new.global_phase = dag.global_phase + phase1 + phase2
        return new

    def _sweep(self, items: list, basis: dict, errors: dict, synthesised: dict, *,
               forward: bool) -> tuple[list, float]:
        """One pass over ``items`` (op, qargs, cargs) in time order (``forward``) or against it.
        ``synthesised`` keeps :func:`synthesize_1q`'s answer per qubit and product (a circuit
        repeats its runs: an RB sequence has at most 24 different Cliffords per qubit).

        ``pending[q]`` is the product of the single-qubit gates of q not yet emitted; it acts
        after (forward) or before (backward) everything emitted on q so far. The identity
        ``cz (A (x) B) = (-1)^(a b) (A Z^b (x) B Z^a) cz`` holds in both readings.
        """
        out: list = []
        pending: dict = {}
        phase = 0.0

        def flush(q) -> None:
            nonlocal phase
            u = pending.pop(q, None)
            if u is None:
                return
            key = (q, u.tobytes())
            answer = synthesised.get(key)
            if answer is None:
                answer = synthesised[key] = synthesize_1q(u, basis[q], errors[q])
            seq, ph = answer
            phase += ph
            ops = [(_gate(name, angle), (q,), ()) for name, angle in seq]
            out.extend(ops if forward else reversed(ops))

        for op, qargs, cargs in (items if forward else reversed(items)):
            matrix = self._unitary(op, qargs, cargs)
            if matrix is not None and len(qargs) == 1 and basis[qargs[0]] is not None:
                q = qargs[0]
                u = pending.get(q)
                pending[q] = matrix if u is None else (matrix @ u if forward else u @ matrix)
                if not self.merge:
                    flush(q)
                continue
            if self.merge and op.name == "cz" and not op.params and \
                    all(basis[q] is not None for q in qargs):
                kinds = []
                for q in qargs:
                    kind = _pauli_kind(pending.get(q))
                    if kind is None:
                        flush(q)
                        kind = 0
                    kinds.append(kind)
                out.append((op, qargs, cargs))
                for q, other_kind in zip(qargs, reversed(kinds), strict=True):
                    if other_kind:
                        pending[q] = pending[q] @ _Z if q in pending else _Z.copy()
                if kinds[0] and kinds[1]:
                    phase += math.pi
                continue
            for q in qargs:
                flush(q)
            out.append((op, qargs, cargs))
        for q in list(pending):
            flush(q)
        return (out if forward else out[::-1]), phase

    @staticmethod
    def _unitary(op, qargs: tuple, cargs: tuple) -> np.ndarray | None:
        """The 2x2 matrix of a parameter-free single-qubit gate (an operation, or a DAG node:
        a standard gate's from the node, without building its op), else None."""
        if len(qargs) != 1 or cargs:
            return None
        if isinstance(op, DAGOpNode):
            matrix = op.matrix if op.is_standard_gate() and not op.is_parameterized() else None
            if matrix is not None:
                return matrix
            op = op.op
        if not isinstance(op, Gate):
            return None
        name = op.name
        if name == "rz" and isinstance(op, RZGate):
            angle = op.params[0]
            if isinstance(angle, float | int):
                return np.diag(_rz_phases(angle))
        fixed = _PULSE_MATRICES.get(name)
        if fixed is not None and isinstance(op, _PULSE_CLASSES[name]):
            return fixed
        if name == "delay" or op.is_parameterized():
            return None
        try:
            m = np.asarray(op.to_matrix(), dtype=complex)
        except Exception:  # a gate without a matrix (custom, opaque) is left as it is
            return None
        return m if m.shape == (2, 2) else None


def _pauli_kind(u: np.ndarray | None) -> int | None:
    """0 for no gate or a diagonal unitary, 1 for an anti-diagonal one, None otherwise."""
    if u is None:
        return 0
    if abs(u[0, 1]) < _ATOL and abs(u[1, 0]) < _ATOL:
        return 0
    if abs(u[0, 0]) < _ATOL and abs(u[1, 1]) < _ATOL:
        return 1
    return None


class FiniteParameters(AnalysisPass):
    """Refuse a gate whose parameter is NaN or infinite (``TranspilerError`` naming the gate,
    its qubits and the value), before any pass can merge it into a finite gate: Qiskit's
    single-qubit optimisation turns h, rz(nan), h into an x, so the circuit would otherwise run
    as something it does not say. Unbound parameters pass; control-flow bodies are checked.
    ``qubits`` names the qubits in the message: the device's (after layout, in the translation
    stage) or, before a layout, the circuit's (``"qubit"``)."""

    def __init__(self, qubits: str = "device qubit") -> None:
        super().__init__()
        self.qubits = qubits

    def run(self, dag: DAGCircuit, inside: str = "") -> None:
        """Raise on the first non-finite parameter of ``dag`` (in its control flow too)."""
        for node in dag.op_nodes():
            for value in node.op.params:
                if isinstance(value, (int, float, complex)) and not finite(value):
                    qubits = [dag.find_bit(q).index for q in node.qargs]
                    where = (f"inside the body of an {inside}" if inside else
                             f"on {self.qubits}{'s' if len(qubits) > 1 else ''} "
                             f"{', '.join(map(str, qubits))}")
                    raise TranspilerError(f"{node.op.name} {where} has the parameter "
                                          f"{brief(value)}: gate parameters must be finite "
                                          "numbers")
            for block in getattr(node.op, "blocks", ()):
                self.run(circuit_to_dag(block), inside=inside or node.op.name)


class LabTranslationPlugin(PassManagerStagePlugin):
    """Translation stage ``labqpu``: :class:`FiniteParameters`, Qiskit's translator and
    :class:`PulseEfficient1q`.

    At optimization level 0 each single-qubit gate is synthesised on its own, before the
    translator (the cheapest pulses for that gate; gates are neither merged nor moved). From
    level 1 the pass runs after the translator and merges runs, carrying x-like runs through
    cz. It never changes the circuit's unitary.
    """

    def pass_manager(self, pass_manager_config: PassManagerConfig,
                     optimization_level: int | None = None) -> PassManager:
        """The translation pass manager for ``pass_manager_config``."""
        cfg = pass_manager_config
        translate = common.generate_translation_passmanager(
            cfg.target, basis_gates=cfg.basis_gates, method="translator",
            approximation_degree=cfg.approximation_degree, coupling_map=cfg.coupling_map,
            unitary_synthesis_method=cfg.unitary_synthesis_method,
            unitary_synthesis_plugin_config=cfg.unitary_synthesis_plugin_config,
            hls_config=cfg.hls_config, qubits_initially_zero=cfg.qubits_initially_zero)
        if cfg.target is None:
            return translate
        placement = [FiniteParameters(), *feedforward_placement(cfg),
                     PulseGatePlacement(cfg.target)]
        if optimization_level == 0:
            # Gate by gate, before the translator: each written gate keeps its own pulses.
            return PassManager([*placement, PulseEfficient1q(cfg.target, merge=False),
                                translate.to_flow_controller()])
        return PassManager([*placement, translate.to_flow_controller(),
                            PulseEfficient1q(cfg.target)])


def feedforward_placement(cfg: PassManagerConfig) -> list:
    """:class:`OneControllerFeedForward` and the ``ApplyLayout`` of its ``post_layout``, for a
    Target of several controllers and no ``initial_layout`` (else none). Both stage plugins
    start with them: at optimization level 3 Qiskit's ``VF2PostLayout`` after the optimization
    stage may move the circuit again by error rates alone."""
    groups = getattr(cfg.target, "feedforward_groups", ())
    if cfg.initial_layout is not None or len(groups) < 2:
        return []
    return [OneControllerFeedForward(cfg.target, groups,
                                     getattr(cfg.target, "pulse_gate_names", frozenset())),
            ConditionalController(ApplyLayout(),
                                  condition=lambda ps: ps["post_layout"] is not None)]


class CompilerALAP(ALAPScheduleAnalysis):
    """ALAP analysis that times a circuit as labqpu's pulse compiler plays it.

    Qiskit's ALAP ends every measurement at the end of the circuit, so readouts of different
    durations start at different times. The compiler (``pulse.compiler``) starts every final
    measurement at the same sample, the end of the gates, and drops a delay after which nothing
    on its qubit matters (``pulse.timing.padding_delays``). Where the two differ, an echo that
    Qiskit pads beside one qubit's early readout would play while that qubit still waits in
    superposition for its own gates, and turn its static ZZ into a phase error (a Bell state on
    lab3, whose readouts last 1-2 us, fell to 0.70). This pass computes the compiler's times:
    ALAP of everything but the final measurements and trailing delays from the end of the gates,
    the final measurements at that end, a trailing delay after its qubit's last instruction. A
    circuit the compiler schedules itself (a measurement followed on its qubit by anything but
    delays and barriers, a readout that a barrier puts before later ops:
    ``pulse.timing.held_readouts``, or a ``reset``) keeps Qiskit's ALAP: the compiler plays its
    gates and mid-circuit readouts as timed, but starts its final readouts together when the
    gates end, which Qiskit's times of them need not say (readouts that differ in duration, an
    active reset longer than the Target's ``reset``). Either way a qubit's run of single-qubit ops
    between a two-qubit gate and its measurement then starts right after what precedes it
    (:func:`early_runs`), as the compiler plays it under ``"auto"``.
    """

    def run(self, dag: DAGCircuit) -> DAGCircuit:
        """Schedule ``dag``: Qiskit's ALAP, replaced by the compiler's times where they apply,
        then each qubit's run of single-qubit ops between a two-qubit gate and its measurement
        moved to right after what precedes it (:func:`early_runs`)."""
        dag = super().run(dag)
        nodes = list(dag.topological_op_nodes())
        duration = {node: (0 if node.name == "barrier" else self._get_node_duration(node, dag))
                    for node in nodes}
        self._compiler_times(nodes, duration)
        start = self.property_set["node_start_time"]
        for node in early_runs(nodes, duration):
            start[node] = max((start[p] + duration[p] for p in dag.op_predecessors(node)),
                              default=0)
        return dag

    def _compiler_times(self, nodes: list, duration: dict) -> None:
        """Overwrite Qiskit's ALAP times of ``nodes`` (topological order) with the compiler's,
        unless the compiler schedules the circuit itself (class docstring)."""
        measured: set = set()
        for node in nodes:
            if node.name == "reset":
                return
            if node.name in ("delay", "barrier"):
                continue
            if measured.intersection(node.qargs):
                return  # mid-circuit measurement: the compiler's dynamic path
            if node.name == "measure":
                measured.update(node.qargs)
        op_qubits = [node.qargs for node in nodes]
        delays = {i for i, node in enumerate(nodes) if node.name == "delay"}
        barriers = {i for i, node in enumerate(nodes) if node.name == "barrier"}
        reads = {i: node.qargs[0] for i, node in enumerate(nodes) if node.name == "measure"}
        if barriers and held_readouts(op_qubits, delays, barriers, reads):
            return  # a readout a barrier puts before later ops: the dynamic path
        trailing = padding_delays(op_qubits, delays, barriers)
        avail: dict = {}
        from_end: dict = {}
        for i in range(len(nodes) - 1, -1, -1):
            node = nodes[i]
            if node.name == "measure" or i in trailing:
                continue
            t = max((avail.get(q, 0) for q in node.qargs), default=0)
            from_end[node] = t
            for q in node.qargs:
                avail[q] = t + duration[node]
        gates_end = max(avail.values(), default=0)
        start = self.property_set["node_start_time"]  # Qiskit's mapping, overwritten here
        free: dict = {}  # qubit -> end of its latest instruction, for the trailing delays
        for i, node in enumerate(nodes):
            if node.name == "measure":
                start[node] = gates_end
            elif i in trailing:
                start[node] = max((free.get(q, 0) for q in node.qargs), default=0)
            else:  # a barrier after final readouts waits for them
                start[node] = max([gates_end - from_end[node] - duration[node],
                                   *(free.get(q, 0) for q in node.qargs)])
            for q in node.qargs:
                free[q] = start[node] + duration[node]


def early_runs(nodes: list, duration: dict) -> list:
    """The op nodes (of ``nodes``, in topological order; ``duration`` of each) in a run of
    single-qubit ops (gates, delays) on a qubit between a two-qubit gate on it and a
    measurement of it, in order: the scheduling stage plays such a run right after what
    precedes it instead of right before the measurement, as the compiler does in dynamic
    circuits (``labqpu.pulse.dynamic.early_runs``). The qubit then waits for the others in its
    measurement basis, where static ZZ and detuning change nothing, not in the superposition
    the two-qubit gate left it in, whatever happens beside it (no echo plays next to a delay
    the circuit wrote). A barrier or a zero delay does not end a run; it moves with the runs of
    all its qubits when each is in one."""
    early: set = set()
    run: dict = {}  # qubit -> its nodes since its last two-qubit gate
    for node in nodes:
        qargs = node.qargs
        if node.name == "barrier" or (node.name == "delay" and not duration[node]):
            if qargs and all(q in run for q in qargs):
                for q in qargs:
                    run[q].append(node)
            continue
        if node.name == "measure":
            for q in qargs:
                early.update(run.pop(q, ()))
        elif len(qargs) == 1 and node.name not in CONTROL_FLOW_OP_NAMES:
            if qargs[0] in run:
                run[qargs[0]].append(node)
        elif len(qargs) > 1 and node.name not in CONTROL_FLOW_OP_NAMES:
            for q in qargs:
                run[q] = []
        else:
            for q in qargs:
                run.pop(q, None)
    return [node for node in nodes if node in early]


class IdleDynamicalDecoupling(PadDynamicalDecoupling):
    """``PadDynamicalDecoupling`` that pads only idle time the scheduler created, with the
    staggered echo of ``labqpu.pulse.echo`` (``echo_gaps`` of the qubit's ``echo_colours``
    colour on the Target's coupling graph; a window too short for two x with some slack stays a
    delay).

    Qiskit's padding passes treat a ``delay`` in the circuit as idle time and would fill it with
    the DD sequence, turning a T1 wait or a Ramsey free evolution into an echo. Here a delay the
    circuit itself contains marks free evolution: an idle window on that qubit, or on a qubit
    coupled to it in the Target, that overlaps the delay in time is padded with a plain delay.
    An echo on a coupled neighbour would refocus the ZZ the waiting qubit feels, which is what
    ``ZZRamsey`` (control idle while the target waits) measures. A qubit in a basis state is
    not decoupled either (|0> before any gate that can make a superposition, so a qubit the
    circuit never uses; a basis state after x, rz, cz, a measurement or a reset until such a
    gate): an echo refocuses nothing there, adds its pulses' errors, makes a |0> relax, and
    would touch a qubit the circuit left alone. Nor is the part of an idle
    window during which a coupled neighbour plays a two-qubit gate: an echo there would flip a
    spectator of the cz while its flux pulse plays (its conditional phase depends on that
    level); the parts before and after are decoupled on their own. Nor is a window after the
    qubit's last instruction (barriers and delays aside: a barrier that ends the circuit does not
    make one) or after its measurement: the compiler plays nothing there (an echo after a
    readout would make it a mid-circuit measurement, and one before a closing barrier held the
    other qubits' final readouts back until it ended).
    """

    def run(self, dag: DAGCircuit) -> DAGCircuit:
        """Remember where the circuit's own delays are, then pad."""
        starts = self.property_set["node_start_time"]
        own: dict = {}
        for node in dag.op_nodes(Delay):
            if starts is not None and node in starts:
                t0 = starts[node]
                own.setdefault(node.qargs[0], []).append((t0, t0 + self.get_duration(node, dag)))
        neighbours = self._neighbours(dag)
        self._free: dict = {
            qubit: [w for q in (qubit, *neighbours.get(qubit, ())) for w in own.get(q, ())]
            for qubit in dag.qubits}
        # An echo on a neighbour of a two-qubit gate while it plays changes the spectator level
        # that the cz's conditional phase depends on (calibration.spectators): that stretch of
        # an idle window stays a plain delay, the rest of the window is decoupled.
        self._busy: dict = {qubit: [] for qubit in dag.qubits}
        for node in dag.two_qubit_ops():
            if starts is None or node not in starts:
                continue
            window = (starts[node], starts[node] + self.get_duration(node, dag))
            for q in node.qargs:
                for other in neighbours.get(q, ()):
                    if other not in node.qargs:
                        self._busy[other].append(window)
        pairs = {tuple(qargs) for qargs in (self.target.qargs or ()) if len(qargs) == 2} \
            if self.target is not None else set()
        self._colours = echo_colours(pairs, len(dag.qubits))
        # A qubit is in a basis state (|0> at first, or after a measurement or a reset) until a
        # gate that can make a superposition (not x, rz, cz, a delay or a barrier): no echo in
        # a window after an operation that leaves it in one, as the compiler's echo
        # (labqpu.pulse.echo): there an echo refocuses nothing, and an x makes |0> relax.
        # Per qubit, (end, in a basis state after it) of its operations in circuit order (the
        # padding sees the nodes of a new circuit, so a window is found by its start).
        self._basis: dict = {q: ([], []) for q in dag.qubits}
        basis = dict.fromkeys(dag.qubits, True)
        for node in dag.topological_op_nodes():
            if starts is None or node not in starts:
                continue
            end = starts[node] + self.get_duration(node, dag)
            for q in node.qargs:
                if node.op.name in ("measure", "reset"):
                    basis[q] = True
                elif node.op.name not in _KEEPS_BASIS:
                    basis[q] = False
                self._basis[q][0].append(end)
                self._basis[q][1].append(basis[q])
        # After a qubit's last instruction that matters (not a delay, nor a barrier that ties
        # it to nothing played later) the compiler plays nothing on it: no echo there, even
        # before a barrier that ends the circuit.
        nodes = list(dag.topological_op_nodes())
        last = last_that_matter([node.qargs for node in nodes],
                                {i for i, node in enumerate(nodes) if node.op.name == "delay"},
                                {i for i, node in enumerate(nodes) if node.op.name == "barrier"})
        self._last_start = {q: starts[nodes[i]] for q, i in last.items()
                            if starts is not None and nodes[i] in starts}
        in_registers = {bit for creg in dag.cregs.values() for bit in creg}
        self._clbits = list(dag.clbits)
        self._loose = [bit for bit in self._clbits if bit not in in_registers]
        return super().run(dag)

    def _apply_scheduled_op(self, dag: DAGCircuit, t_start: int, oper, qubits,
                            clbits=()) -> None:
        """As the base class, on a padded copy that also holds the classical bits of no
        register: Qiskit's padding copies registers only, and a measurement into a bit of no
        register then raised ``KeyError`` (``GenericBackendV2`` with ALAP scheduling fails
        alike). The bits keep the circuit's order, so results keep their bit positions."""
        if self._loose:
            loose, self._loose = self._loose, []
            dag.add_clbits(loose)
            if list(dag.clbits) != self._clbits:
                raise TranspilerError(
                    "labqpu's scheduling stage keeps classical bits of no register in order "
                    "only after those of registers; put them in a ClassicalRegister, list them "
                    "after the registers, or transpile with scheduling_method='labqpu_nodd'")
        super()._apply_scheduled_op(dag, t_start, oper, qubits, clbits)

    def _in_basis(self, qubit, t: int) -> bool:
        """Whether ``qubit`` is in a basis state after its operations that end by ``t``
        (|0> before any)."""
        ends, basis = self._basis.get(qubit, ((), ()))
        i = bisect.bisect_right(ends, t)
        return True if i == 0 else basis[i - 1]

    def _neighbours(self, dag: DAGCircuit) -> dict:
        """Circuit qubits coupled to each circuit qubit by a two-qubit Target instruction."""
        target = self.target
        if target is None:
            return {}
        index = {q: i for i, q in enumerate(dag.qubits)}
        pairs = {frozenset(qargs) for qargs in target.qargs or () if len(qargs) == 2}
        return {a: [b for b in dag.qubits if frozenset((index[a], index[b])) in pairs]
                for a in dag.qubits}

    def _pad(self, dag, qubit, t_start, t_end, next_node, prev_node) -> None:
        if isinstance(next_node, DAGOutNode) or getattr(prev_node, "name", None) == "measure" \
                or t_start >= self._last_start.get(qubit, -math.inf):
            self._apply_scheduled_op(dag, t_start, Delay(t_end - t_start, dag._unit), qubit)
            return
        for d0, d1 in self._free.get(qubit, ()):
            if d0 < t_end and d1 > t_start:
                self._apply_scheduled_op(dag, t_start, Delay(t_end - t_start, dag._unit), qubit)
                return
        lengths = self._dd_sequence_lengths.get(qubit)
        if not lengths or isinstance(prev_node, DAGInNode) \
                or self._in_basis(qubit, t_start):
            self._apply_scheduled_op(dag, t_start, Delay(t_end - t_start, dag._unit), qubit)
            return
        t = t_start
        for is_x, n in echo_segments(
                t_start, t_end, self._busy.get(qubit, ()), lengths[0],
                self._colours[dag.find_bit(qubit).index],
                max(1, self.target.granularity if self.target else 1)):
            self._apply_scheduled_op(dag, t, XGate() if is_x else Delay(n, dag._unit), qubit)
            t += n


#: Operations that leave a qubit in a basis state in one (no echo after them): labqpu's
#: permutation and diagonal gates, and what plays nothing. A measurement and a reset put it in
#: one.
_KEEPS_BASIS = frozenset({"delay", "barrier", "rz", "x", "cz"})


def dd_sequence() -> list[Gate]:
    """X, X: the gate ``PadDynamicalDecoupling`` checks and times on each qubit (the echo
    ``IdleDynamicalDecoupling`` plays is made of it: two or four x, by colour)."""
    return [XGate(), XGate()]


class LabSchedulingPlugin(PassManagerStagePlugin):
    """Scheduling stage ``labqpu`` (the backend's default): ALAP with the Target's durations and
    timing constraints, then X-X dynamical decoupling on idle windows long enough to hold it,
    with the calibrated x pulse. ``labqpu_dd`` is the same stage under its older name;
    ``labqpu_nodd`` (:class:`LabPlainSchedulingPlugin`) leaves idle windows as delays."""

    dynamical_decoupling = True

    def pass_manager(self, pass_manager_config: PassManagerConfig,
                     optimization_level: int | None = None) -> PassManager:
        """The scheduling pass manager for ``pass_manager_config``."""
        target = pass_manager_config.target
        if target is None:
            raise CompilationError("the labqpu scheduling stage needs a Target (a backend)")
        passes = [TimeUnitConversion(target=target), CompilerALAP(target=target)]
        tc = target.timing_constraints()
        if (tc.granularity, tc.min_length, tc.pulse_alignment, tc.acquire_alignment) != \
                (1, 1, 1, 1):
            passes.append(InstructionDurationCheck(acquire_alignment=tc.acquire_alignment,
                                                   pulse_alignment=tc.pulse_alignment,
                                                   target=target))
            passes.append(ConstrainedReschedule(acquire_alignment=tc.acquire_alignment,
                                                pulse_alignment=tc.pulse_alignment,
                                                target=target))
        if self.dynamical_decoupling and "x" in target.operation_names:
            qubits = sorted(q for (q,) in target.qargs_for_operation_name("x"))
            passes.append(IdleDynamicalDecoupling(dd_sequence=dd_sequence(), qubits=qubits,
                                                  skip_reset_qubits=True, target=target))
        flow = sorted(CONTROL_FLOW_OP_NAMES)
        return PassManager([
            *feedforward_placement(pass_manager_config),
            ContainsInstruction(flow, recurse=False), UnboundDelays(),
            ConditionalController(passes, condition=lambda props: not props["unbound_delay"]
                                  and not any(props[f"contains_{name}"] for name in flow))])


class UnboundDelays(AnalysisPass):
    """Sets ``unbound_delay`` when a delay's duration is a parameter (a T1 or Ramsey sweep's
    ``delay(tau)``): such a circuit cannot be scheduled before its parameters are bound (Qiskit's
    scheduling refuses it, "Parameterized duration ... is not bounded", which made every such
    sweep fail to transpile), so the scheduling stage leaves it, with its delays in the units
    they were written in, to the compiler, which times each bound circuit as it plays it."""

    def run(self, dag: DAGCircuit) -> None:
        """Set ``unbound_delay`` in the property set."""
        self.property_set["unbound_delay"] = any(
            isinstance(node.op.params[0], ParameterExpression) for node in dag.op_nodes(Delay))


class LabPlainSchedulingPlugin(LabSchedulingPlugin):
    """Scheduling stage ``labqpu_nodd``: as ``labqpu``, without dynamical decoupling."""

    dynamical_decoupling = False
