"""mmrun's sweep launcher and grid sweeper (the Hydra plugins in hydra_plugins/mmrun_launcher call into here).

The launcher (`hydra/launcher=mmrun`, the default for --multirun) runs a sweep's jobs in warm
worker processes (mmrun.workers.WarmPool): one per core, forked once and kept for every batch of
the sweep (an Optuna search launches many). They are forked by the sweep's spare process
(mmrun.workers.Spare, started by `python -m mmrun --multirun` before Hydra composes anything:
it imports the runner and matplotlib and loads the compiled code on the second core meanwhile,
then is sent this sweep's state), or, without a spare, by this process after the same warm-up. Each job's config comes from mmrun.compose.JobComposer (Hydra
composes once per set of config-group choices; value overrides are applied the way Hydra applies
them), and runs through Hydra's own `run_job`, so a job folder (`.hydra/`, the log file) is what
any Hydra launcher writes. The console shows a progress bar on a terminal, one line per job
otherwise.

The grid sweeper (`hydra/sweeper=mmrun`, the default) is Hydra's basic sweeper (same syntax:
lists, ranges, choices, globs) whose check that every job composes uses the same composer
instead of composing each job in full.

When the sweep ends, mmrun.sweep's report asks `rerun_full` for the top jobs' full folders: in
the pool when this launcher ran the sweep, else one after the other in this process.
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmrun.compose import JobComposer, cache_interpolation_parses, job_yaml_texts

log = logging.getLogger("mmrun.launch")

TOP_DIR = "top"  # <sweep dir>/top/<job number>: the full re-runs of the best jobs

_composers: Dict[int, JobComposer] = {}  # id(master config) -> its composer (sweeper and launcher share it)
_active: Optional["Session"] = None  # the sweep this process is running with mmrun's launcher
_planned: Tuple[str, int] = ("", 0)  # (sweep folder, jobs handed to the launcher) of the last sweep closed


def composer_for(hydra_context: Any, config: DictConfig) -> JobComposer:
    """The composer of this multirun's master config (one per config object)."""
    c = _composers.get(id(config))
    if c is None or c.master is not config:
        c = _composers[id(config)] = JobComposer(hydra_context.config_loader, config)
    return c


def full_when_all_on_top(config: DictConfig, batches: Sequence[Sequence[Sequence[str]]],
                         batch: Sequence[Sequence[str]]) -> List[List[str]]:
    """batch's jobs' overrides, each with `sweep.outputs=full` added when the sweep's jobs (all
    its batches) number no more than sweep.top under sweep.outputs=lean: every job is then on the
    leaderboard and would be re-run into a full folder at the end, so writing that folder at once
    costs one run instead of two. A job that sets sweep.outputs itself keeps it."""
    jobs = [list(o) for o in batch]
    total = sum(len(b) for b in batches)
    top = OmegaConf.select(config, "sweep.top", default=None)
    outputs = OmegaConf.select(config, "sweep.outputs", default="full")
    if str(outputs) != "lean" or not isinstance(top, int) or total > top:
        return jobs
    return [o if any(x.split("=", 1)[0].lstrip("+~") == "sweep.outputs" for x in o) else o + ["sweep.outputs=full"]
            for o in jobs]


def lean_outputs(cfg: Any) -> bool:
    """True for a sweep job whose folder keeps only .hydra/, summary.json, events.parquet and its log
    (sweep.outputs=lean in a multirun); a single run, a full re-run and sweep.outputs=full write every file."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return str(OmegaConf.select(cfg, "sweep.outputs", default="full")) == "lean"


def in_sweep() -> bool:
    """True inside a sweep job (a Hydra multirun): no per-job summary on the console."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _warm(job_cfg: Optional[DictConfig]) -> None:
    """What every job needs, done once before the fork: the runner and the kernel's modules
    imported, the compiled kernel and the summary metrics' passes loaded (numba's cache) with
    the first job's parameters: a backtest replays four rows; a paper run steps one cycle (the
    paper loop's entry point; loading it first also sets up numba's registries, ~0.6 s each
    worker would otherwise pay in its first job). Only an optimisation: a failure here is left
    to the jobs, which report it. No Polars work here (see mmrun.workers; a backtest's outcome
    makes its frames only when asked)."""
    import mmrun.__main__  # noqa: F401
    import mmrun.runner  # noqa: F401
    from mmrun.output import _versions

    _versions()  # run_info.json's package versions (importlib.metadata: tens of ms), read once

    try:
        import numpy as np

        from mmrun import engine
        from mmrun.backtest import run_backtest
        from mmrun.market import ROW_FIELDS
        from mmrun.runner import build_params
        from mmrun.stats import summary_metrics

        if job_cfg is None or job_cfg.mode not in ("backtest", "paper"):
            return
        capital = float(job_cfg.capital)
        rows = {"ts_ms": np.arange(4, dtype=np.int64) * 60_000, **{k: np.full(4, 100.0) for k in ROW_FIELDS[1:]}}
        params = build_params(job_cfg, capital, 0.0, dt_s=60.0)
        if job_cfg.mode == "paper":
            stepper = engine.Stepper(params, engine.make_state(0.0, capital, params))
            fills = np.empty((engine.max_fills(stepper.levels), engine.N_FILL))
            stepper(engine.empty_quotes(stepper.levels), 99.9, 100.1, 100.0, 99.8, 100.2, 1.0, fills)
        out = run_backtest("warm-up", params, engine.make_state(0.0, capital, params), rows)
        summary_metrics(out.run, capital)  # the metrics' compiled passes
    except Exception as exc:  # noqa: BLE001 - the jobs meet (and report) any real problem
        log.debug("kernel warm-up skipped: %s: %s", type(exc).__name__, exc)


def warm_common() -> None:
    """The warm-up of a sweep's spare process (mmrun.workers.Spare), which needs no config: the
    runner's modules and matplotlib imported, run_info.json's package versions read, numba's
    registries set up and the summary metrics' compiled passes loaded. It runs on the second core
    while the sweep's process starts Hydra; `_warm` then adds the first job's kernel. No Polars
    work (see mmrun.workers)."""
    import numpy as np

    import mmrun.__main__  # noqa: F401
    import mmrun.market.sim  # noqa: F401
    import mmrun.runner  # noqa: F401
    from hydra.core.plugins import Plugins

    from mmrun.output import _versions, import_plotting
    from mmrun.stats import RunArrays, summary_metrics

    Plugins.instance()  # Hydra's plugin discovery, kept when the sweep's state is restored here
    _versions()
    import_plotting()
    n = 4
    run = RunArrays(ts_ms=np.arange(n, dtype=np.int64) * 60_000, mid=np.full(n, 100.0), bid_quoted=np.full(n, 99.9),
                    ask_quoted=np.full(n, 100.1), base=np.zeros(n), quote=np.full(n, 1000.0), equity=None,
                    fill_row=np.zeros(1, dtype=np.int64), fill_side=np.ones(1), fill_price=np.full(1, 99.9),
                    fill_amount=np.full(1, 0.1), fill_fee=np.zeros(1))
    summary_metrics(run, 1000.0)


_spare_task: Any = None  # the task function as the spare inherited it (start_spare)


def start_spare(task: Any) -> None:
    """Fork the sweep's spare process (mmrun.workers.Spare), warming up with warm_common. task:
    mmrun's Hydra-decorated task; the spare inherits the function it wraps, which Hydra hands
    the launcher (it cannot be pickled by name: that name is the decorated function)."""
    global _spare_task
    from mmrun.workers import start_spare as fork_spare

    _spare_task = getattr(task, "__wrapped__", task)
    fork_spare(warm_common)


def _task_ref(task_function: Any) -> Any:
    """task_function as the spare can be sent it: "inherited" for the one it has, else itself."""
    return "inherited" if task_function is _spare_task else task_function


def _hydra_state() -> Tuple[Dict[Any, Any], List[str]]:
    """Hydra's global state in this process, as the spare is sent it: (Singleton instances: the
    ConfigStore with the plugins' configs, HydraConfig, JobRuntime, GlobalHydra; the names of
    OmegaConf's resolvers). The resolvers are functions (Hydra's own `now`, `hydra`, ...): the
    spare registers Hydra's itself and checks it has every other one."""
    from hydra.core.singleton import Singleton

    state = Singleton.get_state()
    return state["instances"], sorted(state["omegaconf_resolvers"])


def _restore_hydra_state(instances: Dict[Any, Any], resolvers: List[str]) -> None:
    """In the spare, forked before Hydra started: the sweep process's Hydra state, as Hydra's own
    launchers restore it in their workers (Singleton.set_state), keeping the spare's discovered
    plugins; RuntimeError if the sweep's process has a resolver the spare lacks (then the
    launcher forks its workers itself)."""
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's resolvers (`now` names the sweep folder), as Hydra registers them
    missing = [name for name in resolvers if not OmegaConf.has_resolver(name)]
    if missing:
        raise RuntimeError(f"OmegaConf resolvers registered after the spare started: {', '.join(missing)}")
    state = Singleton.get_state()
    instances[Plugins] = Plugins.instance()
    state["instances"] = instances
    Singleton.set_state(state)


def _spare_session(hydra_context: Any, composer: JobComposer, config: DictConfig, task_ref: Any,
                   first: List[str], hydra_state: Tuple[Dict[Any, Any], List[str]]) -> Any:
    """In the spare: this sweep's Session from the state the launcher sent (Hydra's globals, the
    composer with its templates), the first job's kernel loaded; returns the workers' job
    function (Session.run_one)."""
    _restore_hydra_state(*hydra_state)
    task = _spare_task if task_ref == "inherited" else task_ref
    _composers[id(config)] = composer  # composer.master is config (sent in one pickle)
    session = Session(hydra_context, task, config, 0, None)
    try:
        job_cfg = composer.compose(first)
    except Exception:  # noqa: BLE001 - the job fails on its own
        job_cfg = None
    _warm(job_cfg)
    return session.run_one


def job_outcome(folder: Path) -> Tuple[str, Optional[str]]:
    """(status, error) from a job folder's summary.json; ('failed', why) if it has none."""
    try:
        with open(folder / "summary.json", encoding="utf-8") as f:
            s = json.load(f)
        return str(s.get("status") or "failed"), s.get("error")
    except (OSError, ValueError):
        return "failed", "no summary.json: the job did not finish"


class Session:
    """One multirun with mmrun's launcher: the master config, the composer, the pool, the console."""

    def __init__(self, hydra_context: Any, task_function: Any, config: DictConfig, n_jobs: int, chunk: Optional[int]):
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.composer = composer_for(hydra_context, config)
        self.n_jobs = n_jobs
        self.chunk = chunk
        self.pool: Any = None
        self.done = 0
        self.failed = 0
        self.bar: Any = None
        self.total = 0
        self.started = time.monotonic()
        self.swept = set(_swept_keys(config))
        self.cancelled = False  # cancel_reruns was called
        cache_interpolation_parses()  # this process and its workers (forked from it or from the spare)

    # ------------------------------------------------------------ in a worker

    def run_one(self, idx: int, payload: Tuple[str, List[str]]) -> Tuple[int, Any, str, Optional[str]]:
        """Run one job in this (worker) process: (Hydra JobStatus value, return value, status, error)."""
        kind, overrides = payload
        if kind == "full":
            return self._run_full(idx, self.composer.compose(overrides))
        task_cfg, hydra_cfg = self.composer.compose_job(overrides)
        if not _callbacks_see_jobs(self.hydra_context):
            hint = self.composer.job_hint(task_cfg)
            if hint is not None:
                from mmrun.config import hint_job

                hint_job(task_cfg, *hint)
        job = hydra_cfg.hydra._get_node("job")
        with read_write(job):  # keys of Hydra's schema: set, not added
            job.id = idx
            job.num = idx
        folder, ok, value = run_job_in_place(self.hydra_context, self.task_function, task_cfg, hydra_cfg,
                                             texts=self.composer.job_texts)
        status, error = job_outcome(folder)
        if not ok:
            status, error = "failed", f"{type(value).__name__}: {value}"
            value = error
        from hydra.core.utils import JobStatus

        return (JobStatus.COMPLETED if ok else JobStatus.FAILED).value, value, status, error

    def _run_full(self, idx: int, cfg: DictConfig) -> Tuple[int, Any, str, Optional[str]]:
        return _run_full_job(self.hydra_context, self.task_function, cfg, idx)

    # ------------------------------------------------------------ in the parent

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Any]:
        from hydra.core.utils import JobReturn, JobStatus

        jobs = [(initial_job_idx + i, ("job", list(o))) for i, o in enumerate(job_overrides)]
        if not jobs:
            return []
        # compose the first job of each set of group choices here, so the workers inherit the templates
        self.composer.check([o for _, (_, o) in jobs])
        self._ensure_pool(len(jobs), jobs[0][1][1])
        self._open_bar(len(jobs))
        results: Dict[int, JobReturn] = {}
        try:
            for idx, ok, result in self.pool.run(jobs, self.chunk):
                overrides = jobs[idx - initial_job_idx][1][1]
                if ok:
                    status_value, value, status, error = result
                    ret = JobReturn(overrides=overrides, status=JobStatus(status_value), _return_value=value)
                    if ret.status == JobStatus.FAILED:
                        ret._return_value = RuntimeError(str(value))
                else:
                    status, error = "failed", result.strip().splitlines()[0]
                    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=RuntimeError(result))
                ret.task_name = str(self.config.hydra.job.name)
                results[idx] = ret
                self._progress(idx, overrides, status, error)
        except BaseException:
            self.close(kill=True)
            raise
        if self.bar is not None:  # cleared before the report prints (a later batch opens a new one)
            self.bar.close()
            self.bar = None
        return [results[idx] for idx, _ in jobs]

    def _ensure_pool(self, n_first: int, first: List[str]) -> None:
        if self.pool is not None:
            return
        import functools
        import threading

        from mmrun.output import import_plotting
        from mmrun.workers import WarmPool, take_spare

        n = self.n_jobs if self.n_jobs > 0 else cores()
        n = max(1, min(n, n_first) if self.n_jobs <= 0 else n)
        spare = take_spare()
        if spare is not None:
            # the spare has warmed up beside Hydra's start: it forks the workers, loading the
            # first job's kernel first, while this process imports matplotlib for its own pictures
            factory = functools.partial(_spare_session, self.hydra_context, self.composer, self.config,
                                        _task_ref(self.task_function), list(first), _hydra_state())
            self.pool = spare.pool(factory, n, quiet=True, before_reply=import_plotting)
            if self.pool is not None:
                return

        # matplotlib is imported once here and inherited by the workers (the full re-runs draw
        # report.png; this process draws the sweep's pictures), instead of once per process. It
        # runs beside the kernel's loading but mostly holds the GIL: it costs this process about
        # the import's time (0.4 s), once. (Forking first and warming up in every worker was
        # measured slower on 2 cores: each worker then loads the kernel and matplotlib itself.)
        plotting = threading.Thread(target=import_plotting, name="mmrun-import-plotting", daemon=True)
        plotting.start()
        try:
            job_cfg = self.composer.compose(first)
        except Exception:  # noqa: BLE001 - the job fails on its own
            job_cfg = None
        _warm(job_cfg)
        plotting.join()  # no thread may be half-way through an import when the workers fork
        self.pool = WarmPool(n, self.run_one, quiet=True)

    def _open_bar(self, total: int) -> None:
        self.total += total
        isatty = getattr(sys.stderr, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc="sweep", unit="job", file=sys.stderr,
                            dynamic_ncols=True, leave=False)
            self.bar.set_postfix(failed=self.failed, refresh=False)

    def _progress(self, idx: int, overrides: Sequence[str], status: str, error: Optional[str]) -> None:
        self.done += 1
        if status == "failed":
            self.failed += 1
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failed, refresh=False)
            self.bar.update(1)
            return
        shown = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in self.swept] or list(overrides)
        if status == "failed" and error:
            # a key the error already starts with ("data.path=x.csv: no such file") is not said twice
            shown = [o for o in shown if not error.startswith(f"{o.split('=', 1)[0].lstrip('+~')}=")]
        line = f"[{self.done}/{self.total}] job {idx} {status}: {' '.join(shown)}"
        if status == "failed" and error:  # the error first, then the job's other swept values
            line = f"[{self.done}/{self.total}] job {idx} failed: {error}" + (f" ({' '.join(shown)})" if shown else "")
        print(line, flush=True)

    def rerun_full(self, jobs: Sequence[Tuple[int, List[str]]]) -> Dict[int, Path]:
        """Re-run jobs [(num, overrides)] into full folders in the pool; {num: folder} of those that completed."""
        if self.pool is None or not jobs:
            return {}
        out: Dict[int, Path] = {}
        work = [(num, ("full", list(o))) for num, o in jobs]
        for idx, ok, result in self.pool.run(work, chunk=1):
            if ok and result[2] != "failed":
                out[idx] = full_folder(self.config, idx)
            elif not self.cancelled:
                log.warning("full re-run of job %s failed: %s", idx, result[3] if ok else result.splitlines()[0])
        return out

    def cancel_reruns(self) -> None:
        """Stop the full re-runs (Ctrl-C during the report): the workers are killed; the thread in
        rerun_full sees them end and returns. Safe from another thread than rerun_full's."""
        self.cancelled = True
        if self.pool is not None:
            self.pool.terminate()

    def close(self, kill: bool = False) -> None:
        global _active, _planned
        _planned = (str(self.config.hydra.sweep.dir), self.total)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.pool is not None:
            self.pool.kill() if kill else self.pool.close()
            self.pool = None
        if _active is self:
            _active = None


def last_planned(sweep_dir: Any) -> int:
    """How many jobs this launcher was given by the sweep into sweep_dir, if it ran that sweep last
    in this process (else 0)."""
    folder, total = _planned
    return total if folder and Path(folder) == Path(sweep_dir) else 0


def _callbacks_see_jobs(hydra_context: Any) -> bool:
    """True if a Hydra callback of the sweep has an on_job_start (it is given the job's config
    before the task runs, and may change it); mmrun's own callbacks have none."""
    from hydra.experimental.callback import Callback

    callbacks = getattr(hydra_context.callbacks, "callbacks", None)
    if not isinstance(callbacks, list):
        return True
    return any(not isinstance(cb, Callback) or type(cb).on_job_start is not Callback.on_job_start for cb in callbacks)


def run_job_in_place(hydra_context: Any, task_function: Any, cfg: DictConfig, hydra_cfg: DictConfig,
                     output_dir: Optional[str] = None,
                     texts: Callable[[DictConfig, DictConfig], Tuple[str, str, str]] = job_yaml_texts,
                     ) -> Tuple[Path, bool, Any]:
    """Hydra's run_job for a sweep job, without its copies of the config: (folder, ok, return value or exception).

    cfg: the task's config; hydra_cfg: {hydra: ...} for HydraConfig (JobComposer.compose_job
    made both). The job folder (output_dir; None: hydra.sweep.dir/hydra.sweep.subdir) gets what
    run_job writes (.hydra/config.yaml, hydra.yaml, overrides.yaml), its log file through
    hydra.job_logging, and the task runs with hydra.job.env_set applied and the callbacks'
    on_job_start/on_job_end called. hydra.job.chdir is honoured. texts(cfg, hydra_cfg): the three
    files' text (JobComposer.job_texts for the job it composed last; the same bytes).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobRuntime, JobStatus, _flush_loggers, env_override

    hc = hydra_cfg.hydra
    if output_dir is None:
        output_dir = os.path.join(str(hc.sweep.dir), str(hc.sweep.subdir))
    runtime = hc._get_node("runtime")
    with read_write(runtime):  # a key of Hydra's schema: set, not added
        runtime.output_dir = os.path.abspath(output_dir)
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = hydra_cfg
    old_cwd = os.getcwd()
    chdir = bool(hc.job.chdir)
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if chdir:
            os.chdir(output_dir)
        configure_job_log(hc.job_logging, hc.verbose)
        if hc.output_subdir is not None:
            subdir = Path(hc.runtime.output_dir) / Path(hc.output_subdir)
            subdir.mkdir(parents=True, exist_ok=True)
            for text, name in zip(texts(cfg, hydra_cfg), ("config.yaml", "hydra.yaml", "overrides.yaml")):
                with open(subdir / name, "w", encoding="utf-8") as f:
                    f.write(text)
        ret = JobReturn(overrides=list(hc.overrides.task), cfg=cfg, hydra_cfg=hydra_cfg, working_dir=os.getcwd())
        with env_override(hc.job.env_set):
            hydra_context.callbacks.on_job_start(config=cfg, task_function=task_function)
            try:
                ret.return_value = task_function(cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as exc:  # noqa: BLE001 - a job's failure is its result
                ret.return_value = exc
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        hydra_context.callbacks.on_job_end(config=cfg, job_return=ret)
        return Path(hc.runtime.output_dir), ret.status == JobStatus.COMPLETED, ret._return_value
    finally:
        HydraConfig.instance().cfg = saved
        if chdir:
            os.chdir(old_cwd)


# ---------------------------------------------------------------- a job's logging


class _JobLog:
    """The logging a process's sweep jobs configured last (Hydra's configure_log: dictConfig of
    hydra.job_logging), as dictConfig left it, for `configure_job_log` to re-point its file
    handlers to the next job's log file instead of configuring everything again.

    Kept only for a plain configuration, whose every object dictConfig makes is a standard
    handler or formatter without state of its own: handlers of class logging.StreamHandler
    (on ext://sys.stdout or ext://sys.stderr) or logging.FileHandler, formatters by format,
    datefmt, style or validate, the root logger's level and handlers, no named loggers, no
    filters, not incremental."""

    HANDLER_CLASSES = {"logging.StreamHandler": logging.StreamHandler, "logging.FileHandler": logging.FileHandler}
    HANDLER_KEYS = {"class", "formatter", "level", "stream", "filename", "mode", "encoding", "delay", "errors"}
    FORMATTER_KEYS = {"format", "datefmt", "style", "validate"}
    STREAMS = {"ext://sys.stdout": "stdout", "ext://sys.stderr": "stderr"}

    def __init__(self, conf: Dict[str, Any], verbose: Any, handlers: Dict[str, logging.Handler]):
        self.conf = _without_filenames(conf)
        self.verbose = verbose
        self.handlers = handlers
        self.root_handlers = list(logging.root.handlers)
        self.state = {name: (h.level, h.formatter) for name, h in handlers.items()}

    @classmethod
    def after_configure(cls, conf: Optional[Dict[str, Any]], verbose: Any) -> Optional["_JobLog"]:
        """The logging configure_log has just set up from conf, if it is a plain configuration."""
        if not isinstance(conf, dict) or not isinstance(conf.get("root"), dict) or conf.get("incremental"):
            return None
        if conf.get("loggers") or conf.get("filters") or not set(conf["root"]) <= {"level", "handlers"}:
            return None
        handlers: Dict[str, logging.Handler] = {}
        for name, h in (conf.get("handlers") or {}).items():
            kind = cls.HANDLER_CLASSES.get(h.get("class")) if isinstance(h, dict) else None
            made = logging._handlers.get(name)  # type: ignore[attr-defined]
            if kind is None or not set(h) <= cls.HANDLER_KEYS or type(made) is not kind:
                return None
            if kind is logging.StreamHandler and h.get("stream", "ext://sys.stderr") not in cls.STREAMS:
                return None
            handlers[name] = made
        for f in (conf.get("formatters") or {}).values():
            if not isinstance(f, dict) or not set(f) <= cls.FORMATTER_KEYS:
                return None
        if [handlers.get(n) for n in conf["root"].get("handlers") or ()] != logging.root.handlers:
            return None
        return cls(conf, verbose, handlers)

    def repoint(self, conf: Dict[str, Any], verbose: Any) -> bool:
        """Set up what configure_log(conf, verbose) would, if conf is the last configuration but
        for its file handlers' filenames and nothing changed the logging since: close each file
        handler's stream and open its new file. False (nothing changed) otherwise."""
        if verbose != self.verbose or type(verbose) is not type(self.verbose) or _without_filenames(conf) != self.conf:
            return False
        root = logging.root.handlers
        if len(root) != len(self.root_handlers) or any(a is not b for a, b in zip(root, self.root_handlers)):
            return False
        alive = [r() for r in logging._handlerList]  # type: ignore[attr-defined]
        if len({id(h) for h in alive if h is not None} ^ {id(h) for h in self.handlers.values()}):
            return False  # a handler made since (dictConfig would close it)
        for name, h in self.handlers.items():
            level, formatter = self.state[name]
            registered = logging._handlers.get(name)  # type: ignore[attr-defined]
            if registered is not h or getattr(h, "_closed", False) or h.level != level or h.formatter is not formatter:
                return False
            if h.filters:
                return False
            stream = conf["handlers"][name].get("stream")
            if type(h) is logging.StreamHandler and h.stream is not getattr(sys, self.STREAMS.get(stream, "stderr")):
                return False  # sys.stdout was replaced: dictConfig would bind the new one
        for name, h in self.handlers.items():
            if type(h) is logging.FileHandler:
                _reopen(h, conf["handlers"][name]["filename"])
        # what dictConfig does besides making the handlers: the root logger's level, every other
        # logger enabled or disabled (disable_existing_loggers); then configure_log's verbose levels
        disable = conf.get("disable_existing_loggers", True)
        for logger in list(logging.root.manager.loggerDict.values()):
            logger.disabled = disable
        level = conf["root"].get("level")
        if level is not None:
            logging.root.setLevel(logging._checkLevel(level))  # type: ignore[attr-defined]
        _verbose_levels(verbose)
        return True


def _without_filenames(conf: Dict[str, Any]) -> Dict[str, Any]:
    """conf with its FileHandlers' filenames left out."""
    handlers = conf.get("handlers")
    if not isinstance(handlers, dict):
        return conf
    out = dict(conf)
    out["handlers"] = {name: ({k: v for k, v in h.items() if k != "filename"}
                              if isinstance(h, dict) and h.get("class") == "logging.FileHandler" else h)
                       for name, h in handlers.items()}
    return out


def _reopen(handler: logging.FileHandler, filename: Any) -> None:
    """Point a FileHandler at another file, as a new FileHandler(filename) with its mode,
    encoding and delay would: the old stream flushed and closed, the new file opened (unless delay)."""
    handler.acquire()
    try:
        stream, handler.stream = handler.stream, None  # type: ignore[assignment]
        if stream is not None:
            try:
                stream.flush()
            finally:
                stream.close()
        handler.baseFilename = os.path.abspath(os.fspath(filename))
        if not handler.delay:
            handler.stream = handler._open()
    finally:
        handler.release()


def _verbose_levels(verbose: Any) -> None:
    """configure_log's hydra.verbose: true -> the root logger at DEBUG; a name or names -> those."""
    if isinstance(verbose, bool):
        if verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return
    for name in [verbose] if isinstance(verbose, str) else verbose:
        logging.getLogger(name).setLevel(logging.DEBUG)


# an interpolation that only names an absolute key: ${hydra.runtime.output_dir}
_KEY_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
_LOG_CONFS: Dict[int, Tuple[DictConfig, Any, Optional[List[Tuple[Tuple[Any, ...], str]]]]] = {}


def _logging_conf(log_config: DictConfig) -> Any:
    """OmegaConf.to_container(log_config, resolve=True) (configure_log's), made from the
    unresolved container kept per node when its only interpolations are strings of absolute
    key references naming strings ('${hydra.runtime.output_dir}/${hydra.job.name}.log': each
    key's value selected, the text joined, as OmegaConf resolves such a string), without
    parsing them again for every job. Anything else: OmegaConf.to_container."""
    hit = _LOG_CONFS.get(id(log_config))
    if hit is None or hit[0] is not log_config:
        plain = OmegaConf.to_container(log_config, resolve=False)
        spots: Optional[List[Tuple[Tuple[Any, ...], str]]] = []
        if not _simple_interpolations(plain, (), spots):  # type: ignore[arg-type]
            spots = None
        if len(_LOG_CONFS) >= 64:
            _LOG_CONFS.clear()
        hit = _LOG_CONFS[id(log_config)] = (log_config, plain, spots)
    _, plain, spots = hit
    if spots is None:
        return OmegaConf.to_container(log_config, resolve=True)
    root = log_config._get_root()
    out = copy.deepcopy(plain)
    for path, text in spots:
        parts = _KEY_REF.split(text)  # literal, key, literal, key, ..., literal
        for i in range(1, len(parts), 2):
            try:
                value = OmegaConf.select(root, parts[i])
            except Exception:  # noqa: BLE001 - OmegaConf.to_container raises it as configure_log would
                value = None
            if not isinstance(value, str):
                return OmegaConf.to_container(log_config, resolve=True)
            parts[i] = value
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = "".join(parts)
    return out


def _simple_interpolations(node: Any, path: Tuple[Any, ...], spots: List[Tuple[Tuple[Any, ...], str]]) -> bool:
    """Collect (path, text) of node's strings holding interpolations into spots; False if one is
    not made of absolute key references and plain text only (or a key holds one)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        if isinstance(key, str) and "$" in key:
            return False
        if isinstance(value, str) and "$" in value:
            literals = _KEY_REF.split(value)[0::2]
            if any(c in text for text in literals for c in "${}\\"):
                return False
            spots.append((path + (key,), value))
        elif isinstance(value, (dict, list)) and not _simple_interpolations(value, path + (key,), spots):
            return False
    return True


_job_log: Optional[_JobLog] = None


def configure_job_log(log_config: Optional[DictConfig], verbose: Any) -> None:
    """Hydra's configure_log(log_config, verbose) for a sweep job: the same log lines in the same
    files. When the previous job of this process configured the same logging but for the file
    handlers' filenames (the job's folder), and nothing changed the logging since, its file
    handlers are re-pointed to this job's files (_JobLog.repoint) instead of running dictConfig
    again; anything else is configured in full."""
    global _job_log
    from hydra.core.utils import configure_log

    conf = _logging_conf(log_config) if log_config is not None else None
    plain_verbose = OmegaConf.to_container(verbose) if OmegaConf.is_config(verbose) else verbose
    last, _job_log = _job_log, None
    if last is not None and isinstance(conf, dict):
        try:
            if last.repoint(conf, plain_verbose):
                _job_log = last
                return
        except Exception:  # noqa: BLE001 - configured in full below, which reports the problem as before
            pass
    configure_log(log_config, verbose)
    _job_log = _JobLog.after_configure(conf, plain_verbose)


def _swept_keys(config: DictConfig) -> List[str]:
    """The keys a multirun sweeps (its sweep expressions and hydra.sweeper.params), for the job lines."""
    from mmrun.sweep import declared_keys

    try:
        return declared_keys(
            OmegaConf.to_container(config.hydra.overrides.task, resolve=False),
            OmegaConf.select(config, "hydra.sweeper.params", default=None),
        )
    except Exception:  # noqa: BLE001 - the lines then show every override
        return []


def start(hydra_context: Any, task_function: Any, config: DictConfig, n_jobs: int, chunk: Optional[int]) -> Session:
    """The session of this multirun (made on the first launch, kept for the sweep's later batches)."""
    global _active
    if _active is None or _active.config is not config:
        if _active is not None:
            _active.close()
        _active = Session(hydra_context, task_function, config, n_jobs, chunk)
        atexit.register(_close_at_exit)
        _stop_on_sigterm()
    return _active


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, `kill`, a container stopping) ends the sweep as Ctrl-C does: the
    workers are stopped and the finished jobs are reported. Left alone if something else set a
    handler; the workers restore the default (mmrun.workers)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _close_at_exit() -> None:
    if _active is not None:
        _active.close(kill=True)


def active() -> Optional[Session]:
    """The running sweep's session, if mmrun's launcher runs it in this process."""
    return _active


def full_folder(config: DictConfig, num: int) -> Path:
    """Where job num's full re-run goes: <sweep dir>/top/<num>."""
    return Path(str(config.hydra.sweep.dir)) / TOP_DIR / str(num)


def _run_full_job(hydra_context: Any, task_function: Any, cfg: DictConfig, num: int) -> Tuple[int, Any, str, Optional[str]]:
    """Run a composed job config (a new object, consumed) as a single run (every file) into
    <sweep dir>/top/<num>, the way Hydra's run_job runs a single run, without its copies of the config."""
    from hydra.core.utils import JobStatus
    from hydra.types import RunMode
    from omegaconf import flag_override

    folder = full_folder(cfg, num)
    with open_dict(cfg):
        cfg.hydra.job.id = num
        cfg.hydra.job.num = num
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.run.dir = str(folder)
        hydra_node = cfg._get_node("hydra")
        del cfg["hydra"]
    hydra_cfg = OmegaConf.create({})
    with flag_override(hydra_cfg, "no_deepcopy_set_nodes", True):
        hydra_cfg["hydra"] = hydra_node  # moved, not copied
    _, ok, value = run_job_in_place(hydra_context, task_function, cfg, hydra_cfg, output_dir=str(folder))
    status, error = job_outcome(folder)
    if not ok:
        status, error, value = "failed", f"{type(value).__name__}: {value}", str(value)
    return (JobStatus.COMPLETED if ok else JobStatus.FAILED).value, value, status, error


def rerun_full_in_process(config: DictConfig, jobs: Sequence[Tuple[int, List[str]]]) -> Dict[int, Path]:
    """The full re-runs when another launcher ran the sweep: one after the other, here.

    config: the multirun's config (the sweep callback's). Uses Hydra's global config loader (the
    one that composed this multirun) and mmrun's task function.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import configure_log
    from hydra.types import HydraContext

    from hydra._internal.callbacks import Callbacks

    from mmrun import __main__ as entry

    if not GlobalHydra.instance().is_initialized() or not jobs:
        return {}
    _task = entry._task
    failures_before = len(entry._failures)  # a single run's failure is kept for the exit code: not these
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    composer = JobComposer(context.config_loader, config)
    task = getattr(_task, "__wrapped__", _task)
    out: Dict[int, Path] = {}
    saved = sys.stdout
    try:
        sys.stdout = open(os.devnull, "w")  # the single runs' summaries: the leaderboard says it
        for num, overrides in jobs:
            try:
                _, _, status, error = _run_full_job(context, task, composer.compose(overrides), num)
            except Exception as exc:  # noqa: BLE001 - the lean job folder stays the reference
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            if status != "failed":
                out[num] = full_folder(config, num)
            else:
                log.warning("full re-run of job %s failed: %s", num, error)
    finally:
        sys.stdout.close()
        sys.stdout = saved
        del entry._failures[failures_before:]
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    return out
