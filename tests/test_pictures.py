"""Pictures a trader can read: the run's axes in its currencies, fills aggregated on long runs,
every level's band, the sweep heatmap's scale and numbers, the Optuna trials picture."""

import numpy as np
import polars as pl
from matplotlib.colors import TwoSlopeNorm

from mmrun.recorder import fills_frame
from mmrun.record import EQUITY_SCHEMA, frame
from mmrun.report import (
    FILL_BINS, MAX_FILLS, colour_scale, draw, heatmap_picture, number_format, sweep_title, title_text, trials_picture,
)

PNG = b"\x89PNG\r\n\x1a\n"


def run_frames(n: int, fills_n: int):
    rng = np.random.default_rng(2)
    ts = 1_767_225_600_000 + np.arange(n, dtype=np.int64) * 5000
    mid = 60_000 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    base = np.abs(np.cumsum(rng.normal(0, 0.001, n)))
    equity = frame({"ts_ms": ts, "mid": mid, "bid_quoted": mid * 0.999, "ask_quoted": mid * 1.001, "base": base,
                    "quote": 10_000 - base * mid, "equity": np.full(n, 10_000.0)}, EQUITY_SCHEMA)
    rows = np.sort(rng.choice(n, fills_n, replace=False))
    side = np.where(rng.random(fills_n) < 0.5, 1.0, -1.0)
    fills = fills_frame(ts[rows], side, mid[rows], np.full(fills_n, 0.002), np.zeros(fills_n), base[rows],
                        np.zeros(fills_n))
    return equity, fills


def test_axes_are_in_the_pairs_currencies_and_legends_sit_above_the_panels():
    equity, fills = run_frames(2000, 100)
    fig = draw(equity, fills, "t", 10_000.0, pair="BTC/USDT")
    price, inv, value = fig.axes[:3]
    assert (price.get_ylabel(), inv.get_ylabel(), value.get_ylabel()) == ("price (USDT)", "inventory (BTC)", "value (USDT)")
    for ax in (price, value):
        legend = ax.get_legend()
        assert legend is not None and legend._loc == 3  # 'lower left' of a box anchored at the panel's top
        assert tuple(legend.get_bbox_to_anchor().transformed(ax.transAxes.inverted()).bounds[:2]) == (0.0, 1.0)


def test_many_fills_are_aggregated_per_time_bin_at_their_vwap():
    equity, fills = run_frames(20_000, 6_000)
    fig = draw(equity, fills, "t", 10_000.0, pair="BTC/USDT")
    price = fig.axes[0]
    markers = [c for c in price.collections if len(c.get_offsets())]
    assert len(markers) == 2 and all(len(c.get_offsets()) <= FILL_BINS for c in markers)
    labels = [t.get_text() for t in price.get_legend().get_texts()]
    assert any("VWAP per" in t for t in labels)
    few_equity, few = run_frames(2000, 100)
    fig = draw(few_equity, few, "t", 10_000.0)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 100 <= 2 * MAX_FILLS


def test_every_level_is_drawn_as_a_band_beyond_the_best_quote():
    equity, fills = run_frames(500, 10)
    fig = draw(equity, fills, "t", 10_000.0, pair="BTC/USDT", strategy={"levels": 3, "level_spread_step": 0.002})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "bid levels 2-3" in labels and "ask levels 2-3" in labels and "our best bid" in labels


def test_the_title_has_fees_and_an_early_stop():
    summary = {"pair": "BTC/USDT", "strategy": "symmetric", "exchange": "sim", "mode": "paper", "fees": 207.7,
               "trades": 2077, "status": "max_ticks", "ticks": 100}
    text = title_text(summary, {"name": "symmetric"}, 0.002)
    assert "2077 fills, fees 207.70 USDT" in text and "stopped early at run.max_ticks (100 cycles)" in text
    assert "stopped early" not in title_text(dict(summary, status="completed"), {"name": "symmetric"}, 0.002)
    # the order size, so that two jobs of a sweep differing only in it have different titles
    assert "symmetric (spread 0.20%, orders 1.50% of capital)" in title_text(summary, {"name": "symmetric"}, 0.002, 0.015)


def test_one_number_format_per_picture():
    assert number_format(np.array([0.139, -0.05, 0.0012])) == "{:,.3f}"
    assert number_format(np.array([12.5, 3.0])) == "{:,.1f}"
    assert number_format(np.array([154784.0, 3.0, np.nan])) == "{:,.0f}"
    assert number_format(np.array([np.nan])) == "{:.0f}"


def test_the_colour_scale_diverges_around_zero_only_with_both_signs():
    cmap, norm = colour_scale(np.array([-0.4, 0.1, 0.3]), "maximize")
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0.0 and cmap.name.startswith("RdYlGn")
    assert norm(0.0) == 0.5 and norm(-0.4) == 0.0 and norm(0.3) == 1.0
    cmap, norm = colour_scale(np.array([0.1, 0.3]), "maximize")
    assert not isinstance(norm, TwoSlopeNorm) and cmap.name.startswith("viridis")
    assert colour_scale(np.array([-1.0, 1.0]), "minimize")[0].name.startswith("RdYlGn_r")


def sweep_table():
    rows, job = [], 0
    for x in (0.0005, 0.001, 0.002):
        for y in (0.01, 0.02):
            rows.append({"job": job, "spread": x, "sizing.order_size_pct": y, "total_return_pct": (job - 2.5) / 10,
                         "pair": "BTC/USDT", "strategy": "symmetric", "exchange": "sim", "mode": "backtest",
                         "data_source": "btc_1m.csv"})
            job += 1
    t = pl.DataFrame(rows).sort("total_return_pct", descending=True)
    return t.with_columns(pl.Series("rank", [1, 2, 3, 4, 5, None], dtype=pl.Int64))


def test_the_heatmap_names_the_data_pair_and_strategy(tmp_path):
    table = sweep_table()
    assert sweep_title(table, "total_return_pct", "maximize") == (
        "total_return_pct (maximize)  ·  BTC/USDT  ·  symmetric  ·  btc_1m.csv (backtest)")
    path = tmp_path / "heatmap.png"
    assert heatmap_picture(table, ["spread", "sizing.order_size_pct"], "total_return_pct", "maximize", path)
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["heatmap.png"]


def test_an_optuna_search_gets_its_trials_picture(tmp_path):
    table = sweep_table()
    path = tmp_path / "trials.png"
    assert trials_picture(table, "total_return_pct", "maximize", path)
    assert path.read_bytes()[:8] == PNG
    assert not trials_picture(table.head(0), "total_return_pct", "maximize", tmp_path / "none.png")


def test_an_optuna_sweep_is_told_by_its_files(tmp_path):
    from mmrun.report import is_optuna_sweep

    assert not is_optuna_sweep(tmp_path)
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "hydra.yaml").write_text("sweeper:\n  _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n")
    assert not is_optuna_sweep(tmp_path)
    # a grid sweep's multirun.yaml names the Optuna sweeper's logger (mmrun's logging config), not its class
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra_plugins.mmrun_launcher.mmrun_launcher.MmrunSweeper\n"
        "  hydra_logging:\n    loggers:\n      hydra_plugins.hydra_optuna_sweeper._impl:\n        level: WARNING\n")
    assert not is_optuna_sweep(tmp_path)
    (tmp_path / "0" / ".hydra" / "hydra.yaml").write_text(
        "sweeper:\n  _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n")
    assert is_optuna_sweep(tmp_path)


def test_report_png_is_the_same_on_the_kept_figure_as_on_a_new_one(tmp_path):
    """write_report reuses one figure per process: every picture must equal a new figure's, byte for byte."""
    from mmrun import report
    from mmrun.strategies import resolve

    _, three = resolve({"name": "symmetric", "levels": 3, "level_spread_step": 0.001})
    small, big = run_frames(500, 40), run_frames(5000, 900)
    summary = {"pair": "BTC/USDT", "initial_value": 10_000.0, "status": "completed"}
    cases = [(*small, summary, None), (*big, {**summary, "initial_base": 0.05}, three),
             (small[0].head(0), small[1].head(0), summary, None), (*small, summary, three)]

    def picture(i, case):
        folder = tmp_path / str(i)
        folder.mkdir(exist_ok=True)
        return report.write_report(folder, case[0], case[1], case[2], case[3], 0.002).read_bytes()

    new = []
    for i, case in enumerate(cases):
        report._KEPT.clear()
        new.append(picture(i, case))
    assert all(p.startswith(PNG) for p in new) and len(set(new)) == len(new)
    kept = [picture(i, case) for i, case in enumerate(cases + cases[::-1])]
    assert kept == new + new[::-1]


def test_a_long_sweep_title_is_broken_between_its_parts_to_fit_the_picture():
    from mmrun.report import fitted_title

    title = "total_return_pct (maximize)  ·  BTC/USDT  ·  symmetric  ·  BTCUSDT-1m-2026-01.csv (backtest)"
    narrow = fitted_title(title, 6.8)
    assert narrow.split("\n") == ["total_return_pct (maximize)  ·  BTC/USDT  ·  symmetric", "BTCUSDT-1m-2026-01.csv (backtest)"]
    assert fitted_title(title, 14.0) == title  # a wide picture keeps one line
