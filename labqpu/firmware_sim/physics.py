"""Pulse-level physics of the simulated device.

The controller renders what it was told to play (waveform x amplitude x NCO) into samples per
output port. This module turns those samples, the LO frequencies and powers set over VISA, and
the DC flux bias into the qubits' evolution, then into IQ points on the acquisition inputs.
It never sees gate names.

Model (issue "physics" deepens it; item 1, always-on coupling, 2026-11-29):

* Transmons have three levels each; bare frequencies follow the symmetric-SQUID law of
  :meth:`QubitTruth.frequency_hz` at the DC flux. Capacitive coupling g (a^dag b + a b^dag)
  between the device file's neighbours acts at all times (``coupling`` module). The simulator's
  basis is the dressed eigenbasis of the whole idle coupled Hamiltonian (labelled by bare
  states), and each qubit's frame rotates at its dressed frequency f~_q = E(1_q) - E(0), which
  is what spectroscopy and Ramsey measure. In that frame the idle evolution is diagonal:
  H/h = sum_q L_q(n_q) + sum_pairs Z_pq(n_p, n_q), L_q = [0, 0, dressed alpha], Z the exact
  pair energies (Z(1, 1) = E11 - E10 - E01 + E00, the static ZZ, -270 to -440 kHz on lab5).
  Static ZZ is therefore not an added term: it is these dressed energies.
* Drive: an IQ mixer outputs Re[s(t) exp(i 2 pi f_LO t)] (upper sideband at f_LO + IF for a
  sample stream rotating at +IF). In a frame rotating at f_frame, with the rotating-wave
  approximation, the drive is (R / 2) (z a^dag + z* a) with
  z_k = g_mix conj(s_k) exp(-i 2 pi (f_LO - f_frame) t_k), s_k the rendered drive sample, R the
  Rabi frequency per unit amplitude and g_mix the mixer's conversion gain for the LO power it
  gets (0 when the LO output is off). A detuned LO leaves a residual rotation of z, so the pulse
  rotates about a wandering axis, as on hardware. A play phase phi turns the rotation axis by
  -phi. The drive acts on the dressed ladder of its qubit (matrix elements sqrt(n); the
  hybridised part of a_q, of order g / detuning on a neighbour ~800 MHz away, is dropped).
* A drive on one qubit whose neighbours idle is exact in this model: its propagator is
  computed for every configuration of the neighbours' levels (ZZ shifts its levels), and
  applied conditioned on them. Overlapping drives on coupled qubits (simultaneous gates) get
  their local propagators exactly and the pair terms between them to first order in the
  toggling frame of the drives (Magnus; error ~ (2 pi ZZ T)^2 / 2, about 1e-5 for 40 ns).
* Flux pulses move a qubit's frequency; while one plays, the qubit and its neighbours (a
  cluster) evolve under their bare Hamiltonian plus a constant correction that makes the
  cluster's idle energies the whole device's dressed ones, exactly per sample (zero-order hold)
  in a common frame, and the result is expressed in the dressed basis and frames. A flux pulse
  therefore starts and ends in the dressed idle eigenstates (no switch-on artefact), and the
  |11>-|20> avoided crossing makes a suitably shaped flux pulse a CZ. Pair terms between the
  cluster and qubits outside it are treated as commuting with the pulse (diagonal phases);
  with a drive inside the cluster on a qubit that has such a pair, only over that drive (the
  block is cut where it starts). Drives confined to the first or last few samples of a flux
  block (pulse edges) run as conditioned drives next to it when an estimate of what that
  changes is below 1e-4 rad (``edges`` module).
* Spectators: every neighbour of a touched qubit is evolved too (it starts thermal), so its
  level shifts its neighbour through ZZ. Not modelled: couplings not in the device file,
  three-body and next-nearest-neighbour energies (fourth order in g / detuning; <= 6 kHz on
  lab5's computational states, <= 15 kHz with a |2>), the flux dependence of g.
* Every sample is propagated exactly: U_k = exp(-i 2 pi H_k dt) from the eigendecomposition.
  Propagators are cached by their inputs, a drive's phase is applied to a cached unitary as a
  frame change, and single-qubit channels are composed per qubit before they touch the
  density matrix (``propagation`` module; docs/simulator.md, "Propagation and caching").
* T1 (ladder decay towards the thermal state) and pure dephasing (T_phi from T2 and flux noise)
  act on each qubit (on its dressed levels) through the exact solution of its Lindblad equation
  over each interval (rates, quasi-static offsets and drift: ``noise`` module),
  applied after the unitary of a pulse. Between pulses that solution includes the local idle
  Hamiltonian (dressed alpha on |2>), so |2> gains its phase while a qubit idles and leakage
  interferes correctly between pulses. The pair (ZZ) phases are applied to the whole register
  as a diagonal, in chunks (256 samples, at most 16 per stretch) after the decoherence up to
  each chunk's midpoint: decoherence and ZZ are split symmetrically
  (``PhysicsEngine._advance_zz``).
* Readout: the qubit populations at the start of an acquisition are sampled per shot (shots
  follow each other: residual excitation, ``shots`` module); the resonator's field follows the
  played readout samples per level (ring-up, ring-down), with decay and measurement-induced
  transitions per shot in the window, and white noise (``readout`` module).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from labqpu.errors import SimulationError
from labqpu.firmware_sim.blocks import (
    DriveBlocks,
    RunShare,
    RunShares,
    _RunContext,
    block_pulses,
    covers,
    flux_reach,
    interval_table,
    merge_consecutive,
    overlaps,
    single_blocks,
    single_index,
    singles_within,
)
from labqpu.firmware_sim.clusters import PHASE_TABLE_BYTES, PHASE_TABLES, ClusterBlocks
from labqpu.firmware_sim.coupling import (
    DressedModel,
    build_dressed_model,
)
from labqpu.firmware_sim.crosstalk import (
    apply_drive_crosstalk,
    dc_flux_phi0,
    drive_crosstalk_targets,
)
from labqpu.firmware_sim.density import (
    LEVELS,
    DensityMatrix,
    EvolutionStart,
    relaxation_superop,
)
from labqpu.firmware_sim.device import DeviceTruth, QubitCabling
from labqpu.firmware_sim.local import LocalChannels
from labqpu.firmware_sim.noise import (
    DriftWalk,
    QubitConditions,
    qubit_conditions,
    thermal_populations,
)
from labqpu.firmware_sim.propagation import (
    PropagatorCache,
    _transmon_propagate_kernel,
)
from labqpu.firmware_sim.readout import WindowRecord, acquire_window
from labqpu.firmware_sim.render import _render_kernel, play_peaks
from labqpu.firmware_sim.shots import run_shots
from labqpu.firmware_sim.split import SplitParts

__all__ = ["DensityMatrix", "Evolution", "EvolutionStart", "PhysicsEngine", "Settings",
           "WireProgram", "relaxation_superop"]

#: Bounds of the propagator caches (entries): a conditioned drive's stack of 3x3 unitaries
#: (``blocks.py``), a cluster's 81x81 to 243x243 (0.1-0.9 MB) on lab5; a cluster of seven
#: transmons (lab10) is 2187x2187, 76 MB, so the cluster cache is also bounded in bytes.
CACHE_1Q_ENTRIES = 8192
CACHE_NQ_ENTRIES = 256
CACHE_NQ_BYTES = 512 * 2**20
#: Bound of the cache of block decompositions (entries, one per distinct pulse schedule).
CACHE_BLOCK_ENTRIES = 64
#: The deferred ZZ frame of :meth:`PhysicsEngine.evolve` is moved forward once a block starts
#: this many samples after it.
REANCHOR_SAMPLES = 64
#: Longest stretch of static ZZ applied as one diagonal after the decoherence up to its
#: midpoint (:meth:`PhysicsEngine._advance_zz`).
ZZ_CHUNK_SAMPLES = 256
#: Most chunks one advance of the ZZ frame is cut into (longer idles use longer chunks).
ZZ_MAX_CHUNKS = 16
#: Most entries of one program's density matrix: 9 per transmon it touches, 3 per spectator
#: held diagonal (``density.DensityMatrix``); 16 bytes each (9^8: 0.7 GB).
MAX_DENSITY_ENTRIES = 9**8


@dataclass(frozen=True)
class WireProgram:
    """A program as the controller holds it (flat arrays; see ``drivers.protocol`` docs)."""

    play_port: np.ndarray
    play_start: np.ndarray
    play_wave: np.ndarray
    play_amp: np.ndarray
    play_phase_rad: np.ndarray
    play_freq_hz: np.ndarray
    wave_offset: np.ndarray
    wave_data: np.ndarray
    acq_port: np.ndarray
    acq_start: np.ndarray
    acq_duration: np.ndarray
    acq_freq_hz: np.ndarray
    duration_samples: int

    @classmethod
    def from_tuples(cls, plays: list[tuple], waves: list[np.ndarray], acqs: list[tuple],
                    duration_samples: int) -> WireProgram:
        """A program from ``plays`` as (output port, start sample, waveform index, amplitude,
        phase in rad, frequency in Hz) over the complex waveforms ``waves`` and ``acqs`` as
        (input port, start sample, duration in samples, frequency in Hz), ``duration_samples``
        long: what tests and scripts that drive the engine directly write by hand."""
        col = list(zip(*plays, strict=True)) if plays else [()] * 6
        acol = list(zip(*acqs, strict=True)) if acqs else [()] * 4
        return cls(
            play_port=np.array(col[0], dtype=np.int32),
            play_start=np.array(col[1], dtype=np.int64),
            play_wave=np.array(col[2], dtype=np.int32),
            play_amp=np.array(col[3], dtype=np.float64),
            play_phase_rad=np.array(col[4], dtype=np.float64),
            play_freq_hz=np.array(col[5], dtype=np.float64),
            wave_offset=np.concatenate([[0], np.cumsum([len(w) for w in waves])]).astype(
                np.int64),
            wave_data=np.concatenate([np.asarray(w, dtype=complex) for w in waves]),
            acq_port=np.array(acol[0], dtype=np.int32),
            acq_start=np.array(acol[1], dtype=np.int64),
            acq_duration=np.array(acol[2], dtype=np.int64),
            acq_freq_hz=np.array(acol[3], dtype=np.float64),
            duration_samples=int(duration_samples),
        )


@dataclass(frozen=True)
class Settings:
    """Instrument settings as the VISA servers hold them when a run starts.

    ``los`` maps LO name to (frequency_hz, power_dbm, output_on); ``currents`` maps
    (source name, channel) to the current (A) actually flowing (0 when the output is off).
    """

    los: dict[str, tuple[float, float, bool]]
    currents: dict[tuple[str, int], float]


@dataclass(frozen=True)
class Evolution:
    """The device state after :meth:`PhysicsEngine.evolve`.

    ``rho`` holds the evolved qubits in the order of ``position`` (qubit -> tensor axis);
    ``samples`` are the rendered port samples (ports x samples); ``acquisitions`` lists
    (acquisition index, qubit) in program order.
    """

    rho: DensityMatrix
    position: dict[int, int]
    samples: np.ndarray
    acquisitions: list[tuple[int, int]]


def _resume_qubits(start: EvolutionStart, needed: set[int]) -> set[int]:
    """The qubits of ``start``, checked to hold every qubit in ``needed`` in axis order."""
    missing = sorted(needed - set(start.position))
    if missing:
        raise SimulationError(f"cannot resume evolution: qubits {missing} are not in the state")
    order = sorted(start.position, key=start.position.get)
    if order != sorted(order) or start.rho.n != len(order):
        raise SimulationError("cannot resume evolution: the state's axes are not in qubit order")
    return set(order)


def evolved_qubits(device: DeviceTruth, played: set[int], fluxed: set[int]
                   ) -> tuple[set[int], set[int]]:
    """(touched, evolved) qubits of a program that plays on or measures ``played`` and fluxes
    ``fluxed``. Touched: those, and the neighbours of a fluxed qubit (they hybridise with it).
    Evolved: the touched ones, the idle neighbours of the played and fluxed qubits (static-ZZ
    spectators in their thermal level) and the qubits their drives reach by crosstalk. The
    other neighbours of a fluxed qubit's neighbour (thermal both, shifting it by their ZZ times
    ~1 % while it hybridises) and qubits farther away stay diagonal and do not matter."""
    played = played | fluxed
    touched = set(played)
    for q in fluxed:
        touched |= set(device.neighbours(q))
    evolved = set(touched)
    for q in played:
        evolved |= set(device.neighbours(q))
    evolved |= drive_crosstalk_targets(device.crosstalk, played)
    return touched, evolved


def spectators(order: list[int], touched: set[int]) -> tuple[int, ...]:
    """Positions in ``order`` (the evolved qubits, sorted) of the qubits a program does not
    touch (``evolved_qubits``): idle neighbours of played qubits and crosstalk targets. No
    pulse acts on them and no flux pulse hybridises them, and drive crosstalk reaches them as
    diagonal phases only, so their state stays diagonal and the density matrix holds them by
    their populations (``density.DensityMatrix``): exactly the same evolution."""
    return tuple(i for i, q in enumerate(order) if q not in touched)


def check_density_size(order: list[int], held: tuple[int, ...], touched: set[int]) -> None:
    """Raise ``SimulationError`` naming the qubits when the density matrix over ``order`` (the
    evolved qubits, sorted) with positions ``held`` held by their populations would exceed
    :data:`MAX_DENSITY_ENTRIES` entries; ``touched`` are the qubits the program acts on."""
    entries = 9 ** (len(order) - len(held)) * 3 ** len(held)
    if entries > MAX_DENSITY_ENTRIES:
        raise SimulationError(
            f"the program touches qubits {sorted(touched)}; with their coupled neighbours "
            f"(spectators {sorted(order[p] for p in held)}) that is a density matrix of "
            f"{entries} entries over transmons {order}, and this simulator holds at most "
            f"{MAX_DENSITY_ENTRIES} (16 bytes each): run fewer qubits at once")


class PhysicsEngine(DriveBlocks, ClusterBlocks):
    """Evolves the device under a rendered program and produces IQ points per shot."""

    def __init__(self, device: DeviceTruth, cabling: dict[int, QubitCabling]) -> None:
        self.device = device
        self.cabling = cabling
        #: Propagators of single transmons and of coupled clusters, reused across runs.
        self.cache_1q = PropagatorCache(CACHE_1Q_ENTRIES)
        self.cache_nq = PropagatorCache(CACHE_NQ_ENTRIES, CACHE_NQ_BYTES)
        #: Cluster propagators at equally spaced phases of a weak second drive, and how often
        #: each shape without a table was propagated directly (``clusters`` module docstring).
        self.phase_tables = PropagatorCache(PHASE_TABLES, PHASE_TABLE_BYTES)
        self._phase_shapes: dict[tuple, int] = {}
        #: Sub-steps s per driven sample of split-step cluster parts, by shape: each part is
        #: propagated at s and 2s and extrapolated (``ClusterBlocks._cluster_split_unitary``).
        self._split_substeps: dict[tuple, int] = {}
        #: Dressed models per set of bare idle frequencies, and cluster dressings.
        self._models: dict[tuple[float, ...], DressedModel] = {}
        self._dressings: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        #: Blocks of exp(H_s) of split-step cluster parts, per cluster dressing
        #: (``ClusterBlocks._cluster_split_parts``).
        self._split_parts: dict[tuple, SplitParts] = {}
        #: Anharmonicity and exchange terms per cluster (``ClusterBlocks._cluster_static``).
        self._statics: dict[tuple[int, ...], np.ndarray] = {}
        self._joint_cache: dict[tuple, list] = {}
        #: Neighbour configurations with equal level shifts, by shifts (``_conditional_stack``).
        self._shift_groups: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        #: Block decompositions per set of play intervals (:meth:`_cached_blocks`).
        self._block_cache: dict[tuple, list] = {}
        #: Stark phases of drive crosstalk (``crosstalk.apply_drive_crosstalk``).
        self.crosstalk_cache: dict[tuple, list[np.ndarray]] = {}
        #: Look-ups of joint drive blocks answered from ``_joint_cache``.
        self.joint_cache_hits = 0
        #: Recent runs' shares, for repeated runs (``shots.run_shots``).
        self.run_shares = RunShares()
        #: The device's slow drift against simulated time (``noise`` module).
        self.drift = DriftWalk(device.noise, len(device.qubits))
        #: Hold untouched neighbours by their populations (:func:`spectators`); False evolves
        #: them in full (the reference the tests compare against).
        self.diagonal_spectators = True
        #: Let a feed-forward branch drop the qubits whose levels no longer matter
        #: (``feedforward._Plan.decoupled``); False keeps them (the tests' reference).
        self.drop_decoupled = True

    def mixer_gain(self, lo: tuple[float, float, bool]) -> float:
        """Conversion gain (amplitude) of an IQ mixer fed by ``lo`` = (Hz, dBm, on)."""
        _, power_dbm, on = lo
        if not on:
            return 0.0
        deficit_db = min(0.0, power_dbm - self.device.mixer_nominal_lo_power_dbm)
        return 10.0 ** (deficit_db / 20.0)

    def _flux_dc_phi0(self, q: int, settings: Settings) -> float:
        cab = self.cabling[q]
        truth = self.device.qubits[q]
        current = settings.currents.get((cab.flux_source, cab.flux_channel), 0.0)
        return (current - truth.sweet_spot_current_a) * truth.phi0_per_ampere

    def _phi_dc(self, settings: Settings) -> dict[int, float]:
        """DC flux (flux quanta from the sweet spot) of every qubit, with the DC flux
        crosstalk between the bias lines (``crosstalk`` module)."""
        return dc_flux_phi0({q: self._flux_dc_phi0(q, settings) if q in self.cabling else 0.0
                             for q in range(len(self.device.qubits))}, self.device.crosstalk)

    def _lo(self, name: str, settings: Settings) -> tuple[float, float, bool]:
        if name not in settings.los:
            raise SimulationError(f"LO source {name!r} is not part of this rack")
        return settings.los[name]

    def conditions(self, settings: Settings,
                   drift: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[dict[int, QubitConditions], dict[int, float]]:
        """Per qubit the run's :class:`~labqpu.firmware_sim.noise.QubitConditions` under
        ``drift`` (frequency offsets in Hz and T1 factors, from ``self.drift.at``; None: no
        drift) and quasi-static sigma (Hz)."""
        phi_dc = self._phi_dc(settings)
        n = len(self.device.qubits)
        drift_hz, t1_factor = (np.zeros(n), np.ones(n)) if drift is None else drift
        return qubit_conditions(self.device.qubits, self.device.noise, phi_dc,
                                self.dressed_model(phi_dc).freq_hz, drift_hz, t1_factor)

    def run(self, prog: WireProgram, settings: Settings, shots: int,
            rng: np.random.Generator, drift: tuple[np.ndarray, np.ndarray] | None = None,
            rep_delay_s: float | None = None) -> np.ndarray:
        """Execute ``prog`` for ``shots`` shots under ``drift`` (see :meth:`conditions`; the
        controller reads it at its simulated time) with ``rep_delay_s`` (s) between shots
        (None: independent shots); returns complex IQ (shots, n_acq) (``shots.run_shots``)."""
        return run_shots(self, prog, settings, shots, rng, drift, rep_delay_s=rep_delay_s).iq

    def evolve(self, prog: WireProgram, settings: Settings,
               resume: EvolutionStart | None = None, *,
               conditions: dict[int, QubitConditions] | None = None,
               share: RunShare | None = None) -> Evolution:
        """Render ``prog`` and evolve the device's density matrix under it (no readout), under
        ``conditions`` per qubit (default: :meth:`conditions` without drift or offsets).

        Every qubit the program touches, and every neighbour of one, is evolved; a measured
        qubit up to the start of its acquisition, any other qubit up to the end of the last
        pulse (or the last acquisition start, if later). With ``resume`` the evolution resumes
        from its state and time on its qubits (which must include every qubit evolved here),
        and every qubit that is not acquired is evolved up to ``prog.duration_samples``.
        Evolutions of one program under one ``settings`` that differ only in ``conditions``
        or ``resume`` may pass one ``share`` (:class:`~labqpu.firmware_sim.blocks.RunShare`)
        to compute what does not depend on them once.
        Raises ``SimulationError`` for programs this simulator cannot execute.
        """
        fs = self.device.sample_rate_hz
        if share is not None and (share.program is not prog or share.settings is not settings):
            raise ValueError("a RunShare is shared only by evolutions of the program and the "
                             "settings it was made for")
        rendering = share.rendering if share is not None else None
        if rendering is None:
            rendering = self._render(prog)
            if share is not None:
                share.rendering = rendering
        samples, drive_iv, flux_iv = rendering
        acq_qubit = {cab.acquire_port: q for q, cab in self.cabling.items()}
        acq = [(i, acq_qubit[int(p)]) for i, p in enumerate(prog.acq_port)]
        measured = [q for _, q in acq]
        if len(set(measured)) != len(measured):
            raise SimulationError(
                "two acquisitions on one qubit in one program (mid-circuit measurement) are not "
                "supported by this simulator version"
            )
        touched, active = evolved_qubits(self.device, set(drive_iv) | set(measured),
                                         set(flux_iv))
        if resume is not None:
            active, t0 = _resume_qubits(resume, active), resume.time_samples
        order = sorted(active)
        pos = {q: i for i, q in enumerate(order)}
        held = spectators(order, touched) if self.diagonal_spectators else ()
        start_rho = None
        if resume is not None:
            start_rho = resume.rho
            if any(order[p] in touched for p in start_rho.diagonal):
                start_rho = start_rho.without_spectators()  # this segment acts on one of them
            held = start_rho.diagonal
        check_density_size(order, held, touched)

        acq_time = {q: int(prog.acq_start[i]) for i, q in acq}
        for q, t_acq in acq_time.items():
            touching = drive_iv.get(q, []) + [
                iv for f in flux_iv if f == q or q in self.device.neighbours(f) for iv in flux_iv[f]
            ]
            if any(end > t_acq for _, end in touching):
                raise SimulationError(
                    f"a pulse reaching qubit {q} plays after its acquisition at sample {t_acq}: "
                    "mid-circuit measurement is not supported by this simulator version"
                )

        phi_dc = self._phi_dc(settings)
        model = self.dressed_model(phi_dc)
        cond = conditions or self.conditions(settings)[0]
        if start_rho is None:
            rho = DensityMatrix([thermal_populations(cond[q].thermal_ratio) for q in order], held)
        else:  # a state of the caller's that it still uses is copied
            rho = start_rho.copy() if start_rho is resume.rho and not resume.owned else start_rho
        local = LocalChannels(self.device, rho, pos, fs,
                              {q: float(model.local_hz[q][2]) for q in order},
                              {q: (cond[q].t1_s, cond[q].t_phi_s, cond[q].thermal_ratio)
                               for q in order})
        zz_all = model.pair_energies(order)
        has_zz = bool(np.any(zz_all))
        stop = {q: acq_time.get(q, prog.duration_samples) for q in order}
        ctx = _RunContext(samples, settings, phi_dc, model, order, pos, local, stop, zz_all, 0,
                          {q: cond[q].offset_hz for q in order if cond[q].offset_hz},
                          (share or RunShare(prog, settings)).for_order(order))
        if resume is not None:
            local.time = dict.fromkeys(order, t0)
            ctx.anchor = t0
        # Static ZZ is applied in a deferred frame: the stored density matrix carries the pair
        # phases exp(-i 2 pi Z t) of the whole register only up to sample ``ctx.anchor``; each
        # block's operator is conjugated into that frame (exact), and the anchor is moved
        # forward once it lags a block by REANCHOR_SAMPLES (:meth:`_advance_zz`).
        t_last = 0
        for b0, b1, cluster, fluxed in self._cached_blocks(drive_iv, flux_iv):
            if has_zz and b0 - ctx.anchor >= REANCHOR_SAMPLES:
                self._advance_zz(ctx, b0)
            if fluxed:
                self._apply_cluster(ctx, cluster, fluxed, b0, b1)
            elif len(cluster) == 1:
                self._apply_drive(ctx, cluster[0], b0, b1)
            else:
                self._apply_joint_drive(ctx, cluster, b0, b1)
            apply_drive_crosstalk(self, ctx, cluster, b0, b1)
            t_last = max(t_last, b1)
        t_end = max([t_last, *acq_time.values()]) if resume is None else prog.duration_samples
        if has_zz and t_end > ctx.anchor:
            self._advance_zz(ctx, t_end)
        for q in order:
            local.idle(q, acq_time.get(q, t_end))
        local.flush_all(order)
        rho.free_scratch()  # the state outlives the evolution (branches, residual excitation)
        return Evolution(rho=rho, position=pos, samples=samples, acquisitions=acq)

    def _render(self, prog: WireProgram
                ) -> tuple[np.ndarray, dict[int, list[tuple[int, int]]],
                           dict[int, list[tuple[int, int]]]]:
        """The samples of ``prog`` per output port (ports x samples) and the play intervals
        (start, end) on each qubit's drive and flux ports; raises ``SimulationError`` when a
        port exceeds the DAC's full scale."""
        fs = self.device.sample_rate_hz
        n_ports = int(max(
            [int(prog.play_port.max()) if prog.play_port.size else 0]
            + [c.drive_port for c in self.cabling.values()]
            + [c.flux_port for c in self.cabling.values()]
            + [c.readout_port for c in self.cabling.values()]
        )) + 1
        samples = _render_kernel(
            n_ports, int(prog.duration_samples), prog.play_port, prog.play_start, prog.play_wave,
            prog.play_amp, prog.play_phase_rad, prog.play_freq_hz, prog.wave_offset,
            prog.wave_data, fs,
        )
        peak = play_peaks(samples, prog.play_port, prog.play_start,
                          np.diff(prog.wave_offset)[prog.play_wave])
        over = np.flatnonzero(peak > 1.0 + 1e-6)
        if over.size:
            port = int(over[0])
            k = int(np.argmax(np.abs(samples[port])))
            raise SimulationError(f"output port {port} exceeds DAC full scale at sample {k} "
                                  f"(|{peak[port]:.4g}| > 1): overlapping plays add")
        port_role = {}
        for q, cab in self.cabling.items():
            port_role[cab.drive_port] = (q, "drive")
            port_role[cab.flux_port] = (q, "flux")
            port_role[cab.readout_port] = (q, "readout")

        drive_iv: dict[int, list[tuple[int, int]]] = {}
        flux_iv: dict[int, list[tuple[int, int]]] = {}
        for i in range(prog.play_port.shape[0]):
            port = int(prog.play_port[i])
            if port not in port_role:
                continue
            q, role = port_role[port]
            start = int(prog.play_start[i])
            w = int(prog.play_wave[i])
            end = start + int(prog.wave_offset[w + 1] - prog.wave_offset[w])
            if role == "drive":
                drive_iv.setdefault(q, []).append((start, end))
            elif role == "flux":
                flux_iv.setdefault(q, []).append((start, end))
        return samples, drive_iv, flux_iv

    def _advance_zz(self, ctx: _RunContext, until: int) -> None:
        """Apply the register's pair phases from ``ctx.anchor`` up to sample ``until``.

        Decoherence is applied per qubit and ZZ as one diagonal, so the two are split. Over
        long stretches the split is symmetric: in chunks of at most ZZ_CHUNK_SAMPLES, every
        qubit's channel is brought to the chunk's midpoint and applied before the chunk's
        phase, so a decay in the chunk carries on average the right ZZ phase: what remains is
        the spread of that phase within a chunk, an error of order
        (chunk / T1) (pi ZZ chunk)^2 / 6 per chunk (1e-4 for 256 ns), instead of a bias that
        grows with the idle time. Idles longer than ZZ_MAX_CHUNKS x 256 samples use longer
        chunks (a 10 us idle: 16 chunks of 625 ns, about 2e-3 each), so a long idle costs at
        most 16 passes per qubit.
        """
        fs = self.device.sample_rate_hz
        a = ctx.anchor
        chunk = max(ZZ_CHUNK_SAMPLES, -(-(until - a) // ZZ_MAX_CHUNKS))
        while a < until:
            c1 = min(until, a + chunk)
            if c1 - a > REANCHOR_SAMPLES:
                mid = (a + c1) // 2
                for q in ctx.order:
                    ctx.local.idle(q, min(mid, ctx.stop[q]))
                ctx.local.flush_all(ctx.order)
            phases = ctx.share.zz_phases.get(c1 - a)
            if phases is None:
                phases = ctx.share.zz_phases[c1 - a] = np.exp(-2j * np.pi * ctx.zz_all
                                                              * (c1 - a) / fs)
            ctx.local.rho.apply_diagonal(phases)
            a = c1
        ctx.anchor = max(ctx.anchor, until)

    def _cached_blocks(self, drive_iv: dict[int, list[tuple[int, int]]],
                       flux_iv: dict[int, list[tuple[int, int]]]
                       ) -> list[tuple[int, int, list[int], list[int]]]:
        """:meth:`_blocks`, cached by the intervals (a program played again, or with other
        phases and amplitudes, has the same blocks). The result must not be modified."""
        key = (tuple((q, tuple(v)) for q, v in drive_iv.items()),
               tuple((q, tuple(v)) for q, v in flux_iv.items()))
        blocks = self._block_cache.get(key)
        if blocks is None:
            if len(self._block_cache) >= CACHE_BLOCK_ENTRIES:
                self._block_cache.clear()
            blocks = self._block_cache[key] = self._blocks(drive_iv, flux_iv)
        return blocks

    def _blocks(self, drive_iv: dict[int, list[tuple[int, int]]],
                flux_iv: dict[int, list[tuple[int, int]]]
                ) -> list[tuple[int, int, list[int], list[int]]]:
        """Split the program into blocks (start, end, cluster, fluxed qubits), sorted by start.

        A drive interval (overlapping drive plays merged) on a qubit that no flux pulse
        reaches meanwhile is one single-qubit block over its whole length, so a repeated pulse
        is one repeated block. Flux pulses, and drives that overlap a flux pulse reaching
        their qubit, are cut at every start and end among them; each piece is split into
        clusters of qubits that interact during it. Consecutive pieces of the same pulses on
        which nothing else happens are joined again
        (:func:`~labqpu.firmware_sim.blocks.merge_consecutive`).
        Blocks on one qubit never overlap, and blocks on different qubits commute, so applying
        them in start order is exact.
        """
        reach = flux_reach(flux_iv, self.device.neighbours)
        singles = single_blocks(drive_iv)
        # Drives on coupled qubits that overlap are joined first; a joined block that a flux
        # pulse reaches on any of its qubits is cut with the flux pulses instead (as a whole:
        # otherwise a drive after a cz on one qubit would be applied, in the joined block,
        # before the cz).
        blocks: list[tuple[int, int, list[int], list[int]]] = []
        joint_drive: dict[int, list[tuple[int, int]]] = {}
        reached = {q: interval_table(ivs) for q, ivs in reach.items()}
        index = single_index(singles)
        for s0, e0, qubits, _ in self._join_adjacent(singles):
            if any(overlaps(reached.get(q), s0, e0) for q in qubits):
                for q, b0, b1 in singles_within(index, qubits, s0, e0):
                    joint_drive.setdefault(q, []).append((b0, b1))
            else:
                blocks.append((s0, e0, qubits, []))
        bounds = sorted({b for ivs in (*joint_drive.values(), *flux_iv.values())
                         for iv in ivs for b in iv})
        # Every interval starts and ends on a bound, so one overlaps [b0, b1) between
        # consecutive bounds exactly when it holds b0.
        driving = {q: interval_table(ivs) for q, ivs in joint_drive.items()}
        fluxing = {q: interval_table(ivs) for q, ivs in flux_iv.items()}
        clusters: dict[tuple[tuple[int, ...], tuple[int, ...]], list[list[int]]] = {}
        for b0, b1 in itertools.pairwise(bounds):
            driven = tuple(q for q, table in driving.items() if covers(table, b0))
            fluxed = tuple(q for q, table in fluxing.items() if covers(table, b0))
            found = clusters.get((driven, fluxed))  # the pieces repeat a few combinations
            if found is None:
                found = clusters[(driven, fluxed)] = self._clusters(list(driven), list(fluxed))
            for cluster in found:
                blocks.append((b0, b1, list(cluster), [q for q in fluxed if q in cluster]))
        return merge_consecutive(blocks, [block_pulses(singles), flux_iv])

    def _join_adjacent(self, blocks: list[tuple[int, int, list[int], list[int]]]
                       ) -> list[tuple[int, int, list[int], list[int]]]:
        """Merge single-qubit drive blocks on coupled qubits that overlap in time into joint
        blocks (start, end, qubits, []): their static ZZ acts while both are driven."""
        blocks = sorted(blocks)
        parent = list(range(len(blocks)))

        def find(i: int) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for i, (_s0, e0, (q0,), _) in enumerate(blocks):
            for j in range(i + 1, len(blocks)):
                s1, _e1, (q1,), _ = blocks[j]
                if s1 >= e0:
                    break
                if self.device.coupling_hz(q0, q1):
                    parent[find(j)] = find(i)
        # A joined block spans its members' whole time range on each of its qubits, so a
        # drive of one of those qubits inside that range joins it too (else the range would be
        # applied twice on that qubit); repeat until no group's span overlaps another's on a
        # shared qubit. Per qubit, the spans on it in start order: a span overlaps an earlier
        # one exactly when it starts before the latest end so far.
        while True:
            groups: dict[int, list[int]] = {}
            for i in range(len(blocks)):
                groups.setdefault(find(i), []).append(i)
            on_qubit: dict[int, list[tuple[int, int, int]]] = {}
            for root, m in groups.items():
                span = (min(blocks[i][0] for i in m), max(blocks[i][1] for i in m), root)
                for q in {blocks[i][2][0] for i in m}:
                    on_qubit.setdefault(q, []).append(span)
            joined = False
            for spans in on_qubit.values():
                spans.sort()
                end, root = spans[0][1], spans[0][2]
                for s0, e0, other in spans[1:]:
                    a, b = find(other), find(root)
                    if s0 < end and a != b:
                        parent[a] = b
                        joined = True
                    if e0 > end:
                        end, root = e0, other
            if not joined:
                break
        out = []
        for members in groups.values():
            qubits = sorted({blocks[i][2][0] for i in members})
            out.append((min(blocks[i][0] for i in members), max(blocks[i][1] for i in members),
                        qubits, []))
        return out

    def _clusters(self, driven: list[int], fluxed: list[int]) -> list[list[int]]:
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for q in driven:
            find(q)
        for i, p in enumerate(driven):  # simultaneous drives on coupled qubits: one block
            for q in driven[i + 1:]:
                if self.device.coupling_hz(p, q):
                    parent[find(q)] = find(p)
        for q in fluxed:
            for nb in self.device.neighbours(q):
                parent[find(nb)] = find(q)
        groups: dict[int, list[int]] = {}
        for q in list(parent):
            groups.setdefault(find(q), []).append(q)
        return [sorted(g) for g in groups.values()]

    def dressed_model(self, phi_dc: dict[int, float]) -> DressedModel:
        """The :class:`DressedModel` of the whole device at DC flux ``phi_dc`` (qubit -> flux
        quanta from the sweet spot), cached per set of bare idle frequencies."""
        freqs = tuple(t.frequency_hz(phi_dc.get(t.index, 0.0)) for t in self.device.qubits)
        model = self._models.get(freqs)
        if model is None:
            model, _ = build_dressed_model(list(freqs),
                                           [t.anharmonicity_hz for t in self.device.qubits],
                                           self.device.couplings)
            if len(self._models) >= 64:
                self._models.clear()
            self._models[freqs] = model
        return model

    def segment_unitary(self, cluster: list[int], b0: int, b1: int, samples: np.ndarray,
                        settings: Settings, fluxed: tuple[int, ...] = ()) -> np.ndarray:
        """Propagator (Schroedinger picture) of ``cluster`` over samples [b0, b1) of rendered
        ``samples``, in the dressed basis and each qubit's dressed frame (first qubit most
        significant), with every qubit outside the cluster in |0>.

        One qubit without flux: its drive propagator (exact). Otherwise the coupled cluster
        with flux pulses on ``fluxed`` (:meth:`_segment_unitary`). For tests and tools; runs
        go through :meth:`evolve`.
        """
        phi_dc = self._phi_dc(settings)
        model = self.dressed_model(phi_dc)
        ctx = _RunContext(samples, settings, phi_dc, model, list(cluster),
                          {q: i for i, q in enumerate(cluster)}, None, {}, np.zeros(1), b0)
        if len(cluster) == 1 and not fluxed:
            q = cluster[0]
            return self._conditional_stack(q, self._drive_hz(ctx, q, b0, b1),
                                           np.zeros((1, LEVELS)), model.local_hz[q][2])[0]
        u = self._segment_unitary(ctx, list(cluster), list(fluxed), b0, b1)
        zz = model.pair_energies(list(cluster))
        fs = self.device.sample_rate_hz
        return np.exp(-2j * np.pi * zz * (b1 - b0) / fs)[:, None] * u

    def _drive_hz(self, ctx: _RunContext, q: int, b0: int, b1: int, offset: bool = True
                  ) -> np.ndarray:
        """Drive term z (Hz) per sample of ``q`` over [b0, b1) in the frame rotating at its
        dressed frequency (zeros when nothing plays); with ``offset`` turned by the phase
        2 pi delta_q t_c of its frequency offset at the block's centre (``noise`` module).
        A read-only view of ``q``'s drive term over the whole program, computed once per run
        (``RunShare.drives``)."""
        line = ctx.share.drives.get(q)
        if line is None:
            cab = self.cabling[q]
            s = ctx.samples[cab.drive_port]
            line = np.zeros(s.size, dtype=np.complex128)
            plays = np.flatnonzero(s)
            if plays.size:  # only then: an undriven qubit's LO need not be in the settings
                lo = self._lo(cab.drive_lo, ctx.settings)
                rabi = self.device.qubits[q].rabi_hz_per_amplitude * self.mixer_gain(lo)
                detuning = lo[0] - ctx.model.freq_hz[q]
                line[plays] = rabi * s[plays].conj() * np.exp(
                    -2j * np.pi * detuning * (plays / self.device.sample_rate_hz))
            line.flags.writeable = False  # shared by every caller of this run
            ctx.share.drives[q] = line
        z = line[b0:b1]
        if offset and ctx.offset_hz.get(q):
            return z * np.exp(1j * self._offset_phase(ctx, q, b0, b1))
        return z

    def _transmon_unitary(self, q: int, drive_hz: np.ndarray | None, flux_phi0: np.ndarray,
                          f_idle_hz: float) -> np.ndarray:
        """Propagator of one transmon in its idle frame under ``drive_hz`` (z per sample, Hz;
        None for no drive) at flux ``flux_phi0`` per sample (flux quanta). Not cached: the
        closed-form kernel (8-10 us for 160 samples) is cheaper than hashing the samples for a
        look-up plus the frame change (about 20 us)."""
        truth = self.device.qubits[q]
        n = flux_phi0.size
        z = np.zeros(n, dtype=np.complex128) if drive_hz is None else drive_hz
        if np.all(flux_phi0 == flux_phi0[0]):
            detuning = np.full(n, truth.frequency_hz(float(flux_phi0[0])) - f_idle_hz)
        else:
            detuning = np.array([truth.frequency_hz(p) for p in flux_phi0]) - f_idle_hz
        return _transmon_propagate_kernel(np.ascontiguousarray(z, dtype=np.complex128),
                                          detuning, truth.anharmonicity_hz,
                                          1.0 / self.device.sample_rate_hz)

    def _acquire(self, i: int, q: int, prog: WireProgram, readout: np.ndarray,
                 settings: Settings, levels: np.ndarray, rng: np.random.Generator,
                 t1_s: float, decimation: int | None = None) -> WindowRecord:
        """The record (IQ per shot, trace decimated by ``decimation`` samples when given) of
        acquisition ``i`` on qubit ``q`` whose level per shot is ``levels`` at the window's
        start; ``readout`` the samples rendered on ``q``'s readout port, from sample 0 to at
        least the window's end; ``t1_s`` its T1 during the window (``readout``)."""
        lo = self._lo(self.cabling[q].readout_lo, settings)
        truth = self.device.qubits[q]
        f_q = truth.frequency_hz(self._flux_dc_phi0(q, settings))
        return acquire_window(truth, self.device.readout, self.device.sample_rate_hz, lo,
                              self.mixer_gain(lo), f_q,
                              readout, int(prog.acq_start[i]),
                              int(prog.acq_duration[i]), float(prog.acq_freq_hz[i]), levels,
                              rng, t1_s, decimation)
