"""The ``labqpu`` command: options that would be ignored are refused, and user errors are one
line on stderr with exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def labqpu(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labqpu.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
        env={**os.environ, "LABQPU_HOME": str(tmp_path)},
    )


@pytest.mark.parametrize(("options", "named"), [
    (["--config", "lab.toml"], "--config"),
    (["--shots", "10"], "--shots"),
    (["--seed", "3"], "--seed"),
    (["--config", "lab.toml", "--shots", "10"], "--config/--shots"),
])
def test_demo_options_with_a_script_are_refused(tmp_path, options, named):
    script = tmp_path / "script.py"
    script.write_text("raise SystemExit('the script must not run')\n")
    proc = labqpu(tmp_path, "run", *options, str(script))
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr
    assert "after its path" in proc.stderr
    assert f"labqpu run {script} {' '.join(options)}" in proc.stderr
    assert "must not run" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_options_after_the_script_go_to_the_script(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import sys\nprint(sys.argv[1:])\n")
    proc = labqpu(tmp_path, "run", str(script), "--config", "lab.toml", "--shots", "10")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['--config', 'lab.toml', '--shots', '10']"


def test_demo_and_script_together_are_refused(tmp_path):
    proc = labqpu(tmp_path, "run", "--demo", "script.py")
    assert proc.returncode == 2
    assert "not both" in proc.stderr


def test_demo_with_zero_shots_is_a_one_line_error(tmp_path):
    proc = labqpu(tmp_path, "run", "--demo", "--shots", "0", timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("labqpu: ")
    assert "shots" in lines[0]


def test_missing_script(tmp_path):
    proc = labqpu(tmp_path, "run", "missing.py")
    assert proc.returncode == 2
    assert "missing.py" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sim_with_missing_wiring_file(tmp_path):
    proc = labqpu(tmp_path, "sim", "/nonexistent.toml")
    assert proc.returncode == 2
    assert "nonexistent.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_with_missing_config_is_a_one_line_error(tmp_path):
    proc = labqpu(tmp_path, "run", "--demo", "--config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"labqpu: lab configuration file not found: {tmp_path / 'nope.toml'}"]


def test_script_raising_a_configuration_error(tmp_path):
    # A script's user errors get the same treatment as the demo's.
    script = tmp_path / "script.py"
    script.write_text("from labqpu import LabProvider\nLabProvider('nope.toml')\n")
    proc = labqpu(tmp_path, "run", str(script))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "labqpu: lab configuration file not found: nope.toml"


def test_bad_config_is_a_one_line_error(tmp_path):
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    bad = tmp_path / "lab.toml"
    bad.write_text(text.replace('endpoint = "tcp://127.0.0.1:0"', 'endpoint = "abc"'))
    proc = labqpu(tmp_path, "status", "--config", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "[[controllers]] ctrl0: endpoint" in lines[0]
