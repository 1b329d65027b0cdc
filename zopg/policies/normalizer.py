"""Observation normalisation that keeps the flat parameter view exactly the network's weights.

`RunningStats` accumulates mean and variance of observations (masked, jittable, mergeable).
Policies never carry these statistics in their params: a zeroth-order method perturbs every
coordinate of θ, and statistics inside θ would be perturbed too. Instead `NormalizedPolicy`
applies a frozen snapshot (`ObsNormalization`, hashable, baked into the compiled function as
constants). Freezing is also what makes a ZO difference meaningful: θ and θ + μv in one
comparison must see the same normalisation, or their return difference is not a finite
difference of V. A runner may refresh the snapshot between chunks (one recompile per refresh);
`fit_obs_normalization` builds one from rollouts that use no reward and no human query.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import bad_value


@struct.dataclass
class RunningStats:
    """Count, mean and summed squared deviations (M2) per observation coordinate."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array

    @classmethod
    def zeros(cls, obs_shape) -> RunningStats:
        shape = tuple(obs_shape)
        return cls(
            count=jnp.zeros((), jnp.float32),
            mean=jnp.zeros(shape, jnp.float32),
            m2=jnp.zeros(shape, jnp.float32),
        )

    @property
    def var(self) -> jax.Array:
        return self.m2 / jnp.maximum(self.count, 1.0)

    def update(self, obs, mask=None) -> RunningStats:
        """Merge a batch (leading axes of `obs`; `mask` marks the rows to count) into the stats.

        Chan et al.'s pairwise merge: exact for any split of the data and stable in float32,
        unlike accumulating sums of squares.
        """
        obs = jnp.asarray(obs, jnp.float32)
        batch_axes = tuple(range(obs.ndim - self.mean.ndim))
        weight = jnp.ones(obs.shape[: len(batch_axes)], jnp.float32)
        if mask is not None:
            weight = jnp.broadcast_to(jnp.asarray(mask, jnp.float32), weight.shape)
        w = jnp.expand_dims(weight, tuple(range(weight.ndim, obs.ndim)))
        n_b = jnp.sum(weight)
        mean_b = jnp.sum(w * obs, axis=batch_axes) / jnp.maximum(n_b, 1.0)
        m2_b = jnp.sum(w * (obs - mean_b) ** 2, axis=batch_axes)
        n = self.count + n_b
        delta = mean_b - self.mean
        frac = n_b / jnp.maximum(n, 1.0)
        return RunningStats(
            count=n,
            mean=self.mean + delta * frac,
            m2=self.m2 + m2_b + delta**2 * self.count * frac,
        )

    def freeze(self, clip: float = 10.0, eps: float = 1e-8) -> ObsNormalization:
        """A hashable snapshot; coordinates that never varied get unit scale."""
        std = np.sqrt(np.asarray(self.var, np.float64))
        std = np.where(std > math.sqrt(eps), std, 1.0)
        return ObsNormalization(
            mean=tuple(np.ravel(np.asarray(self.mean, np.float64)).tolist()),
            std=tuple(np.ravel(std).tolist()),
            shape=tuple(self.mean.shape),
            clip=clip,
        )


@dataclasses.dataclass(frozen=True)
class ObsNormalization:
    """obs -> clip((obs - mean) / std, ±clip), with constants fixed at construction."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    shape: tuple[int, ...]
    clip: float = 10.0

    def __post_init__(self):
        size = math.prod(self.shape)
        if len(self.mean) != size or len(self.std) != size:
            raise bad_value("mean/std", (len(self.mean), len(self.std)), f"need {size} values")
        if not all(s > 0 and math.isfinite(s) for s in self.std):
            raise bad_value("std", self.std, "must be finite and > 0")
        if not self.clip > 0:
            raise bad_value("clip", self.clip, "must be > 0")

    def __call__(self, obs):
        mean = jnp.asarray(self.mean, jnp.float32).reshape(self.shape)
        std = jnp.asarray(self.std, jnp.float32).reshape(self.shape)
        z = (jnp.asarray(obs, jnp.float32) - mean) / std
        return jnp.clip(z, -self.clip, self.clip)


# Policy methods whose `obs` argument the wrapper normalises; position of obs in the arguments.
_OBS_METHODS = {
    "log_prob": 1,
    "log_probs": 1,
    "logits": 1,
    "action_probs": 1,
    "distribution": 1,
    "mode": 1,
    "entropy": 1,
    "sample": 2,
    "sample_and_log_prob": 2,
}


@dataclasses.dataclass(frozen=True)
class NormalizedPolicy:
    """Any vector-observation policy, seeing normalised observations; params are the inner's."""

    policy: object
    normalization: ObsNormalization

    def init(self, key):
        return self.policy.init(key)

    def __getattr__(self, name):
        if name in ("policy", "normalization"):
            # Reached only while the instance is half-built (copy, pickle): no recursion.
            raise AttributeError(name)
        inner = getattr(self.policy, name)
        if name in _OBS_METHODS:
            index = _OBS_METHODS[name]

            def wrapped(*args):
                args = list(args)
                args[index] = self.normalization(args[index])
                return inner(*args)

            return wrapped
        if name == "uniform_sampler":
            return lambda params: lambda u, obs: inner(params)(u, self.normalization(obs))
        if callable(inner):
            # A method we do not know could take observations; refusing beats silently
            # skipping the normalisation.
            raise AttributeError(f"NormalizedPolicy does not forward method {name!r}")
        return inner


def fit_obs_normalization(
    key, policy, policy_params, env, env_params, num_episodes: int = 64, clip: float = 10.0
) -> ObsNormalization:
    """A snapshot from the valid steps of fresh rollouts (observations only: no reward, no
    query is used, so it costs environment steps outside any human-query budget)."""
    from zopg.rollout import rollout_batch

    traj = rollout_batch(key, policy, policy_params, env, env_params, num_episodes)
    stats = RunningStats.zeros(env.observation_shape(env_params)).update(traj.obs, traj.valid)
    return stats.freeze(clip=clip)
