"""FedAvg DPO, the federated baseline of Par-S2ZPO (science.md §6; our reconstruction): K
agents each run online DPO on their own fresh pairs and queries, and every E local steps the
server averages their parameters and sends the average back.

Per iteration: K·P pairs and K·P·M queries. An averaging round moves 2·K·d floats (every agent
uploads its θ and downloads the average; `comm/floats` counts them). The policy evaluated is
the server's model, the last average. Losses, labels and diagnostics: dpo_losses.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from zopg.algorithms.base import Algorithm, Problem, Spent, Trainer, unit_cost
from zopg.algorithms.dpo_losses import NAN_WHEN_UNDEFINED, DPOSettings, HeldOut, make_core
from zopg.algorithms.search_space import SearchSpace, log_range, one_of
from zopg.algorithms.settings import integer


@dataclasses.dataclass(frozen=True)
class FedAvgDPOConfig(DPOSettings):
    """FedAvg DPO: num_agents K, each taking one online DPO step per iteration on num_pairs P
    fresh pairs of its own policy (M queries each); every local_steps E iterations the
    parameters are averaged. Other fields: DPOSettings. Defaults are our choice."""

    num_agents: int = integer(4)
    num_pairs: int = integer(25)
    local_steps: int = integer(5)

    def unit_cost(self) -> Spent:
        pairs = self.num_agents * self.num_pairs
        return unit_cost(queries=pairs * self.num_queries, trajectories=2 * pairs)


# Alphabetical, as DPOState's fields (dpo_losses.py says why).
@struct.dataclass
class FedAvgDPOState:
    """What FedAvg DPO carries between iterations: the server's DPOState fields and the agents'.

    eval_set: the seed's held-out pairs from π_ref (outside the budget; diagnostics only).
    floats: int32 scalar, the floats communicated so far (2·K·d per average; `comm/floats`).
    opt_state: the server's Adam state (θ_0's; the agents keep their own in opt_states).
    opt_states: the K agents' Adam states, stacked on a leading axis K.
    ref_theta: the flat reference parameters θ_ref [d], frozen (θ_0 = θ_ref).
    theta: the server's flat parameters [d], the last average (the policy evaluated).
    thetas: the K agents' flat parameters [K, d].
    """

    eval_set: HeldOut
    floats: jax.Array
    opt_state: optax.OptState
    opt_states: optax.OptState
    ref_theta: jax.Array
    theta: jax.Array
    thetas: jax.Array


def make_trainer(config: FedAvgDPOConfig, problem: Problem) -> Trainer:
    core = make_core(config, problem)
    agents = config.num_agents
    floats_per_average = 2 * agents * problem.dim

    def init(key):
        server = core.init(key)  # θ_0 = θ_ref for every agent, and the held-out pairs
        spread = lambda x: jnp.broadcast_to(x, (agents, *x.shape))  # noqa: E731
        return FedAvgDPOState(
            eval_set=server.eval_set,
            floats=jnp.zeros((), jnp.int32),
            opt_state=server.opt_state,
            opt_states=jax.tree_util.tree_map(spread, server.opt_state),
            ref_theta=server.ref_theta,
            theta=server.theta,
            thetas=spread(server.theta),
        )

    def local_step(key, theta, opt_state, ref_theta):
        pairs, spent, label_accuracy = core.collect(key, theta, config.num_pairs)
        theta, opt_state, loss, margin = core.apply(theta, opt_state, ref_theta, pairs)
        return theta, opt_state, spent, (loss, margin, label_accuracy)

    def iterate(state: FedAvgDPOState, t, key):
        keys = jax.random.split(key, agents)
        thetas, opt_states, spent, (loss, margin, accuracy) = jax.vmap(
            local_step, in_axes=(0, 0, 0, None)
        )(keys, state.thetas, state.opt_states, state.ref_theta)
        average = (t + 1) % config.local_steps == 0
        mean = thetas.mean(axis=0)
        server = jnp.where(average, mean, state.theta)
        thetas = jnp.where(average, jnp.broadcast_to(mean, thetas.shape), thetas)
        floats = state.floats + jnp.where(average, floats_per_average, 0)
        metrics = {
            "losses/policy_loss": loss.mean(),
            "rewards/margins": margin.mean(),
            "dpo/label_accuracy": jnp.nanmean(accuracy),
            "comm/floats": floats,
        }
        new = state.replace(theta=server, thetas=thetas, opt_states=opt_states, floats=floats)
        return new, spent.total(), metrics

    return Trainer(init, iterate, lambda state: problem.unravel(state.theta), core.diagnostics)


# What `zopg tune` may set (the ranges are chosen as zopg/algorithms/search_space.py says).
SEARCH_SPACE = SearchSpace(
    log_range("learning_rate", 1e-3, 0.3),
    log_range("beta", 1e-3, 1.0),
    one_of("local_steps", 1, 10),
)

ALGORITHM = Algorithm(
    "fedavg-dpo",
    FedAvgDPOConfig,
    make_trainer,
    "K agents running online DPO, parameters averaged every E steps (Par-S2ZPO's baseline)",
    assumes="Bradley-Terry (the DPO loss)",
    search_space=SEARCH_SPACE,
    nan_when_undefined=NAN_WHEN_UNDEFINED,
)
