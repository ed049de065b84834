"""The anharmonicity of a transmon, from spectroscopy of its 1-2 transition.

A pi pulse puts qubit q in |1>; a 200 ns flat drive at frequency f then drives 1-2 when
f = f12; a second pi pulse returns what stayed in |1> to |0>, and the readout sees the
population the drive moved to |2> (its IQ lies away from |0>'s). The signal is |IQ - median|
over the scan, a Lorentzian in the detuning f - f01 whose centre is the anharmonicity
alpha = f12 - f01 (Hz, negative for a transmon). The drive's amplitude makes it a pi pulse
on 1-2 (whose matrix element is sqrt(2) times 0-1's) at the design's Rabi rate, so on
resonance nearly all of |1> moves to |2>.

The scan spans :data:`SPAN_HZ` either side of the working anharmonicity (the design's
-250 MHz, or the last one measured); when its peak is not inside, a coarse search over
:data:`SEARCH_HZ` either side finds the largest response and the scan runs again there. The
0-1 frequency comes from the working set (Ramsey's, known to ~1 kHz), so the standard error is
the peak's.
"""

from __future__ import annotations

import numpy as np

from labqpu.calibration.bootstrap import drive_if_band_hz
from labqpu.calibration.experiments import (
    FitError,
    Kit,
    complex_median,
    fit_peak_curve,
    sweep,
)

#: How far (Hz) either side of the working anharmonicity the scan goes, and its step (Hz).
SPAN_HZ = 30e6
STEP_HZ = 1e6
#: How far (Hz) either side the coarse search goes when the peak is not in the scan, and its
#: step (Hz): the 200 ns pulse's line is ~4 MHz wide.
SEARCH_HZ = 150e6
SEARCH_STEP_HZ = 2e6
#: Length (s) of the 1-2 drive.
DRIVE_S = 200e-9


def _scan(kit: Kit, q: int, shots: int, detunings_hz: np.ndarray) -> np.ndarray:
    """|IQ - median| of qubit ``q``'s readout after pi, a 1-2 drive at each of
    ``detunings_hz`` (Hz from the 0-1 frequency), pi."""
    p = kit.work.qubits[q]
    f01, pi = p["frequency_hz"], p["pi_amplitude"]
    amplitude = 0.5 / (kit.work.device["rabi_hz_per_amplitude"] * DRIVE_S) / np.sqrt(2)
    high = drive_if_band_hz(kit.fs)[1]
    outside = [d for d in detunings_hz if abs(f01 + d - p["drive_lo_frequency_hz"]) > high]
    if outside:
        raise FitError(f"a 1-2 drive at {f01 + outside[0]:.6g} Hz lies "
                       f"{abs(f01 + outside[0] - p['drive_lo_frequency_hz']) / 1e6:.4g} MHz "
                       f"from the drive LO {p['drive_lo_frequency_hz']:.6g} Hz, beyond the "
                       f"{high / 1e6:g} MHz the controller's {kit.fs / 1e9:g} GS/s can play",
                       subject=f"qubit {q} anharmonicity")

    def body(b, detuning_hz):
        end = kit.drive(b, q, 0, pi)
        end = kit.square_drive(b, q, end, DRIVE_S, amplitude, f01 + detuning_hz)
        return kit.drive(b, q, end, pi)

    iq = kit.run_iq(sweep(kit, q, detunings_hz, body), shots)[:, 0]
    return np.abs(iq - complex_median(iq))


def anharmonicity(kit: Kit, q: int, shots: int) -> None:
    """Anharmonicity (Hz) of qubit ``q``: the 1-2 line's detuning from the 0-1 frequency
    (module docstring). ``FitError`` when no line is found within :data:`SEARCH_HZ` of the
    working value, or a drive frequency lies beyond what the controller plays."""
    start = kit.work.qubits[q]["anharmonicity_hz"]
    what = f"qubit {q} anharmonicity"
    span = np.arange(-SPAN_HZ, SPAN_HZ + STEP_HZ / 2, STEP_HZ)
    x = start + span
    signal = _scan(kit, q, shots, x)
    series: dict = {}
    try:
        fit = fit_peak_curve(x, signal, what)
    except FitError as exc:
        coarse = start + np.arange(-SEARCH_HZ, SEARCH_HZ + SEARCH_STEP_HZ / 2, SEARCH_STEP_HZ)
        response = _scan(kit, q, shots, coarse)
        series = {f"around {start / 1e6:.6g} MHz": {"x": x, "y": signal},
                  f"search, +-{SEARCH_HZ / 1e6:g} MHz": {"x": coarse, "y": response}}
        x = float(coarse[int(np.argmax(response))]) + span
        signal = _scan(kit, q, shots, x)
        try:
            fit = fit_peak_curve(x, signal, what)
        except FitError as again:
            first, second = (str(e).removeprefix(f"{e.subject}: ") for e in (exc, again))
            raise FitError(f"no 1-2 line within {SPAN_HZ / 1e6:g} MHz of an anharmonicity of "
                           f"{start / 1e6:.6g} MHz ({first}), nor around the largest response "
                           f"within {SEARCH_HZ / 1e6:g} MHz ({second})",
                           subject=what) from again
    alpha = fit.params["f0"]
    rid = kit.record(
        "anharmonicity", q, {"anharmonicity_hz": (alpha, fit.stderr["f0"])},
        {"x": x, "x_label": "1-2 drive frequency - 0-1 frequency (Hz)",
         "y_label": "|IQ - median| (a.u.)", "series": {"pi, 1-2 drive, pi": signal, **series}},
        fit=fit.quality(), curves={"Lorentzian": fit.sampled(x)}, chosen="anharmonicity_hz",
        settings={"shots": shots, "frequency_hz": kit.work.qubits[q]["frequency_hz"],
                  "drive_s": DRIVE_S})
    kit.work.set(q, "anharmonicity_hz", alpha, rid)
