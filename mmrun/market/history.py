"""Market history from files: candles (CSV or Parquet) or a recorded market.parquet, as rows."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import polars as pl

from mmrun.errors import DataError

CANDLE_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def _read(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise DataError(f"data.path={path}: no such file")
    try:
        if path.suffix.lower() == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema_length=10000)
    except Exception as exc:
        raise DataError(f"data.path={path}: unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def load_rows(path_text: str) -> Dict[str, np.ndarray]:
    """Rows (mmrun.market.ROW_FIELDS) from a candle file; close stands in for missing bid/ask."""
    path = Path(path_text)
    df = _read(path)
    df = df.rename({c: c.lower() for c in df.columns})
    if "ts_ms" in df.columns and "last" in df.columns:  # a market.parquet recorded by a paper run
        return {k: df[k].to_numpy() for k in ("ts_ms", "bid", "ask", "last", "low", "high", "volume")}
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"data.path={path}: missing column(s) {', '.join(missing)}; need {', '.join(CANDLE_COLUMNS)}")
    if df.height == 0:
        raise DataError(f"data.path={path}: no rows")
    ts = df["timestamp"]
    if ts.dtype == pl.String:
        ts = ts.str.to_datetime(time_zone="UTC").dt.epoch("ms")
    close = df["close"].cast(pl.Float64).to_numpy()
    return {
        "ts_ms": ts.cast(pl.Int64).to_numpy(),
        "bid": df["bid"].cast(pl.Float64).to_numpy() if "bid" in df.columns else close,
        "ask": df["ask"].cast(pl.Float64).to_numpy() if "ask" in df.columns else close,
        "last": close,
        "low": df["low"].cast(pl.Float64).to_numpy(),
        "high": df["high"].cast(pl.Float64).to_numpy(),
        "volume": df["volume"].cast(pl.Float64).to_numpy(),
    }
