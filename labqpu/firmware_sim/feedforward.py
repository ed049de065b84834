"""Mid-circuit measurement and feed-forward: the simulated controller's conditional playback.

The model, in the notation of ``physics``:

* **Collapse.** An acquisition on qubit q that is followed by further evolution of q (a pulse
  reaching q after its window, another acquisition of q) or read by a conditional block is a
  *branch point*. At the start of its window, sample T, the density matrix rho(T) is split by
  the projectors P_l = |l><l|_q on q's dressed levels l = 0, 1, 2: branch l has probability
  p_l = Tr(P_l rho) and state P_l rho P_l / p_l. Every acquisition that starts no later than
  the last branch point is a branch point too, so that all collapses happen in time order.
* **Record.** A shot in branch l gets its IQ point from the readout model of
  ``PhysicsEngine._acquire`` for level l at the window's start (resonator response, T1 during
  the window, white noise), and the controller discriminates it with the acquisition's linear
  discriminator: result 1 iff Re(conj(axis) iq) > threshold. The result therefore carries the
  assignment error of the IQ model. The post-measurement state is the projected state evolved
  on (T1 and dephasing act during the window as at any other time); it does not depend on the
  noise of the record.
* **Feed-forward.** A conditional block (plays and phase shifts) runs in a shot iff the result
  of the acquisition it reads equals its value and its parent block, if any, runs. Each
  branch continues with the plays its results select: the program is cut at the branch
  times, and each piece is evolved from the branch's state by ``PhysicsEngine.evolve``
  (``EvolutionStart``), plays that straddle a cut split into two exact pieces.
* **Sampling.** Shots descend the branch tree: at each branch point a shot draws its level from
  p_l, then its record; the children a shot reaches are evolved once, lazily, and shared by every
  shot that reaches them. Acquisitions after the last branch point are sampled jointly from the
  leaf's populations as in ``PhysicsEngine.run``. The cost is one evolution per visited node:
  at most 6 children per branch point (3 levels x 2 results when a block reads it). A child
  holds the measured qubit by its populations (``DensityMatrix.project``: exact, its
  coherences are 0 after the projection) when nothing acts on that qubit afterwards, so each
  such measured qubit costs the rest of the evolution a factor 3 instead of 9.

Programs without conditional blocks and without branch points run through
``PhysicsEngine.run`` unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np

from labqpu.errors import SimulationError
from labqpu.firmware_sim.density import LEVELS, DensityMatrix
from labqpu.firmware_sim.noise import (
    QubitConditions,
    plan_chunks,
    pulse_spans_s,
    thermal_populations,
    with_offsets,
)
from labqpu.firmware_sim.physics import (
    EvolutionStart,
    PhysicsEngine,
    Settings,
    WireProgram,
    check_density_size,
    evolved_qubits,
    spectators,
)
from labqpu.firmware_sim.render import _render_kernel
from labqpu.firmware_sim.shots import run_shots, stop_if

__all__ = ["FeedForward", "branch_probabilities", "run_with_feedforward"]


@dataclass(frozen=True)
class FeedForward:
    """The conditional part of a program, as uploaded (see docs/protocol.md, section 4.5).

    ``play_block`` gives each play of the ``WireProgram`` its block (-1: unconditional).
    Block b runs iff the discriminated result of acquisition ``block_acq[b]`` equals
    ``block_value[b]`` (0 or 1) and its parent ``block_parent[b]`` runs (-1: no parent; a
    parent comes before its children). A phase shift s adds ``shift_phase_rad[s]`` (rad) to every
    play on output ``shift_port[s]`` that starts at or after sample ``shift_start[s]``, when
    its block ``shift_block[s]`` runs (-1: always). Acquisition j is discriminated as
    Re(conj(``disc_axis[j]``) iq) > ``disc_threshold[j]`` (axis 0: not discriminated).
    """

    play_block: np.ndarray
    block_acq: np.ndarray
    block_value: np.ndarray
    shift_port: np.ndarray
    shift_start: np.ndarray
    shift_phase_rad: np.ndarray
    shift_block: np.ndarray
    disc_axis: np.ndarray
    disc_threshold: np.ndarray
    block_parent: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.block_parent is None:
            object.__setattr__(self, "block_parent",
                               np.full(self.block_acq.shape, -1, dtype=np.int32))

    def discriminate(self, j: int, iq: np.ndarray) -> np.ndarray:
        """Results (uint8, 0 or 1) of acquisition ``j`` for IQ points ``iq``; zeros when ``j``
        has no discriminator."""
        axis = complex(self.disc_axis[j])
        if axis == 0:
            return np.zeros(iq.shape, dtype=np.uint8)
        return (np.real(np.conj(axis) * iq) > self.disc_threshold[j]).astype(np.uint8)

    def block_runs(self, b: int, results: dict[int, int]) -> bool | None:
        """Whether block ``b`` runs given ``results`` (acquisition -> result): False as soon
        as its own or an ancestor's result is known to differ, None while one it needs is not
        in ``results``."""
        unknown = False
        while b >= 0:
            j = int(self.block_acq[b])
            if j not in results:
                unknown = True
            elif results[j] != int(self.block_value[b]):
                return False
            b = int(self.block_parent[b])
        return None if unknown else True


def effective_program(prog: WireProgram, ff: FeedForward, results: dict[int, int]
                      ) -> WireProgram:
    """The plays a shot with ``results`` (acquisition -> result) executes, with its phase
    shifts added; plays of blocks whose acquisition is not in ``results`` are left out."""
    runs = [ff.block_runs(b, results) for b in range(ff.block_acq.shape[0])]
    keep = np.array([b < 0 or bool(runs[b]) for b in ff.play_block], dtype=bool)
    phase = prog.play_phase_rad.copy()
    for s in range(ff.shift_port.shape[0]):
        b = int(ff.shift_block[s])
        if b >= 0 and not runs[b]:
            continue
        hit = (prog.play_port == ff.shift_port[s]) & (prog.play_start >= ff.shift_start[s])
        phase[hit] += ff.shift_phase_rad[s]
    return replace(prog, play_port=prog.play_port[keep], play_start=prog.play_start[keep],
                   play_wave=prog.play_wave[keep], play_amp=prog.play_amp[keep],
                   play_phase_rad=phase[keep], play_freq_hz=prog.play_freq_hz[keep])


def _window(prog: WireProgram, t0: int, t1: int, acquisitions: list[int]) -> WireProgram:
    """The plays of ``prog`` within samples [t0, t1) (a play that straddles a bound is cut to
    its part inside, rendering the same samples there), the acquisitions ``acquisitions``,
    and duration ``t1``."""
    lengths = np.diff(prog.wave_offset)[prog.play_wave]
    start, end = prog.play_start, prog.play_start + lengths
    inside = (end > t0) & (start < t1)
    offsets = list(prog.wave_offset)
    extra = []
    waves, starts = [], []
    for i in np.flatnonzero(inside):
        s, e, w = int(start[i]), int(end[i]), int(prog.play_wave[i])
        if s >= t0 and e <= t1:
            waves.append(w)
            starts.append(s)
            continue
        lo, hi = max(s, t0), min(e, t1)
        base = int(prog.wave_offset[w]) + lo - s
        extra.append(prog.wave_data[base:base + hi - lo])
        offsets.append(offsets[-1] + hi - lo)
        waves.append(len(offsets) - 2)
        starts.append(lo)
    idx = np.flatnonzero(inside)
    acq = np.array(acquisitions, dtype=np.int64)
    return replace(
        prog, play_port=prog.play_port[idx], play_start=np.array(starts, dtype=np.int64),
        play_wave=np.array(waves, dtype=np.int32), play_amp=prog.play_amp[idx],
        play_phase_rad=prog.play_phase_rad[idx], play_freq_hz=prog.play_freq_hz[idx],
        wave_offset=np.array(offsets, dtype=np.int64),
        wave_data=np.concatenate([prog.wave_data, *extra]) if extra else prog.wave_data,
        acq_port=prog.acq_port[acq], acq_start=prog.acq_start[acq],
        acq_duration=prog.acq_duration[acq], acq_freq_hz=prog.acq_freq_hz[acq],
        duration_samples=int(t1))


def branch_probabilities(rho: DensityMatrix, axis: int) -> np.ndarray:
    """p_l = Tr(P_l rho) for the levels l of tensor ``axis`` (clipped at 0, summing to 1)."""
    pops = rho.populations()
    return pops.sum(axis=tuple(a for a in range(rho.n) if a != axis))


class _Plan:
    """Which acquisitions are branch points, the qubits to evolve, and the acquisition order."""

    def __init__(self, engine: PhysicsEngine, prog: WireProgram, ff: FeedForward) -> None:
        role = {}
        for q, cab in engine.cabling.items():
            role[cab.drive_port] = (q, "drive")
            role[cab.flux_port] = (q, "flux")
        acq_qubit = {cab.acquire_port: q for q, cab in engine.cabling.items()}
        self.qubit = []
        for j, port in enumerate(prog.acq_port):
            if int(port) not in acq_qubit:
                raise SimulationError(f"acquisition {j} reads input {int(port)}, which no qubit "
                                      "is cabled to")
            self.qubit.append(acq_qubit[int(port)])
        # Pulses on a qubit's own ports (``own``), and those of its coupled neighbours' flux:
        # both reach it after its acquisition; only its own may not play during the window.
        reach: dict[int, list[tuple[int, int]]] = {}
        own: dict[int, list[tuple[int, int]]] = {}
        played, fluxed = set(self.qubit), set()
        lengths = np.diff(prog.wave_offset)[prog.play_wave]
        #: (qubit, "drive" or "flux", end sample) of every play on a qubit's port.
        self.plays: list[tuple[int, str, int]] = []
        for i, port in enumerate(prog.play_port):
            if int(port) not in role:
                continue
            q, kind = role[int(port)]
            iv = (int(prog.play_start[i]), int(prog.play_start[i] + lengths[i]))
            hit = [q, *engine.device.neighbours(q)] if kind == "flux" else [q]
            for r in hit:
                reach.setdefault(r, []).append(iv)
            own.setdefault(q, []).append(iv)
            (fluxed if kind == "flux" else played).add(q)
            self.plays.append((q, kind, iv[1]))
        self.device = engine.device
        self.acq_start = [int(t) for t in prog.acq_start]
        #: Qubits the program acts on, and every qubit it evolves (``evolved_qubits``).
        self.touched, self.active = evolved_qubits(engine.device, played, fluxed)
        start, end = prog.acq_start, prog.acq_start + prog.acq_duration
        needed = set(int(j) for j in ff.block_acq)
        for j, q in enumerate(self.qubit):
            s, e = int(start[j]), int(end[j])
            for ps, pe in own.get(q, []):
                if ps < e and pe > s:
                    raise SimulationError(f"a pulse on qubit {q}'s own drive or flux plays "
                                          f"during its acquisition {j} (samples {s}..{e})")
            if any(pe > s for _, pe in reach.get(q, [])):
                # something reaches q after its window starts: a neighbour's flux during the
                # window evolves q jointly with it, from the level the acquisition found
                needed.add(j)
            for k, r in enumerate(self.qubit):
                if k != j and r == q and start[k] < e and end[k] > s:
                    raise SimulationError(f"acquisitions {j} and {k} of qubit {q} overlap")
                if k != j and r == q and start[k] >= e:
                    needed.add(j)
        #: Acquisitions after whose start nothing plays on, fluxes next to or measures their
        #: qubit again: a branch's projected state holds that qubit by its populations.
        self.final = {j for j, q in enumerate(self.qubit)
                      if all(pe <= start[j] for _, pe in reach.get(q, []))
                      and not any(r == q and start[k] > start[j]
                                  for k, r in enumerate(self.qubit))}
        last = max((int(start[j]) for j in needed), default=-1)
        order = sorted(range(len(self.qubit)), key=lambda j: (int(start[j]), j))
        #: Branch points in time order, then the acquisitions sampled at the leaves.
        self.branches = [j for j in order if start[j] <= last]
        self.leaves = [j for j in order if start[j] > last]
        self.read = {int(j) for j in ff.block_acq}

    def evolved_after(self, t: int, done: set[int]) -> set[int]:
        """The qubits evolved (``evolved_qubits``) by what happens after sample ``t``: the
        plays that end after it and the acquisitions not in ``done`` that start at it or
        later (conditional plays counted, whichever way their conditions go)."""
        played = {self.qubit[j] for j, s in enumerate(self.acq_start) if s >= t and j not in done}
        fluxed = set()
        for q, kind, end in self.plays:
            if end > t:
                (fluxed if kind == "flux" else played).add(q)
        return evolved_qubits(self.device, played, fluxed)[1]

    def decoupled(self, held: tuple[int, ...], position: dict[int, int], t: int,
                  done: set[int]) -> tuple[int, ...]:
        """Which of the ``held`` positions of a state (``position``: qubit -> axis) a branch at
        sample ``t``, with the acquisitions ``done`` behind it, may drop
        (``DensityMatrix.drop``): those whose coupled neighbours in the state are all held
        too and that nothing after ``t`` evolves. Their levels matter to nothing that
        follows: neither to a qubit that keeps coherences nor to an acquisition."""
        after = self.evolved_after(t, done)
        qubit_at = {i: q for q, i in position.items()}
        return tuple(p for p in held if qubit_at[p] not in after
                     and all(position.get(r, p) in held
                             for r in self.device.neighbours(qubit_at[p])))


def run_with_feedforward(engine: PhysicsEngine, prog: WireProgram, ff: FeedForward,
                         settings: Settings, shots: int, rng: np.random.Generator,
                         drift: tuple[np.ndarray, np.ndarray] | None = None, *,
                         rep_delay_s: float | None = None, decimation: int | None = None,
                         traces: np.ndarray | None = None,
                         cancel: threading.Event | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Execute ``prog`` with its conditional part ``ff`` for ``shots`` shots under ``drift``
    (``PhysicsEngine.conditions``). Shots are split into quasi-static noise chunks as in
    ``PhysicsEngine.run``, each chunk one branch tree.

    Returns (iq, results): complex64 IQ points and uint8 discriminated results, both of shape
    (shots, acquisitions), columns in acquisition order (results 0 for acquisitions without a
    discriminator). With ``decimation`` (samples per point) the decimated traces are written
    into ``traces``, complex64 (shots, acquisitions, ``shots.trace_points``). Shots follow
    each other after ``rep_delay_s`` (s; residual excitation, ``shots`` module) in programs
    without branch points; with branch points (and with None) every shot starts thermal.
    Raises ``SimulationError`` for programs the simulator cannot execute, and
    ``shots.RunAbortedError`` once ``cancel`` is set (checked at every node of a chunk's
    branch tree).
    """
    plan = _Plan(engine, prog, ff)
    n_acq = prog.acq_port.shape[0]
    iq = np.zeros((shots, n_acq), dtype=np.complex64)
    results = np.zeros((shots, n_acq), dtype=np.uint8)
    if not plan.branches:
        records = run_shots(engine, effective_program(prog, ff, {}), settings, shots, rng,
                            drift, rep_delay_s=rep_delay_s, decimation=decimation,
                            cancel=cancel)
        iq[:] = records.iq
        if decimation is not None:
            traces[:] = records.traces
        for j in range(n_acq):
            results[:, j] = ff.discriminate(j, iq[:, j])
        return iq, results
    base, sigma = engine.conditions(settings, drift)
    spans = pulse_spans_s(prog, engine.cabling, engine.device.sample_rate_hz)
    chunks = plan_chunks(sigma, spans, shots, rng)
    counts = rng.multinomial(shots, [w for w, _ in chunks])
    order = sorted(plan.active)
    held = spectators(order, plan.touched) if engine.diagonal_spectators else ()
    check_density_size(order, held, plan.touched)
    first = 0
    # Every chunk starts thermal (its offsets change frequencies only): built once, copied.
    thermal = DensityMatrix([thermal_populations(base[q].thermal_ratio) for q in order], held)
    for (_, offsets), n in zip(chunks, counts, strict=True):
        if not n:
            continue
        stop_if(cancel)
        cond = with_offsets(base, offsets)
        tree = _Tree(engine, prog, ff, settings, plan, rng, iq, results, cond,
                     (decimation, traces), cancel)
        start = EvolutionStart(thermal.copy(), {q: i for i, q in enumerate(order)}, 0,
                               owned=True)
        tree.descend(0, start, {}, np.arange(first, first + n))
        first += n
    return iq, results


class _Tree:
    """The branch tree of one run: evolves the nodes shots reach and writes their records."""

    def __init__(self, engine: PhysicsEngine, prog: WireProgram, ff: FeedForward,
                 settings: Settings, plan: _Plan, rng: np.random.Generator, iq: np.ndarray,
                 results: np.ndarray, conditions: dict[int, QubitConditions],
                 traces: tuple[int | None, np.ndarray | None] = (None, None),
                 cancel: threading.Event | None = None) -> None:
        self.engine, self.prog, self.ff, self.settings = engine, prog, ff, settings
        self.cancel = cancel
        self.plan, self.rng, self.iq, self.results = plan, rng, iq, results
        self.decimation, self.traces = traces
        self.conditions = conditions

    def _segment(self, state: EvolutionStart, known: dict[int, int], t1: int,
                 leaves: list[int]) -> tuple[EvolutionStart, object]:
        """Evolve ``state`` up to ``t1`` under the plays ``known`` selects."""
        eff = effective_program(self.prog, self.ff, known)
        ev = self.engine.evolve(_window(eff, state.time_samples, t1, leaves), self.settings,
                                resume=state, conditions=self.conditions)
        return EvolutionStart(ev.rho, ev.position, t1, owned=True), ev

    def _readout(self, eff: WireProgram, j: int, q: int) -> np.ndarray:
        """What qubit ``q``'s readout port plays in ``eff`` from sample 0 to the end of
        acquisition ``j``'s window (or of the last play there that starts before it): the only
        port and samples an acquisition reads, so a node renders no more than that, and
        holds nothing while its children run (every port of a 2 ms program is ~0.5 GB)."""
        port = self.engine.cabling[q].readout_port
        end = int(eff.acq_start[j] + eff.acq_duration[j])
        lengths = np.diff(eff.wave_offset)[eff.play_wave]
        on = np.flatnonzero((eff.play_port == port) & (eff.play_start < end))
        stop = max([end, *(eff.play_start[on] + lengths[on]).tolist()])
        return _render_kernel(
            1, stop, np.zeros(on.size, dtype=eff.play_port.dtype), eff.play_start[on],
            eff.play_wave[on], eff.play_amp[on], eff.play_phase_rad[on], eff.play_freq_hz[on],
            eff.wave_offset, eff.wave_data, self.engine.device.sample_rate_hz)[0]

    def descend(self, k: int, state: EvolutionStart, known: dict[int, int],
                shots: np.ndarray) -> None:
        """Evolve ``state`` to branch point ``k`` (the leaves after the last one) and handle
        the ``shots`` that reach it; stops (``shots.RunAbortedError``) once the run's cancel
        event is set."""
        stop_if(self.cancel)
        branches, prog = self.plan.branches, self.prog
        if k == len(branches):
            self._leaf(state, known, shots)
            return
        j = branches[k]
        t = int(prog.acq_start[j])
        if t > state.time_samples:
            state, _ = self._segment(state, known, t, [])
        q = self.plan.qubit[j]
        axis = state.position[q]
        p = branch_probabilities(state.rho, axis)
        levels = self.rng.choice(LEVELS, size=shots.size, p=p / p.sum())
        iq = self._record(j, q, effective_program(prog, self.ff, known), levels, shots)
        bits = self.ff.discriminate(j, iq)
        self.results[shots, j] = bits
        read = j in self.plan.read
        keys = levels * 2 + bits if read else levels * 2
        hold = j in self.plan.final
        position, drop = state.position, ()
        if self.engine.drop_decoupled:
            # The children hold what the parent holds, and q after its final acquisition.
            held = tuple(sorted({*state.rho.diagonal, *([axis] if hold else [])}))
            drop = self.plan.decoupled(held, position, t, set(branches[:k + 1]))
        if drop:
            kept = sorted((q for q, i in position.items() if i not in drop), key=position.get)
            position = {q: i for i, q in enumerate(kept)}
        for key in np.unique(keys):
            level, bit = divmod(int(key), 2)
            child, _ = state.rho.project(axis, level, hold=hold)
            if drop:
                child = child.drop(drop)
            nxt = {**known, j: bit} if read else known
            self.descend(k + 1, EvolutionStart(child, position, t, owned=True), nxt,
                         shots[keys == key])

    def _leaf(self, state: EvolutionStart, known: dict[int, int], shots: np.ndarray) -> None:
        """Evolve to the end with the leaf acquisitions and sample them jointly."""
        leaves, prog = self.plan.leaves, self.prog
        end = int(prog.duration_samples)
        if not leaves:
            return
        _, ev = self._segment(state, known, end, leaves)
        pops = ev.rho.populations()
        keep = [ev.position[self.plan.qubit[j]] for j in leaves]
        drop = tuple(a for a in range(ev.rho.n) if a not in keep)
        del ev  # its rendering of every port, before the acquisitions render theirs
        marginal = pops.sum(axis=drop) if drop else pops
        marginal = np.transpose(marginal, [sorted(keep).index(a) for a in keep]).reshape(-1)
        outcome = self.rng.choice(marginal.size, size=shots.size, p=marginal / marginal.sum())
        levels = np.unravel_index(outcome, (LEVELS,) * len(leaves))
        eff = effective_program(prog, self.ff, known)
        for n, j in enumerate(leaves):
            q = self.plan.qubit[j]
            iq = self._record(j, q, eff, levels[n], shots)
            self.results[shots, j] = self.ff.discriminate(j, iq)

    def _record(self, j: int, q: int, eff: WireProgram, levels: np.ndarray,
                shots: np.ndarray) -> np.ndarray:
        """Acquire ``j`` (qubit ``q``) of the effective program ``eff`` for ``shots`` at
        ``levels``; store and return its IQ."""
        rec = self.engine._acquire(j, q, eff, self._readout(eff, j, q), self.settings, levels,
                                   self.rng, self.conditions[q].t1_s, self.decimation)
        self.iq[shots, j] = rec.iq
        if self.traces is not None:
            self.traces[shots, j, :rec.trace.shape[1]] = rec.trace
        return rec.iq
