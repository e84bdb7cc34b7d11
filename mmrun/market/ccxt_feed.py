"""Real exchanges through ccxt (async): the only module that imports ccxt.

Everything network-facing lives here, in three layers:
- `ExchangeClient`: one ccxt async client (URL rewriting, Binance limited to spot), and the
  one retry policy (tenacity: exponential backoff with jitter, bounded attempts and waits,
  Retry-After honoured, injectable sleep). ccxt errors are translated to mmrun.errors types
  with `raise ... from e`; permanent errors are never retried.
- validation helpers: a response is checked before use (None fields, empty or crossed book,
  stale timestamps), since ccxt can hand a malformed body back as data full of None.
- `CcxtFeed`: the paper loop's market source for one pair (same interface as SimFeed),
  with optional fallback exchanges.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from mmrun.errors import ConfigError, ExchangeUnavailable, PermanentError, TemporaryError

log = logging.getLogger("mmrun")

Sleep = Callable[[float], Awaitable[None]]


def exchange_ids() -> List[str]:
    """Every exchange id ccxt knows (`exchange.id` must be one of them, or 'sim')."""
    return list(ccxt.exchanges)


# ---------------------------------------------------------------- errors


class BadMarketData(TemporaryError):
    """A response that parsed but cannot be traded on (None fields, empty/crossed book, stale)."""


class RateLimited(TemporaryError):
    """HTTP 429 / DDoS protection; `retry_after_s` is the server's Retry-After, if it sent one."""

    def __init__(self, message: str, retry_after_s: Optional[float] = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def parse_retry_after(value: Any, now_s: Optional[float] = None) -> Optional[float]:
    """A Retry-After header (seconds, or an HTTP date) -> seconds to wait (>= 0), None if absent/bad."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now_s is None else now_s)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Any, name: str) -> Any:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name.lower():
            return value
    return None


def translate(exc: BaseException, what: str, headers: Any = None) -> Exception:
    """A ccxt (or parsing) exception -> the mmrun.errors type saying what the caller does.

    Transient (retried): ccxt's OperationFailed family (NetworkError, DDoSProtection,
    RateLimitExceeded, RequestTimeout, ExchangeNotAvailable, BadResponse), a body cut short in
    transit (an ExchangeError caused by aiohttp.ClientPayloadError) and a body ccxt could not
    parse (TypeError/KeyError/... inside its parser). Permanent (never retried):
    ExchangeError and its subclasses (BadSymbol, AuthenticationError, ...).
    """
    detail = f"{what}: {type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        return RateLimited(detail, parse_retry_after(_header(headers, "Retry-After")))
    if isinstance(exc, ccxt.OperationFailed):
        return TemporaryError(detail)
    if isinstance(exc, ccxt.ExchangeError) and _truncated_body(exc):
        # ccxt reports a body cut short in transit (aiohttp's ClientPayloadError: Content-Length
        # or chunked encoding not completed) as a plain ExchangeError: a dropped connection
        return TemporaryError(f"{what}: response body cut short ({_short(exc.__cause__)})")
    if isinstance(exc, ccxt.BaseError):
        return PermanentError(detail)
    if isinstance(exc, (TypeError, KeyError, ValueError, AttributeError, IndexError)):
        return BadMarketData(f"{what}: malformed response ({type(exc).__name__}: {_short(exc)})")
    return TemporaryError(detail)


def _truncated_body(exc: BaseException) -> bool:
    """True if ccxt's error comes from an HTTP body that ended before its announced length."""
    import aiohttp

    return isinstance(exc.__cause__, aiohttp.ClientPayloadError)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- retry policy


@dataclass(frozen=True)
class RetryPolicy:
    """How one exchange call is retried on transient errors.

    attempts: tries per call in all (1 = no retry). The wait before retry n (n = 1, 2, ...)
    is base_s * 2**(n-1), capped at max_wait_s, minus a random fraction up to `jitter` of it
    (so clients that failed together do not retry together). A Retry-After from the server
    replaces a shorter wait; one longer than max_wait_s ends the retries at once.
    """

    attempts: int = 4
    base_s: float = 0.5
    max_wait_s: float = 30.0
    jitter: float = 0.5

    def backoff_s(self, retry: int, u: float) -> float:
        """Wait (seconds) before retry number `retry` (1-based); u in [0, 1) is the jitter draw."""
        full = min(self.max_wait_s, self.base_s * 2.0 ** (retry - 1))
        return full * (1.0 - self.jitter * u)


# ---------------------------------------------------------------- URL rewriting


def rewrite_api_urls(api: Any, base_url: str) -> Any:
    """Every URL in ccxt's `urls['api']` (a string or nested dicts) moved to base_url, paths kept.

    'https://api.binance.com/api/v3' with base 'http://127.0.0.1:8080' becomes
    'http://127.0.0.1:8080/api/v3'; a base with a path prefixes it ('http://proxy/bn' ->
    'http://proxy/bn/api/v3'). WebSocket URLs follow the base's security (ws or wss).
    """
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(f"exchange.api_url={base_url!r} is not an http(s) URL: write http://HOST:PORT")
    prefix = base_url.rstrip("/")

    def one(url: Any) -> Any:
        if isinstance(url, dict):
            return {k: one(v) for k, v in url.items()}
        if not isinstance(url, str):
            return url
        parts = urlsplit(url)
        if not parts.netloc:
            return url
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.scheme in ("ws", "wss"):
            scheme = "wss" if base.scheme == "https" else "ws"
            return f"{scheme}://{base.netloc}{base.path.rstrip('/')}{rest}"
        return prefix + rest

    return one(api)


# ---------------------------------------------------------------- market rules


@dataclass(frozen=True)
class MarketRules:
    """What the exchange accepts for a pair: price tick, amount lot, minimum notional (0 = none)."""

    symbol: str
    tick: float  # price grid, quote currency
    lot: float  # amount grid, base units
    min_amount: float  # base units
    min_notional: float  # quote currency


def market_rules(market: Dict[str, Any]) -> MarketRules:
    """ccxt's unified market -> MarketRules (ccxt 4 gives precision as tick sizes)."""
    prec = market.get("precision") or {}
    limits = market.get("limits") or {}

    def num(x: Any) -> float:
        try:
            v = float(x)
        except (TypeError, ValueError):
            return 0.0
        return v if math.isfinite(v) and v > 0 else 0.0

    return MarketRules(
        symbol=str(market.get("symbol")),
        tick=num(prec.get("price")),
        lot=num(prec.get("amount")),
        min_amount=num((limits.get("amount") or {}).get("min")),
        min_notional=num((limits.get("cost") or {}).get("min")),
    )


# ---------------------------------------------------------------- the client


class ExchangeClient:
    """One ccxt async client with the retry policy: `call` wraps exactly one ccxt call."""

    def __init__(
        self,
        exchange_id: str,
        *,
        api_url: Optional[str] = None,
        timeout_s: float = 10.0,
        policy: RetryPolicy = RetryPolicy(),
        sleep: Optional[Sleep] = None,
        rng: Optional[random.Random] = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        if exchange_id not in ccxt.exchanges:
            raise ConfigError(f"exchange.id={exchange_id!r} is not a known ccxt exchange id")
        options: Dict[str, Any] = {}
        if exchange_id in ("binance", "binanceus"):
            # ccxt's default also loads futures markets from fapi/dapi hosts: spot only.
            options["fetchMarkets"] = {"types": ["spot"]}
        self.id = exchange_id
        self.api_url = api_url
        self.name = exchange_id if api_url is None else f"{exchange_id}@{api_url}"
        self.client = getattr(ccxt_async, exchange_id)(
            {"timeout": int(timeout_s * 1000), "enableRateLimit": True, "options": options}
        )
        if api_url:
            self.client.urls["api"] = rewrite_api_urls(self.client.urls["api"], api_url)
        self.policy = policy
        self.sleep: Sleep = asyncio.sleep if sleep is None else sleep
        self.rng = random.Random() if rng is None else rng
        self.monotonic = monotonic
        self.requests = 0  # ccxt calls attempted (tests count retries with it)
        self.retries = 0  # transient errors absorbed by a retry (calls that then succeeded)
        self._not_before = 0.0  # monotonic time before which a Retry-After forbids calling

    @classmethod
    def from_config(cls, ex_cfg: Any, exchange_id: Optional[str] = None, api_url: Optional[str] = None,
                    sleep: Optional[Sleep] = None) -> "ExchangeClient":
        """A client for exchange config `ex_cfg` (or for another id, a fallback, with its settings)."""
        return cls(
            exchange_id or ex_cfg.id,
            api_url=api_url if exchange_id else ex_cfg.api_url,
            timeout_s=float(ex_cfg.timeout_s),
            policy=RetryPolicy(int(ex_cfg.retry_attempts), float(ex_cfg.retry_base_s), float(ex_cfg.retry_max_wait_s)),
            sleep=sleep,
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wait = self.policy.backoff_s(state.attempt_number, self.rng.random())
        ra = getattr(exc, "retry_after_s", None)
        return max(wait, ra) if ra is not None else wait

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.policy.attempts:
            return True
        exc = state.outcome.exception() if state.outcome else None
        ra = getattr(exc, "retry_after_s", None)
        if ra is not None and ra > self.policy.max_wait_s:
            # The server asks for more patience than one call may spend: stop now, and make
            # the calls of the next cycles fail fast (without a request) until it has passed.
            self._not_before = self.monotonic() + ra
            return True
        return False

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        text = str(exc)
        # the error's text names the source already when the call's `what` does ("binance BTC/USDT ticker: ...")
        label = text if text.startswith(self.name) else f"{self.name}: {text}"
        log.info("%s; retry %d/%d in %.2f s", label, state.attempt_number, self.policy.attempts - 1, wait)

    async def _once(self, what: str, method: str, args: Tuple, kwargs: Dict[str, Any],
                    check: Optional[Callable[[Any], Any]]) -> Any:
        left = self._not_before - self.monotonic()
        if left > 0:
            # no request: the wait (and whether to wait at all) is the policy's, as after a 429
            raise RateLimited(f"{what}: rate limited by {self.name}, {left:.1f} s of Retry-After left", left)
        self.requests += 1
        try:
            result = await getattr(self.client, method)(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise translate(e, what, getattr(self.client, "last_response_headers", None)) from e
        return check(result) if check is not None else result

    async def call(self, what: str, method: str, *args: Any, check: Optional[Callable[[Any], Any]] = None,
                   absorbed: Optional[Callable[[int], None]] = None, **kwargs: Any) -> Any:
        """`client.method(*args, **kwargs)` with translation and retries; `check` validates the result
        (raise BadMarketData to have a malformed answer retried like a failed call); `absorbed` is
        called with the number of transient errors a successful call got past by retrying (> 0)."""
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception_type(TemporaryError),
            sleep=self.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        result = await retrying(self._once, what, method, args, kwargs, check)
        retried = int(retrying.statistics.get("attempt_number", 1)) - 1
        if retried > 0:
            self.retries += retried
            if absorbed is not None:
                absorbed(retried)
        return result

    async def load_markets(self) -> None:
        """Load the markets (once); an unreachable exchange raises ExchangeUnavailable naming it."""
        if self.client.markets:
            return
        try:
            await self.call("load markets", "load_markets")
        except TemporaryError as e:
            where = f" at {self.api_url}" if self.api_url else ""
            raise ExchangeUnavailable(f"exchange {self.id}{where} cannot be reached: {e}") from e

    def rules(self, pair: str, key: str = "pair") -> MarketRules:
        """The market rules of a listed pair; a pair the exchange does not list is a ConfigError."""
        markets = self.client.markets or {}
        if pair not in markets:
            from mmrun.inputs import pair_hint

            quotes = {str(m.get("quote")) for m in markets.values() if isinstance(m, dict) and m.get("quote")}
            close = pair_hint(pair, list(markets), quotes)
            hint = f"; did you mean {close}?" if close else ""
            raise ConfigError(f"{key}={pair} is not listed on {self.id} ({len(markets)} markets){hint}")
        return market_rules(markets[pair])

    async def close(self) -> None:
        try:
            await self.client.close()
        except Exception as e:  # closing must never hide the run's own outcome
            log.debug("%s: close failed: %s", self.name, e)


# ---------------------------------------------------------------- validation


def _positive(x: Any) -> Optional[float]:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def check_top(bid: Any, ask: Any, what: str) -> Tuple[float, float]:
    """Best bid and ask, both present, positive and not crossed; else BadMarketData."""
    b, a = _positive(bid), _positive(ask)
    if b is None and a is None:
        raise BadMarketData(f"{what}: empty book (no bid, no ask)")
    if b is None or a is None:
        raise BadMarketData(f"{what}: one-sided or malformed book (bid={bid!r}, ask={ask!r})")
    if b >= a:
        raise BadMarketData(f"{what}: crossed book (bid {b} >= ask {a})")
    return b, a


def check_age(ts_ms: Any, now_ms: int, max_age_s: float, what: str) -> None:
    """Data stamped more than max_age_s before now_ms is stale (no stamp: cannot tell, accepted)."""
    if ts_ms is None:
        return
    age_s = (now_ms - int(ts_ms)) / 1000.0
    if age_s > max_age_s:
        raise BadMarketData(f"{what}: stale data, {age_s:.1f} s old > exchange.max_data_age_s={max_age_s:g}")


def check_trades(trades: Any, what: str) -> List[Tuple[int, str, float, float]]:
    """ccxt trades -> [(ts_ms, id, price, amount)] sorted by time; any malformed trade -> BadMarketData."""
    return [t[:4] for t in _trade_rows(trades, what, "not a list of trades")]


def _trade_rows(trades: Any, what: str, not_a_list: str) -> List[Tuple[int, str, float, float, int]]:
    """ccxt trades -> [(ts_ms, id, price, amount, side)] sorted by time (stable); side +1 buy, -1
    sell (the taker's side), 0 unknown. Not a list, or a trade without a time or a positive price
    and amount -> BadMarketData naming `what` (and `not_a_list` for the first case)."""
    if not isinstance(trades, list):
        raise BadMarketData(f"{what}: malformed response ({not_a_list})")
    out = []
    for t in trades:
        ts = t.get("timestamp") if isinstance(t, dict) else None
        price = _positive(t.get("price")) if isinstance(t, dict) else None
        amount = _positive(t.get("amount")) if isinstance(t, dict) else None
        if ts is None or price is None or amount is None:
            raise BadMarketData(f"{what}: malformed trade {t!r:.120}")
        out.append((int(ts), str(t.get("id")), price, amount, {"buy": 1, "sell": -1}.get(t.get("side"), 0)))
    out.sort(key=lambda x: x[0])
    return out


# ---------------------------------------------------------------- the paper feed


TRADE_PAGE = 1000  # trades asked for per request (Binance's maximum)
MAX_TRADE_PAGES = 10  # pages read per cycle at most: 10,000 trades (BTC/USDT prints 1,000+ in 5 s at times)


class _Source:
    """One exchange serving one pair: its client, and what it has already reported."""

    def __init__(self, client: ExchangeClient, pair: str):
        self.client = client
        self.pair = pair
        self.rules: Optional[MarketRules] = None
        self.cursor_ms: Optional[int] = None  # time of the newest trade already counted
        self.ids_at_cursor: set = set()
        self.last: Optional[float] = None
        self.retries = 0  # transient errors absorbed by a retry, this pair's calls only
        self.incomplete_cycles = 0  # cycles whose trades could not all be read (MAX_TRADE_PAGES)

    def _absorbed(self, n: int) -> None:
        self.retries += n

    async def snapshot(self, now_ms: int, wall_ms: int, max_age_s: float,
                       rest_from_ms: Optional[int] = None) -> Tuple[float, float, float, float, float, float]:
        """(bid, ask, last, low, high, volume) with trades since the previous snapshot; with
        rest_from_ms (fills.latency_ms > 0), low/high/volume count only trades from that time."""
        c = self.client
        if self.rules is None:
            await c.load_markets()
            self.rules = c.rules(self.pair)
        what = f"{c.name} {self.pair}"
        ticker = await c.call(f"{what} ticker", "fetch_ticker", self.pair,
                              check=_ticker_check(f"{what} ticker", wall_ms, max_age_s), absorbed=self._absorbed)
        if ticker.get("bid") is None and ticker.get("ask") is None:
            # some exchanges' tickers carry no book top: ask the order book
            bid, ask = await c.call(f"{what} order book", "fetch_order_book", self.pair, 5,
                                    check=_book_check(f"{what} order book"), absorbed=self._absorbed)
        else:
            bid, ask = float(ticker["bid"]), float(ticker["ask"])
        first = self.cursor_ms is None
        new = await self._new_trades(what, wall_ms)
        last = _positive(ticker.get("last")) or self.last or (bid + ask) / 2.0
        if first or not new:
            # the first snapshot has no "previous" one: its trades are history, not the interval's
            return bid, ask, last, math.nan, math.nan, 0.0
        if rest_from_ms is not None:
            new = [t for t in new if t[0] >= rest_from_ms]  # before it, the quotes were not resting yet
            if not new:
                return bid, ask, last, math.nan, math.nan, 0.0
        prices = [t[2] for t in new]
        return bid, ask, last, min(prices), max(prices), float(sum(t[3] for t in new))

    def _take(self, trades: List[Tuple[int, str, float, float]]) -> List[Tuple[int, str, float, float]]:
        """The trades not counted yet (after the cursor, or at it with an unseen id); moves the cursor."""
        new = [t for t in trades if self.cursor_ms is None or t[0] > self.cursor_ms
               or (t[0] == self.cursor_ms and t[1] not in self.ids_at_cursor)]
        if new:
            newest = new[-1][0]
            if newest != self.cursor_ms:
                self.ids_at_cursor = set()
            self.cursor_ms = newest
            self.ids_at_cursor.update(t[1] for t in new if t[0] == newest)
            self.last = new[-1][2]
        return new

    async def _new_trades(self, what: str, wall_ms: int) -> List[Tuple[int, str, float, float]]:
        """Every public trade since the cursor, page by page until a page is not full.

        Each page starts at the newest trade already read (trades at that millisecond are told
        apart by id). At most MAX_TRADE_PAGES pages a cycle: an interval busier than that is
        counted in `incomplete_cycles` (and logged), the trades read so far decide its fills,
        and the cursor moves to now, so the unread rest is never credited to a later cycle's
        quotes. The first snapshot reads one page (history, not an interval).
        """
        c = self.client
        check = lambda r: check_trades(r, f"{what} trades")  # noqa: E731
        if self.cursor_ms is None:
            page = await c.call(f"{what} trades", "fetch_trades", self.pair, None, TRADE_PAGE, check=check,
                                absorbed=self._absorbed)
            if not self._take(page):
                self.cursor_ms = wall_ms  # nothing traded yet: count trades from now on
            return []
        out: List[Tuple[int, str, float, float]] = []
        for _ in range(MAX_TRADE_PAGES):
            since = self.cursor_ms
            page = await c.call(f"{what} trades", "fetch_trades", self.pair, since, TRADE_PAGE, check=check,
                                absorbed=self._absorbed)
            new = self._take(page)
            out.extend(new)
            if len(page) < TRADE_PAGE:
                return out  # caught up
            if not new:
                break  # a full page with nothing new (more than a page in one millisecond): cannot advance
        self.incomplete_cycles += 1
        log.warning("%s trades: more than %d pages (%d trades) since the last cycle; the cycle's fills use "
                    "those read, the rest is skipped", what, MAX_TRADE_PAGES, len(out))
        if self.cursor_ms is None or self.cursor_ms < wall_ms:
            self.cursor_ms, self.ids_at_cursor = wall_ms, set()
        return out


def _dict_check(what: str) -> Callable[[Any], Dict[str, Any]]:
    def check(result: Any) -> Dict[str, Any]:
        if not isinstance(result, dict):
            raise BadMarketData(f"{what}: malformed response ({type(result).__name__}, not an object)")
        return result

    return check


def _ticker_check(what: str, wall_ms: Optional[int] = None, max_age_s: float = math.inf) -> Callable[[Any], Dict[str, Any]]:
    as_dict = _dict_check(what)

    def check(result: Any) -> Dict[str, Any]:
        t = as_dict(result)
        if all(t.get(k) is None for k in ("bid", "ask", "last")):
            raise BadMarketData(f"{what}: malformed response (no bid, ask or last)")
        if t.get("bid") is not None or t.get("ask") is not None:
            check_top(t.get("bid"), t.get("ask"), what)
        if wall_ms is not None:
            check_age(t.get("timestamp"), wall_ms, max_age_s, what)
        return t

    return check


def _book_check(what: str) -> Callable[[Any], Tuple[float, float]]:
    """An order book -> its checked (best bid, best ask)."""
    as_dict = _dict_check(what)

    def check(result: Any) -> Tuple[float, float]:
        book = as_dict(result)
        bids, asks = book.get("bids") or [], book.get("asks") or []
        bid = bids[0][0] if bids and bids[0] else None
        ask = asks[0][0] if asks and asks[0] else None
        return check_top(bid, ask, what)

    return check


def parse_fallback(entry: str) -> Tuple[str, Optional[str]]:
    """'coinbase' -> ('coinbase', None); 'binance@http://host:port' -> ('binance', 'http://host:port')."""
    ex_id, sep, url = str(entry).partition("@")
    return ex_id.strip(), (url.strip() or None) if sep else None


class CcxtFeed:
    """A real exchange's public market data for one pair, as the paper loop's feed (market.source.Feed).

    `fetch(now_ms)` returns (ts_ms, bid, ask, last, low, high, volume): the book top and last
    price now, and the public trades since the previous fetch (NaN, NaN, 0 if none). It raises
    (a TemporaryError) when no source could serve valid data; it never makes prices up. The
    primary exchange is tried first, then each fallback; `source` names the one that served.
    """

    live = True  # real time: the paper loop abandons a fetch in flight on a stop request

    def __init__(self, pair: str, clients: Sequence[ExchangeClient], *, max_age_s: float,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000)):
        self.pair = pair
        self.sources = [_Source(c, pair) for c in clients]
        self.max_age_s = float(max_age_s)
        self.wall_ms = wall_ms
        self.name = clients[0].name
        self.source = ""
        self._last_ts = -1
        self.rules: Optional[MarketRules] = None
        self.latency_ms = 0.0  # fills.latency_ms: quotes placed at a row rest from its time + this

    @property
    def tick(self) -> float:
        return self.rules.tick if self.rules else 0.0

    @property
    def retries(self) -> int:
        """Transient errors this pair's calls got past by retrying, all sources together."""
        return sum(src.retries for src in self.sources)

    @property
    def incomplete_cycles(self) -> int:
        """Cycles whose public trades could not all be read (more than MAX_TRADE_PAGES pages)."""
        return sum(src.incomplete_cycles for src in self.sources)

    async def start(self) -> None:
        """Load markets and check the pair, trying the primary, then each fallback in turn: the
        first that answers gives the market rules (tick, lot, minimums). An unknown pair on the
        primary ends the run here; when no source can be reached, one ExchangeUnavailable
        lists every source tried and why."""
        failures: List[str] = []
        for i, src in enumerate(self.sources):
            try:
                await src.client.load_markets()
            except ExchangeUnavailable as e:
                failures.append(str(e))
                continue
            try:
                src.rules = src.client.rules(self.pair)
            except ConfigError as e:
                if i == 0:
                    raise
                failures.append(f"{src.client.name}: {e}")
                continue
            if i > 0:
                log.warning("%s: %s cannot be reached; starting on %s's market rules", self.pair,
                            self.sources[0].client.name, src.client.name)
            self.rules = src.rules
            return
        if len(failures) == 1:
            raise ExchangeUnavailable(failures[0])
        raise ExchangeUnavailable(
            f"no market data source for {self.pair} can be reached ({len(failures)} tried): " + " | ".join(failures)
        )

    async def fetch(self, now_ms: int) -> Tuple[int, float, float, float, float, float, float]:
        failures: List[Exception] = []
        for i, src in enumerate(self.sources):
            try:
                rest_from = (self._last_ts + int(round(self.latency_ms))
                             if self.latency_ms > 0 and self._last_ts >= 0 else None)
                bid, ask, last, low, high, volume = await src.snapshot(now_ms, self.wall_ms(), self.max_age_s, rest_from)
            except (TemporaryError, ExchangeUnavailable) as e:
                failures.append(e)
                if i + 1 < len(self.sources):
                    text = str(e)  # names the source already when it starts with it
                    said = text if text.startswith(src.client.name) else f"{src.client.name}: {text}"
                    said = said if self.pair in said else f"{self.pair}: {said}"
                    log.warning("%s failed; trying %s", said, self.sources[i + 1].client.name)
                continue
            except ConfigError as e:  # a fallback that does not list the pair
                failures.append(TemporaryError(str(e)))
                continue
            if src.client.name != self.source:
                log.info("%s: market data from %s", self.pair, src.client.name)
            self.source = src.client.name
            # strictly increasing market time, even if the clock stalls between cycles
            ts = max(int(now_ms), self._last_ts + 1)
            self._last_ts = ts
            return ts, bid, ask, last, low, high, volume
        if len(failures) == 1:
            raise failures[0]
        raise TemporaryError("all sources failed: " + " | ".join(map(str, failures))) from failures[-1]

    async def close(self) -> None:
        for src in self.sources:
            await src.client.close()  # idempotent: a client shared with another pair may be closed already


async def open_feed(ex_cfg: Any, pair: str, sleep: Optional[Sleep] = None,
                    wall_ms: Optional[Callable[[], int]] = None,
                    shared: Optional[Dict[Tuple[str, Optional[str]], ExchangeClient]] = None) -> CcxtFeed:
    """A started CcxtFeed for `pair` on the configured exchange and its fallbacks.

    shared: clients by (exchange id, api_url), reused across the pairs of one run, so that each
    exchange's markets are loaded once and its rate limits (and any Retry-After) are shared.
    """
    shared = {} if shared is None else shared

    def client(ex_id: Optional[str], url: Optional[str]) -> ExchangeClient:
        key = (ex_id or ex_cfg.id, url if ex_id else ex_cfg.api_url)
        if key not in shared:
            shared[key] = ExchangeClient.from_config(ex_cfg, exchange_id=ex_id, api_url=url, sleep=sleep)
        return shared[key]

    clients = [client(None, None)]
    for entry in ex_cfg.fallbacks or []:
        clients.append(client(*parse_fallback(entry)))
    kwargs = {"wall_ms": wall_ms} if wall_ms else {}
    feed = CcxtFeed(pair, clients, max_age_s=float(ex_cfg.max_data_age_s), **kwargs)
    try:
        await feed.start()
    except BaseException:
        await feed.close()
        raise
    return feed


# ---------------------------------------------------------------- candles


def timeframe_ms(timeframe: str) -> int:
    """A ccxt timeframe ('1m', '1h', '1d') -> its length in milliseconds; else ConfigError."""
    try:
        ms = int(ccxt.Exchange.parse_timeframe(str(timeframe)) * 1000)
    except Exception:
        ms = 0
    if ms <= 0:
        raise ConfigError(f"data.timeframe={timeframe!r} is not a timeframe: write e.g. 1m, 5m, 1h, 1d")
    return ms


async def fetch_ohlcv_range(client: ExchangeClient, pair: str, timeframe: str, since_ms: int, until_ms: int,
                            page_limit: int = 1000, on_page=None) -> List[List[float]]:
    """Candles [ts_ms, open, high, low, close, volume] with since_ms <= ts < until_ms, page by page.

    Each page is one retried call; the next page starts after the last candle received. Ends
    on an empty page, on reaching until_ms, or when a page does not advance (bounded loop).
    on_page: called with the number of candles of each page received (a progress bar).
    """
    await client.load_markets()
    client.rules(pair)
    if timeframe not in (client.client.timeframes or {}):
        allowed = ", ".join(list(client.client.timeframes or {})[:12])
        raise ConfigError(f"data.timeframe={timeframe!r} is not offered by {client.id}: allowed {allowed}")
    tf_ms = int(client.client.parse_timeframe(timeframe) * 1000)
    out: List[List[float]] = []
    cursor = since_ms
    max_pages = (until_ms - since_ms) // tf_ms + 2
    for _ in range(int(max_pages)):
        if cursor >= until_ms:
            break
        page = await client.call(
            f"{client.name} {pair} candles from {cursor}", "fetch_ohlcv", pair, timeframe, cursor, page_limit,
            {"until": until_ms - 1}, check=_check_candles,
        )
        page = [c for c in page if cursor <= c[0] < until_ms]
        if not page:
            break
        out.extend(page)
        if on_page is not None:
            on_page(len(page))
        cursor = int(page[-1][0]) + tf_ms
    return out


def _check_candles(result: Any) -> List[List[float]]:
    if not isinstance(result, list):
        raise BadMarketData("candles: malformed response (not a list)")
    out = []
    for c in result:
        if not isinstance(c, (list, tuple)) or len(c) < 6 or any(v is None for v in c[:6]):
            raise BadMarketData(f"candles: malformed candle {c!r:.120}")
        out.append([int(c[0])] + [float(v) for v in c[1:6]])
    return out


# ---------------------------------------------------------------- trades downloads


def _check_trade_page(result: Any) -> List[Tuple[int, str, float, float, int]]:
    """A page of ccxt trades -> [(ts_ms, id, price, amount, side)] in time order; side +1 buy, -1 sell
    (the taker's side), 0 unknown. A malformed trade -> BadMarketData (retried)."""
    return _trade_rows(result, "trades", "not a list")


async def fetch_trades_range(client: ExchangeClient, pair: str, since_ms: int, until_ms: int, page_limit: int = 1000,
                             window_ms: int = 3_600_000, on_page=None) -> List[Tuple[int, str, float, float, int]]:
    """Public trades (ts_ms, id, price, amount, side) with since_ms <= ts < until_ms, page by page.

    Paged by time: each page is one retried fetch_trades(since=cursor) call; the next starts at
    the last trade's time, and trades already received at that millisecond are recognised by
    id. A page with nothing new moves the cursor on by window_ms (exchanges such as Binance
    answer a time query with at most an hour of trades), or by 1 ms when a whole page shares
    one millisecond (more than page_limit trades in it: the rest of that millisecond is lost,
    and logged). Bounded: every page advances the cursor or adds trades.
    """
    await client.load_markets()
    client.rules(pair)
    windowed = client.id == "binance"  # answers a time query with [startTime, endTime], at most an hour
    out: List[Tuple[int, str, float, float, int]] = []
    cursor = since_ms
    seen: set = set()  # ids already taken at the cursor's millisecond
    while cursor < until_ms:
        req = cursor
        end = min(until_ms, req + window_ms) if windowed else until_ms
        page = await client.call(f"{client.name} {pair} trades from {req}", "fetch_trades", pair, req, page_limit,
                                 {"endTime": end - 1} if windowed else {}, check=_check_trade_page)
        page = [t for t in page if req <= t[0] < until_ms]
        new = [t for t in page if not (t[0] == req and t[1] in seen)]
        out.extend(new)
        if on_page is not None and new:
            on_page(len(new))
        if len(page) >= page_limit:
            last = page[-1][0]
            if last > req:
                cursor, seen = last, {t[1] for t in page if t[0] == last}
            elif new:
                seen.update(t[1] for t in new)
            else:
                log.warning("%s %s: more than %d trades at %d ms; the rest of that millisecond is skipped",
                            client.name, pair, page_limit, req)
                cursor, seen = req + 1, set()
        elif windowed:
            cursor, seen = end, set()  # the window holds nothing more
        else:
            break  # a short page: no more trades yet
    return out
