"""Paper trading on a real exchange's public data, against the fake Binance server on 127.0.0.1:
faults during a run, clean stops, record and replay, exchange rules on quotes, status view."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from clirun import ROOT, run_mmrun
from fake_exchange import FakeBinance
from mmrun.__main__ import CONF_DIR
from mmrun.record import EVENT_COLUMNS, read_events
from mmrun.runner import run
from mmrun.status import StatusBoard, format_line


@pytest.fixture
def fake():
    server = FakeBinance().start()
    yield server
    server.stop()


def paper_cfg(fake, *extra: str):
    overrides = [
        "mode=paper",
        "exchange=binance",
        "pair=BTC/USDT",
        f"exchange.api_url={fake.url}",
        "exchange.retry_attempts=2",
        "exchange.retry_base_s=0.001",
        "exchange.retry_max_wait_s=0.01",
        "exchange.timeout_s=0.5",
        "intervals.quote_s=0.02",
        "intervals.error_s=0.01",
        *extra,
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


class TradePrinter:
    """A background market: prints trades below our bid and above our ask, alternately."""

    def __init__(self, fake: FakeBinance, every_s: float = 0.01):
        self.fake, self.every_s = fake, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self.every_s):
            price = 59900.0 if i % 2 == 0 else 60100.0
            self.fake.add_trade("BTCUSDT", int(time.time() * 1000), price, 0.01)
            i += 1

    def __enter__(self) -> "TradePrinter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def assert_complete_csv(path: Path) -> list:
    text = path.read_text()
    assert text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(EVENT_COLUMNS)
    assert all(len(r) == len(EVENT_COLUMNS) for r in rows)
    return rows[1:]


# ------------------------------------------------------------------ the command line


def test_cli_paper_run_against_the_fake_exchange(fake, tmp_path):
    out = tmp_path / "run"
    r = run_mmrun("mode=paper", "exchange=binance", "pair=BTC/USDT", f"exchange.api_url={fake.url}",
                  "run.max_ticks=5", "intervals=fast", run_dir=out)
    assert r.returncode == 0, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert (s["status"], s["ticks"], s["errors"], s["exchange"], s["mode"]) == ("max_ticks", 5, 0, "binance", "paper")
    market = pl.read_parquet(out / "market.parquet")
    assert market.height == 5 and market["bid"].to_list() == [60000.0] * 5
    quotes = [e for e in assert_complete_csv(out / "events.csv") if e[1] == "QUOTE"]
    # bid at 60000 x (1 - 0.001), amount 10000 x 0.01 / last on the 0.00001 lot grid; no base: no ask
    assert {(q[2], q[3], q[8]) for q in quotes} == {("59940.0", "0.00166", "buy")}
    assert all(q[11] == f"binance@{fake.url}" for q in quotes)  # the source of each cycle
    assert json.loads((out / "market.json").read_text())["tick"] == 0.01


@pytest.mark.parametrize(
    "args, message",
    [
        (("pair=DOGE/EUR",), "pair=DOGE/EUR is not listed on binance"),
        (("exchange.api_url=http://127.0.0.1:9",), "exchange binance at http://127.0.0.1:9 cannot be reached"),
        (("exchange.id=binanse",), "did you mean 'binance'"),
    ],
)
def test_start_errors_are_one_line(fake, tmp_path, args, message):
    r = run_mmrun("mode=paper", "exchange=binance", f"exchange.api_url={fake.url}", "exchange.retry_attempts=2",
                  "exchange.retry_base_s=0.01", *args, run_dir=tmp_path / "run")
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.count("\n") == 1, r.stderr


# ------------------------------------------------------------------ faults during a run


def test_every_fault_is_counted_and_never_quoted_on(fake, tmp_path):
    # Faults are consumed in order by matching requests; 2 tries per call (retry_attempts=2).
    fake.fail("ok", path="ticker")  # cycle 1 is good: its quote rests into the first failure
    for kind, n in [("stale", 2), ("crossed", 2), ("empty", 1), ("503", 2), ("504", 2), ("nulls", 2),
                    ("malformed", 2), ("429", 2), ("hang", 2), ("drop", 4)]:
        fake.fail(kind, n=n, path="ticker", arg=3600 if kind == "stale" else (3.0 if kind == "hang" else 0))
    fake.fail("empty", n=2, path="depth")  # an empty ticker sends the feed to the order book: empty too
    # the trades call of the first good cycle after those: 503 twice
    fake.fail("ok", path="aggTrades")
    fake.fail("503", n=2, path="aggTrades")
    # a 1 s timeout against 3 s hangs: a good answer on a loaded machine still comes in time
    summary = run(paper_cfg(fake, "run.max_ticks=3", "exchange.timeout_s=1.0"), tmp_path)
    assert (summary["status"], summary["ticks"], summary["errors"]) == ("max_ticks", 3, 11)
    events = read_events(tmp_path / "events.csv")
    kinds = events["event_type"].to_list()
    assert kinds.count("ERROR") == 11
    assert kinds[:3] == ["QUOTE", "ERROR", "CANCEL"]  # the resting quote is pulled at the first failure
    notes = " | ".join(events.filter(pl.col("event_type") == "ERROR")["note"].to_list())
    for word in ("stale data", "crossed book", "empty book", "ExchangeNotAvailable", "RequestTimeout",
                 "no bid, ask or last", "DDoSProtection", "503"):
        assert word in notes
    quotes = events.filter(pl.col("event_type") == "QUOTE")
    assert quotes["price"].to_list() == [59940.0] * 3  # only ever on good data
    market = pl.read_parquet(tmp_path / "market.parquet")
    assert market["bid"].to_list() == [60000.0] * 3 and market["ask"].to_list() == [60000.01] * 3
    assert_complete_csv(tmp_path / "events.csv")


def test_unknown_symbol_mid_run_stops_the_pair_cleanly(fake, tmp_path):
    fake.fail("ok", path="ticker")
    fake.fail("badsymbol", path="ticker")
    summary = run(paper_cfg(fake, "run.max_ticks=5"), tmp_path)
    assert (summary["status"], summary["ticks"], summary["errors"]) == ("failed", 1, 1)
    kinds = read_events(tmp_path / "events.csv")["event_type"].to_list()
    assert kinds == ["QUOTE", "ERROR", "CANCEL"]
    assert fake.count("ticker") == 2  # a permanent error is not retried


def _when(cond, timeout_s=20.0):
    end = time.time() + timeout_s
    while not cond():
        if time.time() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


def test_server_going_away_and_coming_back(fake, tmp_path):
    def outage():
        _when(lambda: fake.count("ticker") >= 2)
        fake.stop()
        time.sleep(0.3)
        fake.start()

    t = threading.Thread(target=outage, daemon=True)
    t.start()
    summary = run(paper_cfg(fake, "run.max_ticks=6"), tmp_path)
    t.join(timeout=10)
    assert (summary["status"], summary["ticks"]) == ("max_ticks", 6)
    assert summary["errors"] >= 1
    errors = read_events(tmp_path / "events.csv").filter(pl.col("event_type") == "ERROR")
    assert errors.height == summary["errors"] and all("ExchangeNotAvailable" in n for n in errors["note"])


def test_fallback_serves_while_the_primary_is_down(fake, tmp_path):
    backup = FakeBinance().start()
    backup.book["BTCUSDT"] = (61000.0, 61000.5)
    try:
        def outage():
            _when(lambda: fake.count("ticker") >= 2)
            fake.stop()

        t = threading.Thread(target=outage, daemon=True)
        t.start()
        summary = run(paper_cfg(fake, "run.max_ticks=6", f"exchange.fallbacks=[binance@{backup.url}]"), tmp_path)
        t.join(timeout=10)
    finally:
        backup.stop()
    assert (summary["status"], summary["ticks"], summary["errors"]) == ("max_ticks", 6, 0)
    quotes = read_events(tmp_path / "events.csv").filter(pl.col("event_type") == "QUOTE")
    sources = quotes["note"].to_list()
    assert sources[0] == f"binance@{fake.url}" and sources[-1] == f"binance@{backup.url}"
    assert quotes["mid"].to_list()[-1] == 61000.25


# ------------------------------------------------------------------ record and replay


def test_a_recorded_session_replays_with_identical_fills(fake, tmp_path):
    # the market's rules (tick 0.01, lot 0.00001, min notional 5) travel in market.json
    paper_dir, replay_dir = tmp_path / "paper", tmp_path / "replay"
    fake.fail("ok", n=20, path="ticker")
    fake.fail("503", n=4, path="ticker")  # two failed cycles mid-session: their quotes are pulled
    with TradePrinter(fake):
        paper = run(paper_cfg(fake, "run.max_ticks=40", "intervals.quote_s=0.03"), paper_dir)
    assert paper["errors"] == 2 and paper["trades"] >= 4 and paper["buys"] >= 1 and paper["sells"] >= 1
    cfg = paper_cfg(fake, "mode=backtest", f"data.path={paper_dir / 'market.parquet'}")
    replay = run(cfg, replay_dir)
    for key in ("trades", "buys", "sells", "final_value", "final_base", "final_quote", "fees", "volume_quote",
                "ticks", "data_fingerprint"):
        assert replay[key] == paper[key], key
    cols = ["timestamp", "side", "price", "amount", "base_inventory", "quote_inventory", "fee"]
    fills_p = read_events(paper_dir / "events.csv").filter(pl.col("event_type") == "FILL").select(cols)
    fills_r = read_events(replay_dir / "events.csv").filter(pl.col("event_type") == "FILL").select(cols)
    assert fills_p.equals(fills_r)
    eq_p = pl.read_parquet(paper_dir / "equity.parquet")
    eq_r = pl.read_parquet(replay_dir / "equity.parquet")
    assert eq_p.select("ts_ms", "base", "quote", "equity").equals(eq_r.select("ts_ms", "base", "quote", "equity"))


def test_lot_and_min_notional(fake, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="mmrun")
    small = run(paper_cfg(fake, "run.max_ticks=2", "capital=400"), tmp_path / "small")
    # 400 x 0.01 / 60000 = 0.0000667 -> 0.00006 on the lot grid: 3.60 USDT, under the 5 USDT minimum
    assert small["ticks"] == 2
    assert "QUOTE" not in read_events(tmp_path / "small" / "events.csv")["event_type"].to_list()
    said = [r.getMessage() for r in caplog.records if "not placed" in r.getMessage()]
    assert said == ["BTC/USDT: quotes not placed: order value 3.60 USDT below the exchange's minimum notional 5 "
                    "(the exchange would reject them)"]


# ------------------------------------------------------------------ stops


def _spawn(fake, out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "mmrun", "mode=paper", "exchange=binance", "pair=BTC/USDT",
            f"exchange.api_url={fake.url}", "intervals.quote_s=0.05", "intervals.error_s=0.05",
            "exchange.timeout_s=30", f"hydra.run.dir={out}", *extra]
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _quotes_written(path: Path) -> int:
    return path.read_text().count(",QUOTE,") if path.is_file() else 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_cleanly_even_during_a_hanging_request(fake, tmp_path, sig):
    out = tmp_path / "run"
    with TradePrinter(fake, every_s=0.02):
        proc = _spawn(fake, out)
        try:
            _when(lambda: _quotes_written(out / "events.csv") >= 3, timeout_s=60)
            fake.fail("hang", n=1000, path="ticker", arg=60)  # the next fetch hangs (30 s timeout)
            _when(lambda: len(fake.faults) < 1000)  # a fetch is hanging now
            proc.send_signal(sig)
            stdout, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "stopped" and s["ticks"] >= 2  # 3 quotes: at least 2 cycles
    rows = assert_complete_csv(out / "events.csv")
    assert rows[-1][1] == "CANCEL" and rows[-1][11] == "stopped"  # quotes pulled on the way out
    assert pl.read_parquet(out / "market.parquet").height == s["ticks"]  # closed properly


def test_sigkill_leaves_only_complete_event_lines(fake, tmp_path):
    out = tmp_path / "run"
    with TradePrinter(fake):
        proc = _spawn(fake, out, "intervals.quote_s=0.005")
        try:
            _when(lambda: _quotes_written(out / "events.csv") >= 20, timeout_s=60)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    rows = assert_complete_csv(out / "events.csv")
    assert len(rows) >= 20


# ------------------------------------------------------------------ status view


def _state(**kw):
    s = dict(mid=60000.005, bid=59940.0, ask=float("nan"), base=0.0, equity=10000.0, initial=10000.0, fills=0,
             errors=0, data_ts_ms=1_000_000, source="binance")
    s.update(kw)
    return s


def test_status_line():
    line = format_line("BTC/USDT", _state(base=0.00166, equity=10012.5, fills=3, errors=1), 1_002_500)
    assert line == ("BTC/USDT   mid 60,000  bid 59,940  ask -  base 0.00166  equity 10,012.50  pnl +12.50  "
                    "fills 3  errors 1  age 2.5s  [binance]")


def test_status_redraws_in_place_on_a_terminal():
    out = io.StringIO()
    clock = [100.0]
    board = StatusBoard(["BTC/USDT", "ETH/USDT"], stream=out, tty=True, min_redraw_s=0.2, wall=lambda: clock[0])
    board.update("BTC/USDT", **_state())
    clock[0] += 0.1
    board.update("ETH/USDT", **_state(mid=3000.0))  # too soon: not redrawn
    clock[0] += 0.2
    board.update("ETH/USDT", **_state(mid=3000.0))
    text = out.getvalue()
    assert text.count("\x1b[2K") == 3 and text.count("\x1b[1F") == 1
    assert text.endswith("\n") and "ETH/USDT   mid 3,000" in text


def test_status_logs_periodically_off_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="mmrun")
    clock = [0.0]
    board = StatusBoard(["BTC/USDT"], stream=io.StringIO(), tty=False, every_s=30.0, wall=lambda: clock[0])
    for _ in range(100):
        board.update("BTC/USDT", **_state())
        clock[0] += 1.0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status ")]
    assert len(lines) == 4  # at 0, 30, 60 and 90 s


@pytest.mark.parametrize(
    "lot, min_amount, min_notional, want",
    [(0.0, 0.0, 0.0, 10000 * 0.01 / 60000.0), (0.001, 0.0, 0.0, 0.001), (0.00001, 0.0, 0.0, 0.00166),
     (0.001, 0.0, 60.0, 0.0), (0.001, 0.002, 0.0, 0.0)],
)
def test_the_kernel_quotes_whole_lots_above_the_minimums(lot, min_amount, min_notional, want):
    from mmrun import engine

    p = engine.make_params(0.002, 0.01, 0.2, 10000.0, 0.0, "touch", None, 0.01,
                           lot=lot, min_amount=min_amount, min_notional=min_notional)
    quotes = engine.empty_quotes()
    buf = np.empty((engine.max_fills(1), engine.N_FILL))
    nan = float("nan")
    engine.step(p, engine.make_state(0.0, 10000.0), quotes, 60000.0, 60000.0, 60000.0, nan, nan, 0.0, buf)
    # the bid: 59940 x 0.001 = 59.94 quote, under a 60 minimum
    assert quotes[0, engine.Q_AMOUNT] == want


def test_pairs_on_one_exchange_share_its_client(fake, tmp_path):
    summary = run(paper_cfg(fake, "run.max_ticks=3", "pairs=[BTC/USDT,ETH/USDT@5000]"), tmp_path)
    assert (summary["status"], summary["ticks"], summary["errors"]) == ("max_ticks", 6, 0)
    assert fake.count("exchangeInfo") == 1  # markets loaded once for both pairs
    eth = pl.read_parquet(tmp_path / "ETH-USDT" / "market.parquet")
    assert eth["bid"].to_list() == [3000.0] * 3
