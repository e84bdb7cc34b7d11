"""Writers for a run folder: streamed events.csv, and Polars frames written whole (Parquet, CSV).

Files written whole go to a temporary name first and are renamed into place, so a reader
never sees half a file. events.csv in paper mode is the exception by design: it is appended
line by line, so a killed run keeps every complete line it wrote (and never half a line).
Any I/O error becomes OutputError, one line naming the folder, the file and the cause.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional

import numpy as np
import polars as pl

from mmrun.errors import OutputError

EVENT_COLUMNS = (
    "timestamp",  # market time, ISO-8601 UTC with milliseconds
    "event_type",  # QUOTE | FILL | CANCEL | ERROR
    "price",  # quote currency per base unit
    "amount",  # base units, > 0
    "base_inventory",  # base held after the event
    "quote_inventory",  # quote held after the event
    "total_value",  # quote + base x mid, quote currency
    "pair",
    "side",  # buy | sell ('' for ERROR)
    "fee",  # quote currency charged by this event (fills only)
    "mid",  # (best bid + best ask) / 2 at the event's market time
    "note",  # why (ERROR text, the data source, a stop reason)
)

EQUITY_SCHEMA = {
    "ts_ms": pl.Int64,  # market time, ms since the epoch
    "mid": pl.Float64,
    "bid_quoted": pl.Float64,  # our resting bid after this cycle (null: none)
    "ask_quoted": pl.Float64,
    "base": pl.Float64,
    "quote": pl.Float64,
    "equity": pl.Float64,  # quote + base x mid
}

MARKET_SCHEMA = {
    "ts_ms": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "last": pl.Float64,
    "low": pl.Float64,
    "high": pl.Float64,
    "volume": pl.Float64,
}


def safe_name(pair: str) -> str:
    """A pair as a file or folder name: 'BTC/USDT' -> 'BTC-USDT'; never a path."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", pair).strip(".")
    return name or "pair"


def iso_ms(ts_ms: int) -> str:
    """Milliseconds since the epoch -> '2026-01-01T00:00:05.000Z'."""
    dt = datetime.fromtimestamp(ts_ms / 1000.0, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def _num(x: Optional[float]) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return repr(float(x))


def _csv_text(s: str) -> str:
    if any(c in s for c in ',"\n\r'):
        return '"' + s.replace('"', '""').replace("\r", " ").replace("\n", " ") + '"'
    return s


# The one call that appends bytes to a recording file (tests replace it to inject ENOSPC).
_os_write = os.write


def output_error(path: Path, exc: BaseException) -> OutputError:
    """OutputError naming the folder, the file and the cause ('No space left on device')."""
    path = Path(path)
    cause = getattr(exc, "strerror", None) or " ".join(str(exc).split()) or type(exc).__name__
    return OutputError(f"{path.parent}: cannot write {path.name}: {cause}")


def append_whole(fd: int, data: bytes, good_size: int, path: Path) -> None:
    """Append `data` to the open file `fd` (offset good_size), with as many writes as it takes.

    On a failed write (ENOSPC, EIO, ...) the file is cut back to good_size, so it never ends in
    a part of `data`, and OutputError is raised (path names the file in the message).
    """
    view = memoryview(data)
    try:
        while view:
            view = view[_os_write(fd, view):]
    except OSError as exc:
        try:
            os.ftruncate(fd, good_size)
            os.lseek(fd, good_size, os.SEEK_SET)
        except OSError:
            pass
        raise output_error(path, exc) from None


def cut_to_whole_lines(path: Path) -> int:
    """Cut a text file after its last newline (a line a killed writer left half-written);
    returns the bytes removed."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            f.truncate(keep)
    return size - keep


class EventStream:
    """events.csv appended one line per event as it happens (paper mode).

    Each line goes to the file with one write (no buffer in between), so a killed run keeps
    every line it wrote, and only whole lines: a failed write (full disk) cuts the file back to
    its last whole line and raises OutputError.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise output_error(self.path, exc) from None
        self._size = 0
        self._append((",".join(EVENT_COLUMNS) + "\n").encode("utf-8"))

    def _append(self, data: bytes) -> None:
        append_whole(self._fd, data, self._size, self.path)
        self._size += len(data)

    def write(
        self,
        ts_ms: int,
        event_type: str,
        pair: str,
        side: str = "",
        price: Optional[float] = None,
        amount: Optional[float] = None,
        base: Optional[float] = None,
        quote: Optional[float] = None,
        mid: Optional[float] = None,
        fee: Optional[float] = None,
        note: str = "",
    ) -> None:
        total = base * mid + quote if None not in (base, quote, mid) else None
        line = ",".join(
            (
                iso_ms(ts_ms),
                event_type,
                _num(price),
                _num(amount),
                _num(base),
                _num(quote),
                _num(total),
                _csv_text(pair),
                side,
                _num(fee),
                _num(mid),
                _csv_text(note),
            )
        )
        self._append((line + "\n").encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def frame(arrays: Dict[str, np.ndarray], schema: Dict[str, Any]) -> pl.DataFrame:
    """A Polars frame with the schema's columns and types; NaN floats become null."""
    cols = []
    for name, dtype in schema.items():
        if dtype == pl.Float64:
            # one conversion (NaN -> null on the way in) rather than a copy per step: a
            # million-row backtest builds this frame at its memory peak
            s = pl.Series(name, np.asarray(arrays[name], dtype=np.float64), nan_to_null=True)
        else:
            s = pl.Series(name, arrays[name]).cast(dtype)
        cols.append(s)
    return pl.DataFrame(cols)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write a whole file: `write(tmp)` writes it to a temporary name beside `path`, which is then
    renamed into place, so a reader sees the old file or the new one, never half of one. A
    failure removes the temporary file; an I/O error (full disk, ...) becomes OutputError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, (OSError, pl.exceptions.PolarsError)):  # e.g. a full disk
            raise output_error(path, exc) from None
        raise


def write_parquet(df: pl.DataFrame, path: Path, fast: bool = False) -> None:
    """A frame as Parquet, replaced atomically: zstd level 1 (within a few % of the default
    level's size, written in about two thirds of the time), or when fast (a lean sweep job's
    events.parquet, written hundreds of times and read rarely) `write_parquet_fast`'s encodings."""
    if fast:
        replace_atomically(path, lambda tmp: write_parquet_fast(df, tmp))
        return
    replace_atomically(path, lambda tmp: df.write_parquet(tmp, statistics=False, compression="zstd", compression_level=1))


def write_parquet_fast(df: pl.DataFrame, path: Path) -> None:
    """A frame as Parquet through PyArrow, encoded per column for writing speed: floats
    BYTE_STREAM_SPLIT (each byte of the values in its own stream: the sign and exponent bytes of
    prices and balances repeat, so LZ4 then finds them), integers and times DELTA_BINARY_PACKED,
    Enum and Categorical columns as dictionaries, the rest plain; LZ4 pages, no statistics (Apache
    Parquet format, Encodings.md). Polars reads it back to the same frame, types included. A 1M-bar
    sweep job's 240,000 fills (bench/.data, one thread): 26 ms of CPU and 8.4 MB, where Polars'
    own writer (dictionary-encoding every column it finds repeats in) takes 32 ms and 11.1 MB with
    LZ4, 45 ms and 8.8 MB with zstd. Raises OSError (pyarrow's I/O errors) as a file write does."""
    import pyarrow.parquet as pq

    dictionary, encoding = [], {}
    for name, dtype in df.schema.items():
        if isinstance(dtype, (pl.Enum, pl.Categorical)):
            dictionary.append(name)
        elif dtype.is_float():
            encoding[name] = "BYTE_STREAM_SPLIT"
        elif dtype.is_integer() or isinstance(dtype, (pl.Datetime, pl.Duration)):
            encoding[name] = "DELTA_BINARY_PACKED"
    pq.write_table(df.to_arrow(), path, compression="lz4", use_dictionary=dictionary, column_encoding=encoding,
                   write_statistics=False)


def write_csv(df: pl.DataFrame, path: Path) -> None:
    """A frame as CSV with a header line, replaced atomically; Datetime columns as ISO_MS text
    ('2026-01-01T00:00:05.000Z', the events' stamps)."""
    replace_atomically(path, lambda tmp: df.write_csv(tmp, datetime_format=ISO_MS))


def load_yaml(source: Any) -> Any:
    """yaml.safe_load of a text or an open file, with libyaml's parser when PyYAML has it (a
    tenth of the pure-Python parser's time: a sweep's report reads thousands of Hydra's YAML
    files). Raises yaml.YAMLError."""
    import yaml

    return yaml.load(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_json_object(path: Path) -> Dict[str, Any]:
    """The JSON object in path, or {} when the file is missing, unreadable or not an object
    (a sweep report reads job folders that may be half written or from a failed job)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json(obj: Any, path: Path) -> None:
    """obj as indented JSON (NaN refused: it is not JSON), replaced atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
            f.write("\n")

    replace_atomically(path, write)


EVENTS_CSV_SCHEMA = {
    "timestamp": pl.String,
    "event_type": pl.String,
    "price": pl.Float64,
    "amount": pl.Float64,
    "base_inventory": pl.Float64,
    "quote_inventory": pl.Float64,
    "total_value": pl.Float64,
    "pair": pl.String,
    "side": pl.String,
    "fee": pl.Float64,
    "mid": pl.Float64,
    "note": pl.String,
}


def read_events(path: Path) -> pl.DataFrame:
    """events.csv as a typed frame (the same schema whether streamed or written whole)."""
    return pl.read_csv(path, schema=EVENTS_CSV_SCHEMA)


# events.csv's timestamp text. events.parquet holds the events typed: the timestamp a Datetime
# (ms, UTC), event_type, side and pair Enums (written as Parquet dictionaries: a quarter of the
# time of writing them as text, and a reader gets the labels as categories).
ISO_MS = "%Y-%m-%dT%H:%M:%S%.3fZ"
EVENT_TIME = pl.Datetime("ms", "UTC")
EVENT_TYPES = pl.Enum(["QUOTE", "FILL", "CANCEL", "ERROR"])
SIDES = pl.Enum(["buy", "sell"])


def pairs_enum(pairs: Iterable[str]) -> pl.Enum:
    """The Enum of an events frame's pair column: its pairs, sorted."""
    return pl.Enum(sorted(set(pairs)))


def typed_events(events: pl.DataFrame) -> pl.DataFrame:
    """Events as events.parquet holds them: read_events' frame (text) with the timestamp parsed to
    EVENT_TIME and event_type, side and pair cast to their Enums (a frame already typed is
    returned as it is)."""
    if events.schema["timestamp"] == EVENT_TIME:
        return events
    return events.with_columns(
        pl.col("timestamp").str.to_datetime(ISO_MS, time_unit="ms", time_zone="UTC"),
        pl.col("event_type").cast(EVENT_TYPES),
        pl.col("side").cast(SIDES),
        pl.col("pair").cast(pairs_enum(events["pair"].drop_nulls().unique().to_list())),
    )


def events_frame(ts_ms: np.ndarray, event_type: str, pair: str, side: np.ndarray, **cols: np.ndarray) -> pl.DataFrame:
    """Events of one type built column-wise (the backtest's bulk path), in EVENT_COLUMNS order,
    typed as events.parquet holds them (typed_events; write_csv writes the timestamp as ISO_MS)."""
    df = pl.DataFrame(
        {
            "ts_ms": pl.Series(ts_ms, dtype=pl.Int64),
            "price": cols["price"],
            "amount": cols["amount"],
            "base_inventory": cols["base"],
            "quote_inventory": cols["quote"],
            "total_value": cols["base"] * cols["mid"] + cols["quote"],
            "side": side if getattr(side, "dtype", None) == SIDES else pl.Series(side, dtype=pl.String).cast(SIDES),
            "fee": cols["fee"],
            "mid": cols["mid"],
        }
    )
    return df.select(
        pl.col("ts_ms").cast(EVENT_TIME).alias("timestamp"),
        pl.lit(event_type, dtype=EVENT_TYPES).alias("event_type"),
        "price",
        "amount",
        "base_inventory",
        "quote_inventory",
        "total_value",
        pl.lit(pair, dtype=pairs_enum([pair])).alias("pair"),
        "side",
        "fee",
        "mid",
        pl.lit(None, dtype=pl.String).alias("note"),
    )
