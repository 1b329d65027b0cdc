"""Statistics over seeds: interquartile mean, seed-bootstrap confidence intervals, crossings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Fewer seeds than this and a seed-bootstrap interval is not to be trusted: n seeds allow only
# C(2n - 1, n) distinct resamples (35 at n = 4, 1 at n = 1), so the percentile interval is far
# narrower than the truth. Figures then draw no band and the printed table says so; summary.json
# keeps the numbers as computed.
MIN_SEEDS_FOR_CI = 5


def iqm(values, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (robust, yet uses half the samples)."""
    values = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = values.shape[axis]
    lo, hi = n // 4, n - n // 4
    return np.take(values, np.arange(lo, hi), axis=axis).mean(axis=axis)


def seed_resamples(num_seeds: int, num_resamples: int, seed: int = 0) -> np.ndarray:
    """[num_resamples, num_seeds] indices of seeds drawn with replacement: the one resampling
    scheme of every CI and band in zopg. The same seed gives the same indices everywhere, so
    statistics over equally many seeds are resampled jointly."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_seeds, size=(num_resamples, num_seeds))


def bootstrap_band(values, num_resamples: int = 1000, seed: int = 0, confidence: float = 0.95):
    """(mean, low, high) over the seeds (axis 0) at every later index, e.g. each logged
    iteration of a curve: the band of the mean from resampling whole seeds."""
    values = np.asarray(values, dtype=float)
    means = values[seed_resamples(values.shape[0], num_resamples, seed)].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return (
        values.mean(axis=0),
        np.quantile(means, alpha, axis=0),
        np.quantile(means, 1.0 - alpha, axis=0),
    )


def bootstrap_ci(
    values,
    statistic: Callable = np.median,
    confidence: float = 0.95,
    num_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` over the first axis (seeds, never time points).

    `statistic` must accept `axis=` (np.mean, np.median, iqm). Infinite values (e.g. a seed that
    never reached a threshold) are allowed and propagate as they should for order statistics.
    """
    values = np.asarray(values, dtype=float)
    stats = statistic(values[seed_resamples(values.shape[0], num_resamples, seed)], axis=1)
    alpha = (1.0 - confidence) / 2.0
    low = np.quantile(stats, alpha, method="lower")
    high = np.quantile(stats, 1.0 - alpha, method="higher")
    return float(low), float(high)


def first_crossing(curves, xs, threshold: float) -> np.ndarray:
    """Per row of `curves` [seeds, T], the x at the first index with curve >= threshold (inf if
    never). `xs` is [T] or [seeds, T] (e.g. cumulative queries)."""
    curves = np.asarray(curves, dtype=float)
    xs = np.broadcast_to(np.asarray(xs, dtype=float), curves.shape)
    reached = curves >= threshold
    first = np.argmax(reached, axis=1)
    out = xs[np.arange(curves.shape[0]), first]
    return np.where(reached.any(axis=1), out, np.inf)
