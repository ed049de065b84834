"""Randomized benchmarking: the gate errors of the Target.

Three parts, as for every calibration experiment:

* **acquire** (:func:`acquire_rb`): random Clifford sequences on the chosen qubits (1-qubit
  sequences run simultaneously on qubits that share no coupler, 2-qubit sequences on one edge),
  each Clifford fenced by a barrier so the transpiler cannot merge neighbours, and the sequence
  closed by the inverse of its product. The circuits go through ``transpile(qc, backend)`` with
  the layout pinned and run with ``backend.run``; the transpiled circuits also say how many
  physical pulses an average Clifford costs.
* **a pure analysis** (:func:`fit_rb`, :func:`errors_per_gate`): ``scipy.optimize.curve_fit``
  of the survival probability P(m) = A alpha^m + B, the error per Clifford
  EPC = (1 - alpha)(d - 1) / d, and from it the error per physical gate.
* **an explicit update** (:func:`rb_update`): the errors go into a ``SnapshotBuilder`` as the
  ``error`` of gates ``sx:q``, ``sy:q``, ``x:q`` and ``cz:a-b``, with the experiment id and the
  time of the measurement; from there the Target carries them.

Error per gate. sx, sy and x each play one DRAG pulse of the same duration, so the
single-qubit EPC is shared equally among the pulses of an average Clifford:
EPG_1q = EPC_1q / n_pulses (rz is a frame change and plays nothing). For an edge, the 2-qubit
EPC is, to first order, the sum of the errors of its gates, so
EPG_cz = (EPC_2q - sum_q n_pulses_q EPG_1q(q)) / n_cz. The usual first-order caveats of RB
apply: the errors are averages over the Clifford group, and leakage shows up as a lower
asymptote B rather than in alpha.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qiskit import QuantumCircuit, transpile
from scipy.optimize import OptimizeWarning, curve_fit

from labqpu.calibration.plots import save_records
from labqpu.calibration.rb_sequences import (
    CLOSE_PROBE_CLIFFORDS,
    LENGTH_MARGIN,
    ONE_QUBIT_PULSES,
    QUICK_PROBE_CLIFFORDS,
    independent_sets,
    over_limits,
    random_sequence,
    rb_subjects,
    sequence_cost,
    sequence_cost_bound,
)
from labqpu.calibration.records import ExperimentRecord, describe, experiments_directory
from labqpu.errors import CalibrationSettingsError, FitError
from labqpu.store import CZ_PARAMETERS
from labqpu.store.builder import SnapshotBuilder
from labqpu.store.merge import commit_apart_onto_newest
from labqpu.store.staleness import age_h

if TYPE_CHECKING:
    from labqpu.store.snapshot import Snapshot

@dataclass(frozen=True)
class RBData:
    """What :func:`acquire_rb` measured on ``qubits`` (one qubit, or one edge).

    ``lengths`` (Cliffords per sequence) and ``survival`` (P(all measured qubits back in 0),
    shape (len(lengths), seeds)); ``pulses_per_clifford`` and ``cz_per_clifford`` are averages
    over the transpiled sequences (pulses counted per qubit); ``experiment`` is the run's id
    (shared by the groups benchmarked together), :attr:`record_id` this benchmark's.
    """

    qubits: tuple[int, ...]
    lengths: np.ndarray
    survival: np.ndarray
    pulses_per_clifford: dict[int, float]
    cz_per_clifford: float
    shots: int
    experiment: str
    measured_at: str

    @property
    def record_id(self) -> str:
        """The id of this benchmark's record (``rb-<time>-q1``, ``rb-<time>-q0-1``): its
        JSON and PNG file names, and the experiment the gate errors it measured name."""
        return f"{self.experiment}-q{'-'.join(str(q) for q in self.qubits)}"


@dataclass(frozen=True)
class RBFit:
    """Decay ``alpha`` (per Clifford) with its standard error, the fit's ``amplitude`` A and
    ``baseline`` B, the error per Clifford and its standard error, and the reduced chi-square."""

    alpha: float
    alpha_stderr: float
    amplitude: float
    baseline: float
    epc: float
    epc_stderr: float
    reduced_chi2: float


def acquire_rb(backend, groups: Sequence[Sequence[int]], lengths: Sequence[int], *,
               seeds: int = 6, shots: int = 400, seed: int | None = None,
               experiment: str | None = None) -> list[RBData]:
    """Run RB on ``backend``: every group of ``groups`` is one benchmark (a single qubit, or
    the two qubits of an edge); the groups of one call run simultaneously, so give together
    only groups that share no coupler. ``lengths`` are numbers of Cliffords; ``seeds`` random
    sequences per length; ``shots`` per circuit. Returns one :class:`RBData` per group."""
    groups = [tuple(int(q) for q in g) for g in groups]
    if not groups or any(len(g) not in (1, 2) for g in groups):
        raise ValueError(f"RB groups must be single qubits or edges, got {groups}")
    used = [q for g in groups for q in g]
    if len(set(used)) != len(used):
        raise ValueError(f"RB groups overlap: {groups}")
    n = backend.num_qubits
    bad = [q for q in used if not 0 <= q < n]
    if bad:
        raise ValueError(f"RB qubits {bad} are not on {backend.name} ({n} qubits)")
    lengths = [int(m) for m in lengths]
    if not lengths or min(lengths) < 1:
        raise ValueError(f"RB lengths must be positive numbers of Cliffords, got {lengths}")
    rng = np.random.default_rng(seed)
    experiment = experiment or f"rb-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    circuits = []
    for m in lengths:
        for _ in range(seeds):
            qc = QuantumCircuit(n, len(used))
            for g in groups:
                seq, _ = random_sequence(len(g), m, rng)
                qc.compose(seq, qubits=list(g), inplace=True)
            qc.barrier()
            qc.measure(used, range(len(used)))
            circuits.append(qc)
    isa = transpile(circuits, backend, initial_layout=list(range(n)))
    result = backend.run(isa, shots=shots).result()
    counts = result.get_counts()
    counts = counts if isinstance(counts, list) else [counts]
    measured_at = datetime.now(UTC).isoformat()
    out = []
    offset = 0
    for g in groups:
        bits = range(offset, offset + len(g))
        offset += len(g)
        survival = np.empty(len(circuits))
        for i, c in enumerate(counts):
            ok = sum(v for k, v in c.items()
                     if all(k.zfill(len(used))[::-1][b] == "0" for b in bits))
            survival[i] = ok / shots
        cliffords = sum((m + 1) * seeds for m in lengths)
        pulses = {q: sum(_count(circ, q, ONE_QUBIT_PULSES) for circ in isa) / cliffords
                  for q in g}
        cz = (sum(_count(circ, g[0], ("cz",)) for circ in isa) / cliffords
              if len(g) == 2 else 0.0)
        out.append(RBData(qubits=g, lengths=np.array(lengths),
                          survival=survival.reshape(len(lengths), seeds),
                          pulses_per_clifford=pulses, cz_per_clifford=cz, shots=shots,
                          experiment=experiment, measured_at=measured_at))
    return out


def _count(circuit: QuantumCircuit, qubit: int, names: tuple[str, ...]) -> int:
    """Operations named in ``names`` that act on physical ``qubit`` of a transpiled circuit."""
    return sum(1 for inst in circuit.data if inst.operation.name in names
               and any(circuit.find_bit(b).index == qubit for b in inst.qubits))


def rb_baseline(assignment_matrices: Sequence[Sequence[Sequence[float]]]) -> float:
    """The survival a fully depolarised register reads: the asymptote B of the RB decay.

    ``assignment_matrices`` holds one 2x2 matrix per measured qubit, rows the prepared state
    and columns the read one ([[P(0|0), P(1|0)], [P(0|1), P(1|1)]]), as the snapshot stores
    them. B = prod_q (P(0|0) + P(0|1)) / 2.
    """
    b = 1.0
    for m in assignment_matrices:
        m = np.asarray(m, dtype=float)
        if m.shape != (2, 2):
            raise ValueError(f"an assignment matrix must be 2x2, got shape {m.shape}")
        b *= 0.5 * (m[0, 0] + m[1, 0])
    return float(b)


#: The largest standard error of a fitted error per Clifford, as a fraction of it, that RB
#: commits: sequences too short to decay (or too few shots) give a larger one.
MAX_EPC_RELATIVE_STDERR = 0.5


def fit_rb(lengths: np.ndarray, survival: np.ndarray, num_qubits: int,
           baseline: float | None = None) -> RBFit:
    """Fit P(m) = A alpha^m + B to the mean survival over seeds at each length ``m``.

    ``baseline`` fixes B (see :func:`rb_baseline`: the readout of a depolarised register);
    sequences short enough to simulate or to run quickly do not decay far enough to pin B by
    themselves. With ``None`` B is fitted too. Pure: no side effects. The uncertainty of each
    mean is the standard error over seeds (at least a binomial floor of 0.005), so
    ``reduced_chi2`` near 1 means the model fits. Raises ``FitError`` if the decay cannot be
    fitted or alpha is not in (0, 1], if the error per Clifford's standard error is over
    :data:`MAX_EPC_RELATIVE_STDERR` of it (sequences too short to decay, too few shots), and
    if fewer distinct lengths than the
    fit's parameters plus one are given (the decay would be a guess, not a measurement).
    """
    lengths = np.asarray(lengths, dtype=float)
    needed = 3 if baseline is not None else 4
    if np.unique(lengths).shape[0] < needed:
        raise FitError(f"RB needs at least {needed} distinct sequence lengths to fit the decay"
                       f"{' with its asymptote fixed' if baseline is not None else ''}, got "
                       f"{sorted({int(m) for m in lengths})}")
    survival = np.asarray(survival, dtype=float)
    mean = survival.mean(axis=1)
    seeds = survival.shape[1]
    sem = survival.std(axis=1, ddof=1) / math.sqrt(seeds) if seeds > 1 else np.zeros_like(mean)
    sem = np.maximum(sem, 0.005)
    d = 2 ** num_qubits
    b_guess = 1.0 / d if baseline is None else baseline

    if baseline is None:
        def model(m, a, alpha, b):
            return a * alpha ** m + b
        p0 = (max(mean[0] - b_guess, 0.1), 0.99, b_guess)
        bounds = ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    else:
        def model(m, a, alpha):
            return a * alpha ** m + baseline
        p0 = (max(mean[0] - b_guess, 0.1), 0.99)
        bounds = ([0.0, 0.0], [1.0, 1.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            popt, pcov = curve_fit(model, lengths, mean, p0=p0, sigma=sem, absolute_sigma=True,
                                   bounds=bounds, maxfev=10_000)
    except (RuntimeError, ValueError, OptimizeWarning) as exc:
        raise FitError(f"randomized benchmarking: the decay does not fit ({exc})") from exc
    a, alpha = float(popt[0]), float(popt[1])
    b = float(popt[2]) if baseline is None else float(baseline)
    err = np.sqrt(np.clip(np.diag(pcov), 0.0, None))
    if not 0.0 < alpha <= 1.0 or not np.all(np.isfinite(err)):
        raise FitError(f"randomized benchmarking: decay alpha = {alpha} is not in (0, 1]")
    resid = (mean - model(lengths, *popt)) / sem
    dof = max(len(lengths) - len(popt), 1)
    scale = (d - 1) / d
    epc, epc_stderr = scale * (1.0 - alpha), scale * float(err[1])
    if not epc_stderr < MAX_EPC_RELATIVE_STDERR * epc:
        # a review's case: sequences of 1-3 Cliffords, the decay pinned at alpha = 1, put an
        # error of ~1e-16 +- 5e-3 into the Target
        raise FitError(f"randomized benchmarking: sequences of at most {int(lengths.max())} "
                       f"Cliffords do not decay enough to measure the error (EPC {epc:.3g} "
                       f"+- {epc_stderr:.3g}); run longer sequences")
    return RBFit(alpha=alpha, alpha_stderr=float(err[1]), amplitude=a, baseline=b,
                 epc=epc, epc_stderr=epc_stderr, reduced_chi2=float(np.sum(resid ** 2) / dof))


def errors_per_gate(data: RBData, fit: RBFit,
                    one_qubit_epg: dict[int, float] | None = None) -> dict[str, float]:
    """Error per physical gate from an RB fit (pure).

    One qubit q: ``{"sx:q", "sy:q", "x:q"}`` all EPC / pulses per Clifford. An edge (a, b):
    ``{"cz:a-b"}``, the 2-qubit EPC less the single-qubit pulses' share (``one_qubit_epg``, from
    a 1-qubit RB of a and b), divided by the cz gates per Clifford; never below 0.
    """
    if len(data.qubits) == 1:
        (q,) = data.qubits
        per = data.pulses_per_clifford[q]
        if per <= 0:
            raise FitError(f"qubit {q}: the RB sequences played no pulses")
        epg = fit.epc / per
        return {f"{g}:{q}": epg for g in ONE_QUBIT_PULSES}
    a, b = sorted(data.qubits)
    if data.cz_per_clifford <= 0:
        raise FitError(f"edge ({a}, {b}): the RB sequences played no cz")
    known = one_qubit_epg or {}
    missing = [q for q in (a, b) if q not in known]
    if missing:
        raise FitError(f"edge ({a}, {b}): 1-qubit errors of qubits {missing} are needed "
                       "to separate the cz error; run 1-qubit RB first")
    share = sum(data.pulses_per_clifford[q] * known[q] for q in (a, b))
    return {f"cz:{a}-{b}": max(fit.epc - share, 0.0) / data.cz_per_clifford}


@dataclass(frozen=True)
class RBOutcome:
    """One benchmark: its data, its fit, and the gate errors it gives (gate key -> error)."""

    data: RBData
    fit: RBFit
    errors: dict[str, float]


#: What a gate's measured error depends on: the qubit's drive-pulse values for the
#: one-qubit pulses, the edge's CZ values for cz. An error measured before one of them changed
#: describes another pulse.
PULSE_VALUES = ("frequency_hz", "pi_amplitude", "pi2_amplitude", "drag_beta",
                "pulse_duration_s", "pulse_sigma_s")


def outdated_gate_errors(snapshot, limits: dict[str, float], now: datetime) -> list[str]:
    """The gate errors of ``snapshot`` that no longer describe its gates, each as
    ``"gate (why)"``: measured before a value its pulse is built from (:data:`PULSE_VALUES` of
    its qubit, or the CZ values of its edge) was measured again, or older than the
    ``gate_error`` age limit in ``limits`` (hours; ``labqpu.store.staleness``), or missing for a
    qubit with calibrated pulses or an edge with a calibrated CZ. Pure: reads the snapshot."""
    return [f"{gate} ({why})" for gate, why in _outdated(snapshot, limits, now)]


def outdated_subjects(snapshot, limits: dict[str, float], now: datetime
                      ) -> dict[int | tuple[int, int], list[str]]:
    """What randomized benchmarking must measure again: each qubit (1-qubit RB) or edge
    (2-qubit RB) with an outdated gate error (:func:`outdated_gate_errors`), with the reasons,
    gates of one reason together (``"sx:2, sy:2, x:2 (measured before pi_amplitude)"``).
    Pure: reads the snapshot."""
    grouped: dict[int | tuple[int, int], dict[str, list[str]]] = {}
    for gate, why in _outdated(snapshot, limits, now):
        name, _, where = gate.partition(":")
        subject = (tuple(int(q) for q in where.split("-")) if name == "cz" else int(where))
        grouped.setdefault(subject, {}).setdefault(why, []).append(gate)
    return {subject: [f"{', '.join(gates)} ({why})" for why, gates in reasons.items()]
            for subject, reasons in grouped.items()}


def _outdated(snapshot, limits: dict[str, float], now: datetime) -> list[tuple[str, str]]:
    """(gate, why) for every outdated gate error of ``snapshot`` (:func:`outdated_gate_errors`)."""
    wanted = {f"{g}:{q}": (params, PULSE_VALUES) for q, params in snapshot.qubits.items()
              if "pi_amplitude" in params for g in ONE_QUBIT_PULSES
              if g != "sy" or f"sy:{q}" in snapshot.gates}
    for pair, params in snapshot.pairs.items():
        if "cz_amplitude" in params:
            wanted[f"cz:{pair[0]}-{pair[1]}"] = (params, CZ_PARAMETERS)
    out = []
    for gate, (params, depends) in sorted(wanted.items()):
        error = snapshot.gates.get(gate, {}).get("error")
        if error is None:
            out.append((gate, "never measured"))
            continue
        measured = datetime.fromisoformat(error.timestamp)
        newer = sorted(n for n in depends if n in params
                       and datetime.fromisoformat(params[n].timestamp) > measured)
        if newer:
            out.append((gate, f"measured before {', '.join(newer)}"))
        elif "gate_error" in limits and age_h(error.timestamp, now) > limits["gate_error"]:
            out.append((gate, f"{age_h(error.timestamp, now):.1f} h old > "
                              f"{limits['gate_error']:g} h"))
    return out


def rb_update(builder: SnapshotBuilder, outcome: RBOutcome) -> None:
    """Write ``outcome``'s gate errors into ``builder``, with the benchmark's record id and
    the time of the measurement."""
    for gate, value in outcome.errors.items():
        builder.set_gate(gate, "error", float(value), outcome.data.record_id,
                         timestamp=outcome.data.measured_at)


@dataclass(frozen=True)
class RBSettings:
    """Sequence lengths (Cliffords), random sequences per length and shots per circuit."""

    lengths_1q: tuple[int, ...] = (1, 50, 150, 300, 600)
    lengths_2q: tuple[int, ...] = (1, 10, 30, 60, 100)
    seeds: int = 4
    shots: int = 300
    #: Most qubits one round drives or disturbs (the benchmarked qubits and their coupled
    #: neighbours): a round is one experiment on that many coupled transmons, which the
    #: firmware simulator evolves as one density matrix (16 x 9^n bytes). On hardware it may
    #: be raised (None: no bound).
    max_round_qubits: int | None = 6

    def __post_init__(self) -> None:
        """Refuse settings no benchmark can fit, before any sequence runs.

        Raises:
            ValueError: fewer than :data:`MIN_RB_LENGTHS` distinct positive lengths, or
                ``seeds`` or ``shots`` below 1, naming the setting.
        """
        for name in ("lengths_1q", "lengths_2q"):
            lengths = getattr(self, name)
            if any(not _whole(m) or m < 1 for m in lengths) or \
                    len(set(lengths)) < MIN_RB_LENGTHS:
                raise ValueError(f"{name}: RB needs at least {MIN_RB_LENGTHS} distinct sequence "
                                 f"lengths of at least 1 Clifford to fit its decay, got "
                                 f"{list(lengths)}")
        for name in ("seeds", "shots"):
            if not _whole(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got "
                                 f"{getattr(self, name)!r}")


def _whole(value: object) -> bool:
    """True for an integer (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


#: Fewest distinct sequence lengths a benchmark takes: the decay's amplitude, rate and (with
#: the asymptote from the readout, as :func:`benchmark_gates` fixes it) nothing more to fit.
MIN_RB_LENGTHS = 3


def check_rb_lengths(backend, settings: RBSettings, *, qubits: Sequence[int] | None = None,
                     edges: Sequence[tuple[int, int]] | None = None) -> None:
    """Refuse lengths whose longest sequences a controller cannot play, before any is built:
    each round's programs (as :func:`~labqpu.calibration.rb.benchmark_gates` groups them)
    against the controller's ``max_program_samples`` (per qubit or edge) and ``max_plays``
    (summed over a round), as its ``hello`` stated them (estimated as
    :mod:`labqpu.calibration.rb_sequences` says). ``qubits`` and ``edges`` as for
    ``benchmark_gates``. Within :data:`LENGTH_MARGIN` of a limit a length is refused,
    though it may fit (``run()`` checks exactly, after the sequences are built).

    Raises:
        CalibrationSettingsError: its ``setting`` ``lengths_1q`` or ``lengths_2q``; the
            message names the qubit or edge, the estimate, the limit and the longest length
            about fitting.
    """
    qubits, edges = rb_subjects(backend, qubits, edges)
    coupling = [tuple(e) for e in backend.config.coupling_map]
    for name, lengths, items in (("lengths_1q", settings.lengths_1q, [(q,) for q in qubits]),
                                 ("lengths_2q", settings.lengths_2q, edges)):
        cliffords = max(lengths) + 1  # the inverse too
        for group in independent_sets(items, coupling, settings.max_round_qubits):
            bounds = {item: sequence_cost_bound(backend, item) for item in group}
            costs = None if None in bounds.values() else bounds
            width = len(group[0])  # a single qubit's probe is exact at once
            for count in (QUICK_PROBE_CLIFFORDS, CLOSE_PROBE_CLIFFORDS)[2 - width:]:
                if costs is not None and not over_limits(backend, costs, cliffords, 0.5):
                    break
                costs = {item: sequence_cost(backend, item, count) for item in group}
            else:
                problems = over_limits(backend, costs, cliffords, 1 - LENGTH_MARGIN[width])
                if problems:
                    raise CalibrationSettingsError(
                        f"sequences of {max(lengths)} Cliffords: {problems[0]}", setting=name)


def benchmark_gates(backend, *, edges: Sequence[tuple[int, int]] | None = None,
                    settings: RBSettings = RBSettings(), seed: int | None = None,
                    progress=None, qubits: Sequence[int] | None = None,
                    failed: dict[tuple[int, ...], str] | None = None) -> list[RBOutcome]:
    """1-qubit RB of every qubit with sx in the Target (or of those of them in ``qubits``),
    then 2-qubit RB of ``edges`` (default: every cz edge, within ``qubits`` when given), in
    rounds of non-interfering groups. The decay asymptote comes from the
    snapshot's assignment matrices. An edge whose qubit is not benchmarked in the same call
    separates its cz error with the qubit's stored sx error. Returns one :class:`RBOutcome`
    per qubit and edge; pass each to :func:`rb_update`. Raises ``FitError`` naming the qubit
    or edge whose decay does not fit, before anything is returned; with ``failed`` (a dict)
    such a qubit or edge is entered there with the reason instead, the others go on, and an
    edge with a failed qubit is not benchmarked (entered as failed too)."""
    snapshot = backend.snapshot
    qubits, edges = rb_subjects(backend, qubits, edges)
    coupling = [tuple(e) for e in backend.config.coupling_map]
    check_rb_lengths(backend, settings, qubits=qubits, edges=edges)
    matrices = {q: snapshot.qubits[q]["assignment_matrix"].value
                for q in {*qubits, *(q for e in edges for q in e)}
                if "assignment_matrix" in snapshot.qubits.get(q, {})}
    missing = [q for q in {q for e in edges for q in e} | set(qubits) if q not in matrices]
    if missing:
        raise FitError(f"qubits {sorted(missing)}: RB needs their assignment matrices "
                       "(readout calibration) for the decay asymptote")
    # An edge whose qubit is not benchmarked here separates its cz error with the qubit's
    # stored 1-qubit error (the caller decided it still describes the qubit's pulses).
    errors: dict[str, float] = {
        f"sx:{q}": snapshot.gates[f"sx:{q}"]["error"].value
        for q in {q for e in edges for q in e} - set(qubits)
        if "error" in snapshot.gates.get(f"sx:{q}", {})}
    outcomes: list[RBOutcome] = []
    say = progress or (lambda msg: None)
    for i, (settings_lengths, items) in enumerate(
            ((settings.lengths_1q, [(q,) for q in qubits]),
             (settings.lengths_2q, [tuple(e) for e in edges]))):
        if failed is not None and i:
            for e in items:
                bad = [q for q in e if (q,) in failed]
                if bad:
                    failed[e] = f"the 1-qubit RB of qubit {bad[0]} failed"
            items = [e for e in items if e not in failed]
        for group in independent_sets(items, coupling, settings.max_round_qubits):
            say(f"randomized benchmarking of {', '.join(map(describe, group))}")
            data = acquire_rb(backend, group, settings_lengths, seeds=settings.seeds,
                              shots=settings.shots,
                              seed=None if seed is None else seed + len(outcomes))
            for d in data:
                try:
                    fit = fit_rb(d.lengths, d.survival, len(d.qubits),
                                 rb_baseline([matrices[q] for q in d.qubits]))
                    one_q = {q: errors[f"sx:{q}"] for q in {*qubits, *d.qubits}
                             if f"sx:{q}" in errors}
                    epg = errors_per_gate(d, fit, one_q if i else None)
                except FitError as exc:
                    if failed is None:
                        raise FitError(f"RB of {d.qubits}: {exc}") from exc
                    failed[tuple(d.qubits)] = str(exc)
                    continue
                errors.update(epg)
                outcomes.append(RBOutcome(d, fit, epg))
    return outcomes


def commit_benchmarks(backend, measured, outcomes: Sequence[RBOutcome], progress=None, *,
                      builder: SnapshotBuilder | None = None,
                      parent_id: int | None = None
                      ) -> tuple[Snapshot | None, list[Path], dict[int, str]]:
    """Write each benchmark's record and plot next to the store and commit the gate errors of
    ``outcomes`` (measured on snapshot ``measured``) as a new snapshot whose parent is
    ``parent_id`` (default: ``measured``'s; the store's unusable newest snapshot when the
    backend measured on an older one, ``LabBackend.unusable_snapshot_id``): onto ``builder``
    (default: a copy of ``measured``) when the caller has more to commit with them.

    When another writer committed meanwhile, the gate errors go on top of its snapshot; those
    of a qubit it changed (and of that qubit's edges) are left out
    (:func:`~labqpu.store.merge.commit_apart_onto_newest`; ``StaleSnapshotError`` when it
    changed a flux bias). Returns the snapshot (None when everything was left out), the
    record paths, and {qubit: why} of the qubits left out. The records are written first: one
    that cannot be written is a ``CalibrationError`` and the gate errors are not committed."""
    say = progress or (lambda msg: None)
    builder = builder or SnapshotBuilder.from_snapshot(measured)
    builder.notes = f"gate errors by randomized benchmarking of snapshot {measured.snapshot_id}"
    records = []
    for outcome in outcomes:
        old = {}
        for gate in outcome.errors:
            previous = measured.gates.get(gate, {}).get("error")
            old[gate] = None if previous is None else previous.value
        records.append(rb_record(outcome, old))
    # before the commit: a snapshot never names a record that could not be written
    paths = save_records(records, experiments_directory(backend.config.store_path),
                         then="the gate errors were not committed")
    for outcome, path in zip(outcomes, paths, strict=True):
        rb_update(builder, outcome)
        gates = sorted(outcome.errors)
        say(f"{', '.join(gates)}: error {outcome.errors[gates[0]]:.2e} (EPC "
            f"{outcome.fit.epc:.2e} +- {outcome.fit.epc_stderr:.1e}); plot "
            f"{path.with_suffix('.png')}")
    snapshot, left_out = commit_apart_onto_newest(backend.store, builder.build_document(),
                                                  measured, parent_id=parent_id)
    return snapshot, paths, left_out


def rb_record(outcome: RBOutcome, old_errors: dict[str, float | None]) -> ExperimentRecord:
    """The :class:`ExperimentRecord` of one benchmark: EPC and gate errors with their
    uncertainties, the old gate errors, the fit quality, and the survival per sequence (the raw
    data :func:`refit` needs)."""
    d, f = outcome.data, outcome.fit
    scale = f.epc_stderr / f.epc if f.epc > 0 else 0.0
    values = {"epc": [f.epc, f.epc_stderr], "alpha": [f.alpha, f.alpha_stderr]}
    for gate, error in outcome.errors.items():
        values[f"{gate}.error"] = [error, error * scale]
    subject = (f"qubit {d.qubits[0]}" if len(d.qubits) == 1
               else f"edge ({d.qubits[0]}, {d.qubits[1]})")
    return ExperimentRecord(
        experiment=d.record_id, kind=f"rb_{len(d.qubits)}q", subject=subject,
        measured_at=d.measured_at, values=values,
        old_values={f"{gate}.error": old_errors.get(gate) for gate in outcome.errors},
        fit={"reduced_chi2": f.reduced_chi2, "amplitude": f.amplitude, "baseline": f.baseline},
        raw={"qubits": list(d.qubits), "lengths": d.lengths.tolist(),
             "survival": d.survival.tolist(),
             "pulses_per_clifford": {str(q): v for q, v in d.pulses_per_clifford.items()},
             "cz_per_clifford": d.cz_per_clifford},
        settings={"shots": d.shots, "seeds": int(d.survival.shape[1]),
                  "run": d.experiment},
    )


def refit(record: ExperimentRecord) -> RBFit:
    """Redo the fit of an RB record from its raw data, with the asymptote it used (pure)."""
    raw = record.raw
    return fit_rb(np.array(raw["lengths"]), np.array(raw["survival"]), len(raw["qubits"]),
                  baseline=record.fit["baseline"])
