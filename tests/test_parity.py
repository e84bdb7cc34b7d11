"""One engine: the same market rows through the paper loop (simulated clock) and the bulk
backtest give identical fills, balances, equity and data fingerprint."""

import asyncio
import json

import polars as pl
import pytest

from clirun import run_mmrun
from mmrun import engine
from mmrun.backtest import run_backtest
from mmrun.maker import MarketMaker
from mmrun.market import ROW_FIELDS
from mmrun.market.sim import SimClock, SimMarket
from mmrun.record import EventStream, read_events, write_csv
from tests_support import random_market


class ArrayFeed:
    """Market rows from arrays, served on the simulated clock: fetch(now) is the row stamped now."""

    def __init__(self, rows, tick=0.0):
        self.rows, self.tick, self.i = rows, tick, 0
        self.live, self.source = False, ""

    async def fetch(self, now_ms):
        if self.i >= len(self.rows["ts_ms"]):
            return None
        ts = int(self.rows["ts_ms"][self.i])
        assert ts == now_ms, "the loop's clock and the rows disagree"
        row = (ts,) + tuple(float(self.rows[k][self.i]) for k in ROW_FIELDS[1:])
        self.i += 1
        return row

    async def close(self):
        pass


def sim_rows(n):
    from omegaconf import OmegaConf

    from mmrun.config import SimConfig

    market = SimMarket("BTC/USDT", OmegaConf.structured(SimConfig()), 5.0, seed=11)
    return market.frame_arrays(n), market.tick


def paper(tmp_path, rows, params, capital):
    step_s = (int(rows["ts_ms"][1]) - int(rows["ts_ms"][0])) / 1000.0
    events = EventStream(tmp_path / "paper_events.csv")
    mm = MarketMaker(
        "BTC/USDT", params.copy(), engine.make_state(0.0, capital, params), ArrayFeed(rows, params["tick"]),
        SimClock(int(rows["ts_ms"][0])), events, quote_s=step_s, error_s=step_s, max_ticks=None,
        log_quotes=False, stop=asyncio.Event(),
    )
    out = asyncio.run(mm.run())
    events.close()
    return out, mm.state


CASES = [
    ("touch", None, 0.001),
    ("touch", 0.3, 0.0),
    ("instant", None, 0.0),
    ("instant", None, 0.001),
]


# each built-in strategy, keyed so that it trades on these markets; two levels, and lot and minimum
# rules on the simulated market (its tick 0.1, lots of 0.0001 BTC, orders of at least 5 quote)
STRATEGIES = {
    "symmetric": {},
    "inventory_skew": {"rebalance_threshold": 0.05},
    "avellaneda_stoikov": {"gamma": 0.1, "kappa": 1000.0, "min_spread": 0.0, "min_profit_threshold": 0.0},
}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("market", ["random", "sim"])
@pytest.mark.parametrize("model,participation,fee", CASES)
def test_paper_loop_and_backtest_agree_exactly(tmp_path, strategy, market, model, participation, fee):
    rules = {}
    if market == "random":
        rows, tick = random_market(400, seed=5), 0.0
    else:
        rows, tick = sim_rows(1500)
        rules = dict(lot=0.0001, min_notional=5.0, levels=2, level_spread_step=0.001)
    capital = 10_000.0
    params = engine.make_params(0.002, 0.05, 0.2, capital, fee, model, participation, tick, strategy=strategy,
                                **STRATEGIES[strategy], **rules)

    p_out, p_state = paper(tmp_path, rows, params, capital)
    b_state = engine.make_state(0.0, capital, params)
    b_out = run_backtest("BTC/USDT", params.copy(), b_state, rows)

    assert p_out.fills.height > 20  # the comparison is about something
    assert p_out.fills.equals(b_out.fills)
    assert p_out.equity.equals(b_out.equity)
    assert p_state.tolist() == b_state.tolist()  # balances, fees, volume, counts
    assert p_out.fingerprint == b_out.fingerprint

    # the logged FILL events too, as written to events.csv either way
    write_csv(b_out.events, tmp_path / "bt_events.csv")
    p_ev = read_events(tmp_path / "paper_events.csv").filter(pl.col("event_type") == "FILL")
    b_ev = read_events(tmp_path / "bt_events.csv")
    assert p_ev.drop("note").equals(b_ev.drop("note"))


def test_a_paper_runs_market_replayed_by_backtest_gives_the_same_run(tmp_path):
    """CLI end to end: paper on the simulated exchange, then its market.parquet as data.path."""
    p = run_mmrun("run.max_ticks=400", "seed=3", run_dir=tmp_path / "paper")
    assert p.returncode == 0, p.stderr
    b = run_mmrun("mode=backtest", f"data.path={tmp_path / 'paper' / 'market.parquet'}",
                  run_dir=tmp_path / "bt")
    assert b.returncode == 0, b.stderr
    ps = json.loads((tmp_path / "paper" / "summary.json").read_text())
    bs = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert ps["trades"] > 10
    for key in ("trades", "buys", "sells", "final_value", "final_base", "final_quote", "fees", "volume_quote",
                "ticks", "max_drawdown_pct", "sharpe", "data_fingerprint", "market_start", "market_end"):
        assert ps[key] == bs[key], key
    p_ev = read_events(tmp_path / "paper" / "events.csv").filter(pl.col("event_type") == "FILL")
    b_ev = read_events(tmp_path / "bt" / "events.csv")
    assert p_ev.drop("note").equals(b_ev.drop("note"))
    assert pl.read_parquet(tmp_path / "paper" / "equity.parquet").equals(pl.read_parquet(tmp_path / "bt" / "equity.parquet"))


def test_the_fingerprint_is_remembered_per_array_set_and_follows_the_data():
    import numpy as np

    from mmrun.backtest import _sha256_rows, fingerprint_columns
    from mmrun.recorder import fingerprint_rows

    rng = np.random.default_rng(3)
    ts = np.arange(1000, dtype=np.int64) * 60_000
    cols = [rng.random(1000) for _ in ROW_FIELDS[1:]]
    first = fingerprint_columns(ts, cols)
    assert first == fingerprint_rows(np.column_stack([ts.astype(float), *cols]))  # the paper loop's digest
    assert fingerprint_columns(ts, cols) == first  # remembered: the same arrays again
    other = [c.copy() for c in cols]
    other[2][500] += 1.0
    assert fingerprint_columns(ts, other) != first == fingerprint_columns(ts, cols)
    assert fingerprint_columns(ts, other) == _sha256_rows(ts, other)
