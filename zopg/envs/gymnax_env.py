"""gymnax CartPole, Acrobot, Pendulum and MountainCarContinuous behind the zopg protocol.

gymnax 1.x's `env.step` auto-resets: on `terminated | truncated` it returns the *next* episode's
first observation and state. A zopg rollout must instead stop at the first `done` (its valid mask
stops accumulating there) and must never reuse a first state, so this adapter calls gymnax's
`step_env` (no reset) and reports `done = terminated | truncated` itself. Keys are split exactly as
gymnax's `step` splits them, so one key and action give gymnax's own transition.
"""

from __future__ import annotations

import dataclasses
from functools import cache

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import ConfigError, bad_value

# zopg id -> gymnax id. Only environments whose dynamics we have checked against gymnax directly.
GYMNAX_IDS = {
    "gymnax/CartPole-v1": "CartPole-v1",
    "gymnax/Acrobot-v1": "Acrobot-v1",
    "gymnax/Pendulum-v1": "Pendulum-v1",
    "gymnax/MountainCarContinuous-v0": "MountainCarContinuous-v0",
}


@struct.dataclass
class GymnaxParams:
    """gymnax's own EnvParams plus our fixed rollout length (static: it sets array shapes)."""

    gymnax: object
    horizon: int = struct.field(pytree_node=False)


@cache
def _gymnax_env(gymnax_id: str):
    # One gymnax object per id, so equal adapters share compiled functions.
    env, params = gymnax.make(gymnax_id)
    return env, params


@dataclasses.dataclass(frozen=True)
class GymnaxEnv:
    """zopg protocol over one gymnax environment; hashable by id, so it is a static jit argument.

    Discrete envs have `num_actions`; continuous ones `action_shape` and `action_bounds(params)`.
    Observations are float32 vectors of `observation_shape(params)`.
    """

    gymnax_id: str
    # What make() was given, hashable: default_params applies it, so code that falls back on
    # env.default_params (e.g. make_train without env_params) keeps make()'s settings.
    overrides: tuple = ()
    made_horizon: int | None = None  # None: gymnax's max_steps_in_episode

    @property
    def _env(self):
        return _gymnax_env(self.gymnax_id)[0]

    @property
    def name(self) -> str:
        return f"gymnax/{self.gymnax_id}"

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.overrides)
        if self.made_horizon is not None:
            extra += f", horizon={self.made_horizon}"
        return f"GymnaxEnv({self.gymnax_id!r}{extra})"

    @property
    def default_params(self) -> GymnaxParams:
        params = _gymnax_env(self.gymnax_id)[1]
        params = params.replace(
            **{k: np.asarray(v) if isinstance(v, tuple) else v for k, v in self.overrides}
        )
        horizon = self.made_horizon
        return GymnaxParams(
            gymnax=params, horizon=int(params.max_steps_in_episode if horizon is None else horizon)
        )

    @property
    def action_kind(self) -> str:
        space = self._env.action_space(_gymnax_env(self.gymnax_id)[1])
        return (
            "discrete" if isinstance(space, gymnax.environments.spaces.Discrete) else "continuous"
        )

    @property
    def num_actions(self) -> int | None:
        """Number of discrete actions; None for continuous envs (gymnax says 1 there)."""
        return int(self._env.num_actions) if self.action_kind == "discrete" else None

    @property
    def action_shape(self) -> tuple[int, ...]:
        if self.action_kind == "discrete":
            return ()
        return tuple(self._env.action_space(_gymnax_env(self.gymnax_id)[1]).shape)

    def action_bounds(self, params: GymnaxParams) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) float32 arrays of `action_shape` for continuous envs (concrete params)."""
        if self.action_kind != "continuous":
            raise ConfigError(f"{self!r} has discrete actions; action_bounds needs continuous ones")
        space = self._env.action_space(params.gymnax)
        shape = self.action_shape
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).copy()
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).copy()
        return low, high

    def horizon(self, params: GymnaxParams) -> int:
        return params.horizon

    def observation_shape(self, params: GymnaxParams) -> tuple[int, ...]:
        return tuple(self._env.observation_space(params.gymnax).shape)

    def reset(self, key, params: GymnaxParams):
        obs, state = self._env.reset_env(key, params.gymnax)
        return jnp.asarray(obs, jnp.float32), state

    def step(self, key, state, action, params: GymnaxParams):
        """One transition, no auto-reset: (obs, state, reward, done = terminated | truncated)."""
        # gymnax's step uses the first half of this split for the transition, the second for
        # the reset we skip; splitting the same way keeps transitions identical to gymnax's.
        key_step, _ = jax.random.split(key)
        obs, state, reward, terminated, _ = self._env.step_env(
            key_step, state, action, params.gymnax
        )
        truncated = self._env.is_truncated(state, params.gymnax)
        done = jnp.logical_or(terminated, truncated)
        return jnp.asarray(obs, jnp.float32), state, jnp.asarray(reward, jnp.float32), done


def _field_names(params) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(params))


def make_gymnax(env_id: str, horizon: int | None = None, **overrides):
    """`(env, params)` for a registered gymnax id; overrides replace gymnax EnvParams fields.

    `horizon` (the fixed rollout length) defaults to the env's `max_steps_in_episode`, where
    gymnax truncates; it may be shorter but not longer (steps past truncation would be wasted).
    Derived fields are not recomputed: overriding CartPole's `masspole` leaves `total_mass`
    as given, as in gymnax.
    """
    gymnax_id = GYMNAX_IDS[env_id]
    base = GymnaxEnv(gymnax_id).default_params.gymnax
    fields = _field_names(base)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        allowed = ", ".join(("horizon", *sorted(fields)))
        raise ConfigError(f"unknown {env_id} field(s) {unknown}; allowed: {allowed}")
    overrides = dict(overrides)
    for name, value in overrides.items():
        default = getattr(base, name)
        if name == "max_steps_in_episode":
            # gymnax counts steps in int32 (time >= max_steps_in_episode).
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise bad_value(name, value, "must be an integer >= 1")
            if value > 2**31 - 1:
                raise bad_value(name, value, "must be an integer in [1, 2147483647]")
            continue
        if np.shape(value) != np.shape(default):
            raise bad_value(name, value, f"must have shape {np.shape(default)} like the default")
        if np.asarray(value).dtype == bool:
            raise bad_value(name, value, "must be a real number, not a bool")
        try:
            number = np.asarray(value, dtype=float)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past a float
            raise bad_value(name, value, "must be a real number") from None
        if not np.all(np.isfinite(number)):
            raise bad_value(name, value, "must be finite")
        if np.issubdtype(np.asarray(default).dtype, np.floating):
            # A float field stays a float: an int past int32 (gravity = 3e9 written out) would
            # overflow as a JAX scalar inside gymnax's step.
            overrides[name] = number
    max_steps = int(overrides.get("max_steps_in_episode", base.max_steps_in_episode))
    given = horizon
    if horizon is None:
        horizon = max_steps
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer):
        raise bad_value("horizon", horizon, f"must be an integer in 1..{max_steps}")
    if not 1 <= horizon <= max_steps:
        raise bad_value(
            "horizon",
            horizon,
            f"must be in 1..{max_steps} (max_steps_in_episode, where gymnax truncates)",
        )
    frozen = tuple(sorted((k, _hashable(v)) for k, v in overrides.items()))
    env = GymnaxEnv(gymnax_id, frozen, None if given is None else int(horizon))
    return env, env.default_params


def _hashable(value):
    """A Python scalar, or a tuple for an array value (turned back into an array when used)."""
    array = np.asarray(value)
    if array.ndim == 0:
        return array.item()

    def nested(x):
        return tuple(nested(y) for y in x) if isinstance(x, list) else x

    return nested(array.tolist())
