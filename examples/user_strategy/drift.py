"""drift: quotes centred on the mid moved along its recent drift (a user strategy, outside mmrun).

Each cycle the drift is updated with the mid's simple return, d <- d + alpha x (r - d) (an
exponentially weighted mean of returns per cycle), and both quotes sit half_spread away from
    centre = mid x (1 + lean x d)
(bid = centre x (1 - half_spread), ask = centre x (1 + half_spread); mmrun then keeps them off the
far side of the book, puts them on the tick grid, adds the levels and checks the balances).

Selected with `strategy=drift` once this folder is on the Python path and in Hydra's search path:
see run.sh and strategy/drift.yaml.
"""

from dataclasses import dataclass

from numba import njit

from mmrun.strategies import Strategy, StrategyConfig, param


@dataclass
class DriftConfig(StrategyConfig):
    """Quotes around the mid, moved along the mid's recent drift."""

    name: str = "drift"
    half_spread: float = param(0.001, "fraction of the centre price on each side (0.001 = 0.1 %)", low=0.0,
                               high=1.0, low_open=True, high_open=True, title=("half spread", "{:.2%}"))
    lean: float = param(5.0, "centre shift per unit of drift (drift: mean return per cycle)", low=0.0, high=1000.0,
                        title=("lean", "{:g}"))
    alpha: float = param(0.1, "weight of the newest return in the drift's moving average", low=0.0, high=1.0,
                         low_open=True)


@njit(cache=True, error_model="numpy")
def anchor(p, s, best_bid, best_ask, mid, base, quote, cycle):
    """(bid_ref, bid_off, ask_ref, ask_off, buy_mult, sell_mult) for this cycle; keeps s.prev_mid, s.drift."""
    known = mid > 0.0 and s.prev_mid > 0.0
    r = mid / s.prev_mid - 1.0 if known else 0.0
    s.drift = s.drift + p.alpha * (r - s.drift) if known else s.drift
    s.prev_mid = mid if mid > 0.0 else s.prev_mid
    centre = mid * (1.0 + p.lean * s.drift)
    return centre, p.half_spread, centre, p.half_spread, 1.0, 1.0


STRATEGY = Strategy(config=DriftConfig, anchor=anchor, state=("prev_mid", "drift"))
