"""Paired statistics (zopg.analysis.paired) against code we did not write (scipy), worked
examples, and the measured coverage of the chosen interval (zopg.analysis.coverage)."""

import math
import statistics
import warnings

import numpy as np
import pytest
from scipy import special, stats

from zopg.analysis import paired
from zopg.analysis.coverage import measure_coverage
from zopg.analysis.stats import seed_resamples
from zopg.errors import ConfigError


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 19, 30])
def test_t_quantile_and_cdf_match_scipy(df):
    for p in (0.001, 0.1, 0.5, 0.8, 0.975, 0.9995):
        assert paired.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-9)
    for t in (-7.0, -1.3, 0.0, 0.4, 2.2, 12.0):
        assert paired.t_cdf(t, df) == pytest.approx(stats.t.cdf(t, df), rel=1e-12, abs=1e-14)


def test_normal_quantile_matches_ndtri_including_the_ends():
    p = np.array([0.0, 1e-10, 0.025, 0.5, 0.8, 0.975, 1.0])
    np.testing.assert_allclose(paired.normal_quantile(p), special.ndtri(p), rtol=1e-12)
    np.testing.assert_allclose(paired.normal_cdf([-3, 0, 1.5]), special.ndtr([-3, 0, 1.5]))


SAMPLES = {
    "normal": np.random.default_rng(11).normal(0.1, 0.3, 10),
    "skewed": np.random.default_rng(12).exponential(1.0, 15) - 0.5,
    "stall": np.array([0.0, -0.01, 0.003, -0.55, 0.002, -0.005, 0.0, -0.53, 0.001, -0.002]),
}


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_interval_matches_scipy_within_monte_carlo_error(name, method):
    """Same number of resamples; scipy run with 8 seeds gives the Monte Carlo spread s of each
    end, and ours (one more independent draw) must lie within 4 s·√(1 + 1/8) of their mean."""
    x = SAMPLES[name]
    resamples = 10_000
    ends = np.array(
        [
            stats.bootstrap(
                (x,), np.mean, method=method.replace("bca", "BCa"), n_resamples=resamples, rng=s
            ).confidence_interval
            for s in range(8)
        ]
    )
    low, high = paired.mean_intervals(x, method, num_resamples=resamples, seed=123)
    spread = ends.std(axis=0, ddof=1)
    tolerance = 4 * spread * math.sqrt(1 + 1 / 8) + 1e-12
    np.testing.assert_array_less(np.abs([low[0], high[0]] - ends.mean(axis=0)), tolerance)


@pytest.mark.parametrize(
    "d",
    [
        np.random.default_rng(1).normal(0.2, 0.5, 6),
        np.random.default_rng(2).normal(0.0, 1.0, 11),
        # Ties and exact zeros, as in metrics.csv's 6-digit values.
        np.array([0.0, 0.0, 0.001, 0.002, -0.003, 0.5, 0.0, -0.001, 0.25, 0.25]),
        np.array([-0.3, -0.1, -0.2, -0.4, -0.05, -0.6, -0.2, -0.1]),
    ],
)
def test_exact_sign_flip_matches_scipy_permutation_test(d):
    p, how = paired.sign_flip_p_value(d)
    reference = stats.permutation_test(
        (d,), np.mean, permutation_type="samples", n_resamples=np.inf, alternative="two-sided"
    ).pvalue
    assert how == "exact"
    assert p == pytest.approx(reference, rel=1e-12)


def test_sign_flip_edge_cases():
    assert paired.sign_flip_p_value(np.zeros(10)) == (1.0, "exact")
    # All of one sign: only the observed pattern and its mirror image are as extreme.
    assert paired.sign_flip_p_value(np.full(10, -0.2))[0] == 2 / 2**10
    assert paired.smallest_attainable_p(10) == 2 / 2**10


def test_monte_carlo_sign_flip_agrees_with_exact_enumeration_and_is_never_zero():
    d = np.random.default_rng(5).normal(0.15, 0.6, 21)
    exact, _ = paired.sign_flip_p_value(d, exact_max_n=21)
    estimate, how = paired.sign_flip_p_value(d, num_flips=100_000, seed=3, exact_max_n=20)
    assert how == "monte-carlo"
    assert abs(estimate - exact) < 4 * math.sqrt(exact * (1 - exact) / 100_000)
    assert paired.sign_flip_p_value(d, seed=3, exact_max_n=20)[0] == estimate  # seeded
    # +1 correction: the observed pattern counts, so even an extreme sample has p > 0.
    p, _ = paired.sign_flip_p_value(np.full(40, 1.0), num_flips=1000, exact_max_n=20)
    assert p == pytest.approx(1 / 1001, abs=2 / 1001)
    assert p > 0


def test_holm_worked_example():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03,
    0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04) = 0.06 (adjusted p never decreases)."""
    np.testing.assert_allclose(paired.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(paired.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert paired.holm([]).size == 0


def _holm_rejections(p, alpha):
    """Holm's procedure as written: step down through the sorted p-values, reject while
    p_(k) <= alpha / (m - k + 1), stop at the first that is not."""
    rejected = set()
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (len(p) - k):
            break
        rejected.add(int(i))
    return rejected


def test_holm_adjusted_p_rejects_what_the_step_down_procedure_rejects():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.uniform(0, 0.1, rng.integers(1, 30)) ** rng.uniform(1, 3)
        adjusted = paired.holm(p)
        for alpha in (0.01, 0.05, 0.1):
            assert set(np.flatnonzero(adjusted <= alpha)) == _holm_rejections(p, alpha)


def test_holm_refuses_values_that_are_not_p_values():
    with pytest.raises(ConfigError, match="p-values"):
        paired.holm([0.1, 1.5])
    with pytest.raises(ConfigError, match="p-values"):
        paired.holm([0.1, np.nan])


def test_mdd_formula_and_power():
    """MDD = (t_.975 + t_.8)(n-1) · sd/√n; a paired t-test then has about 80% power at a true
    difference of MDD (non-central t from scipy; the formula's approximation loses < 3%)."""
    sd, n = 0.4, 10
    mdd = paired.minimum_detectable_difference(sd, n)
    assert mdd == pytest.approx((stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) * sd / math.sqrt(n))
    critical = stats.t.ppf(0.975, n - 1)
    shift = mdd * math.sqrt(n) / sd
    power = stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
    assert 0.77 < power < 0.81


def test_paired_differences_drop_seeds_without_finite_values():
    d, kept, dropped = paired.paired_differences([1.0, np.nan, 3.0, 4.0], [0.5, 1.0, np.inf, 1.0])
    np.testing.assert_array_equal(d, [0.5, 3.0])
    assert kept == [0, 3] and dropped == [1, 2]
    with pytest.raises(ConfigError, match="shapes"):
        paired.paired_differences([1.0, 2.0], [1.0])


def test_degenerate_samples_are_reported_as_such():
    equal = paired.compare_paired(np.full(10, 0.25))
    assert equal["zero_width"] and equal["ci"] == [0.25, 0.25]
    assert (
        "zero width" in equal["notes"][0]
        and "not that the difference is known" in (equal["notes"][0])
    )
    assert equal["p"] == 2 / 2**10 and equal["mdd"] == 0.0
    two = paired.compare_paired([0.1, 0.3])
    assert two["ci"] == [None, None] and "< 3" in two["notes"][0]
    assert two["p"] == 0.5
    with pytest.raises(ConfigError, match="must be finite"):
        paired.compare_paired([0.1, np.nan, 0.3])
    with pytest.raises(ConfigError, match="ci method"):
        paired.mean_intervals([0.1, 0.2, 0.3], "wald")


def test_every_interval_of_a_constant_row_has_zero_width():
    rows = np.array([[0.3] * 10, list(np.linspace(0, 1, 10))])
    for method in paired.INTERVAL_METHODS:
        low, high = paired.mean_intervals(rows, method, num_resamples=500)
        assert low[0] == high[0] == pytest.approx(0.3), method
        assert low[1] < 0.5 < high[1], method


def test_chosen_interval_stays_within_the_observed_differences():
    """One stalled seed among ties: the studentised interval alone reaches far beyond anything
    ten such seeds can average to; the chosen one is clipped to their range and says so."""
    d = np.array([0.0] * 6 + [-0.001, 0.0005, -0.002, -0.55])
    wide = paired.mean_intervals(d, "symmetric-t")
    record = paired.compare_paired(d)
    assert wide[0][0] < -0.55
    assert record["ci"][0] == pytest.approx(-0.55) and record["clipped"]
    assert not record["zero_width"] and not record["unbounded"]


def test_measured_coverage_of_the_chosen_interval():
    """Simulated 10-seed data sets (4,000 per shape, the same bootstrap resamples for all).
    The chosen interval must cover the true mean difference at least 93% of the time where
    that is attainable, judged with the binomial standard error of the simulation: passes if
    coverage >= 0.93 - 2 se. On a stall mixture against a method that always converges it is
    not attainable: 0.8^10 of the data sets hold no stalled seed, and every interval of the
    seeds' spread then misses; there the interval must reach that ceiling and cover >= 93% of
    the data sets that do span the truth. BCa is measured beside it: below 0.93 on normal
    differences at 10 seeds, which is why it is not the one chosen."""
    simulations = 4000
    chosen = paired.CI_METHOD
    result = measure_coverage(
        shapes=("normal", "skewed", "stall-vs-stall", "stall-vs-converged"),
        methods=(chosen, "bca"),
        simulations=simulations,
        num_resamples=1000,
    )

    def se(p):
        return math.sqrt(p * (1 - p) / simulations)

    for shape in ("normal", "skewed", "stall-vs-stall"):
        coverage = result[shape]["methods"][chosen]["coverage"]
        assert coverage >= 0.93 - 2 * se(0.93), (shape, coverage)
    mixture = result["stall-vs-converged"]
    ceiling = 1 - mixture["outside_range"]
    assert abs(ceiling - (1 - 0.8**10)) < 3 * se(1 - 0.8**10)
    assert mixture["methods"][chosen]["coverage"] >= ceiling - 2 * se(ceiling)
    assert mixture["methods"][chosen]["coverage_within_range"] >= 0.93
    bca = result["normal"]["methods"]["bca"]["coverage"]
    assert bca + 2 * se(bca) < 0.93


# -- reference checks that pin each piece of the module (written against mutation survivors) ---


def _resampled(x, counts):
    """The resamples that `counts` [B, n] describes, each as the list of its drawn values."""
    return [np.repeat(x, row.astype(int)) for row in counts]


def test_percentile_interval_is_numpy_quantile_of_the_resample_means():
    """Same resamples (explicit counts): the ends are numpy's linear quantiles of the resample
    means at (1 - c)/2 and (1 + c)/2. Integer data over 8 seeds keep every mean exact, so the
    only rounding left is the interpolation's (a few ulps of the values)."""
    x = np.array([3.0, -1.0, 4.0, 1.0, -5.0, 9.0, 2.0, 6.0])
    counts = paired.resample_counts(8, 40, seed=4)
    means = np.array([r.mean() for r in _resampled(x, counts)])
    for confidence in (0.5, 0.9, 0.99):
        low, high = paired.mean_intervals(x, "percentile", confidence, counts=counts)
        expected = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        np.testing.assert_allclose([low[0], high[0]], expected, rtol=0, atol=1e-13)


def test_quantile_rows_ends_missing_levels_and_infinite_neighbours():
    """Level 0 and 1 are exactly the extremes (0.2 + (0.9 - 0.2) is not 0.9 in floats, so the
    last value must be read, not interpolated to); an undefined (NaN) level gives NaN without
    a warning; a level that lands on an entry returns it even beside an infinite one."""
    rows = np.array([[0.1, 0.2, 0.9], [0.1, 0.2, 0.9]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(paired._quantile_rows(rows, np.array([0.0, 1.0])), [0.1, 0.9])
        ends = paired._quantile_rows(rows, np.array([np.nan, 0.25]))
    assert np.isnan(ends[0]) and ends[1] == pytest.approx(0.15, rel=1e-15)
    infinite = np.array([[0.0, 1.0, np.inf]] * 3)
    with np.errstate(invalid="ignore"):  # inf - inf in the branch np.where does not take
        ends = paired._quantile_rows(infinite, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(ends, [0.0, 1.0, np.inf])


def _bca_reference(x, counts, confidence):
    """BCa as Efron & Tibshirani write it: z0 from the share of resample means below the mean
    (ties counted half), the acceleration from the leave-one-out means, scipy's normal."""
    n = x.size
    mean = x.mean()
    means = np.array([r.mean() for r in _resampled(x, counts)])
    z0 = stats.norm.ppf(((means < mean).sum() + (means <= mean).sum()) / (2 * means.size))
    loo = np.array([np.delete(x, i).mean() for i in range(n)])
    u = loo.mean() - loo
    accel = (u**3).sum() / (6 * (u**2).sum() ** 1.5)
    ends = []
    for z in stats.norm.ppf([(1 - confidence) / 2, (1 + confidence) / 2]):
        level = stats.norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
        ends.append(np.quantile(means, level))
    return ends


def test_bca_matches_a_jackknife_reference_row_by_row():
    """Three rows of different skewness through one call, each against the reference alone:
    every BCa statistic (z0, acceleration) is per row. Integer data over 8 seeds keep the means
    and ties exact; the tolerance covers the normal cdf/quantile's last bits times the spread."""
    rows = np.array(
        [
            [0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 19.0],
            [-20.0, -3.0, -1.0, 0.0, 0.0, 1.0, 2.0, 5.0],
            [4.0, -2.0, 7.0, 1.0, 3.0, -6.0, 2.0, 0.0],
        ]
    )
    counts = paired.resample_counts(8, 200, seed=9)
    for confidence in (0.9, 0.95):
        low, high = paired.mean_intervals(rows, "bca", confidence, counts=counts)
        for i, row in enumerate(rows):
            expected = _bca_reference(row, counts, confidence)
            np.testing.assert_allclose([low[i], high[i]], expected, rtol=1e-9, atol=1e-12)
            single = paired.mean_intervals(row, "bca", confidence, counts=counts)
            assert (single[0][0], single[1][0]) == (low[i], high[i])


def test_bca_acceleration_is_zero_when_the_squares_underflow():
    """Symmetric differences (no skew, acceleration 0) scaled by 2^-560: every operation scales
    exactly, but the squared deviations underflow to 0; the acceleration must stay 0 there, so
    the interval is exactly the scaled one."""
    x = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])
    counts = paired.resample_counts(5, 300, seed=2)
    low, high = paired.mean_intervals(x, "bca", counts=counts)
    tiny_low, tiny_high = paired.mean_intervals(np.ldexp(x, -560), "bca", counts=counts)
    assert low[0] < 0 < high[0]
    assert (tiny_low[0], tiny_high[0]) == (np.ldexp(low[0], -560), np.ldexp(high[0], -560))


def _one_sided_sample():
    """Ties at a value with one seed a single ulp above: the float mean of these lies below every
    one of them, so every resample mean is above the mean (BCa's z0 is then infinite)."""
    for value in (0.1, 0.3, 0.7, 1.1):
        for ties in range(2, 20):
            d = np.array([value] * ties + [np.nextafter(value, 2.0)])
            if d.mean() < d.min():
                return d
    raise AssertionError("no tie pattern whose float mean lies below its smallest value")


def test_bca_is_undefined_without_warnings_where_every_resample_is_on_one_side():
    d = _one_sided_sample()
    constant_and_spread = np.array([[0.3] * 10, list(np.linspace(0, 1, 10))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = paired.mean_intervals(d, "bca", num_resamples=500)
        paired.mean_intervals(constant_and_spread, "bca", num_resamples=500)
        record = paired.compare_paired(d, "bca", num_resamples=500)
    assert np.isnan(low[0]) and np.isnan(high[0])
    assert record["ci"] == [None, None] and record["unbounded"] is True
    assert record["notes"] == [
        "the interval is undefined for these data (BCa: every resample on one side)"
    ]


def _studentised_reference(x, counts, confidence):
    """t* = (resample mean - mean) / (resample sd / √n) for every resample, by loops; the
    symmetric half-width q·se with q the ceil((B+1)c)-th smallest |t*|, and the equal-tailed
    ends mean - t*_(hi)·se, mean - t*_(lo)·se from the ceil((B+1)(1+c)/2)-th of t* and -t*."""
    n, size = x.size, counts.shape[0]
    mean, se = x.mean(), x.std(ddof=1) / math.sqrt(n)
    t = np.array(
        [(r.mean() - mean) / (r.std(ddof=1) / math.sqrt(n)) for r in _resampled(x, counts)]
    )
    q = np.sort(np.abs(t))[math.ceil((size + 1) * confidence) - 1]
    rank = math.ceil((size + 1) * (1 + confidence) / 2) - 1
    upper, lower = np.sort(t)[rank], -np.sort(-t)[rank]
    return (mean - q * se, mean + q * se), (mean - upper * se, mean - lower * se)


def test_studentised_intervals_match_a_loop_reference():
    """Eight seeds and 99 given resamples (none constant, no two t* equal); confidence 0.005
    asks for the smallest |t*| (rank ceil(100 · 0.005) = 1), 0.95 for the 95th of 99.
    Tolerance: the resample sd's rounding, a few ulps of t* times se."""
    x = np.random.default_rng(17).normal(0.2, 1.0, 8)
    counts = paired.resample_counts(8, 99, seed=5)
    for confidence in (0.005, 0.8, 0.95):
        symmetric, equal_tailed = _studentised_reference(x, counts, confidence)
        got = paired.mean_intervals(x, "symmetric-t", confidence, counts=counts)
        np.testing.assert_allclose([got[0][0], got[1][0]], symmetric, rtol=1e-12, atol=1e-12)
        got = paired.mean_intervals(x, "bootstrap-t", confidence, counts=counts)
        np.testing.assert_allclose([got[0][0], got[1][0]], equal_tailed, rtol=1e-12, atol=1e-12)
        clipped = np.clip(symmetric, x.min(), x.max())
        got = paired.mean_intervals(x, "symmetric-t-range", confidence, counts=counts)
        np.testing.assert_allclose([got[0][0], got[1][0]], clipped, rtol=1e-12, atol=1e-12)


def test_resample_counts_follow_the_seed_like_seed_resamples():
    """Counts are the tallies of stats.seed_resamples' indices for the same seed (0 when none
    is given, as there), so intervals from counts and from a seed agree."""
    for seed in (None, 0, 7):
        given = {} if seed is None else {"seed": seed}
        counts = paired.resample_counts(5, 50, **given)
        indices = seed_resamples(5, 50, **given)
        expected = np.stack([np.bincount(row, minlength=5) for row in indices])
        np.testing.assert_array_equal(counts, expected)
    assert not np.array_equal(paired.resample_counts(5, 50, 7), paired.resample_counts(5, 50))


def test_sign_flip_monte_carlo_counts_ties_and_the_observed_pattern_exactly():
    """All-zero differences: every pattern ties the observed mean, so p = (1 + B)/(1 + B) = 1,
    as in the exact branch. All of one sign over 40 seeds: no random pattern (each 2^-39 likely)
    is as extreme, so p = 1/(1 + B) exactly."""
    assert paired.sign_flip_p_value(np.zeros(25), num_flips=1000) == (1.0, "monte-carlo")
    p, how = paired.sign_flip_p_value(np.full(40, 1.0), num_flips=1000)
    assert how == "monte-carlo" and p == 1 / 1001
    # One flip is a valid (if coarse) Monte Carlo: p is 1/2 or 1.
    assert paired.sign_flip_p_value(np.full(25, 1.0), num_flips=1)[0] in (0.5, 1.0)
    with pytest.raises(ConfigError, match=r"^num_flips = 0: must be an integer in \[1, inf\]$"):
        paired.sign_flip_p_value(np.ones(25), num_flips=0)


def test_sign_flip_is_exact_up_to_and_including_exact_max_n():
    d = np.array([0.3, -0.1, 0.2, 0.5, 0.05])
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * 5)).reshape(5, -1).T
    expected = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9 * np.abs(d).sum())
    assert paired.sign_flip_p_value(d, exact_max_n=5) == (expected, "exact")
    assert paired.sign_flip_p_value(d, exact_max_n=4)[1] == "monte-carlo"
    assert paired.smallest_attainable_p(20) == 2 / 2**20
    assert paired.smallest_attainable_p(5, exact_max_n=5) == 2 / 2**5
    assert paired.smallest_attainable_p(21) == 0.0
    assert paired.smallest_attainable_p(6, exact_max_n=5) == 0.0


def test_differences_that_are_not_finite_are_refused_by_name():
    for call in (paired.sign_flip_p_value, paired.compare_paired):
        with pytest.raises(ConfigError, match=r"^differences holds nan: must be finite"):
            call([0.1, np.nan, 0.3])


def test_holm_caps_at_one_and_accepts_the_ends_of_the_unit_interval():
    """p = (0.6, 0.9): 0.6·2 = 1.2 is capped at 1. p = (0, 1, 0.3): 0·3 = 0, 0.3·2 = 0.6,
    1·1 = 1. A missing p-value (None) is refused like any other non-number."""
    np.testing.assert_array_equal(paired.holm([0.6, 0.9]), [1.0, 1.0])
    np.testing.assert_allclose(paired.holm([0.0, 1.0, 0.3]), [0.0, 1.0, 0.6], rtol=1e-15)
    with pytest.raises(ConfigError, match="p-values"):
        paired.holm([0.01, None])


def test_verdict_thresholds_at_alpha():
    """Better or worse only for p strictly below alpha (0.05 unless given)."""
    assert paired.verdict(0.2, 0.049) == "better"
    assert paired.verdict(-0.2, 0.049) == "worse"
    assert paired.verdict(0.2, 0.05) == "no detectable difference"
    assert paired.verdict(0.2, 0.06) == "no detectable difference"
    assert paired.verdict(0.2, 0.06, alpha=0.1) == "better"
    assert paired.verdict(0.2, None) == "not tested"


def test_t_distribution_refuses_impossible_arguments_by_name():
    with pytest.raises(ConfigError, match=r"^df = 0: must be an integer in \[1, inf\]$"):
        paired.t_cdf(1.0, 0)
    for p in (0.0, 1.0):
        with pytest.raises(ConfigError, match=rf"^p = {p}: must be in \(0, 1\)$"):
            paired.t_quantile(p, 1)
    with pytest.raises(ConfigError, match=r"^n = 1: must be an integer in \[2, inf\]$"):
        paired.minimum_detectable_difference(1.0, 1)
    with pytest.raises(ConfigError, match=r"^sd = -0\.1: must be in \[0, inf\]$"):
        paired.minimum_detectable_difference(-0.1, 5)


def test_t_quantile_is_within_half_its_stopping_width_and_stops_there(monkeypatch):
    """Bisection on [0, 2^k] (k the doublings to pass t) stops at width < 1e-12·max(1, t) and
    returns the midpoint: within 0.5e-12·max(1, t) of the root, plus t_cdf's and scipy's
    rounding (a few ulps over a density above 0.05: 2e-14). It takes no more evaluations than
    that bisection needs, with a margin of two."""
    for df in (1, 2, 3, 5, 8, 13, 30):
        for p in np.linspace(0.52, 0.98, 24):
            t = stats.t.ppf(p, df)
            assert abs(paired.t_quantile(p, df) - t) <= (0.5e-12 + 2e-14) * max(1.0, t)
    calls = []
    real = paired.t_cdf

    def counted(t, df):
        calls.append(t)
        return real(t, df)

    monkeypatch.setattr(paired, "t_cdf", counted)
    for df, p in [(1, 0.6), (3, 0.9), (5, 0.99), (1, 0.999), (30, 0.55)]:
        calls.clear()
        paired.t_quantile(p, df)
        doublings = max(0, math.ceil(math.log2(stats.t.ppf(p, df))))
        width = 2.0**doublings
        t = stats.t.ppf(p, df)
        needed = doublings + 1 + math.ceil(math.log2(width / (1e-12 * max(1.0, t))))
        assert len(calls) <= needed + 2, (df, p, len(calls), needed)


def test_normal_functions_handle_empty_missing_and_out_of_range_input():
    assert paired.normal_cdf([]).shape == (0,) and paired.normal_cdf([]).dtype == float
    assert paired.normal_quantile([]).shape == (0,) and paired.normal_quantile([]).dtype == float
    np.testing.assert_array_equal(paired.normal_cdf([0.0, None]), [0.5, np.nan])
    with np.errstate(invalid="ignore"):  # NaN compared with the ends of [0, 1]
        np.testing.assert_array_equal(paired.normal_quantile([0.5, None]), [0.0, np.nan])
    assert np.all(np.isnan(paired.normal_quantile([1.5, -0.5, 2.0])))


def test_paired_differences_read_missing_values_and_name_the_expected_shape():
    d, kept, dropped = paired.paired_differences([1.0, None, 3.0], [0.5, 1.0, None])
    np.testing.assert_array_equal(d, [0.5])
    assert kept == [0] and dropped == [1, 2]
    with pytest.raises(ConfigError, match="must be two 1-d arrays with one entry per seed index"):
        paired.paired_differences([[1.0, 2.0]], [[1.0, 2.0]])


def test_compare_paired_below_three_seeds():
    """One seed: no spread, so no sd and no MDD. Two: sd and MDD from the closed form
    (t_.975 + t_.8)(1)·sd/√2, the p-value floor 2/2^2 = 0.5 in the note, nothing clipped."""
    one = paired.compare_paired([0.3])
    assert one["sd_difference"] is None and one["mdd"] is None and one["p"] == 1.0
    two = paired.compare_paired([0.1, 0.3])
    sd = statistics.stdev([0.1, 0.3])
    assert two["sd_difference"] == pytest.approx(sd, rel=1e-14)
    mdd = (stats.t.ppf(0.975, 1) + stats.t.ppf(0.8, 1)) * sd / math.sqrt(2)
    assert two["mdd"] == pytest.approx(mdd, rel=1e-9)
    assert two["notes"] == ["2 paired seeds (< 3): no interval, and no p-value below 0.5"]
    for record in (one, two, paired.compare_paired(np.full(4, 0.25))):
        assert record["clipped"] is False and record["unbounded"] is False
    three = paired.compare_paired([0.1, 0.3, 0.2], num_resamples=200)
    assert None not in three["ci"] and three["ci"][0] < 0.2 < three["ci"][1]


def test_compare_paired_record_of_a_normal_sample():
    """The fields beside the interval: sd (n - 1), the method and confidence asked for, the MDD
    at the alpha and power asked for (closed form from scipy's t), the exact zero-width note."""
    d = np.random.default_rng(21).normal(0.1, 0.4, 9)
    record = paired.compare_paired(d, "percentile", 0.9, num_resamples=300, alpha=0.1, power=0.9)
    sd = statistics.stdev(d)
    assert record["sd_difference"] == pytest.approx(sd, rel=1e-12)
    assert record["ci_method"] == "percentile" and record["confidence"] == 0.9
    mdd = (stats.t.ppf(0.95, 8) + stats.t.ppf(0.9, 8)) * sd / 3
    assert record["mdd"] == pytest.approx(mdd, rel=1e-9)
    default = paired.compare_paired(d, num_resamples=300)
    mdd = (stats.t.ppf(0.975, 8) + stats.t.ppf(0.8, 8)) * sd / 3
    assert default["mdd"] == pytest.approx(mdd, rel=1e-9)
    equal = paired.compare_paired(np.full(10, 0.25))
    assert equal["notes"] == [
        "all 10 paired differences equal 0.25: the interval has zero width, which says the "
        "seeds did not vary, not that the difference is known"
    ]


def test_compare_paired_uses_the_seed_and_the_defaults_of_its_parts():
    """Over 21 seeds (Monte Carlo p): compare_paired's interval and p are mean_intervals' and
    sign_flip_p_value's for the same seed; left at their defaults, all three use seed 0 and
    10,000 resamples, so a report of the same differences gives the same numbers."""
    d = np.random.default_rng(8).normal(0.05, 0.5, 21)
    record = paired.compare_paired(d, "percentile", 0.9, num_resamples=400, seed=3)
    low, high = paired.mean_intervals(d, "percentile", 0.9, num_resamples=400, seed=3)
    assert record["ci"] == [low[0], high[0]]
    assert (record["p"], record["p_method"]) == paired.sign_flip_p_value(d, seed=3)
    assert record["p"] != paired.sign_flip_p_value(d, seed=0)[0]
    assert record["ci"] != list(paired.mean_intervals(d, "percentile", 0.9, 400, seed=0))
    default = paired.compare_paired(d)
    low, high = paired.mean_intervals(d)
    assert default["ci"] == [low[0], high[0]]
    assert default["p"] == paired.sign_flip_p_value(d)[0]
    low, high = paired.mean_intervals(d, num_resamples=10_000, seed=0)
    assert default["ci"] == [low[0], high[0]]
    # The percentile interval interpolates at (B - 1)·level, so it pins B itself.
    low, high = paired.mean_intervals(d, "percentile", num_resamples=10_000, seed=0)
    assert paired.compare_paired(d, "percentile")["ci"] == [low[0], high[0]]


STUDENTISED_UNBOUNDED = (
    "the interval is unbounded: too many resamples are constant for the studentised bootstrap "
    "to bound the mean difference"
)


def test_compare_paired_reports_unbounded_studentised_intervals():
    """Three seeds: each constant resample (1/27 = 3.7% of them) has t* = ±inf. The symmetric
    interval needs the 95th percentile of |t*|, infinite; it is not the range-clipped method,
    so nothing is 'clipped'. The equal-tailed one at 90% needs the 5% tails: two of the three
    values lie below the mean (7.4% of resamples at -inf), one above (3.7% at +inf), so only
    the upper end is unbounded; mirrored, only the lower."""
    d = np.array([0.0, 0.1, 1.0])
    record = paired.compare_paired(d, "symmetric-t")
    assert record["ci"] == [None, None] and record["unbounded"] is True
    assert record["clipped"] is False and record["notes"] == [STUDENTISED_UNBOUNDED]
    upper = paired.compare_paired(d, "bootstrap-t", confidence=0.9)
    lower = paired.compare_paired(-d, "bootstrap-t", confidence=0.9)
    assert upper["ci"][0] is not None and upper["ci"][1] is None
    assert lower["ci"][0] is None and lower["ci"][1] is not None
    for record in (upper, lower):
        assert record["unbounded"] is True and record["notes"] == [STUDENTISED_UNBOUNDED]


def test_clipped_when_either_end_of_the_chosen_interval_is_cut():
    """One low outlier drags the mean down, and the symmetric interval around it reaches above
    the largest difference but not below the smallest: only the upper end is clipped, and that
    alone marks the interval clipped; mirrored, only the lower end."""
    d = np.array([-0.315, -0.04, -0.053, -3.423, 1.057, -0.52, -0.01])
    for sign in (1.0, -1.0):
        record = paired.compare_paired(sign * d)
        low, high = record["ci"]
        cut, free = (high, low) if sign > 0 else (low, high)
        assert cut == pytest.approx(sign * 1.057, rel=1e-15)
        assert min(sign * d) < free < max(sign * d)
        assert record["clipped"] is True


# -- mean_intervals' arguments, edge rows and studentised corner cases (mutation survivors) ----


def test_mean_intervals_refuse_bad_samples_with_the_field_and_shape():
    """A 3-d array or rows without seeds are refused by shape; a missing value (None, read as
    NaN like paired_differences does) or an infinite one is refused as not finite."""
    shape = r"^samples: shape {}: must be \[n\] or \[rows, n\] with n >= 1$"
    for bad, text in (
        (np.zeros((2, 2, 2)), r"\(2, 2, 2\)"),
        (np.zeros((2, 0)), r"\(2, 0\)"),
        ([], r"\(1, 0\)"),
    ):
        with pytest.raises(ConfigError, match=shape.format(text)):
            paired.mean_intervals(bad, "percentile", num_resamples=10)
    finite = (
        r"^samples holds {}: must be finite; drop the seeds without a finite value first "
        r"\(paired_differences does\)$"
    )
    for bad, text in (([0.1, None, 0.3], "nan"), ([[0.1, 0.2], [np.inf, 0.3]], "inf")):
        with pytest.raises(ConfigError, match=finite.format(text)):
            paired.mean_intervals(bad, "percentile", num_resamples=10)


def test_mean_intervals_refuse_bad_arguments_by_name():
    with pytest.raises(ConfigError, match=r"^ci method = 'wald': must be one of percentile, "):
        paired.mean_intervals([0.1, 0.2, 0.3], "wald")
    for confidence in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=rf"^confidence = {confidence}: must be in \(0, 1\)$"):
            paired.mean_intervals([0.1, 0.2, 0.3], "percentile", confidence, num_resamples=10)
    for size in (0, 1):
        with pytest.raises(
            ConfigError, match=rf"^num_resamples = {size}: must be an integer in \[2, inf\]$"
        ):
            paired.mean_intervals([0.1, 0.2, 0.3], "percentile", num_resamples=size)
    with pytest.raises(ConfigError, match=r"^resample counts: 4 seeds per resample, data have 5$"):
        paired.mean_intervals(np.arange(5.0), counts=paired.resample_counts(4, 10))
    with pytest.raises(ConfigError, match=r"^student-t interval: n = 1 seeds: must be >= 2$"):
        paired.mean_intervals([0.3], "student-t")


def test_two_resamples_and_the_default_ten_thousand():
    """num_resamples = 2 is the least allowed; left out it is 10,000 from seed 0. The percentile
    interval interpolates at (B - 1)·level, so it pins B (21 seeds: no ties among the means)."""
    x = np.random.default_rng(31).normal(0.0, 1.0, 21)
    for size, given in ((2, {"num_resamples": 2}), (10_000, {})):
        got = paired.mean_intervals(x, "percentile", **given)
        expected = paired.mean_intervals(
            x, "percentile", counts=paired.resample_counts(21, size, seed=0)
        )
        assert (got[0][0], got[1][0]) == (expected[0][0], expected[1][0])


def test_student_t_interval_matches_scipy():
    """mean ± t(n-1)_{(1+c)/2}·sd/√n for n = 2 (the fewest allowed) up to 9, per row; the
    tolerance is the bisection's 1e-12 of t times se, plus rounding."""
    rng = np.random.default_rng(41)
    for n in (2, 3, 9):
        rows = rng.normal(0.3, 1.0, (3, n))
        for confidence in (0.8, 0.95):
            low, high = paired.mean_intervals(rows, "student-t", confidence)
            for i, row in enumerate(rows):
                se = statistics.stdev(row) / math.sqrt(n)
                half = stats.t.ppf((1 + confidence) / 2, n - 1) * se
                mean = statistics.fmean(row)
                np.testing.assert_allclose(
                    [low[i], high[i]], [mean - half, mean + half], rtol=1e-11, atol=1e-13
                )


def test_a_single_seed_gives_a_point_from_every_bootstrap_method_without_warnings():
    """One seed: no spread, so every bootstrap interval is that value, as floats."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in paired.INTERVAL_METHODS:
            if method == "student-t":
                continue
            low, high = paired.mean_intervals([[0.3], [-1.5]], method, num_resamples=20)
            assert low.dtype == high.dtype == np.float64, method
            np.testing.assert_array_equal(low, [0.3, -1.5])
            np.testing.assert_array_equal(high, [0.3, -1.5])


def test_a_constant_resample_at_the_mean_has_t_star_zero_without_warnings():
    """Seeds (0, 1, 2), mean 1. A resample of three 1s is constant but at the mean: t* = 0, not
    0/0. A resample of three 0s: t* = -inf. With the resamples {1,1,1}, {0,1,2} twice (t* = 0)
    every t* is 0 and the interval is the mean itself; the rank-3 |t*| of (0, 0, 0) is 0."""
    x = np.array([0.0, 1.0, 2.0])
    at_mean = np.array([[0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("symmetric-t", "symmetric-t-range", "bootstrap-t"):
            low, high = paired.mean_intervals(x, method, counts=at_mean)
            assert (low[0], high[0]) == (1.0, 1.0), method
        # Constant resamples away from the mean: t* = ±inf (x/0), still without warnings.
        away = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [2.0, 1.0, 0.0]])
        low, high = paired.mean_intervals(x, "symmetric-t", 0.4, counts=away)
    # Sorted |t*| = (0, |t|, inf, inf), |t| that of (0, 0, 1); rank ceil(5 · 0.4) = 2 picks |t|.
    sample = np.array([0.0, 0.0, 1.0])
    t = (sample.mean() - 1.0) / (sample.std(ddof=1) / math.sqrt(3))
    half = abs(t) * 1.0 / math.sqrt(3)
    np.testing.assert_allclose([low[0], high[0]], [1.0 - half, 1.0 + half], rtol=1e-14)


def test_studentised_intervals_where_the_standard_error_is_exactly_one():
    """Seeds (5, -5, 3, -3, 1, -1, 1, -1, 0): mean 0, sum of squares 72, sd 3, se = 3/√9 = 1
    exactly. A standard error of one is no zero spread: both intervals match the loop reference
    over resamples none of them constant, and neither end is the mean."""
    x = np.array([5.0, -5.0, 3.0, -3.0, 1.0, -1.0, 1.0, -1.0, 0.0])
    counts = paired.resample_counts(9, 120, seed=6)
    counts = counts[[np.ptp(r) > 0 for r in _resampled(x, counts)]][:99]
    confidence = 0.8
    symmetric, equal_tailed = _studentised_reference(x, counts, confidence)
    for method, expected in (("symmetric-t", symmetric), ("bootstrap-t", equal_tailed)):
        low, high = paired.mean_intervals(x, method, confidence, counts=counts)
        np.testing.assert_allclose([low[0], high[0]], expected, rtol=1e-12, atol=1e-12)
        assert low[0] < 0.0 < high[0], method


def test_studentised_intervals_are_a_point_where_the_standard_error_underflows():
    """Seeds (0, 0, 2^-1074) and their mirror: the squared deviations underflow, so se = 0,
    while resamples of the tiny seed have a mean off the float mean 0 and a zero sd (t* = ±inf).
    With no spread to scale, every studentised interval is the mean, 0, never inf·0 = NaN; the
    equal-tailed one without warnings."""
    x = np.array([[0.0, 0.0, 5e-324], [0.0, 0.0, -5e-324]])  # and mirrored: t* = -inf
    counts = paired.resample_counts(3, 200, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low, high = paired.mean_intervals(x, "bootstrap-t", counts=counts)
    np.testing.assert_array_equal([low, high], np.zeros((2, 2)))
    for method in ("symmetric-t", "symmetric-t-range"):
        with np.errstate(invalid="ignore"):
            low, high = paired.mean_intervals(x, method, counts=counts)
        np.testing.assert_array_equal([low, high], np.zeros((2, 2)), err_msg=method)


def test_range_clipping_is_per_row():
    """Two rows through one call: the stalled-seed sample and its mirror shifted by 10. Each
    studentised interval overshoots its own row's range on one side, and is clipped to that
    row's smallest or largest value, not to those of the whole array."""
    d = np.array([0.0] * 6 + [-0.001, 0.0005, -0.002, -0.55])
    rows = np.stack([d, 10.0 - d])
    low, high = paired.mean_intervals(rows, "symmetric-t-range", num_resamples=2000)
    wide = paired.mean_intervals(rows, "symmetric-t", num_resamples=2000)
    for i, row in enumerate(rows):
        assert wide[0][i] < row.min() and wide[1][i] > row.max()
        assert (low[i], high[i]) == (row.min(), row.max())
