"""The watch loop survives a failed round, logs every round, and refuses bad settings before
anything runs."""

from __future__ import annotations

import json

import pytest
from qiskit.providers import JobError

from labqpu.calibration import watch as watch_module
from labqpu.calibration.watch import watch


def test_a_failed_round_is_logged_and_the_next_one_runs(quiet_lab_backend, tmp_path,
                                                        monkeypatch) -> None:
    real = watch_module.run_graph
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise JobError("the controller went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(watch_module, "run_graph", flaky)
    said: list[str] = []
    log = tmp_path / "watch.jsonl"
    report = watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=2, qubits=[0],
                   clock="device", say=said.append, log_path=log)
    assert [r.report is None for r in report.rounds] == [True, False]
    assert "round 1 at +0.00 h: failed: JobError: the controller went away" in said[0]
    assert said[1].startswith("round 2 at +0.02 h: ")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["round"], r["error"] is None) for r in lines] == [(1, False), (2, True)]
    assert lines[1]["steps"] and lines[1]["steps"][0]["node"] == "resonator_spectroscopy"


@pytest.mark.parametrize(("options", "message"), [
    ({"interval_s": -1.0}, "interval must be a finite number of seconds >= 0"),
    ({"interval_s": float("nan")}, "interval must be a finite number of seconds >= 0"),
    ({"interval_s": 1.0, "rounds": 0}, "rounds must be at least 1"),
    ({"interval_s": 1.0, "clock": "sundial"}, "clock must be one of wall, device"),
])
def test_bad_settings_are_refused_before_anything_runs(quiet_lab_backend, tmp_path, options,
                                                       message) -> None:
    log = tmp_path / "watch.jsonl"
    with pytest.raises(ValueError, match=message):
        watch(quiet_lab_backend, log_path=log, **options)
    assert not log.exists()
