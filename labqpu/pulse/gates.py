"""Pulse gates: a custom circuit gate whose definition is a pulse program with parameters.

::

    amp = Parameter("amp")
    with pulse.build(backend, name="rabi") as b:
        pulse.play(pulse.Drag(duration_samples=40, sigma_samples=10, beta_samples=0.3,
                              amp=amp), pulse.drive(0))
    rabi = backend.add_pulse_gate("rabi", b, qubits=[0])
    qc.append(rabi(0.25), [0])          # an instruction "rabi" with the value 0.25

The backend puts the gate in its Target on those qubits, with the definition's duration, so
``transpile`` keeps it and Qiskit's scheduling passes see its length; the compiler plays the
definition where the gate stands, with the circuit's values bound (``PulseGate.lower``).

Semantics of a definition inside a circuit:

* **Time** is relative to the gate's start; the gate lasts the definition's duration on the
  controller's timing grid and occupies all of its qubits. Durations and delays must be
  numbers (not parameters): the Target states one duration per gate.
* **Channels**: ``drive``, ``flux`` and ``readout`` of the gate's own qubits only; no
  ``acquire``, ``measure`` or ``if_result`` (a gate is an operation on qubits; measure with
  ``measure``).
* **Frames**: a play on ``drive(q)`` is at the phase of q's frame, which carries the
  circuit's virtual Z; ``shift_phase`` on ``drive(q)`` turns that frame for the rest of the
  circuit, as an ``rz`` would (``set_phase`` on a drive channel is refused: the frame belongs
  to the circuit). Frequency changes (``shift_frequency``, ``set_frequency``) hold until the
  gate's end, phase-continuous as in the pulse builder (the NCO runs on absolute sample
  time); calibrated gates after it play at their calibrated frequencies. ``flux`` and
  ``readout`` frames start at phase 0 and their default frequency in every gate.
* **Parameters** are the gate's parameters in a fixed order (``parameters``, default: sorted
  by name); the circuit instruction's values bind them by position. A value that is not a
  finite number, an amplitude beyond DAC full scale or a frequency beyond Nyquist is a
  ``CompilationError`` naming the gate, its qubits and the field, before anything is sent.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from qiskit.circuit import Instruction, Parameter, ParameterExpression
from qiskit.circuit.library import get_standard_gate_name_mapping

from labqpu.errors import CompilationError, PulseError
from labqpu.pulse.builder import Channel, PulseBuilder
from labqpu.pulse.frames import advance_frame, frame_frequency_hz
from labqpu.pulse.tables import Tables, effect_row
from labqpu.pulse.timing import TimingConstraints
from labqpu.pulse.tree import (
    AcquireNode,
    BarrierNode,
    DelayNode,
    FrameNode,
    PlayNode,
    bind_node,
    schedule,
)

#: Names a pulse gate may not take: Qiskit's standard gates (the transpiler knows their
#: matrices) and every instruction labqpu's Target or compiler gives a meaning.
RESERVED_NAMES = frozenset(get_standard_gate_name_mapping()) | {
    "sy", "measure", "measure_mid", "reset", "delay", "barrier", "if_else", "while_loop",
    "for_loop", "switch_case", "box", "break_loop", "continue_loop", "store"}


@dataclass(frozen=True, eq=False)
class PulseGate:
    """A pulse gate's definition on one tuple of device qubits (``define_pulse_gate``).

    Calling it with values (numbers or circuit ``Parameter``s, one per ``parameters``) gives
    the circuit instruction: ``qc.append(gate(0.3), [0])``.

    Attributes:
        name: the gate's name (the Target's instruction name).
        qubits: the device qubits it acts on, in the order of the circuit instruction's qubits.
        parameters: its parameters, in the order the instruction's values bind them.
        duration_samples: how long it lasts (samples, on the controller's timing grid).
        sample_rate_hz: the controller's sample rate (Hz).
    """

    name: str
    qubits: tuple[int, ...]
    parameters: tuple[Parameter, ...]
    duration_samples: int
    sample_rate_hz: float
    #: (start, leaf) of the definition's plays, delays and frame changes, in time order
    leaves: tuple = field(repr=False)

    @property
    def duration_s(self) -> float:
        """How long the gate lasts (s)."""
        return self.duration_samples / self.sample_rate_hz

    def __call__(self, *values: float | ParameterExpression) -> Instruction:
        """The circuit instruction with ``values`` for ``parameters`` (by position): an opaque
        ``Instruction`` on ``len(qubits)`` qubits. Not a ``Gate``: Qiskit's optimisation passes
        (2-qubit block consolidation at levels 2-3) compute the matrix of every gate next to a
        2-qubit gate, and a pulse gate has none, so as an ``Instruction`` they leave it alone
        and optimise around it."""
        if len(values) != len(self.parameters):
            raise PulseError(
                f"pulse gate {self.name!r} takes {len(self.parameters)} value(s) "
                f"({', '.join(p.name for p in self.parameters) or 'none'}), got {len(values)}",
                parameter=self.name)
        for parameter, value in zip(self.parameters, values, strict=True):
            if not isinstance(value, ParameterExpression) and (
                    isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise PulseError(
                    f"pulse gate {self.name!r}: {parameter.name} must be a real number or a "
                    f"circuit Parameter, got {value!r}", parameter=parameter.name)
        return Instruction(self.name, len(self.qubits), 0, list(values))

    def target_gate(self) -> Instruction:
        """The gate as the Target declares it: its parameters unbound."""
        return Instruction(self.name, len(self.qubits), 0, list(self.parameters))


def define_pulse_gate(name: str, definition: PulseBuilder, qubits: Sequence[int],
                      parameters: Sequence[Parameter] | None = None, *,
                      timing: TimingConstraints | None = None) -> PulseGate:
    """The pulse gate ``name`` on device ``qubits`` played as ``definition`` (a builder of
    ``pulse.build``). Raises ``PulseError`` naming the problem: a reserved or malformed name,
    qubits the device lacks, a channel of another qubit, an acquisition or conditional block, a
    ``set_phase`` on a drive channel, a duration that is a parameter, parameters that do not
    match the definition's, or a play off the controller's timing rules."""
    if not isinstance(definition, PulseBuilder):
        raise PulseError(f"pulse gate {name!r}: the definition must be a pulse builder (the "
                         f"value of `with pulse.build(backend) as b`), got "
                         f"{type(definition).__name__}", parameter="definition")
    if not isinstance(name, str) or not name.isidentifier() or name.lower() != name:
        raise PulseError(f"pulse gate name {name!r}: use a lower-case identifier",
                         parameter="name")
    if name in RESERVED_NAMES:
        raise PulseError(f"pulse gate name {name!r} is taken by a standard or native "
                         "instruction; choose another", parameter="name")
    qubits = _qubits(name, qubits, definition)
    params = _parameters(name, definition, parameters)
    root = bind_node(definition._root, {})  # a private copy of the instructions
    try:
        total, leaves = schedule(root)
    except (PulseError, TypeError) as exc:  # a TypeError: Qiskit's, of an unbound expression
        why = exc if isinstance(exc, PulseError) else "its parameters: " + ", ".join(
            sorted(p.name for p in definition.parameters))
        raise PulseError(f"pulse gate {name!r}: a duration depends on a parameter ({why}); a "
                         "pulse gate's durations and delays must be numbers (the Target states "
                         "one duration per gate)", parameter="duration_samples") from exc
    timing = timing or definition.channels.timing
    order = sorted(range(len(leaves)), key=lambda i: (leaves[i][0], i))
    leaves = tuple(leaves[i] for i in order if not isinstance(leaves[i][1], BarrierNode))
    for start, leaf in leaves:
        _check_leaf(name, qubits, start, leaf, timing)
    return PulseGate(name, qubits, params, timing.pad(max(total, 1)),
                     definition.sample_rate_hz, leaves)


def _qubits(name: str, qubits: Sequence[int], definition: PulseBuilder) -> tuple[int, ...]:
    try:
        out = tuple(int(q) for q in qubits)
    except (TypeError, ValueError) as exc:
        raise PulseError(f"pulse gate {name!r}: qubits must be device qubit numbers, got "
                         f"{qubits!r}", parameter="qubits") from exc
    n = definition.channels.num_qubits
    if not out or len(set(out)) != len(out) or not all(0 <= q < n for q in out):
        raise PulseError(f"pulse gate {name!r}: qubits {list(out)} must be distinct qubits of "
                         f"{definition.channels.device_name} (0..{n - 1})", parameter="qubits")
    return out


def _parameters(name: str, definition: PulseBuilder,
                parameters: Sequence[Parameter] | None) -> tuple[Parameter, ...]:
    used = definition.parameters
    if parameters is None:
        return tuple(sorted(used, key=lambda p: p.name))
    given = tuple(parameters)
    if not all(isinstance(p, Parameter) for p in given) or len(set(given)) != len(given):
        raise PulseError(f"pulse gate {name!r}: parameters must be distinct Parameter objects",
                         parameter="parameters")
    if set(given) != set(used):
        raise PulseError(
            f"pulse gate {name!r}: parameters {[p.name for p in given]} do not match the "
            f"definition's {sorted(p.name for p in used)} (give the same Parameter objects "
            "the definition uses)", parameter="parameters")
    return given


def _check_leaf(name: str, qubits: tuple[int, ...], start: int, leaf,
                timing: TimingConstraints) -> None:
    where = f"pulse gate {name!r} on qubits {list(qubits)}"
    if isinstance(leaf, AcquireNode):
        raise PulseError(f"{where}: acquisitions and measure cannot be part of a gate; measure "
                         "with the circuit's measure", parameter="acquire")
    channel = leaf.channel
    if getattr(leaf, "cond", None) is not None:
        raise PulseError(f"{where}: conditional blocks cannot be part of a gate",
                         parameter="if_result")
    if channel.qubit not in qubits:
        raise PulseError(f"{where}: plays on {channel}, a channel of another qubit; a gate may "
                         f"use only the channels of its qubits {list(qubits)}",
                         qubits=(channel.qubit,), parameter="channel")
    if isinstance(leaf, FrameNode) and leaf.op == "set_phase" and channel.kind == "drive":
        raise PulseError(f"{where}: set_phase on {channel}: the drive frame carries the "
                         "circuit's virtual Z; use shift_phase", parameter="set_phase")
    if isinstance(leaf, PlayNode):
        length = int(leaf.shape.duration_samples)
        if start % timing.pulse_alignment or length % timing.granularity \
                or length < timing.min_length:
            raise PulseError(
                f"{where}: the {leaf.shape.kind} on {channel} at sample {start} ({length} "
                f"samples) breaks the controller's timing rules (pulse alignment "
                f"{timing.pulse_alignment}, granularity {timing.granularity}, minimum length "
                f"{timing.min_length} samples)", parameter="timing")


# ------------------------------------------------------------------------ lowering


@dataclass
class Member:
    """One effect of a lowered pulse gate: an effect row (``tables.effect_row`` fields, with
    ``wave`` a local waveform id), its start after the gate's start (samples), its length and
    the channel it plays on (None for a frame change)."""

    row: tuple
    offset: int
    duration: int
    channel: Channel | None = None


def lower(gate: PulseGate, values: Sequence[float], tables: Tables, circuit_name: str
          ) -> tuple[list[Member], list[tuple[tuple, np.ndarray]]]:
    """The effects of ``gate`` played with ``values`` against the compilation's ``tables``:
    (members in time order, local waveforms as (key, samples)); a member's ``wave`` is -1 - its
    index in the local waveforms. Raises ``CompilationError`` naming the gate, qubits and
    field."""
    where = f"circuit {circuit_name!r}: pulse gate {gate.name!r} on qubits {list(gate.qubits)}"
    bindings = dict(zip(gate.parameters, values, strict=True))
    fs = gate.sample_rate_hz
    channels = tables.channels
    frames: dict = {}  # channel -> [frequency (Hz), phase (rad), continuity (rad)]
    defaults: dict = {}  # channel -> frame frequency at the gate's start (Hz)
    members: list[Member] = []
    waves: dict[tuple, int] = {}
    local_waves: list[tuple[tuple, np.ndarray]] = []

    def frame(channel) -> list[float]:
        if channel not in frames:
            defaults[channel] = frame_frequency_hz(channel, tables.cal.qubit)
            frames[channel] = [defaults[channel], 0.0, 0.0]
        return frames[channel]

    for start, leaf in gate.leaves:
        try:
            bound = bind_node(leaf, bindings)
            if isinstance(bound, DelayNode):
                continue
            f = frame(bound.channel)
            if isinstance(bound, FrameNode):
                value = float(bound.value)
                if bound.op == "shift_phase" and bound.channel.kind == "drive":
                    members.append(Member(effect_row(shift_qubit_a=bound.channel.qubit,
                                                     shift_a=-value), start, 0))
                else:
                    advance_frame(f, bound.op, value, start, fs)
                continue
            shape = bound.shape
            amp = float(shape.amp)
            key = shape.envelope_key()
            if key not in waves:
                waves[key] = len(local_waves)
                local_waves.append((key, shape.envelope(np.complex64)))
            envelope = local_waves[waves[key]][1]
        except (PulseError, TypeError) as exc:
            raise CompilationError(f"{where}: {exc}", circuit=circuit_name, qubits=gate.qubits,
                                   instruction=gate.name) from exc
        channel = bound.channel
        peak = float(np.max(np.abs(envelope))) * abs(amp) if envelope.size else 0.0
        if peak > 1.0 + 1e-6:
            raise CompilationError(
                f"{where}: the {shape.kind} on {channel} at amp {amp:.4g} reaches {peak:.4g} of "
                "DAC full scale (max 1)", circuit=circuit_name, qubits=gate.qubits,
                instruction=gate.name)
        if not abs(f[0]) <= fs / 2:
            raise CompilationError(
                f"{where}: the {shape.kind} on {channel} at {f[0]} Hz is beyond the Nyquist "
                f"frequency {fs / 2} Hz", circuit=circuit_name, qubits=gate.qubits,
                instruction=gate.name)
        # The continuity term 2 pi (f0 - f) t_change / fs of every frequency change, with
        # t_change = gate start + its offset: a constant plus ramp x (the play's start).
        ramp = 2.0 * math.pi * (defaults[channel] - f[0]) / fs
        constant = f[1] + f[2] + float(shape.angle_rad) - ramp * start
        on_drive = channel.kind == "drive"
        port = channels.output(getattr(channels.qubits[channel.qubit], channel.kind))
        members.append(Member(effect_row(
            play_port=port, wave=-1 - waves[key], amp=amp, freq=f[0], length=envelope.shape[0],
            phase_qubit=channel.qubit if on_drive else -1, phase_offset=constant,
            phase_ramp=ramp), start, envelope.shape[0], channel))
    for channel, f in frames.items():
        # Calibrated gates after this one play at the frame's own frequency again: that return
        # at the gate's end is phase-continuous too, and the phase the gate's frequency changes
        # left turns the qubit's frame for the rest of the circuit, as in the builder (it was
        # dropped: sx, a detuned wait of 2 pi delta D = pi, sx read 1, the builder's program 0).
        carry = f[2] + 2.0 * math.pi * (f[0] - defaults[channel]) * gate.duration_samples / fs
        if channel.kind == "drive" and carry:
            members.append(Member(effect_row(shift_qubit_a=channel.qubit, shift_a=-carry),
                                  gate.duration_samples, 0))
    return members, local_waves

