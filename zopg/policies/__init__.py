"""Policies (`init`, `log_prob`, `sample`) and the flat parameter view that ZO methods perturb."""

from __future__ import annotations

from zopg.errors import ConfigError, unknown_name
from zopg.policies.categorical import (
    CategoricalPolicy,
    MLPCategorical,
    TabularSoftmax,
    sample_categorical,
)
from zopg.policies.flat import flat_view, num_params

POLICIES = ("tabular", "mlp")


def make_policy(name: str, env, env_params, **kwargs):
    """Build a policy that fits `env` (sizes are read from it); kwargs go to the policy class."""
    if name not in POLICIES:
        raise unknown_name("policy", name, POLICIES)
    if getattr(env, "action_kind", None) != "discrete":
        raise ConfigError(
            f"policy {name!r} is categorical but environment {env!r} has "
            f"{getattr(env, 'action_kind', 'unknown')} actions"
        )
    num_states = env.num_states(env_params) if hasattr(env, "num_states") else None
    if name == "tabular":
        if num_states is None:
            raise ConfigError(f"policy 'tabular' needs a tabular environment; {env!r} is not")
        return TabularSoftmax(num_states=num_states, num_actions=env.num_actions, **kwargs)
    return MLPCategorical(
        num_actions=env.num_actions,
        num_states=num_states,
        obs_shape=tuple(env.observation_shape(env_params)),
        **kwargs,
    )


__all__ = [
    "POLICIES",
    "CategoricalPolicy",
    "MLPCategorical",
    "TabularSoftmax",
    "flat_view",
    "make_policy",
    "num_params",
    "sample_categorical",
]
