"""Trades (and top-of-book quotes) replayed at the quote cycle: rows by hand, latency, gaps, formats."""

from __future__ import annotations

import functools
import gzip
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrun.errors import DataError
from mmrun.market.history import clear_cache, load_market

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole second
NAN = math.nan

# (ms after T0, price, amount, side: +1 buyer-initiated, -1 seller-initiated)
TRADES = [(100, 100.0, 1.0, 1), (600, 99.0, 2.0, -1), (1200, 101.0, 1.0, 1), (1900, 98.0, 1.0, -1), (3500, 100.0, 1.0, 1)]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def plain_csv(path, trades, side=True):
    head = "timestamp,price,amount" + (",side" if side else "")
    body = "".join(f"{T0 + t},{p},{a}" + (f",{'buy' if s > 0 else 'sell'}" if side else "") + "\n" for t, p, a, s in trades)
    path.write_text(head + "\n" + body)
    return str(path)


def same(a, b):
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


def test_rows_by_hand(tmp_path):
    r = load_market(plain_csv(tmp_path / "t.csv", TRADES), cycle_s=1.0).rows
    assert r["ts_ms"].tolist() == [T0 + 1000, T0 + 2000, T0 + 3000, T0 + 4000]
    assert same(r["low"], [99, 98, NAN, 100])
    assert same(r["high"], [100, 101, NAN, 100])
    assert r["volume"].tolist() == [3, 2, 0, 1]
    assert r["last"].tolist() == [99, 98, 98, 100]
    # the book from the trades: the last seller-initiated print is the bid, the last buyer-initiated one the ask
    assert r["bid"].tolist() == [99, 98, 98, 98]
    assert r["ask"].tolist() == [100, 101, 101, 100]


def test_without_sides_the_last_price_is_the_book(tmp_path):
    r = load_market(plain_csv(tmp_path / "t.csv", TRADES, side=False), cycle_s=1.0).rows
    assert r["bid"].tolist() == r["ask"].tolist() == r["last"].tolist() == [99, 98, 98, 100]


def test_latency_keeps_the_trades_before_the_quotes_rest_out(tmp_path):
    r = load_market(plain_csv(tmp_path / "t.csv", TRADES), cycle_s=1.0, latency_ms=500).rows
    # cycle [0, 1000): only the print at 600 comes after 500; [1000, 2000): only 1900; 3500 is at 500 exactly: counts
    assert same(r["low"], [99, 98, NAN, 100])
    assert same(r["high"], [99, 98, NAN, 100])
    assert r["volume"].tolist() == [2, 1, 0, 1]
    assert r["last"].tolist() == [99, 98, 98, 100]  # the market itself does not change


def test_a_gap_skips_its_cycles_and_the_row_after_it_has_no_trades(tmp_path):
    data = load_market(plain_csv(tmp_path / "t.csv", TRADES), cycle_s=1.0, max_gap_s=1.0)
    r = data.rows
    assert r["ts_ms"].tolist() == [T0 + 1000, T0 + 2000, T0 + 4000]
    assert same(r["low"], [99, 98, NAN]) and r["volume"].tolist() == [3, 2, 0]
    assert len(data.gaps) == 1 and data.gaps[0].start_ms == T0 + 1900 and data.gaps[0].length_s == 1.6
    # the default: three times the larger of the cycle and the mean spacing (850 ms): 3 s, no gap
    assert load_market(plain_csv(tmp_path / "t.csv", TRADES), cycle_s=1.0).gaps == []


def test_quotes_give_the_book_at_each_cycle(tmp_path):
    q = tmp_path / "q.csv"
    # Binance bookTicker layout (with a header): update_id, best bid/ask price and qty, transaction_time, event_time
    lines = [(0, 99.5, 100.5), (1500, 99.0, 100.0), (2000, 98.5, 99.5), (3999, 99.5, 100.5)]
    q.write_text("update_id,best_bid_price,best_bid_qty,best_ask_price,best_ask_qty,transaction_time,event_time\n" + "".join(
        f"{i},{b},1,{a},1,{T0 + t},{T0 + t + 3}\n" for i, (t, b, a) in enumerate(lines)))
    data = load_market(plain_csv(tmp_path / "t.csv", TRADES), quotes=str(q), cycle_s=1.0)
    r = data.rows
    assert r["ts_ms"].tolist() == [T0 + 1000, T0 + 2000, T0 + 3000, T0 + 4000]
    assert r["bid"].tolist() == [99.5, 99.0, 98.5, 99.5]  # a quote exactly at a cycle's time is the next cycle's
    assert r["ask"].tolist() == [100.5, 100.0, 99.5, 100.5]
    assert r["last"].tolist() == [99, 98, 98, 100]
    assert data.label == "CSV + quotes: Binance bookTicker CSV"


def test_bad_trades_name_the_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("timestamp,price,amount\n" f"{T0},100,1\n" f"{T0 + 5},-3,1\n")
    with pytest.raises(DataError, match=r"^data.path=.*: row 2 \(line 3\): price is -3, not a positive number$"):
        load_market(str(p))
    p.write_text("timestamp,price,amount\n" f"{T0 + 9},100,1\n" f"{T0 + 5},100,1\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): timestamp 2026-01-01T00:00:00.005Z is earlier than the row before"):
        load_market(str(p))
    p.write_text("timestamp,price,amount\n" f"{T0 + 9},100,1\n" f"{T0 + 10},abc,1\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): price is 'abc', not a number"):
        load_market(str(p))
    p.write_text("timestamp,price,amount\n" f"{T0},100,1\n" f"{(T0 + 10) * 1000},100,1\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): timestamp .* is in us but the rows before are in ms"):
        load_market(str(p))


def test_since_until_slice_trades(tmp_path):
    r = load_market(plain_csv(tmp_path / "t.csv", TRADES), cycle_s=1.0, since_ms=T0 + 1000, until_ms=T0 + 3000).rows
    assert r["ts_ms"].tolist() == [T0 + 2000]
    assert r["low"].tolist() == [98.0]


# ---------------------------------------------------------------- one stream, every format


def write_all(d, trades):
    """The same trades in every trades format mmrun reads: name -> path."""
    out = {}
    ts = [T0 + t for t, _, _, _ in trades]
    out["plain.csv"] = plain_csv(d / "plain.csv", trades)
    tardis = d / "tardis.csv"
    tardis.write_text("exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n" + "".join(
        f"binance,BTCUSDT,{t * 1000},{t * 1000 + 7},{i},{'buy' if s > 0 else 'sell'},{p},{a}\n"
        for i, (t, (_, p, a, s)) in enumerate(zip(ts, trades))))
    out["tardis.csv"] = str(tardis)
    binance = d / "BTCUSDT-trades.csv"  # no header, ms
    binance.write_text("".join(f"{i},{p},{a},{p * a},{t},{'true' if s < 0 else 'false'},true\n"
                               for i, (t, (_, p, a, s)) in enumerate(zip(ts, trades))))
    out["binance_trades.csv"] = str(binance)
    agg = d / "BTCUSDT-aggTrades.csv.gz"  # no header, µs, gzipped
    agg.write_bytes(gzip.compress("".join(f"{i},{p},{a},{i},{i},{t * 1000},{'true' if s < 0 else 'false'},true\n"
                                          for i, (t, (_, p, a, s)) in enumerate(zip(ts, trades))).encode()))
    out["binance_aggtrades.csv.gz"] = str(agg)
    pq = d / "trades.parquet"
    pl.DataFrame({"timestamp": ts, "price": [p for _, p, _, _ in trades], "amount": [a for _, _, a, _ in trades],
                  "side": ["buy" if s > 0 else "sell" for *_, s in trades]}).write_parquet(pq)
    out["trades.parquet"] = str(pq)
    return out


@functools.lru_cache(maxsize=None)
def _cfg():
    from hydra import compose, initialize_config_dir

    from mmrun.__main__ import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=["mode=backtest", "spread=0.0002", "fees.maker=0"])


def fills_of(rows):
    from mmrun import engine
    from mmrun.backtest import run_backtest
    from mmrun.runner import build_params

    params = build_params(_cfg(), 10_000.0, 0.0, dt_s=1.0)
    out = run_backtest("BTC/USDT", params, engine.make_state(0.0, 10_000.0, params), rows)
    return out.fills


trade = st.tuples(st.integers(0, 400), st.integers(990, 1010), st.integers(1, 50), st.sampled_from([1, -1]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(trade, min_size=2, max_size=60), latency=st.sampled_from([0, 250]))
def test_the_same_stream_in_every_format_gives_identical_rows_and_fills(tmp_path_factory, steps, latency):
    clear_cache()
    t, trades = 0, []
    for dt, p, a, s in steps:
        t += dt
        trades.append((t, p / 10.0, a / 100.0, s))
    paths = write_all(tmp_path_factory.mktemp("f"), trades)
    results = {name: load_market(p, cycle_s=1.0, latency_ms=latency).rows for name, p in paths.items()}
    want = results["plain.csv"]
    want_fills = fills_of(want)
    for name, rows in results.items():
        for k in want:
            assert same(rows[k], want[k]), (name, k)
        assert fills_of(rows).equals(want_fills), name
