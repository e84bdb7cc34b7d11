"""Kernel throughput per strategy, side by side: engine.run_bulk over the same one-minute bars.

    python bench/bench_strategies.py            # print the table
    python bench/bench_strategies.py --write    # and write the "## Strategies" section of BENCHMARKS.md
    python bench/bench_strategies.py --against DIR [--rounds 5] [--write]
        # and each case against another checkout (e.g. `git worktree add /tmp/base f58ee40`)

Each configuration replays 1,000,000 synthetic one-minute candles (bench/data.py, seed 7;
close stands for bid, ask and last, no tick grid) through the compiled kernel, compile
excluded (one warm-up call), best of REPEATS runs by CPU time of this process. Every strategy
is judged against `symmetric` measured in the same run: the target is at most 2x its time.

--against: one worker process per checkout (this one and DIR, each with its own kernel and
numba cache folders), niced; every round measures each case in both, alternating which goes
first, best of 3 calls each; a case's figure is its best round. Alternating is what makes the
two comparable on a machine shared with other work, whose load moves every figure by 10-20 %.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

if __name__ == "__main__" and "--worker" in sys.argv:  # the checkout measured comes first on the path
    sys.path.insert(0, sys.argv[sys.argv.index("--worker") + 1])

import sections  # noqa: E402
from data import candles  # noqa: E402

from mmrun import engine  # noqa: E402

BARS = 1_000_000
REPEATS = 10

# (label, fill model, make_params keywords); every strategy with its shipped defaults
CASES = [
    ("symmetric", "touch", dict(strategy="symmetric")),
    ("inventory_skew", "touch", dict(strategy="inventory_skew")),
    ("avellaneda_stoikov", "touch", dict(strategy="avellaneda_stoikov", gamma=20.0, kappa=400.0, min_spread=0.005,
                                         min_profit_threshold=0.002, dt_s=60.0)),
    ("symmetric, 3 levels", "touch", dict(strategy="symmetric", levels=3, level_spread_step=0.001)),
    ("inventory_skew, 3 levels", "touch", dict(strategy="inventory_skew", levels=3, level_spread_step=0.001)),
    ("avellaneda_stoikov, 3 levels", "touch", dict(strategy="avellaneda_stoikov", levels=3, level_spread_step=0.001,
                                                   gamma=20.0, kappa=400.0, min_spread=0.005, dt_s=60.0)),
    ("symmetric", "instant", dict(strategy="symmetric")),
    ("inventory_skew", "instant", dict(strategy="inventory_skew")),
    ("avellaneda_stoikov", "instant", dict(strategy="avellaneda_stoikov", gamma=20.0, kappa=400.0, min_spread=0.005,
                                           dt_s=60.0)),
]


def columns():
    df = candles(BARS)
    close = df["close"].to_numpy()
    cols = [close, close, close, df["low"].to_numpy(), df["high"].to_numpy(), df["volume"].to_numpy()]
    return [np.ascontiguousarray(c, dtype=np.float64) for c in cols]


def measure(cols, fill_model: str, kw: dict) -> dict:
    """Best-of-REPEATS CPU seconds of one run_bulk call, and its fill count.

    One warm-up call first (compile, or load from the cache). As in bench/kernel.py, each
    call's output stays alive while the next one runs, so every call writes into fresh memory
    as a real backtest does.
    """
    params = _params(fill_model, kw)
    out = engine.run_bulk(params, engine.make_state(0.0, 10_000.0, params), *cols)
    best = float("inf")
    for _ in range(REPEATS):
        state = engine.make_state(0.0, 10_000.0, params)
        t = time.process_time()
        out = engine.run_bulk(params, state, *cols)
        best = min(best, time.process_time() - t)
    return {"seconds": best, "bars_per_s": len(cols[0]) / best, "fills": len(out[1])}


def _params(fill_model: str, kw: dict):
    return engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.001, fill_model, None, 0.0, **kw)


def _state(params):
    """A fresh state (an earlier checkout's make_state takes no params)."""
    import inspect

    if "params" in inspect.signature(engine.make_state).parameters:
        return engine.make_state(0.0, 10_000.0, params)
    return engine.make_state(0.0, 10_000.0)


def worker() -> None:
    """--worker DIR: serve measurements of DIR's engine over stdin/stdout ('case repeats' lines in,
    JSON [best CPU seconds, fills, final quote balance] out), after compiling every case."""
    cols = columns()
    params = [_params(fm, kw) for _, fm, kw in CASES]
    for p in params:
        engine.run_bulk(p, _state(p), *cols)
    print(json.dumps({"engine": engine.__file__}), flush=True)
    for line in sys.stdin:
        i, repeats = map(int, line.split())
        best, out = float("inf"), None
        for _ in range(repeats):
            state = _state(params[i])
            t = time.process_time()
            out = engine.run_bulk(params[i], state, *cols)
            best = min(best, time.process_time() - t)
        print(json.dumps([best, len(out[1]), float(out[4][-1])]), flush=True)


def against(other: str, rounds: int) -> str:
    """The side-by-side table of this checkout and `other` (see the module docstring)."""
    here = str(ROOT)
    other = str(Path(other).resolve())
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-against-") as tmp:
        procs = {}
        for tag, root in (("this", here), ("other", other)):
            env = dict(os.environ, NUMBA_CACHE_DIR=f"{tmp}/{tag}-numba", MMRUN_KERNEL_DIR=f"{tmp}/{tag}-kernels")
            procs[tag] = subprocess.Popen(
                ["nice", "-n", "5", sys.executable, str(Path(__file__).resolve()), "--worker", root],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        try:
            for tag, root in (("this", here), ("other", other)):
                line = procs[tag].stdout.readline()
                if not line or not json.loads(line)["engine"].startswith(root):
                    raise SystemExit(f"bench_strategies: the worker for {root} did not start (or imported mmrun from "
                                     f"elsewhere: {line.strip()!r})")
            best = {}
            same = {}
            for r in range(rounds):
                for i in range(len(CASES)):
                    res = {}
                    for tag in (("this", "other") if r % 2 == 0 else ("other", "this")):
                        procs[tag].stdin.write(f"{i} 3\n")
                        procs[tag].stdin.flush()
                        res[tag] = json.loads(procs[tag].stdout.readline())
                        best[(tag, i)] = min(best.get((tag, i), float("inf")), res[tag][0])
                    same[i] = res["this"][1:] == res["other"][1:]
        finally:
            for p in procs.values():
                p.stdin.close()
                p.wait()
    load_after = os.getloadavg()
    commit = _commit(other)
    lines = [
        f"`python bench/bench_strategies.py --against DIR --rounds {rounds}` — this checkout ({_commit(here)}) "
        f"and DIR = a checkout of {commit} measured alternately (see the script's docstring), best of {rounds} "
        f"rounds x 3 calls each, niced; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} "
        "after: the machine was shared with other work.",
        "",
        f"| strategy | fill model | M bars/s {commit} | M bars/s here | here / {commit} | same fills and balance |",
        "|---|---|---:|---:|---:|---|",
    ]
    for i, (label, fm, _) in enumerate(CASES):
        a, b = best[("other", i)], best[("this", i)]
        lines.append(f"| {label} | {fm} | {BARS / a / 1e6:.1f} | {BARS / b / 1e6:.1f} | {a / b:.2f} x | "
                     f"{'yes' if same[i] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _commit(root: str) -> str:
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return Path(root).name


def _levels(label: str) -> str:
    return label.partition(", ")[2]


def machine() -> str:
    import numba

    return (f"{sections.cpu_model()}, {os.cpu_count()} cores; {platform.system()} {platform.release()}; Python "
            f"{platform.python_version()}, numba {numba.__version__}, numpy {np.__version__}")


def run() -> str:
    load_before = os.getloadavg()
    cols = columns()
    # compile (or load) every variant and let the process's memory grow to its working size
    # first, so that the first case measured does not pay for either
    for _, fm, kw in CASES:
        params = _params(fm, kw)
        engine.run_bulk(params, engine.make_state(0.0, 10_000.0, params), *cols)
    results = [(label, fm, measure(cols, fm, kw)) for label, fm, kw in CASES]
    load_after = os.getloadavg()
    # the baseline of each case: symmetric with the same levels and fill model
    base = {(_levels(label), fm): r["seconds"] for label, fm, r in results if label.startswith("symmetric")}
    lines = [
        "## Strategies",
        "",
        f"`python bench/bench_strategies.py --write` — kernel throughput (`engine.run_bulk`) per strategy on "
        f"{BARS:,} synthetic one-minute bars (bench/data.py, seed 7), compile excluded, best of {REPEATS} calls by CPU "
        "time, shipped defaults (`spread=0.002`, `fees.maker=0.001`, 1 % orders).",
        f"Machine: {machine()}.",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average (1 min) {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after (other work on the machine slows every figure).",
        "",
        "| strategy | fill model | M bars/s | ms | fills | time vs symmetric (same levels, fill model) | target <= 2x |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for label, fm, r in results:
        ratio = r["seconds"] / base[(_levels(label), fm)]
        ok = "met" if ratio <= 2.0 else "**missed**"
        lines.append(
            f"| {label} | {fm} | {r['bars_per_s'] / 1e6:.1f} | {r['seconds'] * 1e3:.1f} | {r['fills']:,} | {ratio:.2f} x | {ok} |"
        )
    sym = base[("", "touch")]
    lines += [
        "",
        f"`symmetric` with `fills=touch`: {BARS / sym / 1e6:.1f} M bars/s (target >= 30 M bars/s: "
        f"{'met' if BARS / sym >= 30e6 else '**missed**'}). Each (strategy, fill model) is its own compiled "
        "variant, so the strategies do not slow `symmetric`. The figures move by 10-20 % from run to run "
        "with the machine's other load.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    ap.add_argument("--against", metavar="DIR", help="also measure each case against this checkout, alternately")
    ap.add_argument("--rounds", type=int, default=5, help="--against: rounds (default 5)")
    ap.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker()
        return
    text = run()
    if args.against:
        text = text.rstrip("\n") + "\n\n" + against(args.against, args.rounds)
    print(text)
    if args.write:
        sections.write_section("bench/bench_strategies.py", text)


if __name__ == "__main__":
    main()
