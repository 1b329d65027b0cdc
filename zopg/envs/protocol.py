"""The environment contract in code: the `Env` protocols, and `check_env`, which make() runs."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from zopg.errors import ConfigError

# What every environment must have, and what each action kind adds (see Env).
ENV_ATTRIBUTES = ("action_kind",)
ENV_METHODS = ("reset", "step", "horizon", "observation_shape")
KIND_ATTRIBUTES = {"discrete": ("num_actions",), "continuous": ("action_shape",)}
KIND_METHODS = {"discrete": (), "continuous": ("action_bounds",)}


@runtime_checkable
class Env(Protocol):
    """What zopg requires of an environment: gymnax-style explicit functions, no hidden state.

    Two objects make an environment, `(env, params) = zopg.envs.make(env_id)`:

    - env: the functions. Rollouts are jitted with the env as a *static* argument, so it must be
      hashable, and equal envs should hash equal (a frozen dataclass of Python values) so they
      share compiled code. It holds nothing that changes.
    - params: every setting, a `flax.struct.dataclass` instance. Rollouts pass it *traced*, so
      its pytree leaves must be numbers or arrays, and every field that fixes a shape or a loop
      length must be static, `struct.field(pytree_node=False)`: the field(s) `horizon(params)`
      reads, and whatever sizes reset and step build arrays from (a GridWorld's layout, which
      sets the number of cells). A plain dataclass or a dict would reach JAX as one opaque
      leaf, or with its sizes traced, and fail deep inside jit.

    Members (obs_shape = observation_shape(params); reset and step see one episode, never a
    batch axis: rollouts vmap them):

    action_kind: "discrete" or "continuous".
    reset(key, params) -> (obs [*obs_shape], state): jittable. state is any pytree of arrays
        whose structure, shapes and dtypes step keeps (it is a scan carry).
    step(key, state, action, params) -> (obs, state, reward, done): jittable; one transition.
        action is int32 [] for discrete envs, float32 [*action_shape] for continuous ones;
        reward is a float32 scalar, done a bool scalar. No auto-reset is needed: a rollout runs
        exactly horizon(params) steps and masks every step after the first done.
    horizon(params) -> int: the fixed episode length H. A Python int read from static fields
        only: rollouts call it inside jit, with params traced.
    observation_shape(params) -> tuple[int, ...]: () for integer state indices, (n,) for
        float32 vectors. Called outside jit.

    By action kind (DiscreteEnv, ContinuousEnv):

    discrete: num_actions, an int >= 1; actions are int32 in [0, num_actions).
    continuous: action_shape, a tuple of ints; action_bounds(params) -> (low, high), float32
        arrays of action_shape (concrete params, outside jit).

    Optional, used where present: default_params (what a run falls back on when given no
    params); num_states(params), when observations are the integers 0 .. num_states − 1
    (tabular policies, one-hot features, tabular reward models); tabular_model(params) ->
    TabularModel, the exact MDP (exact values and gradients, exact-pg, DPO's exact KL);
    step_from_uniform(u, state, action, params), step driven by one uniform in [0, 1) instead
    of a key (the fast rollout path); cell_of(obs, params), the grid cell of an observation
    (utilities and reward models of the cell); name, for reports.
    """

    action_kind: str

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, Any]: ...

    def step(
        self, key: jax.Array, state: Any, action: jax.Array, params: Any
    ) -> tuple[jax.Array, Any, jax.Array, jax.Array]: ...

    def horizon(self, params: Any) -> int: ...

    def observation_shape(self, params: Any) -> tuple[int, ...]: ...


@runtime_checkable
class DiscreteEnv(Env, Protocol):
    """An Env with action_kind "discrete": int32 actions in [0, num_actions)."""

    num_actions: int


@runtime_checkable
class ContinuousEnv(Env, Protocol):
    """An Env with action_kind "continuous": float32 actions of action_shape within bounds."""

    action_shape: tuple[int, ...]

    def action_bounds(self, params: Any) -> tuple[np.ndarray, np.ndarray]: ...


def _lacks(obj, attributes, methods) -> list[str]:
    """The attributes obj does not have and the methods it does not have as callables."""
    return [name for name in attributes if not _has(obj, name)] + [
        name for name in methods if not callable(getattr(obj, name, None))
    ]


def _has(obj, name: str) -> bool:
    # Looked up without running properties: some (brax's action_shape) build the simulator.
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return hasattr(obj, name)  # an object that forwards attributes (__getattr__)
    return True


def check_env(env_id: str, env, params) -> None:
    """Refuse, in one line naming env_id, an (env, params) pair that breaks the Env contract:
    a missing member, an unknown action kind, an unhashable env, params that are not a
    flax.struct.dataclass of numbers and arrays, or a horizon that is not a static int."""
    where = f"environment {env_id!r}"
    missing = _lacks(env, ENV_ATTRIBUTES, ENV_METHODS)
    if missing:
        needs = ", ".join(ENV_ATTRIBUTES + ENV_METHODS)
        raise ConfigError(
            f"{where}: {type(env).__name__} lacks {', '.join(missing)}; an environment needs "
            f"{needs} (zopg.envs.Env)"
        )
    kind = env.action_kind
    if not isinstance(kind, str) or kind not in KIND_ATTRIBUTES:
        raise ConfigError(
            f"{where}: action_kind = {kind!r}: must be one of {', '.join(KIND_ATTRIBUTES)}"
        )
    missing = _lacks(env, KIND_ATTRIBUTES[kind], KIND_METHODS[kind])
    if missing:
        needs = ", ".join(KIND_ATTRIBUTES[kind] + KIND_METHODS[kind])
        raise ConfigError(
            f"{where}: {type(env).__name__} lacks {', '.join(missing)}; a {kind}-action "
            f"environment needs {needs} (zopg.envs.Env)"
        )
    if kind == "discrete":
        n = env.num_actions
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ConfigError(f"{where}: num_actions = {n!r}: must be an integer >= 1")
    try:
        hash(env)
    except TypeError:
        raise ConfigError(
            f"{where}: {type(env).__name__} objects must be hashable: jitted rollouts take the "
            "env as a static argument (make it a frozen dataclass)"
        ) from None
    check_params(where, params)
    check_static_horizon(where, env, params)


def check_params(where: str, params) -> None:
    """params: a flax.struct.dataclass instance whose pytree leaves are numbers or arrays."""
    declare = (
        "declare its class with @flax.struct.dataclass and the fields that size arrays or "
        "loops, such as the horizon or a grid's layout, with struct.field(pytree_node=False)"
    )
    if not dataclasses.is_dataclass(params) or isinstance(params, type):
        raise ConfigError(
            f"{where}: params = {params!r}: must be a flax.struct.dataclass instance, not a "
            f"{type(params).__name__} ({declare})"
        )
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if len(leaves) == 1 and leaves[0][1] is params:
        # Never registered as a pytree: JAX would take the whole dataclass as one leaf.
        raise ConfigError(
            f"{where}: params = {params!r}: {type(params).__name__} is a plain dataclass, which "
            f"JAX takes as one opaque leaf; it must be a flax.struct.dataclass ({declare})"
        )
    for path, leaf in leaves:
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | int | float | complex):
            raise ConfigError(
                f"{where}: params{jax.tree_util.keystr(path)} = {leaf!r}: must be a number or "
                "an array (params are traced under jit); declare a field that is neither "
                "static, struct.field(pytree_node=False)"
            )


def check_static_horizon(where: str, env, params) -> None:
    """horizon(params) is a Python int >= 1 even with params traced, as inside a rollout."""
    found = []
    try:
        jax.eval_shape(lambda traced: found.append(env.horizon(traced)), params)
        traced = isinstance(found[0], jax.Array)  # a traced field came back as the horizon
    except jax.errors.JAXTypeError:  # the horizon turned a traced field into a Python int
        traced = True
    if traced:
        fields = ", ".join(
            f"params{jax.tree_util.keystr(path)}"
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        )
        raise ConfigError(
            f"{where}: horizon(params) reads a traced field (one of {fields}): rollouts call it "
            "inside jit, so the field that sets it must be static, "
            "struct.field(pytree_node=False)"
        )
    horizon = found[0]
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ConfigError(f"{where}: horizon(params) = {horizon!r}: must be an integer >= 1")
