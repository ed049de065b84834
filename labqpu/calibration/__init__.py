"""Calibration: experiments (acquire, pure analysis, explicit update), the graph runner and
the bootstrap.

It sits above the backend and uses the backend and pulse APIs as any client would.
``run_graph(backend, ["ramsey"], qubits=[2])`` checks and recalibrates, and commits one
snapshot (:mod:`labqpu.calibration.runner`); ``run_graph(backend)`` then also benchmarks the
gate errors that run left out of date and commits them as a second snapshot (its rb step).
"""

from labqpu.calibration.runner import RunReport, bootstrap, run_graph

__all__ = ["RunReport", "bootstrap", "run_graph"]
