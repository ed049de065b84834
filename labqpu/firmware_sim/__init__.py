"""The firmware simulator: the stand-in for the hardware in tests and CI.

Controller servers over real ZeroMQ, SCPI servers over real TCP, pulse-level physics. It imports
only ``labqpu.drivers.protocol`` and ``labqpu.errors``; nothing in the host stack imports it
(the provider starts it as a separate process).
"""
