"""Sweeps against single runs: mmrun's launcher, Hydra's basic launcher and one plain backtest, side by side.

    python bench/bench_sweep.py                 # every sweep below (about 15 minutes on 2 cores)
    python bench/bench_sweep.py --quick         # without the 10,000-job grid
    python bench/bench_sweep.py --basic-256     # also time the 256-job grid one job at a time (long)

Each row is one kind of sweep, each command timed from process start to exit (the sweep
report and the full re-runs of the top jobs included):
- 64 backtests over a 10,000-bar file (spread x 32, sizing.order_size_pct x 2);
- 4 and 16 backtests over a 1,000,000-bar file;
- 256 backtests over the 1,000,000-bar file (spread x 64, sizing.order_size_pct x 4); the
  one-at-a-time run is skipped unless --basic-256 (it takes minutes);
- 8 paper runs on the simulated exchange, a day of market each;
with mmrun's launcher (the default: warm workers, one per core, lean job folders) and with
`hydra/launcher=basic` (Hydra's own, one job at a time in one process, the same lean folders),
against one plain `python -m mmrun` run of one job of the same sweep (a backtest of the same
file; a one-day paper run). The numba cache is warmed by an uncounted run first.

Then a 10,000-job grid over the 10,000-bar file (spread x 100, sizing.order_size_pct x 100)
with mmrun's launcher, sampling the resident memory (RSS) of the sweep's process and of its
workers twice a second: the grid must run to the end with flat memory.

Writes its part of BENCHMARKS.md (between its own markers, "## Sweeps").
"""

from __future__ import annotations

import argparse
import os
import resource
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sections  # noqa: E402  (a bench/ module, imported after the path is set)


# a sweep job's console line, "[3/8] job 2 completed: ..." (log lines start "[2026-...")
JOB_LINE = re.compile(r"^\[(\d+)/\d+\] ")


def values(n: int, first: float, step: float) -> str:
    """n comma-separated values first, first+step, ... (a sweep axis)."""
    return ",".join(f"{first + i * step:.6g}" for i in range(n))


PAPER = ("exchange.sim.duration_s=86400",)


def sweeps(small: Path, big: Path) -> List[dict]:
    """The sweeps measured: name, the sweep's arguments, the single run it is compared with, targets."""
    s32, s8, s64 = values(32, 0.0005, 0.0002), values(8, 0.0005, 0.0005), values(64, 0.0005, 0.0001)
    return [
        {"name": "64 jobs x 10,000 bars", "jobs": 64, "args": ("mode=backtest", f"data.path={small}", f"spread={s32}", "sizing.order_size_pct=0.01,0.02"),
         "single": ("mode=backtest", f"data.path={small}"), "vs_single": 2.0, "aim_single": 1.5},
        {"name": "4 jobs x 1,000,000 bars", "jobs": 4, "args": ("mode=backtest", f"data.path={big}", "spread=0.001,0.002", "sizing.order_size_pct=0.01,0.02"),
         "single": ("mode=backtest", f"data.path={big}")},
        {"name": "16 jobs x 1,000,000 bars", "jobs": 16, "args": ("mode=backtest", f"data.path={big}", f"spread={s8}", "sizing.order_size_pct=0.01,0.02"),
         "single": ("mode=backtest", f"data.path={big}")},
        {"name": "256 jobs x 1,000,000 bars", "jobs": 256, "args": ("mode=backtest", f"data.path={big}", f"spread={s64}", "sizing.order_size_pct=0.005,0.01,0.02,0.05"),
         "single": ("mode=backtest", f"data.path={big}"), "vs_single": 8.0, "aim_single": 5.0, "skip_basic": True},
        {"name": "8 paper jobs, a day of simulated market each", "jobs": 8, "args": (*PAPER, f"spread={values(8, 0.001, 0.001)}"),
         "single": PAPER, "vs_basic": 0.6},
    ]


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


def _rss_mb(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _children(pid: int) -> List[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def timed(argv: List[str], sample_memory: bool = False) -> dict:
    """Run one command to its end: wall seconds, CPU seconds (it and its children), the CPU other
    processes used meanwhile, and (sample_memory) RSS samples [(t, parent MB, largest worker MB)]."""
    cpu, busy = _children_cpu(), _machine_busy()
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: List[tuple] = []
    stop = threading.Event()
    done = [0]  # jobs finished so far, from the sweep's "[n/N] job ..." lines

    def count() -> None:
        for line in proc.stdout:  # keeps reading to the end, so the pipe never fills
            m = JOB_LINE.match(line)
            if m:
                done[0] = int(m.group(1))

    def sample() -> None:
        while not stop.wait(0.5):
            parent = _rss_mb(proc.pid)
            workers = [m for m in (_rss_mb(c) for c in _children(proc.pid)) if m is not None]
            if parent is not None:
                samples.append((time.perf_counter() - t0, parent, max(workers) if workers else None, done[0]))

    reader = threading.Thread(target=count, daemon=True)
    reader.start()
    sampler = threading.Thread(target=sample, daemon=True)
    if sample_memory:
        sampler.start()
    err = proc.stderr.read()
    proc.wait()
    reader.join()
    wall = time.perf_counter() - t0
    stop.set()
    if sample_memory:
        sampler.join()
    cpu = _children_cpu() - cpu
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:8])} ... failed ({proc.returncode}): {err.strip()[-2000:]}")
    return {"seconds": wall, "cpu_seconds": cpu, "others": max(0.0, _machine_busy() - busy - cpu), "samples": samples}


# a CPU-bound loop, its own CPU seconds printed (the parallel-capacity probe)
_SPIN = "import time\nt = time.process_time()\nx = 0\nfor i in range(4_000_000):\n    x += i\nprint(time.process_time() - t)"


def parallel_speed(tries: int = 3) -> float:
    """How fast two CPU-bound processes run at once, each, against one alone (1.0: two full cores;
    on a VM whose two vCPUs share a physical core, or a busy host, less): after a warm-up pair
    (an idle VM's cores start slow), alone before and after each pair; the median of `tries`."""
    def spin(n: int) -> List[float]:
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True) for _ in range(n)]
        return [float(p.communicate()[0]) for p in procs]

    spin(2)
    ratios = []
    for _ in range(tries):
        before, both, after = spin(1)[0], spin(2), spin(1)[0]
        ratios.append((before + after) / 2 / (sum(both) / len(both)))
    return sorted(ratios)[len(ratios) // 2]


def mmrun(*args: str) -> List[str]:
    return [sys.executable, "-m", "mmrun", *args]


def run(quick: bool, basic_256: bool, rounds: int) -> dict:
    from run_all import ensure_data, machine

    big, small = ensure_data()
    r: Dict = {"machine": machine(), "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "rows": []}
    tmp = Path(tempfile.mkdtemp(prefix="mmrun-bench-sweep-"))
    r["parallel"] = [parallel_speed()]
    try:
        print("warm-up ...", flush=True)
        timed(mmrun("mode=backtest", f"data.path={big}", f"hydra.run.dir={tmp / 'warm'}"))  # fills the numba cache
        for s in sweeps(small, big):
            row = {**s, "mmrun": [], "basic": [], "single": []}
            for i in range(rounds):  # alternating, so a slow spell of the machine hits all three alike
                print(f"{s['name']}, round {i + 1}/{rounds} ...", flush=True)
                row["single"].append(timed(mmrun(*s["single"], f"hydra.run.dir={tmp / f'single{i}'}")))
                row["mmrun"].append(timed(mmrun("--multirun", *s["args"], f"hydra.sweep.dir={tmp / f'm{i}'}")))
                if not s.get("skip_basic") or basic_256:
                    row["basic"].append(timed(mmrun("--multirun", *s["args"], "hydra/launcher=basic", f"hydra.sweep.dir={tmp / f'b{i}'}")))
                for d in tmp.iterdir():
                    if d.name != "warm":
                        shutil.rmtree(d, ignore_errors=True)
            for k in ("mmrun", "basic", "single"):
                row[k] = min(row[k], key=lambda x: x["seconds"]) if row[k] else None
            r["rows"].append(row)
        if not quick:
            print("10,000-job grid ...", flush=True)
            args = ("mode=backtest", f"data.path={small}", f"spread={values(100, 0.0005, 0.00005)}",
                    f"sizing.order_size_pct={values(100, 0.001, 0.0005)}")
            g = timed(mmrun("--multirun", *args, f"hydra.sweep.dir={tmp / 'grid'}"), sample_memory=True)
            g["jobs"] = sum(1 for p in (tmp / "grid").iterdir() if p.name.isdigit())
            r["grid"] = g
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r["parallel"].append(parallel_speed())
    r["rounds"] = rounds
    return r


def _s(x: Optional[dict]) -> str:
    return f"{x['seconds']:.2f} s" if x else "skipped"


def _verdict(value: float, target: Optional[float], aim: Optional[float] = None) -> str:
    if target is None:
        return ""
    ok = "met" if value <= target else "**missed**"
    return f"target <= {target:g}x{f' (aim {aim:g}x)' if aim else ''}: {ok}"


def _memory(g: dict) -> List[str]:
    n = g["jobs"]
    running = [p for p in g["samples"] if p[2] is not None and n * 0.1 <= p[3] < n]  # jobs running, after the first 10 %
    if len(running) < 4:
        return [f"- 10,000-job grid: {n:,} jobs in {g['seconds']:.1f} s (too short to sample memory)"]
    first, last = running[0], running[-1]
    peak_parent = max(p[1] for p in g["samples"])
    peak_worker = max(p[2] for p in g["samples"] if p[2] is not None)
    return [
        f"- 10,000-job grid over the 10,000-bar file (spread x 100, sizing.order_size_pct x 100): "
        f"{n:,} job folders in {g['seconds']:.1f} s ({g['seconds'] / max(1, n) * 1000:.1f} ms a job, "
        f"CPU {g['cpu_seconds']:.0f} s); resident memory from job {first[3]:,} to job {last[3]:,}: sweep process "
        f"{first[1]:.0f} -> {last[1]:.0f} MB, largest worker {first[2]:.0f} -> {last[2]:.0f} MB; peaks including the "
        f"end (the report reads every job folder; the workers re-run the top jobs with report.png): "
        f"{peak_parent:.0f} MB and {peak_worker:.0f} MB",
    ]


def section(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Sweeps",
        "",
        f"`python bench/bench_sweep.py` ({r['started']}; {m['cpu']}, {m['cores']} cores; best of {r['rounds']} "
        "round(s)). Each command timed from process start to exit, report and full re-runs of the top 10 jobs "
        "included. mmrun = the default launcher (warm workers, one per core); basic = `hydra/launcher=basic` "
        "(one job at a time in one process); single = one plain `python -m mmrun` run of one job of the sweep "
        "(a backtest of the same file; a one-day paper run). Both sweeps write lean job folders, except "
        "sweeps of no more jobs than sweep.top (10), whose jobs write full folders at once and re-run "
        "nothing (the 4- and 8-job sweeps). CPU: seconds of CPU the mmrun sweep used, all its processes.",
        "",
        "| sweep | mmrun | mmrun CPU | basic | single | mmrun / single | mmrun / basic | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    others = 0.0
    for row in r["rows"]:
        mm, basic, single = row["mmrun"], row["basic"], row["single"]
        vs_single = mm["seconds"] / single["seconds"]
        vs_basic = mm["seconds"] / basic["seconds"] if basic else None
        target = ""
        if row.get("vs_single"):
            target = _verdict(vs_single, row["vs_single"], row.get("aim_single")) + " of single"
        if row.get("vs_basic") and vs_basic is not None:
            target = _verdict(vs_basic, row["vs_basic"]) + " of basic"
        lines.append(
            f"| {row['name']} | {_s(mm)} | {mm['cpu_seconds']:.1f} s | {_s(basic)} | {_s(single)} | {vs_single:.2f}x | "
            f"{f'{vs_basic:.2f}x' if vs_basic is not None else '-'} | {target} |"
        )
        others = max([others] + [x["others"] for x in (mm, basic, single) if x])
    lines.append("")
    if any(row.get("skip_basic") and not row["basic"] for row in r["rows"]):
        lines.append("- the 256-job grid is not run one job at a time by default (several minutes; `--basic-256` adds it)")
    if "grid" in r:
        lines += _memory(r["grid"])
        others = max(others, r["grid"]["others"])
    if r.get("parallel"):
        lines.append(
            "- two CPU-bound processes at once ran each at "
            + " and ".join(f"{100 * v:.0f} %" for v in r["parallel"])
            + " of one alone's speed (before and after the measurements): the parallel sweeps get about "
            "that share of two full cores"
        )
    if others > 0.5:
        lines.append(
            f"- the machine was shared while measuring (other processes used up to {others:.1f} s of CPU during one "
            "command): wall times, and the parallel sweeps most, are pessimistic here."
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="timed rounds of each command (the best counts)")
    p.add_argument("--quick", action="store_true", help="leave out the 10,000-job grid")
    p.add_argument("--basic-256", action="store_true", help="also run the 256-job grid one job at a time")
    p.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = p.parse_args()
    text = section(run(args.quick, args.basic_256, args.rounds))
    print(text)
    if not args.no_write:
        sections.write_section("bench/bench_sweep.py", text)


if __name__ == "__main__":
    main()
