"""Monte Carlo evaluation: mean return over fresh rollouts with its standard error.

It runs outside every algorithm's budget: it is never shown to the learner and spends no queries.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from zopg.errors import bad_value
from zopg.rollout import masked_return, rollout_batch


def _check_num_episodes(num_episodes) -> int:
    # A standard error needs at least two episodes (sample variance with ddof = 1).
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 2:
        raise bad_value("num_episodes", num_episodes, "must be a static Python int >= 2")
    return num_episodes


def episode_returns(
    key, policy, policy_params, env, env_params, num_episodes: int, horizon: int | None = None
) -> jax.Array:
    """Masked returns of `num_episodes` fresh episodes, each with its own reset key: [n]."""
    _check_num_episodes(num_episodes)
    traj = rollout_batch(key, policy, policy_params, env, env_params, num_episodes, horizon)
    return masked_return(traj)


def summarize_returns(returns: jax.Array):
    """(mean, standard error) over the last axis: std with ddof = 1, divided by sqrt(n)."""
    n = returns.shape[-1]
    mean = jnp.mean(returns, axis=-1)
    stderr = jnp.std(returns, axis=-1, ddof=1) / jnp.sqrt(n)
    return mean, stderr


@partial(jax.jit, static_argnames=("policy", "env", "num_episodes", "horizon"))
def evaluate(
    key, policy, policy_params, env, env_params, num_episodes: int, horizon: int | None = None
):
    """Monte Carlo value of the policy: (mean return, standard error) over `num_episodes`.

    Jitted; also usable under jit and vmap (e.g. over seeds' final params). For the per-episode
    returns, call `episode_returns` with the same arguments (same key: the same episodes).
    """
    return summarize_returns(
        episode_returns(key, policy, policy_params, env, env_params, num_episodes, horizon)
    )
