"""A token environment: a policy writes L tokens of a vocabulary of V, after an optional prompt.

Semantics (policies and zopg.sequence_kl rely on them):
- a sequence has prompt_length P tokens drawn at reset, then length L tokens, one per step, each
  the action taken (an int in [0, vocab)); an episode lasts exactly L steps.
- observation: int32 [P + L + 1]: the P + L token slots, written so far and `vocab` (the pad
  value) after, then the position of the next token to write (P + steps taken). The prefix so
  far is everything before that position; a causal policy reads nothing after it.
- the prompt comes from a fixed random hidden Markov model (HMM_STATES hidden states, each
  emitting one of at most HMM_EMITS tokens), generated from `seed` alone, so one seed is one
  source everywhere; every draw is by inverse CDF from uniforms.
- reward: always 0. The environment only produces sequences; what a sequence is worth comes
  from a utility that judges the whole of it (the gold utilities of a later step).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import ConfigError, checked_int

HMM_STATES = 8
HMM_EMITS = 3  # tokens a hidden state can emit: sparse emissions give the source structure
MAX_TOKENS = 4096  # largest vocab, length and prompt: far past anything a CPU can train on
FIELDS = ("vocab", "length", "prompt_length", "seed")


@struct.dataclass
class TokenParams:
    """Every field sizes arrays or fixes the source, so all are static."""

    vocab: int = struct.field(pytree_node=False, default=16)
    length: int = struct.field(pytree_node=False, default=16)
    prompt_length: int = struct.field(pytree_node=False, default=0)
    seed: int = struct.field(pytree_node=False, default=0)


@struct.dataclass
class TokenState:
    tokens: jax.Array  # int32 [P + L], pad after the prefix
    time: jax.Array  # tokens generated so far


@lru_cache(maxsize=64)
def hmm_tables(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(initial [S], transition [S, S], emission [S, vocab]) of the seed's HMM, S = HMM_STATES.

    Transitions are Dirichlet(0.5) rows, so some moves are likely and others rare; each state
    emits from its own random HMM_EMITS tokens (all of them when vocab is smaller).
    """
    rng = np.random.default_rng([seed, vocab])
    initial = rng.dirichlet(np.ones(HMM_STATES))
    transition = rng.dirichlet(np.full(HMM_STATES, 0.5), size=HMM_STATES)
    emission = np.zeros((HMM_STATES, vocab))
    emits = min(HMM_EMITS, vocab)
    for state in range(HMM_STATES):
        tokens = rng.choice(vocab, size=emits, replace=False)
        emission[state, tokens] = rng.dirichlet(np.ones(emits))
    return initial, transition, emission


def _inverse_cdf(u, probs):
    """The index an inverse-CDF draw from uniform u picks from probs (rows summing to 1)."""
    cdf = jnp.cumsum(probs, axis=-1)
    return jnp.minimum(jnp.sum(cdf <= u * cdf[..., -1:], axis=-1), probs.shape[-1] - 1)


def hmm_sample(u, vocab: int, seed: int) -> jax.Array:
    """Tokens int32 [T] of the seed's HMM from uniforms u [T, 2] (hidden move, emission)."""
    initial, transition, emission = (jnp.asarray(t, jnp.float32) for t in hmm_tables(vocab, seed))

    def emit(previous, step):
        t, u_t = step
        # The first hidden state comes from the initial law, each later one from the last.
        state = _inverse_cdf(u_t[0], jnp.where(t == 0, initial, transition[previous]))
        return state, _inverse_cdf(u_t[1], emission[state])

    steps = (jnp.arange(u.shape[0]), u)
    _, tokens = jax.lax.scan(emit, jnp.int32(0), steps)
    return tokens.astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TokenEnv:
    """Gymnax-style explicit functions; see the module docstring for the semantics."""

    name = "tokens"
    action_kind = "discrete"
    num_actions: int = 16  # the vocabulary, fixed by the factory

    def horizon(self, params: TokenParams) -> int:
        return params.length

    def observation_shape(self, params: TokenParams) -> tuple[int, ...]:
        return (params.prompt_length + params.length + 1,)

    def token_shape(self, params: TokenParams) -> tuple[int, int]:
        """(vocab, P + L): what a sequence policy is sized from."""
        return params.vocab, params.prompt_length + params.length

    def reset(self, key, params: TokenParams):
        size = params.prompt_length + params.length
        tokens = jnp.full((size,), params.vocab, jnp.int32)
        if params.prompt_length:
            u = jax.random.uniform(key, (params.prompt_length, 2))
            prompt = hmm_sample(u, params.vocab, params.seed)
            tokens = tokens.at[: params.prompt_length].set(prompt)
        state = TokenState(tokens=tokens, time=jnp.int32(0))
        return self._observation(state, params), state

    def step(self, key, state: TokenState, action, params: TokenParams):
        return self.step_from_uniform(jnp.float32(0.0), state, action, params)

    def step_from_uniform(self, u, state: TokenState, action, params: TokenParams):
        """`step` without randomness (u is unused): the action is the next token."""
        del u
        position = params.prompt_length + state.time
        # An extra step past the end writes nothing (mode="drop") instead of the last slot.
        tokens = state.tokens.at[position].set(jnp.asarray(action, jnp.int32), mode="drop")
        time = jnp.minimum(state.time + 1, params.length)
        next_state = TokenState(tokens=tokens, time=time)
        done = time >= params.length
        return self._observation(next_state, params), next_state, jnp.float32(0.0), done

    def _observation(self, state: TokenState, params: TokenParams):
        position = (params.prompt_length + state.time).astype(jnp.int32)
        return jnp.concatenate([state.tokens, position[None]])

    def prompt_log_prob(self, params: TokenParams, prompts) -> jax.Array:
        """log P(prompt) under the seed's HMM for prompts int [..., P] (0 when P = 0), by the
        forward algorithm."""
        prompts = jnp.asarray(prompts)
        if params.prompt_length == 0:
            return jnp.zeros(prompts.shape[:-1])
        initial, transition, emission = (
            jnp.asarray(t, jnp.float32) for t in hmm_tables(params.vocab, params.seed)
        )
        # alpha[..., s] = P(tokens so far, hidden state s), renormalised each step with the
        # scale kept in log form: probabilities of long prompts underflow otherwise.
        emits = lambda t: jnp.moveaxis(emission[:, prompts[..., t]], 0, -1)  # noqa: E731
        alpha = initial * emits(0)
        log_scale = jnp.zeros(prompts.shape[:-1])
        for t in range(1, params.prompt_length):
            total = jnp.sum(alpha, axis=-1, keepdims=True)
            log_scale = log_scale + jnp.log(total[..., 0])
            alpha = (alpha / total) @ transition * emits(t)
        return log_scale + jnp.log(jnp.sum(alpha, axis=-1))


def make_tokens(**overrides) -> tuple[TokenEnv, TokenParams]:
    """Build the token environment from field overrides (vocab, length, prompt_length, seed)."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown token-environment field(s) {unknown}; allowed: {', '.join(FIELDS)}"
        )
    fields = {name: getattr(TokenParams(), name) for name in FIELDS} | overrides
    params = TokenParams(
        vocab=checked_int("vocab", fields["vocab"], 2, MAX_TOKENS),
        length=checked_int("length", fields["length"], 1, MAX_TOKENS),
        prompt_length=checked_int("prompt_length", fields["prompt_length"], 0, MAX_TOKENS),
        seed=checked_int("seed", fields["seed"], 0, 2**32 - 1),
    )
    return TokenEnv(num_actions=params.vocab), params
