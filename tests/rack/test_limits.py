"""A calibration the rack's instruments cannot be set to is refused on commit: LO frequencies
and powers inside the signal generators' ranges, flux biases inside the current sources'
limits, drive and readout tones within half the sample rate of their LO, and pulse, readout,
reset and CZ durations on the controllers' sample grid. The limits come from the wiring file,
and the drivers and the simulated instruments enforce the same ones."""

from __future__ import annotations

import copy
import socket
from dataclasses import replace

import pytest

from labqpu.errors import InstrumentLimitError, InvalidSnapshotError
from labqpu.firmware_sim.rack import SimulatedRack
from labqpu.rack.config import builtin_config_path, default_config_path, load_config
from labqpu.rack.hardware import RackConnection
from labqpu.rack.limits import check_against_wiring, wiring_limits
from labqpu.store import CalibrationStore, SnapshotBuilder
from labqpu.testing import shipped_export


@pytest.mark.parametrize("device", ["lab3", "lab5", "lab10"])
def test_the_shipped_snapshots_fit_their_racks(device) -> None:
    check_against_wiring(shipped_export(device)["document"],
                         load_config(builtin_config_path(device)))


def _with(document: dict, qubit: int, name: str, value: float) -> dict:
    out = copy.deepcopy(document)
    out["qubits"][str(qubit)][name]["value"] = value
    return out


@pytest.mark.parametrize(("qubit", "name", "value", "named"), [
    (2, "flux_bias_a", 0.02, "current source 'flux_bias' channel 3 [-0.01, 0.01]"),
    (1, "drive_lo_frequency_hz", 13e9, "signal generator 'lo_drive_b'"),
    (0, "readout_lo_power_dbm", 30.0, "power range (dBm) of signal generator 'lo_readout'"),
    (3, "frequency_hz", 6.3e9, "the band ctrl0 can reach from drive_lo_frequency_hz"),
    (4, "readout_frequency_hz", 6.6e9, "the band ctrl0 can reach from readout_lo_frequency_hz"),
    # a review's case: committed, then every job on qubit 0 failed at run()
    (0, "pulse_sigma_s", 1e-3, "Gaussian sigma must be 0.001..14142.1 samples"),
])
def test_a_value_the_rack_cannot_play_is_refused_and_nothing_is_written(
        lab_backend, qubit, name, value, named) -> None:
    """Through the running provider's store (on the simulator): the error names the qubit, the
    parameter and the instrument, and the newest snapshot stays the same."""
    store = lab_backend.store
    before = store.latest_id()
    document = _with(lab_backend.snapshot.to_document(), qubit, name, value)
    with pytest.raises(InvalidSnapshotError) as info:
        store.commit(document)
    assert info.value.subject == f"qubit {qubit}" and info.value.parameter == name
    assert named in str(info.value), str(info.value)
    assert store.latest_id() == before


@pytest.mark.parametrize(("edit", "subject", "named"), [
    (lambda b: b.set_qubit(9, "t1_s", 4e-5, "manual"), "qubit 9",
     "qubit 9 is not on device lab5, which has qubits 0-4"),
    (lambda b: b.set_pair((0, 3), "cz_amplitude", 0.3, "manual"), "pair 0-3",
     "0-3 is not an edge of device lab5"),
    (lambda b: b.set_gate("sx:9", "error", 1e-3, "manual"), "gate 'sx:9'",
     "qubit 9 is not on device lab5"),
    (lambda b: b.set_gate("cz:1-4", "error", 1e-2, "manual"), "gate 'cz:1-4'",
     "1-4 is not an edge of device lab5"),
])
def test_a_qubit_edge_or_gate_the_device_lacks_is_refused_and_nothing_is_written(
        lab_backend, edit, subject, named) -> None:
    """A review committed qubit 9, pair 0-3 and gate sx:9 to lab5's store, unremarked."""
    store = lab_backend.store
    before = store.latest_id()
    builder = SnapshotBuilder.from_snapshot(lab_backend.snapshot)
    edit(builder)
    with pytest.raises(InvalidSnapshotError) as info:
        builder.commit(store)
    assert info.value.subject == subject and named in str(info.value), str(info.value)
    assert store.latest_id() == before


@pytest.mark.parametrize(("subject", "name", "value"), [
    ("qubit 0", "pulse_duration_s", 20.5e-9), ("qubit 3", "readout_duration_s", 1.2345e-6),
    ("qubit 1", "reset_duration_s", 1e-6 + 0.25e-9), ("pair 0-1", "cz_duration_s", 60.5e-9),
])
def test_a_duration_off_the_sample_grid_is_refused_and_nothing_is_written(
        lab_backend, subject, name, value) -> None:
    """A duration the compiler cannot play as whole samples at the controllers' 1 GS/s (a
    20.5 ns pulse was committed, and then no provider could start on the store) is refused,
    naming the subject, the parameter and the nearest duration on the grid."""
    store = lab_backend.store
    before = store.latest_id()
    document = copy.deepcopy(lab_backend.snapshot.to_document())
    section, key = ("pairs", "0-1") if subject.startswith("pair") else ("qubits", subject[6:])
    document[section][key].setdefault(name, {"value": 0.0, "experiment": "manual"})
    document[section][key][name]["value"] = value
    with pytest.raises(InvalidSnapshotError, match=r"samples at the controllers' 1e\+09 Hz, "
                                                   r"not a whole number \(nearest: ") as info:
        store.commit(document)
    assert info.value.subject == subject and info.value.parameter == name
    assert store.latest_id() == before


def test_an_off_grid_duration_a_store_holds_already_does_not_lock_it(tmp_path) -> None:
    """A store whose newest snapshot holds an off-grid duration from before the rule (written
    here through a store without the rack's limits) takes commits that leave it as it is; one
    that changes it to another off-grid value is refused (the rule locked every later commit
    out, calibration runs included)."""
    config = load_config(builtin_config_path("lab5"))
    document = copy.deepcopy(shipped_export("lab5")["document"])
    document["qubits"]["0"]["pulse_duration_s"]["value"] = 40.5e-9
    path = tmp_path / "s.sqlite"
    with CalibrationStore(path) as unchecked:
        unchecked.commit(document)
    with CalibrationStore(path, validators=(wiring_limits(config),)) as store:
        changed = _with(document, 1, "t1_s", 61e-6)
        assert store.commit(changed).qubits[1]["t1_s"].value == 61e-6
        with pytest.raises(InvalidSnapshotError, match=r"40.25 samples") as info:
            store.commit(_with(changed, 0, "pulse_duration_s", 40.25e-9))
        assert info.value.parameter == "pulse_duration_s"


@pytest.mark.parametrize(("name", "value", "unit", "other"), [
    ("readout_lo_frequency_hz", 7.201e9, "Hz", 1), ("readout_lo_power_dbm", 9.0, "dBm", 1),
    ("drive_lo_frequency_hz", 5.52e9, "Hz", 2)])
def test_one_signal_generator_is_asked_for_one_setting(tmp_path, name, value, unit,
                                                       other) -> None:
    """Qubit 0's LO setting moved alone on a signal generator it shares (lab5: one readout LO
    for all, one drive LO for qubits 0 and 2) is refused, naming both qubits; the store took
    it, and then every circuit measuring qubit 0 and another qubit was refused at run().
    A disagreement the parent holds already does not lock the store."""
    config = load_config(builtin_config_path("lab5"))
    document = copy.deepcopy(shipped_export("lab5")["document"])
    moved = _with(document, 0, name, value)
    path = tmp_path / "s.sqlite"
    with CalibrationStore(path, validators=(wiring_limits(config),)) as store:
        store.commit(document)
        with pytest.raises(InvalidSnapshotError, match=rf"{value!r} {unit}, while qubit "
                                                       rf"{other} asks the same signal "
                                                       r"generator") as info:
            store.commit(moved)
        assert (info.value.subject, info.value.parameter) == ("qubit 0", name)
        assert "one LO has one" in str(info.value)
        assert store.latest_id() == 1
    with CalibrationStore(path) as unchecked:
        unchecked.commit(moved)
    with CalibrationStore(path, validators=(wiring_limits(config),)) as store:
        assert store.commit(_with(moved, 1, "t1_s", 61e-6)).qubits[1]["t1_s"].value == 61e-6


def test_a_wiring_narrowed_since_does_not_lock_the_store(tmp_path) -> None:
    """A dead coupler (3-4) taken out of the coupling map: the store's snapshot still holds
    pair 3-4, and every later commit carries it forward; a review found each of them, and
    every rollback, refused. What the parent holds unchanged is not checked again; a pair 3-4
    with new values still is."""
    config = load_config(default_config_path())
    narrowed = replace(config, coupling_map=tuple(e for e in config.coupling_map
                                                  if sorted(e) != [3, 4]))
    path = tmp_path / "s.sqlite"
    with CalibrationStore(path, validators=(wiring_limits(config),)) as store:
        store.import_json(shipped_export())
    with CalibrationStore(path, validators=(wiring_limits(narrowed),)) as store:
        latest = store.latest()
        assert (3, 4) in latest.pairs
        t1 = latest.qubits[0]["t1_s"].value
        SnapshotBuilder.from_snapshot(latest).set_qubit(0, "t1_s", 0.9 * t1, "manual") \
            .commit(store)
        assert store.rollback(latest.snapshot_id).snapshot_id == latest.snapshot_id + 2
        moved = SnapshotBuilder.from_snapshot(store.latest())
        moved.set_pair((3, 4), "cz_amplitude", 0.31, "manual")
        with pytest.raises(InvalidSnapshotError, match="3-4 is not an edge of device lab5"):
            moved.commit(store)


def _raw_replies(server, lines: bytes, count: int) -> list[str]:
    """The first ``count`` reply lines of a simulated instrument to ``lines``, sent on a raw
    TCP socket (no driver in between)."""
    with socket.create_connection((server.host, server.port), timeout=5) as conn:
        conn.sendall(lines)
        replies = b""
        while replies.count(b"\n") < count:
            chunk = conn.recv(200)
            assert chunk, replies
            replies += chunk
    return replies.decode().splitlines()[:count]


def test_a_narrower_wiring_range_binds_the_store_the_driver_and_the_simulated_lo(
        tmp_path) -> None:
    """A wiring file that gives the readout LO a 7.1 GHz ceiling: the store refuses the shipped
    snapshot (its readout LO sits at 7.2 GHz) and stays empty; the driver refuses to send
    7.2 GHz; the simulated SGS100A started from the same file refuses it too."""
    text = default_config_path().read_text()
    marker = 'name = "lo_readout"\nkind = "signal_generator"\n'
    assert marker in text
    path = tmp_path / "lab.toml"
    path.write_text(text.replace(marker, marker + "max_frequency_hz = 7.1e9\n"))
    config = load_config(path)
    assert config.instrument("lo_readout").frequency_range_hz == (1e6, 7.1e9)

    with CalibrationStore(tmp_path / "s.sqlite", validators=(wiring_limits(config),)) as store:
        with pytest.raises(InvalidSnapshotError, match="'lo_readout'") as info:
            store.import_json(shipped_export())
        assert info.value.parameter == "readout_lo_frequency_hz"
        assert store.latest_id() is None

    with SimulatedRack(path, seed=1) as simulated:
        server = simulated.instruments["lo_readout"]
        connection = RackConnection(config.with_endpoints(simulated.endpoints()))
        try:
            lo = connection.signal_generator("lo_readout")
            with pytest.raises(InstrumentLimitError, match=r"\[1000000\.0, 7100000000\.0\]"):
                lo.frequency_hz = 7.2e9
            lo.frequency_hz = 7.0e9
            assert lo.frequency_hz == 7.0e9
        finally:
            connection.close()
        error, frequency = _raw_replies(server, b"FREQ 7.2e9\nSYST:ERR?\nFREQ?\n", 2)
        assert not error.startswith("0,"), error
        assert float(frequency) == 7.0e9


def test_a_range_that_leaves_out_the_factory_setting_powers_on_at_its_edge(tmp_path) -> None:
    """A 4-8 GHz drive LO with a -10 dBm floor: the simulator would not start ("frequency_hz
    =1000000000.0 is outside [4e9, 8e9]": its power-on 1 GHz, -30 dBm was checked against the
    file's range). It now powers on, and returns after ``*RST``, at the range's nearest edge."""
    text = default_config_path().read_text()
    marker = 'name = "lo_drive_a"\nkind = "signal_generator"\n'
    assert marker in text
    path = tmp_path / "lab.toml"
    path.write_text(text.replace(marker, marker + "min_frequency_hz = 4e9\n"
                                 "max_frequency_hz = 8e9\nmin_power_dbm = -10.0\n"))
    with SimulatedRack(path, seed=1) as simulated:
        server = simulated.instruments["lo_drive_a"]
        powered_on, after_reset, error = _raw_replies(
            server, b"FREQ?;POW?\n*RST\nFREQ?;POW?\nSYST:ERR?\n", 3)
        assert [float(v) for v in powered_on.split(";")] == [4e9, -10.0]
        assert after_reset == powered_on and error.startswith("0,"), (after_reset, error)


def test_a_rollback_restores_an_off_grid_duration_the_store_held(tmp_path) -> None:
    """Rolling back to a snapshot the store holds from before the grid rule restores it as it
    was (the rule refused the rollback: it checked the restored values against the newest
    snapshot, not against the one restored)."""
    config = load_config(builtin_config_path("lab5"))
    document = copy.deepcopy(shipped_export("lab5")["document"])
    path = tmp_path / "s.sqlite"
    with CalibrationStore(path) as unchecked:
        old = unchecked.commit(_with(document, 0, "reset_duration_s", 1.0003e-6)).snapshot_id
    with CalibrationStore(path, validators=(wiring_limits(config),)) as store:
        store.commit(_with(document, 0, "reset_duration_s", 1e-6))
        restored = store.rollback(old)
        assert restored.qubits[0]["reset_duration_s"].value == 1.0003e-6
