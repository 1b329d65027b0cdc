"""Par-S2ZPO (science.md §6): K agents each own one block of a fixed partition of θ and send
one bit per round.

Every round each block k gets its own Rademacher direction ũ_k (±1 on the block, divided by
√(d/K)), its own rollouts and its own N votes on batches of D trajectories of θ + μũ_k against θ;
all blocks are vmapped and step at once, θ ← θ + α Σ_k s_k ũ_k. With K = 1 it is ZSPO with
Rademacher directions, to the bit (the round's key goes to the one block as it is). Per round:
K·N queries, 2KND trajectories, and d + K bits communicated (each coordinate's ±1 and each
agent's sign; `comm/bits` counts them).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from zopg.algorithms.base import Algorithm, Problem, Trainer
from zopg.algorithms.settings import integer
from zopg.algorithms.sign_zo import (
    SIGN_SEARCH_SPACE,
    SignConfig,
    make_optimizer,
    make_sign_step,
    unit_rademacher,
)
from zopg.algorithms.zeroth_order import schedule_value
from zopg.errors import bad_value


@dataclasses.dataclass(frozen=True)
class ParS2ZPOConfig(SignConfig):
    """Par-S2ZPO hyperparameters: SignConfig's (N and D per block), and num_blocks K, the agents.
    The partition is fixed: K consecutive runs of coordinates whose sizes differ by at most 1.
    num_iterations counts rounds. Defaults are our choice."""

    num_blocks: int = integer(4, doc="K agents, one block each")

    def signs_per_iteration(self) -> int:
        return self.num_blocks

    def check(self, problem, prefix):
        if problem is not None and self.num_blocks > problem.dim:
            raise bad_value(
                prefix + "num_blocks",
                self.num_blocks,
                f"must be <= d = {problem.dim}: more blocks would leave some empty",
            )


def block_masks(dim: int, num_blocks: int) -> np.ndarray:
    """[K, d] bool: K consecutive, non-empty runs of coordinates (sizes differ by at most 1)."""
    owner = np.concatenate(
        [np.full(len(part), k) for k, part in enumerate(np.array_split(np.arange(dim), num_blocks))]
    )
    return owner[None, :] == np.arange(num_blocks)[:, None]


@struct.dataclass
class ParS2ZPOState:
    """What Par-S2ZPO carries between rounds.

    theta: the flat policy parameters θ [d], every agent's block of it (problem.unravel gives
        the policy's own parameters).
    opt_state: the optax optimizer's state for θ (sgd or adam).
    bits: int32 scalar, the bits communicated so far (d + K per round; `comm/bits`).
    """

    theta: jax.Array
    opt_state: optax.OptState
    bits: jax.Array


def make_trainer(config: ParS2ZPOConfig, problem: Problem) -> Trainer:
    tx = make_optimizer(config)
    blocks = config.num_blocks
    masks = jnp.asarray(block_masks(problem.dim, blocks))
    scale = math.sqrt(problem.dim / blocks)
    bits_per_round = problem.dim + blocks

    def init(key):
        theta = problem.initial_theta(key)
        return ParS2ZPOState(theta=theta, opt_state=tx.init(theta), bits=jnp.zeros((), jnp.int32))

    def iterate(state: ParS2ZPOState, t, key):
        theta, opt_state, bits = state.theta, state.opt_state, state.bits
        sign_step = make_sign_step(config, problem, schedule_value(config.mu, t))

        def agent(key, mask):
            k_dir, k_sign = jax.random.split(key)
            return sign_step(k_sign, theta, unit_rademacher(k_dir, problem.dim, mask, scale))

        keys = key[None] if blocks == 1 else jax.random.split(key, blocks)
        steps, signs, margins, spent = jax.vmap(agent)(keys, masks)
        updates, opt_state = tx.update(-steps.sum(axis=0), opt_state, theta)
        bits = bits + bits_per_round
        metrics = {
            "zo/sign_mean": signs.mean(),
            "zo/vote_margin": margins.mean(),
            "comm/bits": bits,
        }
        new_theta = optax.apply_updates(theta, updates)
        return ParS2ZPOState(new_theta, opt_state, bits), spent.total(), metrics

    return Trainer(init, iterate, lambda state: problem.unravel(state.theta))


ALGORITHM = Algorithm(
    "par-s2zpo",
    ParS2ZPOConfig,
    make_trainer,
    "K agents, one block of θ each, one sign bit per agent and round (science.md §6)",
    assumes="no link (sign of the majority)",
    search_space=SIGN_SEARCH_SPACE,
)
