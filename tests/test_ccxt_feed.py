"""mmrun.market.ccxt_feed through the real async ccxt client against the fake Binance server."""

from __future__ import annotations

import asyncio
import math
import time

import ccxt
import pytest

from fake_exchange import FakeBinance
from mmrun.errors import ConfigError, ExchangeUnavailable, PermanentError, TemporaryError
from mmrun.market.ccxt_feed import (
    BadMarketData,
    CcxtFeed,
    ExchangeClient,
    RetryPolicy,
    parse_fallback,
    parse_retry_after,
    rewrite_api_urls,
    _ticker_check,
    translate,
)


class ZeroRng:
    """Jitter draw 0: every backoff is its full, predictable length."""

    def random(self) -> float:
        return 0.0


class Sleeps(list):
    """An injected sleep that records the waits instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake():
    server = FakeBinance().start()
    yield server
    server.stop()


def make_client(fake: FakeBinance, sleeps: Sleeps, attempts: int = 4, timeout_s: float = 2.0, **kw) -> ExchangeClient:
    return ExchangeClient(
        "binance",
        api_url=fake.url,
        timeout_s=timeout_s,
        policy=RetryPolicy(attempts=attempts, base_s=0.5, max_wait_s=4.0, jitter=0.5),
        sleep=sleeps,
        rng=ZeroRng(),
        **kw,
    )


def run(coro):
    return asyncio.run(coro)


async def _with_client(fake, sleeps, fn, **kw):
    c = make_client(fake, sleeps, **kw)
    try:
        await c.load_markets()
        return await fn(c)
    finally:
        await c.close()


# ------------------------------------------------------------------ pure helpers


def test_rewrite_keeps_paths_in_nested_urls():
    api = {
        "public": "https://api.binance.com/api/v3",
        "nested": {"rest": "https://www.okx.com", "ws": "wss://ws.okx.com:8443/ws/v5/public"},
        "q": "https://x.com/a?b=1",
        "n": None,
    }
    got = rewrite_api_urls(api, "http://127.0.0.1:9/")
    assert got == {
        "public": "http://127.0.0.1:9/api/v3",
        "nested": {"rest": "http://127.0.0.1:9", "ws": "ws://127.0.0.1:9/ws/v5/public"},
        "q": "http://127.0.0.1:9/a?b=1",
        "n": None,
    }
    assert rewrite_api_urls("https://api.kraken.com/0", "https://gw.example/kr") == "https://gw.example/kr/0"


def test_rewrite_rejects_a_non_http_url():
    with pytest.raises(ConfigError, match="exchange.api_url='ftp://x'"):
        rewrite_api_urls({}, "ftp://x")


def test_backoff_doubles_up_to_the_cap_with_jitter_below():
    p = RetryPolicy(attempts=6, base_s=0.5, max_wait_s=3.0, jitter=0.5)
    assert [p.backoff_s(n, 0.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.backoff_s(2, 0.5) == 0.75  # 1.0 less a quarter (half of the 0.5 jitter)
    assert p.backoff_s(3, 0.999999) > 1.0  # never below (1 - jitter) of the full wait


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now_s=1445412480.0) == 10.0


def test_translate_families():
    assert type(translate(ccxt.RequestTimeout("t"), "x")) is TemporaryError
    assert type(translate(ccxt.ExchangeNotAvailable("t"), "x")) is TemporaryError
    assert type(translate(ccxt.BadResponse("t"), "x")) is TemporaryError
    limited = translate(ccxt.RateLimitExceeded("t"), "x", {"retry-after": "12"})
    assert isinstance(limited, TemporaryError) and limited.retry_after_s == 12.0
    assert type(translate(ccxt.BadSymbol("t"), "x")) is PermanentError
    assert type(translate(ccxt.AuthenticationError("t"), "x")) is PermanentError
    assert type(translate(ccxt.ExchangeError("t"), "x")) is PermanentError
    assert type(translate(TypeError("NoneType"), "x")) is BadMarketData


def test_parse_fallback():
    assert parse_fallback("coinbase") == ("coinbase", None)
    assert parse_fallback("binance@http://127.0.0.1:5") == ("binance", "http://127.0.0.1:5")


# ------------------------------------------------------------------ client against the fake server


def test_markets_load_spot_only_from_the_rewritten_host(fake):
    sleeps = Sleeps()
    rules = run(_with_client(fake, sleeps, lambda c: _async(c.rules("BTC/USDT"))))
    assert (rules.tick, rules.lot, rules.min_notional) == (0.01, 0.00001, 5.0)
    assert [p for p, _ in fake.requests] == ["/api/v3/exchangeInfo"]  # no futures hosts, one call
    assert sleeps == []


async def _async(value):
    return value


def test_unknown_pair_is_a_config_error(fake):
    with pytest.raises(ConfigError, match="pair=DOGE/EUR is not listed on binance"):
        run(_with_client(fake, Sleeps(), lambda c: _async(c.rules("DOGE/EUR"))))


def test_429_waits_what_retry_after_says(fake):
    sleeps = Sleeps()
    fake.fail("429", path="ticker", arg=3)
    t = run(_with_client(fake, sleeps, lambda c: c.call("t", "fetch_ticker", "BTC/USDT")))
    assert t["bid"] == 60000.0
    assert sleeps == [3.0]  # the server's 3 s, longer than the 0.5 s backoff
    assert fake.count("ticker") == 2


def test_retry_after_beyond_the_max_wait_ends_the_call_and_blocks_until_then(fake):
    sleeps = Sleeps()
    clock = [100.0]
    fake.fail("429", path="ticker", arg=60)

    async def go(c):
        with pytest.raises(TemporaryError, match="DDoSProtection: binance 429"):
            await c.call("t", "fetch_ticker", "BTC/USDT")
        with pytest.raises(TemporaryError, match="Retry-After left"):
            await c.call("t", "fetch_ticker", "BTC/USDT")  # no request: still inside the 60 s
        clock[0] += 61
        return await c.call("t", "fetch_ticker", "BTC/USDT")

    t = run(_with_client(fake, sleeps, go, monotonic=lambda: clock[0]))
    assert t["ask"] == 60000.01
    assert sleeps == [] and fake.count("ticker") == 2


def test_503_and_504_back_off_exponentially(fake):
    sleeps = Sleeps()
    fake.fail("503", path="ticker")
    fake.fail("504", path="ticker")
    fake.fail("503", path="ticker")
    t = run(_with_client(fake, sleeps, lambda c: c.call("t", "fetch_ticker", "BTC/USDT")))
    assert t["last"] is not None
    assert sleeps == [0.5, 1.0, 2.0]
    assert fake.count("ticker") == 4


def test_retries_are_bounded(fake):
    sleeps = Sleeps()
    fake.fail("503", n=10, path="ticker")

    async def go(c):
        with pytest.raises(TemporaryError, match="ExchangeNotAvailable") as info:
            await c.call("t", "fetch_ticker", "BTC/USDT")
        assert isinstance(info.value.__cause__, ccxt.ExchangeNotAvailable)
        return c.requests

    assert run(_with_client(fake, sleeps, go, attempts=3)) == 4  # markets + 3 tries
    assert sleeps == [0.5, 1.0]
    assert fake.count("ticker") == 3


def test_permanent_errors_are_not_retried(fake):
    sleeps = Sleeps()
    fake.fail("badsymbol", path="ticker")

    async def go(c):
        with pytest.raises(PermanentError, match="BadSymbol") as info:
            await c.call("t", "fetch_ticker", "BTC/USDT")
        assert isinstance(info.value.__cause__, ccxt.BadSymbol)

    run(_with_client(fake, sleeps, go))
    assert sleeps == [] and fake.count("ticker") == 1


# aiohttp itself resends an idempotent request once when the connection drops: two drops
# make one failed call for ccxt, hence for our retry.
@pytest.mark.parametrize("kind, n", [("hang", 1), ("drop", 2), ("malformed", 1), ("truncate", 1)])
def test_hangs_drops_and_malformed_bodies_are_retried(fake, kind, n):
    sleeps = Sleeps()
    fake.fail(kind, n=n, path="ticker", arg=3.0)  # a hang of 3 s against a 1 s timeout (a loaded machine's good answer fits)
    t = run(_with_client(fake, sleeps, lambda c: c.call("t", "fetch_ticker", "BTC/USDT", check=_ticker_check("t")),
                         timeout_s=1.0))
    assert t["bid"] == 60000.0
    assert sleeps == [0.5]
    assert fake.count("ticker") == n + 1


def test_ccxt_turns_a_malformed_body_into_nones(fake):
    """Why every response is checked: unchecked, invalid JSON comes back as a ticker of None."""
    fake.fail("malformed", path="ticker")
    t = run(_with_client(fake, Sleeps(), lambda c: c.call("t", "fetch_ticker", "BTC/USDT")))
    assert (t["bid"], t["ask"], t["last"]) == (None, None, None)


def test_load_markets_on_an_unreachable_exchange_names_it(fake):
    fake.stop()
    sleeps = Sleeps()

    async def go():
        c = make_client(fake, sleeps, attempts=2)
        try:
            await c.load_markets()
        finally:
            await c.close()

    with pytest.raises(ExchangeUnavailable, match=f"exchange binance at {fake.url} cannot be reached"):
        run(go())
    assert sleeps == [0.5]


# ------------------------------------------------------------------ the feed


def feed_for(fake, sleeps, *extra_clients, attempts=2, max_age_s=30.0):
    clients = [make_client(fake, sleeps, attempts=attempts)] + list(extra_clients)
    return CcxtFeed("BTC/USDT", clients, max_age_s=max_age_s)


def test_feed_reports_trades_since_the_previous_fetch(fake):
    sleeps = Sleeps()
    now = int(time.time() * 1000)
    fake.add_trade("BTCUSDT", now - 5000, 60003.0, 0.4)  # history before the first fetch

    async def go():
        feed = feed_for(fake, sleeps)
        try:
            await feed.start()
            first = await feed.fetch(1000)
            fake.add_trade("BTCUSDT", now - 1000, 59990.5, 0.25)
            fake.add_trade("BTCUSDT", now - 900, 60010.0, 0.5)
            second = await feed.fetch(1000)  # the clock stalled: time still moves on by 1 ms
            third = await feed.fetch(7000)
            return feed, first, second, third
        finally:
            await feed.close()

    feed, first, second, third = run(go())
    assert first[:5] == (1000, 60000.0, 60000.01, 60003.0, first[4]) and math.isnan(first[4]) and first[6] == 0.0
    assert second == (1001, 60000.0, 60000.01, 60010.0, 59990.5, 60010.0, 0.75)
    assert third[0] == 7000 and math.isnan(third[4]) and math.isnan(third[5]) and third[6] == 0.0
    assert feed.tick == 0.01 and feed.source == f"binance@{fake.url}"


@pytest.mark.parametrize(
    "book, message",
    [((None, None), "empty book"), ((60001.0, 60000.0), "crossed book"), ((60000.0, None), "one-sided")],
)
def test_feed_refuses_a_bad_book(fake, book, message):
    async def go():
        feed = feed_for(fake, Sleeps())
        try:
            await feed.start()
            fake.book["BTCUSDT"] = book
            with pytest.raises(TemporaryError, match=message):
                await feed.fetch(1)
        finally:
            await feed.close()

    run(go())


def test_feed_refuses_stale_and_null_data(fake):
    async def go():
        feed = feed_for(fake, Sleeps(), max_age_s=30.0)
        try:
            await feed.start()
            fake.fail("stale", n=2, path="ticker", arg=3600)
            with pytest.raises(BadMarketData, match=r"stale data, 3[56]\d\d\.\d s old > exchange.max_data_age_s=30"):
                await feed.fetch(1)
            fake.fail("nulls", n=2, path="ticker")
            with pytest.raises(BadMarketData, match="no bid, ask or last"):
                await feed.fetch(2)
            fake.add_trade("BTCUSDT", int(time.time() * 1000), 60000.5, 0.1)
            fake.fail("nulls", n=2, path="aggTrades")
            with pytest.raises(BadMarketData, match="malformed trade"):
                await feed.fetch(3)
            return await feed.fetch(4)  # and fine again
        finally:
            await feed.close()

    assert run(go())[1:3] == (60000.0, 60000.01)


def test_feed_survives_the_server_going_away_and_coming_back(fake):
    async def go():
        feed = feed_for(fake, Sleeps())
        try:
            await feed.start()
            ok1 = await feed.fetch(1)
            fake.stop()
            with pytest.raises(TemporaryError, match="ExchangeNotAvailable"):
                await feed.fetch(2)
            fake.start()
            ok2 = await feed.fetch(3)
            return ok1, ok2
        finally:
            await feed.close()

    ok1, ok2 = run(go())
    assert ok1[1] == ok2[1] == 60000.0


def test_feed_falls_back_to_the_next_source_and_says_which_served(fake):
    backup = FakeBinance().start()
    backup.book["BTCUSDT"] = (61000.0, 61000.5)
    sleeps = Sleeps()
    try:
        async def go():
            feed = feed_for(fake, sleeps, make_client(backup, sleeps))
            try:
                await feed.start()
                a = (await feed.fetch(1), feed.source)
                fake.stop()
                b = (await feed.fetch(2), feed.source)
                fake.start()
                c = (await feed.fetch(3), feed.source)
                return a, b, c
            finally:
                await feed.close()

        a, b, c = run(go())
    finally:
        backup.stop()
    assert (a[0][1], a[1]) == (60000.0, f"binance@{fake.url}")
    assert (b[0][1], b[1]) == (61000.0, f"binance@{backup.url}")
    assert (c[0][1], c[1]) == (60000.0, f"binance@{fake.url}")


@pytest.mark.parametrize("exchange_id", ["binance", "coinbase", "kraken", "okx", "bybit"])
def test_every_configured_exchange_is_pointed_at_the_api_url(exchange_id):
    async def go():
        c = ExchangeClient(exchange_id, api_url="http://127.0.0.1:9/gw")
        try:
            return c.client.urls["api"]
        finally:
            await c.close()

    def leaves(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from leaves(v)
        elif isinstance(node, str):
            yield node

    urls = list(leaves(run(go())))
    assert urls and all(u.startswith(("http://127.0.0.1:9/gw", "ws://127.0.0.1:9/gw")) for u in urls), urls


def test_feed_latency_counts_only_trades_after_the_quotes_rest(fake):
    """fills.latency_ms: trades printed before the previous row's time + latency cannot fill its quotes."""
    sleeps = Sleeps()
    now = int(time.time() * 1000)

    async def go():
        feed = feed_for(fake, sleeps)
        feed.latency_ms = 300.0
        try:
            await feed.start()
            await feed.fetch(now + 5000)  # the quotes of this row rest from now + 5300
            fake.add_trade("BTCUSDT", now + 5100, 59990.5, 0.25)  # before they rest: cannot fill them
            fake.add_trade("BTCUSDT", now + 5300, 60010.0, 0.5)  # from then on: counts
            fake.add_trade("BTCUSDT", now + 5500, 60005.0, 0.1)
            return await feed.fetch(now + 6000)
        finally:
            await feed.close()

    row = run(go())
    assert row[3] == 60005.0  # the last price is the market's, whatever the latency
    assert row[4:] == (60005.0, 60010.0, pytest.approx(0.6))
