"""KL(π ‖ π_ref) over token sequences: exact by enumeration, and summed per prefix on samples."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from zopg.errors import ConfigError, checked_int
from zopg.rollout import rollout_batch

MAX_SEQUENCES = 10**6  # sequences sequence_kl enumerates at most (minutes on a CPU)
CHUNK = 4096  # sequences per compiled call: bounds memory whatever V**L is


def token_layout(env, env_params) -> tuple[int, int, int]:
    """(vocab, prompt_length, length) of a token environment (zopg.envs.tokens), or a
    ConfigError for any other environment."""
    fields = ("vocab", "prompt_length", "length")
    if not callable(getattr(env, "prompt_log_prob", None)) or not all(
        hasattr(env_params, f) for f in fields
    ):
        raise ConfigError(f"the sequence KL needs a token environment (tokens/...); {env!r} is not")
    return tuple(int(getattr(env_params, f)) for f in fields)


def next_token_log_probs(policy, params, tokens, vocab: int) -> jax.Array:
    """log π(· | tokens[..., :j]) for every position j: [..., N, V] from tokens int [..., N].

    One pass with the policy's sequence_log_probs where it has one; otherwise one log_probs call
    per prefix, on the observation the token environment shows there (pad from j on, then j).
    """
    if hasattr(policy, "sequence_log_probs"):
        return policy.sequence_log_probs(params, tokens)
    size = tokens.shape[-1]
    position = jnp.arange(size)
    prefixes = jnp.where(position[None, :] < position[:, None], tokens[..., None, :], vocab)
    obs = jnp.concatenate(
        [prefixes, jnp.broadcast_to(position[:, None], (*tokens.shape, 1))], axis=-1
    )
    return policy.log_probs(params, obs)


@partial(jax.jit, static_argnames=("env", "policy", "size"))
def _enumerated_terms(env, env_params, policy, params, ref_params, start, size):
    """Σ P(x) log(π(x) / π_ref(x)) and Σ P(x) over sequences start .. start + size - 1 (in
    base vocab, the first token most significant), P the prompt's law times π's."""
    vocab, prompt, length = token_layout(env, env_params)
    total = prompt + length
    index = start + jnp.arange(size)
    places = vocab ** jnp.arange(total - 1, -1, -1)
    tokens = (index[:, None] // places[None, :]) % vocab
    generated = jnp.arange(total) >= prompt

    def log_prob(p):
        steps = jnp.take_along_axis(
            next_token_log_probs(policy, p, tokens, vocab), tokens[..., None], axis=-1
        )[..., 0]
        return jnp.sum(jnp.where(generated, steps, 0.0), axis=-1)

    log_p, log_ref = log_prob(params), log_prob(ref_params)
    weight = jnp.exp(env.prompt_log_prob(env_params, tokens[:, :prompt]) + log_p)
    # Past the last sequence (the final chunk's padding) every index weighs nothing.
    weight = jnp.where(index < vocab**total, weight, 0.0)
    return jnp.sum(weight * (log_p - log_ref)), jnp.sum(weight)


def sequence_kl(env, env_params, policy, params, ref_params) -> float:
    """KL(π ‖ π_ref) between the laws of whole generated sequences, exactly: the sum over every
    sequence x of π(x) log(π(x) / π_ref(x)), averaged over prompts by their HMM probability.

    Enumerates all V**(P + L) sequences (P the prompt length, L the generated length), so
    refuses more than MAX_SEQUENCES; sequence_kl_estimate works at any size.
    """
    vocab, prompt, length = token_layout(env, env_params)
    count = vocab ** (prompt + length)
    if count > MAX_SEQUENCES:
        raise ConfigError(
            f"vocab ** (prompt_length + length) = {vocab} ** {prompt + length} = {count}: must "
            f"be at most 10**6 to enumerate every sequence; use sequence_kl_estimate"
        )
    size = min(CHUNK, count)
    kl = mass = 0.0
    for start in range(0, count, size):
        terms = _enumerated_terms(env, env_params, policy, params, ref_params, start, size)
        kl, mass = kl + float(terms[0]), mass + float(terms[1])
    # mass is 1 up to rounding; dividing by it takes float32's drift out of the sum.
    return kl / mass


def per_prefix_kl(env, env_params, policy, params, ref_params, tokens) -> jax.Array:
    """Σ_j KL(π(· | x_<j) ‖ π_ref(· | x_<j)) over the generated positions j of each sequence
    x in tokens int [..., P + L]: [...]. Over x drawn from π its mean is sequence_kl (the chain
    rule), with a smaller variance than log(π(x) / π_ref(x)) since every step's KL is exact."""
    vocab, prompt, _ = token_layout(env, env_params)
    tokens = jnp.asarray(tokens, jnp.int32)
    log_p = next_token_log_probs(policy, params, tokens, vocab)
    log_ref = next_token_log_probs(policy, ref_params, tokens, vocab)
    steps = jnp.sum(jnp.exp(log_p) * (log_p - log_ref), axis=-1)
    generated = jnp.arange(tokens.shape[-1]) >= prompt
    return jnp.sum(jnp.where(generated, steps, 0.0), axis=-1)


def sample_sequences(
    key, env, env_params, policy, params, num_sequences: int, prompt_keys=None
) -> jax.Array:
    """num_sequences sequences (prompt, then L tokens from π): int32 [num_sequences, P + L].
    Each draws its own prompt, or, given prompt_keys [num_sequences], the prompt of its key
    (sequences with one key share their prompt; their completions are independent)."""
    num_sequences = checked_int("num_sequences", num_sequences, 1, 2**31 - 1)
    token_layout(env, env_params)
    traj = rollout_batch(
        key, policy, params, env, env_params, num_sequences, reset_keys=prompt_keys
    )
    return traj.final_obs[:, :-1]


def sequence_kl_estimate(
    key, env, env_params, policy, params, ref_params, num_sequences: int = 256
) -> jax.Array:
    """The per-prefix estimate of KL(π ‖ π_ref): per_prefix_kl averaged over num_sequences
    sequences drawn from π (unbiased; its standard error is the sample sd / √num_sequences)."""
    tokens = sample_sequences(key, env, env_params, policy, params, num_sequences)
    return jnp.mean(per_prefix_kl(env, env_params, policy, params, ref_params, tokens))
