"""The command line end to end, in subprocesses, with the run folder in a temporary directory."""

import json

import polars as pl
import pytest

from clirun import run_mmrun

SUMMARY_FIELDS = (
    "pair exchange mode status initial_value final_value total_return_pct pnl trades buys sells "
    "volume_quote fees max_drawdown_pct sharpe final_base final_quote ticks errors seed data_fingerprint"
).split()
EVENT_COLUMNS = (
    "timestamp event_type price amount base_inventory quote_inventory total_value pair side fee mid"
).split()


def check_run_folder(folder, pair):
    for name in ("events.csv", "events.parquet", "equity.parquet", "summary.json", "mmrun.log", ".hydra/config.yaml", ".hydra/overrides.yaml"):
        assert (folder / name).exists(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert all(k in summary for k in SUMMARY_FIELDS)
    assert summary["pair"] == pair and summary["status"] == "completed" and summary["errors"] == 0
    assert summary["buys"] > 0 and summary["sells"] > 0, "fills on both sides"
    events = pl.read_csv(folder / "events.csv")
    assert events.columns[: len(EVENT_COLUMNS)] == EVENT_COLUMNS
    assert pl.read_parquet(folder / "events.parquet").height == events.height
    equity = pl.read_parquet(folder / "equity.parquet")
    assert equity.columns == ["ts_ms", "mid", "bid_quoted", "ask_quoted", "base", "quote", "equity"]
    assert equity.height == summary["ticks"]
    return summary


def test_default_run(tmp_path):
    res = run_mmrun(run_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    s = check_run_folder(tmp_path, "BTC/USDT")
    assert s["exchange"] == "sim" and s["mode"] == "paper" and s["ticks"] == 2881  # 4 h every 5 s
    assert "BTC/USDT" in res.stdout and "completed" in res.stdout


def test_pair_and_spread(tmp_path):
    res = run_mmrun("pair=ETH/USDT", "spread=0.002", run_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    s = check_run_folder(tmp_path, "ETH/USDT")
    assert s["spread"] == 0.002
    events = pl.read_csv(tmp_path / "events.csv")
    assert events["pair"].unique().to_list() == ["ETH/USDT"]


def test_two_pairs_in_one_process(tmp_path):
    res = run_mmrun("pairs=[BTC/USDT,ETH/USDT@5000]", "run.max_ticks=500", run_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    root = json.loads((tmp_path / "summary.json").read_text())
    btc = json.loads((tmp_path / "BTC-USDT" / "summary.json").read_text())
    eth = json.loads((tmp_path / "ETH-USDT" / "summary.json").read_text())
    assert btc["initial_value"] == 10000.0 and eth["initial_value"] == 5000.0
    assert root["initial_value"] == 15000.0
    assert root["trades"] == btc["trades"] + eth["trades"]
    assert root["final_value"] == pytest.approx(btc["final_value"] + eth["final_value"])
    assert btc["data_fingerprint"] != eth["data_fingerprint"]  # independent markets


def test_same_seed_gives_byte_identical_outputs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        assert run_mmrun("run.max_ticks=800", run_dir=d).returncode == 0
    for name in ("events.csv", "summary.json", "equity.parquet", "events.parquet"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    c = tmp_path / "c"
    assert run_mmrun("run.max_ticks=800", "seed=7", run_dir=c).returncode == 0
    assert (a / "events.csv").read_bytes() != (c / "events.csv").read_bytes()


def test_instant_fills_apply_the_original_rule_literally(tmp_path):
    res = run_mmrun("fills=instant", "fees.maker=0", "run.max_ticks=300", run_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    ev = pl.read_csv(tmp_path / "events.csv")
    fills = ev.filter(pl.col("event_type") == "FILL")
    # every cycle: a buy at bid*(1-s/2), then a sell at ask*(1+s/2) of the same size
    assert fills.height == 600
    assert fills["side"].to_list() == ["buy", "sell"] * 300
    by_ts = fills.group_by("timestamp", maintain_order=True).agg(pl.col("price"), pl.col("amount"), pl.col("mid"))
    for prices, amounts in zip(by_ts["price"], by_ts["amount"]):
        assert prices[0] < prices[1] and amounts[0] == amounts[1]
    assert (fills["fee"] == 0).all()


BAD_INPUTS = [
    (["foo=1"], "foo"),
    (["+foo=1"], "foo"),
    (["spread=abc"], "spread"),
    (["spread=0"], "spread"),
    (["spread=1.5"], "spread"),
    (["capital=-5"], "capital"),
    (["pair=BTCUSDT"], "pair"),
    (["exchange=nope"], "exchange"),
    (["exchange.id=notanexchange"], "exchange.id"),
    (["fills=nope"], "fills"),
    (["mode=live"], "mode"),
    (["sizing.order_size_pct=2"], "sizing.order_size_pct"),
    (["run.max_ticks=0"], "run.max_ticks"),
    (["pairs=[BTC/USDT,ETH/USDT@x]"], "pairs[1]"),
    (["pair=BTX/USDT"], "pair"),
    (["mode=backtest", "data.path=/no/such/file.csv"], "/no/such/file.csv"),
]


@pytest.mark.parametrize("args, names", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_nonzero_exit(tmp_path, args, names):
    res = run_mmrun(*args, run_dir=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("mmrun: error: ") and names in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
