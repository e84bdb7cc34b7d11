"""CPU time per picture: report.png (mmrun.report.write_report) and heatmap.png (heatmap_picture).

    python bench/bench_report.py                       # print the table
    python bench/bench_report.py --against 463407a     # and the same pictures by report.py at a revision

report.png: backtests of the 10,000-bar and 1,000,000-bar benchmark files (bench/data.py,
made in bench/.data/ when missing) at a few spreads, run in this process (not timed); then
each run's picture is written `rounds` times, a run after another as a sweep's full re-runs
do (one figure kept per process), after an uncounted first picture. heatmap.png: the 64-job
grid of bench_sweep.py (spread x 32, sizing.order_size_pct x 2: more values per axis than
the sweep draws cells for, so a scatter) and an 8 x 8 grid with a number in each cell, on
made-up objective values. Figures: CPU time of this process (time.process_time), median and
best per picture, and the PNG size.

--against REV: mmrun/report.py as it was at git revision REV, loaded beside this one, each
picture drawn by both in turn (alternating which goes first): on a machine shared with other
work, whose load moves every figure by 10-30 %, the ratio of the two is the figure to trust.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import data  # noqa: E402  (bench/ modules, imported after the path is set)

DATA_DIR = ROOT / "bench" / ".data"
SPREADS = {10_000: (0.001, 0.0015, 0.002, 0.003), 1_000_000: (0.001, 0.002, 0.004)}


def outcomes(bars: int) -> list:
    """(equity, fills, summary, strategy, spread) of one backtest per spread of SPREADS[bars]."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import mmrun.output as output
    import mmrun.runner as runner
    from mmrun.__main__ import CONF_DIR
    from mmrun.config import validate

    path = DATA_DIR / f"candles_{bars}.parquet"
    if not path.exists():
        data.write(path, bars)
    runs = []
    for spread in SPREADS[bars]:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="bench_report"):
            cfg = compose(config_name="config", overrides=["mode=backtest", f"data.path={path}", f"spread={spread}"])
        specs = validate(cfg)
        out = runner._run_backtests(cfg, specs, {})[0]
        summary = output.pair_summary(cfg, specs[0], out)
        runs.append((out.equity, out.fills, summary, OmegaConf.to_container(cfg.strategy), cfg.spread))
    return runs


def sweep_table(nx: int, ny: int) -> pl.DataFrame:
    """A sweep summary of nx x ny jobs (made-up objective values, one job failed)."""
    rng = np.random.default_rng(0)
    rows = [{"job": i * ny + j, "spread": round(0.0005 + 0.0002 * i, 6), "sizing.order_size_pct": 0.01 * (j + 1),
             "total_return_pct": float(rng.normal(0.0, 5.0)), "pair": "BTC/USDT", "strategy": "symmetric",
             "exchange": "file", "mode": "backtest", "data_source": "candles_10000.parquet"}
            for i in range(nx) for j in range(ny)]
    table = pl.DataFrame(rows).sort("total_return_pct", descending=True)
    ranks = list(range(1, table.height)) + [None]
    return table.with_columns(pl.Series("rank", ranks, dtype=pl.Int64))


def module_at(revision: str, folder: Path):
    """mmrun/report.py at a git revision, imported as its own module."""
    source = subprocess.run(["git", "show", f"{revision}:mmrun/report.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = folder / "report_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("report_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(cases: list, versions: dict, rounds: int, folder: Path) -> list:
    """[(case, version, [CPU s per picture], PNG bytes)]: every case's pictures drawn by every
    version in turn, `rounds` times, after one uncounted picture per case and version."""
    times = {(c, v): [] for c, _ in cases for v in versions}
    sizes = {}
    for r in range(-1, rounds):
        for k, (case, pictures) in enumerate(cases):
            for i, picture in enumerate(pictures):
                order = list(versions.items())
                if (r + k + i) % 2:
                    order.reverse()
                for name, module in order:
                    out = folder / f"{name}-{case}-{i}".replace(" ", "_").replace(",", "")
                    out.mkdir(exist_ok=True)
                    start = time.process_time()
                    path = picture(module, out)
                    spent = time.process_time() - start
                    if r >= 0:
                        times[case, name].append(spent)
                        sizes[case, name] = path.stat().st_size
    return [(c, v, times[c, v], sizes[c, v]) for c, _ in cases for v in versions]


def report_pictures(runs: list) -> list:
    return [lambda m, out, run=run: m.write_report(out, *run) for run in runs]


def heatmap(table: pl.DataFrame) -> list:
    def picture(m, out):
        path = out / "heatmap.png"
        m.heatmap_picture(table, ["spread", "sizing.order_size_pct"], "total_return_pct", "maximize", path, max_grid_axis=30)
        return path
    return [picture]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="pictures per run and version (default 5)")
    ap.add_argument("--against", metavar="REV", help="also draw every picture with mmrun/report.py at this git revision")
    args = ap.parse_args()

    from mmrun import report

    print("backtests (not timed) ...", flush=True)
    cases = [(f"report.png, {bars:,} bars ({len(SPREADS[bars])} runs)", report_pictures(outcomes(bars))) for bars in SPREADS]
    cases += [("heatmap.png, 64 jobs (32 x 2: scatter)", heatmap(sweep_table(32, 2))),
              ("heatmap.png, 8 x 8 grid", heatmap(sweep_table(8, 8)))]
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        versions = {"this checkout": report}
        if args.against:
            versions[args.against] = module_at(args.against, Path(tmp))
        rows = measure(cases, versions, args.rounds, Path(tmp))
    print(f"\nCPU time per picture (time.process_time), {args.rounds} rounds; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3]) if Path('/proc/loadavg').exists() else '?'}")
    print("| picture | version | median ms | best ms | PNG KiB |\n|---|---|---:|---:|---:|")
    for case, version, spent, size in rows:
        print(f"| {case} | {version} | {np.median(spent) * 1e3:.1f} | {min(spent) * 1e3:.1f} | {size / 1024:.0f} |")
    if args.against:
        print(f"\nthis checkout / {args.against}, median of each picture's ratio (drawn back to back):")
        by = {(c, v): s for c, v, s, _ in rows}
        for case, _ in cases:
            ratio = np.array(by[case, "this checkout"]) / np.array(by[case, args.against])
            print(f"- {case}: {np.median(ratio):.2f} ({(1 - np.median(ratio)) * 100:.0f} % less CPU)")


if __name__ == "__main__":
    main()
