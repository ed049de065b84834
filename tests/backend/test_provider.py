"""Provider lifecycle: the simulator process it starts, wiring files, backend lookup."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.providers import JobError, QiskitBackendNotFoundError

from labqpu import BackendConfigurationError, LabProvider
from labqpu.errors import CalibrationError, HardwareUnavailableError
from labqpu.rack.config import default_config_path
from labqpu.rack.hardware_queue import LocalHardwareQueue
from labqpu.store import CalibrationStore
from labqpu.testing import seed_fresh_store

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _wait_dead(pid: int, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().split()[3]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return out


def test_unknown_backend_lists_the_existing_names(lab_provider) -> None:
    with pytest.raises(QiskitBackendNotFoundError, match="lab5"):
        lab_provider.backend("lab7")
    assert lab_provider.get_backend("lab5") is lab_provider.backend("lab5")
    assert [b.name for b in lab_provider.backends()] == ["lab5"]
    assert lab_provider.backends(name="nope") == []


def test_backends_filters_by_callable_and_attributes(lab_provider) -> None:
    assert [b.name for b in lab_provider.backends(filters=lambda b: True)] == ["lab5"]
    assert lab_provider.backends(filters=lambda b: b.num_qubits > 5) == []
    assert [b.name for b in lab_provider.backends(num_qubits=5)] == ["lab5"]
    assert lab_provider.backends(num_qubits=7) == []
    assert lab_provider.backends(name="lab5", filters=lambda b: b.num_qubits == 5)
    with pytest.raises(AttributeError, match="no attribute 'qubit_count'"):
        lab_provider.backends(qubit_count=5)
    with pytest.raises(TypeError, match="callable"):
        lab_provider.backends(filters={"num_qubits": 5})


def test_backend_interface(lab_backend) -> None:
    assert lab_backend.num_qubits == 5
    assert lab_backend.dtm == pytest.approx(1e-9)
    assert lab_backend.meas_map == [[0], [1], [2], [3], [4]]
    assert lab_backend.max_circuits >= 1
    assert lab_backend.target.dt == pytest.approx(1e-9)


def test_import_starts_nothing() -> None:
    # a process of the busy host may end between the listing and the reading of its stat
    code = ("import contextlib, os, labqpu, time; time.sleep(0.3)\n"
            "children = 0\n"
            "for p in filter(str.isdigit, os.listdir('/proc')):\n"
            "    with contextlib.suppress(OSError), open(f'/proc/{p}/stat') as stat:\n"
            "        children += stat.read().split()[3] == str(os.getpid())\n"
            "print(children)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "0"


def test_close_stops_the_simulator(lab_home) -> None:
    with LabProvider() as provider:
        pid = provider.simulator.pid
        assert _alive(pid)
        assert pid in _children(os.getpid())
    assert _wait_dead(pid)
    provider.close()


def test_a_ctrl_c_during_close_still_stops_the_simulator(lab_home, monkeypatch) -> None:
    """Ctrl-C landing while ``close()`` waits for the hardware worker (a review: the simulator,
    ~250 MB, outlived ``close()`` and a second ``close()`` did nothing) is raised after the
    simulator is stopped and the store closed. The interrupt is raised by a patch of the
    queue's ``close``, as a Ctrl-C at that moment cannot be made on cue."""
    real_close = LocalHardwareQueue.close

    def interrupted_close(self) -> None:
        real_close(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(LocalHardwareQueue, "close", interrupted_close)
    provider = LabProvider()
    pid = provider.simulator.pid
    with pytest.raises(KeyboardInterrupt):
        provider.close()
    assert _wait_dead(pid), "the simulator outlived an interrupted close()"
    with pytest.raises(CalibrationError):
        provider.store.latest()


def test_jobs_cancelled_by_close_say_so(lab_home) -> None:
    """A review: jobs still queued or running when the provider closed read "cancelled before
    it ran", or a controller's words, with nothing about the close."""
    provider = LabProvider()
    backend = provider.backend()
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, backend)
    backend.run(native, shots=10).result(timeout=60)
    running = backend.run([native] * 50, shots=20000)
    queued = backend.run(native, shots=10)
    provider.close()
    for job in (running, queued):
        with pytest.raises(JobError, match="was cancelled by closing its provider"):
            job.result(timeout=30)


def test_the_simulator_starts_from_a_folder_holding_modules_it_imports(lab_home, tmp_path,
                                                                      monkeypatch) -> None:
    """A lab user's folder with a ``numpy.py`` or ``zmq.py`` in it: the embedded simulator,
    started with the folder as its working directory, imported those instead of its own
    (``python -m`` puts the working directory first on ``sys.path``) and exited at once."""
    for name in ("numpy", "zmq", "json"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the folder\'s {name}.py')\n")
    monkeypatch.chdir(tmp_path)
    with LabProvider() as provider:
        assert provider.backend().hardware_status(timeout_s=30)["controllers"]


@pytest.mark.parametrize("simulator", ["yes", 1, "False"])
def test_simulator_must_be_a_bool(lab_home, simulator) -> None:
    """A review: any truthy value started a simulator ("False" too)."""
    with pytest.raises(BackendConfigurationError, match=r"simulator must be True, False or "
                                                        rf"None .*got {simulator!r}"):
        LabProvider(simulator=simulator)


def test_a_closed_provider_hands_out_nothing(lab_home) -> None:
    provider = LabProvider()
    provider.close()
    assert "closed" in repr(provider)
    for use in (provider.backend, provider.backends, provider.__enter__):
        with pytest.raises(HardwareUnavailableError, match="was closed"):
            use()


def test_port_0_addresses_without_a_simulator_fail_at_once(lab_home) -> None:
    """The shipped wiring files leave every port 0 for the simulator to fill in; without
    one, the provider says so instead of waiting for a controller that cannot answer."""
    with pytest.raises(BackendConfigurationError,
                       match=r"controller ctrl0 \(tcp://127.0.0.1:0\).*port 0.*simulator=True"):
        LabProvider("lab5", simulator=False)


@pytest.mark.parametrize("ending", ["", "os._exit(0)"], ids=["interpreter-exit", "hard-exit"])
def test_simulator_stops_with_its_client_process(tmp_path, ending) -> None:
    """Whether the client's interpreter exits normally (finalizers run) or is cut short
    without closing anything, the simulator it started does not outlive it."""
    code = ("import os, sys; os.environ['LABQPU_HOME'] = sys.argv[1]; "
            "from labqpu import LabProvider; p = LabProvider(); "
            f"print(p.simulator.pid, flush=True); {ending}")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=180, check=True)
    assert _wait_dead(int(out.stdout.split()[-1]), timeout_s=20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wiring_file_and_labqpu_sim(tmp_path) -> None:
    """``labqpu sim lab.toml`` stands up the rack a wiring file describes; ``LabProvider(path)``
    connects to it without starting anything itself."""
    text = default_config_path().read_text()
    text = text.replace("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{_free_port()}")
    while "::0::SOCKET" in text:
        text = text.replace("::0::SOCKET", f"::{_free_port()}::SOCKET", 1)
    text = text.replace('store = ""', 'store = "cal/calibration.sqlite"')
    lab = tmp_path / "lab.toml"
    lab.write_text(text)
    sim = subprocess.Popen([sys.executable, "-m", "labqpu.cli", "sim", str(lab)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(sim.stdout.readline())
        assert set(endpoints) == {"ctrl0", "lo_drive_a", "lo_drive_b", "lo_readout", "flux_bias"}
        with LabProvider(lab) as provider:
            assert provider.simulator is None
            backend = provider.backend("lab5")
            assert (tmp_path / "cal" / "calibration.sqlite").exists()
            qc = QuantumCircuit(1, 1)
            qc.x(0)
            qc.measure(0, 0)
            counts = backend.run(transpile(qc, backend), shots=500).result(timeout=60).get_counts()
            assert counts.get("1", 0) > 450
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(timeout=15)
        sim.stdout.close()
        err = sim.stderr.read()
        sim.stderr.close()
    # a server's normal end, said (a review's case: it ended silently, and a Ctrl-C while it
    # started gave 130)
    assert sim.returncode == 0
    assert err.strip().splitlines()[-1] == "labqpu sim: stopped (SIGTERM)", err


def test_missing_wiring_file_names_it(tmp_path) -> None:
    from labqpu.errors import BackendConfigurationError

    with pytest.raises(BackendConfigurationError, match=r"nothere\.toml"):
        LabProvider(tmp_path / "nothere.toml")


def test_another_devices_snapshot_or_store_is_refused_naming_the_file(tmp_path, lab_home):
    """A review's case: a lab5 wiring file whose seed snapshot (or store) was lab10's ran lab5
    on lab10's calibration (Bell 0.56), then a calibration failed with a KeyError. The seed is
    refused, naming it and both devices, and so is a store of another device; nothing is
    written to the store."""
    from labqpu.store import CalibrationStore

    shipped = REPO / "labqpu" / "data"
    text = default_config_path().read_text()
    (tmp_path / "seeded.toml").write_text(text.replace(
        'seed_snapshot = "lab5_calibration.json"',
        f'seed_snapshot = "{shipped / "lab10_calibration.json"}"').replace(
        'store = ""', 'store = "seeded.sqlite"'))
    with pytest.raises(BackendConfigurationError,
                       match=r"lab10_calibration\.json.*is for device 'lab10', but .*"
                             r"seeded\.toml describes device 'lab5'"):
        LabProvider(tmp_path / "seeded.toml", simulator=True)
    with CalibrationStore(tmp_path / "seeded.sqlite") as store:
        assert store.latest_id() is None
        store.import_json(json.loads((shipped / "lab10_calibration.json").read_text()))
    (tmp_path / "other.toml").write_text(text.replace('store = ""',
                                                      'store = "seeded.sqlite"'))
    with pytest.raises(BackendConfigurationError,
                       match=r"seeded\.sqlite \(\[calibration\] store of .*other\.toml\) "
                             r"holds calibrations of device 'lab10'"):
        LabProvider(tmp_path / "other.toml", simulator=True)


def test_cli_demo_prints_counts(tmp_path) -> None:
    env = {**os.environ, "LABQPU_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "labqpu.cli", "run", "--demo", "--shots", "1000"],
                         capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "counts (1000 shots)" in out.stdout
    line = next(x for x in out.stdout.splitlines() if x.startswith("P(00) + P(11)"))
    assert float(line.split("=")[1].split()[0]) >= 0.9


def test_deepcopy_shares_the_hardware_but_not_the_options(lab_backend) -> None:
    import copy

    clone = copy.deepcopy(lab_backend)
    clone.set_options(shots=77)
    assert lab_backend.options.shots != 77
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    result = clone.run(transpile(qc, clone)).result(timeout=60)
    assert sum(result.get_counts().values()) == 77


def test_hardware_status_names_every_instrument(lab_backend) -> None:
    status = lab_backend.hardware_status(timeout_s=30)
    caps = status["controllers"]["ctrl0"]["capabilities"]
    assert caps["sample_rate_hz"] == 1e9
    assert caps["outputs"] == 15
    assert caps["waveform_memory_samples"] > 0
    idents = {name: v["identity"] for name, v in status["instruments"].items()}
    assert set(idents) == {"lo_drive_a", "lo_drive_b", "lo_readout", "flux_bias"}
    assert all("labqpu simulator" in ident for ident in idents.values())


@pytest.mark.parametrize("timeout_s", [float("nan"), -1, "5", True])
def test_hardware_status_refuses_a_bad_timeout(lab_backend, timeout_s) -> None:
    """``inf`` raised ``OverflowError``, ``'5'`` a ``TypeError``, NaN and -1 an
    ``InstrumentTimeoutError`` blaming a queue that was empty."""
    with pytest.raises(ValueError, match=r"timeout_s must be None or a number of seconds "
                                         r">= 0 \(math.inf: no bound\), got "):
        lab_backend.hardware_status(timeout_s=timeout_s)


@pytest.mark.parametrize("timeout_s", [None, math.inf, 10**400])
def test_hardware_status_without_a_bound(lab_backend, timeout_s) -> None:
    assert set(lab_backend.hardware_status(timeout_s=timeout_s)["controllers"]) == {"ctrl0"}


@pytest.mark.parametrize("what", ["controller", "instrument"])
def test_labqpu_sim_reports_a_port_in_use(tmp_path, what) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        text = default_config_path().read_text()
        if what == "controller":
            text = text.replace("tcp://127.0.0.1:0", f"tcp://127.0.0.1:{port}")
        else:
            text = text.replace("::0::SOCKET", f"::{port}::SOCKET", 1)
        (tmp_path / "lab.toml").write_text(text)
        out = subprocess.run([sys.executable, "-m", "labqpu.cli", "sim",
                              str(tmp_path / "lab.toml")],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "cannot start the simulated rack" in out.stderr
    assert str(port) in out.stderr


def _memory_of_one_session(seed: int | None) -> list[str]:
    with LabProvider() as provider:
        backend = provider.backend()
        qc = QuantumCircuit(1, 1)
        qc.sx(0)
        qc.measure(0, 0)
        result = backend.run(qc, shots=200, memory=True, seed_simulator=seed).result()
        return result.get_memory()


def test_unseeded_runs_draw_fresh_entropy_in_each_session(lab_home) -> None:
    first, second = _memory_of_one_session(None), _memory_of_one_session(None)
    assert first != second  # 200 shots of a 50/50 outcome: equal by chance with p = 2**-200


def test_seeded_runs_repeat_across_sessions(lab_home) -> None:
    assert _memory_of_one_session(17) == _memory_of_one_session(17)


def test_backend_refuses_pickling_with_advice_and_the_target_pickles(lab_backend) -> None:
    import pickle

    with pytest.raises(TypeError, match=r"cannot be pickled.*backend\.target.*LabProvider\("):
        pickle.dumps(lab_backend)
    target = pickle.loads(pickle.dumps(lab_backend.target))
    assert target.snapshot_id == lab_backend.target.snapshot_id
    assert target.operation_names == lab_backend.target.operation_names
    assert target["sx"][(0,)].duration == lab_backend.target["sx"][(0,)].duration


def test_a_killed_client_leaves_no_simulator_and_no_files(tmp_path) -> None:
    """SIGKILL the process that owns a LabProvider: its simulator exits on its own and no
    temporary file or directory of labqpu's is left behind."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import os, sys\nfrom labqpu import LabProvider\np = LabProvider()\n"
            "print(p.simulator.pid, flush=True)\nsys.stdin.read()\n")
    env = {**os.environ, "TMPDIR": str(tmp), "LABQPU_HOME": str(tmp_path / "home")}
    client = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        simulator_pid = int(client.stdout.readline())
        assert _alive(simulator_pid)
        client.kill()
        client.wait(timeout=30)
        assert _wait_dead(simulator_pid), "the simulator outlived its client"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=30)
        client.stdin.close()
        client.stdout.close()
    leftovers = [p.name for p in tmp.iterdir() if p.name.startswith("labqpu")]
    assert leftovers == []


def test_a_provider_dropped_without_close_stops_its_simulator_when_collected(
        tmp_path, monkeypatch) -> None:
    """A review's case: a notebook cell that made a provider, ran a job and dropped it kept
    one simulator (~235 MB) per run, for the hardware worker held its last job, which held
    the backend and the provider. Once collected, the provider stops its simulator."""
    import gc

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    provider = LabProvider()
    simulator_pid = provider.simulator.pid
    backend = provider.backend()
    assert backend.run(transpile(qc, backend), shots=20).result().get_counts()
    del provider, backend
    gc.collect()
    assert _wait_dead(simulator_pid), "the simulator outlived its dropped provider"


def _run_in_forked_child(backend, circuit, pipe) -> None:
    try:
        backend.run(circuit, shots=20).result(timeout=20)
        pipe.send("the job ran")
    except Exception as exc:  # the child reports what it met
        pipe.send(f"{type(exc).__name__}: {exc}")


def test_a_provider_used_in_a_forked_child_says_so_at_once(lab_backend) -> None:
    """A review's case: a job submitted in a child forked from the provider's process
    (``multiprocessing`` with ``fork``) stayed QUEUED forever, the hardware worker thread not
    being there; ``run()`` there now refuses at once, saying what to do. The parent's
    provider goes on working."""
    import multiprocessing

    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend)
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_run_in_forked_child, args=(lab_backend, native, theirs))
    child.start()
    try:
        assert ours.poll(60), "the child did not answer"
        message = ours.recv()
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join(timeout=30)
    assert message.startswith("HardwareUnavailableError: this provider was opened in process")
    assert "open a LabProvider in the child" in message
    assert lab_backend.run(native, shots=20).result(timeout=60).get_counts()


def test_a_store_held_by_another_process_leaves_the_last_target_in_use(tmp_path, monkeypatch,
                                                                        caplog) -> None:
    """A review's case: another process holding the store (``BEGIN EXCLUSIVE`` in a sqlite3
    shell) made every ``run()``, ``transpile()`` and ``backend.target`` wait 10 s, then fail
    "database is locked", though the backend had a good Target. It now waits at most 0.5 s
    once, warns once, and goes on with the snapshot it last read; once the store can be read,
    a snapshot committed meanwhile is taken in."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    qc = QuantumCircuit(1, 1)
    qc.x(0)
    qc.measure(0, 0)
    with LabProvider() as provider:
        backend = provider.backend()
        first = backend.target.snapshot_id
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('BEGIN EXCLUSIVE')\nprint('held', flush=True)\nsys.stdin.read()\n",
             str(provider.config.store_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline() == "held\n"
            with caplog.at_level("WARNING", logger="labqpu.backend.backend"):
                start = time.monotonic()
                native = transpile(qc, backend)
                counts = backend.run(native, shots=50).result(timeout=60).get_counts()
                took_s = time.monotonic() - start
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
            holder.stdout.close()
        assert counts.get("1", 0) > 40 and took_s < 5, (counts, took_s)
        said = [r.getMessage() for r in caplog.records if "cannot be read now" in r.getMessage()]
        assert len(said) == 1 and f"jobs use snapshot {first}" in said[0]
        document = backend.snapshot.to_document()
        document["notes"] = "committed once the store is free"
        provider.store.commit(document, parent_id=first)
        assert backend.target.snapshot_id != first


def test_a_snapshot_that_cannot_build_a_target_leaves_the_last_good_one(tmp_path, monkeypatch,
                                                                       caplog) -> None:
    """A value committed before validation existed (a string T1, written straight into the
    SQLite file here) must not take the backend down: it keeps its last good Target."""
    import sqlite3

    from labqpu.store.validation import canonical_json, sha256_hex

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        good = backend.target.snapshot_id
        document = backend.snapshot.to_document()
        document["qubits"]["2"]["t1_s"]["value"] = "50 us"
        text = canonical_json(document)
        with sqlite3.connect(backend.config.store_path) as conn:
            conn.execute("INSERT INTO snapshots (device, created, parent_id, content_hash, "
                         "document, complete) VALUES (?, ?, ?, ?, ?, 1)",
                         ("lab5", "2026-11-29T00:00:00+00:00", good, sha256_hex(text), text))
        conn.close()
        assert backend.store.latest_id() == good + 1
        with caplog.at_level("WARNING", logger="labqpu.backend.backend"):
            assert backend.target.snapshot_id == good
            assert backend.target.snapshot_id == good
        warnings = [r for r in caplog.records if "cannot build a Target" in r.getMessage()]
        assert len(warnings) == 1, "warned once, not on every access"
        assert f"snapshot {good + 1}" in warnings[0].getMessage()
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.measure(0, 0)
        counts = backend.run(transpile(qc, backend), shots=100).result().get_counts()
        assert counts.get("1", 0) > 80


def _insert_unchecked(path, document: dict, parent: int) -> None:
    """Write ``document`` straight into the store's SQLite file, past every commit check (as
    an older labqpu, or a hand edit, could have)."""
    import sqlite3

    from labqpu.store.validation import canonical_json, sha256_hex

    text = canonical_json(document)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO snapshots (device, created, parent_id, content_hash, document, "
                     "complete) VALUES (?, ?, ?, ?, ?, 1)",
                     (document["device"], "2026-11-29T00:00:00+00:00", parent, sha256_hex(text),
                      text))
    conn.close()


def test_a_fallback_passes_over_a_snapshot_the_rack_cannot_set(tmp_path, monkeypatch,
                                                                caplog) -> None:
    """A review's store: snapshot 2 asks qubit 2's flux bias for 20 mA (the source gives 10),
    snapshot 3 cannot build a Target (a 20.5 ns pulse), both committed without the wiring's
    checks. The provider fell back onto snapshot 2, and every job then failed at the current
    source; it now starts on snapshot 1, the newest that builds and fits the rack."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    path = seed_fresh_store(tmp_path)
    with CalibrationStore(path) as store:
        first = store.latest()
    loud = first.to_document()
    loud["qubits"]["2"]["flux_bias_a"]["value"] = 0.02
    _insert_unchecked(path, loud, first.snapshot_id)
    off_grid = first.to_document()
    off_grid["qubits"]["1"]["pulse_duration_s"]["value"] = 20.5e-9
    _insert_unchecked(path, off_grid, first.snapshot_id + 1)
    with caplog.at_level("WARNING"), LabProvider() as provider:
        backend = provider.backend()
        assert backend.target.snapshot_id == first.snapshot_id
        assert not [r for r in caplog.records if "outside the limits" in r.getMessage()]
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.measure(0, 0)
        counts = backend.run(transpile(qc, backend, initial_layout=[3]), shots=100).result(
            timeout=60).get_counts()
        assert counts.get("1", 0) > 80, counts


def test_a_new_provider_starts_on_the_newest_snapshot_that_builds_a_target(
        tmp_path, monkeypatch, caplog) -> None:
    """A provider opened on a store whose newest snapshot cannot build a Target starts on the
    newest one before it that can, and says so; after a rollback and a bad snapshot, that is
    the rollback's copy, not the snapshot rolled away from. When none can, the error names the
    newest snapshot, its problem and the way out (before, the provider failed with a bare
    ``TypeError`` or a compiler message naming no snapshot)."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        first = backend.snapshot
        path = backend.config.store_path
        document = first.to_document()
        document["qubits"]["0"]["t1_s"]["value"] = 41e-6
        second = backend.store.commit(document).snapshot_id
        rolled = backend.store.rollback(first.snapshot_id).snapshot_id
    bad = first.to_document()
    bad["qubits"]["2"]["t1_s"]["value"] = "50 us"
    _insert_unchecked(path, bad, rolled)
    with caplog.at_level("WARNING", logger="labqpu.backend.backend"), LabProvider() as provider:
        backend = provider.backend()
        assert backend.target.snapshot_id == rolled != second
        assert backend.snapshot.qubits[0]["t1_s"].value == first.qubits[0]["t1_s"].value
        warnings = [r.getMessage() for r in caplog.records
                    if "cannot build a Target" in r.getMessage()]
        assert len(warnings) == 1 and f"jobs use snapshot {rolled}" in warnings[0]
    other = tmp_path / "other"
    monkeypatch.setenv("LABQPU_HOME", str(other))
    with LabProvider() as provider:
        path = provider.backend().config.store_path
    _insert_unchecked(path, bad, None)
    import sqlite3
    with sqlite3.connect(path) as conn:  # leave only the bad snapshot
        conn.execute("DELETE FROM snapshots WHERE document NOT LIKE '%50 us%'")
    conn.close()
    with pytest.raises(CalibrationError, match=r"calibration snapshot \d+ of store .* cannot "
                                               r"build a Target \(.*\), nor can the snapshots "
                                               r"before it: .*labqpu calibrate rollback ID"), \
            LabProvider() as provider:
        provider.backend()


def test_a_calibration_on_a_backend_past_an_unusable_snapshot_commits_on_top_of_it(
        tmp_path, monkeypatch) -> None:
    """A backend that fell back past an unusable newest snapshot: a calibration run measures on
    the snapshot in use and commits on top of the unusable one, replacing it (it measured, then
    failed as "another calibration committed first"), and the backend then uses the commit."""
    from labqpu.calibration import run_graph

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        good = backend.snapshot
        bad = good.to_document()
        bad["qubits"]["2"]["t1_s"]["value"] = "50 us"
        _insert_unchecked(backend.config.store_path, bad, good.snapshot_id)
        unusable = backend.store.latest_id()
        assert backend.snapshot.snapshot_id == good.snapshot_id
        assert backend.unusable_snapshot_id == unusable
        report = run_graph(backend, ["t1"], qubits=[1], force=True, rb=False, shots=100)
        assert report.snapshot is not None and report.snapshot.parent_id == unusable
        assert f"(parent {unusable})" in report.table()  # replaced, not raced
        assert backend.snapshot.snapshot_id == report.snapshot.snapshot_id
        assert backend.unusable_snapshot_id is None
        assert backend.snapshot.qubits[2]["t1_s"].value == good.qubits[2]["t1_s"].value


def test_a_corrupt_newest_snapshot_is_passed_over_and_rolled_back(tmp_path, monkeypatch,
                                                                 caplog) -> None:
    """A newest snapshot whose document no longer matches its hash (a hand edit of the SQLite
    file): a new provider starts on the snapshot before it, naming the corruption, and
    ``rollback`` replaces it (it read the corrupt snapshot and failed)."""
    import sqlite3

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        document = backend.snapshot.to_document()
        document["qubits"]["0"]["t1_s"]["value"] = 41e-6
        edited = backend.store.commit(document).snapshot_id
        path = backend.config.store_path
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE snapshots SET document = replace(document, '4.1e-05', '4.2e-05') "
                     "WHERE id = ?", (edited,))
    conn.close()
    with caplog.at_level("WARNING", logger="labqpu.backend.backend"), \
            LabProvider() as provider:
        backend = provider.backend()
        assert backend.snapshot.snapshot_id == edited - 1
        assert backend.unusable_snapshot_id == edited
        assert any("is corrupt" in r.getMessage() for r in caplog.records)
        restored = backend.store.rollback(edited - 1)
        assert restored.snapshot_id == edited + 1
        assert backend.snapshot.snapshot_id == restored.snapshot_id


def test_a_read_error_of_the_store_does_not_mark_the_newest_snapshot_unusable(
        tmp_path, monkeypatch) -> None:
    """A store that cannot be read for a moment ("database is locked"): the backend's access
    fails with that error, and once the store reads again the backend uses the newest snapshot
    and reports none unusable. Before, the read error marked the (good) snapshot unusable for
    good, and a calibration then committed on top of it, undoing its values."""
    from labqpu.errors import CalibrationError
    from labqpu.store import CalibrationStore

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        with CalibrationStore(backend.config.store_path) as other:
            document = other.latest().to_document()
            document["qubits"]["0"]["t1_s"]["value"] = 41e-6
            newest = other.commit(document).snapshot_id
        query = CalibrationStore._query
        failed: list[int] = []

        def locked_once(self, sql, parameters=(), **options):
            if "WHERE id = ?" in sql and parameters == (newest,) and not failed:
                failed.append(newest)
                raise CalibrationError("calibration store: database is locked")
            return query(self, sql, parameters, **options)

        monkeypatch.setattr(CalibrationStore, "_query", locked_once)
        with pytest.raises(CalibrationError, match="database is locked"):
            backend.snapshot  # noqa: B018 (the access is the test)
        assert failed == [newest]
        assert backend.snapshot.snapshot_id == newest
        assert backend.unusable_snapshot_id is None


def test_a_snapshot_outside_narrowed_limits_is_named_at_start_and_by_the_failing_job(
        tmp_path, lab_home, caplog) -> None:
    """A review's case: limits narrowed in the wiring file after the snapshot was committed
    (``max_frequency_hz = 5e9`` on lo_drive_a, which the snapshot sets to 5.721 GHz). The
    provider says so at start, naming the snapshot, the qubit, the parameter and the
    instrument, and the job that needs it fails naming the instrument (it named only a
    simulator port)."""
    text = default_config_path().read_text().replace('store = ""', 'store = "lim.sqlite"')
    (tmp_path / "wide.toml").write_text(text)
    (tmp_path / "narrow.toml").write_text(text.replace(
        'name = "lo_drive_a"\nkind = "signal_generator"\n',
        'name = "lo_drive_a"\nkind = "signal_generator"\nmax_frequency_hz = 5.0e9\n'))
    with LabProvider(tmp_path / "wide.toml", simulator=True):
        pass  # seeds the store within the wide limits
    with caplog.at_level("WARNING", logger="labqpu.backend.provider"), \
            LabProvider(tmp_path / "narrow.toml", simulator=True) as provider:
        assert any("calibration snapshot 1 is outside the limits of" in r.getMessage()
                   and "qubit 0, parameter 'drive_lo_frequency_hz'" in r.getMessage()
                   and "'lo_drive_a'" in r.getMessage() for r in caplog.records), caplog.text
        backend = provider.backend()
        qc = QuantumCircuit(1, 1)
        qc.x(0)
        qc.measure(0, 0)
        job = backend.run(transpile(qc, backend, initial_layout=[0]), shots=10)
        with pytest.raises(Exception, match=r"lo_drive_a \(TCPIP0::127\.0\.0\.1::\d+::SOCKET\)"):
            job.result(timeout=60)
