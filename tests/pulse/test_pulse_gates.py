"""Pulse gates in the compiler (``labqpu.pulse.gates``): a definition made of the calibrated
pulse plays exactly what the native gate plays, virtual Z and frame changes carry through the
circuit as ``rz`` does, frequency changes are phase-continuous as in the standalone builder
(checked against the builder's own program), and bad definitions or values are refused with
errors that name them. The references are the compiler's native gates and the builder."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from labqpu import pulse
from labqpu.errors import CompilationError, PulseError
from labqpu.pulse.builder import PulseBuilder
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.gates import define_pulse_gate
from labqpu.pulse.timing import TimingConstraints

Q = 1


@pytest.fixture
def builder(channels, snapshot):
    return lambda name="def": PulseBuilder(channels, snapshot, name)


def registry(*gates) -> dict:
    out: dict = {}
    for gate in gates:
        out.setdefault(gate.name, {})[gate.qubits] = gate
    return out


def drive_plays(program, port: int) -> list[tuple]:
    """(start, amp, phase mod 2 pi, freq, samples) of the plays on ``port``, in time order."""
    out = []
    for i in np.flatnonzero(program.play_port == port):
        out.append((int(program.play_start[i]), float(program.play_amp[i]),
                    float(np.mod(program.play_phase_rad[i], 2 * np.pi)),
                    float(program.play_freq_hz[i]),
                    program.waveform(int(program.play_wave[i]))))
    return sorted(out, key=lambda p: p[0])


def same_plays(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for pa, pb in zip(a, b, strict=True):
        assert pa[0] == pb[0] and pa[1] == pb[1] and pa[3] == pb[3]
        assert abs(np.angle(np.exp(1j * (pa[2] - pb[2])))) < 1e-12
        np.testing.assert_array_equal(pa[4], pb[4])


def test_the_calibrated_pulse_as_a_pulse_gate_plays_what_x_plays(builder, channels,
                                                                 snapshot) -> None:
    b = builder()
    b.play(b.calibrated_drag(Q), pulse.drive(Q))
    myx = define_pulse_gate("myx", b, [Q])
    assert myx.parameters == () and myx.duration_samples == 40
    circuits = []
    for use_pulse_gate in (False, True):
        qc = QuantumCircuit(2, 1)
        qc.sx(Q)
        qc.rz(0.7, Q)
        if use_pulse_gate:
            qc.append(myx(), [Q])
        else:
            qc.x(Q)
        qc.rz(-0.3, Q)
        qc.sx(Q)
        qc.measure(Q, 0)
        circuits.append(compile_circuit(qc, snapshot, channels, pulse_gates=registry(myx)))
    port = channels.output(channels.qubits[Q].drive)
    native, custom = (drive_plays(p, port) for p in circuits)
    assert len(native) == 3
    same_plays(native, custom)
    assert circuits[0].duration_samples == circuits[1].duration_samples


def test_shift_phase_in_a_gate_turns_the_frame_for_later_gates_as_rz_does(
        builder, channels, snapshot) -> None:
    phi = Parameter("phi")
    b = builder()
    b.shift_phase(phi, pulse.drive(Q))
    vz = define_pulse_gate("vz", b, [Q])
    h = snapshot.qubits[Q]["drive_handedness"].value
    port = channels.output(channels.qubits[Q].drive)
    for value in (0.4, -2.1):
        phases = []
        for custom in (True, False):
            qc = QuantumCircuit(2)
            qc.sx(Q)
            if custom:
                qc.append(vz(value), [Q])
            else:
                qc.rz(-h * value, Q)  # rz(t) turns the play phase by -h t
            qc.sx(Q)
            program = compile_circuit(qc, snapshot, channels, pulse_gates=registry(vz))
            phases.append([p[2] for p in drive_plays(program, port)])
        assert abs(np.angle(np.exp(1j * (phases[0][1] - phases[1][1])))) < 1e-12
        assert abs(np.angle(np.exp(1j * (phases[0][1] - phases[0][0] - value)))) < 1e-12


def test_a_frequency_change_is_phase_continuous_as_in_the_builder(builder, channels,
                                                                   snapshot) -> None:
    detuning, wait = 3.1e6, 136
    shape = pulse.Gaussian(duration_samples=48, sigma_samples=12, amp=0.2)
    b = builder()
    b.play(shape, pulse.drive(Q))
    b.shift_frequency(detuning, pulse.drive(Q))
    b.play(shape, pulse.drive(Q))
    tone = define_pulse_gate("tone", b, [Q])
    qc = QuantumCircuit(2)
    qc.delay(wait, Q)
    qc.append(tone(), [Q])
    qc.sx(Q)
    program = compile_circuit(qc, snapshot, channels, pulse_gates=registry(tone))
    # The builder's program of the same: the change holds until the gate's end, where the
    # frame goes back to its own frequency, phase-continuously; sx then plays the calibrated
    # pulse with the phase the excursion left (a review found it dropped: sx read 0 where the
    # builder's program read the phase).
    reference = builder("ref")
    reference.delay(wait, pulse.drive(Q))
    reference.play(shape, pulse.drive(Q))
    reference.shift_frequency(detuning, pulse.drive(Q))
    reference.play(shape, pulse.drive(Q))
    reference.delay(tone.duration_samples - 2 * 48, pulse.drive(Q))  # to the gate's end
    reference.shift_frequency(-detuning, pulse.drive(Q))
    reference.play(reference.calibrated_drag(Q, amp=snapshot.qubits[Q]["pi2_amplitude"].value),
                   pulse.drive(Q))
    expected = reference.build()
    port = channels.output(channels.qubits[Q].drive)
    plays = drive_plays(program, port)
    same_plays(plays, drive_plays(expected, port))
    f0 = snapshot.qubits[Q]["frequency_hz"].value - snapshot.qubits[Q][
        "drive_lo_frequency_hz"].value
    assert plays[1][3] == pytest.approx(f0 + detuning)
    assert plays[2][3] == f0 and plays[2][0] == wait + tone.duration_samples
    left = 2 * math.pi * detuning * (tone.duration_samples - 48) / channels.sample_rate_hz
    assert abs(np.angle(np.exp(1j * (plays[2][2] - left)))) < 1e-9


def test_values_bind_by_position_and_bad_values_are_refused(builder, channels,
                                                            snapshot) -> None:
    amp, angle = Parameter("amp"), Parameter("angle")
    b = builder()
    b.play(pulse.Drag(duration_samples=40, sigma_samples=10, beta_samples=0.2, amp=amp,
                      angle_rad=angle), pulse.drive(Q))
    gate = define_pulse_gate("rot", b, [Q], parameters=[angle, amp])
    port = channels.output(channels.qubits[Q].drive)
    qc = QuantumCircuit(2)
    qc.append(gate(0.5, 0.25), [Q])
    play = drive_plays(compile_circuit(qc, snapshot, channels, pulse_gates=registry(gate)),
                       port)[0]
    assert play[1] == 0.25 and play[2] == pytest.approx(0.5)
    too_loud = QuantumCircuit(2, name="loud")
    too_loud.append(gate(0.0, 1.5), [Q])
    with pytest.raises(CompilationError, match=r"'loud'.*'rot'.*DAC full scale"):
        compile_circuit(too_loud, snapshot, channels, pulse_gates=registry(gate))
    unbound = QuantumCircuit(2)
    unbound.append(gate(Parameter("x"), 0.1), [Q])
    with pytest.raises(CompilationError, match=r"pulse gate 'rot' on \(1,\) has an unbound "
                                               r"parameter \(x\)"):
        compile_circuit(unbound, snapshot, channels, pulse_gates=registry(gate))
    elsewhere = QuantumCircuit(3)
    elsewhere.append(gate(0.0, 0.1), [2])
    with pytest.raises(CompilationError, match=r"defined on qubits \[\(1,\)\], not on \(2,\)"):
        compile_circuit(elsewhere, snapshot, channels, pulse_gates=registry(gate))
    with pytest.raises(PulseError, match="takes 2 value"):
        gate(0.1)


def test_bad_definitions_are_refused_naming_the_problem(builder) -> None:
    def define(name, fill, qubits=(Q,), parameters=None, timing=None):
        b = builder()
        fill(b)
        return define_pulse_gate(name, b, qubits, parameters, timing=timing)

    def drag(b, channel=None, start=0, amp=0.1, duration=40):
        channel = channel or pulse.drive(Q)
        if start:
            b.delay(start, channel)
        b.play(pulse.Drag(duration_samples=duration, sigma_samples=10, beta_samples=0.0,
                          amp=amp), channel)

    length = Parameter("n")
    cases = [
        (("x", drag), "taken by a standard or native"),
        (("rx", drag), "taken by a standard or native"),
        (("Rabi", drag), "lower-case identifier"),
        (("g", lambda b: drag(b, pulse.drive(2))), r"drive\(2\), a channel of another qubit"),
        (("g", lambda b: b.measure(Q, 0)), "acquisitions and measure"),
        (("g", lambda b: drag(b, duration=length)), "must be numbers"),
        (("g", lambda b: (b.set_phase(0.3, pulse.drive(Q)), drag(b))), "use shift_phase"),
        (("g", drag, (Q,), [Parameter("a")]), "do not match"),
        (("g", drag, (Q, Q)), "distinct qubits"),
        (("g", drag, (7,)), "distinct qubits"),
        (("g", lambda b: drag(b, start=2), (Q,), None,
          TimingConstraints(pulse_alignment=4)), "timing rules"),
    ]
    for args, message in cases:
        with pytest.raises(PulseError, match=message):
            define(*args)


def test_a_readout_tone_in_a_gate_sets_its_readout_lo(builder, channels, snapshot) -> None:
    b = builder()
    b.play(pulse.Constant(duration_samples=200, amp=0.05), pulse.readout(Q))
    photons = define_pulse_gate("photons", b, [Q])
    qc = QuantumCircuit(2)
    qc.append(photons(), [Q])
    qc.sx(Q)
    program = compile_circuit(qc, snapshot, channels, pulse_gates=registry(photons))
    readout_lo = channels.qubits[Q].readout_lo
    assert readout_lo in program.lo_settings
    f_ro = snapshot.qubits[Q]["readout_frequency_hz"].value - snapshot.qubits[Q][
        "readout_lo_frequency_hz"].value
    plays = drive_plays(program, channels.output(channels.qubits[Q].readout))
    assert plays[0][3] == pytest.approx(f_ro) and not math.isnan(plays[0][2])
