"""The schedule Qiskit pads is the one that plays, when readouts differ in duration.

lab3's bootstrap chose readouts of 1.2, 1.0 and 1.2 us on qubits 0, 1 and 2. Qiskit's ALAP ends
every measurement at the end of the circuit, so a long readout starts early; labqpu's pulse
compiler starts every final measurement when the last gate has ended. Until the scheduling
stage timed circuits as the compiler does (``plugins.CompilerALAP``), the echo Qiskit padded on
one qubit beside another's early readout played, in the compiler's timing, while that other
qubit still waited in superposition for its last gate: the echo flipped its ZZ partner. On a
snapshot with 1.2, 2.0 and 1.0 us readouts a Bell state on lab3's edge 0-1 read 0.70, and
H-CZ-H on a qubit whose partner was in |0> read 1 in 93 % of the shots.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from qiskit import QuantumCircuit, transpile

from labqpu import LabProvider
from labqpu.pulse.compiler import compile_circuit

PULSES = ("sx", "sy", "x")


@pytest.fixture(scope="module")
def lab3(lab_home):
    with LabProvider("lab3") as provider:
        yield provider.backend()


def test_lab3_readouts_differ_in_duration(lab3) -> None:
    durations = {lab3.target["measure"][(q,)].duration for q in range(lab3.num_qubits)}
    assert len(durations) > 1, durations


def _circuits() -> list[QuantumCircuit]:
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    ghz = QuantumCircuit(3, 3)
    ghz.h(1)
    ghz.cx(1, 0)
    ghz.cx(1, 2)
    ghz.measure([0, 1, 2], [0, 1, 2])
    partial = QuantumCircuit(3, 1)  # qubits 0 and 2 unmeasured, one busy to the end
    partial.h(1)
    partial.cz(0, 1)
    partial.h(1)
    partial.x(2)
    partial.sx(2)
    partial.measure(1, 0)
    return [bell, ghz, partial]


@pytest.mark.parametrize("index", range(3))
def test_final_measurements_start_together_and_play_where_qiskit_put_them(lab3, index) -> None:
    native = transpile(_circuits()[index], lab3, seed_transpiler=3)
    timed = list(zip(native.data, native.op_start_times, strict=True))
    measures = {native.find_bit(i.qubits[0]).index: t for i, t in timed if i.name == "measure"}
    assert len(set(measures.values())) == 1, measures
    for inst, t in timed:  # every gate on a measured qubit ends by its readout
        if inst.name not in ("measure", "delay", "barrier"):
            qubits = tuple(native.find_bit(q).index for q in inst.qubits)
            end = t + round(lab3.target[inst.name][qubits].duration / lab3.dt)
            assert all(end <= measures[q] for q in qubits if q in measures), (inst.name, t)

    program = compile_circuit(native, lab3.snapshot, lab3.channels)
    channels = lab3.channels.qubits
    assert dict(zip(program.acq_qubit.tolist(), program.acq_start.tolist(), strict=True)) \
        == measures
    qiskit_plays = defaultdict(list)
    cz_starts = []
    for inst, t in timed:
        qubits = [native.find_bit(q).index for q in inst.qubits]
        if inst.name in PULSES:
            qiskit_plays[channels[qubits[0]].drive[1]].append(t)
        elif inst.name == "cz":
            cz_starts.append(t)
    played = defaultdict(list)
    for port, start in zip(program.play_port.tolist(), program.play_start.tolist(), strict=True):
        played[port].append(start)
    for port, starts in qiskit_plays.items():
        assert sorted(played[port]) == sorted(starts), (port, played[port], starts)
    flux_ports = {channels[q].flux[1] for q in channels}
    assert sorted(t for p, ts in played.items() if p in flux_ports for t in ts) == \
        sorted(cz_starts)
    assert sum(map(len, qiskit_plays.values())) >= 3 and cz_starts


@pytest.mark.parametrize(("control", "target"), [(0, 1), (1, 0), (1, 2), (2, 1)])
def test_a_cz_between_two_hadamards_reads_the_control_on_lab3(lab3, control, target) -> None:
    """H CZ H on ``target`` reads the control's state, at Qiskit's defaults, unseeded."""
    for state in (0, 1):
        qc = QuantumCircuit(3, 1)
        if state:
            qc.x(control)
        qc.h(target)
        qc.cz(control, target)
        qc.h(target)
        qc.measure(target, 0)
        counts = lab3.run(transpile(qc, lab3), shots=2000).result().get_counts()
        p1 = counts.get("1", 0) / 2000
        assert abs(p1 - state) < 0.06, (control, target, state, p1)


@pytest.mark.parametrize("pair", [(0, 1), (2, 1)])
def test_a_bell_pair_measured_mid_circuit_stays_correlated(lab3, pair) -> None:
    """Measure one qubit of a Bell pair, flip it, then measure the other, at Qiskit's
    defaults: the second result still follows the first. Compiled ALAP, the partner's last
    gate moved to the end of the program and it waited in superposition beside a qubit being
    measured and flipped (P(00) + P(11) was 0.52-0.54 on lab3, 0.58-0.60 on lab5); the backend's
    default (``scheduling_method="auto"``) compiles such circuits ASAP."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure(0, 0)
    qc.x(0)
    qc.measure(1, 1)
    counts = lab3.run(transpile(qc, lab3, initial_layout=list(pair)),
                      shots=4000).result().get_counts()
    assert (counts.get("00", 0) + counts.get("11", 0)) / 4000 > 0.9, counts


@pytest.mark.parametrize("level", [None, 0, 3])
def test_a_barrier_after_a_readout_holds_what_follows_it(lab3, level) -> None:
    """``measure(0); barrier; x(1); measure(1)`` at Qiskit's levels: qubit 0 is read first and
    qubit 1's x plays once that readout has ended, as the barrier says, where the scheduling
    stage timed it (qubit 0's readout was played with the final ones, at the end of the
    gates, so the x played before it)."""
    qc = QuantumCircuit(2, 2)
    qc.measure(0, 0)
    qc.barrier()
    qc.x(1)
    qc.measure(1, 1)
    native = transpile(qc, lab3, seed_transpiler=1,
                       **({} if level is None else {"optimization_level": level}))
    program = lab3.compile(native)
    first, second = native.layout.initial_index_layout()[:2]
    read = dict(zip(program.acq_qubit.tolist(), program.acq_start.tolist(), strict=True))
    drive = lab3.channels.qubits[second].drive[1]
    (x_start,) = program.play_start[program.play_port == drive].tolist()
    readout = round(lab3.target["measure"][(first,)].duration / lab3.dt)
    x = round(lab3.target["x"][(second,)].duration / lab3.dt)
    assert read[first] == 0
    assert x_start >= readout
    assert read[second] == x_start + x
    if native.op_start_times is not None:  # the scheduling stage's times are the played ones
        timed = {(i.name, native.find_bit(i.qubits[0]).index): t
                 for i, t in zip(native.data, native.op_start_times, strict=True)
                 if i.name in ("measure", "x")}
        assert timed == {("measure", first): 0, ("x", second): x_start,
                         ("measure", second): read[second]}


def test_a_barrier_after_the_final_readouts_is_timed_after_them(lab3) -> None:
    """A review's case: a Bell pair, its readouts, then a barrier. The scheduling stage timed
    the barrier at the start of the readouts and Qiskit padded each qubit with a delay from
    there, over its own readout (``qubit_stop_time`` read the readouts' start). Each qubit's
    instructions now follow one another in time, and the barrier comes when the readouts end."""
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    qc.barrier()
    native = transpile(qc, lab3, initial_layout=[0, 1])
    busy_until: dict[int, int] = defaultdict(int)
    readouts_end = 0
    for inst, t in zip(native.data, native.op_start_times, strict=True):
        qubits = [native.find_bit(q).index for q in inst.qubits]
        if inst.name == "barrier":
            duration = 0
        elif inst.name == "delay":
            duration = inst.operation.duration
        else:
            duration = round(lab3.target[inst.name][tuple(qubits)].duration / lab3.dt)
        for q in qubits:
            assert t >= busy_until[q], (inst.name, qubits, t, dict(busy_until))
            busy_until[q] = t + duration
        if inst.name == "measure":
            readouts_end = max(readouts_end, t + duration)
        if inst.name == "barrier":
            assert t == readouts_end
