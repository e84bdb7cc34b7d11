"""Pure quote math (compiled: it runs inside the engine kernel): market -> wanted quote prices."""

import math

from numba import njit


@njit(cache=True)
def _on_grid(n: float, tick: float) -> float:
    # n * tick carries binary noise (599401 * 0.1 = 59940.100000000006); rounding a couple of
    # digits below the tick removes it without moving the price off the grid.
    digits = max(0, int(math.ceil(-math.log10(tick)))) + 2
    return round(n * tick, digits)


@njit(cache=True)
def floor_tick(price: float, tick: float) -> float:
    """Largest multiple of tick <= price (a bid never rounds up into the book); tick 0 = no grid."""
    if tick <= 0.0:
        return price
    return _on_grid(math.floor(price / tick + 1e-9), tick)


@njit(cache=True)
def ceil_tick(price: float, tick: float) -> float:
    """Smallest multiple of tick >= price (an ask never rounds down into the book); tick 0 = no grid."""
    if tick <= 0.0:
        return price
    return _on_grid(math.ceil(price / tick - 1e-9), tick)


@njit(cache=True)
def symmetric_quotes(best_bid: float, best_ask: float, spread: float, tick: float):
    """The original rule: (buy, sell) = (best_bid * (1 - spread/2), best_ask * (1 + spread/2)).

    spread is a fraction (0.002 = 0.2 %); prices are snapped away from the book to the tick grid.
    """
    half = spread / 2.0
    return floor_tick(best_bid * (1.0 - half), tick), ceil_tick(best_ask * (1.0 + half), tick)
