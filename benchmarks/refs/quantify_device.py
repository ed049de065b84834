"""Reference worker: quantify-scheduler's device compilation, run inside
benchmarks/.venvs/quantify.

The benchmark circuit as a quantify ``Schedule`` (Rz, Rxy(90, 0) for sx, CZ, Measure) on five
``BasicTransmonElement``s joined in a line by ``CompositeSquareEdge``s. It times
``SerialCompiler.compile`` with the device's own compilation config (gates to pulses, absolute
timing; no hardware backend), and then the sampling of the waveform of every pulse of the
compiled schedule with quantify's ``helpers.waveforms.get_waveform`` at 1 GS/s (device
compilation does not sample). Started and driven by ``benchmarks/compile_vs.py``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.simplefilter("ignore")
logging.disable(logging.WARNING)

import quantify_scheduler  # noqa: E402
from _worker import serve  # noqa: E402
from circuitspec import count, random_layers  # noqa: E402
from quantify_scheduler import QuantumDevice, Schedule  # noqa: E402
from quantify_scheduler.backends.graph_compilation import SerialCompiler  # noqa: E402
from quantify_scheduler.device_under_test.composite_square_edge import (  # noqa: E402
    CompositeSquareEdge,
)
from quantify_scheduler.device_under_test.transmon_element import (  # noqa: E402
    BasicTransmonElement,
)
from quantify_scheduler.helpers.waveforms import get_waveform  # noqa: E402
from quantify_scheduler.operations.gate_library import (  # noqa: E402
    CZ,
    Measure,
    Rxy,
    Rz,
)

SAMPLE_RATE = 1e9


def make_device() -> QuantumDevice:
    device = QuantumDevice("bench_device")
    elements = []
    for q in range(5):
        el = BasicTransmonElement(f"q{q}")
        el.clock_freqs.f01(5.0e9 + 0.1e9 * q)
        el.clock_freqs.f12(4.8e9 + 0.1e9 * q)
        el.clock_freqs.readout(7.0e9 + 0.05e9 * q)
        el.rxy.amp180(0.3)
        el.rxy.motzoi(0.1)
        el.rxy.duration(40e-9)
        el.measure.pulse_amp(0.1)
        el.measure.pulse_duration(1e-6)
        el.measure.integration_time(1e-6)
        el.measure.acq_delay(0.0)
        el.measure.acq_channel(q)
        device.add_element(el)
        elements.append(el)
    for q in range(4):
        edge = CompositeSquareEdge(parent_element_name=f"q{q}", child_element_name=f"q{q + 1}")
        edge.cz.square_amp(0.4)
        edge.cz.square_duration(32e-9)
        getattr(edge.cz, f"q{q}_phase_correction")(0.1)
        getattr(edge.cz, f"q{q + 1}_phase_correction")(0.2)
        device.add_edge(edge)
    device._bench_keep = elements  # keep the qcodes instruments alive
    return device


DEVICE = make_device()
COMPILER = SerialCompiler(name="bench_compiler", quantum_device=DEVICE)


def build(layers: int, seed: int) -> Schedule:
    sched = Schedule(f"layers{layers}_seed{seed}")
    for op in random_layers(5, layers, seed):
        if op[0] == "rz":
            sched.add(Rz(theta=op[2] * 180.0 / 3.141592653589793, qubit=f"q{op[1]}"))
        elif op[0] == "sx":
            sched.add(Rxy(theta=90.0, phi=0.0, qubit=f"q{op[1]}"))
        elif op[0] == "cz":
            sched.add(CZ(qC=f"q{op[1]}", qT=f"q{op[2]}"))
        else:
            sched.add(Measure(f"q{op[1]}", acq_index=0))
    return sched


def pulse_infos(compiled, out: list | None = None) -> list[dict]:
    """Every pulse of every schedulable, sub-schedules (measurements) included."""
    out = [] if out is None else out
    for schedulable in compiled.schedulables.values():
        op = compiled.operations[schedulable["operation_id"]]
        if hasattr(op, "schedulables"):
            pulse_infos(op, out)
            continue
        for info in op.data.get("pulse_info", []):
            if info.get("wf_func") and info.get("duration", 0) > 0:
                out.append(info)
    return out


def sample_all(infos) -> int:
    return sum(get_waveform(info, SAMPLE_RATE).shape[0] for info in infos)


def info() -> dict:
    return {"quantify_scheduler": quantify_scheduler.__version__,
            "python": sys.version.split()[0]}


def time_batch(layers: int, seeds: list[int], repeats: int) -> dict:
    schedules = [build(layers, s) for s in seeds]
    ops = sum(sum(count(random_layers(5, layers, s)).values()) for s in seeds)
    config = DEVICE.generate_compilation_config()
    warm = [COMPILER.compile(s, config=config) for s in schedules]  # warm-up
    sample_all([i for c in warm for i in pulse_infos(c)])
    result = {"ops": ops, "circuits": len(schedules), "compile_s": [], "sample_all_s": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        compiled = [COMPILER.compile(s, config=config) for s in schedules]
        t1 = time.perf_counter()
        infos = [i for c in compiled for i in pulse_infos(c)]
        t2 = time.perf_counter()
        samples = sample_all(infos)
        t3 = time.perf_counter()
        result["compile_s"].append(t1 - t0)
        result["sample_all_s"].append(t3 - t2)
    result.update(pulses=len(infos), samples=samples)
    return result


if __name__ == "__main__":
    serve({"info": info, "time": time_batch})
