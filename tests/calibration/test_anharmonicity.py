"""The anharmonicity node measures each transmon's 1-2 line: against the exact dressed levels
of the simulator's device file, from the design's value, from a value far off, and refusing a
drive the controller cannot play."""

from __future__ import annotations

import pytest

from labqpu.calibration import anharmonicity as node
from labqpu.calibration.design import default_design_path, load_design
from labqpu.calibration.experiments import Kit
from labqpu.calibration.refits import refit
from labqpu.calibration.runner import working_from_snapshot
from labqpu.errors import FitError

SHOTS = 400


def _kit(backend) -> Kit:
    return Kit(backend, working_from_snapshot(backend.snapshot,
                                              load_design(default_design_path(backend.name))))


def _exact(kit: Kit, truth, exact_levels, q: int) -> float:
    """The anharmonicity (Hz) of qubit ``q`` from the exact dressed levels: E(|2>) - 2 E(|1>)
    + E(|0>), the other qubits in |0>, at the working flux biases."""
    level = exact_levels(truth, {k: p["flux_bias_a"] for k, p in kit.work.qubits.items()})
    n = len(kit.work.qubits)

    def only(k: int) -> tuple:
        return tuple(k if i == q else 0 for i in range(n))

    return level(only(2)) - 2 * level(only(1)) + level(only(0))


def test_every_qubits_anharmonicity_is_its_exact_1_2_line(quiet_lab_backend, truth,
                                                          exact_levels) -> None:
    """From the design's -250 MHz (1.5-12.6 MHz off on lab5), each qubit's measured value lies
    within 4 standard errors + 20 kHz of the exact one (the 0-1 frequency it subtracts is the
    snapshot's Ramsey value, within ~5 kHz of exact), and a refit of its record gives it
    again."""
    kit = _kit(quiet_lab_backend)
    for q in sorted(kit.work.qubits):
        design = kit.work.qubits[q]["anharmonicity_hz"]
        node.anharmonicity(kit, q, SHOTS)
        record = kit.records[-1]
        measured, stderr = record.values["anharmonicity_hz"]
        exact = _exact(kit, truth, exact_levels, q)
        assert abs(measured - exact) <= 4 * stderr + 20e3, (q, measured, exact, stderr)
        assert stderr < 150e3 and abs(design - exact) > 1e6, (q, stderr, design, exact)
        assert kit.work.qubits[q]["anharmonicity_hz"] == measured
        assert kit.work.records[(q, "anharmonicity_hz")] == record.experiment
        assert refit(record)["anharmonicity_hz"] == pytest.approx(measured, rel=1e-6)


def test_a_line_outside_the_scan_is_found_by_the_search(quiet_lab_backend, truth,
                                                        exact_levels) -> None:
    """A working value 60 MHz off (qubit 1's line, -262 MHz, outside a scan of -322 +- 30 MHz):
    the coarse search finds the line, the scan runs again there, and the record keeps both."""
    kit = _kit(quiet_lab_backend)
    kit.work.qubits[1]["anharmonicity_hz"] = -322e6
    node.anharmonicity(kit, 1, SHOTS)
    record = kit.records[-1]
    measured, stderr = record.values["anharmonicity_hz"]
    assert abs(measured - _exact(kit, truth, exact_levels, 1)) <= 4 * stderr + 20e3
    assert [k.split(",")[0] for k in record.raw["series"]] == [
        "pi", "around -322 MHz", "search"]


@pytest.mark.parametrize("start", [0.0, 250e6, -700e6])
def test_a_working_value_no_transmon_has_is_searched_past_and_the_0_1_line_is_not_taken(
        quiet_lab_backend, truth, exact_levels, start) -> None:
    """A review's case: from 0 (or within 150 MHz of it) the search covered the 0-1 line and
    returned an anharmonicity of ~0 Hz. From 0, from a sign typo (+250 MHz) and from -700 MHz
    the scan is left out (no transmon has those), the search covers -400 to -50 MHz only, and
    qubit 2's line (-241 MHz) is found."""
    kit = _kit(quiet_lab_backend)
    kit.work.qubits[2]["anharmonicity_hz"] = start
    node.anharmonicity(kit, 2, SHOTS)
    record = kit.records[-1]
    measured, stderr = record.values["anharmonicity_hz"]
    assert abs(measured - _exact(kit, truth, exact_levels, 2)) <= 4 * stderr + 20e3
    assert [k.split(",")[0] for k in record.raw["series"]] == ["pi", "search"]


def test_a_drive_lo_that_reaches_no_transmons_1_2_line_is_refused_before_anything_runs(
        quiet_lab_backend) -> None:
    """An LO 400 MHz above qubit 0 plays drives from -50 to +850 MHz of its 0-1 line at
    1 GS/s (0.45 x the rate either side): none of a transmon's anharmonicities. Refused,
    naming the qubit, the LO and the band, before any job; the working value stays."""
    kit = _kit(quiet_lab_backend)
    p = kit.work.qubits[0]
    p["drive_lo_frequency_hz"] = p["frequency_hz"] + 400e6
    with pytest.raises(FitError, match=r"qubit 0 anharmonicity: the drive LO .* Hz reaches "
                                        r"drives from -50 to 850 MHz of the 0-1 frequency "
                                        r"\(within 450 MHz of it at 1 GS/s\), which leaves 0 MHz"):
        node.anharmonicity(kit, 0, SHOTS)
    assert kit.records == [] and p["anharmonicity_hz"] == -250e6


def test_a_search_beyond_the_band_is_clipped_to_it(quiet_lab_backend, truth,
                                                    exact_levels) -> None:
    """A review's case: at 0.6 GS/s the search was refused as a whole ("beyond the 270 MHz")
    although qubit 1's line lay inside the band. The search is clipped to the drives the
    controller plays, here from the LO -450 MHz (1 GS/s) moved so that only -330 to -50 MHz
    of the 0-1 line is playable: the line (-262 MHz) is found from a start 80 MHz off."""
    kit = _kit(quiet_lab_backend)
    p = kit.work.qubits[1]
    p["drive_lo_frequency_hz"] = p["frequency_hz"] + 120e6  # plays -330 .. +570 MHz
    p["anharmonicity_hz"] = -180e6
    node.anharmonicity(kit, 1, SHOTS)
    record = kit.records[-1]
    measured, stderr = record.values["anharmonicity_hz"]
    assert abs(measured - _exact(kit, truth, exact_levels, 1)) <= 4 * stderr + 20e3
    search = next(v for k, v in record.raw["series"].items() if k.startswith("search"))
    assert min(search["x"]) >= -330e6 - 1 and max(search["x"]) <= -50e6 + 1


def test_no_line_anywhere_is_a_fit_error_naming_both_scans(quiet_lab_backend) -> None:
    """Without the pi pulses (pi amplitude 0: the qubit stays in |0>, no 1-2 line to see), the
    scan and the search find nothing: a FitError naming the qubit and both, and the working
    value stays."""
    kit = _kit(quiet_lab_backend)
    kit.work.qubits[3]["pi_amplitude"] = 0.0
    before = kit.work.qubits[3]["anharmonicity_hz"]
    with pytest.raises(FitError, match=r"qubit 3 anharmonicity: no 1-2 line within 30 MHz .* "
                                        r"nor around the largest response of the search, "
                                        r"-400 to -50 MHz"):
        node.anharmonicity(kit, 3, SHOTS)
    assert kit.work.qubits[3]["anharmonicity_hz"] == before


def test_a_design_value_is_measured_by_the_graph_then_fresh(tmp_path, monkeypatch) -> None:
    """The shipped snapshot's anharmonicities are the design's -250 MHz, which no check can
    confirm: `labqpu calibrate anharmonicity` (run_graph) measures them, saying why, and
    commits them; the next run finds them fresh (they never age)."""
    from labqpu import LabProvider
    from labqpu.calibration import run_graph
    from labqpu.testing import use_fresh_home

    use_fresh_home(monkeypatch, tmp_path)
    with LabProvider() as provider:
        backend = provider.backend()
        first = run_graph(backend, ["anharmonicity"], qubits=[2], shots=SHOTS, rb=False)
        assert first.ok, first.table()
        step = next(o for o in first.outcomes if o.node == "anharmonicity")
        assert step.status == "calibrated", first.table()
        assert "anharmonicity_hz is the design's estimate, never measured" in step.reason
        value = backend.snapshot.qubits[2]["anharmonicity_hz"]
        assert value.experiment.startswith("anharmonicity-q2-")
        assert abs(value.value + 241.4e6) < 0.3e6  # exact: -241.445 MHz
        again = run_graph(backend, ["anharmonicity"], qubits=[2], shots=SHOTS, rb=False)
        assert next(o for o in again.outcomes if o.node == "anharmonicity").status == "fresh"
