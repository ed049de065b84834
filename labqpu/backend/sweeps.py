"""Controller-bound sweeps, host side: the ``parameter_binds`` run option.

``backend.run(program, parameter_binds={"amp": amplitudes})`` runs a ``PulseProgram`` whose
plays take their amplitude from named entries of its parameter table
(``ProgramBuilder.play(..., amplitude="amp")``) once per value: the program is uploaded once
and the controller binds each point (run parameter ``param_sets``, docs/protocol.md section
4.7). The job's result holds one experiment per point, in order, each with the values it ran
at in its header's ``metadata["parameter_binds"]``.

:func:`param_sets_for` checks everything before anything is sent: names the program has,
equal numbers of finite values, at most the controller's ``param_sets.max_sets`` points and
``max_total_shots`` shots, no amplitude over DAC full scale, a controller that announces
``param_sets`` in its capabilities, one controller per program, and no raw traces.

``backend.run(builder, parameter_binds={phi: phases})`` sweeps any parameter of a
``PulseBuilder`` (:func:`builder_points`), and ``backend.run(circuit, parameter_binds={theta:
angles})`` any parameter of a circuit (:func:`circuit_points`, as qiskit-aer takes it): one
program per point, which ``run()`` merges into one upload where the points differ only in
numbers the controller binds (``labqpu.backend.merge``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
from qiskit.circuit import QuantumCircuit

from labqpu.errors import InvalidRunInputError, PulseError
from labqpu.pulse.builder import PulseBuilder
from labqpu.pulse.program import PulseProgram
from labqpu.pulse.shapes import NOT_NUMBERS, brief
from labqpu.pulse.split import split_program

__all__ = ["binds_per_item", "builder_points", "circuit_points", "param_sets_for"]

Rows = tuple[tuple[float, ...], ...]


def _name(key: object) -> str:
    return str(getattr(key, "name", key))


def binds_per_item(binds: object, count: int) -> list:
    """The ``parameter_binds`` run option as one entry (a mapping or None) per run input:
    None (no sweep), one mapping (one input) or a list of ``count``. Raises
    ``InvalidRunInputError`` for any other form."""
    if binds is None:
        return [None] * count
    if isinstance(binds, Mapping) and count == 1:
        return [binds]
    if isinstance(binds, Mapping | str | bytes) or not isinstance(binds, Sequence) \
            or len(binds) != count:
        raise InvalidRunInputError(
            f"parameter_binds must be a mapping (one program) or a list of one mapping per "
            f"program ({count}), got {binds!r}"[:300], option="parameter_binds")
    return list(binds)


def param_sets_for(binds: object, programs: Sequence[PulseProgram], *, shots: int,
                   meas_level: int, capabilities: Callable[[str], dict],
                   max_points: int) -> list[Rows | None]:
    """The ``param_sets`` of each program's run from the ``parameter_binds`` run option: a
    mapping (one program) or a list with one mapping (or None) per program; each mapping
    takes a parameter (or its name) to the sequence of its values. ``capabilities(name)`` is a
    controller's hello capabilities; a sweep has at most ``max_points`` points. Raises
    ``InvalidRunInputError`` naming the problem."""
    binds = binds_per_item(binds, len(programs))
    out = []
    for i, (bind, program) in enumerate(zip(binds, programs, strict=True)):
        if bind is None:
            _check_values(program, np.asarray(program.param_values, dtype=float)[None, :],
                          f"program {program.display_name!r}", i, len(programs))
            out.append(None)
        else:
            out.append(_rows(bind, program, shots, meas_level, capabilities, i, len(programs),
                             max_points))
    return out


def _value_columns(bind: object, names: Sequence[str], where: str, what: str = "program"
                   ) -> tuple[dict[str, np.ndarray], int]:
    """The values of a ``parameter_binds`` mapping by parameter name, checked against the
    program's parameter ``names``: numbers, at least one, all finite, as many for each; and
    that number of points. ``InvalidRunInputError`` naming the problem after ``where``."""
    if not isinstance(bind, Mapping) or not bind:
        raise InvalidRunInputError(f"{where}: must be a non-empty mapping of parameter to "
                                   f"values, got {bind!r}"[:300], option="parameter_binds")
    columns: dict[str, np.ndarray] = {}
    for key, values in bind.items():
        name = _name(key)
        if name not in names:
            raise InvalidRunInputError(f"{where}: the {what} has no parameter {name!r}; it "
                                       f"has {list(names) or 'none'}", option="parameter_binds")
        try:
            column = np.array([_number(v) for v in values])
        except (TypeError, ValueError) as exc:
            raise InvalidRunInputError(f"{where}: {name!r} must be a sequence of numbers "
                                       f"({exc})", option="parameter_binds") from exc
        if column.size == 0 or not np.all(np.isfinite(column)):
            raise InvalidRunInputError(f"{where}: {name!r} needs at least one value, all "
                                       "finite", option="parameter_binds")
        columns[name] = column
    points = sorted({c.size for c in columns.values()})
    if len(points) != 1:
        raise InvalidRunInputError(f"{where}: every parameter needs as many values; got "
                                   f"{points}", option="parameter_binds")
    return columns, points[0]


def _number(value: object) -> float:
    """``value`` as a float (numbers, numpy scalars and 0-d arrays, ``Decimal`` ...), but not
    a string or a bool, which ``float`` would take too (``TypeError``), nor an integer beyond
    any float (``ValueError``; ``float`` raised a bare ``OverflowError``)."""
    if isinstance(value, NOT_NUMBERS) or (
            isinstance(value, np.ndarray) and value.dtype.kind not in "iuf"):
        raise TypeError(f"{value!r} is not a number")
    try:
        return float(value)
    except OverflowError as exc:
        raise ValueError(f"{brief(value)} is beyond any float") from exc


def _points(bind: object, names: Sequence[str], where: str, max_points: int,
            what: str) -> list[dict[str, float]]:
    """The points of a sweep, {name: value} each, from a ``parameter_binds`` mapping that gives
    every parameter of ``names`` (of the ``what``) its values (``_value_columns``), at most
    ``max_points``."""
    columns, points = _value_columns(bind, names, where, what)
    left = [name for name in names if name not in columns]
    if left:
        raise InvalidRunInputError(f"{where}: parameter(s) {', '.join(left)} have no values; "
                                   "give them in parameter_binds too (one value per point)",
                                   option="parameter_binds")
    if points > max_points:
        raise InvalidRunInputError(f"{where}: {points} points; a job runs at most "
                                   f"{max_points}", option="parameter_binds")
    return [{name: float(column[k]) for name, column in columns.items()}
            for k in range(points)]


def builder_points(builder: PulseBuilder, bind: object, *, max_points: int
                   ) -> list[PulseProgram]:
    """The programs of a sweep of a ``PulseBuilder``'s parameters, one per point: ``bind``
    maps each parameter (or its name) the builder leaves unbound to its values, all of one
    length. Any parameter sweeps this way (amplitude, phase, frequency, duration, delay): each
    point is the builder's program at those values, with them in its header's
    ``metadata["parameter_binds"]``. ``run()`` sends consecutive points that differ only in
    numbers the controller binds (start samples, phases, frequencies, amplitudes, length) as
    one upload (``labqpu.backend.merge``); points whose waveforms differ (a swept pulse
    duration or width) are uploaded apart. Raises ``InvalidRunInputError`` naming the
    problem."""
    where = f"parameter_binds of pulse program {builder.name!r}"
    programs = []
    for k, point in enumerate(_points(bind, sorted(p.name for p in builder.parameters), where,
                                      max_points, "pulse program")):
        try:
            program = builder.assign_parameters(point)
        except PulseError as exc:
            raise InvalidRunInputError(f"{where}: at point {k} ({point}): {exc}",
                                       option="parameter_binds") from exc
        metadata = {**program.header.get("metadata", {}), "parameter_binds": point}
        programs.append(replace(program, header={**program.header, "metadata": metadata}))
    return programs


def circuit_points(circuit: QuantumCircuit, bind: object, *, max_points: int
                   ) -> list[QuantumCircuit]:
    """The circuits of a sweep of a circuit's parameters (as qiskit-aer's ``parameter_binds``):
    ``bind`` maps each parameter of ``circuit`` (or its name) to its values, all of one
    length; each point is the circuit with those values assigned, its name (a result's
    ``get_counts(circuit)`` finds the first point, as qiskit-aer's) and them in its
    ``metadata["parameter_binds"]``. ``run()`` compiles the points (those that differ only in
    rz angles and delays once: ``labqpu.pulse.batch``) and sends consecutive points that
    differ only in rz angles, delays or pulse-gate numbers as one upload
    (``labqpu.backend.merge``). Raises ``InvalidRunInputError`` naming the problem."""
    where = f"parameter_binds of circuit {circuit.name!r}"
    by_name = {p.name: p for p in circuit.parameters}
    circuits = []
    for k, point in enumerate(_points(bind, sorted(by_name), where, max_points, "circuit")):
        try:
            bound = circuit.assign_parameters({by_name[name]: v for name, v in point.items()})
        except ZeroDivisionError as exc:  # Qiskit's error for a non-finite bound expression
            raise InvalidRunInputError(f"{where}: point {k} ({point}) makes an expression of "
                                       f"the circuit non-finite ({exc})",
                                       option="parameter_binds") from exc
        bound.name = circuit.name  # Qiskit's copy is renamed: results are found by the name
        bound.metadata = {**(circuit.metadata or {}), "parameter_binds": point}
        circuits.append(bound)
    return circuits


def expand_sweeps(items: list, binds: object, *, max_points: int) -> tuple[list, list]:
    """``run()``'s items with each ``PulseBuilder``, and each circuit given a mapping in
    ``parameter_binds``, replaced by the points of its sweep
    (:func:`builder_points`, :func:`circuit_points`, at most ``max_points`` each), and
    ``parameter_binds`` as one entry per remaining item (None for the sweeps' points)."""
    out_items: list = []
    out_binds: list = []
    for item, bind in zip(items, binds_per_item(binds, len(items)), strict=True):
        if isinstance(item, PulseBuilder):
            if bind is None and not item.parameters:
                out_items.append(item.build())  # nothing to bind: what build() gives
                out_binds.append(None)
                continue
            if bind is None:
                names = sorted(p.name for p in item.parameters)
                raise InvalidRunInputError(
                    f"pulse program {item.name!r} is a PulseBuilder with parameter(s) "
                    f"{', '.join(names)}: sweep them with parameter_binds={{parameter: "
                    "values}, or call its assign_parameters(...) first",
                    option="parameter_binds")
            points = builder_points(item, bind, max_points=max_points)
        elif isinstance(item, QuantumCircuit) and bind is not None:
            points = circuit_points(item, bind, max_points=max_points)
        else:
            out_items.append(item)
            out_binds.append(bind)
            continue
        out_items.extend(points)
        out_binds.extend([None] * len(points))
    return out_items, out_binds


def _check_values(program: PulseProgram, rows: np.ndarray, where: str, index: int,
                  count: int) -> None:
    """Every parameter has a value at every point: a program's table holds NaN for a parameter
    left to the run (``assign_parameters(sweep=...)``), which ``parameter_binds`` must give.
    ``index`` of ``count`` programs: where this program's mapping goes in the option."""
    missing = [program.param_names[j] for j in range(rows.shape[1])
               if not np.all(np.isfinite(rows[:, j]))]
    if missing:
        mapping = f"{{{missing[0]!r}: [...]}}"
        option = (f"parameter_binds={mapping}" if count == 1 else
                  f"parameter_binds=[...] with {mapping} at position {index} (one mapping, or "
                  f"None, per program: {count})")
        raise InvalidRunInputError(
            f"{where}: parameter(s) {', '.join(missing)} have no value; give their values "
            f"with {option} (the program leaves them to the run, as "
            "assign_parameters(sweep=...) does); nothing was sent", option="parameter_binds")


def _rows(bind: object, program: PulseProgram, shots: int, meas_level: int,
          capabilities: Callable[[str], dict], index: int, count: int, max_points: int
          ) -> Rows:
    """The rows of ``program``'s controller-bound sweep (a run per at most ``max_sets`` of them
    and ``max_total_shots`` shots, ``labqpu.backend.merge``), checked."""
    where = f"parameter_binds of program {program.display_name!r}"
    parts = split_program(program)
    if len(parts) > 1:
        raise InvalidRunInputError(f"{where}: the program plays on controllers "
                                   f"{[p.controller for p in parts]}; a controller-bound sweep "
                                   "runs on one", option="parameter_binds")
    if meas_level == 0:
        raise InvalidRunInputError(f"{where}: raw traces (meas_level 0) are not swept on the "
                                   "controller", option="parameter_binds")
    controller = parts[0].controller
    caps = capabilities(controller).get("param_sets")
    if not isinstance(caps, dict):
        raise InvalidRunInputError(f"{where}: controller {controller} does not bind "
                                   "parameters on board (no 'param_sets' in its capabilities)",
                                   option="parameter_binds")
    known = caps.get("binds")
    known = set(known) if isinstance(known, list) else {"play_amp_ref"}  # the first protocol
    needed = {name for name, _, _ in program.binds}
    if np.any(np.asarray(program.play_amp_ref) >= 0):
        needed.add("play_amp_ref")
    if needed - known:
        raise InvalidRunInputError(f"{where}: controller {controller} does not bind "
                                   f"{', '.join(sorted(needed - known))} (its param_sets "
                                   f"binds {sorted(known)})", option="parameter_binds")
    names = list(program.param_names)
    columns, k = _value_columns(bind, names, where)
    if k > max_points:
        raise InvalidRunInputError(f"{where}: {k} points; a job runs at most {max_points}",
                                   option="parameter_binds")
    if shots > caps.get("max_total_shots", math.inf):
        raise InvalidRunInputError(
            f"{where}: {shots} shots; controller {controller} runs at most "
            f"{caps.get('max_total_shots')} shots per run", option="parameter_binds")
    rows = np.tile(np.asarray(program.param_values, dtype=float), (k, 1))
    for name, column in columns.items():
        rows[:, names.index(name)] = column
    _check_values(program, rows, where, index, count)
    _check_full_scale(program, rows, where)
    return tuple(tuple(float(x) for x in row) for row in rows)


#: DAC full scale of a play's |amplitude| x waveform peak (docs/protocol.md: 1.0), with the
#: reference controller's rounding allowance: the host refuses what the controller would.
DAC_FULL_SCALE = 1.0 + 1e-6


def _check_full_scale(program: PulseProgram, rows: np.ndarray, where: str) -> None:
    """No play may reach past DAC full scale (:data:`DAC_FULL_SCALE`) at any point."""
    refs = np.asarray(program.play_amp_ref)
    bound = np.flatnonzero(refs >= 0)
    if not bound.size:
        return
    peaks = program.waveform_peaks[np.asarray(program.play_wave)[bound]]
    amps = np.abs(rows[:, refs[bound]]) * peaks
    over = np.argwhere(amps > DAC_FULL_SCALE)
    if over.size:
        k, i = over[0]
        raise InvalidRunInputError(
            f"{where}: at point {k}, {program.param_names[refs[bound[i]]]} = "
            f"{rows[k, refs[bound[i]]]:.4g} drives play {bound[i]} over DAC full scale "
            f"(waveform peak {peaks[i]:.4g})", option="parameter_binds")
