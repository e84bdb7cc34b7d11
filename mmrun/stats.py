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


def compute_stats(equity: pl.DataFrame, fills: pl.DataFrame, initial_value: Optional[float] = None) -> Dict[str, float]:
    """The summary's metrics from the equity frame (record.EQUITY_SCHEMA) and the fills.

    fills has columns side ('buy' | 'sell'), price, amount (base), fee (quote).
    initial_value: the value before the first cycle (quote currency); the equity frame's first
    row comes after it, which under `instant` has already traded. None = that first row.
    Values are in the quote currency unless named *_pct (percent) or counted.
    """
    eq = equity["equity"].to_numpy()
    initial = float(initial_value) if initial_value is not None else (float(eq[0]) if eq.size else 0.0)
    final = float(eq[-1]) if eq.size else 0.0
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
        "final_quote": float(equity["quote"][-1]) if eq.size else 0.0,
        "ticks": int(equity.height),
    }
