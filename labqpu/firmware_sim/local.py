"""Single-qubit evolution held back per qubit (:class:`LocalChannels`): the physics engine's
idle evolution, single-qubit unitaries and decoherence, composed per qubit and applied to the
density matrix only when a multi-qubit operation or the readout needs them."""

from __future__ import annotations

import numpy as np

from labqpu.firmware_sim.density import (
    LEVELS,
    DensityMatrix,
    population_map,
    relaxation_superop,
)
from labqpu.firmware_sim.device import DeviceTruth

__all__ = ["LocalChannels"]


class LocalChannels:
    """Single-qubit evolution held back per qubit and applied to the density matrix at once.

    Channels on different qubits commute, so each qubit's idle evolution, single-qubit pulses
    and decoherence are composed into one pending 9x9 superoperator (row-major vec, latest
    leftmost) and applied only when a multi-qubit unitary or the readout needs that qubit.
    ``time`` is the sample up to which each qubit's evolution is accounted for.
    """

    def __init__(self, device: DeviceTruth, rho: DensityMatrix, position: dict[int, int],
                 sample_rate_hz: float, anharmonicity_hz: dict[int, float] | None = None,
                 rates: dict[int, tuple[float, float, float]] | None = None) -> None:
        self.device = device
        #: (T1 in s, T_phi in s, thermal ratio) per qubit; the device file's T1 and T_phi at
        #: zero temperature when not given (``noise.QubitConditions``).
        self.rates = rates or {q: (device.qubits[q].t1_s, device.qubits[q].t_phi_s, 0.0)
                               for q in position}
        #: Idle anharmonicity per qubit (Hz): the dressed one when coupling is modelled.
        self.alpha = anharmonicity_hz or {q: device.qubits[q].anharmonicity_hz for q in position}
        self.rho = rho
        self.position = position
        self.fs = sample_rate_hz
        self.time = dict.fromkeys(position, 0)
        self.pending: dict[int, np.ndarray] = {}

    def _compose(self, q: int, superop: np.ndarray) -> None:
        prev = self.pending.get(q)
        self.pending[q] = superop if prev is None else superop @ prev

    def _relax(self, q: int, until: int, alpha_hz: float) -> None:
        if until > self.time[q]:
            t1_s, t_phi_s, ratio = self.rates[q]
            self._compose(q, relaxation_superop(t1_s, t_phi_s, (until - self.time[q]) / self.fs,
                                                alpha_hz, ratio))
            self.time[q] = until

    def idle(self, q: int, until: int) -> None:
        """Idle ``q`` up to sample ``until``: decoherence and the local idle Hamiltonian
        (dressed alpha on |2>), exactly; pair (ZZ) phases are applied by the engine."""
        self._relax(q, until, self.alpha[q])

    def decohere(self, q: int, until: int) -> None:
        """Decoherence of ``q`` up to ``until`` after a pulse whose unitary (already applied)
        holds the Hamiltonian of that interval."""
        self._relax(q, until, 0.0)

    def unitary(self, q: int, u: np.ndarray) -> None:
        """rho -> u rho u^dag on ``q`` (3x3)."""
        self._compose(q, (u[:, None, :, None] * u.conj()[None, :, None, :]).reshape(9, 9))

    def phases(self, q: int, d: np.ndarray) -> None:
        """rho -> D rho D^dag on ``q`` for D = diag(``d``) (3 phase factors)."""
        diagonal = (d[:, None] * d.conj()[None, :]).reshape(LEVELS * LEVELS)
        prev = self.pending.get(q)
        self.pending[q] = np.diag(diagonal) if prev is None else diagonal[:, None] * prev

    def take(self, q: int) -> np.ndarray | None:
        """Remove and return ``q``'s pending channel (None when there is none): the caller
        applies it."""
        return self.pending.pop(q, None)

    def flush(self, q: int) -> None:
        """Apply ``q``'s pending channel to the density matrix."""
        superop = self.pending.pop(q, None)
        if superop is not None:
            self.rho.apply_superop(superop, self.position[q])

    def flush_all(self, qubits: list[int]) -> None:
        """Apply the pending channels of ``qubits``: those of qubits held by their populations
        together, as their maps of populations in one sweep of the density matrix
        (``DensityMatrix.apply_level_maps``; what is pending on a held qubit is relaxation
        and phases, which conserve i - j), the others one by one (channels on different
        qubits commute)."""
        held = []
        for q in qubits:
            p = self.position[q]
            if p in self.rho.diagonal:
                superop = self.pending.pop(q, None)
                if superop is not None:
                    held.append((p, population_map(superop)))
            else:
                self.flush(q)
        if held:
            held.sort(key=lambda item: item[0])
            self.rho.apply_level_maps(tuple(p for p, _ in held), np.array([m for _, m in held]))


