"""Best-of-n: its exact law and KL on a finite space, the log n - (n - 1)/n bound, and a sampler."""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zopg.errors import ConfigError, bad_value, checked_int
from zopg.sequence_kl import sample_sequences, token_layout

# How far from 1 the reference probabilities may sum: float32 log-probabilities of a policy,
# exponentiated and summed over a few thousand sequences, drift by about 1e-6.
SUM_TOLERANCE = 1e-5
CHUNK = 4096  # candidate sequences per compiled call of best_of_n_sequences: bounds its memory

# The tie rule, shared by best_of_n_law and the samplers: the pick is the FIRST of the n draws
# whose score is the maximum. That rule chooses a position from the scores alone, and the draws
# are independent, so given its score level the draw at the chosen position is distributed as
# the reference restricted to that level (any rule blind to the outcomes would give the same
# law). With F the reference CDF over score levels, P(the maximum is level l) =
# F(l)**n - F(l-)**n.


def best_of_n_kl_bound(n: int) -> float:
    """log n - (n - 1)/n, the KL(best-of-n || reference) of Gao et al. 2023: exact when no
    outcome has positive probability (continuous scores), an upper bound otherwise (Beirami et
    al. 2024)."""
    n = checked_int("n", n, 1, None)
    return math.log(n) - (n - 1) / n


def _probabilities(ref_probs) -> np.ndarray:
    """ref_probs as a float64 vector [K] that sums to 1, or a ConfigError saying what is wrong."""
    try:
        probs = np.asarray(ref_probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"ref_probs = {ref_probs!r}: must be an array of numbers") from None
    if probs.ndim != 1 or probs.size == 0:
        raise ConfigError(
            f"ref_probs has shape {probs.shape}: must be a non-empty vector [K] of probabilities"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        bad = float(probs[~(np.isfinite(probs) & (probs >= 0))][0])
        raise ConfigError(f"ref_probs holds {bad!r}: every probability must be finite and >= 0")
    total = float(probs.sum())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"ref_probs sum to {total!r}: must sum to 1 (within {SUM_TOLERANCE:g})")
    # Dividing by the sum takes the allowed rounding out, so the law sums to 1 in float64.
    return probs / total


def _scores(field: str, scores, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """scores as a float64 array (of `shape` when given; otherwise non-empty), without NaN."""
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} = {scores!r}: must be an array of numbers") from None
    if shape is not None and values.shape != shape:
        raise ConfigError(
            f"{field} has shape {values.shape}: must have the shape of ref_probs, {shape}"
        )
    if values.size == 0:
        raise ConfigError(f"{field} is empty: must hold at least one score")
    # NaN compares false with everything, so it has no place in the order of scores.
    if np.any(np.isnan(values)):
        raise ConfigError(f"{field} holds NaN: every score must be a number (±inf allowed)")
    return values


def _levels(ref_probs, scores, n: int):
    """(reference probabilities [K], level of each outcome [K], mass of each level G [m],
    log P(the pick is in level l) [m]) over the sorted distinct scores; the last is -inf where
    a level has no reference mass."""
    n = checked_int("n", n, 1, None)
    probs = _probabilities(ref_probs)
    values = _scores("scores", scores, probs.shape)
    _, level = np.unique(values, return_inverse=True)
    mass = np.bincount(level, weights=probs)
    below = np.cumsum(mass)  # F(l): mass at or below level l
    above = np.cumsum(mass[::-1])[::-1] - mass  # 1 - F(l): mass strictly above level l
    with np.errstate(divide="ignore", invalid="ignore"):
        # log F from whichever side holds it exactly: near 1, 1 - F comes from the mass above
        # and log1p keeps its digits, where log(cumsum) would round F**n for large n.
        log_f = np.where(below < 0.5, np.log(below), np.log1p(-above))
        # F(l)**n - F(l-)**n = F(l)**n (1 - (1 - G/F)**n), in logs: no difference of two
        # numbers near 1 (the cancellation that ruins F**n - F(l-)**n for large n).
        log_level = n * log_f + np.log(-np.expm1(n * np.log1p(-mass / below)))
    return probs, level, mass, np.where(mass > 0, log_level, -np.inf)


def best_of_n_law(ref_probs, scores, n: int) -> np.ndarray:
    """The exact law [K] of the best-of-n pick over K outcomes with reference probabilities
    ref_probs [K] and scores [K]; ties go by the first-maximiser rule (see the comment at the
    top of this module), so within its level an outcome keeps its reference share."""
    probs, level, mass, log_level = _levels(ref_probs, scores, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(mass[level] > 0, probs / mass[level], 0.0)
    return share * np.exp(log_level[level])


def best_of_n_kl(ref_probs, scores, n: int) -> float:
    """KL(best-of-n || reference) exactly, from the law (0 log 0 = 0). Within a level the pick
    keeps the reference's shares, so the sum over outcomes is the sum over levels of
    P(l) log(P(l) / G(l)), G(l) the level's reference mass."""
    _, _, mass, log_level = _levels(ref_probs, scores, n)
    kept = mass > 0
    terms = np.exp(log_level[kept]) * (log_level[kept] - np.log(mass[kept]))
    return float(np.sum(terms))


def best_of_n_kl_estimate(pick_scores, reference_scores, n: int) -> float:
    """A Monte Carlo KL(best-of-n || reference) for continuous scores, on spaces too big to
    enumerate: the mean over picked samples x of log n + (n - 1) log F(s(x)), the log density
    ratio of the maximum of n draws, with F the empirical CDF of reference_scores.

    F(s) is taken as (#{reference scores <= s} + 1) / (M + 1), M = len(reference_scores): the
    rank of s among the reference scores and itself, so it is never 0 (a pick above every
    reference score would otherwise give log 0) and never above 1. Its bias, at most
    1 / (M + 1) in F, is far below the sampling error for M in the thousands. The reference
    scores may be the candidates themselves (then each pick is counted once more, the same
    1 / (M + 1)). For scores with atoms this estimates the bound, not the smaller exact KL.
    """
    n = checked_int("n", n, 1, None)
    picks = _scores("pick_scores", pick_scores).ravel()
    reference = np.sort(_scores("reference_scores", reference_scores).ravel())
    below = np.searchsorted(reference, picks, side="right")
    cdf = (below + 1.0) / (reference.size + 1.0)
    return float(np.mean(math.log(n) + (n - 1) * np.log(cdf)))


def best_of_n_indices(scores) -> jax.Array:
    """The index [...] of the pick among candidates with scores [..., n]: the first maximiser
    (jnp.argmax returns the first of tied maxima, the rule best_of_n_law assumes). A NaN score
    counts as the maximum, as in jnp.argmax; best_of_n_sequences refuses NaN scores."""
    return jnp.argmax(jnp.asarray(scores), axis=-1)


class BestOfN(NamedTuple):
    """What best_of_n_sequences returns (B = num_sequences, P + L the sequence size)."""

    tokens: jax.Array  # int32 [B, P + L]: the picked sequences
    scores: jax.Array  # [B]: their scores
    index: jax.Array  # int32 [B]: each pick's position among its n candidates
    candidate_scores: jax.Array  # [B, n]: every candidate's score, for best_of_n_kl_estimate


@partial(jax.jit, static_argnames=("env", "policy", "score_fn", "groups", "width"))
def _block(key, prompt_keys, env, env_params, policy, params, score_fn, groups, width, valid):
    """Sample groups * width sequences as [groups, width] candidates, the candidates of a group
    completing the prompt of its key in prompt_keys [groups], score them and pick the first
    maximiser of each group among its first `valid` candidates."""
    shared = jnp.repeat(prompt_keys, width, axis=0)
    tokens = sample_sequences(key, env, env_params, policy, params, groups * width, shared)
    tokens = tokens.reshape(groups, width, tokens.shape[-1])
    scores = jnp.asarray(score_fn(tokens))
    if scores.shape != (groups, width):
        raise ConfigError(
            f"score_fn returned shape {scores.shape} for tokens of shape {tokens.shape}: it must "
            f"map tokens int [..., P + L] to scores [...], here {(groups, width)}"
        )
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    # The last piece of a group split over several calls is only partly real: the rest must
    # never win, and -inf loses to every real score (or ties it and comes later).
    masked = jnp.where(jnp.arange(width) < valid, scores, -jnp.inf)
    index = best_of_n_indices(masked)
    rows = jnp.arange(groups)
    return tokens[rows, index], masked[rows, index], index, scores


def best_of_n_sequences(
    key,
    env,
    env_params,
    policy,
    params,
    score_fn,
    n: int,
    num_sequences: int,
    chunk: int = CHUNK,
) -> BestOfN:
    """num_sequences best-of-n picks: for each, n sequences drawn from (policy, params) with
    zopg.sequence_kl.sample_sequences, scored by score_fn (tokens int [..., P + L] -> scores
    [...], a hashable function: it is a static argument of the compiled sampler), and the
    first maximiser kept.

    At most `chunk` candidates are drawn per compiled call, whole groups of n at a time when
    n <= chunk, else each group in pieces with its best carried over (a later piece wins only
    with a strictly higher score, which keeps the first-maximiser rule); the draws depend on
    chunk, the law does not. With prompts (prompt_length > 0) the n candidates of a pick
    complete one prompt, drawn per pick from the environment's prompt law (the key of pick i
    is fold_in(prompt key, i) in every call, so a group split over calls keeps its prompt):
    best-of-n compares completions of one prompt, and its KL is the bound's per prompt.
    """
    token_layout(env, env_params)
    n = checked_int("n", n, 1, None)
    num_sequences = checked_int("num_sequences", num_sequences, 1, None)
    chunk = checked_int("chunk", chunk, 1, None)
    if not callable(score_fn):
        raise bad_value("score_fn", score_fn, "must be a function from tokens to scores")
    if n <= chunk:
        groups, pieces = min(chunk // n, num_sequences), 1
    else:
        groups, pieces = 1, -(-n // chunk)
    width = -(-n // pieces)  # pieces of equal width: the last one pads the least
    picked_tokens, picked_scores, picked_index, all_scores = [], [], [], []
    call = 0
    # Candidates are drawn with fold_in(key, call), as before prompts were allowed, so a
    # prompt-free run keeps its draws; prompts come from a key of their own.
    prompt_key = jax.random.split(key)[1]
    for first in range(0, num_sequences, groups):
        group_scores = []
        prompt_keys = jax.vmap(lambda i: jax.random.fold_in(prompt_key, i))(
            jnp.arange(first, first + groups)
        )
        for piece in range(pieces):
            valid = min(width, n - piece * width)
            out = _block(
                jax.random.fold_in(key, call),
                prompt_keys,
                env,
                env_params,
                policy,
                params,
                score_fn,
                groups,
                width,
                valid,
            )
            call += 1
            tokens, score, index, scores = (np.asarray(x) for x in out)
            if np.any(np.isnan(scores[:, :valid])):
                raise ConfigError("score_fn returned NaN: every score must be a number")
            group_scores.append(scores[:, :valid])
            index = index + piece * width
            if piece == 0:
                best_tokens, best_score, best_index = tokens, score, index
            else:
                # Strictly higher only: on a tie the earlier piece holds the first maximiser.
                better = score > best_score
                best_tokens = np.where(better[:, None], tokens, best_tokens)
                best_score = np.where(better, score, best_score)
                best_index = np.where(better, index, best_index)
        keep = min(groups, num_sequences - first)  # the last call's spare groups are dropped
        picked_tokens.append(best_tokens[:keep])
        picked_scores.append(best_score[:keep])
        picked_index.append(best_index[:keep])
        all_scores.append(np.concatenate(group_scores, axis=1)[:keep])
    return BestOfN(
        tokens=jnp.asarray(np.concatenate(picked_tokens), jnp.int32),
        scores=jnp.asarray(np.concatenate(picked_scores)),
        index=jnp.asarray(np.concatenate(picked_index), jnp.int32),
        candidate_scores=jnp.asarray(np.concatenate(all_scores)),
    )
