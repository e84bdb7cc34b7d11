"""One run from a validated config: build each pair's market and engine, run, write the run folder."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import polars as pl

from mmrun import __version__, engine
from mmrun.config import PairSpec, validate
from mmrun.errors import DataError
from mmrun.maker import MarketMaker, PairOutcome, WallClock
from mmrun.record import EventStream, read_events, safe_name, write_csv, write_json, write_parquet
from mmrun.stats import compute_stats, trading_stats

log = logging.getLogger("mmrun")


def build_params(cfg: Any, capital: float, tick: float, dt_s: float | None = None, rules: Any = None) -> np.ndarray:
    """The kernel's parameters; dt_s = seconds per cycle (default intervals.quote_s; a backtest
    passes its data's row spacing), used by strategies that estimate volatility per second;
    rules: a real exchange's lot / min_amount / min_notional (an object or a dict), None = none."""
    from mmrun.strategy import kernel_kwargs

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


def _sim_market(cfg: Any, pair: str):
    from mmrun.market.sim import SimMarket

    return SimMarket(pair, cfg.exchange.sim, cfg.intervals.quote_s, cfg.seed)


# ---------------------------------------------------------------- paper mode


async def _run_paper(cfg: Any, specs: List[PairSpec], dirs: Dict[str, Path]) -> List[PairOutcome]:
    from mmrun.market.sim import SimClock, SimFeed

    stop = asyncio.Event()
    _install_stop_handlers(stop)
    live = cfg.exchange.id != "sim"
    board = None
    if live:
        from mmrun.status import StatusBoard

        board = StatusBoard([s.pair for s in specs])
    feeds, makers, clients = [], [], {}
    try:
        for spec in specs:
            rules = None
            if live:
                from mmrun.market.ccxt_feed import open_feed

                # markets are loaded once here: an unknown pair or an unreachable exchange ends
                # the run before anything is written
                feed = await open_feed(cfg.exchange, spec.pair, shared=clients)
                feeds.append(feed)
                clock, rules = WallClock(stop), feed.rules
                _write_market_info(dirs[spec.pair] / "market.json", cfg, spec.pair, feed)
            else:
                market = _sim_market(cfg, spec.pair)
                feed, clock = SimFeed(market, cfg.run.max_ticks), SimClock(market.start_ms)
                feeds.append(feed)
            events = EventStream(dirs[spec.pair] / "events.csv")
            makers.append(
                MarketMaker(
                    spec.pair,
                    build_params(cfg, spec.capital, feed.tick, rules=rules),
                    engine.make_state(0.0, spec.capital),
                    feed,
                    clock,
                    events,
                    quote_s=cfg.intervals.quote_s,
                    error_s=cfg.intervals.error_s,
                    max_ticks=cfg.run.max_ticks,
                    log_quotes=cfg.run.log_quotes is not False,
                    stop=stop,
                    market_path=dirs[spec.pair] / "market.parquet",
                    rules=rules,
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
        for feed in feeds:
            await feed.close()
        if board is not None:
            board.close()


def _write_market_info(path: Path, cfg: Any, pair: str, feed: Any) -> None:
    """market.json next to market.parquet: the exchange's rules for the pair, so a replay
    (mode=backtest data.path=.../market.parquet) quotes on the same price grid."""
    r = feed.rules
    write_json(
        {"exchange": cfg.exchange.id, "pair": pair, "source": feed.name, "tick": r.tick, "lot": r.lot,
         "min_amount": r.min_amount, "min_notional": r.min_notional},
        path,
    )


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


def _backtest_rows(cfg: Any, pair: str):
    """(rows, tick) for a backtest: the data file if given, candles downloaded from a real
    exchange (data.since..data.until, through the cache), else the simulated market."""
    if cfg.data.path is not None or cfg.exchange.id != "sim":
        from mmrun.market.history import load_rows

        path = cfg.data.path
        if path is None:
            from mmrun.market.download import download

            path = str(download(cfg, pair))
        rows = load_rows(path, repair=cfg.data.repair)
        if cfg.run.max_ticks is not None:
            rows = {k: v[: cfg.run.max_ticks] for k, v in rows.items()}
        return rows, _file_tick(cfg, pair, path), _file_rules(path)
    market = _sim_market(cfg, pair)
    return market.frame_arrays(cfg.run.max_ticks), market.tick, None


def _file_tick(cfg: Any, pair: str, path: str) -> float:
    """Candles: no price grid (0). A paper run's market.parquet replayed on exchange=sim: the
    simulated exchange's tick, the grid the paper run quoted on, so the replay fills the same."""
    from mmrun.market.history import recorded_market

    if cfg.exchange.id == "sim" and recorded_market(path):
        return _sim_market(cfg, pair).tick
    rules = _file_rules(path)
    return float(rules.get("tick") or 0.0) if rules else 0.0


def _file_rules(path: str) -> Dict[str, Any] | None:
    """A real exchange's paper run (market.parquet with market.json beside it): the rules it
    quoted under (tick, lot, minimums), so that its replay quotes and fills the same."""
    import json

    from mmrun.market.history import recorded_market

    info = Path(path).with_name("market.json")
    if not (recorded_market(path) and info.is_file()):
        return None
    try:
        return json.loads(info.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{info}: unreadable market rules ({exc}); delete it to replay without them") from None


def _run_backtests(cfg: Any, specs: List[PairSpec]) -> List[PairOutcome]:
    from mmrun.backtest import run_backtest

    outcomes = []
    for spec in specs:
        rows, tick, rules = _backtest_rows(cfg, spec.pair)
        ts = np.asarray(rows["ts_ms"])
        dt_s = float(np.median(np.diff(ts))) / 1000.0 if len(ts) > 1 else None
        params = build_params(cfg, spec.capital, tick, dt_s=dt_s, rules=rules)
        outcomes.append(run_backtest(spec.pair, params, engine.make_state(0.0, spec.capital), rows))
    return outcomes


# ---------------------------------------------------------------- outputs


def pair_summary(cfg: Any, spec: PairSpec, out: PairOutcome) -> Dict[str, Any]:
    # every pair starts all in quote: its capital is the value before the first cycle
    stats = compute_stats(out.equity, out.fills, initial_value=spec.capital)
    stats.update(trading_stats(out.equity, out.fills, initial_value=spec.capital))
    ts = out.equity["ts_ms"]
    return {
        "pair": spec.pair,
        "exchange": cfg.exchange.id,
        "mode": cfg.mode,
        "status": out.status,
        **stats,
        "errors": out.errors,
        "seed": cfg.seed,
        "data_fingerprint": out.fingerprint,
        "strategy": cfg.strategy.name,
        "spread": cfg.spread,
        "fill_model": cfg.fills.model,
        "capital": spec.capital,
        "fee_maker": cfg.fees.maker,
        "market_start": _iso(ts[0]) if len(ts) else None,
        "market_end": _iso(ts[-1]) if len(ts) else None,
        "mmrun_version": __version__,
    }


def _iso(ts_ms: int) -> str:
    from mmrun.record import iso_ms

    return iso_ms(int(ts_ms))


def write_pair(folder: Path, out: PairOutcome) -> None:
    """The pair's frames: events (CSV if not streamed, always Parquet), equity, market."""
    if out.events is not None:
        write_csv(out.events, folder / "events.csv")
        write_parquet(out.events, folder / "events.parquet")
    else:
        write_parquet(read_events(folder / "events.csv"), folder / "events.parquet")
    write_parquet(out.equity, folder / "equity.parquet")
    if out.market is not None:
        write_parquet(out.market, folder / "market.parquet")


def aggregate(cfg: Any, summaries: List[Dict[str, Any]], outcomes: List[PairOutcome]) -> Dict[str, Any]:
    """The root summary of a several-pair run: totals, and metrics of the summed equity."""
    from mmrun.stats import max_drawdown_pct, sharpe

    total = None
    for out in outcomes:
        eq = out.equity.select("ts_ms", pl.col("equity").alias(safe_name(out.pair)))
        total = eq if total is None else total.join(eq, on="ts_ms", how="full", coalesce=True)
    total = total.sort("ts_ms").fill_null(strategy="forward").fill_null(strategy="backward")
    equity = total.select(pl.sum_horizontal(pl.exclude("ts_ms"))).to_series().to_numpy()
    initial = sum(s["initial_value"] for s in summaries)
    final = sum(s["final_value"] for s in summaries)
    statuses = {s["status"] for s in summaries}
    return {
        "pair": ",".join(s["pair"] for s in summaries),
        "exchange": cfg.exchange.id,
        "mode": cfg.mode,
        "status": statuses.pop() if len(statuses) == 1 else "mixed",
        "initial_value": initial,
        "final_value": final,
        "total_return_pct": (final - initial) / initial * 100.0,
        "pnl": final - initial,
        **{k: sum(s[k] for s in summaries) for k in ("trades", "buys", "sells", "volume_quote", "fees", "ticks", "errors")},
        "max_drawdown_pct": max_drawdown_pct(equity),
        "sharpe": sharpe(equity, total["ts_ms"].to_numpy()),
        "final_base": None,  # bases differ across pairs: see each pair's summary
        "final_quote": sum(s["final_quote"] for s in summaries),
        "seed": cfg.seed,
        "data_fingerprint": ",".join(s["data_fingerprint"] for s in summaries),
        "pairs": {s["pair"]: safe_name(s["pair"]) for s in summaries},
        "mmrun_version": __version__,
    }


def _import_plotting() -> None:
    try:
        import mmrun.report  # noqa: F401
        from matplotlib.backends import backend_agg  # noqa: F401
        from matplotlib import figure  # noqa: F401
    except Exception:  # the picture step reports any problem itself
        pass


def _picture(cfg: Any, folder: Path, out: PairOutcome, summary: Dict[str, Any]) -> None:
    """report.png beside the pair's summary; a plotting failure is logged, never fails the run."""
    from mmrun.report import write_report

    try:
        write_report(folder, out.equity, out.fills, summary, cfg.strategy, cfg.spread)
    except Exception as exc:  # the results are written already; a missing picture must not lose them
        log.warning("report.png not written: %s: %s", type(exc).__name__, exc)


def print_summary(s: Dict[str, Any], out_dir: Path, wall_s: float) -> None:
    quote = s["pair"].split(",")[0].split("/")[-1]
    lines = [
        f"mmrun  {s['pair']}  {s['exchange']}  {s['mode']}  {s['status']}  {s['ticks']} ticks  ({wall_s:.2f} s)",
        f"  value   {s['initial_value']:,.2f} -> {s['final_value']:,.2f} {quote}  ({s['total_return_pct']:+.3f} %, pnl {s['pnl']:+,.2f})",
        f"  trades  {s['trades']} ({s['buys']} buys, {s['sells']} sells), volume {s['volume_quote']:,.2f}, fees {s['fees']:,.2f}",
        f"  risk    max drawdown {s['max_drawdown_pct']:.3f} %, sharpe {s['sharpe']:.2f}, errors {s['errors']}",
        f"  output  {out_dir}",
    ]
    print("\n".join(lines), flush=True)


def run(cfg: Any, out_dir: Path) -> Dict[str, Any]:
    """Run the configured market maker(s) into out_dir; return the (root) summary."""
    wall_start, cpu_start = time.time(), time.process_time()
    specs = validate(cfg)
    # report.png needs matplotlib (about 0.3 s to import): import it beside the run's own work
    # (file reading and Parquet writing release the GIL) instead of after it.
    threading.Thread(target=_import_plotting, name="mmrun-import-plotting", daemon=True).start()
    from mmrun.config import strategy_warnings

    for warning in strategy_warnings(cfg):
        log.warning("%s", warning)
    out_dir.mkdir(parents=True, exist_ok=True)
    single = len(specs) == 1
    dirs = {s.pair: out_dir if single else out_dir / safe_name(s.pair) for s in specs}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    log.info("%s %s on %s, output %s", cfg.mode, ",".join(s.pair for s in specs), cfg.exchange.id, out_dir)
    if cfg.mode == "paper":
        outcomes = asyncio.run(_run_paper(cfg, specs, dirs))
    else:
        outcomes = _run_backtests(cfg, specs)
    summaries = []
    for spec, out in zip(specs, outcomes):
        summary = pair_summary(cfg, spec, out)
        # the picture is drawn while the frames are written (Polars writes without the GIL)
        picture = threading.Thread(target=_picture, args=(cfg, dirs[spec.pair], out, summary), name="mmrun-report")
        picture.start()
        write_pair(dirs[spec.pair], out)
        write_json(summary, dirs[spec.pair] / "summary.json")
        picture.join()
        summaries.append(summary)
    root = summaries[0] if single else aggregate(cfg, summaries, outcomes)
    if not single:
        write_json(root, out_dir / "summary.json")
    wall_s = write_run_info(out_dir, wall_start, cpu_start)
    print_summary(root, out_dir, wall_s)
    return root


def write_run_info(out_dir: Path, wall_start: float, cpu_start: Optional[float] = None) -> float:
    """run_info.json: the wall-clock facts of a run (start, seconds), its command and versions.

    cpu_start (a time.process_time() value taken with wall_start): given, cpu_seconds is the
    CPU time the process spent since, all its threads together (above wall_clock_seconds when
    the run kept more than one core busy). Returns the run's wall-clock seconds.
    """
    wall_s = time.time() - wall_start
    cpu = {} if cpu_start is None else {"cpu_seconds": round(time.process_time() - cpu_start, 3)}
    write_json(
        {
            "wall_clock_start_utc": datetime.fromtimestamp(wall_start, tz=timezone.utc).isoformat(),
            "wall_clock_seconds": round(wall_s, 3),
            **cpu,
            "command": " ".join(sys.argv),
            "python": sys.version.split()[0],
            "versions": _versions(),
        },
        out_dir / "run_info.json",
    )
    return wall_s


def _versions() -> Dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mmrun", "hydra-core", "omegaconf", "numba", "numpy", "polars", "ccxt", "tenacity"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_failed_job(cfg: Any, out_dir: Path, exc: BaseException, wall_start: Optional[float] = None) -> None:
    """A sweep job that failed: its summary says so, with the error, so the sweep report lists it.

    wall_start (a time.time() value): when the job started; given, run_info.json is written too.
    """
    from mmrun.cli_errors import one_line

    out_dir.mkdir(parents=True, exist_ok=True)
    if wall_start is not None:
        write_run_info(out_dir, wall_start)
    write_json(
        {
            "pair": str(cfg.get("pair")),
            "exchange": str(cfg.exchange.get("id")),
            "mode": str(cfg.get("mode")),
            "status": "failed",
            "error": one_line(exc),
            "seed": cfg.get("seed"),
        },
        out_dir / "summary.json",
    )
