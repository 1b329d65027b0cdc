"""Trajectory-level DPO (algorithms.md §7): offline on pairs from π_ref, or online on fresh pairs.

The policy's log-ratio to a frozen reference, summed over a trajectory's valid steps, plays the
role of an implicit reward; preferences from the oracle train it through one of four losses.

Choices the issue left open (all ours):
- π_ref is the policy's initial parameters, drawn from the same key split as ZPG's init, so
  training starts at θ = θ_ref; `make_train(..., reference_params=p)` fixes both to `p` instead.
- Labels: `majority` of the M votes (a tie is broken by a fair coin, or the pair is dropped), or
  `soft`: the fraction p̂ of votes for the first trajectory. Any loss ℓ(Δ) of the winner-minus-loser
  margin takes a label p as p·ℓ(Δ_ab) + (1−p)·ℓ(−Δ_ab); with p = p̂ that is exactly the mean over
  the M votes of the hard-label loss, so soft labels mean "every vote is its own example" for all
  four losses. (For `robust` this equals the sigmoid loss with the de-noised label
  (p − ε)/(1 − 2ε), unbounded below when that leaves [0, 1], as the robust loss is per vote.)
  Pairs whose queries were all skipped by the teacher carry no label and get weight 0.
- Held-out evaluation: `num_eval_pairs` pairs from π_ref, drawn once per seed, labelled by the
  noise-free preference of the true utility (the oracle's custom utility if it has one, else the
  return; no link noise, mistakes or myopia). Accuracy counts pairs of unequal utility only; a
  zero log-ratio margin counts as half right; NaN when no pair is informative. `dpo/label_accuracy`
  is the same check of the training labels (soft ones count their mass on the better trajectory;
  late online batches are often all ties, hence NaN). Both are outside the budget, never shown
  to the learner.
- KL(π_θ ‖ π_ref) is the exact trajectory KL for tabular envs: Σ_t E_{s_t ∼ d_t^θ} KL(π_θ(·|s) ‖
  π_ref(·|s)) with the exact forward occupancy d_t^θ (transition terms cancel).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.trainer import Trainer
from zopg.algorithms.zeroth_order import INT32_MAX, Problem
from zopg.errors import ConfigError, bad_value, check_range, unknown_name
from zopg.estimators import Spent
from zopg.policies import flat_view
from zopg.rollout import Trajectory, masked_return, rollout_batch

MODES = ("online", "offline")
LOSSES = ("sigmoid", "ipo", "robust", "hinge")
LABELS = ("majority", "soft")
TIES = ("random", "drop")


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """DPO hyperparameters; the defaults are our choice (see the comment below).

    mode        online: each iteration draws `num_pairs` fresh pairs from the current policy,
                labels them with M queries each and takes `updates_per_iteration` full-batch
                steps on them. offline: `dataset_size` pairs from π_ref are labelled once (all
                queries spent before iteration 0), then each iteration is one step on a
                minibatch of `minibatch_size`, reshuffled every epoch (dataset_size //
                minibatch_size steps; a remainder is left out of that epoch).
    loss        sigmoid −log σ(βΔ); ipo (Δ/H − 1/(2β))²; robust [(1−ε)(−log σ(βΔ)) +
                ε log σ(−βΔ)]/(1−2ε) with ε = flip_rate; hinge relu(1 − βΔ). Δ is the winner's
                trajectory log-ratio minus the loser's, H the horizon.
    labels      majority (ties: random coin or drop the pair) or soft (p̂; `ties` unused).
    num_queries M votes per pair.
    learning_rate for optax.adam.
    num_eval_pairs held-out pairs from π_ref for the accuracy metric (outside the budget).
    """

    # Defaults: our choice, measured on the built-in GridWorlds (tabular softmax, BT teacher):
    # both modes spend exactly 2M queries. β = 0.01 beat 0.1 and 0.3 clearly (the KL-regularised
    # optimum stays close to the uniform π_ref at large β); M = 10 with 100 pairs per iteration
    # did as well online as M = 1 with 1000 pairs, at a tenth of the rollouts. Adam at 0.05 was
    # marginally faster online, but one offline seed in 8 on open-5x5 peaked and then collapsed
    # to 0.36 of the gap (likelihood of a good action pushed down); at 0.01 none did.
    mode: str = "online"
    loss: str = "sigmoid"
    beta: float = 0.01
    flip_rate: float = 0.1  # robust loss only
    labels: str = "soft"
    ties: str = "random"
    num_queries: int = 10
    num_iterations: int = 2000
    num_pairs: int = 100  # online only
    updates_per_iteration: int = 1  # online only
    dataset_size: int = 200_000  # offline only
    minibatch_size: int = 1000  # offline only
    learning_rate: float = 0.01
    num_eval_pairs: int = 512

    def validate(self) -> DPOConfig:
        for field, allowed in (
            ("mode", MODES),
            ("loss", LOSSES),
            ("labels", LABELS),
            ("ties", TIES),
        ):
            if getattr(self, field) not in allowed:
                raise unknown_name(field, getattr(self, field), allowed)
        for field in (
            "num_queries",
            "num_iterations",
            "num_pairs",
            "updates_per_iteration",
            "dataset_size",
            "minibatch_size",
            "num_eval_pairs",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad_value(field, value, "must be an integer >= 1")
        for field in ("beta", "learning_rate"):
            value = _as_float(field, getattr(self, field))
            check_range(field, value, 0.0, math.inf, low_open=True, high_open=True)
        # ε = ½ makes the robust loss's 1/(1−2ε) infinite: labels carry no information.
        check_range("flip_rate", _as_float("flip_rate", self.flip_rate), 0.0, 0.5, high_open=True)
        if self.mode == "offline" and self.minibatch_size > self.dataset_size:
            raise bad_value(
                "minibatch_size",
                self.minibatch_size,
                f"must be <= dataset_size = {self.dataset_size} in offline mode",
            )
        return self


def _as_float(field: str, value) -> float:
    if isinstance(value, bool):
        raise bad_value(field, value, "must be a real number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise bad_value(field, value, "must be a real number") from None


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
    raise unknown_name("loss", loss, LOSSES)


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
class LabelledPairs:
    """Pairs (first, second) with P(first preferred) `label` and a loss `weight` (0: dropped)."""

    first: Steps
    second: Steps
    label: jax.Array
    weight: jax.Array


def log_ratio(policy, params, ref_params, steps: Steps) -> jax.Array:
    """Σ_t log π_θ(a_t|s_t) − log π_ref(a_t|s_t) over valid steps; transition terms cancel."""
    per_step = policy.log_prob(params, steps.obs, steps.action) - policy.log_prob(
        ref_params, steps.obs, steps.action
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


# -- training ------------------------------------------------------------------------------------


def true_utility(oracle, traj: Trajectory) -> jax.Array:
    """The human's noise-free utility: the oracle's custom utility, else the return."""
    if getattr(oracle, "utility", None) is not None:
        return oracle.trajectory_utility(traj)
    return masked_return(traj)


def _check_budget(config: DPOConfig, horizon: int) -> None:
    """Cumulative counters are int32; refuse runs that would overflow them."""
    online = config.mode == "online"
    pairs = config.num_iterations * config.num_pairs if online else config.dataset_size
    worst = pairs * max(config.num_queries, 2 * horizon)
    if worst > INT32_MAX:
        field = "num_iterations" if online else "dataset_size"
        raise bad_value(
            field,
            getattr(config, field),
            f"budget counters would exceed int32 ({worst:,} > {INT32_MAX:,}); split the run",
        )


def make_trainer(
    config: DPOConfig, env, policy, oracle, env_params=None, reference_params=None
) -> Trainer:
    """The chunkable Trainer (see zopg.algorithms.trainer); make_train wraps it."""
    config.validate()
    if oracle is None:
        raise ConfigError("DPO learns from preferences and needs an oracle; got oracle = None")
    problem = Problem.build(env, policy, oracle, env_params)
    env_params = problem.env_params
    horizon = env.horizon(env_params)
    _check_budget(config, horizon)
    model = env.tabular_model(env_params) if hasattr(env, "tabular_model") else None
    states = jnp.arange(env.num_states(env_params)) if model is not None else None
    fixed_ref = None if reference_params is None else flat_view(reference_params)[0]
    if fixed_ref is not None and fixed_ref.shape != (problem.dim,):
        raise bad_value(
            "reference_params",
            f"{fixed_ref.shape[0]} parameters",
            f"must have the policy's structure ({problem.dim} parameters)",
        )
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
        steps = jnp.sum(traj_a.valid) + jnp.sum(traj_b.valid)
        spent = Spent(
            queries=jnp.int32(0),
            trajectories=jnp.int32(2 * num_pairs),
            env_steps=steps.astype(jnp.int32),
        )
        return traj_a, traj_b, spent

    def collect(key, theta, num_pairs):
        """Fresh pairs from theta, each labelled by M oracle queries."""
        k_roll, k_query, k_tie = jax.random.split(key, 3)
        traj_a, traj_b, spent = sample_pairs(k_roll, theta, num_pairs)
        feedback = oracle.query(k_query, traj_a, traj_b, config.num_queries)
        label, weight = make_labels(k_tie, feedback, config.labels, config.ties)
        pairs = LabelledPairs(Steps.of(traj_a), Steps.of(traj_b), label, weight)
        # Outside the budget: how often the label agrees with the noise-free preference.
        u_a, u_b = true_utility(oracle, traj_a), true_utility(oracle, traj_b)
        informative = (u_a != u_b) & (weight > 0)
        agree = jnp.where(u_a > u_b, label, 1.0 - label)
        label_accuracy = _mean_where(agree, informative)
        spent = spent.replace(queries=jnp.asarray(feedback.queries, jnp.int32))
        return pairs, spent, label_accuracy

    def held_out(key, ref_theta):
        traj_a, traj_b, _ = sample_pairs(key, ref_theta, config.num_eval_pairs)
        u_a, u_b = true_utility(oracle, traj_a), true_utility(oracle, traj_b)
        return Steps.of(traj_a), Steps.of(traj_b), jnp.sign(u_a - u_b)

    def evaluate(theta, ref_theta, eval_set):
        """Metrics of the policy after an update; outside the budget, never seen by the learner."""
        first, second, truth = eval_set
        params, ref_params = problem.unravel(theta), problem.unravel(ref_theta)
        margin = log_ratio(policy, params, ref_params, first) - log_ratio(
            policy, params, ref_params, second
        )
        right = jnp.where(jnp.sign(margin) == truth, 1.0, jnp.where(margin == 0, 0.5, 0.0))
        informative = truth != 0
        accuracy = _mean_where(right, informative)
        metrics = {"dpo/eval_accuracy": accuracy}
        if model is not None:
            log_probs = policy.log_probs(params, states)
            ref_log_probs = policy.log_probs(ref_params, states)
            metrics["dpo/kl"] = trajectory_kl(model, log_probs, ref_log_probs)
            metrics["exact/value"] = problem.exact_value(theta)
        return metrics

    def apply(theta, opt_state, ref_theta, pairs):
        (loss, reward_margin), grad = loss_and_grad(theta, ref_theta, pairs)
        updates, opt_state = tx.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, loss, reward_margin

    def init_common(key):
        """θ_0 = θ_ref and the held-out set; the same init key as ZPG's, so seeds pair up."""
        ref_theta = flat_view(policy.init(key))[0] if fixed_ref is None else fixed_ref
        # policy.init consumes `key` itself; fold_in derives independent streams for the rest.
        eval_set = held_out(jax.random.fold_in(key, 1), ref_theta)
        return {
            "theta": ref_theta,
            "opt_state": tx.init(ref_theta),
            "ref_theta": ref_theta,
            "eval_set": eval_set,
        }

    def init_online(key):
        return {**init_common(key), "spent": Spent.zero()}

    def iterate_online(state, t, key):
        del t  # fresh pairs each iteration; nothing depends on the index itself
        theta, ref_theta = state["theta"], state["ref_theta"]
        pairs, spent, label_accuracy = collect(key, theta, config.num_pairs)

        def _gradient_step(carry, _):
            theta, opt_state, loss, reward_margin = apply(*carry, ref_theta, pairs)
            return (theta, opt_state), (loss, reward_margin)

        (theta, opt_state), (loss, reward_margin) = jax.lax.scan(
            _gradient_step,
            (theta, state["opt_state"]),
            None,
            length=config.updates_per_iteration,
        )
        spent = jax.tree_util.tree_map(jnp.add, state["spent"], spent)
        metrics = {
            **_budget(spent),
            "losses/dpo": loss[0],  # on the fresh batch, before its first update
            "dpo/reward_margin": reward_margin[0],
            "dpo/label_accuracy": label_accuracy,
            **evaluate(theta, ref_theta, state["eval_set"]),
        }
        return {**state, "theta": theta, "opt_state": opt_state, "spent": spent}, metrics

    steps_per_epoch = config.dataset_size // config.minibatch_size

    def shuffle(key, epoch):
        return jax.random.permutation(jax.random.fold_in(key, epoch), config.dataset_size)

    def init_offline(key):
        """Label the whole dataset now: every query is spent before iteration 0."""
        state = init_common(key)
        data_key = jax.random.fold_in(key, 2)
        dataset, spent, label_accuracy = collect(data_key, state["ref_theta"], config.dataset_size)
        shuffle_key = jax.random.fold_in(key, 3)
        return {
            **state,
            "dataset": dataset,
            "spent": spent,
            "label_accuracy": label_accuracy,
            "shuffle_key": shuffle_key,
            "order": jnp.arange(config.dataset_size),
        }

    def iterate_offline(state, t, key):
        del key  # the epoch's permutation is the only randomness
        epoch, within = t // steps_per_epoch, t % steps_per_epoch
        # A new permutation at the start of each epoch only: one sort per step would cost more
        # than the gradient step. The order is carried, so chunked runs resume mid-epoch.
        order = jax.lax.cond(
            within == 0,
            lambda: shuffle(state["shuffle_key"], epoch),
            lambda: state["order"],
        )
        index = jax.lax.dynamic_slice(
            order, (within * config.minibatch_size,), (config.minibatch_size,)
        )
        batch = jax.tree_util.tree_map(lambda x: x[index], state["dataset"])
        theta, opt_state, loss, reward_margin = apply(
            state["theta"], state["opt_state"], state["ref_theta"], batch
        )
        metrics = {
            **_budget(state["spent"]),
            "losses/dpo": loss,
            "dpo/reward_margin": reward_margin,
            "dpo/label_accuracy": state["label_accuracy"],
            **evaluate(theta, state["ref_theta"], state["eval_set"]),
        }
        return {**state, "theta": theta, "opt_state": opt_state, "order": order}, metrics

    online = config.mode == "online"
    return Trainer(
        init_state=init_online if online else init_offline,
        iterate=iterate_online if online else iterate_offline,
        policy_params=lambda state: problem.unravel(state["theta"]),
        num_iterations=config.num_iterations,
    )


def make_train(config: DPOConfig, env, policy, oracle, env_params=None, reference_params=None):
    """`train(key) -> (final_policy_params, metrics)`; pure, jitted, vmappable over keys."""
    return make_trainer(config, env, policy, oracle, env_params, reference_params).jitted_train()


def _mean_where(values, mask):
    """Mean of values where mask holds; NaN when it holds nowhere (undefined, not 0 or ½)."""
    count = jnp.sum(mask)
    return jnp.where(
        count > 0, jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(count, 1), jnp.nan
    )


def _budget(spent: Spent) -> dict:
    return {
        "budget/queries": spent.queries,
        "budget/trajectories": spent.trajectories,
        "budget/env_steps": spent.env_steps,
    }
