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
      final_obs [..., *obs_shape]    the observation after the last step (rollouts set it; path
                                     utilities need it to see the cell the last step entered)
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    log_prob: jax.Array
    valid: jax.Array
    final_obs: jax.Array | None = None

    @property
    def horizon(self) -> int:
        return self.reward.shape[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.reward.shape[:-1]


def next_observations(traj: Trajectory) -> jax.Array:
    """obs after each step, [..., H, *obs_shape]: obs[t + 1], and final_obs after the last."""
    if traj.final_obs is None:
        raise ValueError("this Trajectory has no final_obs; it needs one to give next observations")
    time_axis = len(traj.batch_shape)
    last = jnp.expand_dims(traj.final_obs, time_axis)
    rest = jax.lax.slice_in_dim(traj.obs, 1, traj.horizon, axis=time_axis)
    return jnp.concatenate([rest, last.astype(traj.obs.dtype)], axis=time_axis)


def masked_return(traj: Trajectory) -> jax.Array:
    """Undiscounted return of each trajectory, counting only valid steps."""
    return jnp.sum(jnp.where(traj.valid, traj.reward, 0.0), axis=-1)


def noise_driven(env, policy) -> bool:
    """True when env and policy can run from pre-drawn uniforms (the fast rollout path)."""
    return hasattr(env, "step_from_uniform") and hasattr(policy, "uniform_sampler")


def _draw_noise(key, env, policy, shape: tuple[int, ...]):
    """All per-step randomness of `shape` = (..., horizon) episodes, drawn in one call.

    Two uniforms per step (action, transition) when env and policy accept them, else an
    (action, env) key pair per step. One bulk draw is much cheaper than splitting a carried key
    inside the scan, and uniforms are cheaper than keys: random numbers bound tabular rollouts.
    """
    if noise_driven(env, policy):
        return jax.random.uniform(key, (*shape, 2))
    return jax.random.split(key, (*shape, 2))


def _episode(reset_key, noise, policy, policy_params, env, env_params) -> Trajectory:
    """Scan one episode over its per-step noise (uniform pairs or key pairs)."""
    obs, state = env.reset(reset_key, env_params)
    fast = noise_driven(env, policy)
    sample = policy.uniform_sampler(policy_params) if fast else None
    # A policy with a memory of what it has read (a GRU's hidden state) carries it from step to
    # step instead of re-reading the whole observation at every step.
    carried = fast and hasattr(policy, "carried_sampler")
    if carried:
        start, sample = policy.carried_sampler(policy_params)

    def _env_step(carry, noise_t):
        obs, state, alive, memory = carry
        if carried:
            memory, action, log_prob = sample(memory, noise_t[0], obs)
            out = env.step_from_uniform(noise_t[1], state, action, env_params)
        elif fast:
            action, log_prob = sample(noise_t[0], obs)
            out = env.step_from_uniform(noise_t[1], state, action, env_params)
        else:
            action, log_prob = policy.sample_and_log_prob(noise_t[0], policy_params, obs)
            out = env.step(noise_t[1], state, action, env_params)
        next_obs, next_state, reward, done = out
        step = (obs, action, jnp.where(alive, reward, 0.0), log_prob, alive)
        return (next_obs, next_state, alive & ~done, memory), step

    carry = (obs, state, jnp.array(True), start(obs) if carried else ())
    (final_obs, *_), steps = jax.lax.scan(_env_step, carry, noise)
    obs, action, reward, log_prob, valid = steps
    return Trajectory(obs, action, reward, log_prob, valid, final_obs)


def rollout(key, policy, policy_params, env, env_params, horizon: int) -> Trajectory:
    """One episode of exactly `horizon` steps; steps after termination are masked out."""
    reset_key, noise_key = jax.random.split(key)
    noise = _draw_noise(noise_key, env, policy, (horizon,))
    return _episode(reset_key, noise, policy, policy_params, env, env_params)


@partial(jax.jit, static_argnames=("policy", "env", "num_trajectories", "horizon"))
def rollout_batch(
    key,
    policy,
    policy_params,
    env,
    env_params,
    num_trajectories: int,
    horizon: int | None = None,
    reset_keys=None,
) -> Trajectory:
    """`num_trajectories` independent episodes of one policy, each with its own fresh reset key;
    or, given reset_keys [num_trajectories], with those (episodes that share a reset key start
    from the same state, a token environment's same prompt, and differ only in their steps)."""
    if horizon is None:
        horizon = env.horizon(env_params)
    reset_key, noise_key = jax.random.split(key)
    if reset_keys is None:
        reset_keys = jax.random.split(reset_key, num_trajectories)
    noise = _draw_noise(noise_key, env, policy, (num_trajectories, horizon))
    episode = lambda k, n: _episode(k, n, policy, policy_params, env, env_params)  # noqa: E731
    return jax.vmap(episode)(reset_keys, noise)
