"""Sweep jobs' configs composed cheaply: Hydra composes once per set of config-group choices, values are applied after.

Hydra composes a job's config in two steps: the defaults list (config groups such as
`exchange=binance`, `strategy=avellaneda_stoikov`, and every `hydra.*` override) decides which
YAML files and schemas are merged, then the value overrides (`spread=0.001`,
`sizing.order_size_pct=0.02`, `+key=v`, `~key`) are applied to the merged, struct-mode config,
one after the other, by `ConfigLoaderImpl._apply_overrides_to_config`. A grid sweep varies
mostly values, so the first step is the same for most jobs and costs about 0.1 s each time.

`JobComposer` does the first step once per distinct set of group overrides (Hydra's own
`load_sweep_config`, kept as a template) and the second on a copy of the template with Hydra's
same function. Types, unknown keys and the schema fail with the same exception and message as in
a single run; `mmrun.config.validate()` then runs in the job as usual. `hydra.overrides.task` and
`hydra.job.override_dirname` are filled in from the job's own overrides, as Hydra does.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any, Dict, List, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf, flag_override, open_dict

# Templates kept per composer (distinct sets of config-group choices). An Optuna search over
# groups could produce many; the oldest are composed again if needed.
MAX_TEMPLATES = 64


class JobComposer:
    """Compose sweep jobs' configs from a master (multirun) config and Hydra's config loader.

    config_loader: hydra_context.config_loader; master: the multirun's config (the launcher's).
    compose(overrides) -> the job's config, equal to
    `config_loader.load_sweep_config(master, overrides)`; raises what that would raise
    (hydra.errors.ConfigCompositionException and friends) for a bad override.
    """

    def __init__(self, config_loader: Any, master: DictConfig):
        self.loader = config_loader
        self.master = master
        self.parser = OverridesParser.create(config_loader=config_loader)
        self.templates: Dict[Tuple[str, ...], DictConfig] = {}
        self._groups: Dict[str, bool] = {}
        self._checked: set = set()
        self._parts: Dict[Tuple[str, ...], Tuple[bytes, DictConfig]] = {}
        self._parsed: Dict[str, Override] = {}
        self._scratch: Dict[Tuple[str, ...], DictConfig] = {}  # check(): one copy per template for plain values

    # ------------------------------------------------------------ overrides

    def _is_group(self, o: Override) -> bool:
        """True if the override changes the defaults list (a config group, a package, any hydra key)."""
        if o.is_hydra_override() or o.package is not None:
            return True
        key = o.key_or_group
        known = self._groups.get(key)
        if known is None:
            known = self._groups[key] = bool(self.loader.repository.group_exists(key))
        return known

    def _parse(self, line: str) -> Override:
        """One override string parsed by Hydra's parser (kept: a grid repeats few distinct strings)."""
        o = self._parsed.get(line)
        if o is None:
            (o,) = self.parser.parse_overrides([line])
            if len(self._parsed) >= 100_000:
                self._parsed.clear()
            self._parsed[line] = o
        return o

    def split(self, overrides: Sequence[str]) -> Tuple[Tuple[str, ...], List[Override], List[Override]]:
        """(template key: the group overrides, the value overrides, every parsed override in order)."""
        parsed = [self._parse(str(x)) for x in overrides]
        groups = tuple(o.input_line for o in parsed if self._is_group(o))
        values = [o for o in parsed if not self._is_group(o)]
        return groups, values, parsed

    def template(self, groups: Tuple[str, ...]) -> DictConfig:
        """The config composed by Hydra for these group overrides alone (cached)."""
        t = self.templates.get(groups)
        if t is None:
            t = self.loader.load_sweep_config(self.master, list(groups))
            if len(self.templates) >= MAX_TEMPLATES:
                self.templates.pop(next(iter(self.templates)))
            self.templates[groups] = t
        return t

    # ------------------------------------------------------------ composing

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config for these overrides (a new object the caller may change)."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

        groups, values, parsed = self.split(overrides)
        template = self.template(groups)
        cfg = copy.deepcopy(template)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app = [o for o in parsed if not o.is_hydra_override()]
        job = cfg.hydra.job
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [o.input_line for o in app]
            job.override_dirname = get_overrides_dirname(
                overrides=app,
                kv_sep=job.config.override_dirname.kv_sep,
                item_sep=job.config.override_dirname.item_sep,
                exclude_keys=job.config.override_dirname.exclude_keys,
            )
        return cfg

    def compose_job(self, overrides: Sequence[str]) -> Tuple[DictConfig, DictConfig]:
        """(task config, {hydra: ...}) for a job, for a process that runs jobs one at a time.

        The task config is a new object; the hydra part is kept per template and updated in
        place (hydra.overrides.task, hydra.job.override_dirname), so it is valid until the
        next call. The caller sets hydra.job.num/id and hydra.runtime.output_dir.
        """
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from omegaconf import read_write

        groups, values, parsed = self.split(overrides)
        parts = self._parts.get(groups)
        if parts is None:
            full = copy.deepcopy(self.template(groups))
            OmegaConf.copy_cache(from_config=self.master, to_config=full)
            hydra_node = full._get_node("hydra")
            with open_dict(full):
                del full["hydra"]
            hydra_cfg = OmegaConf.create({})
            with flag_override(hydra_cfg, "no_deepcopy_set_nodes", True):
                hydra_cfg["hydra"] = hydra_node  # moved, not copied
            OmegaConf.copy_cache(from_config=self.master, to_config=hydra_cfg)
            OmegaConf.set_readonly(hydra_cfg.hydra, True)
            # each job's copy is unpickled from these bytes: the same config (flags, types,
            # schema) as copy.deepcopy gives, in a sixth of the time
            parts = self._parts[groups] = (pickle.dumps(full, protocol=pickle.HIGHEST_PROTOCOL), hydra_cfg)
        task_template, hydra_cfg = parts
        cfg = pickle.loads(task_template)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        app = [o for o in parsed if not o.is_hydra_override()]
        h = hydra_cfg.hydra
        with read_write(h), open_dict(h):
            h.overrides.task = [o.input_line for o in app]
            h.job.override_dirname = get_overrides_dirname(
                overrides=app,
                kv_sep=h.job.config.override_dirname.kv_sep,
                item_sep=h.job.config.override_dirname.item_sep,
                exclude_keys=h.job.config.override_dirname.exclude_keys,
            )
        return cfg, hydra_cfg

    def check(self, batch: Sequence[Sequence[str]]) -> None:
        """Fail as Hydra's sweeper would if any job of the batch cannot be composed.

        A grid's jobs combine a few values per key: each distinct value override is applied
        once to its template (with the first job of each template composed whole), instead of
        composing every job. Value overrides set different keys, so a job composes if each of
        its overrides does.
        """
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        for overrides in batch:
            groups, values, _ = self.split(overrides)
            if groups not in self.templates:
                self.template(groups)
                self.compose(overrides)
            fresh = [o for o in values if (groups, o.input_line) not in self._checked]
            if not fresh:
                continue
            if any(o.is_delete() or o.is_add() or o.is_force_add() or isinstance(o.value(), (dict, list)) for o in fresh):
                cfg = copy.deepcopy(self.templates[groups])  # adding, deleting or replacing nodes: its own copy
            else:
                # plain `key=value` overrides of single values: whether one applies depends on its
                # key and type only, not on other values, so one scratch copy per template serves
                # every job
                cfg = self._scratch.get(groups)
                if cfg is None:
                    cfg = self._scratch[groups] = copy.deepcopy(self.templates[groups])
            for o in fresh:
                ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
                self._checked.add((groups, o.input_line))
