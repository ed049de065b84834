"""Controller-bound sweeps: one uploaded program run at several points of its parameter table.

A play whose ``play_amp_ref`` is k >= 0 takes its amplitude from entry k of the program's
``param_values``. The run parameter ``param_sets`` (docs/protocol.md, section 4.7) is a list of
K rows of N numbers, N the length of ``param_values``: the controller runs ``shots`` shots with
row 0 as the table, then ``shots`` with row 1, and so on, and returns the results point after
point: ``iq`` and ``bits`` of K x shots rows. The program is uploaded and validated once.
"""

from __future__ import annotations

import math

import numpy as np

#: Most rows of ``param_sets`` in one run.
MAX_PARAM_SETS = 4096
__all__ = ["MAX_PARAM_SETS", "parse_param_sets", "swept_amplitudes"]


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
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
                raise ValueError(f"param_sets row {k} entry {j} must be a finite number, "
                                 f"got {x!r}")
        rows[k] = row
    return rows


def swept_amplitudes(play_amp: np.ndarray, play_amp_ref: np.ndarray, peaks: np.ndarray,
                     sets: np.ndarray, ports: np.ndarray, full_scale: float) -> np.ndarray:
    """Every play's amplitude at every point: (K, plays); a play with ``play_amp_ref`` -1
    keeps ``play_amp``. ``peaks`` is each play's waveform peak; ``ValueError`` naming the row
    and the play when |amplitude| x peak would exceed ``full_scale`` (the controller's DAC
    limit, with the tolerance its upload check uses)."""
    bound = play_amp_ref >= 0
    amps = np.broadcast_to(play_amp, (sets.shape[0], play_amp.shape[0])).copy()
    amps[:, bound] = sets[:, play_amp_ref[bound]]
    over = np.argwhere(np.abs(amps) * peaks > full_scale)
    if over.size:
        k, i = over[0]
        raise ValueError(f"param_sets row {k}: play {i} on port {ports[i]} exceeds DAC full "
                         f"scale: amplitude {amps[k, i]:.4g} x waveform peak {peaks[i]:.4g} > 1")
    return amps
