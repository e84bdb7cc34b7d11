"""A fake Binance public REST API on 127.0.0.1, enough for the real async ccxt client.

Endpoints (spot, /api/v3): exchangeInfo, depth, ticker/24hr, aggTrades, trades, klines (with
startTime/endTime/limit paging, at most `kline_page` candles a page). The market is whatever
the test sets: `book[symbol] = (bid, ask)`, `add_trade(...)`, candles from `kline_price()`
between `kline_start_ms` and `kline_end_ms`.

Faults are queued with `fail(kind, n=1, path=..., arg=...)` and consumed by the next
matching requests: '429' (with Retry-After: arg), '503', '504', 'hang' (sleep arg seconds
before answering, beyond the client's timeout), 'drop' (close the connection without an
answer), 'malformed' (invalid JSON), 'nulls' (valid JSON, every field null), 'badsymbol'
(Binance's -1121 Invalid symbol), 'stale' (ticker stamped arg seconds ago), 'crossed',
'empty' (no book), 'truncate' (the normal answer's headers, then half its body and a closed
connection: a body cut short in transit), 'ok' (answered normally: a placeholder). `stop()` then `start()` makes the server go away and come back on the
same port. Every request is logged in `requests` as (path, query dict).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

MINUTE_MS = 60_000


def _fmt(x: float) -> str:
    return f"{x:.8f}"


class FakeBinance:
    """State + fault queue of the fake server; `url` is what exchange.api_url points at."""

    def __init__(self, port: int = 0):
        self.lock = threading.Lock()
        self.markets: Dict[str, Tuple[str, str, float, float, float]] = {
            # symbol: base, quote, tick, lot, min notional
            "BTCUSDT": ("BTC", "USDT", 0.01, 0.00001, 5.0),
            "ETHUSDT": ("ETH", "USDT", 0.01, 0.0001, 5.0),
        }
        self.book: Dict[str, Tuple[Optional[float], Optional[float]]] = {
            "BTCUSDT": (60000.0, 60000.01),
            "ETHUSDT": (3000.0, 3000.01),
        }
        self.trades: Dict[str, List[Tuple[int, int, float, float, bool]]] = {"BTCUSDT": [], "ETHUSDT": []}
        self._next_trade_id = 1
        self.kline_start_ms = 1_790_000_000_000 - 1_790_000_000_000 % MINUTE_MS
        self.kline_end_ms = self.kline_start_ms + 3000 * MINUTE_MS
        self.kline_page = 500
        self.now_ms = lambda: int(time.time() * 1000)
        self.faults: deque = deque()
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        self._closing = threading.Event()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = port

    # ------------------------------------------------------------ control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeBinance":
        fake = self

        class Handler(_Handler):
            state = fake

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self.port = server.server_address[1]
        self._closing.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go away: stop listening (the port is kept for start())."""
        if self._server is None:
            return
        self._closing.set()  # wakes hanging handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = None

    def fail(self, kind: str, n: int = 1, path: str = "", arg: float = 0.0) -> None:
        """Queue n faults of `kind` for requests whose path contains `path`."""
        with self.lock:
            for _ in range(n):
                self.faults.append((path, kind, arg))

    def add_trade(self, symbol: str, ts_ms: int, price: float, qty: float, buyer_maker: bool = False) -> None:
        with self.lock:
            self.trades[symbol].append((self._next_trade_id, int(ts_ms), float(price), float(qty), buyer_maker))
            self._next_trade_id += 1

    def count(self, path_part: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if path_part in p)

    def _take_fault(self, path: str) -> Optional[Tuple[str, float]]:
        with self.lock:
            for i, (part, kind, arg) in enumerate(self.faults):
                if part in path:
                    del self.faults[i]
                    return kind, arg
        return None

    # ------------------------------------------------------------ market

    @staticmethod
    def kline_price(ts_ms: int) -> float:
        """A deterministic close for the candle opening at ts_ms."""
        i = ts_ms // MINUTE_MS
        return round(60000.0 + 500.0 * math.sin(i / 50.0) + (i % 7), 2)

    def kline(self, ts: int, step_ms: int) -> List[Any]:
        close = self.kline_price(ts)
        open_ = self.kline_price(ts - step_ms)
        high = max(open_, close) + 3.0
        low = min(open_, close) - 3.0
        vol = 1.0 + (ts // step_ms) % 5
        return [ts, _fmt(open_), _fmt(high), _fmt(low), _fmt(close), _fmt(vol), ts + step_ms - 1,
                _fmt(vol * close), 10, _fmt(vol / 2), _fmt(vol * close / 2), "0"]

    def exchange_info(self) -> Dict[str, Any]:
        symbols = []
        for sym, (base, quote, tick, lot, min_notional) in self.markets.items():
            symbols.append({
                "symbol": sym, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"], "icebergAllowed": True,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": _fmt(tick), "maxPrice": "1000000.00000000", "tickSize": _fmt(tick)},
                    {"filterType": "LOT_SIZE", "minQty": _fmt(lot), "maxQty": "9000.00000000", "stepSize": _fmt(lot)},
                    {"filterType": "NOTIONAL", "minNotional": _fmt(min_notional), "applyMinToMarket": True,
                     "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_MAKER"],
            })
        return {"timezone": "UTC", "serverTime": self.now_ms(), "rateLimits": [], "exchangeFilters": [], "symbols": symbols}


class _Handler(BaseHTTPRequestHandler):
    state: FakeBinance
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: Any, headers: Optional[Dict[str, str]] = None, raw: Optional[bytes] = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json" if raw is None or code == 200 else "text/html")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a hang beyond its timeout): nothing to answer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        st = self.state
        parts = urlsplit(self.path)
        path, q = parts.path, dict(parse_qsl(parts.query))
        with st.lock:
            st.requests.append((path, q))
        fault = st._take_fault(path)
        kind, arg = fault if fault else (None, 0.0)
        # kind "ok": a placeholder in the queue, answered normally (lets a test skip requests)
        if kind == "429":
            return self._send(429, {"code": -1003, "msg": "Too many requests; IP banned until later."},
                              {"Retry-After": f"{arg:g}"})
        if kind in ("503", "504"):
            return self._send(int(kind), None, raw=f"<html>{kind} Service Unavailable</html>".encode())
        if kind == "hang":
            st._closing.wait(arg)
        if kind == "drop":
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True
            return None
        if kind == "malformed":
            return self._send(200, None, raw=b'{"symbol": "BTCUSDT", "bidPrice": ')
        if kind == "badsymbol":
            return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
        try:
            body = self._route(path, q, kind, arg)
        except KeyError:
            return self._send(400, {"code": -1121, "msg": "Invalid symbol."})
        if body is None:
            return self._send(404, {"code": -1, "msg": f"no such endpoint {path}"})
        if kind == "nulls":
            body = _nulls(body)
        if kind == "truncate":
            return self._send_truncated(body)
        return self._send(200, body)

    def _send_truncated(self, body: Any) -> None:
        """Announce the whole body's length, send half of it, close the connection."""
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def _route(self, path: str, q: Dict[str, str], kind: Optional[str], arg: float) -> Any:
        st = self.state
        if path == "/api/v3/exchangeInfo":
            return st.exchange_info()
        if path == "/api/v3/ping":
            return {}
        if path == "/api/v3/time":
            return {"serverTime": st.now_ms()}
        if path == "/api/v3/depth":
            bid, ask = self._book(q["symbol"], kind)
            return {"lastUpdateId": 1,
                    "bids": [[_fmt(bid), "1.00000000"]] if bid else [],
                    "asks": [[_fmt(ask), "1.00000000"]] if ask else []}
        if path == "/api/v3/ticker/24hr":
            return self._ticker(q["symbol"], kind, arg)
        if path in ("/api/v3/aggTrades", "/api/v3/trades"):
            sym = q["symbol"]
            with st.lock:
                rows = list(st.trades[sym])
            start = int(q.get("startTime", -1))
            end = int(q.get("endTime", 2**62))
            limit = int(q.get("limit", 500))
            rows = [r for r in rows if start <= r[1] <= end]
            rows = rows[:limit] if "startTime" in q else rows[-limit:]
            if path == "/api/v3/aggTrades":
                return [{"a": i, "p": _fmt(p), "q": _fmt(v), "f": i, "l": i, "T": t, "m": m, "M": True}
                        for i, t, p, v, m in rows]
            return [{"id": i, "price": _fmt(p), "qty": _fmt(v), "quoteQty": _fmt(p * v), "time": t,
                     "isBuyerMaker": m, "isBestMatch": True} for i, t, p, v, m in rows]
        if path == "/api/v3/klines":
            st.markets[q["symbol"]]  # KeyError -> invalid symbol
            step = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": 60 * MINUTE_MS}[q.get("interval", "1m")]
            start = int(q.get("startTime", st.kline_start_ms))
            end = int(q.get("endTime", 2**62))
            limit = min(int(q.get("limit", 500)), st.kline_page)
            first = max(start, st.kline_start_ms)
            first = first + (-first) % step
            out = []
            ts = first
            while ts <= end and ts < st.kline_end_ms and len(out) < limit:
                out.append(st.kline(ts, step))
                ts += step
            return out
        return None

    def _book(self, sym: str, kind: Optional[str]) -> Tuple[Optional[float], Optional[float]]:
        bid, ask = self.state.book[sym]
        if kind == "crossed":
            return ask + 1.0, ask
        if kind == "empty":
            return None, None
        return bid, ask

    def _ticker(self, sym: str, kind: Optional[str], arg: float) -> Dict[str, Any]:
        st = self.state
        bid, ask = self._book(sym, kind)
        with st.lock:
            trades = list(st.trades[sym])
        last = trades[-1][2] if trades else ((bid or 0) + (ask or 0)) / 2 or 60000.0
        now = st.now_ms() - (int(arg * 1000) if kind == "stale" else 0)
        t = {"symbol": sym, "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": _fmt(last),
             "prevClosePrice": _fmt(last), "lastPrice": _fmt(last), "lastQty": "0.1",
             "openPrice": _fmt(last), "highPrice": _fmt(last), "lowPrice": _fmt(last), "volume": "100",
             "quoteVolume": _fmt(100 * last), "openTime": now - 86_400_000, "closeTime": now,
             "firstId": 1, "lastId": 2, "count": 2}
        if bid:
            t.update(bidPrice=_fmt(bid), bidQty="1.0")
        if ask:
            t.update(askPrice=_fmt(ask), askQty="1.0")
        return t


def _nulls(body: Any) -> Any:
    """The same shape with every leaf None: what a broken proxy's half-parsed body becomes."""
    if isinstance(body, dict):
        return {k: ("BTCUSDT" if k == "symbol" else _nulls(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [_nulls(v) for v in body]
    return None
