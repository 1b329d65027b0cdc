"""Environments with gymnax-style explicit functions behind one registry, `make(env_id, ...)`.

Every environment exposes `reset(key, params) -> (obs, state)`,
`step(key, state, action, params) -> (obs, state, reward, done)`, `horizon(params)`,
`num_actions` (discrete) and `action_kind`. Tabular ones also give `tabular_model(params)`.
"""

from zopg.envs.gridworld import (
    GridWorld,
    GridWorldParams,
    GridWorldState,
    TabularModel,
    make_gridworld,
)
from zopg.envs.registry import make, register, registered_envs

__all__ = [
    "GridWorld",
    "GridWorldParams",
    "GridWorldState",
    "TabularModel",
    "make",
    "make_gridworld",
    "register",
    "registered_envs",
]
