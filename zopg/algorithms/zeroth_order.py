"""Shared machinery of ZPG and ZBCPG: value-difference sources, config checks and the train loop.

Both algorithms are `make_train(config, env, policy, oracle) -> train(key)`; `train` is pure,
jitted and vmappable over keys. Iterations are one `lax.scan`; pairs, directions and blocks vmap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from zopg.algorithms.trainer import Trainer
from zopg.errors import ConfigError, bad_value, check_range, unknown_name
from zopg.estimators import EstimatorConfig, Spent, check_mu
from zopg.exact import value_fn
from zopg.policies import flat_view
from zopg.preferences import preference_rate, value_difference
from zopg.rollout import masked_return, rollout_batch

DIFFERENCES = ("preference", "return", "exact")
OPTIMIZERS = ("sgd", "adam")
INT32_MAX = 2**31 - 1


def schedule_value(value_or_schedule, step):
    """A float, or a schedule (callable of the iteration index, as in optax)."""
    return value_or_schedule(step) if callable(value_or_schedule) else value_or_schedule


def check_common(config) -> None:
    """Checks shared by every ZO config: counts, step size, smoothing, difference source."""
    for field in ("num_iterations", "num_pairs", "num_queries"):
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_value(field, value, "must be an integer >= 1")
    check_mu(config.mu)
    if not callable(config.step_size):
        check_range("step_size", float(config.step_size), 0.0, None, low_open=True)
    check_range("r_max", float(config.r_max), 0.0, None, low_open=True, high_open=True)
    if config.difference not in DIFFERENCES:
        raise unknown_name("difference", config.difference, DIFFERENCES)
    if config.optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", config.optimizer, OPTIMIZERS)


def estimator_config(config) -> EstimatorConfig:
    """The estimator part of a ZPG/ZBCPG config (ZBCPG has no block-sphere direction of its own)."""
    return EstimatorConfig(
        direction=config.direction,
        two_sided=config.two_sided,
        spend=config.spend,
        num_pairs=config.num_pairs,
        block_size=config.block_size,
        partition=config.partition,
    )


def make_optimizer(config) -> optax.GradientTransformation:
    if config.optimizer == "sgd":
        return optax.sgd(config.step_size)
    return optax.adam(config.step_size)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Everything a ZO trainer needs about env, policy and teacher, resolved once at build time."""

    env: object
    env_params: object
    policy: object
    oracle: object
    dim: int
    unravel: Callable
    exact_value: Callable | None  # flat theta -> exact V, for tabular environments only

    @classmethod
    def build(cls, env, policy, oracle, env_params=None) -> Problem:
        env_params = env.default_params if env_params is None else env_params
        template = jax.eval_shape(policy.init, jax.random.key(0))
        flat, unravel = flat_view(jax.tree_util.tree_map(jnp.zeros_like, template))
        exact_value = None
        if hasattr(env, "tabular_model"):
            value = value_fn(env.tabular_model(env_params), policy, env.num_states(env_params))
            exact_value = lambda theta: value(unravel(theta))  # noqa: E731
        return cls(env, env_params, policy, oracle, flat.shape[0], unravel, exact_value)


def make_difference_fn(config, problem: Problem):
    """`(key, theta_1, theta_0, num_pairs) -> (delta [num_pairs], Spent)` for config.difference.

    preference: M votes per pair of fresh trajectories, inverted through the learner's link.
    return:     the true return difference of the same pairs (no queries; tests and rates).
    exact:      V(theta_1) - V(theta_0) from the tabular model (no samples at all).
    """
    if config.difference == "exact":
        if problem.exact_value is None:
            raise ConfigError(
                f"difference = 'exact' needs a tabular environment; {problem.env!r} has no "
                "tabular_model"
            )

        def exact(key, theta_1, theta_0, num_pairs):
            delta = problem.exact_value(theta_1) - problem.exact_value(theta_0)
            return jnp.full((num_pairs,), delta), Spent.zero()

        return exact

    if config.difference == "preference" and problem.oracle is None:
        raise ConfigError("difference = 'preference' needs an oracle; got oracle = None")
    link = getattr(config, "link", None) or getattr(problem.oracle, "link", None)

    def sampled(key, theta_1, theta_0, num_pairs):
        k1, k0, kq = jax.random.split(key, 3)
        run = lambda k, th: rollout_batch(  # noqa: E731
            k, problem.policy, problem.unravel(th), problem.env, problem.env_params, num_pairs
        )
        traj_1, traj_0 = run(k1, theta_1), run(k0, theta_0)
        steps = jnp.sum(traj_1.valid) + jnp.sum(traj_0.valid)
        if config.difference == "return":
            delta = masked_return(traj_1) - masked_return(traj_0)
            queries = jnp.zeros((), jnp.int32)
        else:
            feedback = problem.oracle.query(kq, traj_1, traj_0, config.num_queries)
            delta = value_difference(preference_rate(feedback), link, config.r_max)
            queries = jnp.asarray(feedback.queries, jnp.int32)
        spent = Spent(
            queries=queries,
            trajectories=jnp.int32(2 * num_pairs),
            env_steps=steps.astype(jnp.int32),
        )
        return delta, spent

    return sampled


def check_budget_fits(config, problem: Problem, per_iteration_queries: int, trajectories: int):
    """Cumulative counters are int32 (JAX default); refuse runs that would overflow them."""
    horizon = problem.env.horizon(problem.env_params)
    worst = config.num_iterations * max(per_iteration_queries, trajectories * horizon)
    if worst > INT32_MAX:
        raise bad_value(
            "num_iterations",
            config.num_iterations,
            f"budget counters would exceed int32 ({worst:,} > {INT32_MAX:,}); split the run",
        )


def make_zo_trainer(config, problem: Problem, estimate) -> Trainer:
    """A Trainer around `estimate(key, theta, mu, t)`.

    `estimate` returns (g, delta_hat, spent, update_mask); update_mask is None or a bool vector of
    the coordinates that may change this iteration (ZBCPG's blocks).
    """
    tx = make_optimizer(config)
    value_and_grad = (
        jax.value_and_grad(problem.exact_value) if problem.exact_value is not None else None
    )

    def init_state(key):
        theta, _ = flat_view(problem.policy.init(key))
        return (theta, tx.init(theta), Spent.zero())

    def iterate(state, t, key):
        theta, opt_state, spent_so_far = state
        mu = schedule_value(config.mu, t)
        g, delta_hat, spent, update_mask = estimate(key, theta, mu, t)
        # optax minimises, so ascent feeds -g.
        updates, opt_state = tx.update(-g, opt_state, theta)
        if update_mask is not None:
            # Adam's moments would otherwise move coordinates outside the chosen blocks.
            updates = jnp.where(update_mask, updates, 0.0)
        new_theta = optax.apply_updates(theta, updates)
        spent_so_far = jax.tree_util.tree_map(jnp.add, spent_so_far, spent)
        metrics = {
            "budget/queries": spent_so_far.queries,
            "budget/trajectories": spent_so_far.trajectories,
            "budget/env_steps": spent_so_far.env_steps,
            "zo/delta_hat": delta_hat,
            "zo/grad_estimate_norm": jnp.linalg.norm(g),
            "schedule/mu": jnp.asarray(mu, jnp.float32),
            "schedule/step_size": jnp.asarray(schedule_value(config.step_size, t), jnp.float32),
        }
        if value_and_grad is not None:
            # Outside the budget: the learner never sees these.
            value_t, grad_t = value_and_grad(theta)
            metrics["exact/value_before"] = value_t
            metrics["exact/grad_norm_sq"] = jnp.sum(grad_t**2)
            metrics["exact/value"] = problem.exact_value(new_theta)
        return (new_theta, opt_state, spent_so_far), metrics

    return Trainer(
        init_state=init_state,
        iterate=iterate,
        policy_params=lambda state: problem.unravel(state[0]),
        num_iterations=config.num_iterations,
    )
