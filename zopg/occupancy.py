"""Forward state occupancies of finite-horizon tabular MDPs and the exact trajectory KL between
two policies of the state (science.md §11: d = √KL(π‖π_ref), here over whole trajectories).

For policies π and π_ref of the state, the transition terms of log π(τ)/π_ref(τ) cancel, so
KL(π‖π_ref) over trajectories = E_{τ∼π} Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t)) = Σ_t Σ_s d_t(s) k(s),
with d_t the distribution of s_t under π and k(s) the per-state KL. Every step of the horizon
counts, absorbing states included: episodes last exactly `horizon` steps and a policy still
draws its actions there (as in the rollouts, DPO's log-ratios and Monte Carlo estimates).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from zopg.envs.gridworld import TabularModel


def state_occupancies(model: TabularModel, probs: jax.Array) -> jax.Array:
    """d[t, s] = P(s_t = s) under the stationary policy probs[s, a], t = 0 … horizon − 1."""

    def forward(dist, _):
        following = jnp.einsum("s,sa,sat->t", dist, probs, model.transition)
        return following, dist

    start = model.start.astype(jnp.result_type(model.start, probs))
    _, occupancies = jax.lax.scan(forward, start, None, length=model.horizon)
    return occupancies


def state_kl(log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """k[s] = KL(π(·|s) ‖ π_ref(·|s)) from log-probability tables [S, A]; 0·log 0 = 0."""
    probs = jnp.exp(log_probs)
    terms = jnp.where(probs > 0, probs * (log_probs - ref_log_probs), 0.0)
    return jnp.sum(terms, axis=-1)


def trajectory_kl(model: TabularModel, log_probs: jax.Array, ref_log_probs: jax.Array):
    """Exact KL(π‖π_ref) over trajectories of `horizon` steps, from log-probability tables."""
    occupancies = state_occupancies(model, jnp.exp(log_probs))
    return jnp.sum(occupancies.sum(axis=0) * state_kl(log_probs, ref_log_probs))


def log_prob_table(policy, params, num_states: int) -> jax.Array:
    """log π(a|s) for every state [S, A]: the policy's log_probs where it has them (exact for
    saturated logits), else the log of its action probabilities."""
    states = jnp.arange(num_states)
    if hasattr(policy, "log_probs"):
        return policy.log_probs(params, states)
    return jnp.log(policy.action_probs(params, states))


def trajectory_kl_fn(env, env_params, policy) -> Callable:
    """(params, ref_params) -> exact trajectory KL(π_params ‖ π_ref_params) on env's model."""
    model = env.tabular_model(env_params)
    num_states = env.num_states(env_params)

    def kl(params, ref_params):
        return trajectory_kl(
            model,
            log_prob_table(policy, params, num_states),
            log_prob_table(policy, ref_params, num_states),
        )

    return kl
