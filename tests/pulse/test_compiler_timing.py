"""``compile_circuit(circuit, snapshot, channels)``: timing.

Start samples under ASAP and ALAP scheduling, barriers, delays and resets, and which readouts
and padding delays the waits of other qubits hold back. Expected numbers are computed by hand
from the shipped snapshot (read as plain JSON) and the shipped wiring: qubit q drives on
controller port q, its flux line is port 5 + q, its readout port 10 + q, its acquisition input
q. At 1 GS/s the shipped durations are 40 samples (sx/x), 32 (cz 0-1), 34 (other edges), 1000
(readout).
"""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit

from labqpu.errors import CompilationError
from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.timing import held_readouts, last_that_matter, padding_delays

# ----------------------------------------------------------------- timing


def timing_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(3, 2)
    qc.sx(2)
    qc.x(0)
    qc.cz(0, 1)
    qc.measure(0, 0)
    qc.measure(1, 1)
    return qc


def test_asap_start_samples(snapshot, channels, export, rq, rp, samples, starts):
    P = samples(rq(export, 0, "pulse_duration_s"))
    CZ = samples(rp(export, 0, 1, "cz_duration_s"))
    R = samples(rq(export, 0, "readout_duration_s"))
    assert (P, CZ, R) == (40, 32, 1000)
    prog = compile_circuit(timing_circuit(), snapshot, channels, scheduling_method="asap")
    assert starts(prog, 2) == [0]            # sx q2
    assert starts(prog, 0) == [0]            # x q0
    assert starts(prog, 5) == [P]            # cz flux pulse on qubit 0 (cz_flux_qubit = 0)
    assert starts(prog, 10) == [P + CZ]      # readout q0
    assert starts(prog, 11) == [P + CZ]      # readout q1 waits for the cz
    assert sorted(prog.acq_start.tolist()) == [P + CZ, P + CZ]
    assert prog.acq_duration.tolist() == [R, R]
    assert prog.duration_samples == P + CZ + R


def test_alap_start_samples(snapshot, channels, starts):
    P, CZ, R = 40, 32, 1000
    prog = compile_circuit(timing_circuit(), snapshot, channels, scheduling_method="alap")
    assert starts(prog, 2) == [P + CZ - P]   # sx q2 pushed to the end of the gates
    assert starts(prog, 0) == [0]
    assert starts(prog, 5) == [P]
    assert starts(prog, 10) == [P + CZ]
    assert starts(prog, 11) == [P + CZ]
    assert prog.duration_samples == P + CZ + R


@pytest.mark.parametrize("method", ["alap", "asap"])
def test_readout_starts_after_every_gate(snapshot, channels, method):
    """All measurements start together once the last gate has ended, so no pulse (not even a
    neighbour's flux pulse) overlaps a readout window."""
    qc = QuantumCircuit(4, 1)
    qc.x(1)
    qc.cz(2, 3)
    qc.measure(1, 0)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method=method)
    flux = [s + len(prog.waveform(w)) for p, s, w in zip(prog.play_port, prog.play_start,
                                                         prog.play_wave, strict=True) if p < 10]
    assert prog.acq_start.tolist() == [max(flux)]


def test_gate_after_measurement_starts_after_the_readout(
    snapshot, channels, export, rq, samples, starts
):
    """A mid-circuit measurement is a gate on its qubit: the x after it starts when the
    readout ends; a measurement followed by nothing on its qubit stays a final readout."""
    qc = QuantumCircuit(2, 1)
    qc.measure(0, 0)
    qc.x(0)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="asap")
    readout = samples(rq(export, 0, "readout_duration_s"))
    assert prog.acq_start.tolist() == [0] and starts(prog, 0) == [readout]
    other = QuantumCircuit(2, 1)
    other.measure(0, 0)
    other.x(1)
    assert compile_circuit(other, snapshot, channels).acq_start.tolist() == [40]


def test_alap_is_the_default(snapshot, channels, starts):
    qc = QuantumCircuit(2)
    qc.x(0)
    qc.x(0)
    qc.x(1)
    default = compile_circuit(qc, snapshot, channels)
    assert starts(default, 1) == [40]
    assert starts(compile_circuit(qc, snapshot, channels, scheduling_method="asap"), 1) == [0]


@pytest.mark.parametrize(("method", "with_barrier", "expected_q1"), [
    ("asap", False, 0), ("asap", True, 40), ("alap", True, 40), ("alap", False, 0),
])
def test_barrier_synchronises(snapshot, channels, method, with_barrier, expected_q1, starts):
    qc = QuantumCircuit(2)
    qc.x(0)
    if with_barrier:
        qc.barrier(0, 1)
    qc.x(1)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method=method)
    assert starts(prog, 1) == [expected_q1]
    assert starts(prog, 0) == [0]
    assert prog.duration_samples == (80 if with_barrier else 40)


@pytest.mark.parametrize(("duration", "unit", "expected"), [
    (100, "dt", 100), (2e-7, "s", 200), (50, "ns", 50), (0.25, "us", 250),
])
def test_delay_units(snapshot, channels, duration, unit, expected, starts):
    qc = QuantumCircuit(1)
    qc.delay(duration, 0, unit=unit)
    qc.x(0)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="asap")
    assert starts(prog, 0) == [expected]
    assert prog.duration_samples == expected + 40


@pytest.mark.parametrize(("duration", "unit", "samples"), [
    (1.0005, "us", "1000.5"), (0.3, "ns", "0.3"), (2.5e-10, "s", "0.25")])
def test_a_delay_of_a_fraction_of_a_sample_is_refused_naming_it(snapshot, channels, duration,
                                                                 unit, samples):
    """A delay in seconds is played as whole samples; one that is not a whole number of them
    is refused (not rounded), as a calibrated duration would be."""
    qc = QuantumCircuit(1, name="frac")
    qc.delay(duration, 0, unit=unit)
    qc.x(0)
    with pytest.raises(CompilationError, match=rf"delay on qubits \(0,\) of {duration} {unit} "
                       rf"is {samples} samples.*not a whole number") as info:
        compile_circuit(qc, snapshot, channels)
    assert (info.value.circuit, info.value.qubits, info.value.instruction) == ("frac", (0,),
                                                                                "delay")


def test_a_delay_with_nothing_after_it_plays_nothing(snapshot, channels, starts):
    """A trailing delay is a scheduler's padding: dropped, it neither lengthens the program
    nor moves the gates (the repetition delay spaces the shots)."""
    qc = QuantumCircuit(2)
    qc.x(0)
    qc.delay(300, 1)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="alap")
    assert prog.duration_samples == 40
    assert starts(prog, 0) == [0]


def test_reset_is_passive_wait(snapshot, channels, export, rq, samples, starts):
    qc = QuantumCircuit(1)
    qc.reset(0)
    qc.x(0)
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="asap")
    wait = samples(rq(export, 0, "reset_duration_s"))
    assert starts(prog, 0) == [wait]
    assert len(prog.play_port) == 1
    assert prog.duration_samples == wait + 40


def test_padding_delays_do_not_hold_back_the_readout(snapshot, channels):
    """A scheduler pads idle qubits with delays to the end of the circuit; they play nothing
    and must not push the readout (which starts when the last gate ends) later."""
    qc = QuantumCircuit(3, 1)
    qc.x(0)
    qc.delay(5000, 2, unit="dt")  # qubit 2 only idles: padding
    qc.measure(0, 0)
    qc.delay(1000, 0, unit="dt")  # after the measurement: padding too
    prog = compile_circuit(qc, snapshot, channels, scheduling_method="asap")
    assert prog.acq_start.tolist() == [40]


@pytest.mark.parametrize("mid_circuit", [False, True])
def test_a_delay_between_barriers_holds_back_the_qubits_they_synchronise(snapshot, channels,
                                                                          mid_circuit, starts):
    """A review's case: x(0), a 20 us delay on idle qubit 1 between two barriers over both,
    then measure(0). The second barrier synchronises qubit 0 with the end of that delay, so
    qubit 0 waits 20 us before its readout (Qiskit's barrier semantics); the delay was taken
    for padding, since qubit 1 does nothing after it, and the readout came 20 us early. The
    same through the dynamic path (a mid-circuit measurement on qubit 2 first). A delay on a
    qubit outside the barriers is still padding."""
    qc = QuantumCircuit(3, 2)
    if mid_circuit:
        qc.measure(2, 1)
        qc.x(2)
    qc.x(0)
    qc.barrier(0, 1)
    qc.delay(20000, 1, unit="dt")
    qc.barrier(0, 1)
    qc.delay(50000, 2, unit="dt")
    qc.measure(0, 0)
    prog = compile_circuit(qc, snapshot, channels)
    (readout,) = [int(t) for t, c in zip(prog.acq_start, prog.acq_clbit, strict=True) if c == 0]
    x0 = min(starts(prog, 0))
    assert readout == x0 + 40 + 20000
    assert prog.duration_samples < readout + 5000


@pytest.mark.parametrize("barrier_first", [False, True])
def test_a_readout_before_a_wait_that_holds_others_back_is_not_moved_after_it(
        snapshot, channels, barrier_first):
    """A review's case: x(0), measure(0), a 50 us delay on qubit 0, a barrier, then x(1) and
    measure(1). Qubit 0 is read right after its x and qubit 1 acts 50 us later; the delay,
    kept since the barrier ties it to qubit 1, made measure(0) look final, and final readouts
    start at the end of the gates: qubit 0 was read after the wait (P(1) 0.30 against 0.98)."""
    qc = QuantumCircuit(2, 2)
    qc.x(0)
    qc.measure(0, 0)
    if barrier_first:
        qc.barrier()
    qc.delay(50000, 0, unit="dt")
    qc.barrier()
    qc.x(1)
    qc.measure(1, 1)
    prog = compile_circuit(qc, snapshot, channels)
    starts_of = dict(zip(prog.acq_clbit.tolist(), prog.acq_start.tolist(), strict=True))
    readout = 1000  # samples: the snapshot's readout of qubit 0
    assert starts_of[0] == 40
    assert starts_of[1] == 40 + readout + 50000 + 40


@pytest.mark.parametrize("mid_circuit", [False, True])
def test_a_readout_tied_by_a_barrier_to_a_wait_elsewhere_plays_before_the_wait(
        snapshot, channels, mid_circuit, starts):
    """A review's case: x(0), measure(0), barrier(0, 1), an 8 us delay on qubit 1,
    barrier(1, 2), x(2), measure(2). Qubit 0 is read right after its x; the wait, kept since
    the barriers tie it to qubit 2, runs after that readout (the barrier(0, 1)) and before
    qubit 2's x. measure(0) was played with the final readouts, after the wait (P(1) 0.80)."""
    qc = QuantumCircuit(4, 2)
    if mid_circuit:
        qc.measure(3, 1)
        qc.x(3)
    qc.x(0)
    qc.measure(0, 0)
    qc.barrier(0, 1)
    qc.delay(8000, 1, unit="dt")
    qc.barrier(1, 2)
    qc.x(2)
    qc.measure(2, 1)
    prog = compile_circuit(qc, snapshot, channels)
    readouts = [(int(c), int(t)) for c, t in zip(prog.acq_clbit, prog.acq_start, strict=True)]
    x0 = min(starts(prog, 0))
    (read0,) = [t for c, t in readouts if c == 0]
    assert read0 == x0 + 40
    assert max(t for _, t in readouts) >= read0 + 1000 + 8000 + 40


def test_a_readout_tied_to_a_wait_through_a_cz_plays_before_the_wait(snapshot, channels, starts):
    """A review's case: x(0), measure(0), barrier(0, 1), cz(1, 2), a 3 us delay on qubit 2,
    x(2), measure(2). The barrier puts the cz, and so the wait after it on qubit 2, after
    qubit 0's readout; the readout was played with the final ones, after the wait (also
    before this session's changes)."""
    qc = QuantumCircuit(3, 2)
    qc.x(0)
    qc.measure(0, 0)
    qc.barrier(0, 1)
    qc.cz(1, 2)
    qc.delay(3000, 2, unit="dt")
    qc.x(2)
    qc.measure(2, 1)
    prog = compile_circuit(qc, snapshot, channels)
    starts_of = dict(zip(prog.acq_clbit.tolist(), prog.acq_start.tolist(), strict=True))
    assert starts_of[0] == min(starts(prog, 0)) + 40
    assert starts_of[1] >= starts_of[0] + 1000 + 3000


def test_held_readouts_follow_barriers_to_what_plays_later():
    """``held_readouts``: a readout is held where it stands when a later barrier ties its
    qubit, through chains of barriers and the ops between them, to a qubit that plays or
    measures after it; a barrier with nothing after it, or ops on other qubits without a
    barrier, hold nothing."""
    # x(0), m(0), barrier(0, 1), delay(1), barrier(1, 2), x(2), m(2)
    ops = [(0,), (0,), (0, 1), (1,), (1, 2), (2,), (2,)]
    reads = {1: 0, 6: 2}
    assert held_readouts(ops, {3}, {2, 4}, reads) == {1}
    assert held_readouts(ops[:4], {3}, {2}, {1: 0}) == set()  # only a delay after: padding
    # without barrier(0, 1) nothing ties qubit 0's readout to what qubit 2 does
    assert held_readouts([(0,), (0,), (1,), (1, 2), (2,), (2,)], {2}, {3}, {1: 0, 5: 2}) == set()
    # x(0), m(0), barrier(0, 1), cz(1, 2), x(2), m(2): through the cz
    assert held_readouts([(0,), (0,), (0, 1), (1, 2), (2,), (2,)], set(), {2},
                         {1: 0, 5: 2}) == {1}
    # m(0), barrier(0, 1), m(1): readouts in turn; m(0), m(1), barrier(0, 1): together
    assert held_readouts([(0,), (0, 1), (1,)], set(), {1}, {0: 0, 2: 1}) == {0}
    assert held_readouts([(0,), (1,), (0, 1)], set(), {2}, {0: 0, 1: 1}) == set()


def test_last_that_matter_skips_delays_and_barriers_that_tie_to_nothing_later():
    """``last_that_matter``: a qubit's last op that plays or measures, or a barrier that ties
    it to one after it; a closing barrier and a trailing delay do not count."""
    # x(1), measure(0), barrier(0, 1), x(1), measure(0)... then delay(1), barrier(0, 1)
    ops = [(1,), (0,), (0, 1), (1,), (1,), (0, 1)]
    assert last_that_matter(ops, {4}, {2, 5}) == {1: 3, 0: 2}
    assert last_that_matter([(0,), (0, 1)], set(), {1}) == {0: 0}


def test_padding_delays_follow_barriers_to_the_qubits_that_act_later():
    """``padding_delays``: a delay is padding unless a later op on its qubit plays or
    measures, or a later barrier ties its qubit to one that does, through chains of
    barriers."""
    # x(0), delay(1), barrier(0, 1), delay(1), barrier(0, 1), measure(0)
    ops = [(0,), (1,), (0, 1), (1,), (0, 1), (0,)]
    assert padding_delays(ops, {1, 3}, {2, 4}) == set()
    assert padding_delays(ops, {1, 3, 5}, {2, 4}) == {1, 3, 5}  # a delay, not a measure, last
    assert padding_delays([(0,), (1,), (1,), (0,)], {1, 2}, set()) == {1, 2}  # no barriers
    # delay(1), barrier(1, 2), delay(2), barrier(2, 0), measure(0), delay(3)
    chain = [(1,), (1, 2), (2,), (2, 0), (0,), (3,)]
    assert padding_delays(chain, {0, 2, 5}, {1, 3}) == {5}


def test_a_delay_before_a_measurement_is_kept(snapshot, channels):
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.delay(5000, 0, unit="dt")  # the wait of a T1 experiment
    qc.measure(0, 0)
    prog = compile_circuit(qc, snapshot, channels)
    assert prog.acq_start.tolist() == [5040]
