"""Physical validation of calibration values, applied when a snapshot is committed.

``validation.py`` checks that a document is well-formed JSON in the snapshot layout. This
module checks that the values it holds can be true of a device, for the parameter names labqpu
knows:
- times are positive seconds, and T2 (Ramsey and echo) ≤ 2·T1; a pulse (a gate's, a readout's,
  a CZ's flux pulse, their widths and edges) lasts at most :data:`MAX_PULSE_S`, and a CZ's two
  edges leave part of it flat;
- frequencies are finite and positive; an anharmonicity is within +-2 GHz (a transmon's is
  about -0.1 to -0.4 GHz; a value in the wrong unit would otherwise reach the bootstrap's CZ);
- amplitudes are fractions of full scale, at most 1 in magnitude; a gate's and a readout's are
  not 0 (a pulse of amplitude 0 plays nothing: every x would run as an identity);
- a passive reset waits more than 0 and at most :data:`MAX_RESET_S` (a wait of 0 left a qubit
  in |1> where the circuit said reset);
- a drive handedness is +1 or -1;
- fidelities and errors lie in [0, 1];
- an assignment matrix is 2 x 2 with rows that sum to 1;
- a discriminator holds two finite, distinct IQ centres;
- an active reset takes 1 to :data:`MAX_STORED_RESET_ROUNDS` rounds;
- the flux qubit of a CZ is on its edge;
- a record of failed calibration steps maps node names to reasons.

Names labqpu does not know get the JSON checks only, so experiments can add parameters.

It runs on commit and import, not when a stored snapshot is read back: a store that already
holds a bad value can still be opened, inspected and rolled back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from labqpu.errors import InvalidSnapshotError
from labqpu.store.requirements import CALIBRATION_FAILED
from labqpu.store.validation import gate_key, parse_gate

Check = Callable[[Any], str | None]

#: Longest pulse a snapshot may hold (s): well beyond any gate, readout or CZ, and beyond the
#: coherence of any qubit; a typo such as 0.1 s for 100 ns would otherwise compile into
#: gigabytes of waveform before the controller's length limit refused it.
MAX_PULSE_S = 1e-3
#: Longest T1, T2* or echo T2 a snapshot may hold (s): ten times the best transmons' ~1 ms; a
#: value in the wrong unit (55 for 55 us) would otherwise set the default repetition delay of
#: every job to its 1 s cap and make every T1 scan outlast the controller.
MAX_COHERENCE_S = 10e-3
#: Longest passive reset a snapshot may hold (s): ten of the longest T1 (it waits ~5 T1).
MAX_RESET_S = 10 * MAX_COHERENCE_S
#: Largest anharmonicity in magnitude a snapshot may hold (Hz).
MAX_ANHARMONICITY_HZ = 2e9
#: Most rounds of an active reset (measure, then x when 1) a snapshot may ask for.
MAX_STORED_RESET_ROUNDS = 100


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond any float
        return False


def _positive(value: Any) -> str | None:
    return None if _number(value) and value > 0 else "must be a finite number > 0"


def _non_negative(value: Any) -> str | None:
    return None if _number(value) and value >= 0 else "must be a finite number >= 0"


def _finite(value: Any) -> str | None:
    return None if _number(value) else "must be a finite number"


def _pulse_time(value: Any) -> str | None:
    return None if _number(value) and 0 < value <= MAX_PULSE_S else \
        f"must be a pulse length in (0, {MAX_PULSE_S}] s"


def _coherence_time(value: Any) -> str | None:
    return None if _number(value) and 0 < value <= MAX_COHERENCE_S else \
        f"must be a finite number in (0, {MAX_COHERENCE_S}] s (a coherence time)"


def _edge_time(value: Any) -> str | None:
    return None if _number(value) and 0 <= value <= MAX_PULSE_S else \
        f"must be an edge length in [0, {MAX_PULSE_S}] s"


def _unit_interval(value: Any) -> str | None:
    return None if _number(value) and 0 <= value <= 1 else "must be a number in [0, 1]"


def _full_scale(value: Any) -> str | None:
    return None if _number(value) and abs(value) <= 1 else \
        "must be a fraction of full scale, |value| <= 1"


def _pulse_amplitude(value: Any) -> str | None:
    return None if _number(value) and 0 < abs(value) <= 1 else \
        "must be a fraction of full scale, 0 < |value| <= 1 (a pulse of amplitude 0 plays nothing)"


def _reset_time(value: Any) -> str | None:
    return None if _number(value) and 0 < value <= MAX_RESET_S else \
        f"must be a passive reset's wait in (0, {MAX_RESET_S:g}] s (about 5 T1)"


def _anharmonicity(value: Any) -> str | None:
    return None if _number(value) and abs(value) <= MAX_ANHARMONICITY_HZ else \
        (f"must be a finite number within +-{MAX_ANHARMONICITY_HZ:g} Hz (a transmon's is about "
         "-0.1e9 to -0.4e9 Hz)")


def _sign(value: Any) -> str | None:
    return None if _number(value) and value in (-1, 1) else "must be +1 or -1"


def _assignment_matrix(value: Any) -> str | None:
    rows_ok = (isinstance(value, list) and len(value) == 2
               and all(isinstance(row, list) and len(row) == 2 for row in value))
    if not rows_ok or not all(_number(p) and 0 <= p <= 1 for row in value for p in row):
        return "must be [[P(0|0), P(1|0)], [P(0|1), P(1|1)]] with probabilities in [0, 1]"
    if any(abs(sum(row) - 1) > 1e-6 for row in value):
        return "rows must sum to 1 (row = prepared state, column = measured outcome)"
    return None


def _discriminator(value: Any) -> str | None:
    centers = value.get("centers") if isinstance(value, Mapping) else None
    if not (isinstance(centers, list) and len(centers) == 2
            and all(isinstance(c, list) and len(c) == 2 and all(map(_number, c))
                    for c in centers)):
        return 'must be {"centers": [[I0, Q0], [I1, Q1]]} with finite numbers'
    if centers[0] == centers[1]:
        return "must have two distinct centres: with one point for |0> and |1> no shot is told"
    (i0, q0), (i1, q1) = centers
    if max(map(abs, (i0, q0, i1, q1))) > MAX_IQ:
        return (f"must have centres within +-{MAX_IQ:g} (IQ results travel as complex64; "
                "beyond, their difference overflows and every shot reads 0)")
    apart, size = math.hypot(i1 - i0, q1 - q0), max(math.hypot(i0, q0), math.hypot(i1, q1))
    if apart < max(IQ_RESOLUTION * size, MIN_IQ_APART):
        return (f"must have centres apart by more than complex64 IQ results resolve "
                f"({IQ_RESOLUTION:g} of their size, and {MIN_IQ_APART:g}): these are "
                f"{apart:.3g} apart")
    return None


#: What IQ results (complex64: float32 parts) can carry: the largest centre coordinate whose
#: differences stay finite, the relative resolution, and the smallest separation of normal
#: float32 numbers.
MAX_IQ = 1e30
IQ_RESOLUTION = 1e-6
MIN_IQ_APART = 1e-30


def _rounds(value: Any) -> str | None:
    ok = (isinstance(value, int) and not isinstance(value, bool)
          and 1 <= value <= MAX_STORED_RESET_ROUNDS)
    return None if ok else f"must be a whole number in 1..{MAX_STORED_RESET_ROUNDS}"


def _qubit_index(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a qubit index (integer >= 0)"


def _failures(value: Any) -> str | None:
    ok = (isinstance(value, Mapping) and value
          and all(isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()))
    return None if ok else "must be a non-empty {node: reason} object of strings"


#: Checks by parameter name, for qubits, pairs and gates.
QUBIT_CHECKS: dict[str, Check] = {
    "frequency_hz": _positive, "drive_lo_frequency_hz": _positive,
    "readout_frequency_hz": _positive, "readout_lo_frequency_hz": _positive,
    "resonator_hz": _positive, "anharmonicity_hz": _anharmonicity,
    "drive_lo_power_dbm": _finite, "readout_lo_power_dbm": _finite,
    "pi_amplitude": _pulse_amplitude, "pi2_amplitude": _pulse_amplitude,
    "readout_amplitude": _pulse_amplitude,
    "drag_beta": _finite, "flux_bias_a": _finite, "drive_handedness": _sign,
    "pulse_duration_s": _pulse_time, "pulse_sigma_s": _pulse_time,
    "readout_duration_s": _pulse_time,
    "reset_duration_s": _reset_time, "t1_s": _coherence_time, "t2_s": _coherence_time,
    "t2_echo_s": _coherence_time, "readout_assignment_fidelity": _unit_interval,
    "assignment_matrix": _assignment_matrix, "discriminator": _discriminator,
    "reset_rounds": _rounds, CALIBRATION_FAILED: _failures,
}
PAIR_CHECKS: dict[str, Check] = {
    "cz_flux_qubit": _qubit_index, "cz_amplitude": _full_scale,
    "cz_duration_s": _pulse_time, "cz_rise_s": _edge_time,
    "cz_phase_a_rad": _finite, "cz_phase_b_rad": _finite, "zz_hz": _finite,
    "cz_spectator_spread_rad": _non_negative, "cz_leakage": _unit_interval,
    CALIBRATION_FAILED: _failures,
}
GATE_CHECKS: dict[str, Check] = {"error": _unit_interval, "duration_s": _non_negative}


def _value(params: Mapping[str, Any], name: str) -> Any:
    return params[name]["value"]


def unchanged(kept: Mapping[str, Any] | None, section: str, key: str,
               params: Mapping[str, Any], *names: str) -> bool:
    """Whether every one of ``names`` holds the value (of the same type) that the parent
    document ``kept`` holds there."""
    if kept is None:
        return False
    before = kept.get(section, {}).get(key, {})
    return all(name in before and type(before[name]["value"]) is type(params[name]["value"])
               and before[name]["value"] == params[name]["value"] for name in names)


def check_physics(document: Mapping[str, Any], kept: Mapping[str, Any] | None = None) -> None:
    """Refuse a normalised document with a value no device can have. Values that ``kept`` (the
    normalised document of the snapshot it derives from) holds unchanged are not checked
    again: they passed the rules of the day they were committed, and a rule added since must
    not lock a store out of every later commit (a snapshot that changes such a value, or that
    is committed into an empty store, is checked in full).

    Raises:
        InvalidSnapshotError: naming the qubit, pair or gate, the parameter and the rule.
    """
    sections = (("qubits", "qubit {}", QUBIT_CHECKS), ("pairs", "pair {}", PAIR_CHECKS),
                ("gates", "gate {!r}", GATE_CHECKS))
    for section, subject_format, checks in sections:
        for key, params in document.get(section, {}).items():
            subject = subject_format.format(key)
            for name, entry in params.items():
                check = checks.get(name)
                if check is None or unchanged(kept, section, key, params, name):
                    continue
                problem = check(entry["value"])
                if problem:
                    raise InvalidSnapshotError(f"{problem}, got {entry['value']!r}",
                                               subject=subject, parameter=name)
    for key, params in document.get("qubits", {}).items():
        for name in ("t2_s", "t2_echo_s"):  # Ramsey T2* and Hahn-echo T2 alike
            if "t1_s" in params and name in params \
                    and not unchanged(kept, "qubits", key, params, "t1_s", name):
                t1, t2 = _value(params, "t1_s"), _value(params, name)
                if t2 > 2 * t1:
                    raise InvalidSnapshotError(
                        f"T2 = {t2:.4g} s exceeds 2 T1 = {2 * t1:.4g} s, which no qubit can "
                        "reach", subject=f"qubit {key}", parameter=name)
    for key, params in document.get("gates", {}).items():
        name, qubits = parse_gate(key)
        if name == "cz" and qubits != tuple(sorted(qubits)) \
                and not unchanged(kept, "gates", key, params, *params):
            raise InvalidSnapshotError(
                f"cz acts alike on both of its qubits: its key is "
                f"{gate_key(name, tuple(sorted(qubits)))!r}, which the Target reads (this one "
                "it would not)", subject=f"gate {key!r}")
    for key, params in document.get("pairs", {}).items():
        if "cz_rise_s" in params and "cz_duration_s" in params \
                and not unchanged(kept, "pairs", key, params, "cz_rise_s", "cz_duration_s"):
            rise, duration = _value(params, "cz_rise_s"), _value(params, "cz_duration_s")
            if 2 * rise >= duration:
                raise InvalidSnapshotError(
                    f"two edges of {rise:.4g} s leave nothing flat of a {duration:.4g} s CZ "
                    "pulse", subject=f"pair {key}", parameter="cz_rise_s")
        if "cz_flux_qubit" in params \
                and not unchanged(kept, "pairs", key, params, "cz_flux_qubit"):
            qubit = _value(params, "cz_flux_qubit")
            if str(qubit) not in key.split("-"):
                raise InvalidSnapshotError(f"flux qubit {qubit} is not on the edge",
                                           subject=f"pair {key}", parameter="cz_flux_qubit")
