"""What the overfitting checks cost: PBO and deflated Sharpe per sweep size, holdout and folds per job.

    python bench/bench_overfit.py            # about a minute on 2 cores
    python bench/bench_overfit.py --rounds 1

1. mmrun.overfit.pbo_cscv (all 12,870 splits of 16 blocks) and deflated_sharpe on 256 periods of
   N jobs' returns, N = 8, 256, 10,000 (best of `rounds`, scipy imported beforehand).
2. One backtest of 1,000,000 one-minute bars through the command line, as is, with
   sweep.holdout=0.3 and with sweep.holdout=0.3 sweep.folds=3 (anchored: 6 more replays), timed
   from process start to exit (best of `rounds`; the numba cache warmed by an uncounted run).

Writes its section of BENCHMARKS.md (between its own markers).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import data  # noqa: E402  (bench/ modules, imported after the path is set)
import sections  # noqa: E402

BARS = 1_000_000
SIZES = (8, 256, 10_000)
VARIANTS = (("as is", ()), ("sweep.holdout=0.3", ("sweep.holdout=0.3",)),
            ("sweep.holdout=0.3 sweep.folds=3", ("sweep.holdout=0.3", "sweep.folds=3")))


def time_statistics(rounds: int) -> list:
    import scipy.stats  # noqa: F401  (imported once per sweep report; not what is measured)

    from mmrun.overfit import deflated_sharpe, pbo_cscv, sharpe_per_period

    rows = []
    for n in SIZES:
        m = np.random.default_rng(n).normal(0, 0.01, size=(256, n))
        best = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            p = pbo_cscv(m)
            deflated_sharpe(m[:, 0], sharpe_per_period(m))
            best = min(best, time.perf_counter() - t)
        rows.append((n, p.n_combinations, best))
    return rows


def time_backtests(rounds: int, path: Path, out: Path) -> list:
    def once(extra: tuple) -> float:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "mmrun", "mode=backtest", f"data.path={path}", *extra,
                            f"hydra.run.dir={out / str(time.perf_counter_ns())}"], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit(r.stderr[-2000:])
        return time.perf_counter() - t

    once(())  # warm the numba cache
    return [(name, min(once(extra) for _ in range(rounds))) for name, extra in VARIANTS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    stats = time_statistics(args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        path = data.write(Path(tmp) / "bars.parquet", BARS)
        runs = time_backtests(args.rounds, path, Path(tmp) / "runs")
    lines = [
        "## Overfitting checks",
        "",
        f"`python bench/bench_overfit.py --rounds {args.rounds}` on {sections.cpu_model()}, "
        "2 cores shared with other work while measured (best of the rounds).",
        "",
        "| jobs | PBO splits | PBO + deflated Sharpe (s) |",
        "|---:|---:|---:|",
        *[f"| {n:,} | {c:,} | {t:.3f} |" for n, c, t in stats],
        "",
        f"One backtest of {BARS:,} bars, process start to exit:",
        "",
        "| settings | seconds |",
        "|---|---:|",
        *[f"| {name} | {t:.2f} |" for name, t in runs],
    ]
    text = "\n".join(lines)
    sections.write_section("bench/bench_overfit.py", text)
    print(text)


if __name__ == "__main__":
    main()
