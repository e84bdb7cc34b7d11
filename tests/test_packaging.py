"""The package as installed: a wheel carries the configs, and the installed tool runs from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF_FILES = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """mmrun's wheel, built offline from this checkout (no dependencies, no build isolation)."""
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy of the sources, so the build leaves nothing (build/, *.egg-info) in the checkout
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("mmrun", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (found,) = out.glob("mmrun-*.whl")
    return found


def test_the_wheel_carries_every_config_file_and_the_console_script(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n[len("mmrun/conf/"):] for n in names if n.startswith("mmrun/conf/") and n.endswith(".yaml"))
    assert shipped == CONF_FILES
    assert "config.yaml" in shipped and "strategy/symmetric.yaml" in shipped
    # every module of the package (a subpackage missing from pyproject's list is missing from the wheel;
    # an editable install in the same environment would hide that from the run below)
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "mmrun").rglob("*.py"))
    assert [s for s in sources if s not in names] == []
    # mmrun's sweep launcher, where Hydra's plugin discovery looks (the hydra_plugins namespace)
    assert "hydra_plugins/mmrun_launcher/mmrun_launcher.py" in names and "hydra_plugins/__init__.py" not in names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "[console_scripts]" in text and "mmrun = mmrun.__main__:main" in text


def test_the_installed_wheel_runs_from_another_folder(wheel, tmp_path):
    """Install the wheel into a folder of its own (its dependencies from this environment) and run it
    from an unrelated folder: configs are found inside the package, not in a checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    env.pop("HYDRA_FULL_ERROR", None)
    probe = subprocess.run([sys.executable, "-c", "import mmrun.__main__ as m; print(m.CONF_DIR)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, timeout=120, check=True)
    assert Path(probe.stdout.strip()) == (target / "mmrun" / "conf").resolve()
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "mmrun", "run.max_ticks=20", f"hydra.run.dir={run_dir}"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ticks"] == 20 and summary["status"] == "max_ticks"
    sweep_dir = tmp_path / "sweep"  # a sweep runs on the wheel's own launcher
    swept = subprocess.run([sys.executable, "-m", "mmrun", "--multirun", "run.max_ticks=20", "spread=0.001,0.002",
                            f"hydra.sweep.dir={sweep_dir}"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert swept.returncode == 0, swept.stderr
    assert "hydra_plugins.mmrun_launcher" in (sweep_dir / "multirun.yaml").read_text()
    # two jobs, both on the leaderboard (sweep.top=10): each writes its full folder at once
    assert (sweep_dir / "sweep_summary.csv").is_file() and (sweep_dir / "1" / "report.png").is_file()


def test_the_console_script_is_python_m_mmrun(tmp_path):
    script = Path(sys.executable).parent / "mmrun"
    assert script.is_file(), "pip install -e '.[test]' installs the mmrun console script"
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    helped = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "strategy" in helped.stdout
    run_dir = tmp_path / "run"
    done = subprocess.run([str(script), "run.max_ticks=10", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "summary.json").read_text())["ticks"] == 10
    bad = subprocess.run([str(script), "spread=2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("mmrun: error: spread=2")
