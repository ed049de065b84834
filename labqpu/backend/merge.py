"""Automatic sweeps: consecutive programs of one ``run()`` that differ only in numbers run as one
upload.

Circuits that differ only in rz angles, delay durations or pulse-gate parameters compile to
programs with the same plays, waveforms, acquisitions, blocks and instrument settings; only
start samples, phases, frequencies, amplitudes and the duration differ. :func:`plan_runs` finds
such runs of consecutive programs and turns each into one program whose differing elements are
bound from a parameter table (``play_amp_ref`` for amplitudes, ``binds`` for the rest), plus one
table row per program (the run parameter ``param_sets``, docs/protocol.md section 4.7). The
controller then validates every point as a whole program and runs them in order; the results
come back per point and each keeps its own circuit's header.

Nothing merges when the controller does not state every needed field in
``capabilities.param_sets.binds``, for raw traces (``meas_level`` 0), for a program with a
parameter table of its own or on several controllers, or when the run option ``merge`` is
False. Runs longer than the controller's ``max_sets`` points or ``max_total_shots`` shots are
cut into several.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from labqpu.pulse.program import BINDABLE, PulseProgram

__all__ = ["Run", "plan_runs"]

#: Arrays that must be equal, element for element, for programs to share one upload.
_SAME = ("play_port", "play_wave", "play_block", "wave_offset", "wave_data", "acq_port",
         "acq_duration", "acq_qubit", "acq_clbit", "block_acq", "block_value", "shift_port",
         "shift_block", "acq_disc_axis", "acq_disc_threshold")
#: Arrays whose elements may differ; they are bound per point.
_BOUND = tuple(name for name in BINDABLE if name != "duration_samples")

Rows = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Run:
    """One upload and run on the controller.

    ``program`` is what is uploaded; ``rows`` its ``param_sets`` (None: one plain run);
    ``members`` the program whose header, classical bits and discriminators each point's result
    carries (one per point); ``explicit``: the rows came from the ``parameter_binds`` option,
    so each result says which values it ran at.
    """

    program: PulseProgram
    rows: Rows | None
    members: tuple[PulseProgram, ...]
    explicit: bool = False

    @property
    def points(self) -> int:
        """Number of points (results) of the run."""
        return len(self.members)


def plan_runs(programs: Sequence[PulseProgram], explicit: Sequence[Rows | None], *,
              shots: int, enabled: bool, capabilities: Callable[[str], dict]) -> list[Run]:
    """The runs that execute ``programs`` in order. ``explicit`` holds each program's rows from
    ``parameter_binds`` (None for most); such programs run as given. The others merge where
    ``enabled`` and their controller's ``capabilities(name)`` allow it."""
    runs: list[Run] = []
    group: list[PulseProgram] = []
    structure = ""

    def flush() -> None:
        if group:
            runs.extend(_merged(group, shots, capabilities))
            group.clear()

    for program, rows in zip(programs, explicit, strict=True):
        if rows is not None:
            flush()
            runs.append(Run(program, rows, (program,) * len(rows), explicit=True))
        elif not enabled or not _mergeable(program):
            flush()
            runs.append(Run(program, None, (program,)))
        else:
            this = _structure(program)
            if this != structure:
                flush()
                structure = this
            group.append(program)
    flush()
    return runs


def _mergeable(program: PulseProgram) -> bool:
    return not program.rack and not program.param_names


def _structure(program: PulseProgram) -> str:
    """A hash of what must be equal for programs to merge: the structural arrays, the
    controller, the sample rate, the classical bits and every instrument setting."""
    h = hashlib.sha256()
    for name in _SAME:
        arr = getattr(program, name)
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    for name in _BOUND:
        h.update(str(getattr(program, name).shape).encode())
    h.update(json.dumps({
        "controller": program.controller, "fs": program.sample_rate_hz,
        "clbits": program.num_clbits,
        "lo": {k: [v.frequency_hz, v.power_dbm] for k, v in sorted(program.lo_settings.items())},
        "flux": sorted([f"{s}:{c}", v] for (s, c), v in program.flux_bias_a.items()),
    }, sort_keys=True).encode())
    return h.hexdigest()


def _merged(group: list[PulseProgram], shots: int, capabilities: Callable[[str], dict]
            ) -> list[Run]:
    """``group`` (programs of one structure, in order) as few runs as the controller allows."""
    caps = capabilities(group[0].controller).get("param_sets")
    binds = set(caps.get("binds", ())) if isinstance(caps, dict) else set()
    size = 1
    if {"play_amp_ref", *BINDABLE} <= binds:
        size = min(int(caps.get("max_sets", 1)),
                   int(caps.get("max_total_shots", math.inf) // max(shots, 1)))
    if size < 2 or len(group) < 2:
        return [Run(p, None, (p,)) for p in group]
    runs = []
    for i in range(0, len(group), size):
        chunk = group[i:i + size]
        runs.extend(_one_upload(chunk) if len(chunk) > 1 else [Run(chunk[0], None, (chunk[0],))])
    return runs


def _varying(values: np.ndarray) -> np.ndarray:
    """Indices of the columns of ``values`` (points x elements) that are not constant."""
    return np.flatnonzero(np.any(values != values[0], axis=0))


def _one_upload(chunk: list[PulseProgram]) -> list[Run]:
    """One program whose differing elements are bound from a table, with its rows; programs
    that are all the same run one by one (there is nothing to bind)."""
    first = chunk[0]
    names: list[str] = []
    columns: list[np.ndarray] = []
    binds: list[tuple[str, int, int]] = []

    for name in _BOUND:
        values = np.stack([getattr(p, name) for p in chunk])
        for index in _varying(values):
            binds.append((name, int(index), len(names)))
            names.append(f"{name}[{index}]")
            columns.append(values[:, index].astype(float))
    durations = np.array([[p.duration_samples] for p in chunk])
    if _varying(durations).size:
        binds.append(("duration_samples", 0, len(names)))
        names.append("duration_samples")
        columns.append(durations[:, 0].astype(float))
    amps = np.stack([p.play_amp for p in chunk])
    amp_ref = np.full(first.play_amp.shape, -1, dtype=np.int32)
    for index in _varying(amps):
        amp_ref[index] = len(names)
        names.append(f"play_amp[{index}]")
        columns.append(amps[:, index])
    if not columns:
        return [Run(p, None, (p,)) for p in chunk]
    table = np.column_stack(columns)
    program = replace(first, param_names=tuple(names), param_values=table[0],
                      play_amp_ref=amp_ref, binds=tuple(binds),
                      header={**first.header, "merged_points": len(chunk)})
    rows = tuple(tuple(float(x) for x in row) for row in table)
    return [Run(program, rows, tuple(chunk))]
