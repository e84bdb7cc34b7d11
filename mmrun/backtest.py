"""Bulk replay of market rows through the compiled engine kernel (backtests)."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Dict, List

import numpy as np

from mmrun import engine, progress
from mmrun.market import ROW_FIELDS
from mmrun.recorder import PairOutcome, bulk_outcome

# Rows hashed per block: the fingerprint needs the rows row-major, and stacking a million of
# them at once would cost two 56 MB copies at the run's memory peak.
_HASH_BLOCK = 65536
# What is derived from a market's rows alone (its fingerprint, its mid), for the last few column
# sets, by the arrays' identity: a sweep's jobs in one process replay the same arrays
# (market.history's per-process cache), so each is computed once. Nothing writes to those
# arrays; a weak reference per array makes sure a key is not a reused id.
_DERIVED: "OrderedDict[tuple, tuple]" = OrderedDict()
_DERIVED_KEPT = 4


def _derived(ts_ms: np.ndarray, cols: List[np.ndarray]) -> Dict[str, object]:
    """The memo of these market arrays (a dict, filled by its users)."""
    arrays = (ts_ms, *cols)
    key = tuple(id(a) for a in arrays)
    hit = _DERIVED.get(key)
    if hit is not None and all(ref() is a for ref, a in zip(hit[0], arrays)):
        _DERIVED.move_to_end(key)
        return hit[1]
    memo: Dict[str, object] = {}
    _DERIVED[key] = ([weakref.ref(a) for a in arrays], memo)
    while len(_DERIVED) > _DERIVED_KEPT:
        _DERIVED.popitem(last=False)
    return memo


def fingerprint_columns(ts_ms: np.ndarray, cols: List[np.ndarray]) -> str:
    """sha256 of the market rows (ts_ms as float64, then ROW_FIELDS[1:]) laid out row-major.

    The same digest as recorder.fingerprint_rows over the stacked rows, and as the paper loop's
    running hash of the rows it cycled, computed a block at a time (once per set of arrays).
    """
    memo = _derived(ts_ms, cols)
    if "fingerprint" not in memo:
        memo["fingerprint"] = _sha256_rows(ts_ms, cols)
    return memo["fingerprint"]


def market_mid(ts_ms: np.ndarray, cols: List[np.ndarray]) -> np.ndarray:
    """(best bid + best ask) / 2 of the market rows (cols in ROW_FIELDS[1:] order), once per set
    of arrays (shared by the outcomes of every job on them: not to be written to)."""
    memo = _derived(ts_ms, cols)
    if "mid" not in memo:
        memo["mid"] = (cols[0] + cols[1]) / 2.0
    return memo["mid"]


def _sha256_rows(ts_ms: np.ndarray, cols: List[np.ndarray]) -> str:
    h = hashlib.sha256()
    n = ts_ms.shape[0]
    block = np.empty((min(n, _HASH_BLOCK), 1 + len(cols)))
    for start in range(0, n, _HASH_BLOCK):
        stop = min(n, start + _HASH_BLOCK)
        b = block[: stop - start]
        b[:, 0] = ts_ms[start:stop]
        for j, c in enumerate(cols, start=1):
            b[:, j] = c[start:stop]
        h.update(b)
    return h.hexdigest()


def run_backtest(pair: str, params: np.ndarray, state: np.ndarray, rows: Dict[str, np.ndarray]) -> PairOutcome:
    """Replay `rows` (ROW_FIELDS arrays, one row per quote cycle) from `state`; state is updated."""
    ts = np.ascontiguousarray(rows["ts_ms"], dtype=np.int64)
    cols = [np.ascontiguousarray(rows[k], dtype=np.float64) for k in ROW_FIELDS[1:]]
    bar = progress.bar(len(ts), f"backtest {pair}") if len(ts) >= progress.LONG_ROWS else None
    try:
        quoted, fills, fill_rows, base, quote = engine.run_bulk(params, state, *cols, progress=bar and bar.update)
    finally:
        if bar is not None:
            bar.close()
    fingerprint = fingerprint_columns(ts, cols)
    out = bulk_outcome(pair, ts, market_mid(ts, cols), quoted, fills, fill_rows, base, quote, fingerprint)
    out.quotes_dropped = engine.quotes_dropped(state)
    return out
