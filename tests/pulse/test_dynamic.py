"""The compiler's lowering of dynamic circuits onto feed-forward blocks (docs/protocol.md 4.5):
the latency rule, branches of one length, conditional virtual Z, active reset, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit.classical import expr

from labqpu.errors import CompilationError
from labqpu.pulse.compiler import compile_circuit

LATENCY = 200
FS = 1.0e9


def rq(export, q: int, name: str):
    return export["document"]["qubits"][str(q)][name]["value"]


def compiled(qc, snapshot, channels, method="asap"):
    return compile_circuit(qc, snapshot, channels, scheduling_method=method,
                           feedforward_latency_samples=LATENCY)


@pytest.mark.parametrize("method", ["asap", "alap"])
def test_block_starts_after_acquisition_plus_latency(snapshot, channels, method):
    """x on qubit 1 conditioned on qubit 0's result: its play belongs to block (acq 0, 1) and
    starts no earlier than the window's end plus the latency, in ASAP and ALAP."""
    qc = QuantumCircuit(2, 1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    prog = compiled(qc, snapshot, channels, method)
    window_end = int(prog.acq_start[0] + prog.acq_duration[0])
    cond = np.flatnonzero(prog.play_block >= 0)
    assert cond.size == 1 and prog.block_acq.tolist() == [0]
    assert prog.block_value.tolist() == [1]
    assert int(prog.play_start[cond[0]]) >= window_end + LATENCY
    assert abs(prog.acq_disc_axis[0]) == pytest.approx(1.0)
    # built without the constructor's checks: the checked constructor gives the same program
    assert dataclasses.replace(prog).content_hash == prog.content_hash


def test_branches_have_one_length(snapshot, channels):
    """True branch x x (80 samples), false branch sx (40): the sx after the if_else starts
    at the same sample whichever branch ran; the branches read one acquisition with opposite
    values."""
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 0)) as else_:
        qc.x(0)
        qc.x(0)
    with else_:
        qc.sx(0)
    qc.sx(0)
    prog = compiled(qc, snapshot, channels)
    drive = prog.play_port == 0
    block_start = int(prog.acq_start[0] + prog.acq_duration[0]) + LATENCY
    assert prog.block_acq.tolist() == [0, 0] and sorted(prog.block_value.tolist()) == [0, 1]
    assert prog.play_start[drive].tolist() == [block_start, block_start, block_start + 40,
                                               block_start + 80]
    assert prog.play_block[drive][-1] == -1


def test_virtual_z_in_a_branch_is_a_conditional_phase_shift(snapshot, channels, export):
    """rz(t) in a branch leaves the tracked frame alone and becomes one shift of
    -h t on the qubit's drive port in the branch's block, from the rz's sample."""
    theta = 0.7
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.rz(theta, 0)
        qc.sx(0)
    qc.sx(0)
    prog = compiled(qc, snapshot, channels)
    h = rq(export, 0, "drive_handedness")
    assert prog.shift_port.tolist() == [0] and prog.shift_block.tolist() == [0]
    assert prog.shift_phase_rad[0] == pytest.approx(-h * theta)
    assert prog.shift_start[0] == prog.play_start[prog.play_block == 0][0]
    assert np.all(prog.play_phase_rad[prog.play_port == 0] == 0.0)


def x_reset_measure() -> QuantumCircuit:
    """x, reset, measure on one qubit."""
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.reset(0)
    qc.measure(0, 0)
    return qc


def with_reset_rounds(snapshot, rounds: int | None):
    """``snapshot`` with every qubit's reset_rounds set to ``rounds`` (None: removed)."""
    from labqpu.store import Snapshot, SnapshotBuilder

    builder = SnapshotBuilder.from_snapshot(snapshot)
    for q in snapshot.qubits:
        if rounds is None:
            if "reset_rounds" in snapshot.qubits[q]:
                builder.remove_qubit(q, "reset_rounds")
        else:
            builder.set_qubit(q, "reset_rounds", rounds, "active_reset-test")
    return Snapshot.from_document(builder.build_document(), snapshot_id=2, parent_id=1)


def test_active_reset_is_measure_then_conditional_x(snapshot, channels, export):
    """Without a calibrated reset_rounds, one round."""
    snapshot = with_reset_rounds(snapshot, None)
    qc = x_reset_measure()
    prog = compiled(qc, snapshot, channels)
    readout = round(rq(export, 0, "readout_duration_s") * FS)
    assert prog.acq_clbit.tolist() == [-1, 0]
    assert prog.acq_start.tolist() == [40, 40 + readout + LATENCY + 40]
    assert prog.block_acq.tolist() == [0] and prog.block_value.tolist() == [1]
    x = np.flatnonzero(prog.play_block == 0)
    assert prog.play_start[x].tolist() == [40 + readout + LATENCY]
    passive = compile_circuit(qc, snapshot, channels, feedforward_latency_samples=LATENCY,
                              reset_method="passive")
    assert passive.block_acq.size == 0 and passive.acq_clbit.tolist() == [0]


def test_reset_plays_the_calibrated_number_of_rounds(snapshot, channels, config, export):
    """reset_rounds = 2: reset is two measure-then-conditional-x rounds, back to back, and the
    Target's reset lasts twice one round."""
    from labqpu.backend.target import build_target

    single = with_reset_rounds(snapshot, None)
    two = with_reset_rounds(snapshot, 2)
    qc = x_reset_measure()
    prog = compiled(qc, two, channels)
    readout = round(rq(export, 0, "readout_duration_s") * FS)
    round_length = readout + LATENCY + 40
    assert prog.acq_clbit.tolist() == [-1, -1, 0]
    assert prog.acq_start.tolist() == [40, 40 + round_length, 40 + 2 * round_length]
    assert prog.block_acq.tolist() == [0, 1] and prog.block_value.tolist() == [1, 1]
    for block, start in ((0, 40 + readout + LATENCY), (1, 40 + round_length + readout + LATENCY)):
        assert prog.play_start[prog.play_block == block].tolist() == [start]
    one = build_target(single, config, feedforward_latency_samples=LATENCY)
    two_rounds = build_target(two, config, feedforward_latency_samples=LATENCY)
    assert two_rounds["reset"][(0,)].duration == pytest.approx(2 * one["reset"][(0,)].duration)
    assert two_rounds["reset"][(1,)].duration == pytest.approx(2 * one["reset"][(1,)].duration)


def test_plain_circuit_program_has_no_feedforward(snapshot, channels):
    qc = QuantumCircuit(2, 2)
    qc.sx(0)
    qc.cz(0, 1)
    qc.measure([0, 1], [0, 1])
    with_ff = compiled(qc, snapshot, channels)
    assert not with_ff.has_feedforward
    assert with_ff == compile_circuit(qc, snapshot, channels, scheduling_method="asap")


def test_a_bit_no_measurement_wrote_reads_0(snapshot, channels):
    """A review's case: OpenQASM 2's ``if(c==1)`` on a register never measured was refused;
    classical bits start at 0 (OpenQASM, Qiskit, Aer). A condition on unwritten bits only is
    decided when compiling: its branch plays unconditionally or not at all, with no
    feed-forward latency (it compiles as the circuit with the branch's gates, or without
    them); on a register half measured, only the measured bit is tested."""
    for value, played in ((0, True), (1, False)):
        plain = QuantumCircuit(2, 2)
        if played:
            plain.x(1)
        plain.measure([0, 1], [0, 1])
        qc = QuantumCircuit(2, 2)
        with qc.if_test((qc.clbits[1], value)):
            qc.x(1)
        qc.measure([0, 1], [0, 1])
        program = compiled(qc, snapshot, channels)
        assert program.block_acq.shape[0] == 0  # no conditional block
        assert program.duration_samples == compiled(plain, snapshot, channels).duration_samples
        assert program.play_port.shape[0] == 2 + played  # two readouts, the x when it holds
    creg = ClassicalRegister(2, "r")
    half = QuantumCircuit(QuantumRegister(2), creg)
    half.measure(0, creg[0])
    with half.if_test((creg, 1)):  # r[1] holds 0: r == 1 is r[0] == 1
        half.x(1)
    with half.if_test((creg, 3)):  # never
        half.x(1)
    program = compiled(half, snapshot, channels)
    assert program.block_acq.tolist() == [0] and program.block_value.tolist() == [1]


def test_refusals(snapshot, channels):
    creg = ClassicalRegister(2, "r")
    wide = QuantumCircuit(QuantumRegister(1), creg)
    wide.measure(0, creg[0])
    wide.measure(0, creg[1])
    with wide.if_test((creg, 4)):
        wide.x(0)
    with pytest.raises(CompilationError, match=r"register 'r' == 4: a register of 2 bit\(s\) "
                                               r"holds 0..3"):
        compiled(wide, snapshot, channels)
    arithmetic = QuantumCircuit(QuantumRegister(1), creg)
    arithmetic.measure(0, creg[0])
    arithmetic.measure(0, creg[1])
    with arithmetic.if_test(expr.equal(expr.add(creg, 1), 2)):
        arithmetic.x(0)
    with pytest.raises(CompilationError, match=r"the operator add is not supported in a "
                                               r"condition"):
        compiled(arithmetic, snapshot, channels)
    inner = QuantumCircuit(1, 1)
    inner.measure(0, 0)
    with inner.if_test((inner.clbits[0], 1)):
        inner.measure(0, 0)
    with pytest.raises(CompilationError, match=r"'measure' .* inside an if_else branch"):
        compiled(inner, snapshot, channels)
    ok = QuantumCircuit(1, 1)
    ok.measure(0, 0)
    with ok.if_test((ok.clbits[0], 1)):
        ok.x(0)
    with pytest.raises(CompilationError, match=r"if_else needs feed-forward"):
        compile_circuit(ok, snapshot, channels)


def _blocks(prog) -> list[tuple[int, int, int]]:
    return list(zip(prog.block_acq.tolist(), prog.block_value.tolist(),
                    prog.block_parent.tolist(), strict=True))


def test_register_condition_is_a_chain_and_its_else_disjoint_blocks(snapshot, channels):
    """if r == 2 (r0 = 0 and r1 = 1): the true branch is in the chain (acq 0 = 0) -> (acq 1 =
    1); the false branch is a copy in (acq 0 = 1) and in (acq 0 = 0) -> (acq 1 = 0), which never
    run together. Every copy starts after both windows plus the latency."""
    r = ClassicalRegister(2, "r")
    qc = QuantumCircuit(QuantumRegister(2), r)
    qc.measure(0, r[0])
    qc.measure(1, r[1])
    with qc.if_test((r, 2)) as else_:
        qc.x(0)
    with else_:
        qc.sx(1)
    prog = compiled(qc, snapshot, channels)
    assert _blocks(prog) == [(0, 0, -1), (1, 1, 0), (1, 0, 0), (0, 1, -1)]
    assert prog.has_nested_blocks
    x_play = np.flatnonzero(prog.play_block == 1)
    sx_plays = np.flatnonzero(np.isin(prog.play_block, [2, 3]))  # bit 1 differs, bit 0 does
    assert x_play.size == 1 and sx_plays.size == 2
    assert prog.play_start[sx_plays[0]] == prog.play_start[sx_plays[1]]
    assert prog.play_port[sx_plays[0]] == prog.play_port[sx_plays[1]]
    last_end = int(np.max(prog.acq_start + prog.acq_duration))
    assert int(np.min(prog.play_start[prog.play_block >= 0])) >= last_end + LATENCY
    assert dataclasses.replace(prog).content_hash == prog.content_hash
    assert not np.any(prog.block_parent[prog.block_acq == 0] >= 0)  # r0 is read first


def test_nested_if_else_goes_under_each_block_of_its_branch(snapshot, channels):
    """if r0 == 1 { if r1 == 1: x } else { if r1 == 0: x }: each inner block has its outer
    branch's block as parent; a one-bit condition alone stays unnested (as before nesting)."""
    r = ClassicalRegister(2, "r")
    qc = QuantumCircuit(QuantumRegister(2), r)
    qc.measure(0, r[0])
    qc.measure(1, r[1])
    with qc.if_test((r[0], 1)) as else_, qc.if_test((r[1], 1)):
        qc.x(1)
    with else_, qc.if_test((r[1], 0)):
        qc.x(1)
    prog = compiled(qc, snapshot, channels)
    assert _blocks(prog) == [(0, 1, -1), (1, 1, 0), (0, 0, -1), (1, 0, 2)]
    assert sorted(prog.play_block[prog.play_block >= 0].tolist()) == [1, 3]
    single = QuantumCircuit(1, 1)
    single.measure(0, 0)
    with single.if_test((single.clbits[0], 1)):
        single.x(0)
    flat = compiled(single, snapshot, channels)
    assert not flat.has_nested_blocks and "block_parent" not in flat.to_wire()[0]


@pytest.mark.parametrize(("condition", "truth"), [
    (lambda r: expr.logic_or(expr.logic_not(r[0]), r[1]), lambda b0, b1: (not b0) or b1),
    (lambda r: expr.not_equal(r, 1), lambda b0, b1: (b0, b1) != (1, 0)),
    (lambda r: expr.greater_equal(r, 2), lambda b0, b1: b1 == 1),
    (lambda r: expr.equal(expr.bit_xor(r, 3), 0), lambda b0, b1: b0 and b1),
    (lambda r: expr.logic_and(r[0], expr.logic_not(r[0])), lambda b0, b1: False),
    (lambda r: expr.equal(expr.shift_right(r, 1), 1), lambda b0, b1: b1 == 1),
])
def test_a_classical_expression_runs_exactly_where_it_holds(snapshot, channels, condition,
                                                            truth):
    """The true branch's blocks run, and the false branch's do not, for exactly the results
    where the expression holds: checked for all four outcomes by following each block's
    chain of parents (the controller's rule)."""
    r = ClassicalRegister(2, "r")
    qc = QuantumCircuit(QuantumRegister(2), r)
    qc.measure(0, r[0])
    qc.measure(1, r[1])
    with qc.if_test(condition(r)) as else_:
        qc.x(0)
    with else_:
        qc.sx(1)
    prog = compiled(qc, snapshot, channels)
    lone_x = QuantumCircuit(2)
    lone_x.x(0)
    x_port = int(compiled(lone_x, snapshot, channels).play_port[0])

    def runs(block: int, results: tuple[int, int]) -> bool:
        while block >= 0:
            if results[prog.block_acq[block]] != prog.block_value[block]:
                return False
            block = int(prog.block_parent[block])
        return True

    after = prog.play_start > int(np.max(prog.acq_start))  # the branches' plays
    for b0 in (0, 1):
        for b1 in (0, 1):
            played = [int(prog.play_port[i]) for i in np.flatnonzero(after)
                      if runs(int(prog.play_block[i]), (b0, b1))]
            assert len(played) == 1, (b0, b1, played)  # exactly one branch, once
            assert (played[0] == x_port) == bool(truth(b0, b1)), (b0, b1, played)


def test_a_nested_condition_does_not_test_a_result_its_block_already_fixed(snapshot,
                                                                          channels):
    """if r0 == 1 { if r == 3: x } else { if r == 3: sx }: inside (r0 = 1) only r1 is tested;
    inside (r0 = 0) r == 3 can never hold, so the sx gets no block at all. No block's chain
    names an acquisition twice."""
    r = ClassicalRegister(2, "r")
    qc = QuantumCircuit(QuantumRegister(2), r)
    qc.measure(0, r[0])
    qc.measure(1, r[1])
    with qc.if_test((r[0], 1)) as else_, qc.if_test((r, 3)):
        qc.x(1)
    with else_, qc.if_test((r, 3)):
        qc.sx(1)
    prog = compiled(qc, snapshot, channels)
    assert _blocks(prog) == [(0, 1, -1), (1, 1, 0)]
    assert prog.play_block[prog.play_block >= 0].tolist() == [1]
    for b in range(prog.block_acq.shape[0]):
        seen = []
        while b >= 0:
            seen.append(int(prog.block_acq[b]))
            b = int(prog.block_parent[b])
        assert len(seen) == len(set(seen))


def test_an_if_else_after_its_bit_is_measured_again_reads_the_new_result(snapshot, channels):
    """c0 measured, if c0: x; c0 measured again, if c0: x. Each if_else reads the acquisition
    that last wrote c0 when it comes: two blocks on acquisitions 0 and 1 (a cached decision
    tree of the first once answered the second too)."""
    qc = QuantumCircuit(2, 2)
    qc.x(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.x(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(1)
    qc.measure(1, 1)
    prog = compiled(qc, snapshot, channels)
    assert _blocks(prog) == [(0, 1, -1), (1, 1, -1)]
    assert sorted(prog.play_block[prog.play_block >= 0].tolist()) == [0, 1]


def test_a_condition_reads_only_the_bits_it_depends_on(snapshot, channels):
    """if c[1] (an index into a 3-bit register) and if (c << 1) == 2 need only c1, and c0 and
    c1: the other bits need no measurement and get no block."""
    c = ClassicalRegister(3, "c")
    for condition, blocks in ((lambda: expr.index(c, 1), [(0, 1, -1)]),
                              (lambda: expr.equal(expr.shift_left(c, 1), 2), None)):
        qc = QuantumCircuit(QuantumRegister(3), c)
        qc.measure(1, c[1])
        if blocks is None:
            qc.measure(0, c[0])
        with qc.if_test(condition()):
            qc.x(2)
        prog = compiled(qc, snapshot, channels)
        if blocks is not None:
            assert _blocks(prog) == blocks
        else:  # c0 == 1 and c1 == 0 (c2 falls off the 3-bit shift)
            assert sorted(int(prog.acq_clbit[a]) for a, _, _ in _blocks(prog)) == [0, 1]


def test_auto_plays_the_gates_between_a_two_qubit_gate_and_a_measurement_early(snapshot,
                                                                               channels):
    """In ``sx(1); cz(0, 1); sx(1); measure(0); if c0: x(2); x(3); measure(1..3)`` the default
    ("auto") plays qubit 1's second sx right after the cz, so that the qubit waits for the
    feed-forward in its measurement basis; "alap" plays it right before the readout. Qubit 3's
    x has no two-qubit gate before it and stays ALAP (its qubit waits in |0>) under both.
    Qubit 1 then waits in its measurement basis, where nothing changes its outcome: no echo
    (``labqpu.pulse.echo``)."""
    qc = QuantumCircuit(4, 4)
    qc.sx(1)
    qc.cz(0, 1)
    qc.sx(1)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)):
        qc.x(2)
    qc.x(3)
    qc.measure([1, 2, 3], [1, 2, 3])
    port = {q: channels.output(channels.qubits[q].drive) for q in range(4)}
    flux = {channels.output(channels.qubits[q].flux) for q in (0, 1)}

    def plays(prog, ports):
        """(start, end) of the plays on ``ports``, in time order."""
        return sorted((int(t), int(t) + prog.waveform(int(w)).shape[0])
                      for t, w, p in zip(prog.play_start, prog.play_wave, prog.play_port,
                                         strict=True) if int(p) in ports)

    auto, alap = (compiled(qc, snapshot, channels, m) for m in ("auto", "alap"))
    (cz,) = plays(auto, flux)
    readout = int(auto.acq_start[auto.acq_qubit == 1][0])
    assert readout == int(alap.acq_start[alap.acq_qubit == 1][0])
    assert plays(auto, {port[1]})[1][0] == cz[1]
    assert len(plays(auto, {port[1]})) == 2
    assert plays(alap, {port[1]})[1][1] == readout
    assert plays(auto, {port[3]}) == plays(alap, {port[3]})
    assert plays(auto, {port[3]})[0][1] == readout
    assert auto.duration_samples == alap.duration_samples


@pytest.mark.parametrize("method", ["asap", "alap", "auto"])
def test_if_elses_that_read_one_result_share_its_latency(snapshot, channels, method):
    """Three if_else on one register, each flipping another qubit (a repetition code's
    corrections): they wait the latency once, after the acquisitions, and play at the same
    sample. Each used to hold the bits it read, so they ran one after another, each waiting
    the latency again. A bit measured again is waited for again."""
    qc = QuantumCircuit(5, 2)
    qc.measure(1, 0)
    qc.measure(3, 1)
    for value, q in ((1, 0), (3, 2), (2, 4)):
        with qc.if_test((qc.cregs[0], value)):
            qc.x(q)
    prog = compiled(qc, snapshot, channels, method)
    window_end = int(max(prog.acq_start + prog.acq_duration))
    starts = {int(t) for t, b in zip(prog.play_start, prog.play_block, strict=True) if b >= 0}
    assert starts == {window_end + LATENCY}, (starts, window_end)

    again = QuantumCircuit(2, 1)
    again.measure(0, 0)
    with again.if_test((again.clbits[0], 1)):
        again.x(1)
    again.measure(0, 0)
    with again.if_test((again.clbits[0], 1)):
        again.x(1)
    prog = compiled(again, snapshot, channels, method)
    ends = sorted(int(a + d) for a, d in zip(prog.acq_start, prog.acq_duration, strict=True))
    conditional = sorted(int(t) for t, b in zip(prog.play_start, prog.play_block, strict=True)
                         if b >= 0)
    assert conditional[0] >= ends[0] + LATENCY and conditional[1] >= ends[1] + LATENCY


def test_a_branch_decided_never_to_play_adds_no_latency(snapshot, channels):
    """A review's case: ``if (c2 == 1) { if (c0 == 1) x(1) }`` with c2 never measured waited
    the feed-forward latency for c0 and held its readout mid-circuit, though the branch never
    plays: it compiles as the circuit without it. A register of 16 bits with one measured is
    tested on that bit (it was refused: over 12 bits)."""
    plain = QuantumCircuit(2, 3)
    plain.x(0)
    plain.measure(0, 0)
    nested = plain.copy()
    with nested.if_test((nested.clbits[2], 1)), nested.if_test((nested.clbits[0], 1)):
        nested.x(1)
    assert compiled(nested, snapshot, channels).duration_samples == \
        compiled(plain, snapshot, channels).duration_samples
    wide = ClassicalRegister(16, "w")
    qc = QuantumCircuit(QuantumRegister(2), wide)
    qc.measure(0, wide[0])
    with qc.if_test((wide, 1)):
        qc.x(1)
    program = compiled(qc, snapshot, channels)
    assert program.block_acq.tolist() == [0] and program.block_value.tolist() == [1]
