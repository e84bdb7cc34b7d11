"""The backtest command end to end, in a fresh process each time: wall time and peak memory.

`python -m mmrun mode=backtest data.path=FILE hydra.run.dir=...`; the numba cache is warmed by a
first run that is not counted. Peak memory is the child's maximum resident set size (wait4); its
CPU time (user + system) is reported too, being less disturbed than wall time by other work on
the machine.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parent.parent


def command(data_path: str, run_dir: str) -> List[str]:
    return [sys.executable, "-m", "mmrun", "mode=backtest", f"data.path={data_path}", f"hydra.run.dir={run_dir}"]


# Started through this small launcher: a child forked straight from the benchmark process
# would count the parent's pages (the loaded candles, numba) in its peak until exec.
_LAUNCHER = """
import os, subprocess, sys, time
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(p.pid, 0)
dt = time.perf_counter() - t
code = os.waitstatus_to_exitcode(status)
if code != 0:
    sys.stderr.write(p.stderr.read().decode())
    sys.exit(code)
print(dt, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def run_once(data_path: str) -> Dict[str, float]:
    """One run: seconds (wall, process start to exit), CPU seconds (user + system), peak RSS in MB."""
    out = tempfile.mkdtemp(prefix="mmrun-bench-")
    try:
        res = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, *command(data_path, out)], cwd=ROOT, capture_output=True, text=True
        )
        if res.returncode != 0:
            raise RuntimeError(f"backtest failed ({res.returncode}): {res.stderr.strip()}")
        seconds, max_rss_kb, cpu = res.stdout.split()
        return {"seconds": float(seconds), "peak_mb": float(max_rss_kb) / 1024.0, "cpu_seconds": float(cpu)}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure(data_path: str, repeats: int = 3) -> Dict[str, float]:
    """Median wall time and the largest peak memory over `repeats` runs after one warm-up run."""
    run_once(data_path)
    runs = [run_once(data_path) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "seconds_min": min(r["seconds"] for r in runs),
        "seconds_max": max(r["seconds"] for r in runs),
        "peak_mb": max(r["peak_mb"] for r in runs),
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "repeats": repeats,
    }
