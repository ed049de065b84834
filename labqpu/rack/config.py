"""The lab configuration (``lab.toml``): which instruments exist and what is wired to what.

One file describes one rack. See ``labqpu/data/lab5.toml`` for an annotated example and
``docs/wiring.md`` for the reference.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from labqpu.drivers.controller import DEFAULT_SPIN_S, MAX_SPIN_S
from labqpu.drivers.scpi import (
    DEFAULT_FREQUENCY_RANGE_HZ,
    DEFAULT_MAX_CURRENT_A,
    DEFAULT_POWER_RANGE_DBM,
)
from labqpu.errors import BackendConfigurationError, did_you_mean
from labqpu.pulse.channels import ChannelMap, QubitChannels
from labqpu.rack.builtin import BUILTIN_DEVICES
from labqpu.store.staleness import parse_age_limits

ROLES = ("drive", "flux", "readout", "acquire")
INSTRUMENT_KINDS = ("signal_generator", "current_source")
#: The largest ``max_current_a`` (A) a current source may be given: flux-bias lines carry
#: milliamperes, and a limit written in mA (``10`` for 10 mA) would have let 10 A through.
MAX_CURRENT_LIMIT_A = 1.0


@dataclass(frozen=True)
class ControllerConfig:
    """A controller (AWG + digitizer) reached over ZeroMQ."""

    name: str
    endpoint: str
    sample_rate_hz: float
    outputs: int
    inputs: int
    timeout_s: float = 10.0
    #: How long (s) the host polls for each reply without sleeping (``ControllerClient``).
    reply_spin_s: float = DEFAULT_SPIN_S


@dataclass(frozen=True)
class InstrumentConfig:
    """A VISA instrument: an LO source (``signal_generator``) or a flux-bias ``current_source``.

    ``frequency_range_hz`` (Hz) and ``power_range_dbm`` (dBm) bound what an LO source may be
    set to, ``max_current_a`` (A) the magnitude of a current source's output; the driver
    refuses values outside them, and so does the calibration store on commit.
    """

    name: str
    kind: str
    resource: str
    channels: int = 1
    timeout_s: float = 2.0
    frequency_range_hz: tuple[float, float] = DEFAULT_FREQUENCY_RANGE_HZ
    power_range_dbm: tuple[float, float] = DEFAULT_POWER_RANGE_DBM
    max_current_a: float = DEFAULT_MAX_CURRENT_A


@dataclass(frozen=True)
class LabConfig:
    """A parsed, validated ``lab.toml``."""

    path: Path | None
    device_name: str
    num_qubits: int
    coupling_map: tuple[tuple[int, int], ...]
    controllers: tuple[ControllerConfig, ...]
    instruments: tuple[InstrumentConfig, ...]
    qubits: dict[int, QubitChannels]
    store_path: Path
    seed_snapshot: str | None
    #: The chip's design values (``[calibration] design``, relative to the wiring file), which
    #: calibration reads for what a snapshot does not hold; None: the ones shipped for the
    #: device (``--design`` overrides either).
    design_path: Path | None = None
    raw: dict = field(repr=False, default_factory=dict)

    @cached_property
    def channels(self) -> ChannelMap:
        """What the pulse compiler needs of this wiring: ports, LOs and the sample rate."""
        return ChannelMap(device_name=self.device_name,
                          controllers=tuple(c.name for c in self.controllers),
                          sample_rate_hz=self.controllers[0].sample_rate_hz,
                          qubits=MappingProxyType(dict(self.qubits)),
                          ports=tuple((c.outputs, c.inputs) for c in self.controllers))

    def controller(self, name: str) -> ControllerConfig:
        """The controller called ``name``."""
        for c in self.controllers:
            if c.name == name:
                return c
        raise BackendConfigurationError(f"no controller named {name!r} in the lab configuration")

    def instrument(self, name: str) -> InstrumentConfig:
        """The VISA instrument called ``name``."""
        for i in self.instruments:
            if i.name == name:
                return i
        raise BackendConfigurationError(f"no instrument named {name!r} in the lab configuration")

    def unassigned_addresses(self) -> list[str]:
        """Controllers and TCP instruments whose address has port 0 ("any free port"): only an
        embedded simulator gives them real ports (``with_endpoints``)."""
        out = [f"controller {c.name} ({c.endpoint})" for c in self.controllers
               if tcp_port(c.endpoint) == 0]
        out.extend(f"instrument {i.name} ({i.resource})" for i in self.instruments
                   if tcp_port(i.resource) == 0)
        return out

    def with_endpoints(self, endpoints: dict[str, str]) -> LabConfig:
        """A copy with controller endpoints / VISA resources replaced by ``endpoints`` (by name)."""
        ctrls = tuple(replace(c, endpoint=endpoints.get(c.name, c.endpoint))
                      for c in self.controllers)
        insts = tuple(replace(i, resource=endpoints.get(i.name, i.resource))
                      for i in self.instruments)
        return replace(self, controllers=ctrls, instruments=insts)


def _tcp_host_port(address: str) -> tuple[str, str] | None:
    """(host, port as written) of a controller endpoint (``tcp://host:port``) or of a VISA
    ``TCPIP[n]::host::port::SOCKET`` resource; None for any other address."""
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        return host, port
    parts = address.split("::")
    if (len(parts) != 4 or not parts[0].upper().startswith("TCPIP")
            or parts[3].upper() != "SOCKET"):
        return None
    return parts[1], parts[2]


def tcp_host(address: str) -> str | None:
    """The host of a controller endpoint (``tcp://host:port``) or of a VISA
    ``TCPIP[n]::host::port::SOCKET`` resource; None for any other address."""
    tcp = _tcp_host_port(address)
    return None if tcp is None else tcp[0]


def tcp_port(address: str) -> int | None:
    """The TCP port of a controller endpoint (``tcp://host:port``) or of a VISA
    ``TCPIP[n]::host::port::SOCKET`` resource; None for any other address."""
    tcp = _tcp_host_port(address)
    return int(tcp[1]) if tcp is not None and tcp[1].isdigit() else None


def labqpu_home() -> Path:
    """Where labqpu keeps per-device state: ``$LABQPU_HOME`` (a ``~`` in it expanded: a
    quoted ``'~/labqpu'`` made a new store under each working directory) or, when it is unset
    or empty, ``~/.labqpu``; ``BackendConfigurationError`` when it exists and is not a
    directory."""
    home = Path(os.environ.get("LABQPU_HOME") or Path.home() / ".labqpu").expanduser()
    if home.exists() and not home.is_dir():
        raise BackendConfigurationError(
            f"LABQPU_HOME={home} is not a directory (labqpu keeps each device's calibration "
            "store there)")
    return home


def default_config_path() -> Path:
    """The wiring file of the default device shipped with labqpu (``lab5``)."""
    return builtin_config_path("lab5")


def builtin_config_path(device: str) -> Path:
    """The wiring file of a device shipped with labqpu (one of ``BUILTIN_DEVICES``)."""
    if device not in BUILTIN_DEVICES:
        raise BackendConfigurationError(
            f"no built-in device {device!r}; built-in devices: {', '.join(BUILTIN_DEVICES)}")
    return Path(str(resources.files("labqpu") / "data" / f"{device}.toml"))


def resolve_config_path(config: str | os.PathLike | None) -> tuple[Path, bool]:
    """(wiring file, built in?) of ``config``: None for the default device, the name of a
    built-in device (``"lab10"``), or a path to a ``lab.toml`` (a file of that name wins over
    a built-in name)."""
    if config is None:
        return default_config_path(), True
    if not isinstance(config, str | os.PathLike):
        raise BackendConfigurationError(
            f"the wiring is a lab.toml path or a built-in device name "
            f"({', '.join(BUILTIN_DEVICES)}), got {type(config).__name__} {config!r}")
    path = Path(config)
    if not path.is_file() and str(config) in BUILTIN_DEVICES:
        return builtin_config_path(str(config)), True
    return path, False


_DEVICE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]")
_VISA_PREFIXES = ("TCPIP", "GPIB", "USB", "ASRL")


def _type_name(value: object) -> str:
    """How TOML would call the type of ``value``, for error messages."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class _Where:
    """A place in the wiring file: how messages name it, and its dotted field for errors.

    ``str()`` is the message prefix (``"lab.toml [qubits.3]"``); ``field(key)`` is the
    ``field`` attribute of the error (``"qubits.3.drive"``).
    """

    file: str
    section: str = ""
    label: str = ""

    def __str__(self) -> str:
        return f"{self.file} {self.label}" if self.label else self.file

    def at(self, section: str, label: str) -> _Where:
        """The sub-section ``section`` (dotted), shown as ``label`` in messages."""
        return _Where(self.file, section, label)

    def field(self, key: str = "") -> str:
        """The dotted field of ``key`` in this section (the section itself for ``""``)."""
        return ".".join(part for part in (self.section, key) if part)

    def error(self, message: str, key: str = "") -> BackendConfigurationError:
        """An error whose message starts with this place and whose field is ``key`` here."""
        return BackendConfigurationError(f"{self}{message}", field=self.field(key))


def _table(value: object, where: _Where, what: str = "a table", key: str = "") -> dict:
    """``value`` if it is a table, else an error naming ``where``."""
    if not isinstance(value, dict):
        raise where.error(f" must be {what}, got {_type_name(value)}: {value!r}", key)
    return value


#: The keys each part of a wiring file may hold. ``[simulator]`` is the simulator's to check
#: (``labqpu.firmware_sim.device``); the backend never reads it.
TOP_KEYS = ("device", "calibration", "simulator", "controllers", "instruments", "qubits")
DEVICE_KEYS = ("name", "num_qubits", "coupling_map")
CALIBRATION_KEYS = ("store", "seed_snapshot", "design", "max_age_h")
CONTROLLER_KEYS = ("name", "endpoint", "sample_rate_hz", "outputs", "inputs", "timeout_s",
                   "reply_spin_s")
#: Largest reply timeout of a controller or instrument (s): above it a value in ms is likely,
#: and the provider's start (30 s for hello) could not keep its bound.
MAX_REPLY_TIMEOUT_S = 60.0
#: Most output channels of a current source.
MAX_CHANNELS = 64
INSTRUMENT_KEYS = ("name", "kind", "resource", "channels", "timeout_s")
QUBIT_KEYS = (*ROLES, "drive_lo", "readout_lo", "flux_bias")


def _known_keys(table: dict, known: tuple[str, ...], where: _Where) -> None:
    """An error naming the first key of ``table`` not in ``known`` (a misspelt key would
    otherwise be ignored and its default used), with the nearest known key as a hint."""
    for key in table:
        if key not in known:
            raise where.error(f": unknown key {key!r} (known: {', '.join(known)})"
                              f"{did_you_mean(key, known)}", key)


def _array_of_tables(doc: dict, key: str, where: _Where) -> list[dict]:
    """``doc[key]`` (default ``[]``) checked to be an array of tables (``[[key]]`` entries)."""
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise where.error(
            f" [[{key}]] must be an array of tables (one [[{key}]] header per entry), "
            f"got {_type_name(value)}", key)
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise where.error(
                f" [[{key}]] entry {index}: must be a table, got {_type_name(entry)}: "
                f"{entry!r}", f"{key}[{index}]")
    return value


def _string(table: dict, key: str, where: _Where, *, default: str | None = None,
            nonempty: bool = True) -> str:
    """``table[key]`` checked to be a string (non-empty unless ``nonempty`` is False); a
    missing key takes ``default`` when one is given."""
    value = table.get(key, default) if default is not None else _require(table, key, where)
    if not isinstance(value, str):
        raise where.error(f": {key} must be a string, got {_type_name(value)}: {value!r}", key)
    if nonempty and not value.strip():
        raise where.error(f": {key} must be a non-empty string", key)
    return value


def _check_endpoint(endpoint: str, where: _Where) -> None:
    """A ZeroMQ endpoint the host can connect to: ``tcp://host:port`` or ``ipc://path``."""
    hint = "must be 'tcp://host:port' or 'ipc://path'"
    if endpoint.startswith("ipc://"):
        if not endpoint[len("ipc://"):].strip():
            raise where.error(f": endpoint {hint}, got {endpoint!r} (no path)", "endpoint")
        return
    if not endpoint.startswith("tcp://"):
        raise where.error(f": endpoint {hint}, got {endpoint!r}", "endpoint")
    host, sep, port = endpoint[len("tcp://"):].rpartition(":")
    if not sep or not _HOST.fullmatch(host):
        raise where.error(f": endpoint {hint}, got {endpoint!r}", "endpoint")
    # Port 0 means "pick a free port"; only the simulator can honour it.
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise where.error(
            f": endpoint port must be 0..65535 (0: any free port, simulator only), "
            f"got {endpoint!r}", "endpoint")


def _address(text: str) -> tuple[str, ...] | None:
    """What an endpoint or VISA resource connects to, to tell two apart: (host, port) for TCP
    (``tcp://h:p``, ``TCPIP0::h::p::SOCKET``); an ``ipc://`` path or a serial device path
    (``ASRL/dev/ttyUSB0::INSTR``) as written, since paths tell case apart; another VISA
    resource in capitals, as VISA reads it; None for port 0 (each gets a free port of its
    own)."""
    tcp = _tcp_host_port(text)
    if tcp is None:
        return (text,) if text.startswith("ipc://") or text.upper().startswith("ASRL/") \
            else (text.upper(),)
    port = int(tcp[1])  # checked as digits by _check_endpoint / _check_resource
    return None if port == 0 else (tcp[0].lower(), str(port))


def _one_box_each(controllers: list[ControllerConfig], instruments: list[InstrumentConfig],
                  top: _Where) -> None:
    """Refuse two controllers or instruments at one address: the driver would set one box
    for both, and the read-back check the box it set (a copy-pasted resource left qubit 1's
    drive LO unset, its x pulses doing nothing, with no error)."""
    seen: dict[tuple[str, ...], str] = {}
    for item, address in ([(c, c.endpoint) for c in controllers]
                          + [(i, i.resource) for i in instruments]):
        key = _address(address)
        if key is None:
            continue
        if key in seen:
            raise top.error(f": {seen[key]} and {item.name} are both at {address!r}; each "
                            "controller and instrument needs an address of its own",
                            "instruments")
        seen[key] = item.name


def _check_resource(resource: str, where: _Where) -> None:
    """A VISA resource string.

    ``TCPIP[n]::host::port::SOCKET`` and ``TCPIP[n]::host[::device]::INSTR`` are checked in
    full; for ``GPIB…``, ``USB…`` and ``ASRL…`` only the non-empty ``::``-separated parts are.
    """
    hint = ("must be a VISA resource such as 'TCPIP0::host::port::SOCKET', "
            "'TCPIP0::host::INSTR', 'GPIB0::12::INSTR' or 'USB0::…::INSTR'")
    parts = resource.split("::")
    first = parts[0].upper()
    bad = where.error(f": resource {hint}, got {resource!r}", "resource")
    if (len(parts) < 2 or not all(p.strip() for p in parts)
            or not first.startswith(_VISA_PREFIXES)):
        raise bad
    if not first.startswith("TCPIP"):
        return
    suffix = parts[-1].upper()
    if (not first[len("TCPIP"):].isdigit() and first != "TCPIP") or not _HOST.fullmatch(parts[1]):
        raise bad
    if suffix == "SOCKET":
        port = parts[2] if len(parts) == 4 else ""
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise where.error(
                f": resource must be 'TCPIP[n]::host::port::SOCKET' with port "
                f"0..65535, got {resource!r}", "resource")
    elif suffix != "INSTR" or len(parts) not in (3, 4):
        raise bad


def _port(value: object, where: _Where, key: str) -> tuple[str, int]:
    """A ``"name:port"`` value (``key`` of ``where``) as ``(name, port)``."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise where.error(f" {key} must be 'name:port', got {value!r}", key)
    name, port = value.split(":")
    if not (port.isascii() and port.isdigit()):
        raise where.error(f" {key} port must be a non-negative integer, got {value!r}", key)
    return name, int(port)


def _require(table: dict, key: str, where: _Where) -> object:
    if key not in table:
        raise where.error(f": missing required key {key!r}", key)
    return table[key]


def _number(table: dict, key: str, where: _Where, kind: type, *,
            minimum: float | None = None, maximum: float | None = None,
            default: object = None, why: str = "") -> int | float:
    """``table[key]`` as ``kind`` (int or float), checked against ``minimum`` (exclusive for
    floats, inclusive for ints) and ``maximum`` (inclusive, for values whose unit is easily
    mistaken; ``why`` ends the error of a value above it); a missing key takes ``default``
    when one is given."""
    value = table.get(key, default) if default is not None else _require(table, key, where)
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        what = "an integer" if kind is int else "a number"
        raise where.error(f": {key} must be {what}, got {value!r}", key)
    if isinstance(value, float) and not math.isfinite(value):
        raise where.error(f": {key} must be a finite number, got {value!r}", key)
    if minimum is not None and (value < minimum if kind is int else value <= minimum):
        bound = f">= {minimum}" if kind is int else f"> {minimum:g}"
        raise where.error(f": {key} must be {bound}, got {value!r}", key)
    if maximum is not None and value > maximum:
        raise where.error(f": {key} must be <= {maximum:g}, got {value!r}{why}", key)
    return kind(value)


def _spin(table: dict, where: _Where) -> float:
    """A controller's ``reply_spin_s`` (s): 0 (no busy wait) to ``MAX_SPIN_S``."""
    value = _number(table, "reply_spin_s", where, float, maximum=MAX_SPIN_S,
                    default=DEFAULT_SPIN_S)
    if value < 0:
        raise where.error(f": reply_spin_s must be >= 0, got {value!r}", "reply_spin_s")
    return value + 0.0  # -0.0 as 0.0


#: The limit keys of an ``[[instruments]]`` table, per kind.
LIMIT_KEYS = {"signal_generator": ("min_frequency_hz", "max_frequency_hz", "min_power_dbm",
                                   "max_power_dbm"),
              "current_source": ("max_current_a",)}


def _range(table: dict, low_key: str, high_key: str, default: tuple[float, float],
           where: _Where, minimum: float | None = None) -> tuple[float, float]:
    low = _number(table, low_key, where, float, default=default[0], minimum=minimum)
    high = _number(table, high_key, where, float, default=default[1])
    if not low < high:
        raise where.error(f": {low_key} ({low!r}) must be below {high_key} ({high!r})", low_key)
    return low, high


def _instrument_limits(table: dict, kind: str, where: _Where) -> dict:
    """The limits an ``[[instruments]]`` table sets, over the driver's defaults; a limit key of
    the other kind is an error naming it."""
    for other, keys in LIMIT_KEYS.items():
        for key in keys:
            if other != kind and key in table:
                raise where.error(f": {key} is a limit of a {other}, not of a {kind}", key)
    if kind == "current_source":
        return {"max_current_a": _number(table, "max_current_a", where, float, minimum=0.0,
                                         maximum=MAX_CURRENT_LIMIT_A,
                                         default=DEFAULT_MAX_CURRENT_A,
                                         why=" (in A: flux-bias lines carry milliamperes, "
                                             "10 mA is 0.01)")}
    return {"frequency_range_hz": _range(table, "min_frequency_hz", "max_frequency_hz",
                                         DEFAULT_FREQUENCY_RANGE_HZ, where, minimum=0.0),
            "power_range_dbm": _range(table, "min_power_dbm", "max_power_dbm",
                                      DEFAULT_POWER_RANGE_DBM, where)}


def load_config(path: str | Path) -> LabConfig:
    """Read and validate a ``lab.toml``; errors name the section and key at fault."""
    path = Path(path)
    if path.is_dir():
        raise BackendConfigurationError(f"lab configuration {path} is a directory; give the "
                                        "wiring file (lab.toml) in it", path=path)
    if not path.is_file():
        hint = ("" if path.suffix else
                f" (no such file, and not a built-in device: {', '.join(BUILTIN_DEVICES)})")
        raise BackendConfigurationError(f"lab configuration file not found: {path}{hint}",
                                        path=path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BackendConfigurationError(f"{path}: not valid TOML (UTF-8): {exc}",
                                        path=path) from exc
    except OSError as exc:
        raise BackendConfigurationError(f"lab configuration {path} cannot be read: "
                                        f"{exc.strerror or exc}", path=path) from exc
    return parse_config(doc, path)


def parse_config(doc: dict, path: Path | None = None) -> LabConfig:
    """Validate a configuration document already parsed from TOML.

    Every ``BackendConfigurationError`` names ``path`` (when given) in its message and its ``path``
    attribute, and the dotted ``field`` at fault where a single key is.
    """
    try:
        return _parse_config(doc, path)
    except BackendConfigurationError as exc:
        if path is not None and not exc.path:
            exc.path = str(path)
        raise


def _parse_config(doc: dict, path: Path | None) -> LabConfig:
    top = _Where(str(path) if path else "lab configuration")
    _known_keys(doc, TOP_KEYS, top)
    device = top.at("device", "[device]")
    dev = _table(_require(doc, "device", top), device)
    _known_keys(dev, DEVICE_KEYS, device)
    name = _string(dev, "name", device)
    if not _DEVICE_NAME.fullmatch(name) or name in (".", ".."):
        raise device.error(
            f": name must be letters, digits, '_', '.' or '-' (it names the calibration store "
            f"folder), got {name!r}", "name")
    n = _number(dev, "num_qubits", device, int, minimum=1)
    edges = dev.get("coupling_map", [])
    if not isinstance(edges, list):
        raise device.error(f" coupling_map must be an array of [a, b] edges, got "
                           f"{_type_name(edges)}: {edges!r}", "coupling_map")
    cmap = []
    for edge in edges:
        if (not isinstance(edge, list) or len(edge) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in edge)):
            raise device.error(f" coupling_map: each edge must be [a, b], got {edge!r}",
                               "coupling_map")
        a, b = edge
        if not (0 <= a < n and 0 <= b < n) or a == b:
            raise device.error(f" coupling_map has a bad edge ({a}, {b})", "coupling_map")
        if (a, b) in cmap or (b, a) in cmap:
            raise device.error(f" coupling_map lists the edge ({a}, {b}) twice (edges are "
                               "undirected)", "coupling_map")
        cmap.append((a, b))
    cmap = tuple(cmap)

    controllers = []
    for index, c in enumerate(_array_of_tables(doc, "controllers", top)):
        w = top.at(f"controllers[{index}]", f"[[controllers]] {c.get('name', '?')}")
        _known_keys(c, CONTROLLER_KEYS, w)
        ctrl_name = _string(c, "name", w)
        endpoint = _string(c, "endpoint", w)
        _check_endpoint(endpoint, w)
        controllers.append(ControllerConfig(
            name=ctrl_name, endpoint=endpoint,
            # in Hz: a rate of at most 1 MHz is a value in GHz or MHz
            sample_rate_hz=_number(c, "sample_rate_hz", w, float, minimum=1e6),
            outputs=_number(c, "outputs", w, int, minimum=1),
            inputs=_number(c, "inputs", w, int, minimum=1),
            timeout_s=_number(c, "timeout_s", w, float, minimum=0.0,
                              maximum=MAX_REPLY_TIMEOUT_S, default=10.0),
            reply_spin_s=_spin(c, w),
        ))
    if not controllers:
        raise top.error(": no [[controllers]] defined", "controllers")
    if len({c.sample_rate_hz for c in controllers}) != 1:
        raise top.error(": all controllers must share one sample rate", "controllers")

    instruments = []
    for index, i in enumerate(_array_of_tables(doc, "instruments", top)):
        w = top.at(f"instruments[{index}]", f"[[instruments]] {i.get('name', '?')}")
        _known_keys(i, INSTRUMENT_KEYS + tuple(k for ks in LIMIT_KEYS.values() for k in ks), w)
        inst_name = _string(i, "name", w)
        kind = _string(i, "kind", w)
        if kind not in INSTRUMENT_KINDS:
            raise w.error(f": kind must be one of {INSTRUMENT_KINDS}, got {kind!r}", "kind")
        resource = _string(i, "resource", w)
        _check_resource(resource, w)
        instruments.append(InstrumentConfig(
            name=inst_name, kind=kind, resource=resource,
            channels=_number(i, "channels", w, int, minimum=1, maximum=MAX_CHANNELS,
                             default=1),
            timeout_s=_number(i, "timeout_s", w, float, minimum=0.0,
                              maximum=MAX_REPLY_TIMEOUT_S, default=2.0),
            **_instrument_limits(i, kind, w),
        ))
    names = [c.name for c in controllers] + [i.name for i in instruments]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise top.error(f": controller and instrument names must be unique; {twice} appear "
                        "more than once", "instruments")
    _one_box_each(controllers, instruments, top)
    ctrl_by_name = {c.name: c for c in controllers}
    inst_by_name = {i.name: i for i in instruments}

    qubits: dict[int, QubitChannels] = {}
    qubit_tables = _table(doc.get("qubits", {}), top.at("qubits", "[qubits]"),
                          "a table of [qubits.N] tables")
    for key, q in qubit_tables.items():
        w = top.at(f"qubits.{key}", f"[qubits.{key}]")
        if not (key.isascii() and key.isdigit()) or int(key) >= n:
            raise w.error(f": qubit index must be 0..{n - 1}")
        if key != str(int(key)):  # [qubits.01] beside [qubits.1] silently replaced it
            raise w.error(f": write the qubit index without leading zeros, [qubits.{int(key)}]")
        _table(q, w)
        _known_keys(q, QUBIT_KEYS, w)
        ports = {}
        for role in ROLES:
            ctrl, port = _port(_require(q, role, w), w, role)
            if ctrl not in ctrl_by_name:
                raise w.error(f" {role}: unknown controller {ctrl!r}", role)
            limit = ctrl_by_name[ctrl].inputs if role == "acquire" else ctrl_by_name[ctrl].outputs
            if port >= limit:
                kind = "inputs" if role == "acquire" else "outputs"
                raise w.error(f" {role}: port {port} does not exist on {ctrl} (its {limit} "
                              f"{kind} are ports 0-{limit - 1})", role)
            ports[role] = (ctrl, port)
        for role, kind in (("drive_lo", "signal_generator"), ("readout_lo", "signal_generator")):
            src = _string(q, role, w)
            if src not in inst_by_name or inst_by_name[src].kind != kind:
                raise w.error(f" {role}: {src!r} is not a {kind} of this rack", role)
        flux_src, flux_ch = _port(_require(q, "flux_bias", w), w, "flux_bias")
        inst = inst_by_name.get(flux_src)
        if inst is None or inst.kind != "current_source" or not 1 <= flux_ch <= inst.channels:
            raise w.error(f" flux_bias: {q['flux_bias']!r} is not a channel of a current_source",
                          "flux_bias")
        qubits[int(key)] = QubitChannels(
            drive=ports["drive"], flux=ports["flux"], readout=ports["readout"],
            acquire=ports["acquire"], drive_lo=q["drive_lo"], readout_lo=q["readout_lo"],
            flux_bias=(flux_src, flux_ch),
        )
    if sorted(qubits) != list(range(n)):
        missing = sorted(set(range(n)) - set(qubits))
        raise top.error(f": no wiring for qubit(s) {missing}", f"qubits.{missing[0]}")
    owners: dict[tuple[str, int], str] = {}
    for q, wiring in sorted(qubits.items()):
        for role in ("drive", "flux", "readout"):
            port = getattr(wiring, role)
            if port in owners:
                raise top.at(f"qubits.{q}", f"[qubits.{q}]").error(
                    f" {role}: output {port[0]}:{port[1]} is already the {owners[port]}", role)
            owners[port] = f"{role} of qubit {q}"
    acquire_owners: dict[tuple[str, int], int] = {}
    for q, wiring in sorted(qubits.items()):
        if wiring.acquire in acquire_owners:
            raise top.at(f"qubits.{q}", f"[qubits.{q}]").error(
                f" acquire: input {wiring.acquire[0]}:{wiring.acquire[1]} is already the "
                f"acquire input of qubit {acquire_owners[wiring.acquire]}", "acquire")
        acquire_owners[wiring.acquire] = q

    calibration = top.at("calibration", "[calibration]")
    cal = _table(doc.get("calibration", {}), calibration)
    _known_keys(cal, CALIBRATION_KEYS, calibration)
    try:
        parse_age_limits(cal.get("max_age_h", {}), defaults=False)
    except ValueError as exc:  # "lab configuration [calibration(.max_age_h)] ..."
        detail = str(exc).removeprefix("lab configuration ")
        if detail.startswith("[calibration.max_age_h] "):
            detail = detail.removeprefix("[calibration.max_age_h] ")
            ages = top.at("calibration.max_age_h", "[calibration.max_age_h]")
            raise ages.error(f" {detail}", detail.partition(":")[0]) from exc
        raise calibration.error(f" {detail.removeprefix('[calibration] ')}", "max_age_h") from exc
    store = _string(cal, "store", calibration, default="", nonempty=False)
    seed_snapshot = _string(cal, "seed_snapshot", calibration, default="", nonempty=False)
    design = _string(cal, "design", calibration, default="", nonempty=False)
    if store:
        store_path = _beside(Path(store), path)
        if store_path.is_dir():  # SQLite's own words: "unable to open database file"
            raise calibration.error(f" store: {store_path} is a directory; a store is a file "
                                    f"(e.g. {store_path / 'calibration.sqlite'})", "store")
    else:
        store_path = labqpu_home() / name / "calibration.sqlite"
    return LabConfig(
        path=path, device_name=name, num_qubits=n, coupling_map=cmap,
        controllers=tuple(controllers), instruments=tuple(instruments), qubits=qubits,
        store_path=store_path, seed_snapshot=seed_snapshot or None,
        design_path=_beside(Path(design), path) if design else None, raw=doc,
    )


def _beside(file: Path, wiring: Path | None) -> Path:
    """``file`` (from a wiring file's ``[calibration]``) whole: a relative one is taken from
    the wiring file's directory."""
    file = file.expanduser()
    return wiring.absolute().parent / file if not file.is_absolute() and wiring is not None \
        else file
