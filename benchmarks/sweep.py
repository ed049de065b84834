"""A 100-point Rabi as one controller-bound sweep, against the same 100 points as 100 programs.

Both run on the embedded simulator of lab5, qubit 0, in the same process and the same run:

* **sweep**: one ``PulseProgram`` whose drive amplitude is the parameter ``amp``, run with
  ``parameter_binds={"amp": amplitudes}``: one upload, one run, the controller binding each
  point (docs/protocol.md section 4.7);
* **reference**: what a user does without it: the 100 programs with the amplitude written in
  (``param_values`` replaced point by point), in one job: 100 uploads and 100 runs.

The amplitudes are new each repetition (a small random offset), so no program is already held
by the controller. Usage::

    python benchmarks/sweep.py            # 5 repetitions, 200 shots per point
    python benchmarks/sweep.py --quick    # 2 repetitions
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace

import _timing as tm
import numpy as np
from _timing import info

POINTS = 100
SHOTS = 200
QUBIT = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    args = parser.parse_args()
    os.environ.setdefault("LABQPU_HOME", tempfile.mkdtemp(prefix="labqpu-bench-"))
    from labqpu import LabProvider
    from labqpu.calibration.bootstrap import load_design
    from labqpu.calibration.experiments import Kit
    from labqpu.calibration.runner import default_design_path, working_from_snapshot
    from labqpu.drivers.controller import ControllerClient

    info(f"machine: {tm.machine()}; load average {tm.load_average()}")
    with LabProvider() as provider:
        backend = provider.backend()
        kit = Kit(backend, working_from_snapshot(
            backend.snapshot, load_design(default_design_path(backend.name))))
        b = kit.builder([QUBIT])
        b.parameter("amp", 0.0)
        kit.readout(b, QUBIT, kit.drive(b, QUBIT, 0, "amp"), 0)
        program = b.build(num_clbits=1)
        endpoint = backend.config.controllers[0].endpoint

        def counters() -> tuple[int, int]:
            with ControllerClient(endpoint, timeout_s=5.0) as client:
                status = client.status()
            return int(status["uploads_total"]), int(status["runs_total"])

        rng = np.random.default_rng(1)
        pi = kit.work.qubits[QUBIT]["pi_amplitude"]
        backend.run(program, shots=10, parameter_binds={"amp": [0.1]}).result()  # warm up
        swept, single, counts = [], [], {}
        for _ in range(2 if args.quick else 5):
            amps = np.linspace(0, 2 * pi, POINTS) + rng.uniform(0, 1e-6)
            before = counters()
            t0 = time.perf_counter()
            backend.run(program, shots=SHOTS, parameter_binds={"amp": amps}).result()
            swept.append(time.perf_counter() - t0)
            middle = counters()
            programs = [replace(program, param_values=np.array([a])) for a in amps]
            t0 = time.perf_counter()
            backend.run(programs, shots=SHOTS).result()
            single.append(time.perf_counter() - t0)
            after = counters()
            counts = {"sweep": tuple(int(x) for x in np.subtract(middle, before)),
                      "reference": tuple(int(x) for x in np.subtract(after, middle))}
    s, r = statistics.median(swept), statistics.median(single)
    info(f"{POINTS}-point Rabi, {SHOTS} shots per point, median of {len(swept)}:")
    info(f"  sweep (parameter_binds): {s * 1e3:8.1f} ms   uploads, runs: {counts['sweep']}")
    info(f"  reference (100 programs): {r * 1e3:8.1f} ms   uploads, runs: "
         f"{counts['reference']}")
    info(f"  ratio: the sweep takes {s / r:.2f} of the reference's time ({r / s:.1f}x faster)")


if __name__ == "__main__":
    main()
