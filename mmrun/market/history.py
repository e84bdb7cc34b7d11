"""Market history from files: candles, trades (with an optional top-of-book file) or a paper run's
market.parquet, as market rows (mmrun.market.ROW_FIELDS).

Which file is which, and the formats accepted, is mmrun.market.formats' job; a trades file is
turned into one row per quote cycle by mmrun.market.ticks. This module checks candle files and
market recordings, slices every kind by data.since / data.until, and finds the holes (gaps).
Candle timestamps are epoch integers (s, ms, µs or ns, one unit per file) or ISO-8601 text
('2026-01-01T00:00:00Z'; without an offset it is UTC).

Gaps. Two candles whose open times are further apart than data.max_gap_s (default: three bars)
leave a hole in which the market maker saw nothing: the candle after the hole gets no range
(low and high NaN, volume 0), so the quotes made before the hole fill nothing after it. A
market recording is replayed as recorded (its paper run already pulled its quotes on failures).

Row time. A candle's timestamp is its OPEN time (as ccxt and exchanges stamp candles), but an
mmrun market row is a snapshot at ts_ms plus what traded in the interval that ENDED at ts_ms
(see mmrun.market.ROW_FIELDS; a paper run's market.parquet is recorded that way). So a candle
becomes the row at its close time, ts_ms = open time + bar length, the bar length being the most
common spacing between consecutive timestamps (the shortest of them on a tie). Every value of a
row is then known at its time: quotes made from bar t's close are stamped at bar t's close, and
their fills against bar t+1's range at bar t+1's close. This is why a candle file needs at least
two rows.

Every file is validated before a run; the first problem stops it with one line naming the file,
the row (1-based data row; CSV files also give the line) and what is wrong. Unsorted or
duplicate timestamps can be repaired instead, explicitly: data.repair=[sort] sorts the rows by
time (stable), data.repair=[dedupe] keeps the last of consecutive rows with one timestamp (after
the sort when both are given; a later download of a candle replaces an earlier, possibly
unfinished one).

Loaded rows are cached per process, keyed by the file and every setting, so a sweep worker that
runs many jobs on one file reads and checks it once. The cached arrays are shared: treat them as
read-only.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import polars as pl

from mmrun.errors import DataError
from mmrun.market import ROW_FIELDS
from mmrun.market.formats import Table, epoch_unit, open_table, to_ms

log = logging.getLogger("mmrun")

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
REPAIRS = ("sort", "dedupe")
PRICE_COLUMNS = ("open", "high", "low", "close", "bid", "ask")
_CACHE_SIZE = 4
GAPS_LOGGED = 5

Rows = Dict[str, np.ndarray]


@dataclass
class MarketData:
    """What a data file gave: the rows (ROW_FIELDS arrays) and what to say about them.

    source: the file's name; fmt: its recognised format ('Binance klines CSV (no header)', ...);
    kind: candles | trades | market; gaps: the holes that pulled the quotes (ticks.Gap: start
    ms, length s); max_gap_s: the threshold used (0 for a market recording: none applied).
    """

    rows: Rows
    source: str
    fmt: str
    kind: str
    gaps: List = field(default_factory=list)
    max_gap_s: float = 0.0
    quotes_fmt: str = ""

    @property
    def label(self) -> str:
        """The format, with the quotes file's when there is one."""
        return self.fmt + (f" + quotes: {self.quotes_fmt}" if self.quotes_fmt else "")


_cache: "OrderedDict[tuple, MarketData]" = OrderedDict()


def load_rows(path_text: str, repair: Iterable[str] = ()) -> Rows:
    """Market rows (ROW_FIELDS arrays: ts_ms int64, the rest float64) from a history file.

    Candle files: bid and ask are the file's bid/ask columns if present, else the close; last
    is the close; ts_ms is the candle's close time (see the module docstring). A paper run's
    market.parquet (columns ts_ms, bid, ask, last, low, high, volume) is taken as recorded.
    A trades file is replayed at 5 s cycles (load_market chooses). repair: a subset of REPAIRS
    applied before the order checks. Raises DataError.
    """
    return dict(load_market(path_text, repair=repair).rows)


def load_market(path_text: str, *, repair: Iterable[str] = (), quotes: Optional[str] = None, cycle_s: float = 5.0,
                latency_ms: float = 0.0, max_gap_s: Optional[float] = None, since_ms: Optional[int] = None,
                until_ms: Optional[int] = None) -> MarketData:
    """A data file (candles, trades, or a paper run's market recording) as market rows.

    quotes: a top-of-book file for a trades file (data.quotes); cycle_s: the quote cycle a
    trades file is replayed at (intervals.quote_s); latency_ms: fills.latency_ms (trades only:
    on candles it must be 0, see check_latency); max_gap_s: data.max_gap_s (None: three times
    the usual spacing); since_ms/until_ms: only rows (candle open times, trade times) in
    [since, until). Loaded files are cached per process (path, size, mtime and every argument).
    Raises DataError naming the file and row, ConfigError for a setting the data cannot honour.
    """
    repair_key = _repair_key(repair)
    path = Path(path_text)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"data.path={path_text}: no such file") from None
    if not path.is_file():
        raise DataError(f"data.path={path_text}: not a file")
    qkey = None
    if quotes is not None:
        try:
            qst = Path(quotes).stat()
            qkey = (str(Path(quotes).resolve()), qst.st_size, qst.st_mtime_ns)
        except OSError:
            raise DataError(f"data.quotes={quotes}: no such file") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, repair_key, qkey, float(cycle_s), float(latency_ms),
           max_gap_s, since_ms, until_ms)
    data = _cache.get(key)
    if data is None:
        data = _load(path_text, repair_key, quotes, cycle_s, latency_ms, max_gap_s, since_ms, until_ms)
        _cache[key] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        _log_gaps(path_text, data)
    else:
        _cache.move_to_end(key)
    return data


def _log_gaps(path_text: str, data: MarketData) -> None:
    if not data.gaps:
        return
    from mmrun.record import iso_ms

    shown = ", ".join(f"{_duration(g.length_s)} after {iso_ms(g.start_ms)}" for g in data.gaps[:GAPS_LOGGED])
    more = f" and {len(data.gaps) - GAPS_LOGGED} more" if len(data.gaps) > GAPS_LOGGED else ""
    log.warning("%s: %d gap%s longer than data.max_gap_s=%g: %s%s; the quotes were pulled across each",
                path_text, len(data.gaps), "" if len(data.gaps) == 1 else "s", data.max_gap_s, shown, more)


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.3g} s"


def recorded_market(path_text: str) -> bool:
    """True if the file is a paper run's market recording (ts_ms and last columns), not candles.

    Reads only the column names. A replay of such a file on the simulated exchange quotes on
    that exchange's tick grid again, as the paper run did.
    """
    if Path(path_text).name.lower().endswith((".gz", ".zip")):
        return False  # a recording is written plain; packed files are not unpacked just to ask
    try:
        table = open_table(path_text, check=False)
    except Exception:
        return False  # load_market reports what is wrong with the file
    table.close()
    return table.kind == "market"


def clear_cache() -> None:
    """Forget every loaded file (tests; a long-lived process that rewrites files in place)."""
    _cache.clear()


def _repair_key(repair: Iterable[str]) -> Tuple[str, ...]:
    items = [str(r) for r in (repair or ())]
    for r in items:
        if r not in REPAIRS:
            raise DataError(f"data.repair: {r!r} is not a repair: choose from {', '.join(REPAIRS)}")
    return tuple(r for r in REPAIRS if r in items)


# ---------------------------------------------------------------- reading


class _Source:
    """The file being loaded, for messages: 'data.path=F: row 3 (line 4): ...'.

    index: after data.since/until kept only some rows, index[i] is array row i's row in the file."""

    def __init__(self, table: Table):
        self.table = table
        self.path_text = table.path_text
        self.index: Optional[np.ndarray] = None

    def fail(self, problem: str) -> DataError:
        return self.table.fail(problem)

    def row(self, i: int) -> str:
        """Data row i (0-based, in file order) as the user counts it."""
        return self.table.row(int(self.index[i]) if self.index is not None else i)

    def fail_rows(self, idx: np.ndarray, problem: str, fix: str = "") -> DataError:
        """A problem found at rows idx (0-based, ascending): name the first, count the rest."""
        more = f" (and {len(idx) - 1} more row{'s' if len(idx) > 2 else ''})" if len(idx) > 1 else ""
        return self.fail(f"{self.row(int(idx[0]))}: {problem}{more}{fix}")


_NUMERIC = ("open", "high", "low", "close", "volume", "bid", "ask", "last")


def _frame(table: Table) -> pl.DataFrame:
    """The recognised columns of a candle or market file, under their canonical names.

    CSV cells are read as numbers first (fast); when a cell is not a number the file is read
    again as text, so that the checks can name the row and the cell."""
    cols = dict(table.columns)
    if table.kind == "candles":
        cols["timestamp"] = cols.pop("time")
    wanted = {canon: src for canon, src in cols.items() if canon in CANDLE_COLUMNS + ("bid", "ask") + ROW_FIELDS}
    select = [pl.col(src).alias(canon) for canon, src in wanted.items()]
    try:
        if table.reader == "csv":
            typed = {src: pl.Float64 for canon, src in wanted.items() if canon in _NUMERIC}
            tcol = wanted.get("timestamp") or wanted.get("ts_ms")
            if table.first_row is not None:
                first = table.first_row.get(tcol)
            else:
                head = table.scan(lossy=True).select(pl.col(tcol)).head(1).collect()[tcol]
                first = head[0] if head.len() else None
            if str(first or "").strip().lstrip("-").isdigit():
                typed[tcol] = pl.Int64  # epoch integers: parsed as numbers, not text (a wrong guess reads as text below)
            try:
                df = table.scan(typed).select(select).collect()
            except pl.exceptions.PolarsError:
                df = table.scan(lossy=True).select(select).collect()
        else:
            df = table.scan().select(select).collect()
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else ""
        if table.reader == "csv" and "found more fields" in text.lower() or "fields" in first.lower():
            detail = _ragged_line(table)
            if detail:
                raise table.fail(detail) from None
        raise table.fail(f"unreadable as {table.fmt} ({type(exc).__name__}: {first})") from None
    return _drop_trailing_blank(df)


def _drop_trailing_blank(df: pl.DataFrame) -> pl.DataFrame:
    """Rows at the end that are empty in every column (a CSV ending in blank lines) are not data."""
    if df.height == 0:
        return df
    filled = df.select(pl.any_horizontal(pl.all().is_not_null()).alias("x"))["x"].to_numpy()
    keep = np.flatnonzero(filled)
    n = int(keep[-1]) + 1 if keep.size else 0
    return df.head(n)


def _ragged_line(table: Table) -> Optional[str]:
    """The first CSV line whose field count differs from the first line's (on a read error).

    Lines are read one at a time from a file already checked to hold no line over 1 MB."""
    sep = table.separator
    try:
        with table.open_text() as f:
            header = f.readline()
            width = header.count(sep) + 1
            for line_no, line in enumerate(f, start=2):
                if line.strip() and line.count(sep) + 1 != width:
                    row = line_no - 1 if table.has_header else line_no
                    return (f"row {row} (line {line_no}): {line.count(sep) + 1} fields, "
                            f"the {'header' if table.has_header else 'first line'} has {width}")
    except (OSError, EOFError, zlib.error):
        return None
    return None


# ---------------------------------------------------------------- loading and checks


def _load(path_text: str, repair: Tuple[str, ...], quotes: Optional[str], cycle_s: float, latency_ms: float,
          max_gap_s: Optional[float], since_ms: Optional[int], until_ms: Optional[int]) -> MarketData:
    from mmrun.errors import ConfigError

    table = open_table(path_text, "data.path", ("candles", "trades", "market"))
    name = Path(path_text).name
    try:
        if table.kind == "trades":
            from mmrun.market.ticks import tick_rows

            if repair:
                raise ConfigError(f"data.repair={list(repair)} applies to candle files; data.path={path_text} holds trades "
                                  "(they are aggregated per cycle in time order: sort the file instead)")
            qtable = open_table(quotes, "data.quotes", ("quotes",)) if quotes is not None else None
            try:
                tr = tick_rows(table, qtable, cycle_ms=int(round(cycle_s * 1000)), latency_ms=int(round(latency_ms)),
                               max_gap_s=max_gap_s, since_ms=since_ms, until_ms=until_ms)
            finally:
                if qtable is not None:
                    qtable.close()
            return MarketData(tr.rows, name, table.fmt, "trades", tr.gaps, tr.max_gap_s,
                              qtable.fmt if qtable is not None else "")
        if quotes is not None:
            raise ConfigError(f"data.quotes={quotes} goes with a trades file, but data.path={path_text} holds "
                              f"{'candles' if table.kind == 'candles' else 'a market recording'}: drop data.quotes")
        if table.kind == "candles" and latency_ms > 0:
            raise ConfigError(
                f"fills.latency_ms={latency_ms:g} needs trades: data.path={path_text} holds candles, whose ranges have no "
                "times inside the bar to start a quote's rest from; use a trades file, or fills.latency_ms=0")
        src = _Source(table)
        df = _frame(table)
        if table.kind == "market":
            rows = _load_market(df, src, repair, since_ms, until_ms)
            return MarketData(rows, name, table.fmt, "market")
        rows, gaps, threshold = _load_candles(df, src, repair, since_ms, until_ms, max_gap_s)
        return MarketData(rows, name, table.fmt, "candles", gaps, threshold)
    finally:
        table.close()


def _slice(ts: np.ndarray, df: pl.DataFrame, src: _Source, since_ms, until_ms, what: str):
    """Keep the rows with since <= ts < until (data.since / data.until); row messages keep file rows."""
    if since_ms is None and until_ms is None:
        return ts, df
    keep = np.ones(ts.size, dtype=bool)
    if since_ms is not None:
        keep &= ts >= since_ms
    if until_ms is not None:
        keep &= ts < until_ms
    if not keep.any():
        raise src.fail(f"no {what} in data.since .. data.until (the file covers {_iso(ts.min())} .. {_iso(ts.max())})")
    src.index = np.flatnonzero(keep)
    return ts[keep], df.filter(pl.Series(keep))


def _load_candles(df: pl.DataFrame, src: _Source, repair: Tuple[str, ...], since_ms=None, until_ms=None,
                  max_gap_s: Optional[float] = None):
    cols = {c: c for c in df.columns}
    if df.height == 0:
        raise src.fail("no data rows (only a header)")
    has_quotes = "bid" in cols or "ask" in cols
    if has_quotes and not ("bid" in cols and "ask" in cols):
        raise src.fail("has only one of bid, ask: give both columns or neither (the close then stands for both)")
    ts = _timestamps(df["timestamp"], src)
    ts, df = _slice(ts, df, src, since_ms, until_ms, "candles")
    v = {name: _numbers(df[name], name, src) for name in CANDLE_COLUMNS[1:]}
    if has_quotes:
        v["bid"] = _numbers(df["bid"], "bid", src)
        v["ask"] = _numbers(df["ask"], "ask", src)
    for name in PRICE_COLUMNS:
        if name in v:
            _positive(v[name], name, src)
    _non_negative(v["volume"], "volume", src)
    lo, hi = v["low"], v["high"]
    _check_rows(hi < lo, src, lambda i: f"high {_g(hi[i])} is below low {_g(lo[i])}")
    for name in ("open", "close"):
        x = v[name]
        _check_rows((x < lo) | (x > hi), src, lambda i, x=x, name=name: f"{name} {_g(x[i])} is outside [low, high] = [{_g(lo[i])}, {_g(hi[i])}]")
    if has_quotes:
        b, a = v["bid"], v["ask"]
        _check_rows(b > a, src, lambda i: f"bid {_g(b[i])} is above ask {_g(a[i])} (a crossed book)")
    ts, v = _ordered(ts, v, repair, src)
    if ts.size < 2:
        raise src.fail("only 1 candle: a backtest needs at least 2 (quotes from one candle fill against the next)")
    bar = _bar_ms(ts)
    gaps, threshold = _candle_gaps(ts, bar, max_gap_s)
    close = v["close"]
    bid, ask = v.get("bid", close), v.get("ask", close)
    low, high, volume = v["low"], v["high"], v["volume"]
    if gaps:
        # the candle after a hole: the quotes made before it were pulled, nothing meets them
        after = np.searchsorted(ts, [g.start_ms - bar for g in gaps]) + 1
        low, high, volume = low.copy(), high.copy(), volume.copy()
        low[after] = np.nan
        high[after] = np.nan
        volume[after] = 0.0
    return _rows(ts + bar, bid, ask, close, low, high, volume), gaps, threshold


def _candle_gaps(ts: np.ndarray, bar: int, max_gap_s: Optional[float]):
    """Holes between candles: open times further apart than max_gap_s (default three bars)."""
    from mmrun.market.ticks import Gap

    threshold_ms = 3.0 * bar if max_gap_s is None else float(max_gap_s) * 1000.0
    d = np.diff(ts)
    idx = np.flatnonzero(d > threshold_ms)
    return [Gap(int(ts[i]) + bar, float(d[i] - bar) / 1000.0) for i in idx], threshold_ms / 1000.0


def _ordered(ts: np.ndarray, v: Dict[str, np.ndarray], repair: Tuple[str, ...], src: _Source):
    """Apply the explicitly asked repair (sort, dedupe), then insist on strictly increasing times."""
    order = _repaired_order(ts, repair)
    if order is not None:
        ts = ts[order]
        v = {k: x[order] for k, x in v.items()}
    _check_order(ts, order, src)
    return ts, v


def _load_market(df: pl.DataFrame, src: _Source, repair: Tuple[str, ...], since_ms=None, until_ms=None) -> Rows:
    """A paper run's market.parquet: snapshots; low/high are empty for intervals without trades."""
    if df.height == 0:
        raise src.fail("no data rows")
    ts = _timestamps(df["ts_ms"], src, name="ts_ms")
    ts, df = _slice(ts, df, src, since_ms, until_ms, "rows")
    v = {}
    for name in ROW_FIELDS[1:]:
        # low/high: no trade in the interval leaves them empty, which the fill rule reads as
        # "nothing traded" (NaN compares false); every other value must be there.
        v[name] = _numbers(df[name], name, src, allow_empty=name in ("low", "high"))
    for name in ("bid", "ask", "last", "low", "high"):
        _positive(v[name], name, src, allow_nan=name in ("low", "high"))
    _non_negative(v["volume"], "volume", src)
    lo, hi = v["low"], v["high"]
    _check_rows(hi < lo, src, lambda i: f"high {_g(hi[i])} is below low {_g(lo[i])}")
    b, a = v["bid"], v["ask"]
    _check_rows(b > a, src, lambda i: f"bid {_g(b[i])} is above ask {_g(a[i])} (a crossed book)")
    ts, v = _ordered(ts, v, repair, src)
    return _rows(ts, v["bid"], v["ask"], v["last"], v["low"], v["high"], v["volume"])


def _rows(ts, bid, ask, last, low, high, volume) -> Rows:
    arrays = (ts, bid, ask, last, low, high, volume)
    out = {}
    for name, x in zip(ROW_FIELDS, arrays):
        dtype = np.int64 if name == "ts_ms" else np.float64
        out[name] = np.ascontiguousarray(x, dtype=dtype)
    return out


def _g(x: float) -> str:
    return f"{x:.10g}"


def _check_rows(bad: np.ndarray, src: _Source, problem) -> None:
    idx = np.flatnonzero(bad)
    if idx.size:
        raise src.fail_rows(idx, problem(int(idx[0])))


def _numbers(s: pl.Series, name: str, src: _Source, allow_empty: bool = False) -> np.ndarray:
    """A column as float64; empty, non-numeric, NaN or infinite cells are errors naming the row."""
    if s.dtype == pl.Null:  # a column with no values at all
        s = s.cast(pl.Float64)
    if s.dtype == pl.String:
        text = s.str.strip_chars()
        x = text.cast(pl.Float64, strict=False)
        empty = text.is_null() | (text == "")
        bad = x.is_null() & ~empty
        idx = np.flatnonzero(bad.to_numpy())
        if idx.size:
            raise src.fail_rows(idx, f"{name} is {text[int(idx[0])]!r}, not a number")
        x = x.to_numpy()
        empty = empty.to_numpy()
    elif s.dtype.is_numeric():
        empty = s.is_null().to_numpy()
        x = s.cast(pl.Float64).to_numpy()
    else:
        raise src.fail(f"column {name} holds {s.dtype}, not numbers")
    x = np.array(x, dtype=np.float64)  # a writable copy, nulls as NaN
    if allow_empty:
        x[empty] = np.nan
        return x
    _check_rows(empty, src, lambda i: f"{name} is empty")
    _check_rows(np.isnan(x), src, lambda i: f"{name} is NaN")
    _check_rows(np.isinf(x), src, lambda i: f"{name} is {x[i]} (not finite)")
    return x


def _positive(x: np.ndarray, name: str, src: _Source, allow_nan: bool = False) -> None:
    bad = ~(x > 0) if not allow_nan else (x <= 0) | np.isinf(x)
    _check_rows(bad, src, lambda i: f"{name} {_g(x[i])} is not a positive price")


def _non_negative(x: np.ndarray, name: str, src: _Source) -> None:
    _check_rows(x < 0, src, lambda i: f"{name} {_g(x[i])} is negative")


def _timestamps(s: pl.Series, src: _Source, name: str = "timestamp") -> np.ndarray:
    """A timestamp column as int64 ms since the epoch: epoch integers (s, ms, µs or ns, see
    formats.epoch_unit), ISO-8601 text, or datetimes (naive = UTC)."""
    _check_rows(s.is_null().to_numpy(), src, lambda i: f"{name} is empty")
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("ms"))
    if s.dtype == pl.Datetime:
        if s.dtype.time_zone is None:  # naive datetimes are UTC
            s = s.dt.replace_time_zone("UTC")
        return s.dt.epoch("ms").to_numpy().astype(np.int64)
    if s.dtype == pl.String:
        text = s.str.strip_chars()
        if text.head(1).cast(pl.Int64, strict=False)[0] is not None:  # the first value says which form the column uses
            as_int = text.cast(pl.Int64, strict=False)
            idx = np.flatnonzero(as_int.is_null().to_numpy())
            if idx.size:
                raise src.fail_rows(idx, f"{name} {text[int(idx[0])][:40]!r} is not an epoch time (a whole number) like the rows before")
            return _ms_integers(as_int.to_numpy(), name, src)
        return _iso_ms(text, name, src)
    if s.dtype.is_integer():
        return _ms_integers(s.cast(pl.Int64).to_numpy(), name, src)
    if s.dtype.is_float():
        x = s.to_numpy()
        _check_rows(~np.isfinite(x) | (x != np.floor(x)), src, lambda i: f"{name} {x[i]!r} is not a whole number of epoch units")
        return _ms_integers(x.astype(np.int64), name, src)
    raise src.fail(f"column {name} holds {s.dtype}: give epoch time (s, ms, µs or ns) or ISO-8601 text")


def _ms_integers(ts: np.ndarray, name: str, src: _Source) -> np.ndarray:
    """Epoch integers of the file's unit (s, ms, µs, ns; one unit per file) -> ms."""
    ts = np.asarray(ts, dtype=np.int64)
    unit = epoch_unit(ts, name, src.row, src.fail)
    return to_ms(ts, unit)


_ISO_HEAD = 19  # 'YYYY-MM-DD HH:MM:SS'
_ISO_TAILS = 8  # distinct endings (offsets, fractions) the fixed-width path takes


def _iso_fixed_ms(text: pl.Series) -> Optional[np.ndarray]:
    """ISO-8601 text of one width, 'YYYY-MM-DD[ T]HH:MM:SS' + one of a few endings ('+00:00',
    'Z', '.000-05:00', '' ...: a Yahoo export), as ms; None when the column is not like that.

    The date and time are parsed with an explicit format (no per-row inference: 4x faster than
    str.to_datetime guessing and converting each offset); each distinct ending shifts its rows by
    the same amount, which Polars' general parser gives for the first row's date with that ending,
    so the result is the general parser's, value for value."""
    first = text[0]
    if first is None or len(first) < _ISO_HEAD or first[4] != "-" or first[10] not in "T ":
        return None
    width = text.str.len_bytes()
    if width.min() != width.max():
        return None
    tail = text.str.slice(_ISO_HEAD)
    endings = tail.unique(maintain_order=True)
    if endings.len() > _ISO_TAILS or endings.null_count():
        return None
    fmt = "%Y-%m-%d" + first[10] + "%H:%M:%S"
    head = text.str.slice(0, _ISO_HEAD).str.to_datetime(fmt, time_zone="UTC", strict=False)
    if head.null_count():
        return None
    base = head.dt.epoch("ms")
    samples = pl.Series([first[:_ISO_HEAD] + e for e in endings.to_list()])
    whole = samples.str.to_datetime(time_zone="UTC", strict=False)
    if whole.null_count():
        return None
    shift = whole.dt.epoch("ms") - base[0]
    if endings.len() == 1:
        return (base + shift[0]).to_numpy().astype(np.int64)
    return (base + tail.replace_strict(endings, shift, return_dtype=pl.Int64)).to_numpy().astype(np.int64)


def _iso_ms(text: pl.Series, name: str, src: _Source) -> np.ndarray:
    """ISO-8601 text -> ms. Fixed-width text with a few endings is parsed with an explicit format
    (_iso_fixed_ms); else Polars parses the common case and Python's parser handles mixed forms."""
    fast = _iso_fixed_ms(text)
    if fast is not None:
        return fast
    parsed = text.str.to_datetime(time_zone="UTC", strict=False)
    ms = parsed.dt.epoch("ms").to_numpy()
    todo = np.flatnonzero(parsed.is_null().to_numpy())
    if todo.size == 0:
        return ms.astype(np.int64)
    ms = np.array(ms, dtype=np.float64)
    for i in todo:
        value = text[int(i)]
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        except ValueError:
            raise src.fail(
                f"{src.row(int(i))}: {name} {value[:40]!r} is neither an epoch time nor ISO-8601 "
                "(e.g. 2026-01-01T00:00:00Z)"
            ) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        ms[i] = math.floor(dt.timestamp() * 1000 + 0.5)
    return ms.astype(np.int64)


def _repaired_order(ts: np.ndarray, repair: Tuple[str, ...]) -> Optional[np.ndarray]:
    """Row order after the requested repairs (indices into file order), or None for 'as is'."""
    if not repair:
        return None
    order = np.arange(ts.size)
    if "sort" in repair:
        order = np.argsort(ts, kind="stable")
    if "dedupe" in repair:
        t = ts[order]
        # keep the last row of each run of equal timestamps
        keep = np.ones(t.size, dtype=bool)
        keep[:-1] = t[1:] != t[:-1]
        order = order[keep]
    return order


def _check_order(ts: np.ndarray, order: Optional[np.ndarray], src: _Source) -> None:
    """Timestamps must rise strictly; name the offending row in file order."""
    d = np.diff(ts)
    back = np.flatnonzero(d < 0)
    if back.size or (d == 0).any():
        pos = order if order is not None else np.arange(ts.size)
    if back.size:
        i = int(back[0])
        raise src.fail_rows(
            pos[back + 1],
            f"timestamp {_iso(ts[i + 1])} is earlier than the row before ({_iso(ts[i])})",
            "; the rows must be in time order: sort the file or pass data.repair=[sort]",
        )
    same = np.flatnonzero(d == 0)
    if same.size:
        i = int(same[0])
        raise src.fail_rows(
            pos[same + 1],
            f"timestamp {_iso(ts[i + 1])} repeats the row before",
            "; each timestamp may appear once: pass data.repair=[dedupe] to keep the last of each",
        )


def _iso(ts_ms: int) -> str:
    from mmrun.record import iso_ms

    return iso_ms(int(ts_ms))


def _bar_ms(ts: np.ndarray) -> int:
    """The bar length: the most common spacing of consecutive timestamps (shortest on a tie)."""
    d = np.diff(ts)
    if d.size and 2 * np.count_nonzero(d == d[0]) > d.size:  # a strict majority is the only mode
        return int(d[0])
    spacing, counts = np.unique(d, return_counts=True)
    return int(spacing[np.argmax(counts)])


# ---------------------------------------------------------------- a backtest's data, from config


def backtest_market(cfg, pair: str) -> MarketData:
    """The market rows of a backtest on data: data.path, or what data.kind downloads through ccxt.

    data.since / data.until slice the file; data.quotes, fills.latency_ms, data.max_gap_s and
    intervals.quote_s (the cycle a trades file is replayed at) apply as load_market says.
    Raises ConfigError / DataError (one line).
    """
    from mmrun.market.sim import parse_instant_ms

    d = cfg.data
    path, quotes = d.path, d.quotes
    since = parse_instant_ms(d.since, "data.since") if d.since is not None else None
    until = parse_instant_ms(d.until, "data.until") if d.until is not None else None
    downloaded = path is None
    if downloaded:
        from mmrun.market import download

        if d.kind == "trades":
            path = str(download.download_trades(cfg, pair))
        else:
            path = str(download.download(cfg, pair))
        since = until = None  # the download is the range already
    data = load_market(path, repair=d.repair, quotes=quotes, cycle_s=cfg.intervals.quote_s,
                       latency_ms=float(cfg.fills.latency_ms), max_gap_s=d.max_gap_s, since_ms=since, until_ms=until)
    if downloaded:
        what = "trades" if d.kind == "trades" else f"{d.timeframe} candles"
        data = MarketData(data.rows, cfg.exchange.id, f"ccxt {what}", data.kind, data.gaps, data.max_gap_s)
    if data.kind == "candles" and float(cfg.fills.latency_ms) > 0:
        from mmrun.errors import ConfigError

        raise ConfigError(f"fills.latency_ms={cfg.fills.latency_ms:g} needs trades: candles have no times inside the bar "
                          "to start a quote's rest from; use data.kind=trades or a trades file, or fills.latency_ms=0")
    return data


def summary_labels(cfg, data: Optional[MarketData]) -> Dict[str, object]:
    """What a run's summary says about its data: exchange ('file' for a data file unless an
    exchange is chosen for its fees and rules), data_source (the file's name, or the exchange),
    data_format, gaps (holes that pulled the quotes)."""
    if data is None:  # the simulated exchange, or a live feed
        live = cfg.exchange.id != "sim"
        return {"exchange": cfg.exchange.id, "data_source": cfg.exchange.id,
                "data_format": "exchange public data (ccxt)" if live else "simulated market", "gaps": 0}
    from_file = cfg.data.path is not None
    exchange = "file" if from_file and cfg.exchange.id == "sim" else cfg.exchange.id
    source = data.source if not from_file else Path(cfg.data.path).name
    if from_file and cfg.data.quotes is not None:
        source += f" + {Path(cfg.data.quotes).name}"
    return {"exchange": exchange, "data_source": source, "data_format": data.label, "gaps": len(data.gaps)}


def grid_from_data(data: MarketData, cfg=None) -> Tuple[float, float]:
    """(tick, lot) of a data file: data.tick / data.lot when set; else, for trades, the finest
    decimal step of the prices and of the amounts (10 ** -digits, at most 10 digits; 0 = none
    found); candles and market recordings: 0 (no grid; a recording's market.json rules apply)."""
    tick = getattr(cfg.data, "tick", None) if cfg is not None else None
    lot = getattr(cfg.data, "lot", None) if cfg is not None else None
    if data.kind == "trades":
        r = data.rows
        prices = np.concatenate([r["bid"][:10000], r["ask"][:10000], r["low"][:10000], r["high"][:10000]])
        tick = tick if tick is not None else decimal_step(prices)
    return float(tick or 0.0), float(lot or 0.0)


def decimal_step(values: np.ndarray, max_digits: int = 10) -> float:
    """The coarsest 10 ** -d (d = 0..max_digits) on which every finite value lies; 0 if none does."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    for d in range(max_digits + 1):
        scaled = x * 10.0 ** d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled)) * 1e-3):
            return 10.0 ** -d
    return 0.0
