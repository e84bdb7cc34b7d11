"""inventory_skew: symmetric inside a tolerance band around a target base share; beyond it,
prices and sizes lean toward the target.

With excess e in [-1, 1] (0 inside target +- band; + = too much base; +1 when all is base, -1 when
all is quote), the bid's offset from best_bid is spread/2 x (1 + price_skew x e) and the ask's
from best_ask spread/2 x (1 - price_skew x e): the total spread stays `spread`, and the side that
brings the share back to target moves toward the book (at price_skew 1 and full excess it joins
the touch). Sizes are multiplied by 1 - size_skew x e (buy) and 1 + size_skew x e (sell), never < 0.
"""

from dataclasses import dataclass

from numba import njit

from mmrun.quoting import base_share
from mmrun.strategies.base import Strategy, StrategyConfig, param


@dataclass
class InventorySkewConfig(StrategyConfig):
    """Symmetric inside target_base_share +- rebalance_threshold; beyond it, lean toward the target."""

    name: str = param("inventory_skew", "the strategy's name", kernel=False)
    target_base_share: float = param(0.5, "wanted base value / portfolio value, fraction", low=0.0, high=1.0,
                                     title=("target", "{:.0%}"))
    rebalance_threshold: float = param(0.1, "tolerance band around the target, fraction of portfolio value",
                                       low=0.0, high=1.0, high_open=True, title=("band", "{:.0%}"))
    price_skew: float = param(1.0, "price lean at the extreme, fraction of spread/2 (1: the reducing side joins "
                                   "the touch)", low=0.0, high=1.0)
    size_skew: float = param(1.0, "size lean at the extreme, fraction of the size (1: 2x on the reducing side, 0 "
                                  "on the other)", low=0.0, high=1.0)


@njit(cache=True, error_model="numpy")
def skew_excess(share: float, target: float, band: float) -> float:
    """How far the base share lies beyond the tolerance band, scaled to [-1, 1].

    0 inside target +- band; above it (too much base) rises linearly to +1 at share 1; below
    it (too little base) falls to -1 at share 0. NaN share (no portfolio) counts as on target.
    """
    d = share - target
    if not (d == d):
        return 0.0
    if d > band:
        room = 1.0 - target - band
        e = (d - band) / room if room > 0.0 else 1.0
        return e if e < 1.0 else 1.0
    if d < -band:
        room = target - band
        e = (d + band) / room if room > 0.0 else -1.0
        return e if e > -1.0 else -1.0
    return 0.0


@njit(cache=True, error_model="numpy")
def lean(best_bid: float, best_ask: float, spread: float, excess: float, price_skew: float, size_skew: float):
    """(bid_ref, bid_off, ask_ref, ask_off, buy_mult, sell_mult): the symmetric quotes tilted by
    `excess` (see the module docstring); excess 0 gives exactly the symmetric quotes."""
    half = spread / 2.0
    tilt = price_skew * excess
    buy = 1.0 - size_skew * excess
    sell = 1.0 + size_skew * excess
    return best_bid, half * (1.0 + tilt), best_ask, half * (1.0 - tilt), max(buy, 0.0), max(sell, 0.0)


@njit(cache=True, error_model="numpy")
def anchor(p, s, best_bid, best_ask, mid, base, quote, cycle):
    """The lean for the portfolio's base share now."""
    excess = skew_excess(base_share(base, quote, mid), p.target_base_share, p.rebalance_threshold)
    return lean(best_bid, best_ask, p.spread, excess, p.price_skew, p.size_skew)


STRATEGY = Strategy(config=InventorySkewConfig, anchor=anchor, uses_spread=True)
