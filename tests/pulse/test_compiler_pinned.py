"""The compiler's output is pinned: these circuits compile to exactly the programs (same
``content_hash``: every array byte, waveform sample and setting) that the straightforward
per-op compiler produced before its speed work (commit 7272db6, measured on this project's
reference machine, numba 0.68 / glibc libm).

A change here means the compiler's *output* changed, not just its speed. If that is intended
(a new feature, a different schedule), re-pin with ``python tests/pulse/test_compiler_pinned.py``
and say why in the commit. If only the waveform samples differ (see the second assertion), the
platform's ``exp``/``cos`` may round differently from the reference machine.
"""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister

from labqpu.pulse.compiler import clear_caches, compile_circuit


def random_layers(num_qubits: int, layers: int, seed: int) -> QuantumCircuit:
    """Native layers (rz + sx on every qubit, cz on alternating edges), then measure all."""
    rng = random.Random(seed)
    qc = QuantumCircuit(num_qubits, num_qubits, name=f"layers{layers}_seed{seed}")
    for layer in range(layers):
        for q in range(num_qubits):
            qc.rz(rng.uniform(-math.pi, math.pi), q)
            qc.sx(q)
        for a in range(layer % 2, num_qubits - 1, 2):
            qc.cz(a, a + 1)
    qc.measure(range(num_qubits), range(num_qubits))
    return qc


def mixed() -> QuantumCircuit:
    """Every native instruction: x, sx, rz, cz both ways round, barrier, delays in dt and
    seconds, reset, and measurements into two registers in permuted order."""
    q = QuantumRegister(5, "q")
    a, b = ClassicalRegister(2, "a"), ClassicalRegister(2, "b")
    qc = QuantumCircuit(q, a, b, name="mixed", metadata={"kind": "pinned"})
    qc.reset(3)
    qc.x(0)
    qc.rz(0.3, 1)
    qc.sx(1)
    qc.cz(1, 0)
    qc.delay(120, 2)
    qc.sx(2)
    qc.barrier(0, 1, 2)
    qc.delay(64e-9, 0, unit="s")
    qc.rz(-1.1, 0)
    qc.x(0)
    qc.cz(2, 3)
    qc.rz(2.5, 3)
    qc.sx(3)
    qc.cz(3, 4)
    qc.x(4)
    qc.measure(0, b[1])
    qc.measure(1, a[0])
    qc.measure(3, b[0])
    qc.measure(4, a[1])
    return qc


def idle_qubits() -> QuantumCircuit:
    """Gates on qubits 2-4 only, one of them never measured (fewer LOs, fewer flux biases)."""
    qc = QuantumCircuit(5, 2, name="idle")
    qc.sx(2)
    qc.rz(0.25, 2)
    qc.sx(2)
    qc.cz(2, 3)
    qc.x(4)
    qc.measure(2, 0)
    qc.measure(3, 1)
    return qc


CASES = {
    "layers8_alap": (lambda: random_layers(5, 8, 1), "alap"),
    "layers8_asap": (lambda: random_layers(5, 8, 1), "asap"),
    "layers40_alap": (lambda: random_layers(5, 40, 7), "alap"),
    "mixed_alap": (mixed, "alap"),
    "mixed_asap": (mixed, "asap"),
    "idle_alap": (idle_qubits, "alap"),
}

#: content_hash, and a hash of everything but the waveform samples, per case (pinned at 7272db6).
PINNED = {
    "idle_alap": ("024c4dbec857e3ef8ad67e5f6d5703caf5487ed32e1b73328a37e447cb093396",
        "72fe37f0c863fb2ffc5f77d61e824ffb78f30c9ee87b9345a5d168b277ddc205"),
    "layers40_alap": ("98c054751bd964989230e5c7c3545156c0e6c25610d13f49c70b0012be5f2f76",
        "fe71598f659e6ad2db9f38796699fd12188f900d9f4f00c69df5dac2e859e537"),
    "layers8_alap": ("d95cf0cd26c67830421c58de194f39b934ac4f582294cd49aabab3dba5510ed6",
        "bb6b8306bd0b1a43e683cb14c6afd574bcfad4fbe815c98e41b54f17199eb321"),
    "layers8_asap": ("3a6f371c1af53e1284410d92667ec504c6b1435f3d04b0ea995f3c7c36e254e9",
        "f97fd3dfdbcb121d7a433c49df86758d99389a3cecc14b82d0de60432a4d899c"),
    "mixed_alap": ("8fe9a80224849cffe10dd0c58b4190d50dd3de56bb510ff847590f2d2a2940ec",
        "c1c614bb32ea2a6ee496c1e1775fc45cb50ad9e00232dcdfe4fd817c8fea19bc"),
    "mixed_asap": ("9bfd4a838502cbb6a3353c91059119143be85bcc97e791132c97eeb78f72d080",
        "d83f644bbdea7606056481d168356efe83945d593c7c15eea75f7187a6483943"),
}


def structure_hash(prog) -> str:
    """SHA-256 of the program without its waveform samples (only their lengths)."""
    h = hashlib.sha256()
    for name in ("play_port", "play_start", "play_wave", "play_amp", "play_amp_ref",
                 "play_phase_rad", "play_freq_hz", "wave_offset", "acq_port", "acq_start",
                 "acq_duration", "acq_freq_hz", "acq_qubit", "acq_clbit"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(getattr(prog, name)).tobytes())
    h.update(repr((prog.duration_samples, sorted(prog.lo_settings.items()),
                   sorted(prog.flux_bias_a.items()), prog.header)).encode())
    return h.hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_program_is_pinned(snapshot, channels, case):
    make, method = CASES[case]
    prog = compile_circuit(make(), snapshot, channels, scheduling_method=method)
    content, structure = PINNED[case]
    assert structure_hash(prog) == structure, f"{case}: schedule, frames or settings changed"
    assert prog.content_hash == content, f"{case}: waveform samples changed"


@pytest.mark.parametrize("case", sorted(CASES))
def test_recompiling_gives_the_same_program(snapshot, channels, case):
    """Caches must not leak state from one compilation into the next."""
    make, method = CASES[case]
    first = compile_circuit(make(), snapshot, channels, scheduling_method=method)
    for other in CASES.values():
        compile_circuit(other[0](), snapshot, channels, scheduling_method=other[1])
    again = compile_circuit(make(), snapshot, channels, scheduling_method=method)
    assert again.content_hash == first.content_hash


@pytest.mark.parametrize("case", sorted(CASES))
def test_cold_and_warm_caches_give_the_same_program(snapshot, channels, case):
    """A compilation that fills the caches and one that only reads them agree."""
    make, method = CASES[case]
    clear_caches()
    cold = compile_circuit(make(), snapshot, channels, scheduling_method=method)
    warm = compile_circuit(make(), snapshot, channels, scheduling_method=method)
    assert cold.content_hash == warm.content_hash == PINNED[case][0]


if __name__ == "__main__":  # print the PINNED table for the current compiler
    import json
    from importlib import resources
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from labqpu.rack.config import default_config_path, load_config
    from labqpu.store import CalibrationStore

    with TemporaryDirectory() as tmp:
        st = CalibrationStore(Path(tmp) / "s.sqlite")
        st.import_json(json.loads(
            (resources.files("labqpu") / "data" / "lab5_calibration.json").read_text()))
        snap = st.get(1)
        st.close()
    chans = load_config(default_config_path()).channels
    print("PINNED = {")
    for name, (make, method) in sorted(CASES.items()):
        p = compile_circuit(make(), snap, chans, scheduling_method=method)
        print(f'    "{name}": ("{p.content_hash}",\n'
              f'        "{structure_hash(p)}"),')
    print("}")
