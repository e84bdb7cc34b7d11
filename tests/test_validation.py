"""Out-of-sample checks: period returns, holdout and fold windows (mmrun/validation.py), sweep.json
and the in-sample/out-of-sample columns (mmrun/overfit_report.py), and the command line end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import yaml

from clirun import run_mmrun
from mmrun import overfit, sweep, validation
from mmrun.errors import ConfigError, DataError
from mmrun.overfit_report import returns_matrix

# ---------------------------------------------------------------- period returns


def test_period_returns_hand_values():
    eq = pl.DataFrame({"ts_ms": [0, 10, 20, 30, 40], "equity": [100.0, 101.0, 102.0, 101.0, 103.0]})
    r = validation.period_returns([eq], periods=2)
    assert r["start_ms"].to_list() == [0, 20] and r["end_ms"].to_list() == [20, 40]
    assert r["equity"].to_list() == [102.0, 103.0]
    assert r["return"].to_list() == pytest.approx([0.02, 103 / 102 - 1])
    # boundaries between rows take the last equity at or before them: 0, 13, 27, 40 -> rows 0, 1, 2, 4
    r3 = validation.period_returns([eq], periods=3)
    assert r3["end_ms"].to_list() == [13, 27, 40]
    assert r3["equity"].to_list() == [101.0, 102.0, 103.0]
    # more periods asked than rows: one period per row
    assert validation.period_returns([eq]).height == 4
    assert validation.period_returns([eq.head(1)]).height == 0


def test_period_returns_of_several_pairs_sum_their_equity():
    a = pl.DataFrame({"ts_ms": [0, 10, 20], "equity": [100.0, 110.0, 120.0]})
    b = pl.DataFrame({"ts_ms": [0, 15, 20], "equity": [50.0, 40.0, 60.0]})
    # summed on the union of timestamps, each carried forward: 150 (0), 160 (10), 150 (15), 180 (20)
    r = validation.period_returns([a, b], periods=2)  # ends 10, 20
    assert r["equity"].to_list() == [160.0, 180.0]
    assert r["return"].to_list() == pytest.approx([160 / 150 - 1, 180 / 160 - 1])
    # 4 distinct timestamps: at most 3 periods, ends 7, 13, 20
    r = validation.period_returns([a, b], periods=8)
    assert r["end_ms"].to_list() == [7, 13, 20] and r["equity"].to_list() == [150.0, 160.0, 180.0]


# ---------------------------------------------------------------- windows


def cfg_sweep(holdout=0.0, folds=0, fold_window="anchored"):
    return SimpleNamespace(holdout=holdout, folds=folds, fold_window=fold_window)


def spans(windows):
    return [(w.lo, w.hi) for w in windows]


def test_holdout_and_anchored_folds_cut_by_time():
    ts = np.arange(100) * 1000
    p = validation.plan(cfg_sweep(0.3, 3), ts, "x.csv")
    # cut at 0.7 x 99 s = 69.3 s: rows 0..69 searched, 70..99 held out
    assert (p.search.lo, p.search.hi, p.held.lo, p.held.hi) == (0, 70, 70, 100)
    assert p.held.start_ms == 70_000 and p.held.end_ms == 99_000
    # the searched 69.3 s in 4 blocks: edges 0, 17.3, 34.65, 52.0, 69.3 s -> rows 0, 18, 35, 52, 70
    assert [spans(f) for f in p.folds] == [[(0, 18), (18, 35)], [(0, 35), (35, 52)], [(0, 52), (52, 70)]]
    rolling = validation.plan(cfg_sweep(0.3, 3, "rolling"), ts, "x.csv")
    assert [spans(f) for f in rolling.folds] == [[(0, 18), (18, 35)], [(18, 35), (35, 52)], [(35, 52), (52, 70)]]
    # folds without a holdout cover every row
    whole = validation.plan(cfg_sweep(0.0, 1), ts, "x.csv")
    assert whole.held is None and spans(whole.folds[0]) == [(0, 50), (50, 100)]
    rows = {"ts_ms": ts, "bid": ts * 2.0}
    assert p.held.take(rows)["bid"].tolist() == (ts[70:] * 2.0).tolist()


def test_windows_too_small_are_one_clear_error():
    with pytest.raises(DataError, match=r"sweep.holdout=0.01: a window of x.csv from row 10 holds 1 rows"):
        validation.plan(cfg_sweep(0.01), np.arange(11), "x.csv")
    with pytest.raises(DataError, match=r"sweep.folds=9"):
        validation.plan(cfg_sweep(0.0, 9), np.arange(12), "x.csv")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"holdout": 1.0}, "sweep.holdout=1.0 is out of range: allowed a fraction of the data's span in [0, 1) (0 = off)"),
        ({"holdout": -0.1}, "sweep.holdout=-0.1 is out of range"),
        ({"folds": -1}, "sweep.folds=-1 is out of range: allowed a whole number from 0 (off) to 50"),
        ({"fold_window": "sliding"}, "sweep.fold_window='sliding' is not allowed: choose one of anchored, rolling"),
    ],
)
def test_settings_out_of_range(kw, message):
    with pytest.raises(ConfigError) as e:
        validation.check_settings(cfg_sweep(**kw))
    assert str(e.value).startswith(message)


# ---------------------------------------------------------------- sweep.json from hand-made job folders


def make_job(root: Path, num: int, spread: float, summary: dict, returns: np.ndarray | None, start_ms: int = 0) -> None:
    folder = root / str(num)
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": "MULTIRUN", "job": {"num": num}}}))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"spread={spread}"]))
    (folder / "summary.json").write_text(json.dumps(summary))
    if returns is not None:
        n = returns.size
        pl.DataFrame({"period": np.arange(n), "start_ms": start_ms + np.arange(n) * 10, "end_ms": start_ms + np.arange(1, n + 1) * 10,
                      "equity": np.cumprod(1 + returns), "return": returns}).write_parquet(folder / validation.RETURNS_FILE)


def test_sweep_json_with_one_truly_better_job(tmp_path: Path):
    rng = np.random.default_rng(7)
    m = rng.normal(0, 0.01, size=(256, 6))
    m[:, 4] += 0.004
    for j in range(6):
        make_job(tmp_path, j, 0.001 * (j + 1), {"status": "completed", "total_return_pct": float(m[:, j].sum()), "sharpe": 1.0}, m[:, j])
    report = sweep.write_report(tmp_path, declared=["spread"])
    content = json.loads((tmp_path / "sweep.json").read_text())
    assert content["trials"] == 6 and content["best"]["job"] == 4
    ranked = report.table["job"].to_list()
    srs = overfit.sharpe_per_period(m[:, ranked])
    expected = overfit.deflated_sharpe(m[:, 4], srs, n_trials=6)
    assert content["deflated_sharpe"] == pytest.approx(expected.dsr)
    assert content["pbo"] == pytest.approx(overfit.pbo_cscv(m[:, ranked]).pbo)
    assert content["pbo"] < 0.05
    assert content["pbo_detail"] == {"splits": 16, "combinations": 12870, "all_combinations": True, "periods": 256, "jobs": 6}
    assert "holdout" not in content and "is_total_return_pct" not in report.table.columns
    assert report.leaderboard.splitlines()[-1].startswith("  best of 6 trials (job 4, by total_return_pct): Sharpe 1.00; ")
    assert f"probability of overfitting {content['pbo']:.2f} (16 blocks)" in content["line"]
    assert content["sources"][0].startswith("Bailey, D. H. and López de Prado, M. (2014)")


def test_sweep_json_says_why_when_returns_differ(tmp_path: Path):
    r = np.random.default_rng(1).normal(0, 0.01, size=(2, 64))
    make_job(tmp_path, 0, 0.001, {"status": "completed", "total_return_pct": 1.0}, r[0])
    make_job(tmp_path, 1, 0.002, {"status": "completed", "total_return_pct": 0.5}, r[1], start_ms=5)
    sweep.write_report(tmp_path)
    content = json.loads((tmp_path / "sweep.json").read_text())
    assert content["pbo"] is None and content["deflated_sharpe"] is None
    assert content["pbo_note"] == "the jobs' returns are on different periods (different market data or spans)"
    assert content["verdict"] == "not enough data to judge the winner"
    assert returns_matrix([tmp_path / "0", tmp_path / "9"])[1] == "9/returns.parquet missing or unreadable"


def test_one_job_gets_no_sweep_json(tmp_path: Path):
    make_job(tmp_path, 0, 0.001, {"status": "completed", "total_return_pct": 1.0}, np.zeros(8))
    report = sweep.write_report(tmp_path)
    assert not (tmp_path / "sweep.json").exists() and report.trust.line is None


# ---------------------------------------------------------------- the command line


def write_candles(path: Path, n: int = 400, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    pl.DataFrame(
        {
            "timestamp": 1_700_000_000_000 + np.arange(n) * 3_600_000,
            "open": close,
            "high": close * (1 + np.abs(rng.normal(0, 0.003, n))),
            "low": close * (1 - np.abs(rng.normal(0, 0.003, n))),
            "close": close,
            "volume": rng.uniform(10, 100, n),
        }
    ).write_csv(path)


@pytest.fixture(scope="module")
def holdout_sweep(tmp_path_factory) -> tuple:
    tmp = tmp_path_factory.mktemp("holdout")
    data = tmp / "h1.csv"
    write_candles(data)
    d = tmp / "sweep"
    r = run_mmrun("--multirun", "mode=backtest", f"data.path={data}", "spread=0.002,0.004,0.016", "sweep.holdout=0.25",
                  "sweep.folds=2", "sweep.objective=sharpe", f"hydra.sweep.dir={d}", timeout=300)
    return tmp, data, d, r


def test_holdout_sweep_writes_sweep_json_columns_and_picture(holdout_sweep):
    tmp, data, d, r = holdout_sweep
    assert r.returncode == 0, r.stderr[-2000:]
    content = json.loads((d / "sweep.json").read_text())
    assert (content["trials"], content["jobs"], content["objective"]) == (3, 3, "sharpe")
    assert 0 <= content["deflated_sharpe"] <= 1 and 0 <= content["pbo"] <= 1
    # 400 hourly bars: the last 25 % of the span (99.75 h) starts at bar 300
    assert content["holdout"]["search"]["rows"] == 300 and content["holdout"]["held_out"]["rows"] == 100
    assert [f["fold"] for f in content["folds"]] == [1, 2]
    assert [f["test"]["rows"] for f in content["folds"]] == [100, 100]
    df = pl.read_csv(d / "sweep_summary.csv", schema_overrides={"folder": pl.String})
    i = df.columns.index("sharpe")
    assert df.columns[i + 1 : i + 3] == ["is_sharpe", "oos_sharpe"]
    assert df["is_sharpe"].to_list() == df["sharpe"].to_list()
    best = df.row(0, named=True)
    assert content["best"]["job"] == best["job"] and content["best"]["oos_sharpe"] == pytest.approx(best["oos_sharpe"])
    assert (d / "is_oos.png").stat().st_size > 5000 and (d / "heatmap.png").exists() is False
    line = next(x for x in r.stdout.splitlines() if x.startswith("  best of 3 trials"))
    assert f"in-sample Sharpe {best['is_sharpe']:.2f}, out-of-sample {best['oos_sharpe']:.2f}" in line
    assert line == "  " + content["line"]
    assert sum(x.startswith("  fold ") for x in r.stdout.splitlines()) == 2
    assert "sweep.json" in r.stdout and "is_oos.png" in r.stdout


def test_holdout_figures_equal_runs_by_hand_with_data_since_and_until(holdout_sweep):
    tmp, data, d, r = holdout_sweep
    assert r.returncode == 0, r.stderr[-2000:]
    job = d / "0"
    summary = json.loads((job / "summary.json").read_text())
    checked = json.loads((job / validation.VALIDATION_FILE).read_text())
    held = next(iter(checked["pairs"].values()))["holdout"]
    assert summary["ticks"] == 300 and held["rows"] == 100
    # a candle's row is stamped at its close; data.since / data.until count candle open times
    assert held["start"] == "2023-11-27T11:13:20.000Z"  # bar 300 opens 300 h after 2023-11-14T22:13:20, closes 1 h later
    cut = "2023-11-27T10:13:20Z"
    spread = [o for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) if o.startswith("spread=")][0]
    for part, bound, want in (("search", f"data.until={cut}", summary), ("held", f"data.since={cut}", held["metrics"])):
        one = run_mmrun("mode=backtest", f"data.path={data}", spread, bound, run_dir=tmp / f"run_{part}")
        assert one.returncode == 0, one.stderr[-2000:]
        alone = json.loads((tmp / f"run_{part}" / "summary.json").read_text())
        for key in ("total_return_pct", "trades", "sharpe", "max_drawdown_pct", "fees", "ticks"):
            assert alone[key] == want[key], (part, key)
        if part == "search":
            assert alone["data_fingerprint"] == summary["data_fingerprint"]
            # the job's period returns are those of its own (searched) equity
            ret = pl.read_parquet(job / validation.RETURNS_FILE)
            eq = pl.read_parquet(tmp / "run_search" / "equity.parquet")
            assert ret.equals(validation.period_returns([eq]))


def test_holdout_in_paper_mode_is_one_clear_error(tmp_path: Path):
    r = run_mmrun("sweep.holdout=0.3", run_dir=tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "mmrun: error: sweep.holdout / sweep.folds need mode=backtest (a paper run has no data to hold out): "
        "add mode=backtest, or set sweep.holdout=0 sweep.folds=0"
    )


def test_plain_sweep_has_sweep_json_without_holdout(tmp_path: Path):
    d = tmp_path / "sweep"
    r = run_mmrun("--multirun", "mode=backtest", "run.max_ticks=300", "spread=0.001,0.004", f"hydra.sweep.dir={d}", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    content = json.loads((d / "sweep.json").read_text())
    assert content["trials"] == 2 and content["pbo_detail"]["jobs"] == 2
    assert content["deflated_sharpe_detail"]["periods"] == 256
    assert not (d / "is_oos.png").exists()
    assert not math.isnan(content["pbo"])


@pytest.mark.skipif(not __import__("importlib").util.find_spec("optuna"), reason="the optuna extra is not installed")
def test_optuna_trials_are_the_study_count(tmp_path: Path):
    db = f"sqlite:///{tmp_path / 'study.db'}"
    common = ("hydra/sweeper=optuna", "hydra/launcher=basic", "hydra.sweeper.direction=maximize", "hydra.sweeper.n_trials=2",
              f"hydra.sweeper.storage={db}", "hydra.sweeper.study_name=mm", "mode=backtest", "run.max_ticks=200",
              "spread=choice(0.004,0.001,0.002)")
    for name in ("first", "second"):
        r = run_mmrun("--multirun", *common, f"hydra.sweep.dir={tmp_path / name}", timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    content = json.loads((tmp_path / "second" / "sweep.json").read_text())
    assert (content["jobs"], content["trials"]) == (2, 4)  # the study holds both sweeps' trials
