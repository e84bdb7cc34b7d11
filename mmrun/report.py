"""report.png for a run folder: price with quotes and fills, inventory, equity against holding.

Drawn off-screen (matplotlib's Agg canvas on a Figure, no pyplot, no display), imported only
when a picture is made. Long runs are thinned to at most MAX_POINTS cycles; more than
MAX_FILLS fills a side are aggregated into FILL_BINS time bins (one marker per bin at its
volume-weighted price), so a picture takes about the same time whatever the run's length and
a long run is not a solid band of markers. The sweep's pictures (heatmap.png, trials.png) and a
several-pair run's overview are here too.

A picture's CPU time is mostly text and the PNG: text is drawn unhinted (PICTURE_RC); the
figure of report.png is kept per process (_KEPT) with its canvas; axis labels are placed once
(_place_axis_labels); the PNG is RGB, lightly compressed (write_png). bench/bench_report.py
measures it.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import polars as pl

from mmrun.record import replace_atomically

MAX_POINTS = 3000  # cycles drawn per line
MAX_FILLS = 400  # fills drawn one by one per side; more are aggregated into FILL_BINS time bins
FILL_BINS = 180
TITLE_SIZE = 10.5  # report.png's title, points
TITLE_TOP = 0.885  # the price panel's top (figure fraction) under a two-line title
# matplotlib settings every picture is drawn with. Text is most of a picture's time and
# FreeType's hinting most of the text's: unhinted glyphs draw in about half the time, as legible
# at 100 dpi (a little softer, spaced as the font designs them).
PICTURE_RC = {"text.hinting": "no_hinting"}


def _every(n: int, limit: int) -> int:
    return max(1, -(-n // limit))


def _times(ts_ms: np.ndarray) -> np.ndarray:
    return ts_ms.astype("datetime64[ms]")


def _concise_dates(ax: Any) -> None:
    """ax's time axis labelled by matplotlib's ConciseDateFormatter (the day, with the month or year
    only where it changes: '29', 'Feb', '05'), on the locator the plotted times chose: the full
    dates of the default formatter ran into each other where the ticks restart at a month."""
    from matplotlib.dates import ConciseDateFormatter

    ax.xaxis.set_major_formatter(ConciseDateFormatter(ax.xaxis.get_major_locator()))


def currencies(pair: Optional[str]) -> tuple:
    """'BTC/USDT' -> ('BTC', 'USDT'); ('base', 'quote') when unknown (a settle suffix ':X' dropped)."""
    base, sep, quote = str(pair or "").partition("/")
    quote = quote.partition(":")[0]
    return (base, quote) if sep and base and quote else ("base", "quote")


def _stop_text(summary: Dict[str, Any]) -> str:
    """How the run ended when it did not run to the end of its market."""
    status = summary.get("status")
    if status in (None, "completed"):
        return ""
    if status == "max_ticks":
        return f"  ·  stopped early at run.max_ticks ({summary.get('ticks', 0)} cycles)"
    if status == "stopped":
        return f"  ·  stopped early by a signal after {summary.get('ticks', 0)} cycles"
    return f"  ·  {status}" + (f": {summary['error']}" if summary.get("error") else "")


def title_text(summary: Dict[str, Any], strategy: Any = None, spread: Optional[float] = None,
               order_size_pct: Optional[float] = None) -> str:
    """Two title lines: pair, strategy and key parameters (the fields its registration gives a
    title, mmrun.strategies.param; order_size_pct: sizing.order_size_pct, the order size as a
    fraction of capital); then the run's result, its fees and, when it ended before its market
    did, how it stopped."""
    params = []
    name = summary.get("strategy") or ""
    if strategy is not None:
        from mmrun.errors import ConfigError
        from mmrun.strategies import resolve, title_params

        try:
            spec, cfg = resolve(strategy)
        except ConfigError:  # a strategy that cannot be loaded here: its name only
            spec = cfg = None
        if spec is not None:
            name = name or cfg.name
            if spec.uses_spread and spread is not None:
                params.append(f"spread {spread:.2%}")
            params += title_params(spec, cfg)
            if cfg.levels > 1:
                params.append(f"{cfg.levels} levels")
    if order_size_pct is not None:
        params.append(f"orders {order_size_pct:.2%} of capital")
    if summary.get("fill_model"):
        params.append(f"fills={summary['fill_model']}")
    head = f"{summary.get('pair', '')}  ·  {name}" + (f" ({', '.join(params)})" if params else "")
    head += f"  ·  {summary.get('exchange', '')} {summary.get('mode', '')}"
    if summary.get("exchange") == "file" or summary.get("data_format") not in (None, "simulated market", "exchange public data (ccxt)"):
        head += f"  ·  {summary.get('data_source', '')} ({summary.get('data_format', '')})"  # the data it ran on
    quote = currencies(summary.get("pair"))[1]
    result = (
        f"return {summary.get('total_return_pct', 0.0):+.3f} %  ·  vs holding {summary.get('pnl_vs_hold', 0.0):+,.2f} {quote}"
        f"  ·  {summary.get('trades', 0)} fills, fees {summary.get('fees', 0.0):,.2f} {quote}"
        f"  ·  max drawdown {summary.get('max_drawdown_pct', 0.0):.2f} %"
        f"  ·  markout(10) {summary.get('markout_10_bps', 0.0):+.1f} bps"
    )
    return head + "\n" + result + _stop_text(summary)


def _levels(strategy: Any) -> tuple:
    """(levels, level_spread_step) of a strategy config (a dict, a DictConfig or an object)."""
    if strategy is None:
        return 1, 0.0
    get = strategy.get if hasattr(strategy, "get") else (lambda k, d=None: getattr(strategy, k, d))
    return int(get("levels", 1) or 1), float(get("level_spread_step", 0.0) or 0.0)


def _fill_markers(fills: pl.DataFrame, t0: int, t1: int) -> tuple:
    """(times, prices, amounts, label suffix) of one side's fill markers.

    Up to MAX_FILLS fills are drawn one by one. More are aggregated into FILL_BINS equal time
    bins: one marker per bin at the bin's volume-weighted price, stamped at its mean time,
    so a long run shows where it traded instead of a solid band.
    """
    ts = fills["ts_ms"].to_numpy()
    price = fills["price"].to_numpy()
    amount = fills["amount"].to_numpy()
    if fills.height <= MAX_FILLS:
        return ts, price, amount, ""
    width = max(1, -(-(t1 - t0 + 1) // FILL_BINS))
    b = (ts - t0) // width
    uniq, inv = np.unique(b, return_inverse=True)
    amt = np.bincount(inv, weights=amount)
    vwap = np.bincount(inv, weights=price * amount) / np.where(amt > 0, amt, 1.0)
    when = (np.bincount(inv, weights=ts.astype(np.float64)) / np.bincount(inv)).astype(np.int64)
    return when, vwap, amt, f", VWAP per {_duration(width)}"


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms >= size:
            return f"{ms / size:.3g} {unit}"
    return f"{ms} ms"


def _marker_sizes(amount: np.ndarray) -> np.ndarray:
    """Marker areas 8..60 points², by amount relative to the largest."""
    top = float(amount.max()) if amount.size else 0.0
    if not top > 0:
        return np.full(amount.shape, 14.0)
    return 8.0 + 52.0 * np.sqrt(amount / top)


# above the panel, outside the data
_LEGEND_ABOVE = dict(loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.15,
                     handlelength=1.6, columnspacing=1.2)


def _legend_above(ax: Any, ncol: int) -> None:
    ax.legend(ncol=ncol, **_LEGEND_ABOVE)


def _new_report_figure() -> tuple:
    """A report Figure (on an Agg canvas) and its three panels (price, inventory, value), sharing
    the time axis."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8.5), dpi=100)
    _canvas(fig)
    axes = fig.subplots(3, 1, sharex=True, height_ratios=(3, 1.2, 1.6))
    # fixed margins (a constrained layout costs about a third of the picture's time); room
    # above each panel for its legend
    fig.subplots_adjust(left=0.085, right=0.98, top=TITLE_TOP, bottom=0.07, hspace=0.2)
    for ax in axes:  # kept by an emptied figure
        ax.grid(alpha=0.25)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    return fig, tuple(axes)


def _canvas(fig: Any) -> Any:
    """Give fig matplotlib's Agg canvas (off-screen)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg(fig)


_PICTURE_LOCK = threading.RLock()


def _picture(make: Callable) -> Callable:
    """A function drawing a picture, run with PICTURE_RC and one picture at a time in a process
    (matplotlib's settings are global, its figures not safe to share between threads)."""

    @functools.wraps(make)
    def drawn(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with _PICTURE_LOCK, matplotlib.rc_context(PICTURE_RC):
            return make(*args, **kwargs)

    return drawn


# One report figure kept per process for write_report: making the axes and their ticks anew
# is about half of a picture's time, and a process writes its pictures one at a time (a sweep
# worker's full re-runs, a run's pairs). Emptied of the last picture's artists before reuse.
_KEPT: Dict[str, Any] = {}


def _emptied(fig: Any, axes: tuple) -> None:
    """Remove every artist a report put on fig's panels, and forget their data limits, so the
    next report draws as on a new figure."""
    for ax in axes:
        for artist in [*ax.lines, *ax.collections, *ax.patches, *ax.texts, *ax.images]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.relim()
        ax.set_autoscale_on(True)


def draw(equity: pl.DataFrame, fills: pl.DataFrame, title: str, initial_value: float,
         pair: Optional[str] = None, strategy: Any = None, initial_base: float = 0.0, _panels: Optional[tuple] = None):
    """The report's matplotlib Figure: price with our quotes and fills, inventory, value
    (three panels sharing the market-time axis, in the pair's currencies).

    pair ('BTC/USDT') labels the axes; strategy (its config) gives the levels drawn: with
    n > 1 levels, the band from each side's best quote to its level n, whose distance from
    the best is (n - 1) x level_spread_step / 2 of the mid (strategy.ladder's rule; the
    recorded frames hold each side's best quote only). initial_base: base units held at the
    start (run.start=target), so that holding the starting portfolio moves with the mid.
    """
    base_ccy, quote_ccy = currencies(pair)
    fig, (ax_price, ax_inv, ax_eq) = _panels if _panels is not None else _new_report_figure()
    _title(fig, title)
    if equity.height == 0:
        ax_price.text(0.5, 0.5, "no market data", ha="center", va="center", transform=ax_price.transAxes)
        return fig
    eq = equity.select("ts_ms", "mid", "bid_quoted", "ask_quoted", "base", "equity").gather_every(
        _every(equity.height, MAX_POINTS))
    t = _times(eq["ts_ms"].to_numpy())
    mid = eq["mid"].to_numpy()
    bid_q, ask_q = eq["bid_quoted"].to_numpy(), eq["ask_quoted"].to_numpy()

    ax_price.plot(t, mid, color="0.25", lw=0.9, label="mid")
    levels, step = _levels(strategy)
    best = "our best bid" if levels > 1 else "our bid"
    ax_price.plot(t, bid_q, color="tab:green", lw=0.6, alpha=0.6, label=best)
    ax_price.plot(t, ask_q, color="tab:red", lw=0.6, alpha=0.6, label=best.replace("bid", "ask"))
    if levels > 1 and step > 0:
        deep = (levels - 1) * step / 2 * mid
        ax_price.fill_between(t, bid_q - deep, bid_q, color="tab:green", alpha=0.12, lw=0,
                              label=f"bid levels 2-{levels}")
        ax_price.fill_between(t, ask_q, ask_q + deep, color="tab:red", alpha=0.12, lw=0,
                              label=f"ask levels 2-{levels}")
    t0, t1 = int(equity["ts_ms"][0]), int(equity["ts_ms"][-1])
    markers = []
    for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        f = fills.filter(pl.col("side") == side)
        if f.height:
            when, price, amount, how = _fill_markers(f, t0, t1)
            label = f"{side}s ({f.height}{how}; size: amount)"
            markers.append((ax_price.scatter(_times(when), price, marker=marker, s=_marker_sizes(amount), color=color,
                                             edgecolors="white", linewidths=0.3, alpha=0.85, zorder=3, label=label),
                            f.height, how))
    ax_price.set_ylabel(f"price ({quote_ccy})")
    if len(markers) == 2 and markers[0][2] == markers[1][2]:
        # both sides in one entry, their markers side by side (an entry and 30 characters fewer
        # to lay out and draw: about 3 % of a picture)
        from matplotlib.legend_handler import HandlerTuple

        handles, labels = ax_price.get_legend_handles_labels()
        (buys, n_buys, how), (sells, n_sells, _) = markers
        keep = [i for i, h in enumerate(handles) if h is not buys and h is not sells]
        ax_price.legend([handles[i] for i in keep] + [(buys, sells)],
                        [labels[i] for i in keep] + [f"buys / sells ({n_buys} / {n_sells}{how}; size: amount)"],
                        handler_map={tuple: HandlerTuple(ndivide=None, pad=0.2)}, **_LEGEND_ABOVE, ncol=7)
    else:
        _legend_above(ax_price, 7)

    base = eq["base"].to_numpy()
    ax_inv.fill_between(t, base, step="post", color="tab:blue", alpha=0.35, lw=0)
    ax_inv.plot(t, base, drawstyle="steps-post", color="tab:blue", lw=0.8)
    ax_inv.set_ylabel(f"inventory ({base_ccy})")

    ax_eq.plot(t, eq["equity"].to_numpy(), color="tab:purple", lw=1.0, label="equity")
    first_mid = float(equity["mid"][0])
    if initial_base:
        ax_eq.plot(t, initial_value + initial_base * (mid - first_mid), color="0.45", lw=0.9, ls="--",
                   label="holding the starting portfolio")
    else:
        ax_eq.axhline(initial_value, color="0.45", lw=0.9, ls="--", label="holding the starting portfolio")
    if first_mid > 0:
        ax_eq.plot(t, initial_value * mid / first_mid, color="tab:orange", lw=0.8, alpha=0.8,
                   label=f"buy & hold (all in {base_ccy} at the start)")
    ax_eq.set_ylabel(f"value ({quote_ccy})")
    _legend_above(ax_eq, 3)
    ax_eq.set_xlabel("market time (UTC)")
    _concise_dates(ax_eq)
    _place_axis_labels(fig, (ax_price, ax_inv, ax_eq))
    return fig


def _title(fig: Any, title: str) -> None:
    """fig's title: each line broken between its '  ·  ' parts where it is wider than the figure
    (a long data file name, an early stop's note), the panels' top lowered a line for each line
    beyond two (the legend above the price panel keeps its room)."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    room = 0.98 * fig.bbox.width
    probe = Text(0, 0, "", fontsize=TITLE_SIZE, figure=fig)

    def fits(text: str) -> bool:
        probe.set_text(text)
        return probe.get_window_extent(renderer).width <= room

    lines: list = []
    for line in title.split("\n"):
        if fits(line):
            lines.append(line)
            continue
        parts = line.split("  ·  ")
        current = parts[0]
        for part in parts[1:]:
            if fits(current + "  ·  " + part):
                current += "  ·  " + part
            else:
                lines.append(current)
                current = part
        lines.append(current)
    fig.suptitle("\n".join(lines), fontsize=TITLE_SIZE)
    line_height = TITLE_SIZE * 1.2 * fig.dpi / 72.0  # matplotlib's line spacing, in pixels
    fig.subplots_adjust(top=TITLE_TOP - max(0, len(lines) - 2) * line_height / fig.bbox.height)


def _place_axis_labels(fig: Any, axes: tuple) -> None:
    """Put each panel's y label left of its widest tick label and the time axis's label below
    its tick labels, where matplotlib would, computed once: left to matplotlib, each axis
    derives its ticks twice more per picture to place its label (about a tenth of a picture's
    time). The tick labels are those the axis's formatter gives for its ticks in view, measured
    as matplotlib measures them (a Text's extent; text sizes are cached per renderer)."""
    import matplotlib
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    rc = matplotlib.rcParams
    px = fig.dpi / 72.0  # pixels per point
    probe = Text(0, 0, "", fontsize=rc["ytick.labelsize"], figure=fig)
    for ax in axes:
        axis = ax.yaxis
        lo, hi = sorted(ax.get_ylim())
        slack = 1e-10 * (hi - lo)  # as matplotlib keeps a tick at the edge of the view
        widest = 0.0
        for text in axis.get_major_formatter().format_ticks([v for v in axis.get_majorticklocs() if lo - slack <= v <= hi + slack]):
            probe.set_text(text)
            widest = max(widest, probe.get_window_extent(renderer).width)
        left = rc["ytick.major.size"] * px + ((rc["ytick.major.pad"] * px + widest) if widest else 0.0)
        axis.set_label_coords(-(left + axis.labelpad * px) / ax.bbox.width, 0.5)
        ax.xaxis.set_label_coords(0.5, 0.0)  # an empty label but the bottom panel's
    probe = Text(0, 0, "0", fontsize=rc["xtick.labelsize"], figure=fig)  # a tick label's line: its height
    below = (rc["xtick.major.size"] + rc["xtick.major.pad"]) * px + probe.get_window_extent(renderer).height
    bottom = axes[-1]
    bottom.xaxis.set_label_coords(0.5, -(below + bottom.xaxis.labelpad * px) / bottom.bbox.height)


@_picture
def write_report(folder: Path, equity: pl.DataFrame, fills: pl.DataFrame, summary: Dict[str, Any],
                 strategy: Any = None, spread: Optional[float] = None, order_size_pct: Optional[float] = None) -> Path:
    """Write folder/report.png (to a temporary name, then renamed); returns its path. strategy,
    spread, order_size_pct: the run's settings named in the title (title_text)."""
    path = Path(folder) / "report.png"
    panels = _KEPT.get("report") if equity.height else None  # no data: a new figure (its own limits)
    if panels is not None:
        _emptied(*panels)
    title = title_text(summary, strategy, spread, order_size_pct)
    fig = draw(equity, fills, title, float(summary.get("initial_value") or 0.0), pair=summary.get("pair"),
               strategy=strategy, initial_base=float(summary.get("initial_base") or 0.0),
               _panels=panels)
    if panels is None and equity.height:
        _KEPT["report"] = (fig, tuple(fig.axes))
    # the kept figure keeps its canvas, hence its renderer: matplotlib caches the size of every
    # text per renderer, so labels a picture shares with the last one are not measured again
    _save(fig, path)
    return path


def write_png(canvas: Any, path: Path) -> None:
    """A drawn Agg canvas as an RGB PNG (its figure is opaque: the alpha channel would only
    cost time), lightly compressed. Most of a PNG's time is PIL's choice of a filter per row,
    which does not depend on the compression level: 3 is as fast as 1 and a little smaller."""
    import matplotlib
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    width, height = canvas.get_width_height(physical=True)
    image = Image.frombytes("RGB", (width, height), canvas.buffer_rgba(), "raw", "RGBX")
    info = PngInfo()
    info.add_text("Software", f"Matplotlib version{matplotlib.__version__}, https://matplotlib.org/")
    dpi = canvas.figure.dpi
    image.save(path, format="png", compress_level=3, pnginfo=info, dpi=(dpi, dpi))


# ---------------------------------------------------------------- sweep pictures


def number_format(values: np.ndarray, significant: int = 3) -> str:
    """One format for a set of numbers (a picture's, a table column's): fixed decimals, enough
    for `significant` digits of the largest magnitude (3: 0.139 -> '{:.3f}', 12.5 -> '{:.1f}',
    1234 -> '{:,.0f}')."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if top == 0.0:
        return "{:.0f}"
    decimals = min(6, max(0, significant - 1 - int(np.floor(np.log10(top)))))
    return "{:,.%df}" % decimals


def colour_scale(values: np.ndarray, direction: str):
    """(colormap, norm) for an objective: a diverging scale centred on 0 when the values have
    both signs (green = the good end of `direction`), else viridis over their range."""
    import matplotlib
    from matplotlib.colors import Normalize, TwoSlopeNorm

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        cmap = matplotlib.colormaps["RdYlGn" if direction == "maximize" else "RdYlGn_r"]
        return cmap.with_extremes(bad="lightgrey"), TwoSlopeNorm(vmin=lo, vcenter=0.0, vmax=hi)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey"), Normalize(vmin=lo, vmax=hi)


def _common(table: pl.DataFrame, column: str) -> Optional[str]:
    if column not in table.columns:
        return None
    values = [v for v in table[column].drop_nulls().unique().to_list() if v not in ("", None)]
    if not values:
        return None
    return str(values[0]) if len(values) == 1 else f"{len(values)} {column}s"


def sweep_title(table: pl.DataFrame, objective: str, direction: str) -> str:
    """'total_return_pct (maximize)  ·  BTC/USDT  ·  symmetric  ·  btc_1m.csv (backtest)': what
    was swept over which data, pair and strategy (from the jobs' summaries)."""
    parts = [f"{objective} ({direction})"]
    for col in ("pair", "strategy"):
        value = _common(table, col)
        if value:
            parts.append(value)
    data = _common(table, "data_source") or _common(table, "exchange")
    mode = _common(table, "mode")
    if data:
        parts.append(data + (f" ({mode})" if mode else ""))
    return "  ·  ".join(parts)


def fitted_title(title: str, width_in: float, fontsize: float = 10.0) -> str:
    """A sweep_title broken between its '  ·  ' parts into lines that fit over the axes of a figure
    width_in inches wide (the axes take about three quarters of it; a character is about 0.6 of
    the font size wide)."""
    per_line = max(20, int(width_in * 0.75 * 72 / (0.6 * fontsize)))
    lines: list = []
    for part in title.split("  ·  "):
        if lines and len(lines[-1]) + 5 + len(part) <= per_line:
            lines[-1] += "  ·  " + part
        else:
            lines.append(part)
    return "\n".join(lines)


@_picture
def heatmap_picture(table: pl.DataFrame, swept: Sequence[str], objective: str, direction: str, path: Path,
                    max_grid_axis: int = 40) -> bool:
    """heatmap.png: the objective over exactly two numeric swept parameters; False if not drawable.

    A grid of cells (one per combination, a repeated point keeping its best value) up to
    max_grid_axis values per axis, else a scatter. Every number in one format (number_format),
    a diverging colour scale centred on 0 when the objective has both signs (colour_scale),
    failed jobs grey and marked, the title naming the objective, pair, strategy and data.
    """
    numeric = [k for k in swept if table[k].dtype in (pl.Int64, pl.Float64) and table[k].null_count() == 0]
    if len(swept) != 2 or len(numeric) != 2:
        return False
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.transforms import TransformedPatchPath

    xk, yk = swept
    x, y = table[xk].to_numpy().astype(float), table[yk].to_numpy().astype(float)
    z = table[objective].cast(pl.Float64).to_numpy() if objective in table.columns else np.full(len(x), np.nan)
    z = np.where(table["rank"].is_null().to_numpy(), np.nan, z)  # failed jobs: no value
    xs, ys = np.unique(x), np.unique(y)
    fmt = number_format(z)
    cmap, norm = colour_scale(z, direction)
    cells = len(xs) <= max_grid_axis and len(ys) <= max_grid_axis
    # cells get room for their numbers; a scatter a picture of the usual size
    size = (max(6.0, 0.95 * len(xs) + 3.0), max(4.5, 0.6 * len(ys) + 2.4)) if cells else (9.0, 5.5)
    fig = Figure(figsize=size, dpi=100)
    _canvas(fig)
    ax = fig.subplots()
    if cells:
        grid = np.full((len(ys), len(xs)), np.nan)
        better = np.fmax if direction == "maximize" else np.fmin
        for xi, yi, zi in zip(np.searchsorted(xs, x), np.searchsorted(ys, y), z):
            grid[yi, xi] = zi if np.isnan(grid[yi, xi]) else better(grid[yi, xi], zi)
        im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap, norm=norm)
        ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs])
        ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys])
        if grid.size <= 144:
            # one clip path (the panel) for every cell's number: each text making its own costs
            # more than drawing it
            clip = TransformedPatchPath(ax.patch)
            for (yi, xi), v in np.ndenumerate(grid):
                ran = bool(((x == xs[xi]) & (y == ys[yi])).any())
                if np.isnan(v):
                    text, colour = ("failed" if ran else ""), "black"
                else:
                    r, g, b, _ = cmap(norm(v))
                    text, colour = fmt.format(v), ("white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
                ax.text(xi, yi, text, ha="center", va="center", fontsize=9, color=colour, clip_path=clip)
    else:
        ok = np.isfinite(z)
        im = ax.scatter(x[ok], y[ok], c=z[ok], cmap=cmap, norm=norm, s=30)
        if (~ok).any():
            ax.scatter(x[~ok], y[~ok], marker="x", color="grey", label="failed")
            ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize=8)
    bar = fig.colorbar(im, ax=ax, label=objective)
    if isinstance(norm, TwoSlopeNorm):  # each half of the bar spans its own sign's range: ticks on both
        bar.set_ticks([norm.vmin, norm.vmin / 2, 0.0, norm.vmax / 2, norm.vmax])
    bar.formatter = _formatter(fmt)
    bar.update_ticks()
    ax.set_xlabel(xk)
    ax.set_ylabel(yk)
    ax.set_title(fitted_title(sweep_title(table, objective, direction), fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return True


def _formatter(fmt: str):
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: fmt.format(v))


def _save(fig: Any, path: Path) -> None:
    """Draw fig (on its Agg canvas) and write it to path as a PNG (write_png). Drawn once:
    savefig would draw a figure laid out by tight_layout twice."""
    fig.canvas.draw()
    replace_atomically(Path(path), lambda tmp: write_png(fig.canvas, tmp))


def is_optuna_sweep(sweep_dir: Path) -> bool:
    """Whether the sweep ran Hydra's Optuna sweeper: its optimization_results.yaml, or the
    sweeper named in multirun.yaml or in a job's .hydra/hydra.yaml."""
    d = Path(sweep_dir)
    if (d / "optimization_results.yaml").is_file():
        return True
    candidates = [d / "multirun.yaml"] + sorted(d.glob("*/.hydra/hydra.yaml"))[:1]
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        # the sweeper's class, not any mention: mmrun's logging config names the Optuna sweeper's logger
        if re.search(r"_target_:\s*hydra_plugins\.hydra_optuna_sweeper\.", text):
            return True
    return False


@_picture
def trials_picture(table: pl.DataFrame, objective: str, direction: str, path: Path) -> bool:
    """trials.png for a search (Optuna): the objective of each trial in the order it ran, the
    best so far as a step line, failed trials marked at the bottom; False with no trial."""
    if table.height == 0 or objective not in table.columns:
        return False
    from matplotlib.figure import Figure

    order = table.sort("job")
    job = order["job"].to_numpy()
    z = order[objective].cast(pl.Float64).to_numpy()
    z = np.where(order["rank"].is_null().to_numpy(), np.nan, z)
    ok = np.isfinite(z)
    fig = Figure(figsize=(8.5, 4.8), dpi=100)
    _canvas(fig)
    ax = fig.subplots()
    fmt = number_format(z)
    ax.scatter(job[ok], z[ok], s=22, color="tab:blue", alpha=0.75, label="trial", zorder=3)
    if ok.any():
        pick = np.fmax if direction == "maximize" else np.fmin
        best = pick.accumulate(z)  # fmax/fmin skip NaN (failed trials): the best of the trials so far
        ax.step(job, best, where="post", color="tab:orange", lw=1.6, label="best so far", zorder=2)
        i = int(np.nanargmax(z) if direction == "maximize" else np.nanargmin(z))
        ax.annotate(f"best {fmt.format(z[i])} (job {job[i]})", (job[i], z[i]), xytext=(6, 6),
                    textcoords="offset points", fontsize=8)
    if (~ok).any():
        low = float(np.nanmin(z)) if ok.any() else 0.0
        ax.scatter(job[~ok], np.full((~ok).sum(), low), marker="x", color="tab:red", label="failed", zorder=3)
    ax.yaxis.set_major_formatter(_formatter(fmt))
    ax.set_xlabel("trial (job number, in the order run)")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.25)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False, fontsize=8)
    ax.set_title(fitted_title(sweep_title(table, objective, direction), fig.get_figwidth()), fontsize=10, pad=22)
    fig.tight_layout()
    _save(fig, path)
    return True


# ---------------------------------------------------------------- several pairs


@_picture
def write_overview(folder: Path, equities: Sequence[pl.DataFrame], summaries: Sequence[Dict[str, Any]],
                   root: Dict[str, Any]) -> Optional[Path]:
    """report.png at the root of a several-pair run: every pair's return over time (% of its
    starting value) with the total, and every pair's share of value held in base; each pair's
    own report.png is in its folder. Returns the path, None when no pair has a cycle."""
    from matplotlib.figure import Figure

    if not any(e.height for e in equities):
        return None
    fig = Figure(figsize=(11, 7.5), dpi=100)
    _canvas(fig)
    ax_ret, ax_share = fig.subplots(2, 1, sharex=True, height_ratios=(2.2, 1.2))
    fig.subplots_adjust(left=0.085, right=0.98, top=0.86, bottom=0.08, hspace=0.22)
    fees = sum(float(s.get("fees") or 0.0) for s in summaries)
    status = root.get("status", "")
    fig.suptitle(
        f"{len(summaries)} pairs  ·  {root.get('exchange', '')} {root.get('mode', '')}  ·  {status}\n"
        f"total {float(root.get('initial_value') or 0):,.2f} -> {float(root.get('final_value') or 0):,.2f} "
        f"({float(root.get('total_return_pct') or 0):+.3f} %)  ·  {root.get('trades', 0)} fills, fees {fees:,.2f}"
        f"  ·  max drawdown {float(root.get('max_drawdown_pct') or 0):.2f} %",
        fontsize=10.5,
    )
    total = None
    for eq, s in zip(equities, summaries):
        if eq.height == 0:
            continue
        initial = float(s.get("initial_value") or eq["equity"][0])
        thin = eq.gather_every(_every(eq.height, MAX_POINTS))
        t = _times(thin["ts_ms"].to_numpy())
        ax_ret.plot(t, (thin["equity"].to_numpy() / initial - 1.0) * 100.0, lw=0.9,
                    label=f"{s.get('pair')} ({float(s.get('total_return_pct') or 0):+.3f} %)")
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(thin["equity"].to_numpy() > 0,
                             thin["base"].to_numpy() * thin["mid"].to_numpy() / thin["equity"].to_numpy(), np.nan)
        ax_share.plot(t, share * 100.0, lw=0.8, drawstyle="steps-post", label=str(s.get("pair")))
        part = eq.select("ts_ms", pl.col("equity").alias(str(len(total.columns) if total is not None else 1)))
        total = part if total is None else total.join(part, on="ts_ms", how="full", coalesce=True)
    total = total.sort("ts_ms").fill_null(strategy="forward").fill_null(strategy="backward")
    summed = total.select(pl.sum_horizontal(pl.exclude("ts_ms"))).to_series().to_numpy()
    initial_total = float(root.get("initial_value") or summed[0])
    every = _every(total.height, MAX_POINTS)
    ax_ret.plot(_times(total["ts_ms"].to_numpy()[::every]), (summed[::every] / initial_total - 1.0) * 100.0,
                color="black", lw=1.4, label=f"all pairs ({float(root.get('total_return_pct') or 0):+.3f} %)")
    ax_ret.axhline(0.0, color="0.5", lw=0.8, ls="--")
    ax_ret.set_ylabel("return (% of starting value)")
    _legend_above(ax_ret, min(6, len(summaries) + 1))
    ax_ret.grid(alpha=0.25)
    ax_share.set_ylabel("value held in base (%)")
    ax_share.set_xlabel("market time (UTC)")
    _concise_dates(ax_share)
    _legend_above(ax_share, min(6, len(summaries)))
    ax_share.grid(alpha=0.25)
    path = Path(folder) / "report.png"
    _save(fig, path)
    return path
