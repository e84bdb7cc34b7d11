"""The kernel's own quote code: prices on the tick grid, amounts in whole lots, sizes, and the count
of quotes not placed by reason. Exact values, including memecoin prices and amounts far beyond
what fits an int64 once scaled (floats all the way: np.floor, never an int conversion)."""

import math

import numpy as np
import pytest

from mmrun import engine
from mmrun.quoting import grid, grid_ceil, grid_floor, snap
from mmrun.sizing import fraction_size

NAN = math.nan


def floor_tick(x, tick):
    return grid_floor(x, *grid(tick))


def ceil_tick(x, tick):
    return grid_ceil(x, *grid(tick))


floor_lot = floor_tick  # amounts floor to the lot grid with the same function


def quote_once(bid, ask, *, spread=0.002, tick=0.0, capital=10_000.0, pct=0.01, cap=0.2, base=None, quote=None,
               fee=0.0, **kw):
    """The quotes one kernel step places from an empty book (touch), and the state after it."""
    p = engine.make_params(spread, pct, cap, capital, fee, "touch", None, tick, **kw)
    state = engine.make_state(capital if base is None else base, capital if quote is None else quote, p)
    quotes = engine.empty_quotes(engine.levels_of(p))
    fills = np.empty((engine.max_fills(engine.levels_of(p)), engine.N_FILL))
    last = kw.pop("last", None) or (bid + ask) / 2
    assert engine.step(p, state, quotes, bid, ask, last, NAN, NAN, 0.0, fills) == 0
    return quotes, state


@pytest.mark.parametrize(
    "bid, ask, spread, tick, want",
    [
        # buy = bid * (1 - spread/2), sell = ask * (1 + spread/2)
        (100.0, 100.0, 0.002, 0.0, (99.9, 100.1)),
        (100.0, 100.1, 0.002, 0.0, (99.9, 100.2001)),
        # on a 0.01 grid the bid rounds down and the ask up: never toward the book
        (100.0, 100.1, 0.002, 0.01, (99.9, 100.21)),
        (60000.0, 60000.1, 0.001, 0.1, (59970.0, 60030.2)),
        (2000.0, 2000.5, 0.01, 0.5, (1990.0, 2011.0)),  # 2010.5025 rounds up to 2011.0
    ],
)
def test_the_kernel_quotes_the_original_rule_on_the_tick_grid(bid, ask, spread, tick, want):
    quotes, _ = quote_once(bid, ask, spread=spread, tick=tick)
    assert quotes[0, engine.Q_PRICE] == pytest.approx(want[0], abs=1e-12)
    assert quotes[1, engine.Q_PRICE] == pytest.approx(want[1], abs=1e-12)
    if tick:  # on the grid, the nearest float to the decimal price exactly
        assert (quotes[0, engine.Q_PRICE], quotes[1, engine.Q_PRICE]) == want


def test_tick_rounding_is_exact_on_the_grid():
    assert floor_tick(59940.17, 0.1) == 59940.1  # not 59940.100000000006
    assert ceil_tick(59940.11, 0.1) == 59940.2
    assert floor_tick(1.0, 0.25) == 1.0 and ceil_tick(1.0, 0.25) == 1.0
    assert floor_tick(1.1, 0.25) == 1.0 and ceil_tick(1.1, 0.25) == 1.25
    assert floor_tick(123.456, 0.0) == 123.456  # tick 0: no grid
    assert snap(599401 * 0.1, 0.1) == 59940.1
    assert grid(0.1) == (1.0, 10.0) and grid(0.25) == (25.0, 100.0) and grid(5.0) == (5.0, 1.0)
    assert grid(1e-8) == (1.0, 1e8) and grid(0.0) == (0.0, 0.0)


def test_large_prices_on_fine_ticks_keep_every_tick():
    # a price of 1e6 on a tick of 1e-8 is 1e14 ticks: a value on the grid stays where it is
    assert floor_tick(1000000.00000003, 1e-8) == 1000000.00000003
    assert ceil_tick(1000000.00000003, 1e-8) == 1000000.00000003
    assert floor_tick(1000000.000000035, 1e-8) == 1000000.00000003
    assert ceil_tick(1000000.000000035, 1e-8) == 1000000.00000004
    # through the kernel: spread 0 quotes the book itself, which is on the grid
    quotes, _ = quote_once(1000000.00000003, 1000000.00000005, spread=0.0, tick=1e-8, capital=1e9)
    assert quotes[0, engine.Q_PRICE] == 1000000.00000003 and quotes[1, engine.Q_PRICE] == 1000000.00000005
    # a book between the ticks: the bid floors, the ask ceils, by one tick of 1e-8 at 1e6
    quotes, _ = quote_once(1000000.000000035, 1000000.000000045, spread=0.0, tick=1e-8, capital=1e9)
    assert quotes[0, engine.Q_PRICE] == 1000000.00000003 and quotes[1, engine.Q_PRICE] == 1000000.00000005
    # (a value closer to a grid line than a few float ulps, e.g. 999,000.00000002997 on 1e-8, is
    # not a different float from the line itself: there the line is the answer)


def test_memecoin_lots_do_not_overflow():
    # PEPE-like: 9.2e-6 quote per coin, lot 1 coin, 10,000 capital: 100 quote buys 10,869,565.2 coins,
    # 10,869,565 whole lots (an int64 of lots x 1e12 overflowed above ~9.2 M coins: nothing was quoted)
    quotes, state = quote_once(9.2e-6, 9.2e-6, tick=1e-10, lot=1.0, base=2e7)
    assert quotes[0, engine.Q_PRICE] == 9.1908e-06  # 9.2e-6 x 0.999 on the 1e-10 grid
    assert quotes[0, engine.Q_AMOUNT] == 10869565.0 and quotes[1, engine.Q_AMOUNT] == 10869565.0
    assert engine.quotes_dropped(state) == dict.fromkeys(engine.DROP_REASONS, 0)
    # 1e-8 per coin, orders of 1e9 coins (10 quote), lot 1: exactly 1e9
    quotes, _ = quote_once(1e-8, 1e-8, tick=1e-12, lot=1.0, capital=1000.0)
    assert quotes[0, engine.Q_AMOUNT] == 1e9 and quotes[0, engine.Q_PRICE] == 9.99e-09
    # 1e-8 per coin with 1e9 of capital: 1e15 coins an order, still whole lots
    quotes, _ = quote_once(1e-8, 1e-8, tick=1e-12, lot=1.0, capital=1e9)
    assert quotes[0, engine.Q_AMOUNT] == 1e15
    assert floor_lot(1.2e10, 1e-8) == 1.2e10 and floor_lot(0.00166, 1e-5) == 0.00166
    assert floor_lot(10869565.217391305, 1.0) == 10869565.0


@pytest.mark.parametrize(
    "kw, base, quote, want",
    [
        # 10,000 x 1 % / 100 = 1 unit an order; bid 99.9, ask 100.1
        ({}, 5.0, 10_000.0, {}),
        ({"lot": 2.0}, 5.0, 10_000.0, {"lot": 2}),  # 1 unit is no whole lot of 2
        ({"min_amount": 1.5}, 5.0, 10_000.0, {"min_amount": 2}),
        ({"min_notional": 100.0}, 5.0, 10_000.0, {"min_notional": 1}),  # the bid: 99.9 < 100; the ask: 100.1
        ({}, 0.5, 50.0, {"balance": 2}),  # 50 quote cannot pay 99.9; 0.5 base cannot sell 1
        ({"min_profit_threshold": 0.005, "levels": 2, "level_spread_step": 0.004}, 5.0, 10_000.0, {"min_profit": 2}),
        ({"strategy": "inventory_skew"}, 0.0, 10_000.0, {"zero_size": 1, "balance": 0}),  # all quote: no sell size
    ],
)
def test_every_quote_not_placed_is_counted_by_reason(kw, base, quote, want):
    quotes, state = quote_once(100.0, 100.0, base=base, quote=quote, **kw)
    expected = dict.fromkeys(engine.DROP_REASONS, 0)
    expected.update(want)
    assert engine.quotes_dropped(state) == expected
    placed = int((quotes[:, engine.Q_AMOUNT] > 0).sum())
    assert placed + sum(expected.values()) == quotes.shape[0]


def test_no_market_no_quotes_counted_as_no_price_or_no_size():
    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0)
    state = engine.make_state(1.0, 10_000.0, p)
    engine.step(p, state, engine.empty_quotes(), NAN, NAN, 100.0, NAN, NAN, 0.0, np.empty((3, engine.N_FILL)))
    engine.step(p, state, engine.empty_quotes(), 100.0, 100.0, NAN, NAN, NAN, 0.0, np.empty((3, engine.N_FILL)))
    assert engine.quotes_dropped(state)["no_price"] == 2 and engine.quotes_dropped(state)["zero_size"] == 2


@pytest.mark.parametrize(
    "capital, pct, cap, last, want",
    [
        (10000.0, 0.01, 0.2, 50000.0, 0.002),  # 100 quote / 50,000
        (10000.0, 0.01, 0.2, 2000.0, 0.05),
        (5000.0, 0.01, 0.2, 2500.0, 0.02),
        (10000.0, 0.5, 0.2, 100.0, 20.0),  # capped: 2,000 quote / 100
        (10000.0, 0.01, 0.2, 0.0, 0.0),  # no price, no order
    ],
)
def test_fraction_size(capital, pct, cap, last, want):
    assert fraction_size(capital, pct, cap, last) == pytest.approx(want, rel=1e-15)


def test_unknown_fill_model_is_a_config_error():
    from mmrun.errors import ConfigError

    with pytest.raises(ConfigError, match="fills.model='touch2' is not allowed: choose one of touch, instant"):
        engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch2", None, 0.0)
