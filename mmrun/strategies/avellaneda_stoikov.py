"""avellaneda_stoikov: reservation price and optimal spread (Avellaneda & Stoikov 2008, "High-frequency
trading in a limit order book", Quantitative Finance 8(3)) in relative price units.

With q = base share of the portfolio value - target_base_share, sigma2 the variance of mid
returns per second (an EWMA over the last vol_window cycles, estimated online from the market
rows) and tau the horizon left (seconds):
    reservation r = mid x (1 - q x gamma x sigma2 x tau)
    spread        = gamma x sigma2 x tau + (2 / gamma) x ln(1 + gamma / kappa), at least min_spread
and both sides sit spread/2 from r (never across the book: quoting.ladder). The top-level
`spread` is not used. Zero volatility leaves r = mid and the arrival term.

Units of q: the paper counts q in units of the asset held; here q is inventory as a share of
the portfolio's value minus target_base_share (1 = the whole portfolio away from the target; one
order of sizing.order_size_pct=0.01 moves q by about 0.01), so q = q_paper x order size x mid /
portfolio value. A higher gamma always leans the reservation price harder, but it widens the
spread only while sigma2 x tau > (2 / gamma^2) (ln(1 + gamma / kappa) - gamma / (gamma + kappa))
(about 1 / kappa^2 for gamma << kappa): the arrival term (2 / gamma) ln(1 + gamma / kappa)
shrinks as gamma grows.
"""

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from mmrun.quoting import base_share
from mmrun.strategies.base import Strategy, StrategyConfig, param

HORIZONS = ("rolling", "finite")


@dataclass
class AvellanedaStoikovConfig(StrategyConfig):
    """Reservation price and optimal spread (Avellaneda & Stoikov 2008) in relative price units."""

    name: str = param("avellaneda_stoikov", "the strategy's name", kernel=False)
    min_profit_threshold: float = 0.002  # the original config's 0.2 % (unit and range: StrategyConfig)
    target_base_share: float = param(0.5, "inventory target, share of portfolio value in base (q = share - this)",
                                     low=0.0, high=1.0)
    gamma: float = param(20.0, "risk aversion, per unit of q", low=0.0, low_open=True, title=("γ", "{:g}"))
    kappa: float = param(400.0, "fill-intensity decay per unit relative distance from mid (400: e-fold per 0.25 %)",
                         low=0.0, low_open=True, title=("κ", "{:g}"))
    min_spread: float = param(0.005, "floor on the total spread, fraction", low=0.0, high=1.0, high_open=True,
                              title=("min spread", "{:.2%}"))
    horizon: str = param("rolling", "rolling: tau = horizon_s always; finite: counts down, restarts every horizon_s",
                         choices=HORIZONS, title=("horizon", "{}"))
    horizon_s: float = param(3600.0, "seconds", low=0.0, low_open=True)
    vol_window: int = param(60, "cycles in the volatility estimate's EWMA (span)", low=1)


@njit(cache=True, error_model="numpy")
def arrival_spread(gamma: float, kappa: float) -> float:
    """The spread's order-arrival term, (2 / gamma) x ln(1 + gamma / kappa), fraction."""
    return (2.0 / gamma) * math.log(1.0 + gamma / kappa)


@njit(cache=True, error_model="numpy")
def reservation_and_spread(mid: float, q: float, gamma: float, arrival: float, sigma2: float, tau: float,
                           min_spread: float):
    """(reservation price, total spread): r = mid x (1 - q x gamma x sigma2 x tau), spread = gamma x
    sigma2 x tau + arrival, at least min_spread (fractions of the price).

    q: inventory deviation, base share minus target share (-1..1; + = too much base); gamma: risk
    aversion (> 0); arrival: arrival_spread(gamma, kappa); sigma2: variance of mid returns per
    second; tau: horizon left, seconds."""
    risk = gamma * sigma2 * tau
    spread = risk + arrival
    return mid * (1.0 - q * risk), spread if spread >= min_spread else min_spread


@njit(cache=True, error_model="numpy")
def volatility(prev_mid, var, returns, mid, alpha):
    """EWMA of squared mid returns per cycle: (prev_mid, var, returns) after seeing `mid`.

    Simple returns, mid / prev_mid - 1 (at a cycle's scale the same as log returns, and no log
    per cycle). The first return seeds the average; alpha = 2 / (vol_window + 1) weighs the
    newest; an unknown mid (<= 0 or NaN) changes nothing.
    """
    known = mid > 0.0
    counted = known and prev_mid > 0.0
    r = mid / prev_mid - 1.0 if counted else 0.0
    r2 = r * r
    new_var = r2 if returns == 0.0 else var + alpha * (r2 - var)
    var = new_var if counted else var
    returns = returns + 1.0 if counted else returns
    prev_mid = mid if known else prev_mid
    return prev_mid, var, returns


@njit(cache=True, error_model="numpy")
def horizon_left(horizon, rolling, cycle, dt_s):
    """Seconds left in the horizon at this cycle: the whole horizon when rolling; when finite it
    counts down from horizon and restarts every horizon of market time."""
    elapsed = cycle * dt_s
    left = horizon - (elapsed - horizon * np.floor(elapsed / horizon))
    return horizon if rolling else left


@njit(cache=True, error_model="numpy")
def anchor(p, s, best_bid, best_ask, mid, base, quote, cycle):
    """Update the volatility estimate with this mid, then both sides spread/2 from the reservation
    price; sizes unchanged."""
    prev_mid, var, returns = volatility(s.prev_mid, s.var, s.returns, mid, p.vol_alpha)
    s.prev_mid = prev_mid
    s.var = var
    s.returns = returns
    tau = horizon_left(p.horizon_s, p.horizon == 0.0, cycle, p.dt_s)
    q = base_share(base, quote, mid) - p.target_base_share
    q = q if q == q else 0.0
    r, spread = reservation_and_spread(mid, q, p.gamma, p.arrival, var / p.dt_s, tau, p.min_spread)
    half = spread / 2.0
    return r, half, r, half, 1.0, 1.0


def _derive(cfg) -> dict:
    return {"arrival": arrival_spread(float(cfg.gamma), float(cfg.kappa)), "vol_alpha": 2.0 / (cfg.vol_window + 1.0)}


STRATEGY = Strategy(config=AvellanedaStoikovConfig, anchor=anchor, state=("prev_mid", "var", "returns"),
                    derive=_derive)
