"""What ZPG and ZBCPG share: their common settings, value-difference sources and the ZO step.

Both perturb the flat θ, estimate V(θ₁) − V(θ₀) from pairs of trajectories, and feed the
zeroth-order gradient estimate to an optax optimizer as ascent. Pairs, directions and blocks are
vmapped inside one iteration. With common_random_numbers the two trajectories of a pair share
their rollout key (zopg.algorithms.common_random_numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.base import AlgorithmConfig, Problem, Spent, Trainer, unit_cost
from zopg.algorithms.common_random_numbers import same_trajectories
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.algorithms.settings import choice, flag, integer, link_setting, positive, real
from zopg.errors import ConfigError, bad_value
from zopg.estimators import DIRECTIONS, PARTITIONS, SPENDS, EstimatorConfig
from zopg.preferences import WithMistakes, preference_rate, value_difference
from zopg.rollout import rollout_batch

DIFFERENCES = ("preference", "return", "exact")
OPTIMIZERS = ("sgd", "adam")


def schedule_value(value_or_schedule, step):
    """A float, or a schedule (callable of the iteration index, as in optax)."""
    return value_or_schedule(step) if callable(value_or_schedule) else value_or_schedule


@dataclasses.dataclass(frozen=True)
class ZOConfig(AlgorithmConfig):
    """Settings ZPG and ZBCPG share; ZPGConfig and ZBCPGConfig say what they mean there.

    common_random_numbers: the two policies of each pair (θ + μv and θ, or θ ± μv) roll out
    from the same key, so their trajectories are coupled (the same uniforms drive both), and a
    pair whose two trajectories come out identical is a free tie: no query, vote fraction ½,
    Δ̂ = 0. E[Δ̂] is that of coupled pairs (for difference = 'return', exactly V(θ₁) − V(θ₀) as
    without it; through a link inversion, whose bias depends on the distribution of
    u(τ₁) − u(τ₀), close to it), and Var Δ̂ falls by the coupling's covariance. Spent.queries
    counts only the queries asked; iterations stay those the budget gives as if every query
    were spent (zopg.algorithms.common_random_numbers). Off by default: the papers' pairs are
    independent, and the gain depends on μ. It costs one comparison of every pair's
    trajectories per iteration (no extra rollouts or draws). Needs sampled trajectories, so not
    difference = 'exact'.
    """

    num_iterations: int = integer(4000, doc="T")
    num_pairs: int = integer(50, doc="N trajectory pairs per estimate")
    num_queries: int = integer(10, doc="M votes per pair")
    step_size: float | Callable = positive(0.1, schedule=True, doc="α (or a schedule)")
    mu: float | Callable = positive(5.0, schedule=True, doc="smoothing radius μ (or a schedule)")
    direction: str = choice("sphere", DIRECTIONS)
    two_sided: bool = flag(False, doc="θ ± μv instead of θ + μv against θ")
    spend: str = choice("one-direction", SPENDS)
    partition: str = choice("random", PARTITIONS)
    difference: str = choice("preference", DIFFERENCES)
    r_max: float = positive(2.0, doc="trimming bound |r(τ₁) − r(τ₀)| <= r_max")
    link: object | None = link_setting(doc="the learner's assumed link; None: the oracle's")
    mistake_rate: float = real(
        0.0, 0.0, 0.5, high_open=True, doc="invert (1 − 2ε)σ + ε, a teacher flipping votes"
    )
    optimizer: str = choice("sgd", OPTIMIZERS)
    common_random_numbers: bool = flag(
        False, doc="pairs share rollout keys; identical pairs are free ties (no query)"
    )

    def pairs_per_iteration(self) -> int:
        return self.num_pairs

    def check(self, problem, prefix):
        if self.common_random_numbers and self.difference == "exact":
            raise bad_value(
                prefix + "common_random_numbers",
                True,
                "needs sampled trajectories; difference = 'exact' rolls out none",
            )

    def to_data(self) -> dict:
        data = super().to_data()
        if not self.common_random_numbers:
            # Added later: left out at its default, so the run hashes of earlier runs stand.
            del data["common_random_numbers"]
        return data

    def unit_cost(self) -> Spent:
        pairs = self.pairs_per_iteration()
        queries = pairs * self.num_queries if self.difference == "preference" else 0
        return unit_cost(queries=queries, trajectories=2 * pairs)


def estimator_config(config: ZOConfig, block_size=None) -> EstimatorConfig:
    """The estimator part of a ZPG/ZBCPG config."""
    return EstimatorConfig(
        direction=config.direction,
        two_sided=config.two_sided,
        spend=config.spend,
        num_pairs=config.num_pairs,
        block_size=block_size,
        partition=config.partition,
    )


def make_difference_fn(config: ZOConfig, problem: Problem):
    """`(key, theta_1, theta_0, num_pairs) -> (delta [num_pairs], Spent)` for config.difference.

    preference: M votes per pair of fresh trajectories, inverted through the learner's link.
    return:     the true utility difference of the same pairs (no queries; tests and rates).
    exact:      V(theta_1) - V(theta_0) from the tabular model (no samples at all).

    With config.common_random_numbers both sides roll out from one key, and a pair of identical
    trajectories is a free tie: Δ̂ = 0 and no query spent.
    """
    if config.difference == "exact":
        if problem.exact_value is None:
            raise ConfigError(
                f"difference = 'exact' needs a tabular environment; {problem.env!r} has no "
                "tabular_model"
            )

        def exact(key, theta_1, theta_0, num_pairs):
            delta = problem.exact_value(theta_1) - problem.exact_value(theta_0)
            return jnp.full((num_pairs,), delta), Spent.zero()

        return exact

    if config.difference == "preference" and problem.oracle is None:
        raise ConfigError("difference = 'preference' needs an oracle; got oracle = None")
    link = config.link or getattr(problem.oracle, "link", None)
    if config.mistake_rate > 0 and link is not None:
        link = WithMistakes(link, config.mistake_rate)

    common = config.common_random_numbers

    def sampled(key, theta_1, theta_0, num_pairs):
        k1, k0, kq = jax.random.split(key, 3)
        if common:
            # The same key, on purpose: the n-th trajectory of each side runs on the same
            # uniforms (the split above stays, so that without CRN nothing changes).
            k0 = k1
        run = lambda k, th: rollout_batch(  # noqa: E731
            k, problem.policy, problem.unravel(th), problem.env, problem.env_params, num_pairs
        )
        traj_1, traj_0 = run(k1, theta_1), run(k0, theta_0)
        steps = jnp.sum(traj_1.valid) + jnp.sum(traj_0.valid)
        if config.difference == "return":
            delta = problem.utility(traj_1) - problem.utility(traj_0)
            queries = 0
        else:
            feedback = problem.oracle.query(kq, traj_1, traj_0, config.num_queries)
            delta = value_difference(preference_rate(feedback), link, config.r_max)
            queries = feedback.queries
            if common:
                # Free ties: the votes the oracle drew on identical pairs are discarded.
                free = same_trajectories(traj_1, traj_0)
                delta = jnp.where(free, 0.0, delta)
                queries = config.num_queries * jnp.sum(~free)
        return delta, Spent.of(queries, 2 * num_pairs, steps)

    return sampled


@struct.dataclass
class ZOState:
    """What ZPG and ZBCPG carry between iterations.

    theta: the flat policy parameters θ [d] (problem.unravel gives the policy's own).
    opt_state: the optax optimizer's state for θ (sgd or adam).
    """

    theta: jax.Array
    opt_state: optax.OptState


def make_zo_trainer(config: ZOConfig, problem: Problem, estimate) -> Trainer:
    """A Trainer around `estimate(key, theta, mu) -> (g, delta_hat, spent, update_mask)`;
    update_mask is None or a bool vector of the coordinates that may change (ZBCPG's blocks)."""
    make = optax.sgd if config.optimizer == "sgd" else optax.adam
    tx = make(config.step_size)
    # The fraction of pairs that were free ties (a metric only where there can be any).
    free_ties_counted = config.common_random_numbers and config.difference == "preference"
    queries_per_iteration = config.unit_cost().queries

    def init(key):
        theta = problem.initial_theta(key)
        return ZOState(theta=theta, opt_state=tx.init(theta))

    def iterate(state: ZOState, t, key):
        theta, opt_state = state.theta, state.opt_state
        mu = schedule_value(config.mu, t)
        g, delta_hat, spent, update_mask = estimate(key, theta, mu)
        # optax minimises, so ascent feeds -g.
        updates, opt_state = tx.update(-g, opt_state, theta)
        if update_mask is not None:
            # Adam's moments would otherwise move coordinates outside the chosen blocks.
            updates = jnp.where(update_mask, updates, 0.0)
        metrics = {
            "zo/delta_hat": delta_hat,
            "zo/grad_estimate_norm": jnp.linalg.norm(g),
            "schedule/mu": jnp.asarray(mu, jnp.float32),
            "schedule/step_size": jnp.asarray(schedule_value(config.step_size, t), jnp.float32),
        }
        if free_ties_counted:
            metrics["zo/free_ties"] = 1.0 - spent.queries / queries_per_iteration
        return ZOState(optax.apply_updates(theta, updates), opt_state), spent, metrics

    return Trainer(init=init, iterate=iterate, policy_params=lambda s: problem.unravel(s.theta))


# What `zopg tune` may set for the methods built on these settings (see algorithms/search_space.py).
# Votes per pair M: at a fixed query budget N·M per iteration trades against iterations (at
# M = 1 ZPG runs ten times the iterations of M = 10, and the inversion of one vote is link-free
# in sign), so M is tuned like N. It is structural: it shapes the votes and, through the
# budget, sets the scan length. Appended last, so the seeded sampler draws the same values of
# the other dimensions as before it was added.
ZO_SEARCH_SPACE = SearchSpace(
    log_range("step_size", 1e-3, 1.0),
    log_range("mu", 0.1, 10.0),
    one_of("num_pairs", 5, 50),
    one_of("optimizer", "sgd", "adam"),
    one_of("num_queries", 1, 3, 10),
)
