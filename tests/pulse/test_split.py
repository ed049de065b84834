"""A program on the qubits of several controllers: compiled on rack ports, split per controller.

The reference is the same circuit compiled for the one-controller wiring of lab5: splitting the
two-controller program must give each controller exactly the plays, waveforms, acquisitions and
feed-forward of its qubits, on its own port numbers, and the acquisitions must map back to the
one-controller program's columns.
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

from labqpu.errors import PulseError
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.program import ProgramBuilder, PulseProgram
from labqpu.pulse.split import split_program
from labqpu.rack.config import default_config_path, load_config


@pytest.fixture(scope="module")
def two_controller_config(tmp_path_factory):
    """lab5 rewired: ctrl0 (9 outputs, 3 inputs) holds qubits 0-2, ctrl1 (6, 2) qubits 3-4."""
    text = default_config_path().read_text()
    text = text.replace('outputs = 15\ninputs = 5', 'outputs = 9\ninputs = 3')
    text = text.replace('timeout_s = 5.0\n', 'timeout_s = 5.0\n\n[[controllers]]\nname = "ctrl1"\n'
                        'endpoint = "tcp://127.0.0.1:0"\nsample_rate_hz = 1.0e9\noutputs = 6\n'
                        'inputs = 2\ntimeout_s = 5.0\n', 1)
    local = {0: (0, 3, 6, 0), 1: (1, 4, 7, 1), 2: (2, 5, 8, 2), 3: (0, 2, 4, 0), 4: (1, 3, 5, 1)}
    head = text.partition("[qubits.0]")[0]
    blocks = []
    for q, (d, f, r, a) in local.items():
        ctrl = "ctrl0" if q < 3 else "ctrl1"
        blocks.append(
            f'[qubits.{q}]\ndrive = "{ctrl}:{d}"\nflux = "{ctrl}:{f}"\nreadout = "{ctrl}:{r}"\n'
            f'acquire = "{ctrl}:{a}"\ndrive_lo = "lo_drive_{"ab"[q % 2]}"\n'
            f'readout_lo = "lo_readout"\nflux_bias = "flux_bias:{q + 1}"\n')
    path = tmp_path_factory.mktemp("wiring") / "lab5_two.toml"
    path.write_text(head + "\n".join(blocks))
    return load_config(path)


def bell_23_and_x0() -> QuantumCircuit:
    qc = QuantumCircuit(5, 3)
    qc.x(0)
    qc.sx(2)
    qc.cz(2, 3)
    qc.sx(3)
    qc.rz(0.3, 3)
    qc.measure([0, 2, 3], [0, 1, 2])
    return qc


def test_rack_ports_number_the_controllers_one_after_the_other(two_controller_config) -> None:
    ch = two_controller_config.channels
    assert ch.layout == (("ctrl0", 9, 3), ("ctrl1", 6, 2))
    assert ch.output(ch.qubits[3].drive) == 9 + 0
    assert ch.output(ch.qubits[4].readout) == 9 + 5
    assert ch.input(ch.qubits[4].acquire) == 3 + 1
    assert ch.output(ch.qubits[2].flux) == 5
    with pytest.raises(KeyError, match="ctrl7"):
        ch.output(("ctrl7", 0))


def test_split_gives_each_controller_its_qubits_on_its_own_ports(
        snapshot, channels, two_controller_config) -> None:
    """Every play of the one-controller program appears in exactly one part, on the port the
    two-controller wiring gives its qubit, at the same sample, with the same waveform samples,
    amplitude, phase and frequency; acquisitions keep their columns."""
    qc = bell_23_and_x0()
    one = compile_circuit(qc, snapshot, channels)
    two = compile_circuit(qc, snapshot, two_controller_config.channels)
    assert not one.rack and two.rack == two_controller_config.channels.layout
    with pytest.raises(PulseError, match="spans controllers"):
        two.to_wire()
    parts = split_program(two)
    assert [p.controller for p in parts] == ["ctrl0", "ctrl1"]

    def where(config, q: int, role: str) -> tuple[str, int]:
        return getattr(config.qubits[q], role)

    one_cfg = load_config(default_config_path())
    role_of = {}
    for q in range(5):
        for role in ("drive", "flux", "readout"):
            role_of[where(one_cfg, q, role)[1]] = where(two_controller_config, q, role)
    expected: dict[str, set] = {"ctrl0": set(), "ctrl1": set()}
    for i in range(one.play_port.shape[0]):
        ctrl, port = role_of[int(one.play_port[i])]
        expected[ctrl].add((port, int(one.play_start[i]),
                            one.waveform(int(one.play_wave[i])).tobytes(),
                            float(one.play_amp[i]), round(float(one.play_phase_rad[i]), 12),
                            float(one.play_freq_hz[i])))
    for part in parts:
        p = part.program
        assert p.controller == part.controller and not p.rack
        assert p.duration_samples == two.duration_samples
        got = {(int(p.play_port[i]), int(p.play_start[i]),
                p.waveform(int(p.play_wave[i])).tobytes(), float(p.play_amp[i]),
                round(float(p.play_phase_rad[i]), 12), float(p.play_freq_hz[i]))
               for i in range(p.play_port.shape[0])}
        assert got == expected[part.controller]
        assert p.num_waveforms == len({int(w) for w in p.play_wave})
        arrays, _ = p.to_wire()
        assert arrays["play_port"].max() < dict(
            (n, o) for n, o, _ in two.rack)[part.controller]
        np.testing.assert_array_equal(p.acq_qubit, one.acq_qubit[part.acquisitions])
        np.testing.assert_array_equal(p.acq_clbit, one.acq_clbit[part.acquisitions])
        np.testing.assert_array_equal(p.acq_start, one.acq_start[part.acquisitions])
    assert sorted(np.concatenate([p.acquisitions for p in parts]).tolist()) == [0, 1, 2]


def test_a_controller_without_pulses_is_left_out(snapshot, two_controller_config) -> None:
    qc = QuantumCircuit(5, 1)
    qc.x(4)
    qc.measure(4, 0)
    parts = split_program(compile_circuit(qc, snapshot, two_controller_config.channels))
    assert [p.controller for p in parts] == ["ctrl1"]
    assert parts[0].acquisitions.tolist() == [0]


def test_feedforward_stays_on_its_controller(snapshot, two_controller_config) -> None:
    """Active reset of qubit 3 conditions a pulse on ctrl1 on ctrl1's own acquisition: fine.
    A pulse on ctrl0 conditioned on a result ctrl1 digitizes cannot be played."""
    q = QuantumRegister(5)
    c = ClassicalRegister(1)
    qc = QuantumCircuit(q, c)
    qc.x(3)
    qc.measure(3, 0)
    with qc.if_test((c[0], 1)):
        qc.x(3)
    qc.measure(3, 0)
    parts = split_program(compile_circuit(qc, snapshot, two_controller_config.channels,
                                          feedforward_latency_samples=200))
    assert [p.controller for p in parts] == ["ctrl1"]
    assert parts[0].program.block_acq.tolist() == [0]

    rack = two_controller_config.channels.layout
    b = ProgramBuilder("ctrl0", 1e9, rack=rack)
    wid = b.waves.add(("c",), lambda: np.ones(16, np.complex64))
    acq = b.acquire(3, 0, 100, 0.0, 3, 0, discriminator=(1 + 0j, 0.0))  # ctrl1 input 0
    with b.if_result(acq, 1):
        b.play(0, 400, wid, 0.5)  # ctrl0 output 0
    with pytest.raises(PulseError, match="share no feed-forward"):
        split_program(b.build())


def test_nested_blocks_keep_their_parents_in_a_part(snapshot, two_controller_config) -> None:
    """if r == 3 on qubits 3 and 4 (ctrl1): the chain's first block has no plays of its own,
    yet ctrl1's part keeps it as its second block's parent; ctrl0 plays only the unconditional
    x on qubit 0."""
    r = ClassicalRegister(2, "r")
    qc = QuantumCircuit(QuantumRegister(5), r)
    qc.x(0)
    qc.measure(3, r[0])
    qc.measure(4, r[1])
    with qc.if_test((r, 3)):
        qc.x(4)
    whole = compile_circuit(qc, snapshot, two_controller_config.channels,
                            feedforward_latency_samples=200)
    assert whole.block_parent.tolist() == [-1, 0]
    parts = {p.controller: p.program for p in split_program(whole)}
    assert not parts["ctrl0"].block_acq.size and np.all(parts["ctrl0"].play_block == -1)
    ctrl1 = parts["ctrl1"]
    assert ctrl1.block_parent.tolist() == [-1, 0] and ctrl1.block_value.tolist() == [1, 1]
    assert ctrl1.block_acq.tolist() == [0, 1]
    assert ctrl1.play_block[ctrl1.play_block >= 0].tolist() == [1]


def test_a_rack_program_round_trips_through_bytes(snapshot, two_controller_config) -> None:
    two = compile_circuit(bell_23_and_x0(), snapshot, two_controller_config.channels)
    back = PulseProgram.from_bytes(two.to_bytes())
    assert back.rack == two.rack and back == two
    assert back.content_hash != compile_circuit(
        bell_23_and_x0(), snapshot, load_config(default_config_path()).channels).content_hash
