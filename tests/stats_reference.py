"""NumPy reference definitions of the fill and inventory metrics, the oracle the compiled
passes of mmrun.stats.summary_metrics are checked against (tests only)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import polars as pl

class MatchedFills:
    """The fills as arrays, matched to their cycles once for every fill metric.

    row: index of each fill's cycle in the equity frame (the row with the fill's timestamp);
    quote_row: index of the cycle that made the filled quote (row - quote_lag, at least 0);
    sign: +1 for a buy, -1 for a sell; notional: price x amount, the metrics' weights.
    """

    def __init__(self, equity: pl.DataFrame, fills: pl.DataFrame, lag: int = 1):
        self.mids = equity["mid"].to_numpy()
        self.row = np.searchsorted(equity["ts_ms"].to_numpy(), fills["ts_ms"].to_numpy(), side="left")
        self.quote_row = np.maximum(self.row - lag, 0)
        self.sign = np.where((fills["side"] == "buy").to_numpy(), 1.0, -1.0)
        self.price = fills["price"].to_numpy()
        self.notional = self.price * fills["amount"].to_numpy()


def spread_captured_bps(f: MatchedFills) -> float:
    """Mean edge of the fills against the mid when their quotes were made, in basis points of
    that mid, notional-weighted.

    Per fill: side x (mid - price) / mid x 10,000, side +1 for a buy and -1 for a sell, mid
    the mid of the cycle that made the quote (`touch`: the cycle before the fill's row;
    `instant`: the fill's own row): positive = bought below / sold above the mid the quote
    was priced from. A symmetric quote at spread s without a book spread captures s/2 x
    10,000 bps whatever the market did next (that is the markouts' business). Not
    annualised. 0 without fills.
    """
    if f.price.size == 0 or f.mids.size == 0:
        return 0.0
    mid = f.mids[f.quote_row]
    edge = f.sign * (mid - f.price) / mid * 1e4
    return float(np.sum(f.notional * edge) / np.sum(f.notional))


def markout_bps(f: MatchedFills, cycles: int) -> float:
    """Mean markout `cycles` quote cycles after each fill, in basis points of the fill price.

    Per fill: side x (mid k cycles after the fill's cycle - price) / price x 10,000,
    notional-weighted over the fills that have k later cycles in the run. Positive = the
    market moved the fill's way; negative = adverse selection. Not annualised. 0 if none.
    """
    if f.price.size == 0 or f.mids.size == 0:
        return 0.0
    later = f.row + cycles
    keep = later < f.mids.size
    if not keep.any():
        return 0.0
    price = f.price[keep]
    w = f.notional[keep]
    move = f.sign[keep] * (f.mids[later[keep]] - price) / price * 1e4
    return float(np.sum(w * move) / np.sum(w))


def time_weighted_inventory(equity: pl.DataFrame) -> Dict[str, float]:
    """Time-weighted means of the inventory over the run.

    Each cycle's state counts for the time until the next cycle (the last cycle for none;
    a single-cycle run counts it alone). avg_inventory_base: base units held;
    avg_inventory_share: base x mid / equity, the share of value held in base (0..1).
    """
    if equity.height == 0:
        return {"avg_inventory_base": 0.0, "avg_inventory_share": 0.0}
    base = equity["base"].to_numpy()
    eq = equity["equity"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(eq > 0, base * equity["mid"].to_numpy() / eq, 0.0)
    if equity.height == 1:
        return {"avg_inventory_base": float(base[0]), "avg_inventory_share": float(share[0])}
    w = np.diff(equity["ts_ms"].to_numpy()).astype(np.float64)
    if not w.sum() > 0:
        w = np.ones_like(w)
    return {
        "avg_inventory_base": float(np.sum(base[:-1] * w) / w.sum()),
        "avg_inventory_share": float(np.sum(share[:-1] * w) / w.sum()),
    }


def fill_ratio(equity: pl.DataFrame, fills: pl.DataFrame) -> float:
    """Fills per quote: fills / quoted sides, a side counting once per cycle it was quoted.

    Quoted sides = cycles with a bid quoted + cycles with an ask quoted (the equity frame's
    bid_quoted / ask_quoted; with several levels a side still counts once per cycle). Under
    `instant` only executed quotes are recorded, so the ratio is 1. 0 if nothing was quoted.
    """
    quoted = 0
    for col in ("bid_quoted", "ask_quoted"):
        quoted += int(equity[col].fill_null(float("nan")).is_not_nan().sum()) if equity.height else 0
    if quoted == 0:
        return 0.0
    return float(fills.height / quoted)


