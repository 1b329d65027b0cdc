"""What ZSPO and Par-S2ZPO share (science.md §5–§6): their settings, and one sign step: a
majority vote of N one-bit comparisons between batches of D trajectories of two policies.

No link is inverted: a vote only says which batch the teacher prefers, so any increasing link
gives the same expected sign once D is large enough (the distinguishability of §5).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from zopg.algorithms.base import AlgorithmConfig, Problem, Spent, unit_cost
from zopg.algorithms.common_random_numbers import same_trajectories
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.algorithms.settings import choice, flag, integer, positive
from zopg.rollout import rollout_batch

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class SignConfig(AlgorithmConfig):
    """Settings ZSPO and Par-S2ZPO share.

    num_votes N (one query each), batch_size D (trajectories per side of a query: the teacher
    compares the mean utility of D trajectories of each policy), step_size α and mu (floats or
    schedules), two_sided (θ + μv against θ − μv instead of against θ), optimizer (sgd: θ +=
    α ŝ v; adam: ŝ v fed to Adam as ascent).

    common_random_numbers: the two batches of a query roll out from the same key, trajectory by
    trajectory (the j-th of one batch runs on the j-th's uniforms of the other), and a query
    whose two batches are identical trajectory by trajectory is a free tie: no query, a vote
    of ½, which adds 0 to the majority's margin (zopg.algorithms.common_random_numbers).
    Spent.queries counts only the queries asked; iterations stay those the budget gives as if
    every query were spent. Off by default: the papers' batches are independent, and the gain
    depends on μ. It costs one comparison of every query's trajectories per iteration.
    """

    refused: ClassVar[dict[str, str]] = {
        "link": "sign methods invert no link: they step along the majority's sign",
        "r_max": "sign methods invert no link, so there is nothing to trim",
    }

    num_iterations: int = integer(2000, doc="T")
    num_votes: int = integer(20, doc="N one-bit queries per sign")
    batch_size: int = integer(4, doc="D trajectories per side of a query")
    step_size: float | Callable = positive(0.1, schedule=True, doc="α (or a schedule)")
    # μ 5 as ZPG's default: in d ≈ 100 a unit direction times 5 moves each logit by about 0.5;
    # much smaller radii leave V(θ + μv) − V(θ) below what N votes can resolve.
    mu: float | Callable = positive(5.0, schedule=True, doc="perturbation radius μ")
    two_sided: bool = flag(False)
    optimizer: str = choice("sgd", OPTIMIZERS)
    common_random_numbers: bool = flag(
        False, doc="batches share rollout keys; identical batch pairs are free ties (no query)"
    )

    def signs_per_iteration(self) -> int:
        return 1

    def to_data(self) -> dict:
        data = super().to_data()
        if not self.common_random_numbers:
            # Added later: left out at its default, so the run hashes of earlier runs stand.
            del data["common_random_numbers"]
        return data

    def unit_cost(self) -> Spent:
        votes = self.num_votes * self.signs_per_iteration()
        return unit_cost(
            queries=votes,
            trajectories=2 * votes * self.batch_size,
            judged_per_query=2 * self.batch_size,
        )


def make_optimizer(config: SignConfig) -> optax.GradientTransformation:
    make = optax.sgd if config.optimizer == "sgd" else optax.adam
    return make(config.step_size)


def make_majority_sign(
    problem: Problem, num_votes: int, batch_size: int, common_random_numbers: bool = False
):
    """`(key, theta_1, theta_0) -> (ŝ, margin, Spent)`: N queries, each comparing a batch of D
    fresh trajectories of θ₁ with D of θ₀; ŝ = sign(Σ(2o − 1)), a fair coin on a tie; margin =
    Σ(2o − 1) / N (ties, skipped queries and free ties count 0). With common_random_numbers
    both sides roll out from one key, and a query whose batches are identical trajectory by
    trajectory is a free tie (a vote of ½, no query spent)."""
    n, d = num_votes, batch_size

    def batches(key, theta):
        params = problem.unravel(theta)
        traj = rollout_batch(key, problem.policy, params, problem.env, problem.env_params, n * d)
        return jax.tree_util.tree_map(lambda x: x.reshape((n, d, *x.shape[1:])), traj)

    def majority_sign(key, theta_1, theta_0):
        k1, k0, k_vote, k_tie = jax.random.split(key, 4)
        if common_random_numbers:
            k0 = k1  # the same key on purpose: trajectory j of each batch shares its uniforms
        group_1, group_0 = batches(k1, theta_1), batches(k0, theta_0)
        feedback = problem.oracle.query_batches(k_vote, group_1, group_0, 1)
        votes, queries = feedback.votes[..., 0], feedback.queries
        if common_random_numbers:
            free = jnp.all(same_trajectories(group_1, group_0), axis=-1)  # [N]
            votes = jnp.where(free, 0.5, votes)
            queries = jnp.sum(~free)
        margin = jnp.sum(2.0 * votes - 1.0)
        coin = jnp.where(jax.random.bernoulli(k_tie), 1.0, -1.0)
        sign = jnp.where(margin > 0, 1.0, jnp.where(margin < 0, -1.0, coin))
        steps = jnp.sum(group_1.valid) + jnp.sum(group_0.valid)
        spent = Spent.of(queries, 2 * n * d, steps, judged_per_query=2 * d)
        return sign, margin / n, spent

    return majority_sign


def make_sign_step(config: SignConfig, problem: Problem, mu):
    """`(key, theta, direction) -> (ŝ·direction, ŝ, margin, Spent)`: one sign along a given
    direction, comparing θ + μv with θ (or with θ − μv, two-sided)."""
    majority_sign = make_majority_sign(
        problem, config.num_votes, config.batch_size, config.common_random_numbers
    )

    def sign_step(key, theta, v):
        theta_0 = theta - mu * v if config.two_sided else theta
        sign, margin, spent = majority_sign(key, theta + mu * v, theta_0)
        return sign * v, sign, margin, spent

    return sign_step


def unit_rademacher(key, dim: int, mask=None, scale: float | None = None) -> jax.Array:
    """±1 on the coordinates of mask (all when None), divided by √(dim) (or by `scale`)."""
    z = jax.random.rademacher(key, (dim,), dtype=jnp.float32)
    z = z if mask is None else jnp.where(mask, z, 0.0)
    return z / (math.sqrt(dim) if scale is None else scale)


# What `zopg tune` may set for the methods built on these settings (see algorithms/search_space.py).
SIGN_SEARCH_SPACE = SearchSpace(
    log_range("step_size", 1e-3, 1.0),
    log_range("mu", 0.1, 10.0),
    one_of("batch_size", 1, 8),
    one_of("optimizer", "sgd", "adam"),
)
