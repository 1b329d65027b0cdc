"""Over-optimisation fits: gold reward against d = √KL(π‖π_ref), with seed-bootstrap intervals."""

from __future__ import annotations

import dataclasses

import numpy as np

from zopg.analysis import stats
from zopg.errors import ConfigError, bad_value, checked_choice, checked_float, checked_int

# Gao, Schulman & Hilton (2023), "Scaling laws for reward model overoptimization":
# best-of-n follows R(d) = d (α − β d), RL follows R(d) = d (α − β log d).
FORMS = ("bon", "rl")

NAN_CI = (float("nan"), float("nan"))

# gids of plot_overoptimisation's artists.
GIDS = {
    "mean": "overoptimisation-mean",
    "seed": "overoptimisation-seed",
    "fit": "overoptimisation-fit",
    "peak": "overoptimisation-peak",
    "proxy": "overoptimisation-proxy",
}


@dataclasses.dataclass(frozen=True)
class OveroptimisationFit:
    """A fitted over-optimisation curve: R(d) = d (α − β d) ("bon") or d (α − β log d) ("rl").

    d_star is the maximiser of the fitted curve over d ≥ 0 and gold_star = R(d_star). Where the
    curve rises without bound (β < 0, or β = 0 with α > 0) there is no peak: d_star and
    gold_star are both +inf. Where it never rises above 0 (best-of-n with α ≤ 0 < β, or β = 0
    with α ≤ 0) the peak is the reference itself: d_star = gold_star = 0. An "rl" peak beyond
    float range (α/β > ~710) is reported as +inf too.

    The *_ci fields are percentile intervals (lower/upper order statistics, as
    zopg.analysis.stats.bootstrap_ci) over refits on seeds resampled with replacement. Resamples
    without a peak contribute +inf to d_star and gold_star, so an upper bound of +inf says that
    at least that share of resamples had no peak. With one seed there is nothing to resample and
    every interval is (nan, nan); with fewer than stats.MIN_SEEDS_FOR_CI seeds the intervals
    are computed but too narrow to trust.
    """

    form: str
    alpha: float
    beta: float
    d_star: float
    gold_star: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    d_star_ci: tuple[float, float]
    gold_star_ci: tuple[float, float]
    num_seeds: int
    confidence: float


def _d_log_d(d: np.ndarray) -> np.ndarray:
    """d log d with its limit 0 at d = 0 (so the RL curve passes through the origin)."""
    safe = np.where(d > 0, d, 1.0)
    return np.where(d > 0, d * np.log(safe), 0.0)


def _design(form: str, d: np.ndarray) -> np.ndarray:
    """[..., 2] columns multiplying (α, β): R = α d − β d² or α d − β d log d."""
    second = d * d if form == "bon" else _d_log_d(d)
    return np.stack([d, -second], axis=-1)


def overoptimisation_peak(form: str, alpha, beta) -> tuple[np.ndarray, np.ndarray]:
    """(d_star, gold_star), elementwise over arrays of α and β: the maximiser of the curve over
    d ≥ 0 and its value; +inf for both where the curve rises without bound (see
    OveroptimisationFit)."""
    form = checked_choice("form", form, FORMS)
    alpha, beta = np.broadcast_arrays(np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float))
    positive = beta > 0
    safe_beta = np.where(positive, beta, 1.0)
    with np.errstate(over="ignore"):
        if form == "bon":
            # dR/dd = α − 2βd = 0; with α ≤ 0 the curve only falls on d ≥ 0, so the peak is 0.
            rising = np.maximum(alpha, 0.0)
            d_star = rising / (2.0 * safe_beta)
            gold_star = rising * rising / (4.0 * safe_beta)
        else:
            # dR/dd = α − β log d − β = 0; R(d*) = d*(α − (α − β)) = β d*. exp may overflow to
            # inf for a tiny β: a peak too far out to matter, reported as inf.
            d_star = np.exp(alpha / safe_beta - 1.0)
            gold_star = safe_beta * d_star
    # β = 0: R = α d, unbounded for α > 0 and maximal at the origin otherwise.
    unbounded = (beta < 0) | ((beta == 0) & (alpha > 0))
    d_star = np.where(positive, d_star, np.where(unbounded, np.inf, 0.0))
    gold_star = np.where(positive, gold_star, np.where(unbounded, np.inf, 0.0))
    return d_star, gold_star


def overoptimisation_curve(model, *args) -> np.ndarray:
    """R(d) of a fitted curve, `overoptimisation_curve(fit, d)`, or of given coefficients,
    `overoptimisation_curve(form, alpha, beta, d)`; d ≥ 0, any shape."""
    if isinstance(model, OveroptimisationFit):
        if len(args) != 1:
            raise ConfigError(
                f"overoptimisation_curve(fit, ...) got {len(args)} more arguments: "
                "pass only d, as overoptimisation_curve(fit, d)"
            )
        form, alpha, beta, d = model.form, model.alpha, model.beta, args[0]
    else:
        if len(args) != 3:
            raise ConfigError(
                f"overoptimisation_curve(form, ...) got {len(args)} more arguments: "
                "pass alpha, beta and d, as overoptimisation_curve(form, alpha, beta, d)"
            )
        form = checked_choice("form", model, FORMS)
        alpha = checked_float("alpha", args[0])
        beta = checked_float("beta", args[1])
        d = args[2]
    d = _real_array("d", d)
    _check_non_negative("d", d)
    return _design(form, d) @ np.array([alpha, beta])


def fit_overoptimisation(
    d,
    gold,
    form: str,
    *,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> OveroptimisationFit:
    """Fit R(d) = d (α − β d) (form "bon") or d (α − β log d) (form "rl") to the gold gain.

    d, gold: [seeds, points] arrays of d = √KL(π‖π_ref) and of the gold reward's gain over the
    reference. Both forms are linear in (α, β), so the fit is least squares on the pooled points
    of every seed, without an intercept (R(0) = 0). Intervals come from refitting on whole seeds
    drawn with replacement (stats.seed_resamples), never on single points: the points of one
    seed come from one run and are not independent of each other. See OveroptimisationFit for
    what the fields hold where the curve has no peak or there is one seed.
    """
    form = checked_choice("form", form, FORMS)
    num_resamples = checked_int("num_resamples", num_resamples, 1)
    seed = checked_int("seed", seed, 0)
    confidence = checked_float("confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    d, gold = _checked_points(d, gold)

    design = _design(form, d)  # [seeds, points, 2]
    coef, *_ = np.linalg.lstsq(design.reshape(-1, 2), gold.reshape(-1), rcond=None)
    alpha, beta = (float(c) for c in coef)
    d_star, gold_star = (float(v) for v in overoptimisation_peak(form, alpha, beta))

    num_seeds = d.shape[0]
    if num_seeds == 1:
        cis = [NAN_CI] * 4
    else:
        samples = _bootstrap(design, gold, num_resamples, seed)  # [resamples, 2]
        peaks = overoptimisation_peak(form, samples[:, 0], samples[:, 1])
        cis = [
            _percentile_interval(values, confidence)
            for values in (samples[:, 0], samples[:, 1], *peaks)
        ]
    return OveroptimisationFit(
        form=form,
        alpha=alpha,
        beta=beta,
        d_star=d_star,
        gold_star=gold_star,
        alpha_ci=cis[0],
        beta_ci=cis[1],
        d_star_ci=cis[2],
        gold_star_ci=cis[3],
        num_seeds=num_seeds,
        confidence=confidence,
    )


def _bootstrap(design: np.ndarray, gold: np.ndarray, num_resamples: int, seed: int) -> np.ndarray:
    """[num_resamples, 2] least-squares (α, β) of the pooled points of resampled seeds.

    A resample's normal equations are the sums of its seeds' own (XᵀX, Xᵀy), so each seed's are
    formed once and the refits cost a 2×2 solve each. The columns are scaled to unit size first,
    since d and d² can differ by orders of magnitude and the normal equations square that.
    """
    scale = np.sqrt(np.mean(design**2, axis=(0, 1)))
    scaled = design / scale
    gram = np.einsum("spi,spj->sij", scaled, scaled)  # [seeds, 2, 2]
    moment = np.einsum("spi,sp->si", scaled, gold)  # [seeds, 2]
    picks = stats.seed_resamples(design.shape[0], num_resamples, seed)
    # Every seed has two distinct positive d (checked), so each gram is positive definite and so
    # is every sum of them: no resample is singular.
    solved = np.linalg.solve(gram[picks].sum(axis=1), moment[picks].sum(axis=1)[..., None])
    return solved[..., 0] / scale


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval as stats.bootstrap_ci takes it: order statistics, no
    interpolation, so +inf values (resamples without a peak) give +inf, never nan."""
    tail = (1.0 - confidence) / 2.0
    low = np.quantile(values, tail, method="lower")
    high = np.quantile(values, 1.0 - tail, method="higher")
    return float(low), float(high)


def _real_array(field: str, value) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} = {_short(value)}: must be an array of real numbers") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _index(field: str, where: tuple[int, ...]) -> str:
    return f"{field}[{', '.join(str(i) for i in where)}]"


def _check_non_negative(field: str, d: np.ndarray) -> None:
    bad = ~(np.isfinite(d) & (d >= 0))
    if bad.any():
        where = _first_bad(bad)
        raise bad_value(
            _index(field, where),
            float(d[where]),
            "must be finite and >= 0 (d is √KL(π‖π_ref), a distance)",
        )


def _checked_points(d, gold) -> tuple[np.ndarray, np.ndarray]:
    """d and gold as float arrays [seeds, points], or a ConfigError naming what is wrong."""
    d, gold = _real_array("d", d), _real_array("gold", gold)
    for field, value in (("d", d), ("gold", gold)):
        if value.ndim != 2:
            raise ConfigError(
                f"{field} has shape {value.shape}: must be 2-D, [seeds, points] "
                "(one row per seed; a single seed is x[None])"
            )
    if d.shape != gold.shape:
        raise ConfigError(
            f"d has shape {d.shape} and gold has shape {gold.shape}: they must match, "
            "[seeds, points]"
        )
    if d.shape[0] < 1 or d.shape[1] < 2:
        raise ConfigError(
            f"d and gold have shape {d.shape}: need at least 1 seed and 2 points per seed "
            "to fit alpha and beta"
        )
    _check_non_negative("d", d)
    bad = ~np.isfinite(gold)
    if bad.any():
        where = _first_bad(bad)
        raise bad_value(_index("gold", where), float(gold[where]), "must be finite")
    # Two distinct d > 0 make the two columns independent for either form. Asked of every seed,
    # not only of the pool, so that a bootstrap resample drawing one seed many times is still
    # a well-posed fit.
    for s, row in enumerate(d):
        distinct = np.unique(row[row > 0])
        if distinct.size < 2:
            raise ConfigError(
                f"d[{s}] = {_short(row.tolist())} has {distinct.size} distinct positive "
                "values: each seed needs at least 2 to fit alpha and beta"
            )
    return d, gold


def plot_overoptimisation(
    ax, d, gold, fit: OveroptimisationFit, *, proxy=None, label=None, color=None
):
    """Draw on `ax`: each seed's gold against d faintly, the mean over seeds at each point
    (markers), the fitted curve, its peak d_star (a star, with its seed-bootstrap interval as a
    horizontal bar where there are at least stats.MIN_SEEDS_FOR_CI seeds), and, given `proxy`
    ([seeds, points] like gold), the proxy reward's mean as a dashed line. Returns ax.

    The peak is marked only where it is finite and within 3× the largest d measured; beyond
    that the curve would have to be drawn far past the data. The curve is drawn from 0 to the
    largest d (or the marked peak, if further). Artists carry gids (GIDS) so tests and callers
    can find them. Only the caller's axes are touched, so this needs no matplotlib import.
    """
    d, gold = _checked_points(d, gold)
    if proxy is not None:
        proxy = _real_array("proxy", proxy)
        if proxy.shape != gold.shape:
            raise ConfigError(
                f"proxy has shape {proxy.shape} and gold has shape {gold.shape}: they must match"
            )
    name = label if label is not None else "gold"
    # The mean first, so that its colour (the axes' next one when none is given) is every
    # other artist's too.
    mean_d = d.mean(axis=0)
    (points,) = ax.plot(
        mean_d, gold.mean(axis=0), "o", ms=4, color=color, label=name, gid=GIDS["mean"]
    )
    color = points.get_color()
    # Each seed faintly (as plots.plot_gold_against_kl): a seed's own peak hides in the mean.
    for s in range(d.shape[0]):
        ax.plot(d[s], gold[s], color=color, lw=0.5, alpha=0.25, gid=GIDS["seed"])

    top = float(d.max())
    peak_shown = np.isfinite(fit.d_star) and fit.d_star <= 3.0 * top
    if peak_shown:
        top = max(top, fit.d_star)
    grid = np.linspace(0.0, top, 200)
    ax.plot(
        grid,
        overoptimisation_curve(fit, grid),
        color=color,
        lw=1.5,
        label=f"{name}: fit ({fit.form}) α {fit.alpha:.3g}, β {fit.beta:.3g}",
        gid=GIDS["fit"],
    )
    if peak_shown:
        low, high = fit.d_star_ci
        interval = fit.num_seeds >= stats.MIN_SEEDS_FOR_CI and np.isfinite([low, high]).all()
        peak = ax.errorbar(
            fit.d_star,
            fit.gold_star,
            # A percentile interval need not contain the full-data estimate: clip at 0.
            xerr=[[max(fit.d_star - low, 0.0)], [max(high - fit.d_star, 0.0)]]
            if interval
            else None,
            fmt="*",
            ms=10,
            capsize=3,
            color=color,
            mec="k",
            mew=0.5,
            zorder=4,
            label=f"{name}: peak d* {fit.d_star:.3g}",
        )
        # On the marker only: errorbar would give the gid to its caps as well.
        peak.lines[0].set_gid(GIDS["peak"])
    if proxy is not None:
        ax.plot(
            mean_d,
            proxy.mean(axis=0),
            color=color,
            ls="--",
            lw=1,
            label=f"{name}: proxy",
            gid=GIDS["proxy"],
        )
    if not ax.get_xlabel():
        ax.set_xlabel("√KL(π ‖ π_ref)")
    if not ax.get_ylabel():
        ax.set_ylabel("gain over π_ref")
    ax.grid(alpha=0.3)
    return ax
