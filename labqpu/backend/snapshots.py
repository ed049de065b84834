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
    InvalidSnapshotError,
    LabQpuError,
)
from labqpu.rack.config import LabConfig
from labqpu.rack.limits import check_against_wiring
from labqpu.store import CalibrationStore, Snapshot

__all__ = ["BUILD_ERRORS", "MAX_FALLBACK_SNAPSHOTS", "newest_buildable", "within_limits"]

T = TypeVar("T")

#: What building a Target raises for a snapshot it cannot use.
BUILD_ERRORS = (LabQpuError, ValueError, TypeError, KeyError)
#: How many snapshots before an unusable newest one are tried, newest first.
MAX_FALLBACK_SNAPSHOTS = 50


def newest_buildable(store: CalibrationStore, latest: int, build: Callable[[Snapshot], T],
                     fits: Callable[[Snapshot], bool] = lambda snapshot: True
                     ) -> tuple[Snapshot, T, Exception | None]:
    """Snapshot ``latest`` of ``store`` and what ``build`` makes of it, with None; or, if
    ``build`` raises one of :data:`BUILD_ERRORS` on it, the newest earlier snapshot that
    ``build`` succeeds on and that ``fits`` (the rack's limits), else the newest that
    ``build`` succeeds on, its build, and the error of ``latest``. (A fallback onto a snapshot
    the rack cannot set its instruments to would fail every job: a review's store held one
    between the broken newest and a good one.)

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
    unfit: tuple[Snapshot, T] | None = None
    for snapshot_id in range(latest - 1, max(0, latest - 1 - MAX_FALLBACK_SNAPSHOTS), -1):
        try:  # ids a failed write left incomplete, and corrupt ones, are passed over
            older = store.get(snapshot_id)
        except (CalibrationMissingError, CorruptSnapshotError):
            continue
        try:
            built = build(older)
        except BUILD_ERRORS:
            continue
        if fits(older):
            return older, built, problem
        unfit = unfit or (older, built)
    if unfit is not None:
        return (*unfit, problem)
    message = getattr(problem, "message", None) or str(problem)
    raise CalibrationError(
        f"calibration snapshot {latest} of store {store.path} cannot build a Target ({message}), "
        f"nor can the snapshots before it: commit a corrected snapshot, or roll back to one "
        "(labqpu calibrate history lists them; labqpu calibrate rollback ID)") from problem


def within_limits(config: LabConfig) -> Callable[[Snapshot], bool]:
    """Whether the rack of ``config`` can set its instruments to what a snapshot asks (the
    wiring file's limits: ``labqpu.rack.limits``), for :func:`newest_buildable`'s ``fits``."""
    def fits(snapshot: Snapshot) -> bool:
        try:
            check_against_wiring(snapshot.to_document(), config)
        except InvalidSnapshotError:
            return False
        return True

    return fits
