"""report.png for a run folder: price with quotes and fills, inventory, equity against holding.

Drawn off-screen (matplotlib's Agg canvas on a Figure, no pyplot, no display), imported only
when a picture is made. Long runs are thinned to at most MAX_POINTS cycles and MAX_FILLS fill
markers, so a picture takes about the same time whatever the run's length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import polars as pl

from mmrun.record import replace_atomically

MAX_POINTS = 3000  # cycles drawn per line
MAX_FILLS = 2000  # fill markers drawn per side

def _every(n: int, limit: int) -> int:
    return max(1, -(-n // limit))


def _times(ts_ms: np.ndarray) -> np.ndarray:
    return ts_ms.astype("datetime64[ms]")


def title_text(summary: Dict[str, Any], strategy: Any = None, spread: Optional[float] = None) -> str:
    """Two title lines: pair, strategy and key parameters (the fields its registration gives a
    title, mmrun.strategies.param); then the run's result."""
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
    if summary.get("fill_model"):
        params.append(f"fills={summary['fill_model']}")
    head = f"{summary.get('pair', '')}  ·  {name}" + (f" ({', '.join(params)})" if params else "")
    head += f"  ·  {summary.get('exchange', '')} {summary.get('mode', '')}"
    if summary.get("exchange") == "file" or summary.get("data_format") not in (None, "simulated market", "exchange public data (ccxt)"):
        head += f"  ·  {summary.get('data_source', '')} ({summary.get('data_format', '')})"  # the data it ran on
    result = (
        f"return {summary.get('total_return_pct', 0.0):+.3f} %  ·  vs holding {summary.get('pnl_vs_hold', 0.0):+,.2f}"
        f"  ·  {summary.get('trades', 0)} fills  ·  max drawdown {summary.get('max_drawdown_pct', 0.0):.2f} %"
        f"  ·  markout(10) {summary.get('markout_10_bps', 0.0):+.1f} bps"
    )
    return head + "\n" + result


def draw(equity: pl.DataFrame, fills: pl.DataFrame, title: str, initial_value: float):
    """The report's matplotlib Figure (three panels sharing the time axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 8.5), dpi=100)
    ax_price, ax_inv, ax_eq = fig.subplots(3, 1, sharex=True, height_ratios=(3, 1.2, 1.6))
    # fixed margins: a constrained layout costs about a third of the picture's time
    fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.07, hspace=0.08)
    fig.suptitle(title, fontsize=10.5)
    if equity.height == 0:
        ax_price.text(0.5, 0.5, "no market data", ha="center", va="center", transform=ax_price.transAxes)
        return fig
    eq = equity.gather_every(_every(equity.height, MAX_POINTS))
    t = _times(eq["ts_ms"].to_numpy())
    mid = eq["mid"].to_numpy()

    ax_price.plot(t, mid, color="0.25", lw=0.9, label="mid")
    ax_price.plot(t, eq["bid_quoted"].to_numpy(), color="tab:green", lw=0.6, alpha=0.55, label="our bid")
    ax_price.plot(t, eq["ask_quoted"].to_numpy(), color="tab:red", lw=0.6, alpha=0.55, label="our ask")
    for side, marker, color in (("buy", "^", "tab:green"), ("sell", "v", "tab:red")):
        f = fills.filter(pl.col("side") == side)
        if f.height:
            f = f.gather_every(_every(f.height, MAX_FILLS))
            ax_price.scatter(_times(f["ts_ms"].to_numpy()), f["price"].to_numpy(), marker=marker, s=14,
                             color=color, edgecolors="none", zorder=3, label=f"{side} fills")
    ax_price.set_ylabel("price (quote)")
    ax_price.legend(loc="upper left", fontsize=8, ncol=5, frameon=False)
    ax_price.grid(alpha=0.25)

    base = eq["base"].to_numpy()
    ax_inv.fill_between(t, base, step="post", color="tab:blue", alpha=0.35, lw=0)
    ax_inv.plot(t, base, drawstyle="steps-post", color="tab:blue", lw=0.8)
    ax_inv.set_ylabel("inventory (base)")
    ax_inv.grid(alpha=0.25)

    ax_eq.plot(t, eq["equity"].to_numpy(), color="tab:purple", lw=1.0, label="equity")
    ax_eq.axhline(initial_value, color="0.45", lw=0.9, ls="--", label="holding the starting portfolio")
    first_mid = float(equity["mid"][0])
    if first_mid > 0:
        ax_eq.plot(t, initial_value * mid / first_mid, color="tab:orange", lw=0.8, alpha=0.8,
                   label="buy & hold (all in base at the start)")
    ax_eq.set_ylabel("value (quote)")
    ax_eq.legend(loc="upper left", fontsize=8, ncol=3, frameon=False)
    ax_eq.grid(alpha=0.25)
    ax_eq.set_xlabel("market time (UTC)")
    return fig


def write_report(folder: Path, equity: pl.DataFrame, fills: pl.DataFrame, summary: Dict[str, Any],
                 strategy: Any = None, spread: Optional[float] = None) -> Path:
    """Write folder/report.png (to a temporary name, then renamed); returns its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(equity, fills, title_text(summary, strategy, spread), float(summary.get("initial_value") or 0.0))
    FigureCanvasAgg(fig)
    path = Path(folder) / "report.png"
    # light compression: a few more KB, a quarter less time
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 3}))
    return path
