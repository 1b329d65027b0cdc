"""brax inverted_pendulum, hopper and halfcheetah behind the zopg protocol, backend configurable.

We wrap the bare brax env, never `brax.envs.create`'s wrappers: its auto-reset wrapper restarts a
finished episode from the first state it ever drew, which a zopg rollout must not do. Every
rollout resets with its own fresh key; after `done` the state is frozen (brax would keep
simulating a fallen robot, which can diverge), and the rollout's valid mask drops those steps.

Backend default: "positional" (our choice). Env steps/s of our rollouts, 128 envs x 100 steps,
Gaussian MLP policy, jax 0.10, brax 0.14.2, on the 2-core CPU shared with other jobs
(`python -m benchmarks.speed.throughput --only brax_backends`, section brax_backends of
results/throughput.json, load ~4 then; an earlier run at load ~7 gave hopper the same order and
inverted_pendulum spring 135k, mjx 41k, positional 38k, generalized 20k):

    inverted_pendulum   spring 155k   mjx 92k   generalized 58k   positional 49k
    hopper              spring 40k    positional 17k   generalized 7.1k   mjx 2.3k

Compiling takes 14-16 s (inverted_pendulum) and 28-42 s (hopper). spring is fastest, but ZPG did
not learn to balance its inverted_pendulum: with the settings of benchmarks/control.toml (10
seeds, 6000 queries) the mean MC return goes 23.0 -> 77.7 on spring (results/control_probe) and
23.2 -> 250.0 (the maximum) on positional (results/control); on spring the learned policy
saturates the force and the pole still falls. (One seed of a linear policy on generalized stayed
near 19; not investigated.) positional is next fastest on the locomotion tasks, where steps are
dear (2.3x generalized on hopper, 7x mjx), and learns inverted_pendulum, so it is the one default.
Horizon default: 250 steps (our choice; brax's usual 1000 makes every rollout four times dearer on
this CPU). Override both through `make(..., backend=, horizon=)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import ConfigError, bad_value, unknown_name

BRAX_IDS = {
    "brax/inverted_pendulum": "inverted_pendulum",
    "brax/hopper": "hopper",
    "brax/halfcheetah": "halfcheetah",
}
BACKENDS = ("spring", "positional", "generalized", "mjx")
DEFAULT_BACKEND = "positional"
DEFAULT_HORIZON = 250


@struct.dataclass
class BraxParams:
    """brax envs carry their settings in the env object; params only fix the rollout length."""

    horizon: int = struct.field(pytree_node=False)


def _freeze(value):
    # Constructor arguments become part of the env's hash, so lists turn into tuples.
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


@cache
def _brax_env(brax_name: str, backend: str, kwargs: tuple):
    # One brax object per configuration, so equal adapters share compiled functions.
    from brax import envs

    with warnings.catch_warnings():
        # brax 0.14 warns on every system load that it is unmaintained; we pin it knowingly.
        warnings.filterwarnings("ignore", message="Brax System", category=UserWarning)
        return envs.get_environment(brax_name, backend=backend, **dict(kwargs))


@cache
def _observation_shape(brax_name: str, backend: str, kwargs: tuple) -> tuple[int, ...]:
    # brax's observation_size runs a whole reset eagerly (seconds); shapes need only a trace.
    env = _brax_env(brax_name, backend, kwargs)
    return tuple(jax.eval_shape(env.reset, jax.random.key(0)).obs.shape)


@dataclasses.dataclass(frozen=True)
class BraxEnv:
    """zopg protocol over one brax env; hashable by (name, backend, kwargs) for jit.

    Actions are continuous vectors in [-1, 1] (brax scales them to the actuators' ranges).
    """

    brax_name: str
    backend: str = DEFAULT_BACKEND
    kwargs: tuple = ()
    # The horizon given to make(): default_params returns it, so code that falls back on
    # env.default_params (e.g. make_train without env_params) keeps make()'s settings.
    made_horizon: int = DEFAULT_HORIZON

    action_kind = "continuous"
    num_actions = None

    @property
    def _env(self):
        return _brax_env(self.brax_name, self.backend, self.kwargs)

    @property
    def name(self) -> str:
        return f"brax/{self.brax_name}"

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.kwargs)
        if self.made_horizon != DEFAULT_HORIZON:
            extra += f", horizon={self.made_horizon}"
        return f"BraxEnv({self.brax_name!r}, backend={self.backend!r}{extra})"

    @property
    def default_params(self) -> BraxParams:
        return BraxParams(horizon=self.made_horizon)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (int(self._env.action_size),)

    def action_bounds(self, params: BraxParams) -> tuple[np.ndarray, np.ndarray]:
        shape = self.action_shape
        return -np.ones(shape, np.float32), np.ones(shape, np.float32)

    def horizon(self, params: BraxParams) -> int:
        return params.horizon

    def observation_shape(self, params: BraxParams) -> tuple[int, ...]:
        return _observation_shape(self.brax_name, self.backend, self.kwargs)

    def reset(self, key, params: BraxParams):
        state = self._canonical(self._env.reset(key))
        return state.obs, state

    def step(self, key, state, action, params: BraxParams):
        """(obs, state, reward, done); brax dynamics are deterministic, so `key` is unused."""
        del key
        # brax's step updates `state.metrics` in place; hand it a copy so `state` stays intact.
        nxt = self._canonical(self._env.step(state.replace(metrics=dict(state.metrics)), action))
        was_done = state.done > 0.5
        nxt = jax.tree.map(lambda old, new: jnp.where(was_done, old, new), state, nxt)
        reward = jnp.where(was_done, 0.0, nxt.reward)
        return nxt.obs, nxt, reward, nxt.done > 0.5

    @staticmethod
    def _canonical(state):
        # brax sets some fields to Python floats (e.g. reward = 1.0); a scan carry needs fixed
        # float32 arrays.
        return state.replace(
            obs=jnp.asarray(state.obs, jnp.float32),
            reward=jnp.asarray(state.reward, jnp.float32),
            done=jnp.asarray(state.done, jnp.float32),
        )


def _constructor_fields(brax_name: str) -> tuple[str, ...]:
    from brax import envs

    signature = inspect.signature(envs._envs[brax_name].__init__)
    names = [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "backend") and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    # PipelineEnv's own knobs, reached through **kwargs.
    return (*names, "n_frames")


def make_brax(
    env_id: str, backend: str = DEFAULT_BACKEND, horizon: int = DEFAULT_HORIZON, **overrides
):
    """`(env, params)` for a registered brax id; overrides go to the brax env's constructor."""
    brax_name = BRAX_IDS[env_id]
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    fields = _constructor_fields(brax_name)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        allowed = ", ".join(("backend", "horizon", *sorted(fields)))
        raise ConfigError(f"unknown {env_id} field(s) {unknown}; allowed: {allowed}")
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise bad_value("horizon", horizon, "must be an integer >= 1")
    for name, value in overrides.items():
        # Beyond int32 a count (n_frames = 10**30) overflows or never ends inside the step.
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**31 - 1:
            raise bad_value(name, value, "must be an integer in [-2147483647, 2147483647]")
    kwargs = tuple(sorted((k, _freeze(v)) for k, v in overrides.items()))
    try:
        hash(kwargs)
    except TypeError:
        raise bad_value(
            "overrides", dict(overrides), "values must be numbers, bools or tuples"
        ) from None
    env = BraxEnv(brax_name, backend, kwargs, int(horizon))
    try:
        env._env  # noqa: B018 -- build now, so bad values fail here, not inside a trace
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{env_id} with backend={backend!r}, {dict(overrides)}: {err}") from err
    return env, env.default_params
