"""A sweep job's per-job Hydra work done once per template or per process gives the same result
as doing it in full: the .hydra/ texts (mmrun.compose.JobComposer.job_texts) are byte-identical to
the whole texts emitted for each job (mmrun.compose.job_yaml_texts) and hold the config Hydra
composes for the job."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf, open_dict, read_write

LONG = "data.path=/some/where/a folder with a long name/" + "x" * 70 + "/candles.parquet"

# one composer runs them in this order: templates reused, group choices changing in between
SEQUENCE = [
    ["mode=backtest", "spread=0.001", "sizing.order_size_pct=0.02"],
    ["mode=backtest", "spread=0.003", "sizing.order_size_pct=0.01"],
    ["mode=backtest", "spread=0.004", LONG, "sizing.order_size_pct=0.01"],
    ["strategy=avellaneda_stoikov", "strategy.gamma=3", "spread=0.003"],
    ["exchange=binance", "spread=0.003", "+exchange.sim.prices.ABC=3", "strategy=avellaneda_stoikov", "strategy.gamma=3"],
    ["mode=backtest", "spread=0.005", "sizing.order_size_pct=0.03"],
    ["strategy=inventory_skew", "strategy.target_base_share=0.4", "~exchange.sim.prices.ETH", "fills=instant"],
    ["hydra.job.name=other", "spread=0.004", "run.max_ticks=10", "pairs=[BTC/USDT,ETH/USDT@5000]"],
    ["hydra.job.name=other", "spread=0.0041", "run.max_ticks=11", "sweep.objective=sharpe"],
    ["mode=backtest", "spread=0.001", "sizing.order_size_pct=0.02"],
]


def _set_job(hydra_cfg, num: int, folder: str) -> None:
    """What Session.run_one and run_job_in_place set on a job's hydra part."""
    h = hydra_cfg.hydra
    with read_write(h), open_dict(h):
        h.job.id = num
        h.job.num = num
        h.runtime.output_dir = folder


def test_job_texts_equal_hydras_yaml(loader_and_master, tmp_path):
    from mmrun.compose import JobComposer, job_yaml_texts

    loader, master = loader_and_master
    composer = JobComposer(loader, master)
    for num, overrides in enumerate(SEQUENCE * 2):
        cfg, hydra_cfg = composer.compose_job(overrides)
        # a folder name long enough that hydra.runtime.output_dir's line wraps on some jobs
        _set_job(hydra_cfg, num, str(tmp_path / ("a folder " * num) / str(num)))
        got = composer.job_texts(cfg, hydra_cfg)

        # Hydra's own composition of the job and its run_job's texts (OmegaConf.to_yaml)
        full = loader.load_sweep_config(master, overrides)
        with open_dict(full):
            full.hydra.job.id = num
            full.hydra.job.num = num
            full.hydra.runtime.output_dir = str(tmp_path / ("a folder " * num) / str(num))
        want_hydra = OmegaConf.create({"hydra": OmegaConf.to_container(full.hydra)})
        with open_dict(full):
            del full["hydra"]
        want = (full, want_hydra, want_hydra.hydra.overrides.task)
        assert got == job_yaml_texts(cfg, hydra_cfg), (num, overrides)
        assert [yaml.safe_load(t) for t in got] == [OmegaConf.to_container(c) for c in want]
        # OmegaConf.to_yaml's own bytes too, but for hydra.yaml: libyaml's emitter (mmrun.compose.yaml_text)
        # wraps hydra.help's long double-quoted strings at other places than PyYAML's (the same strings)
        assert (got[0], got[2]) == (OmegaConf.to_yaml(full), OmegaConf.to_yaml(want[2]))
    # the kept blocks were used (not the whole-text fallback) for every template
    assert composer._task_texts and all(t is not None for t in composer._task_texts.values())
    assert composer._hydra_texts and all(t is not None for _, t in composer._hydra_texts.values())


def test_job_texts_of_another_config_are_emitted_whole(loader_and_master):
    from mmrun.compose import JobComposer, job_yaml_texts

    loader, master = loader_and_master
    composer = JobComposer(loader, master)
    cfg, hydra_cfg = composer.compose_job(["spread=0.003"])
    _set_job(hydra_cfg, 1, "/tmp/x/1")
    other = composer.compose(["spread=0.004"])
    with open_dict(other):
        del other["hydra"]
    cfg.spread = 0.005  # changed after composition: no longer the template plus its overrides ...
    composer.compose_job(["spread=0.006"])  # ... and no longer the last job composed
    assert composer.job_texts(cfg, hydra_cfg) == job_yaml_texts(cfg, hydra_cfg)
    assert "spread: 0.005" in composer.job_texts(cfg, hydra_cfg)[0]
    assert composer.job_texts(other, hydra_cfg)[0] == OmegaConf.to_yaml(other)


# ---------------------------------------------------------------- a job's logging


def _job_logging(loader_and_master, folder, num: int, **extra):
    """The hydra.job_logging of a composed job whose output_dir is folder (a DictConfig with its hydra root)."""
    from mmrun.compose import JobComposer

    loader, master = loader_and_master
    cfg, hydra_cfg = JobComposer(loader, master).compose_job(["spread=0.003"])
    _set_job(hydra_cfg, num, str(folder))
    h = hydra_cfg.hydra
    for key, value in extra.items():
        with read_write(h), open_dict(h):
            OmegaConf.update(h, key, value)
    return h.job_logging


@pytest.fixture()
def clean_logging(monkeypatch):
    """The root logger's handlers and level restored after the test; full configurations counted."""
    import logging

    import hydra.core.utils

    from mmrun import launch

    handlers, level = logging.root.handlers[:], logging.root.level
    full = []
    configure_log = hydra.core.utils.configure_log
    monkeypatch.setattr(hydra.core.utils, "configure_log", lambda *a: (full.append(a), configure_log(*a)))
    yield full
    for h in logging.root.handlers[:]:
        logging.root.removeHandler(h)
        h.close()
    for h in handlers:
        logging.root.addHandler(h)
    logging.root.setLevel(level)
    launch._job_log = None


def _run_jobs(loader_and_master, folders, configure, **extra):
    import logging

    for num, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        configure(_job_logging(loader_and_master, folder, num, **extra), False)
        logging.getLogger("mmrun").info("job %s line one", num)
        logging.getLogger("mmrun.sub").warning("job %s line two", num)
        logging.getLogger("mmrun").debug("job %s not logged at INFO", num)
    logging.root.handlers[-1].flush()


def _lines(folder):
    return [line.split(" - ", 1)[1] for line in (folder / "mmrun.log").read_text().splitlines()]


def test_consecutive_jobs_log_to_their_own_files_as_with_configure_log(loader_and_master, tmp_path, clean_logging, capsys):
    import logging

    from hydra.core.utils import configure_log

    from mmrun import launch

    ours = [tmp_path / "ours" / str(i) for i in range(3)]
    _run_jobs(loader_and_master, ours, launch.configure_job_log)
    assert len(clean_logging) == 1  # configured once: jobs 1 and 2 re-pointed the file handler
    theirs = [tmp_path / "theirs" / str(i) for i in range(3)]
    _run_jobs(loader_and_master, theirs, configure_log)
    for num, (a, b) in enumerate(zip(ours, theirs)):
        assert _lines(a) == _lines(b) == [f"job {num} line one", f"job {num} line two"]
    # one console handler and one file handler on the root, as dictConfig leaves them
    launch._job_log = None
    full = len(clean_logging)
    launch.configure_job_log(_job_logging(loader_and_master, ours[0], 0), False)
    launch.configure_job_log(_job_logging(loader_and_master, ours[1], 1), False)
    assert len(clean_logging) == full + 1
    kinds = [type(h) for h in logging.root.handlers]
    assert kinds == [logging.StreamHandler, logging.FileHandler]
    assert logging.root.handlers[1].baseFilename == str(ours[1] / "mmrun.log")
    assert capsys.readouterr().out.count("line one") == 6


def test_a_changed_logging_config_or_stdout_is_configured_in_full(loader_and_master, tmp_path, clean_logging):
    import io
    import logging
    import sys

    from mmrun import launch

    folders = [tmp_path / str(i) for i in range(6)]
    for f in folders:
        f.mkdir()

    def job(num, **extra):
        launch.configure_job_log(_job_logging(loader_and_master, folders[num], num, **extra), False)

    job(0)
    job(1)
    assert len(clean_logging) == 1
    # another format: configured in full (a new file handler with the new format)
    job(2, **{"job_logging.formatters.simple.format": "%(levelname)s|%(message)s"})
    assert len(clean_logging) == 2
    logging.getLogger("mmrun").info("formatted")
    logging.root.handlers[-1].flush()
    assert (folders[2] / "mmrun.log").read_text() == "INFO|formatted\n"
    job(3)
    assert len(clean_logging) == 3
    # sys.stdout replaced: the console handler writes to the new one, as a new dictConfig binds it
    saved, sys.stdout = sys.stdout, io.StringIO()
    try:
        job(4)
        assert len(clean_logging) == 4
        logging.getLogger("mmrun").info("to the new stdout")
        assert "to the new stdout" in sys.stdout.getvalue()
    finally:
        sys.stdout = saved
    # a handler added by a job: dictConfig would close it, so the next job is configured in full
    extra = logging.StreamHandler(io.StringIO())
    logging.getLogger("other").addHandler(extra)
    job(5)
    assert len(clean_logging) == 5
    logging.getLogger("other").removeHandler(extra)


@pytest.mark.parametrize("filename", [
    None,  # the shipped ${hydra.runtime.output_dir}/${hydra.job.name}.log
    "${hydra.runtime.output_dir}/job-${hydra.job.num}.log",  # an int: OmegaConf's own resolution
    "${hydra.runtime.output_dir}/${hydra.job.override_dirname}.log",
    "${hydra.runtime.output_dir}/\\${hydra.job.name}.log",  # an escaped interpolation
    "${hydra.runtime.output_dir}/${oc.env:HOME}.log",  # a resolver
    "${hydra.job.name}",
])
def test_a_jobs_logging_config_resolves_as_omegaconfs(loader_and_master, tmp_path, filename):
    from mmrun import launch

    extra = {} if filename is None else {"job_logging.handlers.file.filename": filename}
    for num in range(3):
        node = _job_logging(loader_and_master, tmp_path / str(num), num, **extra)
        assert launch._logging_conf(node) == OmegaConf.to_container(node, resolve=True)
        assert launch._logging_conf(node) == OmegaConf.to_container(node, resolve=True)  # kept per node


def test_a_broken_reference_in_the_logging_config_fails_as_in_omegaconf(loader_and_master, tmp_path):
    from mmrun import launch

    node = _job_logging(loader_and_master, tmp_path, 1, **{"job_logging.handlers.file.filename": "${hydra.nothing}/x.log"})
    with pytest.raises(Exception) as theirs:
        OmegaConf.to_container(node, resolve=True)
    with pytest.raises(type(theirs.value)) as ours:
        launch._logging_conf(node)
    assert str(ours.value) == str(theirs.value)


# ---------------------------------------------------------------- the config checks


def _typed(value):
    """value with every leaf's type, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _read(node, plain, path=""):
    """Every key of a DictConfig read by attribute (and .get) from it and from its PlainConfig: the same values."""
    from omegaconf import DictConfig, ListConfig

    for key in node.keys():
        a, b = getattr(node, key), getattr(plain, key)
        assert node.get(key) is a or node.get(key) == a
        assert plain.get(key) is b
        if isinstance(a, DictConfig):
            _read(a, b, f"{path}{key}.")
        elif isinstance(a, ListConfig):
            assert _typed(OmegaConf.to_container(a, resolve=True)) == _typed(b), path + key
        else:
            assert _typed(a) == _typed(b), path + key


def test_plain_configs_read_as_the_dictconfig(loader_and_master):
    from mmrun.compose import JobComposer
    from mmrun.config import PlainConfig, plain_config

    loader, master = loader_and_master
    composer = JobComposer(loader, master)
    extra = [["fees.maker=0", "exchange.taker_fee=0.002"], ["exchange.maker_fee=0.0005"], ["data.repair=[sort]", "pairs=null"]]
    for overrides in SEQUENCE + extra:
        cfg, _ = composer.compose_job(overrides)
        items, known_good = composer.job_hint(cfg)
        want = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert _typed(items()) == _typed(want), overrides
        for plain in (plain_config(cfg), plain_config(cfg, items)):
            assert isinstance(plain, PlainConfig)
            _read(cfg, plain)
        assert "strategy" not in known_good or not any(o.startswith("strategy.") for o in overrides)
    # a key the config lacks fails as the DictConfig's attribute access does
    plain = plain_config(cfg)
    for read in (lambda c: c.nothing, lambda c: c.sweep.nothing):
        with pytest.raises(Exception) as theirs:
            read(cfg)
        with pytest.raises(type(theirs.value)) as ours:
            read(plain)
        assert str(ours.value) == str(theirs.value)
    assert plain.sweep.get("nothing", 3) == cfg.sweep.get("nothing", 3) == 3


BAD = [
    ["spread=2"], ["capital=-1"], ["sizing.order_size_pct=0"], ["exchange.sim.prices.BTC=-5"], ["pairs=[]"],
    ["pairs=[BTC/USDT,BTC/USDT]"], ["pairs=[BTC/USDT@x]"], ["fills.latency_ms=1e9"], ["sweep.objective=nope"],
    ["sweep.top=0"], ["data.max_gap_s=-1"], ["mode=foo"], ["fees.maker=${nothing}"], ["fees.maker=???"],
    ["run.start=target"], ["pair=BTCUSDT"], ["mode=paper", "pair=ABC/USDT"], ["mode=paper", "exchange=binance", "exchange.fallbacks=[nope]"], ["+sizing.bogus=1"], ["+bogus=1"],
    ["+exchange.sim.bogus=1", "spread=3"], ["sweep.holdout=0.5", "mode=paper"], ["data.repair=[nope]"],
    ["exchange.sim.duration_s=1e9", "intervals.quote_s=0.001"], ["intervals.quote_s=0"], ["data.tick=-1"],
    ["strategy=avellaneda_stoikov", "strategy.gamma=-1"], ["sweep.fold_window=x"], ["fills.model=x"],
    ["exchange.sim.start=1900-01-01"], ["data.quotes=q.csv", "data.path=null"], ["spread=0.001"],
]


@pytest.mark.parametrize("bad", BAD, ids=[" ".join(b) for b in BAD])
def test_checks_on_plain_configs_fail_as_on_the_dictconfig(loader_and_master, monkeypatch, bad):
    from mmrun import config
    from mmrun.compose import JobComposer

    loader, master = loader_and_master
    composer = JobComposer(loader, master)

    def outcome(hinted: bool):
        cfg, _ = composer.compose_job(["mode=backtest", "data.path=x.csv"] + bad if "mode=paper" not in bad else bad)
        if hinted:
            config.hint_job(cfg, *composer.job_hint(cfg))
        try:
            return "ok", [s.pair for s in config.validate(cfg)]
        except Exception as exc:  # noqa: BLE001 - compared
            return type(exc).__name__, str(exc)

    ours = [outcome(True), outcome(False)]
    with monkeypatch.context() as m:
        m.setattr(config, "plain_config", lambda cfg, items=None: cfg)  # every key read from the DictConfig
        m.setattr(config, "_take_job_hint", lambda cfg: (None, frozenset()))
        theirs = outcome(True)
    assert ours == [theirs, theirs]
    if bad != ["spread=0.001"]:
        assert theirs[0] != "ok"


# ---------------------------------------------------------------- interpolations


def test_kept_parse_trees_resolve_as_fresh_ones(monkeypatch):
    import omegaconf._utils
    import omegaconf.base
    from omegaconf.errors import GrammarParseError

    from mmrun import compose

    def values():
        cfg = OmegaConf.create({
            "a": 1, "b": "x", "f": 0.5, "d": {"e": "${a}"},
            "s": "${b}/${a}.log", "n": "${d.e}", "esc": "\\${b} ${b}", "env": "${oc.env:HOME,none}",
            "sel": "${oc.select:missing,${b}}", "nested": "${oc.decode:'${f}'}", "lst": ["${b}", "${a}"],
        })
        return OmegaConf.to_container(cfg, resolve=True), [cfg.s, cfg.d.e, cfg.lst[0]]

    fresh = values()
    monkeypatch.setattr(omegaconf.base, "parse", omegaconf.base.parse)  # restored after the test
    monkeypatch.setattr(omegaconf._utils, "parse", omegaconf._utils.parse)
    compose.cache_interpolation_parses()
    compose.cache_interpolation_parses()
    assert values() == values() == fresh
    assert compose._TREES
    for _ in range(2):  # a string that does not parse fails every time
        with pytest.raises(GrammarParseError):
            OmegaConf.create({"x": "${oc.env:"})
