"""The compiled kernel against a plain-Python reference of DESIGN.md's engine semantics.

The reference is written from the design text and the README, not from the kernel's code: one
quote cycle per market row; quotes for row t+1 come from row t; size = capital x order_size_pct /
last, capped at capital x max_inventory_exposure / last; level k of n: bid = best_bid x (1 -
(spread/2 + k x level_spread_step/2)), ask = best_ask x (1 + (spread/2 + k x level_spread_step/2)),
size x (1 + k x level_size_step) (a grown size capped like the first); the bid floors and the ask
ceils to the tick grid, the amount floors to whole lots; a quote is not placed when its pair keeps
less than min_profit_threshold x mid after two maker fees, when it rounds to no lot, is below the
exchange's minimum amount or notional, or when the balance left after the quotes before it (level
by level, the bid then the ask) does not cover it (a buy: notional + maker fee in quote; a sell:
the base); `touch`: a resting bid at p fills iff the next row's low < p (an ask iff high > p), at
p, the whole amount unless a participation cap x volume is smaller; `instant`: each quote placed
fills at once; the maker fee (price x amount x rate) is paid in quote on every fill. Grid values
are computed exactly (fractions) and written as the nearest float. Random markets come from
hypothesis; fills, balances, quoted prices and the count of quotes not placed by reason must be
equal to the last bit.
"""

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mmrun import engine
from tests_support import random_market

COLS = ("bid", "ask", "last", "low", "high", "volume")


def on_grid(x: float, step: float, up: bool) -> float:
    """x floored (or ceiled) to a multiple of step, exactly; a value within 1e-9 steps of a grid line
    counts as on it (floats carry that much noise); step 0: x."""
    if step == 0.0:
        return x
    exact_step = Fraction(str(step))
    n = Fraction(x) / exact_step
    nearest = round(n)
    if abs(n - nearest) <= Fraction(1, 10**9):
        n = nearest
    else:
        n = math.ceil(n) if up else math.floor(n)
    return float(n * exact_step)


def reference(m, spread, pct, max_exp, capital, fee, model, participation, base0, quote0, levels=1, spread_step=0.0,
              size_step=0.0, tick=0.0, lot=0.0, min_amount=0.0, min_notional=0.0, min_profit=0.0):
    """(fills, base, quote, quoted, dropped): fills as (row, side, price, amount, fee, base_after,
    quote_after); dropped: reason -> count."""
    base, quote = base0, quote0
    resting = []  # (side, price, amount) placed at the previous row
    fills, bases, quotes, quoted = [], [], [], []
    dropped = dict.fromkeys(engine.DROP_REASONS, 0)
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

        # 2. new quotes from this row's snapshot, level by level
        size = min(capital * pct / last, capital * max_exp / last) if last > 0 else 0.0
        mid = (bid + ask) / 2
        free_quote, free_base = quote, base
        row_quoted = [math.nan, math.nan]
        for k in range(levels):
            off = spread / 2 + k * spread_step / 2
            b = on_grid(min(bid * (1 - off), bid), tick, up=False)
            a = on_grid(max(ask * (1 + off), ask), tick, up=True)
            amt = size * (1 + k * size_step)
            if amt > size:
                amt = min(amt, capital * max_exp / last)
            thin = min_profit > 0 and not (a * (1 - fee) - b * (1 + fee) >= min_profit * mid)
            for side, price in ((1.0, b), (-1.0, a)):
                amount = on_grid(amt, lot, up=False)
                need = price * amount + price * amount * fee
                have_quote, have_base = (quote, base) if model == "instant" else (free_quote, free_base)
                if not amt > 0:
                    reason = "zero_size"
                elif not price > 0:
                    reason = "no_price"
                elif thin:
                    reason = "min_profit"
                elif not amount > 0:
                    reason = "lot"
                elif amount < min_amount:
                    reason = "min_amount"
                elif price * amount < min_notional:
                    reason = "min_notional"
                elif not (need <= have_quote if side > 0 else amount <= have_base):
                    reason = "balance"
                else:
                    reason = None
                if reason is not None:
                    dropped[reason] += 1
                    continue
                if model == "instant":
                    fill(side, price, amount)
                else:
                    resting.append((side, price, amount))
                    if side > 0:
                        free_quote -= need
                    else:
                        free_base -= amount
                j = 0 if side > 0 else 1
                better = price > row_quoted[0] if side > 0 else price < row_quoted[1]
                if math.isnan(row_quoted[j]) or better:
                    row_quoted[j] = price
        bases.append(base)
        quotes.append(quote)
        quoted.append(row_quoted)
    return fills, np.array(bases), np.array(quotes), np.array(quoted).reshape(-1, 2), dropped


params_st = st.fixed_dictionaries(
    {
        "n": st.integers(2, 60),
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
        "levels": st.sampled_from([1, 1, 2, 3]),
        "spread_step": st.sampled_from([0.0, 0.001, 0.003]),
        "size_step": st.sampled_from([0.0, 0.5, 8.0]),
        "tick": st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.5]),
        "lot": st.sampled_from([0.0, 0.0, 0.001, 0.1, 1.0]),
        "min_amount": st.sampled_from([0.0, 0.0, 0.5]),
        "min_notional": st.sampled_from([0.0, 0.0, 60.0]),
        "min_profit": st.sampled_from([0.0, 0.0, 0.001, 0.003]),
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
    rules = dict(levels=p["levels"], spread_step=p["spread_step"], size_step=p["size_step"], tick=p["tick"],
                 lot=p["lot"], min_amount=p["min_amount"], min_notional=p["min_notional"], min_profit=p["min_profit"])
    want_fills, want_base, want_quote, want_quoted, want_dropped = reference(
        m, p["spread"], p["pct"], p["max_exp"], p["capital"], p["fee"], p["model"], p["participation"],
        p["start_base"], quote0, **rules,
    )
    params = engine.make_params(
        p["spread"], p["pct"], p["max_exp"], p["capital"], p["fee"], p["model"], p["participation"], p["tick"],
        lot=p["lot"], min_amount=p["min_amount"], min_notional=p["min_notional"], levels=p["levels"],
        level_spread_step=p["spread_step"], level_size_step=p["size_step"], min_profit_threshold=p["min_profit"],
    )
    state = engine.make_state(p["start_base"], quote0, params)
    cols = [np.ascontiguousarray(m[k], dtype=np.float64) for k in COLS]
    quoted, fills, fill_rows, base, quote = engine.run_bulk(params, state, *cols)

    got = [
        (int(r), f[engine.F_SIDE], f[engine.F_PRICE], f[engine.F_AMOUNT], f[engine.F_FEE], f[engine.F_BASE], f[engine.F_QUOTE])
        for r, f in zip(fill_rows, fills)
    ]
    assert got == want_fills
    assert base.tolist() == want_base.tolist()
    assert quote.tolist() == want_quote.tolist()
    np.testing.assert_array_equal(quoted, want_quoted)  # NaN where no quote, equal elsewhere
    assert engine.quotes_dropped(state) == want_dropped
    assert state["base"] == (want_base[-1]) and state["quote"] == want_quote[-1]
    assert state["buys"] == sum(1 for f in want_fills if f[1] > 0)
    assert state["sells"] == sum(1 for f in want_fills if f[1] < 0)
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
    params = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0)
    _, k_fills, k_rows, k_base, k_quote = engine.run_bulk(params, engine.make_state(0.0, 10_000.0),
                                                          *(m[k] for k in COLS))
    assert k_rows.tolist() == [2] and k_fills[0, engine.F_PRICE] == q and k_fills[0, engine.F_AMOUNT] == 1.0
    assert k_base.tolist() == [0.0, 0.0, 1.0]
    assert k_quote.tolist() == [10_000.0, 10_000.0, 10_000.0 - q]
