"""Gold utilities of the token family: a fixed random GRU, and a bigram score with a Goodhart
penalty; each standardised to mean 0 and sd 1 under the SFT reference.

Both judge the whole sequence (prompt and generated part, read from the trajectory's final
observation) and are bound to a token environment with `bind`, which builds their fixed tables
from `seed` and measures the reference's mean and sd on STANDARDISE_SEQUENCES sequences of a
fixed key (Gao et al. 2023 standardise their gold the same way), so a gold value reads in
reference sds and best-of-n's gains are comparable across utilities.

gold-gru       A random GRU (embedding `embed`, hidden `hidden`: larger than every proxy) read
               out at every generated position through a tanh layer and averaged: a smooth,
               non-linear function of the whole sequence that no proxy class contains.
bigram-goodhart  Σ W[x_(j−1), x_j] over the generated tokens (W a fixed N(0, 1) table whose
               largest entry is on the diagonal, so repeating one token maximises it) minus
               `penalty` per token that the longest run of one token goes past `max_run`. Runs
               past 6 are rare under the reference (about 1.4% of its sequences), so proxies
               fitted on its pairs barely see the penalty that optimising them runs into.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zopg.errors import ConfigError, bad_value, checked_float, checked_int
from zopg.lm.reference import reference_policy
from zopg.policies import SEQUENCE_POLICIES, FrozenParams
from zopg.preferences.utilities import Utility
from zopg.sequence_kl import sample_sequences, token_layout

STANDARDISE_SEQUENCES = 8192  # the sd's relative standard error is about 1 / √(2 × 8192) < 1%
STANDARDISE_KEY = 20250101  # one fixed key: a utility's constants depend on nothing else
DIAGONAL_MARGIN = 0.5  # how far the top repeat sits above the table's largest entry


@dataclasses.dataclass(frozen=True)
class Bound:
    """What bind adds: the fixed tables, the layout, and the reference's moments."""

    tables: FrozenParams
    vocab: int
    prompt_length: int
    mean: float = 0.0
    sd: float = 1.0


@dataclasses.dataclass(frozen=True)
class TokenUtility(Utility):
    """A score of whole token sequences, in sds of the SFT reference (subclasses give the raw
    score)."""

    reference: str = "gru"
    bound: Any = None
    bound_fields: ClassVar[tuple[str, ...]] = ("bound",)

    def __post_init__(self):
        if self.reference not in SEQUENCE_POLICIES:
            raise bad_value(
                f"{self.name}.reference",
                self.reference,
                f"must be one of {', '.join(SEQUENCE_POLICIES)} (the SFT reference's network)",
            )

    # -- what subclasses give ----------------------------------------------------------------
    def _tables(self, vocab: int):
        raise NotImplementedError

    def _raw(self, tables, tokens, prompt_length: int) -> jax.Array:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def bind(self, env, env_params) -> TokenUtility:
        vocab, prompt, _ = token_layout(env, env_params)
        if self.bound is not None and (self.bound.vocab, self.bound.prompt_length) == (
            vocab,
            prompt,
        ):
            return self
        unscaled = dataclasses.replace(
            self, bound=Bound(FrozenParams(self._tables(vocab)), vocab, prompt)
        )
        mean, sd = _reference_moments(unscaled, env, env_params)
        return dataclasses.replace(
            unscaled, bound=dataclasses.replace(unscaled.bound, mean=mean, sd=sd)
        )

    def raw_score(self, tokens) -> jax.Array:
        """The unstandardised score of sequences int [..., P + L]: [...]."""
        bound = self._bound()
        tables = jax.tree_util.tree_map(jnp.asarray, bound.tables.tree)
        return self._raw(tables, jnp.asarray(tokens, jnp.int32), bound.prompt_length)

    def score(self, tokens) -> jax.Array:
        """The gold value of sequences int [..., P + L]: [...], in reference sds."""
        bound = self._bound()
        return (self.raw_score(tokens) - bound.mean) / bound.sd

    def __call__(self, traj):
        return self.score(traj.final_obs[..., :-1])

    def _bound(self) -> Bound:
        if self.bound is None:
            raise ConfigError(f"utility {self.name!r} must be bound to its env first (bind)")
        return self.bound


@lru_cache(maxsize=32)
def _reference_moments(utility: TokenUtility, env, env_params) -> tuple[float, float]:
    """Mean and sd of the raw score under the SFT reference (cached: binding the same utility
    to the same environment twice samples once)."""
    policy, ref = reference_policy(utility.reference, env, env_params)
    key = jax.random.PRNGKey(STANDARDISE_KEY)
    tokens = sample_sequences(key, env, env_params, policy, ref, STANDARDISE_SEQUENCES)
    values = np.asarray(utility.raw_score(tokens), np.float64)
    return float(values.mean()), float(values.std(ddof=1))


class _GoldNet(nn.Module):
    vocab: int
    embed: int
    hidden: int
    readout: int

    @nn.compact
    def __call__(self, tokens):  # int [B, N] -> per-position values [B, N]
        x = nn.Embed(self.vocab, self.embed, name="embed")(tokens)
        h = nn.RNN(nn.GRUCell(self.hidden, name="gru"))(x)
        return nn.Dense(1, name="out")(jnp.tanh(nn.Dense(self.readout, name="readout")(h)))[..., 0]


@dataclasses.dataclass(frozen=True)
class GoldGRU(TokenUtility):
    """A fixed random GRU averaged over the generated positions, in reference sds."""

    name: ClassVar[str] = "gold-gru"
    embed: int = 32
    hidden: int = 128
    readout: int = 64
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        for field, high in (("embed", 4096), ("hidden", 4096), ("readout", 4096)):
            checked_int(f"gold-gru.{field}", getattr(self, field), 1, high)
        checked_int("gold-gru.seed", self.seed, 0, 2**32 - 1)

    def _net(self, vocab: int) -> _GoldNet:
        return _GoldNet(vocab=vocab, embed=self.embed, hidden=self.hidden, readout=self.readout)

    def _tables(self, vocab: int):
        return self._net(vocab).init(jax.random.PRNGKey(self.seed), jnp.zeros((1, 2), jnp.int32))

    def _raw(self, tables, tokens, prompt_length: int):
        batch, size = tokens.shape[:-1], tokens.shape[-1]
        values = self._net(self.bound.vocab).apply(tables, tokens.reshape(-1, size))
        generated = jnp.arange(size) >= prompt_length
        mean = jnp.sum(jnp.where(generated, values, 0.0), axis=-1) / (size - prompt_length)
        return mean.reshape(batch)


def longest_run(tokens) -> jax.Array:
    """The longest run of one repeated token in each sequence int [..., N]: [...]."""
    tokens = jnp.asarray(tokens)
    run = jnp.ones(tokens.shape[:-1], jnp.int32)
    best = run
    for j in range(1, tokens.shape[-1]):
        run = jnp.where(tokens[..., j] == tokens[..., j - 1], run + 1, 1)
        best = jnp.maximum(best, run)
    return best


@dataclasses.dataclass(frozen=True)
class BigramGoodhart(TokenUtility):
    """A bigram score that repeating one token maximises, minus a penalty on long runs, in
    reference sds."""

    name: ClassVar[str] = "bigram-goodhart"
    max_run: int = 6
    penalty: float = 8.0
    seed: int = 0

    def __post_init__(self):
        super().__post_init__()
        checked_int("bigram-goodhart.max_run", self.max_run, 1, 4096)
        checked_float("bigram-goodhart.penalty", self.penalty, 0.0, 1e6)
        checked_int("bigram-goodhart.seed", self.seed, 0, 2**32 - 1)

    def _tables(self, vocab: int):
        table = np.random.default_rng([self.seed, vocab]).standard_normal((vocab, vocab))
        top = int(np.argmax(np.diag(table)))
        table[top, top] = table.max() + DIAGONAL_MARGIN
        return {"bigram": table}

    def _raw(self, tables, tokens, prompt_length: int):
        # Every transition into a generated token: from the prompt's last token on (a sequence
        # without a prompt starts scoring at its second token).
        first = max(prompt_length, 1)
        score = jnp.sum(tables["bigram"][tokens[..., first - 1 : -1], tokens[..., first:]], -1)
        runs = longest_run(tokens[..., prompt_length:])
        return score - self.penalty * jnp.maximum(runs - self.max_run, 0)
