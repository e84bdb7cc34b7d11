"""Run the mmrun command line in a subprocess, its output folder in a temporary directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_mmrun(*args: str, run_dir: Path | None = None, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "mmrun", *args]
    if run_dir is not None:
        argv.append(f"hydra.run.dir={run_dir}")
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env)
