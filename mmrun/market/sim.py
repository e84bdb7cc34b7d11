"""The built-in simulated exchange: a seeded synthetic market per pair, on a simulated clock.

The mid follows a geometric random walk (annualised volatility). Between snapshots, trade
prints arrive as a Poisson process: a buyer-initiated print trades at the best ask plus a
sweep depth, a seller-initiated one at the best bid minus it (depth exponential with mean
`sweep_bps`), sizes lognormal around `trade_notional`. Each snapshot has a best bid and ask
`spread_ticks` apart on a tick grid. The market is generated in fixed-size chunks from one
seeded generator, so the same seed and pair always give the same rows, whoever reads them.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from datetime import datetime, timezone
from typing import Dict, Iterator, Optional

import numpy as np

from mmrun.errors import ConfigError
from mmrun.quoting import snap

SECONDS_PER_YEAR = 365.0 * 24 * 3600
CHUNK_ROWS = 2048  # fixed: changing it changes the random stream, hence the market


def parse_instant_ms(text: str, key: str) -> int:
    """ISO-8601 instant ('2026-01-01T00:00:00Z', naive = UTC) -> milliseconds since the epoch."""
    try:
        dt = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{key}={text!r} is not an ISO-8601 instant, e.g. 2026-01-01T00:00:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(round(dt.timestamp() * 1000))


def tick_for(price: float) -> float:
    """A tick about 1e-5 of the price, a power of ten (60000 -> 0.1, 3000 -> 0.01)."""
    return 10.0 ** (math.floor(math.log10(price)) - 5)


class SimMarket:
    """Rows (see mmrun.market.ROW_FIELDS) of one pair's synthetic market on a fixed time grid."""

    def __init__(self, pair: str, sim_cfg, step_s: float, seed: int, latency_ms: float = 0.0):
        """latency_ms (fills.latency_ms): a row's low, high and volume count only the trades from
        latency_ms after the previous row, when the quotes made there start to rest (the market
        itself, and `last`, are unchanged)."""
        base = pair.split("/")[0]
        self.latency_s = float(latency_ms) / 1000.0
        self.pair = pair
        self.price0 = float(sim_cfg.prices.get(base, sim_cfg.default_price))
        self.tick = tick_for(self.price0)
        self.step_ms = int(round(step_s * 1000))
        self.start_ms = parse_instant_ms(sim_cfg.start, "exchange.sim.start")
        self.n_rows = int(sim_cfg.duration_s * 1000 // self.step_ms) + 1
        self.vol = float(sim_cfg.volatility_annual)
        self.rate = float(sim_cfg.trade_rate_per_s)
        self.sweep = float(sim_cfg.sweep_bps) / 1e4
        self.notional = float(sim_cfg.trade_notional)
        self.spread_ticks = int(sim_cfg.spread_ticks)
        self.seed = int(seed)

    def _rng(self) -> np.random.Generator:
        # The pair enters the seed so that pairs in one run are independent, yet reproducible.
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, zlib.crc32(self.pair.encode())])))

    def chunks(self, limit: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
        """Yield the market in chunks of CHUNK_ROWS rows (dicts of ROW_FIELDS arrays)."""
        n_total = self.n_rows if limit is None else min(self.n_rows, limit)
        rng = self._rng()
        log_mid = math.log(self.price0)
        last = self.price0
        dt_s = self.step_ms / 1000.0
        for first in range(0, n_total, CHUNK_ROWS):
            # Always draw whole chunks: a row limit must not change the rows it keeps.
            n = CHUNK_ROWS
            rows = np.arange(first, first + n)
            counts = rng.poisson(self.rate * dt_s, n)
            if first == 0:
                counts[0] = 0  # nothing traded before the first snapshot
            k = int(counts.sum())
            trade_row = np.repeat(rows, counts)
            offsets = rng.random(k)
            # Trades in row r happen in ((r - 1) dt, r dt]; snapshots at r dt.
            t_trade = (trade_row - 1 + offsets) * dt_s
            t_row = rows * dt_s
            times = np.concatenate([t_trade, t_row])
            is_row = np.concatenate([np.zeros(k, bool), np.ones(n, bool)])
            order = np.lexsort((is_row, times))
            times = times[order]
            # the previous event is the last snapshot, (first - 1) dt (row 0 is at time 0)
            prev = np.concatenate([[max(first - 1, 0) * dt_s], times[:-1]])
            dt_years = np.maximum(times - prev, 0.0) / SECONDS_PER_YEAR
            z = rng.standard_normal(times.shape[0])
            incr = self.vol * np.sqrt(dt_years) * z - 0.5 * self.vol**2 * dt_years
            path = log_mid + np.cumsum(incr)
            log_mid = float(path[-1])
            mid_sorted = np.exp(path)
            mid = np.empty_like(mid_sorted)
            mid[order] = mid_sorted
            trade_mid, row_mid = mid[:k], mid[k:]

            tick = self.tick
            half = self.spread_ticks * tick / 2.0
            side = rng.random(k) < 0.5  # True: buyer-initiated (trades at the ask or above)
            depth = rng.exponential(self.sweep, k) * trade_mid if self.sweep > 0 else np.zeros(k)
            t_bid = np.floor((trade_mid - half) / tick + 1e-9) * tick
            t_ask = t_bid + self.spread_ticks * tick
            price = np.where(side, np.ceil((t_ask + depth) / tick - 1e-9), np.floor((t_bid - depth) / tick + 1e-9)) * tick
            price = snap(price, tick)
            size = self.notional * np.exp(rng.normal(-0.5, 1.0, k)) / price

            low = np.full(n, np.nan)
            high = np.full(n, np.nan)
            volume = np.zeros(n)
            local = trade_row - first
            rests = offsets * dt_s >= self.latency_s  # the trade came after the quotes started to rest
            np.fmin.at(low, local[rests], price[rests])
            np.fmax.at(high, local[rests], price[rests])
            np.add.at(volume, local[rests], size[rests])
            last_px = np.full(n, np.nan)
            if k:
                ends = np.cumsum(counts) - 1
                has = counts > 0
                last_px[has] = price[ends[has]]
            last_px[0] = last if np.isnan(last_px[0]) else last_px[0]
            # carry the last print forward over rows without trades
            idx = np.where(~np.isnan(last_px), np.arange(n), 0)
            np.maximum.accumulate(idx, out=idx)
            last_px = last_px[idx]
            last = float(last_px[-1])

            bid = snap(np.floor((row_mid - half) / tick + 1e-9) * tick, tick)
            ask = snap(bid + self.spread_ticks * tick, tick)
            keep = min(n, n_total - first)
            yield {
                "ts_ms": (self.start_ms + rows[:keep] * self.step_ms).astype(np.int64),
                "bid": bid[:keep],
                "ask": ask[:keep],
                "last": last_px[:keep],
                "low": low[:keep],
                "high": high[:keep],
                "volume": volume[:keep],
            }

    def frame_arrays(self, limit: Optional[int] = None) -> Dict[str, np.ndarray]:
        """The whole market (up to limit rows) as one dict of arrays."""
        parts = list(self.chunks(limit))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}



class SimClock:
    """Market time that jumps: sleeping advances it at once (milliseconds since the epoch)."""

    def __init__(self, start_ms: int):
        self._now = int(start_ms)

    def now_ms(self) -> int:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self._now += int(round(seconds * 1000))
        await asyncio.sleep(0)  # let the other pairs' loops run


class SimFeed:
    """The simulated exchange seen through the paper loop: fetch(now) -> the row at `now`.

    Rows between two fetches (when the loop waited longer than one grid step) are merged:
    their trades count toward the interval's low, high and volume.
    """

    name = "sim"
    live = False  # simulated time: a fetch returns at once
    source = ""

    def __init__(self, market: SimMarket, limit: Optional[int] = None):
        self.market = market
        self.tick = market.tick
        self._chunks = market.chunks(limit)
        self._buf: Optional[Dict[str, np.ndarray]] = None
        self._pos = 0
        self._last_row: Optional[tuple] = None

    def _peek_ts(self) -> Optional[int]:
        if self._buf is None or self._pos >= len(self._buf["ts_ms"]):
            self._buf = next(self._chunks, None)
            self._pos = 0
            if self._buf is None:
                return None
        return int(self._buf["ts_ms"][self._pos])

    async def fetch(self, now_ms: int) -> Optional[tuple]:
        """The row at now_ms (merged with skipped rows), or None once the market has ended."""
        low, high, volume, row = math.nan, math.nan, 0.0, None
        while True:
            ts = self._peek_ts()
            if ts is None or ts > now_ms:
                break
            b, i = self._buf, self._pos
            row = (ts, float(b["bid"][i]), float(b["ask"][i]), float(b["last"][i]))
            lo, hi = float(b["low"][i]), float(b["high"][i])
            low = lo if math.isnan(low) else (low if math.isnan(lo) else min(low, lo))
            high = hi if math.isnan(high) else (high if math.isnan(hi) else max(high, hi))
            volume += float(b["volume"][i])
            self._pos += 1
        if row is None:
            if ts is None:
                return None
            # woken between two grid points: the last snapshot again, nothing traded since
            row = self._last_row
        self._last_row = row
        return row + (low, high, volume)

    async def close(self) -> None:
        return None
