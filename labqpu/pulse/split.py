"""Splitting a program that spans several controllers into one program per controller.

A rack's programs are compiled on *rack ports* (``ChannelMap``): controller k's output p is
rack output p plus the outputs of the controllers before it, and likewise for inputs. Each
controller runs its part on its own port numbers; the parts share the program's duration, so
that they run in lockstep from one trigger (docs/protocol.md, synchronised runs). Waveforms,
acquisitions, conditional blocks and phase shifts are renumbered within each part. A
conditional block must depend on an acquisition of its own controller: the controllers share
no feed-forward bus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labqpu.errors import PulseError
from labqpu.pulse.program import PulseProgram


@dataclass(frozen=True)
class ControllerPart:
    """One controller's part of a program (:func:`split_program`).

    Attributes:
        controller: the controller's name.
        program: the part, on that controller's own ports.
        acquisitions: for each acquisition of the part, its index in the whole program (so
            column j of the part's results is column ``acquisitions[j]`` of the whole).
    """

    controller: str
    program: PulseProgram
    acquisitions: np.ndarray


def _renumber(used: np.ndarray) -> np.ndarray:
    """Map from old index to new (-1 where unused) for the sorted unique indices ``used``."""
    size = int(used.max()) + 1 if used.size else 0
    table = np.full(size, -1, dtype=np.int64)
    table[used] = np.arange(used.shape[0])
    return table


def _part(program: PulseProgram, name: str, out0: int, outputs: int, in0: int, inputs: int,
          keep: bool = False) -> ControllerPart | None:
    plays = np.flatnonzero((program.play_port >= out0) & (program.play_port < out0 + outputs))
    acqs = np.flatnonzero((program.acq_port >= in0) & (program.acq_port < in0 + inputs))
    shifts = np.flatnonzero((program.shift_port >= out0)
                            & (program.shift_port < out0 + outputs))
    if not (plays.size or acqs.size or keep):
        return None
    waves = np.unique(program.play_wave[plays])
    wave_map = _renumber(waves)
    lengths = program.wave_offset[waves + 1] - program.wave_offset[waves]
    offsets = np.zeros(waves.shape[0] + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = (np.concatenate([program.waveform(int(w)) for w in waves]) if waves.size
            else np.zeros(0, np.complex64))
    acq_map = np.full(program.acq_port.shape[0], -1, dtype=np.int64)
    acq_map[acqs] = np.arange(acqs.shape[0])
    play_block = program.play_block[plays]
    shift_block = program.shift_block[shifts]
    used = set(np.concatenate([play_block[play_block >= 0],
                               shift_block[shift_block >= 0]]).tolist())
    for b in sorted(used):  # a block's ancestors come with it
        parent = int(program.block_parent[b])
        while parent >= 0 and parent not in used:
            used.add(parent)
            parent = int(program.block_parent[parent])
    blocks = np.array(sorted(used), dtype=np.int64)
    for b in blocks.tolist():
        j = int(program.block_acq[b])
        if acq_map[j] < 0:
            raise PulseError(
                f"program {program.header.get('name', '')!r}: a pulse on controller {name} "
                f"depends on acquisition {j} (qubit {int(program.acq_qubit[j])}), which another "
                "controller digitizes; the controllers share no feed-forward bus",
                parameter="block_acq")
    block_map = _renumber(blocks)

    def local_block(b: np.ndarray) -> np.ndarray:
        return np.where(b >= 0, block_map[np.maximum(b, 0)] if blocks.size else -1, -1)

    part = PulseProgram(
        controller=name, sample_rate_hz=program.sample_rate_hz,
        duration_samples=program.duration_samples,
        play_port=program.play_port[plays] - out0, play_start=program.play_start[plays],
        play_wave=wave_map[program.play_wave[plays]], play_amp=program.play_amp[plays],
        play_amp_ref=program.play_amp_ref[plays],
        play_phase_rad=program.play_phase_rad[plays], play_freq_hz=program.play_freq_hz[plays],
        play_block=local_block(play_block), wave_offset=offsets, wave_data=data,
        acq_port=program.acq_port[acqs] - in0, acq_start=program.acq_start[acqs],
        acq_duration=program.acq_duration[acqs], acq_freq_hz=program.acq_freq_hz[acqs],
        acq_qubit=program.acq_qubit[acqs], acq_clbit=program.acq_clbit[acqs],
        acq_disc_axis=program.acq_disc_axis[acqs],
        acq_disc_threshold=program.acq_disc_threshold[acqs],
        block_acq=acq_map[program.block_acq[blocks]], block_value=program.block_value[blocks],
        block_parent=local_block(program.block_parent[blocks]),
        shift_port=program.shift_port[shifts] - out0, shift_start=program.shift_start[shifts],
        shift_phase_rad=program.shift_phase_rad[shifts], shift_block=local_block(shift_block),
        param_names=program.param_names, param_values=program.param_values,
        lo_settings=dict(program.lo_settings), flux_bias_a=dict(program.flux_bias_a),
        num_clbits=program.num_clbits, header=dict(program.header),
        snapshot_id=program.snapshot_id, snapshot_hash=program.snapshot_hash)
    return ControllerPart(name, part, acqs)


def split_program(program: PulseProgram) -> list[ControllerPart]:
    """Each controller's part of a program that spans several (``program.rack``), in rack
    order, leaving out controllers with nothing to play or acquire (a program with nothing at
    all runs on the rack's first controller); a one-controller program is its own only part.
    ``PulseError`` if a conditional block depends on another controller's acquisition (the
    controllers share no feed-forward bus) or a port is on no controller."""
    if not program.rack:
        return [ControllerPart(program.controller, program,
                               np.arange(program.acq_port.shape[0]))]
    outputs = sum(o for _, o, _ in program.rack)
    inputs = sum(i for _, _, i in program.rack)
    for what, ports, limit in (("output", program.play_port, outputs),
                               ("output", program.shift_port, outputs),
                               ("input", program.acq_port, inputs)):
        bad = ports[(ports < 0) | (ports >= limit)]
        if bad.size:
            raise PulseError(f"program {program.header.get('name', '')!r}: rack {what} port "
                             f"{int(bad[0])} is not on any controller (the rack has {limit})",
                             parameter="rack")
    parts = []
    out0 = in0 = 0
    for name, n_out, n_in in program.rack:
        part = _part(program, name, out0, n_out, in0, n_in)
        if part is not None:
            parts.append(part)
        out0 += n_out
        in0 += n_in
    if not parts:  # nothing to play or acquire: the first controller still runs the shots
        name, n_out, n_in = program.rack[0]
        parts.append(_part(program, name, 0, n_out, 0, n_in, keep=True))
    return parts
