"""Writing a run's folder: per-pair frames, summaries and picture, the root summary, run_info.json.

runner.py builds and runs the pairs; everything that lands in the run folder is written here.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import polars as pl

from mmrun import __version__
from mmrun.config import PairSpec
from mmrun.errors import ConfigError, OutputError, RunFailed
from mmrun.inputs import start_balances
from mmrun.messages import caveats
from mmrun.record import read_events, safe_name, typed_events, write_csv, write_json, write_parquet
from mmrun.recorder import PairOutcome, discard_journals
from mmrun.stats import summary_metrics

log = logging.getLogger("mmrun")


# What a run writes into its folder (and each pair's subfolder). A folder holding only these
# (besides Hydra's .hydra/ and log) holds a previous run, which a new run replaces whole.
RUN_FILES = frozenset({
    "events.csv", "events.parquet", "equity.parquet", "market.parquet", "market.json", "summary.json",
    "report.png", "run_info.json", "returns.parquet", "validation.json",
})
_RUN_FILE_SUFFIXES = (".tmp", ".part.parquet")  # unfinished writes


class FolderRefused(ConfigError):
    """The run folder holds files that are not a previous run's: nothing is written to it."""


def pair_dirs(out_dir: Path, specs: List[PairSpec]) -> Dict[str, Path]:
    """Each pair's folder: out_dir itself for one pair, out_dir/<safe_name(pair)> for several.

    Pairs whose folder names would be the same (on a case-insensitive file system too) are a
    ConfigError. A previous run in out_dir is removed first (see clear_previous_run); the
    folders are created. Raises FolderRefused, OutputError.
    """
    single = len(specs) == 1
    if not single:
        seen: Dict[str, str] = {}
        for s in specs:
            key = safe_name(s.pair).lower()
            if key in seen:
                raise ConfigError(
                    f"pairs: {seen[key]} and {s.pair} would share the output folder {safe_name(s.pair)}: "
                    "run them separately"
                )
            seen[key] = s.pair
    dirs = {s.pair: out_dir if single else out_dir / safe_name(s.pair) for s in specs}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        clear_previous_run(out_dir)
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot prepare the run folder: {exc.strerror or exc}") from None
    return dirs


def _is_run_file(path: Path) -> bool:
    return path.is_file() and (path.name in RUN_FILES or path.name.endswith(_RUN_FILE_SUFFIXES))


def previous_run_entries(out_dir: Path, folder_key: str = "hydra.run.dir") -> List[Path]:
    """What a previous run left in out_dir: the run files (RUN_FILES, unfinished writes) and pair
    subfolders holding nothing else (not .hydra/ or the job's .log file). Raises FolderRefused
    for a killed paper run not yet recovered (a journal) or anything else in the folder (a file
    mmrun does not write; the message names folder_key, the setting that chose the folder)."""
    from mmrun.recorder import JOURNAL

    remove: List[Path] = []
    killed = [p for p in [out_dir / JOURNAL, *out_dir.glob(f"*/{JOURNAL}")] if p.is_file()]
    if killed:
        raise FolderRefused(
            f"{out_dir}: holds a paper run that was stopped before it finished ({killed[0].relative_to(out_dir)}): "
            f"python -m mmrun.recover {out_dir} writes its files; or choose another folder"
        )
    for entry in sorted(out_dir.iterdir()):
        if entry.name == ".hydra" or (entry.is_file() and entry.suffix == ".log"):
            continue
        if _is_run_file(entry):
            remove.append(entry)
        elif entry.is_dir() and not entry.is_symlink() and all(_is_run_file(p) for p in entry.iterdir()):
            remove.append(entry)
        else:
            raise FolderRefused(
                f"{out_dir}: holds {entry.name}, which is not part of an mmrun run: "
                f"choose a new or empty folder ({folder_key}=...)"
            )
    return remove


def clear_previous_run(out_dir: Path) -> List[Path]:
    """Remove a previous run from out_dir, so that the new run's folder is never a mix of two.

    Kept: .hydra/ (Hydra has just written this run's config there) and the job's .log file
    (emptied when a previous run was removed). Removed: previous_run_entries. Returns what was
    removed. Raises FolderRefused (see previous_run_entries) before anything is removed.
    """
    remove = previous_run_entries(out_dir)
    if not remove:
        return remove
    for entry in remove:
        if entry.is_dir():
            for p in entry.iterdir():
                p.unlink()
            entry.rmdir()
        else:
            entry.unlink()
    _empty_logs_in(out_dir)
    log.warning("%s held a previous run: replaced (%d files and folders removed)", out_dir, len(remove))
    return remove


def _empty_logs_in(folder: Path) -> None:
    """Empty the log files open in `folder` (Hydra's job log): they held the previous run's lines."""
    for handler in logging.getLogger().handlers:
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).parent == folder.resolve() and getattr(handler, "stream", None) is not None:
            handler.acquire()
            try:
                handler.stream.flush()
                handler.stream.seek(0)
                handler.stream.truncate()
            finally:
                handler.release()


def write_market_info(path: Path, cfg: Any, pair: str, feed: Any) -> None:
    """market.json next to market.parquet: the exchange's rules for the pair, so a replay
    (mode=backtest data.path=.../market.parquet) quotes on the same price grid."""
    r = feed.rules
    write_json(
        {"exchange": cfg.exchange.id, "pair": pair, "source": feed.name, "tick": r.tick, "lot": r.lot,
         "min_amount": r.min_amount, "min_notional": r.min_notional},
        path,
    )


def pair_summary(cfg: Any, spec: PairSpec, out: PairOutcome) -> Dict[str, Any]:
    # every pair starts all in quote: its capital is the value before the first cycle
    run = out.run
    first_mid = lambda: float(run.mid[0])  # noqa: E731
    initial_base = start_balances(cfg, spec.capital, first_mid)[0] if len(run.ts_ms) else 0.0
    fill_model = str(cfg.fills.model)  # read once: every DictConfig read is a walk through OmegaConf
    stats = summary_metrics(run, initial_value=spec.capital, initial_base=initial_base, fill_model=fill_model)
    ts = run.ts_ms
    from mmrun.market.history import summary_labels

    labels = out.labels or summary_labels(cfg, None)
    return {
        "pair": spec.pair,
        "exchange": labels["exchange"],
        "mode": cfg.mode,
        "status": out.status,
        **stats,
        "errors": out.errors,
        "quotes_dropped": _quotes_dropped(spec.pair, out),
        "data_source": labels["data_source"],
        "data_format": labels["data_format"],
        "gaps": labels["gaps"],
        "retries": out.retries,
        "trades_incomplete": out.trades_incomplete,
        **({"caveats": caveats(fill_model)} if caveats(fill_model) else {}),
        **({"initial_base": initial_base} if initial_base else {}),  # run.start=target: base held at the start
        "seed": cfg.seed,
        "data_fingerprint": out.fingerprint,
        "strategy": cfg.strategy.name,
        "spread": cfg.spread,
        "fill_model": fill_model,
        "capital": spec.capital,
        "fee_maker": cfg.fees.maker,
        "market_start": _iso(ts[0]) if len(ts) else None,
        "market_end": _iso(ts[-1]) if len(ts) else None,
        "mmrun_version": __version__,
    }


def _quotes_dropped(pair: str, out: PairOutcome) -> Dict[str, int]:
    """The pair's quotes not placed, by reason (engine.DROP_REASONS), logged when there are any."""
    from mmrun.engine import dropped_note

    dropped = dict(out.quotes_dropped or {})
    if any(dropped.values()):
        log.info("%s: quotes not placed, by reason (summary.json quotes_dropped): %s", pair, dropped_note(dropped))
    return dropped


def _iso(ts_ms: int) -> str:
    from mmrun.record import iso_ms

    return iso_ms(int(ts_ms))


def write_pair(folder: Path, out: PairOutcome, lean: bool = False) -> None:
    """The pair's frames: events (CSV if not streamed, always Parquet), equity, market.

    lean (a sweep job with sweep.outputs=lean): events.parquet alone, LZ4-compressed (faster to
    write, a fifth larger: record.write_parquet); a paper run's streamed
    events.csv is removed once events.parquet holds its rows (market.parquet stays)."""
    if out.events is not None:
        if not lean:
            write_csv(out.events, folder / "events.csv")
        write_parquet(out.events, folder / "events.parquet", fast=lean)
    else:
        write_parquet(typed_events(read_events(folder / "events.csv")), folder / "events.parquet", fast=lean)
        if lean:
            (folder / "events.csv").unlink()
    if lean:
        return
    write_parquet(out.equity, folder / "equity.parquet")
    if out.market is not None:
        write_parquet(out.market, folder / "market.parquet")


def aggregate(cfg: Any, summaries: List[Dict[str, Any]], outcomes: List[PairOutcome]) -> Dict[str, Any]:
    """The root summary of a several-pair run: totals, and metrics of the summed equity."""
    from mmrun.stats import max_drawdown_pct, sharpe

    total = None
    for out in outcomes:
        eq = out.equity.select("ts_ms", pl.col("equity").alias(safe_name(out.pair)))
        total = eq if total is None else total.join(eq, on="ts_ms", how="full", coalesce=True)
    total = total.sort("ts_ms").fill_null(strategy="forward").fill_null(strategy="backward")
    # a pair with no completed cycle holds its starting value throughout
    total = total.with_columns(pl.col(safe_name(s["pair"])).fill_null(s["initial_value"]) for s in summaries)
    equity = total.select(pl.sum_horizontal(pl.exclude("ts_ms"))).to_series().to_numpy()
    initial = sum(s["initial_value"] for s in summaries)
    final = sum(s["final_value"] for s in summaries)
    statuses = {s["status"] for s in summaries}
    return {
        "pair": ",".join(s["pair"] for s in summaries),
        "exchange": summaries[0]["exchange"],  # 'file' for a data file (output.pair_summary)
        "mode": cfg.mode,
        "status": statuses.pop() if len(statuses) == 1 else "mixed",
        "initial_value": initial,
        "final_value": final,
        "total_return_pct": (final - initial) / initial * 100.0,
        "pnl": final - initial,
        **{k: sum(s[k] for s in summaries) for k in ("trades", "buys", "sells", "volume_quote", "fees", "ticks", "errors")},
        "quotes_dropped": {r: sum(s["quotes_dropped"].get(r, 0) for s in summaries) for r in summaries[0]["quotes_dropped"]},
        "data_source": summaries[0]["data_source"],
        "data_format": summaries[0]["data_format"],
        "gaps": sum(s["gaps"] for s in summaries),
        **{k: sum(s.get(k, 0) for s in summaries) for k in ("retries", "trades_incomplete")},
        **({"caveats": caveats(cfg.fills.model)} if caveats(cfg.fills.model) else {}),
        "max_drawdown_pct": max_drawdown_pct(equity),
        "sharpe": sharpe(equity, total["ts_ms"].to_numpy()),
        "final_base": None,  # bases differ across pairs: see each pair's summary
        "final_quote": sum(s["final_quote"] for s in summaries),
        "seed": cfg.seed,
        "data_fingerprint": ",".join(s["data_fingerprint"] for s in summaries),
        "pairs": {s["pair"]: safe_name(s["pair"]) for s in summaries},
        "failed_pairs": [s["pair"] for s in summaries if s["status"] == "failed"],
        "mmrun_version": __version__,
    }


def import_plotting() -> None:
    try:
        import mmrun.report  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
        from matplotlib import figure  # noqa: F401
    except Exception:  # the picture step reports any problem itself
        pass


def _picture(cfg: Any, folder: Path, out: PairOutcome, summary: Dict[str, Any]) -> None:
    """report.png beside the pair's summary; a plotting failure is logged, never fails the run."""
    from mmrun.report import write_report

    try:
        write_report(folder, out.equity, out.fills, summary, cfg.strategy, cfg.spread, cfg.sizing.order_size_pct)
    except Exception as exc:  # the results are written already; a missing picture must not lose them
        log.warning("report.png not written: %s: %s", type(exc).__name__, exc)


def write_outputs(cfg: Any, specs: List[PairSpec], outcomes: List[PairOutcome], dirs: Dict[str, Path],
                  out_dir: Path, lean: bool = False) -> Dict[str, Any]:
    """Every pair's frames, summary.json and report.png, and for several pairs the root
    summary.json; returns the (root) summary. lean: a lean sweep job (write_pair), no picture."""
    summaries = []
    for spec, out in zip(specs, outcomes):
        summary = pair_summary(cfg, spec, out)
        # the picture is drawn while the frames are written (Polars writes without the GIL)
        picture = None
        if not lean:
            picture = threading.Thread(target=_picture, args=(cfg, dirs[spec.pair], out, summary), name="mmrun-report")
            picture.start()
        write_pair(dirs[spec.pair], out, lean)
        write_json(summary, dirs[spec.pair] / "summary.json")
        discard_journals(dirs[spec.pair])  # a paper run's: its files are written now
        if picture is not None:
            picture.join()
        summaries.append(summary)
    if len(specs) == 1:
        return summaries[0]
    root = aggregate(cfg, summaries, outcomes)
    write_json(root, out_dir / "summary.json")
    try:  # one picture of every pair at the root; a plotting failure never fails the run
        from mmrun.report import write_overview

        write_overview(out_dir, [o.equity for o in outcomes], summaries, root)
    except Exception as exc:
        log.warning("report.png (all pairs) not written: %s: %s", type(exc).__name__, exc)
    return root


def print_summary(s: Dict[str, Any], out_dir: Path, wall_s: float) -> None:
    quote = s["pair"].split(",")[0].split("/")[-1]
    lines = [
        f"mmrun  {s['pair']}  {s['exchange']}  {s['mode']}  {s['status']}  {s['ticks']} ticks  ({wall_s:.2f} s)",
        f"  value   {s['initial_value']:,.2f} -> {s['final_value']:,.2f} {quote}  ({s['total_return_pct']:+.3f} %, pnl {s['pnl']:+,.2f})"
        + ("  (no completed cycle: the starting value)" if s["ticks"] == 0 else ""),
        f"  trades  {s['trades']} ({s['buys']} buys, {s['sells']} sells), volume {s['volume_quote']:,.2f}, fees {s['fees']:,.2f}",
        f"  risk    max drawdown {s['max_drawdown_pct']:.3f} %, sharpe {s['sharpe']:.2f}, errors {s['errors']}"
        + (f", retries {s['retries']}" if s.get("retries") else ""),
    ]
    if s.get("exchange") == "file" or (s.get("mode") == "backtest" and s.get("data_source") not in (None, "sim")):
        lines.insert(1, f"  data    {s['data_source']} ({s['data_format']}), gaps {s.get('gaps', 0)}")
    lines += [f"  note    {c}" for c in s.get("caveats") or ()]
    if s.get("pairs"):
        from mmrun.messages import pair_lines, read_pair_summaries

        lines += pair_lines(read_pair_summaries(out_dir, s["pairs"]))
    lines.append(f"  output  {out_dir}")
    print("\n".join(lines), flush=True)


def write_run_info(out_dir: Path, wall_start: float, cpu_start: Optional[float] = None) -> float:
    """run_info.json: the wall-clock facts of a run (start, seconds), its command and versions.

    cpu_start (a time.process_time() value taken with wall_start): given, cpu_seconds is the
    CPU time the process spent since, all its threads together (above wall_clock_seconds when
    the run kept more than one core busy). Returns the run's wall-clock seconds.
    """
    wall_s = time.time() - wall_start
    cpu = {} if cpu_start is None else {"cpu_seconds": round(time.process_time() - cpu_start, 3)}
    write_json(
        {
            "wall_clock_start_utc": datetime.fromtimestamp(wall_start, tz=timezone.utc).isoformat(),
            "wall_clock_seconds": round(wall_s, 3),
            **cpu,
            "command": " ".join(sys.argv),
            "python": sys.version.split()[0],
            "versions": _versions(),
        },
        out_dir / "run_info.json",
    )
    return wall_s


@functools.lru_cache(maxsize=1)
def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mmrun", "hydra-core", "omegaconf", "numba", "numpy", "polars", "ccxt", "tenacity"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_failure(summary: Dict[str, Any], out_dir: Path) -> Optional[RunFailed]:
    """RunFailed naming the failed pair(s) of a finished run (its folder is written), else None."""
    failed = summary.get("failed_pairs") or ([summary["pair"]] if summary.get("status") == "failed" else [])
    if not failed:
        return None
    return RunFailed(f"{', '.join(failed)}: the pair stopped on an error (see the ERROR line in its events.csv); "
                     f"results so far in {out_dir}")


def _failed_exchange_label(cfg: Any) -> str:
    """summary.json's exchange for a run that failed before its market was read: 'file' for a
    data-file backtest on the default exchange (as a finished one says), else exchange.id."""
    ex = str(cfg.exchange.get("id"))
    try:
        from mmrun.config import data_file_backtest

        return "file" if ex == "sim" and data_file_backtest(cfg) else ex
    except Exception:  # noqa: BLE001 - a config too broken to tell: its exchange as given
        return ex


def run_failed_job(cfg: Any, out_dir: Path, exc: BaseException, wall_start: Optional[float] = None) -> None:
    """A sweep job that failed: its summary says so, with the error, so the sweep report lists it.

    wall_start (a time.time() value): when the job started; given, run_info.json is written too.
    A folder refused (FolderRefused) gets nothing; a folder that cannot be written (OutputError,
    OSError) is left as it is: the error itself is what the command reports.
    """
    from mmrun.cli_errors import one_line

    if isinstance(exc, FolderRefused):
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if wall_start is not None:
            write_run_info(out_dir, wall_start)
        write_json(
            {
                "pair": str(cfg.get("pair")),
                "exchange": _failed_exchange_label(cfg),
                "mode": str(cfg.get("mode")),
                "status": "failed",
                "error": one_line(exc),
                "seed": cfg.get("seed"),
            },
            out_dir / "summary.json",
        )
    except (OSError, OutputError) as write_exc:
        log.error("%s: the failure could not be recorded in summary.json: %s", out_dir, write_exc)
