"""docs/interface.md: every public name it lists exists, and the versions it states are the
code's."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import labqpu
from labqpu.drivers.protocol import PROTOCOL_VERSION
from labqpu.store import EXPORT_FORMAT, SCHEMA_VERSION

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "interface.md").read_text()
TABLE = PAGE[PAGE.index("## What is public"):PAGE.index("Also public")]
PUBLIC = re.findall(r"^\| `([\w.]+)` \|", TABLE, flags=re.MULTILINE)


def resolve(dotted: str) -> object:
    """The module or attribute a dotted name denotes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_the_table_lists_names() -> None:
    assert len(PUBLIC) >= 15
    assert "labqpu.LabProvider" in PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_exists(name: str) -> None:
    assert resolve(name) is not None


def test_versions_on_the_page_are_the_codes() -> None:
    assert f"**labqpu interface version {labqpu.INTERFACE_VERSION}**" in PAGE
    assert f"| controller wire protocol | {PROTOCOL_VERSION} |" in PAGE
    assert f"| calibration export JSON | `{EXPORT_FORMAT}` |" in PAGE
    assert f"| calibration store schema | {SCHEMA_VERSION} |" in PAGE


def test_pulse_all_names_exist() -> None:
    import labqpu.pulse

    for name in labqpu.pulse.__all__:
        assert hasattr(labqpu.pulse, name), name
