"""Rate measurements on tabular GridWorld (science.md §8): one function per quantity.

Each takes (grid, seeds, key, **settings) and returns per-seed values [seeds, grid] with the
theory numbers to compare them with. Quantities of an estimate (Δ̂, ĝ) are measured here
directly; quantities of training runs (T, K, and N at a fixed step) train through the runner with
the exact-gradient probe. The sweep files are read by zopg.rates.sweeps, the fits are
zopg.rates.analysis.

Why the T-rates need care: for any step sizes α_t the ascent telescopes exactly,

    (1/T) Σ_t ‖∇V(θ_t)‖² = F_T + Q_T + M_T,
    F_T = (1/T) Σ_t (V(θ_{t+1}) − V(θ_t)) / α_t           (= (V_T − V_0)/(αT) at constant α),
    Q_T = (1/T) Σ_t [∇V(θ_t)·(θ_{t+1} − θ_t) − (V(θ_{t+1}) − V(θ_t))] / α_t,
    M_T = −(1/T) Σ_t ∇V(θ_t)·(ĝ_t − ∇V(θ_t)).

For a run that converges inside T, F_T is (V* − V_0)/(αT) at a constant step and
(V* − V_0)/(α₀√T) at α₀/√T: the T-slope (−1 or −½) is fixed by the schedule whatever the
estimator. The estimator enters through Q_T, the second-order term: Q_T ≈ (α/2T) Σ_t
ĝ_tᵀ(−∇²V)ĝ_t ≤ (Lα/2)·(1/T) Σ_t ‖ĝ_t‖², §8's floor term, and M_T has mean
−(1/T) Σ_t ∇V·(∇V_μ − ∇V) (the smoothing bias). second_order_noise_vs_n measures the part of Q_T
that the difference noise adds, against N.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from zopg.algorithms import Spent, Trainer, ZBCPGConfig, ZPGConfig, ZSPOConfig, make_training
from zopg.algorithms.sign_zo import make_majority_sign
from zopg.algorithms.training import Training, check_contract
from zopg.algorithms.zeroth_order import estimator_config, make_difference_fn, make_zo_trainer
from zopg.envs import make as make_env
from zopg.errors import ConfigError, bad_value, unknown_name
from zopg.estimators import EstimatorConfig, zo_gradient
from zopg.experiments.runner import train_seeds
from zopg.policies import flat_view, make_policy
from zopg.preferences import Feedback, Oracle, make_link, preference_rate, value_difference
from zopg.rates.setting import (
    Point,
    Setting,
    exact_value_fn,
    expected_preference_difference,
    inversion_response,
    make_setting,
    return_distribution,
    rollout_fn,
    sign_agreement,
    smoothed_gradient,
    sphere,
)

# -- measurements -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Per-seed values [seeds, grid], theory numbers to compare the fits with, and (set by
    zopg.rates.sweeps) the quantity's axis labels and how seeds are reduced."""

    values: np.ndarray
    theory: dict
    x_label: str = ""
    y_label: str = ""
    reduce: str = "mean"


def _seed_keys(key, seeds: int) -> jax.Array:
    return jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(seeds))


def check_grid(grid, integer: bool) -> list:
    """The grid as a list of positive (integer) values in strictly increasing order."""
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
    ms = check_grid(grid, integer=True)
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
    point: Point = Point(),
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
    ms = check_grid(grid, integer=True)
    setting = make_setting(point)
    problem, theta = setting.problem, setting.theta
    theta_1 = theta + mu * sphere(jax.random.key(direction_seed), setting.dim)
    true_difference = problem.exact_value(theta_1) - problem.exact_value(theta)
    oracle, rollout = problem.oracle, rollout_fn(problem)

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


@functools.lru_cache(maxsize=16)
def _bias_program(point: Point, difference: str, directions: int, estimator: Callable, dtype):
    """(setting, compiled (seed keys, mus, h) -> unbiased ‖E ĝ − ∇V‖² [seeds, mus]).

    Cached so that sweeps which differ only in M (through h) or the grid share one compilation.
    For float64, call it and the program under jax.enable_x64(True) (see bias_vs_mu).
    """
    with jax.enable_x64(False):
        # theta exactly as every other sweep draws it (float64 draws would be other numbers).
        setting = make_setting(point)
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
    point: Point = Point(),
    difference: str = "exact",
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
    mus = check_grid(grid, integer=False)
    if difference not in ("exact", "expected-preference"):
        raise unknown_name("difference", difference, ("exact", "expected-preference"))
    if precision not in ("float32", "float64"):
        raise unknown_name("precision", precision, ("float32", "float64"))
    dtype = jnp.float64 if precision == "float64" else jnp.float32
    with jax.enable_x64(precision == "float64"):
        setting, run = _bias_program(point, difference, directions, estimator, dtype)
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
    point: Point = Point(),
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
    ns = check_grid(grid, integer=True)
    setting = make_setting(point)
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
    point: Point = Point(),
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
    dims = check_grid(grid, integer=True)
    keys = _seed_keys(key, seeds)
    columns, grad_norm_sq = [], None
    for dim in dims:
        setting = make_setting(point, dim=dim)
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


def _tabular_setup(env: str, link: str):
    """The env, its uniform-start tabular policy and a teacher with `link`: the set-up every
    training quantity shares (T, K and sign sweeps, and the ascent parts)."""
    env_obj, params = make_env(env)
    return env_obj, make_policy("tabular", env_obj, params), Oracle(make_link(link))


def _final_metrics_each(configs, env: str, link: str, keys) -> list[dict]:
    """Train every config from the uniform policy, one run per seed key through the runner with
    the exact-gradient probe: for each, the metrics of the last iteration ([seeds]) and the
    initial exact value ("initial/value")."""
    env_obj, policy, oracle = _tabular_setup(env, link)
    finals = []
    for config in configs:
        training = make_training(config, env_obj, policy, oracle, probe=True)
        result = train_seeds(training, keys, np.asarray([training.num_iterations - 1]))
        final = {name: values[:, -1] for name, values in result["metrics"].items()}
        finals.append({**final, "initial/value": result["initial"]["eval/value"]})
    return finals


SCHEDULES = ("inverse-sqrt", "constant")


def grad_norm_vs_t(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    alpha0: float = 6.4,
    schedule: str = "inverse-sqrt",
    mu: float = 5.0,
    num_pairs: int = 32,
    num_queries: int = 10,
    r_max: float = 2.0,
) -> Measurement:
    """(1/T) Σ_t ‖∇V(θ_t)‖² of ZPG runs from the uniform policy against T.

    schedule inverse-sqrt: step alpha0/√T, one run per T. schedule constant: step alpha0 for
    every T; such a run does not depend on T (iteration t's key is fold_in(seed, t)), so one run
    of the largest T per seed gives every T as a prefix, and theory splits the average into the
    first- and second-order parts F_T and Q_T (module docstring).
    """
    if schedule not in SCHEDULES:
        raise unknown_name("schedule", schedule, SCHEDULES)
    ts = check_grid(grid, integer=True)
    keys = _seed_keys(key, seeds)
    if schedule == "constant":
        config = ZPGConfig(
            num_iterations=ts[-1],
            num_pairs=num_pairs,
            num_queries=num_queries,
            mu=mu,
            r_max=r_max,
            step_size=alpha0,
        )
        parts = _ascent_parts(config, env, link, keys, [t - 1 for t in ts])
        theory = {
            "final_value_mean": parts["value"].mean(axis=0).tolist(),
            "first_order_part": parts["first_order"].mean(axis=0).tolist(),
            "second_order_part": parts["second_order"].mean(axis=0).tolist(),
        }
        return Measurement(parts["grad_norm_sq_mean"], theory)
    configs = [
        ZPGConfig(
            num_iterations=t,
            num_pairs=num_pairs,
            num_queries=num_queries,
            mu=mu,
            r_max=r_max,
            step_size=alpha0 / math.sqrt(t),
        )
        for t in ts
    ]
    columns, final_values, first_order = [], [], []
    for t, final in zip(ts, _final_metrics_each(configs, env, link, keys), strict=True):
        columns.append(final["exact/grad_norm_sq_mean"])
        gain = final["exact/value"] - final["initial/value"]
        final_values.append(float(final["exact/value"].mean()))
        # Σ_t α ∇V·ĝ_t ≈ V_T − V_0 to first order, and E[∇V·ĝ] = ‖∇V‖² (up to smoothing).
        first_order.append(float(gain.mean() / (alpha0 * math.sqrt(t))))
    theory = {"final_value_mean": final_values, "first_order_part": first_order}
    return Measurement(np.stack(columns, axis=1), theory)


def _with_ascent_sums(inner: Trainer, value) -> Trainer:
    """inner with running sums of ‖∇V(θ_t)‖² and of the second-order residual
    q_t = ∇V(θ_t)·(θ_{t+1} − θ_t) − (V(θ_{t+1}) − V(θ_t)), reported as rate/* metrics.

    One value_and_grad per iteration serves both sums, so the runner's probe (which would
    compute ∇V(θ_t) a second time) is left off.
    """

    def theta_of(state):
        return flat_view(inner.policy_params(state))[0]

    def init(key):
        zero = jnp.zeros(())
        return {"inner": inner.init(key), "grad_norm_sq_sum": zero, "second_order_sum": zero}

    def iterate(state, t, key):
        theta_t = theta_of(state["inner"])
        value_t, grad_t = jax.value_and_grad(value)(theta_t)
        inner_state, spent, metrics = inner.iterate(state["inner"], t, key)
        theta_next = theta_of(inner_state)
        second_order = grad_t @ (theta_next - theta_t) - (value(theta_next) - value_t)
        new = {
            "inner": inner_state,
            "grad_norm_sq_sum": state["grad_norm_sq_sum"] + grad_t @ grad_t,
            "second_order_sum": state["second_order_sum"] + second_order,
        }
        metrics = {
            **metrics,
            "rate/grad_norm_sq_sum": new["grad_norm_sq_sum"],
            "rate/second_order_sum": new["second_order_sum"],
        }
        return new, spent, metrics

    return Trainer(init, iterate, lambda state: inner.policy_params(state["inner"]))


def _ascent_parts(
    config: ZPGConfig,
    env: str,
    link: str,
    keys,
    logged,
    estimator: Callable = zo_gradient,
    make_difference: Callable = make_difference_fn,
) -> dict:
    """ZPG at a constant step from the uniform policy, one run per seed key through the runner:
    per seed and logged iteration t (T = t + 1), the average ‖∇V‖² and its first- and
    second-order parts F_T and Q_T (module docstring) and V(θ_T), each [seeds, len(logged)].

    estimator and make_difference replace ZPG's own (tests break them on purpose).
    """
    if callable(config.step_size):
        raise ConfigError("the ascent parts need a constant step_size")
    built = make_training(config, *_tabular_setup(env, link))  # validates config
    problem = built.problem
    est = estimator_config(config, config.block_size)
    difference_fn = make_difference(config, problem)

    def estimate(key, theta, mu):
        g, delta_hat, spent = estimator(key, theta, difference_fn, est, mu)
        return g, delta_hat, spent, None

    trainer = _with_ascent_sums(make_zo_trainer(config, problem, estimate), problem.exact_value)
    check_contract("zpg", trainer)
    training = Training(trainer, config.num_iterations, problem)
    result = train_seeds(training, keys, np.asarray(logged))
    ts = np.asarray(logged, dtype=float) + 1.0
    step_times_t = config.step_size * ts
    value = result["metrics"]["eval/value"]
    gain = value - result["initial"]["eval/value"][:, None]
    return {
        "grad_norm_sq_mean": result["metrics"]["rate/grad_norm_sq_sum"] / ts,
        "first_order": gain / step_times_t,
        "second_order": result["metrics"]["rate/second_order_sum"] / step_times_t,
        "value": value,
    }


def second_order_noise_vs_n(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    step_size: float = 0.1,
    num_iterations: int = 4096,
    mu: float = 5.0,
    num_queries: int = 10,
    r_max: float = 2.0,
    difference: str = "preference",
    estimator: Callable = zo_gradient,
    make_difference: Callable = make_difference_fn,
) -> Measurement:
    """Q_T(N) − Q_T(exact differences) per seed, against N, at a constant step and fixed T.

    Q_T is the second-order part of (1/T) Σ_t ‖∇V(θ_t)‖² (module docstring), §8's floor term
    (α/2T) Σ_t E[ĝᵀ(−∇²V)ĝ]. With E‖ĝ‖² ≈ d‖∇V‖² + (d/μ)²σ²/N (§8), the direction's own variance
    gives a part that N does not change; the same runs with exact differences (no vote or
    trajectory noise) measure it, and what the noise adds should fall like 1/N. The α₀/√T
    T-slope cannot show this: its first-order part does not depend on N at all.
    """
    ns = check_grid(grid, integer=True)
    keys = _seed_keys(key, seeds)
    logged = [num_iterations - 1]

    def parts(num_pairs, difference):
        config = ZPGConfig(
            num_iterations=num_iterations,
            num_pairs=num_pairs,
            num_queries=num_queries,
            mu=mu,
            r_max=r_max,
            step_size=step_size,
            difference=difference,
        )
        found = _ascent_parts(config, env, link, keys, logged, estimator, make_difference)
        return {name: values[:, 0] for name, values in found.items()}

    # With exact differences every pair carries the same number, so N changes nothing there.
    exact = parts(1, "exact")
    noisy = [parts(n, difference) for n in ns]
    columns = [p["second_order"] - exact["second_order"] for p in noisy]
    theory = {
        "exact_difference_part": float(exact["second_order"].mean()),
        "second_order_part": [float(p["second_order"].mean()) for p in noisy],
        "first_order_part": [float(p["first_order"].mean()) for p in noisy],
        "grad_norm_sq_mean": [float(p["grad_norm_sq_mean"].mean()) for p in noisy],
        "final_value_mean": [float(p["value"].mean()) for p in noisy],
    }
    return Measurement(np.stack(columns, axis=1), theory)


def _sign_agreement(point, mu, direction_seed, pairs, repeats, seeds, key) -> Measurement:
    """Measured frequency that ŝ = sign(V(θ + μv) − V(θ)) for each (D, N) in pairs, per seed
    over `repeats` sign estimates, with the closed form of science.md §5 as theory."""
    setting = make_setting(point)
    base, theta = setting.problem, setting.theta
    v = sphere(jax.random.key(direction_seed), setting.dim)
    theta_1 = theta + mu * v
    delta = float(base.exact_value(theta_1) - base.exact_value(theta))
    support, probabilities = return_distribution(base)
    link = base.oracle.link
    keys = _seed_keys(key, seeds)
    columns, closed = [], []
    for batch_size, num_votes in pairs:
        majority = make_majority_sign(base, num_votes, batch_size)

        def one_seed(k, majority=majority):
            signs = jax.vmap(lambda kk: majority(kk, theta_1, theta)[0])(
                jax.random.split(k, repeats)
            )
            return jnp.mean(signs == np.sign(delta))

        columns.append(np.asarray(jax.jit(lambda ks, f=one_seed: jax.lax.map(f, ks))(keys)))
        closed.append(
            sign_agreement(
                link,
                support,
                probabilities(theta_1),
                probabilities(theta),
                delta,
                batch_size,
                num_votes,
            )
        )
    theory = {"closed_form": closed, "value_difference": delta}
    return Measurement(np.stack(columns, axis=1), theory)


def sign_agreement_vs_d(
    grid,
    seeds: int,
    key,
    *,
    point: Point = Point(),
    mu: float = 3.0,
    direction_seed: int = 2,
    num_votes: int = 21,
    repeats: int = 2000,
) -> Measurement:
    """P(ŝ = sign ΔV) of ZSPO's majority vote against D, trajectories per side of a query."""
    pairs = [(d, num_votes) for d in check_grid(grid, integer=True)]
    return _sign_agreement(point, mu, direction_seed, pairs, repeats, seeds, key)


def sign_agreement_vs_n(
    grid,
    seeds: int,
    key,
    *,
    point: Point = Point(),
    mu: float = 3.0,
    direction_seed: int = 2,
    batch_size: int = 4,
    repeats: int = 2000,
) -> Measurement:
    """P(ŝ = sign ΔV) of ZSPO's majority vote against N, the queries per sign."""
    pairs = [(batch_size, n) for n in check_grid(grid, integer=True)]
    return _sign_agreement(point, mu, direction_seed, pairs, repeats, seeds, key)


def sign_grad_norm_vs_t(
    grid,
    seeds: int,
    key,
    *,
    env: str = "gridworld/open-5x5",
    link: str = "bradley-terry",
    alpha0: float = 3.2,
    mu: float = 1.0,
    num_votes: int = 20,
    batch_size: int = 4,
) -> Measurement:
    """(1/T) Σ_t ‖∇V(θ_t)‖² of ZSPO runs from the uniform policy, step alpha0/√T, one run per T."""
    configs = [
        ZSPOConfig(
            num_iterations=t,
            num_votes=num_votes,
            batch_size=batch_size,
            mu=mu,
            step_size=alpha0 / math.sqrt(t),
        )
        for t in check_grid(grid, integer=True)
    ]
    finals = _final_metrics_each(configs, env, link, _seed_keys(key, seeds))
    columns = [final["exact/grad_norm_sq_mean"] for final in finals]
    final_values = [float(final["exact/value"].mean()) for final in finals]
    return Measurement(np.stack(columns, axis=1), {"final_value_mean": final_values})


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
    ks = check_grid(grid, integer=True)
    env_obj, params = make_env(env)
    dim = env_obj.num_states(params) * env_obj.num_actions
    shared = {
        "num_iterations": num_iterations,
        "num_pairs": num_pairs,
        "num_queries": num_queries,
        "mu": mu,
        "r_max": r_max,
    }
    configs = [
        ZBCPGConfig(
            block_size=k,
            num_blocks=1,
            step_size=step_size * dim / k if scale_step else step_size,
            **shared,
        )
        for k in ks
    ]
    # ZPG itself last, on the same seeds and queries: K = d is ZPG.
    *finals, reference = _final_metrics_each(
        [*configs, ZPGConfig(step_size=step_size, **shared)], env, link, _seed_keys(key, seeds)
    )
    columns, final_values = [], []
    for final in finals:
        per_seed = {
            "grad_norm_sq": final["exact/grad_norm_sq_mean"],
            "final_value": final["exact/value"],
        }
        columns.append(per_seed[metric])
        final_values.append(float(per_seed["final_value"].mean()))
    zpg_values = reference["exact/grad_norm_sq_mean"]
    theory = {
        "dim": dim,
        "queries_per_run": num_iterations * num_pairs * num_queries,
        "final_value_mean": final_values,
        "zpg_grad_norm_sq_mean": float(zpg_values.mean()),
        "zpg_final_value_mean": float(reference["exact/value"].mean()),
        "zpg_grad_norm_sq_per_seed": zpg_values.tolist(),
        "zpg_final_value_per_seed": reference["exact/value"].tolist(),
        # ZPG's value of this sweep's metric: the figure draws it as a line (K = d is ZPG).
        "zpg_same_queries": float(
            (zpg_values if metric == "grad_norm_sq" else reference["exact/value"]).mean()
        ),
    }
    return Measurement(np.stack(columns, axis=1), theory)


METRICS = ("grad_norm_sq", "final_value")
