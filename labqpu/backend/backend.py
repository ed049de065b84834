"""``LabBackend``: a Qiskit ``BackendV2`` for one lab device."""

from __future__ import annotations

import copy
import logging
import math
import numbers
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace

from qiskit.circuit import ControlFlowOp, QuantumCircuit
from qiskit.circuit.exceptions import CircuitError
from qiskit.providers import BackendV2, Options

from labqpu import __version__
from labqpu.backend.compiled import CompiledPrograms
from labqpu.backend.configuration import BackendConfiguration
from labqpu.backend.input_checks import check_option_types, plain_options, refused_circuit
from labqpu.backend.job import MAX_TIMEOUT_S, LabJob, wait_bound
from labqpu.backend.merge import plan_runs
from labqpu.backend.program_checks import (
    check_length,
    check_nested,
    check_program,
    check_rep_delay,
    check_results,
    check_traces,
    default_rep_delay_s,
    one_controller_hint,
    port_qubits,
    touched_qubits,
)
from labqpu.backend.results import discriminator_centres
from labqpu.backend.snapshots import newest_buildable, within_limits
from labqpu.backend.sweeps import expand_sweeps, param_sets_for
from labqpu.backend.target import LEFT_OUT, LabTarget, build_target
from labqpu.errors import (
    BackendPropertyError,
    CalibrationError,
    CalibrationMissingError,
    CompilationError,
    InvalidRunInputError,
    LabQpuError,
    PulseError,
    did_you_mean,
)
from labqpu.pulse.batch import compile_circuits
from labqpu.pulse.builder import PulseBuilder
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.compiler import RESET_METHODS, SCHEDULING_METHODS
from labqpu.pulse.gates import PulseGate, define_pulse_gate
from labqpu.pulse.program import PulseProgram
from labqpu.pulse.shapes import brief, finite
from labqpu.pulse.split import split_program
from labqpu.pulse.timing import TimingConstraints
from labqpu.rack.config import BUILTIN_DEVICES, LabConfig, builtin_config_path
from labqpu.rack.hardware_queue import HardwareQueue
from labqpu.store import CalibrationStore, Snapshot

log = logging.getLogger(__name__)
#: The warning that the calibration store holds no snapshot (``labqpu calibrate --bootstrap``,
#: which commits the first one, turns it off).
EMPTY_STORE_LOG = logging.getLogger(f"{__name__}.empty_store")
#: The attribute (True) of the log records that warn of a Target with no gate to transpile to
#: (an empty store; every qubit left out): ``labqpu run`` of a script adds the warning to the
#: transpiler's error, which names neither.
NO_GATES = "labqpu_no_gates"

#: Marks the end of ``run()``'s items (so that the circuits before it are compiled).
_END = object()

MAX_SHOTS = 100_000
#: Circuits per batch: a longer job runs as batches of at most this many (``LabJob``).
MAX_CIRCUITS = 300
#: Most circuits one ``run()`` takes (the compiled programs are held until the job ends).
MAX_JOB_CIRCUITS = 10_000
#: The longest (s) a backend that has a Target waits for a writer holding the calibration
#: store before it goes on with the snapshot it last read (and, until it reads the store
#: again, does not wait: a transpile asks for the Target many times).
STORE_POLL_WAIT_S = 0.5

#: Instructions that never need a Target entry: they only order or label the circuit.
_DIRECTIVES = ("barrier",)


class LabBackend(BackendV2):
    """A lab device as a Qiskit backend.

    The Target comes from the newest calibration snapshot in the store and is rebuilt when a
    newer snapshot appears; jobs already compiled keep the snapshot they were compiled with.
    """

    backend_version = __version__

    def __init__(self, provider, config: LabConfig, store: CalibrationStore,
                 queue: HardwareQueue) -> None:
        super().__init__(provider=provider, name=config.device_name,
                         description=f"labqpu backend for {config.device_name}",
                         backend_version=self.backend_version)
        self.config = config
        self.store = store
        self._queue = queue
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._target: LabTarget | None = None
        self._rejected_snapshot: int | None = None
        self._store_unreadable = False  # said once, until the store is read again
        #: The last snapshot, older than the newest, that a job's programs were built from.
        self._older_snapshot: Snapshot | None = None
        #: Pulse gates by name, then device qubits; replaced (never changed) on every change,
        #: so a run reads one consistent set with its Target.
        self._pulse_gates: dict[str, dict[tuple[int, ...], PulseGate]] = {}
        #: Programs of circuits run before, for circuits run again (``labqpu.backend.compiled``).
        self._compiled = CompiledPrograms()
        self._defaults_checked: list | None = None  # the defaults as last checked
        self._capabilities: dict[str, dict] = queue.capabilities(timeout_s=30.0)
        self._max_program_samples: dict[str, int] = {
            name: int(caps["max_program_samples"])
            for name, caps in self._capabilities.items() if "max_program_samples" in caps}
        timing = TimingConstraints()
        for name, caps in self._capabilities.items():
            try:
                timing = timing.combine(TimingConstraints.from_capabilities(caps, name))
            except ValueError as exc:
                raise LabQpuError(f"backend {self.name}: controller {exc}") from exc
        #: The controllers' feed-forward latency (samples; the largest stated), or None when
        #: a controller states no feed-forward: then if_else is refused and reset is passive.
        self.feedforward_latency_samples: int | None = None
        latencies = [caps.get("feedforward", {}).get("latency_samples")
                     for caps in self._capabilities.values()]
        if latencies and None not in latencies:
            self.feedforward_latency_samples = max(int(v) for v in latencies)
        #: What the pulse compiler needs of the rack: the wiring's channels and the
        #: controllers' timing constraints (from their ``hello``).
        self.channels: ChannelMap = replace(config.channels, timing=timing)
        self._port_qubits = port_qubits(self.channels)
        self._refresh()

    @classmethod
    def _default_options(cls) -> Options:
        opts = Options(
            shots=1024, memory=False, meas_level=2, meas_return="single", rep_delay=None,
            seed_simulator=None, sync=False, scheduling_method="auto", timeout=300.0,
            job_tags=None, reset_method="active", trace_decimation=None, merge_sweeps=True,
        )
        opts.set_validator("shots", (1, MAX_SHOTS))
        opts.set_validator("memory", bool)
        opts.set_validator("meas_level", [0, 1, 2])
        opts.set_validator("meas_return", ["single", "avg"])
        opts.set_validator("rep_delay", (0.0, 1.0))
        opts.set_validator("sync", bool)
        opts.set_validator("merge_sweeps", bool)
        opts.set_validator("scheduling_method", list(SCHEDULING_METHODS))
        opts.set_validator("reset_method", list(RESET_METHODS))
        opts.set_validator("timeout", (0.001, MAX_TIMEOUT_S))
        opts.set_validator("trace_decimation", (1, 1 << 20))
        return opts

    def _check_open(self) -> None:
        """``LabQpuError`` once the provider was closed."""
        if self._queue.closed:
            raise LabQpuError(f"backend {self.name}: its provider was closed; open a new "
                              "LabProvider")

    def _refresh(self) -> int | None:
        """Take the store's newest snapshot (its Target built, or the newest that builds one);
        returns the newest snapshot's id (None: the store is empty)."""
        self._check_open()
        with self._lock:
            current = self._snapshot.snapshot_id if self._snapshot else None
            try:
                latest = self.store.latest_id(wait_s=None if self._target is None else 0.0
                                              if self._store_unreadable else STORE_POLL_WAIT_S)
            except CalibrationError as exc:
                if self._target is None:
                    raise
                if not self._store_unreadable:
                    log.warning("backend %s: calibration store %s cannot be read now (%s); jobs "
                                "use snapshot %s, the last read, until it can", self.name,
                                self.config.store_path, exc, current)
                self._store_unreadable = True
                return current
            self._store_unreadable = False
            if self._target is not None and latest in (current, self._rejected_snapshot):
                return latest
            if latest is None:
                snapshot = Snapshot.from_document({"device": self.config.device_name,
                                                   "qubits": {}, "pairs": {}, "gates": {}})
                target = self._build_target(snapshot, self._pulse_gates)
                EMPTY_STORE_LOG.warning(
                    "backend %s: calibration store %s holds no snapshot, so the Target has no "
                    "gate and transpile() fails for every circuit; measure one with `%s`",
                    self.name, self.config.store_path,
                    self.provider.command("calibrate --bootstrap"), extra={NO_GATES: True})
            else:
                snapshot, target, problem = newest_buildable(
                    self.store, latest, lambda s: self._build_target(s, self._pulse_gates),
                    within_limits(self.config))
                if problem is not None:
                    self._rejected_snapshot = latest
                    log.warning("backend %s: calibration snapshot %s cannot build a Target "
                                "(%s); jobs use snapshot %s, the newest that can: commit a "
                                "corrected snapshot or roll back (labqpu calibrate rollback)",
                                self.name, latest, problem, snapshot.snapshot_id)
                if snapshot.qubits and not _measurable(target):
                    log.warning("backend %s: every qubit is left out of the Target of "
                                "calibration snapshot %s (the warnings above, and "
                                "backend.target.marks, say why), so transpile() and run() "
                                "fail for every circuit; recalibrate: `%s`", self.name,
                                snapshot.snapshot_id, self.provider.command("calibrate --all"),
                                extra={NO_GATES: True})
            self._target = target
            self._snapshot = snapshot
            return latest

    def _build_target(self, snapshot: Snapshot, pulse_gates: dict) -> LabTarget:
        return build_target(snapshot, self.config, self.channels.timing,
                            feedforward_latency_samples=self.feedforward_latency_samples,
                            pulse_gates=pulse_gates)

    @property
    def pulse_gates(self) -> dict[str, dict[tuple[int, ...], PulseGate]]:
        """The pulse gates registered on this backend, by name, then device qubits."""
        with self._lock:
            return {name: dict(defined) for name, defined in self._pulse_gates.items()}

    def add_pulse_gate(self, name: str, definition: PulseBuilder, qubits: Sequence[int],
                       parameters: Sequence | None = None) -> PulseGate:
        """Register the custom gate ``name`` on device ``qubits``, played as ``definition``
        (a builder of ``labqpu.pulse.build(backend)``); returns the gate, which makes circuit
        instructions: ``qc.append(gate(0.3), [0])``.

        The Target declares it on ``qubits`` with the definition's duration, so ``transpile``
        keeps it (lay the circuit out on those qubits); ``run()`` plays the definition with the
        instruction's values bound to ``parameters`` (by position; default: the definition's
        parameters sorted by name). Defining the name again on other qubits adds a definition
        (same number of qubits and parameters); on the same qubits it replaces it. Rules:
        :mod:`labqpu.pulse.gates`. Raises ``PulseError`` naming the problem; nothing changes.
        """
        if not isinstance(definition, PulseBuilder) or \
                definition.channels.device_name != self.config.device_name:
            raise PulseError(f"pulse gate {name!r}: the definition must be built for "
                             f"{self.name} (`with labqpu.pulse.build(backend) as b`)",
                             parameter="definition")
        gate = define_pulse_gate(name, definition, qubits, parameters,
                                 timing=self.channels.timing)
        self._refresh()
        with self._lock:
            defined = dict(self._pulse_gates.get(name, {}))
            elsewhere = [g for qubits, g in defined.items() if qubits != gate.qubits]
            if elsewhere:
                other = elsewhere[0]
                if (len(other.qubits), [p.name for p in other.parameters]) != \
                        (len(gate.qubits), [p.name for p in gate.parameters]):
                    raise PulseError(
                        f"pulse gate {name!r} is already defined on {len(other.qubits)} "
                        f"qubit(s) with parameters {[p.name for p in other.parameters]}; a "
                        "definition on other qubits must have the same", parameter=name)
            defined[gate.qubits] = gate
            self._set_pulse_gates({**self._pulse_gates, name: defined})
        return gate

    def _set_pulse_gates(self, gates: dict) -> None:
        """Replace the pulse gates and the Target with them together (``_lock`` held)."""
        self._target = self._build_target(self._snapshot, gates)
        self._pulse_gates = gates

    def remove_pulse_gate(self, name: str, qubits: Sequence[int] | None = None) -> None:
        """Remove pulse gate ``name`` (only its definition on ``qubits``, if given) from the
        backend and its Target; ``KeyError`` if there is no such definition."""
        self._refresh()
        with self._lock:
            defined = dict(self._pulse_gates.get(name, {}))
            key = None if qubits is None else tuple(int(q) for q in qubits)
            if not defined or (key is not None and key not in defined):
                raise KeyError(f"no pulse gate {name!r}"
                               + ("" if key is None else f" on qubits {list(key)}"))
            if key is None:
                defined.clear()
            else:
                del defined[key]
            gates = {k: v for k, v in self._pulse_gates.items() if k != name}
            if defined:
                gates[name] = defined
            self._set_pulse_gates(gates)

    @property
    def snapshot(self) -> Snapshot:
        """The calibration snapshot the current Target was built from."""
        self._refresh()
        return self._snapshot

    @property
    def unusable_snapshot_id(self) -> int | None:
        """The store's newest snapshot when it cannot build a Target (the backend then uses the
        newest one that can, :attr:`snapshot`), else None: a calibration derived from
        :attr:`snapshot` commits on top of it, replacing it."""
        latest = self._refresh()
        with self._lock:
            rejected = self._rejected_snapshot
        return rejected if rejected is not None and rejected == latest else None

    @property
    def target(self) -> LabTarget:
        """The Target of the newest calibration snapshot."""
        self._refresh()
        return self._target

    @property
    def max_shots(self) -> int:
        """Shots per circuit that one job takes (:data:`MAX_SHOTS`; ``configuration()`` says
        it too)."""
        return MAX_SHOTS

    @property
    def max_circuits(self) -> int:
        """Circuits per batch. ``run()`` takes up to ``MAX_JOB_CIRCUITS`` (10 000) and splits a
        longer list into batches of at most this many (a merged sweep is one run, never split),
        logged before anything is sent; each
        batch queues when the one before it has finished, so other jobs may run between
        them. Clients that split by ``max_circuits`` themselves (qiskit-experiments,
        ``BackendSamplerV2``, mthree) send batch-sized jobs."""
        return MAX_CIRCUITS

    @property
    def dtm(self) -> float:
        """Sampling interval of the acquisition inputs (s)."""
        return 1.0 / self.config.controllers[0].sample_rate_hz

    @property
    def meas_map(self) -> list[list[int]]:
        """Qubits that can be measured independently: each on its own (one readout line
        per qubit, frequency-multiplexed on one LO)."""
        return [[q] for q in range(self.config.num_qubits)]

    def configuration(self) -> BackendConfiguration:
        """A Qiskit 1.x style configuration summary, for clients that still call it (mthree).

        Derived from the wiring and the current Target; BackendV2 code should read
        ``backend.target`` instead.
        """
        target = self.target
        edges = (tuple(sorted(target.qargs_for_operation_name("cz")))
                 if "cz" in target.operation_names else ())
        return BackendConfiguration(
            backend_name=self.name, backend_version=self.backend_version,
            n_qubits=self.num_qubits, basis_gates=tuple(sorted(target.operation_names)),
            coupling_map=edges, dt=self.dtm, max_shots=MAX_SHOTS,
            max_experiments=self.max_circuits)

    def set_options(self, **fields) -> None:
        """Change default run options; the same type and range checks as ``run()`` apply. A
        backend whose provider was closed refuses (as ``run()`` does)."""
        self._check_open()
        checked = self._checked_options(fields, "option", none_keeps_default=False)
        plain = plain_options({name: getattr(checked, name) for name in fields})
        for name, value in plain.items():
            setattr(self._options, name, value)  # checked (None where the default is None)

    def _checked_options(self, fields: dict, what: str, *, none_keeps_default: bool) -> Options:
        """A copy of the options updated with ``fields``, after the name, type and range
        checks (the range validators of ``_default_options``). With ``none_keeps_default``
        a None value leaves the option as it is (run options); otherwise None is a value too.
        ``what`` names the options in errors ("option", "run option")."""
        unknown = sorted(set(fields) - set(self.options.__dict__))
        if unknown:
            raise InvalidRunInputError(
                f"unknown {what}(s) {unknown}"
                f"{did_you_mean(unknown[0], self.options.__dict__)}; known: "
                f"{sorted(self.options.__dict__)}",
                option=unknown[0])
        given = {k: v for k, v in fields.items() if v is not None or not none_keeps_default}
        check_option_types({k: v for k, v in given.items() if v is not None}, what)
        opts = copy.copy(self.options)  # own fields and validators; values are replaced,
        # never mutated (job_tags, the one list, is copied by plain_options)
        for name, value in given.items():
            if value is None:  # set_options: None is a value of an option that defaults to it
                default = self._default_options().get(name)
                if default is not None:
                    raise InvalidRunInputError(
                        f"invalid {what}: {name} cannot be None (its default is {default!r})",
                        option=name)
                setattr(opts, name, None)  # not through the range validator
                continue
            try:
                opts.update_options(**{name: value})
            except (ValueError, TypeError) as exc:
                raise InvalidRunInputError(f"invalid {what}: {exc} (got {value!r})",
                                           option=name) from exc
        return opts

    def get_translation_stage_plugin(self) -> str:
        """Name of the translation stage plugin ``transpile`` uses by default: ``"labqpu"``
        (basis translation with the sy rules, then pulse-count-minimal single-qubit runs;
        :mod:`labqpu.backend.plugins`). Pass ``translation_method=`` to choose another."""
        return "labqpu"

    def get_scheduling_stage_plugin(self) -> str:
        """Name of the scheduling stage plugin ``transpile`` uses by default: ``"labqpu"``
        (ALAP with the calibrated durations and the timing constraints, then X-X dynamical
        decoupling on idle qubits; a delay written in the circuit stays free evolution). Pass
        ``scheduling_method="labqpu_nodd"`` for no decoupling, or any other plugin's name."""
        return "labqpu"

    def controller_capabilities(self, name: str) -> dict:
        """What controller ``name`` stated in its ``hello`` when the backend was made (sample
        rate, limits, ``feedforward`` latency ...); ``KeyError`` for an unknown controller."""
        return self._capabilities[name]

    def hardware_status(self, timeout_s: float | None = 30.0) -> dict:
        """Controller capabilities and instrument identities, asked in queue order (waits for
        the jobs ahead, at most ``timeout_s`` seconds; None or ``math.inf``: no bound).
        ``ValueError`` unless ``timeout_s`` is None or a number >= 0."""
        return self._queue.describe(wait_bound(timeout_s, "timeout_s"))

    def __repr__(self) -> str:
        return (f"<LabBackend {self.name!r}: {self.num_qubits} qubits, "
                f"{self.config.path or 'wiring given in Python'}>")

    def __copy__(self) -> LabBackend:
        """A shallow copy: shares options, hardware queue, store and Target."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> LabBackend:
        """A copy with its own options that shares the hardware queue, store and Target
        (qiskit-experiments deep-copies backends; sockets cannot be copied)."""
        new = copy.copy(self)
        new._options = copy.deepcopy(self._options, memo)
        memo[id(self)] = new
        return new

    def __reduce__(self) -> tuple:
        path = str(self.config.path)
        if getattr(self.provider, "simulator", None) is not None:
            builtin = next((d for d in BUILTIN_DEVICES if str(builtin_config_path(d)) == path),
                           None)
            opener = (f"LabProvider({builtin!r})" if builtin
                      else f"LabProvider({path!r}, simulator=True)")
            there = (f"open {opener}.backend({self.name!r}) in that process: this starts a new "
                     "simulator of the same device, reading the same calibration store "
                     f"({self.config.store_path}); it does not connect to this process's "
                     "simulator")
        else:
            there = (f"connect to the same rack there with "
                     f"LabProvider({path!r}).backend({self.name!r})")
        raise TypeError(
            f"backend {self.name!r} cannot be pickled: it holds live instrument sessions and "
            "the hardware queue of its provider. Pickle backend.target (or the results) "
            f"instead; to run from another process, {there}")

    def _check_defaults(self, given: dict) -> None:
        """Check the default options (Qiskit's ``Options`` can be changed past
        :meth:`set_options`) once after each change, those the run gives (``given``) aside."""
        values = self._options.__dict__
        if (state := [(k, tuple(v) if isinstance(v, list) else v)
                      for k, v in values.items()]) == self._defaults_checked:
            return
        try:
            self._checked_options(dict(values), "option", none_keeps_default=False)
        except InvalidRunInputError:
            try:  # a bad default that this run overrides is no matter (till the next run)
                self._checked_options({k: v for k, v in values.items() if given.get(k) is None},
                                      "option", none_keeps_default=False)
            except InvalidRunInputError as exc:
                raise InvalidRunInputError(
                    f"backend.options: {exc}; change defaults with backend.set_options(...), "
                    "which checks them; nothing was sent", option=exc.option) from exc
            return
        self._defaults_checked = state

    def _run_options(self, kwargs: dict) -> dict:
        """Options for one run: defaults updated with ``kwargs`` (None keeps the default),
        type-checked, then range-checked by the same validators as ``set_options``."""
        self._check_defaults(kwargs)
        return plain_options(dict(self._checked_options(kwargs, "run option",
                                                 none_keeps_default=True).__dict__))

    def _check_circuit(self, circuit: QuantumCircuit, target: LabTarget) -> None:
        if circuit.num_qubits > target.num_qubits:
            raise InvalidRunInputError(
                f"circuit {circuit.name!r} uses {circuit.num_qubits} qubits; {self.name} has "
                f"{target.num_qubits}")
        phase = circuit.global_phase
        if isinstance(phase, numbers.Real) and not math.isfinite(phase):
            raise InvalidRunInputError(f"circuit {circuit.name!r}: global_phase {phase} must be "
                                       "finite; nothing was sent")
        _check_control_flow(circuit, circuit)  # before any gate's error: transpiling
        # cannot help these
        self._check_instructions(circuit, circuit, list(range(circuit.num_qubits)), target)

    def _check_instructions(self, circuit: QuantumCircuit, body: QuantumCircuit,
                            physical: list[int], target: LabTarget) -> None:
        """Every instruction of ``body`` (``circuit`` itself, or a branch of one of its
        if_else, whose qubit i is ``physical[i]``) is in the Target with finite parameters."""
        for inst in body.data:
            name = inst.operation.name
            if name in _DIRECTIVES:
                continue
            qargs = tuple(physical[body.find_bit(q).index] for q in inst.qubits)
            if not target.instruction_supported(name, qargs):
                where = f" on qubits {qargs}" if qargs else ""
                left_out = [_why_left_out(subject, target.marks[subject])
                            for subject in (f"qubit {q}" for q in qargs)
                            if subject in target.marks]
                if left_out:
                    raise InvalidRunInputError(
                        f"circuit {circuit.name!r}: {name!r}{where} is not in the Target of "
                        f"{self.name} (calibration snapshot {target.snapshot_id}): "
                        f"{'; '.join(left_out)}; recalibrate "
                        f"(`{self.provider.command('calibrate --all')}`) or transpile the "
                        "circuit onto other qubits")
                if name in target.operation_names and qargs:
                    placed = sorted(target.qargs_for_operation_name(name) or ())
                    raise InvalidRunInputError(
                        f"circuit {circuit.name!r}: {name!r}{where} is not in the Target of "
                        f"{self.name} (calibration snapshot {target.snapshot_id}), which has "
                        f"{name} on qubits {placed or 'none'}; transpile the circuit for this "
                        "backend")
                offered = sorted(target.operation_names)
                raise InvalidRunInputError(
                    f"circuit {circuit.name!r}: {name!r}{where} is not in the Target of "
                    f"{self.name} (calibration snapshot {target.snapshot_id}; it offers "
                    f"{offered}); " + ("transpile the circuit for this backend" if qargs else
                                       "it acts on no qubit and transpiling keeps it: labqpu "
                                       "does not run classical variables or their stores"))
            if name == "if_else":
                for block in inst.operation.blocks:
                    self._check_instructions(circuit, block, list(qargs), target)
                continue
            for param in inst.operation.params:
                if isinstance(param, numbers.Real) and not finite(param):
                    raise InvalidRunInputError(
                        f"circuit {circuit.name!r}: {name} on qubits {qargs} has the "
                        f"non-finite parameter {brief(param)}; nothing was sent")
                if name == "delay" and isinstance(param, numbers.Real) and param < 0:
                    raise InvalidRunInputError(
                        f"circuit {circuit.name!r}: delay on qubits {qargs} is negative "
                        f"({param} {inst.operation.unit})")

    def _snapshot_of(self, programs: list[PulseProgram], current: Snapshot) -> Snapshot:
        """The calibration snapshot ``programs`` were built from (``current`` for circuits
        compiled now and programs that name none): their readout is discriminated with its
        centres and their results name it.

        Raises:
            InvalidRunInputError: the programs come from several snapshots, or from one this
                backend's store does not hold (another store's snapshot of the same id
                included: the programs record its content hash).
        """
        built = {(p.snapshot_id, p.snapshot_hash) for p in programs if p.snapshot_id is not None}
        ids = {snapshot_id for snapshot_id, _ in built}
        if len(ids) > 1:
            raise InvalidRunInputError(
                f"the programs of one job must come from one calibration snapshot; these were "
                f"built from snapshots {sorted(ids)} (the newest is {current.snapshot_id}): "
                "run them as separate jobs, or build them again; nothing was sent")
        if not ids:
            return current
        (snapshot_id,) = ids
        snapshot = self._held_snapshot(snapshot_id, current)
        other = sorted(h for _, h in built if h is not None and h != snapshot.content_hash)
        if other:
            raise InvalidRunInputError(
                f"a program was built from a calibration snapshot {snapshot_id} (content "
                f"{other[0][:12]}) that is not snapshot {snapshot_id} of "
                f"{self.config.store_path} (content {snapshot.content_hash[:12]}): it was built "
                "on another store, or this one was made anew; build it again on this backend; "
                "nothing was sent")
        return snapshot

    def _held_snapshot(self, snapshot_id: int, current: Snapshot) -> Snapshot:
        """Snapshot ``snapshot_id`` of this backend's store (``current`` when it is that one).

        Raises:
            InvalidRunInputError: the store does not hold it.
        """
        if snapshot_id == current.snapshot_id:
            return current
        older = self._older_snapshot  # a script running old programs again: read once
        if older is not None and older.snapshot_id == snapshot_id:
            return older
        try:
            snapshot = self.store.get(snapshot_id)
        except CalibrationMissingError as exc:
            raise InvalidRunInputError(
                f"a program was built from calibration snapshot {snapshot_id}, which "
                f"{self.config.store_path} does not hold (built on another store?): build it "
                "again on this backend; nothing was sent") from exc
        log.info("backend %s: the job's programs were built from calibration snapshot %s; the "
                 "newest is %s: their results are read and named with snapshot %s", self.name,
                 snapshot_id, current.snapshot_id, snapshot_id)
        self._older_snapshot = snapshot
        return snapshot

    def compile(self, circuit: QuantumCircuit, **options) -> PulseProgram:
        """The ``PulseProgram`` that :meth:`run` would play for the transpiled ``circuit``
        with these run options (``scheduling_method``, ``reset_method``; the others do not
        change the program), on the current calibration, with this backend's feed-forward
        and pulse gates. Sends nothing; ``InvalidRunInputError`` as :meth:`run` raises it."""
        if not isinstance(circuit, QuantumCircuit):
            raise InvalidRunInputError(
                f"compile() takes a QuantumCircuit, got {type(circuit).__name__}")
        opts = self._run_options(options)
        return self._compile([circuit], *self._current(), opts)[0]

    def _current(self) -> tuple[Snapshot, LabTarget, dict]:
        """(snapshot, Target, pulse gates) as of now, read together, the newest calibration
        first taken in."""
        self._refresh()
        with self._lock:
            return self._snapshot, self._target, self._pulse_gates

    def _compile(self, circuits: list[QuantumCircuit], snapshot: Snapshot, target: LabTarget,
                 pulse_gates: dict, opts: dict) -> list[PulseProgram]:
        """Check and compile ``circuits``, each checked just before it is read, so that the
        first bad circuit in order is the one reported; consecutive circuits that differ only
        in rz angles, delay durations and pulse-gate parameters are compiled once
        (``labqpu.pulse.batch``). Circuits compiled before under the same snapshot and options
        are not compiled again (``labqpu.backend.compiled``)."""
        def compile_all() -> list[PulseProgram]:
            try:
                return compile_circuits(
                    circuits, snapshot, self.channels,
                    scheduling_method=opts["scheduling_method"],
                    feedforward_latency_samples=self.feedforward_latency_samples,
                    reset_method=opts["reset_method"], pulse_gates=pulse_gates,
                    check=lambda circuit: self._check_circuit(circuit, target))
            except CompilationError as exc:
                raise InvalidRunInputError(str(exc)) from exc

        return self._compiled.compile(  # pulse gates: a new mapping on every change
            circuits, (snapshot, target, pulse_gates, self.channels),
            (opts["scheduling_method"], opts["reset_method"], self.feedforward_latency_samples),
            compile_all)

    def run(self, run_input: QuantumCircuit | PulseProgram
            | Sequence[QuantumCircuit | PulseProgram], **options) -> LabJob:
        """Validate, compile and queue circuits (or ready ``PulseProgram``s).

        Everything is checked and compiled before anything is sent: a bad circuit or option
        raises ``InvalidRunInputError`` naming the problem, and no job is created. Options:
        ``shots`` (1..100000), ``memory``, ``meas_level`` (0: raw traces, 1: IQ, 2: counts),
        ``meas_return``, ``rep_delay`` (s; None: :func:`default_rep_delay_s` of the qubits
        the circuits use; shots x rep_delay beyond ``timeout`` is refused),
        ``trace_decimation`` (samples per trace point with meas_level 0; None: the
        controller's default), ``seed_simulator``, ``scheduling_method`` ("auto": ALAP, with
        a qubit's gates between a two-qubit gate and its measurement early in a circuit with
        control flow, or ASAP for a circuit with mid-circuit measurement that the scheduling
        stage timed and padded; "alap"; "asap"),
        ``timeout`` (s, per program on the controller), ``sync`` (wait before returning),
        ``reset_method`` ("active": measure, then x when the result is 1, where the controller
        has feed-forward; "passive": idle for the calibrated thermalisation time),
        ``job_tags`` (kept in the result header; mthree passes them), ``parameter_binds``
        (a ``PulseProgram`` run once per value of its amplitude parameters, bound on the
        controller from one upload; or a ``PulseBuilder`` or a circuit run once per value of
        any of its parameters, as qiskit-aer takes them, its points merged into one upload
        where they differ only in numbers the controller binds; one result experiment per
        point:
        :mod:`labqpu.backend.sweeps`), ``merge_sweeps`` (default True: consecutive programs
        that differ only in start times, phases, frequencies, amplitudes or length, such as
        the points of a T1 or Ramsey scan, run as one upload that the controller binds per
        point, where it can: :mod:`labqpu.backend.merge`; ``job.uploads`` counts them).
        """
        if isinstance(run_input, QuantumCircuit | PulseProgram | PulseBuilder):
            items = [run_input]
        elif isinstance(run_input, Iterable) and not isinstance(run_input, str | bytes):
            items = list(run_input)
        else:
            raise InvalidRunInputError(
                "run() takes a QuantumCircuit, a PulseProgram, a PulseBuilder (with "
                f"parameter_binds) or a list of them, got {type(run_input).__name__}")
        if not items:
            raise InvalidRunInputError("run() needs at least one circuit or program")
        binds = options.pop("parameter_binds", None)
        if binds is not None or any(isinstance(item, PulseBuilder) for item in items):
            items, binds = expand_sweeps(items, binds, max_points=MAX_JOB_CIRCUITS)
        if len(items) > MAX_JOB_CIRCUITS:
            raise InvalidRunInputError(
                f"{len(items)} circuits in one job; {self.name} takes at most "
                f"{MAX_JOB_CIRCUITS} (run them as several jobs); nothing was sent")
        opts = self._run_options(options)
        snapshot, target, pulse_gates = self._current()
        if not snapshot.qubits and any(isinstance(i, QuantumCircuit) for i in items):
            raise InvalidRunInputError(
                f"calibration store {self.config.store_path} holds no snapshot with a "
                f"calibrated qubit, so {self.name} has no gate: measure one with "
                f"`{self.provider.command('calibrate --bootstrap')}` (or "
                "import a snapshot); nothing was sent")
        programs = []
        circuits: list[QuantumCircuit] = []  # consecutive circuits, compiled together
        for item in [*items, _END]:
            if circuits and not isinstance(item, QuantumCircuit):
                try:
                    programs.extend(self._compile(circuits, snapshot, target, pulse_gates,
                                                  opts))
                except CircuitError as exc:  # Qiskit checks bound values when it reads them
                    raise refused_circuit(circuits, exc) from exc
                circuits = []
            if isinstance(item, QuantumCircuit):
                circuits.append(item)
            elif isinstance(item, PulseProgram):
                check_program(item, self.config, self.channels)
                programs.append(item)
            elif item is not _END:
                raise InvalidRunInputError(
                    f"run() takes QuantumCircuit or PulseProgram, got {type(item).__name__}")
        snapshot = self._snapshot_of(programs, snapshot)
        parts = []  # each program's controller parts
        for program in programs:
            check_length(program, self.config, self._capabilities, self._max_program_samples)
            try:
                parts.append(split_program(program))  # feed-forward within one controller
            except PulseError as exc:
                hint = one_controller_hint(exc, self.channels)
                raise InvalidRunInputError(f"{exc}{hint}; nothing was sent") from exc
            check_nested(parts[-1], self._capabilities)
            check_results(program, parts[-1], opts["shots"], self._capabilities)
        if opts["rep_delay"] is None:
            opts["rep_delay"] = default_rep_delay_s(snapshot, touched_qubits(programs,
                                                                             self._port_qubits))
        check_rep_delay(opts)
        if opts["meas_level"] == 0:
            opts["trace_decimation"] = check_traces(programs, opts, self._capabilities)
        if opts["meas_level"] == 1:
            for program in programs:
                if not program.num_clbits and not program.acq_port.size:
                    raise InvalidRunInputError(
                        f"meas_level=1: program {program.display_name!r} acquires nothing and "
                        "has no classical bit, so it has no IQ to return; measure a qubit or "
                        "run it with meas_level 2; nothing was sent", option="meas_level")
        if opts["meas_level"] == 2:
            for program in programs:
                try:
                    discriminator_centres(snapshot, program.acq_qubit)
                except BackendPropertyError as exc:
                    raise InvalidRunInputError(str(exc)) from exc
        sweeps = param_sets_for(binds, programs, shots=opts["shots"],
                                meas_level=opts["meas_level"],
                                capabilities=lambda name: self._capabilities.get(name, {}),
                                max_points=MAX_JOB_CIRCUITS)
        runs = plan_runs(programs, sweeps, parts, shots=opts["shots"],
                         enabled=opts["merge_sweeps"] and opts["meas_level"] != 0,
                         capabilities=lambda name: self._capabilities.get(name, {}))
        job = LabJob(self, uuid.uuid4().hex, programs, opts, self._queue, snapshot, runs=runs,
                     batch_size=self.max_circuits)
        job.submit()
        if opts["sync"]:
            try:
                job.result()
            except KeyboardInterrupt as exc:  # the caller has no handle to cancel it with
                said = ("was cancelled" if job.cancel() else
                        f"was past cancelling (status {job.status().name})")
                exc.add_note(f"labqpu: job {job.job_id()} {said}: run() with sync=True was "
                             "interrupted")
                raise
        return job


def _check_control_flow(circuit: QuantumCircuit, body: QuantumCircuit) -> None:
    """``InvalidRunInputError`` for control flow other than if_else in ``body`` (``circuit``
    itself, or a branch of one of its if_else, at any depth)."""
    for inst in body.data:
        if not isinstance(inst.operation, ControlFlowOp):
            continue
        if inst.operation.name != "if_else":
            raise InvalidRunInputError(
                f"circuit {circuit.name!r}: control flow {inst.operation.name!r} is not "
                "supported; labqpu runs if_else (if_test) only, so write a loop out "
                "(unrolled) and a switch as if_else's; nothing was sent")
        for block in inst.operation.blocks:
            _check_control_flow(circuit, block)


def _measurable(target: LabTarget) -> bool:
    """True when the Target can measure at least one qubit."""
    return "measure" in target.operation_names and bool(
        target.qargs_for_operation_name("measure"))


def _why_left_out(subject: str, marks: tuple[str, ...]) -> str:
    """``subject`` and the mark that left it out of the Target (else its first mark)."""
    whole = [m for m in marks if m.endswith(f": {subject} {LEFT_OUT}")]
    return f"{subject} {(whole or list(marks))[0]}"
