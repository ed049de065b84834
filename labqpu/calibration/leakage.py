"""Leakage of the calibrated CZ, measured by repeating it.

Both qubits of the edge are put in |1> and the CZ's flux pulse plays n times in a row
(n = 0 ... :data:`LEAKAGE_REPEATS`); then the partner (the qubit that is not fluxed) is read. A
CZ that leaks moves |11> towards |20> (the flux qubit's second excited level, the partner in
|0>), so the partner's readout-corrected P(1) falls by the population that left; so does an
exchange with a spectator that the flux pulse passes. The same programs with the flux pulses
replaced by waits of the same length give what relaxation alone does; the difference D(n) is
the population that n CZs moved out of |11>.

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
    times in a row, the partner ``other`` read into clbit 0."""
    b = kit.builder([flux_q, other])
    t = max(kit.drive(b, flux_q, 0, kit.work.qubits[flux_q]["pi_amplitude"]),
            kit.drive(b, other, 0, kit.work.qubits[other]["pi_amplitude"]))
    for _ in range(repeats):
        t = (t + kit.timing.pad(duration) if amplitude is None
             else kit.flux(b, flux_q, t, duration, rise, amplitude))
    kit.readout(b, other, t, 0)
    return b.build(num_clbits=1)


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
    p1 = kit.corrected_p1(progs, shots, clip=False)[:, 0]
    (_, a01), (_, a11) = kit.work.qubits[other]["assignment_matrix"]
    return [one_cz_leakage(p1[2 * k], p1[2 * k + 1], shots, a01, a11 - a01)
            for k in range(len(candidates))]


def one_cz_leakage(p1_after_cz: float, p1_after_wait: float, shots: int, read_0: float,
                   contrast: float) -> tuple[float, float]:
    """Population one CZ moved out of |11> and its standard error, from the partner's
    readout-corrected P(1) after the CZ and after a wait as long; pure.

    ``read_0`` is the partner's P(1|0) and ``contrast`` its P(1|1) - P(1|0): a corrected
    probability p was read as read_0 + p contrast, whose binomial error (over ``shots``) the
    correction scales by 1 / contrast."""
    def variance(p: float) -> float:
        raw = min(max(read_0 + p * contrast, 0.0), 1.0)
        return max(raw * (1 - raw), 1.0 / shots) / shots / contrast ** 2

    return (float(p1_after_wait - p1_after_cz),
            math.sqrt(variance(p1_after_cz) + variance(p1_after_wait)))


def leakage_per_cz(p1_after_czs: np.ndarray, p1_after_waits: np.ndarray, shots: int,
                   read_0: float, contrast: float) -> tuple[float, float, np.ndarray]:
    """Leakage of one CZ, its standard error (:func:`one_cz_leakage`), and the population
    D(n) moved out of |11> after n = 0, 1, ... CZs, from the partner's readout-corrected P(1)
    after n CZs and after n waits; pure."""
    leaked = np.asarray(p1_after_waits, dtype=float) - np.asarray(p1_after_czs, dtype=float)
    value, stderr = one_cz_leakage(p1_after_czs[1], p1_after_waits[1], shots, read_0,
                                   contrast)
    return value, stderr, leaked


def cz_leakage(kit: Kit, pair: tuple[int, int], shots: int) -> None:
    """Measure edge ``pair``'s CZ leakage per gate; sets ``cz_leakage`` (the fraction of |11>
    that one CZ moves out, 0 when the estimate is negative)."""
    progs = leakage_programs(kit, pair, True) + leakage_programs(kit, pair, False)
    p1 = kit.corrected_p1(progs, shots, clip=False)[:, 0]
    count = LEAKAGE_REPEATS + 1
    flux_q = kit.work.pairs[pair]["cz_flux_qubit"]
    other = _partner(pair, flux_q)
    (_, a01), (_, a11) = kit.work.qubits[other]["assignment_matrix"]
    leakage, stderr, leaked = leakage_per_cz(p1[:count], p1[count:], shots, a01, a11 - a01)
    value = min(max(leakage, 0.0), 1.0)
    repeats = np.arange(count)
    rid = kit.record(
        "cz_leakage", pair,
        {"cz_leakage": (value, stderr), "largest_leaked_population": (float(leaked.max()), None)},
        {"x": repeats, "x_label": "CZs played in a row (both qubits prepared in |1>)",
         "y_label": "population out of |11>",
         "series": {"leaked": leaked}, "marks": {"chosen": 1},  # the value is D(1)
         "p1_after_czs": p1[:count],
         "p1_after_waits": p1[count:], "leakage_estimate": leakage},
        settings={"shots": shots, "flux_qubit": flux_q, "repeats": LEAKAGE_REPEATS})
    kit.work.set_pair(pair, "cz_leakage", value, rid)
