"""`python -m mmrun`: the Hydra entry point. It only wires: compose, run, report errors as one line."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mmrun.config import register
from mmrun.errors import MmrunError

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _task(cfg: DictConfig) -> float:
    from mmrun.runner import run, run_failed_job

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        # A sweep job never raises: Hydra would skip the end-of-sweep report. It records the
        # failure in its own summary instead.
        try:
            return float(run(cfg, out_dir).get("total_return_pct", math.nan))
        except Exception as exc:
            run_failed_job(cfg, out_dir, exc)
            return math.nan
    return float(run(cfg, out_dir)["total_return_pct"])


def main() -> None:
    from mmrun.cli_errors import one_line

    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Let Hydra's exceptions reach us instead of being printed over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _task()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if user_wants_traceback:
            raise
        print(f"mmrun: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, MmrunError) or _is_config_error(exc) else 1)


def _is_config_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


if __name__ == "__main__":
    main()
