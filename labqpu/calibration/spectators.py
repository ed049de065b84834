"""The CZ's conditional phase with its spectators in |0> and in |1>.

A spectator is a qubit coupled to one of the edge's qubits but not on the edge. Through the
always-on coupling it shifts the levels the CZ's flux pulse brings into resonance, so the
conditional phase depends on its state. For each spectator, the edge's conditional phase is
measured (the partner's Ramsey phase with the flux qubit in |0> and |1>, as the CZ calibration
does) with the spectator in |1>, and compared with all spectators in |0>. The CZ is not
changed: the node reports the shift per spectator and the spread (the largest |shift|,
rad), which say how far a circuit that leaves a neighbour excited sees a wrong CZ.

It also measures what the flux pulse does to each spectator's own excitation: with the
spectator and the fluxed qubit in |1> (the partner in |0> and in |1>), the spectator's P(1)
after the pulse against after an equally long wait. A pulse that takes the fluxed qubit's 1-2
transition through the spectator's 0-1 moves |1 1> towards |2 0>: on lab5's edge 1-2 qubit 3
loses ~15-24 % of its excitation that way. The record keeps the loss per spectator
(``spectator_loss``, the largest); above :data:`SPECTATOR_LOSS_NOTED` the run says so.

And the phase a spectator in superposition picks up per pulse, conditioned on the fluxed
qubit (the spectator's Ramsey phase with the fluxed qubit in |1> against |0>, as the CZ
calibration measures the partner's): the pulse also brings the fluxed qubit's levels near the
spectator's, a ZZ while it lasts (~0.6 rad on qubit 1 per cz on lab5's edge 2-3). The record
keeps it per spectator (``spectator_phase_rad``, the largest |phase|); above
:data:`SPECTATOR_PHASE_NOTED` the run says so.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from labqpu.calibration.bootstrap import _cz_phases
from labqpu.calibration.checks import wrap
from labqpu.calibration.experiments import Kit

#: A spectator excitation lost to the CZ's flux pulse above which the run says so.
SPECTATOR_LOSS_NOTED = 0.05
#: A spectator phase (rad) per pulse, conditioned on the fluxed qubit, above which the run
#: says so (0.2 rad costs a spectator in superposition ~1 % per cz).
SPECTATOR_PHASE_NOTED = 0.2
#: What a spectator needs for its own loss and phase to be measured (it is driven and read);
#: one without them (a qubit whose readout failed, say) is left out and named in the record.
SPECTATOR_NEEDS = ("pi_amplitude", "pi2_amplitude", "assignment_matrix")


def spectators_of(pair: tuple[int, int], coupling_map) -> list[int]:
    """The qubits coupled to either qubit of ``pair``, other than the pair's own."""
    return sorted({q for e in coupling_map for q in e if set(e) & set(pair)} - set(pair))


def spectator_loss(kit: Kit, flux_q: int, other: int, spectator: int, duration: int,
                   rise: float, amp: float, shots: int) -> float:
    """The share of ``spectator``'s excitation the CZ's flux pulse (on ``flux_q``; ``duration``
    samples, ``rise``, ``amp``) takes away: readout-corrected P(1) of the spectator after an
    equally long wait minus after the pulse, with the spectator and ``flux_q`` in |1> and
    ``other`` in |0> or |1> (the larger of the two)."""
    progs = []
    for partner in (0, 1):
        for pulse_amp in (0.0, amp):
            b = kit.builder([flux_q, other, spectator])
            kit.drive(b, spectator, 0, kit.work.qubits[spectator]["pi_amplitude"])
            kit.drive(b, other, 0, kit.work.qubits[other]["pi_amplitude"] if partner else 0.0)
            t = kit.drive(b, flux_q, 0, kit.work.qubits[flux_q]["pi_amplitude"])
            t = kit.flux(b, flux_q, t, duration, rise, pulse_amp)
            kit.readout(b, spectator, t, 0)
            progs.append(b.build(num_clbits=1))
    p1 = kit.corrected_p1(progs, shots)[:, 0]
    return float(max(p1[0] - p1[1], p1[2] - p1[3]))


def cz_spectators(kit: Kit, pair: tuple[int, int], shots: int,
                  progress: Callable[[str], None] | None = None) -> None:
    """Conditional phase (rad) of edge ``pair``'s calibrated CZ with each spectator in |1>,
    against all in |0>; sets ``cz_spectator_spread_rad`` (the largest |shift|). The record also
    holds each spectator's :func:`spectator_loss`; ``progress`` is told of one above
    :data:`SPECTATOR_LOSS_NOTED`."""
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
    readable = [s for s in spectators if all(n in kit.work.qubits[s] for n in SPECTATOR_NEEDS)]
    losses = {str(s): spectator_loss(kit, flux_q, other, s, duration, rise, p["cz_amplitude"],
                                     shots) for s in readable}
    spectator_phases = {}
    for s in readable:  # the spectator's Ramsey phase, the fluxed qubit in |1> against |0>
        ramsey = _cz_phases(kit, flux_q, s, duration, rise, p["cz_amplitude"], shots)
        spectator_phases[str(s)] = wrap(ramsey[f"{s}|1"][0] - ramsey[f"{s}|0"][0])
    shifts = {s: wrap(conditional[s] - conditional["none"]) for s in conditional if s != "none"}
    spread = max((abs(v) for v in shifts.values()), default=0.0)
    # 2 P(1) - 1 after X90 and after Y90 each has a standard error of at most 1 / sqrt(shots),
    # so a phase has 1 / (contrast sqrt(shots)); a shift combines four phases. (Between runs
    # the shift also moves with the device's drift.)
    err = 2 / np.sqrt(shots) / max(min(contrast.values()), 0.1)
    loss_err = np.sqrt(2 * 0.25 / shots)  # a difference of two P(1), each at most 1/(2 sqrt n)
    labels = list(conditional)
    rid = kit.record(
        "cz_spectators", pair,
        {"cz_spectator_spread_rad": (spread, err),
         **{f"shift_with_{s}_excited_rad": (v, err) for s, v in shifts.items()},
         **({"spectator_loss": (max(losses.values()), loss_err)} if losses else {}),
         **{f"loss_of_{s}": (v, loss_err) for s, v in losses.items()},
         **({"spectator_phase_rad": (max(abs(v) for v in spectator_phases.values()), err)}
            if spectator_phases else {}),
         **{f"phase_of_{s}_rad": (v, err) for s, v in spectator_phases.items()}},
        {"x": list(range(len(labels))), "x_label": "spectator in |1>",
         "x_ticks": ["none" if s == "none" else f"qubit {s}" for s in labels],
         "y_label": "conditional phase - pi (rad)",
         "series": {"conditional phase - pi": [wrap(conditional[s] - np.pi) for s in labels]},
         "conditional_phase_rad": [conditional[s] for s in labels],
         "partner_contrast": [contrast[s] for s in labels], "spectators": spectators,
         "measured_spectators": readable,
         "spectator_loss": [losses[str(s)] for s in readable],
         "spectator_phase_rad": [spectator_phases[str(s)] for s in readable]},
        settings={"shots": shots, "flux_qubit": flux_q})
    kit.work.set_pair(pair, "cz_spectator_spread_rad", float(spread), rid)
    if progress is None:
        return
    for s, loss in losses.items():
        if loss > SPECTATOR_LOSS_NOTED:
            progress(f"  cz {pair}: its flux pulse on qubit {flux_q} takes {loss:.0%} of "
                     f"qubit {s}'s excitation (qubits {flux_q} and {s} in |1>): a circuit "
                     f"that leaves qubit {s} excited across this cz loses it")
        if abs(spectator_phases[s]) > SPECTATOR_PHASE_NOTED:
            progress(f"  cz {pair}: qubit {s} in superposition picks up "
                     f"{spectator_phases[s]:+.2f} rad per pulse when qubit {flux_q} is in "
                     f"|1> (a conditional phase on a spectator: keep it out of superposition "
                     "across this cz, e.g. scheduling_method='asap' or a barrier)")
