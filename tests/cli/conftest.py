"""Parts shared by the ``labqpu`` command's tests (``test_cli_*.py``), as fixtures: ``labqpu``
returns the function that runs the command in a fresh ``LABQPU_HOME``, and ``BELL_PY`` is a
Python file that only defines a circuit. A test that uses one takes the fixture of its name."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

#: The warning filters of a new interpreter (``python -m labqpu.cli``), first match first.
NEW_INTERPRETER_FILTERS = (("ignore", ResourceWarning), ("ignore", ImportWarning),
                           ("ignore", PendingDeprecationWarning), ("ignore", DeprecationWarning),
                           ("default", Warning))


def _in_process(home: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    """``labqpu ARGS`` run by ``labqpu.cli.main`` in this process as the command runs in a
    new one, in ``home`` (its working directory and ``LABQPU_HOME``): its exit code, stdout
    and stderr, with a new interpreter's warning filters (not the suite's, which make
    warnings errors) and the root logger's output on stderr. The environment, working
    directory, root logger and warning filters are put back after."""
    from labqpu.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    before = os.environ.get("LABQPU_HOME"), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    os.environ["LABQPU_HOME"] = str(home)
    os.chdir(home)
    root.handlers[:] = []  # main's logging.basicConfig then logs to the stderr caught here
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.resetwarnings()  # changing the filters also forgets what was shown
            for action, category in NEW_INTERPRETER_FILTERS:
                warnings.simplefilter(action, category, append=True)
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's errors and --help; as the interpreter ends
                if isinstance(exc.code, int) or exc.code is None:
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = handlers, level
        os.chdir(before[1])
        if before[0] is None:
            del os.environ["LABQPU_HOME"]
        else:
            os.environ["LABQPU_HOME"] = before[0]
    return subprocess.CompletedProcess(["labqpu", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def labqpu():
    """``labqpu(home, *args, timeout=60)``: the command's ``CompletedProcess``. A command that
    runs a file that is not OpenQASM (a script, or a circuit file, which is executed) or the
    simulator (``labqpu sim``, which ends its process) runs in a new process, as does every
    command with ``process=True``; the others run in this one (``labqpu.cli.main`` as the
    command calls it, bounded by the suite's per-test timeout, not ``timeout``), which spares
    each the ~2-4 s of a new interpreter importing Qiskit and the transpiler plugins the test
    environment installs."""
    def labqpu(tmp_path: Path, *args: str, timeout: float = 60,
               process: bool = False) -> subprocess.CompletedProcess:
        runs_a_file = "run" in args[:3] and any(
            Path(a).suffix and Path(a).suffix.lower() != ".qasm" for a in args)
        if not (process or runs_a_file or "sim" in args[:3] or any(
                a.lower().endswith(".py") for a in args)):
            return _in_process(tmp_path, args)
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
