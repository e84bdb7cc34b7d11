"""Candle downloads through the real ccxt client against the fake Binance server, and the cache."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from clirun import run_mmrun
from fake_exchange import MINUTE_MS, FakeBinance
from mmrun.__main__ import CONF_DIR
from mmrun.errors import ConfigError, DataError
from mmrun.market.download import cache_file, download, missing_ranges
from mmrun.market.history import load_rows
from mmrun.record import iso_ms


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake():
    server = FakeBinance().start()
    server.kline_page = 100  # several pages for a few hundred candles
    yield server
    server.stop()


def cfg_for(fake, tmp_path, since_ms: int, until_ms: int, *extra: str):
    overrides = [
        "mode=backtest",
        "exchange=binance",
        f"exchange.api_url={fake.url}",
        "exchange.retry_base_s=0.01",
        "exchange.retry_attempts=3",
        f"data.since={iso_ms(since_ms)}",
        f"data.until={iso_ms(until_ms)}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *extra,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def expected(fake, since_ms, until_ms):
    return [fake.kline(ts, MINUTE_MS) for ts in range(since_ms, until_ms, MINUTE_MS)]


def assert_candles(path, fake, since_ms, until_ms):
    df = pl.read_parquet(path)
    assert df.columns == ["timestamp", "open", "high", "low", "close", "volume"]
    want = expected(fake, since_ms, until_ms)
    assert df["timestamp"].to_list() == [k[0] for k in want]
    assert df["close"].to_list() == [float(k[4]) for k in want]
    assert df["low"].to_list() == [float(k[3]) for k in want]
    assert df["volume"].to_list() == [float(k[5]) for k in want]


def test_missing_ranges():
    m = 60
    assert missing_ranges([], 0, 600, m) == [(0, 600)]
    assert missing_ranges([120, 180, 240], 0, 600, m) == [(0, 120), (300, 600)]
    assert missing_ranges([120, 180, 240], 120, 300, m) == []
    assert missing_ranges([120, 180, 240], 180, 600, m) == [(300, 600)]
    assert missing_ranges([120, 180, 240], 0, 60, m) == [(0, 60)]


def test_download_pages_caches_and_loads(fake, tmp_path):
    since = fake.kline_start_ms + 10 * MINUTE_MS
    until = since + 350 * MINUTE_MS
    sleeps = Sleeps()
    path = download(cfg_for(fake, tmp_path, since, until), "BTC/USDT", sleep=sleeps)
    assert_candles(path, fake, since, until)
    assert fake.count("klines") == 4  # 100 + 100 + 100 + 50
    starts = [int(q["startTime"]) for p, q in fake.requests if p.endswith("klines")]
    assert starts == [since + i * 100 * MINUTE_MS for i in range(4)]
    assert sleeps == []
    assert cache_file(str(tmp_path / "cache"), "binance", "BTC/USDT", "1m").is_file()
    rows = load_rows(str(path))  # what a backtest reads
    assert len(rows["ts_ms"]) == 350 and rows["ts_ms"][0] == since + MINUTE_MS  # rows at candle close


def test_cache_is_reused_with_the_server_gone(fake, tmp_path):
    since = fake.kline_start_ms
    until = since + 120 * MINUTE_MS
    download(cfg_for(fake, tmp_path, since, until), "BTC/USDT")
    fake.stop()
    inner = cfg_for(fake, tmp_path, since + 20 * MINUTE_MS, until - 20 * MINUTE_MS)
    path = download(inner, "BTC/USDT")
    assert_candles(path, fake, since + 20 * MINUTE_MS, until - 20 * MINUTE_MS)


def test_top_up_fetches_only_what_is_missing(fake, tmp_path):
    since = fake.kline_start_ms
    mid = since + 150 * MINUTE_MS
    until = since + 260 * MINUTE_MS
    download(cfg_for(fake, tmp_path, since, mid), "BTC/USDT")
    fake.requests.clear()
    path = download(cfg_for(fake, tmp_path, since, until), "BTC/USDT")
    starts = [int(q["startTime"]) for p, q in fake.requests if p.endswith("klines")]
    assert starts == [mid, mid + 100 * MINUTE_MS]  # from the candle after the last cached one
    assert_candles(path, fake, since, until)
    cached = pl.read_parquet(cache_file(str(tmp_path / "cache"), "binance", "BTC/USDT", "1m"))
    assert cached.height == 260


def test_downloads_retry_after_429_and_503(fake, tmp_path):
    since = fake.kline_start_ms
    until = since + 250 * MINUTE_MS
    fake.fail("429", path="klines", arg=2)
    fake.fail("503", path="klines")
    sleeps = Sleeps()
    path = download(cfg_for(fake, tmp_path, since, until), "BTC/USDT", sleep=sleeps)
    assert_candles(path, fake, since, until)
    assert sleeps[0] == 2.0  # Retry-After honoured
    assert len(sleeps) == 2 and 0.005 <= sleeps[1] <= 0.02  # then the 2nd backoff: 0.02 less jitter
    assert fake.count("klines") == 5


def test_no_cache_and_no_exchange_is_one_clear_error(fake, tmp_path):
    fake.stop()
    since = fake.kline_start_ms
    with pytest.raises(DataError, match=r"no cached 1m candles for binance BTC/USDT in .*cannot be reached"):
        download(cfg_for(fake, tmp_path, since, since + 10 * MINUTE_MS), "BTC/USDT", sleep=Sleeps())


def test_bad_ranges_and_timeframes(fake, tmp_path):
    since = fake.kline_start_ms
    with pytest.raises(ConfigError, match="empty range"):
        download(cfg_for(fake, tmp_path, since, since), "BTC/USDT")
    with pytest.raises(ConfigError, match="data.timeframe='7q'"):
        download(cfg_for(fake, tmp_path, since, since + MINUTE_MS, "data.timeframe=7q"), "BTC/USDT")
    with pytest.raises(ConfigError, match="pair=LTC/BTC is not listed on binance"):
        download(cfg_for(fake, tmp_path, since, since + MINUTE_MS), "LTC/BTC")


def test_cli_backtest_downloads_then_runs_offline(fake, tmp_path):
    since = fake.kline_start_ms
    until = since + 300 * MINUTE_MS
    args = [
        "mode=backtest", "exchange=binance", "pair=BTC/USDT", "data.timeframe=1m",
        f"data.since={iso_ms(since)}", f"data.until={iso_ms(until)}",
        f"exchange.api_url={fake.url}", f"data.cache_dir={tmp_path / 'cache'}",
    ]
    first = run_mmrun(*args, run_dir=tmp_path / "run1")
    assert first.returncode == 0, first.stderr
    fake.stop()
    second = run_mmrun(*args, run_dir=tmp_path / "run2")
    assert second.returncode == 0, second.stderr
    s1 = json.loads((tmp_path / "run1" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert s1["ticks"] == 300 and s1 == s2
    missing = run_mmrun(*args[:-1], f"data.cache_dir={tmp_path / 'empty'}", run_dir=tmp_path / "run3")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "cannot be reached" in missing.stderr
