"""Progress bars (tqdm) for long work, shown only to a person watching a terminal.

Quiet when stderr is not a terminal (logs, pipes, CI), in a sweep (Hydra multirun, whose
jobs share one terminal or run in worker processes) and in any child process.
"""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any, Optional

LONG_ROWS = 2_000_000  # a backtest this long (market rows) gets a bar: a second or more of kernel time


def _in_sweep() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # pragma: no cover - hydra is a dependency
        return False
    if not HydraConfig.initialized():
        return False
    return HydraConfig.get().mode == RunMode.MULTIRUN


def wanted() -> bool:
    """True when a progress bar helps: a terminal on stderr, the main process, not a sweep."""
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is None or not isatty():
        return False
    if multiprocessing.parent_process() is not None:
        return False
    return not _in_sweep()


def bar(total: int, desc: str, unit: str = "rows") -> Optional[Any]:
    """A tqdm bar over `total` units on stderr, or None when no bar is wanted (see `wanted`)."""
    if not wanted():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, file=sys.stderr, dynamic_ncols=True)
