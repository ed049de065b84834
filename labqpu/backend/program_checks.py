"""Checks of a low-level program before it is sent: that it fits this rack's wiring and its
controllers' limits (``hello``), that its values are finite and playable. Each failure is an
``InvalidRunInputError`` naming the program and the problem; nothing has been sent then."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from labqpu.backend.sweeps import DAC_FULL_SCALE
from labqpu.backend.target import digitizing_controllers
from labqpu.drivers.protocol import IQ_BYTES, MAX_IQ_PER_FRAME
from labqpu.errors import (
    BackendConfigurationError,
    CompilationError,
    InvalidRunInputError,
    PulseError,
)
from labqpu.pulse.channels import ChannelMap
from labqpu.pulse.program import MAX_CLBITS, PulseProgram
from labqpu.rack.config import LabConfig
from labqpu.store import Snapshot

__all__ = ["check_length", "check_nested", "check_program", "check_rep_delay", "check_results",
           "check_traces", "default_rep_delay_s", "one_controller_hint", "port_qubits",
           "result_point_limit", "touched_qubits"]


def _non_finite(program: PulseProgram) -> str | None:
    """The first non-finite value of a ready program (which array and element), or None. An
    element bound from the parameter table (``play_amp_ref``, ``binds``) may hold NaN until
    the run binds it."""
    bound = {(name, index) for name, index, _ in program.binds}
    for name in ("play_amp", "play_phase_rad", "play_freq_hz", "acq_freq_hz",
                 "shift_phase_rad", "acq_disc_threshold", "wave_data", "acq_disc_axis"):
        values = getattr(program, name)
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            if (name == "play_amp" and program.play_amp_ref[i] >= 0) or (name, i) in bound:
                continue
            return f"{name}[{i}] is {values[i]}"
    for lo_name, lo in program.lo_settings.items():
        if not (math.isfinite(lo.frequency_hz) and math.isfinite(lo.power_dbm)):
            return f"LO {lo_name} is set to {lo.frequency_hz} Hz, {lo.power_dbm} dBm"
    for (source, channel), current in program.flux_bias_a.items():
        if not math.isfinite(current):
            return f"flux bias {source}:{channel} is set to {current} A"
    return None


def _beyond_limits(program: PulseProgram, sample_rate_hz: float) -> str | None:
    """The first play or acquisition of ``program`` that its controller would refuse at upload
    (docs/protocol.md): a play of a waveform the table does not hold, an NCO or demodulation
    frequency beyond the Nyquist frequency, or a play whose amplitude times its waveform's
    peak exceeds DAC full scale; None when there is none. Values the run binds from the
    parameter table (``play_amp_ref``, ``binds``) are the controller's to check."""
    n_waves = program.wave_offset.size - 1
    bad = np.flatnonzero((program.play_wave < 0) | (program.play_wave >= n_waves))
    if bad.size:
        i = int(bad[0])
        return (f"play {i} (port {program.play_port[i]}, sample {program.play_start[i]}) uses "
                f"waveform {program.play_wave[i]}; the program's table holds {n_waves}")
    bound = {(name, index) for name, index, _ in program.binds}
    half = sample_rate_hz / 2
    for kind, name, ports, starts in (
            ("play", "play_freq_hz", program.play_port, program.play_start),
            ("acquisition", "acq_freq_hz", program.acq_port, program.acq_start)):
        freqs = getattr(program, name)
        for i in np.flatnonzero(np.abs(freqs) > half).tolist():
            if (name, i) not in bound:
                return (f"{kind} {i} (port {ports[i]}, sample {starts[i]}) is at "
                        f"{freqs[i]:.6g} Hz, beyond the Nyquist frequency {half:.6g} Hz (half "
                        "the sample rate)")
    fixed = np.flatnonzero(program.play_amp_ref < 0)
    if fixed.size:
        peaks = program.waveform_peaks
        level = np.abs(program.play_amp[fixed]) * peaks[program.play_wave[fixed]]
        over = np.flatnonzero(level > DAC_FULL_SCALE)
        if over.size:
            i = int(fixed[over[0]])
            return (f"play {i} (port {program.play_port[i]}, sample {program.play_start[i]}) "
                    f"exceeds DAC full scale: amplitude {program.play_amp[i]:.4g} x waveform "
                    f"peak {peaks[program.play_wave[i]]:.4g} > 1")
    return None


def check_program(program: PulseProgram, config: LabConfig, channels: ChannelMap) -> None:
    """A pulse-level program must fit this rack: controller, sample rate, ports, VISA
    sources, classical bits."""
    where = f"program {program.display_name!r}"
    try:
        ctrl = config.controller(program.controller)
        for name in program.lo_settings:
            if config.instrument(name).kind != "signal_generator":
                raise InvalidRunInputError(f"{where}: {name!r} is not an LO source")
        for source, channel in program.flux_bias_a:
            inst = config.instrument(source)
            if inst.kind != "current_source" or not 1 <= channel <= inst.channels:
                raise InvalidRunInputError(
                    f"{where}: flux bias {source}:{channel} is not a current-source channel")
    except BackendConfigurationError as exc:
        raise InvalidRunInputError(f"{where}: {exc}") from exc
    if not math.isclose(program.sample_rate_hz, ctrl.sample_rate_hz):
        raise InvalidRunInputError(f"{where}: built for {program.sample_rate_hz} Hz; "
                                   f"{ctrl.name} runs at {ctrl.sample_rate_hz} Hz")
    outputs, inputs = ctrl.outputs, ctrl.inputs
    if program.rack:
        if program.rack != channels.layout:
            raise InvalidRunInputError(f"{where}: built for the controllers {program.rack}; "
                                       f"this rack has {channels.layout or ctrl.name}")
        outputs = sum(r[1] for r in program.rack)
        inputs = sum(r[2] for r in program.rack)
    if program.play_port.size and not 0 <= program.play_port.min() <= \
            program.play_port.max() < outputs:
        raise InvalidRunInputError(f"{where}: plays use ports outside 0..{outputs - 1}")
    if program.acq_port.size and not 0 <= program.acq_port.min() <= \
            program.acq_port.max() < inputs:
        raise InvalidRunInputError(
            f"{where}: acquisitions use inputs outside 0..{inputs - 1}")
    if program.acq_clbit.size and not -1 <= program.acq_clbit.min() <= \
            program.acq_clbit.max() < program.num_clbits:
        raise InvalidRunInputError(
            f"{where}: acquisitions write classical bits outside 0..{program.num_clbits - 1}"
            f" (build it with num_clbits={int(program.acq_clbit.max()) + 1})")
    problem = _non_finite(program)
    if problem:
        raise InvalidRunInputError(f"{where}: {problem}; amplitudes, phases, frequencies, "
                                   "waveform samples, LO settings and bias currents must "
                                   "be finite; nothing was sent")
    problem = _beyond_limits(program, ctrl.sample_rate_hz)
    if problem:
        raise InvalidRunInputError(f"{where}: {problem} of {ctrl.name}; nothing was sent")
    try:
        channels.timing.check_program(program)
    except CompilationError as exc:
        raise InvalidRunInputError(f"{exc}; nothing was sent") from exc


def check_length(program: PulseProgram, config: LabConfig, capabilities: Mapping[str, dict],
                 max_program_samples: Mapping[str, int]) -> None:
    """A program must fit its controller: at most :data:`MAX_CLBITS` classical bits, no
    longer than ``max_program_samples``, and no more waveform samples, waveforms or plays
    than ``waveform_memory_samples``, ``max_waveforms`` and ``max_plays``, nor more
    conditional blocks and phase shifts than ``feedforward.max_blocks`` and ``max_shifts``
    (the controller's ``hello``, asked once when the backend was created)."""
    caps = capabilities.get(program.controller, {})
    fs = config.controller(program.controller).sample_rate_hz
    where = f"program {program.display_name!r}"
    if program.num_clbits > MAX_CLBITS:
        raise InvalidRunInputError(
            f"{where} has {program.num_clbits} classical bits; a job's programs take at most "
            f"{MAX_CLBITS} (each shot's bitstring is that long); nothing was sent")
    limit = max_program_samples.get(program.controller)
    if limit is not None and program.duration_samples > limit:
        raise InvalidRunInputError(
            f"{where} lasts {program.duration_samples} samples "
            f"({program.duration_samples / fs:.3g} s); controller {program.controller} "
            f"plays at most {limit} samples ({limit / fs:.3g} s); nothing was sent")
    for what, used, key in (
            ("waveform samples", int(program.wave_data.shape[0]), "waveform_memory_samples"),
            ("waveforms", int(program.wave_offset.shape[0]) - 1, "max_waveforms"),
            ("plays", int(program.play_port.shape[0]), "max_plays")):
        if key in caps and used > int(caps[key]):
            raise InvalidRunInputError(
                f"{where} needs {used} {what}; controller {program.controller} holds at "
                f"most {int(caps[key])} ({key}); split it into several programs; nothing "
                "was sent")
    feedforward = caps.get("feedforward", {})
    for what, used, key in (("conditional blocks", int(program.block_acq.shape[0]),
                             "max_blocks"),
                            ("phase shifts", int(program.shift_port.shape[0]),
                             "max_shifts")):
        if key in feedforward and used > int(feedforward[key]):
            raise InvalidRunInputError(
                f"{where} needs {used} {what}; controller {program.controller} takes at "
                f"most {int(feedforward[key])} (feedforward.{key}); nothing was sent")


def result_point_limit(capabilities: Mapping) -> int:
    """Most IQ results (shots x acquisitions, all points of a merged run together) one run
    on a controller with these ``hello`` capabilities may return: what one reply frame this
    client takes holds, and the controller's own ``max_result_points`` when it states one."""
    stated = capabilities.get("max_result_points")
    return min(MAX_IQ_PER_FRAME, int(stated)) if isinstance(stated, int) and stated > 0 \
        else MAX_IQ_PER_FRAME


def check_results(program: PulseProgram, parts: list, shots: int,
                  capabilities: Mapping[str, dict]) -> None:
    """Each controller's part of ``program`` returns ``shots`` x its acquisitions IQ results,
    which must fit :func:`result_point_limit`: else the run would play to its end and its
    results could not be received. Raises ``InvalidRunInputError``."""
    for part in parts:
        acquisitions = int(part.program.acq_port.shape[0])
        limit = result_point_limit(capabilities.get(part.controller, {}))
        if shots * acquisitions > limit:
            raise InvalidRunInputError(
                f"program {program.display_name!r}: {shots} shots x {acquisitions} "
                f"acquisitions on controller {part.controller} are {shots * acquisitions} IQ "
                f"results ({shots * acquisitions * IQ_BYTES} bytes), beyond the {limit} one run "
                f"returns in one reply frame: at most {limit // acquisitions} shots; nothing "
                "was sent", option="shots")


def one_controller_hint(exc: PulseError, channels: ChannelMap) -> str:
    """For a conditional pulse that depends on another controller's acquisition: which
    qubits each controller digitizes, so that the circuit can be laid out on one."""
    if getattr(exc, "parameter", None) != "block_acq":
        return ""
    where = "; ".join(f"{name}: qubits {qubits}"
                      for name, qubits in digitizing_controllers(channels).items())
    return (f"; keep a conditional block and the acquisition it reads on one controller's "
            f"qubits ({where}): for a circuit, lay it out on them, e.g. "
            "transpile(circuit, backend, initial_layout=[...]); for a pulse program, play "
            "the block on the measured qubit's controller")


def check_nested(parts: list, capabilities: Mapping[str, dict]) -> None:
    """A program with nested conditional blocks (an if_else on a register of several bits,
    or one inside another) runs only on controllers whose ``hello`` states
    ``feedforward.nested_blocks``: one that does not know ``block_parent`` would ignore it
    and run the inner blocks unconditionally. Raises ``InvalidRunInputError``."""
    for part in parts:
        program = part.program
        caps = capabilities.get(part.controller, {}).get("feedforward", {})
        if program.has_nested_blocks and not caps.get("nested_blocks"):
            raise InvalidRunInputError(
                f"program {program.display_name!r} has "
                f"nested conditional blocks (an if_else on a register of several bits, or "
                f"one inside another); controller {part.controller} states no "
                "feedforward.nested_blocks in its hello; nothing was sent")


def check_traces(programs: list[PulseProgram], opts: dict, capabilities: Mapping[str, dict]) -> int:
    """The trace decimation of a meas_level 0 run, after checking that every program's
    controller returns traces and that they fit its ``traces.max_points`` (shots x
    acquisitions x points); raises ``InvalidRunInputError`` before anything is sent."""
    decimations = set()
    for program in programs:
        where = f"program {program.display_name!r}"
        caps = capabilities.get(program.controller, {}).get("traces")
        if not isinstance(caps, dict):
            raise InvalidRunInputError(
                f"meas_level=0: controller {program.controller} returns no raw traces (its "
                "hello states no 'traces' capability); nothing was sent",
                option="meas_level")
        if not program.acq_port.size:
            raise InvalidRunInputError(
                f"meas_level=0: {where} acquires nothing, so it has no trace to return; "
                "measure a qubit or run it with meas_level 1 or 2; nothing was sent",
                option="meas_level")
        dec = opts["trace_decimation"] or int(caps["default_decimation"])
        if dec > int(caps["max_decimation"]):
            raise InvalidRunInputError(
                f"trace_decimation {dec} exceeds controller {program.controller}'s "
                f"{caps['max_decimation']}; nothing was sent", option="trace_decimation")
        points = max((-(-int(d) // dec) for d in program.acq_duration), default=0)
        size = opts["shots"] * program.acq_duration.shape[0] * points
        if size > int(caps["max_points"]):
            raise InvalidRunInputError(
                f"meas_level=0: {where} needs {opts['shots']} shots x "
                f"{program.acq_duration.shape[0]} acquisitions x {points} points = {size} "
                f"trace points; controller {program.controller} returns at most "
                f"{caps['max_points']}: use fewer shots or a larger trace_decimation; "
                "nothing was sent", option="shots")
        decimations.add(dec)
    if len(decimations) > 1:
        raise InvalidRunInputError(
            f"meas_level=0: the controllers' default trace decimations differ "
            f"({sorted(decimations)}); set trace_decimation", option="trace_decimation")
    return decimations.pop()


#: ``rep_delay`` when the run does not give one: this many times the longest calibrated T1 of
#: the qubits the circuits use (residual excitation exp(-10) ~ 5e-5), at most
#: MAX_DEFAULT_REP_DELAY_S; REP_DELAY_UNCALIBRATED_S without any T1.
REP_DELAY_T1_FACTOR = 10.0
REP_DELAY_UNCALIBRATED_S = 500e-6
MAX_DEFAULT_REP_DELAY_S = 1.0


def port_qubits(channels: ChannelMap) -> dict[int, int]:
    """``{rack output port: qubit}`` of every qubit's drive, flux and readout output."""
    return {channels.output(address): q for q, qubit in channels.qubits.items()
            for address in (qubit.drive, qubit.flux, qubit.readout)}


def touched_qubits(programs: list[PulseProgram], ports: Mapping[int, int]) -> set[int]:
    """The qubits ``programs`` drive, flux or measure (``ports``: :func:`port_qubits`)."""
    out = {int(q) for program in programs for q in program.acq_qubit}
    out.update(ports[p] for program in programs for p in np.unique(program.play_port).tolist()
               if p in ports)
    return out


def default_rep_delay_s(snapshot: Snapshot, qubits: set[int] | None = None) -> float:
    """The repetition delay (s) of runs that do not set ``rep_delay``: REP_DELAY_T1_FACTOR x
    the longest ``t1_s`` of ``qubits`` in ``snapshot`` (default, or when none of them has
    one: of every qubit; a review's case: one idle qubit's T1 of 8 ms set every Bell job's
    delay to 80 ms), at most MAX_DEFAULT_REP_DELAY_S; REP_DELAY_UNCALIBRATED_S without any."""
    def longest(chosen) -> list[float]:
        return [snapshot.qubits[q]["t1_s"].value for q in chosen
                if "t1_s" in snapshot.qubits.get(q, {})]

    t1 = (qubits and longest(qubits)) or longest(snapshot.qubits)
    return min(MAX_DEFAULT_REP_DELAY_S, REP_DELAY_T1_FACTOR * max(t1)) if t1 \
        else REP_DELAY_UNCALIBRATED_S


def check_rep_delay(opts: Mapping) -> None:
    """Refuse a job whose shots alone, each followed by the repetition delay, outlast the
    time limit of a run (``timeout``, s): the controller would stop every run of it."""
    least_s = opts["shots"] * opts["rep_delay"]
    if least_s > opts["timeout"]:
        raise InvalidRunInputError(
            f"{opts['shots']} shots with a repetition delay of {opts['rep_delay']:.6g} s take "
            f"at least {least_s:.6g} s, beyond the run option timeout of {opts['timeout']:g} s "
            "that bounds each run: run fewer shots, a shorter rep_delay or a longer timeout "
            f"(the default delay is {REP_DELAY_T1_FACTOR:g} T1 of the qubits the circuits use); "
            "nothing was sent",
            option="rep_delay")

