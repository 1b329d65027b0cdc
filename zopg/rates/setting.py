"""The tabular setting where rates are measured (science.md §8), and its exact theory.

A GridWorld with an exact model, a policy point θ (optionally padded to a larger d), the
ball-smoothed gradient by our own sampler, and exact distributions of returns and of the
preference estimate Δ̂, against which the measurements of measurements.py are compared.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from zopg.algorithms import Problem
from zopg.envs import make as make_env
from zopg.errors import ConfigError, bad_value
from zopg.exact import policy_value
from zopg.policies import TabularSoftmax, flat_view, make_policy
from zopg.preferences import Oracle, make_link, value_difference
from zopg.rollout import rollout_batch

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
class Point:
    """Where a sweep measures: a tabular env, the teacher's link, and θ with N(0, logit_scale²)
    logits drawn from policy_seed. In a sweep file these are plain settings (env = ...)."""

    env: str = "gridworld/open-5x5"
    link: str = "bradley-terry"
    logit_scale: float = 1.0
    policy_seed: int = 5


@dataclasses.dataclass(frozen=True)
class Setting:
    """A GridWorld problem (exact V available) and the parameter point theta where we measure."""

    problem: Problem
    theta: jax.Array

    @property
    def dim(self) -> int:
        return self.problem.dim


def make_setting(point: Point = Point(), dim: int | None = None, **env_overrides) -> Setting:
    """The point's tabular softmax policy and θ, the policy optionally padded to `dim`.

    env_overrides go to zopg.envs.make (e.g. layout and horizon for env = "gridworld").
    """
    env_obj, params = make_env(point.env, **env_overrides)
    if not hasattr(env_obj, "tabular_model"):
        raise ConfigError(
            f"rate sweeps need a tabular environment; {point.env!r} has no exact model"
        )
    base = make_policy("tabular", env_obj, params, init_scale=float(point.logit_scale))
    policy = base
    base_dim = base.num_states * base.num_actions
    if dim is not None:
        if not isinstance(dim, int) or dim < base_dim:
            raise bad_value("dim", dim, f"must be an integer >= {base_dim} (the policy's own d)")
        policy = PaddedPolicy(base, dim - base_dim) if dim > base_dim else base
    problem = Problem.build(env_obj, policy, Oracle(make_link(point.link)), params)
    theta, _ = flat_view(policy.init(jax.random.key(point.policy_seed)))
    return Setting(problem, theta)


def sphere(key, dim: int) -> jax.Array:
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
        v = sphere(key, dim)
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


def rollout_fn(problem: Problem):
    def rollout(key, theta, num):
        return rollout_batch(
            key, problem.policy, problem.unravel(theta), problem.env, problem.env_params, num
        )

    return rollout


# -- sign methods: the closed form of science.md §5 ------------------------------------------


def batch_mean_distribution(support, probs, batch_size: int):
    """(means, probabilities) of the mean of D i.i.d. returns on an integer support (GridWorld's
    returns are -1, 0 or 1 with step_reward 0): the D-fold convolution of one return's law."""
    values = np.rint(np.asarray(support, np.float64)).astype(int)
    if not np.allclose(values, support):
        raise ConfigError("batch_mean_distribution needs integer returns")
    low = values.min()
    one = np.zeros(values.max() - low + 1)
    np.add.at(one, values - low, np.asarray(probs, np.float64))
    law = np.array([1.0])
    for _ in range(batch_size):
        law = np.convolve(law, one)
    sums = np.arange(law.size) + batch_size * low
    return sums / batch_size, law


def vote_probability(link, support, probs_1, probs_0, batch_size: int) -> float:
    """P(o = 1) = E σ(mean of D returns of θ₁ − mean of D of θ₀), exactly by enumeration."""
    m1, q1 = batch_mean_distribution(support, probs_1, batch_size)
    m0, q0 = batch_mean_distribution(support, probs_0, batch_size)
    p = np.asarray(link.prob(jnp.asarray(m1[:, None] - m0[None, :], jnp.float32)), np.float64)
    return float(q1 @ p @ q0)


def majority_up(p: float, num_votes: int) -> float:
    """P(ŝ = +1) for N votes that are 1 with probability p: P(Bin(N, p) > N/2), plus half the
    tie's probability (a fair coin breaks it)."""
    k = np.arange(num_votes + 1)
    log_pmf = (
        np.array(
            [
                math.lgamma(num_votes + 1) - math.lgamma(i + 1) - math.lgamma(num_votes - i + 1)
                for i in k
            ]
        )
        + k * np.log(max(p, 1e-300))
        + (num_votes - k) * np.log(max(1.0 - p, 1e-300))
    )
    pmf = np.exp(log_pmf)
    return float(pmf[2 * k > num_votes].sum() + 0.5 * pmf[2 * k == num_votes].sum())


def sign_agreement(link, support, probs_1, probs_0, value_difference, batch_size, num_votes):
    """P(ŝ = sign(V(θ₁) − V(θ₀))), the closed form of science.md §5."""
    up = majority_up(vote_probability(link, support, probs_1, probs_0, batch_size), num_votes)
    return up if value_difference > 0 else 1.0 - up
