"""The paper loop's status: a compact live view per pair on a terminal, periodic log lines otherwise.

On a terminal (stdout is a TTY) one line per pair is redrawn in place after every cycle (at
most every `min_redraw_s` of wall time): mid, our bid and ask, inventory, equity, PnL, fills,
errors and the age of the data. Elsewhere (a log file, a pipe, CI) the same line is logged
for each pair every `every_s` seconds of wall time, so a long run leaves a readable trail.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Callable, Dict, List, Optional, TextIO

log = logging.getLogger("mmrun")


def _px(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.6g}"


def format_line(pair: str, s: Dict, now_ms: int) -> str:
    """One pair's status as one line (pure: tests check it)."""
    age = (now_ms - s["data_ts_ms"]) / 1000.0 if s.get("data_ts_ms") else math.nan
    pnl = s["equity"] - s["initial"]
    line = (
        f"{pair:<10} mid {_px(s['mid'])}  bid {_px(s['bid'])}  ask {_px(s['ask'])}  "
        f"base {s['base']:.6g}  equity {s['equity']:,.2f}  pnl {pnl:+,.2f}  "
        f"fills {s['fills']}  errors {s['errors']}  age {age:.1f}s"
    )
    if s.get("source"):
        line += f"  [{s['source']}]"
    if s.get("last_error"):
        line += f"  last error: {s['last_error'][:60]}"
    return line


class StatusBoard:
    """Collects each pair's latest cycle and shows it (see the module docstring)."""

    def __init__(
        self,
        pairs: List[str],
        stream: Optional[TextIO] = None,
        tty: Optional[bool] = None,
        every_s: float = 30.0,
        min_redraw_s: float = 0.2,
        wall: Callable[[], float] = time.time,
    ):
        self.pairs = list(pairs)
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.min_redraw_s = min_redraw_s
        self.wall = wall
        self.state: Dict[str, Dict] = {}
        self._drawn = 0  # lines on screen from the last redraw
        self._last_draw = -math.inf
        self._last_log: Dict[str, float] = {}

    def update(self, pair: str, **fields) -> None:
        """A finished cycle: mid, bid, ask, base, equity, initial, fills, errors, data_ts_ms, source."""
        s = self.state.setdefault(pair, {})
        s.update(fields)
        s["last_error"] = ""
        self._show(pair)

    def error(self, pair: str, errors: int, note: str) -> None:
        """A failed cycle (the count and why)."""
        s = self.state.get(pair)
        if s is None:
            return
        s["errors"] = errors
        s["last_error"] = note
        self._show(pair)

    def _show(self, pair: str) -> None:
        now = self.wall()
        if self.tty:
            if now - self._last_draw >= self.min_redraw_s:
                self.redraw(now)
        elif now - self._last_log.get(pair, -math.inf) >= self.every_s:
            self._last_log[pair] = now
            log.info("status %s", format_line(pair, self.state[pair], int(now * 1000)))

    def redraw(self, now: Optional[float] = None) -> None:
        """Rewrite the block of pair lines in place (ANSI: cursor up, clear line)."""
        now = self.wall() if now is None else now
        self._last_draw = now
        lines = [format_line(p, self.state[p], int(now * 1000)) for p in self.pairs if p in self.state]
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}F")
        for line in lines:
            out.append("\x1b[2K" + line + "\n")
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        """Leave the final state on screen."""
        if self.tty and self.state:
            self.redraw()
