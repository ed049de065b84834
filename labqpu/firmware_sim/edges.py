"""Drives at the edge of a flux block, and drives beside a pair that leaves the cluster: the
part of ``PhysicsEngine`` that decides how a flux block's drives are applied
(:class:`EdgeDrives`, a mixin of ``clusters.ClusterBlocks``).

Drives at the edge of a flux block. A pulse that ends a few samples into a flux pulse on a
neighbour (or starts a few samples before one ends: schedules with gates of unequal length
have them) would make the whole block's propagator a driven, dense one, propagated by split
steps at every new phase. When all of a block's drives lie in its first or last samples (or
fill a short block of their own), they are applied instead as what every other drive block
is in this model, conditioned one-transmon drives on the dressed ladder, before ("head") or
after ("tail") the block's drive-free propagator, each in the interaction picture of the idle
evolution that propagator already holds (``DriveBlocks._apply_drive``, ``edge``). What that
changes is their commutator with the flux pulses' excursion from idle between the edge's
start and each drive sample (head; between the sample and the edge's end, tail), which
reaches a driven qubit through the exchange with a fluxed neighbour (its levels shift, second
order in g / D, and its ladder's admixture of the neighbour's changes, first order) or with a
neighbour in the cluster that is coupled to a fluxed qubit. ``EdgeDrives._edge_error``
estimates it for both sides; the side with the smaller estimate is taken when that is within
:data:`EDGE_DRIVE_RAD`, no driven qubit's own flux line plays in the edge and coupled driven
qubits may be applied one after the other. Against expm of the full Hamiltonian
(tests/firmware_sim/test_coupling.py) the estimate is 2-50x above that change for overlaps of
1-4 samples on a cz's rising or falling edge, directly or through a neighbour (not a bound
when the edge spans a whole short, weak flux pulse: up to 1.4x below there); the two
treatments also differ by the drive's hybridised part, which drive blocks drop (inside a
cluster the drive acts on the bare ladder): ~3e-5 per entry of the state for a 2-sample tail
of a 40-sample pulse, both equally close to the expm state.

A drive that stays inside a cluster on a qubit with an evolved neighbour outside it does not
commute with that pair's ZZ, which the cluster's propagator holds as a phase of the deferred
frame: the frame is moved to the block's start, the block cut where such drives start and the
frame moved there by a bare diagonal
(``EdgeDrives._outside_drive_start``), so that pair's ZZ is left out only over the drive
itself, not from the frame's older anchor on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from labqpu.firmware_sim.blocks import _RunContext
from labqpu.firmware_sim.density import LEVELS


class Edge(NamedTuple):
    """Drives taken out of a flux block (``EdgeDrives._find_edge``): applied over
    [start, end) (samples) on ``qubits``, before the block's drive-free propagator
    (``side`` "head") or after it ("tail")."""

    side: str
    start: int
    end: int
    qubits: list[int]


#: Largest estimated change (rad, ``EdgeDrives._edge_error``) for which the drives at the
#: edge of a flux block are applied as conditioned one-transmon drives outside the cluster's
#: propagator: the scale of ``blocks.SEQUENTIAL_CROSS_RAD`` (an infidelity ~ its square).
#: 0 keeps every drive inside (the tests' reference).
EDGE_DRIVE_RAD = 1e-4
#: Smallest detuning, in units of the exchange coupling g, at which that estimate's second-order
#: level shifts are trusted.
EDGE_MIN_DETUNING = 10.0


class EdgeDrives:
    """Mixin of :class:`~labqpu.firmware_sim.physics.PhysicsEngine` (through
    ``clusters.ClusterBlocks``): where a flux block's drives go (needs the engine's
    ``device``, ``cabling``, ``_cluster_drives``, ``_flux_phi`` and ``_joint_ops``)."""

    def _block_plan(self, ctx: _RunContext, cluster: list[int], fluxed: list[int], b0: int,
                    b1: int) -> tuple[Edge | None, int | None]:
        """How a flux block's drives are applied, decided once per run share from its drives
        (``ClusterBlocks._cluster_drives``, read once here) and kept in ``RunShare.edges``:
        (the drives taken out of its propagator, :meth:`_find_edge`, or None; when none are,
        the sample at which it is cut, :meth:`_outside_drive_start`, or None)."""
        memo = (tuple(cluster), b0, b1)
        plan = ctx.share.edges.get(memo)
        if plan is None:
            drives = self._cluster_drives(ctx, cluster, b0, b1)
            edge = self._find_edge(ctx, cluster, fluxed, b0, b1, drives)
            cut = None if edge is not None else self._outside_drive_start(ctx, cluster, b0,
                                                                          drives)
            plan = ctx.share.edges[memo] = (edge, cut)
        return plan

    def _outside_drive_start(self, ctx: _RunContext, cluster: list[int], b0: int,
                             drives: dict[int, np.ndarray]) -> int | None:
        """First sample of the block starting at ``b0`` at which a qubit of ``cluster`` with
        an evolved neighbour outside it is driven (``drives``: per driven qubit, Hz per
        sample; None: there is none). The cluster's propagator holds that pair's ZZ as a phase
        of the deferred frame, as if it commuted with the block, and it does not commute with
        the drive: the frame is moved to where the drive starts, so what is left out is that
        ZZ over the drive itself (module docstring of ``physics``)."""
        starts = [int(np.flatnonzero(z)[0]) for q, z in drives.items()
                  if any(p in ctx.pos and p not in cluster for p in self.device.neighbours(q))]
        return b0 + min(starts) if starts else None

    def _find_edge(self, ctx: _RunContext, cluster: list[int], fluxed: list[int], b0: int,
                   b1: int, drives: dict[int, np.ndarray]) -> Edge | None:
        """The drives (``drives``: per driven qubit of ``cluster``, Hz per sample over
        [b0, b1)) of a flux block taken out of its propagator (module docstring, "Drives at
        the edge of a flux block"), or None: all of them, over [b0, end) applied before the
        drive-free propagator ("head") or over [start, b1) after it ("tail"), whichever
        :meth:`_edge_error` estimates to change less, when that estimate is within
        :data:`EDGE_DRIVE_RAD` and coupled driven qubits may be applied one after the other
        (``DriveBlocks._joint_ops``). The edge may be the whole block."""
        if EDGE_DRIVE_RAD <= 0 or not drives:
            return None
        driven = np.flatnonzero(np.any([z != 0 for z in drives.values()], axis=0))
        first, last = int(driven[0]), int(driven[-1]) + 1
        n = b1 - b0
        error, side, s0, s1 = min(
            (self._edge_error(ctx, cluster, fluxed, {q: z[s0:s1] for q, z in drives.items()},
                              b0 + s0, b0 + s1, side), side, s0, s1)
            for side, s0, s1 in (("head", 0, last), ("tail", first, n)))
        if error > EDGE_DRIVE_RAD:
            return None
        qubits = sorted(drives)
        inner = [(p, q) for p in qubits for q in qubits if p < q and (p, q) in ctx.model.zz_hz]
        if inner:
            outer = [(q, p) for q in qubits for p in ctx.model.neighbours(q)
                     if p in ctx.pos and p not in qubits]
            if self._joint_ops(ctx, qubits, inner, outer, b0 + s0, b0 + s1)[1] is not None:
                return None
        return Edge(side, b0 + s0, b0 + s1, qubits)

    def _moved(self, ctx: _RunContext, q: int, f: int, fluxed: list[int], e0: int, e1: int,
               g: float | None = None) -> np.ndarray | None:
        """sum_D |1 / D_k - 1 / D_idle| (1/Hz) per sample k of [e0, e1) over the detunings D of
        an exchange of ``q`` (not fluxed there) with the fluxed ``f`` (f_q - f_f,
        f_q - f_f - alpha_f, f_q + alpha_q - f_f, bare): how far f's flux moves what their
        coupling (``g``, Hz; default theirs) does to q. None when a detuning comes within
        :data:`EDGE_MIN_DETUNING` g."""
        truth, other = self.device.qubits[q], self.device.qubits[f]
        g = self.device.coupling_hz(q, f) if g is None else g
        f_q = truth.frequency_hz(ctx.phi_dc[q])
        f_f = np.array([other.frequency_hz(p) for p in self._flux_phi(ctx, f, fluxed, e0, e1)])
        f_idle = other.frequency_hz(ctx.phi_dc[f])
        moved = np.zeros(e1 - e0)
        for c in (0.0, -other.anharmonicity_hz, truth.anharmonicity_hz):
            d, d_idle = f_q - f_f + c, f_q - f_idle + c
            if min(np.abs(d).min(), abs(d_idle)) < EDGE_MIN_DETUNING * g:
                return None
            moved += np.abs(1.0 / d - 1.0 / d_idle)
        return moved

    def _admixture(self, ctx: _RunContext, q: int, p: int) -> float | None:
        """g sum_D 1 / |D| over the idle detunings of the exchange of ``q`` with ``p``
        (f_q - f_p, f_q - f_p - alpha_p, f_q + alpha_q - f_p, bare): how much of p's ladder
        q's holds, to first order. None when a detuning is within :data:`EDGE_MIN_DETUNING`
        g."""
        truth, other = self.device.qubits[q], self.device.qubits[p]
        g = self.device.coupling_hz(q, p)
        d = truth.frequency_hz(ctx.phi_dc[q]) - other.frequency_hz(ctx.phi_dc[p])
        detunings = np.abs([d, d - other.anharmonicity_hz, d + truth.anharmonicity_hz])
        if detunings.min() < EDGE_MIN_DETUNING * g:
            return None
        return g * float(np.sum(1.0 / detunings))

    def _edge_error(self, ctx: _RunContext, cluster: list[int], fluxed: list[int],
                    drives: dict[int, np.ndarray], e0: int, e1: int, side: str) -> float:
        """Estimate (rad) of what applying the ``drives`` (Hz per sample over [e0, e1)) before
        ("head") or after ("tail") their flux block's drive-free propagator changes, to first
        order in the drives and in the flux pulses' excursions from idle.

        Per driven qubit q and sample k: the drive's angle a_k = 2 pi sqrt(2) |z_k| / fs times
        what the flux has done to q between the edge's start and k ("head"; between k and
        its end, "tail"). A fluxed neighbour f (exchange g) shifts q's levels by
        s_j = 2 g^2 m_j (second order) and changes its ladder's admixture of f's by
        x_j = sqrt(2) g m_j (first order), m_j = sum_D |1 / D_j - 1 / D_idle|
        (:meth:`_moved`). A neighbour p of q in the cluster, coupled to a fluxed f, changes by
        c_j = sqrt(2) g_pf m_j: that adds the largest pair energy of q and p times c_j to s_j,
        and q's admixture of p's ladder (:meth:`_admixture`) times c_j to x_j, and q's
        exchange with f through p (g_qp g_pf / D_qp, second order) adds to x_j as a direct
        coupling of that size. The estimate is sum_k a_k (2 pi sum_j s_j / fs + max_j x_j),
        j over the samples up to k ("head") or from k ("tail"). Infinite when a driven qubit's
        own flux line plays in the edge or a detuning comes within :data:`EDGE_MIN_DETUNING`
        g (module docstring, with its comparison to the change itself)."""
        fs = self.device.sample_rate_hz
        total = 0.0
        for q, z in drives.items():
            angles = 2.0 * np.pi * np.sqrt(LEVELS - 1) * np.abs(z) / fs
            if not angles.any():
                continue
            if q in fluxed and np.any(ctx.samples[self.cabling[q].flux_port, e0:e1]):
                return np.inf
            shift = np.zeros(e1 - e0)  # Hz
            mix = np.zeros(e1 - e0)
            for f in fluxed:
                if f == q or not np.any(ctx.samples[self.cabling[f].flux_port, e0:e1]):
                    continue
                g = self.device.coupling_hz(q, f)
                if g:
                    moved = self._moved(ctx, q, f, fluxed, e0, e1)
                    if moved is None:
                        return np.inf
                    shift += 2.0 * g * g * moved
                    mix += np.sqrt(LEVELS - 1) * g * moved
                for p in self.device.neighbours(q):
                    g_pf = self.device.coupling_hz(p, f)
                    if p in (f, q) or p not in cluster or not g_pf:
                        continue
                    moved = self._moved(ctx, p, f, fluxed, e0, e1)
                    hybrid = self._admixture(ctx, q, p)
                    if moved is None or hybrid is None:
                        return np.inf
                    # through p: q's coupling to f at second order, g_qp g_pf / D_qp
                    across = self._moved(ctx, q, f, fluxed, e0, e1, hybrid * g_pf)
                    if across is None:
                        return np.inf
                    moved = np.sqrt(LEVELS - 1) * g_pf * moved  # p's own admixture change
                    shift += float(np.abs(ctx.model.pair(q, p)).max()) * moved
                    mix += hybrid * moved
                    mix += np.sqrt(LEVELS - 1) * hybrid * g_pf * across
            if side == "tail":
                angles, shift, mix = angles[::-1], shift[::-1], mix[::-1]
            total += float(angles @ (2.0 * np.pi * np.cumsum(shift) / fs
                                     + np.maximum.accumulate(mix)))
        return total
