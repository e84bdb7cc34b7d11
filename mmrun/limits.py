"""The finite, sane range of every numeric config key outside the strategies, as one table.

`check_ranges(cfg)` raises ConfigError naming the first key out of its range and what is
allowed; NaN and infinities are out of every range. The bounds keep a run finite and its
numbers meaningful (a cycle of at least a millisecond, a simulated market of at most a year,
prices that stay positive), and they keep memory bounded: the simulated market is generated
in chunks whose size grows with the trade prints per cycle, and a run keeps one equity row per
cycle, so both are capped (MAX_PRINTS_PER_CYCLE, MAX_SIM_CYCLES).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, List, Optional

from mmrun.errors import ConfigError

YEAR_S = 366 * 24 * 3600  # a leap year, seconds
MAX_SIM_CYCLES = 10_000_000  # exchange.sim.duration_s / intervals.quote_s (a year of 5 s cycles is 6.3 M)
MAX_PRINTS_PER_CYCLE = 1000  # exchange.sim.trade_rate_per_s x intervals.quote_s, on average
MAX_SYMBOL_CHARS = 32  # one currency of a pair, or a key of exchange.sim.prices
MIN_PRICE, MAX_PRICE = 1e-12, 1e12  # a simulated start mid, quote currency
FIRST_YEAR, LAST_YEAR = 1970, 2200  # a simulated market's start instant


@dataclass(frozen=True)
class Range:
    """lo..hi (either end open when its *_open flag is set); `allowed` is the message's text."""

    lo: float
    hi: float
    allowed: str
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below


def _fraction(allowed: str = "a fraction in (0, 1]") -> Range:
    return Range(0.0, 1.0, allowed, lo_open=True)


_RATE = Range(0.0, 1.0, "a rate in [0, 1)", hi_open=True)

# key -> range; a key whose value is None (an optional key left unset) is not checked.
RANGES = {
    "spread": Range(0.0, 1.0, "0 < spread < 1", lo_open=True, hi_open=True),
    "capital": Range(0.0, 1e15, "> 0 and at most 1e15 (quote currency)", lo_open=True),
    "seed": Range(0, 2**63 - 1, "a whole number from 0 to 2^63 - 1"),
    "sizing.order_size_pct": _fraction(),
    "sizing.max_inventory_exposure": _fraction(),
    "fills.participation": _fraction(),
    "fees.maker": _RATE,
    "fees.taker": _RATE,
    "intervals.quote_s": Range(0.001, 86400.0, "from 0.001 to 86400 seconds (a millisecond to a day)"),
    "intervals.error_s": Range(0.0, 86400.0, "from 0 to 86400 seconds"),
    "run.max_ticks": Range(1, 10**12, "a whole number from 1 to 10^12, or null"),
    "exchange.maker_fee": _RATE,
    "exchange.taker_fee": _RATE,
    "exchange.timeout_s": Range(0.0, 600.0, "> 0 and at most 600 seconds", lo_open=True),
    "exchange.retry_attempts": Range(1, 100, "a whole number from 1 to 100"),
    "exchange.retry_base_s": Range(0.0, 600.0, "from 0 to 600 seconds"),
    "exchange.retry_max_wait_s": Range(0.0, 3600.0, "from 0 to 3600 seconds"),
    "exchange.max_data_age_s": Range(0.0, 86400.0, "> 0 and at most 86400 seconds", lo_open=True),
    "exchange.sim.duration_s": Range(0.0, YEAR_S, f"> 0 and at most {YEAR_S} seconds (366 days)", lo_open=True),
    "exchange.sim.volatility_annual": Range(0.0, 10.0, "from 0 to 10 (1000 % a year)"),
    "exchange.sim.trade_rate_per_s": Range(0.0, 1000.0, "> 0 and at most 1000 prints a second", lo_open=True),
    "exchange.sim.sweep_bps": Range(0.0, 1000.0, "from 0 to 1000 bps"),
    "exchange.sim.trade_notional": Range(0.0, 1e12, "> 0 and at most 1e12 (quote currency)", lo_open=True),
    "exchange.sim.spread_ticks": Range(1, 1000, "a whole number from 1 to 1000 (a tick is about 1e-5 of the price)"),
    "exchange.sim.default_price": Range(MIN_PRICE, MAX_PRICE, f"from {MIN_PRICE:g} to {MAX_PRICE:g} (quote currency)"),
    "sweep.top": Range(1, 100_000, "a whole number from 1 to 100000"),
}


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if node is None:
            return None
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
    return node


def _number(key: str, value: Any) -> Optional[float]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}={value!r} is not a number") from None


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def check_ranges(cfg: Any, keys: Optional[List[str]] = None) -> None:
    """Every key of RANGES (or of `keys`) present in cfg within its range, and the simulated
    exchange's cross-key bounds; raises ConfigError naming the first that is not."""
    for key in keys or RANGES:
        rng = RANGES[key]
        raw = _get(cfg, key)
        value = _number(key, raw)
        if value is not None and not rng.holds(value):
            raise ConfigError(f"{key}={_fmt(raw)} is out of range: allowed {rng.allowed}")
    if keys is None:
        check_sim(cfg)


def check_sim(cfg: Any) -> None:
    """The simulated exchange: start prices, start instant, and the market's size in cycles and prints."""
    sim = _get(cfg, "exchange.sim")
    if sim is None:
        return
    prices = _get(cfg, "exchange.sim.prices")
    for base, price in dict(prices or {}).items():
        key = f"exchange.sim.prices.{base}"
        if len(str(base)) > MAX_SYMBOL_CHARS:
            raise ConfigError(f"exchange.sim.prices.{str(base)[:40]}...: a currency name is at most "
                              f"{MAX_SYMBOL_CHARS} characters")
        value = _number(key, price)
        if value is None or not Range(MIN_PRICE, MAX_PRICE, "").holds(value):
            raise ConfigError(f"{key}={price} is out of range: allowed a start mid from {MIN_PRICE:g} to "
                              f"{MAX_PRICE:g} (quote currency)")
    start = _get(cfg, "exchange.sim.start")
    if start is not None:
        from mmrun.market.sim import parse_instant_ms

        ms = parse_instant_ms(start, "exchange.sim.start")
        first, last = (int(datetime(y, 1, 1, tzinfo=timezone.utc).timestamp() * 1000) for y in (FIRST_YEAR, LAST_YEAR))
        if not first <= ms < last:
            raise ConfigError(f"exchange.sim.start={start} is out of range: allowed an instant from "
                              f"{FIRST_YEAR}-01-01 to before {LAST_YEAR}-01-01 (UTC)")
    quote_s = _number("intervals.quote_s", _get(cfg, "intervals.quote_s"))
    duration = _number("exchange.sim.duration_s", _get(cfg, "exchange.sim.duration_s"))
    rate = _number("exchange.sim.trade_rate_per_s", _get(cfg, "exchange.sim.trade_rate_per_s"))
    if not quote_s or _get(cfg, "exchange.id") != "sim":
        return
    if duration is not None and duration / quote_s > MAX_SIM_CYCLES:
        raise ConfigError(
            f"exchange.sim.duration_s={duration:g} with intervals.quote_s={quote_s:g} is {duration / quote_s:,.0f} "
            f"cycles: allowed at most {MAX_SIM_CYCLES:,} (shorten the market or lengthen the cycle)"
        )
    if rate is not None and rate * quote_s > MAX_PRINTS_PER_CYCLE:
        raise ConfigError(
            f"exchange.sim.trade_rate_per_s={rate:g} with intervals.quote_s={quote_s:g} is {rate * quote_s:,.0f} "
            f"trade prints a cycle: allowed at most {MAX_PRINTS_PER_CYCLE:,} on average"
        )


# the last instant a run can stamp (ISO-8601 years have four digits), ms since the epoch
LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def check_market_times(ts_ms: Any, source: str) -> None:
    """Market rows stamped from 1970 to the end of year 9999 (what a run's ISO-8601 stamps can
    say); else a DataError naming the source and the first row outside (row 0 = the first)."""
    import numpy as np

    from mmrun.errors import DataError

    ts = np.asarray(ts_ms)
    bad = np.flatnonzero((ts < 0) | (ts > LAST_MS))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{source}: row {i}: its time {int(ts[i])} ms since the epoch (a candle's close) is outside "
            "1970-01-01 .. 9999-12-31T23:59:59.999Z"
        )
