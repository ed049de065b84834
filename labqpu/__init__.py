"""labqpu: run Qiskit circuits on a lab quantum processor.

``from labqpu import LabProvider`` is the entry point. The exceptions a Qiskit user catches
(``BackendPropertyError``, ``BackendConfigurationError``, ``LabQpuError`` and the rest of
``labqpu.errors``) are importable from here too. Importing labqpu starts nothing and loads
Qiskit and the backend only when one of these names is first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
#: Version of labqpu's public interface (docs/interface.md); it changes only when something
#: public is removed or changes meaning, after its deprecation period.
INTERFACE_VERSION = 1

#: Public names of the top-level package and the module each one lives in.
_EXPORTS = {
    "LabProvider": "labqpu.backend.provider",
    "Sampler": "labqpu.backend.sampler",
    "LabQpuError": "labqpu.errors",
    "BackendConfigurationError": "labqpu.errors",
    "BackendPropertyError": "labqpu.errors",
    "CalibrationError": "labqpu.errors",
    "CompilationError": "labqpu.errors",
    "InstrumentError": "labqpu.errors",
    "InvalidRunInputError": "labqpu.errors",
}
__all__ = [*_EXPORTS, "INTERFACE_VERSION", "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labqpu' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
