"""Bulk replay of market rows through the compiled engine kernel (backtests)."""

from __future__ import annotations

from typing import Dict

import numpy as np
import polars as pl

from mmrun import engine
from mmrun.maker import PairOutcome, fills_frame, fingerprint_rows
from mmrun.market import ROW_FIELDS
from mmrun.record import EQUITY_SCHEMA, events_frame, frame


def run_backtest(pair: str, params: np.ndarray, state: np.ndarray, rows: Dict[str, np.ndarray]) -> PairOutcome:
    """Replay `rows` (ROW_FIELDS arrays, one row per quote cycle) from `state`; state is updated."""
    ts = np.ascontiguousarray(rows["ts_ms"], dtype=np.int64)
    cols = [np.ascontiguousarray(rows[k], dtype=np.float64) for k in ROW_FIELDS[1:]]
    bid, ask = cols[0], cols[1]
    quoted, fills, fill_rows, base, quote = engine.run_bulk(params, state, *cols)
    mid = (bid + ask) / 2.0
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
    f_side = fills[:, engine.F_SIDE]
    fills_df = fills_frame(
        f_ts, f_side, fills[:, engine.F_PRICE], fills[:, engine.F_AMOUNT], fills[:, engine.F_FEE],
        fills[:, engine.F_BASE], fills[:, engine.F_QUOTE],
    )
    events = events_frame(
        f_ts,
        "FILL",
        pair,
        np.where(f_side > 0, "buy", "sell"),
        price=fills[:, engine.F_PRICE],
        amount=fills[:, engine.F_AMOUNT],
        base=fills[:, engine.F_BASE],
        quote=fills[:, engine.F_QUOTE],
        fee=fills[:, engine.F_FEE],
        mid=mid[fill_rows],
    )
    market_rows = np.column_stack([ts.astype(np.float64)] + cols)
    return PairOutcome(
        pair=pair,
        status="completed",
        equity=equity,
        fills=fills_df,
        market=None,
        fingerprint=fingerprint_rows(market_rows),
        events=events,
    )
