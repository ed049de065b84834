"""The Qiskit side: provider, backend, Target, pulse compiler, jobs."""
