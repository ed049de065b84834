"""What a calibration run reports: each step's :class:`Outcome` (with the values it changed,
:class:`Change`) and the :class:`RunReport` of the run, whose ``table()`` is the summary the
command line prints; and how a commit that left some qubits out (another writer changed them
while the run measured) is said in it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from labqpu.calibration.checks import CheckResult
from labqpu.calibration.graph import Node, Subject, downstream
from labqpu.calibration.records import describe, qubits_in
from labqpu.store import Snapshot


@dataclass(frozen=True)
class Change:
    """A value the run measured anew: ``old`` (None: there was none) -> ``new``."""

    subject: str
    name: str
    old: Any
    new: Any


@dataclass
class Outcome:
    """What happened to one step: ``status`` is ``"fresh"``, ``"calibrated"``, ``"failed"``
    or ``"blocked"``; ``reason`` says why (the check, the age, the error)."""

    node: str
    subject: str
    status: str
    reason: str
    check: CheckResult | None = None
    changes: list[Change] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class RunReport:
    """Every step's outcome, the newest snapshot committed (None when nothing changed or when
    the run did not commit), every snapshot committed in order (the graph's values, then the
    gate errors of the ``rb`` step, each the parent of the next), and the experiment records
    written (JSON paths; each has its PNG beside it)."""

    outcomes: list[Outcome]
    parent_id: int | None
    snapshot: Snapshot | None = None
    records: list[Path] = field(default_factory=list)
    committed: list[Snapshot] = field(default_factory=list)
    #: The snapshot the run's commit goes onto: ``parent_id``, or the store's unusable newest
    #: snapshot that it replaces (``LabBackend.unusable_snapshot_id``).
    base_id: int | None = None
    #: {qubit: why} of the qubits whose values a commit left out: another writer changed
    #: them while the run measured (``commit_apart_onto_newest``).
    left_out: dict[int, str] = field(default_factory=dict)
    #: Steps (node, subject: ``("cz", "edge 0-1")``) built on values the run changed that it
    #: did not run (a run of some nodes, or of some qubits): nothing has checked them since
    #: (:func:`unchecked`).
    unchecked: list[tuple[str, str]] = field(default_factory=list)

    def with_status(self, status: str) -> list[Outcome]:
        """The outcomes with ``status``."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def ok(self) -> bool:
        """True when no step failed or was blocked."""
        return not (self.with_status("failed") or self.with_status("blocked"))

    def table(self) -> str:
        """The summary: every value measured, under a header (none when nothing was measured;
        old -> new; "measured again, unchanged" when the new value equals the old; a new value
        that differs where the table's digits do not show it says so), then what was fresh,
        failed or blocked."""
        # each row names the qubit or pair whose value changed: a step on one qubit may change
        # another's (a shared drive LO moves every qubit it drives)
        changes = [(o.node, c.subject, c.name, _show(c.old),
                    "(measured again, unchanged)" if c.new == c.old
                    else _show(c.new) + " (changed beyond the digits shown)"
                    if _show(c.new) == _show(c.old) else _show(c.new))
                   for o in self.with_status("calibrated") for c in o.changes]
        listed = [o for o in self.outcomes if o.status in _LISTED_STATUSES]
        node_w = max([len("node"), *(len(o.node) for o in listed)]) + 2
        subject_w = max([len("subject"), *(len(o.subject) for o in listed),
                         *(len(c[1]) for c in changes)]) + 2
        name_w = max([len("parameter"), *(len(c[2]) for c in changes)]) + 2
        old_w = max([len("old"), *(len(c[3]) for c in changes)])
        lines = [f"{'node':<{node_w}}{'subject':<{subject_w}}{'parameter':<{name_w}}"
                 f"{'old':>{old_w}}  ->  new"] if changes else []
        for node, subject, name, old, new in changes:
            lines.append(f"{node:<{node_w}}{subject:<{subject_w}}{name:<{name_w}}"
                         f"{old:>{old_w}}  ->  {new}")
        for status in _LISTED_STATUSES:
            chosen = self.with_status(status)
            if not chosen:
                continue
            lines.append(f"{status} ({len(chosen)}):")
            for o in chosen:
                lines.append(f"  {o.node:<{node_w}}{o.subject:<{subject_w}}{o.reason}")
        if self.unchecked:
            lines.append(f"not run, and built on values this run changed ({len(self.unchecked)} "
                         f"steps): {_grouped(self.unchecked)}; calibrate them to check them "
                         f"(`{_command(self.unchecked)}`; --force for those without a check, "
                         "which a checked value's change leaves fresh)")
        if self.committed:
            ids = ", then ".join(str(c.snapshot_id) for c in self.committed)
            first = self.committed[0].parent_id
            lines.append(f"committed snapshot {ids} (parent {first}"
                         + ("" if first in (self.parent_id, self.base_id) else
                            f": another calibration committed it while this one measured on "
                            f"snapshot {self.parent_id}") + ")")
        elif self.left_out:
            lines.append("nothing committed: everything measured was left out ("
                         + "; ".join(dict.fromkeys(self.left_out.values())) + ")")
        else:
            lines.append(f"nothing committed; snapshot {self.parent_id} stays the newest")
        return "\n".join(lines)


#: The statuses the summary lists, in its order.
_LISTED_STATUSES = ("calibrated", "fresh", "failed", "blocked")


def _grouped(steps: Sequence[tuple[str, str]]) -> str:
    """``[("rabi", "qubit 0"), ("rabi", "qubit 1"), ("cz", "edge 0-1")]`` as "rabi on qubit
    0, qubit 1; cz on edge 0-1": the nodes that share their subjects together, in order."""
    subjects: dict[str, list[str]] = {}
    for name, subject in steps:
        subjects.setdefault(name, []).append(subject)
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, where in subjects.items():
        groups.setdefault(tuple(where), []).append(name)
    return "; ".join(f"{', '.join(names)} on {', '.join(where)}"
                     for where, names in groups.items())


def _command(steps: Sequence[tuple[str, str]]) -> str:
    """The command that calibrates ``steps`` ((node, "qubit 2" or "edge 1-2")): their nodes,
    in order, on the qubits of their subjects."""
    names = dict.fromkeys(name for name, _ in steps)
    qubits = sorted({q for _, subject in steps for q in qubits_in(subject)})
    return f"labqpu calibrate {' '.join(names)} --qubits {' '.join(map(str, qubits))}"


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.8g}"
    text = repr(value)
    return text if len(text) <= 16 else text[:13] + "..."


def mark_left_out(report: RunReport, by_label: dict[str, Subject], left_out: dict[int, str],
                  node: str | None = None) -> None:
    """Keep ``left_out`` in ``report`` and say it in the outcomes (of ``node``, when given)
    whose subject, or a subject of whose changes, names a qubit the commit left out
    (``commit_apart_onto_newest``): a calibrated one failed (its values not committed), a
    failed one not recorded."""
    report.left_out.update(left_out)
    for i, o in enumerate(report.outcomes):
        if o.status not in ("calibrated", "failed") or node not in (None, o.node):
            continue
        labels = [o.subject, *(c.subject for c in o.changes)]
        why = left_out_reason([q for label in labels if label in by_label
                               for q in subject_qubits(by_label[label])], left_out)
        if not why:
            continue
        if o.status == "failed":
            report.outcomes[i] = replace(o, reason=f"{o.reason}; the failure {why}")
        else:
            report.outcomes[i] = replace(o, status="failed", changes=[],
                                         reason=f"{o.reason}; measured, {why}")


def subject_qubits(subject: Subject) -> tuple[int, ...]:
    """The qubits of a graph subject: a qubit, or an edge's two."""
    return (subject,) if isinstance(subject, int) else tuple(subject)


def left_out_reason(qubits: Iterable[int], left_out: dict[int, str]) -> str:
    """Why a commit left ``qubits``' values out (``commit_apart_onto_newest``), as "not
    committed: ...", or ""."""
    why = [left_out[q] for q in sorted(set(qubits)) if q in left_out]
    return (f"not committed: {'; '.join(dict.fromkeys(why))} while this measured; run it again"
            if why else "")


def unchecked(steps: Sequence[tuple[Node, Subject]], outcomes: Sequence[Outcome],
              nodes: Sequence[Node], edges: Iterable[tuple[int, int]]
              ) -> list[tuple[str, str]]:
    """The steps, as (node, subject label), that ``nodes`` build on a step of ``steps`` whose
    outcome (``outcomes``, in the same order) changed a value, on its qubit and on the
    ``edges`` that hold it (an edge step's: on its edge), and that ``steps`` do not hold: a
    sweet spot measured again moves the bias under every pulse after it (a review's cz went
    from 3e-3 to 0.24 error after ``labqpu calibrate sweet_spot``, and nothing said so)."""
    ran = set((n.name, s) for n, s in steps)
    edges = sorted({(min(e), max(e)) for e in edges})
    out: dict[tuple[str, str], None] = {}
    for (n, subject), outcome in zip(steps, outcomes, strict=True):
        if outcome.status != "calibrated" or all(c.new == c.old for c in outcome.changes):
            continue
        # a qubit's change reaches the edges that hold it; an edge's only that edge's nodes
        where = ({"qubit": [], "edge": [subject]} if isinstance(subject, tuple) else
                 {"qubit": [subject], "edge": [e for e in edges if subject in e]})
        for below in downstream(n.name, nodes):
            out.update(((below.name, describe(s)), None) for s in where[below.scope]
                       if (below.name, s) not in ran)
    return list(out)
