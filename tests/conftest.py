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
