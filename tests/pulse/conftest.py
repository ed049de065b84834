"""Parts shared by the compiler's tests (``test_compiler_*.py``), as fixtures that return helpers.

``rq`` and ``rp`` read a qubit's and a pair's value from the shipped snapshot's export,
``samples`` gives seconds as samples at 1 GS/s, ``plays`` the plays of a compiled program on a
port and ``starts`` their start samples. A test that calls a helper takes the fixture of its name.
"""

from __future__ import annotations

import numpy as np
import pytest

FS = 1.0e9


@pytest.fixture(scope="session")
def rq():
    def rq(export, q: int, name: str):
        return export["document"]["qubits"][str(q)][name]["value"]

    return rq


@pytest.fixture(scope="session")
def rp():
    def rp(export, a: int, b: int, name: str):
        return export["document"]["pairs"][f"{a}-{b}"][name]["value"]

    return rp


@pytest.fixture(scope="session")
def samples():
    def samples(seconds: float) -> int:
        return round(seconds * FS)

    return samples


@pytest.fixture(scope="session")
def plays():
    def plays(prog, port: int) -> list[tuple]:
        """(start, wave, amp, phase, freq) of every play on ``port``, in program order."""
        idx = np.flatnonzero(prog.play_port == port)
        return [(int(prog.play_start[i]), int(prog.play_wave[i]), float(prog.play_amp[i]),
                 float(prog.play_phase_rad[i]), float(prog.play_freq_hz[i])) for i in idx]

    return plays


@pytest.fixture(scope="session")
def starts(plays):
    def starts(prog, port: int) -> list[int]:
        return [p[0] for p in plays(prog, port)]

    return starts
