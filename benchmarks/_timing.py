"""Timing and printing helpers shared by the benchmark scripts (run.py, compile_vs.py)."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """How hard to measure: repeats per figure and the minimum duration of one repeat."""

    repeats: int
    min_repeat_s: float
    rounds: int = 3  # interleaved rounds of labqpu and an out-of-process reference


def summary(doc: str) -> str:
    """The first paragraph of a benchmark's docstring, on one line: its ``--help`` text."""
    return " ".join(doc.split("\n\n")[0].split())


FULL = Budget(repeats=7, min_repeat_s=0.1, rounds=3)
QUICK = Budget(repeats=3, min_repeat_s=0.02, rounds=1)


def samples_per_call(fn: Callable[[], object], budget: Budget) -> list[float]:
    """Wall time (s) of one ``fn()`` call, once per repeat, after one untimed warm-up call.

    Each repeat runs ``fn`` enough times in a row to last at least ``budget.min_repeat_s``,
    so that timer resolution and loop overhead do not matter for microsecond calls.
    """
    fn()  # warm-up: numba dispatch/compilation, caches, lazy imports
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= budget.min_repeat_s:
            break
        number = max(number * 2, int(number * budget.min_repeat_s / max(elapsed, 1e-9) * 1.2))
    samples = [elapsed / number]
    for _ in range(budget.repeats - 1):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
    return samples


def interleaved(fns: list[Callable[[], object]], rounds: int) -> list[list[float]]:
    """Wall time (s) of each of ``fns``, called in turn once per round for ``rounds`` rounds
    after one untimed warm-up call of each: figures to compare with each other, taken in the
    same seconds, so that the machine's speed, which drifts by up to ~2x over minutes on a
    shared host, cancels in their ratios. For calls of milliseconds or more."""
    for fn in fns:
        fn()
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, kept in zip(fns, out, strict=True):
            t0 = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - t0)
    return out


def seconds_per_call(fn: Callable[[], object], budget: Budget) -> float:
    """Median of ``samples_per_call``."""
    return statistics.median(samples_per_call(fn, budget))


def fmt(x: float) -> str:
    """Three significant figures, no scientific notation for ordinary magnitudes."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    digits = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:,.{digits}f}"


def rate(per_s: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_s >= scale:
            return f"{fmt(per_s / scale)} {prefix}{unit}/s"
    return f"{fmt(per_s)} {unit}/s"


def dur(seconds: float) -> str:
    if seconds >= 1:
        return f"{fmt(seconds)} s"
    if seconds >= 1e-3:
        return f"{fmt(seconds * 1e3)} ms"
    if seconds >= 1e-6:
        return f"{fmt(seconds * 1e6)} µs"
    return f"{fmt(seconds * 1e9)} ns"


def span(values: list[float], show: Callable[[float], str]) -> str:
    """'a' or 'a-b' (min-max) of ``values`` shown with ``show``."""
    lo, hi = min(values), max(values)
    return show(lo) if show(lo) == show(hi) else f"{show(lo)}-{show(hi)}"


def speedup_words(labqpu_s: float, reference_s: float) -> str:
    s = reference_s / labqpu_s
    return f"labqpu {fmt(s)}x faster" if s >= 1 else f"labqpu {fmt(1 / s)}x slower"


@dataclass
class Line:
    """One printed comparison: labqpu's figure, the reference's figure (saying what each is)
    and the speed-up = reference time / labqpu time for the same work (> 1: labqpu faster)."""

    name: str
    labqpu_s: float
    reference_s: float
    labqpu_text: str
    reference_text: str
    note: str = ""

    @property
    def speedup(self) -> float:
        return self.reference_s / self.labqpu_s

    def text(self) -> str:
        note = f"; {self.note}" if self.note else ""
        return (f"{self.name}: labqpu {self.labqpu_text} | reference {self.reference_text} | "
                f"speed-up {fmt(self.speedup)} [{speedup_words(self.labqpu_s, self.reference_s)}"
                f"{note}]")

    def record(self) -> dict:
        return {"name": self.name, "labqpu_s": self.labqpu_s, "reference_s": self.reference_s,
                "labqpu": self.labqpu_text, "reference": self.reference_text,
                "speedup": self.speedup, "note": self.note}


def emit(lines: list[Line], out: list[dict]) -> None:
    for line in lines:
        print(line.text(), flush=True)
        out.append(line.record())


def info(text: str) -> None:
    """A context line (not a comparison)."""
    print(f"  . {text}", flush=True)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def machine() -> str:
    return f"{platform.platform()}, {platform.processor() or platform.machine()}"
