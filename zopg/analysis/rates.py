"""Convergence-rate sweeps on tabular GridWorld (algorithms.md §8) and log-log slope fits.

A sweep measures one quantity at every x of a grid (M, mu, N, d, T or block size K) for several
seeds, giving per-seed values [seeds, grid]. Fits reduce over seeds (mean, or the root of a mean
of squares) and get their 95% CIs by resampling whole seeds, never grid points. Sweeps are
declared in TOML (benchmarks/rates_*.toml) and run by benchmarks/rates.py.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from zopg.algorithms import ZBCPGConfig, ZPGConfig, zbcpg, zpg
from zopg.algorithms.zeroth_order import Problem, make_difference_fn
from zopg.envs import make as make_env
from zopg.errors import ConfigError, bad_value, unknown_name
from zopg.estimators import EstimatorConfig, Spent, zo_gradient
from zopg.exact import policy_value
from zopg.policies import TabularSoftmax, flat_view, make_policy
from zopg.preferences import Feedback, Oracle, make_link, preference_rate, value_difference
from zopg.rollout import rollout_batch

# -- fits -----------------------------------------------------------------------------------------

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


def _seed_resamples(num_seeds: int, num_resamples: int, seed: int) -> np.ndarray:
    """[num_resamples, num_seeds] seed indices; the same seed gives the same indices everywhere,
    so fits of different sweeps with equally many seeds resample them jointly."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_seeds, size=(num_resamples, num_seeds))


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
    idx = _seed_resamples(per_seed.shape[0], num_resamples, seed)
    boot, _ = loglog_slopes(x, reduce(per_seed[idx][:, :, mask]))
    return SlopeFit(
        float(slope), _percentile_ci(boot, confidence), float(intercept), tuple(window), confidence
    )


def curve_band(per_seed, reduce="mean", confidence=0.95, num_resamples=2000, seed=0):
    """(reduced curve, low, high, relative standard error) at every grid point, over seeds."""
    per_seed = np.asarray(per_seed, dtype=float)
    reduce = _reduction(reduce)
    boot = reduce(per_seed[_seed_resamples(per_seed.shape[0], num_resamples, seed)])
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
    idx = _seed_resamples(per_seed.shape[0], num_resamples, seed)
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


# -- the tabular setting ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PaddedPolicy:
    """A policy with `extra` parameters it ignores: d grows while V and ∇V stay the same.

    This isolates the dimension dependence of the estimators from everything else that would
    change with a larger layout (the gradient, the return noise).
    """

    base: object
    extra: int
    action_kind = "discrete"

    @property
    def num_actions(self) -> int:
        return self.base.num_actions

    def init(self, key):
        return {"base": self.base.init(key), "pad": jnp.zeros((self.extra,))}

    def action_probs(self, params, obs):
        return self.base.action_probs(params["base"], obs)

    def log_prob(self, params, obs, action):
        return self.base.log_prob(params["base"], obs, action)

    def sample_and_log_prob(self, key, params, obs):
        return self.base.sample_and_log_prob(key, params["base"], obs)

    def sample(self, key, params, obs):
        return self.base.sample(key, params["base"], obs)

    def uniform_sampler(self, params):
        return self.base.uniform_sampler(params["base"])


@dataclasses.dataclass(frozen=True)
class Setting:
    """A GridWorld problem (exact V available) and the parameter point theta where we measure."""

    problem: Problem
    theta: jax.Array

    @property
    def dim(self) -> int:
        return self.problem.dim


def make_setting(
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    logit_scale: float = 1.0,
    policy_seed: int = 5,
    dim: int | None = None,
    **env_overrides,
) -> Setting:
    """Tabular softmax policy with N(0, logit_scale²) logits (seeded), optionally padded to `dim`.

    env_overrides go to zopg.envs.make (e.g. layout and horizon for env = "gridworld").
    """
    env_obj, params = make_env(env, **env_overrides)
    if not hasattr(env_obj, "tabular_model"):
        raise ConfigError(f"rate sweeps need a tabular environment; {env!r} has no exact model")
    base = make_policy("tabular", env_obj, params, init_scale=float(logit_scale))
    policy = base
    base_dim = base.num_states * base.num_actions
    if dim is not None:
        if not isinstance(dim, int) or dim < base_dim:
            raise bad_value("dim", dim, f"must be an integer >= {base_dim} (the policy's own d)")
        policy = PaddedPolicy(base, dim - base_dim) if dim > base_dim else base
    problem = Problem.build(env_obj, policy, Oracle(make_link(link)), params)
    theta, _ = flat_view(policy.init(jax.random.key(policy_seed)))
    return Setting(problem, theta)


def _sphere(key, dim: int) -> jax.Array:
    z = jax.random.normal(key, (dim,))
    return z / jnp.linalg.norm(z)


def smoothed_gradient(setting: Setting, mu: float, num: int = 8192, seed: int = 0) -> jax.Array:
    """∇V_mu(θ) = (d/mu) E_v[V(θ + mu v) v] (ball smoothing), by our own reference sampler.

    Antithetic v, -v and the exact first-order term make each sample O(mu²), so a few thousand
    directions pin ∇V_mu far below any estimator error we compare it with.
    """
    value, theta, dim = setting.problem.exact_value, setting.theta, setting.dim
    grad = jax.grad(value)(theta)

    def residual(key):
        v = _sphere(key, dim)
        central = 0.5 * (value(theta + mu * v) - value(theta - mu * v))
        return (dim / mu) * (central - mu * grad @ v) * v

    keys = jax.random.split(jax.random.key(seed), num)
    return grad + jax.jit(jax.vmap(residual))(keys).mean(axis=0)


def _action_probs_fn(problem: Problem):
    """theta -> probs[s, a]. For a plain tabular softmax it reshapes theta itself, because
    ravel_pytree's unravel would cast a float64 theta back to float32."""
    policy, states = problem.policy, jnp.arange(problem.env.num_states(problem.env_params))
    if isinstance(policy, TabularSoftmax):
        shape = (policy.num_states, policy.num_actions)
        return lambda theta: policy.action_probs({"logits": theta.reshape(shape)}, states)
    return lambda theta: policy.action_probs(problem.unravel(theta), states)


def _tabular_model(problem: Problem, dtype):
    model = problem.env.tabular_model(problem.env_params)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), model)


def exact_value_fn(problem: Problem, dtype=jnp.float32):
    """theta -> exact V(theta) computed in `dtype` (float64 needs jax.enable_x64)."""
    model, probs = _tabular_model(problem, dtype), _action_probs_fn(problem)
    return lambda theta: policy_value(model, probs(theta))


def return_distribution(problem: Problem, dtype=jnp.float32):
    """(support, theta -> probabilities) of one trajectory's return, exactly.

    In GridWorld with step_reward = 0 the only rewards are paid on entering a goal or a trap,
    which then absorb, so a return is 0 or one of those rewards: P(return = r) is the exact value
    of the reward tensor restricted to r, by backward induction.
    """
    if float(getattr(problem.env_params, "step_reward", math.nan)) != 0.0:
        raise ConfigError("exact return distributions need a GridWorld with step_reward = 0")
    model, probs = _tabular_model(problem, dtype), _action_probs_fn(problem)
    reward = np.asarray(model.reward)
    values = sorted(set(np.unique(reward).tolist()) - {0.0})
    models = [model.replace(reward=jnp.asarray(reward == v, dtype)) for v in values]

    def probabilities(theta):
        hit = jnp.stack([policy_value(m, probs(theta)) for m in models])
        return jnp.concatenate([hit, 1.0 - hit.sum(keepdims=True)])

    return jnp.asarray([*values, 0.0], dtype), probabilities


def inversion_response(link, num_queries: int, r_max: float, x) -> np.ndarray:
    """h_M(x) = E[σ⁻¹(trim(p̂))] for p̂ the mean of M votes at utility difference x, exactly.

    The binomial sum runs in float64: in float32, log-gamma of M ~ 1000 loses enough digits to
    move h_M − 1 (about sinh(x)/M for Bradley–Terry) by several percent.
    """
    x = np.asarray(x, np.float64)
    k = np.arange(num_queries + 1)
    log_choose = np.array(
        [
            math.lgamma(num_queries + 1) - math.lgamma(i + 1) - math.lgamma(num_queries - i + 1)
            for i in k
        ]
    )
    p = np.asarray(link.prob(jnp.asarray(x, jnp.float32)), np.float64)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        # 0 · log 0 = 0: a link that rounds to p = 0 or 1 puts all mass on k = 0 or M.
        log_pmf = (
            log_choose
            + np.where(k > 0, k * np.log(p), 0.0)
            + np.where(k < num_queries, (num_queries - k) * np.log1p(-p), 0.0)
        )
    answers = np.asarray(value_difference(k / num_queries, link, r_max), np.float64)
    return (np.exp(log_pmf) * answers).sum(-1)


def expected_preference_difference(problem: Problem, dtype=jnp.float32):
    """(θ1, θ0, h) -> E[Δ̂] of one pair, exact over both trajectories' returns and the votes.

    h[a, b] = inversion_response at the return difference support[a] − support[b]; passing it
    in (rather than closing over it) lets one compiled function serve every M.
    """
    support, probabilities = return_distribution(problem, dtype)
    return support, lambda theta_1, theta_0, h: probabilities(theta_1) @ h @ probabilities(theta_0)


# -- measurements -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Per-seed values [seeds, grid] and theory numbers to compare the fits with."""

    values: np.ndarray
    theory: dict


def _seed_keys(key, seeds: int) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(seeds))


def _check_grid(grid, integer: bool) -> list:
    values = list(grid)
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int if integer else int | float) or x <= 0:
            kind = "integers >= 1" if integer else "positive numbers"
            raise bad_value("grid", values, f"must be {kind}")
    if sorted(set(values)) != values:
        raise bad_value("grid", values, "must be strictly increasing")
    return values


def delta_mse_vs_m(
    grid,
    seeds: int,
    key,
    *,
    link: str = "bradley-terry",
    probabilities=None,
    deltas=None,
    r_max: float = 2.0,
    replicates: int = 256,
    learner_link: str | None = None,
) -> Measurement:
    """E(σ⁻¹(trim(p̂)) − Δ)² over a fixed grid of utility differences Δ, against M.

    Δ is given directly or as σ(Δ) (probabilities), so every link is measured where its votes are
    equally informative. Votes come from Oracle.votes_from_utilities; the first M of one long
    run of i.i.d. votes are an M-vote sample for every M at once (correlated across M within a
    seed, which the seed bootstrap accounts for). learner_link inverts with a different link.
    """
    ms = _check_grid(grid, integer=True)
    oracle_link = make_link(link)
    learner = make_link(learner_link) if learner_link else oracle_link
    if (probabilities is None) == (deltas is None):
        raise ConfigError("delta_mse_vs_m: give exactly one of probabilities and deltas")
    if deltas is None:
        deltas = np.asarray(oracle_link.inverse(jnp.asarray(probabilities, jnp.float32)))
    deltas = jnp.asarray(deltas, jnp.float32)
    oracle = Oracle(oracle_link)

    def one_seed(key):
        utilities = jnp.broadcast_to(deltas, (replicates, deltas.shape[0]))
        feedback = oracle.votes_from_utilities(key, utilities, 0.0, ms[-1])
        errors = []
        for m in ms:
            prefix = Feedback(feedback.votes[..., :m], feedback.answered[..., :m], m)
            delta_hat = value_difference(preference_rate(prefix), learner, r_max)
            errors.append(jnp.mean((delta_hat - deltas) ** 2))
        return jnp.stack(errors)

    values = jax.jit(lambda keys: jax.lax.map(one_seed, keys))(_seed_keys(key, seeds))
    # Delta method: Var(p̂) σ⁻¹'(p)² = p(1 − p) / (M σ'(Δ)²), averaged over the Δ grid.
    slope_at = jax.vmap(jax.grad(lambda x: oracle_link.prob(x)))(deltas)
    p = oracle_link.prob(deltas)
    trimmed = jnp.maximum(jnp.abs(deltas) - r_max, 0.0)
    theory = {
        "deltas": np.asarray(deltas).tolist(),
        "delta_method_mse_times_m": float(jnp.mean(p * (1 - p) / slope_at**2)),
        "trimming_floor": float(jnp.mean(trimmed**2)),
    }
    return Measurement(np.asarray(values), theory)


def gridworld_delta_mse_vs_m(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    logit_scale: float = 1.0,
    policy_seed: int = 5,
    mu: float = 1.0,
    num_pairs: int = 4,
    r_max: float = 2.0,
    batches: int = 256,
    direction_seed: int = 1,
) -> Measurement:
    """E(Δ̂ − (V(θ1) − V(θ0)))² of ZPG's value difference (mean of N pairs), against M.

    θ1 = θ + mu v for one fixed direction v. Pairs are rolled out as in
    zopg.algorithms.zeroth_order (fresh keys per policy) and voted on with the M-prefix trick of
    delta_mse_vs_m. Trajectory noise stays when M → ∞: the floor is Var(r(τ1) − r(τ0)) / N.
    """
    ms = _check_grid(grid, integer=True)
    setting = make_setting(env, link, logit_scale, policy_seed)
    problem, theta = setting.problem, setting.theta
    theta_1 = theta + mu * _sphere(jax.random.key(direction_seed), setting.dim)
    true_difference = problem.exact_value(theta_1) - problem.exact_value(theta)
    oracle, rollout = problem.oracle, _rollout_fn(problem)

    def one_batch(key):
        k1, k0, kq = jax.random.split(key, 3)
        u1 = oracle.trajectory_utility(rollout(k1, theta_1, num_pairs))
        u0 = oracle.trajectory_utility(rollout(k0, theta, num_pairs))
        feedback = oracle.votes_from_utilities(kq, u1, u0, ms[-1])
        errors = []
        for m in ms:
            prefix = Feedback(feedback.votes[..., :m], feedback.answered[..., :m], m)
            delta_hat = value_difference(preference_rate(prefix), oracle.link, r_max).mean()
            errors.append((delta_hat - true_difference) ** 2)
        return jnp.stack(errors)

    def one_seed(key):
        return jax.vmap(one_batch)(jax.random.split(key, batches)).mean(axis=0)

    values = jax.jit(lambda keys: jax.lax.map(one_seed, keys))(_seed_keys(key, seeds))
    support, probabilities = return_distribution(problem)
    variance = sum(_variance(support, probabilities(t)) for t in (theta_1, theta))
    theory = {
        "value_difference": float(true_difference),
        "trajectory_floor": float(variance / num_pairs),
    }
    return Measurement(np.asarray(values), theory)


def _variance(support, probs) -> float:
    mean = probs @ support
    return float(probs @ (support - mean) ** 2)


def _rollout_fn(problem: Problem):
    def rollout(key, theta, num):
        return rollout_batch(
            key, problem.policy, problem.unravel(theta), problem.env, problem.env_params, num
        )

    return rollout


@functools.lru_cache(maxsize=16)
def _bias_program(
    setting_args: tuple, difference: str, directions: int, estimator: Callable, dtype
):
    """(setting, compiled (seed keys, mus, h) -> unbiased ‖E ĝ − ∇V‖² [seeds, mus]).

    Cached so that sweeps which differ only in M (through h) or the grid share one compilation.
    For float64, call it and the program under jax.enable_x64(True) (see bias_vs_mu).
    """
    with jax.enable_x64(False):
        # theta exactly as every other sweep draws it (float64 draws would be other numbers).
        setting = make_setting(*setting_args)
    problem, theta = setting.problem, jnp.asarray(setting.theta, dtype)
    value = exact_value_fn(problem, dtype)
    grad = jax.grad(value)(theta)
    if difference == "exact":
        expected = lambda t1, t0, h: value(t1) - value(t0)  # noqa: E731
    elif difference == "expected-preference":
        _, expected = expected_preference_difference(problem, dtype)
    else:
        raise unknown_name("difference", difference, ("exact", "expected-preference"))
    config = EstimatorConfig()

    def unbiased_sq_norm(key, mu, h):
        def residual_difference(key, theta_1, theta_0, num_pairs):
            mirrored = 2.0 * theta_0 - theta_1
            central = 0.5 * (expected(theta_1, theta_0, h) - expected(mirrored, theta_0, h))
            return jnp.full((num_pairs,), central - grad @ (theta_1 - theta_0)), Spent.zero()

        keys = jax.random.split(key, directions)
        g = jax.vmap(lambda k: estimator(k, theta, residual_difference, config, mu)[0])(keys)
        mean = g.mean(axis=0)
        return mean @ mean - g.var(axis=0, ddof=1).sum() / directions

    def run(keys, mus, h):
        return jax.vmap(lambda k: jax.vmap(lambda mu: unbiased_sq_norm(k, mu, h))(mus))(keys)

    return setting, jax.jit(run)


def bias_vs_mu(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    difference: str = "exact",
    link: str = "bradley-terry",
    logit_scale: float = 1.0,
    policy_seed: int = 5,
    num_queries: int = 16,
    r_max: float = 2.0,
    directions: int = 4096,
    precision: str = "float32",
    estimator: Callable = zo_gradient,
) -> Measurement:
    """‖E ĝ − ∇V‖² (unbiased, per seed) of ZPG's one-sided sphere estimate, against mu.

    E ĝ is averaged over `directions` draws of the estimator under test, with two variance
    reductions that leave the mean unchanged: each difference is replaced by its antithetic
    average ½(F(θ + mu v) − F(θ − mu v)) (v and −v are equally likely), and the estimator applied
    to the first-order difference mu ∇V·v (mean ∇V) is subtracted. Each sample is then O(mu²), so
    sampling error cannot hide the slope at small mu.

    difference: exact (V(θ1) − V(θ0)) or expected-preference (E[Δ̂] exactly over returns and M
    votes; its bias does not vanish with mu, which gives a floor that falls like 1/M).
    precision: float64 for small mu with exact differences, where the O(mu³) residuals come
    within a few float32 ulps of V (at mu = 0.1 that bends the slope by about -0.004). theta is
    the same either way (drawn in float32, then cast).
    """
    mus = _check_grid(grid, integer=False)
    if difference not in ("exact", "expected-preference"):
        raise unknown_name("difference", difference, ("exact", "expected-preference"))
    if precision not in ("float32", "float64"):
        raise unknown_name("precision", precision, ("float32", "float64"))
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    with jax.enable_x64(precision == "float64"):
        setting, run = _bias_program(
            (env, link, logit_scale, policy_seed), difference, directions, estimator, dtype
        )
        problem, theta = setting.problem, jnp.asarray(setting.theta, dtype)
        value = exact_value_fn(problem, dtype)
        grad = jax.grad(value)(theta)
        h = jnp.zeros((1, 1), dtype)
        if difference == "expected-preference":
            support, expected = expected_preference_difference(problem, dtype)
            x = np.asarray(support)[:, None] - np.asarray(support)[None, :]
            h = jnp.asarray(inversion_response(problem.oracle.link, num_queries, r_max, x), dtype)
        values = np.asarray(run(_seed_keys(key, seeds), jnp.asarray(mus, dtype), h))
        # Ball smoothing: ∇V_mu − ∇V = mu² ∇(ΔV) / (2(d + 2)) + O(mu⁴) for smooth V (ΔV the
        # Laplacian), so the bias over mu² should approach this constant.
        laplacian = lambda t: jnp.trace(jax.hessian(value)(t))  # noqa: E731
        leading = jnp.linalg.norm(jax.grad(laplacian)(theta)) / (2 * (setting.dim + 2))
        theory = {"dim": setting.dim, "grad_norm": float(jnp.linalg.norm(grad))}
        theory["smooth_bias_over_mu_sq"] = float(leading)
        if difference == "expected-preference":
            floor = jax.grad(lambda t: expected(t, theta, h))(theta) - grad
            theory["preference_floor"] = float(jnp.linalg.norm(floor))
    return Measurement(values, theory)


def _estimator_error(
    setting: Setting, config: ZPGConfig, target, estimates, keys, estimator, make_difference
):
    """Per seed: the mean of ‖ĝ − target‖² over `estimates` draws of the estimator."""
    difference_fn = make_difference(config, setting.problem)
    est = EstimatorConfig(spend=config.spend, num_pairs=config.num_pairs)

    def one_seed(key):
        draw = lambda k: estimator(k, setting.theta, difference_fn, est, config.mu)[0]  # noqa: E731
        g = jax.vmap(draw)(jax.random.split(key, estimates))
        return jnp.mean(jnp.sum((g - target) ** 2, axis=-1))

    return np.asarray(jax.jit(lambda ks: jax.lax.map(one_seed, ks))(keys))


def error_vs_n(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    logit_scale: float = 1.0,
    policy_seed: int = 5,
    difference: str = "preference",
    mu: float = 1.0,
    num_queries: int = 10,
    r_max: float = 2.0,
    spend: str = "one-direction",
    estimates: int = 256,
    estimator: Callable = zo_gradient,
    make_difference: Callable = make_difference_fn,
) -> Measurement:
    """E‖ĝ − ∇V_mu‖² of ZPG's estimate against N (pairs per estimate).

    With one direction and N pairs the direction's own variance, ≈ (d − 1)‖∇V‖², is a floor
    that the pairs cannot average away; it is reported as theory.direction_floor.
    """
    ns = _check_grid(grid, integer=True)
    setting = make_setting(env, link, logit_scale, policy_seed)
    target = smoothed_gradient(setting, mu)
    keys = _seed_keys(key, seeds)
    columns = []
    for n in ns:
        config = ZPGConfig(
            num_pairs=n,
            num_queries=num_queries,
            mu=mu,
            r_max=r_max,
            difference=difference,
            spend=spend,
        )
        columns.append(
            _estimator_error(setting, config, target, estimates, keys, estimator, make_difference)
        )
    exact = ZPGConfig(num_pairs=1, mu=mu, difference="exact")
    floor = _estimator_error(
        setting, exact, target, estimates, keys, zo_gradient, make_difference_fn
    )
    theory = {
        "dim": setting.dim,
        "grad_norm_sq": float(target @ target),
        "direction_floor": float(floor.mean()),
    }
    return Measurement(np.stack(columns, axis=1), theory)


def error_vs_d(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    logit_scale: float = 1.0,
    policy_seed: int = 5,
    difference: str = "exact",
    mu: float = 0.5,
    num_pairs: int = 1,
    num_queries: int = 10,
    r_max: float = 2.0,
    estimates: int = 512,
) -> Measurement:
    """E‖ĝ − ∇V_mu‖² against d, the policy padded with ignored parameters (PaddedPolicy).

    V, ∇V and the return noise stay fixed, so only the estimator's dimension factor varies:
    (d − 1)‖∇V‖² with exact differences, (d/mu)² Var(Δ̂)/N once noise dominates.
    """
    dims = _check_grid(grid, integer=True)
    keys = _seed_keys(key, seeds)
    columns, grad_norm_sq = [], None
    for dim in dims:
        setting = make_setting(env, link, logit_scale, policy_seed, dim=dim)
        target = smoothed_gradient(setting, mu)
        grad_norm_sq = float(target @ target)
        config = ZPGConfig(
            num_pairs=num_pairs, num_queries=num_queries, mu=mu, r_max=r_max, difference=difference
        )
        columns.append(
            _estimator_error(
                setting, config, target, estimates, keys, zo_gradient, make_difference_fn
            )
        )
    return Measurement(np.stack(columns, axis=1), {"grad_norm_sq": grad_norm_sq})


def _run_seeds(train, keys):
    _, metrics = jax.jit(jax.vmap(train))(keys)
    return jax.tree_util.tree_map(np.asarray, metrics)


def grad_norm_vs_t(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    alpha0: float = 6.4,
    mu: float = 5.0,
    num_pairs: int = 32,
    num_queries: int = 10,
    r_max: float = 2.0,
) -> Measurement:
    """(1/T) Σ_t ‖∇V(θ_t)‖² of ZPG runs from the uniform policy, step alpha0/√T, one run per T."""
    ts = _check_grid(grid, integer=True)
    env_obj, params = make_env(env)
    policy = make_policy("tabular", env_obj, params)
    oracle = Oracle(make_link(link))
    keys = _seed_keys(key, seeds)
    columns, final_values, first_order = [], [], []
    for t in ts:
        config = ZPGConfig(
            num_iterations=t,
            num_pairs=num_pairs,
            num_queries=num_queries,
            mu=mu,
            r_max=r_max,
            step_size=alpha0 / math.sqrt(t),
        )
        metrics = _run_seeds(zpg.make_train(config, env_obj, policy, oracle), keys)
        columns.append(metrics["exact/grad_norm_sq"].mean(axis=1))
        gain = metrics["exact/value"][:, -1] - metrics["exact/value_before"][:, 0]
        final_values.append(float(metrics["exact/value"][:, -1].mean()))
        # Σ_t α ∇V·ĝ_t ≈ V_T − V_0 to first order, and E[∇V·ĝ] = ‖∇V‖² (up to smoothing).
        first_order.append(float(gain.mean() / (alpha0 * math.sqrt(t))))
    theory = {"final_value_mean": final_values, "first_order_part": first_order}
    return Measurement(np.stack(columns, axis=1), theory)


def blocks_vs_k(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    num_iterations: int = 2048,
    step_size: float = 0.1,
    scale_step: bool = True,
    mu: float = 5.0,
    num_pairs: int = 32,
    num_queries: int = 10,
    r_max: float = 2.0,
    metric: str = "grad_norm_sq",
) -> Measurement:
    """(1/T) Σ_t ‖∇V(θ_t)‖² (metric grad_norm_sq) or the final exact value V(θ_T) (metric
    final_value) of ZBCPG with one block of K coordinates, against K.

    Every run spends the same queries (T·N·M). With scale_step the step is step_size·d/K, which
    gives ZBCPG's update the same mean and, to first order, the same variance as ZPG's, so §8
    predicts no dependence on K; ZPG itself is run alongside for the ratio. With ZPG's own step
    the expected update is K/d of ZPG's (§8), so small blocks fall behind; the final value shows
    it directly, where the average gradient norm need not (it grows while the policy leaves the
    flat start).
    """
    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)
    ks = _check_grid(grid, integer=True)
    env_obj, params = make_env(env)
    policy = make_policy("tabular", env_obj, params)
    oracle = Oracle(make_link(link))
    dim = env_obj.num_states(params) * env_obj.num_actions
    keys = _seed_keys(key, seeds)
    shared = {
        "num_iterations": num_iterations,
        "num_pairs": num_pairs,
        "num_queries": num_queries,
        "mu": mu,
        "r_max": r_max,
    }
    columns, final_values = [], []
    for k in ks:
        step = step_size * dim / k if scale_step else step_size
        config = ZBCPGConfig(block_size=k, num_blocks=1, step_size=step, **shared)
        metrics = _run_seeds(zbcpg.make_train(config, env_obj, policy, oracle), keys)
        per_seed = {
            "grad_norm_sq": metrics["exact/grad_norm_sq"].mean(axis=1),
            "final_value": metrics["exact/value"][:, -1],
        }
        columns.append(per_seed[metric])
        final_values.append(float(per_seed["final_value"].mean()))
    reference = _run_seeds(
        zpg.make_train(ZPGConfig(step_size=step_size, **shared), env_obj, policy, oracle), keys
    )
    zpg_values = reference["exact/grad_norm_sq"].mean(axis=1)
    theory = {
        "dim": dim,
        "queries_per_run": num_iterations * num_pairs * num_queries,
        "final_value_mean": final_values,
        "zpg_grad_norm_sq_mean": float(zpg_values.mean()),
        "zpg_final_value_mean": float(reference["exact/value"][:, -1].mean()),
        "zpg_grad_norm_sq_per_seed": zpg_values.tolist(),
        "zpg_final_value_per_seed": reference["exact/value"][:, -1].tolist(),
        # ZPG's value of this sweep's metric: the figure draws it as a line (K = d is ZPG).
        "zpg_same_queries": float(
            (zpg_values if metric == "grad_norm_sq" else reference["exact/value"][:, -1]).mean()
        ),
    }
    return Measurement(np.stack(columns, axis=1), theory)


METRICS = ("grad_norm_sq", "final_value")


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A measurable rate: the sweep function, axis labels and how seeds are reduced."""

    measure: Callable
    x_label: str
    y_label: str
    reduce: str = "mean"


QUANTITIES: dict[str, Quantity] = {
    "delta_mse_vs_m": Quantity(delta_mse_vs_m, "M (votes per pair)", "E(Δ̂ − Δ)²"),
    "gridworld_delta_mse_vs_m": Quantity(
        gridworld_delta_mse_vs_m, "M (votes per pair)", "E(Δ̂ − ΔV)²"
    ),
    "bias_vs_mu": Quantity(bias_vs_mu, "μ", "‖E ĝ − ∇V‖", reduce="sqrt-mean"),
    "error_vs_n": Quantity(error_vs_n, "N (pairs per estimate)", "E‖ĝ − ∇V_μ‖²"),
    "error_vs_d": Quantity(error_vs_d, "d (parameters)", "E‖ĝ − ∇V_μ‖²"),
    "grad_norm_vs_t": Quantity(grad_norm_vs_t, "T (iterations)", "(1/T) Σ_t ‖∇V(θ_t)‖²"),
    "blocks_vs_k": Quantity(blocks_vs_k, "K (block size)", "(1/T) Σ_t ‖∇V(θ_t)‖²"),
    "final_value_vs_k": Quantity(
        functools.partial(blocks_vs_k, metric="final_value"), "K (block size)", "V(θ_T)"
    ),
}
# Keywords that cannot come from a file: test hooks (a broken estimator or difference source)
# and the metric, which each quantity fixes with its axis label.
_CODE_ONLY = ("estimator", "make_difference", "metric")


def setting_names(quantity: str) -> tuple[str, ...]:
    """The settings a quantity accepts from a sweep file."""
    params = inspect.signature(QUANTITIES[quantity].measure).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _CODE_ONLY)


# -- sweep specs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RateSpec:
    """One declared sweep: what to measure, where, how to fit and what theory predicts.

    prediction is the slope algorithms.md §8 states; expected, when given, is the slope our own
    analysis predicts for this exact setting (note says why), and CI regression checks that one.
    window may be omitted for sweeps that only fit a floor; reference is the x whose magnitude CI
    regression compares with the committed value. floor = true also fits c·x^b + floor, on
    floor_window (default: the whole grid; leave out the pre-asymptotic end, e.g. M where
    trimming dominates, which the three-parameter model cannot describe).
    """

    name: str
    quantity: str
    grid: tuple
    seeds: int
    window: tuple[float, float] | None = None
    prediction: float | None = None
    expected: float | None = None
    note: str = ""
    reference: float | None = None
    floor: bool = False
    floor_window: tuple[float, float] | None = None
    base_seed: int = 0
    group: str | None = None  # sweeps drawn on one figure (default: one per quantity)
    settings: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["grid"] = list(self.grid)
        for field in ("window", "floor_window"):
            data[field] = None if data[field] is None else list(data[field])
        return data

    def config_hash(self) -> str:
        """Hash of everything that determines the numbers (not name, note or figure group)."""
        fields = {k: v for k, v in self.to_dict().items() if k not in ("note", "name", "group")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def slope_target(self) -> float | None:
        return self.expected if self.expected is not None else self.prediction


@dataclasses.dataclass(frozen=True)
class FloorFamily:
    """Sweeps that differ in one setting (e.g. M); their fitted floors should follow a power."""

    name: str
    setting: str
    members: tuple[str, ...]
    prediction: float | None = None
    theory: str | None = None  # a key of each member's theory dict: the exact floor to compare
    note: str = ""


SPEC_KEYS = {f.name for f in dataclasses.fields(RateSpec)} | {"quick"}
FAMILY_KEYS = {f.name for f in dataclasses.fields(FloorFamily)}


def _fail(source: str, where: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {message}")


def _check_keys(source: str, where: str, table, allowed) -> None:
    if not isinstance(table, dict):
        raise _fail(source, where, f"must be a table, got {table!r}")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        allowed_text = ", ".join(sorted(allowed))
        raise _fail(source, f"{where}.{unknown[0]}", f"unknown key; allowed: {allowed_text}")


def parse_spec(raw: dict, source: str = "<sweep>", quick: bool = False) -> RateSpec:
    """Validate one [[sweep]] table (with its [sweep.quick] overrides applied when quick)."""
    where = f"sweep {raw.get('name', '?')!r}" if isinstance(raw, dict) else "sweep"
    _check_keys(source, where, raw, SPEC_KEYS)
    raw = dict(raw)
    overrides = dict(raw.pop("quick", {}))
    _check_keys(source, f"{where}.quick", overrides, SPEC_KEYS - {"quick", "name"})
    if quick:
        settings = {**raw.get("settings", {}), **overrides.pop("settings", {})}
        raw = {**raw, **overrides, "settings": settings}
    for required in ("name", "quantity", "grid", "seeds"):
        if required not in raw:
            raise _fail(source, f"{where}.{required}", "is required")
    if raw["quantity"] not in QUANTITIES:
        error = unknown_name("quantity", raw["quantity"], QUANTITIES)
        raise _fail(source, f"{where}.quantity", str(error))
    _check_keys(
        source, f"{where}.settings", raw.get("settings", {}), setting_names(raw["quantity"])
    )
    seeds = raw["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        message = f"= {seeds!r}: must be an integer >= 2 (CIs resample seeds)"
        raise _fail(source, f"{where}.seeds", message)
    window, floor_window = raw.get("window"), raw.get("floor_window")
    try:
        grid = _check_grid(raw["grid"], integer=raw["quantity"] != "bias_vs_mu")
        for name, value in (("window", window), ("floor_window", floor_window)):
            if value is None:
                continue
            if not (isinstance(value, list) and len(value) == 2 and value[0] < value[1]):
                raise bad_value(name, value, "must be [low, high] with low < high")
            window_mask(grid, value)
    except ConfigError as err:
        raise _fail(source, where, str(err)) from None
    if floor_window is not None and not raw.get("floor", False):
        raise _fail(source, f"{where}.floor_window", "needs floor = true")
    if window is None and (raw.get("prediction") is not None or raw.get("expected") is not None):
        raise _fail(source, f"{where}.window", "is required to test a predicted slope")
    reference = raw.get("reference")
    if reference is not None and reference not in grid:
        raise _fail(source, f"{where}.reference", f"= {reference!r}: must be a grid point")
    fields = {k: v for k, v in raw.items() if k in SPEC_KEYS - {"quick"}}
    fields.update(
        grid=tuple(grid),
        window=None if window is None else tuple(window),
        floor_window=None if floor_window is None else tuple(floor_window),
        settings=dict(raw.get("settings", {})),
    )
    return RateSpec(**fields)


def load_specs(path, quick: bool = False) -> tuple[list[RateSpec], list[FloorFamily]]:
    """The [[sweep]] and [[family]] tables of a rates TOML file, validated."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from None
    _check_keys(source, "file", raw, ("sweep", "family"))
    sweeps = raw.get("sweep")
    if not isinstance(sweeps, list) or not sweeps:
        raise _fail(source, "sweep", "must be a non-empty array of tables ([[sweep]])")
    specs = [parse_spec(s, source, quick) for s in sweeps]
    by_name = {s.name: s for s in specs}
    if len(by_name) != len(specs):
        raise _fail(source, "sweep", "names must be unique")
    families = []
    for item in raw.get("family", []):
        where = f"family {item.get('name', '?')!r}" if isinstance(item, dict) else "family"
        _check_keys(source, where, item, FAMILY_KEYS)
        family = FloorFamily(**{**item, "members": tuple(item.get("members", ()))})
        for member in family.members:
            spec = by_name.get(member)
            if spec is None or not spec.floor or family.setting not in spec.settings:
                raise _fail(
                    source,
                    f"{where}.members",
                    f"{member!r} must be a sweep of this file with floor = true and "
                    f"settings.{family.setting}",
                )
        members = [by_name[m] for m in family.members]
        if len({(m.seeds, m.base_seed) for m in members}) != 1:
            # The family's CI resamples the same seeds in every member.
            raise _fail(source, f"{where}.members", "must share seeds and base_seed")
        if len(family.members) < 3:
            raise _fail(source, f"{where}.members", "needs at least 3 sweeps to fit a slope")
        families.append(family)
    return specs, families


# -- running a sweep ------------------------------------------------------------------------------


def measure(spec: RateSpec, **code_only) -> Measurement:
    """Run the sweep's measurement; code_only may swap in a (broken) estimator for tests."""
    quantity = QUANTITIES[spec.quantity]
    key = jax.random.key(spec.base_seed)
    return quantity.measure(spec.grid, spec.seeds, key, **spec.settings, **code_only)


def analyse(spec: RateSpec, measurement: Measurement) -> dict:
    """Slope fit with CI, curve with bands, optional floor fit: one JSON-ready record."""
    quantity = QUANTITIES[spec.quantity]
    values = measurement.values
    curve, low, high, rel_se = curve_band(values, quantity.reduce)
    record = {
        "name": spec.name,
        "quantity": spec.quantity,
        "x": quantity.x_label,
        "y": quantity.y_label,
        "config_hash": spec.config_hash(),
        **{k: v for k, v in spec.to_dict().items() if k not in ("name", "quantity", "floor")},
        "slope": None,
        "curve": curve.tolist(),
        "curve_ci": [low.tolist(), high.tolist()],
        "curve_rel_se": rel_se.tolist(),
        "theory": measurement.theory,
    }
    if spec.window is not None:
        fit = fit_slope(spec.grid, values, spec.window, quantity.reduce)
        record.update(
            slope=fit.slope,
            slope_ci=list(fit.ci),
            intercept=fit.intercept,
            prediction_in_ci=None if spec.prediction is None else fit.covers(spec.prediction),
            expected_in_ci=None if spec.expected is None else fit.covers(spec.expected),
        )
    if spec.reference is not None:
        i = list(spec.grid).index(spec.reference)
        record["reference"] = {
            "x": spec.reference,
            "value": float(curve[i]),
            "rel_se": float(rel_se[i]),
        }
    if spec.floor:
        floor = fit_floor(spec.grid, values, spec.floor_window, quantity.reduce)
        record["floor_fit"] = {
            "scale": floor.scale,
            "exponent": floor.exponent,
            "exponent_ci": list(floor.exponent_ci),
            "floor": floor.floor,
            "floor_ci": list(floor.floor_ci),
        }
    record["per_seed"] = values.tolist()
    return record


def run_spec(spec: RateSpec, **code_only) -> dict:
    start = time.perf_counter()
    record = analyse(spec, measure(spec, **code_only))
    record["runtime_s"] = time.perf_counter() - start
    return record


def analyse_family(family: FloorFamily, specs: dict, records: dict) -> dict:
    """Floors of a family against its setting: log-log slope with a joint seed-bootstrap CI."""
    fits, xs = [], []
    for name in family.members:
        spec = specs[name]
        per_seed = np.asarray(records[name]["per_seed"])
        reduce = QUANTITIES[spec.quantity].reduce
        fits.append(fit_floor(spec.grid, per_seed, spec.floor_window, reduce))
        xs.append(spec.settings[family.setting])
    fit = family_slope(np.asarray(xs, float), fits)
    theory = None
    if family.theory is not None:
        exact = [records[name]["theory"][family.theory] for name in family.members]
        slope, _ = loglog_slopes(np.asarray(xs, float), np.asarray(exact))
        ratios = [f.floor / e for f, e in zip(fits, exact, strict=True)]
        theory = {"key": family.theory, "floors": exact, "slope": float(slope), "ratios": ratios}
    return {
        "name": family.name,
        "setting": family.setting,
        "members": list(family.members),
        "values": xs,
        "floors": [f.floor for f in fits],
        "floor_cis": [list(f.floor_ci) for f in fits],
        "prediction": family.prediction,
        "note": family.note,
        "slope": fit.slope,
        "slope_ci": list(fit.ci),
        "prediction_in_ci": None if family.prediction is None else fit.covers(family.prediction),
        "theory": theory,
    }
