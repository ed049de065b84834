"""Crosstalk in the simulated device: DC flux crosstalk and microwave drive crosstalk.

Both are set in the device file (``[[flux_crosstalk]]`` and ``[[drive_crosstalk]]`` entries,
each naming a ``source`` qubit, whose line carries the signal, and a ``target`` qubit, which it
also reaches). Notation of the code: a_j = ``phi0_per_ampere`` of qubit j (Phi0/A), I_j its bias
current (A), I*_j its ``sweet_spot_current_a``, f~_p and alpha~_p qubit p's dressed 0-1
frequency and anharmonicity (Hz).

* **DC flux crosstalk.** The DC flux of qubit i (flux quanta from its sweet spot) is

      Phi_i = a_i (I_i - I*_i) + sum_{j != i} M_ij a_j (I_j - I*_j)

  with M_ij (``fraction``, dimensionless) the fraction of qubit j's own bias flux that reaches
  qubit i. Convention: I*_i is qubit i's sweet-spot current *with every other qubit at its own
  sweet-spot current*, so all qubits at their I* sit at their sweet spots together; moving
  qubit j by dI moves qubit i by M_ij a_j dI. A sweet-spot search on qubit i with the others
  elsewhere finds a shifted vertex, as on hardware. Flux pulses on the fast-flux lines have no
  crosstalk here.
* **Microwave drive crosstalk.** A drive played on qubit q's line also reaches qubit p with
  the complex coefficient c_pq (``coefficient = [re, im]``): in p's frame the field is
  w(t) = c_pq z_q(t) exp(-i 2 pi (f~_q - f~_p) t), z_q the drive term (Hz, the Rabi rate with
  its phase) the samples produce on q (``PhysicsEngine._drive_hz``). Neighbours sit hundreds of
  MHz away, far beyond what 1 GS/s samples resolve in p's frame, so the field is not rendered
  as a drive. Its effect to second order in |w| / delta (adiabatic elimination of the
  off-resonant field; the field's carrier f_d is q's frame frequency plus the mean rotation of
  z_q) is an AC Stark shift of p's levels, with delta01 = f~_p - f_d and
  delta12 = f~_p + alpha~_p - f_d:

      s_0 = -|w|^2 / (4 delta01)
      s_1 = +|w|^2 / (4 delta01) - |w|^2 / (2 delta12)
      s_2 = +|w|^2 / (2 delta12)

  applied as the diagonal phase exp(-i 2 pi sum_k s_n(t_k) dt) on p's dressed levels after
  the block that plays q's drive (a frame change: it commutes with p's idle evolution, its
  dephasing and every diagonal pair phase, and with its relaxation up to an error of order
  (T / T1) x phase, as the phases are not linear in n). Left out: fourth-order terms, a
  relative error O((|w| / delta)^2) on the phase; the transient population |w / (2 delta)|^2
  that an adiabatic pulse returns; the shift's order against p's own drive when p is driven
  at the same time (an error of order phase x rotation, ~1e-4 for lab5). A field within
  ``RESONANCE_FACTOR`` x max|w| of one of p's transitions is not off-resonant: the engine
  refuses the program with a ``SimulationError`` naming the pair.

lab5 ships M ~ 0.5-3 % between neighbours and 0.1-0.5 % next-nearest, and |c| = 0.02-0.08
between neighbours (docs/simulator.md, "Crosstalk").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labqpu.errors import SimulationError

#: A crosstalk field closer than this many times its peak Rabi rate |w| to one of the target's
#: transitions is refused (the second-order shift would be off by more than 1 / 25 of itself).
RESONANCE_FACTOR = 5.0
#: Bound of ``PhysicsEngine.crosstalk_cache``: the Stark phases of a pulse on its targets, by
#: source, phase-normalised drive and dressed frequencies (entries).
CACHE_CROSSTALK_ENTRIES = 4096


@dataclass(frozen=True)
class CrosstalkSpec:
    """Crosstalk of a device: ``flux[(i, j)]`` = M_ij (fraction of qubit j's bias flux
    reaching qubit i), ``drive[(p, q)]`` = c_pq (complex amplitude of q's drive reaching p,
    relative to the Rabi rate it produces on q). Read-only once made, like the device it
    belongs to: ``drive_targets`` is listed from ``drive`` at construction."""

    flux: dict[tuple[int, int], float] = field(default_factory=dict)
    drive: dict[tuple[int, int], complex] = field(default_factory=dict)
    #: ``drive_targets`` of every source, made once (a run asks it after every drive block).
    _targets: dict[int, tuple[tuple[int, complex], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for (p, s), c in sorted(self.drive.items(), key=lambda item: item[0][::-1]):
            self._targets[s] = (*self._targets.get(s, ()), (p, c))

    def drive_targets(self, q: int) -> tuple[tuple[int, complex], ...]:
        """(p, c_pq) for every qubit p that a drive on ``q`` reaches, in order of p."""
        return self._targets.get(q, ())

    @classmethod
    def from_tables(cls, flux_rows: list[dict], drive_rows: list[dict], n_qubits: int,
                    where: str) -> CrosstalkSpec:
        """Parse ``[[flux_crosstalk]]`` (source, target, fraction) and ``[[drive_crosstalk]]``
        (source, target, coefficient = [re, im]) rows; ``ValueError`` naming the entry for
        unknown keys, qubits outside 0..n-1, a qubit paired with itself, or a pair twice."""
        flux: dict[tuple[int, int], float] = {}
        drive: dict[tuple[int, int], complex] = {}
        for table, rows, value_key, out in (("flux_crosstalk", flux_rows, "fraction", flux),
                                            ("drive_crosstalk", drive_rows, "coefficient",
                                             drive)):
            for k, row in enumerate(rows):
                name = f"{where}: [[{table}]] entry {k}"
                unknown = set(row) - {"source", "target", value_key}
                if unknown or {"source", "target", value_key} - set(row):
                    raise ValueError(f"{name} must have exactly the keys source, target and "
                                     f"{value_key}; got {sorted(row)}")
                s, t = row["source"], row["target"]
                for role, v in (("source", s), ("target", t)):
                    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n_qubits:
                        raise ValueError(f"{name}: {role} must be a qubit index 0..{n_qubits - 1}"
                                         f", got {v!r}")
                if s == t:
                    raise ValueError(f"{name}: source and target are both qubit {s}")
                if (t, s) in out:
                    raise ValueError(f"{name}: source {s} -> target {t} is given twice")
                out[(t, s)] = _value(row[value_key], value_key, name)
        return cls(flux=flux, drive=drive)


def drive_crosstalk_targets(spec: CrosstalkSpec, qubits: set[int]) -> set[int]:
    """Qubits that a drive on any of ``qubits`` reaches through drive crosstalk (they are
    evolved with the program so that their Stark phase is kept)."""
    return {p for (p, s) in spec.drive if s in qubits}


def _value(v: Any, key: str, name: str) -> Any:
    """A fraction (real, |M| < 1) or a coefficient ([re, im], |c| < 1) from the device file."""
    if key == "fraction":
        if isinstance(v, bool) or not isinstance(v, int | float) or not abs(v) < 1.0:
            raise ValueError(f"{name}: fraction must be a number with |fraction| < 1, got {v!r}")
        return float(v)
    if (not isinstance(v, list) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int | float) for x in v)
            or not abs(complex(v[0], v[1])) < 1.0):
        raise ValueError(f"{name}: coefficient must be [re, im] with |c| < 1, got {v!r}")
    return complex(v[0], v[1])


def dc_flux_phi0(own_phi0: dict[int, float], spec: CrosstalkSpec) -> dict[int, float]:
    """DC flux of every qubit (flux quanta from its sweet spot) from ``own_phi0[j]`` =
    a_j (I_j - I*_j), each qubit's own line alone: Phi_i = own_i + sum_j M_ij own_j."""
    out = dict(own_phi0)
    for (i, j), m in spec.flux.items():
        if i in out:
            out[i] += m * own_phi0.get(j, 0.0)
    return out


def carrier_offset_hz(z_hz: np.ndarray, sample_rate_hz: float) -> float:
    """Mean frequency (Hz) of a drive relative to the frame of ``z_hz``: z rotates as
    exp(-i 2 pi (f_d - f_frame) t), so f_d - f_frame = -arg(sum conj(z_k) z_k+1) fs / 2 pi."""
    if z_hz.size < 2:
        return 0.0
    return -float(np.angle(np.vdot(z_hz[:-1], z_hz[1:]))) * sample_rate_hz / (2.0 * math.pi)


def crosstalk_phases(z_hz: np.ndarray, c: complex, f_source_hz: float, f_target_hz: float,
                     alpha_target_hz: float, sample_rate_hz: float, pair: tuple[int, int]
                     ) -> np.ndarray:
    """Diagonal phase factors exp(-i 2 pi sum_k s_n dt) (3 values) on the target of a drive
    crosstalk ``c`` from a source driven with ``z_hz`` (its frame at ``f_source_hz``); the
    target's dressed frequency ``f_target_hz`` and anharmonicity ``alpha_target_hz``.
    ``pair`` = (source, target) names them in the ``SimulationError`` raised for a field
    within RESONANCE_FACTOR x its peak Rabi rate of one of the target's transitions."""
    return _stark_phases(_field(z_hz, f_source_hz, sample_rate_hz), c, f_target_hz,
                         alpha_target_hz, sample_rate_hz, pair)


def _field(z_hz: np.ndarray, f_source_hz: float, sample_rate_hz: float
           ) -> tuple[float, float, float]:
    """(peak |z| in Hz, sum_k |z_k|^2 in Hz^2, carrier frequency f_d in Hz) of a drive
    ``z_hz`` whose frame is at ``f_source_hz``."""
    z2 = z_hz.real ** 2 + z_hz.imag ** 2
    return (math.sqrt(float(z2.max())), float(z2.sum()),
            f_source_hz + carrier_offset_hz(z_hz, sample_rate_hz))


def _stark_phases(field: tuple[float, float, float], c: complex, f_target_hz: float,
                  alpha_target_hz: float, sample_rate_hz: float, pair: tuple[int, int]
                  ) -> np.ndarray:
    """:func:`crosstalk_phases` from the source's :func:`_field`."""
    peak_z, sum_z2, f_d = field
    peak = abs(c) * peak_z
    d01 = f_target_hz - f_d
    d12 = f_target_hz + alpha_target_hz - f_d
    closest = min(abs(d01), abs(d12))
    if closest < RESONANCE_FACTOR * peak:
        which = "0-1" if abs(d01) <= abs(d12) else "1-2"
        raise SimulationError(
            f"drive crosstalk from qubit {pair[0]} to qubit {pair[1]}: the field at "
            f"{f_d / 1e9:.6f} GHz is {closest / 1e6:.3g} MHz from qubit {pair[1]}'s {which} "
            f"transition, within {RESONANCE_FACTOR:g} x its Rabi rate {peak / 1e6:.3g} MHz; "
            "the simulator treats crosstalk only as an off-resonant (Stark) field")
    # The detunings are constant over the block: sum_k s_n(t_k) dt = s_n(sum_k |w_k|^2) dt,
    # with the second-order AC Stark shifts (Hz) of the module docstring:
    # s_0 = -|w|^2 / (4 delta01), s_1 = |w|^2 / (4 delta01) - |w|^2 / (2 delta12),
    # s_2 = |w|^2 / (2 delta12).
    w2_dt = abs(c) ** 2 * sum_z2 / sample_rate_hz
    a = w2_dt / (4.0 * d01)
    b = w2_dt / (2.0 * d12)
    return np.exp(np.array([-a, a - b, b]) * (-2j * math.pi))


def apply_drive_crosstalk(engine: Any, ctx: Any, qubits: list[int], b0: int, b1: int) -> None:
    """After a block over samples [b0, b1) on ``qubits``: the Stark phase of each driven
    qubit's crosstalk on every evolved target, composed into the target's pending local
    channel (``engine`` a ``PhysicsEngine``, ``ctx`` its run context). Targets past their
    acquisition are left alone."""
    spec: CrosstalkSpec = engine.device.crosstalk
    if not spec.drive:
        return
    model = ctx.model
    fs = engine.device.sample_rate_hz
    held = ctx.local.rho.diagonal  # positions
    for q in qubits:
        targets = [(p, c) for p, c in spec.drive_targets(q) if p in ctx.pos and b0 < ctx.stop[p]]
        if not targets:
            continue
        split = ctx.share.splits.get((q, b0, b1))
        key = split[2] if split is not None else None
        cached = (q, key, model.freq_hz, tuple(targets))
        phases = engine.crosstalk_cache.get(cached) if key is not None else None
        if phases is None:
            z = engine._drive_hz(ctx, q, b0, b1, offset=False)
            if not np.any(z):
                continue
            field = _field(z, model.freq_hz[q], fs)
            phases = [_stark_phases(field, c, model.freq_hz[p], float(model.local_hz[p][2]), fs,
                                    (q, p)) for p, c in targets]
            if key is not None:
                if len(engine.crosstalk_cache) >= CACHE_CROSSTALK_ENTRIES:
                    engine.crosstalk_cache.clear()
                engine.crosstalk_cache[cached] = phases
        for (p, _), d in zip(targets, phases, strict=True):
            if ctx.pos[p] not in held:  # a diagonal phase leaves a held state as it is
                ctx.local.phases(p, d)
