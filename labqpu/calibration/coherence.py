"""Hahn echo (T2) and static ZZ: two experiments of the calibration graph.

* **Hahn echo** on qubit q: X90, wait t/2, X180, wait t/2, X90. Quasi-static frequency
  noise is refocused, so the coherence left after t is exp(-t / T2echo); the last X90 turns it
  into population, P(1) = b - a exp(-t / T2echo). P(1) is the averaged IQ between the |0> and
  |1> signals of the same job (:func:`labqpu.calibration.fine.populations`).
* **Static ZZ** on an edge (a, b): Ramsey fringes of b, its drive ``d`` below the calibrated
  frequency, with a in |0> and in |1>. With drive handedness h, a fringe runs at
  ``h (f_b - f_frame) + d``; the control's excitation shifts f_b by zeta, so
  ``zeta = h (f1 - f0)`` (Hz) with f1 and f0 the two fringe frequencies, while |zeta| < d.
  zeta = E11 - E10 - E01 + E00 of the dressed levels, negative for transmons below their
  partner's 1-2 transition.
"""

from __future__ import annotations

import numpy as np

from labqpu.calibration.experiments import (
    FitError,
    Kit,
    fit_damped_cosine_curve,
    fit_exponential_curve,
    project,
)
from labqpu.calibration.fine import populations, references

#: Delays (s) of the echo: from 0 to this many times the Ramsey T2*, at most 200 us. The echo
#: T2 is 1.5-2.5 x T2*, so the span covers 3-5 echo decay times and pins the offset of the
#: exponential; at 4 x T2* the fit's T2 had twice the standard error (7 % on lab5 qubit 3).
ECHO_SPAN_T2 = 8.0
#: Detuning (Hz) and window (s) of the ZZ fringes.
ZZ_DETUNING_HZ = 1.5e6
ZZ_WINDOW_S = 4e-6


def hahn_echo(kit: Kit, q: int, shots: int) -> None:
    """T2 echo (s) of qubit ``q`` from a Hahn echo over ``ECHO_SPAN_T2`` x its T2*."""
    p = kit.work.qubits[q]
    pi, pi2 = p["pi_amplitude"], p["pi2_amplitude"]
    span = min(ECHO_SPAN_T2 * p.get("t2_s", 50e-6), 200e-6)
    halves = kit.on_grid(np.linspace(0, span / 2, 26))
    progs = references(kit, q)
    for half in halves:
        b = kit.builder([q])
        t = kit.drive(b, q, 0, pi2)
        t = kit.drive(b, q, t + kit.samples(half), pi)
        t = kit.drive(b, q, t + kit.samples(half), pi2)
        kit.readout(b, q, t, 0)
        progs.append(b.build(num_clbits=1))
    iq = kit.run_iq(progs, shots)[:, 0]
    p1 = populations(iq[2:], iq[0], iq[1])
    delays = 2 * halves
    fit = fit_exponential_curve(delays, p1, f"qubit {q} Hahn echo")
    t2 = fit.params["tau"]
    if t2 > 2 * p.get("t1_s", np.inf) * 1.2:
        raise FitError(f"Hahn echo: T2 {t2:.3g} s exceeds 2 T1 by more than 20 %",
                       subject=f"qubit {q}")
    rid = kit.record(
        "hahn_echo", q, {"t2_echo_s": (t2, fit.stderr["tau"])},
        {"x": delays, "x_label": "total free evolution (s)",
         "y_label": "P(1) between the |0> and |1> references", "series": {"P(1)": p1}},
        fit=fit.quality(), curves={"exponential": fit.sampled(delays)},
        chosen="t2_echo_s",
        settings={"shots": shots})
    kit.work.set(q, "t2_echo_s", t2, rid)


def static_zz(kit: Kit, pair: tuple[int, int], shots: int) -> None:
    """Static ZZ (Hz) of edge ``pair``: the higher qubit's Ramsey fringe with the lower one in
    |0> and in |1>."""
    control, target = sorted(pair)
    pi_c = kit.work.qubits[control]["pi_amplitude"]
    pt = kit.work.qubits[target]
    h = pt["drive_handedness"]
    delays = kit.on_grid(np.linspace(0, ZZ_WINDOW_S, 41))
    d = ZZ_DETUNING_HZ
    signals, fits = {}, {}
    for state, amplitude in (("|0>", 0.0), ("|1>", pi_c)):
        progs = []
        for tau in delays:
            b = kit.builder([control, target])
            t = kit.drive(b, control, 0, amplitude)
            t = kit.drive(b, target, t, pt["pi2_amplitude"])
            t = kit.drive(b, target, t + kit.samples(tau), pt["pi2_amplitude"],
                          2 * np.pi * d * tau)
            kit.readout(b, target, t, 0)
            progs.append(b.build(num_clbits=1))
        signals[f"control {control} in {state}"] = project(kit.run_iq(progs, shots)[:, 0])
        fits[state] = fit_damped_cosine_curve(delays, signals[f"control {control} in {state}"],
                                              f"edge {control}-{target} ZZ")
    f0, f1 = (abs(fits[s].params["f"]) for s in ("|0>", "|1>"))
    zeta = h * (f1 - f0)
    if not (abs(f0 - d) < d / 2 and abs(zeta) < d / 2):
        raise FitError(f"ZZ: fringes at {f0:.4g} and {f1:.4g} Hz, set {d:.4g} Hz; the target's "
                       "frequency or the ZZ is too far off for this detuning",
                       subject=f"edge {control}-{target}")
    err = float(np.hypot(fits["|0>"].stderr["f"], fits["|1>"].stderr["f"]))
    rid = kit.record(
        "static_zz", (control, target), {"zz_hz": (zeta, err)},
        {"x": delays, "x_label": f"delay between qubit {target}'s pi/2 pulses (s)",
         "y_label": "projected IQ (a.u.)", "series": signals},
        fit={"fringe_control_0_hz": f0, "fringe_control_1_hz": f1,
             "r_squared": min(f.r_squared for f in fits.values())},
        curves={label: fits[s].sampled(delays)
                for label, s in zip(signals, ("|0>", "|1>"), strict=True)},
        settings={"shots": shots, "detuning_hz": d, "drive_handedness": h})
    kit.work.set_pair((control, target), "zz_hz", zeta, rid)
