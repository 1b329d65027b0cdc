"""Gaussian MLP policy for continuous actions, bounded by clipping or tanh squashing.

The network works in a normalised action space: a pre-bound action u ~ N(mean(obs), std) with a
state-independent log-std, then bound(u) in [-1, 1] is mapped affinely onto [low, high]. So one
initialisation suits Pendulum's ±2 and brax's ±1 alike. Log-probs are those of the action the
environment actually receives:

- bound="clip" (default): a censored Gaussian. Inside (low, high) the density of the Gaussian in
  action units; at a bound, the probability mass of the tail clipped onto it. The stored action
  alone determines its log-prob, exactly, so recomputed log-probs (DPO's log-ratios, PPO's ratios)
  match the behaviour policy's.
- bound="tanh": a = center + half * tanh(u) with the change-of-variables correction
  log|da/du| = log(half) + log(1 - tanh(u)^2). log_prob(action) inverts tanh on the action, which
  loses precision where |tanh(u)| rounds to 1 in float32 (|u| > ~9); sampling returns the exact
  log-prob from u.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from zopg.errors import bad_value, checked_float, unknown_name
from zopg.policies.categorical import checked_sizes

BOUNDS = ("clip", "tanh")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Keeps atanh finite when recovering u from an action that sits on a tanh bound.
_TANH_EPS = 1e-6


class _GaussianMLP(nn.Module):
    hidden_sizes: Sequence[int]
    action_dim: int
    init_log_std: float

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = nn.tanh(nn.Dense(size)(x))
        # A small last layer starts every action mean near the middle of its range.
        mean = nn.Dense(self.action_dim, kernel_init=nn.initializers.orthogonal(0.01))(x)
        log_std = self.param(
            "log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,)
        )
        return mean, log_std


def _log_one_minus_tanh_sq(u):
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite for any u.
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


@dataclasses.dataclass(frozen=True)
class MLPGaussian:
    """Tanh MLP mean, state-independent log-std (in units of half the action range).

    obs_shape: observation shape (1-D vectors); low/high: per-dimension action bounds.
    The flat parameter view is the MLP weights plus `log_std`; nothing else is in params.
    """

    obs_shape: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    hidden_sizes: tuple[int, ...] = (32, 32)
    bound: str = "clip"
    init_log_std: float = -0.5

    action_kind = "continuous"
    num_actions = None

    def __post_init__(self):
        low = tuple(float(x) for x in np.ravel(self.low))
        high = tuple(float(x) for x in np.ravel(self.high))
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        if not low or len(low) != len(high):
            raise bad_value("low/high", (low, high), "must be non-empty and of equal length")
        pairs = zip(low, high, strict=True)
        if not all(math.isfinite(lo) and math.isfinite(hi) and lo < hi for lo, hi in pairs):
            raise bad_value("low/high", (low, high), "must be finite with low < high everywhere")
        object.__setattr__(self, "hidden_sizes", checked_sizes(self.hidden_sizes))
        object.__setattr__(self, "obs_shape", tuple(int(n) for n in self.obs_shape))
        if len(self.obs_shape) != 1:
            raise bad_value("obs_shape", self.obs_shape, "must be 1-D (a vector observation)")
        if self.bound not in BOUNDS:
            raise unknown_name("bound", self.bound, BOUNDS)
        # checked_float also refuses a string or an int beyond a float (10**400).
        log_std = checked_float(
            "init_log_std", self.init_log_std, -math.inf, math.inf, low_open=True, high_open=True
        )
        object.__setattr__(self, "init_log_std", log_std)

    # -- shapes and the affine map to the env's bounds ---------------------------------------
    @property
    def action_shape(self) -> tuple[int, ...]:
        return (len(self.low),)

    @property
    def _center(self):
        return (jnp.asarray(self.high) + jnp.asarray(self.low)) / 2.0

    @property
    def _half(self):
        return (jnp.asarray(self.high) - jnp.asarray(self.low)) / 2.0

    @property
    def _module(self) -> _GaussianMLP:
        return _GaussianMLP(self.hidden_sizes, len(self.low), self.init_log_std)

    # -- protocol ----------------------------------------------------------------------------
    def init(self, key):
        return self._module.init(key, jnp.zeros(self.obs_shape, jnp.float32))

    def distribution(self, params, obs):
        """(mean, log_std) of the pre-bound Gaussian over u, shapes [..., action_dim]."""
        mean, log_std = self._module.apply(params, jnp.asarray(obs, jnp.float32))
        return mean, jnp.broadcast_to(log_std, mean.shape)

    def log_prob(self, params, obs, action) -> jax.Array:
        """log pi(action | obs), summed over action dimensions; broadcasts over leading axes."""
        mean, log_std = self.distribution(params, obs)
        action = jnp.asarray(action, jnp.float32)
        half, center = self._half, self._center
        if self.bound == "tanh":
            y = jnp.clip((action - center) / half, -1.0 + _TANH_EPS, 1.0 - _TANH_EPS)
            return jnp.sum(self._tanh_log_prob(jnp.arctanh(y), mean, log_std), axis=-1)
        return jnp.sum(self._clip_log_prob(action, mean, log_std), axis=-1)

    def sample_and_log_prob(self, key, params, obs):
        mean, log_std = self.distribution(params, obs)
        u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        if self.bound == "tanh":
            action = self._center + self._half * jnp.tanh(u)
            return action, jnp.sum(self._tanh_log_prob(u, mean, log_std), axis=-1)
        low, high = jnp.asarray(self.low), jnp.asarray(self.high)
        # Clipped draws are set to the bounds exactly (center + half * 1 may round below high),
        # so that log_prob reads them as the tail mass.
        inside = jnp.clip(self._center + self._half * u, low, high)
        action = jnp.where(u >= 1.0, high, jnp.where(u <= -1.0, low, inside))
        return action, jnp.sum(self._clip_log_prob(action, mean, log_std), axis=-1)

    def sample(self, key, params, obs):
        return self.sample_and_log_prob(key, params, obs)[0]

    def mode(self, params, obs):
        """The deterministic action bound(mean) (for evaluation without exploration noise)."""
        mean, _ = self.distribution(params, obs)
        squash = jnp.tanh(mean) if self.bound == "tanh" else jnp.clip(mean, -1.0, 1.0)
        return self._center + self._half * squash

    def entropy(self, params, obs):
        """Entropy of the pre-bound Gaussian in action units (the usual PPO bonus surrogate)."""
        _, log_std = self.distribution(params, obs)
        return jnp.sum(log_std + 0.5 + _HALF_LOG_2PI + jnp.log(self._half), axis=-1)

    def _clip_log_prob(self, action, mean, log_std):
        half = self._half
        std = jnp.exp(log_std)
        z = ((action - self._center) / half - mean) / std
        inside = -0.5 * z**2 - log_std - _HALF_LOG_2PI - jnp.log(half)
        upper = jsp.log_ndtr(-(1.0 - mean) / std)
        lower = jsp.log_ndtr((-1.0 - mean) / std)
        # Samples are set exactly onto the bounds, so equality identifies the clipped mass.
        low, high = jnp.asarray(self.low), jnp.asarray(self.high)
        return jnp.where(action >= high, upper, jnp.where(action <= low, lower, inside))

    def _tanh_log_prob(self, u, mean, log_std):
        z = (u - mean) / jnp.exp(log_std)
        gaussian = -0.5 * z**2 - log_std - _HALF_LOG_2PI
        return gaussian - jnp.log(self._half) - _log_one_minus_tanh_sq(u)
