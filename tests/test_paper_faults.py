"""Paper runs against the fake exchange: a stop while the markets load, a pair failing for good,
a body cut short in transit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from clirun import ROOT, run_mmrun
from fake_exchange import FakeBinance


@pytest.fixture
def fake():
    server = FakeBinance().start()
    yield server
    server.stop()


def _when(cond, timeout_s=60.0):
    end = time.time() + timeout_s
    while not cond():
        if time.time() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_markets_load_stops_at_once_and_cleanly(fake, tmp_path, sig):
    out = tmp_path / "run"
    # every markets request hangs for 60 s (the client waits 30 s, then retries 3 times):
    # without the stop the run would wait minutes before giving up
    fake.fail("hang", n=100, path="exchangeInfo", arg=60)
    argv = [sys.executable, "-m", "mmrun", "mode=paper", "exchange=binance", f"exchange.api_url={fake.url}",
            "exchange.timeout_s=30", f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _when(lambda: fake.count("exchangeInfo") >= 1)  # the markets are loading now
        proc.send_signal(sig)
        # bounded well below one request's 30 s timeout: the loading was abandoned, not waited out
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert fake.count("exchangeInfo") == 1  # no retry after the stop
    s = json.loads((out / "summary.json").read_text())
    assert (s["status"], s["ticks"], s["trades"]) == ("stopped", 0, 0)
    assert (s["initial_value"], s["final_value"], s["total_return_pct"]) == (10000.0, 10000.0, 0.0)
    assert (out / "events.csv").read_text().count("\n") == 1  # the header: nothing happened
    assert pl.read_parquet(out / "equity.parquet").height == 0
    assert "no completed cycle: the starting value" in stdout


def test_a_pair_that_fails_for_good_mid_run_makes_the_run_exit_1(fake, tmp_path):
    fake.fail("ok", path="ticker")
    fake.fail("badsymbol", path="ticker")
    r = run_mmrun("mode=paper", "exchange=binance", "pair=BTC/USDT", f"exchange.api_url={fake.url}",
                  "run.max_ticks=5", "intervals=fast", run_dir=tmp_path)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "BTC/USDT: the pair stopped on an error" in r.stderr, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())  # the folder is complete all the same
    assert (s["status"], s["ticks"]) == ("failed", 1)


def test_one_failed_pair_of_two(fake, tmp_path):
    fake.fail("ok", path="ticker")
    fake.fail("badsymbol", path="ticker")
    r = run_mmrun("mode=paper", "exchange=binance", "pairs=[BTC/USDT,ETH/USDT]", f"exchange.api_url={fake.url}",
                  "run.max_ticks=3", "intervals=fast", run_dir=tmp_path)
    assert r.returncode == 1, r.stderr
    root = json.loads((tmp_path / "summary.json").read_text())
    assert root["status"] == "mixed" and len(root["failed_pairs"]) == 1


def test_a_truncated_body_mid_run_is_retried_not_fatal(fake, tmp_path):
    fake.fail("ok", path="ticker")
    fake.fail("truncate", path="ticker")
    r = run_mmrun("mode=paper", "exchange=binance", "pair=BTC/USDT", f"exchange.api_url={fake.url}",
                  "run.max_ticks=3", "intervals=fast", "exchange.retry_base_s=0.01", run_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert (s["status"], s["ticks"], s["errors"]) == ("max_ticks", 3, 0)  # absorbed by a retry
