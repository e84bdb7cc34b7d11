"""A user's strategy outside the mmrun tree: examples/user_strategy copied elsewhere runs with the
installed `mmrun` through its run.sh, and an edit to the strategy's file reaches the compiled kernel
on the next run (the kernel's cache is keyed on every source it compiles from)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mmrun import engine
from mmrun.errors import ConfigError
from mmrun.strategies import resolve

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "user_strategy"


def run_sh(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", str(folder / "run.sh"), *args], cwd=folder.parent, env=env, capture_output=True,
                          text=True, timeout=600)


def first_quotes(run_dir: Path) -> tuple[float, float, float]:
    """(mid, bid, ask) of the first cycle's quotes in events.csv."""
    ev = pl.read_csv(run_dir / "events.csv").filter(pl.col("event_type") == "QUOTE")
    ts = ev["timestamp"][0]
    first = ev.filter(pl.col("timestamp") == ts)
    bid = first.filter(pl.col("side") == "buy")["price"][0]
    ask = first.filter(pl.col("side") == "sell")["price"][0] if (first["side"] == "sell").any() else float("nan")
    return first["mid"][0], bid, ask


def test_the_example_runs_from_a_copy_and_an_edit_recompiles_the_kernel(tmp_path):
    folder = tmp_path / "somewhere" / "my_strategy"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    first = run_sh(folder, "run.max_ticks=40", f"hydra.run.dir={tmp_path / 'run1'}")
    assert first.returncode == 0, first.stderr
    summary = json.loads((tmp_path / "run1" / "summary.json").read_text())
    assert summary["strategy"] == "drift" and summary["ticks"] == 40
    mid, bid, _ = first_quotes(tmp_path / "run1")
    # the first cycle has no drift yet: the bid sits half_spread (0.1 %) under the mid, floored to the tick
    assert bid <= mid * (1 - 0.001) and bid > mid * (1 - 0.001) - 0.1

    # the user edits the strategy: three times the half spread
    src = folder / "drift.py"
    text = src.read_text()
    assert text.count("return centre, p.half_spread, centre, p.half_spread, 1.0, 1.0") == 1
    src.write_text(text.replace("return centre, p.half_spread, centre, p.half_spread, 1.0, 1.0",
                                "return centre, 3.0 * p.half_spread, centre, 3.0 * p.half_spread, 1.0, 1.0"))
    second = run_sh(folder, "run.max_ticks=40", f"hydra.run.dir={tmp_path / 'run2'}")
    assert second.returncode == 0, second.stderr
    mid2, bid2, _ = first_quotes(tmp_path / "run2")
    assert mid2 == mid
    assert bid2 <= mid * (1 - 0.003) and bid2 > mid * (1 - 0.003) - 0.1  # the new code ran, not a cached kernel


def test_a_user_strategy_key_out_of_range_or_unknown_is_one_clear_error(tmp_path):
    folder = tmp_path / "my_strategy"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    bad = run_sh(folder, "strategy.half_spread=2", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "mmrun: error: strategy.half_spread=2.0 is out of range: allowed (0, 1) "
        "(fraction of the centre price on each side (0.001 = 0.1 %))"
    ]
    unknown = run_sh(folder, "+strategy.halfspread=0.1", f"hydra.run.dir={tmp_path / 'bad2'}")
    assert unknown.returncode == 2
    assert "strategy.halfspread: unknown key for strategy drift" in unknown.stderr
    assert "did you mean 'half_spread'?" in unknown.stderr


def test_a_target_that_cannot_be_imported_names_the_key():
    with pytest.raises(ConfigError, match=r"strategy._target_=nowhere.Thing: cannot import it .*PYTHONPATH"):
        resolve({"_target_": "nowhere.Thing", "name": "x"})


def test_make_params_defaults_come_from_the_schemas():
    from mmrun.strategies.avellaneda_stoikov import AvellanedaStoikovConfig

    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.001, "touch", None, 0.0, strategy="avellaneda_stoikov")
    d = AvellanedaStoikovConfig()
    assert (p["gamma"], p["kappa"], p["min_spread"], p["min_profit_threshold"]) == (
        d.gamma, d.kappa, d.min_spread, d.min_profit_threshold) == (20.0, 400.0, 0.005, 0.002)
    with pytest.raises(TypeError, match="has no key gama"):
        engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.001, "touch", None, 0.0, strategy="avellaneda_stoikov",
                           gama=1.0)


def test_an_edit_to_a_helper_file_the_anchor_calls_changes_the_kernel_key(tmp_path, monkeypatch):
    # the anchor calls njit helpers from two other files of the user's (one by name, one through
    # its module): both files are part of the kernel's cache key, so an edit to either recompiles
    (tmp_path / "kkey_scale.py").write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef scale(x):\n    return 2.0 * x\n")
    (tmp_path / "kkey_shift.py").write_text(
        "from numba import njit\n\n\n@njit(cache=True)\ndef shift(x):\n    return x + 0.0\n")
    (tmp_path / "kkey_strategy.py").write_text(
        "from dataclasses import dataclass\n\nfrom numba import njit\n\nimport kkey_shift\n"
        "from kkey_scale import scale\nfrom mmrun.strategies.base import Strategy, StrategyConfig, param\n\n\n"
        "@dataclass\nclass KeyConfig(StrategyConfig):\n    name: str = param('kkey', 'name', kernel=False)\n\n\n"
        "@njit(cache=True)\ndef anchor(p, s, best_bid, best_ask, mid, base, quote, cycle):\n"
        "    half = kkey_shift.shift(scale(0.001))\n    return best_bid, half, best_ask, half, 1.0, 1.0\n\n\n"
        "STRATEGY = Strategy(config=KeyConfig, anchor=anchor)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import kkey_strategy

    spec = kkey_strategy.STRATEGY
    names = sorted(Path(f).name for f in spec.source_files)
    assert names == ["kkey_scale.py", "kkey_shift.py", "kkey_strategy.py"]
    model = engine.FillModel.TOUCH
    source = engine._variant_source(spec, model)
    stems = [engine._variant_stem(spec, model, source)]
    for name, old, new in (("kkey_scale.py", "2.0 * x", "3.0 * x"), ("kkey_shift.py", "x + 0.0", "x + 1e-4")):
        f = tmp_path / name
        f.write_text(f.read_text().replace(old, new))
        stems.append(engine._variant_stem(spec, model, source))
    assert len(set(stems)) == 3
    # the built-ins: the anchor's file, and mmrun's quoting.py where the anchor calls into it
    from mmrun.strategies import built_in

    assert sorted(Path(f).name for f in built_in("inventory_skew").source_files) == ["inventory_skew.py", "quoting.py"]
