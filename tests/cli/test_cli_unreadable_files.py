"""Files the command is given that cannot be read or written: one line naming the file, exit
code 2, nothing started (a review's case: tracebacks, exit code 1).

These tests run as root on CI, where a file's mode does not stop a read; the denial is made
by patching the call that opens the file, as a lab member without the file's permission
meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from labqpu.rack.config import default_config_path

BELL_QASM = ('OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\n'
             "cx q[0],q[1];\nmeasure q -> c;\n")


def deny(monkeypatch, method: str, denied: Path) -> None:
    """``Path.<method>`` raises PermissionError for ``denied`` (as ``open`` does)."""
    original = getattr(Path, method)

    def guarded(self, *args, **kwargs):
        if self.resolve() == denied.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, guarded)


def test_an_unreadable_lab_file_is_named(tmp_path, monkeypatch, labqpu) -> None:
    lab = tmp_path / "lab.toml"
    lab.write_text(default_config_path().read_text())
    deny(monkeypatch, "open", lab)
    proc = labqpu(tmp_path, "status", "--config", str(lab))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"labqpu: lab configuration {lab} cannot be read: Permission denied"]


@pytest.mark.parametrize("command", ["run", "draw"])
def test_an_unreadable_circuit_file_is_named(tmp_path, monkeypatch, labqpu, command) -> None:
    circuit = tmp_path / "bell.qasm"
    circuit.write_text(BELL_QASM)
    deny(monkeypatch, "read_text", circuit)
    proc = labqpu(tmp_path, command, "bell.qasm")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["labqpu: bell.qasm: Permission denied"]


def test_a_drawing_into_a_directory_that_cannot_be_written_is_refused_first(
        tmp_path, monkeypatch, labqpu) -> None:
    (tmp_path / "bell.qasm").write_text(BELL_QASM)
    locked = tmp_path / "locked"
    locked.mkdir()
    import labqpu.cli_draw as cli_draw

    access = cli_draw.os.access
    monkeypatch.setattr(cli_draw.os, "access", lambda path, mode: False
                        if Path(path) == locked.resolve() else access(path, mode))
    started = []
    monkeypatch.setattr("labqpu.LabProvider", lambda *a, **k: started.append(a))
    proc = labqpu(tmp_path, "draw", "bell.qasm", "-o", "locked/bell.png")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"labqpu draw: -o locked/bell.png: directory {locked.resolve()} cannot be written to"]
    assert not started  # refused before a simulator starts


def test_a_scripts_own_file_error_keeps_its_traceback(tmp_path, labqpu) -> None:
    """A review's case: the one-line form of a file the command was given also caught what a
    script run by ``labqpu run`` raised of its own (``open(".")``), hiding where."""
    (tmp_path / "oops.py").write_text("import labqpu\nopen('.')\n")
    proc = labqpu(tmp_path, "run", "oops.py")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr and "IsADirectoryError" in proc.stderr, proc.stderr
    assert 'oops.py", line 2' in proc.stderr, proc.stderr
