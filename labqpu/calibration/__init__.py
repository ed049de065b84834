"""Calibration: experiments (acquire, pure analysis, explicit update), the graph runner and
the bootstrap.

It sits above the backend and uses the backend and pulse APIs as any client would.
``run_graph(backend, ["ramsey"], qubits=[2])`` checks and recalibrates, and commits one
snapshot (:mod:`labqpu.calibration.runner`).
"""

from labqpu.calibration.runner import RunReport, bootstrap, run_graph

__all__ = ["RunReport", "bootstrap", "run_graph"]
