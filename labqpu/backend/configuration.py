"""``BackendConfiguration``: the Qiskit 1.x configuration summary, for clients that still ask.

Qiskit 2.0 removed ``BackendV1`` and its ``configuration()``; BackendV2 clients read the
``Target`` instead. Some widely used tools still call ``backend.configuration()`` (mthree 3.0
reads ``num_qubits``, ``max_shots``, ``simulator`` and ``max_experiments``), so a
``LabBackend`` answers with this read-only summary, derived from the same wiring and Target.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendConfiguration:
    """What a Qiskit 1.x ``BackendConfiguration`` said about a device, read-only.

    Attributes:
        backend_name: the device's name.
        backend_version: labqpu's backend version.
        n_qubits: number of qubits (also as ``num_qubits``).
        basis_gates: the native instructions of the current Target, sorted.
        coupling_map: the directed edges on which ``cz`` is calibrated.
        dt: sample interval of the controllers (s).
        max_shots: most shots one circuit may ask for.
        max_experiments: most circuits one job accepts (also as ``max_circuits``).
        meas_levels: measurement levels ``run()`` returns (0: raw traces, 1: IQ, 2: counts).
        simulator: False: the backend drives a rack (or the firmware simulator standing in for
            one) through the same instrument protocols; it is not a circuit simulator.
        memory: per-shot results are available.
        local: the rack is reached from this host.
    """

    backend_name: str
    backend_version: str
    n_qubits: int
    basis_gates: tuple[str, ...]
    coupling_map: tuple[tuple[int, int], ...]
    dt: float
    max_shots: int
    max_experiments: int
    meas_levels: tuple[int, ...] = (0, 1, 2)
    simulator: bool = False
    memory: bool = True
    local: bool = True

    @property
    def num_qubits(self) -> int:
        """Number of qubits (the Qiskit 1.x ``n_qubits``)."""
        return self.n_qubits

    @property
    def max_circuits(self) -> int:
        """Most circuits one job accepts (the Qiskit 1.x ``max_experiments``)."""
        return self.max_experiments
