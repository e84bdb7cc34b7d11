"""The run folder: one folder per pair, a previous run replaced whole (never mixed with the new
one), a folder holding other files refused; no faked values when nothing was traded; a failed
pair or a market that cannot be generated is not a completed run."""

from __future__ import annotations

import json

import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from clirun import run_mmrun
from mmrun.__main__ import CONF_DIR
from mmrun.config import PairSpec
from mmrun.errors import ConfigError
from mmrun.output import FolderRefused, clear_previous_run, pair_dirs
from mmrun.record import safe_name


@pytest.mark.parametrize("pairs", [("A-B/USDT", "A/B-USDT"), ("BTC/USDT", "BTC/USDT."), ("BTC/USDT:X", "BTC/USDT-X"),
                                   ("btc/usdt", "BTC/USDT")])
def test_pairs_that_would_share_a_folder_are_refused_before_anything_is_written(tmp_path, pairs):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"{pairs[0]} and {pairs[1]} would share the output folder"):
        pair_dirs(out, [PairSpec(p, 1000.0) for p in pairs])
    assert not out.exists()


def test_distinct_folders_for_distinct_pairs(tmp_path):
    dirs = pair_dirs(tmp_path, [PairSpec("BTC/USDT", 1.0), PairSpec("ETH/USDT", 1.0)])
    assert [d.name for d in dirs.values()] == ["BTC-USDT", "ETH-USDT"] and all(d.is_dir() for d in dirs.values())
    assert safe_name("BTC/USDT") == "BTC-USDT"


def test_a_previous_run_is_removed_whole_and_other_files_are_refused(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("new: config\n")
    (tmp_path / "__main__.log").write_text("")
    for name in ("events.csv", "summary.json", "market.json", "market.parquet.tmp", "returns.parquet"):
        (tmp_path / name).write_text("old")
    (tmp_path / "BTC-USDT").mkdir()
    (tmp_path / "BTC-USDT" / "events.csv").write_text("old")
    removed = clear_previous_run(tmp_path)
    assert len(removed) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hydra", "__main__.log"]
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == "new: config\n"

    (tmp_path / "summary.json").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FolderRefused, match="holds notes.txt, which is not part of an mmrun run"):
        clear_previous_run(tmp_path)
    assert (tmp_path / "summary.json").read_text() == "old"  # refused: nothing removed

    # a killed paper run's journal is data: its folder is not replaced before it is recovered
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "BTC-USDT").mkdir()
    (tmp_path / "BTC-USDT" / ".journal.rows").write_bytes(b"")
    with pytest.raises(FolderRefused, match=f"stopped before it finished .*python -m mmrun.recover {tmp_path}"):
        clear_previous_run(tmp_path)
    assert (tmp_path / "summary.json").read_text() == "old"


def test_a_two_pair_run_then_a_one_pair_run_into_the_same_folder(tmp_path):
    first = run_mmrun("pairs=[BTC/USDT,ETH/USDT]", "run.max_ticks=5", run_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "ETH-USDT" / "events.csv").is_file()
    second = run_mmrun("pair=ETH/USDT", "run.max_ticks=7", "exchange.sim.prices.ETH=2000", run_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    assert not (tmp_path / "BTC-USDT").exists() and not (tmp_path / "ETH-USDT").exists()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["pair"], s["ticks"]) == ("ETH/USDT", 7)
    assert pl.read_parquet(tmp_path / "market.parquet").height == 7
    log = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "held a previous run: replaced" in log and "paper ETH/USDT on sim" in log
    assert "BTC/USDT,ETH/USDT" not in log  # the log holds this run's lines only


def test_a_folder_with_foreign_files_is_refused_with_one_line(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    r = run_mmrun("run.max_ticks=5", run_dir=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "holds thesis.tex, which is not part of an mmrun run" in r.stderr
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "events.csv").exists()


def _cfg(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_no_completed_cycle_reports_the_starting_value_not_a_loss(tmp_path):
    from mmrun.output import aggregate, pair_summary
    from mmrun.recorder import PairRecorder

    cfg = _cfg("pairs=[BTC/USDT,ETH/USDT@5000]")
    empty = PairRecorder("ETH/USDT").outcome("stopped", 3)
    s = pair_summary(cfg, PairSpec("ETH/USDT", 5000.0), empty)
    assert (s["initial_value"], s["final_value"], s["total_return_pct"], s["pnl"]) == (5000.0, 5000.0, 0.0, 0.0)
    assert (s["ticks"], s["final_base"], s["final_quote"], s["pnl_vs_hold"]) == (0, 0.0, 5000.0, 0.0)

    rec = PairRecorder("BTC/USDT")
    for i, eq in enumerate((10000.0, 10010.0, 10020.0)):
        rec.cycle((1000 * i, 100.0, 99.0, 101.0, 0.0, eq, eq), (1000 * i, 99.9, 100.1, 100.0, float("nan"), float("nan"), 0.0))
    full = rec.outcome("stopped", 0)
    root = aggregate(cfg, [pair_summary(cfg, PairSpec("BTC/USDT", 10000.0), full), s], [full, empty])
    assert (root["initial_value"], root["final_value"]) == (15000.0, 15020.0)
    assert root["max_drawdown_pct"] == 0.0  # the idle pair counts at its capital, not as 0


def test_a_simulated_market_that_cannot_be_generated_is_a_config_error(tmp_path):
    # the config's ranges (mmrun/limits.py) refuse these before the market is built, naming the key
    r = run_mmrun("exchange.sim.prices.BTC=0", run_dir=tmp_path / "a")
    assert r.returncode == 2 and "exchange.sim.prices.BTC=0.0 is out of range" in r.stderr
    r = run_mmrun("mode=backtest", "exchange.sim.start=9999-12-31T23:59:00Z", run_dir=tmp_path / "b")
    assert r.returncode == 2 and "exchange.sim.start=9999-12-31T23:59:00Z is out of range" in r.stderr


def test_a_backtest_on_a_missing_file_fails_in_one_line_and_says_so_in_its_folder(tmp_path):
    out = tmp_path / "run"
    r = run_mmrun("mode=backtest", f"data.path={tmp_path / 'nope.csv'}", f"hydra.run.dir={out}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"mmrun: error: data.path={tmp_path / 'nope.csv'}: no such file"]
    summary = json.loads((out / "summary.json").read_text())
    # a data-file backtest is labelled `file`, finished or not
    assert (summary["status"], summary["exchange"], summary["mode"]) == ("failed", "file", "backtest")
