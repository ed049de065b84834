"""pytest fixtures for testing code against the firmware simulator.

Enable in a ``conftest.py`` with ``pytest_plugins = ["labqpu.testing"]``; then

    def test_my_experiment(lab_backend):
        job = lab_backend.run(transpile(qc, lab_backend), shots=1000)

``lab_provider`` starts one simulator process per test session, with its own calibration
store in a temporary ``LABQPU_HOME`` seeded from the shipped snapshot, and stops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from labqpu.backend.backend import LabBackend
from labqpu.backend.provider import LabProvider
from labqpu.rack.config import default_config_path


@pytest.fixture(scope="session")
def lab_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``LABQPU_HOME`` for the session (calibration stores live there)."""
    home = str(tmp_path_factory.mktemp("labqpu-home"))
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


@pytest.fixture(scope="session")
def quiet_lab_provider(lab_home: str, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[LabProvider]:
    """A ``LabProvider`` on a simulator of the default device whose flux noise, quasi-static
    noise and drift are off (``[simulator] noise = false``; thermal equilibrium stays)."""
    text = default_config_path().read_text()
    if "\n[simulator]\n" not in text:
        raise RuntimeError(f"{default_config_path()} has no [simulator] table to switch noise off")
    path = tmp_path_factory.mktemp("quiet-lab") / "lab.toml"
    path.write_text(text.replace("\n[simulator]\n", "\n[simulator]\nnoise = false\n", 1))
    provider = LabProvider(path, simulator=True)
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="session")
def quiet_lab_backend(quiet_lab_provider: LabProvider) -> LabBackend:
    """The default device's backend on a simulator without noise and drift."""
    return quiet_lab_provider.backend("lab5")
