"""Pulse compiler: a transpiled circuit and a calibration snapshot in, a ``PulseProgram`` out.

* Timing: ALAP (default) or ASAP from the calibrated durations, in samples; barriers
  synchronise their qubits.
* ``rz`` is virtual: it shifts the phase of the qubit's drive frame for every later pulse.
  The qubit's calibrated ``drive_handedness`` h (+1 or -1) says in which sense a play phase
  phi turns the drive axis: to h phi, in the frame where free evolution at a detuning
  delta = f_qubit - f_drive is Rz(-2 pi delta t) (Qiskit's convention, |1> above |0>). The
  ideal ``rz(t)`` turns the axis of every later pulse by -t, so it adds ``-h t`` to the play
  phase. rz then precesses the same way as the qubit does on its own: Ramsey detunings, ZZ
  and T2Ramsey frequencies come out with their physical signs.
* ``sx`` / ``x``: one DRAG pulse shape per qubit, played at the pi/2 or pi amplitude, at the
  calibrated IF on the drive LO, at the play phase of the frame.
* ``sy`` (sqrt(Y) = RY(pi/2)): the same DRAG pulse at the pi/2 amplitude, with its axis a
  quarter turn ahead of sx's (play phase + h pi/2), so ``sy`` = ``rz(-pi/2); sx; rz(pi/2)``
  exactly, and costs what sx costs.
* ``cz``: a flat-top flux pulse on the pair's tunable qubit, then the calibrated single-qubit
  phase corrections as frame changes on both qubits. ``cz_phase_*_rad`` are play-phase
  shifts, measured as such by the calibration (its analysis pulses are play phases), so they
  do not depend on the handedness.
* ``measure``: a readout pulse and an acquisition window over the same samples.
* ``delay`` plays nothing; a delay after which nothing on its qubit matters (a scheduler's
  padding: ``timing.padding_delays``) is dropped, so it cannot hold back the readout. A delay
  before a barrier that synchronises its qubit with one that plays or measures later holds
  that qubit back, as a barrier does in Qiskit.
* Final readouts start together at the end of the gates, except a readout that a barrier
  puts before later ops (``measure(0); barrier(0, 1); x(1)``, or a wait such a barrier keeps):
  it plays where it stands, mid-circuit, and what the barrier holds plays after it
  (``timing.held_readouts``).
* ``reset`` is active by default (``reset_method="active"``, given feed-forward): measure,
  then an x pulse when the result is 1 (``dynamic.lower_dynamic``), for the calibrated number
  of rounds. Passive (``"passive"``, or without feed-forward): the qubit is left idle for the
  calibrated thermalisation time (several T1).
* A **pulse gate** (``labqpu.pulse.gates``) is read by ``dynamic.lower_dynamic`` as a container
  on its qubits for its duration, with its plays and frame changes as members at their
  offsets; their effect rows and waveforms are the circuit's own, appended to the shared
  tables' for the kernel and never stored in them.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import accumulate, chain

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit

from labqpu.errors import CompilationError
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.dynamic import Lowered, lower_dynamic
from labqpu.pulse.echo import decouple
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.kernels import early_kernel, layout_kernel
from labqpu.pulse.program import PulseProgram, pack_waveforms
from labqpu.pulse.tables import (
    READOUT_RISE_S,
    SY_PHASE_RAD,
    Tables,
    clear_caches,
    duration_samples,
    synthesize,
    tables_for,
    unbound_error,
    waveform,
)
from labqpu.pulse.timing import held_readouts, padding_delays
from labqpu.store import Snapshot

SCHEDULING_METHODS = ("auto", "alap", "asap")
__all__ = ["READOUT_RISE_S", "RESET_METHODS", "SCHEDULING_METHODS", "SY_PHASE_RAD", "clear_caches",
           "compile_circuit", "synthesize", "waveform"]

def _lower(circuit: QuantumCircuit, tables: Tables, dynamic_names: frozenset[str]):
    """Read a plain circuit once: per op its effect row, duration, first parameter, clbit and
    qubits (as columns for ``layout_kernel``), and the qubits used and measured. Returns None
    for a dynamic circuit (an instruction in ``dynamic_names``, or one after a measurement of
    its qubit, or a readout that a barrier puts before later ops), which
    ``dynamic.lower_dynamic`` reads instead.

    A gate met again on the same qubits in this circuit is not looked up again: its qubit
    indices, duration and effect come from ``seen``; only its parameters are read.

    Errors come in the order of a plain per-op compiler: reading errors in circuit order (for
    one op: a non-native gate or a bad duration, then an unbound parameter), then
    pulse-parameter errors of the ops in circuit order. The effect of a gate already compiled
    against these tables is known and cannot fail; the others are resolved after the whole
    circuit has been read.
    """
    qindex = {bit: i for i, bit in enumerate(circuit.qubits)}
    cindex = {bit: i for i, bit in enumerate(circuit.clbits)}
    known = tables.known  # (gate, qubits) -> (duration, effect), once both are known
    durations = tables.durations
    timing = tables.channels.timing
    effect_ids = tables.effect_ids
    cal, fs = tables.cal, tables.fs
    # (gate, Qiskit qubits) -> (qubit indices, duration, effect or None)
    seen: dict[tuple, tuple] = {}
    effect: list[int] = []
    duration_of: list[int] = []
    param_of: list[float] = []
    clbit_of: list[int] = []
    op_qubits: list[tuple] = []
    pending: list[tuple] = []  # (row, name, qubits) whose effect is not known yet
    measured: set[int] = set()
    reads: dict[int, int] = {}  # row of each measurement -> its qubit
    qubit_of = qindex.__getitem__
    delays: list[int] = []  # rows of delays, checked for trailing padding at the end
    barriers: list[int] = []
    for inst in circuit.data:
        name = inst.name
        qargs = inst.qubits
        hit = seen.get((name, qargs))
        if hit is None:
            if name in dynamic_names:
                return None
            qubits = (qubit_of(qargs[0]),) if len(qargs) == 1 else tuple(map(qubit_of, qargs))
            if name == "barrier" or name == "delay":
                if name == "barrier":
                    barriers.append(len(effect))
                    duration = 0
                else:
                    delays.append(len(effect))
                    duration = duration_samples(inst, qubits, cal, fs, circuit, timing)
                effect.append(0)  # plays nothing
                duration_of.append(duration)
                param_of.append(0.0)
                clbit_of.append(-1)
                op_qubits.append(qubits)
                continue
            key = (name, qubits)
            hit = known.get(key)
            if hit is not None:
                duration, eid = hit
            else:
                duration = durations.get(key)
                if duration is None:
                    duration = duration_samples(inst, qubits, cal, fs, circuit, timing)
                    durations[key] = duration
                eid = effect_ids.get(key)
            hit = seen[(name, qargs)] = (qubits, duration, eid)
        qubits, duration, eid = hit
        param = 0.0
        raw = inst.params  # per op: a gate of the same name may come with other parameters
        if raw:
            try:
                param = float(raw[0])  # every parameter must be bound
                if len(raw) > 1:
                    tuple(map(float, raw))
            except TypeError as exc:
                raise unbound_error(circuit.name, name, qubits, raw) from exc
        if measured and not measured.isdisjoint(qubits):
            return None  # mid-circuit measurement
        clbit = -1
        if name == "measure":
            measured.update(qubits)
            reads[len(effect)] = qubits[0]
            clbit = cindex[inst.clbits[0]]
        if eid is None:
            pending.append((len(effect), name, qubits))
            eid = 0
        effect.append(eid)
        duration_of.append(duration)
        param_of.append(param)
        clbit_of.append(clbit)
        op_qubits.append(qubits)
    for i, name, qubits in pending:
        key = (name, qubits)
        hit = known.get(key)  # a gate resolved by an earlier op of this circuit
        if hit is None:
            duration = duration_of[i]
            hit = known[key] = (duration, tables.effect(name, qubits, duration, circuit))
        effect[i] = hit[1]
    columns = (effect, duration_of, param_of, clbit_of)
    # The qubits that play or measure; the delays that are a scheduler's padding are dropped
    # (``padding_delays``). A delay before a measurement is kept.
    is_delay, is_barrier = set(delays), set(barriers)
    used = set(chain.from_iterable(qs for i, qs in enumerate(op_qubits)
                                   if i not in is_delay and i not in is_barrier))
    padding = padding_delays(op_qubits, is_delay, is_barrier) if delays else ()
    if reads and barriers and barriers[-1] > min(reads) and held_readouts(
            op_qubits, is_delay, is_barrier, reads):
        return None  # a readout that a barrier puts before later ops: mid-circuit
    if padding:
        columns = tuple([v for i, v in enumerate(c) if i not in padding] for c in columns)
        op_qubits = [qs for i, qs in enumerate(op_qubits) if i not in padding]
    qptr = [0]
    qptr.extend(accumulate(map(len, op_qubits)))
    qflat = list(chain.from_iterable(op_qubits))
    return columns, qptr, qflat, used, measured


def _filled(n: int, value: int, dtype: type) -> np.ndarray:
    """``np.full(n, value, dtype)`` at half its cost (``np.full`` is a Python wrapper)."""
    out = np.empty(n, dtype)
    out.fill(value)
    return out


def _timed(circuit: QuantumCircuit) -> bool:
    """Whether a Qiskit scheduling pass has timed ``circuit``: it has ``op_start_times``, one
    per instruction (a timed circuit changed afterwards, e.g. appended to, keeps times that no
    longer match its instructions, and counts as untimed)."""
    try:
        times = circuit.op_start_times
    except AttributeError:
        return False
    return times is not None and len(times) == len(circuit.data)


#: Instructions that make a circuit dynamic (read by ``dynamic.lower_dynamic``).
_CONTROL_FLOW = frozenset({"if_else", "while_loop", "for_loop", "switch_case", "box",
                           "break_loop", "continue_loop"})
_CONTROL_FLOW_AND_RESET = _CONTROL_FLOW | {"reset"}  # with active reset
RESET_METHODS = ("active", "passive")


def compile_circuit(circuit: QuantumCircuit, snapshot: Snapshot, channels: ChannelMap, *,
                    scheduling_method: str = "alap", feedforward_latency_samples: int | None = None,
                    reset_method: str = "active",
                    pulse_gates: Mapping[str, Mapping[tuple[int, ...], PulseGate]] | None = None
                    ) -> PulseProgram:
    """Compile one transpiled circuit (physical qubits = device qubits) into a PulseProgram.

    ``channels`` says where each qubit's pulses are played (``LabConfig.channels`` of the
    rack's wiring file); ``snapshot`` supplies every pulse parameter.
    ``feedforward_latency_samples`` is the controller's feed-forward latency (its ``hello``
    capabilities; None: no feed-forward, so ``if_else`` is refused and ``reset`` is passive).
    ``reset_method``: "active" (measure, then x when the result is 1, on qubits with drive and
    readout calibration, given feed-forward; passive elsewhere) or "passive" (idle for the
    calibrated ``reset_duration_s``). ``pulse_gates``: the definitions of custom pulse gates
    by name and device qubits (``labqpu.pulse.gates``; ``LabBackend.add_pulse_gate``).
    ``scheduling_method``: "alap", "asap", or "auto" (the backend's default): ASAP for a circuit
    that this compiler schedules itself (mid-circuit measurement, active reset, pulse gates)
    and that a Qiskit scheduling stage has already timed and padded (it has ``op_start_times``
    and each qubit's instructions run from 0 without a gap, :func:`_padded`; the padding fills
    every slot up to a qubit's measurement, so ASAP plays its gates where Qiskit put them),
    ALAP otherwise (with the early runs below when it is timed but not padded, as
    ``labqpu_nodd`` leaves it, and no echo). Plain ALAP would move such a circuit's last gates
    on a qubit to the end of the program, leaving the qubit to wait in superposition beside a
    partner that is measured and flipped meanwhile, and static ZZ would turn its phase. A
    circuit with control flow is not timed by the scheduling stage and stays ALAP, except
    that a run of a qubit's single-qubit gates between a two-qubit gate and its measurement
    plays early (``dynamic.early_runs``), so the qubit waits in its measurement basis, and the idle
    windows of qubits that may be in superposition get the staggered echo (``echo.decouple``);
    so does a circuit with a delay that no stage timed (a bound parameterised delay), read as
    a dynamic one. A static circuit under "auto" gets the same early runs
    (``kernels.early_kernel``), as the scheduling stage times it
    (``backend.plugins.early_runs``). "alap" and "asap" are plain: no early runs, no echo.
    """
    options = {"scheduling_method": scheduling_method,
               "feedforward_latency_samples": feedforward_latency_samples,
               "reset_method": reset_method, "pulse_gates": pulse_gates}
    tables, names = _read_with(circuit, snapshot, channels, options)
    return _compile_read(circuit, _lower(circuit, tables, names), snapshot, channels, tables,
                         options)


def _read_with(circuit: QuantumCircuit, snapshot: Snapshot, channels: ChannelMap,
               options: dict) -> tuple[Tables, frozenset[str]]:
    """The tables ``circuit`` is read against and the instructions that make it dynamic (for
    ``_lower``), after checking ``options`` (``compile_circuit``'s keyword arguments) and the
    circuit's size."""
    if options["scheduling_method"] not in SCHEDULING_METHODS:
        raise CompilationError(
            f"scheduling_method must be one of {SCHEDULING_METHODS}, got "
            f"{options['scheduling_method']!r}")
    if options["reset_method"] not in RESET_METHODS:
        raise CompilationError(
            f"reset_method must be one of {RESET_METHODS}, got {options['reset_method']!r}")
    if circuit.num_qubits > channels.num_qubits:
        raise CompilationError(
            f"circuit {circuit.name!r} has {circuit.num_qubits} qubits; "
            f"{channels.device_name} has {channels.num_qubits}", circuit=circuit.name)
    names = _CONTROL_FLOW_AND_RESET if _active_reset(options) else _CONTROL_FLOW
    if options["pulse_gates"]:
        names = names | frozenset(options["pulse_gates"])
    if options["scheduling_method"] == "auto" and not _timed(circuit):
        # A circuit with a delay that no scheduling stage timed (its duration was a parameter
        # at transpile time: ``backend.plugins.UnboundDelays``) is read as a dynamic one, so
        # that its idle windows are echoed as the stage would have (``echo.decouple``): a
        # review's qubit idling beside an excited neighbour during a bound delay read 0.563
        # where the stage's echo gave 0.300.
        names = names | {"delay"}
    return tables_for(snapshot, channels), names


def _active_reset(options: dict) -> bool:
    return options["reset_method"] == "active" \
        and options["feedforward_latency_samples"] is not None


def _lower_dynamic(circuit: QuantumCircuit, tables: Tables, options: dict) -> Lowered:
    """``dynamic.lower_dynamic`` of a circuit that ``_lower`` found dynamic, with
    ``compile_circuit``'s keyword arguments ``options``; with ``scheduling_method`` "auto" and
    no scheduling stage's timing, its idle windows echoed (``echo.decouple``)."""
    dynamic = lower_dynamic(circuit, tables,
                            latency_samples=options["feedforward_latency_samples"],
                            active_reset=_active_reset(options),
                            pulse_gates=options["pulse_gates"] or {},
                            branches_alap=options["scheduling_method"] != "asap")
    if options["scheduling_method"] == "auto" and not _timed(circuit):
        return decouple(dynamic, tables, circuit)
    return dynamic


def _padded(circuit: QuantumCircuit, tables: Tables) -> bool:
    """Whether a Qiskit scheduling stage has timed ``circuit`` and padded it: each qubit of
    the circuit has instructions from sample 0 on, each starting where the one before it on
    that qubit ends (barriers aside; an instruction of a duration not known here, such as a
    reset or a pulse gate, is taken to last until the next). The padding passes fill every
    qubit's idle time (a qubit that does nothing gets one delay); ``labqpu_nodd`` times a
    circuit without padding it, and ALAP leaves a qubit idle before its first gate."""
    if not _timed(circuit):
        return False
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    free: dict[int, int | None] = {}  # qubit -> where its last instruction ends (None: unknown)
    for inst, start in zip(circuit.data, circuit.op_start_times, strict=True):
        if inst.name == "barrier":
            continue
        qubits = tuple(index[q] for q in inst.qubits)
        for q in qubits:
            end = free.get(q, 0)
            if end is not None and start != end:
                return False
        duration = _stage_duration(inst, qubits, tables, circuit)
        for q in qubits:
            free[q] = None if duration is None else start + duration
    return len(free) == circuit.num_qubits


def _auto_padded(circuit: QuantumCircuit, lowered: tuple | None, scheduling_method: str,
                 tables: Tables) -> bool:
    """:func:`_padded` where it decides anything: a dynamic circuit (``lowered`` None) under
    "auto"; False otherwise."""
    return lowered is None and scheduling_method == "auto" and _padded(circuit, tables)


def _stage_duration(inst, qubits: tuple[int, ...], tables: Tables,
                    circuit: QuantumCircuit) -> int | None:
    """Samples a timed ``inst`` lasts as the Target states it (``dt`` is one sample), or None
    where that is not known here (reset, whose duration depends on the reset method, pulse
    gates, anything the compiler will refuse)."""
    name = inst.name
    if name == "rz":
        return 0
    if name == "delay":  # the stage has converted every delay to dt
        op = inst.operation
        if op.unit != "dt" or isinstance(op.duration, ParameterExpression):
            return None
        return int(op.duration)
    if name not in ("sx", "sy", "x", "cz", "measure"):
        return None
    key = (name, qubits)
    duration = tables.durations.get(key)  # what ``_lower`` caches for the same gates
    if duration is None:
        try:
            duration = tables.durations[key] = duration_samples(
                inst, qubits, tables.cal, tables.fs, circuit, tables.channels.timing)
        except CompilationError:
            return None
    return duration


def _alap(scheduling_method: str, dynamic: bool, padded: bool) -> bool:
    """Whether a circuit is scheduled ALAP (``compile_circuit``'s ``scheduling_method``;
    ``padded``: :func:`_padded` of a dynamic circuit)."""
    return scheduling_method == "alap" or (
        scheduling_method == "auto" and (not dynamic or not padded))


def _early(dynamic: Lowered, scheduling_method: str, padded: bool) -> np.ndarray:
    """``layout_kernel``'s ``op_early`` for a dynamic circuit: its ``early`` runs with
    ``scheduling_method`` "auto" when no scheduling stage padded it (``padded``; ALAP then
    plays a qubit's gates between a two-qubit gate and its measurement early), none otherwise
    ("alap" is plain ALAP)."""
    if scheduling_method == "auto" and not padded and any(dynamic.early):
        return np.array(dynamic.early, dtype=np.int64)
    return np.zeros(len(dynamic.rows), dtype=np.int64)


def _compile_read(circuit: QuantumCircuit, lowered: tuple | None, snapshot: Snapshot,
                  channels: ChannelMap, tables: Tables, options: dict,
                  dynamic: Lowered | None = None, padded: bool | None = None) -> PulseProgram:
    """``compile_circuit`` of ``circuit`` once ``_lower`` has read it (``lowered``; None: a
    dynamic circuit, read by ``lower_dynamic``, or given as ``dynamic`` if it has been) against
    ``tables``; ``padded``: :func:`_padded` of a dynamic circuit under "auto", when the caller
    has it (else it is computed here)."""
    scheduling_method = options["scheduling_method"]
    effects, waves_of = tables.effects(), tables.waves
    if padded is None:
        padded = _auto_padded(circuit, lowered, scheduling_method, tables)
    if lowered is None:
        if dynamic is None:
            dynamic = _lower_dynamic(circuit, tables, options)
        effects, waves_of = _with_local_effects(dynamic, tables)
        columns = tuple(map(list, zip(*dynamic.rows, strict=True))) or ([], [], [], [])
        used, measured = dynamic.used, dynamic.measured
        qptr = [0]
        qptr.extend(accumulate(map(len, dynamic.resources)))
        qflat = list(chain.from_iterable(dynamic.resources))
        num_resources = dynamic.num_resources
    else:
        columns, qptr, qflat, used, measured = lowered
        num_resources = circuit.num_qubits
    effect, duration, param, clbit = columns
    n = len(effect)
    effect = np.array(effect, dtype=np.int64)
    duration = np.array(duration, dtype=np.int64)
    qptr = np.array(qptr, dtype=np.int64)
    qflat = np.array(qflat, dtype=np.int64)
    if dynamic is None:
        parent = block = _filled(n, -1, np.int64)
        offset = np.zeros(n, dtype=np.int64)
        # under "auto" a qubit's gates between its last two-qubit gate and its readout play
        # right after that gate, as the scheduling stage times them (plugins.early_runs)
        early = early_kernel(effect, duration, qptr, qflat, effects, num_resources) \
            if scheduling_method == "auto" else offset
    else:
        parent, offset, block = (np.array(a, dtype=np.int64)
                                 for a in (dynamic.parent, dynamic.offset, dynamic.block))
        early = _early(dynamic, scheduling_method, padded)
    plays = (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int32),
             np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int32))
    acqs = (np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n),
            np.empty(n, np.int32), np.empty(n, np.int32))
    shifts = (np.empty(2 * n, np.int32), np.empty(2 * n, np.int64), np.empty(2 * n),
              np.empty(2 * n, np.int32))
    wave_order = np.empty(max(n, 1), np.int64)
    total, n_play, n_acq, n_waves, end, n_shift = layout_kernel(
        effect, duration, np.array(param, dtype=np.float64), np.array(clbit, dtype=np.int64),
        qptr, qflat, parent, offset, block,
        early, num_resources, channels.num_qubits,
        _alap(scheduling_method, lowered is None, padded), effects, len(waves_of),
        tables.drive_ports(), *plays, *acqs, wave_order, *shifts)
    lo_settings, flux_bias_a = tables.lo_and_flux(frozenset(used), frozenset(measured), circuit)
    if waves_of is tables.waves:
        wave_data, offsets = tables.wave_table(wave_order[:n_waves])
    else:  # a dynamic circuit's own pulse-gate waveforms follow the tables'
        offsets, wave_data = pack_waveforms([waves_of[g] for g in wave_order[:n_waves].tolist()])
    start, port, wave, amp, phase, freq, play_block = [c[:n_play] for c in plays]
    a_start, a_port, a_duration, a_freq, a_qubit, a_clbit = [c[:n_acq] for c in acqs]
    if dynamic is None:
        feedforward = {"acq_disc_axis": np.zeros(n_acq, np.complex128),
                       "acq_disc_threshold": np.zeros(n_acq)}
    else:
        feedforward = _feedforward(dynamic, tables, a_qubit, circuit, shifts, n_shift)
    return PulseProgram._assemble(
        controller=channels.controllers[0], sample_rate_hz=channels.sample_rate_hz,
        duration_samples=max(total or end, end, 1),
        play_port=port, play_start=start, play_wave=wave, play_amp=amp,
        play_amp_ref=_filled(n_play, -1, np.int32), play_phase_rad=phase,
        play_freq_hz=freq, play_block=play_block, wave_offset=offsets,
        wave_data=wave_data,
        acq_port=a_port, acq_start=a_start, acq_duration=a_duration, acq_freq_hz=a_freq,
        acq_qubit=a_qubit, acq_clbit=a_clbit,
        lo_settings=dict(lo_settings), flux_bias_a=dict(flux_bias_a),
        num_clbits=circuit.num_clbits, header=program_header(circuit),
        snapshot_id=snapshot.snapshot_id, snapshot_hash=snapshot.content_hash,
        rack=channels.layout, **feedforward,
    )


def program_header(circuit: QuantumCircuit) -> dict:
    """The header a program compiled from ``circuit`` carries: its name, classical registers
    (name, size), memory slots and metadata (a copy).

    Qiskit's counts split each outcome into registers by ``creg_sizes``, taking memory slot 0
    as the first register's bit 0 and so on, and keep one count per key. When the circuit's
    bits are not its registers' bits one after the other (bits of no register, bits shared by
    two registers, registers out of order), that split reads the wrong bits and merges
    outcomes, losing shots (a loose bit before a register: 508 of 1000 shots counted). Such a
    circuit's header names no registers: its counts are the whole outcome, one bit per
    classical bit in the circuit's order."""
    in_registers = [bit for reg in circuit.cregs for bit in reg]
    cregs = [[reg.name, reg.size] for reg in circuit.cregs] \
        if in_registers == list(circuit.clbits) else []
    return {"name": circuit.name, "creg_sizes": cregs, "memory_slots": circuit.num_clbits,
            "metadata": dict(circuit.metadata or {})}


def _with_local_effects(dynamic: Lowered, tables: Tables) -> tuple[np.ndarray, list]:
    """(effect table, waveforms) for the kernel: the shared tables' followed by the circuit's
    own pulse-gate rows and waveforms, with ``dynamic.rows`` renumbered to match."""
    effects = tables.effects()
    if not dynamic.local_rows:
        return effects, tables.waves
    waves = list(tables.waves)  # every row of ``effects`` refers to one of these
    base_e, base_w = effects.shape[0], len(waves)
    local = np.array(dynamic.local_rows, dtype=np.float64)
    plays = local[:, 0] >= 0
    local[plays, 1] = base_w - 1 - local[plays, 1]  # wave -1 - k -> base_w + k
    dynamic.rows = [(base_e - 2 - eid if eid < -1 else eid, *rest)
                    for eid, *rest in dynamic.rows]
    return np.vstack([effects, local]), waves + dynamic.local_waves


def _feedforward(dynamic: Lowered, tables: Tables, acq_qubit: np.ndarray,
                 circuit: QuantumCircuit, shifts: tuple, n_shift: int) -> dict:
    """The feed-forward arrays of a dynamic circuit's program: blocks, phase shifts and the
    linear discriminator of every acquisition a block reads (required) or that is followed by
    more of the circuit (when calibrated)."""
    n_acq = acq_qubit.shape[0]
    axis = np.zeros(n_acq, dtype=np.complex128)
    threshold = np.zeros(n_acq)
    for j, required in sorted(dynamic.discriminated.items()):
        q = int(acq_qubit[j])
        if not required and "discriminator" not in tables.snapshot.qubits.get(q, {}):
            continue
        try:
            axis[j], threshold[j] = tables.discriminator(q)
        except ValueError as exc:
            raise CompilationError(f"circuit {circuit.name!r}: qubit {q}: {exc}; feed-forward "
                                   "needs a discriminator", circuit=circuit.name, qubits=(q,),
                                   instruction="discriminator") from exc
    port, start, phase, block = (c[:n_shift] for c in shifts)
    used_ports = set(port.tolist())
    if used_ports:
        ports = tables.drive_ports()
        for p in used_ports:
            sharing = np.flatnonzero(ports == p)
            if sharing.shape[0] > 1:
                raise CompilationError(
                    f"circuit {circuit.name!r}: a conditional virtual Z on drive port {p} would "
                    f"also turn the frame of qubits {sharing.tolist()}, which share the port",
                    circuit=circuit.name, qubits=tuple(sharing.tolist()), instruction="rz")
    blocks = dynamic.blocks
    return {"acq_disc_axis": axis, "acq_disc_threshold": threshold,
            "block_acq": np.array([b[0] for b in blocks], np.int32),
            "block_value": np.array([b[1] for b in blocks], np.int32),
            "block_parent": np.array([b[2] for b in blocks], np.int32),
            "shift_port": port, "shift_start": start, "shift_phase_rad": phase,
            "shift_block": block}
