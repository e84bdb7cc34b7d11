"""Kernel throughput: engine.run_bulk over one-minute bars, compile excluded (best of several runs).

Also a bare numba loop with the original toy logic (instant fills, no fees, no logging), the
ceiling a compiled loop over these arrays can reach on this machine.
"""

from __future__ import annotations

import time
from typing import Dict

import numpy as np
from numba import njit

from mmrun import engine
from mmrun.market import ROW_FIELDS

REPEATS = 10


def _columns(rows: Dict[str, np.ndarray]):
    return [np.ascontiguousarray(rows[k], dtype=np.float64) for k in ROW_FIELDS[1:]]


def kernel_bars_per_s(rows: Dict[str, np.ndarray], fill_model: str = "touch", fee: float = 0.001) -> Dict[str, float]:
    """Best-of-REPEATS bars per second of engine.run_bulk (default strategy), after one warm-up call."""
    cols = _columns(rows)
    params = engine.make_params(0.002, 0.01, 0.2, 10_000.0, fee, fill_model, None, 0.0)
    engine.run_bulk(params, engine.make_state(0.0, 10_000.0, params), *cols)  # compile / load from cache
    best = float("inf")
    fills = 0
    for _ in range(REPEATS):
        state = engine.make_state(0.0, 10_000.0, params)
        t = time.perf_counter()
        out = engine.run_bulk(params, state, *cols)
        best = min(best, time.perf_counter() - t)
        fills = len(out[1])
    n = len(cols[0])
    return {"bars": n, "seconds": best, "bars_per_s": n / best, "fills": fills}


@njit(cache=True)
def _toy(close, capital, spread, pct, max_exp):
    base = 0.0
    quote = capital
    trades = 0
    for i in range(close.shape[0]):
        c = close[i]
        size = min(capital * pct / c, capital * max_exp / c)
        buy = c * (1.0 - spread / 2.0)
        sell = c * (1.0 + spread / 2.0)
        if quote >= buy * size:
            quote -= buy * size
            base += size
            trades += 1
        if base >= size:
            base -= size
            quote += sell * size
            trades += 1
    return quote + base * close[-1], trades


def bare_numba_bars_per_s(rows: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The original toy logic as a bare numba loop over closes (no fills log, no balances log)."""
    close = np.ascontiguousarray(rows["last"], dtype=np.float64)
    _toy(close, 10_000.0, 0.002, 0.01, 0.2)
    best = float("inf")
    for _ in range(REPEATS):
        t = time.perf_counter()
        _toy(close, 10_000.0, 0.002, 0.01, 0.2)
        best = min(best, time.perf_counter() - t)
    return {"bars": close.size, "seconds": best, "bars_per_s": close.size / best}


if __name__ == "__main__":
    import sys

    from mmrun.market.history import load_rows

    rows = load_rows(sys.argv[1])
    for model in ("touch", "instant"):
        r = kernel_bars_per_s(rows, model, fee=0.001 if model == "touch" else 0.0)
        print(f"kernel {model:8s} {r['bars']:,} bars in {r['seconds'] * 1e3:.1f} ms = {r['bars_per_s'] / 1e6:.1f} M bars/s ({r['fills']:,} fills)")
    r = bare_numba_bars_per_s(rows)
    print(f"bare numba toy loop {r['bars_per_s'] / 1e6:.0f} M bars/s")
