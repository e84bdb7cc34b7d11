"""Fixtures shared by test modules (pytest loads this file itself)."""

import logging

import pytest


@pytest.fixture
def restore_logging():
    """main() in this process lets Hydra configure logging (a console handler on this test's
    captured stderr, a file handler in its run folder): put the handlers back afterwards, so
    later tests do not log into closed streams. Modules that call main() in-process use it with
    `pytestmark = pytest.mark.usefixtures("restore_logging")`."""
    loggers = [logging.getLogger(), logging.getLogger("mmrun")]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        for h in lg.handlers[:]:
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture(scope="module")
def loader_and_master():
    """Hydra's config loader and the master config of a two-job backtest sweep (a module's
    composer tests compose jobs from them)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from mmrun.__main__ import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="mmrun"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["mode=backtest", "spread=0.001,0.002"], run_mode=RunMode.MULTIRUN)
        yield loader, master
