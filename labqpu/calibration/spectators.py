"""The CZ's conditional phase with its spectators in |0> and in |1>.

A spectator is a qubit coupled to one of the edge's qubits but not on the edge. Through the
always-on coupling it shifts the levels the CZ's flux pulse brings into resonance, so the
conditional phase depends on its state. For each spectator, the edge's conditional phase is
measured (the partner's Ramsey phase with the flux qubit in |0> and |1>, as the CZ calibration
does) with the spectator in |1>, and compared with all spectators in |0>. The CZ is not
changed: the node reports the shift per spectator and the spread (the largest |shift|,
rad), which say how far a circuit that leaves a neighbour excited sees a wrong CZ.
"""

from __future__ import annotations

import numpy as np

from labqpu.calibration.bootstrap import _cz_phases
from labqpu.calibration.checks import wrap
from labqpu.calibration.experiments import Kit


def spectators_of(pair: tuple[int, int], coupling_map) -> list[int]:
    """The qubits coupled to either qubit of ``pair``, other than the pair's own."""
    return sorted({q for e in coupling_map for q in e if set(e) & set(pair)} - set(pair))


def cz_spectators(kit: Kit, pair: tuple[int, int], shots: int) -> None:
    """Conditional phase (rad) of edge ``pair``'s calibrated CZ with each spectator in |1>,
    against all in |0>; sets ``cz_spectator_spread_rad`` (the largest |shift|)."""
    lo, hi = pair
    p = kit.work.pairs[pair]
    flux_q = p["cz_flux_qubit"]
    other = hi if flux_q == lo else lo
    duration = kit.samples(p["cz_duration_s"])
    rise = p["cz_rise_s"] * kit.fs
    spectators = spectators_of(pair, kit.config.coupling_map)
    conditional, contrast = {}, {}
    for label, excited in [("none", ())] + [(str(s), (s,)) for s in spectators]:
        phases = _cz_phases(kit, flux_q, other, duration, rise, p["cz_amplitude"], shots,
                            excited)
        conditional[label] = wrap(phases[f"{other}|1"][0] - phases[f"{other}|0"][0])
        contrast[label] = phases[f"{other}|1"][1]
    shifts = {s: wrap(conditional[s] - conditional["none"]) for s in conditional if s != "none"}
    spread = max((abs(v) for v in shifts.values()), default=0.0)
    # 2 P(1) - 1 after X90 and after Y90 each has a standard error of at most 1 / sqrt(shots),
    # so a phase has 1 / (contrast sqrt(shots)); a shift combines four phases. (Between runs
    # the shift also moves with the device's drift.)
    err = 2 / np.sqrt(shots) / max(min(contrast.values()), 0.1)
    labels = list(conditional)
    rid = kit.record(
        "cz_spectators", pair,
        {"cz_spectator_spread_rad": (spread, err),
         **{f"shift_with_{s}_excited_rad": (v, err) for s, v in shifts.items()}},
        {"x": list(range(len(labels))), "x_label": "spectator in |1>",
         "x_ticks": ["none" if s == "none" else f"qubit {s}" for s in labels],
         "y_label": "conditional phase - pi (rad)",
         "series": {"conditional phase - pi": [wrap(conditional[s] - np.pi) for s in labels]},
         "conditional_phase_rad": [conditional[s] for s in labels],
         "partner_contrast": [contrast[s] for s in labels], "spectators": spectators},
        settings={"shots": shots, "flux_qubit": flux_q})
    kit.work.set_pair(pair, "cz_spectator_spread_rad", float(spread), rid)
