"""`python -m mmrun --help`, and progress bars: shown on a terminal only, never changing results."""

import io
import multiprocessing

import numpy as np
import pytest

from clirun import run_mmrun
from mmrun import engine, progress


def test_help_lists_groups_with_options_and_common_keys():
    proc = run_mmrun("--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "strategy: avellaneda_stoikov, inventory_skew, symmetric" in text
    assert "fills: instant, touch" in text
    assert "exchange: binance, bybit, coinbase, kraken, okx, sim" in text
    for key in ("pair=BTC/USDT", "spread=0.002", "capital=10000", "mode=paper", "run.max_ticks", "data.path",
                "strategy.min_profit_threshold", "strategy.levels", "exchange.api_url", "fees.maker"):
        assert key in text, key


def test_help_into_a_closed_pipe_ends_quietly():
    """`mmrun --help | head -1`: the reader is gone before the text is written; no error line
    about output folders, no traceback."""
    import os
    import subprocess
    import sys

    from clirun import ROOT

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "mmrun", "--help"], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == ""


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.wanted() and progress.bar(10, "x") is None


def test_a_bar_on_a_terminal(monkeypatch):
    term = FakeTerminal()
    monkeypatch.setattr("sys.stderr", term)
    bar = progress.bar(10, "backtest X/Y")
    assert bar is not None
    bar.update(10)
    bar.close()
    assert "backtest X/Y" in term.getvalue()


def _child_wants(queue):
    import sys

    sys.stderr = FakeTerminal()
    queue.put(progress.wanted())


def test_no_bar_in_a_worker_process():
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_wants, args=(queue,))
    child.start()
    try:
        assert queue.get(timeout=60) is False
    finally:
        child.join(timeout=60)


@pytest.mark.parametrize("strategy", ["symmetric", "avellaneda_stoikov"])
def test_run_bulk_in_chunks_gives_the_same_results(strategy):
    rng = np.random.default_rng(5)
    n = 5_003
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    cols = [mid - 0.01, mid + 0.01, mid, mid * (1 - np.abs(rng.normal(0, 0.002, n))),
            mid * (1 + np.abs(rng.normal(0, 0.002, n))), rng.lognormal(0, 1, n)]
    narrow = dict(gamma=0.1, kappa=1000.0, min_spread=0.0) if strategy == "avellaneda_stoikov" else {}
    p = engine.make_params(0.002, 0.05, 0.2, 10_000.0, 0.0005, "touch", None, 0.01, strategy=strategy, levels=2,
                           min_profit_threshold=0.0, **narrow)
    one_state = engine.make_state(5.0, 9_000.0, p)
    one = engine.run_bulk(p, one_state, *cols)
    done = []
    chunked_state = engine.make_state(5.0, 9_000.0, p)
    chunked = engine.run_bulk(p, chunked_state, *cols, progress=done.append, chunk_rows=1000)
    assert done == [1000] * 5 + [3]
    for a, b in zip(one, chunked):
        assert np.array_equal(a, b, equal_nan=True)
    assert one_state.item() == chunked_state.item()
    assert len(one[1]) > 100


def test_a_long_download_shows_a_bar_on_a_terminal(monkeypatch):
    import asyncio
    from types import SimpleNamespace

    from mmrun.market import ccxt_feed, download

    class Client:
        async def close(self):
            pass

    async def pages(client, pair, timeframe, start, end, on_page=None):
        got = []
        for page_start in range(start, end, 60_000 * 1000):
            n = min(1000, (end - page_start) // 60_000)
            got.extend([[page_start + i * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0] for i in range(n)])
            if on_page is not None:
                on_page(n)
        return got

    monkeypatch.setattr(ccxt_feed.ExchangeClient, "from_config", staticmethod(lambda cfg, sleep=None: Client()))
    monkeypatch.setattr(ccxt_feed, "fetch_ohlcv_range", pages)
    term = FakeTerminal()
    monkeypatch.setattr("sys.stderr", term)
    gaps = [(0, 60_000 * 12_000)]
    out = asyncio.run(download._fetch(SimpleNamespace(id="binance"), "BTC/USDT", "1m", gaps, None, 60_000))
    assert len(out) == 12_000
    assert "download binance BTC/USDT 1m" in term.getvalue() and "12.0k" in term.getvalue()
    # not a terminal: no bar, same candles
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert asyncio.run(download._fetch(SimpleNamespace(id="binance"), "BTC/USDT", "1m", gaps, None, 60_000)) == out
