"""The benchmarks run against the code as it is.

docs/performance.md and the README send users to ``python benchmarks/run.py``; a change of a
labqpu API it calls (``labqpu.pulse.tables.waveform`` took a second argument) once made it
fail in every mode. Its quick sections that need no reference environment run here; their
timings are printed, never asserted. Every benchmark's imports from labqpu name what labqpu
has (a review found ``benchmarks/transpile.py`` failing at its start: the function it took
from ``labqpu.calibration.rb`` had moved).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("synthesis", "discrimination", "propagation")


@pytest.mark.slow
def test_the_benchmark_runner_runs_its_quick_sections(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--only",
         ",".join(SECTIONS), "--json", str(out)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "| speed-up " in line]
    assert any(line.startswith("waveform cache hit") for line in lines), proc.stdout
    assert len(lines) >= len(SECTIONS)
    assert out.stat().st_size > 0


@pytest.mark.parametrize("script", sorted((REPO / "benchmarks").glob("*.py")),
                         ids=lambda path: path.name)
def test_a_benchmarks_imports_from_labqpu_exist(script: Path) -> None:
    for statement in ast.walk(ast.parse(script.read_text())):
        if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith(
                "labqpu"):
            module = importlib.import_module(statement.module)
            missing = [a.name for a in statement.names
                       if not hasattr(module, a.name) and not _submodule(module, a.name)]
            assert not missing, \
                f"{script.name}:{statement.lineno}: {statement.module} has no {missing}"


def _submodule(module, name: str) -> bool:
    """Whether ``name`` is a submodule of package ``module`` (``from labqpu.backend import
    plugins``)."""
    try:
        importlib.import_module(f"{module.__name__}.{name}")
    except ModuleNotFoundError:
        return False
    return True
