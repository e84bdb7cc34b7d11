"""Turn any start-up failure into one line that names the key, file or row and what is allowed."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
