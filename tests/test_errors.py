"""The exception kinds say what the caller does; a retryable failure is not an unreachable exchange."""

from mmrun.errors import ExchangeUnavailable, MmrunError, PermanentError, TemporaryError
from mmrun.market.ccxt_feed import BadMarketData, RateLimited


def test_a_temporary_error_is_not_an_unreachable_exchange():
    assert not issubclass(TemporaryError, ExchangeUnavailable)
    assert not issubclass(RateLimited, ExchangeUnavailable) and not issubclass(BadMarketData, ExchangeUnavailable)
    for kind in (TemporaryError, ExchangeUnavailable, PermanentError):
        assert issubclass(kind, MmrunError)
    assert not issubclass(PermanentError, TemporaryError)
