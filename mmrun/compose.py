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

`JobComposer.job_texts` gives a job's `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`
text, the same bytes as `OmegaConf.to_yaml` of each part, from YAML blocks kept per template:
a job's value overrides change only the top-level keys they name, and its hydra part differs
from the template's only in hydra.overrides.task, hydra.job.override_dirname, .id, .num and
hydra.runtime.output_dir, so only those blocks are emitted again for each job.
"""

from __future__ import annotations

import copy
import pickle
import re
from enum import Enum
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import Container, DictConfig, OmegaConf, flag_override, open_dict

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
        self._task_texts: Dict[Tuple[str, ...], Optional["_TaskText"]] = {}  # config.yaml blocks per template
        self._hydra_texts: Dict[int, Tuple[DictConfig, Optional["_HydraText"]]] = {}  # hydra.yaml blocks per hydra part
        self._checks: Dict[Tuple[str, ...], "_TemplateChecks"] = {}  # what validate() may reuse, per template
        # the last compose_job's task config, its template key and the top-level keys its value overrides name
        # (with the override strings naming each, in order)
        self._last_job: Optional[Tuple[DictConfig, Tuple[str, ...], Dict[str, Tuple[str, ...]]]] = None
        # a top-level section's YAML lines and resolved container once the template's value
        # overrides naming it are applied: (template key, section, those overrides) -> value
        self._section_texts: Dict[Tuple[Tuple[str, ...], str, Tuple[str, ...]], str] = {}
        self._section_items: Dict[Tuple[Tuple[str, ...], str, Tuple[str, ...]], Any] = {}

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
            dirname = hydra_cfg.hydra.job.config.override_dirname
            # each job's copy is unpickled from these bytes: the same config (flags, types,
            # schema) as copy.deepcopy gives, in a sixth of the time
            parts = self._parts[groups] = (pickle.dumps(full, protocol=pickle.HIGHEST_PROTOCOL), hydra_cfg,
                                           (dirname.kv_sep, dirname.item_sep, list(dirname.exclude_keys)))
        task_template, hydra_cfg, (kv_sep, item_sep, exclude_keys) = parts
        cfg = pickle.loads(task_template)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        touched: Dict[str, List[str]] = {}
        for o in values:
            touched.setdefault(_top_key(o.key_or_group), []).append(o.input_line)
        self._last_job = (cfg, groups, {k: tuple(v) for k, v in touched.items()})
        app = [o for o in parsed if not o.is_hydra_override()]
        h = hydra_cfg.hydra
        # read-write for the two nodes set (not the whole hydra node: each flag change walks
        # the subtree below it)
        overrides_node, job_node = h._get_node("overrides"), h._get_node("job")
        with read_write(overrides_node):
            overrides_node.task = [o.input_line for o in app]
        with read_write(job_node):
            job_node.override_dirname = get_overrides_dirname(
                overrides=app, kv_sep=kv_sep, item_sep=item_sep, exclude_keys=exclude_keys)
        return cfg, hydra_cfg

    def job_texts(self, cfg: DictConfig, hydra_cfg: DictConfig) -> Tuple[str, str, str]:
        """(config.yaml, hydra.yaml, overrides.yaml) text of the job compose_job made last, as
        `OmegaConf.to_yaml` gives them (job_yaml_texts); call it once the hydra part holds the
        job's id, num and output_dir. Only the top-level blocks of config.yaml the job's value
        overrides name, and the per-job keys of hydra.yaml, are emitted again; the rest is the
        template's text. Any other config: job_yaml_texts."""
        last = self._last_job
        parts = self._parts.get(last[1]) if last is not None and last[0] is cfg else None
        if parts is None or parts[1] is not hydra_cfg:
            return job_yaml_texts(cfg, hydra_cfg)
        groups, touched = last[1], last[2]
        if groups not in self._task_texts:
            self._task_texts[groups] = _TaskText.of(OmegaConf.to_container(pickle.loads(parts[0]), resolve=False,
                                                                           enum_to_str=True))
        task = self._task_texts[groups]
        hit = self._hydra_texts.get(id(hydra_cfg))
        if hit is None or hit[0] is not hydra_cfg:
            hit = self._hydra_texts[id(hydra_cfg)] = (hydra_cfg, _HydraText.of(hydra_cfg))
        hydra = hit[1]
        config_text = task.text(cfg, touched, self._section_memo(groups, touched, self._section_texts)) \
            if task is not None else yaml_text(_plain(cfg))
        if hydra is None:
            return config_text, yaml_text(_plain(hydra_cfg)), yaml_text(_plain(hydra_cfg.hydra.overrides.task))
        hydra_text, overrides = hydra.text(hydra_cfg)
        return config_text, hydra_text, yaml_text(overrides)

    def job_hint(self, cfg: DictConfig) -> Optional[Tuple[Any, frozenset]]:
        """For mmrun.config.hint_job, the job compose_job made last (None for any other config):
        (a function giving OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) from
        the template's container, resolving again only the top-level sections the job's value
        overrides name or that hold an interpolation; the top-level keys whose sections pass the
        unknown-key check in the template and which the overrides leave alone)."""
        import functools

        last = self._last_job
        parts = self._parts.get(last[1]) if last is not None and last[0] is cfg else None
        if parts is None:
            return None
        groups, touched = last[1], last[2]
        checks = self._checks.get(groups)
        if checks is None:
            checks = self._checks[groups] = _TemplateChecks(pickle.loads(parts[0]))
        return (functools.partial(checks.items, cfg, touched, self._section_memo(groups, touched, self._section_items)),
                checks.good.difference(touched))

    @staticmethod
    def _section_memo(groups: Tuple[str, ...], touched: Dict[str, Tuple[str, ...]], memo: Dict[Any, Any]) -> Any:
        """A function (section, make) -> make() kept in memo per (template, section, the job's
        overrides naming the section): a grid repeats each value of a key over many jobs."""

        def get(key: str, make: Any) -> Any:
            k = (groups, key, touched.get(key, ()))
            hit = memo.get(k)
            if hit is None:
                hit = make()
                if len(memo) >= 10_000:
                    memo.clear()
                memo[k] = hit
            return hit

        return get

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
                if o.is_add() or o.is_force_add():
                    # a key the schema does not know ('+sizing.nope=1') stops the sweep here, as
                    # it stops a single run, instead of failing every job
                    from mmrun.config import check_unknown_keys

                    check_unknown_keys(cfg)
                self._checked.add((groups, o.input_line))


class _TemplateChecks:
    """What validate() reads of a template's jobs that the template already tells: its plain
    container (unresolved: the sections without interpolations read the same resolved) and the
    top-level keys whose sections pass the unknown-key check."""

    def __init__(self, template: DictConfig):
        from mmrun.config import keys_without_unknown

        plain = OmegaConf.to_container(template, resolve=False)
        self.reresolve = frozenset(k for k, v in plain.items() if _holds(v, lambda x: "${" in x))
        # a missing value ('???') fails to_container(throw_on_missing=True): the jobs do it in full
        self.plain = None if _holds(plain, lambda x: x == "???") else plain
        try:
            self.good = keys_without_unknown(template)
        except Exception:  # noqa: BLE001 - the jobs walk every section
            self.good = frozenset()

    def items(self, cfg: DictConfig, touched: Dict[str, Tuple[str, ...]], memo: Any) -> Optional[Dict[str, Any]]:
        """OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) for a job of this
        template whose value overrides name the top-level keys `touched` ({key: override
        strings}); None if a section does not resolve (the caller then makes the container in
        full and meets the error). A section named by overrides without an interpolation
        resolves the same for every job with those overrides: kept (memo)."""
        if self.plain is None:
            return None
        out: Dict[str, Any] = {}
        try:
            for key in cfg.keys():
                if key in self.reresolve or key not in self.plain:
                    out[key] = _resolved_child(cfg, key)
                elif key in touched:
                    if any("${" in line for line in touched[key]):
                        out[key] = _resolved_child(cfg, key)
                    else:
                        out[key] = memo(key, lambda: _resolved_child(cfg, key))  # noqa: B023 - called at once
                else:
                    out[key] = self.plain[key]
        except Exception:  # noqa: BLE001 - see above
            return None
        return out


def _holds(value: Any, test: Any) -> bool:
    """True if a string in value (a plain container: keys and values) passes test."""
    if isinstance(value, str):
        return bool(test(value))
    if isinstance(value, dict):
        return any(_holds(k, test) or _holds(v, test) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds(v, test) for v in value)
    return False


def _resolved_child(cfg: DictConfig, key: str) -> Any:
    """cfg[key] as OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) holds it."""
    node = cfg._get_child(key, throw_on_missing_value=True)._dereference_node()
    if isinstance(node, Container):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node._value()


# ---------------------------------------------------------------- interpolations

_TREES: Dict[Tuple[str, str, str], Any] = {}  # (string, parser rule, lexer mode) -> OmegaConf's parse tree
_PARSE: Any = None  # omegaconf.grammar_parser.parse, once replaced


def cache_interpolation_parses() -> None:
    """Keep OmegaConf's parse tree of each interpolation string in this process, instead of
    parsing it again on every read: a sweep worker resolves the same few strings for every job
    (`${exchange.maker_fee}`, hydra.sweep.subdir's `${hydra.job.num}`, the log file's name), and
    the grammar's parser is most of what resolving one costs (about 0.1 ms a string).
    omegaconf.grammar_parser.parse depends on its arguments alone and OmegaConf's visitor only
    reads the tree, so every value is the same; a string that does not parse raises as before
    (nothing kept). Replaces the name in the two OmegaConf modules that call it; idempotent."""
    global _PARSE
    import omegaconf._utils
    import omegaconf.base
    from omegaconf.grammar_parser import parse

    if _PARSE is None:
        _PARSE = parse

    def cached_parse(value: str, parser_rule: str = "configValue", lexer_mode: str = "DEFAULT_MODE") -> Any:
        key = (value, parser_rule, lexer_mode)
        tree = _TREES.get(key)
        if tree is None:
            tree = _PARSE(value, parser_rule, lexer_mode)
            if len(_TREES) >= 4096:
                _TREES.clear()
            _TREES[key] = tree
        return tree

    omegaconf.base.parse = cached_parse
    omegaconf._utils.parse = cached_parse


# ---------------------------------------------------------------- YAML text of a job's .hydra files


def job_yaml_texts(cfg: DictConfig, hydra_cfg: DictConfig) -> Tuple[str, str, str]:
    """(config.yaml, hydra.yaml, overrides.yaml) text of a job as Hydra's run_job writes them:
    `OmegaConf.to_yaml` of the task config, of {hydra: ...} and of hydra.overrides.task."""
    return yaml_text(_plain(cfg)), yaml_text(_plain(hydra_cfg)), yaml_text(_plain(hydra_cfg.hydra.overrides.task))


def yaml_text(container: Any) -> str:
    """A plain container as `OmegaConf.to_yaml` writes it (OmegaConf's dumper; libyaml's emitter
    when PyYAML has it: the same text in a fraction of the time)."""
    import yaml

    return yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=yaml_dumper())


_DUMPER: Any = None


def yaml_dumper() -> Any:
    """OmegaConf's YAML dumper (strings that read as numbers or booleans are quoted) on libyaml's emitter."""
    global _DUMPER
    if _DUMPER is None:
        import yaml
        from omegaconf._utils import get_omega_conf_dumper

        base = getattr(yaml, "CDumper", None)
        if base is None:
            _DUMPER = get_omega_conf_dumper()
        else:
            _DUMPER = type("MmrunYamlDumper", (base,), {})
            _DUMPER.add_representer(str, get_omega_conf_dumper().str_representer)
    return _DUMPER


def _plain(node: Any) -> Any:
    """OmegaConf.to_container(node) as to_yaml takes it (unresolved, enums by name)."""
    return OmegaConf.to_container(node, resolve=False, enum_to_str=True)


def _plain_child(node: DictConfig, key: str) -> Any:
    """The value of node[key] as OmegaConf.to_container(node) holds it (unresolved, enums by name)."""
    child = node._get_node(key)
    if isinstance(child, Container):
        return _plain(child)
    value = child._value()
    return value.name if isinstance(value, Enum) else value


def _top_key(key: str) -> str:
    """The top-level key a value override's key falls under ('sizing.order_size_pct' -> 'sizing')."""
    return re.split(r"[.\[]", key, maxsplit=1)[0]


def _lines(path: Tuple[str, ...], items: Dict[str, Any]) -> str:
    """The YAML lines of items (keys of the mapping at path, in their order) as they read in the
    whole document: the same indentation, hence the same line wrapping. path's keys are each one
    line ('hydra:', '  job:'), dropped."""
    doc: Any = items
    for key in reversed(path):
        doc = {key: doc}
    text = yaml_text(doc)
    cut = 0
    for _ in path:
        cut = text.index("\n", cut) + 1
    return text[cut:]


class _TaskText:
    """config.yaml of one template's jobs: one block of lines per top-level key."""

    def __init__(self, blocks: Dict[str, str]):
        self.blocks = blocks

    @classmethod
    def of(cls, template: Dict[str, Any]) -> Optional["_TaskText"]:
        """The blocks of the template's text; None if joining them does not give the whole text
        (then every job's text is emitted whole)."""
        if not template:
            return None
        blocks = {key: _lines((), {key: value}) for key, value in template.items()}
        return cls(blocks) if "".join(blocks.values()) == yaml_text(template) else None

    def text(self, cfg: DictConfig, touched: Dict[str, Tuple[str, ...]], memo: Any) -> str:
        """cfg's text: the template's block for every top-level key no value override named; a
        named one's is the same for every job with the same overrides naming it (memo)."""
        out = []
        for key in cfg.keys():
            block = self.blocks.get(key) if key not in touched else None
            if block is None:
                block = memo(key, lambda: _lines((), {key: _plain_child(cfg, key)}))  # noqa: B023 - called at once
            out.append(block)
        return "".join(out)


# hydra.yaml keys a job sets (compose_job, Session.run_one, run_job_in_place): hydra.<block>.<key>
PER_JOB_HYDRA_KEYS = {"overrides": ("task",), "job": ("override_dirname", "id", "num"), "runtime": ("output_dir",)}


class _HydraText:
    """hydra.yaml of one compose_job hydra part: fixed text, and the runs of per-job keys."""

    def __init__(self, parts: List[Union[str, Tuple[str, Tuple[str, ...]]]]):
        self.parts = parts  # text, or (block, keys): hydra.<block>.<keys>, emitted for each job

    @classmethod
    def of(cls, hydra_cfg: DictConfig) -> Optional["_HydraText"]:
        """The parts of {hydra: ...}'s text; None if joining them (with the per-job keys' current
        values) does not give the whole text."""
        base = _plain(hydra_cfg)
        whole = yaml_text(base)
        h = base.get("hydra")
        if set(base) != {"hydra"} or not isinstance(h, dict) or not h:
            return None
        parts: List[Union[str, Tuple[str, Tuple[str, ...]]]] = [whole[: whole.index("\n") + 1]]  # "hydra:"
        for block, value in h.items():
            per_job = PER_JOB_HYDRA_KEYS.get(block)
            if not per_job or not isinstance(value, dict) or not value:
                parts.append(_lines(("hydra",), {block: value}))
                continue
            text = _lines(("hydra",), {block: value})
            parts.append(text[: text.index("\n") + 1])  # "  job:"
            runs: List[Tuple[bool, List[str]]] = []  # runs of keys that are all fixed or all per-job
            for key in value:
                fixed = key not in per_job
                if runs and runs[-1][0] == fixed:
                    runs[-1][1].append(key)
                else:
                    runs.append((fixed, [key]))
            for fixed, keys in runs:
                parts.append(_lines(("hydra", block), {k: value[k] for k in keys}) if fixed else (block, tuple(keys)))
        made = cls(parts)
        return made if made.text(hydra_cfg)[0] == whole else None

    def text(self, hydra_cfg: DictConfig) -> Tuple[str, Any]:
        """(hydra.yaml's text, hydra.overrides.task as a list)."""
        h = hydra_cfg.hydra
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                block, keys = part
                node = h._get_node(block)
                out.append(_lines(("hydra", block), {k: _plain_child(node, k) for k in keys}))
        return "".join(out), _plain(h.overrides.task)
