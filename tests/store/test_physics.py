"""Values no device can have are refused on commit, naming qubit and parameter; nothing is
written. An empty or foreign store file is an error, never silently replaced."""

from __future__ import annotations

import os
import re
import sqlite3
import stat

import pytest

from labqpu.errors import CalibrationError, InvalidSnapshotError
from labqpu.store import CalibrationStore, SnapshotBuilder


@pytest.fixture
def writable(tmp_path, snapshot):
    with CalibrationStore(tmp_path / "s.sqlite") as s:
        s.commit(snapshot.to_document())
        yield s


@pytest.mark.parametrize(("section", "key", "name", "value", "words"), [
    ("qubit", 2, "t1_s", -5e-5, "(0, 0.01] s"),
    ("qubit", 2, "t1_s", "50 us", "finite number"),
    ("qubit", 2, "t1_s", True, "finite number"),
    ("qubit", 2, "t2_s", 1e-3, "exceeds 2 T1"),
    ("qubit", 2, "t2_echo_s", 1e-3, "exceeds 2 T1"),
    # a review's case: T1 in the wrong unit (55 for 55 us) set every job's default repetition
    # delay to its 1 s cap; the calibration runner's T1 scan then outlasted the controller
    ("qubit", 2, "t1_s", 55.0, "(0, 0.01] s (a coherence time)"),
    ("qubit", 2, "t2_s", 0.02, "(0, 0.01] s (a coherence time)"),
    ("qubit", 2, "t2_echo_s", 0.02, "(0, 0.01] s (a coherence time)"),
    ("qubit", 1, "readout_assignment_fidelity", 1.5, "[0, 1]"),
    ("qubit", 1, "frequency_hz", 0.0, "> 0"),
    ("qubit", 1, "pi_amplitude", 1.2, "full scale"),
    # a review's cases, committed before: a pi pulse and a readout of amplitude 0 (every x
    # ran as an identity), a passive reset of 0 s (a qubit in |1> stayed there) or of 1000 s,
    # an anharmonicity of 1 THz
    ("qubit", 1, "pi_amplitude", 0, "0 < |value| <= 1"),
    ("qubit", 1, "pi2_amplitude", 0.0, "0 < |value| <= 1"),
    ("qubit", 1, "readout_amplitude", 0.0, "0 < |value| <= 1"),
    ("qubit", 1, "reset_duration_s", 0.0, "(0, 0.1] s"),
    ("qubit", 1, "reset_duration_s", 1000.0, "(0, 0.1] s"),
    ("qubit", 1, "anharmonicity_hz", 1e12, "a finite number within"),
    ("qubit", 1, "assignment_matrix", [[0.9, 0.2], [0.1, 0.9]], "sum to 1"),
    ("qubit", 1, "assignment_matrix", [[1.0]], "P(0|0)"),
    ("qubit", 1, "discriminator", {"centers": [[0, 1]]}, "centers"),
    ("qubit", 3, "drive_handedness", 0, "1 or -1"),
    ("qubit", 3, "drive_handedness", -0.5, "1 or -1"),
    ("qubit", 3, "drive_handedness", True, "1 or -1"),
    ("qubit", 3, "drive_handedness", "left", "1 or -1"),
    ("pair", (1, 2), "cz_flux_qubit", 4, "not on the edge"),
    ("pair", (1, 2), "cz_duration_s", -1e-8, "(0, 0.001] s"),
    # A pulse beyond any gate's (a typo of 0.1 s for 100 ns once compiled into 1.9 GB of
    # waveform on every run() before the controller's length limit refused it; 1e6 s raised
    # MemoryError), an edge that leaves nothing flat of its CZ, a discriminator whose two
    # centres coincide (every shot read as 0), a reset that never ends.
    ("qubit", 0, "pulse_duration_s", 0.1, "(0, 0.001] s"),
    ("qubit", 0, "pulse_duration_s", 1e6, "(0, 0.001] s"),
    ("qubit", 0, "readout_duration_s", 0.05, "(0, 0.001] s"),
    ("qubit", 0, "pulse_sigma_s", 0.0, "(0, 0.001] s"),
    ("pair", (1, 2), "cz_rise_s", 1.0, "[0, 0.001] s"),
    ("pair", (1, 2), "cz_rise_s", 5e-7, "leave nothing flat"),
    ("qubit", 1, "discriminator", {"centers": [[0, 0], [0, 0]]}, "two distinct centres"),
    ("qubit", 1, "reset_rounds", 10 ** 9, "1..100"),
    ("gate", "sx:0", "error", -0.01, "[0, 1]"),
    # a review's cases: centres whose difference overflows, or that complex64 cannot tell
    # apart, read every shot as 0 without an error
    ("qubit", 0, "discriminator", {"centers": [[1e308, 0], [-1e308, 0]]}, "complex64; beyond"),
    ("qubit", 0, "discriminator", {"centers": [[0, 0], [1e-300, 0]]}, "1e-300 apart"),
    ("qubit", 0, "discriminator", {"centers": [[0.2, 0.1], [0.2, 0.1 + 1e-9]]}, "1e-09 apart"),
])
def test_unphysical_values_are_refused_and_nothing_is_written(writable, section, key, name,
                                                              value, words) -> None:
    latest = writable.latest_id()
    builder = SnapshotBuilder.from_snapshot(writable.latest())
    getattr(builder, f"set_{section}")(key, name, value, "manual")
    with pytest.raises(InvalidSnapshotError, match=words.replace("(", r"\(").replace(
            ")", r"\)").replace("[", r"\[").replace("]", r"\]")) as info:
        writable.commit(builder.build_document())
    assert info.value.parameter == name
    assert writable.latest_id() == latest


def test_a_cz_key_in_descending_order_is_refused_naming_the_one_the_target_reads(
        writable) -> None:
    """A review's case: ``cz:1-0`` was stored beside ``cz:0-1``, which the Target reads: a lab
    steering the layout away from a bad coupler changed nothing."""
    latest = writable.latest_id()
    builder = SnapshotBuilder.from_snapshot(writable.latest()).set_gate("cz:1-0", "error", 0.9,
                                                                        "by hand")
    with pytest.raises(InvalidSnapshotError, match=r"gate 'cz:1-0'.*its key is 'cz:0-1'"):
        writable.commit(builder.build_document())
    assert writable.latest_id() == latest


def test_unknown_parameters_are_kept_with_json_checks_only(writable) -> None:
    builder = SnapshotBuilder.from_snapshot(writable.latest())
    builder.set_qubit(0, "my_experiment_score", "good", "mine")  # no warning: the suite errs
    snapshot = writable.commit(builder.build_document())
    assert snapshot.qubit_value(0, "my_experiment_score") == "good"


@pytest.mark.parametrize(("setter", "subject", "name", "meant"), [
    ("set_qubit", 2, "t1", "t1_s"),  # a review's case: stored silently, the Target kept 40 µs
    ("set_qubit", 2, "T1_s", "t1_s"),
    ("set_qubit", 2, "frequncy_hz", "frequency_hz"),
    ("set_qubit", 2, "pi_amp", "pi_amplitude"),
    ("set_pair", (0, 1), "cz_amplitud", "cz_amplitude"),
    ("set_gate", "sx:0", "duration", "duration_s"),
])
def test_a_misspelt_parameter_is_stored_with_a_warning_naming_the_known_one(
        writable, setter, subject, name, meant) -> None:
    builder = SnapshotBuilder.from_snapshot(writable.latest())
    with pytest.warns(UserWarning, match=rf"{name!r} is not a parameter labqpu knows; did you "
                                         rf"mean {meant!r}\?") as caught:
        getattr(builder, setter)(subject, name, 1e-8, "by hand")
    assert caught[0].filename == __file__  # points at the caller's line
    writable.commit(builder.build_document())


@pytest.mark.parametrize(("content", "words"), [
    (b"", "is an empty file (0 bytes)"),
    # SQLite opens a file this short as a new database: it was seeded with the factory snapshot
    (b"\n", "is a 1-byte file without SQLite's header"),
    (b"SQLite format", "is a 13-byte file without SQLite's header"),
])
def test_empty_store_file_is_an_error_not_a_reseed(tmp_path, content, words) -> None:
    path = tmp_path / "calibration.sqlite"
    path.write_bytes(content)
    with pytest.raises(CalibrationError, match=re.escape(words)):
        CalibrationStore(path)
    assert path.read_bytes() == content


def test_a_named_pipe_in_place_of_the_store_is_an_error_not_a_hang(tmp_path) -> None:
    """A review: a FIFO where the store file should be made every command wait for ever (the
    check of the file's first bytes opened it, which waits for a writer)."""
    path = tmp_path / "calibration.sqlite"
    os.mkfifo(path)
    with pytest.raises(CalibrationError, match=re.escape(f"calibration store {path} is a "
                                                         "named pipe (FIFO)")):
        CalibrationStore(path)
    assert stat.S_ISFIFO(path.stat().st_mode)


def test_foreign_sqlite_file_is_not_taken_over(tmp_path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(CalibrationError, match=r"no calibration schema"):
        CalibrationStore(path)


def test_garbage_file_is_an_error_naming_it(tmp_path) -> None:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CalibrationError, match=str(path.name)):
        CalibrationStore(path)


def test_a_value_committed_before_a_rule_does_not_lock_the_store(writable, tmp_path,
                                                                 monkeypatch) -> None:
    """A value committed before a rule refused it (a reset_rounds of 150, before the 1..100
    rule) does not refuse every later commit that keeps it, as it once did for a calibration
    of another qubit; a commit that changes it is checked, and so is one into a store that
    does not hold it yet."""
    import labqpu.store.physics as physics

    with monkeypatch.context() as before_the_rule:
        before_the_rule.setitem(physics.QUBIT_CHECKS, "reset_rounds", lambda value: None)
        legacy = SnapshotBuilder.from_snapshot(writable.latest())
        legacy.set_qubit(0, "reset_rounds", 150, "active_reset")
        writable.commit(legacy.build_document())
    later = SnapshotBuilder.from_snapshot(writable.latest())
    t1 = writable.latest().qubit_value(1, "t1_s")
    later.set_qubit(1, "t1_s", t1 * 1.01, "t1")
    committed = writable.commit(later.build_document())
    assert committed.qubit_value(0, "reset_rounds") == 150
    changed = SnapshotBuilder.from_snapshot(committed)
    changed.set_qubit(0, "reset_rounds", 151, "active_reset")
    with pytest.raises(InvalidSnapshotError, match=r"1\.\.100") as info:
        changed_id = writable.latest_id()
        writable.commit(changed.build_document())
    assert info.value.parameter == "reset_rounds"
    assert writable.latest_id() == changed_id
    with CalibrationStore(tmp_path / "new.sqlite") as new, \
            pytest.raises(InvalidSnapshotError, match=r"1\.\.100"):
        new.commit(committed.to_document())
