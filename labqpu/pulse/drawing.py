"""``draw_program``: a matplotlib figure of a ``PulseProgram``.

One row per output port that plays something and one per acquisition input. Each output row
shows the played baseband amp x w[k] x exp(i phase) (I filled, Q as a line, |.| dotted) against
time in ns; the NCO carrier is not drawn: the row label gives the port's first IF (relative to
its LO; not on flux rows, which are baseband) and later changes are marked. On a rack of
several controllers each row also names its controller and port. Triangles mark where a
port's frame phase changes between plays (value in rad) and where its frequency changes (IF in
MHz). Acquisition windows are shaded on their input row (with qubit and classical bit) and,
lightly, across every row. Conditional plays (feed-forward blocks) are drawn apart from the
unconditional baseband: their I as a dashed line and |.| dotted (a pi pulse at a frame
phase far from 0 has a small I) over a hatched band, labelled with the
condition (``if a0=1``: acquisition 0 discriminated as 1); conditional phase shifts are marked
with their condition too.

matplotlib is imported here only, so ``labqpu.pulse`` imports without it; the figure is a
plain ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from labqpu.errors import PulseError
from labqpu.pulse.channels import ChannelMap

#: Longest stretch that is drawn sample by sample (samples); crop longer programs.
MAX_DRAWN_SAMPLES = 2_000_000
_I_COLOUR, _Q_COLOUR, _ACQ_COLOUR, _MARK_COLOUR = "#1f5fa8", "#d9731a", "#5a9e4b", "#8e2c8e"
_COND_COLOUR = "#b0232a"


#: Most lines one label lists (conditions, or phase and frequency marks; the rest are
#: counted).
_COND_LINES = 4


def _condition(program: Any, block: int) -> str:
    """``if a<k>=<v>`` for conditional block ``block``; a nested block lists its enclosing
    blocks' tests first (``if a0=1 & a1=0``)."""
    tests = []
    while block >= 0:
        tests.append(f"a{int(program.block_acq[block])}={int(program.block_value[block])}")
        block = int(program.block_parent[block])
    return "if " + " & ".join(reversed(tests))


def _grouped(labels: list[tuple[float, str]], span: float) -> list[tuple[float, list[str]]]:
    """``labels`` ((x in ns, text), by x) in groups that start at their first label's x and
    take every later label within 7 % of ``span`` (ns), each text once."""
    groups: list[tuple[float, list[str]]] = []
    for x, text in labels:
        if groups and x - groups[-1][0] < 0.07 * span:
            if text not in groups[-1][1]:
                groups[-1][1].append(text)
        else:
            groups.append((x, [text]))
    return groups


def _label(ax, x: float, y: float, texts: list[str], colour: str, va: str,
           offset: tuple[int, int]) -> None:
    """One label of ``texts``, a line each (at most ``_COND_LINES``, the rest counted), over a
    white box, at (``x`` ns, ``y``) moved by ``offset`` points."""
    if len(texts) > _COND_LINES:
        texts = [*texts[:_COND_LINES - 1], f"... {len(texts) - _COND_LINES + 1} more"]
    ax.annotate("\n".join(texts), (x, y), xytext=offset, textcoords="offset points",
                fontsize=6.5, color=colour, va=va,
                bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8,
                      "linewidth": 0})


def port_labels(channels: ChannelMap) -> tuple[dict[int, str], dict[int, str]]:
    """Row labels from the wiring: ({output port: "drive q0"}, {input port: "acquire q0"}).

    On a rack of several controllers each label has a second line naming the controller and
    its own port (``ctrl1:3``)."""
    outputs: dict[int, str] = {}
    inputs: dict[int, str] = {}

    def where(address: tuple[str, int]) -> str:
        return f"\n{address[0]}:{address[1]}" if len(channels.controllers) > 1 else ""

    for q, wiring in sorted(channels.qubits.items()):
        for kind in ("drive", "flux", "readout"):
            address = getattr(wiring, kind)
            outputs[channels.output(address)] = f"{kind} q{q}{where(address)}"
        inputs[channels.input(wiring.acquire)] = f"acquire q{q}{where(wiring.acquire)}"
    return outputs, inputs


def _wrap(phase: float) -> float:
    return math.remainder(phase, 2 * math.pi)


def draw_program(program: Any, *, channels: ChannelMap | None = None,
                 time_range_ns: tuple[float, float] | None = None,
                 title: str | None = None, width_in: float = 11.0):
    """Draw ``program`` (a ``PulseProgram``); returns a ``matplotlib.figure.Figure``.

    Args:
        channels: the device's channel map, to label rows ``drive q0`` instead of ``out 0``.
        time_range_ns: (start, stop) to draw, in ns; default the whole program.
        title: figure title; default the program's name, duration and snapshot.
        width_in: figure width (inches); the height grows with the number of rows.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fs = float(program.sample_rate_hz)
    ns_per_sample = 1e9 / fs
    lo, hi = 0, int(program.duration_samples)
    if time_range_ns is not None:
        try:
            finite = len(time_range_ns) == 2 and all(math.isfinite(float(t))
                                                     for t in time_range_ns)
        except (TypeError, ValueError):
            finite = False
        if not finite:
            raise PulseError(f"time_range_ns must be (start, stop) in ns, two finite numbers; "
                             f"got {time_range_ns!r}", parameter="time_range_ns")
        lo = max(0, math.floor(time_range_ns[0] / ns_per_sample))
        hi = min(hi, math.ceil(time_range_ns[1] / ns_per_sample))
        if hi <= lo:
            raise PulseError(f"time range {time_range_ns} ns holds no sample of the program",
                             parameter="time_range_ns")
    if hi - lo > MAX_DRAWN_SAMPLES:
        raise PulseError(f"program spans {hi - lo} samples; draw at most {MAX_DRAWN_SAMPLES} "
                         "at a time with time_range_ns=(start, stop)", parameter="time_range_ns")
    out_names, in_names = port_labels(channels) if channels is not None else ({}, {})
    out_ports = sorted({int(p) for p in program.play_port})
    in_ports = sorted({int(p) for p in program.acq_port})
    rows = [("out", p) for p in out_ports] + [("in", p) for p in in_ports]
    ratios = [1.0 if kind == "out" else 0.45 for kind, _ in rows] or [1.0]
    fig = Figure(figsize=(width_in, 0.9 + 1.15 * sum(ratios)), layout="constrained")
    axes = fig.subplots(len(ratios), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios})[:, 0]
    t_ns = np.arange(lo, hi) * ns_per_sample
    amps = program.play_amp.copy()
    refs = program.play_amp_ref
    if np.any(refs >= 0):  # a swept amplitude (no value of its own) is drawn at 1
        values = program.param_values[refs[refs >= 0]]
        amps[refs >= 0] = np.where(np.isfinite(values), values, 1.0)
    windows = [(int(s), int(d), int(p)) for s, d, p in zip(
        program.acq_start, program.acq_duration, program.acq_port, strict=True)]

    for ax, (kind, port) in zip(axes, rows, strict=False):
        for s, d, p in windows:
            own = kind == "in" and p == port  # its own input row; lightly on every other row
            if s < hi and s + d > lo:
                ax.axvspan(max(s, lo) * ns_per_sample, min(s + d, hi) * ns_per_sample,
                           color=_ACQ_COLOUR, alpha=0.35 if own else 0.06, lw=0)
        ax.axhline(0.0, color="0.6", lw=0.5)
        ax.grid(True, axis="x", color="0.9", lw=0.5)
        if kind == "out":
            first_if = _draw_port(ax, program, port, amps, lo, hi, t_ns, ns_per_sample)
            label = out_names.get(port, f"out {port}")
            if not label.startswith("flux"):  # a flux line is baseband: no LO, no IF
                label += f"\nIF {first_if}"
        else:
            label = in_names.get(port, f"in {port}")
            _draw_acquisitions(ax, program, port, lo, hi, ns_per_sample)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    axes[-1].set_xlabel("time (ns)")
    axes[-1].set_xlim(lo * ns_per_sample, hi * ns_per_sample)
    name = program.header.get("name", "pulse program")
    snap = f", calibration snapshot {program.snapshot_id}" if program.snapshot_id else ""
    fig.suptitle((title or f"{name}: {program.duration_samples} samples at {fs / 1e9:g} GS/s"
                  f"{snap}") + "\namplitude in units of the DAC's full scale; phases in rad",
                 fontsize=10)
    fig.legend(handles=[Patch(color=_I_COLOUR, alpha=0.5, label="I"),
                        Patch(color=_Q_COLOUR, label="Q"),
                        Patch(color=_ACQ_COLOUR, alpha=0.35, label="acquisition"),
                        Patch(color=_MARK_COLOUR, label="phase / frequency change"),
                        Patch(facecolor="none", edgecolor=_COND_COLOUR, hatch="///",
                              label="conditional play (feed-forward)")],
               loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    if not rows:
        axes[0].text(0.5, 0.5, "empty program", ha="center", va="center",
                     transform=axes[0].transAxes)
    return fig


def _draw_port(ax, program: Any, port: int, amps: np.ndarray, lo: int, hi: int,
               t_ns: np.ndarray, ns_per_sample: float) -> str:
    """Baseband of every play on ``port`` in [lo, hi), plus frame-change markers; returns the
    port's first IF as text."""
    signal = np.zeros(hi - lo, dtype=np.complex128)
    idx = np.flatnonzero(program.play_port == port)
    idx = idx[np.argsort(program.play_start[idx], kind="stable")]
    prev_phase = prev_freq = None
    peak = 0.0
    marks: list[tuple[float, str]] = []
    conditional: list[tuple[int, np.ndarray, str]] = []
    for i in idx:
        start = int(program.play_start[i])
        w = program.waveform(int(program.play_wave[i])).astype(np.complex128)
        phase, freq = float(program.play_phase_rad[i]), float(program.play_freq_hz[i])
        base = amps[i] * np.exp(1j * phase) * w
        peak = max(peak, float(np.max(np.abs(base), initial=0.0)))
        block = int(program.play_block[i])
        if block >= 0:
            conditional.append((start, base, _condition(program, block)))
            continue
        a, b = max(start, lo), min(start + len(w), hi)
        if a < b:
            signal[a - lo:b - lo] += base[a - start:b - start]
        notes = []
        ref = int(program.play_amp_ref[i])
        if ref >= 0 and not np.isfinite(program.param_values[ref]):
            notes.append(f"{program.param_names[ref]} swept (drawn at 1)")
        if prev_freq is not None and freq != prev_freq:
            notes.append(f"{freq / 1e6:+.2f} MHz")
        if prev_phase is not None and abs(_wrap(phase - prev_phase)) > 1e-9:
            notes.append(f"φ {_wrap(phase):+.2f} rad")
        if notes and lo <= start < hi:
            marks.append((start * ns_per_sample, ", ".join(notes)))
        prev_phase, prev_freq = phase, freq
    for j in np.flatnonzero(program.shift_port == port):
        start = int(program.shift_start[j])
        if lo <= start < hi:
            block = int(program.shift_block[j])
            cond = f" {_condition(program, block)}" if block >= 0 else ""
            marks.append((start * ns_per_sample,
                          f"shift {float(program.shift_phase_rad[j]):+.2f} rad{cond}"))
    marks.sort()
    ax.fill_between(t_ns, signal.real, step="mid", color=_I_COLOUR, alpha=0.5, lw=0)
    ax.plot(t_ns, signal.real, color=_I_COLOUR, lw=0.7, drawstyle="steps-mid")
    ax.plot(t_ns, signal.imag, color=_Q_COLOUR, lw=0.9, drawstyle="steps-mid")
    ax.plot(t_ns, np.abs(signal), color="0.25", lw=0.5, ls=":")
    top = max(peak, 1e-3) * 1.35
    ax.set_ylim(-top, top)
    span = max((hi - lo) * ns_per_sample, 1e-9)
    # Conditional plays that start close together (an else branch's copies, nested blocks)
    # share one label listing their conditions, drawn over a white box.
    labels: list[tuple[float, str]] = []
    for start, base, cond in sorted(conditional, key=lambda c: c[0]):
        a, b = max(start, lo), min(start + len(base), hi)
        if a >= b:
            continue
        ax.axvspan(a * ns_per_sample, b * ns_per_sample, facecolor="none",
                   edgecolor=_COND_COLOUR, hatch="///", alpha=0.35, lw=0)
        t = np.arange(a, b) * ns_per_sample
        ax.plot(t, base[a - start:b - start].real, color=_COND_COLOUR, lw=0.9, ls="--",
                drawstyle="steps-mid")
        ax.plot(t, np.abs(base[a - start:b - start]), color=_COND_COLOUR, lw=0.6, ls=":")
        labels.append((a * ns_per_sample, cond))
    for x, conds in _grouped(labels, span):
        _label(ax, x, -top * 0.95, conds, _COND_COLOUR, "bottom", (2, 0))
    # Marks closer than 7 % of the axis share one label, a line each, from the top down.
    for x, _ in marks:
        ax.plot([x], [top * 0.9], marker="v", color=_MARK_COLOUR, ms=5, clip_on=False)
    for x, texts in _grouped(marks, span):
        _label(ax, x, top * 0.9, texts, _MARK_COLOUR, "top", (5, -3))
    if idx.size == 0:
        return ""
    return f"{float(program.play_freq_hz[idx[0]]) / 1e6:+.2f} MHz"


def _draw_acquisitions(ax, program: Any, port: int, lo: int, hi: int,
                       ns_per_sample: float) -> None:
    """Label each acquisition window of input ``port``: its index (``a<i>``, as feed-forward
    conditions name it), qubit, classical bit (none for an active reset's), demod IF."""
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    for i in np.flatnonzero(program.acq_port == port):
        s, d = int(program.acq_start[i]), int(program.acq_duration[i])
        if s >= hi or s + d <= lo:
            continue
        a, b = max(s, lo), min(s + d, hi)
        # A label near either end of the axis starts or ends with its window, inside it.
        where = (a + b) / 2 - lo
        ha, x = (("left", a) if where < 0.2 * (hi - lo) else ("right", b)
                 if where > 0.8 * (hi - lo) else ("center", (a + b) / 2))
        clbit = int(program.acq_clbit[i])
        into = f"→ c{clbit}" if clbit >= 0 else "(no bit)"
        ax.text(x * ns_per_sample, 0, f"a{i}: q{int(program.acq_qubit[i])} {into}  "
                f"({float(program.acq_freq_hz[i]) / 1e6:+.2f} MHz)", ha=ha, va="center",
                fontsize=8)


def save_program_figure(program: Any, path: str, *, dpi: int = 130,
                        **options: Mapping[str, Any]) -> None:
    """Draw ``program`` and write the image to ``path`` (format from its suffix)."""
    fig = draw_program(program, **options)
    fig.savefig(path, dpi=dpi)
