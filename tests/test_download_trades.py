"""Public trades downloaded through the real ccxt client from the fake Binance server: paging, cache, top-up, replay."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from fake_exchange import FakeBinance
from mmrun.__main__ import CONF_DIR
from mmrun.errors import DataError
from mmrun.market.download import download_trades, trades_cache_file
from mmrun.market.history import clear_cache, load_market
from mmrun.record import iso_ms

HOUR = 3_600_000


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake():
    server = FakeBinance().start()
    t0 = 1_790_000_000_000 - 1_790_000_000_000 % HOUR
    server.t0 = t0
    # 2,500 trades over 2.5 hours (one every 3.6 s), several at one millisecond, and a quiet hour
    for i in range(2500):
        ts = t0 + (i // 3) * 10_800
        if 1000 <= i < 1500:
            continue  # nothing for a while
        server.add_trade("BTCUSDT", ts, 60000.0 + (i % 11), 0.001 * (1 + i % 5), buyer_maker=bool(i % 2))
    yield server
    server.stop()


def cfg_for(fake, tmp_path, since_ms, until_ms, *extra):
    overrides = ["mode=backtest", "exchange=binance", f"exchange.api_url={fake.url}", "exchange.retry_base_s=0.01",
                 "exchange.retry_attempts=3", "data.kind=trades", f"data.since={iso_ms(since_ms)}",
                 f"data.until={iso_ms(until_ms)}", f"data.cache_dir={tmp_path / 'cache'}", *extra]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


def want(fake, since, until):
    return [t for t in fake.trades["BTCUSDT"] if since <= t[1] < until]


def test_trades_are_paged_cached_and_replayed(fake, tmp_path):
    since, until = fake.t0, fake.t0 + 3 * HOUR
    path = download_trades(cfg_for(fake, tmp_path, since, until), "BTC/USDT", sleep=Sleeps())
    df = pl.read_parquet(path)
    w = want(fake, since, until)
    assert df["id"].to_list() == [str(t[0]) for t in w]  # every trade once, in order, across pages
    assert df["timestamp"].to_list() == [t[1] for t in w]
    assert df["price"].to_list() == [t[2] for t in w]
    assert df["side"].to_list() == [-1 if t[4] else 1 for t in w]  # buyer maker = seller-initiated
    pages = [q for p, q in fake.requests if "Trades" in p or "trades" in p]
    assert len(pages) >= 3
    meta = json.loads(trades_cache_file(str(tmp_path / "cache"), "binance", "BTC/USDT").with_suffix(".json").read_text())
    assert meta == {"since": since, "until": until}
    clear_cache()
    data = load_market(str(path), cycle_s=60.0, max_gap_s=7200)
    assert data.kind == "trades" and data.rows["volume"].sum() == pytest.approx(sum(t[3] for t in w))
    assert len(load_market(str(path), cycle_s=60.0).gaps) == 1  # the quiet half hour: 3 cycles = 180 s


def test_top_up_fetches_only_the_missing_range_and_works_offline(fake, tmp_path):
    since, mid, until = fake.t0, fake.t0 + HOUR, fake.t0 + 2 * HOUR
    download_trades(cfg_for(fake, tmp_path, since, mid), "BTC/USDT")
    fake.requests.clear()
    path = download_trades(cfg_for(fake, tmp_path, since, until), "BTC/USDT")
    starts = [int(q["startTime"]) for p, q in fake.requests if "rades" in p]
    assert starts and min(starts) >= mid  # only after what the cache covers
    assert pl.read_parquet(path)["timestamp"].to_list() == [t[1] for t in want(fake, since, until)]
    fake.stop()
    inner = download_trades(cfg_for(fake, tmp_path, since + 600_000, until - 600_000), "BTC/USDT", sleep=Sleeps())
    assert pl.read_parquet(inner).height == len(want(fake, since + 600_000, until - 600_000))


def test_retries_then_one_line_when_nothing_is_cached(fake, tmp_path):
    since, until = fake.t0, fake.t0 + HOUR
    fake.fail("503", path="rades")
    sleeps = Sleeps()
    path = download_trades(cfg_for(fake, tmp_path, since, until), "BTC/USDT", sleep=sleeps)
    assert len(sleeps) == 1 and pl.read_parquet(path).height == len(want(fake, since, until))
    fake.stop()
    with pytest.raises(DataError, match=r"no cached trades for binance BTC/USDT in .*cannot be reached"):
        download_trades(cfg_for(fake, tmp_path / "other", since, until), "BTC/USDT", sleep=Sleeps())
