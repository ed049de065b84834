"""Design files (``labqpu.calibration.design``): every shipped one loads; a missing, misspelt,
mistyped or out-of-range value is refused by name before anything is measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labqpu.calibration.design import DEVICE_FIELDS, default_design_path, load_design
from labqpu.cli import main
from labqpu.errors import CalibrationError

LAB3 = default_design_path("lab3").read_text()


@pytest.mark.parametrize("device, qubits", [("lab3", 3), ("lab5", 5), ("lab10", 10)])
def test_every_shipped_design_loads(device: str, qubits: int) -> None:
    work = load_design(device=device, num_qubits=qubits)
    assert sorted(work.qubits) == list(range(qubits))
    assert set(DEVICE_FIELDS) <= set(work.device) and work.device["name"] == device


def _lab3_without_last_qubit() -> str:
    return "[[qubit]]".join(LAB3.split("[[qubit]]")[:-1])


@pytest.mark.parametrize("text, message", [
    (LAB3.replace("readout_amplitude", "readout_amplitud"),
     r"\[device\]: unknown field 'readout_amplitud' \(did you mean 'readout_amplitude'\? "
     r"known: .*readout_amplitude.*; a note goes in a TOML comment, after #\)"),
    (LAB3.replace("[device]", "[device]\nfridge_temp_mk = 12.0"),
     r"\[device\]: unknown field 'fridge_temp_mk' \(known: .*; a note goes in a TOML comment"),
    ("\n".join(line for line in LAB3.splitlines() if not line.startswith("pulse_sigma_s")),
     r"\[device\]: missing pulse_sigma_s"),
    (LAB3.replace("pulse_duration_s = ", 'pulse_duration_s = "40ns" #'),
     r"pulse_duration_s = '40ns': must be a pulse length in \(0, 0.001\] s"),
    (LAB3.replace("readout_amplitude = ", "readout_amplitude = 1.5 #"),
     r"readout_amplitude = 1.5: must be a fraction of full scale"),
    (LAB3.replace("frequency_hz = ", "frequency_hz = -5e9 #", 2).replace(
        "readout_lo_frequency_hz = -5e9 #", "readout_lo_frequency_hz = "),
     r"\[\[qubit\]\] index 0, frequency_hz = -5000000000.0: must be a finite number > 0"),
    (LAB3.replace('name = "lab3"', 'name = "lab5"'),
     r"holds the design values of device 'lab5', not of 'lab3'"),
    (_lab3_without_last_qubit(), r"has no \[\[qubit\]\] table for qubit\(s\) 2 of device lab3"),
    (LAB3 + "\n[[qubit]]\nindex = 3\nfrequency_hz = 5e9\nanharmonicity_hz = -2.5e8\n"
            "resonator_hz = 7e9\n", r"\[\[qubit\]\] index 3: device lab3 has qubits 0-2"),
    (LAB3 + "\n[[qubit]]\nindex = 1\nfrequency_hz = 5e9\nanharmonicity_hz = -2.5e8\n"
            "resonator_hz = 7e9\n", r"two \[\[qubit\]\] tables have index 1"),
    (LAB3.replace("resonator_hz = ", "resonator_hz_typo = ", 1),
     r"unknown field 'resonator_hz_typo' \(did you mean 'resonator_hz'\? known: "),
    ("x = [\n", r"cannot be read"),
    (LAB3 + "\n[pair]\nx = 1\n", r"unknown table or field 'pair' \(a design file holds "
                                  r"\[device\] and \[\[qubit\]\] tables\)"),
    (LAB3.replace("readout_lo_frequency_hz = ", "readout_lo_frequency_hz = 1" + "0" * 400
                  + " #"), r"readout_lo_frequency_hz = 10+: must be a finite number > 0"),
])
def test_a_bad_design_file_is_refused_naming_the_field(tmp_path: Path, text: str,
                                                        message: str) -> None:
    path = tmp_path / "design.toml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message) as info:
        load_design(path, device="lab3", num_qubits=3)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, message", [
    (LAB3.replace("pulse_duration_s = ", "pulse_duration_s = 40.5e-9 #"),
     r"\(\[device\] values apply to every qubit\): qubit 0, parameter 'pulse_duration_s': "
     r"4.05e-08 s is 40.5 samples at the controllers' 1e\+09 Hz"),
    (LAB3.replace("index = 0\n", "index = 0\nflux_bias_a = 0.5\n", 1),
     r"qubit 0, parameter 'flux_bias_a': 0.5 is outside the output limit \(A\) of current "
     r"source 'flux_bias'"),
    # a review's cases: both failed minutes in, naming neither file nor field (GHz and mA
    # written where Hz and A are meant)
    (LAB3.replace("frequency_hz = 5.555e9", "frequency_hz = 5.555", 1),
     r"the bootstrap would set drive LO '\w+' \(qubits [0-9, ]+\) to -0.1000 GHz, 100 MHz "
     r"below qubit 0's frequency_hz = 5.555, outside the generator's range .*lab3.toml, "
     r"instrument '\w+': min_frequency_hz, max_frequency_hz\); nothing was measured"),
    (LAB3.replace("flux_bias_search_a = 0.25e-3", "flux_bias_search_a = 0.25", 1),
     r"\[device\] flux_bias_search_a = 0.25: the sweet-spot search spans \+-0.25 A, beyond "
     r"the output limit of current source '\w+' that biases qubit 0, .*mA written as A\?"),
])
def test_the_cli_checks_a_design_against_the_racks_limits(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        text: str, message: str) -> None:
    """What the rack cannot play (a pulse off the sample grid, a flux bias beyond the current
    source) is refused before anything starts: the bootstrap measured for a minute and then
    failed at commit, or at its first job with a hardware error."""
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "home"))
    design = tmp_path / "design.toml"
    design.write_text(text)
    assert main(["calibrate", "--bootstrap", "--config", "lab3", "--design", str(design),
                 "--no-rb"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and str(design) in err, err
    assert not (tmp_path / "home").exists()


def test_a_device_without_shipped_design_values_says_how_to_give_them() -> None:
    with pytest.raises(CalibrationError, match=r"no design values ship with labqpu for device "
                                               r"'fridge2': name the chip's design values in "
                                               r"the wiring file \(\[calibration\] design = "
                                               r"\"FILE\"\), or give them with --design FILE"):
        load_design(device="fridge2", num_qubits=4)
    with pytest.raises(CalibrationError, match=r"design file /nonexistent.toml does not exist"):
        load_design("/nonexistent.toml", device="lab3", num_qubits=3)


def test_the_cli_refuses_a_bad_design_before_starting_the_simulator(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path / "home"))
    design = tmp_path / "design.toml"
    design.write_text(LAB3.replace("readout_amplitude", "readout_amplitud"))
    assert main(["calibrate", "--bootstrap", "--config", "lab3", "--design", str(design),
                 "--no-rb"]) == 2
    assert "unknown field 'readout_amplitud'" in capsys.readouterr().err
    assert not (tmp_path / "home").exists()  # no store opened, no simulator started


def test_a_missing_design_file_says_where_it_was_named(tmp_path: Path) -> None:
    """A review's case: a wiring file's ``[calibration] design`` naming a missing file gave
    "design file X does not exist", naming neither the wiring file nor its field."""
    from labqpu.calibration.design import load_wiring_design
    from labqpu.rack.config import default_config_path, load_config

    text = default_config_path().read_text().replace(
        'seed_snapshot = "lab5_calibration.json"',
        'seed_snapshot = "lab5_calibration.json"\ndesign = "nodesign.toml"')
    (tmp_path / "lab.toml").write_text(text)
    config = load_config(tmp_path / "lab.toml")
    with pytest.raises(CalibrationError, match=r"design file .*nodesign\.toml \(\[calibration\] "
                                               r"design of .*lab\.toml\) does not exist"):
        load_wiring_design(None, config.path, config.design_path, device="lab5")
    shipped = load_config(default_config_path())  # names no design: the shipped values
    assert load_wiring_design(None, shipped.path, shipped.design_path, device="lab5").qubits
