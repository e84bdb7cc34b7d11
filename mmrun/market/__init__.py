"""Sources of market data. Each yields rows of one fixed layout (see ROW_FIELDS)."""

# One market row = one quote cycle: the snapshot at ts_ms (bid, ask, last) and what traded
# in the interval that ended at ts_ms (low, high, volume in base units). Quotes made from row t
# fill against row t+1's low/high/volume. On candles: close stands for bid, ask and last.
ROW_FIELDS = ("ts_ms", "bid", "ask", "last", "low", "high", "volume")
