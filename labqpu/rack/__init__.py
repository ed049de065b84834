"""The rack: the wiring file (``lab.toml``) and the hardware path that owns the instruments.

``load_config`` parses and validates a wiring file into a ``LabConfig``. ``RackConnection``
configures the VISA sources a program needs, then uploads, runs and fetches on the controllers;
a ``HardwareQueue`` serialises jobs onto it. This package may import ``drivers``, ``pulse`` and
``store``, never the Qiskit face above it.
"""
