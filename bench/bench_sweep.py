"""A 16-job sweep over 1,000,000 one-minute bars: joblib on every core vs one job at a time.

    python bench/bench_sweep.py             # 2 rounds of each (about 2 minutes on 2 cores)
    python bench/bench_sweep.py --rounds 1

Both sweeps are the same command (`python -m mmrun --multirun mode=backtest data.path=FILE
spread=8 values sizing.order_size_pct=2 values`), timed from process start to exit, report
included: once with the default launcher (joblib, hydra.launcher.n_jobs = cores) and once with
hydra/launcher=basic (the jobs one after another in one process). The numba cache is warmed by
an uncounted run first. Per-job overhead is what a job costs beyond the engine kernel:
sweep wall time x workers / jobs - one backtest's kernel time (engine.run_bulk on the same
bars, best of 5), i.e. process start, Hydra, loading the data (once per worker: the history
cache), writing the run folder and the report, spread over the jobs.

Writes its part of BENCHMARKS.md (between its own markers, under "## Sweeps"); the rest of
the file belongs to bench/run_all.py and stays as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import kernel  # noqa: E402  (bench/ modules, imported after the path is set)
import sections  # noqa: E402

BARS = 1_000_000
SPREADS = ("0.0005", "0.001", "0.0015", "0.002", "0.003", "0.004", "0.005", "0.01")
SIZES = ("0.01", "0.02")
JOBS = len(SPREADS) * len(SIZES)
TARGET_SPEEDUP = 1.7


def sweep_command(data_path: Path, sweep_dir: Path, *launcher: str) -> list:
    return [
        sys.executable, "-m", "mmrun", "--multirun", "mode=backtest", f"data.path={data_path}",
        f"spread={','.join(SPREADS)}", f"sizing.order_size_pct={','.join(SIZES)}",
        f"hydra.sweep.dir={sweep_dir}", *launcher,
    ]


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def timed_sweep(data_path: Path, *launcher: str) -> dict:
    """Wall and CPU seconds (all processes) of one whole sweep command, its jobs' mean own wall time."""
    out = Path(tempfile.mkdtemp(prefix="mmrun-bench-sweep-"))
    try:
        cpu, load = _children_cpu(), os.getloadavg()[0]
        t = time.perf_counter()
        res = subprocess.run(sweep_command(data_path, out / "s", *launcher), cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        cpu = _children_cpu() - cpu
        if res.returncode != 0:
            raise RuntimeError(f"sweep failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        jobs = [json.loads((out / "s" / str(i) / "run_info.json").read_text())["wall_clock_seconds"] for i in range(JOBS)]
        if not (out / "s" / "sweep_summary.csv").is_file():
            raise RuntimeError("the sweep wrote no sweep_summary.csv")
        return {"seconds": wall, "cpu_seconds": cpu, "job_seconds": statistics.mean(jobs), "load": load}
    finally:
        shutil.rmtree(out, ignore_errors=True)


# Streams 64 MB arrays through numpy: memory bound, single-threaded; prints its CPU seconds.
_MEMORY_PROBE = """
import time, numpy as np
a = np.random.rand(8_000_000); b = np.empty_like(a)
t = time.process_time()
for _ in range(40):
    np.multiply(a, 1.0001, out=b); np.add(b, a, out=a)
print(time.process_time() - t)
"""


def memory_contention() -> float:
    """CPU seconds of a memory-bound probe when two run at once / when one runs alone (best of 3).

    Above 1, two processes slow each other down through the shared memory bandwidth and caches,
    whatever the number of cores: the limit of a parallel speedup for memory-heavy jobs.
    """
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def probe(n: int) -> float:
        procs = [subprocess.Popen([sys.executable, "-c", _MEMORY_PROBE], stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
        return statistics.mean(float(p.communicate()[0]) for p in procs)

    alone = min(probe(1) for _ in range(3))
    together = min(probe(2) for _ in range(3))
    return together / alone


def run(rounds: int) -> dict:
    from run_all import ensure_data, machine

    from mmrun.market.history import load_rows

    big, _ = ensure_data()
    workers = os.cpu_count() or 1
    r = {"machine": machine(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "workers": workers}
    print("kernel ...", flush=True)
    r["kernel"] = kernel.kernel_bars_per_s(load_rows(str(big)), "touch", fee=0.001)
    r["memory_contention"] = memory_contention()
    print("warm-up ...", flush=True)
    from end_to_end import run_once

    run_once(str(big))  # fills the numba cache, so no sweep below compiles
    parallel, serial = [], []
    for i in range(rounds):  # alternate, so a slow spell of the machine hits both alike
        print(f"round {i + 1}/{rounds}: parallel ...", flush=True)
        parallel.append(timed_sweep(big, f"hydra.launcher.n_jobs={workers}"))
        print(f"round {i + 1}/{rounds}: one at a time ...", flush=True)
        serial.append(timed_sweep(big, "hydra/launcher=basic"))
    r["parallel"] = min(parallel, key=lambda x: x["seconds"])
    r["serial"] = min(serial, key=lambda x: x["seconds"])
    r["rounds"] = rounds
    return r


def section(r: dict) -> str:
    m = r["machine"]
    k = r["kernel"]["seconds"]
    par, ser, w = r["parallel"], r["serial"], r["workers"]
    speedup = ser["seconds"] / par["seconds"]
    over_par = par["seconds"] * w / JOBS - k
    over_ser = ser["seconds"] / JOBS - k
    ok = "met" if speedup >= TARGET_SPEEDUP else "**missed**"
    return "\n".join(
        [
            "## Sweeps",
            "",
            f"`python bench/bench_sweep.py` ({r['started']}; {m['cpu']}, {m['cores']} cores; best of {r['rounds']} "
            f"round(s)). {JOBS} backtest jobs (spread x 8, sizing.order_size_pct x 2) over the same "
            f"{BARS:,}-bar Parquet file (bench/data.py), each command timed from process start to exit, "
            "report included.",
            "",
            "| sweep | wall time | CPU time (all processes) | per job (wall / jobs) | a job's own time "
            "(run_info.json, mean) | per-job overhead beyond the kernel | load average at start |",
            "|---|---|---|---|---|---|---|",
            f"| joblib, {w} workers (the default) | {par['seconds']:.2f} s | {par['cpu_seconds']:.2f} s "
            f"| {par['seconds'] / JOBS:.3f} s | {par['job_seconds']:.3f} s | {over_par:.3f} s per worker-job "
            f"| {par['load']:.2f} |",
            f"| one at a time (hydra/launcher=basic) | {ser['seconds']:.2f} s | {ser['cpu_seconds']:.2f} s "
            f"| {ser['seconds'] / JOBS:.3f} s | {ser['job_seconds']:.3f} s | {over_ser:.3f} s | {ser['load']:.2f} |",
            "",
            f"- speedup of the parallel sweep: **{speedup:.2f}x** on {w} cores (target >= {TARGET_SPEEDUP}x: {ok})",
            f"- memory contention: a memory-bound probe (numpy streaming 64 MB arrays) takes {r['memory_contention']:.2f}x "
            "its CPU time when two copies run at once (1.00 = the cores do not slow each other down; above it, "
            "memory-heavy jobs such as 1M-row frames built, written and plotted cannot run 2x faster on 2 cores)",
            f"- one backtest's kernel time (engine.run_bulk, {r['kernel']['bars']:,} bars, best of 5): {k:.3f} s",
            "- per-job overhead = wall time x workers / jobs - kernel time: process start and Hydra (once per",
            "  sweep), loading the file (once per worker, the history cache), writing each run folder",
            "  (events, equity, summary, report.png) and the sweep report.",
            *(
                [
                    f"- the machine was shared while measuring (load average {max(par['load'], ser['load']):.1f} from "
                    "other processes): the parallel sweep needs both cores free, so its wall time and speedup are "
                    f"pessimistic here; the CPU times show the work itself (parallel {par['cpu_seconds'] / ser['cpu_seconds']:.2f}x "
                    "the CPU of one at a time: worker start-up, a data load and compiled-code load per worker)."
                ]
                if max(par["load"], ser["load"]) > 0.5
                else []
            ),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="timed rounds of each sweep (the best counts)")
    p.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = p.parse_args()
    text = section(run(args.rounds))
    print(text)
    if not args.no_write:
        sections.write_section("bench/bench_sweep.py", text)


if __name__ == "__main__":
    main()
