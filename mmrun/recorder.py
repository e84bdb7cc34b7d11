"""The recorder: what one pair's run leaves behind (its outcome), and the rows it is built from.

Both ways of running a pair end here. The paper loop hands a `PairRecorder` each cycle's
equity and market rows and each fill as it happens; the bulk backtest hands `bulk_outcome`
the kernel's whole arrays. Either way the outcome's frames have the same columns and types,
built by the same functions (`fills_frame`, record.frame), so paper and backtest compare
exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np
import polars as pl

from mmrun.record import EQUITY_SCHEMA, MARKET_SCHEMA, events_frame, frame

# One fill as recorded: market time (ms), side (+1 buy, -1 sell), price (quote per base),
# amount (base), fee (quote), base and quote balances after the fill.
FILL_COLUMNS = ("ts_ms", "side", "price", "amount", "fee", "base", "quote")


@dataclass
class PairOutcome:
    """What one pair's run leaves behind, for the writers and the summary."""

    pair: str
    status: str  # completed | max_ticks | stopped | failed
    equity: pl.DataFrame  # record.EQUITY_SCHEMA, one row per quote cycle
    fills: pl.DataFrame  # fills_frame's columns, one row per fill
    market: Optional[pl.DataFrame]  # record.MARKET_SCHEMA, the rows paper cycles used (None: on disk already)
    errors: int = 0
    fingerprint: str = ""  # sha256 of the market rows (fingerprint_rows)
    events: Optional[pl.DataFrame] = None  # backtests: the events, written in one go
    quotes_dropped: Optional[dict] = None  # quotes not placed, by reason (engine.quotes_dropped)


def fills_frame(ts_ms, side, price, amount, fee, base, quote) -> pl.DataFrame:
    """The fills as a frame: ts_ms (Int64, market ms), side ('buy' | 'sell', from +1 / -1),
    price, amount (base units), fee (quote), base and quote balances after each fill (Float64).
    Arguments are equal-length array-likes in FILL_COLUMNS order."""
    return pl.DataFrame(
        {
            "ts_ms": pl.Series(np.asarray(ts_ms, dtype=np.int64), dtype=pl.Int64),
            "side": pl.Series(np.asarray(side, dtype=np.float64) > 0).replace_strict(
                {True: "buy", False: "sell"}, return_dtype=pl.String
            ),
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


class Rows:
    """Fixed-width float rows appended one at a time, kept in chunks of `chunk` rows.

    path None: the chunks stay in memory. path given: each full chunk is written to that
    Parquet file as a row group (memory stays bounded however long the run); the file is
    complete once close() has run. Either way `frame(schema)` gives the rows as a frame
    (ts_ms as Int64, NaN as null, as record.frame writes them).
    """

    def __init__(self, columns: Sequence[str], path: Optional[Path] = None, chunk: int = 4096):
        self.columns = list(columns)
        self.path = None if path is None else Path(path)
        self.chunk = chunk
        self._done: List[np.ndarray] = []
        self._cur = np.empty((chunk, len(self.columns)))
        self._n = 0
        self._count = 0
        self._writer = None
        if self.path is not None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._pa = pa
            self._schema = pa.schema([(c, pa.int64() if c == "ts_ms" else pa.float64()) for c in self.columns])
            # no dictionary encoding: float market data rarely repeats, and its buffers cost memory
            self._writer = pq.ParquetWriter(self.path, self._schema, write_statistics=False, use_dictionary=False)

    def append(self, row: Iterable[float]) -> None:
        self._cur[self._n] = row
        self._n += 1
        self._count += 1
        if self._n == self.chunk:
            self._flush()

    def __len__(self) -> int:
        return self._count

    def _flush(self) -> None:
        if self._n == 0:
            return
        if self.path is None:
            self._done.append(self._cur[: self._n])
            self._cur = np.empty((self.chunk, len(self.columns)))
        elif self._writer is not None:
            pa, rows = self._pa, self._cur[: self._n]
            cols = [pa.array(rows[:, 0].astype(np.int64))]
            # NaN -> null, as record.frame writes them (a cycle without trades has no low/high)
            cols += [pa.array(rows[:, i], from_pandas=True) for i in range(1, rows.shape[1])]
            self._writer.write_table(pa.Table.from_arrays(cols, schema=self._schema))
        self._n = 0

    def close(self) -> None:
        """Finish the file the rows go to (idempotent; nothing to do in memory)."""
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def frame(self, schema) -> pl.DataFrame:
        """All rows as a frame with `schema` (a dict of column -> Polars type, these columns)."""
        if self.path is not None:
            self.close()
            return pl.read_parquet(self.path)
        self._flush()
        arr = np.concatenate(self._done) if self._done else np.empty((0, len(self.columns)))
        return frame({c: arr[:, i] for i, c in enumerate(self.columns)}, schema)


class PairRecorder:
    """One pair's paper run as it goes: equity and market rows per cycle, fills as they happen.

    folder None: everything stays in memory (tests, short runs). folder given: the market rows
    are streamed to folder/market.parquet and the equity and fill rows to temporary Parquet
    files beside it, read back (and deleted) by outcome(); memory stays flat however long the run.
    """

    def __init__(self, pair: str, folder: Optional[Path] = None):
        self.pair = pair
        self.folder = None if folder is None else Path(folder)
        spill = (lambda name: None) if folder is None else (lambda name: self.folder / name)
        self._fills = Rows(FILL_COLUMNS, spill(".fills.part.parquet"))
        self._equity = Rows(tuple(EQUITY_SCHEMA), spill(".equity.part.parquet"))
        self._market = Rows(tuple(MARKET_SCHEMA), spill("market.parquet"))
        self._hash = hashlib.sha256()

    @property
    def fills(self) -> int:
        """Fills recorded so far."""
        return len(self._fills)

    @property
    def cycles(self) -> int:
        """Cycles recorded so far."""
        return len(self._equity)

    def fill(self, ts_ms: int, side: float, price: float, amount: float, fee: float, base: float, quote: float) -> None:
        """One fill (FILL_COLUMNS: side +1 buy / -1 sell, base and quote balances after it)."""
        self._fills.append((ts_ms, side, price, amount, fee, base, quote))

    def cycle(self, equity_row: Sequence[float], market_row: Sequence[float]) -> None:
        """One finished cycle: its equity row (EQUITY_SCHEMA order) and market row (ROW_FIELDS order)."""
        self._equity.append(equity_row)
        row = np.array(market_row, dtype=np.float64)
        self._market.append(row)
        self._hash.update(row.tobytes())

    def close(self) -> None:
        """Finish the files the rows are streamed to (idempotent)."""
        for rows in (self._market, self._equity, self._fills):
            rows.close()

    def outcome(self, status: str, errors: int) -> PairOutcome:
        """The run's frames (spilled rows read back, their temporary files deleted)."""
        equity = self._equity.frame(EQUITY_SCHEMA)
        f = self._fills.frame({c: pl.Float64 for c in FILL_COLUMNS})
        fills = fills_frame(*(f[c].to_numpy() for c in FILL_COLUMNS))
        self._market.close()
        market = None if self._market.path is not None else self._market.frame(MARKET_SCHEMA)
        for rows in (self._equity, self._fills):
            if rows.path is not None:
                rows.path.unlink(missing_ok=True)
        return PairOutcome(
            pair=self.pair,
            status=status,
            equity=equity,
            fills=fills,
            market=market,
            errors=errors,
            fingerprint=self._hash.hexdigest(),
        )


def bulk_outcome(pair: str, ts: np.ndarray, mid: np.ndarray, quoted: np.ndarray, fills: np.ndarray,
                 fill_rows: np.ndarray, base: np.ndarray, quote: np.ndarray, fingerprint: str) -> PairOutcome:
    """A whole backtest's outcome from the kernel's arrays (engine.run_bulk).

    ts (n,) int64 market ms; mid (n,) quote per base; quoted (n, 2) best bid and ask placed
    per row (NaN: none); fills (k, engine.N_FILL) the fills; fill_rows (k,) the row each fill
    happened in; base, quote (n,) balances after each row. The events are the FILL lines.
    """
    from mmrun import engine

    equity = frame(
        {
            "ts_ms": ts,
            "mid": mid,
            "bid_quoted": quoted[:, 0],
            "ask_quoted": quoted[:, 1],
            "base": base,
            "quote": quote,
            "equity": quote + base * mid,
        },
        EQUITY_SCHEMA,
    )
    f_ts = ts[fill_rows]
    fills_df = fills_frame(f_ts, fills[:, engine.F_SIDE], fills[:, engine.F_PRICE], fills[:, engine.F_AMOUNT],
                           fills[:, engine.F_FEE], fills[:, engine.F_BASE], fills[:, engine.F_QUOTE])
    events = events_frame(
        f_ts,
        "FILL",
        pair,
        fills_df["side"],
        price=fills[:, engine.F_PRICE],
        amount=fills[:, engine.F_AMOUNT],
        base=fills[:, engine.F_BASE],
        quote=fills[:, engine.F_QUOTE],
        fee=fills[:, engine.F_FEE],
        mid=mid[fill_rows],
    )
    return PairOutcome(pair=pair, status="completed", equity=equity, fills=fills_df, market=None,
                       fingerprint=fingerprint, events=events)
