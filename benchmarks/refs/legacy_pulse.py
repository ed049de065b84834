"""Reference worker: legacy Qiskit 1.4 Pulse (``qiskit<2``), run inside benchmarks/.venvs/legacy.

For the benchmark circuit mapped onto a 5-qubit path of ``Fake7QPulseV1`` (cx, its native
two-qubit gate, in place of cz), it times ``qiskit.schedule()`` and then the sampling of the
waveforms of the resulting schedules: of every ``Play`` (what ``assemble`` hands a backend
without parametric-pulse support) and, as the most favourable reading, of each unique pulse
once. Started and driven by ``benchmarks/compile_vs.py``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.simplefilter("ignore")

import qiskit  # noqa: E402
from _worker import serve  # noqa: E402
from circuitspec import count, random_layers  # noqa: E402
from qiskit import QuantumCircuit, schedule  # noqa: E402
from qiskit.providers.fake_provider import Fake7QPulseV1  # noqa: E402
from qiskit.pulse import Play  # noqa: E402

BACKEND = Fake7QPulseV1()
PATH = (0, 1, 3, 5, 4)  # a line of 5 qubits in Fake7QPulseV1's coupling map


def build(layers: int, seed: int) -> QuantumCircuit:
    ops = random_layers(5, layers, seed)
    qc = QuantumCircuit(7, 5, name=f"layers{layers}_seed{seed}")
    for op in ops:
        if op[0] == "rz":
            qc.rz(op[2], PATH[op[1]])
        elif op[0] == "sx":
            qc.sx(PATH[op[1]])
        elif op[0] == "cz":
            qc.cx(PATH[op[1]], PATH[op[2]])
        else:
            qc.measure(PATH[op[1]], op[1])
    return qc


def plays(scheds) -> list:
    return [inst.pulse for s in scheds for _, inst in s.instructions if isinstance(inst, Play)]


def sample_all(pulses) -> int:
    n = 0
    for p in pulses:
        n += p.get_waveform().samples.shape[0]
    return n


def pulse_key(p) -> tuple:
    """What makes two pulses sample alike (pulses are not hashable in Qiskit 1.4)."""
    if hasattr(p, "pulse_type"):
        return (p.pulse_type, p.duration, tuple(sorted(p.parameters.items())))
    return ("waveform", p.samples.tobytes())


def sample_unique(pulses) -> int:
    seen = {}
    for p in pulses:
        key = pulse_key(p)
        if key not in seen:
            seen[key] = p.get_waveform().samples
    return sum(w.shape[0] for w in seen.values())


def info() -> dict:
    cfg = BACKEND.configuration()
    return {"qiskit": qiskit.__version__, "python": sys.version.split()[0],
            "backend": cfg.backend_name, "dt": cfg.dt, "path": PATH}


def time_batch(layers: int, seeds: list[int], repeats: int) -> dict:
    circuits = [build(layers, s) for s in seeds]
    ops = sum(sum(count(random_layers(5, layers, s)).values()) for s in seeds)
    warm = schedule(circuits, BACKEND)  # warm-up: lazy calibration parsing, sympy lambdify
    sample_all(plays(warm))
    result = {"ops": ops, "circuits": len(circuits), "schedule_s": [], "sample_all_s": [],
              "sample_unique_s": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        scheds = schedule(circuits, BACKEND)
        t1 = time.perf_counter()
        pulses = plays(scheds)
        t2 = time.perf_counter()
        samples = sample_all(pulses)
        t3 = time.perf_counter()
        unique = sample_unique(pulses)
        t4 = time.perf_counter()
        result["schedule_s"].append(t1 - t0)
        result["sample_all_s"].append(t3 - t2)
        result["sample_unique_s"].append(t4 - t3)
    result.update(plays=len(pulses), samples=samples, unique_samples=unique,
                  duration_dt=max(s.duration for s in scheds))
    return result


if __name__ == "__main__":
    serve({"info": info, "time": time_batch})
