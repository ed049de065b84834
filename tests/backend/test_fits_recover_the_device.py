"""Coherence fitted from simulated experiments recovers the device file within 5 %.

qiskit-experiments' ``T1`` and ``T2Hahn`` run unchanged on a simulator whose flux noise,
quasi-static frequency noise and drift are off (``quiet_lab_backend``; thermal equilibrium
stays), so the device file's T1 and T2 are the truth the fits must find, within 5 %. 41 delays
x 2000 shots put the fits' standard errors near 1.5 %, so 5 % is about three of them.

Ramsey's T2* is not compared with T2 here: even with that noise off it fits ~7 % below T2
(35.3 us for 38 us on qubit 1, 2026-11-30), because a thermally excited neighbour (~1 %)
shifts the qubit by the static ZZ (-270 to -380 kHz) for the whole shot, which a Ramsey fringe
averages and an echo refocuses. ``test_qiskit_experiments.py`` checks T2* with noise on against
the analytic envelope, and ZZ (``test_zz_ramsey.py``) within 3 % of exact diagonalisation.
"""

from __future__ import annotations

import tomllib
from importlib import resources

import numpy as np
import pytest
from qiskit_experiments.library import T1, T2Hahn

pytestmark = pytest.mark.slow

QUBIT = 1
SHOTS = 2000


@pytest.fixture(scope="module")
def device() -> dict:
    text = (resources.files("labqpu") / "firmware_sim" / "devices" / "lab5.toml").read_text()
    return {q["index"]: q for q in tomllib.loads(text)["qubit"]}


def _fit(exp, backend, name: str) -> float:
    data = exp.run(backend, shots=SHOTS).block_for_results(timeout=600)
    assert data.status().name == "DONE", data.status()
    table = data.analysis_results(dataframe=True)
    value = dict(zip(table["name"], table["value"], strict=True))[name]
    return float(getattr(value, "nominal_value", value))


def test_t1_recovers_the_device_file(quiet_lab_backend, device) -> None:
    t1 = device[QUBIT]["t1_s"]
    fitted = _fit(T1(physical_qubits=[QUBIT], delays=np.linspace(0, 4 * t1, 41)),
                  quiet_lab_backend, "T1")
    assert fitted == pytest.approx(t1, rel=0.05)


def test_hahn_echo_recovers_the_device_file(quiet_lab_backend, device) -> None:
    t2 = device[QUBIT]["t2_s"]
    fitted = _fit(T2Hahn(physical_qubits=[QUBIT], delays=np.linspace(0, 3 * t2, 41)),
                  quiet_lab_backend, "T2")
    assert fitted == pytest.approx(t2, rel=0.05)

