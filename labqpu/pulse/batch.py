"""Compile the circuits of a sweep once: consecutive circuits that differ only in rz angles,
delay durations and pulse-gate parameters.

A calibration scan, a qiskit-experiments run or a Sampler's parameter sweep sends many circuits
that are one circuit with other numbers: the same gates on the same qubits and classical bits,
with other rz angles, delay durations or values of a pulse gate (a Rabi's amplitude, a
spectroscopy's frequency). :func:`compile_circuits` compiles the first circuit of such a run as
:func:`~labqpu.pulse.compiler.compile_circuit` does: its gates are looked up, their effects,
waveforms and instrument settings resolved and its checks made. Every following circuit is only
read (``compiler._lower`` against the same tables, or ``dynamic.lower_dynamic`` for a circuit
with pulse gates, which binds and checks the gate's values: its angles, delays and pulse-gate
effect rows, and that its gates, qubits, classical bits and pulse-gate waveforms are the first
one's, refused exactly as ``compile_circuit`` would refuse it). All points of the run are then
scheduled and laid out in one call of ``kernels.layout_batch_kernel`` (per ``BATCH_OP_ROWS``
op rows), each point with its own pulse-gate rows.

Each point's program equals ``compile_circuit``'s for its circuit, array for array (the same
content hash): the merge into one upload (``labqpu.backend.merge``) and each result's
provenance see the same programs. A pulse-gate value that changes a waveform (a width, a
DRAG beta) starts a new structure. Circuits with feed-forward (mid-circuit measurement,
``if_else``, active ``reset``) are compiled one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain

import numpy as np
from qiskit.circuit import QuantumCircuit

from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.compiler import (
    _alap,
    _auto_padded,
    _compile_read,
    _early,
    _filled,
    _lower,
    _lower_dynamic,
    _read_with,
)
from labqpu.pulse.dynamic import Lowered
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.kernels import early_kernel, layout_batch_kernel
from labqpu.pulse.program import PulseProgram
from labqpu.pulse.tables import Tables
from labqpu.store import Snapshot

__all__ = ["compile_circuits"]


def compile_circuits(circuits: Sequence[QuantumCircuit], snapshot: Snapshot,
                     channels: ChannelMap, *, scheduling_method: str = "alap",
                     feedforward_latency_samples: int | None = None,
                     reset_method: str = "active",
                     pulse_gates: Mapping[str, Mapping[tuple[int, ...], PulseGate]] | None = None,
                     check: Callable[[QuantumCircuit], None] | None = None
                     ) -> list[PulseProgram]:
    """The programs of ``circuits`` in order, each equal to ``compile_circuit``'s for it (same
    arguments), with every run of consecutive circuits that differ only in rz angles, delay
    durations and pulse-gate parameters compiled once (module docstring). ``check`` (optional)
    is called with each circuit just before it is read, and may raise. Raises
    ``CompilationError`` for the first circuit in order that ``compile_circuit`` refuses (or
    ``check``'s error, if it comes first)."""
    options = {"scheduling_method": scheduling_method,
               "feedforward_latency_samples": feedforward_latency_samples,
               "reset_method": reset_method, "pulse_gates": pulse_gates}
    programs: list[PulseProgram] = []
    structure: _Structure | None = None
    points: list[_Point] = []
    for circuit in circuits:  # each read once: a point of the current sweep, or compiled
        if check is not None:
            check(circuit)
        tables, names = _read_with(circuit, snapshot, channels, options)
        lowered = _lower(circuit, tables, names)
        dynamic = None if lowered is not None else _lower_dynamic(circuit, tables, options)
        padded = _auto_padded(circuit, lowered, scheduling_method, tables)
        key, point = _read(circuit, lowered, dynamic, scheduling_method, tables, padded)
        if structure is not None and key is not None and key == structure.key:
            points.append(point)
            continue
        if points:
            programs.extend(structure.programs(points))
            points = []
        program = _compile_read(circuit, lowered, snapshot, channels, tables, options, dynamic,
                                padded)
        programs.append(program)
        structure = None if key is None else _Structure(program, channels, tables, key)
    if points:
        programs.extend(structure.programs(points))
    return programs


@dataclass
class _Point:
    """One circuit of a sweep: per op row its effect row, duration (samples) and parameter;
    the effect rows of its pulse gates (``dynamic.Lowered.local_rows``)."""

    circuit: QuantumCircuit
    effect: list[int]
    duration: list[int]
    param: list[float]
    local_rows: list[tuple]


#: Columns of a pulse gate's effect row (``kernels.EFFECT_FIELDS``) that carry its values
#: (amplitude, frequency, phase shifts, phase offset and ramp); the others must match.
_VALUE_COLUMNS = (2, 3, 8, 10, 13, 15)


def _read(circuit: QuantumCircuit, lowered: tuple | None, dynamic: Lowered | None,
          scheduling_method: str, tables: Tables, padded: bool) -> tuple[tuple | None, _Point]:
    """(structure key, point) of ``circuit`` as ``_lower`` (``lowered``) or ``lower_dynamic``
    (``dynamic``) read it (``padded``: ``compiler._auto_padded`` of it). Circuits with equal
    keys differ only in their op rows' durations and parameters and their pulse gates' values.
    The key is None for a circuit with feed-forward (conditional blocks or discriminated
    acquisitions), compiled on its own. A key starts with the kernel's shared inputs
    (``_Structure.layout``)."""
    alap = _alap(scheduling_method, lowered is None, padded)
    if lowered is not None:
        (effect, duration, param, clbit), qptr, qflat, used, measured = lowered
        n = len(effect)
        early = early_kernel(np.array(effect, dtype=np.int64), np.array(duration, dtype=np.int64),
                             np.array(qptr, dtype=np.int64), np.array(qflat, dtype=np.int64),
                             tables.effects(), circuit.num_qubits).tolist() \
            if scheduling_method == "auto" and n else [0] * n
        layout = (tuple(clbit), tuple(qptr), tuple(qflat), (-1,) * n, (0,) * n, (-1,) * n,
                  tuple(early), circuit.num_qubits, alap, 0)
        return ((layout, _shape(circuit), tuple(effect), frozenset(used), frozenset(measured)),
                _Point(circuit, effect, duration, param, []))
    effect, duration, param, clbit = (list(c) for c in zip(*dynamic.rows, strict=True)) \
        if dynamic.rows else ([], [], [], [])
    point = _Point(circuit, effect, duration, param, dynamic.local_rows)
    if dynamic.blocks or dynamic.discriminated:
        return None, point
    layout = (tuple(clbit), (0, *accumulate(map(len, dynamic.resources))),
              tuple(chain.from_iterable(dynamic.resources)), tuple(dynamic.parent),
              tuple(dynamic.offset), tuple(dynamic.block),
              tuple(_early(dynamic, scheduling_method, padded).tolist()), dynamic.num_resources,
              alap, len(dynamic.local_waves))
    local = tuple(tuple(v for i, v in enumerate(row) if i not in _VALUE_COLUMNS)
                  for row in dynamic.local_rows)
    waves = tuple((w.dtype.str, w.shape, w.tobytes()) for w in dynamic.local_waves)
    return ((layout, _shape(circuit), tuple(effect), frozenset(dynamic.used),
             frozenset(dynamic.measured), tuple(dynamic.resources), local, waves), point)


@dataclass
class _Structure:
    """What the circuits of one sweep share: the first circuit's program, the tables it was
    compiled against, and its structure key (``_read``)."""

    first: PulseProgram  # the first circuit's program
    channels: ChannelMap
    tables: Tables
    key: tuple

    @property
    def layout(self) -> tuple:
        """The kernel's inputs every point shares: per op row its classical bit, resource
        pointers and resources, parent, offset, block and early flag; the number of resources,
        ALAP, and the number of pulse-gate waveforms."""
        return self.key[0]

    def programs(self, points: list[_Point]) -> list[PulseProgram]:
        """The programs of ``points``, laid out in one ``layout_batch_kernel`` call per
        ``BATCH_OP_ROWS`` op rows."""
        size = max(1, BATCH_OP_ROWS // max(len(points[0].effect), 1))
        return [program for k in range(0, len(points), size)
                for program in self._lay_out(points[k:k + size])]

    def _lay_out(self, points: list[_Point]) -> list[PulseProgram]:
        """The programs of ``points``, laid out in one ``layout_batch_kernel`` call; each
        program holds copies of its rows of the kernel's outputs."""
        tables, channels = self.tables, self.channels
        clbit, qptr, qflat, parent, offset, block, early, num_resources, alap, _ = self.layout
        m, n = len(points), len(points[0].effect)
        durations = np.array([p.duration for p in points], dtype=np.int64).reshape(m, n)
        params = np.array([p.param for p in points], dtype=np.float64).reshape(m, n)
        effects, op_effect, num_waves = self._effects(points)
        plays = (np.empty((m, n), np.int64), np.empty((m, n), np.int32),
                 np.empty((m, n), np.int32), np.empty((m, n)), np.empty((m, n)),
                 np.empty((m, n)), np.empty((m, n), np.int32))
        acqs = (np.empty((m, n), np.int64), np.empty((m, n), np.int32),
                np.empty((m, n), np.int64), np.empty((m, n)), np.empty((m, n), np.int32),
                np.empty((m, n), np.int32))
        shifts = (np.empty((m, 2 * n), np.int32), np.empty((m, 2 * n), np.int64),
                  np.empty((m, 2 * n)), np.empty((m, 2 * n), np.int32))
        wave_order = np.empty((m, max(n, 1)), np.int64)
        counts = np.empty((m, 6), np.int64)
        layout_batch_kernel(
            op_effect, durations, params, *(np.array(c, dtype=np.int64) for c in (
                clbit, qptr, qflat, parent, offset, block, early)),
            num_resources, channels.num_qubits, alap, effects, num_waves,
            tables.drive_ports(), *plays, *acqs, wave_order, *shifts, counts)
        first = self.first  # what every point shares with it: waveforms, settings, shapes
        shared = {name: getattr(first, name) for name in _SHARED}
        n_play, n_acq = first.play_port.shape[0], first.acq_port.shape[0]
        programs = []
        for k, point in enumerate(points):
            total, _, _, _, end, _ = counts[k].tolist()
            play = [c[k, :n_play].copy() for c in plays]
            acq = [c[k, :n_acq].copy() for c in acqs]
            programs.append(PulseProgram._assemble(
                **shared, duration_samples=max(total or end, end, 1),
                play_start=play[0], play_port=play[1], play_wave=play[2], play_amp=play[3],
                play_phase_rad=play[4], play_freq_hz=play[5], play_block=play[6],
                play_amp_ref=_filled(n_play, -1, np.int32),
                acq_start=acq[0], acq_port=acq[1], acq_duration=acq[2], acq_freq_hz=acq[3],
                acq_qubit=acq[4], acq_clbit=acq[5],
                lo_settings=dict(first.lo_settings), flux_bias_a=dict(first.flux_bias_a),
                header={**first.header, "name": point.circuit.name,
                        "creg_sizes": [list(r) for r in first.header["creg_sizes"]],
                        "metadata": dict(point.circuit.metadata or {})}))
        return programs

    def _effects(self, points: list[_Point]) -> tuple[np.ndarray, np.ndarray, int]:
        """(effect table, effect rows per point (points x ops), number of waveforms) for the
        kernel: the shared tables' rows, then each point's pulse-gate rows, whose waveforms
        (the same for every point) follow the tables'."""
        tables = self.tables
        effects = tables.effects()
        base_waves = len(tables.waves)
        op_effect = np.array([p.effect for p in points], dtype=np.int64).reshape(
            len(points), len(points[0].effect))
        width = len(points[0].local_rows)
        if not width:
            return effects, op_effect, base_waves
        local = np.array([p.local_rows for p in points], dtype=np.float64)
        plays = local[:, :, 0] >= 0
        local[plays, 1] = base_waves - 1 - local[plays, 1]  # wave -1 - k -> base_waves + k
        mine = op_effect < -1  # effect -2 - j: the point's local row j
        op_effect[mine] = (effects.shape[0] + width * np.nonzero(mine)[0]
                           + (-2 - op_effect[mine]))
        return (np.vstack([effects, local.reshape(-1, local.shape[2])]), op_effect,
                base_waves + self.layout[-1])


#: Op rows (points x ops) laid out per kernel call: the call's arrays take ~130 bytes per row.
BATCH_OP_ROWS = 1 << 18
#: Fields every point of a sweep takes from its first program as they are (frozen arrays and
#: plain values): the waveform table, the controller and the rack layout, the snapshot.
_SHARED = ("controller", "sample_rate_hz", "wave_offset", "wave_data", "num_clbits",
           "snapshot_id", "snapshot_hash", "rack", "acq_disc_axis", "acq_disc_threshold",
           "block_acq", "block_value", "block_parent", "shift_port", "shift_start",
           "shift_phase_rad", "shift_block")


def _shape(circuit: QuantumCircuit) -> tuple:
    """What two circuits of a sweep must share besides their op rows: qubit and classical bit
    counts and the classical registers."""
    return (circuit.num_qubits, circuit.num_clbits,
            tuple((reg.name, reg.size) for reg in circuit.cregs))
