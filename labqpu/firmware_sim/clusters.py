"""Flux blocks on coupled clusters: the part of ``PhysicsEngine`` that applies flux pulses.

While a flux pulse plays, the fluxed transmon and its neighbours (and any transmon driven
meanwhile that couples to them) form a cluster whose bare Hamiltonian is propagated exactly per
sample in a common frame (``ClusterBlocks._segment_unitary``; the model is in the docstring of
``physics``). The per-sample diagonalisation of a 27- to 243-dimensional Hamiltonian is the most
expensive step of the simulator, so its result is cached by everything it depends on:

* the cluster, the block length, the flux per sample of every qubit, the bare idle
  frequencies and the dressed frame frequencies;
* the drives, after removing what a frame change can restore. In the common frame (every
  qubit rotating at the first qubit's bare frequency f_ref) the drive of qubit q is
  z_q(t) exp(-i 2 pi (f~_q - f_ref) t). Writing t = b0 / fs + tau splits off the constant
  factor exp(-i 2 pi (f~_q - f_ref) b0 / fs), and a global phase psi (that of the largest
  drive sample) is split off all drives together. The cluster's bare Hamiltonian conserves
  the total excitation number N apart from the drives, and R(psi) = exp(i psi N) turns every
  drive term by e^{i psi}: H(z e^{i psi}) = R H(z) R^dag, so U(z e^{i psi}) = R U(z) R^dag
  (R is diagonal in the dressed basis, which is block-diagonal in N). The same pulses played
  at another time or after a virtual Z therefore reuse one cached propagator whenever one
  qubit is driven; with several driven qubits only their common phase is a frame change.

With two driven qubits the propagator also depends on the weaker drive's phase theta relative
to the stronger, and that phase changes with every new rz angle and with the time a block is
played at. Treating the weaker drive (1/2)(z e^{i theta} a^dag + h.c.) (z in Hz) as a
perturbation, the Dyson series of the propagator groups into U(theta) = sum_m C_m e^{i m theta}:
its order-n term, of norm at most (2 beta)^n / n! with beta = pi ||a^dag|| sum_j |z_j| / fs
(rad), contributes to the harmonics |m| <= n only. So U is a trigonometric polynomial of
degree K up to an error (truncation and aliasing) within 2 sum_{n>K} (n - K) (2 beta)^n / n!
(:func:`phase_interpolation_order` chooses the smallest K that keeps it below
:data:`PHASE_INTERPOLATION_TOL`), and the 2K + 1 propagators at equally spaced phases give every
other phase by trigonometric interpolation (:func:`phase_interpolation_weights`). A block whose
weaker drive is weak enough (a pulse's tail overlapping another qubit's pulse during a flux
pulse) is answered from such a table once its shape (the weaker drive up to its phase, and
everything else the block depends on) has been propagated directly at 2K phases
(``ClusterBlocks._phase_interpolated``).

Drives at the edge of a flux block and drives beside a pair that leaves the cluster: the
``edges`` module.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from numba import njit

from labqpu.firmware_sim import blocks
from labqpu.firmware_sim.blocks import _RunContext
from labqpu.firmware_sim.coupling import DressedModel, dressed_basis
from labqpu.firmware_sim.density import (
    LEVELS,
    _excitation_blocks,
    _excitation_mask,
    _excitation_numbers,
    _ladder,
    _level_numbers,
)
from labqpu.firmware_sim.edges import EdgeDrives
from labqpu.firmware_sim.noise import frame_phase
from labqpu.firmware_sim.propagation import (
    PEAK_TIE,
    drive_phase_key,
    phase_reference,
    quantised_key,
)
from labqpu.firmware_sim.split import SplitParts, split_step_adaptive, split_step_extrapolated

#: Sub-steps per cycle of the fastest drive rotation in the frame of
#: ``_cluster_common_frame_unitary`` (a drive sample rotates at f~_q - f_ref there and is
#: sampled at sub-step midpoints). The engine calls it with at most one drive, in that
#: drive's own frame (one step per sample); the tests raise this for their fine references.
SUBSTEPS_PER_CYCLE = 20
#: Bound on the error of a propagator interpolated in the weaker drive's phase (module
#: docstring): below what quantising a drive for its cache key may cost (``KEY_GRID_HZ``,
#: ~1e-10), far below the split steps' own error (~1e-5, ``split.SPLIT_TOL``).
PHASE_INTERPOLATION_TOL = 1e-11
#: Highest degree K of that interpolation: a table costs 2K + 1 direct propagations, so a
#: drive that needs more is propagated directly at each phase. (The last 2 samples of a DRAG
#: pulse, ~0.8 MHz, need K = 4.)
PHASE_INTERPOLATION_MAX_ORDER = 4
#: Phase tables an engine keeps (each 2K + 1 cluster propagators: ~1 MB on four transmons,
#: 8.5 MB on five) and the bytes they may hold, and shapes whose direct propagations it
#: counts (a table is built at a shape's (2K + 1)-th phase).
PHASE_TABLES = 16
PHASE_TABLE_BYTES = 256 * 2**20
PHASE_SHAPES_SEEN = 4096
#: Most cluster dressings whose split-step blocks an engine keeps (each at most
#: ``split.SPLIT_PARTS_BYTES``).
SPLIT_PARTS_KEPT = 16


def phase_interpolation_order(beta_rad: float, tol: float = PHASE_INTERPOLATION_TOL
                              ) -> int | None:
    """Smallest degree K whose trigonometric interpolation in the weaker drive's phase is
    within ``tol`` of the propagator (bound of the module docstring, ``beta_rad`` =
    pi ||a^dag|| sum_j |z_j| / fs for the weaker drive z in Hz), or None above
    :data:`PHASE_INTERPOLATION_MAX_ORDER`."""
    x = 2.0 * beta_rad
    terms = [1.0]  # x^n / n!, until they are far below tol (or 60 past the largest degree)
    while len(terms) < PHASE_INTERPOLATION_MAX_ORDER + 60 and (
            len(terms) <= PHASE_INTERPOLATION_MAX_ORDER + 1 or terms[-1] > 1e-6 * tol):
        terms.append(terms[-1] * x / len(terms))
    for k in range(PHASE_INTERPOLATION_MAX_ORDER + 1):
        tail = sum((n - k) * t for n, t in enumerate(terms) if n > k)
        if 2.0 * tail * (1.0 + 1e-9) <= tol:
            return k
    return None


def phase_interpolation_weights(theta_rad: float, order: int) -> np.ndarray:
    """Weights of the 2K + 1 table entries at phases 2 pi j / (2K + 1) that give the
    trigonometric polynomial of degree K = ``order`` through them at ``theta_rad``
    (the Dirichlet kernel)."""
    m = 2 * order + 1
    x = theta_rad - 2.0 * np.pi * np.arange(m) / m
    harmonics = np.cos(np.outer(x, np.arange(1, order + 1))).sum(axis=1)
    return (1.0 + 2.0 * harmonics) / m


@njit(cache=True, nogil=True)
def _propagate_kernel(h_stack_hz, dt_s):
    """Product of exact per-sample propagators exp(-i 2 pi H_k dt), last sample leftmost.

    ``h_stack_hz`` has shape (n_samples, d, d), Hermitian, in Hz.
    """
    d = h_stack_hz.shape[1]
    u = np.eye(d, dtype=np.complex128)
    scaled = np.empty((d, d), dtype=np.complex128)
    for k in range(h_stack_hz.shape[0]):
        evals, evecs = np.linalg.eigh(h_stack_hz[k])
        for j in range(d):  # element loops: array expressions cost seconds to compile
            phase = np.exp(-2j * np.pi * evals[j] * dt_s)
            for i in range(d):
                scaled[i, j] = evecs[i, j] * phase
        uk = scaled @ evecs.conj().T
        u = uk @ u
    return u


@njit(cache=True, nogil=True)
def _propagate_real_kernel(h_stack_hz, dt_s):
    """``_propagate_kernel`` for real symmetric ``h_stack_hz`` (float64, Hz), as a drive-free
    cluster's Hamiltonian is: a real eigendecomposition per sample (~25 % faster on the
    excitation blocks of four transmons), U_k = W exp(-i 2 pi E dt) W^T."""
    d = h_stack_hz.shape[1]
    u = np.eye(d, dtype=np.complex128)
    uk = np.empty((d, d), dtype=np.complex128)
    phase = np.empty(d, dtype=np.complex128)
    for k in range(h_stack_hz.shape[0]):
        evals, evecs = np.linalg.eigh(h_stack_hz[k])
        for j in range(d):
            phase[j] = np.exp(-2j * np.pi * evals[j] * dt_s)
        for i in range(d):  # U_k is symmetric: one triangle, mirrored
            for m in range(i + 1):
                acc = 0j
                for j in range(d):
                    acc += evecs[i, j] * phase[j] * evecs[m, j]
                uk[i, m] = acc
                uk[m, i] = acc
        u = uk @ u
    return u


def propagate_conserving(h_stack_hz: np.ndarray, dt_s: float, k: int) -> np.ndarray:
    """``_propagate_kernel`` for Hamiltonians of ``k`` transmons (basis labelled by levels,
    first most significant): when every H_k conserves the total excitation number N (entries
    between different N exactly 0, as for a cluster without drives), each block of fixed N is
    propagated on its own (one eigendecomposition per block and step: for k = 4, blocks of
    1 ... 19 states instead of 81, ~30x fewer operations), else the whole matrix. A real
    (float64) stack is taken as real symmetric and decomposed as such."""
    real = not np.iscomplexobj(h_stack_hz)
    if np.any(h_stack_hz[:, ~_excitation_mask(k)]):
        return _propagate_kernel(h_stack_hz.astype(np.complex128) if real else h_stack_hz,
                                 dt_s)
    kernel = _propagate_real_kernel if real else _propagate_kernel
    d = h_stack_hz.shape[1]
    u = np.zeros((d, d), dtype=np.complex128)
    for idx in _excitation_blocks(k):
        block = np.ascontiguousarray(h_stack_hz[:, idx][:, :, idx])
        u[np.ix_(idx, idx)] = kernel(block, dt_s)
    return u


def _to_dressed(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v^T u v for a real ``v`` (a cluster's dressed basis): the real and imaginary parts of
    ``u`` apart, four real products (the complex product converts v to complex and costs
    about twice as much on 81 x 81)."""
    out = np.empty(u.shape, dtype=np.complex128)
    out.real = v.T @ u.real @ v
    out.imag = v.T @ u.imag @ v
    return out


def _embed(op: np.ndarray, pos: int, n: int) -> np.ndarray:
    out = np.ones((1, 1), dtype=complex)
    for i in range(n):
        out = np.kron(out, op if i == pos else np.eye(LEVELS))
    return out


@lru_cache(maxsize=8)
def _cluster_operators(k: int) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Operators of ``k`` transmons (3^k x 3^k, first most significant): the lowering
    operators a_i, the number operators n_i stacked (k, d, d), and n_i (n_i - 1) stacked.
    Read-only (shared by every cluster of that size)."""
    a_ops = tuple(_embed(_ladder(), i, k) for i in range(k))
    n_ops = np.stack([a.conj().T @ a for a in a_ops])
    pair = n_ops @ n_ops - n_ops
    for x in (*a_ops, n_ops, pair):
        x.flags.writeable = False
    return a_ops, n_ops, pair


@lru_cache(maxsize=64)
def _exchange_operator(k: int, i: int, j: int) -> np.ndarray:
    """a_i^dag a_j + a_i a_j^dag on ``k`` transmons (read-only)."""
    a_ops = _cluster_operators(k)[0]
    out = a_ops[i].conj().T @ a_ops[j] + a_ops[i] @ a_ops[j].conj().T
    out.flags.writeable = False
    return out


def cluster_drive_key(drives_hz: dict[int, np.ndarray], offsets_hz: dict[int, float], b0: int,
                      sample_rate_hz: float
                      ) -> tuple[float, dict[int, np.ndarray], tuple[tuple[int, bytes], ...]]:
    """Split the drives of a cluster block into a frame change and a cacheable remainder.

    ``drives_hz`` maps qubit -> z per sample (Hz) in its dressed frame over a block starting at
    sample ``b0``; ``offsets_hz`` maps qubit -> f~_q - f_ref, its frame's offset from the
    common frame. Returns (psi_rad, rel_hz, key): ``rel_hz[q]`` is the drive of a block that
    starts at sample 0, turned by -psi_rad (the :func:`phase_reference` of the strongest
    drive; the first in qubit order among equals), so that the block's propagator is
    R(psi) U(rel) R(psi)^dag with R(psi) = exp(i psi N) (:func:`rotate_excitation_phase`);
    ``key`` holds ``rel_hz`` quantised on ``KEY_GRID_HZ``.
    """
    shifted = {q: z * np.exp(-2j * np.pi * offsets_hz[q] * b0 / sample_rate_hz)
               for q, z in sorted(drives_hz.items())}
    if not shifted:
        return 0.0, {}, ()
    psi = phase_reference(shifted[_reference_qubit(shifted)])
    turn = np.exp(-1j * psi)
    rel = {q: y * turn for q, y in shifted.items()}
    key = tuple((q, quantised_key(y)) for q, y in rel.items())
    return psi, rel, key


def _reference_qubit(drives_hz: dict[int, np.ndarray]) -> int:
    """The qubit whose drive sets a cluster block's common phase: the largest peak, the first
    in ``drives_hz``'s order among equal ones (:data:`PEAK_TIE`)."""
    peaks = {q: float(np.abs(z).max()) for q, z in drives_hz.items()}
    top = max(peaks.values())
    return next(q for q, p in peaks.items() if p >= (1 - PEAK_TIE) * top)


def rotate_excitation_phase(u: np.ndarray, psi_rad: float, k: int) -> np.ndarray:
    """R u R^dag with R = exp(i psi N) on ``k`` transmons (N the total excitation number;
    ``u`` 3^k x 3^k in a basis labelled by levels, first transmon most significant)."""
    r = np.exp(1j * psi_rad * _excitation_numbers(k))
    return (r[:, None] * u) * r.conj()[None, :]


class ClusterBlocks(EdgeDrives):
    """Mixin of :class:`~labqpu.firmware_sim.physics.PhysicsEngine`: flux blocks on coupled
    clusters (needs the engine's ``device``, ``cabling``, ``cache_nq``, ``phase_tables``,
    ``_phase_shapes``, ``_split_substeps``, ``_dressings``, ``_split_parts``, ``_statics``,
    ``_drive_hz``, ``_transmon_unitary`` and ``_prepare``)."""

    def _apply_cluster(self, ctx: _RunContext, cluster: list[int], fluxed: list[int], b0: int,
                       b1: int) -> None:
        """A block with flux pulses: the cluster's propagator (dressed basis) on its qubits.
        Its drives are taken out as conditioned drives when they are an edge of it
        (``edge``); otherwise, when a driven qubit has an evolved neighbour outside the
        cluster, the block is cut where those drives start and the deferred ZZ frame moved
        there (``cut``; both decided once per run share: :meth:`_block_plan`)."""
        if len(cluster) == 1:
            q = cluster[0]
            flux = self._flux_phi(ctx, q, fluxed, b0, b1)
            u = self._transmon_unitary(q, self._drive_hz(ctx, q, b0, b1), flux,
                                       ctx.model.freq_hz[q])
            ctx.local.idle(q, b0)
            ctx.local.unitary(q, u)
            ctx.local.decohere(q, b1)
            return
        edge, cut = self._block_plan(ctx, cluster, fluxed, b0, b1)
        if edge is not None:
            if edge.side == "head":
                for q in edge.qubits:
                    self._apply_drive(ctx, q, edge.start, edge.end, "head")
            self._apply_segment(ctx, cluster, fluxed, b0, b1, with_drives=False)
            if edge.side == "tail":
                for q in edge.qubits:
                    self._apply_drive(ctx, q, edge.start, edge.end, "tail")
            return
        if cut is None:
            self._apply_segment(ctx, cluster, fluxed, b0, b1)
            return
        if b0 > ctx.anchor:
            self._advance_zz(ctx, b0)
        if cut > b0:
            self._apply_segment(ctx, cluster, fluxed, b0, cut)
            # the frame moved by a bare diagonal: nothing else is idled past b0 here
            ctx.local.rho.apply_diagonal(np.exp(-2j * np.pi * ctx.zz_all * (cut - ctx.anchor)
                                                / self.device.sample_rate_hz))
            ctx.anchor = cut
        self._apply_segment(ctx, cluster, fluxed, cut, b1)

    def _apply_segment(self, ctx: _RunContext, cluster: list[int], fluxed: list[int], b0: int,
                       b1: int, with_drives: bool = True) -> None:
        """The propagator of ``cluster`` over [b0, b1) (:meth:`_segment_unitary`, kept per
        run share) in the quasi-static offsets' frame, applied after the cluster's pending
        channels, then its decoherence up to b1."""
        share = ctx.share
        memo = (tuple(cluster), tuple(fluxed), b0, b1, ctx.anchor, with_drives)
        u = share.segments.get(memo)
        if u is None:
            u = self._segment_unitary(ctx, cluster, fluxed, b0, b1, with_drives)
            held = sum(v.nbytes for v in share.segments.values())
            if held + u.nbytes <= blocks.RUN_SHARE_SEGMENT_BYTES:
                u.flags.writeable = False
                share.segments[memo] = u
        offsets = np.array([ctx.offset_hz.get(q, 0.0) for q in cluster])
        if offsets.any():  # the quasi-static offsets' frame, split symmetrically about the block
            d = frame_phase(offsets, _level_numbers(len(cluster)),
                            0.5 * (b0 + b1) / self.device.sample_rate_hz)
            u = (d[:, None] * u) * d.conj()[None, :]
        self._prepare(ctx, cluster, b0)
        ctx.local.rho.apply_unitary(u, [ctx.pos[q] for q in cluster])
        for q in cluster:
            ctx.local.decohere(q, b1)

    def _cluster_drives(self, ctx: _RunContext, cluster: list[int], b0: int, b1: int
                        ) -> dict[int, np.ndarray]:
        """The drive terms (Hz per sample over [b0, b1), before the offsets' frame) of the
        qubits of ``cluster`` that are driven there."""
        drives = {}
        for q in cluster:
            z = self._drive_hz(ctx, q, b0, b1, offset=False)
            if np.any(z):
                drives[q] = z
        return drives

    def _flux_phi(self, ctx: _RunContext, q: int, fluxed: list[int], b0: int, b1: int
                  ) -> np.ndarray:
        """Flux (flux quanta from the sweet spot) of ``q`` per sample over [b0, b1)."""
        phi = np.full(b1 - b0, ctx.phi_dc[q])
        if q in fluxed:
            flux = ctx.samples[self.cabling[q].flux_port, b0:b1].real
            phi = phi + self.device.flux_line_phi0_per_amplitude * flux
        return phi

    def _segment_unitary(self, ctx: _RunContext, cluster: list[int], fluxed: list[int],
                         b0: int, b1: int, with_drives: bool = True) -> np.ndarray:
        """Propagator over samples [b0, b1) of a coupled ``cluster`` with flux pulses, in the
        dressed basis and each qubit's dressed frame, in the deferred ZZ frame of
        :meth:`evolve` (conjugated by exp(+i 2 pi Z_cluster (t - anchor))).

        The cluster's bare Hamiltonian (exchange coupling, flux per sample, drives) plus a
        constant correction V diag(delta) V^dag is propagated exactly per sample in a common
        frame. The correction makes the cluster's idle energies those of the whole device's
        dressed model (the dressing by neighbours outside the cluster), so the block starts and
        ends in the dressed idle eigenstates V: a flux pulse has no switch-on artefact. Pair
        terms to qubits outside the cluster are diagonal and treated as commuting with the
        block. The stretch with drives and the drive-free stretches before and after it are
        separate parts (:meth:`_cluster_part`), each cached by flux samples, DC flux context
        and the drives up to their time offset and common phase, which are applied as frame
        changes (module docstring).
        """
        fs = self.device.sample_rate_hz
        model = ctx.model
        k = len(cluster)
        drives = self._cluster_drives(ctx, cluster, b0, b1) if with_drives else {}
        flux_phi = {q: self._flux_phi(ctx, q, fluxed, b0, b1) for q in cluster}
        f_bare = [self.device.qubits[q].frequency_hz(ctx.phi_dc[q]) for q in cluster]
        f_ref = f_bare[0]
        f_frame = [model.freq_hz[q] for q in cluster]
        offsets = {q: f_frame[i] - f_ref for i, q in enumerate(cluster)}
        driven = np.flatnonzero(np.any([z != 0 for z in drives.values()], axis=0)) \
            if drives else np.zeros(0, dtype=np.int64)
        # Drive-free stretches are separate parts, cached without the drives (they repeat
        # whatever the drive phases); the product of the parts is the block's propagator.
        cuts = sorted({0, b1 - b0, *((int(driven[0]), int(driven[-1]) + 1) if driven.size
                                     else ())})
        u = None
        for c0, c1 in itertools.pairwise(cuts):
            part = self._cluster_part(
                cluster, {q: z[c0:c1] for q, z in drives.items() if np.any(z[c0:c1])},
                {q: f[c0:c1] for q, f in flux_phi.items()}, b0 + c0, f_bare, f_frame, offsets,
                model)
            u = part if u is None else part @ u
        levels = _level_numbers(k)
        frame = np.array([model.freq_hz[q] - f_ref for q in cluster]) @ levels
        zz = model.pair_energies(cluster)
        a = ctx.anchor
        r1 = np.exp(2j * np.pi * (frame * b1 + zz * (b1 - a)) / fs)
        r0 = np.exp(-2j * np.pi * (frame * b0 + zz * (b0 - a)) / fs)
        return (r1[:, None] * u) * r0[None, :]

    def _cluster_part(self, cluster: list[int], drives: dict[int, np.ndarray],
                      flux_phi: dict[int, np.ndarray], b0: int, f_bare: list[float],
                      f_frame: list[float], offsets: dict[int, float], model: DressedModel
                      ) -> np.ndarray:
        """Propagator of ``cluster`` over the samples of ``flux_phi`` starting at ``b0`` in the
        common frame of its first qubit, dressed basis: cached with the drives' time offset
        and common phase split off (module docstring), which are applied here."""
        fs = self.device.sample_rate_hz
        n = next(iter(flux_phi.values())).size
        f_ref = f_bare[0]
        # With one driven qubit the part is propagated in that qubit's frame, where its drive
        # is constant over each sample as the model says (no sub-steps), then moved to f_ref.
        f_c = f_frame[cluster.index(next(iter(drives)))] if len(drives) == 1 else f_ref
        psi, rel, drive_key = cluster_drive_key(
            drives, {q: f_frame[i] - f_c for i, q in enumerate(cluster)}, b0, fs)
        key = ("cluster", tuple(cluster), n, *(flux_phi[q].tobytes() for q in cluster),
               tuple(f_bare), model.freq_hz, f_c, drive_key)
        u = self.cache_nq.get(key)
        if u is None:
            v, h_corr = self._cluster_dressing(cluster, tuple(f_bare), model)

            def direct(drives_hz: dict[int, np.ndarray]) -> np.ndarray:
                if len(drives_hz) > 1:
                    return _to_dressed(self._cluster_split_unitary(
                        key[:-1], cluster, drives_hz, flux_phi, f_bare, f_frame, h_corr,
                        f_c, self._cluster_split_parts(cluster, tuple(f_bare), model)), v)
                return _to_dressed(self._cluster_common_frame_unitary(
                    cluster, drives_hz, flux_phi, 0, n, f_bare, f_frame, h_corr, f_c), v)

            u = self._phase_interpolated(key, rel, direct)
            u = self.cache_nq.put(key, direct(rel) if u is None else u)
        if not rel:
            return u
        u = rotate_excitation_phase(u, psi, len(cluster))
        # U_f(t1, t0) = exp(i 2 pi (f - f_c) N t1) U_fc(t1, t0) exp(-i 2 pi (f - f_c) N t0)
        big_n = _excitation_numbers(len(cluster))
        left = np.exp(2j * np.pi * (f_ref - f_c) * big_n * (b0 + n) / fs)
        right = np.exp(-2j * np.pi * (f_ref - f_c) * big_n * b0 / fs)
        return (left[:, None] * u) * right[None, :]

    def _phase_interpolated(self, key: tuple, rel: dict[int, np.ndarray], direct
                            ) -> np.ndarray | None:
        """The propagator of a block with two driven qubits (``rel``, Hz per sample, its
        cache ``key`` ending with the drives' key) interpolated in the weaker drive's phase
        from a table of ``direct`` propagations (module docstring), or None when that drive is
        too strong for :data:`PHASE_INTERPOLATION_MAX_ORDER` or its shape has been propagated
        directly at fewer than 2K phases (a table costs 2K + 1 propagations: built once the
        direct ones it would have saved have been spent, it never costs more than twice the
        direct way, and every later phase is free)."""
        if len(rel) != 2:
            return None
        reference = _reference_qubit(rel)  # the weak drive is the other one
        weak = next(q for q in rel if q != reference)
        theta, shape, shape_key = drive_phase_key(rel[weak])
        beta = np.pi * np.sqrt(LEVELS - 1) * float(np.abs(shape).sum()) \
            / self.device.sample_rate_hz
        order = phase_interpolation_order(beta)
        if order is None:
            return None
        table_key = (key[:-1], tuple(item for item in key[-1] if item[0] != weak), weak,
                     shape_key)
        table = self.phase_tables.get(table_key)
        if table is None:
            m = 2 * order + 1
            seen = self._phase_shapes.get(table_key, 0)
            if seen + 1 < m:  # not yet paid for by the direct propagations it would replace
                if len(self._phase_shapes) >= PHASE_SHAPES_SEEN:
                    self._phase_shapes.clear()
                self._phase_shapes[table_key] = seen + 1
                return None
            self._phase_shapes.pop(table_key, None)
            table = self.phase_tables.put(table_key, np.stack(
                [direct({**rel, weak: shape * np.exp(2j * np.pi * j / m)}) for j in range(m)]))
        weights = phase_interpolation_weights(theta, (table.shape[0] - 1) // 2)
        return np.tensordot(weights, table, axes=1)

    def _cluster_dressing(self, cluster: list[int], f_bare: tuple[float, ...],
                          model: DressedModel) -> tuple[np.ndarray, np.ndarray]:
        """(V, H_corr) of a cluster in the common frame of its first qubit: V its labelled
        dressed idle basis, H_corr the correction that makes its idle energies the device's."""
        key = ("dressing", tuple(cluster), f_bare, model.freq_hz)
        hit = self._dressings.get(key)
        if hit is not None:
            return hit
        truths = [self.device.qubits[q] for q in cluster]
        couplings = {(i, j): self.device.coupling_hz(cluster[i], cluster[j])
                     for i in range(len(cluster)) for j in range(i + 1, len(cluster))
                     if self.device.coupling_hz(cluster[i], cluster[j])}
        v, e = dressed_basis([f - f_bare[0] for f in f_bare],
                             [t.anharmonicity_hz for t in truths], couplings)
        levels = _level_numbers(len(cluster))
        target = (np.array([model.freq_hz[q] - f_bare[0] for q in cluster]) @ levels
                  + model.energies(cluster))
        delta = target - (e - e[0])
        h_corr = (v * delta[None, :]) @ v.T
        if len(self._dressings) >= 64:
            self._dressings.clear()
        self._dressings[key] = (v, h_corr)
        return v, h_corr

    def _cluster_split_parts(self, cluster: list[int], f_bare: tuple[float, ...],
                             model: DressedModel) -> SplitParts:
        """The :class:`~labqpu.firmware_sim.split.SplitParts` of a cluster's static Hamiltonian
        (that of its dressing, :meth:`_cluster_dressing`): kept across parts and runs, for at
        most :data:`SPLIT_PARTS_KEPT` dressings."""
        key = (tuple(cluster), f_bare, model.freq_hz)
        parts = self._split_parts.get(key)
        if parts is None:
            if len(self._split_parts) >= SPLIT_PARTS_KEPT:
                self._split_parts.clear()
            parts = self._split_parts[key] = SplitParts()
        return parts

    def _cluster_common_frame_unitary(self, cluster: list[int], drives: dict[int, np.ndarray],
                                      flux_phi: dict[int, np.ndarray], b0: int, b1: int,
                                      f_bare: list[float], f_frame: list[float],
                                      h_corr: np.ndarray, f_ref_hz: float | None = None
                                      ) -> np.ndarray:
        """Propagator of a coupled cluster over [b0, b1) in the frame rotating at ``f_ref_hz``
        (default: the first qubit's bare idle frequency ``f_bare[0]``) for every qubit, bare
        basis (per-sample eigendecomposition). Drives are given in each qubit's frame
        ``f_frame`` (Hz); ``h_corr`` (Hz, the correction of :meth:`_cluster_dressing`, which
        does not depend on the frame) is added at every sample.

        A sample with a drive is cut into ``sub`` midpoint steps (the drive rotates at
        f~_q - f_ref in the common frame); a run of samples without drive and with the same
        flux has one constant Hamiltonian and is one step of that length (``_cluster_steps``).
        """
        fs = self.device.sample_rate_hz
        n = len(cluster)
        d = LEVELS**n
        a_ops = _cluster_operators(n)[0]
        f_ref = f_bare[0] if f_ref_hz is None else f_ref_hz
        fastest = max([abs(f_frame[i] - f_ref) for i, q in enumerate(cluster) if q in drives]
                      + [0.0])
        sub = max(1, int(np.ceil(SUBSTEPS_PER_CYCLE * fastest / fs)))
        f_q = self._cluster_frequencies(cluster, flux_phi)
        driven = np.zeros(b1 - b0, dtype=bool)
        for z in drives.values():
            driven |= z != 0
        sample, t_in, length = _cluster_steps(driven, f_q, sub)
        t_step = (b0 + sample + t_in) / fs
        # The constant part once, the frequencies on the diagonal and each drive on the
        # entries of its a^dag and a only (a full (steps, d, d) pass per term cost ~10 ms on
        # four transmons).
        const = self._cluster_static(cluster, h_corr)
        # Without drives every term is real (h_corr, the couplings, the levels): a real stack
        h = np.empty((sample.size, d, d), dtype=complex if drives else float)
        h[:] = const if drives else const.real
        diag = np.arange(d)
        h[:, diag, diag] += (f_q[sample] - f_ref) @ _level_numbers(n)
        for i, q in enumerate(cluster):
            if q in drives:
                z = drives[q][sample] * np.exp(-2j * np.pi * (f_frame[i] - f_ref) * t_step)
                rows, cols = np.nonzero(a_ops[i].T)  # a^dag = a^T (real)
                amp = 0.5 * a_ops[i][cols, rows]
                h[:, rows, cols] += z[:, None] * amp[None, :]
                h[:, cols, rows] += z.conj()[:, None] * amp[None, :]
        # exp(-i 2 pi H L dt) as a step of dt / sub with the Hamiltonian scaled by L sub.
        h *= (length * sub)[:, None, None]
        return propagate_conserving(h, 1.0 / (fs * sub), n)

    def _cluster_static(self, cluster: list[int], h_corr: np.ndarray) -> np.ndarray:
        """The sample-independent part of a cluster's bare Hamiltonian (Hz): the dressing
        correction ``h_corr``, the anharmonicities and the exchange couplings (those two from
        the device file, summed once per cluster and engine, for at most
        :data:`SPLIT_PARTS_KEPT` clusters)."""
        key = tuple(cluster)
        device_part = self._statics.get(key)
        if device_part is None:
            n = len(cluster)
            n_pair = _cluster_operators(n)[2]
            device_part = np.zeros((LEVELS**n, LEVELS**n), dtype=complex)
            for i, q in enumerate(cluster):
                device_part += 0.5 * self.device.qubits[q].anharmonicity_hz * n_pair[i]
            for i, qa in enumerate(cluster):
                for j, qb in enumerate(cluster[i + 1:], start=i + 1):
                    g = self.device.coupling_hz(qa, qb)
                    if g:
                        device_part += g * _exchange_operator(n, i, j)
            device_part.flags.writeable = False
            if len(self._statics) >= SPLIT_PARTS_KEPT:
                self._statics.clear()
            self._statics[key] = device_part
        return h_corr + device_part

    def _cluster_frequencies(self, cluster: list[int], flux_phi: dict[int, np.ndarray]
                             ) -> np.ndarray:
        """Bare frequency (Hz) of each qubit of ``cluster`` (columns) at each sample's flux."""
        return np.array([[self.device.qubits[q].frequency_hz(p) for p in flux_phi[q]]
                         for q in cluster]).T

    def _cluster_split_unitary(self, base_key: tuple, cluster: list[int],
                               drives: dict[int, np.ndarray], flux_phi: dict[int, np.ndarray],
                               f_bare: list[float], f_frame: list[float], h_corr: np.ndarray,
                               f_ref: float, parts: SplitParts | None = None) -> np.ndarray:
        """Propagator (bare basis, frame rotating at ``f_ref``) of a cluster part starting at
        sample 0 in which several qubits are driven (``drives``: Hz per sample in each qubit's
        frame ``f_frame``), by split steps extrapolated to fourth order
        (:mod:`~labqpu.firmware_sim.split`).

        The sub-steps per sample are chosen by step doubling once per shape, ``base_key`` (the
        part's cache key without its drives) and the drives with every phase but the
        strongest drive's split off, and kept in ``_split_substeps``: a weak drive's phase then
        never changes them, so a phase table's entries and every later phase of that shape are
        propagated alike (``_phase_interpolated``). ``parts``: the blocks of exp(H_s) kept
        for ``h_corr``'s cluster (:meth:`_cluster_split_parts`).
        """
        fs = self.device.sample_rate_hz
        k = len(cluster)
        const = self._cluster_static(cluster, h_corr)
        diag = (self._cluster_frequencies(cluster, flux_phi) - f_ref) @ _level_numbers(k)
        reference = _reference_qubit(drives)
        shape = {q: z if q == reference else drive_phase_key(z)[1] for q, z in drives.items()}

        def spec(zs: dict[int, np.ndarray]) -> list[tuple[int, np.ndarray, float]]:
            return [(cluster.index(q), z, f_frame[cluster.index(q)] - f_ref)
                    for q, z in zs.items()]

        shape_key = (base_key, *((q, quantised_key(z)) for q, z in shape.items()))
        sub = self._split_substeps.get(shape_key)
        if sub is None:
            u, sub = split_step_adaptive(const, diag, spec(shape), 0, fs, k, parts=parts)
            if len(self._split_substeps) >= PHASE_SHAPES_SEEN:
                self._split_substeps.clear()
            self._split_substeps[shape_key] = sub
            if all(np.array_equal(shape[q], z) for q, z in drives.items()):
                return u
        return split_step_extrapolated(const, diag, spec(drives), 0, fs, k, sub, parts)


def _cluster_steps(driven: np.ndarray, f_hz: np.ndarray, sub: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time steps of a cluster block: (sample, offset, length) per step, in samples.

    ``driven`` flags the samples with a drive, ``f_hz`` (samples x qubits) the bare
    frequencies per sample. A driven sample gives ``sub`` steps of length 1 / sub at offsets
    (m + 1/2) / sub (midpoints: the drive's phase is taken there); consecutive undriven
    samples with equal frequencies give one step over their whole length.
    """
    n = driven.size
    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = ~driven[1:] & ~driven[:-1] & np.all(f_hz[1:] == f_hz[:-1], axis=1)
    first = np.flatnonzero(~same)
    run = np.diff(np.append(first, n))
    reps = np.where(driven[first], sub, 1)
    sample = np.repeat(first, reps)
    m = np.arange(sample.size) - np.repeat(np.cumsum(reps) - reps, reps)
    is_driven = np.repeat(driven[first], reps)
    t_in = np.where(is_driven, (m + 0.5) / sub, 0.5)
    length = np.where(is_driven, 1.0 / sub, np.repeat(run, reps).astype(float))
    return sample, t_in, length
