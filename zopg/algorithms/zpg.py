"""ZPG (science.md §3): perturb θ, compare trajectories by preference, invert the link, step.

Per iteration: one direction v (or N of them), 2N trajectories, N·M human queries, then
ĝ = scale · mean(Δ̂) · v fed to an optax optimizer as ascent.
"""

from __future__ import annotations

import dataclasses

from zopg.algorithms.base import Algorithm
from zopg.algorithms.settings import integer
from zopg.algorithms.zeroth_order import (
    ZO_SEARCH_SPACE,
    ZOConfig,
    estimator_config,
    make_difference_fn,
    make_zo_trainer,
)
from zopg.estimators import zo_gradient


@dataclasses.dataclass(frozen=True)
class ZPGConfig(ZOConfig):
    """ZPG hyperparameters. Defaults are our choice (the paper's constants are not known to us).

    num_iterations T, num_pairs N (trajectory pairs per iteration), num_queries M (votes per
    pair); step_size α and mu are floats or schedules (callables of the iteration index).
    direction/two_sided/spend/block_size/partition: see zopg.estimators.EstimatorConfig.
    difference: preference (the method), return or exact (tests and rate experiments only).
    r_max: trimming bound |r(τ₁) − r(τ₀)| <= r_max before the link is inverted.
    link: the learner's assumed link (None: the oracle's own, i.e. a known link).
    optimizer: sgd (plain gradient ascent with step α) or adam.
    common_random_numbers: each pair's two trajectories share their rollout key; a pair of
    identical trajectories is a free tie (no query, Δ̂ = 0). Off by default; see ZOConfig.

    Defaults: our choice, tuned on the built-in GridWorlds (tabular softmax, BT teacher), where
    the median over seeds closes >90% of the uniform policy's gap to the optimum within 2M
    queries. At a fixed budget, more iterations with fewer pairs did better than the reverse.
    """

    block_size: int | None = integer(None, doc="K for direction = 'block-sphere'")

    def check(self, problem, prefix):
        super().check(problem, prefix)
        if problem is not None:
            estimator_config(self, self.block_size).validate(problem.dim)


def make_trainer(config: ZPGConfig, problem):
    est = estimator_config(config, config.block_size)
    difference_fn = make_difference_fn(config, problem)

    def estimate(key, theta, mu):
        g, delta_hat, spent = zo_gradient(key, theta, difference_fn, est, mu)
        return g, delta_hat, spent, None

    return make_zo_trainer(config, problem, estimate)


ALGORITHM = Algorithm(
    "zpg",
    ZPGConfig,
    make_trainer,
    "zeroth-order policy gradient from preferences, link inverted (science.md §3)",
    assumes="known link (or `link`)",
    search_space=ZO_SEARCH_SPACE,
)
