"""Building and running one run from a validated config: each pair's market source (market.source),
kernel parameters and loop (paper: maker.MarketMaker; backtest: backtest.run_backtest); the run
folder is written by output.py."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from mmrun import engine, validation
from mmrun.config import PairSpec, validate
from mmrun.inputs import start_balances
from mmrun.maker import MarketMaker, run_unless_stopped
from mmrun.market.source import PaperMarket, backtest_market, paper_market
from mmrun.output import import_plotting, pair_dirs, print_summary, write_market_info, write_outputs, write_run_info
from mmrun.record import EventStream
from mmrun.recorder import PairOutcome, PairRecorder

log = logging.getLogger("mmrun")


def build_params(cfg: Any, capital: float, tick: float, dt_s: float | None = None, rules: Any = None) -> np.ndarray:
    """The kernel's parameters; dt_s = seconds per cycle (default intervals.quote_s; a backtest
    passes its data's row spacing), used by strategies that estimate volatility per second;
    rules: a real exchange's lot / min_amount / min_notional (an object or a dict), None = none."""
    from mmrun.strategies import kernel_kwargs

    return engine.make_params(
        spread=cfg.spread,
        order_size_pct=cfg.sizing.order_size_pct,
        max_exposure=cfg.sizing.max_inventory_exposure,
        capital=capital,
        fee_maker=cfg.fees.maker,
        fill_model=cfg.fills.model,
        participation=cfg.fills.participation,
        tick=tick,
        dt_s=dt_s or cfg.intervals.quote_s,
        **kernel_kwargs(cfg.strategy),
        **_rule_kwargs(rules),
    )


def _rule_kwargs(rules: Any) -> Dict[str, float]:
    if rules is None:
        return {}
    get = rules.get if isinstance(rules, dict) else (lambda k: getattr(rules, k))
    return {k: float(get(k) or 0.0) for k in ("lot", "min_amount", "min_notional")}


# ---------------------------------------------------------------- paper mode


def _first_sim_mid(feed: Any) -> float:
    """The simulated market's first mid (run.start=target): its first row, generated again."""
    rows = feed.market.frame_arrays(1)
    return (float(rows["bid"][0]) + float(rows["ask"][0])) / 2.0


async def _run_paper(cfg: Any, specs: List[PairSpec], dirs: Dict[str, Path]) -> List[PairOutcome]:
    stop = asyncio.Event()
    _install_stop_handlers(stop)
    live = cfg.exchange.id != "sim"
    board = None
    if live:
        from mmrun.status import StatusBoard

        board = StatusBoard([s.pair for s in specs])
    markets: Dict[str, PaperMarket] = {}
    makers: List[MarketMaker] = []
    try:
        # a real exchange's markets are loaded first: an unknown pair or an unreachable exchange
        # ends the run before anything is written; a stop request ends the loading at once
        if not (await run_unless_stopped(_open_markets(cfg, specs, stop, markets), stop))[0]:
            log.warning("stopped while the markets were loading: no cycle was run")
            return [_not_started(spec.pair, dirs[spec.pair]) for spec in specs]
        for spec in specs:
            market = markets[spec.pair]
            if market.rules is not None:
                write_market_info(dirs[spec.pair] / "market.json", cfg, spec.pair, market.feed)
            events = EventStream(dirs[spec.pair] / "events.csv")
            params = build_params(cfg, spec.capital, market.feed.tick, rules=market.rules)
            makers.append(
                MarketMaker(
                    spec.pair,
                    params,
                    engine.make_state(*start_balances(cfg, spec.capital, lambda: _first_sim_mid(market.feed)), params),
                    market.feed,
                    market.clock,
                    events,
                    quote_s=cfg.intervals.quote_s,
                    error_s=cfg.intervals.error_s,
                    max_ticks=cfg.run.max_ticks,
                    log_quotes=cfg.run.log_quotes is not False,
                    stop=stop,
                    folder=dirs[spec.pair],
                    rules=market.rules,
                    status=board,
                )
            )
        if live:
            for m in makers:
                m.warm_up()
        return list(await asyncio.gather(*(m.run() for m in makers)))
    finally:
        for m in makers:
            m.events.close()
            m.close_recording()  # market.parquet complete even when the run failed
        for market in markets.values():
            await market.feed.close()
        if board is not None:
            board.close()


async def _open_markets(cfg: Any, specs: List[PairSpec], stop: asyncio.Event, markets: Dict[str, PaperMarket]) -> None:
    """Each pair's paper market into `markets` (filled as they open, so that all are closed after)."""
    clients: Dict = {}
    for spec in specs:
        markets[spec.pair] = await paper_market(cfg, spec.pair, stop, clients)


def _not_started(pair: str, folder: Path) -> PairOutcome:
    """The outcome of a pair stopped before its first cycle: no rows, its starting balances."""
    EventStream(folder / "events.csv").close()
    recorder = PairRecorder(pair, folder)
    recorder.close()
    return recorder.outcome("stopped", 0)


def _install_stop_handlers(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: stop cleanly after the current cycle. Second: exit at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            os._exit(130)
        log.warning("%s received: stopping after this cycle (again to exit at once)", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (e.g. a sweep worker): the default handling applies


# ---------------------------------------------------------------- backtests


_CHECKED: Dict[int, tuple] = {}  # id(ts) -> (ts, median spacing): a sweep worker replays one market many times


def _checked_times(ts: np.ndarray, source: str) -> Optional[float]:
    """The market's timestamps (ms, shape (n,)) checked (limits.check_market_times: DataError
    naming source and row), and their median spacing in seconds (None for n < 2). Kept per
    array once checked (the cached market a sweep's jobs share): about 6 ms a million rows."""
    from mmrun.limits import check_market_times

    hit = _CHECKED.get(id(ts))
    if hit is None or hit[0] is not ts:
        check_market_times(ts, source)
        if len(_CHECKED) >= 8:
            _CHECKED.clear()
        spacing = float(np.median(np.diff(ts))) / 1000.0 if len(ts) >= 2 else None
        hit = _CHECKED[id(ts)] = (ts, spacing)
    return hit[1]


def _run_backtests(cfg: Any, specs: List[PairSpec], checked: Dict[str, Any]) -> List[PairOutcome]:
    """checked: filled with validation.json's entry per pair under sweep.holdout / sweep.folds."""
    from mmrun.backtest import run_backtest

    outcomes = []
    for spec in specs:
        market = backtest_market(cfg, spec.pair)
        ts = np.asarray(market.rows["ts_ms"])
        dt_s = _checked_times(ts, f"data.path={cfg.data.path}" if cfg.data.path else f"{cfg.exchange.id} {spec.pair}")
        params = build_params(cfg, spec.capital, market.tick, dt_s=dt_s, rules=market.rules)
        def replay(r, spec=spec, params=params):
            # run.start=target: the split is made at the first mid of the rows replayed
            first_mid = lambda: (float(r["bid"][0]) + float(r["ask"][0])) / 2.0  # noqa: E731
            return run_backtest(spec.pair, params, engine.make_state(*start_balances(cfg, spec.capital, first_mid), params), r)

        # sweep.holdout / sweep.folds: the run replays the searched part; the rest is checked aside
        rows, check = validation.split_run(cfg, spec.pair, market.rows, replay, spec.capital)
        outcomes.append(replay(rows))
        outcomes[-1].labels = market.labels  # data_source, data_format, gaps, exchange (history.summary_labels)
        if cfg.run.max_ticks is not None and len(ts) >= cfg.run.max_ticks:
            outcomes[-1].status = "max_ticks"  # the market was cut at run.max_ticks rows, as a paper run stops
        if check is not None:
            checked[spec.pair] = check
    return outcomes


def run(cfg: Any, out_dir: Path) -> Dict[str, Any]:
    """Run the configured market maker(s) into out_dir; return the (root) summary."""
    wall_start, cpu_start = time.time(), time.process_time()
    specs = validate(cfg)
    from mmrun.launch import in_sweep, lean_outputs

    lean = lean_outputs(cfg)  # a sweep job's lean folder: no picture (sweep.outputs)
    # report.png needs matplotlib (about 0.3 s to import): import it beside the run's own work
    # (file reading and Parquet writing release the GIL) instead of after it.
    if not lean:
        threading.Thread(target=import_plotting, name="mmrun-import-plotting", daemon=True).start()
    from mmrun.config import config_warnings

    for warning in config_warnings(cfg):
        log.warning("%s", warning)
    dirs = pair_dirs(out_dir, specs)
    source = cfg.exchange.id  # a data-file backtest names its file (summary.json: exchange "file", data_source)
    if cfg.mode == "backtest" and cfg.data.path and source == "sim":
        source = f"file {Path(str(cfg.data.path)).name}"
    log.info("%s %s on %s, output %s", cfg.mode, ",".join(s.pair for s in specs), source, out_dir)
    checked: Dict[str, Any] = {}  # sweep.holdout / sweep.folds results per pair (backtests)
    if cfg.mode == "paper":
        outcomes = asyncio.run(_run_paper(cfg, specs, dirs))
    else:
        outcomes = _run_backtests(cfg, specs, checked)
    root = write_outputs(cfg, specs, outcomes, dirs, out_dir, lean)
    validation.write_outputs(cfg, out_dir, outcomes, checked)  # returns.parquet (+ validation.json): the sweep's PBO
    wall_s = write_run_info(out_dir, wall_start, cpu_start)
    if not in_sweep():  # a sweep shows its progress and a leaderboard instead
        print_summary(root, out_dir, wall_s)
    return root
