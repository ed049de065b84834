"""Pulse-level physics of the simulated device.

The controller renders what it was told to play (waveform x amplitude x NCO) into samples per
output port. This module turns those samples, the LO frequencies and powers set over VISA, and
the DC flux bias into the qubits' evolution, then into IQ points on the acquisition inputs.
It never sees gate names.

Model (spine level; issue "physics" deepens it):

* Each transmon has three levels: H/h = (f(Phi) - f_idle) n + (alpha / 2) n (n - 1) in the frame
  rotating at its idle frequency f_idle = f(Phi_dc). Frequencies follow the symmetric-SQUID
  transmon law of :meth:`QubitTruth.frequency_hz`.
* Drive: an IQ mixer outputs Re[s(t) exp(i 2 pi f_LO t)] (upper sideband at f_LO + IF for a
  sample stream rotating at +IF). In a frame rotating at f_frame, with the rotating-wave
  approximation, the drive is (R / 2) (z a^dag + z* a) with
  z_k = g_mix conj(s_k) exp(-i 2 pi (f_LO - f_frame) t_k), s_k the rendered drive sample, R the
  Rabi frequency per unit amplitude and g_mix the mixer's conversion gain for the LO power it
  gets (0 when the LO output is off). A detuned LO leaves a residual rotation of z, so the pulse
  rotates about a wandering axis, as on hardware. A play phase phi turns the rotation axis by
  -phi.
* Flux pulses move a qubit's frequency; while one plays, the qubit and its coupled neighbours
  evolve jointly under g (a^dag b + a b^dag), exactly (piecewise-constant samples, zero-order hold),
  in a common rotating frame; the result is transformed back into each qubit's idle frame. The
  |11>-|20> avoided crossing makes a suitably shaped flux pulse a CZ. Coupling outside flux pulses
  (static ZZ) is not modelled yet.
* Every sample is propagated exactly: U_k = exp(-i 2 pi H_k dt) from the eigendecomposition.
  Propagators are cached by their inputs, a drive's phase is applied to a cached unitary as a
  frame change, and single-qubit channels are composed per qubit before they touch the
  density matrix (``propagation`` module; docs/simulator.md, "Propagation and caching").
* T1 (ladder decay, rate n / T1) and pure dephasing (T_phi from T2) act on each qubit through the
  exact solution of its Lindblad equation over each interval, applied after the unitary of a pulse.
  Between pulses that solution includes the idle Hamiltonian (alpha / 2) n (n - 1), so |2> gains
  phase exp(-i 2 pi alpha t) while a qubit idles and leakage interferes correctly between pulses.
* Readout: the qubit populations at the start of an acquisition are sampled per shot; the
  resonator (dispersive shift chi, linewidth kappa) transmits the readout tone with the
  state-dependent Lorentzian response; relaxation during the window mixes responses; white noise
  is averaged over the window. The tone frequency is estimated from the played samples.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.linalg
from numba import njit

from labqpu.errors import SimulationError
from labqpu.firmware_sim.device import DeviceTruth, QubitCabling
from labqpu.firmware_sim.propagation import (
    PropagatorCache,
    _transmon_propagate_kernel,
    drive_phase_key,
    rotate_drive_phase,
)

LEVELS = 3
#: Bounds of the propagator caches (entries): a 3x3 unitary is 144 bytes, a cluster's up to
#: 243x243 (0.9 MB, three coupled neighbours of a fluxed qubit).
CACHE_1Q_ENTRIES = 8192
CACHE_NQ_ENTRIES = 256


@njit(cache=True)
def _render_kernel(n_ports, n_samples, play_port, play_start, play_wave, play_amp, play_phase_rad,
                   play_freq_hz, wave_offset, wave_data, sample_rate_hz):
    """Render plays into per-port complex samples: amp * w[k] * exp(i (2 pi f t + phase)).

    ``t`` is the absolute sample time (start + k) / sample_rate_hz, so NCO phase is continuous
    across plays at the same frequency. Overlapping plays on one port add.
    """
    out = np.zeros((n_ports, n_samples), dtype=np.complex128)
    two_pi_over_fs = 2.0 * np.pi / sample_rate_hz
    for i in range(play_port.shape[0]):
        w0 = wave_offset[play_wave[i]]
        w1 = wave_offset[play_wave[i] + 1]
        start = play_start[i]
        step = two_pi_over_fs * play_freq_hz[i]
        rot = np.exp(1j * step)
        ph = play_amp[i] * np.exp(1j * (step * start + play_phase_rad[i]))
        p = play_port[i]
        for k in range(w1 - w0):
            out[p, start + k] += wave_data[w0 + k] * ph
            ph *= rot
            if (k & 63) == 63:
                ph = play_amp[i] * np.exp(1j * (step * (start + k + 1) + play_phase_rad[i]))
    return out


@njit(cache=True)
def _propagate_kernel(h_stack_hz, dt_s):
    """Product of exact per-sample propagators exp(-i 2 pi H_k dt), last sample leftmost.

    ``h_stack_hz`` has shape (n_samples, d, d), Hermitian, in Hz.
    """
    d = h_stack_hz.shape[1]
    u = np.eye(d, dtype=np.complex128)
    for k in range(h_stack_hz.shape[0]):
        evals, evecs = np.linalg.eigh(h_stack_hz[k])
        phases = np.exp(-2j * np.pi * evals * dt_s)
        uk = (evecs * phases) @ evecs.conj().T
        u = uk @ u
    return u


def _ladder(levels: int = LEVELS) -> np.ndarray:
    return np.diag(np.sqrt(np.arange(1, levels, dtype=float)), 1).astype(complex)


def _embed(op: np.ndarray, pos: int, n: int) -> np.ndarray:
    out = np.ones((1, 1), dtype=complex)
    for i in range(n):
        out = np.kron(out, op if i == pos else np.eye(LEVELS))
    return out


@lru_cache(maxsize=256)
def relaxation_superop(t1_s: float, t_phi_s: float, duration_s: float,
                       anharmonicity_hz: float = 0.0) -> np.ndarray:
    """Exact Lindblad channel on one transmon for ``duration_s`` (row-major vec, 9x9).

    Jump operators sqrt(1/T1) a (ladder decay) and sqrt(2/T_phi) n (pure dephasing, so that
    a 0-1 coherence decays as exp(-t/T_phi)). With ``anharmonicity_hz`` = alpha the channel
    also carries the idle Hamiltonian H/h = (alpha / 2) n (n - 1) of the transmon's idle
    rotating frame (|2> gains phase exp(-i 2 pi alpha t)); pass 0 when a pulse's unitary
    already holds that evolution.
    """
    a = _ladder()
    n = a.conj().T @ a
    eye = np.eye(LEVELS)
    jumps = [np.sqrt(1.0 / t1_s) * a]
    if np.isfinite(t_phi_s):
        jumps.append(np.sqrt(2.0 / t_phi_s) * n)
    h = 0.5 * anharmonicity_hz * (n @ n - n)
    liouv = -2j * np.pi * (np.kron(h, eye) - np.kron(eye, h.T))
    for op in jumps:
        opd = op.conj().T @ op
        liouv += np.kron(op, op.conj()) - 0.5 * np.kron(opd, eye) - 0.5 * np.kron(eye, opd.T)
    return scipy.linalg.expm(liouv * duration_s)


@lru_cache(maxsize=16)
def _level_numbers(k: int) -> np.ndarray:
    """Level of each of ``k`` transmons (rows, first most significant) in each basis state
    (columns): the diagonals of n_1 ... n_k."""
    return np.indices((LEVELS,) * k).reshape(k, -1)


@lru_cache(maxsize=16)
def _excitation_numbers(k: int) -> np.ndarray:
    """Total excitation number of each basis state of ``k`` transmons (first most significant)."""
    return _level_numbers(k).sum(axis=0)


@lru_cache(maxsize=16)
def _excitation_mask(k: int) -> np.ndarray:
    """True where row and column of a 3^k x 3^k operator have equal excitation number."""
    e = _excitation_numbers(k)
    return e[:, None] == e[None, :]


@lru_cache(maxsize=16)
def _excitation_blocks(k: int) -> tuple[np.ndarray, ...]:
    """Basis indices of ``k`` transmons grouped by total excitation number."""
    e = _excitation_numbers(k)
    return tuple(np.flatnonzero(e == n) for n in range(int(e.max()) + 1))


def _left_multiply(u: np.ndarray, x: np.ndarray, blocks: tuple[np.ndarray, ...] | None
                   ) -> np.ndarray:
    """u applied to the middle axis of ``x`` (shape (a, m, b)); with ``blocks`` only the
    diagonal blocks of u (u must be block-diagonal on them)."""
    if blocks is None:
        return np.matmul(u, x)
    out = np.empty_like(x)
    for idx in blocks:
        if idx.size == 1:
            out[:, idx, :] = u[idx[0], idx[0]] * x[:, idx, :]
        else:
            out[:, idx, :] = np.matmul(u[np.ix_(idx, idx)], x[:, idx, :])
    return out


class DensityMatrix:
    """Density matrix of ``n`` three-level qubits as a tensor with 2n axes (rows, then columns)."""

    def __init__(self, populations: list[np.ndarray]) -> None:
        self.n = len(populations)
        rho = np.ones((1, 1), dtype=complex)
        for p in populations:
            rho = np.kron(rho, np.diag(p).astype(complex))
        self.tensor = rho.reshape([LEVELS] * (2 * self.n))

    def _left(self, op: np.ndarray, axes: list[int]) -> None:
        k = len(axes)
        opt = op.reshape([LEVELS] * (2 * k))
        t = np.tensordot(opt, self.tensor, axes=(list(range(k, 2 * k)), axes))
        self.tensor = np.moveaxis(t, list(range(k)), axes)

    def apply_unitary(self, u: np.ndarray, targets: list[int]) -> None:
        """rho -> U rho U^dag; U acts on ``targets`` (positions, most significant first).

        For consecutive ascending targets rho is Hermitian-updated as U (U rho)^dag: two
        left multiplications on a reshaped matrix, each restricted to the blocks of equal
        excitation number when U conserves it (a flux pulse without drives does).
        """
        k = len(targets)
        p = targets[0]
        if list(targets) != list(range(p, p + k)):
            self._left(u, targets)
            self._left(u.conj(), [self.n + t for t in targets])
            return
        d = LEVELS**self.n
        m = LEVELS**k
        blocks = _excitation_blocks(k)
        off = np.abs(u[~_excitation_mask(k)]).max(initial=0.0)
        use = blocks if off < 1e-13 else None
        x = _left_multiply(u, self.tensor.reshape(LEVELS**p, m, -1), use)
        x = x.reshape(d, d).conj().T
        x = _left_multiply(u, np.ascontiguousarray(x).reshape(LEVELS**p, m, -1), use)
        self.tensor = x.reshape([LEVELS] * (2 * self.n))

    def apply_superop(self, superop: np.ndarray, target: int) -> None:
        """Apply a one-qubit channel given as a row-major 9x9 superoperator."""
        s = superop.reshape([LEVELS] * 4)
        t = np.tensordot(s, self.tensor, axes=([2, 3], [target, self.n + target]))
        self.tensor = np.moveaxis(t, [0, 1], [target, self.n + target])

    def populations(self) -> np.ndarray:
        """Joint level probabilities, shape (3,)*n, clipped at 0 and renormalised."""
        d = LEVELS**self.n
        p = np.real(np.diagonal(self.tensor.reshape(d, d))).clip(min=0.0)
        return (p / p.sum()).reshape([LEVELS] * self.n)


class _LocalChannels:
    """Single-qubit evolution held back per qubit and applied to the density matrix at once.

    Channels on different qubits commute, so each qubit's idle evolution, single-qubit pulses
    and decoherence are composed into one pending 9x9 superoperator (row-major vec, latest
    leftmost) and applied only when a multi-qubit unitary or the readout needs that qubit.
    ``time`` is the sample up to which each qubit's evolution is accounted for.
    """

    def __init__(self, device: DeviceTruth, rho: DensityMatrix, position: dict[int, int],
                 sample_rate_hz: float) -> None:
        self.device = device
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
            t = self.device.qubits[q]
            self._compose(q, relaxation_superop(t.t1_s, t.t_phi_s,
                                                (until - self.time[q]) / self.fs, alpha_hz))
            self.time[q] = until

    def idle(self, q: int, until: int) -> None:
        """Idle ``q`` up to sample ``until``: decoherence and the idle Hamiltonian (alpha on
        |2>), exactly."""
        self._relax(q, until, self.device.qubits[q].anharmonicity_hz)

    def decohere(self, q: int, until: int) -> None:
        """Decoherence of ``q`` up to ``until`` after a pulse whose unitary (already applied)
        holds the Hamiltonian of that interval."""
        self._relax(q, until, 0.0)

    def unitary(self, q: int, u: np.ndarray) -> None:
        """rho -> u rho u^dag on ``q`` (3x3)."""
        self._compose(q, np.kron(u, u.conj()))

    def flush(self, q: int) -> None:
        """Apply ``q``'s pending channel to the density matrix."""
        superop = self.pending.pop(q, None)
        if superop is not None:
            self.rho.apply_superop(superop, self.position[q])


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


class PhysicsEngine:
    """Evolves the device under a rendered program and produces IQ points per shot."""

    def __init__(self, device: DeviceTruth, cabling: dict[int, QubitCabling]) -> None:
        self.device = device
        self.cabling = cabling
        self._a = _ladder()
        self._n = self._a.conj().T @ self._a
        #: Propagators of single transmons and of coupled clusters, reused across runs.
        self.cache_1q = PropagatorCache(CACHE_1Q_ENTRIES)
        self.cache_nq = PropagatorCache(CACHE_NQ_ENTRIES)

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

    def _lo(self, name: str, settings: Settings) -> tuple[float, float, bool]:
        if name not in settings.los:
            raise SimulationError(f"LO source {name!r} is not part of this rack")
        return settings.los[name]

    def run(self, prog: WireProgram, settings: Settings, shots: int,
            rng: np.random.Generator) -> np.ndarray:
        """Execute ``prog`` for ``shots`` shots; returns complex IQ of shape (shots, n_acq)."""
        ev = self.evolve(prog, settings)
        rho, pos, samples, acq = ev.rho, ev.position, ev.samples, ev.acquisitions
        measured = [q for _, q in acq]
        pops = rho.populations()
        keep = tuple(pos[q] for q in measured)
        drop = tuple(i for i in range(rho.n) if i not in keep)
        marginal = pops.sum(axis=drop) if drop else pops
        marginal = np.transpose(marginal, [sorted(keep).index(k) for k in keep])
        flat = marginal.reshape(-1)
        outcome = rng.choice(flat.size, size=shots, p=flat / flat.sum())
        levels = np.stack(np.unravel_index(outcome, (LEVELS,) * len(measured)), axis=1) \
            if measured else np.zeros((shots, 0), dtype=int)
        iq = np.zeros((shots, len(acq)), dtype=np.complex64)
        for j, (i, q) in enumerate(acq):
            iq[:, j] = self._acquire(i, q, prog, samples, settings, levels[:, j], rng)
        return iq

    def evolve(self, prog: WireProgram, settings: Settings) -> Evolution:
        """Render ``prog`` and evolve the device's density matrix under it (no readout).

        Every qubit the program touches is evolved; a measured qubit up to the start of its
        acquisition, any other qubit up to the end of its last pulse. Raises
        ``SimulationError`` for programs this simulator cannot execute.
        """
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
        peak = np.abs(samples).max(axis=1) if samples.size else np.zeros(n_ports)
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
        acq_qubit = {cab.acquire_port: q for q, cab in self.cabling.items()}

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

        acq = [(i, acq_qubit[int(p)]) for i, p in enumerate(prog.acq_port)]
        measured = [q for _, q in acq]
        if len(set(measured)) != len(measured):
            raise SimulationError(
                "two acquisitions on one qubit in one program (mid-circuit measurement) are not "
                "supported by this simulator version"
            )
        active = set(drive_iv) | set(flux_iv) | set(measured)
        for q in flux_iv:
            active |= set(self.device.neighbours(q))
        order = sorted(active)
        pos = {q: i for i, q in enumerate(order)}

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

        phi_dc = {q: self._flux_dc_phi0(q, settings) for q in order}
        f_idle = {q: self.device.qubits[q].frequency_hz(phi_dc[q]) for q in order}
        p_th = self.device.thermal_population
        rho = DensityMatrix([np.array([1.0 - p_th, p_th, 0.0]) for _ in order])
        local = _LocalChannels(self.device, rho, pos, fs)
        for b0, b1, cluster, fluxed in self._blocks(drive_iv, flux_iv):
            u = self._segment_unitary(cluster, fluxed, b0, b1, samples, settings, phi_dc, f_idle)
            for q in cluster:
                local.idle(q, b0)
            if len(cluster) == 1:
                local.unitary(cluster[0], u)
            else:
                for q in cluster:
                    local.flush(q)
                rho.apply_unitary(u, [pos[q] for q in cluster])
            for q in cluster:
                local.decohere(q, b1)
        for q in measured:
            local.idle(q, acq_time[q])
        for q in order:
            local.flush(q)
        return Evolution(rho=rho, position=pos, samples=samples, acquisitions=acq)

    def _blocks(self, drive_iv: dict[int, list[tuple[int, int]]],
                flux_iv: dict[int, list[tuple[int, int]]]
                ) -> list[tuple[int, int, list[int], list[int]]]:
        """Split the program into blocks (start, end, cluster, fluxed qubits), sorted by start.

        A drive interval (overlapping drive plays merged) on a qubit that no flux pulse
        reaches meanwhile is one single-qubit block over its whole length, so a repeated pulse
        is one repeated block. Flux pulses, and drives that overlap a flux pulse reaching
        their qubit, are cut at every start and end among them; each piece is split into
        clusters of qubits that interact during it. Blocks on one qubit never overlap, and
        blocks on different qubits commute, so applying them in start order is exact.
        """
        reach: dict[int, list[tuple[int, int]]] = {}
        for f, ivs in flux_iv.items():
            for q in (f, *self.device.neighbours(f)):
                reach.setdefault(q, []).extend(ivs)
        blocks: list[tuple[int, int, list[int], list[int]]] = []
        joint_drive: dict[int, list[tuple[int, int]]] = {}
        for q, ivs in drive_iv.items():
            merged: list[list[int]] = []
            for s0, e0 in sorted(ivs):
                if merged and s0 < merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e0)
                else:
                    merged.append([s0, e0])
            for s0, e0 in merged:
                if any(fs < e0 and fe > s0 for fs, fe in reach.get(q, [])):
                    joint_drive.setdefault(q, []).append((s0, e0))
                else:
                    blocks.append((s0, e0, [q], []))
        bounds = sorted({b for ivs in (*joint_drive.values(), *flux_iv.values())
                         for iv in ivs for b in iv})
        for b0, b1 in itertools.pairwise(bounds):
            driven = [q for q, ivs in joint_drive.items()
                      if any(s0 < b1 and e0 > b0 for s0, e0 in ivs)]
            fluxed = [q for q, ivs in flux_iv.items()
                      if any(s0 < b1 and e0 > b0 for s0, e0 in ivs)]
            for cluster in self._clusters(driven, fluxed):
                blocks.append((b0, b1, cluster, [q for q in fluxed if q in cluster]))
        blocks.sort(key=lambda blk: blk[0])
        return blocks

    def _clusters(self, driven: list[int], fluxed: list[int]) -> list[list[int]]:
        parent: dict[int, int] = {}

        def find(x: int) -> int:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for q in driven:
            find(q)
        for q in fluxed:
            for nb in self.device.neighbours(q):
                parent[find(nb)] = find(q)
        groups: dict[int, list[int]] = {}
        for q in list(parent):
            groups.setdefault(find(q), []).append(q)
        return [sorted(g) for g in groups.values()]

    def _segment_unitary(self, cluster: list[int], fluxed: list[int], b0: int, b1: int,
                         samples: np.ndarray, settings: Settings, phi_dc: dict[int, float],
                         f_idle: dict[int, float]) -> np.ndarray:
        """Propagator over samples [b0, b1) of ``cluster``, in each qubit's idle rotating frame.

        Flux and coupling are piecewise constant per sample (zero-order hold). A drive is held
        constant per sample in its own qubit's idle frame; in the common frame of a coupled
        cluster it then rotates within a sample, so samples are split into sub-steps fine
        enough for that rotation (at least 20 per turn).

        Propagators are cached (``self.cache_1q``, ``self.cache_nq``): a single transmon's by
        its phase-normalised drive and flux detuning per sample (the drive's phase is applied
        as a frame change), a coupled cluster's common-frame propagator by its flux samples
        and DC flux context when no drive plays in it.
        """
        fs = self.device.sample_rate_hz
        drives = {}
        for q in cluster:
            cab = self.cabling[q]
            s = samples[cab.drive_port, b0:b1]
            if np.any(s):
                lo = self._lo(cab.drive_lo, settings)
                rabi = self.device.qubits[q].rabi_hz_per_amplitude * self.mixer_gain(lo)
                t = np.arange(b0, b1) / fs
                drives[q] = rabi * s.conj() * np.exp(-2j * np.pi * (lo[0] - f_idle[q]) * t)
        flux_phi = {}
        for q in cluster:
            phi = np.full(b1 - b0, phi_dc[q])
            if q in fluxed:
                flux = samples[self.cabling[q].flux_port, b0:b1].real
                phi = phi + self.device.flux_line_phi0_per_amplitude * flux
            flux_phi[q] = phi
        if len(cluster) == 1:
            return self._transmon_unitary(cluster[0], drives.get(cluster[0]), flux_phi[cluster[0]],
                                          f_idle[cluster[0]])
        key = None
        if not drives:
            key = (tuple(cluster), b1 - b0, *(flux_phi[q].tobytes() for q in cluster),
                   *(f_idle[q] for q in cluster))
            u = self.cache_nq.get(key)
        if key is None or u is None:
            u = self._cluster_common_frame_unitary(cluster, drives, flux_phi, b0, b1, f_idle)
            if key is not None:
                u = self.cache_nq.put(key, u)
        offsets = np.array([f_idle[q] - f_idle[cluster[0]] for q in cluster])
        if np.any(offsets):
            energy = offsets @ _level_numbers(len(cluster))
            r1 = np.exp(2j * np.pi * energy * b1 / fs)
            r0 = np.exp(2j * np.pi * energy * b0 / fs)
            u = (r1[:, None] * u) * r0.conj()[None, :]
        return u

    def _transmon_unitary(self, q: int, drive_hz: np.ndarray | None, flux_phi0: np.ndarray,
                          f_idle_hz: float) -> np.ndarray:
        """Propagator of one transmon in its idle frame under ``drive_hz`` (z per sample, Hz;
        None for no drive) at flux ``flux_phi0`` per sample (flux quanta); cached by the
        phase-normalised drive, the drive's phase applied as a frame change."""
        truth = self.device.qubits[q]
        n = flux_phi0.size
        z = np.zeros(n, dtype=np.complex128) if drive_hz is None else drive_hz
        if np.all(flux_phi0 == flux_phi0[0]):
            detuning = np.full(n, truth.frequency_hz(float(flux_phi0[0])) - f_idle_hz)
        else:
            detuning = np.array([truth.frequency_hz(p) for p in flux_phi0]) - f_idle_hz
        phi, z0, zkey = drive_phase_key(z)
        key = (q, n, zkey, detuning.tobytes())
        u = self.cache_1q.get(key)
        if u is None:
            u = self.cache_1q.put(key, _transmon_propagate_kernel(
                z0, detuning, truth.anharmonicity_hz, 1.0 / self.device.sample_rate_hz))
        return rotate_drive_phase(u, phi)

    def _cluster_common_frame_unitary(self, cluster: list[int], drives: dict[int, np.ndarray],
                                      flux_phi: dict[int, np.ndarray], b0: int, b1: int,
                                      f_idle: dict[int, float]) -> np.ndarray:
        """Propagator of a coupled cluster over [b0, b1) in the frame rotating at the first
        qubit's idle frequency for every qubit (per-sample eigendecomposition)."""
        fs = self.device.sample_rate_hz
        n = len(cluster)
        d = LEVELS**n
        a_ops = [_embed(self._a, i, n) for i in range(n)]
        n_ops = [a.conj().T @ a for a in a_ops]
        f_ref = f_idle[cluster[0]]
        fastest = max([abs(f_idle[q] - f_ref) for q in drives] + [0.0])
        sub = max(1, int(np.ceil(20.0 * fastest / fs)))
        n_steps = (b1 - b0) * sub
        t_sub = (b0 + (np.arange(n_steps) + 0.5) / sub) / fs
        h = np.zeros((n_steps, d, d), dtype=complex)
        for i, q in enumerate(cluster):
            truth = self.device.qubits[q]
            h += 0.5 * truth.anharmonicity_hz * (n_ops[i] @ n_ops[i] - n_ops[i])
            f_q = np.repeat([truth.frequency_hz(p) for p in flux_phi[q]], sub)
            h += (f_q - f_ref)[:, None, None] * n_ops[i]
            if q in drives:
                z = np.repeat(drives[q], sub) * np.exp(-2j * np.pi * (f_idle[q] - f_ref) * t_sub)
                h += 0.5 * (z[:, None, None] * a_ops[i].conj().T
                            + z.conj()[:, None, None] * a_ops[i])
        for i, qa in enumerate(cluster):
            for j, qb in enumerate(cluster[i + 1:], start=i + 1):
                g = self.device.coupling_hz(qa, qb)
                if g:
                    h += g * (a_ops[i].conj().T @ a_ops[j] + a_ops[i] @ a_ops[j].conj().T)
        return _propagate_kernel(h, 1.0 / (fs * sub))

    def _acquire(self, i: int, q: int, prog: WireProgram, samples: np.ndarray,
                 settings: Settings, levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """IQ points (one per shot) of acquisition ``i`` on qubit ``q`` whose level per shot is
        ``levels`` at the window's start."""
        fs = self.device.sample_rate_hz
        truth = self.device.qubits[q]
        cab = self.cabling[q]
        start = int(prog.acq_start[i])
        dur = int(prog.acq_duration[i])
        window = samples[cab.readout_port, start:start + dur]
        lo = self._lo(cab.readout_lo, settings)
        t = np.arange(start, start + dur) / fs
        demod = np.exp(-2j * np.pi * float(prog.acq_freq_hz[i]) * t)
        a_eff = self.mixer_gain(lo) * truth.readout_gain * np.mean(window * demod)
        if window.size > 1 and np.any(window):
            step = np.angle(np.sum(window[1:] * window[:-1].conj()))
            f_tone = lo[0] + step * fs / (2 * np.pi)
        else:
            f_tone = lo[0]
        chi = truth.dispersive_shift_hz
        kappa = truth.resonator_linewidth_hz
        resp = np.array([
            1.0 / (1.0 + 2j * (f_tone - (truth.resonator_hz + chi * (2 * lvl - 1))) / kappa)
            for lvl in range(LEVELS)
        ])
        window_s = dur / fs
        frac = np.zeros((levels.size, LEVELS))
        cur = levels.copy()
        elapsed = np.zeros(levels.size)
        for lvl in (2, 1):
            at = cur == lvl
            tau = rng.exponential(truth.t1_s / lvl, size=levels.size)
            stay = np.where(at, np.minimum(tau, window_s - elapsed), 0.0)
            frac[:, lvl] += stay / window_s
            elapsed += stay
            cur = np.where(at & (elapsed < window_s), lvl - 1, cur)
        frac[:, 0] += np.clip(1.0 - frac.sum(axis=1), 0.0, 1.0)
        sigma = truth.readout_noise_per_sample / np.sqrt(max(dur, 1))
        noise = rng.normal(0.0, sigma, size=(levels.size, 2)) @ np.array([1.0, 1j])
        return a_eff * (frac @ resp) + noise
