"""Pulse shapes: numba kernels against plain-numpy twins (1e-12), binding, serialisation.

The references are written from the conventions in ``labqpu/pulse/kernels.py``'s docstring
(Gaussian family: sample k at position k, centre (N - 1) / 2, lifted to vanish one sample
outside the window; cosine family: sample k at time k + 1/2; DRAG Q = beta x dI/dk), vectorised
with numpy, and compared in complex128 at 1e-12.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from numpy.testing import assert_allclose
from qiskit.circuit import Parameter

from labqpu.errors import CompilationError, PulseError
from labqpu.pulse.shapes import (
    Constant,
    Cosine,
    Drag,
    FlatTop,
    Gaussian,
    GaussianSquare,
    Waveform,
    shape_from_dict,
)

TOL = 1e-12


def gaussian_square_ref(n: int, width: float, sigma: float, beta: float) -> np.ndarray:
    k = np.arange(n, dtype=float)
    c = (n - 1) / 2
    left, right = c - width / 2, c + width / 2
    x = np.where(k < left, k - left, np.where(k > right, k - right, 0.0))
    g = np.exp(-x**2 / (2 * sigma**2))
    lift = np.exp(-((left + 1) ** 2) / (2 * sigma**2))
    i = (g - lift) / (1 - lift)
    q = beta * (-x / sigma**2) * g / (1 - lift)
    return i + 1j * q


def flat_top_ref(n: int, rise: float, beta: float) -> np.ndarray:
    t = np.arange(n) + 0.5
    d = np.minimum(t, n - t)  # distance to the nearer end
    sign = np.where(t < n / 2, 1.0, -1.0)
    on_edge = d < rise if rise > 0 else np.zeros(n, bool)
    safe = rise if rise > 0 else 1.0
    i = np.where(on_edge, np.sin(np.pi * d / (2 * safe)) ** 2, 1.0)
    di = np.where(on_edge, sign * np.pi / (2 * safe) * np.sin(np.pi * d / safe), 0.0)
    return i + 1j * beta * di


def cosine_ref(n: int, beta: float) -> np.ndarray:
    t = np.arange(n) + 0.5
    i = np.sin(np.pi * t / n) ** 2
    di = np.pi / n * np.sin(2 * np.pi * t / n)
    return i + 1j * beta * di


CASES = [
    (Gaussian(duration_samples=40, sigma_samples=10), gaussian_square_ref(40, 0, 10, 0)),
    (Gaussian(duration_samples=1, sigma_samples=0.5), gaussian_square_ref(1, 0, 0.5, 0)),
    (Drag(duration_samples=41, sigma_samples=8.5, beta_samples=-1.3),
     gaussian_square_ref(41, 0, 8.5, -1.3)),
    (Drag(duration_samples=160, sigma_samples=40, beta_samples=0.7),
     gaussian_square_ref(160, 0, 40, 0.7)),
    (GaussianSquare(duration_samples=100, sigma_samples=6, width_samples=60),
     gaussian_square_ref(100, 60, 6, 0)),
    (GaussianSquare(duration_samples=101, sigma_samples=7.5, width_samples=33.3,
                    beta_samples=0.9), gaussian_square_ref(101, 33.3, 7.5, 0.9)),
    (FlatTop(duration_samples=30, rise_samples=8), flat_top_ref(30, 8, 0)),
    (FlatTop(duration_samples=31, rise_samples=7.25, beta_samples=1.5),
     flat_top_ref(31, 7.25, 1.5)),
    (FlatTop(duration_samples=1000, rise_samples=20), flat_top_ref(1000, 20, 0)),
    (Cosine(duration_samples=40), cosine_ref(40, 0)),
    (Cosine(duration_samples=33, beta_samples=-2.0), cosine_ref(33, -2.0)),
    (Constant(duration_samples=17), np.ones(17, complex)),
]


@pytest.mark.parametrize(("shape", "reference"), CASES, ids=lambda c: getattr(c, "kind", ""))
def test_envelope_matches_numpy_reference(shape, reference) -> None:
    got = shape.envelope()
    assert got.dtype == np.complex128
    assert_allclose(got, reference, rtol=0, atol=TOL)
    # The waveform table's complex64 is the same numbers, rounded.
    assert_allclose(shape.envelope(np.complex64), reference, rtol=0, atol=1e-7)


def test_gaussian_square_of_width_zero_is_drag_and_drag_of_beta_zero_is_gaussian() -> None:
    gs = GaussianSquare(duration_samples=48, sigma_samples=9, width_samples=0, beta_samples=1.1)
    drag = Drag(duration_samples=48, sigma_samples=9, beta_samples=1.1)
    assert np.array_equal(gs.envelope(), drag.envelope())
    assert np.array_equal(Drag(duration_samples=48, sigma_samples=9, beta_samples=0).envelope(),
                          Gaussian(duration_samples=48, sigma_samples=9).envelope())


@pytest.mark.parametrize("shape", [c[0] for c in CASES], ids=lambda s: s.kind)
def test_samples_are_amp_and_angle_times_envelope(shape) -> None:
    scaled = replace(shape, amp=0.4, angle_rad=0.3)
    assert_allclose(scaled.samples(), 0.4 * np.exp(0.3j) * shape.envelope(), rtol=0, atol=TOL)


def test_odd_lengths_peak_at_one() -> None:
    for shape in (Gaussian(duration_samples=41, sigma_samples=10),
                  Cosine(duration_samples=41),
                  GaussianSquare(duration_samples=41, sigma_samples=4, width_samples=11)):
        assert abs(shape.envelope().real.max() - 1.0) < TOL


def test_waveform_keeps_its_samples_and_counts_its_duration() -> None:
    data = np.array([0.0, 0.5 + 0.5j, -0.25j, 1.0])
    w = Waveform(data, amp=0.5)
    assert w.duration_samples == 4
    assert_allclose(w.envelope(), data, rtol=0, atol=0)
    assert_allclose(w.samples(), 0.5 * data, rtol=0, atol=0)
    assert w == Waveform(list(data), amp=0.5)
    assert w != Waveform(data, amp=0.25)
    assert w.envelope_key() != Waveform(data[::-1]).envelope_key()


@pytest.mark.parametrize(("samples", "message"), [
    (np.zeros((4, 4)), r"one-dimensional, got shape \(4, 4\)"),  # was flattened silently
    (["a", "b"], r"must be numbers, got \['a', 'b'\]"),  # was a bare ValueError
    (0.5, r"one-dimensional, got shape \(\)"),
])
def test_waveform_refuses_samples_that_are_no_list_of_numbers(samples, message) -> None:
    with pytest.raises(PulseError, match=message):
        Waveform(samples)
    column = np.array([[0.1], [0.2j]])  # a row or column vector is a list of samples
    assert Waveform(column) == Waveform(column.T) == Waveform([0.1, 0.2j])


@pytest.mark.parametrize("shape", [
    Drag(duration_samples=40, sigma_samples=10, beta_samples=0.5, amp=0.2, angle_rad=-1.0),
    GaussianSquare(duration_samples=64, sigma_samples=4, width_samples=40, beta_samples=0.1),
    FlatTop(duration_samples=30, rise_samples=8, amp=0.7),
    Cosine(duration_samples=24, beta_samples=0.3),
    Constant(duration_samples=5, amp=-0.1),
    Waveform(np.exp(1j * np.linspace(0, 3, 7)) * 0.3, angle_rad=0.25),
], ids=lambda s: s.kind)
def test_to_dict_round_trips_through_json(shape) -> None:
    description = json.loads(json.dumps(shape.to_dict()))
    assert description["shape"] == shape.kind
    back = shape_from_dict(description)
    assert back == shape
    assert np.array_equal(back.envelope(), shape.envelope())


def test_unbound_field_serialises_as_a_parameter_reference() -> None:
    amp, dur = Parameter("amp"), Parameter("dur")
    d = Drag(duration_samples=dur, sigma_samples=10, beta_samples=0.0, amp=amp).to_dict()
    assert d["amp"] == {"parameter": "amp"}
    assert d["duration_samples"] == {"parameter": "dur"}
    back = shape_from_dict(d)
    assert {p.name for p in back.parameters} == {"amp", "dur"}
    assert amp not in back.parameters  # a new Parameter of that name
    again = shape_from_dict(d, parameters={"amp": amp})
    assert amp in again.parameters and {p.name for p in again.parameters} == {"amp", "dur"}


def test_binding_by_parameter_or_name_gives_the_bound_shape() -> None:
    amp, sigma = Parameter("amp"), Parameter("sigma")
    shape = Drag(duration_samples=40, sigma_samples=sigma, beta_samples=0.2, amp=2 * amp)
    assert shape.parameters == {amp, sigma}
    bound = shape.assign_parameters({amp: 0.1, "sigma": 8})
    assert bound.is_bound
    assert bound == Drag(duration_samples=40, sigma_samples=8, beta_samples=0.2, amp=0.2)
    partial = shape.assign_parameters({amp: 0.1})
    assert partial.parameters == {sigma}


def test_a_waveform_binds_its_amplitude_and_angle_and_keeps_its_samples() -> None:
    """A review: a Waveform with a parameterised amp could never be bound (its copy was made
    with a keyword it does not take)."""
    amp, angle = Parameter("amp"), Parameter("angle")
    samples = np.linspace(0.1, 0.5, 40) * np.exp(0.3j)
    shape = Waveform(samples=samples, amp=amp, angle_rad=2 * angle)
    assert shape.parameters == {amp, angle}
    bound = shape.assign_parameters({amp: 0.5, "angle": 0.25})
    assert bound.is_bound and bound == Waveform(samples=samples, amp=0.5, angle_rad=0.5)
    assert_allclose(bound.samples(), 0.5 * np.exp(0.5j) * samples)
    partial = shape.assign_parameters({amp: 0.5})
    assert partial.parameters == {angle} and partial.amp == 0.5
    assert shape.assign_parameters({}) is shape
    with pytest.raises(PulseError, match="amp"):
        shape.assign_parameters({amp: 2.0, angle: 0.0})  # beyond full scale


def test_unbound_parameter_is_named_when_sampling() -> None:
    shape = Gaussian(duration_samples=40, sigma_samples=Parameter("width"))
    with pytest.raises(PulseError, match="width") as info:
        shape.envelope()
    assert info.value.parameter == "width"
    assert isinstance(info.value, CompilationError)
    assert isinstance(info.value, ValueError)


def test_a_binding_to_an_expression_shows_the_expression() -> None:
    """A review: the message showed ``<...ParameterExpression object at 0x...>``."""
    amp, b = Parameter("amp"), Parameter("b")
    with pytest.raises(PulseError, match=r"parameter 'amp' is bound to the expression 2\*b, "
                                         r"not a real number"):
        Constant(duration_samples=4, amp=amp).assign_parameters({amp: 2 * b})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_binding_is_refused_naming_the_parameter(value: float) -> None:
    amp = Parameter("rabi_amp")
    with pytest.raises(PulseError, match="rabi_amp") as info:
        Constant(duration_samples=4, amp=amp).assign_parameters({amp: value})
    assert info.value.parameter == "rabi_amp"


@pytest.mark.parametrize(("make", "field"), [
    (lambda: Gaussian(duration_samples=40.5, sigma_samples=4), "duration_samples"),
    (lambda: Gaussian(duration_samples=0, sigma_samples=4), "duration_samples"),
    (lambda: Gaussian(duration_samples=40, sigma_samples=0), "sigma_samples"),
    (lambda: Gaussian(duration_samples=40, sigma_samples=float("nan")), "sigma_samples"),
    (lambda: Drag(duration_samples=40, sigma_samples=4, beta_samples=float("inf")),
     "beta_samples"),
    (lambda: GaussianSquare(duration_samples=40, sigma_samples=4, width_samples=40),
     "width_samples"),
    (lambda: FlatTop(duration_samples=10, rise_samples=5), "rise_samples"),
    (lambda: Constant(duration_samples=10, amp=1.5), "amp"),
    (lambda: Waveform([0.5, 1.2]), "samples"),
    (lambda: Waveform([]), "samples"),
    (lambda: Waveform([0.1, complex("nan")]), "samples"),
])
def test_bad_shapes_are_refused_naming_the_field(make, field: str) -> None:
    with pytest.raises(PulseError) as info:
        make()
    assert field in info.value.parameter


def test_duration_bound_off_the_sample_grid_is_refused() -> None:
    dur = Parameter("dur")
    shape = Constant(duration_samples=dur)
    assert shape.assign_parameters({dur: 12.0}).duration_samples == 12
    with pytest.raises(PulseError, match="whole number of samples"):
        shape.assign_parameters({dur: 12.5})


def test_unknown_shape_in_a_description_is_refused() -> None:
    with pytest.raises(PulseError, match="unknown pulse shape 'sech'"):
        shape_from_dict({"shape": "sech", "duration_samples": 4})


@pytest.mark.parametrize(("shape", "keywords", "hint"), [
    (Gaussian, {"duration": 160, "amp": 0.2, "sigma": 40}, "'duration_samples'"),
    (Drag, {"duration_samples": 160, "amp": 0.2, "sigma": 40, "beta": 1.0},
     "'sigma_samples'"),
    (GaussianSquare, {"duration_samples": 160, "sigma_samples": 20, "widht_samples": 80},
     "'width_samples'"),
])
def test_a_keyword_a_shape_does_not_take_names_the_ones_it_does(shape, keywords, hint) -> None:
    """qiskit.pulse's ``Gaussian(duration=..., amp=..., sigma=...)`` in labqpu: the error
    names the keyword, the nearest one it takes and all of them (a review found Python's
    bare "unexpected keyword argument" the only word)."""
    with pytest.raises(TypeError, match=rf"takes no keyword .*did you mean {hint}\? \(it "
                                        r"takes duration_samples, amp, angle_rad, "):
        shape(**keywords)


def test_a_shape_with_its_own_init_takes_its_keywords() -> None:
    """``Waveform(samples=...)`` (its documented form: its own ``__init__``) is taken, and its
    misspelling named against it, not against the dataclass's fields (a code review found
    the first keyword check refusing it)."""
    assert Waveform(samples=[0.1, 0.2j], amp=0.5).duration_samples == 2
    with pytest.raises(TypeError, match=r"takes no keyword 'sample'; did you mean 'samples'\? "
                                        r"\(it takes samples, amp, angle_rad"):
        Waveform(sample=[0.1])
