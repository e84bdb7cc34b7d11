"""Paper trading sees every public trade of a busy interval (paged, bounded), counts the retries
it absorbed, and names every source it tried: the real ccxt client against the fake Binance
server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from fake_exchange import FakeBinance
from mmrun.errors import ExchangeUnavailable
from mmrun.market.ccxt_feed import MAX_TRADE_PAGES, TRADE_PAGE, CcxtFeed, ExchangeClient, RetryPolicy


class ZeroRng:
    def random(self) -> float:
        return 0.0


async def no_sleep(seconds: float) -> None:
    return None


@pytest.fixture
def fake():
    server = FakeBinance().start()
    yield server
    server.stop()


def client(url: str, exchange_id: str = "binance", attempts: int = 3) -> ExchangeClient:
    return ExchangeClient(exchange_id, api_url=url, timeout_s=2.0, sleep=no_sleep, rng=ZeroRng(),
                          policy=RetryPolicy(attempts=attempts, base_s=0.01, max_wait_s=0.05))


def busy(fake: FakeBinance, n: int, start_ms: int) -> float:
    """n trades, 3 per millisecond (so pages split inside a millisecond), from start_ms; their volume."""
    volume = 0.0
    for i in range(n):
        qty = 0.001 * (1 + i % 7)
        fake.add_trade("BTCUSDT", start_ms + i // 3, 60000.0 + (i % 11) - 5, qty)
        volume += qty
    return volume


def test_a_busy_interval_is_read_page_by_page_until_caught_up(fake):
    now = int(time.time() * 1000)

    async def go():
        feed = CcxtFeed("BTC/USDT", [client(fake.url)], max_age_s=30.0, wall_ms=lambda: now)
        try:
            await feed.start()
            await feed.fetch(1)  # the first snapshot: history, sets the cursor
            volume = busy(fake, 2 * TRADE_PAGE + 345, now + 10)  # 2,345 trades: three pages
            before = fake.count("aggTrades")
            row = await feed.fetch(2)
            return feed, row, volume, fake.count("aggTrades") - before
        finally:
            await feed.close()

    feed, row, volume, pages = asyncio.run(go())
    assert pages == 3
    assert row[6] == pytest.approx(volume, rel=1e-12)  # every trade counted once
    assert (row[4], row[5]) == (59995.0, 60005.0)
    assert feed.incomplete_cycles == 0


def test_an_interval_beyond_the_page_bound_is_counted_and_skipped(fake, caplog):
    now = int(time.time() * 1000)
    n = MAX_TRADE_PAGES * TRADE_PAGE + 500

    async def go():
        clock = [now]
        feed = CcxtFeed("BTC/USDT", [client(fake.url)], max_age_s=3600.0, wall_ms=lambda: clock[0])
        try:
            await feed.start()
            await feed.fetch(1)
            busy(fake, n, now + 10)
            clock[0] = now + 60_000
            before = fake.count("aggTrades")
            row = await feed.fetch(2)
            pages = fake.count("aggTrades") - before
            fake.add_trade("BTCUSDT", now + 60_001, 60100.0, 0.5)  # after the skip: the next cycle's only trade
            nxt = await feed.fetch(3)
            return feed, row, pages, nxt
        finally:
            await feed.close()

    with caplog.at_level(logging.WARNING, logger="mmrun"):
        feed, row, pages, nxt = asyncio.run(go())
    assert pages == MAX_TRADE_PAGES
    assert feed.incomplete_cycles == 1
    assert row[6] > 0
    assert nxt[4:] == (60100.0, 60100.0, 0.5)  # the unread rest is not credited to the next cycle
    assert any(f"more than {MAX_TRADE_PAGES} pages" in r.getMessage() for r in caplog.records)


def test_retries_that_succeed_are_counted_and_logged_once_per_source(fake, caplog):
    async def go():
        feed = CcxtFeed("BTC/USDT", [client(fake.url)], max_age_s=30.0)
        try:
            await feed.start()
            fake.fail("503", n=2, path="ticker")
            fake.fail("drop", n=2, path="rades")  # aiohttp resends once itself: two drops, one failed call
            await feed.fetch(1)
            return feed
        finally:
            await feed.close()

    with caplog.at_level(logging.INFO, logger="mmrun"):
        feed = asyncio.run(go())
    assert feed.retries == 3
    lines = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(lines) == 3
    for line in lines:
        assert line.count(f"binance@{fake.url}") == 1, line


def test_cannot_be_reached_lists_every_source_tried(fake):
    dead1, dead2 = "http://127.0.0.1:9", "http://127.0.0.1:7"

    async def go():
        feed = CcxtFeed("BTC/USDT", [client(dead1, attempts=1), client(dead2, attempts=1)], max_age_s=30.0)
        try:
            await feed.start()
        finally:
            await feed.close()

    with pytest.raises(ExchangeUnavailable) as info:
        asyncio.run(go())
    text = str(info.value)
    assert "2 tried" in text and dead1 in text and dead2 in text


def test_a_reachable_fallback_starts_the_feed(fake):
    async def go():
        feed = CcxtFeed("BTC/USDT", [client("http://127.0.0.1:9", attempts=1), client(fake.url)], max_age_s=30.0)
        try:
            await feed.start()
            return feed.rules, await feed.fetch(1)
        finally:
            await feed.close()

    rules, row = asyncio.run(go())
    assert rules.tick == 0.01 and row[1:3] == (60000.0, 60000.01)
