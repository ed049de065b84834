"""pytest fixtures for testing code against the firmware simulator.

Enable in a ``conftest.py`` with ``pytest_plugins = ["labqpu.testing"]``; then

    def test_my_experiment(lab_backend):
        job = lab_backend.run(transpile(qc, lab_backend), shots=1000)

``lab_provider`` starts one simulator process per test session, with its own calibration
store in a temporary ``LABQPU_HOME`` seeded from the shipped snapshot, and stops it at the end.

The shipped snapshots age with the wall clock: a day after they were measured, the calibration
runner finds every value past its age limit and measures it again. So the session's stores
hold :func:`restamped` copies, as if measured an hour ago, and a test's outcome does not depend on
the day it runs; :func:`seed_fresh_store` does the same for a ``LABQPU_HOME`` of a test's own.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from labqpu.backend.backend import LabBackend
from labqpu.backend.provider import LabProvider
from labqpu.rack.config import BUILTIN_DEVICES, default_config_path, load_config
from labqpu.store import CalibrationStore
from labqpu.store.snapshot import Snapshot


def restamped(export: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A copy of an export envelope (``CalibrationStore.export_json``) whose measurement times
    and creation time all move by one offset, so that the newest measurement is at ``now``
    (default: an hour before the current UTC time, inside every default age limit and early
    enough for a test to date a value between the snapshot and the present). Values,
    experiments and the order of measurements stay; the content hash is recomputed."""
    out = copy.deepcopy(dict(export))
    entries = [entry for section in ("qubits", "pairs", "gates")
               for subject in out["document"].get(section, {}).values()
               for entry in subject.values()
               if isinstance(entry, dict) and "timestamp" in entry]
    if not entries:
        raise ValueError("the export holds no measured values to restamp")
    newest = max(datetime.fromisoformat(entry["timestamp"]) for entry in entries)
    shift = (now or datetime.now(UTC) - timedelta(hours=1)) - newest
    for entry in entries:
        entry["timestamp"] = (datetime.fromisoformat(entry["timestamp"]) + shift).isoformat()
    out["created"] = (datetime.fromisoformat(out["created"]) + shift).isoformat()
    out["content_hash"] = Snapshot(out["document"]).content_hash
    return out


def shipped_export(device: str = "lab5") -> dict[str, Any]:
    """The calibration snapshot shipped for built-in ``device``, as its export envelope."""
    if device not in BUILTIN_DEVICES:
        raise ValueError(f"no built-in device {device!r} (built in: {', '.join(BUILTIN_DEVICES)})")
    path = resources.files("labqpu") / "data" / f"{device}_calibration.json"
    return json.loads(path.read_text())


def seed_fresh_store(home: str | Path, device: str = "lab5") -> Path:
    """Create ``home/device/calibration.sqlite`` holding the :func:`restamped` shipped snapshot
    of built-in ``device``, where ``LabProvider`` and ``labqpu`` look with ``LABQPU_HOME=home``;
    returns its path. An existing store is refused (``FileExistsError``)."""
    path = Path(home) / device / "calibration.sqlite"
    if path.exists():
        raise FileExistsError(f"{path} exists: a fresh store is seeded only once")
    path.parent.mkdir(parents=True, exist_ok=True)
    with CalibrationStore(path) as store:
        store.import_json(restamped(shipped_export(device)))
    return path


def use_fresh_home(monkeypatch: pytest.MonkeyPatch, home: str | Path) -> None:
    """Point ``LABQPU_HOME`` at ``home`` for one test and :func:`seed_fresh_store` each built-in
    device there."""
    monkeypatch.setenv("LABQPU_HOME", str(home))
    for device in BUILTIN_DEVICES:
        seed_fresh_store(home, device)


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``LABQPU_HOME`` for the session, with a store per built-in device holding
    its shipped snapshot as if measured an hour ago."""
    home = str(tmp_path_factory.mktemp("labqpu-home"))
    for device in BUILTIN_DEVICES:
        seed_fresh_store(home, device)
    old = os.environ.get("LABQPU_HOME")
    os.environ["LABQPU_HOME"] = home
    yield home
    if old is None:
        os.environ.pop("LABQPU_HOME", None)
    else:
        os.environ["LABQPU_HOME"] = old


@pytest.fixture(scope="session")
def lab_provider(lab_home: str) -> Iterator[LabProvider]:
    """A ``LabProvider()`` on the embedded simulator of the default device, for the session."""
    provider = LabProvider()
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="session")
def lab_backend(lab_provider: LabProvider) -> LabBackend:
    """The default device's backend ("lab5") on the simulator."""
    return lab_provider.backend("lab5")


def write_quiet_wiring(folder: str | Path) -> Path:
    """Write ``folder/lab.toml``: the default device's wiring whose simulator has flux noise,
    quasi-static noise and drift off (``[simulator] noise = false``; thermal equilibrium
    stays), with a store of its own, ``folder/calibration.sqlite``, holding the
    :func:`restamped` shipped snapshot. Returns the wiring file's path."""
    folder = Path(folder)
    text = default_config_path().read_text()
    for line in ("\n[simulator]\n", '\nstore = ""\n'):
        if line not in text:
            raise RuntimeError(f"{default_config_path()} has no line {line.strip()!r} to edit")
    store = folder / "calibration.sqlite"
    with CalibrationStore(store) as seeded:
        seeded.import_json(restamped(shipped_export(load_config(default_config_path())
                                                    .device_name)))
    path = folder / "lab.toml"
    store_line = f"\nstore = {json.dumps(str(store), ensure_ascii=False)}\n"  # a TOML string
    path.write_text(text.replace("\n[simulator]\n", "\n[simulator]\nnoise = false\n", 1)
                    .replace('\nstore = ""\n', store_line, 1))
    return path


@pytest.fixture(scope="session")
def quiet_lab_provider(lab_home: str, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[LabProvider]:
    """A ``LabProvider`` on :func:`write_quiet_wiring`'s rack: a simulator of the default device
    without noise and drift, and a store of its own (so that what the tests of the noisy
    ``lab_backend`` commit never reaches it)."""
    provider = LabProvider(write_quiet_wiring(tmp_path_factory.mktemp("quiet-lab")),
                           simulator=True)
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="session")
def quiet_lab_backend(quiet_lab_provider: LabProvider) -> LabBackend:
    """The default device's backend on a simulator without noise and drift."""
    return quiet_lab_provider.backend("lab5")
