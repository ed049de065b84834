"""The shots of a run without branch points: levels per shot, then one readout record each.

* Shots are split into chunks of one quasi-static frequency offset each
  (``noise.quasi_static_chunks``); each chunk is one evolution of the density matrix, whose
  joint populations of the measured qubits at their acquisition starts are sampled per shot.
* **Residual excitation.** A shot starts where the previous one left its measured qubits: a
  qubit found in level l at its window's start decays over the gap g_j (the rest of the
  program after the window's start, plus ``rep_delay_s``) as a cascade l -> l - 1 -> ... at
  rates m / T1 (drawn per shot), and the next shot starts it in the level it reached (level 0:
  the thermal state). Each distinct set of starting levels (per chunk) is one evolution from
  that product state, evolved lazily, so shots are sampled in order as a Markov chain. The
  first shot starts thermal. When exp(-g_j / T1) < ``RESIDUAL_FLOOR`` for every measured qubit
  the chain is skipped (its effect on any probability is below the floor). Not modelled:
  qubits that are not measured keep no memory between shots (they start thermal), and the
  cascade starts from the level at the window's start (a measurement-induced transition
  during the window does not carry over).
* Each acquisition's record comes from ``readout.acquire_window`` for all shots at once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from labqpu.firmware_sim.blocks import RunShare
from labqpu.firmware_sim.density import LEVELS, DensityMatrix, EvolutionStart
from labqpu.firmware_sim.noise import (
    plan_chunks,
    pulse_spans_s,
    thermal_populations,
    with_offsets,
)

#: Residual excitation exp(-gap / T1) below which shots are treated as independent.
RESIDUAL_FLOOR = 1e-3


@dataclass(frozen=True)
class ShotRecords:
    """What a run's acquisitions give: ``iq`` complex64 (shots, acquisitions) and, when traces
    were asked for, ``traces`` complex64 (shots, acquisitions, points), each acquisition's
    decimated trace from point 0 (points past its own length are 0)."""

    iq: np.ndarray
    traces: np.ndarray | None


def trace_points(durations: np.ndarray, decimation: int) -> int:
    """Points of the longest decimated trace of acquisitions of ``durations`` samples."""
    return int(max((-(-int(d) // decimation) for d in durations), default=0))


def cascade_level(level: int, gap_s: float, t1_s: float, draws: np.ndarray) -> int:
    """The level a qubit in ``level`` reaches after ``gap_s`` s of decay at rates m / T1
    (m the current level), from unit exponential ``draws`` (one per step down)."""
    t = 0.0
    while level > 0:
        t += draws[level - 1] * t1_s / level
        if t > gap_s:
            break
        level -= 1
    return level


class RunAbortedError(RuntimeError):
    """The run's cancel event was set while it was computed."""


def stop_if(cancel: threading.Event | None) -> None:
    """Raise :class:`RunAbortedError` once ``cancel`` is set: a run's computation checks between
    its chunks, acquisitions and blocks of shots, so an abort ends it within one of them."""
    if cancel is not None and cancel.is_set():
        raise RunAbortedError("aborted while it was computed")


def run_shots(engine, prog, settings, shots: int, rng: np.random.Generator,
              drift: tuple[np.ndarray, np.ndarray] | None = None, *,
              rep_delay_s: float | None = None, decimation: int | None = None,
              cancel: threading.Event | None = None) -> ShotRecords:
    """Execute ``prog`` (``physics.WireProgram``) on ``engine`` (``physics.PhysicsEngine``)
    under ``settings`` (``physics.Settings``) for ``shots`` shots under ``drift``
    (``PhysicsEngine.conditions``), ``rep_delay_s`` (s) between shots (None: independent
    shots), with traces of ``decimation`` samples per point when given; ``cancel`` stops it
    (:func:`stop_if`). (Not imported from
    ``physics``, which calls this module.) However the run ends, the shares the thread keeps
    are trimmed to their byte budget (``blocks.RunShares.trim``)."""
    try:
        return _run_shots(engine, prog, settings, shots, rng, drift, rep_delay_s, decimation,
                          cancel)
    finally:
        engine.run_shares.trim()


def _run_shots(engine, prog, settings, shots: int, rng: np.random.Generator,
               drift: tuple[np.ndarray, np.ndarray] | None, rep_delay_s: float | None,
               decimation: int | None, cancel: threading.Event | None) -> ShotRecords:
    """:func:`run_shots` without the trimming."""
    qubit_ports = {p for cab in engine.cabling.values() for p in (cab.drive_port, cab.flux_port)}
    if not prog.acq_port.size and qubit_ports.isdisjoint(prog.play_port.tolist()):
        # nothing reaches a qubit and nothing is measured: there is no state to evolve (the
        # samples are still rendered, which checks them against the DAC's full scale)
        engine._render(prog)
        return ShotRecords(iq=np.zeros((shots, 0), dtype=np.complex64),
                           traces=None if decimation is None
                           else np.zeros((shots, 0, 0), dtype=np.complex64))
    base, sigma = engine.conditions(settings, drift)
    fs = engine.device.sample_rate_hz
    spans = pulse_spans_s(prog, engine.cabling, fs)
    chunks = plan_chunks(sigma, spans, shots, rng)
    counts = rng.multinomial(shots, [w for w, _ in chunks])
    conds = [with_offsets(base, offsets) for _, offsets in chunks]
    # the chunks differ only in their offsets; a repeated run starts with an earlier one's
    share = engine.run_shares.get(prog, settings)
    states: dict[int, tuple[DensityMatrix, dict[int, int]]] = {}
    parts = []
    samples = None
    for c in np.flatnonzero(counts):
        stop_if(cancel)
        ev = engine.evolve(prog, settings, conditions=conds[c], share=share)
        if samples is None:  # one program for every chunk: one rendering, one acquisition list
            samples, acquisitions = ev.samples, ev.acquisitions
            measured = [q for _, q in acquisitions]
            gaps = [(prog.duration_samples - int(prog.acq_start[i])) / fs + (rep_delay_s or 0.0)
                    for i, _ in acquisitions]
            residual = rep_delay_s is not None and any(
                math.exp(-g / base[q].t1_s) >= RESIDUAL_FLOOR
                for g, q in zip(gaps, measured, strict=True))
        if residual:  # the chain samples later, from these states
            states[int(c)] = (ev.rho, ev.position)
        else:
            parts.append(ev.rho.sample_levels([ev.position[q] for q in measured],
                                              int(counts[c]), rng))
    if residual:
        levels = _chain(engine, prog, settings, rng, counts, conds, states, measured, gaps, base,
                        share, cancel)
    else:
        levels = np.concatenate(parts)
    iq = np.zeros((shots, len(acquisitions)), dtype=np.complex64)
    traces = None
    if decimation is not None:
        points = trace_points(prog.acq_duration, decimation)
        traces = np.zeros((shots, len(acquisitions), points), dtype=np.complex64)
    for j, (i, q) in enumerate(acquisitions):
        stop_if(cancel)
        rec = engine._acquire(i, q, prog, samples[engine.cabling[q].readout_port], settings,
                              levels[:, j], rng, base[q].t1_s, decimation)
        iq[:, j] = rec.iq
        if traces is not None:
            traces[:, j, :rec.trace.shape[1]] = rec.trace
    return ShotRecords(iq=iq, traces=traces)


def _chain(engine, prog, settings, rng: np.random.Generator, counts: np.ndarray, conds: list,
           states: dict[int, tuple[DensityMatrix, dict[int, int]]], measured: list[int],
           gaps: list[float], base: dict, share: RunShare,
           cancel: threading.Event | None = None) -> np.ndarray:
    """Levels (shots, acquisitions) sampled shot after shot, each shot starting from where
    the previous one left the measured qubits (module docstring); ``share`` is the run's
    (``PhysicsEngine.evolve``)."""
    chunk_of = rng.permutation(np.repeat(np.arange(counts.size), counts))
    shots = chunk_of.size
    picks = rng.random(shots)
    draws = rng.exponential(1.0, size=(shots, len(measured), LEVELS - 1))
    cdfs: dict[tuple, np.ndarray] = {}

    def cdf(c: int, start: tuple[int, ...]) -> np.ndarray:
        key = (c, start)
        if key not in cdfs:
            rho, position = states[c]
            if any(start):
                order = sorted(position, key=position.get)
                first = dict(zip(measured, start, strict=True))
                pops = [np.eye(LEVELS)[first[q]] if first.get(q) else
                        thermal_populations(conds[c][q].thermal_ratio) for q in order]
                rho = engine.evolve(prog, settings, resume=EvolutionStart(
                    DensityMatrix(pops, rho.diagonal), position, 0, owned=True),
                    conditions=conds[c],
                    share=share).rho
            pops = rho.populations()
            keep = [position[q] for q in measured]
            drop = tuple(a for a in range(rho.n) if a not in keep)
            marginal = pops.sum(axis=drop) if drop else pops
            flat = np.transpose(marginal, [sorted(keep).index(a) for a in keep]).reshape(-1)
            cdfs[key] = np.cumsum(flat / flat.sum())
        return cdfs[key]

    levels = np.zeros((shots, len(measured)), dtype=np.int64)
    start = (0,) * len(measured)
    shape = (LEVELS,) * len(measured)
    for s in range(shots):
        if not s % 4096:
            stop_if(cancel)
        table = cdf(int(chunk_of[s]), start)
        outcome = min(int(np.searchsorted(table, picks[s] * table[-1], side="right")),
                      table.size - 1)
        levels[s] = np.unravel_index(outcome, shape)
        start = tuple(cascade_level(int(levels[s, j]), gaps[j], base[q].t1_s, draws[s, j])
                      for j, q in enumerate(measured))
    return levels
