"""``load_config`` / ``parse_config``: the shipped wiring parses; every bad input is a
``BackendConfigurationError`` naming the section and key at fault."""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path

import pytest

from labqpu.errors import BackendConfigurationError
from labqpu.rack.config import (
    LabConfig,
    default_config_path,
    load_config,
    parse_config,
)


@pytest.fixture(scope="module")
def shipped_text() -> str:
    return default_config_path().read_text()


@pytest.fixture
def doc(shipped_text) -> dict:
    """A fresh, mutable copy of the shipped document."""
    return copy.deepcopy(tomllib.loads(shipped_text))


def write(tmp_path: Path, text: str, name: str = "lab.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------- the shipped file


def test_shipped_lab5_parses():
    cfg = load_config(default_config_path())
    assert isinstance(cfg, LabConfig)
    assert cfg.device_name == "lab5"
    assert cfg.num_qubits == 5
    assert cfg.coupling_map == ((0, 1), (1, 2), (2, 3), (3, 4))
    assert len(cfg.controllers) == 1
    ctrl = cfg.controllers[0]
    assert (ctrl.name, ctrl.sample_rate_hz, ctrl.outputs, ctrl.inputs) == ("ctrl0", 1e9, 15, 5)
    assert ctrl.timeout_s == 5.0
    assert ctrl.reply_spin_s == 0.002  # the default: lab5.toml does not set it
    assert len(cfg.instruments) == 4
    kinds = {i.name: (i.kind, i.channels) for i in cfg.instruments}
    assert kinds == {"lo_drive_a": ("signal_generator", 1), "lo_drive_b": ("signal_generator", 1),
                     "lo_readout": ("signal_generator", 1), "flux_bias": ("current_source", 5)}
    assert sorted(cfg.qubits) == [0, 1, 2, 3, 4]
    for q, w in cfg.qubits.items():
        assert w.drive == ("ctrl0", q)
        assert w.flux == ("ctrl0", 5 + q)
        assert w.readout == ("ctrl0", 10 + q)
        assert w.acquire == ("ctrl0", q)
        assert w.drive_lo == ("lo_drive_a" if q % 2 == 0 else "lo_drive_b")
        assert w.readout_lo == "lo_readout"
        assert w.flux_bias == ("flux_bias", q + 1)
    assert cfg.seed_snapshot == "lab5_calibration.json"
    assert cfg.controller("ctrl0") is ctrl
    assert cfg.instrument("flux_bias").kind == "current_source"


def test_lookup_of_unknown_names(doc):
    cfg = parse_config(doc)
    with pytest.raises(BackendConfigurationError, match="'ctrl9'"):
        cfg.controller("ctrl9")
    with pytest.raises(BackendConfigurationError, match="'lo_x'"):
        cfg.instrument("lo_x")


def test_channel_map_is_the_wiring_the_compiler_sees():
    cfg = load_config(default_config_path())
    channels = cfg.channels
    assert channels.device_name == "lab5"
    assert channels.controllers == ("ctrl0",)
    assert channels.sample_rate_hz == 1e9
    assert channels.num_qubits == 5
    assert channels.qubits[3] is cfg.qubits[3]


# ----------------------------------------------------------------- bad files


def test_errors_carry_file_and_field(tmp_path, doc):
    path = tmp_path / "odd [name].toml"  # brackets in the path do not confuse the field
    del doc["device"]["num_qubits"]
    with pytest.raises(BackendConfigurationError) as info:
        parse_config(doc, path)
    assert info.value.path == str(path)
    assert info.value.field == "device.num_qubits"


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["controllers"][0].update(sample_rate_hz=-1.0), "controllers[0].sample_rate_hz"),
    (lambda d: d["instruments"][2].update(resource="nowhere"), "instruments[2].resource"),
    (lambda d: d["qubits"]["3"].update(drive="ctrl0:99"), "qubits.3.drive"),
    (lambda d: d["qubits"]["3"].update(drive="ctrl7:3"), "qubits.3.drive"),
    (lambda d: d["qubits"]["2"].update(flux_bias="flux_bias:9"), "qubits.2.flux_bias"),
    (lambda d: d["qubits"]["1"].update(readout_lo="lo_drive_x"), "qubits.1.readout_lo"),
    (lambda d: d["qubits"]["4"].update(acquire="ctrl0:0"), "qubits.4.acquire"),
    (lambda d: d["device"].update(coupling_map=[[0, 9]]), "device.coupling_map"),
    (lambda d: d["calibration"].update(store=3), "calibration.store"),
    (lambda d: d["qubits"].pop("0"), "qubits.0"),
    (lambda d: d["instruments"][0].update(max_current_a=0.01), "instruments[0].max_current_a"),
    (lambda d: d["instruments"][3].update(max_frequency_hz=7e9),
     "instruments[3].max_frequency_hz"),
    (lambda d: d["instruments"][1].update(min_frequency_hz=8e9, max_frequency_hz=6e9),
     "instruments[1].min_frequency_hz"),
    (lambda d: d["instruments"][1].update(min_frequency_hz=-5e9),
     "instruments[1].min_frequency_hz"),  # a frequency range below 0 Hz
    (lambda d: d["instruments"][2].update(max_power_dbm="20"), "instruments[2].max_power_dbm"),
    (lambda d: d["instruments"][3].update(max_current_a=0.0), "instruments[3].max_current_a"),
    # a review's case: SQLite's "unable to open database file" named neither file nor field
    (lambda d: d["calibration"].update(store="/"), "calibration.store"),
    # a review's case: [qubits.01] beside [qubits.1] replaced it without a word
    (lambda d: d["qubits"].update({"01": d["qubits"]["1"]}), "qubits.01"),
    # a review's case: 10 (mA meant) set the safety limit to 10 A
    (lambda d: d["instruments"][3].update(max_current_a=10.0), "instruments[3].max_current_a"),
])
def test_every_kind_of_error_names_its_field(doc, edit, field):
    edit(doc)
    with pytest.raises(BackendConfigurationError) as info:
        parse_config(doc)
    assert info.value.field == field, str(info.value)


def test_a_current_limit_in_milliamperes_says_the_unit(doc) -> None:
    doc["instruments"][3]["max_current_a"] = 10.0
    with pytest.raises(BackendConfigurationError, match=r"max_current_a must be <= 1, got "
                                                        r"10\.0 \(in A: flux-bias lines carry "
                                                        r"milliamperes, 10 mA is 0\.01\)"):
        parse_config(doc)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(BackendConfigurationError, match=r"not found.*nope\.toml"):
        load_config(missing)


def test_invalid_toml(tmp_path):
    path = write(tmp_path, "[device\nname = 'lab5'\n")
    with pytest.raises(BackendConfigurationError, match=r"lab\.toml.*not valid TOML"):
        load_config(path)


def test_load_config_validates(tmp_path, shipped_text):
    path = write(tmp_path, shipped_text.replace('drive = "ctrl0:3"', 'drive = "ctrl7:3"'))
    with pytest.raises(BackendConfigurationError,
                       match=r"lab\.toml \[qubits\.3\] drive: .*'ctrl7'"):
        load_config(path)


# ----------------------------------------------------------------- bad contents


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def _del(*keys):
    def edit(d):
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
    return edit


BAD = {
    "unknown controller in a port": (
        _set("qubits", "1", "drive", "ctrlX:1"),
        r"\[qubits\.1\] drive: unknown controller 'ctrlX'"),
    "output port beyond the controller": (
        _set("qubits", "2", "flux", "ctrl0:15"),
        r"\[qubits\.2\] flux: port 15 does not exist on ctrl0 \(its 15 outputs are ports 0-14\)"),
    "acquire port beyond the inputs": (
        _set("qubits", "0", "acquire", "ctrl0:5"),
        r"\[qubits\.0\] acquire: port 5 does not exist on ctrl0"),
    "port not name:port": (
        _set("qubits", "4", "readout", "ctrl0-14"), r"\[qubits\.4\] readout must be 'name:port'"),
    "port not a number": (
        _set("qubits", "4", "readout", "ctrl0:x"), r"\[qubits\.4\] readout port must be"),
    "flux_bias channel beyond the source": (
        _set("qubits", "4", "flux_bias", "flux_bias:6"), r"\[qubits\.4\] flux_bias"),
    "flux_bias channel 0 (channels count from 1)": (
        _set("qubits", "0", "flux_bias", "flux_bias:0"), r"\[qubits\.0\] flux_bias"),
    "flux_bias on a signal generator": (
        _set("qubits", "1", "flux_bias", "lo_drive_a:1"), r"\[qubits\.1\] flux_bias"),
    "drive_lo names a current source": (
        _set("qubits", "0", "drive_lo", "flux_bias"),
        r"\[qubits\.0\] drive_lo: 'flux_bias' is not a signal_generator"),
    "readout_lo names no instrument": (
        _set("qubits", "3", "readout_lo", "lo_nowhere"),
        r"\[qubits\.3\] readout_lo: 'lo_nowhere'"),
    "duplicated output": (
        _set("qubits", "1", "readout", "ctrl0:10"),
        r"\[qubits\.1\] readout: output ctrl0:10 is already the readout of qubit 0"),
    "missing qubit wiring": (_del("qubits", "3"), r"no wiring for qubit\(s\) \[3\]"),
    "qubit index out of range": (
        lambda d: d["qubits"].__setitem__("5", dict(d["qubits"]["4"])), r"\[qubits\.5\]"),
    "missing wiring key": (_del("qubits", "2", "acquire"), r"\[qubits\.2\].*'acquire'"),
    "coupling edge to a missing qubit": (
        _set("device", "coupling_map", [[0, 1], [3, 5]]), r"\[device\] coupling_map.*\(3, 5\)"),
    "coupling self-edge": (
        _set("device", "coupling_map", [[2, 2]]), r"\[device\] coupling_map.*\(2, 2\)"),
    "unknown instrument kind": (
        _set("instruments", 1, "kind", "oscilloscope"),
        r"\[\[instruments\]\] lo_drive_b: kind must be one of.*'oscilloscope'"),
    "missing controller key": (
        _del("controllers", 0, "sample_rate_hz"),
        r"\[\[controllers\]\] ctrl0: missing required key 'sample_rate_hz'"),
    "no controllers": (_set("controllers", []), r"no \[\[controllers\]\]"),
    "missing device name": (_del("device", "name"), r"\[device\]: missing required key 'name'"),
    "instrument named like the controller": (
        _set("instruments", 0, "name", "ctrl0"), r"names must be unique; \['ctrl0'\] appear"),
    "a sample rate in GHz": (
        _set("controllers", 0, "sample_rate_hz", 1.0),
        r"\[\[controllers\]\] ctrl0: sample_rate_hz must be > 1e\+06, got 1.0"),
    "a reply timeout in milliseconds": (
        _set("controllers", 0, "timeout_s", 5000.0),
        r"\[\[controllers\]\] ctrl0: timeout_s must be <= 60, got 5000.0"),
    "a reply spin in milliseconds": (
        _set("controllers", 0, "reply_spin_s", 2.0),
        r"\[\[controllers\]\] ctrl0: reply_spin_s must be <= 0.05, got 2.0"),
    "a reply spin that is no number": (
        _set("controllers", 0, "reply_spin_s", True),
        r"\[\[controllers\]\] ctrl0: reply_spin_s must be a number, got True"),
    "a negative reply spin": (
        _set("controllers", 0, "reply_spin_s", -0.001),
        r"\[\[controllers\]\] ctrl0: reply_spin_s must be >= 0, got -0.001"),
    "an instrument reply timeout in milliseconds": (
        _set("instruments", 0, "timeout_s", 2000),
        r"\[\[instruments\]\] lo_drive_a: timeout_s must be <= 60, got 2000"),
    "channels beyond any current source": (
        _set("instruments", 3, "channels", 300_000_000_000),
        r"\[\[instruments\]\] flux_bias: channels must be <= 64"),
    "a port with a non-ASCII digit": (
        _set("qubits", "0", "drive", "ctrl0:\u00b2"), r"\[qubits\.0\] drive port must be"),
    "an age limit that is no table": (
        _set("calibration", "max_age_h", "abc"),
        r"lab.toml \[calibration\] max_age_h must be a table of hours per kind"),
    "a negative age limit": (
        _set("calibration", "max_age_h", {"frequency": -1}),
        r"lab.toml \[calibration\.max_age_h\] frequency: must be a positive number of hours"),
    "a misspelt age limit kind": (
        _set("calibration", "max_age_h", {"freq": 3}),
        r"lab.toml \[calibration\.max_age_h\] freq: unknown kind; did you mean 'frequency'\?"),
}


@pytest.mark.parametrize(("value", "taken"), [(0, 0.0), (-0.0, 0.0), (0.01, 0.01), (0.05, 0.05)])
def test_a_reply_spin_of_zero_to_the_limit_is_taken(doc, value, taken):
    _set("controllers", 0, "reply_spin_s", value)(doc)
    spin = parse_config(doc, Path("/racks/lab.toml")).controller("ctrl0").reply_spin_s
    assert spin == taken and math.copysign(1.0, spin) == 1.0


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_fault(doc, case):
    edit, pattern = BAD[case]
    edit(doc)
    with pytest.raises(BackendConfigurationError, match=pattern):
        parse_config(doc, Path("/racks/lab.toml"))


@pytest.mark.parametrize(("first", "second", "clash"), [
    ("TCPIP0::10.0.0.5::5025::SOCKET", "TCPIP0::10.0.0.5::5025::SOCKET", True),
    ("TCPIP0::10.0.0.5::5025::SOCKET", "tcpip::10.0.0.5::5025::socket", True),
    ("GPIB0::12::INSTR", "gpib0::12::instr", True),
    ("TCPIP0::10.0.0.5::5025::SOCKET", "TCPIP0::10.0.0.5::5026::SOCKET", False),
    ("TCPIP0::127.0.0.1::0::SOCKET", "TCPIP0::127.0.0.1::0::SOCKET", False),  # free ports
])
def test_two_instruments_at_one_address_are_refused(doc, first, second, clash):
    """A copy-pasted resource put lo_drive_b on lo_drive_a's box: qubit 1's x pulses did
    nothing (its LO never set) and no job failed, the read-back checking the box it set."""
    doc["instruments"][0]["resource"] = first
    doc["instruments"][1]["resource"] = second
    if not clash:
        parse_config(doc, Path("/racks/lab.toml"))
        return
    with pytest.raises(BackendConfigurationError, match=r"/racks/lab.toml: lo_drive_a and "
                                                        r"lo_drive_b are both at .*; each "
                                                        r"controller and instrument needs an "
                                                        r"address of its own"):
        parse_config(doc, Path("/racks/lab.toml"))


def test_ipc_paths_that_differ_in_case_are_two_addresses(doc):
    """Paths tell case apart: two controllers at ipc:///tmp/ctrl and ipc:///tmp/CTRL were
    refused as one address."""
    doc["controllers"].append({**doc["controllers"][0], "name": "ctrl1"})
    doc["controllers"][0]["endpoint"] = "ipc:///tmp/labqpu/ctrl"
    doc["controllers"][1]["endpoint"] = "ipc:///tmp/labqpu/CTRL"
    parse_config(doc, Path("/racks/lab.toml"))
    doc["controllers"][1]["endpoint"] = "ipc:///tmp/labqpu/ctrl"
    with pytest.raises(BackendConfigurationError, match="ctrl0 and ctrl1 are both at"):
        parse_config(doc, Path("/racks/lab.toml"))


def test_a_controller_and_an_instrument_at_one_address_are_refused(doc):
    doc["controllers"][0]["endpoint"] = "tcp://10.0.0.7:5555"
    doc["instruments"][2]["resource"] = "TCPIP0::10.0.0.7::5555::SOCKET"
    with pytest.raises(BackendConfigurationError, match=r"ctrl0 and lo_readout are both at"):
        parse_config(doc, Path("/racks/lab.toml"))


def test_errors_name_the_file(doc):
    _set("qubits", "1", "drive", "ctrlX:1")(doc)
    with pytest.raises(BackendConfigurationError) as info:
        parse_config(doc, Path("/racks/lab.toml"))
    assert str(info.value).startswith("/racks/lab.toml [qubits.1] drive")


def test_duplicated_output_names_port_and_qubit(doc):
    _set("qubits", "1", "readout", "ctrl0:10")(doc)
    with pytest.raises(BackendConfigurationError, match=r"ctrl0:10|\('ctrl0', 10\)") as info:
        parse_config(doc)
    assert "qubits.1" in str(info.value) or "qubits.0" in str(info.value)


@pytest.mark.parametrize(("edit", "key"), [
    (_set("device", "num_qubits", "five"), "num_qubits"),
    (_set("device", "coupling_map", [[0, 1, 2]]), "coupling_map"),
    (_set("controllers", 0, "outputs", "many"), "outputs"),
    (_set("controllers", 0, "sample_rate_hz", 0.0), "sample_rate_hz"),
], ids=["num_qubits-not-int", "edge-of-three", "outputs-not-int", "sample-rate-zero"])
def test_malformed_values_are_configuration_errors(doc, edit, key):
    edit(doc)
    with pytest.raises(BackendConfigurationError, match=key):
        parse_config(doc)


# ----------------------------------------------------------------- endpoints and store path


def test_with_endpoints_replaces_by_name(doc):
    cfg = parse_config(doc)
    new = cfg.with_endpoints({"ctrl0": "tcp://10.0.0.5:5555",
                              "lo_readout": "TCPIP0::10.0.0.9::5025::SOCKET",
                              "not_there": "tcp://x:1"})
    assert new.controller("ctrl0").endpoint == "tcp://10.0.0.5:5555"
    assert new.instrument("lo_readout").resource == "TCPIP0::10.0.0.9::5025::SOCKET"
    assert new.instrument("lo_drive_a").resource == cfg.instrument("lo_drive_a").resource
    assert new.controller("ctrl0").sample_rate_hz == 1e9
    assert new.qubits == cfg.qubits
    # the original is unchanged
    assert cfg.controller("ctrl0").endpoint == "tcp://127.0.0.1:0"
    assert cfg.instrument("lo_readout").resource == "TCPIP0::127.0.0.1::0::SOCKET"


def test_default_store_path_under_labqpu_home(tmp_path, monkeypatch, shipped_text):
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "home"))
    cfg = load_config(write(tmp_path, shipped_text))
    assert cfg.store_path == tmp_path / "home" / "lab5" / "calibration.sqlite"


def test_an_empty_labqpu_home_means_the_default(tmp_path, monkeypatch, shipped_text):
    """``LABQPU_HOME=`` (empty) is the default home, not the current directory."""
    monkeypatch.setenv("LABQPU_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, shipped_text))
    assert cfg.store_path == tmp_path / "user" / ".labqpu" / "lab5" / "calibration.sqlite"


def test_a_tilde_in_labqpu_home_is_the_users_home(tmp_path, monkeypatch, shipped_text):
    """A review's case: ``LABQPU_HOME='~/labqpu'`` (quoted, so the shell left ``~``) made a
    new store under each working directory, the calibrations seeming lost."""
    monkeypatch.setenv("LABQPU_HOME", "~/labqpu")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, shipped_text))
    assert cfg.store_path == tmp_path / "user" / "labqpu" / "lab5" / "calibration.sqlite"


def test_default_store_path_uses_device_name(tmp_path, monkeypatch, doc):
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    doc["device"]["name"] = "rack_b"
    assert parse_config(doc).store_path == tmp_path / "rack_b" / "calibration.sqlite"


def test_relative_store_resolves_against_file_folder(tmp_path, monkeypatch, shipped_text):
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "racks" / "b"
    folder.mkdir(parents=True)
    text = shipped_text.replace('store = ""', 'store = "state/cal.sqlite"')
    cfg = load_config(write(folder, text))
    assert cfg.store_path == folder / "state" / "cal.sqlite"
    # a wiring file named relative to the working directory: the store's path is still whole
    # (`labqpu status` printed "state/cal.sqlite", and a later chdir would move the store)
    monkeypatch.chdir(folder)
    assert load_config(Path("lab.toml")).store_path == folder / "state" / "cal.sqlite"


def test_absolute_store_kept(tmp_path, shipped_text):
    target = tmp_path / "abs" / "c.sqlite"
    folder = tmp_path / "racks"
    folder.mkdir()
    text = shipped_text.replace('store = ""', f'store = "{target.as_posix()}"')
    assert load_config(write(folder, text)).store_path == target


# ----------------------------------------------------------------- sections of the wrong type


@pytest.mark.parametrize(("edit", "pattern"), [
    (_set("controllers", {"name": "ctrl0"}), r"\[\[controllers\]\] must be an array of tables"),
    (_set("controllers", [1]), r"\[\[controllers\]\] entry 0: must be a table"),
    (_set("instruments", {"name": "lo"}), r"\[\[instruments\]\] must be an array of tables"),
    (_set("instruments", 0, "x"), r"\[\[instruments\]\] entry 0: must be a table"),
    (_set("qubits", [1]), r"\[qubits\] must be a table of \[qubits\.N\] tables, got an array"),
    (_set("qubits", "0", "x"), r"\[qubits\.0\] must be a table, got a string"),
    (_set("calibration", "x"), r"\[calibration\] must be a table, got a string"),
    (_set("device", "lab5"), r"\[device\] must be a table, got a string"),
    (_set("device", 5), r"\[device\] must be a table, got a number"),
    (_set("device", "coupling_map", 3), r"\[device\] coupling_map must be an array"),
], ids=["controllers-table", "controller-entry-int", "instruments-table",
        "instrument-entry-string", "qubits-list", "qubit-entry-string", "calibration-string",
        "device-string", "device-int", "coupling-map-int"])
def test_section_of_wrong_type(doc, edit, pattern):
    edit(doc)
    with pytest.raises(BackendConfigurationError, match=pattern):
        parse_config(doc, Path("/racks/lab.toml"))


# ----------------------------------------------------------------- finite numbers


@pytest.mark.parametrize(("section", "key", "value"), [
    ("controllers", "sample_rate_hz", float("nan")),
    ("controllers", "sample_rate_hz", float("inf")),
    ("controllers", "timeout_s", float("inf")),
    ("controllers", "timeout_s", float("nan")),
    ("instruments", "timeout_s", float("inf")),
])
def test_non_finite_numbers_rejected(doc, section, key, value):
    doc[section][0][key] = value
    with pytest.raises(BackendConfigurationError,
                       match=rf"\[\[{section}\]\] \w+: {key} must be a finite number"):
        parse_config(doc)


def test_non_finite_from_toml_text(tmp_path, shipped_text):
    path = write(tmp_path, shipped_text.replace("sample_rate_hz = 1.0e9", "sample_rate_hz = nan"))
    with pytest.raises(BackendConfigurationError, match=r"ctrl0: sample_rate_hz must be a finite"):
        load_config(path)


# ----------------------------------------------------------------- device name


@pytest.mark.parametrize("name", ["../../etc", "a/b", "/abs", ".", "..", "", "with space",
                                  "back\\slash", "lab5\n"])
def test_device_name_must_be_a_safe_path_component(doc, name):
    doc["device"]["name"] = name
    with pytest.raises(BackendConfigurationError, match=r"\[device\]: name must be"):
        parse_config(doc)


def test_device_name_must_be_a_string(doc):
    doc["device"]["name"] = 5
    with pytest.raises(BackendConfigurationError, match=r"\[device\]: name must be a string"):
        parse_config(doc)


@pytest.mark.parametrize("name", ["lab5", "rack_b", "fridge-2.v1", "..x", "A.B"])
def test_device_name_accepted(tmp_path, monkeypatch, doc, name):
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    doc["device"]["name"] = name
    assert parse_config(doc).store_path == tmp_path / name / "calibration.sqlite"


# ----------------------------------------------------------------- calibration keys


@pytest.mark.parametrize(("key", "value"), [
    ("seed_snapshot", 5), ("seed_snapshot", ["a.json"]), ("seed_snapshot", True),
    ("store", 0), ("store", {"path": "x"}),
])
def test_calibration_keys_must_be_strings(doc, key, value):
    doc["calibration"][key] = value
    with pytest.raises(BackendConfigurationError,
                       match=rf"\[calibration\]: {key} must be a string"):
        parse_config(doc)


def test_empty_or_missing_seed_snapshot_is_none(doc):
    doc["calibration"]["seed_snapshot"] = ""
    assert parse_config(doc).seed_snapshot is None
    del doc["calibration"]["seed_snapshot"]
    assert parse_config(doc).seed_snapshot is None
    del doc["calibration"]
    assert parse_config(doc).seed_snapshot is None


# ----------------------------------------------------------------- endpoints and resources


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:0", "tcp://10.0.0.5:5555", "tcp://ctrl0.lab:65535", "tcp://[::1]:5555",
    "ipc:///tmp/ctrl0.sock",
])
def test_good_endpoints(doc, endpoint):
    doc["controllers"][0]["endpoint"] = endpoint
    assert parse_config(doc).controller("ctrl0").endpoint == endpoint


@pytest.mark.parametrize("endpoint", [
    "no such host", "abc", "10.0.0.5:5555", "udp://10.0.0.5:5555", "tcp://10.0.0.5",
    "tcp://:5555", "tcp://10.0.0.5:", "tcp://10.0.0.5:65536", "tcp://10.0.0.5:-1",
    "tcp://10.0.0.5:http", "tcp://a b:1", "ipc://", "", 5555,
])
def test_bad_endpoints(doc, endpoint):
    doc["controllers"][0]["endpoint"] = endpoint
    with pytest.raises(BackendConfigurationError, match=r"\[\[controllers\]\] ctrl0: endpoint"):
        parse_config(doc)


@pytest.mark.parametrize("resource", [
    "TCPIP0::127.0.0.1::0::SOCKET", "TCPIP::10.0.0.21::5025::SOCKET",
    "tcpip1::lo.lab::5025::socket", "TCPIP0::10.0.0.21::INSTR",
    "TCPIP0::10.0.0.21::hislip0::INSTR", "GPIB0::12::INSTR",
    "USB0::0x0957::0x8B18::MY123::INSTR", "ASRL/dev/ttyUSB0::INSTR",
])
def test_good_resources(doc, resource):
    doc["instruments"][0]["resource"] = resource
    assert parse_config(doc).instrument("lo_drive_a").resource == resource


@pytest.mark.parametrize("resource", [
    "abc", "tcp://x", "tcp://10.0.0.21:5025", "", "   ", "TCPIP0", "TCPIP0::",
    "TCPIP0::10.0.0.21", "TCPIP0::10.0.0.21::5025", "TCPIP0::10.0.0.21::5025::SOCKET::x",
    "TCPIP0::10.0.0.21::99999::SOCKET", "TCPIP0::10.0.0.21::port::SOCKET",
    "TCPIP0::::5025::SOCKET", "TCPIPX::10.0.0.21::5025::SOCKET", "GPIB0::::INSTR",
    "VXI0::1::INSTR", 5025, ["TCPIP0::h::1::SOCKET"],
])
def test_bad_resources(doc, resource):
    doc["instruments"][0]["resource"] = resource
    with pytest.raises(BackendConfigurationError,
                       match=r"\[\[instruments\]\] lo_drive_a: resource"):
        parse_config(doc)


def test_duplicate_coupling_edge_is_refused(doc):
    doc["device"]["coupling_map"] = [[0, 1], [1, 2], [1, 0]]
    with pytest.raises(BackendConfigurationError,
                       match=r"coupling_map lists the edge \(1, 0\) twice"):
        parse_config(doc)


def test_unassigned_addresses_name_each_port_0(shipped_text, tmp_path):
    config = load_config(write(tmp_path, shipped_text))
    named = config.unassigned_addresses()
    assert "controller ctrl0 (tcp://127.0.0.1:0)" in named
    assert len(named) == len(config.controllers) + len(config.instruments)
    text = shipped_text.replace('endpoint = "tcp://127.0.0.1:0"',
                                'endpoint = "tcp://127.0.0.1:5555"')
    only_instruments = load_config(write(tmp_path, text)).unassigned_addresses()
    assert only_instruments and all(a.startswith("instrument ") for a in only_instruments)
    ports = iter(range(5025, 5100))
    real = re.sub("::0::SOCKET", lambda _: f"::{next(ports)}::SOCKET", text)
    assert load_config(write(tmp_path, real)).unassigned_addresses() == []


@pytest.mark.parametrize(("edit", "field", "hint"), [
    (lambda d: d.update(qubit={}), "qubit", "did you mean 'qubits'?"),
    (lambda d: d["device"].update(num_qbits=5), "device.num_qbits", "did you mean 'num_qubits'?"),
    (lambda d: d["calibration"].update(stor="/elsewhere.sqlite"), "calibration.stor",
     "did you mean 'store'?"),
    (lambda d: d["controllers"][0].update(timeout_sec=30.0), "controllers[0].timeout_sec",
     "did you mean 'timeout_s'?"),
    (lambda d: d["instruments"][3].update(max_curent_a=0.01), "instruments[3].max_curent_a",
     "did you mean 'max_current_a'?"),
    (lambda d: d["qubits"]["2"].update(readout_lo_power=3), "qubits.2.readout_lo_power",
     "did you mean 'readout_lo'?"),
    (lambda d: d["qubits"]["0"].update(colour="red"), "qubits.0.colour", ""),
])
def test_unknown_keys_are_refused_with_the_nearest_known_one(tmp_path, doc, edit, field, hint):
    """A misspelt key would otherwise be ignored and its default used (a store elsewhere, a
    10 s timeout): the error names the file, the section, the key and the nearest known key."""
    edit(doc)
    path = tmp_path / "lab.toml"
    with pytest.raises(BackendConfigurationError) as info:
        parse_config(doc, path)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(str(path)) and f"unknown key {field.split('.')[-1]!r}" in message
    assert hint in message and ("did you mean" in message) == bool(hint), message


def test_every_documented_key_loads_in_the_backend_and_the_simulator(tmp_path, shipped_text):
    """A wiring file that uses every optional key docs/wiring.md describes (age limits,
    instrument limits and timeouts, the simulator's seed, noise, timing, arm timeout and fault
    socket) loads in both parsers; the shipped wiring files of every built-in device load."""
    from labqpu.firmware_sim.device import load_rack
    from labqpu.firmware_sim.faults import fault_control_enabled
    from labqpu.rack.builtin import BUILTIN_DEVICES
    from labqpu.rack.config import builtin_config_path

    text = (shipped_text
            .replace('seed_snapshot = "lab5_calibration.json"\n',
                     'seed_snapshot = "lab5_calibration.json"\n'
                     '[calibration.max_age_h]\ncoherence = 6.0\nflux = 100\n')
            .replace('device = "lab5"\n',
                     'device = "lab5"\nseed = 7\nnoise = false\nsync_arm_timeout_s = 2.5\n'
                     '[simulator.timing.ctrl0]\ngranularity = 4\nmin_length = 16\n'
                     '[simulator.faults]\ncontrol = true\n')
            .replace('name = "lo_readout"\nkind = "signal_generator"\n',
                     'name = "lo_readout"\nkind = "signal_generator"\ntimeout_s = 3.0\n'
                     'min_frequency_hz = 1e9\nmax_frequency_hz = 12e9\n'
                     'min_power_dbm = -20.0\nmax_power_dbm = 20.0\n')
            .replace('channels = 5\n', 'channels = 5\nmax_current_a = 0.02\n'))
    for key in ("max_age_h", "sync_arm_timeout_s", "granularity", "control = true",
                "max_frequency_hz", "max_current_a"):
        assert key in text, key
    path = write(tmp_path, text)
    config = load_config(path)
    assert config.instrument("lo_readout").timeout_s == 3.0
    assert config.instrument("flux_bias").max_current_a == 0.02
    rack = load_rack(path)
    assert (rack.simulator_seed, rack.simulator_noise, rack.simulator_arm_timeout_s) \
        == (7, False, 2.5)
    assert dict(rack.controllers[0].timing) == {"granularity": 4, "min_length": 16}
    assert fault_control_enabled(path)
    for device in BUILTIN_DEVICES:
        assert load_config(builtin_config_path(device)).device_name == device
        assert load_rack(builtin_config_path(device)).device_name == device


def test_the_simulator_names_a_timing_table_of_no_controller_and_missing_qubit_keys(
        tmp_path, shipped_text):
    """``labqpu sim`` would otherwise ignore a misspelt controller name in
    ``[simulator.timing.NAME]`` and report a missing qubit key as a bare KeyError."""
    from labqpu.firmware_sim.device import load_rack

    timing = write(tmp_path, shipped_text.replace(
        'device = "lab5"\n', 'device = "lab5"\n[simulator.timing.ctlr0]\ngranularity = 4\n'),
        "timing.toml")
    with pytest.raises(ValueError, match=r"timing\.toml: \[simulator\.timing\.ctlr0\] names no "
                                         r"controller of the wiring \(it has ctrl0\)"):
        load_rack(timing)
    missing = write(tmp_path, shipped_text.replace('readout_lo = "lo_readout"\n', "", 1),
                    "missing.toml")
    with pytest.raises(ValueError, match=r"missing\.toml: \[qubits\.0\] has no readout_lo"):
        load_rack(missing)


def test_a_wiring_file_that_is_not_utf8_is_an_error_naming_it(tmp_path):
    """A lab.toml saved as UTF-16 (as some editors do) is refused naming the file, not with a
    bare UnicodeDecodeError."""
    path = tmp_path / "lab.toml"
    path.write_text(default_config_path().read_text(), encoding="utf-16")
    with pytest.raises(BackendConfigurationError, match=f"{path}: not valid TOML"):
        load_config(path)


def test_a_directory_given_as_the_wiring_file_says_so(tmp_path):
    with pytest.raises(BackendConfigurationError, match=f"{tmp_path} is a directory; give the "
                                                        "wiring file"):
        load_config(tmp_path)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('endpoint = "tcp://127.0.0.1:0"', 'endpoint = "tcp://127.0.0.1:93071"',
     r"'tcp://127\.0\.0\.1:93071' has port 93071; TCP ports are 0-65535"),
    ('resource = "TCPIP0::127.0.0.1::0::SOCKET"', 'resource = "TCPIP0::127.0.0.1::99999::SOCKET"',
     r"has port 99999; TCP ports are 0-65535"),
    ('name = "lo_drive_a"\nkind = "signal_generator"\n',
     'name = "lo_drive_a"\nkind = "signal_generator"\nmax_current_a = 0.001\n',
     r"instrument lo_drive_a: max_current_a is no limit of a signal_generator \(it takes "
     r"min_frequency_hz, "),
])
def test_the_simulator_refuses_a_port_past_65535_and_a_limit_of_the_other_kind(
        tmp_path, shipped_text, old, new, message):
    """A controller at port 93071 listened at 27535 (getaddrinfo wraps the number); an
    instrument at 99999, or an LO given ``max_current_a``, ended the simulator with a
    traceback (OverflowError, TypeError) instead of a line naming the file."""
    from labqpu.firmware_sim.device import load_rack

    assert old in shipped_text
    path = write(tmp_path, shipped_text.replace(old, new, 1), "bad.toml")
    with pytest.raises(ValueError, match=r"bad\.toml: .*" + message):
        load_rack(path)

