"""Synthetic one-minute candle files for the benchmarks (seeded, so every run replays the same market).

The close follows a geometric random walk (about 80 % annualised volatility); each candle's
open is the previous close, high and low reach a random way beyond both, volume is lognormal.
Timestamps are candle open times in ms since the epoch (ccxt's OHLCV layout).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import polars as pl

START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
BAR_MS = 60_000


def candles(n: int, seed: int = 7, price0: float = 60_000.0) -> pl.DataFrame:
    """n one-minute candles: timestamp (ms), open, high, low, close, volume (base units)."""
    rng = np.random.default_rng(seed)
    sigma = 0.8 / math.sqrt(365 * 24 * 60)  # per-minute volatility of log price
    close = price0 * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))
    open_ = np.concatenate([[price0], close[:-1]])
    reach = np.abs(rng.normal(0.0, sigma, (2, n))) * close
    high = np.maximum(open_, close) + reach[0]
    low = np.minimum(open_, close) - reach[1]
    volume = rng.lognormal(1.0, 1.0, n)
    return pl.DataFrame(
        {
            "timestamp": START_MS + np.arange(n, dtype=np.int64) * BAR_MS,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
        }
    )


def write(path: Path, n: int, seed: int = 7) -> Path:
    """Write n candles to path (Parquet or CSV by suffix) unless an identical file is there."""
    path = Path(path)
    df = candles(n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)
    return path


if __name__ == "__main__":
    write(Path(sys.argv[1]), int(sys.argv[2]))
