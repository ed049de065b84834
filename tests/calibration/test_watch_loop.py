"""The watch loop survives a failed round, logs every round, benchmarks gates every N-th round
when asked, and refuses bad settings before anything runs."""

from __future__ import annotations

import json

import pytest

from labqpu import LabProvider
from labqpu.calibration import watch as watch_module
from labqpu.calibration.rb import RBSettings
from labqpu.calibration.watch import watch
from labqpu.errors import CalibrationError, FitError
from labqpu.rack.config import default_config_path
from labqpu.store import SnapshotBuilder
from labqpu.testing import seed_fresh_store

#: Short RB: enough for a decay that fits, in a few seconds.
QUICK_RB = RBSettings(lengths_1q=(1, 40, 120, 300), lengths_2q=(1, 5, 15, 30), seeds=2,
                      shots=200)


def private_lab(directory) -> str:
    """A copy of the shipped wiring with its own calibration store in ``directory``, holding
    the shipped snapshot as if measured an hour ago (``seed_fresh_store``): its own times
    age, and from 2026-12-07 the sweet spot measured on 2026-11-30 was older than its 168 h
    limit, so the round re-measured it, moving the bias under the cz the RB then measured."""
    store = seed_fresh_store(directory)
    text = default_config_path().read_text().replace('store = ""', f'store = "{store}"', 1)
    path = directory / "lab.toml"
    path.write_text(text)
    return str(path)


def test_a_failed_round_is_logged_and_the_next_one_runs(quiet_lab_backend, tmp_path,
                                                        first_watch_round_fails) -> None:
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


def test_a_round_that_cannot_read_the_store_is_logged_and_the_next_one_runs(
        quiet_lab_backend, tmp_path, monkeypatch) -> None:
    """A review's case: another process held the store (a sqlite3 shell, a backup) when a
    round began, and the overnight watch exited ("database is locked") instead of logging the
    round and trying again at the next."""
    real = quiet_lab_backend.store.latest_id
    calls = []

    def locked_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CalibrationError("reading calibration store x failed: database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(quiet_lab_backend.store, "latest_id", locked_once)
    said: list[str] = []
    report = watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=2, qubits=[0],
                   clock="device", say=said.append, log_path=tmp_path / "watch.jsonl")
    assert [r.report is None for r in report.rounds] == [True, False]
    assert "failed: CalibrationError: reading calibration store x failed: database is locked" \
        in said[0]


def test_a_round_interrupted_after_its_commit_is_logged(quiet_lab_backend, tmp_path,
                                                        monkeypatch) -> None:
    """Ctrl-C can land between a round's commit and its log line (it did in a trial); the
    interrupt still stops the watch, and the committed snapshot still has its round logged."""
    real = watch_module.run_graph

    def interrupted_after_commit(backend, *args, **kwargs):
        real(backend, *args, **kwargs)
        builder = SnapshotBuilder.from_snapshot(backend.store.latest())
        builder.set_qubit(0, "t1_s", 31e-6, "t1")  # what a recalibrating round commits
        backend.store.commit(builder.build_document())
        raise KeyboardInterrupt  # the user's Ctrl-C, just after the commit

    store = quiet_lab_backend.store
    parent = store.latest_id()
    monkeypatch.setattr(watch_module, "run_graph", interrupted_after_commit)
    said: list[str] = []
    log = tmp_path / "watch.jsonl"
    with pytest.raises(KeyboardInterrupt):
        watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=3, qubits=[0],
              clock="device", say=said.append, log_path=log)
    newest = store.latest_id()
    assert newest != parent
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["round"] for line in lines] == [1]
    assert lines[0]["error"] == (f"interrupted; the store's newest snapshot is {newest} (it was "
                                 f"{parent} when the round began)")
    assert said == [f"round 1 at +0.00 h: failed: {lines[0]['error']}"]


@pytest.mark.parametrize("in_numba", [False, True])
def test_a_round_interrupted_while_benchmarking_keeps_its_steps(
        quiet_lab_backend, tmp_path, monkeypatch, numba_interrupt, in_numba) -> None:
    """Also when the Ctrl-C landed while numba loaded a kernel, which wraps it."""
    def interrupted(*args, **kwargs):  # Ctrl-C during the round's randomized benchmarking
        raise numba_interrupt if in_numba else KeyboardInterrupt

    monkeypatch.setattr(watch_module, "_benchmark", interrupted)
    log = tmp_path / "watch.jsonl"
    with pytest.raises(KeyboardInterrupt):
        watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=3, qubits=[0],
              clock="device", say=lambda line: None, log_path=log, rb_every=1)
    (line,) = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["round"] == 1 and line["steps"], line
    assert line["error"].startswith("interrupted; the store's newest snapshot is ")


def test_every_nth_round_benchmarks_the_watched_gates(lab_home, tmp_path) -> None:
    """``rb_every=2``: round 2 ends with RB of qubits 0 and 1 and edge 0-1, whose gate errors
    are committed (the Target carries them) and logged; the other qubits keep theirs."""
    said: list[str] = []
    log = tmp_path / "watch.jsonl"
    with LabProvider(private_lab(tmp_path), simulator=True) as provider:
        backend = provider.backend()
        before = backend.snapshot
        report = watch(backend, ["drive_lo"], interval_s=60.0, rounds=2, qubits=[0, 1],
                       clock="device", say=said.append, log_path=log, rb_every=2,
                       rb_settings=QUICK_RB)
        first, second = report.rounds
        assert first.gate_errors is None and first.error is None
        assert set(second.gate_errors) == {"sx:0", "sy:0", "x:0", "sx:1", "sy:1", "x:1",
                                           "cz:0-1"}
        after = backend.snapshot
        assert after.snapshot_id == second.rb_snapshot
        assert backend.target["sx"][(0,)].error == pytest.approx(second.gate_errors["sx:0"])
        assert backend.target["cz"][(0, 1)].error == pytest.approx(
            second.gate_errors["cz:0-1"])
        for gate in ("sx:3", "cz:2-3"):
            assert after.gates[gate]["error"].value == before.gates[gate]["error"].value
    assert "; RB: 7 gate errors" in said[1] and "RB" not in said[0]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert "gate_errors" not in lines[0]
    assert lines[1]["gate_errors"] == pytest.approx(second.gate_errors)


def test_a_failed_benchmark_is_logged_with_its_round(quiet_lab_backend, tmp_path,
                                                    monkeypatch) -> None:
    def failing(*args, **kwargs):
        raise FitError("RB of (0,): the decay does not fit")

    monkeypatch.setattr(watch_module, "benchmark_and_record", failing)
    said: list[str] = []
    report = watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=2, qubits=[0],
                   clock="device", say=said.append, log_path=tmp_path / "watch.jsonl",
                   rb_every=1)
    assert [r.error for r in report.rounds] == [
        "RB failed: FitError: RB of (0,): the decay does not fit"] * 2
    assert all(r.report is not None and r.gate_errors is None for r in report.rounds)
    assert said[1].endswith("RB failed: FitError: RB of (0,): the decay does not fit")


def test_a_benchmark_that_fails_for_one_edge_costs_only_that_edge(quiet_lab_backend, tmp_path,
                                                                   edge_decays_do_not_fit
                                                                   ) -> None:
    """Watch-mode RB whose 2-qubit decay does not fit: the round keeps the gate errors that
    fitted, names the edge in its error, and the commit records the edge as failed (rb)."""
    from labqpu.store import CALIBRATION_FAILED, SnapshotBuilder

    report = watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=1, qubits=[0, 1],
                   clock="device", log_path=tmp_path / "watch.jsonl", rb_every=1,
                   rb_settings=RBSettings(lengths_1q=(1, 40, 120, 300),
                                          lengths_2q=(1, 8, 24, 48), seeds=2, shots=200))
    (round_,) = report.rounds
    newest = quiet_lab_backend.store.get(quiet_lab_backend.store.latest_id())
    if CALIBRATION_FAILED in newest.pairs.get((0, 1), {}):  # the session's backend goes on
        builder = SnapshotBuilder.from_snapshot(newest)
        builder.remove_pair((0, 1), CALIBRATION_FAILED)
        quiet_lab_backend.store.commit(builder.build_document())
    assert round_.error == ("RB failed: edge 0-1: decay does not fit (made to fail by the "
                            f"test) (recorded in snapshot {round_.rb_snapshot})")
    assert set(round_.gate_errors) == {"sx:0", "sy:0", "x:0", "sx:1", "sy:1", "x:1"}
    committed = quiet_lab_backend.store.get(round_.rb_snapshot)
    assert list(committed.pairs[(0, 1)][CALIBRATION_FAILED].value) == ["rb"]
    assert "RB: 6 gate errors" in round_.summary() and "edge 0-1: decay" in round_.summary()
    line = json.loads((tmp_path / "watch.jsonl").read_text().splitlines()[0])
    assert line["rb_snapshot"] == round_.rb_snapshot and line["error"] == round_.error


@pytest.mark.parametrize(("options", "message"), [
    ({"interval_s": -1.0}, "interval must be a number of seconds from 0 to 2592000"),
    ({"interval_s": float("nan")}, "interval must be a number of seconds from 0 to 2592000"),
    ({"interval_s": 1e10}, "interval must be a number of seconds from 0 to 2592000"),
    ({"interval_s": 1.0, "rounds": 0}, "rounds must be at least 1"),
    ({"interval_s": 1.0, "clock": "sundial"}, "clock must be one of wall, device"),
    ({"interval_s": 1.0, "rb_every": 0}, "rb_every must be a whole number of rounds >= 1"),
    ({"interval_s": 1.0, "rb_every": 1.5}, "rb_every must be a whole number of rounds >= 1"),
])
def test_bad_settings_are_refused_before_anything_runs(quiet_lab_backend, tmp_path, options,
                                                       message) -> None:
    log = tmp_path / "watch.jsonl"
    with pytest.raises(ValueError, match=message):
        watch(quiet_lab_backend, log_path=log, **options)
    assert not log.exists()


def test_a_log_that_cannot_be_written_is_refused_first_and_a_line_lost_later_is_said(
        quiet_lab_backend, tmp_path, monkeypatch) -> None:
    """A review's cases: a directory where ``watch.jsonl`` goes gave a traceback after the
    first round had run; a log that became unwritable later ended the watch, and the round it
    could not log had committed a snapshot named nowhere. The log is now tried before
    anything runs; a line that cannot be written later is said, and the watch goes on."""
    log = tmp_path / "watch.jsonl"
    log.mkdir()
    runs = []
    monkeypatch.setattr(watch_module, "run_graph", lambda *a, **k: runs.append(1))
    with pytest.raises(CalibrationError, match=f"the watch log {log} cannot be written: Is a "
                                               "directory; nothing was run"):
        watch(quiet_lab_backend, ["drive_lo"], interval_s=0.0, rounds=1, qubits=[0],
              log_path=log)
    assert runs == []
    monkeypatch.undo()
    log.rmdir()
    real_open, said, opened = type(log).open, [], []

    def full_after_the_check(path, mode="r", *args, **kwargs):
        if path == log and mode == "a":
            opened.append(1)
            if len(opened) > 1:  # the first open is the check
                raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(type(log), "open", full_after_the_check)
    report = watch(quiet_lab_backend, ["drive_lo"], interval_s=60.0, rounds=2, qubits=[0],
                   clock="device", say=said.append, log_path=log)
    assert len(report.rounds) == 2
    assert said[0].startswith("round 1 at +0.00 h: ")
    assert said[1] == (f"round 1: its line could not be written to the log {log}: No space "
                       "left on device")
    assert said[2].startswith("round 2 at ")
    assert [r.unlogged is not None for r in report.rounds] == [True, True]
