"""Leakage of the calibrated CZ, measured by repeating it.

Both qubits of the edge are put in |1> and the CZ's flux pulse plays n times in a row
(n = 0 ... :data:`LEAKAGE_REPEATS`); then both are read, and the readout-corrected probability
that both are still in |1> (the two qubits' assignment matrices inverted jointly) falls by the
population that left |11>: to |20> (the flux qubit's second excited level, the partner in |0>),
or to a spectator that the flux pulse passes, from either qubit. Until 2026-12-07 only the
partner was read, which missed the flux qubit's excitation moving to its other neighbour: on
lab5's edge 1-2 (qubit 2 fluxed past qubit 3) 0.57 % of the 0.83 % that left |11> by exact
propagation (a review). The same programs with the flux pulses replaced by waits of the same
length give what relaxation alone does; the difference D(n) is the population that n CZs moved
out of |11>.

Leakage of a flux-pulse CZ is coherent: what leaves on one pulse can come back on the next, so
D(n) oscillates instead of growing in a line (on lab5's edge 3-4 it alternates between ~1.2 %
and 0). The leakage of one CZ is therefore D(1) itself (the graph node runs 100x the run's
shots: 40 000 at the default 400), and its standard error is that of the two binomial
estimates; the whole curve, and its largest value
(what a circuit of a few CZs can see), go into the record and its plot. The CZ is not changed.
"""

from __future__ import annotations

import math

import numpy as np

from labqpu.calibration.experiments import Kit

#: Most CZs played in a row.
LEAKAGE_REPEATS = 8


def _program(kit: Kit, flux_q: int, other: int, repeats: int, duration: int, rise: float,
             amplitude: float | None):
    """Both qubits in |1>, the flux pulse (``amplitude``; None: a wait as long) ``repeats``
    times in a row, the partner ``other`` read into clbit 0 and ``flux_q`` into clbit 1."""
    b = kit.builder([flux_q, other])
    t = max(kit.drive(b, flux_q, 0, kit.work.qubits[flux_q]["pi_amplitude"]),
            kit.drive(b, other, 0, kit.work.qubits[other]["pi_amplitude"]))
    for _ in range(repeats):
        t = (t + kit.timing.pad(duration) if amplitude is None
             else kit.flux(b, flux_q, t, duration, rise, amplitude))
    kit.readout(b, other, t, 0)
    kit.readout(b, flux_q, t, 1)
    return b.build(num_clbits=2)


def _both_excited(kit: Kit, programs: list, shots: int, other: int, flux_q: int
                  ) -> tuple[np.ndarray, float, float]:
    """Per program, the readout-corrected probability that ``other`` (clbit 0) and ``flux_q``
    (clbit 1) are both in |1> (the joint outcome distribution times the inverse of the two
    assignment matrices' Kronecker product); and (read_0, contrast) of that estimate, its
    raw probability being about read_0 + contrast x p for :func:`one_cz_leakage`'s error."""
    bits = kit.run_bits(programs, shots, kit.centres())
    raw = np.stack([np.mean((bits[:, :, 0] == a) & (bits[:, :, 1] == c), axis=1)
                    for a in (0, 1) for c in (0, 1)], axis=1)
    matrices = [np.asarray(kit.work.qubits[q]["assignment_matrix"], dtype=float)
                for q in (other, flux_q)]
    joint = np.kron(*matrices)  # rows: the true pair of levels, columns: what was read
    true = np.linalg.solve(joint.T, raw.T).T
    read_0 = matrices[0][0, 1] * matrices[1][0, 1]  # 11 read from 00
    return true[:, 3], float(read_0), float(joint[3, 3] - read_0)


def _partner(pair: tuple[int, int], flux_q: int) -> int:
    return pair[1] if flux_q == pair[0] else pair[0]


def leakage_programs(kit: Kit, pair: tuple[int, int], with_flux: bool) -> list:
    """One program per repetition count 0 ... LEAKAGE_REPEATS of edge ``pair``'s calibrated CZ
    (``with_flux``) or of waits as long."""
    p = kit.work.pairs[pair]
    flux_q = p["cz_flux_qubit"]
    amplitude = p["cz_amplitude"] if with_flux else None
    return [_program(kit, flux_q, _partner(pair, flux_q), n, kit.samples(p["cz_duration_s"]),
                     p["cz_rise_s"] * kit.fs, amplitude)
            for n in range(LEAKAGE_REPEATS + 1)]


def candidate_leakage(kit: Kit, flux_q: int, other: int, rise: float,
                      candidates: list[tuple[int, float]], shots: int
                      ) -> list[tuple[float, float]]:
    """(leakage of one CZ, standard error) of each flux pulse ``(duration in samples,
    amplitude)`` on ``flux_q`` against partner ``other``, all measured in one job: what the CZ
    calibration compares its candidates by."""
    progs = []
    for duration, amplitude in candidates:
        progs += [_program(kit, flux_q, other, 1, duration, rise, amplitude),
                  _program(kit, flux_q, other, 1, duration, rise, None)]
    p11, read_0, contrast = _both_excited(kit, progs, shots, other, flux_q)
    return [one_cz_leakage(p11[2 * k], p11[2 * k + 1], shots, read_0, contrast)
            for k in range(len(candidates))]


def one_cz_leakage(p11_after_cz: float, p11_after_wait: float, shots: int, read_0: float,
                   contrast: float) -> tuple[float, float]:
    """Population one CZ moved out of |11> and its standard error, from the
    readout-corrected probability of |11> after the CZ and after a wait as long; pure.

    A corrected probability p was read as about read_0 + p contrast (``read_0``: the
    probability of reading 11 from neither excited, ``contrast``: that of reading it from 11
    less read_0), whose binomial error (over ``shots``) the correction scales by
    1 / contrast."""
    def variance(p: float) -> float:
        raw = min(max(read_0 + p * contrast, 0.0), 1.0)
        return max(raw * (1 - raw), 1.0 / shots) / shots / contrast ** 2

    return (float(p11_after_wait - p11_after_cz),
            math.sqrt(variance(p11_after_cz) + variance(p11_after_wait)))


def leakage_per_cz(p11_after_czs: np.ndarray, p11_after_waits: np.ndarray, shots: int,
                   read_0: float, contrast: float) -> tuple[float, float, np.ndarray]:
    """Leakage of one CZ, its standard error (:func:`one_cz_leakage`), and the population
    D(n) moved out of |11> after n = 0, 1, ... CZs, from the readout-corrected probability of
    |11> after n CZs and after n waits; pure."""
    leaked = np.asarray(p11_after_waits, dtype=float) - np.asarray(p11_after_czs, dtype=float)
    value, stderr = one_cz_leakage(p11_after_czs[1], p11_after_waits[1], shots, read_0,
                                   contrast)
    return value, stderr, leaked


def cz_leakage(kit: Kit, pair: tuple[int, int], shots: int) -> None:
    """Measure edge ``pair``'s CZ leakage per gate; sets ``cz_leakage`` (the fraction of |11>
    that one CZ moves out, 0 when the estimate is negative)."""
    progs = leakage_programs(kit, pair, True) + leakage_programs(kit, pair, False)
    count = LEAKAGE_REPEATS + 1
    flux_q = kit.work.pairs[pair]["cz_flux_qubit"]
    other = _partner(pair, flux_q)
    p11, read_0, contrast = _both_excited(kit, progs, shots, other, flux_q)
    leakage, stderr, leaked = leakage_per_cz(p11[:count], p11[count:], shots, read_0, contrast)
    value = min(max(leakage, 0.0), 1.0)
    repeats = np.arange(count)
    rid = kit.record(
        "cz_leakage", pair,
        {"cz_leakage": (value, stderr), "largest_leaked_population": (float(leaked.max()), None)},
        {"x": repeats, "x_label": "CZs played in a row (both qubits prepared in |1>)",
         "y_label": "population out of |11>",
         "series": {"leaked": leaked}, "marks": {"chosen": 1},  # the value is D(1)
         "p11_after_czs": p11[:count],
         "p11_after_waits": p11[count:], "leakage_estimate": leakage},
        settings={"shots": shots, "flux_qubit": flux_q, "repeats": LEAKAGE_REPEATS,
                  "read": "both qubits, |11> corrected jointly"})
    kit.work.set_pair(pair, "cz_leakage", value, rid)
