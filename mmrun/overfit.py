"""How much to trust a sweep's winner: the deflated Sharpe ratio and the probability of backtest overfitting.

Pure functions over per-period returns (numpy arrays); no files, no clock.

- `deflated_sharpe`: Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio:
  Correcting for Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio
  Management 40(5), 94-107 (SSRN 2460551). The probabilistic Sharpe ratio (Bailey & López de
  Prado 2012, "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2)) of the best trial,
  measured against the Sharpe ratio the best of N zero-skill trials would reach by luck.
- `pbo_cscv`: Bailey, D. H., Borwein, J. M., López de Prado, M. and Zhu, Q. J. (2017), "The
  Probability of Backtest Overfitting", Journal of Computational Finance 20(4), 39-69 (SSRN
  2326253). Combinatorially symmetric cross-validation over a T x N matrix of returns.

Sharpe ratios here are per period (not annualised), as both papers use them: mean / standard
deviation (ddof 1) of the period returns, risk-free rate 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import List, Optional

import numpy as np

# The standard normal distribution (the standard library's: its quantile is Wichura's AS241, exact to
# double precision; scipy.stats.norm gives the same numbers but costs half a second to import).
_NORMAL = NormalDist()

# Euler-Mascheroni constant (the gamma of Bailey & López de Prado 2014, eq. 6)
EULER_GAMMA = 0.5772156649015329
# CSCV splits suggested by Bailey et al. (2017, section 3): S = 16, C(16, 8) = 12,870 combinations
DEFAULT_SPLITS = 16
# Above this many combinations a seeded uniform sample of them is used (and said so)
MAX_COMBINATIONS = 20000
# Combinations x trials evaluated at once in pbo_cscv (4 MB per float64 array; about 40 MB in all
# at the peak, measured with 10,000 trials, as fast as larger chunks)
CHUNK_CELLS = 500_000


def sharpe_per_period(returns: np.ndarray) -> np.ndarray:
    """Sharpe ratio of each column of `returns` (shape (T,) or (T, N)), per period, not annualised.

    mean / standard deviation (ddof 1), risk-free rate 0. A column that never varies (a job that
    never traded) or has fewer than 2 rows gets 0: no evidence either way.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] < 2:
        return np.zeros(r.shape[1:]) if r.ndim > 1 else np.float64(0.0)
    mean = r.mean(axis=0)
    sd = r.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = np.where(sd > 0, mean / np.where(sd > 0, sd, 1.0), 0.0)
    return sr if r.ndim > 1 else np.float64(sr)


def moments(returns: np.ndarray) -> tuple:
    """(skewness, kurtosis) of a 1-d return series: the biased sample moments m3 / m2^1.5 and
    m4 / m2^2 about the mean (scipy.stats.skew and scipy.stats.kurtosis(fisher=False): kurtosis
    not excess, 3 for a normal distribution). (0, 3) if the series never varies."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 3 or not np.std(r) > 0:
        return 0.0, 3.0
    d = r - r.mean()
    m2 = np.mean(d * d)
    return float(np.mean(d ** 3) / m2 ** 1.5), float(np.mean(d ** 4) / m2 ** 2)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """The Sharpe ratio the best of n_trials zero-skill trials reaches by luck (per period).

    SR0 = sqrt(V[SR_n]) x ((1 - g) Z^-1[1 - 1/N] + g Z^-1[1 - 1/(N e)]), g the Euler-Mascheroni
    constant, Z^-1 the standard normal quantile, V[SR_n] the variance of the trials' Sharpe
    ratios (Bailey & López de Prado 2014, eq. 6). 0 for a single trial. Raises ValueError if
    n_trials < 1 or sr_variance < 0.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials}: at least one trial")
    if not sr_variance >= 0:
        raise ValueError(f"sr_variance={sr_variance}: a variance is >= 0")
    if n_trials == 1:
        return 0.0
    z = (1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n_trials) + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e))
    return float(math.sqrt(sr_variance) * z)


def probabilistic_sharpe(sr: float, sr_benchmark: float, n_obs: int, skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """Probability that the true Sharpe ratio exceeds sr_benchmark, given the observed one.

    PSR = Z[(SR - SR*) sqrt(T - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2)], Z the standard normal
    CDF, T the number of returns, g3 their skewness, g4 their kurtosis (3 for normal returns);
    SR and SR* per period (Bailey & López de Prado 2012, eq. 7; 2014, eq. 9). In [0, 1].
    Raises ValueError if n_obs < 2; NaN if the variance term is not positive (degenerate moments).
    """
    if n_obs < 2:
        raise ValueError(f"n_obs={n_obs}: at least two returns")
    var_term = 1 - skew * sr + (kurtosis - 1) / 4 * sr**2
    if not var_term > 0:
        return float("nan")
    return float(_NORMAL.cdf((sr - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var_term)))


@dataclass(frozen=True)
class DeflatedSharpe:
    """The deflated Sharpe ratio of a sweep's best trial and what it was computed from."""

    dsr: float  # probability in [0, 1] that the best trial's true Sharpe beats the luck benchmark
    sharpe: float  # the best trial's Sharpe ratio, per period
    benchmark: float  # SR0, the expected best Sharpe ratio of n_trials zero-skill trials, per period
    n_trials: int
    n_obs: int  # returns per trial (T)
    skew: float
    kurtosis: float
    sr_variance: float  # variance of the trials' per-period Sharpe ratios (ddof 1)


def deflated_sharpe(best_returns: np.ndarray, trial_sharpes: np.ndarray, n_trials: Optional[int] = None) -> DeflatedSharpe:
    """The deflated Sharpe ratio (DSR) of the best trial (Bailey & López de Prado 2014, eq. 10).

    DSR = PSR(SR0): the probabilistic Sharpe ratio of the best trial's returns (shape (T,)),
    measured against SR0 = expected_max_sharpe(N, V[SR_n]). trial_sharpes: the per-period Sharpe
    ratio of every trial (shape (N_seen,)), whose variance (ddof 1) is V[SR_n]; n_trials: N, the
    number of trials made if more than were seen (an Optuna study's count), default N_seen. With
    one trial DSR is the PSR against 0. Raises ValueError on fewer than 2 returns.
    """
    r = np.asarray(best_returns, dtype=np.float64)
    srs = np.asarray(trial_sharpes, dtype=np.float64)
    n = int(n_trials if n_trials is not None else srs.size)
    var = float(np.var(srs, ddof=1)) if srs.size > 1 else 0.0
    sr = float(sharpe_per_period(r))
    skew, kurt = moments(r)
    sr0 = expected_max_sharpe(max(n, 1), var)
    return DeflatedSharpe(probabilistic_sharpe(sr, sr0, r.size, skew, kurt), sr, sr0, n, int(r.size), skew, kurt, var)


@dataclass(frozen=True)
class Pbo:
    """The probability of backtest overfitting of a set of trials, by CSCV."""

    pbo: float  # share of the splits where the in-sample best ranks in the lower half out of sample
    n_splits: int  # S: equal blocks of periods
    n_combinations: int  # in-sample / out-of-sample splits evaluated
    all_combinations: bool  # False: a seeded uniform sample of the C(S, S/2)
    periods_used: int  # T after dropping the first T mod S periods
    logits: np.ndarray = field(repr=False)  # lambda_c per combination
    is_best: np.ndarray = field(repr=False)  # index of the in-sample best trial per combination


def pbo_cscv(
    returns: np.ndarray,
    n_splits: int = DEFAULT_SPLITS,
    max_combinations: int = MAX_COMBINATIONS,
    seed: int = 0,
) -> Pbo:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation.

    returns: shape (T, N), the per-period returns of N trials on the same T periods. Following
    Bailey, Borwein, López de Prado & Zhu (2017, section 2.2):

    1. the T rows are cut into S equal consecutive blocks (the first T mod S rows dropped);
    2. for each of the C(S, S/2) ways of choosing S/2 blocks as in-sample set J (its complement
       the out-of-sample set), the performance of every trial is its Sharpe ratio on J and on
       the complement (sharpe_per_period);
    3. n* = the trial with the best in-sample Sharpe (the first one on a tie); its out-of-sample
       rank among the N (1 = worst, ties averaged) gives w = rank / (N + 1) and the logit
       lambda = ln(w / (1 - w));
    4. PBO = the share of combinations with lambda <= 0: the in-sample winner is at or below the
       median out of sample.

    n_splits: S, even; lowered to the largest even number <= T if T is shorter. Above
    max_combinations combinations, that many are drawn uniformly (numpy, `seed`) without
    repetition. Raises ValueError with fewer than 2 trials or 2 periods, or an odd n_splits.
    """
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError(f"returns of shape {m.shape}: need (T, N) with N >= 2 trials")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits={n_splits}: an even number >= 2")
    t, n = m.shape
    s = min(n_splits, t - t % 2)
    if s < 2:
        raise ValueError(f"{t} periods: need at least 2")
    m = m[t % s:]
    blocks = m.reshape(s, m.shape[0] // s, n)
    per_block = blocks.shape[1]
    s1 = blocks.sum(axis=1)  # (S, N) sums of returns per block
    s2 = (blocks**2).sum(axis=1)  # (S, N) sums of squares per block

    total = math.comb(s, s // 2)
    every = total <= max_combinations
    if every:
        chosen = np.array(list(combinations(range(s), s // 2)), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        picked: set = set()
        rows: List[tuple] = []
        while len(rows) < max_combinations:
            c = tuple(sorted(rng.choice(s, s // 2, replace=False).tolist()))
            if c not in picked:
                picked.add(c)
                rows.append(c)
        chosen = np.array(rows, dtype=np.int64)
    count = s // 2 * per_block
    # in chunks of combinations, so that a sweep of many jobs needs bounded memory
    step = max(1, CHUNK_CELLS // n)
    best = np.empty(chosen.shape[0], dtype=np.int64)
    rank = np.empty(chosen.shape[0], dtype=np.float64)
    for lo in range(0, chosen.shape[0], step):
        part = chosen[lo : lo + step]
        mask = np.zeros((part.shape[0], s), dtype=np.float64)
        np.put_along_axis(mask, part, 1.0, axis=1)
        is_sr = _sharpe_from_sums(mask @ s1, mask @ s2, count)
        oos_sr = _sharpe_from_sums((1 - mask) @ s1, (1 - mask) @ s2, count)
        b = np.argmax(is_sr, axis=1)
        mine = oos_sr[np.arange(b.size), b][:, None]
        # its rank among the N out of sample, 1 = worst, ties sharing the mean of their ranks
        below = (oos_sr < mine).sum(axis=1)
        tied = (oos_sr == mine).sum(axis=1)
        best[lo : lo + step] = b
        rank[lo : lo + step] = below + (tied + 1) / 2.0
    w = rank / (n + 1)
    logits = np.log(w / (1 - w))
    return Pbo(float(np.mean(logits <= 0)), s, int(best.size), every, int(m.shape[0]), logits, best)


def _sharpe_from_sums(sum1: np.ndarray, sum2: np.ndarray, count: int) -> np.ndarray:
    """Per-period Sharpe ratios (ddof 1) from sums and sums of squares of `count` returns; 0 if flat."""
    if count < 2:
        return np.zeros_like(sum1)
    mean = sum1 / count
    var = np.maximum(sum2 - count * mean**2, 0.0) / (count - 1)
    sd = np.sqrt(var)
    # below this the variance is rounding noise of a flat series, not variation
    flat = sd <= 1e-12 * np.maximum(np.abs(mean), 1e-300) + 1e-300
    return np.where(flat, 0.0, mean / np.where(flat, 1.0, sd))


# the figures the verdict turns on: PBO 0.2 and 0.5, deflated Sharpe 0.5 and 0.95 (see verdict)
VERDICT_THRESHOLDS = (0.2, 0.5, 0.95)


def verdict(dsr: Optional[float], pbo: Optional[float]) -> str:
    """Plain words for a sweep's winner from its deflated Sharpe ratio (DSR) and the PBO.

    'treat the winner as luck': PBO >= 0.5 (picking the in-sample best does no better than
    picking at random, Bailey et al. 2017, section 2.2), or DSR < 0.5 with the PBO unknown or
    >= 0.2. 'the winner holds up': every known figure good, DSR >= 0.95 (the usual confidence
    level, Bailey & López de Prado 2014, section 5) and PBO < 0.2. Otherwise 'the winner may be
    luck'. NaN counts as unknown.
    """
    d = None if dsr is None or math.isnan(dsr) else dsr
    p = None if pbo is None or math.isnan(pbo) else pbo
    if d is None and p is None:
        return "not enough data to judge the winner"
    if (p is not None and p >= 0.5) or (d is not None and d < 0.5 and (p is None or p >= 0.2)):
        return "treat the winner as luck"
    if (d is None or d >= 0.95) and (p is None or p < 0.2):
        return "the winner holds up"
    return "the winner may be luck"
