"""Exact value, optimum and gradient of finite-horizon tabular MDPs (backward induction)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zopg.envs.gridworld import TabularModel


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
