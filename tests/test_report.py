"""report.png: written in every run folder, a real PNG, thinned for long runs, titled with the run."""

import json
import struct

import numpy as np
import polars as pl
import pytest

from clirun import run_mmrun
from mmrun.recorder import fills_frame
from mmrun.record import EQUITY_SCHEMA, frame
from mmrun.report import MAX_FILLS, MAX_POINTS, draw, title_text, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return len(data), width, height


def synthetic(n, fills_n):
    rng = np.random.default_rng(0)
    ts = np.arange(n, dtype=np.int64) * 5000 + 1_767_225_600_000
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    base = np.abs(np.cumsum(rng.normal(0, 0.1, n)))
    equity = frame(
        {"ts_ms": ts, "mid": mid, "bid_quoted": mid * 0.999, "ask_quoted": mid * 1.001, "base": base,
         "quote": 1000.0 - base * mid, "equity": np.full(n, 1000.0)},
        EQUITY_SCHEMA,
    )
    rows = np.sort(rng.choice(n, fills_n, replace=False))
    side = np.where(np.arange(fills_n) % 2 == 0, 1.0, -1.0)
    fills = fills_frame(ts[rows], side, mid[rows], np.ones(fills_n), np.zeros(fills_n), base[rows], np.zeros(fills_n))
    return equity, fills


SUMMARY = {"pair": "ABC/USDT", "strategy": "inventory_skew", "exchange": "sim", "mode": "backtest",
           "fill_model": "touch", "total_return_pct": 0.5, "pnl_vs_hold": 5.0, "trades": 2, "initial_value": 1000.0}


def test_write_report_writes_a_png(tmp_path):
    equity, fills = synthetic(500, 40)
    path = write_report(tmp_path, equity, fills, SUMMARY)
    size, width, height = png_size(path)
    assert path == tmp_path / "report.png"
    assert size > 20_000 and (width, height) == (1100, 850)
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary file left


def test_long_runs_are_thinned():
    equity, fills = synthetic(200_000, 30_000)
    fig = draw(equity, fills, "t", 1000.0)
    ax_price = fig.axes[0]
    assert max(len(line.get_xdata()) for line in ax_price.get_lines()) <= MAX_POINTS
    per_side = [len(c.get_offsets()) for c in ax_price.collections]
    assert len(per_side) == 2 and max(per_side) <= MAX_FILLS


def test_empty_run_still_draws(tmp_path):
    equity, fills = synthetic(10, 0)
    path = write_report(tmp_path, equity.head(0), fills, SUMMARY)
    assert png_size(path)[0] > 5_000


def test_title_names_pair_strategy_and_key_parameters():
    strategy = {"name": "avellaneda_stoikov", "gamma": 20.0, "kappa": 400.0, "min_spread": 0.005, "horizon": "rolling"}
    text = title_text(dict(SUMMARY, strategy="avellaneda_stoikov"), strategy, 0.002)
    assert text.splitlines()[0] == (
        "ABC/USDT  ·  avellaneda_stoikov (γ 20, κ 400, min spread 0.50%, horizon rolling, fills=touch)  ·  sim backtest"
    )
    assert "return +0.500 %" in text.splitlines()[1]
    text = title_text(SUMMARY, {"name": "inventory_skew", "target_base_share": 0.5, "rebalance_threshold": 0.1}, 0.002)
    assert "inventory_skew (spread 0.20%, target 50%, band 10%, fills=touch)" in text


def test_every_run_folder_gets_a_report(tmp_path):
    out = tmp_path / "run"
    proc = run_mmrun("mode=backtest", "strategy=avellaneda_stoikov", "run.max_ticks=300", "pairs=[BTC/USDT,ETH/USDT]",
                     run_dir=out)
    assert proc.returncode == 0, proc.stderr
    for pair in ("BTC-USDT", "ETH-USDT"):
        assert png_size(out / pair / "report.png")[0] > 20_000
        summary = json.loads((out / pair / "summary.json").read_text())
        assert summary["strategy"] == "avellaneda_stoikov"
        assert "markout_10_bps" in summary and "sortino" in summary


def test_report_png_is_rgb_and_the_same_for_the_same_run(tmp_path):
    """An opaque picture: no alpha channel (PNG colour type 2); same inputs, same bytes."""
    equity, fills = synthetic(800, 60)
    first = write_report(tmp_path, equity, fills, SUMMARY).read_bytes()
    assert first[25] == 2  # IHDR colour type: truecolour, no alpha
    assert write_report(tmp_path, equity, fills, SUMMARY).read_bytes() == first


def labelled_figure(price_scale):
    equity, fills = synthetic(1500, 80)
    equity = equity.with_columns([pl.col(c) * price_scale for c in ("mid", "bid_quoted", "ask_quoted")])
    fig = draw(equity, fills, "t", 1000.0, pair="ABC/USDT")
    fig.canvas.draw()
    return fig


def drawn_tick_labels(axis, view):
    """Extents of the tick labels drawn: those of ticks in view (an axis keeps others, not drawn)."""
    lo, hi = sorted(view)
    return [t.label1.get_window_extent() for t in axis.get_major_ticks()
            if lo <= t.get_loc() <= hi and t.label1.get_visible() and t.label1.get_text()]


@pytest.mark.parametrize("price_scale", [1.0, 2_000.0, 1e-5])
def test_axis_labels_sit_beside_their_tick_labels(price_scale):
    """Each y label just left of its widest tick label (6-digit prices, 0.00001234 ones too), the
    time label just below the time tick labels: labelpad apart, as matplotlib places them."""
    fig = labelled_figure(price_scale)
    px = fig.dpi / 72.0
    for ax in fig.axes:
        ticks = drawn_tick_labels(ax.yaxis, ax.get_ylim())
        label = ax.yaxis.label.get_window_extent()
        assert ticks and abs(min(b.x0 for b in ticks) - label.x1 - ax.yaxis.labelpad * px) < 0.01
        assert label.x0 > 0  # inside the picture
    bottom = fig.axes[-1]
    ticks = drawn_tick_labels(bottom.xaxis, bottom.get_xlim())
    label = bottom.xaxis.label.get_window_extent()
    assert abs(min(b.y0 for b in ticks) - label.y1 - bottom.xaxis.labelpad * px) < 0.01


def legend_labels(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_buys_and_sells_share_one_legend_entry():
    equity, fills = synthetic(1500, 80)
    assert legend_labels(draw(equity, fills, "t", 1000.0))[-1] == "buys / sells (40 / 40; size: amount)"
    only_buys = fills.filter(pl.col("side") == "buy")
    assert legend_labels(draw(equity, only_buys, "t", 1000.0))[-1] == "buys (40; size: amount)"
    # one side aggregated into VWAP bins, the other drawn one by one: each its own entry
    many, few = synthetic(20_000, 2 * MAX_FILLS + 200)[1], fills.filter(pl.col("side") == "sell")
    mixed = pl.concat([many.filter(pl.col("side") == "buy"), few]).sort("ts_ms")
    labels = legend_labels(draw(synthetic(20_000, 10)[0], mixed, "t", 1000.0))
    assert labels[-2].startswith("buys (500, VWAP per ") and labels[-1] == "sells (40; size: amount)"


def test_a_heatmap_drawn_as_a_scatter_has_the_usual_size(tmp_path):
    """More values per axis than cells are drawn for: a scatter 900 x 550 px, not a strip as wide as
    32 cells would be (3,340 px); an opaque RGB PNG like report.png."""
    from mmrun.report import heatmap_picture

    rows = [{"job": i, "spread": 0.0005 + 0.0002 * (i // 2), "size": 0.01 * (1 + i % 2), "total_return_pct": float(i % 7 - 3),
             "rank": i + 1} for i in range(64)]
    path = tmp_path / "heatmap.png"
    assert heatmap_picture(pl.DataFrame(rows), ["spread", "size"], "total_return_pct", "maximize", path, max_grid_axis=30)
    size, width, height = png_size(path)
    assert (width, height) == (900, 550) and path.read_bytes()[25] == 2


def test_a_long_title_is_broken_between_its_parts_to_fit_over_the_panels():
    """An early stop's note and a long data file name would run past the picture's edges: each
    title line is broken between its '  ·  ' parts, the panels lowered for the third line, the
    price panel's legend still under the title."""
    equity, fills = synthetic(1500, 80)
    long = dict(SUMMARY, status="max_ticks", ticks=1500, exchange="file", data_format="Parquet",
                data_source="BTCUSDT-1m-2024-01-to-2025-06-binance-spot-with-a-long-name.parquet")
    fig = draw(equity, fills, title_text(long, {"name": "inventory_skew", "levels": 3}, 0.002), 1000.0, pair="ABC/USDT")
    fig.canvas.draw()
    title = fig._suptitle
    box, legend = title.get_window_extent(), fig.axes[0].get_legend().get_window_extent()
    assert title.get_text().count("\n") >= 2 and title.get_text().split("\n")[-1].startswith("stopped early")
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width and legend.y1 < box.y0
    short = draw(equity, fills, title_text(SUMMARY), 1000.0)
    assert short._suptitle.get_text().count("\n") == 1 and short.subplotpars.top == 0.885
