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

Nothing merges when the controller does not state ``play_amp_ref`` and every field of
``BINDABLE`` in ``capabilities.param_sets.binds``, for raw traces (``meas_level`` 0), for a
program with a parameter table of its own or one that plays on several controllers, or when
the run option ``merge_sweeps`` is False. A program of a rack that plays on one of its
controllers merges as that controller's part. Runs longer than the controller's ``max_sets``
points or ``max_total_shots`` shots are cut into several, logged (INFO) before anything is
sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from labqpu.backend.program_checks import result_point_limit
from labqpu.pulse.program import BINDABLE, PulseProgram
from labqpu.pulse.split import ControllerPart

__all__ = ["Run", "plan_runs"]

log = logging.getLogger(__name__)

#: Arrays that must be equal, element for element, for programs to share one upload.
_SAME = ("play_port", "play_wave", "play_block", "wave_offset", "wave_data", "acq_port",
         "acq_duration", "acq_qubit", "acq_clbit", "block_acq", "block_value", "block_parent",
         "shift_port", "shift_block", "acq_disc_axis", "acq_disc_threshold")
#: Arrays whose elements may differ; they are bound per point.
_BOUND = tuple(name for name in BINDABLE if name != "duration_samples")

Rows = tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class Run:
    """One upload and run on the controller.

    ``program`` is what is uploaded; ``rows`` its ``param_sets`` (None: one plain run);
    ``members`` the program whose header, classical bits and discriminators each point's result
    carries (one per point); ``explicit``: the rows came from the ``parameter_binds`` option,
    so each result says which values it ran at; ``first_point``: the index of the run's first
    point in that sweep (a sweep longer than the controller binds runs in slices).
    """

    program: PulseProgram
    rows: Rows | None
    members: tuple[PulseProgram, ...]
    explicit: bool = False
    first_point: int = 0

    @property
    def points(self) -> int:
        """Number of points (results) of the run."""
        return len(self.members)


def plan_runs(programs: Sequence[PulseProgram], explicit: Sequence[Rows | None],
              parts: Sequence[Sequence[ControllerPart]], *, shots: int, enabled: bool,
              capabilities: Callable[[str], dict]) -> list[Run]:
    """The runs that execute ``programs`` in order. ``explicit`` holds each program's rows from
    ``parameter_binds`` (None for most); such programs run as given. ``parts`` holds each
    program's :func:`split_program`. The others merge where ``enabled`` and their controller's
    ``capabilities(name)`` allow it."""
    runs: list[Run] = []
    group: list[tuple[PulseProgram, PulseProgram]] = []  # (what would be uploaded, program)
    structure = ""
    enabled = enabled and len(programs) > 1  # one program has nothing to merge with

    def flush() -> None:
        if group:
            runs.extend(_merged(group, shots, capabilities))
            group.clear()

    for program, rows, split in zip(programs, explicit, parts, strict=True):
        upload = _one_controller(program, split) if enabled and rows is None else None
        if rows is not None:
            flush()
            caps = capabilities(split[0].controller).get("param_sets")
            size = min(_sweep_size(caps, shots, len(rows)),
                       _within_frame(capabilities(split[0].controller), shots, program))
            if len(rows) > size:
                log.info("a sweep of %d points runs as %d runs of at most %d (controller %s: "
                         "param_sets.max_sets %s, max_total_shots %s at %d shots, or the IQ "
                         "results of one reply)", len(rows), -(-len(rows) // size), size,
                         split[0].controller, caps.get("max_sets"),
                         caps.get("max_total_shots"), shots)
            for i in range(0, len(rows), size):
                chunk = rows[i:i + size]
                runs.append(Run(program, chunk, (program,) * len(chunk), explicit=True,
                                first_point=i))
        elif upload is None:
            flush()
            runs.append(Run(program, None, (program,)))
        else:
            this = _structure(upload)
            if this != structure:
                flush()
                structure = this
            group.append((upload, program))
    flush()
    return runs


def _one_controller(program: PulseProgram, parts: Sequence[ControllerPart]
                    ) -> PulseProgram | None:
    """What a merge of ``program`` would bind and upload: its only controller part (the
    program itself, or for a rack program on one controller, that controller's part on its
    own ports, its plays and acquisitions in the same order). None when it cannot merge: it
    has a parameter table of its own, or it plays on several controllers."""
    if program.param_names or len(parts) != 1:
        return None
    return parts[0].program


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


def points_per_run(caps: object, shots: int) -> int:
    """How many points of ``shots`` shots one merged run may have on a controller whose
    capabilities hold ``caps`` (its ``param_sets``): 1 when it cannot bind every field."""
    if not isinstance(caps, dict) or not {"play_amp_ref", *BINDABLE} <= set(caps.get("binds", ())):
        return 1
    return _sweep_size(caps, shots, 1)


def _within_frame(controller_caps: dict, shots: int, program: PulseProgram) -> int:
    """Most points of ``shots`` shots of ``program`` whose IQ results one run returns
    (:func:`~labqpu.backend.program_checks.result_point_limit`), at least 1."""
    per_point = shots * int(program.acq_port.shape[0])
    return max(1, result_point_limit(controller_caps) // max(per_point, 1))


def _sweep_size(caps: dict, shots: int, points: int) -> int:
    """Points of ``shots`` shots per run on a controller whose ``param_sets`` are ``caps``:
    at most ``max_sets`` (``points`` when it states none) and ``max_total_shots`` / shots,
    at least 1."""
    size = int(caps.get("max_sets", points))
    total = caps.get("max_total_shots")
    if isinstance(total, int | float) and math.isfinite(total):
        size = min(size, int(total // max(shots, 1)))
    return max(1, size)


def _merged(group: list[tuple[PulseProgram, PulseProgram]], shots: int,
            capabilities: Callable[[str], dict]) -> list[Run]:
    """``group`` ((upload, program) pairs of one structure, in order) as few runs as the
    controller allows."""
    controller = group[0][0].controller
    caps = capabilities(controller).get("param_sets")
    size = min(points_per_run(caps, shots),
               _within_frame(capabilities(controller), shots, group[0][0]))
    if size < 2 or len(group) < 2:
        return [Run(p, None, (p,)) for _, p in group]
    if len(group) > size:
        log.info("%d circuits of one structure merge into %d uploads of at most %d points "
                 "(controller %s: param_sets.max_sets %s, max_total_shots %s at %d shots, or "
                 "the IQ results of one reply)",
                 len(group), -(-len(group) // size), size, controller, caps.get("max_sets"),
                 caps.get("max_total_shots"), shots)
    runs = []
    for i in range(0, len(group), size):
        chunk = group[i:i + size]
        runs.extend(_one_upload(chunk) if len(chunk) > 1 else [Run(chunk[0][1], None,
                                                                   (chunk[0][1],))])
    return runs


def _varying(values: np.ndarray) -> np.ndarray:
    """Indices of the columns of ``values`` (points x elements) that are not constant."""
    return np.flatnonzero(np.any(values != values[0], axis=0))


def _one_upload(chunk: list[tuple[PulseProgram, PulseProgram]]) -> list[Run]:
    """One program whose differing elements are bound from a table, with its rows; programs
    that are all the same run one by one (there is nothing to bind)."""
    uploads = [u for u, _ in chunk]
    members = tuple(p for _, p in chunk)
    first = uploads[0]
    names: list[str] = []
    columns: list[np.ndarray] = []
    binds: list[tuple[str, int, int]] = []
    for name in _BOUND:
        values = np.stack([getattr(p, name) for p in uploads])
        for index in _varying(values):
            binds.append((name, int(index), len(names)))
            names.append(f"{name}[{index}]")
            columns.append(values[:, index].astype(float))
    durations = np.array([[p.duration_samples] for p in uploads])
    if _varying(durations).size:
        binds.append(("duration_samples", 0, len(names)))
        names.append("duration_samples")
        columns.append(durations[:, 0].astype(float))
    amps = np.stack([p.play_amp for p in uploads])
    amp_ref = np.full(first.play_amp.shape, -1, dtype=np.int32)
    for index in _varying(amps):
        amp_ref[index] = len(names)
        names.append(f"play_amp[{index}]")
        columns.append(amps[:, index])
    if not columns:
        return [Run(p, None, (p,)) for p in members]
    table = np.column_stack(columns)
    program = replace(first, param_names=tuple(names), param_values=table[0],
                      play_amp_ref=amp_ref, binds=tuple(binds),
                      header={**first.header, "merged_points": len(chunk)})
    rows = tuple(tuple(float(x) for x in row) for row in table)
    return [Run(program, rows, members)]
