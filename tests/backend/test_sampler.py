"""``labqpu.Sampler``: SamplerV2 with readout mitigation from the stored assignment matrices."""

from __future__ import annotations

import re
import sys

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import Parameter

from labqpu import BackendPropertyError, InvalidRunInputError, LabProvider, Sampler
from labqpu.drivers.controller import ControllerClient
from labqpu.store import SnapshotBuilder

IDEAL_GHZ = {"000": 0.5, "111": 0.5}


def ghz3() -> QuantumCircuit:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    return qc


def distance_to_ideal(dist: dict[str, float]) -> float:
    """Total variation distance from the ideal GHZ-3 distribution."""
    keys = set(dist) | set(IDEAL_GHZ)
    return 0.5 * sum(abs(dist.get(k, 0.0) - IDEAL_GHZ.get(k, 0.0)) for k in keys)


def test_mitigated_ghz_is_closer_to_ideal(lab_backend) -> None:
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)  # Qiskit's default level
    result = Sampler(lab_backend).run([native], shots=10_000).result()[0]
    raw = result.data.meas.get_counts()
    assert sum(raw.values()) == 10_000
    info = result.metadata["readout_mitigation"]
    assert info["applied"] and info["method"] == "mthree"
    assert info["snapshot_id"] == lab_backend.snapshot.snapshot_id
    layout = native.layout.final_index_layout()
    assert sorted(info["qubits"]["meas"]) == sorted(layout)
    mitigated = info["quasi_dists"]["meas"]
    assert sum(mitigated.values()) == pytest.approx(1.0, abs=1e-6)
    # Readout moves 3-7 % of the GHZ mass off 000 and 111 on lab5; mitigation recovered
    # 0.019-0.040 of the distance in 13 runs (4000 shots, the drifting device). Without it the
    # gain is 0 +- 0.002 at 10 000 shots.
    raw_distance = distance_to_ideal({k: v / 10_000 for k, v in raw.items()})
    assert distance_to_ideal(mitigated) < raw_distance - 0.01, (raw_distance, mitigated)


def test_parameter_sweep_gives_one_distribution_per_point(lab_backend) -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend, initial_layout=[0])
    result = Sampler(lab_backend).run([(native, [[0.0], [3.14159]])], shots=1000).result()[0]
    dists = result.metadata["readout_mitigation"]["quasi_dists"]["c"]
    assert len(dists) == 2
    assert dists[0].get("0", 0) > 0.95
    assert dists[1].get("1", 0) > 0.95


def test_unmitigated_sampler_is_backend_sampler(lab_backend) -> None:
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)
    result = Sampler(lab_backend, mitigate=False).run([native], shots=100).result()[0]
    assert result.metadata["readout_mitigation"] == {
        "applied": False, "snapshot_id": lab_backend.snapshot.snapshot_id}
    assert result.data.meas.num_shots == 100


def test_missing_assignment_matrix_is_refused_before_running(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LABQPU_HOME", str(tmp_path))
    with LabProvider() as provider:
        backend = provider.backend()
        document = (SnapshotBuilder.from_snapshot(backend.snapshot)
                    .remove_qubit(1, "assignment_matrix").build_document())
        backend.store.commit(document)
        native = transpile(ghz3(), backend, initial_layout=[0, 1, 2])
        endpoint = backend.config.controllers[0].endpoint
        with ControllerClient(endpoint, timeout_s=2.0) as client:
            before = client.status()
            with pytest.raises(BackendPropertyError, match="qubit 1") as info:
                Sampler(backend).run([native])
            assert info.value.parameter == "assignment_matrix"
            after = client.status()
        assert (after["uploads_total"], after["runs_total"]) == (before["uploads_total"],
                                                                 before["runs_total"])


@pytest.mark.parametrize("shots", [0, -5])
def test_shots_that_are_not_positive_are_refused_as_qiskit_refuses_them(lab_backend,
                                                                       shots) -> None:
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)
    with pytest.raises(ValueError, match="shots must be positive"):
        Sampler(lab_backend, mitigate=False).run([native], shots=shots)


def test_shots_beyond_the_backend_are_refused_by_run_not_by_result(lab_backend) -> None:
    """A review's case: 100 001 shots were refused only by ``result()``, from the job."""
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)
    sampler = Sampler(lab_backend, mitigate=False)
    with pytest.raises(InvalidRunInputError, match=r"pub 0's shots is 100001.*at most 100000") \
            as info:
        sampler.run([native], shots=lab_backend.max_shots + 1)
    assert info.value.option == "shots"
    with pytest.raises(InvalidRunInputError, match="pub 1's shots is 200000"):
        sampler.run([native, (native, None, 200_000)])
    with pytest.raises(InvalidRunInputError, match="default_shots is 1000000"):
        Sampler(lab_backend, default_shots=10 ** 6)
    with pytest.raises(ValueError, match="default_shots must be positive, got -1"):
        Sampler(lab_backend, default_shots=-1)
    with pytest.raises(TypeError, match="default_shots must be an integer"):
        Sampler(lab_backend, default_shots=True)


def test_a_value_that_is_not_finite_is_refused_by_run_naming_the_pub_and_parameter(
        lab_backend) -> None:
    """A review's case: NaN or infinity among a pub's values was refused only by
    ``result()``, with Qiskit's ``ZeroDivisionError`` or ``RuntimeError`` from the job."""
    import math

    theta = Parameter("theta")
    qc = QuantumCircuit(1, 1)
    qc.rx(theta, 0)
    qc.measure(0, 0)
    native = transpile(qc, lab_backend)
    endpoint = lab_backend.config.controllers[0].endpoint
    with ControllerClient(endpoint, timeout_s=2.0) as client:
        before = client.status()["runs_total"]
        for bad, words in ((math.inf, "parameter 'theta': value inf at point (1,)"),
                           (math.nan, "parameter 'theta': value nan at point (1,)")):
            with pytest.raises(InvalidRunInputError, match=re.escape(f"pub 1, {words}")):
                Sampler(lab_backend).run([(native, [[0.0]]), (native, [[1.0], [bad]])],
                                         shots=100)
        assert client.status()["runs_total"] == before


def test_a_register_left_unmitigated_is_not_reported_applied(lab_backend) -> None:
    """A review's case: a register with an unmeasured bit was skipped, and the metadata
    still said ``"applied": True``."""
    qc = QuantumCircuit(3, 3)
    qc.x(0)
    qc.measure([0, 1], [0, 1])
    native = transpile(qc, lab_backend, initial_layout=[0, 1, 2])
    info = Sampler(lab_backend).run([native], shots=100).result()[0].metadata[
        "readout_mitigation"]
    assert info["applied"] is False
    assert info["skipped"] == {"c": "bit 2 of 'c' is never measured"}
    assert info["quasi_dists"] == {}


def test_sampler_needs_a_lab_backend() -> None:
    with pytest.raises(TypeError, match="LabBackend"):
        Sampler(object())


def test_mthree_calibrates_and_mitigates_through_the_backend(lab_backend) -> None:
    """mthree's own path: configuration(), calibration circuits through run(), correction."""
    import mthree
    from mthree.utils import final_measurement_mapping

    native = transpile(ghz3(), lab_backend, initial_layout=[0, 1, 2])
    counts = lab_backend.run(native, shots=4000).result().get_counts()
    mapping = final_measurement_mapping(native)
    mitigator = mthree.M3Mitigation(lab_backend)
    mitigator.cals_from_system(mapping, shots=2000)
    quasi = mitigator.apply_correction(counts, mapping)
    assert distance_to_ideal(quasi.nearest_probability_distribution()) < \
        distance_to_ideal({k: v / 4000 for k, v in counts.items()})
    for q in (0, 1, 2):  # measured fidelities agree with the stored matrices
        stored = lab_backend.snapshot.qubit_value(q, "assignment_matrix")
        assert mitigator.single_qubit_cals[q][0, 0] == pytest.approx(stored[0][0], abs=0.03)


def test_without_mthree_the_sampler_says_which_extra_to_install(lab_backend,
                                                                monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mthree", None)  # as if the extra were not installed
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)
    with pytest.raises(ImportError, match=r"labqpu\[mitigation\]"):
        Sampler(lab_backend).run([native])
    result = Sampler(lab_backend, mitigate=False).run([native], shots=50).result()[0]
    assert result.data.meas.num_shots == 50


def test_an_mthree_that_fails_to_import_is_not_called_missing(lab_backend, monkeypatch,
                                                              tmp_path) -> None:
    """A newcomer's case: a ``six.py`` of theirs shadowed a module mthree needs, and the
    sampler said mthree was not installed; the cause showed only in the chained traceback."""
    (tmp_path / "mthree").mkdir()
    (tmp_path / "mthree" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'moves' from 'six'\")\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mthree", raising=False)
    native = transpile(ghz3(), lab_backend, seed_transpiler=5)
    with pytest.raises(ImportError, match=r"mthree, which is installed but failed to import: "
                                          r"ImportError: cannot import name 'moves' from 'six'"):
        Sampler(lab_backend).run([native])
