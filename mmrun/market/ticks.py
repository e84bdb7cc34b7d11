"""Tick data -> market rows: trades (and an optional top-of-book file) replayed at the quote cycle.

The cycles sit on a grid of `cycle_ms` from the epoch. The row at T = (k + 1) x cycle holds
(mmrun.market.ROW_FIELDS, the shape a paper run records):
- bid, ask: the book at T, i.e. the last top-of-book update before T (data.quotes); without a
  quotes file, the last seller-initiated trade's price (bid) and the last buyer-initiated one's
  (ask), or the last trade's price for both when the trades carry no side or those two cross;
- last: the price of the last trade before T (file order among trades of one timestamp);
- low, high, volume: the trades in [T - cycle + latency, T): what can meet the quotes placed at
  the cycle's start, which rest only from latency_ms after it (fills.latency_ms). No trade:
  NaN, NaN, 0.
Everything in [T - cycle, T) is known at T: a trade or quote exactly at T belongs to the next row.

Gaps: when no trade or quote arrives for longer than max_gap (data.max_gap_s; by default three
times the larger of the cycle and the mean spacing of the events), the market maker was blind:
the cycles inside the hole are skipped and the first row after it carries no trades, so the
quotes made before the hole fill nothing after it.

Streaming: the file is read in batches (Polars' lazy scan, in file order) and reduced to one
aggregate per cycle with numpy, so memory grows with the number of cycles, not of trades.
Timestamps must not decrease (exchanges write them in order); a file that is not sorted is
refused naming the first row out of order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import polars as pl

from mmrun.market.formats import TO_US, UNITS, Table, unit_class

log = logging.getLogger("mmrun")

_BUY = ["buy", "Buy", "BUY", "b", "B", "1"]
_SELL = ["sell", "Sell", "SELL", "s", "S", "-1"]
_TRUE = ["true", "True", "TRUE", "1"]
_FALSE = ["false", "False", "FALSE", "0"]
MAX_ROWS = 200_000_000  # cycles one replay may have (about 23 days at 10 ms): beyond, refuse
GAP_FACTOR = 3.0


@dataclass
class Gap:
    """A hole in the data: the last event before it (ms since the epoch) and its length (s)."""

    start_ms: int
    length_s: float


@dataclass
class TickRows:
    """Rows built from ticks (ROW_FIELDS arrays), the holes found, and what was read."""

    rows: Dict[str, np.ndarray]
    gaps: List[Gap] = field(default_factory=list)
    trades: int = 0
    quotes: int = 0
    max_gap_s: float = 0.0


# ---------------------------------------------------------------- reading batches


def _time_kind(table: Table, col: str) -> Tuple[str, Optional[pl.DataType]]:
    """How the time column is written: 'int', 'float', 'datetime' or 'text' (from the first row)."""
    first = table.scan(lossy=True).select(pl.col(col)).head(1).collect()
    if first.height == 0:
        raise table.fail("no data rows")
    dtype = first.schema[col]
    if dtype == pl.Datetime or dtype == pl.Date:
        return "datetime", None
    if dtype.is_integer():
        return "int", None
    if dtype.is_float():
        return "float", None
    text = str(first[col][0] or "").strip()
    try:
        int(text)
        return "int", pl.Int64
    except ValueError:
        pass
    try:
        float(text)
        return "float", pl.Float64
    except ValueError:
        return "text", None


def _batches(table: Table, wanted: Dict[str, str], floats: Tuple[str, ...]):
    """Yield (row offset, DataFrame of the canonical columns) in file order.

    wanted: canonical name -> the file's column; floats: canonical names read as Float64.
    time is returned as int64 µs since the epoch ('ts'); side (if any) as int8 +1/-1/0.
    """
    tcol = wanted["time"]
    kind, time_type = _time_kind(table, tcol)
    schema = {wanted[c]: pl.Float64 for c in floats} if table.reader == "csv" else None
    if schema is not None and time_type is not None:
        schema[tcol] = time_type
    lf = table.scan(schema)
    exprs = []
    t = pl.col(tcol)
    if kind == "datetime":
        exprs.append(t.cast(pl.Datetime("us")).dt.epoch("us").alias("t_raw"))
    elif kind == "text":
        exprs.append(t.str.strip_chars().str.to_datetime(time_zone="UTC", strict=False).dt.epoch("us").alias("t_raw"))
    elif kind == "float":
        exprs.append(t.cast(pl.Float64).alias("t_raw"))
    else:
        exprs.append(t.cast(pl.Int64).alias("t_raw"))
    for c in floats:
        exprs.append(pl.col(wanted[c]).cast(pl.Float64).alias(c))
    # exact spellings, not a lower-casing of every cell: that would cost more than the parse
    if "side" in wanted:
        s = pl.col(wanted["side"]).cast(pl.String)
        exprs.append(pl.when(s.is_in(_BUY)).then(1).when(s.is_in(_SELL)).then(-1).otherwise(0).cast(pl.Int8).alias("side"))
    elif "buyer_maker" in wanted:
        s = pl.col(wanted["buyer_maker"]).cast(pl.String)
        # the buyer rested on the book: the seller took it, a seller-initiated trade at the bid
        exprs.append(pl.when(s.is_in(_TRUE)).then(-1).when(s.is_in(_FALSE)).then(1).otherwise(0).cast(pl.Int8).alias("side"))
    lf = lf.select(exprs)
    offset = 0
    try:
        for df in lf.collect_batches():
            yield offset, kind, df
            offset += df.height
    except pl.exceptions.PolarsError as exc:
        raise _parse_error(table, wanted, floats, exc) from None


def _parse_error(table: Table, wanted, floats, exc: Exception):
    """A cell Polars could not read as a number: find its row in a text scan for the message."""
    try:
        lf = table.scan(lossy=True).with_row_index("_row")
        for c in floats + ("time",):
            col = pl.col(wanted[c]).cast(pl.String).str.strip_chars()
            as_num = col.cast(pl.Float64, strict=False)
            hit = lf.filter(as_num.is_null() & col.is_not_null() & (col != "")).select("_row", col.alias("v")).head(1).collect()
            if hit.height and c != "time":
                return table.fail(f"{table.row(int(hit['_row'][0]))}: {c} is {str(hit['v'][0])[:40]!r}, not a number")
    except Exception:
        pass
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return table.fail(f"unreadable ({type(exc).__name__}: {msg})")


def _to_us(raw: np.ndarray, kind: str, state: dict, table: Table, offset: int, name: str) -> np.ndarray:
    """The batch's time column -> int64 µs, checking the unit stays the file's (epoch_unit's rule)."""
    if kind in ("datetime", "text"):
        return raw.astype(np.int64)
    x = raw.astype(np.float64)
    if state.get("unit") is None:
        v0 = float(x[0])
        state["small"] = abs(v0) < 1e8
        state["cls"] = int(unit_class(np.array([v0]))[0])
        state["unit"] = "ms" if state["small"] else UNITS[state["cls"]]
    if not state["small"]:
        cls = unit_class(x)
        bad = np.flatnonzero(cls != state["cls"])
        if bad.size:
            i = int(bad[0])
            raise table.fail(
                f"{table.row(offset + i)}: {name} {raw[i]} is in {UNITS[cls[i]]} but the rows before are in "
                f"{state['unit']} since the epoch: a file must keep one unit (split it, or convert it)")
    unit = state["unit"]
    if kind == "float":
        scale = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}[unit]
        return np.floor(x * scale + 0.5).astype(np.int64)
    v = raw.astype(np.int64)
    mult = TO_US[unit]
    return v // 1000 if mult is None else v * mult


# ---------------------------------------------------------------- per-cycle aggregation


class _Buckets:
    """Per-cycle aggregates of a stream in time order, merged across batches."""

    def __init__(self, names: Tuple[str, ...]):
        self.names = names
        self.parts: List[Dict[str, np.ndarray]] = []
        self.count = 0
        self.first_ts: Optional[int] = None
        self.last_ts: Optional[int] = None

    def add(self, part: Dict[str, np.ndarray]) -> None:
        if self.parts and part["k"].size:
            prev = self.parts[-1]
            if prev["k"].size and prev["k"][-1] == part["k"][0]:
                self._merge(prev, part)
        if part["k"].size:
            self.parts.append(part)

    def _merge(self, prev, part) -> None:
        """The batch starts inside the previous batch's last cycle: fold that cycle into it."""
        j = prev["k"].size - 1
        for name, how in self.names:
            a, b = prev[name][j], part[name][0]
            if how == "min":
                part[name][0] = b if np.isnan(a) else (a if np.isnan(b) else min(a, b))
            elif how == "max":
                part[name][0] = b if np.isnan(a) else (a if np.isnan(b) else max(a, b))
            elif how == "sum":
                part[name][0] = a + b
            elif how == "first":
                part[name][0] = a
            elif how == "last":
                part[name][0] = a if np.isnan(b) else b
        for name in prev:
            prev[name] = prev[name][:j]

    def result(self) -> Dict[str, np.ndarray]:
        keys = ["k"] + [n for n, _ in self.names]
        if not self.parts:
            return {k: np.empty(0) for k in keys}
        return {k: np.concatenate([p[k] for p in self.parts]) for k in keys}


def _last_where(mask: np.ndarray, values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per segment [starts[j], ends[j]], the value at the last position where mask holds; NaN if none."""
    if not mask.any():
        return np.full(starts.size, np.nan)
    idx = np.where(mask, np.arange(mask.size, dtype=np.int64), np.int64(-1))
    np.maximum.accumulate(idx, out=idx)
    at = idx[ends]
    out = np.full(starts.size, np.nan)
    has = at >= starts
    out[has] = values[at[has]]
    return out


class _Order:
    """Checks that timestamps never go back, across batches."""

    def __init__(self, table: Table, name: str):
        self.table, self.name, self.prev = table, name, None

    def check(self, ts: np.ndarray, offset: int, keep: np.ndarray) -> None:
        t = ts[keep]
        if not t.size:
            return
        back = np.flatnonzero(np.diff(t) < 0)
        pos = np.flatnonzero(keep)
        if self.prev is not None and t[0] < self.prev:
            i = int(pos[0])
        elif back.size:
            i = int(pos[back[0] + 1])
        else:
            self.prev = int(t[-1])
            return
        from mmrun.record import iso_ms

        raise self.table.fail(f"{self.table.row(offset + i)}: {self.name} {iso_ms(int(ts[i]) // 1000)} is earlier than the "
                              "row before: a trades or quotes file must be in time order")


def _blank_rows(table: Any, offset: int, raw: Any, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rows of a batch that are blank lines (a CSV ending in empty lines reads them as rows of
    nothing: no time and both values NaN), to skip. Raises the table's DataError naming the first
    row with values but no readable time."""
    no_time = raw.is_null().to_numpy()
    blank = no_time & np.isnan(x) & np.isnan(y)
    null_t = no_time & ~blank
    if null_t.any():
        raise table.fail(f"{table.row(offset + int(np.flatnonzero(null_t)[0]))}: timestamp is empty or not a time")
    return blank


def _aggregate_trades(table: Table, cycle_us: int, latency_us: int, since_us, until_us) -> Tuple[_Buckets, int]:
    wanted = {"time": table.columns["time"], "price": table.columns["price"], "amount": table.columns["amount"]}
    for c in ("side", "buyer_maker"):
        if c in table.columns:
            wanted[c] = table.columns[c]
            break
    names = (("low", "min"), ("high", "max"), ("volume", "sum"), ("last", "last"), ("last_buy", "last"),
             ("last_sell", "last"), ("tmin", "first"), ("tmax", "last"))
    b = _Buckets(names)
    state: dict = {}
    order = _Order(table, "timestamp")
    n = 0
    pending = None  # the trades of the last cycle seen so far: (ts, price, amount, side)
    for offset, kind, df in _batches(table, wanted, ("price", "amount")):
        raw = df["t_raw"]
        price = df["price"].to_numpy().astype(np.float64, copy=False)
        amount = df["amount"].to_numpy().astype(np.float64, copy=False)
        blank = _blank_rows(table, offset, raw, price, amount)
        keep = ~blank
        if not keep.any():
            continue
        ts = _kept_times_us(raw, keep, kind, state, table, offset)
        _require_positive(table, offset, keep, (("price", price), ("amount", amount)), "number")
        order.check(ts, offset, keep)
        if since_us is not None:
            keep &= ts >= since_us
        if until_us is not None:
            past = ts >= until_us
            keep &= ~past
        if keep.any():
            sel = np.flatnonzero(keep)
            ts_k, p_k, a_k = ts[sel], price[sel], amount[sel]
            side_k = df["side"].to_numpy()[sel] if "side" in df.columns else np.zeros(sel.size, np.int8)
            n += sel.size
            if b.first_ts is None:
                b.first_ts = int(ts_k[0])
            b.last_ts = int(ts_k[-1])
            # The batch's last cycle may go on in the next batch: hold its trades back and
            # aggregate each cycle from all its trades at once, so that the sums do not depend
            # on where the reader split the file (float addition is not associative).
            if pending is not None:
                ts_k, p_k, a_k, side_k = (np.concatenate((x, y)) for x, y in zip(pending, (ts_k, p_k, a_k, side_k)))
            k_last = ts_k[-1] // cycle_us
            cut = int(np.searchsorted(ts_k, k_last * cycle_us))
            if cut:
                b.add(_trade_part(ts_k[:cut], p_k[:cut], a_k[:cut], side_k[:cut], cycle_us, latency_us))
            pending = (ts_k[cut:], p_k[cut:], a_k[cut:], side_k[cut:])
        if until_us is not None and past.any() and keep.sum() == 0 and ts[-1] >= until_us:
            break  # sorted: nothing later is in range
    if pending is not None:
        b.add(_trade_part(*pending, cycle_us, latency_us))
    b.count = n
    return b, n


def _kept_times_us(raw: Any, keep: np.ndarray, kind: str, state: dict, table: Table, offset: int) -> np.ndarray:
    """A batch's timestamps in µs (raw: its timestamp column; keep: the rows that are not blank)."""
    rawn = raw.fill_null(0).to_numpy()
    return _to_us(rawn, kind, state, table, offset, "timestamp") if keep.all() else _masked_us(rawn, keep, kind, state, table, offset)


def _require_positive(table: Table, offset: int, keep: np.ndarray, columns: Any, noun: str) -> None:
    """Fail naming the first kept row whose value in one of columns [(name, array)] is missing or
    not a positive finite number ('... not a positive <noun>'). Raises the table's DataError."""
    for name, x in columns:
        bad = keep & ~((x > 0) & np.isfinite(x))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "empty" if np.isnan(x[i]) else f"{x[i]:.10g}, not a positive {noun}"
            raise table.fail(f"{table.row(offset + i)}: {name} is {what}")


def _masked_us(rawn, keep, kind, state, table, offset) -> np.ndarray:
    out = np.zeros(rawn.size, dtype=np.int64)
    idx = np.flatnonzero(keep)
    out[idx] = _to_us(rawn[idx], kind, state, table, offset, "timestamp")
    return out


def _trade_part(ts, price, amount, side, cycle_us: int, latency_us: int) -> Dict[str, np.ndarray]:
    k = ts // cycle_us
    starts = np.concatenate(([0], np.flatnonzero(np.diff(k)) + 1))
    ends = np.concatenate((starts[1:], [k.size])) - 1
    ok = (ts - k * cycle_us) >= latency_us  # rests from the cycle's start + latency
    low = np.minimum.reduceat(np.where(ok, price, np.inf), starts)
    high = np.maximum.reduceat(np.where(ok, price, -np.inf), starts)
    vol = np.add.reduceat(np.where(ok, amount, 0.0), starts)
    low[np.isinf(low)] = np.nan
    high[np.isinf(high)] = np.nan
    return {
        "k": k[starts],
        "low": low,
        "high": high,
        "volume": vol,
        "last": price[ends].astype(np.float64),
        "last_buy": _last_where(side > 0, price, starts, ends),
        "last_sell": _last_where(side < 0, price, starts, ends),
        "tmin": ts[starts].astype(np.float64),
        "tmax": ts[ends].astype(np.float64),
    }


def _aggregate_quotes(table: Table, cycle_us: int, since_us, until_us) -> Tuple[_Buckets, int]:
    wanted = {"time": table.columns["time"], "bid": table.columns["bid"], "ask": table.columns["ask"]}
    b = _Buckets((("bid", "last"), ("ask", "last"), ("tmin", "first"), ("tmax", "last")))
    state: dict = {}
    order = _Order(table, "timestamp")
    n = 0
    for offset, kind, df in _batches(table, wanted, ("bid", "ask")):
        raw = df["t_raw"]
        bid = df["bid"].to_numpy().astype(np.float64, copy=False)
        ask = df["ask"].to_numpy().astype(np.float64, copy=False)
        blank = _blank_rows(table, offset, raw, bid, ask)
        keep = ~blank
        if not keep.any():
            continue
        ts = _kept_times_us(raw, keep, kind, state, table, offset)
        _require_positive(table, offset, keep, (("bid", bid), ("ask", ask)), "price")
        crossed = keep & (bid > ask)
        if crossed.any():
            i = int(np.flatnonzero(crossed)[0])
            raise table.fail(f"{table.row(offset + i)}: bid {bid[i]:.10g} is above ask {ask[i]:.10g} (a crossed book)")
        order.check(ts, offset, keep)
        if since_us is not None:
            keep &= ts >= since_us
        if until_us is not None:
            keep &= ts < until_us
        if keep.any():
            sel = np.flatnonzero(keep)
            t = ts[sel]
            k = t // cycle_us
            starts = np.concatenate(([0], np.flatnonzero(np.diff(k)) + 1))
            ends = np.concatenate((starts[1:], [k.size])) - 1
            b.add({"k": k[starts], "bid": bid[sel][ends], "ask": ask[sel][ends],
                   "tmin": t[starts].astype(np.float64), "tmax": t[ends].astype(np.float64)})
            n += sel.size
            if b.first_ts is None:
                b.first_ts = int(t[0])
            b.last_ts = int(t[-1])
        elif until_us is not None and ts[-1] >= until_us:
            break
    b.count = n
    return b, n


# ---------------------------------------------------------------- rows


def _ffill(values: np.ndarray) -> np.ndarray:
    """Carry the last non-NaN value forward (leading NaNs stay)."""
    idx = np.where(~np.isnan(values), np.arange(values.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = values[idx]
    return out


def tick_rows(trades: Table, quotes: Optional[Table], cycle_ms: int, latency_ms: int = 0,
              max_gap_s: Optional[float] = None, since_ms: Optional[int] = None,
              until_ms: Optional[int] = None) -> TickRows:
    """Market rows (ROW_FIELDS, one per cycle of cycle_ms) from a trades file and an optional quotes file.

    latency_ms: a quote placed at a cycle's start meets only the trades from latency_ms after it
    (0 <= latency_ms < cycle_ms). max_gap_s: a longer hole without events pulls the quotes (None:
    three times the larger of the cycle and the mean spacing of the events). since_ms/until_ms:
    only events in [since, until). Raises DataError naming the file and row.
    """
    cycle_us, lat_us = int(cycle_ms) * 1000, int(latency_ms) * 1000
    since_us = None if since_ms is None else int(since_ms) * 1000
    until_us = None if until_ms is None else int(until_ms) * 1000
    tb, n_trades = _aggregate_trades(trades, cycle_us, lat_us, since_us, until_us)
    if n_trades == 0:
        raise trades.fail("no trades" + (" in data.since .. data.until" if since_ms or until_ms else ""))
    t = tb.result()
    q = None
    n_quotes = 0
    if quotes is not None:
        qb, n_quotes = _aggregate_quotes(quotes, cycle_us, since_us, until_us)
        if n_quotes == 0:
            raise quotes.fail("no quotes" + (" in data.since .. data.until" if since_ms or until_ms else ""))
        q = qb.result()
    # the cycles both files cover
    k_lo, k_hi = int(t["k"][0]), int(t["k"][-1])
    if q is not None:
        k_lo, k_hi = max(k_lo, int(q["k"][0])), min(k_hi, int(q["k"][-1]))
        if k_lo > k_hi:
            raise quotes.fail("covers no time the trades file covers (their times do not overlap)")
    # events: trades and quotes together, per cycle (for the holes)
    ek = t["k"] if q is None else np.union1d(t["k"], q["k"])
    emin = _per_cycle(ek, [(t["k"], t["tmin"])] + ([(q["k"], q["tmin"])] if q is not None else []), np.fmin)
    emax = _per_cycle(ek, [(t["k"], t["tmax"])] + ([(q["k"], q["tmax"])] if q is not None else []), np.fmax)
    inside = (ek >= k_lo) & (ek <= k_hi)
    ek, emin, emax = ek[inside], emin[inside], emax[inside]
    n_events = n_trades + n_quotes
    span_us = (max(tb.last_ts, qb.last_ts if q is not None else tb.last_ts)
               - min(tb.first_ts, qb.first_ts if q is not None else tb.first_ts))
    if max_gap_s is None:
        mean_us = span_us / max(n_events - 1, 1)
        max_gap_us = GAP_FACTOR * max(cycle_us, mean_us)
    else:
        max_gap_us = float(max_gap_s) * 1e6
    hole = np.zeros(ek.size, dtype=bool)
    hole[1:] = (emin[1:] - emax[:-1]) > max_gap_us
    gaps = [Gap(int(emax[i - 1]) // 1000, float(emin[i] - emax[i - 1]) / 1e6) for i in np.flatnonzero(hole)]
    # rows: each run of cycles between holes, every cycle in it
    seg_start = np.concatenate(([0], np.flatnonzero(hole)))
    seg_end = np.concatenate((np.flatnonzero(hole) - 1, [ek.size - 1]))
    lens = ek[seg_end] - ek[seg_start] + 1
    total = int(lens.sum())
    if total > MAX_ROWS:
        raise trades.fail(f"{total:,} cycles of {cycle_ms} ms: more than {MAX_ROWS:,}; raise intervals.quote_s or slice "
                          "the file with data.since / data.until")
    ks = np.concatenate([np.arange(ek[a], ek[b] + 1) for a, b in zip(seg_start, seg_end)]).astype(np.int64)
    first_after_hole = np.zeros(total, dtype=bool)
    first_after_hole[np.cumsum(lens)[:-1]] = True
    rows_n = ks.size

    def place(src_k: np.ndarray, values: np.ndarray, fill: float) -> np.ndarray:
        out = np.full(rows_n, fill)
        pos = np.searchsorted(ks, src_k)
        hit = (pos < rows_n) & (ks[np.minimum(pos, rows_n - 1)] == src_k)
        out[pos[hit]] = values[hit]
        return out

    low = place(t["k"], t["low"], np.nan)
    high = place(t["k"], t["high"], np.nan)
    volume = place(t["k"], t["volume"], 0.0)
    # last, book: carried from every earlier cycle, including those before the covered span
    last = _carry(t["k"], t["last"], ks)
    if q is not None:
        bid, ask = _carry(q["k"], q["bid"], ks), _carry(q["k"], q["ask"], ks)
        last = np.where(np.isnan(last), (bid + ask) / 2.0, last)
    else:
        bid, ask = _carry(t["k"], t["last_sell"], ks), _carry(t["k"], t["last_buy"], ks)
        bad = np.isnan(bid) | np.isnan(ask) | (bid > ask)
        bid = np.where(bad, last, bid)
        ask = np.where(bad, last, ask)
    low[first_after_hole] = np.nan
    high[first_after_hole] = np.nan
    volume[first_after_hole] = 0.0
    ts_ms = ((ks + 1) * cycle_us) // 1000
    rows = {"ts_ms": ts_ms.astype(np.int64), "bid": bid, "ask": ask, "last": last, "low": low, "high": high,
            "volume": volume}
    return TickRows(rows=rows, gaps=gaps, trades=n_trades, quotes=n_quotes, max_gap_s=max_gap_us / 1e6)


def _per_cycle(ek: np.ndarray, sources, fn) -> np.ndarray:
    out = np.full(ek.size, np.nan)
    for k, v in sources:
        pos = np.searchsorted(ek, k)
        out[pos] = fn(out[pos], v)
    return out


def _carry(src_k: np.ndarray, values: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """For each row cycle in ks, the latest non-NaN value of a cycle <= it (NaN if none)."""
    have = ~np.isnan(values)
    k, v = src_k[have], values[have]
    pos = np.searchsorted(k, ks, side="right") - 1
    out = np.full(ks.size, np.nan)
    ok = pos >= 0
    out[ok] = v[pos[ok]]
    return out
