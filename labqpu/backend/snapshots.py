"""Which calibration snapshot a backend builds its Target from: the store's newest, or, when
that one cannot build a Target (written by an older labqpu, or by hand), the newest one
before it that can, with a warning; never a store's half-valid state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from labqpu.errors import (
    CalibrationError,
    CalibrationMissingError,
    CorruptSnapshotError,
    LabQpuError,
)
from labqpu.store import CalibrationStore, Snapshot

__all__ = ["BUILD_ERRORS", "MAX_FALLBACK_SNAPSHOTS", "newest_buildable"]

T = TypeVar("T")

#: What building a Target raises for a snapshot it cannot use.
BUILD_ERRORS = (LabQpuError, ValueError, TypeError, KeyError)
#: How many snapshots before an unusable newest one are tried, newest first.
MAX_FALLBACK_SNAPSHOTS = 50


def newest_buildable(store: CalibrationStore, latest: int, build: Callable[[Snapshot], T]
                     ) -> tuple[Snapshot, T, Exception | None]:
    """Snapshot ``latest`` of ``store`` and what ``build`` makes of it, with None; or, if
    ``build`` raises one of :data:`BUILD_ERRORS` on it, the newest earlier snapshot that
    ``build`` succeeds on, its build, and the error of ``latest``.

    Raises:
        CalibrationError: neither ``latest`` nor any of the :data:`MAX_FALLBACK_SNAPSHOTS`
            before it can be built; the message gives ``latest``'s error and the way out.
    """
    problem: Exception
    try:  # a read error of the store itself (locked, I/O) is raised: it says nothing of it
        snapshot = store.get(latest)
    except CorruptSnapshotError as exc:
        problem = exc
    else:
        try:
            return snapshot, build(snapshot), None
        except BUILD_ERRORS as exc:
            problem = exc
    for snapshot_id in range(latest - 1, max(0, latest - 1 - MAX_FALLBACK_SNAPSHOTS), -1):
        try:  # ids a failed write left incomplete, and corrupt ones, are passed over
            older = store.get(snapshot_id)
        except (CalibrationMissingError, CorruptSnapshotError):
            continue
        try:
            return older, build(older), problem
        except BUILD_ERRORS:
            continue
    message = getattr(problem, "message", None) or str(problem)
    raise CalibrationError(
        f"calibration snapshot {latest} of store {store.path} cannot build a Target ({message}), "
        f"nor can the snapshots before it: commit a corrected snapshot, or roll back to one "
        "(labqpu calibrate history lists them; labqpu calibrate rollback ID)") from problem
