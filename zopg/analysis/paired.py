"""Paired comparisons over shared seeds: the mean paired difference with a seed-bootstrap CI, an
exact sign-flip p-value, Holm's adjustment and the minimum detectable difference (docs/science.md
§12). NumPy and the standard library only; scipy checks it in the tests.

Which interval: coverage measured, not assumed. `python -m zopg.analysis.coverage` writes
results/ci_coverage.json: 4,000 simulated 10-seed data sets per shape (binomial SE of a coverage
0.002-0.007), 2,000 resamples, nominal 95%. `spans`: the share of data sets whose differences
span the true mean difference, the most an interval within the seeds' range can cover:

    shape of the paired differences    spans  percentile  BCa    boot-t  sym-t  chosen  t
    normal                             0.998  0.901       0.898  0.948   0.960  0.959   0.947
    skewed (exponential)               0.989  0.866       0.883  0.945   0.936  0.936   0.906
    80/20 stall mixture vs converging  0.893  0.877       0.876  0.893   0.892  0.892   0.886
    80/20 stall mixture vs the same    0.999  0.864       0.809  0.905   0.989  0.988   0.965
    80/20 vs 95/5 stall mixture        0.881  0.861       0.860  0.880   0.922  0.880   0.877
    ties at a ceiling (30% vs 10% off) 0.925  0.794       0.775  0.878   0.977  0.914   0.871

BCa is no better than the percentile interval at 10 seeds (both about 0.90 on normal data) and
worse on lumpy mixtures. The studentised intervals cover, but on lumpy data (one stalled seed,
ties at a ceiling) reach far beyond anything the seeds could average to (median width 1.8 on
differences within [-0.56, 0.01]) or are unbounded. CI_METHOD ("chosen") is the symmetric
studentised bootstrap clipped to the range of the differences: 0.936 or more on every shape
where nearly all data sets span the truth, 0.947-0.999 of the spanning data sets on every
shape, median width 0.54 on the first mixture. On a stall mixture against a method that always
converges nothing reaches 0.93: 0.8^10 = 10.7% of the data sets hold no stalled seed, every
difference is then about 0, and no interval of the seeds' spread reaches the true -0.108. An
interval of zero width is flagged (`zero_width`), never reported as certainty.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from zopg.analysis.stats import seed_resamples
from zopg.errors import ConfigError, checked_choice, checked_float, checked_int

INTERVAL_METHODS = (
    "percentile",
    "bca",
    "bootstrap-t",
    "symmetric-t",
    "symmetric-t-range",
    "student-t",
)
# Chosen from the measured coverage above; see the module docstring.
CI_METHOD = "symmetric-t-range"
CI_DESCRIPTIONS = {
    "percentile": "percentile bootstrap over seeds",
    "bca": "BCa bootstrap over seeds (bias-corrected, jackknife acceleration)",
    "bootstrap-t": "equal-tailed studentised (percentile-t) bootstrap over seeds",
    "symmetric-t": "symmetric studentised (percentile-t) bootstrap over seeds: mean ± q·se, "
    "q the order statistic ceil((B+1)·confidence) of |t*|",
    "symmetric-t-range": "symmetric studentised (percentile-t) bootstrap over seeds, clipped to "
    "the range of the paired differences",
    "student-t": "Student t interval: mean ± t(n-1)·sd/√n",
}
# Sign patterns are enumerated exactly up to this many seeds (2^20 = 1,048,576 patterns).
EXACT_SIGN_FLIP_MAX_N = 20
# Rows of sign patterns per vectorised chunk: 65,536 x n signs at a time.
SIGN_FLIP_CHUNK = 1 << 16
_NORMAL = NormalDist()


# -- distributions ------------------------------------------------------------------------------


def normal_cdf(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[float])(x / math.sqrt(2.0)))


def normal_quantile(p) -> np.ndarray:
    """Φ⁻¹(p); -inf at 0, +inf at 1 (as scipy's ndtri), NaN outside [0, 1]."""

    def one(q: float) -> float:
        if q == 0.0:
            return -math.inf
        if q == 1.0:
            return math.inf
        if not 0.0 < q < 1.0:
            return math.nan
        return _NORMAL.inv_cdf(q)

    return np.vectorize(one, otypes=[float])(np.asarray(p, dtype=float))


def t_cdf(t: float, df: int) -> float:
    """Student t CDF for an integer number of degrees of freedom, in closed form
    (Abramowitz & Stegun 26.7.3-4: a finite series in θ = atan(t/√df))."""
    df = checked_int("df", df, low=1)
    theta = math.atan(abs(t) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        # Odd df: A = (2/π)(θ + sinθ·cosθ·(1 + (2/3)cos²θ + (2·4)/(3·5)cos⁴θ + ...)).
        total, term = 0.0, 1.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        a = 2.0 / math.pi * (theta + s * math.cos(theta) * total) if df > 1 else 2 * theta / math.pi
    else:
        # Even df: A = sinθ·(1 + (1/2)cos²θ + (1·3)/(2·4)cos⁴θ + ...).
        total, term = 0.0, 1.0
        for k in range(1, df // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        a = s * total
    # A = P(|T| <= |t|).
    return 0.5 + 0.5 * a if t >= 0 else 0.5 - 0.5 * a


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with integer df, by bisection on t_cdf (to 1e-12)."""
    p = checked_float("p", p, 0.0, 1.0, low_open=True, high_open=True)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# -- the paired sample --------------------------------------------------------------------------


def paired_differences(values, baseline_values) -> tuple[np.ndarray, list[int], list[int]]:
    """(d, seeds kept, seeds dropped): d_i = values[i] - baseline_values[i] over the seed indices
    where both are finite. A seed a method has no value for is NaN in its array; seeds dropped
    for a non-finite value on either side are returned so the caller can say which."""
    values = np.asarray(values, dtype=float)
    baseline_values = np.asarray(baseline_values, dtype=float)
    if values.ndim != 1 or values.shape != baseline_values.shape:
        raise ConfigError(
            f"paired values: shapes {values.shape} and {baseline_values.shape}: must be two "
            "1-d arrays with one entry per seed index"
        )
    both = np.isfinite(values) & np.isfinite(baseline_values)
    kept = [int(i) for i in np.flatnonzero(both)]
    dropped = [int(i) for i in np.flatnonzero(~both)]
    return values[both] - baseline_values[both], kept, dropped


def _finite_samples(field: str, samples) -> np.ndarray:
    """[rows, n] finite floats, or a ConfigError naming the field."""
    samples = np.asarray(samples, dtype=float)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2 or samples.shape[1] < 1:
        raise ConfigError(f"{field}: shape {samples.shape}: must be [n] or [rows, n] with n >= 1")
    if not np.all(np.isfinite(samples)):
        bad = samples[~np.isfinite(samples)][0]
        raise ConfigError(
            f"{field} holds {bad}: must be finite; drop the seeds without a finite value first "
            "(paired_differences does)"
        )
    return samples


# -- bootstrap intervals ------------------------------------------------------------------------


def resample_counts(num_seeds: int, num_resamples: int, seed: int = 0) -> np.ndarray:
    """[num_resamples, num_seeds]: how often each seed is drawn in each resample, from the one
    resampling scheme of zopg (stats.seed_resamples). Resample means are then one matrix
    product, for one data set or thousands at once."""
    indices = seed_resamples(num_seeds, num_resamples, seed)
    counts = np.zeros((num_resamples, num_seeds))
    np.add.at(counts, (np.arange(num_resamples)[:, None], indices), 1.0)
    return counts


def _quantile_rows(sorted_rows: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per row, the linearly interpolated quantile at that row's level (numpy's and scipy's
    default 'linear' method: position level·(B-1))."""
    size = sorted_rows.shape[1]
    undefined = ~np.isfinite(levels)
    position = np.clip(np.where(undefined, 0.0, levels), 0.0, 1.0) * (size - 1)
    below = np.clip(np.floor(position).astype(int), 0, size - 1)
    above = np.minimum(below + 1, size - 1)
    weight = position - below
    rows = np.arange(sorted_rows.shape[0])
    low, high = sorted_rows[rows, below], sorted_rows[rows, above]
    # Written so that equal neighbours give exactly their value (no 0·inf).
    value = np.where(weight == 0.0, low, low + weight * (high - low))
    return np.where(undefined, np.nan, value)


def _order_statistic(values: np.ndarray, level: float) -> np.ndarray:
    """Per row, the ceil((B+1)·level)-th smallest value (1-based), the usual bootstrap-t
    quantile: no interpolation, so infinite t* (constant resamples) need no special case."""
    size = values.shape[1]
    rank = min(max(math.ceil((size + 1) * level), 1), size) - 1
    return np.partition(values, rank, axis=1)[:, rank]


def mean_intervals(
    samples,
    method: str = CI_METHOD,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), one per row of `samples` [rows, n] (or [n]), of the mean over the n seeds.

    Seeds are resampled (never time points), with the same resamples for every row (`counts`
    from resample_counts, else drawn from `seed`). A row whose values are all equal gets a
    zero-width interval from every method. BCa follows Efron & Tibshirani (14.3, 15.4) as
    scipy.stats.bootstrap does: z0 from the share of resample means below (half of those equal
    to) the mean, the acceleration from the jackknife, quantiles interpolated linearly.
    """
    method = checked_choice("ci method", method, INTERVAL_METHODS)
    confidence = checked_float("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    samples = _finite_samples("samples", samples)
    n = samples.shape[1]
    # A row of equal values has exactly that mean and zero deviations (a float mean of ten
    # 0.3s is not 0.3, and BCa would read the rounding as bias).
    constant = np.ptp(samples, axis=1) == 0
    theta = np.where(constant, samples[:, 0], samples.mean(axis=1))
    centred = np.where(constant[:, None], 0.0, samples - theta[:, None])
    sd = centred.std(axis=1, ddof=1) if n > 1 else np.zeros_like(theta)
    se = sd / math.sqrt(n)
    alpha = (1.0 - confidence) / 2.0
    if method == "student-t":
        if n < 2:
            raise ConfigError(f"student-t interval: n = {n} seeds: must be >= 2")
        half = t_quantile(1.0 - alpha, n - 1) * se
        return theta - half, theta + half
    if counts is None:
        counts = resample_counts(n, checked_int("num_resamples", num_resamples, low=2), seed)
    if counts.shape[1] != n:
        raise ConfigError(f"resample counts: {counts.shape[1]} seeds per resample, data have {n}")
    # Centred first, so the resample variances below do not cancel catastrophically.
    shift = centred @ counts.T / n  # [rows, B]: resample mean - mean
    if method in ("percentile", "bca"):
        ordered = np.sort(shift, axis=1)
        if method == "percentile":
            levels = np.full(theta.shape, alpha), np.full(theta.shape, 1.0 - alpha)
        else:
            levels = _bca_levels(centred, shift, alpha)
        return (
            theta + _quantile_rows(ordered, levels[0]),
            theta + _quantile_rows(ordered, levels[1]),
        )
    # Studentised: t* = (resample mean - mean) / (resample sd / √n); a constant resample has
    # t* = ±inf unless its mean is the mean (then 0).
    variance = np.maximum((centred**2) @ counts.T / n - shift**2, 0.0) * n / max(n - 1, 1)
    resample_se = np.sqrt(variance / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_star = np.where(
            resample_se > 0, shift / resample_se, np.where(shift == 0, 0.0, np.sign(shift) * np.inf)
        )
    if method.startswith("symmetric-t"):
        half = _order_statistic(np.abs(t_star), 1.0 - 2.0 * alpha) * se
        half = np.where(se == 0, 0.0, half)  # zero spread: every t* is 0, the interval a point
        if method == "symmetric-t":
            return theta - half, theta + half
        # The mean lies in the range of the seeds unless every seed fell on one side of it; a
        # studentised interval is not range-respecting by itself and on lumpy data (one stalled
        # seed, ties at a ceiling) reaches far beyond anything the seeds could average to.
        return np.maximum(theta - half, samples.min(axis=1)), np.minimum(
            theta + half, samples.max(axis=1)
        )
    upper_t = _order_statistic(t_star, 1.0 - alpha)
    lower_t = -_order_statistic(-t_star, 1.0 - alpha)
    with np.errstate(invalid="ignore"):
        low = np.where(se == 0, theta, theta - upper_t * se)
        high = np.where(se == 0, theta, theta - lower_t * se)
    return low, high


def _bca_levels(centred: np.ndarray, shift: np.ndarray, alpha: float):
    """BCa's adjusted quantile levels (alpha_1, alpha_2) per row; NaN where z0 is infinite
    (every resample mean on one side of the mean), as scipy gives NaN there."""
    size = shift.shape[1]
    share_below = ((shift < 0).sum(axis=1) + (shift <= 0).sum(axis=1)) / (2.0 * size)
    z0 = normal_quantile(share_below)
    # Jackknife of the mean: U_i = (n-1)(mean of leave-one-out means - leave-i-out mean) = x_i - x̄.
    cubes, squares = (centred**3).sum(axis=1), (centred**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        accel = np.where(squares > 0, cubes / (6.0 * squares**1.5), 0.0)
    z_alpha = float(normal_quantile(alpha))
    levels = []
    for z in (z_alpha, -z_alpha):
        with np.errstate(invalid="ignore"):
            num = z0 + z
            levels.append(normal_cdf(z0 + num / (1.0 - accel * num)))
    return levels


# -- the test -----------------------------------------------------------------------------------


def sign_flip_p_value(
    differences, num_flips: int = 100_000, seed: int = 0, exact_max_n: int = EXACT_SIGN_FLIP_MAX_N
) -> tuple[float, str]:
    """(p, how): the two-sided paired sign-flip permutation p-value of mean difference = 0.

    Under the null each seed's difference is as likely to have either sign, so p is the share
    of sign patterns s with |mean(s·d)| >= |mean(d)|, the observed pattern included. For
    n <= exact_max_n every one of the 2^n patterns is enumerated (how = "exact"; the smallest
    attainable p is then 2/2^n); above that, `num_flips` random patterns drawn from `seed`, and
    p = (1 + hits) / (1 + num_flips) (how = "monte-carlo"), which counts the observed pattern
    and is never 0. Ties are judged with a relative tolerance of 1e-9, so sums that are equal
    in exact arithmetic count as equal.
    """
    d = _finite_samples("differences", differences)[0]
    n = d.size
    observed = abs(d.mean())
    tolerance = 1e-9 * float(np.abs(d).mean())
    threshold = observed - tolerance
    if n <= exact_max_n:
        bits = np.arange(n)
        hits = 0
        for start in range(0, 1 << n, SIGN_FLIP_CHUNK):
            patterns = np.arange(start, min(start + SIGN_FLIP_CHUNK, 1 << n))
            signs = 1.0 - 2.0 * ((patterns[:, None] >> bits) & 1)
            hits += int((np.abs(signs @ d / n) >= threshold).sum())
        return hits / float(1 << n), "exact"
    num_flips = checked_int("num_flips", num_flips, low=1)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, num_flips, SIGN_FLIP_CHUNK):
        rows = min(SIGN_FLIP_CHUNK, num_flips - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(rows, n))
        hits += int((np.abs(signs @ d / n) >= threshold).sum())
    return (1 + hits) / (1 + num_flips), "monte-carlo"


def smallest_attainable_p(n: int, exact_max_n: int = EXACT_SIGN_FLIP_MAX_N) -> float:
    """The smallest p sign_flip_p_value can return with n seeds (exact: 2/2^n, both all-same-sign
    patterns; beyond exact_max_n the Monte Carlo floor depends on num_flips)."""
    return 2.0 / 2.0**n if n <= exact_max_n else 0.0


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values: sorted ascending, p_(i) · (m - i + 1) (i from 1),
    made non-decreasing and capped at 1. Reject the hypotheses with adjusted p < α: the same
    set Holm's procedure rejects at α, with the family-wise error rate at most α."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ConfigError(f"p-values {p.tolist()}: must be a 1-d array of numbers in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def minimum_detectable_difference(
    sd: float, n: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest true mean difference n paired seeds detect with the given power by a
    two-sided test at level alpha, from the spread sd of the paired differences:

        MDD = (t_{1-α/2, n-1} + t_{power, n-1}) · sd / √n

    (the usual approximation to the paired t-test's power, which ignores the non-centrality
    of t; the sign-flip test is about as powerful as the t-test on such data). Unadjusted α:
    after Holm's adjustment over a family the first test is held to α/m, so this is a lower
    bound on what a family can resolve."""
    n = checked_int("n", n, low=2)
    sd = checked_float("sd", sd, 0.0)
    return (t_quantile(1.0 - alpha / 2.0, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def verdict(mean_difference: float, p_adjusted: float | None, alpha: float = 0.05) -> str:
    """The verdict on a method against its baseline: better or worse when the Holm-adjusted p
    is below alpha (by the sign of the mean difference), else no detectable difference; not
    tested without a p-value."""
    if p_adjusted is None:
        return "not tested"
    if p_adjusted < alpha:
        return "better" if mean_difference > 0 else "worse"
    return "no detectable difference"


def compare_paired(
    differences,
    method: str = CI_METHOD,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict:
    """Everything about one set of paired differences except the Holm adjustment (which needs
    the family): n, mean, sd, the CI (None with a note below 3 seeds; flagged zero_width when
    every difference is equal; flagged unbounded when the studentised resamples are too often
    constant to bound it), the sign-flip p-value and the MDD."""
    d = _finite_samples("differences", differences)[0]
    n = d.size
    notes = []
    record = {
        "n": n,
        "mean_difference": float(d.mean()),
        "sd_difference": float(d.std(ddof=1)) if n > 1 else None,
        "ci": [None, None],
        "ci_method": method,
        "confidence": confidence,
        "zero_width": False,
        "unbounded": False,
        "clipped": False,
    }
    if n < 3:
        notes.append(f"{n} paired seeds (< 3): no interval, and no p-value below {2 / 2**n:g}")
    elif np.ptp(d) == 0.0:
        record["ci"] = [float(d[0]), float(d[0])]
        record["zero_width"] = True
        notes.append(
            f"all {n} paired differences equal {d[0]:.6g}: the interval has zero width, which "
            "says the seeds did not vary, not that the difference is known"
        )
    else:
        low, high = mean_intervals(d, method, confidence, num_resamples, seed)
        low, high = float(low[0]), float(high[0])
        if not (np.isfinite(low) and np.isfinite(high)):
            record["unbounded"] = True
            notes.append(
                "the interval is unbounded: too many resamples are constant for the "
                "studentised bootstrap to bound the mean difference"
                if method in ("bootstrap-t", "symmetric-t", "symmetric-t-range")
                else "the interval is undefined for these data (BCa: every resample on one side)"
            )
        record["ci"] = [low if np.isfinite(low) else None, high if np.isfinite(high) else None]
        # Clipped: the studentised interval reached beyond the observed differences, so the
        # seeds bound the mean difference no better than their extremes.
        record["clipped"] = bool(
            method == "symmetric-t-range" and (low <= d.min() or high >= d.max())
        )
    p, how = sign_flip_p_value(d, seed=seed)
    record["p"] = p
    record["p_method"] = how
    record["mdd"] = (
        minimum_detectable_difference(record["sd_difference"], n, alpha, power) if n > 1 else None
    )
    record["notes"] = notes
    return record
