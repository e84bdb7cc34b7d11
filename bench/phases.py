"""Where the backtest command's time goes: the exact command under cProfile, phase by phase.

Runs `python -m cProfile -o F -m mmrun mode=backtest data.path=FILE ...` in a fresh process (warm
numba cache) and reads the cumulative time of the functions that make up a run. The profiler
slows pure-Python parts (Hydra's config composition most), not the native work, so read the
phases against each other rather than against the plain end-to-end time.
"""

from __future__ import annotations

import pstats
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent

# (label, module file suffix, function name); a function that no longer exists shows as "-"
PHASES: List[Tuple[str, str, str]] = [
    ("whole command", "mmrun/__main__.py", "main"),
    ("imports of mmrun.runner (numba, polars, ...)", "mmrun/runner.py", "<module>"),
    ("read and check the data file", "mmrun/market/history.py", "load_rows"),
    ("replay: engine.run_bulk (the compiled kernel)", "mmrun/engine.py", "run_bulk"),
    ("replay: frames and fingerprint around the kernel", "mmrun/backtest.py", "run_backtest"),
    ("summary metrics", "mmrun/stats.py", "compute_stats"),
    ("write events.csv, events.parquet, equity.parquet", "mmrun/output.py", "write_pair"),
    ("report.png", "mmrun/report.py", "write_report"),
    # numba's first calls: its type system starts and each compiled function is loaded from the
    # cache; this lands inside whichever row above calls compiled code first (summed over calls)
    ("numba: first calls of compiled functions (inside the rows above)", "numba/core/dispatcher.py", "_compile_for_args"),
]
_SUMMED = {"_compile_for_args"}


def profile(data_path: str) -> Dict[str, float]:
    """Cumulative seconds per phase label (None when the function was not called)."""
    tmp = Path(tempfile.mkdtemp(prefix="mmrun-phases-"))
    try:
        cmd = [sys.executable, "-m", "mmrun", "mode=backtest", f"data.path={data_path}", f"hydra.run.dir={tmp / 'run'}"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)  # warm the numba cache
        prof = tmp / "prof.out"
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), *cmd[1:]], cwd=ROOT, check=True, capture_output=True)
        stats = pstats.Stats(str(prof)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
        out: Dict[str, float] = {}
        for label, suffix, name in PHASES:
            hits = [v[3] for (f, _, n), v in stats.items() if n == name and f.replace("\\", "/").endswith(suffix)]
            out[label] = (sum(hits) if name in _SUMMED else max(hits)) if hits else None
        # the replay's own share, without the kernel call inside it
        rb, kern = out.get(PHASES[4][0]), out.get(PHASES[3][0])
        if rb is not None and kern is not None:
            out[PHASES[4][0]] = rb - kern
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    for label, seconds in profile(sys.argv[1]).items():
        print(f"{label:60s} {'-' if seconds is None else f'{seconds:.3f} s'}")
