"""The resonator_spectroscopy node's check: |0> read with no pulse, against the calibrated
|0> centre.

A review's case: with qubit 0's readout frequency 20 MHz off, `labqpu calibrate --all` reported
"rabi failed" (a fit with no contrast) and blocked every later node; the readout, the cause, is
only checked after the drive nodes. The check needs no drive, so the graph's first node finds
it, measures the resonator again, and the run goes on to recalibrate the readout.
"""

from __future__ import annotations

import pytest

from labqpu import LabProvider
from labqpu.calibration import run_graph
from labqpu.calibration.graph import TOLERANCES
from labqpu.calibration.records import load_record
from labqpu.store import SnapshotBuilder
from labqpu.testing import use_fresh_home


def _move_readout(backend, q: int, by_hz: float):
    """Commit qubit ``q``'s readout frequency moved by ``by_hz`` (its timestamp kept, so only
    a check can find it); returns the right one."""
    right = backend.snapshot.qubits[q]["readout_frequency_hz"]
    builder = SnapshotBuilder.from_snapshot(backend.snapshot)
    builder.set_qubit(q, "readout_frequency_hz", right.value + by_hz, "test", right.timestamp)
    backend.store.commit(builder.build_document())
    return right


@pytest.mark.parametrize("device", ["lab5", "lab3"])
def test_the_calibrated_readout_passes_the_resonator_check(tmp_path, monkeypatch,
                                                           device) -> None:
    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider(device) as provider:
        backend = provider.backend()
        report = run_graph(backend, ["resonator_spectroscopy"], rb=False, commit=False)
        qubits = backend.num_qubits
    steps = [o for o in report.outcomes if o.node == "resonator_spectroscopy"]
    assert len(steps) == qubits
    for step in steps:
        assert step.status == "fresh", report.table()
        # 0.003-0.02 on lab5 (checks.check_resonator): far inside the tolerance
        assert step.check.measured < TOLERANCES["resonator"] / 3, report.table()


def test_a_readout_tone_off_the_resonator_is_found_before_any_drive_node(tmp_path,
                                                                        monkeypatch) -> None:
    use_fresh_home(monkeypatch, tmp_path)
    q = 0
    with LabProvider() as provider:
        backend = provider.backend()
        right = _move_readout(backend, q, 20e6)

        report = run_graph(backend, qubits=[q], rb=False)

        assert report.ok, report.table()
        steps = {o.node: o for o in report.outcomes}
        spectroscopy = steps["resonator_spectroscopy"]
        assert spectroscopy.status == "calibrated", report.table()
        assert spectroscopy.reason.startswith("check failed: |0> read at "), spectroscopy.reason
        assert steps["rabi"].status == "fresh", report.table()
        assert steps["readout"].status == "calibrated", report.table()
        now = backend.snapshot.qubits[q]
        assert abs(now["readout_frequency_hz"].value - right.value) < 3e6, report.table()
        assert now["readout_assignment_fidelity"].value > 0.95, report.table()


def _reads(backend, q: int, flip: bool) -> float:
    """P(reading |1> after x) or P(reading |0>) on qubit ``q`` (2000 shots)."""
    from qiskit import QuantumCircuit, transpile

    qc = QuantumCircuit(1, 1)
    if flip:
        qc.x(0)
    qc.measure(0, 0)
    counts = backend.run(transpile(qc, backend, initial_layout=[q]), shots=2000).result() \
        .get_counts()
    return counts.get("1" if flip else "0", 0) / 2000


def test_a_run_that_stops_before_the_readout_node_leaves_a_readout_that_reads(
        tmp_path, monkeypatch) -> None:
    """A review's case: with the readout 1 MHz off, `labqpu calibrate rabi` moved the readout
    frequency to the resonator's peak (the resonator's check failed) and committed it under
    centres measured at the old frequency: |0> then read as 1 (Bell 0.49). The node now
    measures the centres again at the frequency it leaves (here the one found off: it lies
    within the readout map's span of the peak)."""
    use_fresh_home(monkeypatch, tmp_path)
    q = 0
    with LabProvider() as provider:
        backend = provider.backend()
        _move_readout(backend, q, 1e6)

        report = run_graph(backend, ["rabi"], qubits=[q], rb=False)

        assert report.ok, report.table()
        steps = {o.node: o for o in report.outcomes}
        assert steps["resonator_spectroscopy"].status == "calibrated", report.table()
        assert "readout" not in steps
        now = backend.snapshot.qubits[q]
        assert now["discriminator"].experiment.startswith("discriminator-q0-"), report.table()
        # read 1 MHz off the readout node's choice (its search, not run here, finds 0.98):
        # before, |0> read as 0 in 2 % of the shots
        assert now["readout_assignment_fidelity"].value > 0.85, report.table()
        assert _reads(backend, q, flip=False) > 0.8
        assert _reads(backend, q, flip=True) > 0.8


def test_a_forced_resonator_spectroscopy_keeps_the_readout_the_readout_node_chose(
        tmp_path, monkeypatch) -> None:
    """A review's case: `labqpu calibrate resonator_spectroscopy --force` (as docs/calibration.md
    advised, to measure resonator_hz) moved every calibrated readout onto the resonator's peak:
    qubit 2's assignment fidelity 0.985 -> 0.754, Bell 0.97 -> 0.75 on its edges, exit code 0.
    A readout frequency within the readout map's span of the new peak now stays; the
    resonator is measured and the centres again."""
    use_fresh_home(monkeypatch, tmp_path)
    q = 2
    with LabProvider() as provider:
        backend = provider.backend()
        before = backend.snapshot.qubits[q]

        report = run_graph(backend, ["resonator_spectroscopy"], qubits=[q], force=True,
                           rb=False)

        assert report.ok, report.table()
        now = backend.snapshot.qubits[q]
        assert now["readout_frequency_hz"].value == before["readout_frequency_hz"].value
        assert now["resonator_hz"].experiment.startswith("resonator_spectroscopy-q2-")
        assert 0 < abs(now["resonator_hz"].value - now["readout_frequency_hz"].value) <= 3e6
        assert now["discriminator"].experiment.startswith("discriminator-q2-")
        assert now["readout_assignment_fidelity"].value > 0.95, report.table()
        assert _reads(backend, q, flip=False) > 0.95
        record = load_record(next(p for p in report.records
                                  if p.name.startswith("resonator_spectroscopy")))
        assert set(record.values) == {"resonator_hz"}  # the readout did not move
        assert record.old_values == {"resonator_hz": None}  # the design's guess is no old value

        # a readout the readout node could have chosen past its map's edge stays too (a
        # review's case: 4.5 MHz below the peak went back onto it, fidelity 0.863)
        far = now["resonator_hz"].value - 4.5e6
        builder = SnapshotBuilder.from_snapshot(backend.snapshot)
        builder.set_qubit(q, "readout_frequency_hz", far, "test")
        backend.store.commit(builder.build_document())
        report = run_graph(backend, ["resonator_spectroscopy"], qubits=[q], force=True,
                           rb=False)
        assert report.ok, report.table()
        assert backend.snapshot.qubits[q]["readout_frequency_hz"].value == far


def test_a_resonator_further_off_than_the_scan_is_searched_for(tmp_path, monkeypatch) -> None:
    """A review's case: with the stored resonator_hz 10 MHz off as well (the scan spans +-6
    MHz), the resonator node failed ("fitted peak ... lies outside the sweep") and blocked
    every later node of the qubit. A coarse search over +-30 MHz now finds the peak first."""
    use_fresh_home(monkeypatch, tmp_path)
    q = 0
    with LabProvider() as provider:
        backend = provider.backend()
        right = _move_readout(backend, q, 20e6)
        builder = SnapshotBuilder.from_snapshot(backend.snapshot)
        builder.set_qubit(q, "resonator_hz", right.value + 10e6, "test", right.timestamp)
        backend.store.commit(builder.build_document())

        report = run_graph(backend, qubits=[q], rb=False)

        assert report.ok, report.table()
        spectroscopy = next(o for o in report.outcomes if o.node == "resonator_spectroscopy")
        assert spectroscopy.status == "calibrated", report.table()
        record = load_record(next(p for p in report.records
                                  if p.name.startswith("resonator_spectroscopy")))
        assert any(label.startswith("search") for label in record.raw["series"]), record.raw
        now = backend.snapshot.qubits[q]
        assert abs(now["readout_frequency_hz"].value - right.value) < 3e6, report.table()
        assert now["readout_assignment_fidelity"].value > 0.95, report.table()
