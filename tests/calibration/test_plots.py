"""The PNG of an experiment record: with the axes at fixed margins (no layout engine moves
them), every text lies inside the figure, tick labels are distinct and do not run into each
other, and an axis in seconds, hertz or amperes reads in engineering units."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from labqpu.calibration.plots import plot_rb, plot_sweep, save_plot
from labqpu.calibration.records import ExperimentRecord

LONG_Y = "X180.Y90 - Y180.X90, projected IQ (a.u.)"
REJECTED = ("at the corrected frequency 5151664991 Hz the fringe sampled every 64 ns runs at "
            "4.126e+06 Hz, not at the set 1.5e+06 Hz: the qubit is off by more than Ramsey "
            "fringes sampled every 100 ns tell apart (an error of a multiple of 10 MHz folds "
            "onto none); the sweet_spot node finds its frequency by spectroscopy: run it "
            "forced (labqpu calibrate sweet_spot --force, or run_graph(..., force=True)), as "
            "its values within their age limits leave it be")


def _record(x_label: str, x, y=None, lines: int = 1, x_ticks=None,
            y_label: str = LONG_Y) -> ExperimentRecord:
    x = np.asarray(x, dtype=float)
    y = np.exp(-np.arange(x.size) / 5.0) if y is None else np.asarray(y, dtype=float)
    values = {"t1_s": [5.17e-5, 1.8e-6]}
    values.update({f"extra_value_with_a_long_name_{i}": [0.123456789, 0.0012]
                   for i in range(lines - 1)})
    raw = {"x": x.tolist(), "series": {"P(1)": y.tolist()},
           "curves": {"fit": {"x": x.tolist(), "y": y.tolist()}},
           "marks": {"old": float(x[1]), "chosen": float(x[2])}, "x_label": x_label,
           "y_label": y_label}
    if x_ticks is not None:
        raw["x_ticks"] = x_ticks
    return ExperimentRecord(
        experiment="t1-q2-20261204T000000Z", kind="t1", subject="qubit 2",
        measured_at="2026-12-04T00:00:00Z", values=values, old_values={"t1_s": 5.08e-5},
        fit={"r_squared": 0.997, "rms_residual": 0.0159}, raw=raw)


def _rb_record(survival: list | None = None) -> ExperimentRecord:
    lengths = [1, 40, 120, 300]
    survival = survival or [[0.99, 0.995, 0.992], [0.97, 0.965, 0.975], [0.91, 0.9, 0.93],
                            [0.82, 0.8, 0.85]]
    return ExperimentRecord(
        experiment="rb-20261204T000000-q4", kind="rb_1q", subject="qubit 4",
        measured_at="2026-12-04T00:00:00Z",
        values={"alpha": [0.9985, 1e-4], "epc": [7.4e-4, 6.9e-5], "sx:4.error": [8.9e-4, 1e-4]},
        old_values={"sx:4.error": 8.83e-4},
        fit={"amplitude": 0.49, "baseline": 0.5, "reduced_chi2": 0.32},
        raw={"lengths": lengths, "survival": survival})


CASES = {
    "seconds to 200 µs, 12 value lines": _record("delay after the pi pulse (s)",
                                                 np.linspace(0, 2e-4, 21), lines=12),
    "seconds to 175 µs": _record("total free evolution (s)", np.linspace(0, 1.75e-4, 15)),
    "small negative y": _record("CZs played in a row", np.arange(0, 40, 4.0),
                                y=np.linspace(-1.5e-4, 3e-4, 10), y_label="population out of |11>"),
    "qubit frequency, 40 MHz span": _record("drive frequency (Hz)",
                                            np.linspace(5.8650e9, 5.9050e9, 41)),
    "readout frequency, 20 kHz span": _record("readout frequency (Hz)",
                                              np.linspace(7.1155e9, 7.11552e9, 11)),
    "readout frequency, 12 MHz span": _record("readout frequency (Hz)",
                                              np.linspace(7.034e9, 7.046e9, 61)),
    "flux bias, +-60 uA": _record("flux bias current (A)", np.linspace(-6e-5, 6e-5, 25)),
    # a review's cases: EngFormatter's six digits read 100.0005 uA as 100.001 uA, and put
    # 7.115475 GHz as 7.11547
    "flux bias, 1 nA span at 100 uA": _record("flux bias current (A)",
                                              np.linspace(99.9995e-6, 100.0005e-6, 11)),
    "readout frequency, 125 kHz span": _record("readout frequency (Hz)",
                                               np.linspace(7.11545e9, 7.115575e9, 11)),
    "sweet spot, GHz against uA": _record("flux bias current (A)",
                                          np.linspace(-2.5e-4, 2.5e-4, 5),
                                          y=[5.041e9, 5.047e9, 5.040e9, 5.021e9, 4.989e9],
                                          y_label="0-1 frequency from spectroscopy (Hz)"),
    "long category labels": _record("spectator in |1>", [0.0, 1.0, 2.0, 3.0],
                                    x_ticks=["none", "qubit 0 (spectator)", "qubit 3",
                                             "qubit 8 (spectator)"]),
    "a count that ends in (s)": _record("sequence(s)", np.arange(0, 2000, 100.0)),
    # a review's case: a refused calibration left no record; its plot now says why
    "rejected, with a long reason": dataclasses.replace(
        _record("delay between the pi/2 pulses (s)", np.linspace(0, 6e-6, 61)),
        settings={"rejected": REJECTED}),
}


def _figures():
    return [pytest.param(lambda r=r: plot_sweep(r), id=k) for k, r in CASES.items()] + [
        pytest.param(lambda: plot_rb(_rb_record()), id="rb"),
        # a review's case: the values' box in the axes' upper right covered the points of a
        # decay too slow to leave the top of the axes
        pytest.param(lambda: plot_rb(_rb_record([[0.995, 0.99, 0.993], [0.99, 0.992, 0.988],
                                                 [0.988, 0.99, 0.985], [0.985, 0.98, 0.99]])),
                     id="rb, a slow decay")]


@pytest.mark.parametrize("make", _figures())
def test_every_text_is_inside_the_figure_and_tick_labels_are_apart(make):
    fig = make()
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # places the axis labels, the legend and the ticks
    renderer = canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches, what is drawn
    page = fig.bbox_inches
    assert drawn.x0 >= page.x0 and drawn.y0 >= page.y0
    assert drawn.x1 <= page.x1 and drawn.y1 <= page.y1
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        ticks = [t for t in axis.get_ticklabels() if t.get_text()
                 and axis.get_view_interval().min() <= t.get_position()[axis is ax.yaxis]
                 <= axis.get_view_interval().max()]
        labels = [t.get_text() for t in ticks]
        assert len(set(labels)) == len(labels), labels
        if axis is ax.xaxis:
            boxes = sorted((t.get_window_extent(renderer) for t in ticks), key=lambda b: b.x0)
            for left, right in itertools.pairwise(boxes):
                assert left.x1 < right.x0, labels
    # the values: below the axis, its labels and ticks, none inside the axes
    text_top = max(t.get_window_extent(renderer).y1 for t in fig.texts)
    assert text_top < ax.get_tightbbox(renderer).y0
    assert not ax.texts
    # the legend covers no data: under the axes (an RB plot's covered its baseline)
    assert ax.get_legend() is None
    for legend in fig.legends:
        assert legend.get_window_extent(renderer).y1 < ax.get_tightbbox(renderer).y0


@pytest.mark.parametrize(("case", "expected", "unit"), [
    ("seconds to 200 µs, 12 value lines", "µs", " (s)"),
    ("seconds to 175 µs", "µs", " (s)"),
    # a review's case: frequencies read 7.0350 under a "1e9" multiplier, currents in A
    ("qubit frequency, 40 MHz span", "GHz", " (Hz)"),
    ("readout frequency, 12 MHz span", "GHz", " (Hz)"),
    ("flux bias, +-60 uA", "µA", " (A)"),
    ("sweet spot, GHz against uA", "A", " (A)"),
])
def test_an_axis_in_seconds_hertz_or_amperes_reads_in_engineering_units(case, expected, unit):
    fig = plot_sweep(CASES[case])
    FigureCanvasAgg(fig).draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(t.endswith(expected) for t in ticks if not t.startswith("0 ")), ticks
    assert not fig.axes[0].xaxis.get_offset_text().get_text(), ticks
    # the ticks carry the unit: the label does not say "(s)" beside "25 µs"
    assert fig.axes[0].get_xlabel() == CASES[case].raw["x_label"].removesuffix(unit)


PREFIX = {"n": 1e-9, "µ": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


@pytest.mark.parametrize("case", list(CASES))
def test_engineering_tick_labels_read_back_as_their_ticks(case):
    fig = plot_sweep(CASES[case])
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticklabels() if t.get_text()
             and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    labels = [t.get_text() for t in ticks]
    if not all(label.endswith(("s", "Hz", "A")) for label in labels):
        return  # plain numbers, an offset, or categories
    step = min(np.diff(sorted(t.get_position()[0] for t in ticks)))
    prefixes = set()
    for tick, label in zip(ticks, labels, strict=True):
        number, unit = label.split()
        prefix = unit[:-1] if unit.endswith(("s", "A")) else unit[:-2]
        prefixes.add(prefix)
        assert abs(float(number) * PREFIX[prefix] - tick.get_position()[0]) < 1e-6 * step, labels
    assert len(prefixes) == 1, labels
    assert len({len(label.split()[0].partition(".")[2]) for label in labels}) == 1, labels


def test_a_y_axis_in_hertz_reads_in_engineering_units():
    fig = plot_sweep(CASES["sweet spot, GHz against uA"])
    FigureCanvasAgg(fig).draw()
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert ticks and all(t.endswith(" GHz") for t in ticks), ticks
    assert not fig.axes[0].yaxis.get_offset_text().get_text(), ticks
    assert fig.axes[0].get_ylabel() == "0-1 frequency from spectroscopy"


@pytest.mark.parametrize("case", ["a count that ends in (s)", "readout frequency, 20 kHz span",
                                  "readout frequency, 125 kHz span"])
def test_other_axes_keep_plain_numbers(case):
    fig = plot_sweep(CASES[case])
    FigureCanvasAgg(fig).draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and not any(t.endswith("s") or "Hz" in t for t in ticks), ticks
    assert fig.axes[0].get_xlabel() == CASES[case].raw["x_label"]


def test_a_record_is_written_as_a_png(tmp_path):
    path = save_plot(_record("pi pulses repeated", np.arange(21.0)), tmp_path)
    assert path == tmp_path / "t1-q2-20261204T000000Z.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("case", list(CASES))
def test_a_sweeps_legend_lies_between_its_axes_and_its_values(case):
    """The legend sits under the axes (inside them, "best" still covered data that fill the
    axes, a Ramsey fringe's), and the values' text under the legend."""
    fig = plot_sweep(CASES[case])
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    assert not fig.axes[0].get_legend()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert [t.get_text() for t in legend.get_texts()] == ["P(1)", "fit: fit", "old value",
                                                          "chosen"]
    assert box.y1 < fig.axes[0].get_tightbbox(renderer).y0
    assert max(t.get_window_extent(renderer).y1 for t in fig.texts) < box.y0


def test_a_value_line_gives_the_change_that_six_digits_would_hide() -> None:
    """A review's case: a Ramsey step of 5 kHz read "frequency_hz = 5.04702e+09 ... (was
    5.04702e+09)"; the line now gives the value to its error's second digit, the old value as
    finely, and the change."""
    from labqpu.calibration.plots import _value_lines

    record = dataclasses.replace(
        _record("delay (s)", np.linspace(0, 1e-5, 20)),
        values={"frequency_hz": [5.047025e9, 2.0e3], "t1_s": [5.08e-5, 1e-6]},
        old_values={"frequency_hz": 5.04702e9, "t1_s": 5.08e-5})
    lines = _value_lines(record)
    assert lines[0] == "frequency_hz = 5.0470250 GHz ± 2.0 kHz (was 5.0470200 GHz, +5.0 kHz)"
    assert lines[1] == "t1_s = 50.8 µs ± 1.0 µs (was 50.8 µs)", lines


@pytest.mark.parametrize(("name", "value", "err", "old", "line"), [
    # a review's case: the resonator's line read "resonator_hz = 7.20435e+09 ± 2.4e+04 (was
    # 7.2e+09, +4.3e+06)", the flux bias's "flux_bias_a = 4.97342e-05 ± 2.5e-08 ..."
    ("resonator_hz", 7.2043521e9, 2.4e4, 7.2e9,
     "resonator_hz = 7.204352 GHz ± 24 kHz (was 7.200000 GHz, +4.4 MHz)"),
    ("flux_bias_a", 4.97342e-5, 2.5e-8, 5.10119e-5,
     "flux_bias_a = 49.734 µA ± 25 nA (was 51.012 µA, -1.3 µA)"),
    ("readout_duration_s", 1.0e-6, 1e-7, 1.2e-6,
     "readout_duration_s = 1.00 µs ± 100 ns (was 1.20 µs, -200 ns)"),
    ("zz_hz", -1.2e4, 3e2, None, "zz_hz = -12.00 kHz ± 300 Hz"),
    ("t1_s", 5.08e-5, float("nan"), 55.0, "t1_s = 50.8 µs (was 55 s, -55 s)"),
    ("cz_duration_s", 3.5e-8, float("nan"), 3.5e-8, "cz_duration_s = 35 ns (was 35 ns)"),
    ("pi_amplitude", 0.41234, 1e-3, 0.4, "pi_amplitude = 0.41234 ± 0.001 (was 0.4, +0.012)"),
    ("drive_handedness", "lower", None, None, "drive_handedness = lower"),
    # a review's case: a NaN value with a finite error raised inside the run's record saving
    ("resonator_hz", float("nan"), 2e4, 7.2e9, "resonator_hz = nan Hz ± 20 kHz (was 7.2 GHz)"),
    ("resonator_hz", float("inf"), 2e4, None, "resonator_hz = inf Hz ± 20 kHz"),
    ("pi_amplitude", float("nan"), 1e-3, 0.4, "pi_amplitude = nan ± 0.001 (was 0.4)"),
    # a review's case: values beyond the SI prefixes read "1000000000000000000 Ts"
    ("t1_s", 1e30, float("nan"), 4e-5, "t1_s = 1e+30 s (was 40 µs, +1.0e+30 s)"),
    ("resonator_hz", 2.5e-15, 1e-16, None, "resonator_hz = 2.50e-15 Hz ± 1.0e-16 Hz"),
    ("resonator_hz", 4.5e14, 2e12, None, "resonator_hz = 450.0 THz ± 2.0 THz"),
])
def test_a_value_with_a_unit_reads_in_engineering_units(name, value, err, old, line) -> None:
    from labqpu.calibration.plots import _value_line

    assert _value_line(name, value, err, old) == line


def test_the_rms_residual_is_in_the_y_axis_unit() -> None:
    from labqpu.calibration.plots import _value_lines

    record = _record("flux bias current (A)", np.linspace(-2.5e-4, 2.5e-4, 5),
                     y_label="0-1 frequency from spectroscopy (Hz)")
    record = dataclasses.replace(record, fit={"r_squared": 1.0, "rms_residual": 5.59e3})
    assert _value_lines(record)[-2:] == ["r_squared 1", "rms_residual 5.59 kHz"]


def test_an_old_value_far_beyond_the_data_does_not_squash_the_axis() -> None:
    """A review's case: after a T1 typed as 55 s, the T1 plot drew the old value's line at
    55 s, and all the data (0-200 us) sat in one pixel column at 0. A mark far beyond the
    data is left off (the text under the axes still names the old value); one near it stays."""
    x = np.linspace(0, 200e-6, 21)
    far = _record("delay (s)", x)
    far.raw["marks"]["old"] = 55.0
    fig = plot_sweep(far)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 1e-3, ax.get_xlim()
    assert "old value" not in [t.get_text() for t in fig.legends[0].get_texts()]
    near = _record("delay (s)", x)
    near.raw["marks"]["old"] = 250e-6
    ax = plot_sweep(near).axes[0]
    assert ax.get_xlim()[1] >= 250e-6, ax.get_xlim()


def test_a_rejected_record_says_why_above_its_values() -> None:
    fig = plot_sweep(CASES["rejected, with a long reason"])
    (text,) = fig.texts
    lines = text.get_text().splitlines()
    assert lines[0].startswith("REJECTED, nothing updated: at the corrected frequency")
    assert " ".join(lines).count("leave it be") == 1
    assert lines[-3].startswith("t1_s = ")  # then the values, r² and the rms residual


def test_a_probability_is_shown_on_its_whole_range() -> None:
    """A review's case: the discriminator's P(read 1) of 0.18 and 0.91 sat on an axis from
    0.1, so 0.18 looked far from 0; a record that states ``y_range`` shows all of it."""
    record = _record("state prepared", [0.0, 0.5, 1.0], y=[0.18, 0.5, 0.91],
                     y_label="P(read 1)")
    record.raw["y_range"] = [0.0, 1.0]
    low, high = plot_sweep(record).axes[0].get_ylim()
    assert low < 0.0 < 1.0 < high and high - low < 1.1
    del record.raw["y_range"]
    assert plot_sweep(record).axes[0].get_ylim()[0] > 0.05  # the data's own margins
