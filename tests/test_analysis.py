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


# -- what the mutation run found untested (issue 26) --

from zopg.analysis.stats import bootstrap_band, seed_resamples  # noqa: E402


def _band_by_hand(values, idx, confidence):
    """bootstrap_band by a direct loop: for every resample r and index t, the mean over the
    resampled seeds; the band its linear-interpolation quantiles per t."""
    values = np.asarray(values, dtype=np.float64)
    num_resamples, num_t = idx.shape[0], values.shape[1]
    means = np.empty((num_resamples, num_t))
    for r in range(num_resamples):
        for t in range(num_t):
            means[r, t] = np.mean(values[idx[r], t])
    alpha = (1.0 - confidence) / 2.0
    mean = np.array([np.mean(values[:, t]) for t in range(num_t)])
    low = np.array([np.quantile(means[:, t], alpha, method="linear") for t in range(num_t)])
    high = np.array([np.quantile(means[:, t], 1 - alpha, method="linear") for t in range(num_t)])
    return mean, low, high


def _ci_by_hand(values, statistic, idx, confidence):
    values = np.asarray(values, dtype=np.float64)
    stats_ = np.array([statistic(values[row]) for row in idx])
    alpha = (1.0 - confidence) / 2.0
    low = np.quantile(stats_, alpha, method="lower")
    high = np.quantile(stats_, 1 - alpha, method="higher")
    return float(low), float(high)


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert np.asarray(a).dtype == np.float64
        np.testing.assert_array_equal(a, e, strict=True)


def test_seed_resamples_are_numpys_generator_draws():
    np.testing.assert_array_equal(
        seed_resamples(7, 50), np.random.default_rng(0).integers(0, 7, size=(50, 7)), strict=True
    )
    np.testing.assert_array_equal(
        seed_resamples(7, 50, seed=3),
        np.random.default_rng(3).integers(0, 7, size=(50, 7)),
        strict=True,
    )
    # Every seed can be drawn, seed 0 included.
    assert set(np.unique(seed_resamples(3, 100, seed=1))) == {0, 1, 2}


# Seeds x logged iterations, seeds != iterations so that a mixed-up axis shows.
_CURVES = np.random.default_rng(11).standard_normal((6, 4)) ** 3 + np.arange(4.0)


def test_bootstrap_band_matches_a_loop_over_the_same_resamples():
    idx = seed_resamples(6, 200, seed=5)
    got = bootstrap_band(_CURVES, num_resamples=200, seed=5, confidence=0.9)
    _assert_same(got, _band_by_hand(_CURVES, idx, 0.9))
    mean, low, high = got
    assert np.all(low < mean) and np.all(mean < high)


def test_bootstrap_band_defaults_are_1000_resamples_seed_0_and_95_percent():
    _assert_same(bootstrap_band(_CURVES), _band_by_hand(_CURVES, seed_resamples(6, 1000, 0), 0.95))


def test_bootstrap_band_computes_float32_curves_in_float64():
    curves32 = _CURVES.astype(np.float32)
    _assert_same(
        bootstrap_band(curves32, num_resamples=300, seed=2),
        _band_by_hand(curves32.astype(np.float64), seed_resamples(6, 300, 2), 0.95),
    )


def test_bootstrap_ci_matches_a_loop_over_the_same_resamples():
    x = np.random.default_rng(4).standard_normal(8) ** 3
    # The defaults: median, 95%, 10_000 resamples, seed 0; lower/higher order statistics.
    assert bootstrap_ci(x) == _ci_by_hand(x, np.median, seed_resamples(8, 10_000, 0), 0.95)
    assert bootstrap_ci(x, np.mean) == _ci_by_hand(x, np.mean, seed_resamples(8, 10_000, 0), 0.95)
    assert bootstrap_ci(x, np.mean, confidence=0.8, num_resamples=500, seed=3) == _ci_by_hand(
        x, np.mean, seed_resamples(8, 500, 3), 0.8
    )


def test_bootstrap_ci_computes_float32_values_in_float64():
    x = (np.random.default_rng(4).standard_normal(8) ** 3).astype(np.float32)
    expected = _ci_by_hand(x.astype(np.float64), np.mean, seed_resamples(8, 2000, 1), 0.95)
    assert bootstrap_ci(x, np.mean, num_resamples=2000, seed=1) == expected


def test_iqm_along_either_axis_matches_scipy():
    x = np.random.default_rng(5).standard_normal((9, 5)) ** 3
    for axis in (0, 1):
        got = iqm(x, axis=axis)
        assert got.shape == (x.shape[1 - axis],)
        np.testing.assert_allclose(got, stats.trim_mean(x, 0.25, axis=axis), rtol=1e-14, atol=0)
    x3 = np.random.default_rng(6).standard_normal((3, 9, 2)) ** 3
    np.testing.assert_allclose(
        iqm(x3, axis=1), stats.trim_mean(x3, 0.25, axis=1), rtol=1e-14, atol=0, strict=True
    )


def test_iqm_computes_float32_values_in_float64():
    x = (np.random.default_rng(7).standard_normal(40) ** 3).astype(np.float32)
    got = iqm(x)
    assert got.dtype == np.float64
    assert got == pytest.approx(stats.trim_mean(x.astype(np.float64), 0.25), rel=1e-14, abs=0)


def test_first_crossing_per_seed_with_per_seed_xs():
    curves = np.array(
        [
            [0.0, 0.2, 0.4, 0.5, 0.1],  # reaches 0.5 exactly at index 3
            [0.0, 0.7, 0.1, 0.9, 0.9],  # at index 1, and falls back: the first crossing counts
            [0.3, 0.3, 0.3, 0.3, 0.3],  # never
        ]
    )
    queries = np.array([[10, 20, 30, 40, 50], [5, 15, 25, 35, 45], [1, 2, 3, 4, 5]])
    np.testing.assert_array_equal(first_crossing(curves, queries, 0.5), [40.0, 15.0, np.inf])
    np.testing.assert_array_equal(
        first_crossing(curves, np.array([1, 2, 3, 4, 5]), 0.5), [4.0, 2.0, np.inf]
    )


def test_first_crossing_compares_and_returns_in_float64():
    # A float32 curve value just below the threshold in float64, equal to it in float32.
    value = np.float32(0.1)
    threshold = float(np.nextafter(np.float64(value), 1.0))
    curves = np.array([[0.0, value, 1.0]], dtype=np.float32)
    xs = np.array([0.1, 0.2, 0.3], dtype=np.float32)
    got = first_crossing(curves, xs, threshold)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [np.float64(np.float32(0.3))])
