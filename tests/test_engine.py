"""The engine's fill rules and spot accounting on hand-made markets (exact values)."""

import math

import numpy as np
import pytest

from mmrun import engine

NAN = math.nan


def params(fill="touch", fee=0.001, capital=10000.0, pct=0.01, cap=0.2, participation=None, tick=0.0, spread=0.002):
    return engine.make_params(spread, pct, cap, capital, fee, fill, participation, tick)


def run(p, rows, capital=10000.0, base=0.0):
    """rows: (bid, ask, last, low, high, volume) tuples."""
    cols = [np.array(c, dtype=float) for c in zip(*rows)]
    state = engine.make_state(base, capital)
    quoted, fills, fill_rows, b, q = engine.run_bulk(p, state, *cols)
    return quoted, fills, fill_rows, b, q, state


def flat(low=NAN, high=NAN, volume=0.0, price=100.0):
    return (price, price, price, low, high, volume)


def test_touch_bid_fills_only_strictly_below():
    # size = 10,000 * 1 % / 100 = 1.0; bid = 100 * (1 - 0.001) = 99.9
    quoted, fills, rows, base, quote, _ = run(params(), [flat(), flat(low=99.9, high=100.0, volume=5), flat(low=99.89, high=100.0, volume=5)])
    assert quoted[0, 0] == pytest.approx(99.9) and math.isnan(quoted[0, 1])  # no base: no ask
    assert list(rows) == [2]  # a trade AT the bid is not enough; strictly below is
    f = fills[0]
    assert f[engine.F_SIDE] == 1 and f[engine.F_PRICE] == pytest.approx(99.9) and f[engine.F_AMOUNT] == pytest.approx(1.0)
    assert f[engine.F_FEE] == pytest.approx(0.0999)
    assert base[2] == pytest.approx(1.0)
    assert quote[2] == pytest.approx(10000 - 99.9 - 0.0999)


def test_touch_ask_fills_only_strictly_above_and_round_trip():
    rows = [flat(), flat(low=99.8, high=100.0, volume=5), flat(low=100.0, high=100.1, volume=5), flat(low=100.0, high=100.2, volume=5)]
    quoted, fills, frows, base, quote, state = run(params(), rows)
    assert list(frows) == [1, 3]
    assert [f[engine.F_SIDE] for f in fills] == [1, -1]
    assert fills[1, engine.F_PRICE] == pytest.approx(100.1)
    # 10,000 - (99.9 + 0.0999) + (100.1 - 0.1001) = 10,000.0
    assert quote[-1] == pytest.approx(10000.0, abs=1e-9)
    assert base[-1] == 0.0
    assert state["fees"] == pytest.approx(0.2)
    assert state["volume"] == pytest.approx(200.0)
    assert state["buys"] == 1 and state["sells"] == 1


def test_quotes_made_at_row_t_fill_against_row_t_plus_1_only():
    # row 0's range would cross, but nothing rests before row 0
    _, _, frows, *_ = run(params(), [flat(low=50.0, high=150.0, volume=9)])
    assert len(frows) == 0


def test_participation_caps_the_fill_at_a_fraction_of_volume():
    _, fills, *_ = run(params(participation=0.25), [flat(), flat(low=99.0, high=100.0, volume=2.0)])
    assert fills[0, engine.F_AMOUNT] == pytest.approx(0.5)  # 25 % of 2.0 traded


def test_no_bid_without_quote_to_pay_for_it_fee_included():
    # size 1.0 at 99.9 needs 99.9999 with the fee: 99.99 is not enough
    quoted, fills, *_ = run(params(capital=10000.0), [flat(), flat(low=90.0, high=110.0, volume=5)], capital=99.99)
    assert math.isnan(quoted[0, 0]) and len(fills) == 0


def test_no_ask_beyond_the_base_held():
    quoted, fills, *_ = run(params(), [flat(), flat(low=90.0, high=110.0, volume=5)], capital=0.0, base=0.5)
    assert math.isnan(quoted[0, 1]) and len(fills) == 0  # size 1.0 > 0.5 held
    quoted, fills, *_ = run(params(), [flat(), flat(low=100.0, high=110.0, volume=5)], capital=0.0, base=1.0)
    assert quoted[0, 1] == pytest.approx(100.1) and len(fills) == 1


def test_instant_buys_then_sells_every_cycle_at_the_quoted_prices():
    # fee 0: each cycle buys 1.0 at 99.9 then sells it at 100.1, +0.2 quote per cycle
    quoted, fills, frows, base, quote, _ = run(params("instant", fee=0.0), [flat(), flat(), flat()])
    assert list(frows) == [0, 0, 1, 1, 2, 2]
    assert [f[engine.F_SIDE] for f in fills] == [1, -1] * 3
    assert quote[-1] == pytest.approx(10000.6)
    assert base[-1] == 0.0
    assert quoted[0, 0] == pytest.approx(99.9) and quoted[0, 1] == pytest.approx(100.1)


def test_instant_ignores_the_market_range():
    _, fills, *_ = run(params("instant", fee=0.0), [flat(low=NAN, high=NAN, volume=0.0)])
    assert len(fills) == 2


def test_step_leaves_resting_quotes_for_the_paper_loop():
    p = params()
    state = engine.make_state(0.0, 10000.0)
    quotes = engine.empty_quotes()
    buf = np.empty((engine.MAX_FILLS_PER_STEP, engine.N_FILL))
    n = engine.step(p, state, quotes, 100.0, 100.0, 100.0, NAN, NAN, 0.0, buf)
    assert n == 0
    assert quotes[0, engine.Q_PRICE] == pytest.approx(99.9) and quotes[0, engine.Q_AMOUNT] == pytest.approx(1.0)
    assert quotes[1, engine.Q_AMOUNT] == 0.0
    n = engine.step(p, state, quotes, 100.0, 100.0, 100.0, 99.0, 101.0, 3.0, buf)
    assert n == 1 and buf[0, engine.F_SIDE] == 1


def test_stepper_updates_the_state_record_in_place_and_a_copy_alike():
    # the kernel is handed the one-element array a make_state record views; a record that owns
    # its data (a copy) is stepped through a copy of its own and written back: same numbers
    p = params(fill="instant")
    rows = [(100.0, 100.0, 100.0, NAN, NAN, 0.0), (101.0, 101.0, 101.0, NAN, NAN, 0.0)]
    states = [engine.make_state(0.0, 10000.0, p), engine.make_state(0.0, 10000.0, p).copy()]
    assert engine._array_of(states[0]) is not None and engine._array_of(states[1]) is None
    for state in states:
        stepper = engine.Stepper(p, state)
        quotes = engine.empty_quotes()
        buf = np.empty((engine.max_fills(1), engine.N_FILL))
        for row in rows:
            assert stepper(quotes, *row, buf) == 2  # instant: the bid, then the ask, execute
        assert stepper.balances() == (float(state["base"]), float(state["quote"]))
    assert states[0]["fees"] > 0.0 and states[0]["cycles"] == 2.0 and states[0]["buys"] == states[0]["sells"] == 2.0
    assert states[0].tolist() == states[1].tolist()
