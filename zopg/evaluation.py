"""The one evaluator of every algorithm: the value of the teacher's utility under a policy.

Exact where the environment has a tabular model and the utility an exact form (the return by
backward induction, path utilities on the product with their automaton, zopg.exact); otherwise
the Monte Carlo mean over fresh episodes with its standard error. It runs outside every
algorithm's budget: it is never shown to the learner and spends no queries. "What is scored" is
the `utility` argument (a zopg.preferences utility or any function of a Trajectory giving one
value per trajectory; None is the return). Exact evaluators also give the exact trajectory KL of
a policy to a reference policy (zopg.occupancy), the x-axis of over-optimisation curves; on a
token environment the Monte Carlo evaluator gives the sequence KL's per-prefix estimate instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from zopg.errors import bad_value
from zopg.exact import optimal_utility_value, optimal_value, policy_value, utility_value
from zopg.occupancy import trajectory_kl_fn
from zopg.preferences.utilities import Return, Utility
from zopg.rollout import masked_return, rollout_batch
from zopg.sequence_kl import per_prefix_kl, sample_sequences

KINDS = ("exact", "monte-carlo")


def _check_num_episodes(num_episodes) -> int:
    # A standard error needs at least two episodes (sample variance with ddof = 1).
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 2:
        raise bad_value("num_episodes", num_episodes, "must be a static Python int >= 2")
    return num_episodes


def episode_returns(
    key,
    policy,
    policy_params,
    env,
    env_params,
    num_episodes: int,
    horizon: int | None = None,
    utility: Callable | None = None,
) -> jax.Array:
    """The utility (default: masked return) of `num_episodes` fresh episodes: [n]."""
    _check_num_episodes(num_episodes)
    traj = rollout_batch(key, policy, policy_params, env, env_params, num_episodes, horizon)
    return (utility or masked_return)(traj)


def summarize_returns(returns: jax.Array):
    """(mean, standard error) over the last axis: std with ddof = 1, divided by sqrt(n)."""
    n = returns.shape[-1]
    mean = jnp.mean(returns, axis=-1)
    stderr = jnp.std(returns, axis=-1, ddof=1) / jnp.sqrt(n)
    return mean, stderr


@partial(jax.jit, static_argnames=("policy", "env", "num_episodes", "horizon", "utility"))
def evaluate(
    key,
    policy,
    policy_params,
    env,
    env_params,
    num_episodes: int,
    horizon: int | None = None,
    utility: Callable | None = None,
):
    """Monte Carlo value of the policy: (mean utility, standard error) over `num_episodes`.

    Jitted; also usable under jit and vmap (e.g. over seeds' final params). For the per-episode
    values, call `episode_returns` with the same arguments (same key: the same episodes).
    """
    return summarize_returns(
        episode_returns(key, policy, policy_params, env, env_params, num_episodes, horizon, utility)
    )


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """value(key, policy_params) -> (value, standard error) for one env, policy and utility.

    kind: exact (the standard error is 0 and the key is unused) or monte-carlo. bounds: (value
    of the uniform policy, optimal value) for exact evaluators, the normalised score's 0 and 1;
    (nan, nan) otherwise. kl_to_reference(params, ref_params) -> the exact KL over trajectories
    of the policy to the reference policy, E_π Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t)) (exact
    evaluators; None otherwise). The policy sees the cell, so the KL needs only the env's model,
    whatever the utility. kl_estimate(key, params, ref_params) -> the same KL between sequence
    laws on a token environment, by the per-prefix estimate (exact at every step, averaged over
    the `episodes` sequences that `value` draws with the same key; None elsewhere).
    """

    kind: str
    value: Callable
    bounds: tuple[float, float]
    episodes: int | None = None
    kl_to_reference: Callable | None = None
    kl_estimate: Callable | None = None


def make_evaluator(
    env, env_params, policy, utility: Callable | None = None, episodes: int = 100
) -> Evaluator:
    """Exact for a tabular env whose utility has an exact form, Monte Carlo with `episodes`
    fresh episodes per evaluation otherwise."""
    if isinstance(utility, Utility):
        utility = utility.bind(env, env_params)
    if isinstance(utility, Return):
        utility = None  # the return: the plain backward induction, no product needed
    exact = _exact_evaluator(env, env_params, policy, utility)
    if exact is not None:
        return exact
    _check_num_episodes(episodes)

    def monte_carlo(key, params):
        return evaluate(key, policy, params, env, env_params, episodes, None, utility)

    kl = _sequence_kl_estimate(env, env_params, policy, episodes)
    return Evaluator("monte-carlo", monte_carlo, (float("nan"), float("nan")), episodes, None, kl)


def _sequence_kl_estimate(env, env_params, policy, episodes: int) -> Callable | None:
    """KL(π ‖ π_ref) on a token environment by the per-prefix estimate over the sequences that
    the Monte Carlo value draws with the same key (the same episodes); None elsewhere."""
    if not (callable(getattr(env, "prompt_log_prob", None)) and hasattr(policy, "log_probs")):
        return None

    def kl(key, params, ref_params):
        tokens = sample_sequences(key, env, env_params, policy, params, episodes)
        return jnp.mean(per_prefix_kl(env, env_params, policy, params, ref_params, tokens))

    return kl


def _exact_evaluator(env, env_params, policy, utility) -> Evaluator | None:
    """The exact evaluator, or None when the env has no model or u no exact form."""
    if not hasattr(env, "tabular_model"):
        return None
    model = env.tabular_model(env_params)
    states = jnp.arange(env.num_states(env_params))
    uniform = jnp.full((states.shape[0], env.num_actions), 1.0 / env.num_actions)
    if utility is None:
        value_of = lambda probs: policy_value(model, probs)  # noqa: E731
        best = optimal_value(model)
    elif isinstance(utility, Utility) and utility.automaton(model) is not None:
        value_of = lambda probs: utility_value(env, env_params, utility, probs)  # noqa: E731
        best = optimal_utility_value(env, env_params, utility)
    else:
        return None

    def exact(key, params):
        del key
        value = value_of(policy.action_probs(params, states))
        return value, jnp.zeros_like(value)

    kl = trajectory_kl_fn(env, env_params, policy)
    return Evaluator("exact", exact, (float(value_of(uniform)), float(best)), None, kl)
