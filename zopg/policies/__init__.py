"""Policies (the `Policy` contract: `init`, `log_prob`, `sample`, `sample_and_log_prob`) and the
flat parameter view that ZO methods perturb."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from zopg.errors import ConfigError, unknown_name
from zopg.plugins import import_object, is_import_path
from zopg.policies.categorical import (
    CategoricalPolicy,
    MLPCategorical,
    TabularSoftmax,
    sample_categorical,
)
from zopg.policies.flat import flat_view, num_params
from zopg.policies.gaussian import MLPGaussian
from zopg.policies.normalizer import (
    NormalizedPolicy,
    ObsNormalization,
    RunningStats,
    fit_obs_normalization,
)
from zopg.policies.protocol import POLICY_METHODS, Policy, check_policy, trajectory_log_prob
from zopg.policies.sequence import (
    PARAMETERISATIONS,
    FrozenParams,
    GRUPolicy,
    SequencePolicy,
    TransformerPolicy,
)

POLICIES = ("tabular", "mlp", "gaussian", "gru", "transformer")
# The action kind each policy handles, and the policies to suggest for each kind.
ACTION_KINDS = {
    "tabular": "discrete",
    "mlp": "discrete",
    "gaussian": "continuous",
    "gru": "discrete",
    "transformer": "discrete",
}
# Policies of token sequences: they need an environment with token_shape (zopg.envs.tokens).
SEQUENCE_POLICIES = ("gru", "transformer")
# Built-in factories on a higher floor (the SFT reference trains or loads a network): named by
# import path, so this package never imports them, and resolved when a policy is made.
ELSEWHERE = {"sft": "zopg.lm.reference:sft_policy"}
_SUGGEST = {"discrete": "'mlp' or 'tabular'", "continuous": "'gaussian'"}


# Policies added from Python (`register`): name -> factory(env, env_params, **options).
_REGISTERED: dict[str, Callable] = {}


def register(name: str, factory: Callable, *, replace: bool = False) -> Callable:
    """Add a policy by name: `factory(env, env_params, **options) -> policy`, the policy keeping
    the Policy contract (zopg.policies.protocol; make_policy checks it). Experiment files may
    also name a factory by import path, `policy = "package.module:NAME"`, unregistered."""
    if not isinstance(name, str) or not name or is_import_path(name):
        raise ConfigError(f"policy name {name!r}: must be a non-empty string without ':'")
    if (name in POLICIES or name in ELSEWHERE or name in _REGISTERED) and not replace:
        raise ConfigError(f"policy {name!r} is already registered; pass replace=True")
    if not callable(factory):
        raise ConfigError(f"policy {name!r}: the factory must be callable; got {factory!r}")
    _REGISTERED[name] = factory
    return factory


def policy_names() -> tuple[str, ...]:
    """The built-in policies, those defined elsewhere, then the registered ones."""
    return (*POLICIES, *ELSEWHERE, *sorted(_REGISTERED))


def is_known_policy(name: object) -> bool:
    """A built-in or registered name, or an import path (checked when the policy is built)."""
    return isinstance(name, str) and (name in policy_names() or is_import_path(name))


def make_policy(name: str, env, env_params, obs_norm: ObsNormalization | None = None, **kwargs):
    """Build a policy that fits `env` (sizes are read from it); kwargs go to the policy class
    (or to the factory of a registered or imported policy).

    `obs_norm` (optional, from `fit_obs_normalization` or `RunningStats.freeze`) wraps the
    policy in a frozen observation normaliser; the flat parameter view is unchanged. Every
    policy, built-in or not, is checked against the Policy contract before it is returned.
    """
    if is_import_path(name) or name in _REGISTERED or name in ELSEWHERE:
        path = ELSEWHERE.get(name, name)
        factory = import_object("policy", path) if is_import_path(path) else _REGISTERED[name]
        try:
            policy = factory(env, env_params, **kwargs)
        except TypeError as err:  # most often an option the factory does not take
            raise ConfigError(f"policy {name!r}: {err}") from None
        check_policy(name, policy)
        return policy if obs_norm is None else NormalizedPolicy(policy, obs_norm)
    if name not in POLICIES:
        raise unknown_name("policy", name, policy_names())
    env_kind = getattr(env, "action_kind", None)
    if env_kind != ACTION_KINDS[name]:
        raise ConfigError(
            f"policy {name!r} needs {ACTION_KINDS[name]} actions but environment {env!r} has "
            f"{env_kind or 'unknown'} actions; use {_SUGGEST.get(env_kind, 'another env')}"
        )
    _check_options(name, kwargs)
    policy = _build(name, env, env_params, **kwargs)
    check_policy(name, policy)
    if obs_norm is None:
        return policy
    if name == "tabular":
        raise ConfigError("obs_norm needs vector observations; policy 'tabular' has state indices")
    if name in SEQUENCE_POLICIES:
        raise ConfigError(f"obs_norm needs vector observations; policy {name!r} reads tokens")
    return NormalizedPolicy(policy, obs_norm)


_CLASSES = {
    "tabular": TabularSoftmax,
    "mlp": MLPCategorical,
    "gaussian": MLPGaussian,
    "gru": GRUPolicy,
    "transformer": TransformerPolicy,
}
# Fields make_policy reads from the environment; the caller cannot set them.
_FROM_ENV = {"num_states", "num_actions", "obs_shape", "low", "high", "vocab", "seq_len"}


def _check_options(name: str, kwargs: dict) -> None:
    allowed = {f.name for f in dataclasses.fields(_CLASSES[name])} - _FROM_ENV
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        names = ", ".join(sorted(allowed))
        raise ConfigError(f"unknown option(s) {unknown} for policy {name!r}; allowed: {names}")


def _build(name: str, env, env_params, **kwargs):
    if name == "gaussian":
        low, high = env.action_bounds(env_params)
        return MLPGaussian(
            obs_shape=tuple(env.observation_shape(env_params)), low=low, high=high, **kwargs
        )
    if name in SEQUENCE_POLICIES:
        if not callable(getattr(env, "token_shape", None)):
            raise ConfigError(
                f"policy {name!r} needs a token environment (tokens/...); {env!r} is not"
            )
        vocab, seq_len = env.token_shape(env_params)
        return _CLASSES[name](vocab=vocab, seq_len=seq_len, **kwargs)
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
    "ACTION_KINDS",
    "PARAMETERISATIONS",
    "POLICIES",
    "POLICY_METHODS",
    "SEQUENCE_POLICIES",
    "CategoricalPolicy",
    "FrozenParams",
    "GRUPolicy",
    "MLPCategorical",
    "MLPGaussian",
    "NormalizedPolicy",
    "ObsNormalization",
    "Policy",
    "RunningStats",
    "SequencePolicy",
    "TabularSoftmax",
    "TransformerPolicy",
    "check_policy",
    "fit_obs_normalization",
    "flat_view",
    "is_known_policy",
    "make_policy",
    "num_params",
    "policy_names",
    "register",
    "sample_categorical",
    "trajectory_log_prob",
]
