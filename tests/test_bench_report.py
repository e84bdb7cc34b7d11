"""bench/run_all.py's report: targets judged right, and BENCHMARKS.md sections of others kept."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import run_all  # noqa: E402
import sections  # noqa: E402


def fake_results(kernel_s=0.025, big_s=2.0, small_s=1.6, peak=420.0):
    n = 1_000_000
    return {
        "machine": {"cpu": "Test CPU", "cores": 2, "ram_gb": 8.0, "os": "Linux", "python": "3.11.7",
                    "versions": {"numba": "0.60"}, "load": (0.1, 0.2, 0.3)},
        "started": "2026-11-24 07:00 UTC",
        "kernel_touch": {"bars": n, "seconds": kernel_s, "bars_per_s": n / kernel_s, "fills": 1000},
        "kernel_instant": {"bars": n, "seconds": 0.05, "bars_per_s": n / 0.05, "fills": 2 * n},
        "bare_numba": {"bars": n, "seconds": 0.005, "bars_per_s": n / 0.005},
        "python_start": 0.03,
        "e2e_big": {"seconds": big_s, "seconds_min": big_s, "seconds_max": big_s, "peak_mb": peak, "cpu_seconds": big_s, "repeats": 3},
        "e2e_small": {"seconds": small_s, "seconds_min": small_s, "seconds_max": small_s, "peak_mb": 230.0, "cpu_seconds": small_s, "repeats": 3},
        "python_loop": {"bars": n, "seconds": 0.4, "bars_per_s": n / 0.4},
        "pandas": {"bars": 200_000, "seconds": 2.5, "bars_per_s": 80_000.0},
        "load_end": (0.1, 0.2, 0.3),
        "phases": {"whole command": 2.5, "report.png": None},
    }


def test_report_states_each_target_and_the_ratios():
    text = run_all.report(fake_results())
    assert "| 40.0 M bars/s (25.0 ms, 1,000 fills) | >= 30 M bars/s | met |" in text
    assert "| 1,000,000 bars / 10,000 bars | 1.25 x | <= 1.5 x | met |" in text
    assert "420 MB (10,000 bars: 230 MB) | <= 500 MB | met |" in text
    assert "| original style: pandas `iterrows` (first 200,000 bars) | 80 k | 250 x faster |" in text
    assert "| bare numba loop, no logging (the ceiling) | 200.0 M | 10.0 x slower |" in text
    assert "Test CPU, 2 cores, 8.0 GB RAM" in text
    assert "| whole command | 2.500 |" in text and "| report.png | - |" in text
    slow = run_all.report(fake_results(kernel_s=0.05, big_s=3.2, small_s=2.0, peak=600.0))
    assert slow.count("**missed**") == 4


def test_write_section_replaces_only_its_own_block(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    sections.write_section("bench/run_all.py", "## Mine\nfirst\n", md)
    assert md.read_text().startswith("# Benchmarks\n")
    md.write_text(md.read_text() + "\n## Sweeps (someone else's)\nkept\n")
    md.write_text("# Benchmarks\n\n## Paper loop (another one)\nalso kept\n\n" + md.read_text().split("\n\n", 2)[2])
    sections.write_section("bench/run_all.py", "## Mine\nsecond\n", md)
    text = md.read_text()
    assert "second" in text and "first" not in text
    assert "## Sweeps (someone else's)\nkept" in text and "## Paper loop (another one)\nalso kept" in text
    assert text.count(run_all.BEGIN) == 1 and text.count(run_all.END) == 1


def test_sweep_section_judges_each_sweep_against_its_target():
    import bench_sweep

    def t(seconds, others=0.0):
        return {"seconds": seconds, "cpu_seconds": seconds, "others": others, "samples": []}

    rows = bench_sweep.sweeps(Path("small.parquet"), Path("big.parquet"))
    timings = [
        (t(3.0), t(20.0), t(2.0)),   # 64 x 10k: 1.5x single, met
        (t(3.5), t(4.0), t(2.5)),    # 4 x 1M: no target
        (t(6.0), t(11.0), t(2.5)),   # 16 x 1M: no target
        (t(22.5), None, t(2.5)),     # 256 x 1M: 9x single, missed; basic skipped
        (t(6.0), t(12.0, others=1.5), t(1.5)),  # 8 paper: 0.5x basic, met
    ]
    for row, (mm, basic, single) in zip(rows, timings):
        row.update(mmrun=mm, basic=basic, single=single)
    samples = [(i * 0.5, 300.0 + (i == 30) + 50 * (i == 40), 200.0, i * 250) for i in range(41)]
    grid = {"seconds": 300.0, "cpu_seconds": 590.0, "others": 0.0, "jobs": 10_000, "samples": samples}
    r = {"machine": {"cpu": "Test CPU", "cores": 2}, "started": "2026-11-24 07:00 UTC", "rounds": 1, "rows": rows, "grid": grid}
    text = bench_sweep.section(r)
    assert "| 64 jobs x 10,000 bars | 3.00 s | 3.0 s | 20.00 s | 2.00 s | 1.50x | 0.15x | target <= 2x (aim 1.5x): met of single |" in text
    assert "| 256 jobs x 1,000,000 bars | 22.50 s | 22.5 s | skipped | 2.50 s | 9.00x | - | target <= 8x (aim 5x): **missed** of single |" in text
    assert "| 8 paper jobs, a day of simulated market each | 6.00 s | 6.0 s | 12.00 s | 1.50 s | 4.00x | 0.50x | target <= 0.6x: met of basic |" in text
    assert "--basic-256" in text
    assert "10,000 job folders in 300.0 s (30.0 ms a job" in text
    assert "from job 1,000 to job 9,750: sweep process 300 -> 300 MB, largest worker 200 -> 200 MB" in text
    assert "350 MB and 200 MB" in text
    assert "other processes used up to 1.5 s" in text
