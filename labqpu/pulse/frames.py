"""Frames of the pulse layer's output channels: where a channel's frequency starts and how
phase and frequency changes move it. Shared by the pulse builder and the pulse-gate lowering
(``labqpu.pulse.gates``), so that a definition plays inside a circuit as it does on its own."""

from __future__ import annotations

import math
from collections.abc import Callable


def frame_frequency_hz(channel, calibrated: Callable[[int, str], float]) -> float:
    """The frame frequency ``channel`` starts at (Hz, IF relative to its LO), from
    ``calibrated(qubit, name)``: the qubit's (drive) or readout frequency minus its LO; 0 Hz on a
    flux channel."""
    q = channel.qubit
    if channel.kind == "drive":
        return calibrated(q, "frequency_hz") - calibrated(q, "drive_lo_frequency_hz")
    if channel.kind in ("readout", "acquire"):
        return calibrated(q, "readout_frequency_hz") - calibrated(q, "readout_lo_frequency_hz")
    return 0.0


def advance_frame(frame: list[float], op: str, value: float, start: int,
                  sample_rate_hz: float) -> None:
    """Apply ``op`` (shift_phase, set_phase, shift_frequency, set_frequency) with ``value``
    (rad or Hz) at sample ``start`` to ``frame`` = [frequency (Hz), phase (rad), continuity
    (rad)]. A frequency change keeps the carrier phase-continuous: the NCO runs on absolute
    sample time, so later plays gain 2 pi (f_old - f_new) start / sample_rate_hz."""
    if op == "shift_phase":
        frame[1] += value
    elif op == "set_phase":
        frame[1] = value
    else:
        new = frame[0] + value if op == "shift_frequency" else value
        frame[2] += 2.0 * math.pi * (frame[0] - new) * start / sample_rate_hz
        frame[0] = new
