"""What a calibration store lists: one measurement of a parameter, one stored snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ParameterRecord:
    """One measurement of one parameter, as :meth:`CalibrationStore.parameter_history` lists.

    Attributes:
        snapshot_id: the first snapshot that held this measurement.
        value: the value, in the unit the parameter's name states.
        timestamp: when it was measured, ISO-8601 UTC.
        experiment: the experiment that measured it.
    """

    snapshot_id: int
    value: Any
    timestamp: str
    experiment: str


@dataclass(frozen=True)
class SnapshotInfo:
    """Summary of one stored snapshot, as listed by :meth:`CalibrationStore.history`."""

    snapshot_id: int
    device: str
    created: str
    parent_id: int | None
    content_hash: str
    notes: str
    #: Why the snapshot's document cannot be read (it is corrupt), or None.
    problem: str | None = None
