"""The pulse layer: pulse programs, their builder, waveform kernels and the circuit compiler.

``PulseProgram`` is plain data (per-channel arrays of plays, a waveform table, acquisitions,
LO and flux-bias settings) that ``backend.run(program)`` runs directly. ``ProgramBuilder``
assembles one; ``compile_circuit`` turns a transpiled circuit and a calibration snapshot into
one, on the channels a ``ChannelMap`` names. This package imports nothing of labqpu above
``store``.
"""

from __future__ import annotations

from labqpu.pulse.channels import ChannelMap, QubitChannels
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.program import LoSetting, ProgramBuilder, PulseProgram, WaveformTable

__all__ = [
    "ChannelMap",
    "LoSetting",
    "ProgramBuilder",
    "PulseProgram",
    "QubitChannels",
    "WaveformTable",
    "compile_circuit",
]
