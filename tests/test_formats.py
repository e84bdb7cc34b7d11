"""Data files as exported: every candle, trades and quotes format written here, read to the same rows."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from mmrun.errors import ConfigError, DataError
from mmrun.market.formats import check_text, open_table
from mmrun.market.history import clear_cache, load_market, load_rows

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
N = 6
TS = [T0 + i * MIN for i in range(N)]
O = [100.0 + i for i in range(N)]
H = [x + 2 for x in O]
L = [x - 1 for x in O]
C = [x + 1 for x in O]
V = [5.0 + i for i in range(N)]
CANDLES = list(zip(TS, O, H, L, C, V))


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


def _iso(ts_ms: int, fmt: str) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime(fmt)


def _klines(mult: int) -> str:
    return "".join(f"{t * mult},{o},{h},{lo},{c},{v},{(t + MIN - 1) * mult},{c * v},42,1.5,150.5,0\n"
                   for t, o, h, lo, c, v in CANDLES)


def write_candle_formats(d) -> dict:
    """The same six one-minute candles in every candle format mmrun reads: name -> path."""
    out = {}

    def put(name, data, mode="w"):
        p = d / name
        if mode == "wb":
            p.write_bytes(data)
        else:
            with open(p, "w", newline="") as f:
                f.write(data)
        out[name] = str(p)

    put("canonical.csv", "timestamp,open,high,low,close,volume\n" + "".join(f"{t},{o},{h},{lo},{c},{v}\n" for t, o, h, lo, c, v in CANDLES))
    # Yahoo: text times with an offset, Adj Close, and a trailing blank line
    put("yahoo.csv", "Datetime,Open,High,Low,Close,Adj Close,Volume\n" + "".join(
        f"{_iso(t, '%Y-%m-%d %H:%M:%S+00:00')},{o},{h},{lo},{c},{c * 0.99},{v}\n" for t, o, h, lo, c, v in CANDLES) + "\n")
    put("binance_ms.csv", _klines(1))
    put("binance_us.csv", _klines(1000))  # Binance spot files from 2025 on
    put("binance_header.csv", "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        "taker_buy_quote_volume,ignore\n" + _klines(1))
    zpath = d / "BTCUSDT-1m-2026-01-01.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("BTCUSDT-1m-2026-01-01.csv", _klines(1000))
    out["binance.zip"] = str(zpath)
    put("semicolon_crlf_bom.csv", "\ufeffTime;Open;High;Low;Close;Volume\r\n" + "".join(
        f"{t};{o};{h};{lo};{c};{v}\r\n" for t, o, h, lo, c, v in CANDLES))
    put("tab_seconds.csv.gz", gzip.compress(("Date\tOpen\tHigh\tLow\tClose\tVolume\n" + "".join(
        f"{t // 1000}\t{o}\t{h}\t{lo}\t{c}\t{v}\n" for t, o, h, lo, c, v in CANDLES)).encode()), "wb")
    put("freqtrade.json", json.dumps([[t, o, h, lo, c, v] for t, o, h, lo, c, v in CANDLES]))
    df = pl.DataFrame({"date": pl.Series(TS).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
                       "open": O, "high": H, "low": L, "close": C, "volume": V})
    df.write_ipc(d / "freqtrade.feather")
    out["freqtrade.feather"] = str(d / "freqtrade.feather")
    df.write_parquet(d / "freqtrade.parquet")
    out["freqtrade.parquet"] = str(d / "freqtrade.parquet")
    put("broker_ns.csv", "DateTime|Open|High|Low|Close|Volume\n" + "".join(
        f"{t * 1_000_000}|{o}|{h}|{lo}|{c}|{v}\n" for t, o, h, lo, c, v in CANDLES))
    return out


def test_every_candle_format_gives_the_same_rows(tmp_path):
    paths = write_candle_formats(tmp_path)
    want = load_rows(paths["canonical.csv"])
    assert want["ts_ms"].tolist() == [t + MIN for t in TS]
    assert want["last"].tolist() == C
    for name, path in paths.items():
        got = load_rows(path)
        for k in want:
            assert got[k].tolist() == want[k].tolist(), (name, k)


@pytest.mark.parametrize("name,label", [
    ("yahoo.csv", "Yahoo CSV"),
    ("binance_us.csv", "Binance klines CSV (no header)"),
    ("binance.zip", "Binance klines CSV (no header) (zip)"),
    ("semicolon_crlf_bom.csv", "CSV, ';'-separated"),
    ("tab_seconds.csv.gz", "CSV, tab-separated (gz)"),
    ("freqtrade.json", "freqtrade JSON"),
    ("freqtrade.feather", "Feather (freqtrade layout)"),
    ("broker_ns.csv", "CSV, '|'-separated"),
])
def test_the_format_is_named(tmp_path, name, label):
    paths = write_candle_formats(tmp_path)
    assert load_market(paths[name]).label == label


def test_a_unit_change_part_way_is_refused_naming_the_row(tmp_path):
    lines = _klines(1).splitlines()[:3] + _klines(1000).splitlines()[3:]
    p = tmp_path / "mixed.csv"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as ei:
        load_rows(str(p))
    assert str(ei.value) == (f"data.path={p}: row 4 (line 4): timestamp {TS[3] * 1000} is in us but the rows before are "
                             "in ms since the epoch: a file must keep one unit (split it, or convert it)")


def test_unrecognised_columns_name_what_was_found_and_what_is_accepted(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("when,px,qty_x\n1,2,3\n")
    with pytest.raises(DataError) as ei:
        load_rows(str(p))
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(f"data.path={p}: columns not recognised: found when, px, qty_x; accepted are candles: a time column")
    assert "trades: a time column, price, amount" in msg


def test_headerless_files_of_unknown_width_are_refused(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("1,2,3,4\n5,6,7,8\n")
    with pytest.raises(DataError, match=r"no header, and 4 columns \(1, 2, 3, 4\) match no known layout"):
        load_rows(str(p))


def test_zip_with_two_members_is_refused(tmp_path):
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.csv", "x")
        z.writestr("b.csv", "y")
    with pytest.raises(DataError, match=r"a .zip must hold exactly one file; it holds 2 \(a.csv, b.csv\)"):
        load_rows(str(p))


@pytest.mark.parametrize("how", ["gzip members", "gzip -k", "zip deflated", "zip data descriptor", "zip stored", "zip bzip2"])
def test_compressed_candles_read_as_the_plain_file(tmp_path, how):
    """Multi-member gzip, a gzip with a file name, and zips of every method give the plain file's rows."""
    paths = write_candle_formats(tmp_path)
    plain = open(paths["canonical.csv"], "rb").read()
    want = load_rows(paths["canonical.csv"])
    if how == "gzip members":
        cut = plain.index(b"\n", len(plain) // 2) + 1
        p = tmp_path / "m.csv.gz"
        p.write_bytes(gzip.compress(plain[:cut]) + gzip.compress(plain[cut:]))
    elif how == "gzip -k":
        p = tmp_path / "canonical.csv.gz"
        subprocess.run(["gzip", "-k", paths["canonical.csv"]], check=True)
    else:
        p = tmp_path / "c.zip"
        method = {"zip deflated": zipfile.ZIP_DEFLATED, "zip data descriptor": zipfile.ZIP_DEFLATED,
                  "zip stored": zipfile.ZIP_STORED, "zip bzip2": zipfile.ZIP_BZIP2}[how]
        if how == "zip data descriptor":  # written to a stream: sizes and CRC follow the data
            with zipfile.ZipFile(p, "w", compression=method) as z, z.open("c.csv", "w") as f:
                f.write(plain)
        else:
            with zipfile.ZipFile(p, "w", compression=method) as z:
                z.writestr("c.csv", plain)
    got = load_rows(str(p))
    for k in want:
        assert got[k].tolist() == want[k].tolist(), k


def test_a_truncated_compressed_candle_file_is_one_line(tmp_path):
    rng = np.random.default_rng(1)
    big = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{T0 + i * MIN},{1 + a:.6f},{3 + b:.6f},{c / 2:.6f},{1 + d:.6f},{e:.6f}\n" for i, (a, b, c, d, e) in enumerate(rng.random((20000, 5))))
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(big.encode())[:-5000])
    with pytest.raises(DataError) as ei:
        load_rows(str(p))
    assert "\n" not in str(ei.value) and str(ei.value).startswith(f"data.path={p}: ")
    z = tmp_path / "t.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as f:
        f.writestr("t.csv", big)
    data = z.read_bytes()
    start = data.index(b"t.csv") + 5
    z.write_bytes(data[:start + 300_000] + bytes(5000) + data[start + 305_000:])  # past the first 64 KB: Polars finds it
    with pytest.raises(DataError) as ei:
        load_rows(str(z))
    assert "\n" not in str(ei.value) and str(ei.value).startswith(f"data.path={z}: unreadable as ")


def test_freqtrade_json_variants_and_bad_rows(tmp_path):
    rows = [[t, o, h, lo, c, v] for t, o, h, lo, c, v in CANDLES]
    want = load_rows(write_candle_formats(tmp_path)["canonical.csv"])
    for i, text in enumerate([json.dumps(rows, indent=2), json.dumps(rows, separators=(",", ":")),
                              "\ufeff" + json.dumps(rows) + "\n\n",
                              json.dumps([dict(zip(["date", "open", "high", "low", "close", "volume"], r)) for r in rows])]):
        p = tmp_path / f"v{i}.json"
        p.write_text(text, encoding="utf-8")
        assert load_rows(str(p))["last"].tolist() == want["last"].tolist(), text[:40]
    bad = [(rows[:2] + [rows[2] + [1]], r"unreadable as JSON rows \(ComputeError: found more fields"),
           ([r[:5] for r in rows], r"JSON rows of 5 values: the rows accepted are freqtrade's"),
           (rows[:2] + [rows[2][:4] + ["x", 1]], r"row 3: close is 'x', not a number"),
           (rows[:3] + [rows[3][:5]], r"row 4: volume is empty")]
    for i, (value, match) in enumerate(bad):
        p = tmp_path / f"b{i}.json"
        p.write_text(json.dumps(value))
        with pytest.raises(DataError, match=f"^data.path={p}: {match}"):
            load_rows(str(p))


@pytest.mark.parametrize("fmt,tz", [("%Y-%m-%d %H:%M:%S%z", "America/New_York"), ("%Y-%m-%dT%H:%M:%S.%fZ", "UTC"),
                                    ("%Y-%m-%dT%H:%M:%S+05:30", None), ("%Y-%m-%d %H:%M:%S", "UTC")])
def test_text_times_of_one_width_read_as_the_epoch_file(tmp_path, fmt, tz):
    """Across a change of UTC offset (daylight saving), with fractions, a fixed offset, none."""
    from zoneinfo import ZoneInfo

    t0 = 1_772_949_600_000  # 2026-03-08T06:00:00Z: New York moves from -05:00 to -04:00 at 07:00Z
    ts = [t0 + i * MIN for i in range(0, 180, 3)]
    rows = "".join(f"{{}},{100 + i},{102 + i},{99 + i},{101 + i},5\n".format(
        datetime.fromtimestamp(t / 1000, tz=ZoneInfo(tz) if tz else timezone.utc).strftime(fmt))
        for i, t in enumerate(ts))
    if fmt.endswith("%z"):
        rows = "\n".join(ln[:22] + ":" + ln[22:] if ln else ln for ln in rows.split("\n"))  # -0500 -> -05:00
    p = tmp_path / "text.csv"
    p.write_text("Date,Open,High,Low,Close,Volume\n" + rows)
    e = tmp_path / "epoch.csv"
    e.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{t},{100 + i},{102 + i},{99 + i},{101 + i},5\n" for i, t in enumerate(ts)))
    got, want = load_rows(str(p)), load_rows(str(e))
    shift = -5.5 * 3600 * 1000 if "+05:30" in fmt else 0
    assert (got["ts_ms"] - want["ts_ms"]).tolist() == [shift] * len(ts)


def test_a_corrupt_gzip_is_one_line(tmp_path):
    p = tmp_path / "c.csv.gz"
    p.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"unreadable as gzip"):
        load_rows(str(p))


def test_nul_bytes_and_overlong_lines_are_refused_with_where(tmp_path):
    p = tmp_path / "n.csv"
    p.write_bytes(b"timestamp,open,high,low,close,volume\n1,2,3,1,2,5\n" + b"\0" * 10)
    with pytest.raises(DataError, match=r"line 3 has a NUL byte: a binary file"):
        load_rows(str(p))
    long = tmp_path / "long.csv"
    long.write_bytes(b"timestamp,open,high,low,close,volume\n" + b"1" * (3 << 20) + b"\n")
    with pytest.raises(DataError, match=r"line 2 is longer than 1 MB"):
        load_rows(str(long))

    def fail(problem):
        return DataError(problem)

    ok = tmp_path / "ok.csv"
    ok.write_bytes(b"a\n" * 3_000_000)  # many short lines over several blocks
    check_text(ok, fail)


HOSTILE = r"""
import resource, sys
from mmrun.market.history import load_market
print("base_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
try:
    load_market(sys.argv[1])
except Exception as e:
    print(type(e).__name__, str(e)[:300])
print("maxrss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.parametrize("name,header", [("sparse.csv", b""), ("sparse_after_header.csv", b"timestamp,price,amount\n1,2,3\n"),
                                         ("sparse.json", b""), ("sparse.csv.gz", None)])
def test_a_2_gb_file_of_nul_bytes_is_refused_in_bounded_memory(tmp_path, name, header):
    p = tmp_path / name
    if header is None:  # a gzip of 200 MB of NUL bytes (it unpacks to a temporary file, checked as it goes)
        with gzip.open(p, "wb", compresslevel=1) as f:
            block = b"\0" * (1 << 20)
            for _ in range(200):
                f.write(block)
    else:
        with open(p, "wb") as f:
            f.write(header)
            f.truncate(2 << 30)  # sparse: 2 GB that cost no disk
    if name.endswith(".json"):
        with open(p, "r+b") as f:
            f.truncate(1 << 29)  # under the 1 GB JSON limit, so the NUL check is what refuses it
    out = subprocess.run([sys.executable, "-c", HOSTILE, str(p)], capture_output=True, text=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert lines[1].startswith("DataError"), out.stdout + out.stderr
    assert "NUL byte" in lines[1] or "longer than 1 MB" in lines[1]
    base, peak = int(lines[0].split()[1]), int(lines[-1].split()[1])
    assert peak - base < 100, lines  # MB above what importing mmrun costs


def test_open_table_kinds(tmp_path):
    p = tmp_path / "q.csv"
    p.write_text("timestamp,bid,ask\n1,1,2\n")
    t = open_table(str(p), "data.quotes", ("quotes",))
    assert t.kind == "quotes" and t.columns["bid"] == "bid"
    t.close()
    with pytest.raises(DataError, match=r"^data.path=.*columns not recognised: found timestamp, bid, ask"):
        open_table(str(p))


def test_latency_on_candles_and_quotes_with_candles_are_refused(tmp_path):
    paths = write_candle_formats(tmp_path)
    with pytest.raises(ConfigError, match=r"fills.latency_ms=50 needs trades"):
        load_market(paths["canonical.csv"], latency_ms=50)
    with pytest.raises(ConfigError, match=r"data.quotes=.* goes with a trades file"):
        load_market(paths["canonical.csv"], quotes=paths["canonical.csv"])


def test_since_until_slice_a_candle_file_and_rows_keep_their_numbers(tmp_path):
    paths = write_candle_formats(tmp_path)
    rows = load_market(paths["canonical.csv"], since_ms=TS[1], until_ms=TS[4]).rows
    assert rows["ts_ms"].tolist() == [TS[2], TS[3], TS[4]]  # open times 1..3, stamped at their close
    bad = tmp_path / "bad.csv"
    lines = [f"{t},{o},{h},{lo},{c},{v}" for t, o, h, lo, c, v in CANDLES]
    lines[3] = f"{TS[3]},100,99,101,100,1"  # high below low, in the slice
    bad.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 4 \(line 5\): high 99 is below low 101"):
        load_market(str(bad), since_ms=TS[2])
    with pytest.raises(DataError, match=r"no candles in data.since .. data.until"):
        load_market(paths["canonical.csv"], since_ms=TS[-1] + MIN)


def test_candle_gaps_pull_the_quotes_and_are_counted(tmp_path, caplog):
    minutes = [0, 1, 2, 3, 183, 184, 185]  # a 3-hour hole after minute 3
    p = tmp_path / "g.csv"
    p.write_text("timestamp,open,high,low,close,volume\n" + "".join(f"{T0 + m * MIN},100,101,99,100,1\n" for m in minutes))
    with caplog.at_level("WARNING", logger="mmrun"):
        data = load_market(str(p))
    assert len(data.gaps) == 1 and data.gaps[0].start_ms == T0 + 4 * MIN and data.gaps[0].length_s == 179 * 60
    r = data.rows
    assert np.isnan(r["low"][4]) and np.isnan(r["high"][4]) and r["volume"][4] == 0.0
    assert r["low"][[0, 1, 2, 3, 5, 6]].tolist() == [99.0] * 6
    assert "1 gap longer than data.max_gap_s=180: 3.0 h after 2026-01-01T00:04:00.000Z" in caplog.text
    assert len(load_market(str(p), max_gap_s=11000).gaps) == 0
