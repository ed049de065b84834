"""Parts shared by the ``labqpu`` command's tests (``test_cli_*.py``), as fixtures: ``labqpu``
returns the function that runs the command in a fresh ``LABQPU_HOME``, and ``BELL_PY`` is a
Python file that only defines a circuit. A test that uses one takes the fixture of its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def labqpu():
    def labqpu(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "labqpu.cli", *args],
            capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
            env={**os.environ, "LABQPU_HOME": str(tmp_path)},
        )

    return labqpu


@pytest.fixture(name="BELL_PY", scope="session")
def bell_py():
    return ("from qiskit import QuantumCircuit\n"
            "qc = QuantumCircuit(2, 2)\nqc.h(0)\nqc.cx(0, 1)\nqc.measure([0, 1], [0, 1])\n")
