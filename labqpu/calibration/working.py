"""The parameters a calibration run knows so far (``Working``), kept as the store will take
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from labqpu.errors import FitError, InvalidSnapshotError
from labqpu.store.physics import PAIR_CHECKS, QUBIT_CHECKS
from labqpu.store.validation import json_value


@dataclass
class Working:
    """Parameters known so far, per qubit (``q[name]``) and device-wide (``device[name]``);
    ``records`` remembers which experiment produced each value and ``measured_at`` when
    (ISO-8601 UTC), so the snapshot carries the time of the measurement, not of the commit."""

    device: dict[str, float]
    qubits: dict[int, dict[str, float]]
    pairs: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    records: dict[tuple, str] = field(default_factory=dict)
    measured_at: dict[tuple, str] = field(default_factory=dict)

    def set(self, q: int, name: str, value, experiment: str) -> None:
        """Record qubit ``q``'s ``name`` as measured by ``experiment``, now; ``FitError``
        (the step fails) for a value the store would refuse (a T1 fitted beyond 10 ms), which
        would otherwise fail the whole run's commit."""
        value = _storable(QUBIT_CHECKS, f"qubit {q}", name, value)
        self.qubits[q][name] = value
        self.records[(q, name)] = experiment
        self.measured_at[(q, name)] = datetime.now(UTC).isoformat()

    def set_pair(self, pair: tuple[int, int], name: str, value, experiment: str) -> None:
        """Record edge ``pair``'s ``name`` as measured by ``experiment``, now (``FitError``
        as :meth:`set`)."""
        value = _storable(PAIR_CHECKS, f"pair {pair[0]}-{pair[1]}", name, value)
        self.pairs.setdefault(pair, {})[name] = value
        self.records[(pair, name)] = experiment
        self.measured_at[(pair, name)] = datetime.now(UTC).isoformat()

    def from_design(self, subject: int | tuple[int, int], name: str) -> bool:
        """Whether ``subject``'s ``name`` is the design's value: stored as ``"design"``, or
        filled in from the design file (no record)."""
        return self.records.get((subject, name)) in (None, "design")


def _storable(checks: dict, subject: str, name: str, value):
    """``value`` as the working set keeps it (an array as a list); ``FitError`` naming
    ``subject`` and ``name`` when the store would refuse it: by the rule for ``name``
    (:mod:`labqpu.store.physics`), or, for any name (a lab node's too), as not plain, finite
    JSON (a NaN failed the whole run's commit, an array the run itself: a review's cases)."""
    check = checks.get(name)
    plain = value.item() if isinstance(value, np.generic) else value
    if plain is None:  # JSON, but no value: the store refuses it (and the run's commit with it)
        raise FitError(f"{name} is None: the calibration store would refuse it",
                       subject=subject)
    problem = check(plain) if check is not None else None
    if problem:
        raise FitError(f"{name} {problem}, got {plain!r}: the calibration store would refuse "
                       "it", subject=subject)
    try:
        json_value(json_ready(plain), "", "")
    except InvalidSnapshotError as exc:  # "value is nan; calibration values must be finite"
        raise FitError(f"{name}: {exc.message}: the calibration store would refuse it",
                       subject=subject) from exc
    return plain.tolist() if isinstance(plain, np.ndarray) else plain


def json_ready(value):
    """``value`` with numpy arrays and scalars turned into lists and Python numbers (JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value
