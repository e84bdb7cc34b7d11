"""Paper loop memory: peak RSS growth of MarketMaker.run over N cycles on the simulated clock.

The loop streams events.csv, market.parquet and its equity and fill rows to disk (in chunks),
so its footprint should stay flat; equity and fills are read back as frames at the end for the
summary. This measures how flat. For each N
(default 10,000 and 100,000 cycles) a fresh process warms up (numba compile, a 5,000-cycle run
that also starts pyarrow's memory pool with its first market.parquet row group),
records its resident set, resets the kernel's peak counter (/proc/self/clear_refs), runs N
cycles of the default simulated market and reads the peak again (VmHWM). Growth = peak -
resident before. Also prints wall time per cycle.

    python bench/bench_paper_memory.py [--cycles 10000 100000] [--write]

--write replaces this script's section of BENCHMARKS.md with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sections  # noqa: E402  (bench/sections.py, imported after the path is set)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _paper_run(cycles: int, folder: Path) -> dict:
    """One paper run of `cycles` cycles (default config: BTC/USDT, 5 s, touch fills)."""
    from omegaconf import OmegaConf

    from mmrun import engine
    from mmrun.config import Config
    from mmrun.maker import MarketMaker
    from mmrun.market.sim import SimClock, SimFeed, SimMarket
    from mmrun.record import EventStream

    cfg = OmegaConf.structured(Config)
    cfg.exchange.sim.duration_s = cycles * cfg.intervals.quote_s
    market = SimMarket("BTC/USDT", cfg.exchange.sim, cfg.intervals.quote_s, cfg.seed)
    feed = SimFeed(market, cycles)
    params = engine.make_params(cfg.spread, cfg.sizing.order_size_pct, cfg.sizing.max_inventory_exposure, 10000.0,
                                0.001, "touch", None, feed.tick)
    events = EventStream(folder / "events.csv")
    maker = MarketMaker(
        "BTC/USDT", params, engine.make_state(0.0, 10000.0), feed, SimClock(market.start_ms), events,
        quote_s=cfg.intervals.quote_s, error_s=cfg.intervals.error_s, max_ticks=cycles, log_quotes=True,
        stop=asyncio.Event(), folder=folder,
    )
    out = asyncio.run(maker.run())
    events.close()
    return {"ticks": maker.ticks, "fills": out.fills.height, "events": _lines(folder / "events.csv") - 1}


def child(cycles: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm"
        warm.mkdir()
        _paper_run(5000, warm)  # compile the kernel, import everything, start pyarrow's memory pool
        rss_before = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        t0 = time.perf_counter()
        info = _paper_run(cycles, run_dir)
        wall = time.perf_counter() - t0
        peak = _status_kb("VmHWM")
    print(json.dumps({"cycles": cycles, "rss_before_mb": rss_before / 1024, "peak_mb": peak / 1024,
                      "growth_mb": (peak - rss_before) / 1024, "wall_s": wall, **info}))


def machine() -> str:
    return f"{sections.cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def write_section(results: list, command: str) -> None:
    lines = [
        "## Paper loop memory",
        "",
        f"`{command}` — peak resident memory growth of the paper loop (`MarketMaker.run`, default",
        "simulated BTC/USDT market, 5 s cycles, touch fills, QUOTE/CANCEL events logged), each size in a",
        "fresh process after a warm-up run; growth = peak RSS during the run − RSS before it. events.csv,",
        "market.parquet and the equity and fill rows are streamed to disk in chunks during the loop; the",
        "growth is mostly the equity and fills frames read back at the end for the summary (~100 B a cycle).",
        f"Machine: {machine()}.",
        "",
        "| cycles | growth (MB) | peak RSS (MB) | fills | events | wall (s) | µs / cycle |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['cycles']:,} | {r['growth_mb']:.1f} | {r['peak_mb']:.1f} | {r['fills']:,} | {r['events']:,} | "
                     f"{r['wall_s']:.2f} | {r['wall_s'] / r['cycles'] * 1e6:.1f} |")
    lines.append("")
    lines.append("Target: growth under 20 MB for 100,000 cycles.")
    sections.write_section("bench/bench_paper_memory.py", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    results = []
    for n in args.cycles:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{n:>8,} cycles: growth {r['growth_mb']:6.1f} MB (peak {r['peak_mb']:.1f} MB), "
              f"{r['fills']:,} fills, {r['events']:,} events, {r['wall_s']:.2f} s")
    if args.write:
        write_section(results, "python bench/bench_paper_memory.py --write")
        print("BENCHMARKS.md: section 'Paper loop memory' updated")


if __name__ == "__main__":
    main()
