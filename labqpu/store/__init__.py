"""Versioned calibration snapshots in a crash-safe SQLite store.

A *snapshot* is an immutable document describing what calibration measured on one device::

    {
      "device": "lab5",
      "qubits": {"0": {"frequency_hz": {"value": 5.0213e9,
                                        "timestamp": "2026-11-21T23:00:00+00:00",
                                        "experiment": "ramsey"}, ...}, ...},
      "pairs":  {"0-1": {"cz_amplitude": {...}, "cz_duration_s": {...}, ...}},
      "gates":  {"sx:0": {"error": {...}, "duration_s": {...}}, "cz:0-1": {...}},
      "notes":  "free text"
    }

Every leaf is a :class:`Parameter` — a JSON value (number, bool, string, list or object),
the timezone-aware UTC time it was measured, and the experiment that measured it. Names
carry SI units (``frequency_hz``, ``duration_s``, ``t1_s``); dimensionless quantities
(``error``, ``readout_assignment_fidelity``, ``cz_amplitude``) have none. Pair keys are
normalised to ``"low-high"``; parameters that refer to "the first/second qubit of the pair"
(``cz_phase_0_rad``) refer to that normalised order. Gate keys are ``"name:q"`` or
``"name:q0-q1"`` in the gate's own (directed) qubit order.

:class:`CalibrationStore` keeps every version in SQLite (rollback journal, one
``BEGIN IMMEDIATE`` transaction per write), so a writer that dies mid-commit leaves nothing
visible and readers always get the newest complete snapshot. :class:`SnapshotBuilder`
assembles a document parameter by parameter; :func:`export_backend_properties` and
:func:`document_from_backend_properties` translate to and from the Qiskit BackendProperties
JSON layout.

This package is the ground floor of labqpu: it imports nothing of labqpu but ``labqpu.errors``,
and its errors are the ``CalibrationError`` branch of that tree.
"""

from labqpu.store.builder import SnapshotBuilder
from labqpu.store.database import EXPORT_FORMAT, SCHEMA_VERSION, CalibrationStore
from labqpu.store.parameter import MISSING, Parameter
from labqpu.store.properties import document_from_backend_properties, export_backend_properties
from labqpu.store.records import ParameterRecord, SnapshotInfo
from labqpu.store.requirements import (
    CALIBRATION_FAILED,
    CZ_PARAMETERS,
    DRIVE_PARAMETERS,
    READOUT_PARAMETERS,
    has_all,
)
from labqpu.store.snapshot import Snapshot, diff_snapshots

__all__ = [
    "CALIBRATION_FAILED",
    "CZ_PARAMETERS",
    "DRIVE_PARAMETERS",
    "EXPORT_FORMAT",
    "MISSING",
    "READOUT_PARAMETERS",
    "SCHEMA_VERSION",
    "CalibrationStore",
    "Parameter",
    "ParameterRecord",
    "Snapshot",
    "SnapshotBuilder",
    "SnapshotInfo",
    "diff_snapshots",
    "document_from_backend_properties",
    "export_backend_properties",
    "has_all",
]
