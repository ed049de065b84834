"""Fixtures shared across the test tree: the shipped wiring and calibration snapshot."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from labqpu.rack.config import default_config_path, load_config
from labqpu.store import CalibrationStore

pytest_plugins = ["labqpu.testing"]


@pytest.fixture(scope="session")
def config():
    """The shipped lab5 wiring."""
    return load_config(default_config_path())


@pytest.fixture(scope="session")
def channels(config):
    """The shipped lab5 wiring as the pulse compiler sees it."""
    return config.channels


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
