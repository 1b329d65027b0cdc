"""Networks shared by policies' value heads and reward models: observation features, a tanh MLP
and the time-aware value head V(obs, t)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zopg.errors import ConfigError

VALUE_HEADS = ("auto", "tabular", "mlp")


def observation_features(env, env_params) -> tuple[Callable, int]:
    """(features, dim): one-hot states for tabular envs, flattened float obs otherwise.

    `features` maps obs with any leading batch axes to [..., dim].
    """
    num_states = env.num_states(env_params) if hasattr(env, "num_states") else None
    if num_states is not None:
        return (lambda obs: jax.nn.one_hot(obs, num_states)), num_states
    obs_shape = tuple(env.observation_shape(env_params))
    dim = math.prod(obs_shape)

    def flat(obs):
        obs = jnp.asarray(obs, jnp.float32)
        return obs.reshape((*obs.shape[: obs.ndim - len(obs_shape)], dim))

    return flat, dim


class MLP(nn.Module):
    """Tanh MLP with `num_outputs` linear outputs (shared by value heads and reward models)."""

    hidden_sizes: tuple[int, ...]
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        for size in self.hidden_sizes:
            x = nn.tanh(nn.Dense(size)(x))
        return nn.Dense(self.num_outputs)(x)


@dataclasses.dataclass(frozen=True)
class ValueHead:
    """V(obs, t): a table over (time, state) or an MLP on features (and t / H)."""

    kind: str
    horizon: int
    time_input: bool
    features: Callable
    feature_dim: int
    num_states: int | None = None
    hidden_sizes: tuple[int, ...] = (64, 64)

    def init(self, key):
        if self.kind == "tabular":
            shape = (self.horizon, self.num_states) if self.time_input else (self.num_states,)
            return {"table": jnp.zeros(shape)}
        dim = self.feature_dim + (1 if self.time_input else 0)
        return self._mlp.init(key, jnp.zeros((dim,)))

    @property
    def _mlp(self) -> MLP:
        return MLP(hidden_sizes=tuple(self.hidden_sizes), num_outputs=1)

    def __call__(self, params, obs, t):
        """Values with the batch shape of `t` (obs has the same leading axes)."""
        if self.kind == "tabular":
            table = params["table"]
            return table[t, obs] if self.time_input else table[obs]
        x = self.features(obs)
        if self.time_input:
            x = jnp.concatenate([x, (t / self.horizon)[..., None].astype(x.dtype)], axis=-1)
        return self._mlp.apply(params, x)[..., 0]


def make_value_head(
    kind: str, env, env_params, tabular_policy: bool, time_input: bool, hidden_sizes
) -> ValueHead:
    """kind auto: tabular for a tabular policy (which needs a tabular env), mlp otherwise."""
    if kind == "auto":
        kind = "tabular" if tabular_policy else "mlp"
    num_states = env.num_states(env_params) if hasattr(env, "num_states") else None
    if kind == "tabular" and num_states is None:
        raise ConfigError(f"value_head = 'tabular' needs a tabular environment; {env!r} is not")
    features, dim = observation_features(env, env_params)
    return ValueHead(
        kind=kind,
        horizon=env.horizon(env_params),
        time_input=time_input,
        features=features,
        feature_dim=dim,
        num_states=num_states,
        hidden_sizes=tuple(hidden_sizes),
    )
