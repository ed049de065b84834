"""Drive blocks on coupled transmons: the part of ``PhysicsEngine`` that applies drives.

A block is a stretch of samples in which some transmons are driven and no flux pulse reaches
them (``PhysicsEngine._blocks``). With always-on coupling the transmons are never independent:

* one driven transmon whose neighbours idle: its propagator for each configuration of the
  neighbours' levels (static ZZ shifts its levels), exact, applied conditioned on them
  (``_apply_drive``);
* overlapping drives on coupled transmons: local propagators exactly, the pair terms between
  them and towards idle neighbours to first order in the toggling frame of the drives
  (``_apply_joint_drive``, Magnus; error ~ (2 pi ZZ T)^2 / 2). When the drives barely turn
  within the block (a few samples where the edges of two pulses overlap), the block is applied
  as each transmon's drive conditioned on the others' levels, one after the other (a pass over
  the state each instead of ~10) when, for every pair, this differs from the joint evolution
  by less than :data:`SEQUENTIAL_CROSS_RAD` (``coupling.sequential_pair_generator``).

Operators are expressed in the deferred ZZ frame of :meth:`PhysicsEngine.evolve`: the stored
density matrix carries the register's pair phases only up to ``ctx.anchor``.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from labqpu.firmware_sim.coupling import (
    magnus_conditional_generator,
    magnus_pair_generator,
    sequential_pair_generator,
    toggled_projectors,
    trapezoid_weights,
)
from labqpu.firmware_sim.density import LEVELS, _level_numbers, kron_identity
from labqpu.firmware_sim.propagation import (
    _transmon_path_kernel,
    _transmon_propagate_kernel,
    drive_phase_key,
    rotate_drive_phase_stack,
)

#: Bound of the cache of joint drive blocks (entries).
CACHE_JOINT_ENTRIES = 256
#: Largest difference (rad, 2 pi times the spectral norm of ``sequential_pair_generator``)
#: between consecutive conditioned one-transmon drives and the joint evolution, for any pair
#: of a joint drive block, below which the block is applied as those drives: the state then
#: differs by about this much in norm (an infidelity ~ its square), where the joint
#: treatment's own Magnus error is ~(2 pi ZZ T)^2 / 2, ~1e-5 for a 2-sample block and ~1e-3
#: for a 40-sample one on lab5.
SEQUENTIAL_CROSS_RAD = 1e-5
#: Neighbour configurations grouped by equal level shifts that an engine keeps (one set per
#: qubit and dressed model: ``DriveBlocks._conditional_stack``).
CACHE_SHIFT_GROUPS = 256
#: Runs' shares each thread keeps for later runs of the same program under the same settings
#: (:class:`RunShares`).
RUN_SHARES_KEPT = 4
#: Bytes of kept shares per thread (their rendered samples and arrays) beyond which the oldest
#: are let go after a run: one long program's rendering alone can take hundreds of MB.
RUN_SHARES_BYTES = 64 * 2**20
#: Bytes of flux-block propagators one share holds (``RunShare.segments``; ~105 kB each on
#: four transmons, ~0.9 MB on five): a long program keeps those of its first blocks only.
RUN_SHARE_SEGMENT_BYTES = 16 * 2**20


def _deferred_zz(u: np.ndarray, zz_hz: np.ndarray, t0: int, t1: int, fs: float) -> np.ndarray:
    """exp(+i 2 pi Z t1 / fs) u exp(-i 2 pi Z t0 / fs) for a diagonal Z given as ``zz_hz``
    (shape (..., d), matching ``u`` (..., d, d)): a block's operator in the deferred ZZ frame
    anchored ``t0`` samples before its start and ``t1`` samples before its end."""
    left = np.exp(2j * np.pi * zz_hz * (t1 / fs))
    right = np.exp(-2j * np.pi * zz_hz * (t0 / fs))
    return left[..., :, None] * u * right[..., None, :]


@dataclass
class RunShare:
    """What the evolutions of one program under one setting on one register share: the
    quasi-static chunks of a run differ only in their frequency offsets, and the residual
    excitation chain in its starting state (``shots.run_shots``). Everything here is computed
    before the offsets' frames are applied; an ``evolve`` on another register starts afresh
    (``for_order``)."""

    #: The program and settings (``physics.WireProgram``, ``physics.Settings``) the share
    #: belongs to: ``PhysicsEngine.evolve`` refuses it for any other.
    program: Any = None
    settings: Any = None
    #: The evolved qubits (sorted) these entries were computed for; None before first use.
    order: tuple[int, ...] | None = None
    #: The program's samples per port and play intervals per qubit (``PhysicsEngine._render``):
    #: they depend on the program only, so a share for another register keeps them.
    rendering: tuple | None = None
    #: Drive term per qubit over the whole program, before the offset frame (``_drive_hz``).
    drives: dict[int, np.ndarray] = field(default_factory=dict)
    #: Phase split of those drives, ``drive_phase_key`` (``DriveBlocks._split``): its key is
    #: what the crosstalk of the same pulse shares.
    splits: dict[tuple[int, int, int], tuple[float, np.ndarray, bytes]] = field(
        default_factory=dict)
    #: Per driven qubit: its evolved neighbours and the pair energies of its levels in each of
    #: their configurations (``DriveBlocks._controls``).
    controls: dict[int, tuple[list[int], np.ndarray]] = field(default_factory=dict)
    #: Conditioned propagators of a one-transmon drive block in the deferred ZZ frame, per
    #: (qubit, start, end, anchor, edge), before the offset's phase
    #: (``DriveBlocks._apply_drive``).
    stacks: dict[tuple[int, int, int, int, str | None], np.ndarray] = field(
        default_factory=dict)
    #: The register's pair phases over a stretch, per length in samples (``_advance_zz``).
    zz_phases: dict[int, np.ndarray] = field(default_factory=dict)
    #: Propagators of flux blocks per (cluster, fluxed qubits, start, end, anchor, with their
    #: drives), before the offsets' frame (``ClusterBlocks._apply_segment``), up to
    #: :data:`RUN_SHARE_SEGMENT_BYTES`.
    segments: dict[tuple, np.ndarray] = field(default_factory=dict)
    #: Per flux block (cluster, start, end): (its drives taken out of it or None, the sample
    #: it is cut at or None) (``EdgeDrives._block_plan``; decided at the share's first run).
    edges: dict[tuple, tuple] = field(default_factory=dict)

    def for_order(self, order: list[int]) -> RunShare:
        """This share if it belongs to the register ``order`` (or to none yet), else a new
        one."""
        if self.order is None:
            self.order = tuple(order)
        if self.order == tuple(order):
            return self
        return RunShare(self.program, self.settings, tuple(order), self.rendering)


def _content_key(prog: Any, settings: Any) -> tuple:
    """What a :class:`RunShare`'s entries depend on: every array of ``prog``
    (``physics.WireProgram``) with its dtype and shape, its duration, and the LO and current
    settings (``physics.Settings``)."""
    digest = hashlib.blake2b(digest_size=16)
    for f in fields(prog):
        value = getattr(prog, f.name)
        if isinstance(value, np.ndarray):
            digest.update(f"{f.name}{value.dtype.str}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        else:
            digest.update(f"{f.name}={value!r}".encode())
    return (digest.digest(), tuple(sorted(settings.los.items())),
            tuple(sorted(settings.currents.items())))


def _share_bytes(share: RunShare) -> int:
    """Bytes of the arrays ``share`` holds."""
    total = 0 if share.rendering is None else int(share.rendering[0].nbytes)
    for entries in (share.drives, share.stacks, share.zz_phases, share.segments):
        total += sum(int(v.nbytes) for v in entries.values())
    total += sum(int(v[1].nbytes) for v in share.splits.values())
    total += sum(int(v[1].nbytes) for v in share.controls.values())
    return total


class RunShares:
    """The shares of the last :data:`RUN_SHARES_KEPT` runs of each thread, by the content of
    their program and settings: a later run of the same program under the same settings (a
    repeated job) starts with what they computed (~8 % of a warm 5-qubit run). Per thread,
    because a share is filled while its run evolves; several controllers of one rack may run
    on one engine at once."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, prog: Any, settings: Any) -> RunShare:
        """A share for a run of ``prog`` under ``settings``: a kept one (now bound to these
        objects) or a new one."""
        kept: OrderedDict | None = getattr(self._local, "kept", None)
        if kept is None:
            kept = self._local.kept = OrderedDict()
        key = _content_key(prog, settings)
        share = kept.get(key)
        if share is None:
            share = kept[key] = RunShare(prog, settings)
            while len(kept) > RUN_SHARES_KEPT:
                kept.popitem(last=False)
        else:
            kept.move_to_end(key)
            share.program, share.settings = prog, settings
        return share

    def trim(self) -> None:
        """Let this thread's oldest shares go until the kept ones hold at most
        :data:`RUN_SHARES_BYTES` (called when a run ends: a share fills while its run
        evolves)."""
        kept: OrderedDict | None = getattr(self._local, "kept", None)
        if not kept:
            return
        sizes = {key: _share_bytes(share) for key, share in kept.items()}
        total = sum(sizes.values())
        for key in list(kept):
            if total <= RUN_SHARES_BYTES:
                break
            total -= sizes[key]
            del kept[key]


@dataclass
class _RunContext:
    """What the block operations of one :meth:`PhysicsEngine.evolve` call share."""

    samples: np.ndarray
    settings: Any  # physics.Settings
    phi_dc: dict[int, float]
    model: Any  # coupling.DressedModel
    order: list[int]
    pos: dict[int, int]
    local: Any  # local.LocalChannels
    stop: dict[int, int]
    zz_all: np.ndarray
    anchor: int
    #: Frequency offset (Hz) per qubit, applied as a frame at each block's centre (``noise``).
    offset_hz: dict[int, float] = field(default_factory=dict)
    #: What this evolution shares with the run's other evolutions (:class:`RunShare`).
    share: RunShare = field(default_factory=RunShare)


def _cycles_exp(gen: np.ndarray) -> np.ndarray:
    """exp(-i 2 pi G) of a Hermitian generator G (cycles; one matrix, or a stack of them) by
    its eigendecomposition: a Magnus generator of a block is Hermitian, and ``eigh`` costs a
    fraction of ``scipy.linalg.expm`` on these 3x3 and 9x9 matrices."""
    w, v = np.linalg.eigh(gen)
    return (v * np.exp(-2j * np.pi * w)[..., None, :]) @ np.swapaxes(v, -1, -2).conj()


class DriveBlocks:
    """Mixin of :class:`~labqpu.firmware_sim.physics.PhysicsEngine`: drive blocks (needs the
    engine's ``device``, ``cache_1q``, ``_joint_cache``, ``joint_cache_hits``,
    ``_shift_groups`` and ``_drive_hz``)."""

    def _prepare(self, ctx: _RunContext, qubits: list[int], b0: int) -> None:
        """Bring ``qubits`` up to sample ``b0`` (never past their acquisition) and apply their
        pending local channels, so that a multi-qubit operation can follow."""
        for q in qubits:
            ctx.local.idle(q, min(b0, ctx.stop[q]))
            ctx.local.flush(q)

    def _conditional_stack(self, q: int, z: np.ndarray, shifts_hz: np.ndarray, alpha_hz: float,
                           split: tuple[float, np.ndarray, bytes] | None = None) -> np.ndarray:
        """Propagators of transmon ``q`` under drive ``z`` for each neighbour configuration,
        shape (configs, 3, 3).

        ``shifts_hz[c, n]`` is the pair energy sum_p Z_qp(n, c_p) of level n of ``q`` with
        its neighbours in configuration c; the levels are L_q(n) + shifts[c, n] (Schroedinger
        picture). Cached by the phase-normalised drive; the drive phase is applied as a frame
        change (``split``: ``drive_phase_key(z)`` when the caller has it).
        """
        dt = 1.0 / self.device.sample_rate_hz
        alpha = float(alpha_hz)
        phi, z0, zkey = split or drive_phase_key(z)
        shifts_key = shifts_hz.tobytes()
        key = ("cond", q, z.size, zkey, shifts_key, alpha)
        stack = self.cache_1q.get(key)
        if stack is None:
            groups = self._shift_groups.get(shifts_key)  # the same for all of q's drives
            if groups is None:
                if len(self._shift_groups) >= CACHE_SHIFT_GROUPS:
                    self._shift_groups.clear()
                groups = self._shift_groups[shifts_key] = np.unique(shifts_hz, axis=0,
                                                                    return_inverse=True)
            uniq, inverse = groups
            us = np.empty((uniq.shape[0], LEVELS, LEVELS), dtype=np.complex128)
            for i, sh in enumerate(uniq):
                us[i] = _transmon_propagate_kernel(z0, np.full(z.size, sh[1]),
                                                   alpha + sh[2] - 2.0 * sh[1], dt)
            stack = self.cache_1q.put(key, us[inverse.reshape(-1)])
        return rotate_drive_phase_stack(stack, phi)

    def _local_path(self, q: int, z: np.ndarray, alpha_hz: float) -> np.ndarray:
        """Cumulative local propagators of ``q`` (dressed levels, no pair terms) at every
        sample boundary, shape (n + 1, 3, 3); cached, drive phase as a frame change."""
        phi, z0, zkey = drive_phase_key(z)
        alpha = float(alpha_hz)
        key = ("path", q, z.size, zkey, alpha)
        path = self.cache_1q.get(key)
        if path is None:
            path = self.cache_1q.put(key, _transmon_path_kernel(
                z0, np.zeros(z.size), alpha, 1.0 / self.device.sample_rate_hz))
        return rotate_drive_phase_stack(path, phi)

    def _controls(self, ctx: _RunContext, q: int) -> tuple[list[int], np.ndarray]:
        """``q``'s evolved neighbours and ``shifts[c, n]``, the pair energy (Hz) of level n of
        ``q`` with them in configuration c (first neighbour most significant); once per run."""
        hit = ctx.share.controls.get(q)
        if hit is None:
            model = ctx.model
            controls = [p for p in model.neighbours(q) if p in ctx.pos]
            shifts = np.zeros((LEVELS ** len(controls), LEVELS))
            for ci, c in enumerate(itertools.product(range(LEVELS), repeat=len(controls))):
                for p, m in zip(controls, c, strict=True):
                    shifts[ci] += model.pair(q, p)[:, m]
            hit = ctx.share.controls[q] = (controls, shifts)
        return hit

    def _offset_phase(self, ctx: _RunContext, q: int, b0: int, b1: int) -> float:
        """Phase (rad) 2 pi delta_q t_c by which ``q``'s frequency offset turns a drive block
        over [b0, b1) (``noise`` module: the frame at the block's centre t_c); 0 without."""
        offset = ctx.offset_hz.get(q)
        return math.pi * offset * (b0 + b1) / self.device.sample_rate_hz if offset else 0.0

    def _split(self, ctx: _RunContext, q: int, b0: int, b1: int
               ) -> tuple[float, np.ndarray, bytes]:
        """``drive_phase_key`` of ``q``'s drive over [b0, b1) without its frequency offset, once
        per run (``RunShare.splits``)."""
        split = ctx.share.splits.get((q, b0, b1))
        if split is None:
            split = ctx.share.splits[(q, b0, b1)] = drive_phase_key(
                self._drive_hz(ctx, q, b0, b1, offset=False))
        return split

    def _drive_split(self, ctx: _RunContext, q: int, b0: int, b1: int
                     ) -> tuple[float, np.ndarray, bytes]:
        """:meth:`_split` turned by ``q``'s frequency offset (the offset's phase added)."""
        phi, z0, key = self._split(ctx, q, b0, b1)
        return phi + self._offset_phase(ctx, q, b0, b1), z0, key

    def _apply_drive(self, ctx: _RunContext, q: int, b0: int, b1: int,
                     edge: str | None = None) -> None:
        """A drive block on one transmon whose coupled neighbours idle: exact in the dressed
        basis, as a unitary on ``q`` conditioned on the neighbours' levels (static ZZ shifts
        the transmon's levels). The propagators in the deferred ZZ frame are computed once per
        run (``RunShare.stacks``); the frequency offset turns them as a frame change (the ZZ
        frame and the drive's phase are both diagonal, so they commute).

        ``edge`` ("head" or "tail"): the drive is the edge of a flux block whose propagator,
        applied after it ("head") or before it ("tail"), already holds ``q``'s idle evolution
        over [b0, b1) (``EdgeDrives._find_edge``); the drive's propagator is then taken in
        the interaction picture of that idle evolution (exp(+i 2 pi L_q (b1 - b0) / fs) on the
        side the flux block's propagator meets), so that nothing is counted twice."""
        pos = ctx.pos
        controls, shifts = self._controls(ctx, q)
        memo = (q, b0, b1, ctx.anchor, edge)
        stack = ctx.share.stacks.get(memo)
        if stack is None:
            fs = self.device.sample_rate_hz
            stack = self._conditional_stack(q, self._drive_hz(ctx, q, b0, b1, offset=False),
                                            shifts, ctx.model.local_hz[q][2],
                                            self._split(ctx, q, b0, b1))
            if controls:
                stack = _deferred_zz(stack, shifts, b0 - ctx.anchor, b1 - ctx.anchor, fs)
            if edge is not None:
                undo = np.exp(2j * np.pi * np.asarray(ctx.model.local_hz[q]) * (b1 - b0) / fs)
                stack = undo[None, :, None] * stack if edge == "head" \
                    else stack * undo[None, None, :]
            stack.flags.writeable = False  # shared by the run's evolutions
            ctx.share.stacks[memo] = stack
        theta = self._offset_phase(ctx, q, b0, b1)
        ctx.local.idle(q, b0)
        if controls:
            # The controls' pending channels (idle decoherence and diagonal phases) are left
            # pending: only their relaxation fails to commute with the conditioning, an error
            # of (idle time / T1) x (ZZ x pulse length).
            ctx.local.rho.apply_controlled_channel(stack, ctx.local.take(q),
                                                   [pos[p] for p in controls], pos[q], theta)
        else:
            ctx.local.unitary(q, rotate_drive_phase_stack(stack[0], theta))
        ctx.local.decohere(q, b1)

    def _apply_joint_drive(self, ctx: _RunContext, qubits: list[int], b0: int, b1: int
                           ) -> None:
        """Overlapping drives on coupled transmons: each transmon's local propagator, with the
        pair terms touching them to first order in the toggling frame of the drives (Magnus,
        error of order (2 pi ZZ T)^2 / 2, and of the same order for taking the product of the
        pair terms' exponentials). The deferred ZZ frame is moved to the block's end first
        (one diagonal pass that also carries the block's own pair phases)."""
        model, pos, rho = ctx.model, ctx.pos, ctx.local.rho
        fs = self.device.sample_rate_hz
        inner = [(p, q) for p in qubits for q in qubits if p < q and (p, q) in model.zz_hz]
        outer = [(q, p) for q in qubits for p in model.neighbours(q)
                 if p in pos and p not in qubits]
        phases, ops = self._joint_ops(ctx, qubits, inner, outer, b0, b1)
        if ops is None:  # the drives barely turn: one conditioned drive after the other,
            for q in qubits:  # in the order _joint_ops checked
                self._apply_drive(ctx, q, b0, b1)
            return
        if b0 > ctx.anchor:
            self._advance_zz(ctx, b0)
        self._prepare(ctx, qubits, b0)
        levels = _level_numbers(len(ctx.order))
        touch = np.zeros(LEVELS ** len(ctx.order))
        for a, b in inner + outer:
            touch += model.pair(a, b)[levels[pos[a]], levels[pos[b]]]
        zz_all = ctx.zz_all
        diagonal = np.exp(-2j * np.pi * (zz_all * (b1 - ctx.anchor) - touch * (b1 - b0)) / fs)
        ctx.anchor = b1
        r = {q: np.exp(1j * phases[q] * np.arange(LEVELS)) for q in qubits}
        product = []
        for u, controls, targets in ops:
            rot = r[targets[0]] if len(targets) == 1 else np.outer(r[targets[0]],
                                                                    r[targets[1]]).reshape(-1)
            product.append(((rot[:, None] * u) * rot.conj()[None, :],
                            [pos[p] for p in controls], [pos[q] for q in targets]))
        # the diagonal and the operators as one product: one adjoint for the whole block
        rho.apply_product(product, diagonal)
        for q in qubits:
            ctx.local.decohere(q, b1)

    def _joint_ops(self, ctx: _RunContext, qubits: list[int], inner: list[tuple[int, int]],
                   outer: list[tuple[int, int]], b0: int, b1: int
                   ) -> tuple[dict[int, float],
                              list[tuple[np.ndarray, list[int], list[int]]] | None]:
        """The operators of a joint drive block in application order, (u, controls, targets),
        for phase-normalised drives (cached), and the drive phase of each qubit: turn each
        operator by R(phase) on its targets. None instead of the operators when, for every
        inner pair, conditioned one-transmon drives applied in the order of ``qubits`` differ
        from the joint evolution by less than :data:`SEQUENTIAL_CROSS_RAD`
        (``sequential_pair_generator``): the block is then applied as those drives."""
        model = ctx.model
        n = b1 - b0
        split = {q: self._drive_split(ctx, q, b0, b1) for q in qubits}
        key = ("joint", tuple(qubits), n, tuple(split[q][2] for q in qubits), tuple(inner),
               tuple(outer), model.freq_hz)
        phases = {q: split[q][0] for q in qubits}
        if key in self._joint_cache:
            self.joint_cache_hits += 1
            return phases, self._joint_cache[key]
        w = trapezoid_weights(n, 1.0 / self.device.sample_rate_hz)
        paths = {q: self._local_path(q, split[q][1], model.local_hz[q][2]) for q in qubits}
        proj = {q: toggled_projectors(paths[q]) for q in qubits}
        # the spectral norm of each (Hermitian) generator: its largest |eigenvalue|
        cross = [2 * np.pi * np.abs(np.linalg.eigvalsh(sequential_pair_generator(
            model.pair(p, q), proj[p], proj[q], w, qubits.index(p) < qubits.index(q)))).max()
            for p, q in inner]
        if max(cross, default=0.0) < SEQUENTIAL_CROSS_RAD:
            self._store_joint(key, None)
            return phases, None
        ops: list[list] = []
        for p, q in inner:
            gen = magnus_pair_generator(model.pair(p, q), proj[p], proj[q], w)
            ops.append([_cycles_exp(gen)[None], [], [p, q]])
        for q, p in outer:
            gen = magnus_conditional_generator(model.pair(q, p), proj[q], w)
            ops.append([_cycles_exp(gen), [p], [q]])
        for q in qubits:  # the local propagator joins the last operator acting on q
            last = max(i for i, op in enumerate(ops) if q in op[2])
            u_q = paths[q][-1]
            targets = ops[last][2]
            full = u_q if len(targets) == 1 else kron_identity(u_q, targets[0] == q)
            ops[last][0] = np.matmul(full, ops[last][0])
        result = [(u, c, t) for u, c, t in ops]
        self._store_joint(key, result)
        return phases, result

    def _store_joint(self, key: tuple, ops: list | None) -> None:
        """Keep a joint block's operators (None: applied as conditioned drives) in the bounded
        cache."""
        if len(self._joint_cache) >= CACHE_JOINT_ENTRIES:
            self._joint_cache.clear()
        self._joint_cache[key] = ops


Block = tuple[int, int, list[int], list[int]]

def flux_reach(flux_iv: dict[int, list[tuple[int, int]]],
               neighbours: Callable[[int], Iterable[int]]) -> dict[int, list[tuple[int, int]]]:
    """Per qubit, the flux pulses ([start, end) in samples) that reach it: its own and its
    coupled ``neighbours``'."""
    reach: dict[int, list[tuple[int, int]]] = {}
    for f, ivs in flux_iv.items():
        for q in (f, *neighbours(f)):
            reach.setdefault(q, []).extend(ivs)
    return reach


def single_blocks(drive_iv: dict[int, list[tuple[int, int]]]) -> list[Block]:
    """Each qubit's drive intervals ([start, end) in samples), merged where they overlap, as
    single-qubit blocks (start, end, [qubit], [])."""
    singles: list[Block] = []
    for q, ivs in drive_iv.items():
        merged: list[list[int]] = []
        for s0, e0 in sorted(ivs):
            if merged and s0 < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e0)
            else:
                merged.append([s0, e0])
        singles.extend((s0, e0, [q], []) for s0, e0 in merged)
    return singles


def block_pulses(singles: list[Block]) -> dict[int, list[tuple[int, int]]]:
    """Per qubit, the (start, end) of its single-qubit blocks (:func:`merge_consecutive`'s
    drive pulses)."""
    pulses: dict[int, list[tuple[int, int]]] = {}
    for s0, e0, (q,), _ in singles:
        pulses.setdefault(q, []).append((s0, e0))
    return pulses


#: Intervals of one qubit for :func:`overlaps` and :func:`covers`: their starts, sorted, and
#: the largest end among the intervals up to each of them.
IntervalTable = tuple[list[int], list[int]]


def interval_table(intervals: list[tuple[int, int]]) -> IntervalTable:
    """The :data:`IntervalTable` of ``intervals`` ([start, end) in samples; they may overlap)."""
    ordered = sorted(intervals)
    return [s for s, _ in ordered], list(itertools.accumulate((e for _, e in ordered), max))


def overlaps(table: IntervalTable | None, start: int, end: int) -> bool:
    """Whether an interval of ``table`` overlaps [start, end) (False for None)."""
    if table is None:
        return False
    k = bisect.bisect_left(table[0], end) - 1  # the last interval starting before ``end``
    return k >= 0 and table[1][k] > start


def single_index(singles: list[Block]) -> dict[int, list[tuple[int, int, int]]]:
    """Per qubit, (start, end, position in ``singles``) of its single-qubit blocks, sorted."""
    on_qubit: dict[int, list[tuple[int, int, int]]] = {}
    for i, (b0, b1, (q,), _) in enumerate(singles):
        on_qubit.setdefault(q, []).append((b0, b1, i))
    for entries in on_qubit.values():
        entries.sort()
    return on_qubit


def singles_within(index: dict[int, list[tuple[int, int, int]]], qubits: list[int],
                   start: int, end: int) -> list[tuple[int, int, int]]:
    """(qubit, start, end) of the single-qubit blocks of ``index`` (:func:`single_index`) on
    ``qubits`` within [start, end), in their order in the list the index was made of."""
    inside = []
    for q in qubits:
        mine = index.get(q, [])
        k = bisect.bisect_left(mine, (start, -1, -1))
        while k < len(mine) and mine[k][0] < end:
            if mine[k][1] <= end:
                inside.append((mine[k][2], q, mine[k][0], mine[k][1]))
            k += 1
    return [(q, b0, b1) for _, q, b0, b1 in sorted(inside)]


def covers(table: IntervalTable, sample: int) -> bool:
    """Whether an interval of ``table`` holds ``sample``."""
    k = bisect.bisect_right(table[0], sample) - 1  # the last interval starting by ``sample``
    return k >= 0 and table[1][k] > sample


def merge_consecutive(blocks: list[Block], pulses: list[dict[int, list[tuple[int, int]]]]
                      ) -> list[Block]:
    """Join blocks (start, end, qubits, fluxed) that follow each other without a gap into one
    block when nothing else happens to their qubits meanwhile, sorted by start.

    ``pulses`` lists interval maps (qubit -> [(start, end)], e.g. the drive intervals and the
    flux intervals): a joined block may overlap at most one interval of each map per qubit.
    So only pieces of the same pulses are joined, never two pulses of one qubit: decoherence
    is applied after a block's unitary, and joining two pulses would move the first pulse's
    decoherence after the second (back-to-back gates would lose their interleaved T1).

    Two drive blocks A = [a, b) and B = [b, c) that share a qubit become one drive block
    [a, c) on the union of their qubits if every qubit of B is free of other blocks over
    [a, b) and every qubit of A over [b, c); two flux blocks on the same cluster likewise (the
    fluxed qubits are joined). A drive block and a flux block are never joined. Per qubit the
    blocks stay disjoint and in time order, so applying the result in start order is as exact
    as before; the joined block is one block of the model instead of several (a joint drive
    block: one first-order Magnus step over [a, c); a cluster: the same per-sample product).
    """
    order = sorted(blocks, key=lambda blk: blk[0])
    starts: dict[int, list[tuple[int, int]]] = {}
    for i, (b0, _b1, qubits, _) in enumerate(order):
        for q in qubits:
            starts.setdefault(q, []).append((b0, i))
    # Per map and qubit, the interval starts and ends, each sorted: the intervals that
    # overlap [a0, b1) are those starting before b1 less those ending by a0 (bisect).
    bounds = [{q: (sorted(s for s, _ in ivs), sorted(e for _, e in ivs))
               for q, ivs in intervals.items()} for intervals in pulses]

    def overlapping(table: dict, q: int, a0: int, b1: int) -> int:
        if q not in table:
            return 0
        s, e = table[q]
        return bisect.bisect_left(s, b1) - bisect.bisect_right(e, a0)

    def starts_within(q: int, b0: int, b1: int, i: int) -> bool:
        """Whether a block other than the i-th starts on ``q`` in [b0, b1)."""
        entries = starts[q]
        k = bisect.bisect_left(entries, (b0, -1))
        while k < len(entries) and entries[k][0] < b1:
            if entries[k][1] != i:
                return True
            k += 1
        return False

    out: list[Block] = []
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
            if any(starts_within(q, b0, b1, i) for q in a_qubits if q not in qubits):
                continue
            if any(overlapping(table, q, a0, b1) > 1
                   for table in bounds for q in {*a_qubits, *qubits}):
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
