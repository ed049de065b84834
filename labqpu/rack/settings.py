"""Instrument state a program relies on: read it, set only what differs, verify it held.

Before a run, every LO source the program names and every current source of its flux-bias
channels is read back with one compound query each, all of them sent before the first reply
is read (one round trip in all). A setting that already matches is not sent
again. A setting that differs is sent, then read back, and the job fails if the instrument
still disagrees. After the run, the same settings are read again. If another process changed
an LO or a bias current during the run, the job fails, naming the instrument and the setting,
and its counts are discarded: they were measured on a device other than the one calibrated.
The read-back after the run goes out as soon as the run's results have arrived, and the caller
works on those results while its replies travel (:func:`verifying`).

When the connection's last read-back found every setting of a program in place, the read-back
before its run is sent first and its replies are read once the run has started, or ended for a
short run whose reply the controller held to its end (:func:`reading`,
``RackConnection._read_and_start``): a setting found changed then aborts that run, or discards
its results, before any result is taken, and the job sets it and starts again.

Tolerances are the instruments' resolutions: 1 mHz (or 1e-9 relative) in frequency, 0.005 dB
in power, 1 nA (or 1e-6 relative) in current.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Protocol

from labqpu.drivers.scpi import CurrentSource, SignalGenerator, queries_out, query_each
from labqpu.errors import InstrumentCommandError, InstrumentSettingChangedError
from labqpu.pulse.program import PulseProgram


class Instruments(Protocol):
    """The driver sessions of a rack, by instrument name."""

    def signal_generator(self, name: str) -> SignalGenerator: ...

    def current_source(self, name: str) -> CurrentSource: ...


def _close(value: float, wanted: float, absolute: float, relative: float) -> bool:
    """Whether a read-back ``value`` is ``wanted``; never for a non-finite one (an infinite
    ``wanted`` would otherwise allow an infinite difference)."""
    return (math.isfinite(value) and math.isfinite(wanted)
            and abs(value - wanted) <= max(absolute, relative * abs(wanted)))


def _lo_differences(state: tuple[float, float, bool], frequency_hz: float,
                    power_dbm: float) -> list[str]:
    frequency, power, on = state
    out = []
    if not _close(frequency, frequency_hz, 1e-3, 1e-9):
        out.append(f"frequency {frequency!r} Hz (expected {frequency_hz!r} Hz)")
    if not _close(power, power_dbm, 0.005, 0.0):
        out.append(f"power {power!r} dBm (expected {power_dbm!r} dBm)")
    if not on:
        out.append("output OFF (expected ON)")
    return out


def _bias_differences(state: tuple[float, bool], current_a: float) -> list[str]:
    current, on = state
    out = []
    if not _close(current, current_a, 1e-9, 1e-6):
        out.append(f"current {current!r} A (expected {current_a!r} A)")
    if not on:
        out.append("output OFF (expected ON)")
    return out


def _lo_record(name: str, source: SignalGenerator, state: tuple[float, float, bool]) -> dict:
    return {"instrument": name, "resource": source.resource, "identity": source.identity,
            "frequency_hz": state[0], "power_dbm": state[1], "output_on": state[2]}


def _bias_record(name: str, channel: int, source: CurrentSource,
                 state: tuple[float, bool]) -> dict:
    return {"instrument": name, "channel": channel, "resource": source.resource,
            "identity": source.identity, "current_a": state[0], "output_on": state[1]}


def prepare(instruments: Instruments, program: PulseProgram) -> list[dict]:
    """Bring every LO and bias channel of ``program`` to its setting; returns what each
    instrument reads back afterwards (with its identity), for the result's provenance.

    Raises:
        InstrumentCommandError: an instrument still disagrees after being set.
    """
    los, biases = _states(instruments, program)
    readback = []
    for name, lo, source, state in los:
        if _lo_differences(state, lo.frequency_hz, lo.power_dbm):
            source.configure(lo.frequency_hz, lo.power_dbm, output_on=True)
            state = source.state()
            wrong = _lo_differences(state, lo.frequency_hz, lo.power_dbm)
            if wrong:
                raise InstrumentCommandError(
                    f"LO {name} reads {', '.join(wrong)} after being set; the job's run was not "
                    "started (or was aborted) and it returns no results",
                    instrument=source.resource, command="readback")
        readback.append(_lo_record(name, source, state))
    for (name, channel), current, source, state in biases:
        if _bias_differences(state, current):
            if not _close(state[0], current, 1e-9, 1e-6):
                source.set_current_a(channel, current)
            if not state[1]:
                source.set_output(channel, True)
            state = source.state(channel)
            wrong = _bias_differences(state, current)
            if wrong:
                raise InstrumentCommandError(
                    f"flux bias {name} channel {channel} reads {', '.join(wrong)} after being "
                    "set; the job's run was not started (or was aborted) and it returns no "
                    "results", instrument=source.resource, command="readback")
        readback.append(_bias_record(name, channel, source, state))
    return readback


@contextlib.contextmanager
def verifying(instruments: Instruments, program: PulseProgram
              ) -> Iterator[Callable[[], list[dict]]]:
    """Read every LO and bias channel of ``program`` again after its run, in two steps: the
    queries go out on entry, in one exchange, and the callable it yields reads the replies, so
    the caller may work on the run's results while they travel. The callable returns the
    readback.

    Raises (from the callable):
        InstrumentSettingChangedError: a setting changed during the run (the message names
            the instrument and the setting); the run's results must be discarded.
    """
    los, sources, queries = _queries(instruments, program)
    with queries_out(queries) as replies:
        def verified() -> list[dict]:
            readings = _compared(*_parsed(program, los, sources, replies()))
            return [_read_back(reading, "changed during the run: it now reads {}; the results "
                                        "are discarded") for reading in readings]

        yield verified


def _compared(los: list[tuple], biases: list[tuple]) -> list[tuple]:
    """(what, source, differences, record) of states from :func:`_parsed`."""
    out = [(f"LO {name}", source, _lo_differences(state, lo.frequency_hz, lo.power_dbm),
            _lo_record(name, source, state)) for name, lo, source, state in los]
    out.extend((f"flux bias {name} channel {channel}", source,
                _bias_differences(state, current), _bias_record(name, channel, source, state))
               for (name, channel), current, source, state in biases)
    return out


@contextlib.contextmanager
def reading(instruments: Instruments, program: PulseProgram
            ) -> Iterator[Callable[[], list[dict] | None]]:
    """Send the read-back of every LO and bias channel of ``program`` on entry, in one
    exchange; the caller may start the run while the replies travel. The callable it yields
    reads the replies and returns the readback when every setting is in place, None when one
    differs (nothing was sent to fix it: abort the run and :func:`prepare`)."""
    los, sources, queries = _queries(instruments, program)
    with queries_out(queries) as replies:
        def in_place() -> list[dict] | None:
            readings = _compared(*_parsed(program, los, sources, replies()))
            if any(wrong for _, _, wrong, _ in readings):
                return None
            return [record for _, _, _, record in readings]

        yield in_place


def wanted(program: PulseProgram) -> dict[tuple, tuple]:
    """Every setting ``program`` relies on: ("lo", name) -> (frequency (Hz), power (dBm)) and
    ("bias", name, channel) -> (current (A),)."""
    out: dict[tuple, tuple] = {("lo", name): (lo.frequency_hz, lo.power_dbm)
                               for name, lo in program.lo_settings.items()}
    out.update({("bias", name, channel): (current,)
                for (name, channel), current in program.flux_bias_a.items()})
    return out


def _states(instruments: Instruments, program: PulseProgram) -> tuple[list[tuple], list[tuple]]:
    """What every LO and bias channel of ``program`` reads now (:func:`_parsed`), in one
    exchange."""
    los, sources, queries = _queries(instruments, program)
    return _parsed(program, los, sources, query_each(queries))


def _queries(instruments: Instruments, program: PulseProgram
             ) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(name, wanted LO setting, source) per LO source, (name, channels, source) per current
    source, and the compound query of each, LO sources first: one round trip in all when
    sent with ``query_each`` or ``queries_out``."""
    los = [(name, lo, instruments.signal_generator(name))
           for name, lo in sorted(program.lo_settings.items())]
    by_source: dict[str, list[int]] = {}
    for name, channel in sorted(program.flux_bias_a):
        by_source.setdefault(name, []).append(channel)
    sources = [(name, channels, instruments.current_source(name))
               for name, channels in by_source.items()]
    queries = ([(source, source.STATE_QUERY) for _, _, source in los]
               + [(source, source.states_query(channels)) for _, channels, source in sources])
    return los, sources, queries


def _parsed(program: PulseProgram, los: list[tuple], sources: list[tuple], replies: list[str]
            ) -> tuple[list[tuple], list[tuple]]:
    """(name, wanted LO setting, source, (frequency, power, on)) per LO source and
    ((instrument, channel), wanted current (A), source, (current, on)) per bias channel."""
    lo_states = [(name, lo, source, source.parse_state(reply))
                 for (name, lo, source), reply in zip(los, replies[:len(los)], strict=True)]
    biases = []
    for (name, channels, source), reply in zip(sources, replies[len(los):], strict=True):
        states = source.parse_states(channels, reply)
        biases.extend(((name, ch), program.flux_bias_a[(name, ch)], source, states[ch])
                      for ch in channels)
    return lo_states, biases


def _read_back(reading: tuple, problem: str) -> dict:
    """The reading's record, or an error naming the instrument and ``problem`` (a format
    string for the differences) if the instrument disagrees with the program."""
    what, source, wrong, record = reading
    if wrong:
        raise InstrumentSettingChangedError(f"{what} {problem.format(', '.join(wrong))}",
                                            instrument=source.resource, command="readback")
    return record
