"""The runner's rules on a small graph of experiments that measure nothing: fresh values that
pass their check are skipped, old or failing ones recalibrated, a failed fit changes nothing
and blocks its branch. And the Target leaves out what is older than the lab's age limits."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from labqpu.backend.target import build_target
from labqpu.calibration.checks import CheckResult
from labqpu.calibration.graph import NODES, Node, plan, register_node
from labqpu.calibration.report import Change, Outcome, RunReport, unchecked
from labqpu.calibration.runner import LineReporter, run_graph, walk
from labqpu.calibration.working import Working
from labqpu.errors import FitError
from labqpu.store import Snapshot, SnapshotBuilder
from labqpu.store.staleness import PARAMETER_KINDS

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _work() -> Working:
    work = Working(device={}, qubits={0: {}, 1: {}})
    for q in (0, 1):
        work.set(q, "frequency_hz", 5e9, "ramsey")
        work.measured_at[(q, "frequency_hz")] = (NOW - timedelta(hours=1)).isoformat()
    return work


def _check(passes: dict[int, bool]):
    return lambda kit, q, shots: CheckResult(passes[q], 1.0, 1.0, 0.1, "")


def _set(name, value):
    def calibrate(kit, q, shots, progress):
        kit.work.set(q, name, value, "test")
    return calibrate


def _both(*values):
    def calibrate(kit, q, shots, progress):
        for name, value in values:
            kit.work.set(q, name, value, "test")
    return calibrate


def _fail(kit, q, shots, progress):
    kit.work.set(q, "frequency_hz", 4.9e9, "test")  # touched, then the fit fails
    raise FitError("no peak", subject=f"qubit {q}")


def test_fresh_values_that_pass_are_skipped_and_failures_block_their_branch():
    nodes = (
        Node("freq", "qubit", (), ("frequency_hz",), _fail, _check({0: True, 1: False})),
        Node("amp", "qubit", ("freq",), ("pi_amplitude",), _set("pi_amplitude", 0.5)),
    )
    kit = SimpleNamespace(work=_work())
    outcomes = walk(kit, plan(None, [0, 1], [], nodes), shots=1, now=NOW,
                    limits={"frequency": 24.0, "amplitude": 24.0})
    got = {(o.node, o.subject): o.status for o in outcomes}
    assert got == {("freq", "qubit 0"): "fresh", ("freq", "qubit 1"): "failed",
                   ("amp", "qubit 0"): "calibrated", ("amp", "qubit 1"): "blocked"}
    assert kit.work.qubits[1]["frequency_hz"] == 5e9  # the failed fit changed nothing
    failed = next(o for o in outcomes if o.status == "failed")
    assert "check failed" in failed.reason and "no peak" in failed.reason
    amp = next(o for o in outcomes if o.node == "amp" and o.status == "calibrated")
    assert [(c.name, c.old, c.new) for c in amp.changes] == [("pi_amplitude", None, 0.5)]


def test_a_failed_edge_node_blocks_the_edge_nodes_that_need_it():
    def fail_edge(kit, pair, shots, progress):
        raise FitError("no crossing", subject=f"edge {pair}")

    nodes = (
        Node("freq", "qubit", (), (), _set("frequency_hz", 5e9)),
        Node("gate", "edge", ("freq",), (), fail_edge),
        Node("after", "edge", ("gate",), (), _set("x", 1.0)),
    )
    kit = SimpleNamespace(work=_work())
    outcomes = walk(kit, plan(None, [0, 1], [(0, 1)], nodes), shots=1, now=NOW,
                    forced={"freq", "gate", "after"})
    got = {(o.node, o.subject): o.status for o in outcomes}
    assert got[("gate", "edge 0-1")] == "failed"
    assert got[("after", "edge 0-1")] == "blocked"


def test_a_node_that_starts_from_another_is_planned_after_it_blocked_by_it_not_outdated():
    """A review's case: the CZ scan is centred by the flux qubit's anharmonicity, which a CZ
    with a wrong one (150 MHz off) scans past; the CZ ran after the anharmonicity had failed
    and said only "no amplitude gives a conditional phase of pi", and `calibrate cz` did not
    plan the anharmonicity. A node ``starts_from`` another: planned before it, its calibration
    (not its check: a second review's case) blocked by its failure, and a new value of it
    outdates nothing below (it is no prerequisite)."""
    def fail(kit, q, shots, progress):
        raise FitError("no line", subject=f"qubit {q}")

    def nodes(alpha, gate_check=None) -> tuple[Node, ...]:
        return (Node("freq", "qubit", (), ("frequency_hz",), _set("frequency_hz", 5e9)),
                Node("alpha", "qubit", ("freq",), ("alpha_hz",), alpha),
                Node("gate", "edge", ("freq",), ("amplitude",), _set_pair("amplitude", 0.4),
                     gate_check, starts_from=("alpha",)),
                Node("leak", "edge", ("gate",), ("leakage",), _set_pair("leakage", 0.01)))

    assert [n.name for n, _ in plan(["gate"], [0, 1], [(0, 1)], nodes(fail))] == [
        "freq", "freq", "alpha", "alpha", "gate"]
    outcomes = walk(SimpleNamespace(work=_work()), plan(None, [0, 1], [(0, 1)], nodes(fail)),
                    shots=1, now=NOW, forced={"freq", "alpha", "gate", "leak"})
    got = {(o.node, o.subject): o for o in outcomes}
    assert got[("gate", "edge 0-1")].status == "blocked"
    assert got[("gate", "edge 0-1")].reason == ("forced; alpha on qubit 0, which its "
                                                "calibration starts from, did not pass")
    assert got[("leak", "edge 0-1")].status == "blocked"
    # a gate whose check passes is fresh, whatever became of what its calibration starts from
    work = _work()
    work.pairs[(0, 1)] = {"amplitude": 0.3}
    work.measured_at[((0, 1), "amplitude")] = NOW.isoformat()
    passes = lambda kit, pair, shots: CheckResult(True, 1.0, 1.0, 0.1, "")  # noqa: E731
    outcomes = walk(SimpleNamespace(work=work), plan(["gate"], [0, 1], [(0, 1)],
                                                     nodes(fail, passes)),
                    shots=1, now=NOW, forced={"alpha"})
    assert [(o.node, o.status) for o in outcomes if o.subject == "edge 0-1"] == [
        ("gate", "fresh")]
    # a gate whose check and refinement fail is blocked, and its progress says so (a review:
    # "refinement failed (...); calibrating", then "blocked")
    fails = lambda kit, pair, shots: CheckResult(False, 1.0, 0.0, 0.1, "off")  # noqa: E731
    gate = replace(nodes(fail, fails)[2], refine=lambda kit, pair, shots, _: fail(kit, 0, 1, _))
    said: list[str] = []
    outcomes = walk(SimpleNamespace(work=work), plan(["gate"], [0, 1], [(0, 1)],
                                                     (*nodes(fail)[:2], gate)),
                    shots=1, now=NOW, forced={"alpha"}, reporter=LineReporter(said.append))
    assert [(o.node, o.status) for o in outcomes if o.subject == "edge 0-1"] == [
        ("gate", "blocked")]
    assert any("refinement failed (qubit 0: no line); calibration blocked" in line for line in said)
    assert not any(line.endswith("calibrating") for line in said), said
    # a new anharmonicity (no check) outdates neither the gate nor what is built on it
    now = datetime.now(UTC)
    work = _work()
    for q in (0, 1):
        work.set(q, "alpha_hz", -2.5e8, "alpha-run")
        work.measured_at[(q, "alpha_hz")] = now.isoformat()
    work.pairs[(0, 1)] = {"amplitude": 0.3, "leakage": 0.02}
    for name in ("amplitude", "leakage"):
        work.measured_at[((0, 1), name)] = (now - timedelta(hours=1)).isoformat()
    outcomes = walk(SimpleNamespace(work=work), plan(None, [0, 1], [(0, 1)], nodes(fail)),
                    shots=1, now=now)  # alpha is fresh: it does not run
    assert {(o.node, o.status) for o in outcomes if o.subject == "edge 0-1"} == {
        ("gate", "fresh"), ("leak", "fresh")}


def test_a_design_estimate_is_measured_and_another_design_value_is_not():
    """A review's case: a rule that calibrated every node without a check whose watched value
    came from the design re-ran a lab's node on every run, for a design value it watched and
    never set (the pulse duration). Only a node's ``design_estimates`` are calibrated while
    they are the design's."""
    nodes = (Node("alpha", "qubit", (), ("alpha_hz",), _set("alpha_hz", -2.4e8),
                  design_estimates=("alpha_hz",)),
             Node("mine", "qubit", (), ("gain", "pulse_s"), _set("gain", 2.0)))
    now = datetime.now(UTC)
    work = Working(device={}, qubits={0: {}})
    for name, value in (("alpha_hz", -2.5e8), ("pulse_s", 4e-8), ("gain", 1.0)):
        work.set(0, name, value, "mine-run" if name == "gain" else "design")
        work.measured_at[(0, name)] = now.isoformat()
    outcomes = walk(SimpleNamespace(work=work), plan(None, [0], [], nodes), shots=1, now=now)
    assert [(o.node, o.status, o.reason) for o in outcomes] == [
        ("alpha", "calibrated", "alpha_hz is the design's estimate, never measured"),
        ("mine", "fresh", "values within their age limits; the node has no check")]
    with pytest.raises(ValueError, match="design_estimates must name values it watches"):
        register_node(Node("bad", "qubit", (), ("x",), _set("x", 1.0),
                           design_estimates=("y",)))


def test_old_values_are_recalibrated_without_a_check_and_force_skips_the_check():
    def never(kit, q, shots):
        raise AssertionError("an old or forced value is not checked")

    nodes = (Node("freq", "qubit", (), ("frequency_hz",), _set("frequency_hz", 6e9), never),)
    kit = SimpleNamespace(work=_work())
    outcomes = walk(kit, plan(None, [0], [], nodes), shots=1, now=NOW + timedelta(hours=30),
                    limits={"frequency": 24.0})
    assert outcomes[0].status == "calibrated" and "h old > 24 h" in outcomes[0].reason
    kit = SimpleNamespace(work=_work())
    outcomes = walk(kit, plan(["freq"], [1], [], nodes), shots=1, now=NOW, forced={"freq"},
                    limits={"frequency": 24.0})
    assert outcomes[0].status == "calibrated" and outcomes[0].reason == "forced"


def test_a_value_measured_after_the_hosts_clock_is_recalibrated():
    """A review's case: a snapshot stamped in 2999 (a clock set wrong where it was measured,
    or a typo) was fresh for ever, so no watch round would measure it again. A stamp more
    than an hour after the host's clock is recalibrated, saying why; one a few minutes ahead
    (clocks of two machines) is fresh."""
    checked = []

    def check(kit, q, shots):
        checked.append(q)
        return CheckResult(True, 1.0, 1.0, 0.1, "")

    nodes = (Node("freq", "qubit", (), ("frequency_hz",), _set("frequency_hz", 6e9), check),)
    kit = SimpleNamespace(work=_work())
    kit.work.measured_at[(0, "frequency_hz")] = "2999-01-01T00:00:00+00:00"
    kit.work.measured_at[(1, "frequency_hz")] = (NOW + timedelta(minutes=5)).isoformat()
    first, second = walk(kit, plan(None, [0, 1], [], nodes), shots=1, now=NOW, limits={})
    assert first.status == "calibrated", first
    assert first.reason.startswith("frequency_hz measured at 2999-01-01T00:00:00+00:00, "), first
    assert "h after this host's clock" in first.reason
    assert kit.work.qubits[0]["frequency_hz"] == 6e9
    assert second.status == "fresh" and checked == [1], (second, checked)


def test_a_value_a_coarser_node_measured_again_is_measured_again_by_the_finer_one():
    """A review's case: the sweet spot's spectroscopy, measured again because it was old, wrote
    its frequency over the Ramsey one; the Ramsey node found a fresh value whose check passed
    (20-40 kHz off, inside the 30 kHz tolerance), so the snapshot kept the coarse one. Now a
    node whose watched value an earlier step measured anew calibrates without its check."""
    def never(kit, q, shots):
        raise AssertionError("a value measured again upstream is not checked")

    nodes = (
        Node("coarse", "qubit", (), ("flux",), _both(("flux", 1e-4), ("frequency_hz", 5.00002e9))),
        Node("fine", "qubit", ("coarse",), ("frequency_hz",), _set("frequency_hz", 5.0e9),
             never),
        Node("other", "qubit", ("fine",), ("pi_amplitude",), _set("pi_amplitude", 0.5),
             _check({0: True})),
    )
    kit = SimpleNamespace(work=_work())
    kit.work.set(0, "pi_amplitude", 0.5, "rabi")
    kit.work.measured_at[(0, "pi_amplitude")] = (NOW - timedelta(hours=1)).isoformat()
    outcomes = walk(kit, plan(None, [0], [], nodes), shots=1, now=NOW, forced={"coarse"})
    got = {o.node: (o.status, o.reason) for o in outcomes}
    assert got["fine"] == ("calibrated", "frequency_hz measured again by coarse in this run")
    assert kit.work.qubits[0]["frequency_hz"] == 5.0e9
    assert got["other"][0] == "fresh"  # it watches nothing the walk measured again


def test_steps_built_on_what_a_run_changed_that_it_did_not_run_are_named():
    """A review's case: ``labqpu calibrate sweet_spot --qubits 0 1`` moved both biases, and
    the cz on edge 0-1, measured at the old ones, went from 3e-3 to 0.24 error with nothing
    said. The report names every step built on a changed value that the run left out: on the
    changed qubit, and on the edges that hold it (the device's, not only the run's)."""
    nodes = (
        Node("coarse", "qubit", (), (), _set("bias", 1.0)),
        Node("fine", "qubit", ("coarse",), (), _set("frequency_hz", 5e9)),
        Node("gate", "edge", ("fine",), (), _set("x", 1.0)),
        Node("apart", "qubit", (), (), _set("y", 1.0)),
    )
    steps = plan(["coarse"], [0, 1], [(0, 1), (1, 2)], nodes)
    kit = SimpleNamespace(work=_work())
    outcomes = walk(kit, steps, shots=1, now=NOW, forced={"coarse"})
    outcomes[1] = replace(outcomes[1], changes=[])  # qubit 1's measurement changed nothing
    assert unchecked(steps, outcomes, nodes, [(1, 0), (1, 2)]) == [
        ("fine", "qubit 0"), ("gate", "edge 0-1")]
    report = RunReport(outcomes, 1, unchecked=[("fine", "qubit 0"), ("apart", "qubit 0"),
                                               ("fine", "qubit 1"), ("gate", "edge 0-1")])
    assert ("not run, and built on values this run changed (4 steps): fine on qubit 0, qubit "
            "1; apart on qubit 0; gate on edge 0-1; calibrate them to check them (`labqpu "
            "calibrate fine apart gate --qubits 0 1`; --force for those without a check, which "
            "a checked value's change leaves fresh)"
            ) in report.table()
    # an edge step's change reaches that edge's nodes only (a review's case: cz on 0-1 named
    # cz_leakage on edge 1-2 too)
    edge_nodes = (*nodes, Node("after", "edge", ("gate",), (), _set("z", 1.0)))
    edge_steps = [(edge_nodes[2], (0, 1))]
    edge_outcomes = [Outcome("gate", "edge 0-1", "calibrated", "forced",
                             changes=[Change("edge 0-1", "x", 0.5, 1.0)])]
    assert unchecked(edge_steps, edge_outcomes, edge_nodes, [(0, 1), (1, 2)]) == [
        ("after", "edge 0-1")]
    everything = plan(None, [0, 1], [(0, 1)], nodes)
    outcomes = walk(SimpleNamespace(work=_work()), everything, shots=1, now=NOW,
                    forced={n.name for n in nodes})
    assert unchecked(everything, outcomes, nodes, [(0, 1)]) == []


def test_a_node_that_measures_a_recalibrated_one_is_out_of_date():
    """cz_leakage-like: an edge node measuring the edge's gate is calibrated again when the
    gate was measured after it (in an earlier run or earlier in this one), and fresh
    otherwise."""
    nodes = (
        Node("gate", "edge", (), ("amplitude",), _set_pair("amplitude", 0.4)),
        Node("leak", "edge", ("gate",), ("leakage",), _set_pair("leakage", 0.01),
             measures=("gate",)),
    )

    now = datetime.now(UTC)  # what a calibration in this walk stamps its values with

    def work(gate_hours_ago: float, leak_hours_ago: float) -> Working:
        w = Working(device={}, qubits={0: {}, 1: {}},
                    pairs={(0, 1): {"amplitude": 0.3, "leakage": 0.02}})
        w.measured_at[((0, 1), "amplitude")] = (now - timedelta(hours=gate_hours_ago)).isoformat()
        w.measured_at[((0, 1), "leakage")] = (now - timedelta(hours=leak_hours_ago)).isoformat()
        return w

    steps = plan(None, [0, 1], [(0, 1)], nodes)
    kit = SimpleNamespace(work=work(gate_hours_ago=1, leak_hours_ago=2))
    outcomes = {o.node: o for o in walk(kit, steps, shots=1, now=now)}
    assert outcomes["gate"].status == "fresh"
    assert outcomes["leak"].status == "calibrated"
    assert outcomes["leak"].reason == "amplitude of edge 0-1 measured after leakage"
    kit = SimpleNamespace(work=work(gate_hours_ago=2, leak_hours_ago=1))
    outcomes = {o.node: o for o in walk(kit, steps, shots=1, now=now)}
    assert outcomes["leak"].status == "fresh"
    kit = SimpleNamespace(work=work(gate_hours_ago=2, leak_hours_ago=1))
    outcomes = {o.node: o for o in walk(kit, steps, shots=1, now=now, forced={"gate"})}
    assert outcomes["gate"].status == "calibrated" and outcomes["leak"].status == "calibrated"


def test_a_value_no_check_confirms_outdates_what_is_built_on_it_and_a_checked_change_does_not():
    """A review's case: ``labqpu calibrate sweet_spot --force`` moved the biases; the next run
    found the CZ's check passing and reported the CZ leakage, two steps below and with no
    check of its own, fresh ("values within their age limits"), and the Ramsey frequency the
    sweet spot's spectroscopy had set coarsely passed its check 17 kHz off. Now a node
    without a check is measured again when a node without a check that it builds on (the
    sweet spot) was measured after it, and the Ramsey node, which ``measures`` the sweet
    spot, too; a change a check confirmed (a Ramsey frequency corrected by kHz, a second
    review's case: every drift correction in a watch re-measured the CZ leakage) outdates
    nothing below it."""
    nodes = (
        Node("bias", "qubit", (), ("flux_bias_a",), _set("flux_bias_a", 1e-4)),
        Node("freq", "qubit", ("bias",), ("frequency_hz",), _set("frequency_hz", 5.1e9),
             _check({0: True, 1: True}), measures=("bias",)),
        Node("hand", "qubit", ("freq",), ("handedness",), _set("handedness", 1)),
        Node("fine", "qubit", ("hand",), ("pi_amplitude",), _set("pi_amplitude", 0.51),
             _check({0: True, 1: True})),
        Node("gate", "edge", ("fine",), ("amplitude",), _set_pair("amplitude", 0.4),
             lambda kit, pair, shots: CheckResult(True, 1.0, 1.0, 0.1, "")),
        Node("leak", "edge", ("gate",), ("leakage",), _set_pair("leakage", 0.01),
             measures=("gate",)),
    )
    now = datetime.now(UTC)  # what a calibration in this walk stamps its values with
    watched = {"bias": "flux_bias_a", "freq": "frequency_hz", "hand": "handedness",
               "fine": "pi_amplitude", "gate": "amplitude", "leak": "leakage"}

    def walked(forced=(), **hours_ago: float) -> dict:
        w = Working(device={}, qubits={q: {"flux_bias_a": 0.0, "frequency_hz": 5e9,
                                           "handedness": 1, "pi_amplitude": 0.5}
                                       for q in (0, 1)},
                    pairs={(0, 1): {"amplitude": 0.3, "leakage": 0.02}})
        for node, name in watched.items():
            for s in ((0, 1),) if node in ("gate", "leak") else (0, 1):
                w.measured_at[(s, name)] = (now - timedelta(hours=hours_ago[node])).isoformat()
        outcomes = walk(SimpleNamespace(work=w), plan(None, [0, 1], [(0, 1)], nodes), shots=1,
                        now=now, forced=forced)
        return {(o.node, o.subject): o for o in outcomes}

    in_order = {"bias": 6, "freq": 5, "hand": 4, "fine": 3, "gate": 2, "leak": 1}
    assert {o.status for o in walked(**in_order).values()} == {"fresh"}
    # the bias measured after everything else (an earlier run forced the sweet spot)
    got = walked(**{**in_order, "bias": 0.5})
    freq, hand, leak = (got[("freq", "qubit 0")], got[("hand", "qubit 1")],
                        got[("leak", "edge 0-1")])
    assert (freq.status, freq.reason) == ("calibrated",
                                          "flux_bias_a of qubit 0 measured after frequency_hz")
    assert (hand.status, hand.reason) == ("calibrated",
                                          "flux_bias_a of qubit 1 measured after handedness")
    assert leak.status == "calibrated" and leak.reason.endswith("measured after leakage")
    assert got[("fine", "qubit 0")].status == got[("gate", "edge 0-1")].status == "fresh"
    # a checked value measured again after them (a frequency's drift corrected): all fresh
    assert {o.status for o in walked(**{**in_order, "freq": 0.5, "fine": 0.5}).values()} \
        == {"fresh"}
    # within one run: the bias forced, what no check confirms below it measured again
    got = walked(forced={"bias"}, **in_order)
    assert {n: got[(n, "qubit 0")].status for n in ("bias", "freq", "hand", "fine")} == {
        "bias": "calibrated", "freq": "calibrated", "hand": "calibrated", "fine": "fresh"}
    assert got[("gate", "edge 0-1")].status == "fresh"
    assert got[("leak", "edge 0-1")].status == "calibrated"


def test_a_labs_nodes_neither_switch_the_rule_off_nor_churn():
    """A review of lab nodes against the rule above: a node that merely watched the bias
    switched its link off for every node; a ``measures`` of a node whose values others watch
    too did nothing; a node that re-set a value of a node it builds on, and one that watched a
    checked prerequisite's value, were calibrated again on every run."""
    passes = _check({0: True})
    bias = Node("bias", "qubit", (), ("flux_bias_a",), _set("flux_bias_a", 1e-4))
    echo = Node("echo", "qubit", ("bias",), ("t2e",), _set("t2e", 1e-5))
    monitor = Node("monitor", "qubit", ("bias",), ("flux_bias_a",), _set("m", 1.0))
    amp = Node("amp", "qubit", (), ("pi",), _set("pi", 0.5), passes)
    fine = Node("fine", "qubit", ("amp",), ("pi",), _set("pi", 0.5), passes)
    leak = Node("xleak", "qubit", ("fine",), ("xl",), _set("xl", 0.01), measures=("fine",))
    hand = Node("hand", "qubit", ("bias",), ("handed",), _set("handed", 1))

    def both(kit, q, shots, progress):
        kit.work.set(q, "hv", 1.0, "hv")
        kit.work.set(q, "handed", kit.work.qubits[q]["handed"], "hv")

    hv = Node("hv", "qubit", ("hand",), ("hv",), both)
    t1 = Node("t1", "qubit", ("hand",), ("t1_s",), _set("t1_s", 5e-5), passes)
    ratio = Node("ratio", "qubit", ("t1",), ("t1_s", "ratio"), _set("ratio", 2.0))
    now = datetime.now(UTC)

    def work(**hours_ago: float) -> SimpleNamespace:
        w = Working(device={}, qubits={0: {"flux_bias_a": 0.0, "t2e": 1e-5, "m": 1.0,
                                           "pi": 0.5, "xl": 0.01, "handed": 1, "hv": 1.0,
                                           "t1_s": 5e-5, "ratio": 2.0}})
        for name, hours in hours_ago.items():
            w.measured_at[(0, name)] = (now - timedelta(hours=hours)).isoformat()
        return SimpleNamespace(work=w)

    def walked(kit, nodes, forced=()) -> dict:
        return {o.node: (o.status, o.reason) for o in walk(
            kit, plan(None, [0], [], nodes), shots=1, now=datetime.now(UTC), forced=forced)}

    got = walked(work(flux_bias_a=1, t2e=2), (bias, echo, monitor))
    assert got["echo"] == ("calibrated", "flux_bias_a of qubit 0 measured after t2e")
    got = walked(work(pi=1, xl=2), (amp, fine, leak))
    assert got["xleak"] == ("calibrated", "pi of qubit 0 measured after xl")
    for nodes, kit, forced in (
            ((bias, hand, hv), work(flux_bias_a=5, handed=4, hv=3), {"hv"}),
            ((bias, hand, t1, ratio), work(flux_bias_a=5, handed=1, t1_s=4, ratio=3), ())):
        first = walked(kit, nodes, forced)
        assert first[nodes[-1].name][0] == "calibrated", first
        for _ in range(2):  # then fresh: its own writes and its prerequisite's value do not count
            again = walked(kit, nodes)
            assert {status for status, _ in again.values()} == {"fresh"}, again


def test_a_labs_node_fails_its_step_for_a_value_the_store_refuses_or_none_and_a_job_ends_the_run():
    """A review of lab nodes: a NaN failed the whole run's commit (every watch round), an
    array the run itself, outside any step; a calibrate that set nothing was "calibrated"
    every run; and a lab node's failed job failed only its step, where labqpu's own end the
    run (the rack, not a value, is at fault)."""
    from qiskit.providers import JobError

    def raises(kit, q, shots, progress):
        raise JobError("the controller went away")

    nodes = (
        Node("nan", "qubit", (), ("nan_val",), _set("nan_val", float("nan"))),
        Node("arr", "qubit", (), ("kern",), _set("kern", np.array([1.0, 2.0]))),
        Node("nothing", "qubit", (), ("nothing_val",), lambda kit, q, shots, progress: None),
    )
    kit = SimpleNamespace(work=Working(device={}, qubits={0: {}}))
    got = {o.node: (o.status, o.reason) for o in walk(kit, plan(None, [0], [], nodes),
                                                      shots=1, now=NOW)}
    assert got["nan"] == ("failed", "nan_val missing; calibration failed: qubit 0: "
                          "nan_val: value is nan; calibration values must be finite: the "
                          "calibration store would refuse it"), got["nan"]
    assert got["arr"][0] == "calibrated" and kit.work.qubits[0]["kern"] == [1.0, 2.0]
    assert got["nothing"] == ("failed", "nothing_val missing; calibration failed: it left "
                              "nothing_val unset, which the node watches")
    assert "nan_val" not in kit.work.qubits[0] and "nothing_val" not in kit.work.qubits[0]
    with pytest.raises(JobError, match="the controller went away"):
        walk(kit, plan(None, [0], [], (Node("job", "qubit", (), ("j",), raises),)), shots=1,
             now=NOW)


def test_every_value_a_node_without_a_check_watches_ages():
    """A review's case: the ZZ had no parameter kind, so no age limit: a run recalibrated
    everything else older than 24 h and said "zz fresh: values within their age limits" of
    the shipped value. A node without a check is measured again only when its values age (or
    what it builds on changes), so each of them has a kind; the drive handedness, a property
    of the wiring, and the anharmonicity, of the junction, are the ones that never age."""
    for n in NODES:
        if n.check is None:
            assert all(name in PARAMETER_KINDS for name in n.watches
                       if name not in ("drive_handedness", "anharmonicity_hz")), (n.name,
                                                                                  n.watches)


def _set_pair(name, value):
    def calibrate(kit, pair, shots, progress):
        kit.work.set_pair(pair, name, value, "test")
    return calibrate


def test_plan_adds_prerequisites_in_order_and_edges_within_the_qubits():
    steps = plan(["cz"], [1, 2, 3], [(0, 1), (1, 2), (2, 3)])
    names = [n.name for n, _ in steps]
    assert names.index("ramsey") < names.index("drag") < names.index("cz")
    assert [s for n, s in steps if n.name == "cz"] == [(1, 2), (2, 3)]
    assert "t1" not in names  # not a prerequisite of cz
    with pytest.raises(ValueError, match="no calibration node 'ramsy'"):
        plan(["ramsy"], [0], [])
    assert {n.name for n in NODES} >= {"rabi", "ramsey", "drag", "readout", "t1", "cz"}


@pytest.mark.parametrize(("options", "message"), [
    ({"nodes": ["ramsey"], "qubits": "2"}, r"qubits must be qubit numbers \(int\), got '2'"),
    ({"nodes": ["ramsey"], "qubits": [2.0]}, r"got \[2\.0\]"),
    ({"nodes": ["ramsey"], "qubits": [True]}, r"got \[True\]"),
    ({"nodes": []}, "nodes is empty"),
    ({"nodes": ["rb"], "rb": False}, "nodes names 'rb' and rb=False leaves it out"),
])
def test_run_graph_refuses_what_it_cannot_take_before_running_anything(lab_backend, options,
                                                                        message):
    """``qubits="2"`` was a bare TypeError from a comparison, ``nodes=["rb"], rb=False`` and
    ``nodes=[]`` ran nothing and reported nothing wrong."""
    newest = lab_backend.store.latest_id()
    with pytest.raises(ValueError, match=message):
        run_graph(lab_backend, **options)
    assert lab_backend.store.latest_id() == newest


def _aged(snapshot: Snapshot, qubit: int, hours: float) -> Snapshot:
    builder = SnapshotBuilder.from_snapshot(snapshot)
    stamp = NOW - timedelta(hours=hours)
    builder.set_qubit(qubit, "frequency_hz", snapshot.qubits[qubit]["frequency_hz"].value,
                      "ramsey", timestamp=stamp)
    for q in snapshot.qubits:
        if q != qubit:
            for name, p in snapshot.qubits[q].items():
                builder.set_qubit(q, name, p.value, p.experiment, timestamp=NOW)
    for pair, params in snapshot.pairs.items():
        for name, p in params.items():
            builder.set_pair(pair, name, p.value, p.experiment, timestamp=NOW)
    return Snapshot.from_document(builder.build_document(), snapshot_id=9)


def test_target_leaves_out_a_qubit_with_a_stale_frequency(snapshot, config, caplog):
    aged = _aged(snapshot, 2, hours=30)
    assert build_target(aged, config, now=NOW).instruction_supported("x", (2,))  # no limits
    limited = replace(config, raw={**config.raw, "calibration": {
        **config.raw["calibration"], "max_age_h": {"frequency": 24}}})
    with caplog.at_level(logging.WARNING, logger="labqpu.backend.target"):
        target = build_target(aged, limited, now=NOW)
    assert not target.instruction_supported("x", (2,))
    assert not target.instruction_supported("measure", (2,))
    assert not target.instruction_supported("cz", (1, 2))
    assert target.instruction_supported("x", (1,)) and target.instruction_supported("cz", (0, 1))
    assert "qubit 2 left out of the Target: stale frequency_hz (30.0 h > 24 h)" in caplog.text
    bad = replace(config, raw={**config.raw, "calibration": {"max_age_h": {"frequncy": 1}}})
    with pytest.raises(ValueError, match="frequncy: unknown kind"):
        build_target(aged, bad, now=NOW)


def test_the_summary_table_names_the_qubit_whose_value_changed():
    """A step on qubit 1 moves the drive LO it shares with qubit 3: the row of qubit 3's value
    names qubit 3 (it named the step's qubit 1), so a user sees which qubits a run changed."""
    report = RunReport([
        Outcome("drive_lo", "qubit 1", "calibrated", "aged",
                changes=[Change("qubit 1", "drive_lo_frequency_hz", 4.947e9, 4.948e9),
                         Change("qubit 13", "drive_lo_frequency_hz", 4.947e9, 4.948e9)]),
    ], parent_id=7)
    rows = [line.split() for line in report.table().splitlines()[1:3]]
    assert [row[:3] for row in rows] == [["drive_lo", "qubit", "1"],
                                         ["drive_lo", "qubit", "13"]], report.table()


def test_the_summary_table_keeps_its_columns_whatever_the_names():
    report = RunReport([
        Outcome("resonator_spectroscopy", "qubit 10", "calibrated", "check failed",
                changes=[Change("qubit 10", "readout_assignment_fidelity", 0.91, 0.987654321),
                         Change("qubit 10", "resonator_hz", None, 7.123456789e9)]),
        Outcome("cz", "edge 10-11", "calibrated", "aged",
                changes=[Change("edge 10-11", "cz_amplitude", 0.25, 0.3)]),
        Outcome("t1", "qubit 0", "fresh", "within 2 sigma"),
        Outcome("rb", "edge 3-4", "failed", "fit did not converge"),
    ], parent_id=7)
    lines = report.table().splitlines()
    header, rows = lines[0], lines[1:4]
    arrows = {line.index("->") for line in [header, *rows]}
    assert len(arrows) == 1, report.table()
    for column in ("subject", "parameter"):
        start = header.index(column)
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), report.table()
    listed = [line for line in lines if line.startswith("  ")]
    assert len({line.index(line.split()[1]) for line in listed}) == 1, report.table()
    assert lines[-1] == "nothing committed; snapshot 7 stays the newest"


def test_the_summary_of_a_run_that_measured_nothing_has_no_empty_table():
    """Every step fresh: the summary lists them and says nothing was committed, without the
    value table's header over no rows."""
    report = RunReport([Outcome("t1", "qubit 0", "fresh", "within 2 sigma"),
                        Outcome("ramsey", "qubit 0", "fresh", "within 2 sigma")], parent_id=3)
    assert report.table().splitlines() == [
        "fresh (2):", "  t1      qubit 0  within 2 sigma", "  ramsey  qubit 0  within 2 sigma",
        "nothing committed; snapshot 3 stays the newest"]


def test_a_drive_lo_that_cannot_reach_its_qubits_is_refused_naming_them():
    """Qubits at 5.05 and 5.90 GHz on one drive LO: set 100 MHz below the lower one, it would
    drive the other at a 950 MHz IF, beyond the band the calibration accepts (and the 500 MHz
    Nyquist frequency of 1 GS/s). ``choose_drive_lo`` refuses, naming the qubit, its IF and
    the fix, and sets no LO (a ``FitError``: the graph records the step as failed and goes on
    with the others); with the two qubits on two LOs each gets its own."""
    from labqpu.calibration.bootstrap import choose_drive_lo

    work = Working(device={}, qubits={0: {"frequency_hz": 5.05e9}, 1: {"frequency_hz": 5.90e9}})
    wiring = {0: SimpleNamespace(drive_lo="lo_a"), 1: SimpleNamespace(drive_lo="lo_a")}
    kit = SimpleNamespace(work=work, config=SimpleNamespace(qubits=wiring), fs=1e9)
    with pytest.raises(FitError, match=r"'lo_a'.*qubit 1 at an IF of 950 MHz.*500 MHz"
                                               r".*drive LO of their own"):
        choose_drive_lo(kit, 0)
    assert not any("drive_lo_frequency_hz" in p for p in work.qubits.values())
    # in the graph the step fails and the others go on (qubit 2 on an LO of its own)
    work.qubits[2] = {"frequency_hz": 5.5e9}
    wiring[2] = SimpleNamespace(drive_lo="lo_b")
    drive_lo = replace({n.name: n for n in NODES}["drive_lo"], requires=())
    outcomes = walk(kit, plan(None, [0, 1, 2], [], (drive_lo,)), shots=1,
                    forced={"drive_lo"})
    assert [(o.subject, o.status) for o in outcomes] == [
        ("qubit 0", "failed"), ("qubit 1", "failed"), ("qubit 2", "calibrated")], outcomes
    assert "IF of 950 MHz" in outcomes[0].reason
    kit.fs = 2.5e9  # below its Nyquist frequency, 1.25 GHz, a 950 MHz IF is played
    choose_drive_lo(kit, 0)
    assert work.qubits[1]["drive_lo_frequency_hz"] == 4.95e9
    del work.qubits[2]
    wiring[1] = SimpleNamespace(drive_lo="lo_b")
    choose_drive_lo(kit, 0)
    choose_drive_lo(kit, 1)
    assert [work.qubits[q]["drive_lo_frequency_hz"] for q in (0, 1)] == [4.95e9, 5.80e9]


def test_the_drive_lo_check_says_it_measured_nothing():
    """The drive_lo step's check computes the drive IF from calibrated values; its summary
    names that value, not a measurement."""
    from labqpu.calibration.bootstrap import drive_if_band_hz
    from labqpu.calibration.checks import check_drive_lo

    lo, hi = drive_if_band_hz(1e9)
    assert (lo, hi) == (20e6, 450e6)
    kit = SimpleNamespace(fs=1e9, work=SimpleNamespace(qubits={
        0: {"frequency_hz": 5.0e9, "drive_lo_frequency_hz": 5.0e9 - (lo + hi) / 2}}))
    result = check_drive_lo(kit, 0)
    assert result.passed
    assert str(result).startswith("drive IF (no measurement: the calibrated frequency less "
                                  "the LO's)"), str(result)
    assert str(result).endswith(f"Hz, inside the band {lo:.6g}..{hi:.6g} Hz"), str(result)
    kit.work.qubits[0]["drive_lo_frequency_hz"] = 5.0e9 - 2 * hi
    assert str(check_drive_lo(kit, 0)).endswith(f"outside the band {lo:.6g}..{hi:.6g} Hz")


def test_the_summary_table_says_when_a_value_came_out_the_same():
    """A value measured again and found the same (drive_handedness -1 -> -1) read as a change;
    calibration.md says every value changed is listed."""
    report = RunReport([
        Outcome("drive_handedness", "qubit 0", "calibrated", "aged",
                changes=[Change("qubit 0", "drive_handedness", -1, -1),
                         Change("qubit 0", "pulse_duration_s", 2e-8, 2.4e-8)]),
    ], parent_id=7)
    rows = report.table().splitlines()[1:3]
    assert rows[0].endswith("-1  ->  (measured again, unchanged)"), report.table()
    assert rows[1].endswith("2e-08  ->  2.4e-08"), report.table()


def test_the_summary_table_gives_no_old_value_for_a_design_estimate():
    """A review's case: a bootstrap's summary showed the design's resonator estimate as the old
    resonator_hz, as if it had been measured; a value measured before shows as old."""
    from labqpu.calibration.runner import _changes, _state
    from labqpu.calibration.working import Working

    work = Working(device={}, qubits={0: {"resonator_hz": 7.2e9, "t1_s": 4e-5}},
                   measured_at={(0, "t1_s"): "2026-12-01T00:00:00+00:00"})
    before = _state(work)
    work.set(0, "resonator_hz", 7.2043e9, "resonator_spectroscopy")
    work.set(0, "t1_s", 5e-5, "t1")
    changes = {c.name: (c.old, c.new) for c in _changes(work, before)}
    assert changes == {"resonator_hz": (None, 7.2043e9), "t1_s": (4e-5, 5e-5)}, changes


def test_the_summary_table_does_not_call_a_changed_value_unchanged():
    """A review's case: discriminator centres that moved (0.1676 -> 0.1725) showed as
    "(measured again, unchanged)", the table comparing its shortened texts, not the values."""
    old = {"centers": [[0.1676, -0.1465], [0.01, 0.02]]}
    new = {"centers": [[0.1725, -0.1508], [0.01, 0.02]]}
    report = RunReport([
        Outcome("readout", "qubit 0", "calibrated", "aged",
                changes=[Change("qubit 0", "discriminator", old, new),
                         Change("qubit 0", "frequency_hz", 5.0e9, 5.0e9 + 1e-3)]),
    ], parent_id=7)
    rows = report.table().splitlines()[1:3]
    assert "unchanged" not in report.table(), report.table()
    assert all(row.endswith(" (changed beyond the digits shown)") for row in rows), \
        report.table()


def test_a_check_of_a_value_without_unit_has_no_stray_space():
    from labqpu.calibration.checks import CheckResult

    assert str(CheckResult(True, 0.978, 0.98, 0.03, "")) == (
        "measured 0.978, expected 0.98, within tolerance 0.03")
