"""rz turns the same way as a qubit's own precession: a detuned Ramsey reads a signed frequency.

The calibrated frequency of qubit 2 is lowered by ``DETUNING_HZ`` in a snapshot of a private
store, so the drive frame sits that far *below* the qubit. Its free evolution against the
frame is then exp(-i 2 pi DETUNING_HZ t |1><1|) = Rz(-2 pi DETUNING_HZ t) up to a phase
(Qiskit's convention: |1> above |0>). The circuits are RamseyXY's: sx, delay t,
rz(2 pi OSC_HZ t) (and rz(... - pi/2) for the Y series), sx, measure.

The reference replaces the delay by that unitary and evaluates the ideal circuits with
``Statevector``; its fringe runs at +(OSC_HZ - DETUNING_HZ), the sign being the phase of the
Y series against the X series. A stack whose rz turns against the precession (the complex
conjugate gate set: drive_handedness set to +1 on this -1 simulator) reads
+(OSC_HZ + DETUNING_HZ) instead: 1.40 MHz against 0.60 MHz (measured: 1.401 MHz).

Tolerance: 15 kHz on the signed frequency (the calibrated frequency is a few kHz off the
dressed truth; the fit over 4 us of 41 delays at 600 shots has a ~2 kHz standard error).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
from qiskit import QuantumCircuit
from qiskit.circuit.library import UnitaryGate
from qiskit.quantum_info import Statevector

from labqpu.backend.provider import LabProvider
from labqpu.store import SnapshotBuilder

QUBIT = 2
DETUNING_HZ = 0.4e6
OSC_HZ = 1.0e6
SHOTS = 600
DELAYS_S = np.linspace(0.0, 4e-6, 41)


@pytest.fixture(scope="module")
def detuned_backend(tmp_path_factory):
    """lab5 on its own simulator, with qubit 2's calibrated frequency DETUNING_HZ low."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABQPU_HOME", str(tmp_path_factory.mktemp("detuned-home")))
        provider = LabProvider()
    try:
        backend = provider.backend("lab5")
        snapshot = backend.snapshot
        builder = SnapshotBuilder.from_snapshot(snapshot)
        builder.set_qubit(QUBIT, "frequency_hz",
                          snapshot.qubit_value(QUBIT, "frequency_hz") - DETUNING_HZ, "manual")
        provider.store.commit(builder.build_document())
        assert backend.snapshot.snapshot_id != snapshot.snapshot_id
        yield backend
    finally:
        provider.close()


def ramsey_xy(delay_dt: int, dt_s: float, series: str, free: UnitaryGate | None = None
              ) -> QuantumCircuit:
    """RamseyXY's circuit on qubit QUBIT of five; ``free`` replaces the delay (reference)."""
    qc = QuantumCircuit(5, 1)
    qc.sx(QUBIT)
    if free is None:
        qc.delay(delay_dt, QUBIT, unit="dt")
    else:
        qc.append(free, [QUBIT])
    angle = 2 * math.pi * OSC_HZ * delay_dt * dt_s - (math.pi / 2 if series == "Y" else 0.0)
    qc.rz(angle, QUBIT)
    qc.sx(QUBIT)
    qc.measure(QUBIT, 0)
    return qc


def signed_frequency(t_s: np.ndarray, p_x: np.ndarray, p_y: np.ndarray) -> float:
    """f of P_X = b + a e^(-t/tau) cos(2 pi f t + phi), P_Y = b + a e^(-t/tau) sin(...),
    started from both signs of the strongest Fourier component; the better fit wins."""
    def model(tt, a, tau, b, f, phi):
        n = len(tt) // 2
        env = a * np.exp(-tt[:n] / tau)
        arg = 2 * np.pi * f * tt[:n] + phi
        return np.concatenate([b + env * np.cos(arg), b + env * np.sin(arg)])

    z = (p_x - p_x.mean()) + 1j * (p_y - p_y.mean())
    freqs = np.fft.fftfreq(len(t_s), t_s[1] - t_s[0])
    f0 = abs(freqs[np.argmax(np.abs(np.fft.fft(z))[1:]) + 1])
    tt, yy = np.concatenate([t_s, t_s]), np.concatenate([p_x, p_y])
    best = None
    for f_start in (f0, -f0):
        with warnings.catch_warnings():  # the reference does not decay: tau has no covariance
            warnings.simplefilter("ignore", scipy.optimize.OptimizeWarning)
            p, _ = scipy.optimize.curve_fit(
                model, tt, yy, p0=[0.5, 30e-6, 0.5, f_start, 0.0], maxfev=20000,
                bounds=([0.0, 1e-7, -1.0, -np.inf, -np.inf], [1.0, 1.0, 2.0, np.inf, np.inf]))
        cost = float(np.sum((model(tt, *p) - yy) ** 2))
        if best is None or cost < best[0]:
            best = (cost, float(p[3]))
    return best[1]


def test_detuned_ramsey_reads_the_signed_detuning(detuned_backend) -> None:
    dt_s = detuned_backend.dt
    delays_dt = [round(t / dt_s) for t in DELAYS_S]
    t_s = np.array(delays_dt) * dt_s
    number = np.diag([0.0, 1.0])
    reference = {}
    for series in ("X", "Y"):
        probs = []
        for d in delays_dt:
            free = UnitaryGate(np.diag(np.exp(-2j * np.pi * DETUNING_HZ * d * dt_s
                                              * np.diag(number))))
            sv = Statevector(ramsey_xy(d, dt_s, series, free).remove_final_measurements(
                inplace=False))
            probs.append(sv.probabilities([QUBIT])[1])
        reference[series] = np.array(probs)
    f_reference = signed_frequency(t_s, reference["X"], reference["Y"])
    assert f_reference == pytest.approx(OSC_HZ - DETUNING_HZ, abs=1.0)

    circuits = [ramsey_xy(d, dt_s, s) for s in ("X", "Y") for d in delays_dt]
    counts = detuned_backend.run(circuits, shots=SHOTS, seed_simulator=11).result().get_counts()
    p1 = np.array([c.get("1", 0) / SHOTS for c in counts])
    measured = signed_frequency(t_s, p1[:len(delays_dt)], p1[len(delays_dt):])
    print(f"signed fringe frequency: measured {measured:.1f} Hz, reference {f_reference:.1f} Hz")
    assert abs(measured - f_reference) < 15e3, (measured, f_reference)
