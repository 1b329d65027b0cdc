"""Environments with gymnax-style explicit functions behind one registry, `make(env_id, ...)`.

Every environment keeps the `Env` contract (zopg.envs.protocol, checked by make): `reset(key,
params) -> (obs, state)`, `step(key, state, action, params) -> (obs, state, reward, done)`,
`horizon(params)`, `observation_shape(params)` and `action_kind`: "discrete" ones give
`num_actions`, "continuous" ones `action_shape` and `action_bounds(params) -> (low, high)`;
params are a flax.struct.dataclass. Tabular ones also give `tabular_model(params)`. The gymnax
and brax adapters are imported on first use (importing those packages costs seconds).
"""

from zopg.envs.gridworld import (
    GridWorld,
    GridWorldParams,
    GridWorldState,
    TabularModel,
    make_gridworld,
)
from zopg.envs.protocol import ContinuousEnv, DiscreteEnv, Env, check_env
from zopg.envs.registry import make, register, registered_envs
from zopg.envs.tokens import TokenEnv, TokenParams, TokenState, make_tokens

_LAZY = {
    "GymnaxEnv": "zopg.envs.gymnax_env",
    "GymnaxParams": "zopg.envs.gymnax_env",
    "make_gymnax": "zopg.envs.gymnax_env",
    "BraxEnv": "zopg.envs.brax_env",
    "BraxParams": "zopg.envs.brax_env",
    "make_brax": "zopg.envs.brax_env",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zopg.envs' has no attribute {name!r}")


__all__ = [
    "BraxEnv",
    "BraxParams",
    "ContinuousEnv",
    "DiscreteEnv",
    "Env",
    "GridWorld",
    "GridWorldParams",
    "GridWorldState",
    "GymnaxEnv",
    "GymnaxParams",
    "TabularModel",
    "TokenEnv",
    "TokenParams",
    "TokenState",
    "check_env",
    "make",
    "make_brax",
    "make_gridworld",
    "make_gymnax",
    "make_tokens",
    "register",
    "registered_envs",
]
