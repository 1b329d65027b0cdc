"""Exact value, optimum and gradient of finite-horizon tabular MDPs (backward induction), also
of path utilities through the product of cells with the utility's automaton (science.md §2b)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zopg.envs.gridworld import TabularModel
from zopg.errors import ConfigError

# Exact values of token policies live beside their sampler; exported here with the others.
from zopg.sequence_kl import sequence_kl, sequence_kl_estimate  # noqa: F401


def expected_reward(model: TabularModel) -> jax.Array:
    """r[s, a] = sum_s' P[s, a, s'] R[s, a, s']."""
    return jnp.einsum("sat,sat->sa", model.transition, model.reward)


def _backward(model: TabularModel, improve) -> jax.Array:
    """V_0 over states after `horizon` Bellman backups, each mapping Q[s, a] to V[s]."""
    r = expected_reward(model)

    def backup(values, _):
        q = r + jnp.einsum("sat,t->sa", model.transition, values)
        return improve(q), None

    # The first backup (from V = 0) is done outside the scan so that the carry takes the dtype
    # of the result: float64 probabilities on a float32 model (under jax.enable_x64) would
    # otherwise change the carry's dtype inside the scan, which lax.scan rejects.
    first = improve(r)
    values, _ = jax.lax.scan(backup, first, None, length=model.horizon - 1)
    return values


def state_values(model: TabularModel, probs: jax.Array) -> jax.Array:
    """V[s]: expected return over `horizon` steps from s under the stationary policy probs[s, a]."""
    return _backward(model, lambda q: jnp.sum(probs * q, axis=-1))


def policy_value(model: TabularModel, probs: jax.Array) -> jax.Array:
    """Expected return from the start distribution; differentiable in `probs`."""
    return model.start @ state_values(model, probs)


def optimal_value(model: TabularModel) -> jax.Array:
    """Finite-horizon optimum (non-stationary policies allowed): the upper bound for scores."""
    return model.start @ _backward(model, lambda q: jnp.max(q, axis=-1))


def normalized_score(value, baseline, best):
    """(V - baseline) / (V* - baseline): 0 at the baseline (e.g. the uniform policy), 1 at the
    optimum V* = `best`. Plain arithmetic, so it serves NumPy arrays and traced values alike."""
    return (value - baseline) / (best - baseline)


def value_fn(model: TabularModel, policy, num_states: int):
    """theta-pytree -> exact V(theta); `jax.grad` of it is the exact policy gradient."""

    def value(params):
        return policy_value(model, policy.action_probs(params, jnp.arange(num_states)))

    return value


# -- path utilities: exact values on the product of cells and an automaton --------------------


def _product_backward(model: TabularModel, automaton, improve) -> jax.Array:
    """V_0[q, s] after H backups of Q_t[q, s, a] = Σ_s' P[s, a, s'] (reward_t + V_(t+1)[q', s'])
    with q' = next_state[q, s, a, s']; `improve` maps Q_t [Q, S, A] to V_t [Q, S]."""
    num_cells = model.transition.shape[0]
    targets = jnp.arange(num_cells)[None, None, None, :]

    def backup(values, reward_t):
        following = values[automaton.next_state, targets]  # V_(t+1)[q', s'], [Q, S, A, S']
        q = jnp.einsum("sat,qsat->qsa", model.transition, reward_t + following)
        return improve(q), None

    zero = jnp.zeros((automaton.num_states, num_cells), automaton.reward.dtype)
    values, _ = jax.lax.scan(backup, zero, automaton.reward, reverse=True)
    return values


def _start_value(model: TabularModel, automaton, values) -> jax.Array:
    cells = jnp.arange(model.transition.shape[0])
    return model.start @ values[automaton.start, cells]


def _bound_automaton(env, env_params, utility):
    if not hasattr(env, "tabular_model"):
        raise ConfigError(f"exact utility values need a tabular environment; {env!r} is not")
    model = env.tabular_model(env_params)
    automaton = utility.bind(env, env_params).automaton(model)
    if automaton is None:
        raise ConfigError(
            f"utility {utility.name!r} has no finite automaton here: evaluate it by Monte Carlo"
        )
    return model, automaton


def utility_value(env, env_params, utility, probs) -> jax.Array:
    """Exact E[u(τ)] under action probabilities probs[s, a] (a policy that sees the cell) or
    probs[q, s, a] (one that also sees the utility's automaton state); differentiable."""
    model, automaton = _bound_automaton(env, env_params, utility)
    if probs.ndim == 2:
        probs = probs[None]
    values = _product_backward(model, automaton, lambda q: jnp.sum(probs * q, axis=-1))
    return _start_value(model, automaton, values)


def optimal_utility_value(env, env_params, utility) -> jax.Array:
    """max E[u(τ)] over all policies (they may depend on time and the automaton state)."""
    model, automaton = _bound_automaton(env, env_params, utility)
    return _start_value(model, automaton, _product_backward(model, automaton, lambda q: q.max(-1)))


def utility_value_fn(env, env_params, utility, policy):
    """theta-pytree -> exact E[u(τ)] for a policy of the cell (jax.grad of it is exact ∇V)."""
    model, automaton = _bound_automaton(env, env_params, utility)
    cells = jnp.arange(model.transition.shape[0])

    def value(params):
        probs = policy.action_probs(params, cells)[None]
        values = _product_backward(model, automaton, lambda q: jnp.sum(probs * q, axis=-1))
        return _start_value(model, automaton, values)

    return value
