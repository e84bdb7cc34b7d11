"""Quote math every strategy shares (compiled: it runs inside the engine kernel): the price and
amount grids, the portfolio's base share, and the ladder that turns a strategy's anchor into orders.

Prices are quote currency per base unit, amounts base units, offsets and shares fractions
(0.002 = 0.2 %). A grid step (the exchange's tick size for prices, its lot for amounts) is held
as a pair (units, scale) with step = units / scale, scale a power of ten: a grid value is then
`n x units / scale`, with n x units a whole number held exactly in a float and one correctly
rounded division, so 599401 steps of 0.1 give 59940.1 and not 59940.100000000006. Everything
stays in floats (`np.floor`, never an int conversion), so no amount or price overflows: 1e9
coins priced at 1e-8, or a price of 1e6 on a tick of 1e-8, round as exactly as 1 BTC at 60,000.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# A value within GRID_EPS steps (plus two float ulps of the step count, the noise of x / step for
# an x already on the grid) of a grid line counts as on it: 0.3 / 0.1 = 2.9999999999999996 steps
# floors to 3, and 1e15 steps stay 1e15 (an absolute margin would push them a step up).
GRID_EPS = 1e-9
GRID_REL_EPS = 2.0 ** -51


def grid(step: float) -> tuple[float, float]:
    """(units, scale) with step = units / scale, scale the smallest power of ten (up to 1e15) that
    makes units whole; (0, 0) for no grid (step <= 0). Raises ValueError for a non-finite step."""
    if not math.isfinite(step):
        raise ValueError(f"grid step must be finite, got {step!r}")
    if step <= 0.0:
        return 0.0, 0.0
    for k in range(16):
        scale = 10.0 ** k
        units = round(step * scale)
        if units >= 1 and abs(step * scale - units) <= 1e-9 * step * scale:
            return float(units), scale
    return step * 1e15, 1e15  # not a decimal step (e.g. 1/3): as close as floats allow


@njit(cache=True, error_model="numpy")
def grid_floor(x: float, units: float, scale: float) -> float:
    """Largest grid value <= x (within a few ulps); x itself when there is no grid (units 0)."""
    if not units > 0.0:
        return x
    n = x * scale / units
    r = np.rint(n)
    k = r if abs(n - r) <= GRID_EPS + abs(n) * GRID_REL_EPS else np.floor(n)
    return k * units / scale


@njit(cache=True, error_model="numpy")
def grid_ceil(x: float, units: float, scale: float) -> float:
    """Smallest grid value >= x (within a few ulps); x itself when there is no grid (units 0)."""
    if not units > 0.0:
        return x
    n = x * scale / units
    r = np.rint(n)
    k = r if abs(n - r) <= GRID_EPS + abs(n) * GRID_REL_EPS else np.ceil(n)
    return k * units / scale


def snap(x, step: float):
    """x (a float or a numpy array) moved to the nearest multiple of step, written as the float
    nearest the decimal grid value (removes the binary noise of n x step: 599401 x 0.1 =
    59940.100000000006 -> 59940.1); step 0 = no grid."""
    units, scale = grid(step)
    if units == 0.0:
        return x
    return np.rint(x * scale / units) * units / scale


@njit(cache=True, error_model="numpy")
def base_share(base: float, quote: float, mid: float) -> float:
    """Share of the portfolio's value held in base: base x mid / (quote + base x mid), in [0, 1].

    NaN when the portfolio is worth nothing or mid is unknown (strategies then treat the
    inventory as on target).
    """
    held = base * mid
    total = quote + held
    if not (total > 0.0):
        return math.nan
    return held / total


@njit(cache=True, error_model="numpy", inline="always")
def ladder(quotes, best_bid, best_ask, bid_ref, bid_off, ask_ref, ask_off, size, buy_mult, sell_mult, cap_quote, last,
           levels, spread_step, size_step, tick_units, tick_scale):
    """Write `levels` bid/ask pairs into quotes rows (2k: bid of level k, 2k+1: its ask).

    Level k: bid = bid_ref x (1 - (bid_off + k x spread_step / 2)), ask = ask_ref x (1 + (ask_off
    + k x spread_step / 2)), so each level adds spread_step to the pair's total spread; a bid
    above best_bid is lowered to it and an ask below best_ask raised to it (quotes join the
    touch at most: they never cross the book, and on candles, where close stands for both sides,
    never sit on the wrong side of it); then the bid floors and the ask ceils to the tick grid
    (tick_units / tick_scale, see `grid`; units 0: no grid). Sizes: size x (1 + k x size_step) x
    the side's multiplier, base units, each capped at cap_quote / last (cap_quote = capital x max
    exposure, quote currency). Rows get (side +1/-1, price, amount). The engine then applies the
    exchange's rules, the minimum-profit rule and the balances (a quote it drops gets amount 0).
    """
    for k in range(levels):
        widen = k * spread_step * 0.5
        bid = bid_ref * (1.0 - (bid_off + widen))
        ask = ask_ref * (1.0 + (ask_off + widen))
        bid = best_bid if bid > best_bid else bid
        ask = best_ask if ask < best_ask else ask
        bid = grid_floor(bid, tick_units, tick_scale)
        ask = grid_ceil(ask, tick_units, tick_scale)
        grow = 1.0 + k * size_step
        buy_amt = size * grow * buy_mult
        sell_amt = size * grow * sell_mult
        if buy_amt > size or sell_amt > size:  # only a grown size can exceed the cap: divide only then
            size_cap = cap_quote / last
            if buy_amt > size_cap:
                buy_amt = size_cap
            if sell_amt > size_cap:
                sell_amt = size_cap
        quotes[2 * k, 0] = 1.0
        quotes[2 * k, 1] = bid
        quotes[2 * k, 2] = buy_amt
        quotes[2 * k + 1, 0] = -1.0
        quotes[2 * k + 1, 1] = ask
        quotes[2 * k + 1, 2] = sell_amt
