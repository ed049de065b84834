"""The settings of the simulated SCPI instruments, which their servers
(:mod:`labqpu.firmware_sim.scpi_server`) change and the physics model reads (``snapshot()``).

    SignalGeneratorState    settings of a microwave LO source (R&S SGS100A command subset)
    CurrentSourceState      per-channel settings of a DC current source (Keysight B2900 style)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from labqpu.errors import InstrumentLimitError


class ChannelState:
    """Thread-safe per-channel settings: ``values[channel][quantity]``, channels from 1."""

    def __init__(
        self,
        channels: int,
        factory: Mapping[str, float | bool],
        limits: Mapping[str, tuple[float, float]],
    ) -> None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels = channels
        self.limits = dict(limits)
        self._factory = dict(factory)
        self._lock = threading.Lock()
        self._values = {ch: dict(self._factory) for ch in range(1, channels + 1)}

    def get(self, quantity: str, channel: int = 1) -> float | bool:
        """Return the setting ``quantity`` of ``channel``."""
        with self._lock:
            return self._values[channel][quantity]

    def set(self, quantity: str, value: float | bool, channel: int = 1) -> None:
        """Change the setting ``quantity`` of ``channel``.

        Raises:
            InstrumentLimitError: ``value`` is outside the instrument's limits.
        """
        if channel not in self._values:
            raise InstrumentLimitError(f"channel {channel} does not exist", command=quantity)
        if quantity not in self._factory:
            raise KeyError(quantity)
        if quantity in self.limits:
            low, high = self.limits[quantity]
            if not low <= value <= high:
                raise InstrumentLimitError(
                    f"{quantity}={value!r} is outside [{low!r}, {high!r}]", command=quantity
                )
        with self._lock:
            self._values[channel][quantity] = value

    def reset(self) -> None:
        """Restore the factory settings (``*RST``)."""
        with self._lock:
            for values in self._values.values():
                values.update(self._factory)


class SignalGeneratorState(ChannelState):
    """Settings of a simulated microwave LO source.

    Args:
        frequency_hz: initial CW frequency, in Hz (None: the factory setting).
        power_dbm: initial output power, in dBm (None: the factory setting).
        output_on: initial RF output state.
        min_frequency_hz, max_frequency_hz: accepted frequency range, in Hz.
        min_power_dbm, max_power_dbm: accepted power range, in dBm.

    The factory setting (at power-on and ``*RST``) is 1 GHz, -30 dBm, output off, each moved to
    the nearest edge of a range that leaves it out (a wiring file's 4-8 GHz source powers on at
    4 GHz): an instrument starts inside its own limits.
    """

    def __init__(
        self,
        *,
        frequency_hz: float | None = None,
        power_dbm: float | None = None,
        output_on: bool = False,
        min_frequency_hz: float = 1e6,
        max_frequency_hz: float = 12.75e9,
        min_power_dbm: float = -120.0,
        max_power_dbm: float = 25.0,
    ) -> None:
        factory = {"frequency_hz": min(max(1e9, min_frequency_hz), max_frequency_hz),
                   "power_dbm": min(max(-30.0, min_power_dbm), max_power_dbm)}
        super().__init__(
            1,
            {**factory, "output_on": False},
            {
                "frequency_hz": (min_frequency_hz, max_frequency_hz),
                "power_dbm": (min_power_dbm, max_power_dbm),
            },
        )
        self.set("frequency_hz", float(factory["frequency_hz"] if frequency_hz is None
                                       else frequency_hz))
        self.set("power_dbm", float(factory["power_dbm"] if power_dbm is None else power_dbm))
        self.set("output_on", bool(output_on))

    def snapshot(self) -> dict[str, float | bool]:
        """Return ``{"frequency_hz", "power_dbm", "output_on"}`` read atomically."""
        with self._lock:
            return dict(self._values[1])


class CurrentSourceState(ChannelState):
    """Per-channel settings of a simulated DC current source.

    Args:
        channels: number of output channels, numbered from 1.
        current_a: initial output current per channel number, in A (missing channels: 0 A).
        output_on: initial output state per channel number (missing channels: off).
        max_current_a: accepted current magnitude, in A.

    ``*RST`` restores 0 A with every output off.
    """

    def __init__(
        self,
        *,
        channels: int = 5,
        current_a: Mapping[int, float] | None = None,
        output_on: Mapping[int, bool] | None = None,
        max_current_a: float = 10e-3,
    ) -> None:
        super().__init__(
            channels,
            {"current_a": 0.0, "output_on": False},
            {"current_a": (-max_current_a, max_current_a)},
        )
        for channel, value in (current_a or {}).items():
            self.set("current_a", float(value), channel)
        for channel, on in (output_on or {}).items():
            self.set("output_on", bool(on), channel)

    def snapshot(self) -> dict[str, object]:
        """Return ``{"channels": n, "current_a": {ch: A}, "output_on": {ch: bool}}`` atomically."""
        with self._lock:
            return {
                "channels": self.channels,
                "current_a": {ch: v["current_a"] for ch, v in self._values.items()},
                "output_on": {ch: v["output_on"] for ch, v in self._values.items()},
            }
