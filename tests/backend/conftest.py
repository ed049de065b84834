"""Parts shared by the backend's end-to-end tests (``test_end_to_end_*.py``): ``bell``, the
circuit most of them run, as a fixture that returns the function building it."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit


@pytest.fixture(scope="session")
def bell():
    def bell(a: int = 0, b: int = 1) -> QuantumCircuit:
        qc = QuantumCircuit(5, 2, name=f"bell_{a}{b}")
        qc.h(a)
        qc.cx(a, b)
        qc.measure([a, b], [0, 1])
        return qc

    return bell
