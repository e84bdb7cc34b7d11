"""Sweeps: the report (mmrun/sweep.py) from hand-made job folders, then real sweeps through the
command line with the joblib, Ray and submitit launchers and the Optuna sweeper, and re-runs
of run folders (mmrun/rerun.py) that must give byte-identical events and summary."""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from clirun import ROOT, run_mmrun
from mmrun import sweep

TINY = ("mode=backtest", "run.max_ticks=60")  # 60 bars of the simulated market: a fraction of a second


def read_report(sweep_dir: Path) -> pl.DataFrame:
    return pl.read_csv(sweep_dir / "sweep_summary.csv", schema_overrides={"folder": pl.String, "full_folder": pl.String})


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


# ---------------------------------------------------------------- the report from hand-made folders


def make_job(root: Path, num: int, overrides: list, summary: dict | None, wall: float | None = None) -> Path:
    """A job folder as Hydra and mmrun leave it: .hydra/{hydra,overrides}.yaml, summary.json, run_info.json."""
    folder = root / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN", "job": {"num": num}}}))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    if wall is not None:
        (folder / "run_info.json").write_text(json.dumps({"wall_clock_seconds": wall}))
    return folder


def done(ret: float, dd: float, trades: int) -> dict:
    return {"pair": "BTC/USDT", "status": "completed", "total_return_pct": ret, "max_drawdown_pct": dd, "trades": trades}


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """A 2 x 2 sweep over spread and order size: three jobs done, one failed, plus one that never wrote a summary."""
    make_job(tmp_path, 0, ["mode=backtest", "spread=0.001", "sizing.order_size_pct=0.01"], done(-0.5, 0.9, 30), 1.5)
    make_job(tmp_path, 1, ["mode=backtest", "spread=0.001", "sizing.order_size_pct=0.02"], done(0.25, 0.4, 20), 1.25)
    make_job(tmp_path, 2, ["mode=backtest", "spread=0", "sizing.order_size_pct=0.01"],
             {"pair": "BTC/USDT", "status": "failed", "error": "spread=0.0 is out of range: allowed 0 < spread < 1"}, 0.5)
    make_job(tmp_path, 3, ["mode=backtest", "spread=0", "sizing.order_size_pct=0.02"], None)
    make_job(tmp_path, 4, ["mode=backtest", "spread=0.002", "sizing.order_size_pct=0.01"], done(0.75, 0.1, 10), 1.0)
    return tmp_path


def test_overrides_are_parsed_to_typed_values():
    got = sweep.parse_overrides(["spread=0.001", "fills=instant", "run.max_ticks=null", "+exchange.sim.prices.ABC=12", "~data.path"])
    assert got == {"spread": 0.001, "fills": "instant", "run.max_ticks": None, "exchange.sim.prices.ABC": 12}
    assert sweep.sweep_keys(["mode=backtest", "spread=0.001,0.002", "sizing.order_size_pct=interval(0.01,0.02)"]) == [
        "spread", "sizing.order_size_pct"]


def test_report_ranks_jobs_and_lists_failed_ones_last(grid: Path):
    report = sweep.write_report(grid, declared=["spread", "sizing.order_size_pct"])
    df = read_report(grid)
    assert df.columns[:5] == ["rank", "job", "spread", "sizing.order_size_pct", "status"]
    assert df["job"].to_list() == [4, 1, 0, 2, 3]
    assert df["rank"].to_list() == [1, 2, 3, None, None]
    assert df["total_return_pct"].to_list() == [0.75, 0.25, -0.5, None, None]
    assert df["spread"].to_list() == [0.002, 0.001, 0.001, 0.0, 0.0]
    assert df["status"].to_list() == ["completed", "completed", "completed", "failed", "failed"]
    assert df["error"].to_list() == [None, None, None, "spread=0.0 is out of range: allowed 0 < spread < 1",
                                     "no summary.json: the job did not finish"]
    assert df["wall_clock_seconds"].to_list() == [1.0, 1.25, 1.5, 0.5, None]
    assert df["folder"].to_list() == ["4", "1", "0", "2", "3"]
    assert "mode" not in df.columns  # the same in every job: not a swept parameter
    assert pl.read_parquet(grid / "sweep_summary.parquet").equals(report.table)
    assert report.failed == 2 and report.swept == ["spread", "sizing.order_size_pct"]
    assert report.heatmap == grid / "heatmap.png"
    assert (grid / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_jobs_that_ran_to_their_end_are_ranked(tmp_path: Path):
    # a job stopped by a signal or recovered after a kill covers part of its run: listed, not ranked
    make_job(tmp_path, 0, ["spread=0.001"], done(0.5, 0.1, 10))
    make_job(tmp_path, 1, ["spread=0.002"], {**done(0.25, 0.1, 10), "status": "max_ticks"})
    make_job(tmp_path, 2, ["spread=0.003"], {**done(9.0, 0.1, 10), "status": "interrupted"})
    make_job(tmp_path, 3, ["spread=0.004"], {**done(8.0, 0.1, 10), "status": "stopped"})
    report = sweep.write_report(tmp_path, declared=["spread"])
    df = report.table
    assert df["job"].to_list() == [0, 1, 2, 3] and df["rank"].to_list() == [1, 2, None, None]
    assert df["error"].to_list()[2:] == [
        "interrupted before its end: its figures cover part of its run, so it is not ranked",
        "stopped before its end: its figures cover part of its run, so it is not ranked"]
    assert "  job 2 interrupted: interrupted before its end" in report.leaderboard


def test_a_full_re_run_cut_off_before_its_end_is_not_a_full_folder(grid: Path):
    done_rerun, cut = grid / "top" / "4", grid / "top" / "1"
    for folder in (done_rerun, cut):
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text("{}")
    (done_rerun / "run_info.json").write_text("{}")  # the last file a run writes
    df = sweep.write_report(grid, declared=["spread", "sizing.order_size_pct"]).table
    full = dict(zip(df["job"].to_list(), df["full_folder"].to_list()))
    assert full[4] == "top/4" and full[1] is None


def test_leaderboard_shows_the_top_rows_and_every_failure(grid: Path):
    board = sweep.write_report(grid, top=2, declared=["spread", "sizing.order_size_pct"]).leaderboard.splitlines()
    assert board[0] == f"sweep {grid}: 5 jobs, top 2 by total_return_pct (maximize)"
    assert board[1].split() == ["rank", "job", "spread", "sizing.order_size_pct", "total_return_pct",
                                "trades", "max_drawdown_pct", "status"]
    # each metric column in one format (four significant digits of its largest value), so the
    # numbers line up; the swept values as given
    assert board[2].split() == ["1", "4", "0.002", "0.01", "0.7500", "10", "0.1000", "completed"]
    assert board[3].split() == ["2", "1", "0.001", "0.02", "0.2500", "20", "0.4000", "completed"]
    # the error names spread=0.0 itself: the job's spread is not said twice
    assert board[4] == "  job 2 failed: spread=0.0 is out of range: allowed 0 < spread < 1 (sizing.order_size_pct=0.01)"
    assert board[5] == "  job 3 failed: no summary.json: the job did not finish (spread=0 sizing.order_size_pct=0.02)"
    # hand-made folders have no returns.parquet: nothing to deflate (mmrun/overfit_report.py)
    assert board[6].startswith("  best of 5 trials (job 4, by total_return_pct): Sharpe n/a; total_return_pct 0.75; ")
    assert board[6].endswith("— not enough data to judge the winner")
    assert len(board) == 7


def test_objective_and_direction_choose_the_order(grid: Path):
    report = sweep.write_report(grid, objective="max_drawdown_pct", direction="minimize", declared=[])
    assert report.table["job"].to_list() == [4, 1, 0, 2, 3]  # drawdowns 0.1, 0.4, 0.9
    report = sweep.write_report(grid, objective="trades", direction="maximize", declared=[])
    assert report.table["job"].to_list() == [0, 1, 4, 2, 3]  # trades 30, 20, 10


def test_swept_parameters_without_a_declaration_are_those_that_differ(grid: Path):
    # No multirun.yaml here and nothing declared: the keys whose values differ across jobs.
    assert sweep.write_report(grid).swept == ["spread", "sizing.order_size_pct"]


def test_heatmap_only_for_exactly_two_numeric_parameters(tmp_path: Path):
    make_job(tmp_path, 0, ["spread=0.001", "fills=touch"], done(0.1, 0.1, 1))
    make_job(tmp_path, 1, ["spread=0.002", "fills=instant"], done(0.2, 0.1, 1))
    report = sweep.write_report(tmp_path, declared=["spread", "fills"])
    assert report.heatmap is None and not (tmp_path / "heatmap.png").exists()
    one = tmp_path / "one"
    make_job(one, 0, ["spread=0.001"], done(0.1, 0.1, 1))
    make_job(one, 1, ["spread=0.002"], done(0.2, 0.1, 1))
    assert sweep.write_report(one).heatmap is None


def test_report_command_rebuilds_a_sweep_folder(grid: Path):
    r = subprocess.run([sys.executable, "-m", "mmrun.sweep", str(grid), "--top", "1"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"sweep {grid}: 5 jobs, top 1 by total_return_pct (maximize)"
    assert read_report(grid)["job"].to_list() == [4, 1, 0, 2, 3]
    r = subprocess.run([sys.executable, "-m", "mmrun.sweep", str(grid), "--objective", "return"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("mmrun: error: sweep.objective='return' is not a summary metric: choose one of total_return_pct")
    assert len(r.stderr.splitlines()) == 1


def test_ctrl_c_while_the_top_jobs_re_run_still_writes_the_table(grid: Path):
    """Ctrl-C (SIGINT in the main thread) while the report waits for the full re-runs: the table
    of the finished jobs is written, with the full folders that exist, and the report says so."""
    import signal
    import threading
    import time

    from mmrun.output import import_plotting

    import_plotting()  # before the interrupt: an import it cut short would leave matplotlib half made
    started = threading.Event()

    def slow_reruns(jobs):
        started.set()
        time.sleep(3.0)  # the interrupt comes first

    def interrupt():
        started.wait(10)
        time.sleep(0.2)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    report = sweep.write_report(grid, top=2, declared=["spread", "sizing.order_size_pct"], rerun_full=slow_reruns,
                                rerun_apart=True)
    assert report.interrupted
    df = read_report(grid)
    assert df.height == 5 and df["full_folder"].null_count() == 5


def test_ctrl_c_during_the_re_runs_cancels_them_and_waits_before_the_table_is_written(grid: Path):
    """With cancel_reruns (mmrun's launcher) the re-runs are stopped and their thread has ended
    when write_report returns: nothing touches the launcher's pool afterwards."""
    import signal
    import threading

    from mmrun.output import import_plotting

    import_plotting()  # before the interrupt: an import it cut short would leave matplotlib half made
    started, cancelled, ended = threading.Event(), threading.Event(), threading.Event()

    def reruns_until_cancelled(jobs):
        cut = grid / "top" / str(jobs[0][0])  # a re-run killed half-way through its files
        cut.mkdir(parents=True)
        (cut / "events.csv.tmp").write_text("timestamp,")
        started.set()
        cancelled.wait(30)  # as the launcher's pool.run returns once its workers are killed
        ended.set()

    def interrupt():
        started.wait(10)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    report = sweep.write_report(grid, top=2, declared=["spread", "sizing.order_size_pct"],
                                rerun_full=reruns_until_cancelled, rerun_apart=True, cancel_reruns=cancelled.set)
    assert report.interrupted and cancelled.is_set() and ended.is_set()
    assert read_report(grid).height == 5
    assert not any((grid / "top").iterdir())  # the cut-off re-run's half-written folder is dropped


def test_ctrl_c_before_the_re_runs_start_still_reports(grid: Path, monkeypatch, capsys):
    """An interrupt while the jobs are read (before the report's protected part): the table is made
    again without the re-runs, the report says it was interrupted, and Ctrl-C goes on."""
    calls = []
    real = sweep.write_report

    def first_call_interrupted(sweep_dir, **kwargs):
        calls.append(sorted(kwargs))
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(sweep_dir, **kwargs)

    monkeypatch.setattr(sweep, "write_report", first_call_interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep._report(grid, {"top": 2, "declared": ["spread", "sizing.order_size_pct"], "rerun_full": print,
                             "rerun_apart": True, "cancel_reruns": print})
    assert calls[1] == ["declared", "top"] and read_report(grid).height == 5
    assert "interrupted while the report was made" in capsys.readouterr().out


# ---------------------------------------------------------------- sweeps through the command line


def _sweep(sweep_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return run_mmrun("--multirun", *TINY, *args, f"hydra.sweep.dir={sweep_dir}", timeout=timeout)


def _check_rows_match_summaries(sweep_dir: Path, n: int) -> pl.DataFrame:
    """The report has n rows and each agrees with its job's own summary.json."""
    df = read_report(sweep_dir)
    assert df.height == n and sorted(df["job"].to_list()) == list(range(n))
    for row in df.iter_rows(named=True):
        summary = json.loads((sweep_dir / row["folder"] / "summary.json").read_text())
        assert row["status"] == summary["status"]
        if summary["status"] != "failed":
            assert row["total_return_pct"] == summary["total_return_pct"]
            assert row["trades"] == summary["trades"]
            assert row["data_fingerprint"] == summary["data_fingerprint"]
    ranked = df.filter(pl.col("rank").is_not_null())["total_return_pct"].to_list()
    assert ranked == sorted(ranked, reverse=True)
    return df


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory) -> tuple:
    """`--multirun spread=0.001,0.002 sizing.order_size_pct=0.01,0.02` on the default (mmrun) launcher, top 2 in full."""
    d = tmp_path_factory.mktemp("grid") / "sweep"
    r = _sweep(d, "spread=0.001,0.002", "sizing.order_size_pct=0.01,0.02", "sweep.top=2")
    return d, r


LEAN = {".hydra", "summary.json", "events.parquet", "returns.parquet", "mmrun.log", "run_info.json"}


def test_grid_sweep_runs_in_parallel_and_writes_the_report(grid_sweep):
    d, r = grid_sweep
    assert r.returncode == 0, r.stderr[-2000:]
    df = _check_rows_match_summaries(d, 4)
    assert df.columns[:5] == ["rank", "job", "spread", "sizing.order_size_pct", "status"]
    assert set(zip(df["spread"], df["sizing.order_size_pct"])) == {(0.001, 0.01), (0.001, 0.02), (0.002, 0.01), (0.002, 0.02)}
    assert (d / "sweep_summary.parquet").is_file() and (d / "heatmap.png").is_file()
    assert f"sweep {d}: 4 jobs, top 2 by total_return_pct (maximize)" in r.stdout
    for job in range(4):
        folder = d / str(job)
        # a lean job folder: what a re-run and the report need, no picture, no CSV, no equity
        assert {p.name for p in folder.iterdir()} == LEAN
        for name in (".hydra/overrides.yaml", ".hydra/config.yaml", ".hydra/hydra.yaml"):
            assert (folder / name).is_file(), f"{folder}/{name}"
        # each job's log stays in its own folder
        log = (folder / "mmrun.log").read_text()
        assert str(folder) in log
        assert all(f"{d / str(other)}\n" not in log for other in range(4) if other != job)
        info = json.loads((folder / "run_info.json").read_text())
        assert {"mmrun", "hydra-core", "numba", "polars"} <= set(info["versions"])
        assert info["cpu_seconds"] > 0
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["seed"] == 42 and len(summary["data_fingerprint"]) == 64
    # the same data in every job: hashed afresh by a worker's first job, then remembered
    assert len({json.loads((d / str(j) / "summary.json").read_text())["data_fingerprint"] for j in range(4)}) == 1


def test_the_top_jobs_are_re_run_into_full_folders(grid_sweep):
    d, r = grid_sweep
    df = read_report(d)
    top = df.filter(pl.col("rank") <= 2)
    assert top["full_folder"].to_list() == [f"top/{j}" for j in top["job"]]
    assert df.filter(pl.col("rank") > 2)["full_folder"].to_list() == [None, None]
    for job in top["job"]:
        full = d / "top" / str(job)
        assert {"events.csv", "events.parquet", "equity.parquet", "report.png", "summary.json", ".hydra"} <= {p.name for p in full.iterdir()}
        assert (full / "summary.json").read_bytes() == (d / str(job) / "summary.json").read_bytes()
        # the same fills; the lean job's file is LZ4-compressed, the full folder's zstd
        assert pl.read_parquet(full / "events.parquet").equals(pl.read_parquet(d / str(job) / "events.parquet"))
        assert (full / "events.parquet").read_bytes() != (d / str(job) / "events.parquet").read_bytes()
        assert yaml.safe_load((full / ".hydra" / "config.yaml").read_text()) == yaml.safe_load((d / str(job) / ".hydra" / "config.yaml").read_text())
    board = r.stdout[r.stdout.index(f"sweep {d}:"):].splitlines()
    assert board[1].split()[-1] == "full_folder" and board[2].split()[-1] == f"top/{top['job'][0]}"


def test_a_sweep_console_is_one_line_per_job_then_the_leaderboard(grid_sweep):
    d, r = grid_sweep
    lines = r.stdout.splitlines()
    jobs = lines[:4]
    assert sorted(line.split()[2] for line in jobs) == ["0", "1", "2", "3"]
    assert [line.split()[0] for line in jobs] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    # TINY's backtests are cut at run.max_ticks: their status says so
    assert all(" max_ticks: spread=0.00" in line and "mode=" not in line for line in jobs)
    assert lines[4] == f"sweep {d}: 4 jobs, top 2 by total_return_pct (maximize)"
    assert len(lines) == 4 + 4 + 1 + 1  # the leaderboard (title, header, 2 rows), the trust line, the report line
    assert lines[8].startswith("  best of 4 trials")
    assert r.stderr == ""  # no Hydra/Joblib banners, no per-job summaries


def test_launchers_give_byte_identical_summaries(grid_sweep, tmp_path: Path):
    d, _ = grid_sweep
    for launcher in ("basic", "parallel"):  # Hydra's own, one at a time; joblib, one worker per core
        other = tmp_path / launcher
        r = _sweep(other, f"hydra/launcher={launcher}", "spread=0.001,0.002", "sizing.order_size_pct=0.01,0.02", "sweep.top=2")
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Launching" not in r.stdout + r.stderr  # Hydra's and joblib's banners are quiet
        for job in range(4):
            assert (other / str(job) / "summary.json").read_bytes() == (d / str(job) / "summary.json").read_bytes()
        assert read_report(other)["full_folder"].to_list()[:2] == read_report(d)["full_folder"].to_list()[:2]


def test_full_outputs_keep_every_file_and_need_no_re_run(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "spread=0.001,0.002", "sweep.outputs=full")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (d / "top").exists()
    for job in range(2):
        assert {"events.csv", "equity.parquet", "report.png"} <= {p.name for p in (d / str(job)).iterdir()}
    assert sorted(read_report(d)["full_folder"].to_list()) == ["0", "1"]


def test_a_sweep_no_larger_than_its_top_writes_full_folders_without_re_runs(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "spread=0.001,0.002,0.003", "sweep.top=3")  # every job is on the leaderboard
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (d / "top").exists()
    for job in range(3):
        folder = d / str(job)
        assert {"events.csv", "equity.parquet", "report.png"} <= {p.name for p in folder.iterdir()}
        assert yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())[-1] == "sweep.outputs=full"
    assert sorted(read_report(d)["full_folder"].to_list()) == ["0", "1", "2"]
    # one job more than the leaderboard: lean folders, the top ones re-run
    lean = tmp_path / "lean"
    r = _sweep(lean, "spread=0.001,0.002,0.003", "sweep.top=2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (lean / "top").iterdir()) == sorted(str(j) for j in read_report(lean)["job"][:2])
    assert "report.png" not in {p.name for p in (lean / "0").iterdir()}


def test_every_numeric_summary_metric_is_an_allowed_objective(grid_sweep):
    from mmrun.config import OBJECTIVES

    d, _ = grid_sweep
    summary = json.loads((d / "0" / "summary.json").read_text())
    parameters = {"seed", "spread", "capital", "fee_maker"}  # echoed settings, not results
    numeric = {k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} - parameters
    assert numeric - set(OBJECTIVES) == set(), "add the new summary metric(s) to mmrun.config.OBJECTIVES"


def test_a_failed_job_is_a_failed_row_and_the_others_are_kept(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "spread=0.002,0")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"mmrun: 1 of 2 sweep jobs failed: see the error column of {d}/sweep_summary.csv"
    df = _check_rows_match_summaries(d, 2)
    ok, failed = df.row(0, named=True), df.row(1, named=True)
    assert (ok["job"], ok["status"], ok["rank"]) == (0, "max_ticks", 1)  # cut at run.max_ticks (TINY)
    assert (failed["job"], failed["status"], failed["rank"]) == (1, "failed", None)
    assert failed["error"] == "spread=0.0 is out of range: allowed 0 < spread < 1"
    assert failed["wall_clock_seconds"] is not None  # run_info.json is written for failed jobs too
    assert "job 1 failed: spread=0.0 is out of range" in r.stdout


def test_an_unknown_key_stops_a_sweep_without_leaving_a_folder(tmp_path: Path):
    """Hydra makes the sweep folder (multirun.yaml) before the jobs are checked: a sweep stopped
    there removes the folder it made, and never one that was there before."""
    d = tmp_path / "sweep"
    r = _sweep(d, "spread=0.001,0.002", "sizing.nope=1,2")
    assert r.returncode == 2 and "sizing.nope: unknown config key" in r.stderr
    assert not d.exists()
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    r = _sweep(d, "spread=0.001,0.002", "sizing.nope=1,2")
    assert r.returncode == 2 and (d / "notes.txt").read_text() == "mine"
    # a key added with '+' that the schema does not know stops the sweep as it stops a single run
    r = _sweep(tmp_path / "added", "spread=0.001,0.002", "+sizing.nope=1,2")
    assert r.returncode == 2 and "sizing.nope: unknown config key" in r.stderr
    assert not (tmp_path / "added").exists()
    # the default folder, outputs/sweeps/<date>, in a folder without outputs/: none of the three is left
    here = tmp_path / "fresh"
    here.mkdir()
    r = run_mmrun("--multirun", "spread=0.001,0.002", "sizing.nope=1,2", cwd=here)
    assert r.returncode == 2 and "sizing.nope: unknown config key" in r.stderr
    assert list(here.iterdir()) == []


def test_a_sweep_into_the_folder_of_a_previous_one_replaces_it(tmp_path: Path):
    d = tmp_path / "sweep"
    assert _sweep(d, "spread=0.001,0.002,0.003").returncode == 0
    before = len(list(d.iterdir()))  # three job folders, multirun.yaml and the report's files
    r = _sweep(d, "spread=0.004")
    assert r.returncode == 0, r.stderr
    # all but multirun.yaml, which the new sweep has written over by then
    assert f"held a previous sweep: replaced ({before - 1} files and folders removed)" in r.stdout
    df = read_report(d)
    assert df["job"].to_list() == [0] and df["spread"].to_list() == [0.004]
    assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["0"]
    # a sweep stopped by a bad key before its first job leaves the previous one as it was
    kept = (d / "multirun.yaml").read_bytes()
    r = _sweep(d, "spread=0.006", "sizing.nope=1")
    assert (d / "multirun.yaml").read_bytes() == kept
    assert r.returncode == 2 and "sizing.nope: unknown config key" in r.stderr
    assert "sweep " not in r.stdout  # no report: the previous sweep's is not printed as this one's
    assert read_report(d)["spread"].to_list() == [0.004] and (d / "0" / "summary.json").is_file()
    # anything mmrun does not write there stops the sweep before it starts, and is kept
    (d / "0" / "notes.txt").write_text("mine")
    r = _sweep(d, "spread=0.005")
    assert r.returncode == 2 and "0: holds notes.txt, which is not part of an mmrun run" in r.stderr
    assert (d / "0" / "notes.txt").read_text() == "mine"
    (d / "0" / "notes.txt").unlink()
    (d / "notes.txt").write_text("mine")
    r = _sweep(d, "spread=0.005")
    assert r.returncode == 2 and "holds notes.txt, which is not part of an mmrun sweep" in r.stderr
    assert (d / "notes.txt").read_text() == "mine" and read_report(d)["spread"].to_list() == [0.004]


def test_a_bad_sweep_section_stops_before_any_job(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "spread=0.001,0.002", "sweep.objective=sharp")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("mmrun: error: sweep.objective='sharp' is not a summary metric")
    assert "did you mean 'sharpe'?" in r.stderr
    assert not (d / "0").exists()


# ---------------------------------------------------------------- re-runs


def test_rerun_of_a_sweep_job_is_byte_identical(grid_sweep, tmp_path: Path):
    d, _ = grid_sweep
    out = tmp_path / "again"
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(d / "3"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "events.parquet identical" in r.stdout and "summary.json  identical" in r.stdout
    assert filecmp.cmp(d / "3" / "summary.json", out / "summary.json", shallow=False)
    assert pl.read_parquet(d / "3" / "events.parquet").equals(pl.read_parquet(out / "events.parquet"))
    assert (out / "events.csv").is_file() and (out / "report.png").is_file()  # a lean job's re-run is full
    assert (out / ".hydra" / "config.yaml").read_text() == (d / "3" / ".hydra" / "config.yaml").read_text()


def test_rerun_of_a_paper_run_is_byte_identical(tmp_path: Path):
    first, again = tmp_path / "first", tmp_path / "again"
    assert run_mmrun("run.max_ticks=30", "spread=0.003", run_dir=first).returncode == 0
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(first), "--out", str(again)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("events.csv", "summary.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes()


def test_rerun_of_a_folder_that_never_finished_says_so(grid_sweep, tmp_path: Path):
    d, _ = grid_sweep
    killed = tmp_path / "killed"
    shutil.copytree(d / "2", killed)
    (killed / "summary.json").unlink()
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(killed), "--out", str(tmp_path / "again")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1
    assert "summary.json  missing in the original: it did not finish" in r.stdout
    # cut off earlier, before its events.parquet too (a lean job never has events.csv)
    (killed / "events.parquet").unlink()
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(killed), "--out", str(tmp_path / "again2")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "events.csv" not in r.stdout
    assert "summary.json  missing in the original: it did not finish" in r.stdout


def test_rerun_compares_parquet_files_by_value_and_others_by_byte(tmp_path: Path):
    from mmrun.record import write_parquet
    from mmrun.rerun import _same

    df = pl.DataFrame({"price": [100.0, 100.5, float("nan")], "side": ["buy", "sell", None]})
    lean, full, other = tmp_path / "lean.parquet", tmp_path / "full.parquet", tmp_path / "other.parquet"
    write_parquet(df, lean, fast=True)
    write_parquet(df, full)
    write_parquet(df.with_columns(pl.col("price") + 1e-9), other)
    assert lean.read_bytes() != full.read_bytes()  # PyArrow's encodings with LZ4, and Polars' zstd
    assert _same(lean, full) and _same(full, full)
    assert not _same(lean, other) and not _same(lean, tmp_path / "missing.parquet")
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "b.csv").write_text("x\n1.0\n")
    assert not _same(tmp_path / "a.csv", tmp_path / "b.csv")


def test_rerun_refuses_when_the_config_no_longer_composes_the_same(grid_sweep, tmp_path: Path):
    d, _ = grid_sweep
    folder = tmp_path / "edited"
    shutil.copytree(d / "0", folder)
    cfg = folder / ".hydra" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("capital: 10000.0", "capital: 5000.0"))
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(folder), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith(f"mmrun: error: {folder}: the same overrides now give another config (capital: 5000.0 -> 10000.0)")
    assert not (tmp_path / "x").exists()
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (r.returncode, r.stderr.strip()) == (2, f"mmrun: error: {tmp_path}: not a run folder (no .hydra/overrides.yaml)")


# ---------------------------------------------------------------- other launchers and Optuna


OPTUNA = pytest.mark.skipif(not _has("hydra_plugins.hydra_optuna_sweeper"), reason="the optuna extra is not installed: pip install -e '.[optuna]'")


@OPTUNA
def test_optuna_optimises_the_configured_objective(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid", "hydra.sweeper.direction=maximize",
               "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "sweep.objective=trades", "spread=choice(0.004,0.001)")
    assert r.returncode == 0, r.stderr[-2000:]
    df = read_report(d)
    assert df["spread"].to_list() == [0.001, 0.004]  # ranked by trades: a tighter spread trades more
    assert df["trades"][0] > df["trades"][1]
    assert "\x1b[" not in r.stdout + r.stderr  # no colour codes: not a terminal
    best = yaml.safe_load((d / "optimization_results.yaml").read_text())
    # what each job returned to Optuna is the configured objective
    assert best["best_value"] == df["trades"][0] and best["best_params"] == {"spread": 0.001}


@OPTUNA
def test_optuna_trials_that_fail_are_reported_even_when_the_sweeper_gives_up(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "hydra/sweeper=optuna", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.n_jobs=2", "spread=choice(0,-1)")
    # every trial failed (marked so in the study), so Optuna has no best trial and raises: the
    # report of the jobs is still written before the one-line error
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "mmrun: internal error: ValueError: No trials are completed yet. (HYDRA_FULL_ERROR=1 shows the traceback)"
    df = read_report(d)
    assert df["status"].to_list() == ["failed", "failed"]
    assert all(e.startswith("spread=") and "is out of range" in e for e in df["error"])
    assert "Failed experiment: Return value must be float-castable. Got 'None'." in r.stdout + r.stderr


@pytest.mark.skipif(not _has("hydra_plugins.hydra_submitit_launcher"), reason="the slurm extra is not installed: pip install -e '.[slurm]'")
def test_submitit_local_sweep_writes_the_report(tmp_path: Path):
    d = tmp_path / "sweep"
    r = _sweep(d, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "spread=0.001,0.002")
    assert r.returncode == 0, r.stderr[-2000:]
    _check_rows_match_summaries(d, 2)
    assert (d / ".submitit").is_dir()


RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's switch to bind the node to the loopback address
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report over the network
}


@pytest.mark.skipif(not _has("hydra_plugins.hydra_ray_launcher"), reason="the ray extra is not installed: pip install -e '.[ray]'")
def test_ray_sweep_on_a_cluster_started_by_the_test(tmp_path: Path, monkeypatch):
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    try:
        address = ctx.address_info["address"]
        assert address.startswith("127.0.0.1:")
        d = tmp_path / "sweep"
        r = _sweep(d, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}", "spread=0.001,0.002")
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"Connecting to existing Ray cluster at address: {address}" in r.stdout + r.stderr
        _check_rows_match_summaries(d, 2)
    finally:
        ray.shutdown()


@pytest.mark.skipif(not _has("hydra_plugins.hydra_ray_launcher"), reason="the ray extra is not installed: pip install -e '.[ray]'")
def test_ray_sweep_on_a_local_ray_started_by_the_sweep(tmp_path: Path, monkeypatch):
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    d = tmp_path / "sweep"
    r = _sweep(d, "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
               "+hydra.launcher.ray.init.include_dashboard=false", "spread=0.001,0.002")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Started a local Ray instance" in r.stdout + r.stderr
    _check_rows_match_summaries(d, 2)


def test_rerun_reads_a_relative_data_path_from_the_runs_own_working_folder(tmp_path: Path):
    """data.path=candles.csv meant the folder the run was started from; a re-run started anywhere
    else reads the same file (Hydra records that folder in .hydra/hydra.yaml)."""
    work = tmp_path / "work"
    work.mkdir()
    ts = 1_767_225_600_000 + 60_000 * np.arange(300)
    close = 100.0 + np.cumsum(np.where(np.arange(300) % 3 == 0, 0.4, -0.15))
    pl.DataFrame({"timestamp": ts, "open": close, "high": close + 0.3, "low": close - 0.3, "close": close,
                  "volume": np.full(300, 5.0)}).write_csv(work / "candles.csv")
    first, again = tmp_path / "first", tmp_path / "again"
    r = run_mmrun("mode=backtest", "data.path=candles.csv", run_dir=first, cwd=work)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "mmrun.rerun", str(first), "--out", str(again)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"(in its working folder {work})" in r.stdout
    for name in ("events.csv", "summary.json"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
    assert json.loads((again / "summary.json").read_text())["trades"] > 0


@pytest.mark.parametrize("preset, expected", [(None, 1), ("2", 2)])
def test_a_sweep_process_gives_polars_one_thread_unless_the_user_set_it(preset, expected):
    # mmrun's launcher runs a worker per core: one Polars thread each (a value the user set is kept)
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}
    if preset is not None:
        env["POLARS_MAX_THREADS"] = preset
    code = "import mmrun.__main__ as m; m._one_polars_thread(); import polars; print(polars.thread_pool_size())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


def test_releasing_idle_joblib_workers_does_not_import_joblib_when_no_pool_ran():
    # after mmrun's own launcher, the report starts at once (importing loky took 0.1 s)
    code = ("import sys, mmrun.sweep as s; s._release_idle_workers(); "
            "print('joblib.externals.loky.reusable_executor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_lean_parquet_file_reads_back_as_the_frame_it_was_written_from(tmp_path: Path):
    from mmrun.record import EVENT_TIME, EVENT_TYPES, SIDES, write_parquet

    n = 1000
    rng = np.random.default_rng(3)
    price = np.round(100 + rng.normal(0, 1, n).cumsum(), 2)
    df = pl.DataFrame({
        "timestamp": pl.Series(np.repeat(np.arange(n // 2) * 60_000, 2) + 1_700_000_000_000).cast(EVENT_TIME),
        "event_type": pl.Series(["FILL", "QUOTE"] * (n // 2), dtype=EVENT_TYPES),
        "price": pl.Series(np.where(np.arange(n) % 7 == 0, np.nan, price)),
        "amount": pl.Series([0.01, None] * (n // 2), dtype=pl.Float64),
        "rows": pl.Series(np.arange(n)[::-1], dtype=pl.Int64),
        "side": pl.Series(["buy", "sell", None, "buy"] * (n // 4), dtype=SIDES),
        "pair": pl.Series(["BTC/USDT"] * n, dtype=pl.Enum(["BTC/USDT"])),
        "note": pl.Series([None] * n, dtype=pl.String),
    })
    path = tmp_path / "events.parquet"
    write_parquet(df, path, fast=True)
    back = pl.read_parquet(path)
    assert back.schema == df.schema
    assert back.equals(df)
