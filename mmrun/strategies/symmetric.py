"""symmetric: the original rule, bid = best_bid x (1 - spread/2), ask = best_ask x (1 + spread/2).

`spread` is the top-level key (a fraction: 0.002 = 0.2 %); the engine snaps each price away from
the book to the tick grid and adds the levels (quoting.ladder).
"""

from dataclasses import dataclass

from numba import njit

from mmrun.strategies.base import Strategy, StrategyConfig, param


@dataclass
class SymmetricConfig(StrategyConfig):
    """Only the keys every strategy has; the spread is the top-level `spread`."""

    name: str = param("symmetric", "the strategy's name", kernel=False)


@njit(cache=True, error_model="numpy")
def anchor(p, s, best_bid, best_ask, mid, base, quote, cycle):
    """Both sides spread/2 away from their own side of the book; sizes unchanged."""
    half = p.spread / 2.0
    return best_bid, half, best_ask, half, 1.0, 1.0


STRATEGY = Strategy(config=SymmetricConfig, anchor=anchor, uses_spread=True)
