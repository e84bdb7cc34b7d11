"""Messages that say what happened: which quote levels an exchange's minimums keep off the book,
a run's failure written to its log file, the caveat a fill model puts on the metrics, and one
terminal line per pair of a several-pair run."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Sequence


def _ranges(levels: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5' (level numbers from 1)."""
    out: List[str] = []
    start = prev = None
    for k in levels:
        if start is None:
            start = prev = k
        elif k == prev + 1:
            prev = k
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = k
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def level_sizes(capital: float, order_size_pct: float, max_exposure: float, levels: int, size_step: float,
                last: float, lot: float = 0.0) -> List[float]:
    """Nominal order size of each level, base units: capital x min(order_size_pct, max_exposure)
    / last, times (1 + k x size_step) for level k (from 0), capped at capital x max_exposure /
    last, floored to the lot (0 = no lot); strategy.ladder's rule before any inventory lean."""
    size = capital * min(order_size_pct, max_exposure) / last
    cap = capital * max_exposure / last
    out = []
    for k in range(max(1, levels)):
        s = min(size * (1.0 + k * size_step), cap) if k else size
        if lot > 0.0:
            s = math.floor(s / lot + 1e-9) * lot
        out.append(s)
    return out


def minimums_text(sizes: Sequence[float], last: float, min_amount: float, min_notional: float, quote: str = "") -> str:
    """'' when every level meets the exchange's minimums; else which levels are not placed and
    why, and which are ('level 1 of 3 not placed: order value 4.20 USDT below the exchange's
    minimum notional 5; levels 2-3 placed')."""
    dropped, reasons, placed = [], [], []
    unit = f" {quote}" if quote else ""
    for k, size in enumerate(sizes, start=1):
        if size <= 0.0 or size < min_amount:
            dropped.append(k)
            reasons.append(f"order size {size:.8g} below the exchange's minimum amount {min_amount:g}")
        elif size * last < min_notional:
            dropped.append(k)
            reasons.append(f"order value {size * last:.2f}{unit} below the exchange's minimum notional {min_notional:g}")
        else:
            placed.append(k)
    if not dropped:
        return ""
    n = len(sizes)
    if n == 1:
        return f"quotes not placed: {reasons[0]} (the exchange would reject them)"
    why = reasons[0] if len(set(reasons)) == 1 else "; ".join(f"level {k}: {r}" for k, r in zip(dropped, reasons))
    head = (f"all {n} levels not placed" if not placed else
            f"level{'s' if len(dropped) > 1 else ''} {_ranges(dropped)} of {n} not placed")
    tail = "" if not placed else f"; level{'s' if len(placed) > 1 else ''} {_ranges(placed)} placed"
    return f"{head}: {why} (the exchange would reject them){tail}"


def log_to_files(logger: logging.Logger, level: int, message: str) -> None:
    """Write message to the log files only (the run's mmrun.log), not to the terminal: the
    terminal gets mmrun's own one-line error instead."""
    record = logger.makeRecord(logger.name, level, __file__, 0, message, None, None)
    seen = set()
    node: Any = logger
    while node is not None:
        for handler in getattr(node, "handlers", []):
            if isinstance(handler, logging.FileHandler) and id(handler) not in seen and level >= handler.level:
                seen.add(id(handler))
                handler.handle(record)
        node = node.parent if getattr(node, "propagate", False) else None


INSTANT_CAVEAT = (
    "fills=instant fills every quote at once at its own price: sharpe, sortino, max_drawdown_pct, fill_ratio "
    "and spread_captured_bps describe that rule, not a market (use fills=touch for those)"
)


def caveats(fill_model: str) -> List[str]:
    """Notes on metrics that mean little under the fill model used (summary.json `caveats`)."""
    return [INSTANT_CAVEAT] if fill_model == "instant" else []


def pair_lines(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """One terminal line per pair of a several-pair run: status, return, fills, fees, drawdown."""
    width = max((len(str(s.get("pair", ""))) for s in summaries), default=0)
    lines = []
    for s in summaries:
        quote = str(s.get("pair", "")).partition("/")[2].partition(":")[0]
        lines.append(
            f"  {str(s.get('pair', '')).ljust(width)}  {s.get('status', '')}  "
            f"{s.get('initial_value', 0.0):,.2f} -> {s.get('final_value', 0.0):,.2f} {quote} "
            f"({s.get('total_return_pct', 0.0):+.3f} %), {s.get('trades', 0)} fills, fees {s.get('fees', 0.0):,.2f}, "
            f"max drawdown {s.get('max_drawdown_pct', 0.0):.3f} %, errors {s.get('errors', 0)}"
        )
    return lines


def read_pair_summaries(out_dir: Any, folders: Dict[str, str]) -> List[Dict[str, Any]]:
    """The per-pair summary.json files of a several-pair run (root summary's `pairs` map), in
    its order; a pair whose summary cannot be read is listed by name with status 'unknown'."""
    import json
    from pathlib import Path

    out = []
    for pair, folder in folders.items():
        try:
            out.append(json.loads((Path(out_dir) / folder / "summary.json").read_text()))
        except (OSError, ValueError):
            out.append({"pair": pair, "status": "unknown"})
    return out
