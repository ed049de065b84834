"""The PNG of an experiment record: everything drawn lies inside the figure (the axes sit at
fixed margins, with no layout engine to move them), and axes in seconds or hertz read in
engineering units."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from labqpu.calibration.plots import plot_sweep, save_plot
from labqpu.calibration.records import ExperimentRecord


def _record(x_label: str, x: np.ndarray, lines: int = 1) -> ExperimentRecord:
    y = np.exp(-x / x[len(x) // 4])
    values = {"t1_s": [5.17e-5, 1.8e-6]}
    values.update({f"extra_value_with_a_long_name_{i}": [0.123456789, 0.0012]
                   for i in range(lines - 1)})
    return ExperimentRecord(
        experiment="t1-q2-20261204T000000Z", kind="t1", subject="qubit 2",
        measured_at="2026-12-04T00:00:00Z", values=values, old_values={"t1_s": 5.08e-5},
        fit={"r_squared": 0.997, "rms_residual": 0.0159},
        raw={"x": x.tolist(), "series": {"P(1)": y.tolist()},
             "curves": {"exponential": {"x": x.tolist(), "y": y.tolist()}},
             "marks": {"old": float(x[5]), "chosen": float(x[6])}, "x_label": x_label,
             "y_label": "X180.Y90 - Y180.X90, projected IQ (a.u.)"})


@pytest.mark.parametrize("lines", [1, 12])
def test_nothing_drawn_falls_outside_the_figure(lines):
    fig = plot_sweep(_record("delay after the pi pulse (s)", np.linspace(0, 2e-4, 21), lines))
    renderer = FigureCanvasAgg(fig).get_renderer()
    drawn = fig.get_tightbbox(renderer)
    page = fig.bbox_inches
    assert drawn.x0 >= page.x0 and drawn.y0 >= page.y0
    assert drawn.x1 <= page.x1 and drawn.y1 <= page.y1
    (ax,) = fig.axes
    text_top = max(t.get_window_extent(renderer).y1 for t in fig.texts)
    axis_bottom = ax.get_tightbbox(renderer).y0  # the x label and tick labels included
    assert text_top < axis_bottom  # the values' text does not run into the axis


@pytest.mark.parametrize(("label", "x", "expected"), [
    ("delay after the pi pulse (s)", np.linspace(0, 2e-4, 21), "µs"),
    ("readout frequency (Hz)", np.linspace(7.1155e9, 7.1215e9, 13), "GHz"),
])
def test_seconds_and_hertz_read_in_engineering_units(label, x, expected):
    fig = plot_sweep(_record(label, x))
    FigureCanvasAgg(fig).draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(t.endswith(expected) for t in ticks if not t.startswith("0 ")), ticks


def test_a_record_is_written_as_a_png(tmp_path):
    path = save_plot(_record("pi pulses repeated", np.arange(21.0)), tmp_path)
    assert path == tmp_path / "t1-q2-20261204T000000Z.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
