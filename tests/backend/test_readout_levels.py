"""Readout through the whole stack: raw traces (meas_level 0) and the repetition delay.

Every test runs on the real simulator process over real sockets (the ``lab_backend``
fixture); the physics behind it is validated in ``tests/firmware_sim/test_readout.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.providers import JobError

from labqpu.backend.program_checks import REP_DELAY_T1_FACTOR, default_rep_delay_s
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InvalidRunInputError

SHOTS = 2000


def prepared(x: bool) -> QuantumCircuit:
    qc = QuantumCircuit(1, 1, name=f"prep{int(x)}")
    if x:
        qc.x(0)
    qc.measure(0, 0)
    return qc


@pytest.mark.parametrize("meas_return", ["single", "avg"])
def test_level_1_memory_arrays_are_what_get_memory_returns(lab_backend, meas_return) -> None:
    """``job.memory_arrays()`` (the calibration's way to IQ, without the Result's nested
    lists) equals ``result().get_memory(i)`` exactly, for every experiment of a job: plain
    circuits, two with the same structure and other angles (merged into one run of two
    points), and one whose clbit 1 is written twice and clbit 0 never."""
    turned = []
    for angle in (0.3, 1.2):
        qc = QuantumCircuit(1, 1, name=f"rx{angle}")
        qc.rx(angle, 0)
        qc.measure(0, 0)
        turned.append(qc)
    twice = QuantumCircuit(1, 2, name="twice")
    twice.x(0)
    twice.measure(0, 1)
    twice.x(0)
    twice.measure(0, 1)
    native = transpile([prepared(False), *turned, twice, prepared(True)], lab_backend,
                       initial_layout=[0])
    job = lab_backend.run(native, shots=300, meas_level=1, meas_return=meas_return,
                          seed_simulator=5)
    arrays = job.memory_arrays(timeout=120)
    result = job.result()
    assert len(arrays) == len(native)
    for i, memory in enumerate(arrays):
        assert np.array_equal(memory, result.get_memory(i)), i
    shape = (2,) if meas_return == "avg" else (300, 2)
    assert arrays[3].shape == shape and not np.any(arrays[3][..., 0])
    assert abs(arrays[0].mean() - arrays[4].mean()) > 0.1  # |0> and |1> apart


def test_memory_arrays_need_level_1(lab_backend) -> None:
    job = lab_backend.run(transpile(prepared(True), lab_backend, initial_layout=[0]), shots=50,
                          seed_simulator=5)
    with pytest.raises(JobError, match="meas_level=2; memory_arrays"):
        job.memory_arrays(timeout=120)
    assert job.result().get_counts()  # the job itself is fine


def test_averaged_traces_show_ring_up_and_tell_the_states_apart(lab_backend) -> None:
    """meas_level 0, meas_return avg: one averaged trace per memory slot, at the controller's
    decimation (stated in the header). The first point (8 ns) holds less than a quarter of
    the field 400 ns in (the resonator rings up over ~150 ns); |0> and |1> traces differ by
    more than 0.15 after 400 ns but by less than 0.05 in the first point; the trace's mean is
    the level-1 IQ point (0.01; noise per averaged point ~0.016)."""
    native = transpile([prepared(False), prepared(True)], lab_backend, initial_layout=[0])
    result = lab_backend.run(native, shots=SHOTS, meas_level=0, meas_return="avg",
                             seed_simulator=21).result()
    decimation = lab_backend.controller_capabilities("ctrl0")["traces"]["default_decimation"]
    m0, m1 = (np.asarray(result.get_memory(i)) for i in range(2))
    duration = lab_backend.target["measure"][(0,)].duration
    points = -(-round(duration / lab_backend.dt) // decimation)
    assert m0.shape == m1.shape == (1, points)
    header = result.results[0].header
    assert header["trace"] == {"decimation": decimation,
                               "point_duration_s": pytest.approx(decimation * lab_backend.dt)}
    late = slice(400 // decimation, None)
    assert abs(m0[0, 0]) < 0.25 * np.abs(m0[0, late]).mean()
    assert abs(m1[0, 0]) < 0.25 * np.abs(m1[0, late]).mean()
    gap = np.abs(m1[0] - m0[0])
    assert gap[late].mean() > 0.15
    assert gap[0] < 0.05
    iq = lab_backend.run(native, shots=SHOTS, meas_level=1, meas_return="avg",
                         seed_simulator=21).result()
    for i, m in enumerate((m0, m1)):
        re, im = iq.get_memory(i)[0].real, iq.get_memory(i)[0].imag
        assert abs(m[0].mean() - complex(re, im)) < 0.01


def test_single_traces_per_shot_and_slot_at_the_asked_decimation(lab_backend) -> None:
    """meas_return single with trace_decimation 50: (shots, slots, points) with points =
    ceil(window / 50); the point mean of each shot's trace lies on the |0> or |1> side as its
    level-1 counterpart does on average."""
    qc = QuantumCircuit(2, 2)
    qc.x(1)
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend, initial_layout=[0, 1])
    result = lab_backend.run(native, shots=40, meas_level=0, trace_decimation=50,
                             seed_simulator=4).result()
    memory = np.asarray(result.get_memory(0))
    window = round(lab_backend.target["measure"][(0,)].duration / lab_backend.dt)
    assert memory.shape == (40, 2, -(-window // 50))
    assert result.results[0].header["trace"]["decimation"] == 50
    assert np.all(memory[:, :, 0] != 0)


def test_an_active_resets_acquisition_fills_no_trace_slot(lab_backend) -> None:
    """An active reset measures into no classical bit: with meas_level 0 its trace goes to no
    memory slot, so the slot no measurement writes stays 0 (it once took the reset's trace)."""
    qc = QuantumCircuit(1, 2)
    qc.x(0)
    qc.reset(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[0])
    program = lab_backend.compile(native)
    clbits = program.acq_clbit.tolist()  # the reset's rounds, then the measurement
    assert clbits[-1] == 0 and clbits[:-1] and set(clbits[:-1]) == {-1}
    memory = np.asarray(lab_backend.run(native, shots=20, meas_level=0, trace_decimation=50,
                                        seed_simulator=3).result().get_memory(0))
    assert np.all(memory[:, 0] != 0) and not np.any(memory[:, 1])


def _counters(backend) -> dict:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=2.0) as client:
        return client.status()


@pytest.mark.parametrize("options", [
    {"shots": 100_000, "trace_decimation": 1},  # 1e8 trace points
    {"shots": 10, "trace_decimation": 100_000},  # beyond the controller's decimation
])
def test_traces_beyond_the_controller_are_refused_before_sending(lab_backend, options) -> None:
    native = transpile(prepared(True), lab_backend, initial_layout=[0])
    before = _counters(lab_backend)
    with pytest.raises(InvalidRunInputError, match="nothing was sent"):
        lab_backend.run(native, meas_level=0, **options)
    after = _counters(lab_backend)
    assert (after["uploads_total"], after["runs_total"]) == (before["uploads_total"],
                                                             before["runs_total"])


def test_short_rep_delay_biases_counts_through_residual_excitation(lab_backend) -> None:
    """X then measure on qubit 0, 2000 shots in sequence. With rep_delay 500 us the |1>
    fraction is the readout's (>= 0.9) and a shot after a 1 reads 1 as often; with 1 us the
    previous shot's |1> survives (T1 ~ 42 us), X brings it to |0>, and shots alternate:
    P(1) in 0.35..0.65 and a shot after a 1 reads 1 in fewer than 25 % of cases."""
    native = transpile(prepared(True), lab_backend, initial_layout=[0])

    def bits(rep_delay: float) -> np.ndarray:
        result = lab_backend.run(native, shots=SHOTS, rep_delay=rep_delay, memory=True,
                                 seed_simulator=9).result()
        return np.array([int(m, 16) if m.startswith("0x") else int(m, 2)
                         for m in result.get_memory()])

    slow, fast = bits(500e-6), bits(1e-6)
    assert slow.mean() >= 0.9
    assert slow[1:][slow[:-1] == 1].mean() >= 0.88
    assert 0.35 < fast.mean() < 0.65
    assert fast[1:][fast[:-1] == 1].mean() < 0.25


def test_default_rep_delay_is_ten_calibrated_t1(snapshot) -> None:
    """Without rep_delay, runs wait REP_DELAY_T1_FACTOR x the longest calibrated T1, so the
    previous shot's excitation has decayed to exp(-10)."""
    t1 = max(p["t1_s"].value for p in snapshot.qubits.values())
    assert REP_DELAY_T1_FACTOR == 10.0
    assert default_rep_delay_s(snapshot) == pytest.approx(10 * t1)


def test_the_default_rep_delay_follows_the_qubits_a_job_uses(snapshot) -> None:
    """A review's case: one idle qubit's T1 of 8 ms set every job's delay to 80 ms."""
    from labqpu.store import Snapshot, SnapshotBuilder

    long = SnapshotBuilder.from_snapshot(snapshot).set_qubit(4, "t1_s", 8e-3, "t1").build_document()
    long = Snapshot.from_document(long)
    t1 = {q: p["t1_s"].value for q, p in long.qubits.items()}
    assert default_rep_delay_s(long, {0, 1}) == pytest.approx(10 * max(t1[0], t1[1]))
    assert default_rep_delay_s(long, {3, 4}) == pytest.approx(10 * 8e-3)
    assert default_rep_delay_s(long) == pytest.approx(10 * 8e-3)  # no qubits given: all
    assert default_rep_delay_s(long, {42}) == pytest.approx(10 * 8e-3)  # none with a T1


def test_shots_that_outlast_the_timeout_at_the_default_delay_are_refused(tmp_path,
                                                                        monkeypatch) -> None:
    """With qubit 4's T1 at 8 ms, a Bell pair on qubits 0 and 1 runs at its own qubits'
    delay, and 4000 shots on qubit 4 (80 ms each: 320 s) are refused before anything is sent
    rather than stopped by the controller's 300 s limit."""
    from labqpu import LabProvider
    from labqpu.store import SnapshotBuilder
    from labqpu.testing import seed_fresh_store

    seed_fresh_store(tmp_path)
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        SnapshotBuilder.from_snapshot(backend.store.latest()).set_qubit(
            4, "t1_s", 8e-3, "t1").commit(backend.store)
        bell = QuantumCircuit(2, 2)
        bell.h(0)
        bell.cx(0, 1)
        bell.measure([0, 1], [0, 1])
        counts = backend.run(transpile(bell, backend, initial_layout=[0, 1]),
                             shots=4000).result(timeout=120).get_counts()
        assert counts.get("00", 0) + counts.get("11", 0) > 3600, counts
        lone = QuantumCircuit(1, 1)
        lone.x(0)
        lone.measure(0, 0)
        with pytest.raises(InvalidRunInputError, match=r"4000 shots with a repetition delay of "
                                                       r"0\.08 s take at least 320 s") as info:
            backend.run(transpile(lone, backend, initial_layout=[4]), shots=4000)
        assert info.value.option == "rep_delay"
