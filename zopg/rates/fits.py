"""Log-log slope and floor fits of rate sweeps, with 95% CIs from resampling whole seeds.

Per-seed values [seeds, grid] are reduced over seeds (mean, or the root of a mean of squares);
confidence intervals resample seeds, never grid points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from zopg.analysis.stats import seed_resamples
from zopg.errors import bad_value, unknown_name

REDUCTIONS: dict[str, Callable] = {
    "mean": lambda values: np.mean(values, axis=-2),
    # For quantities measured as unbiased estimates of a squared norm (which may come out
    # negative for one seed): the norm of the mean, not the mean of per-seed norms.
    "sqrt-mean": lambda values: np.sqrt(np.maximum(np.mean(values, axis=-2), 0.0)),
}


def _reduction(reduce: str | Callable) -> Callable:
    if callable(reduce):
        return reduce
    if reduce not in REDUCTIONS:
        raise unknown_name("reduction", reduce, REDUCTIONS)
    return REDUCTIONS[reduce]


def window_mask(grid, window) -> np.ndarray:
    """The grid points inside the closed window [low, high]; at least three are required."""
    grid = np.asarray(grid, dtype=float)
    low, high = window
    mask = (grid >= low) & (grid <= high)
    if mask.sum() < 3:
        raise bad_value(
            "window", list(window), f"must contain at least 3 grid points of {grid.tolist()}"
        )
    return mask


def loglog_slopes(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of log y on log x along the last axis (NaN if y <= 0)."""
    lx = np.log(np.asarray(x, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.where(np.asarray(y) > 0, np.log(np.maximum(y, 1e-300)), np.nan)
    dx = lx - lx.mean()
    slope = (ly * dx).sum(axis=-1) / (dx**2).sum()
    return slope, ly.mean(axis=-1) - slope * lx.mean()


def _percentile_ci(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    return (float(np.quantile(samples, alpha)), float(np.quantile(samples, 1.0 - alpha)))


@dataclasses.dataclass(frozen=True)
class SlopeFit:
    """A log-log slope on a window, with its seed-bootstrap CI."""

    slope: float
    ci: tuple[float, float]
    intercept: float
    window: tuple[float, float]
    confidence: float

    def covers(self, value: float) -> bool:
        return bool(self.ci[0] <= value <= self.ci[1])


def fit_slope(
    grid,
    per_seed,
    window,
    reduce: str | Callable = "mean",
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> SlopeFit:
    """Slope of log(reduce over seeds) against log x on `window`; CI by resampling seeds."""
    per_seed = np.asarray(per_seed, dtype=float)
    mask = window_mask(grid, window)
    reduce = _reduction(reduce)
    x = np.asarray(grid, dtype=float)[mask]
    slope, intercept = loglog_slopes(x, reduce(per_seed[:, mask]))
    idx = seed_resamples(per_seed.shape[0], num_resamples, seed)
    boot, _ = loglog_slopes(x, reduce(per_seed[idx][:, :, mask]))
    return SlopeFit(
        float(slope), _percentile_ci(boot, confidence), float(intercept), tuple(window), confidence
    )


def curve_band(per_seed, reduce="mean", confidence=0.95, num_resamples=2000, seed=0):
    """(reduced curve, low, high, relative standard error) at every grid point, over seeds."""
    per_seed = np.asarray(per_seed, dtype=float)
    reduce = _reduction(reduce)
    boot = reduce(per_seed[seed_resamples(per_seed.shape[0], num_resamples, seed)])
    alpha = (1.0 - confidence) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_se = np.std(np.log(boot), axis=0)
    return (
        reduce(per_seed),
        np.quantile(boot, alpha, axis=0),
        np.quantile(boot, 1.0 - alpha, axis=0),
        rel_se,
    )


@dataclasses.dataclass(frozen=True)
class FloorFit:
    """y = scale * x**exponent + floor, with seed-bootstrap CIs of the exponent and the floor."""

    scale: float
    exponent: float
    floor: float
    exponent_ci: tuple[float, float]
    floor_ci: tuple[float, float]
    # One per bootstrap resample, for fits across sweeps.
    floor_samples: np.ndarray = dataclasses.field(repr=False)

    def curve(self, x) -> np.ndarray:
        return self.scale * np.asarray(x, dtype=float) ** self.exponent + self.floor


def _floor_least_squares(x: np.ndarray, y: np.ndarray, exponents: np.ndarray):
    """Best (scale, exponent, floor) for each row of y [..., n] in log error, scale, floor >= 0.

    For a fixed exponent the model is linear in (scale, floor); we solve that in relative error,
    a first-order match to log error that stays linear, then pick the exponent whose solution
    has the smallest log error.
    """
    y = y[..., None, :]  # [..., 1, n]
    a = x[None, :] ** exponents[:, None] / y  # [..., B, n]
    b = 1.0 / y
    saa, sab, sbb = (a * a).sum(-1), (a * b).sum(-1), (b * b).sum(-1)
    sa, sb = a.sum(-1), b.sum(-1)
    det = saa * sbb - sab**2
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (sa * sbb - sb * sab) / det
        floor = (sb * saa - sa * sab) / det
        # Where a bound binds, the other parameter is refit alone.
        scale_only, floor_only = sa / saa, sb / sbb
    scale = np.where(floor < 0, scale_only, scale)
    floor = np.where(floor < 0, 0.0, floor)
    floor = np.where(scale < 0, floor_only, floor)
    scale = np.maximum(scale, 0.0)
    model = scale[..., None] * x ** exponents[:, None] + floor[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        error = ((np.log(model) - np.log(y)) ** 2).sum(-1)
    error = np.where(np.isfinite(error), error, np.inf)
    best = np.argmin(error, axis=-1)
    take = lambda v: np.take_along_axis(v, best[..., None], axis=-1)[..., 0]  # noqa: E731
    return take(scale), exponents[best], take(floor)


def fit_floor(
    grid,
    per_seed,
    window=None,
    reduce: str | Callable = "mean",
    exponents=None,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> FloorFit:
    """Fit c·x^b + floor (c, floor >= 0) to the reduced curve; CIs by resampling seeds."""
    per_seed = np.asarray(per_seed, dtype=float)
    grid = np.asarray(grid, dtype=float)
    mask = window_mask(grid, window) if window is not None else np.ones(grid.shape, bool)
    exponents = np.linspace(-4.0, 4.0, 801) if exponents is None else np.asarray(exponents)
    reduce = _reduction(reduce)
    x = grid[mask]
    c, b, f = _floor_least_squares(x, reduce(per_seed[:, mask]), exponents)
    idx = seed_resamples(per_seed.shape[0], num_resamples, seed)
    _, boot_b, boot_f = _floor_least_squares(x, reduce(per_seed[idx][:, :, mask]), exponents)
    return FloorFit(
        float(c),
        float(b),
        float(f),
        _percentile_ci(boot_b, confidence),
        _percentile_ci(boot_f, confidence),
        boot_f,
    )


def family_slope(xs, floor_fits: list[FloorFit], confidence: float = 0.95) -> SlopeFit:
    """Log-log slope of fitted floors against a setting (e.g. M), CI from jointly resampled seeds.

    Valid when every fit used the same seeds and resampling seed (the default), so resample r of
    each fit drew the same seeds.
    """
    floors = np.array([f.floor for f in floor_fits])
    samples = np.stack([f.floor_samples for f in floor_fits], axis=-1)
    slope, intercept = loglog_slopes(xs, floors)
    boot, _ = loglog_slopes(xs, samples)
    window = (float(min(xs)), float(max(xs)))
    return SlopeFit(
        float(slope), _percentile_ci(boot, confidence), float(intercept), window, confidence
    )
