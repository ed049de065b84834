"""Compile the circuits of a sweep once: consecutive circuits that differ only in rz angles and
delay durations.

A calibration scan, a qiskit-experiments run or a Sampler's parameter sweep sends many circuits
that are one circuit with other numbers: the same gates on the same qubits and classical bits,
with other rz angles and delay durations. :func:`compile_circuits` compiles the first circuit
of such a run as :func:`~labqpu.pulse.compiler.compile_circuit` does: its gates are looked up,
their effects, waveforms and instrument settings resolved and its checks made. Every following
circuit is only read (``compiler._lower`` against the same tables: its angles and delays, and
that its gates, qubits and classical bits are the first one's, refused exactly as
``compile_circuit`` would refuse it). All points of the run are then scheduled and laid out in
one call of ``kernels.layout_batch_kernel`` (per ``BATCH_OP_ROWS`` op rows).

Each point's program equals ``compile_circuit``'s for its circuit, array for array (the same
content hash): the merge into one upload (``labqpu.backend.merge``) and each result's
provenance see the same programs. Dynamic circuits (mid-circuit measurement, ``if_else``,
active ``reset``) and circuits with pulse gates are compiled one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit.circuit import QuantumCircuit

from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.compiler import _compile_read, _filled, _lower, _read_with
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.kernels import layout_batch_kernel
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
    arguments), with every run of consecutive circuits that differ only in rz angles and delay
    durations compiled once (module docstring). ``check`` (optional) is called with each
    circuit just before it is read, and may raise. Raises ``CompilationError`` for the first
    circuit in order that ``compile_circuit`` refuses (or ``check``'s error, if it comes
    first)."""
    options = {"scheduling_method": scheduling_method,
               "feedforward_latency_samples": feedforward_latency_samples,
               "reset_method": reset_method, "pulse_gates": pulse_gates}
    programs: list[PulseProgram] = []
    structure: _Structure | None = None
    points: list[tuple[QuantumCircuit, list[int], list[float]]] = []
    for circuit in circuits:  # each read once: a point of the current sweep, or compiled
        if check is not None:
            check(circuit)
        tables, names = _read_with(circuit, snapshot, channels, options)
        lowered = _lower(circuit, tables, names)
        if structure is not None and structure.same(circuit, lowered):
            points.append((circuit, lowered[0][1], lowered[0][2]))
            continue
        if points:
            programs.extend(structure.programs(points))
            points = []
        program = _compile_read(circuit, lowered, snapshot, channels, tables, options)
        programs.append(program)
        structure = None if lowered is None else _Structure(
            program, channels, tables, options["scheduling_method"] != "asap", _shape(circuit),
            lowered)
    if points:
        programs.extend(structure.programs(points))
    return programs


@dataclass
class _Structure:
    """What the circuits of one sweep share: the first circuit's program, the tables it was
    compiled against, and that circuit as ``compiler._lower`` read it (op rows: gates, qubits,
    classical bits; the qubits used and measured)."""

    first: PulseProgram  # the first circuit's program
    channels: ChannelMap
    tables: Tables
    alap: bool  # a plain circuit is scheduled ASAP only with scheduling_method "asap"
    shape: tuple  # (qubits, clbits, classical registers)
    lowered: tuple  # the first circuit's ``_lower``

    def same(self, circuit: QuantumCircuit, lowered: tuple | None) -> bool:
        """Whether ``circuit``, read as ``lowered``, has this structure: it differs at most in
        its op rows' durations and parameters (and its name and metadata)."""
        if lowered is None or _shape(circuit) != self.shape:
            return False
        (effect, _, _, clbit), *rest = lowered
        (first_effect, _, _, first_clbit), *first_rest = self.lowered
        return effect == first_effect and clbit == first_clbit and rest == first_rest

    def programs(self, points: list[tuple[QuantumCircuit, list[int], list[float]]]
                 ) -> list[PulseProgram]:
        """The programs of ``points`` (circuit, durations, parameters), laid out in one
        ``layout_batch_kernel`` call per ``BATCH_OP_ROWS`` op rows."""
        (effect, _, _, _), _, _, _, _ = self.lowered
        size = max(1, BATCH_OP_ROWS // max(len(effect), 1))
        return [program for k in range(0, len(points), size)
                for program in self._lay_out(points[k:k + size])]

    def _lay_out(self, points: list[tuple[QuantumCircuit, list[int], list[float]]]
                 ) -> list[PulseProgram]:
        """The programs of ``points``, laid out in one ``layout_batch_kernel`` call; each
        program holds copies of its rows of the kernel's outputs."""
        tables, channels = self.tables, self.channels
        (effect, _, _, clbit), qptr, qflat, _, _ = self.lowered
        m, n = len(points), len(effect)
        durations = np.array([p[1] for p in points], dtype=np.int64).reshape(m, n)
        params = np.array([p[2] for p in points], dtype=np.float64).reshape(m, n)
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
        none = np.full(n, -1, dtype=np.int64)
        layout_batch_kernel(
            np.array(effect, dtype=np.int64), durations, params,
            np.array(clbit, dtype=np.int64), np.array(qptr, dtype=np.int64),
            np.array(qflat, dtype=np.int64), none, np.zeros(n, dtype=np.int64), none,
            self.shape[0], channels.num_qubits, self.alap, tables.effects(), len(tables.waves),
            tables.drive_ports(), *plays, *acqs, wave_order, *shifts, counts)
        first = self.first  # what every point shares with it: waveforms, settings, shapes
        shared = {name: getattr(first, name) for name in _SHARED}
        n_play, n_acq = first.play_port.shape[0], first.acq_port.shape[0]
        programs = []
        for k, (circuit, _, _) in enumerate(points):
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
                acq_disc_axis=np.zeros(n_acq, np.complex128), acq_disc_threshold=np.zeros(n_acq),
                lo_settings=dict(first.lo_settings), flux_bias_a=dict(first.flux_bias_a),
                header={**first.header, "name": circuit.name,
                        "creg_sizes": [list(r) for r in first.header["creg_sizes"]],
                        "metadata": dict(circuit.metadata or {})}))
        return programs


#: Op rows (points x ops) laid out per kernel call: the call's arrays take ~130 bytes per row.
BATCH_OP_ROWS = 1 << 18
#: Fields every point of a sweep takes from its first program as they are (frozen arrays and
#: plain values): the waveform table, the controller and the rack layout, the snapshot.
_SHARED = ("controller", "sample_rate_hz", "wave_offset", "wave_data", "num_clbits",
           "snapshot_id", "rack")


def _shape(circuit: QuantumCircuit) -> tuple:
    """What two circuits of a sweep must share besides their op rows: qubit and classical bit
    counts and the classical registers."""
    return (circuit.num_qubits, circuit.num_clbits,
            tuple((reg.name, reg.size) for reg in circuit.cregs))
