"""Joining consecutive blocks (``blocks.merge_consecutive``): the partition of a program into
blocks that ``PhysicsEngine.evolve`` applies in start order."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

import labqpu
from labqpu.firmware_sim.blocks import block_pulses, flux_reach, merge_consecutive, single_blocks
from labqpu.firmware_sim.device import load_device, load_rack
from labqpu.firmware_sim.physics import PhysicsEngine

RACK = load_rack(Path(labqpu.__file__).parent / "data" / "lab5.toml")

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


def _merge_reference(blocks, pulses):
    """``merge_consecutive`` as first written: every check a scan over all starts and
    intervals of a qubit (quadratic), kept here as the reference of the bisecting one."""
    order = sorted(blocks, key=lambda blk: blk[0])
    starts: dict[int, list[tuple[int, int]]] = {}
    for i, (b0, _b1, qubits, _) in enumerate(order):
        for q in qubits:
            starts.setdefault(q, []).append((b0, i))
    out: list = []
    last: dict[int, int] = {}
    for i, blk in enumerate(order):
        b0, b1, qubits, fluxed = blk
        for j in sorted({last[q] for q in qubits if q in last}):
            a0, a1, a_qubits, a_fluxed = out[j]
            if a1 != b0 or bool(a_fluxed) != bool(fluxed):
                continue
            if fluxed and a_qubits != qubits:
                continue
            if any(q in last and out[last[q]][1] > a0 for q in qubits if q not in a_qubits):
                continue
            if any(b0 <= s < b1 and k != i for q in a_qubits if q not in qubits
                   for s, k in starts[q]):
                continue
            if any(sum(s < b1 and e > a0 for s, e in ivs.get(q, ())) > 1
                   for ivs in pulses for q in {*a_qubits, *qubits}):
                continue
            union = sorted({*a_qubits, *qubits})
            out[j] = (a0, b1, union, sorted({*a_fluxed, *fluxed}))
            for q in union:
                last[q] = j
            break
        else:
            out.append(blk)
            for q in qubits:
                last[q] = len(out) - 1
    return out


@pytest.mark.parametrize("seed", range(40))
def test_merging_matches_the_quadratic_reference_on_random_timelines(seed: int) -> None:
    """Random timelines of 4 qubits: consecutive pieces, each a random partition of a random
    set of qubits into blocks (some fluxed), and random drive and flux intervals per qubit
    (touching, overlapping or apart, often ending where a block starts): the bisecting
    checks give the reference's blocks."""
    rng = np.random.default_rng(seed)
    cuts = np.unique(rng.integers(0, 400, size=rng.integers(3, 30))).tolist()
    blocks = []
    for b0, b1 in itertools.pairwise(cuts):
        qubits = [q for q in range(4) if rng.random() < 0.6]
        rng.shuffle(qubits)
        while qubits:
            k = int(rng.integers(1, len(qubits) + 1))
            group, qubits = sorted(qubits[:k]), qubits[k:]
            fluxed = [q for q in group if rng.random() < 0.3] if rng.random() < 0.5 else []
            blocks.append((b0, b1, group, fluxed))
    pulses = []
    for _ in range(2):
        intervals = {}
        for q in range(4):
            # Ends on the cuts too: an interval ending where a block starts is not in it.
            size = 2 * int(rng.integers(0, 6))
            points = np.sort(rng.choice(cuts, size=size) if rng.random() < 0.5
                             else rng.integers(0, 400, size=size))
            intervals[q] = [(int(a), int(b) + (a == b)) for a, b in points.reshape(-1, 2)]
        pulses.append(intervals)
    assert merge_consecutive(blocks, pulses) == _merge_reference(blocks, pulses)


def _join_reference(engine: PhysicsEngine, blocks):
    """``PhysicsEngine._join_adjacent`` as first written: each round looks for one pair of
    overlapping groups among all pairs (quadratic), kept here as the reference of the sweep."""
    blocks = sorted(blocks)
    parent = list(range(len(blocks)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i, (_s0, e0, (q0,), _) in enumerate(blocks):
        for j in range(i + 1, len(blocks)):
            s1, _e1, (q1,), _ = blocks[j]
            if s1 >= e0:
                break
            if engine.device.coupling_hz(q0, q1):
                parent[find(j)] = find(i)
    while True:
        groups: dict[int, list[int]] = {}
        for i in range(len(blocks)):
            groups.setdefault(find(i), []).append(i)
        spans = [(min(blocks[i][0] for i in m), max(blocks[i][1] for i in m),
                  {blocks[i][2][0] for i in m}, root) for root, m in groups.items()]
        pair = next(((a[3], b[3]) for k, a in enumerate(spans) for b in spans[k + 1:]
                     if a[2] & b[2] and a[0] < b[1] and b[0] < a[1]), None)
        if pair is None:
            break
        parent[find(pair[1])] = find(pair[0])
    return [(min(blocks[i][0] for i in m), max(blocks[i][1] for i in m),
             sorted({blocks[i][2][0] for i in m}), []) for m in groups.values()]


@pytest.mark.parametrize("seed", range(40))
def test_joining_coupled_drives_matches_the_quadratic_reference(seed: int) -> None:
    """Random drive intervals on lab5's five coupled qubits (dense, so that groups chain and
    spans overlap): the per-qubit sweep gives the reference's joint blocks, in its order."""
    rng = np.random.default_rng(seed)
    engine = PhysicsEngine(load_device("lab5"), RACK.cabling)
    singles = []
    for q in range(5):
        points = np.unique(rng.integers(0, 300, size=2 * int(rng.integers(1, 12))))
        if points.size % 2:
            points = points[:-1]
        singles += [(int(a), int(b), [q], []) for a, b in points.reshape(-1, 2)]
    assert engine._join_adjacent(singles) == _join_reference(engine, singles)


def _blocks_reference(engine: PhysicsEngine, drive_iv, flux_iv):
    """``PhysicsEngine._blocks`` as first written: every joined group against every single
    and every pair of bounds against every interval (quadratic), with the engine's own
    joining, clustering, flux reach and merged single blocks (``blocks.flux_reach``,
    ``blocks.single_blocks``), which the change it checks left as they were."""
    reach = flux_reach(flux_iv, engine.device.neighbours)
    singles = single_blocks(drive_iv)
    blocks = []
    joint_drive: dict[int, list[tuple[int, int]]] = {}
    for s0, e0, qubits, _ in engine._join_adjacent(singles):
        if any(fs < e0 and fe > s0 for q in qubits for fs, fe in reach.get(q, [])):
            for b0, b1, (q,), _ in singles:
                if q in qubits and s0 <= b0 and b1 <= e0:
                    joint_drive.setdefault(q, []).append((b0, b1))
        else:
            blocks.append((s0, e0, qubits, []))
    bounds = sorted({b for ivs in (*joint_drive.values(), *flux_iv.values())
                     for iv in ivs for b in iv})
    for b0, b1 in itertools.pairwise(bounds):
        driven = [q for q, ivs in joint_drive.items()
                  if any(s0 < b1 and e0 > b0 for s0, e0 in ivs)]
        fluxed = [q for q, ivs in flux_iv.items()
                  if any(s0 < b1 and e0 > b0 for s0, e0 in ivs)]
        for cluster in engine._clusters(driven, fluxed):
            blocks.append((b0, b1, cluster, [q for q in fluxed if q in cluster]))
    return merge_consecutive(blocks, [block_pulses(singles), flux_iv])


@pytest.mark.parametrize("seed", range(40))
def test_the_block_partition_matches_the_quadratic_reference(seed: int) -> None:
    """Random drives (overlapping on a qubit too) on lab5's five qubits and random flux
    pulses on some of them, in a random qubit order, half of them on a grid where ends meet
    starts: the partition with interval tables and bisection gives the reference's blocks,
    in its order."""
    rng = np.random.default_rng(100 + seed)
    engine = PhysicsEngine(load_device("lab5"), RACK.cabling)

    grid = 20 if seed % 2 else 1  # on a coarse grid, ends meet starts often

    def intervals(count: int, longest: int) -> list[tuple[int, int]]:
        starts = grid * rng.integers(0, 400 // grid, size=count)
        return [(int(s), int(s + grid * rng.integers(1, max(2, longest // grid))))
                for s in starts]

    order = rng.permutation(5).tolist()  # the maps' qubit order is the program's
    drive_iv = {q: intervals(int(rng.integers(1, 10)), 40) for q in order
                if rng.random() < 0.8}
    flux_iv = {q: intervals(int(rng.integers(1, 4)), 60) for q in order
               if rng.random() < 0.4}
    got = engine._blocks(drive_iv, flux_iv)
    assert got == _blocks_reference(engine, drive_iv, flux_iv)
    assert any(fluxed for *_, fluxed in got) == bool(flux_iv)
