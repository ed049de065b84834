"""qiskit-experiments' ZZRamsey on the backend measures the static ZZ of the device file.

The reference diagonalises the full five-transmon Hamiltonian of lab5 (3 levels each, exchange
coupling g, 243 states) with ``numpy.linalg.eigh``: ZZ = E11 - E10 - E01 + E00 with the other
transmons in 0. The backend knows nothing of it: it runs transpiled circuits with the shipped
calibration through the firmware simulator.

Two findings the tests pin down:

* ZZRamseyAnalysis fits both control preparations with one shared phase. The gates are 40 ns
  long and ZZ acts during them too, so the two preparations start with phases 0.08-0.14 rad
  apart; the shared-phase fit absorbs that into the frequency and reads |ZZ| about 1 % high
  over a 10 us span (2 % over 4 us). A fit of the same data with a phase per preparation
  recovers ZZ within its 1-sigma-sized uncertainty. The analysis itself reads, within its own
  uncertainty, what ideal gates of the same length read of the exact ZZ: the second reference
  plays the experiment's own circuits on two ideal qubits (rotations with the calibrated
  Gaussian envelope, rz as an instantaneous Z, the exact ZZ acting at all times, no noise) and
  hands their exact probabilities to ZZRamseyAnalysis.
* The sign is that of E11 - E10 - E01 + E00 (qiskit-experiments' own test backend,
  H = (f_ZZ / 4) ZZ, returns f_ZZ with its sign). ZZRamsey compares physical precession with
  rz, so it reads the sign only because rz turns the same way as the qubit precesses: the
  simulated IQ mixer turns a play phase phi into a drive axis -phi, the calibration measures
  that as ``drive_handedness`` = -1, and the compiler plays rz(theta) as a play-phase change
  of +theta there (Qiskit's frame change -theta times the handedness). Without it the stack
  implemented Rz(-theta), the complex conjugate of the ideal gate set, and ZZRamsey read +ZZ.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from labqpu.firmware_sim.device import load_device

qiskit_experiments = pytest.importorskip("qiskit_experiments.library")
framework = pytest.importorskip("qiskit_experiments.framework")

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4)]
SHOTS = 1000
OPTIONS = {"min_delay": 0.0, "max_delay": 10e-6, "num_delays": 50, "num_rotations": 5}


def exact_static_zz(p: int, q: int, ladders) -> float:
    """E11 - E10 - E01 + E00 (Hz) of lab5 qubits p and q from the full 5-transmon
    Hamiltonian (dressed states labelled by their largest bare component); ``ladders`` is the
    ``ladders`` fixture."""
    dev = load_device("lab5")
    k = len(dev.qubits)
    lowering = ladders(k)
    h = np.zeros((3**k, 3**k))
    for i, t in enumerate(dev.qubits):
        n = lowering[i].T @ lowering[i]
        h += t.max_frequency_hz * n + 0.5 * t.anharmonicity_hz * (n @ n - n)
    for (i, j), g in dev.couplings.items():
        h += g * (lowering[i].T @ lowering[j] + lowering[j].T @ lowering[i])
    e, v = np.linalg.eigh(h)
    energy = np.empty_like(e)
    energy[np.argmax(v**2, axis=0)] = e

    def level(levels: dict[int, int]) -> float:
        return energy[np.ravel_multi_index(tuple(levels.get(j, 0) for j in range(k)),
                                           (3,) * k)]

    return level({p: 1, q: 1}) - level({p: 1}) - level({q: 1}) + level({})


def per_preparation_phase_fit(data, guess_zz: float, frequency: float) -> tuple[float, float]:
    """ZZ and its standard error from the experiment's counts, fitted with the analysis's
    model but one phase per control preparation."""
    x, y, branch = [], [], []
    for row in data.data():
        counts = row["counts"]
        x.append(row["metadata"]["xval"])
        y.append(counts.get("1", 0) / sum(counts.values()))
        branch.append(int(row["metadata"]["series"]))
    x, y, branch = np.array(x), np.array(y), np.array(branch)

    def model(xb, amp, tau, base, f, zz, phase0, phase1):
        xx, b = xb
        phase = np.where(b == 1, phase1, phase0)
        return base - amp * np.exp(-xx / tau) * np.cos(
            2 * np.pi * (f + (2 * b - 1) * zz / 2) * xx + phase)

    p, cov = scipy.optimize.curve_fit(model, (x, branch), y,
                                      p0=[0.45, 30e-6, 0.5, frequency, guess_zz, 0.0, 0.0])
    return float(p[4]), float(math.sqrt(cov[4, 4]))


def lifted_gaussian(samples: int, sigma: float) -> np.ndarray:
    """A Gaussian of width ``sigma`` (samples) centred in ``samples`` samples, lifted to vanish
    one sample outside the window (the envelope the calibration's sx and x play)."""
    centre = (samples - 1) / 2
    g = np.exp(-((np.arange(samples) - centre) ** 2) / (2 * sigma**2))
    edge = math.exp(-((centre + 1) ** 2) / (2 * sigma**2))
    return (g - edge) / (1 - edge)


def ideal_gate_probability(circuit, zz_hz: float, dt: float, envelope: np.ndarray) -> float:
    """P(circuit qubit 0 reads 1) after ``circuit`` (a ZZRamsey circuit: layers between
    barriers) on two ideal qubits: each sx or x a rotation about x spread over the samples in
    proportion to ``envelope``, rz an instantaneous Z rotation, a delay free evolution, and the
    static ZZ (Hz) acting at all times as 2 pi zz |11><11| in the qubits' frames."""
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    on = [np.kron(x, np.eye(2)), np.kron(np.eye(2), x)]  # circuit qubit 0 most significant
    h_zz = np.diag([0.0, 0.0, 0.0, 2 * math.pi * zz_hz * dt])
    weights = envelope / envelope.sum()
    psi = np.zeros(4, dtype=complex)
    psi[0] = 1.0
    layers: list[list] = [[]]
    for inst in circuit.data:
        if inst.operation.name == "barrier":
            layers.append([])
        elif inst.operation.name != "measure":
            layers[-1].append((inst.operation, circuit.find_bit(inst.qubits[0]).index))
    for layer in layers:
        drive = np.zeros((4, 4))
        for op, q in layer:
            if op.name == "delay":
                assert op.unit == "dt", op.unit
                psi = np.exp(-1j * np.diag(h_zz) * float(op.params[0])) * psi
            elif op.name == "rz":
                half = float(op.params[0]) / 2
                z = np.diag([np.exp(-1j * half), np.exp(1j * half)])
                psi = (np.kron(z, np.eye(2)) if q == 0 else np.kron(np.eye(2), z)) @ psi
            else:
                drive += {"sx": math.pi / 2, "x": math.pi}[op.name] / 2 * on[q]
        if np.any(drive):
            for w in weights:
                psi = scipy.linalg.expm(-1j * (w * drive + h_zz)) @ psi
    return float(abs(psi[2]) ** 2 + abs(psi[3]) ** 2)


def ideal_gate_reading(edge: tuple[int, int], backend, zz_hz: float) -> float:
    """What ZZRamseyAnalysis reads from ideal gates (``ideal_gate_probability``) with the
    calibrated pulse length and width of ``edge``'s qubits, given the exact ``zz_hz``."""
    exp = qiskit_experiments.ZZRamsey(edge, backend, **OPTIONS)
    snapshot = backend.snapshot
    lengths = {round(snapshot.qubit_value(q, "pulse_duration_s") / backend.dt) for q in edge}
    sigmas = {snapshot.qubit_value(q, "pulse_sigma_s") / backend.dt for q in edge}
    assert len(lengths) == 1 and len(sigmas) == 1, (lengths, sigmas)
    envelope = lifted_gaussian(lengths.pop(), sigmas.pop())
    shots = 10**9  # the probabilities to 1e-9: the reading's own uncertainty is negligible
    rows = []
    for circuit in exp.circuits():
        ones = round(ideal_gate_probability(circuit, zz_hz, backend.dt, envelope) * shots)
        rows.append({"counts": {"1": ones, "0": shots - ones}, "metadata": circuit.metadata,
                     "shots": shots})
    data = framework.ExperimentData(experiment=exp)
    data.add_data(rows)
    exp.analysis.run(data).block_for_results()
    return float(data.analysis_results("zz", dataframe=True).iloc[0]["value"].n)


@pytest.fixture(scope="module")
def zz_measurements(lab_backend) -> dict[tuple[int, int], tuple[float, float, float, float]]:
    """Per edge: (analysis ZZ, its stderr, per-preparation-phase ZZ, its stderr)."""
    out = {}
    for edge in EDGES:
        exp = qiskit_experiments.ZZRamsey(edge, lab_backend, **OPTIONS)
        data = exp.run(lab_backend, shots=SHOTS, seed_simulator=5).block_for_results()
        value = data.analysis_results("zz", dataframe=True).iloc[0]["value"]
        out[edge] = (value.n, value.s, *per_preparation_phase_fit(data, value.n,
                                                                  exp.frequency()))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("edge", EDGES)
def test_zz_ramsey_measures_the_exact_static_zz(zz_measurements, edge, ladders) -> None:
    """ZZ from ZZRamsey (10 us span, 50 delays, 1000 shots) is within 3 % of the exact
    diagonalisation, sign included (the analysis's shared phase reads |ZZ| about 1 % high,
    see the module docstring), and the per-preparation-phase fit of the same data is within
    3 sigma (its sigma is 0.5-0.6 kHz on 270-440 kHz)."""
    zz, _, zz_free, sigma = zz_measurements[edge]
    exact = exact_static_zz(*edge, ladders)
    assert -4.5e5 < exact < -2.5e5
    assert abs(zz - exact) <= 0.03 * abs(exact), (zz, exact)
    assert abs(zz_free - exact) <= 3 * sigma, (zz_free, sigma, exact)


@pytest.mark.slow
@pytest.mark.parametrize("edge", EDGES)
def test_zz_ramsey_reads_what_ideal_gates_read_of_the_exact_zz(zz_measurements, edge, ladders,
                                                               lab_backend) -> None:
    """The analysis's reading is within 3 of its own sigma (0.32-0.35 kHz) of what it reads
    from ideal gates of the calibrated length under the exact ZZ (measured 0.1-1.9 sigma with
    seed 5; edge 2-3 sits 1.7 sigma low on average over six seeds, about 0.13 %), while the
    exact ZZ itself is 9-13 sigma away: the gap between the two is the analysis's shared
    phase, not the simulator."""
    zz, sigma, _, _ = zz_measurements[edge]
    exact = exact_static_zz(*edge, ladders)
    expected = ideal_gate_reading(edge, lab_backend, exact)
    assert abs(expected - exact) > 0.005 * abs(exact), (expected, exact)
    assert abs(zz - expected) <= 3 * sigma, (zz, sigma, expected, exact)


@pytest.mark.slow
def test_zz_ramsey_sign_follows_the_energy_convention(zz_measurements, ladders) -> None:
    """ZZ = E11 - E10 - E01 + E00 is negative on every lab5 edge, and so is what ZZRamsey
    reads, well outside its uncertainty; the per-preparation-phase fit agrees in sign."""
    for edge in EDGES:
        zz, sigma, zz_free, _ = zz_measurements[edge]
        assert exact_static_zz(*edge, ladders) < 0
        assert zz < -10 * sigma, (edge, zz, sigma)
        assert zz_free < 0, (edge, zz_free)
