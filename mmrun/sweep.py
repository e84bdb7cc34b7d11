"""The sweep report: a Hydra callback that, when a multirun ends, ranks every job of the sweep.

It reads each job folder (its `.hydra/overrides.yaml`, `summary.json` and `run_info.json`)
and writes, at the sweep's root:

- `sweep_summary.csv` and `sweep_summary.parquet`: one row per job, best first by the
  configured objective (`sweep.objective`, `sweep.direction`): `rank, job`, the swept
  parameters, `status`, every summary metric, `error`, `wall_clock_seconds`, `folder`;
  jobs that failed or never wrote a summary are failed rows at the end (rank empty);
- `heatmap.png`: the objective over the two swept parameters, when exactly two numeric
  parameters are swept;

and prints a leaderboard of the top `sweep.top` rows. With lean job folders (`sweep.outputs=lean`,
the default) those top jobs are first re-run into full folders, `top/<job>/` (events.csv,
equity.parquet, report.png, ...), and the `full_folder` column and the leaderboard point at them. It reads files, not Hydra's in-memory
job returns, so it works the same for every launcher (joblib, Ray, submitit) and sweeper
(grid, Optuna), and `python -m mmrun.sweep SWEEP_DIR` rebuilds the report of any sweep folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import polars as pl
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mmrun.config import DIRECTIONS, OBJECTIVES, check_sweep
from mmrun.errors import ConfigError, MmrunError
from mmrun.record import load_yaml, read_json_object, write_csv, write_parquet

log = logging.getLogger("mmrun.sweep")

SUMMARY_CSV = "sweep_summary.csv"
SUMMARY_PARQUET = "sweep_summary.parquet"
TOP_DIR = "top"  # <sweep>/top/<job>: the full re-runs of the best jobs of a lean sweep
HEATMAP_PNG = "heatmap.png"
TRIALS_PNG = "trials.png"  # an Optuna search: the objective by trial
# Metrics shown in the leaderboard beside the objective (when the summaries have them).
BOARD_METRICS = ("total_return_pct", "pnl", "trades", "max_drawdown_pct", "sharpe")
# Above this many distinct values on an axis the objective is drawn as a scatter, not a grid
# (an Optuna search samples continuous values; a grid sweep lists a few).
MAX_GRID_AXIS = 30


@dataclass
class Job:
    """One job folder of a sweep, as read from disk."""

    num: int  # Hydra's job number (hydra.job.num)
    folder: Path
    overrides: Dict[str, Any]  # override key -> typed value, in the order given
    summary: Dict[str, Any]  # summary.json; {} if the job wrote none
    wall_clock_seconds: Optional[float]  # from run_info.json; None if the job wrote none
    lines: List[str] = field(default_factory=list)  # the override strings, as in .hydra/overrides.yaml


@dataclass
class Report:
    """What write_report produced."""

    path: Path  # sweep_summary.csv
    table: pl.DataFrame  # its rows, best first
    swept: List[str]  # the swept parameters (override keys), in command-line order
    objective: str
    direction: str
    failed: int  # rows whose status is failed
    leaderboard: str  # the text printed at the end of a sweep
    heatmap: Optional[Path]  # heatmap.png if drawn
    trust: Optional[Any] = None  # mmrun.overfit_report.Assessment: sweep.json, is_oos.png
    interrupted: bool = False  # Ctrl-C (or SIGTERM) while it was made: the top jobs' re-runs may be missing


# ---------------------------------------------------------------- reading job folders


def parse_overrides(lines: Iterable[str]) -> Dict[str, Any]:
    """Hydra override strings -> {key: typed value} ('spread=0.001' -> {'spread': 0.001}).

    Sweep expressions ('spread=0.1,0.2', 'interval(...)') map to their text; deletions are skipped.
    """
    out: Dict[str, Any] = {}
    for line in lines:
        parsed = _parsed_override(str(line))
        if parsed is not None:
            out[parsed[0]] = parsed[1]
    return out


@functools.lru_cache(maxsize=65536)
def _parsed_override(line: str) -> Optional[Tuple[str, Any]]:
    """(key, typed value) of one override string by Hydra's parser; None for a deletion. Kept: a
    sweep's jobs repeat a few distinct strings (the parser costs about a millisecond each)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (o,) = OverridesParser.create().parse_overrides([line])
    if o.is_delete():
        return None
    return o.key_or_group, str(o.value()) if o.is_sweep_override() else o.value()


def sweep_keys(lines: Iterable[str]) -> List[str]:
    """The keys of the sweep expressions among Hydra override strings ('spread=0.1,0.2' -> spread)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(x) for x in lines])
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


# hydra.mode and hydra.job.num as Hydra writes hydra.yaml (two- and four-space block indents)
_MODE_LINE = re.compile(r"^  mode: (\S+)$", re.MULTILINE)
_NUM_LINE = re.compile(r"^  job:\n(?:    .*\n|      .*\n)*?    num: (\d+)$", re.MULTILINE)


def _mode_and_num(hydra_yaml: Path) -> Tuple[Any, Any]:
    """(hydra.mode, hydra.job.num) of a job's .hydra/hydra.yaml: read off the lines where Hydra
    writes them (a sweep report reads thousands of these files), else by parsing the YAML.
    Raises OSError and yaml.YAMLError."""
    with open(hydra_yaml, encoding="utf-8") as f:
        text = f.read()
    mode, num = _MODE_LINE.findall(text), _NUM_LINE.findall(text)
    if len(mode) == 1 and len(num) == 1:
        return mode[0], int(num[0])
    hydra_cfg = (load_yaml(text) or {}).get("hydra", {})
    return hydra_cfg.get("mode"), (hydra_cfg.get("job") or {}).get("num")


def _interned(obj: Any) -> Any:
    """A JSON value with its keys and strings interned: a sweep's thousands of summaries repeat the
    same field names and many values (pair, status, data fingerprint), held once instead."""
    if isinstance(obj, dict):
        return {sys.intern(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_interned(v) for v in obj]
    return sys.intern(obj) if isinstance(obj, str) else obj


def read_jobs(sweep_dir: Path) -> List[Job]:
    """Every job folder under sweep_dir (a folder whose .hydra/hydra.yaml is a multirun job's)."""
    jobs = []
    for hydra_yaml in sorted(sweep_dir.glob("**/.hydra/hydra.yaml")):
        folder = hydra_yaml.parent.parent
        try:
            mode, num = _mode_and_num(hydra_yaml)
            with open(folder / ".hydra" / "overrides.yaml", encoding="utf-8") as f:
                lines = [str(x) for x in (load_yaml(f) or [])]
            overrides = parse_overrides(lines)
        except (OSError, yaml.YAMLError) as exc:
            log.warning("%s: not a readable job folder (%s); skipped", folder, exc)
            continue
        if mode != "MULTIRUN" or not isinstance(num, int):
            continue
        info = read_json_object(folder / "run_info.json")
        wall = info.get("wall_clock_seconds")
        jobs.append(
            Job(
                num=num,
                folder=folder,
                overrides=overrides,
                summary=_interned(read_json_object(folder / "summary.json")),
                wall_clock_seconds=float(wall) if isinstance(wall, (int, float)) else None,
                lines=lines,
            )
        )
    jobs.sort(key=lambda j: j.num)
    return jobs


def swept_parameters(jobs: Sequence[Job], declared: Iterable[str] = ()) -> List[str]:
    """The parameters that make jobs differ: those declared as swept, plus any whose value varies.

    `declared` are the keys of the command line's sweep expressions and of hydra.sweeper.params;
    without them (a report rebuilt from folders alone) the keys whose values differ are used.
    """
    declared = set(declared)
    order: List[str] = []
    for job in jobs:
        for key in job.overrides:
            if key not in order:
                order.append(key)
    out = []
    for key in order:
        values = {json.dumps(job.overrides.get(key), sort_keys=True, default=str) for job in jobs}
        if key in declared or len(values) > 1:
            out.append(key)
    return out


# ---------------------------------------------------------------- the table


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _column(name: str, values: List[Any]) -> pl.Series:
    """A typed column: Int64 if all whole numbers, Float64 if all numbers, Boolean, else String."""
    present = [v for v in values if v is not None]
    if present and all(_is_number(v) for v in present):
        if all(isinstance(v, int) for v in present):
            return pl.Series(name, values, dtype=pl.Int64)
        floats = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]
        return pl.Series(name, floats, dtype=pl.Float64)
    if present and all(isinstance(v, bool) for v in present):
        return pl.Series(name, values, dtype=pl.Boolean)
    text = [None if v is None else (v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)) for v in values]
    return pl.Series(name, text, dtype=pl.String)


# the statuses of jobs that ran to their end (the market, the data or run.max_ticks): only these are
# ranked; a job `stopped` by a signal or `interrupted` (recovered after a kill) covers part of its run
RANKED_STATUSES = ("completed", "max_ticks")


def build_table(
    jobs: Sequence[Job], swept: Sequence[str], objective: str, direction: str, root: Optional[Path] = None
) -> pl.DataFrame:
    """One row per job, best first by objective (ties by job number); failed or unranked rows last
    (a job is ranked when its status is in RANKED_STATUSES and its objective is a number).

    root: the sweep folder; the `folder` column is relative to it.
    """
    metric_keys: List[str] = []
    for job in jobs:
        for key in job.summary:
            if key not in metric_keys and key not in ("status", "error") and key not in swept:
                metric_keys.append(key)
    if objective not in metric_keys:
        metric_keys.insert(0, objective)

    def status(job: Job) -> str:
        return str(job.summary.get("status") or "failed")

    def error(job: Job) -> Optional[str]:
        if not job.summary:
            return "no summary.json: the job did not finish"
        if job.summary.get("error") or status(job) in RANKED_STATUSES + ("failed",):
            return job.summary.get("error")
        return f"{status(job)} before its end: its figures cover part of its run, so it is not ranked"

    def score(job: Job) -> Optional[float]:
        v = job.summary.get(objective)
        if status(job) not in RANKED_STATUSES or not _is_number(v) or math.isnan(v):
            return None
        return float(v) if direction == "maximize" else -float(v)

    ranked = sorted((j for j in jobs if score(j) is not None), key=lambda j: (-score(j), j.num))
    unranked = sorted((j for j in jobs if score(j) is None), key=lambda j: j.num)
    rows = ranked + unranked
    cols = [
        pl.Series("rank", [i + 1 for i in range(len(ranked))] + [None] * len(unranked), dtype=pl.Int64),
        pl.Series("job", [j.num for j in rows], dtype=pl.Int64),
    ]
    cols += [_column(k, [j.overrides.get(k) for j in rows]) for k in swept]
    cols.append(pl.Series("status", [status(j) for j in rows], dtype=pl.String))
    cols += [_column(k, [j.summary.get(k) for j in rows]) for k in metric_keys]
    cols.append(pl.Series("error", [error(j) for j in rows], dtype=pl.String))
    cols.append(pl.Series("wall_clock_seconds", [j.wall_clock_seconds for j in rows], dtype=pl.Float64))
    cols.append(pl.Series("folder", [_relative(j.folder, root) for j in rows], dtype=pl.String))
    cols.append(pl.Series("full_folder", [_full_folder(j, root) for j in rows], dtype=pl.String))
    return pl.DataFrame(cols)


def _full_folder(job: Job, root: Optional[Path]) -> Optional[str]:
    """The job's folder with every file: its full re-run (top/<job>) if there is one, else its own
    folder if that is full (has report.png), else None (a lean job folder)."""
    if root is not None:
        rerun = root / TOP_DIR / str(job.num)
        if _finished(rerun):
            return _relative(rerun, root)
    if (job.folder / "report.png").is_file():
        return _relative(job.folder, root)
    return None


def _finished(folder: Path) -> bool:
    """A run folder whose run ended: run_info.json, the last file a run writes (runner.run)."""
    return (folder / "run_info.json").is_file()


def _relative(folder: Path, root: Optional[Path]) -> str:
    try:
        return folder.relative_to(root).as_posix() if root is not None else str(folder)
    except ValueError:
        return str(folder)


# ---------------------------------------------------------------- the leaderboard


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def leaderboard(table: pl.DataFrame, swept: Sequence[str], objective: str, direction: str, top: int, title: str) -> str:
    """The top rows as a fixed-width text table, then one line per failed job."""
    metrics = [objective] + [m for m in BOARD_METRICS if m != objective and m in table.columns]
    cols = ["rank", "job", *swept, *metrics, "status"]
    if "full_folder" in table.columns and table["full_folder"].null_count() < table.height:
        cols.append("full_folder")
    ranked = table.filter(pl.col("rank").is_not_null()).head(top)
    # each metric column in one format (fixed decimals: four significant digits of its largest
    # value; counts with thousands separators), so that its numbers line up; the swept values as
    # they were given
    from mmrun.report import number_format

    fmts = {c: number_format(ranked[c].cast(pl.Float64).to_numpy(), 4) if ranked[c].dtype == pl.Float64 else "{:,}"
            for c in metrics if ranked.height and ranked[c].dtype in (pl.Float64, pl.Int64)}
    body = [[fmts[c].format(v) if c in fmts and v is not None else _fmt(v) for c, v in zip(cols, row)]
            for row in ranked.select(cols).iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]
    n_ranked = table["rank"].drop_nulls().len()
    lines = [f"sweep {title}: {table.height} jobs, top {min(top, n_ranked)} by {objective} ({direction})"]
    lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    lines += ["  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in body]
    if n_ranked == 0:
        lines.append("  (no job finished with a value to rank)")
    for row in table.filter(pl.col("rank").is_null()).iter_rows(named=True):
        # a key the error already starts with ("data.path=x.csv: no such file") is not said twice
        params = " ".join(f"{k}={_fmt(row[k])}" for k in swept if not str(row["error"] or "").startswith(f"{k}="))
        # the error first (it may name a swept key itself), then the job's other swept values
        lines.append(f"  job {row['job']} {row['status']}: {row['error'] or 'no ' + objective}"
                     + (f" ({params})" if params else ""))
    return "\n".join(lines)


# ---------------------------------------------------------------- the heatmap


def heatmap(table: pl.DataFrame, swept: Sequence[str], objective: str, direction: str, path: Path) -> bool:
    """Draw the objective over exactly two numeric swept parameters into path; False if not drawable."""
    from mmrun.report import heatmap_picture

    return heatmap_picture(table, swept, objective, direction, path, max_grid_axis=MAX_GRID_AXIS)


# ---------------------------------------------------------------- the report


def write_report(
    sweep_dir: Path,
    objective: str = "total_return_pct",
    direction: str = "maximize",
    top: int = 10,
    declared: Optional[Iterable[str]] = None,
    rerun_full: Optional[Callable[[List[Tuple[int, List[str]]]], Any]] = None,
    rerun_apart: bool = False,
    cancel_reruns: Optional[Callable[[], None]] = None,
) -> Report:
    """Read the jobs under sweep_dir and write sweep_summary.csv/.parquet (and heatmap.png).

    declared: the swept keys if known (the callback knows them from the command line); None
    reads them from the sweep's multirun.yaml if present, else uses the keys whose values differ.
    rerun_full: given, called with [(job number, override strings)] of the top `top` ranked jobs
    that have no full folder yet, before the table is written; it writes their full re-runs
    into <sweep_dir>/top/<job>/ (mmrun.launch). rerun_apart: rerun_full runs the jobs in other
    processes (the launcher's workers), so it is called from a thread while the trust figures
    and pictures are made here; otherwise it runs first, in this thread. cancel_reruns: called
    on Ctrl-C while they run apart (it stops them), before the table is written without them.
    """
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise MmrunError(f"{sweep_dir}: no job folders of a sweep found (folders with .hydra/hydra.yaml)")
    if declared is None:
        declared = _declared_from_multirun_yaml(sweep_dir / "multirun.yaml")
    swept = swept_parameters(jobs, declared)
    table = build_table(jobs, swept, objective, direction, sweep_dir)
    reruns: Optional[threading.Thread] = None
    failure: List[BaseException] = []
    # Ctrl-C (or SIGTERM, see mmrun.launch) from here on: the table of the finished jobs is still
    # written, with the full folders that exist; the caller then ends the sweep as interrupted
    interrupted = False
    trust, drawn, png = None, False, sweep_dir / HEATMAP_PNG
    try:
        if rerun_full is not None:
            by_num = {j.num: j for j in jobs}
            best = table.filter((pl.col("rank") <= top) & pl.col("full_folder").is_null())["job"].to_list()
            if best:
                # with rerun_apart the re-runs happen in the launcher's worker processes: the trust
                # figures and the pictures, which depend only on the lean jobs' numbers, are made here
                # meanwhile; only the full_folder column waits for them.

                def rerun() -> None:
                    try:
                        rerun_full([(n, by_num[n].lines) for n in best])
                    except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                        failure.append(exc)

                reruns = threading.Thread(target=rerun, name="mmrun-full-reruns", daemon=True)
                if rerun_apart:
                    reruns.start()
                else:  # in this process (matplotlib, logging and Hydra's job state are not shared safely)
                    reruns.run()
        trust = _assess(sweep_dir, jobs, table, objective, direction)
        drawn = heatmap(table, swept, objective, direction, png)
        from mmrun.report import is_optuna_sweep, trials_picture

        if is_optuna_sweep(sweep_dir):  # a search: the objective by trial and the best so far
            trials_picture(table, objective, direction, sweep_dir / TRIALS_PNG)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        while True:  # a Ctrl-C may land anywhere, here too: it only makes this an interrupted report
            try:
                if reruns is not None and rerun_apart and reruns.ident is not None:
                    interrupted = _wait_for_reruns(reruns, interrupted, cancel_reruns)
                break
            except KeyboardInterrupt:
                interrupted = True
    table = trust.table if trust is not None else table
    if reruns is not None:
        if failure and not interrupted:
            raise failure[0]
        for n in best:  # a re-run cut off by the interrupt: its half-written folder is dropped
            rerun_dir = sweep_dir / TOP_DIR / str(n)
            if rerun_dir.is_dir() and not _finished(rerun_dir):
                shutil.rmtree(rerun_dir, ignore_errors=True)
        full = [_full_folder(by_num[n], sweep_dir) for n in table["job"].to_list()]
        table = table.with_columns(pl.Series("full_folder", full, dtype=pl.String))
        if trust is not None:
            trust.table = table
    write_csv(table, sweep_dir / SUMMARY_CSV)
    write_parquet(table, sweep_dir / SUMMARY_PARQUET)
    board = leaderboard(table, swept, objective, direction, top, str(sweep_dir))
    if trust is not None and trust.line:
        board += "\n  " + trust.line
    failed = table.filter(pl.col("status") == "failed").height
    return Report(sweep_dir / SUMMARY_CSV, table, swept, objective, direction, failed, board, png if drawn else None, trust,
                  interrupted)


def replace_previous_sweep(sweep_dir: Path, keep: Sequence[str] = (), dry_run: bool = False) -> int:
    """Empty a sweep folder that holds a previous sweep (hydra.sweep.dir given again), as a single
    run replaces a previous run in its folder: its job folders, top/ and report files are removed,
    so that the report ranks this sweep's jobs only (keep: names left, e.g. the multirun.yaml this
    sweep has just written). Returns how many entries were (dry_run: would be) removed.

    Raises ConfigError, before anything is removed, if the folder or one of its job folders holds
    anything else (a file mmrun does not write; output.previous_run_entries) or a paper job
    stopped before it finished (python -m mmrun.recover writes its files first)."""
    from mmrun.output import previous_run_entries
    from mmrun.overfit_report import SCATTER_PNG, SWEEP_JSON

    if not sweep_dir.is_dir():
        return 0
    # what a sweep writes at its root besides its job folders (Hydra's, the report's, Optuna's)
    sweep_files = {"multirun.yaml", SUMMARY_CSV, SUMMARY_PARQUET, HEATMAP_PNG, SWEEP_JSON, SCATTER_PNG, TRIALS_PNG,
                   "optimization_results.yaml"}
    remove = []
    for entry in sorted(p for p in sweep_dir.iterdir() if p.name not in keep):
        jobs = [entry] if (entry / ".hydra" / "hydra.yaml").is_file() else (
            [p for p in entry.iterdir() if p.is_dir()] if entry.name == TOP_DIR and entry.is_dir() else None)
        if jobs is not None and all((job / ".hydra" / "hydra.yaml").is_file() for job in jobs):
            for job in jobs:  # a job folder holds a run's files only, as a single run's folder must
                previous_run_entries(job, "hydra.sweep.dir")
            remove.append(entry)
        elif (entry.is_file() and entry.name in sweep_files) or (entry.is_dir() and entry.name == ".submitit"):
            remove.append(entry)  # the report's files, Hydra's; the submitit launcher's job logs
        else:
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir}: holds {entry.name}, which is not part of an mmrun sweep: "
                "choose a new or empty folder")
    if dry_run:
        return len(remove)
    for entry in remove:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if remove:
        log.warning("%s held a previous sweep: replaced (%d files and folders removed)", sweep_dir, len(remove))
    return len(remove)


def _wait_for_reruns(reruns: threading.Thread, interrupted: bool, cancel: Optional[Callable[[], None]]) -> bool:
    """Wait for the full re-runs' thread; on Ctrl-C (before or during the wait) cancel them first,
    so that nothing touches the launcher's pool once the report goes on. Returns interrupted."""
    while True:
        if interrupted and cancel is not None:
            cancel()
        try:
            reruns.join(None if cancel is not None or not interrupted else 0.0)
            return interrupted
        except KeyboardInterrupt:
            interrupted = True


def _assess(sweep_dir: Path, jobs: Sequence[Job], table: pl.DataFrame, objective: str, direction: str) -> Optional[Any]:
    """sweep.json (deflated Sharpe, PBO), is_/oos_ columns and is_oos.png (mmrun.overfit_report);
    a failure there is one logged line, never a lost sweep table."""
    from mmrun.overfit_report import assess

    try:
        return assess(sweep_dir, jobs, table, objective, direction)
    except Exception as exc:
        log.error("sweep.json for %s not written: %s: %s", sweep_dir, type(exc).__name__, exc)
        return None


def declared_keys(task_overrides: Iterable[str], sweeper_params: Any) -> List[str]:
    """Swept keys from a multirun's task overrides and its hydra.sweeper.params (a dict or None)."""
    keys = sweep_keys(task_overrides)
    if sweeper_params:
        keys += [str(k) for k in sweeper_params.keys()]
    return keys


def _declared_from_multirun_yaml(path: Path) -> List[str]:
    if not path.is_file():
        return []
    try:
        with open(path, encoding="utf-8") as f:
            hydra_cfg = (load_yaml(f) or {}).get("hydra", {})
        return declared_keys(hydra_cfg.get("overrides", {}).get("task", []), hydra_cfg.get("sweeper", {}).get("params"))
    except (OSError, yaml.YAMLError, ValueError) as exc:  # a damaged multirun.yaml: fall back to differences
        log.warning("%s: unreadable (%s); swept keys taken from the jobs' differences", path, exc)
        return []


# ---------------------------------------------------------------- the Hydra callback

# The report of the last sweep that ended in this process (read by __main__ for its exit code).
last_report: Optional[Report] = None


# The sweep started in this process whose report is not written yet: (folder, write_report
# arguments). If the sweep raises before its end, Hydra skips on_multirun_end and __main__
# calls finish_pending() so the jobs that ran are still reported.
_pending: Optional[tuple] = None


def _report(sweep_dir: Path, kwargs: Dict[str, Any]) -> None:
    """Write the report of a sweep and print its leaderboard; a failure is one logged line."""
    global last_report, _pending
    _pending = None
    try:
        try:
            last_report = write_report(sweep_dir, **kwargs)
        except KeyboardInterrupt:
            # Ctrl-C while the jobs were read, before the re-runs started: the table without them
            plain = {k: v for k, v in kwargs.items() if k not in ("rerun_full", "rerun_apart", "cancel_reruns")}
            last_report = write_report(sweep_dir, **plain)
            last_report.interrupted = True
    except Exception as exc:  # Hydra would only warn; say what failed, in one line
        log.error("sweep report for %s failed: %s: %s", sweep_dir, type(exc).__name__, exc)
        return
    print(last_report.leaderboard, flush=True)
    made = [SUMMARY_CSV, SUMMARY_PARQUET] + ([HEATMAP_PNG] if last_report.heatmap else [])
    trust = last_report.trust
    made += [p.name for p in (trust.path, trust.scatter) if p is not None] if trust is not None else []
    print(f"  report  {sweep_dir}/{{{','.join(made)}}}", flush=True)
    if last_report.interrupted:
        print(f"  interrupted while the report was made: the best jobs' full folders may be missing "
              f"(`python -m mmrun.sweep {sweep_dir}` rebuilds the report)", flush=True)
        raise KeyboardInterrupt


def forget_pending() -> None:
    """The sweep of this process stopped before its first job (its jobs did not compose): there is
    nothing of it to report (a folder it reused keeps the previous sweep's report)."""
    global _pending
    _pending = None


def finish_pending() -> None:
    """Report the sweep that started in this process but did not reach its end, if any."""
    global _pending
    if _pending is not None:
        if not any(Path(_pending[0]).glob("**/.hydra/hydra.yaml")):
            _pending = None  # the sweep stopped before its first job: nothing to report
            return
        sweep_dir = _pending[0]
        _report(*_pending)
        launch = sys.modules.get("mmrun.launch")  # mmrun's launcher knows the jobs that never started
        planned = launch.last_planned(sweep_dir) if launch is not None else 0
        if last_report is not None and last_report.table.height < planned:
            print(f"  stopped early: {planned - last_report.table.height} of the sweep's {planned} jobs never "
                  "started", flush=True)


def _release_idle_workers() -> None:
    """Let the joblib launcher's worker processes exit while the report is written.

    Idle after the last job, they would otherwise be stopped one after the other when this
    process exits, after the report (about 0.3 s on 2 workers holding a million-row cache).
    No-op if no joblib/loky pool ran in this process (other launchers, or loky's layout changed):
    loky is looked up among the imported modules, not imported (0.1 s, paid after mmrun's own
    launcher's last job, before its report began).
    """
    reusable_executor = sys.modules.get("joblib.externals.loky.reusable_executor")
    if reusable_executor is None:
        return
    pool = getattr(reusable_executor, "_executor", None)
    if pool is not None:
        pool.shutdown(wait=False)


def _plain_optuna_log(stream: Any = None) -> None:
    """Optuna's log lines without colour codes when they do not go to a terminal (a file, a pipe).

    Optuna formats its lines with colorlog, which colours them whatever the stream is.
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return
    try:
        import optuna.logging  # the sweeper imports it next anyway
    except ImportError:
        return
    for handler in optuna.logging.get_logger("optuna").handlers:
        if type(handler.formatter).__name__ == "ColoredFormatter":
            handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s"))


class SweepReport(Callback):
    """Hydra callback (conf/config.yaml: hydra.callbacks.sweep_report): the report when a multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global last_report, _pending
        last_report = None
        # Hydra turns a callback's exceptions into warnings and goes on; a bad sweep section
        # would fail every job, so stop here with the one-line error instead.
        try:
            check_sweep(config.sweep)
        except ConfigError as exc:
            print(f"mmrun: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        sweeper = str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))
        if "optuna" in sweeper.lower():
            _plain_optuna_log()
        opt_dir = OmegaConf.select(config, "hydra.sweeper.direction", default=None)
        if "optuna" in sweeper.lower() and opt_dir is not None:
            names = [getattr(d, "name", str(d)) for d in (opt_dir if OmegaConf.is_list(opt_dir) else [opt_dir])]
            if names != [str(config.sweep.direction)]:
                log.warning(
                    "Optuna will %s %s but sweep.direction=%s: add hydra.sweeper.direction=%s",
                    "/".join(names), config.sweep.objective, config.sweep.direction, config.sweep.direction,
                )

        try:
            # mmrun's sweeper replaces it once its jobs are checked (a typo then keeps the old
            # sweep); with another sweeper it is replaced here; anything else stops both here
            mmrun_sweeper = sweeper.endswith("MmrunSweeper")
            replace_previous_sweep(Path(str(config.hydra.sweep.dir)), dry_run=mmrun_sweeper)
        except ConfigError as exc:
            print(f"mmrun: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        _pending = (Path(str(config.hydra.sweep.dir)), self._arguments(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mmrun import launch

        _release_idle_workers()
        args = self._arguments(config)
        if str(config.sweep.get("outputs", "full")) == "lean":
            session = launch.active()
            args["rerun_full"] = session.rerun_full if session is not None else (
                lambda jobs: launch.rerun_full_in_process(config, jobs))
            args["rerun_apart"] = session is not None
            args["cancel_reruns"] = session.cancel_reruns if session is not None else None
        try:
            _report(Path(str(config.hydra.sweep.dir)), args)
        finally:
            session = launch.active()
            if session is not None:
                session.close()

    @staticmethod
    def _arguments(config: DictConfig) -> Dict[str, Any]:
        declared = declared_keys(
            OmegaConf.to_container(config.hydra.overrides.task, resolve=False),
            OmegaConf.select(config, "hydra.sweeper.params", default=None),
        )
        s = config.sweep
        return {"objective": s.objective, "direction": s.direction, "top": s.top, "declared": declared}


# ---------------------------------------------------------------- python -m mmrun.sweep


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Rebuild the report of a sweep folder (e.g. after a sweep that was interrupted)."""
    p = argparse.ArgumentParser(prog="python -m mmrun.sweep", description=main.__doc__)
    p.add_argument("sweep_dir", type=Path, help="the sweep's root folder (holds the numbered job folders)")
    p.add_argument("--objective", default="total_return_pct", help=f"one of {', '.join(OBJECTIVES)}")
    p.add_argument("--direction", default="maximize", choices=DIRECTIONS)
    p.add_argument("--top", type=int, default=10, help="leaderboard rows to print")
    args = p.parse_args(argv)
    try:
        check_sweep(argparse.Namespace(objective=args.objective, direction=args.direction, top=args.top))
        report = write_report(args.sweep_dir, args.objective, args.direction, args.top)
    except MmrunError as exc:
        print(f"mmrun: error: {exc}", file=sys.stderr)
        return 2
    print(report.leaderboard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
