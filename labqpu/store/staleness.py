"""How old a calibrated value may be: parameter kinds and their age limits (hours).

Every calibrated parameter has a *kind* (:data:`PARAMETER_KINDS`); parameters of one kind drift
together and share an age limit. The defaults (:data:`DEFAULT_MAX_AGE_H`) are the one place
these numbers live; a lab overrides them in its wiring file (``[calibration.max_age_h]``,
parsed by :func:`parse_age_limits`). The Target builder leaves out what is older than the
limits the lab set; the calibration runner recalibrates what is older than the defaults or
the lab's limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from labqpu.errors import did_you_mean
from labqpu.store.parameter import Parameter
from labqpu.store.requirements import CZ_PARAMETERS

#: The kind of each calibrated parameter. Parameters not listed (design values, LO plans, the
#: drive handedness) never age.
PARAMETER_KINDS: Mapping[str, str] = {
    "frequency_hz": "frequency",
    "pi_amplitude": "amplitude", "pi2_amplitude": "amplitude", "drag_beta": "amplitude",
    "readout_frequency_hz": "readout", "discriminator": "readout",
    "assignment_matrix": "readout", "readout_assignment_fidelity": "readout",
    "reset_rounds": "readout",
    "t1_s": "coherence", "t2_s": "coherence", "t2_echo_s": "coherence",
    "reset_duration_s": "coherence",
    "flux_bias_a": "flux",
    **{name: "cz" for name in CZ_PARAMETERS}, "cz_spectator_spread_rad": "cz",
    "cz_leakage": "cz", "zz_hz": "cz",
    "error": "gate_error",
}

#: Default age limit of each kind (hours).
DEFAULT_MAX_AGE_H: Mapping[str, float] = {
    "frequency": 24.0, "amplitude": 24.0, "readout": 24.0, "coherence": 12.0,
    "flux": 168.0, "cz": 24.0, "gate_error": 24.0,
}


def parse_age_limits(table: object, *, defaults: bool) -> dict[str, float]:
    """Age limit (hours) per kind from a wiring file's ``[calibration.max_age_h]`` table,
    over :data:`DEFAULT_MAX_AGE_H` when ``defaults`` is true. An unknown kind or a limit that
    is not a positive number raises ``ValueError`` naming it."""
    if not isinstance(table, Mapping):
        raise ValueError(f"lab configuration [calibration] max_age_h must be a table of hours "
                         f"per kind, got {table!r}")
    limits = dict(DEFAULT_MAX_AGE_H) if defaults else {}
    for kind, hours in table.items():
        if kind not in DEFAULT_MAX_AGE_H:
            raise ValueError(f"lab configuration [calibration.max_age_h] {kind}: unknown kind"
                             f"{did_you_mean(kind, DEFAULT_MAX_AGE_H)} (known: "
                             f"{', '.join(DEFAULT_MAX_AGE_H)})")
        if (isinstance(hours, bool) or not isinstance(hours, int | float)
                or not math.isfinite(hours) or hours <= 0):
            raise ValueError(f"lab configuration [calibration.max_age_h] {kind}: must be a "
                             f"positive number of hours, got {hours!r}")
        limits[kind] = float(hours)
    return limits


def wiring_age_limits(raw_config: Mapping, *, defaults: bool) -> dict[str, float]:
    """:func:`parse_age_limits` of a wiring file's ``[calibration.max_age_h]`` table, given the
    whole parsed file (``LabConfig.raw``); a file without one gives the defaults (or none)."""
    return parse_age_limits(raw_config.get("calibration", {}).get("max_age_h", {}),
                            defaults=defaults)


def age_h(timestamp: str, now: datetime) -> float:
    """Hours from ``timestamp`` (ISO-8601, aware) to ``now``."""
    return (now - datetime.fromisoformat(timestamp)).total_seconds() / 3600.0


#: How far a measurement's time may lie after ``now`` (hours): clocks of a lab's machines
#: differ by seconds to minutes; a value stamped later than this was measured by a clock set
#: wrong (or typed), and would never age.
FUTURE_TOLERANCE_H = 1.0


def from_the_future(timestamp: str, now: datetime) -> str | None:
    """Why ``timestamp`` cannot be a past measurement's at ``now`` (it lies more than
    :data:`FUTURE_TOLERANCE_H` after it), or None."""
    ahead = -age_h(timestamp, now)
    if ahead <= FUTURE_TOLERANCE_H:
        return None
    return (f"measured at {timestamp}, {ahead:.1f} h after this host's clock (a clock set "
            "wrong?)")


def stale_parameters(params: Mapping[str, Parameter], names: tuple[str, ...] | None,
                     limits: Mapping[str, float], now: datetime) -> list[str]:
    """Names among ``names`` (default: all of ``params``) present in ``params`` and older than
    the limit of their kind, each as ``"name (age h > limit h)"``."""
    out = []
    for name in params if names is None else names:
        kind = PARAMETER_KINDS.get(name)
        if name not in params or kind not in limits:
            continue
        age = age_h(params[name].timestamp, now)
        if age > limits[kind]:
            out.append(f"{name} ({age:.1f} h > {limits[kind]:g} h)")
    return out
