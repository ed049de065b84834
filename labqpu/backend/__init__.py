"""The Qiskit face of labqpu: provider, backend, jobs, Target builder and results.

Importing this package registers the ``sy`` equivalence rules in Qiskit's
``SessionEquivalenceLibrary`` (once per process: :func:`labqpu.backend.gates.register_equivalences`
skips rules already present). ``import labqpu`` alone does not import Qiskit.
"""

from labqpu.backend.gates import register_equivalences

register_equivalences()
