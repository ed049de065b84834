"""The calibration graph: every experiment as a node with prerequisites, a check and a
calibration.

A :class:`Node` runs on subjects of one kind (each qubit, or each coupled edge). Its
``calibrate`` is an experiment of :mod:`labqpu.calibration.bootstrap` (acquire -> pure analysis
-> explicit update of the working set); its ``check`` (optional) is a cheap measurement from
:mod:`labqpu.calibration.checks` judged against a tolerance; ``watches`` names the parameters
whose age decides whether the node's values are fresh (their kinds and age limits are in
:mod:`labqpu.backend.target`). A qubit node's prerequisite is the named node on the same qubit;
an edge node's, the named node on both of its qubits, or on the edge itself when that node is
an edge node too.

The graph (arrows point from a prerequisite to what needs it)::

    resonator_spectroscopy -> sweet_spot -> drive_lo -> rabi -> drive_handedness -> ramsey
        -> drag -> fine_amplitude -> readout -> t1 -> echo
                         |     |          \\-> active_reset
                         |     |          \\-> cz (edge: readout on both qubits)
                         |     |                 -> cz_spectators, cz_leakage
                         |     \\-> anharmonicity  (the cz starts from it on both qubits)
                         \\-> zz (edge: fine_amplitude on both qubits)

The graph ends with :data:`RB_NODE` (``rb``): randomized benchmarking of every qubit and edge
whose gate error no longer describes its gates (measured before a value its pulses are built
from, older than the ``gate_error`` age limit, or never measured). It runs on the snapshot the
graph committed, since its sequences are compiled with the calibrated gates
(:func:`labqpu.calibration.runner.run_graph`); it is not a :class:`Node`.

A lab adds its own experiments without editing labqpu: :func:`register_node` in a script, or
an entry point of the group :data:`NODE_ENTRY_POINTS` in its own package, which ``labqpu
calibrate`` and every run then find (:func:`graph_nodes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal

from labqpu.calibration.anharmonicity import anharmonicity
from labqpu.calibration.bootstrap import (
    Progress,
    choose_drive_lo,
    cz,
    drag,
    drive_handedness,
    rabi,
    ramsey,
    refine_cz,
    sweet_spot,
    t1,
)
from labqpu.calibration.checks import (
    CheckResult,
    check_cz,
    check_drag_beta,
    check_drive_lo,
    check_frequency,
    check_pi_amplitude,
    check_readout,
    check_resonator,
    check_t1,
)
from labqpu.calibration.coherence import hahn_echo, static_zz
from labqpu.calibration.experiments import Kit
from labqpu.calibration.fine import fine_amplitude, worst_relative_error
from labqpu.calibration.leakage import cz_leakage
from labqpu.calibration.readout import readout, resonator_and_discriminator
from labqpu.calibration.records import describe as describe  # its home before 2026-12-07
from labqpu.calibration.reset import active_reset
from labqpu.calibration.spectators import cz_spectators
from labqpu.errors import CalibrationError, did_you_mean, log_as_own
from labqpu.store import CZ_PARAMETERS
from labqpu.store.staleness import DEFAULT_MAX_AGE_H

Subject = int | tuple[int, int]


@dataclass(frozen=True)
class Node:
    """One experiment of the graph.

    Attributes:
        name: what the user types (``labqpu calibrate ramsey``).
        scope: ``"qubit"`` or ``"edge"``.
        requires: names of the prerequisite nodes.
        watches: parameters whose presence and age say whether the node's values are fresh;
            a node watching nothing is fresh unless forced or its check fails.
        calibrate: ``(kit, subject, shots, progress)`` -> None; updates ``kit.work`` or
            raises ``FitError``.
        check: ``(kit, subject, shots)`` -> :class:`CheckResult`, or None when the node has
            no cheap check.
        measures: prerequisite nodes whose calibration this node measures (the CZ whose
            leakage it reads, the readout a reset uses, the sweet spot whose coarse frequency
            the Ramsey node refines): its values are out of date, and it is calibrated again,
            when one of theirs was measured after its own. A node without a check is also
            out of date when a node without a check that it builds on (through any chain of
            prerequisites) was measured after it (``labqpu.calibration.freshness``).
        needs_feedforward: the node plays conditional pulses; a rack whose controllers state
            no feed-forward latency leaves it out.
        refine: ``(kit, subject, shots, progress)`` -> None, a cheaper calibration the runner
            tries first when the node's check failed (not when it is forced, missing or too
            old); its ``FitError`` makes the runner run ``calibrate``.
        kind: the age kind (``labqpu.store.staleness.DEFAULT_MAX_AGE_H``: ``"coherence"``,
            ``"frequency"``, ...) of the values it watches that labqpu gives none, a lab's
            own: they age with that kind's limit (the wiring file's, else the default). None:
            they never age.
        starts_from: nodes whose values its calibration starts from without being built on
            them (the CZ scan is centred by the anharmonicity): planned before it as
            prerequisites are, and one that failed or was blocked blocks its calibration (not
            its check or refinement), but a new value of theirs outdates nothing of it.
        design_estimates: values it watches (and sets) that are only estimates while they
            come from the design (stored with the experiment ``"design"``, or filled in from
            the design file): the runner then calibrates the node, as for a missing value.
    """

    name: str
    scope: Literal["qubit", "edge"]
    requires: tuple[str, ...]
    watches: tuple[str, ...]
    calibrate: Callable[[Kit, Subject, int, Progress], None]
    check: Callable[[Kit, Subject, int], CheckResult] | None = None
    measures: tuple[str, ...] = ()
    needs_feedforward: bool = False
    refine: Callable[[Kit, Subject, int, Progress], None] | None = None
    kind: str | None = None
    starts_from: tuple[str, ...] = ()
    design_estimates: tuple[str, ...] = ()

    def prerequisites(self, subject: Subject) -> list[tuple[str, Subject]]:
        """(node name, subject) of each prerequisite of this node on ``subject``: on its qubit,
        or, for an edge, on both of its qubits and on the edge itself (an edge node that
        needs another edge node)."""
        return _on(self.scope, self.requires, subject)

    def starting_points(self, subject: Subject) -> list[tuple[str, Subject]]:
        """(node name, subject) of each node of ``starts_from`` on ``subject``, as
        :meth:`prerequisites`."""
        return _on(self.scope, self.starts_from, subject)


def _on(scope: str, names: tuple[str, ...], subject: Subject) -> list[tuple[str, Subject]]:
    if scope == "qubit":
        return [(name, subject) for name in names]
    return [(name, s) for name in names for s in (*subject, subject)]


def _drag_and_amplitude(kit: Kit, q: int, shots: int, progress: Progress) -> None:
    """Rabi, DRAG, Rabi: the DRAG pulse's beta, and its amplitudes to about 1 %."""
    rabi(kit, q, shots)
    drag(kit, q, shots)
    rabi(kit, q, shots)


def _check_drag(kit: Kit, q: int, shots: int) -> CheckResult:
    """The pi amplitude after DRAG (relative), then the DRAG beta (samples): a beta far off
    leaves the pi amplitude right and turns every pulse's axis."""
    amplitude = check_pi_amplitude(kit, q, shots * AMPLITUDE_CHECK_SHOTS, TOLERANCES["drag"])
    if not amplitude.passed:
        return amplitude
    return check_drag_beta(kit, q, shots * CHECK_SHOTS, TOLERANCES["drag_beta"])


def _check_fine_amplitude(kit: Kit, q: int, shots: int) -> CheckResult:
    """The larger relative rotation error of the pi and pi/2 pulses, against zero."""
    error = worst_relative_error(kit, q, shots * FINE_SHOTS)
    return CheckResult(abs(error) <= TOLERANCES["fine_amplitude"], error, 0.0,
                       TOLERANCES["fine_amplitude"], "(relative rotation error)")


#: Tolerances of the checks: |0> read off its centre (distances between the discriminator's
#: centres), pi amplitude (relative) after Rabi and after DRAG, DRAG beta (s), rotation
#: error of the pi and pi/2 pulses (relative), frequency (Hz), readout fidelity drop, T1
#: (relative), CZ phases (rad).
TOLERANCES = {"resonator": 0.25, "rabi": 0.05, "drag": 0.01, "drag_beta": 0.2e-9,
              "fine_amplitude": 0.002, "ramsey": 30e3, "readout": 0.03, "t1": 0.2, "cz": 0.1}
#: Shots of a check, in units of the run's shots.
CHECK_SHOTS = 5
#: Shots of the pi-amplitude checks, in units of the run's shots (their tolerance is tight).
AMPLITUDE_CHECK_SHOTS = 20
#: Shots per sequence of the fine amplitude calibration and its check, in units of the run's.
FINE_SHOTS = 5
#: Shots of the CZ leakage measurement, in units of the run's (its estimate is a difference of
#: two probabilities read near 0.97: at 400 x 100 shots its standard error is ~0.0013).
LEAKAGE_SHOTS = 100

#: The calibration graph, prerequisites first.
NODES: tuple[Node, ...] = (
    Node("resonator_spectroscopy", "qubit", (), ("resonator_hz",),
         lambda kit, q, shots, _: resonator_and_discriminator(kit, q, shots),
         lambda kit, q, shots: check_resonator(kit, q, shots * CHECK_SHOTS,
                                               TOLERANCES["resonator"])),
    Node("sweet_spot", "qubit", ("resonator_spectroscopy",), ("flux_bias_a",),
         lambda kit, q, shots, _: sweet_spot(kit, q, shots)),
    Node("drive_lo", "qubit", ("sweet_spot",), (),
         lambda kit, q, shots, _: choose_drive_lo(kit, q),
         lambda kit, q, shots: check_drive_lo(kit, q)),
    Node("rabi", "qubit", ("drive_lo",), ("pi_amplitude", "pi2_amplitude"),
         lambda kit, q, shots, _: rabi(kit, q, shots),
         lambda kit, q, shots: check_pi_amplitude(kit, q, shots * AMPLITUDE_CHECK_SHOTS,
                                                  TOLERANCES["rabi"])),
    Node("drive_handedness", "qubit", ("rabi",), ("drive_handedness",),
         lambda kit, q, shots, _: drive_handedness(kit, q, shots)),
    # the sweet spot's spectroscopy sets the frequency coarsely (20-40 kHz off, inside the
    # check's tolerance): a sweet spot measured after the Ramsey one is measured again
    Node("ramsey", "qubit", ("drive_handedness", "sweet_spot"), ("frequency_hz", "t2_s"),
         lambda kit, q, shots, _: ramsey(kit, q, shots),
         lambda kit, q, shots: check_frequency(kit, q, shots * CHECK_SHOTS,
                                               TOLERANCES["ramsey"]),
         measures=("sweet_spot",)),
    Node("drag", "qubit", ("ramsey",), ("drag_beta", "pi_amplitude", "pi2_amplitude"),
         _drag_and_amplitude, _check_drag),
    Node("fine_amplitude", "qubit", ("drag",), ("pi_amplitude", "pi2_amplitude"),
         lambda kit, q, shots, _: fine_amplitude(kit, q, shots * FINE_SHOTS),
         _check_fine_amplitude),
    # the CZ scan starts from it (starts_from), but no pulse is built from it, so a new value
    # outdates nothing; a property of the junction, it never ages; the design's is a guess
    Node("anharmonicity", "qubit", ("fine_amplitude",), ("anharmonicity_hz",),
         lambda kit, q, shots, _: anharmonicity(kit, q, shots),
         design_estimates=("anharmonicity_hz",)),
    # after the resonator node moved the readout frequency (its check failed), the readout's
    # point is searched again: the centres it measured there read, but need not read best
    Node("readout", "qubit", ("fine_amplitude", "resonator_spectroscopy"),
         ("readout_frequency_hz", "readout_amplitude", "readout_duration_s", "discriminator",
          "assignment_matrix", "readout_assignment_fidelity"),
         lambda kit, q, shots, _: readout(kit, q, shots),
         lambda kit, q, shots: check_readout(kit, q, shots * CHECK_SHOTS,
                                             TOLERANCES["readout"]),
         measures=("resonator_spectroscopy",)),
    Node("active_reset", "qubit", ("readout",), ("reset_rounds",),
         lambda kit, q, shots, progress: active_reset(kit, q, shots * CHECK_SHOTS, progress),
         measures=("readout",), needs_feedforward=True),
    Node("t1", "qubit", ("readout",), ("t1_s", "reset_duration_s"),
         lambda kit, q, shots, _: t1(kit, q, shots),
         lambda kit, q, shots: check_t1(kit, q, shots * CHECK_SHOTS, TOLERANCES["t1"])),
    Node("cz", "edge", ("readout",), CZ_PARAMETERS,
         lambda kit, pair, shots, progress: cz(kit, pair, shots, progress),
         lambda kit, pair, shots: check_cz(kit, pair, shots * CHECK_SHOTS, TOLERANCES["cz"]),
         refine=lambda kit, pair, shots, _: refine_cz(kit, pair, shots),
         starts_from=("anharmonicity",)),
    Node("echo", "qubit", ("t1",), ("t2_echo_s",),
         lambda kit, q, shots, _: hahn_echo(kit, q, shots * CHECK_SHOTS)),
    Node("zz", "edge", ("fine_amplitude",), ("zz_hz",),
         lambda kit, pair, shots, _: static_zz(kit, pair, shots * CHECK_SHOTS)),
    Node("cz_spectators", "edge", ("cz",), ("cz_spectator_spread_rad",),
         lambda kit, pair, shots, progress: cz_spectators(kit, pair, shots * CHECK_SHOTS,
                                                          progress),
         measures=("cz",)),
    Node("cz_leakage", "edge", ("cz",), ("cz_leakage",),
         lambda kit, pair, shots, _: cz_leakage(kit, pair, shots * LEAKAGE_SHOTS),
         measures=("cz",)),
)


#: The graph's last step, randomized benchmarking of outdated gate errors (module docstring).
RB_NODE = "rb"


#: The entry-point group through which an installed package adds calibration nodes: each entry
#: point names a :class:`Node` or a sequence of them, e.g. in the lab's ``pyproject.toml``::
#:
#:     [project.entry-points."labqpu.calibration_nodes"]
#:     quick_t1 = "mylab.calibration:QUICK_T1"
NODE_ENTRY_POINTS = "labqpu.calibration_nodes"
#: Names a node may not take: the graph's rb step and the store commands of ``labqpu
#: calibrate`` (``labqpu.cli_store.STORE_COMMANDS``), which the command reads first.
RESERVED_NAMES = (RB_NODE, "history", "diff", "rollback")
_registered: list[Node] = []
#: The installed nodes once the entry points were read, or why they could not be.
_installed: list[tuple[Node, ...] | CalibrationError] = []


def graph_nodes() -> tuple[Node, ...]:
    """The calibration graph: labqpu's :data:`NODES`, then the nodes of installed packages
    (:data:`NODE_ENTRY_POINTS`, by entry-point name), then those :func:`register_node` added
    in this process, in that order.

    Raises:
        CalibrationError: an entry point cannot be loaded or names something that is not a
            node the graph can take (named, with the entry point and why).
    """
    if not _installed:
        try:
            _installed.append(_load_installed())
        except CalibrationError as exc:  # kept: the packages are not imported again
            _installed.append(exc)
    if isinstance(_installed[0], CalibrationError):
        raise _installed[0]
    return (*NODES, *_installed[0], *_registered)


def _load_installed() -> tuple[Node, ...]:
    """The nodes of the :data:`NODE_ENTRY_POINTS` entry points, each after the nodes it
    requires or starts from (another package's too), else in the order of the entry points'
    names."""
    pending: list[tuple[str, object]] = []
    for point in sorted(entry_points(group=NODE_ENTRY_POINTS), key=lambda p: p.name):
        package = point.dist.name if point.dist else "<its package>"
        where = (f"calibration node entry point {point.name} = {point.value!r} (installed by "
                 f"{package}{f' {point.dist.version}' if point.dist else ''})")
        try:
            loaded = point.load()
        except Exception as exc:  # a lab's package: any failure of its import
            raise CalibrationError(
                f"{where}: cannot be loaded: {type(exc).__name__}: {exc}; no calibration "
                f"runs until it is mended or uninstalled (`pip uninstall {package}`)") from exc
        log_as_own(point.module.split(".", 1)[0])  # its logs at --log-level, as labqpu's
        pending += [(where, n) for n in (loaded if isinstance(loaded, list | tuple)
                                         else (loaded,))]
    found: list[Node] = []
    while pending:
        ready = [(where, n) for where, n in pending
                 if _node_problem(n, (*NODES, *found)) is None]
        if not ready:  # the first that cannot join, and why
            where, n = pending[0]
            raise CalibrationError(f"{where}: {_node_problem(n, (*NODES, *found))}")
        where, n = ready[0]
        found.append(n)
        pending.remove((where, n))
    return tuple(found)


def register_node(n: Node) -> None:
    """Add ``n``, a lab's own experiment, to the calibration graph of this process, after
    every node it has (so its prerequisites must be among them): ``run_graph``, the watch and
    the bootstrap then run it like labqpu's own.

    Raises:
        ValueError: ``n`` is not a :class:`Node` the graph can take (:func:`_node_problem`:
            its name taken or reserved, its scope, its fields' types, a prerequisite the graph
            lacks or of the wrong scope); nothing is added.
        CalibrationError: an installed package's nodes cannot be read (:func:`graph_nodes`).
    """
    problem = _node_problem(n, graph_nodes())
    if problem:
        raise ValueError(f"register_node: {problem}")
    _registered.append(n)


def _node_problem(n: object, before: Sequence[Node]) -> str | None:
    """Why the graph ``before`` cannot take ``n`` after its nodes, or None: its name must be
    a new word, not :data:`RESERVED_NAMES`; its scope ``"qubit"`` or ``"edge"``; ``requires``,
    ``watches``, ``measures``, ``starts_from`` and ``design_estimates`` tuples of names; its
    prerequisites and the nodes it starts from nodes of ``before`` (a qubit node's, qubit
    nodes: it runs on one qubit); what it measures among its prerequisites, with values it
    watches (their age is compared with theirs); its design estimates among the values it
    watches; ``calibrate`` callable, ``check`` and ``refine`` callable or None; ``kind`` an
    age kind or None."""
    if not isinstance(n, Node):
        return f"{n!r} is not a labqpu.calibration.graph.Node"
    if not isinstance(n.name, str) or not n.name.isidentifier():
        return f"node name {n.name!r}: must be a word such as t1_quick"
    scopes = {m.name: m.scope for m in before}
    if n.name in scopes or n.name in RESERVED_NAMES:
        return f"node {n.name!r}: the graph has a node or command of that name"
    where = f"node {n.name!r}"
    if n.scope not in ("qubit", "edge"):
        return f"{where}: scope must be 'qubit' or 'edge', got {n.scope!r}"
    for field in ("requires", "watches", "measures", "starts_from", "design_estimates"):
        names = getattr(n, field)
        if not (isinstance(names, tuple) and all(isinstance(x, str) for x in names)):
            return f"{where}: {field} must be a tuple of names, got {names!r}"
    for field, verb in (("requires", "require"), ("starts_from", "start from")):
        names = getattr(n, field)
        unknown = [m for m in names if m not in scopes]
        if unknown:
            return (f"{where} {field.replace('_', ' ')} {unknown[0]!r}, which the graph does "
                    "not have before it")
        if n.scope == "qubit" and any(scopes[m] == "edge" for m in names):
            return f"{where}: a qubit node cannot {verb} an edge node"
    if any(m not in n.watches for m in n.design_estimates):
        return f"{where}: design_estimates must name values it watches, got {n.design_estimates!r}"
    if any(m not in n.requires for m in n.measures):
        return f"{where}: measures must name nodes it requires, got {n.measures!r}"
    if n.measures and not n.watches:
        return f"{where}: measures other nodes, so it must watch values (their ages compare)"
    if not callable(n.calibrate) or not all(f is None or callable(f)
                                            for f in (n.check, n.refine)):
        return f"{where}: calibrate (and check and refine, if given) must be callables"
    if n.kind is not None and n.kind not in DEFAULT_MAX_AGE_H:
        return (f"{where}: kind {n.kind!r} is not an age kind"
                f"{did_you_mean(str(n.kind), DEFAULT_MAX_AGE_H)} (known: "
                f"{', '.join(DEFAULT_MAX_AGE_H)})")
    return None


def node(name: str, nodes: Sequence[Node] | None = None) -> Node:
    """The node called ``name`` (among ``nodes``, default :func:`graph_nodes`); ``ValueError``
    naming the known ones otherwise."""
    nodes = graph_nodes() if nodes is None else nodes
    for n in nodes:
        if n.name == name:
            return n
    if name == RB_NODE:
        raise ValueError(f"{RB_NODE!r} is the graph's last step, not a Node: run_graph runs it "
                         "when its nodes are all or name it")
    raise ValueError(f"no calibration node {name!r} (known: "
                     f"{', '.join([*(n.name for n in nodes), RB_NODE])})")


def downstream(name: str, nodes: Sequence[Node]) -> list[Node]:
    """The nodes of ``nodes`` (prerequisites first) built on node ``name``: those that require
    it, directly or through other nodes."""
    below, out = {name}, []
    for n in nodes:
        if any(r in below for r in n.requires):
            below.add(n.name)
            out.append(n)
    return out


def plan(names: Iterable[str] | None, qubits: Iterable[int],
         edges: Iterable[tuple[int, int]], nodes: Sequence[Node] | None = None
         ) -> list[tuple[Node, Subject]]:
    """The steps to run, in dependency order: the nodes ``names`` (default: all of ``nodes``,
    default :func:`graph_nodes`) with every prerequisite, on ``qubits`` and on the ``edges``
    (normalised low-high) whose two qubits are both among them."""
    nodes = graph_nodes() if nodes is None else nodes
    wanted = {n.name for n in nodes} if names is None else {node(n, nodes).name for n in names}
    closure = set()
    pending = list(wanted)
    while pending:
        name = pending.pop()
        if name not in closure:
            closure.add(name)
            wanted_node = node(name, nodes)
            pending.extend((*wanted_node.requires, *wanted_node.starts_from))
    qubits = sorted(set(qubits))
    edges = sorted({(min(e), max(e)) for e in edges if set(e) <= set(qubits)})
    steps: list[tuple[Node, Subject]] = []
    for n in nodes:
        if n.name in closure:
            steps.extend((n, s) for s in (qubits if n.scope == "qubit" else edges))
    return steps
