"""mmrun's sweep launcher: cheap composition equals Hydra's (mmrun/compose.py), warm workers
(mmrun/workers.py) stream results and die with their parent, and the command line's sweeps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from clirun import ROOT
from mmrun.workers import WarmPool


JOBS = [
    ["mode=backtest", "spread=0.001", "sizing.order_size_pct=0.02"],
    ["mode=backtest", "spread=0.003", "sizing.order_size_pct=0.01"],
    ["exchange=binance", "spread=0.003", "+exchange.sim.prices.ABC=3", "strategy=avellaneda_stoikov", "strategy.gamma=3"],
    ["strategy=inventory_skew", "strategy.target_base_share=0.4", "~exchange.sim.prices.ETH", "fills=instant"],
    ["hydra.job.name=other", "spread=0.004", "run.max_ticks=10"],
]


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)


@pytest.mark.parametrize("overrides", JOBS, ids=[" ".join(j) for j in JOBS])
def test_cheap_composition_equals_hydras(loader_and_master, overrides):
    from mmrun.compose import JobComposer

    loader, master = loader_and_master
    composer = JobComposer(loader, master)
    composer.compose(["mode=backtest", "spread=0.005"])  # a template in use already
    want = _plain(loader.load_sweep_config(master, overrides))
    got = composer.compose(overrides)
    assert _plain(got) == want
    task, hydra_cfg = composer.compose_job(overrides)
    want_task = {k: v for k, v in want.items() if k != "hydra"}
    assert _plain(task) == want_task
    assert _plain(hydra_cfg)["hydra"] == want["hydra"]


@pytest.mark.parametrize("bad", [["spread=abc"], ["spreadx=1"], ["strategy.gamma=1"], ["+spread=1"], ["~nothing"]])
def test_bad_overrides_fail_as_in_hydra(loader_and_master, bad):
    from mmrun.compose import JobComposer

    loader, master = loader_and_master
    composer = JobComposer(loader, master)
    with pytest.raises(Exception) as hydra_error:
        loader.load_sweep_config(master, ["mode=backtest"] + bad)
    for call in (lambda: composer.compose(["mode=backtest"] + bad), lambda: composer.check([["mode=backtest"] + bad])):
        with pytest.raises(type(hydra_error.value)) as ours:
            call()
        assert str(ours.value) == str(hydra_error.value)
        assert repr(ours.value.__cause__) == repr(hydra_error.value.__cause__)


# ---------------------------------------------------------------- the pool


def _square(idx: int, payload: int) -> int:
    if payload == 7:
        raise ValueError("seven")
    if payload == 13:
        os._exit(3)  # the worker dies mid-job
    return payload * payload


def test_pool_streams_every_result_and_reports_failures():
    pool = WarmPool(2, _square)
    try:
        got = {idx: (ok, res) for idx, ok, res in pool.run([(i, i) for i in range(40)], chunk=3)}
        assert sorted(got) == list(range(40))
        assert got[5] == (True, 25)
        ok, text = got[7]
        assert not ok and text.startswith("ValueError: seven")
        # the pool keeps working for a later batch (an Optuna search launches many)
        assert sorted(r for _, _, r in pool.run([(100, 2), (101, 3)])) == [4, 9]
    finally:
        pool.close()
    assert pool.workers == {}


def test_a_dead_worker_fails_its_jobs_and_the_others_go_on():
    pool = WarmPool(2, _square)
    try:
        got = {idx: (ok, res) for idx, ok, res in pool.run([(i, i) for i in range(10, 30)], chunk=1)}
        assert sorted(got) == list(range(10, 30))
        assert got[13][0] is False and "died" in got[13][1]
        assert sum(ok for ok, _ in got.values()) >= 15
    finally:
        pool.close()


def _square_fn():
    return _square


def _warmed():
    import mmrun.stats  # noqa: F401


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_spare_forks_the_pool_and_a_failed_request_leaves_no_process(tmp_path: Path):
    from mmrun.workers import Spare

    spare = Spare(_warmed)
    pool = spare.pool(_square_fn, 2)
    try:
        assert pool is not None and pool.adopted and len(pool.pids) == 2
        assert all(_parent(pid) == spare.pid for pid in pool.pids)  # the spare's children, not ours
        got = {idx: (ok, res) for idx, ok, res in pool.run([(i, i) for i in range(20)], chunk=2)}
        assert got[5] == (True, 25) and got[7][0] is False and got[13][0] is False and "died" in got[13][1]
        assert sorted(got) == list(range(20))
    finally:
        pool.close()
    assert pool.workers == {}
    spare.close()
    assert spare.pid is None
    # a factory that cannot be sent (a closure): no pool, the spare is ended
    other = Spare(_warmed)
    pid = other.pid
    assert other.pool(lambda: _square, 2) is None
    assert other.pid is None and not _alive(pid)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list:
    out = []
    for child in _children(pid):
        out += [child] + _descendants(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_workers_exit_when_the_sweep_is_killed(tmp_path: Path):
    # four paper jobs of ten simulated days each: long enough to be killed in the middle
    argv = [sys.executable, "-m", "mmrun", "--multirun", "exchange.sim.duration_s=864000", "spread=0.001,0.002,0.003,0.004",
            "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list = []
        # the workers are the children of the sweep's spare process (mmrun.workers.Spare)
        while time.monotonic() < deadline and len(workers) < 3:
            time.sleep(0.2)
            workers = _descendants(proc.pid)
            assert proc.poll() is None, "the sweep ended before it could be killed"
        assert len(workers) == 3 and len(_children(proc.pid)) == 1
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), "sweep workers outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_sweep_in_the_default_folder_runs_its_jobs_through_the_spare(tmp_path: Path):
    """The default sweep folder is named by Hydra's `now` resolver, registered after the spare
    started: the spare restores Hydra's state, and every job lands in the one dated folder."""
    import json

    import numpy as np
    import polars as pl

    ts = 1_767_225_600_000 + 60_000 * np.arange(300)
    close = 100.0 + np.cumsum(np.where(np.arange(300) % 3 == 0, 0.4, -0.15))
    pl.DataFrame({"timestamp": ts, "open": close, "high": close + 0.3, "low": close - 0.3, "close": close,
                  "volume": np.full(300, 5.0)}).write_csv(tmp_path / "candles.csv")
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run([sys.executable, "-m", "mmrun", "--multirun", "mode=backtest", "data.path=candles.csv",
                        "spread=0.001,0.002,0.003", "strategy=symmetric,inventory_skew", "sweep.top=2"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    sweeps = list((tmp_path / "outputs" / "sweeps").iterdir())
    assert len(sweeps) == 1
    for job in range(6):
        assert json.loads((sweeps[0] / str(job) / "summary.json").read_text())["status"] == "completed"
    assert len(list((sweeps[0] / "top").iterdir())) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_ends_a_sweep_as_ctrl_c_does(tmp_path: Path):
    """SIGTERM to the sweep's process: the workers stop, the finished jobs are reported, exit 130."""
    d = tmp_path / "sweep"
    argv = [sys.executable, "-m", "mmrun", "--multirun", "exchange.sim.duration_s=86400",
            "spread=0.001,0.002,0.003,0.004,0.005,0.006,0.007,0.008", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={d}"]
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()  # blocks until the first job's line (or the end)
        assert first.startswith("[1/8] job "), first + proc.stderr.read()
        procs = _descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert f"sweep {d}:" in out and (d / "sweep_summary.csv").is_file()
    # the jobs in the report (a job cut off before Hydra wrote its .hydra/ files has no row)
    ran = len((d / "sweep_summary.csv").read_text().splitlines()) - 1
    assert ran < 8 and f"  stopped early: {8 - ran} of the sweep's 8 jobs never started" in out, out
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.1)
    assert not any(_alive(p) for p in procs)
