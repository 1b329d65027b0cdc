"""Offline DPO (science.md §7): one dataset of pairs from π_ref, labelled before iteration 0,
then minibatch steps over it in shuffled epochs. Losses, labels and diagnostics: dpo_losses.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.base import Algorithm, Problem, Spent, Trainer, unit_cost
from zopg.algorithms.dpo_losses import (
    NAN_WHEN_UNDEFINED,
    DPOSettings,
    HeldOut,
    LabelledPairs,
    make_core,
)
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.algorithms.settings import integer
from zopg.errors import bad_value


@dataclasses.dataclass(frozen=True)
class DPOOfflineConfig(DPOSettings):
    """Offline DPO: `dataset_size` pairs from π_ref are labelled once (every query is spent
    before iteration 0); each iteration is one Adam step on a minibatch of `minibatch_size`,
    reshuffled every epoch (dataset_size // minibatch_size steps; a remainder is left out of
    that epoch). A query budget sets dataset_size. Other fields: DPOSettings."""

    budget_field = "dataset_size"

    dataset_size: int = integer(200_000)
    minibatch_size: int = integer(1000)

    def unit_cost(self) -> Spent:
        return unit_cost(queries=self.num_queries, trajectories=2)

    def check(self, problem, prefix):
        super().check(problem, prefix)
        if self.minibatch_size > self.dataset_size:
            raise bad_value(
                prefix + "minibatch_size",
                self.minibatch_size,
                f"must be <= dataset_size = {self.dataset_size}",
            )


# Alphabetical, as DPOState's fields (dpo_losses.py says why).
@struct.dataclass
class DPOOfflineState:
    """What offline DPO carries between iterations: DPOState's fields and the dataset's.

    dataset: the dataset_size labelled pairs from π_ref, labelled in init.
    dataset_spent: what labelling the dataset spent (reported by iteration 0).
    eval_set: the seed's held-out pairs from π_ref (outside the budget; diagnostics only).
    label_accuracy: scalar, the labels' agreement with the noise-free preference (a metric).
    opt_state: Adam's state for θ.
    order: int32 [dataset_size], the current epoch's permutation of the dataset.
    ref_theta: the flat reference parameters θ_ref [d], frozen (θ_0 = θ_ref).
    shuffle_key: the seed's key for the epochs' permutations.
    theta: the flat policy parameters θ [d] (problem.unravel gives the policy's own).
    """

    dataset: LabelledPairs
    dataset_spent: Spent
    eval_set: HeldOut
    label_accuracy: jax.Array
    opt_state: optax.OptState
    order: jax.Array
    ref_theta: jax.Array
    shuffle_key: jax.Array
    theta: jax.Array


def make_trainer(config: DPOOfflineConfig, problem: Problem) -> Trainer:
    core = make_core(config, problem)
    steps_per_epoch = config.dataset_size // config.minibatch_size

    def shuffle(key, epoch):
        return jax.random.permutation(jax.random.fold_in(key, epoch), config.dataset_size)

    def init(key):
        """Label the whole dataset now; its cost is reported by iteration 0."""
        state = core.init(key)
        data_key = jax.random.fold_in(key, 2)
        dataset, spent, label_accuracy = core.collect(
            data_key, state.ref_theta, config.dataset_size
        )
        return DPOOfflineState(
            dataset=dataset,
            dataset_spent=spent,
            eval_set=state.eval_set,
            label_accuracy=label_accuracy,
            opt_state=state.opt_state,
            order=jnp.arange(config.dataset_size),
            ref_theta=state.ref_theta,
            shuffle_key=jax.random.fold_in(key, 3),
            theta=state.theta,
        )

    def iterate(state: DPOOfflineState, t, key):
        del key  # the epoch's permutation is the only randomness
        epoch, within = t // steps_per_epoch, t % steps_per_epoch
        # A new permutation at the start of each epoch only: one sort per step would cost more
        # than the gradient step. The order is carried, so chunked runs resume mid-epoch.
        order = jax.lax.cond(
            within == 0,
            lambda: shuffle(state.shuffle_key, epoch),
            lambda: state.order,
        )
        index = jax.lax.dynamic_slice(
            order, (within * config.minibatch_size,), (config.minibatch_size,)
        )
        batch = jax.tree_util.tree_map(lambda x: x[index], state.dataset)
        theta, opt_state, loss, reward_margin = core.apply(
            state.theta, state.opt_state, state.ref_theta, batch
        )
        metrics = {
            "losses/policy_loss": loss,
            "rewards/margins": reward_margin,
            "dpo/label_accuracy": state.label_accuracy,
        }
        first = t == 0
        spent = jax.tree_util.tree_map(
            lambda x: jnp.where(first, x, jnp.zeros_like(x)), state.dataset_spent
        )
        new = state.replace(theta=theta, opt_state=opt_state, order=order)
        return new, spent, metrics

    return Trainer(init, iterate, lambda state: problem.unravel(state.theta), core.diagnostics)


# What `zopg tune` may set (the ranges are chosen as zopg/algorithms/search_space.py says).
SEARCH_SPACE = SearchSpace(
    log_range("learning_rate", 1e-3, 0.3),
    log_range("beta", 1e-3, 1.0),
    one_of("minibatch_size", 250, 1000),
)

ALGORITHM = Algorithm(
    "dpo-offline",
    DPOOfflineConfig,
    make_trainer,
    "trajectory-level DPO on a fixed dataset of pairs from the reference policy",
    assumes="Bradley-Terry (the DPO loss)",
    search_space=SEARCH_SPACE,
    nan_when_undefined=NAN_WHEN_UNDEFINED,
)
