"""Market data files as people export them: which format a file is, and its columns under one set of names.

Readers are Polars' own (CSV, Parquet, Feather/IPC, JSON); this module only recognises what a
file holds and names its columns:

- candles: timestamp, open, high, low, close, volume (bid, ask optional): Yahoo
  (`Datetime,Open,High,Low,Close,Adj Close,Volume`), Binance public-data klines (12 columns,
  with or without a header), freqtrade data files (`.json` lists of `[ms, o, h, l, c, v]`,
  `.feather`/`.parquet` with a `date` column), ccxt OHLCV, any CSV with those names;
- trades: ts, price, amount (side optional: +1 buyer-initiated, -1 seller-initiated): Tardis.dev
  `trades`, Binance `trades` and `aggTrades` (with or without a header), plain
  `timestamp, price, amount[, side]`;
- quotes (top of book): ts, bid, ask: Tardis.dev `quotes`, Binance `bookTicker`, plain
  `timestamp, bid, ask[, bid_amount, ask_amount]`;
- market: a paper run's market.parquet (ts_ms, bid, ask, last, low, high, volume).

CSV: `,` `;` tab or `|` separated (detected from the first line), a header or none (a first
field that is a number means none), a UTF-8 BOM, CRLF line ends and trailing blank lines are
fine; `.gz` and `.zip` (one member) are read directly. Epoch timestamps in s, ms, µs or ns are
told apart by their size, per file (see `epoch_unit`).

Bounded memory on any file: before Polars reads a text file, the file is scanned in 1 MB blocks
for NUL bytes and for a line longer than MAX_LINE_BYTES (a binary or hostile file is refused
with one line naming where), so neither reading nor an error message ever holds more than a
block of a bad file. Compressed files: the first 64 KB are unpacked to recognise the file (and
checked the same way). A compressed CSV of candles whose stated unpacked size is at most
MAX_RATIO times its packed size (market data packs 2-10x) is then handed to Polars, which
unpacks it as it parses (several times faster than unpacking in Python); a one-member deflated
.zip is handed over as the gzip stream of its member's own deflate bytes (gzip header + those
bytes + the CRC-32 and size the zip already stores: no unpacking in Python). Everything else
compressed (trades, quotes, a .zip stored or of another method, a suspicious ratio) is unpacked
block by block to a temporary file, checked as it goes, and read from there, so memory stays
bounded by Polars' streaming batches.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import polars as pl

from mmrun.errors import DataError

MAX_LINE_BYTES = 1 << 20  # a table line longer than this is not market data
BLOCK = 1 << 20
HEAD_BYTES = 1 << 16
MAX_JSON_BYTES = 1 << 30  # a JSON file is parsed whole: larger ones are refused
MAX_RATIO = 50  # unpacked/packed size above which a compressed file is unpacked and checked block by block
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # RFC 1952: deflate, no name, no time

# Accepted names (compared after strip, lower case, spaces and '-' as '_'), best first.
TIME_NAMES = ("timestamp", "time", "datetime", "date", "open_time", "transact_time", "transaction_time",
              "event_time", "ts")
ALIASES: Dict[str, Tuple[str, ...]] = {
    "open": ("open",),
    "high": ("high",),
    "low": ("low",),
    "close": ("close",),
    "volume": ("volume", "vol"),
    "price": ("price",),
    "amount": ("amount", "qty", "quantity", "size", "base_volume"),
    "side": ("side",),
    "buyer_maker": ("is_buyer_maker", "isbuyermaker", "buyer_maker"),
    "bid": ("bid", "bid_price", "best_bid_price", "bidprice", "best_bid"),
    "ask": ("ask", "ask_price", "best_ask_price", "askprice", "best_ask"),
}
CANDLE_NEEDS = ("open", "high", "low", "close", "volume")

# Headerless layouts: (kind, column names, which columns hold true/false), by column count.
BINANCE_KLINES = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                  "taker_buy_volume", "taker_buy_quote_volume", "ignore")
HEADERLESS = [
    ("candles", "Binance klines", BINANCE_KLINES, ()),
    ("candles", "OHLCV", ("timestamp", "open", "high", "low", "close", "volume"), ()),
    ("trades", "Binance trades", ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"), (5, 6)),
    ("trades", "Binance futures trades", ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"), (5,)),
    ("trades", "Binance aggTrades", ("agg_trade_id", "price", "qty", "first_trade_id", "last_trade_id", "transact_time",
                                     "is_buyer_maker", "is_best_match"), (6, 7)),
    ("trades", "Binance futures aggTrades", ("agg_trade_id", "price", "qty", "first_trade_id", "last_trade_id",
                                             "transact_time", "is_buyer_maker"), (6,)),
    ("quotes", "Binance bookTicker", ("update_id", "best_bid_price", "best_bid_qty", "best_ask_price", "best_ask_qty",
                                      "transaction_time", "event_time"), ()),
    ("quotes", "quotes", ("timestamp", "bid", "ask"), ()),
    ("quotes", "quotes", ("timestamp", "bid", "ask", "bid_amount", "ask_amount"), ()),
]

ACCEPTED = {
    "candles": "a time column (" + "/".join(TIME_NAMES[:5]) + ", ...), open, high, low, close, volume (bid, ask optional)",
    "trades": "a time column, price, amount (or qty/quantity/size), side or is_buyer_maker optional",
    "quotes": "a time column, bid, ask (or bid_price/ask_price, best_bid_price/best_ask_price)",
    "market": "ts_ms, bid, ask, last, low, high, volume (a paper run's market.parquet)",
}

# Epoch integers: the unit of a value by its size (dates 1973..5138 in each unit).
_UNIT_BANDS = ((1e11, "s", 1_000_000), (1e14, "ms", 1_000), (1e17, "us", 1), (float("inf"), "ns", 0))
_SMALL = 1e8  # below this (synthetic files counting from the epoch) values are milliseconds


def normal_name(name: str) -> str:
    """A column name as compared: 'Open time' -> 'open_time', '\\ufeffDate' -> 'date'."""
    return re.sub(r"[\s\-]+", "_", str(name).replace("\ufeff", "").strip().strip('"').strip().lower())


@dataclass
class Table:
    """A recognised file: its kind, a label of its format, and how to read it.

    columns maps each canonical name (time, open, ..., price, amount, side, buyer_maker, bid,
    ask, or ROW_FIELDS for a market file) to the file's column name. first_line: the line of the
    first data row in a CSV (2 with a header, 1 without), 0 for other formats (rows only).
    """

    path_text: str
    key: str
    kind: str
    fmt: str
    reader: str  # csv | parquet | ipc | json
    path: Path  # the file Polars reads (an unpacked temporary copy of a .gz/.zip)
    columns: Dict[str, str]
    found: List[str]
    first_line: int = 0
    separator: str = ","
    has_header: bool = True
    new_columns: Optional[List[str]] = None
    temp: Optional[Path] = None
    json_rows: Optional[pl.DataFrame] = field(default=None, repr=False)
    first_row: Optional[Dict[str, str]] = None  # a CSV's first data row as text: column -> cell
    packed: bool = False  # path is gzip-compressed (Polars unpacks it as it reads)

    def fail(self, problem: str) -> DataError:
        return DataError(f"{self.key}={self.path_text}: {problem}")

    def row(self, i: int) -> str:
        """Data row i (0-based, file order) as the user counts it."""
        return f"row {i + 1} (line {i + self.first_line})" if self.first_line else f"row {i + 1}"

    def open_text(self):
        """The CSV as a text stream (UTF-8, invalid bytes replaced), for messages about its lines."""
        if self.packed:
            return gzip.open(self.path, "rt", encoding="utf-8", errors="replace", newline="")
        return open(self.path, "r", encoding="utf-8", errors="replace", newline="")

    def close(self) -> None:
        """Remove the unpacked temporary copy, if any (idempotent)."""
        if self.temp is not None:
            try:
                self.temp.unlink()
            except OSError:
                pass
            self.temp = None

    def scan(self, schema: Optional[Dict[str, pl.DataType]] = None, lossy: bool = False) -> pl.LazyFrame:
        """The file as a LazyFrame with its own column names (CSV cells as text unless schema says).

        lossy: decode invalid UTF-8 as U+FFFD instead of failing (half the CSV reader's speed:
        used only to find what is wrong with a file)."""
        if self.reader == "csv":
            kw = dict(separator=self.separator, has_header=self.has_header, infer_schema=False,
                      truncate_ragged_lines=False, encoding="utf8-lossy" if lossy else "utf8")
            if self.new_columns:
                kw["new_columns"] = self.new_columns
            if schema:
                kw["schema_overrides"] = schema
            return pl.scan_csv(self.path, **kw)
        if self.reader == "parquet":
            return pl.scan_parquet(self.path)
        if self.reader == "ipc":
            return pl.scan_ipc(self.path)
        return self.json_rows.lazy()


def open_table(path_text: str, key: str = "data.path", kinds: Sequence[str] = ("candles", "trades", "market"),
               check: bool = True) -> Table:
    """Recognise the file at path_text as one of kinds. Raises DataError (one line) otherwise.

    check=False skips the whole-file text check (check_text): for a look at the columns only,
    never before reading the rows.

    The caller must call Table.close() when done (a compressed file is unpacked to a temporary
    file that the lazy readers use).
    """
    path = Path(path_text)
    fail = lambda problem: DataError(f"{key}={path_text}: {problem}")  # noqa: E731
    try:
        st = path.stat()
    except OSError:
        raise fail("no such file") from None
    if not path.is_file():
        raise fail("not a file")
    if st.st_size == 0:
        raise fail("empty file")
    name = path.name.lower()
    temp = None
    try:
        if name.endswith(".zip") or name.endswith(".gz"):
            packed = name.rsplit(".", 1)[-1]
            inner = name[:-4] if packed == "zip" else name[:-3]
            table = _packed_candles(path_text, key, path, inner, packed, kinds, fail)
            if table is not None:
                return table
            temp = _unpack(path, name, fail)
            table = _open(path_text, key, temp, inner, kinds, fail, packed=packed)
            table.temp = temp
            return table
        return _open(path_text, key, path, name, kinds, fail, check=check)
    except BaseException:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise


def _packed_candles(path_text, key, path: Path, inner: str, packed: str, kinds, fail) -> Optional[Table]:
    """A compressed CSV of candles as a Table that Polars unpacks as it reads, or None when the
    file must be unpacked block by block instead (see the module docstring)."""
    if "candles" not in kinds or inner.endswith((".json", ".parquet", ".pq", ".feather", ".ipc", ".arrow")):
        return None
    member = None
    try:
        if packed == "gz":
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                stated = struct.unpack("<I", f.read(4))[0]  # ISIZE: the unpacked size mod 2**32
            with gzip.open(path, "rb") as src:
                head = src.read(HEAD_BYTES)
        else:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    return None  # _unpack names what the zip holds
                member = members[0]
                if member.compress_type != zipfile.ZIP_DEFLATED or member.flag_bits & 0x1:
                    return None  # stored, another method, or encrypted
                stated = member.file_size
                with zf.open(member) as src:
                    head = src.read(HEAD_BYTES)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        kind = "gzip" if packed == "gz" else "zip"
        raise fail(f"unreadable as {kind} ({_first_line(exc)})") from None
    if not head:
        raise fail("empty file")
    _refuse_nul(head, fail)
    if stated > MAX_RATIO * max(path.stat().st_size, 1) or (len(head) == HEAD_BYTES and b"\n" not in head):
        return None  # a suspicious ratio or a long first line: unpack and check block by block
    table = _csv(path_text, key, path, kinds, fail, f" ({packed})", check=False, head=head)
    if table.kind != "candles":
        return None  # trades and quotes stream from an unpacked copy, in bounded memory
    if member is not None:
        table.temp = table.path = _zip_as_gzip(path, member, inner, fail)
    table.packed = True
    return table


def _zip_as_gzip(path: Path, member: zipfile.ZipInfo, inner: str, fail) -> Path:
    """A temporary gzip file holding a zip member's deflate bytes as they are (no unpacking):
    gzip header, the member's raw deflate stream, then the CRC-32 and size from the zip directory."""
    fd, tmp = tempfile.mkstemp(prefix="mmrun-", suffix="-" + inner[-40:] + ".gz")
    out = Path(tmp)
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            src.seek(member.header_offset)
            local = src.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise zipfile.BadZipFile("bad local file header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            src.seek(member.header_offset + 30 + name_len + extra_len)
            dst.write(GZIP_HEADER)
            left = member.compress_size
            while left:
                block = src.read(min(left, 4 * BLOCK))
                if not block:
                    raise EOFError("the zip ends inside its member")
                dst.write(block)
                left -= len(block)
            dst.write(struct.pack("<II", member.CRC & 0xFFFFFFFF, member.file_size & 0xFFFFFFFF))
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        out.unlink(missing_ok=True)
        raise fail(f"unreadable as zip ({_first_line(exc)})") from None
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out


def _open(path_text, key, path: Path, name: str, kinds, fail, packed: str = "", check: bool = True) -> Table:
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if path.stat().st_size == 0:
        raise fail("empty file")
    label = f" ({packed})" if packed else ""
    if suffix in (".parquet", ".pq"):
        try:
            found = list(pl.read_parquet_schema(path))
        except Exception as exc:
            raise fail(f"unreadable as Parquet ({_first_line(exc)})") from None
        return _named(path_text, key, path, found, kinds, fail, "parquet", "Parquet" + label)
    if suffix in (".feather", ".ipc", ".arrow"):
        try:
            found = list(pl.read_ipc_schema(path))
        except Exception as exc:
            raise fail(f"unreadable as Feather/IPC ({_first_line(exc)})") from None
        return _named(path_text, key, path, found, kinds, fail, "ipc", "Feather" + label)
    if suffix == ".json":
        return _json(path_text, key, path, kinds, fail, label)
    return _csv(path_text, key, path, kinds, fail, label, check)


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:limit]}"


# ---------------------------------------------------------------- text checks, unpacking


def check_text(path: Path, fail, max_line: int = MAX_LINE_BYTES) -> None:
    """Refuse a file with a NUL byte or a line longer than max_line, reading 1 MB at a time.

    Only byte searches per block (memchr speed); the line number of a problem is counted
    afterwards, up to where it was found."""
    run = 0  # bytes since the last line end
    pos = 0  # file offset of the block
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK)
            if not block:
                return
            nul = block.find(b"\0")
            first_nl = block.find(b"\n")
            end = nul if nul >= 0 else len(block)
            head = first_nl if 0 <= first_nl < end else end
            if run + head > max_line:  # a line too long before the NUL (or the block's end)
                line = _line_at(path, pos - run)
                raise fail(f"line {line} is longer than {max_line // (1 << 20)} MB: not a table of market data")
            if nul >= 0:
                raise fail(f"line {_line_at(path, pos + nul)} has a NUL byte: a binary file, not a text table")
            last_nl = block.rfind(b"\n")
            # lines wholly inside the block are shorter than the block (BLOCK <= max_line)
            run = len(block) - last_nl - 1 if last_nl >= 0 else run + len(block)
            pos += len(block)


def _line_at(path: Path, offset: int) -> int:
    """The 1-based line holding byte offset (counted a block at a time)."""
    line, pos = 1, 0
    with open(path, "rb") as f:
        while pos < offset:
            block = f.read(min(BLOCK, offset - pos))
            if not block:
                break
            line += block.count(b"\n")
            pos += len(block)
    return line


def _unpack(path: Path, name: str, fail) -> Path:
    """Unpack a .gz or a one-member .zip block by block to a temporary file; refuse anything else."""
    fd, tmp = tempfile.mkstemp(prefix="mmrun-", suffix="-" + name.rsplit(".", 1)[0][-40:])
    os.close(fd)
    out = Path(tmp)
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, BLOCK)
        else:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    names = ", ".join(m.filename for m in members[:5]) or "none"
                    raise fail(f"a .zip must hold exactly one file; it holds {len(members)} ({names})")
                with zf.open(members[0]) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, BLOCK)
    except DataError:
        out.unlink(missing_ok=True)
        raise
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        out.unlink(missing_ok=True)
        kind = "gzip" if name.endswith(".gz") else "zip"
        raise fail(f"unreadable as {kind} ({_first_line(exc)})") from None
    return out


# ---------------------------------------------------------------- CSV


def _csv(path_text, key, path: Path, kinds, fail, label: str, check: bool = True, head: Optional[bytes] = None) -> Table:
    """Recognise a CSV from its first HEAD_BYTES (read from path unless given)."""
    if check:
        check_text(path, fail)
    if head is None:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise fail("empty file")
    first = lines[0]
    sep = max((",", ";", "\t", "|"), key=lambda s: (first.count(s), s == ","))
    fields = [c.strip().strip('"') for c in first.split(sep)]
    has_header = not _is_number(fields[0])
    sep_name = {",": "", ";": ", ';'-separated", "\t": ", tab-separated", "|": ", '|'-separated"}[sep]
    sample = [[c.strip().strip('"') for c in ln.split(sep)] for ln in lines[:3]]
    if has_header:
        table = _named(path_text, key, path, fields, kinds, fail, "csv", f"CSV{sep_name}{label}")
        table.separator, table.first_line = sep, 2
        if len(sample) > 1:
            table.first_row = dict(zip(table.found, sample[1]))
        return table
    n = len(fields)
    for kind, fmt, names, bools in HEADERLESS:
        if kind not in kinds or len(names) != n:
            continue
        flags = [all(_is_bool(r[i]) for r in sample if i < len(r)) for i in range(n)]
        if tuple(i for i, b in enumerate(flags) if b) != tuple(bools):
            continue
        table = _named(path_text, key, path, list(names), (kind,), fail, "csv", f"{fmt} CSV (no header){sep_name}{label}")
        table.separator, table.first_line, table.has_header, table.new_columns = sep, 1, False, list(names)
        table.first_row = dict(zip(names, sample[0]))
        return table
    layouts = "; ".join(f"{fmt}: {len(names)} columns" for kind, fmt, names, _ in HEADERLESS if kind in kinds)
    raise fail(f"no header, and {n} columns ({', '.join(fields[:12])}) match no known layout without one "
               f"({layouts}); add a header line naming the columns")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_bool(text: str) -> bool:
    return text.strip().lower() in ("true", "false")


# ---------------------------------------------------------------- JSON


def _json(path_text, key, path: Path, kinds, fail, label: str) -> Table:
    """freqtrade's list of [ms, open, high, low, close, volume], or a list of objects.

    A list of lists is turned into CSV text in one pass (bytes.translate: '[' -> ',', ']' -> line
    end, whitespace dropped) and read by Polars' CSV reader as numbers; each row then starts with
    two empty fields (from '[[' or '],['), which are dropped."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise fail(f"a JSON file of {size / 2**30:.1f} GB is too large (at most 1 GB): use CSV or Parquet")
    with open(path, "rb") as f:
        head = f.read(BLOCK)
    _refuse_nul(head, fail)  # a binary file is refused before it is read whole
    raw = path.read_bytes()  # at most MAX_JSON_BYTES: JSON is parsed whole
    _refuse_nul(raw, fail)
    body = raw.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body.startswith(b"[[") or body.startswith(b"[ [") or body.startswith(b"[\n"):
        flat = body.translate(_JSON_ROWS, b" \t\r\n")
        if flat.startswith(b",,"):
            if not flat.endswith(b"\n\n"):
                raise fail("unreadable as JSON (a list of lists must end with ']]')")
            end = flat.find(b"\n")
            width = flat.count(b",", 0, end) - 1  # values in the first row
            if width != 6 or "candles" not in kinds:
                raise fail(f"JSON rows of {width} values: the rows accepted are freqtrade's "
                           "[timestamp_ms, open, high, low, close, volume]")
            names = ["timestamp", "open", "high", "low", "close", "volume"]
            columns = ["_", "__"] + names
            typed = {"_": pl.String, "__": pl.String, "timestamp": pl.Int64, **{n: pl.Float64 for n in names[1:]}}
            try:
                try:
                    df = pl.read_csv(flat, has_header=False, schema=typed)
                except pl.exceptions.PolarsError as exc:  # not all numbers: as text, so the checks name the row
                    if "more fields" in str(exc):
                        raise
                    df = pl.read_csv(flat, has_header=False, new_columns=columns, infer_schema=False)
                df = df.select(names)
            except Exception as exc:
                raise fail(f"unreadable as JSON rows ({_first_line(exc)})") from None
            table = _named(path_text, key, path, names, ("candles",), fail, "json", f"freqtrade JSON{label}")
            table.json_rows = df
            return table
    try:
        df = pl.read_json(raw)
    except Exception as exc:
        raise fail(f"unreadable as JSON ({_first_line(exc)})") from None
    table = _named(path_text, key, path, df.columns, kinds, fail, "json", f"JSON{label}")
    table.json_rows = df
    return table


_JSON_ROWS = bytes.maketrans(b"[]", b",\n")


def _refuse_nul(data: bytes, fail) -> None:
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise fail(f"line {line} has a NUL byte: a binary file, not a text table")


# ---------------------------------------------------------------- naming the columns


def _named(path_text, key, path: Path, found: List[str], kinds, fail, reader: str, fmt: str) -> Table:
    by_norm: Dict[str, str] = {}
    for name in found:
        low = normal_name(name)
        if low in by_norm:
            raise fail(f"columns {by_norm[low]!r} and {name!r} are the same name (names are case-insensitive)")
        by_norm[low] = name

    def pick(names: Sequence[str]) -> Optional[str]:
        for n in names:
            if n in by_norm:
                return by_norm[n]
        return None

    def make(kind: str, cols: Dict[str, str], what: str) -> Table:
        return Table(path_text, key, kind, what, reader, path, cols, list(found))

    cols: Dict[str, str] = {}
    if "market" in kinds and "ts_ms" in by_norm and "last" in by_norm:
        from mmrun.market import ROW_FIELDS

        missing = [c for c in ROW_FIELDS if c not in by_norm]
        if missing:
            raise fail(f"a market file (it has ts_ms and last) needs columns {', '.join(ROW_FIELDS)}; "
                       f"missing {', '.join(missing)}")
        return make("market", {c: by_norm[c] for c in ROW_FIELDS}, "mmrun market recording")
    time_col = pick(TIME_NAMES)
    for canon, names in ALIASES.items():
        col = pick(names)
        if col is not None:
            cols[canon] = col
    if time_col is not None:
        cols["time"] = time_col
    fmt = _vendor(by_norm, fmt)
    if "candles" in kinds and all(c in cols for c in ("open", "high", "low", "close")):
        missing = [c for c in ("time",) + CANDLE_NEEDS if c not in cols]
        if missing:
            raise fail(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(_shown(m) for m in missing)}: "
                       f"a candle file needs {ACCEPTED['candles']}; found {', '.join(found) or 'none'}")
        return make("candles", cols, fmt)
    if "quotes" in kinds and "bid" in cols and "ask" in cols and "time" in cols:
        return make("quotes", cols, fmt)
    if "trades" in kinds and "price" in cols and "amount" in cols and "time" in cols:
        return make("trades", cols, fmt)
    accepted = "; or ".join(f"{k}: {ACCEPTED[k]}" for k in kinds)
    raise fail(f"columns not recognised: found {', '.join(map(str, found[:20])) or 'none'}; accepted are {accepted}")


def _shown(canon: str) -> str:
    return "timestamp" if canon == "time" else canon


def _vendor(by_norm: Dict[str, str], fmt: str) -> str:
    """Name the exporter when its columns say who it is."""
    if "(no header)" in fmt:  # named by its layout already
        return fmt
    if "date" in by_norm and fmt.split()[0] in ("Feather", "Parquet", "JSON") and "open" in by_norm:
        return f"{fmt} (freqtrade layout)"
    if "local_timestamp" in by_norm and "exchange" in by_norm:
        return "Tardis.dev " + fmt
    if "adj_close" in by_norm:
        return "Yahoo " + fmt
    if "open_time" in by_norm and "taker_buy_volume" in by_norm:
        return "Binance klines " + fmt
    if "best_bid_price" in by_norm:
        return "Binance bookTicker " + fmt
    if "agg_trade_id" in by_norm:
        return "Binance aggTrades " + fmt
    return fmt


# ---------------------------------------------------------------- epoch units


def unit_class(values: np.ndarray) -> np.ndarray:
    """Index into ("s", "ms", "us", "ns") of each epoch integer by its size."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    return np.searchsorted(np.array([1e11, 1e14, 1e17]), v, side="right")


UNITS = ("s", "ms", "us", "ns")
TO_US = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}


def epoch_unit(values: np.ndarray, name: str, row, fail) -> str:
    """The unit of a column of epoch integers: s, ms, us or ns, told by the first value's size
    (s below 1e11, ms below 1e14, µs below 1e17, else ns: the dates 1973..5138 in each unit).
    A file whose values are all below 1e8 counts in ms (files that count from the epoch).
    A row whose value is of another unit than the first row's is an error naming that row:
    a file that changes unit part-way (Binance spot files went from ms to µs in 2025)."""
    v = np.asarray(values)
    if v.size == 0:
        return "ms"
    if float(np.min(v)) < _SMALL:
        return "ms"
    cls = unit_class(v)
    bad = np.flatnonzero(cls != cls[0])
    if bad.size:
        i = int(bad[0])
        raise fail(f"{row(i)}: {name} {int(v[i])} is in {UNITS[cls[i]]} but the rows before are in {UNITS[cls[0]]} "
                   "since the epoch: a file must keep one unit (split it, or convert it)")
    return UNITS[int(cls[0])]


def to_ms(values: np.ndarray, unit: str) -> np.ndarray:
    """Epoch integers in unit -> int64 ms (floored)."""
    v = np.asarray(values, dtype=np.int64)
    return {"s": lambda: v * 1000, "ms": lambda: v, "us": lambda: v // 1000, "ns": lambda: v // 1_000_000}[unit]()


def to_us_expr(col: pl.Expr, unit: str) -> pl.Expr:
    """A Polars expression: epoch integers in unit -> int64 µs (ns floored)."""
    c = col.cast(pl.Int64)
    return {"s": c * 1_000_000, "ms": c * 1000, "us": c, "ns": c // 1000}[unit]
