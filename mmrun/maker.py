"""MarketMaker: the asyncio quote loop for one pair (paper mode), cycle by cycle through the engine."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import polars as pl

from mmrun import engine
from mmrun.record import EQUITY_SCHEMA, MARKET_SCHEMA, EventStream, RowBuffer, frame

log = logging.getLogger("mmrun")

SIDE_NAME = {1.0: "buy", -1.0: "sell"}


@dataclass
class PairOutcome:
    """What one pair's run leaves behind, for the writers and the summary."""

    pair: str
    status: str  # completed | max_ticks | stopped | failed
    equity: pl.DataFrame  # record.EQUITY_SCHEMA, one row per quote cycle
    fills: pl.DataFrame  # side, price, amount, fee, base, quote, ts_ms
    market: Optional[pl.DataFrame]  # record.MARKET_SCHEMA, the rows paper cycles used
    errors: int = 0
    fingerprint: str = ""
    events: Optional[pl.DataFrame] = None  # backtests: the events, written in one go
    source_note: str = ""
    extra: dict = field(default_factory=dict)


def fingerprint_rows(rows: np.ndarray) -> str:
    """sha256 of market rows as float64 (ROW_FIELDS order, row-major): the data's identity."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float64).tobytes()).hexdigest()


class WallClock:
    """Real time; sleeping ends early when the run is asked to stop."""

    def __init__(self, stop: asyncio.Event):
        self._stop = stop

    def now_ms(self) -> int:
        import time

        return int(time.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


class MarketMaker:
    """Quote one pair: fetch, step the engine, log, wait; on a data error log it, pull, wait, go on."""

    def __init__(
        self,
        pair: str,
        params: np.ndarray,
        state: np.ndarray,
        feed,
        clock,
        events: EventStream,
        *,
        quote_s: float,
        error_s: float,
        max_ticks: Optional[int],
        log_quotes: bool,
        stop: asyncio.Event,
    ):
        self.pair = pair
        self.params = params
        self.state = state
        self.feed = feed
        self.clock = clock
        self.events = events
        self.quote_s = quote_s
        self.error_s = error_s
        self.max_ticks = max_ticks
        self.log_quotes = log_quotes
        self.stop = stop
        self.quotes = engine.empty_quotes()
        self.errors = 0
        self.ticks = 0
        self._fills = RowBuffer(("ts_ms", "side", "price", "amount", "fee", "base", "quote"))
        self._equity = RowBuffer(EQUITY_SCHEMA)
        self._market = RowBuffer(MARKET_SCHEMA)
        self._hash = hashlib.sha256()
        self._mid = math.nan
        self._ts = 0

    def _event(self, ts_ms: int, kind: str, side: float, price: float, amount: float, fee=None, note: str = "") -> None:
        self.events.write(
            ts_ms,
            kind,
            self.pair,
            side=SIDE_NAME.get(side, ""),
            price=price,
            amount=amount,
            base=float(self.state[engine.S_BASE]),
            quote=float(self.state[engine.S_QUOTE]),
            mid=self._mid,
            fee=fee,
            note=note,
        )

    def pull_quotes(self, ts_ms: int, note: str) -> None:
        """Cancel whatever rests (on errors and at the end)."""
        for slot in range(engine.QUOTE_SLOTS):
            amount = float(self.quotes[slot, engine.Q_AMOUNT])
            if amount > 0.0:
                if self.log_quotes:
                    self._event(ts_ms, "CANCEL", self.quotes[slot, engine.Q_SIDE], self.quotes[slot, engine.Q_PRICE], amount, note=note)
                self.quotes[slot, engine.Q_AMOUNT] = 0.0

    def cycle(self, row: tuple) -> None:
        """One quote cycle on one market row (ROW_FIELDS order)."""
        ts, bid, ask, last, low, high, volume = row
        self._ts = ts
        self._mid = (bid + ask) / 2.0
        resting = self.quotes.copy()
        buf = np.empty((engine.MAX_FILLS_PER_STEP, engine.N_FILL))
        n = engine.step(self.params, self.state, self.quotes, bid, ask, last, low, high, volume, buf)
        filled = np.zeros(engine.QUOTE_SLOTS)
        instant = self.params[engine.P_FILL_MODEL] == engine.FILL_INSTANT
        for j in range(n):
            f = buf[j]
            side, price, amount, fee = f[engine.F_SIDE], f[engine.F_PRICE], f[engine.F_AMOUNT], f[engine.F_FEE]
            if not instant:
                filled[int(f[engine.F_SLOT])] += amount
            self.events.write(
                ts, "FILL", self.pair, side=SIDE_NAME[side], price=price, amount=amount,
                base=f[engine.F_BASE], quote=f[engine.F_QUOTE], mid=self._mid, fee=fee,
            )
            self._fills.append((ts, side, price, amount, fee, f[engine.F_BASE], f[engine.F_QUOTE]))
        if self.log_quotes:
            for slot in range(engine.QUOTE_SLOTS):
                left = resting[slot, engine.Q_AMOUNT] - filled[slot]
                if resting[slot, engine.Q_AMOUNT] > 0.0 and left > 0.0:
                    self._event(ts, "CANCEL", resting[slot, engine.Q_SIDE], resting[slot, engine.Q_PRICE], left)
            for slot in range(engine.QUOTE_SLOTS):
                if self.quotes[slot, engine.Q_AMOUNT] > 0.0:
                    self._event(ts, "QUOTE", self.quotes[slot, engine.Q_SIDE], self.quotes[slot, engine.Q_PRICE], self.quotes[slot, engine.Q_AMOUNT])
        bid_q = ask_q = math.nan
        if instant:
            for j in range(n):
                if buf[j, engine.F_SIDE] > 0:
                    bid_q = buf[j, engine.F_PRICE]
                else:
                    ask_q = buf[j, engine.F_PRICE]
        else:
            if self.quotes[0, engine.Q_AMOUNT] > 0.0:
                bid_q = self.quotes[0, engine.Q_PRICE]
            if self.quotes[1, engine.Q_AMOUNT] > 0.0:
                ask_q = self.quotes[1, engine.Q_PRICE]
        base, quote = float(self.state[engine.S_BASE]), float(self.state[engine.S_QUOTE])
        self._equity.append((ts, self._mid, bid_q, ask_q, base, quote, quote + base * self._mid))
        market_row = np.array(row, dtype=np.float64)
        self._market.append(market_row)
        self._hash.update(market_row.tobytes())
        self.ticks += 1

    async def run(self) -> PairOutcome:
        status = "completed"
        while True:
            if self.stop.is_set():
                status = "stopped"
                break
            if self.max_ticks is not None and self.ticks >= self.max_ticks:
                status = "max_ticks"
                break
            now = self.clock.now_ms()
            try:
                row = await self.feed.fetch(now)
            except Exception as exc:  # the original loop's promise: log, count, wait, go on
                self.errors += 1
                note = f"{type(exc).__name__}: {exc}"
                log.warning("%s: market data failed (%s); retrying in %ss", self.pair, note, self.error_s)
                self.events.write(now, "ERROR", self.pair, note=note)
                self.pull_quotes(now, "market data failed")
                await self.clock.sleep(self.error_s)
                continue
            if row is None:
                break
            self.cycle(row)
            await self.clock.sleep(self.quote_s)
        self.pull_quotes(self._ts or self.clock.now_ms(), status)
        return self.outcome(status)

    def outcome(self, status: str) -> PairOutcome:
        eq = self._equity.array()
        fills = self._fills.array()
        return PairOutcome(
            pair=self.pair,
            status=status,
            equity=frame({c: eq[:, i] for i, c in enumerate(EQUITY_SCHEMA)}, EQUITY_SCHEMA),
            fills=fills_frame(fills[:, 0], fills[:, 1], fills[:, 2], fills[:, 3], fills[:, 4], fills[:, 5], fills[:, 6]),
            market=frame({c: self._market.array()[:, i] for i, c in enumerate(MARKET_SCHEMA)}, MARKET_SCHEMA),
            errors=self.errors,
            fingerprint=self._hash.hexdigest(),
        )


def fills_frame(ts_ms, side, price, amount, fee, base, quote) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts_ms": np.asarray(ts_ms, dtype=np.int64),
            "side": np.where(np.asarray(side) > 0, "buy", "sell"),
            "price": np.asarray(price, dtype=np.float64),
            "amount": np.asarray(amount, dtype=np.float64),
            "fee": np.asarray(fee, dtype=np.float64),
            "base": np.asarray(base, dtype=np.float64),
            "quote": np.asarray(quote, dtype=np.float64),
        }
    )
