"""The simulator's quantum state: density matrix of three-level transmons and its updates.

``DensityMatrix`` holds the evolved qubits as a tensor with a row axis per qubit and a column
axis per qubit that carries coherences (first qubit most significant): spectators whose state
stays diagonal are held by their populations, a factor 3 instead of 9 each (2n axes when there
are none). Operators reach it as local channels (9x9 row-major superoperators),
k-qubit unitaries, unitaries conditioned on other qubits' levels, and diagonal phases.
Conditioned and one-qubit operators go through a numba kernel that updates each group of rows
in place (``_group_apply_kernel``); ``labqpu.firmware_sim.local.LocalChannels`` composes each
qubit's local evolution and applies it only when needed. A one-transmon channel that conserves
the level difference i - j of the entries it maps (relaxation, dephasing, diagonal phases: what
is pending on a coupled qubit) goes through ``_band_channel_kernel``, in place and with 19 of
its 81 entries; any other channel through ``numpy.tensordot``. A drive conditioned on the
neighbours' levels, with the driven transmon's pending channel before it, is one in-place pass
over that transmon's 3x3 blocks (``_fibre_channel_kernel``). The channels of spectators held by
their populations act as real 3x3 maps on those populations, all of them in one sweep
(``_level_maps_kernel``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg

from labqpu.firmware_sim.density_kernels import (
    _band_channel_kernel,
    _band_parts,
    _band_real_kernel,
    _block_adjoint_kernel,
    _diagonal_kernel,
    _fibre_channel_kernel,
    _group_apply_kernel,
    _level_maps_kernel,
    _zero_at,
)

LEVELS = 3


def _ladder(levels: int = LEVELS) -> np.ndarray:
    return np.diag(np.sqrt(np.arange(1, levels, dtype=float)), 1).astype(complex)


@lru_cache(maxsize=256)
def _fibres(n: int, diagonal: tuple[int, ...], controls: tuple[int, ...], target: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Index tables of :func:`_fibre_channel_kernel` for a state of ``n`` positions holding
    ``diagonal`` by their populations: the rows with the ``target``'s level 0, the levels of
    ``controls`` on the row side for each, and the part of the column side's levels that a
    row gives (held controls: a held position's column level is its row's); the columns with
    the target's level 0 and the part of the column side's levels that they give (controls
    that carry coherences); then the row and column strides of the target's level. Their
    sizes are 3^(n-1) and 3^(active positions - 1)."""
    active = [p for p in range(n) if p not in diagonal]
    rows = np.indices((LEVELS,) * n).reshape(n, -1)
    cols = np.indices((LEVELS,) * len(active)).reshape(len(active), -1)
    column = active.index(target)
    r = np.flatnonzero(rows[target] == 0)
    c = np.flatnonzero(cols[column] == 0)
    row_ctrl = np.zeros(r.size, dtype=np.int64)
    row_col_ctrl = np.zeros(r.size, dtype=np.int64)
    col_ctrl = np.zeros(c.size, dtype=np.int64)
    for k, p in enumerate(controls):
        weight = LEVELS ** (len(controls) - 1 - k)
        row_ctrl += weight * rows[p][r]
        if p in diagonal:
            row_col_ctrl += weight * rows[p][r]
        else:
            col_ctrl += weight * cols[active.index(p)][c]
    return (r.astype(np.int64), row_ctrl, row_col_ctrl, c.astype(np.int64), col_ctrl,
            LEVELS ** (n - 1 - target), LEVELS ** (len(active) - 1 - column))


#: What ``_fibre_channel_kernel`` is given for its superoperator when there is none (mode 0).
_NO_SUPEROP = np.zeros((0, 0), dtype=np.complex128)


def _band_mask() -> np.ndarray:
    """True where a row-major one-transmon superoperator maps entry (k, l) to (i, j) with
    i - j = k - l."""
    i, j = np.divmod(np.arange(LEVELS * LEVELS), LEVELS)
    return (i - j)[:, None] == (i - j)[None, :]


#: Entries of a 9x9 superoperator that ``_band_channel_kernel`` reads.
BAND_MASK = _band_mask()
#: Flat indices of the other entries (which must be 0 for it).
_OFF_BAND = np.flatnonzero(~BAND_MASK)
#: Flat indices of a band superoperator's weights from populations to populations (3x3,
#: row-major) and of its coherence entries in ``_band_real_kernel``'s order.
BAND_POPULATIONS = np.array([0, 4, 8, 36, 40, 44, 72, 76, 80])
BAND_COHERENCES = np.array([30, 34, 66, 70, 10, 14, 46, 50, 60, 20])
#: Largest imaginary part of a population weight that ``_band_real_kernel`` leaves out (a
#: physical channel's are 0 up to rounding); a channel with larger ones takes the complex
#: kernel.
REAL_WEIGHT_TOL = 1e-14


def _band(superop: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(flat, kind, pop, coh) of a 9x9 superoperator: its 81 entries as a contiguous complex
    array and ``_band_parts`` of them (kind 0: it does not conserve i - j; 1: it does; 2: it
    does and its population weights are real up to :data:`REAL_WEIGHT_TOL`)."""
    flat = np.ascontiguousarray(superop, dtype=np.complex128).reshape(-1)
    return flat, *_band_parts(flat, _OFF_BAND, BAND_POPULATIONS, BAND_COHERENCES,
                              REAL_WEIGHT_TOL)


def _conserves_band(superop: np.ndarray) -> bool:
    """Whether a 9x9 superoperator conserves i - j (every entry outside ``BAND_MASK`` 0)."""
    return _zero_at(np.ascontiguousarray(superop, dtype=np.complex128).reshape(-1), _OFF_BAND)


@lru_cache(maxsize=256)
def _row_groups(n: int, controls: tuple[int, ...], targets: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index tables of :func:`_group_apply_kernel` for ``n`` transmons (positions): per group
    of rows that differ only in the ``targets``' digits, its row with those digits 0 and its
    control index (the ``controls``' digits, first most significant); and the row offset of
    each target index."""
    digits = np.indices((LEVELS,) * n).reshape(n, -1)
    strides = LEVELS ** np.arange(n - 1, -1, -1)
    first = np.all(digits[list(targets)] == 0, axis=0)
    control = np.zeros(digits.shape[1], dtype=np.int64)
    for a in controls:
        control = control * LEVELS + digits[a]
    sub = np.indices((LEVELS,) * len(targets)).reshape(len(targets), -1)
    off = (strides[list(targets)][:, None] * sub).sum(axis=0).astype(np.int64)
    return np.flatnonzero(first).astype(np.int64), control[first], off


def _lindblad_terms() -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The parts of one transmon's Lindblad generator (row-major vec, 9x9), per unit rate:
    -i 2 pi [H, .] for H/h = (1/2) n (n - 1) (per Hz of anharmonicity), and the dissipators
    D[L] = L . L^dag - {L^dag L, .} / 2 of L = a, a^dag and n."""
    a = _ladder()
    n = a.conj().T @ a
    eye = np.eye(LEVELS)
    h = 0.5 * (n @ n - n)
    hamiltonian = -2j * np.pi * (np.kron(h, eye) - np.kron(eye, h.T))

    def dissipator(op: np.ndarray) -> np.ndarray:
        opd = op.conj().T @ op
        return np.kron(op, op.conj()) - 0.5 * np.kron(opd, eye) - 0.5 * np.kron(eye, opd.T)

    return hamiltonian, (dissipator(a), dissipator(a.conj().T), dissipator(n))


_IDLE_HAMILTONIAN, _DISSIPATORS = _lindblad_terms()


def population_map(superop: np.ndarray) -> np.ndarray:
    """The 3x3 real matrix a row-major 9x9 superoperator applies to a transmon's populations
    (its entries from |k><k| to |i><i|; a physical channel's are real, up to rounding)."""
    return superop[::LEVELS + 1, ::LEVELS + 1].real


@lru_cache(maxsize=256)
def _held_rows(n: int, held: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Index tables of :func:`_level_maps_kernel` for ``n`` positions, ``held`` (ascending)
    the ones the maps act on: (held_rows, outer_rows), the row offsets of each combination of
    the held digits (first most significant) and of the other digits. Read-only."""
    weight = LEVELS ** np.arange(n - 1, -1, -1, dtype=np.int64)

    def offsets(positions: list[int]) -> np.ndarray:
        digits = np.indices((LEVELS,) * len(positions)).reshape(len(positions),
                                                               LEVELS ** len(positions))
        return (weight[positions, None] * digits).sum(axis=0).astype(np.int64)

    held_rows = offsets(list(held))
    outer_rows = offsets([p for p in range(n) if p not in held])
    for x in (held_rows, outer_rows):
        x.flags.writeable = False
    return held_rows, outer_rows


@lru_cache(maxsize=64)
def _active_columns(n: int, diagonal: tuple[int, ...]) -> np.ndarray:
    """For each basis state of ``n`` positions (first most significant), the index of its
    levels on the positions not in ``diagonal`` (first most significant). Read-only."""
    active = [p for p in range(n) if p not in diagonal]
    digits = np.indices((LEVELS,) * n).reshape(n, LEVELS**n)
    weights = LEVELS ** np.arange(len(active) - 1, -1, -1, dtype=np.int64)
    columns = (weights[:, None] * digits[active]).sum(axis=0).astype(np.int64)
    columns.flags.writeable = False
    return columns


def kron_identity(u: np.ndarray, first: bool) -> np.ndarray:
    """``numpy.kron(u, 1)`` (``first``: u on the first of two transmons) or
    ``numpy.kron(1, u)`` for a one-transmon operator u (3x3), as a 9x9 array built without
    numpy.kron's general machinery (~6x slower at this size)."""
    out = np.zeros((LEVELS,) * 4, dtype=np.result_type(u, float))
    for i in range(LEVELS):
        if first:
            out[:, i, :, i] = u
        else:
            out[i, :, i, :] = u
    return out.reshape(LEVELS**2, LEVELS**2)


@lru_cache(maxsize=256)
def relaxation_superop(t1_s: float, t_phi_s: float, duration_s: float,
                       anharmonicity_hz: float = 0.0, thermal_ratio: float = 0.0) -> np.ndarray:
    """Exact Lindblad channel on one transmon for ``duration_s`` (row-major vec, 9x9).

    Jump operators sqrt(G_down) a (ladder decay), sqrt(G_up) a^dag (thermal excitation) and
    sqrt(2/T_phi) n (pure dephasing, so that a 0-1 coherence decays as exp(-t/T_phi)), with
    G_down = 1 / (T1 (1 + r)), G_up = r G_down and r = ``thermal_ratio`` (exp(-h f / k T),
    ``noise.thermal_ratio``): 1/T1 = G_down + G_up, and the ladder relaxes towards p_n ~ r^n,
    not towards |0>. With ``anharmonicity_hz`` = alpha the channel
    also carries the idle Hamiltonian H/h = (alpha / 2) n (n - 1) of the transmon's idle
    rotating frame (|2> gains phase exp(-i 2 pi alpha t)); pass 0 when a pulse's unitary
    already holds that evolution.
    """
    down = 1.0 / (t1_s * (1.0 + thermal_ratio))
    liouv = (anharmonicity_hz * _IDLE_HAMILTONIAN + down * _DISSIPATORS[0]
             + thermal_ratio * down * _DISSIPATORS[1] + (2.0 / t_phi_s) * _DISSIPATORS[2])
    return scipy.linalg.expm(liouv * duration_s)


@lru_cache(maxsize=16)
def _level_numbers(k: int) -> np.ndarray:
    """Level of each of ``k`` transmons (rows, first most significant) in each basis state
    (columns): the diagonals of n_1 ... n_k."""
    return np.indices((LEVELS,) * k).reshape(k, -1)


@lru_cache(maxsize=16)
def _excitation_numbers(k: int) -> np.ndarray:
    """Total excitation number of each basis state of ``k`` transmons (first most significant)."""
    return _level_numbers(k).sum(axis=0)


@lru_cache(maxsize=16)
def _excitation_mask(k: int) -> np.ndarray:
    """True where row and column of a 3^k x 3^k operator have equal excitation number."""
    e = _excitation_numbers(k)
    return e[:, None] == e[None, :]


@lru_cache(maxsize=16)
def _excitation_blocks(k: int) -> tuple[np.ndarray, ...]:
    """Basis indices of ``k`` transmons grouped by total excitation number."""
    e = _excitation_numbers(k)
    return tuple(np.flatnonzero(e == n) for n in range(int(e.max()) + 1))


@lru_cache(maxsize=64)
def _spectator_orders(n: int, diagonal: tuple[int, ...]
                      ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Axis orders of a (3,)*n + (-1,) tensor that move the ``diagonal`` row axes to the front
    (forward) and back again (``DensityMatrix._batched``, :func:`_spectator_rows`)."""
    forward = (*diagonal, *(i for i in range(n) if i not in diagonal), n)
    back = tuple(int(i) for i in np.argsort(forward))
    return forward, back


@lru_cache(maxsize=64)
def _spectator_rows(n: int, diagonal: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """For the (3^n, 3^a) matrix of a state holding ``diagonal`` positions by their
    populations: ``rows_of`` (3^s, 3^a), the row (full basis index) with spectator levels s
    and active levels i, and ``level_of_row`` (3^n,), each row's spectator index s (digits of
    the diagonal positions, first most significant). Read-only."""
    forward, _ = _spectator_orders(n, diagonal)
    index = np.arange(LEVELS**n, dtype=np.int64).reshape((LEVELS,) * n)
    rows_of = np.ascontiguousarray(index.transpose(forward[:-1]).reshape(LEVELS ** len(diagonal),
                                                                         -1))
    level_of_row = np.empty(LEVELS**n, dtype=np.int64)
    level_of_row[rows_of] = np.arange(rows_of.shape[0])[:, None]
    for x in (rows_of, level_of_row):
        x.flags.writeable = False
    return rows_of, level_of_row


def _left_multiply(u: np.ndarray, x: np.ndarray, blocks: tuple[np.ndarray, ...] | None,
                   out: np.ndarray) -> np.ndarray:
    """u applied to the middle axis of ``x`` (shape (a, m, b)), written into ``out`` (same
    shape, not overlapping ``x``) and returned; with ``blocks`` only the diagonal blocks of u
    (u must be block-diagonal on them)."""
    if blocks is None:
        return np.matmul(u, x, out=out)
    for idx in blocks:
        if idx.size == 1:
            out[:, idx, :] = u[idx[0], idx[0]] * x[:, idx, :]
        else:
            out[:, idx, :] = np.matmul(u[np.ix_(idx, idx)], x[:, idx, :])
    return out


def _check_stack(u_stack: np.ndarray, controls: list[int], targets: list[int]) -> None:
    """Raise ``ValueError`` unless ``u_stack`` holds one operator on ``targets`` per level
    configuration of ``controls``: shape (3^len(controls), 3^len(targets), 3^len(targets)),
    with no position twice among the targets and controls."""
    positions = [*controls, *targets]
    if len(set(positions)) != len(positions):
        raise ValueError(f"controls {list(controls)} and targets {list(targets)} name a "
                         "position twice")
    m = LEVELS ** len(targets)
    if u_stack.shape != (LEVELS ** len(controls), m, m):
        raise ValueError(f"{len(controls)} control(s) and {len(targets)} target(s) need a "
                         f"stack of shape {(LEVELS ** len(controls), m, m)}, got "
                         f"{u_stack.shape}")


class DensityMatrix:
    """Density matrix of ``n`` three-level qubits (positions 0..n-1, first most significant).

    Positions in ``diagonal`` are spectators held by their populations only: their state stays
    diagonal (nothing drives or hybridises them; they relax, dephase and shift their neighbours
    by ZZ), so the state is the mixture sum_k p_k |k><k| (x) rho_k over their levels k, and each
    costs a factor 3 instead of 9. ``tensor`` has one row axis per position (in order), then
    one column axis per position that is not diagonal: with no spectators, the usual 2n axes.
    Operators act on the other positions and may be conditioned on the spectators' levels.
    The methods update the tensor's memory in place: a state is shared through :meth:`copy`.
    """

    def __init__(self, populations: list[np.ndarray], diagonal: tuple[int, ...] = ()) -> None:
        self.n = len(populations)
        #: Positions held by their populations only (sorted).
        self.diagonal = tuple(sorted(diagonal))
        #: The other positions, which carry coherences (sorted).
        self.active = tuple(p for p in range(self.n) if p not in self.diagonal)
        # The product state's only entries: the populations' products (first position most
        # significant), each in its row and in the column of its active positions' levels.
        values = np.ones(1)
        for p in populations:
            values = np.multiply.outer(values, p).ravel()
        rho = np.zeros((LEVELS**self.n, LEVELS ** len(self.active)), dtype=complex)
        rho[np.arange(values.size), _active_columns(self.n, self.diagonal)] = values
        self.tensor = rho.reshape([LEVELS] * (self.n + len(self.active)))
        #: A matrix of the tensor's size that :meth:`apply_product` writes its BLAS passes
        #: into, kept between calls (the pass's input becomes the next one's); never shared:
        #: a copy of the state starts without one (:meth:`__copy__`).
        self._scratch: np.ndarray | None = None

    def __copy__(self) -> DensityMatrix:
        """A shallow copy (the tensor shared) without the scratch matrix, which only one
        state may write into."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out._scratch = None
        return out

    def free_scratch(self) -> None:
        """Let go of the scratch matrix (:meth:`apply_product` makes a new one when needed):
        a state kept after its evolution then holds one matrix, not two."""
        self._scratch = None

    def _check_diagonal(self, phases: np.ndarray) -> np.ndarray:
        """``phases`` as a contiguous complex array of 3^n values (``ValueError`` otherwise:
        the kernel does not check bounds)."""
        phases = np.ascontiguousarray(phases, dtype=np.complex128)
        if phases.shape != (LEVELS**self.n,):
            raise ValueError(f"a diagonal over {self.n} positions has {LEVELS**self.n} values, "
                             f"got shape {phases.shape}")
        return phases

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the matrix the tensor flattens to: 3^n, 3^(active positions)."""
        return LEVELS**self.n, LEVELS ** len(self.active)

    def column_axis(self, position: int) -> int:
        """The tensor axis of ``position``'s column level (``position`` must not be diagonal)."""
        return self.n + self.active.index(position)

    def copy(self) -> DensityMatrix:
        """An independent copy."""
        out = copy.copy(self)
        out.tensor = self.tensor.copy()
        return out

    def drop(self, positions: tuple[int, ...]) -> DensityMatrix:
        """The state of the other positions (a new object): ``positions``, each held diagonal,
        summed out. Exact for everything that follows when nothing that follows depends on
        their levels: a channel on them keeps the others' state, and their ZZ with positions
        that are themselves held diagonal cancels in every entry."""
        gone = set(positions)
        if not gone <= set(self.diagonal):
            raise ValueError(f"positions {sorted(gone - set(self.diagonal))} are not held "
                             "diagonal: only those can be dropped")
        keep = [p for p in range(self.n) if p not in gone]
        out = copy.copy(self)
        out.n = len(keep)
        out.diagonal = tuple(keep.index(p) for p in self.diagonal if p not in gone)
        out.active = tuple(keep.index(p) for p in self.active)
        out.tensor = self.tensor.sum(axis=tuple(sorted(gone)))
        return out

    def without_spectators(self) -> DensityMatrix:
        """The same state with every position carrying coherences (a new object; exact, since
        a held position's coherences are 0): for an evolution that acts on a held qubit."""
        out = DensityMatrix([np.array([1.0, 0.0, 0.0])] * self.n)
        out.tensor = self.matrix().reshape([LEVELS] * (2 * self.n))
        return out

    def _check_targets(self, targets: list[int]) -> None:
        held = sorted(set(targets) & set(self.diagonal))
        if held:
            raise ValueError(f"positions {held} are held diagonal: an operator cannot act on "
                             "them")

    def _batched(self, x: np.ndarray) -> np.ndarray:
        """The (3^n, 3^a) matrix ``x`` as the stack (3^s, 3^a, 3^a) over the diagonal
        positions' levels (a view when possible)."""
        forward, _ = _spectator_orders(self.n, self.diagonal)
        t = x.reshape((LEVELS,) * self.n + (-1,)).transpose(forward)
        a = LEVELS ** len(self.active)
        return t.reshape(LEVELS ** len(self.diagonal), a, a)

    def apply_unitary(self, u: np.ndarray, targets: list[int]) -> None:
        """rho -> U rho U^dag; U acts on ``targets`` (positions, most significant first)
        (:meth:`apply_product` of one operator)."""
        self.apply_product([(u[None], [], list(targets))])

    def apply_controlled(self, u_stack: np.ndarray, controls: list[int],
                         targets: list[int]) -> None:
        """rho -> U rho U^dag with U = sum_c |c><c| (x) u_stack[c]: ``u_stack`` (3^len(controls),
        3^len(targets), 3^len(targets)) acts on ``targets``, chosen by the levels of
        ``controls`` (positions, first most significant; either list may be empty)
        (:meth:`apply_product` of one operator)."""
        self.apply_product([(u_stack, list(controls), list(targets))])

    def apply_product(self, ops: list[tuple[np.ndarray, list[int], list[int]]],
                      diagonal: np.ndarray | None = None) -> None:
        """rho -> L rho L^dag with L = O_k ... O_1 D: ``diagonal`` D (3^n values over all
        qubits, or None) first, then each ``ops`` entry (u_stack, controls, targets) in order,
        O = sum_c |c><c| (x) u_stack[c] as in :meth:`apply_controlled` (no controls: u_stack
        of shape (1, m, m)). Targets must not be diagonal positions; controls may be.

        rho is Hermitian, so L rho L^dag = L (L rho)^dag: every operator is a row pass, and
        the whole product costs one adjoint (per spectator level). A row pass of an operator
        on two or more consecutive ascending targets without controls is a BLAS multiplication
        on a reshaped matrix, restricted to the blocks of equal excitation number when U
        conserves it (a flux pulse without drives does); any other (one target, or controls)
        goes through ``_group_apply_kernel``, in place (for one target ~1.2-1.4x faster than
        BLAS on these thin products, and it allocates nothing). D is applied in place first
        (D rho D^dag); the BLAS passes and the adjoint write into a scratch matrix the state
        keeps until :meth:`free_scratch`. The operands are checked before anything is
        applied; an interruption past that (out of memory) leaves the state part-way.
        """
        for u, controls, targets in ops:
            self._check_targets(targets)
            _check_stack(u, controls, targets)
        if diagonal is not None:
            diagonal = self._check_diagonal(diagonal)
        passes = [self._row_pass(u, controls, targets) for u, controls, targets in ops]
        shape = self.shape
        x = np.ascontiguousarray(self.tensor, dtype=np.complex128).reshape(shape)
        spare = self._scratch
        if spare is None or spare.shape != shape:
            spare = np.empty(shape, dtype=np.complex128)
        if diagonal is not None:  # D rho D^dag, in place
            _diagonal_kernel(x, diagonal, *_spectator_rows(self.n, self.diagonal))
        for side in range(2):
            if side:  # x^dag into the spare matrix: block by block with spectators, else
                if self.diagonal:  # numpy's transposed conj (~1.4x the kernel when square)
                    _block_adjoint_kernel(x, _spectator_rows(self.n, self.diagonal)[0], spare)
                else:
                    np.conj(x.T, out=spare)
                x, spare = spare, x
            for row_pass in passes:
                x, spare = row_pass(x, spare)
        self._scratch = spare
        self.tensor = x.reshape(self.tensor.shape)

    def _row_pass(self, u_stack: np.ndarray, controls: list[int], targets: list[int]):
        """(x, spare) -> (O x, the matrix now free) for the matrix x, a free matrix of its
        shape, and O as in :meth:`apply_product`."""
        k = len(targets)
        p = targets[0]
        if k > 1 and not controls and list(targets) == list(range(p, p + k)):
            u = u_stack[0]
            off = np.abs(u[~_excitation_mask(k)]).max(initial=0.0)
            use = _excitation_blocks(k) if off < 1e-13 else None
            split = (LEVELS**p, LEVELS**k, -1)

            def blas(x: np.ndarray, spare: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                _left_multiply(u, x.reshape(split), use, spare.reshape(split))
                return spare, x

            return blas
        idx = _row_groups(self.n, tuple(controls), tuple(targets))
        u = np.ascontiguousarray(u_stack, dtype=np.complex128)
        return lambda x, spare: (_group_apply_kernel(x, u, *idx), spare)

    def apply_controlled_channel(self, u_stack: np.ndarray, superop: np.ndarray | None,
                                 controls: list[int], target: int, phase_rad: float = 0.0
                                 ) -> None:
        """rho -> U S(rho) U^dag in one pass: ``superop`` S (9x9 row-major, or None) on
        ``target``, then U = sum_c |c><c| (x) R u_stack[c] R^dag (``u_stack``
        (3^len(controls), 3, 3)) on ``target`` chosen by the levels of ``controls``
        (positions), R = exp(i ``phase_rad`` n) on ``target``: one numba pass over the 3x3
        blocks of the target's levels (``_fibre_channel_kernel``; without diagonal positions,
        over the blocks on and above the diagonal, the others written as their mirrors: the
        state is Hermitian)."""
        self._check_targets([target])
        _check_stack(u_stack, controls, [target])
        idx = _fibres(self.n, self.diagonal, tuple(controls), target)
        x = np.ascontiguousarray(self.tensor, dtype=np.complex128)
        if superop is None:
            superop, mode = _NO_SUPEROP, 0
        else:
            mode = 2 if _conserves_band(superop) else 1
        _fibre_channel_kernel(
            x.reshape(-1), self.shape[1], np.ascontiguousarray(u_stack, dtype=np.complex128),
            np.ascontiguousarray(superop, np.complex128), mode, float(phase_rad), *idx,
            not self.diagonal)
        self.tensor = x

    def apply_diagonal(self, phases: np.ndarray) -> None:
        """rho -> D rho D^dag with D = diag(``phases``) over all qubits (3^n values), in place
        (``_diagonal_kernel``)."""
        phases = self._check_diagonal(phases)
        x = np.ascontiguousarray(self.tensor, dtype=np.complex128).reshape(self.shape)
        _diagonal_kernel(x, phases, *_spectator_rows(self.n, self.diagonal))
        self.tensor = x.reshape(self.tensor.shape)

    def apply_held_channels(self, channels: list[tuple[np.ndarray, int]]) -> None:
        """Apply one-qubit channels (row-major 9x9 superoperator, position) on positions held
        diagonal, at most one per position: their action on populations (a 3x3 matrix each),
        all in one sweep of the tensor (``_level_maps_kernel``). Each must conserve i - j
        (``ValueError`` otherwise, with nothing applied). Only the real part of the weights
        from populations to populations is used: a physical channel's are real (up to
        rounding)."""
        if not channels:
            return
        channels = sorted(channels, key=lambda c: c[1])
        held = tuple(target for _, target in channels)
        for superop, target in channels:
            if target not in self.diagonal:
                raise ValueError(f"position {target} is not held diagonal")
            if not _conserves_band(superop):
                raise ValueError(f"position {target} is held diagonal: a channel that creates "
                                 "coherences cannot act on it")
        if len(set(held)) < len(held):
            raise ValueError(f"a position is named twice in {list(held)}")
        self.apply_level_maps(held, np.array([population_map(s) for s, _ in channels]))

    def apply_level_maps(self, held: tuple[int, ...], maps: np.ndarray) -> None:
        """x -> the real 3x3 ``maps[j]`` (k, 3, 3) on the populations of the positions
        ``held`` (ascending, each held diagonal), in one sweep (``_level_maps_kernel``): what
        :meth:`apply_held_channels` does once it has checked its channels."""
        x = np.ascontiguousarray(self.tensor, dtype=np.complex128)
        _level_maps_kernel(x.reshape(-1).view(np.float64), np.ascontiguousarray(maps),
                           *_held_rows(self.n, held), 2 * self.shape[1])
        self.tensor = x

    def apply_superop(self, superop: np.ndarray, target: int) -> None:
        """Apply a one-qubit channel given as a row-major 9x9 superoperator: in place through
        ``_band_real_kernel`` when it conserves i - j (entries outside ``BAND_MASK`` exactly
        0) and its weights from populations to populations are real (up to
        ``REAL_WEIGHT_TOL``), through ``_band_channel_kernel`` when only the first holds, else
        by ``tensordot``. On a diagonal position the channel must conserve
        i - j, and only its action on populations is applied (:meth:`apply_held_channels`)."""
        if target in self.diagonal:
            self.apply_held_channels([(superop, target)])
            return
        flat, kind, pop, coh = _band(superop)
        column = self.active.index(target)
        if kind:
            x = np.ascontiguousarray(self.tensor, dtype=np.complex128)
            a = len(self.active)
            dims = (LEVELS**target, LEVELS ** (self.n - 1 - target), LEVELS**column,
                    LEVELS ** (a - 1 - column))
            if kind == 2:
                _band_real_kernel(x.reshape(-1).view(np.float64), pop, coh, *dims)
            else:
                _band_channel_kernel(x.reshape(-1), flat.reshape(9, 9), *dims)
            self.tensor = x
            return
        s = superop.reshape([LEVELS] * 4)
        axes = [target, self.n + column]
        t = np.tensordot(s, self.tensor, axes=([2, 3], axes))
        self.tensor = np.moveaxis(t, [0, 1], axes)

    def project(self, position: int, level: int, *, hold: bool = False
                ) -> tuple[DensityMatrix, float]:
        """(P rho P / p, p) for P = |level><level| on ``position`` (not diagonal); p = Tr(P rho).
        With ``hold`` the result holds ``position`` by its populations, as a spectator (exact:
        its coherences are 0), so that a measured qubit nothing acts on afterwards costs a
        factor 3 instead of 9. ``self`` is not modified."""
        pops = self._diagonal_entries()
        p = float(np.take(pops, level, axis=position).sum())
        scale = 1.0 / p if p > 0 else 1.0
        column = self.column_axis(position)
        src = [slice(None)] * self.tensor.ndim
        src[position] = src[column] = level
        out = copy.copy(self)
        if hold:  # the position's column axis goes: its row axis alone carries the level
            out.diagonal = tuple(sorted((*self.diagonal, position)))
            out.active = tuple(q for q in range(self.n) if q not in out.diagonal)
            dst = src[:column] + src[column + 1:]
            t = np.zeros(self.tensor.shape[:column] + self.tensor.shape[column + 1:],
                         dtype=self.tensor.dtype)
        else:
            dst = src
            t = np.zeros_like(self.tensor)
        t[tuple(dst)] = self.tensor[tuple(src)] * scale
        out.tensor = t
        return out, p

    def matrix(self) -> np.ndarray:
        """rho as a dense (3^n, 3^n) matrix (a new array; a spectator's coherences are 0)."""
        d = LEVELS**self.n
        if not self.diagonal:
            return self.tensor.reshape(d, d).copy()
        b = self._batched(self.tensor.reshape(self.shape))
        k, a = b.shape[0], b.shape[1]
        dense = np.zeros((k, a, k, a), dtype=complex)
        dense[np.arange(k), :, np.arange(k), :] = b
        held = [*self.diagonal, *self.active]
        rows = [held.index(p) for p in range(self.n)]
        t = dense.reshape([LEVELS] * (2 * self.n))
        return np.transpose(t, rows + [self.n + r for r in rows]).reshape(d, d)

    def _diagonal_entries(self) -> np.ndarray:
        """Real parts of the diagonal entries of rho, shape (3,)*n (not normalised)."""
        if not self.diagonal:
            d = LEVELS**self.n
            return np.real(np.diagonal(self.tensor.reshape(d, d))).reshape([LEVELS] * self.n)
        # entry (s, i) of each spectator level s's block diagonal: row rows_of[s, i], column
        # i, gathered without copying the matrix into blocks (the matrix can be ~100 MB)
        rows_of = _spectator_rows(self.n, self.diagonal)[0]
        x = self.tensor.reshape(self.shape)
        b = np.real(x[rows_of, np.arange(rows_of.shape[1])[None, :]])
        s = len(self.diagonal)
        t = b.reshape([LEVELS] * self.n)
        return np.moveaxis(t, range(s), self.diagonal)

    def sample_levels(self, positions: list[int], shots: int, rng: np.random.Generator
                      ) -> np.ndarray:
        """Levels of the qubits at ``positions`` drawn jointly for ``shots`` shots, shape
        (shots, len(positions))."""
        if not positions:
            return np.zeros((shots, 0), dtype=int)
        pops = self.populations()
        drop = tuple(i for i in range(self.n) if i not in positions)
        marginal = pops.sum(axis=drop) if drop else pops
        keep = sorted(positions)
        flat = np.transpose(marginal, [keep.index(p) for p in positions]).reshape(-1)
        outcome = rng.choice(flat.size, size=shots, p=flat / flat.sum())
        return np.stack(np.unravel_index(outcome, (LEVELS,) * len(positions)), axis=1)

    def populations(self) -> np.ndarray:
        """Joint level probabilities, shape (3,)*n, clipped at 0 and renormalised."""
        p = self._diagonal_entries().clip(min=0.0)
        return p / p.sum()


@dataclass(frozen=True)
class EvolutionStart:
    """A state to resume ``physics.PhysicsEngine.evolve`` from (mid-circuit measurement).

    ``rho`` holds the qubits of ``position`` (qubit -> tensor axis) with every qubit's evolution,
    static ZZ included, accounted for up to sample ``time_samples``; the program's plays must
    not start before it. ``rho`` is not modified, unless ``owned``: its owner does not use it
    again, so the evolution may update it in place instead of copying it first.
    """

    rho: DensityMatrix
    position: dict[int, int]
    time_samples: int
    owned: bool = False
