"""Accounting invariants on random markets (hypothesis), and events.csv replaying the balances."""

import math

import numpy as np
import polars as pl
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from mmrun import engine
from mmrun.record import read_events
from tests_support import random_market

from clirun import run_mmrun


# No "explain" phase: its source patching is slow and not needed to read a failure.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 60))
    seed = draw(st.integers(0, 2**32 - 1))
    p = engine.make_params(
        spread=draw(st.floats(1e-4, 0.05)),
        order_size_pct=draw(st.floats(0.01, 1.0)),
        max_exposure=draw(st.floats(0.01, 1.0)),
        capital=draw(st.floats(10.0, 1e6)),
        fee_maker=draw(st.sampled_from([0.0, 0.0002, 0.001, 0.01])),
        fill_model=draw(st.sampled_from(["touch", "instant"])),
        participation=draw(st.sampled_from([None, 0.1, 1.0])),
        tick=draw(st.sampled_from([0.0, 0.01])),
    )
    start_base = draw(st.sampled_from([0.0, 0.5, 3.0]))
    return p, random_market(n, seed), start_base


@settings(max_examples=150, deadline=None, phases=PHASES)
@given(scenarios())
def test_balances_never_negative_and_equity_moves_only_by_price_edge_and_fees(sc):
    p, m, start_base = sc
    capital = p["capital"]
    state = engine.make_state(start_base, capital)
    quoted, fills, rows, base, quote = engine.run_bulk(p, state, m["bid"], m["ask"], m["last"], m["low"], m["high"], m["volume"])
    assert (base >= 0).all() and (quote >= 0).all()
    assert (fills[:, engine.F_BASE] >= 0).all() and (fills[:, engine.F_QUOTE] >= 0).all()
    mid = (m["bid"] + m["ask"]) / 2
    equity = quote + base * mid
    prev_base = np.concatenate([[start_base], base[:-1]])
    prev_mid = np.concatenate([[mid[0]], mid[:-1]])
    prev_eq = np.concatenate([[capital + start_base * mid[0]], equity[:-1]])
    expected = prev_base * (mid - prev_mid)
    for f, r in zip(fills, rows):
        sign = f[engine.F_SIDE]
        expected[r] += sign * f[engine.F_AMOUNT] * (mid[r] - f[engine.F_PRICE]) - f[engine.F_FEE]
    np.testing.assert_allclose(equity - prev_eq, expected, rtol=0, atol=1e-9 * max(1.0, float(np.abs(equity).max())))


@settings(max_examples=100, deadline=None, phases=PHASES)
@given(scenarios())
def test_balances_replay_exactly_from_the_fills(sc):
    p, m, start_base = sc
    state = engine.make_state(start_base, p["capital"])
    _, fills, _, _, _ = engine.run_bulk(p, state, m["bid"], m["ask"], m["last"], m["low"], m["high"], m["volume"])
    b, q = start_base, p["capital"]
    for f in fills:
        notional = f[engine.F_PRICE] * f[engine.F_AMOUNT]
        if f[engine.F_SIDE] > 0:
            q -= notional + f[engine.F_FEE]
            b += f[engine.F_AMOUNT]
        else:
            b -= f[engine.F_AMOUNT]
            q += notional - f[engine.F_FEE]
        assert (b, q) == (f[engine.F_BASE], f[engine.F_QUOTE])
    assert (b, q) == (state["base"], state["quote"])


def test_events_csv_replays_the_inventories(tmp_path):
    res = run_mmrun("run.max_ticks=600", "fees.maker=0.0015", run_dir=tmp_path)
    assert res.returncode == 0, res.stderr
    ev = read_events(tmp_path / "events.csv")
    assert set(ev["event_type"].unique()) <= {"QUOTE", "FILL", "CANCEL", "ERROR"}
    fills = ev.filter(pl.col("event_type") == "FILL")
    assert fills.height > 10 and set(fills["side"].unique()) == {"buy", "sell"}
    b, q = 0.0, 10000.0
    for side, price, amount, fee, base, quote in fills.select("side", "price", "amount", "fee", "base_inventory", "quote_inventory").iter_rows():
        assert fee == price * amount * 0.0015
        if side == "buy":
            q -= price * amount + fee
            b += amount
        else:
            b -= amount
            q += price * amount - fee
        assert (b, q) == (base, quote)
    # every event's total_value is quote + base x mid
    tv = ev["quote_inventory"] + ev["base_inventory"] * ev["mid"]
    assert ((tv - ev["total_value"]).abs() < 1e-9).all()
    assert not math.isnan(b)
