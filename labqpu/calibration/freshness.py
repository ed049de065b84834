"""Whether a node's values are fresh: the reasons the runner calibrates a node whose check
(if it has one) would otherwise decide (:mod:`labqpu.calibration.runner`, whose docstring
lists them): a watched value missing, still the design's estimate, stamped
in the future, older than its kind's age limit, measured anew earlier in the same walk, or
measured before a value it builds on or measures changed."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from labqpu.calibration.graph import Node, Subject
from labqpu.calibration.records import describe
from labqpu.calibration.working import Working
from labqpu.store.staleness import PARAMETER_KINDS, age_h, from_the_future


def values_of(work: Working, subject: Subject) -> dict[str, Any]:
    """The working values of ``subject`` (a qubit's, or an edge's)."""
    return work.qubits.get(subject, {}) if isinstance(subject, int) \
        else work.pairs.get(subject, {})


def age_reason(work: Working, node: Node, subject: Subject, limits: dict[str, float],
               now: datetime, nodes: dict[str, Node]) -> str | None:
    """Why ``node``'s values on ``subject`` are not fresh (missing, still the design's
    estimate, stamped in the future, too old, measured before the calibration they measure or
    build on changed), or None."""
    values = values_of(work, subject)
    for name in node.watches:
        if name not in values:
            return f"{name} missing"
        if name in node.design_estimates and work.from_design(subject, name):
            return f"{name} is the design's estimate, never measured"
        kind = PARAMETER_KINDS.get(name, node.kind)
        stamp = work.measured_at.get((subject, name))
        if stamp is not None and (ahead := from_the_future(stamp, now)) is not None:
            return f"{name} {ahead}"
        if kind in limits and stamp is not None:
            age = age_h(stamp, now)
            if age > limits[kind]:
                return f"{name} {age:.1f} h old > {limits[kind]:g} h"
    return outdated_reason(work, node, subject, nodes)


def measured_again(node: Node, label: str, measured_by: dict[tuple[str, str], str]
                   ) -> str | None:
    """Why ``node``'s values on the subject ``label`` are to be measured again: an earlier step
    of the walk, a coarser measurement of the graph, measured one of the values it watches
    anew (the sweet spot's spectroscopy a Ramsey frequency, Rabi a DRAG step's amplitude), or
    None. Before, the finer node saw a fresh value and its check passed it: a sweet spot
    measured again left frequencies 20-40 kHz off, inside the Ramsey check's tolerance."""
    for name in node.watches:
        by = measured_by.get((label, name))
        if by is not None and by != node.name:
            return f"{name} measured again by {by} in this run"
    return None


def outdated_reason(work: Working, node: Node, subject: Subject,
                    nodes: dict[str, Node]) -> str | None:
    """Why ``node``'s values on ``subject`` describe a calibration that has changed since, or
    None: a value of a node it ``measures`` (looked up in ``nodes`` by name), or, for a node
    without a check, of a node without a check that it builds on, directly or through others
    (:func:`built_on`), measured later than the node's own oldest value. The node's own
    values are those it watches that no node it builds on watches (a node may watch a
    prerequisite's value to age with it); a value the node's own calibration wrote (its
    record) never outdates it.

    A check judges a node's values against the device as it is, so a checked node's change
    (a Ramsey frequency corrected by 20 kHz) outdates nothing below it; a value no check
    confirms (a sweet spot's bias, a drive handedness) is what everything without a check
    below it was measured on: after ``labqpu calibrate sweet_spot --force``, the CZ leakage,
    spectators and ZZ, the echo and the reset were reported fresh (a review's case)."""
    chain = built_on(node, subject, nodes)
    inherited = {name for up, _ in chain for name in nodes[up].watches}
    names = [name for name in node.watches if name not in inherited] or list(node.watches)
    own = [work.measured_at.get((subject, name)) for name in names]
    if not own or any(stamp is None for stamp in own):
        return None
    upstream = [(name, s) for name, s in node.prerequisites(subject)
                if name in node.measures and name in nodes]
    if node.check is None:
        upstream += [(name, s) for name, s in chain
                     if nodes[name].check is None and (name, s) not in upstream]
    mine = {work.records.get((subject, name)) for name in names} - {None}
    oldest = min(datetime.fromisoformat(stamp) for stamp in own)
    for name, s in upstream:
        for watched in nodes[name].watches:
            stamp = work.measured_at.get((s, watched))
            if stamp is None or watched in names or work.records.get((s, watched)) in mine:
                continue
            if datetime.fromisoformat(stamp) > oldest:
                return f"{watched} of {describe(s)} measured after {names[0]}"
    return None


def built_on(node: Node, subject: Subject, nodes: dict[str, Node]
             ) -> list[tuple[str, Subject]]:
    """(node name, subject) of every step of ``nodes`` that ``node`` on ``subject`` builds on:
    its prerequisites, theirs and so on (a qubit node's on its qubit; an edge node's on both
    qubits and on the edge), nearest first."""
    out: list[tuple[str, Subject]] = []
    pending = deque(node.prerequisites(subject))
    while pending:
        name, s = pending.popleft()
        up = nodes.get(name)
        if up is None or (name, s) in out or (up.scope == "qubit") != isinstance(s, int):
            continue
        out.append((name, s))
        pending.extend(up.prerequisites(s))
    return out
