"""Fixtures shared across the test tree: the shipped wiring and calibration snapshot."""

from __future__ import annotations

import json
import os
import tempfile
from importlib import resources

import numpy as np
import pytest

from labqpu.rack.config import default_config_path, load_config
from labqpu.store import CalibrationStore

pytest_plugins = ["labqpu.testing"]


@pytest.fixture(scope="session", autouse=True)
def temporary_files_of_the_test_run(tmp_path_factory):
    """The temporary directory of the tests' processes (``TMPDIR``, inherited by the
    simulators and commands they start): a folder of the test run, which pytest's own
    clean-up removes. A shared rack's lock files stay in the temporary directory by design
    (``labqpu.rack.lock``); the tests' racks on fixed ports left theirs in the machine's."""
    folder = tmp_path_factory.mktemp("tmpdir")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None
    yield folder
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def peak_rss_bytes():
    """``peak_rss_bytes(pid)``: the process's peak resident memory so far (``VmHWM``, bytes;
    Linux's ``/proc``)."""
    def peak_rss_bytes(pid: int) -> int:
        with open(f"/proc/{pid}/status") as status:
            line = next(line for line in status if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    return peak_rss_bytes


@pytest.fixture(scope="session")
def config():
    """The shipped lab5 wiring."""
    return load_config(default_config_path())


@pytest.fixture(scope="session")
def shared_bias_config(config):
    """The shipped lab5 wiring with qubit 1's flux bias moved onto qubit 0's channel."""
    from dataclasses import replace

    qubits = dict(config.qubits)
    qubits[1] = replace(qubits[1], flux_bias=qubits[0].flux_bias)
    return replace(config, qubits=qubits)


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


def three_level_ladders(k: int) -> list[np.ndarray]:
    """The lowering operator of each of ``k`` three-level transmons on their product space
    (transmon 0 the most significant factor): the exact references' building block."""
    lowering = np.diag(np.sqrt([1.0, 2.0]), 1)
    out = []
    for i in range(k):
        op = np.ones((1, 1))
        for j in range(k):
            op = np.kron(op, lowering if i == j else np.eye(3))
        out.append(op)
    return out


@pytest.fixture(scope="session")
def ladders():
    """:func:`three_level_ladders`, for the exact references written in the tests."""
    return three_level_ladders


def process_cpu_s(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (s), from Linux's ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="session")
def cpu_s():
    """:func:`process_cpu_s`, for the tests that check a server's loop does not spin."""
    return process_cpu_s


@pytest.fixture
def first_watch_round_fails(monkeypatch) -> list:
    """The watch's first round fails (its ``run_graph`` raises ``JobError`` "the controller
    went away"), the next ones run; returns the list that counts the rounds begun."""
    from qiskit.providers import JobError

    from labqpu.calibration import watch as watch_module

    real, calls = watch_module.run_graph, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise JobError("the controller went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(watch_module, "run_graph", flaky)
    return calls


@pytest.fixture
def numba_interrupt() -> SystemError:
    """What numba's dispatcher raised when Ctrl-C landed while it loaded a cached kernel (a
    calibration's first ``flat_top`` in a test run): a ``SystemError`` caused by the
    ``KeyboardInterrupt``, as CPython reports a call that returned with an exception set."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        wrapped = SystemError("CPUDispatcher(<function flat_top>) returned a result with an "
                              "exception set")
        wrapped.__cause__ = interrupt
        return wrapped
