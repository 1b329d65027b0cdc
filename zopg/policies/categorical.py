"""Categorical policies for discrete actions: tabular softmax and a flax MLP."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zopg.errors import bad_value, checked_float


def sample_categorical(key, log_probs: jax.Array):
    """Draw one action by inverse CDF from a single uniform, returning (action, log_prob).

    One uniform per draw is cheaper than Gumbel-max (one draw per action), and random numbers
    are the bottleneck of tabular rollouts.
    """
    return categorical_from_uniform(jax.random.uniform(key, log_probs.shape[:-1]), log_probs)


def categorical_from_uniform(u, log_probs: jax.Array):
    """Inverse-CDF draw from given uniforms u (shape log_probs.shape[:-1]): (action, log_prob)."""
    cdf = jnp.cumsum(jnp.exp(log_probs), axis=-1)
    u = u[..., None] * cdf[..., -1:]
    action = jnp.sum(cdf <= u, axis=-1)
    action = jnp.minimum(action, log_probs.shape[-1] - 1)
    log_prob = jnp.take_along_axis(log_probs, action[..., None], axis=-1)[..., 0]
    return action.astype(jnp.int32), log_prob


class CategoricalPolicy:
    """Shared logic: subclasses give `init(key)` and `logits(params, obs)`."""

    action_kind = "discrete"
    num_actions: int

    def logits(self, params, obs) -> jax.Array:
        raise NotImplementedError

    def log_probs(self, params, obs) -> jax.Array:
        return jax.nn.log_softmax(self.logits(params, obs), axis=-1)

    def log_prob(self, params, obs, action) -> jax.Array:
        """log pi(action | obs); broadcasts over leading axes of obs and action."""
        lp = self.log_probs(params, obs)
        return jnp.take_along_axis(lp, jnp.asarray(action)[..., None], axis=-1)[..., 0]

    def entropy(self, params, obs) -> jax.Array:
        """H(pi(. | obs)), exactly, over the discrete actions."""
        log_probs = self.log_probs(params, obs)
        return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)

    def sample(self, key, params, obs) -> jax.Array:
        return self.sample_and_log_prob(key, params, obs)[0]

    def sample_and_log_prob(self, key, params, obs):
        return sample_categorical(key, self.log_probs(params, obs))

    def uniform_sampler(self, params):
        """`(u, obs) -> (action, log_prob)`: sampling driven by a uniform u instead of a key.

        Rollouts draw the uniforms in bulk; subclasses may precompute per-params tables here.
        """
        return lambda u, obs: categorical_from_uniform(u, self.log_probs(params, obs))

    def action_probs(self, params, obs) -> jax.Array:
        """pi(. | obs); with obs = arange(num_states) it is the probs[s, a] table of zopg.exact."""
        return jax.nn.softmax(self.logits(params, obs), axis=-1)


@dataclasses.dataclass(frozen=True)
class TabularSoftmax(CategoricalPolicy):
    """One logit per (state, action); observations are integer state indices.

    pad_to: d, the total number of parameters, when given: the params get a "pad" vector of
    d − num_states × num_actions zeros that the policy never reads. V and ∇V (on the logits) do
    not change and the padded gradient entries are 0, so d grows with nothing else: the
    dimension regime (science.md §9). None (the default): no padding.
    """

    num_states: int
    num_actions: int
    init_scale: float = 0.0  # 0 starts at the uniform policy, the usual starting point here
    pad_to: int | None = None

    def __post_init__(self):
        for field in ("num_states", "num_actions"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise bad_value(field, value, "must be an integer >= 1")
        # Stored as a float: an int past int32 (10**12) would overflow as a JAX scalar.
        scale = checked_float("init_scale", self.init_scale, 0.0, math.inf, high_open=True)
        object.__setattr__(self, "init_scale", scale)
        own = self.num_states * self.num_actions
        pad = self.pad_to
        if pad is not None and (
            isinstance(pad, bool) or not isinstance(pad, int) or not own <= pad < 2**31
        ):
            raise bad_value(
                "pad_to", pad, f"must be an integer >= {own} (the policy's own d) and < 2**31"
            )

    def init(self, key):
        shape = (self.num_states, self.num_actions)
        params = {"logits": self.init_scale * jax.random.normal(key, shape)}
        if self.pad_to is not None:
            params["pad"] = jnp.zeros((self.pad_to - self.num_states * self.num_actions,))
        return params

    def logits(self, params, obs):
        return params["logits"][obs]

    def uniform_sampler(self, params):
        # Normalise the whole table once per rollout, so each step is two gathers and a compare.
        log_probs = jax.nn.log_softmax(params["logits"], axis=-1)
        cdf = jnp.cumsum(jnp.exp(log_probs), axis=-1)
        cdf = cdf / cdf[:, -1:]
        last = self.num_actions - 1

        def sample(u, obs):
            action = jnp.minimum(jnp.sum(cdf[obs] <= u[..., None], axis=-1), last)
            return action.astype(jnp.int32), log_probs[obs, action]

        return sample


def checked_sizes(hidden_sizes) -> tuple[int, ...]:
    """Layer widths as a tuple of ints in [1, 2**31 - 1] (a wider layer is no array shape)."""
    try:
        sizes = tuple(hidden_sizes)
    except TypeError:
        raise bad_value("hidden_sizes", hidden_sizes, "must be a list of integers >= 1") from None
    if not all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h < 2**31 for h in sizes):
        raise bad_value("hidden_sizes", hidden_sizes, "must be integers in [1, 2147483647]")
    return sizes


class _MLP(nn.Module):
    hidden_sizes: Sequence[int]
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = nn.tanh(nn.Dense(size)(x))
        # A small last layer starts the policy close to uniform, as in PPO implementations.
        return nn.Dense(self.num_outputs, kernel_init=nn.initializers.orthogonal(0.01))(x)


@dataclasses.dataclass(frozen=True)
class MLPCategorical(CategoricalPolicy):
    """Tanh MLP from observations to logits.

    With `num_states` set, observations are integer state indices and are one-hot encoded (the
    tabular environments); otherwise they are float vectors of shape `obs_shape`.
    """

    num_actions: int
    hidden_sizes: tuple[int, ...] = (32, 32)
    num_states: int | None = None
    obs_shape: tuple[int, ...] = ()

    def __post_init__(self):
        if not isinstance(self.num_actions, int) or self.num_actions < 1:
            raise bad_value("num_actions", self.num_actions, "must be an integer >= 1")
        object.__setattr__(self, "hidden_sizes", checked_sizes(self.hidden_sizes))
        if self.num_states is None and not self.obs_shape:
            raise bad_value("obs_shape", self.obs_shape, "needed when num_states is not given")

    @property
    def _module(self) -> _MLP:
        return _MLP(hidden_sizes=self.hidden_sizes, num_outputs=self.num_actions)

    def _features(self, obs):
        if self.num_states is not None:
            return jax.nn.one_hot(obs, self.num_states)
        return jnp.asarray(obs, jnp.float32)

    def init(self, key):
        dummy = (
            jnp.zeros((), jnp.int32)
            if self.num_states is not None
            else jnp.zeros(self.obs_shape, jnp.float32)
        )
        return self._module.init(key, self._features(dummy))

    def logits(self, params, obs):
        return self._module.apply(params, self._features(obs))
