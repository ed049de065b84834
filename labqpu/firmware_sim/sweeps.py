"""Controller-bound sweeps: one uploaded program run at several points of its parameter table.

Two things take values from the program's parameter table ``param_values``:

* a play whose ``play_amp_ref`` is k >= 0 takes its amplitude from entry k;
* the upload's ``binds`` (metadata; docs/protocol.md, section 4.7): a list of
  ``[field, index, k]``, each replacing element ``index`` of array ``field`` (one of
  :data:`BINDABLE`; ``duration_samples`` has the single index 0) with entry k. Integer fields
  take integral values only.

The run parameter ``param_sets`` is a list of K rows of N numbers, N the length of
``param_values``: the controller runs ``shots`` shots with row 0 as the table, then ``shots``
with row 1, and so on, and returns the results point after point: ``iq`` and ``bits`` of
K x shots rows. The program is uploaded once; every point is validated as a whole program
before the first one runs.
"""

from __future__ import annotations

import math

import numpy as np

#: Most rows of ``param_sets`` in one run.
MAX_PARAM_SETS = 4096
#: The program fields an upload's ``binds`` may set, with whether they hold whole numbers.
BINDABLE = {"play_start": True, "play_phase_rad": False, "play_freq_hz": False,
            "acq_start": True, "acq_freq_hz": False, "shift_start": True,
            "shift_phase_rad": False, "duration_samples": True}
__all__ = ["BINDABLE", "MAX_PARAM_SETS", "bind", "parse_param_sets"]


def parse_param_sets(value: object, n_params: int, shots: int, max_total_shots: int
                     ) -> np.ndarray:
    """The run parameter ``param_sets`` of a run of ``shots`` shots per point, checked against
    a table of ``n_params`` entries: a (K, n_params) float array. ``ValueError`` naming the
    first problem: not a list of lists, K outside 1..MAX_PARAM_SETS, a row of the wrong
    length, an entry that is not a finite number, or K x shots above ``max_total_shots``."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"param_sets must be a non-empty list of rows, got {type(value).__name__}")
    if len(value) > MAX_PARAM_SETS:
        raise ValueError(f"param_sets has {len(value)} rows; this controller takes at most "
                         f"{MAX_PARAM_SETS}")
    if n_params == 0:
        raise ValueError("param_sets given, but the program has no parameter table "
                         "(param_values is empty)")
    if len(value) * shots > max_total_shots:
        raise ValueError(f"param_sets of {len(value)} rows x {shots} shots is "
                         f"{len(value) * shots} shots; this controller runs at most "
                         f"{max_total_shots} per run")
    rows = np.empty((len(value), n_params))
    for k, row in enumerate(value):
        if not isinstance(row, list) or len(row) != n_params:
            raise ValueError(f"param_sets row {k} must be a list of {n_params} numbers (one per "
                             f"param_values entry), got {row!r}"[:200])
        for j, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, int | float) or not _finite(x):
                raise ValueError(f"param_sets row {k} entry {j} must be a finite number, "
                                 f"got {str(x)[:40]}")
        rows[k] = row
    return rows


def _finite(x: int | float) -> bool:
    """Whether ``x`` is a finite float; an integer beyond any float is not (``math.isfinite``
    raised a bare ``OverflowError`` for it)."""
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def bind(arrays: dict[str, np.ndarray], meta: dict
         ) -> tuple[dict[str, np.ndarray], dict]:
    """The program's arrays and metadata with the upload's ``binds`` applied from its
    ``param_values`` (unchanged without ``binds``). ``ValueError`` naming the first problem:
    ``binds`` not a list of ``[field, index, k]``, a field that cannot be bound, an index or k
    out of range, an element bound twice, or a fractional value for a whole-number field."""
    binds = meta.get("binds")
    if binds is None:
        return arrays, meta
    if not isinstance(binds, list):
        raise ValueError(f"binds must be a list of [field, index, k], got {type(binds).__name__}")
    params = arrays.get("param_values", np.zeros(0))
    bound: dict[str, np.ndarray] = {}
    meta = dict(meta)
    seen = set()
    for n, entry in enumerate(binds):
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in entry[1:])):
            raise ValueError(f"binds entry {n} must be [field, index, k], got {entry!r}"[:200])
        name, index, k = entry
        if name not in BINDABLE:
            raise ValueError(f"binds entry {n}: field {name!r} cannot be bound; bindable are "
                             f"{', '.join(BINDABLE)}")
        size = 1 if name == "duration_samples" else arrays[name].shape[0]
        if not 0 <= index < size:
            raise ValueError(f"binds entry {n}: {name} has no element {index} ({size} elements)")
        if not 0 <= k < params.shape[0]:
            raise ValueError(f"binds entry {n}: parameter {k} is outside the table of "
                             f"{params.shape[0]}")
        if (name, index) in seen:
            raise ValueError(f"binds entry {n}: {name}[{index}] is bound twice")
        seen.add((name, index))
        value = float(params[k])
        if not math.isfinite(value):
            raise ValueError(f"binds entry {n}: parameter {k} binding {name} is {value!r}")
        if BINDABLE[name] and (abs(value) > 2**53 or value != round(value)):
            raise ValueError(f"binds entry {n}: {name} takes whole samples; parameter {k} is "
                             f"{value!r}")
        if name == "duration_samples":
            meta[name] = int(value)
            continue
        if name not in bound:
            bound[name] = arrays[name].copy()
        bound[name][index] = value
    return {**arrays, **bound}, meta
