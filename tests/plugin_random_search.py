"""A minimal algorithm defined outside zopg: random search over θ from preferences.

Each iteration perturbs θ along a random Gaussian direction, shows the human one trajectory of
each policy M times, and moves to the perturbed θ when most votes prefer it. The README's
"Add an algorithm" section shows this file; tests/test_contract.py runs it from a TOML file.
"""

import dataclasses

import jax
import jax.numpy as jnp

from zopg.algorithms import Algorithm, AlgorithmConfig, Spent, Trainer
from zopg.algorithms.base import unit_cost
from zopg.algorithms.settings import integer, positive
from zopg.preferences import preference_rate
from zopg.rollout import rollout_batch


@dataclasses.dataclass(frozen=True)
class RandomSearchConfig(AlgorithmConfig):
    num_iterations: int = integer(100)  # the budget sets this field (budget_field's default)
    num_queries: int = integer(5)  # M votes on the one pair of each iteration
    sigma: float = positive(0.5)  # perturbation size

    def unit_cost(self) -> Spent:  # one iteration: M queries on 2 trajectories
        return unit_cost(queries=self.num_queries, trajectories=2)


def make_trainer(config: RandomSearchConfig, problem) -> Trainer:
    def rollout(key, theta):
        params = problem.unravel(theta)
        return rollout_batch(key, problem.policy, params, problem.env, problem.env_params, 1)

    def iterate(theta, t, key):
        k_dir, k_new, k_old, k_vote = jax.random.split(key, 4)
        candidate = theta + config.sigma * jax.random.normal(k_dir, theta.shape)
        new, old = rollout(k_new, candidate), rollout(k_old, theta)
        feedback = problem.oracle.query(k_vote, new, old, config.num_queries)
        rate = preference_rate(feedback)[0]
        theta = jnp.where(rate > 0.5, candidate, theta)
        spent = Spent.of(feedback.queries, 2, jnp.sum(new.valid) + jnp.sum(old.valid))
        return theta, spent, {"search/preference_rate": rate}

    return Trainer(problem.initial_theta, iterate, problem.unravel)


ALGORITHM = Algorithm(
    "random-search",
    RandomSearchConfig,
    make_trainer,
    "random search over θ, keeping a perturbation the human prefers",
    assumes="nothing (majority vote)",
)
