"""Hand-computed quotes for each strategy (symmetric, inventory_skew, avellaneda_stoikov), order
levels and the minimum-profit rule, through the pure functions and through the engine kernel."""

import math

import numpy as np
import pytest

from mmrun import engine
from mmrun.quoting import base_share, grid, grid_ceil, grid_floor, ladder
from mmrun.strategies.avellaneda_stoikov import arrival_spread, horizon_left, reservation_and_spread
from mmrun.strategies.inventory_skew import lean, skew_excess


def avellaneda_stoikov(mid, q, gamma, kappa, sigma2, tau, min_spread):
    return reservation_and_spread(mid, q, gamma, arrival_spread(gamma, kappa), sigma2, tau, min_spread)

NAN = math.nan


def quote_once(base=0.0, quote=10_000.0, bid=100.0, ask=100.0, last=100.0, fee=0.0, tick=0.0, **kw):
    """The quotes one engine step places from an empty book (touch: nothing executes)."""
    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, fee, "touch", None, tick, **kw)
    state = engine.make_state(base, quote, p)
    quotes = engine.empty_quotes(engine.levels_of(p))
    fills = np.empty((engine.max_fills(engine.levels_of(p)), engine.N_FILL))
    n = engine.step(p, state, quotes, bid, ask, last, NAN, NAN, 0.0, fills)
    assert n == 0
    return [(q[engine.Q_SIDE], q[engine.Q_PRICE], q[engine.Q_AMOUNT]) for q in quotes], state


def approx_rows(rows, want):
    assert len(rows) == len(want)
    for got, exp in zip(rows, want):
        assert got[0] == exp[0]
        assert got[1] == pytest.approx(exp[1], rel=1e-12)
        assert got[2] == pytest.approx(exp[2], rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------- symmetric and levels


def test_symmetric_single_level_is_the_original_rule():
    # size = 10,000 x 1 % / 100 = 1; bid = 100 x (1 - 0.001), ask = 100 x (1 + 0.001)
    rows, _ = quote_once()
    approx_rows(rows, [(1.0, 99.9, 1.0), (-1.0, 100.1, 0.0)])  # no base yet: the ask cannot rest


def test_symmetric_is_bit_identical_to_the_original_formula():
    rows, _ = quote_once(base=5.0, bid=61234.5, ask=61234.6, last=61234.55, tick=0.1)
    half = 0.002 / 2
    assert rows[0][1] == grid_floor(61234.5 * (1 - half), *grid(0.1))
    assert rows[1][1] == grid_ceil(61234.6 * (1 + half), *grid(0.1))
    assert rows[0][2] == 10_000.0 * 0.01 / 61234.55


def test_levels_widen_by_the_spread_step_and_grow_by_the_size_step():
    # level k: spread 0.002 + k x 0.002 -> bids 99.9, 99.8, 99.7, asks 100.1, 100.2, 100.3;
    # sizes 1 x (1 + k x 0.5) = 1, 1.5, 2
    rows, _ = quote_once(base=10.0, levels=3, level_spread_step=0.002, level_size_step=0.5)
    approx_rows(
        rows,
        [(1.0, 99.9, 1.0), (-1.0, 100.1, 1.0), (1.0, 99.8, 1.5), (-1.0, 100.2, 1.5), (1.0, 99.7, 2.0), (-1.0, 100.3, 2.0)],
    )


def test_level_sizes_are_capped_at_the_max_exposure():
    # size_step 10: level 1 wants 11 base units, level 2 wants 21; the cap is 10,000 x 0.2 / 100 = 20
    rows, _ = quote_once(base=100.0, levels=3, level_spread_step=0.002, level_size_step=10.0)
    assert [r[2] for r in rows] == [1.0, 1.0, 11.0, 11.0, 20.0, 20.0]


def test_levels_rest_only_while_the_balance_covers_them_in_order():
    # 150 quote: the first bid (99.9 x 1) rests, the second (99.8 x 1) no longer fits;
    # 1.5 base: the first ask (1) rests, the second (1) does not
    rows, _ = quote_once(base=1.5, quote=150.0, levels=2, level_spread_step=0.002)
    assert [r[2] for r in rows] == [1.0, 1.0, 0.0, 0.0]


def test_min_profit_skips_a_pair_too_thin_after_fees_and_keeps_wider_levels():
    # fee 0.1 %: level 0 (99.8 / 100.2) keeps (100.2 x 0.999 - 99.8 x 1.001) / 100 = 0.2 %,
    # level 1 (99.7 / 100.3) keeps 0.4 %; threshold 0.25 %: level 0 is not quoted
    rows, _ = quote_once(
        base=10.0, fee=0.001, levels=2, level_spread_step=0.002, min_profit_threshold=0.0025,
        strategy="symmetric",
    )
    p = engine.make_params(0.004, 0.01, 0.2, 10_000.0, 0.001, "touch", None, 0.0, levels=2,
                           level_spread_step=0.002, min_profit_threshold=0.0025)
    state = engine.make_state(10.0, 10_000.0, p)
    quotes = engine.empty_quotes(2)
    engine.step(p, state, quotes, 100.0, 100.0, 100.0, NAN, NAN, 0.0, np.empty((5, engine.N_FILL)))
    assert list(quotes[:, engine.Q_AMOUNT]) == [0.0, 0.0, 1.0, 1.0]
    assert quotes[2, engine.Q_PRICE] == pytest.approx(99.7) and quotes[3, engine.Q_PRICE] == pytest.approx(100.3)
    # threshold 0 (off): a pair with no profit after fees is still quoted, as the original did
    rows, _ = quote_once(base=10.0, fee=0.001)
    assert rows[0][2] == 1.0 and rows[1][2] == 1.0


def test_ladder_directly():
    q = np.zeros((2, 3))
    # anchor 100 / 100, offsets 0.001; cap 2,000 quote / last 100 = 20
    ladder(q, 100.0, 100.0, 100.0, 0.001, 100.0, 0.001, 1.0, 1.0, 1.0, 2000.0, 100.0, 1, 0.0, 0.0, *grid(0.5))
    # tick 0.5: the bid floors to 99.5, the ask ceils to 100.5
    assert q.tolist() == [[1.0, 99.5, 1.0], [-1.0, 100.5, 1.0]]


# ---------------------------------------------------------------- inventory_skew


@pytest.mark.parametrize(
    "share, want",
    [
        (0.5, 0.0),  # on target
        (0.6, 0.0),  # at the band's edge
        (0.4, 0.0),
        (0.8, 0.5),  # (0.3 - 0.1) / (1 - 0.5 - 0.1)
        (1.0, 1.0),  # all base
        (0.0, -1.0),  # all quote
        (0.2, -0.5),  # (-0.3 + 0.1) / (0.5 - 0.1)
        (NAN, 0.0),  # no portfolio: on target
    ],
)
def test_skew_excess(share, want):
    assert skew_excess(share, 0.5, 0.1) == pytest.approx(want, abs=1e-15)


def test_base_share():
    assert base_share(1.0, 100.0, 100.0) == 0.5
    assert base_share(0.0, 100.0, 100.0) == 0.0
    assert math.isnan(base_share(0.0, 0.0, 100.0))


def test_inventory_skew_anchor_tilts_prices_and_sizes():
    # excess 0.5, spread 0.002: bid offset 0.001 x 1.5, ask offset 0.001 x 0.5; sizes x0.5, x1.5
    assert lean(100.0, 100.0, 0.002, 0.5, 1.0, 1.0) == pytest.approx(
        (100.0, 0.0015, 100.0, 0.0005, 0.5, 1.5)
    )
    # inside the band it is exactly the symmetric anchor
    assert lean(100.0, 100.1, 0.002, 0.0, 1.0, 1.0) == (100.0, 0.001, 100.1, 0.001, 1.0, 1.0)


SKEW = dict(strategy="inventory_skew", target_base_share=0.5, rebalance_threshold=0.1)


def test_inventory_skew_empty_inventory_joins_the_bid_with_twice_the_size():
    # all quote: excess -1 -> bid at best_bid (offset 0), size 2; ask offset 0.002 with size 0
    rows, _ = quote_once(**SKEW)
    approx_rows(rows, [(1.0, 100.0, 2.0), (-1.0, 100.2, 0.0)])


def test_inventory_skew_full_inventory_joins_the_ask_and_stops_buying():
    # all base (50 x 100 = 5,000): excess +1 -> ask at best_ask with size 2, bid 99.8 with size 0
    rows, _ = quote_once(base=50.0, quote=0.0, **SKEW)
    approx_rows(rows, [(1.0, 99.8, 0.0), (-1.0, 100.0, 2.0)])


def test_inventory_skew_inside_the_band_quotes_symmetric():
    # 55 % in base: inside 50 % +- 10 %
    rows, _ = quote_once(base=55.0, quote=4500.0, **SKEW)
    sym, _ = quote_once(base=55.0, quote=4500.0)
    assert rows == sym
    approx_rows(rows, [(1.0, 99.9, 1.0), (-1.0, 100.1, 1.0)])


def test_inventory_skew_partial_excess():
    # 80 % in base (80 x 100 vs 2,000 quote): excess 0.5 -> bid 100 x (1 - 0.0015) size 0.5,
    # ask 100 x (1 + 0.0005) size 1.5
    rows, _ = quote_once(base=80.0, quote=2000.0, **SKEW)
    approx_rows(rows, [(1.0, 99.85, 0.5), (-1.0, 100.05, 1.5)])


# ---------------------------------------------------------------- avellaneda_stoikov


def test_avellaneda_stoikov_formula():
    # q 0.5, gamma 2, sigma2 1e-6 /s, tau 1000 s: risk = 2 x 1e-6 x 1000 = 0.002
    # r = 100 x (1 - 0.5 x 0.002) = 99.9; spread = 0.002 + (2 / 2) x ln(1 + 2 / 1000)
    r, spread = avellaneda_stoikov(100.0, 0.5, 2.0, 1000.0, 1e-6, 1000.0, 0.0)
    assert r == pytest.approx(99.9, rel=1e-15)
    assert spread == pytest.approx(0.002 + math.log(1.002), rel=1e-15)
    # the floor applies
    assert avellaneda_stoikov(100.0, 0.5, 2.0, 1000.0, 1e-6, 1000.0, 0.01)[1] == 0.01


def test_avellaneda_stoikov_zero_volatility():
    # no volatility: r = mid whatever the inventory, spread = the arrival term only
    for q in (-0.5, 0.0, 0.5):
        r, spread = avellaneda_stoikov(100.0, q, 2.0, 1000.0, 0.0, 3600.0, 0.0)
        assert r == 100.0 and spread == pytest.approx(math.log(1.002), rel=1e-15)


AS = dict(strategy="avellaneda_stoikov", target_base_share=0.5, gamma=2.0, kappa=1000.0, min_spread=0.004)


def test_avellaneda_stoikov_in_the_kernel_with_a_flat_market():
    # the first row has no return yet: zero volatility; arrival term ln(1.002) = 0.1998 % < the
    # floor 0.4 % -> bid 100 x 0.998, ask 100 x 1.002 whatever the inventory (empty here)
    rows, state = quote_once(**AS)
    approx_rows(rows, [(1.0, 99.8, 1.0), (-1.0, 100.2, 0.0)])
    assert state["var"] == 0.0 and state["prev_mid"] == 100.0


def test_avellaneda_stoikov_full_inventory_leans_down_and_never_crosses():
    # sigma2 seeded by hand: var per cycle 5e-6 over dt 5 s = 1e-6 /s; rolling tau 1000 s;
    # all base -> q = 0.5; r = 100 x (1 - 0.5 x 2 x 1e-6 x 1000) = 99.9
    # spread = 0.002 + ln(1.002) = 0.0039980026..., below the floor 0.004 -> 0.004
    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0, horizon_s=1000.0, dt_s=5.0, **AS)
    state = engine.make_state(100.0, 0.0, p)
    state["prev_mid"] = 100.0
    state["var"] = 5e-6
    state["returns"] = 1.0
    quotes = engine.empty_quotes()
    engine.step(p, state, quotes, 100.0, 100.0, 100.0, NAN, NAN, 0.0, np.empty((3, engine.N_FILL)))
    # a flat row: r = 0, so var = 5e-6 + alpha x (0 - 5e-6) with alpha = 2 / 61
    alpha = 2.0 / 61.0
    var = 5e-6 + alpha * (0.0 - 5e-6)
    assert state["var"] == pytest.approx(var, rel=1e-15)
    r = 100.0 * (1 - 0.5 * 2.0 * (var / 5.0) * 1000.0)
    assert quotes[0, engine.Q_PRICE] == pytest.approx(r * (1 - 0.002), rel=1e-12)
    assert quotes[1, engine.Q_PRICE] == pytest.approx(r * (1 + 0.002), rel=1e-12)
    assert quotes[0, engine.Q_AMOUNT] == 0.0  # no quote currency left to buy with
    assert quotes[1, engine.Q_AMOUNT] == 1.0


def test_avellaneda_stoikov_quotes_never_cross_a_wide_book():
    # book 99.5 / 100.5, zero volatility: r = 100, spread 0.4 % -> 99.8 / 100.2 would sit inside
    # the book: the bid is lowered to best_bid and the ask raised to best_ask
    rows, _ = quote_once(base=10.0, bid=99.5, ask=100.5, **AS)
    approx_rows(rows, [(1.0, 99.5, 1.0), (-1.0, 100.5, 1.0)])


def test_volatility_is_estimated_online_from_the_mids():
    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0, vol_window=3.0, **AS)
    state = engine.make_state(0.0, 10_000.0, p)
    quotes = engine.empty_quotes()
    buf = np.empty((3, engine.N_FILL))
    for mid in (100.0, 101.0, 100.0):
        engine.step(p, state, quotes, mid, mid, mid, NAN, NAN, 0.0, buf)
    r1, r2 = 101.0 / 100.0 - 1.0, 100.0 / 101.0 - 1.0  # simple returns
    alpha = 2.0 / (3.0 + 1.0)
    assert state["var"] == pytest.approx(r1 * r1 + alpha * (r2 * r2 - r1 * r1), rel=1e-14)
    assert state["returns"] == 2.0 and state["cycles"] == 3.0


def test_finite_horizon_counts_down_and_restarts():
    assert horizon_left(3600.0, True, 10.0, 60.0) == 3600.0  # rolling
    assert horizon_left(3600.0, False, 0.0, 60.0) == 3600.0
    assert horizon_left(3600.0, False, 10.0, 60.0) == 3000.0
    assert horizon_left(3600.0, False, 60.0, 60.0) == 3600.0  # a new horizon starts
    assert horizon_left(3600.0, False, 75.0, 60.0) == 2700.0


# ---------------------------------------------------------------- one engine


@pytest.mark.parametrize("strategy", ["symmetric", "inventory_skew", "avellaneda_stoikov"])
@pytest.mark.parametrize("fill_model", ["touch", "instant"])
def test_bulk_and_step_give_the_same_fills_for_every_strategy(strategy, fill_model):
    rng = np.random.default_rng(3)
    n = 400
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    bid, ask = mid - 0.01, mid + 0.01
    low, high = mid * (1 - np.abs(rng.normal(0, 0.002, n))), mid * (1 + np.abs(rng.normal(0, 0.002, n)))
    vol = rng.lognormal(0, 1, n)
    kw = dict(strategy=strategy, levels=2, level_spread_step=0.001, level_size_step=0.5, min_profit_threshold=0.0005)
    if strategy == "avellaneda_stoikov":  # a narrow spread, so the test market trades
        kw.update(gamma=0.1, kappa=1000.0, min_spread=0.0)
    p = engine.make_params(0.002, 0.05, 0.2, 10_000.0, 0.0005, fill_model, None, 0.01, **kw)
    s_bulk = engine.make_state(20.0, 8_000.0, p)
    _, fills, rows, base, quote = engine.run_bulk(p, s_bulk, bid, ask, mid, low, high, vol)
    s_step = engine.make_state(20.0, 8_000.0, p)
    quotes = engine.empty_quotes(2)
    buf = np.empty((engine.max_fills(2), engine.N_FILL))
    got = []
    for i in range(n):
        m = engine.step(p, s_step, quotes, bid[i], ask[i], mid[i], low[i], high[i], vol[i], buf)
        got.extend(buf[:m].tolist())
        assert (s_step["base"], s_step["quote"]) == (base[i], quote[i])
    assert np.array_equal(np.array(got).reshape(-1, engine.N_FILL), fills)
    assert len(fills) > 20  # the test market trades
    assert (fills[:, engine.F_BASE] >= 0).all() and (fills[:, engine.F_QUOTE] >= -1e-9).all()
    assert s_step.item() == s_bulk.item()


def test_step_rejects_a_fill_buffer_without_room():
    p = engine.make_params(0.002, 0.01, 0.2, 10_000.0, 0.0, "touch", None, 0.0, levels=2)
    with pytest.raises(ValueError, match="max_fills"):
        engine.step(p, engine.make_state(0, 1000.0), engine.empty_quotes(2), 100.0, 100.0, 100.0, NAN, NAN, 0.0,
                    np.empty((4, engine.N_FILL)))


# ---------------------------------------------------------------- from the command line


@pytest.mark.parametrize(
    "strategy, extra",
    [
        ("symmetric", ["strategy.levels=2"]),
        ("inventory_skew", ["spread=0.003", "strategy.rebalance_threshold=0.05"]),
        ("avellaneda_stoikov", ["strategy.min_spread=0.002", "strategy.min_profit_threshold=0.0"]),
    ],
)
def test_each_strategy_runs_on_the_sim_and_replays_its_data_file_the_same(tmp_path, strategy, extra):
    import json

    from clirun import run_mmrun

    args = [f"strategy={strategy}", "run.max_ticks=400", *extra]
    paper = run_mmrun(*args, run_dir=tmp_path / "paper")
    assert paper.returncode == 0, paper.stderr
    replay = run_mmrun("mode=backtest", f"data.path={tmp_path / 'paper' / 'market.parquet'}", *args,
                       run_dir=tmp_path / "replay")
    assert replay.returncode == 0, replay.stderr
    a = json.loads((tmp_path / "paper" / "summary.json").read_text())
    b = json.loads((tmp_path / "replay" / "summary.json").read_text())
    assert a["strategy"] == b["strategy"] == strategy
    assert a["trades"] > 0
    for key in ("trades", "buys", "sells", "final_value", "final_base", "fees", "markout_1_bps"):
        assert a[key] == b[key], key
