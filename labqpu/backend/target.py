"""``build_target(snapshot, config) -> Target``: the Qiskit view of one calibration snapshot.

A pure function: the same snapshot and wiring give the same Target. Nothing is invented: an
instruction appears on a qubit or an edge only when the snapshot holds everything needed to
play it, and a duration or error the snapshot lacks is left ``None``.

Staleness. Every calibrated parameter has a *kind* (``labqpu.store.staleness``: frequency,
amplitude, readout, coherence, flux, cz, gate_error), and each kind an age limit in hours.
The lab sets the limits the Target enforces in its wiring file::

    [calibration.max_age_h]
    frequency = 24
    coherence = 12

A qubit whose drive or readout values are older than their kind's limit is left out of the
Target (no sx, sy, x, rz, measure, reset on it, no cz on its edges), an edge whose cz values
are, loses its cz, and a stale T1, T2 or gate error is reported as ``None``; each with a
logged warning naming it, and the qubit or edge marked (``LabTarget.marks``). Kinds the wiring
file does not name are not checked by the Target, so a lab without ``[calibration.max_age_h]``
(the shipped lab5) never loses a qubit to age. The calibration runner always judges age, with
the defaults of ``labqpu.store.staleness`` where the wiring file is silent.

Failures. A qubit or edge whose calibration steps failed and have not passed since
(``calibration_failed`` in the snapshot, written by the calibration runner) keeps its last good
values in the Target; it is marked, with a logged warning naming the steps and why they failed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from qiskit.circuit import Delay, IfElseOp, Measure, Parameter, Reset
from qiskit.circuit.library import CZGate, RZGate, SXGate, XGate
from qiskit.providers import QubitProperties
from qiskit.transpiler import InstructionProperties, Target

from labqpu.backend.gates import SYGate
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.gates import PulseGate
from labqpu.pulse.tables import active_reset_possible, active_reset_samples
from labqpu.pulse.timing import TimingConstraints
from labqpu.rack.config import LabConfig
from labqpu.store import (
    CALIBRATION_FAILED,
    CZ_PARAMETERS,
    DRIVE_PARAMETERS,
    READOUT_PARAMETERS,
    Snapshot,
    has_all,
)
from labqpu.store import Parameter as StoredValue
from labqpu.store.staleness import stale_parameters, wiring_age_limits
from labqpu.store.validation import parse_gate

log = logging.getLogger(__name__)


def age_limits(config: LabConfig, *, defaults: bool) -> dict[str, float]:
    """Age limit (hours) per parameter kind from the wiring file's
    ``[calibration.max_age_h]``, over :data:`DEFAULT_MAX_AGE_H` when ``defaults`` is true
    (:func:`labqpu.store.staleness.wiring_age_limits`)."""
    return wiring_age_limits(config.raw, defaults=defaults)


#: How a mark says that its subject (or a value of it) is not in the Target.
LEFT_OUT = "left out of the Target"


class LabTarget(Target):
    """A ``Target`` that remembers the calibration snapshot it was built from, and which
    qubits and edges that snapshot marks.

    ``marks`` maps a subject (``"qubit 2"``, ``"edge 1-2"``) to why it is marked: values
    older than the lab's age limits (the subject, or the values, are then left out), drive
    values the snapshot lacks (the qubit's drive gates are left out), or
    calibration steps that failed and have not passed since (the subject keeps its last good
    values). A subject that is not marked is absent.
    """

    def __new__(cls, *args, snapshot_id: int | None = None, **kwargs):
        return super().__new__(cls, *args, **kwargs)

    def __init__(self, *args, snapshot_id: int | None = None, **kwargs) -> None:
        # Target is built entirely in __new__; only our own attributes are set here.
        self.snapshot_id = snapshot_id
        self.marks: dict[str, tuple[str, ...]] = {}
        #: the qubits of each controller that digitizes readouts: feed-forward stays within one
        #: (``labqpu.backend.feedforward_layout``)
        self.feedforward_groups: tuple[tuple[int, ...], ...] = ()
        #: the names of the backend's pulse gates (defined on fixed qubits)
        self.pulse_gate_names: frozenset[str] = frozenset()

    _OWN = ("snapshot_id", "marks", "feedforward_groups", "pulse_gate_names")

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), **{name: getattr(self, name) for name in self._OWN}}

    def __setstate__(self, state: dict) -> None:
        self.snapshot_id = state.get("snapshot_id")
        self.marks = state.get("marks", {})
        self.feedforward_groups = state.get("feedforward_groups", ())
        self.pulse_gate_names = state.get("pulse_gate_names", frozenset())
        super().__setstate__(state)


def _value(params: dict, name: str) -> float | None:
    p = params.get(name)
    return None if p is None else p.value


class _Fresh:
    """The snapshot's values as the Target may use them: stale ones count as absent. Every
    subject with a stale value is marked (``marks``)."""

    def __init__(self, snapshot: Snapshot, limits: Mapping[str, float], now: datetime) -> None:
        self.snapshot = snapshot
        self.limits = limits
        self.now = now
        self.marks: dict[str, list[str]] = {}

    def stale(self, params: Mapping[str, StoredValue], names: tuple[str, ...] | None,
              subject: str, what: str | None = None) -> bool:
        """True (a warning naming ``what``, default ``subject``, and a mark on ``subject``)
        when a value of ``names`` is stale."""
        old = stale_parameters(params, names, self.limits, self.now)
        if old:
            where = what or subject
            log.warning("calibration snapshot %s: %s left out of the Target: stale %s",
                        self.snapshot.snapshot_id, where, ", ".join(old))
            mark = f"stale {', '.join(old)}: {where} {LEFT_OUT}"
            if mark not in self.marks.setdefault(subject, []):
                self.marks[subject].append(mark)
        return bool(old)

    def value(self, params: Mapping[str, StoredValue], name: str, subject: str,
              what: str | None = None) -> float | None:
        """``params[name]``'s value, or None when it is absent or stale (``what`` names it in
        the warning; default ``subject`` and ``name``)."""
        if name not in params or self.stale(params, (name,), subject,
                                            what or f"{subject} {name}"):
            return None
        return params[name].value

    def gate_props(self, key: str, duration_s: float | None,
                   fallback_key: str | None = None) -> InstructionProperties:
        gate = self.snapshot.gates.get(key, {})
        if "error" not in gate and fallback_key is not None:
            key, gate = fallback_key, self.snapshot.gates.get(fallback_key, {})
        return InstructionProperties(duration=duration_s,
                                     error=self.value(gate, "error", _gate_subject(key),
                                                      f"gate {key} error"))

    def failed(self) -> None:
        """Mark (and warn of) every qubit and edge whose calibration steps failed and have not
        passed since (``CALIBRATION_FAILED``)."""
        sections = ((f"qubit {q}", p) for q, p in sorted(self.snapshot.qubits.items()))
        pairs = ((f"edge {a}-{b}", p) for (a, b), p in sorted(self.snapshot.pairs.items()))
        for subject, params in (*sections, *pairs):
            failures = params.get(CALIBRATION_FAILED)
            if failures is None:
                continue
            for node, reason in sorted(failures.value.items()):
                log.warning("calibration snapshot %s: %s is marked: its %s calibration failed "
                            "(recorded %s: %s); it keeps its last good values",
                            self.snapshot.snapshot_id, subject, node, failures.timestamp,
                            reason)
                self.marks.setdefault(subject, []).append(
                    f"{node} calibration failed (recorded {failures.timestamp}): {reason}")


def _gate_subject(key: str) -> str:
    """The subject a gate key belongs to: ``"sx:0"`` -> ``"qubit 0"``, ``"cz:0-1"`` ->
    ``"edge 0-1"``."""
    _, qubits = parse_gate(key)
    return f"qubit {qubits[0]}" if len(qubits) == 1 else f"edge {min(qubits)}-{max(qubits)}"


def digitizing_controllers(channels: ChannelMap) -> dict[str, list[int]]:
    """The qubits each controller digitizes (by controller name, ascending): a controller's
    feed-forward reads only these."""
    out: dict[str, list[int]] = {}
    for q, wiring in sorted(channels.qubits.items()):
        out.setdefault(wiring.acquire[0], []).append(q)
    return out


def build_target(snapshot: Snapshot, config: LabConfig,
                 timing: TimingConstraints | None = None, *,
                 feedforward_latency_samples: int | None = None,
                 reset_method: str = "active",
                 pulse_gates: Mapping[str, Mapping[tuple[int, ...], PulseGate]] | None = None,
                 now: datetime | None = None) -> LabTarget:
    """The Target of ``config``'s device as calibrated in ``snapshot``.

    Qubit i is on the Target's qubit i. sx, sy and x need :data:`DRIVE_PARAMETERS`, measure needs
    :data:`READOUT_PARAMETERS`, reset needs ``reset_duration_s``, cz on an edge of the coupling
    map needs :data:`CZ_PARAMETERS` and sx on both qubits. sy is sx's pulse a quarter turn
    ahead in phase: the same calibration, duration and error (a measured ``sy:q`` error, when
    the snapshot has one, takes precedence over ``sx:q``'s). rz is virtual (a frame change): zero
    duration and zero error wherever sx is calibrated. Durations are in seconds, each the
    calibrated one padded onto the controllers' ``timing`` grid as the compiler plays it; the
    Target's granularity is that grid (``TimingConstraints.grid``), and its minimum length and
    pulse and acquire alignment are the controllers' own.

    With ``feedforward_latency_samples`` (the controllers' feed-forward latency, from their
    ``hello``), the Target declares ``if_else``, so that ``transpile`` keeps dynamic circuits,
    and ``reset`` is active where ``labqpu.pulse.tables.active_reset_possible`` allows it
    (``reset_method`` "active"): its duration is then the readout, the latency and the x
    pulse. Elsewhere reset is the passive wait of ``reset_duration_s``.

    Values older than the wiring file's age limits (:func:`age_limits`, judged at ``now``,
    default the current time) count as absent, as the module docstring says.

    ``pulse_gates`` (by name, then device qubits; ``labqpu.pulse.gates``) are declared as
    they are defined: each name once, with its parameters, on every qubit tuple it has a
    definition for, with that definition's duration and no error.
    """
    n = config.num_qubits
    fresh = _Fresh(snapshot, age_limits(config, defaults=False), now or datetime.now(UTC))
    fresh.failed()
    left_out = {q for q in range(n) if fresh.stale(snapshot.qubits.get(q, {}),
                                                    DRIVE_PARAMETERS + READOUT_PARAMETERS,
                                                    f"qubit {q}")}
    fs = config.controllers[0].sample_rate_hz
    timing = timing or TimingConstraints()

    def on_grid(seconds: float | None) -> float | None:
        if seconds is None:
            return None
        samples = round(seconds * fs)
        padded = timing.pad(samples)
        return seconds if padded == samples else padded / fs

    qprops = []
    for q in range(n):
        params = snapshot.qubits.get(q, {})
        # t2 is the Hahn-echo T2, as IBM's backends give it and qiskit-experiments' Tphi
        # (t2type="hahn", its default) reads it; until 2026-12-07 it was the Ramsey T2*
        # (t2_s), 1.35-1.95x shorter on lab5, which a review's T2Hahn took for a disagreement
        qprops.append(QubitProperties(t1=fresh.value(params, "t1_s", f"qubit {q}"),
                                      t2=fresh.value(params, "t2_echo_s", f"qubit {q}"),
                                      frequency=_value(params, "frequency_hz")))
    target = LabTarget(
        description=f"{config.device_name} calibration snapshot {snapshot.snapshot_id}",
        num_qubits=n, dt=1.0 / fs, qubit_properties=qprops, snapshot_id=snapshot.snapshot_id,
        granularity=timing.grid, min_length=timing.min_length,
        pulse_alignment=timing.pulse_alignment, acquire_alignment=timing.acquire_alignment,
    )
    driven = [q for q in range(n) if q not in left_out
              and has_all(snapshot.qubits.get(q, {}), DRIVE_PARAMETERS)]
    partial = {q: [p for p in DRIVE_PARAMETERS if p not in snapshot.qubits[q]]
               for q in range(n) if q not in driven and q not in left_out
               and snapshot.qubits.get(q)}
    if partial:  # e.g. a store from before drive_handedness was measured
        missing = sorted({p for names in partial.values() for p in names})
        log.warning("calibration snapshot %s: qubits %s have no drive gates in the Target: "
                    "missing %s; run `labqpu calibrate --all` (or --bootstrap) to measure them",
                    snapshot.snapshot_id, sorted(partial), ", ".join(missing))
        for q, names in partial.items():
            fresh.marks.setdefault(f"qubit {q}", []).append(
                f"missing {', '.join(names)}: qubit {q}'s drive gates {LEFT_OUT}")
    one_q = {
        "sx": (SXGate(), driven, None),
        "sy": (SYGate(), driven, "sx"),
        "x": (XGate(), driven, None),
    }
    target.add_instruction(RZGate(Parameter("lambda")), {
        (q,): InstructionProperties(duration=0.0, error=0.0) for q in driven})
    for name, (gate, qubits, like) in one_q.items():
        target.add_instruction(gate, {
            (q,): fresh.gate_props(f"{name}:{q}",
                              on_grid(_value(snapshot.qubits[q], "pulse_duration_s")),
                              None if like is None else f"{like}:{q}")
            for q in qubits})
    edges = {}
    for a, b in config.coupling_map:
        pair = snapshot.pairs.get((min(a, b), max(a, b)), {})
        key = f"cz:{min(a, b)}-{max(a, b)}"
        if (a in driven and b in driven and has_all(pair, CZ_PARAMETERS)
                and (a, b) not in edges
                and not fresh.stale(pair, CZ_PARAMETERS, f"edge {min(a, b)}-{max(a, b)}")):
            props = fresh.gate_props(key, on_grid(_value(pair, "cz_duration_s")))
            edges[(a, b)] = props
            edges[(b, a)] = props
    if edges:
        target.add_instruction(CZGate(), edges)
    readable = [q for q in range(n) if q not in left_out
                and has_all(snapshot.qubits.get(q, {}), READOUT_PARAMETERS)]
    measure = {}
    for q in readable:
        params = snapshot.qubits[q]
        fidelity = fresh.value(params, "readout_assignment_fidelity", f"qubit {q}")
        measure[(q,)] = InstructionProperties(
            duration=on_grid(_value(params, "readout_duration_s")),
            error=None if fidelity is None else 1.0 - fidelity)
    target.add_instruction(Measure(), measure)
    active = feedforward_latency_samples is not None and reset_method == "active"
    reset = {}
    for q in range(n):
        if q in left_out:
            continue
        if active and active_reset_possible(snapshot, q):
            samples = active_reset_samples(snapshot, fs, q, feedforward_latency_samples, timing)
            reset[(q,)] = InstructionProperties(duration=samples / fs)
        elif fresh.value(snapshot.qubits.get(q, {}), "reset_duration_s",
                         f"qubit {q}") is not None:
            reset[(q,)] = InstructionProperties(
                duration=on_grid(_value(snapshot.qubits[q], "reset_duration_s")))
    target.add_instruction(Reset(), reset)
    target.add_instruction(Delay(Parameter("t")), {(q,): None for q in range(n)})
    if feedforward_latency_samples is not None:
        target.add_instruction(IfElseOp, name="if_else")
    for name, defined in sorted((pulse_gates or {}).items()):
        first = next(iter(defined.values()))
        target.add_instruction(first.target_gate(), {
            qubits: InstructionProperties(duration=gate.duration_s)
            for qubits, gate in defined.items()}, name=name)
    target.marks = {subject: tuple(why) for subject, why in fresh.marks.items()}
    target.feedforward_groups = tuple(
        tuple(qubits) for qubits in digitizing_controllers(config.channels).values())
    target.pulse_gate_names = frozenset(pulse_gates or ())
    return target
