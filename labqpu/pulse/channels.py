"""Where a device's signals are played: the part of the wiring that the pulse layer needs.

The compiler places a qubit's pulses on controller ports and names the VISA sources its
program configures; it learns both from a :class:`ChannelMap`. The rack's wiring file
(``labqpu.rack.config``) produces one, so the pulse layer never reads ``lab.toml`` itself.

The pulse builder's qubit-relative channels (:class:`Channel`: ``drive(q)``, ``flux(q)``,
``readout(q)``, ``acquire_channel(q)``) and its :class:`AcquisitionRef` are here too; the
builder (``labqpu.pulse.builder``) and ``labqpu.pulse`` export them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from labqpu.errors import PulseError
from labqpu.pulse.timing import TimingConstraints


@dataclass(frozen=True)
class QubitChannels:
    """Where one qubit's signals go.

    Attributes:
        drive, flux, readout: ``(controller name, output port)`` of the qubit's drive, flux and
            readout tones.
        acquire: ``(controller name, input port)`` its readout is digitized on.
        drive_lo, readout_lo: names of the signal generators that are the LOs of its drive and
            readout mixers.
        flux_bias: ``(current source name, channel)`` of its DC flux bias (channels count
            from 1).
    """

    drive: tuple[str, int]
    flux: tuple[str, int]
    readout: tuple[str, int]
    acquire: tuple[str, int]
    drive_lo: str
    readout_lo: str
    flux_bias: tuple[str, int]


@dataclass(frozen=True)
class ChannelMap:
    """The channels of every qubit of one device, and the controllers that play them.

    A program's ports are *rack ports*: the outputs of the controllers numbered one after the
    other in wiring-file order (controller k's output p is rack output p plus the outputs of
    the controllers before it), and likewise the inputs. On a one-controller rack they are the
    controller's own port numbers.

    Attributes:
        device_name: the device's name (``"lab5"``).
        controllers: names of the controllers, in wiring-file order.
        sample_rate_hz: the sample rate all controllers share (Hz).
        qubits: ``{qubit: QubitChannels}`` for qubits ``0 .. num_qubits - 1``.
        timing: the controllers' timing constraints (from their ``hello``; none by default).
        ports: ``(outputs, inputs)`` of each controller, in the order of ``controllers``
            (empty: one controller, whose port numbers are the rack's).
    """

    device_name: str
    controllers: tuple[str, ...]
    sample_rate_hz: float
    qubits: Mapping[int, QubitChannels]
    timing: TimingConstraints = field(default_factory=TimingConstraints)
    ports: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.ports and len(self.ports) != len(self.controllers):
            raise ValueError(f"ChannelMap: {len(self.ports)} port counts for "
                             f"{len(self.controllers)} controllers")
        if not self.ports and len(self.controllers) != 1:
            raise ValueError("ChannelMap: a rack of several controllers needs their port counts")

    def __reduce__(self) -> tuple:
        """Pickled with its qubits as a plain dict (a read-only view of them cannot be), read
        back as a read-only view: a pulse builder or a program's maker can go to another
        process."""
        return (_channel_map, (self.device_name, self.controllers, self.sample_rate_hz,
                               dict(self.qubits), self.timing, self.ports))

    @property
    def num_qubits(self) -> int:
        """How many qubits the device has."""
        return len(self.qubits)

    @property
    def layout(self) -> tuple[tuple[str, int, int], ...]:
        """``(controller, outputs, inputs)`` of a rack of several controllers, in rack-port
        order; empty for one controller (its ports are the rack's)."""
        if len(self.controllers) == 1:
            return ()
        return tuple((name, o, i) for name, (o, i) in zip(self.controllers, self.ports,
                                                          strict=True))

    def _base(self, controller: str, which: int) -> int:
        if len(self.controllers) == 1:
            if controller != self.controllers[0]:
                raise KeyError(f"no controller {controller!r}; the rack has {self.controllers}")
            return 0
        base = 0
        for name, counts in zip(self.controllers, self.ports, strict=True):
            if name == controller:
                return base
            base += counts[which]
        raise KeyError(f"no controller {controller!r}; the rack has {self.controllers}")

    def output(self, address: tuple[str, int]) -> int:
        """The rack output port of ``(controller, output port)``."""
        return self._base(address[0], 0) + address[1]

    def input(self, address: tuple[str, int]) -> int:
        """The rack input port of ``(controller, input port)``."""
        return self._base(address[0], 1) + address[1]


# ------------------------------------------------------------ the builder's channels

CHANNEL_KINDS = ("drive", "flux", "readout", "acquire")


@dataclass(frozen=True)
class Channel:
    """A qubit-relative channel: ``kind`` is one of ``CHANNEL_KINDS``."""

    kind: str
    qubit: int

    def __post_init__(self) -> None:
        if self.kind not in CHANNEL_KINDS:
            raise PulseError(f"unknown channel kind {self.kind!r}; known: {CHANNEL_KINDS}",
                             parameter="channel")
        if isinstance(self.qubit, bool) or not isinstance(self.qubit, int | np.integer) \
                or self.qubit < 0:
            raise PulseError(f"{self.kind} channel: qubit must be an int >= 0, got "
                             f"{self.qubit!r}", parameter="channel")
        object.__setattr__(self, "qubit", int(self.qubit))

    def __str__(self) -> str:
        return f"{self.kind}({self.qubit})"


def drive(qubit: int) -> Channel:
    """The drive channel of ``qubit`` (microwave, on the drive LO)."""
    return Channel("drive", qubit)


def flux(qubit: int) -> Channel:
    """The fast-flux channel of ``qubit`` (baseband)."""
    return Channel("flux", qubit)


def readout(qubit: int) -> Channel:
    """The readout-tone channel of ``qubit`` (on the readout LO)."""
    return Channel("readout", qubit)


def acquire_channel(qubit: int) -> Channel:
    """The digitiser input ``qubit`` is read on (the target of ``acquire``)."""
    return Channel("acquire", qubit)


@dataclass(frozen=True)
class AcquisitionRef:
    """An acquisition of a builder, for ``if_result``: its qubit, classical bit, its number in
    the builder and the builder's identity."""

    qubit: int
    clbit: int
    ident: int
    owner: int


def _channel_map(device_name: str, controllers: tuple[str, ...], sample_rate_hz: float,
                 qubits: dict, timing: TimingConstraints, ports: tuple) -> ChannelMap:
    """A pickled ``ChannelMap`` (``ChannelMap.__reduce__``)."""
    return ChannelMap(device_name, controllers, sample_rate_hz, MappingProxyType(qubits),
                      timing, ports)
