"""What a strategy is: a config dataclass, a compiled anchor function and one `Strategy` registration.

A strategy module (built-in in mmrun/strategies/, or a user's own file anywhere on the Python
path) holds three things:

1. its config, a dataclass subclassing `StrategyConfig` whose fields are declared with `param`
   (default, unit, allowed range, optional title label);
2. its anchor, an `@njit` function called by the engine kernel every quote cycle:
       anchor(p, s, best_bid, best_ask, mid, base, quote, cycle)
           -> (bid_ref, bid_off, ask_ref, ask_off, buy_mult, sell_mult)
   p: the run's parameters, a record read by field name (every numeric config field, e.g.
      p.gamma, plus the engine's: p.spread, p.dt_s, p.capital, ... see engine.ENGINE_PARAMS);
   s: the run's state, a record; the strategy reads and writes its own `state` fields there
      (floats, 0 at the start) and reads the engine's (s.base is stale inside a bulk run: use
      the base and quote arguments);
   best_bid, best_ask, mid: this cycle's market, quote currency per base unit (NaN = unknown);
   base, quote: balances now (base units, quote currency); cycle: cycles stepped before this one;
   the result: each side's reference price and relative offset from it (bid = bid_ref x (1 -
      bid_off), ask = ask_ref x (1 + ask_off)) and size multipliers (1 = the configured size);
      the engine builds the levels, the tick grid and the balance checks around it (quoting.ladder);
3. `STRATEGY = Strategy(config=..., anchor=...)`, which registers it. From this one object come
   the config group's schema (built-ins) or the object Hydra instantiates (`_target_`), the
   validation of every field, the compiled kernel variant and the report's title.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from mmrun.errors import ConfigError

MAX_LEVELS = 50


def param(default: Any, unit: str, *, low: Optional[float] = None, high: Optional[float] = None,
          low_open: bool = False, high_open: bool = False, choices: Tuple[str, ...] = (),
          title: Optional[Tuple[str, str]] = None, kernel: bool = True) -> Any:
    """A strategy config field: its default, its unit (docs and error messages), the allowed range
    [low, high] (low_open / high_open exclude the end; None = unbounded; non-finite values are
    always refused), or the allowed `choices` of a text field (the kernel sees the choice's
    index), and `title`: (label, format) to show it in report.png's title, e.g. ("γ", "{:g}").
    kernel=False keeps the field out of the kernel's parameters."""
    meta = {"unit": unit, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
            "choices": tuple(choices), "title": title, "kernel": kernel}
    return field(default=default, metadata=meta)


@dataclass
class StrategyConfig:
    """Keys every strategy has (conf/strategy/*.yaml). A strategy's config subclasses this."""

    name: str = param("symmetric", "the strategy's name, as in strategy=NAME", kernel=False)
    levels: int = param(1, "quotes per side", low=1, high=MAX_LEVELS)
    level_spread_step: float = param(0.001, "fraction of price added to the pair's total spread per further level",
                                     low=0.0, high=1.0, high_open=True)
    level_size_step: float = param(0.0, "fraction of the first level's size added per further level", low=0.0,
                                   high=10.0)
    min_profit_threshold: float = param(
        0.0, "fraction of mid: no pair whose spread after two maker fees is below it; 0 = off", low=0.0, high=1.0,
        high_open=True)


# strategy key ("module:QualName" of its config class) -> Strategy
_REGISTRY: Dict[str, "Strategy"] = {}


def _built_in_modules() -> Dict[str, str]:
    """Built-in name -> module: every module of this package but base (a new built-in strategy is
    its file here, and its conf/strategy/<name>.yaml)."""
    import pkgutil
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    return {m.name: f"mmrun.strategies.{m.name}" for m in sorted(pkgutil.iter_modules([here]), key=lambda m: m.name)
            if m.name != "base" and not m.name.startswith("_")}


BUILT_IN = _built_in_modules()  # built-in name -> module holding its STRATEGY


@dataclass(frozen=True)
class Strategy:
    """One strategy's registration (see the module docstring).

    config: its config dataclass (a StrategyConfig subclass, fields declared with `param`);
    anchor: its @njit anchor function;
    state: names of the float state fields it keeps between cycles (0 at the start);
    derive: config -> {kernel field: float}, parameters computed once per run (e.g. a constant
        term of a formula); they join the config's numeric fields in the kernel's parameters;
    uses_spread: it prices from the top-level `spread` key (the report's title shows it).
    """

    config: type
    anchor: Callable
    state: Tuple[str, ...] = ()
    derive: Optional[Callable[[Any], Dict[str, float]]] = None
    uses_spread: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.config, type) and issubclass(self.config, StrategyConfig)):
            raise TypeError(f"Strategy(config=...) needs a StrategyConfig subclass, got {self.config!r}")
        if not hasattr(self.anchor, "py_func"):
            raise TypeError(f"Strategy(anchor=...) needs a numba @njit function, got {self.anchor!r}")
        _REGISTRY[self.key] = self

    @property
    def name(self) -> str:
        return self.config.__dataclass_fields__["name"].default

    @property
    def key(self) -> str:
        """'module:QualName' of the config class: what `_target_` names, and the kernel's key."""
        return f"{self.config.__module__}:{self.config.__qualname__}"

    @property
    def source_file(self) -> str:
        """The file defining the anchor (hashed into the kernel's cache key)."""
        return inspect.getsourcefile(self.anchor.py_func) or ""

    @property
    def source_files(self) -> Tuple[str, ...]:
        """Every file of code the anchor reaches, sorted (all hashed into the kernel's cache key, so
        an edit to any of them compiles the kernel afresh): the anchor's file and those of the
        @njit functions it names (`from helpers import f`, or `helpers.f` after `import helpers`),
        and theirs in turn; modules named as a whole count with their file. Files of Python itself
        and of installed packages (numpy, math, ...) are left out, but for the anchor's own: their
        versions key the cache."""
        return _reachable_files(self.anchor.py_func)

    def kernel_values(self, cfg: Any) -> Dict[str, float]:
        """The kernel's strategy parameters from a config instance: every numeric field (a choice's
        index for text fields with choices), then `derive`'s."""
        out: Dict[str, float] = {}
        for f in dataclasses.fields(self.config):
            meta = field_meta(self.config, f.name)
            if not meta.get("kernel", True):
                continue
            value = getattr(cfg, f.name)
            choices = meta.get("choices") or ()
            if choices:
                value = choices.index(value)
            if isinstance(value, str):
                continue  # text without choices: not for the kernel
            out[f.name] = float(value)
        if self.derive is not None:
            out.update({k: float(v) for k, v in self.derive(cfg).items()})
        return out


def _reachable_files(fn: Callable) -> Tuple[str, ...]:
    import sysconfig
    import types
    from pathlib import Path

    paths = sysconfig.get_paths()
    installed = tuple(str(Path(paths[k]).resolve()) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths)

    def own(file: Optional[str]) -> Optional[str]:
        if not file or not file.endswith(".py"):
            return None
        file = str(Path(file).resolve())
        return None if file.startswith(installed) else file

    files, seen, todo = set(), set(), [fn]
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        source = inspect.getsourcefile(f)
        file = (source or "") if f is fn else own(source)  # the anchor's own file always counts
        if file is None:
            continue
        files.add(file)
        names = f.__code__.co_names  # the globals it reads, and the attributes it reads off them
        for name in names:
            obj = f.__globals__.get(name)
            if hasattr(obj, "py_func"):
                todo.append(obj.py_func)
            elif isinstance(obj, types.ModuleType) and own(getattr(obj, "__file__", None)):
                files.add(own(obj.__file__))
                todo.extend(getattr(obj, a).py_func for a in names if hasattr(getattr(obj, a, None), "py_func"))
    return tuple(sorted(files))


def built_in(name: str) -> Strategy:
    """The built-in strategy called `name`. Raises ConfigError naming the choices."""
    import importlib

    if name not in BUILT_IN:
        raise ConfigError(f"strategy.name={name!r} is not a built-in strategy: choose one of {', '.join(BUILT_IN)}, "
                          "or give strategy._target_ (a user strategy's config class, see README 'Writing a strategy')")
    return importlib.import_module(BUILT_IN[name]).STRATEGY


def of_key(key: str) -> Strategy:
    """The registered strategy with this key ('module:QualName'), importing its module if needed."""
    if key not in _REGISTRY:
        import importlib

        importlib.import_module(key.partition(":")[0])
    return _REGISTRY[key]


def of_config_class(cls: type) -> Strategy:
    """The strategy a config class belongs to. Raises ConfigError when it was never registered."""
    key = f"{cls.__module__}:{cls.__qualname__}"
    spec = _REGISTRY.get(key)
    if spec is None:
        raise ConfigError(f"strategy._target_={cls.__module__}.{cls.__qualname__} is not a registered strategy: "
                          "its module must define STRATEGY = Strategy(config=..., anchor=...)")
    return spec


def resolve(node: Any) -> Tuple[Strategy, Any]:
    """(strategy, config instance) from a `strategy` config node (a DictConfig, a dict, a config
    instance or a name). A node with `_target_` is built by Hydra's instantiate (a user strategy:
    its module must be importable, e.g. on PYTHONPATH); otherwise `name` picks a built-in.
    Every field is checked (`check`). Raises ConfigError naming the key."""
    if isinstance(node, StrategyConfig):
        spec = of_config_class(type(node))
        check(spec, node)
        return spec, node
    if isinstance(node, str):
        spec = built_in(node)
        cfg = spec.config()
        return spec, cfg
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    # A run resolves its strategy node several times (validation, warnings, parameters) and a
    # sweep worker runs many jobs with few distinct strategy nodes: the checked result is kept
    # per node content (a config instance is not changed after it is built).
    key = repr(sorted(data.items(), key=lambda kv: str(kv[0])))
    hit = _RESOLVED.get(key)
    if hit is not None:
        return hit
    hit = _resolve_data(data)
    if len(_RESOLVED) >= 256:
        _RESOLVED.pop(next(iter(_RESOLVED)))
    _RESOLVED[key] = hit
    return hit


_RESOLVED: Dict[str, Tuple[Strategy, Any]] = {}  # resolve()'s results by node content


def _resolve_data(data: Dict[str, Any]) -> Tuple[Strategy, Any]:
    """resolve() of a plain dict (consumed)."""
    target = data.pop("_target_", None)
    if target is None:
        spec = built_in(str(data.get("name", "symmetric")))
    else:
        cls = _import_target(str(target))
        spec = of_config_class(cls)
    known = {f.name for f in dataclasses.fields(spec.config)}
    for key in data:
        if key not in known:
            hint = _did_you_mean(key, sorted(known))
            raise ConfigError(f"strategy.{key}: unknown key for strategy {spec.name} "
                              f"(allowed: {', '.join(sorted(known))}){hint}")
    try:
        cfg = _instantiate(spec, target, data)
    except ConfigError:
        raise
    except Exception as exc:
        key = getattr(exc, "full_key", None)
        msg = getattr(exc, "msg", None) or _first_line(exc)
        where = f"strategy.{key}" if key else f"strategy ({spec.name})"
        raise ConfigError(f"{where}: {msg.splitlines()[0] if msg else type(exc).__name__}") from None
    check(spec, cfg)
    return spec, cfg


def _instantiate(spec: Strategy, target: Optional[str], data: Dict[str, Any]) -> Any:
    """The config instance; through hydra.utils.instantiate when the node names a `_target_`."""
    from omegaconf import OmegaConf

    # typed by the schema first: a value of the wrong type fails here, naming the key
    typed = OmegaConf.merge(OmegaConf.structured(spec.config), data)
    if target is None:
        return OmegaConf.to_object(typed)
    from hydra.utils import instantiate

    plain = OmegaConf.to_container(typed)
    return instantiate({"_target_": target, **plain}, _convert_="all")


def _import_target(target: str) -> type:
    from hydra.utils import get_class

    try:
        return get_class(target)
    except Exception as exc:
        raise ConfigError(
            f"strategy._target_={target}: cannot import it ({_first_line(exc)}); the strategy's module must be on "
            "the Python path (e.g. PYTHONPATH=FOLDER, as examples/user_strategy/run.sh does)"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def _did_you_mean(word: str, choices: list) -> str:
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def field_meta(cls: type, name: str) -> Dict[str, Any]:
    """The `param` metadata of a config field, from the nearest class declaring it with `param`
    (a subclass may change a default with a plain value and keep the unit and range)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            return dict(f.metadata)
    return {}


def check(spec: Strategy, cfg: Any) -> None:
    """Every field of the strategy's config against its `param` range or choices. Raises ConfigError."""
    for f in dataclasses.fields(spec.config):
        value = getattr(cfg, f.name)
        meta = field_meta(spec.config, f.name)
        unit = meta.get("unit", "")
        choices = meta.get("choices") or ()
        if choices:
            if value not in choices:
                raise ConfigError(f"strategy.{f.name}={value!r} is not allowed: choose one of {', '.join(choices)}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = meta.get("low"), meta.get("high")
        ok = math.isfinite(value)
        if low is not None:
            ok = ok and (value > low if meta.get("low_open") else value >= low)
        if high is not None:
            ok = ok and (value < high if meta.get("high_open") else value <= high)
        if not ok:
            raise ConfigError(f"strategy.{f.name}={value} is out of range: allowed {_range_text(meta)} ({unit})")


def _range_text(meta: Dict[str, Any]) -> str:
    low, high = meta.get("low"), meta.get("high")
    if low is not None and high is not None:
        return f"{'(' if meta['low_open'] else '['}{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if meta['low_open'] else '>='} {low:g}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '<='} {high:g}"
    return "a finite number"


def title_params(spec: Strategy, cfg: Any) -> list:
    """'label value' texts of the fields declared with a title, in field order (report.png)."""
    out = []
    for f in dataclasses.fields(spec.config):
        title = field_meta(spec.config, f.name).get("title")
        if title:
            label, fmt = title
            out.append(f"{label} {fmt.format(getattr(cfg, f.name))}")
    return out


def registered() -> Dict[str, Strategy]:
    """Every strategy registered in this process, by key (the built-ins once imported)."""
    for module in BUILT_IN.values():
        if module not in sys.modules:
            import importlib

            importlib.import_module(module)
    return dict(_REGISTRY)
