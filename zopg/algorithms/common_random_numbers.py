"""Common random numbers (CRN) for zeroth-order methods: the two policies of a comparison roll
out from the same keys, and a pair whose two trajectories came out identical is a free tie.

Rollouts sample actions and transitions by inverse CDF from uniforms drawn from the rollout key
(zopg.rollout), so two policies run from one key give coupled trajectories: the same start and
the same choices until a perturbed action probability moves a CDF boundary across that step's
uniform, and from then on whatever the uniforms give in the states they reach. Each trajectory
is still distributed as its own policy's, so E[u(τ₁) − u(τ₀)] = V(θ₁) − V(θ₀) is unchanged while
the variance of the difference falls by 2·Cov(u(τ₁), u(τ₀)).

A pair whose trajectories are identical as the teacher sees them (`same_trajectories`) needs no
human: comparing a trajectory with itself can only give a tie. Such a *free tie* costs no query,
its vote fraction is ½ and its Δ̂ is exactly 0 (the oracle is still called on every pair, as
shapes are static, and its votes on free ties are discarded). Spent.queries counts only the
queries asked.

Budget: a budget-matched run keeps the iterations its budget gives as if every query were spent
(`with_budget` reads the static unit cost), and reports the queries it actually spent in
budget/queries, so a CRN run ends at or below its budget; the saved queries are not reinvested.

Off by default: it is not the papers' estimator (their pairs are independent), it reuses a key
on purpose (everywhere else keys are split, never reused), and what it gains depends on how far
μ moves the policy. Measured by benchmarks/studies/crn_effect.py (uniform policy, BT teacher, ZPG's
defaults): at the default μ 5 the variance of Δ̂ per pair falls by 13% on the cliff and 3% on
open-5x5, with 1% free ties; at μ 0.5 by 65% and 66%, with 53% and 64% free ties; ZSPO's
batches of 4 were never identical at μ 5; short runs at 200k queries and 10 seeds showed no
clear score difference either way. It costs one comparison of the pairs' trajectories per
iteration: no rollouts, draws or queries are added, and the runs took the same time.
"""

from __future__ import annotations

import jax.numpy as jnp

from zopg.rollout import Trajectory, next_observations


def _same_where_valid(a, b, valid, batch_ndim: int):
    """[...]: a and b equal at every valid step; a, b [..., H, *rest], valid [..., H]."""
    equal = (a == b).reshape(*a.shape[: batch_ndim + 1], -1).all(axis=-1)
    return jnp.all(equal | ~valid, axis=-1)


def same_trajectories(traj_a: Trajectory, traj_b: Trajectory):
    """bool [batch]: the two trajectories are identical in everything a teacher's utility reads:
    the same valid steps, and at each of them the same observation, action, reward and next
    observation (the cell the last valid step entered is the next observation after it).

    Actions sampled in an absorbing state are steps like any other (a utility may read them,
    e.g. action switches), so a pair that differs only there is not a free tie.
    """
    batch_ndim = len(traj_a.batch_shape)
    valid = traj_a.valid
    same = jnp.all(traj_a.valid == traj_b.valid, axis=-1)
    for a, b in (
        (traj_a.obs, traj_b.obs),
        (traj_a.action, traj_b.action),
        (traj_a.reward, traj_b.reward),
    ):
        same &= _same_where_valid(a, b, valid, batch_ndim)
    if traj_a.final_obs is not None and traj_b.final_obs is not None:
        same &= _same_where_valid(
            next_observations(traj_a), next_observations(traj_b), valid, batch_ndim
        )
    return same
