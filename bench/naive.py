"""Naive references on the same candles: the original pandas `iterrows` backtest loop and a plain
Python loop over numpy arrays, both with the original toy logic (instant fills, no fees)."""

from __future__ import annotations

import time
from typing import Dict

import numpy as np

CAPITAL, SPREAD, PCT, MAX_EXP = 10_000.0, 0.002, 0.01, 0.2


def pandas_iterrows(df) -> tuple:
    """The original backtest's style: a pandas frame walked with iterrows."""
    base, quote, trades = 0.0, CAPITAL, 0
    for _, row in df.iterrows():
        close = row["close"]
        size = min(CAPITAL * PCT / close, CAPITAL * MAX_EXP / close)
        buy_price = close * (1 - SPREAD / 2)
        sell_price = close * (1 + SPREAD / 2)
        if quote >= buy_price * size:
            quote -= buy_price * size
            base += size
            trades += 1
        if base >= size:
            base -= size
            quote += sell_price * size
            trades += 1
    return quote + base * df["close"].iloc[-1], trades


def python_loop(close: np.ndarray) -> tuple:
    """The same logic, element by element over a numpy array."""
    base, quote, trades = 0.0, CAPITAL, 0
    for i in range(close.shape[0]):
        c = close[i]
        size = min(CAPITAL * PCT / c, CAPITAL * MAX_EXP / c)
        buy_price = c * (1 - SPREAD / 2)
        sell_price = c * (1 + SPREAD / 2)
        if quote >= buy_price * size:
            quote -= buy_price * size
            base += size
            trades += 1
        if base >= size:
            base -= size
            quote += sell_price * size
            trades += 1
    return quote + base * close[-1], trades


def pandas_bars_per_s(candles_path: str, bars: int) -> Dict[str, float]:
    """iterrows over the first `bars` candles of the file (the whole file would take minutes)."""
    import pandas as pd

    df = pd.read_parquet(candles_path).iloc[:bars]
    t = time.perf_counter()
    pandas_iterrows(df)
    dt = time.perf_counter() - t
    return {"bars": len(df), "seconds": dt, "bars_per_s": len(df) / dt}


def python_loop_bars_per_s(close: np.ndarray) -> Dict[str, float]:
    t = time.perf_counter()
    python_loop(close)
    dt = time.perf_counter() - t
    return {"bars": close.size, "seconds": dt, "bars_per_s": close.size / dt}
