"""The paper loop: `MarketMaker` quotes one pair cycle by cycle through the engine, on live or
simulated market data, as the original asyncio loop did (fetch, quote, log, wait; on an error
log it, pull the quotes, wait, go on).

The market source (a `market.source.Feed` and its clock) is picked by market.source; what a
cycle leaves (equity, market and fill rows) goes to a `recorder.PairRecorder`; the events to
a record.EventStream. Backtests do not come through here: see backtest.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from mmrun import engine
from mmrun.errors import PermanentError
from mmrun.record import EventStream
from mmrun.recorder import PairOutcome, PairRecorder

log = logging.getLogger("mmrun")

SIDE_NAME = {1.0: "buy", -1.0: "sell"}



async def run_unless_stopped(work: Any, stop: asyncio.Event) -> Tuple[bool, Any]:
    """Run the coroutine `work`: (True, its result) when it ends first; (False, None) when `stop`
    is set first, `work` then being cancelled. Its exception, if it raised, is raised here."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return True, task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # the cancelled work's own ending does not matter any more
        pass
    return False, None


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
        folder: Optional[Path] = None,
        rules: Any = None,
        status: Any = None,
    ):
        """feed: a market.source.Feed; clock: a market.source.Clock;
        folder: stream the recorded rows into this folder (market.parquet, see PairRecorder)
            instead of keeping them in memory;
        rules: the exchange's market rules (ccxt_feed.MarketRules) when params carry them: the log
            then says when they keep quotes off the book;
        status: a status.StatusBoard told about every cycle."""
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
        self.stepper = engine.Stepper(params, state)  # the compiled cycle, resolved once for the run
        self.quotes = engine.empty_quotes(self.stepper.levels)
        self._fills = np.empty((engine.max_fills(self.stepper.levels), engine.N_FILL))  # one step's fills
        self._capital = float(params["capital"])
        self.errors = 0
        self.ticks = 0
        self.recorder = PairRecorder(pair, folder)
        self.rules = rules
        self.status = status
        self._skip_reason = ""
        self._pulled = False  # quotes were pulled after a failed fetch: nothing rests into the next row
        self._mid = math.nan
        self._ts = 0

    def _event(self, ts_ms: int, kind: str, side: float, price: float, amount: float, fee=None, note: str = "") -> None:
        base, quote = self.stepper.balances()
        self.events.write(
            ts_ms,
            kind,
            self.pair,
            side=SIDE_NAME.get(side, ""),
            price=price,
            amount=amount,
            base=base,
            quote=quote,
            mid=self._mid,
            fee=fee,
            note=note,
        )

    def pull_quotes(self, ts_ms: int, note: str) -> None:
        """Cancel whatever rests (on errors and at the end)."""
        for slot in range(self.quotes.shape[0]):
            amount = float(self.quotes[slot, engine.Q_AMOUNT])
            if amount > 0.0:
                if self.log_quotes:
                    self._event(ts_ms, "CANCEL", self.quotes[slot, engine.Q_SIDE], self.quotes[slot, engine.Q_PRICE], amount, note=note)
                self.quotes[slot, engine.Q_AMOUNT] = 0.0

    def cycle(self, row: tuple) -> None:
        """One quote cycle on one market row (ROW_FIELDS order)."""
        if self._pulled:
            # Nothing rested through the failure, so the trades reported since the last good row
            # could fill nothing: record them as "no trades", and a replay of market.parquet (where
            # the previous row's quotes do rest into this row) fills exactly what this run filled.
            row = (row[0], row[1], row[2], row[3], math.nan, math.nan, 0.0)
            self._pulled = False
        ts, bid, ask, last, low, high, volume = row
        self._ts = ts
        self._mid = (bid + ask) / 2.0
        resting = self.quotes.tolist() if self.log_quotes else None  # (side, price, amount) rows before the step
        buf = self._fills
        if self.rules is not None and last > 0.0:
            self._explain_rules(last)
        n = self.stepper(self.quotes, bid, ask, last, low, high, volume, buf)
        filled = [0.0] * len(self.quotes)
        for slot, side, price, amount, fee, f_base, f_quote in buf[:n].tolist():  # F_* column order
            filled[int(slot)] += amount
            self.events.write(
                ts, "FILL", self.pair, side=SIDE_NAME[side], price=price, amount=amount,
                base=f_base, quote=f_quote, mid=self._mid, fee=fee,
            )
            self.recorder.fill(ts, side, price, amount, fee, f_base, f_quote)
        if self.log_quotes:
            for slot, (side, price, amount) in enumerate(resting):
                left = amount - filled[slot]
                if amount > 0.0 and left > 0.0:
                    self._event(ts, "CANCEL", side, price, left)
            for side, price, amount in self.quotes.tolist():
                if amount > 0.0:
                    self._event(ts, "QUOTE", side, price, amount, note=self.feed.source)
        bid_q, ask_q = self.stepper.best_placed(self.quotes, buf, n)
        base, quote = self.stepper.balances()
        self.recorder.cycle((ts, self._mid, bid_q, ask_q, base, quote, quote + base * self._mid), row)
        self.ticks += 1
        if self.status is not None:
            self.status.update(self.pair, mid=self._mid, bid=bid_q, ask=ask_q, base=base, equity=quote + base * self._mid,
                               initial=self._capital, fills=self.recorder.fills,
                               errors=self.errors, data_ts_ms=ts, source=self.feed.source)

    def warm_up(self) -> None:
        """Compile the kernel now (a throwaway cycle on copies): on a cold numba cache the first
        cycle would otherwise quote on data fetched before a compile of many seconds."""
        nan = math.nan
        buf = np.empty((engine.max_fills(self.stepper.levels), engine.N_FILL))
        engine.step(self.params, self.state.copy(), self.quotes.copy(), 1.0, 1.0, 1.0, nan, nan, 0.0, buf)

    def _explain_rules(self, last: float) -> None:
        """Say (once per change) which quote levels the exchange's minimums keep off the book and
        which are placed (messages.minimums_text); the kernel applies the rules themselves (and
        counts what they drop)."""
        from mmrun.messages import level_sizes, minimums_text
        from mmrun.quoting import grid_floor

        p = self.params
        names = p.dtype.names or ()
        levels = int(p["levels"]) if "levels" in names else 1
        step = float(p["level_size_step"]) if "level_size_step" in names else 0.0
        sizes = [grid_floor(s, p["lot_units"], p["lot_scale"])
                 for s in level_sizes(p["capital"], p["order_size_pct"], p["max_exposure"], levels, step, last)]
        reason = minimums_text(sizes, last, p["min_amount"], p["min_notional"],
                               self.pair.partition("/")[2].partition(":")[0])
        if reason and reason != self._skip_reason:
            log.warning("%s: %s", self.pair, reason)
        self._skip_reason = reason

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
                row = await self._fetch(now)
            except PermanentError as exc:  # e.g. the pair was delisted: retrying will not help
                self.errors += 1
                note = f"{type(exc).__name__}: {exc}"
                log.error("%s: %s; stopping this pair", self.pair, note)
                self.events.write(now, "ERROR", self.pair, note=note)
                status = "failed"
                break
            except Exception as exc:  # the original loop's promise: log, count, wait, go on
                self.errors += 1
                note = f"{type(exc).__name__}: {exc}"
                log.warning("%s: market data failed (%s); retrying in %ss", self.pair, note, self.error_s)
                self.events.write(now, "ERROR", self.pair, note=note)
                self.pull_quotes(now, "market data failed")
                self._pulled = True
                if self.status is not None:
                    self.status.error(self.pair, self.errors, note)
                await self.clock.sleep(self.error_s)
                continue
            if row is _STOPPED:
                status = "stopped"
                break
            if row is None:
                break
            self.cycle(row)
            if self.max_ticks is None or self.ticks < self.max_ticks:  # no idle wait after the last
                await self.clock.sleep(self.quote_s)
        self.pull_quotes(self._ts or self.clock.now_ms(), status)
        return self.outcome(status)

    async def _fetch(self, now: int):
        """The feed's row; a live feed's fetch (retries, timeouts) is abandoned on a stop request."""
        if not self.feed.live:
            return await self.feed.fetch(now)
        done, row = await run_unless_stopped(self.feed.fetch(now), self.stop)
        return row if done else _STOPPED

    def outcome(self, status: str) -> PairOutcome:
        """The run's frames, from the recorder, with the quotes the kernel dropped and the feed's
        counts (retries absorbed, cycles whose trades could not all be read) when it keeps them."""
        out = self.recorder.outcome(status, self.errors)
        out.quotes_dropped = engine.quotes_dropped(self.state)
        out.retries = int(getattr(self.feed, "retries", 0) or 0)
        out.trades_incomplete = int(getattr(self.feed, "incomplete_cycles", 0) or 0)
        return out

    def close_recording(self) -> None:
        """Finish the files the rows are streamed to (idempotent)."""
        self.recorder.close()


_STOPPED = object()  # what _fetch returns when a stop request won the race
