"""The simulated controller firmware: validates uploaded programs and executes them.

It sees exactly what a real controller would: play rows (port, start sample, waveform id,
amplitude, phase, NCO frequency), a waveform table, acquisition windows and a parameter table,
and the feed-forward tables (conditional blocks, phase shifts, a linear discriminator per
acquisition). Execution renders the plays and hands the samples to the physics model, together
with the LO and flux-bias settings the VISA servers hold at that moment; programs with
mid-circuit measurement or conditional blocks go through ``feedforward``.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from labqpu.drivers.protocol import (
    ERR_FEEDFORWARD_LATENCY,
    IQ_BYTES,
    MAX_FRAME_BYTES,
    MAX_IQ_PER_FRAME,
    SEED_LIMIT,
)
from labqpu.firmware_sim.device import ControllerSpec
from labqpu.firmware_sim.feedforward import FeedForward, run_with_feedforward
from labqpu.firmware_sim.physics import PhysicsEngine, Settings, WireProgram
from labqpu.firmware_sim.runs import ProgramRefusedError
from labqpu.firmware_sim.shots import trace_points
from labqpu.firmware_sim.sweeps import BINDABLE, MAX_PARAM_SETS, bind, parse_param_sets
from labqpu.firmware_sim.sync import (
    FOLLOWER,
    SharedDevice,
    SyncHub,
    SyncPart,
    merge_parts,
    parse_sync,
    split_results,
    to_rack_ports,
)

log = logging.getLogger(__name__)

#: Waveform memory of the simulated controller (samples) and the longest program (samples).
WAVEFORM_MEMORY_SAMPLES = 16 * 1024 * 1024
#: Longest shot (samples): 2 ms at 1 GS/s. The physics renders every output port over the
#: whole shot (16 B per sample and port, ~0.5 GB at most; the samples no play touches take
#: no memory).
MAX_PROGRAM_SAMPLES = 2_000_000
#: Most waveforms in a program's table and most plays: a program is validated as one upload.
MAX_WAVEFORMS = 65_536
MAX_PLAYS = 1_000_000
MAX_SHOTS = 1_000_000
#: Most IQ results one run returns (rows x acquisitions, a sweep's points included): its IQ
#: travels as one reply frame. A run beyond it is refused before it plays (it played for
#: minutes, then its reply was refused).
MAX_RESULT_POINTS = MAX_IQ_PER_FRAME
#: Longest repetition delay between shots (s). A run advances the device's simulated time by
#: shots x (program duration + delay), against which it drifts: bounded, a run advances it by
#: at most ~12 simulated days (without a bound, one run could make it infinite, and every
#: later run of every client failed).
MAX_REP_DELAY_S = 1.0
FULL_SCALE = 1.0 + 1e-6
#: Time from the end of an acquisition window until a play may depend on its result (s):
#: demodulation, discrimination and the decision on the sequencer.
FEEDFORWARD_LATENCY_S = 200e-9
#: Most conditional blocks and phase shifts in a program.
MAX_BLOCKS = 65_536
MAX_SHIFTS = 65_536
#: Parsed programs kept for later runs of the same upload (:meth:`SimulatedController._held`):
#: at most this many, each of at most ``PARSED_PROGRAM_BYTES`` of arrays; the points of one
#: sweep kept from their check to their turn hold at most ``PARSED_PROGRAM_BYTES`` together.
PARSED_PROGRAMS_KEPT = 16
PARSED_PROGRAM_BYTES = 4 * 1024 * 1024
#: Raw traces (meas_level 0): samples averaged per point, when the run does not say, and the
#: largest decimation; most points computed per run (shots x acquisitions x points, also
#: when the controller averages them: 64 MiB of complex64 on the wire).
DEFAULT_TRACE_DECIMATION = 8
MAX_TRACE_DECIMATION = 1024
MAX_TRACE_POINTS = 8 * 1024 * 1024

_REQUIRED = {
    "play_port": "int32", "play_start": "int64", "play_wave": "int32", "play_amp": "float64",
    "play_amp_ref": "int32", "play_phase_rad": "float64", "play_freq_hz": "float64",
    "wave_offset": "int64", "wave_data": "complex64", "acq_port": "int32", "acq_start": "int64",
    "acq_duration": "int64", "acq_freq_hz": "float64", "param_values": "float64",
    "play_block": "int32", "block_acq": "int32", "block_value": "int32", "shift_port": "int32",
    "shift_start": "int64", "shift_phase_rad": "float64", "shift_block": "int32",
    "acq_disc_axis": "complex128", "acq_disc_threshold": "float64",
}


def wave_peaks(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Each waveform's peak |sample| (0 for an empty one), in one pass."""
    peak = np.zeros(offsets.shape[0] - 1)
    filled = np.diff(offsets) > 0
    if filled.any():
        peak[filled] = np.maximum.reduceat(np.abs(data), offsets[:-1][filled])
    return peak


class SimulatedController:
    """The ``Executor`` behind the simulator's ``ControllerServer``."""

    def __init__(self, spec: ControllerSpec, engine: PhysicsEngine,
                 settings: Callable[[], Settings], seed: int | None, *,
                 shared: SharedDevice | None = None, hub: SyncHub | None = None) -> None:
        """``spec``: this controller; ``engine``: the device's physics; ``settings``: what the
        VISA instruments output now; ``seed``: seed of unseeded runs (None: OS entropy).
        In a rack of several controllers, ``shared`` is what they share (its engine is
        ``engine`` and its seed replaces ``seed``, which must be None) and ``hub`` their
        trigger for synchronised runs (``sync`` module); alone, a controller has its own."""
        if shared is not None and (shared.engine is not engine or seed is not None):
            raise ValueError("a controller sharing a device takes its engine and seed from it")
        self.spec = spec
        self.engine = engine
        self._settings = settings
        self.shared = shared or SharedDevice(engine, seed)
        self.hub = hub
        #: id(arrays) -> (arrays, meta, parsed program on rack ports) (:meth:`_held`).
        self._parsed: OrderedDict[int, tuple[dict, dict, tuple[WireProgram, FeedForward]]] = \
            OrderedDict()
        self._parsed_lock = threading.Lock()

    @property
    def sim_time_s(self) -> float:
        """Simulated time (s) of the device: the sum of shots x (program duration + rep_delay)
        of every run its rack executed; the device drifts against it."""
        return self.shared.sim_time_s

    def capabilities(self) -> dict:
        """Channels, sample rate (Hz), waveform memory (samples) and limits."""
        return {
            "outputs": self.spec.outputs,
            "inputs": self.spec.inputs,
            "sample_rate_hz": self.spec.sample_rate_hz,
            "waveform_memory_samples": WAVEFORM_MEMORY_SAMPLES,
            "max_program_samples": MAX_PROGRAM_SAMPLES,
            "max_waveforms": MAX_WAVEFORMS,
            "max_plays": MAX_PLAYS,
            "max_shots": MAX_SHOTS,
            "max_result_points": MAX_RESULT_POINTS,
            "max_rep_delay_s": MAX_REP_DELAY_S,
            "amplitude_full_scale": 1.0,
            "param_sets": {"max_sets": MAX_PARAM_SETS, "max_total_shots": MAX_SHOTS,
                           "binds": ["play_amp_ref", *BINDABLE]},
            "results": {"iq": "complex64 (shots, acquisitions), demodulated mean per window",
                        "bits": "uint8 (shots, acquisitions), discriminated results",
                        "traces": "complex64 (shots, acquisitions, points), or (1, ...) "
                                  "averaged over shots; on request (run params)",
                        "trace_decimation": "int64 (1,), samples per trace point"},
            "traces": {"default_decimation": DEFAULT_TRACE_DECIMATION,
                       "max_decimation": MAX_TRACE_DECIMATION,
                       "max_points": MAX_TRACE_POINTS,
                       "point": "mean of `decimation` consecutive demodulated samples of the "
                                "window from its start (the last point holds the rest)"},
            "timing": dict(self.spec.timing),
            "program_ids": "content",
            "feedforward": {"latency_s": FEEDFORWARD_LATENCY_S,
                            "latency_samples": self._latency_samples(),
                            "max_blocks": MAX_BLOCKS, "max_shifts": MAX_SHIFTS,
                            "nested_blocks": True,
                            "discriminator": "linear: 1 iff Re(conj(axis) * iq) > threshold"},
            **({} if self.hub is None else {"sync": self.hub.capability()}),
        }

    def _latency_samples(self) -> int:
        """The feed-forward latency in whole samples (rounded up)."""
        return math.ceil(FEEDFORWARD_LATENCY_S * self.spec.sample_rate_hz - 1e-9)

    def load(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Validate a program; raises ``ValueError`` naming the first problem found."""
        self._parse(arrays, meta)

    def _parse(self, arrays: dict[str, np.ndarray], meta: dict
               ) -> tuple[WireProgram, FeedForward]:
        for name, dtype in _REQUIRED.items():
            if name not in arrays:
                raise ValueError(f"program lacks array {name!r}")
            if arrays[name].dtype != np.dtype(dtype) or arrays[name].ndim != 1:
                raise ValueError(f"array {name!r} must be 1-d {dtype}, got "
                                 f"{arrays[name].ndim}-d {arrays[name].dtype}")
        arrays, meta = bind(arrays, meta)
        fs = meta.get("sample_rate_hz")
        if not isinstance(fs, int | float) or not math.isclose(fs, self.spec.sample_rate_hz,
                                                              rel_tol=1e-12):
            raise ValueError(f"program is for {fs} Hz; this controller runs at "
                             f"{self.spec.sample_rate_hz} Hz")
        duration = meta.get("duration_samples")
        if not isinstance(duration, int) or not 0 < duration <= MAX_PROGRAM_SAMPLES:
            raise ValueError(f"duration_samples must be an int in 1..{MAX_PROGRAM_SAMPLES}, "
                             f"got {duration!r}")
        port, start, wave = arrays["play_port"], arrays["play_start"], arrays["play_wave"]
        n_play = port.shape[0]
        for name in ("play_start", "play_wave", "play_amp", "play_amp_ref", "play_phase_rad",
                     "play_freq_hz"):
            if arrays[name].shape[0] != n_play:
                raise ValueError(f"array {name!r} has {arrays[name].shape[0]} rows, "
                                 f"play_port has {n_play}")
        if n_play > MAX_PLAYS:
            raise ValueError(f"program has {n_play} plays; this controller takes {MAX_PLAYS}")
        offsets, data = arrays["wave_offset"], arrays["wave_data"]
        n_wave = offsets.shape[0] - 1
        if n_wave > MAX_WAVEFORMS:
            raise ValueError(f"program has {n_wave} waveforms; this controller takes "
                             f"{MAX_WAVEFORMS}")
        if n_wave < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) \
                or offsets[-1] != data.shape[0]:
            raise ValueError("wave_offset must rise from 0 to len(wave_data)")
        if data.shape[0] > WAVEFORM_MEMORY_SAMPLES:
            raise ValueError(f"waveforms need {data.shape[0]} samples; memory holds "
                             f"{WAVEFORM_MEMORY_SAMPLES}")
        if not np.all(np.isfinite(data)):
            raise ValueError("waveform table holds non-finite samples")
        bad = np.flatnonzero((port < 0) | (port >= self.spec.outputs))
        if bad.size:
            raise ValueError(f"play {bad[0]} targets output port {port[bad[0]]}; "
                             f"ports are 0..{self.spec.outputs - 1}")
        bad = np.flatnonzero((wave < 0) | (wave >= n_wave))
        if bad.size:
            raise ValueError(f"play {bad[0]} uses waveform {wave[bad[0]]}; table has {n_wave}")
        params = arrays["param_values"]
        refs = arrays["play_amp_ref"]
        if np.any(refs >= params.shape[0]) or np.any(refs < -1):
            raise ValueError("play_amp_ref points outside the parameter table")
        amp = np.where(refs >= 0, params[np.maximum(refs, 0)] if params.size else 0.0,
                       arrays["play_amp"])
        for name, values in (("amplitude", amp), ("phase", arrays["play_phase_rad"]),
                             ("frequency", arrays["play_freq_hz"])):
            if not np.all(np.isfinite(values)):
                raise ValueError(f"a play has a non-finite {name}")
        if np.any(np.abs(arrays["play_freq_hz"]) > self.spec.sample_rate_hz / 2):
            raise ValueError("a play's NCO frequency exceeds the Nyquist frequency")
        lengths = np.diff(offsets)[wave] if n_play else np.zeros(0, dtype=np.int64)
        bad = np.flatnonzero((start < 0) | (start + lengths > duration))
        if bad.size:
            raise ValueError(f"play {bad[0]} (port {port[bad[0]]}, start {start[bad[0]]}) lies "
                             f"outside the program's {duration} samples")
        peak = wave_peaks(offsets, data)
        over = np.flatnonzero(np.abs(amp) * (peak[wave] if n_play else 0.0) > FULL_SCALE)
        if over.size:
            i = over[0]
            raise ValueError(f"play {i} on port {port[i]} exceeds DAC full scale: amplitude "
                             f"{amp[i]:.4g} x waveform peak {peak[wave[i]]:.4g} > 1")
        acq_port, acq_start, acq_dur = arrays["acq_port"], arrays["acq_start"], \
            arrays["acq_duration"]
        n_acq = acq_port.shape[0]
        if any(arrays[n].shape[0] != n_acq for n in ("acq_start", "acq_duration", "acq_freq_hz")):
            raise ValueError("acquisition arrays differ in length")
        bad = np.flatnonzero((acq_port < 0) | (acq_port >= self.spec.inputs))
        if bad.size:
            raise ValueError(f"acquisition {bad[0]} uses input {acq_port[bad[0]]}; inputs are "
                             f"0..{self.spec.inputs - 1}")
        bad = np.flatnonzero((acq_dur < 1) | (acq_start < 0) | (acq_start + acq_dur > duration))
        if bad.size:
            raise ValueError(f"acquisition {bad[0]} window lies outside the program")
        freq = arrays["acq_freq_hz"]
        bad = np.flatnonzero(~np.isfinite(freq) | (np.abs(freq) > self.spec.sample_rate_hz / 2))
        if bad.size:
            raise ValueError(f"acquisition {bad[0]} demodulates at {freq[bad[0]]} Hz, beyond "
                             "the Nyquist frequency")
        self._check_timing(port, start, lengths, acq_port, acq_start, acq_dur)
        prog = WireProgram(
            play_port=port, play_start=start, play_wave=wave, play_amp=amp.astype(np.float64),
            play_phase_rad=arrays["play_phase_rad"], play_freq_hz=arrays["play_freq_hz"],
            wave_offset=offsets, wave_data=data.astype(np.complex128), acq_port=acq_port,
            acq_start=acq_start, acq_duration=acq_dur, acq_freq_hz=arrays["acq_freq_hz"],
            duration_samples=duration,
        )
        return prog, self._parse_feedforward(arrays, prog)

    def _held(self, arrays: dict[str, np.ndarray], meta: dict) -> tuple[WireProgram,
                                                                         FeedForward]:
        """``_parse`` on rack ports, kept for the later runs of an upload: the controller
        server holds an uploaded program's arrays read-only, in one dict, for as long as it
        holds the program, so that dict (the same object, every array read-only) names the
        same content on each run. Arrays that can still change are parsed every time."""
        frozen = all(not a.flags.writeable for a in arrays.values())
        with self._parsed_lock:
            kept = self._parsed.get(id(arrays)) if frozen else None
            if kept is not None and kept[0] is arrays and kept[1] is meta:
                self._parsed.move_to_end(id(arrays))
                return kept[2]
        parsed = to_rack_ports(*self._parse(arrays, meta), self.spec.output_base,
                               self.spec.input_base)
        if frozen and _nbytes(parsed) <= PARSED_PROGRAM_BYTES:
            for value in _arrays(parsed):  # shared by the later runs: nothing may write to them
                value.flags.writeable = False
            with self._parsed_lock:
                self._parsed[id(arrays)] = (arrays, meta, parsed)
                while len(self._parsed) > PARSED_PROGRAMS_KEPT:
                    self._parsed.popitem(last=False)
        return parsed

    def _check_timing(self, port: np.ndarray, start: np.ndarray, lengths: np.ndarray,
                      acq_port: np.ndarray, acq_start: np.ndarray, acq_dur: np.ndarray) -> None:
        """The timing rules this controller states in ``hello`` (``capabilities()["timing"]``):
        plays start on the pulse alignment, waveforms are whole granules and at least the
        minimum length, acquisitions start on the acquire alignment and last whole granules."""
        timing = dict(self.spec.timing)
        gran = timing.get("granularity", 1)
        checks = (
            ("play", start % timing.get("pulse_alignment", 1) != 0, port, start, lengths,
             f"starts off the pulse alignment of {timing.get('pulse_alignment', 1)} samples"),
            ("play", lengths % gran != 0, port, start, lengths,
             f"has a waveform off the granularity of {gran} samples"),
            ("play", lengths < timing.get("min_length", 1), port, start, lengths,
             f"is shorter than the minimum length of {timing.get('min_length', 1)} samples"),
            ("acquisition", acq_start % timing.get("acquire_alignment", 1) != 0, acq_port,
             acq_start, acq_dur, "starts off the acquire alignment of "
             f"{timing.get('acquire_alignment', 1)} samples"),
            ("acquisition", acq_dur % gran != 0, acq_port, acq_start, acq_dur,
             f"lasts a duration off the granularity of {gran} samples"),
        )
        for kind, bad, where, at, length, what in checks:
            hit = np.flatnonzero(bad)
            if hit.size:
                i = int(hit[0])
                raise ValueError(f"{kind} {i} (port {int(where[i])}, start {int(at[i])}, "
                                 f"{int(length[i])} samples) {what}")

    def _parse_feedforward(self, arrays: dict[str, np.ndarray], prog: WireProgram
                           ) -> FeedForward:
        """Validate the conditional blocks, phase shifts and discriminators of a program."""
        n_play, n_acq = prog.play_port.shape[0], prog.acq_port.shape[0]
        play_block, block_acq, block_value = (arrays[n] for n in ("play_block", "block_acq",
                                                                   "block_value"))
        n_block = block_acq.shape[0]
        if play_block.shape[0] != n_play:
            raise ValueError(f"array 'play_block' has {play_block.shape[0]} rows, play_port "
                             f"has {n_play}")
        if block_value.shape[0] != n_block:
            raise ValueError("arrays 'block_acq' and 'block_value' differ in length")
        if n_block > MAX_BLOCKS:
            raise ValueError(f"program has {n_block} blocks; this controller takes {MAX_BLOCKS}")
        axis, threshold = arrays["acq_disc_axis"], arrays["acq_disc_threshold"]
        if axis.shape[0] != n_acq or threshold.shape[0] != n_acq:
            raise ValueError(f"discriminator arrays need one row per acquisition ({n_acq})")
        if not (np.all(np.isfinite(axis)) and np.all(np.isfinite(threshold))):
            raise ValueError("a discriminator is not finite")
        bad = np.flatnonzero((axis != 0) & (np.abs(np.abs(axis) - 1.0) > 1e-6))
        if bad.size:
            raise ValueError(f"acquisition {bad[0]}: discriminator axis {axis[bad[0]]} is "
                             "neither 0 nor a unit vector")
        parent = arrays.get("block_parent")
        if parent is None:
            parent = np.full(n_block, -1, dtype=np.int32)
        elif parent.dtype != np.int32 or parent.ndim != 1 or parent.shape[0] != n_block:
            raise ValueError(f"array 'block_parent' must be 1-d int32 with one row per block "
                             f"({n_block}), got {parent.ndim}-d {parent.dtype} of "
                             f"{parent.shape[0] if parent.ndim else 0}")
        bad = np.flatnonzero((parent < -1) | (parent >= np.arange(n_block)))
        if bad.size:
            raise ValueError(f"block {bad[0]} has the parent {parent[bad[0]]}; a parent is -1 "
                             "or an earlier block")
        for b in range(n_block):
            j, v = int(block_acq[b]), int(block_value[b])
            if not 0 <= j < n_acq:
                raise ValueError(f"block {b} reads acquisition {j}; the program has {n_acq}")
            if v not in (0, 1):
                raise ValueError(f"block {b} runs on result {v}; a result is 0 or 1")
            if axis[j] == 0:
                raise ValueError(f"block {b} reads acquisition {j}, which has no "
                                 "discriminator (acq_disc_axis is 0)")
        bad = np.flatnonzero((play_block < -1) | (play_block >= n_block))
        if bad.size:
            raise ValueError(f"play {bad[0]} belongs to block {play_block[bad[0]]}; the "
                             f"program has {n_block} blocks")
        s_port, s_start, s_phase, s_block = (arrays[n] for n in (
            "shift_port", "shift_start", "shift_phase_rad", "shift_block"))
        n_shift = s_port.shape[0]
        if any(a.shape[0] != n_shift for a in (s_start, s_phase, s_block)):
            raise ValueError("phase-shift arrays differ in length")
        if n_shift > MAX_SHIFTS:
            raise ValueError(f"program has {n_shift} phase shifts; this controller takes "
                             f"{MAX_SHIFTS}")
        bad = np.flatnonzero((s_port < 0) | (s_port >= self.spec.outputs))
        if bad.size:
            raise ValueError(f"phase shift {bad[0]} targets output port {s_port[bad[0]]}; "
                             f"ports are 0..{self.spec.outputs - 1}")
        bad = np.flatnonzero((s_start < 0) | (s_start > prog.duration_samples)
                             | ~np.isfinite(s_phase) | (s_block < -1) | (s_block >= n_block))
        if bad.size:
            raise ValueError(f"phase shift {bad[0]} has a start outside the program, a "
                             "non-finite phase or an unknown block")
        latency = self._latency_samples()
        acq_end = prog.acq_start + prog.acq_duration
        # the acquisition each block waits for longest: its own or an ancestor's
        last = np.zeros(n_block, dtype=np.int64)
        for b in range(n_block):
            j = int(block_acq[b])
            p = int(parent[b])
            last[b] = j if p < 0 or acq_end[j] >= acq_end[last[p]] else last[p]
        for what, starts, blocks in (("play", prog.play_start, play_block),
                                     ("phase shift", s_start, s_block)):
            for i in np.flatnonzero(blocks >= 0):
                j = int(last[blocks[i]])
                earliest = int(acq_end[j]) + latency
                if starts[i] < earliest:
                    port = prog.play_port[i] if what == "play" else s_port[i]
                    raise ProgramRefusedError(
                        ERR_FEEDFORWARD_LATENCY,
                        f"{what} {i} (port {port}, start {starts[i]}) in block {blocks[i]} "
                        f"starts before the result of acquisition {j} is known: its window ends "
                        f"at sample {acq_end[j]}, feed-forward latency is {latency} samples, "
                        f"so the earliest start is {earliest}")
        return FeedForward(play_block=play_block, block_acq=block_acq, block_value=block_value,
                           shift_port=s_port, shift_start=s_start, shift_phase_rad=s_phase,
                           shift_block=s_block, disc_axis=axis, disc_threshold=threshold,
                           block_parent=parent)

    def execute(self, arrays: dict[str, np.ndarray], meta: dict, shots: int, params: dict,
                cancel: threading.Event) -> dict[str, np.ndarray]:
        """Run the program ``shots`` times; params: ``seed`` (int, optional),
        ``rep_delay_s`` (s, optional, >= 0; shots without it are independent),
        ``traces`` (optional: "single" or "avg") with ``trace_decimation`` (samples per point,
        optional), ``sync`` (optional: a synchronised run with other controllers of the rack,
        ``sync`` module), ``param_sets`` (optional: a sweep, ``sweeps`` module; the results
        then hold K x shots rows). Returns ``{"iq": complex64 (shots, n_acq), "bits": uint8 (shots,
        n_acq)}`` (the discriminated results; 0 without a discriminator), with traces also
        ``"traces"`` complex64 (shots, n_acq, points) ((1, n_acq, points) averaged) and
        ``"trace_decimation"`` int64 (1,)."""
        sync = None
        if "sync" in params:
            if self.hub is None:
                raise ValueError("sync: this controller is not part of a rack with a trigger")
            sync = parse_sync(params["sync"], self.spec.name, self.hub.controllers)
        try:
            rep_delay, traces, decimation, seed = self._run_params(shots, params)
            rng = None if sync is not None and sync.role == FOLLOWER else self.shared.rng(seed)
            prog, ff = self._held(arrays, meta)
            _check_results(shots, prog.acq_port.shape[0])
        except ValueError as exc:
            if sync is not None:  # its group would wait for it in vain
                self.hub.withdraw(sync, self.spec.name, f"failed: {exc}")
            raise
        if "param_sets" in params:
            return self._sweep(arrays, meta, shots, params, rng, rep_delay, traces, sync,
                               cancel)
        if sync is None:
            return self._simulate(prog, ff, shots, rng, rep_delay, traces, decimation, cancel)
        part = SyncPart(self.spec.name, prog, ff, shots, rep_delay)
        if sync.role == FOLLOWER:
            return self.hub.follow(sync, part, cancel)
        parts = self.hub.lead(sync, part, cancel)
        try:
            merged, merged_ff, columns = merge_parts(parts)
            result = self._simulate(merged, merged_ff, shots, rng, rep_delay, traces,
                                    decimation, cancel)
        except Exception as exc:
            how = ("was aborted" if cancel.is_set()
                   else f"failed: {type(exc).__name__}: {exc}")
            self.hub.fail(sync.group, f"sync group {sync.group}: leader {self.spec.name}'s run "
                                      f"{how}")
            raise
        if cancel.is_set():
            self.hub.fail(sync.group, f"sync group {sync.group}: leader {self.spec.name}'s run "
                                      "was aborted")
            raise RuntimeError(f"sync group {sync.group}: leader {self.spec.name}'s run was "
                               "aborted")
        results = split_results(result, parts, columns)
        self.hub.deliver(sync.group, results)
        return results[self.spec.name]

    def _sweep(self, arrays: dict[str, np.ndarray], meta: dict, shots: int, params: dict,
               rng: np.random.Generator, rep_delay: float | None, traces: str | None, sync,
               cancel: threading.Event) -> dict[str, np.ndarray]:
        """Run the program ``shots`` times at each row of the run parameter ``param_sets``
        (``sweeps`` module), point after point; the results are stacked in that order. Every
        point is validated as a whole program before the first one runs. Parsed points are
        kept for the run while they fit ``PARSED_PROGRAM_BYTES`` together; the others are
        parsed again when their turn comes, so a sweep of large programs holds one at a time.
        ``cancel`` (an abort, the run's time limit) is looked at before each point."""
        if sync is not None:
            self.hub.withdraw(sync, self.spec.name, "failed: param_sets cannot be combined "
                                                    "with sync")
            raise ValueError("param_sets cannot be combined with sync")
        if traces is not None:
            raise ValueError("param_sets cannot be combined with traces")
        sets = parse_param_sets(params["param_sets"], arrays["param_values"].shape[0], shots,
                                MAX_SHOTS)
        _check_results(len(sets) * shots, arrays["acq_port"].shape[0])
        kept: list[tuple[WireProgram, FeedForward] | None] = []
        room = PARSED_PROGRAM_BYTES
        for k, row in enumerate(sets):
            if cancel.is_set():
                raise RuntimeError(f"aborted while checking param_sets row {k}")
            point = self._point(arrays, meta, k, row)
            size = _nbytes(point)
            if size <= room:
                kept.append(point)
                room -= size
            else:
                kept.append(None)
        parts = []
        for k, row in enumerate(sets):
            prog, ff = kept[k] or self._point(arrays, meta, k, row)
            kept[k] = None
            parts.append(self._simulate(prog, ff, shots, rng, rep_delay, None, 1, cancel))
        return {"iq": np.concatenate([p["iq"] for p in parts]),
                "bits": np.concatenate([p["bits"] for p in parts])}

    def _point(self, arrays: dict[str, np.ndarray], meta: dict, k: int, row: np.ndarray
               ) -> tuple[WireProgram, FeedForward]:
        """Row ``k`` of a sweep's ``param_sets`` (``row``) parsed as a whole program on rack
        ports; an error names the row."""
        try:
            return to_rack_ports(*self._parse({**arrays, "param_values": row}, meta),
                                 self.spec.output_base, self.spec.input_base)
        except ProgramRefusedError as exc:
            raise ProgramRefusedError(exc.error_type, f"param_sets row {k}: {exc}") from exc
        except ValueError as exc:
            raise ValueError(f"param_sets row {k}: {exc}") from exc

    def abandon(self, params: dict) -> None:
        """A run with run parameters ``params`` was aborted before it started: if it was part
        of a synchronised run, its group fails at once instead of waiting for it."""
        if self.hub is None or "sync" not in params:
            return
        try:
            sync = parse_sync(params["sync"], self.spec.name, self.hub.controllers)
        except ValueError:
            return  # a run with a bad sync object never joined a group
        self.hub.withdraw(sync, self.spec.name, "was aborted before it started")

    def _simulate(self, prog: WireProgram, ff: FeedForward, shots: int,
                  rng: np.random.Generator, rep_delay: float | None, traces: str | None,
                  decimation: int, cancel: threading.Event) -> dict[str, np.ndarray]:
        """Execute ``prog`` (rack ports) with its feed-forward tables ``ff`` on the device:
        ``shots`` shots drawn from ``rng``, ``rep_delay`` (s) between shots, traces as asked
        (``traces`` mode or None, ``decimation`` samples per point); the result arrays of
        :meth:`execute`."""
        out = None
        if traces is not None:
            points = trace_points(prog.acq_duration, decimation)
            size = shots * prog.acq_port.shape[0] * points
            if size > MAX_TRACE_POINTS:
                raise ValueError(f"traces of {shots} shots x {prog.acq_port.shape[0]} "
                                 f"acquisitions x {points} points ({size}) exceed this "
                                 f"controller's {MAX_TRACE_POINTS}: fewer shots or a larger "
                                 "trace_decimation")
            out = np.zeros((shots, prog.acq_port.shape[0], points), dtype=np.complex64)
        if cancel.is_set():
            raise RuntimeError("aborted before start")
        shot_s = prog.duration_samples / self.spec.sample_rate_hz + (rep_delay or 0.0)
        with self.shared.computing(cancel):
            drift = self.shared.advance(shots * shot_s)
            iq, bits = run_with_feedforward(self.engine, prog, ff, self._settings(), shots, rng,
                                            drift, rep_delay_s=rep_delay,
                                            decimation=decimation if traces else None,
                                            traces=out, cancel=cancel)
        log.debug("executed %d shots of %.3g s, %d acquisitions", shots, shot_s, iq.shape[1])
        result = {"iq": iq, "bits": bits}
        if out is not None:
            result["traces"] = out.mean(axis=0, keepdims=True).astype(np.complex64) \
                if traces == "avg" else out
            result["trace_decimation"] = np.array([decimation], dtype=np.int64)
        return result

    @staticmethod
    def _run_params(shots: int, params: dict) -> tuple[float | None, str | None, int, int | None]:
        """(``rep_delay_s`` or None, ``traces`` mode or None, ``trace_decimation``, ``seed`` or
        None) of a run of ``shots`` shots with run ``params``, checked."""
        if not 1 <= shots <= MAX_SHOTS:
            raise ValueError(f"shots must be in 1..{MAX_SHOTS}, got {shots}")
        rep_delay = params.get("rep_delay_s")
        if rep_delay is not None and (isinstance(rep_delay, bool)
                                      or not isinstance(rep_delay, int | float)
                                      or not 0 <= rep_delay <= MAX_REP_DELAY_S):
            raise ValueError(f"rep_delay_s must be a number of seconds in 0..{MAX_REP_DELAY_S}, "
                             f"got {rep_delay!r}")
        traces, decimation = SimulatedController._trace_params(params)
        seed = params.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                                 or not 0 <= seed < SEED_LIMIT):
            raise ValueError(f"seed must be an int in 0..2**63 - 1, got {seed!r}")
        return rep_delay, traces, decimation, seed

    @staticmethod
    def _trace_params(params: dict) -> tuple[str | None, int]:
        """(``traces`` mode or None, ``trace_decimation``) of run ``params``, checked."""
        traces = params.get("traces")
        if traces not in (None, "single", "avg"):
            raise ValueError(f"traces must be 'single' or 'avg', got {traces!r}")
        decimation = params.get("trace_decimation", DEFAULT_TRACE_DECIMATION)
        if isinstance(decimation, bool) or not isinstance(decimation, int) \
                or not 1 <= decimation <= MAX_TRACE_DECIMATION:
            raise ValueError(f"trace_decimation must be an int in 1..{MAX_TRACE_DECIMATION}, "
                             f"got {decimation!r}")
        return traces, decimation


def _check_results(rows: int, acquisitions: int) -> None:
    """``ValueError`` when ``rows`` x ``acquisitions`` IQ results exceed
    :data:`MAX_RESULT_POINTS` (one reply frame)."""
    if rows * acquisitions > MAX_RESULT_POINTS:
        raise ValueError(
            f"the results of {rows} shots x {acquisitions} acquisitions take "
            f"{rows * acquisitions * IQ_BYTES} bytes of IQ, beyond the {MAX_FRAME_BYTES} bytes "
            f"one reply frame holds: at most {MAX_RESULT_POINTS // acquisitions} shots of this "
            "program (all points of a sweep together)")


def _arrays(parsed: tuple[WireProgram, FeedForward]) -> list[np.ndarray]:
    """The arrays a parsed program holds."""
    return [value for part in parsed for value in vars(part).values()
            if isinstance(value, np.ndarray)]


def _nbytes(parsed: tuple[WireProgram, FeedForward]) -> int:
    """Bytes of the arrays a parsed program holds."""
    return sum(value.nbytes for value in _arrays(parsed))
