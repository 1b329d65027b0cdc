"""Paired statistics (zopg.analysis.paired) against code we did not write (scipy), worked
examples, and the measured coverage of the chosen interval (zopg.analysis.coverage)."""

import math

import numpy as np
import pytest
from scipy import special, stats

from zopg.analysis import paired
from zopg.analysis.coverage import measure_coverage
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
