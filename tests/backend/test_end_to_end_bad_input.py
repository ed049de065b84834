"""Bad input through the whole stack: transpile -> compile -> VISA + ZeroMQ -> simulator process.

Circuits, programs and options the backend refuses before anything is sent (the controller's
counters show no upload and no run), ``set_options`` checked as ``run`` is, and the error each
refusal names. Every test here talks to the real firmware simulator over real sockets (one
process for the session, started by the ``lab_provider`` fixture of ``labqpu.testing``).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter

from labqpu import LabProvider
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InvalidRunInputError
from labqpu.pulse.program import LoSetting
from labqpu.rack.config import default_config_path


def controller_status(backend) -> dict:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=2.0) as client:
        return client.status()


def x_measure() -> QuantumCircuit:
    """x and measure on one qubit, not transpiled."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    return qc


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


@pytest.mark.parametrize("angle", [float("nan"), float("inf"), -float("inf"),
                                   pytest.param(10**400, id="10**400")])
def test_non_finite_angles_are_rejected_before_sending(lab_backend, angle) -> None:
    """An integer beyond any float (10**400) is as non-finite (it raised a bare
    ``OverflowError``)."""
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
    ("plain", [0.1, 10**400], "'th' must be a sequence of numbers (100000000000... (401 "
                              "characters) is beyond any float)"),  # a bare OverflowError
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
def test_mistyped_job_tags_are_rejected_before_sending(lab_backend, tags, bell) -> None:
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


def test_run_of_something_that_is_no_circuit_says_what_it_takes(lab_backend, bell) -> None:
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
def test_shots_out_of_range_are_rejected(lab_backend, shots, bell) -> None:
    native = transpile(bell(), lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, shots=shots))
    assert "shots" in message


def test_unknown_option_is_rejected(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    message = _nothing_sent(lab_backend, lambda: lab_backend.run(native, shot=10))
    assert "unknown run option(s) ['shot']; did you mean 'shots'?; known: [" in message


def test_bad_option_values_are_rejected(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    for level in (3, True, 1.5):  # True ran at level 1 (IQ points), as bool is an int
        assert "meas_level" in _nothing_sent(
            lab_backend, lambda level=level: lab_backend.run(native, meas_level=level))
    for seed in (-1, 2**63, 2**70):
        assert "seed_simulator" in _nothing_sent(
            lab_backend, lambda seed=seed: lab_backend.run(native, seed_simulator=seed))
    # an integer beyond any float raised a bare OverflowError (a review's case)
    for option in ("shots", "rep_delay", "timeout", "trace_decimation", "seed_simulator"):
        for huge in (10**400, Fraction(10**400, 3)):
            assert option in _nothing_sent(
                lab_backend, lambda option=option, huge=huge: lab_backend.run(
                    native, **{option: huge}))
            with pytest.raises(InvalidRunInputError, match=option):
                lab_backend.set_options(**{option: huge})


def test_rejections_name_the_option(lab_backend, bell) -> None:
    native = transpile(bell(), lab_backend)
    for options, option in (({"shots": 0}, "shots"), ({"meas_level": 3}, "meas_level"),
                            ({"shotz": 1}, "shotz"), ({"timeout": float("nan")}, "timeout")):
        with pytest.raises(InvalidRunInputError) as info:
            lab_backend.run(native, **options)
        assert info.value.option == option, options
    with pytest.raises(InvalidRunInputError) as info:
        lab_backend.set_options(rep_delay=-1.0)
    assert info.value.option == "rep_delay"


@pytest.mark.parametrize(("option", "value"), [("shots", 2.5), ("shots", True),
                                                ("rep_delay", float("nan")),
                                                ("timeout", float("inf")), ("shots", "100")])
def test_set_options_and_run_share_the_checks(lab_backend, option, value, bell) -> None:
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
                                                                     option, bell) -> None:
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


def test_a_bad_default_that_the_run_overrides_is_no_matter(lab_backend, bell) -> None:
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


def test_pulse_program_is_checked_against_the_rack(lab_backend, bell) -> None:
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


def test_set_options_range_errors_are_run_input_errors(lab_backend) -> None:
    with pytest.raises(InvalidRunInputError, match="shots"):
        lab_backend.set_options(shots=0)
    with pytest.raises(InvalidRunInputError, match="seed_simulator"):
        lab_backend.set_options(seed_simulator=-1)
    assert lab_backend.options.seed_simulator is None


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


def test_run_refuses_none_among_its_items(lab_backend, bell) -> None:
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


def test_set_options_keeps_the_types_a_run_uses(lab_backend) -> None:
    """``meas_level=2.0`` and a numpy integer of shots are kept as the ints a run uses (2.0 was
    kept as a float until 2026-12-07); the defaults are put back after."""
    before = {k: getattr(lab_backend.options, k)
              for k in ("meas_level", "shots", "job_tags", "timeout")}
    tags = ["a"]
    try:
        lab_backend.set_options(meas_level=2.0, shots=np.int64(300), job_tags=tags)
        opts = lab_backend.options
        assert type(opts.meas_level) is int and opts.meas_level == 2
        assert type(opts.shots) is int and opts.shots == 300
        tags.append("b")
        assert opts.job_tags == ["a"]
        # an option changed past set_options is left for run() to name (a review's case: it
        # broke the next set_options of another option with a bare ValueError)
        opts.timeout = "soon"
        lab_backend.set_options(meas_level=1)
        assert opts.meas_level == 1 and opts.timeout == "soon"
    finally:
        lab_backend.set_options(**before)
