"""The simulated exchange: seeded, chunk-independent, plausible, and safe to name folders after."""

import asyncio
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from mmrun.config import SimConfig
from mmrun.market.sim import CHUNK_ROWS, SimClock, SimFeed, SimMarket, tick_for
from mmrun.record import safe_name


def market(pair="BTC/USDT", seed=1, duration_s=3 * 3600.0, step_s=5.0):
    cfg = OmegaConf.structured(SimConfig)
    cfg.duration_s = duration_s
    return SimMarket(pair, cfg, step_s, seed)


def same(a, b):
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_same_seed_same_market_other_seed_or_pair_another():
    a = market().frame_arrays()
    assert same(a, market().frame_arrays())
    assert not same(a, market(seed=2).frame_arrays())
    assert not np.array_equal(a["bid"], market(pair="BTC/USDC").frame_arrays()["bid"])


def test_a_row_limit_keeps_the_rows_it_keeps():
    full = market().frame_arrays()
    n = CHUNK_ROWS + 17
    part = market().frame_arrays(limit=n)
    assert len(part["ts_ms"]) == n
    assert same(part, {k: v[:n] for k, v in full.items()})


def test_rows_are_consistent_markets():
    m = market()
    a = m.frame_arrays()
    assert len(a["ts_ms"]) == 3 * 720 + 1
    assert (np.diff(a["ts_ms"]) == 5000).all()
    assert a["ts_ms"][0] == 1_767_225_600_000  # 2026-01-01T00:00:00Z
    assert np.allclose(a["ask"] - a["bid"], m.tick)  # one tick apart
    assert np.allclose(np.round(a["bid"] / m.tick), a["bid"] / m.tick)  # on the grid
    traded = ~np.isnan(a["low"])
    assert traded[1:].mean() > 0.9 and not traded[0]
    assert (a["low"][traded] <= a["high"][traded]).all()
    assert (a["volume"][~traded] == 0).all() and (a["volume"][traded] > 0).all()
    assert not np.isnan(a["last"]).any()


def test_tick_is_a_power_of_ten_near_1e_minus_5_of_the_price():
    assert tick_for(60000.0) == pytest.approx(0.1)
    assert tick_for(3000.0) == pytest.approx(0.01)
    assert tick_for(0.6) == pytest.approx(1e-6)


def test_feed_merges_rows_when_the_loop_waited_longer():
    rows = market().frame_arrays(limit=10)
    feed, clock = SimFeed(market(), limit=10), SimClock(int(rows["ts_ms"][0]))

    async def go():
        out = [await feed.fetch(clock.now_ms())]
        await clock.sleep(15.0)  # three grid steps
        out.append(await feed.fetch(clock.now_ms()))
        await clock.sleep(2.0)  # between grid points: the same snapshot, nothing new traded
        out.append(await feed.fetch(clock.now_ms()))
        await clock.sleep(100.0)  # past the end
        out.append(await feed.fetch(clock.now_ms()))
        return out

    first, merged, between, end = asyncio.run(go())
    assert first[0] == rows["ts_ms"][0]
    assert merged[0] == rows["ts_ms"][3] and merged[1] == rows["bid"][3]
    assert merged[4] == np.nanmin(rows["low"][1:4]) and merged[5] == np.nanmax(rows["high"][1:4])
    assert merged[6] == pytest.approx(rows["volume"][1:4].sum())
    assert between[:4] == merged[:4] and math.isnan(between[4]) and between[6] == 0.0
    assert end is not None and end[0] == rows["ts_ms"][9]
    assert asyncio.run(feed.fetch(clock.now_ms() + 10_000)) is None


@pytest.mark.parametrize("pair, name", [("BTC/USDT", "BTC-USDT"), ("../../x", "-..-x"), ("a/b:c", "a-b-c"), ("..", "pair")])
def test_safe_name_never_makes_a_path(pair, name):
    assert safe_name(pair) == name
    assert "/" not in safe_name(pair) and not safe_name(pair).startswith(".")
