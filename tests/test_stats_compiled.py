"""The compiled metric passes (mmrun.stats.summary_metrics) against the NumPy reference definitions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from mmrun.record import EQUITY_SCHEMA, frame
from mmrun.recorder import fills_frame
from mmrun.stats import (BASIC_KEYS, RunArrays, compute_stats, max_drawdown_pct, quote_lag, sharpe, sortino,
                         summary_metrics, trading_stats, with_start)
from stats_reference import MatchedFills, fill_ratio, markout_bps, spread_captured_bps, time_weighted_inventory


def random_run(n: int, k: int, seed: int, first_moved: bool = False):
    """(equity frame, fills frame) of a made-up run: n cycles a minute apart with gaps, k fills."""
    rng = np.random.default_rng(seed)
    ts = 1_767_225_600_000 + np.cumsum(rng.integers(1, 4, n)) * 60_000
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    base = np.abs(np.cumsum(rng.normal(0, 0.05, n)))
    quote = 1000.0 - base * mid + np.cumsum(rng.normal(0, 0.01, n))
    if first_moved:
        quote[0] += 5.0
    bid = np.where(rng.random(n) < 0.8, mid * 0.999, np.nan)
    ask = np.where(rng.random(n) < 0.8, mid * 1.001, np.nan)
    equity = frame({"ts_ms": ts, "mid": mid, "bid_quoted": bid, "ask_quoted": ask, "base": base, "quote": quote,
                    "equity": quote + base * mid}, EQUITY_SCHEMA)
    rows = np.sort(rng.integers(0, n, k))
    side = np.where(rng.random(k) < 0.5, 1.0, -1.0)
    price = mid[rows] * (1 - side * 0.001)
    amount = rng.random(k) * 0.1 + 0.01
    fills = fills_frame(ts[rows], side, price, amount, price * amount * 0.001, base[rows], quote[rows])
    return equity, fills


def reference(equity: pl.DataFrame, fills: pl.DataFrame, initial: float, initial_base: float, fill_model: str):
    eq = equity["equity"].to_numpy()
    ts = equity["ts_ms"].to_numpy()
    mids = equity["mid"].to_numpy()
    f = MatchedFills(equity, fills, quote_lag(fill_model))
    w = np.diff(ts).astype(np.float64)
    mean_equity = float(np.sum(eq[:-1] * w) / w.sum())
    volume = float((fills["price"] * fills["amount"]).sum())
    return {
        "max_drawdown_pct": max_drawdown_pct(with_start(eq, ts, initial)[0]),
        "sharpe": sharpe(*with_start(eq, ts, initial)),
        "sortino": sortino(*with_start(eq, ts, initial)),
        "volume_quote": volume,
        "fees": float(fills["fee"].sum()),
        "buys": int((fills["side"] == "buy").sum()),
        "spread_captured_bps": spread_captured_bps(f),
        "markout_1_bps": markout_bps(f, 1),
        "markout_10_bps": markout_bps(f, 10),
        **time_weighted_inventory(equity),
        "turnover": volume / mean_equity,
        "fill_ratio": fill_ratio(equity, fills),
        "hold_value": initial_base * float(mids[-1]) + (initial - initial_base * float(mids[0])),
        "final_value": float(eq[-1]),
    }


@pytest.mark.parametrize("seed,first_moved,fill_model", [(1, False, "touch"), (2, True, "instant"), (3, False, "instant")])
def test_the_compiled_passes_give_the_reference_metrics(seed, first_moved, fill_model):
    equity, fills = random_run(5000, 900, seed, first_moved)
    want = reference(equity, fills, 1000.0, 2.0, fill_model)
    got = summary_metrics(RunArrays.from_frames(equity, fills), 1000.0, 2.0, fill_model)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert got["max_drawdown_pct"] > 0 and got["sortino"] != 0 and got["markout_10_bps"] != 0


def test_the_arrays_of_a_backtest_and_its_frames_give_the_same_summary():
    equity, fills = random_run(3000, 500, 4)
    run = RunArrays.from_frames(equity, fills)
    computed = RunArrays(**{**run.__dict__, "equity": None})  # a backtest's: quote + base x mid
    assert summary_metrics(computed, 1000.0) == summary_metrics(run, 1000.0)
    assert np.array_equal(computed.equity_values(), equity["equity"].to_numpy())


def test_the_frames_functions_split_the_summary_in_its_order():
    equity, fills = random_run(200, 30, 5)
    got = {**compute_stats(equity, fills, 1000.0), **trading_stats(equity, fills, 1000.0)}
    assert got == summary_metrics(RunArrays.from_frames(equity, fills), 1000.0)
    assert list(got)[: len(BASIC_KEYS)] == list(BASIC_KEYS)


def test_sums_of_many_fees_are_compensated():
    # 100,000 fees of 0.1 (not exact in binary): a plain left-to-right sum is off in the 11th digit
    equity, _ = random_run(10, 0, 6)
    k = 100_000
    fills = fills_frame(np.full(k, equity["ts_ms"][3]), np.ones(k), np.full(k, 100.0), np.full(k, 0.001),
                        np.full(k, 0.1), np.zeros(k), np.zeros(k))
    got = summary_metrics(RunArrays.from_frames(equity, fills), 1000.0)
    assert got["fees"] == math.fsum([0.1] * k) == 10000.0
    assert got["volume_quote"] == math.fsum([100.0 * 0.001] * k)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_short_runs(n):
    equity, fills = random_run(max(n, 1), 2 if n else 0, 7)
    equity = equity.head(n)
    fills = fills.filter(pl.col("ts_ms") <= (equity["ts_ms"].max() if n else -1))
    got = summary_metrics(RunArrays.from_frames(equity, fills), 1000.0)
    if n < 2:
        assert got["sharpe"] == 0.0 and got["sortino"] == 0.0
    if n:
        assert got["avg_inventory_base"] == pytest.approx(time_weighted_inventory(equity)["avg_inventory_base"], rel=1e-12)
    else:
        assert got["final_value"] == 1000.0 and got["ticks"] == 0 and got["trades"] == 0
