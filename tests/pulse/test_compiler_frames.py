"""``compile_circuit(circuit, snapshot, channels)``: frames, waveforms, program data, errors.

Expected numbers are computed by hand from the shipped snapshot (read as plain JSON) and the
shipped wiring: qubit q drives on controller port q, its flux line is port 5 + q, its readout
port 10 + q, its acquisition input q; flux-bias channel q + 1 of ``flux_bias``. At 1 GS/s the
shipped durations are 40 samples (sx/x), 32 (cz 0-1), 34 (other edges), 1000 (readout).

Virtual-Z sign convention (read from ``labqpu/pulse/compiler.py``): ``rz(theta)`` on qubit q
turns the axis of every later drive pulse on q by ``-theta`` (Qiskit's ``ShiftPhase(-theta)``
convention). A play phase phi turns the axis by ``h phi``, h = q's ``drive_handedness``, so
later plays carry phase ``-h sum(theta)`` and sy plays a quarter turn ``h pi/2`` ahead of sx.
The shipped snapshot measured h = -1 on every qubit. A cz on pair (a, b), a < b, subtracts
``cz_phase_a_rad`` from a's play phase and ``cz_phase_b_rad`` from b's, whatever h (the
calibration measures them as play phases). Phases are compared modulo 2 pi.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter

from labqpu.backend.gates import SYGate
from labqpu.errors import BackendPropertyError, CompilationError
from labqpu.pulse import Constant, PulseBuilder, drive
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.kernels import flat_top, gaussian_drag
from labqpu.store import Snapshot, SnapshotBuilder

FS = 1.0e9

#: What the simulated controller requires of an ``upload`` (firmware_sim/executor.py).
WIRE_DTYPES = {
    "play_port": np.int32, "play_start": np.int64, "play_wave": np.int32,
    "play_amp": np.float64, "play_amp_ref": np.int32, "play_phase_rad": np.float64,
    "play_freq_hz": np.float64, "wave_offset": np.int64, "wave_data": np.complex64,
    "acq_port": np.int32, "acq_start": np.int64, "acq_duration": np.int64,
    "acq_freq_hz": np.float64, "param_values": np.float64,
    # wire protocol 3: feed-forward (empty or neutral for a compiled circuit)
    "play_block": np.int32, "block_acq": np.int32, "block_value": np.int32,
    "shift_port": np.int32, "shift_start": np.int64, "shift_phase_rad": np.float64,
    "shift_block": np.int32, "acq_disc_axis": np.complex128, "acq_disc_threshold": np.float64,
}


def derived(store, snapshot, edit):
    return store.commit(edit(SnapshotBuilder.from_snapshot(snapshot)).build_document())


def same_angle(a: float, b: float) -> bool:
    return abs(np.exp(1j * a) - np.exp(1j * b)) < 1e-9


# ----------------------------------------------------------------- virtual Z


def with_handedness(store, snapshot, signs: dict[int, int]):
    """A snapshot derived from ``snapshot`` with these qubits' drive handedness."""
    def edit(b):
        for q, h in signs.items():
            b.set_qubit(q, "drive_handedness", h, "manual")
        return b
    return derived(store, snapshot, edit)


def test_shipped_snapshot_measured_the_simulated_mixer_as_left_handed(export, rq):
    assert [rq(export, q, "drive_handedness") for q in range(5)] == [-1] * 5


@pytest.mark.parametrize("h", [+1, -1])
def test_rz_shifts_later_plays_on_its_qubit_only(store, snapshot, channels, h, plays):
    snap = with_handedness(store, snapshot, {0: h, 1: -h})
    theta = 0.7
    qc = QuantumCircuit(2)
    qc.sx(0)
    qc.sx(1)
    qc.rz(theta, 0)
    qc.sx(0)
    qc.sx(1)
    prog = compile_circuit(qc, snap, channels, scheduling_method="asap")
    q0, q1 = plays(prog, 0), plays(prog, 1)
    assert [p[0] for p in q0] == [0, 40]
    assert same_angle(q0[0][3], 0.0)
    assert same_angle(q0[1][3], -h * theta)
    assert not same_angle(q0[1][3], h * theta)
    assert all(same_angle(p[3], 0.0) for p in q1)


@pytest.mark.parametrize("h", [+1, -1])
def test_two_rz_add(store, snapshot, channels, h, plays):
    snap = with_handedness(store, snapshot, {0: h})
    qc = QuantumCircuit(1)
    qc.rz(0.3, 0)
    qc.rz(1.1, 0)
    qc.x(0)
    prog = compile_circuit(qc, snap, channels)
    (play,) = plays(prog, 0)
    assert same_angle(play[3], -h * 1.4)


@pytest.mark.parametrize("h", [+1, -1])
def test_sy_axis_is_a_quarter_turn_ahead_of_sx_in_either_handedness(store, snapshot, channels,
                                                                     h, plays):
    """sy = rz(-pi/2) sx rz(pi/2): its play phase is sx's after rz(-pi/2), i.e. + h pi/2."""
    snap = with_handedness(store, snapshot, {2: h})
    sy, equivalent = QuantumCircuit(3), QuantumCircuit(3)
    sy.rz(0.4, 2)
    sy.append(SYGate(), [2])
    equivalent.rz(0.4, 2)
    equivalent.rz(-np.pi / 2, 2)
    equivalent.sx(2)
    (play_sy,) = plays(compile_circuit(sy, snap, channels), 2)
    (play_eq,) = plays(compile_circuit(equivalent, snap, channels), 2)
    assert same_angle(play_sy[3], h * (-0.4 + np.pi / 2))
    assert same_angle(play_sy[3], play_eq[3])


@pytest.mark.parametrize("value", [0, 2, -0.5, "left"])
def test_a_handedness_other_than_plus_or_minus_one_is_refused_naming_it(snapshot, channels,
                                                                        value):
    """The store refuses such a value on commit; one already stored is refused at compile."""
    document = SnapshotBuilder.from_snapshot(snapshot).build_document()
    document["qubits"]["3"]["drive_handedness"]["value"] = value
    bad = Snapshot.from_document(document, snapshot_id=99)
    qc = QuantumCircuit(4)
    qc.rz(0.1, 3)
    with pytest.raises(CompilationError, match=r"qubit 3: drive_handedness") as caught:
        compile_circuit(qc, bad, channels)
    assert caught.value.qubits == (3,)


@pytest.mark.parametrize(("section", "key", "name", "value", "words"), [
    ("qubits", "0", "pulse_duration_s", 0.1,
     r"qubit 0 pulse \(pulse_duration_s, pulse_sigma_s, drag_beta\): a 1000\d+-sample pulse is "
     r"longer than the 8388608 samples a waveform may take"),
    ("pairs", "0-1", "cz_rise_s", None,
     r"cz on \(0, 1\) \(cz_duration_s, cz_rise_s\): rise time .* must leave at least one flat "
     r"sample"),
])
def test_a_stored_value_no_waveform_has_is_refused_at_compile_naming_it(
        snapshot, channels, section, key, name, value, words) -> None:
    """The store refuses these on commit (``labqpu.store.physics``); one stored before that
    check is refused at compile, naming the pulse and its calibration values, before any
    sample is allocated (a 0.1 s pulse once took 1.9 GB and 8.6 s per run(), a cz_rise_s
    that leaves nothing flat raised a bare ValueError)."""
    document = SnapshotBuilder.from_snapshot(snapshot).build_document()
    entry = document[section][key]
    entry[name]["value"] = value if value is not None else entry["cz_duration_s"]["value"] / 2
    bad = Snapshot.from_document(document, snapshot_id=99)
    qc = QuantumCircuit(2)
    if section == "qubits":
        qc.x(0)
    else:
        qc.cz(0, 1)
    with pytest.raises(CompilationError, match=words):
        compile_circuit(qc, bad, channels)


@pytest.mark.parametrize("qubit", [0, 3])
def test_two_currents_asked_of_one_flux_bias_channel_are_refused_naming_them(
        shared_bias_config, snapshot, qubit) -> None:
    """Two qubits wired to one flux-bias channel with different calibrated currents: the
    channel was set to the last qubit's current, and the other qubit played at a wrong flux,
    its counts wrong without an error (an x on qubit 0 gave '1' 3 times in 1000). Refused like a
    shared LO asked for two settings, whichever qubits the circuit uses: the channel carries
    one current for the whole device."""
    channels = shared_bias_config.channels
    qc = QuantumCircuit(5, 1)
    qc.x(qubit)
    qc.measure(qubit, 0)
    with pytest.raises(CompilationError, match=r"qubit 1: snapshot 1 asks for two currents on a "
                                               r"shared flux-bias channel: flux-bias channel "
                                               r"flux_bias:1 is asked for two currents"):
        compile_circuit(qc, snapshot, channels)


def test_a_shared_channel_carries_the_drivable_qubits_current(shared_bias_config,
                                                              snapshot) -> None:
    """Qubits 0 and 1 share a channel and qubit 1 cannot be driven (no pi amplitude) with a
    current of its own: the channel carries qubit 0's, and a circuit on qubit 0 compiles (a
    first version of setting every bias refused it)."""
    document = SnapshotBuilder.from_snapshot(snapshot).build_document()
    del document["qubits"]["1"]["pi_amplitude"]
    lacking = Snapshot.from_document(document, snapshot_id=98)
    qc = QuantumCircuit(5, 1)
    qc.x(0)
    qc.measure(0, 0)
    for program in (compile_circuit(qc, lacking, shared_bias_config.channels),
                    _builder_program(shared_bias_config.channels, lacking)):
        assert program.flux_bias_a[shared_bias_config.qubits[0].flux_bias] == \
            lacking.qubits[0]["flux_bias_a"].value
        assert len(program.flux_bias_a) == 4  # five qubits, one channel shared


def _builder_program(channels, snapshot):
    b = PulseBuilder(channels, snapshot, name="t")
    b.play(Constant(duration_samples=8, amp=0.1), drive(0))
    return b.build()


def test_one_current_asked_of_a_shared_flux_bias_channel_compiles(shared_bias_config,
                                                                 snapshot) -> None:
    """Qubits sharing a flux-bias channel whose calibration asks the same current compile."""
    document = SnapshotBuilder.from_snapshot(snapshot).build_document()
    document["qubits"]["1"]["flux_bias_a"]["value"] = document["qubits"]["0"]["flux_bias_a"][
        "value"]
    same = Snapshot.from_document(document, snapshot_id=99)
    qc = QuantumCircuit(5, 1)
    qc.x(1)
    qc.measure(1, 0)
    program = compile_circuit(qc, same, shared_bias_config.channels)
    assert program.flux_bias_a[shared_bias_config.qubits[0].flux_bias] == \
        same.qubits[0]["flux_bias_a"].value


@pytest.mark.parametrize("h", [+1, -1])
def test_cz_phase_corrections_on_both_qubits(store, snapshot, channels, export, h, rp, plays):
    snapshot = with_handedness(store, snapshot, {0: h, 1: h})
    pa = rp(export, 0, 1, "cz_phase_a_rad")
    pb = rp(export, 0, 1, "cz_phase_b_rad")
    qc = QuantumCircuit(3)
    qc.sx(0)
    qc.sx(1)
    qc.sx(2)
    qc.cz(1, 0)  # argument order must not matter: a is the lower qubit of the pair
    qc.sx(0)
    qc.sx(1)
    qc.sx(2)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="asap")
    q0, q1, q2 = plays(prog, 0), plays(prog, 1), plays(prog, 2)
    assert same_angle(q0[0][3], 0.0) and same_angle(q1[0][3], 0.0)
    assert same_angle(q0[1][3], -pa)
    assert same_angle(q1[1][3], -pb)
    assert not same_angle(pa, pb)
    assert all(same_angle(p[3], 0.0) for p in q2)


def test_cz_flux_pulse_on_the_flux_qubit(snapshot, channels, export, rp, samples):
    assert rp(export, 1, 2, "cz_flux_qubit") == 2
    qc = QuantumCircuit(3)
    qc.cz(1, 2)
    prog = compile_circuit(qc, snapshot, channels)
    assert prog.play_port.tolist() == [7]           # flux line of qubit 2
    dur = samples(rp(export, 1, 2, "cz_duration_s"))
    assert prog.play_amp[0] == pytest.approx(rp(export, 1, 2, "cz_amplitude"))
    wave = prog.waveform(int(prog.play_wave[0]))
    assert_allclose(wave, flat_top(dur, rp(export, 1, 2, "cz_rise_s") * FS), atol=1e-7)


# ----------------------------------------------------------------- waveforms


def test_one_drag_waveform_for_many_sx_and_x(snapshot, channels, export, rq):
    qc = QuantumCircuit(1)
    for k in range(20):
        (qc.sx if k % 2 else qc.x)(0)
    prog = compile_circuit(qc, snapshot, channels)
    assert prog.num_waveforms == 1
    assert len(prog.play_port) == 20
    assert set(prog.play_wave.tolist()) == {0}
    pi, pi2 = rq(export, 0, "pi_amplitude"), rq(export, 0, "pi2_amplitude")
    assert_allclose(prog.play_amp, [pi2 if k % 2 else pi for k in range(20)], rtol=1e-12)
    expected = gaussian_drag(40, rq(export, 0, "pulse_sigma_s") * FS, rq(export, 0, "drag_beta"))
    wave = prog.waveform(0)
    assert wave.dtype == np.complex64 and wave.shape == (40,)
    assert_allclose(wave, expected, atol=1e-7)
    # 40 samples: no sample sits on the centre, so the sampled peak is just under 1
    assert 0.99 < np.abs(wave.real).max() <= 1.0 + 1e-6
    if_hz = rq(export, 0, "frequency_hz") - rq(export, 0, "drive_lo_frequency_hz")
    assert_allclose(prog.play_freq_hz, if_hz, rtol=1e-12)


def test_different_shapes_per_qubit_get_different_ids(store, snapshot, channels, export, rq, plays):
    qc = QuantumCircuit(2)
    qc.sx(0)
    qc.sx(1)
    prog = compile_circuit(qc, snapshot, channels)
    assert rq(export, 0, "drag_beta") != rq(export, 1, "drag_beta")
    assert prog.num_waveforms == 2
    assert plays(prog, 0)[0][1] != plays(prog, 1)[0][1]
    # the same shape on two qubits is stored once
    beta0 = rq(export, 0, "drag_beta")
    same = derived(store, snapshot, lambda b: b.set_qubit(1, "drag_beta", beta0, "manual"))
    shared = compile_circuit(qc, same, channels)
    assert shared.num_waveforms == 1
    assert plays(shared, 0)[0][1] == plays(shared, 1)[0][1]


def test_readout_waveform_shared_across_qubits(store, snapshot, channels):
    qc = QuantumCircuit(5, 5)
    qc.measure(range(5), range(5))
    prog = compile_circuit(qc, snapshot, channels)
    assert prog.num_waveforms == 1
    assert prog.waveform(0).shape == (1000,)
    longer = derived(store, snapshot, lambda b: b.set_qubit(1, "readout_duration_s", 2e-6,
                                                            "manual"))
    prog2 = compile_circuit(qc, longer, channels)
    assert prog2.num_waveforms == 2
    assert sorted(prog2.waveform(i).shape[0] for i in range(2)) == [1000, 2000]


# ----------------------------------------------------------------- program data


def busy_circuit(angle: float = 0.4) -> QuantumCircuit:
    qc = QuantumCircuit(5, 5)
    qc.x(3)
    qc.sx(0)
    qc.rz(angle, 1)
    qc.sx(1)
    qc.cz(0, 1)
    qc.cz(3, 2)
    qc.sx(2)
    qc.x(0)
    qc.cz(3, 4)
    qc.sx(1)
    qc.measure(range(5), range(5))
    return qc


def test_plays_sorted_by_port_then_start(snapshot, channels):
    prog = compile_circuit(busy_circuit(), snapshot, channels)
    keys = list(zip(prog.play_port.tolist(), prog.play_start.tolist(), strict=True))
    assert len(keys) == 9 + 5
    assert keys == sorted(keys)
    wired = {p for q in range(5) for p in (q, 5 + q, 10 + q)}
    assert set(prog.play_port.tolist()) <= wired


def test_acquisitions_map_qubit_to_clbit(snapshot, channels, export, rq, plays):
    qc = QuantumCircuit(5, 3)
    qc.measure(2, 0)
    qc.measure(0, 2)
    qc.measure(4, 1)
    prog = compile_circuit(qc, snapshot, channels)
    rows = {int(q): (int(c), int(port), int(start), float(f)) for q, c, port, start, f in zip(
        prog.acq_qubit, prog.acq_clbit, prog.acq_port, prog.acq_start, prog.acq_freq_hz,
        strict=True)}
    assert {q: r[0] for q, r in rows.items()} == {2: 0, 0: 2, 4: 1}
    for q, (_, port, start, freq) in rows.items():
        assert port == q
        if_hz = rq(export, q, "readout_frequency_hz") - rq(export, q, "readout_lo_frequency_hz")
        assert freq == pytest.approx(if_hz, rel=1e-12)
        (readout,) = plays(prog, 10 + q)
        assert readout[0] == start
        assert readout[2] == pytest.approx(rq(export, q, "readout_amplitude"))
        assert readout[4] == pytest.approx(if_hz, rel=1e-12)
    assert prog.num_clbits == 3


def test_header(snapshot, channels):
    qr = QuantumRegister(2, "q")
    a, b = ClassicalRegister(2, "a"), ClassicalRegister(3, "b")
    qc = QuantumCircuit(qr, a, b, name="bell", metadata={"run": 7})
    qc.measure(0, a[1])
    qc.measure(1, b[2])
    prog = compile_circuit(qc, snapshot, channels)
    assert prog.header["name"] == "bell"
    assert prog.header["creg_sizes"] == [["a", 2], ["b", 3]]
    assert prog.header["memory_slots"] == 5
    assert prog.header["metadata"] == {"run": 7}
    assert sorted(zip(prog.acq_qubit.tolist(), prog.acq_clbit.tolist(), strict=True)) == [
        (0, 1), (1, 4)]
    assert prog.snapshot_id == snapshot.snapshot_id


def test_lo_settings_and_flux_bias_from_snapshot(snapshot, channels, export, rq):
    qc = QuantumCircuit(2, 1)
    qc.x(1)
    qc.measure(1, 0)
    prog = compile_circuit(qc, snapshot, channels)
    assert set(prog.lo_settings) == {"lo_drive_b", "lo_readout"}
    drive = prog.lo_settings["lo_drive_b"]
    assert drive.frequency_hz == rq(export, 1, "drive_lo_frequency_hz")
    assert drive.power_dbm == rq(export, 1, "drive_lo_power_dbm")
    ro = prog.lo_settings["lo_readout"]
    assert ro.frequency_hz == rq(export, 1, "readout_lo_frequency_hz")
    assert ro.power_dbm == rq(export, 1, "readout_lo_power_dbm")
    assert prog.flux_bias_a == {("flux_bias", q + 1): rq(export, q, "flux_bias_a")
                                for q in range(5)}


def test_a_qubits_bias_is_set_whatever_else_it_lacks(store, snapshot, channels, export, rq):
    """A qubit the snapshot cannot drive (no pi amplitude) still has its flux bias set (and
    so read back): its channel's current reaches the used qubit through flux crosstalk. It was
    left unset and unchecked, and a neighbour moving it gave wrong counts with no error."""
    lacking = derived(store, snapshot, lambda b: b.remove_qubit(1, "pi_amplitude"))
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    prog = compile_circuit(qc, lacking, channels)
    assert prog.flux_bias_a == {("flux_bias", q + 1): rq(export, q, "flux_bias_a")
                                for q in range(5)}
    assert _builder_program(channels, lacking).flux_bias_a == prog.flux_bias_a


def test_conflicting_shared_lo_is_an_error(store, snapshot, channels):
    # qubits 0 and 2 share lo_drive_a
    bad = derived(store, snapshot, lambda b: b.set_qubit(2, "drive_lo_frequency_hz", 5.8e9,
                                                         "manual"))
    qc = QuantumCircuit(3)
    qc.x(0)
    qc.x(2)
    with pytest.raises(CompilationError, match=r"qubit 2.*lo_drive_a"):
        compile_circuit(qc, bad, channels)


def test_content_hash(snapshot, channels, store):
    a = compile_circuit(busy_circuit(0.4), snapshot, channels)
    b = compile_circuit(busy_circuit(0.4), snapshot, channels)
    assert a.content_hash == b.content_hash
    assert a == b
    c = compile_circuit(busy_circuit(0.4000001), snapshot, channels)
    assert c.content_hash != a.content_hash
    assert c != a
    other = derived(store, snapshot, lambda s: s.set_qubit(3, "pi_amplitude", 0.45, "rabi"))
    assert compile_circuit(busy_circuit(0.4), other, channels).content_hash != a.content_hash


def test_to_wire_dtypes(snapshot, channels):
    prog = compile_circuit(busy_circuit(), snapshot, channels)
    arrays, meta = prog.to_wire()
    assert set(arrays) == set(WIRE_DTYPES)
    for name, dtype in WIRE_DTYPES.items():
        assert arrays[name].dtype == np.dtype(dtype), name
        assert arrays[name].flags.c_contiguous, name
    assert arrays["wave_offset"][0] == 0
    assert arrays["wave_offset"][-1] == arrays["wave_data"].shape[0]
    assert meta["sample_rate_hz"] == FS
    assert meta["duration_samples"] == prog.duration_samples
    assert meta["param_names"] == []
    assert (arrays["play_amp_ref"] == -1).all()


# ----------------------------------------------------------------- errors


def test_non_native_gate(snapshot, channels):
    qc = QuantumCircuit(2, name="hadamard")
    qc.h(1)
    with pytest.raises(CompilationError, match=r"'h'.*\(1,\).*transpile") as info:
        compile_circuit(qc, snapshot, channels)
    assert (info.value.circuit, info.value.qubits, info.value.instruction) == ("hadamard", (1,),
                                                                                "h")


def test_unbound_rz_parameter(snapshot, channels):
    """Named, since the transpiler turns the rx(theta) a user wrote into rz(theta + ...)."""
    qc = QuantumCircuit(1)
    qc.rz(Parameter("phi") + 0.5, 0)
    with pytest.raises(CompilationError, match=r"rz on \(0,\) has an unbound parameter \(phi\)"):
        compile_circuit(qc, snapshot, channels)


def test_a_gate_met_again_is_read_again_for_its_parameters(snapshot, channels):
    """The compiler remembers a gate it has met on the same qubits, but not its parameters: an
    instruction of the same name with an unbound parameter after a native ``sx`` is refused,
    and one without parameters after an ``rz`` plays as an angle of 0."""
    from qiskit.circuit import Gate

    qc = QuantumCircuit(1)
    qc.sx(0)
    qc.append(Gate("sx", 1, [Parameter("t")]), [0])
    with pytest.raises(CompilationError, match=r"sx on \(0,\).*unbound"):
        compile_circuit(qc, snapshot, channels)
    plain, bare = QuantumCircuit(1), QuantumCircuit(1)
    for circuit, angle in ((plain, 0.0), (bare, None)):
        circuit.rz(0.3, 0)
        if angle is None:
            circuit.append(Gate("rz", 1, []), [0])
        else:
            circuit.rz(angle, 0)
        circuit.sx(0)
    assert (compile_circuit(bare, snapshot, channels).content_hash
            == compile_circuit(plain, snapshot, channels).content_hash)


def test_unbound_delay_parameter(snapshot, channels):
    qc = QuantumCircuit(1)
    qc.delay(Parameter("t"), 0)
    with pytest.raises(CompilationError, match=r"delay"):
        compile_circuit(qc, snapshot, channels)


def test_measured_twice(snapshot, channels, export, rq, samples):
    """Two measurements of one qubit: two acquisitions one after the other, in circuit order,
    into their own clbits; the first carries the controller's discriminator."""
    qc = QuantumCircuit(2, 2)
    qc.measure(1, 1)
    qc.measure(1, 0)
    prog = compile_circuit(qc, snapshot, channels)
    readout = samples(rq(export, 1, "readout_duration_s"))
    assert prog.acq_start.tolist() == [0, readout]
    assert prog.acq_clbit.tolist() == [1, 0]
    assert abs(prog.acq_disc_axis[0]) == pytest.approx(1.0) and prog.acq_disc_axis[1] == 0


def test_too_many_qubits(snapshot, channels):
    qc = QuantumCircuit(6)
    with pytest.raises(CompilationError, match=r"6 qubits.*lab5 has 5"):
        compile_circuit(qc, snapshot, channels)


def test_unknown_scheduling_method(snapshot, channels):
    qc = QuantumCircuit(1)
    qc.x(0)
    with pytest.raises(CompilationError, match=r"scheduling_method.*'sooner'"):
        compile_circuit(qc, snapshot, channels, scheduling_method="sooner")


def test_missing_calibration_parameter(store, snapshot, channels):
    snap = derived(store, snapshot, lambda b: b.remove_qubit(1, "pulse_sigma_s"))
    qc = QuantumCircuit(2)
    qc.sx(0)
    compile_circuit(qc, snap, channels)  # qubit 0 is untouched
    qc.sx(1)
    with pytest.raises(CompilationError, match=r"qubit 1 .*'pulse_sigma_s'") as info:
        compile_circuit(qc, snap, channels)
    assert (info.value.qubits, info.value.instruction) == ((1,), "pulse_sigma_s")
    assert isinstance(info.value.__cause__, BackendPropertyError)


def test_cz_on_uncalibrated_edge(snapshot, channels):
    qc = QuantumCircuit(3)
    qc.cz(0, 2)
    with pytest.raises(CompilationError, match=r"edge \(0, 2\).*'cz_duration_s'"):
        compile_circuit(qc, snapshot, channels)


def test_duration_not_whole_samples(store, snapshot, channels):
    snap = derived(store, snapshot, lambda b: b.set_qubit(0, "pulse_duration_s", 40.5e-9,
                                                          "manual"))
    qc = QuantumCircuit(1)
    qc.x(0)
    with pytest.raises(CompilationError, match=r"x on \(0,\).*whole number of samples"):
        compile_circuit(qc, snap, channels)
