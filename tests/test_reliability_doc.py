"""docs/reliability.md names a test for each promise: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = (REPO / "docs" / "reliability.md").read_text()


def resolve(path: str) -> str:
    """A test file's path from the repository root; the page may give only its name."""
    if (REPO / path).is_file():
        return path
    found = sorted((REPO / "tests").rglob(Path(path).name))
    assert len(found) == 1, f"{path} names {len(found)} files; give its path from the root"
    return str(found[0].relative_to(REPO))


def named_tests() -> list[tuple[str, str]]:
    """(file, test) pairs: ``path::name`` and the ``::name`` shorthands that follow it."""
    out = []
    rows = [line for line in PAGE.splitlines() if line.startswith("| ")]
    for cell in (row.rstrip(" |").rsplit(" | ", 1)[-1] for row in rows):
        current = None
        for path, name in re.findall(r"`([\w/]+\.py)?(?:::(\w+))?`", cell):
            current = resolve(path) if path else current
            if name:
                out.append((current, name))
    return out


def test_the_page_names_tests() -> None:
    assert len(named_tests()) >= 25


@pytest.mark.parametrize(("path", "name"), named_tests())
def test_every_named_test_exists(path: str, name: str) -> None:
    assert path is not None, name
    tree = ast.parse((REPO / path).read_text())
    functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert name in functions, f"{path}::{name}"
