"""labqpu: run Qiskit circuits on a lab quantum processor.

``from labqpu import LabProvider`` is the entry point. Importing labqpu starts nothing and
loads the backend only when ``LabProvider`` is first used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["LabProvider", "__version__"]


def __getattr__(name: str):
    if name == "LabProvider":
        from labqpu.backend.provider import LabProvider

        return LabProvider
    raise AttributeError(f"module 'labqpu' has no attribute {name!r}")
