"""The Qiskit face of labqpu: provider, backend, jobs, Target builder and results."""
