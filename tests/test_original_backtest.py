"""`fills=instant fees.maker=0` reproduces the original backtest's numbers exactly.

`original_backtest` restates the original formula independently of mmrun: walk the closes;
each bar size = capital x order_size_pct / close, capped at capital x max_inventory_exposure /
close; buy at close x (1 - spread/2) if the quote balance covers it, then sell at close x
(1 + spread/2) if the base balance covers it; report initial_capital, final_value (quote + base
x last close), total_return_percentage and total_trades.
"""

import json

import numpy as np
import pytest

from clirun import run_mmrun

T0 = 1_767_225_600_000


def original_backtest(closes, capital=10_000.0, spread=0.002, order_size_pct=0.01, max_inventory_exposure=0.2):
    base, quote, trades = 0.0, capital, 0
    for close in closes:
        size = min(capital * order_size_pct / close, capital * max_inventory_exposure / close)
        buy_price = close * (1 - spread / 2)
        sell_price = close * (1 + spread / 2)
        if quote >= buy_price * size:
            quote -= buy_price * size
            base += size
            trades += 1
        if base >= size:
            base -= size
            quote += sell_price * size
            trades += 1
    final_value = quote + base * closes[-1]
    return {
        "initial_capital": capital,
        "final_value": final_value,
        "total_return_percentage": (final_value - capital) / capital * 100,
        "total_trades": trades,
    }


def candle_file(tmp_path, n, seed):
    rng = np.random.default_rng(seed)
    close = 2500.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[2500.0], close[:-1]])
    high = np.maximum(open_, close) * 1.003
    low = np.minimum(open_, close) * 0.997
    path = tmp_path / "candles.csv"
    with open(path, "w") as f:
        f.write("timestamp,open,high,low,close,volume\n")
        for i in range(n):
            # repr: the file carries every bit of each price
            f.write(f"{T0 + i * 60_000},{float(open_[i])!r},{float(high[i])!r},{float(low[i])!r},{float(close[i])!r},1.0\n")
    return path, close.tolist()


@pytest.mark.parametrize(
    "overrides,kw",
    [
        ([], {}),
        (["spread=0.005", "capital=2500", "sizing.order_size_pct=0.3"], {"spread": 0.005, "capital": 2500.0, "order_size_pct": 0.3}),
    ],
    ids=["defaults", "exposure-cap-binds"],
)
def test_instant_zero_fee_backtest_reproduces_the_original_exactly(tmp_path, overrides, kw):
    path, closes = candle_file(tmp_path, 3000, seed=len(overrides))
    want = original_backtest(closes, **kw)
    res = run_mmrun("mode=backtest", f"data.path={path}", "fills=instant", "fees.maker=0", *overrides, run_dir=tmp_path / "run")
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert got["initial_value"] == want["initial_capital"]
    assert got["final_value"] == want["final_value"]
    assert got["total_return_pct"] == want["total_return_percentage"]
    assert got["trades"] == want["total_trades"] == 2 * len(closes)


def test_the_reference_itself_on_a_hand_computed_case():
    # capital 1000, 1 % -> size 10/close; close 100: buy 0.1 at 99.9, sell 0.1 at 100.1 -> +0.02
    out = original_backtest([100.0, 100.0], capital=1000.0, spread=0.002, order_size_pct=0.01)
    assert out["total_trades"] == 4
    assert out["final_value"] == pytest.approx(1000.04, abs=1e-9)
    # the exposure cap: 50 % wanted, 20 % allowed -> size 2; quote 1000 covers 2 x 99.9
    out = original_backtest([100.0], capital=1000.0, order_size_pct=0.5, max_inventory_exposure=0.2)
    assert out["final_value"] == pytest.approx(1000.0 + 2 * 0.2, abs=1e-9)
