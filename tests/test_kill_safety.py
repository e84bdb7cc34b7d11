"""Whatever stops a paper run, what it wrote stays readable up to its last complete cycle: a full
disk (a mocked write failing with ENOSPC), a SIGKILL at a random cycle (then recovered and
replayed), a half-written record or line."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from clirun import ROOT, run_mmrun
from mmrun import record
from mmrun.__main__ import CONF_DIR
from mmrun.errors import OutputError
from mmrun.record import EVENT_COLUMNS, EventStream, cut_to_whole_lines, read_events
from mmrun.recorder import JOURNAL, Journal, PairRecorder, read_journal, split_journal
from mmrun.runner import run


def _cfg(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


class DiskFills:
    """os.write that succeeds for `budget` bytes in all, then writes what still fits and fails with ENOSPC."""

    def __init__(self, budget: int):
        self.left = budget
        self.failed = 0

    def __call__(self, fd, data):
        if self.left <= 0:
            self.failed += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self.left)
        written = os.write(fd, bytes(data[:n]))
        self.left -= written
        return written


def test_a_failed_write_cuts_events_csv_back_to_its_last_whole_line(tmp_path, monkeypatch):
    ev = EventStream(tmp_path / "events.csv")
    ev.write(1000, "QUOTE", "BTC/USDT", side="buy", price=99.0, amount=1.0, base=0.0, quote=100.0, mid=100.0)
    size = (tmp_path / "events.csv").stat().st_size
    monkeypatch.setattr(record, "_os_write", DiskFills(20))  # room for 20 bytes of the next line
    with pytest.raises(OutputError, match=f"{tmp_path}: cannot write events.csv: No space left on device"):
        ev.write(2000, "QUOTE", "BTC/USDT", side="sell", price=101.0, amount=1.0, base=0.0, quote=100.0, mid=100.0)
    ev.close()
    text = (tmp_path / "events.csv").read_text()
    assert len(text) == size and text.endswith("\n") and text.count("\n") == 2


def test_a_journal_keeps_whole_records_only(tmp_path, monkeypatch):
    j = Journal(tmp_path / "j.rows", 3)
    j.append(np.array([1.0, 2.0, 3.0]).tobytes())
    monkeypatch.setattr(record, "_os_write", DiskFills(10))
    with pytest.raises(OutputError, match="cannot write j.rows"):
        j.append(np.array([4.0, 5.0, 6.0]).tobytes())
    j.close()
    assert (tmp_path / "j.rows").stat().st_size == 24
    # a record cut short by a kill (no chance to cut it back) is left out on reading
    with open(tmp_path / "j.rows", "ab") as f:
        f.write(np.array([7.0, 8.0]).tobytes())
    assert read_journal(tmp_path / "j.rows", 3).tolist() == [[1.0, 2.0, 3.0]]


def test_cut_to_whole_lines(tmp_path):
    p = tmp_path / "x.csv"
    p.write_bytes(b"a,b\n1,2\n3,")
    assert cut_to_whole_lines(p) == 2 and p.read_bytes() == b"a,b\n1,2\n"
    assert cut_to_whole_lines(p) == 0


@pytest.mark.parametrize("budget", [3000, 60_000, 400_000])
def test_a_full_disk_ends_the_run_with_one_error_and_readable_files(tmp_path, monkeypatch, budget):
    disk = DiskFills(budget)
    monkeypatch.setattr(record, "_os_write", disk)
    with pytest.raises(OutputError, match=f"{tmp_path}: cannot write .*: No space left on device"):
        run(_cfg("run.max_ticks=3000"), tmp_path)
    assert disk.failed >= 1
    names = {p.name for p in tmp_path.iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]  # no temporary file left
    text = (tmp_path / "events.csv").read_text()
    assert text.endswith("\n") and text.splitlines()[0] == ",".join(EVENT_COLUMNS)
    read_events(tmp_path / "events.csv")  # readable as a whole
    cycles, _, _ = split_journal(tmp_path / JOURNAL)
    assert (tmp_path / JOURNAL).stat().st_size % (8 * 14) == 0  # whole records only
    # whatever made it to disk is a consistent run up to its last recorded cycle: recover it
    monkeypatch.setattr(record, "_os_write", os.write)
    from mmrun.recover import recover

    from omegaconf import OmegaConf

    (tmp_path / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(_cfg("run.max_ticks=3000"), tmp_path / ".hydra" / "config.yaml")
    s = recover(tmp_path)
    assert s["status"] == "interrupted" and s["ticks"] == len(cycles)
    assert pl.read_parquet(tmp_path / "market.parquet").height == len(cycles)
    assert pl.read_parquet(tmp_path / "returns.parquet").columns == ["period", "start_ms", "end_ms", "equity", "return"]


def test_the_cli_reports_a_full_disk_as_one_line(tmp_path):
    # a real full disk in a subprocess: its writes go through a wrapper that fails after 50 kB
    code = (
        "import errno, os, sys\n"
        "import mmrun.record as r\n"
        "left = [50_000]\n"
        "def w(fd, data):\n"
        "    if left[0] <= 0: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
        "    n = os.write(fd, bytes(data[: left[0]])); left[0] -= n; return n\n"
        "r._os_write = w\n"
        "from mmrun.__main__ import main\n"
        f"sys.argv = ['mmrun', 'run.max_ticks=3000', 'hydra.run.dir={tmp_path}']\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"mmrun: error: {tmp_path}: cannot write events.csv: No space left on device", r.stderr
    assert (tmp_path / "events.csv").read_text().endswith("\n")
    assert not list(tmp_path.glob("*.tmp"))


def _events_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_cycle_then_recover_and_replay(tmp_path, seed):
    rng = random.Random(seed)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mmrun", "exchange.sim.duration_s=10000000", "seed=7", f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines = rng.randrange(50, 20_000)
    try:
        end = time.time() + 120
        while _events_lines(out / "events.csv") < lines and proc.poll() is None and time.time() < end:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "summary.json").exists() and (out / JOURNAL).is_file()

    r = subprocess.run([sys.executable, "-m", "mmrun.recover", str(out)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["ticks"] > 0
    assert not (out / JOURNAL).exists()
    assert (out / "events.csv").read_text().endswith("\n")
    equity = pl.read_parquet(out / "equity.parquet")
    assert equity.height == s["ticks"] == pl.read_parquet(out / "market.parquet").height

    # the recovered market replays to the same run
    b = run_mmrun("mode=backtest", "seed=7", f"data.path={out / 'market.parquet'}", run_dir=tmp_path / "bt")
    assert b.returncode == 0, b.stderr
    bs = json.loads((tmp_path / "bt" / "summary.json").read_text())
    for key in ("trades", "final_value", "final_base", "final_quote", "fees", "ticks", "data_fingerprint"):
        assert s[key] == bs[key], key
    assert equity.equals(pl.read_parquet(tmp_path / "bt" / "equity.parquet"))
    # every fill the recovered summary counts is a FILL line of events.csv (which may also hold
    # the lines of the cycle that was being recorded when the kill came)
    fills = read_events(out / "events.csv").filter(pl.col("event_type") == "FILL")
    assert s["trades"] <= fills.height <= s["trades"] + 2
    # the summary is the replay's: its fills are the FILL lines up to the last recorded cycle
    last = pl.read_parquet(out / "equity.parquet")["ts_ms"][-1]
    assert s["trades"] == read_events(out / "events.csv").filter(
        (pl.col("event_type") == "FILL")
        & (pl.col("timestamp").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ").dt.epoch("ms") <= last)).height


def test_a_killed_runs_market_replays_without_a_recovery_step(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mmrun", "exchange.sim.duration_s=10000000", f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 120
        while _events_lines(out / "events.csv") < 3000 and time.time() < end:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "market.parquet").exists()
    b = run_mmrun("mode=backtest", f"data.path={out / 'market.parquet'}", run_dir=tmp_path / "bt")
    assert b.returncode == 0, b.stderr
    n = pl.read_parquet(out / "market.parquet").height
    assert json.loads((tmp_path / "bt" / "summary.json").read_text())["ticks"] == n > 0


def test_a_completed_paper_run_leaves_no_journal(tmp_path):
    rec = PairRecorder("BTC/USDT", tmp_path)
    rec.cycle((1000, 100.0, 99.0, 101.0, 0.0, 10.0, 10.0), (1000, 99.9, 100.1, 100.0, float("nan"), float("nan"), 0.0))
    out = rec.outcome("completed", 0)
    assert out.equity.height == 1 and pl.read_parquet(tmp_path / "market.parquet").height == 1
    r = run_mmrun("run.max_ticks=20", run_dir=tmp_path / "cli")
    assert r.returncode == 0, r.stderr
    assert not list((tmp_path / "cli").glob(".*.rows")) and not list((tmp_path / "cli").glob("*.tmp"))
