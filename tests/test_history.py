"""History files: candle CSV/Parquet and market.parquet loading, every validation error, repair, cache."""

import os

import numpy as np
import polars as pl
import pytest

from clirun import run_mmrun
from mmrun.errors import DataError
from mmrun.market import ROW_FIELDS
from mmrun.market.history import clear_cache, load_rows

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000

HEADER = "timestamp,open,high,low,close,volume\n"
GOOD = [
    f"{T0},100,102,99,101,5",
    f"{T0 + MIN},101,103,100,102,6",
    f"{T0 + 2 * MIN},102,102.5,98,99,7",
]


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def write(tmp_path, text, name="c.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def csv_with(tmp_path, lines, header=HEADER):
    return write(tmp_path, header + "\n".join(lines) + "\n")


def error(path, **kw):
    with pytest.raises(DataError) as ei:
        load_rows(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith(f"data.path={path}: ")
    return msg[len(f"data.path={path}: "):]


# ---------------------------------------------------------------- loading


def test_candle_rows_are_stamped_at_close_time_and_close_stands_for_bid_ask_last(tmp_path):
    rows = load_rows(csv_with(tmp_path, GOOD))
    assert list(rows) == list(ROW_FIELDS)
    # a one-minute candle that opens at T closes at T + 1 min: that is the row's time
    assert rows["ts_ms"].tolist() == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert rows["ts_ms"].dtype == np.int64
    for k in ("bid", "ask", "last"):
        assert rows[k].tolist() == [101.0, 102.0, 99.0]
    assert rows["low"].tolist() == [99.0, 100.0, 98.0]
    assert rows["high"].tolist() == [102.0, 103.0, 102.5]
    assert rows["volume"].tolist() == [5.0, 6.0, 7.0]


def test_bar_length_is_the_most_common_spacing_so_gaps_do_not_change_it(tmp_path):
    lines = [f"{T0 + m * MIN},100,101,99,100,1" for m in (0, 1, 2, 5, 6, 30)]
    rows = load_rows(csv_with(tmp_path, lines))
    assert rows["ts_ms"].tolist() == [T0 + (m + 1) * MIN for m in (0, 1, 2, 5, 6, 30)]


def test_names_are_case_insensitive_extra_columns_ignored_bid_ask_used(tmp_path):
    header = "Symbol,TIMESTAMP,Open,High,Low,Close,Volume,Bid,Ask\n"
    lines = [f"X,{T0},100,102,99,101,5,100.5,101.5", f"X,{T0 + 3_600_000},101,103,100,102,6,101.9,102.1"]
    rows = load_rows(csv_with(tmp_path, lines, header))
    assert rows["bid"].tolist() == [100.5, 101.9]
    assert rows["ask"].tolist() == [101.5, 102.1]
    assert rows["last"].tolist() == [101.0, 102.0]
    assert rows["ts_ms"].tolist() == [T0 + 3_600_000, T0 + 7_200_000]  # one-hour bars


def test_iso_8601_timestamps_in_any_common_form(tmp_path):
    stamps = ["2026-01-01T00:00:00Z", "2026-01-01 00:01:00", "2026-01-01T02:02:00+02:00", "2026-01-01T00:03:00.000Z"]
    lines = [f"{s},100,101,99,100,1" for s in stamps]
    rows = load_rows(csv_with(tmp_path, lines))
    assert rows["ts_ms"].tolist() == [T0 + m * MIN for m in (1, 2, 3, 4)]


def test_parquet_candles_with_int_or_datetime_timestamps(tmp_path):
    base = {"open": [100.0, 101.0], "high": [102.0, 103.0], "low": [99.0, 100.0], "close": [101.0, 102.0], "volume": [5.0, 6.0]}
    p1 = tmp_path / "a.parquet"
    pl.DataFrame({"timestamp": [T0, T0 + MIN], **base}).write_parquet(p1)
    p2 = tmp_path / "b.parquet"
    pl.DataFrame({"timestamp": pl.Series([T0, T0 + MIN]).cast(pl.Datetime("ms")), **base}).write_parquet(p2)
    a, b = load_rows(str(p1)), load_rows(str(p2))
    assert a["ts_ms"].tolist() == b["ts_ms"].tolist() == [T0 + MIN, T0 + 2 * MIN]
    assert a["last"].tolist() == b["last"].tolist() == [101.0, 102.0]


def test_market_parquet_of_a_paper_run_is_taken_as_recorded(tmp_path):
    p = tmp_path / "market.parquet"
    df = pl.DataFrame(
        {
            "ts_ms": [T0, T0 + 5000, T0 + 10000],
            "bid": [99.9, 100.0, 100.1],
            "ask": [100.1, 100.2, 100.3],
            "last": [100.0, 100.1, 100.2],
            "low": [None, 99.8, 100.0],  # no trade in the first interval
            "high": [None, 100.3, 100.4],
            "volume": [0.0, 1.5, 2.0],
        }
    )
    df.write_parquet(p)
    rows = load_rows(str(p))
    assert rows["ts_ms"].tolist() == [T0, T0 + 5000, T0 + 10000]  # no shift: snapshots already
    assert np.isnan(rows["low"][0]) and np.isnan(rows["high"][0])
    assert rows["low"][1:].tolist() == [99.8, 100.0]
    assert rows["bid"].tolist() == [99.9, 100.0, 100.1]


# ---------------------------------------------------------------- validation errors

BAD = [
    # (lines after the header, expected message)
    ([GOOD[0], f"{T0 + MIN},101,103,abc,102,6"], "row 2 (line 3): low is 'abc', not a number"),
    ([GOOD[0], f"{T0 + MIN},101,103,,102,6"], "row 2 (line 3): low is empty"),
    ([f"{T0},100,102,99,NaN,5", GOOD[1]], "row 1 (line 2): close is NaN"),
    ([GOOD[0], f"{T0 + MIN},101,inf,100,102,6"], "row 2 (line 3): high is inf (not finite)"),
    ([GOOD[0], f"{T0 + MIN},0,103,100,102,6"], "row 2 (line 3): open 0 is not a positive price"),
    ([GOOD[0], f"{T0 + MIN},-1,103,-2,102,6"], "row 2 (line 3): open -1 is not a positive price"),
    ([GOOD[0], f"{T0 + MIN},101,103,100,102,-6"], "row 2 (line 3): volume -6 is negative"),
    ([GOOD[0], f"{T0 + MIN},101,99,100,99.5,6"], "row 2 (line 3): high 99 is below low 100"),
    ([GOOD[0], f"{T0 + MIN},101,103,100,104,6", f"{T0 + 2 * MIN},101,103,100,99,6"],
     "row 2 (line 3): close 104 is outside [low, high] = [100, 103] (and 1 more row)"),
    ([GOOD[0], f"{T0 + MIN},98,103,100,101,6"], "row 2 (line 3): open 98 is outside [low, high] = [100, 103]"),
    ([GOOD[1], GOOD[0]], "row 2 (line 3): timestamp 2026-01-01T00:00:00.000Z is earlier than the row before "
     "(2026-01-01T00:01:00.000Z); the rows must be in time order: sort the file or pass data.repair=[sort]"),
    ([GOOD[0], GOOD[1], GOOD[1]], "row 3 (line 4): timestamp 2026-01-01T00:01:00.000Z repeats the row before; "
     "each timestamp may appear once: pass data.repair=[dedupe] to keep the last of each"),
    ([GOOD[0], "tomorrow,101,103,100,102,6"], "row 2 (line 3): timestamp 'tomorrow' is not an epoch time (a whole number) like the rows before"),
    (["2026-01-01T00:00:00Z,100,102,99,101,5", "tomorrow,101,103,100,102,6"],
     "row 2 (line 3): timestamp 'tomorrow' is neither an epoch time nor ISO-8601"),
    ([GOOD[0], ",101,103,100,102,6"], "row 2 (line 3): timestamp is empty"),
    (["1767225600,100,102,99,101,5", "1767225660000,101,103,100,102,6"],
     "row 2 (line 3): timestamp 1767225660000 is in ms but the rows before are in s since the epoch"),
    ([GOOD[0]], "only 1 candle: a backtest needs at least 2"),
    ([GOOD[0], GOOD[1] + ",9"], "row 2 (line 3): 7 fields, the header has 6"),
]


@pytest.mark.parametrize("lines,want", BAD, ids=[w.split(": ")[-1][:30] for _, w in BAD])
def test_each_bad_csv_gives_one_line_naming_row_and_problem(tmp_path, lines, want):
    assert error(csv_with(tmp_path, lines)).startswith(want)


@pytest.mark.parametrize("lines,want", BAD, ids=[w.split(": ")[-1][:30] for _, w in BAD])
@pytest.mark.parametrize("pack", ["gz", "zip"])
def test_a_bad_compressed_csv_gives_the_same_line(tmp_path, lines, want, pack):
    """Polars unpacks these itself (a deflated .zip as a gzip stream): the messages stay the same."""
    import gzip
    import zipfile

    text = (HEADER + "\n".join(lines) + "\n").encode()
    p = tmp_path / f"c.csv.{pack}"
    if pack == "gz":
        p.write_bytes(gzip.compress(text))
    else:
        with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("c.csv", text)
    assert error(str(p)).startswith(want)


@pytest.mark.parametrize(
    "text,want",
    [
        ("", "empty file"),
        (HEADER, "no data rows (only a header)"),
        ("when,open,high,low,close\n1,1,1,1,1\n", "missing columns timestamp, volume: a candle file needs a time column (timestamp/time/datetime/date/open_time, ...), open, high, low, close, volume"),
        ("timestamp,open,high,low,close,volume,bid\n" + GOOD[0] + ",100\n", "has only one of bid, ask"),
        ("timestamp,open,high,low,close,volume,Close\n" + GOOD[0] + ",1\n", "columns 'close' and 'Close' are the same name"),
    ],
)
def test_file_level_problems(tmp_path, text, want):
    assert error(write(tmp_path, text)).startswith(want)


def test_crossed_bid_ask(tmp_path):
    header = "timestamp,open,high,low,close,volume,bid,ask\n"
    path = csv_with(tmp_path, [GOOD[0] + ",100,102", GOOD[1] + ",102.5,101.5"], header)
    assert error(path) == "row 2 (line 3): bid 102.5 is above ask 101.5 (a crossed book)"


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"^data.path=.*nope.csv: no such file$"):
        load_rows(str(tmp_path / "nope.csv"))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file at all")
    assert error(str(junk)).startswith("unreadable as Parquet")
    with pytest.raises(DataError, match="not a file"):
        load_rows(str(tmp_path))


def test_parquet_errors_name_rows_without_lines(tmp_path):
    p = tmp_path / "c.parquet"
    pl.DataFrame(
        {"timestamp": [T0, T0 + MIN], "open": [100.0, 101.0], "high": [102.0, 103.0], "low": [99.0, float("nan")],
         "close": [101.0, 102.0], "volume": [5.0, 6.0]}
    ).write_parquet(p)
    assert error(str(p)) == "row 2: low is NaN"


def test_market_parquet_errors(tmp_path):
    p = tmp_path / "market.parquet"
    pl.DataFrame({"ts_ms": [T0, T0 + 5000], "bid": [100.0, -1.0], "ask": [100.2, 100.2], "last": [100.1, 100.1],
                  "low": [None, None], "high": [None, None], "volume": [0.0, 0.0]}).write_parquet(p)
    assert error(str(p)) == "row 2: bid -1 is not a positive price"
    pl.DataFrame({"ts_ms": [T0], "last": [1.0]}).write_parquet(p)
    assert "needs columns ts_ms, bid, ask, last, low, high, volume; missing bid, ask, low, high, volume" in error(str(p))


# ---------------------------------------------------------------- repair


def test_repair_sort_then_dedupe_keeps_the_last_of_each_timestamp(tmp_path):
    lines = [
        f"{T0 + 2 * MIN},102,103,101,102,1",
        f"{T0},100,101,99,100,1",
        f"{T0 + MIN},101,102,100,101,1",
        f"{T0},100,101,99,100.5,2",  # a later copy of the first candle: this one is kept
    ]
    path = csv_with(tmp_path, lines)
    assert "earlier than the row before" in error(path)
    assert "repeats the row before" in error(path, repair=["sort"])
    rows = load_rows(path, repair=["sort", "dedupe"])
    assert rows["ts_ms"].tolist() == [T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN]
    assert rows["last"].tolist() == [100.5, 101.0, 102.0]
    assert rows["volume"].tolist() == [2.0, 1.0, 1.0]


def test_dedupe_alone_does_not_sort(tmp_path):
    path = csv_with(tmp_path, [GOOD[1], GOOD[1], GOOD[0]])
    assert "row 3 (line 4): timestamp 2026-01-01T00:00:00.000Z is earlier" in error(path, repair=["dedupe"])


def test_unknown_repair_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"data.repair: 'fix' is not a repair: choose from sort, dedupe"):
        load_rows(csv_with(tmp_path, GOOD), repair=["fix"])


# ---------------------------------------------------------------- cache


def test_a_file_is_loaded_once_per_process_until_it_changes(tmp_path, monkeypatch):
    from mmrun.market import history

    path = csv_with(tmp_path, GOOD)
    calls = []
    real = history._load
    monkeypatch.setattr(history, "_load", lambda *a: calls.append(a) or real(*a))
    a = load_rows(path)
    b = load_rows(path)
    assert len(calls) == 1 and a["last"] is b["last"]
    load_rows(path, repair=["sort"])  # another repair, another entry
    assert len(calls) == 2
    with open(path, "a") as f:
        f.write(f"{T0 + 3 * MIN},99,100,98,99.5,1\n")
    os.utime(path, ns=(1, 1))  # size and mtime both change
    c = load_rows(path)
    assert len(calls) == 3 and c["ts_ms"].size == 4


# ---------------------------------------------------------------- command line


def test_backtest_on_a_csv_file_and_a_bad_file_from_the_command_line(tmp_path):
    path = csv_with(tmp_path, GOOD)
    ok = run_mmrun("mode=backtest", f"data.path={path}", run_dir=tmp_path / "run")
    assert ok.returncode == 0, ok.stderr
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"ticks": 3' in summary and '"market_start": "2026-01-01T00:01:00.000Z"' in summary

    bad = csv_with(tmp_path, [GOOD[0], GOOD[1].replace(",102,", ",x,")])
    res = run_mmrun("mode=backtest", f"data.path={bad}", run_dir=tmp_path / "bad")
    assert res.returncode == 2
    assert res.stderr.strip() == f"mmrun: error: data.path={bad}: row 2 (line 3): close is 'x', not a number"
    assert "Traceback" not in res.stderr

    res = run_mmrun("mode=backtest", f"data.path={path}", "data.repair=[sort,tidy]", run_dir=tmp_path / "bad2")
    assert res.returncode == 2 and "data.repair[1]='tidy' is not allowed: choose one of sort, dedupe" in res.stderr
