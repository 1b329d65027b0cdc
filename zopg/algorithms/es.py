"""OpenAI-ES (Salimans et al. 2017) on the teacher's true utility (science.md §7): a
reward-access reference (the utility is the return unless the teacher's is another).

Written here rather than taken from evosax: evosax is not a project dependency, and the method
is a few lines over what zopg already has (flat parameter view, vmapped rollouts, optax),
whereas evosax's strategies would need their own state and parameter plumbing and would hide
the exact trajectory and step counts that the budget metrics must report.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.base import Algorithm, AlgorithmConfig, Problem, Spent, Trainer, unit_cost
from zopg.algorithms.exact_pg import OPTIMIZERS, make_optimizer
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.algorithms.settings import choice, integer, positive
from zopg.errors import bad_value
from zopg.rollout import rollout_batch


@dataclasses.dataclass(frozen=True)
class ESConfig(AlgorithmConfig):
    """OpenAI-ES on true returns: antithetic pairs, centred-rank shaping.

    Each iteration evaluates population_size members θ ± σε_i (population_size/2 antithetic
    pairs), each by the mean return of `rollouts_per_member` fresh episodes, shapes the returns
    to centred ranks in [−½, ½] and steps along ĝ = Σ_i (F(θ+σε_i) − F(θ−σε_i)) ε_i / (n σ).
    Defaults are our choice (not tuned against any paper).
    """

    budget_field = None

    num_iterations: int = integer(500)
    population_size: int = integer(64)
    sigma: float = positive(0.5)
    learning_rate: float = positive(0.1)
    optimizer: str = choice("adam", OPTIMIZERS)
    rollouts_per_member: int = integer(1)

    def unit_cost(self) -> Spent:
        return unit_cost(trajectories=self.population_size * self.rollouts_per_member)

    def check(self, problem, prefix):
        if self.population_size % 2:
            raise bad_value(
                prefix + "population_size",
                self.population_size,
                "must be even (antithetic pairs)",
            )


def centred_ranks(x: jax.Array) -> jax.Array:
    """Ranks of x scaled to [−½, ½]; tied values share their average rank (and so their fitness).

    Returns of tabular envs tie often (most episodes score exactly 0); ranks broken by index
    would turn those ties into a spurious signal.
    """
    n = x.shape[0]
    below = jnp.sum(x[None, :] < x[:, None], axis=1)
    equal = jnp.sum(x[None, :] == x[:, None], axis=1)
    rank = below + 0.5 * (equal - 1.0)
    return rank / max(n - 1, 1) - 0.5


@struct.dataclass
class ESState:
    """What OpenAI-ES carries between iterations.

    theta: the flat mean θ [d] of the search distribution, the policy evaluated
        (problem.unravel gives the policy's own parameters).
    opt_state: the optax optimizer's state for θ (sgd or adam).
    """

    theta: jax.Array
    opt_state: optax.OptState


def make_trainer(config: ESConfig, problem: Problem) -> Trainer:
    tx = make_optimizer(config)
    half = config.population_size // 2

    def fitness(key, theta):
        traj = rollout_batch(
            key,
            problem.policy,
            problem.unravel(theta),
            problem.env,
            problem.env_params,
            config.rollouts_per_member,
        )
        return jnp.mean(problem.utility(traj)), jnp.sum(traj.valid)

    def init(key):
        theta = problem.initial_theta(key)
        return ESState(theta=theta, opt_state=tx.init(theta))

    def iterate(state: ESState, t, key):
        del t
        theta, opt_state = state.theta, state.opt_state
        k_noise, k_roll = jax.random.split(key)
        eps = jax.random.normal(k_noise, (half, problem.dim))
        members = jnp.concatenate([theta + config.sigma * eps, theta - config.sigma * eps])
        returns, steps = jax.vmap(fitness)(
            jax.random.split(k_roll, config.population_size), members
        )
        shaped = centred_ranks(returns)
        grad = (shaped[:half] - shaped[half:]) @ eps / (config.population_size * config.sigma)
        updates, opt_state = tx.update(-grad, opt_state, theta)  # optax minimises
        spent = Spent.of(
            trajectories=config.population_size * config.rollouts_per_member,
            env_steps=jnp.sum(steps),
        )
        metrics = {"es/mean_return": jnp.mean(returns), "es/grad_norm": jnp.linalg.norm(grad)}
        return ESState(optax.apply_updates(theta, updates), opt_state), spent, metrics

    return Trainer(init, iterate, lambda state: problem.unravel(state.theta))


# What `zopg tune` may set (the ranges are chosen as zopg/algorithms/search_space.py says).
SEARCH_SPACE = SearchSpace(
    log_range("learning_rate", 1e-3, 0.3),
    log_range("sigma", 0.01, 1.0),
    one_of("population_size", 16, 64),
)

ALGORITHM = Algorithm(
    "es",
    ESConfig,
    make_trainer,
    "OpenAI-ES on true returns",
    reference=True,
    assumes="reward access",
    search_space=SEARCH_SPACE,
)
