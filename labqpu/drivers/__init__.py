"""Instrument drivers: SCPI sources over pyvisa, the controller client over ZeroMQ, and the wire
protocol both sides speak. Imports nothing of labqpu but ``labqpu.errors``."""
