"""PNG plots of experiment records: data, fit, the chosen value, and the old value.

matplotlib's object API on an Agg canvas (no pyplot state), so plots can be written from any
thread and from scripts without a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labqpu.calibration.records import ExperimentRecord


def plot_rb(record: ExperimentRecord):
    """Figure of an RB record: survival of every sequence (dots), the mean per length with its
    standard error, the fitted decay, and the gate errors measured against the old ones."""
    from matplotlib.figure import Figure

    raw = record.raw
    lengths = np.asarray(raw["lengths"], dtype=float)
    survival = np.asarray(raw["survival"], dtype=float)
    fit = record.fit
    alpha = record.values["alpha"][0]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for j in range(survival.shape[1]):
        ax.plot(lengths, survival[:, j], ".", color="0.65", ms=4,
                label="each sequence" if j == 0 else None)
    mean = survival.mean(axis=1)
    sem = survival.std(axis=1, ddof=1) / np.sqrt(survival.shape[1]) \
        if survival.shape[1] > 1 else None
    ax.errorbar(lengths, mean, yerr=sem, fmt="o", color="C0", capsize=3, label="mean")
    m = np.linspace(0.0, lengths.max(), 300)
    ax.plot(m, fit["amplitude"] * alpha ** m + fit["baseline"], color="C1",
            label=f"fit A alpha^m + B, alpha = {alpha:.5f}")
    ax.axhline(fit["baseline"], color="0.4", ls=":", lw=1, label="B (readout of a mixed state)")
    epc, epc_err = record.values["epc"]
    lines = [f"EPC = {epc:.2e} ± {epc_err:.1e}   χ²ᵣ = {fit['reduced_chi2']:.2f}"]
    for key, (value, _) in record.values.items():
        if key.endswith(".error") and not key.startswith(("sy:", "x:")):
            old = record.old_values.get(key)
            was = "none" if old is None else f"{old:.2e}"
            lines.append(f"{key.removesuffix('.error')} error {value:.2e} (was {was})")
    ax.text(0.98, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top",
            fontsize=9, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.8"})
    ax.set_xlabel("Cliffords per sequence")
    ax.set_ylabel("P(return to |0…0⟩)")
    ax.set_ylim(min(fit["baseline"], float(survival.min())) - 0.05, 1.02)
    ax.set_title(f"randomized benchmarking, {record.subject} — {record.experiment}",
                 fontsize=10)
    ax.legend(loc="center left", fontsize=8)
    return fig


def save_plot(record: ExperimentRecord, directory: str | Path) -> Path:
    """Write ``<directory>/<experiment>.png`` for ``record``; returns its path."""
    if not record.kind.startswith("rb_"):
        raise ValueError(f"no plot for experiments of kind {record.kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.experiment}.png"
    plot_rb(record).savefig(path, dpi=110)
    return path
