"""The per-cycle engine kernel (numba): resting quotes + next market interval -> fills, balances.

One function, `step`, is the whole cycle. The paper loop calls it once per cycle; the
backtest calls it in bulk through `run_bulk`, where the same cycle is inlined into a compiled
loop. Both therefore produce the same fills from the same market rows. Each (strategy, fill
model) pair is its own compiled variant, built on first use and cached on disk.

Layouts are plain float64 arrays so the kernel stays in numba's nopython mode:
- params: P_* indices (spread, sizing, fees, fill model, tick, strategy), built by `make_params`;
- state:  S_* indices (balances, running totals, the volatility estimate), built by `make_state`;
- quotes: 2 x levels rows of (side, price, amount), row 2k the bid of level k and 2k + 1 its
  ask; amount 0 = empty slot. `empty_quotes(levels)` makes one;
- fills:  rows of F_* columns, written by step into an output buffer (`max_fills(levels)` rows:
  one fill per quote row at most, plus a spare row the kernel writes into).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from mmrun.sizing import fraction_size
from mmrun.strategy import (
    STRAT_AVELLANEDA_STOIKOV,
    STRAT_INVENTORY_SKEW,
    STRAT_SYMMETRIC,
    STRATEGY_IDS,
    arrival_spread,
    avellaneda_stoikov_anchor,
    base_share,
    grid_scale,
    inventory_skew_anchor,
    ladder,
    skew_excess,
    symmetric_anchor,
)

# params
P_SPREAD = 0  # total quoted spread, fraction (symmetric, inventory_skew)
P_ORDER_SIZE_PCT = 1  # fraction of capital per order
P_MAX_EXPOSURE = 2  # cap on one order, fraction of capital
P_CAPITAL = 3  # quote currency, the sizing base
P_FEE_MAKER = 4  # fraction of notional, charged in quote on every fill
P_FILL_MODEL = 5  # FILL_TOUCH | FILL_INSTANT
P_PARTICIPATION = 6  # max fraction of interval volume per fill; 0 = no cap
P_TICK = 7  # price grid; 0 = none
P_STRATEGY = 8  # STRAT_* (mmrun.strategy)
P_GRID = 9  # 10 ** digits for exact tick rounding (strategy.grid_scale); 0 = no grid
P_LEVELS = 10  # quotes per side, >= 1
P_LEVEL_SPREAD_STEP = 11  # extra total spread per level, fraction
P_LEVEL_SIZE_STEP = 12  # extra size per level, fraction of the first level's size
P_MIN_PROFIT = 13  # min spread after maker fees of a quoted pair, fraction of mid; 0 = off
P_TARGET_SHARE = 14  # target base share of the portfolio value (inventory_skew, avellaneda_stoikov)
P_BAND = 15  # inventory_skew: tolerance band around the target, fraction of portfolio value
P_PRICE_SKEW = 16  # inventory_skew: price lean at full excess, fraction of spread/2
P_SIZE_SKEW = 17  # inventory_skew: size lean at full excess, fraction of the size
P_GAMMA = 18  # avellaneda_stoikov: risk aversion
P_KAPPA = 19  # avellaneda_stoikov: fill-intensity decay per unit relative distance
P_HORIZON_S = 20  # avellaneda_stoikov: horizon, seconds
P_ROLLING = 21  # avellaneda_stoikov: 1 = rolling horizon (constant), 0 = finite (counts down, restarts)
P_MIN_SPREAD = 22  # avellaneda_stoikov: floor on the total spread, fraction
P_DT_S = 23  # seconds per cycle (volatility per second, horizon countdown)
P_VOL_ALPHA = 24  # weight of the newest squared return in the volatility EWMA, 2 / (window + 1)
P_LOT = 25  # exchange amount grid, base units: amounts are floored to it; 0 = none
P_MIN_AMOUNT = 26  # exchange minimum order amount, base units: smaller quotes are not placed; 0 = none
P_MIN_NOTIONAL = 27  # exchange minimum order value, quote currency: smaller quotes are not placed; 0 = none
P_AS_ARRIVAL = 28  # avellaneda_stoikov: (2 / gamma) ln(1 + gamma / kappa), the spread's arrival term
N_PARAMS = 29

FILL_TOUCH = 0.0
FILL_INSTANT = 1.0

# state
S_BASE = 0  # base currency held, >= 0
S_QUOTE = 1  # quote currency held, >= 0
S_FEES = 2  # fees paid so far, quote currency
S_VOLUME = 3  # traded notional so far, quote currency
S_BUYS = 4
S_SELLS = 5
S_CYCLES = 6  # cycles stepped so far
S_PREV_MID = 7  # mid of the previous cycle (volatility estimate), 0 = none yet
S_VAR = 8  # EWMA of squared mid returns per cycle
S_RETURNS = 9  # returns seen by the estimate
N_STATE = 10

# quotes
QUOTE_SLOTS = 2  # per level: the bid, then the ask (one level: slot 0 bid, slot 1 ask)
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
MAX_RESERVED_FILLS = 1 << 26  # fill rows reserved per kernel call at most (3.5 GB of address space)
MAX_FILLS_PER_STEP = QUOTE_SLOTS + 1  # fill rows step needs with one level (max_fills(levels) in general)


def make_params(
    spread: float,
    order_size_pct: float,
    max_exposure: float,
    capital: float,
    fee_maker: float,
    fill_model: str,
    participation: float | None,
    tick: float,
    *,
    strategy: str = "symmetric",
    levels: int = 1,
    level_spread_step: float = 0.0,
    level_size_step: float = 0.0,
    min_profit_threshold: float = 0.0,
    target_base_share: float = 0.5,
    rebalance_threshold: float = 0.1,
    price_skew: float = 1.0,
    size_skew: float = 1.0,
    gamma: float = 0.1,
    kappa: float = 1000.0,
    horizon_s: float = 3600.0,
    rolling_horizon: bool = True,
    min_spread: float = 0.0,
    vol_window: float = 60.0,
    dt_s: float = 5.0,
    lot: float = 0.0,
    min_amount: float = 0.0,
    min_notional: float = 0.0,
) -> np.ndarray:
    """The kernel's parameter array. Units as in the P_* comments; the keyword-only ones are the
    strategy's (conf/strategy/*.yaml); their defaults leave the original symmetric rule."""
    p = np.zeros(N_PARAMS)
    p[P_SPREAD] = spread
    p[P_ORDER_SIZE_PCT] = order_size_pct
    p[P_MAX_EXPOSURE] = max_exposure
    p[P_CAPITAL] = capital
    p[P_FEE_MAKER] = fee_maker
    p[P_FILL_MODEL] = FILL_INSTANT if fill_model == "instant" else FILL_TOUCH
    p[P_PARTICIPATION] = participation or 0.0
    p[P_TICK] = tick
    p[P_STRATEGY] = STRATEGY_IDS[strategy]
    p[P_GRID] = grid_scale(tick)
    p[P_LEVELS] = levels
    p[P_LEVEL_SPREAD_STEP] = level_spread_step
    p[P_LEVEL_SIZE_STEP] = level_size_step
    p[P_MIN_PROFIT] = min_profit_threshold
    p[P_TARGET_SHARE] = target_base_share
    p[P_BAND] = rebalance_threshold
    p[P_PRICE_SKEW] = price_skew
    p[P_SIZE_SKEW] = size_skew
    p[P_GAMMA] = gamma
    p[P_KAPPA] = kappa
    p[P_HORIZON_S] = horizon_s
    p[P_ROLLING] = 1.0 if rolling_horizon else 0.0
    p[P_MIN_SPREAD] = min_spread
    p[P_DT_S] = dt_s
    p[P_VOL_ALPHA] = 2.0 / (vol_window + 1.0)
    p[P_AS_ARRIVAL] = arrival_spread(gamma, kappa)
    p[P_LOT] = lot
    p[P_MIN_AMOUNT] = min_amount
    p[P_MIN_NOTIONAL] = min_notional
    return p


def make_state(base: float, quote: float) -> np.ndarray:
    s = np.zeros(N_STATE)
    s[S_BASE] = base
    s[S_QUOTE] = quote
    return s


def levels_of(params: np.ndarray) -> int:
    """Quotes per side configured in params."""
    return int(params[P_LEVELS])


def empty_quotes(levels: int = 1) -> np.ndarray:
    """Quote rows for `levels` levels, all empty."""
    return np.zeros((QUOTE_SLOTS * levels, 3))


def max_fills(levels: int = 1) -> int:
    """Rows a step's fill buffer needs: one fill per quote row at most, plus a spare row."""
    return QUOTE_SLOTS * levels + 1


def best_quoted(quotes: np.ndarray) -> tuple[float, float]:
    """(highest resting bid, lowest resting ask) in quotes; NaN for a side with none."""
    bid = ask = math.nan
    for side, price, amount in quotes:
        if amount > 0.0:
            if side > 0 and not price <= bid:
                bid = float(price)
            elif side < 0 and not price >= ask:
                ask = float(price)
    return bid, ask


# Speed note: the kernel reads and writes its arrays unconditionally and lets branches only
# choose between scalars (x if c else y), except on the strategy and fill model, which are
# compile-time constants. An array touched inside a data-dependent branch of an inlined
# function costs numba a reference-count round trip per cycle, which alone halves the
# throughput; so a fill row is always written to the next buffer row and counted only when
# the fill happened (the buffer has a spare row for this).


@njit(cache=True, error_model="numpy", inline="always")
def _settle(fills, nf, slot, hit, side, price, amount, fee_rate, base, quote, fees, volume, buys, sells):
    """Apply a fill of quote row `slot` (amount at price) when `hit`, else change nothing.

    Spot accounting: a buy pays notional + fee from quote and adds amount to base; a sell
    takes amount from base and adds notional - fee to quote (fee = notional x fee_rate).
    Writes the fill's row at fills[nf] either way; returns the balances and totals after it,
    and nf + 1 if it happened (else nf).
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


@njit(cache=True, error_model="numpy")
def _volatility(prev_mid, var, returns, mid, alpha):
    """EWMA of squared mid returns per cycle: (prev_mid, var, returns) after seeing `mid`.

    Simple returns, mid / prev_mid - 1 (at a cycle's scale the same as log returns, and no
    log per cycle). The first return seeds the average; an unknown mid (<= 0 or NaN) changes
    nothing.
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
def _horizon_left(horizon, rolling, cycle, dt_s):
    """Seconds left in the Avellaneda-Stoikov horizon at this cycle: the whole horizon when
    rolling; when finite it counts down from horizon and restarts every horizon of market time."""
    elapsed = cycle * dt_s
    left = horizon - (elapsed - horizon * math.floor(elapsed / horizon))
    return horizon if rolling else left


def step(params, state, quotes, bid, ask, last, low, high, volume, fills, start=0):
    """One quote cycle at a market row. Writes fills to fills[start:]; returns how many.

    1. Resting quotes (made at the previous row) meet this row's interval: under `touch`, a
       bid at p fills if low < p, an ask at p if high > p, at p, capped by participation x
       volume when configured. Whatever did not fill is cancelled (cancel/replace).
    2. New quotes from this row's snapshot: size from `last`, prices and sizes from the
       strategy, for every level (see strategy.ladder).
    3. `touch`: a quote rests only if the balance covers it now, after the quotes before it
       (level by level, the bid then the ask); funds are then held for it, so its fill is
       always covered. `instant`: in the same order each quote fills at once when the
       balance covers it; nothing rests.
    fills needs start + max_fills(levels) rows (one fill per quote row, plus a spare).
    """
    if fills.shape[0] < start + quotes.shape[0] + 1:
        raise ValueError("step: the fills buffer needs start + max_fills(levels) rows")
    return _STEPS[_variant(params)](params, state, quotes, bid, ask, last, low, high, volume, fills, start)


def _variant(params) -> tuple[int, bool]:
    """(strategy, instant): the constants the kernel is specialised on."""
    return int(params[P_STRATEGY]), bool(params[P_FILL_MODEL] == FILL_INSTANT)


@njit(cache=True, error_model="numpy", inline="always")
def _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, strategy, instant):
    """The body of `step` (strategy: a STRAT_* int, instant: the fill model; both constants)."""
    s = _cycle_core(
        params, quotes, bid, ask, last, low, high, volume, fills, start, strategy, instant,
        state[S_BASE], state[S_QUOTE], state[S_FEES], state[S_VOLUME], state[S_BUYS], state[S_SELLS],
        state[S_PREV_MID], state[S_VAR], state[S_RETURNS], state[S_CYCLES],
    )
    _store_state(state, s)
    return s[0] - start


@njit(cache=True, error_model="numpy", inline="always")
def _store_state(state, s):
    """Write _cycle_core's scalars (after the fill count) back into the state array."""
    state[S_BASE] = s[1]
    state[S_QUOTE] = s[2]
    state[S_FEES] = s[3]
    state[S_VOLUME] = s[4]
    state[S_BUYS] = s[5]
    state[S_SELLS] = s[6]
    state[S_PREV_MID] = s[7]
    state[S_VAR] = s[8]
    state[S_RETURNS] = s[9]
    state[S_CYCLES] = s[10]


@njit(cache=True, error_model="numpy", inline="always")
def _cycle_core(params, quotes, bid, ask, last, low, high, volume, fills, start, strategy, instant,
                base, quote, fees, traded, buys, sells, prev_mid, var, returns, cycle):
    """The cycle on the state held as scalars: run_bulk keeps them in registers from row to
    row instead of storing and reloading the state array every cycle. Returns (fills end,
    then the state scalars in S_* order, the cycle count already advanced)."""
    n_slots = quotes.shape[0]
    fee_rate = params[P_FEE_MAKER]
    cap_frac = params[P_PARTICIPATION]
    nf = start
    for slot in range(0 if instant else n_slots):  # under `instant` nothing rests
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

    # new quotes: the strategy's anchor, then the ladder of levels
    size = fraction_size(params[P_CAPITAL], params[P_ORDER_SIZE_PCT], params[P_MAX_EXPOSURE], last)
    mid = 0.5 * (bid + ask)
    if strategy == STRAT_INVENTORY_SKEW:
        excess = skew_excess(base_share(base, quote, mid), params[P_TARGET_SHARE], params[P_BAND])
        a = inventory_skew_anchor(bid, ask, params[P_SPREAD], excess, params[P_PRICE_SKEW], params[P_SIZE_SKEW])
    elif strategy == STRAT_AVELLANEDA_STOIKOV:
        prev_mid, var, returns = _volatility(prev_mid, var, returns, mid, params[P_VOL_ALPHA])
        dt_s = params[P_DT_S]
        tau = _horizon_left(params[P_HORIZON_S], params[P_ROLLING] != 0.0, cycle, dt_s)
        a = avellaneda_stoikov_anchor(
            bid, ask, base_share(base, quote, mid), params[P_TARGET_SHARE], params[P_GAMMA], params[P_AS_ARRIVAL],
            var / dt_s, tau, params[P_MIN_SPREAD],
        )
    else:
        a = symmetric_anchor(bid, ask, params[P_SPREAD])
    ladder(
        quotes, bid, ask, a[0], a[1], a[2], a[3], size, a[4], a[5], params[P_CAPITAL] * params[P_MAX_EXPOSURE], last,
        n_slots // QUOTE_SLOTS, params[P_LEVEL_SPREAD_STEP], params[P_LEVEL_SIZE_STEP],
        params[P_TICK], params[P_GRID], fee_rate, params[P_MIN_PROFIT],
    )

    # cover: rest (touch) or execute (instant) what the balances allow, in slot order
    lot = params[P_LOT]  # read here, not inside the branch below (see the speed note)
    min_amount = params[P_MIN_AMOUNT]
    min_notional = params[P_MIN_NOTIONAL]
    free_quote = quote
    free_base = base
    for slot in range(n_slots):
        side = quotes[slot, Q_SIDE]
        price = quotes[slot, Q_PRICE]
        amount = quotes[slot, Q_AMOUNT]
        # the exchange's rules: a quote it would reject is not placed (the paper loop logs why)
        if lot > 0.0:
            # whole lots; then to 12 decimals, so that 166 x 0.00001 is written 0.00166
            lots = math.floor(amount / lot + 1e-9)
            amount = math.floor(lots * lot * 1e12 + 0.5) / 1e12
        amount = 0.0 if amount < min_amount or price * amount < min_notional else amount
        is_buy = side > 0.0
        need = price * amount + price * amount * fee_rate
        have_quote = quote if instant else free_quote
        have_base = base if instant else free_base
        ok = price > 0.0 and amount > 0.0 and (need <= have_quote if is_buy else amount <= have_base)
        rest = ok and not instant
        free_quote = free_quote - need if rest and is_buy else free_quote
        free_base = free_base - amount if rest and not is_buy else free_base
        if instant:  # a constant: only one fill model's code is compiled
            base, quote, fees, traded, buys, sells, nf = _settle(
                fills, nf, slot, ok, side, price, amount, fee_rate, base, quote, fees, traded, buys, sells
            )
        quotes[slot, Q_AMOUNT] = amount if rest else 0.0

    return nf, base, quote, fees, traded, buys, sells, prev_mid, var, returns, cycle + 1.0


def run_bulk(params, state, bid, ask, last, low, high, volume, quotes=None, progress=None, chunk_rows=None):
    """Replay n market rows through `step`. Returns (quoted, fills, fill_rows, base, quote).

    quoted: (n, 2) best bid and ask price placed at each row (the highest bid and lowest ask
    resting; NaN = no quote on that side; under `instant` the best quotes that executed).
    fills: (k, N_FILL); fill_rows: (k,) row index of each fill. base, quote: (n,) balances
    after each row's cycle. state is updated in place, and so is `quotes` when given (the
    quotes resting before the first row and after the last; default: none before, dropped).
    progress: called with the number of rows done after each chunk of chunk_rows rows
    (default n / 100); the results are the same as in one call.
    """
    if quotes is None:
        quotes = empty_quotes(levels_of(params))
    run = _RUNS[_variant(params)]
    n = len(bid)
    n_slots = quotes.shape[0]
    # the kernel never checks room for fills: each call gets room for every quote filling
    longest = max(1, MAX_RESERVED_FILLS // n_slots - 1)
    if progress is None and n <= longest:
        return _replay(run, params, state, quotes, bid, ask, last, low, high, volume)
    step_rows = min(longest, max(1, int(chunk_rows or -(-n // 100))))
    parts = []
    for a in range(0, n, step_rows):
        b = min(n, a + step_rows)
        parts.append((a, _replay(run, params, state, quotes, bid[a:b], ask[a:b], last[a:b], low[a:b], high[a:b],
                                 volume[a:b])))
        if progress is not None:
            progress(b - a)
    if not parts:
        return _replay(run, params, state, quotes, bid, ask, last, low, high, volume)
    return (
        np.concatenate([p[0] for _, p in parts]),
        np.concatenate([p[1] for _, p in parts]),
        np.concatenate([p[2] + a for a, p in parts]),
        np.concatenate([p[3] for _, p in parts]),
        np.concatenate([p[4] for _, p in parts]),
    )


def _replay(run, params, state, quotes, bid, ask, last, low, high, volume):
    """One compiled replay into output arrays allocated here, with numpy: numpy asks the OS for
    huge pages for large arrays, which halves the cost of first touching a million rows of
    output. The fill buffer has room for every quote filling; only the rows written are ever
    touched, so the reserve costs address space, not memory."""
    n = len(bid)
    worst = n * quotes.shape[0] + 1
    quoted = np.empty((n, 2))
    base = np.empty(n)
    quote = np.empty(n)
    fills = np.empty((worst, N_FILL))
    fill_rows = np.empty(worst, dtype=np.int64)
    k = run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows)
    return quoted, fills[:k], fill_rows[:k], base, quote


@njit(cache=True, error_model="numpy", inline="always")
def _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
         strategy, instant):
    """run_bulk's loop for one strategy and fill model (constants, see the variants below).

    Writes quoted, base, quote per row and the fills with their rows; returns the fill count.
    fills and fill_rows need n x quote rows + 1 rows.
    """
    n = bid.shape[0]
    n_slots = quotes.shape[0]
    k = 0
    s = (0, state[S_BASE], state[S_QUOTE], state[S_FEES], state[S_VOLUME], state[S_BUYS], state[S_SELLS],
         state[S_PREV_MID], state[S_VAR], state[S_RETURNS], state[S_CYCLES])
    for i in range(n):
        s = _cycle_core(params, quotes, bid[i], ask[i], last[i], low[i], high[i], volume[i], fills, k, strategy,
                        instant, s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10])
        m = s[0] - k
        # best bid and ask placed: what rests (touch) or what this row executed (instant:
        # fills[k:k + m], nothing rested before them)
        best_bid = np.nan
        best_ask = np.nan
        for slot in range(n_slots):
            side = fills[k + slot, F_SIDE] if instant else quotes[slot, Q_SIDE]
            price = fills[k + slot, F_PRICE] if instant else quotes[slot, Q_PRICE]
            live = slot < m if instant else quotes[slot, Q_AMOUNT] > 0.0
            best_bid = price if live and side > 0.0 and not price <= best_bid else best_bid
            best_ask = price if live and side < 0.0 and not price >= best_ask else best_ask
        for j in range(n_slots):
            fill_rows[k + j] = i  # rows past k + m are overwritten later or cut off
        k += m
        quoted[i, 0] = best_bid
        quoted[i, 1] = best_ask
        base[i] = s[1]
        quote[i] = s[2]
    _store_state(state, s)
    return k


# The kernel is compiled once per (strategy, fill model) used, each variant inlining the same
# cycle with both as constants: the compiler drops the other strategies' code and the other
# fill model's loop, so each runs as lean as a hand-written loop. Only the variants a run
# uses are compiled (then cached on disk).


@njit(cache=True, error_model="numpy")
def _step_symmetric_touch(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_SYMMETRIC, False)


@njit(cache=True, error_model="numpy")
def _step_symmetric_instant(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_SYMMETRIC, True)


@njit(cache=True, error_model="numpy")
def _step_inventory_skew_touch(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_INVENTORY_SKEW, False)


@njit(cache=True, error_model="numpy")
def _step_inventory_skew_instant(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_INVENTORY_SKEW, True)


@njit(cache=True, error_model="numpy")
def _step_avellaneda_stoikov_touch(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_AVELLANEDA_STOIKOV, False)


@njit(cache=True, error_model="numpy")
def _step_avellaneda_stoikov_instant(params, state, quotes, bid, ask, last, low, high, volume, fills, start):
    return _cycle(params, state, quotes, bid, ask, last, low, high, volume, fills, start, STRAT_AVELLANEDA_STOIKOV, True)


@njit(cache=True, error_model="numpy")
def _run_symmetric_touch(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_SYMMETRIC, False)


@njit(cache=True, error_model="numpy")
def _run_symmetric_instant(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_SYMMETRIC, True)


@njit(cache=True, error_model="numpy")
def _run_inventory_skew_touch(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_INVENTORY_SKEW, False)


@njit(cache=True, error_model="numpy")
def _run_inventory_skew_instant(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_INVENTORY_SKEW, True)


@njit(cache=True, error_model="numpy")
def _run_avellaneda_stoikov_touch(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_AVELLANEDA_STOIKOV, False)


@njit(cache=True, error_model="numpy")
def _run_avellaneda_stoikov_instant(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows):
    return _run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows,
                STRAT_AVELLANEDA_STOIKOV, True)


_STEPS = {
    (STRAT_SYMMETRIC, False): _step_symmetric_touch,
    (STRAT_SYMMETRIC, True): _step_symmetric_instant,
    (STRAT_INVENTORY_SKEW, False): _step_inventory_skew_touch,
    (STRAT_INVENTORY_SKEW, True): _step_inventory_skew_instant,
    (STRAT_AVELLANEDA_STOIKOV, False): _step_avellaneda_stoikov_touch,
    (STRAT_AVELLANEDA_STOIKOV, True): _step_avellaneda_stoikov_instant,
}
_RUNS = {
    (STRAT_SYMMETRIC, False): _run_symmetric_touch,
    (STRAT_SYMMETRIC, True): _run_symmetric_instant,
    (STRAT_INVENTORY_SKEW, False): _run_inventory_skew_touch,
    (STRAT_INVENTORY_SKEW, True): _run_inventory_skew_instant,
    (STRAT_AVELLANEDA_STOIKOV, False): _run_avellaneda_stoikov_touch,
    (STRAT_AVELLANEDA_STOIKOV, True): _run_avellaneda_stoikov_instant,
}
