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


def test_sweep_section_judges_the_speedup_and_the_best_a_launcher_could_do():
    import bench_sweep

    def sweep(seconds, first, jobs_phase, tail, job_s, job_cpu, others=0.0):
        return {"seconds": seconds, "cpu_seconds": job_cpu + 3.0, "others": others, "first_job": first,
                "jobs_phase": jobs_phase, "tail": tail, "job_seconds": job_s, "job_cpu": job_cpu}

    serial = sweep(12.0, 2.0, 9.0, 1.0, 8.0, 10.0)
    # perfect sharing of the jobs' CPU and Hydra's 1 s between jobs: 2 + 1 + (10 + 1) / 2
    assert bench_sweep.best_possible(serial, 2) == 8.5
    r = {"machine": {"cpu": "Test CPU", "cores": 2}, "started": "2026-11-24 07:00 UTC", "rounds": 1, "workers": 2,
         "kernel": {"bars": 1_000_000, "seconds": 0.03}, "serial": serial,
         "parallel": sweep(10.0, 2.5, 6.0, 1.5, 11.0, 11.0)}
    text = bench_sweep.section(r)
    assert "**1.20x** on 2 cores (target >= 1.7x: **missed**)" in text
    assert "jobs alone (first job start to last job end): 1.50x" in text
    assert "8.50 s, i.e. **1.41x**" in text and "keeps 1.25 cores busy" in text
    assert "shared while measuring" not in text
    r["parallel"] = sweep(6.0, 1.0, 4.5, 0.5, 8.0, 8.0, others=2.0)
    r["paper_serial"], r["paper_parallel"] = sweep(16.0, 2.0, 13.0, 1.0, 12.0, 12.0), sweep(10.0, 2.5, 7.0, 0.5, 12.5, 12.5)
    text = bench_sweep.section(r)
    assert "**2.00x** on 2 cores (target >= 1.7x: met)" in text and "other processes used 2.0 s" in text
    assert "8 paper runs on the simulated exchange" in text
    assert "- speedup: **1.60x**; a job here takes 1.50 s on average run one at a time, and keeps 1.00 cores busy" in text
