"""The anharmonicity of a transmon, from spectroscopy of its 1-2 transition.

A pi pulse puts qubit q in |1>; a 200 ns flat drive at frequency f then drives 1-2 when
f = f12; a second pi pulse returns what stayed in |1> to |0>, and the readout sees the
population the drive moved to |2> (its IQ lies away from |0>'s). The signal is |IQ - median|
over the scan, a Lorentzian in the detuning f - f01 whose centre is the anharmonicity
alpha = f12 - f01 (Hz, negative for a transmon). The flat drive has the area of the
calibrated pi pulse over sqrt(2) (the 1-2 matrix element is sqrt(2) times 0-1's), a pi pulse
on 1-2, so on resonance nearly all of |1> moves to |2>.

The scan spans :data:`SPAN_HZ` either side of the working anharmonicity (the design's
-250 MHz, or the last one measured); when its peak is not inside, a search over every
anharmonicity a transmon has (:data:`TRANSMON_HZ`) finds the largest response and the scan
runs again there. Scan and search keep clear of the 0-1 line (the search's upper end is 50
MHz below it) and within the drives the controller plays (0.45 x its sample rate either
side of the drive LO). The 0-1 frequency comes from the working set (Ramsey's, known to
~1 kHz), so the standard error is the peak's.
"""

from __future__ import annotations

import numpy as np

from labqpu.calibration.bootstrap import drive_if_band_hz
from labqpu.calibration.experiments import (
    FitError,
    Kit,
    complex_median,
    fit_peak_searching,
    sweep,
)

#: How far (Hz) either side of the working anharmonicity the scan goes, and its step (Hz).
SPAN_HZ = 30e6
STEP_HZ = 1e6
#: The anharmonicities (Hz) the search covers when the line is not in the scan: a transmon's
#: lie within (typically -100 to -350 MHz); the upper end keeps the 0-1 line (0 Hz, ~4 MHz
#: wide for the 200 ns drive) out of the search.
TRANSMON_HZ = (-400e6, -50e6)
#: The search's step (Hz): the 200 ns drive's line is ~4 MHz wide.
SEARCH_STEP_HZ = 2e6
#: Length (s) of the 1-2 drive.
DRIVE_S = 200e-9


def _playable(kit: Kit, q: int) -> tuple[float, float, float, float]:
    """The detunings (Hz from the 0-1 frequency) the node may drive, lowest and highest: a
    transmon's anharmonicities (:data:`TRANSMON_HZ`) that the controller plays from the drive
    LO; and those it plays at all, lowest and highest."""
    p = kit.work.qubits[q]
    reach = drive_if_band_hz(kit.fs)[1]
    offset = p["drive_lo_frequency_hz"] - p["frequency_hz"]  # the LO, as a detuning
    return (max(TRANSMON_HZ[0], offset - reach), min(TRANSMON_HZ[1], offset + reach),
            offset - reach, offset + reach)


def anharmonicity(kit: Kit, q: int, shots: int) -> None:
    """Anharmonicity (Hz) of qubit ``q``: the 1-2 line's detuning from the 0-1 frequency
    (module docstring). ``FitError`` when no line is found, or when the controller plays none
    of a transmon's anharmonicities from the drive LO (before anything runs)."""
    p = kit.work.qubits[q]
    start, f01 = p["anharmonicity_hz"], p["frequency_hz"]
    what = f"qubit {q} anharmonicity"
    low, high, lowest, highest = _playable(kit, q)
    if high - low < 2 * SPAN_HZ:
        raise FitError(f"the drive LO {p['drive_lo_frequency_hz']:.6g} Hz reaches drives from "
                       f"{lowest / 1e6:.4g} to {highest / 1e6:.4g} MHz of the 0-1 frequency "
                       f"(within {(highest - lowest) / 2e6:g} MHz of it at {kit.fs / 1e9:g} "
                       f"GS/s), which leaves {max(high - low, 0) / 1e6:.4g} MHz of a "
                       f"transmon's {TRANSMON_HZ[0] / 1e6:g} to {TRANSMON_HZ[1] / 1e6:g} MHz to "
                       f"search (at least {2 * SPAN_HZ / 1e6:g})", subject=what)
    # the flat drive's area is the pi pulse's over sqrt(2): a pi pulse on 1-2
    amplitude = kit.pulse_area(q) / kit.square_area(DRIVE_S) / np.sqrt(2)
    pi = p["pi_amplitude"]

    def measure(detunings_hz: np.ndarray) -> np.ndarray:
        def body(b, detuning_hz):
            end = kit.drive(b, q, 0, pi)
            end = kit.square_drive(b, q, end, DRIVE_S, amplitude, f01 + detuning_hz)
            return kit.drive(b, q, end, pi)

        iq = kit.run_iq(sweep(kit, q, detunings_hz, body), shots)[:, 0]
        return np.abs(iq - complex_median(iq))

    def within(x: np.ndarray) -> np.ndarray:
        return x[(x >= low) & (x <= high)]

    span = np.arange(-SPAN_HZ, SPAN_HZ + STEP_HZ / 2, STEP_HZ)
    scan = within(start + span)
    x, signal, fit, series = fit_peak_searching(
        measure, scan if len(scan) > len(span) // 2 else scan[:0],
        within(np.arange(low, high + SEARCH_STEP_HZ / 2, SEARCH_STEP_HZ)),
        lambda peak: within(peak + span), what,
        scan_label=f"around {start / 1e6:.6g} MHz",
        search_label=f"search, {low / 1e6:.4g} to {high / 1e6:.4g} MHz",
        not_found=f"no 1-2 line within {SPAN_HZ / 1e6:g} MHz of an anharmonicity of "
                  f"{start / 1e6:.6g} MHz")
    rid = kit.record(
        "anharmonicity", q, {"anharmonicity_hz": (fit.params["f0"], fit.stderr["f0"])},
        {"x": x, "x_label": "1-2 drive frequency - 0-1 frequency (Hz)",
         "y_label": "|IQ - median| (a.u.)", "series": {"pi, 1-2 drive, pi": signal, **series}},
        fit=fit.quality(), curves={"Lorentzian": fit.sampled(x)}, chosen="anharmonicity_hz",
        old={"anharmonicity_hz": None} if kit.work.from_design(q, "anharmonicity_hz") else None,
        settings={"shots": shots, "frequency_hz": f01, "drive_s": DRIVE_S,
                  "amplitude": amplitude, "started_from_hz": start})
    kit.work.set(q, "anharmonicity_hz", fit.params["f0"], rid)
