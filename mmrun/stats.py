"""Pure metrics of a run: its cycles (equity, inventory, quotes) and its fills.

`summary_metrics` computes every metric of summary.json from a `RunArrays` in two compiled
passes (one over the cycles, one over the fills): a sweep job over a million bars would
otherwise spend more on these metrics than on replaying the bars. The plain NumPy functions
below (max_drawdown_pct, sharpe, sortino, ...) are the reference definitions, used for the
summed equity of several pairs and checked against the compiled passes by the tests;
compute_stats / trading_stats give the same numbers from a run's Polars frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np
import polars as pl
from numba import njit

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


@dataclass(frozen=True)
class RunArrays:
    """A run as arrays, what every summary metric is computed from.

    Cycles (n,): ts_ms int64 market ms, strictly rising; mid, bid_quoted, ask_quoted (our best
    quotes, NaN: that side not quoted), base, quote (balances after the cycle), all float64 in
    quote per base or the currency's units. equity (n,): the recorded value per cycle, or None
    for quote + base x mid (a backtest's, computed where it is needed).
    Fills (k,): fill_row int64, the cycle each fill is recorded in (its ts_ms equals that
    cycle's); fill_side +1 buy / -1 sell; fill_price (quote per base), fill_amount (base),
    fill_fee (quote), float64.
    """

    ts_ms: np.ndarray
    mid: np.ndarray
    bid_quoted: np.ndarray
    ask_quoted: np.ndarray
    base: np.ndarray
    quote: np.ndarray
    equity: Optional[np.ndarray]
    fill_row: np.ndarray
    fill_side: np.ndarray
    fill_price: np.ndarray
    fill_amount: np.ndarray
    fill_fee: np.ndarray

    @classmethod
    def from_frames(cls, equity: pl.DataFrame, fills: pl.DataFrame) -> "RunArrays":
        """From a run's equity frame (record.EQUITY_SCHEMA; null quotes read as NaN) and fills frame
        (recorder.fills_frame's columns); each fill's cycle is the first with its timestamp."""

        def col(df: pl.DataFrame, name: str) -> np.ndarray:
            return np.ascontiguousarray(df[name].cast(pl.Float64).fill_null(float("nan")).to_numpy(), dtype=np.float64)

        ts = np.ascontiguousarray(equity["ts_ms"].to_numpy(), dtype=np.int64)
        return cls(
            ts_ms=ts, mid=col(equity, "mid"), bid_quoted=col(equity, "bid_quoted"), ask_quoted=col(equity, "ask_quoted"),
            base=col(equity, "base"), quote=col(equity, "quote"), equity=col(equity, "equity"),
            fill_row=np.searchsorted(ts, fills["ts_ms"].to_numpy(), side="left").astype(np.int64),
            fill_side=np.where((fills["side"] == "buy").to_numpy(), 1.0, -1.0),
            fill_price=col(fills, "price"), fill_amount=col(fills, "amount"), fill_fee=col(fills, "fee"),
        )

    def equity_values(self) -> np.ndarray:
        """The equity per cycle (n,), quote currency."""
        return self.equity if self.equity is not None else self.quote + self.base * self.mid


# The compiled passes. error_model="numpy": a division by zero gives inf/NaN as NumPy does (the
# reference functions above), not an exception. The fills' sums are compensated (Neumaier's
# variant of Kahan summation: A. Neumaier, ZAMM 54 (1974) 39-51), so totals such as the fees come
# out as the correctly rounded sum in practice, not with the error a long left-to-right sum of
# many like values gathers, and so is the sum of the returns (the mean return, whose deviations
# are summed next); the sums of squares and the time-weighted sums are plain (compensating every
# sum doubles the pass's time). A figure may differ from NumPy's pairwise sums in its last bits
# (the tests hold them to 1e-12 on 5,000 cycles; over a million cycles ~1e-12 of the value).
_JIT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_JIT)
def _add(s, c, x):
    """(s, c) += x, compensated: s the running sum, c its lost low-order part; the total is s + c."""
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


@njit(**_JIT)
def _value(equity, has_equity, quote, base, mid, i):
    return equity[i] if has_equity else quote[i] + base[i] * mid[i]


@njit(**_JIT)
def _cycle_pass(equity, has_equity, quote, base, mid, ts, bid_q, ask_q, start_value, start_ms, prepend):
    """One run's per-cycle metrics, over its equity from the value before the first cycle when
    prepend (with_start). Returns (max_drawdown_pct, sharpe, sortino, avg_inventory_base,
    avg_inventory_share, mean_equity, quoted_sides)."""
    n = ts.shape[0]
    m = n + 1 if prepend else n  # points of the equity series the return metrics run over
    # sums: 0 returns, 1 squared deviations, 2 squared losses, 3 weights, 4 base x w, 5 share x w,
    # 6 equity x w, 7 equity
    a0 = c0 = a1 = a2 = 0.0  # the returns' sums (a0 compensated: the mean return)
    a3 = a4 = a5 = a6 = a7 = 0.0
    peak = start_value if prepend else -np.inf
    dd = 0.0
    prev = start_value
    quoted = 0
    # first pass: drawdown, the returns' sum, the time-weighted sums
    for i in range(n):
        e = _value(equity, has_equity, quote, base, mid, i)
        if e > peak:
            peak = e
        # the division only where the fall may be a new largest (the exact test follows)
        if peak > 0 and peak - e > dd * peak * (1.0 - 1e-12):
            d = (peak - e) / peak
            if d > dd:
                dd = d
        if prepend or i > 0:
            a0, c0 = _add(a0, c0, (e - prev) / prev)
        prev = e
        a7 += e
        quoted += (bid_q[i] == bid_q[i]) + (ask_q[i] == ask_q[i])  # not NaN: quoted
        if i < n - 1:  # each cycle counts until the next one
            w = float(ts[i + 1] - ts[i])
            a3 += w
            a4 += base[i] * w
            a5 += (base[i] * mid[i] / e if e > 0 else 0.0) * w
            a6 += e * w
    sharpe = 0.0
    sortino = 0.0
    if m >= 3:
        # second pass: deviations from the mean return, and the losses
        mean_r = (a0 + c0) / (m - 1)
        prev = start_value if prepend else _value(equity, has_equity, quote, base, mid, 0)
        for i in range(0 if prepend else 1, n):
            e = _value(equity, has_equity, quote, base, mid, i)
            r = (e - prev) / prev
            a1 += (r - mean_r) * (r - mean_r)
            loss = min(r, 0.0)  # no branch: the sign of a return is a coin toss
            a2 += loss * loss
            prev = e
        first_ms = start_ms if prepend else ts[0]
        years = (ts[n - 1] - first_ms) / MS_PER_YEAR
        per_year = (m - 1) / years if years > 0 else 0.0
        sd = math.sqrt(a1 / (m - 2))
        if sd > 0 and per_year > 0:
            sharpe = mean_r / sd * math.sqrt(per_year)
        dn = math.sqrt(a2 / (m - 1))
        if dn > 0 and per_year > 0:
            sortino = mean_r / dn * math.sqrt(per_year)
    avg_base = 0.0
    avg_share = 0.0
    mean_equity = 0.0
    if n == 1:
        e = _value(equity, has_equity, quote, base, mid, 0)
        avg_base = base[0]
        avg_share = base[0] * mid[0] / e if e > 0 else 0.0
        mean_equity = e
    elif n > 1:
        w_sum = a3
        if w_sum > 0:
            avg_base = a4 / w_sum
            avg_share = a5 / w_sum
            mean_equity = a6 / w_sum
        else:  # every cycle at one time: each counts once
            mean_equity = a7 / n
            a4 = a5 = 0.0
            for i in range(n - 1):
                e = _value(equity, has_equity, quote, base, mid, i)
                a4 += base[i]
                a5 += base[i] * mid[i] / e if e > 0 else 0.0
            avg_base = a4 / (n - 1)
            avg_share = a5 / (n - 1)
    return dd * 100.0, sharpe, sortino, avg_base, avg_share, mean_equity, quoted


@njit(**_JIT)
def _fill_pass(row, side, price, amount, fee, mid, lag):
    """The fills' totals and edge metrics. Returns (buys, volume_quote, fees, spread_captured_bps,
    markout_1_bps, markout_10_bps); see summary_metrics."""
    k = row.shape[0]
    n = mid.shape[0]
    buys = 0
    n1 = 0  # fills with a cycle 1 and 10 cycles later
    n10 = 0
    # sums: 0 notional, 1 fees, 2 notional x edge, 3 notional x markout 1, 4 its weights,
    # 5 notional x markout 10, 6 its weights
    a0 = c0 = a1 = c1 = a2 = c2 = a3 = c3 = a4 = c4 = a5 = c5 = a6 = c6 = 0.0
    for j in range(k):
        notional = price[j] * amount[j]
        a0, c0 = _add(a0, c0, notional)
        a1, c1 = _add(a1, c1, fee[j])
        if side[j] > 0:
            buys += 1
        if n == 0:
            continue
        r = row[j]
        q = r - lag if r >= lag else 0
        a2, c2 = _add(a2, c2, notional * (side[j] * (mid[q] - price[j]) / mid[q] * 1e4))
        if r + 1 < n:
            a3, c3 = _add(a3, c3, notional * (side[j] * (mid[r + 1] - price[j]) / price[j] * 1e4))
            a4, c4 = _add(a4, c4, notional)
            n1 += 1
        if r + 10 < n:
            a5, c5 = _add(a5, c5, notional * (side[j] * (mid[r + 10] - price[j]) / price[j] * 1e4))
            a6, c6 = _add(a6, c6, notional)
            n10 += 1
    volume = a0 + c0
    spread = (a2 + c2) / volume if (k > 0 and n > 0) else 0.0
    m1 = (a3 + c3) / (a4 + c4) if n1 else 0.0
    m10 = (a5 + c5) / (a6 + c6) if n10 else 0.0
    return buys, volume, a1 + c1, spread, m1, m10


def summary_metrics(run: RunArrays, initial_value: Optional[float] = None, initial_base: float = 0.0,
                    fill_model: str = "touch") -> Dict[str, Any]:
    """Every metric of a run's summary.json, from its arrays: compute_stats' keys, then trading_stats'.

    initial_value: the value before the first cycle (quote currency); None = the first cycle's.
    When the first cycle has already moved from it (`fills=instant` trades at once), the
    drawdown, Sharpe and Sortino run over the equity from it, one median spacing before the
    first cycle (with_start). initial_base: base units held at the start (run.start=target),
    for hold_value. fill_model: which cycle made a filled quote (quote_lag).

    Formulas (references: the NumPy functions of this module):
    - max_drawdown_pct: largest fall from a running peak, % of the peak (max_drawdown_pct).
    - sharpe, sortino: per-cycle simple returns, annualised by the data's own calendar
      (sharpe, sortino, periods_per_year; quantstats' and empyrical's formulas).
    - spread_captured_bps: notional-weighted side x (mid - price) / mid x 1e4, mid of the cycle
      that made the quote; markout_k_bps: notional-weighted side x (mid k cycles after the
      fill's cycle - price) / price x 1e4 over the fills with k later cycles.
    - avg_inventory_base / avg_inventory_share (base x mid / equity): time-weighted means, each
      cycle counting until the next; turnover: traded notional / time-weighted mean equity.
    - fill_ratio: fills / quoted sides (a side counts once per cycle it was quoted).
    - hold_value: the starting portfolio valued at the last mid; pnl_vs_hold = final - hold;
      market_return_pct: the mid's change over the run, %.
    Values are in the quote currency unless named *_pct, *_bps or counted.
    """
    n, k = run.ts_ms.shape[0], run.fill_row.shape[0]
    has_eq = run.equity is not None
    eq = run.equity if has_eq else np.empty(0)
    first = (float(eq[0]) if has_eq else float(run.quote[0] + run.base[0] * run.mid[0])) if n else 0.0
    last = (float(eq[-1]) if has_eq else float(run.quote[-1] + run.base[-1] * run.mid[-1])) if n else 0.0
    initial = float(initial_value) if initial_value is not None else first
    final = last if n else initial
    prepend = initial_value is not None and n > 0 and abs(first - float(initial_value)) > 1e-9 * abs(initial_value)
    start_ms = int(run.ts_ms[0]) - (int(np.median(np.diff(run.ts_ms))) if n > 1 else 0) if prepend else 0
    dd = sh = so = avg_base = avg_share = mean_equity = 0.0
    quoted = 0
    if n:
        dd, sh, so, avg_base, avg_share, mean_equity, quoted = _cycle_pass(
            eq, has_eq, run.quote, run.base, run.mid, run.ts_ms, run.bid_quoted, run.ask_quoted,
            initial, start_ms, prepend)
    buys, volume, fees, spread, m1, m10 = _fill_pass(run.fill_row, run.fill_side, run.fill_price, run.fill_amount,
                                                   run.fill_fee, run.mid, quote_lag(fill_model))
    if n:
        m0, m_last = float(run.mid[0]), float(run.mid[-1])
        hold = initial_base * m_last + (initial - initial_base * m0)
        market = (m_last / m0 - 1.0) * 100.0 if m0 > 0 else 0.0
    else:
        hold, market = initial, 0.0
    return {
        "initial_value": initial,
        "final_value": final,
        # (final - initial) first: exact for any final within 2x of initial, and the original
        # backtest's formula, which `fills=instant fees.maker=0` reproduces to the last bit
        "total_return_pct": (final - initial) / initial * 100.0 if initial > 0 else 0.0,
        "pnl": final - initial,
        "trades": int(k),
        "buys": int(buys),
        "sells": int(k - buys),
        "volume_quote": float(volume),
        "fees": float(fees),
        "max_drawdown_pct": float(dd),
        "sharpe": float(sh),
        "final_base": float(run.base[-1]) if n else 0.0,
        "final_quote": float(run.quote[-1]) if n else initial,
        "ticks": int(n),
        "hold_value": hold,
        "pnl_vs_hold": final - hold,
        "market_return_pct": market,
        "spread_captured_bps": float(spread),
        "markout_1_bps": float(m1),
        "markout_10_bps": float(m10),
        "avg_inventory_base": float(avg_base),
        "avg_inventory_share": float(avg_share),
        "turnover": float(volume) / mean_equity if mean_equity > 0 else 0.0,
        "fill_ratio": float(k) / quoted if quoted else 0.0,
        "sortino": float(so),
    }


BASIC_KEYS = ("initial_value", "final_value", "total_return_pct", "pnl", "trades", "buys", "sells", "volume_quote",
              "fees", "max_drawdown_pct", "sharpe", "final_base", "final_quote", "ticks")

def trading_stats(
    equity: pl.DataFrame, fills: pl.DataFrame, initial_value: float, initial_base: float = 0.0,
    fill_model: str = "touch",
) -> Dict[str, float]:
    """Metrics beyond the basics (against holding, edge, adverse selection, inventory, activity)
    of a run's equity frame and fills frame: summary_metrics' keys after BASIC_KEYS."""
    got = summary_metrics(RunArrays.from_frames(equity, fills), initial_value, initial_base, fill_model)
    return {key: v for key, v in got.items() if key not in BASIC_KEYS}


def compute_stats(equity: pl.DataFrame, fills: pl.DataFrame, initial_value: Optional[float] = None) -> Dict[str, float]:
    """The summary's basic metrics (BASIC_KEYS, see summary_metrics) from the equity frame
    (record.EQUITY_SCHEMA) and the fills (columns side 'buy' | 'sell', price, amount, fee)."""
    got = summary_metrics(RunArrays.from_frames(equity, fills), initial_value)
    return {key: got[key] for key in BASIC_KEYS}
