"""The over-optimisation fits (zopg.analysis.overoptimisation): recovery of known α, β for both
forms of Gao, Schulman & Hilton (2023), the peak in closed form and by grid search, seed-bootstrap
intervals that cover and that resample seeds, curves without a peak, refusals and the figure."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from zopg.analysis import fit_overoptimisation, overoptimisation_curve, stats
from zopg.analysis import overoptimisation as oo
from zopg.errors import ConfigError

# (α, β) of each form: peaks at d* = 1.875 (bon) and e (rl), inside the d range used below.
TRUE = {"bon": (1.5, 0.4), "rl": (1.0, 0.5)}


def curve(form, alpha, beta, d):
    """The two laws written out independently of the module (d log d = 0 at d = 0)."""
    d = np.asarray(d, dtype=float)
    if form == "bon":
        return d * (alpha - beta * d)
    return d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))


def design(form, d):
    d = np.asarray(d, dtype=float).reshape(-1)
    second = d * d if form == "bon" else d * np.log(np.where(d > 0, d, 1.0))
    return np.stack([d, -second], axis=1)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_zero_noise_recovers_alpha_beta_exactly(form):
    alpha, beta = TRUE[form]
    d = np.tile(np.linspace(0.0, 4.0, 9), (3, 1))
    fit = fit_overoptimisation(d, curve(form, alpha, beta, d), form)
    assert fit.form == form and fit.num_seeds == 3
    np.testing.assert_allclose([fit.alpha, fit.beta], [alpha, beta], rtol=1e-12, atol=1e-12)
    # Three identical seeds: every resample is the same data, so every interval is a point.
    for ci, value in zip((fit.alpha_ci, fit.beta_ci), (alpha, beta), strict=True):
        np.testing.assert_allclose(ci, [value, value], rtol=1e-9)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_noisy_fit_within_four_standard_errors(form):
    alpha, beta = TRUE[form]
    rng = np.random.default_rng(7)
    sigma = 0.2
    # Each seed at its own d (sorted uniforms, plus the reference at 0): the fit pools them.
    d = np.sort(rng.uniform(0.0, 4.0, size=(6, 25)), axis=1)
    d[:, 0] = 0.0
    gold = curve(form, alpha, beta, d) + sigma * rng.normal(size=d.shape)
    fit = fit_overoptimisation(d, gold, form)
    # Ordinary least squares with iid noise: Cov = σ² (XᵀX)⁻¹ over the pooled points.
    x = design(form, d)
    se = sigma * np.sqrt(np.diag(np.linalg.inv(x.T @ x)))
    assert abs(fit.alpha - alpha) <= 4 * se[0]
    assert abs(fit.beta - beta) <= 4 * se[1]
    # And the errors are not zero: the tolerance is not vacuous against noise this large.
    assert se[0] < 0.1 * alpha and se[1] < 0.1 * beta


def grid_peak(form, alpha, beta):
    grid = np.linspace(0.0, 10.0, 200_001)
    values = curve(form, alpha, beta, grid)
    i = int(np.argmax(values))
    return grid[i], values[i], grid[1] - grid[0]


@pytest.mark.parametrize(
    "form, alpha, beta, d_star, gold_star",
    [
        ("bon", 1.5, 0.4, 1.5 / 0.8, 1.5**2 / 1.6),
        ("rl", 1.0, 0.5, np.e, 0.5 * np.e),
        # α ≤ 0 < β: best-of-n's curve only falls on d ≥ 0, so the peak is the reference.
        ("bon", -0.5, 0.4, 0.0, 0.0),
        # rl always rises first (−β d log d > 0 near 0): the peak is inside even with α < 0.
        ("rl", -0.5, 0.5, np.exp(-2.0), 0.5 * np.exp(-2.0)),
    ],
)
def test_peak_matches_closed_form_and_grid_argmax(form, alpha, beta, d_star, gold_star):
    d = np.tile(np.linspace(0.0, 4.0, 17), (2, 1))
    fit = fit_overoptimisation(d, curve(form, alpha, beta, d), form)
    assert fit.d_star == pytest.approx(d_star, rel=1e-9, abs=1e-12)
    assert fit.gold_star == pytest.approx(gold_star, rel=1e-9, abs=1e-12)
    at, best, step = grid_peak(form, alpha, beta)
    assert abs(fit.d_star - at) <= step
    # The grid's maximum is below the true one by at most the curvature times step².
    assert best <= fit.gold_star + 1e-12
    assert fit.gold_star - best < 1e-8
    assert overoptimisation_curve(fit, fit.d_star) == pytest.approx(fit.gold_star, abs=1e-12)


def test_curve_evaluates_both_ways():
    d = np.array([0.0, 1.0, 2.0, 3.5])
    for form, (alpha, beta) in TRUE.items():
        expected = curve(form, alpha, beta, d)
        np.testing.assert_allclose(overoptimisation_curve(form, alpha, beta, d), expected)
        fit = fit_overoptimisation(np.tile(d, (2, 1)), np.tile(expected, (2, 1)), form)
        np.testing.assert_allclose(overoptimisation_curve(fit, d), expected, atol=1e-12)
    # Points worked by hand: bon at 2 is 2(1.5 − 0.8); rl at 1 is α, at 0 is 0 (d log d → 0).
    assert overoptimisation_curve("bon", 1.5, 0.4, 2.0) == pytest.approx(1.4)
    np.testing.assert_allclose(overoptimisation_curve("rl", 1.0, 0.5, [0.0, 1.0]), [0.0, 1.0])


# Coverage: 200 experiments of 20 seeds, each seed with its own α and β (a seed-level effect, as
# real runs have), so only a bootstrap over seeds is calibrated. With 20 seeds the percentile
# interval's coverage measured 0.93-0.94 at 95% nominal; requiring ≥ 85% of 200 puts the bar
# ≥ 4.5 binomial sds below the expected count (sd ≈ 3.5), so a chance failure after a change of
# random streams has probability < 1e-5. The mean half-width must also match the estimates'
# actual spread (1.96 sd across experiments; measured 0.92-1.0): intervals that were right only
# by being too wide, or too narrow, fail here. Runs in about a second.
@pytest.mark.parametrize("form", ["bon", "rl"])
def test_bootstrap_intervals_cover_and_match_the_spread(form):
    alpha, beta = TRUE[form]
    d_star = float(oo.overoptimisation_peak(form, alpha, beta)[0])
    rng = np.random.default_rng(11)
    num_seeds, repetitions = 20, 200
    d = np.tile(np.linspace(0.0, 4.0, 16), (num_seeds, 1))
    covered, estimates, half_widths = [], [], []
    for r in range(repetitions):
        alphas = alpha + 0.1 * rng.normal(size=(num_seeds, 1))
        betas = beta + 0.03 * rng.normal(size=(num_seeds, 1))
        gold = curve(form, alphas, betas, d) + 0.1 * rng.normal(size=d.shape)
        fit = fit_overoptimisation(d, gold, form, num_resamples=500, seed=r)
        cis = (fit.alpha_ci, fit.beta_ci, fit.d_star_ci)
        truth = (alpha, beta, d_star)
        covered.append([lo <= v <= hi for (lo, hi), v in zip(cis, truth, strict=True)])
        estimates.append([fit.alpha, fit.beta, fit.d_star])
        half_widths.append([(hi - lo) / 2 for lo, hi in cis])
    coverage = np.mean(covered, axis=0)
    assert np.all(coverage >= 0.85), coverage
    ratio = np.mean(half_widths, axis=0) / (1.96 * np.std(estimates, axis=0, ddof=1))
    assert np.all((ratio > 0.75) & (ratio < 1.25)), ratio


def test_bootstrap_resamples_whole_seeds():
    """Ten seeds on one curve, one of them with α larger by c and no noise: a resample's α is
    α + c · (times that seed was drawn) / 10 exactly, so the interval is fixed by the counts of
    stats.seed_resamples. Resampling points instead would give a share of Bin(160, 0.1) / 160,
    an interval about 4× narrower."""
    alpha, beta, c, shifted = 1.5, 0.4, 1.0, 3
    d = np.tile(np.linspace(0.25, 4.0, 16), (10, 1))
    gold = curve("bon", alpha, beta, d)
    gold[shifted] = curve("bon", alpha + c, beta, d[shifted])
    fit = fit_overoptimisation(d, gold, "bon", num_resamples=2000, seed=5)
    counts = (stats.seed_resamples(10, 2000, 5) == shifted).sum(axis=1)
    low = np.quantile(counts, 0.025, method="lower")
    high = np.quantile(counts, 0.975, method="higher")
    assert (low, high) == (0, 3)  # Bin(10, 0.1): P(0) = 0.35, P(≤ 2) = 0.93, P(≤ 3) = 0.99
    np.testing.assert_allclose(fit.alpha, alpha + c / 10, rtol=1e-12)
    np.testing.assert_allclose(fit.alpha_ci, [alpha + c * low / 10, alpha + c * high / 10])
    np.testing.assert_allclose(fit.beta_ci, [beta, beta], rtol=1e-9)
    expected = np.array([alpha + c * low / 10, alpha + c * high / 10]) / (2 * beta)
    np.testing.assert_allclose(fit.d_star_ci, expected, rtol=1e-9)


def test_bootstrap_uses_seed_resamples_with_the_number_of_seeds(monkeypatch):
    calls, original = [], stats.seed_resamples

    def recording(num_seeds, num_resamples, seed=0):
        calls.append((num_seeds, num_resamples, seed))
        return original(num_seeds, num_resamples, seed)

    monkeypatch.setattr(stats, "seed_resamples", recording)
    d = np.tile(np.linspace(0.0, 4.0, 6), (4, 1))
    fit_overoptimisation(d, curve("rl", 1.0, 0.5, d), "rl", num_resamples=37, seed=9)
    assert calls == [(4, 37, 9)]


def test_one_seed_has_estimates_and_nan_intervals():
    d = np.linspace(0.0, 4.0, 12)[None]
    fit = fit_overoptimisation(d, curve("bon", 1.5, 0.4, d), "bon")
    assert fit.num_seeds == 1
    assert fit.alpha == pytest.approx(1.5) and fit.d_star == pytest.approx(1.875)
    for ci in (fit.alpha_ci, fit.beta_ci, fit.d_star_ci, fit.gold_star_ci):
        assert np.isnan(ci).all()


def test_negative_beta_has_no_peak():
    d = np.tile(np.linspace(0.0, 3.0, 10), (6, 1))
    rng = np.random.default_rng(3)
    gold = curve("bon", 0.5, -0.2, d) + 0.01 * rng.normal(size=d.shape)
    fit = fit_overoptimisation(d, gold, "bon")
    assert fit.beta < 0 and fit.beta_ci[1] < 0
    assert fit.d_star == np.inf and fit.gold_star == np.inf
    assert fit.d_star_ci == (np.inf, np.inf) and fit.gold_star_ci == (np.inf, np.inf)


def test_intervals_with_some_resamples_without_a_peak():
    """β = 0 in truth: some resamples fit β < 0 (no peak, d* = inf). The upper bounds of d* and
    gold* are then inf, the lower ones finite, and nothing is nan."""
    rng = np.random.default_rng(4)
    d = np.tile(np.linspace(0.0, 3.0, 10), (8, 1))
    gold = curve("rl", 0.8, 0.0, d) + 0.3 * rng.normal(size=d.shape)
    fit = fit_overoptimisation(d, gold, "rl")
    assert fit.beta_ci[0] < 0 < fit.beta_ci[1]  # the premise: resamples on both sides
    for low, high in (fit.d_star_ci, fit.gold_star_ci):
        assert np.isfinite(low) and high == np.inf


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_peak_of_flat_and_rising_curves(form):
    d_star, gold_star = oo.overoptimisation_peak(form, [1.0, -1.0, 1.0], [0.0, 0.0, -1.0])
    # β = 0: R = α d rises without bound for α > 0 and peaks at the origin for α ≤ 0.
    np.testing.assert_array_equal(d_star, [np.inf, 0.0, np.inf])
    np.testing.assert_array_equal(gold_star, [np.inf, 0.0, np.inf])


GOOD_D = np.tile(np.linspace(0.0, 2.0, 5), (3, 1))
GOOD_GOLD = curve("bon", 1.5, 0.4, GOOD_D)


def test_unknown_form_message():
    with pytest.raises(ConfigError) as err:
        fit_overoptimisation(GOOD_D, GOOD_GOLD, "ppo")
    assert str(err.value) == "form = 'ppo': must be one of bon, rl"


def test_negative_d_message_names_the_element():
    d = GOOD_D.copy()
    d[1, 2] = -0.5
    with pytest.raises(ConfigError) as err:
        fit_overoptimisation(d, GOOD_GOLD, "bon")
    assert str(err.value) == (
        "d[1, 2] = -0.5: must be finite and >= 0 (d is √KL(π‖π_ref), a distance)"
    )


def test_one_dimensional_input_message():
    with pytest.raises(ConfigError) as err:
        fit_overoptimisation(GOOD_D[0], GOOD_GOLD[0], "bon")
    assert str(err.value) == (
        "d has shape (5,): must be 2-D, [seeds, points] (one row per seed; a single seed is "
        "x[None])"
    )


def with_value(array, where, value):
    array = array.copy()
    array[where] = value
    return array


@pytest.mark.parametrize(
    "d, gold, kwargs, match",
    [
        (GOOD_D, GOOD_GOLD[:2], {}, r"gold has shape \(2, 5\): they must match"),
        (GOOD_D[..., None], GOOD_GOLD, {}, r"d has shape \(3, 5, 1\): must be 2-D"),
        (GOOD_D[:, :1], GOOD_GOLD[:, :1], {}, r"shape \(3, 1\): need at least 1 seed and 2"),
        (GOOD_D[:0], GOOD_GOLD[:0], {}, r"shape \(0, 5\)"),
        (with_value(GOOD_D, (0, 1), np.inf), GOOD_GOLD, {}, r"d\[0, 1\] = inf: must be finite"),
        (with_value(GOOD_D, (2, 4), np.nan), GOOD_GOLD, {}, r"d\[2, 4\] = nan: must be finite"),
        (GOOD_D, with_value(GOOD_GOLD, (1, 3), np.nan), {}, r"gold\[1, 3\] = nan: must be finite"),
        # Seed 1 has one distinct d > 0: the two columns are collinear for that seed alone.
        (
            with_value(GOOD_D, 1, [0.0, 1.0, 1.0, 0.0, 1.0]),
            GOOD_GOLD,
            {},
            r"d\[1\] = \[0.0, 1.0, 1.0, 0.0, 1.0\] has 1 distinct positive values: each seed",
        ),
        ([["a", "b"]], [[1.0, 2.0]], {}, r"d = \[\['a', 'b'\]\]: must be an array of real"),
        (GOOD_D, GOOD_GOLD, {"confidence": 1.0}, r"confidence = 1.0: must be in \(0, 1\)"),
        (GOOD_D, GOOD_GOLD, {"num_resamples": 0}, r"num_resamples = 0: must be an integer"),
        (GOOD_D, GOOD_GOLD, {"seed": -1}, r"seed = -1: must be an integer in \[0, inf\]"),
    ],
)
def test_bad_inputs_are_refused(d, gold, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fit_overoptimisation(d, gold, "bon", **kwargs)


def test_bad_curve_arguments_are_refused():
    fit = fit_overoptimisation(GOOD_D, GOOD_GOLD, "bon")
    with pytest.raises(ConfigError, match="pass only d"):
        overoptimisation_curve(fit, 1.5, 0.4, [1.0])
    with pytest.raises(ConfigError, match="pass alpha, beta and d"):
        overoptimisation_curve("bon", [1.0])
    with pytest.raises(ConfigError, match=r"form = 'dpo': must be one of bon, rl"):
        overoptimisation_curve("dpo", 1.0, 0.5, [1.0])
    with pytest.raises(ConfigError, match=r"d\[1\] = -1.0"):
        overoptimisation_curve("rl", 1.0, 0.5, [1.0, -1.0])


def gids(ax):
    return [line.get_gid() for line in ax.lines]


def test_plot_draws_seeds_mean_fit_peak_and_proxy():
    rng = np.random.default_rng(0)
    d = np.tile(np.linspace(0.0, 4.0, 12), (5, 1))
    gold = curve("bon", 1.5, 0.4, d) + 0.05 * rng.normal(size=d.shape)
    fit = fit_overoptimisation(d, gold, "bon", num_resamples=200)
    ax = Figure().add_subplot()
    assert oo.plot_overoptimisation(ax, d, gold, fit, proxy=gold + d, label="GRU-16") is ax
    found = gids(ax)
    assert found.count(oo.GIDS["seed"]) == 5
    for name in ("mean", "fit", "peak", "proxy"):
        assert found.count(oo.GIDS[name]) == 1, name
    by_gid = {line.get_gid(): line for line in ax.lines}
    peak = by_gid[oo.GIDS["peak"]]
    assert (peak.get_xdata()[0], peak.get_ydata()[0]) == (fit.d_star, fit.gold_star)
    line = by_gid[oo.GIDS["fit"]]
    np.testing.assert_allclose(line.get_ydata(), overoptimisation_curve(fit, line.get_xdata()))
    assert by_gid[oo.GIDS["proxy"]].get_linestyle() == "--"
    # One colour for the whole group; with 5 seeds, the peak's interval is drawn.
    assert len({line.get_color() for line in ax.lines}) == 1
    assert len(ax.collections) == 1
    assert "GRU-16" in ax.get_legend_handles_labels()[1]


def test_plot_without_a_peak_or_proxy():
    d = np.tile(np.linspace(0.0, 3.0, 10), (2, 1))
    gold = curve("bon", 0.5, -0.2, d)
    fit = fit_overoptimisation(d, gold, "bon")
    ax = Figure().add_subplot()
    oo.plot_overoptimisation(ax, d, gold, fit, color="C3")
    assert sorted(gids(ax)) == sorted(
        [oo.GIDS["mean"], oo.GIDS["fit"], oo.GIDS["seed"], oo.GIDS["seed"]]
    )
    assert not ax.collections
