"""Every graph experiment leaves a record (values with uncertainties, fit quality, when, raw
data) and a PNG; the snapshot names the record each value came from; the analysis can be
redone from the record alone."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.bootstrap import SPECTROSCOPY_AMPLITUDE_SCALE
from labqpu.calibration.design import default_design_path, load_design
from labqpu.calibration.records import load_record
from labqpu.calibration.refits import refit
from labqpu.testing import use_fresh_home

pytestmark = pytest.mark.slow

FITTED = {"resonator_spectroscopy": "resonator_hz", "sweet_spot": "flux_bias_a",
          "qubit_spectroscopy": "frequency_hz", "rabi": "pi_amplitude", "ramsey_t2": "t2_s",
          "ramsey": "frequency_hz",
          "drag": "drag_beta", "fine_amplitude_pi": "pi_amplitude",
          "fine_amplitude_pi2": "pi2_amplitude", "anharmonicity": "anharmonicity_hz",
          "t1": "t1_s", "hahn_echo": "t2_echo_s",
          "readout_amplitude": "readout_amplitude", "readout_duration": "readout_duration_s",
          # resonator_spectroscopy measures the centres again at the readout it leaves
          "discriminator": "readout_assignment_fidelity"}


def test_every_experiment_of_a_run_leaves_a_record_and_a_plot(tmp_path, monkeypatch):
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        amplitude = backend.snapshot.qubits[2]["readout_amplitude"].value
        report = run_graph(backend, qubits=[2], force=True, shots=400)
        assert report.ok, report.table()
        records = {p: load_record(p) for p in report.records}
        kinds = {r.kind for r in records.values()}
        assert kinds == set(FITTED) | {"drive_handedness", "readout", "active_reset",
                                       "rb_1q"}  # the graph's rb step, forced with the rest
        store = backend.config.store_path
        assert {p.parent for p in records} == {store.parent / "experiments"}
        for path, record in records.items():
            png = path.with_suffix(".png")
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
            assert record.subject == "qubit 2" and record.measured_at.startswith("20")
            assert record.raw["survival" if record.kind == "rb_1q" else "series"], record.kind
        snapshot = report.snapshot
        by_id = {r.experiment: r for r in records.values()}
        for name, param in snapshot.qubits[2].items():
            if param.experiment in by_id and name in by_id[param.experiment].values:
                assert by_id[param.experiment].values[name][0] == pytest.approx(param.value)
        linked = {snapshot.qubits[2][param].experiment for param in
                  ("pi_amplitude", "t1_s", "frequency_hz", "readout_assignment_fidelity")}
        assert linked <= set(by_id), linked
        # the rb step's gate errors name their benchmark's record too (they named its run)
        assert backend.snapshot.gates["sx:2"]["error"].experiment in by_id
        spectroscopy = next(r for r in records.values() if r.kind == "resonator_spectroscopy")
        assert spectroscopy.settings["amplitude"] == pytest.approx(
            SPECTROSCOPY_AMPLITUDE_SCALE * amplitude)
        for record in records.values():
            if record.kind not in FITTED:
                continue
            name = FITTED[record.kind]
            value, stderr = record.values[name]
            assert stderr is not None and math.isfinite(stderr) and stderr > 0, record.kind
            assert record.fit.get("r_squared", 1.0) > 0.8, record.kind
            again = refit(record)
            assert again[name] == pytest.approx(value, rel=1e-6), record.kind
        ramsey = next(r for r in records.values() if r.kind == "ramsey")
        assert abs(refit(ramsey)["frequency_hz"] - ramsey.values["frequency_hz"][0]) < 1.0
        older = dataclasses.replace(ramsey, settings={k: v for k, v in ramsey.settings.items()
                                                      if k != "drive_handedness"})
        with pytest.raises(ValueError, match="keeps no drive handedness"):
            refit(older)


@pytest.mark.parametrize("rival", [(0, "t1_s"), (2, "t1_s"), (4, "flux_bias_a")])
def test_a_commit_after_another_writers_goes_on_top_of_it_or_is_left_out(tmp_path, monkeypatch,
                                                                       rival):
    """Another writer commits while a graph run measures qubit 2's T1 (a second store session
    on the same file, as another process would). Its T1 of qubit 0: the run's values go on
    top of its snapshot, both kept (the run's commit was refused, its work lost). Its T1 of
    qubit 2 too: the run's T1 is left out, the step reported failed naming the parameter, and
    nothing is committed. Its flux bias of qubit 4 (every qubit moves): the commit is refused.
    Either way the records of what the run measured are written (they were lost once: saved
    after the commit)."""
    from labqpu.calibration.runner import LineReporter
    from labqpu.errors import StaleSnapshotError
    from labqpu.store import CalibrationStore, SnapshotBuilder

    rival_qubit, name = rival
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        store_path = backend.config.store_path
        experiments = store_path.parent / "experiments"
        committed = []

        def another_writer(_line: str) -> None:
            if not committed:
                with CalibrationStore(store_path) as other:
                    builder = SnapshotBuilder.from_snapshot(other.latest())
                    value = other.latest().qubit_value(rival_qubit, name)
                    builder.set_qubit(rival_qubit, name, value * 1.1 if name == "t1_s"
                                      else value + 1e-6, "another writer")
                    builder.notes = "another writer"
                    committed.append(other.commit(builder.build_document()))

        def run():
            return run_graph(backend, ["t1"], qubits=[2], force=True, rb=False,
                             reporter=LineReporter(another_writer))

        if name == "flux_bias_a":
            with pytest.raises(StaleSnapshotError, match="changed qubit 4 flux_bias_a, beside "
                                                         "what this calibration measured"):
                run()
        elif rival_qubit == 2:
            report = run()
            step = next(o for o in report.outcomes if o.node == "t1")
            assert step.status == "failed" and step.reason.endswith(
                f"measured, not committed: snapshot {committed[0].snapshot_id} changed qubit 2 "
                "t1_s while this measured; run it again")
            assert report.committed == [] and report.snapshot is None
            assert backend.store.latest_id() == committed[0].snapshot_id
            assert ("nothing committed: everything measured was left out (snapshot "
                    f"{committed[0].snapshot_id} changed qubit 2 t1_s)") in report.table()
        else:
            report = run()
            newest = backend.store.latest()
            assert newest.snapshot_id == report.snapshot.snapshot_id
            assert newest.parent_id == committed[0].snapshot_id
            assert newest.qubits[0]["t1_s"] == committed[0].qubits[0]["t1_s"]
            assert newest.qubits[2]["t1_s"].experiment.startswith("t1-q2-")
            assert (f"committed snapshot {newest.snapshot_id} (parent "
                    f"{committed[0].snapshot_id}: another calibration committed it while this "
                    f"one measured on snapshot {committed[0].parent_id})") in report.table()
        assert committed
        kinds = {load_record(p).kind for p in experiments.glob("*.json")}
        assert "t1" in kinds, kinds


def test_an_interrupted_run_keeps_the_records_of_what_finished(tmp_path, monkeypatch):
    """Ctrl-C during a run: nothing is committed, but the experiments that finished leave
    their records and plots (they were lost: the records were written only at the end)."""
    from labqpu.calibration.runner import LineReporter

    class Interrupting(LineReporter):
        def done(self, outcome) -> None:
            super().done(outcome)
            if outcome.node == "rabi":
                raise KeyboardInterrupt

    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        before = backend.store.latest_id()
        with pytest.raises(KeyboardInterrupt):
            run_graph(backend, ["resonator_spectroscopy", "rabi"], qubits=[1], force=True,
                      shots=100, reporter=Interrupting())
        assert backend.store.latest_id() == before
        directory = backend.config.store_path.parent / "experiments"
        kinds = sorted(load_record(p).kind for p in directory.glob("*.json"))
        assert kinds == ["discriminator", "rabi", "resonator_spectroscopy"]
        assert len(list(directory.glob("*.png"))) == 3


def test_stores_in_one_folder_keep_their_own_records() -> None:
    """A review's case: two wiring files with stores ``state/a.sqlite`` and ``state/b.sqlite``
    wrote their records into one ``state/experiments``; the default store keeps its folder."""
    from labqpu.calibration.records import experiments_directory

    assert experiments_directory("/h/lab5/calibration.sqlite") == Path("/h/lab5/experiments")
    assert experiments_directory("state/a.sqlite") == Path("state/a_experiments")
    assert experiments_directory("state/b.sqlite") != experiments_directory("state/a.sqlite")


def _interrupt_after_one_record(monkeypatch, experiment: str, kind: str) -> None:
    """Make the runner's walk add one (empty) record ``experiment`` and raise a Ctrl-C."""
    from labqpu.calibration import runner
    from labqpu.calibration.records import ExperimentRecord

    record = ExperimentRecord(experiment=experiment, kind=kind, subject="qubit 0",
                              measured_at="2026-12-07T00:00:00+00:00", values={},
                              old_values={}, fit={}, raw={})

    def interrupted(kit, *args, **kwargs):
        kit.records.append(record)
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "walk", interrupted)


def test_a_record_that_fails_to_write_after_an_interrupt_does_not_replace_it(
        tmp_path, monkeypatch, caplog):
    """A review's case: a Ctrl-C during the graph's walk (or a bootstrap's) saves the records
    measured so far; one failing to write (a full disk: patched here) raised its own error in
    place of the interrupt. The interrupt goes on, the failure is a warning."""
    from labqpu.calibration import runner
    from labqpu.calibration.records import ExperimentRecord

    def full_disk(self, directory):
        raise OSError(28, "No space left on device")

    use_fresh_home(monkeypatch, tmp_path)
    _interrupt_after_one_record(monkeypatch, "t1-q0-test", "t1")
    monkeypatch.setattr(ExperimentRecord, "save", full_disk)
    design = load_design(default_design_path("lab5"))
    with LabProvider() as provider:
        backend = provider.backend()
        with pytest.raises(KeyboardInterrupt):
            run_graph(backend, ["t1"], qubits=[0], force=True)
        assert caplog.text.count("experiment record t1-q0-test could not be written to") == 1
        with pytest.raises(KeyboardInterrupt):  # the bootstrap's walk, a review's case
            runner.bootstrap(backend, design, record_directory=tmp_path / "records")
        assert caplog.text.count("experiment record t1-q0-test could not be written to") == 2


def test_a_bootstrap_from_python_writes_its_records_beside_the_store(tmp_path, monkeypatch):
    """A review's case: ``bootstrap(backend, design)`` without ``record_directory`` wrote no
    records, though the document it returns names them. It writes them where ``run_graph``
    does (the store's experiments directory), also when its walk is interrupted."""
    from labqpu.calibration import runner
    from labqpu.calibration.records import experiments_directory

    use_fresh_home(monkeypatch, tmp_path)
    _interrupt_after_one_record(monkeypatch, "rabi-q0-test", "rabi")
    with LabProvider() as provider:
        backend = provider.backend()
        with pytest.raises(KeyboardInterrupt):
            runner.bootstrap(backend, load_design(default_design_path("lab5")))
        directory = experiments_directory(backend.config.store_path)
    assert load_record(directory / "rabi-q0-test.json").kind == "rabi"
    assert (directory / "rabi-q0-test.png").exists()
