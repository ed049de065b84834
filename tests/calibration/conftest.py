"""Exact references shared by the calibration tests: the device file's coupled transmons."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable
from importlib import resources

import numpy as np
import pytest


def dressed_levels(truth: dict, flux_bias_a: dict[int, float]) -> Callable[[tuple], float]:
    """The dressed level (Hz) of each bare state (a tuple of level numbers): three-level
    transmons at their flux bias (with the DC flux crosstalk M_ij a_j (I_j - I*_j) of the
    device file's [[flux_crosstalk]]) with exchange couplings g (a+ b + a b+), exactly
    diagonalised; each dressed level is the eigenstate with the largest overlap with its bare
    state."""
    qubits = sorted(truth["qubit"], key=lambda q: q["index"])
    n = len(qubits)
    own = {q["index"]: (flux_bias_a[q["index"]] - q["sweet_spot_current_a"])
           * q["phi0_per_ampere"] for q in qubits}
    freqs, alphas = [], []
    for q in qubits:
        ec = -q["anharmonicity_hz"]
        phi = own[q["index"]] + sum(x["fraction"] * own[x["source"]]
                                    for x in truth.get("flux_crosstalk", [])
                                    if x["target"] == q["index"])
        freqs.append((q["max_frequency_hz"] + ec) * np.sqrt(abs(np.cos(np.pi * phi))) - ec)
        alphas.append(q["anharmonicity_hz"])
    states = list(itertools.product(range(3), repeat=n))
    index = {s: i for i, s in enumerate(states)}
    h = np.zeros((len(states), len(states)))
    for s, i in index.items():
        h[i, i] = sum(f * k + a / 2 * k * (k - 1) for f, a, k in zip(freqs, alphas, s,
                                                                 strict=True))
    for c in truth["coupling"]:
        a, b = c["qubits"]
        for s, i in index.items():
            if s[a] < 2 and s[b] > 0:  # a+ b
                t = list(s)
                t[a] += 1
                t[b] -= 1
                j = index[tuple(t)]
                amp = c["g_hz"] * np.sqrt(s[a] + 1) * np.sqrt(s[b])
                h[j, i] += amp
                h[i, j] += amp
    energies, vectors = np.linalg.eigh(h)

    def level(bare: tuple) -> float:
        return float(energies[int(np.argmax(np.abs(vectors[index[bare]])))])

    return level


@pytest.fixture(scope="session")
def truth() -> dict:
    """The simulator's device file (lab5), read by tests only, for the truth."""
    text = (resources.files("labqpu") / "firmware_sim" / "devices" / "lab5.toml").read_text()
    return tomllib.loads(text)


@pytest.fixture(scope="session")
def exact_levels() -> Callable:
    """:func:`dressed_levels`."""
    return dressed_levels
