"""PulseProgram: lossless bytes, content hashes, and drawing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from labqpu.errors import PulseError
from labqpu.pulse import Constant, PulseBuilder, PulseProgram, drive, readout
from labqpu.pulse.compiler import compile_circuit


def bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, 2, name="bell")
    qc.sx(0)
    qc.rz(1.2, 0)
    qc.sx(1)
    qc.cz(0, 1)
    qc.sx(1)
    qc.measure([0, 1], [0, 1])
    return qc


def builder_program(channels, snapshot) -> PulseProgram:
    b = PulseBuilder(channels, snapshot, name="echo")
    amp = Parameter("amp")
    with b.align_sequential():
        b.play(b.calibrated_drag(0, amp=amp), drive(0))
        b.delay(100, drive(0))
        b.shift_phase(1.0, drive(0))
        b.shift_frequency(2e6, drive(0))
        b.play(b.calibrated_drag(0), drive(0))
        b.measure(0, 1)
    return b.assign_parameters({amp: 0.25})


def assert_identical(a: PulseProgram, b: PulseProgram) -> None:
    assert a == b
    assert a.content_hash == b.content_hash
    for name in ("controller", "sample_rate_hz", "duration_samples", "param_names",
                 "lo_settings", "flux_bias_a", "num_clbits", "header", "snapshot_id",
                 "snapshot_hash", "binds"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("play_port", "play_start", "play_wave", "play_amp", "play_amp_ref",
                 "play_phase_rad", "play_freq_hz", "wave_offset", "wave_data", "acq_port",
                 "acq_start", "acq_duration", "acq_freq_hz", "acq_qubit", "acq_clbit",
                 "param_values"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_compiled_program_round_trips_through_bytes(snapshot, channels) -> None:
    program = compile_circuit(bell(), snapshot, channels)
    data = program.to_bytes()
    assert data[:4] == b"LQPP" and b"pickle" not in data
    assert_identical(PulseProgram.from_bytes(data), program)


def test_the_snapshot_hash_round_trips_and_must_be_text(snapshot, channels) -> None:
    program = compile_circuit(bell(), snapshot, channels)
    assert program.snapshot_hash == snapshot.content_hash
    unrecorded = dataclasses.replace(program, snapshot_hash=None)  # as an older labqpu stored
    assert PulseProgram.from_bytes(unrecorded.to_bytes()).snapshot_hash is None
    with pytest.raises(PulseError, match="snapshot_hash must be text, got 5"):
        PulseProgram.from_bytes(dataclasses.replace(program, snapshot_hash=5).to_bytes())


def test_builder_program_with_parameter_table_round_trips(snapshot, channels) -> None:
    program = builder_program(channels, snapshot)
    assert_identical(PulseProgram.from_bytes(program.to_bytes()), program)
    # A parameter table (a play amplitude referring to it) survives too.
    from labqpu.pulse import ProgramBuilder
    pb = ProgramBuilder("ctrl0", 1e9)
    wid = pb.waves.add(("c", 4), lambda: np.full(4, 0.5 + 0.25j))
    pb.parameter("a", 0.125)
    pb.play(3, 10, wid, "a", 0.3, -1e6)
    table = pb.build(num_clbits=0, header={"name": "t"})
    back = PulseProgram.from_bytes(table.to_bytes())
    assert_identical(back, table)
    assert back.play_amp_ref.tolist() == [0]


def test_binds_round_trip_change_the_hash_and_are_checked(snapshot, channels) -> None:
    """``binds`` (elements set from the parameter table, docs/protocol.md 4.7) survive bytes,
    are part of the content hash, and must name a bindable element, a parameter, and each
    element once."""
    from dataclasses import replace

    program = compile_circuit(bell(), snapshot, channels)
    bound = replace(program, param_names=("t", "phi"),
                    param_values=[float(program.acq_start[0]), 0.5],
                    binds=(("acq_start", 0, 0), ("play_phase_rad", 1, 1)))
    assert_identical(PulseProgram.from_bytes(bound.to_bytes()), bound)
    assert bound.content_hash != replace(bound, binds=()).content_hash
    for binds in ((("play_wave", 0, 0),), (("acq_start", 9, 0),), (("acq_start", 0, 2),),
                  (("acq_start", 0, 0), ("acq_start", 0, 1))):
        with pytest.raises(ValueError, match="PulseProgram: "):
            replace(bound, binds=binds)


def test_identical_compilations_share_a_hash_and_differences_change_it(snapshot,
                                                                      channels) -> None:
    a = compile_circuit(bell(), snapshot, channels)
    b = compile_circuit(bell(), snapshot, channels)
    assert a is not b and a.content_hash == b.content_hash
    changed = QuantumCircuit(2, 2, name="bell")
    changed.sx(0)
    changed.rz(1.2, 0)
    changed.x(1)
    changed.cz(0, 1)
    changed.sx(1)
    changed.measure([0, 1], [0, 1])
    assert compile_circuit(changed, snapshot, channels).content_hash != a.content_hash
    assert builder_program(channels, snapshot).content_hash == \
        builder_program(channels, snapshot).content_hash


@pytest.mark.parametrize("mutate", [
    lambda d: b"XXXX" + d[4:],
    lambda d: d[:4] + (7).to_bytes(4, "little") + d[8:],
    lambda d: d[:-3],
    lambda d: d[:12] + b"[" + d[13:],
])
def test_damaged_bytes_are_refused(snapshot, channels, mutate) -> None:
    data = compile_circuit(bell(), snapshot, channels).to_bytes()
    with pytest.raises(PulseError):
        PulseProgram.from_bytes(mutate(data))


def test_any_flipped_bit_is_refused_by_the_checksum(snapshot, channels) -> None:
    """Every single-bit flip of a stored program is refused as damaged, before its header is
    parsed (a review loaded 330 of 400 such flips as another program, one with a changed
    waveform sample that then ran), except in the trailer's marker, which leaves the content
    as it was; a program stored without the trailer still loads."""
    program = compile_circuit(bell(), snapshot, channels)
    data = program.to_bytes()
    assert data[-8:-4] == b"LQCK"
    rng = np.random.default_rng(5)
    for k in [*rng.choice(len(data) - 8, size=300, replace=False).tolist(), len(data) - 1]:
        damaged = bytearray(data)
        damaged[k] ^= 1 << int(rng.integers(8))
        with pytest.raises(PulseError, match="is damaged: its CRC-32 does not match"):
            PulseProgram.from_bytes(bytes(damaged))
    assert_identical(PulseProgram.from_bytes(data[:-8]), program)


@pytest.mark.parametrize("data", ["LQPP...", 42, None])
def test_what_is_not_bytes_is_refused_naming_it(data) -> None:
    """A ``str`` (a file read in text mode) or another object is refused with a ``PulseError``
    naming what it got, not a bare ``TypeError`` from ``memoryview``."""
    with pytest.raises(PulseError, match=f"is bytes .*got {type(data).__name__}"):
        PulseProgram.from_bytes(data)


def test_header_that_is_not_json_is_refused_on_save(snapshot, channels) -> None:
    b = PulseBuilder(channels, snapshot)
    b.play(Constant(duration_samples=4, amp=0.1), drive(0))
    p = b.build()
    p.header["metadata"] = {"when": object()}
    with pytest.raises(PulseError, match="JSON"):
        p.to_bytes()


def test_draw_has_a_row_per_port_and_input_and_marks_changes(snapshot, channels,
                                                             tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    program = builder_program(channels, snapshot)
    fig = program.draw(channels=channels)
    assert isinstance(fig, Figure)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels[0].startswith("drive q0") and labels[1].startswith("readout q0")
    assert labels[2] == "acquire q0"
    assert fig.axes[-1].get_xlabel() == "time (ns)"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("φ" in t for t in texts)  # the phase shift
    assert any("MHz" in t for t in texts)  # the frequency shift
    assert fig.axes[2].texts[0].get_text().startswith("a0: q0 → c1")
    # The time axis is in ns: the program's end at 1 GS/s.
    assert fig.axes[-1].get_xlim()[1] == pytest.approx(program.duration_samples)
    out = tmp_path / "p.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rows_name_their_controller_on_a_rack_of_several(channels) -> None:
    from labqpu.pulse.drawing import port_labels
    from labqpu.rack.config import builtin_config_path, load_config

    outputs, inputs = port_labels(load_config(builtin_config_path("lab10")).channels)
    assert "drive q0\nctrl0:0" in outputs.values()
    assert "drive q5\nctrl1:0" in outputs.values()
    assert "acquire q9\nctrl1:4" in inputs.values()
    lab5_outputs, lab5_inputs = port_labels(channels)  # one controller: no second line
    assert not any("\n" in label for label in [*lab5_outputs.values(), *lab5_inputs.values()])


def test_a_flux_row_has_no_if(snapshot, channels) -> None:
    pytest.importorskip("matplotlib")
    from qiskit import QuantumCircuit

    from labqpu.pulse.compiler import compile_circuit

    qc = QuantumCircuit(5, 2)
    qc.cz(1, 2)
    qc.measure([1, 2], [0, 1])
    fig = compile_circuit(qc, snapshot, channels).draw(channels=channels)
    labels = [ax.get_ylabel() for ax in fig.axes]
    flux = [label for label in labels if label.startswith("flux")]
    assert flux and all("IF" not in label for label in flux), labels
    assert all("IF" in label for label in labels if label.startswith(("drive", "readout")))


def test_draw_refuses_an_empty_or_non_finite_time_range(snapshot, channels) -> None:
    pytest.importorskip("matplotlib")
    b = PulseBuilder(channels, snapshot)
    b.play(Constant(duration_samples=4, amp=0.1), readout(0))
    with pytest.raises(PulseError, match="time range"):
        b.build().draw(time_range_ns=(100.0, 200.0))
    for bad in ((0.0, math.nan), (0.0, math.inf), (-math.inf, 4.0)):
        with pytest.raises(PulseError, match="two finite numbers"):
            b.build().draw(time_range_ns=bad)


def test_a_conditional_play_is_drawn_with_its_envelope(snapshot, channels) -> None:
    """Conditional plays were drawn by their I alone: a pi pulse after rz(1.4) peaked at a
    fifth of its amplitude in the figure. Its envelope is drawn too (dotted)."""
    pytest.importorskip("matplotlib")
    from labqpu.pulse.drawing import _COND_COLOUR

    qc = QuantumCircuit(1, 1)
    qc.rz(1.4, 0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(0)
    program = compile_circuit(qc, snapshot, channels, feedforward_latency_samples=200)
    conditional = np.flatnonzero(program.play_block >= 0)
    assert conditional.size == 1
    amplitude = float(np.max(np.abs(program.waveform(int(program.play_wave[conditional[0]])))
                             * abs(program.play_amp[conditional[0]])))
    drive_row = program.draw(channels=channels).axes[0]
    lines = [line for line in drive_row.lines if line.get_color() == _COND_COLOUR]
    dotted = [np.max(line.get_ydata()) for line in lines if line.get_linestyle() == ":"]
    dashed = [np.max(np.abs(line.get_ydata())) for line in lines if line.get_linestyle() == "--"]
    assert dotted == [pytest.approx(amplitude, rel=1e-3)], (dotted, amplitude)
    assert dashed and dashed[0] < 0.5 * amplitude  # its I, small at this phase
