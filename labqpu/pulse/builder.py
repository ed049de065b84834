"""A pulse-level builder on qubit-relative channels, in the style of the old ``qiskit.pulse``.

::

    from qiskit.circuit import Parameter
    from labqpu import pulse

    amp = Parameter("amp")
    with pulse.build(backend, name="rabi") as rabi:
        pulse.play(pulse.Drag(duration_samples=40, sigma_samples=10, beta_samples=0.3, amp=amp),
                   pulse.drive(0))
        pulse.measure(0, clbit=0)
    programs = [rabi.assign_parameters({amp: a}) for a in (0.1, 0.2, 0.3)]
    backend.run(programs, shots=500)

The model:

* **Channels** are qubit-relative: ``drive(q)``, ``flux(q)``, ``readout(q)`` (outputs) and
  ``acquire_channel(q)`` (the digitiser input). The device's ``ChannelMap`` resolves them to
  controller ports when the program is built.
* **Time** is in samples at the controller's sample rate. Instructions are placed by their
  enclosing alignment block: ``align_left`` (the default: each instruction as early as its
  channels allow), ``align_right`` (as late as possible, flush with the block's end) and
  ``align_sequential`` (one after another, whatever their channels). A block is placed as one
  rigid unit on the channels it uses. ``barrier(*channels)`` lines its channels up (all the
  block's channels when none are given).
* **Frames**: each output channel has a frequency (Hz, the IF relative to the channel's LO: the
  signal leaves the mixer at f_LO + f) and a phase (rad). ``drive(q)`` starts at the calibrated
  qubit IF, ``readout(q)`` at the calibrated readout IF, ``flux(q)`` at 0 Hz. ``shift_phase`` /
  ``set_phase`` and ``shift_frequency`` / ``set_frequency`` change them from their place in
  time on. The carrier stays phase-continuous across a frequency change (as in qiskit.pulse):
  the controller's NCO runs on absolute sample time, so the builder adds
  2 pi (f_old - f_new) t to the phase of later plays. An acquisition demodulates at the
  frequency of its qubit's ``readout`` frame.
* **Parameters**: any number (shape fields, amplitudes, phases, frequencies, durations, delays)
  may be a ``qiskit.circuit.Parameter`` or an expression of parameters. ``assign_parameters``
  binds them all and returns a concrete ``PulseProgram``; an unbound parameter, a NaN or
  infinite value, or a duration that is not a whole number of samples is a ``PulseError``
  naming it.
* **Feed-forward**: ``acquire`` and ``measure`` return an ``AcquisitionRef``;
  ``with b.if_result(ref, 1):`` opens a block whose plays and ``shift_phase`` run only in shots
  where that acquisition was discriminated as 1 (or 0), by the controller, with the qubit's
  calibrated discriminator. Blocks nest: an inner block runs only when the outer one runs
  too (the controller's nested blocks). The block starts no earlier than the acquisition's
  end plus the controller's feed-forward latency (its ``hello`` capabilities); acquisitions,
  ``set_phase`` and frequency changes cannot be conditional.
* **Instrument settings**: the program carries the LO settings of every qubit whose drive or
  readout it uses, and the flux bias of every calibrated qubit, from the calibration snapshot,
  exactly as compiled circuits do.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression

from labqpu.errors import PulseError
from labqpu.pulse.channels import (
    CHANNEL_KINDS,
    AcquisitionRef,
    Channel,
    ChannelMap,
    acquire_channel,
    drive,
    flux,
    readout,
)
from labqpu.pulse.frames import advance_frame, frame_frequency_hz
from labqpu.pulse.program import MAX_CLBITS, ProgramBuilder, PulseProgram
from labqpu.pulse.shapes import (
    Bindings,
    Drag,
    FlatTop,
    Shape,
    Value,
    require_number,
)
from labqpu.pulse.tables import flux_biases, grid_samples
from labqpu.pulse.tree import (
    AcquireNode,
    BarrierNode,
    Block,
    Cond,
    DelayNode,
    FrameNode,
    PlayNode,
    bind_node,
    leaf_duration,
    parameters_of,
    schedule,
    swept_elsewhere,
)
from labqpu.store import Snapshot

#: Rise and fall of the calibrated readout pulse of ``measure`` (s), as in the compiler.
READOUT_RISE_S = 20e-9
ALIGNMENTS = ("left", "right", "sequential")


def _real_or_parameter(value: Value, what: str) -> None:
    """``PulseError`` naming ``what`` unless ``value`` is a finite real number or a Qiskit
    ``Parameter`` (expression): a string such as ``"40"`` is not read as a number, and a NaN
    phase is refused here, where it was written, not at ``run()``."""
    if not isinstance(value, ParameterExpression) and not math.isfinite(
            require_number(value, what)):
        raise PulseError(f"{what} must be finite, got {value!r}", parameter=what)


# ------------------------------------------------------------------------ the builder


class PulseBuilder:
    """Collects pulse instructions in alignment blocks; ``assign_parameters`` makes a program.

    Args:
        channels: the device's channel map (``backend.channels``).
        snapshot: the calibration snapshot that supplies LO settings, flux biases, default
            frame frequencies and the ``measure`` readout pulse (``backend.snapshot``).
        name: the program's name (its Result header's ``name``).
    """

    def __init__(self, channels: ChannelMap, snapshot: Snapshot, name: str = "pulse_program",
                 *, feedforward_latency_samples: int | None = None) -> None:
        self.channels = channels
        self.snapshot = snapshot
        self.name = name
        #: Samples from an acquisition's end until a play may depend on its result (the
        #: controller's ``feedforward.latency_samples``); None: no feed-forward.
        self.feedforward_latency_samples = feedforward_latency_samples
        self._root = Block("left")
        self._stack = [self._root]
        self._cond: Cond = None
        self._acquisitions = 0
        #: The parameters of the instructions so far, by name (names are unique in a program).
        self._parameters: dict[str, Parameter] = {}

    @classmethod
    def for_backend(cls, backend, name: str = "pulse_program") -> PulseBuilder:
        """A builder on ``backend``'s wiring, current calibration snapshot and its controller's
        feed-forward latency; ``PulseError`` for anything that is not a backend (a device
        name: take ``LabProvider().backend(name)``). A calibration node's ``Kit`` serves as
        one: its snapshot holds the values its run has measured so far."""
        if not all(hasattr(backend, attr) for attr in
                   ("channels", "snapshot", "feedforward_latency_samples")):
            raise PulseError(f"a pulse builder needs a labqpu backend (LabProvider().backend()) "
                             f"or, in a calibration node, its kit; got {backend!r} "
                             f"({type(backend).__name__})", parameter="backend")
        channels = backend.channels
        return cls(channels, backend.snapshot, name,
                   feedforward_latency_samples=backend.feedforward_latency_samples)

    @property
    def sample_rate_hz(self) -> float:
        """Sample rate of the controller (Hz)."""
        return self.channels.sample_rate_hz

    # -------------------------------------------------------------- instructions

    def _check_channel(self, channel: Channel, kinds: tuple[str, ...]) -> Channel:
        if not isinstance(channel, Channel) or channel.kind not in kinds:
            raise PulseError(f"expected a {' or '.join(kinds)} channel, got {channel!r}",
                             parameter="channel")
        if channel.qubit not in self.channels.qubits:
            raise PulseError(f"{channel}: {self.channels.device_name} has qubits "
                             f"0..{self.channels.num_qubits - 1}", qubits=(channel.qubit,),
                             parameter="channel")
        return channel

    def _add(self, node) -> None:
        new = parameters_of(node)
        named = Counter(p.name for p in new)
        for parameter in sorted(new, key=lambda p: p.name):  # all checked before any is kept
            known = self._parameters.get(parameter.name, parameter)
            if known != parameter or named[parameter.name] > 1:
                raise PulseError(
                    f"program {self.name!r}: another Parameter named {parameter.name!r} is in "
                    "it already; sweeps and pulse gates take values by name, so two would get "
                    "the same one: use one Parameter, or give them different names",
                    parameter=parameter.name)
        self._parameters.update((p.name, p) for p in new)
        self._stack[-1].children.append(node)

    def play(self, shape: Shape, channel: Channel) -> None:
        """Play ``shape`` on an output ``channel`` (drive, flux or readout)."""
        if not isinstance(shape, Shape):
            raise PulseError(f"play needs a pulse shape, got {shape!r}", parameter="shape")
        self._add(PlayNode(self._check_channel(channel, ("drive", "flux", "readout")), shape,
                        self._cond))

    def delay(self, duration_samples: Value, channel: Channel) -> None:
        """Keep ``channel`` idle for ``duration_samples`` (samples, whole, >= 0)."""
        channel = self._check_channel(channel, CHANNEL_KINDS)
        _real_or_parameter(duration_samples, f"delay on {channel}")
        self._add(DelayNode(channel, duration_samples))

    def shift_phase(self, phase_rad: Value, channel: Channel) -> None:
        """Add ``phase_rad`` (rad) to the frame of ``channel`` from here on."""
        self._frame(channel, "shift_phase", phase_rad)

    def set_phase(self, phase_rad: Value, channel: Channel) -> None:
        """Set the phase of the frame of ``channel`` to ``phase_rad`` (rad) from here on. The
        phase a frequency change added to keep the carrier continuous (2 pi (f_old - f_new)
        t, ``frames.advance_frame``) stays on top of it: after a frequency excursion and
        back, a play's phase is ``phase_rad`` plus that, not ``phase_rad`` alone."""
        self._frame(channel, "set_phase", phase_rad)

    def shift_frequency(self, frequency_hz: Value, channel: Channel) -> None:
        """Add ``frequency_hz`` (Hz) to the frame frequency (IF) of ``channel`` from here on."""
        self._frame(channel, "shift_frequency", frequency_hz)

    def set_frequency(self, frequency_hz: Value, channel: Channel) -> None:
        """Set the frame frequency of ``channel`` to ``frequency_hz`` (Hz, IF relative to the
        channel's LO) from here on."""
        self._frame(channel, "set_frequency", frequency_hz)

    def _frame(self, channel: Channel, op: str, value: Value) -> None:
        if self._cond is not None and op != "shift_phase":
            raise PulseError(f"{op} on {channel} inside if_result: only shift_phase can be "
                             "conditional", parameter="op")
        channel = self._check_channel(channel, ("drive", "flux", "readout"))
        _real_or_parameter(value, f"{op} on {channel}")
        self._add(FrameNode(channel, op, value, self._cond))

    def acquire(self, duration_samples: Value, qubit: int | Channel, clbit: int
                ) -> AcquisitionRef:
        """Integrate ``qubit``'s digitiser input for ``duration_samples`` (samples), demodulated
        at its readout frame frequency; the result lands in classical bit ``clbit``. Returns
        a reference for ``if_result``."""
        channel = qubit if isinstance(qubit, Channel) else acquire_channel(qubit)
        self._check_channel(channel, ("acquire",))
        _real_or_parameter(duration_samples, f"acquire on qubit {channel.qubit}")
        if isinstance(clbit, bool) or not isinstance(clbit, int | np.integer) \
                or not 0 <= clbit < MAX_CLBITS:
            raise PulseError(f"acquire on qubit {channel.qubit}: clbit must be an int in "
                             f"0..{MAX_CLBITS - 1}, got {clbit!r}", qubits=(channel.qubit,),
                             parameter="clbit")
        if self._cond is not None:
            raise PulseError(f"acquire on qubit {channel.qubit} inside if_result: acquisitions "
                             "cannot be conditional", qubits=(channel.qubit,),
                             parameter="acquire")
        self._acquisitions += 1
        node = AcquireNode(channel.qubit, duration_samples, int(clbit), self._acquisitions)
        self._add(node)
        return AcquisitionRef(node.qubit, node.clbit, node.ident, id(self))

    @contextlib.contextmanager
    def if_result(self, acquisition: AcquisitionRef, value: int) -> Iterator[None]:
        """A left-aligned block whose plays and ``shift_phase`` run only in shots where
        ``acquisition`` (from ``acquire`` or ``measure`` of this builder) was discriminated as
        ``value`` (0 or 1). The block starts no earlier than the acquisition's end plus the
        controller's feed-forward latency; it uses the acquired qubit's acquire channel, so
        later acquisitions of that qubit follow it. Blocks nest: inside another
        ``if_result`` the block runs only when both conditions hold."""
        if self.feedforward_latency_samples is None:
            raise PulseError("if_result: the controller states no feed-forward latency, so it "
                             "cannot run conditional blocks", parameter="feedforward")
        if not (isinstance(acquisition, AcquisitionRef) and acquisition.owner == id(self)
                and 0 < acquisition.ident <= self._acquisitions):
            raise PulseError(f"if_result needs an acquisition of this builder (the value "
                             f"acquire() or measure() returned), got {acquisition!r}",
                             parameter="acquisition")
        if isinstance(value, bool) or value not in (0, 1):
            raise PulseError(f"if_result: value must be 0 or 1, got {value!r}",
                             parameter="value")
        outer = self._cond
        with self._align("left"):
            self.delay(self.feedforward_latency_samples, acquire_channel(acquisition.qubit))
            self.barrier()
            self._cond = (*(outer or ()), (acquisition.ident, int(value)))
            try:
                yield
            finally:
                self._cond = outer

    def measure(self, qubit: int, clbit: int) -> AcquisitionRef:
        """The calibrated readout of ``qubit``: its readout pulse and an acquisition over the same
        samples, into ``clbit``. It occupies all of the qubit's channels, so it starts after
        every earlier pulse on the qubit and nothing later on the qubit overlaps it."""
        fs = self.sample_rate_hz
        duration = self._samples_of(self._cal(qubit, "readout_duration_s"), qubit,
                                    "readout_duration_s")
        rise = min(READOUT_RISE_S * fs, (duration - 1) / 2)
        tone = FlatTop(duration_samples=duration, rise_samples=rise,
                       amp=self._cal(qubit, "readout_amplitude"))
        with self.align_left():
            self.barrier(drive(qubit), flux(qubit), readout(qubit), acquire_channel(qubit))
            self.play(tone, readout(qubit))
            return self.acquire(duration, qubit, clbit)

    def calibrated_drag(self, qubit: int, *, amp: Value | None = None,
                        angle_rad: Value = 0.0) -> Drag:
        """The calibrated DRAG pulse of ``qubit`` (duration, sigma and beta from the snapshot);
        ``amp`` defaults to its calibrated pi amplitude."""
        return Drag(duration_samples=self._samples_of(self._cal(qubit, "pulse_duration_s"), qubit,
                                                      "pulse_duration_s"),
                    sigma_samples=self._cal(qubit, "pulse_sigma_s") * self.sample_rate_hz,
                    beta_samples=self._cal(qubit, "drag_beta"),
                    amp=self._cal(qubit, "pi_amplitude") if amp is None else amp,
                    angle_rad=angle_rad)

    def barrier(self, *channels: Channel) -> None:
        """Line up ``channels`` (every channel of the enclosing block if none): what follows on
        any of them starts after everything before on all of them."""
        for c in channels:
            self._check_channel(c, CHANNEL_KINDS)
        self._add(BarrierNode(tuple(channels)))

    @contextlib.contextmanager
    def _align(self, alignment: str) -> Iterator[None]:
        block = Block(alignment)
        self._add(block)
        self._stack.append(block)
        try:
            yield
        finally:
            self._stack.pop()

    def align_left(self) -> contextlib.AbstractContextManager[None]:
        """Block whose instructions start as early as their channels allow."""
        return self._align("left")

    def align_right(self) -> contextlib.AbstractContextManager[None]:
        """Block whose instructions end as late as possible, flush with the block's end."""
        return self._align("right")

    def align_sequential(self) -> contextlib.AbstractContextManager[None]:
        """Block whose instructions follow one another, whatever their channels."""
        return self._align("sequential")

    # -------------------------------------------------------------- calibration access

    def _cal(self, qubit: int, name: str) -> float:
        if qubit not in self.channels.qubits:
            raise PulseError(f"qubit {qubit}: {self.channels.device_name} has qubits "
                             f"0..{self.channels.num_qubits - 1}", qubits=(qubit,),
                             parameter="qubit")
        params = self.snapshot.qubits.get(qubit, {})
        if name not in params:
            raise PulseError(f"qubit {qubit} has no calibrated {name!r} in snapshot "
                             f"{self.snapshot.snapshot_id}", qubits=(qubit,), parameter=name)
        return params[name].value

    def _samples_of(self, seconds: float, qubit: int, name: str) -> int:
        n = grid_samples(seconds, self.sample_rate_hz)  # the compiler's rule
        if n is None:
            raise PulseError(f"qubit {qubit}: {name} = {seconds} s is not a whole number of "
                             "samples", qubits=(qubit,), parameter=name)
        return n

    def default_frequency_hz(self, channel: Channel) -> float:
        """The frame frequency ``channel`` starts at (Hz, IF relative to its LO)."""
        return frame_frequency_hz(channel, self._cal)

    # -------------------------------------------------------------- the program

    @property
    def parameters(self) -> frozenset[Parameter]:
        """Every unbound parameter of the instructions so far."""
        return frozenset(self._parameters.values())

    def assign_parameters(self, bindings: Bindings | None = None, *, strict: bool = True,
                          sweep: Iterable[Parameter | str] = ()) -> PulseProgram:
        """The concrete ``PulseProgram`` with ``bindings`` (values by ``Parameter`` or name).

        ``sweep`` names parameters to leave to the controller: each must be the amplitude of
        its plays and nothing else, and becomes an entry of the program's parameter table, so
        that ``backend.run(program, parameter_binds={amp: values})`` runs every value from one
        upload (``labqpu.backend.sweeps``).

        Raises ``PulseError`` for a parameter left unbound, a value that is NaN or infinite, a
        name that is no parameter of the program (when ``strict``), a duration that is not a
        whole number of samples, a play over DAC full scale or beyond Nyquist, a swept
        parameter used as anything but a play's amplitude, or one both bound and swept.
        """
        swept = {str(getattr(p, "name", p)) for p in sweep}
        known_names = {p.name for p in self.parameters}
        if swept - known_names:
            raise PulseError(f"program {self.name!r} has no parameter(s) "
                             f"{', '.join(sorted(swept - known_names))} to sweep; it has "
                             f"{sorted(known_names) or 'none'}", parameter=sorted(swept)[0])
        bindings = dict(bindings or {})
        both = sorted(swept & {str(getattr(k, "name", k)) for k in bindings})
        if both:
            raise PulseError(f"program {self.name!r}: {', '.join(both)} is both bound and "
                             "swept; bind it or sweep it", parameter=both[0])
        if strict:
            mine = self.parameters
            known = {p.name for p in mine}
            unknown = sorted(str(getattr(k, "name", k)) for k in bindings
                             if str(getattr(k, "name", k)) not in known)
            if unknown:
                raise PulseError(f"program {self.name!r} has no parameter(s) "
                                 f"{', '.join(unknown)}; it has {sorted(known) or 'none'}",
                                 parameter=unknown[0])
            others = sorted(k.name for k in bindings
                            if isinstance(k, Parameter) and k not in mine)
            if others:
                raise PulseError(f"program {self.name!r}: the Parameter {others[0]!r} given is "
                                 "another Parameter of that name than the program's (Qiskit "
                                 "tells Parameters apart, not by name): bind the program's own "
                                 f"(.parameters) or bind by the name {others[0]!r}",
                                 parameter=others[0])
        root = bind_node(self._root, bindings)
        left = sorted(p.name for p in parameters_of(root) if p.name not in swept)
        if left:
            raise PulseError(f"program {self.name!r}: parameter(s) {', '.join(left)} left "
                             "unbound; give them to assign_parameters()", parameter=left[0])
        misused = sorted(swept_elsewhere(root, swept))
        if misused:
            raise PulseError(f"program {self.name!r}: {', '.join(misused)} cannot be swept on "
                             "the controller: only a play's amplitude can (bind the others "
                             "with assign_parameters)", parameter=misused[0])
        return self._emit(root, {str(getattr(k, "name", k)): float(v)
                                 for k, v in bindings.items()}, swept)

    def build(self) -> PulseProgram:
        """The program of a builder without parameters (``assign_parameters({})``)."""
        return self.assign_parameters({})

    def _emit(self, root: Block, values: Mapping[str, float],
              swept: frozenset[str] | set[str] = frozenset()) -> PulseProgram:
        total, leaves = schedule(root)
        fs = self.sample_rate_hz
        b = ProgramBuilder(self.channels.controllers[0], fs, rack=self.channels.layout)
        frames: dict[Channel, list[float]] = {}  # channel -> [frequency, phase, continuity]

        def frame(channel: Channel) -> list[float]:
            if channel not in frames:
                frames[channel] = [self.default_frequency_hz(channel), 0.0, 0.0]
            return frames[channel]

        events = sorted(enumerate(leaves), key=lambda r: (r[1][0], r[0]))
        drive_qubits: set[int] = set()
        readout_qubits: set[int] = set()
        clbits = [-1]
        read = {ident for _, leaf in leaves for ident, _ in getattr(leaf, "cond", None) or ()}

        def blocks(cond: tuple[tuple[int, int], ...]) -> contextlib.ExitStack:
            stack = contextlib.ExitStack()
            for ident, value in cond:
                stack.enter_context(b.if_result(acq_index[ident], value))
            return stack

        acq_index: dict[int, int] = {}
        for _, (start, leaf) in events:
            cond = getattr(leaf, "cond", None)
            if cond is not None and isinstance(leaf, FrameNode):
                port = self.channels.output(getattr(self.channels.qubits[leaf.channel.qubit],
                                                       leaf.channel.kind))
                with blocks(cond):
                    b.shift_phase(port, start, require_number(leaf.value,
                                                              f"{leaf.op} on {leaf.channel}"))
            elif cond is not None:
                with blocks(cond):
                    self._emit_play(b, leaf, start, frame(leaf.channel), swept)
                if leaf.channel.kind in ("drive", "readout"):
                    (drive_qubits if leaf.channel.kind == "drive" else readout_qubits).add(
                        leaf.channel.qubit)
            elif isinstance(leaf, FrameNode):
                advance_frame(frame(leaf.channel), leaf.op,
                              require_number(leaf.value, f"{leaf.op} on {leaf.channel}"),
                              start, fs)
            elif isinstance(leaf, PlayNode):
                self._emit_play(b, leaf, start, frame(leaf.channel), swept)
                if leaf.channel.kind == "drive":
                    drive_qubits.add(leaf.channel.qubit)
                elif leaf.channel.kind == "readout":
                    readout_qubits.add(leaf.channel.qubit)
            elif isinstance(leaf, AcquireNode):
                q = leaf.qubit
                freq = frame(readout(q))[0]
                self._check_nyquist(freq, f"acquire on qubit {q}", q)
                acq_index[leaf.ident] = b.acquire(
                    self.channels.input(self.channels.qubits[q].acquire), start,
                    leaf_duration(leaf), freq, q,
                    leaf.clbit, self._discriminator(q) if leaf.ident in read else None)
                readout_qubits.add(q)
                clbits.append(leaf.clbit)
        self._settings(b, drive_qubits, readout_qubits)
        num_clbits = max(clbits) + 1
        return b.build(
            duration_samples=max(total, 1), num_clbits=num_clbits,
            header={"name": self.name, "creg_sizes": [["c", num_clbits]] if num_clbits else [],
                    "memory_slots": num_clbits,
                    "metadata": {"parameters": dict(sorted(values.items()))}},
            # a snapshot never committed (id 0: a calibration's working values) names none
            snapshot_id=self.snapshot.snapshot_id or None,
            snapshot_hash=self.snapshot.content_hash if self.snapshot.snapshot_id else None)

    def _discriminator(self, qubit: int) -> tuple[complex, float]:
        """(axis, threshold) of the linear discriminator equivalent to the snapshot's
        nearest-centre one for ``qubit``: the axis points from the |0> to the |1> centre, the
        threshold is the midpoint's projection."""
        params = self.snapshot.qubits.get(qubit, {})
        if "discriminator" not in params:
            raise PulseError(f"qubit {qubit} has no calibrated discriminator in snapshot "
                             f"{self.snapshot.snapshot_id}: if_result needs one",
                             qubits=(qubit,), parameter="discriminator")
        (i0, q0), (i1, q1) = params["discriminator"].value["centers"]
        c0, c1 = complex(i0, q0), complex(i1, q1)
        if c1 == c0:
            raise PulseError(f"qubit {qubit}: the discriminator's centres coincide",
                             qubits=(qubit,), parameter="discriminator")
        axis = (c1 - c0) / abs(c1 - c0)
        return axis, float(np.real(np.conj(axis) * (c0 + c1) / 2))

    def _check_nyquist(self, frequency_hz: float, what: str, qubit: int) -> None:
        if not math.isfinite(frequency_hz):
            raise PulseError(f"{what}: frequency {frequency_hz} Hz must be a finite number",
                             qubits=(qubit,), parameter="frequency_hz")
        if not abs(frequency_hz) <= self.sample_rate_hz / 2:
            hint = ("; frame frequencies are IFs, relative to the channel's LO (the "
                    "snapshot's drive_lo_frequency_hz or readout_lo_frequency_hz): for a tone "
                    "at f Hz, set f minus the LO" if abs(frequency_hz) >= 1e9 else "")
            raise PulseError(f"{what}: frequency {frequency_hz} Hz is beyond the Nyquist "
                             f"frequency {self.sample_rate_hz / 2} Hz{hint}", qubits=(qubit,),
                             parameter="frequency_hz")

    def _emit_play(self, b: ProgramBuilder, leaf: PlayNode, start: int, f: list[float],
                   swept: frozenset[str] | set[str]) -> None:
        shape, channel = leaf.shape, leaf.channel
        q = channel.qubit
        wid = b.waves.add(shape.envelope_key(), lambda: shape.envelope(np.complex64))
        amp: float | str
        if isinstance(shape.amp, Parameter) and shape.amp.name in swept:
            amp = shape.amp.name  # an entry of the parameter table, bound per sweep point
            b.parameter(amp, math.nan)  # no value: a run must bind it (parameter_binds)
            peak = 0.0
        else:
            amp = require_number(shape.amp, f"{shape.kind} amp on {channel}")
            peak = float(np.max(np.abs(b.waves.waveform(wid)))) * abs(amp)
        if peak > 1.0 + 1e-6:
            raise PulseError(f"{shape.kind} on {channel} at sample {start}: amplitude {amp:.4g} x "
                             f"envelope peak reaches {peak:.4g} of DAC full scale (max 1)",
                             qubits=(q,), parameter="amp")
        self._check_nyquist(f[0], f"{shape.kind} on {channel}", q)
        phase = f[1] + f[2] + require_number(shape.angle_rad, f"{shape.kind} angle_rad")
        port = self.channels.output(getattr(self.channels.qubits[q], channel.kind))
        b.play(port, start, wid, amp, phase, f[0])

    def _settings(self, b: ProgramBuilder, drive_qubits: Iterable[int],
                  readout_qubits: Iterable[int]) -> None:
        """LO settings of the used channels and the flux biases of
        :func:`~labqpu.pulse.tables.flux_biases`."""
        for q in sorted(drive_qubits):
            frequency, power = (self._cal(q, "drive_lo_frequency_hz"),
                                self._cal(q, "drive_lo_power_dbm"))
            with self._one_source(q, "drive_lo_frequency_hz"):
                b.set_lo(self.channels.qubits[q].drive_lo, frequency, power)
        for q in sorted(readout_qubits):
            frequency, power = (self._cal(q, "readout_lo_frequency_hz"),
                                self._cal(q, "readout_lo_power_dbm"))
            with self._one_source(q, "readout_lo_frequency_hz"):
                b.set_lo(self.channels.qubits[q].readout_lo, frequency, power)
        for q, channel, current in flux_biases(self.snapshot, self.channels):
            with self._one_source(q, "flux_bias_a"):
                b.set_flux_bias(channel, current)

    @contextlib.contextmanager
    def _one_source(self, q: int, parameter: str) -> Iterator[None]:
        """Setting a source (an LO, a flux-bias channel) that another qubit of this program
        asked otherwise is a PulseError naming qubit ``q`` and ``parameter``."""
        try:
            yield
        except ValueError as exc:
            raise PulseError(f"qubit {q}: snapshot {self.snapshot.snapshot_id} asks for "
                             f"incompatible settings of a shared source: {exc}", qubits=(q,),
                             parameter=parameter) from exc


# ------------------------------------------------------------------------ module-level API

_ACTIVE: ContextVar[PulseBuilder | None] = ContextVar("labqpu_pulse_builder", default=None)


@contextlib.contextmanager
def build(backend=None, *, channels: ChannelMap | None = None, snapshot: Snapshot | None = None,
          name: str = "pulse_program") -> Iterator[PulseBuilder]:
    """``with build(backend) as b:`` makes ``b`` the builder that the module-level functions
    (``play``, ``delay``, ``align_right`` ...) add to. Give a backend, or ``channels`` and
    ``snapshot``."""
    if backend is not None:
        builder = PulseBuilder.for_backend(backend, name)
    elif channels is not None and snapshot is not None:
        builder = PulseBuilder(channels, snapshot, name)
    else:
        raise PulseError("build() needs a backend, or both channels and snapshot")
    token = _ACTIVE.set(builder)
    try:
        yield builder
    finally:
        _ACTIVE.reset(token)


def _active() -> PulseBuilder:
    builder = _ACTIVE.get()
    if builder is None:
        raise PulseError("no active pulse builder: call this inside `with pulse.build(...):`")
    return builder


def play(shape: Shape, channel: Channel) -> None:
    """``PulseBuilder.play`` on the active builder."""
    _active().play(shape, channel)


def delay(duration_samples: Value, channel: Channel) -> None:
    """``PulseBuilder.delay`` on the active builder."""
    _active().delay(duration_samples, channel)


def shift_phase(phase_rad: Value, channel: Channel) -> None:
    """``PulseBuilder.shift_phase`` on the active builder."""
    _active().shift_phase(phase_rad, channel)


def set_phase(phase_rad: Value, channel: Channel) -> None:
    """``PulseBuilder.set_phase`` on the active builder."""
    _active().set_phase(phase_rad, channel)


def shift_frequency(frequency_hz: Value, channel: Channel) -> None:
    """``PulseBuilder.shift_frequency`` on the active builder."""
    _active().shift_frequency(frequency_hz, channel)


def set_frequency(frequency_hz: Value, channel: Channel) -> None:
    """``PulseBuilder.set_frequency`` on the active builder."""
    _active().set_frequency(frequency_hz, channel)


def acquire(duration_samples: Value, qubit: int | Channel, clbit: int) -> AcquisitionRef:
    """``PulseBuilder.acquire`` on the active builder."""
    return _active().acquire(duration_samples, qubit, clbit)


def measure(qubit: int, clbit: int) -> AcquisitionRef:
    """``PulseBuilder.measure`` on the active builder."""
    return _active().measure(qubit, clbit)


def if_result(acquisition: AcquisitionRef, value: int
              ) -> contextlib.AbstractContextManager[None]:
    """``PulseBuilder.if_result`` on the active builder."""
    return _active().if_result(acquisition, value)


def barrier(*channels: Channel) -> None:
    """``PulseBuilder.barrier`` on the active builder."""
    _active().barrier(*channels)


def align_left() -> contextlib.AbstractContextManager[None]:
    """``PulseBuilder.align_left`` on the active builder."""
    return _active().align_left()


def align_right() -> contextlib.AbstractContextManager[None]:
    """``PulseBuilder.align_right`` on the active builder."""
    return _active().align_right()


def align_sequential() -> contextlib.AbstractContextManager[None]:
    """``PulseBuilder.align_sequential`` on the active builder."""
    return _active().align_sequential()


def calibrated_drag(qubit: int, *, amp: Value | None = None, angle_rad: Value = 0.0) -> Shape:
    """``PulseBuilder.calibrated_drag`` on the active builder."""
    return _active().calibrated_drag(qubit, amp=amp, angle_rad=angle_rad)
