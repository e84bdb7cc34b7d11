"""`python -m mmrun.recover RUN_FOLDER`: finish the folder of a paper run that was stopped without
finishing (SIGKILL, a crash, power loss, a full disk), from what it left behind.

A paper run appends one record per cycle and per fill to journals in each pair's folder as it
goes (recorder.Journal), and events.csv line by line. From those this writes what the run would
have written at its end, up to its last complete cycle: market.parquet, equity.parquet,
events.parquet, summary.json (status `interrupted`) and report.png, for each pair and the root
of a several-pair run, and the run's returns.parquet; events.csv is cut back to its last whole
line. The config is the one the run recorded in .hydra/config.yaml. Exit codes: 0 recovered, 2 nothing to recover (a finished run,
a backtest, not a run folder) or the folder cannot be written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from mmrun.errors import DataError, MmrunError


def recorded_config(folder: Path) -> Any:
    """The config the run in `folder` recorded (.hydra/config.yaml); DataError if there is none."""
    from omegaconf import OmegaConf

    path = Path(folder) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise DataError(f"{folder}: not a run folder (no .hydra/config.yaml)")
    try:
        return OmegaConf.load(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable ({' '.join(str(exc).split())[:200]})") from None


def recover(folder: Path) -> Dict[str, Any]:
    """Write the files of the interrupted paper run in `folder`; return its (root) summary.
    Raises DataError (nothing to recover), OutputError (the folder cannot be written)."""
    from mmrun.config import pair_specs
    from mmrun.output import write_outputs
    from mmrun.record import safe_name
    from mmrun.recorder import has_journal, recover_pair

    folder = Path(folder)
    cfg = recorded_config(folder)
    specs = pair_specs(cfg)
    dirs = {s.pair: folder if len(specs) == 1 else folder / safe_name(s.pair) for s in specs}
    missing = [s.pair for s in specs if not has_journal(dirs[s.pair])]
    if missing:
        raise DataError(
            f"{folder}: nothing to recover for {', '.join(missing)} (no journal: a run that finished "
            "writing its files, a backtest, or not a paper run)"
        )
    outcomes = [recover_pair(s.pair, dirs[s.pair]) for s in specs]
    summary = write_outputs(cfg, specs, outcomes, dirs, folder)
    from mmrun import validation

    validation.write_outputs(cfg, folder, outcomes, {})  # returns.parquet, as a finished run writes it
    return summary


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmrun.recover", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the folder of a paper run that was killed")
    args = p.parse_args(argv)
    start = time.time()
    try:
        summary = recover(args.folder)
    except MmrunError as exc:
        print(f"mmrun: error: {exc}", file=sys.stderr)
        return 2
    from mmrun.output import print_summary

    print_summary(summary, args.folder, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
