"""Recalibrate qubits 1 and 2 and edge 1-2 on the embedded simulator, every node and the rb
step forced, and copy one plot of each kind of experiment into a directory (default
``calibration_plots`` in the current directory; ``docs/img/calibration`` regenerates the
documentation's figures).

    python examples/calibration_plots.py [DIRECTORY]

It works in a temporary LABQPU_HOME, so your own calibration store is not touched. Takes
about 40-60 s on 2 cores (2026-12-05/06, load ~1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path


def main(directory: str = "calibration_plots") -> None:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        os.environ["LABQPU_HOME"] = home
        from labqpu import LabProvider
        from labqpu.calibration import run_graph
        from labqpu.calibration.records import load_record

        with LabProvider() as provider:
            report = run_graph(provider.backend(), qubits=[1, 2], force=True)
        print(report.table())
        newest = {}
        for path in report.records:
            newest[load_record(path).kind] = path
        for kind, path in sorted(newest.items()):
            target = out / f"{kind}.png"
            shutil.copyfile(path.with_suffix(".png"), target)
            print(f"{kind:<24} {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("directory", nargs="?", default="calibration_plots",
                        help="where the plots go (default: calibration_plots)")
    main(parser.parse_args().directory)
