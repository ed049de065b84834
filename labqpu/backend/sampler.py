"""``Sampler``: a SamplerV2 on a lab backend, with readout mitigation from the calibration store.

It runs pubs exactly as Qiskit's ``BackendSamplerV2`` does (the samples in each pub result are
the raw measured bits) and adds, per pub, readout-mitigated quasi-probabilities computed by
mthree from the assignment matrices the calibration store already holds. No calibration shots
are spent. Each pub result's ``metadata["readout_mitigation"]`` says what was applied, to which
qubits, and from which calibration snapshot.

Assignment matrices are stored as ``matrix[prepared][measured]`` (each row sums to 1); mthree
wants ``P(measured | prepared)`` with the prepared state as the column, so they are transposed
on the way in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from numbers import Integral
from typing import Any

import numpy as np
from qiskit.circuit import QuantumCircuit
from qiskit.primitives import (
    BackendSamplerV2,
    BaseSamplerV2,
    PrimitiveJob,
    PrimitiveResult,
    SamplerPubResult,
)
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike

from labqpu.backend.backend import LabBackend
from labqpu.errors import BackendPropertyError, InvalidRunInputError, LabQpuError
from labqpu.store import Snapshot

DEFAULT_SHOTS = 4096
#: Runs of a sampler job's pubs before giving up when calibrations keep landing meanwhile.
SNAPSHOT_ATTEMPTS = 3

log = logging.getLogger(__name__)


def _mthree() -> Any:
    """The mthree module, imported on first use (it is the ``mitigation`` extra)."""
    try:
        import mthree
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "mthree":
            raise ImportError("labqpu.Sampler mitigates readout with mthree, which is not "
                              "installed: pip install 'labqpu[mitigation]' (in a clone: "
                              "pip install -e '.[mitigation]'), or pass mitigate=False"
                              ) from exc
        raise ImportError(f"labqpu.Sampler mitigates readout with mthree, which is installed "
                          f"but failed to import: {type(exc).__name__}: {exc} (a file of "
                          "yours shadowing a module it needs?); or pass mitigate=False"
                          ) from exc
    return mthree


def measured_qubits(circuit: QuantumCircuit) -> dict[str, list[int | None]]:
    """For each classical register: the device qubit each of its bits last measured (None for
    a bit no measurement writes). The circuit must be transpiled (qubit i = device qubit i)."""
    source: dict[int, int] = {}
    for inst in circuit.data:
        if inst.operation.name == "measure":
            source[circuit.find_bit(inst.clbits[0]).index] = circuit.find_bit(inst.qubits[0]).index
    return {reg.name: [source.get(circuit.find_bit(bit).index) for bit in reg]
            for reg in circuit.cregs}


def _m3_matrices(snapshot: Snapshot, num_qubits: int) -> list[np.ndarray | None]:
    """mthree's per-qubit calibration matrices (column = prepared state), None where the
    snapshot has none."""
    out: list[np.ndarray | None] = []
    for q in range(num_qubits):
        matrix = snapshot.qubit_value(q, "assignment_matrix", None)
        out.append(None if matrix is None else np.asarray(matrix, dtype=np.float32).T.copy())
    return out


class Sampler(BaseSamplerV2):
    """SamplerV2 on a ``LabBackend`` with readout mitigation from stored assignment matrices.

    ``Sampler(backend).run(pubs, shots=...)`` returns the same data as ``BackendSamplerV2``
    (raw bits per classical register). With ``mitigate=True`` (default) every pub result's
    metadata also carries ``"readout_mitigation"``::

        {"applied": True, "method": "mthree", "snapshot_id": 7,
         "qubits": {"meas": [0, 1, 2]},                   # device qubit of each bit
         "quasi_dists": {"meas": {"000": 0.49, ...}}}     # one dict per parameter point,
                                                          # nested like the pub's shape

    A register with a bit that no measurement writes is left unmitigated and listed under
    ``"skipped"`` with the reason; ``"applied"`` is True only when some register was
    mitigated. A measured qubit without a stored assignment matrix raises
    ``BackendPropertyError`` before anything runs: mitigation never takes calibration shots.

    The quasi-probabilities are mthree's, corrected by matrices that are estimates: entries
    may be slightly negative and the largest may add up to a little more than 1 (a review
    measured P(00) + P(11) of 1.000-1.013 for Bell pairs on lab5's simulator, 10 000 shots).
    Mitigation corrects how bits were read, not what a misread did: where a condition read a
    bit (``if_test``), a misread steered the branch, and the later bits it changed are
    measured truly (``x(0); measure c0; if c0: x(1); measure c1``: P(00) 0.026 raw and
    mitigated alike).

    The job ``run`` returns is Qiskit's ``PrimitiveJob``, whose ``cancel()`` does not stop
    pubs already sent to the backend (``LabProvider.close()`` aborts them).

    Args:
        backend: the lab backend to run on.
        default_shots: shots of a pub that does not set its own.
        mitigate: compute the mitigated quasi-probabilities.
    """

    def __init__(self, backend: LabBackend, *, default_shots: int = DEFAULT_SHOTS,
                 mitigate: bool = True) -> None:
        if not isinstance(backend, LabBackend):
            raise TypeError(f"Sampler needs a LabBackend, got {type(backend).__name__}")
        self._backend = backend
        self._default_shots = self._checked_shots(default_shots, "default_shots")
        self._mitigate = mitigate
        self._inner = BackendSamplerV2(backend=backend, options={"default_shots": default_shots})

    @property
    def backend(self) -> LabBackend:
        """The backend the pubs run on."""
        return self._backend

    def run(self, pubs: Iterable[SamplerPubLike], *,
            shots: int | None = None) -> PrimitiveJob[PrimitiveResult[SamplerPubResult]]:
        """Run ``pubs``; every check (pub shapes, parameter bindings and their values: finite,
        assignment matrices of the measured qubits) happens here, before anything is sent."""
        coerced = [SamplerPub.coerce(pub, self._default_shots if shots is None else shots)
                   for pub in pubs]
        for index, pub in enumerate(coerced):
            self._checked_shots(pub.shots, f"pub {index}'s shots")
            _check_finite(pub, index)
        snapshot = self._backend.snapshot
        mappings = [measured_qubits(pub.circuit) for pub in coerced]
        if self._mitigate:
            _mthree()
            self._check_matrices(mappings, snapshot)
        job = PrimitiveJob(self._run, coerced, mappings)
        job._submit()
        return job

    def _checked_shots(self, shots: object, name: str) -> int:
        """``shots`` if it is a whole number from 1 to the backend's shots per circuit:
        ``TypeError`` and ``ValueError`` as Qiskit's pubs refuse other numbers,
        ``InvalidRunInputError`` above the backend's limit (the check the backend's ``run()``
        makes, here so that it comes from ``run`` and not from the job's ``result()``)."""
        if isinstance(shots, bool) or not isinstance(shots, Integral):
            raise TypeError(f"Sampler: {name} must be an integer, got {shots!r}")
        if shots <= 0:
            raise ValueError(f"Sampler: {name} must be positive, got {shots}")
        limit = self._backend.max_shots
        if shots > limit:
            raise InvalidRunInputError(f"Sampler: {name} is {shots}; backend "
                                       f"{self._backend.name} takes at most {limit} shots per "
                                       "circuit; nothing was sent", option="shots")
        return int(shots)

    def _check_matrices(self, mappings: list[dict[str, list[int | None]]],
                        snapshot: Snapshot) -> None:
        for index, mapping in enumerate(mappings):
            for register, qubits in mapping.items():
                for q in qubits:
                    if q is not None and snapshot.qubit_value(q, "assignment_matrix",
                                                              None) is None:
                        raise BackendPropertyError(
                            f"pub {index}, register {register!r}: no assignment matrix for "
                            f"qubit {q} in calibration snapshot {snapshot.snapshot_id}; run "
                            "the readout calibration or use Sampler(..., mitigate=False)",
                            subject=f"qubit {q}", parameter="assignment_matrix")

    def _run(self, pubs: list[SamplerPub], mappings: list[dict[str, list[int | None]]]
             ) -> PrimitiveResult[SamplerPubResult]:
        # Each job compiles against the newest snapshot when it is sent. When a calibration
        # lands while the pubs run, their jobs may have used either snapshot, so the pubs run
        # again: the matrices must be those of the calibration the counts were taken with.
        for attempt in range(SNAPSHOT_ATTEMPTS):
            snapshot = self._backend.snapshot
            raw = self._inner.run(pubs).result()
            if self._backend.snapshot.snapshot_id == snapshot.snapshot_id:
                break
            log.warning("calibration snapshot %s replaced %s while the pubs ran (attempt %d "
                        "of %d); running them again", self._backend.snapshot.snapshot_id,
                        snapshot.snapshot_id, attempt + 1, SNAPSHOT_ATTEMPTS)
        else:
            raise LabQpuError(f"the calibration changed during each of {SNAPSHOT_ATTEMPTS} "
                              "runs of these pubs; run them when no calibration is committing")
        if not self._mitigate:
            return PrimitiveResult(
                [SamplerPubResult(r.data, metadata={
                    **r.metadata, "readout_mitigation": {
                        "applied": False, "snapshot_id": snapshot.snapshot_id}})
                 for r in raw], metadata=raw.metadata)
        self._check_matrices(mappings, snapshot)
        mitigator = _mthree().M3Mitigation(self._backend)
        mitigator.cals_from_matrices(_m3_matrices(snapshot, self._backend.num_qubits))
        results = [self._mitigated(mapping, result, mitigator, snapshot)
                   for mapping, result in zip(mappings, raw, strict=True)]
        return PrimitiveResult(results, metadata=raw.metadata)

    @staticmethod
    def _mitigated(mapping: dict[str, list[int | None]], result: SamplerPubResult,
                   mitigator: Any, snapshot: Snapshot) -> SamplerPubResult:
        info: dict = {"applied": False, "method": "mthree", "snapshot_id": snapshot.snapshot_id,
                      "qubits": {}, "quasi_dists": {}, "skipped": {}}
        for register, qubits in mapping.items():
            if not qubits:
                continue
            if None in qubits:
                info["skipped"][register] = (
                    f"bit {qubits.index(None)} of {register!r} is never measured")
                continue
            bits = getattr(result.data, register)
            dists = np.empty(bits.shape, dtype=object)
            for loc in np.ndindex(*bits.shape):
                quasi = mitigator.apply_correction(bits.get_counts(loc=loc or None), qubits)
                dists[loc] = {key: float(value) for key, value in quasi.items()}
            info["qubits"][register] = list(qubits)
            info["quasi_dists"][register] = dists.tolist() if dists.shape else dists.item()
            info["applied"] = True
        return SamplerPubResult(result.data, metadata={**result.metadata,
                                                       "readout_mitigation": info})


def _check_finite(pub: SamplerPub, index: int) -> None:
    """``InvalidRunInputError`` naming the pub, the parameter and the point when one of
    ``pub``'s parameter values is NaN or infinite (Qiskit binds them in the job's thread and
    raised ``ZeroDivisionError`` or ``RuntimeError`` from ``result()``)."""
    for names, values in pub.parameter_values.data.items():
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            *point, column = bad[0]
            raise InvalidRunInputError(
                f"Sampler: pub {index}, parameter {names[column]!r}: value "
                f"{values[tuple(bad[0])]} at point {tuple(int(i) for i in point)} is not "
                "finite; nothing was sent", option="parameter_values")
