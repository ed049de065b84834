"""Pulse shapes: small frozen descriptions of an envelope, sampled by the numba kernels.

A shape is a name plus its parameters in samples or dimensionless units. Its *envelope* has a
continuous peak of 1 (``envelope()``); ``amp`` (fraction of DAC full scale) and ``angle_rad``
scale and rotate it at play time, so a sweep of ``amp`` reuses one waveform. Any field may be a
``qiskit.circuit.Parameter`` (or an expression of parameters) until ``assign_parameters``
binds it; sampling a shape with an unbound field is a ``PulseError`` naming that field.

=================  ===========================================================================
shape              envelope (k = 0 .. N-1, N = ``duration_samples``; see ``kernels``)
=================  ===========================================================================
``Gaussian``       lifted Gaussian of ``sigma_samples`` centred at (N - 1) / 2
``Drag``           ``Gaussian`` on I, Q = ``beta_samples`` x dI/dk
``GaussianSquare`` flat part of ``width_samples`` with Gaussian flanks, optional DRAG
``FlatTop``        flat part with raised-cosine edges of ``rise_samples``, optional DRAG
``Cosine``         raised cosine (Hann) over the whole window, optional DRAG
``Constant``       1 everywhere
``Waveform``       arbitrary complex samples given by the user (``amp`` defaults to 1)
=================  ===========================================================================

``to_dict()`` gives a JSON-ready description that a controller able to synthesise on board
could be sent instead of samples; ``shape_from_dict`` reverses it. An unbound field appears as
``{"parameter": name}``.
"""

from __future__ import annotations

import cmath
import functools
import hashlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from qiskit.circuit import Parameter, ParameterExpression

from labqpu.errors import PulseError, did_you_mean
from labqpu.pulse import kernels

#: A shape field: a number, or a Parameter (expression) still to be bound.
Value = float | int | ParameterExpression
#: What ``assign_parameters`` takes: values keyed by ``Parameter`` or by its name.
Bindings = Mapping[Parameter | str, float]


#: What ``float()`` reads but labqpu does not take as a number: text and truth values.
NOT_NUMBERS = (str, bytes, bool, np.bool_)


def bind_value(value: Value, bindings: Bindings, what: str) -> Value:
    """``value`` with the parameters of ``bindings`` substituted; a float once fully bound.

    Raises ``PulseError`` (naming ``what`` and the parameter) for a NaN or infinite value, or an
    expression that evaluates to one.
    """
    if not isinstance(value, ParameterExpression):
        return value
    found = {}
    for p in value.parameters:
        v = bindings.get(p, bindings.get(p.name)) if bindings else None
        if v is None:
            continue
        try:
            if isinstance(v, NOT_NUMBERS):  # float() would read "0.3" and True
                raise TypeError(type(v).__name__)
            number = float(v) if finite(v) else math.inf
        except (TypeError, ValueError) as exc:
            shown = f"the expression {v}" if isinstance(v, ParameterExpression) else repr(v)
            raise PulseError(f"{what}: parameter {p.name!r} is bound to {shown}, not a real "
                             "number", parameter=p.name) from exc
        if not math.isfinite(number):
            raise PulseError(f"{what}: parameter {p.name!r} is bound to {brief(v)}; it must be "
                             "finite", parameter=p.name)
        found[p] = number
    if not found:
        return value
    try:
        bound = value.bind(found)
    except (ZeroDivisionError, RuntimeError, ValueError) as exc:
        names = ", ".join(sorted(p.name for p in found))
        raise PulseError(f"{what}: binding {names} gives no finite value ({exc})",
                         parameter=names) from exc
    if bound.parameters:
        return bound
    try:
        number = float(bound)
    except TypeError as exc:
        raise PulseError(f"{what}: {value} evaluates to the complex number {complex(bound)}",
                         parameter=str(value)) from exc
    if not math.isfinite(number):
        raise PulseError(f"{what}: {value} evaluates to {number}", parameter=str(value))
    return number


def real_number(value: object, what: str, parameter: str) -> float:
    """``value`` as a float if it is a real number of any kind ``float()`` reads (numpy
    scalars, 0-d arrays, ``Decimal``); else ``PulseError`` naming ``what`` and ``parameter``:
    a string such as ``"40"``, a bool, None, a complex number or an array of several values is
    not read as one."""
    if not isinstance(value, NOT_NUMBERS) and value is not None:
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        except OverflowError as exc:
            raise PulseError(f"{what} must be finite, got {brief(value)}",
                             parameter=parameter) from exc
    raise PulseError(f"{what} must be a real number or a Parameter, got {value!r}",
                     parameter=parameter)


def finite(value: object) -> bool:
    """Whether the number ``value`` (an int, a float, a complex, a numpy scalar ...) is finite
    as a float; an integer beyond any float (``10**400``) is not (``math.isfinite`` raised a
    bare ``OverflowError`` for it). ``TypeError`` for what is not a number."""
    try:
        return cmath.isfinite(value) if isinstance(value, complex) else math.isfinite(value)
    except OverflowError:
        return False


def brief(value: object) -> str:
    """``value`` for a message: an integer of hundreds of digits cut to its first ones."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} characters)"


def require_number(value: Value, what: str) -> float:
    """``value`` as a float; ``PulseError`` naming the parameter if it is still unbound, or
    naming ``what`` if it is not a real number (:func:`real_number`)."""
    if isinstance(value, ParameterExpression):
        names = ", ".join(sorted(p.name for p in value.parameters))
        raise PulseError(f"{what} depends on the unbound parameter(s) {names}; bind them with "
                         "assign_parameters()", parameter=names)
    return real_number(value, what, what)


#: Longest waveform synthesised (samples): 8.4 ms at 1 GS/s, beyond any pulse a snapshot may
#: hold (``labqpu.store.physics.MAX_PULSE_S``) and any controller's program; a longer one (a
#: store holding a value from before that check, a pulse-builder shape) is refused before its
#: samples are allocated.
MAX_WAVEFORM_SAMPLES = 1 << 23


def whole_samples(value: Value, what: str, minimum: int = 0) -> int:
    """``value`` as a whole number of samples >= ``minimum``, else ``PulseError``."""
    number = require_number(value, what)
    if not math.isfinite(number) or number != round(number):
        raise PulseError(f"{what} must be a whole number of samples, got {number}",
                         parameter=what)
    if number < minimum:
        raise PulseError(f"{what} must be >= {minimum} samples, got {int(number)}",
                         parameter=what)
    return int(number)


def _dict_value(value: Value) -> Any:
    if isinstance(value, Parameter):
        return {"parameter": value.name}
    if isinstance(value, ParameterExpression):
        raise PulseError(f"the expression {value} cannot be described to a controller; bind it "
                         "first", parameter=str(value))
    return value


def _from_dict_value(value: Any, parameters: Mapping[str, Parameter]) -> Value:
    if isinstance(value, dict):
        name = value["parameter"]
        return parameters[name] if name in parameters else Parameter(name)
    return value


@functools.cache
def _keywords(cls: type) -> tuple[str, ...] | None:
    """The keywords ``cls(...)`` takes, from its ``__init__`` (the dataclass's, or a shape's
    own, as ``Waveform``'s ``samples``); None when it takes any (``**kwargs``)."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return tuple(p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL)


@dataclass(frozen=True, kw_only=True)
class Shape:
    """Base of the pulse shapes: a duration, an amplitude and an angle, plus the envelope
    fields of the subclass (``ENVELOPE``).

    Attributes:
        duration_samples: length of the pulse (samples, >= 1).
        amp: amplitude at play time, as a fraction of DAC full scale (|amp| <= 1).
        angle_rad: phase added to the frame's phase at play time (rad).
    """

    kind: ClassVar[str] = ""
    ENVELOPE: ClassVar[tuple[str, ...]] = ()

    duration_samples: Value
    amp: Value = 1.0
    angle_rad: Value = 0.0

    def __new__(cls, *args: Any, **kwargs: Any) -> Shape:
        """Refuse a keyword the shape does not take naming the ones it does (qiskit.pulse's
        ``duration=`` and ``sigma=`` are ``duration_samples=`` and ``sigma_samples=`` here)."""
        names = _keywords(cls)
        for word in kwargs if names is not None else ():
            if word not in names:
                unit = [n for n in names if n.startswith(f"{word}_")]
                hint = (f"; did you mean {unit[0]!r}?" if unit else did_you_mean(word, names))
                raise TypeError(f"{cls.__name__}() takes no keyword {word!r}{hint} (it takes "
                                f"{', '.join(names)}; durations in samples)")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ParameterExpression) or f.name == "samples_array":
                continue
            number = real_number(value, f"{self.kind}: {f.name}", f.name)
            if not math.isfinite(number):
                raise PulseError(f"{self.kind}: {f.name} must be finite, got {value}",
                                 parameter=f.name)
            object.__setattr__(self, f.name, number)
        if not isinstance(self.duration_samples, ParameterExpression):
            object.__setattr__(self, "duration_samples", whole_samples(
                self.duration_samples, f"{self.kind} duration_samples", minimum=1))
        if not isinstance(self.amp, ParameterExpression) and abs(self.amp) > 1.0:
            raise PulseError(f"{self.kind}: |amp| = {abs(self.amp)} exceeds DAC full scale (1)",
                             parameter="amp")
        if self.is_bound:
            self._check()

    def _check(self) -> None:
        """Constraints between bound envelope fields (``PulseError`` naming the field)."""

    def _synthesize(self, dtype: type) -> np.ndarray:
        raise NotImplementedError

    @property
    def parameters(self) -> frozenset[Parameter]:
        """The unbound parameters of every field."""
        found: set[Parameter] = set()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ParameterExpression):
                found.update(value.parameters)
        return frozenset(found)

    @property
    def is_bound(self) -> bool:
        """True when no field depends on a parameter."""
        return not self.parameters

    def assign_parameters(self, bindings: Bindings) -> Shape:
        """A copy with the parameters in ``bindings`` (by ``Parameter`` or name) substituted."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ParameterExpression):
                changes[f.name] = bind_value(value, bindings, f"{self.kind} {f.name}")
        return replace(self, **changes) if changes else self

    def envelope(self, dtype: type = np.complex128) -> np.ndarray:
        """The envelope at unit amplitude, one complex value per sample (``dtype``)."""
        for name in ("duration_samples", *self.ENVELOPE):
            require_number(getattr(self, name), f"{self.kind} {name}")
        if self.duration_samples > MAX_WAVEFORM_SAMPLES:
            raise PulseError(f"{self.kind}: a {self.duration_samples}-sample pulse is longer "
                             f"than the {MAX_WAVEFORM_SAMPLES} samples a waveform may take",
                             parameter="duration_samples")
        return self._synthesize(dtype)

    def samples(self) -> np.ndarray:
        """What is played: amp x exp(i angle_rad) x envelope (complex128)."""
        amp = require_number(self.amp, f"{self.kind} amp")
        angle = require_number(self.angle_rad, f"{self.kind} angle_rad")
        return amp * np.exp(1j * angle) * self.envelope()

    def envelope_key(self) -> tuple:
        """Identifies the envelope (not amp or angle): equal keys, equal samples."""
        return (self.kind, self.duration_samples,
                *(getattr(self, name) for name in self.ENVELOPE))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: ``{"shape": kind, field: value, ...}``."""
        out: dict[str, Any] = {"shape": self.kind}
        for f in fields(self):
            out[f.name] = _dict_value(getattr(self, f.name))
        return out


@dataclass(frozen=True, kw_only=True)
class Gaussian(Shape):
    """Lifted Gaussian of standard deviation ``sigma_samples`` (samples) centred in the window."""

    kind: ClassVar[str] = "gaussian"
    ENVELOPE: ClassVar[tuple[str, ...]] = ("sigma_samples",)
    sigma_samples: Value

    def _check(self) -> None:
        problem = kernels.sigma_problem(self.sigma_samples, self._gaussian_samples())
        if problem:
            raise PulseError(f"{self.kind}: sigma_samples: {problem}", parameter="sigma_samples")

    def _gaussian_samples(self) -> float:
        """Samples of the Gaussian part (the flanks; the whole window here)."""
        return self.duration_samples

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.gaussian_drag(self.duration_samples, self.sigma_samples, 0.0, dtype)


@dataclass(frozen=True, kw_only=True)
class Drag(Gaussian):
    """``Gaussian`` on I and ``beta_samples`` (samples) x dI/dk on Q."""

    kind: ClassVar[str] = "drag"
    ENVELOPE: ClassVar[tuple[str, ...]] = ("sigma_samples", "beta_samples")
    beta_samples: Value

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.gaussian_drag(self.duration_samples, self.sigma_samples,
                                     self.beta_samples, dtype)


@dataclass(frozen=True, kw_only=True)
class GaussianSquare(Gaussian):
    """A flat part of ``width_samples`` in the middle, Gaussian flanks of ``sigma_samples``,
    optional DRAG ``beta_samples`` (all in samples). ``width_samples`` = 0 is a ``Drag``."""

    kind: ClassVar[str] = "gaussian_square"
    ENVELOPE: ClassVar[tuple[str, ...]] = ("sigma_samples", "width_samples", "beta_samples")
    width_samples: Value
    beta_samples: Value = 0.0

    def _check(self) -> None:
        if not 0 <= self.width_samples <= self.duration_samples - 1:
            raise PulseError(f"{self.kind}: width_samples {self.width_samples} must lie in "
                             f"0..{self.duration_samples - 1}", parameter="width_samples")
        super()._check()

    def _gaussian_samples(self) -> float:
        return self.duration_samples - self.width_samples

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.gaussian_square(self.duration_samples, self.width_samples,
                                       self.sigma_samples, self.beta_samples, dtype)


@dataclass(frozen=True, kw_only=True)
class FlatTop(Shape):
    """Flat top with raised-cosine edges of ``rise_samples`` (samples; at least one flat sample
    remains), optional DRAG ``beta_samples`` (samples)."""

    kind: ClassVar[str] = "flat_top"
    ENVELOPE: ClassVar[tuple[str, ...]] = ("rise_samples", "beta_samples")
    rise_samples: Value
    beta_samples: Value = 0.0

    def _check(self) -> None:
        if not 0 <= 2 * self.rise_samples <= self.duration_samples - 1:
            raise PulseError(f"{self.kind}: two edges of rise_samples {self.rise_samples} must "
                             f"leave a flat sample of the {self.duration_samples}-sample pulse",
                             parameter="rise_samples")

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.flat_top(self.duration_samples, self.rise_samples, self.beta_samples,
                                dtype)


@dataclass(frozen=True, kw_only=True)
class Cosine(Shape):
    """Raised cosine (Hann window) over the whole pulse, optional DRAG ``beta_samples``."""

    kind: ClassVar[str] = "cosine"
    ENVELOPE: ClassVar[tuple[str, ...]] = ("beta_samples",)
    beta_samples: Value = 0.0

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.cosine(self.duration_samples, self.beta_samples, dtype)


@dataclass(frozen=True, kw_only=True)
class Constant(Shape):
    """Constant envelope 1 over ``duration_samples`` (a flat top without edges)."""

    kind: ClassVar[str] = "constant"

    def _synthesize(self, dtype: type) -> np.ndarray:
        return kernels.flat_top(self.duration_samples, 0.0, 0.0, dtype)


@dataclass(frozen=True, kw_only=True, eq=False, init=False)
class Waveform(Shape):
    """Arbitrary complex samples (|sample| <= 1); ``duration_samples`` is their number.

    ``Waveform(samples=np.array([...]))``; ``amp`` (default 1) and ``angle_rad`` still apply.
    """

    kind: ClassVar[str] = "waveform"
    samples_array: np.ndarray = field(default_factory=lambda: np.zeros(0, np.complex128))
    duration_samples: Value = field(default=0, init=False)

    def __init__(self, samples: np.ndarray | list, *, amp: Value = 1.0,
                 angle_rad: Value = 0.0) -> None:
        try:
            data = np.array(samples, dtype=np.complex128)
        except (TypeError, ValueError) as exc:
            raise PulseError(f"waveform: samples must be numbers, got {samples!r:.80}",
                             parameter="samples") from exc
        if data.ndim > 1 and data.size == max(data.shape):  # a row or column vector
            data = data.reshape(-1)
        if data.ndim != 1:
            raise PulseError(f"waveform: samples must be one-dimensional, got shape "
                             f"{data.shape}", parameter="samples")
        if data.size == 0:
            raise PulseError("waveform: at least one sample is needed", parameter="samples")
        if not np.all(np.isfinite(data)):
            raise PulseError("waveform: samples must be finite", parameter="samples")
        if np.max(np.abs(data)) > 1.0 + 1e-12:
            raise PulseError(f"waveform: peak |sample| {np.max(np.abs(data)):.6g} exceeds DAC "
                             "full scale (1)", parameter="samples")
        data.setflags(write=False)
        object.__setattr__(self, "samples_array", data)
        object.__setattr__(self, "duration_samples", int(data.size))
        object.__setattr__(self, "amp", amp)
        object.__setattr__(self, "angle_rad", angle_rad)
        self.__post_init__()

    def _synthesize(self, dtype: type) -> np.ndarray:
        return self.samples_array.astype(dtype)

    def assign_parameters(self, bindings: Bindings) -> Waveform:
        """A copy with the parameters of ``amp`` and ``angle_rad`` in ``bindings`` (by
        ``Parameter`` or name) substituted; the samples are kept."""
        bound = {name: bind_value(value, bindings, f"{self.kind} {name}")
                 if isinstance(value := getattr(self, name), ParameterExpression) else value
                 for name in ("amp", "angle_rad")}
        if all(bound[name] is getattr(self, name) for name in bound):
            return self
        return Waveform(self.samples_array, **bound)

    def envelope_key(self) -> tuple:
        return (self.kind, hashlib.sha256(self.samples_array.tobytes()).hexdigest())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Waveform) and self.envelope_key() == other.envelope_key()
                and (self.amp, self.angle_rad) == (other.amp, other.angle_rad))

    def __hash__(self) -> int:
        return hash((self.envelope_key(), self.amp, self.angle_rad))

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.kind, "samples_re": self.samples_array.real.tolist(),
                "samples_im": self.samples_array.imag.tolist(),
                "amp": _dict_value(self.amp), "angle_rad": _dict_value(self.angle_rad)}


SHAPES: dict[str, type[Shape]] = {cls.kind: cls for cls in (
    Gaussian, Drag, GaussianSquare, FlatTop, Cosine, Constant, Waveform)}


def shape_from_dict(description: Mapping[str, Any], *,
                    parameters: Mapping[str, Parameter] | None = None) -> Shape:
    """The shape ``description`` (from ``Shape.to_dict``) describes; ``{"parameter": name}``
    becomes ``parameters[name]`` when given there, else a new ``Parameter(name)``. A builder
    holds one Parameter of a name, so shapes that share one are read with the same
    ``parameters`` (``{p.name: p for p in builder.parameters}``, say)."""
    data = dict(description)
    kind = data.pop("shape", None)
    if kind not in SHAPES:
        raise PulseError(f"unknown pulse shape {kind!r}; known: {sorted(SHAPES)}",
                         parameter="shape")
    values = {k: _from_dict_value(v, parameters or {}) for k, v in data.items()}
    if kind == "waveform":
        samples = np.array(values.pop("samples_re")) + 1j * np.array(values.pop("samples_im"))
        return Waveform(samples, **values)
    try:
        return SHAPES[kind](**values)
    except TypeError as exc:
        raise PulseError(f"{kind}: {exc}", parameter="shape") from exc
