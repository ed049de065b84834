"""Exceptions raised by the Qiskit side of labqpu.

    LabQpuError (QiskitError)
    ├── ConfigurationError      the lab.toml is missing something or contradicts itself
    ├── CompilationError        a circuit cannot be compiled for the device (names qubit, gate)
    └── InvalidRunInputError    run() refused a circuit or option before anything was sent

Instrument failures are ``labqpu.drivers.errors.InstrumentError``; jobs surface them as
Qiskit's ``JobError`` with the instrument's message.
"""

from __future__ import annotations

from qiskit.exceptions import QiskitError


class LabQpuError(QiskitError):
    """Base class; ``str()`` is the plain message (QiskitError would quote it)."""

    def __str__(self) -> str:
        return self.message


class ConfigurationError(LabQpuError):
    """The lab configuration file is missing something or contradicts itself."""


class CompilationError(LabQpuError):
    """A circuit cannot be compiled for this device (the message names the qubit and gate)."""


class InvalidRunInputError(LabQpuError):
    """A circuit or option given to ``run()`` cannot run on this backend; nothing was sent."""
