"""ZBCPG (algorithms.md §4): ZPG on random coordinate blocks, P disjoint blocks per iteration.

Each block B gets a direction uniform on the sphere of R^K embedded in R^d, its own rollouts and
queries, and the estimate (K/mu) * Δ̂ * v; only coordinates in the chosen blocks change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from zopg.algorithms.zeroth_order import (
    Problem,
    check_budget_fits,
    check_common,
    estimator_config,
    make_difference_fn,
    make_zo_trainer,
)
from zopg.errors import bad_value
from zopg.estimators import block_zo_gradient, check_block_size


@dataclasses.dataclass(frozen=True)
class ZBCPGConfig:
    """ZBCPG hyperparameters; the shared ones mean what they mean in ZPGConfig.

    block_size K (coordinates per block), num_blocks P (disjoint blocks per iteration, each with
    N pairs and N*M queries), partition: random K-subsets, or blocks of a fixed partition.
    direction applies inside a block: sphere (the paper's; scale K/mu), gaussian or rademacher.
    """

    # Defaults: our choice; 4 blocks of 24 coordinates with 25 pairs each: 1000 queries per
    # iteration, 2M over the run, the same total budget as ZPGConfig's defaults.
    num_iterations: int = 2000
    num_pairs: int = 25
    num_queries: int = 10
    step_size: float | Callable = 0.1
    mu: float | Callable = 5.0
    block_size: int = 24
    num_blocks: int = 4
    partition: str = "random"
    direction: str = "sphere"
    two_sided: bool = False
    spend: str = "one-direction"
    difference: str = "preference"
    r_max: float = 2.0
    link: object | None = None
    optimizer: str = "sgd"


def make_trainer(config: ZBCPGConfig, env, policy, oracle, env_params=None):
    """The chunkable Trainer (see zopg.algorithms.trainer); make_train wraps it."""
    check_common(config)
    problem = Problem.build(env, policy, oracle, env_params)
    est = estimator_config(config).validate(problem.dim)
    check_block_size(config.block_size, problem.dim)
    if est.direction == "block-sphere":
        raise bad_value("direction", est.direction, "ZBCPG makes blocks itself; use 'sphere'")
    if not isinstance(config.num_blocks, int) or config.num_blocks < 1:
        raise bad_value("num_blocks", config.num_blocks, "must be an integer >= 1")
    num_parts = -(-problem.dim // config.block_size)
    most = problem.dim // config.block_size if config.partition == "random" else num_parts
    if config.num_blocks > most:
        raise bad_value(
            "num_blocks",
            config.num_blocks,
            f"must be <= {most}: {config.partition} blocks of size {config.block_size} in "
            f"d = {problem.dim} coordinates",
        )
    difference_fn = make_difference_fn(config, problem)
    per_block = config.num_pairs * config.num_queries if config.difference == "preference" else 0
    check_budget_fits(
        config, problem, per_block * config.num_blocks, 2 * config.num_pairs * config.num_blocks
    )

    def estimate(key, theta, mu, t):
        g, delta_hat, spent, mask = block_zo_gradient(
            key, theta, difference_fn, est, mu, config.num_blocks
        )
        return g, delta_hat, spent, mask

    return make_zo_trainer(config, problem, estimate)


def make_train(config, env, policy, oracle, env_params=None):
    """`train(key) -> (final_policy_params, metrics)`; pure, jitted, vmappable over keys."""
    return make_trainer(config, env, policy, oracle, env_params).jitted_train()
