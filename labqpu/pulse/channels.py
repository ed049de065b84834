"""Where a device's signals are played: the part of the wiring that the pulse layer needs.

The compiler places a qubit's pulses on controller ports and names the VISA sources its
program configures; it learns both from a :class:`ChannelMap`. The rack's wiring file
(``labqpu.rack.config``) produces one, so the pulse layer never reads ``lab.toml`` itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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

    Attributes:
        device_name: the device's name (``"lab5"``).
        controllers: names of the controllers, in wiring-file order.
        sample_rate_hz: the sample rate all controllers share (Hz).
        qubits: ``{qubit: QubitChannels}`` for qubits ``0 .. num_qubits - 1``.
        timing: the controllers' timing constraints (from their ``hello``; none by default).
    """

    device_name: str
    controllers: tuple[str, ...]
    sample_rate_hz: float
    qubits: Mapping[int, QubitChannels]
    timing: TimingConstraints = field(default_factory=TimingConstraints)

    @property
    def num_qubits(self) -> int:
        """How many qubits the device has."""
        return len(self.qubits)
