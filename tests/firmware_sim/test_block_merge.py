"""Joining consecutive blocks (``blocks.merge_consecutive``): the partition of a program into
blocks that ``PhysicsEngine.evolve`` applies in start order."""

from __future__ import annotations

from labqpu.firmware_sim.blocks import merge_consecutive

#: One pulse per qubit and kind over the pieces of these tests (so joining is allowed).
PULSES: list[dict[int, list[tuple[int, int]]]] = []


def assert_disjoint_per_qubit(blocks) -> None:
    last_end: dict[int, int] = {}
    for b0, b1, qubits, _ in sorted(blocks, key=lambda blk: blk[0]):
        for q in qubits:
            assert b0 >= last_end.get(q, 0), (q, (b0, b1, qubits), blocks)
            last_end[q] = b1


def covered(blocks) -> set[tuple[int, int]]:
    """(qubit, sample) pairs inside some block."""
    return {(q, t) for b0, b1, qubits, _ in blocks for q in qubits for t in range(b0, b1)}


def test_pieces_of_one_drive_chain_are_joined() -> None:
    """The cut pieces of a staggered chain of drives (the benchmark's layers) become one block
    on all its qubits; a flux block that follows is left alone."""
    pieces = [(0, 4, [1, 2], []), (4, 36, [1, 2, 3, 4], []), (36, 40, [0, 1, 2, 3, 4], []),
              (40, 76, [1, 2, 3, 4], [2, 4])]
    out = merge_consecutive(pieces, PULSES)
    assert out == [(0, 40, [0, 1, 2, 3, 4], []), (40, 76, [1, 2, 3, 4], [2, 4])]


def test_flux_pieces_on_one_cluster_are_joined_and_never_with_drives() -> None:
    pieces = [(40, 44, [1, 2, 3, 4], [2]), (44, 76, [1, 2, 3, 4], [2, 4]),
              (76, 80, [1, 2, 3, 4], []), (80, 90, [1, 2, 3], [2])]
    out = merge_consecutive(pieces, PULSES)
    assert out == [(40, 76, [1, 2, 3, 4], [2, 4]), (76, 80, [1, 2, 3, 4], []),
                   (80, 90, [1, 2, 3], [2])]


def test_no_join_over_another_block_on_a_qubit() -> None:
    """Joining [0, 4) on {1, 2} with [4, 36) on {1, 2, 3} would make qubit 3 part of a block
    over [0, 4), where it has a block of its own: they stay apart. Joining never changes which
    (qubit, sample) pairs a block covers beyond the union, and blocks stay disjoint per qubit."""
    pieces = [(0, 4, [1, 2], []), (0, 4, [3], []), (4, 36, [1, 2, 3], []),
              (36, 40, [3], []), (36, 50, [0, 1], [0])]
    out = merge_consecutive(pieces, PULSES)
    assert (0, 4, [1, 2], []) in out and (0, 4, [3], []) in out
    assert (4, 36, [1, 2, 3], []) in out  # q3 continues alone, q1 is in a flux block
    assert_disjoint_per_qubit(out)
    assert covered(pieces) <= covered(out)


def test_single_qubit_pieces_join_into_one_drive_block() -> None:
    pieces = [(40, 44, [0], []), (40, 44, [1, 2, 3], [2]), (44, 76, [0], []),
              (44, 76, [1, 2, 3], [2])]
    out = merge_consecutive(pieces, PULSES)
    assert out == [(40, 76, [0], []), (40, 76, [1, 2, 3], [2])]


def test_two_pulses_of_one_qubit_are_never_joined() -> None:
    """Back-to-back gates on one qubit stay separate blocks: each block's decoherence follows
    its own unitary (joined, a sequence that returns to |0> would lose its T1 errors)."""
    pieces = [(0, 40, [2], []), (40, 80, [2], []), (80, 120, [2], [])]
    drives = {2: [(0, 40), (40, 80), (80, 120)]}
    assert merge_consecutive(pieces, [drives]) == pieces
    one_pulse = {2: [(0, 120)]}
    assert merge_consecutive(pieces, [one_pulse]) == [(0, 120, [2], [])]
