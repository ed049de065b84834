"""``Parameter``: one calibrated value with its provenance, and read-only JSON containers."""


from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""Sentinel default of the ``*_value`` lookups: raise when the parameter is absent."""


@dataclass(frozen=True)
class Parameter:
    """One calibrated value with its provenance.

    Attributes:
        value: a number, bool, string, or a read-only JSON list/object; the unit is the one
            named by the parameter (``frequency_hz`` in Hz, ``duration_s`` in seconds).
        timestamp: when it was measured, ISO-8601 in UTC (``"2026-11-21T23:00:00+00:00"``).
        experiment: the experiment that produced it (``"ramsey"``, ``"rb"``, ``"manual"``).
    """

    value: Any
    timestamp: str
    experiment: str


def _read_only(*_args: object, **_kwargs: object) -> NoReturn:
    raise TypeError("calibration values are read-only; build a new snapshot with SnapshotBuilder")


class _FrozenList(list):
    """A list that refuses mutation; compares equal to the plain list with the same items."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __reduce__(self) -> tuple[type, tuple[list]]:
        return (_FrozenList, (list(self),))


class _FrozenDict(dict):
    """A dict that refuses mutation; compares equal to the plain dict with the same items."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type, tuple[dict]]:
        return (_FrozenDict, (dict(self),))


def freeze(value: Any) -> Any:
    """``value`` with every list and dict replaced by a read-only copy, recursively."""
    if isinstance(value, list):
        return _FrozenList(freeze(item) for item in value)
    if isinstance(value, dict):
        return _FrozenDict((key, freeze(item)) for key, item in value.items())
    return value
