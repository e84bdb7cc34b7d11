"""Data files from the command line: honest labels, any pair, latency, gaps, and the one-line refusals."""

from __future__ import annotations

import json

import polars as pl
import pytest

from clirun import run_mmrun

T0 = 1_767_225_600_000
MIN = 60_000


def klines(tmp_path, minutes=range(30)):
    p = tmp_path / "PEPEUSDT-1m-2026-01-01.csv"
    p.write_text("".join(f"{(T0 + m * MIN) * 1000},0.0000100,0.0000102,0.0000099,0.0000101,1e9,"
                         f"{(T0 + m * MIN + MIN - 1) * 1000},1,1,1,1,0\n" for m in minutes))
    return p


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


def test_a_binance_klines_file_any_pair_is_labelled_as_a_file(tmp_path):
    path = klines(tmp_path)
    res = run_mmrun("mode=backtest", f"data.path={path}", "pair=PEPE/USDT", run_dir=tmp_path / "run")
    assert res.returncode == 0, res.stderr
    s = summary(tmp_path / "run")
    assert s["exchange"] == "file" and s["pair"] == "PEPE/USDT"
    assert s["data_source"] == "PEPEUSDT-1m-2026-01-01.csv"
    assert s["data_format"] == "Binance klines CSV (no header)"
    assert s["gaps"] == 0 and "seed" in s
    assert "PEPEUSDT-1m-2026-01-01.csv (Binance klines CSV (no header))" in res.stdout
    # an exchange chosen for its fees and rules is named instead
    res = run_mmrun("mode=backtest", f"data.path={path}", "pair=PEPE/USDT", "exchange=binance", run_dir=tmp_path / "b")
    assert res.returncode == 0, res.stderr
    assert summary(tmp_path / "b")["exchange"] == "binance"


def test_gaps_are_counted_and_logged(tmp_path):
    path = klines(tmp_path, minutes=list(range(10)) + list(range(200, 210)))
    res = run_mmrun("mode=backtest", f"data.path={path}", "pair=PEPE/USDT", run_dir=tmp_path / "run")
    assert res.returncode == 0, res.stderr
    assert summary(tmp_path / "run")["gaps"] == 1
    assert "1 gap longer than data.max_gap_s=180: 3.2 h after 2026-01-01T00:10:00.000Z" in (tmp_path / "run" / "mmrun.log").read_text()


def test_trades_file_with_latency_and_a_slice(tmp_path):
    p = tmp_path / "trades.parquet"
    n = 3000
    pl.DataFrame({"timestamp": [T0 + i * 400 for i in range(n)],
                  "price": [100.0 + ((i * 7) % 13 - 6) * 0.05 for i in range(n)],
                  "amount": [0.5] * n, "side": ["buy" if i % 2 else "sell" for i in range(n)]}).write_parquet(p)
    args = ("mode=backtest", f"data.path={p}", "intervals.quote_s=1", "pair=EUR/USD", "spread=0.0001", "fees.maker=0")
    a = run_mmrun(*args, run_dir=tmp_path / "a")
    b = run_mmrun(*args, "fills.latency_ms=600", run_dir=tmp_path / "b")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    sa, sb = summary(tmp_path / "a"), summary(tmp_path / "b")
    assert sa["data_format"] == "Parquet" and sa["exchange"] == "file" and sa["ticks"] == 1200
    assert 0 < sb["trades"] < sa["trades"]  # fewer prints reach a quote that rests 600 ms later
    c = run_mmrun(*args, "data.since=2026-01-01T00:05:00Z", "data.until=2026-01-01T00:10:00Z", run_dir=tmp_path / "c")
    assert c.returncode == 0, c.stderr
    sc = summary(tmp_path / "c")
    assert sc["ticks"] == 300 and sc["market_start"] == "2026-01-01T00:05:01.000Z"


@pytest.mark.parametrize("args,want", [
    (("fills.latency_ms=5000",), "fills.latency_ms=5000.0 is out of range: allowed 0 <= latency_ms < the quote cycle (5000 ms"),
    (("data.kind=ticks",), "data.kind='ticks' is not allowed: choose one of candles, trades"),
    (("data.max_gap_s=-1",), "data.max_gap_s=-1.0 is out of range"),
    (("mode=backtest", "data.quotes=q.csv"), "data.quotes=q.csv needs data.path=TRADES_FILE"),
    (("mode=backtest", "data.kind=trades"), "data.kind=trades downloads public trades from a real exchange"),
])
def test_bad_data_settings_are_one_line(tmp_path, args, want):
    res = run_mmrun(*args, run_dir=tmp_path / "run")
    assert res.returncode == 2, res.stderr
    assert want in res.stderr and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_latency_on_candles_is_refused(tmp_path):
    res = run_mmrun("mode=backtest", f"data.path={klines(tmp_path)}", "pair=PEPE/USDT", "fills.latency_ms=100",
                    run_dir=tmp_path / "run")
    assert res.returncode == 2 and "fills.latency_ms=100 needs trades" in res.stderr


def test_paper_latency_replays_identically(tmp_path):
    common = ("exchange.sim.duration_s=600", "intervals.quote_s=1", "fills.latency_ms=300", "spread=0.0002")
    paper = run_mmrun(*common, run_dir=tmp_path / "paper")
    assert paper.returncode == 0, paper.stderr
    replay = run_mmrun("mode=backtest", f"data.path={tmp_path / 'paper' / 'market.parquet'}", *common,
                       run_dir=tmp_path / "replay")
    assert replay.returncode == 0, replay.stderr
    sp, sr = summary(tmp_path / "paper"), summary(tmp_path / "replay")
    for k in ("trades", "buys", "sells", "final_value", "final_base", "data_fingerprint"):
        assert sp[k] == sr[k], k
    zero = run_mmrun(*common[:2], "spread=0.0002", run_dir=tmp_path / "zero")
    assert zero.returncode == 0, zero.stderr
    assert summary(tmp_path / "zero")["trades"] > sp["trades"]  # latency costs fills
