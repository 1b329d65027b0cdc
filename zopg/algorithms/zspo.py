"""ZSPO (science.md §5): zeroth-order sign policy optimisation for an unknown link.

Per iteration: one direction v, N one-bit queries, each comparing a batch of D trajectories of
θ + μv with D of θ (or of θ − μv, two-sided); ŝ = sign(Σ(2o − 1)), a fair coin on a tie; then
θ ← θ + α ŝ v (or ŝ v fed to Adam). N queries, 2ND trajectories, 2D judged per query; with
common_random_numbers, free ties (identical batches) ask no query (SignConfig).
"""

from __future__ import annotations

import dataclasses

import jax
import optax
from flax import struct

from zopg.algorithms.base import Algorithm, Problem, Trainer
from zopg.algorithms.settings import choice
from zopg.algorithms.sign_zo import (
    SIGN_SEARCH_SPACE,
    SignConfig,
    make_optimizer,
    make_sign_step,
    unit_rademacher,
)
from zopg.algorithms.zeroth_order import schedule_value
from zopg.estimators import gaussian_direction, sphere_direction

DIRECTIONS = ("sphere", "gaussian", "rademacher")


@dataclasses.dataclass(frozen=True)
class ZSPOConfig(SignConfig):
    """ZSPO hyperparameters (SignConfig's, plus the direction). Defaults are our choice.

    direction: sphere (uniform on the unit sphere), gaussian (N(0, I)) or rademacher (±1/√d,
    unit norm, so that Par-S2ZPO with one block is ZSPO with Rademacher directions).
    common_random_numbers: see SignConfig (off by default).
    """

    direction: str = choice("sphere", DIRECTIONS)


def sample_direction(key, dim: int, direction: str):
    if direction == "sphere":
        return sphere_direction(key, dim)
    if direction == "gaussian":
        return gaussian_direction(key, dim)
    return unit_rademacher(key, dim)


@struct.dataclass
class ZSPOState:
    """What ZSPO carries between iterations.

    theta: the flat policy parameters θ [d] (problem.unravel gives the policy's own).
    opt_state: the optax optimizer's state for θ (sgd or adam).
    """

    theta: jax.Array
    opt_state: optax.OptState


def make_trainer(config: ZSPOConfig, problem: Problem) -> Trainer:
    tx = make_optimizer(config)

    def init(key):
        theta = problem.initial_theta(key)
        return ZSPOState(theta=theta, opt_state=tx.init(theta))

    def iterate(state: ZSPOState, t, key):
        theta, opt_state = state.theta, state.opt_state
        k_dir, k_sign = jax.random.split(key)
        v = sample_direction(k_dir, problem.dim, config.direction)
        sign_step = make_sign_step(config, problem, schedule_value(config.mu, t))
        step, sign, margin, spent = sign_step(k_sign, theta, v)
        updates, opt_state = tx.update(-step, opt_state, theta)  # optax minimises
        metrics = {"zo/sign": sign, "zo/vote_margin": margin}
        if config.common_random_numbers:
            metrics["zo/free_ties"] = 1.0 - spent.queries / config.num_votes
        return ZSPOState(optax.apply_updates(theta, updates), opt_state), spent, metrics

    return Trainer(init, iterate, lambda state: problem.unravel(state.theta))


ALGORITHM = Algorithm(
    "zspo",
    ZSPOConfig,
    make_trainer,
    "sign of a majority vote over batches of D trajectories (science.md §5)",
    assumes="no link (sign of the majority)",
    search_space=SIGN_SEARCH_SPACE,
)
