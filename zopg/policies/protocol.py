"""The policy contract in code: the `Policy` protocol and `check_policy`, run by make_policy."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

from zopg.errors import ConfigError

# What every policy must have, whoever wrote it (rollouts and algorithms call these).
POLICY_METHODS = ("init", "log_prob", "sample", "sample_and_log_prob")


@runtime_checkable
class Policy(Protocol):
    """What zopg requires of a policy: pure functions of explicit parameters.

    The policy object holds no parameters: init makes them and every other method takes them.
    Rollouts are jitted with the policy as a *static* argument, so it must be hashable, and
    equal policies should hash equal (a frozen dataclass of Python values: sizes, shapes,
    tuples). params are traced: a pytree of float arrays with the same structure and shapes
    from every key, since zeroth-order methods perturb their flat view (zopg.policies.flat_view)
    and every seed's θ must fit one Problem.

    Shapes: obs is [..., *obs_shape] (the env's observation_shape; integer state indices for
    tabular envs); action is int32 [...] for discrete policies and float32 [..., *action_shape]
    for continuous ones. `...` is any number of batch axes (none in a rollout step, [B, H] in
    the losses): every method maps over them. All methods are jittable.

    init(key) -> params.
    log_prob(params, obs, action) -> float32 [...]: log π(action | obs); differentiable in params
        (DPO and PPO take gradients through it).
    sample(key, params, obs) -> action: a draw from π(· | obs).
    sample_and_log_prob(key, params, obs) -> (action, log_prob): one draw and its
        log-probability in one call, what rollouts use.

    Optional, used where present: action_kind, "discrete" or "continuous" (PPO needs it, and
    make_policy matches a built-in policy's to the env's); for discrete policies log_probs and
    action_probs(params, obs) -> [..., num_actions] (exact values on tabular envs, DPO's exact
    KL, PPO's KL) and entropy(params, obs) (PPO); for continuous ones entropy and
    distribution(params, obs) -> (mean, log_std) (PPO's KL); uniform_sampler(params) -> (u,
    obs) -> (action, log_prob), a draw from one uniform in [0, 1) instead of a key (the fast
    rollout path, with an env's step_from_uniform); trajectory_log_prob(params, obs, action) ->
    [..., H], log_prob of every step of whole episodes (obs [..., H, *obs_shape] in rollout
    order) at once, where one pass over an episode is cheaper than H calls (sequence policies;
    call it through zopg.policies.trajectory_log_prob, which falls back to log_prob).
    """

    def init(self, key: jax.Array) -> Any: ...

    def log_prob(self, params: Any, obs: jax.Array, action: jax.Array) -> jax.Array: ...

    def sample(self, key: jax.Array, params: Any, obs: jax.Array) -> jax.Array: ...

    def sample_and_log_prob(
        self, key: jax.Array, params: Any, obs: jax.Array
    ) -> tuple[jax.Array, jax.Array]: ...


def trajectory_log_prob(policy, params, obs, action) -> jax.Array:
    """log π(a_t | s_t) of every step of episodes obs [..., H, *obs_shape], action [..., H]:
    the policy's one-pass trajectory_log_prob where it has one, else log_prob step by step."""
    fast = getattr(policy, "trajectory_log_prob", None)
    return fast(params, obs, action) if fast is not None else policy.log_prob(params, obs, action)


def check_policy(name: str, policy) -> None:
    """Refuse, in one line naming the policy, an object that breaks the Policy contract: a
    missing method, or an object that cannot be hashed as a static jit argument."""
    missing = [m for m in POLICY_METHODS if not callable(getattr(policy, m, None))]
    if missing:
        raise ConfigError(
            f"policy {name!r}: {type(policy).__name__} lacks {', '.join(missing)}; a policy "
            f"needs {', '.join(POLICY_METHODS)} (zopg.policies.Policy)"
        )
    try:
        hash(policy)
    except TypeError:
        raise ConfigError(
            f"policy {name!r}: {type(policy).__name__} objects must be hashable: jitted "
            "rollouts take the policy as a static argument (make it a frozen dataclass)"
        ) from None
