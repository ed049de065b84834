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


def write_bell(directory: Path, name: str = "bell") -> None:
    """A ``bell.py`` defining a 2-qubit Bell circuit ``qc`` (called ``name``; "": Qiskit's
    generated name) in ``directory``."""
    (directory / "bell.py").write_text(
        "from qiskit import QuantumCircuit\n"
        f"qc = QuantumCircuit(2, 2{f', name={name!r}' if name else ''})\nqc.h(0)\n"
        "qc.cx(0, 1)\nqc.measure([0, 1], [0, 1])\n")


def test_draw_py_and_qasm(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_bell(tmp_path)
    done = labqpu(tmp_path, "draw", "bell.py", "-o", "drawn")  # no suffix: a PNG
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "drawn.png").read_bytes()[:8] == PNG
    assert done.stdout.startswith("drawn.png: bell on lab5") and "2 acquisitions" in done.stdout
    (tmp_path / "ghz.qasm").write_text(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\n'
        "h q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n")
    done = labqpu(tmp_path, "draw", "ghz.qasm", "--time-range-ns", "0", "300")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ghz.png").read_bytes()[:8] == PNG
    assert "3 acquisitions" in done.stdout
    # into a directory (a review's case: ``-o plots/`` wrote ``plots.png`` beside it)
    (tmp_path / "plots").mkdir()
    for given in ("plots", "plots/"):
        done = labqpu(tmp_path, "draw", "bell.py", "-o", given)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "plots" / "bell.png").read_bytes()[:8] == PNG
        assert not (tmp_path / "plots.png").exists()


@pytest.mark.parametrize(("name", "shown"), [("", "bell on lab5"), ("epr", "epr on lab5")])
def test_draw_names_a_circuit_after_its_file_unless_it_has_a_name(tmp_path: Path, name: str,
                                                                   shown: str) -> None:
    """Qiskit names an unnamed circuit ``circuit-<n>``; the drawing (and its summary line)
    says the file's name instead, and keeps a name the circuit was given."""
    pytest.importorskip("matplotlib")
    write_bell(tmp_path, name)
    done = labqpu(tmp_path, "draw", "bell.py", "-o", "bell.png")
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout and "circuit-" not in done.stdout


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.py", "x = 1\n", "no QuantumCircuit named `circuit` or `qc`"),
    ("circuit.txt", "", "give a .py or .qasm file"),
    ("broken.py", "import math\nqc = undefined_name\n",
     "broken.py, line 2: NameError: name 'undefined_name' is not defined"),
])
def test_draw_refuses_files_without_a_circuit(tmp_path: Path, name: str, text: str,
                                              message: str) -> None:
    (tmp_path / name).write_text(text)
    done = labqpu(tmp_path, "draw", name)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


GUARDED_WORK = [
    # the work outside the guard, before it, in its else branch, in a class body
    "pathlib.Path('ran.txt').write_text('x')\nif __name__ == '__main__':\n    pass\n",
    "if __name__ == '__main__':\n    pass\nelse:\n    pathlib.Path('ran.txt').write_text('x')\n",
    "class K:\n    pathlib.Path('ran.txt').write_text('x')\nif __name__ == '__main__':\n    pass\n",
]


@pytest.mark.parametrize("tail", ["pathlib.Path('ran.txt').write_text('x')\n", *GUARDED_WORK])
def test_draw_runs_no_script_whose_work_is_outside_a_main_block(tmp_path: Path,
                                                                 tail: str) -> None:
    """A newcomer's case: ``labqpu draw`` of a script that builds ``qc`` and then runs it (or
    writes a file) ran all of it: a job on the rack, a file written, before the drawing; and
    a review's: a ``__main__`` block anywhere let the rest of the file run. What runs when the
    file is read (all but the block and function bodies) may import only what a circuit file
    does; otherwise draw refuses, running nothing."""
    body = ("import pathlib\nfrom qiskit import QuantumCircuit\nqc = QuantumCircuit(1, 1)\n"
            "qc.x(0)\nqc.measure(0, 0)\n")
    (tmp_path / "side.py").write_text(body + tail)
    done = labqpu(tmp_path, "draw", "side.py")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "side.py is a script" in done.stderr and "imports pathlib" in done.stderr
    assert not (tmp_path / "ran.txt").exists() and not (tmp_path / "side.png").exists()


def test_draw_reads_a_script_whose_work_is_in_a_main_block(tmp_path: Path) -> None:
    """Imports and work in the ``__main__`` block (or a function it calls) do not run when
    draw reads the circuit; a guard with ``and`` counts too."""
    pytest.importorskip("matplotlib")
    (tmp_path / "guarded.py").write_text(
        "from qiskit import QuantumCircuit\nqc = QuantumCircuit(1, 1)\nqc.x(0)\n"
        "qc.measure(0, 0)\n\n\ndef main(path='ran.txt'):\n    import pathlib\n"
        "    pathlib.Path(path).write_text('x')\n\n\n"
        "if __name__ == '__main__' and qc is not None:\n    import sys\n    main()\n")
    done = labqpu(tmp_path, "draw", "guarded.py")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "guarded.png").read_bytes()[:8] == PNG
    assert not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--dpi", "0"], "--dpi 0: give a resolution from 10 to 1200"),
    (["--dpi", "100000"], "--dpi 100000: give a resolution from 10 to 1200"),
    (["--time-range-ns", "0", "nan"], "--time-range-ns 0 nan: give two finite times"),
    (["--time-range-ns", "300", "100"], "--time-range-ns 300 100: give two finite times"),
    (["--layout", "0", "0"], "--layout 0 0: a qubit is named twice"),
    (["--layout", "0"], "--layout 0: give one physical qubit for each of the circuit's 2"),
    (["-o", "no-such-dir/x.png"], "-o no-such-dir/x.png: directory"),
])
def test_draw_refuses_bad_options_in_one_line(tmp_path: Path, options: list[str],
                                              message: str) -> None:
    """Checked before the simulator starts: exit code 2, the option named, no traceback and
    no file written."""
    write_bell(tmp_path)
    done = labqpu(tmp_path, "draw", "bell.py", *options)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "bell.png").exists()


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


def test_draw_shows_the_program_run_plays_for_a_dynamic_circuit(tmp_path: Path,
                                                                 lab_backend) -> None:
    """A circuit with ``if_else`` and ``reset`` is drawn as ``run()`` plays it: feed-forward
    blocks and an active reset, the program ``backend.compile`` gives (not a refusal, nor a
    passive wait)."""
    pytest.importorskip("matplotlib")
    from qiskit import transpile

    source = ("from qiskit import QuantumCircuit\n"
              "qc = QuantumCircuit(1, 2, name='dyn')\nqc.x(0)\nqc.measure(0, 0)\n"
              "with qc.if_test((qc.clbits[0], 1)):\n    qc.x(0)\n"
              "qc.reset(0)\nqc.measure(0, 1)\n")
    (tmp_path / "dyn.py").write_text(source)
    done = labqpu(tmp_path, "draw", "dyn.py", "--layout", "0", "-o", "dyn.png")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "dyn.png").read_bytes()[:8] == PNG
    namespace: dict = {}
    exec(source, namespace)
    native = transpile(namespace["qc"], lab_backend, initial_layout=[0], seed_transpiler=1)
    program = lab_backend.compile(native)
    assert program.has_feedforward and len(program.block_acq) >= 2
    assert (f"{program.duration_samples} samples, {len(program.play_port)} plays, "
            f"{len(program.acq_port)} acquisitions") in done.stdout


def test_each_acquisition_window_is_shaded_strongly_on_its_own_input_row_only(
        lab_backend) -> None:
    """Two measurements on qubits with inputs of their own, one after the other: each input
    row shades its own window strongly and the other's lightly, like the output rows (every
    window was shaded strongly on every input row, so only the labels told them apart)."""
    from matplotlib.patches import Polygon, Rectangle

    from labqpu import pulse
    from labqpu.pulse.drawing import draw_program

    with pulse.build(lab_backend) as builder, pulse.align_sequential():
        pulse.measure(0, clbit=0)
        pulse.measure(4, clbit=1)
    program = builder.build()
    inputs = sorted({int(p) for p in program.acq_port})
    assert len(inputs) == 2, "qubits 0 and 4 are read on inputs of their own"
    assert len(set(program.acq_start.tolist())) == 2, "one window after the other"
    windows = {int(p): (int(s), int(s) + int(d)) for s, d, p in zip(
        program.acq_start, program.acq_duration, program.acq_port, strict=True)}
    figure = draw_program(program, channels=lab_backend.channels)
    rows = [ax for ax in figure.axes if ax.get_ylabel().startswith("acquire")]
    assert len(rows) == 2
    ns = 1e9 / program.sample_rate_hz
    for ax, port in zip(rows, inputs, strict=True):
        spans = {}
        for patch in ax.patches:
            if isinstance(patch, Polygon | Rectangle) and patch.get_alpha() in (0.06, 0.35):
                x = patch.get_xy() if isinstance(patch, Polygon) else [patch.get_xy()]
                spans[round(min(v[0] for v in x) / ns)] = patch.get_alpha()
        assert spans[windows[port][0]] == 0.35
        other = next(p for p in inputs if p != port)
        assert spans[windows[other][0]] == 0.06


PARAMETRISED = ('OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float theta;\nqubit[1] q;\n'
                'bit[1] c;\nrx(theta) q[0];\nc[0] = measure q[0];\n')
SIX_QUBITS = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[6];\ncreg c[6];\nh q[0];\n'
              'measure q -> c;\n')


@pytest.mark.parametrize(("command", "text", "message"), [
    ("run", PARAMETRISED, "labqpu run: circuit 'circuit' has unbound parameter(s) theta, and "
                          "the command line gives them no values"),
    ("draw", PARAMETRISED, "labqpu draw: circuit 'circuit' has unbound parameter(s) theta"),
    ("draw", SIX_QUBITS, "labqpu draw: the 6-qubit circuit 'circuit' does not fit lab5, which "
                         "has 5 qubits"),
])
def test_a_circuit_the_command_line_cannot_play_is_named_plainly(
        tmp_path: Path, command: str, text: str, message: str) -> None:
    """``input float theta``: run and draw advised ``parameter_binds``, which the command line
    has no way to give, and only after starting the simulator; a circuit wider than the
    device got Qiskit's coupling-map message from draw (run's own was already plain)."""
    (tmp_path / "circuit.qasm").write_text(text)
    done = labqpu(tmp_path, command, "circuit.qasm")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("text", "circuit_file"), [
    ("from qiskit import QuantumCircuit\nqc = QuantumCircuit(1)\n", True),
    ("import numpy as np\nfrom math import pi\nfrom qiskit.circuit.library import QFT\n"
     "circuit = QFT(3)\n", True),
    ("circuit: object = None\n", True),
    ("qc, other = 1, 2\n", True),
    ("if True:\n    qc = 1\n", True),
    ("for qc in [1]:\n    pass\n", True),
    ("with open('x') as circuit:\n    pass\n", True),
    ("print(qc := 1)\n", True),
    # a script: it may run jobs of its own (through labqpu, a lab's package wrapping it, a
    # helper beside it) or take options of its own
    ("import os, labqpu.testing\nqc = 1\n", False),
    ("def f():\n    from labqpu import LabProvider\nqc = 1\n", False),
    ("import rack\nqc = 1\n", False),
    ("from . import helpers\nqc = 1\n", False),
    ("import labqpu_extra\nqc = 1\n", False),
    ("import sys\nqc = int(sys.argv[1])\n", False),
    ("import click\nqc = 1\n", False),
    ("import optparse\nqc = 1\n", False),
    ("qc = __import__('argparse')\n", False),
    ("qc = 1\nexec('import labqpu')\n", False),
    ("qc = None\nif __name__ == '__main__':\n    qc = 1\n", False),
    ("qc = 1\nif '__main__' == __name__:\n    print(qc)\n", False),
    # nothing in its own scope binds qc or circuit
    ("def f():\n    qc = 1\n", False),
    ("class C:\n    qc = 1\n", False),
    ("res = [qc for qc in [1]]\n", False),
    ("from qiskit import circuit\n", False),
    ("qc: object\n", False),
    ("from qiskit import QuantumCircuit\nother = QuantumCircuit(1)\n", False),
])
def test_which_python_files_run_takes_as_circuit_files(tmp_path: Path, text: str,
                                                         circuit_file: bool) -> None:
    from labqpu.cli_draw import is_circuit_script

    path = tmp_path / "file.py"
    path.write_text(text)
    assert is_circuit_script(path) is circuit_file


def test_a_python_file_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    from labqpu.cli_draw import is_circuit_script

    path = tmp_path / "file.py"
    path.write_text("x = 1\nqc = (\n")
    with pytest.raises(ValueError, match=r"^labqpu run: .*file\.py, line 2: SyntaxError: "):
        is_circuit_script(path)
    path.write_bytes(b"qc = 1\0\n")
    with pytest.raises(ValueError, match=r"^labqpu run: \S*file\.py: SyntaxError: .*null"):
        is_circuit_script(path)
