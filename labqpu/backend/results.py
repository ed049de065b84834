"""From IQ points to a Qiskit ``Result``: discrimination, counts, memory, headers."""

from __future__ import annotations

import platform

import numpy as np
import qiskit

from labqpu import __version__
from labqpu.errors import BackendPropertyError
from labqpu.pulse.kernels import discriminate
from labqpu.pulse.program import PulseProgram

#: The software a result was made with (versions), in every result's reproducibility bundle.
SOFTWARE = {"labqpu": __version__, "qiskit": qiskit.__version__, "numpy": np.__version__,
            "python": platform.python_version()}

#: Register values below this (or below the number of shots) are counted by a tally over every
#: outcome (``np.bincount``) rather than by sorting the shots (``outcome_counts``).
BINCOUNT_OUTCOMES = 1024


def discriminator_centres(snapshot, qubits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated |0> and |1> IQ centres for each qubit in ``qubits``.

    Raises ``BackendPropertyError`` (a ``KeyError``) naming the first qubit without one.
    """
    c0 = np.zeros(len(qubits), dtype=np.complex128)
    c1 = np.zeros(len(qubits), dtype=np.complex128)
    for i, q in enumerate(qubits):
        params = snapshot.qubits.get(int(q), {})
        if "discriminator" not in params:
            raise BackendPropertyError(
                f"no calibrated discriminator in snapshot {snapshot.snapshot_id}; use "
                "meas_level=1 for raw IQ", subject=f"qubit {q}", parameter="discriminator")
        (i0, q0), (i1, q1) = params["discriminator"].value["centers"]
        c0[i], c1[i] = complex(i0, q0), complex(i1, q1)
    return c0, c1


def _register_values(bits: np.ndarray, clbits: np.ndarray) -> np.ndarray:
    """Integer value of the classical register per shot (clbit i is bit i); later
    acquisitions into the same clbit overwrite earlier ones; an acquisition into clbit -1 (an
    active reset's) is not reported. uint64 up to 64 clbits, Python ints (object array)
    beyond."""
    wide = bits.shape[1] > 0 and int(clbits.max()) >= 64
    acc = np.zeros(bits.shape[0], dtype=object if wide else np.uint64)
    for j, c in enumerate(clbits):
        if c < 0:
            continue
        if wide:
            mask = 1 << int(c)
            acc = (acc & ~mask) | (bits[:, j].astype(object) << int(c))
        else:
            mask = np.uint64(1) << np.uint64(c)
            acc = (acc & ~mask) | (bits[:, j].astype(np.uint64) << np.uint64(c))
    return acc


def experiment_data(program: PulseProgram, iq: np.ndarray, *, shots: int, meas_level: int,
                    meas_return: str, memory: bool, snapshot, traces: np.ndarray | None = None
                    ) -> dict:
    """The ``data`` entry of one experiment (counts and memory, or level-0/1 memory) from its
    IQ points (shots x acquisitions) and, with meas_level 0, its traces (see
    :func:`experiment_result`).

    Raises:
        ValueError: the IQ or traces have the wrong shape.
        BackendPropertyError: meas_level 2 and a measured qubit has no discriminator.
    """
    check_iq_shape(program, iq, shots)
    data: dict = {}
    if meas_level == 2 and not program.num_clbits:  # no bits, no outcomes (as BasicSimulator)
        data["counts"] = {}
        if memory:
            data["memory"] = []
    elif meas_level == 2:
        c0, c1 = discriminator_centres(snapshot, program.acq_qubit)
        bits = discriminate(iq, c0, c1)
        values = _register_values(bits, program.acq_clbit)
        if memory:
            uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
            keys = [hex(int(v)) for v in uniq]
            data["counts"] = dict(zip(keys, (int(n) for n in counts), strict=True))
            data["memory"] = [keys[i] for i in inverse.reshape(-1)]
        else:
            data["counts"] = outcome_counts(values)
    elif meas_level == 0:
        data["memory"] = _trace_memory(program, traces, shots, meas_return)
    else:
        slots = level_1_memory(program, iq, meas_return)
        data["memory"] = np.stack([slots.real, slots.imag], axis=-1).tolist()  # [re, im] pairs
    return data


def outcome_counts(values: np.ndarray) -> dict[str, int]:
    """Shots per outcome, keyed by hex register value in ascending order, of the register
    ``values`` (``_register_values``: uint64, or Python integers beyond 64 clbits). When the
    largest value is below ``BINCOUNT_OUTCOMES`` (or the number of shots) the shots are tallied
    over every outcome up to it, without sorting them (1-2x faster than ``np.unique`` on 100-1000
    shots of a few clbits, more on many shots); otherwise they are sorted."""
    if values.dtype != object and values.size \
            and int(values.max()) < max(BINCOUNT_OUTCOMES, values.size):
        tally = np.bincount(values.astype(np.intp), minlength=1)
        uniq = np.flatnonzero(tally)
        counts = tally[uniq]
    else:
        uniq, counts = np.unique(values, return_counts=True)
    return {hex(int(v)): int(n) for v, n in zip(uniq, counts, strict=True)}


def check_iq_shape(program: PulseProgram, iq: np.ndarray, shots: int) -> None:
    """Raise ``ValueError`` unless ``iq`` holds ``shots`` rows of one IQ point per acquisition
    of ``program``."""
    if iq.shape != (shots, program.acq_port.shape[0]):
        raise ValueError(f"controller returned IQ of shape {iq.shape}, expected "
                         f"({shots}, {program.acq_port.shape[0]})")


def level_1_memory(program: PulseProgram, iq: np.ndarray, meas_return: str) -> np.ndarray:
    """Level-1 memory, complex: (shots, memory slots) per shot, or (memory slots,) averaged
    over the shots (``meas_return="avg"``), from the IQ points (shots x acquisitions); a slot
    no acquisition writes holds 0, a later acquisition into a slot overwrites an earlier one."""
    slots = np.zeros((iq.shape[0], program.num_clbits), dtype=np.complex128)
    for j, c in enumerate(program.acq_clbit):
        if c >= 0:
            slots[:, c] = iq[:, j]
    return slots.mean(axis=0) if meas_return == "avg" else slots


def experiment_result(program: PulseProgram, iq: np.ndarray, *, shots: int, meas_level: int,
                      meas_return: str, memory: bool, snapshot,
                      provenance: dict | None = None, traces: np.ndarray | None = None,
                      trace_decimation: int | None = None, data: dict | None = None) -> dict:
    """One experiment's entry of ``Result.from_dict``.

    ``provenance`` (the rack's reproducibility bundle) goes into the experiment's header as
    ``"reproducibility"``, together with the calibration snapshot id and the versions of the
    software that made the result (:data:`SOFTWARE`). With meas_level 0,
    ``traces`` are the controller's (shots or 1, acquisitions, points) complex traces of
    ``trace_decimation`` samples per point: ``memory`` holds per shot (or averaged, with
    ``meas_return="avg"``) one list of [re, im] points per memory slot, as Qiskit's level-0
    convention has it, and the header's ``trace`` states the decimation and the point
    duration (s). ``data``: the experiment's :func:`experiment_data`, when it was computed
    already (else it is computed here).
    """
    if data is None:
        data = experiment_data(program, iq, shots=shots, meas_level=meas_level,
                               meas_return=meas_return, memory=memory, snapshot=snapshot,
                               traces=traces)
    header = dict(program.header)
    header.setdefault("name", "pulse_program")
    header.setdefault("memory_slots", program.num_clbits)
    header.setdefault("creg_sizes", [["c", program.num_clbits]] if program.num_clbits else [])
    header.setdefault("metadata", {})
    if provenance is not None:
        header["reproducibility"] = {**provenance,
                                     "calibration_snapshot_id": snapshot.snapshot_id,
                                     "software": dict(SOFTWARE)}
    if meas_level == 0:
        header["trace"] = {"decimation": int(trace_decimation),
                           "point_duration_s": trace_decimation / program.sample_rate_hz}
    return {"shots": shots, "success": True, "meas_level": meas_level,
            "meas_return": meas_return, "data": data, "header": header}


def _trace_memory(program: PulseProgram, traces: np.ndarray | None, shots: int,
                  meas_return: str) -> list:
    """Level-0 ``memory``: [shot][slot][point] = [re, im] (``single``) or [slot][point] =
    [re, im] (``avg``); a slot no acquisition writes holds zeros, a later acquisition into a
    slot overwrites an earlier one."""
    rows = 1 if meas_return == "avg" else shots
    n_acq = program.acq_port.shape[0]
    if traces is None or traces.ndim != 3 or traces.shape[:2] != (rows, n_acq):
        got = None if traces is None else traces.shape
        raise ValueError(f"controller returned traces of shape {got}, expected "
                         f"({rows}, {n_acq}, points)")
    slots = np.zeros((rows, program.num_clbits, traces.shape[2]), dtype=np.complex128)
    for j, c in enumerate(program.acq_clbit):
        if c >= 0:  # -1: an acquisition into no classical bit (active reset)
            slots[:, c] = traces[:, j]
    pairs = np.stack([slots.real, slots.imag], axis=-1)
    return pairs[0].tolist() if meas_return == "avg" else pairs.tolist()
