"""How much to trust a sweep's winner: sweep.json, the in-sample/out-of-sample columns and picture.

Called by the sweep report (mmrun.sweep.write_report) with the jobs it read and its ranked
table. From the files every job leaves (summary.json, returns.parquet, validation.json; see
mmrun.validation) it writes, at the sweep's root, for any sweep of two or more jobs:

- `sweep.json`: `trials` (jobs run, or an Optuna study's trial count), `best` (the top-ranked
  job), `deflated_sharpe` and `pbo` (mmrun.overfit; null with a `*_note` saying why when they
  cannot be computed), the CSCV split count, the held-out and per-fold results, `verdict`,
  `line` and the definitions with their sources;
- `is_oos.png` (with sweep.holdout): in-sample against out-of-sample objective for every job,
  the winner marked;

and returns the table with `is_<objective>` and `oos_<objective>` columns (and `is_sharpe`,
`oos_sharpe` when the objective is another metric) when the jobs held data out, plus one line
in plain words for the terminal.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import polars as pl

from mmrun import overfit
from mmrun.record import load_yaml, read_json_object
from mmrun.validation import RETURNS_FILE, VALIDATION_FILE

log = logging.getLogger("mmrun.sweep")

SWEEP_JSON = "sweep.json"
SCATTER_PNG = "is_oos.png"

DEFINITIONS = {
    "trials": "parameter sets tried: the sweep's jobs (failed ones included), or the Optuna study's trial count",
    "deflated_sharpe": (
        "probability that the best job's true Sharpe ratio is above what the best of `trials` zero-skill "
        "jobs would reach by luck, given its number of returns, their skewness and kurtosis and the spread "
        "of the jobs' Sharpe ratios: PSR(SR0), SR0 = sqrt(V[SR]) ((1-g) Z^-1(1-1/N) + g Z^-1(1-1/(N e))); "
        "computed on the per-period returns of returns.parquet (Sharpe per period, not annualised)"
    ),
    "pbo": (
        "probability of backtest overfitting: over every way of splitting the periods into two halves of "
        "S/2 blocks each (combinatorially symmetric cross-validation), the share where the job with the best "
        "Sharpe ratio on one half ranks at or below the median of the jobs on the other half"
    ),
    "returns": "each job's equity on the same periods (returns.parquet): equal slices of the market span",
}
SOURCES = [
    "Bailey, D. H. and López de Prado, M. (2014). The Deflated Sharpe Ratio: Correcting for Selection Bias, "
    "Backtest Overfitting and Non-Normality. Journal of Portfolio Management 40(5), 94-107. SSRN 2460551.",
    "Bailey, D. H., Borwein, J. M., López de Prado, M. and Zhu, Q. J. (2017). The Probability of Backtest "
    "Overfitting. Journal of Computational Finance 20(4), 39-69. SSRN 2326253.",
]


@dataclass
class Assessment:
    """What assess() found and wrote."""

    table: pl.DataFrame  # the sweep table, with is_/oos_ columns when data was held out
    line: Optional[str]  # the plain-words line; None for a sweep of fewer than 2 jobs
    path: Optional[Path]  # sweep.json, if written
    scatter: Optional[Path]  # is_oos.png, if drawn
    content: Dict[str, Any] = field(default_factory=dict)  # sweep.json's content


def _num(v: Any) -> Optional[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _clean(obj: Any) -> Any:
    """NaN and infinities -> None (sweep.json is strict JSON); numpy scalars -> Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _single_pair(validation: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    pairs = validation.get("pairs") or {}
    return next(iter(pairs.values())) if len(pairs) == 1 else None


def study_trials(sweep_dir: Path, job_folders: Sequence[Path] = ()) -> Optional[int]:
    """The trial count of the Optuna study behind a sweep that kept it in a database
    (hydra.sweeper.storage and study_name, read from the sweep's multirun.yaml or, as the Optuna
    sweeper writes none, from a job's .hydra/hydra.yaml); None otherwise or if unreadable."""
    sweeper = None
    for path in [Path(sweep_dir) / "multirun.yaml"] + [Path(f) / ".hydra" / "hydra.yaml" for f in job_folders[:1]]:
        try:
            with open(path, encoding="utf-8") as f:
                sweeper = ((load_yaml(f) or {}).get("hydra") or {}).get("sweeper") or {}
            break
        except (OSError, ValueError):
            continue
    if not sweeper or "optuna" not in str(sweeper.get("_target_", "")).lower() or not sweeper.get("storage"):
        return None
    try:
        import optuna

        study = optuna.load_study(study_name=sweeper.get("study_name"), storage=sweeper["storage"])
        return len(study.trials)
    except Exception as exc:  # the jobs' count stands in; say why
        log.warning("Optuna study in %s not readable (%s): trials = the sweep's jobs", sweeper.get("storage"), exc)
        return None


# ---------------------------------------------------------------- the returns matrix


RETURNS_CHUNK = 256  # returns.parquet files read in one Polars call (memory stays that chunk's)


def returns_matrix(folders: Sequence[Path]) -> tuple:
    """(T x N matrix of period returns, note): the folders' returns.parquet side by side.

    None and a note saying why if a file is missing or the grids differ (jobs on different
    market spans: different data, or paper runs at different times). The files are read
    RETURNS_CHUNK at a time in one Polars call each (256 jobs' files: 0.04 s instead of 0.22 s
    one by one); when a call fails, one by one, to name the file.
    """
    paths = [Path(folder) / RETURNS_FILE for folder in folders]
    cols: List[np.ndarray] = []
    grid = None
    for lo in range(0, len(paths), RETURNS_CHUNK):
        chunk = paths[lo : lo + RETURNS_CHUNK]
        try:
            df = pl.scan_parquet(chunk, include_file_paths="file").select("file", "start_ms", "end_ms", "return").collect()
        except Exception as exc:
            for path in chunk:
                try:
                    pl.read_parquet(path)
                except Exception:
                    return None, f"{path.parent.name}/{RETURNS_FILE} missing or unreadable"
            return None, f"the jobs' {RETURNS_FILE} files do not read as one table ({type(exc).__name__})"
        heights = dict(df.group_by("file", maintain_order=True).len().iter_rows())
        start_ms, end_ms, ret = (df[c].to_numpy() for c in ("start_ms", "end_ms", "return"))
        at = 0
        for path in chunk:
            t = heights.get(str(path), 0)
            g = (t, int(start_ms[at]) if t else None, int(end_ms[at + t - 1]) if t else None)
            if grid is None:
                grid = g
            elif g != grid:
                return None, "the jobs' returns are on different periods (different market data or spans)"
            cols.append(ret[at : at + t])
            at += t
    if grid is None or grid[0] < 2:
        return None, "fewer than 2 periods of returns"
    return np.column_stack(cols), None


# ---------------------------------------------------------------- the assessment


def assess(
    sweep_dir: Path,
    jobs: Sequence[Any],
    table: pl.DataFrame,
    objective: str,
    direction: str,
    trials: Optional[int] = None,
) -> Assessment:
    """Write sweep.json (and is_oos.png) for a sweep of two or more jobs; see the module doc.

    jobs: mmrun.sweep.Job records (num, folder, summary); table: the ranked sweep table (rank,
    job, ..., best first); trials: the number of trials if more were made than jobs read
    (default: the Optuna study's count if kept in a database, else the jobs read).
    """
    sweep_dir = Path(sweep_dir)
    by_num = {j.num: j for j in jobs}
    ranked = [int(n) for n in table.filter(pl.col("rank").is_not_null())["job"].to_list()]
    validations = {j.num: _single_pair(read_json_object(Path(j.folder) / VALIDATION_FILE)) for j in jobs}
    table = _with_is_oos(table, by_num, validations, objective)
    if len(jobs) < 2:
        return Assessment(table, None, None, None)

    n_trials = max(len(jobs), trials or 0, study_trials(sweep_dir, [j.folder for j in jobs]) or 0)
    content: Dict[str, Any] = {
        "trials": n_trials,
        "jobs": len(jobs),
        "ranked_jobs": len(ranked),
        "objective": objective,
        "direction": direction,
    }
    best = by_num[ranked[0]] if ranked else None
    val = validations.get(best.num) if best else None
    if best is not None:
        content["best"] = {
            "job": best.num,
            "folder": _relative(Path(best.folder), sweep_dir),
            "overrides": best.overrides,
            objective: best.summary.get(objective),
            "sharpe": best.summary.get("sharpe"),
        }
        if val and "holdout" in val:
            held = val["holdout"]["metrics"]
            content["best"].update({f"oos_{objective}": held.get(objective), "oos_sharpe": held.get("sharpe")})

    matrix, note = returns_matrix([by_num[n].folder for n in ranked]) if len(ranked) >= 1 else (None, "no job finished")
    dsr = pbo = None
    if matrix is not None:
        srs = overfit.sharpe_per_period(matrix)
        d = overfit.deflated_sharpe(matrix[:, 0], srs, n_trials=n_trials)
        dsr = d.dsr if math.isfinite(d.dsr) else None
        content["deflated_sharpe"] = dsr
        content["deflated_sharpe_detail"] = {
            "sharpe_per_period": d.sharpe,
            "benchmark_per_period": d.benchmark,
            "periods": d.n_obs,
            "skew": d.skew,
            "kurtosis": d.kurtosis,
            "sharpe_variance": d.sr_variance,
        }
        if matrix.shape[1] >= 2:
            p = overfit.pbo_cscv(matrix)
            pbo = p.pbo
            content["pbo"] = pbo
            content["pbo_detail"] = {
                "splits": p.n_splits,
                "combinations": p.n_combinations,
                "all_combinations": p.all_combinations,
                "periods": p.periods_used,
                "jobs": int(matrix.shape[1]),
            }
        else:
            content["pbo"] = None
            content["pbo_note"] = "needs two or more jobs that finished"
    else:
        content["deflated_sharpe"] = None
        content["deflated_sharpe_note"] = note
        content["pbo"] = None
        content["pbo_note"] = note

    held_summary = _holdout_summary(ranked, by_num, validations, objective, direction)
    if held_summary:
        content["holdout"] = held_summary
    folds = _folds(ranked, validations, objective, direction)
    if folds:
        content["folds"] = folds
    verdict = overfit.verdict(dsr, pbo)
    line = _line(n_trials, best, val, objective, dsr, pbo, verdict, content)
    content["verdict"] = verdict
    content["line"] = line
    line = "\n  ".join([line] + [_fold_line(f, objective) for f in folds])
    content["definitions"] = DEFINITIONS
    content["sources"] = SOURCES

    from mmrun.record import write_json

    path = sweep_dir / SWEEP_JSON
    write_json(_clean(content), path)
    scatter = None
    if held_summary and f"oos_{objective}" in table.columns:
        png = sweep_dir / SCATTER_PNG
        try:
            if draw_scatter(table, objective, direction, content, png):
                scatter = png
        except Exception as exc:  # the numbers are written; a picture must not lose them
            log.warning("%s not drawn: %s: %s", SCATTER_PNG, type(exc).__name__, exc)
    return Assessment(table, line, path, scatter, content)


def _relative(folder: Path, root: Path) -> str:
    try:
        return folder.relative_to(root).as_posix()
    except ValueError:
        return str(folder)


def _with_is_oos(table: pl.DataFrame, by_num: Dict[int, Any], validations: Dict[int, Any], objective: str) -> pl.DataFrame:
    """The table with is_/oos_ columns of the objective (and sharpe) after the objective's column."""
    if not any(v and "holdout" in v for v in validations.values()):
        return table
    metrics = [objective] + (["sharpe"] if objective != "sharpe" else [])
    new = []
    for m in metrics:
        is_vals, oos_vals = [], []
        for num in table["job"].to_list():
            v = validations.get(num)
            held = (v or {}).get("holdout")
            job = by_num.get(num)
            ok = held is not None and job is not None and job.summary.get("status") not in (None, "failed")
            is_vals.append(_num(job.summary.get(m)) if ok else None)
            oos_vals.append(_num(held["metrics"].get(m)) if ok else None)
        new += [pl.Series(f"is_{m}", is_vals, dtype=pl.Float64), pl.Series(f"oos_{m}", oos_vals, dtype=pl.Float64)]
    names = [s.name for s in new]
    rest = [c for c in table.columns if c not in names]
    at = rest.index(objective) + 1 if objective in rest else len(rest)
    return table.with_columns(new).select(rest[:at] + names + rest[at:])


def _holdout_summary(
    ranked: List[int], by_num: Dict[int, Any], validations: Dict[int, Any], objective: str, direction: str
) -> Dict[str, Any]:
    """The held-out part's span and the objective held out: the best job's, the median job's."""
    vals = [(n, validations.get(n)) for n in ranked]
    vals = [(n, v) for n, v in vals if v and "holdout" in v]
    if not vals:
        return {}
    first = vals[0][1]
    oos = [_num(v["holdout"]["metrics"].get(objective)) for _, v in vals]
    oos = [x for x in oos if x is not None]
    return {
        "search": first.get("search"),
        "held_out": {k: first["holdout"].get(k) for k in ("start", "end", "rows")},
        f"best_is_{objective}": _num(by_num[vals[0][0]].summary.get(objective)),
        f"best_oos_{objective}": _num(first["holdout"]["metrics"].get(objective)),
        f"median_oos_{objective}": float(np.median(oos)) if oos else None,
        "best_oos_rank": _oos_rank(vals, objective, direction),
        "jobs": len(vals),
    }


def _oos_rank(vals: List[tuple], objective: str, direction: str) -> Optional[int]:
    """Where the in-sample winner (vals[0]) lands out of sample: 1 = best, by the same objective."""
    sign = 1.0 if direction == "maximize" else -1.0
    xs = [_num(v["holdout"]["metrics"].get(objective)) for _, v in vals]
    if xs[0] is None:
        return None
    return 1 + sum(1 for x in xs[1:] if x is not None and sign * x > sign * xs[0])


def _folds(ranked: List[int], validations: Dict[int, Any], objective: str, direction: str) -> List[Dict[str, Any]]:
    """Per walk-forward fold: the job best on its training window, and how it did on the test window."""
    per_job = {n: (validations.get(n) or {}).get("folds") for n in ranked}
    per_job = {n: f for n, f in per_job.items() if f}
    if not per_job:
        return []
    sign = 1.0 if direction == "maximize" else -1.0
    out = []
    k = min(len(f) for f in per_job.values())
    for i in range(k):
        scored = []
        for n, folds in per_job.items():
            tr = _num(folds[i]["train"]["metrics"].get(objective))
            te = _num(folds[i]["test"]["metrics"].get(objective))
            if tr is not None:
                scored.append((sign * tr, -n, n, tr, te))
        if not scored:
            continue
        scored.sort(reverse=True)
        _, _, n, tr, te = scored[0]
        tests = [s[4] for s in scored if s[4] is not None]
        any_fold = next(iter(per_job.values()))[i]
        out.append(
            {
                "fold": i + 1,
                "train": {k2: any_fold["train"].get(k2) for k2 in ("start", "end", "rows")},
                "test": {k2: any_fold["test"].get(k2) for k2 in ("start", "end", "rows")},
                "best_job": n,
                f"is_{objective}": tr,
                f"oos_{objective}": te,
                f"median_oos_{objective}": float(np.median(tests)) if tests else None,
            }
        )
    return out


def _fold_line(f: Dict[str, Any], objective: str) -> str:
    """'fold 2 (test 2024-01-01 .. 2024-01-20): job 6 best in training (total_return_pct -0.73), 0.80 on the test window; median job 0.02'."""
    def day(text: Optional[str]) -> str:
        return (text or "?")[:10]

    return (
        f"fold {f['fold']} (test {day(f['test'].get('start'))} .. {day(f['test'].get('end'))}): job {f['best_job']} "
        f"best in training ({objective} {_fmt(f.get(f'is_{objective}'))}), {_fmt(f.get(f'oos_{objective}'))} on the "
        f"test window; median job {_fmt(f.get(f'median_oos_{objective}'))}"
    )


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _fmt_judged(v: Optional[float]) -> str:
    """A figure the verdict turns on (deflated Sharpe, PBO): two decimals, more when two would put
    it on the other side of one of the verdict's thresholds (0.4996 is '0.4996', not '0.50',
    beside 'treat the winner as luck'); 'n/a' for None or NaN."""
    if v is None or math.isnan(v):
        return "n/a"
    for digits in range(2, 7):
        text = f"{v:.{digits}f}"
        if all((float(text) < t) == (v < t) for t in overfit.VERDICT_THRESHOLDS):
            return text
    return text


def _line(n_trials: int, best: Any, val: Optional[Dict[str, Any]], objective: str, dsr: Optional[float],
          pbo: Optional[float], verdict: str, content: Dict[str, Any]) -> str:
    """'best of 8 trials: in-sample Sharpe 1.9, out-of-sample 0.4; deflated Sharpe 0.31; probability
    of overfitting 0.62 — treat the winner as luck' (Sharpe annualised, as in summary.json)."""
    if best is None:
        return f"none of {n_trials} trials finished — nothing to judge"
    held = (val or {}).get("holdout")
    by = "" if objective == "sharpe" else f", by {objective}"
    parts = []
    if held is not None:
        parts.append(f"in-sample Sharpe {_fmt(_num(best.summary.get('sharpe')))}, "
                     f"out-of-sample {_fmt(_num(held['metrics'].get('sharpe')))}")
        if objective != "sharpe":
            parts.append(f"{objective} {_fmt(_num(best.summary.get(objective)))} in-sample, "
                         f"{_fmt(_num(held['metrics'].get(objective)))} out-of-sample")
    else:
        parts.append(f"Sharpe {_fmt(_num(best.summary.get('sharpe')))}")
        if objective != "sharpe":
            parts.append(f"{objective} {_fmt(_num(best.summary.get(objective)))}")
    parts.append(f"deflated Sharpe {_fmt_judged(dsr)}")
    splits = (content.get("pbo_detail") or {}).get("splits")
    parts.append(f"probability of overfitting {_fmt_judged(pbo)}" + (f" ({splits} blocks)" if splits else ""))
    return f"best of {n_trials} trials (job {best.num}{by}): " + "; ".join(parts) + f" — {verdict}"


# ---------------------------------------------------------------- the picture


def draw_scatter(table: pl.DataFrame, objective: str, direction: str, content: Dict[str, Any], path: Path) -> bool:
    """In-sample (x) against out-of-sample (y) objective, one point per job, the winner marked; False
    if no job has both values."""
    x = table[f"is_{objective}"].to_numpy().astype(float)
    y = table[f"oos_{objective}"].to_numpy().astype(float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return False
    import matplotlib

    matplotlib.use("Agg")  # files only: never a display
    import matplotlib.pyplot as plt

    jobs = table["job"].to_numpy()
    best = (content.get("best") or {}).get("job")
    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    ax.scatter(x[ok], y[ok], s=28, color="tab:blue", alpha=0.75, label="job")
    lo = float(min(x[ok].min(), y[ok].min()))
    hi = float(max(x[ok].max(), y[ok].max()))
    pad = (hi - lo) * 0.05 or 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--", label="out-of-sample = in-sample")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    win = ok & (jobs == best)
    if win.any():
        ax.scatter(x[win], y[win], s=160, marker="*", color="tab:red", zorder=3, label=f"winner (job {best})")
    ax.set_xlabel(f"in-sample {objective}")
    ax.set_ylabel(f"out-of-sample {objective} (held-out data)")
    dsr, pbo = content.get("deflated_sharpe"), content.get("pbo")
    ax.set_title(
        f"{int(ok.sum())} jobs, ranked by {objective} ({direction})\n"
        f"deflated Sharpe {_fmt_judged(dsr)}, probability of overfitting {_fmt_judged(pbo)}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True
