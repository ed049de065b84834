"""The compiler's dynamical decoupling of dynamic circuits (``labqpu.pulse.echo``): where the
default scheduling ("auto") echoes a waiting qubit, where it must not, and that the echoes move
no operation of the circuit. lab5's qubits form the line 0-1-2-3-4."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from qiskit import QuantumCircuit

from labqpu.pulse.compiler import compile_circuit
from labqpu.pulse.dynamic import lower_dynamic
from labqpu.pulse.echo import decouple, echo_colours, echo_gaps, schedule
from labqpu.pulse.tables import tables_for

LATENCY = 200


def compiled(qc, snapshot, channels, method):
    return compile_circuit(qc, snapshot, channels, scheduling_method=method,
                           feedforward_latency_samples=LATENCY)


def drive_plays(prog, channels, q: int) -> list[tuple[int, int, int]]:
    """(start, end, block) of the plays on qubit ``q``'s drive port, in time order."""
    port = channels.output(channels.qubits[q].drive)
    return sorted((int(t), int(t) + prog.waveform(int(w)).shape[0], int(b))
                  for t, w, p, b in zip(prog.play_start, prog.play_wave, prog.play_port,
                                        prog.play_block, strict=True) if int(p) == port)


def flux_plays(prog, channels, pair: tuple[int, int]) -> list[tuple[int, int]]:
    ports = {channels.output(channels.qubits[q].flux) for q in pair}
    return sorted((int(t), int(t) + prog.waveform(int(w)).shape[0])
                  for t, w, p in zip(prog.play_start, prog.play_wave, prog.play_port,
                                     strict=True) if int(p) in ports)


def bell_then_conditional_flip() -> QuantumCircuit:
    """sx(0); cz(0, 1); sx(1); measure(0); if c0: x(1); measure(1): qubit 1 waits in
    superposition, its last sx ALAP before the if_else, through qubit 0's readout and the
    latency."""
    qc = QuantumCircuit(2, 2)
    qc.sx(0)
    qc.sx(1)
    qc.cz(0, 1)
    qc.sx(1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure(1, 1)
    return qc


def test_a_qubit_waiting_for_feed_forward_is_echoed_and_nothing_moves(snapshot, channels):
    """Qubit 1's wait between the cz and its last sx gets the echo of its colour (lab5's odd
    qubits: four x, centred at odd eighths of the slack); every other play, acquisition and
    the program's length are those of plain ALAP; qubit 0, measured and done, is not echoed."""
    qc = bell_then_conditional_flip()
    auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
    (cz,) = flux_plays(alap, channels, (0, 1))
    plain = drive_plays(alap, channels, 1)
    echoed = drive_plays(auto, channels, 1)
    extra = sorted(set(echoed) - set(plain))
    assert len(echoed) == len(plain) + 4 and len(extra) == 4, (echoed, plain)
    sx_after = min(p for p in plain if p[0] >= cz[1])
    assert cz[1] < extra[0][0] and extra[-1][1] < sx_after[0]
    edges = (extra[0][0] - cz[1], sx_after[0] - extra[-1][1])
    middles = [b[0] - a[1] for a, b in pairwise(extra)]
    assert abs(edges[0] - edges[1]) <= 4 and max(middles) - min(middles) <= 1
    assert abs(middles[0] - 2 * edges[0]) <= 2
    assert all(b == -1 for *_, b in extra)
    assert drive_plays(auto, channels, 0) == drive_plays(alap, channels, 0)
    assert auto.acq_start.tolist() == alap.acq_start.tolist()
    assert auto.duration_samples == alap.duration_samples
    # the conditional x keeps its block and its time
    assert [p for p in echoed if p[2] >= 0] == [p for p in plain if p[2] >= 0]


@pytest.mark.parametrize("method", ["alap", "asap"])
def test_only_auto_echoes(snapshot, channels, method):
    """"alap" and "asap" are the plain schedules: no echo."""
    qc = bell_then_conditional_flip()
    prog = compiled(qc, snapshot, channels, method)
    assert len(drive_plays(prog, channels, 1)) == 3  # sx, sx and the conditional x


def test_echoes_move_no_original_op(snapshot, channels):
    """Scheduled again, the padded rows keep every original row at its start sample, in a
    circuit with echoes on two qubits, an active reset and two conditional blocks."""
    qc = QuantumCircuit(4, 4)
    for a, b in ((0, 1), (2, 3)):
        qc.sx(a)
        qc.sx(b)
        qc.cz(a, b)
        qc.sx(b)
    qc.measure(0, 0)
    qc.measure(2, 2)
    qc.reset(0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    with qc.if_test((qc.clbits[2], 1)):
        qc.x(3)
    qc.sx(0)
    qc.measure([0, 1, 3], [0, 1, 3])
    tables = tables_for(snapshot, channels)
    out = lower_dynamic(qc, tables, latency_samples=LATENCY, active_reset=True)
    rows = list(out.rows)
    before = schedule(out, tables, alap=True, early=np.array(out.early))
    padded = decouple(out, tables, qc)
    after = schedule(padded, tables, alap=True, early=np.array(padded.early))
    inserted = _inserted(out, padded)
    echoed = [padded.resources[i][0] for i in inserted if padded.rows[i][0] != 0]
    # qubit 1: two echoes, around qubit 2's cz (it is a spectator); qubit 3: one echo (both of
    # colour 1 on lab5's line: four x each)
    assert sorted(echoed) == [1] * 8 + [3] * 4
    original = sorted(set(range(len(padded.rows))) - inserted)
    assert [padded.rows[i] for i in original] == rows
    assert after[original].tolist() == before.tolist()


def _inserted(out, padded) -> set[int]:
    """Rows of ``padded`` that ``decouple`` inserted (``padded`` holds ``out``'s rows in order
    with the echoes' rows between them)."""
    inserted, j = set(), 0
    for i, row in enumerate(padded.rows):
        if j < len(out.rows) and row == out.rows[j] and padded.resources[i] == out.resources[j]:
            j += 1
        else:
            inserted.add(i)
    assert j == len(out.rows)
    return inserted


def test_no_echo_after_a_measurement_or_before_the_first_gate(snapshot, channels):
    """Qubit 1 is measured, then waits for qubit 0's result (a basis state: no echo); qubit 2
    waits in |0> before its only gate, the conditional x (no echo)."""
    qc = QuantumCircuit(3, 3)
    qc.sx(0)
    qc.sx(1)
    qc.measure(1, 1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
        qc.x(2)
    qc.measure([1, 2], [1, 2])
    auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
    for q in (1, 2):
        assert drive_plays(auto, channels, q) == drive_plays(alap, channels, q)


def test_no_echo_during_free_evolution_of_a_neighbour(snapshot, channels):
    """A delay written on qubit 2 (a neighbour of qubit 1) over qubit 1's wait: a ``ZZRamsey``
    style free evolution, left alone. The same circuit with the delay on qubit 3 (not coupled
    to qubit 1) echoes qubit 1."""
    for delayed, echoes in ((2, 0), (3, 4)):
        qc = _with_delay(delayed)
        auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
        extra = len(drive_plays(auto, channels, 1)) - len(drive_plays(alap, channels, 1))
        assert extra == echoes, delayed


def _with_delay(delayed: int) -> QuantumCircuit:
    """``bell_then_conditional_flip`` on qubits 0, 1 with sx, delay(1600), sx on ``delayed``
    spanning qubit 1's wait."""
    qc = QuantumCircuit(4, 3)
    qc.sx(0)
    qc.sx(1)
    qc.cz(0, 1)
    qc.sx(delayed)
    qc.delay(1600, delayed)
    qc.sx(delayed)
    qc.sx(1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure([1, delayed], [1, 2])
    return qc


def test_no_echo_while_a_neighbour_plays_a_cz(snapshot, channels):
    """Qubit 1 waits for qubit 0's result while qubits 2 and 3 play a cz (ALAP, right before
    the if_else that also flips qubit 3): qubit 1 is a spectator of that cz, so no x on it
    overlaps the flux pulse; the rest of its wait is echoed."""
    qc = QuantumCircuit(4, 4)
    for q in range(4):
        qc.sx(q)
    qc.cz(0, 1)
    qc.cz(2, 3)
    qc.sx(1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
        qc.x(3)
    qc.measure([1, 2, 3], [1, 2, 3])
    auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
    (cz23,) = flux_plays(auto, channels, (2, 3))
    (cz01,) = flux_plays(auto, channels, (0, 1))
    extra = sorted(set(drive_plays(auto, channels, 1)) - set(drive_plays(alap, channels, 1)))
    assert len(extra) == 4
    assert all(cz01[1] <= start and end <= cz23[0] for start, end, _ in extra), (extra, cz23)


def _toggling(gaps: list[int], x_length: int) -> np.ndarray:
    """+1 / -1 per sample of an echo (``echo_gaps``), flipping at the middle of each x."""
    signs, sign = [], 1
    for k, gap in enumerate(gaps):
        if k:
            signs += [sign] * (x_length // 2)
            sign = -sign
            signs += [sign] * (x_length - x_length // 2)
        signs += [sign] * gap
    return np.array(signs)


@pytest.mark.parametrize("length", [400, 1000, 2400])
def test_staggered_echoes_refocus_detuning_and_the_zz_between_them(length):
    """Colour 0 (two x) and colour 1 (four x) over one window: each toggling function
    averages to zero (static detuning refocused) and so does their product (the ZZ between
    two coupled qubits echoed together); the same sequence on both would leave that ZZ whole.
    Exact up to the x pulses' own length and the rounding of the gaps (a few samples)."""
    x = 40
    two, four = (echo_gaps(length, x, c, 1) for c in (0, 1))
    assert len(two) == 3 and len(four) == 5
    assert sum(two) + 2 * x == sum(four) + 4 * x == length
    s0, s1 = _toggling(two, x), _toggling(four, x)
    assert abs(s0.sum()) <= 2 and abs(s1.sum()) <= 4
    assert abs((s0 * s1).sum()) <= 4
    assert (s0 * s0).sum() == length


def test_a_short_window_gets_fewer_pulses_or_none():
    """Four x of 40 samples need more than 160 samples; below, two; below 80, none."""
    assert len(echo_gaps(170, 40, 1, 1)) == 5
    assert len(echo_gaps(150, 40, 1, 1)) == 3
    assert echo_gaps(80, 40, 0, 1) is None
    assert all(g % 4 == 0 for g in echo_gaps(1000, 40, 1, 4)[:-1])


def test_echo_colours_differ_between_neighbours():
    """lab5's line alternates; lab10's ladder is two-coloured; a triangle needs three."""
    assert echo_colours([(0, 1), (1, 2), (2, 3), (3, 4)], 5) == [0, 1, 0, 1, 0]
    ladder = [(q, q + 1) for q in (0, 1, 2, 3, 5, 6, 7, 8)] + [(q, q + 5) for q in range(5)]
    colours = echo_colours(ladder, 10)
    assert set(colours) == {0, 1} and all(colours[a] != colours[b] for a, b in ladder)
    triangle = echo_colours([(0, 1), (1, 2), (0, 2)], 3)
    assert sorted(triangle) == [0, 1, 2]


def test_no_echo_after_an_active_reset(snapshot, channels):
    """Qubit 1 is reset after its superposition (measured, then flipped if it read 1), then
    waits for qubit 0's second result before an sx: it is in |0>, so no echo."""
    qc = QuantumCircuit(2, 2)
    qc.sx(0)
    qc.sx(1)
    qc.cz(0, 1)
    qc.reset(1)
    qc.measure(0, 0)
    qc.measure(0, 1)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.sx(1)
    qc.measure(1, 1)
    auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
    assert drive_plays(auto, channels, 1) == drive_plays(alap, channels, 1)
