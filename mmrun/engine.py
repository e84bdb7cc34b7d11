"""The per-cycle engine kernel (numba): resting quotes + next market interval -> fills, balances.

One function, `step`, is the whole cycle. The paper loop calls it once per cycle; the
backtest calls it in bulk through `run_bulk`, where it is inlined into a compiled loop. Both
therefore produce the same fills from the same market rows.

Layouts are plain float64 arrays so the kernel stays in numba's nopython mode:
- params: P_* indices (spread, sizing, fees, fill model, tick), built by `make_params`;
- state:  S_* indices (balances and running totals), built by `make_state`;
- quotes: QUOTE_SLOTS rows of (side, price, amount); amount 0 = empty slot;
- fills:  rows of F_* columns, written by step into an output buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mmrun.sizing import fraction_size
from mmrun.strategy import symmetric_quotes

# params
P_SPREAD = 0  # total quoted spread, fraction
P_ORDER_SIZE_PCT = 1  # fraction of capital per order
P_MAX_EXPOSURE = 2  # cap on one order, fraction of capital
P_CAPITAL = 3  # quote currency, the sizing base
P_FEE_MAKER = 4  # fraction of notional, charged in quote on every fill
P_FILL_MODEL = 5  # FILL_TOUCH | FILL_INSTANT
P_PARTICIPATION = 6  # max fraction of interval volume per fill; 0 = no cap
P_TICK = 7  # price grid; 0 = none
P_STRATEGY = 8  # STRAT_SYMMETRIC
N_PARAMS = 9

FILL_TOUCH = 0.0
FILL_INSTANT = 1.0
STRAT_SYMMETRIC = 0.0

# state
S_BASE = 0  # base currency held, >= 0
S_QUOTE = 1  # quote currency held, >= 0
S_FEES = 2  # fees paid so far, quote currency
S_VOLUME = 3  # traded notional so far, quote currency
S_BUYS = 4
S_SELLS = 5
N_STATE = 6

# quotes
QUOTE_SLOTS = 2  # slot 0: the bid, slot 1: the ask
Q_SIDE = 0  # +1 buy, -1 sell
Q_PRICE = 1
Q_AMOUNT = 2

# fills
F_SLOT = 0  # quote slot that filled
F_SIDE = 1  # +1 buy, -1 sell
F_PRICE = 2
F_AMOUNT = 3  # base units, > 0
F_FEE = 4  # quote currency
F_BASE = 5  # base balance after the fill
F_QUOTE = 6  # quote balance after the fill
N_FILL = 7
MAX_FILLS_PER_STEP = QUOTE_SLOTS


def make_params(
    spread: float,
    order_size_pct: float,
    max_exposure: float,
    capital: float,
    fee_maker: float,
    fill_model: str,
    participation: float | None,
    tick: float,
) -> np.ndarray:
    p = np.zeros(N_PARAMS)
    p[P_SPREAD] = spread
    p[P_ORDER_SIZE_PCT] = order_size_pct
    p[P_MAX_EXPOSURE] = max_exposure
    p[P_CAPITAL] = capital
    p[P_FEE_MAKER] = fee_maker
    p[P_FILL_MODEL] = FILL_INSTANT if fill_model == "instant" else FILL_TOUCH
    p[P_PARTICIPATION] = participation or 0.0
    p[P_TICK] = tick
    p[P_STRATEGY] = STRAT_SYMMETRIC
    return p


def make_state(base: float, quote: float) -> np.ndarray:
    s = np.zeros(N_STATE)
    s[S_BASE] = base
    s[S_QUOTE] = quote
    return s


def empty_quotes() -> np.ndarray:
    return np.zeros((QUOTE_SLOTS, 3))


@njit(cache=True)
def _fill(params, state, quotes, slot, amount, fills, nf):
    """Apply one fill of quotes[slot] for amount (already known to be covered). Returns nf + 1."""
    side = quotes[slot, Q_SIDE]
    price = quotes[slot, Q_PRICE]
    notional = price * amount
    fee = notional * params[P_FEE_MAKER]
    if side > 0:
        state[S_QUOTE] -= notional + fee
        state[S_BASE] += amount
        state[S_BUYS] += 1
    else:
        state[S_BASE] -= amount
        state[S_QUOTE] += notional - fee
        state[S_SELLS] += 1
    state[S_FEES] += fee
    state[S_VOLUME] += notional
    fills[nf, F_SLOT] = slot
    fills[nf, F_SIDE] = side
    fills[nf, F_PRICE] = price
    fills[nf, F_AMOUNT] = amount
    fills[nf, F_FEE] = fee
    fills[nf, F_BASE] = state[S_BASE]
    fills[nf, F_QUOTE] = state[S_QUOTE]
    return nf + 1


@njit(cache=True)
def _covered(params, state, side, price, amount):
    """Spot rule: a buy needs quote for notional + fee, a sell needs the base it sells."""
    if amount <= 0.0:
        return False
    if side > 0:
        return price * amount + price * amount * params[P_FEE_MAKER] <= state[S_QUOTE]
    return amount <= state[S_BASE]


@njit(cache=True)
def step(params, state, quotes, bid, ask, last, low, high, volume, fills):
    """One quote cycle at a market row. Returns the number of fills written to `fills`.

    1. Resting quotes (made at the previous row) meet this row's interval: under `touch`, a
       bid at p fills if low < p, an ask at p if high > p, at p, capped by participation x
       volume when configured. Whatever did not fill is cancelled (cancel/replace).
    2. New quotes from this row's snapshot: size from `last`, prices from the strategy.
    3. `touch`: a quote rests only if the balance covers it now (funds are then held for it,
       so its fill is always covered). `instant`: the buy, then the sell, fill at once when
       the balance covers them; nothing rests.
    """
    nf = 0
    instant = params[P_FILL_MODEL] == FILL_INSTANT
    cap_frac = params[P_PARTICIPATION]
    for slot in range(QUOTE_SLOTS):
        amount = quotes[slot, Q_AMOUNT]
        if amount > 0.0:
            side = quotes[slot, Q_SIDE]
            price = quotes[slot, Q_PRICE]
            crossed = low < price if side > 0 else high > price
            if crossed:
                if cap_frac > 0.0 and cap_frac * volume < amount:
                    amount = cap_frac * volume
                if amount > 0.0:
                    nf = _fill(params, state, quotes, slot, amount, fills, nf)
        quotes[slot, Q_AMOUNT] = 0.0

    size = fraction_size(params[P_CAPITAL], params[P_ORDER_SIZE_PCT], params[P_MAX_EXPOSURE], last)
    buy_px, sell_px = symmetric_quotes(bid, ask, params[P_SPREAD], params[P_TICK])
    quotes[0, Q_SIDE] = 1.0
    quotes[0, Q_PRICE] = buy_px
    quotes[1, Q_SIDE] = -1.0
    quotes[1, Q_PRICE] = sell_px
    for slot in range(QUOTE_SLOTS):
        side = quotes[slot, Q_SIDE]
        price = quotes[slot, Q_PRICE]
        if not (price > 0.0) or not _covered(params, state, side, price, size):
            quotes[slot, Q_AMOUNT] = 0.0
            continue
        quotes[slot, Q_AMOUNT] = size
        if instant:
            nf = _fill(params, state, quotes, slot, size, fills, nf)
            quotes[slot, Q_AMOUNT] = 0.0  # executed: nothing rests under `instant`
    return nf


@njit(cache=True)
def run_bulk(params, state, bid, ask, last, low, high, volume):
    """Replay n market rows through `step`. Returns (quoted, fills, fill_rows, base, quote).

    quoted: (n, 2) bid and ask price placed at each row (NaN = no quote on that side; under
    `instant` the quotes that executed). fills: (k, N_FILL); fill_rows: (k,) row index of
    each fill. base, quote: (n,) balances after each row's cycle. state is updated in place.
    """
    n = bid.shape[0]
    quotes = np.zeros((QUOTE_SLOTS, 3))
    quoted = np.full((n, 2), np.nan)
    base = np.empty(n)
    quote = np.empty(n)
    cap = max(16, n // 8)
    fills = np.empty((cap, N_FILL))
    fill_rows = np.empty(cap, dtype=np.int64)
    buf = np.empty((MAX_FILLS_PER_STEP, N_FILL))
    k = 0
    instant = params[P_FILL_MODEL] == FILL_INSTANT
    for i in range(n):
        m = step(params, state, quotes, bid[i], ask[i], last[i], low[i], high[i], volume[i], buf)
        if k + m > cap:
            cap = cap * 2
            grown = np.empty((cap, N_FILL))
            grown[:k] = fills[:k]
            fills = grown
            grown_rows = np.empty(cap, dtype=np.int64)
            grown_rows[:k] = fill_rows[:k]
            fill_rows = grown_rows
        for j in range(m):
            fills[k] = buf[j]
            fill_rows[k] = i
            k += 1
        if instant:
            for j in range(m):
                col = 0 if buf[j, F_SIDE] > 0 else 1
                quoted[i, col] = buf[j, F_PRICE]
        else:
            for slot in range(QUOTE_SLOTS):
                if quotes[slot, Q_AMOUNT] > 0.0:
                    quoted[i, 0 if quotes[slot, Q_SIDE] > 0 else 1] = quotes[slot, Q_PRICE]
        base[i] = state[S_BASE]
        quote[i] = state[S_QUOTE]
    return quoted, fills[:k].copy(), fill_rows[:k].copy(), base, quote
