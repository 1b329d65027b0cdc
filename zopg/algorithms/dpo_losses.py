"""Trajectory-level DPO (science.md §7): the losses, labels, exact KL and the pair machinery
that the online (dpo_online.py) and offline (dpo_offline.py) trainers share.

The policy's log-ratio to a frozen reference, summed over a trajectory's valid steps, plays the
role of an implicit reward; preferences from the oracle train it through one of four losses.

Choices the issue left open (all ours):
- π_ref is the policy's initial parameters, drawn from the same key split as ZPG's init, so
  training starts at θ = θ_ref; a problem with initial_params fixes both to those instead.
- Labels: `majority` of the M votes (a tie is broken by a fair coin, or the pair is dropped), or
  `soft`: the fraction p̂ of votes for the first trajectory. Any loss ℓ(Δ) of the winner-minus-loser
  margin takes a label p as p·ℓ(Δ_ab) + (1−p)·ℓ(−Δ_ab); with p = p̂ that is exactly the mean over
  the M votes of the hard-label loss, so soft labels mean "every vote is its own example" for all
  four losses. (For `robust` this equals the sigmoid loss with the de-noised label
  (p − ε)/(1 − 2ε), unbounded below when that leaves [0, 1], as the robust loss is per vote.)
  Pairs whose queries were all skipped by the teacher carry no label and get weight 0.
- Held-out evaluation: `num_eval_pairs` pairs from π_ref, drawn once per seed, labelled by the
  noise-free preference of the teacher's utility (problem.utility: no link noise, mistakes or
  myopia). `rewards/accuracies` counts pairs of unequal
  utility only; a zero log-ratio margin counts as half right; NaN when no pair is informative.
  `dpo/label_accuracy` is the same check of the training labels (soft ones count their mass on
  the better trajectory; late online batches are often all ties, hence NaN). Both are outside
  the budget, never shown to the learner.
- KL(π_θ ‖ π_ref) is the exact trajectory KL for tabular envs: Σ_t E_{s_t ∼ d_t^θ} KL(π_θ(·|s) ‖
  π_ref(·|s)) with the exact forward occupancy d_t^θ (transition terms cancel).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.base import AlgorithmConfig, Problem, Spent
from zopg.algorithms.settings import choice, integer, positive, real
from zopg.policies.protocol import trajectory_log_prob
from zopg.rollout import Trajectory, rollout_batch

LOSSES = ("sigmoid", "ipo", "robust", "hinge")
LABELS = ("majority", "soft")
TIES = ("random", "drop")


@dataclasses.dataclass(frozen=True)
class DPOSettings(AlgorithmConfig):
    """What both DPO trainers share. Defaults: our choice (see DPOOnlineConfig).

    loss        sigmoid −log σ(βΔ); ipo (Δ/H − 1/(2β))²; robust [(1−ε)(−log σ(βΔ)) +
                ε log σ(−βΔ)]/(1−2ε) with ε = flip_rate; hinge relu(1 − βΔ). Δ is the winner's
                trajectory log-ratio minus the loser's, H the horizon.
    labels      majority (ties: random coin or drop the pair) or soft (p̂; `ties` unused).
    num_queries M votes per pair.
    learning_rate for optax.adam.
    num_eval_pairs held-out pairs from π_ref for the accuracy metric (outside the budget).
    """

    loss: str = choice("sigmoid", LOSSES)
    beta: float = positive(0.01)
    # ε = ½ makes the robust loss's 1/(1−2ε) infinite: labels carry no information.
    flip_rate: float = real(0.1, 0.0, 0.5, high_open=True, doc="robust loss only")
    labels: str = choice("soft", LABELS)
    ties: str = choice("random", TIES)
    num_queries: int = integer(10)
    num_iterations: int = integer(2000)
    learning_rate: float = positive(0.01)
    num_eval_pairs: int = integer(512)

    def check(self, problem, prefix):
        if problem is not None:
            problem.require_oracle("DPO")


# -- losses --------------------------------------------------------------------------------------


def dpo_loss(loss: str, margin, beta: float, horizon: int = 1, flip_rate: float = 0.0):
    """Per-pair loss ℓ(Δ) for Δ = log-ratio of the winner minus that of the loser."""
    z = beta * margin
    if loss == "sigmoid":
        return jax.nn.softplus(-z)  # −log σ(z)
    if loss == "ipo":
        return (margin / horizon - 1.0 / (2.0 * beta)) ** 2
    if loss == "robust":
        # −log σ(z) = softplus(−z) and log σ(−z) = −softplus(z).
        eps = flip_rate
        return ((1.0 - eps) * jax.nn.softplus(-z) - eps * jax.nn.softplus(z)) / (1.0 - 2.0 * eps)
    if loss == "hinge":
        return jax.nn.relu(1.0 - z)
    raise ValueError(f"unknown DPO loss {loss!r}")


def labelled_loss(loss: str, margin_ab, label, beta: float, horizon: int = 1, flip_rate=0.0):
    """p·ℓ(Δ_ab) + (1−p)·ℓ(−Δ_ab): the loss of a pair (a, b) with P(a preferred) label p.

    For a hard label (p in {0, 1}) it is ℓ(winner − loser); for p = p̂ it is the mean over the
    votes of the hard-label loss.
    """
    forward = dpo_loss(loss, margin_ab, beta, horizon, flip_rate)
    backward = dpo_loss(loss, -margin_ab, beta, horizon, flip_rate)
    return label * forward + (1.0 - label) * backward


# -- trajectories and labels ---------------------------------------------------------------------


@struct.dataclass
class Steps:
    """What DPO keeps of a trajectory: obs, action and the valid mask (rewards are never seen)."""

    obs: jax.Array
    action: jax.Array
    valid: jax.Array

    @classmethod
    def of(cls, traj: Trajectory) -> Steps:
        return cls(obs=traj.obs, action=traj.action, valid=traj.valid)


@struct.dataclass
class HeldOut:
    """The held-out pairs of a seed, from π_ref: `first` and `second` [num_eval_pairs, H] and
    `truth` [num_eval_pairs], the sign of u(first) − u(second) (the noise-free preference)."""

    first: Steps
    second: Steps
    truth: jax.Array


@struct.dataclass
class LabelledPairs:
    """Pairs (first, second) with P(first preferred) `label` and a loss `weight` (0: dropped)."""

    first: Steps
    second: Steps
    label: jax.Array
    weight: jax.Array


def log_ratio(policy, params, ref_params, steps: Steps) -> jax.Array:
    """Σ_t log π_θ(a_t|s_t) − log π_ref(a_t|s_t) over valid steps; transition terms cancel."""
    # One pass per episode where the policy has one (token sequences: H times less work).
    per_step = trajectory_log_prob(policy, params, steps.obs, steps.action) - trajectory_log_prob(
        policy, ref_params, steps.obs, steps.action
    )
    return jnp.sum(jnp.where(steps.valid, per_step, 0.0), axis=-1)


def make_labels(key, feedback, labels: str, ties: str):
    """(label, weight) per pair from M votes; see the module docstring for the rules."""
    answered = feedback.answered
    num_answered = jnp.sum(answered, axis=-1)
    vote_sum = jnp.sum(jnp.where(answered, feedback.votes, 0.0), axis=-1)
    has_vote = num_answered > 0
    if labels == "soft":
        label = jnp.where(has_vote, vote_sum / jnp.maximum(num_answered, 1), 0.5)
        return label, has_vote.astype(jnp.float32)
    # Compare 2·(votes for first) with the number answered: exact in floating point.
    lead = 2.0 * vote_sum - num_answered
    tie = lead == 0
    coin = jax.random.bernoulli(key, 0.5, lead.shape).astype(jnp.float32)
    label = jnp.where(lead > 0, 1.0, jnp.where(lead < 0, 0.0, coin))
    weight = has_vote & ~tie if ties == "drop" else has_vote
    return label, weight.astype(jnp.float32)


# -- exact occupancy and KL ----------------------------------------------------------------------


def occupancy(model, probs: jax.Array) -> jax.Array:
    """d[t, s] = P(s_t = s) under the stationary policy probs[s, a], for t = 0..H−1."""

    def forward(dist, _):
        nxt = jnp.einsum("s,sa,sat->t", dist, probs, model.transition)
        return nxt, dist

    _, dists = jax.lax.scan(forward, model.start, None, length=model.horizon)
    return dists


def trajectory_kl(model, log_probs: jax.Array, ref_log_probs: jax.Array) -> jax.Array:
    """KL(P_θ(τ) ‖ P_ref(τ)) = Σ_t E_{s_t ∼ d_t^θ} KL(π_θ(·|s_t) ‖ π_ref(·|s_t)), exactly."""
    probs = jnp.exp(log_probs)
    per_state = jnp.sum(probs * (log_probs - ref_log_probs), axis=-1)
    return jnp.sum(occupancy(model, probs) @ per_state)


# Accuracies over informative pairs: NaN when a batch (or the held-out set) has none. Declared
# to the runner (Algorithm.nan_when_undefined), so the report does not take them for divergence.
NAN_WHEN_UNDEFINED = ("dpo/label_accuracy", "rewards/accuracies")


def mean_where(values, mask):
    """Mean of values where mask holds; NaN when it holds nowhere (undefined, not 0 or ½)."""
    count = jnp.sum(mask)
    return jnp.where(
        count > 0, jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1), jnp.nan
    )


# -- what both trainers do -----------------------------------------------------------------------


# The fields of the DPO states are in alphabetical order: these states were dicts, whose leaves
# JAX flattens in sorted key order, and checkpoints store leaves by position, so a checkpoint
# written before they were named still resumes into the same fields.
@struct.dataclass
class DPOState:
    """What online DPO carries between iterations (and what every DPO trainer starts from).

    eval_set: the seed's held-out pairs from π_ref (outside the budget; diagnostics only).
    opt_state: Adam's state for θ.
    ref_theta: the flat reference parameters θ_ref [d], frozen (θ_0 = θ_ref).
    theta: the flat policy parameters θ [d] (problem.unravel gives the policy's own).
    """

    eval_set: HeldOut
    opt_state: optax.OptState
    ref_theta: jax.Array
    theta: jax.Array


@dataclasses.dataclass(frozen=True)
class DPOCore:
    """The pieces both trainers are built from, for one (settings, problem).

    init(key) -> DPOState: θ_0 = θ_ref and the held-out pairs.
    collect(key, theta, n) -> (LabelledPairs, Spent, label accuracy): n fresh pairs from θ,
        each labelled by M oracle queries.
    apply(theta, opt_state, ref_theta, pairs) -> (theta, opt_state, loss, reward margin): one
        Adam step on the pairs' mean loss.
    diagnostics(state) -> held-out accuracy and exact KL of θ (outside the budget; the trainer's
        diagnostics, so a runner computes them only at the iterations it logs). It reads the
        state's theta, ref_theta and eval_set, which every DPO state has.
    """

    init: object
    collect: object
    apply: object
    diagnostics: object


def make_core(config: DPOSettings, problem: Problem) -> DPOCore:
    policy, env, env_params, oracle = (
        problem.policy,
        problem.env,
        problem.env_params,
        problem.oracle,
    )
    horizon = problem.horizon
    model = env.tabular_model(env_params) if hasattr(env, "tabular_model") else None
    states = jnp.arange(env.num_states(env_params)) if model is not None else None
    tx = optax.adam(config.learning_rate)

    def loss_terms(theta, ref_theta, pairs: LabelledPairs):
        params, ref_params = problem.unravel(theta), problem.unravel(ref_theta)
        margin = log_ratio(policy, params, ref_params, pairs.first) - log_ratio(
            policy, params, ref_params, pairs.second
        )
        per_pair = labelled_loss(
            config.loss, margin, pairs.label, config.beta, horizon, config.flip_rate
        )
        total = jnp.maximum(jnp.sum(pairs.weight), 1.0)
        loss = jnp.sum(pairs.weight * per_pair) / total
        # Implicit-reward margin of the preferred trajectory: (2p − 1)·βΔ_ab is β(winner − loser)
        # for hard labels and its expectation over the votes for soft ones.
        reward_margin = jnp.sum(pairs.weight * (2.0 * pairs.label - 1.0) * margin) / total
        return loss, config.beta * reward_margin

    loss_and_grad = jax.value_and_grad(loss_terms, has_aux=True)

    def sample_pairs(key, theta, num_pairs):
        k_a, k_b = jax.random.split(key)
        run = lambda k: rollout_batch(  # noqa: E731
            k, policy, problem.unravel(theta), env, env_params, num_pairs
        )
        traj_a, traj_b = run(k_a), run(k_b)
        return traj_a, traj_b, jnp.sum(traj_a.valid) + jnp.sum(traj_b.valid)

    def collect(key, theta, num_pairs):
        k_roll, k_query, k_tie = jax.random.split(key, 3)
        traj_a, traj_b, steps = sample_pairs(k_roll, theta, num_pairs)
        feedback = oracle.query(k_query, traj_a, traj_b, config.num_queries)
        label, weight = make_labels(k_tie, feedback, config.labels, config.ties)
        pairs = LabelledPairs(Steps.of(traj_a), Steps.of(traj_b), label, weight)
        # Outside the budget: how often the label agrees with the noise-free preference.
        u_a, u_b = problem.utility(traj_a), problem.utility(traj_b)
        informative = (u_a != u_b) & (weight > 0)
        agree = jnp.where(u_a > u_b, label, 1.0 - label)
        spent = Spent.of(feedback.queries, 2 * num_pairs, steps)
        return pairs, spent, mean_where(agree, informative)

    def held_out(key, ref_theta):
        traj_a, traj_b, _ = sample_pairs(key, ref_theta, config.num_eval_pairs)
        u_a, u_b = problem.utility(traj_a), problem.utility(traj_b)
        return HeldOut(Steps.of(traj_a), Steps.of(traj_b), jnp.sign(u_a - u_b))

    def diagnostics(state):
        theta, ref_theta = state.theta, state.ref_theta
        first, second, truth = state.eval_set.first, state.eval_set.second, state.eval_set.truth
        params, ref_params = problem.unravel(theta), problem.unravel(ref_theta)
        margin = log_ratio(policy, params, ref_params, first) - log_ratio(
            policy, params, ref_params, second
        )
        right = jnp.where(jnp.sign(margin) == truth, 1.0, jnp.where(margin == 0, 0.5, 0.0))
        metrics = {"rewards/accuracies": mean_where(right, truth != 0)}
        if model is not None:
            log_probs = policy.log_probs(params, states)
            ref_log_probs = policy.log_probs(ref_params, states)
            metrics["dpo/kl"] = trajectory_kl(model, log_probs, ref_log_probs)
        return metrics

    def apply(theta, opt_state, ref_theta, pairs):
        (loss, reward_margin), grad = loss_and_grad(theta, ref_theta, pairs)
        updates, opt_state = tx.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss, reward_margin

    def init(key):
        """θ_0 = θ_ref and the held-out set; the same init key as ZPG's, so seeds pair up."""
        ref_theta = problem.initial_theta(key)
        # policy.init consumes `key` itself; fold_in derives independent streams for the rest.
        eval_set = held_out(jax.random.fold_in(key, 1), ref_theta)
        return DPOState(
            eval_set=eval_set, opt_state=tx.init(ref_theta), ref_theta=ref_theta, theta=ref_theta
        )

    return DPOCore(init=init, collect=collect, apply=apply, diagnostics=diagnostics)
