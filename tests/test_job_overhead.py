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


@pytest.fixture(scope="module")
def loader_and_master():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from mmrun.__main__ import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="mmrun"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["mode=backtest", "spread=0.001,0.002"], run_mode=RunMode.MULTIRUN)
        yield loader, master


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
