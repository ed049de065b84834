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
from labqpu.pulse.compiler import (
    _CONTROL_FLOW,
    _CONTROL_FLOW_AND_RESET,
    _filled,
    _lower,
    compile_circuit,
)
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.kernels import layout_batch_kernel
from labqpu.pulse.program import PulseProgram
from labqpu.pulse.tables import Tables, tables_for
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
    i = 0
    while i < len(circuits):
        if check is not None:
            check(circuits[i])
        first = compile_circuit(circuits[i], snapshot, channels, **options)
        programs.append(first)
        structure = _Structure.of(circuits[i], first, snapshot, channels, options) \
            if i + 1 < len(circuits) else None
        points = []
        if structure is not None:
            for circuit in circuits[i + 1:]:
                if check is not None:
                    check(circuit)
                numbers = structure.numbers(circuit)
                if numbers is None:
                    break
                points.append((circuit, *numbers))
        if points:
            programs.extend(structure.programs(points))
        i += 1 + len(points)
    return programs


@dataclass
class _Structure:
    """What the circuits of one sweep share: the first circuit read into op rows (gates,
    qubits, classical bits; ``compiler._lower``), its tables and its layout inputs."""

    first: PulseProgram  # the first circuit's program
    channels: ChannelMap
    tables: Tables
    names: frozenset[str]  # instructions that make a circuit dynamic
    alap: bool
    shape: tuple  # (qubits, clbits, classical registers)
    effect: list[int]
    clbit: list[int]
    qptr: list[int]
    qflat: list[int]
    used: set[int]
    measured: set[int]

    @classmethod
    def of(cls, circuit: QuantumCircuit, first: PulseProgram, snapshot: Snapshot,
           channels: ChannelMap, options: dict) -> _Structure | None:
        """The structure of ``circuit``, whose program is ``first`` (so it reads without error),
        or None when it is not a plain circuit: only plain circuits are compiled as sweeps.
        A plain circuit is scheduled ASAP only with ``scheduling_method`` "asap"
        (``compile_circuit``)."""
        tables = tables_for(snapshot, channels)
        active = options["reset_method"] == "active" \
            and options["feedforward_latency_samples"] is not None
        names = _CONTROL_FLOW_AND_RESET if active else _CONTROL_FLOW
        if options["pulse_gates"]:
            names = names | frozenset(options["pulse_gates"])
        lowered = _lower(circuit, tables, names)
        if lowered is None:
            return None
        (effect, _, _, clbit), qptr, qflat, used, measured = lowered
        return cls(first, channels, tables, names, options["scheduling_method"] != "asap",
                   _shape(circuit), effect, clbit, qptr, qflat, used, measured)

    def numbers(self, circuit: QuantumCircuit) -> tuple[list[int], list[float]] | None:
        """(durations in samples, parameters) of ``circuit``'s op rows when it has this
        structure, else None."""
        if _shape(circuit) != self.shape:
            return None
        lowered = _lower(circuit, self.tables, self.names)
        if lowered is None:
            return None
        (effect, duration, param, clbit), qptr, qflat, used, measured = lowered
        if effect != self.effect or clbit != self.clbit or qptr != self.qptr \
                or qflat != self.qflat or used != self.used or measured != self.measured:
            return None
        return duration, param

    def programs(self, points: list[tuple[QuantumCircuit, list[int], list[float]]]
                 ) -> list[PulseProgram]:
        """The programs of ``points`` (circuit, durations, parameters), laid out in one
        ``layout_batch_kernel`` call per ``BATCH_OP_ROWS`` op rows."""
        size = max(1, BATCH_OP_ROWS // max(len(self.effect), 1))
        return [program for k in range(0, len(points), size)
                for program in self._lay_out(points[k:k + size])]

    def _lay_out(self, points: list[tuple[QuantumCircuit, list[int], list[float]]]
                 ) -> list[PulseProgram]:
        """The programs of ``points``, laid out in one ``layout_batch_kernel`` call; each
        program holds copies of its rows of the kernel's outputs."""
        tables, channels = self.tables, self.channels
        m, n = len(points), len(self.effect)
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
            np.array(self.effect, dtype=np.int64), durations, params,
            np.array(self.clbit, dtype=np.int64), np.array(self.qptr, dtype=np.int64),
            np.array(self.qflat, dtype=np.int64), none, np.zeros(n, dtype=np.int64), none,
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
