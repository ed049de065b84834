"""The Target's gate errors agree with qiskit-experiments' StandardRB run unchanged on the backend.

labqpu's randomized benchmarking (``labqpu.calibration.rb``) measures qubit 3's error per
pulse and commits it, as ``labqpu calibrate --rb`` does; the Target then carries it as the
``sx``/``sy``/``x`` error. qiskit-experiments' ``StandardRB`` then runs on the same backend with
its own sequences and transpilation. What the Target predicts for those sequences is its error
times the pulses an average Clifford of StandardRB's transpiled circuits plays.

- StandardRB's survival data, fitted as labqpu fits RB (the asymptote B fixed by the qubit's
  assignment matrix), must give that prediction within twice the combined standard error of
  the two fits (about 95 %).
- StandardRB's own EPC fits B freely. With sequences that decay only to about 0.75 (as here:
  1000 Cliffords), B and the decay trade off, and the free fit scatters more than its stated
  error: over eight seeds its EPC was 0.15 to 2.7 standard errors above the prediction while
  the survival curves of the two methods agreed point by point. It must agree within three.

Drift between the two measurements is part of the comparison, as it is on hardware; both run
within a minute of simulated time. The runs are seeded (``seed_simulator``), so the test gives
the same numbers every time.

The store is a private one (its own wiring file copy), so the session's Target is untouched.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from labqpu import LabProvider
from labqpu.calibration.rb import (
    RBOutcome,
    acquire_rb,
    errors_per_gate,
    fit_rb,
    rb_baseline,
    rb_update,
)
from labqpu.rack.config import default_config_path
from labqpu.store import SnapshotBuilder

pytestmark = pytest.mark.slow

QUBIT = 3
LENGTHS = [1, 50, 100, 200, 400, 700, 1000]
SEED = 3


@pytest.fixture(scope="module")
def private_backend(tmp_path_factory, lab_home):
    directory = tmp_path_factory.mktemp("rb-agreement")
    text = default_config_path().read_text().replace(
        'store = ""', f'store = "{directory / "calibration.sqlite"}"', 1)
    path = directory / "lab.toml"
    path.write_text(text)
    with LabProvider(path, simulator=True) as provider:
        backend = provider.backend()
        backend.set_options(seed_simulator=SEED)
        yield backend


def test_target_gate_error_agrees_with_standard_rb(private_backend) -> None:
    from qiskit_experiments.library import StandardRB

    backend = private_backend
    measured = backend.snapshot
    (data,) = acquire_rb(backend, [(QUBIT,)], LENGTHS, seeds=6, shots=300)
    baseline = rb_baseline([measured.qubits[QUBIT]["assignment_matrix"].value])
    fit = fit_rb(data.lengths, data.survival, 1, baseline)
    builder = SnapshotBuilder.from_snapshot(measured)
    rb_update(builder, RBOutcome(data, fit, errors_per_gate(data, fit)))
    backend.store.commit(builder.build_document(), parent_id=measured.snapshot_id,
                         expect_parent=True)
    error = backend.target["sx"][(QUBIT,)].error
    assert error == pytest.approx(fit.epc / data.pulses_per_clifford[QUBIT])
    error_stderr = fit.epc_stderr / data.pulses_per_clifford[QUBIT]

    exp = StandardRB(physical_qubits=[QUBIT], lengths=LENGTHS, num_samples=6, seed=3,
                     backend=backend)
    circuits = exp._transpiled_circuits()  # what run() sends: its pulses per Clifford
    pulses = sum(sum(n for name, n in c.count_ops().items() if name in ("sx", "sy", "x"))
                 for c in circuits)
    cliffords = sum(c.metadata["xval"] + 1 for c in circuits)  # the sequence and its inverse
    per_clifford = pulses / cliffords
    result = exp.run(shots=300).block_for_results(timeout=600)
    assert result.status().name == "DONE", result.status()
    predicted = error * per_clifford

    survival = defaultdict(list)
    for datum in result.data():
        counts = datum["counts"]
        survival[datum["metadata"]["xval"]].append(counts.get("0", 0) / sum(counts.values()))
    theirs = fit_rb(np.array(LENGTHS), np.array([survival[m] for m in LENGTHS]), 1, baseline)
    sigma = math.hypot(theirs.epc_stderr, error_stderr * per_clifford)
    assert abs(theirs.epc - predicted) <= 2 * sigma, (theirs.epc, predicted, sigma)

    epc = result.analysis_results("EPC", dataframe=True).iloc[0]["value"]
    sigma = math.hypot(epc.std_dev, error_stderr * per_clifford)
    assert abs(epc.nominal_value - predicted) <= 3 * sigma, (epc, predicted, sigma)
