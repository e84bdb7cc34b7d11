"""BENCHMARKS.md is shared by the bench scripts: each owns one marked section and rewrites only it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "# Benchmarks\n\nFigures written by the scripts in `bench/`; each section says how to reproduce it.\n"


def markers(script: str) -> tuple[str, str]:
    """The comment lines around the section owned by `script` (e.g. 'bench/run_all.py')."""
    return f"<!-- BEGIN {script}: generated, do not edit by hand -->", f"<!-- END {script} -->"


def write_section(script: str, text: str, path: Path = ROOT / "BENCHMARKS.md") -> None:
    """Replace `script`'s section of path with text (or append it; create the file if missing)."""
    begin, end = markers(script)
    block = f"{begin}\n{text.rstrip(chr(10))}\n{end}\n"
    old = path.read_text(encoding="utf-8") if path.exists() else HEADER
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + block + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, path)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for a machine description."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
