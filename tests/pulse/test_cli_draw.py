"""``labqpu draw``: a circuit file in, the PNG of its compiled program out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def labqpu(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labqpu.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "LABQPU_HOME": str(tmp_path)})


def write_bell(directory: Path) -> None:
    """A ``bell.py`` defining a 2-qubit Bell circuit ``qc`` in ``directory``."""
    (directory / "bell.py").write_text(
        "from qiskit import QuantumCircuit\n"
        "qc = QuantumCircuit(2, 2, name='bell')\nqc.h(0)\nqc.cx(0, 1)\n"
        "qc.measure([0, 1], [0, 1])\n")


def test_draw_py_and_qasm(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_bell(tmp_path)
    done = labqpu(tmp_path, "draw", "bell.py", "-o", "bell.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bell.png").read_bytes()[:8] == PNG
    assert "bell on lab5" in done.stdout and "2 acquisitions" in done.stdout
    (tmp_path / "ghz.qasm").write_text(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\n'
        "h q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n")
    done = labqpu(tmp_path, "draw", "ghz.qasm", "--time-range-ns", "0", "300")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ghz.png").read_bytes()[:8] == PNG
    assert "3 acquisitions" in done.stdout


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.py", "x = 1\n", "no QuantumCircuit named `circuit` or `qc`"),
    ("circuit.txt", "", "give a .py or .qasm file"),
])
def test_draw_refuses_files_without_a_circuit(tmp_path: Path, name: str, text: str,
                                              message: str) -> None:
    (tmp_path / name).write_text(text)
    done = labqpu(tmp_path, "draw", name)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_draw_a_rung_of_lab10_on_the_qubits_given(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_bell(tmp_path)
    done = labqpu(tmp_path, "draw", "bell.py", "--config", "lab10", "--layout", "0", "5",
                  "-o", "rung.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rung.png").read_bytes()[:8] == PNG
    assert "bell on lab10" in done.stdout
    done = labqpu(tmp_path, "draw", "bell.py", "--layout", "0")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
