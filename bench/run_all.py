"""Run every backtest benchmark side by side in one run and write the results to BENCHMARKS.md.

    python bench/run_all.py            # all of it (about a minute)
    python bench/run_all.py --quick    # fewer pandas rows and repeats, for a smoke check

Measured on the same synthetic one-minute candles (bench/data.py, seeded): the engine kernel
(compile excluded), the backtest command end to end in fresh processes (warm numba cache), its
peak memory and where its time goes, and naive references in the original style (pandas iterrows, a plain Python loop
over numpy arrays) plus a bare numba loop (the ceiling). Only the part of BENCHMARKS.md between
this script's markers is rewritten; other sections stay as they are.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import data  # noqa: E402
import sections  # noqa: E402  (bench/ modules, imported after the path is set)
import end_to_end  # noqa: E402
import kernel  # noqa: E402
import naive  # noqa: E402
import phases  # noqa: E402

DATA_DIR = HERE / ".data"
BIG, SMALL = 1_000_000, 10_000
BEGIN, END = sections.markers("bench/run_all.py")
TARGETS = {"kernel_bars_per_s": 30e6, "e2e_seconds": 3.0, "e2e_ratio": 1.5, "peak_mb": 500.0}


def machine() -> dict:
    cpu = sections.cpu_model()
    ram_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    versions = {}
    for name in ("mmrun", "numba", "llvmlite", "numpy", "polars", "pandas", "hydra-core"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def python_start_seconds(repeats: int = 5) -> float:
    """Median wall time of `python -c pass`: the floor under any command."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def ensure_data() -> tuple[Path, Path]:
    DATA_DIR.mkdir(exist_ok=True)
    paths = []
    for n in (BIG, SMALL):
        p = DATA_DIR / f"candles_{n}.parquet"
        if not p.exists():
            data.write(p, n)
        paths.append(p)
    return paths[0], paths[1]


def run(quick: bool) -> dict:
    from mmrun.market.history import load_rows

    big, small = ensure_data()
    rows = load_rows(str(big))
    r = {"machine": machine(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    print("kernel ...", flush=True)
    r["kernel_touch"] = kernel.kernel_bars_per_s(rows, "touch", fee=0.001)
    r["kernel_instant"] = kernel.kernel_bars_per_s(rows, "instant", fee=0.0)
    r["bare_numba"] = kernel.bare_numba_bars_per_s(rows)
    print("end to end ...", flush=True)
    repeats = 1 if quick else 3
    r["python_start"] = python_start_seconds()
    r["e2e_big"] = end_to_end.measure(str(big), repeats)
    r["e2e_small"] = end_to_end.measure(str(small), repeats)
    r["phases"] = phases.profile(str(big))
    print("naive references ...", flush=True)
    r["python_loop"] = naive.python_loop_bars_per_s(rows["last"])
    r["pandas"] = naive.pandas_bars_per_s(str(big), 20_000 if quick else 200_000)
    r["load_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return r


def _ok(passed: bool) -> str:
    return "met" if passed else "**missed**"


def report(r: dict) -> str:
    m = r["machine"]
    kt, ki = r["kernel_touch"], r["kernel_instant"]
    eb, es = r["e2e_big"], r["e2e_small"]
    ratio = eb["seconds"] / es["seconds"]
    v = ", ".join(f"{k} {val}" for k, val in m["versions"].items())
    load = lambda x: " / ".join(f"{a:.2f}" for a in x) if x else "n/a"  # noqa: E731
    ram = f"{m['ram_gb']:.1f} GB" if m["ram_gb"] else "unknown"
    lines = [
        "## Backtest speed: kernel, end to end, memory, naive references",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {ram} RAM; {m['os']}; Python {m['python']}; {v}.",
        f"Run {r['started']} with `python bench/run_all.py`; load average (1/5/15 min) {load(m['load'])} before, "
        f"{load(r['load_end'])} after (other work on the machine slows every figure).",
        "Data: synthetic one-minute candles (bench/data.py, seed 7), a Parquet file of 1,000,000 bars and one of 10,000.",
        "",
        "| what | result | target | |",
        "|---|---|---|---|",
        f"| kernel `engine.run_bulk`, `fills=touch` (default), 1,000,000 bars, compile excluded, best of {kernel.REPEATS} | "
        f"{kt['bars_per_s'] / 1e6:.1f} M bars/s ({kt['seconds'] * 1e3:.1f} ms, {kt['fills']:,} fills) | >= 30 M bars/s | "
        f"{_ok(kt['bars_per_s'] >= TARGETS['kernel_bars_per_s'])} |",
        f"| kernel, `fills=instant` `fees.maker=0` (the toy logic, a fill on every quote) | "
        f"{ki['bars_per_s'] / 1e6:.1f} M bars/s ({ki['seconds'] * 1e3:.1f} ms, {ki['fills']:,} fills) | | |",
        f"| `python -m mmrun mode=backtest data.path=<1,000,000-bar Parquet>`, warm numba cache, median of {eb['repeats']} | "
        f"{eb['seconds']:.2f} s (min {eb['seconds_min']:.2f}, max {eb['seconds_max']:.2f}; CPU {eb['cpu_seconds']:.2f} s) | <= 3 s | "
        f"{_ok(eb['seconds'] <= TARGETS['e2e_seconds'])} |",
        f"| the same on 10,000 bars | {es['seconds']:.2f} s (min {es['seconds_min']:.2f}, max {es['seconds_max']:.2f}; "
        f"CPU {es['cpu_seconds']:.2f} s) | | |",
        f"| 1,000,000 bars / 10,000 bars | {ratio:.2f} x | <= 1.5 x | {_ok(ratio <= TARGETS['e2e_ratio'])} |",
        f"| peak memory (max RSS) of the 1,000,000-bar run | {eb['peak_mb']:.0f} MB (10,000 bars: {es['peak_mb']:.0f} MB) | <= 500 MB | "
        f"{_ok(eb['peak_mb'] <= TARGETS['peak_mb'])} |",
        f"| `python -c pass` (interpreter start, for scale) | {r['python_start']:.3f} s | | |",
        "",
        "Naive references on the same closes, the original toy logic (instant fills, no fees):",
        "",
        "| loop | bars/s | the mmrun kernel (`fills=instant`) is |",
        "|---|---|---|",
    ]
    ref = ki["bars_per_s"]
    for name, key, note in (
        ("original style: pandas `iterrows`", "pandas", f" (first {r['pandas']['bars']:,} bars)"),
        ("plain Python loop over numpy arrays", "python_loop", ""),
        ("bare numba loop, no logging (the ceiling)", "bare_numba", ""),
    ):
        x = r[key]["bars_per_s"]
        faster = f"{ref / x:,.0f} x faster" if ref >= x else f"{x / ref:.1f} x slower"
        lines.append(f"| {name}{note} | {_rate(x)} | {faster} |")
    lines += [
        "",
        "Where the 1,000,000-bar command's time goes (bench/phases.py: the same command under cProfile, "
        "one run; the profiler slows the pure-Python parts, so compare the phases with each other):",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    for label, seconds in r["phases"].items():
        lines.append(f"| {label} | {'-' if seconds is None else f'{seconds:.3f}'} |")
    return "\n".join(lines) + "\n"


def _rate(x: float) -> str:
    return f"{x / 1e6:.1f} M" if x >= 1e6 else f"{x / 1e3:.0f} k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and pandas rows (smoke check)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = ap.parse_args()
    text = report(run(args.quick))
    print(text)
    if not args.no_write:
        sections.write_section("bench/run_all.py", text)
        print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
