"""The pulse layer: pulse programs, their builder, waveform kernels and the circuit compiler.

``with pulse.build(backend):`` and the module-level instructions (``play``, ``delay``,
``shift_phase`` ..., ``align_right`` ...) on qubit-relative channels (``drive(q)``,
``flux(q)``, ``readout(q)``, ``acquire_channel(q)``) write pulse-level programs with pulse
shapes (``Gaussian``, ``Drag``, ``GaussianSquare``, ``FlatTop``, ``Cosine``, ``Constant``,
``Waveform``) and ``Parameter``s; see ``docs/pulse.md``. A builder with parameters can also
define a custom circuit gate, a ``PulseGate`` (``LabBackend.add_pulse_gate``).

``PulseProgram`` is plain data (per-channel arrays of plays, a waveform table, acquisitions,
LO and flux-bias settings) that ``backend.run(program)`` runs directly. ``ProgramBuilder``
assembles one; ``compile_circuit`` turns a transpiled circuit and a calibration snapshot into
one, on the channels a ``ChannelMap`` names, and ``compile_circuits`` a list of them, compiling
a sweep's circuits once. This package imports nothing of labqpu above ``store``.
"""

from __future__ import annotations

from labqpu.pulse.batch import compile_circuits
from labqpu.pulse.builder import (
    AcquisitionRef,
    Channel,
    PulseBuilder,
    acquire,
    acquire_channel,
    align_left,
    align_right,
    align_sequential,
    barrier,
    build,
    calibrated_drag,
    delay,
    drive,
    flux,
    if_result,
    measure,
    play,
    readout,
    set_frequency,
    set_phase,
    shift_frequency,
    shift_phase,
)
from labqpu.pulse.channels import ChannelMap, QubitChannels
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.program import LoSetting, ProgramBuilder, PulseProgram, WaveformTable
from labqpu.pulse.shapes import (
    Constant,
    Cosine,
    Drag,
    FlatTop,
    Gaussian,
    GaussianSquare,
    Shape,
    Waveform,
    shape_from_dict,
)

__all__ = [
    "AcquisitionRef",
    "Channel",
    "ChannelMap",
    "Constant",
    "Cosine",
    "Drag",
    "FlatTop",
    "Gaussian",
    "GaussianSquare",
    "LoSetting",
    "ProgramBuilder",
    "PulseBuilder",
    "PulseGate",
    "PulseProgram",
    "QubitChannels",
    "Shape",
    "Waveform",
    "WaveformTable",
    "acquire",
    "acquire_channel",
    "align_left",
    "align_right",
    "align_sequential",
    "barrier",
    "build",
    "calibrated_drag",
    "compile_circuit",
    "compile_circuits",
    "delay",
    "drive",
    "flux",
    "if_result",
    "measure",
    "play",
    "readout",
    "set_frequency",
    "set_phase",
    "shape_from_dict",
    "shift_frequency",
    "shift_phase",
]
