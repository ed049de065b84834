"""docs/pulse.md is executed: its ```python blocks run in order in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "pulse.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_the_promised_examples() -> None:
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 6
    code = "\n".join(blocks)
    for needle in ("Parameter(", "align_sequential", "align_right", 'backend("lab5")',
                   ".draw(", "assign_parameters", "to_bytes", "add_pulse_gate"):
        assert needle in code, needle


@pytest.mark.usefixtures("lab_home")
def test_tutorial_runs(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "pulse_tutorial"}
    try:
        for i, block in enumerate(python_blocks(PAGE.read_text())):
            exec(compile(block, f"{PAGE.name}[block {i}]", "exec"), namespace)
    finally:
        provider = namespace.get("provider")
        if provider is not None:
            provider.close()
    assert (tmp_path / "echo_program.png").stat().st_size > 10_000
    assert (tmp_path / "active_reset_program.png").stat().st_size > 10_000
