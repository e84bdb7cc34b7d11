"""Hand-made market rows for tests."""

import numpy as np


def random_market(n: int, seed: int, price: float = 100.0) -> dict:
    """A random-walk market of n rows (mmrun.market.ROW_FIELDS) with some rows that trade nothing."""
    rng = np.random.default_rng(seed)
    mid = price * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    half = mid * rng.uniform(0, 0.001, n)
    bid, ask = mid - half, mid + half
    last = mid * (1 + rng.normal(0, 0.0005, n))
    width = mid * np.abs(rng.normal(0, 0.004, n))
    low = np.minimum(bid, last) - width * rng.uniform(0, 1, n)
    high = np.maximum(ask, last) + width * rng.uniform(0, 1, n)
    volume = rng.exponential(2.0, n)
    quiet = rng.random(n) < 0.15
    low[quiet] = np.nan
    high[quiet] = np.nan
    volume[quiet] = 0.0
    ts = 1_767_225_600_000 + np.arange(n, dtype=np.int64) * 60_000
    return {"ts_ms": ts, "bid": bid, "ask": ask, "last": last, "low": low, "high": high, "volume": volume}
