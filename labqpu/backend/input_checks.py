"""Checks of what a user hands ``run()``, before anything is compiled: the options' types
(before Qiskit's range validators see them: a bool is no integer, an integer beyond any float
is no error of its own), and which circuit a ``CircuitError`` Qiskit raised came from."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from qiskit import QuantumCircuit
from qiskit.circuit.exceptions import CircuitError

from labqpu.drivers.protocol import SEED_LIMIT
from labqpu.errors import InvalidRunInputError

__all__ = ["OPTION_TYPES", "check_option_types", "plain_options", "refused_circuit"]

#: Run options whose type is checked before the range validators see them: (the type a value
#: must have, what the error says it must be, the type a run keeps it as).
OPTION_TYPES = {
    "shots": (numbers.Integral, "an integer", int),
    "meas_level": (numbers.Real, "0, 1 or 2", int),
    "seed_simulator": (numbers.Integral, "an integer in 0..2**63 - 1", int),
    "rep_delay": (numbers.Real, "a finite number of seconds", float),
    "timeout": (numbers.Real, "a finite number of seconds", float),
    "trace_decimation": (numbers.Integral, "a whole number of samples", int),
}


def plain_options(values: dict) -> dict:
    """Checked option ``values`` (name -> value) as the types a run uses
    (:data:`OPTION_TYPES`): whole numbers as ``int`` (``meas_level=2.0`` is 2,
    ``shots=numpy.int64(5)`` is 5), times as ``float``, the job tags as a new list; None stays
    None."""
    out = {}
    for name, value in values.items():
        if value is not None and name == "job_tags":
            value = list(value)
        elif value is not None and name in OPTION_TYPES:
            value = OPTION_TYPES[name][2](value)
        out[name] = value
    return out


def refused_circuit(circuits: list[QuantumCircuit], exc: CircuitError) -> InvalidRunInputError:
    """The error for a ``CircuitError`` Qiskit raised on reading an instruction of one of
    ``circuits`` (a delay bound to a negative or fractional duration, say): it names the
    circuit and, for a point of a sweep, its ``parameter_binds``."""
    for circuit in circuits:
        try:
            _read_all(circuit)
        except CircuitError:
            point = (circuit.metadata or {}).get("parameter_binds")
            at = f" at parameter_binds {point}" if point is not None else ""
            return InvalidRunInputError(f"circuit {circuit.name!r}{at}: "
                                        f"{exc.message.rstrip('.')}; nothing was sent",
                                        option="parameter_binds" if at else None)
    return InvalidRunInputError(f"{exc.message.rstrip('.')}; nothing was sent")


def _read_all(circuit: QuantumCircuit) -> None:
    """Read every instruction of ``circuit``, control-flow bodies included."""
    for inst in circuit.data:
        for block in getattr(inst.operation, "blocks", ()):
            _read_all(block)


def check_option_types(options: dict, what: str = "run option") -> None:
    """Type (and finiteness) checks that must precede the range validators; ``what`` names
    the options in errors ("option" for ``set_options``, "run option" for ``run()``)."""
    tags = options.get("job_tags")
    if tags is not None and (isinstance(tags, str) or not isinstance(tags, Sequence)
                             or not all(isinstance(tag, str) for tag in tags)):
        raise InvalidRunInputError(f"{what} job_tags must be a list of strings, got "
                                   f"{tags!r}", option="job_tags")
    for name, value in options.items():
        kind = OPTION_TYPES.get(name)
        if kind is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind[0]) or (
                isinstance(value, numbers.Real) and not _finite(value)) or (
                name == "seed_simulator" and not 0 <= value < SEED_LIMIT):
            raise InvalidRunInputError(f"{what} {name} must be {kind[1]}, got {value!r}",
                                       option=name)


def _finite(value: numbers.Real) -> bool:
    """Whether ``value`` is finite; one beyond any float (``10**400``, a ``Fraction``) is, and
    the range validators then refuse it naming its option (``math.isfinite`` raised a bare
    ``OverflowError``)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return True
