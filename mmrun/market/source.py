"""Where a run's market comes from: the one place that picks the source for a pair.

Three sources, chosen from the config and nowhere else:
- the simulated exchange (`exchange.id=sim`, no `data.path`): mmrun.market.sim;
- a data file (`data.path`, or candles downloaded from a real exchange for a backtest):
  mmrun.market.history, through the single call `file_market`;
- a real exchange's live public data (paper mode, `exchange.id=<ccxt id>`): ccxt_feed.

A paper run gets a `Feed` and the clock it runs on (`paper_market`); a backtest gets the
whole market as arrays (`backtest_market`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Protocol, Tuple

import numpy as np

from mmrun.errors import ConfigError, DataError

log = logging.getLogger("mmrun")

# (ts_ms, bid, ask, last, low, high, volume): see mmrun.market.ROW_FIELDS
Row = Tuple[int, float, float, float, float, float, float]


class Feed(Protocol):
    """A paper run's market data for one pair, one row per quote cycle.

    Implemented by sim.SimFeed and ccxt_feed.CcxtFeed (and the tests' array feeds).
    """

    name: str  # the source's name for summaries and market.json ('sim', 'binance@http://...')
    tick: float  # price step (quote currency); 0 = no price grid
    live: bool  # True: real time, a fetch may take long and is abandoned on a stop request
    source: str  # the source that served the last row ('' when there is only one)

    async def fetch(self, now_ms: int) -> Optional[Row]:
        """The market row at now_ms (ms since the epoch); None once the market has ended.
        Raises mmrun.errors.TemporaryError (the loop retries) or PermanentError (the pair stops)."""
        ...

    async def close(self) -> None:
        """Release the source (idempotent)."""
        ...


class Clock(Protocol):
    """Market time for the paper loop: now in ms since the epoch, and a wait."""

    def now_ms(self) -> int: ...

    async def sleep(self, seconds: float) -> None: ...


class WallClock:
    """Real time; sleeping ends early when the run is asked to stop."""

    def __init__(self, stop: asyncio.Event):
        self._stop = stop

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


# The last instant an ISO-8601 timestamp (and events.csv) can show: 9999-12-31T23:59:59.999Z
MAX_TS_MS = 253_402_300_799_999


def sim_market(cfg: Any, pair: str):
    """The pair's simulated market (sim.SimMarket) from exchange.sim, intervals.quote_s and seed.

    Checked by generating its first rows: a market that cannot be generated (a price of 0 or
    inf, a duration or start that overflows the time grid, non-finite or crossed quotes) is a
    ConfigError naming exchange.sim, never a run that completes on nothing.
    """
    from mmrun.market.sim import SimMarket

    try:
        market = SimMarket(pair, cfg.exchange.sim, cfg.intervals.quote_s, cfg.seed, latency_ms=cfg.fills.latency_ms)
        last_ms = market.start_ms + (market.n_rows - 1) * market.step_ms
        with np.errstate(all="ignore"):
            first = next(market.chunks(1))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"exchange.sim: the simulated market for {pair} cannot be generated "
                          f"({type(exc).__name__}: {exc}); check exchange.sim.prices, duration_s and start") from None
    bid, ask = float(first["bid"][0]), float(first["ask"][0])
    if not (np.isfinite(bid) and np.isfinite(ask) and 0.0 < bid < ask):
        raise ConfigError(f"exchange.sim: the simulated market for {pair} starts with best bid {bid:g} and ask {ask:g}; "
                          "check exchange.sim.prices and spread_ticks (a positive, finite price; bid below ask)")
    if market.n_rows < 1 or not (0 <= market.start_ms and last_ms <= MAX_TS_MS):
        raise ConfigError(f"exchange.sim: the simulated market for {pair} would run outside the years 1970..9999 "
                          f"(exchange.sim.start={cfg.exchange.sim.start}, duration_s={cfg.exchange.sim.duration_s})")
    return market


# ---------------------------------------------------------------- paper


@dataclass
class PaperMarket:
    """A paper run's source for one pair: the feed, its clock, and the exchange's rules (None on sim)."""

    feed: Feed
    clock: Clock
    rules: Any = None  # ccxt_feed.MarketRules: tick, lot, min_amount, min_notional


async def paper_market(cfg: Any, pair: str, stop: asyncio.Event, clients: Dict) -> PaperMarket:
    """The feed and clock for `pair`: the simulated exchange on simulated time, or a real
    exchange on the wall clock. clients: ccxt clients shared by the run's pairs (filled here).
    A real exchange's markets are loaded here: an unknown pair or an unreachable exchange
    raises (ConfigError, ExchangeUnavailable) before anything is written."""
    if cfg.exchange.id == "sim":
        from mmrun.market.sim import SimClock, SimFeed

        market = sim_market(cfg, pair)
        return PaperMarket(SimFeed(market, cfg.run.max_ticks), SimClock(market.start_ms))
    from mmrun.market.ccxt_feed import open_feed

    feed = await open_feed(cfg.exchange, pair, shared=clients)
    feed.latency_ms = float(cfg.fills.latency_ms)  # trades before a quote rests do not fill it
    return PaperMarket(feed, WallClock(stop), feed.rules)


# ---------------------------------------------------------------- backtests


@dataclass
class BacktestMarket:
    """A backtest's whole market for one pair.

    rows: ROW_FIELDS -> arrays (ts_ms int64 market ms, the rest float64), one row per cycle;
    tick: price step the quotes are rounded to (0 = none); rules: the exchange's rules a
    recorded paper run quoted under (a dict: tick, lot, min_amount, min_notional) or None.
    """

    rows: Dict[str, np.ndarray]
    tick: float
    rules: Optional[Dict[str, Any]] = None
    labels: Optional[Dict[str, Any]] = None  # summary fields about the data (history.summary_labels)


def backtest_market(cfg: Any, pair: str) -> BacktestMarket:
    """The data file if given, candles downloaded from a real exchange (data.since..data.until,
    through the cache), else the simulated market; run.max_ticks keeps the first rows."""
    if cfg.data.path is not None or cfg.exchange.id != "sim":
        market = file_market(cfg, pair)
        if cfg.run.max_ticks is not None:
            market.rows = {k: v[: cfg.run.max_ticks] for k, v in market.rows.items()}
        return market
    market = sim_market(cfg, pair)
    return BacktestMarket(market.frame_arrays(cfg.run.max_ticks), market.tick)


def file_market(cfg: Any, pair: str) -> BacktestMarket:
    """The market from a file: data.path, or what data.kind downloads for `pair` (mmrun.market.history.
    backtest_market). Raises DataError naming the file (and row) when it cannot be used."""
    from mmrun.market.history import backtest_market as data_market, grid_from_data, summary_labels

    path = cfg.data.path
    if path is not None:
        recover_market_file(path)
    data = data_market(cfg, pair)
    recording = path is not None and data.kind == "market"  # a paper run's market.parquet
    rules = _file_rules(path) if recording else None
    tick, lot = grid_from_data(data, cfg)
    tick = tick or (_file_tick(cfg, pair, path) if recording else 0.0)
    if lot:
        rules = dict(rules or {}, lot=lot)
    return BacktestMarket(dict(data.rows), tick, rules, summary_labels(cfg, data))


def recover_market_file(path: str) -> None:
    """A killed paper run's market.parquet (never written: the run did not reach its end) is
    written from the run's journal beside it, up to its last complete cycle, so it replays."""
    from mmrun.recorder import has_journal, write_market_parquet

    p = Path(path)
    if p.name == "market.parquet" and not p.exists() and has_journal(p.parent):
        log.warning("%s: the paper run there did not finish: market.parquet written from its journal", p.parent)
        write_market_parquet(p.parent)


def _file_tick(cfg: Any, pair: str, path: str) -> float:
    """Candles: no price grid (0). A paper run's market.parquet replayed on exchange=sim: the
    simulated exchange's tick, the grid the paper run quoted on, so the replay fills the same."""
    from mmrun.market.history import recorded_market

    if cfg.exchange.id == "sim" and recorded_market(path):
        return sim_market(cfg, pair).tick
    rules = _file_rules(path)
    return float(rules.get("tick") or 0.0) if rules else 0.0


def _file_rules(path: str) -> Optional[Dict[str, Any]]:
    """A real exchange's paper run (market.parquet with market.json beside it): the rules it
    quoted under (tick, lot, minimums), so that its replay quotes and fills the same."""
    from mmrun.market.history import recorded_market

    info = Path(path).with_name("market.json")
    if not (recorded_market(path) and info.is_file()):
        return None
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{info}: unreadable market rules ({exc}); delete it to replay without them") from None
