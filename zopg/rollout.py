"""Fixed-horizon, jitted, vmapped rollouts: (policy, params, env, key) -> Trajectory batches."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Trajectory:
    """Stacked arrays of one or more fixed-horizon episodes; time is the last batch axis.

    Shapes, with leading batch axes `...` and horizon H:
      obs      [..., H, *obs_shape]  observation at which `action` was taken
      action   [..., H, *act_shape]
      reward   [..., H]              zero wherever `valid` is False
      log_prob [..., H]              log pi(action | obs) under the behaviour policy
      valid    [..., H] bool         True until (and including) the step that ended the episode
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    valid: jax.Array

    @property
    def horizon(self) -> int:
        return self.reward.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.reward.shape[:-1]


def masked_return(traj: Trajectory) -> jax.Array:
    """Undiscounted return of each trajectory, counting only valid steps."""
    return jnp.sum(jnp.where(traj.valid, traj.reward, 0.0), axis=-1)


def rollout(key, policy, policy_params, env, env_params, horizon: int) -> Trajectory:
    """One episode of exactly `horizon` steps; steps after termination are masked out.

    The key is split once, in bulk, into a reset key and one (action, env) key pair per step:
    drawing all keys up front is cheaper than splitting a carried key inside the scan.
    """
    reset_key, steps_key = jax.random.split(key)
    obs, state = env.reset(reset_key, env_params)
    step_keys = jax.random.split(steps_key, (horizon, 2))

    def _env_step(carry, keys):
        obs, state, alive = carry
        action, log_prob = policy.sample_and_log_prob(keys[0], policy_params, obs)
        next_obs, next_state, reward, done = env.step(keys[1], state, action, env_params)
        step = (obs, action, jnp.where(alive, reward, 0.0), log_prob, alive)
        return (next_obs, next_state, alive & ~done), step

    carry = (obs, state, jnp.array(True))
    _, (obs, action, reward, log_prob, valid) = jax.lax.scan(_env_step, carry, step_keys)
    return Trajectory(obs=obs, action=action, reward=reward, log_prob=log_prob, valid=valid)


@partial(jax.jit, static_argnames=("policy", "env", "num_trajectories", "horizon"))
def rollout_batch(
    key,
    policy,
    policy_params,
    env,
    env_params,
    num_trajectories: int,
    horizon: int | None = None,
) -> Trajectory:
    """`num_trajectories` independent episodes of one policy, each with its own fresh reset key."""
    if horizon is None:
        horizon = env.horizon(env_params)
    keys = jax.random.split(key, num_trajectories)
    one = partial(rollout, policy=policy, env=env, horizon=horizon)
    return jax.vmap(lambda k: one(k, policy_params=policy_params, env_params=env_params))(keys)
