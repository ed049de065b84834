"""The simulator's truth: physical device parameters and the rack's cabling.

The device file (``devices/<name>.toml`` or a path) holds what the hardware *is*; the wiring
file (``lab.toml``) says which controller port and which VISA source reaches which qubit.
The simulator reads both; the backend reads only the wiring and what calibration measured.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import MISSING, dataclass, field, replace
from pathlib import Path

from labqpu.errors import did_you_mean
from labqpu.firmware_sim.crosstalk import CrosstalkSpec
from labqpu.firmware_sim.noise import NoiseSpec
from labqpu.firmware_sim.readout import ReadoutPhysics

DEVICES_DIR = Path(__file__).parent / "devices"


@dataclass(frozen=True)
class QubitTruth:
    """True parameters of one flux-tunable transmon and its readout resonator.

    Frequencies in Hz, times in s, currents in A. ``rabi_hz_per_amplitude`` is the Rabi
    frequency produced by a drive sample of amplitude 1.0 with the mixer's LO at nominal power.
    The last two fields are optional in a device file (0 switches their terms off).
    """

    index: int
    max_frequency_hz: float
    anharmonicity_hz: float
    t1_s: float
    t2_s: float
    rabi_hz_per_amplitude: float
    sweet_spot_current_a: float
    phi0_per_ampere: float
    resonator_hz: float
    dispersive_shift_hz: float
    resonator_linewidth_hz: float
    readout_gain: float
    readout_noise_per_sample: float
    #: Qubit-resonator coupling g (Hz): n_crit = ((f_q - f_r) / 2 g)^2 (``readout``); 0: no
    #: measurement-induced transitions.
    resonator_coupling_hz: float = 0.0
    #: Intracavity photons of a full-scale tone on resonance at nominal LO power (``readout``).
    resonator_photons_at_full_scale: float = 0.0

    def frequency_hz(self, flux_phi0: float) -> float:
        """0-1 transition frequency (Hz) at a flux of ``flux_phi0`` flux quanta from the sweet spot.

        Transmon with a symmetric SQUID: E_J scales as |cos(pi * flux)|, f01 = sqrt(8 E_J E_C) - E_C
        with E_C = -anharmonicity.
        """
        ec = -self.anharmonicity_hz
        plasma = (self.max_frequency_hz + ec) * math.sqrt(abs(math.cos(math.pi * flux_phi0)))
        return plasma - ec

    @property
    def t_phi_s(self) -> float:
        """Pure-dephasing time (s) from 1/T2 = 1/(2 T1) + 1/T_phi; ``inf`` when T2 = 2 T1."""
        rate = 1.0 / self.t2_s - 0.5 / self.t1_s
        return math.inf if rate <= 0 else 1.0 / rate


@dataclass(frozen=True)
class DeviceTruth:
    """The whole simulated device: qubits, couplings, noise, crosstalk and shared settings."""

    name: str
    sample_rate_hz: float
    mixer_nominal_lo_power_dbm: float
    flux_line_phi0_per_amplitude: float
    qubits: tuple[QubitTruth, ...]
    couplings: dict[tuple[int, int], float] = field(default_factory=dict)
    noise: NoiseSpec = field(default_factory=NoiseSpec)
    readout: ReadoutPhysics = field(default_factory=ReadoutPhysics)
    #: DC flux and microwave drive crosstalk (``crosstalk`` module); none by default.
    crosstalk: CrosstalkSpec = field(default_factory=CrosstalkSpec)

    def __post_init__(self) -> None:
        n = len(self.qubits)
        for kind, pairs in (("flux", self.crosstalk.flux), ("drive", self.crosstalk.drive)):
            bad = sorted(pair for pair in pairs if max(pair) >= n)
            if bad:
                raise ValueError(f"device {self.name}: {kind} crosstalk (target, source) {bad[0]} "
                                 f"names a qubit outside 0..{n - 1}")

    def neighbours(self, q: int) -> list[int]:
        """Qubits coupled to ``q``."""
        return sorted({b if a == q else a for (a, b) in self.couplings if q in (a, b)})

    def coupling_hz(self, a: int, b: int) -> float:
        """Exchange coupling g (Hz) between ``a`` and ``b``; 0 when they are not coupled."""
        return self.couplings.get((min(a, b), max(a, b)), 0.0)


def load_device(name_or_path: str | Path, *, noise: bool = True) -> DeviceTruth:
    """Load a device file by name (shipped in ``devices/``) or by path.

    With ``noise=False`` the ``[noise]`` table's stochastic terms (flux noise, quasi-static
    noise, drift) are off and its thermal equilibrium is kept (``NoiseSpec.quiet``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DEVICES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"simulator device file not found: {path}")
    with path.open("rb") as f:
        doc = tomllib.load(f)
    dev = doc["device"]
    qubits = tuple(sorted((_qubit_truth(q, path) for q in doc["qubit"]), key=lambda q: q.index))
    if [q.index for q in qubits] != list(range(len(qubits))):
        raise ValueError(f"{path}: qubit indices must be 0..n-1, got {[q.index for q in qubits]}")
    if "thermal_population" in dev:
        raise ValueError(f"{path}: [device] thermal_population is replaced by [noise] "
                         "effective_temperature_k")
    spec = NoiseSpec.from_table(doc.get("noise", {}), str(path))
    couplings = {}
    for c in doc.get("coupling", []):
        a, b = c["qubits"]
        couplings[(min(a, b), max(a, b))] = float(c["g_hz"])
    crosstalk = CrosstalkSpec.from_tables(doc.get("flux_crosstalk", []),
                                          doc.get("drive_crosstalk", []), len(qubits), str(path))
    return DeviceTruth(
        name=dev["name"],
        sample_rate_hz=float(dev["sample_rate_hz"]),
        mixer_nominal_lo_power_dbm=float(dev["mixer_nominal_lo_power_dbm"]),
        flux_line_phi0_per_amplitude=float(dev["flux_line_phi0_per_amplitude"]),
        qubits=qubits,
        couplings=couplings,
        noise=spec if noise else spec.quiet(),
        readout=ReadoutPhysics.from_table(doc.get("readout", {}), str(path)),
        crosstalk=crosstalk,
    )


def _qubit_truth(table: dict, path: Path) -> QubitTruth:
    """One ``[[qubit]]`` table; raises ``ValueError`` naming the file, qubit and field."""
    fields = QubitTruth.__dataclass_fields__
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ValueError(f"{path}: qubit {table.get('index')} has unknown field(s) {unknown}")
    values = {}
    for name, f in fields.items():
        if name in table:
            values[name] = table[name]
        elif f.default is MISSING:
            raise ValueError(f"{path}: qubit {table.get('index')} lacks field {name!r}")
    for name in ("resonator_coupling_hz", "resonator_photons_at_full_scale"):
        value = values.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not 0 <= value < math.inf:
            raise ValueError(f"{path}: qubit {table.get('index')} {name} must be a finite "
                             f"number >= 0, got {value!r}")
    return QubitTruth(**values)


@dataclass(frozen=True)
class QubitCabling:
    """Which controller ports and VISA sources physically reach one qubit.

    Ports are *rack-global*: controller k's output port p is ``output_base + p`` of its
    ``ControllerSpec`` (its input port likewise with ``input_base``), so the physics sees one
    set of ports however many controllers the rack has. With one controller they are the
    controller's own port numbers.
    """

    drive_port: int
    flux_port: int
    readout_port: int
    acquire_port: int
    drive_lo: str
    readout_lo: str
    flux_source: str
    flux_channel: int


@dataclass(frozen=True)
class ControllerSpec:
    """One controller of the rack as the simulator stands it up."""

    name: str
    host: str
    port: int
    sample_rate_hz: float
    outputs: int
    inputs: int
    timing: tuple[tuple[str, int], ...] = ()
    #: Rack-global number of this controller's output port 0 (and input port 0): the sums of
    #: ``outputs`` (``inputs``) of the controllers before it in the wiring.
    output_base: int = 0
    input_base: int = 0


#: The controller ports of a ``[qubits.N]`` table.
_PORT_ROLES = ("drive", "flux", "readout", "acquire")
#: The keys of a wiring file's ``[simulator]`` table (docs/wiring.md).
SIMULATOR_KEYS = ("device", "seed", "noise", "timing", "sync_arm_timeout_s", "faults")
#: Most output channels of a simulated current source (the host's wiring check has the same).
MAX_CHANNELS = 64

#: Timing rules a simulated controller can be told to state and enforce (samples).
TIMING_FIELDS = ("granularity", "min_length", "pulse_alignment", "acquire_alignment")


def _timing(sim: dict, name: str, path: Path) -> tuple[tuple[str, int], ...]:
    """``[simulator.timing.<controller>]``: the timing rules the simulated controller states
    in ``hello`` and enforces on upload (a real controller states its own)."""
    table = sim.get("timing", {}).get(name, {})
    out = []
    for key, value in table.items():
        if key not in TIMING_FIELDS:
            raise ValueError(f"{path}: [simulator.timing.{name}] has unknown key {key!r}; "
                             f"known: {', '.join(TIMING_FIELDS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: [simulator.timing.{name}] {key} must be a positive "
                             f"whole number of samples, got {value!r}")
        out.append((key, value))
    return tuple(out)


@dataclass(frozen=True)
class InstrumentSpec:
    """One VISA instrument of the rack as the simulator stands it up."""

    name: str
    kind: str
    host: str
    port: int
    channels: int
    #: Limits from the wiring file (``min_frequency_hz`` ... ``max_current_a``), passed to the
    #: simulated instrument so that it refuses what the real one would.
    limits: dict[str, float] = field(default_factory=dict)


#: The limit keys of an ``[[instruments]]`` table each kind of simulated instrument takes.
INSTRUMENT_LIMIT_KEYS = {
    "signal_generator": ("min_frequency_hz", "max_frequency_hz", "min_power_dbm",
                         "max_power_dbm"),
    "current_source": ("max_current_a",),
}


@dataclass(frozen=True)
class Rack:
    """The wiring as the simulator needs it (parsed from ``lab.toml``)."""

    device_name: str
    controllers: tuple[ControllerSpec, ...]
    instruments: tuple[InstrumentSpec, ...]
    cabling: dict[int, QubitCabling]
    simulator_device: str
    simulator_seed: int | None
    #: ``[simulator] noise``: False switches the device file's flux noise, quasi-static
    #: noise and drift off (``noise`` module); thermal equilibrium stays.
    simulator_noise: bool = True
    #: ``[simulator] sync_arm_timeout_s``: how long a synchronised run's leader waits for its
    #: followers to arm (s; ``sync`` module); None: the simulator's default.
    simulator_arm_timeout_s: float | None = None

    def with_ports(self, ports: dict[str, int]) -> Rack:
        """A copy whose controllers and instruments named in ``ports`` listen on those ports
        (a restarted simulator takes the ports its clients know); ``ValueError`` for a name
        the wiring does not have."""
        names = {c.name for c in self.controllers} | {i.name for i in self.instruments}
        unknown = sorted(set(ports) - names)
        if unknown:
            raise ValueError(f"ports for {unknown}: the wiring has no such controller or "
                             f"instrument (it has {sorted(names)})")
        return replace(
            self,
            controllers=tuple(replace(c, port=ports.get(c.name, c.port))
                              for c in self.controllers),
            instruments=tuple(replace(i, port=ports.get(i.name, i.port))
                              for i in self.instruments))


def _split_port(value: str, what: str) -> tuple[str, int]:
    name, sep, port = value.partition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"wiring: {what} must look like 'name:port', got {value!r}")
    return name, int(port)


def _host_port_from_tcp(endpoint: str) -> tuple[str, int]:
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"wiring: controller endpoint must be tcp://host:port, got {endpoint!r}")
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    return host, _port(port, endpoint)


def _port(text: str, address: str) -> int:
    """The TCP port of ``address``: 0 (any free port) to 65535 (getaddrinfo wraps a larger
    number: 93071 became 27535)."""
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"wiring: {address!r} has port {port}; TCP ports are 0-65535")
    return port


def _host_port_from_visa(resource: str) -> tuple[str, int]:
    parts = resource.split("::")
    if len(parts) != 4 or not parts[0].upper().startswith("TCPIP") or parts[3].upper() != "SOCKET":
        raise ValueError(
            f"wiring: the simulator serves TCPIP::host::port::SOCKET resources, got {resource!r}"
        )
    return parts[1], _port(parts[2], resource)


def load_rack(path: str | Path) -> Rack:
    """Parse the parts of a ``lab.toml`` the simulator needs; ``path`` may also be relative.

    The wiring may have any number (>= 1) of ``[[controllers]]``, all at one sample rate;
    each qubit's ports may be on any of them. Raises ``ValueError`` naming the file (and the
    controller, or the qubit and role) for a wiring the simulator cannot stand up.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML (UTF-8): {exc}") from exc
    try:
        return _rack(path, doc)
    except KeyError as exc:
        raise ValueError(f"{path}: a required key is missing: {exc} (`labqpu status --config "
                         f"{path}` names its section)") from exc
    except (TypeError, AttributeError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: {exc}") from exc


def _rack(path: Path, doc: dict) -> Rack:
    """:func:`load_rack` of the parsed ``doc``."""
    controllers: list[ControllerSpec] = []
    sim = doc.get("simulator", {})
    if not isinstance(sim, dict):
        raise ValueError(f"{path}: [simulator] must be a table, got {sim!r}")
    for key in sim:
        if key not in SIMULATOR_KEYS:
            raise ValueError(f"{path}: [simulator] has unknown key {key!r} (known: "
                             f"{', '.join(SIMULATOR_KEYS)}){did_you_mean(key, SIMULATOR_KEYS)}")
    out_base = in_base = 0
    for c in doc.get("controllers", []):
        host, port = _host_port_from_tcp(c["endpoint"])
        spec = ControllerSpec(c["name"], host, port, float(c["sample_rate_hz"]),
                              int(c["outputs"]), int(c["inputs"]), _timing(sim, c["name"], path),
                              output_base=out_base, input_base=in_base)
        if any(other.name == spec.name for other in controllers):
            raise ValueError(f"{path}: two controllers are named {spec.name!r}")
        if spec.outputs < 0 or spec.inputs < 0:
            raise ValueError(f"{path}: controller {spec.name} has a negative number of outputs "
                             "or inputs")
        if controllers and spec.sample_rate_hz != controllers[0].sample_rate_hz:
            raise ValueError(
                f"{path}: controller {spec.name} runs at {spec.sample_rate_hz} Hz, controller "
                f"{controllers[0].name} at {controllers[0].sample_rate_hz} Hz; the simulator "
                "needs every controller of a rack at the device's sample rate")
        controllers.append(spec)
        out_base += spec.outputs
        in_base += spec.inputs
    if not controllers:
        raise ValueError(f"{path}: the wiring has no [[controllers]]")
    by_name = {c.name: c for c in controllers}
    for name in sim.get("timing", {}):
        if name not in by_name:
            where = (" (timing rules go in [simulator.timing.<controller>])"
                     if name in TIMING_FIELDS else "")
            raise ValueError(f"{path}: [simulator.timing.{name}] names no controller of the "
                             f"wiring (it has {', '.join(by_name)}){where}")
    instruments = []
    for i in doc.get("instruments", []):
        host, port = _host_port_from_visa(i["resource"])
        channels = i.get("channels", 1)
        if isinstance(channels, bool) or not isinstance(channels, int) \
                or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"{path}: instrument {i['name']}: channels must be an integer "
                             f"1..{MAX_CHANNELS}, got {channels!r}")
        own = INSTRUMENT_LIMIT_KEYS.get(i["kind"], ())
        other = [key for keys in INSTRUMENT_LIMIT_KEYS.values() for key in keys
                 if key in i and key not in own]
        if other:
            raise ValueError(f"{path}: instrument {i['name']}: {other[0]} is no limit of a "
                             f"{i['kind']} (it takes {', '.join(own) or 'none'})")
        instruments.append(InstrumentSpec(i["name"], i["kind"], host, port, channels,
                                          {key: float(i[key]) for key in own if key in i}))
    cabling = {}
    for key, q in doc.get("qubits", {}).items():
        if not (key.isascii() and key.isdigit()) or key != str(int(key)):
            raise ValueError(f"{path}: [qubits.{key}]: a qubit index is a number without "
                             "leading zeros")
        missing = [k for k in (*_PORT_ROLES, "drive_lo", "readout_lo", "flux_bias") if k not in q]
        if missing:
            raise ValueError(f"{path}: [qubits.{key}] has no {', '.join(missing)}")
        ports = {}
        for role in _PORT_ROLES:
            name, port = _split_port(q[role], f"qubit {key} {role}")
            ctrl = by_name.get(name)
            if ctrl is None:
                raise ValueError(f"{path}: qubit {key} {role} names unknown controller {name!r}; "
                                 f"the wiring has {sorted(by_name)}")
            kind, count, base = (("input", ctrl.inputs, ctrl.input_base) if role == "acquire"
                                 else ("output", ctrl.outputs, ctrl.output_base))
            if port >= count:
                raise ValueError(f"{path}: qubit {key} {role} is {q[role]!r}, but controller "
                                 f"{name} has {kind}s 0..{count - 1}")
            ports[role] = base + port
        source, channel = _split_port(q["flux_bias"], f"qubit {key} flux_bias")
        cabling[int(key)] = QubitCabling(
            drive_port=ports["drive"], flux_port=ports["flux"], readout_port=ports["readout"],
            acquire_port=ports["acquire"], drive_lo=q["drive_lo"], readout_lo=q["readout_lo"],
            flux_source=source, flux_channel=channel,
        )
    noise = sim.get("noise", True)
    if not isinstance(noise, bool):
        raise ValueError(f"{path}: [simulator] noise must be true or false, got {noise!r}")
    arm_timeout = sim.get("sync_arm_timeout_s")
    if arm_timeout is not None and (isinstance(arm_timeout, bool)
                                    or not isinstance(arm_timeout, int | float)
                                    or not 0 < arm_timeout < math.inf):
        raise ValueError(f"{path}: [simulator] sync_arm_timeout_s must be a number > 0 s, got "
                         f"{arm_timeout!r}")
    seed = sim.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{path}: [simulator] seed must be an integer >= 0, got {seed!r}")
    name = doc.get("device", {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{path}: [device] name must be a non-empty string, got {name!r}")
    device_ref = sim.get("device", name)
    if Path(device_ref).suffix:
        device_ref = str((path.parent / device_ref).resolve())
    return Rack(
        device_name=name,
        controllers=tuple(controllers),
        instruments=tuple(instruments),
        cabling=cabling,
        simulator_device=device_ref,
        simulator_seed=seed,
        simulator_noise=noise,
        simulator_arm_timeout_s=None if arm_timeout is None else float(arm_timeout),
    )
