"""The shipped snapshots agree with the simulator's truth where the physics is exact.

The pi amplitude of each qubit was fitted by the bootstrap from simulated Rabi and
error-amplifying experiments. The device file says what it must be: a resonant drive of
amplitude a gives a Rabi rate ``rabi_hz_per_amplitude`` x a (the mixer at its nominal LO power),
so a pi pulse needs a x rabi x (area of the calibrated DRAG envelope, s) = 1/2. The issue asks
for 5 %; this asserts 1 %. lab5 measured 0.05-0.09 % (the transmon's third level and the DRAG
quadrature account for the rest), and lab10 is checked the same way.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources

import numpy as np
import pytest

from labqpu.pulse.kernels import gaussian_drag
from labqpu.rack.config import BUILTIN_DEVICES


def _value(entry):
    return entry["value"] if isinstance(entry, dict) else entry


@pytest.mark.parametrize("device", BUILTIN_DEVICES)
def test_pi_amplitude_gives_the_device_files_rabi_rate(device) -> None:
    data = resources.files("labqpu")
    snapshot = json.loads((data / "data" / f"{device}_calibration.json").read_text())
    truth = tomllib.loads((data / "firmware_sim" / "devices" / f"{device}.toml").read_text())
    rabi = {q["index"]: q["rabi_hz_per_amplitude"] for q in truth["qubit"]}
    fs = truth["device"]["sample_rate_hz"]
    for key, p in snapshot["document"]["qubits"].items():
        q = int(key)
        samples = round(_value(p["pulse_duration_s"]) * fs)
        envelope = gaussian_drag(samples, _value(p["pulse_sigma_s"]) * fs,
                                 _value(p["drag_beta"]))
        expected = 0.5 / (rabi[q] * float(np.sum(envelope.real)) / fs)
        assert _value(p["pi_amplitude"]) == pytest.approx(expected, rel=0.01), (device, q)
