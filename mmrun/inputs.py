"""What a user types, made into what the config means: command-line forms Hydra's grammar
refuses, hints for pairs written another way, and warnings for settings that will hardly trade.

`normalise_argv` runs in `mmrun.__main__.main()` before Hydra reads the command line. It
rewrites only forms Hydra would refuse outright, so a command that worked means the same:
- `exchange.sim.prices.PEPE=0.0000092`: a new base needs Hydra's `+` (add a key) and an
  existing one must not have it; written without a prefix it becomes `++` (add or override).
- `spread=0.2%` on a fraction key (FRACTION_KEYS): every number followed by `%` is divided by
  100 (`0.2%` -> `0.002`, also inside sweep lists, `choice(...)`, `range(...)`, `interval(...)`).
- `data.path=~/x.csv` (or any value that starts with `~/`): the home folder is expanded, as a
  shell would (Hydra's lexer refuses a leading `~`).
The rewritten overrides are what Hydra records in `.hydra/overrides.yaml`.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, List, Optional, Sequence

# keys whose value is a fraction (0.002 = 0.2 %): a `%` suffix is accepted on the command line
FRACTION_KEYS = frozenset({
    "spread",
    "sizing.order_size_pct",
    "sizing.max_inventory_exposure",
    "fills.participation",
    "fees.maker",
    "fees.taker",
    "exchange.maker_fee",
    "exchange.taker_fee",
    "strategy.level_spread_step",
    "strategy.level_size_step",
    "strategy.min_profit_threshold",
    "strategy.target_base_share",
    "strategy.rebalance_threshold",
    "strategy.price_skew",
    "strategy.size_skew",
    "strategy.min_spread",
})
FREE_MAPS = ("exchange.sim.prices.",)  # maps whose keys the user names (a new base is a new key)

_OVERRIDE = re.compile(r"^(?P<prefix>\+\+|\+|~)?(?P<key>[A-Za-z_][\w.\-/@]*)=(?P<value>.*)$", re.S)
_PERCENT = re.compile(r"(?<![\w.])(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)%")


def percent_to_fraction(text: str) -> str:
    """Every `<number>%` in text -> the number / 100, written exactly ('0.2%' -> '0.002',
    '0.1%,0.5%' -> '0.001,0.005', 'interval(0.05%,1%)' -> 'interval(0.0005,0.01)')."""

    def one(m: "re.Match[str]") -> str:
        try:
            value = Decimal(m.group("num")).scaleb(-2)
        except InvalidOperation:
            return m.group(0)
        out = format(value.normalize(), "f")
        return out if "." in out or "e" in out.lower() else out + ".0"

    return _PERCENT.sub(one, text)


def _expand_home(value: str) -> str:
    """'~/x.csv' -> '/home/me/x.csv'; also each item of a sweep list ('~/a.csv,~/b.csv')."""
    return re.sub(r"(^|,)(~[^,/]*)(?=/|,|$)", lambda m: m.group(1) + os.path.expanduser(m.group(2)), value)


def normalise_override(arg: str) -> str:
    """One command-line word, rewritten as the module docstring says (else returned unchanged)."""
    m = _OVERRIDE.match(arg)
    if not m:
        return arg
    prefix, key, value = m.group("prefix") or "", m.group("key"), m.group("value")
    if prefix == "~":  # deleting a key: nothing to rewrite
        return arg
    _check_key_length(key)
    if not prefix and any(key.startswith(p) for p in FREE_MAPS):
        prefix = "++"
    if key.lstrip("+") in FRACTION_KEYS and "%" in value:
        value = percent_to_fraction(value)
    if value.startswith("~"):
        value = _expand_home(value)
    return f"{prefix}{key}={value}"


MAX_KEY_CHARS = 200


def _check_key_length(key: str) -> None:
    """A key Hydra would look up as a file path: one too long fails there (ENAMETOOLONG) with
    a message about Hydra's own files; name it here instead."""
    from mmrun.errors import ConfigError
    from mmrun.limits import MAX_SYMBOL_CHARS

    for p in FREE_MAPS:
        name = key.lstrip("+")[len(p):] if key.lstrip("+").startswith(p) else None
        if name is not None and len(name) > MAX_SYMBOL_CHARS:
            raise ConfigError(f"{p}{name[:40]}...: a currency name is at most {MAX_SYMBOL_CHARS} characters")
    if len(key) > MAX_KEY_CHARS:
        raise ConfigError(f"{key[:60]}...: unknown config key ({len(key)} characters)")


def normalise_argv(argv: Sequence[str]) -> List[str]:
    """The command line's words with normalise_override applied to each `key=value` word.

    Flags and their arguments (`--multirun`, `--cfg job`, `-m`) are left alone.
    """
    return [a if a.startswith("-") else normalise_override(a) for a in argv]


# ---------------------------------------------------------------- pairs

# quote currencies tried when a pair is written without a separator (ETHUSDT), longest first
COMMON_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "DAI", "USD", "EUR", "GBP", "JPY", "TRY", "BRL",
                 "BTC", "ETH", "BNB")


def pair_candidates(text: str, quotes: Iterable[str] = ()) -> List[str]:
    """Ways `text` may have been meant as BASE/QUOTE: upper case, '-' or '_' as the separator,
    or no separator before a known quote currency ('ethusdt' -> ['ETH/USDT'])."""
    t = str(text).strip()
    up = t.upper()
    out: List[str] = []
    if "/" in up:
        out.append(up)
    for sep in ("-", "_", ":"):
        if "/" not in up and up.count(sep) == 1:
            out.append(up.replace(sep, "/"))
    if not any(c in up for c in "/-_:"):
        for q in sorted({str(q).upper() for q in quotes} | set(COMMON_QUOTES), key=len, reverse=True):
            if up.endswith(q) and len(up) > len(q):
                out.append(f"{up[: -len(q)]}/{q}")
                break
    return [c for c in dict.fromkeys(out) if c != t]


def pair_hint(text: str, listed: Sequence[str], quotes: Iterable[str] = ()) -> Optional[str]:
    """The listed pair `text` most likely means, or None: the first candidate (pair_candidates)
    that is listed, else the closest listed spelling of the upper-cased text."""
    listed_set = set(listed)
    for cand in pair_candidates(text, quotes):
        if cand in listed_set:
            return cand
    close = difflib.get_close_matches(str(text).upper(), list(listed), n=1, cutoff=0.8)
    return close[0] if close else None


def unlisted_sim_pair(key: str, pair: str, base: str, quote: str, prices: Sequence[str], quotes: Sequence[str]) -> str:
    """The one-line message for a pair the simulated exchange does not list: what is missing
    (the base, the quote or both), what is listed, and the override that adds it."""
    if not quotes:
        return ("exchange.sim.quotes=[] lists no quote currency, so no pair can trade: list at least one, "
                "e.g. exchange.sim.quotes=[USDT,USDC,USD]")
    listed = [f"{b}/{q}" for b in prices for q in quotes]
    hint = pair_hint(pair, listed, quotes)
    if hint is not None:
        return f"{key}={pair} is not listed on the simulated exchange; did you mean {hint}?"
    shown = ", ".join(f"{b}/{quotes[0]}" for b in prices)
    missing = []
    if base not in prices:
        missing.append(f"add the base with exchange.sim.prices.{base}=PRICE (its start mid, in {quote})")
    if quote not in quotes:
        missing.append(f"add the quote currency with exchange.sim.quotes=[{','.join(list(quotes) + [quote])}]")
    what = " and ".join(
        w for w, bad in ((f"base {base}", base not in prices), (f"quote currency {quote}", quote not in quotes)) if bad
    )
    return (f"{key}={pair} is not listed on the simulated exchange ({what} not listed): listed are {shown} "
            f"(quote currencies {', '.join(quotes)}); " + "; ".join(missing))


def exchange_hint(word: str, known: Sequence[str]) -> str:
    """'; did you mean 'binance'?' for a near spelling of a ccxt id, else ''.

    Closer than difflib's default (0.6): 'notanexchange' should not suggest 'coinbaseexchange'.
    A case or separator slip ('Binance', 'binance-us') is matched first.
    """
    w = str(word).lower().replace("-", "").replace("_", "").replace(" ", "")
    for k in known:
        if k.lower() == w:
            return f"; did you mean {k!r}?"
    close = difflib.get_close_matches(w, list(known), n=1, cutoff=0.8)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------- warnings

def _uses_spread(strategy: Any) -> bool:
    """Whether the strategy prices from the top-level `spread` (its registration says so)."""
    try:
        from mmrun.strategies import resolve

        return bool(resolve(strategy)[0].uses_spread)
    except Exception:  # a hand-made config (tests) or a strategy that cannot be loaded here
        return getattr(strategy, "name", "") != "avellaneda_stoikov"


FAR_SPREAD = 0.05  # a total spread this wide or wider quotes 2.5 % or more from the mid


def reach_warnings(cfg: Any) -> List[str]:
    """Settings that run but can hardly ever fill: quotes far from the mid (spread given as a
    percentage by mistake, e.g. spread=0.2 for 0.2 %)."""
    st = cfg.strategy
    if not _uses_spread(st):
        return []  # the strategy prices its own spread: the top-level `spread` is not used
    spread = float(cfg.spread)
    if spread < FAR_SPREAD:
        return []
    half = spread / 2 * 100
    return [
        f"spread={spread:g} quotes bids {half:.3g} % under the mid and asks {half:.3g} % over it: they fill only when "
        f"the price moves that far within one cycle, which may never happen (spread is a fraction: 0.002 = 0.2 %)"
    ]


def check_launcher_args(argv: Sequence[str]) -> None:
    """Launcher values on the command line that would fail inside the launcher, not in mmrun:
    `hydra.launcher.n_jobs` must be a whole number, not 0 (-1 = one job per core)."""
    from mmrun.errors import ConfigError

    for arg in argv:
        m = _OVERRIDE.match(arg)
        if not m or m.group("key") != "hydra.launcher.n_jobs":
            continue
        for item in m.group("value").split(","):
            try:
                n = int(item)
            except ValueError:
                n = None
            if n is None or n == 0 or n < -64 or n > 4096:
                raise ConfigError(
                    f"hydra.launcher.n_jobs={item} is out of range: allowed a whole number from 1 to 4096 "
                    "(jobs at a time), or -1 for one per core"
                )


# ---------------------------------------------------------------- the starting inventory

STARTS = ("quote", "target")


def check_start(cfg: Any) -> None:
    """run.start: `quote` (every run's default: all capital in quote) or `target` (capital split
    by strategy.target_base_share at the first mid), which needs a strategy with a target and
    the first mid before the run (the simulated exchange, or a backtest). Raises ConfigError."""
    from mmrun.errors import ConfigError

    start = cfg.run.get("start", "quote") if hasattr(cfg.run, "get") else getattr(cfg.run, "start", "quote")
    if start not in STARTS:
        raise ConfigError(f"run.start={start!r} is not allowed: choose one of {', '.join(STARTS)}")
    if start == "quote":
        return
    share = cfg.strategy.get("target_base_share") if hasattr(cfg.strategy, "get") else None
    if share is None:
        raise ConfigError(
            f"run.start=target needs a strategy with a target inventory (strategy.target_base_share: "
            f"inventory_skew, avellaneda_stoikov); strategy={cfg.strategy.name} has none"
        )
    if cfg.mode == "paper" and cfg.exchange.id != "sim":
        raise ConfigError("run.start=target needs the first mid before the run: use it on exchange=sim or in a backtest")


def start_balances(cfg: Any, capital: float, first_mid: Any) -> tuple:
    """(base, quote) a pair starts with: (0, capital) for run.start=quote; for run.start=target
    capital x target_base_share in base at the first mid (first_mid: a function returning it,
    called only then) and the rest in quote, so the starting value is still `capital`."""
    run = getattr(cfg, "run", None)
    start = run.get("start", "quote") if hasattr(run, "get") else getattr(run, "start", "quote")
    if start != "target":
        return 0.0, float(capital)
    share = float(cfg.strategy.target_base_share)
    mid = float(first_mid())
    if not (mid > 0 and math.isfinite(mid)):
        return 0.0, float(capital)
    return float(capital) * share / mid, float(capital) * (1.0 - share)
