"""Kernel compile time: what the first job after installing pays before numba's cache holds it.

numba compiles each ``@njit(cache=True)`` kernel on its first call and stores the machine code
in ``__pycache__``; later processes load it. This script measures the compilation that a
fresh install goes through for one simulator job, in a child process whose numba cache
directory (``NUMBA_CACHE_DIR``) is a new empty one:

* the 5-qubit random-layer circuit of ``simulator.py`` (17 layers) is transpiled, compiled by
  labqpu's pulse compiler and run once on a new ``PhysicsEngine``: the compile time of each
  labqpu kernel (numba's ``numba:compile`` events; a helper compiled inside its caller is
  counted there too and marked "nested") and the whole step's wall time;
* reference, in the same run: the same step again in a second child process that reuses the
  first child's cache directory, i.e. the same work without compiling.

    python benchmarks/jit.py

The difference of the two wall times is what compiling costs; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import summary

HERE = Path(__file__).resolve().parent

CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from numba.core import event

stack, out = [], []

class Recorder(event.Listener):
    def on_start(self, e):
        stack.append(time.perf_counter())

    def on_end(self, e):
        t0 = stack.pop()
        f = e.data["dispatcher"].py_func
        if f.__module__.startswith("labqpu"):
            name = f.__module__.rsplit(".", 1)[-1] + "." + f.__name__
            out.append((time.perf_counter() - t0, name + (" (nested)" if stack else "")))

event.register("numba:compile", Recorder())
t0 = time.perf_counter()
import numpy as np
import simulator as S
prep = S._prepare(5, S.LAYERS, seed=1)
prep.engine.run(prep.wire, prep.settings, S.SHOTS, np.random.default_rng(7))
print(f"WALL {{time.perf_counter() - t0:.3f}}")
for dt, name in sorted(out, reverse=True):
    print(f"KERNEL {{dt:.3f}} {{name}}")
"""


def _child(cache_dir: str) -> tuple[float, list[tuple[float, str]]]:
    """(wall time in s, [(compile s, kernel)]) of the preparation and run in a new process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE))], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-2000:]}")
    wall, kernels = 0.0, []
    for line in done.stdout.splitlines():
        if line.startswith("WALL "):
            wall = float(line.split()[1])
        elif line.startswith("KERNEL "):
            _, seconds, name = line.split(" ", 2)
            kernels.append((float(seconds), name))
    return wall, kernels


def main() -> None:
    argparse.ArgumentParser(description=summary(__doc__)).parse_args()
    print(f"labqpu kernel compile time, {time.strftime('%Y-%m-%dT%H:%M:%S')}, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="labqpu-numba-") as cache:
        cold, kernels = _child(cache)
        warm, _ = _child(cache)
    print("\ncompile time per labqpu kernel (first call, empty cache):")
    for seconds, name in kernels:
        print(f"  {seconds:7.2f} s  {name}")
    top = sum(s for s, name in kernels if not name.endswith("(nested)"))
    print(f"\nlabqpu kernels compiled: {len(kernels)}, {top:.1f} s (outermost calls)")
    print(f"simulator job from scratch (transpile, compile, run): empty cache {cold:.1f} s | "
          f"reference: the same with the cache filled {warm:.1f} s | compiling costs "
          f"{cold - warm:.1f} s")


if __name__ == "__main__":
    main()
