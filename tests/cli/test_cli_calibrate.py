"""The ``labqpu calibrate`` commands: the graph and the watch, and the store's history, diff,
rollback and export; options they would ignore are refused, and user errors are one line."""

from __future__ import annotations

import errno
import json
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labqpu.rack.config import default_config_path
from labqpu.store import CalibrationStore
from labqpu.testing import restamped, seed_fresh_store, shipped_export

REPO = Path(__file__).resolve().parents[2]


#: A measurement time later than any in the shipped snapshot.
LATER = "2099-01-01T00:00:00+00:00"


def _seeded_home(tmp_path: Path, export: dict) -> None:
    from labqpu.store import CalibrationStore, SnapshotBuilder

    with CalibrationStore(tmp_path / "lab5" / "calibration.sqlite") as store:
        first = store.import_json(export)
        builder = SnapshotBuilder.from_snapshot(first)
        builder.set_qubit(2, "t1_s", 20e-6, "t1", timestamp=LATER)
        store.commit(builder.build_document())


def test_a_node_name_after_the_qubit_list_gets_a_hint(tmp_path, labqpu) -> None:
    """``labqpu calibrate --qubits 2 ramsey``: --qubits takes every word after it, so argparse
    read ``ramsey`` as a qubit; the error says how to write it instead (nothing runs)."""
    proc = labqpu(tmp_path, "calibrate", "--qubits", "2", "ramsey")
    assert proc.returncode == 2
    assert ("argument --qubits: must be qubit numbers, got 'ramsey'; put node names before "
            "--qubits (labqpu calibrate ramsey --qubits ...) or end the list with --"
            ) in proc.stderr, proc.stderr
    assert not (tmp_path / "lab5").exists()  # no store was opened


@pytest.mark.parametrize(("args", "expected"), [
    (["rabi", "--qubits", "-1"], "argument --qubits: must be qubit numbers (whole numbers >= 0), "
                                 "got '-1'"),
    (["history", "extra"], "labqpu calibrate history: usage: labqpu calibrate history (no "
                           "further words), got extra"),
    # --qubits took the words: it was called a missing id ("got nothing")
    (["rollback", "--qubits", "2", "3"], "labqpu calibrate rollback: --qubits: not for "
                                         "rollback, which works on whole snapshots"),
])
def test_calibrate_words_that_are_no_qubit_or_id_are_named_plainly(tmp_path, args,
                                                                  expected, labqpu) -> None:
    proc = labqpu(tmp_path, "calibrate", *args)
    assert proc.returncode == 2
    assert expected in proc.stderr, proc.stderr
    assert "put node names before" not in proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["calibrate", "--watch", "--intervall", "5"],
     "labqpu calibrate: unrecognized arguments: --intervall; did you mean '--interval'? "
     "(labqpu calibrate --help)"),
    (["status", "--foo"], "labqpu status: unrecognized arguments: --foo (labqpu status --help)"),
    (["--log-levl=INFO", "status"], "labqpu: unrecognized arguments: --log-levl=INFO; did "
                                     "you mean '--log-level'? (labqpu --help)"),
])
def test_an_unknown_option_is_named_with_its_commands_help(
    tmp_path, args, expected, labqpu
) -> None:
    """It pointed at ``labqpu --help`` (the top parser reported it), without a hint."""
    proc = labqpu(tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.strip() == expected, proc.stderr
    assert not (tmp_path / "lab5").exists()


def test_history_of_a_gate_given_the_other_way_round_when_the_newest_snapshot_is_corrupt(
        tmp_path, export, labqpu) -> None:
    """``history --gate cz:2-1`` turns the gate round from the newest snapshot it can read: with
    the newest corrupt it printed only that snapshot's error (``history --param`` of a qubit
    warned and went on)."""
    import sqlite3
    from contextlib import closing

    _seeded_home(tmp_path, export)
    with closing(sqlite3.connect(tmp_path / "lab5" / "calibration.sqlite")) as conn, conn:
        conn.execute("UPDATE snapshots SET document = '{\"qub' WHERE id = 2")
    proc = labqpu(tmp_path, "calibrate", "history", "--param", "error", "--gate", "cz:2-1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("error of gate cz:1-2: 1 measurement(s)"), proc.stdout
    assert "snapshots [2] are corrupt" in proc.stderr


def test_history_of_a_gate_given_the_other_way_round_after_a_snapshot_without_gates(
        tmp_path, export, labqpu) -> None:
    """A review's case: after ``--bootstrap --no-rb`` the newest snapshot holds no gate
    errors, and ``history --gate cz:2-1`` said "snapshot 3 has no gate cz:2-1 (gates: )" while
    ``--gate cz:1-2`` and ``--pair 2-1`` worked: the gate is turned round from the newest
    snapshot that holds it either way."""
    from labqpu.store import CalibrationStore, SnapshotBuilder

    _seeded_home(tmp_path, export)
    with CalibrationStore(tmp_path / "lab5" / "calibration.sqlite") as store:
        builder = SnapshotBuilder.from_snapshot(store.latest())
        for gate in list(store.latest().gates):
            builder.remove_gate(gate)
        store.commit(builder.build_document())
    proc = labqpu(tmp_path, "calibrate", "history", "--param", "error", "--gate", "cz:2-1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("error of gate cz:1-2: 1 measurement(s)"), proc.stdout


def test_calibrate_history_diff_and_rollback(tmp_path, export, labqpu):
    _seeded_home(tmp_path, export)
    proc = labqpu(tmp_path, "calibrate", "history")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["2", "1"]
    proc = labqpu(tmp_path, "calibrate", "history", "--param", "t1_s", "--qubit", "2")
    assert proc.returncode == 0, proc.stderr
    assert "2 measurement(s)" in proc.stdout
    assert proc.stdout.splitlines()[1].startswith(f"{LATER}  snapshot     2")
    # an edge and its gate either way round (--pair 2-1 worked, --gate cz:2-1 was refused)
    for selector in (["--pair", "2-1"], ["--gate", "cz:2-1"]):
        param = "cz_amplitude" if selector[0] == "--pair" else "error"
        proc = labqpu(tmp_path, "calibrate", "history", "--param", param, *selector)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{param} of "
                                      + ("edge 1-2" if param == "cz_amplitude" else "gate cz:1-2")
                                      + ": 1 measurement(s)"), proc.stdout
    proc = labqpu(tmp_path, "calibrate", "diff", "1", "2")
    changed = json.loads(proc.stdout)["changed"]
    assert [(c["key"], c["name"]) for c in changed] == [("2", "t1_s")]
    proc = labqpu(tmp_path, "calibrate", "rollback", "1")
    assert proc.returncode == 0, proc.stderr
    assert "committed snapshot 3" in proc.stdout
    proc = labqpu(tmp_path, "calibrate", "diff", "1", "3")
    assert json.loads(proc.stdout)["changed"] == []
    for again in ("3", "1"):  # the newest already, or the calibration it already holds
        proc = labqpu(tmp_path, "calibrate", "rollback", again)
        assert proc.returncode == 0, proc.stderr
        assert (f"the newest snapshot, 3, already holds the calibration of snapshot {again}; "
                "nothing committed") in proc.stdout
    proc = labqpu(tmp_path, "calibrate", "history")
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["3", "2", "1"]


def test_calibrate_store_commands_report_user_errors_in_one_line(tmp_path, export, labqpu):
    _seeded_home(tmp_path, export)
    for args in (["rollback", "9"], ["history", "--param", "t1_s"], ["diff", "1", "7"],
                 ["history", "--qubit", "2"], ["rollback", "1", "--since", "2026-01-01"]):
        proc = labqpu(tmp_path, "calibrate", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = labqpu(tmp_path, "calibrate", "history", "--qubit", "2")  # was ignored silently
    assert "--qubit select(s) one parameter's history: use them with history --param" \
        in proc.stderr


@pytest.mark.parametrize(("args", "expected"), [
    (["ramsey", "--force", "--qubit", "2"],
     "--qubit: only for `labqpu calibrate history` (for the qubits to calibrate: --qubits)"),
    (["ramsey", "--pair", "0-1"], "--pair: only for `labqpu calibrate history`"),
    (["--all", "--param", "t1_s", "--limit", "3"],
     "--param, --limit: only for `labqpu calibrate history`"),
])
def test_history_options_with_graph_nodes_are_refused(tmp_path, args, expected, labqpu) -> None:
    """``calibrate ramsey --force --qubit 2`` (a typo of --qubits) recalibrated and committed
    every qubit: the history-only options were ignored with node names."""
    proc = labqpu(tmp_path, "calibrate", *args)
    assert proc.returncode == 2, (args, proc.stderr)
    assert proc.stderr.strip() == f"labqpu calibrate: {expected}", proc.stderr
    history = labqpu(tmp_path, "calibrate", "history")
    assert [line.split()[0] for line in history.stdout.splitlines()] == ["1"]  # no commit


@pytest.mark.parametrize(("args", "expected"), [
    (["rollback", "99999999999999999999"], "has no snapshot 99999999999999999999"),
    (["diff", "99999999999999999999", "1"], "has no snapshot 99999999999999999999"),
    (["history", "--param", "t1_s", "--qubit", "0", "--since", "0001-01-01T00:00:00+01:00"],
     "timestamp 0001-01-01T00:00:00+01:00 is out of range"),
    (["rollback", "1", "--qubits", "3"], "--qubits: not for rollback, which works on whole "
                                         "snapshots of the store"),
    (["history", "--shots", "10", "--interval", "5"], "--interval, --shots: not for history"),
    (["diff", "1", "2", "--limit", "3"], "--limit: not for diff"),
    (["rollback", "1", "--shots", "400"], "--shots: not for rollback"),  # the defaults, given
    (["diff", "1", "2", "--limit", "50"], "--limit: not for diff"),
    (["rollback", "\u00b2"], "snapshot ids are whole numbers"),  # isdigit(); int(): traceback
    (["diff", "1", "\u0663"], "snapshot ids are whole numbers"),  # an Arabic-Indic 3
])
def test_calibrate_store_commands_refuse_what_they_cannot_take_in_one_line(
        tmp_path, export, args, expected, labqpu) -> None:
    """Ids beyond any store's range and out-of-range times were tracebacks
    (``OverflowError``); options of the calibration graph were ignored (``rollback 1 --qubits
    3`` rolled back every qubit)."""
    _seeded_home(tmp_path, export)
    proc = labqpu(tmp_path, "calibrate", *args)
    assert proc.returncode == 2, (args, proc.stderr)
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = labqpu(tmp_path, "calibrate", "history", "--limit", "99999999999999999999")
    assert proc.returncode == 0 and proc.stdout.split()[0] == "2", proc.stderr


def test_calibrate_history_of_a_misspelt_parameter_names_the_close_one(tmp_path, export, labqpu):
    _seeded_home(tmp_path, export)
    proc = labqpu(tmp_path, "calibrate", "history", "--param", "t1", "--qubit", "2")
    assert proc.returncode == 2, proc.stderr
    assert "no snapshot holds a qubit parameter 't1'; did you mean 't1_s'?" in proc.stderr


def test_store_commands_on_a_fresh_home_start_from_the_seed(tmp_path, labqpu):
    proc = labqpu(tmp_path, "calibrate", "history")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["1"]
    for args, message in (
            (["t1_s", "--qubit", "9"], "snapshot 1 has no qubit 9 (qubits: 0, 1, 2, 3, 4)"),
            (["zz_hz", "--pair", "1-3"], "snapshot 1 has no pair 1-3 (pairs: 0-1, 1-2,")):
        proc = labqpu(tmp_path, "calibrate", "history", "--param", *args)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr


def test_calibrate_without_a_task_names_the_choices(tmp_path, labqpu):
    proc = labqpu(tmp_path, "calibrate")
    assert proc.returncode == 2
    assert "--watch, --bootstrap or --rb" in proc.stderr


def test_calibrate_runs_the_graph_and_prints_the_summary(tmp_path, labqpu):
    seed_fresh_store(tmp_path)
    proc = labqpu(tmp_path, "calibrate", "t1", "--qubits", "0", timeout=240)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "t1 qubit 0:" in out  # a plain line per step: stdout is not a terminal
    assert "\r" not in out  # and no progress bar
    summary = out[out.index("node "):]
    assert "t1" in summary and ("committed snapshot 2 (parent 1)" in summary
                                or "nothing committed; snapshot 1" in summary)
    assert "cz" not in summary  # t1 needs no CZ


def test_calibrate_names_gate_errors_measured_before_their_pulses(tmp_path, export, labqpu):
    """A snapshot whose qubit 2 has a pi amplitude newer than its gate errors (as after a
    recalibration without RB): after a graph run, the command names sx:2, sy:2 and x:2 as out
    of date and says which command measures them again. Qubit 0, which the run checks, is
    named exactly when the run changed one of its pulse values; qubits 1, 3 and 4 never."""
    from labqpu.store import CalibrationStore, SnapshotBuilder
    from labqpu.testing import restamped

    with CalibrationStore(tmp_path / "lab5" / "calibration.sqlite") as store:
        first = store.import_json(restamped(export))
        builder = SnapshotBuilder.from_snapshot(first)
        builder.set_qubit(2, "pi_amplitude", first.qubits[2]["pi_amplitude"].value,
                          "fine_amplitude-test", timestamp=datetime.now(UTC).isoformat())
        store.commit(builder.build_document())
    proc = labqpu(tmp_path, "calibrate", "t1", "--qubits", "0", timeout=240)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("gate errors out of date"))
    assert "sx:2 (measured before pi_amplitude)" in line and "x:2 (" in line, line
    assert "`labqpu calibrate rb`" in line, line
    assert not any(f"sx:{q}" in line or f"x:{q} " in line for q in (1, 3, 4)), line
    pulses_of_0 = ("frequency_hz", "pi_amplitude", "pi2_amplitude", "drag_beta")
    changed_0 = any(row.split()[1:4] == ["qubit", "0", name] and "->" in row
                    for row in proc.stdout.splitlines() for name in pulses_of_0)
    assert ("sx:0" in line) == changed_0, proc.stdout


def test_calibrate_refuses_an_unknown_node_and_mixed_selections(tmp_path, labqpu):
    proc = labqpu(tmp_path, "calibrate", "ramsy")
    assert proc.returncode == 2
    assert proc.stderr.startswith("labqpu: no calibration node 'ramsy' (known: ")
    proc = labqpu(tmp_path, "calibrate", "--all", "ramsey")
    assert proc.returncode == 2 and "not both" in proc.stderr
    proc = labqpu(tmp_path, "calibrate", "diff", "1")
    assert proc.returncode == 2 and "usage: labqpu calibrate diff A B" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--all", "--no-rb", "--rb-seeds", "3"], "--rb-seeds set randomized benchmarking"),
    (["t1", "--rb-lengths-1q", "1", "50", "100"], "--rb-lengths-1q set randomized"),
    (["--bootstrap", "--no-rb", "--rb-lengths-2q", "1", "5", "10"], "--rb-lengths-2q set"),
    (["--rb", "--no-rb"], "--rb and --no-rb contradict each other"),
    (["t1", "--rb", "--no-rb"], "--rb and --no-rb contradict each other"),
    (["rb", "--no-rb"], "--no-rb with the node 'rb'"),
    (["--watch", "rb"], "it takes no node rb"),
    (["--watch", "t1", "--no-rb"], "it takes no --no-rb"),
    (["--all", "--shots", "0"], "--shots must be a whole number from 1 to 100000, got 0"),
    (["--all", "--interval", "60"], "--interval needs --watch"),
    (["--watch", "--force"], "it takes no --force\n"),  # no --rb-every note: not about RB
    (["--watch", "--no-rb"], "it takes no --no-rb (--rb-every N benchmarks the gates every N"),
    (["--watch", "--bootstrap"], "it takes no --bootstrap"),
    (["--watch", "--rounds", "0"], "--rounds must be at least 1, got 0"),
    (["--watch", "--clock", "device"], "--clock device on the embedded simulator passes "
                                       "each interval in milliseconds, so rounds follow"),
    (["--watch", "--interval", "-1"], "--interval must be a number of seconds from 0 to "
                                      "2592000 (30 days), got -1.0"),
    # a review's cases: a wait beyond the wall clock's timer (a traceback after round 1), and
    # rounds back to back for ever
    (["--watch", "--interval", "1e10"], "--interval must be a number of seconds from 0 to"),
    (["--watch", "--interval", "0"], "--interval 0 runs rounds back to back"),
    (["--all", "--rb-every", "2"], "--rb-every needs --watch"),
    (["--watch", "--rb-seeds", "3"], "--rb-seeds set randomized benchmarking"),
    # settings no benchmark can fit: a usage error, not an RB failure recorded on the qubit
    (["--rb", "--qubits", "1", "--rb-lengths-1q", "1", "50"],
     "--rb-lengths-1q: RB needs at least 3 distinct sequence lengths"),
    (["--rb", "--rb-lengths-2q", "5", "5", "5"], "--rb-lengths-2q: RB needs at least 3"),
])
def test_calibrate_refuses_rb_options_it_would_ignore(tmp_path, args, message, labqpu):
    """RB options without an RB run are a one-line error, before any simulator starts."""
    proc = labqpu(tmp_path, "calibrate", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr.replace(" (labqpu calibrate --help)", "")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not list(tmp_path.glob("**/*.sqlite"))  # no store was opened


def test_calibrate_watch_runs_rounds_on_the_device_clock_and_logs_them(tmp_path, labqpu):
    """On the embedded simulator the interval passes as idle shots on the device: two rounds
    an hour apart take seconds, each is one line of output and one line of the JSON log;
    with ``--rb-every 2`` the second ends with RB of the watched qubit."""
    seed_fresh_store(tmp_path)
    proc = labqpu(tmp_path, "calibrate", "--watch", "t1", "--qubits", "0", "--rounds", "2",
                  "--rb-every", "2", "--rb-lengths-1q", "1", "40", "120", "300",
                  "--rb-seeds", "2", timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert ("a round every 3600 s on the device clock, randomized benchmarking every 2 "
            "round(s), 2 round(s)") in lines[0]
    assert "RB: 3 gate errors" in proc.stdout
    assert "round 1 at +0.00 h:" in proc.stdout and "round 2 at +1.00 h:" in proc.stdout
    log = [json.loads(line) for line in (tmp_path / "lab5" / "watch.jsonl").read_text()
           .splitlines()]
    assert [(r["round"], r["clock_s"]) for r in log] == [(1, 0.0), (2, 3600.0)]
    assert "gate_errors" not in log[0] and set(log[1]["gate_errors"]) == {"sx:0", "sy:0", "x:0"}
    assert {s["node"] for r in log for s in r["steps"]} >= {"t1", "readout", "rabi"}
    assert "cz" not in {s["node"] for r in log for s in r["steps"]}


def test_a_watch_with_nothing_to_run_says_so_without_its_header(tmp_path, labqpu):
    """`--watch cz --qubits 0` printed "watching lab5: a round every ..." and then the graph's
    error: the selection is checked before the header, as a graph run checks it."""
    seed_fresh_store(tmp_path)
    proc = labqpu(tmp_path, "calibrate", "--watch", "cz", "--qubits", "0", "--rounds", "1")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("labqpu: the node cz calibrates edges, and qubits [0] hold "
                                  "none of lab5's edges"), proc.stderr
    assert not (tmp_path / "lab5" / "watch.jsonl").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--export", "/nonexistent-dir/x.json"],
     "--export /nonexistent-dir/x.json: directory /nonexistent-dir does not exist"),
    (["--design", "nonexistent.toml"], "--design nonexistent.toml: no such file"),
    (["--export", "."], "--export .: is a directory; give a file name"),
])
def test_calibrate_file_options_are_checked_before_anything_starts(tmp_path, args, message, labqpu):
    start = time.monotonic()
    proc = labqpu(tmp_path, "calibrate", "ramsey", "--qubits", "2", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"labqpu calibrate: {message}"
    assert time.monotonic() - start < 20  # no simulator started, no calibration run
    assert not (tmp_path / "lab5").exists()


def test_calibrate_export_refuses_a_store_and_reports_a_failed_write_in_one_line(tmp_path, labqpu):
    """A review's cases: ``--export`` onto the calibration store overwrote it with JSON (every
    snapshot lost), and a write that failed (a full disk) was a traceback after the commit.
    Both stores are refused before anything starts; a failed write is one line that says the
    snapshot stays committed."""
    seed_fresh_store(tmp_path)
    store = tmp_path / "lab5" / "calibration.sqlite"
    shutil.copy(store, tmp_path / "copy.sqlite")
    for target, message in ((store, "is the calibration store; give another file"),
                            (tmp_path / "copy.sqlite", "is an SQLite database (a calibration "
                             "store?), which the export would overwrite; give another file")):
        proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", "--export",
                      str(target))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == f"labqpu calibrate: --export {target}: {message}"
        assert target.read_bytes().startswith(b"SQLite format 3")
    # nor the wiring or design file the command reads (a review's case: lab.toml became JSON)
    wiring = tmp_path / "lab.toml"
    wiring.write_text(default_config_path().read_text())
    design = tmp_path / "design.json"
    design.write_text("{}")
    for option, path in (("--config", wiring), ("--design", design)):
        before = path.read_bytes()
        proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", option,
                      str(path), "--export", str(path))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == (f"labqpu calibrate: --export {path}: is the file given "
                                       f"to {option}, which the export would overwrite; give "
                                       "another file"), proc.stderr
        assert path.read_bytes() == before
    if Path("/dev/full").exists():
        proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", "--export",
                      "/dev/full", timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == (
            "labqpu calibrate: cannot write --export /dev/full: No space left on device; "
            f"snapshot 1 is committed in {store} all the same"), proc.stderr
    proc = labqpu(tmp_path, "calibrate", "history")
    assert proc.returncode == 0, proc.stderr
    # written through a symbolic link, keeping the mode of the file it replaces
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "real.json").chmod(0o600)
    (tmp_path / "link.json").symlink_to("real.json")
    proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", "--export",
                  "link.json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["document"]["device"] == "lab5"
    assert (tmp_path / "real.json").stat().st_mode & 0o777 == 0o600


def test_calibrate_export_without_a_commit_exports_the_newest_snapshot(tmp_path, labqpu):
    """A run that commits nothing still writes --export's file: the newest snapshot, named."""
    seed_fresh_store(tmp_path)  # measured an hour ago: every step is fresh
    proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", "--export",
                  "e.json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "nothing committed; snapshot 1 stays the newest" in proc.stdout
    assert "exported snapshot 1 to e.json" in proc.stdout
    assert json.loads((tmp_path / "e.json").read_text())["document"]["device"] == "lab5"


def test_calibrate_export_after_a_failed_step_exports_what_the_run_committed(tmp_path, labqpu):
    """A review's case: a run with a failed step exited 1 before the export, so --export
    wrote nothing and said nothing, though the run had committed its record of the failure
    (the --rb path exported all the same)."""
    export = restamped(shipped_export("lab5"))
    export["document"]["qubits"]["1"]["frequency_hz"]["value"] += 10e6  # ramsey cannot fit it
    del export["content_hash"]  # the document altered on purpose
    store = tmp_path / "lab5" / "calibration.sqlite"
    store.parent.mkdir()
    with CalibrationStore(store) as opened:
        opened.import_json(export)
    proc = labqpu(tmp_path, "calibrate", "ramsey", "--qubits", "1", "--export", "x.json",
                  timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ramsey" in proc.stdout and "failed" in proc.stdout, proc.stdout
    assert "exported snapshot 2 to x.json" in proc.stdout, proc.stdout
    written = json.loads((tmp_path / "x.json").read_text())
    assert written["snapshot_id"] == 2 and "1" in written["document"]["qubits"]


def test_records_that_cannot_be_written_are_refused_before_anything_is_measured(
        tmp_path, labqpu) -> None:
    """A review's case: with a file where the experiment records go, a calibration measured,
    committed its snapshot, then died in a traceback, its records (which the snapshot names)
    never written. It is now refused first, naming the place, and nothing is committed."""
    seed_fresh_store(tmp_path)
    (tmp_path / "lab5" / "experiments").write_text("not a directory")
    proc = labqpu(tmp_path, "calibrate", "rabi", "--qubits", "1", "--force", timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"labqpu: the experiment records cannot be written to "
                                  f"{tmp_path / 'lab5' / 'experiments'} ("), proc.stderr
    assert "Traceback" not in proc.stderr
    history = labqpu(tmp_path, "calibrate", "history")
    assert history.returncode == 0 and len(history.stdout.strip().splitlines()) == 1, \
        history.stdout  # snapshot 1 alone


@pytest.mark.parametrize(("args", "kind", "then"), [
    (["rabi", "--qubits", "1", "--force"], "rabi", "nothing was committed"),
    # sequences long enough to decay: at 120 Cliffords one fit in six was refused (no record)
    (["--rb", "--qubits", "1", "--rb-lengths-1q", "1", "200", "600", "--rb-seeds", "2"], "rb",
     "the gate errors were not committed"),
])
def test_records_that_fail_to_write_during_a_run_leave_nothing_committed(
        tmp_path, labqpu, monkeypatch, args, kind, then) -> None:
    """A review's case: a record write that failed after the check before the run (a disk
    filling up meanwhile: patched here, a full disk cannot be made on this machine) came after
    the commit, so the snapshot named records that were never written; an RB record's was a
    traceback. Records are written first; the failure is one line naming the record and the
    place, and nothing is committed."""
    from labqpu.calibration.records import ExperimentRecord

    def full_disk(self, directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    seed_fresh_store(tmp_path)
    monkeypatch.setattr(ExperimentRecord, "save", full_disk)
    proc = labqpu(tmp_path, "calibrate", *args, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert re.match(rf"labqpu: experiment record {kind}-\S+ could not be written to "
                    rf"{re.escape(str(tmp_path / 'lab5' / 'experiments'))} \(\[Errno 28\] No "
                    rf"space left on device\); {then}$", proc.stderr.strip()), proc.stderr
    history = labqpu(tmp_path, "calibrate", "history")
    assert history.returncode == 0 and len(history.stdout.strip().splitlines()) == 1, \
        history.stdout  # snapshot 1 alone


def test_qubits_given_twice_are_both_calibrated(tmp_path, labqpu) -> None:
    """A review's case: ``--qubits 2 --qubits 3`` calibrated qubit 3 only (argparse kept the
    last list), and said nothing."""
    seed_fresh_store(tmp_path)  # measured an hour ago: every step is fresh
    proc = labqpu(tmp_path, "calibrate", "drive_handedness", "--qubits", "2", "--qubits", "3",
                  timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(re.search(rf"\n  drive_handedness +qubit {q} ", proc.stdout) for q in (2, 3)), \
        proc.stdout


def test_calibrating_an_edge_node_on_qubits_without_an_edge_is_refused(tmp_path, labqpu) -> None:
    """``labqpu calibrate cz --qubits 0 2`` ran cz's prerequisites on both qubits, no cz at all,
    said nothing and exited 0 (committing what the prerequisites changed)."""
    proc = labqpu(tmp_path, "calibrate", "cz", "--qubits", "0", "2")
    assert proc.returncode == 2, proc.stderr
    assert ("the node cz calibrates edges, and qubits [0, 2] hold none of lab5's edges (0-1, 1-2, "
            "2-3, 3-4): give both qubits of an edge") in proc.stderr
    history = labqpu(tmp_path, "calibrate", "history")
    assert [line.split()[0] for line in history.stdout.splitlines()] == ["1"]  # no commit


def test_store_commands_on_a_store_not_made_yet_write_nothing(tmp_path, labqpu) -> None:
    """A review's case: ``rollback 99``, ``diff 1 99`` and a mistyped ``history --param``
    on a fresh home were refused, yet each had created the store and seeded it (and a wiring
    file whose store path was mistyped got a new, seeded store that looked like a shared one
    reset). A store that does not exist is now answered from the seed it would start with,
    said so, and nothing is written."""
    home = tmp_path / "home"
    home.mkdir()
    store = home / "lab5" / "calibration.sqlite"
    note = (f"calibration store {store} does not exist yet (the first command that uses the "
            "rack creates it from lab5_calibration.json); answered from what it would start "
            "with, nothing written")
    for args, code, said in ((["rollback", "99"], 2, "has no snapshot 99"),
                             (["diff", "1", "99"], 2, f"labqpu: calibration store {store} has "
                              "no snapshot 99"),
                             (["history", "--param", "t1_s", "--qubit", "9"], 2,
                              "snapshot 1 has no qubit 9"),
                             (["rollback", "1"], 0, "nothing committed"),
                             (["history"], 0, "shipped with labqpu")):
        proc = labqpu(home, "calibrate", *args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        assert note in proc.stderr, (args, proc.stderr)
        assert said in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert "labqpu-store-" not in proc.stdout + proc.stderr  # the real path, not the copy's
        assert list(home.iterdir()) == [], (args, list(home.rglob("*")))


def test_history_of_an_empty_store_says_so(tmp_path, labqpu) -> None:
    """A rack of its own whose store holds nothing yet: history printed nothing at all."""
    text = (REPO / "labqpu" / "data" / "lab5.toml").read_text()
    wiring = tmp_path / "lab.toml"
    wiring.write_text(text.replace('seed_snapshot = "lab5_calibration.json"',
                                   'seed_snapshot = ""', 1))
    proc = labqpu(tmp_path, "calibrate", "history", "--config", str(wiring))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("holds no snapshot yet"), proc.stdout


def _unwritable(path: Path) -> list[str] | None:
    """Make ``path`` unwritable even for root (``chattr +i``), else by its mode when not
    root; the command that undoes it, or None when neither can be done here."""
    import os
    import subprocess

    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)],
                                                  capture_output=True).returncode == 0:
        return ["chattr", "-i", str(path)]
    if os.geteuid() != 0:
        path.chmod(0o444)
        return ["chmod", "644", str(path)]
    return None


def test_a_calibration_on_a_store_it_cannot_write_fails_before_it_measures(
        tmp_path, export, monkeypatch, capsys) -> None:
    """A review's case: on an immutable store a calibration measured everything, then failed
    at its commit."""
    import subprocess

    from labqpu.cli import main

    _seeded_home(tmp_path, export)
    store = tmp_path / "lab5" / "calibration.sqlite"
    undo = _unwritable(store)
    if undo is None:
        pytest.skip("no way to make a file unwritable for root here")
    try:
        before = store.read_bytes()
        monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
        assert main(["calibrate", "t1", "--qubits", "0", "--force", "--no-rb"]) == 2
        assert f"calibration store {store} cannot be written" in capsys.readouterr().err
        assert store.read_bytes() == before
        assert not (tmp_path / "lab5" / "experiments").exists()  # nothing measured
    finally:
        subprocess.run(undo, check=True)


@pytest.mark.parametrize(("args", "message"), [
    (["--rb", "--rb-lengths-1q", "1", "50", "100000"],
     "labqpu calibrate: --rb-lengths-1q: sequences of 100000 Cliffords: one on qubit 0 lasts "
     "about"),
    (["rb", "--qubits", "1", "2", "--rb-lengths-2q", "1", "10", "30000"],
     "labqpu calibrate: --rb-lengths-2q: sequences of 30000 Cliffords: one on edge 1-2 lasts "
     "about"),
])
def test_rb_lengths_longer_than_the_controller_plays_are_refused_before_measuring(
        tmp_path, args, message, labqpu):
    """A review's case: such lengths were found at ``run()``, after 40 s of building
    sequences, in an error that named no option. Now one line names the option, the qubit or
    edge, the controller's limit and the longest length about fitting; nothing was measured
    or committed."""
    from labqpu.store import CalibrationStore

    store = seed_fresh_store(tmp_path)
    with CalibrationStore(store) as s:
        before = s.latest_id()
    proc = labqpu(tmp_path, "calibrate", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message), proc.stderr
    assert re.search(r"\(2000 us, its max_program_samples; this estimate keeps [15]% of it "
                     r"free, 19[08]0 us\): give lengths up to about \d+ Cliffords$",
                     proc.stderr.strip()), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    with CalibrationStore(store) as s:
        assert s.latest_id() == before
    assert not list((tmp_path / "lab5").glob("experiments/*"))


def test_a_bounded_watch_with_any_failed_round_exits_1(tmp_path, labqpu,
                                                       first_watch_round_fails) -> None:
    """A review's case: the watch's exit code was its last round's, so a script running
    ``--rounds N`` overnight saw 0 when an earlier round had failed and the last passed."""
    seed_fresh_store(tmp_path)
    proc = labqpu(tmp_path, "calibrate", "--watch", "drive_lo", "--qubits", "0", "--rounds",
                  "2", "--interval", "0", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(first_watch_round_fails) == 2
    assert proc.stderr.strip().endswith(
        f"round(s) 1 of 2 failed (what failed: {tmp_path / 'lab5' / 'watch.jsonl'})"), proc.stderr
