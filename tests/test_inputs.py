"""What a user types: absurd but well-typed values, '%' and '~' on the command line, pair hints.

Absurd values run through the real command line's entry point (`mmrun.__main__.main`) in this
process: each must end in one line naming the key, exit code 2, before anything runs.
"""

import os
import sys
from types import SimpleNamespace

import pytest

from mmrun.errors import ConfigError
from mmrun.inputs import (
    check_launcher_args, exchange_hint, normalise_argv, normalise_override, pair_candidates, pair_hint,
    percent_to_fraction, reach_warnings, unlisted_sim_pair,
)
from mmrun.limits import RANGES, Range, check_ranges


pytestmark = pytest.mark.usefixtures("restore_logging")


def run_main(monkeypatch, capsys, tmp_path, *args):
    """mmrun's command line in this process: (exit code, stderr lines)."""
    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", *args, f"hydra.run.dir={tmp_path / 'run'}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    return exit_info.value.code, capsys.readouterr().err.strip().splitlines()


LONG = "A" * 300
# (arguments, the key the one line must name): every absurd value of the adversarial pass
ABSURD = [
    (["intervals.quote_s=inf"], "intervals.quote_s"),
    (["intervals.quote_s=0.0001"], "intervals.quote_s"),
    (["intervals.quote_s=nan"], "intervals.quote_s"),
    (["intervals.error_s=inf"], "intervals.error_s"),
    (["intervals.error_s=-1"], "intervals.error_s"),
    (["exchange.sim.duration_s=inf"], "exchange.sim.duration_s"),
    (["exchange.sim.duration_s=1e11"], "exchange.sim.duration_s"),
    (["exchange.sim.duration_s=2e7", "intervals.quote_s=1"], "exchange.sim.duration_s"),
    (["exchange.sim.prices.BTC=0"], "exchange.sim.prices.BTC"),
    (["exchange.sim.prices.BTC=nan"], "exchange.sim.prices.BTC"),
    (["exchange.sim.prices.BTC=inf"], "exchange.sim.prices.BTC"),
    (["exchange.sim.prices.BTC=-3"], "exchange.sim.prices.BTC"),
    (["exchange.sim.default_price=0"], "exchange.sim.default_price"),
    (["exchange.sim.start=9999-12-31T23:59:00Z"], "exchange.sim.start"),
    (["exchange.sim.start=1900-01-01T00:00:00Z"], "exchange.sim.start"),
    (["exchange.sim.sweep_bps=inf"], "exchange.sim.sweep_bps"),
    (["exchange.sim.spread_ticks=1000000000"], "exchange.sim.spread_ticks"),
    (["exchange.sim.volatility_annual=1e9"], "exchange.sim.volatility_annual"),
    (["exchange.sim.trade_rate_per_s=inf"], "exchange.sim.trade_rate_per_s"),
    (["exchange.sim.trade_rate_per_s=500", "intervals.quote_s=60"], "exchange.sim.trade_rate_per_s"),
    (["exchange.sim.trade_notional=nan"], "exchange.sim.trade_notional"),
    (["seed=-1", "mode=backtest"], "seed"),
    (["capital=inf"], "capital"),
    (["capital=1e300"], "capital"),
    (["spread=nan"], "spread"),
    (["sizing.order_size_pct=nan"], "sizing.order_size_pct"),
    (["fees.maker=-0.001"], "fees.maker"),
    (["fills.participation=inf"], "fills.participation"),
    (["run.max_ticks=-5"], "run.max_ticks"),
    (["exchange=binance", "exchange.timeout_s=inf"], "exchange.timeout_s"),
    (["exchange=binance", "exchange.retry_attempts=1000000"], "exchange.retry_attempts"),
    (["exchange=binance", "exchange.retry_max_wait_s=inf"], "exchange.retry_max_wait_s"),
    (["exchange=binance", "exchange.max_data_age_s=0"], "exchange.max_data_age_s"),
    (["sweep.top=0"], "sweep.top"),
    (["hydra.launcher.n_jobs=0"], "hydra.launcher.n_jobs"),
    (["pairs=[BTC/USDT@inf,ETH/USDT]"], "pairs[0] capital"),
    (["pairs=[BTC/USDT,ETH/USDT@nan]"], "pairs[1] capital"),
    ([f"pair={LONG}/USDT"], "pair"),
    ([f"pairs=[BTC/USDT,{LONG}/USDT]"], "pairs[1]"),
    ([f"exchange.sim.prices.{LONG}=1"], "exchange.sim.prices."),
    (["exchange.sim.quotes=[]"], "exchange.sim.quotes"),
]


@pytest.mark.parametrize("args, key", ABSURD, ids=[" ".join(a)[:60] for a, _ in ABSURD])
def test_an_absurd_value_is_one_line_naming_its_key(monkeypatch, capsys, tmp_path, args, key):
    code, lines = run_main(monkeypatch, capsys, tmp_path, *args)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("mmrun: error: ") and key in lines[0], lines[0]
    assert "internal error" not in lines[0]
    assert not (tmp_path / "run" / "events.csv").exists()  # refused before anything ran


@pytest.mark.parametrize("run_dir", ["/proc/mmrun-cannot-be-here/run", "/proc/self/mmrun"])
def test_an_output_folder_that_cannot_be_made_is_one_line(monkeypatch, capsys, run_dir):
    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", f"hydra.run.dir={run_dir}", "run.max_ticks=2"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry.main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("mmrun: error: cannot write /proc/") and "hydra.run.dir" in lines[0], lines[0]


def test_every_range_is_finite_and_refuses_nan_and_infinities():
    for key, rng in RANGES.items():
        assert isinstance(rng, Range) and abs(rng.lo) < 1e300 and abs(rng.hi) < 1e300, key
        for bad in (float("nan"), float("inf"), float("-inf"), rng.hi * 2 + 1, rng.lo - 1):
            assert not rng.holds(bad), (key, bad)


def test_the_defaults_are_inside_every_range():
    from hydra import compose, initialize_config_dir

    from mmrun.__main__ import CONF_DIR

    for exchange in ("sim", "binance"):
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[f"exchange={exchange}"])
        check_ranges(cfg)


# ---------------------------------------------------------------- the command line's words


@pytest.mark.parametrize("word, want", [
    ("exchange.sim.prices.PEPE=0.0000092", "++exchange.sim.prices.PEPE=0.0000092"),
    ("exchange.sim.prices.BTC=50000", "++exchange.sim.prices.BTC=50000"),
    ("+exchange.sim.prices.PEPE=1", "+exchange.sim.prices.PEPE=1"),
    ("spread=0.2%", "spread=0.002"),
    ("spread=20%", "spread=0.2"),
    ("spread=1%", "spread=0.01"),
    ("spread=0.1%,0.2%,0.5%", "spread=0.001,0.002,0.005"),
    ("spread=interval(0.05%,1%)", "spread=interval(0.0005,0.01)"),
    ("fees.maker=0.075%", "fees.maker=0.00075"),
    ("strategy.target_base_share=50%", "strategy.target_base_share=0.5"),
    ("spread=0.002", "spread=0.002"),
    ("capital=10%", "capital=10%"),  # not a fraction: left for the type check to refuse
    ("hydra.run.dir=out/${now:%Y-%m-%d}", "hydra.run.dir=out/${now:%Y-%m-%d}"),
    ("data.path=~/x.csv", f"data.path={os.path.expanduser('~')}/x.csv"),
    ("data.path=~/a.csv,~/b.csv", f"data.path={os.path.expanduser('~')}/a.csv,{os.path.expanduser('~')}/b.csv"),
    ("data.path=/tmp/~x.csv", "data.path=/tmp/~x.csv"),
    ("~data.path", "~data.path"),
    ("--multirun", "--multirun"),
    ("strategy=avellaneda_stoikov", "strategy=avellaneda_stoikov"),
])
def test_command_line_words_hydra_would_refuse_are_rewritten(word, want):
    assert normalise_override(word) == want
    assert normalise_argv(["--multirun", word]) == ["--multirun", want]


def test_percent_to_fraction_is_exact():
    assert percent_to_fraction("0.3%") == "0.003"  # 0.3 / 100 in floats is 0.0029999999999999996
    assert percent_to_fraction("1e-1%") == "0.001"
    assert percent_to_fraction("choice(0.1%,2%)") == "choice(0.001,0.02)"


def test_launcher_job_count_zero_is_refused():
    with pytest.raises(ConfigError, match="hydra.launcher.n_jobs=0"):
        check_launcher_args(["hydra.launcher.n_jobs=0"])
    check_launcher_args(["hydra.launcher.n_jobs=2", "hydra.launcher.n_jobs=-1"])


def test_percent_spread_and_a_new_sim_base_run_from_the_command_line(monkeypatch, capsys, tmp_path):
    import json

    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", "exchange.sim.prices.PEPE=0.0000092", "pair=PEPE/USDT", "spread=0.4%",
                                      "run.max_ticks=20", f"hydra.run.dir={tmp_path}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    entry.main()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["pair"] == "PEPE/USDT" and summary["spread"] == 0.004 and summary["status"] == "max_ticks"


# ---------------------------------------------------------------- pairs


@pytest.mark.parametrize("text, want", [
    ("eth/usdt", "ETH/USDT"),
    ("ETH-USDT", "ETH/USDT"),
    ("ETH_USDT", "ETH/USDT"),
    ("ETHUSDT", "ETH/USDT"),
    ("ethusdt", "ETH/USDT"),
    ("BTCUSDC", "BTC/USDC"),
    ("BTC/USDT", None),  # listed already: nothing to suggest
    ("XYZ/USDT", None),
])
def test_a_pair_written_another_way_suggests_the_listed_one(text, want):
    listed = ["BTC/USDT", "ETH/USDT", "BTC/USDC"]
    got = pair_hint(text, listed, ["USDT", "USDC"])
    assert got == (want if text not in listed else got)
    if want is None and text not in listed:
        assert got is None
    if want is not None:
        assert want in pair_candidates(text, ["USDT", "USDC"])


def test_unlisted_sim_pairs_name_what_is_missing():
    prices, quotes = ["BTC", "ETH"], ["USDT", "USDC", "USD"]
    msg = unlisted_sim_pair("pair", "BTC/EUR", "BTC", "EUR", prices, quotes)
    assert "quote currency EUR not listed" in msg and "exchange.sim.quotes=[USDT,USDC,USD,EUR]" in msg
    assert "exchange.sim.prices" not in msg
    msg = unlisted_sim_pair("pair", "PEPE/USDT", "PEPE", "USDT", prices, quotes)
    assert "base PEPE not listed" in msg and "exchange.sim.prices.PEPE=PRICE" in msg and "quotes=" not in msg
    msg = unlisted_sim_pair("pair", "eth/usdt", "eth", "usdt", prices, quotes)
    assert msg.endswith("did you mean ETH/USDT?") and "prices.eth" not in msg
    msg = unlisted_sim_pair("pair", "BTC/USDT", "BTC", "USDT", prices, [])
    assert msg.startswith("exchange.sim.quotes=[] lists no quote currency")


def test_exchange_hints_are_near_spellings_only():
    known = ["binance", "binanceus", "coinbase", "coinbaseexchange", "kraken", "okx"]
    assert exchange_hint("notanexchange", known) == ""
    assert exchange_hint("Binance", known) == "; did you mean 'binance'?"
    assert exchange_hint("binance-us", known) == "; did you mean 'binanceus'?"
    assert exchange_hint("krakken", known) == "; did you mean 'kraken'?"


def test_a_spread_far_from_the_mid_warns():
    cfg = SimpleNamespace(spread=0.2, strategy=SimpleNamespace(name="symmetric"))
    (warning,) = reach_warnings(cfg)
    assert warning.startswith("spread=0.2 quotes bids 10 % under the mid and asks 10 % over it")
    assert "0.002 = 0.2 %" in warning
    assert reach_warnings(SimpleNamespace(spread=0.002, strategy=cfg.strategy)) == []
    assert reach_warnings(SimpleNamespace(spread=0.2, strategy=SimpleNamespace(name="avellaneda_stoikov"))) == []


def test_market_rows_past_year_9999_are_one_line(monkeypatch, capsys, tmp_path):
    # one-minute candles opening 9999-12-31T23:50 .. 23:59: the last one closes in the year 10000
    lines = ["timestamp,open,high,low,close,volume"] + [f"9999-12-31T23:5{i}:00Z,100,101,99,100,5" for i in range(10)]
    (tmp_path / "far.csv").write_text("\n".join(lines) + "\n")
    code, err = run_main(monkeypatch, capsys, tmp_path, "mode=backtest", f"data.path={tmp_path / 'far.csv'}")
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"mmrun: error: data.path={tmp_path / 'far.csv'}: row 9: ") and "9999-12-31" in err[0]


def test_run_start_target_splits_capital_by_the_target_at_the_first_mid(monkeypatch, capsys, tmp_path):
    import json

    import polars as pl

    from mmrun import __main__ as entry

    monkeypatch.setattr(sys, "argv", ["mmrun", "mode=backtest", "strategy=inventory_skew", "strategy.target_base_share=0.4",
                                      "run.start=target", "run.max_ticks=200", f"hydra.run.dir={tmp_path}"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    entry.main()
    equity = pl.read_parquet(tmp_path / "equity.parquet")
    summary = json.loads((tmp_path / "summary.json").read_text())
    mid0, mid_last = equity["mid"][0], equity["mid"][-1]
    # the first row (nothing fills before it under touch) holds the split: 40 % in base at the first mid
    assert equity["base"][0] == pytest.approx(10_000 * 0.4 / mid0, rel=1e-12)
    assert equity["quote"][0] == pytest.approx(6_000.0, rel=1e-12)
    assert equity["equity"][0] == pytest.approx(10_000.0, rel=1e-12)
    assert summary["initial_value"] == 10_000.0 and summary["initial_base"] == equity["base"][0]
    # holding the starting portfolio: 4,000 of base revalued, 6,000 of quote
    assert summary["hold_value"] == pytest.approx(4_000 * mid_last / mid0 + 6_000, rel=1e-12)


@pytest.mark.parametrize("args, message", [
    (["run.start=target"], "run.start=target needs a strategy with a target inventory"),
    (["run.start=target", "strategy=inventory_skew", "exchange=binance"], "run.start=target needs the first mid"),
    (["run.start=half"], "run.start='half' is not allowed: choose one of quote, target"),
])
def test_run_start_refusals_are_one_line(monkeypatch, capsys, tmp_path, args, message):
    code, lines = run_main(monkeypatch, capsys, tmp_path, *args)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
