"""Data files: reading and checking a million candles in every format, and a busy day of trades.

Targets (README "Data"):
- 1,000,000 one-minute candles in any supported format read and checked (history.load_market)
  in <= 0.5 s;
- 10,000,000 trades replayed at 1 s cycles (a full `mmrun mode=backtest` command) in <= 5x the
  wall time of a 10,000-bar candle backtest command, peak memory <= 1 GB.

    python bench/bench_data.py            # prints the tables
    python bench/bench_data.py --write    # and rewrites its section of BENCHMARKS.md

Files are generated once (seeded) under bench/.data/. Each timing is the best of a few runs in
a fresh process state (the per-process cache cleared); commands run in subprocesses, their peak
memory is the child's own maximum resident set size (VmHWM, see run_cli).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from data import candles  # noqa: E402
from sections import cpu_model, write_section  # noqa: E402

DATA = HERE / ".data"
N_CANDLES = 1_000_000
N_TRADES = 10_000_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def candle_files() -> dict:
    """The same million candles in every candle format: label -> path (written once)."""
    d = DATA / "formats"
    d.mkdir(parents=True, exist_ok=True)
    df = candles(N_CANDLES)
    out = {}

    def once(name, make):
        p = d / name
        if not p.exists():
            tmp = p.with_name(p.name + ".tmp")
            make(tmp)
            os.replace(tmp, p)
        out[name] = p

    once("canonical.csv", lambda p: df.write_csv(p))
    once("canonical.parquet", lambda p: df.write_parquet(p))
    klines = df.select(
        (pl.col("timestamp") * 1000).alias("open_time"), "open", "high", "low", "close", "volume",
        (pl.col("timestamp") * 1000 + 59_999_999).alias("close_time"), (pl.col("close") * pl.col("volume")).alias("qv"),
        pl.lit(42).alias("count"), (pl.col("volume") / 2).alias("tbv"), (pl.col("close") * pl.col("volume") / 2).alias("tbqv"),
        pl.lit(0).alias("ignore"))
    once("binance_klines_us.csv", lambda p: klines.write_csv(p, include_header=False))

    def zipped(p):
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(d / "binance_klines_us.csv", "BTCUSDT-1m.csv")

    once("binance_klines_us.zip", zipped)
    yahoo = df.select(pl.from_epoch("timestamp", time_unit="ms").dt.strftime("%Y-%m-%d %H:%M:%S+00:00").alias("Datetime"),
                      pl.col("open").alias("Open"), pl.col("high").alias("High"), pl.col("low").alias("Low"),
                      pl.col("close").alias("Close"), pl.col("close").alias("Adj Close"), pl.col("volume").alias("Volume"))
    once("yahoo.csv", lambda p: yahoo.write_csv(p))
    once("semicolon.csv", lambda p: df.write_csv(p, separator=";"))

    def tab_gz(p):
        with gzip.open(p, "wb", compresslevel=3) as f:
            f.write(df.write_csv(separator="\t").encode())

    once("tab.csv.gz", tab_gz)
    once("freqtrade.json", lambda p: p.write_text(json.dumps(df.rows())))
    ft = df.select(pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC").alias("date"),
                   "open", "high", "low", "close", "volume")
    once("freqtrade.feather", lambda p: ft.write_ipc(p))
    return out


def trades_files() -> dict:
    """A busy day: 10,000,000 trades of a BTC/USDT-like market, as Binance's headerless CSV and as Parquet."""
    d = DATA / "trades"
    d.mkdir(parents=True, exist_ok=True)
    csv, pq = d / "BTCUSDT-trades-2026-01-01.csv", d / "trades.parquet"
    if not (csv.exists() and pq.exists()):
        rng = np.random.default_rng(11)
        ts = START_MS + np.sort(rng.integers(0, 86_400_000, N_TRADES))
        steps = rng.normal(0.0, 0.8 / math.sqrt(365 * 24 * 3600 * N_TRADES / 86_400), N_TRADES)
        price = np.round(60_000.0 * np.exp(np.cumsum(steps)), 2)
        amount = np.round(rng.exponential(0.02, N_TRADES) + 0.00001, 5)
        maker = rng.random(N_TRADES) < 0.5
        df = pl.DataFrame({"id": np.arange(N_TRADES), "price": price, "qty": amount, "quote_qty": np.round(price * amount, 6),
                           "time": ts, "is_buyer_maker": maker, "is_best_match": np.ones(N_TRADES, bool)})
        df.write_csv(csv.with_suffix(".tmp"), include_header=False)
        os.replace(csv.with_suffix(".tmp"), csv)
        df.select(pl.col("time").alias("timestamp"), "price", pl.col("qty").alias("amount"),
                  pl.when(pl.col("is_buyer_maker")).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side")
                  ).write_parquet(pq)
    return {"Binance trades CSV": csv, "Parquet": pq}


def time_read(path: Path, repeat: int = 3) -> tuple:
    from mmrun.market.history import clear_cache, load_market

    best, cpu = math.inf, math.inf
    data = None
    for _ in range(repeat):
        clear_cache()
        t, c = time.perf_counter(), time.process_time()
        data = load_market(str(path))
        best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return best, cpu, data


def run_cli(*args: str) -> tuple:
    """Wall seconds and the child's peak RSS (MB) of one `python -m mmrun` command.

    The peak is the child's own VmHWM (/proc/self/status), not getrusage's ru_maxrss: Linux
    carries ru_maxrss across fork + exec, so a child of this process (which holds a million
    candles in every format by then) would report this process's peak, not its own."""
    out = Path(tempfile.mkdtemp(prefix="mmrun-bench-"))
    code = ("import runpy, sys; sys.argv = ['mmrun'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('mmrun', run_name='__main__')\n"
            "finally:\n    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
            "    print('MAXRSS', hwm[0] if hwm else 'nan', file=sys.stderr)\n")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *args, f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(args)}\n{p.stderr[-2000:]}")
    rss = [float(line.split()[1]) for line in p.stderr.splitlines() if line.startswith("MAXRSS")]
    return wall, (rss[-1] / 1024 if rss else float("nan")), p.stdout


def best_cli(*args: str, repeat: int = 3) -> tuple:
    runs = [run_cli(*args) for _ in range(repeat)]
    wall = min(r[0] for r in runs)
    rss = max(r[1] for r in runs)
    return wall, rss, runs[-1][2]


def main() -> None:
    load_before = os.getloadavg()[0]
    lines = []
    files = candle_files()
    lines.append("### 1,000,000 one-minute candles: read and checked (`history.load_market`, best of 3)\n")
    lines.append("| file | format recognised | size MB | seconds | CPU seconds (all threads) |")
    lines.append("|---|---|---:|---:|---:|")
    for name, path in files.items():
        sec, cpu, data = time_read(path)
        assert len(data.rows["ts_ms"]) == N_CANDLES, name
        lines.append(f"| `{name}` | {data.label} | {path.stat().st_size / 1e6:.0f} | {sec:.3f} | {cpu:.3f} |")
        print(lines[-1], flush=True)

    lines.append("")
    lines.append("CPU seconds above seconds: Polars read on both cores; seconds above CPU seconds: the read waited "
                 "(for a core other work held, or for the disk).")
    small = DATA / "candles_10k.parquet"
    if not small.exists():
        candles(10_000).write_parquet(small)
    base_wall, base_rss, _ = best_cli("mode=backtest", f"data.path={small}")
    lines.append("")
    lines.append("### 10,000,000 trades (a busy day) at 1 s cycles: `mmrun mode=backtest` end to end (best of 3)\n")
    lines.append("| command | wall s | x the 10,000-bar candle backtest | peak RSS MB (the command's own VmHWM) |")
    lines.append("|---|---:|---:|---:|")
    lines.append(f"| 10,000 one-minute candles (Parquet) | {base_wall:.2f} | 1.0 | {base_rss:.0f} |")
    print(lines[-1], flush=True)
    for label, path in trades_files().items():
        wall, rss, _ = best_cli("mode=backtest", f"data.path={path}", "intervals.quote_s=1")
        lines.append(f"| 10,000,000 trades, {label} ({path.stat().st_size / 1e6:.0f} MB) | {wall:.2f} | "
                     f"{wall / base_wall:.1f} | {rss:.0f} |")
        print(lines[-1], flush=True)
    from mmrun.market.history import clear_cache

    clear_cache()
    t = time.perf_counter()
    from mmrun.market.history import load_market

    load_market(str(trades_files()["Parquet"]), cycle_s=1.0)
    agg = time.perf_counter() - t
    lines.append("")
    lines.append(f"Of which reading and aggregating the Parquet trades into 86,400 cycle rows (in process): {agg:.2f} s.")
    machine = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, Polars {pl.__version__}"
    text = ("## Data files\n\n`python bench/bench_data.py --write` on " + machine + f" (load average, 1 min: "
            f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; on a machine shared with other work the "
            f"timings vary up to 2x between runs; figures from {datetime.now(timezone.utc):%Y-%m-%d}).\n\n"
            + "\n".join(lines) + "\n")
    print(text)
    if "--write" in sys.argv:
        write_section("bench/bench_data.py", text)


if __name__ == "__main__":
    main()
