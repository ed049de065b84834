"""What a calibration snapshot may ask of this rack's instruments, checked when it is committed.

``labqpu.store.physics`` refuses values no device can have. This module refuses values that this
rack cannot play, from its wiring file:
- each LO frequency (Hz) and power (dBm) inside the range of the signal generator the qubit's
  drive or readout mixer is wired to;
- each flux bias (A) inside the output limit of its current source;
- each drive and readout frequency within half the sample rate (Hz) of its LO, so that the
  controller's intermediate frequency is below Nyquist;
- each duration the compiler turns into samples (a gate's pulse, a readout, a reset, a CZ) a
  whole number of samples at the controllers' sample rate (a 20.5 ns pulse at 1 GS/s could be
  committed, and then no Target could be built from the store's newest snapshot);
- the qubits of one signal generator asking it for one frequency and one power (a qubit's
  readout LO moved alone was committed, and then every circuit measuring it and another
  qubit of that LO was refused at ``run()``). Flux biases are not held to this: the graph
  finds each qubit's own current, and a shared channel is refused where a program needs it.

:func:`wiring_limits` makes the check a validator of ``CalibrationStore``, which runs it on every
commit and import after the physical checks: a refused value raises ``InvalidSnapshotError``
naming the qubit, the parameter and the instrument, and nothing is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from labqpu.errors import InvalidSnapshotError
from labqpu.pulse.kernels import sigma_problem
from labqpu.pulse.tables import grid_samples
from labqpu.rack.config import LabConfig
from labqpu.store.physics import unchanged
from labqpu.store.validation import parse_gate, parse_pair, qubit_index


def _value(params: Mapping[str, Any], name: str) -> float | None:
    """The number stored under ``name``, or None when absent or not a finite number (the
    physical checks name those)."""
    entry = params.get(name)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _inside(value: float | None, low: float, high: float, subject: str, parameter: str,
            what: str) -> None:
    if value is not None and not low <= value <= high:
        raise InvalidSnapshotError(f"{value!r} is outside {what} [{low!r}, {high!r}]",
                                   subject=subject, parameter=parameter)


#: Durations the compiler plays as whole numbers of samples, per qubit and per pair.
QUBIT_DURATIONS = ("pulse_duration_s", "readout_duration_s", "reset_duration_s")
PAIR_DURATIONS = ("cz_duration_s",)


def _durations_on_grid(params: Mapping[str, Any], names: tuple[str, ...],
                       kept: Mapping[str, Any] | None, section: str, key: str, fs: float,
                       subject: str) -> None:
    """Each duration of ``names`` in ``params`` (s) a whole number of samples at ``fs`` (Hz),
    unless the parent document ``kept`` holds it unchanged."""
    for name in names:
        value = _value(params, name)
        if value is not None and not unchanged(kept, section, key, params, name) \
                and grid_samples(value, fs) is None:
            raise InvalidSnapshotError(
                f"{value!r} s is {value * fs!r} samples at the controllers' {fs:g} Hz, not a "
                f"whole number (nearest: {round(value * fs) / fs!r} s)", subject=subject,
                parameter=name)


def _sigma_shapes_the_pulse(params: Mapping[str, Any], kept: Mapping[str, Any] | None,
                            key: str, fs: float, subject: str) -> None:
    """A qubit's ``pulse_sigma_s`` one the compiler can shape its ``pulse_duration_s`` with at
    ``fs`` (Hz) (a review's case: a sigma of 1 ms on a 40 ns pulse was committed, and every
    job on the qubit then failed at ``run()``)."""
    sigma, duration = _value(params, "pulse_sigma_s"), _value(params, "pulse_duration_s")
    if sigma is None or duration is None \
            or unchanged(kept, "qubits", key, params, "pulse_sigma_s", "pulse_duration_s"):
        return
    problem = sigma_problem(sigma * fs, duration * fs)
    if problem:
        raise InvalidSnapshotError(f"{problem}: {sigma!r} s on a pulse_duration_s of "
                                   f"{duration!r} s at the controllers' {fs:g} Hz",
                                   subject=subject, parameter="pulse_sigma_s")


def check_against_wiring(document: Mapping[str, Any], config: LabConfig,
                         kept: Mapping[str, Any] | None = None) -> None:
    """Refuse a snapshot document (the layout of ``labqpu.store``) whose values this rack's
    instruments cannot be set to (see the module docstring).

    A duration that the parent document ``kept`` holds unchanged is not checked again.

    Raises:
        InvalidSnapshotError: naming the qubit, the parameter, the instrument and its range;
            or the document is another device's.
    """
    device = document.get("device")  # None: a design file's values, of no device yet
    if device is not None and device != config.device_name:
        raise InvalidSnapshotError(
            f"the snapshot is for device {device!r}, but {config.path or 'the wiring file'} "
            f"describes device {config.device_name!r} ([device] name)")
    _on_the_device(document, config, kept)
    fs = config.controllers[0].sample_rate_hz  # the same for every controller (lab.toml)
    pairs = document.get("pairs")
    for key, params in (pairs.items() if isinstance(pairs, Mapping) else ()):
        if isinstance(params, Mapping):
            _durations_on_grid(params, PAIR_DURATIONS, kept, "pairs", key, fs, f"pair {key}")
    qubits = document.get("qubits")
    if not isinstance(qubits, Mapping):
        return
    #: (signal generator, "frequency"/"power") -> [(qubit, parameter, value, changed)]
    asked: dict[tuple[str, str], list[tuple[int, str, float, bool]]] = {}
    for key, params in qubits.items():
        if not isinstance(params, Mapping) or not str(key).isdigit() \
                or int(key) not in config.qubits:
            continue
        q = int(key)
        wiring = config.qubits[q]
        subject = f"qubit {q}"
        _durations_on_grid(params, QUBIT_DURATIONS, kept, "qubits", key, fs, subject)
        _sigma_shapes_the_pulse(params, kept, key, fs, subject)
        for role, lo_name, port in (("drive", wiring.drive_lo, wiring.drive),
                                    ("readout", wiring.readout_lo, wiring.readout)):
            lo = config.instrument(lo_name)
            for quantity in ("frequency", "power"):
                name = f"{role}_lo_{quantity}_{'hz' if quantity == 'frequency' else 'dbm'}"
                value = _value(params, name)
                if value is not None:
                    asked.setdefault((lo_name, quantity), []).append(
                        (q, name, value, not unchanged(kept, "qubits", key, params, name)))
            lo_hz = _value(params, f"{role}_lo_frequency_hz")
            _inside(lo_hz, *lo.frequency_range_hz, subject, f"{role}_lo_frequency_hz",
                    f"the frequency range (Hz) of signal generator {lo.name!r}")
            _inside(_value(params, f"{role}_lo_power_dbm"), *lo.power_range_dbm, subject,
                    f"{role}_lo_power_dbm", f"the power range (dBm) of signal generator "
                    f"{lo.name!r}")
            tone = "frequency_hz" if role == "drive" else "readout_frequency_hz"
            tone_hz = _value(params, tone)
            if tone_hz is not None and lo_hz is not None:
                nyquist = config.controller(port[0]).sample_rate_hz / 2
                _inside(tone_hz, lo_hz - nyquist, lo_hz + nyquist, subject, tone,
                        f"the band {port[0]} can reach from {role}_lo_frequency_hz "
                        f"{lo_hz!r} (+- half its sample rate, Hz)")
        source = config.instrument(wiring.flux_bias[0])
        _inside(_value(params, "flux_bias_a"), -source.max_current_a, source.max_current_a,
                subject, "flux_bias_a", f"the output limit (A) of current source "
                f"{source.name!r} channel {wiring.flux_bias[1]}")
    for (lo_name, quantity), wanted in asked.items():
        _one_setting(lo_name, quantity, wanted)


def _on_the_device(document: Mapping[str, Any], config: LabConfig,
                   kept: Mapping[str, Any] | None) -> None:
    """Refuse a qubit, pair or gate of ``document`` that is not on the device: a qubit number
    past its qubits, a pair that is not an edge of its coupling map, a gate on either. One
    that ``kept`` (the parent document) holds with the same values is not refused: a wiring
    file narrowed since (a dead coupler taken out) must not lock its store out of every later
    commit and rollback."""
    wiring = config.path or "the wiring file"
    edges = {tuple(sorted(edge)) for edge in config.coupling_map}
    for section, qubits_of, subject in (
            ("qubits", lambda key: (qubit_index(key),), "qubit {}"),
            ("pairs", parse_pair, "pair {}"),
            ("gates", lambda key: parse_gate(key)[1], "gate '{}'")):
        entries = document.get(section)
        before = (kept or {}).get(section, {})
        for key in (entries if isinstance(entries, Mapping) else ()):
            if before.get(key) == entries[key]:
                continue
            qubits = qubits_of(key)
            off = [q for q in qubits if q >= config.num_qubits]
            if off:
                raise InvalidSnapshotError(
                    f"qubit {off[0]} is not on device {config.device_name}, which has qubits "
                    f"0-{config.num_qubits - 1} ({wiring}, [device] num_qubits)",
                    subject=subject.format(key))
            if len(qubits) == 2 and tuple(sorted(qubits)) not in edges:
                raise InvalidSnapshotError(
                    f"{min(qubits)}-{max(qubits)} is not an edge of device "
                    f"{config.device_name} ({wiring}, [device] coupling_map)",
                    subject=subject.format(key))


def _one_setting(lo_name: str, quantity: str,
                 wanted: list[tuple[int, str, float, bool]]) -> None:
    """Refuse qubits asking signal generator ``lo_name`` for different ``quantity`` values
    (``wanted``: qubit, parameter, value, changed since the parent), when one of them changed
    (a disagreement a parent holds already does not lock the store)."""
    values = {value for _, _, value, _ in wanted}
    changed = [w for w in wanted if w[3]]
    if len(values) < 2 or not changed:
        return
    q, name, value, _ = changed[0]
    other = next(w for w in wanted if w[2] != value)
    unit = "Hz" if quantity == "frequency" else "dBm"
    raise InvalidSnapshotError(
        f"{value!r} {unit}, while qubit {other[0]} asks the same signal generator {lo_name!r} "
        f"for {other[2]!r} {unit} ({other[1]}): one LO has one {quantity}; commit one value "
        "for its qubits", subject=f"qubit {q}", parameter=name)


def wiring_limits(config: LabConfig) -> Callable[[Mapping[str, Any]], None]:
    """:func:`check_against_wiring` for ``config``, as a ``CalibrationStore`` validator."""

    def validate(document: Mapping[str, Any], kept: Mapping[str, Any] | None = None) -> None:
        check_against_wiring(document, config, kept)

    return validate
