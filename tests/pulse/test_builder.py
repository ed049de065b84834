"""The pulse builder: placement by alignment, frames, parameters, errors, and running it.

Wiring (shipped lab5): qubit q drives on port q, flux on 5 + q, readout on 10 + q, acquires on
input q; 1 GS/s.
"""

from __future__ import annotations

import math
import pickle
import re
import tracemalloc
from decimal import Decimal

import numpy as np
import pytest
from numpy.testing import assert_allclose
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from labqpu import pulse
from labqpu.errors import PulseError
from labqpu.pulse import (
    Constant,
    Gaussian,
    PulseBuilder,
    acquire_channel,
    drive,
    flux,
    readout,
)
from labqpu.pulse.compiler import compile_circuit

FS = 1.0e9


@pytest.fixture
def b(channels, snapshot) -> PulseBuilder:
    return PulseBuilder(channels, snapshot, name="t")


def plays(program, port: int) -> list[tuple[int, int, float, float, float]]:
    """(start, length, amp, phase, frequency) of the plays on ``port``."""
    out = []
    for i in np.flatnonzero(program.play_port == port):
        w = program.play_wave[i]
        out.append((int(program.play_start[i]), len(program.waveform(w)),
                    float(program.play_amp[i]), float(program.play_phase_rad[i]),
                    float(program.play_freq_hz[i])))
    return out


def starts(program, port: int) -> list[int]:
    return [p[0] for p in plays(program, port)]


def cal(snapshot, q: int, name: str) -> float:
    return snapshot.qubits[q][name].value


def test_align_left_starts_each_channel_at_zero_and_chains_on_one_channel(b) -> None:
    b.play(Constant(duration_samples=10, amp=0.1), drive(0))
    b.play(Constant(duration_samples=30, amp=0.1), drive(1))
    b.play(Constant(duration_samples=5, amp=0.1), drive(0))
    p = b.build()
    assert starts(p, 0) == [0, 10]
    assert starts(p, 1) == [0]
    assert p.duration_samples == 30


def test_align_right_ends_flush_with_the_block(b) -> None:
    with b.align_right():
        b.play(Constant(duration_samples=10, amp=0.1), drive(0))
        b.play(Constant(duration_samples=5, amp=0.1), drive(0))
        b.play(Constant(duration_samples=40, amp=0.1), drive(1))
    p = b.build()
    assert starts(p, 0) == [25, 35]
    assert starts(p, 1) == [0]
    assert p.duration_samples == 40


def test_align_sequential_ignores_channels(b) -> None:
    with b.align_sequential():
        b.play(Constant(duration_samples=10, amp=0.1), drive(0))
        b.play(Constant(duration_samples=20, amp=0.1), drive(1))
        b.delay(7, drive(2))
        b.play(Constant(duration_samples=3, amp=0.1), flux(0))
    p = b.build()
    assert starts(p, 0) == [0]
    assert starts(p, 1) == [10]
    assert starts(p, 5) == [37]
    assert p.duration_samples == 40


def test_nested_block_is_placed_as_one_unit(b) -> None:
    b.play(Constant(duration_samples=50, amp=0.1), drive(1))
    with b.align_sequential():
        b.play(Constant(duration_samples=10, amp=0.1), drive(0))
        b.play(Constant(duration_samples=10, amp=0.1), drive(1))  # waits for drive(1) at 50
    p = b.build()
    # The sequential block uses drive(0) and drive(1): it starts after drive(1) is free.
    assert starts(p, 0) == [50]
    assert starts(p, 1) == [0, 60]


def test_barrier_lines_up_its_channels_only(b) -> None:
    b.play(Constant(duration_samples=30, amp=0.1), drive(0))
    b.barrier(drive(0), drive(1))
    b.play(Constant(duration_samples=10, amp=0.1), drive(1))
    b.play(Constant(duration_samples=10, amp=0.1), drive(2))
    b.barrier()
    b.play(Constant(duration_samples=4, amp=0.1), drive(2))
    p = b.build()
    assert starts(p, 1) == [30]
    assert starts(p, 2) == [0, 40]


def test_phase_frames_apply_from_their_place_on(b) -> None:
    f0 = cal(b.snapshot, 0, "frequency_hz") - cal(b.snapshot, 0, "drive_lo_frequency_hz")
    g = Gaussian(duration_samples=40, sigma_samples=10, amp=0.2, angle_rad=0.1)
    b.play(g, drive(0))
    b.shift_phase(0.5, drive(0))
    b.play(g, drive(0))
    b.shift_phase(0.25, drive(0))
    b.play(g, drive(0))
    b.set_phase(-1.0, drive(0))
    b.play(g, drive(0))
    p = b.build()
    got = plays(p, 0)
    assert [s for s, *_ in got] == [0, 40, 80, 120]
    assert_allclose([ph for *_, ph, _ in got], [0.1, 0.6, 0.85, -0.9], atol=1e-12)
    assert_allclose([f for *_, f in got], [f0] * 4, rtol=0, atol=1e-6)
    assert len(p.waveform(0)) == 40 and p.num_waveforms == 1  # one envelope, shared


def test_frequency_change_keeps_the_carrier_phase_continuous(b) -> None:
    """Render both plays as the controller does (exp(i (2 pi f t + phase)), t absolute) and
    check the carrier phase at the boundary: it must not jump."""
    df = 3.0e6
    g = Constant(duration_samples=100, amp=0.1)
    b.play(g, drive(0))
    b.shift_frequency(df, drive(0))
    b.play(g, drive(0))
    p = b.build()
    (s0, n0, _, ph0, f0), (s1, _, _, ph1, f1) = plays(p, 0)
    assert f1 - f0 == pytest.approx(df)
    t = s1  # boundary sample
    before = 2 * math.pi * f0 * t / FS + ph0  # first play's carrier continued to t
    after = 2 * math.pi * f1 * t / FS + ph1
    assert math.remainder(after - before, 2 * math.pi) == pytest.approx(0, abs=1e-9)
    assert s1 == s0 + n0


def test_set_frequency_is_the_if_and_acquire_follows_the_readout_frame(b) -> None:
    b.set_frequency(-20e6, drive(2))
    b.play(Constant(duration_samples=8, amp=0.1), drive(2))
    b.shift_frequency(1.5e6, readout(1))
    b.measure(1, 0)
    p = b.build()
    assert plays(p, 2)[0][4] == -20e6
    ro_if = cal(b.snapshot, 1, "readout_frequency_hz") - cal(
        b.snapshot, 1, "readout_lo_frequency_hz")
    assert p.acq_freq_hz.tolist() == [pytest.approx(ro_if + 1.5e6)]
    assert plays(p, 11)[0][4] == pytest.approx(ro_if + 1.5e6)


def test_measure_waits_for_the_qubits_pulses_and_sets_both_los(b) -> None:
    b.play(b.calibrated_drag(3), drive(3))
    b.measure(3, 2)
    p = b.build()
    dur = round(cal(b.snapshot, 3, "readout_duration_s") * FS)
    assert p.acq_start.tolist() == [40] and p.acq_duration.tolist() == [dur]
    assert p.acq_qubit.tolist() == [3] and p.acq_clbit.tolist() == [2]
    assert p.num_clbits == 3
    wiring = b.channels.qubits[3]
    assert set(p.lo_settings) == {wiring.drive_lo, wiring.readout_lo}


def test_calibrated_x_and_measure_equal_the_compiled_circuit(b, snapshot, channels) -> None:
    """The same experiment written twice: identical program content (content hash)."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    compiled = compile_circuit(qc, snapshot, channels)
    b.play(b.calibrated_drag(0), drive(0))
    b.measure(0, 0)
    built = b.build()
    assert built.content_hash == compiled.content_hash
    assert built == compiled


def test_a_qubit_the_device_lacks_and_a_nan_frequency_are_named_as_such(b) -> None:
    """``measure(9, 0)`` on lab5 once said qubit 9 had no calibrated readout duration, and a NaN
    frequency was "beyond the Nyquist frequency"; each is now said as it is."""
    with pytest.raises(PulseError, match=r"qubit 9: lab5 has qubits 0\.\.4"):
        b.measure(9, 0)
    with pytest.raises(PulseError, match=r"set_frequency on drive\(0\) must be finite, got nan"):
        b.set_frequency(math.nan, drive(0))
    b.set_frequency(1e308, drive(0))  # finite alone, not once shifted
    b.shift_frequency(1e308, drive(0))
    b.play(Constant(duration_samples=16, amp=0.1), drive(0))
    with pytest.raises(PulseError, match=r"frequency inf Hz must be a finite number"):
        b.assign_parameters({})


def test_an_absolute_frequency_is_said_to_be_one(b) -> None:
    """A review's case: ``set_frequency(5.8e9, ...)``, the absolute frequency of qiskit.pulse,
    was refused as beyond the Nyquist frequency without a word that frames hold IFs."""
    b.set_frequency(5.8e9, drive(0))
    b.play(Constant(duration_samples=16, amp=0.1), drive(0))
    with pytest.raises(PulseError, match=r"beyond the Nyquist frequency 5\S+ Hz; frame "
                                         r"frequencies are IFs, relative to the channel's LO"):
        b.assign_parameters({})


def test_parameters_bind_everywhere_and_the_binding_is_recorded(b) -> None:
    amp, phase, freq, dur, wait = (Parameter(n) for n in ("amp", "phase", "freq", "dur", "wait"))
    b.delay(wait, drive(0))
    b.shift_phase(phase, drive(0))
    b.set_frequency(freq, drive(0))
    b.play(Constant(duration_samples=dur, amp=amp), drive(0))
    b.acquire(dur, 0, clbit=0)
    assert b.parameters == {amp, phase, freq, dur, wait}
    p = b.assign_parameters({amp: 0.3, phase: 1.25, "freq": 40e6, dur: 64.0, wait: 16})
    f_cal = cal(b.snapshot, 0, "frequency_hz") - cal(b.snapshot, 0, "drive_lo_frequency_hz")
    continuity = 2 * math.pi * (f_cal - 40e6) * 16 / FS  # set_frequency at sample 16
    assert plays(p, 0) == [(16, 64, 0.3, pytest.approx(1.25 + continuity, abs=1e-9), 40e6)]
    assert p.acq_duration.tolist() == [64]
    assert p.header["metadata"]["parameters"]["amp"] == 0.3
    # The builder is unchanged: another binding gives another program.
    q = b.assign_parameters({amp: 0.1, phase: 0.0, freq: 0.0, dur: 8, wait: 0})
    assert plays(q, 0) == [(0, 8, 0.1, 0.0, 0.0)]
    assert p.content_hash != q.content_hash


def test_a_parameterised_builder_goes_to_another_process_whole(b) -> None:
    """A review: ``pickle.dumps(builder)`` raised "cannot pickle 'mappingproxy' object", so a
    builder could not be handed to a worker process (multiprocessing, joblib)."""
    amp = Parameter("amp")
    b.play(Constant(duration_samples=32, amp=amp), drive(1))
    b.acquire(64, 1, clbit=0)
    again = pickle.loads(pickle.dumps(b))
    assert again.channels == b.channels and again.snapshot == b.snapshot
    assert dict(again.channels.qubits) == dict(b.channels.qubits)
    with pytest.raises(TypeError):  # read-only, as the original's
        again.channels.qubits[0] = None
    assert again.assign_parameters({"amp": 0.25}).content_hash == \
        b.assign_parameters({amp: 0.25}).content_hash


def test_unbound_parameter_is_an_error_naming_it(b) -> None:
    amp, wait = Parameter("amp"), Parameter("wait_samples")
    b.delay(wait, drive(0))
    b.play(Constant(duration_samples=8, amp=amp), drive(0))
    with pytest.raises(PulseError, match="wait_samples") as info:
        b.assign_parameters({amp: 0.5})
    assert info.value.parameter == "wait_samples"
    with pytest.raises(PulseError, match="amp"):
        b.build()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_errors_naming_the_parameter(b, bad: float) -> None:
    phase = Parameter("theta")
    b.shift_phase(phase, drive(0))
    b.play(Constant(duration_samples=8, amp=0.1), drive(0))
    with pytest.raises(PulseError, match="theta"):
        b.assign_parameters({phase: bad})


def test_another_parameter_of_the_same_name_is_refused_not_ignored(b) -> None:
    """Binding ``Parameter("amp")`` made anew was ignored (Qiskit tells Parameters apart by
    identity), and the error then said amp was left unbound."""
    amp = Parameter("amp")
    b.play(Constant(duration_samples=8, amp=amp), drive(0))
    with pytest.raises(PulseError, match=r"the Parameter 'amp' given is another Parameter of "
                                         r"that name than the program's"):
        b.assign_parameters({Parameter("amp"): 0.2})
    assert b.assign_parameters({"amp": 0.2}).play_amp.tolist() == [0.2]
    assert b.assign_parameters({amp: 0.3}).play_amp.tolist() == [0.3]


@pytest.mark.parametrize("not_a_backend", ["lab5", 5, object()])
def test_a_builder_on_something_that_is_not_a_backend_says_so(not_a_backend) -> None:
    """``pulse.build("lab5")`` was an AttributeError ('str' object has no attribute
    'channels')."""
    with pytest.raises(PulseError, match=r"a pulse builder needs a labqpu backend "
                                         r"\(LabProvider\(\)\.backend\(\)\) or, in a "
                                         r"calibration node, its kit; got "), \
            pulse.build(not_a_backend):
        pass


@pytest.mark.parametrize("bad", [True, np.True_, "0.3", b"0.3"])
def test_a_bound_value_that_is_text_or_a_truth_value_is_refused(b, bad) -> None:
    """``float()`` read them: ``{amp: True}`` played at full scale, ``{amp: "0.3"}`` at 0.3,
    where every other entry point refuses them."""
    amp = Parameter("amp")
    b.play(Constant(duration_samples=8, amp=amp), drive(0))
    with pytest.raises(PulseError, match=r"constant amp: parameter 'amp' is bound to .*, not a "
                                         r"real number"):
        b.assign_parameters({amp: bad})
    assert b.assign_parameters({amp: np.float32(0.25)}).play_amp.tolist() == [0.25]


@pytest.mark.parametrize(("call", "what"), [
    (lambda b: b.delay("40", drive(0)), "delay on drive(0)"),
    (lambda b: b.delay(True, drive(0)), "delay on drive(0)"),
    (lambda b: b.shift_phase("0.5", drive(0)), "shift_phase on drive(0)"),
    (lambda b: b.set_phase(None, drive(0)), "set_phase on drive(0)"),
    (lambda b: b.set_frequency("5e6", drive(0)), "set_frequency on drive(0)"),
    (lambda b: b.shift_frequency(1j, drive(0)), "shift_frequency on drive(0)"),
    (lambda b: b.delay(np.array([8, 8]), drive(0)), "delay on drive(0)"),
    (lambda b: b.acquire("400", 0, 0), "acquire on qubit 0"),
])
def test_a_value_that_is_not_a_number_is_refused_where_it_is_given(b, call, what) -> None:
    """A string (``"40"``), a bool, None, a complex number or an array of several values as a
    duration, phase or frequency is refused at the call, naming the instruction and channel;
    a string was read as a number (``float("40")``) before. Numpy numbers, 0-d arrays,
    ``Decimal`` and Parameters are taken."""
    with pytest.raises(PulseError, match=rf"{re.escape(what)} must be a real number"):
        call(b)
    b.delay(np.int64(8), drive(0))
    b.delay(np.array(4), drive(0))
    b.delay(Decimal(4), drive(0))
    b.shift_phase(np.float32(0.5), drive(0))
    b.play(Constant(duration_samples=8, amp=0.1), drive(0))
    assert b.build().play_start.tolist() == [16]


@pytest.mark.parametrize("call", [
    lambda b: b.shift_phase(float("nan"), drive(0)),
    lambda b: b.set_phase(np.float64("inf"), drive(0)),
    lambda b: b.set_frequency(float("-inf"), drive(0)),
    lambda b: b.delay(float("inf"), drive(0)),
    lambda b: b.acquire(float("nan"), 0, 0),
    lambda b: b.shift_phase(10**400, drive(0)),
    lambda b: b.delay(-10**400, drive(0)),
])
def test_a_non_finite_value_is_refused_where_it_is_given(b, call) -> None:
    """A literal NaN phase got past build() into ``play_phase_rad`` (``run()`` refused it
    later); a NaN amplitude was refused where the shape was made. An integer beyond any float
    (10**400) raised a bare ``OverflowError``."""
    with pytest.raises(PulseError, match=r"on (drive\(0\)|qubit 0) must be finite, got"):
        call(b)


def test_duration_off_the_sample_grid_is_an_error(b) -> None:
    wait = Parameter("wait")
    b.delay(wait, drive(0))
    b.play(Constant(duration_samples=8, amp=0.1), drive(0))
    with pytest.raises(PulseError, match="whole number of samples"):
        b.assign_parameters({wait: 10.5})
    assert b.assign_parameters({wait: 10.0}).play_start.tolist() == [10]


def test_unknown_parameter_names_are_refused(b) -> None:
    b.play(Constant(duration_samples=8, amp=0.1), drive(0))
    with pytest.raises(PulseError, match="no parameter"):
        b.assign_parameters({"amp": 0.2})


def test_two_parameters_of_one_name_are_refused_where_the_second_is_given(b) -> None:
    """A review's case: two ``Parameter("amp")`` on two qubits were one entry of a sweep's
    table, and ``parameter_binds`` gave both plays the value of one (q0 read 0 where its pi
    pulse was bound); a pulse gate's positional values went to either at random. Qiskit refuses
    the same in a circuit; so does the builder, and nothing of the second is added."""
    first, second = Parameter("amp"), Parameter("amp")
    b.play(pulse.Constant(duration_samples=8, amp=first), drive(0))
    b.play(pulse.Constant(duration_samples=8, amp=first), drive(1))  # the same one again
    with pytest.raises(PulseError, match=r"another Parameter named 'amp' is in it already") \
            as info:
        b.shift_phase(second * 2, drive(1))
    assert info.value.parameter == "amp"
    for i in range(8):  # a review's case: the refused call's other Parameter was kept (when
        # a set's order put it first)
        with pytest.raises(PulseError, match="another Parameter named 'amp'"):
            b.shift_phase(Parameter(f"other{i}") + second, drive(1))
    with pytest.raises(PulseError, match="another Parameter named 'x'"):
        b.play(pulse.Constant(duration_samples=8, amp=Parameter("x"), angle_rad=Parameter("x")),
               drive(1))  # two new ones of one name
    assert b.parameters == {first}
    program = b.assign_parameters({first: 0.25})
    assert program.play_amp.tolist() == [0.25, 0.25]


def test_over_full_scale_and_beyond_nyquist_are_refused(b) -> None:
    b.play(pulse.Drag(duration_samples=40, sigma_samples=10, beta_samples=30.0, amp=1.0),
           drive(0))
    with pytest.raises(PulseError, match="full scale"):
        b.build()
    c = PulseBuilder(b.channels, b.snapshot)
    c.set_frequency(0.6e9, drive(0))
    c.play(Constant(duration_samples=8, amp=0.1), drive(0))
    with pytest.raises(PulseError, match="Nyquist"):
        c.build()


def test_bad_channels_are_refused(b) -> None:
    with pytest.raises(PulseError, match=r"qubits 0\.\.4"):
        b.play(Constant(duration_samples=8), drive(9))
    with pytest.raises(PulseError, match="drive or flux or readout"):
        b.play(Constant(duration_samples=8), acquire_channel(0))
    with pytest.raises(PulseError, match="pulse shape"):
        b.play(np.ones(8), drive(0))


def test_module_level_functions_need_an_active_builder(channels, snapshot) -> None:
    with pytest.raises(PulseError, match="no active pulse builder"):
        pulse.play(Constant(duration_samples=8), drive(0))
    with pulse.build(channels=channels, snapshot=snapshot, name="m") as m:
        with pulse.align_right():
            pulse.play(Constant(duration_samples=8, amp=0.1), drive(0))
            pulse.delay(20, drive(1))
        pulse.shift_phase(0.5, drive(0))
        pulse.play(Constant(duration_samples=8, amp=0.1), drive(0))
    p = m.build()
    assert p.header["name"] == "m"
    assert plays(p, 0) == [(12, 8, 0.1, 0.0, pytest.approx(plays(p, 0)[0][4])),
                           (20, 8, 0.1, 0.5, pytest.approx(plays(p, 0)[0][4]))]


def test_rabi_sweep_runs_on_the_simulator(lab_backend) -> None:
    """Amplitude 0 leaves the qubit in |0>; the calibrated pi amplitude flips it."""
    amp = Parameter("amp")
    with pulse.build(lab_backend, name="rabi") as rabi:
        pulse.play(pulse.calibrated_drag(0, amp=amp), drive(0))
        pulse.measure(0, 0)
    pi_amp = lab_backend.snapshot.qubits[0]["pi_amplitude"].value
    programs = [rabi.assign_parameters({amp: a}) for a in (0.0, pi_amp)]
    result = lab_backend.run(programs, shots=400, seed_simulator=7).result()
    p1 = [result.get_counts(i).get("1", 0) / 400 for i in range(2)]
    assert p1[0] < 0.15
    assert p1[1] > 0.8


def test_two_currents_asked_of_one_flux_bias_channel_are_refused(shared_bias_config,
                                                                  snapshot) -> None:
    """A pulse program sets every calibrated flux bias, as a circuit does: two qubits of one
    channel asking different currents are refused, naming the qubit and the channel."""
    b = PulseBuilder(shared_bias_config.channels, snapshot, name="t")
    b.play(Constant(duration_samples=8, amp=0.1), drive(3))
    with pytest.raises(PulseError, match="qubit 1: snapshot 1 asks for incompatible settings "
                                         "of a shared source: flux-bias channel flux_bias:1 is "
                                         "asked for two currents") as info:
        b.build()
    assert info.value.parameter == "flux_bias_a"


@pytest.mark.parametrize("samples", [2**26, 10**12])
def test_a_shape_longer_than_any_waveform_is_refused_before_its_samples_are_made(
        b, samples) -> None:
    """A builder shape of 2**26 samples took 3.8 s and 1.2 GB before the program's length
    was refused; one of 10**12 raised a bare MemoryError. Both are refused by their length,
    naming it and the limit, before any sample is made."""
    b.play(Constant(duration_samples=samples, amp=0.1), drive(0))
    tracemalloc.start()
    try:
        with pytest.raises(PulseError, match=f"constant: a {samples}-sample pulse is longer "
                                             "than the 8388608 samples a waveform may take"):
            b.build()
        assert tracemalloc.get_traced_memory()[1] < 16 << 20
    finally:
        tracemalloc.stop()
