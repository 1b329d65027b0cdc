"""Statistics over seeds: interquartile mean, seed-bootstrap confidence intervals, crossings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def iqm(values, axis: int = 0) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (robust, yet uses half the samples)."""
    values = np.sort(np.asarray(values, dtype=float), axis=axis)
    n = values.shape[axis]
    lo, hi = n // 4, n - n // 4
    return np.take(values, np.arange(lo, hi), axis=axis).mean(axis=axis)


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
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(num_resamples, values.shape[0]))
    stats = statistic(values[idx], axis=1)
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
