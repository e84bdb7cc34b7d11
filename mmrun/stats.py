"""Pure metrics over a run's recorded frames (equity per cycle, fills)."""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import polars as pl

MS_PER_YEAR = 365.0 * 24 * 3600 * 1000


def max_drawdown_pct(equity: np.ndarray) -> float:
    """Largest fall from a running peak of equity, in % of that peak (>= 0; 0 if it never fell)."""
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, (peak - equity) / peak, 0.0)
    return float(dd.max() * 100.0)


def sharpe(equity: np.ndarray, ts_ms: np.ndarray) -> float:
    """Annualised Sharpe ratio of per-cycle simple returns of equity, risk-free rate 0.

    mean / standard deviation (ddof 1) x sqrt(cycles per year), the cycle length being the
    median spacing of the equity timestamps. 0 with fewer than 3 points or no variation.
    """
    if equity.size < 3:
        return 0.0
    r = np.diff(equity) / equity[:-1]
    sd = float(np.std(r, ddof=1))
    step_ms = float(np.median(np.diff(ts_ms)))
    if not (sd > 0 and step_ms > 0):
        return 0.0
    return float(np.mean(r) / sd * math.sqrt(MS_PER_YEAR / step_ms))


def sortino(equity: np.ndarray, ts_ms: np.ndarray) -> float:
    """Annualised Sortino ratio of per-cycle simple returns of equity, target 0.

    mean / downside deviation x sqrt(cycles per year), the downside deviation being
    sqrt(mean(min(r, 0)^2)) over all returns and the cycle length the median spacing of the
    equity timestamps. 0 with fewer than 3 points or no losing cycle.
    """
    if equity.size < 3:
        return 0.0
    r = np.diff(equity) / equity[:-1]
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    step_ms = float(np.median(np.diff(ts_ms)))
    if not (down > 0 and step_ms > 0):
        return 0.0
    return float(np.mean(r) / down * math.sqrt(MS_PER_YEAR / step_ms))


class MatchedFills:
    """The fills as arrays, matched to their cycles once for every fill metric.

    row: index of each fill's cycle in the equity frame (the row with the fill's timestamp);
    sign: +1 for a buy, -1 for a sell; notional: price x amount, the metrics' weights.
    """

    def __init__(self, equity: pl.DataFrame, fills: pl.DataFrame):
        self.mids = equity["mid"].to_numpy()
        self.row = np.searchsorted(equity["ts_ms"].to_numpy(), fills["ts_ms"].to_numpy(), side="left")
        self.sign = np.where((fills["side"] == "buy").to_numpy(), 1.0, -1.0)
        self.price = fills["price"].to_numpy()
        self.notional = self.price * fills["amount"].to_numpy()


def spread_captured_bps(f: MatchedFills) -> float:
    """Mean edge of the fills against the mid, in basis points of the mid, notional-weighted.

    Per fill: side x (mid - price) / mid x 10,000, side +1 for a buy and -1 for a sell, mid
    the mid of the cycle the fill is recorded in (events.csv's `mid`): positive = bought
    below / sold above the mid. Not annualised. 0 without fills.
    """
    if f.price.size == 0 or f.mids.size == 0:
        return 0.0
    mid = f.mids[f.row]
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


def trading_stats(
    equity: pl.DataFrame, fills: pl.DataFrame, initial_value: float, initial_base: float = 0.0
) -> Dict[str, float]:
    """Metrics beyond the basics: against holding, edge, adverse selection, inventory, activity.

    hold_value: the starting portfolio (initial_base and initial_value - initial_base x the
    first mid in quote) valued at the last mid; pnl_vs_hold = final equity - hold_value.
    market_return_pct: the mid's change over the run, % (what holding base alone returned).
    turnover: traded notional / time-weighted mean equity, per run (not annualised).
    The rest: see spread_captured_bps, markout_bps, time_weighted_inventory, fill_ratio,
    sortino.
    """
    eq = equity["equity"].to_numpy()
    mids = equity["mid"].to_numpy()
    final = float(eq[-1]) if eq.size else initial_value  # no cycle: the starting value
    if eq.size:
        hold = initial_base * float(mids[-1]) + (initial_value - initial_base * float(mids[0]))
        market = (float(mids[-1]) / float(mids[0]) - 1.0) * 100.0 if mids[0] > 0 else 0.0
    else:
        hold, market = initial_value, 0.0
    matched = MatchedFills(equity, fills)
    volume = float((fills["price"] * fills["amount"]).sum()) if fills.height else 0.0
    if eq.size > 1:
        w = np.diff(equity["ts_ms"].to_numpy()).astype(np.float64)
        mean_equity = float(np.sum(eq[:-1] * w) / w.sum()) if w.sum() > 0 else float(eq.mean())
    else:
        mean_equity = float(eq[0]) if eq.size else 0.0
    return {
        "hold_value": hold,
        "pnl_vs_hold": final - hold,
        "market_return_pct": market,
        "spread_captured_bps": spread_captured_bps(matched),
        "markout_1_bps": markout_bps(matched, 1),
        "markout_10_bps": markout_bps(matched, 10),
        **time_weighted_inventory(equity),
        "turnover": volume / mean_equity if mean_equity > 0 else 0.0,
        "fill_ratio": fill_ratio(equity, fills),
        "sortino": sortino(eq, equity["ts_ms"].to_numpy()),
    }


def compute_stats(equity: pl.DataFrame, fills: pl.DataFrame, initial_value: Optional[float] = None) -> Dict[str, float]:
    """The summary's metrics from the equity frame (record.EQUITY_SCHEMA) and the fills.

    fills has columns side ('buy' | 'sell'), price, amount (base), fee (quote).
    initial_value: the value before the first cycle (quote currency); the equity frame's first
    row comes after it, which under `instant` has already traded. None = that first row.
    Values are in the quote currency unless named *_pct (percent) or counted.
    """
    eq = equity["equity"].to_numpy()
    initial = float(initial_value) if initial_value is not None else (float(eq[0]) if eq.size else 0.0)
    # no completed cycle (stopped before the first, every fetch failed): nothing was traded, the
    # value is the starting one (all in quote), and `ticks` says 0
    final = float(eq[-1]) if eq.size else initial
    buys = int((fills["side"] == "buy").sum()) if fills.height else 0
    notional = (fills["price"] * fills["amount"]).sum() if fills.height else 0.0
    return {
        "initial_value": initial,
        "final_value": final,
        # (final - initial) first: exact for any final within 2x of initial, and the original
        # backtest's formula, which `fills=instant fees.maker=0` reproduces to the last bit
        "total_return_pct": (final - initial) / initial * 100.0 if initial > 0 else 0.0,
        "pnl": final - initial,
        "trades": int(fills.height),
        "buys": buys,
        "sells": int(fills.height) - buys,
        "volume_quote": float(notional),
        "fees": float(fills["fee"].sum()) if fills.height else 0.0,
        "max_drawdown_pct": max_drawdown_pct(eq),
        "sharpe": sharpe(eq, equity["ts_ms"].to_numpy()),
        "final_base": float(equity["base"][-1]) if eq.size else 0.0,
        "final_quote": float(equity["quote"][-1]) if eq.size else initial,
        "ticks": int(equity.height),
    }
