"""A job whose IQ results one reply frame cannot carry is refused by ``run()`` before anything
is sent (a review's case: 350 acquisitions at 100 000 shots played for 129 s on the rack, then
the fetch of its 280 MB of IQ was refused and the job failed)."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, transpile

from labqpu.drivers.controller import ControllerClient
from labqpu.drivers.protocol import MAX_FRAME_BYTES
from labqpu.errors import InvalidRunInputError


def _counters(backend) -> tuple[int, int]:
    with ControllerClient(backend.config.controllers[0].endpoint, timeout_s=5.0) as client:
        status = client.status()
    return int(status["uploads_total"]), int(status["runs_total"])


def _readouts(rounds: int) -> QuantumCircuit:
    qc = QuantumCircuit(5, 5 * rounds, name=f"{rounds} rounds of readouts")
    for r in range(rounds):
        qc.measure(range(5), range(5 * r, 5 * r + 5))
    return qc


def test_iq_beyond_one_reply_frame_is_refused_before_sending(lab_backend) -> None:
    native = transpile(_readouts(68), lab_backend)  # 340 acquisitions
    most = MAX_FRAME_BYTES // 8 // 340
    before = _counters(lab_backend)
    with pytest.raises(InvalidRunInputError) as info:
        lab_backend.run(native, shots=100_000)
    assert info.value.option == "shots"
    assert ("program '68 rounds of readouts': 100000 shots x 340 acquisitions on controller "
            "ctrl0 are 34000000 IQ results (272000000 bytes)") in str(info.value)
    assert f"at most {most} shots; nothing was sent" in str(info.value)
    assert _counters(lab_backend) == before


def test_a_controller_stating_fewer_result_points_is_obeyed(lab_backend, monkeypatch) -> None:
    caps = {name: {**c, "max_result_points": 150} for name, c in
            lab_backend._capabilities.items()}
    monkeypatch.setattr(lab_backend, "_capabilities", caps)
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[0])
    with pytest.raises(InvalidRunInputError, match="beyond the 150 one run returns"):
        lab_backend.run(native, shots=200)
    counts = lab_backend.run(native, shots=150).result(timeout=60).get_counts()
    assert sum(counts.values()) == 150
