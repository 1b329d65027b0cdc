"""Summary statistics: IQM, seed-bootstrap confidence intervals and threshold crossings."""

import numpy as np
import pytest
from scipy import stats

from zopg.analysis import bootstrap_ci, first_crossing, iqm


def test_iqm_matches_scipy_trimmed_mean():
    x = np.random.default_rng(0).standard_normal(40) ** 3
    assert iqm(x) == pytest.approx(stats.trim_mean(x, 0.25))


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    """Over 200 data sets of 30 normal draws, the 95% CI of the mean covers 0 about 95% of the
    time; a binomial(200, 0.95) count is >= 180 with probability > 0.99 (and the percentile
    bootstrap undercovers slightly at n = 30, hence the lower end)."""
    rng = np.random.default_rng(1)
    covered = 0
    for i in range(200):
        low, high = bootstrap_ci(rng.standard_normal(30), np.mean, num_resamples=2000, seed=i)
        covered += low <= 0.0 <= high
    assert 180 <= covered <= 200


def test_bootstrap_ci_with_never_reached_seeds():
    x = np.array([1.0, 2.0, 3.0, np.inf, np.inf])
    low, high = bootstrap_ci(x)
    assert low <= 2.0 and high == np.inf


def test_first_crossing():
    curves = np.array([[0.0, 0.4, 0.6, 0.9], [0.0, 0.1, 0.2, 0.3]])
    xs = np.array([10, 20, 30, 40])
    np.testing.assert_array_equal(first_crossing(curves, xs, 0.5), [30, np.inf])
    np.testing.assert_array_equal(first_crossing(curves, xs, 0.0), [10, 10])
