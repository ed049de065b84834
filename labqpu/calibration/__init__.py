"""Calibration: experiments (acquire, pure analysis, explicit update) and the bootstrap.

It sits above the backend and uses the backend and pulse APIs as any client would.
"""
