"""Known values: the whole summary of a small hand-made run, every metric worked out by hand.

The run: 12 one-second cycles of a pair starting with 1,000 quote and no base, maker fee 0.1 %.
Cycle 1 buys 1 at 99, cycle 2 sells 0.5 at 101 (mid 100 both times); the mid dips to 99 at
cycle 3 and ends at 104.

    cycle  mid   base  quote      equity      bid/ask quoted
    0      100   0     1000       1000        99 / -
    1      100   1     900.901    1000.901    99 / 101      buy 1 @ 99, fee 0.099
    2      100   0.5   951.3505   1001.3505   99 / 101      sell 0.5 @ 101, fee 0.0505
    3      99    0.5   951.3505   1000.8505   99 / 101
    4..10  100   0.5   951.3505   1001.3505   99 / 101
    11     104   0.5   951.3505   1003.3505   - / -
"""

import math
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from mmrun.config import PairSpec
from mmrun.recorder import PairOutcome, fills_frame
from mmrun.record import EQUITY_SCHEMA, frame
from mmrun.output import pair_summary
from mmrun.stats import MS_PER_YEAR, compute_stats, trading_stats

NAN = math.nan
MID = [100, 100, 100, 99] + [100] * 7 + [104]
BASE = [0, 1] + [0.5] * 10
QUOTE = [1000, 900.901] + [951.3505] * 10
EQUITY = [1000, 1000.901, 1001.3505, 1000.8505] + [1001.3505] * 7 + [1003.3505]


def hand_run():
    ts = np.arange(12, dtype=np.int64) * 1000
    equity = frame(
        {
            "ts_ms": ts,
            "mid": np.array(MID, dtype=float),
            "bid_quoted": np.array([99.0] * 11 + [NAN]),
            "ask_quoted": np.array([NAN] + [101.0] * 10 + [NAN]),
            "base": np.array(BASE, dtype=float),
            "quote": np.array(QUOTE, dtype=float),
            "equity": np.array(EQUITY, dtype=float),
        },
        EQUITY_SCHEMA,
    )
    fills = fills_frame([1000, 2000], [1.0, -1.0], [99.0, 101.0], [1.0, 0.5], [0.099, 0.0505], [1.0, 0.5], [900.901, 951.3505])
    return equity, fills


def test_the_engine_makes_the_hand_runs_fills_and_balances():
    """The hand run is what the kernel does on its market: a bid 1 % under the mid (99) fills 1 unit at
    row 1, the ask (101) half a unit at row 2 (participation 0.5 x volume 1), nothing trades after."""
    from mmrun import engine
    from mmrun.backtest import run_backtest

    n = len(MID)
    mid = np.array(MID, dtype=float)
    low, high, volume = np.full(n, NAN), np.full(n, NAN), np.zeros(n)
    low[1], high[1], volume[1] = 98.5, 100.0, 2.0
    low[2], high[2], volume[2] = 99.5, 101.5, 1.0
    rows = {"ts_ms": np.arange(n, dtype=np.int64) * 1000, "bid": mid, "ask": mid, "last": mid, "low": low,
            "high": high, "volume": volume}
    params = engine.make_params(0.02, 0.1, 1.0, 1000.0, 0.001, "touch", 0.5, 0.5)
    state = engine.make_state(0.0, 1000.0, params)
    out = run_backtest("ABC/USDT", params, state, rows)
    _, fills = hand_run()
    assert out.fills["ts_ms"].to_list() == fills["ts_ms"].to_list()
    assert out.fills["side"].to_list() == fills["side"].to_list() == ["buy", "sell"]
    for col in ("price", "amount", "fee", "base", "quote"):
        assert out.fills[col].to_list() == pytest.approx(fills[col].to_list(), rel=1e-12), col
    assert out.equity["base"].to_list() == pytest.approx(BASE, rel=1e-12)
    assert out.equity["quote"].to_list() == pytest.approx(QUOTE, rel=1e-12)
    assert out.equity["equity"].to_list() == pytest.approx(EQUITY, rel=1e-12)
    # the ask finds no base to sell at row 0, and only 0.5 of the 1 unit it wants from row 2 on
    assert out.quotes_dropped == dict(engine.quotes_dropped(state)) == {**dict.fromkeys(engine.DROP_REASONS, 0),
                                                                         "balance": 11}


def test_the_whole_summary_of_a_hand_made_run():
    equity, fills = hand_run()
    cfg = SimpleNamespace(
        exchange=SimpleNamespace(id="sim"), mode="backtest", seed=7, strategy=SimpleNamespace(name="symmetric"),
        spread=0.02, fills=SimpleNamespace(model="touch"), fees=SimpleNamespace(maker=0.001),
    )
    out = PairOutcome(pair="ABC/USDT", status="completed", equity=equity, fills=fills, market=None, fingerprint="f")
    got = pair_summary(cfg, PairSpec("ABC/USDT", 1000.0), out)

    # per-cycle returns: only cycles 1, 2, 3, 4 and 11 move
    r = np.zeros(11)
    r[0] = 1000.901 / 1000 - 1
    r[1] = 1001.3505 / 1000.901 - 1
    r[2] = 1000.8505 / 1001.3505 - 1  # the one losing cycle
    r[3] = 1001.3505 / 1000.8505 - 1
    r[10] = 1003.3505 / 1001.3505 - 1
    per_year = math.sqrt(MS_PER_YEAR / 1000.0)
    share = [0, 100 / 1000.901, 50 / 1001.3505, 49.5 / 1000.8505] + [50 / 1001.3505] * 7  # cycles 0..10
    want = {
        "pair": "ABC/USDT",
        "exchange": "sim",
        "mode": "backtest",
        "status": "completed",
        "initial_value": 1000.0,
        "final_value": 1003.3505,
        "total_return_pct": 0.33505,
        "pnl": 3.3505,
        "trades": 2,
        "buys": 1,
        "sells": 1,
        "volume_quote": 149.5,  # 99 + 50.5
        "fees": 0.1495,
        "max_drawdown_pct": 0.5 / 1001.3505 * 100,  # cycle 2's peak to cycle 3
        "sharpe": float(np.mean(r) / np.std(r, ddof=1) * per_year),
        "final_base": 0.5,
        "final_quote": 951.3505,
        "ticks": 12,
        # holding the starting portfolio (all quote) keeps 1,000
        "hold_value": 1000.0,
        "pnl_vs_hold": 3.3505,
        "market_return_pct": 4.0,  # 100 -> 104
        # both fills 1 % better than the mid: 100 bps
        "spread_captured_bps": 100.0,
        # buy: (100 - 99) / 99, weight 99; sell: -(99 - 101) / 101, weight 50.5 -> 20,000 / 149.5
        "markout_1_bps": 20000 / 149.5,
        # only the buy has 10 later cycles: (104 - 99) / 99
        "markout_10_bps": 5 / 99 * 1e4,
        # cycles 0..10, one second each: base 0, 1, then 0.5 nine times
        "avg_inventory_base": 5.5 / 11,
        "avg_inventory_share": sum(share) / 11,
        "turnover": 149.5 / (sum(EQUITY[:11]) / 11),
        # 11 bids + 10 asks quoted, 2 fills
        "fill_ratio": 2 / 21,
        "sortino": float(np.mean(r) / math.sqrt(r[2] ** 2 / 11) * per_year),
        "errors": 0,
        "quotes_dropped": {},  # the hand run's outcome carries no engine state
        "data_source": "sim",
        "data_format": "simulated market",
        "gaps": 0,
        "retries": 0,
        "trades_incomplete": 0,
        "seed": 7,
        "data_fingerprint": "f",
        "strategy": "symmetric",
        "spread": 0.02,
        "fill_model": "touch",
        "capital": 1000.0,
        "fee_maker": 0.001,
        "market_start": "1970-01-01T00:00:00.000Z",
        "market_end": "1970-01-01T00:00:11.000Z",
    }
    for key, value in want.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert got[key] == value, key
    assert set(got) - set(want) == {"mmrun_version"}


def test_metrics_of_an_empty_and_a_flat_run_are_zero():
    equity, fills = hand_run()
    none = fills.head(0)
    flat = equity.with_columns(pl.lit(1000.0).alias("equity"), pl.lit(0.0).alias("base"))
    got = trading_stats(flat, none, initial_value=1000.0)
    assert got["spread_captured_bps"] == 0.0 and got["markout_1_bps"] == 0.0 and got["markout_10_bps"] == 0.0
    assert got["sortino"] == 0.0 and got["turnover"] == 0.0 and got["avg_inventory_share"] == 0.0
    stats = compute_stats(flat, none, initial_value=1000.0)
    assert stats["sharpe"] == 0.0 and stats["max_drawdown_pct"] == 0.0 and stats["trades"] == 0


def test_hold_value_of_a_portfolio_starting_with_base():
    # 2 base at the first mid 100 plus 800 quote: held to the last mid 104 -> 1,008
    equity, fills = hand_run()
    got = trading_stats(equity, fills, initial_value=1000.0, initial_base=2.0)
    assert got["hold_value"] == pytest.approx(1008.0)
    assert got["pnl_vs_hold"] == pytest.approx(1003.3505 - 1008.0)
