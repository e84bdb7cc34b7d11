"""The compiled kernel against a plain-Python reference of DESIGN.md's engine semantics.

The reference is written from the design text, not from engine.py: one quote cycle per market
row; quotes for row t+1 come from row t; size = capital x order_size_pct / last, capped at
capital x max_inventory_exposure / last; bid = best_bid x (1 - spread/2), ask = best_ask x
(1 + spread/2); `touch`: a resting bid at p fills iff the next row's low < p (an ask iff high
> p), at p, the whole size unless a participation cap x volume is smaller; `instant`: the buy,
then the sell, fill at once whenever the balances allow; a quote is placed only when the
balance covers it (a buy: notional + maker fee in quote; a sell: the base); the maker fee
(price x amount x rate) is paid in quote on every fill. Random markets come from hypothesis;
fills, balances and quoted prices must be equal to the last bit. The tick grid is left out
(tick 0): its rounding has its own tests in test_strategy.py.
"""

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrun import engine
from tests_support import random_market


def reference(m, spread, pct, max_exp, capital, fee, model, participation, base0, quote0):
    """(fills, base, quote, quoted): fills as (row, side, price, amount, fee, base_after, quote_after)."""
    base, quote = base0, quote0
    resting = []  # (side, price, amount) placed at the previous row, bid first
    fills, bases, quotes, quoted = [], [], [], []
    for i in range(len(m["bid"])):
        bid, ask, last = float(m["bid"][i]), float(m["ask"][i]), float(m["last"][i])
        low, high, volume = float(m["low"][i]), float(m["high"][i]), float(m["volume"][i])

        def fill(side, price, amount):
            nonlocal base, quote
            notional = price * amount
            paid = notional * fee
            if side > 0:
                quote -= notional + paid
                base += amount
            else:
                base -= amount
                quote += notional - paid
            fills.append((i, side, price, amount, paid, base, quote))

        # 1. what rested since the previous row meets this row's range, then is cancelled
        for side, price, amount in resting:
            through = low < price if side > 0 else high > price  # NaN (nothing traded): False
            if through:
                if participation and participation * volume < amount:
                    amount = participation * volume
                if amount > 0:
                    fill(side, price, amount)
        resting = []

        # 2. new quotes from this row's snapshot
        size = min(capital * pct / last, capital * max_exp / last) if last > 0 else 0.0
        wanted = [(1.0, bid * (1 - spread / 2)), (-1.0, ask * (1 + spread / 2))]
        row_quoted = [math.nan, math.nan]
        for side, price in wanted:
            covered = (price * size + price * size * fee <= quote) if side > 0 else (size <= base)
            if size > 0 and covered:
                if model == "instant":
                    fill(side, price, size)
                else:
                    resting.append((side, price, size))
                row_quoted[0 if side > 0 else 1] = price
        bases.append(base)
        quotes.append(quote)
        quoted.append(row_quoted)
    return fills, np.array(bases), np.array(quotes), np.array(quoted).reshape(-1, 2)


params_st = st.fixed_dictionaries(
    {
        "n": st.integers(2, 80),
        "seed": st.integers(0, 10_000),
        "spread": st.sampled_from([0.0005, 0.001, 0.002, 0.004, 0.01]),
        "pct": st.sampled_from([0.01, 0.05, 0.2, 0.5]),
        "max_exp": st.sampled_from([0.02, 0.2, 1.0]),
        "capital": st.sampled_from([1000.0, 10_000.0]),
        "fee": st.sampled_from([0.0, 0.0002, 0.001]),
        "model": st.sampled_from(["touch", "instant"]),
        "participation": st.sampled_from([None, 0.05, 0.5]),
        "start_base": st.sampled_from([0.0, 3.0]),
        "touch_exactly": st.booleans(),
    }
)


@settings(max_examples=150, deadline=None)
@given(params_st)
def test_kernel_equals_the_reference_on_random_markets(p):
    m = random_market(p["n"], p["seed"])
    if p["touch_exactly"]:
        # Some rows trade exactly at the previous row's quotes: touching is not trading through.
        half = p["spread"] / 2
        rows = np.arange(1, p["n"], 3)
        m["low"][rows] = m["bid"][rows - 1] * (1 - half)
        m["high"][rows] = m["ask"][rows - 1] * (1 + half)
        m["low"][rows] = np.minimum(m["low"][rows], m["bid"][rows])
        m["high"][rows] = np.maximum(m["high"][rows], m["ask"][rows])
    quote0 = p["capital"]
    want_fills, want_base, want_quote, want_quoted = reference(
        m, p["spread"], p["pct"], p["max_exp"], p["capital"], p["fee"], p["model"], p["participation"],
        p["start_base"], quote0,
    )
    params = engine.make_params(
        p["spread"], p["pct"], p["max_exp"], p["capital"], p["fee"], p["model"], p["participation"], 0.0
    )
    state = engine.make_state(p["start_base"], quote0)
    cols = [np.ascontiguousarray(m[k], dtype=np.float64) for k in ("bid", "ask", "last", "low", "high", "volume")]
    quoted, fills, fill_rows, base, quote = engine.run_bulk(params, state, *cols)

    got = [
        (int(r), f[engine.F_SIDE], f[engine.F_PRICE], f[engine.F_AMOUNT], f[engine.F_FEE], f[engine.F_BASE], f[engine.F_QUOTE])
        for r, f in zip(fill_rows, fills)
    ]
    assert got == want_fills
    assert base.tolist() == want_base.tolist()
    assert quote.tolist() == want_quote.tolist()
    np.testing.assert_array_equal(quoted, want_quoted)  # NaN where no quote, equal elsewhere
    assert state[engine.S_BASE] == (want_base[-1]) and state[engine.S_QUOTE] == want_quote[-1]
    assert state[engine.S_BUYS] == sum(1 for f in want_fills if f[1] > 0)
    assert state[engine.S_SELLS] == sum(1 for f in want_fills if f[1] < 0)
    assert min(want_base.min(), want_quote.min()) >= 0.0  # spot: never negative


def test_touching_the_quote_is_not_a_fill_but_one_tick_through_is():
    """A hand-made case the random search might miss: low == bid quote, then low just below."""
    q = 100.0 * (1 - 0.002 / 2)  # the bid quoted from best bid 100 with spread 0.002
    m = {
        "bid": np.array([100.0, 100.0, 100.0]),
        "ask": np.array([100.0, 100.0, 100.0]),
        "last": np.array([100.0, 100.0, 100.0]),
        "low": np.array([np.nan, q, np.nextafter(q, 0.0)]),
        "high": np.array([np.nan, 100.1, 100.1]),
        "volume": np.array([0.0, 5.0, 5.0]),
    }
    fills, base, quote, _ = reference(m, 0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0, 10_000.0)
    assert [(f[0], f[1], f[2], f[3]) for f in fills] == [(2, 1.0, q, 1.0)]
    params = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0)
    _, k_fills, k_rows, k_base, k_quote = engine.run_bulk(
        params, engine.make_state(0.0, 10_000.0), *(m[k] for k in ("bid", "ask", "last", "low", "high", "volume"))
    )
    assert k_rows.tolist() == [2] and k_fills[0, engine.F_PRICE] == q and k_fills[0, engine.F_AMOUNT] == 1.0
    assert k_base.tolist() == base.tolist() == [0.0, 0.0, 1.0]
    assert k_quote.tolist() == quote.tolist() == [10_000.0, 10_000.0, 10_000.0 - q]
