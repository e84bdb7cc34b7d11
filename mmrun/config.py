"""Config schemas (registered with Hydra's ConfigStore) and the cross-field validate()."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mmrun.errors import ConfigError


@dataclass
class SimConfig:
    """The built-in simulated exchange's market (see conf/exchange/sim.yaml)."""

    start: str = "2026-01-01T00:00:00Z"
    duration_s: float = 14400.0
    volatility_annual: float = 0.8
    trade_rate_per_s: float = 2.0
    sweep_bps: float = 4.0
    trade_notional: float = 2000.0
    spread_ticks: int = 1
    default_price: float = 100.0
    prices: Dict[str, float] = field(default_factory=lambda: {"BTC": 60000.0, "ETH": 3000.0})
    quotes: List[str] = field(default_factory=lambda: ["USDT", "USDC", "USD"])


@dataclass
class ExchangeConfig:
    id: str = "sim"  # "sim" or a ccxt exchange id
    maker_fee: float = 0.001  # fraction of notional
    taker_fee: float = 0.001
    api_url: Optional[str] = None  # send requests to this host instead, keeping endpoint paths
    timeout_s: float = 10.0  # one HTTP request's timeout, seconds
    retry_attempts: int = 4  # tries per exchange call in all (1 = no retry), transient errors only
    retry_base_s: float = 0.5  # first backoff wait, seconds; doubles per retry (with jitter)
    retry_max_wait_s: float = 30.0  # cap on one backoff wait, seconds (a longer Retry-After ends the call)
    max_data_age_s: float = 30.0  # no quote on market data stamped longer ago than this, seconds
    fallbacks: List[str] = field(default_factory=list)  # market data sources if this one fails: ids, or ID@URL
    sim: SimConfig = field(default_factory=SimConfig)


@dataclass
class SizingConfig:
    name: str = "fraction"
    order_size_pct: float = 0.01  # fraction of capital per order
    max_inventory_exposure: float = 0.2  # cap on one order, fraction of capital


@dataclass
class IntervalsConfig:
    name: str = "default"
    quote_s: float = 5.0  # seconds between quote cycles
    error_s: float = 10.0  # seconds to wait after a failed cycle


@dataclass
class FillsConfig:
    model: str = "touch"  # touch | instant
    participation: Optional[float] = None  # max fraction of interval volume per fill
    latency_ms: float = 0.0  # order-entry latency: a quote placed at t rests (can fill) from t + latency_ms


@dataclass
class FeesConfig:
    maker: float = MISSING
    taker: float = MISSING


@dataclass
class RunConfig:
    max_ticks: Optional[int] = None
    log_quotes: Optional[bool] = None
    start: str = "quote"  # quote: all capital in quote | target: split by strategy.target_base_share at the first mid


@dataclass
class DataConfig:
    path: Optional[str] = None  # candles, trades or a paper run's market.parquet (mmrun.market.formats)
    quotes: Optional[str] = None  # top-of-book file for a trades data.path (Tardis quotes, Binance bookTicker, ...)
    kind: str = "candles"  # what a backtest downloads through ccxt: candles | trades
    timeframe: str = "1m"  # candle size for downloads (a ccxt timeframe)
    since: Optional[str] = None  # download start / file slice start, ISO-8601 date or instant (UTC)
    until: Optional[str] = None  # download end / file slice end (exclusive), ISO-8601; null = now / the file's end
    cache_dir: Optional[str] = None  # downloaded-data cache; null = ~/.cache/mmrun
    repair: List[str] = field(default_factory=list)  # fixes applied instead of failing: sort, dedupe
    max_gap_s: Optional[float] = None  # a longer hole in the data pulls the quotes, seconds; null = 3 x the usual spacing
    tick: Optional[float] = None  # price grid of a data file, quote currency; null = from the data or market.json
    lot: Optional[float] = None  # amount grid of a data file, base units; null = from the data or market.json


@dataclass
class SweepConfig:
    """How a sweep ranks its jobs (mmrun/sweep.py) and what each job returns to Hydra's sweeper."""

    objective: str = "total_return_pct"  # a numeric summary.json field (OBJECTIVES)
    direction: str = "maximize"  # maximize | minimize: which end of the objective ranks first
    top: int = 10  # leaderboard rows printed when a sweep ends; with lean outputs, also re-run into full folders
    outputs: str = "lean"  # lean: a job folder keeps .hydra/, summary.json, events.parquet, its log | full: every file
    holdout: float = 0.0  # backtests: fraction of the data's time span kept out of the search, at its end (0 = off)
    folds: int = 0  # backtests: walk-forward folds over the searched span (0 = off); mmrun/validation.py
    fold_window: str = "anchored"  # anchored: train on every earlier block | rolling: on the block before


@dataclass
class Config:
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    # a strategy's own schema (mmrun.strategies) types the node: a built-in's through its
    # conf/strategy/<name>.yaml defaults list, a user strategy's when validate() instantiates it
    strategy: Any = field(default_factory=lambda: {"name": "symmetric"})
    sizing: SizingConfig = field(default_factory=SizingConfig)
    intervals: IntervalsConfig = field(default_factory=IntervalsConfig)
    fills: FillsConfig = field(default_factory=FillsConfig)
    pair: str = "BTC/USDT"
    pairs: Optional[List[str]] = None
    spread: float = 0.002
    capital: float = 10000.0
    seed: int = 42
    mode: str = "paper"
    fees: FeesConfig = field(default_factory=FeesConfig)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def register() -> None:
    from mmrun.strategies import BUILT_IN, built_in

    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    # each built-in strategy's own schema, named in its conf/strategy/<name>.yaml defaults list, so
    # a key of another strategy fails at composition like any unknown key
    for name in BUILT_IN:
        cs.store(name=f"strategy_{name}_schema", node=built_in(name).config)


MODES = ("paper", "backtest")
FILL_MODELS = ("touch", "instant")  # mmrun.engine.FILL_MODELS
SIZINGS = ("fraction",)
DATA_REPAIRS = ("sort", "dedupe")  # mmrun.market.history.REPAIRS
DATA_KINDS = ("candles", "trades")
_SYMBOL = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_PAIR_RE = re.compile(rf"^({_SYMBOL})/({_SYMBOL})(?::({_SYMBOL}))?$")


def parse_pair(text: str, key: str = "pair") -> tuple[str, str]:
    """'BTC/USDT' -> ('BTC', 'USDT'); anything else is a ConfigError naming the key."""
    from mmrun.inputs import pair_candidates
    from mmrun.limits import MAX_SYMBOL_CHARS

    m = _PAIR_RE.match(str(text))
    if not m:
        cands = pair_candidates(str(text))
        hint = f"; did you mean {cands[0]}?" if cands and _PAIR_RE.match(cands[0]) else ""
        raise ConfigError(
            f"{key}={str(text)[:80]!r} is not a pair: write BASE/QUOTE, e.g. BTC/USDT "
            f"(letters, digits, '.', '_' or '-' on each side){hint}"
        )
    if any(len(part or "") > MAX_SYMBOL_CHARS for part in m.groups()):
        raise ConfigError(f"{key}={str(text)[:40]}...: a currency name is at most {MAX_SYMBOL_CHARS} characters")
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class PairSpec:
    """One market to make: the pair and the capital (quote currency) it starts with."""

    pair: str
    capital: float


def pair_specs(cfg: Any) -> List[PairSpec]:
    """The pairs this run trades: `pairs` if given (entries 'PAIR' or 'PAIR@CAPITAL'), else `pair`."""
    if cfg.pairs is None:
        parse_pair(cfg.pair)
        return [PairSpec(str(cfg.pair), float(cfg.capital))]
    if len(cfg.pairs) == 0:
        raise ConfigError("pairs=[] is empty: list at least one pair, e.g. pairs=[BTC/USDT,ETH/USDT]")
    specs = []
    for i, entry in enumerate(cfg.pairs):
        text = str(entry)
        pair, sep, cap = text.partition("@")
        parse_pair(pair, key=f"pairs[{i}]")
        capital = float(cfg.capital)
        if sep:
            try:
                capital = float(cap)
            except ValueError:
                raise ConfigError(
                    f"pairs[{i}]={text!r}: the capital after '@' must be a number, e.g. ETH/USDT@5000"
                ) from None
            _check(f"pairs[{i}] capital", capital, 0 < capital <= 1e15, "> 0 and at most 1e15 (quote currency)")
        specs.append(PairSpec(pair, capital))
    names = [s.pair for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"pairs lists {dup[0]} twice: each pair may appear once")
    return specs


def _check(key: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is out of range: allowed {allowed}")


def _one_of(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def _unknown_keys(cfg: Any, known_good: frozenset = frozenset()) -> None:
    """Keys added with '+key=...' that the schema does not know (free-form maps excepted).
    known_good: top-level keys whose sections are known to pass (not walked again)."""
    from omegaconf import DictConfig, OmegaConf

    free = {"exchange.sim.prices", "strategy"}  # strategy: checked against its own schema (check_strategy)

    def walk(node: Any, schema: Any, prefix: str, skip: frozenset = frozenset()) -> None:
        allowed = [str(k) for k in schema.keys()]
        for key in node.keys():
            full = f"{prefix}{key}"
            if full in free or full == "hydra" or key in skip:
                continue
            if key not in allowed:
                raise ConfigError(f"{full}: unknown config key (allowed here: {', '.join(allowed)})")
            child, child_schema = node._get_node(key), schema._get_node(key)
            child_type = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
            if dataclasses.is_dataclass(child_type) and child_type is not OmegaConf.get_type(child_schema):
                child_schema = _schema(child_type)  # a group option's own schema (a strategy's keys)
            if isinstance(child, DictConfig) and isinstance(child_schema, DictConfig):
                if not (child._is_missing() or child._is_none() or child_schema._is_none()):
                    walk(child, child_schema, full + ".")

    if OmegaConf.is_config(cfg):
        walk(cfg, _schema(Config), "", known_good)


def check_unknown_keys(cfg: Any) -> None:
    """Raise ConfigError naming the first key of cfg (a DictConfig) the schema does not know: one
    added with '+key=...' (free-form maps excepted), as validate does."""
    _unknown_keys(cfg)


def keys_without_unknown(cfg: Any) -> frozenset:
    """The top-level keys of cfg (a DictConfig) whose sections pass the unknown-key check: a
    sweep's composer finds them once per template, and its jobs' checks skip the sections their
    value overrides leave as the template has them."""
    keys = list(cfg.keys())
    good = set()
    for key in keys:
        try:
            _unknown_keys(cfg, frozenset(k for k in keys if k != key))
        except ConfigError:
            continue
        good.add(key)
    return frozenset(good)


@functools.lru_cache(maxsize=None)
def _schema(node_type: type) -> Any:
    """A dataclass schema as a (read-only) config, built once per process: a sweep validates every job."""
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(node_type)
    OmegaConf.set_readonly(schema, True)
    return schema


class PlainConfig(dict):
    """A resolved config section as a plain dict read like the DictConfig it was made from
    (`cfg.sizing.order_size_pct`, `.get`, `in`, iteration): checks that read many keys read them
    at dict speed instead of resolving each through OmegaConf. Values are what attribute access
    gives (interpolations resolved, typed nodes converted); a key it lacks is looked up in the
    DictConfig, which raises its own error."""

    __slots__ = ("_source",)

    def __init__(self, items: Dict[str, Any], source: Any):
        super().__init__(items)
        self._source = source  # the DictConfig section, or a function returning it

    def _node(self) -> Any:
        src = self._source
        return src() if callable(src) else src

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            return getattr(self._node(), name)

    def get(self, key: Any, default: Any = None) -> Any:  # type: ignore[override]
        return self[key] if key in self else self._node().get(key, default)


def plain_config(cfg: Any, items: Optional[Callable[[], Optional[Dict[str, Any]]]] = None) -> Any:
    """cfg as a PlainConfig (OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True),
    or what `items` returns, when not None: the same container made another way), or cfg itself
    if it is not a DictConfig or does not resolve in full (a missing value, a broken
    interpolation): the checks then read it key by key and fail where they always did."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg
    made = items() if items is not None else None
    if made is None:
        try:
            made = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        except Exception:  # noqa: BLE001 - read key by key instead, failing as before
            return cfg
    return _plain_sections(made, cfg, ())


def _plain_sections(items: Dict[str, Any], root: Any, path: tuple) -> PlainConfig:
    """items' dicts as PlainConfig sections, its lists copied (items itself is left as it is)."""
    out = {}
    for key, value in items.items():
        if isinstance(value, dict):
            value = _plain_sections(value, root, path + (key,))
        elif isinstance(value, list):
            value = copy.deepcopy(value)
        out[key] = value
    return PlainConfig(out, root if not path else functools.partial(_section, root, path))


def _section(root: Any, path: tuple) -> Any:
    node = root
    for key in path:
        node = getattr(node, key)
    return node


# a sweep job's config and what its composer knows of it (hint_job), for validate
_job_hint: Optional[Tuple[Any, Callable[[], Optional[Dict[str, Any]]], frozenset]] = None


def hint_job(cfg: Any, items: Callable[[], Optional[Dict[str, Any]]], known_good: frozenset) -> None:
    """What a sweep's composer knows of a job config it made, for validate(cfg) to use (once):
    items() gives OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) (None: made
    in full), known_good the top-level keys whose sections pass the unknown-key check. The
    launcher gives it only when nothing may change cfg before the task validates it."""
    global _job_hint
    _job_hint = (cfg, items, known_good)


def _take_job_hint(cfg: Any) -> Tuple[Optional[Callable[[], Optional[Dict[str, Any]]]], frozenset]:
    global _job_hint
    hint, _job_hint = _job_hint, None
    if hint is None or hint[0] is not cfg:
        return None, frozenset()
    return hint[1], hint[2]


def validate(cfg: Any) -> List[PairSpec]:
    """Check ranges and cross-field rules; return the pairs to run. Raises ConfigError.

    The checks read a resolved plain copy (plain_config), the strategy's its DictConfig (its
    schema); the unknown-key check walks the DictConfig's nodes and their types."""
    from mmrun.limits import check_ranges

    items, known_good = _take_job_hint(cfg)
    _unknown_keys(cfg, known_good)
    raw, cfg = cfg, plain_config(cfg, items)
    check_ranges(cfg)  # every numeric key's finite range (mmrun/limits.py)
    _one_of("mode", cfg.mode, MODES)
    _one_of("fills.model", cfg.fills.model, FILL_MODELS)
    check_strategy(raw.strategy)
    _one_of("sizing.name", cfg.sizing.name, SIZINGS)
    from mmrun.inputs import check_start

    check_start(cfg)
    specs = pair_specs(cfg)
    ex = cfg.exchange
    if ex.id == "sim":
        sim = ex.sim
        for i, spec in enumerate(specs if not data_file_backtest(cfg) else ()):  # a data file: any BASE/QUOTE
            base, quote = parse_pair(spec.pair)
            if base not in sim.prices or quote not in sim.quotes:
                from mmrun.inputs import unlisted_sim_pair

                key = "pair" if cfg.pairs is None else f"pairs[{i}]"
                raise ConfigError(unlisted_sim_pair(key, spec.pair, base, quote, list(sim.prices), list(sim.quotes)))
    else:
        known = _ccxt_exchanges()
        if ex.id not in known:
            from mmrun.inputs import exchange_hint

            hint = exchange_hint(ex.id, known)
            raise ConfigError(
                f"exchange.id={ex.id!r} is not a known exchange: use 'sim' or a ccxt exchange id "
                f"(binance, coinbase, kraken, okx, bybit, ...){hint}"
            )
        for i, entry in enumerate(ex.fallbacks):
            fb_id = str(entry).partition("@")[0]
            if fb_id not in known:
                raise ConfigError(
                    f"exchange.fallbacks[{i}]={entry!r} is not a known exchange: write a ccxt id, or ID@URL"
                    f"{_exchange_hint(fb_id, known)}"
                )
    for i, fix in enumerate(cfg.data.repair or ()):
        _one_of(f"data.repair[{i}]", fix, DATA_REPAIRS)
    check_data(cfg)
    if cfg.mode == "backtest" and cfg.data.path is None and ex.id != "sim" and cfg.data.since is None:
        raise ConfigError(
            f"mode=backtest on exchange={ex.id} needs data.path=FILE (CSV or Parquet candles), or "
            "data.since=DATE (and optionally data.until=DATE) to download candles"
        )
    check_sweep(cfg.sweep)
    from mmrun.validation import check_mode

    check_mode(cfg)
    return specs


def data_file_backtest(cfg: Any) -> bool:
    """A backtest on a data file (data.path): the market is the file's, not an exchange listing."""
    return cfg.mode == "backtest" and cfg.data.path is not None


def check_data(cfg: Any) -> None:
    """The data.* keys and fills.latency_ms. Raises ConfigError."""
    d = cfg.data
    _one_of("data.kind", d.kind, DATA_KINDS)
    if d.max_gap_s is not None:
        _check("data.max_gap_s", d.max_gap_s, math.isfinite(d.max_gap_s) and d.max_gap_s > 0,
               "> 0 seconds, or null (three times the data's usual spacing)")
    for key in ("tick", "lot"):
        v = d.get(key) if hasattr(d, "get") else getattr(d, key)
        if v is not None:
            _check(f"data.{key}", v, math.isfinite(v) and v > 0, "> 0, or null (from the data)")
    lat = cfg.fills.get("latency_ms", 0.0) if hasattr(cfg.fills, "get") else cfg.fills.latency_ms
    cycle_ms = cfg.intervals.quote_s * 1000.0
    _check("fills.latency_ms", lat, math.isfinite(lat) and 0 <= lat < cycle_ms,
           f"0 <= latency_ms < the quote cycle ({cycle_ms:g} ms, intervals.quote_s): a quote must rest before it is replaced")
    if d.quotes is not None and d.path is None:
        raise ConfigError(f"data.quotes={d.quotes} needs data.path=TRADES_FILE: the quotes give the book to a trades file")
    if (cfg.mode == "backtest" and d.path is None and d.kind == "trades" and cfg.exchange.id == "sim"):
        raise ConfigError("data.kind=trades downloads public trades from a real exchange: pick one (exchange=binance ...) "
                          "with data.since=DATE, or give data.path=TRADES_FILE")


def check_strategy(st: Any) -> None:
    """The strategy's keys against its own schema and ranges (mmrun.strategies.resolve). Raises ConfigError."""
    from mmrun.strategies import resolve

    resolve(st)


def config_warnings(cfg: Any) -> List[str]:
    """Every warning a valid configuration deserves before it runs (logged by the runner)."""
    from mmrun.inputs import reach_warnings

    return strategy_warnings(cfg) + reach_warnings(cfg)


def strategy_warnings(cfg: Any) -> List[str]:
    """Configurations that run but will hardly quote: a fixed spread too thin for min_profit_threshold."""
    from mmrun.strategies import resolve

    spec, st = resolve(cfg.strategy)
    if not spec.uses_spread or not st.min_profit_threshold > 0:
        return []
    widest = cfg.spread + (st.levels - 1) * st.level_spread_step
    left = widest - 2 * cfg.fees.maker  # what a round trip at the widest level keeps, fraction of mid
    if left >= st.min_profit_threshold:
        return []
    return [
        f"strategy.min_profit_threshold={st.min_profit_threshold} is above what the widest pair keeps after two "
        f"maker fees ({widest:g} - 2 x {cfg.fees.maker:g} = {left:g}): quotes are placed only when the market's own "
        f"spread makes up the difference; widen spread or lower the threshold"
    ]


# Numeric summary.json fields a sweep can rank by (and an Optuna sweeper optimise).
OBJECTIVES = (
    "total_return_pct", "pnl", "final_value", "sharpe", "max_drawdown_pct", "trades", "buys", "sells",
    "volume_quote", "fees", "errors", "ticks", "final_quote", "final_base", "initial_value", "sortino",
    "pnl_vs_hold", "hold_value", "market_return_pct", "spread_captured_bps", "markout_1_bps", "markout_10_bps",
    "avg_inventory_base", "avg_inventory_share", "turnover", "fill_ratio", "gaps", "retries", "trades_incomplete",
)
DIRECTIONS = ("maximize", "minimize")
SWEEP_OUTPUTS = ("lean", "full")  # what a sweep job's folder keeps (sweep.outputs)


def check_sweep(sweep: Any) -> None:
    """The `sweep` section: a known objective, a direction, a positive leaderboard size. Raises ConfigError."""
    if sweep.objective not in OBJECTIVES:
        raise ConfigError(
            f"sweep.objective={sweep.objective!r} is not a summary metric: choose one of {', '.join(OBJECTIVES)}"
            + _did_you_mean(str(sweep.objective), list(OBJECTIVES))
        )
    _one_of("sweep.direction", sweep.direction, DIRECTIONS)
    _check("sweep.top", sweep.top, 1 <= sweep.top <= 100_000, "a whole number from 1 to 100000")
    _one_of("sweep.outputs", getattr(sweep, "outputs", "lean"), SWEEP_OUTPUTS)
    from mmrun.validation import check_settings

    check_settings(sweep)


def _ccxt_exchanges() -> List[str]:
    # imported only when a real exchange is named: ccxt is slow to import
    from mmrun.market.ccxt_feed import exchange_ids

    return exchange_ids()


def _exchange_hint(word: str, known: List[str]) -> str:
    from mmrun.inputs import exchange_hint

    return exchange_hint(word, known)


def _did_you_mean(word: str, choices: List[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
