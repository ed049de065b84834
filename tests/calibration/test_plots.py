"""The experiment plots' writer thread: every plot written, in order, errors not lost."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from labqpu.calibration import plots
from labqpu.calibration.plots import PlotWriter
from labqpu.calibration.records import ExperimentRecord


def ramsey_record(name: str, points: int = 21) -> ExperimentRecord:
    x = np.linspace(-2e6, 2e6, points)
    y = 0.5 + 0.4 * np.cos(x / 3e5)
    return ExperimentRecord(
        experiment=name, kind="ramsey", subject="qubit 2",
        measured_at="2026-12-04T00:00:00.000000+00:00",
        values={"frequency_hz": [5.1e9, 1.2e3]}, old_values={"frequency_hz": 5.1001e9},
        fit={"r_squared": 0.99},
        raw={"x": x.tolist(), "series": {"P(1)": y.tolist()},
             "curves": {"cosine": {"x": x.tolist(), "y": y.tolist()}},
             "marks": {"old": 1e5, "chosen": 2e5}, "x_label": "detuning (Hz)",
             "y_label": "P(1)"})


def test_plots_are_written_on_the_writers_thread_in_order(tmp_path, monkeypatch):
    written = []
    save_plot = plots.save_plot

    def noting(record, directory):
        written.append((record.experiment, threading.current_thread().name))
        return save_plot(record, directory)

    monkeypatch.setattr(plots, "save_plot", noting)
    names = [f"ramsey-{i}" for i in range(3)]
    with PlotWriter() as writer:
        for name in names:
            writer.submit(ramsey_record(name), tmp_path)
    assert written == [(name, "labqpu-plots") for name in names]
    for name in names:
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_plot_is_raised_by_close_and_stops_the_rest(tmp_path):
    bad = ramsey_record("bad")
    bad.raw["series"]["P(1)"] = [0.5, 0.6]  # 2 values against 21 x: matplotlib refuses
    writer = PlotWriter()
    writer.submit(ramsey_record("first"), tmp_path)
    writer.submit(bad, tmp_path)
    writer.submit(ramsey_record("after"), tmp_path)
    with pytest.raises(ValueError):
        writer.close()
    assert (tmp_path / "first.png").exists()
    assert not (tmp_path / "after.png").exists()


def test_the_runs_own_error_is_not_masked_by_a_failed_plot(tmp_path):
    bad = ramsey_record("bad")
    bad.raw["series"]["P(1)"] = [0.5]
    with pytest.raises(RuntimeError, match="the run failed"), PlotWriter() as writer:
        writer.submit(bad, tmp_path)
        raise RuntimeError("the run failed")
