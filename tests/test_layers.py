"""The package layers of docs/architecture.md are a contract: import-linter checks them.

Each contract also gets a test that breaks it on a copy of the package, so a contract that
silently stopped checking anything (a renamed module, a typo in pyproject.toml) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = {c["id"]: c["name"] for c in
             tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"][
                 "contracts"]}


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([exe, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_import_contracts_hold() -> None:
    out = lint_imports(REPO, REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in out.stdout
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in out.stdout


#: contract id -> (module to edit, import that breaks the contract)
VIOLATIONS = {
    "layers": ("store/validation.py", "import labqpu.backend.target"),
    "simulator-imports": ("firmware_sim/physics.py", "import labqpu.store"),
    "simulator-apart": ("backend/results.py", "import labqpu.firmware_sim.device"),
    "pulse-below-drivers": ("pulse/program.py", "import labqpu.drivers.scpi"),
    "calibration-through-the-backend": ("calibration/experiments.py",
                                        "import labqpu.rack.hardware"),
    "no-cycles": ("store/parameter.py", "import labqpu.store.snapshot"),
}


def test_every_contract_has_a_violation_test() -> None:
    assert set(VIOLATIONS) == set(CONTRACTS)


@pytest.mark.parametrize("contract", sorted(VIOLATIONS))
def test_contract_fails_when_broken(tmp_path: Path, contract: str) -> None:
    module, bad_import = VIOLATIONS[contract]
    shutil.copytree(REPO / "labqpu", tmp_path / "labqpu",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "labqpu" / module
    target.write_text(target.read_text() + f"\n{bad_import}\n")
    out = lint_imports(tmp_path, tmp_path)
    assert out.returncode != 0, out.stdout
    assert f"{CONTRACTS[contract]} BROKEN" in out.stdout, out.stdout
