"""PPO's losses: per-step policy terms (log-prob, entropy, KL to π_ref), GAE and the clipped
surrogate with value and entropy terms. Policies may be categorical (discrete actions) or
Gaussian (continuous actions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from zopg.errors import ConfigError

# What PPO calls on each kind of policy (see policy_terms): the full log-prob table of a discrete
# policy gives ratio, entropy and KL; a continuous one gives log_prob, entropy and, for the KL to
# π_ref, its pre-bound Gaussian.
_POLICY_NEEDS = {
    "discrete": ("log_prob", "log_probs"),
    "continuous": ("log_prob", "entropy", "distribution"),
}


def check_policy(policy, with_kl: bool = True) -> None:
    """Raise a ConfigError unless PPO can compute ratios, entropy (and KL) for `policy`."""
    kind = getattr(policy, "action_kind", None)
    if kind not in _POLICY_NEEDS:
        raise ConfigError(
            f"PPO needs a policy with action_kind 'discrete' (categorical) or 'continuous' "
            f"(Gaussian); got {kind!r} from {policy!r}"
        )
    needs = _POLICY_NEEDS[kind]
    if kind == "continuous" and not with_kl:
        needs = needs[:2]  # the pre-bound distribution is read by the KL term only
    missing = [name for name in needs if not hasattr(policy, name)]
    if missing:
        raise ConfigError(
            f"PPO needs a {kind}-action policy with methods {', '.join(needs)}; "
            f"{policy!r} lacks {', '.join(missing)}"
        )


def gaussian_kl(mean, log_std, ref_mean, ref_log_std) -> jax.Array:
    """KL(N(mean, std²) ‖ N(ref_mean, ref_std²)) per dimension, in closed form."""
    var_ratio = jnp.exp(2.0 * (log_std - ref_log_std))
    scaled_gap = (mean - ref_mean) * jnp.exp(-ref_log_std)
    return 0.5 * (var_ratio + scaled_gap**2 - 1.0) - (log_std - ref_log_std)


def _categorical_kl(probs, log_probs, ref_log_probs) -> jax.Array:
    return jnp.sum(probs * (log_probs - ref_log_probs), axis=-1)


def kl_to_reference(policy, params, ref_params, obs) -> jax.Array:
    """KL(π_θ(·|obs) ‖ π_ref(·|obs)) per observation; π_ref is frozen (no gradient).

    Discrete actions: the exact sum over actions. Continuous actions: the closed-form KL of the
    two pre-bound diagonal Gaussians over u (MLPGaussian.distribution), summed over dimensions.
    The environment receives bound(u), then mapped affinely; by the data-processing inequality
    the KL of the actions is at most that of the u's. With tanh (a bijection) the two are equal;
    with clipping the penalty is an upper bound, close to the actions' KL when little mass is
    clipped. We use it because it is exact, smooth and cheap, whereas the KL of two censored
    Gaussians has no closed form and would need quadrature or sampling.
    """
    if policy.action_kind == "discrete":
        log_probs = policy.log_probs(params, obs)
        ref_log_probs = jax.lax.stop_gradient(policy.log_probs(ref_params, obs))
        return _categorical_kl(jnp.exp(log_probs), log_probs, ref_log_probs)
    mean, log_std = policy.distribution(params, obs)
    ref_mean, ref_log_std = jax.lax.stop_gradient(policy.distribution(ref_params, obs))
    return jnp.sum(gaussian_kl(mean, log_std, ref_mean, ref_log_std), axis=-1)


def policy_terms(policy, params, ref_params, obs, action, with_kl: bool = True):
    """Per step: (log π_θ(a|s), H(π_θ(·|s)), KL(π_θ(·|s) ‖ π_ref(·|s))); KL is 0 without with_kl.

    Discrete: one log-prob table gives all three exactly (log_prob is the gather that
    CategoricalPolicy.log_prob does, entropy the formula of CategoricalPolicy.entropy).
    Continuous: the policy's own log_prob and entropy, and kl_to_reference's closed-form KL.
    """
    if policy.action_kind == "discrete":
        log_probs = policy.log_probs(params, obs)
        log_prob = jnp.take_along_axis(log_probs, jnp.asarray(action)[..., None], axis=-1)[..., 0]
        probs = jnp.exp(log_probs)
        entropy = -jnp.sum(probs * log_probs, axis=-1)
        kl = jnp.zeros_like(entropy)
        if with_kl:
            ref_log_probs = jax.lax.stop_gradient(policy.log_probs(ref_params, obs))
            kl = _categorical_kl(probs, log_probs, ref_log_probs)
        return log_prob, entropy, kl
    log_prob = policy.log_prob(params, obs, action)
    entropy = policy.entropy(params, obs)
    kl = kl_to_reference(policy, params, ref_params, obs) if with_kl else jnp.zeros_like(entropy)
    return log_prob, entropy, kl


def masked_mean(x, mask):
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def generalized_advantages(rewards, values, valid, gamma: float, lam: float):
    """GAE over the last (time) axis; returns (advantages, value targets), zero where invalid.

    Episodes are finite: after the last valid step (termination or the horizon) the value is 0,
    so nothing is bootstrapped beyond the trajectory.
    """
    next_valid = jnp.concatenate([valid[..., 1:], jnp.zeros_like(valid[..., :1])], axis=-1)
    next_values = jnp.concatenate([values[..., 1:], jnp.zeros_like(values[..., :1])], axis=-1)
    next_values = jnp.where(next_valid, next_values, 0.0)
    deltas = rewards + gamma * next_values - values

    def _backward(adv_next, inputs):
        delta, nv = inputs
        adv = delta + gamma * lam * jnp.where(nv, adv_next, 0.0)
        return adv, adv

    time_major = (jnp.moveaxis(deltas, -1, 0), jnp.moveaxis(next_valid, -1, 0))
    init = jnp.zeros(deltas.shape[:-1], deltas.dtype)
    _, adv = jax.lax.scan(_backward, init, time_major, reverse=True)
    adv = jnp.where(valid, jnp.moveaxis(adv, 0, -1), 0.0)
    return adv, jnp.where(valid, adv + values, 0.0)


@struct.dataclass
class StepBatch:
    """Flattened steps of one iteration's rollouts (one row per step, invalid ones masked)."""

    obs: jax.Array
    action: jax.Array
    time: jax.Array
    log_prob: jax.Array
    advantage: jax.Array
    target: jax.Array
    mask: jax.Array


def make_loss(config, policy, value_head):
    """loss(params=(policy, value), ref_params, batch) -> (total, stats) for PPOConfig `config`:
    clipped surrogate − entropy bonus + KL penalty + ½ squared value error."""
    clip = float(config.clip)
    with_kl = config.kl_coef > 0

    def loss(params, ref_params, batch: StepBatch):
        policy_params, value_params = params
        log_prob, entropy, kl = policy_terms(
            policy, policy_params, ref_params, batch.obs, batch.action, with_kl
        )
        log_ratio = log_prob - batch.log_prob
        ratio = jnp.exp(log_ratio)
        adv = batch.advantage
        clipped = jnp.clip(ratio, 1.0 - clip, 1.0 + clip)
        policy_loss = masked_mean(-jnp.minimum(ratio * adv, clipped * adv), batch.mask)
        entropy = masked_mean(entropy, batch.mask)
        total = policy_loss - config.entropy_coef * entropy
        kl_ref = jnp.zeros(())
        if with_kl:
            kl_ref = masked_mean(kl, batch.mask)
            total = total + config.kl_coef * kl_ref
        values = value_head(value_params, batch.obs, batch.time)
        value_loss = masked_mean(0.5 * (values - batch.target) ** 2, batch.mask)
        # The two parts have disjoint parameters, so one gradient serves both optimizers.
        total = total + value_loss
        stats = {
            "losses/policy_loss": policy_loss,
            "losses/value_loss": value_loss,
            "losses/entropy": entropy,
            "losses/kl_ref": kl_ref,
            # The k3 estimator of KL(old ‖ new); a check that clipping keeps updates small.
            "losses/approx_kl": masked_mean((ratio - 1.0) - log_ratio, batch.mask),
            "losses/clipfrac": masked_mean(jnp.abs(ratio - 1.0) > clip, batch.mask),
        }
        return total, stats

    return loss
