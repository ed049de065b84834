"""labqpu's pulse compiler against legacy Qiskit 1.4 Pulse and quantify-scheduler, run for real.

Usage::

    python benchmarks/compile_vs.py              # 3 interleaved rounds, scaling up to 1001 ops
    python benchmarks/compile_vs.py --quick      # 1 round, smaller batches
    python benchmarks/compile_vs.py --ref-max-ops 10001   # references at 10k ops too (slow)
    python benchmarks/compile_vs.py --only per-circuit,batch,scaling --json out.json

The references cannot share labqpu's environment (legacy Pulse needs ``qiskit<2``;
quantify-scheduler pins its own stack), so each runs in its own virtual environment under
``benchmarks/.venvs/`` (created with ``pip install`` on first use, git-ignored) as a worker
process that this script drives over a pipe. labqpu compiles in this process. Each round times
legacy Pulse, then labqpu, then quantify-scheduler, then labqpu again, back to back on the same
machine, so that the ratios of a round share the machine's load.

The circuit (``refs/circuitspec.py``, identical in all three environments): 5 qubits on a
line, ``layers`` layers of rz(random angle) + sx on every qubit and a two-qubit gate on
alternating edges, then a measurement per qubit. 8 layers give 101 native ops (40 rz, 40 sx,
16 two-qubit gates, 5 measurements).

* labqpu: ``compile_circuit`` of that circuit (cz) against the shipped lab5 calibration:
  schedule, virtual Z, waveform synthesis, program arrays. "warm": the compiler's caches
  (pulse parameters and waveforms per calibration snapshot) hold this snapshot, as in a lab
  that runs many circuits against one calibration; "cold": ``clear_caches()`` before every
  compilation, so every duration, parameter and waveform is looked up and synthesised again.
* legacy Qiskit 1.4 Pulse (``refs/legacy_pulse.py``): ``qiskit.schedule()`` of the circuit
  on ``Fake7QPulseV1`` (5-qubit path 0-1-3-5-4, cx — its native two-qubit gate — in place of
  cz), plus sampling the waveform of every ``Play`` (what a backend without parametric pulses
  receives); a second line samples each distinct pulse only once (the most favourable
  reading for legacy Pulse).
* quantify-scheduler (``refs/quantify_device.py``): ``SerialCompiler.compile`` with the
  device's compilation config (gates to pulses and absolute timing, no hardware backend) on
  five ``BasicTransmonElement``s; a second line adds sampling every pulse with quantify's
  ``get_waveform``, the work labqpu's figure includes.

Per op = per native op of the circuit (barriers excluded), the same count on every side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _timing as tm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFS = HERE / "refs"
VENVS = HERE / ".venvs"
sys.path.insert(0, str(REFS))

from circuitspec import count, random_layers  # noqa: E402

#: name -> (pip requirement, worker script, import check, what it is)
REFERENCES = {
    "legacy": ("qiskit<2", "legacy_pulse.py",
               "import qiskit, qiskit.pulse; assert qiskit.__version__ < '2'",
               "legacy Qiskit 1.4 Pulse"),
    "quantify": ("quantify-scheduler", "quantify_device.py", "import quantify_scheduler",
                 "quantify-scheduler"),
}
SCALING_LAYERS = (1, 8, 83, 833)  # 17, 101, 1001, 10001 ops
SECTIONS = ("per-circuit", "batch", "scaling")


# --------------------------------------------------------------------------- environments


def ensure_venv(name: str) -> tuple[Path | None, str]:
    """(python of the reference's venv, '') or (None, why it could not be made)."""
    requirement, _, check, _ = REFERENCES[name]
    root = VENVS / name
    python = root / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", check],
                                          capture_output=True).returncode == 0:
        return python, ""
    tm.info(f"creating {root.relative_to(REPO)}: python -m venv, pip install '{requirement}' "
           "(first run only; a few minutes)")
    made = subprocess.run([sys.executable, "-m", "venv", "--clear", root],
                          capture_output=True, text=True)
    if made.returncode:
        return None, f"python -m venv {root} failed: {made.stderr.strip()[-800:]}"
    pip = subprocess.run([python, "-m", "pip", "install", "-q", requirement],
                         capture_output=True, text=True)
    if pip.returncode:
        tail = "\n".join(line for line in pip.stderr.splitlines()
                         if "is ignored" not in line)[-1500:]
        return None, f"pip install '{requirement}' failed (exit {pip.returncode}):\n{tail}"
    ok = subprocess.run([python, "-c", check], capture_output=True, text=True)
    if ok.returncode:
        return None, f"installed, but '{check}' fails: {ok.stderr.strip()[-800:]}"
    return python, ""


class Worker:
    """A reference worker process (refs/*.py in its own venv), one JSON request per line."""

    def __init__(self, name: str, python: Path) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in close())
            "w+", prefix=f"labqpu-bench-{name}-",
                                               suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, REFS / REFERENCES[name][1]], cwd=REFS,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)

    def call(self, cmd: str, **args) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"{self.name} worker died:\n{self.log.read()[-2000:]}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"{self.name} worker: {reply['error']}\n{reply['traceback']}")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def start_workers(names: list[str]) -> dict[str, Worker | str]:
    """name -> a running Worker, or the reason it is not measured."""
    workers: dict[str, Worker | str] = {}
    for name in names:
        python, why = ensure_venv(name)
        if python is None:
            workers[name] = why
            continue
        worker = Worker(name, python)
        try:
            about = worker.call("info")
        except RuntimeError as exc:
            workers[name] = str(exc)
            worker.close()
            continue
        tm.info(f"{REFERENCES[name][3]} worker: "
               + ", ".join(f"{k} {v}" for k, v in about.items()))
        workers[name] = worker
    return workers


# --------------------------------------------------------------------------- labqpu side


class Labqpu:
    """The shipped lab5 calibration and wiring, and the benchmark circuits as qiskit circuits."""

    def __init__(self) -> None:
        from qiskit import QuantumCircuit

        from labqpu.pulse import compiler
        from labqpu.rack.config import default_config_path, load_config
        from labqpu.store import CalibrationStore

        self.compiler = compiler
        self.QuantumCircuit = QuantumCircuit
        with tempfile.TemporaryDirectory(prefix="labqpu-bench-") as tmp:
            store = CalibrationStore(Path(tmp) / "calibration.sqlite")
            try:
                document = json.loads(
                    (REPO / "labqpu" / "data" / "lab5_calibration.json").read_text())
                self.snapshot = store.import_json(document)
            finally:
                store.close()
        self.channels = load_config(default_config_path()).channels

    def circuit(self, layers: int, seed: int):
        qc = self.QuantumCircuit(5, 5, name=f"layers{layers}_seed{seed}")
        for op in random_layers(5, layers, seed):
            if op[0] == "rz":
                qc.rz(op[2], op[1])
            elif op[0] == "sx":
                qc.sx(op[1])
            elif op[0] == "cz":
                qc.cz(op[1], op[2])
            else:
                qc.measure(op[1], op[1])
        return qc

    def compile_fn(self, circuits: list, mode: str) -> Callable[[], object]:
        """A call compiling ``circuits``: ``warm`` (caches hold this calibration), ``synth``
        (warm, plus synthesising every distinct waveform of the programs again, i.e. a
        compilation without the waveform cache) or ``cold`` (all caches cleared first)."""
        compiler = self.compiler
        compile_circuit, clear = compiler.compile_circuit, compiler.clear_caches
        snapshot, channels = self.snapshot, self.channels
        for qc in circuits[:1]:
            compile_circuit(qc, snapshot, channels)
        keys = compiler.tables_for(snapshot, channels).program_waveforms()
        synthesize = compiler.synthesize

        def warm() -> None:
            for qc in circuits:
                compile_circuit(qc, snapshot, channels)

        def synth() -> None:
            for qc in circuits:
                compile_circuit(qc, snapshot, channels)
                for key in keys:
                    synthesize(key)

        def cold() -> None:
            for qc in circuits:
                clear()
                compile_circuit(qc, snapshot, channels)

        return {"warm": warm, "synth": synth, "cold": cold}[mode]


def ops_of(layers: int, seeds: list[int]) -> int:
    return sum(sum(count(random_layers(5, layers, s)).values()) for s in seeds)


def per_op(seconds: float, ops: int) -> str:
    return f"{tm.dur(seconds / ops)}/op"


# --------------------------------------------------------------------------- sections


def per_circuit(lab: Labqpu, workers: dict, budget: tm.Budget, out: list[dict]) -> None:
    layers, seeds = 8, [1]
    ops = ops_of(layers, seeds)
    circuits = [lab.circuit(layers, s) for s in seeds]
    program = lab.compiler.compile_circuit(circuits[0], lab.snapshot, lab.channels)
    print(f"\n[compile] one circuit of {ops} native ops ({count(random_layers(5, layers, 1))});"
          f" labqpu program: {program.play_port.shape[0]} plays, {program.num_waveforms} "
          f"unique waveforms; {budget.rounds} interleaved round(s)")
    rounds: list[dict] = []
    for r in range(budget.rounds):
        row: dict = {}
        if isinstance(workers.get("legacy"), Worker):
            row["legacy"] = workers["legacy"].call("time", layers=layers, seeds=seeds,
                                                   repeats=3)
        row["warm"] = tm.seconds_per_call(lab.compile_fn(circuits, "warm"), budget)
        row["synth"] = tm.seconds_per_call(lab.compile_fn(circuits, "synth"), budget)
        row["cold"] = tm.seconds_per_call(lab.compile_fn(circuits, "cold"), budget)
        if isinstance(workers.get("quantify"), Worker):
            row["quantify"] = workers["quantify"].call("time", layers=layers, seeds=seeds,
                                                       repeats=5)
        row["warm2"] = tm.seconds_per_call(lab.compile_fn(circuits, "warm"), budget)
        rounds.append(row)
        tm.info(f"round {r + 1}: labqpu warm {per_op(row['warm'], ops)} / "
               f"{per_op(row['warm2'], ops)}, + synthesis {per_op(row['synth'], ops)}, cold "
               f"{per_op(row['cold'], ops)}"
               + (f"; legacy schedule {tm.dur(statistics.median(row['legacy']['schedule_s']))}"
                  f" + sample every Play {tm.dur(statistics.median(row['legacy']['sample_all_s']))}"
                  if "legacy" in row else "")
               + (f"; quantify compile {tm.dur(statistics.median(row['quantify']['compile_s']))}"
                  if "quantify" in row else ""))
    warm = [min(r["warm"], r["warm2"]) for r in rounds]
    flavours = [("warm", warm, "warm caches"),
                ("+ synthesis", [r["synth"] for r in rounds],
                 f"warm + synthesising its {program.num_waveforms} distinct waveforms again"),
                ("cold", [r["cold"] for r in rounds],
                 "cold: all caches cleared, as after a recalibration")]
    _reference_lines("one circuit", ops, rounds, flavours, workers, out)


def _median_sum(reply: dict, *keys: str) -> float:
    return statistics.median(sum(reply[k][i] for k in keys) for i in range(len(reply[keys[0]])))


def _reference_lines(what: str, ops: int, rounds: list[dict], flavours: list[tuple],
                     workers: dict, out: list[dict]) -> None:
    """Print labqpu against each reference: ranges over rounds, speed-up range per round."""
    def line(name: str, lab: list[float], ref: list[float], lab_what: str, ref_what: str,
             note: str = "") -> None:
        speedups = [b / a for a, b in zip(lab, ref, strict=True)]
        mid = sorted(range(len(lab)), key=lambda i: speedups[i])[len(lab) // 2]  # median round
        row = tm.Line(name, lab[mid], ref[mid],
                     f"{tm.span([t / ops for t in lab], tm.dur)}/op ({lab_what})",
                     f"{tm.span([t / ops for t in ref], tm.dur)}/op ({ref_what})",
                     "; ".join(x for x in (
                         f"per round {', '.join(tm.fmt(s) for s in speedups)}"
                         if len(lab) > 1 else "", note) if x))
        tm.emit([row], out)

    legacy = workers.get("legacy")
    if isinstance(legacy, Worker):
        for key, lab, lab_what in flavours:
            legs = [r["legacy"] for r in rounds]
            n = legs[0]["plays"]
            line(f"{what} vs legacy Pulse, schedule + sample every Play, labqpu {key}", lab,
                 [_median_sum(x, "schedule_s", "sample_all_s") for x in legs], lab_what,
                 f"qiskit.schedule() + get_waveform() of all {n} Plays, Qiskit 1.4")
            line(f"{what} vs legacy Pulse, schedule + sample each distinct pulse once, labqpu "
                 f"{key}", lab, [_median_sum(x, "schedule_s", "sample_unique_s") for x in legs],
                 lab_what, "qiskit.schedule() + get_waveform() once per distinct pulse")
    else:
        print(f"{what} vs legacy Pulse: "
              + ("not requested (--refs)" if legacy is None else f"NOT MEASURED: {legacy}"))
    quantify = workers.get("quantify")
    if isinstance(quantify, Worker):
        for key, lab, lab_what in flavours:
            qs = [r["quantify"] for r in rounds]
            line(f"{what} vs quantify-scheduler device compile, labqpu {key}", lab,
                 [statistics.median(x["compile_s"]) for x in qs], lab_what,
                 "SerialCompiler.compile, device config; samples no waveform")
            line(f"{what} vs quantify-scheduler device compile + sampling, labqpu {key}", lab,
                 [_median_sum(x, "compile_s", "sample_all_s") for x in qs], lab_what,
                 f"compile + get_waveform() of all {qs[0]['pulses']} pulses")
    else:
        print(f"{what} vs quantify-scheduler: "
              + ("not requested (--refs)" if quantify is None else f"NOT MEASURED: {quantify}"))


def batch(lab: Labqpu, workers: dict, budget: tm.Budget, out: list[dict], n_lab: int,
          n_legacy: int, n_quantify: int) -> None:
    layers = 8
    print(f"\n[batch] labqpu compiles {n_lab} different circuits of {layers} layers in a loop "
          f"(seeds 1..{n_lab}); legacy Pulse schedules {n_legacy} in one schedule() call; "
          f"quantify compiles {n_quantify}; per-op times compare")
    circuits = [lab.circuit(layers, s) for s in range(1, n_lab + 1)]
    ops_lab = ops_of(layers, list(range(1, n_lab + 1)))
    one_repeat = tm.Budget(repeats=max(2, budget.repeats // 3), min_repeat_s=0.0)
    rounds = []
    for _ in range(budget.rounds):
        row: dict = {}
        if isinstance(workers.get("legacy"), Worker):
            row["legacy"] = workers["legacy"].call("time", layers=layers,
                                                   seeds=list(range(1, n_legacy + 1)),
                                                   repeats=2)
        row["warm"] = tm.seconds_per_call(lab.compile_fn(circuits, "warm"), one_repeat)
        if isinstance(workers.get("quantify"), Worker):
            row["quantify"] = workers["quantify"].call("time", layers=layers,
                                                       seeds=list(range(1, n_quantify + 1)),
                                                       repeats=2)
        rounds.append(row)
    warm = [r["warm"] for r in rounds]
    tm.info(f"labqpu: {n_lab} circuits, {ops_lab} ops in {tm.span(warm, tm.dur)} "
           f"({tm.span([w / n_lab for w in warm], tm.dur)}/circuit, "
           f"{tm.fmt(n_lab / statistics.median(warm))} circuits/s)")
    # Compare per op: scale each reference's batch time to labqpu's op count.
    for name, n_ref in (("legacy", n_legacy), ("quantify", n_quantify)):
        if isinstance(workers.get(name), Worker):
            ops_ref = ops_of(layers, list(range(1, n_ref + 1)))
            for r in rounds:
                for key in [k for k in r[name] if k.endswith("_s")]:
                    r[name][key] = [t * ops_lab / ops_ref for t in r[name][key]]
    _reference_lines(f"batch ({n_lab} circuits; references {n_legacy} legacy / {n_quantify} "
                     "quantify, per op)", ops_lab, rounds, [("warm", warm, "warm caches")],
                     workers, out)


def scaling(lab: Labqpu, workers: dict, budget: tm.Budget, out: list[dict],
            ref_max_ops: int) -> None:
    print(f"\n[scaling] one circuit of 17, 101, 1001 and 10001 native ops (1, 8, 83, 833 "
          f"layers); references up to {ref_max_ops} ops")
    for layers in SCALING_LAYERS:
        ops = ops_of(layers, [1])
        circuits = [lab.circuit(layers, 1)]
        rounds = []
        for _ in range(budget.rounds if ops <= 1001 else 1):
            row: dict = {}
            use_refs = ops <= ref_max_ops
            if use_refs and isinstance(workers.get("legacy"), Worker):
                row["legacy"] = workers["legacy"].call("time", layers=layers, seeds=[1],
                                                       repeats=2 if ops > 101 else 3)
            row["warm"] = tm.seconds_per_call(lab.compile_fn(circuits, "warm"), budget)
            row["synth"] = tm.seconds_per_call(lab.compile_fn(circuits, "synth"), budget)
            row["cold"] = tm.seconds_per_call(lab.compile_fn(circuits, "cold"), budget)
            if use_refs and isinstance(workers.get("quantify"), Worker):
                row["quantify"] = workers["quantify"].call("time", layers=layers, seeds=[1],
                                                           repeats=2 if ops > 101 else 3)
            rounds.append(row)
        flavours = [("warm", [r["warm"] for r in rounds], "warm caches"),
                     ("+ synthesis", [r["synth"] for r in rounds],
                      "warm + every distinct waveform synthesised again")]
        for key, times, _ in [*flavours, ("cold", [r["cold"] for r in rounds], "")]:
            tm.info(f"{ops} ops: labqpu {key} {tm.span(times, tm.dur)}/circuit = "
                    f"{tm.span([t / ops for t in times], tm.dur)}/op")
        if ops <= ref_max_ops:
            refs = {k: v for k, v in workers.items() if all(k in r for r in rounds)}
            _reference_lines(f"scaling {ops} ops", ops, rounds, flavours, refs, out)


def main(argv: list[str] | None = None, out: list[dict] | None = None) -> int:
    parser = argparse.ArgumentParser(description=tm.summary(__doc__))
    parser.add_argument("--quick", action="store_true", help="1 round, smaller batches")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--refs", default="legacy,quantify",
                        help="references to run (legacy, quantify; empty for none)")
    parser.add_argument("--ref-max-ops", type=int, default=1001,
                        help="largest scaling circuit the references compile (10001: slow)")
    parser.add_argument("--batch", type=int, default=1000, help="labqpu batch size")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    if set(sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(set(sections) - set(SECTIONS))}")
    budget = tm.QUICK if args.quick else tm.FULL
    standalone = out is None
    out = [] if out is None else out
    if standalone:
        print(f"labqpu compile vs legacy Pulse and quantify-scheduler "
              f"({'quick' if args.quick else 'full'}), "
              f"{time.strftime('%Y-%m-%dT%H:%M:%S')}; {tm.machine()}")
        print(f"load average at start {tm.load_average()} (other processes add noise)")
        print("speed-up = reference time / labqpu time for the same circuit (> 1: labqpu "
              "faster); figures are medians, ranges are min-max over interleaved rounds")
    t0 = time.perf_counter()
    workers = start_workers([r.strip() for r in args.refs.split(",") if r.strip()])
    try:
        lab = Labqpu()
        if "per-circuit" in sections:
            per_circuit(lab, workers, budget, out)
        if "batch" in sections:
            batch(lab, workers, budget, out, n_lab=args.batch if not args.quick else 100,
                  n_legacy=3 if args.quick else 10, n_quantify=10 if args.quick else 50)
        if "scaling" in sections:
            scaling(lab, workers, budget, out, args.ref_max_ops)
    finally:
        for worker in workers.values():
            if isinstance(worker, Worker):
                worker.close()
    if standalone:
        print(f"\ntotal {time.perf_counter() - t0:.1f} s; load average at end "
              f"{tm.load_average()}")
        if args.json is not None:
            args.json.write_text(json.dumps({"results": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
