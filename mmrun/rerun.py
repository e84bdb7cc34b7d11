"""`python -m mmrun.rerun RUN_FOLDER [--out DIR]`: run a folder's exact config again, into a new folder.

A run folder records its command-line overrides (`.hydra/overrides.yaml`), the config they
composed to (`.hydra/config.yaml`) and the folder it was started from (`.hydra/hydra.yaml`: a
relative `data.path` is read from there again). The re-run composes the same overrides, refuses
if the result is not that recorded config (the conf/ files changed since: check out the mmrun
version in its summary), runs it into a new folder, and compares the new events.csv and
summary.json with the old ones byte for byte (a lean sweep job's events.parquet: value for
value). Exit codes: 0 identical, 1 different (or the run failed), 2 a folder that cannot be
re-run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from mmrun.errors import ConfigError
from mmrun.record import load_yaml

COMPARED = ("events.csv", "summary.json")


def _leaves(node: Any, prefix: str = "") -> Dict[str, Any]:
    """{'a.b': value} for every leaf of a nested dict (lists count as leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: Dict[str, Any] = {}
    for key, value in node.items():
        out.update(_leaves(value, f"{prefix}{key}." if isinstance(value, dict) and value else f"{prefix}{key}"))
    return out


def recorded_overrides(folder: Path) -> List[str]:
    """The task overrides the run in folder was started with; ConfigError if it has no record."""
    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise ConfigError(f"{folder}: not a run folder (no .hydra/overrides.yaml)")
    try:
        with open(path, encoding="utf-8") as f:
            lines = load_yaml(f) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(lines, list):
        raise ConfigError(f"{path}: expected a list of overrides")
    return [str(x) for x in lines]


def config_drift(folder: Path, overrides: Sequence[str]) -> List[str]:
    """Keys whose value the overrides compose to now differs from the recorded config ('key: old -> new').

    Keys added to the config since the run (new options at their defaults) are not drift.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mmrun.__main__ import CONF_DIR

    with open(folder / ".hydra" / "config.yaml", encoding="utf-8") as f:
        recorded = _leaves(load_yaml(f) or {})
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="rerun"):
        now = _leaves(OmegaConf.to_container(compose(config_name="config", overrides=list(overrides)), resolve=False))
    missing = object()
    return [
        f"{key}: {old!r} -> {'(removed)' if now.get(key, missing) is missing else repr(now[key])}"
        for key, old in recorded.items()
        if now.get(key, missing) != old
    ]


def _quote(path: Path) -> str:
    """A path as a Hydra override value (quoted unless plainly safe)."""
    text = str(path)
    if re.fullmatch(r"[\w./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmrun.rerun", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="a run folder (a single run's, or one job of a sweep)")
    p.add_argument("--out", type=Path, default=None, help="the new folder (default outputs/reruns/<time>)")
    args = p.parse_args(argv)
    folder: Path = args.folder
    out: Path = args.out or Path("outputs/reruns") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    try:
        overrides = recorded_overrides(folder)
        if not (folder / ".hydra" / "config.yaml").is_file():
            raise ConfigError(f"{folder}: no .hydra/config.yaml to check the re-run against")
        if out.resolve() == folder.resolve() or (out.exists() and any(out.iterdir())):
            raise ConfigError(f"--out {out}: must be a new or empty folder, not the run being re-run")
        drift = config_drift(folder, overrides)
        if drift:
            raise ConfigError(
                f"{folder}: the same overrides now give another config ({'; '.join(drift[:3])}"
                f"{'; ...' if len(drift) > 3 else ''}): conf/ changed since this run; check out the mmrun "
                "version in its summary.json to re-run it"
            )
    except ConfigError as exc:
        print(f"mmrun: error: {exc}", file=sys.stderr)
        return 2
    folder, out = folder.resolve(), out.resolve()
    # relative paths in the overrides (data.path=btc.csv) meant the run's own working folder
    workdir = recorded_workdir(folder)
    here = Path.cwd()
    where = f" (in its working folder {workdir})" if workdir is not None and workdir != here else ""
    print(f"mmrun: re-running {folder} ({' '.join(overrides) or 'no overrides'}) into {out}{where}", flush=True)
    from mmrun.__main__ import main as mmrun_main

    saved_argv = sys.argv
    sys.argv = ["mmrun", *overrides, f"hydra.run.dir={_quote(out)}"]
    try:
        if where:
            os.chdir(workdir)
        mmrun_main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved_argv
        os.chdir(here)
    compared = compared_files(folder)
    different = [name for name in compared if not _same(folder / name, out / name)]
    for name in compared:
        verdict = "different" if name in different else "identical"
        if not (folder / name).is_file():  # e.g. a run killed before its end
            verdict = "missing in the original: it did not finish (python -m mmrun.recover finishes a paper run's folder)"
        print(f"  {name:<13} {verdict}", flush=True)
    missing = [name for name in different if not (folder / name).is_file()]
    if missing:
        print(f"mmrun: {folder} has no {', '.join(missing)}: that run did not finish, nothing to compare with",
              file=sys.stderr)
    if len(missing) < len(different):
        print(f"mmrun: the re-run differs from {folder} in {', '.join(n for n in different if n not in missing)}",
              file=sys.stderr)
    if different:
        return 1
    return 0


def recorded_workdir(folder: Path) -> Optional[Path]:
    """The folder the run was started from (Hydra's hydra.runtime.cwd in .hydra/hydra.yaml), if
    it is recorded and still a folder; None otherwise."""
    try:
        with open(folder / ".hydra" / "hydra.yaml", encoding="utf-8") as f:
            cwd = (((load_yaml(f) or {}).get("hydra") or {}).get("runtime") or {}).get("cwd")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return Path(cwd) if isinstance(cwd, str) and Path(cwd).is_dir() else None


def compared_files(folder: Path) -> List[str]:
    """The files compared: events.csv and summary.json byte for byte; a lean sweep job's folder
    (no events.csv) is compared on events.parquet's rows instead (see _same); a folder with
    neither (a run cut off before its end) on summary.json, which it lacks too."""
    if (folder / "events.csv").is_file():
        return list(COMPARED)
    if (folder / "events.parquet").is_file():
        return ["events.parquet", "summary.json"]
    return ["summary.json"]


def _same(a: Path, b: Path) -> bool:
    """Byte for byte; two Parquet files also when they hold the same columns and values (a lean
    sweep job writes events.parquet LZ4-compressed, a full folder zstd-compressed)."""
    if not (a.is_file() and b.is_file()):
        return False
    if filecmp.cmp(a, b, shallow=False):
        return True
    if a.suffix != ".parquet":
        return False
    import polars as pl

    try:
        return pl.read_parquet(a).equals(pl.read_parquet(b), null_equal=True)
    except (OSError, pl.exceptions.PolarsError):
        return False


if __name__ == "__main__":
    sys.exit(main())
