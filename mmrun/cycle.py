"""The quote cycle's compiled source: one template, compiled once per (strategy, fill model).

`engine.kernel` copies this file into a cache folder with the lines between the VARIANT markers
replaced by the variant's constants (the strategy's anchor function, the fill model), named by a
hash of every source the kernel compiles from, and imports the copy. numba compiles it with
both as compile-time constants: a variant carries only its own strategy's code and one fill
model's loop, runs as lean as a hand-written loop, and is cached on disk (`cache=True` is keyed
on the file, and the file's name changes with any source). Imported as is, this module is the
symmetric strategy with `touch` fills.

Speed note: the kernel reads and writes its arrays unconditionally and lets branches only choose
between scalars (x if c else y), except on the fill model, a compile-time constant. An array
touched inside a data-dependent branch of an inlined function costs numba a reference-count round
trip per cycle, which alone halves the throughput; so a fill row is always written to the next
buffer row and counted only when the fill happened (the buffer has a spare row for this), and a
quote's drop reason is counted by indexing, not by branching.
"""

import numpy as np
from numba import njit

from mmrun.engine import (
    F_AMOUNT,
    F_BASE,
    F_FEE,
    F_PRICE,
    F_QUOTE,
    F_SIDE,
    F_SLOT,
    N_DROP_SLOTS,
    Q_AMOUNT,
    Q_PRICE,
    Q_SIDE,
    QUOTE_SLOTS,
)
from mmrun.quoting import grid_floor, ladder
from mmrun.sizing import fraction_size

# --- VARIANT (engine.kernel replaces the lines up to the end marker) ---
from mmrun.strategies.symmetric import anchor as ANCHOR  # noqa: E402

INSTANT = False  # the fill model: True = instant, False = touch
# --- END VARIANT ---


@njit(cache=True, error_model="numpy", inline="always")
def _settle(fills, nf, slot, hit, side, price, amount, fee_rate, base, quote, fees, volume, buys, sells):
    """Apply a fill of quote row `slot` (amount at price) when `hit`, else change nothing.

    Spot accounting: a buy pays notional + fee from quote and adds amount to base; a sell takes
    amount from base and adds notional - fee to quote (fee = notional x fee_rate). Writes the
    fill's row at fills[nf] either way; returns the balances and totals after it, and nf + 1 if
    it happened (else nf).
    """
    notional = price * amount
    fee = notional * fee_rate
    is_buy = side > 0.0
    if is_buy:
        new_quote = quote - (notional + fee)
        new_base = base + amount
    else:
        new_base = base - amount
        new_quote = quote + (notional - fee)
    base = new_base if hit else base
    quote = new_quote if hit else quote
    fees = fees + fee if hit else fees
    volume = volume + notional if hit else volume
    buys = buys + 1.0 if hit and is_buy else buys
    sells = sells + 1.0 if hit and not is_buy else sells
    fills[nf, F_SLOT] = slot
    fills[nf, F_SIDE] = side
    fills[nf, F_PRICE] = price
    fills[nf, F_AMOUNT] = amount
    fills[nf, F_FEE] = fee
    fills[nf, F_BASE] = base
    fills[nf, F_QUOTE] = quote
    return base, quote, fees, volume, buys, sells, nf + 1 if hit else nf


@njit(cache=True, error_model="numpy", inline="always")
def _cycle(p, s, quotes, bid, ask, last, low, high, volume, fills, start, drops,
           base, quote, fees, traded, buys, sells, cycle):
    """One cycle on the engine's state held as scalars (the bulk loop keeps them in registers from
    row to row). Returns (fills end, base, quote, fees, traded, buys, sells, cycle + 1, best bid,
    best ask placed: the highest bid and lowest ask resting (touch) or executed (instant), NaN = none).

    1. Resting quotes (made at the previous row) meet this row's interval: under `touch`, a bid
       at p fills if low < p, an ask at p if high > p, at p, capped by participation x volume
       when configured. Whatever did not fill is cancelled (cancel/replace).
    2. New quotes from this row's snapshot: size from `last` (sizing.fraction_size), the
       strategy's anchor (ANCHOR), the levels on the tick grid (quoting.ladder).
    3. Each quote, in slot order (level by level, the bid then the ask), is placed only if the
       rules allow: a size, a price, the pair's spread after fees at least min_profit_threshold,
       whole lots, the exchange's minimum amount and notional, and the balance. `touch`: it then
       rests, its funds held (so its fill is always covered); `instant`: it fills at once.
       drops[reason] counts each quote not placed (drops[0]: placed; engine.DROP_REASONS).
    """
    n_slots = quotes.shape[0]
    fee_rate = p.fee_maker
    cap_frac = p.participation
    nf = start
    for slot in range(0 if INSTANT else n_slots):  # under `instant` nothing rests
        side = quotes[slot, Q_SIDE]
        price = quotes[slot, Q_PRICE]
        amount = quotes[slot, Q_AMOUNT]
        crossed = low < price if side > 0.0 else high > price
        capped = cap_frac > 0.0 and cap_frac * volume < amount
        amount = cap_frac * volume if capped else amount
        hit = crossed and amount > 0.0
        base, quote, fees, traded, buys, sells, nf = _settle(
            fills, nf, slot, hit, side, price, amount, fee_rate, base, quote, fees, traded, buys, sells
        )
        quotes[slot, Q_AMOUNT] = 0.0

    size = fraction_size(p.capital, p.order_size_pct, p.max_exposure, last)
    mid = 0.5 * (bid + ask)
    a = ANCHOR(p, s, bid, ask, mid, base, quote, cycle)
    ladder(quotes, bid, ask, a[0], a[1], a[2], a[3], size, a[4], a[5], p.capital * p.max_exposure, last,
           n_slots // QUOTE_SLOTS, p.level_spread_step, p.level_size_step, p.tick_units, p.tick_scale)

    lot_units = p.lot_units
    lot_scale = p.lot_scale
    min_amount = p.min_amount
    min_notional = p.min_notional
    min_profit = p.min_profit_threshold * mid
    free_quote = quote
    free_base = base
    best_bid = np.nan
    best_ask = np.nan
    for slot in range(n_slots):
        side = quotes[slot, Q_SIDE]
        price = quotes[slot, Q_PRICE]
        wanted = quotes[slot, Q_AMOUNT]
        pair = slot - slot % 2  # the level's bid row; its ask is the next
        thin = min_profit > 0.0 and not (
            quotes[pair + 1, Q_PRICE] * (1.0 - fee_rate) - quotes[pair, Q_PRICE] * (1.0 + fee_rate) >= min_profit
        )
        amount = grid_floor(wanted, lot_units, lot_scale)
        is_buy = side > 0.0
        need = price * amount + price * amount * fee_rate
        have_quote = quote if INSTANT else free_quote
        have_base = base if INSTANT else free_base
        covered = need <= have_quote if is_buy else amount <= have_base
        reason = (
            1 if not wanted > 0.0 else
            2 if not price > 0.0 else
            3 if thin else
            4 if not amount > 0.0 else
            5 if amount < min_amount else
            6 if price * amount < min_notional else
            7 if not covered else
            0
        )
        drops[reason] += 1.0
        ok = reason == 0
        rest = ok and not INSTANT
        best_bid = price if ok and is_buy and not price <= best_bid else best_bid
        best_ask = price if ok and not is_buy and not price >= best_ask else best_ask
        free_quote = free_quote - need if rest and is_buy else free_quote
        free_base = free_base - amount if rest and not is_buy else free_base
        if INSTANT:  # a constant: only one fill model's code is compiled
            base, quote, fees, traded, buys, sells, nf = _settle(
                fills, nf, slot, ok, side, price, amount, fee_rate, base, quote, fees, traded, buys, sells
            )
        quotes[slot, Q_AMOUNT] = amount if rest else 0.0

    return nf, base, quote, fees, traded, buys, sells, cycle + 1.0, best_bid, best_ask


@njit(cache=True, error_model="numpy", inline="always")
def _store(s, c, drops):
    """Write _cycle's scalars (after the fill count) and the drop counts into the state record."""
    s.base = c[1]
    s.quote = c[2]
    s.fees = c[3]
    s.volume = c[4]
    s.buys = c[5]
    s.sells = c[6]
    s.cycles = c[7]
    s.dropped_zero_size += drops[1]
    s.dropped_no_price += drops[2]
    s.dropped_min_profit += drops[3]
    s.dropped_lot += drops[4]
    s.dropped_min_amount += drops[5]
    s.dropped_min_notional += drops[6]
    s.dropped_balance += drops[7]


@njit(cache=True, error_model="numpy")
def step(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    """One cycle at a market row (engine.step checks the arguments). Returns the fills written.
    params, state: the one-element arrays holding the parameter and state records."""
    p = params[0]
    s = state[0]
    drops = np.zeros(N_DROP_SLOTS)
    c = _cycle(p, s, quotes, bid, ask, last, low, high, volume, fills, start, drops,
               s.base, s.quote, s.fees, s.volume, s.buys, s.sells, s.cycles)
    _store(s, c, drops)
    return c[0] - start


@njit(cache=True, error_model="numpy")
def run(p, s, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    """engine.run_bulk's loop: every row's cycle; writes quoted, base, quote per row and the fills
    with their rows; returns the fill count. fills and fill_rows need n x quote rows + 1 rows.
    p, s: the parameter and state records (one call per run: their unboxing cost does not matter)."""
    n = bid.shape[0]
    n_slots = quotes.shape[0]
    drops = np.zeros(N_DROP_SLOTS)
    k = 0
    c = (0, s.base, s.quote, s.fees, s.volume, s.buys, s.sells, s.cycles, np.nan, np.nan)
    for i in range(n):
        c = _cycle(p, s, quotes, bid[i], ask[i], last[i], low[i], high[i], volume[i], fills, k, drops,
                   c[1], c[2], c[3], c[4], c[5], c[6], c[7])
        m = c[0] - k
        for j in range(k, k + m):
            fill_rows[j] = i
        k += m
        quoted[i, 0] = c[8]
        quoted[i, 1] = c[9]
        base[i] = c[1]
        quote[i] = c[2]
    _store(s, c, drops)
    return k
