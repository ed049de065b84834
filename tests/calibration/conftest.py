"""Exact references shared by the calibration tests: the device file's coupled transmons."""

from __future__ import annotations

import functools
import itertools
import tomllib
from collections.abc import Callable
from importlib import resources

import numpy as np
import pytest
import scipy.linalg

from labqpu.calibration import rb
from labqpu.calibration.leakage import LEAKAGE_REPEATS
from labqpu.errors import FitError
from labqpu.pulse.kernels import flat_top, gaussian_drag


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


def analysis_zz_time_s(snapshot, q: int) -> float:
    """How long (s) the static ZZ turns qubit ``q``'s Ramsey phase while its two X90 analysis
    pulses play, to first order in ZZ. A Z rotation at time t of the first pulse, when the
    pulse has turned the Bloch vector by theta(t) of its pi/2 (theta follows the envelope's
    running area), moves the final equatorial phase by sin(theta(t)) of its angle; in the
    second pulse, by cos(theta(t)), whose integral is the same for a symmetric envelope. So
    t_zz = 2 sum_k sin(theta_k) dt over the samples k, about 1.19 pulse lengths for lab5's
    Gaussian (sigma a quarter of the pulse), not one (half of each pulse) as a constant rate
    of turn would give."""
    p = snapshot.qubits[q]
    dt_s = 1e-9
    envelope = gaussian_drag(round(p["pulse_duration_s"].value / dt_s),
                             p["pulse_sigma_s"].value / dt_s, 0.0, np.complex128).real
    theta = 0.5 * np.pi * (np.cumsum(envelope) - envelope / 2) / envelope.sum()
    return float(2 * np.sin(theta).sum() * dt_s)


def cz_reference(device, snapshot, pair: tuple[int, int], grid: int, *,
                 ladders: Callable[[int], list[np.ndarray]]
                 ) -> tuple[np.ndarray, float, float]:
    """Leaked population after n = 0 ... LEAKAGE_REPEATS CZs of the snapshot's CZ on
    ``pair``: 1 - the population of the dressed states with both of its qubits in |1>
    (spectators in any level), by exact propagation of the qubits within two couplings of the
    edge (population a flux pulse moves onto a neighbour moves on to that neighbour's
    neighbour over repeated CZs: with one coupling, lab5's edge 1-2 read 0.031-0.035 after 6-8
    CZs where the simulator, and the wider chain, give 0.040-0.048), 3 levels each, in the
    states of at most two excitations (the Hamiltonian keeps their number, so this is exact
    from |11>), the pulse zero-padded to a
    multiple of ``grid`` samples; the pulse's own conditional phase (rad, in [0, 2 pi)):
    arg(U_11 U_00 / (U_01 U_10)) on the dressed states, spectators in |0>; and the conditional
    phase the CZ calibration aims at pi: the pulse's plus what the static ZZ adds while the
    partner's Ramsey analysis pulses play (in a circuit, the neighbouring gates' pulses),
    -2 pi ZZ t_zz with ZZ = E11 - E10 - E01 + E00 of the same Hamiltonian and t_zz from
    :func:`analysis_zz_time_s`."""
    p = {k: v.value for k, v in snapshot.pairs[pair].items()}
    flux_q = p["cz_flux_qubit"]
    other = pair[1] if flux_q == pair[0] else pair[0]
    chain = list(range(max(0, min(pair) - 2), min(len(device.qubits), max(pair) + 3)))
    k = len(chain)
    lowering = ladders(k)
    numbers = [x.T @ x for x in lowering]
    own = {j: t.phi0_per_ampere * (snapshot.qubits[j]["flux_bias_a"].value
                                   - t.sweet_spot_current_a)
           for j, t in enumerate(device.qubits)}
    phi = dict(own)
    for (i, j), m in device.crosstalk.flux.items():
        phi[i] += m * own[j]
    idle = {q: device.qubits[q].frequency_hz(phi[q]) for q in chain}
    frame = 5.5e9

    def hamiltonian(shift_hz: float) -> np.ndarray:
        h = sum((idle[q] - frame + (shift_hz if q == flux_q else 0.0)) * numbers[i]
                + 0.5 * device.qubits[q].anharmonicity_hz * (numbers[i] @ numbers[i] - numbers[i])
                for i, q in enumerate(chain))
        for i in range(k - 1):
            g = device.coupling_hz(chain[i], chain[i + 1])
            h = h + g * (lowering[i].T @ lowering[i + 1] + lowering[i + 1].T @ lowering[i])
        return h

    levels = np.indices((3,) * k).reshape(k, -1)
    kept = np.flatnonzero(levels.sum(axis=0) <= 2)  # states of at most two excitations

    def restricted(shift_hz: float) -> np.ndarray:
        return hamiltonian(shift_hz)[np.ix_(kept, kept)]

    duration = round(p["cz_duration_s"] * 1e9)
    wave = flat_top(duration, p["cz_rise_s"] * 1e9).real * p["cz_amplitude"]
    wave = np.concatenate([wave, np.zeros(-duration % grid)])
    u = np.eye(kept.size, dtype=complex)
    truth = device.qubits[flux_q]
    for x in wave:
        shift = truth.frequency_hz(phi[flux_q] + device.flux_line_phi0_per_amplitude * x) \
            - idle[flux_q]
        u = scipy.linalg.expm(-2j * np.pi * restricted(shift) * 1e-9) @ u
    energies, vectors = np.linalg.eigh(restricted(0.0))
    labels = kept[np.argmax(np.abs(vectors), axis=0)]  # each dressed state's bare state
    dressed = {int(label): vectors[:, i] for i, label in enumerate(labels)}
    energy = {int(label): energies[i] for i, label in enumerate(labels)}
    start = sum(3 ** (k - 1 - chain.index(q)) for q in pair)
    both_excited = np.array([vector for s, vector in dressed.items()
                             if all(levels[chain.index(q), s] == 1 for q in pair)])
    psi = dressed[start].astype(complex)
    out = []
    for _ in range(LEAKAGE_REPEATS + 1):
        out.append(1.0 - float(np.sum(np.abs(both_excited.conj() @ psi) ** 2)))
        psi = u @ psi
    index = {qs: sum(3 ** (k - 1 - chain.index(q)) for q in qs)
             for qs in ((), (pair[0],), (pair[1],), pair)}
    diagonal = {qs: complex(dressed[i].conj() @ u @ dressed[i]) for qs, i in index.items()}
    conditional = np.angle(diagonal[pair] * diagonal[()]
                           / (diagonal[(pair[0],)] * diagonal[(pair[1],)]))
    zz_hz = (energy[index[pair]] - energy[index[(pair[0],)]] - energy[index[(pair[1],)]]
             + energy[index[()]])
    in_context = conditional - 2 * np.pi * zz_hz * analysis_zz_time_s(snapshot, other)
    return (np.array(out), float(np.mod(conditional, 2 * np.pi)),
            float(np.mod(in_context, 2 * np.pi)))


@pytest.fixture(scope="session")
def exact_cz(ladders) -> Callable:
    """:func:`cz_reference`: exact leakage curve and conditional phases of a snapshot's CZ."""
    return functools.partial(cz_reference, ladders=ladders)


#: The reason a 2-qubit decay gives under ``edge_decays_do_not_fit``.
EDGE_FIT_FAILURE = "decay does not fit (made to fail by the test)"


@pytest.fixture
def edge_decays_do_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 2-qubit randomized-benchmarking decay fails its fit (``FitError`` with
    ``EDGE_FIT_FAILURE``); 1-qubit decays fit as usual."""
    fit = rb.fit_rb

    def fails_for_edges(lengths, survival, num_qubits, *args, **kwargs):
        if num_qubits == 2:
            raise FitError(EDGE_FIT_FAILURE)
        return fit(lengths, survival, num_qubits, *args, **kwargs)

    monkeypatch.setattr(rb, "fit_rb", fails_for_edges)


@pytest.fixture
def lab5_at_rate(tmp_path) -> Callable[[float], str]:
    """``lab5_at_rate(rate_hz)``: the path of a wiring file for lab5 with its controllers, and
    the simulator's device file, at ``rate_hz`` samples per second (docs/wiring.md allows any
    rate), and a store of its own holding the shipped snapshot as if measured an hour ago."""
    from labqpu.firmware_sim.device import DEVICES_DIR
    from labqpu.rack.config import default_config_path
    from labqpu.store import CalibrationStore
    from labqpu.testing import restamped, shipped_export

    def made(rate_hz: float) -> str:
        store = tmp_path / "calibration.sqlite"
        with CalibrationStore(store) as fresh:
            fresh.import_json(restamped(shipped_export("lab5")))
        device = tmp_path / "lab5_rate.toml"
        device.write_text((DEVICES_DIR / "lab5.toml").read_text().replace(
            "sample_rate_hz = 1.0e9", f"sample_rate_hz = {rate_hz!r}"))
        wiring = tmp_path / "lab.toml"
        wiring.write_text(default_config_path().read_text()
                          .replace("sample_rate_hz = 1.0e9", f"sample_rate_hz = {rate_hz!r}")
                          .replace('device = "lab5"', f'device = "{device}"')
                          .replace('store = ""', f'store = "{store}"'))
        return str(wiring)

    return made
