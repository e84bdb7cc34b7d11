"""Strategies, one module each (mmrun/strategies/<name>.py): a config, a compiled anchor, one registration.

`mmrun.strategies.base` defines what a strategy is; the shared quote math (tick and lot grids,
the ladder of levels) lives in `mmrun.quoting`. A user's strategy is the same kind of module in
the user's own folder, named by `strategy._target_` (README, "Writing a strategy").
"""

from mmrun.strategies.base import (
    BUILT_IN,
    MAX_LEVELS,
    Strategy,
    StrategyConfig,
    built_in,
    check,
    param,
    registered,
    resolve,
    title_params,
)

__all__ = ["BUILT_IN", "MAX_LEVELS", "Strategy", "StrategyConfig", "built_in", "check", "param", "registered",
           "resolve", "title_params", "kernel_kwargs"]


def kernel_kwargs(strategy_cfg) -> dict:
    """engine.make_params keyword arguments from a `strategy` config node: the resolved config instance."""
    return {"strategy": resolve(strategy_cfg)[1]}
