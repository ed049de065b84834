"""The names of the devices shipped with labqpu, importable without Qiskit or numpy (the
``labqpu`` command lists them in its help)."""

#: The devices shipped with labqpu, each with a wiring file, design values, a calibration
#: snapshot and a simulator device file: ``LabProvider("lab10")`` runs one on the embedded
#: simulator.
BUILTIN_DEVICES = ("lab5", "lab10", "lab3")
