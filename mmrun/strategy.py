"""Pure quote math (compiled: it runs inside the engine kernel): market + inventory -> wanted quotes.

Every strategy reduces to one *anchor* per side: a reference price, a relative offset from it
and a size multiplier. `ladder` turns the anchor into n order levels per side, keeps quotes
off the far side of the book, snaps them to the tick grid, applies the minimum-profit rule
and sizes them. Prices are quote currency per base unit; offsets, spreads and shares are
fractions (0.002 = 0.2 %); sizes are base units.

Strategies (conf/strategy/*.yaml documents their keys):
- symmetric: the original rule, bid = best_bid x (1 - spread/2), ask = best_ask x (1 + spread/2);
- inventory_skew: symmetric inside a tolerance band around a target base share; beyond it,
  prices and sizes lean toward the target;
- avellaneda_stoikov: reservation price and optimal spread from risk aversion, order arrival
  and online volatility (Avellaneda & Stoikov 2008, in relative price units).
"""

import math

from numba import njit

STRAT_SYMMETRIC = 0
STRAT_INVENTORY_SKEW = 1
STRAT_AVELLANEDA_STOIKOV = 2
STRATEGY_IDS = {"symmetric": STRAT_SYMMETRIC, "inventory_skew": STRAT_INVENTORY_SKEW, "avellaneda_stoikov": STRAT_AVELLANEDA_STOIKOV}


@njit(cache=True, error_model="numpy")
def _on_grid(n: float, tick: float) -> float:
    # n * tick carries binary noise (599401 * 0.1 = 59940.100000000006); rounding a couple of
    # digits below the tick removes it without moving the price off the grid.
    digits = max(0, int(math.ceil(-math.log10(tick)))) + 2
    return round(n * tick, digits)


def grid_scale(tick: float) -> float:
    """10 ** digits used by `_on_grid` for this tick, precomputed once per run (0 for no grid)."""
    if tick <= 0.0:
        return 0.0
    return 10.0 ** (max(0, int(math.ceil(-math.log10(tick)))) + 2)


@njit(cache=True, error_model="numpy")
def _on_grid_fast(n: float, tick: float, scale: float) -> float:
    # The same arithmetic as round(n * tick, digits) (numba: llvm.round(x * 10**digits) / 10**digits)
    # with 10**digits precomputed, and floor(y + 0.5) for llvm.round (a libm call): they differ
    # only at exact halves, and y lies within a hair of a whole number here. No log10/pow per quote.
    return math.floor(n * tick * scale + 0.5) / scale


@njit(cache=True, error_model="numpy")
def floor_tick(price: float, tick: float) -> float:
    """Largest multiple of tick <= price (a bid never rounds up into the book); tick 0 = no grid."""
    if tick <= 0.0:
        return price
    return _on_grid(math.floor(price / tick + 1e-9), tick)


@njit(cache=True, error_model="numpy")
def ceil_tick(price: float, tick: float) -> float:
    """Smallest multiple of tick >= price (an ask never rounds down into the book); tick 0 = no grid."""
    if tick <= 0.0:
        return price
    return _on_grid(math.ceil(price / tick - 1e-9), tick)


@njit(cache=True, error_model="numpy")
def symmetric_quotes(best_bid: float, best_ask: float, spread: float, tick: float):
    """The original rule: (buy, sell) = (best_bid * (1 - spread/2), best_ask * (1 + spread/2)).

    spread is a fraction (0.002 = 0.2 %); prices are snapped away from the book to the tick grid.
    """
    half = spread / 2.0
    return floor_tick(best_bid * (1.0 - half), tick), ceil_tick(best_ask * (1.0 + half), tick)


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
def symmetric_anchor(best_bid: float, best_ask: float, spread: float):
    """(bid_ref, bid_off, ask_ref, ask_off, buy_mult, sell_mult) of the original rule."""
    half = spread / 2.0
    return best_bid, half, best_ask, half, 1.0, 1.0


@njit(cache=True, error_model="numpy")
def inventory_skew_anchor(best_bid: float, best_ask: float, spread: float, excess: float, price_skew: float, size_skew: float):
    """Lean toward the target: the symmetric quotes with offsets and sizes tilted by `excess`.

    excess in [-1, 1] (see skew_excess; + = too much base). The bid's offset from best_bid is
    spread/2 x (1 + price_skew x excess), the ask's from best_ask spread/2 x (1 - price_skew x
    excess): the total spread stays `spread`, the side that brings the share back to target
    moves toward the book (at price_skew 1 and full excess it joins the touch). Sizes are
    multiplied by 1 - size_skew x excess (buy) and 1 + size_skew x excess (sell), never < 0.
    excess 0 (inside the band) gives exactly the symmetric quotes.
    """
    half = spread / 2.0
    tilt = price_skew * excess
    buy = 1.0 - size_skew * excess
    sell = 1.0 + size_skew * excess
    return best_bid, half * (1.0 + tilt), best_ask, half * (1.0 - tilt), max(buy, 0.0), max(sell, 0.0)


@njit(cache=True, error_model="numpy")
def arrival_spread(gamma: float, kappa: float) -> float:
    """The Avellaneda-Stoikov spread's order-arrival term, (2 / gamma) x ln(1 + gamma / kappa), fraction."""
    return (2.0 / gamma) * math.log(1.0 + gamma / kappa)


@njit(cache=True, error_model="numpy")
def reservation_and_spread(mid: float, q: float, gamma: float, arrival: float, sigma2: float, tau: float, min_spread: float):
    """`avellaneda_stoikov` with the arrival term precomputed (arrival_spread): the kernel's form."""
    risk = gamma * sigma2 * tau
    spread = risk + arrival
    return mid * (1.0 - q * risk), spread if spread >= min_spread else min_spread


@njit(cache=True, error_model="numpy")
def avellaneda_stoikov(mid: float, q: float, gamma: float, kappa: float, sigma2: float, tau: float, min_spread: float):
    """(reservation price, total spread) of Avellaneda-Stoikov in relative price units.

    q: inventory deviation, base share minus target share (-1..1; + = too much base).
    gamma: risk aversion (> 0, per unit of q). kappa: decay of fill intensity with distance
    from mid, per unit of relative distance (> 0; 1000 = intensity falls e-fold per 0.1 %).
    sigma2: variance of log mid returns per second. tau: remaining horizon, seconds.
    reservation = mid x (1 - q x gamma x sigma2 x tau);
    spread = gamma x sigma2 x tau + (2 / gamma) x ln(1 + gamma / kappa), at least min_spread
    (fractions of the price). Zero volatility leaves reservation = mid and the arrival term.
    """
    return reservation_and_spread(mid, q, gamma, arrival_spread(gamma, kappa), sigma2, tau, min_spread)


@njit(cache=True, error_model="numpy")
def avellaneda_stoikov_anchor(best_bid: float, best_ask: float, share: float, target: float, gamma: float,
                              arrival: float, sigma2: float, tau: float, min_spread: float):
    """Both sides anchored at the reservation price, each spread/2 away from it; sizes unchanged.

    arrival: the spread's order-arrival term, arrival_spread(gamma, kappa).
    """
    mid = 0.5 * (best_bid + best_ask)
    q = share - target
    if not (q == q):
        q = 0.0
    r, spread = reservation_and_spread(mid, q, gamma, arrival, sigma2, tau, min_spread)
    half = spread / 2.0
    return r, half, r, half, 1.0, 1.0


@njit(cache=True, error_model="numpy", inline="always")
def ladder(quotes, best_bid, best_ask, bid_ref, bid_off, ask_ref, ask_off, size, buy_mult, sell_mult, cap_quote, last,
           levels, spread_step, size_step, tick, grid, fee, min_profit):
    """Write `levels` bid/ask pairs into quotes rows (2k: bid of level k, 2k+1: its ask).

    Level k: bid = bid_ref x (1 - (bid_off + k x spread_step / 2)), ask = ask_ref x (1 + (ask_off
    + k x spread_step / 2)), so each level adds spread_step to the pair's total spread; a bid
    above best_bid is lowered to it and an ask below best_ask raised to it (quotes join the
    touch at most: they never cross the book, and on candles, where close stands for both
    sides, never sit on the wrong side of it); then bid floors and ask ceils to the tick grid (tick 0: no grid, `grid`
    from strategy.grid_scale). Sizes: size x (1 + k x size_step) x the side's multiplier, each
    capped at cap_quote / last (base units; cap_quote = capital x max exposure, quote currency). min_profit > 0: a pair whose spread after maker fees,
    (ask x (1 - fee) - bid x (1 + fee)) / mid, is below min_profit is not quoted (both sizes 0).
    Rows get (side +1/-1, price, amount); amount 0 = not quoted.
    """
    mid = 0.5 * (best_bid + best_ask)
    for k in range(levels):
        widen = k * spread_step * 0.5
        bid = bid_ref * (1.0 - (bid_off + widen))
        ask = ask_ref * (1.0 + (ask_off + widen))
        if bid > best_bid:
            bid = best_bid
        if ask < best_ask:
            ask = best_ask
        if tick > 0.0:
            bid = _on_grid_fast(math.floor(bid / tick + 1e-9), tick, grid)
            ask = _on_grid_fast(math.ceil(ask / tick - 1e-9), tick, grid)
        grow = 1.0 + k * size_step
        buy_amt = size * grow * buy_mult
        sell_amt = size * grow * sell_mult
        if buy_amt > size or sell_amt > size:  # only a grown size can exceed the cap: divide only then
            size_cap = cap_quote / last
            if buy_amt > size_cap:
                buy_amt = size_cap
            if sell_amt > size_cap:
                sell_amt = size_cap
        if min_profit > 0.0 and not (ask * (1.0 - fee) - bid * (1.0 + fee) >= min_profit * mid):
            buy_amt = 0.0
            sell_amt = 0.0
        quotes[2 * k, 0] = 1.0
        quotes[2 * k, 1] = bid
        quotes[2 * k, 2] = buy_amt
        quotes[2 * k + 1, 0] = -1.0
        quotes[2 * k + 1, 1] = ask
        quotes[2 * k + 1, 2] = sell_amt


def kernel_kwargs(strategy_cfg) -> dict:
    """engine.make_params keyword arguments from a strategy config (conf/strategy/*.yaml)."""
    st = strategy_cfg
    kw = {
        "strategy": str(st.name),
        "levels": int(st.levels),
        "level_spread_step": float(st.level_spread_step),
        "level_size_step": float(st.level_size_step),
        "min_profit_threshold": float(st.min_profit_threshold),
    }
    if st.name == "inventory_skew":
        kw.update(
            target_base_share=float(st.target_base_share),
            rebalance_threshold=float(st.rebalance_threshold),
            price_skew=float(st.price_skew),
            size_skew=float(st.size_skew),
        )
    elif st.name == "avellaneda_stoikov":
        kw.update(
            target_base_share=float(st.target_base_share),
            gamma=float(st.gamma),
            kappa=float(st.kappa),
            horizon_s=float(st.horizon_s),
            rolling_horizon=st.horizon == "rolling",
            min_spread=float(st.min_spread),
            vol_window=float(st.vol_window),
        )
    return kw
