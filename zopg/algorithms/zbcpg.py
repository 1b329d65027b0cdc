"""ZBCPG (science.md §4): ZPG on random coordinate blocks, P disjoint blocks per iteration.

Each block B gets a direction uniform on the sphere of R^K embedded in R^d, its own rollouts and
queries, and the estimate (K/μ) · Δ̂ · v; only coordinates in the chosen blocks change.
"""

from __future__ import annotations

import dataclasses

from zopg.algorithms.base import Algorithm
from zopg.algorithms.settings import choice, integer
from zopg.algorithms.zeroth_order import (
    ZO_SEARCH_SPACE,
    ZOConfig,
    estimator_config,
    make_difference_fn,
    make_zo_trainer,
)
from zopg.errors import bad_value
from zopg.estimators import block_zo_gradient, check_block_size


@dataclasses.dataclass(frozen=True)
class ZBCPGConfig(ZOConfig):
    """ZBCPG hyperparameters; the shared ones mean what they mean in ZPGConfig.

    block_size K (coordinates per block), num_blocks P (disjoint blocks per iteration, each with
    N pairs and N·M queries), partition: random K-subsets, or blocks of a fixed partition.
    direction applies inside a block: sphere (the paper's; scale K/μ), gaussian or rademacher.

    Defaults: our choice; 4 blocks of 24 coordinates with 25 pairs each: 1000 queries per
    iteration, 2M over the run, the same total budget as ZPGConfig's defaults.
    """

    num_iterations: int = integer(2000, doc="T")
    num_pairs: int = integer(25, doc="N trajectory pairs per block")
    direction: str = choice("sphere", ("sphere", "gaussian", "rademacher"))
    block_size: int = integer(24, doc="K coordinates per block")
    num_blocks: int = integer(4, doc="P disjoint blocks per iteration")

    def pairs_per_iteration(self) -> int:
        return self.num_pairs * self.num_blocks

    def check(self, problem, prefix):
        super().check(problem, prefix)
        if problem is None:
            return
        check_block_size(self.block_size, problem.dim)
        num_parts = -(-problem.dim // self.block_size)
        most = problem.dim // self.block_size if self.partition == "random" else num_parts
        if self.num_blocks > most:
            raise bad_value(
                prefix + "num_blocks",
                self.num_blocks,
                f"must be <= {most}: {self.partition} blocks of size {self.block_size} in "
                f"d = {problem.dim} coordinates",
            )


def make_trainer(config: ZBCPGConfig, problem):
    est = estimator_config(config, config.block_size)
    difference_fn = make_difference_fn(config, problem)

    def estimate(key, theta, mu):
        return block_zo_gradient(key, theta, difference_fn, est, mu, config.num_blocks)

    return make_zo_trainer(config, problem, estimate)


ALGORITHM = Algorithm(
    "zbcpg",
    ZBCPGConfig,
    make_trainer,
    "block-coordinate ZPG, P disjoint blocks per iteration (science.md §4)",
    assumes="known link (or `link`)",
    search_space=ZO_SEARCH_SPACE,
)
