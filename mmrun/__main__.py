"""`python -m mmrun`: the Hydra entry point. It only wires: compose, run, report errors as one line."""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mmrun.config import register
from mmrun.errors import MmrunError, RunFailed

register()


def _conf_dir() -> str:
    """The shipped configs, as an absolute folder: the `mmrun.conf` package (an installed wheel's
    mmrun/conf; the checkout's conf/ in an editable install, see pyproject.toml), else conf/ beside
    the package (a checkout run without installing)."""
    import importlib.util

    spec = importlib.util.find_spec("mmrun.conf")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / "config.yaml").is_file():
                return str(Path(folder).resolve())
    return str(Path(__file__).resolve().parent.parent / "conf")


# Absolute, so the same entry works from any folder, as `mmrun`, `python -m mmrun` or imported.
CONF_DIR = _conf_dir()


_failures: list = []


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _task(cfg: DictConfig) -> Optional[float]:
    from mmrun.output import run_failed_job, run_failure
    from mmrun.runner import run

    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    started = time.time()
    # The task never raises: in a sweep Hydra would skip the end-of-sweep report, and in a
    # single run it would print its own preamble. The failure is recorded in the job's
    # summary; a single run hands it to main() to report as one line.
    try:
        # What a sweeper (Optuna) optimises: the configured summary metric. None (not NaN) when
        # there is none: hydra-optuna-sweeper marks such a trial failed, while a NaN crashes it.
        summary = run(cfg, out_dir)
        failure = run_failure(summary, out_dir)
        if failure is not None and not (hc.mode is not None and hc.mode.name == "MULTIRUN"):
            _failures.append(failure)  # reported after the run, which wrote its folder in full
        value = summary.get(cfg.sweep.objective)
        return None if value is None else float(value)
    except Exception as exc:
        run_failed_job(cfg, out_dir, exc, started)
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            logging.getLogger("mmrun").error("job %s failed: %s", hc.job.num, exc)
        else:
            from mmrun.cli_errors import one_line
            from mmrun.messages import log_to_files

            # the terminal gets main()'s one line; the run's mmrun.log gets the same error
            log_to_files(logging.getLogger("mmrun"), logging.ERROR, f"run failed: {one_line(exc)}")
            _failures.append(exc)
        return None
    finally:
        if hc.mode is not None and hc.mode.name == "MULTIRUN":
            _freeze_survivors()


_frozen = False


def _freeze_survivors() -> None:
    """After a process's first sweep job: collect its garbage, then exempt what survives
    (modules, compiled code, Hydra's state, the market-data cache: some 200,000 objects) from
    every later garbage collection. Each later job's own garbage is still collected, in a
    fraction of the time: a joblib (loky) worker runs a full collection after every job, which
    would otherwise walk all of those objects each time (about 0.1 to 0.2 s a job).
    """
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()


_exit_hook = False


def _skip_final_collection() -> None:
    """At exit (an atexit hook: after the sweep's workers are reaped, before logging's own
    shutdown flushes its handlers), move every object to the permanent generation so that the
    interpreter's last garbage collection skips them. A sweep's process walked its whole heap
    (numba's compiler, Hydra, Polars, matplotlib, the report's frames) for about 0.4 s after its
    last line was written: the time from reaping the workers to the process's exit, 0.50 s ->
    0.09 s (strace, a 64-job sweep). Python does not promise to finalise objects still alive at
    exit, and mmrun closes every file it writes (record.replace_atomically, the paper loop's
    streams), so nothing is lost."""
    gc.freeze()


def _one_polars_thread() -> None:
    """A sweep with mmrun's launcher runs one worker process per core: each process's Polars then
    works on one thread (POLARS_MAX_THREADS=1, read once when Polars is imported: here, before
    any import of it; a value the user set is kept). A thread pool per core in every worker
    only adds threads contending for the same cores: writing a 240,000-fill events.parquet took
    34 ms of CPU on one thread and 41 ms on two (bench/.data, this machine)."""
    if "polars" not in sys.modules:
        os.environ.setdefault("POLARS_MAX_THREADS", "1")


def main() -> None:
    from mmrun.cli_errors import one_line, os_error_line

    global _exit_hook
    if not _exit_hook:
        import atexit

        _exit_hook = True
        atexit.register(_skip_final_collection)
    from mmrun.inputs import check_launcher_args, normalise_argv

    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Let Hydra's exceptions reach us instead of being printed over several lines.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        # forms Hydra's grammar refuses ('~/x.csv', '0.2%', a new exchange.sim.prices key without '+'),
        # rewritten before Hydra reads the command line (mmrun/inputs.py)
        sys.argv[1:] = normalise_argv(sys.argv[1:])
        check_launcher_args(sys.argv[1:])
        if _starts_mmrun_sweep(sys.argv[1:]):
            from mmrun.launch import start_spare

            _one_polars_thread()
            start_spare(_task)  # warms up the sweep's workers while Hydra starts (mmrun.workers.Spare)
        _failures.clear()  # main() may run more than once in a process (tests)
        _task()
        if _failures:
            raise _failures[0]
        _exit_if_sweep_jobs_failed()
    except KeyboardInterrupt:
        _report_unfinished_sweep()  # the jobs that finished before Ctrl-C
        sys.exit(130)
    except Exception as exc:
        _report_unfinished_sweep()
        if user_wants_traceback:
            raise
        if isinstance(exc, MmrunError) or _is_config_error(exc):
            print(f"mmrun: error: {one_line(exc)}", file=sys.stderr)
            sys.exit(1 if isinstance(exc, RunFailed) else 2)
        if isinstance(exc, BrokenPipeError):  # `mmrun --help | head -1`: the reader left; nothing to say
            # as Python's documentation advises (signal module, "Note on SIGPIPE"): no flush error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        if isinstance(exc, OSError):  # e.g. an output folder under /proc or on a read-only file system
            print(f"mmrun: error: {os_error_line(exc)}", file=sys.stderr)
            sys.exit(2)
        print(f"mmrun: internal error: {type(exc).__name__}: {one_line(exc)} (HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


_NO_JOBS = {"--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
            "--resolve", "--experimental-rerun"}


def _starts_mmrun_sweep(argv: list) -> bool:
    """True for a command line that runs a sweep with mmrun's launcher (the default for --multirun)."""
    if not any(a in ("--multirun", "-m") for a in argv) or any(a.split("=", 1)[0] in _NO_JOBS for a in argv):
        return False
    return not any(a.startswith("hydra/launcher=") and a.split("=", 1)[1] != "mmrun" for a in argv)


def _report_unfinished_sweep() -> None:
    """A sweep that raised before its end (e.g. a sweeper error) still gets its report."""
    sweep = sys.modules.get("mmrun.sweep")
    if sweep is not None:
        sweep.finish_pending()


def _exit_if_sweep_jobs_failed() -> None:
    """A sweep whose report lists failed jobs exits 1 (after the report), so scripts notice."""
    sweep = sys.modules.get("mmrun.sweep")  # imported by the sweep callback, if a sweep ran
    report = sweep.last_report if sweep is not None else None
    if report is not None and report.failed:
        print(
            f"mmrun: {report.failed} of {report.table.height} sweep jobs failed: "
            f"see the error column of {report.path}",
            file=sys.stderr,
        )
        sys.exit(1)


def _is_config_error(exc: BaseException) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


if __name__ == "__main__":
    main()
