"""Fixtures shared by the backend unit tests: the shipped wiring and calibration snapshot."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from labqpu.backend.config import default_config_path, load_config
from labqpu.calibration.store import CalibrationStore


@pytest.fixture(scope="session")
def config():
    """The shipped lab5 wiring."""
    return load_config(default_config_path())


@pytest.fixture(scope="session")
def export():
    """The shipped export envelope, parsed as plain JSON (independent of the store)."""
    text = (resources.files("labqpu") / "data" / "lab5_calibration.json").read_text()
    return json.loads(text)


@pytest.fixture(scope="session")
def store(tmp_path_factory, export):
    """A store holding only the shipped snapshot (id 1)."""
    s = CalibrationStore(tmp_path_factory.mktemp("backend-store") / "s.sqlite")
    s.import_json(export)
    yield s
    s.close()


@pytest.fixture(scope="session")
def snapshot(store):
    """The shipped snapshot as the store returns it."""
    return store.get(1)
