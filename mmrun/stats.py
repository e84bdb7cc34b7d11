"""Pure metrics over a run's recorded frames (equity per cycle, fills)."""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import polars as pl

MS_PER_YEAR = 365.25 * 24 * 3600 * 1000  # a Julian year: the calendar's mean length, leap days included


def periods_per_year(ts_ms: np.ndarray) -> float:
    """Return periods a year, from the data's own calendar: rows over elapsed years.

    (n - 1) returns over (ts[-1] - ts[0]) / MS_PER_YEAR years. A market that trades 24 hours on
    five days a week (hourly EURUSD) gets about 24 x 5 x 52.18 = 6,261 a year, daily stock
    bars about 252, a 24/7 market at 5 s cycles 6,311,520; gaps (weekends, holidays, closed
    sessions, failed cycles) count as the time they last. Over a span that starts or ends
    next to a closed session the estimate is off by that session's share of the span (a
    weekend in four weeks of 24x5 bars: +8 %, less over longer spans). 0 with fewer than 2
    rows or no elapsed time.
    """
    if ts_ms.size < 2:
        return 0.0
    years = float(ts_ms[-1] - ts_ms[0]) / MS_PER_YEAR
    return (ts_ms.size - 1) / years if years > 0 else 0.0


def with_start(equity: np.ndarray, ts_ms: np.ndarray, initial_value: Optional[float]):
    """(equity, ts_ms) with the value before the first cycle prepended when the first row has
    already moved from it (`fills=instant` trades in the first cycle), one cycle (the median
    spacing) before the first row; unchanged otherwise (the first row is the start, to within
    1e-9 of it: a run.start=target split revalued at the first mid)."""
    if initial_value is None or equity.size == 0 or abs(float(equity[0]) - float(initial_value)) <= 1e-9 * abs(initial_value):
        return equity, ts_ms
    step = int(np.median(np.diff(ts_ms))) if ts_ms.size > 1 else 0
    return (np.concatenate([[float(initial_value)], equity]),
            np.concatenate([[int(ts_ms[0]) - step], ts_ms]).astype(np.int64))


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

    mean(r) / std(r, ddof 1) x sqrt(periods_per_year(ts_ms)): the formula of quantstats'
    `sharpe` and empyrical's `sharpe_ratio` with their `periods` / `annualization` set to the
    data's own periods a year. 0 with fewer than 3 points or no variation.
    """
    if equity.size < 3:
        return 0.0
    r = np.diff(equity) / equity[:-1]
    sd = float(np.std(r, ddof=1))
    per_year = periods_per_year(ts_ms)
    if not (sd > 0 and per_year > 0):
        return 0.0
    return float(np.mean(r) / sd * math.sqrt(per_year))


def sortino(equity: np.ndarray, ts_ms: np.ndarray) -> float:
    """Annualised Sortino ratio of per-cycle simple returns of equity, target 0.

    mean(r) / sqrt(mean(min(r, 0)^2)) x sqrt(periods_per_year(ts_ms)), the downside deviation
    taken over all returns (quantstats' `sortino`, empyrical's `sortino_ratio`). 0 with fewer
    than 3 points or no losing cycle.
    """
    if equity.size < 3:
        return 0.0
    r = np.diff(equity) / equity[:-1]
    down = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
    per_year = periods_per_year(ts_ms)
    if not (down > 0 and per_year > 0):
        return 0.0
    return float(np.mean(r) / down * math.sqrt(per_year))


def quote_lag(fill_model: str) -> int:
    """Cycles between a quote and the row its fill is recorded in: `touch` quotes at row t fill
    against row t+1 (1); `instant` quotes fill in the row that made them (0)."""
    return 0 if fill_model == "instant" else 1


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


def trading_stats(
    equity: pl.DataFrame, fills: pl.DataFrame, initial_value: float, initial_base: float = 0.0,
    fill_model: str = "touch",
) -> Dict[str, float]:
    """Metrics beyond the basics: against holding, edge, adverse selection, inventory, activity.

    hold_value: the starting portfolio (initial_base and initial_value - initial_base x the
    first mid in quote) valued at the last mid; pnl_vs_hold = final equity - hold_value.
    market_return_pct: the mid's change over the run, % (what holding base alone returned).
    turnover: traded notional / time-weighted mean equity, per run (not annualised).
    fill_model: which cycle made a filled quote (quote_lag). sortino: over the equity from the
    value before the first cycle (with_start). The rest: see spread_captured_bps, markout_bps,
    time_weighted_inventory, fill_ratio, sortino.
    """
    eq = equity["equity"].to_numpy()
    mids = equity["mid"].to_numpy()
    final = float(eq[-1]) if eq.size else initial_value  # no cycle: the starting value
    if eq.size:
        hold = initial_base * float(mids[-1]) + (initial_value - initial_base * float(mids[0]))
        market = (float(mids[-1]) / float(mids[0]) - 1.0) * 100.0 if mids[0] > 0 else 0.0
    else:
        hold, market = initial_value, 0.0
    matched = MatchedFills(equity, fills, quote_lag(fill_model))
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
        "sortino": sortino(*with_start(eq, equity["ts_ms"].to_numpy(), initial_value)),
    }


def compute_stats(equity: pl.DataFrame, fills: pl.DataFrame, initial_value: Optional[float] = None) -> Dict[str, float]:
    """The summary's metrics from the equity frame (record.EQUITY_SCHEMA) and the fills.

    fills has columns side ('buy' | 'sell'), price, amount (base), fee (quote).
    initial_value: the value before the first cycle (quote currency); the equity frame's first
    row comes after it, which under `instant` has already traded. None = that first row.
    max_drawdown_pct and sharpe run over the equity from initial_value (with_start), so the
    first cycle's move counts. Values are in the quote currency unless named *_pct (percent)
    or counted.
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
        "max_drawdown_pct": max_drawdown_pct(with_start(eq, equity["ts_ms"].to_numpy(), initial_value)[0]),
        "sharpe": sharpe(*with_start(eq, equity["ts_ms"].to_numpy(), initial_value)),
        "final_base": float(equity["base"][-1]) if eq.size else 0.0,
        "final_quote": float(equity["quote"][-1]) if eq.size else initial,
        "ticks": int(equity.height),
    }
