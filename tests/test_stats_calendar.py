"""Sharpe and Sortino on the data's own calendar, the start of an `instant` run, and the spread
captured against the mid its quotes were made from: exact values worked out by hand."""

import math

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from mmrun import engine
from mmrun.__main__ import CONF_DIR
from mmrun.backtest import run_backtest
from mmrun.record import EQUITY_SCHEMA, frame
from mmrun.runner import build_params
from mmrun.stats import (
    MS_PER_YEAR, compute_stats, max_drawdown_pct, periods_per_year, sharpe, sortino, trading_stats, with_start,
)
from stats_reference import MatchedFills, spread_captured_bps

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MONDAY = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday


def weekday_hours(weeks: int) -> np.ndarray:
    """Hourly bars of a 24x5 market (EURUSD): Monday 00:00 to Friday 23:00, `weeks` weeks."""
    days = [MONDAY + (7 * w + d) * DAY_MS for w in range(weeks) for d in range(5)]
    return np.array([day + h * HOUR_MS for day in days for h in range(24)], dtype=np.int64)


def quantstats_sharpe(returns: np.ndarray, periods: float) -> float:
    """quantstats.stats.sharpe (rf 0): returns.mean() / returns.std(ddof=1) * sqrt(periods);
    empyrical.sharpe_ratio is the same formula with annualization=periods."""
    return float(returns.mean() / returns.std(ddof=1) * math.sqrt(periods))


def quantstats_sortino(returns: np.ndarray, periods: float) -> float:
    """quantstats.stats.sortino (rf 0): mean / sqrt(sum(r[r < 0]^2) / len(r)) * sqrt(periods)."""
    downside = math.sqrt(float((returns[returns < 0] ** 2).sum()) / len(returns))
    return float(returns.mean() / downside * math.sqrt(periods))


def test_hourly_24x5_series_is_annualised_by_its_own_calendar():
    ts = weekday_hours(4)  # 480 bars
    rng = np.random.default_rng(3)
    equity = 10_000 * np.cumprod(1 + rng.normal(2e-5, 4e-4, ts.size))
    r = np.diff(equity) / equity[:-1]

    # by hand: 479 returns over Monday 00:00 .. Friday of week 4, 23:00 = 25 days 23 hours
    elapsed_years = (25 * DAY_MS + 23 * HOUR_MS) / (365.25 * DAY_MS)
    per_year = 479 / elapsed_years
    assert periods_per_year(ts) == pytest.approx(per_year, rel=1e-12)
    assert sharpe(equity, ts) == pytest.approx(quantstats_sharpe(r, per_year), rel=1e-12)
    assert sortino(equity, ts) == pytest.approx(quantstats_sortino(r, per_year), rel=1e-12)


def test_a_year_of_24x5_bars_has_about_6261_periods_not_8760():
    ts = weekday_hours(52)
    # 24 x 5 x 52.18 weeks = 6,261; the span misses the last weekend (2 of 364 days)
    assert periods_per_year(ts) == pytest.approx(24 * 5 * 365.25 / 7, rel=0.006)
    rng = np.random.default_rng(5)
    equity = 100 * np.cumprod(1 + rng.normal(1e-5, 3e-4, ts.size))
    r = np.diff(equity) / equity[:-1]
    old = quantstats_sharpe(r, 24 * 365)  # every market on a 24 x 365 year
    assert old / sharpe(equity, ts) == pytest.approx(math.sqrt(8760 / (24 * 5 * 365.25 / 7)), rel=0.004)  # ~1.18


def test_daily_stock_bars_have_about_252_periods_a_year():
    # 2026's NYSE-like calendar: weekdays less ten holidays
    days = np.arange(MONDAY - 4 * DAY_MS, MONDAY + 361 * DAY_MS, DAY_MS, dtype=np.int64)
    weekday = ((days // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    trading = days[weekday < 5]
    trading = np.delete(trading, np.arange(5, 250, 25)[:10])
    assert 248 <= trading.size <= 252
    assert periods_per_year(trading) == pytest.approx(252, abs=3)


def test_even_cycles_give_the_cycles_in_a_year():
    ts = np.arange(0, 10 * 5000, 5000, dtype=np.int64)
    assert periods_per_year(ts) == pytest.approx(MS_PER_YEAR / 5000, rel=1e-12)
    assert periods_per_year(ts[:1]) == 0.0 and periods_per_year(np.array([7, 7])) == 0.0


def test_instant_first_cycle_counts_from_the_starting_value():
    # fills=instant: the first row has traded already, 1,000 -> 990 (a fee-heavy first cycle)
    ts = np.array([60_000, 120_000, 180_000, 240_000], dtype=np.int64)
    eq = np.array([990.0, 995.0, 1000.0, 1010.0])
    full, full_ts = with_start(eq, ts, 1000.0)
    assert full.tolist() == [1000.0, 990.0, 995.0, 1000.0, 1010.0]
    assert full_ts.tolist() == [0, 60_000, 120_000, 180_000, 240_000]
    frame_ = frame({"ts_ms": ts, "mid": np.full(4, 100.0), "bid_quoted": np.full(4, np.nan),
                    "ask_quoted": np.full(4, np.nan), "base": np.zeros(4), "quote": eq, "equity": eq}, EQUITY_SCHEMA)
    fills = pl.DataFrame({"ts_ms": [], "side": [], "price": [], "amount": [], "fee": []},
                         schema={"ts_ms": pl.Int64, "side": pl.String, "price": pl.Float64, "amount": pl.Float64,
                                 "fee": pl.Float64})
    got = compute_stats(frame_, fills, initial_value=1000.0)
    assert got["max_drawdown_pct"] == pytest.approx(1.0)  # 1,000 -> 990, missed from the first row on
    r = np.diff(full) / full[:-1]
    per_year = 4 / (240_000 / MS_PER_YEAR)
    assert got["sharpe"] == pytest.approx(quantstats_sharpe(r, per_year), rel=1e-12)
    sortino_got = trading_stats(frame_, fills, initial_value=1000.0, fill_model="instant")["sortino"]
    assert sortino_got == pytest.approx(quantstats_sortino(r, per_year), rel=1e-12)
    # the first row is the start (touch): nothing is prepended
    assert with_start(eq, ts, 990.0)[0] is eq
    assert max_drawdown_pct(eq) == 0.0


def candles(n: int, seed: int) -> dict:
    """Close-only candles (close stands for best bid and ask: no book spread), wide ranges."""
    rng = np.random.default_rng(seed)
    close = 1.1 * np.exp(np.cumsum(rng.normal(0, 0.0015, n)))
    wide = close * 0.004
    ts = MONDAY + np.arange(n, dtype=np.int64) * HOUR_MS
    return {"ts_ms": ts, "bid": close, "ask": close, "last": close, "low": close - wide, "high": close + wide,
            "volume": np.full(n, 1e6)}


@pytest.mark.parametrize("fill_model", ["touch", "instant"])
def test_symmetric_quotes_capture_half_the_spread_against_the_quote_time_mid(fill_model):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["spread=0.002", f"fills={fill_model}", "fees.maker=0"])
    rows = candles(400, 11)
    params = build_params(cfg, 10_000.0, 0.0, dt_s=3600.0)
    out = run_backtest("EUR/USD", params, engine.make_state(0.0, 10_000.0), rows)
    assert out.fills.height > 50
    got = trading_stats(out.equity, out.fills, initial_value=10_000.0, fill_model=fill_model)
    # every quote sits spread/2 = 0.1 % = 10 bps from the mid it was priced from
    assert got["spread_captured_bps"] == pytest.approx(10.0, rel=1e-9)
    if fill_model == "touch":
        # against the mid of the fill's own bar (the old definition) it is not the quoted edge
        assert spread_captured_bps(MatchedFills(out.equity, out.fills, lag=0)) != pytest.approx(10.0, abs=0.1)
