"""Controller-bound sweeps: a program with an amplitude parameter and a table of values is one
upload; the controller binds each point (run parameter ``param_sets``, docs/protocol.md
section 4.7). Counted through the controller's own ``uploads_total``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labqpu.calibration.design import default_design_path, load_design
from labqpu.calibration.experiments import Kit
from labqpu.calibration.runner import working_from_snapshot
from labqpu.drivers.controller import ControllerClient
from labqpu.errors import InvalidRunInputError

Q = 1


def kit_for(backend) -> Kit:
    return Kit(backend, working_from_snapshot(backend.snapshot,
                                              load_design(default_design_path(backend.name))))


def rabi_program(kit: Kit, amplitude: float | str):
    """A drive pulse on qubit Q (amplitude a number, or the parameter ``amp``), then a
    readout into clbit 0."""
    b = kit.builder([Q])
    if isinstance(amplitude, str):
        b.parameter(amplitude, 0.0)
    end = kit.drive(b, Q, 0, amplitude)
    kit.readout(b, Q, end, 0)
    return b.build(num_clbits=1)


def uploads(backend, counter: str = "uploads_total") -> int:
    """The controller's count of programs it validated (new ones: it holds programs by
    content), or of runs with ``counter="runs_total"``."""
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=5.0) as client:
        return int(client.status()[counter])


def p1(counts: dict) -> float:
    return counts.get("1", 0) / sum(counts.values())


def test_a_100_point_rabi_is_one_upload_and_matches_point_by_point_runs(lab_backend) -> None:
    kit = kit_for(lab_backend)
    pi = kit.work.qubits[Q]["pi_amplitude"]
    amps = np.linspace(0.0, 2 * pi, 100)
    shots = 400
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    result = lab_backend.run(rabi_program(kit, "amp"), shots=shots,
                             parameter_binds={"amp": amps}).result()
    # one run of one program (none new if an earlier test left the same one on the controller)
    assert uploads(lab_backend) - before[0] <= 1
    assert uploads(lab_backend, "runs_total") - before[1] == 1
    assert len(result.results) == 100
    swept = np.array([p1(result.get_counts(k)) for k in range(100)])
    bound = [result.results[k].header["metadata"]["parameter_binds"]["amp"] for k in range(100)]
    assert bound == pytest.approx(list(amps))
    # the Rabi oscillation: |0> at 0 and 2 pi, |1> at pi
    assert swept[0] < 0.1 and swept[-1] < 0.15 and swept[np.argmin(abs(amps - pi))] > 0.9
    # the same points run one program each, uploaded one by one
    chosen = [0, 20, 35, 50, 70, 99]
    singles = lab_backend.run([rabi_program(kit, float(amps[k])) for k in chosen],
                              shots=4000).result()
    for i, k in enumerate(chosen):
        reference = p1(singles.get_counts(i))
        sigma = math.sqrt(max(reference * (1 - reference), 0.01) / shots)
        assert abs(swept[k] - reference) < 4 * sigma + 0.01, (k, swept[k], reference)


@pytest.mark.parametrize(("binds", "message"), [
    ({"ampl": [0.1, 0.2]}, "has no parameter 'ampl'; it has ['amp']"),
    ({"amp": [0.1, float("nan")]}, "needs at least one value, all finite"),
    ({"amp": []}, "needs at least one value"),
    ({"amp": [0.1, 5.0]}, "at point 1, amp = 5 drives play"),
    ({"amp": np.zeros(10_001)}, "10001 points; a job runs at most 10000"),
    ([{"amp": [0.1]}, {"amp": [0.2]}], "a list of one mapping per program (1)"),
    ("amp", "must be a mapping (one program)"),
])
def test_a_bad_sweep_is_refused_before_anything_is_sent(lab_backend, binds, message) -> None:
    kit = kit_for(lab_backend)
    program = rabi_program(kit, "amp")
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    with pytest.raises(InvalidRunInputError, match="parameter_binds") as info:
        lab_backend.run(program, shots=100, parameter_binds=binds)
    assert message in str(info.value)
    assert info.value.option == "parameter_binds"
    assert (uploads(lab_backend), uploads(lab_backend, "runs_total")) == before


def test_a_sweep_longer_than_the_controller_binds_runs_as_several_runs(lab_backend) -> None:
    """5000 points where the controller binds 4096 per run: refused before, while the same
    points as 5000 bound programs or a circuit sweep were split. Now one upload, two runs, and
    every point's result in order with its values."""
    kit = kit_for(lab_backend)
    pi = kit.work.qubits[Q]["pi_amplitude"]
    amps = np.resize([0.0, pi], 5000)  # |0>, |1>, |0> ...
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    job = lab_backend.run(rabi_program(kit, "amp"), shots=20, parameter_binds={"amp": amps})
    result = job.result(timeout=300)
    assert uploads(lab_backend) - before[0] <= 1
    assert uploads(lab_backend, "runs_total") - before[1] == 2
    assert len(result.results) == 5000
    assert job.uploads == 1
    metadata = [result.results[k].header["metadata"] for k in range(5000)]
    assert [m["sweep_point"] for m in metadata] == list(range(5000))  # 0 again at 4096 before
    assert [m["parameter_binds"]["amp"] for m in metadata] == pytest.approx(list(amps))
    excited = np.array([p1(result.get_counts(k)) for k in range(5000)])
    assert excited[0::2].mean() < 0.1 and excited[1::2].mean() > 0.9


def test_the_host_and_the_controller_agree_on_full_scale(lab_backend) -> None:
    """A swept amplitude is held to DAC full scale with the controller's rounding allowance
    (1 + 1e-6): a point at 1 + 5e-7 of full scale runs, one at 1 + 1e-5 is refused before
    anything is sent."""
    kit = kit_for(lab_backend)
    program = rabi_program(kit, "amp")
    refs = np.asarray(program.play_amp_ref)
    [play] = np.flatnonzero(refs >= 0)
    peak = program.waveform_peaks[program.play_wave[play]]
    result = lab_backend.run(program, shots=50,
                             parameter_binds={"amp": [(1 + 5e-7) / peak]}).result()
    assert sum(result.get_counts(0).values()) == 50
    with pytest.raises(InvalidRunInputError, match=r"at point 0, amp = .* over DAC full scale"):
        lab_backend.run(program, shots=50, parameter_binds={"amp": [(1 + 1e-5) / peak]})


@pytest.mark.parametrize(("rows", "words"), [
    ([[0.1], [0.1, 0.2]], "param_sets row 1 must be a list of 1 numbers"),
    # a raw client's integer beyond any float (a review's case: a bare OverflowError)
    ([[0.1], [10**400]], "param_sets row 1 entry 0 must be a finite number, got 1000"),
])
def test_the_controller_refuses_a_bad_row(lab_backend, rows, words) -> None:
    """The firmware checks ``param_sets`` itself: a host that sends a bad table gets a failed
    run naming the row, and the controller goes on serving."""
    kit = kit_for(lab_backend)
    arrays, meta = rabi_program(kit, "amp").to_wire()
    with ControllerClient(lab_backend.config.controllers[0].endpoint, timeout_s=10.0) as client:
        program_id = client.upload(arrays, meta)
        run_id = client.run(program_id, 10, params={"param_sets": rows})
        for _ in range(10):  # a held fetch answers at the run's end, or after 1 s
            state, info, _ = client.fetch(run_id, wait_s=1.0)
            if state not in ("queued", "running"):
                break
        assert state == "error", (state, info)
        assert words in info.get("error", ""), info
        assert info.get("error_type") != "OverflowError", info
        assert client.status()["state"] in ("idle", "busy")


def test_the_pulse_builder_sweeps_amplitudes_only(lab_backend) -> None:
    """``assign_parameters(sweep=...)`` leaves an amplitude to the controller; a parameter
    used as a phase, one the program does not have, or one also bound, is a ``PulseError``
    naming it."""
    from qiskit.circuit import Parameter

    from labqpu import pulse
    from labqpu.errors import PulseError

    amp, phi = Parameter("amp"), Parameter("phi")
    with pulse.build(lab_backend, name="rabi") as rabi:
        pulse.play(pulse.calibrated_drag(Q, amp=amp), pulse.drive(Q))
        pulse.shift_phase(phi, pulse.drive(Q))
        pulse.play(pulse.calibrated_drag(Q, amp=amp), pulse.drive(Q))
        pulse.measure(Q, clbit=0)
    program = rabi.assign_parameters({phi: 0.0}, sweep=[amp])
    assert program.param_names == ("amp",)
    assert list(program.play_amp_ref[program.play_amp_ref >= 0]) == [0, 0]
    with pytest.raises(PulseError, match="phi cannot be swept on the controller"):
        rabi.assign_parameters({amp: 0.1}, sweep=[phi])
    with pytest.raises(PulseError, match="has no parameter\\(s\\) theta to sweep"):
        rabi.assign_parameters({phi: 0.0}, sweep=["theta"])
    with pytest.raises(PulseError, match="amp is both bound and swept"):
        rabi.assign_parameters({phi: 0.0, amp: 0.2}, sweep=[amp])  # was: the sweep dropped


def test_a_swept_parameter_without_values_is_refused_before_anything_is_sent(lab_backend):
    from qiskit.circuit import Parameter

    from labqpu import pulse

    amp, amp2 = Parameter("amp"), Parameter("amp2")
    with pulse.build(lab_backend, name="two") as two:
        pulse.play(pulse.calibrated_drag(Q, amp=amp), pulse.drive(Q))
        pulse.play(pulse.calibrated_drag(Q, amp=amp2), pulse.drive(Q))
        pulse.measure(Q, clbit=0)
    program = two.assign_parameters({}, sweep=[amp, amp2])
    texts = [t.get_text() for ax in program.draw().axes for t in ax.texts]
    assert any("amp2 swept (drawn at 1)" in t for t in texts), texts
    before = (uploads(lab_backend), uploads(lab_backend, "runs_total"))
    with pytest.raises(InvalidRunInputError, match=r"parameter\(s\) amp, amp2 have no value"):
        lab_backend.run(program, shots=100)
    with pytest.raises(InvalidRunInputError, match=r"'two'.*amp2 have no value"):
        lab_backend.run(program, shots=100, parameter_binds={amp: [0.1, 0.2]})
    with pytest.raises(InvalidRunInputError, match=r"at position 0 \(one mapping, or None, "
                                                   r"per program: 2\)"):
        lab_backend.run([program, program], shots=100)
    assert (uploads(lab_backend), uploads(lab_backend, "runs_total")) == before
    job = lab_backend.run(program, shots=100,
                          parameter_binds={amp: [0.1, 0.2], amp2: [0.0, 0.1]})
    result = job.result()
    assert len(result.results) == 2
    bundle = result.to_dict()["results"][0]["header"]["reproducibility"]
    assert bundle["program_hash"] == job.programs[0].content_hash  # what was uploaded


def test_calibration_sweeps_fall_back_to_a_program_per_point(lab_backend, monkeypatch) -> None:
    """On a controller that does not announce ``param_sets`` (simulated here by hiding the
    capability), ``Kit.run_sweep`` runs one program per point and gives the same rows."""
    kit = kit_for(lab_backend)
    pi = kit.work.qubits[Q]["pi_amplitude"]
    amps = [0.011, pi, 0.012, 0.999 * pi]
    program = rabi_program(kit, "amp")
    before = uploads(lab_backend, "runs_total")
    bound = kit.run_sweep(program, {"amp": amps}, 300)
    assert uploads(lab_backend, "runs_total") - before == 1
    caps = dict(lab_backend.controller_capabilities(program.controller))
    del caps["param_sets"]
    monkeypatch.setattr(lab_backend, "controller_capabilities", lambda name: caps)
    before = uploads(lab_backend, "runs_total")
    each = kit.run_sweep(program, {"amp": amps}, 300)
    assert uploads(lab_backend, "runs_total") - before == len(amps)
    assert bound.shape == each.shape == (4, 1)
    for rows in (bound, each):  # about |0>, |1>, |0>, |1>
        assert abs(rows[0, 0] - rows[2, 0]) < 0.3 * abs(rows[1, 0] - rows[0, 0])
        assert abs(rows[1, 0] - rows[3, 0]) < 0.3 * abs(rows[1, 0] - rows[0, 0])


def test_a_builder_sweeps_any_parameter_as_one_upload(lab_backend) -> None:
    """``run(builder, parameter_binds=...)`` sweeps a phase and a delay (not amplitudes): two
    half-pi pulses with the second's frame turned by ``phi`` after a wait of ``gap`` samples.
    The 16 points are one upload and one run on the controller; each result carries its values,
    and P(1) follows (1 + cos phi) / 2 (the wait is far shorter than T2)."""
    from qiskit.circuit import Parameter

    from labqpu.pulse import builder as pulse

    phi, gap = Parameter("phi"), Parameter("gap")
    half = lab_backend.snapshot.qubits[Q]["pi2_amplitude"].value
    with pulse.build(lab_backend, name="phase_scan") as scan, pulse.align_sequential():
        pulse.play(pulse.calibrated_drag(Q, amp=half), pulse.drive(Q))
        pulse.delay(gap, pulse.drive(Q))
        pulse.shift_phase(phi, pulse.drive(Q))
        pulse.play(pulse.calibrated_drag(Q, amp=half), pulse.drive(Q))
        pulse.measure(Q, 0)
    phis = np.linspace(0, 2 * np.pi, 16)
    gaps = np.arange(16) * 16
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    result = lab_backend.run(scan, shots=1000, seed_simulator=3,
                             parameter_binds={phi: phis, "gap": gaps}).result()
    assert uploads(lab_backend) - before[0] <= 1
    assert uploads(lab_backend, "runs_total") - before[1] == 1
    assert len(result.results) == 16
    for k in range(16):
        bound = result.results[k].header["metadata"]["parameter_binds"]
        assert bound == pytest.approx({"phi": phis[k], "gap": gaps[k]})
        assert abs(p1(result.get_counts(k)) - (1 + math.cos(phis[k])) / 2) < 0.1, k


@pytest.mark.parametrize(("items", "binds", "message"), [
    (1, None, "is a PulseBuilder with parameter(s) amp, phi: sweep them with parameter_binds"),
    (1, {"phase": [0.1]}, "has no parameter 'phase'; it has ['amp', 'phi']"),
    (1, {"phi": [0.1, math.inf]}, "'phi' needs at least one value, all finite"),
    (1, {"phi": [0.1, 0.2]}, "parameter(s) amp have no values; give them in parameter_binds"),
    (2, {"phi": [0.1], "amp": [0.2]}, "a list of one mapping per program (2)"),
])
def test_a_bad_builder_sweep_is_refused_before_anything_is_sent(lab_backend, items, binds,
                                                                message) -> None:
    from qiskit.circuit import Parameter

    from labqpu.pulse import builder as pulse

    phi, amp = Parameter("phi"), Parameter("amp")
    with pulse.build(lab_backend, name="turn") as turn:
        pulse.shift_phase(phi, pulse.drive(Q))
        pulse.play(pulse.calibrated_drag(Q, amp=amp), pulse.drive(Q))
        pulse.measure(Q, 0)
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    run_input = turn if items == 1 else [turn, rabi_program(kit_for(lab_backend), 0.1)]
    with pytest.raises(InvalidRunInputError, match="parameter_binds") as info:
        lab_backend.run(run_input, shots=100, parameter_binds=binds)
    assert message in str(info.value)
    assert (uploads(lab_backend), uploads(lab_backend, "runs_total")) == before


def test_a_circuit_sweeps_its_parameters_as_qiskit_aer_takes_them(lab_backend) -> None:
    """``run(circuit, parameter_binds={theta: values})``, transpiled at Qiskit's defaults:
    sx, rz(theta), sx as one upload and one run (the points differ only in a phase), each
    result with its value, P(1) = (1 + cos theta) / 2; and a dynamic circuit whose branch
    holds the parameter: x on qubit Q+1 is conditioned on the result, rz(theta) inside the
    branch, so the output follows the conditional phase."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter

    theta = Parameter("theta")
    ramsey = QuantumCircuit(1, 1, name="phase_circuit")
    ramsey.sx(0)
    ramsey.rz(theta, 0)
    ramsey.sx(0)
    ramsey.measure(0, 0)
    native = transpile(ramsey, lab_backend, initial_layout=[Q])
    thetas = np.linspace(0, 2 * np.pi, 8)
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    result = lab_backend.run(native, shots=1000, seed_simulator=4,
                             parameter_binds=[{theta: thetas}]).result()
    assert uploads(lab_backend) - before[0] <= 1
    assert uploads(lab_backend, "runs_total") - before[1] == 1
    for k in range(8):
        assert result.results[k].header["metadata"]["parameter_binds"] == pytest.approx(
            {"theta": thetas[k]})
        assert abs(p1(result.get_counts(k)) - (1 + math.cos(thetas[k])) / 2) < 0.1, k
    # a review's case: the points were named 'phase_circuit-167', ..., so get_counts(circuit)
    # found none; as qiskit-aer's, they keep the circuit's name and the name finds the first
    assert [r.header["name"] for r in result.results] == ["phase_circuit"] * 8
    with pytest.warns(UserWarning, match="multiple results"):
        assert result.get_counts(native) == result.get_counts(0)

    dynamic = QuantumCircuit(2, 2, name="conditional_phase")
    dynamic.x(0)
    dynamic.measure(0, 0)
    dynamic.sx(1)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.rz(theta, 1)
    dynamic.sx(1)
    dynamic.measure(1, 1)
    native = transpile(dynamic, lab_backend, initial_layout=[Q, Q + 1])
    result = lab_backend.run(native, shots=1000, seed_simulator=5,
                             parameter_binds={theta: [0.0, math.pi]}).result()
    flipped = [result.get_counts(k).get("11", 0) / 1000 for k in range(2)]
    assert flipped[0] > 0.85 and flipped[1] < 0.15, flipped


def test_a_bad_circuit_sweep_is_refused_before_anything_is_sent(lab_backend) -> None:
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter

    theta, phi = Parameter("theta"), Parameter("phi")
    qc = QuantumCircuit(1, 1, name="two_angles")
    qc.rz(theta, 0)
    qc.sx(0)
    qc.rz(phi, 0)
    qc.sx(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[Q])
    assert {p.name for p in native.parameters} == {"theta", "phi"}
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    for binds, message in (({theta: [0.1]}, "parameter(s) phi have no values"),
                           ({"psi": [0.1]}, "has no parameter 'psi'"),
                           ({theta: [0.1], phi: [0.1, 0.2]}, "needs as many values")):
        with pytest.raises(InvalidRunInputError, match="parameter_binds of circuit "
                                                       "'two_angles'") as info:
            lab_backend.run(native, shots=100, parameter_binds=binds)
        assert message in str(info.value)
    assert (uploads(lab_backend), uploads(lab_backend, "runs_total")) == before


def test_a_delay_bound_to_a_bad_duration_is_refused_naming_the_point(lab_backend) -> None:
    """Qiskit checks a bound delay only when the compiler reads it, with its own
    ``CircuitError`` that named neither the circuit nor the point: a negative duration, a
    fraction of a sample, inside a branch too."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter

    tau = Parameter("tau")
    qc = QuantumCircuit(1, 1, name="wait")
    qc.x(0)
    qc.delay(2 * tau, 0, unit="dt")
    qc.measure(0, 0)
    nested = QuantumCircuit(1, 1, name="nested")
    nested.measure(0, 0)
    with nested.if_test((nested.clbits[0], 1)):
        nested.delay(tau, 0, unit="dt")
    nested.measure(0, 0)
    before = uploads(lab_backend), uploads(lab_backend, "runs_total")
    for circuit, values, message in (
            (qc, [16, -5], r"circuit 'wait\S*' at parameter_binds \{'tau': -5.0\}: Duration for "
                           r"Delay instruction must be positive. Found -10.0; nothing was sent"),
            (qc, [0.25], r"at parameter_binds \{'tau': 0.25\}: Integer duration is expected"),
            (nested, [16, -16], r"circuit 'nested\S*' at parameter_binds \{'tau': -16.0\}: "
                                r"Duration for Delay instruction must be positive")):
        with pytest.raises(InvalidRunInputError, match=message):
            lab_backend.run(circuit, shots=10, parameter_binds=[{tau: values}])
    with pytest.raises(InvalidRunInputError, match=r"circuit 'wait\S*': Duration for Delay "
                                                   r"instruction must be positive. Found -8.0"):
        lab_backend.run(qc.assign_parameters({tau: -4}), shots=10)
    assert (uploads(lab_backend), uploads(lab_backend, "runs_total")) == before


@pytest.mark.parametrize("unit", ["us", "dt"])
def test_a_delay_sweep_transpiles_at_the_defaults_and_decays_with_t1(lab_backend, unit) -> None:
    """A review's case: ``x; delay(tau); measure``, the way a T1 (or Ramsey) sweep is written,
    did not transpile for the backend at all (Qiskit's scheduling refused the parameterised
    duration). It transpiles at the defaults; bound through ``parameter_binds`` or Qiskit's
    ``BackendSamplerV2``, P(1) falls as exp(-tau / T1) of the qubit the layout chose (within
    0.08: the Target's T1 is a fit, shots 2000)."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter
    from qiskit.primitives import BackendSamplerV2

    tau = Parameter("tau")
    qc = QuantumCircuit(1, 1, name="t1_sweep")
    qc.x(0)
    qc.delay(tau, 0, unit=unit)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend)
    assert native.parameters == {tau}
    (q,) = native.layout.final_index_layout()
    t1 = lab_backend.target.qubit_properties[q].t1
    waits_us = np.array([0.0, 10.0, 30.0])
    values = waits_us if unit == "us" else np.round(waits_us * 1e-6 / lab_backend.dt)
    result = lab_backend.run(native, shots=2000, seed_simulator=3,
                             parameter_binds=[{tau: values}]).result()
    sampled = BackendSamplerV2(backend=lab_backend, options={"seed_simulator": 3}).run(
        [(native, values.reshape(-1, 1))], shots=2000).result()[0].data.c
    for k, wait in enumerate(waits_us):
        for counts in (result.get_counts(k), sampled.get_counts(k)):
            start = p1(result.get_counts(0))
            assert abs(p1(counts) - start * math.exp(-wait * 1e-6 / t1)) < 0.08, (k, counts)


def test_a_qubit_idling_beside_a_bound_delay_is_echoed_as_if_bound_before(lab_backend) -> None:
    """A review's case: a circuit with a parameterised delay skips the scheduling stage, and
    its idle windows were not echoed: qubit 3, in superposition beside an excited qubit 4
    while qubit 0 waits 20 us, read 1 in 0.563 of the shots bound after transpiling, against
    0.300 bound before (the stage's echo). The compiler echoes it now (its own echo, placed
    otherwise than the stage's: within 0.1)."""
    from qiskit import QuantumCircuit, transpile
    from qiskit.circuit import Parameter

    tau = Parameter("tau")
    qc = QuantumCircuit(5, 2)
    qc.x(0)
    qc.h(3)
    qc.x(4)
    qc.barrier()
    qc.delay(tau, 0, unit="us")
    qc.barrier()
    qc.h(3)
    qc.measure(0, 0)
    qc.measure(3, 1)

    def p3(counts: dict) -> float:
        return sum(n for key, n in counts.items() if key[0] == "1") / sum(counts.values())

    after = transpile(qc, lab_backend, initial_layout=list(range(5)))
    bound_after = p3(lab_backend.run(after, parameter_binds=[{tau: [20.0]}], shots=4000,
                                     seed_simulator=1).result().get_counts(0))
    before = transpile(qc.assign_parameters({tau: 20.0}), lab_backend,
                       initial_layout=list(range(5)))
    bound_before = p3(lab_backend.run(before, shots=4000, seed_simulator=1).result().get_counts())
    assert bound_after < 0.45 and abs(bound_after - bound_before) < 0.1, (bound_after,
                                                                          bound_before)
