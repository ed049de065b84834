"""The lab configuration (``lab.toml``): which instruments exist and what is wired to what.

One file describes one rack. See ``labqpu/data/lab5.toml`` for an annotated example and
``docs/wiring.md`` for the reference.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from labqpu.backend.errors import ConfigurationError

ROLES = ("drive", "flux", "readout", "acquire")
INSTRUMENT_KINDS = ("signal_generator", "current_source")


@dataclass(frozen=True)
class ControllerConfig:
    """A controller (AWG + digitizer) reached over ZeroMQ."""

    name: str
    endpoint: str
    sample_rate_hz: float
    outputs: int
    inputs: int
    timeout_s: float = 10.0


@dataclass(frozen=True)
class InstrumentConfig:
    """A VISA instrument: an LO source (``signal_generator``) or a flux-bias ``current_source``."""

    name: str
    kind: str
    resource: str
    channels: int = 1
    timeout_s: float = 2.0


@dataclass(frozen=True)
class QubitWiring:
    """Where one qubit's signals go: controller ports and VISA sources."""

    drive: tuple[str, int]
    flux: tuple[str, int]
    readout: tuple[str, int]
    acquire: tuple[str, int]
    drive_lo: str
    readout_lo: str
    flux_bias: tuple[str, int]


@dataclass(frozen=True)
class LabConfig:
    """A parsed, validated ``lab.toml``."""

    path: Path | None
    device_name: str
    num_qubits: int
    coupling_map: tuple[tuple[int, int], ...]
    controllers: tuple[ControllerConfig, ...]
    instruments: tuple[InstrumentConfig, ...]
    qubits: dict[int, QubitWiring]
    store_path: Path
    seed_snapshot: str | None
    raw: dict = field(repr=False, default_factory=dict)

    def controller(self, name: str) -> ControllerConfig:
        """The controller called ``name``."""
        for c in self.controllers:
            if c.name == name:
                return c
        raise ConfigurationError(f"no controller named {name!r} in the lab configuration")

    def instrument(self, name: str) -> InstrumentConfig:
        """The VISA instrument called ``name``."""
        for i in self.instruments:
            if i.name == name:
                return i
        raise ConfigurationError(f"no instrument named {name!r} in the lab configuration")

    def with_endpoints(self, endpoints: dict[str, str]) -> LabConfig:
        """A copy with controller endpoints / VISA resources replaced by ``endpoints`` (by name)."""
        ctrls = tuple(replace(c, endpoint=endpoints.get(c.name, c.endpoint))
                      for c in self.controllers)
        insts = tuple(replace(i, resource=endpoints.get(i.name, i.resource))
                      for i in self.instruments)
        return replace(self, controllers=ctrls, instruments=insts)


def labqpu_home() -> Path:
    """Where labqpu keeps per-device state: ``$LABQPU_HOME`` or ``~/.labqpu``."""
    return Path(os.environ.get("LABQPU_HOME", Path.home() / ".labqpu"))


def default_config_path() -> Path:
    """The wiring file of the default device shipped with labqpu (``lab5``)."""
    return Path(str(resources.files("labqpu") / "data" / "lab5.toml"))


def _port(value: object, where: str) -> tuple[str, int]:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigurationError(f"{where} must be 'name:port', got {value!r}")
    name, port = value.split(":")
    if not port.isdigit():
        raise ConfigurationError(f"{where} port must be a non-negative integer, got {value!r}")
    return name, int(port)


def _require(table: dict, key: str, where: str) -> object:
    if key not in table:
        raise ConfigurationError(f"{where}: missing required key {key!r}")
    return table[key]


def _number(table: dict, key: str, where: str, kind: type, *, minimum: float | None = None,
            default: object = None) -> int | float:
    """``table[key]`` as ``kind`` (int or float), checked against ``minimum`` (exclusive for
    floats, inclusive for ints); a missing key takes ``default`` when one is given."""
    value = table.get(key, default) if default is not None else _require(table, key, where)
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        what = "an integer" if kind is int else "a number"
        raise ConfigurationError(f"{where}: {key} must be {what}, got {value!r}")
    if minimum is not None and (value < minimum if kind is int else value <= minimum):
        bound = f">= {minimum}" if kind is int else f"> {minimum}"
        raise ConfigurationError(f"{where}: {key} must be {bound}, got {value!r}")
    return kind(value)


def load_config(path: str | Path) -> LabConfig:
    """Read and validate a ``lab.toml``; errors name the section and key at fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"lab configuration file not found: {path}")
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(doc, path)


def parse_config(doc: dict, path: Path | None = None) -> LabConfig:
    """Validate a configuration document already parsed from TOML."""
    where = str(path) if path else "lab configuration"
    dev = _require(doc, "device", where)
    name = str(_require(dev, "name", f"{where} [device]"))
    n = _number(dev, "num_qubits", f"{where} [device]", int, minimum=1)
    cmap = []
    for edge in dev.get("coupling_map", []):
        if (not isinstance(edge, list) or len(edge) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in edge)):
            raise ConfigurationError(
                f"{where} [device] coupling_map: each edge must be [a, b], got {edge!r}")
        a, b = edge
        if not (0 <= a < n and 0 <= b < n) or a == b:
            raise ConfigurationError(f"{where} [device] coupling_map has a bad edge ({a}, {b})")
        cmap.append((a, b))
    cmap = tuple(cmap)

    controllers = []
    for c in doc.get("controllers", []):
        w = f"{where} [[controllers]] {c.get('name', '?')}"
        controllers.append(ControllerConfig(
            name=str(_require(c, "name", w)), endpoint=str(_require(c, "endpoint", w)),
            sample_rate_hz=_number(c, "sample_rate_hz", w, float, minimum=0.0),
            outputs=_number(c, "outputs", w, int, minimum=1),
            inputs=_number(c, "inputs", w, int, minimum=1),
            timeout_s=_number(c, "timeout_s", w, float, minimum=0.0, default=10.0),
        ))
    if not controllers:
        raise ConfigurationError(f"{where}: no [[controllers]] defined")
    if len({c.sample_rate_hz for c in controllers}) != 1:
        raise ConfigurationError(f"{where}: all controllers must share one sample rate")

    instruments = []
    for i in doc.get("instruments", []):
        w = f"{where} [[instruments]] {i.get('name', '?')}"
        kind = str(_require(i, "kind", w))
        if kind not in INSTRUMENT_KINDS:
            raise ConfigurationError(f"{w}: kind must be one of {INSTRUMENT_KINDS}, got {kind!r}")
        instruments.append(InstrumentConfig(
            name=str(_require(i, "name", w)), kind=kind, resource=str(_require(i, "resource", w)),
            channels=_number(i, "channels", w, int, minimum=1, default=1),
            timeout_s=_number(i, "timeout_s", w, float, minimum=0.0, default=2.0),
        ))
    names = [c.name for c in controllers] + [i.name for i in instruments]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{where}: controller and instrument names must be unique")
    ctrl_by_name = {c.name: c for c in controllers}
    inst_by_name = {i.name: i for i in instruments}

    qubits: dict[int, QubitWiring] = {}
    for key, q in doc.get("qubits", {}).items():
        if not key.isdigit() or int(key) >= n:
            raise ConfigurationError(f"{where} [qubits.{key}]: qubit index must be 0..{n - 1}")
        w = f"{where} [qubits.{key}]"
        ports = {}
        for role in ROLES:
            ctrl, port = _port(_require(q, role, w), f"{w} {role}")
            if ctrl not in ctrl_by_name:
                raise ConfigurationError(f"{w} {role}: unknown controller {ctrl!r}")
            limit = ctrl_by_name[ctrl].inputs if role == "acquire" else ctrl_by_name[ctrl].outputs
            if port >= limit:
                raise ConfigurationError(
                    f"{w} {role}: port {port} does not exist on {ctrl} (it has {limit})")
            ports[role] = (ctrl, port)
        for role, kind in (("drive_lo", "signal_generator"), ("readout_lo", "signal_generator")):
            src = str(_require(q, role, w))
            if src not in inst_by_name or inst_by_name[src].kind != kind:
                raise ConfigurationError(f"{w} {role}: {src!r} is not a {kind} of this rack")
        flux_src, flux_ch = _port(_require(q, "flux_bias", w), f"{w} flux_bias")
        inst = inst_by_name.get(flux_src)
        if inst is None or inst.kind != "current_source" or not 1 <= flux_ch <= inst.channels:
            raise ConfigurationError(
                f"{w} flux_bias: {q['flux_bias']!r} is not a channel of a current_source")
        qubits[int(key)] = QubitWiring(
            drive=ports["drive"], flux=ports["flux"], readout=ports["readout"],
            acquire=ports["acquire"], drive_lo=q["drive_lo"], readout_lo=q["readout_lo"],
            flux_bias=(flux_src, flux_ch),
        )
    if sorted(qubits) != list(range(n)):
        missing = sorted(set(range(n)) - set(qubits))
        raise ConfigurationError(f"{where}: no wiring for qubit(s) {missing}")
    owners: dict[tuple[str, int], str] = {}
    for q, wiring in sorted(qubits.items()):
        for role in ("drive", "flux", "readout"):
            port = getattr(wiring, role)
            if port in owners:
                raise ConfigurationError(
                    f"{where} [qubits.{q}] {role}: output {port[0]}:{port[1]} is already the "
                    f"{owners[port]}")
            owners[port] = f"{role} of qubit {q}"
    acquire_owners: dict[tuple[str, int], int] = {}
    for q, wiring in sorted(qubits.items()):
        if wiring.acquire in acquire_owners:
            raise ConfigurationError(
                f"{where} [qubits.{q}] acquire: input {wiring.acquire[0]}:{wiring.acquire[1]} "
                f"is already the acquire input of qubit {acquire_owners[wiring.acquire]}")
        acquire_owners[wiring.acquire] = q

    cal = doc.get("calibration", {})
    store = str(cal.get("store", ""))
    if store:
        store_path = Path(store)
        if not store_path.is_absolute() and path is not None:
            store_path = path.parent / store_path
    else:
        store_path = labqpu_home() / name / "calibration.sqlite"
    return LabConfig(
        path=path, device_name=name, num_qubits=n, coupling_map=cmap,
        controllers=tuple(controllers), instruments=tuple(instruments), qubits=qubits,
        store_path=store_path, seed_snapshot=cal.get("seed_snapshot") or None, raw=doc,
    )
