"""A calibration experiment runs at the biases of the calibration, not at whatever an earlier job
left on the flux-bias source.

A neighbour's DC bias moves a qubit through the device's DC flux crosstalk. Circuits set every
calibrated bias; an experiment on a few qubits must too. Before this was so, a check of the
shipped CZ on edge 1-2 as the first job of a fresh simulator (qubit 3's channel still at 0 A)
found its single-qubit phase 0.3 rad off, and the watch recalibrated a CZ that was right.
"""

from __future__ import annotations

from types import SimpleNamespace

from labqpu.calibration.checks import check_cz
from labqpu.calibration.design import default_design_path, load_design
from labqpu.calibration.experiments import Kit
from labqpu.calibration.runner import working_from_snapshot
from labqpu.drivers.scpi import CurrentSource


def test_an_experiment_sets_every_calibrated_flux_bias(quiet_lab_backend) -> None:
    backend = quiet_lab_backend
    kit = Kit(backend, working_from_snapshot(backend.snapshot,
                                             load_design(default_design_path(backend.name))))
    program = kit.builder([1]).build(num_clbits=1)
    assert program.flux_bias_a == {
        backend.config.qubits[q].flux_bias: kit.work.qubits[q]["flux_bias_a"]
        for q in range(backend.num_qubits)}


def test_a_cz_check_does_not_depend_on_a_neighbours_leftover_bias(quiet_lab_backend) -> None:
    backend = quiet_lab_backend
    kit = Kit(backend, working_from_snapshot(backend.snapshot,
                                             load_design(default_design_path(backend.name))))
    source_name, channel = backend.config.qubits[3].flux_bias
    resource = next(i.resource for i in backend.config.instruments if i.name == source_name)
    with CurrentSource(resource, timeout_s=5.0) as source:  # another client, behind our back
        source.set_current_a(channel, 0.0)
    result = check_cz(kit, (1, 2), 2000, 0.15)
    assert result.passed, result


def test_an_experiment_plays_at_its_own_qubits_bias_on_a_shared_channel(shared_bias_config,
                                                                        snapshot) -> None:
    """Qubits 0 and 1 on one flux-bias channel: an experiment on either sets the channel to
    that qubit's calibrated current (the last qubit's won, so qubit 0 was measured at qubit 1's
    bias)."""
    backend = SimpleNamespace(config=shared_bias_config, channels=shared_bias_config.channels)
    work = working_from_snapshot(snapshot, load_design(default_design_path("lab5")))
    currents = {q: work.qubits[q]["flux_bias_a"] for q in (0, 1)}
    assert currents[0] != currents[1]
    for q in (0, 1):
        program = Kit(backend, work).builder([q]).build(num_clbits=1)
        assert program.flux_bias_a[shared_bias_config.qubits[0].flux_bias] == currents[q]
