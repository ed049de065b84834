"""The ``labqpu`` command's wiring files, homes and interrupts: a bad wiring file, seed
snapshot or home is a one-line error naming it, a port-0 wiring file runs on the embedded
simulator, and Ctrl-C is one line and stops the simulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labqpu.testing import seed_fresh_store

REPO = Path(__file__).resolve().parents[2]


def _sigint_as_a_terminal_leaves_it() -> None:
    """In a child about to be interrupted: SIGINT's default action, which makes Python raise
    KeyboardInterrupt. A suite started in the background by a non-interactive shell (``pytest
    &`` in a script) ignores SIGINT, and its children would inherit that and never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sim_with_missing_wiring_file(tmp_path, labqpu):
    proc = labqpu(tmp_path, "sim", "/nonexistent.toml")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "labqpu: lab configuration file not found: /nonexistent.toml"]


def test_sim_of_a_directory_says_so_as_every_command_does(tmp_path, labqpu):
    """A review's case: `labqpu sim /tmp` said "no such wiring file: /tmp"."""
    proc = labqpu(tmp_path, "sim", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"labqpu: lab configuration {tmp_path} is a directory; give the wiring file (lab.toml) "
        "in it"]


def test_sim_checks_the_wiring_file_as_every_command_does(tmp_path, labqpu):
    """``labqpu sim`` of a file the backend refuses started the simulator anyway, which then
    died with a traceback (an LO given ``max_current_a``) or listened elsewhere than the file
    said (a port past 65535)."""
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    marker = 'name = "lo_drive_a"\nkind = "signal_generator"\n'
    (tmp_path / "lab.toml").write_text(text.replace(marker, marker + "max_current_a = 0.001\n"))
    proc = labqpu(tmp_path, "sim", "lab.toml")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "labqpu: lab.toml [[instruments]] lo_drive_a: max_current_a is a limit of a "
        "current_source, not of a signal_generator"]


def test_demo_with_missing_config_is_a_one_line_error(tmp_path, labqpu):
    proc = labqpu(tmp_path, "run", "--demo", "--config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"labqpu: lab configuration file not found: {tmp_path / 'nope.toml'}"]


def test_bad_config_is_a_one_line_error(tmp_path, labqpu):
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    bad = tmp_path / "lab.toml"
    bad.write_text(text.replace('endpoint = "tcp://127.0.0.1:0"', 'endpoint = "abc"'))
    proc = labqpu(tmp_path, "status", "--config", str(bad))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "[[controllers]] ctrl0: endpoint" in lines[0]


def test_output_into_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """``labqpu calibrate history | head -0``: the reader has gone before the history is
    printed. The command ends without a traceback, with the exit code of a process ended by
    SIGPIPE (141), instead of a ``BrokenPipeError`` traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "labqpu.cli", "calibrate", "history"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)})
    proc.stdout.close()  # before the command has imported anything, let alone printed
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141, err


def test_help_starts_without_qiskit(tmp_path):
    code = ("import sys\nfrom labqpu.cli import main\ntry:\n    main(['run', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'qiskit', 'numpy'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lab5 (default), lab10, lab3" in " ".join(proc.stdout.split())  # help wraps
    assert proc.stdout.splitlines()[-1] == "[]"


def _logged(log: Path) -> list[str]:
    """The watch log's lines so far (the watch makes the log and removes it again, to try it
    before its first round: the file alone is not a logged round)."""
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_an_endless_watch_on_the_simulator_waits_on_the_wall_clock(tmp_path):
    """`labqpu calibrate --watch` (until Ctrl-C, as docs/calibration.md's first example runs
    it) on the embedded simulator used the device clock, where an hour passes in
    milliseconds: rounds back to back at a core, each committing snapshots (47 rounds in 42 s).
    Without --rounds the watch waits on the wall clock; Ctrl-C stops it."""
    seed_fresh_store(tmp_path)
    watch = subprocess.Popen(
        [sys.executable, "-m", "labqpu.cli", "calibrate", "--watch", "t1", "--qubits", "0"],
        cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_a_terminal_leaves_it)
    try:
        first = watch.stdout.readline()
        assert "a round every 3600 s on the wall clock, until interrupted" in first, first
        deadline = time.monotonic() + 120
        log = tmp_path / "lab5" / "watch.jsonl"
        while not _logged(log) and time.monotonic() < deadline:
            time.sleep(0.2)  # the first round runs at once
        time.sleep(2.0)  # a device clock would have run many more rounds by now
        assert len(_logged(log)) == 1
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 0, err
        assert "watch stopped" in out
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()


def test_a_watch_stopped_before_its_rounds_were_done_exits_130(tmp_path):
    """A review's case: ``--rounds 5`` stopped by Ctrl-C after round 3 exited 0 like a
    finished watch, so a script could not tell; a watch until Ctrl-C still ends with 0
    (above)."""
    seed_fresh_store(tmp_path)
    watch = subprocess.Popen(
        [sys.executable, "-m", "labqpu.cli", "calibrate", "--watch", "t1", "--qubits", "0",
         "--rounds", "5", "--clock", "wall"],
        cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_a_terminal_leaves_it)
    try:
        log = tmp_path / "lab5" / "watch.jsonl"
        deadline = time.monotonic() + 120
        while not _logged(log) and time.monotonic() < deadline:
            time.sleep(0.2)  # round 1 runs at once, then the watch waits an hour
        assert _logged(log)
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
        assert watch.returncode == 130, (out, err)
        assert "watch stopped" in out
        assert "the watch was interrupted before its 5 round(s) were done" in err
        assert len(log.read_text().splitlines()) == 1
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()


def test_status_shows_where_each_qubit_is_wired(tmp_path, labqpu):
    """On lab10, qubits 0-4 play on ctrl0 and 5-9 on ctrl1; each qubit names its LOs and its
    flux-bias channel, as the wiring file says."""
    proc = labqpu(tmp_path, "status", "--config", "lab10", timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert sorted(report["qubits"], key=int) == [str(q) for q in range(10)]
    assert report["marked"] == {}  # a fresh store: nothing stale, no failed step
    for q, wiring in report["qubits"].items():
        controller = "ctrl0" if int(q) < 5 else "ctrl1"
        for role in ("drive", "flux", "readout", "acquire"):
            assert wiring[role].startswith(f"{controller}:"), (q, role, wiring)
        assert wiring["drive_lo"] in report["instruments"], wiring
        assert wiring["flux_bias"].split(":")[0] in report["instruments"], wiring


def test_an_unknown_device_name_lists_the_built_in_ones(tmp_path, labqpu):
    proc = labqpu(tmp_path, "run", "--demo", "--config", "lab11")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "labqpu: lab configuration file not found: lab11 (no such file, and not a built-in "
        "device: lab5, lab10, lab3)"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--demo", "--shots", "1e3"],
     "labqpu run: argument --shots: invalid int value: '1e3' (labqpu run --help)"),
    (["calibrate", "--qubits", "x"],
     "labqpu calibrate: argument --qubits: must be qubit numbers (whole numbers >= 0), got "
     "'x' (labqpu calibrate --help)"),
    ([], "labqpu: the following arguments are required: command (labqpu --help)"),
])
def test_a_usage_error_is_one_line(tmp_path, args, message, labqpu):
    """A mistyped option is the README's one-line error (argparse printed its usage block and
    "labqpu run: error: ..."), exit code 2, nothing started."""
    proc = labqpu(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [message]


def test_a_home_that_is_a_file_is_a_one_line_error(tmp_path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    proc = subprocess.run([sys.executable, "-m", "labqpu.cli", "run", "--demo"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "LABQPU_HOME": str(home)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"labqpu: LABQPU_HOME={home} is not a directory")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(("sent", "code", "said"), [
    (signal.SIGINT, 130, "labqpu: interrupted"),
    # a review's case: `kill`, `timeout` or systemd stopped a watch or a calibration with no
    # word, a committed round left out of the watch's log: SIGTERM ends a command as Ctrl-C
    # does, with the exit code of a process ended by SIGTERM
    (signal.SIGTERM, 143, "labqpu: terminated (SIGTERM)")])
def test_an_interrupt_is_one_line_and_stops_the_simulator(tmp_path, sent, code, said):
    script = tmp_path / "wait.py"
    script.write_text("import time\nfrom labqpu import LabProvider\n"
                      "with LabProvider() as provider:\n"
                      "    print(provider.simulator.pid, flush=True)\n"
                      "    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "labqpu.cli", "run", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)},
                            preexec_fn=_sigint_as_a_terminal_leaves_it)
    try:
        simulator = int(proc.stdout.readline())
        proc.send_signal(sent)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines() == [said]
    deadline = time.monotonic() + 15
    while Path(f"/proc/{simulator}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{simulator}").exists() or \
        Path(f"/proc/{simulator}/stat").read_text().split()[2] == "Z"


def test_ctrl_c_in_a_terminal_during_a_job_is_one_line(tmp_path):
    """A review's case: Ctrl-C in a terminal reaches the whole foreground process group, so the
    embedded simulator stopped at once, and the provider's abort of the running job then
    logged "could not abort run ...: the firmware simulator exited". The simulator leaves
    SIGINT to the process that started it: the abort goes through, one line is printed, and
    the simulator is stopped all the same."""
    script = tmp_path / "long.py"
    script.write_text(
        "from qiskit import QuantumCircuit, transpile\nfrom labqpu import LabProvider\n"
        "qc = QuantumCircuit(2, 2)\nqc.h(0)\nqc.cx(0, 1)\nqc.measure([0, 1], [0, 1])\n"
        "with LabProvider('lab10') as provider:\n"
        "    backend = provider.backend()\n"
        "    job = backend.run([transpile(qc, backend)] * 10, shots=100000)\n"
        "    print(provider.simulator.pid, flush=True)\n"
        "    job.result(timeout=300)\n")
    proc = subprocess.Popen([sys.executable, "-m", "labqpu.cli", "run", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)},
                            preexec_fn=_sigint_as_a_terminal_leaves_it,
                            start_new_session=True)  # its own group, as a terminal's job
    try:
        simulator = int(proc.stdout.readline())
        time.sleep(0.5)  # the job is running (it takes several seconds)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["labqpu: interrupted"], stderr
    deadline = time.monotonic() + 15
    while Path(f"/proc/{simulator}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{simulator}").exists() or \
        Path(f"/proc/{simulator}/stat").read_text().split()[2] == "Z"


@pytest.mark.parametrize(("content", "named"), [
    ('{"bad json', "cannot be read as JSON"),
    ('{"format": "labqpu-snapshot-0"}', "is not a calibration snapshot this store takes"),
])
def test_a_bad_seed_snapshot_is_a_one_line_error_naming_the_file(tmp_path, content, named, labqpu):
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    wiring = tmp_path / "lab.toml"
    wiring.write_text(text.replace('seed_snapshot = "lab5_calibration.json"',
                                   'seed_snapshot = "seed.json"', 1))
    (tmp_path / "seed.json").write_text(content)
    proc = labqpu(tmp_path, "calibrate", "history", "--config", str(wiring))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"seed snapshot {tmp_path / 'seed.json'}" in lines[0] and named in lines[0]


@pytest.mark.parametrize(("edit", "prefix", "message"), [
    (lambda text: "[device\nname = 1\n" + text, "labqpu:", "not valid TOML"),
    (lambda text: text.replace('name = "lab5"', 'label = "lab5"', 1), "labqpu:",
     "[device]: unknown key 'label'"),
    (lambda text: text.replace("[simulator]", '[simulator]\nseed = "x"', 1), "labqpu sim:",
     "[simulator] seed must be an integer >= 0"),
    (lambda text: text.replace("channels = 5", "channels = 300000000000", 1), "labqpu:",
     "channels must be <= 64"),
])
def test_sim_wiring_errors_name_the_file(tmp_path, edit, prefix, message, labqpu):
    """``labqpu sim`` checks the wiring as every command does (``labqpu:``), then reads its
    ``[simulator]`` part itself (``labqpu sim:``): either way the error names the file and
    the key, in one line (they were a bare KeyError, a TOML message without the file, or a
    simulator that grew without bound building 3e11 channels)."""
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    assert "[simulator]" in text and "channels = 5" in text
    wiring = tmp_path / "lab.toml"
    wiring.write_text(edit(text))
    proc = labqpu(tmp_path, "sim", str(wiring))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix} {wiring}"), proc.stderr
    assert message in lines[0], proc.stderr


def _port_0_wiring(tmp_path: Path, *, seeded: bool) -> Path:
    """A copy of lab3's wiring file (every port 0, so only the embedded simulator can serve
    it), with its store in ``tmp_path``; without ``seeded`` the store starts empty."""
    text = (REPO / "labqpu" / "data" / "lab3.toml").read_text()
    if not seeded:
        text = text.replace('seed_snapshot = "lab3_calibration.json"', 'seed_snapshot = ""', 1)
    wiring = tmp_path / "lab-sim.toml"
    wiring.write_text(text)
    return wiring


def test_a_port_0_wiring_file_needs_and_takes_simulator(tmp_path, labqpu) -> None:
    """A simulated copy of a wiring file (docs/wiring.md, recipe A) on the command line: without
    --simulator the CLI says to add it (it only named the Python call), with it the commands
    work."""
    wiring = _port_0_wiring(tmp_path, seeded=True)
    refused = labqpu(tmp_path, "status", "--config", str(wiring))
    assert refused.returncode == 2, refused.stderr
    assert "listen on port 0" in refused.stderr and "--simulator" in refused.stderr
    status = labqpu(tmp_path, "status", "--config", str(wiring), "--simulator")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["device"] == "lab3"


def test_the_wiring_files_design_is_read_by_every_calibration_and_the_watch_takes_design(
        tmp_path, labqpu) -> None:
    """A rack whose design values do not ship with labqpu names them once, in its wiring file
    (``[calibration] design``, relative to it); every calibration reads them there. Before,
    each command needed ``--design`` again, and ``--watch`` dropped the ``--design`` it was
    given. (A design with a misspelt field shows which file each command read.)"""
    from labqpu.rack.config import load_config

    wiring = _port_0_wiring(tmp_path, seeded=True)
    wiring.write_text(wiring.read_text().replace(
        'seed_snapshot = "lab3_calibration.json"',
        'seed_snapshot = "lab3_calibration.json"\ndesign = "chip/design.toml"', 1))
    (tmp_path / "chip").mkdir()
    design = tmp_path / "chip" / "design.toml"
    lab3 = (REPO / "labqpu" / "data" / "lab3_design.toml").read_text()
    design.write_text(lab3.replace("readout_amplitude", "readout_amplitud"))
    assert load_config(wiring).design_path == design
    node = labqpu(tmp_path, "calibrate", "rabi", "--qubits", "1", "--force", "--config",
                  str(wiring), "--simulator")
    assert node.returncode != 0
    assert f"design file {design}, [device]: unknown field 'readout_amplitud'" in node.stderr, \
        node.stderr
    other = tmp_path / "other_design.toml"
    other.write_text(lab3.replace("pulse_sigma_s", "pulse_sigma"))
    watch = labqpu(tmp_path, "calibrate", "--watch", "--rounds", "1", "--interval", "0",
                   "rabi", "--qubits", "1", "--config", str(wiring), "--simulator",
                   "--design", str(other))
    assert f"design file {other}, [device]" in watch.stdout + watch.stderr, \
        watch.stdout + watch.stderr


def test_a_script_on_an_empty_store_says_why_transpile_failed(tmp_path, labqpu, BELL_PY) -> None:
    """A review's case: a script that transpiles for a backend whose store is empty failed with
    Qiskit's own words only ("A connected component of the DAGCircuit is too large ..."),
    which name neither the store nor what to do; the error now carries the backend's warning,
    with the command that fills the store."""
    wiring = _port_0_wiring(tmp_path, seeded=False)
    (tmp_path / "mine.py").write_text(
        "from qiskit import transpile\nfrom labqpu import LabProvider\n" + BELL_PY
        + f"with LabProvider({str(wiring)!r}, simulator=True) as provider:\n"
        "    backend = provider.backend()\n"
        "    backend.run(transpile(qc, backend)).result()\n")
    proc = labqpu(tmp_path, "run", "mine.py", timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("labqpu: transpile() failed: "), last
    assert "holds no snapshot" in last, last
    assert f"`labqpu calibrate --bootstrap --config {wiring} --simulator`" in last, last


@pytest.mark.slow
def test_a_port_0_wiring_file_with_an_empty_store_is_bootstrapped_from_the_cli(
    tmp_path, labqpu
) -> None:
    """The empty store's warning names the command that works for the file (with --simulator),
    pasted as it is (the device's shipped design values: no --design); that command
    bootstraps without repeating the advice to run it; then circuits run."""
    wiring = _port_0_wiring(tmp_path, seeded=False)
    status = labqpu(tmp_path, "status", "--config", str(wiring), "--simulator")
    assert status.returncode == 0, status.stderr
    advised = f"labqpu calibrate --bootstrap --config {wiring} --simulator`"
    assert advised in status.stderr, status.stderr
    boot = labqpu(tmp_path, *advised.rstrip("`").split()[1:], "--no-rb", "--shots", "100",
                  timeout=300)
    assert boot.returncode == 0, boot.stderr
    assert "holds no snapshot" not in boot.stderr + boot.stdout
    assert "committed calibration snapshot 1" in boot.stdout
    demo = labqpu(tmp_path, "run", "--demo", "--config", str(wiring), "--simulator",
                  "--seed", "1", timeout=120)
    assert demo.returncode == 0, demo.stderr
    good = float(demo.stdout.split("P(00) + P(11) = ")[1].split()[0])
    assert good > 0.9, demo.stdout


def test_an_interrupted_calibration_says_what_the_store_holds(tmp_path, monkeypatch, capsys):
    """A review's case: Ctrl-C during the rb step of `labqpu calibrate --all`, after the graph
    had committed its snapshot, printed only "labqpu: interrupted". The command now says what
    the store holds, and whether anything was committed, before the interrupt goes on."""
    from labqpu import LabProvider
    from labqpu.cli_calibrate import what_an_interrupt_left
    from labqpu.store import SnapshotBuilder

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    seed_fresh_store(tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        before = backend.store.latest_id()
        with pytest.raises(KeyboardInterrupt), what_an_interrupt_left(backend):
            raise KeyboardInterrupt
        assert capsys.readouterr().err.startswith(
            f"labqpu calibrate: interrupted; nothing was committed (the store's newest snapshot "
            f"is still {before}); the experiment records made so far are in ")
        with pytest.raises(KeyboardInterrupt), what_an_interrupt_left(backend):
            SnapshotBuilder.from_snapshot(backend.store.latest()).set_qubit(
                0, "t1_s", 45e-6, "t1").commit(backend.store)
            raise KeyboardInterrupt
        err = capsys.readouterr().err
        assert err.startswith(f"labqpu calibrate: interrupted; the store's newest snapshot is "
                              f"{before + 1} (it was {before}): what was committed before the "
                              "interrupt stays (`labqpu calibrate history`)"), err
        # a store that cannot be read then (a review's case: its error replaced the interrupt)
        from labqpu.errors import CalibrationError

        def locked(*_args):
            raise CalibrationError("reading calibration store x failed: database is locked")

        with pytest.raises(KeyboardInterrupt), what_an_interrupt_left(backend):
            monkeypatch.setattr(backend.store, "latest_id", locked)
            raise KeyboardInterrupt
        assert capsys.readouterr().err.startswith(
            "labqpu calibrate: interrupted; the calibration store could not be read (reading "
            "calibration store x failed: database is locked)")


def test_a_ctrl_c_numba_wrapped_is_said_as_an_interrupt(tmp_path, monkeypatch, capsys,
                                                         numba_interrupt):
    """A test run's case: Ctrl-C landed while numba loaded a cached kernel in a calibration's
    first step, and the command exited 1 with numba's SystemError and its traceback instead
    of 130 and the line saying what the store holds."""
    from labqpu.cli import main

    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    seed_fresh_store(tmp_path)
    from labqpu.calibration import runner

    def loading_a_kernel(*args, **kwargs):
        raise numba_interrupt

    monkeypatch.setattr(runner, "run_graph", loading_a_kernel)
    assert main(["calibrate", "--all", "--qubits", "0", "--no-rb"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "labqpu calibrate: interrupted; nothing was committed"), err
    script = tmp_path / "job.py"  # a script's own: the interrupt, one line
    script.write_text("raise SystemError('returned a result with an exception set') from "
                      "KeyboardInterrupt()\n")
    assert main(["run", str(script)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["labqpu: interrupted"]


def test_ctrl_c_during_calibrate_is_one_line_saying_what_the_store_holds(tmp_path):
    """A review's case: Ctrl-C during `labqpu calibrate` printed the line saying what the store
    holds and then "labqpu: interrupted" as well."""
    seed_fresh_store(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labqpu.cli", "calibrate", "--all", "--qubits", "0", "--force",
         "--no-rb"],
        cwd=tmp_path, env={**os.environ, "LABQPU_HOME": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_a_terminal_leaves_it)
    try:
        first = proc.stdout.readline()  # its first of thirteen steps is done: it is under way
        assert "[1/13] resonator_spectroscopy qubit 0: calibrated" in first, first
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labqpu calibrate: interrupted; "), stderr
