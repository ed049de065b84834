"""Timing constraints of a controller: granularity, minimum length, pulse and acquire alignment.

A controller states them in its ``hello`` capabilities (``"timing"``, in samples); a
controller that states none has no constraint (all 1). The backend declares them in the
Target, so Qiskit's scheduling passes honour them, and the compiler enforces them:

* every waveform it plays is a whole number of ``granularity`` samples and at least
  ``min_length`` long (a calibrated pulse is zero-padded at its end: the same pulse, then
  idle);
* every duration it schedules (pulses, readout, reset, delays) is a multiple of the common
  grid ``lcm(granularity, pulse_alignment, acquire_alignment)``, so every play starts on
  ``pulse_alignment`` and every acquisition on ``acquire_alignment`` without rescheduling. A
  ``delay`` off that grid is refused, naming it. The Target's ``granularity`` is this grid:
  qiskit-experiments (``BackendTiming``) rounds its delays onto it, and Qiskit's scheduling
  passes align and pad with it. ``transpile`` does not round a delay the circuit itself
  holds; the compiler refuses one off the grid.

:meth:`TimingConstraints.check_program` checks a ready ``PulseProgram`` (from the builder)
against the same rules before anything is sent.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from labqpu.errors import CompilationError

#: Keys of the ``timing`` capability, all in samples.
TIMING_FIELDS = ("granularity", "min_length", "pulse_alignment", "acquire_alignment")


@dataclass(frozen=True)
class TimingConstraints:
    """A controller's timing rules, in samples (all 1: none)."""

    granularity: int = 1
    min_length: int = 1
    pulse_alignment: int = 1
    acquire_alignment: int = 1

    def __post_init__(self) -> None:
        for name in TIMING_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"timing constraint {name} must be a positive whole number "
                                 f"of samples, got {value!r}")

    @classmethod
    def from_capabilities(cls, capabilities: Mapping, controller: str = "controller"
                          ) -> TimingConstraints:
        """The constraints a controller's ``hello`` capabilities state (``"timing"``)."""
        timing = capabilities.get("timing", {})
        if not isinstance(timing, Mapping):
            raise ValueError(f"{controller}: capability 'timing' must be a table, got "
                             f"{type(timing).__name__}")
        unknown = sorted(set(timing) - set(TIMING_FIELDS))
        if unknown:
            raise ValueError(f"{controller}: unknown timing capability {unknown[0]!r}")
        try:
            return cls(**{k: timing[k] for k in TIMING_FIELDS if k in timing})
        except ValueError as exc:
            raise ValueError(f"{controller}: {exc}") from exc

    def combine(self, other: TimingConstraints) -> TimingConstraints:
        """Constraints that satisfy both (programs spanning both controllers)."""
        return TimingConstraints(
            granularity=math.lcm(self.granularity, other.granularity),
            min_length=max(self.min_length, other.min_length),
            pulse_alignment=math.lcm(self.pulse_alignment, other.pulse_alignment),
            acquire_alignment=math.lcm(self.acquire_alignment, other.acquire_alignment))

    @functools.cached_property
    def grid(self) -> int:
        """The common grid of every scheduled duration (samples)."""
        return math.lcm(self.granularity, self.pulse_alignment, self.acquire_alignment)

    @property
    def trivial(self) -> bool:
        """True when nothing is constrained."""
        return (self.granularity, self.min_length, self.pulse_alignment,
                self.acquire_alignment) == (1, 1, 1, 1)

    def pad(self, samples: int) -> int:
        """``samples`` rounded up onto the grid and to at least ``min_length``."""
        g = self.grid
        return max(-(-int(samples) // g) * g, -(-self.min_length // g) * g)

    def check_delay(self, samples: int, where: str, *, circuit: str = "",
                    qubits: tuple[int, ...] = ()) -> None:
        """A delay of ``samples`` must lie on the grid (``CompilationError`` naming it, with
        ``circuit`` and ``qubits`` as context)."""
        if samples % self.grid:
            raise CompilationError(
                f"{where}: delay of {samples} samples is not a multiple of the controller's "
                f"timing grid ({self.grid} samples: granularity {self.granularity}, pulse "
                f"alignment {self.pulse_alignment}, acquire alignment "
                f"{self.acquire_alignment}); round it (the Target's granularity is "
                f"{self.grid})", circuit=circuit, qubits=qubits, instruction="delay")

    def check_program(self, program) -> None:
        """Refuse a ``PulseProgram`` that breaks these rules, naming the first play or
        acquisition at fault (``CompilationError``)."""
        if self.trivial:
            return
        where = f"program {program.display_name!r}"
        lengths = np.diff(program.wave_offset)[program.play_wave] if program.play_wave.size \
            else np.zeros(0, dtype=np.int64)
        plays = ("play", program.play_port, program.play_start, lengths, "port")
        acqs = ("acquisition", program.acq_port, program.acq_start, program.acq_duration,
                "input")
        rules = (
            (plays, program.play_start % self.pulse_alignment != 0,
             f"starts off the pulse alignment of {self.pulse_alignment} samples"),
            (plays, lengths % self.granularity != 0,
             f"has a waveform length off the granularity of {self.granularity} samples"),
            (plays, lengths < self.min_length,
             f"is shorter than the minimum length of {self.min_length} samples"),
            (acqs, program.acq_start % self.acquire_alignment != 0,
             f"starts off the acquire alignment of {self.acquire_alignment} samples"),
            (acqs, program.acq_duration % self.granularity != 0,
             f"lasts a duration off the granularity of {self.granularity} samples"),
        )
        for (kind, ports, starts, samples, port_word), bad, what in rules:
            hit = np.flatnonzero(bad)
            if hit.size:
                i = int(hit[0])
                raise CompilationError(
                    f"{where}: {kind} {i} ({port_word} {int(ports[i])}, start "
                    f"{int(starts[i])}, {int(samples[i])} samples) {what}",
                    instruction="play" if kind == "play" else "acquire")


def _later(op_qubits: Sequence[Collection[Hashable]], delays: Collection[int],
           barriers: Collection[int]) -> Iterator[tuple[int, set]]:
    """Each op (indices into ``op_qubits``, last first) with the qubits that something after it
    matters to: a later op on them that plays or measures (not a delay, not a barrier), or a
    later barrier that ties them to such a qubit, through chains of barriers (Qiskit's barrier
    semantics). The set is the scan's own: read it before the next step."""
    later: set = set()
    for i in range(len(op_qubits) - 1, -1, -1):
        qubits = op_qubits[i]
        yield i, later
        if i in barriers:
            if not later.isdisjoint(qubits):
                later.update(qubits)
        elif i not in delays:
            later.update(qubits)


def last_that_matter(op_qubits: Sequence[Collection[Hashable]], delays: Collection[int],
                     barriers: Collection[int]) -> dict[Hashable, int]:
    """Each qubit's last op that matters (its index into ``op_qubits``): one that plays or
    measures, or a barrier that ties the qubit to such an op after it. After it the qubit only
    idles (a delay there is padding, ``padding_delays``)."""
    out: dict[Hashable, int] = {}
    for i, later in _later(op_qubits, delays, barriers):
        qubits = op_qubits[i]
        if i not in delays and (i not in barriers or not later.isdisjoint(qubits)):
            for q in qubits:
                out.setdefault(q, i)
    return out


def padding_delays(op_qubits: Sequence[Collection[Hashable]], delays: Collection[int],
                   barriers: Collection[int]) -> set[int]:
    """The delays (indices into ``op_qubits``, each op's qubits in program order) that are a
    scheduler's padding: nothing after them on their qubits matters (``_later``), so they play
    nothing and would only hold back the readout. A delay on an idle qubit between two
    barriers holds the other qubits back, so it is not padding."""
    return {i for i, later in _later(op_qubits, delays, barriers)
            if i in delays and later.isdisjoint(op_qubits[i])}


def held_readouts(op_qubits: Sequence[Collection[Hashable]], delays: Collection[int],
                  barriers: Collection[int], reads: Mapping[int, Hashable]) -> set[int]:
    """The readouts (``reads``: row -> its qubit) that something later must follow: an op on
    their qubit, or on a qubit that a later barrier ties to it (through chains of barriers and
    of the ops between them), as in ``measure(0); barrier(0, 1); x(1)`` or a wait that such a
    barrier keeps. Such a readout plays where it stands (mid-circuit), not with the final
    readouts at the end of the gates, which would play ``x(1)`` during qubit 0's readout."""
    return {i for i, later in _later(op_qubits, delays, barriers)
            if i in reads and reads[i] in later}
