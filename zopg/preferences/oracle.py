"""Simulated human oracles: turn pairs of trajectories (or batches) into votes and count queries."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from zopg.errors import INT32_MAX, bad_value
from zopg.preferences.links import Link
from zopg.preferences.teacher import Teacher
from zopg.preferences.utilities import HiddenContext, myopic_return
from zopg.rollout import Trajectory, masked_return


@struct.dataclass
class Feedback:
    """Votes on M queries per compared pair; leading axes follow the pairs' batch shape.

    votes     [..., M] float  1: first preferred, 0: second preferred, ½: tie (or skipped)
    answered  [..., M] bool   False where the teacher skipped the query
    queries   int32 scalar    queries spent by the call, skipped ones included (pairs × M)
    """

    votes: jax.Array
    answered: jax.Array
    queries: jax.Array


def _checked_num_queries(num_queries: object) -> int:
    allowed = "must be a static Python int >= 1 (mark it static under jit)"
    if isinstance(num_queries, bool):
        raise bad_value("num_queries", num_queries, allowed)
    try:
        count = operator.index(num_queries)  # type: ignore[arg-type]
    except TypeError:
        # Floats and traced values land here; the vote array's shape needs a concrete int.
        raise bad_value("num_queries", num_queries, allowed) from None
    if count < 1:
        raise bad_value("num_queries", num_queries, allowed)
    return count


def preference_rate(feedback: Feedback) -> jax.Array:
    """Mean of the answered votes over the last axis; ½ (no information) where none was answered."""
    answered = feedback.answered
    num_answered = jnp.sum(answered, axis=-1)
    vote_sum = jnp.sum(jnp.where(answered, feedback.votes, 0.0), axis=-1)
    return jnp.where(num_answered > 0, vote_sum / jnp.maximum(num_answered, 1), 0.5)


@dataclasses.dataclass(frozen=True)
class Oracle:
    """A simulated human: votes P(first ≻ second) = σ(β·Δ) on the teacher's utilities, with flaws.

    `utility` maps a Trajectory to one value per trajectory (shape `traj.batch_shape`); by default
    it is the masked return, weighted by the teacher's myopia. Oracles are frozen and hashable, so
    `jax.jit(Oracle.query, static_argnums=(0, 4))` compiles once per oracle and query count.

    A hidden-context utility (zopg.preferences.utilities.HiddenContext) makes the teacher a
    population: each query's annotator type k is drawn afresh with probability w_k, so a vote is
    1 with probability Σ_k w_k σ(β Δ_k), Δ_k the difference of the pair's (or the batches' mean)
    u_k. Ties and skips are not defined for it (which type would judge them?) and are refused.
    """

    link: Link
    teacher: Teacher = dataclasses.field(default_factory=Teacher)
    utility: Callable[[Trajectory], jax.Array] | None = None

    def __post_init__(self) -> None:
        if not (callable(getattr(self.link, "prob", None)) and hasattr(self.link, "inverse")):
            raise bad_value("oracle.link", self.link, "must be a link (see make_link)")
        try:
            hash(self.link)
        except TypeError:
            raise bad_value(
                "oracle.link", self.link, "must be hashable (frozen) to be a static jit argument"
            ) from None
        if not isinstance(self.teacher, Teacher):
            raise bad_value("oracle.teacher", self.teacher, "must be a Teacher")
        if self.utility is not None and not callable(self.utility):
            raise bad_value("oracle.utility", self.utility, "must be callable or None")
        if self.utility is not None and self.teacher.is_myopic:
            # Myopia is defined on per-step rewards; a custom utility sees the whole trajectory,
            # so applying both would be ambiguous.
            raise bad_value(
                "oracle.utility",
                self.utility,
                f"cannot be combined with teacher.myopia = {self.teacher.myopia} < 1; "
                "apply any discounting inside the custom utility",
            )
        if self.hidden_context is not None and (
            self.teacher.equal_threshold > 0.0 or self.teacher.skip_threshold > -math.inf
        ):
            raise bad_value(
                "oracle.teacher",
                self.teacher,
                "ties (equal_threshold) and skips (skip_threshold) are not defined for a "
                "hidden-context teacher",
            )

    @property
    def hidden_context(self) -> HiddenContext | None:
        """The population of annotator types, when the utility is one."""
        return self.utility if isinstance(self.utility, HiddenContext) else None

    def trajectory_utility(self, traj: Trajectory) -> jax.Array:
        """The teacher's utility of each trajectory, shape `traj.batch_shape`."""
        if self.utility is not None:
            utility = jnp.asarray(self.utility(traj), dtype=float)
            if utility.shape != traj.batch_shape:
                raise bad_value(
                    "oracle.utility",
                    self.utility,
                    f"must return one value per trajectory, shape {traj.batch_shape}; "
                    f"got shape {utility.shape}",
                )
            return utility
        reward = jnp.asarray(traj.reward, dtype=float)
        if not self.teacher.is_myopic:
            return masked_return(traj.replace(reward=reward))
        # The step k steps before the trajectory's last valid step weighs γ^k: the teacher
        # remembers the end best, also of an episode that terminated early.
        return myopic_return(traj, self.teacher.myopia)

    def votes_from_utilities(
        self,
        key: jax.Array,
        utility_a: jax.typing.ArrayLike,
        utility_b: jax.typing.ArrayLike,
        num_queries: int,
    ) -> Feedback:
        """M independent votes on "a ≻ b" for each pair of (broadcast) utilities."""
        count = _checked_num_queries(num_queries)
        utility_a = jnp.asarray(utility_a, dtype=float)
        utility_b = jnp.asarray(utility_b, dtype=float)
        try:
            utility_a, utility_b = jnp.broadcast_arrays(utility_a, utility_b)
        except ValueError:
            raise bad_value(
                "utility_b shape",
                utility_b.shape,
                f"must broadcast with utility_a's shape {utility_a.shape}",
            ) from None
        pair_shape = utility_a.shape
        total_queries = count * math.prod(pair_shape)
        if total_queries > INT32_MAX:
            raise bad_value(
                "num_queries",
                num_queries,
                f"pairs × num_queries must fit in int32; got {total_queries}",
            )

        teacher = self.teacher
        difference = utility_a - utility_b
        p_first = self.link.prob(teacher.rationality * difference)
        votes = self._draw_votes(key, p_first, count)

        # The teacher's settings are static, so inactive imperfections add nothing to the graph.
        if teacher.equal_threshold > 0.0:
            tie = jnp.abs(difference) < teacher.equal_threshold
            votes = jnp.where(tie[..., None], 0.5, votes)
        if teacher.skip_threshold > -math.inf:
            skipped = (utility_a < teacher.skip_threshold) & (utility_b < teacher.skip_threshold)
            answered = jnp.broadcast_to(~skipped[..., None], votes.shape)
            # A neutral ½ keeps a naive mean of votes unbiased by skipped queries.
            votes = jnp.where(answered, votes, 0.5)
        else:
            answered = jnp.ones(votes.shape, dtype=bool)
        return Feedback(votes=votes, answered=answered, queries=jnp.int32(total_queries))

    def _draw_votes(self, key, p_first: jax.Array, count: int) -> jax.Array:
        """count Bernoulli votes per pair, [..., count], with the teacher's mistakes applied."""
        mistake = self.teacher.mistake
        if mistake > 0.0:
            # Flipping a Bernoulli(p) vote with probability ε is a Bernoulli((1−ε)p + ε(1−p)) vote;
            # drawing that directly costs one uniform per query instead of two.
            p_first = (1.0 - mistake) * p_first + mistake * (1.0 - p_first)
        uniforms = jax.random.uniform(key, (*p_first.shape, count), dtype=p_first.dtype)
        return (uniforms < p_first[..., None]).astype(p_first.dtype)

    def mixture_probability(self, types_a, types_b) -> jax.Array:
        """P(a ≻ b) = Σ_k w_k σ(β (u_k(a) − u_k(b))) from per-type utilities [..., K]."""
        weights = jnp.asarray(self.hidden_context.weights, float)
        difference = jnp.asarray(types_a, float) - jnp.asarray(types_b, float)
        return self.link.prob(self.teacher.rationality * difference) @ weights

    def _hidden_context_votes(self, key, types_a, types_b, num_queries) -> Feedback:
        count = _checked_num_queries(num_queries)
        p_first = self.mixture_probability(types_a, types_b)
        total_queries = count * math.prod(p_first.shape)
        if total_queries > INT32_MAX:
            raise bad_value(
                "num_queries",
                num_queries,
                f"pairs × num_queries must fit in int32; got {total_queries}",
            )
        votes = self._draw_votes(key, p_first, count)
        answered = jnp.ones(votes.shape, dtype=bool)
        return Feedback(votes=votes, answered=answered, queries=jnp.int32(total_queries))

    def query(
        self, key: jax.Array, traj_a: Trajectory, traj_b: Trajectory, num_queries: int
    ) -> Feedback:
        """M votes on "traj_a ≻ traj_b" for each pair; both must have the same batch shape."""
        if traj_a.batch_shape != traj_b.batch_shape:
            raise bad_value(
                "traj_b batch shape",
                traj_b.batch_shape,
                f"must equal traj_a's batch shape {traj_a.batch_shape}",
            )
        population = self.hidden_context
        if population is not None:
            types_a, types_b = population.utilities(traj_a), population.utilities(traj_b)
            return self._hidden_context_votes(key, types_a, types_b, num_queries)
        return self.votes_from_utilities(
            key, self.trajectory_utility(traj_a), self.trajectory_utility(traj_b), num_queries
        )

    def query_batches(
        self, key: jax.Array, group_a: Trajectory, group_b: Trajectory, num_queries: int
    ) -> Feedback:
        """M votes on "mean utility of group_a ≻ mean of group_b" (ZSPO's batch comparisons).

        Each group holds D trajectories on axis −2 of its arrays (the batch axis just before time);
        the leading axes before it must match, and the two groups may differ in D.
        """
        for field, group in (("group_a", group_a), ("group_b", group_b)):
            if not group.batch_shape:
                raise bad_value(
                    f"{field} batch shape",
                    group.batch_shape,
                    "needs an axis of D trajectories just before the time axis",
                )
        if group_a.batch_shape[:-1] != group_b.batch_shape[:-1]:
            raise bad_value(
                "group_b leading batch shape",
                group_b.batch_shape[:-1],
                f"must equal group_a's {group_a.batch_shape[:-1]}",
            )
        population = self.hidden_context
        if population is not None:
            # Each type compares the batches' means of its own utility.
            mean_a = jnp.mean(population.utilities(group_a), axis=-2)
            mean_b = jnp.mean(population.utilities(group_b), axis=-2)
            return self._hidden_context_votes(key, mean_a, mean_b, num_queries)
        mean_a = jnp.mean(self.trajectory_utility(group_a), axis=-1)
        mean_b = jnp.mean(self.trajectory_utility(group_b), axis=-1)
        return self.votes_from_utilities(key, mean_a, mean_b, num_queries)
