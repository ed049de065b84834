"""PNG plots of experiment records: data, fit, the chosen value, and the old value.

RB records have their own figure (:func:`plot_rb`); every other record is a sweep
(:func:`plot_sweep`).

matplotlib's object API on an Agg canvas (no pyplot state), so plots can be written from any
thread and from scripts without a display. The axes sit at fixed margins (inches) rather than
under a layout engine: constrained layout drew each figure twice and was ~35 % of a plot's
time, in a calibration run that writes one plot per experiment. So that tick labels fit the
margins, the y axis switches to a power-of-ten multiplier outside 1e-3..1e4, the x axis has at
most ~7 ticks, and long category labels wrap. An axis in seconds, hertz or amperes (a label
ending in " (s)", " (Hz)" or " (A)") ticks in engineering units, one prefix per axis (25.0 µs,
7.0375 GHz, -40 µA), when at most four decimals give every tick exactly; the label then drops
its unit.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from labqpu.calibration.records import ExperimentRecord
from labqpu.errors import CalibrationError

#: Figure width and the margins around the data axes (inches): room for the rotated y label
#: and its tick labels on the left, the title on top, the x label and ticks below.
WIDTH_IN = 6.4
LEFT_IN, RIGHT_IN, TOP_IN, BOTTOM_IN = 1.0, 0.45, 0.4, 0.75
#: Height of the data axes and of one line of the values' text under a sweep (inches).
AXES_IN = 3.4
LINE_IN = 0.16
#: A sweep's legend sits under the axes, above its values' text, in this many columns (inside
#: the axes, "best" still covered data that fill them, a Ramsey fringe's); height of one row.
LEGEND_COLUMNS = 2
LEGEND_ROW_IN = 0.17
#: Characters per line of the reason a rejected record gives, above its values.
REJECTED_CHARS = 84
#: Most intervals between x ticks; characters per line of a category label on the x axis.
X_BINS = 6
TICK_LABEL_CHARS = 12
#: Units of an axis (its label's last words) whose ticks may be in engineering units, the
#: SI prefixes they may take (by power of ten), and the most decimals their labels may have.
ENGINEERING_UNITS = {" (s)": "s", " (Hz)": "Hz", " (A)": "A"}
SI_PREFIXES = {-12: "p", -9: "n", -6: "µ", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T"}
ENGINEERING_DECIMALS = 4


def _unit(text: str, units: dict[str, str]) -> str | None:
    """The unit of ``units`` whose key ``text`` ends with (an axis label's " (Hz)", a value
    name's "_hz"), or None."""
    return next((unit for suffix, unit in units.items() if text.endswith(suffix)), None)


def _si_exponent(magnitude: int) -> int:
    """The power of ten of the SI prefix for a number of ``magnitude`` (its floor log10):
    a multiple of 3 within :data:`SI_PREFIXES`."""
    return min(max(3 * math.floor(magnitude / 3), min(SI_PREFIXES)), max(SI_PREFIXES))


def _figure(text_in: float):
    """A figure with data axes at the fixed margins and ``text_in`` inches below them; the
    y tick labels use a power-of-ten multiplier outside 1e-3..1e4 (they must fit the left
    margin)."""
    from matplotlib.figure import Figure

    height = TOP_IN + AXES_IN + BOTTOM_IN + text_in
    fig = Figure(figsize=(WIDTH_IN, height))
    ax = fig.add_axes((LEFT_IN / WIDTH_IN, (text_in + BOTTOM_IN) / height,
                       (WIDTH_IN - LEFT_IN - RIGHT_IN) / WIDTH_IN, AXES_IN / height))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return fig, ax, height


def _x_ticks(ax, raw: dict) -> bool:
    """The x axis's ticks: the record's category labels (wrapped), or at most ``X_BINS``
    intervals, in engineering units where :func:`_engineering` puts them; True when the ticks
    carry the unit (``25 µs``)."""
    from matplotlib.ticker import MaxNLocator

    if "x_ticks" in raw:
        ax.set_xticks(raw["x"], [textwrap.fill(str(t), TICK_LABEL_CHARS)
                                 for t in raw["x_ticks"]])
        return False
    ax.xaxis.set_major_locator(MaxNLocator(nbins=X_BINS, steps=[1, 2, 2.5, 5, 10]))
    return _engineering(ax.xaxis, raw.get("x_label", ""))


def _engineering(axis, label: str) -> bool:
    """Tick ``axis`` in engineering units when ``label`` ends in one of
    :data:`ENGINEERING_UNITS`: one SI prefix for the whole axis (its largest tick's) and as
    many decimals as the ticks need to read exactly, at most :data:`ENGINEERING_DECIMALS`
    (ticks 0.1 us apart at 7.1155 s would need more, and keep matplotlib's offset); True when
    it does."""
    from matplotlib.ticker import FuncFormatter

    unit = _unit(label, ENGINEERING_UNITS)
    if unit is None:
        return False
    low, high = axis.get_view_interval()
    ticks = np.array([t for t in axis.get_major_locator().tick_values(low, high)
                      if low <= t <= high])
    if ticks.size < 2:
        return False
    exponent = _si_exponent(math.floor(math.log10(float(np.abs(ticks).max()))))
    scaled = ticks / 10.0 ** exponent
    exact = 1e-6 * float(np.diff(scaled).min())
    decimals = next((d for d in range(ENGINEERING_DECIMALS + 1)
                     if np.all(np.abs(np.round(scaled, d) - scaled) <= exact)), None)
    if decimals is None:
        return False
    suffix = f" {SI_PREFIXES[exponent]}{unit}"
    axis.set_major_formatter(FuncFormatter(
        lambda value, _: f"{value / 10.0 ** exponent + 0.0:.{decimals}f}{suffix}"))
    return True


def _series(raw: dict) -> list[tuple[list, list]]:
    """(x, y) of each data series of a sweep record."""
    return [(data["x"], data["y"]) if isinstance(data, dict) else (raw["x"], data)
            for data in raw.get("series", {}).values()]


#: How far beyond the data's x span (as a share of it) a mark is still drawn: an old value far
#: off (a T1 typed as 55 s over a 200 us scan) would squash every point into one edge.
MARK_REACH = 0.5


def _within_reach(value: float, raw: dict) -> bool:
    """Whether ``value`` lies within :data:`MARK_REACH` of the data's x span (the text under
    the axes names it either way)."""
    xs = np.concatenate([np.ravel(np.asarray(x, dtype=float)) for x, _ in _series(raw)]
                        or [np.empty(0)])
    if xs.size == 0:
        return True
    low, high = float(xs.min()), float(xs.max())
    reach = MARK_REACH * (high - low)
    return low - reach <= value <= high + reach


def _legend_below(fig, text_in: float, height: float) -> None:
    """The figure's legend at the top of the ``text_in`` inches under its axes (of a figure
    ``height`` inches high), in ``LEGEND_COLUMNS`` columns."""
    fig.legend(loc="upper left", bbox_to_anchor=(0.1 / WIDTH_IN, (text_in - 0.05) / height),
               ncols=LEGEND_COLUMNS, fontsize=7, frameon=False, borderaxespad=0.0,
               borderpad=0.0, handlelength=1.5, columnspacing=1.5)


def _lines_below(fig, lines: list[str], top_in: float, height: float) -> None:
    """``lines`` of values in the figure's text under its axes, from ``top_in`` inches above
    the bottom (under the legend) of a figure ``height`` inches high."""
    fig.text(0.15 / WIDTH_IN, (top_in - 0.15) / height, "\n".join(lines), ha="left", va="top",
             fontsize=8, family="monospace")


def plot_rb(record: ExperimentRecord):
    """Figure of an RB record: survival of every sequence (dots), the mean per length with its
    standard error, the fitted decay, and the gate errors measured against the old ones; the
    legend and the values are under the axes (inside, the legend covered the baseline and the
    values' box the points of a slow decay)."""
    raw = record.raw
    lengths = np.asarray(raw["lengths"], dtype=float)
    survival = np.asarray(raw["survival"], dtype=float)
    fit = record.fit
    alpha = record.values["alpha"][0]
    epc, epc_err = record.values["epc"]
    lines = [f"EPC = {epc:.2e} ± {epc_err:.1e}   χ²ᵣ = {fit['reduced_chi2']:.2f}"]
    for key, (value, _) in record.values.items():
        if key.endswith(".error") and not key.startswith(("sy:", "x:")):
            old = record.old_values.get(key)
            was = "none" if old is None else f"{old:.2e}"
            lines.append(f"{key.removesuffix('.error')} error {value:.2e} (was {was})")
    legend_in = LEGEND_ROW_IN * 2  # four entries
    text_in = 0.25 + legend_in + LINE_IN * len(lines)
    fig, ax, height = _figure(text_in)
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
    ax.set_xlabel("Cliffords per sequence")
    ax.set_ylabel("P(return to |0…0⟩)")
    ax.set_ylim(min(fit["baseline"], float(survival.min())) - 0.05, 1.02)
    ax.set_title(f"randomized benchmarking, {record.subject} — {record.experiment}",
                 fontsize=10)
    _legend_below(fig, text_in, height)
    _lines_below(fig, lines, text_in - legend_in, height)
    return fig


#: A value's unit, from the end of its name (``t1_s``, ``resonator_hz``, ``flux_bias_a``): the
#: lines under a sweep give such values in engineering units (7.204352 GHz, 49.73 µA).
VALUE_UNITS = {"_s": "s", "_hz": "Hz", "_a": "A"}
#: Significant digits of a value without a standard error (trailing zeros dropped), and the
#: most any value is given.
VALUE_DIGITS, MAX_VALUE_DIGITS = 6, 10


def _prefixed(value: float, unit: str, digits: int, sign: bool = False,
              trim: bool = False) -> str:
    """``value`` rounded to ``digits`` significant digits, with the SI prefix of its own size
    and ``unit`` (``digits=7``: 7.204352 GHz), or in powers of ten beyond the prefixes (a T1
    typed as 1e30 s: 1e+30 s); a leading ``+`` with ``sign``; without the trailing zeros with
    ``trim`` (35 ns, not 35.0000 ns)."""
    plus = "+" if sign else ""
    if value == 0 or not math.isfinite(value):
        return f"{value:{plus}g} {unit}"
    value = float(f"{value:.{digits - 1}e}")
    magnitude = math.floor(math.log10(abs(value)))
    exponent = _si_exponent(magnitude)
    if not 0 <= magnitude - exponent < 3:
        mantissa, power = f"{value:{plus}.{digits - 1}e}".split("e")
        number, prefix = f"{_trimmed(mantissa) if trim else mantissa}e{power}", ""
    else:
        decimals = digits - 1 - (magnitude - exponent)
        number = f"{value / 10.0 ** exponent:{plus}.{max(0, decimals)}f}"
        number, prefix = _trimmed(number) if trim else number, SI_PREFIXES[exponent]
    return f"{number} {prefix}{unit}"


def _trimmed(number: str) -> str:
    """``number`` without the zeros that end its decimals (35.0000: 35)."""
    return number.rstrip("0").rstrip(".") if "." in number else number


def _digits(value: float, err) -> int | None:
    """Significant digits of ``value`` that reach its standard error's second digit; None
    without a usable error."""
    if not (isinstance(err, int | float) and math.isfinite(err) and err > 0
            and math.isfinite(value) and value):
        return None
    places = math.floor(math.log10(abs(value))) - math.floor(math.log10(err)) + 2
    return min(max(places, 2), MAX_VALUE_DIGITS)


def _moved(value: float, old: float) -> bool:
    """Whether a value moved from ``old`` by a change worth printing (finite, not zero)."""
    change = value - old
    return math.isfinite(change) and change != 0


def _value_line(name: str, value, err, old) -> str:
    """One line of a value: ``name = value ± err (was old, change)``, in engineering units
    when the name ends in one of :data:`VALUE_UNITS`."""
    if not isinstance(value, int | float):
        return f"{name} = {value}"
    unit = _unit(name, VALUE_UNITS)
    has_err = isinstance(err, int | float) and math.isfinite(err)
    if unit is None:
        text = f"{name} = {value:.6g}" + (f" ± {err:.2g}" if has_err else "")
        if isinstance(old, int | float):  # the change too: 6 digits hide a 5 kHz step
            text += f" (was {old:.6g}" + (f", {value - old:+.2g})" if _moved(value, old)
                                          else ")")
        return text
    digits = _digits(value, err)
    trim = digits is None
    digits = digits or VALUE_DIGITS
    text = f"{name} = {_prefixed(value, unit, digits, trim=trim)}"
    if has_err:
        text += f" ± {_prefixed(err, unit, 2)}"
    if isinstance(old, int | float):
        text += f" (was {_prefixed(old, unit, digits, trim=trim)}" + (
            f", {_prefixed(value - old, unit, 2, sign=True)})" if _moved(value, old) else ")")
    return text


def _value_lines(record: ExperimentRecord) -> list[str]:
    """The text under a sweep: each value with its standard error, the old value and the
    change, then the fit's r² and rms residual (in the y axis's unit)."""
    lines = [_value_line(name, value, err, record.old_values.get(name))
             for name, (value, err) in record.values.items()]
    if isinstance(record.fit.get("r_squared"), int | float):
        lines.append(f"r_squared {record.fit['r_squared']:.3g}")
    residual = record.fit.get("rms_residual")
    if isinstance(residual, int | float):
        unit = _unit(record.raw.get("y_label", ""), ENGINEERING_UNITS)
        lines.append(f"rms_residual {_prefixed(residual, unit, 3)}" if unit
                     else f"rms_residual {residual:.3g}")
    return lines


def plot_sweep(record: ExperimentRecord):
    """Figure of a sweep record (every graph experiment): each data series (dots), the fitted
    curves (lines), the chosen value (solid vertical line) and the old one (dashed, unless it
    lies far beyond the data: :func:`_within_reach`), and the values with their standard
    errors against the old ones, under why the record was rejected when it was; the legend is
    under the axes, where it covers no data. A record's ``raw["y_range"]`` (low, high) is
    shown whole (a probability's 0..1)."""
    raw = record.raw
    rejected = record.settings.get("rejected")
    lines = ([*textwrap.wrap(f"REJECTED, nothing updated: {rejected}", REJECTED_CHARS)]
             if rejected else []) + _value_lines(record)
    marks = {k: v for k, v in raw.get("marks", {}).items()
             if k != "old" or _within_reach(v, raw)}
    entries = (len(raw.get("series", {})) + len(raw.get("curves", {}))
               + ("old" in marks) + ("chosen" in marks))
    legend_in = LEGEND_ROW_IN * math.ceil(entries / LEGEND_COLUMNS)
    text_in = 0.25 + legend_in + LINE_IN * len(lines)
    fig, ax, height = _figure(text_in)
    for i, (label, (x, y)) in enumerate(zip(raw.get("series", {}), _series(raw), strict=True)):
        ax.plot(x, y, "o", ms=3.5, color=f"C{i}", label=label)
    for i, (label, curve) in enumerate(raw.get("curves", {}).items()):
        ax.plot(curve["x"], curve["y"], "-", lw=1.3, color=f"C{i + 5}", label=f"fit: {label}")
    if "old" in marks:
        ax.axvline(marks["old"], color="0.45", ls="--", lw=1, label="old value")
    if "chosen" in marks:
        ax.axvline(marks["chosen"], color="k", lw=1, label="chosen")
    if entries:
        _legend_below(fig, text_in, height)
    _lines_below(fig, lines, text_in - legend_in, height)
    ax.margins(x=0.04, y=0.12)
    if "y_range" in raw:  # a probability's whole range, padded as the margins pad the data
        low, high = raw["y_range"]
        ax.set_ylim(low - 0.04 * (high - low), high + 0.04 * (high - low))
    label = raw.get("x_label", "")
    ax.set_xlabel(label.rsplit(" (", 1)[0] if _x_ticks(ax, raw) else label)
    label = raw.get("y_label", "")
    ax.set_ylabel(label.rsplit(" (", 1)[0] if _engineering(ax.yaxis, label) else label)
    ax.set_title(f"{record.kind.replace('_', ' ')}, {record.subject} — {record.measured_at[:19]}",
                 fontsize=10)
    return fig


def save_plot(record: ExperimentRecord, directory: str | Path) -> Path:
    """Write ``<directory>/<experiment>.png`` for ``record``; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.experiment}.png"
    figure = plot_rb(record) if record.kind.startswith("rb_") else plot_sweep(record)
    figure.savefig(path, dpi=110)
    return path


def save_records(records: Sequence[ExperimentRecord], directory: str | Path, *,
                 then: str = "") -> list[Path]:
    """Write each record's JSON and PNG into ``directory``; returns the JSON paths. Callers
    write the records of a calibration before they commit it, so that no snapshot names a
    record that is not there.

    Raises:
        CalibrationError: a file could not be written (a full disk, a directory removed or
            made read-only during the run), naming the record and the directory, followed by
            ``then`` (what the caller did not do, "nothing was committed").
    """
    paths = []
    for record in records:
        try:
            paths.append(record.save(directory))
            save_plot(record, directory)
        except OSError as exc:
            raise CalibrationError(f"experiment record {record.experiment} could not be "
                                   f"written to {directory} ({exc})"
                                   + (f"; {then}" if then else "")) from exc
    return paths
