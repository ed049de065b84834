"""How many rounds an active reset needs: the ``active_reset`` node.

An active reset measures the qubit and plays an x when the controller discriminated 1. One
round is limited by the readout: a |1> read as 0 stays excited, and a |1> that decays late in
the window but is read as 1 is flipped back up. Each further round gets another chance.

The node prepares the qubit in |0> and in |1>, plays k = 1 ... :data:`MAX_RESET_ROUNDS` rounds
(the calibrated readout with the controller's discriminator, the feed-forward latency, the x in
a conditional block), and reads it once more. From |0> the final readout gives what a perfect
reset would read, P(read 0 | 0); from |1> it gives what the reset left. ``reset_rounds`` is the
smallest k for which the two agree within :data:`RESET_TOLERANCE`, or the largest k if none
does (then the record says so). The compiler plays that many rounds for each ``reset``, and the
Target's reset duration follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from labqpu.calibration.experiments import Kit
from labqpu.errors import FitError
from labqpu.pulse.tables import linear_discriminator

log = logging.getLogger(__name__)

#: Most rounds the node tries (and the compiler plays).
MAX_RESET_ROUNDS = 3
#: How far below the |0>-prepared reading a reset from |1> may read 0 and count as done.
RESET_TOLERANCE = 0.01


def reset_programs(kit: Kit, q: int, latency_samples: int) -> list:
    """For each starting state (|0>, then |1>) and each k = 1 ... MAX_RESET_ROUNDS: k reset
    rounds on ``q``, then a readout into clbit 0."""
    work = kit.work.qubits[q]
    disc = linear_discriminator(work["discriminator"]["centers"])
    wait = kit.timing.pad(latency_samples)
    programs = []
    for start_in_one in (False, True):
        for rounds in range(1, MAX_RESET_ROUNDS + 1):
            b = kit.builder([q])
            t = kit.drive(b, q, 0, work["pi_amplitude"] if start_in_one else 0.0)
            for acquisition in range(rounds):  # the acquisitions are numbered in order
                t = kit.readout(b, q, t, -1, discriminator=disc) + wait
                with b.if_result(acquisition, 1):
                    t = kit.drive(b, q, t, work["pi_amplitude"])
            kit.readout(b, q, t, 0)
            programs.append(b.build(num_clbits=1))
    return programs


def rounds_needed(p0_from_zero: np.ndarray, p0_from_one: np.ndarray,
                  tolerance: float = RESET_TOLERANCE) -> int:
    """The smallest k (1-based) with P(read 0) after k rounds from |1> within ``tolerance`` of
    the same from |0>; the largest k if none is; pure."""
    for k, (zero, one) in enumerate(zip(p0_from_zero, p0_from_one, strict=True), start=1):
        if one >= zero - tolerance:
            return k
    return len(p0_from_one)


def active_reset(kit: Kit, q: int, shots: int,
                 progress: Callable[[str], None] | None = None) -> None:
    """Measure how many reset rounds qubit ``q`` needs; sets ``reset_rounds``. When no round
    count reaches :data:`RESET_TOLERANCE`, it keeps the most rounds, says so through
    ``progress`` (and the logger) and records ``reached: false``."""
    latency = kit.backend.feedforward_latency_samples
    if latency is None:
        controllers = ", ".join(c.name for c in kit.config.controllers)
        raise FitError(f"active reset needs feed-forward, and no controller ({controllers}) "
                       "states a feed-forward latency in its capabilities",
                       subject=f"qubit {q}")
    bits = kit.run_bits(reset_programs(kit, q, latency), shots, kit.centres())[:, :, 0]
    p0 = 1.0 - bits.mean(axis=1)
    p0_zero, p0_one = p0[:MAX_RESET_ROUNDS], p0[MAX_RESET_ROUNDS:]
    rounds = rounds_needed(p0_zero, p0_one, RESET_TOLERANCE)
    stderr = np.sqrt(np.maximum(p0 * (1 - p0), 1.0 / shots) / shots)
    reached = bool(p0_one[rounds - 1] >= p0_zero[rounds - 1] - RESET_TOLERANCE)
    if not reached:
        message = (f"  qubit {q}: after {rounds} reset rounds a qubit prepared in |1> still "
                   f"reads 0 {p0_zero[rounds - 1] - p0_one[rounds - 1]:.3f} less often than one "
                   f"prepared in |0> (tolerance {RESET_TOLERANCE}); keeping {rounds} rounds")
        log.warning(message.strip())
        if progress is not None:
            progress(message)
    ks = list(range(1, MAX_RESET_ROUNDS + 1))
    rid = kit.record(
        "active_reset", q,
        {"reset_rounds": (rounds, None),
         **{f"p0_after_{k}_rounds_from_one": (float(p0_one[k - 1]),
                                              float(stderr[MAX_RESET_ROUNDS + k - 1]))
            for k in ks}},
        {"x": ks, "x_ticks": [str(k) for k in ks],
         "x_label": "reset rounds (measure, then x if 1)",
         "y_label": "P(read 0) after the reset",
         "series": {"prepared in |0>": p0_zero, "prepared in |1>": p0_one},
         "reached": reached},
        chosen="reset_rounds",
        settings={"shots": shots, "latency_samples": latency, "tolerance": RESET_TOLERANCE})
    kit.work.set(q, "reset_rounds", rounds, rid)
