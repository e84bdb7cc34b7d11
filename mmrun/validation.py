"""Out-of-sample checks inside one run: the held-out end of the data, walk-forward folds, period returns.

What a run leaves for its sweep's overfitting report (mmrun.overfit_report):

- `returns.parquet`: the run's equity on a fixed grid of periods (PERIODS equal slices of the
  run's market span), so every job of a sweep on the same data has returns on the same periods
  whichever launcher ran it. Columns: period (0-based), start_ms, end_ms, equity (quote currency,
  the last equity at or before end_ms; several pairs summed), return (equity / previous - 1).
- `validation.json` (backtests with `sweep.holdout` > 0 or `sweep.folds` > 0): the metrics of
  the held-out part and of each fold, per pair.

`sweep.holdout` = h keeps the last h of the data's time span out of the run: the run's own
results (summary.json, what a sweeper sees and the sweep ranks) come from the first 1 - h, and
the held-out rows are replayed separately, from the starting capital. `sweep.folds` = k cuts the
searched span into k + 1 equal time blocks B0..Bk; fold i (1..k) tests on Bi after training on
B0..B(i-1) (`sweep.fold_window=anchored`, the default) or on B(i-1) alone (`rolling`). The held-out
part is never inside a fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import polars as pl

from mmrun.errors import ConfigError, DataError

RETURNS_FILE = "returns.parquet"
VALIDATION_FILE = "validation.json"
# Periods of the returns grid: 256 = 16 CSCV blocks of 16 periods (mmrun.overfit.pbo_cscv)
PERIODS = 256
FOLD_WINDOWS = ("anchored", "rolling")
MIN_ROWS = 2  # the fewest rows a window may hold


# ---------------------------------------------------------------- period returns


def period_returns(equities: Sequence[pl.DataFrame], periods: int = PERIODS) -> pl.DataFrame:
    """The summed equity of `equities` (frames with ts_ms, equity) on `periods` equal time slices.

    The span runs from the first to the last timestamp of all frames; slice k ends at
    start + round(k x span / P). Fewer distinct timestamps than P + 1: P = their count - 1.
    Each frame's equity is carried forward between its own rows (and backward before its first).
    Returns columns period, start_ms, end_ms, equity, return; empty with fewer than 2 timestamps.
    """
    frames = [e.select("ts_ms", pl.col("equity").alias(f"e{i}")) for i, e in enumerate(equities) if e.height]
    empty = pl.DataFrame(schema={"period": pl.Int64, "start_ms": pl.Int64, "end_ms": pl.Int64,
                                 "equity": pl.Float64, "return": pl.Float64})
    if not frames:
        return empty
    ts = frames[0]["ts_ms"].to_numpy().astype(np.int64) if len(frames) == 1 else None
    if ts is not None and bool(np.all(ts[1:] > ts[:-1])):
        # one run's equity (the usual case), strictly in time order: the same numbers without
        # the join and the sort (sum_horizontal of one column: its value, 0 where null)
        e = frames[0].get_column(frames[0].columns[1])
        eq = e.fill_null(strategy="forward").fill_null(strategy="backward").fill_null(0.0).to_numpy().astype(np.float64)
    else:
        total = frames[0]
        for f in frames[1:]:
            total = total.join(f, on="ts_ms", how="full", coalesce=True)
        total = total.sort("ts_ms").fill_null(strategy="forward").fill_null(strategy="backward")
        ts = total["ts_ms"].to_numpy().astype(np.int64)
        eq = total.select(pl.sum_horizontal(pl.exclude("ts_ms"))).to_series().to_numpy().astype(np.float64)
    return _on_grid(ts, lambda idx: eq[idx], periods)


def _on_grid(ts: np.ndarray, equity_at: Callable[[np.ndarray], np.ndarray], periods: int) -> pl.DataFrame:
    """period_returns' frame from the strictly rising timestamps ts (ms, (n,)) and equity_at(rows),
    the equity (quote) at those rows."""
    p = min(periods, ts.size - 1)
    if p < 1:
        return pl.DataFrame(schema={"period": pl.Int64, "start_ms": pl.Int64, "end_ms": pl.Int64,
                                    "equity": pl.Float64, "return": pl.Float64})
    t0, t1 = int(ts[0]), int(ts[-1])
    bounds = t0 + np.round(np.arange(p + 1) * ((t1 - t0) / p)).astype(np.int64)
    at = equity_at(np.searchsorted(ts, bounds, side="right") - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(at[:-1] > 0, at[1:] / at[:-1] - 1.0, 0.0)
    return pl.DataFrame(
        {
            "period": np.arange(p, dtype=np.int64),
            "start_ms": bounds[:-1],
            "end_ms": bounds[1:],
            "equity": at[1:],
            "return": ret,
        }
    )


def write_returns(folder: Path, outcomes: Sequence[Any]) -> None:
    """returns.parquet in folder: period_returns of the run's equity (the PairOutcomes', summed).
    A backtest of one pair is read off its arrays (stats.RunArrays: strictly rising times, the
    equity quote + base x mid, computed at the grid's rows only), the same numbers as from its
    equity frame."""
    from mmrun.record import write_parquet

    run = outcomes[0].run if len(outcomes) == 1 else None
    if run is not None and run.equity is None and run.ts_ms.size:
        df = _on_grid(run.ts_ms, lambda idx: run.quote[idx] + run.base[idx] * run.mid[idx], PERIODS)
    else:
        df = period_returns([o.equity for o in outcomes])
    write_parquet(df, Path(folder) / RETURNS_FILE)


# ---------------------------------------------------------------- time windows


@dataclass(frozen=True)
class Window:
    """Rows lo..hi-1 of a run's market rows, and the times they span."""

    lo: int
    hi: int  # exclusive
    start_ms: int
    end_ms: int  # the last row's timestamp

    def take(self, rows: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The window's slice of every column of rows (views, not copies)."""
        return {k: v[self.lo : self.hi] for k, v in rows.items()}

    def describe(self) -> Dict[str, Any]:
        from mmrun.record import iso_ms

        return {"start": iso_ms(self.start_ms), "end": iso_ms(self.end_ms), "rows": self.hi - self.lo}


@dataclass(frozen=True)
class Plan:
    """The windows of one pair's rows: the searched part, the held-out part, the folds."""

    holdout: float
    search: Window
    held: Optional[Window]
    folds: List[tuple]  # (train Window, test Window) per fold
    fold_window: str


def active(sweep: Any) -> bool:
    """True if the sweep section asks for a holdout or folds."""
    return bool(getattr(sweep, "holdout", 0) or 0) or bool(getattr(sweep, "folds", 0) or 0)


def plan(sweep: Any, ts_ms: np.ndarray, where: str) -> Plan:
    """Cut sorted timestamps ts_ms (one per market row) by sweep.holdout, sweep.folds, sweep.fold_window.

    The held-out part starts at the first row at or after t0 + (1 - h) x (t_last - t0); fold
    blocks are equal time slices of the searched part. where: the data's name, for errors.
    Raises DataError naming the key if any window would hold fewer than MIN_ROWS rows.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    n = ts.size
    h = float(getattr(sweep, "holdout", 0.0) or 0.0)
    k = int(getattr(sweep, "folds", 0) or 0)
    mode = str(getattr(sweep, "fold_window", "anchored") or "anchored")
    if n < MIN_ROWS:
        raise DataError(f"{where}: {n} rows; sweep.holdout / sweep.folds need at least {2 * MIN_ROWS}")
    t0, t1 = int(ts[0]), int(ts[-1])

    def window(lo: int, hi: int, key: str) -> Window:
        if hi - lo < MIN_ROWS:
            raise DataError(
                f"{key}: a window of {where} from row {lo} holds {hi - lo} rows, fewer than {MIN_ROWS}: "
                "use fewer folds, a different sweep.holdout, or more data"
            )
        return Window(lo, hi, int(ts[lo]), int(ts[hi - 1]))

    if h > 0:
        cut_ms = t0 + (1.0 - h) * (t1 - t0)
        cut = int(np.searchsorted(ts, cut_ms, side="left"))
        search = window(0, cut, f"sweep.holdout={h:g}")
        held: Optional[Window] = window(cut, n, f"sweep.holdout={h:g}")
        end_ms = cut_ms
    else:
        search, held, end_ms = window(0, n, "sweep.holdout"), None, None
    folds = []
    if k > 0:
        s_end = float(end_ms) if end_ms is not None else float(t1) + 1.0  # the last row inside
        edges = [int(np.searchsorted(ts, t0 + i * (s_end - t0) / (k + 1), side="left")) for i in range(k + 2)]
        edges[0], edges[-1] = 0, search.hi
        for i in range(1, k + 1):
            key = f"sweep.folds={k}"
            train = window(edges[0] if mode == "anchored" else edges[i - 1], edges[i], key)
            folds.append((train, window(edges[i], edges[i + 1], key)))
    return Plan(h, search, held, folds, mode)


# ---------------------------------------------------------------- replaying the windows


def metrics(outcome: Any, capital: float) -> Dict[str, Any]:
    """The summary metrics (mmrun.stats) of a replayed window that started with `capital` in quote."""
    from mmrun.stats import summary_metrics

    out = summary_metrics(outcome.run, initial_value=capital)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def evaluate(p: Plan, rows: Dict[str, np.ndarray], replay: Callable[[Dict[str, np.ndarray]], Any], capital: float) -> Dict[str, Any]:
    """Replay the held-out part and every fold's two windows; their metrics, for validation.json.

    replay(rows) runs the configured market maker from its starting state over rows and returns
    its PairOutcome (equity and fills frames).
    """
    out: Dict[str, Any] = {"search": p.search.describe()}
    if p.held is not None:
        out["holdout"] = {**p.held.describe(), "metrics": metrics(replay(p.held.take(rows)), capital)}
    if p.folds:
        out["folds"] = [
            {
                "fold": i,
                "train": {**tr.describe(), "metrics": metrics(replay(tr.take(rows)), capital)},
                "test": {**te.describe(), "metrics": metrics(replay(te.take(rows)), capital)},
            }
            for i, (tr, te) in enumerate(p.folds, start=1)
        ]
    return out


def write_validation(folder: Path, sweep: Any, pairs: Dict[str, Dict[str, Any]]) -> None:
    """validation.json in folder: the settings and, per pair, what evaluate() found."""
    from mmrun.record import write_json

    write_json(
        {
            "holdout": float(sweep.holdout or 0.0),
            "folds": int(sweep.folds or 0),
            "fold_window": str(sweep.fold_window),
            "pairs": pairs,
        },
        Path(folder) / VALIDATION_FILE,
    )


def check_mode(cfg: Any) -> None:
    """sweep.holdout / sweep.folds work on backtests only (a paper run has no data to hold out)."""
    if active(cfg.sweep) and cfg.mode != "backtest":
        raise ConfigError(
            f"sweep.holdout / sweep.folds need mode=backtest (a {cfg.mode} run has no data to hold out): "
            "add mode=backtest, or set sweep.holdout=0 sweep.folds=0"
        )


def check_settings(sweep: Any) -> None:
    """Ranges of sweep.holdout, sweep.folds and sweep.fold_window. Raises ConfigError."""
    h = getattr(sweep, "holdout", 0.0)
    if h is None or not (isinstance(h, (int, float)) and math.isfinite(h) and 0 <= h < 1):
        raise ConfigError(f"sweep.holdout={h} is out of range: allowed a fraction of the data's span in [0, 1) (0 = off)")
    k = getattr(sweep, "folds", 0)
    if k is None or not (isinstance(k, int) and 0 <= k <= 50):
        raise ConfigError(f"sweep.folds={k} is out of range: allowed a whole number from 0 (off) to 50")
    mode = getattr(sweep, "fold_window", "anchored")
    if mode not in FOLD_WINDOWS:
        raise ConfigError(f"sweep.fold_window={mode!r} is not allowed: choose one of {', '.join(FOLD_WINDOWS)}")


# ---------------------------------------------------------------- the run's side


def split_run(cfg: Any, pair: str, rows: Dict[str, np.ndarray], replay: Callable, capital: float) -> tuple:
    """(rows the run itself replays, validation.json's entry for the pair or None).

    Off (sweep.holdout = 0, sweep.folds = 0): (rows, None). Otherwise the searched rows, after
    replaying the held-out part and the folds with replay(rows) -> PairOutcome (see evaluate).
    """
    if not active(cfg.sweep):
        return rows, None
    where = str(cfg.data.path) if cfg.data.path is not None else f"the market data of {pair}"
    p = plan(cfg.sweep, rows["ts_ms"], where)
    return p.search.take(rows), evaluate(p, rows, replay, capital)


def write_outputs(cfg: Any, folder: Path, outcomes: Sequence[Any], checked: Dict[str, Any]) -> None:
    """The run's returns.parquet (from the PairOutcomes' equity), and validation.json if any
    pair was checked (checked: pair -> split_run's entry)."""
    write_returns(folder, outcomes)
    if checked:
        write_validation(folder, cfg.sweep, checked)
