"""Pure order-size math (compiled: it runs inside the engine kernel)."""

from numba import njit


@njit(cache=True, error_model="numpy")
def fraction_size(capital: float, order_size_pct: float, max_exposure: float, last: float) -> float:
    """Order size in base units: capital * order_size_pct / last, capped at capital * max_exposure / last.

    capital is in quote currency; both fractions are of capital (0.01 = 1 %). 0 if last <= 0.
    """
    if not last > 0.0:
        return 0.0
    size = capital * order_size_pct / last
    cap = capital * max_exposure / last
    return size if size < cap else cap
