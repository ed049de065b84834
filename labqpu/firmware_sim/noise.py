"""Noise that calibration has to live with: thermal population, flux noise, quasi-static
frequency noise and slow drift.

Every magnitude comes from the device file's ``[noise]`` table (:class:`NoiseSpec`); the
simulator option ``noise = false`` (``[simulator]`` of ``lab.toml``, ``labqpu sim --no-noise``)
keeps the thermal equilibrium and switches every other term here off. The terms, in the
notation of the code (f in Hz, Phi in flux quanta Phi0, t in s):

* **Thermal equilibrium.** Relaxation runs towards a thermal state, not towards |0>: the
  ladder decays at Gamma_down = 1 / (T1 (1 + r)) with jump sqrt(Gamma_down) a and is excited
  at Gamma_up = r Gamma_down with jump sqrt(Gamma_up) a^dag, so 1/T1 = Gamma_down + Gamma_up
  and the steady state of the three levels is p_n proportional to r^n, with
  r = exp(-h f01 / (k_B T_eff)) (:func:`thermal_ratio`) at the qubit's idle frequency. Each
  shot starts in that state. Field: ``effective_temperature_k`` (K). lab5: 55 mK, i.e.
  P1 = 0.5-1.3 % for its 5.0-5.9 GHz qubits, as measured on well-thermalised transmons
  (effective temperatures of 40-80 mK are typical). The relaxation during a readout window
  ignores Gamma_up (r / T1 x 1 us < 3e-4).
* **Flux-noise dephasing.** 1/f flux noise of spectral density S_Phi(omega) = A_Phi^2 / |omega|
  (two-sided, omega in rad/s) makes a Hahn echo decay as exp(-(Gamma t)^2) with
  Gamma = 2 pi sqrt(ln 2) A_Phi |df01/dPhi| (Ithier et al., PRB 72, 134519 (2005)). The
  simulator adds Gamma as a Markovian pure-dephasing rate, 1/T_phi = 1/T_phi0 + Gamma (same
  1/e time, exponential instead of Gaussian shape), at the qubit's DC bias, so T2 falls away
  from the sweet spot, where df01/dPhi = 0 (:func:`flux_slope_hz_per_phi0`; second order in
  the flux, not modelled). T_phi0 comes from the device file's ``t2_s`` (the T2 at the sweet
  spot). Field: ``flux_noise_phi0`` (A_Phi, Phi0). lab5: 5 uPhi0, within the 1-10 uPhi0
  measured on SQUID transmons; 0.1 Phi0 from the sweet spot (slope ~3 GHz/Phi0) it gives
  T_phi,flux ~ 13 us.
* **Quasi-static frequency noise.** The slow part of the noise (below the shot rate) is a
  frequency offset delta_q that stays constant over consecutive shots. Its standard deviation
  sigma_q^2 = sigma_0^2 + (df01/dPhi)^2 A_Phi^2 L / pi combines an offset that does not come from
  flux (TLS, charge; ``frequency_noise_hz`` = sigma_0, Hz) with the 1/f flux noise integrated
  over the quasi-static band, L = ln(f_shot / f_low) = QUASI_STATIC_BAND_LN (1e-4 to 1 Hz). A
  Ramsey fringe then decays by exp(-(2 pi sigma t)^2 / 2) on top of the Markovian exp(-t/T2);
  a Hahn echo refocuses it. lab5: sigma_0 = 6 kHz at the sweet spot (T2* about 0.6-0.8 x T2
  echo, as commonly measured), a Gaussian 1/e time of sqrt(2) / (2 pi sigma_0) = 38 us.
* **Slow drift.** Each qubit's frequency offset and ln T1 follow an Ornstein-Uhlenbeck walk in
  simulated time (the controller's sum of shots x (program duration + rep_delay)), seeded by
  ``drift_seed`` and stepped on a fixed grid of DRIFT_STEP_S, so a given sequence of runs sees
  the same drift in every session. Over times t << tau its standard deviation grows as
  s sqrt(t / 1 h); it saturates at s sqrt(tau / 2 h). Fields: ``drift_frequency_hz``
  (s for the frequency, Hz per sqrt(hour)), ``drift_t1_fraction`` (s for ln T1, per
  sqrt(hour)), ``drift_correlation_time_s`` (tau). lab5: 20 kHz / sqrt(h) and 0.1 / sqrt(h)
  with tau = 6 h: a calibrated frequency is stale by ~20 kHz after an hour (limit ~35 kHz),
  T1 wanders by ~10 % per hour (limit ~17 %), as TLS fluctuations do on hardware.

How the frequency offsets enter (:func:`frame_phase`): an offset delta_q commutes with the
dressed idle evolution, so in the frame rotating at f~_q + delta_q the idle is unchanged and
only the operators of pulses move: a block over [t0, t1) becomes D U D^dag with
D = exp(+i 2 pi sum_q delta_q n_q t_c) at its centre t_c. On a drive this is the drive's phase
turned by 2 pi delta_q t_c, a frame change on the cached unitary. Splitting the offset's phase
symmetrically around the pulse leaves out the detuning within the pulse: an infidelity of
order (2 pi delta T_pulse)^2 (4e-6 for 8 kHz and 40 ns). The flux-noise offset during a flux
pulse is that of the idle bias.

Quasi-static noise is averaged by splitting the shots into chunks (:func:`quasi_static_chunks`):
the nodes of a Gauss-Hermite rule in symmetric pairs (+z, -z), each pair with a random sign per
qubit from the run's seeded generator, and the shots split among the chunks by the rule's
weights (multinomial, consecutive shots in one chunk). Every single-qubit average over the
offset is then the Gaussian one within RULE_TOLERANCE (8 points: up to 2 pi sigma t = 2;
0.01 at 3); correlations between qubits are sampled. A chunk is one evolution of the density
matrix, so a run costs up to NOISE_CHUNKS (8) evolutions, fewer where fewer do. The largest
phase standard deviation x = 2 pi sigma span, over the span between a qubit's first and last
pulse, picks the rule (:func:`rule_points`: 2 points up to x ~ 0.19, 4 up to x ~ 0.82, else 8);
the outer nodes carry little weight (1e-4 of the shots for 8 points), so a chunk that draws
no shot is not evolved. A run whose x^2 / 2 (the largest change of a probability the averaging
can make) stays below a tenth of its shot noise 1 / (2 sqrt(shots)) runs in one chunk without
offsets (:func:`skip_chunks`; lab5 at 1000 shots: qubits whose pulses span less than 1.5 us).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

#: Planck and Boltzmann constants (SI, exact).
PLANCK_J_S = 6.62607015e-34
BOLTZMANN_J_PER_K = 1.380649e-23
#: Points of the Gauss-Hermite rule over the quasi-static offset (chunks per run).
NOISE_CHUNKS = 8
#: ln(f_high / f_low) of the quasi-static band of 1/f flux noise (1e-4 Hz to 1 Hz).
QUASI_STATIC_BAND_LN = 4.0 * math.log(10.0)
#: A run whose quasi-static dephasing moves no probability by more than this fraction of its
#: shot noise 1 / (2 sqrt(shots)) runs in one chunk without offsets (``skip_chunks``).
SHOT_NOISE_FRACTION = 0.1
#: Largest error of a rule's Gaussian average of cos(2 pi delta t) that chooses fewer points.
RULE_TOLERANCE = 1e-4
#: Step of the drift walk in simulated time (s).
DRIFT_STEP_S = 60.0
_HOUR_S = 3600.0


@dataclass(frozen=True)
class NoiseSpec:
    """The device file's ``[noise]`` table. Units in the names; 0 switches a term off."""

    effective_temperature_k: float = 0.0
    flux_noise_phi0: float = 0.0
    frequency_noise_hz: float = 0.0
    drift_frequency_hz: float = 0.0
    drift_t1_fraction: float = 0.0
    drift_correlation_time_s: float = math.inf
    drift_seed: int = 0

    @classmethod
    def from_table(cls, table: dict, where: str) -> NoiseSpec:
        """Parse a ``[noise]`` table; raises ``ValueError`` naming ``where`` and the field."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"{where}: unknown [noise] field(s) {unknown}; known: {sorted(known)}")
        values = {}
        for key, value in table.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where}: [noise] {key} must be a number, got {value!r}")
            if key == "drift_seed":
                if not isinstance(value, int) or value < 0:
                    raise ValueError(f"{where}: [noise] drift_seed must be an int >= 0")
                values[key] = value
                continue
            if not (value >= 0 and not math.isnan(value)):
                raise ValueError(f"{where}: [noise] {key} must be >= 0, got {value!r}")
            if key == "drift_correlation_time_s" and value == 0:
                raise ValueError(f"{where}: [noise] drift_correlation_time_s must be > 0")
            values[key] = float(value)
        return cls(**values)

    def quiet(self) -> NoiseSpec:
        """This spec with every stochastic term off (thermal equilibrium kept)."""
        return NoiseSpec(effective_temperature_k=self.effective_temperature_k,
                         drift_seed=self.drift_seed)


@dataclass(frozen=True)
class QubitConditions:
    """What one run of one qubit sees: T1 and Markovian T_phi (s, after drift and flux noise),
    the thermal ratio r = Gamma_up / Gamma_down, and its frequency offset (Hz; drift plus the
    chunk's quasi-static draw)."""

    t1_s: float
    t_phi_s: float
    thermal_ratio: float
    offset_hz: float = 0.0


def thermal_ratio(frequency_hz: float, temperature_k: float) -> float:
    """exp(-h f / (k_B T)): the ratio of excitation to decay rate at ``frequency_hz`` (Hz) and
    effective temperature ``temperature_k`` (K); 0 at 0 K."""
    if temperature_k <= 0.0:
        return 0.0
    return math.exp(-PLANCK_J_S * frequency_hz / (BOLTZMANN_J_PER_K * temperature_k))


def thermal_populations(ratio: float) -> np.ndarray:
    """Steady state (p0, p1, p2) of the ladder with decay and excitation rates in ``ratio``."""
    p = ratio ** np.arange(3, dtype=float)
    return p / p.sum()


def flux_slope_hz_per_phi0(max_frequency_hz: float, anharmonicity_hz: float,
                           flux_phi0: float) -> float:
    """df01/dPhi (Hz per flux quantum) of the symmetric-SQUID law
    f01 = (f_max + E_C) sqrt|cos(pi Phi)| - E_C, E_C = -anharmonicity."""
    c = math.cos(math.pi * flux_phi0)
    if c == 0.0:
        return math.inf
    ec = -anharmonicity_hz
    return -(max_frequency_hz + ec) * math.pi * math.sin(math.pi * flux_phi0) \
        * math.copysign(1.0, c) / (2.0 * math.sqrt(abs(c)))


def flux_dephasing_rate(slope_hz_per_phi0: float, flux_noise_phi0: float) -> float:
    """Pure-dephasing rate (1/s) from 1/f flux noise of amplitude ``flux_noise_phi0`` at a
    flux slope ``slope_hz_per_phi0``: 2 pi sqrt(ln 2) A_Phi |df/dPhi|."""
    return 2.0 * math.pi * math.sqrt(math.log(2.0)) * flux_noise_phi0 * abs(slope_hz_per_phi0)


def quasi_static_sigma_hz(spec: NoiseSpec, slope_hz_per_phi0: float) -> float:
    """Standard deviation (Hz) of the quasi-static frequency offset at a flux slope."""
    flux_part = slope_hz_per_phi0 ** 2 * spec.flux_noise_phi0 ** 2 * QUASI_STATIC_BAND_LN / math.pi
    return math.sqrt(spec.frequency_noise_hz ** 2 + flux_part)


class DriftWalk:
    """Seeded Ornstein-Uhlenbeck walk of every qubit's frequency offset (Hz) and ln T1 against
    simulated time, stepped on a grid of DRIFT_STEP_S. Only moves forward in time."""

    def __init__(self, spec: NoiseSpec, n_qubits: int) -> None:
        self.spec = spec
        self._rng = np.random.default_rng(spec.drift_seed)
        self._step = 0
        self._state = np.zeros((2, n_qubits))
        tau = spec.drift_correlation_time_s
        self._decay = math.exp(-DRIFT_STEP_S / tau) if math.isfinite(tau) else 1.0
        # per-step std so that Var(x(t)) = s^2 tau / (2 h) (1 - exp(-2 t / tau))
        kick = (tau / (2 * _HOUR_S) * (1.0 - self._decay ** 2) if math.isfinite(tau)
                else DRIFT_STEP_S / _HOUR_S)
        self._kick = np.array([[spec.drift_frequency_hz], [spec.drift_t1_fraction]]) \
            * math.sqrt(kick)

    @property
    def enabled(self) -> bool:
        """True when either walk moves."""
        return bool(np.any(self._kick))

    def at(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(frequency offsets in Hz, T1 factors) per qubit at simulated time ``time_s`` (s).

        Raises ``ValueError`` for a time before the last one asked for."""
        step = int(time_s // DRIFT_STEP_S)
        if step < self._step:
            raise ValueError(f"drift walk is at {self._step * DRIFT_STEP_S} s; cannot go back "
                             f"to {time_s} s")
        if self.enabled:
            while self._step < step:
                noise = self._rng.standard_normal(self._state.shape)
                self._state = self._state * self._decay + self._kick * noise
                self._step += 1
        self._step = max(self._step, step)
        return self._state[0].copy(), np.exp(self._state[1])


def _rule(points: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes (ascending) and weights (summing to 1) for a standard normal."""
    nodes, weights = hermegauss(points)
    order = np.argsort(nodes)
    return nodes[order], weights[order] / weights.sum()


def rule_points(phase_rad: float) -> int:
    """Fewest points (2, 4 or NOISE_CHUNKS) whose rule averages cos(x z) over z ~ N(0, 1) within
    RULE_TOLERANCE of exp(-x^2 / 2) at x = ``phase_rad`` (the largest phase 2 pi sigma t a
    program can accumulate)."""
    for points in (2, 4):
        nodes, weights = _rule(points)
        if abs(weights @ np.cos(phase_rad * nodes) - math.exp(-phase_rad ** 2 / 2)) \
                < RULE_TOLERANCE:
            return points
    return NOISE_CHUNKS


def quasi_static_chunks(sigma_hz: dict[int, float], rng: np.random.Generator,
                        points: int = NOISE_CHUNKS) -> list[tuple[float, dict[int, float]]]:
    """Chunks (weight, offset per qubit in Hz) of one run: the nodes of a ``points``-point
    Gauss-Hermite rule in symmetric pairs, a random sign per pair and qubit (see the module
    docstring); weights sum to 1."""
    if points < 2 or points % 2:
        raise ValueError(f"quasi-static rule needs an even number of points >= 2, got {points}")
    nodes, weights = _rule(points)
    qubits = sorted(sigma_hz)
    chunks = []
    for j in range(points // 2):
        z = nodes[points - 1 - j]
        signs = rng.choice((-1.0, 1.0), size=len(qubits))
        for side in (1.0, -1.0):
            chunks.append((float(weights[j]),
                           {q: side * s * z * sigma_hz[q] for q, s in zip(qubits, signs,
                                                                           strict=True)}))
    return chunks


def with_offsets(conditions: dict[int, QubitConditions], offsets_hz: dict[int, float]
                 ) -> dict[int, QubitConditions]:
    """``conditions`` with ``offsets_hz`` added to the qubits' frequency offsets."""
    return {q: replace(c, offset_hz=c.offset_hz + offsets_hz.get(q, 0.0))
            for q, c in conditions.items()}


def frame_phase(offsets_hz: np.ndarray, levels: np.ndarray, centre_s: float) -> np.ndarray:
    """Diagonal of D = exp(+i 2 pi sum_q delta_q n_q t_c) over a register: ``offsets_hz`` per
    qubit (Hz), ``levels`` the level of each qubit (rows) in each basis state (columns),
    ``centre_s`` the block's centre (s)."""
    return np.exp(2j * np.pi * centre_s * (offsets_hz @ levels))


def qubit_conditions(qubits: tuple, spec: NoiseSpec, phi_dc: dict[int, float],
                     freq_hz: tuple[float, ...], drift_hz: np.ndarray, t1_factor: np.ndarray
                     ) -> tuple[dict[int, QubitConditions], dict[int, float]]:
    """Per qubit (``qubits``: the device's ``QubitTruth`` in index order) the conditions of a
    run at DC flux ``phi_dc`` (Phi0 from the sweet spot), idle frequencies ``freq_hz`` and
    drift state, and the quasi-static sigma (Hz) at that bias."""
    out = {}
    sigma = {}
    for t in qubits:
        q = t.index
        slope = flux_slope_hz_per_phi0(t.max_frequency_hz, t.anharmonicity_hz,
                                       phi_dc.get(q, 0.0))
        rate = (0.0 if math.isinf(t.t_phi_s) else 1.0 / t.t_phi_s) \
            + flux_dephasing_rate(slope, spec.flux_noise_phi0)
        out[q] = QubitConditions(
            t1_s=t.t1_s * float(t1_factor[q]),
            t_phi_s=math.inf if rate == 0.0 else 1.0 / rate,
            thermal_ratio=thermal_ratio(freq_hz[q], spec.effective_temperature_k),
            offset_hz=float(drift_hz[q]),
        )
        sigma[q] = quasi_static_sigma_hz(spec, slope)
    return out, sigma


def pulse_spans_s(prog, cabling: dict, sample_rate_hz: float) -> dict[int, float]:
    """Per qubit of ``cabling`` (``device.QubitCabling``), the time (s) from its first pulse's
    start to its last pulse's end among the plays of ``prog`` (``physics.WireProgram``) on its
    drive and flux ports; 0 without a pulse."""
    starts, ports = prog.play_start, prog.play_port
    ends = starts + np.diff(prog.wave_offset)[prog.play_wave]
    out = {}
    for q, cab in cabling.items():
        mask = (ports == cab.drive_port) | (ports == cab.flux_port)
        out[q] = float(ends[mask].max() - starts[mask].min()) / sample_rate_hz \
            if mask.any() else 0.0
    return out


def skip_chunks(phase_rad: float, shots: int) -> bool:
    """True when averaging over the quasi-static offset can be left out of a run of ``shots``
    shots: its largest effect on a probability, (1 - exp(-x^2 / 2)) <= x^2 / 2 at
    x = ``phase_rad``, stays below SHOT_NOISE_FRACTION / (2 sqrt(shots))."""
    return phase_rad ** 2 / 2 < SHOT_NOISE_FRACTION / (2 * math.sqrt(shots))


def quasi_static_phase(sigma_hz: dict[int, float], spans_s: dict[int, float]) -> float:
    """Largest standard deviation (rad) of the quasi-static phase, 2 pi sigma_q span_q, that
    a qubit accumulates between its first and last pulse."""
    return max((2.0 * math.pi * sigma_hz[q] * spans_s.get(q, 0.0) for q in sigma_hz),
               default=0.0)


def plan_chunks(sigma_hz: dict[int, float], spans_s: dict[int, float], shots: int,
                rng: np.random.Generator) -> list[tuple[float, dict[int, float]]]:
    """The chunks (weight, offset per qubit in Hz) of a run of ``shots`` shots whose qubits'
    pulses span ``spans_s``: one chunk without offsets when :func:`skip_chunks` allows it,
    else :func:`quasi_static_chunks` with the rule :func:`rule_points` picks."""
    phase = quasi_static_phase(sigma_hz, spans_s)
    if skip_chunks(phase, shots):
        return [(1.0, {})]
    return quasi_static_chunks(sigma_hz, rng, rule_points(phase))
