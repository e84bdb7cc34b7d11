"""Market history from files: candles (CSV or Parquet) or a paper run's market.parquet, as rows.

A candle file has the columns timestamp, open, high, low, close, volume (names
case-insensitive, other columns ignored) and optionally bid and ask. timestamp is either
milliseconds since the epoch (ccxt's OHLCV layout) or ISO-8601 text ('2026-01-01T00:00:00Z';
without an offset it is UTC).

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

Loaded rows are cached per process, keyed by (path, size, mtime, repair), so a sweep worker that
runs many jobs on one file reads and checks it once. The cached arrays are shared: treat them as
read-only.
"""

from __future__ import annotations

import csv
import math
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import polars as pl

from mmrun.errors import DataError
from mmrun.market import ROW_FIELDS

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
REPAIRS = ("sort", "dedupe")
PRICE_COLUMNS = ("open", "high", "low", "close", "bid", "ask")
# Integer timestamps that all fall in this band are seconds, not milliseconds: as seconds they
# are 1973..5138, as milliseconds the first three days of 1973.
_SECONDS_BAND = (1e8, 1e11)
_CACHE_SIZE = 4

Rows = Dict[str, np.ndarray]
_cache: "OrderedDict[tuple, Rows]" = OrderedDict()


def load_rows(path_text: str, repair: Iterable[str] = ()) -> Rows:
    """Market rows (ROW_FIELDS arrays: ts_ms int64, the rest float64) from a history file.

    Candle files: bid and ask are the file's bid/ask columns if present, else the close; last
    is the close; ts_ms is the candle's close time (see the module docstring). A paper run's
    market.parquet (columns ts_ms, bid, ask, last, low, high, volume) is taken as recorded.
    repair: a subset of REPAIRS applied before the order checks. Raises DataError.
    """
    repair_key = _repair_key(repair)
    path = Path(path_text)
    try:
        st = path.stat()
    except OSError:
        raise DataError(f"data.path={path_text}: no such file") from None
    if not path.is_file():
        raise DataError(f"data.path={path_text}: not a file")
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, repair_key)
    rows = _cache.get(key)
    if rows is None:
        rows = _load(path_text, path, repair_key)
        _cache[key] = rows
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    else:
        _cache.move_to_end(key)
    return dict(rows)


def recorded_market(path_text: str) -> bool:
    """True if the file is a paper run's market recording (ts_ms and last columns), not candles.

    Reads only the column names. A replay of such a file on the simulated exchange quotes on
    that exchange's tick grid again, as the paper run did.
    """
    path = Path(path_text)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            names = list(pl.read_parquet_schema(path))
        else:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                names = next(csv.reader(f), [])
    except Exception:
        return False  # load_rows reports what is wrong with the file
    low = {n.strip().lower() for n in names}
    return "ts_ms" in low and "last" in low


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
    """The file being loaded, for messages: 'data.path=F: row 3 (line 4): ...'."""

    def __init__(self, path_text: str, is_csv: bool):
        self.path_text = path_text
        self.is_csv = is_csv

    def fail(self, problem: str) -> DataError:
        return DataError(f"data.path={self.path_text}: {problem}")

    def row(self, i: int) -> str:
        """Data row i (0-based, in file order) as the user counts it."""
        return f"row {i + 1} (line {i + 2})" if self.is_csv else f"row {i + 1}"

    def fail_rows(self, idx: np.ndarray, problem: str, fix: str = "") -> DataError:
        """A problem found at rows idx (0-based, ascending): name the first, count the rest."""
        more = f" (and {len(idx) - 1} more row{'s' if len(idx) > 2 else ''})" if len(idx) > 1 else ""
        return self.fail(f"{self.row(int(idx[0]))}: {problem}{more}{fix}")


def _read(path_text: str, path: Path) -> Tuple[pl.DataFrame, _Source]:
    is_parquet = path.suffix.lower() in (".parquet", ".pq")
    src = _Source(path_text, not is_parquet)
    if path.stat().st_size == 0:
        raise src.fail("empty file")
    try:
        if is_parquet:
            df = pl.read_parquet(path)
        else:
            # Everything as text first, so that a bad cell is reported with its row
            # instead of turning a whole column into strings or failing mid-file.
            df = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.NoDataError:
        raise src.fail("empty file") from None
    except Exception as exc:
        detail = _ragged_line(path) if not is_parquet else None
        if detail:
            raise src.fail(detail) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = "Parquet" if is_parquet else "CSV"
        raise src.fail(f"unreadable as {kind} ({type(exc).__name__}: {first})") from None
    return df, src


def _ragged_line(path: Path) -> Optional[str]:
    """The first CSV line whose field count differs from the header's (only on a read error)."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return None
            for line_no, fields in enumerate(reader, start=2):
                if fields and len(fields) != len(header):
                    return (
                        f"row {line_no - 1} (line {line_no}): {len(fields)} fields, "
                        f"the header has {len(header)}"
                    )
    except OSError:
        return None
    return None


def _columns(df: pl.DataFrame, src: _Source) -> Dict[str, str]:
    """Lower-case name -> the file's column name; a name present twice is an error."""
    out: Dict[str, str] = {}
    for name in df.columns:
        low = name.strip().lower()
        if low in out:
            raise src.fail(f"columns {out[low]!r} and {name!r} are the same name (names are case-insensitive)")
        out[low] = name
    return out


# ---------------------------------------------------------------- loading and checks


def _load(path_text: str, path: Path, repair: Tuple[str, ...]) -> Rows:
    df, src = _read(path_text, path)
    cols = _columns(df, src)
    if "ts_ms" in cols and "last" in cols:
        return _load_market(df, cols, src, repair)
    return _load_candles(df, cols, src, repair)


def _load_candles(df: pl.DataFrame, cols: Dict[str, str], src: _Source, repair: Tuple[str, ...]) -> Rows:
    missing = [c for c in CANDLE_COLUMNS if c not in cols]
    if missing:
        found = ", ".join(df.columns) if df.columns else "none"
        raise src.fail(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: a candle file needs "
            f"{', '.join(CANDLE_COLUMNS)} (bid, ask optional; or a paper run's market.parquet); found {found}"
        )
    if df.height == 0:
        raise src.fail("no data rows (only a header)")
    has_quotes = "bid" in cols or "ask" in cols
    if has_quotes and not ("bid" in cols and "ask" in cols):
        raise src.fail("has only one of bid, ask: give both columns or neither (the close then stands for both)")
    ts = _timestamps(df[cols["timestamp"]], src)
    v = {name: _numbers(df[cols[name]], name, src) for name in CANDLE_COLUMNS[1:] if name in cols}
    if has_quotes:
        v["bid"] = _numbers(df[cols["bid"]], "bid", src)
        v["ask"] = _numbers(df[cols["ask"]], "ask", src)
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
    ts = ts + _bar_ms(ts)
    close = v["close"]
    return _rows(ts, v.get("bid", close), v.get("ask", close), close, v["low"], v["high"], v["volume"])


def _ordered(ts: np.ndarray, v: Dict[str, np.ndarray], repair: Tuple[str, ...], src: _Source):
    """Apply the explicitly asked repair (sort, dedupe), then insist on strictly increasing times."""
    order = _repaired_order(ts, repair)
    if order is not None:
        ts = ts[order]
        v = {k: x[order] for k, x in v.items()}
    _check_order(ts, order, src)
    return ts, v


def _load_market(df: pl.DataFrame, cols: Dict[str, str], src: _Source, repair: Tuple[str, ...]) -> Rows:
    """A paper run's market.parquet: snapshots; low/high are empty for intervals without trades."""
    missing = [c for c in ROW_FIELDS if c not in cols]
    if missing:
        raise src.fail(f"a market file (it has ts_ms and last) needs columns {', '.join(ROW_FIELDS)}; missing {', '.join(missing)}")
    if df.height == 0:
        raise src.fail("no data rows")
    ts = _timestamps(df[cols["ts_ms"]], src, name="ts_ms")
    v = {}
    for name in ROW_FIELDS[1:]:
        # low/high: no trade in the interval leaves them empty, which the fill rule reads as
        # "nothing traded" (NaN compares false); every other value must be there.
        v[name] = _numbers(df[cols[name]], name, src, allow_empty=name in ("low", "high"))
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
    """A timestamp column as int64 ms since the epoch (ms integers, ISO-8601 text, or datetimes)."""
    _check_rows(s.is_null().to_numpy(), src, lambda i: f"{name} is empty")
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("ms"))
    if s.dtype == pl.Datetime:
        if s.dtype.time_zone is None:  # naive datetimes are UTC
            s = s.dt.replace_time_zone("UTC")
        return s.dt.epoch("ms").to_numpy().astype(np.int64)
    if s.dtype == pl.String:
        text = s.str.strip_chars()
        as_int = text.cast(pl.Int64, strict=False)
        if as_int[0] is not None:  # the first value says which form the column uses
            idx = np.flatnonzero(as_int.is_null().to_numpy())
            if idx.size:
                raise src.fail_rows(idx, f"{name} {text[int(idx[0])]!r} is not milliseconds since the epoch like the rows before")
            return _ms_integers(as_int.to_numpy(), name, src)
        return _iso_ms(text, name, src)
    if s.dtype.is_integer():
        return _ms_integers(s.cast(pl.Int64).to_numpy(), name, src)
    if s.dtype.is_float():
        x = s.to_numpy()
        _check_rows(~np.isfinite(x) | (x != np.floor(x)), src, lambda i: f"{name} {x[i]!r} is not a whole number of milliseconds")
        return _ms_integers(x.astype(np.int64), name, src)
    raise src.fail(f"column {name} holds {s.dtype}: give milliseconds since the epoch or ISO-8601 text")


def _ms_integers(ts: np.ndarray, name: str, src: _Source) -> np.ndarray:
    ts = np.asarray(ts, dtype=np.int64)
    lo, hi = _SECONDS_BAND
    if ts.size and ts.min() >= lo and ts.max() < hi:
        raise src.fail(
            f"{name} values look like seconds since the epoch ({int(ts[0])} = "
            f"{datetime.fromtimestamp(int(ts[0]), tz=timezone.utc):%Y-%m-%d}); give milliseconds (ccxt's layout)"
        )
    return ts


def _iso_ms(text: pl.Series, name: str, src: _Source) -> np.ndarray:
    """ISO-8601 text -> ms. Polars parses the common case; Python's parser handles mixed forms."""
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
                f"{src.row(int(i))}: {name} {value!r} is neither milliseconds since the epoch nor ISO-8601 "
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
    spacing, counts = np.unique(np.diff(ts), return_counts=True)
    return int(spacing[np.argmax(counts)])
