"""Built-in devices are named, not pathed: ``LabProvider("lab10")``, ``--config lab10``."""

from __future__ import annotations

from pathlib import Path

import pytest

from labqpu.backend.provider import seed_store
from labqpu.errors import BackendConfigurationError
from labqpu.rack.config import (
    BUILTIN_DEVICES,
    builtin_config_path,
    load_config,
    resolve_config_path,
)
from labqpu.store import CalibrationStore


@pytest.mark.parametrize("name", BUILTIN_DEVICES)
def test_every_builtin_device_ships_wiring_design_and_snapshot(name) -> None:
    path = builtin_config_path(name)
    config = load_config(path)
    assert config.device_name == name
    for sibling in (f"{name}_design.toml", config.seed_snapshot):
        assert (path.parent / sibling).is_file(), sibling


@pytest.mark.parametrize("name", BUILTIN_DEVICES)
def test_a_store_seeded_from_the_shipped_snapshot_says_where_it_came_from(name, tmp_path) -> None:
    """A newcomer's first ``labqpu calibrate history`` line is the shipped snapshot: its notes
    name the device and say that the snapshot ids in them are those of the store it was
    measured in (they once read "gate errors by randomized benchmarking of snapshot 2", a
    snapshot the new store does not hold)."""
    with CalibrationStore(tmp_path / "calibration.sqlite") as store:
        seed_store(store, load_config(builtin_config_path(name)))
        [first] = store.history()
    assert first.snapshot_id == 1
    assert first.notes.startswith(f"shipped with labqpu: {name} calibrated on its firmware "
                                  "simulator (snapshot 3 of the store it was measured in"), \
        first.notes


def test_names_resolve_to_the_shipped_wiring(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab10").mkdir()  # a directory of that name does not shadow the device
    assert resolve_config_path("lab10") == (builtin_config_path("lab10"), True)
    assert resolve_config_path(None) == (builtin_config_path("lab5"), True)
    (tmp_path / "lab5").write_text("")  # a file of that name is the user's wiring file
    assert resolve_config_path("lab5") == (Path("lab5"), False)
    assert resolve_config_path("my_lab.toml") == (Path("my_lab.toml"), False)
    with pytest.raises(BackendConfigurationError, match="built-in devices: lab5, lab10"):
        builtin_config_path("lab99")


@pytest.mark.parametrize("config", [5, 2.5, ["lab5"], b"lab5"])
def test_a_wiring_that_is_no_name_or_path_is_refused_naming_what_it_got(config) -> None:
    """``LabProvider(5)`` once failed with a bare TypeError from pathlib; now a
    ``BackendConfigurationError`` says what a wiring is and what it got."""
    with pytest.raises(BackendConfigurationError, match=r"a lab.toml path or a built-in device "
                                                        r"name \(lab5, .*\), got "):
        resolve_config_path(config)
