"""A 16-job sweep over 1,000,000 one-minute bars: joblib on every core vs one job at a time.

    python bench/bench_sweep.py             # 2 rounds of each (about 3 minutes on 2 cores)
    python bench/bench_sweep.py --rounds 1

Both sweeps are the same command (`python -m mmrun --multirun mode=backtest data.path=FILE
spread=8 values sizing.order_size_pct=2 values`), timed from process start to exit, report
included: once with the default launcher (joblib, hydra.launcher.n_jobs = cores) and once with
hydra/launcher=basic (the jobs one after another in one process). The numba cache is warmed by
an uncounted run first. Per-job overhead is what a job costs beyond the engine kernel:
sweep wall time / jobs - one backtest's kernel time (engine.run_bulk on the same bars, best
of 5), i.e. process start, Hydra, loading the data (once per worker: the history cache),
writing the run folder and the report, spread over the jobs.

Each command's time is also split into its parts (from the jobs' run_info.json): start to the
first job, the jobs, the last job to the exit; and the best any launcher could do on these
cores is estimated from the one-at-a-time run (its parts outside the jobs, plus the jobs' CPU
time and Hydra's time between jobs shared perfectly by the workers).

Writes its part of BENCHMARKS.md (between its own markers, under "## Sweeps"); the rest of
the file belongs to bench/run_all.py and stays as it is.

For comparison it also times a sweep of longer jobs the same two ways: 8 paper runs on the
simulated exchange, a day of market each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
# For comparison, longer jobs: paper runs on the simulated exchange, a day of market each
PAPER_SPREADS = ("0.001", "0.002", "0.003", "0.004", "0.005", "0.006", "0.007", "0.008")
PAPER_ARGS = ("exchange.sim.duration_s=86400", f"spread={','.join(PAPER_SPREADS)}")


def backtest_args(data_path: Path) -> tuple:
    return ("mode=backtest", f"data.path={data_path}", f"spread={','.join(SPREADS)}", f"sizing.order_size_pct={','.join(SIZES)}")


def sweep_command(args: tuple, sweep_dir: Path, *launcher: str) -> list:
    return [sys.executable, "-m", "mmrun", "--multirun", *args, f"hydra.sweep.dir={sweep_dir}", *launcher]


def _machine_busy() -> float:
    """CPU seconds all processes of the machine have used (Linux /proc/stat; 0 elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def timed_sweep(args: tuple, jobs: int, *launcher: str) -> dict:
    """One whole sweep command: wall and CPU seconds (all processes), and where the time went.

    From the jobs' run_info.json: `first_job` = seconds from the command's start to the first
    job's start (interpreter, Hydra composing the sweep and every job's config, workers
    starting), `jobs_phase` = first job's start to the last job's end, `tail` = last job's end
    to the command's exit (the sweep report, workers stopping); `job_seconds` / `job_cpu` =
    the jobs' own wall and CPU seconds summed (a job's CPU above its wall time = the job kept
    more than one core busy: the picture drawn beside the writes, Polars' threads).
    """
    out = Path(tempfile.mkdtemp(prefix="mmrun-bench-sweep-"))
    try:
        cpu, busy = _children_cpu(), _machine_busy()
        start = time.time()
        t = time.perf_counter()
        res = subprocess.run(sweep_command(args, out / "s", *launcher), cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        cpu = _children_cpu() - cpu
        others = max(0.0, _machine_busy() - busy - cpu)  # CPU of processes not part of the sweep
        if res.returncode != 0:
            raise RuntimeError(f"sweep failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        if not (out / "s" / "sweep_summary.csv").is_file():
            raise RuntimeError("the sweep wrote no sweep_summary.csv")
        infos = [json.loads((out / "s" / str(i) / "run_info.json").read_text()) for i in range(jobs)]
        begins = [datetime.fromisoformat(j["wall_clock_start_utc"]).timestamp() - start for j in infos]
        ends = [b + j["wall_clock_seconds"] for b, j in zip(begins, infos)]
        return {
            "seconds": wall,
            "cpu_seconds": cpu,
            "others": others,
            "first_job": min(begins),
            "jobs_phase": max(ends) - min(begins),
            "tail": wall - max(ends),
            "job_seconds": sum(j["wall_clock_seconds"] for j in infos),
            "job_cpu": sum(j["cpu_seconds"] for j in infos),
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run(rounds: int) -> dict:
    from run_all import ensure_data, machine

    from mmrun.market.history import load_rows

    big, _ = ensure_data()
    workers = os.cpu_count() or 1
    r = {"machine": machine(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "workers": workers}
    print("kernel ...", flush=True)
    r["kernel"] = kernel.kernel_bars_per_s(load_rows(str(big)), "touch", fee=0.001)
    print("warm-up ...", flush=True)
    from end_to_end import run_once

    run_once(str(big))  # fills the numba cache, so no sweep below compiles
    for key, args, jobs in (("", backtest_args(big), JOBS), ("paper_", PAPER_ARGS, len(PAPER_SPREADS))):
        parallel, serial = [], []
        for i in range(rounds):  # alternate, so a slow spell of the machine hits both alike
            print(f"{key or 'backtest_'}sweep, round {i + 1}/{rounds}: parallel ...", flush=True)
            parallel.append(timed_sweep(args, jobs, f"hydra.launcher.n_jobs={workers}"))
            print(f"{key or 'backtest_'}sweep, round {i + 1}/{rounds}: one at a time ...", flush=True)
            serial.append(timed_sweep(args, jobs, "hydra/launcher=basic"))
        r[key + "parallel"] = min(parallel, key=lambda x: x["seconds"])
        r[key + "serial"] = min(serial, key=lambda x: x["seconds"])
    r["rounds"] = rounds
    return r


_HEADER = (
    "| sweep | wall time | CPU time (all processes) | start to first job | first job start to last job end "
    "| last job end to exit | jobs' own wall time (sum) | jobs' own CPU time (sum) | CPU time of other processes meanwhile |",
    "|---|---|---|---|---|---|---|---|---|",
)


def _row(name: str, x: dict) -> str:
    return (
        f"| {name} | {x['seconds']:.2f} s | {x['cpu_seconds']:.2f} s | {x['first_job']:.2f} s | {x['jobs_phase']:.2f} s "
        f"| {x['tail']:.2f} s | {x['job_seconds']:.2f} s | {x['job_cpu']:.2f} s | {x['others']:.2f} s |"
    )


def best_possible(ser: dict, workers: int) -> float:
    """Seconds of the sweep with a perfect launcher: the one-at-a-time run's parts outside the
    jobs as they are, its jobs' CPU time and Hydra's time between jobs split evenly over the
    workers with nothing added (no worker start-up, no contention, no imbalance)."""
    between = ser["jobs_phase"] - ser["job_seconds"]
    return ser["first_job"] + ser["tail"] + (ser["job_cpu"] + between) / workers


def section(r: dict) -> str:
    m = r["machine"]
    k = r["kernel"]["seconds"]
    par, ser, w = r["parallel"], r["serial"], r["workers"]
    speedup = ser["seconds"] / par["seconds"]
    ok = "met" if speedup >= TARGET_SPEEDUP else "**missed**"
    ideal = best_possible(ser, w)
    others = max(x["others"] for name, x in r.items() if name.endswith(("parallel", "serial")))
    return "\n".join(
        [
            "## Sweeps",
            "",
            f"`python bench/bench_sweep.py` ({r['started']}; {m['cpu']}, {m['cores']} cores; best of {r['rounds']} "
            f"round(s)). {JOBS} backtest jobs (spread x 8, sizing.order_size_pct x 2) over the same "
            f"{BARS:,}-bar Parquet file (bench/data.py), each command timed from process start to exit, "
            "report included. The parts come from the jobs' run_info.json.",
            "",
            *_HEADER,
            _row(f"joblib, {w} workers (the default)", par),
            _row("one at a time (hydra/launcher=basic)", ser),
            "",
            f"- speedup of the parallel sweep: **{speedup:.2f}x** on {w} cores (target >= {TARGET_SPEEDUP}x: {ok})",
            f"- speedup of the jobs alone (first job start to last job end): {ser['jobs_phase'] / par['jobs_phase']:.2f}x",
            f"- per-job overhead (sweep wall time / jobs - one backtest's kernel time): joblib "
            f"{par['seconds'] / JOBS - k:.3f} s, one at a time {ser['seconds'] / JOBS - k:.3f} s; the kernel "
            f"(engine.run_bulk, {r['kernel']['bars']:,} bars, best of 5) takes {k:.3f} s",
            f"- a job run one at a time already keeps {ser['job_cpu'] / ser['job_seconds']:.2f} cores busy on average "
            "(its CPU time over its wall time: report.png is drawn while the frames are written, Polars writes "
            "with several threads)",
            f"- the best any launcher could do here: {ideal:.2f} s, i.e. **{ser['seconds'] / ideal:.2f}x** "
            f"(the one-at-a-time run's {ser['first_job']:.2f} s before the first job and {ser['tail']:.2f} s after the "
            f"last as they are, the jobs' {ser['job_cpu']:.2f} s of CPU and Hydra's "
            f"{ser['jobs_phase'] - ser['job_seconds']:.2f} s between jobs shared perfectly by {w} workers with no "
            "start-up and no contention)",
            *(
                [
                    "",
                    f"For comparison, longer jobs: {len(PAPER_SPREADS)} paper runs on the simulated exchange, a day of "
                    f"market each (`python -m mmrun --multirun {' '.join(PAPER_ARGS)}`):",
                    "",
                    *_HEADER,
                    _row(f"joblib, {w} workers (the default)", r["paper_parallel"]),
                    _row("one at a time (hydra/launcher=basic)", r["paper_serial"]),
                    "",
                    f"- speedup: **{r['paper_serial']['seconds'] / r['paper_parallel']['seconds']:.2f}x**; a job here "
                    f"takes {r['paper_serial']['job_seconds'] / len(PAPER_SPREADS):.2f} s on average run one at a time, "
                    f"and keeps {r['paper_serial']['job_cpu'] / r['paper_serial']['job_seconds']:.2f} cores busy",
                ]
                if "paper_parallel" in r
                else []
            ),
            *(
                [
                    "- the machine was shared while measuring (other processes used "
                    f"{others:.1f} s "
                    "of CPU during a sweep): the parallel sweep needs both cores free, so its wall time and speedup "
                    "are pessimistic here."
                ]
                if others > 0.5
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
