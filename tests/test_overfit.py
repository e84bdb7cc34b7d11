"""The deflated Sharpe ratio and the PBO against the papers' worked figures and hand-computed cases."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import polars as pl
import pytest
from scipy.stats import rankdata

from mmrun.overfit import (
    deflated_sharpe,
    expected_max_sharpe,
    moments,
    pbo_cscv,
    probabilistic_sharpe,
    sharpe_per_period,
    verdict,
)


# ---------------------------------------------------------------- deflated Sharpe ratio


def test_paper_numerical_example():
    # Bailey & López de Prado (2014), section 5: N = 100 trials, annualised variance of the
    # trials' Sharpe ratios 1/2, best annualised SR 2.5 over T = 1250 daily returns (5 years of
    # 250 days), skewness -3, kurtosis 10 -> E[max SR] = 0.1132 per day, DSR = 0.9004.
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = probabilistic_sharpe(2.5 / math.sqrt(250), sr0, 1250, skew=-3.0, kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-5)


def test_expected_max_sharpe_hand_values():
    # N = 2: (1 - g) Z^-1(0.5) + g Z^-1(1 - 1/(2e)) = 0.5772157 x 0.9005... (Z^-1(0.816060) = 0.900)
    from scipy.stats import norm

    assert expected_max_sharpe(2, 1.0) == pytest.approx(0.5772156649015329 * norm.ppf(1 - 1 / (2 * math.e)))
    assert expected_max_sharpe(1, 4.0) == 0.0
    # scales with the standard deviation of the trials' Sharpe ratios
    assert expected_max_sharpe(50, 4.0) == pytest.approx(2 * expected_max_sharpe(50, 1.0))
    assert expected_max_sharpe(1000, 1.0) > expected_max_sharpe(100, 1.0) > expected_max_sharpe(10, 1.0)
    with pytest.raises(ValueError):
        expected_max_sharpe(0, 1.0)


def test_psr_normal_returns_hand_value():
    # SR 0.1 per period, T = 101, normal moments: z = 0.1 x 10 / sqrt(1 + 2/4 x 0.01) = 0.997509...
    z = 0.1 * 10 / math.sqrt(1 + 0.5 * 0.01)
    assert probabilistic_sharpe(0.1, 0.0, 101) == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))))
    assert probabilistic_sharpe(0.0, 0.0, 50) == pytest.approx(0.5)


def test_deflated_sharpe_from_returns():
    rng = np.random.default_rng(3)
    trials = rng.normal(0.0005, 0.01, size=(500, 20))
    srs = sharpe_per_period(trials)
    best = int(np.argmax(srs))
    d = deflated_sharpe(trials[:, best], srs)
    skew, kurt = moments(trials[:, best])
    sr0 = expected_max_sharpe(20, float(np.var(srs, ddof=1)))
    assert d.benchmark == pytest.approx(sr0)
    assert d.dsr == pytest.approx(probabilistic_sharpe(srs[best], sr0, 500, skew, kurt))
    assert (d.n_trials, d.n_obs) == (20, 500)
    # more trials made than seen (an Optuna study): a higher bar, a lower DSR
    assert deflated_sharpe(trials[:, best], srs, n_trials=200).dsr < d.dsr
    # one trial: nothing to deflate, the PSR against 0
    one = deflated_sharpe(trials[:, 0], srs[:1])
    assert one.benchmark == 0.0 and one.dsr == pytest.approx(probabilistic_sharpe(srs[0], 0.0, 500, *moments(trials[:, 0])))


def test_sharpe_per_period_flat_and_columns():
    r = np.array([[0.01, 0.0], [0.03, 0.0], [0.02, 0.0]])
    assert sharpe_per_period(r).tolist() == pytest.approx([0.02 / 0.01, 0.0])
    assert moments(np.zeros(10)) == (0.0, 3.0)


# ---------------------------------------------------------------- PBO by CSCV


def test_pbo_hand_computed_example():
    # T = 4 periods, S = 4 blocks of one period, N = 2 trials. On two returns a, b the Sharpe
    # ratio is (a + b) / (sqrt(2) |a - b|), so the trials rank by (a + b) / |a - b|:
    #   X = [1, 2, 3, 4]:       {0,1} 3, {0,2} 2, {0,3} 1.667, {1,2} 5, {1,3} 3, {2,3} 7
    #   Y = [2.5, 1, 4, 9]:     {0,1} 2.333, {0,2} 4.333, {0,3} 1.769, {1,2} 1.667, {1,3} 1.25, {2,3} 2.6
    # in-sample set -> best -> its out-of-sample rank (2 = best of 2):
    #   {0,1} X -> {2,3} X 7 > 2.6: 2      {0,2} Y -> {1,3} 1.25 < 3: 1     {0,3} Y -> {1,2} 1.667 < 5: 1
    #   {1,2} X -> {0,3} 1.667 < 1.769: 1  {1,3} X -> {0,2} 2 < 4.333: 1    {2,3} X -> {0,1} 3 > 2.333: 2
    # w = rank / 3, lambda = ln(w / (1 - w)) = +-ln 2; PBO = 4 / 6.
    m = np.array([[1, 2.5], [2, 1], [3, 4], [4, 9]]) / 100
    res = pbo_cscv(m, n_splits=4)
    assert res.pbo == pytest.approx(4 / 6)
    assert (res.n_splits, res.n_combinations, res.all_combinations, res.periods_used) == (4, 6, True, 4)
    assert res.is_best.tolist() == [0, 1, 1, 0, 0, 0]
    assert res.logits == pytest.approx([math.log(2), -math.log(2), -math.log(2), -math.log(2), -math.log(2), math.log(2)])


def _pbo_by_loops(m: np.ndarray, s: int) -> float:
    """The paper's steps written out one combination at a time (Bailey et al. 2017, 2.2)."""
    t, n = m.shape
    m = m[t % s:]
    blocks = np.split(m, s)
    lam = []
    for c in combinations(range(s), s // 2):
        j = np.concatenate([blocks[i] for i in c])
        jbar = np.concatenate([blocks[i] for i in range(s) if i not in c])
        r_is = j.mean(0) / j.std(0, ddof=1)
        r_oos = jbar.mean(0) / jbar.std(0, ddof=1)
        best = int(np.argmax(r_is))
        w = rankdata(r_oos)[best] / (n + 1)
        lam.append(math.log(w / (1 - w)))
    return float(np.mean(np.array(lam) <= 0))


def test_pbo_matches_the_steps_one_combination_at_a_time():
    rng = np.random.default_rng(11)
    m = rng.normal(0, 0.01, size=(203, 7))  # 203 mod 8 = 3 rows dropped
    res = pbo_cscv(m, n_splits=8)
    assert res.periods_used == 200 and res.n_combinations == 70
    assert res.pbo == pytest.approx(_pbo_by_loops(m, 8))


def test_pbo_one_truly_better_trial_is_near_zero():
    rng = np.random.default_rng(5)
    m = rng.normal(0, 0.01, size=(256, 16))
    m[:, 9] += 0.004  # a real edge of 0.4 standard deviations every period
    res = pbo_cscv(m)
    assert res.n_combinations == 12870
    assert res.pbo < 0.01
    assert np.mean(res.is_best == 9) > 0.99


def test_pbo_pure_noise_is_near_half_or_above():
    values = [pbo_cscv(np.random.default_rng(seed).normal(0, 0.01, size=(256, 16))).pbo for seed in range(6)]
    assert np.mean(values) >= 0.4
    assert all(v > 0.2 for v in values)


def test_pbo_sampled_combinations_and_errors():
    m = np.random.default_rng(2).normal(0, 0.01, size=(200, 4))
    res = pbo_cscv(m, n_splits=20, max_combinations=500, seed=1)
    assert (res.n_combinations, res.all_combinations) == (500, False)
    assert pbo_cscv(m, n_splits=20, max_combinations=500, seed=1).pbo == res.pbo  # seeded
    assert pbo_cscv(np.ones((6, 3)) * [[0.01, 0.02, 0.03]], n_splits=16).n_splits == 6  # S lowered to T
    with pytest.raises(ValueError):
        pbo_cscv(m[:, :1])
    with pytest.raises(ValueError):
        pbo_cscv(m, n_splits=5)


def test_verdict_words():
    assert verdict(0.31, 0.62) == "treat the winner as luck"
    assert verdict(0.9, 0.3) == "the winner may be luck"
    assert verdict(0.99, 0.05) == "the winner holds up"
    assert verdict(None, None) == "not enough data to judge the winner"
    assert verdict(0.99, None) == "the winner holds up"
    assert verdict(0.02, 0.02) == "the winner may be luck"  # the ranking holds, the Sharpe does not clear the bar
    assert verdict(0.3, None) == "treat the winner as luck"
    assert verdict(0.99, 0.5) == "treat the winner as luck"
    assert verdict(float("nan"), 0.1) == "the winner holds up"


def test_a_verdict_figure_is_never_rounded_across_the_verdict_threshold():
    from mmrun.overfit_report import _fmt_judged

    assert [_fmt_judged(v) for v in (0.31, 0.4996, 0.5, 0.19999, 0.951, 0.9496, None, float("nan"))] == [
        "0.31", "0.4996", "0.50", "0.19999", "0.95", "0.9496", "n/a", "n/a"]


def test_the_returns_matrix_is_the_jobs_files_side_by_side_or_says_why_not(tmp_path):
    from mmrun.overfit_report import returns_matrix

    def job(name, start, returns):
        folder = tmp_path / name
        folder.mkdir()
        n = len(returns)
        pl.DataFrame({"period": list(range(n)), "start_ms": [start + 60_000 * i for i in range(n)],
                      "end_ms": [start + 60_000 * (i + 1) for i in range(n)], "equity": [1.0] * n,
                      "return": returns}).write_parquet(folder / "returns.parquet")
        return folder

    a, b = job("a", 0, [0.1, -0.2, 0.3]), job("b", 0, [0.0, 0.5, -0.5])
    m, note = returns_matrix([a, b])
    assert note is None and m.tolist() == [[0.1, 0.0], [-0.2, 0.5], [0.3, -0.5]]
    assert returns_matrix([a, job("late", 60_000, [0.1, 0.2, 0.3])])[1].startswith("the jobs' returns are on different periods")
    assert returns_matrix([a, job("short", 0, [0.1, 0.2])])[1].startswith("the jobs' returns are on different periods")
    assert returns_matrix([a, tmp_path / "gone"]) == (None, "gone/returns.parquet missing or unreadable")
    assert returns_matrix([job("one", 0, [0.1]), job("two", 0, [0.2])]) == (None, "fewer than 2 periods of returns")
