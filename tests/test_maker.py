"""The paper loop: the original loop's promise on errors, max_ticks, and a clean stop."""

import asyncio
import math

import numpy as np
import polars as pl

from mmrun import engine
from mmrun.maker import MarketMaker
from mmrun.market.sim import SimClock
from mmrun.record import EventStream, read_events
from tests_support import random_market


class FlakyFeed:
    """Rows from arrays; fetches listed in `fail_at` raise instead (a network error)."""

    tick = 0.0
    live = False
    source = ""

    def __init__(self, rows, fail_at=()):
        self.rows, self.fail_at, self.calls, self.i = rows, set(fail_at), 0, 0

    async def fetch(self, now_ms):
        self.calls += 1
        if self.calls in self.fail_at:
            raise ConnectionError("exchange unreachable")
        if self.i >= len(self.rows["ts_ms"]):
            return None
        r = tuple(float(self.rows[k][self.i]) for k in ("bid", "ask", "last", "low", "high", "volume"))
        self.i += 1
        return (int(self.rows["ts_ms"][self.i - 1]),) + r

    async def close(self):
        pass


def make(tmp_path, feed, max_ticks=None, stop=None):
    p = engine.make_params(0.002, 0.05, 0.2, 10000.0, 0.001, "touch", None, 0.0)
    return MarketMaker(
        "BTC/USDT", p, engine.make_state(0.0, 10000.0), feed, SimClock(1_767_225_600_000),
        EventStream(tmp_path / "events.csv"), quote_s=60.0, error_s=10.0, max_ticks=max_ticks,
        log_quotes=True, stop=stop or asyncio.Event(),
    )


def test_errors_are_logged_counted_and_the_loop_goes_on(tmp_path):
    rows = random_market(40, seed=3)
    feed = FlakyFeed(rows, fail_at={5, 6, 20})
    mm = make(tmp_path, feed)
    out = asyncio.run(mm.run())
    mm.events.close()
    assert out.status == "completed" and out.errors == 3
    assert out.equity.height == 40  # every row was still traded
    ev = read_events(tmp_path / "events.csv")
    errors = ev.filter(pl.col("event_type") == "ERROR")
    assert errors.height == 3 and errors["note"].str.contains("ConnectionError: exchange unreachable").all()
    # after an error the quotes are pulled: once its CANCEL rows are written nothing rests
    kinds = ev["event_type"].to_list()
    resting = 0
    for i, k in enumerate(kinds):
        resting += {"QUOTE": 1, "FILL": -1, "CANCEL": -1}.get(k, 0)
        assert resting >= 0
        after_error = k in ("ERROR", "CANCEL") and "ERROR" in kinds[max(0, i - 2) : i + 1]
        if after_error and (i + 1 == len(kinds) or kinds[i + 1] != "CANCEL"):
            assert resting == 0


def test_error_wait_uses_the_error_interval(tmp_path):
    rows = random_market(5, seed=1)
    feed = FlakyFeed(rows, fail_at={2})
    mm = make(tmp_path, feed)
    asyncio.run(mm.run())
    mm.events.close()
    ev = read_events(tmp_path / "events.csv")
    err_ts = ev.filter(pl.col("event_type") == "ERROR")["timestamp"][0]
    assert err_ts == "2026-01-01T00:01:00.000Z"  # after one 60 s quote interval
    # the next fetch came error_s = 10 s later on the simulated clock
    assert mm.clock.now_ms() == 1_767_225_600_000 + 60_000 + 10_000 + 4 * 60_000


def test_max_ticks_and_stop(tmp_path):
    rows = random_market(50, seed=2)
    out = asyncio.run(make(tmp_path, FlakyFeed(rows), max_ticks=7).run())
    assert out.status == "max_ticks" and out.equity.height == 7

    async def stopped():
        stop = asyncio.Event()
        mm = make(tmp_path, FlakyFeed(rows), stop=stop)
        task = asyncio.create_task(mm.run())
        for _ in range(10):
            await asyncio.sleep(0)
        stop.set()
        return await task

    out = asyncio.run(stopped())
    assert out.status == "stopped" and 0 < out.equity.height < 50
    ev = read_events(tmp_path / "events.csv")
    assert ev["event_type"][-1] == "CANCEL" or ev.filter(pl.col("event_type") == "QUOTE").height == 0
    assert not math.isnan(float(np.asarray(out.equity["equity"])[-1]))
