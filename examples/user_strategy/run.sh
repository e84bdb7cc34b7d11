#!/usr/bin/env bash
# Run the drift strategy of this folder with the installed `mmrun` (pip install mmrun, or a checkout's
# `pip install .`). Works from a copy of this folder anywhere; extra arguments go to mmrun, e.g.
#   bash run.sh mode=backtest run.max_ticks=2000
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# drift.py must be importable (strategy._target_: drift.DriftConfig), and strategy/drift.yaml found by Hydra
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
# options first (e.g. --multirun), then the overrides, then the strategy choice
exec mmrun --config-dir "$here" "$@" strategy=drift
