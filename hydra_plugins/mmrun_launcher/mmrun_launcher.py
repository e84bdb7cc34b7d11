"""Hydra plugins `hydra/launcher=mmrun` and `hydra/sweeper=mmrun` (mmrun's defaults for --multirun).

Thin adapters: the work is done by mmrun.launch (warm workers, cheap composition, console).
This module is imported by Hydra's plugin discovery in every mmrun command, so it imports
nothing heavy at module level.
"""


from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class MmrunLauncherConf:
    """hydra.launcher.* for hydra/launcher=mmrun."""

    _target_: str = "hydra_plugins.mmrun_launcher.mmrun_launcher.MmrunLauncher"
    n_jobs: int = -1  # worker processes; -1 = one per core
    chunk: Optional[int] = None  # jobs handed to a worker at a time; null = sized to the sweep


@dataclass
class MmrunSweeperConf(BasicSweeperConf):
    """hydra.sweeper.* for hydra/sweeper=mmrun: Hydra's basic sweeper's keys (max_batch_size, params)."""

    _target_: str = "hydra_plugins.mmrun_launcher.mmrun_launcher.MmrunSweeper"


ConfigStore.instance().store(group="hydra/launcher", name="mmrun", node=MmrunLauncherConf, provider="mmrun")
ConfigStore.instance().store(group="hydra/sweeper", name="mmrun", node=MmrunSweeperConf, provider="mmrun")


class MmrunLauncher(Launcher):
    """Runs a sweep's jobs in warm worker processes, one per core (see mmrun.launch)."""

    def __init__(self, n_jobs: int = -1, chunk: Optional[int] = None) -> None:
        self.n_jobs = int(n_jobs)
        self.chunk = chunk
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.errors import HydraException

        if self.n_jobs == 0 or self.n_jobs < -1:
            raise HydraException(f"hydra.launcher.n_jobs={self.n_jobs}: allowed -1 (one worker per core) or a whole number >= 1")
        if self.chunk is not None and int(self.chunk) < 1:
            raise HydraException(f"hydra.launcher.chunk={self.chunk}: allowed null (sized to the sweep) or a whole number >= 1")
        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra.core.utils import configure_log, setup_globals

        from mmrun import launch

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        session = launch.start(self.hydra_context, self.task_function, self.config, self.n_jobs, self.chunk)
        return session.launch(job_overrides, initial_job_idx)


class MmrunSweeper(BasicSweeper):
    """Hydra's basic grid sweeper, checking that the jobs compose the cheap way (mmrun.compose)."""

    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Any] = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._made_dirs: List[Path] = []  # the sweep folder and its parents this sweep creates, deepest first
        self._old_multirun_yaml: Optional[bytes] = None
        self._launched = False

    def sweep(self, arguments: List[str]) -> Any:
        """Hydra's grid sweep; a sweep stopped by a bad override before its first job leaves no
        folder behind (Hydra creates it, with any missing parent such as outputs/sweeps/, and
        writes multirun.yaml before checking the jobs)."""
        assert self.config is not None
        folder = Path(str(self.config.hydra.sweep.dir)).absolute()
        try:  # a previous sweep's, which Hydra overwrites before the jobs are checked
            self._old_multirun_yaml: Optional[bytes] = (folder / "multirun.yaml").read_bytes()
        except OSError:
            self._old_multirun_yaml = None
        self._made_dirs = []
        while not folder.exists() and folder.parent != folder:
            self._made_dirs.append(folder)
            folder = folder.parent
        self._launched = False
        return super().sweep(arguments)

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        """The next batch; when the whole sweep has no more jobs than sweep.top, its jobs write
        full folders themselves (sweep.outputs=full): each would be re-run into one anyway."""
        from mmrun import launch

        batch = super().get_job_batch()
        assert self.overrides is not None and self.config is not None
        return launch.full_when_all_on_top(self.config, self.overrides, batch)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from mmrun import launch

        assert self.hydra_context is not None and self.config is not None
        try:
            launch.composer_for(self.hydra_context, self.config).check([list(o) for o in batch])
        except BaseException:
            if not self._launched:
                from mmrun.sweep import forget_pending

                forget_pending()
                self._remove_made_dirs()
                if self._old_multirun_yaml is not None:  # the previous sweep's folder stays as it was
                    (Path(str(self.config.hydra.sweep.dir)) / "multirun.yaml").write_bytes(self._old_multirun_yaml)
            raise
        if not self._launched:  # the jobs compose: a previous sweep in the folder makes way for them
            from mmrun.sweep import replace_previous_sweep

            replace_previous_sweep(Path(str(self.config.hydra.sweep.dir)), keep=("multirun.yaml",))
        self._launched = True

    def _remove_made_dirs(self) -> None:
        """Remove the folders this sweep created, if they hold nothing but Hydra's multirun.yaml."""
        made = self._made_dirs
        if not made or not made[0].is_dir() or {p.name for p in made[0].iterdir()} - {"multirun.yaml"}:
            return
        (made[0] / "multirun.yaml").unlink(missing_ok=True)
        for folder in made:  # deepest first; a parent something else has written into stays
            try:
                folder.rmdir()
            except OSError:
                return


__all__: List[str] = ["MmrunLauncher", "MmrunSweeper"]
