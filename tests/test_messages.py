"""Messages that say what happened: minimum-size lines per level, a failed run's error in its
log file, the instant fill model's caveat, a line per pair, a failed sweep job said once."""

import json
import logging
import sys

import pytest

from mmrun.messages import INSTANT_CAVEAT, caveats, level_sizes, log_to_files, minimums_text, pair_lines


pytestmark = pytest.mark.usefixtures("restore_logging")


def test_level_sizes_follow_the_ladder_rule():
    # 10,000 x 1 % / 100 = 1 base; level k x (1 + k x 0.5), capped at 10,000 x 2 % / 100 = 2
    assert level_sizes(10_000, 0.01, 0.02, 4, 0.5, 100.0) == [1.0, 1.5, 2.0, 2.0]
    assert level_sizes(10_000, 0.01, 0.2, 2, 0.0, 3.0, lot=0.1) == pytest.approx([33.3, 33.3])


def test_the_minimums_line_says_which_levels_are_dropped_and_which_placed():
    sizes = [0.04, 0.06, 0.08]  # at 100: values 4, 6, 8 against a minimum notional of 5
    text = minimums_text(sizes, 100.0, 0.0, 5.0, "USDT")
    assert text == ("level 1 of 3 not placed: order value 4.00 USDT below the exchange's minimum notional 5 "
                    "(the exchange would reject them); levels 2-3 placed")
    text = minimums_text([0.01, 0.02, 0.08], 100.0, 0.0, 5.0, "USDT")
    assert text.startswith("levels 1-2 of 3 not placed: level 1: order value 1.00 USDT below")
    assert "level 2: order value 2.00 USDT" in text and text.endswith("level 3 placed")
    assert minimums_text([0.01, 0.02], 100.0, 0.0, 5.0).startswith("all 2 levels not placed")
    assert minimums_text([0.01], 100.0, 0.05, 0.0) == (
        "quotes not placed: order size 0.01 below the exchange's minimum amount 0.05 (the exchange would reject them)")
    assert minimums_text([1.0, 2.0], 100.0, 0.0, 5.0) == ""


def test_log_to_files_reaches_file_handlers_only(tmp_path, capsys):
    logger = logging.getLogger("mmrun.test_messages")
    logger.propagate = False
    file_handler = logging.FileHandler(tmp_path / "x.log")
    stream = logging.StreamHandler(sys.stderr)
    logger.addHandler(file_handler)
    logger.addHandler(stream)
    try:
        log_to_files(logger, logging.ERROR, "run failed: spread=2.0 is out of range")
    finally:
        logger.removeHandler(file_handler)
        logger.removeHandler(stream)
        file_handler.close()
    assert "run failed: spread=2.0 is out of range" in (tmp_path / "x.log").read_text()
    assert capsys.readouterr().err == ""


def test_a_failed_run_writes_its_error_to_mmrun_log(monkeypatch, capsys, tmp_path):
    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", "mode=backtest", "data.path=/no/such/file.csv",
                                      f"hydra.run.dir={tmp_path}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "/no/such/file.csv" in err[0]
    log_text = (tmp_path / "mmrun.log").read_text()
    assert "run failed: " in log_text and "/no/such/file.csv" in log_text


def test_instant_runs_carry_a_caveat_and_several_pairs_a_line_each(monkeypatch, capsys, tmp_path):
    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", "mode=backtest", "fills=instant", "run.max_ticks=50",
                                      "pairs=[BTC/USDT,ETH/USDT@5000]", f"hydra.run.dir={tmp_path}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    entry.main()
    out = capsys.readouterr().out
    root = json.loads((tmp_path / "summary.json").read_text())
    pair = json.loads((tmp_path / "BTC-USDT" / "summary.json").read_text())
    assert root["caveats"] == [INSTANT_CAVEAT] and pair["caveats"] == [INSTANT_CAVEAT]
    assert root["retries"] == 0 and pair["retries"] == 0 and pair["trades_incomplete"] == 0
    assert f"  note    {INSTANT_CAVEAT}" in out
    lines = [line for line in out.splitlines() if line.startswith("  BTC/USDT ") or line.startswith("  ETH/USDT ")]
    # a backtest cut at run.max_ticks says so, as a paper run does
    assert len(lines) == 2 and "5,000.00 ->" in lines[1] and "max_ticks" in lines[0]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the all-pairs picture


def test_touch_runs_have_no_caveat():
    assert caveats("touch") == [] and caveats("instant") == [INSTANT_CAVEAT]


def test_pair_lines_align_pairs():
    lines = pair_lines([
        {"pair": "BTC/USDT", "status": "completed", "initial_value": 10_000.0, "final_value": 10_013.93,
         "total_return_pct": 0.13930, "trades": 2077, "fees": 207.7, "max_drawdown_pct": 0.16, "errors": 0},
        {"pair": "DOGE/USDT", "status": "failed", "initial_value": 5_000.0, "final_value": 5_000.0,
         "total_return_pct": 0.0, "trades": 0, "fees": 0.0, "max_drawdown_pct": 0.0, "errors": 1},
    ])
    assert lines[0] == ("  BTC/USDT   completed  10,000.00 -> 10,013.93 USDT (+0.139 %), 2077 fills, fees 207.70, "
                        "max drawdown 0.160 %, errors 0")
    assert lines[1].startswith("  DOGE/USDT  failed  5,000.00 -> 5,000.00 USDT")


def test_a_failed_job_is_not_prefixed_twice():
    import polars as pl

    from mmrun.sweep import leaderboard

    table = pl.DataFrame({"rank": pl.Series([None], dtype=pl.Int64), "job": [0], "data.path": ["x.csv"],
                          "spread": [0.002], "status": ["failed"], "total_return_pct": pl.Series([None], dtype=pl.Float64),
                          "error": ["data.path=x.csv: no such file"]})
    board = leaderboard(table, ["data.path", "spread"], "total_return_pct", "maximize", 5, "s")
    assert board.splitlines()[-1] == "  job 0 failed: data.path=x.csv: no such file (spread=0.002)"
