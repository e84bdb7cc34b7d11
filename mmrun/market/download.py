"""Candle downloads through ccxt with a Parquet cache: fetch once, top up, reuse offline.

The cache holds one file per exchange, pair and timeframe:
`<cache_dir>/<exchange>/<BASE-QUOTE>/<timeframe>.parquet` with columns timestamp (ms since
the epoch, candle open), open, high, low, close, volume. Only closed candles are stored, so
a later run tops the file up from the candle after the last one stored (and back to an
earlier data.since if asked). When the cache already covers the range, no request is made;
when the exchange cannot be reached, the cached candles are used if there are any for the
range, and otherwise the run stops with one line saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import polars as pl

from mmrun.errors import ConfigError, DataError, ExchangeUnavailable, TemporaryError
from mmrun.market.sim import parse_instant_ms
from mmrun.record import safe_name

log = logging.getLogger("mmrun")

CANDLE_SCHEMA = {
    "timestamp": pl.Int64,  # candle open, ms since the epoch
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,  # base units
}


def cache_root(cache_dir: Optional[str]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path("~/.cache/mmrun").expanduser()


def cache_file(cache_dir: Optional[str], exchange_id: str, pair: str, timeframe: str) -> Path:
    """Where the candles of exchange/pair/timeframe are cached."""
    return cache_root(cache_dir) / safe_name(exchange_id) / safe_name(pair) / f"{safe_name(timeframe)}.parquet"


def _read_cache(path: Path) -> pl.DataFrame:
    if not path.is_file():
        return pl.DataFrame(schema=CANDLE_SCHEMA)
    try:
        return pl.read_parquet(path).select([pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items()])
    except Exception as exc:  # a damaged cache is rebuilt, not trusted
        log.warning("candle cache %s unreadable (%s): downloading again", path, exc)
        return pl.DataFrame(schema=CANDLE_SCHEMA)


def _write_atomic(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)


def _cached_part(cached: pl.DataFrame, since_ms: int, until_ms: int, out: Path, empty: str) -> Path:
    """The cache's rows with since_ms <= timestamp < until_ms written to out (the file a run reads);
    DataError(empty) when there are none."""
    part = cached.filter((pl.col("timestamp") >= since_ms) & (pl.col("timestamp") < until_ms))
    if part.height == 0:
        raise DataError(empty)
    _write_atomic(part, out)
    return out


def missing_ranges(cached_ts: List[int], since_ms: int, until_ms: int, tf_ms: int) -> List[Tuple[int, int]]:
    """[start, end) ranges of [since_ms, until_ms) the cache does not cover: before its first
    candle, and after its last one (the cache is contiguous: it only ever grows at its ends)."""
    if not cached_ts:
        return [(since_ms, until_ms)]
    first, last = min(cached_ts), max(cached_ts)
    out = []
    if since_ms < first:
        out.append((since_ms, min(first, until_ms)))
    if last + tf_ms < until_ms:
        out.append((max(last + tf_ms, since_ms), until_ms))
    return [(a, b) for a, b in out if a < b]


def download(cfg: Any, pair: str, *, sleep=None, now_ms: Optional[Callable[[], int]] = None) -> Path:
    """Candles of `pair` on cfg.exchange for [data.since, data.until) as a Parquet file, via the cache.

    Returns the path of a file with exactly that range (next to the cache file), readable by
    mmrun.market.history.load_rows. Raises ConfigError for bad dates or timeframe, DataError
    when there is nothing to use (empty range, or no cache and the exchange unreachable).
    """
    from mmrun.market.ccxt_feed import timeframe_ms

    data, ex = cfg.data, cfg.exchange
    tf_ms = timeframe_ms(data.timeframe)
    if data.since is None:
        raise ConfigError("data.since is required to download candles: e.g. data.since=2026-10-01")
    since = parse_instant_ms(data.since, "data.since")
    now = (now_ms or (lambda: int(time.time() * 1000)))()
    # only closed candles: the one still open at `now` would be cached half-formed
    closed_until = now - now % tf_ms
    until = parse_instant_ms(data.until, "data.until") if data.until is not None else closed_until
    until = min(until, closed_until)
    since_aligned = since + (-since) % tf_ms
    if until <= since_aligned:
        raise ConfigError(
            f"data.since={data.since} .. data.until={data.until}: empty range of {data.timeframe} candles "
            "(until must be later than since, and not in the future)"
        )
    path = cache_file(data.cache_dir, ex.id, pair, data.timeframe)
    cached = _read_cache(path)
    gaps = missing_ranges(cached["timestamp"].to_list(), since_aligned, until, tf_ms)
    if gaps:
        try:
            fresh = asyncio.run(_fetch(ex, pair, data.timeframe, gaps, sleep, tf_ms))
        except (ExchangeUnavailable, TemporaryError) as e:
            have = cached.filter((pl.col("timestamp") >= since_aligned) & (pl.col("timestamp") < until))
            if have.height == 0:
                raise DataError(
                    f"no cached {data.timeframe} candles for {ex.id} {pair} in {path}, and the exchange "
                    f"cannot be reached ({e}); connect once, or use data.path=FILE"
                ) from e
            log.warning("%s %s: cannot top up the candle cache (%s); using the %d cached candles",
                        ex.id, pair, e, have.height)
            fresh = []
        if fresh:
            new = pl.DataFrame(fresh, schema=list(CANDLE_SCHEMA), orient="row").cast(CANDLE_SCHEMA)
            cached = pl.concat([cached, new]).unique("timestamp", keep="last").sort("timestamp")
            _write_atomic(cached, path)
            log.info("%s %s %s: %d candles downloaded, %d cached in %s", ex.id, pair, data.timeframe,
                     len(fresh), cached.height, path)
    else:
        log.info("%s %s %s: all candles from the cache %s", ex.id, pair, data.timeframe, path)
    return _cached_part(cached, since_aligned, until, path.with_name(f"{path.stem}_{since_aligned}_{until}.parquet"),
                        f"{ex.id} {pair}: no {data.timeframe} candles between {data.since} and {data.until or 'now'}")


async def _fetch(ex_cfg: Any, pair: str, timeframe: str, gaps: List[Tuple[int, int]], sleep,
                 tf_ms: int = 0) -> List[List[float]]:
    from mmrun import progress
    from mmrun.market.ccxt_feed import ExchangeClient, fetch_ohlcv_range

    # a bar on a terminal for downloads of more than a few pages (progress.bar: quiet elsewhere)
    expected = sum((end - start) // tf_ms for start, end in gaps) if tf_ms > 0 else 0
    bar = progress.bar(expected, f"download {ex_cfg.id} {pair} {timeframe}", unit="candles") if expected > 5000 else None
    client = ExchangeClient.from_config(ex_cfg, sleep=sleep)
    try:
        out: List[List[float]] = []
        for start, end in gaps:
            out.extend(await fetch_ohlcv_range(client, pair, timeframe, start, end, on_page=bar and bar.update))
        return out
    finally:
        if bar is not None:
            bar.close()
        await client.close()


# ---------------------------------------------------------------- trades

TRADE_SCHEMA = {
    "timestamp": pl.Int64,  # ms since the epoch
    "id": pl.String,  # the exchange's trade id
    "price": pl.Float64,
    "amount": pl.Float64,  # base units
    "side": pl.Int8,  # +1 buyer-initiated, -1 seller-initiated, 0 unknown
}


def trades_cache_file(cache_dir: Optional[str], exchange_id: str, pair: str) -> Path:
    """Where the public trades of exchange/pair are cached (with trades.json: the range covered)."""
    return cache_root(cache_dir) / safe_name(exchange_id) / safe_name(pair) / "trades.parquet"


def download_trades(cfg: Any, pair: str, *, sleep=None, now_ms: Optional[Callable[[], int]] = None) -> Path:
    """Public trades of `pair` on cfg.exchange for [data.since, data.until) as a Parquet file, via the cache.

    The cache keeps every trade fetched and, beside it (trades.json), the one time range
    [since, until) it covers completely; a later run fetches only what lies outside it (before,
    or after: the range stays one piece). Returns a file with exactly the asked range (columns
    TRADE_SCHEMA), read by mmrun.market.history like any trades file. Raises ConfigError (bad
    dates, empty range) or DataError (nothing cached and the exchange unreachable).
    """
    import json

    data, ex = cfg.data, cfg.exchange
    if data.since is None:
        raise ConfigError("data.since is required to download trades: e.g. data.since=2026-10-01T00:00:00Z")
    since = parse_instant_ms(data.since, "data.since")
    now = (now_ms or (lambda: int(time.time() * 1000)))()
    until = min(parse_instant_ms(data.until, "data.until") if data.until is not None else now, now)
    if until <= since:
        raise ConfigError(f"data.since={data.since} .. data.until={data.until}: empty range of trades "
                          "(until must be later than since, and not in the future)")
    path = trades_cache_file(data.cache_dir, ex.id, pair)
    meta_path = path.with_suffix(".json")
    cached = pl.DataFrame(schema=TRADE_SCHEMA)
    covered: Optional[Tuple[int, int]] = None
    if path.is_file() and meta_path.is_file():
        try:
            cached = pl.read_parquet(path).select([pl.col(c).cast(t) for c, t in TRADE_SCHEMA.items()])
            meta = json.loads(meta_path.read_text())
            covered = (int(meta["since"]), int(meta["until"]))
        except Exception as exc:  # a damaged cache is rebuilt, not trusted
            log.warning("trades cache %s unreadable (%s): downloading again", path, exc)
            cached, covered = pl.DataFrame(schema=TRADE_SCHEMA), None
    if covered is None:
        todo = [(since, until)]
    else:
        a, b = covered
        todo = [r for r in ((since, a), (b, until)) if r[0] < r[1]]
        if since > b:  # keep the covered range one piece
            todo = [(b, until)]
        if until < a:
            todo = [(since, a)] + [r for r in todo if r[0] >= b]
    if todo:
        try:
            fresh = asyncio.run(_fetch_trades(ex, pair, todo, sleep))
        except (ExchangeUnavailable, TemporaryError) as e:
            have = cached.filter((pl.col("timestamp") >= since) & (pl.col("timestamp") < until))
            if have.height == 0:
                raise DataError(f"no cached trades for {ex.id} {pair} in {path}, and the exchange cannot be reached "
                                f"({e}); connect once, or use data.path=FILE") from e
            log.warning("%s %s: cannot top up the trades cache (%s); using the %d cached trades", ex.id, pair, e,
                        have.height)
            fresh = None
        if fresh is not None:
            new = pl.DataFrame(fresh, schema=list(TRADE_SCHEMA), orient="row").cast(TRADE_SCHEMA)
            cached = pl.concat([cached, new]).unique(["timestamp", "id"], keep="last").sort(["timestamp", "id"],
                                                                                             maintain_order=True)
            lo = min([since] + ([covered[0]] if covered else []))
            hi = max([until] + ([covered[1]] if covered else []))
            _write_atomic(cached, path)
            tmp = meta_path.with_name(meta_path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"since": lo, "until": hi}))
            os.replace(tmp, meta_path)
            log.info("%s %s: %d trades downloaded, %d cached in %s", ex.id, pair, len(fresh), cached.height, path)
    else:
        log.info("%s %s: all trades from the cache %s", ex.id, pair, path)
    return _cached_part(cached, since, until, path.with_name(f"trades_{since}_{until}.parquet"),
                        f"{ex.id} {pair}: no trades between {data.since} and {data.until or 'now'}")


async def _fetch_trades(ex_cfg: Any, pair: str, ranges: List[Tuple[int, int]], sleep) -> List[tuple]:
    from mmrun import progress
    from mmrun.market.ccxt_feed import ExchangeClient, fetch_trades_range

    bar = progress.bar(None, f"download {ex_cfg.id} {pair} trades", unit="trades")  # total unknown
    client = ExchangeClient.from_config(ex_cfg, sleep=sleep)
    try:
        out: List[tuple] = []
        for start, end in ranges:
            out.extend(await fetch_trades_range(client, pair, start, end, on_page=bar and bar.update))
        return out
    finally:
        if bar is not None:
            bar.close()
        await client.close()
