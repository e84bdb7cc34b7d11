"""The recorder: what one pair's run leaves behind (its outcome), and the rows it is built from.

Both ways of running a pair end here. The paper loop hands a `PairRecorder` each cycle's
equity and market rows and each fill as it happens (appended to journals that survive a kill:
`recover_pair` reads back what a stopped process left); the bulk backtest hands `bulk_outcome`
the kernel's whole arrays. Either way the outcome's frames have the same columns and types,
built by the same functions (`fills_frame`, record.frame), so paper and backtest compare
exactly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import polars as pl

from mmrun.errors import DataError
from mmrun.record import (EQUITY_SCHEMA, MARKET_SCHEMA, SIDES, append_whole, cut_to_whole_lines, events_frame, frame,
                          output_error, replace_atomically)

log = logging.getLogger("mmrun")

# One fill as recorded: market time (ms), side (+1 buy, -1 sell), price (quote per base),
# amount (base), fee (quote), base and quote balances after the fill.
FILL_COLUMNS = ("ts_ms", "side", "price", "amount", "fee", "base", "quote")


class PairOutcome:
    """What one pair's run leaves behind, for the writers and the summary.

    status: completed | max_ticks | stopped | failed | interrupted (recovered after a kill).
    equity (record.EQUITY_SCHEMA, one row per quote cycle) and fills (fills_frame's columns) are
    Polars frames; run (stats.RunArrays) the same as arrays, what the summary's metrics are
    computed from. A paper run gives the frames; a backtest gives the arrays and `frames`, a
    maker per frame ('equity', 'fills', 'events': a function of no argument), each called the
    first time its frame is asked for (a lean sweep job asks only for the events).
    market: record.MARKET_SCHEMA, the rows paper cycles used (None: on disk already).
    events: a backtest's events, written in one go.
    fingerprint: sha256 of the market rows (fingerprint_rows). retries: transient exchange
    errors absorbed by a retry; trades_incomplete: cycles whose public trades could not all be
    read (ccxt_feed.MAX_TRADE_PAGES); quotes_dropped: quotes not placed, by reason
    (engine.quotes_dropped); labels: summary fields about the data (history.summary_labels),
    None: the exchange's.
    """

    def __init__(self, pair: str, status: str, equity: Optional[pl.DataFrame] = None,
                 fills: Optional[pl.DataFrame] = None, market: Optional[pl.DataFrame] = None, errors: int = 0,
                 fingerprint: str = "", retries: int = 0, trades_incomplete: int = 0,
                 events: Optional[pl.DataFrame] = None, quotes_dropped: Optional[dict] = None,
                 labels: Optional[Dict[str, Any]] = None, run: Any = None,
                 frames: Optional[Dict[str, Callable[[], pl.DataFrame]]] = None):
        self._frames = dict(frames or {})  # name -> its maker, until made
        if (equity is None and "equity" not in self._frames) or (fills is None and "fills" not in self._frames):
            raise ValueError("PairOutcome needs the equity and fills frames, or makers of them (`frames`)")
        self.pair, self.status, self.market, self.errors = pair, status, market, errors
        self.fingerprint, self.retries, self.trades_incomplete = fingerprint, retries, trades_incomplete
        self.quotes_dropped, self.labels = quotes_dropped, labels
        self._equity, self._fills, self._events, self._run = equity, fills, events, run
        self._lock = threading.Lock()  # the picture's thread and the writers ask for frames at once

    def _made(self, name: str) -> Optional[pl.DataFrame]:
        with self._lock:
            make = self._frames.pop(name, None)
            if make is not None:
                setattr(self, "_" + name, make())
            return getattr(self, "_" + name)

    @property
    def equity(self) -> pl.DataFrame:
        return self._made("equity")

    @property
    def fills(self) -> pl.DataFrame:
        return self._made("fills")

    @property
    def events(self) -> Optional[pl.DataFrame]:
        """A backtest's events (FILL lines, record.events_frame); None for a paper run (streamed)."""
        return self._made("events")

    @property
    def run(self) -> Any:
        """The run as stats.RunArrays (made from the frames once for a paper run)."""
        if self._run is None:
            from mmrun.stats import RunArrays

            self._run = RunArrays.from_frames(self.equity, self.fills)
        return self._run


def side_names(side: Any, dtype: Any = pl.String) -> pl.Series:
    """'buy' | 'sell' from +1 / -1 (array-like, k), as a String or dtype (record.SIDES) Series."""
    buy = pl.Series(np.asarray(side, dtype=np.float64) > 0)
    return pl.select(pl.when(buy).then(pl.lit("buy", dtype=dtype)).otherwise(pl.lit("sell", dtype=dtype))).to_series()


def fills_frame(ts_ms, side, price, amount, fee, base, quote) -> pl.DataFrame:
    """The fills as a frame: ts_ms (Int64, market ms), side ('buy' | 'sell', from +1 / -1),
    price, amount (base units), fee (quote), base and quote balances after each fill (Float64).
    Arguments are equal-length array-likes in FILL_COLUMNS order."""
    return pl.DataFrame(
        {
            "ts_ms": pl.Series(np.asarray(ts_ms, dtype=np.int64), dtype=pl.Int64),
            "side": side_names(side),
            "price": np.asarray(price, dtype=np.float64),
            "amount": np.asarray(amount, dtype=np.float64),
            "fee": np.asarray(fee, dtype=np.float64),
            "base": np.asarray(base, dtype=np.float64),
            "quote": np.asarray(quote, dtype=np.float64),
        }
    )


def fingerprint_rows(rows: np.ndarray) -> str:
    """sha256 of market rows as float64 (ROW_FIELDS order, row-major): the data's identity."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.float64).tobytes()).hexdigest()


class Journal:
    """Fixed-width records of float64 (little-endian) appended to a file, each with one write.

    Whatever stops the process (SIGKILL, a crash, a full disk), the file holds every record
    appended before, plus at most a part of the one being written: `read_journal` keeps the
    whole records only. A failed write (ENOSPC, EIO) cuts the file back to its last whole
    record and raises OutputError naming the folder and the cause. path None: the records are
    kept in memory instead (tests, short runs).
    """

    def __init__(self, path: Optional[Path], width: int):
        self.path = None if path is None else Path(path)
        self.width = width
        self.size = 0  # bytes of whole records written
        self._buf = bytearray() if path is None else None
        self._fd = None
        if self.path is not None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            except OSError as exc:
                raise output_error(self.path, exc) from None

    def append(self, data: bytes) -> None:
        """Append whole records (len(data) a multiple of 8 x width)."""
        if self._buf is not None:
            self._buf += data
        else:
            append_whole(self._fd, data, self.size, self.path)
        self.size += len(data)

    def __len__(self) -> int:
        return self.size // (8 * self.width)

    def close(self) -> None:
        """Close the file (idempotent); its records stay readable."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def array(self) -> np.ndarray:
        """The whole records, shape (n, width)."""
        if self._buf is not None:
            return np.frombuffer(bytes(self._buf), dtype="<f8").reshape(-1, self.width)
        return read_journal(self.path, self.width)


def read_journal(path: Path, width: int, first: int = 0, count: Optional[int] = None) -> np.ndarray:
    """Whole records of a journal file, shape (n, width) float64: records first..first+count
    (all from first when count is None); a part-written last record is left out."""
    rec = 8 * width
    n = max(0, os.path.getsize(path) // rec - first)
    n = n if count is None else min(n, count)
    with open(path, "rb") as f:
        f.seek(first * rec)
        return np.fromfile(f, dtype="<f8", count=n * width).reshape(n, width)


# The paper loop's journal in a pair's folder (hidden; removed once the run's files are written).
# One record per cycle and per fill, 14 float64 each: the kind, then
#   a cycle (KIND_CYCLE): the market row (ROW_FIELDS), then the equity row without its ts_ms
#       (mid, bid_quoted, ask_quoted, base, quote, equity);
#   a fill (KIND_FILL): FILL_COLUMNS, then zeros.
# A cycle's fills and the cycle go to the file in one write, after the cycle's events.
JOURNAL = ".journal.rows"
JOURNAL_WIDTH = 14
KIND_CYCLE, KIND_FILL = 0.0, 1.0
_RECORD = struct.Struct("<14d")
_MARKET = slice(1, 1 + len(MARKET_SCHEMA))  # a cycle record's market row
_READ_RECORDS = 8192  # records read at a time: reading back stays bounded in memory
_PARQUET_ROWS = 4096  # rows per market.parquet row group


def _records(journal: "Journal | Path"):
    """The whole records of a journal (a Journal, or a journal file), a block at a time."""
    if isinstance(journal, Journal) and journal.path is None:
        yield journal.array()
        return
    path = journal.path if isinstance(journal, Journal) else Path(journal)
    first = 0
    while True:
        block = read_journal(path, JOURNAL_WIDTH, first, _READ_RECORDS)
        if not len(block):
            return
        yield block
        first += len(block)


_EQUITY_COLS = [1, 8, 9, 10, 11, 12, 13]  # a cycle record's equity row, EQUITY_SCHEMA order


def split_journal(journal: "Journal | Path", market: bool = True):
    """(equity (n, 7), market (n, 7) or None, fills (k, 7)) from a journal: each cycle's equity row
    (EQUITY_SCHEMA order) and, if `market`, its market row (ROW_FIELDS order); the fill records
    (FILL_COLUMNS) up to the last whole cycle (a fill written without its cycle, by a write cut
    short, is left out). Two passes over the journal, so that only the results are held whole."""
    n_cycles = n_fills = 0
    for block in _records(journal):
        n_cycles += int(np.count_nonzero(block[:, 0] == KIND_CYCLE))
        n_fills += int(np.count_nonzero(block[:, 0] == KIND_FILL))
    equity = np.empty((n_cycles, len(EQUITY_SCHEMA)))
    rows = np.empty((n_cycles, len(MARKET_SCHEMA))) if market else None
    fills = np.empty((n_fills, len(FILL_COLUMNS)))
    i = j = 0
    for block in _records(journal):
        kind = block[:, 0]
        c, f = block[kind == KIND_CYCLE], block[kind == KIND_FILL]
        equity[i : i + len(c)] = c[:, _EQUITY_COLS]
        if rows is not None:
            rows[i : i + len(c)] = c[:, _MARKET]
        fills[j : j + len(f)] = f[:, 1 : 1 + len(FILL_COLUMNS)]
        i, j = i + len(c), j + len(f)
    last_ts = equity[-1, 0] if n_cycles else -np.inf
    return equity, rows, fills[fills[:, 0] <= last_ts]


class PairRecorder:
    """One pair's paper run as it goes: a record per cycle (market and equity rows) and per fill.

    folder given: the records are appended to a journal in that folder, each cycle's in one
    write (see Journal), so that every cycle completed before the process stopped, however it
    stopped, can be read back (`recover_pair`); memory stays flat however long the run.
    outcome() writes folder/market.parquet and reads the frames back; discard_journals(folder)
    removes the journal once the run's files are written. folder None: all in memory.
    """

    def __init__(self, pair: str, folder: Optional[Path] = None):
        self.pair = pair
        self.folder = None if folder is None else Path(folder)
        self._journal = Journal(None if folder is None else self.folder / JOURNAL, JOURNAL_WIDTH)
        self._pending = bytearray()  # this cycle's fill records, written with the cycle's record
        self._hash = hashlib.sha256()
        self._market_written = folder is None
        self.fills = 0  # fills recorded so far
        self.cycles = 0  # cycles recorded so far

    def fill(self, ts_ms: int, side: float, price: float, amount: float, fee: float, base: float, quote: float) -> None:
        """One fill (FILL_COLUMNS: side +1 buy / -1 sell, base and quote balances after it), on
        record with its cycle."""
        self._pending += _RECORD.pack(KIND_FILL, ts_ms, side, price, amount, fee, base, quote, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        self.fills += 1

    def cycle(self, equity_row: Sequence[float], market_row: Sequence[float]) -> None:
        """One finished cycle: its equity row (EQUITY_SCHEMA order) and market row (ROW_FIELDS
        order, the same ts_ms); it is on record, with its fills, once this returns."""
        rec = _RECORD.pack(KIND_CYCLE, *market_row, *equity_row[1:])
        self._hash.update(rec[8 : 8 + 8 * len(MARKET_SCHEMA)])  # the market row as float64: fingerprint_rows
        if self._pending:
            self._pending += rec
            self._journal.append(bytes(self._pending))
            self._pending.clear()
        else:
            self._journal.append(rec)
        self.cycles += 1

    def close(self) -> None:
        """Close the journal and, if not done yet, write market.parquet from it; never raises
        (it runs on the way out of a failed run too: a failure is logged, the journal stays)."""
        self._journal.close()
        if not self._market_written:
            try:
                self._write_market()
            except Exception as exc:
                log.error("%s: market.parquet not written (%s); the rows stay in %s", self.folder, exc, JOURNAL)

    def _write_market(self) -> None:
        write_market_parquet(self.folder, self.cycles)
        self._market_written = True

    def outcome(self, status: str, errors: int) -> PairOutcome:
        """The run's frames (and market.parquet, when recording to a folder). Raises OutputError."""
        self._journal.close()
        if not self._market_written:
            self._write_market()
        return _outcome(self.pair, status, errors, self._journal, self._hash.hexdigest(), in_memory=self.folder is None)


def _outcome(pair: str, status: str, errors: int, journal: "Journal | Path", fingerprint: Optional[str],
             in_memory: bool) -> PairOutcome:
    """An outcome from a journal (see split_journal): the equity and fills frames, and the market
    frame when in_memory; fingerprint None = computed from the journal's market rows."""
    equity_rows, market_rows, fill_rows = split_journal(journal, market=in_memory or fingerprint is None)
    equity = frame({c: equity_rows[:, i] for i, c in enumerate(EQUITY_SCHEMA)}, EQUITY_SCHEMA)
    del equity_rows  # the frame holds its own copy: keep the peak low on a long run
    fills = fills_frame(*(fill_rows[:, i] for i in range(len(FILL_COLUMNS))))
    del fill_rows
    if fingerprint is None:
        fingerprint = fingerprint_rows(market_rows)
    market = frame({c: market_rows[:, i] for i, c in enumerate(MARKET_SCHEMA)}, MARKET_SCHEMA) if in_memory else None
    return PairOutcome(
        pair=pair,
        status=status,
        equity=equity,
        fills=fills,
        market=market,
        errors=errors,
        fingerprint=fingerprint,
    )


def write_market_parquet(folder: Path, cycles: Optional[int] = None) -> Path:
    """folder/market.parquet from the folder's journal (its first `cycles` whole cycles, all when
    None), a row group per 4096 rows, written to a temporary name then renamed; memory stays
    bounded. NaN is written as null, as record.frame does. Raises OutputError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    journal = Path(folder) / JOURNAL
    schema = pa.schema([(c, pa.int64() if c == "ts_ms" else pa.float64()) for c in MARKET_SCHEMA])

    def groups():
        held, n, left = [], 0, cycles
        for block in _records(journal):
            rows = block[block[:, 0] == KIND_CYCLE, _MARKET]
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            held.append(rows)
            n += len(rows)
            while n >= _PARQUET_ROWS:
                allrows = np.concatenate(held)
                yield allrows[:_PARQUET_ROWS]
                held, n = [allrows[_PARQUET_ROWS:]], n - _PARQUET_ROWS
            if left is not None and left <= 0:
                break
        if n:
            yield np.concatenate(held)

    def write(tmp: Path) -> None:
        # no dictionary encoding: float market data rarely repeats, and its buffers cost memory
        with pq.ParquetWriter(tmp, schema, write_statistics=False, use_dictionary=False) as writer:
            for rows in groups():
                cols = [pa.array(rows[:, 0].astype(np.int64))]
                cols += [pa.array(rows[:, i], from_pandas=True) for i in range(1, len(MARKET_SCHEMA))]
                writer.write_table(pa.Table.from_arrays(cols, schema=schema))

    path = Path(folder) / "market.parquet"
    replace_atomically(path, write)
    return path


def discard_journals(folder: Path) -> None:
    """Remove a pair folder's journal (once its run files are written from it)."""
    (Path(folder) / JOURNAL).unlink(missing_ok=True)


def has_journal(folder: Path) -> bool:
    """True if a paper run recorded into folder and did not finish writing its files."""
    return (Path(folder) / JOURNAL).is_file()


def recover_pair(pair: str, folder: Path) -> PairOutcome:
    """The outcome of a paper run that was stopped without finishing (SIGKILL, power loss, a full
    disk), from what it left in `folder`: every whole cycle record and its fills, events.csv cut
    back to its last whole line. Writes market.parquet; status 'interrupted'.
    Raises OutputError, and DataError when the folder holds no journal."""
    folder = Path(folder)
    if not has_journal(folder):
        raise DataError(f"{folder}: no paper-run journal ({JOURNAL}) to recover from")
    errors = 0
    events = folder / "events.csv"
    if events.is_file():
        cut_to_whole_lines(events)
        with open(events, "rb") as f:
            errors = sum(chunk.count(b",ERROR,") for chunk in iter(lambda: f.read(1 << 20), b""))
    write_market_parquet(folder)
    return _outcome(pair, "interrupted", errors, folder / JOURNAL, None, in_memory=False)


def bulk_outcome(pair: str, ts: np.ndarray, mid: np.ndarray, quoted: np.ndarray, fills: np.ndarray,
                 fill_rows: np.ndarray, base: np.ndarray, quote: np.ndarray, fingerprint: str) -> PairOutcome:
    """A whole backtest's outcome from the kernel's arrays (engine.run_bulk).

    ts (n,) int64 market ms; mid (n,) quote per base; quoted (n, 2) best bid and ask placed
    per row (NaN: none); fills (k, engine.N_FILL) the fills; fill_rows (k,) the row each fill
    happened in; base, quote (n,) balances after each row. The events are the FILL lines. The
    frames are made when first asked for (PairOutcome.frames); the summary needs only the arrays.
    """
    from mmrun import engine
    from mmrun.stats import RunArrays

    # each column contiguous, once (the kernel's arrays come column-major: no copy): Polars
    # would copy a strided column for every frame it goes into
    quoted_cols = _columns(quoted)
    fill_cols = _columns(fills)
    fill_rows = np.ascontiguousarray(fill_rows, dtype=np.int64)
    run = RunArrays(
        ts_ms=ts, mid=mid, bid_quoted=quoted_cols[0], ask_quoted=quoted_cols[1], base=base, quote=quote, equity=None,
        fill_row=fill_rows, fill_side=fill_cols[engine.F_SIDE], fill_price=fill_cols[engine.F_PRICE],
        fill_amount=fill_cols[engine.F_AMOUNT], fill_fee=fill_cols[engine.F_FEE],
    )

    frames = {
        "equity": lambda: bulk_equity(run),
        "fills": lambda: bulk_fills(run, fill_cols),
        "events": lambda: bulk_events(pair, run, fill_cols),
    }
    return PairOutcome(pair=pair, status="completed", market=None, fingerprint=fingerprint, run=run, frames=frames)


def _columns(a: Any) -> np.ndarray:
    """(k, m) float64 values as (m, k) rows that are each contiguous: a view of a column-major
    array, a copy otherwise."""
    t = np.asarray(a, dtype=np.float64).T
    return t if t.shape[1] <= 1 or t.strides[1] == t.itemsize else np.ascontiguousarray(t)


def bulk_equity(run: Any) -> pl.DataFrame:
    """A backtest's equity frame (record.EQUITY_SCHEMA) from its stats.RunArrays."""
    return frame(
        {
            "ts_ms": run.ts_ms,
            "mid": run.mid,
            "bid_quoted": run.bid_quoted,
            "ask_quoted": run.ask_quoted,
            "base": run.base,
            "quote": run.quote,
            "equity": run.equity_values(),
        },
        EQUITY_SCHEMA,
    )


def bulk_fills(run: Any, fill_cols: np.ndarray) -> pl.DataFrame:
    """A backtest's fills frame (fills_frame) from its stats.RunArrays and the kernel's fill
    columns (engine.N_FILL, k)."""
    from mmrun import engine

    return fills_frame(run.ts_ms[run.fill_row], fill_cols[engine.F_SIDE], fill_cols[engine.F_PRICE],
                       fill_cols[engine.F_AMOUNT], fill_cols[engine.F_FEE], fill_cols[engine.F_BASE],
                       fill_cols[engine.F_QUOTE])


def bulk_events(pair: str, run: Any, fill_cols: np.ndarray) -> pl.DataFrame:
    """A backtest's events (its FILL lines, record.events_frame) from its stats.RunArrays and the
    kernel's fill columns (engine.N_FILL, k)."""
    from mmrun import engine

    return events_frame(
        run.ts_ms[run.fill_row],
        "FILL",
        pair,
        side_names(fill_cols[engine.F_SIDE], SIDES),
        price=fill_cols[engine.F_PRICE],
        amount=fill_cols[engine.F_AMOUNT],
        base=fill_cols[engine.F_BASE],
        quote=fill_cols[engine.F_QUOTE],
        fee=fill_cols[engine.F_FEE],
        mid=run.mid[run.fill_row],
    )
