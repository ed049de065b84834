"""Circuits through the whole stack: transpile -> compile -> VISA + ZeroMQ -> simulator process.

Every test here talks to the real firmware simulator over real sockets (one process for the
session, started by the ``lab_provider`` fixture of ``labqpu.testing``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import math
import time

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ClassicalRegister, Parameter
from qiskit.providers import JobError, JobStatus, JobTimeoutError

from labqpu import LabProvider
from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import PROTOCOL_VERSION
from labqpu.errors import HardwareUnavailableError, InvalidRunInputError
from labqpu.pulse.program import LoSetting
from labqpu.rack.config import default_config_path

SHOTS = 2000


def bell(a: int = 0, b: int = 1) -> QuantumCircuit:
    qc = QuantumCircuit(5, 2, name=f"bell_{a}{b}")
    qc.h(a)
    qc.cx(a, b)
    qc.measure([a, b], [0, 1])
    return qc


def controller_status(backend) -> dict:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=2.0) as client:
        return client.status()


def x_measure() -> QuantumCircuit:
    """x and measure on one qubit, not transpiled."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    return qc


@pytest.mark.parametrize("edge", [(0, 1), (1, 2), (2, 3), (3, 4)])
def test_bell_state_on_every_edge(lab_backend, edge) -> None:
    """P(00) + P(11) >= 0.90 at 2000 shots on each calibrated edge."""
    # At Qiskit's default optimization level, as a user calls it; the layout is pinned so
    # that each edge is the one measured.
    native = transpile(bell(*edge), lab_backend, initial_layout=list(range(5)),
                       seed_transpiler=7)
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=11).result().get_counts()
    assert sum(counts.values()) == SHOTS
    assert (counts.get("00", 0) + counts.get("11", 0)) / SHOTS >= 0.90, counts


def test_a_backend_says_which_device_and_wiring_it_is(lab_backend) -> None:
    """Its repr was Python's default (``<labqpu.backend.backend.LabBackend object at 0x..>``)."""
    assert repr(lab_backend) == (f"<LabBackend 'lab5': 5 qubits, "
                                 f"{lab_backend.config.path}>")


def test_bell_state_is_coherent(lab_backend) -> None:
    """Undoing the Bell preparation returns |00>: the correlations are entanglement, not a
    classical mixture of 00 and 11 (which would give 25 % each here)."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(0, 1)
    qc.h(0)
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend, optimization_level=0)
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=3).result().get_counts()
    assert counts.get("00", 0) / SHOTS >= 0.85, counts


@pytest.mark.parametrize("qubit", range(5))
def test_x_flips_each_qubit(lab_backend, qubit) -> None:
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[qubit])
    counts = lab_backend.run(native, shots=SHOTS, seed_simulator=5).result().get_counts()
    assert counts.get("1", 0) / SHOTS >= 0.9, counts


def test_registers_split_and_memory_per_shot(lab_backend) -> None:
    qc = QuantumCircuit(2)
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(2, "b")
    qc.add_register(a)
    qc.add_register(b)
    qc.x(1)
    qc.measure(0, a[0])
    qc.measure(1, b[1])
    native = transpile(qc, lab_backend)
    result = lab_backend.run(native, shots=200, memory=True, seed_simulator=2).result()
    counts = result.get_counts()
    assert max(counts, key=counts.get) == "10 0"
    memory = result.get_memory()
    assert len(memory) == 200
    assert memory.count("10 0") == counts["10 0"]
    assert result.results[0].header["creg_sizes"] == [["a", 1], ["b", 2]]


def test_result_records_the_calibration_snapshot(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    result = lab_backend.run(native, shots=100).result()
    assert result.to_dict()["calibration_snapshot_id"] == lab_backend.target.snapshot_id
    assert result.backend_name == "lab5"


def test_meas_level_1_returns_iq_per_shot_and_averaged(lab_backend) -> None:
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend)
    single = lab_backend.run(native, shots=300, meas_level=1, seed_simulator=1).result()
    iq = single.get_memory(0)
    assert iq.shape == (300, 1)
    assert np.iscomplexobj(iq)
    avg = lab_backend.run(native, shots=300, meas_level=1, meas_return="avg",
                          seed_simulator=1).result().get_memory(0)
    assert avg.shape == (1,)
    np.testing.assert_allclose(avg[0], iq[:, 0].mean(), rtol=1e-6)
    centers = lab_backend.snapshot.qubits[0]["discriminator"].value["centers"]
    c1 = complex(*centers[1])
    c0 = complex(*centers[0])
    assert abs(avg[0] - c1) < abs(avg[0] - c0)


def test_seed_makes_runs_repeatable(quiet_lab_backend) -> None:
    """On a simulator without drift (``[simulator] noise = false``): with drift on, the device
    may have drifted between two runs (docs/simulator.md, "Noise")."""
    native = transpile(bell(), quiet_lab_backend)
    first = quiet_lab_backend.run(native, shots=500, memory=True, seed_simulator=99).result()
    second = quiet_lab_backend.run(native, shots=500, memory=True, seed_simulator=99).result()
    assert first.get_memory() == second.get_memory()


def test_counts_agree_with_the_memory_of_the_same_run(quiet_lab_backend) -> None:
    """Counts without memory of a one-point run are computed by the hardware worker while the
    read-back after the run travels; with memory, and a merged sweep's points, by ``result()``.
    Seeded alike, both give the same counts, and those are the tally of the memory, for one
    circuit and for each of several in one job; a merged sweep's points each get their own
    counts."""
    native = transpile(bell(), quiet_lab_backend)
    plain = quiet_lab_backend.run(native, shots=500, seed_simulator=98).result()
    with_memory = quiet_lab_backend.run(native, shots=500, memory=True,
                                        seed_simulator=98).result()
    memory = with_memory.get_memory()
    assert plain.get_counts() == with_memory.get_counts()
    assert plain.get_counts() == {k: memory.count(k) for k in set(memory)}
    several = [transpile(bell(a, a + 1), quiet_lab_backend, initial_layout=list(range(5)))
               for a in (0, 1, 3)]  # different qubits, so different discriminators
    plain = quiet_lab_backend.run(several, shots=300, seed_simulator=96,
                                  merge_sweeps=False).result()
    with_memory = quiet_lab_backend.run(several, shots=300, memory=True, seed_simulator=96,
                                        merge_sweeps=False).result()
    for i in range(len(several)):
        memory = with_memory.get_memory(i)
        assert plain.get_counts(i) == {k: memory.count(k) for k in set(memory)}, i
    theta = Parameter("t")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    sweep = [transpile(qc.assign_parameters({theta: t}), quiet_lab_backend, initial_layout=[0])
             for t in (0.2, np.pi - 0.2)]
    job = quiet_lab_backend.run(sweep, shots=400, seed_simulator=97)
    assert job.uploads == 1
    counts = job.result().get_counts()
    assert counts[0].get("0", 0) > 360 and counts[1].get("1", 0) > 360, counts


def test_several_circuits_in_one_job(lab_backend) -> None:
    theta = Parameter("t")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    circuits = [transpile(qc.assign_parameters({theta: t}), lab_backend)
                for t in np.linspace(0, np.pi, 5)]
    result = lab_backend.run(circuits, shots=1000, seed_simulator=4).result()
    p1 = [result.get_counts(i).get("1", 0) / 1000 for i in range(5)]
    assert p1[0] < 0.1
    assert p1[-1] > 0.9
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(p1))


# ----------------------------------------------------------------------- bad input


def _nothing_sent(backend, action) -> str:
    """Run ``action``, expect InvalidRunInputError, check the controller saw no upload or run."""
    before = controller_status(backend)
    with pytest.raises(InvalidRunInputError) as info:
        action()
    after = controller_status(backend)
    assert after["uploads_total"] == before["uploads_total"]
    assert after["runs_total"] == before["runs_total"]
    return str(info.value)


@pytest.mark.parametrize("angle", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_angles_are_rejected_before_sending(lab_backend, angle) -> None:
    qc = QuantumCircuit(1, 1)
    qc.rz(angle, 0)
    qc.sx(0)
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "non-finite parameter" in message and "rz" in message


def test_a_non_finite_global_phase_is_rejected_before_sending(lab_backend) -> None:
    qc = QuantumCircuit(1, 1, global_phase=float("nan"))
    qc.sx(0)
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "global_phase nan must be finite" in message


@pytest.mark.parametrize(("circuit", "values", "expected"), [
    ("plain", ["0.5"], "'0.5' is not a number"),  # float() took the string
    ("plain", [True], "True is not a number"),  # and the bool
    ("overflowing", [1.0], "point 0 ({'th': 1.0}) makes an expression of the circuit "
                           "non-finite"),  # a bare ZeroDivisionError from Qiskit
])
def test_parameter_binds_that_are_not_numbers_are_rejected_before_sending(
        lab_backend, circuit, values, expected) -> None:
    th = Parameter("th")
    qc = QuantumCircuit(1, 1)
    qc.sx(0)
    qc.rz(th if circuit == "plain" else th * 1e308 * 10, 0)
    qc.sx(0)
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend,
                            lambda: lab_backend.run(qc, parameter_binds={th: values}))
    assert expected in message


def test_a_delay_beyond_the_controllers_memory_is_rejected_before_sending(lab_backend) -> None:
    qc = QuantumCircuit(1, 1)
    qc.delay(1.0, 0, unit="s")
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "plays at most" in message


@pytest.mark.parametrize(("duration", "unit"), [(1e300, "s"), (1e15, "s"), (2 ** 62, "dt")])
def test_a_delay_beyond_any_number_of_samples_is_refused_naming_it(lab_backend, duration,
                                                                   unit) -> None:
    """A delay of 1e300 s once raised a bare OverflowError (its sample count rounded); it
    is refused by name like any delay no controller could play, and nothing is sent."""
    qc = QuantumCircuit(1, 1)
    qc.delay(duration, 0, unit=unit)
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert f"delay on qubits (0,) of {duration} {unit}" in message
    assert "a delay takes 0 to" in message


def test_a_calibration_that_compiles_beyond_full_scale_is_refused_before_sending(
        tmp_path, monkeypatch) -> None:
    """A drag_beta of 1e12 (the store takes any finite one) makes an x whose DRAG part is
    ~7e10 of full scale: once refused by the controller at upload, after the LOs were set; now
    run() refuses it naming the qubit and the values to check (the compiler checks each
    calibrated pulse once per snapshot, not each program)."""
    from labqpu.store import SnapshotBuilder

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        backend.store.commit(SnapshotBuilder.from_snapshot(backend.snapshot)
                             .set_qubit(0, "drag_beta", 1e12, "manual").build_document())
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.measure(0, 0)
        native = transpile(qc, backend, initial_layout=[0])
        message = _nothing_sent(backend, lambda: backend.run(native))
    assert "qubit 0: pi_amplitude" in message
    assert "times the peak of its DRAG pulse (drag_beta 1e+12) reaches" in message
    assert "of DAC full scale (max 1)" in message


def test_a_program_over_the_controllers_waveform_table_is_rejected_before_sending(
        lab_backend) -> None:
    """65 537 distinct one-sample waveforms: one more than the controller's table holds."""
    from labqpu.pulse.program import ProgramBuilder

    limit = lab_backend.controller_capabilities("ctrl0")["max_waveforms"]
    b = ProgramBuilder("ctrl0", 1e9)
    for i in range(limit + 1):
        wid = b.waves.add(("point", i), lambda i=i: np.full(1, i / (2 * limit), np.complex64))
        b.play(0, i, wid, 1.0)
    b.acquire(0, limit + 1, 100, 0.0, 0, 0)
    program = b.build(num_clbits=1, header={"name": "many"})
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(program, meas_level=1))
    assert f"program 'many' needs {limit + 1} waveforms" in message
    assert f"holds at most {limit} (max_waveforms)" in message


@pytest.mark.parametrize(("field", "value"), [("amp", math.nan), ("phase", math.inf),
                                              ("freq", -math.inf), ("acq_freq", math.nan)])
def test_a_ready_program_with_a_non_finite_value_is_refused_before_sending(
        lab_backend, field, value) -> None:
    """A low-level program (``ProgramBuilder``) with NaN or inf in an amplitude, phase or
    frequency is refused by the backend, naming the array and element; nothing reaches the
    controller."""
    from labqpu.pulse.program import ProgramBuilder

    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("ones", 40), lambda: np.ones(40, np.complex64))
    b.play(0, 0, wid, 0.1, phase_rad=0.0, frequency_hz=0.0)
    b.play(0, 40, wid, value if field == "amp" else 0.1,
           phase_rad=value if field == "phase" else 0.0,
           frequency_hz=value if field == "freq" else 0.0)
    b.acquire(0, 80, 100, value if field == "acq_freq" else 0.0, 0, 0)
    program = b.build(num_clbits=1, header={"name": "bad"})
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(program, meas_level=1))
    name = {"amp": "play_amp[1]", "phase": "play_phase_rad[1]", "freq": "play_freq_hz[1]",
            "acq_freq": "acq_freq_hz[0]"}[field]
    assert f"program 'bad': {name} is {value}" in message
    assert "must be finite" in message


@pytest.mark.parametrize(("case", "expected"), [
    ("nco", "play 1 (port 0, sample 40) is at 6e+08 Hz, beyond the Nyquist frequency 5e+08 Hz"),
    ("demodulation", "acquisition 0 (port 0, sample 80) is at -5.5e+08 Hz, beyond the Nyquist"),
    ("amplitude", "play 1 (port 0, sample 40) exceeds DAC full scale: amplitude 5 x waveform "
                  "peak 1 > 1"),
])
def test_a_program_beyond_the_controllers_limits_is_refused_before_sending(
        lab_backend, case, expected) -> None:
    """A low-level program with an NCO or demodulation frequency beyond half the 1 GS/s sample
    rate, or a play over DAC full scale, is refused by the backend naming the play or
    acquisition, its port, sample and value, and the controller; before this check the
    controller refused it at upload, after the job had set the rack's instruments."""
    from labqpu.pulse.program import ProgramBuilder

    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("ones", 40), lambda: np.ones(40, np.complex64))
    b.play(0, 0, wid, 0.1)
    b.play(0, 40, wid, 5.0 if case == "amplitude" else 0.1,
           frequency_hz=600e6 if case == "nco" else 100e6)
    b.acquire(0, 80, 100, -550e6 if case == "demodulation" else 0.0, 0, 0)
    program = b.build(num_clbits=1, header={"name": "loud"})
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(program, meas_level=1))
    assert f"program 'loud': {expected}" in message
    assert "of ctrl0; nothing was sent" in message


def test_limits_are_checked_on_the_values_the_controller_plays(lab_backend) -> None:
    """A play frequency that ``binds`` takes from the parameter table is the table's value at
    upload (docs/protocol.md 4.7): an element beyond Nyquist that the table overrides with a
    valid one runs. A play of a waveform the table does not hold is refused naming it (it
    once crashed the check with an IndexError)."""
    from dataclasses import replace

    from labqpu.pulse.program import ProgramBuilder

    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("ones", 40), lambda: np.ones(40, np.complex64))
    b.play(0, 0, wid, 0.1, frequency_hz=700e6)
    b.acquire(0, 40, 100, 0.0, 0, 0)
    program = replace(b.build(num_clbits=1, header={"name": "bound"}),
                      param_names=("f",), param_values=np.array([100e6]),
                      binds=(("play_freq_hz", 0, 0),))
    assert lab_backend.run(program, meas_level=1, shots=10).result().success
    stray = replace(program, play_wave=np.array([3]), binds=(), param_names=(),
                    param_values=np.zeros(0))
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(stray, meas_level=1))
    assert "play 0 (port 0, sample 0) uses waveform 3; the program's table holds 1" in message


@pytest.mark.parametrize("tags", [5, "tag", [1, 2], {"a": 1}])
def test_mistyped_job_tags_are_rejected_before_sending(lab_backend, tags) -> None:
    native = transpile(bell(), lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, job_tags=tags))
    assert "job_tags must be a list of strings" in message


def test_six_qubit_circuit_is_rejected_before_sending(lab_backend) -> None:
    qc = QuantumCircuit(6, 6)
    qc.measure(range(6), range(6))
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "6 qubits" in message
    assert "5" in message


def test_gate_not_in_target_is_rejected_before_sending(lab_backend) -> None:
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "'h'" in message
    assert "transpile" in message


def test_a_classical_store_says_it_is_not_supported_not_to_transpile(lab_backend) -> None:
    """A ``store`` to a classical variable survives transpiling; run() refuses it saying so,
    rather than telling the user to transpile the circuit they just transpiled."""
    from qiskit.circuit.classical import expr

    qc = QuantumCircuit(2, 2)
    flag = qc.add_var("flag", expr.lift(False))
    qc.x(0)
    qc.measure(0, 0)
    qc.store(flag, expr.lift(qc.clbits[0]))
    with qc.if_test(flag):
        qc.x(1)
    qc.measure(1, 1)
    native = transpile(qc, lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, shots=10))
    assert "'store' is not in the Target" in message
    assert "classical variables" in message and "transpile the circuit" not in message


def test_cz_on_an_uncoupled_pair_is_rejected(lab_backend) -> None:
    qc = QuantumCircuit(5)
    qc.cz(0, 2)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(qc))
    assert "'cz'" in message
    assert "(0, 2)" in message
    assert "which has cz on qubits [(0, 1)," in message


def test_run_of_something_that_is_no_circuit_says_what_it_takes(lab_backend) -> None:
    from labqpu import pulse

    with pulse.build(lab_backend, name="unbuilt") as builder:
        pulse.measure(0, clbit=0)
    for thing in (None, "bell"):
        message = _nothing_sent(lab_backend, lambda thing=thing: lab_backend.run(thing))
        assert message.startswith("run() takes a QuantumCircuit, a PulseProgram, a "
                                  "PulseBuilder (with parameter_binds) or a list of them, got "
                                  f"{type(thing).__name__}"), message
    # a builder without parameters runs as what its build() gives (as legacy Pulse ran a
    # schedule); one with parameters needs values
    counts = lab_backend.run(builder, shots=200, seed_simulator=1).result(timeout=60)
    assert counts.get_counts() == lab_backend.run(builder.build(), shots=200,
                                                  seed_simulator=1).result(timeout=60).get_counts()
    with pulse.build(lab_backend, name="unbound") as swept:
        pulse.play(pulse.calibrated_drag(0, amp=Parameter("amp")), pulse.drive(0))
        pulse.measure(0, clbit=0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(swept))
    assert message.startswith("pulse program 'unbound' is a PulseBuilder with parameter(s) "
                              "amp: sweep them with parameter_binds"), message
    assert message.endswith("or call its assign_parameters(...) first"), message
    circuits = (transpile(bell(), lab_backend) for _ in range(2))  # any iterable
    assert len(lab_backend.run(circuits, shots=10).result(timeout=60).results) == 2


def test_an_empty_store_says_to_bootstrap(tmp_path, monkeypatch, caplog) -> None:
    """A wiring file of a new device whose store holds no snapshot yet: the Target has no
    calibrated gate; the backend warns once that transpile() cannot work (Qiskit's own error
    there names no store: "unable to synthesize measure"), and a run says what to measure
    instead of listing gates it refuses."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    text = default_config_path().read_text()
    text = text.replace('seed_snapshot = "lab5_calibration.json"', 'seed_snapshot = ""', 1)
    wiring = tmp_path / "lab.toml"
    wiring.write_text(text)
    with caplog.at_level("WARNING", logger="labqpu.backend.backend"), \
            LabProvider(str(wiring), simulator=True) as provider:
        backend = provider.backend()
        assert backend.target.num_qubits == 5 and backend.target.snapshot_id == 0
        warnings = [r.getMessage() for r in caplog.records if "holds no snapshot" in
                    r.getMessage()]
        assert len(warnings) == 1 and "transpile() fails for every circuit" in warnings[0]
        # the command that works for this file: it needs the embedded simulator (port 0)
        assert f"`labqpu calibrate --bootstrap --config {wiring} --simulator`" in warnings[0], \
            warnings[0]
        with pytest.raises(InvalidRunInputError, match=r"holds no snapshot with a calibrated "
                                                       r"qubit.*`labqpu calibrate --bootstrap "
                                                       r"--config .* --simulator`"):
            backend.run(x_measure())


def test_a_target_without_a_usable_qubit_says_so(tmp_path, monkeypatch, caplog) -> None:
    """Age limits that leave every qubit out of the Target: Qiskit's transpile() then fails
    with "unable to synthesize measure" and run() listed gates it offers on no qubit. Now the
    backend warns that every qubit is left out (naming the command that recalibrates this
    rack) and run() names the qubit and why it was left out."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    wiring = tmp_path / "lab.toml"
    wiring.write_text(default_config_path().read_text()
                      + "\n[calibration.max_age_h]\nfrequency = 0.001\n")
    with caplog.at_level("WARNING", logger="labqpu.backend.backend"), \
            LabProvider(str(wiring), simulator=True) as provider:
        backend = provider.backend()
        warnings = [r.getMessage() for r in caplog.records if "every qubit" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert f"`labqpu calibrate --all --config {wiring} --simulator`" in warnings[0]
        with pytest.raises(InvalidRunInputError, match=r"'x' on qubits \(0,\) is not in the "
                           r"Target of lab5 \(calibration snapshot 1\): qubit 0 stale "
                           r"frequency_hz \(.* h > 0.001 h\): qubit 0 left out of the Target; "
                           r"recalibrate \(`labqpu calibrate --all --config .* --simulator`\)"):
            backend.run(x_measure())


@pytest.mark.parametrize("shots", [0, -5, 10**7, 2.5, "100"])
def test_shots_out_of_range_are_rejected(lab_backend, shots) -> None:
    native = transpile(bell(), lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, shots=shots))
    assert "shots" in message


def test_unknown_option_is_rejected(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, shot=10))
    assert "unknown run option(s) ['shot']; did you mean 'shots'?; known: [" in message


def test_bad_option_values_are_rejected(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    for level in (3, True, 1.5):  # True ran at level 1 (IQ points), as bool is an int
        assert "meas_level" in _nothing_sent(
            lab_backend, lambda level=level: lab_backend.run(native, meas_level=level))
    for seed in (-1, 2**63, 2**70):
        assert "seed_simulator" in _nothing_sent(
            lab_backend, lambda seed=seed: lab_backend.run(native, seed_simulator=seed))


def test_the_largest_seed_runs_and_the_next_circuit_wraps_to_zero(quiet_lab_backend) -> None:
    """Run i of a job gets (seed_simulator + i) mod 2**63, the protocol's range: the second
    circuit of a job seeded 2**63 - 1 draws exactly what a job seeded 0 draws."""
    native = transpile(bell(), quiet_lab_backend)
    pair = quiet_lab_backend.run([native, native], shots=200, memory=True,
                                 seed_simulator=2**63 - 1).result()
    zero = quiet_lab_backend.run(native, shots=200, memory=True, seed_simulator=0).result()
    assert pair.get_memory(1) == zero.get_memory(0)
    # each experiment says the seed it drew with (a review: the result did not say)
    assert [r.seed_simulator for r in pair.results] == [2**63 - 1, 0]
    assert zero.results[0].seed_simulator == 0 and zero.status == "COMPLETED"
    unseeded = quiet_lab_backend.run(native, shots=10).result().results[0]
    assert getattr(unseeded, "seed_simulator", None) is None


def test_a_circuit_without_classical_bits_has_no_outcomes(lab_backend) -> None:
    """As Qiskit's BasicSimulator: no classical bits, so empty counts and memory (not a
    made-up outcome '0')."""
    qc = QuantumCircuit(1)
    qc.x(0)
    result = lab_backend.run(transpile(qc, lab_backend), shots=50, memory=True).result()
    assert result.get_counts() == {}
    assert result.get_memory() == []


def test_rejections_name_the_option(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    for options, option in (({"shots": 0}, "shots"), ({"meas_level": 3}, "meas_level"),
                            ({"shotz": 1}, "shotz"), ({"timeout": float("nan")}, "timeout")):
        with pytest.raises(InvalidRunInputError) as info:
            lab_backend.run(native, **options)
        assert info.value.option == option, options
    with pytest.raises(InvalidRunInputError) as info:
        lab_backend.set_options(rep_delay=-1.0)
    assert info.value.option == "rep_delay"


# ----------------------------------------------------------------------- jobs


def test_job_is_asynchronous_and_finishes(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    job = lab_backend.run([native] * 20, shots=2000)
    assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)
    with pytest.raises(JobTimeoutError, match="did not finish within"):
        job.result(timeout=1e-4)
    result = job.result(timeout=120)
    assert job.status() is JobStatus.DONE
    assert len(result.results) == 20


def test_a_bad_result_timeout_is_refused_and_an_infinite_one_waits(lab_backend) -> None:
    """``result(timeout=...)`` takes None or seconds >= 0; inf (and a bound beyond what a wait
    can take) means no bound. A bad timeout is the caller's error, not the job's: the job
    still finishes and its result is there."""
    job = lab_backend.run(transpile(bell(), lab_backend), shots=100)
    for bad in (float("nan"), -1.0, "5", True):
        with pytest.raises(ValueError, match="timeout must be None or a number of seconds"):
            job.result(timeout=bad)
    assert job.result(timeout=float("inf")).success
    assert job.result(timeout=1e300).get_counts() == job.result().get_counts()
    assert job.result(timeout=10**400).success  # an int beyond any float: no bound
    assert job.status() is JobStatus.DONE


def test_sync_run_returns_a_finished_job(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    job = lab_backend.run(native, shots=100, sync=True)
    assert job.status() is JobStatus.DONE


def test_instrument_error_reaches_the_user(lab_backend) -> None:
    """A program only the controller can refuse fails the job with the controller's own
    message: two plays each within DAC full scale, overlapping on one port, whose sum exceeds
    it (the backend checks each play; the controller renders the port)."""
    from labqpu.pulse.program import ProgramBuilder

    native = transpile(bell(), lab_backend)
    b = ProgramBuilder("ctrl0", 1e9)
    wid = b.waves.add(("ones", 40), lambda: np.ones(40, np.complex64))
    b.play(0, 0, wid, 0.6)
    b.play(0, 20, wid, 0.6)
    b.acquire(0, 60, 100, 0.0, 0, 0)
    job = lab_backend.run(b.build(num_clbits=1, header={"name": "overlap"}), shots=10,
                          meas_level=1)
    with pytest.raises(JobError, match="full scale"):
        job.result(timeout=60)
    assert job.status() is JobStatus.ERROR
    # The hardware path is still usable afterwards.
    assert lab_backend.run(native, shots=10).result(timeout=60).success


def test_cancel_a_queued_job(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    blocker = lab_backend.run([native] * 30, shots=2000)
    queued = lab_backend.run(native, shots=100)
    assert queued.cancel()
    assert queued.status() is JobStatus.CANCELLED
    with pytest.raises(JobError, match="cancelled"):
        queued.result(timeout=60)
    assert blocker.result(timeout=120).success


# ----------------------------------------------------------------------- physics via VISA


def _p1_of_x(backend, program) -> float:
    result = backend.run(program, shots=SHOTS, seed_simulator=21).result(timeout=60)
    return result.get_counts().get("1", 0) / SHOTS


@pytest.mark.parametrize(("repeats", "min_drop"), [(1, 0.05), (5, 0.2)])
def test_detuned_drive_lo_degrades_x(lab_backend, repeats, min_drop) -> None:
    """The LO frequency travels over VISA to the simulated source; 5 MHz off, X gates no
    longer flip the qubit cleanly (the error grows with the number of gates). The next job
    sets the calibrated LO again."""
    qc = QuantumCircuit(1, 1)
    for _ in range(repeats):
        qc.x(0)
    qc.measure(0, 0)
    program = lab_backend.run(transpile(qc, lab_backend, initial_layout=[0],
                                        optimization_level=0), shots=10).programs[0]
    lo_name = lab_backend.config.qubits[0].drive_lo
    good = program.lo_settings[lo_name]
    detuned = dataclasses.replace(program, lo_settings={
        **program.lo_settings, lo_name: LoSetting(good.frequency_hz + 5e6, good.power_dbm)})
    p_good = _p1_of_x(lab_backend, program)
    p_bad = _p1_of_x(lab_backend, detuned)
    assert p_good >= 0.9
    assert p_bad <= p_good - min_drop, (p_good, p_bad)
    assert _p1_of_x(lab_backend, program) >= 0.9


def test_starved_lo_power_means_no_drive(lab_backend) -> None:
    """The LO power also travels over VISA: at -40 dBm the mixer hardly converts."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    program = lab_backend.run(transpile(qc, lab_backend, initial_layout=[0]),
                              shots=10).programs[0]
    lo_name = lab_backend.config.qubits[0].drive_lo
    starved = dataclasses.replace(program, lo_settings={
        **program.lo_settings,
        lo_name: LoSetting(program.lo_settings[lo_name].frequency_hz, -40.0)})
    assert _p1_of_x(lab_backend, starved) < 0.1


def test_gate_on_a_neighbour_during_readout_runs(lab_backend) -> None:
    """A CZ on (2, 3) next to a measured qubit 1 is scheduled before the readout, so the
    circuit runs instead of tripping the simulator's mid-circuit check."""
    qc = QuantumCircuit(5, 1)
    qc.x(1)
    qc.cz(2, 3)
    qc.measure(1, 0)
    counts = lab_backend.run(qc, shots=500, seed_simulator=8).result(timeout=60).get_counts()
    assert counts.get("1", 0) > 450


def test_provider_closed_is_a_clear_error(lab_home) -> None:
    from labqpu import LabProvider
    from labqpu.errors import LabQpuError

    provider = LabProvider()
    backend = provider.backend()
    native = transpile(bell(), backend)
    provider.close()
    with pytest.raises(LabQpuError, match="provider was closed"):
        backend.run(native)


def test_a_dead_embedded_simulator_is_started_again_for_the_next_job(lab_home,
                                                                     caplog) -> None:
    """The provider's own simulator killed between jobs: the next job starts it again on the
    same endpoints (a warning names the exit) and runs right."""
    import os
    import signal

    from labqpu import LabProvider

    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        assert backend.run(native, shots=10).result(timeout=60).success
        pid, endpoints = provider.simulator.pid, dict(provider.simulator.endpoints)
        os.kill(pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        with caplog.at_level(logging.WARNING, logger="labqpu.backend.provider"):
            counts = backend.run(native, shots=400).result(timeout=120).get_counts()
        assert counts.get("00", 0) + counts.get("11", 0) > 360, counts
        assert provider.simulator.pid != pid
        assert provider.simulator.endpoints == endpoints
        assert f"(pid {pid}) exited with code -9" in caplog.text
        assert "started it again" in caplog.text
        assert backend.hardware_status(timeout_s=30)


def test_a_simulator_that_keeps_exiting_is_left_down_and_named(lab_home, monkeypatch) -> None:
    import os
    import signal

    from labqpu import LabProvider
    from labqpu.backend import provider as provider_module

    monkeypatch.setattr(provider_module, "MAX_RESTARTS", 1)
    monkeypatch.setattr(provider_module, "RESTART_WINDOW_S", 3.0)
    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        os.kill(provider.simulator.pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        assert backend.run(native, shots=10).result(timeout=120).success  # started again
        os.kill(provider.simulator.pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        job = backend.run(native, shots=10)
        with pytest.raises(JobError, match=r"firmware simulator .* exited .*2 times within 3 s, "
                                           r"so it is not started again for another \d s"):
            job.result(timeout=60)
        with pytest.raises(HardwareUnavailableError, match=r"firmware simulator .* exited"):
            backend.hardware_status(timeout_s=30)  # not what it said while it was alive
        # down for at most the window, as the message says (it said "open a new provider")
        time.sleep(3.0)
        assert backend.run(native, shots=10).result(timeout=120).success


@pytest.mark.parametrize(("option", "value"), [("shots", 2.5), ("shots", True),
                                                ("rep_delay", float("nan")),
                                                ("timeout", float("inf")), ("shots", "100")])
def test_set_options_and_run_share_the_checks(lab_backend, option, value) -> None:
    before = getattr(lab_backend.options, option)
    with pytest.raises(InvalidRunInputError, match=option):
        lab_backend.set_options(**{option: value})
    assert getattr(lab_backend.options, option) == before
    native = transpile(bell(), lab_backend)
    assert option in _nothing_sent(lab_backend, lambda: lab_backend.run(native,
                                                                         **{option: value}))


@pytest.mark.parametrize(("change", "option"), [
    (lambda o: o.update_options(shots=2.5), "shots"),  # the range validator alone took it
    (lambda o: setattr(o, "shots", 10**9), "shots"),
    (lambda o: setattr(o, "shots", None), "shots"),
    (lambda o: setattr(o, "job_tags", "abc"), "job_tags"),  # was split into ['a', 'b', 'c']
    (lambda o: setattr(o, "seed_simulator", -5), "seed_simulator"),
])
def test_defaults_changed_past_set_options_are_checked_before_a_run(lab_backend, change,
                                                                     option) -> None:
    """A review's case: ``backend.options`` is Qiskit's public ``Options``; a default changed
    on it directly (not through ``set_options``) reached the run unchecked and was coerced
    (2.5 shots ran as 2). ``run()`` checks the defaults it starts from, names the option and
    sends nothing; a valid default changed that way is used."""
    native = transpile(bell(), lab_backend)
    before = dict(lab_backend.options.__dict__)
    try:
        change(lab_backend.options)
        message = _nothing_sent(lab_backend, lambda: lab_backend.run(native))
        assert "backend.options" in message and option in message, message
        lab_backend.set_options(**before)
        lab_backend.options.shots = 7
        assert lab_backend.run(native).result(timeout=60).results[0].shots == 7
    finally:
        lab_backend.set_options(**before)


def test_a_bad_default_that_the_run_overrides_is_no_matter(lab_backend) -> None:
    """``backend.options.shots = 0``, then ``run(native, shots=100)`` runs 100 shots (a review
    found it refused); ``run(native)`` is refused, naming shots."""
    native = transpile(bell(), lab_backend)
    before = dict(lab_backend.options.__dict__)
    try:
        lab_backend.options.shots = 0
        assert lab_backend.run(native, shots=100).result(timeout=60).results[0].shots == 100
        assert "shots" in _nothing_sent(lab_backend, lambda: lab_backend.run(native))
    finally:
        lab_backend.set_options(**before)


def test_pulse_program_is_checked_against_the_rack(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    program = lab_backend.run(native, shots=10, sync=True).programs[0]
    bad = [
        (dataclasses.replace(program, controller="ctrl9"), "ctrl9"),
        (dataclasses.replace(program, num_clbits=0), "num_clbits=2"),
        (dataclasses.replace(program, lo_settings={"flux_bias": LoSetting(5e9, 10.0)}),
         "not an LO source"),
        (dataclasses.replace(program, sample_rate_hz=2e9), "Hz"),
    ]
    for candidate, needle in bad:
        assert needle in _nothing_sent(lab_backend, lambda c=candidate: lab_backend.run(c))


def test_run_options_belong_to_their_job(lab_backend) -> None:
    """A run option changes that job only, and the job keeps the tags it was run with, whatever
    happens to the caller's list (or the backend's default list) afterwards."""
    native = transpile(bell(), lab_backend)
    before = dict(lab_backend.options.__dict__)
    defaults = ["default"]
    lab_backend.set_options(job_tags=defaults)
    try:
        tags = ["first"]
        job = lab_backend.run(native, shots=50, job_tags=tags, rep_delay=2e-4)
        tags.append("later")
        plain = lab_backend.run(native, shots=50)
        defaults.append("changed")
        assert job.result(timeout=60).header["job_tags"] == ["first"]
        assert plain.result(timeout=60).header["job_tags"] == ["default"]
        assert lab_backend.options.rep_delay == before["rep_delay"]
        assert lab_backend.options.shots == before["shots"]
    finally:
        lab_backend.set_options(job_tags=None)


def test_set_options_range_errors_are_run_input_errors(lab_backend) -> None:
    with pytest.raises(InvalidRunInputError, match="shots"):
        lab_backend.set_options(shots=0)
    with pytest.raises(InvalidRunInputError, match="seed_simulator"):
        lab_backend.set_options(seed_simulator=-1)
    assert lab_backend.options.seed_simulator is None


def test_every_result_carries_a_reproducibility_bundle(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    started = time.monotonic()
    job = lab_backend.run(native, shots=100)
    result = job.result(timeout=60)
    waited = time.monotonic() - started
    bundle = result.to_dict()["results"][0]["header"]["reproducibility"]
    program = job.programs[0]
    assert bundle["program_hash"] == program.content_hash
    assert bundle["waveform_hashes"] == [hashlib.sha256(program.waveform(i).tobytes())
                                         .hexdigest() for i in range(program.num_waveforms)]
    assert bundle["calibration_snapshot_id"] == lab_backend.snapshot.snapshot_id
    assert bundle["controller"]["protocol_version"] == PROTOCOL_VERSION
    assert bundle["controller"]["firmware"]
    assert 0 < bundle["controller"]["elapsed_s"] < waited  # the run, within the job
    los = {r["instrument"] for r in bundle["instruments_before"] if "frequency_hz" in r}
    assert los == set(program.lo_settings)
    assert all(r["identity"] for r in bundle["instruments_after"])


@pytest.mark.slow
def test_the_shipped_calibration_gives_bell_above_095_on_every_edge(tmp_path, monkeypatch) -> None:
    """The shipped lab5 snapshot (measured by the bootstrap from the design values) on a fresh
    store: Bell P(00) + P(11) >= 0.95 on every edge, at Qiskit's default optimization level,
    20 000 shots each (sampling error ~0.0015), seeded so that the figures repeat."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        assert backend.snapshot.snapshot_id == 1
        fidelity = {}
        for edge in [(0, 1), (1, 2), (2, 3), (3, 4)]:
            native = transpile(bell(*edge), backend, initial_layout=list(range(5)),
                               seed_transpiler=7)
            counts = backend.run(native, shots=20000, seed_simulator=11).result().get_counts()
            fidelity[edge] = (counts.get("00", 0) + counts.get("11", 0)) / 20000
    assert min(fidelity.values()) >= 0.95, fidelity


@pytest.mark.parametrize("body", ["nothing", "rz", "x"])
def test_a_circuit_that_measures_nothing_returns_zeros(lab_backend, body) -> None:
    """Nothing measured, whether or not something plays (rz plays nothing): the classical bit
    stays 0 at meas_level 2 and its IQ slot 0 at meas_level 1, as in Qiskit's simulators; raw
    traces (meas_level 0) of no acquisition are refused before anything is sent."""
    qc = QuantumCircuit(1, 1, name=f"measures_nothing_{body}")
    if body == "rz":
        qc.rz(0.3, 0)
    elif body == "x":
        qc.x(0)
    native = transpile(qc, lab_backend)
    assert lab_backend.run(native, shots=20).result(timeout=60).get_counts() == {"0": 20}
    memory = lab_backend.run(native, shots=20, meas_level=1).result(timeout=60).get_memory()
    assert np.asarray(memory).shape == (20, 1) and not np.any(memory)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, meas_level=0))
    assert "acquires nothing" in message and "meas_level" in message


def test_set_options_none_restores_an_option_whose_default_is_none(lab_backend) -> None:
    """rep_delay and seed_simulator default to None: set_options(x=None) restores that. An
    option whose default is a value cannot be set to None, and the error names it."""
    lab_backend.set_options(rep_delay=2e-4, seed_simulator=5)
    try:
        lab_backend.set_options(rep_delay=None, seed_simulator=None)
        assert lab_backend.options.rep_delay is None
        assert lab_backend.options.seed_simulator is None
        for option in ("timeout", "shots", "meas_level"):
            before = getattr(lab_backend.options, option)
            with pytest.raises(InvalidRunInputError, match=f"{option} cannot be None"):
                lab_backend.set_options(**{option: None})
            assert getattr(lab_backend.options, option) == before
    finally:
        lab_backend.set_options(rep_delay=None, seed_simulator=None)


def test_run_refuses_none_among_its_items(lab_backend) -> None:
    native = transpile(bell(), lab_backend)
    for items in ([native, None], [None]):
        message = _nothing_sent(lab_backend, lambda i=items: lab_backend.run(i))
        assert "got NoneType" in message


def test_of_two_bad_circuits_the_first_is_reported(lab_backend) -> None:
    """Each circuit is checked just before it is compiled: an unbound angle in the first
    circuit is reported, not the gate outside the Target in the second."""
    first = QuantumCircuit(1, 1, name="first")
    first.rz(Parameter("t"), 0)
    first.x(0)
    first.measure(0, 0)
    second = QuantumCircuit(1, 1, name="second")
    second.h(0)
    second.measure(0, 0)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run([first, second]))
    assert "circuit 'first'" in message and "unbound" in message


def test_a_failed_restart_is_named_and_does_not_use_up_the_restarts(lab_home,
                                                                      monkeypatch) -> None:
    """The controller's port taken when the simulator is started again: the job names the
    exit and the failed start; once the port is free, a later job starts it (a failed start
    is not one of the MAX_RESTARTS, here 1)."""
    import os
    import signal
    import socket

    from labqpu import LabProvider
    from labqpu.backend import provider as provider_module

    monkeypatch.setattr(provider_module, "MAX_RESTARTS", 1)
    monkeypatch.setattr(provider_module, "RETRY_START_AFTER_S", 0.2)
    with LabProvider() as provider:
        backend = provider.backend()
        native = transpile(bell(), backend)
        pid = provider.simulator.pid
        port = int(provider.simulator.endpoints["ctrl0"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGKILL)
        provider.simulator.process.wait(timeout=10)
        with socket.create_server(("127.0.0.1", port)):
            job = backend.run(native, shots=10)
            with pytest.raises(JobError) as info:
                job.result(timeout=120)
        message = str(info.value)
        assert f"(pid {pid}) exited with code -9" in message, message
        assert "starting it again failed" in message and "Address" in message, message
        time.sleep(0.3)
        assert backend.run(native, shots=10).result(timeout=120).success
