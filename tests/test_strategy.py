import pytest

from mmrun.sizing import fraction_size
from mmrun.strategy import ceil_tick, floor_tick, symmetric_quotes


@pytest.mark.parametrize(
    "bid, ask, spread, tick, want",
    [
        # buy = bid * (1 - spread/2), sell = ask * (1 + spread/2)
        (100.0, 100.0, 0.002, 0.0, (99.9, 100.1)),
        (100.0, 100.1, 0.002, 0.0, (99.9, 100.2001)),
        # on a 0.01 grid the bid rounds down and the ask up: never toward the book
        (100.0, 100.1, 0.002, 0.01, (99.9, 100.21)),
        (60000.0, 60000.1, 0.001, 0.1, (59970.0, 60030.2)),
        (2000.0, 2000.5, 0.01, 0.5, (1990.0, 2011.0)),  # 2010.5025 rounds up to 2011.0
    ],
)
def test_symmetric_quotes(bid, ask, spread, tick, want):
    buy, sell = symmetric_quotes(bid, ask, spread, tick)
    assert buy == pytest.approx(want[0], abs=1e-12)
    assert sell == pytest.approx(want[1], abs=1e-12)


def test_tick_rounding_is_exact_on_the_grid():
    assert floor_tick(59940.17, 0.1) == 59940.1  # not 59940.100000000006
    assert ceil_tick(59940.11, 0.1) == 59940.2
    assert floor_tick(1.0, 0.25) == 1.0 and ceil_tick(1.0, 0.25) == 1.0
    assert floor_tick(1.1, 0.25) == 1.0 and ceil_tick(1.1, 0.25) == 1.25
    assert floor_tick(123.456, 0.0) == 123.456  # tick 0: no grid


@pytest.mark.parametrize(
    "capital, pct, cap, last, want",
    [
        (10000.0, 0.01, 0.2, 50000.0, 0.002),  # 100 quote / 50,000
        (10000.0, 0.01, 0.2, 2000.0, 0.05),
        (5000.0, 0.01, 0.2, 2500.0, 0.02),
        (10000.0, 0.5, 0.2, 100.0, 20.0),  # capped: 2,000 quote / 100
        (10000.0, 0.01, 0.2, 0.0, 0.0),  # no price, no order
    ],
)
def test_fraction_size(capital, pct, cap, last, want):
    assert fraction_size(capital, pct, cap, last) == pytest.approx(want, rel=1e-15)
