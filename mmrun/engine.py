"""The per-cycle engine kernel (numba): resting quotes + next market interval -> fills, balances.

One cycle (mmrun/cycle.py) is the whole engine. The paper loop calls it once per cycle through
`step` (a `Stepper`, which resolves the variant once per run); the backtest calls it in bulk
through `run_bulk`, where the same cycle is inlined into a compiled loop. Both therefore produce the same fills from the same market rows. Each (strategy,
fill model) pair is its own compiled variant, made by `kernel` on first use and cached on disk.

Layouts:
- params: a record (numpy structured scalar, read by field name in compiled code) built by
  `make_params`: the engine's fields (ENGINE_PARAMS) and the strategy's (every numeric field of
  its config, and what it derives); its dtype's metadata names the strategy;
- state: a record built by `make_state`: balances and running totals (ENGINE_STATE), the count of
  quotes not placed by reason (`dropped_<reason>`, DROP_REASONS) and the strategy's own fields;
  both records view one-element arrays, which is what the compiled step is handed (`_array_of`);
- quotes: 2 x levels rows of (side, price, amount), row 2k the bid of level k and 2k + 1 its ask;
  amount 0 = empty slot. `empty_quotes(levels)` makes one;
- fills: rows of F_* columns, written by the kernel into an output buffer (`max_fills(levels)`
  rows per step: one fill per quote row at most, plus a spare row the kernel writes into).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.util
import math
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from mmrun.errors import ConfigError

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


class FillModel(enum.IntEnum):
    """How resting quotes fill (the `fills.model` key). A compile-time constant of each kernel variant."""

    TOUCH = 0  # a bid at p fills only if the market trades strictly below p before the next cycle; an ask, above
    INSTANT = 1  # the original loop: each quote fills at once when the balance covers it; nothing rests


FILL_MODELS = tuple(m.name.lower() for m in FillModel)


def parse_fill_model(name: str) -> FillModel:
    """The fill model called `name` (touch | instant). Raises ConfigError for any other name."""
    try:
        return FillModel[str(name).upper()]
    except KeyError:
        raise ConfigError(f"fills.model={name!r} is not allowed: choose one of {', '.join(FILL_MODELS)}") from None


# Why a quote was not placed, in the order the kernel checks (cycle.py counts the first that applies).
DROP_REASONS = (
    "zero_size",  # the strategy or sizing asked for nothing (no last price; a size multiplier of 0)
    "no_price",  # no price (the market unknown: NaN or <= 0)
    "min_profit",  # the pair's spread after two maker fees is below strategy.min_profit_threshold
    "lot",  # the amount rounds down to zero whole lots
    "min_amount",  # below the exchange's minimum order amount
    "min_notional",  # below the exchange's minimum order value
    "balance",  # the balance (left after the quotes before it) does not cover it
)
N_DROP_SLOTS = len(DROP_REASONS) + 1  # slot 0 counts the quotes placed

# The engine's parameters (all float64 in the record): name -> unit / meaning.
ENGINE_PARAMS = {
    "spread": "total quoted spread, fraction (strategies that use the top-level key)",
    "order_size_pct": "fraction of capital per order",
    "max_exposure": "cap on one order, fraction of capital",
    "capital": "quote currency, the sizing base",
    "fee_maker": "fraction of notional, charged in quote on every fill",
    "fill_model": "FillModel",
    "participation": "max fraction of interval volume per fill; 0 = no cap",
    "tick": "price grid (tick size), quote currency; 0 = none",
    "tick_units": "tick = tick_units / tick_scale (quoting.grid); 0 = none",
    "tick_scale": "a power of ten",
    "lot": "amount grid, base units: amounts are floored to it; 0 = none",
    "lot_units": "lot = lot_units / lot_scale; 0 = none",
    "lot_scale": "a power of ten",
    "min_amount": "exchange minimum order amount, base units; 0 = none",
    "min_notional": "exchange minimum order value, quote currency; 0 = none",
    "dt_s": "seconds per cycle",
}
# The engine's state: balances and running totals.
ENGINE_STATE = {
    "base": "base currency held, >= 0",
    "quote": "quote currency held, >= 0",
    "fees": "fees paid so far, quote currency",
    "volume": "traded notional so far, quote currency",
    "buys": "buy fills so far",
    "sells": "sell fills so far",
    "cycles": "cycles stepped so far",
}


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
    strategy: Any = "symmetric",
    dt_s: float = 5.0,
    lot: float = 0.0,
    min_amount: float = 0.0,
    min_notional: float = 0.0,
    **strategy_keys: Any,
) -> np.record:
    """The kernel's parameter record. Units as in ENGINE_PARAMS and the strategy's config.

    strategy: a built-in name, a strategy config instance (mmrun.strategies.resolve) or a
    `strategy` config node; strategy_keys override its fields (the rest keep the schema's
    defaults). Raises ConfigError for an unknown fill model or a field out of range, TypeError
    for a key the strategy does not have.
    """
    import dataclasses

    from mmrun.strategies import base as strategies

    spec, cfg = strategies.resolve(strategy)
    if strategy_keys:
        try:
            cfg = dataclasses.replace(cfg, **strategy_keys)
        except TypeError:
            known = sorted(f.name for f in dataclasses.fields(spec.config))
            bad = sorted(set(strategy_keys) - set(known))
            raise TypeError(f"make_params: strategy {spec.name} has no key {', '.join(bad)} (it has {', '.join(known)})")
        strategies.check(spec, cfg)
    from mmrun.quoting import grid

    tick_units, tick_scale = grid(tick)
    lot_units, lot_scale = grid(lot)
    values = dict(
        spread=spread, order_size_pct=order_size_pct, max_exposure=max_exposure, capital=capital, fee_maker=fee_maker,
        fill_model=float(parse_fill_model(fill_model)), participation=participation or 0.0, tick=tick,
        tick_units=tick_units, tick_scale=tick_scale, lot=lot, lot_units=lot_units, lot_scale=lot_scale,
        min_amount=min_amount, min_notional=min_notional, dt_s=dt_s,
    )
    own = spec.kernel_values(cfg)
    clash = sorted(set(own) & set(values))
    if clash:
        raise ValueError(f"strategy {spec.name}: its fields {', '.join(clash)} would shadow the engine's parameters")
    values.update(own)
    return _record(values, {"strategy": spec.key})


def make_state(base: float, quote: float, params: Any = None) -> np.record:
    """The kernel's state record: balances (base units, quote currency), zero totals and drop
    counts, and the strategy's own fields (0) when `params` (make_params) is given; a strategy
    that keeps state (e.g. avellaneda_stoikov) needs them."""
    values = {name: 0.0 for name in ENGINE_STATE}
    values.update({f"dropped_{r}": 0.0 for r in DROP_REASONS})
    values["base"] = base
    values["quote"] = quote
    if params is not None:
        for name in _strategy_of(params).state:
            values[name] = 0.0
    return _record(values, None)


def _record(values: Dict[str, float], metadata: Any) -> np.record:
    """A record viewing a one-element array of float64 fields (the kernel's step is handed that array: _array_of)."""
    fields = [(k, np.float64) for k in values]
    dtype = np.dtype(fields, metadata=metadata) if metadata else np.dtype(fields)
    rec = np.zeros(1, dtype).view(np.recarray)[0]
    for k, v in values.items():
        rec[k] = v
    return rec


def _array_of(rec: Any):
    """The one-element structured array a record (make_params, make_state) views, or None for a
    record that owns its data (e.g. a copy). The kernel's step takes params and state as these
    arrays: numba types and unboxes an array argument in a fraction of the time a record takes
    (about 0.4 us against 3 us per call, which a paper cycle would pay on every step); the bulk
    run, called once per backtest, takes the records."""
    # the array it was indexed from (not rec.base: a state record has a field called base); with
    # one element, the record is that element
    arr = np.void.__getattribute__(rec, "base")
    if isinstance(arr, np.ndarray) and arr.shape == (1,) and arr.dtype == rec.dtype:
        return arr.view(np.ndarray)
    return None


def _strategy_of(params: Any):
    from mmrun.strategies import base as strategies

    meta = params.dtype.metadata or {}
    if "strategy" not in meta:
        raise TypeError("params must come from engine.make_params")
    return strategies.of_key(meta["strategy"])


def quotes_dropped(state: Any) -> Dict[str, int]:
    """Quotes not placed so far, by reason (DROP_REASONS order), from a state record."""
    return {r: int(state[f"dropped_{r}"]) for r in DROP_REASONS}


def dropped_note(dropped: Dict[str, int]) -> str:
    """'balance 12, min_notional 3' from quotes_dropped's counts (reasons with none left out)."""
    return ", ".join(f"{r} {n}" for r, n in dropped.items() if n) or "none"


def levels_of(params: Any) -> int:
    """Quotes per side configured in params."""
    return int(params["levels"])


def empty_quotes(levels: int = 1) -> np.ndarray:
    """Quote rows for `levels` levels, all empty."""
    return np.zeros((QUOTE_SLOTS * levels, 3))


def max_fills(levels: int = 1) -> int:
    """Rows a step's fill buffer needs: one fill per quote row at most, plus a spare row."""
    return QUOTE_SLOTS * levels + 1


def best_quoted(quotes: np.ndarray) -> tuple[float, float]:
    """(highest bid, lowest ask) among (side, price, amount) rows with amount > 0; NaN for a side with none."""
    bid = ask = math.nan
    for side, price, amount in quotes.tolist():  # Python floats: a third of the time of numpy scalars
        if amount > 0.0:
            if side > 0 and not price <= bid:
                bid = price
            elif side < 0 and not price >= ask:
                ask = price
    return bid, ask


def best_placed(params: Any, quotes: np.ndarray, fills: np.ndarray, n: int) -> tuple[float, float]:
    """(best bid, best ask) a step placed: what rests after it, or under `instant` (where nothing
    rests) the quotes it executed (its n fills). NaN for a side with none."""
    if int(params["fill_model"]) == FillModel.INSTANT:
        return best_quoted(fills[:n, F_SIDE:F_AMOUNT + 1])
    return best_quoted(quotes)


# ------------------------------------------------------------------ the kernel variants

_KERNELS: Dict[Tuple[str, int, int], Any] = {}
_BEGIN = "# --- VARIANT"
_END = "# --- END VARIANT ---"
# What the kernel compiles from besides the strategy's files (hashed into the variant's name).
_SOURCES = ("mmrun.engine", "mmrun.cycle", "mmrun.quoting", "mmrun.sizing", "mmrun.strategies.base")


def kernel_dir() -> Path:
    """Where generated kernel variants and their numba caches live: $MMRUN_KERNEL_DIR, else
    $XDG_CACHE_HOME/mmrun/kernels (default ~/.cache/mmrun/kernels); a temporary folder when that
    cannot be written."""
    env = os.environ.get("MMRUN_KERNEL_DIR")
    if env:
        folder = Path(env)
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmrun" / "kernels"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        folder = Path(tempfile.gettempdir()) / f"mmrun-kernels-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def kernel(strategy: Any, model: FillModel):
    """The compiled module (functions `step` and `run`, see mmrun/cycle.py) for a strategy (a
    registered Strategy) and fill model, made on first use in this process.

    The variant's source is mmrun/cycle.py with the strategy's anchor and the fill model written
    in as constants; its file name carries a sha256 of that source and of every file the kernel
    compiles from (engine, cycle, quoting, sizing, strategies/base and Strategy.source_files: the
    strategy's file and those of the helpers its anchor calls), so an edit to any of them gives a
    new file, which numba compiles afresh: a cached kernel is never stale.
    """
    key = (strategy.key, int(model), id(strategy.anchor))  # a reloaded strategy module: a new anchor
    mod = _KERNELS.get(key)
    if mod is None:
        mod = _KERNELS[key] = _load_variant(strategy, FillModel(model))
    return mod


def _variant_source(strategy: Any, model: FillModel) -> str:
    template = Path(importlib.util.find_spec("mmrun.cycle").origin).read_text()
    head, sep, rest = template.partition(_BEGIN)
    _, sep2, tail = rest.partition(_END)
    if not (sep and sep2):
        raise RuntimeError("mmrun/cycle.py lost its VARIANT markers")
    fn = strategy.anchor.py_func
    if fn.__module__ == "__main__" or "<locals>" in fn.__qualname__:
        raise ConfigError(f"strategy {strategy.name}: its anchor must be a top-level function of an importable module")
    variant = (
        f"{_BEGIN} (generated by mmrun.engine.kernel: strategy {strategy.name}, fills={model.name.lower()}) ---\n"
        f"from {fn.__module__} import {fn.__qualname__} as ANCHOR  # noqa: E402\n\n"
        f"INSTANT = {model == FillModel.INSTANT}\n"
    )
    return head + variant + _END + tail


def _variant_stem(strategy: Any, model: FillModel, source: str) -> str:
    """The variant's file name (no suffix): strategy, fill model and a sha256 of its source and of
    every file the kernel compiles from (see `kernel`)."""
    import numba

    h = hashlib.sha256(source.encode())
    for name in _SOURCES:
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    for file in strategy.source_files:  # the anchor's file and the files of the code it calls
        data = Path(file).read_bytes() if file else b""
        h.update(len(data).to_bytes(8, "little") + data)
    h.update(f"numba {numba.__version__} numpy {np.__version__} python {platform.python_version()}".encode())
    return f"{_safe(strategy.name)}_{model.name.lower()}_{h.hexdigest()[:20]}"


def _load_variant(strategy: Any, model: FillModel):
    source = _variant_source(strategy, model)
    stem = _variant_stem(strategy, model, source)
    folder = kernel_dir()
    path = folder / f"{stem}.py"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(source)
        try:
            os.link(tmp, path)  # fails if another process wrote it first: keep theirs (and numba's cache of it)
        except FileExistsError:
            pass
        except OSError:
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    modname = f"_mmrun_kernel_{stem}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


def _kernel_for(params: Any, state: Any):
    strategy = _strategy_of(params)
    missing = [f for f in strategy.state if f not in (state.dtype.names or ())]
    if missing:
        raise TypeError(f"state lacks strategy {strategy.name}'s fields {', '.join(missing)}: "
                        "make it with engine.make_state(base, quote, params)")
    return kernel(strategy, FillModel(int(params["fill_model"])))


def step(params, state, quotes, bid, ask, last, low, high, volume, fills, start=0):
    """One quote cycle at a market row. Writes fills to fills[start:]; returns how many.

    See mmrun/cycle.py (_cycle): resting quotes meet this row's interval (the fill model), then
    new quotes from this row's snapshot, placed where the rules and the balances allow. fills
    needs start + max_fills(levels) rows (one fill per quote row, plus a spare). state is updated.
    A loop stepping one run many times uses a `Stepper` (resolves the kernel once).
    """
    return Stepper(params, state)(quotes, bid, ask, last, low, high, volume, fills, start)


def _one_element(rec: Any) -> np.ndarray:
    return np.array([rec], dtype=rec.dtype)


def _copy_back(arr: np.ndarray, rec: Any) -> None:
    for name in arr.dtype.names:
        rec[name] = arr[name][0]


class Stepper:
    """`step` for one run's params and state, resolved once: the compiled variant of its strategy
    and fill model, and the arrays the kernel is handed. The paper loop calls it every cycle.

    instant: the run's fill model is `instant`; levels: quotes per side. Raises TypeError when
    state lacks the strategy's fields (see make_state)."""

    def __init__(self, params: Any, state: Any):
        self.params = params
        self.state = state
        self.instant = int(params["fill_model"]) == FillModel.INSTANT
        self.levels = levels_of(params)
        self._step = _kernel_for(params, state).step
        p = _array_of(params)
        self._p = _one_element(params) if p is None else p
        self._s = _array_of(state)
        # all fields float64, base and quote first (ENGINE_STATE): read them as plain floats
        self._balances = None if self._s is None else self._s.view(np.float64)[:2]

    def __call__(self, quotes, bid, ask, last, low, high, volume, fills, start=0) -> int:
        """One cycle (see `step`): fills written to fills[start:], state updated; returns how many."""
        if fills.shape[0] < start + quotes.shape[0] + 1:
            raise ValueError("step: the fills buffer needs start + max_fills(levels) rows")
        if self._s is None:  # a record owning its data: step a one-element copy, then copy back
            s = _one_element(self.state)
            n = self._step(self._p, s, quotes, bid, ask, last, low, high, volume, fills, start)
            _copy_back(s, self.state)
            return n
        return self._step(self._p, self._s, quotes, bid, ask, last, low, high, volume, fills, start)

    def balances(self) -> tuple[float, float]:
        """(base, quote) held now: base units, quote currency."""
        if self._balances is None:
            return float(self.state["base"]), float(self.state["quote"])
        base, quote = self._balances.tolist()
        return base, quote

    def best_placed(self, quotes: np.ndarray, fills: np.ndarray, n: int) -> tuple[float, float]:
        """best_placed for this run (the fill model resolved once)."""
        if self.instant:
            return best_quoted(fills[:n, F_SIDE:F_AMOUNT + 1])
        return best_quoted(quotes)


def run_bulk(params, state, bid, ask, last, low, high, volume, quotes=None, progress=None, chunk_rows=None):
    """Replay n market rows through the cycle. Returns (quoted, fills, fill_rows, base, quote).

    quoted: (n, 2) best bid and ask price placed at each row (the highest bid and lowest ask
    resting; NaN = no quote on that side; under `instant` the best quotes that executed),
    column-major (quoted[:, 0] and quoted[:, 1] are contiguous).
    fills: (k, N_FILL), column-major too (fills[:, F_PRICE] is contiguous); fill_rows: (k,) row
    index of each fill. base, quote: (n,) balances
    after each row's cycle. state is updated in place, and so is `quotes` when given (the
    quotes resting before the first row and after the last; default: none before, dropped).
    progress: called with the number of rows done after each chunk of chunk_rows rows
    (default n / 100); the results are the same as in one call.
    """
    if quotes is None:
        quotes = empty_quotes(levels_of(params))
    run = _kernel_for(params, state).run
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
        np.concatenate([p[0].T for _, p in parts], axis=1).T,  # column-major, as _replay's
        np.concatenate([p[1].T for _, p in parts], axis=1).T,
        np.concatenate([p[2] + a for a, p in parts]),
        np.concatenate([p[3] for _, p in parts]),
        np.concatenate([p[4] for _, p in parts]),
    )


def _replay(run, params, state, quotes, bid, ask, last, low, high, volume):
    """One compiled replay into output arrays allocated here, with numpy: numpy asks the OS for
    huge pages for large arrays, which halves the cost of first touching a million rows of
    output. The fill buffer has room for every quote filling; only the rows written are ever
    touched, so the reserve costs address space, not memory. Column-major outputs: each column
    is what the recorder's frames and the summary read, so none is copied out of a strided
    layout (transposing a million-row job's fills cost more than a tenth of its kernel time)."""
    n = len(bid)
    worst = n * quotes.shape[0] + 1
    # column-major (n, 2): each side's column is contiguous, as the recorder's frames want it
    quoted = np.empty((2, n)).T
    base = np.empty(n)
    quote = np.empty(n)
    fills = np.empty((N_FILL, worst)).T
    fill_rows = np.empty(worst, dtype=np.int64)
    k = run(params, state, quotes, bid, ask, last, low, high, volume, quoted, base, quote, fills, fill_rows)
    return quoted, fills[:k], fill_rows[:k], base, quote
