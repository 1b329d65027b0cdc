"""The classic RLHF pipeline (science.md §9, over-optimisation): a reward model fitted ONCE on
n labelled pairs from the reference policy π_ref, never refit, then PPO on it.

Before iteration 0, 2n fresh episodes of π_ref are paired and labelled with M oracle queries
each, and r_φ is fitted by Bradley–Terry maximum likelihood (reward_model.num_steps Adam steps);
every query is spent there and reported by iteration 0, as offline DPO reports its dataset.
Each iteration is then K = ppo.num_iterations PPO iterations on the frozen r_φ (optionally with
ppo.kl_coef's KL penalty to π_ref); they spend no queries, only trajectories and env steps.
A query budget sets n = num_pairs (budget // M); the PPO rollouts are the config's fixed_cost.

On tabular environments the trainer's diagnostics give the proxy: the exact value of the current
policy under r_φ (`rm/proxy_value`, the return PPO is maximising) and its normalised score
(`rm/proxy_score`: 0 at the uniform policy, 1 at the optimum under r_φ), beside the evaluator's
exact value of the teacher's utility and exact trajectory KL to π_ref.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from zopg.algorithms import reward_model as rm
from zopg.algorithms.base import Algorithm, AlgorithmConfig, Problem, Spent, Trainer, unit_cost
from zopg.algorithms.ppo import PPOConfig, PPOState, make_ppo
from zopg.algorithms.search_space import SearchSpace, log_range
from zopg.algorithms.settings import integer, nested
from zopg.envs.gridworld import TabularModel
from zopg.errors import INT32_MAX, bad_value
from zopg.exact import optimal_value, policy_value
from zopg.preferences import preference_rate
from zopg.rollout import rollout_batch


@dataclasses.dataclass(frozen=True)
class RMPPOOnceConfig(AlgorithmConfig):
    """Fit-once RM+PPO. Defaults are our choice.

    num_pairs      n pairs of fresh reference-policy episodes, labelled once (set by a query
                   budget: n = budget // M).
    num_queries    M oracle queries per pair; the label is the vote fraction (see
                   RewardModelConfig.labels). Human budget: n × M, all before iteration 0.
    num_iterations trainer iterations, each K = ppo.num_iterations PPO iterations on r_φ.
    reward_model   r_φ and its one fit (zopg.algorithms.reward_model). Defaults here: the
                   smooth, extrapolating MLP on cell coordinates (kind 'mlp-coordinates', 64-64
                   tanh), Adam 0.003 for 4,000 steps on minibatches of 256 pairs. The fit is
                   the whole reward model, so it runs to a plateau of its training loss, not the
                   100 warm-started steps per round of rm-ppo; rm-ppo's 0.05 is a tabular step
                   size, and on an MLP the loss oscillated above log 2. Measured on open-5x5
                   (not an evaluation layout), uniform reference, n = 50 / 200 / 1,000, 5 seeds:
                   the Bradley–Terry loss on the n pairs moves by at most 0.002 from 4,000 to
                   8,000 steps, and at n = 1,000 it reaches the loss of the true reward (0.686).
                   Other environments: kind 'mlp' (or 'tabular').
    ppo            PPO on r_φ; ppo.num_iterations is K, PPO iterations per trainer iteration;
                   ppo.kl_coef > 0 adds the KL penalty to π_ref (the initial policy).
    """

    budget_field = "num_pairs"
    iterations_field = "num_iterations"

    num_pairs: int = integer(1000)
    num_queries: int = integer(10)
    num_iterations: int = integer(1000)
    reward_model: rm.RewardModelConfig = nested(
        lambda: rm.RewardModelConfig(kind="mlp-coordinates", learning_rate=0.003, num_steps=4000)
    )
    ppo: PPOConfig = nested(lambda: PPOConfig(num_iterations=1))

    def unit_cost(self) -> Spent:
        """One labelled pair: M queries on two reference episodes."""
        return unit_cost(queries=self.num_queries, trajectories=2)

    def fixed_cost(self) -> Spent:
        """The PPO rollouts, which are not units of the query budget."""
        return unit_cost(trajectories=self.ppo_trajectories)

    @property
    def ppo_trajectories(self) -> int:
        return self.num_iterations * self.ppo.num_iterations * self.ppo.num_trajectories

    def check(self, problem, prefix):
        if problem is None:
            return
        problem.require_oracle("rm-ppo-once")
        # Per iteration the int32 counters grow by K × B PPO episodes (and × H env steps).
        steps = (self.ppo_trajectories + 2 * self.num_pairs) * problem.horizon
        if steps > INT32_MAX:
            raise bad_value(
                prefix + "num_iterations",
                self.num_iterations,
                f"env-step counters would exceed int32 ({steps:,} > {INT32_MAX:,}); split the run",
            )


def proxy_model(model: TabularModel, reward: jax.Array) -> TabularModel:
    """The env's tabular model with its reward replaced by r[s, a] on every step (absorbing
    states too: PPO pays r_φ on every valid step, and every GridWorld step is valid)."""
    return model.replace(reward=jnp.broadcast_to(reward[:, :, None], model.transition.shape))


# The fields are in alphabetical order: this state was a dict, whose leaves JAX flattens in
# sorted key order, and checkpoints store leaves by position, so a checkpoint written before it
# was named still resumes into the same fields.
@struct.dataclass
class RMPPOOnceState:
    """What fit-once RM+PPO carries between iterations.

    data_spent: what labelling the reference pairs spent (reported by iteration 0).
    fit: the one fit's statistics (dict of scalars), reported as metrics every iteration.
    phi: the reward model's parameters φ of r_φ, frozen after the fit.
    ppo: PPO's state (policy, value head, their optimizers and π_ref).
    """

    data_spent: Spent
    fit: dict
    phi: object
    ppo: PPOState


def make_trainer(config: RMPPOOnceConfig, problem: Problem) -> Trainer:
    env, env_params, policy = problem.env, problem.env_params, problem.policy
    model = rm.make_reward_model(config.reward_model, env, env_params)
    init_rm_opt, fit = rm.make_fit(config.reward_model, model)
    core = make_ppo(config.ppo, problem, lambda phi, traj: model(phi, traj.obs, traj.action))
    num_pairs, num_queries = config.num_pairs, config.num_queries

    def init(key):
        """PPO's state, then the labelled reference pairs and the one fit of r_φ."""
        k_ppo, k_pairs, k_query, k_rm, k_fit = jax.random.split(key, 5)
        ppo_state = core.init(k_ppo)
        traj = rollout_batch(k_pairs, policy, ppo_state.ref_params, env, env_params, 2 * num_pairs)
        # Independent fresh episodes, so pairing the two halves gives n i.i.d. pairs.
        traj_a = jax.tree_util.tree_map(lambda x: x[:num_pairs], traj)
        traj_b = jax.tree_util.tree_map(lambda x: x[num_pairs:], traj)
        feedback = problem.oracle.query(k_query, traj_a, traj_b, num_queries)
        label = rm.pair_labels(config.reward_model, preference_rate(feedback))
        buffer = rm.add_pairs(
            rm.empty_buffer(num_pairs, traj_a), traj_a, traj_b, label, rm.pair_weight(feedback)
        )
        phi = model.init(k_rm)
        phi, _, fit_stats = fit(k_fit, phi, init_rm_opt(phi), buffer)
        data_spent = Spent.of(feedback.queries, 2 * num_pairs, jnp.sum(traj.valid))
        # The buffer is not kept: r_φ never sees another pair.
        return RMPPOOnceState(data_spent=data_spent, fit=fit_stats, phi=phi, ppo=ppo_state)

    def iterate(state: RMPPOOnceState, t, key):
        def _ppo_step(ppo_state, k):
            ppo_state, stats, spent = core.iteration(k, ppo_state, state.phi)
            return ppo_state, (stats, spent)

        keys = jax.random.split(key, config.ppo.num_iterations)
        ppo_state, (stats, ppo_spent) = jax.lax.scan(_ppo_step, state.ppo, keys)
        # The pairs' cost (queries, their episodes) is reported once, by iteration 0.
        data = jax.tree_util.tree_map(
            lambda x: jnp.where(t == 0, x, jnp.zeros_like(x)), state.data_spent
        )
        metrics = {**state.fit, **jax.tree_util.tree_map(jnp.mean, stats)}
        return state.replace(ppo=ppo_state), data + ppo_spent.total(), metrics

    return Trainer(
        init,
        iterate,
        policy_params=lambda state: state.ppo.policy_params,
        diagnostics=proxy_diagnostics(problem, model),
    )


def proxy_diagnostics(problem: Problem, model: rm.RewardModel):
    """state -> {rm/proxy_value, rm/proxy_score} on tabular environments, else None."""
    env, env_params, policy = problem.env, problem.env_params, problem.policy
    if not hasattr(env, "tabular_model"):
        return None
    tabular = env.tabular_model(env_params)
    states = jnp.arange(env.num_states(env_params))
    actions = jnp.arange(env.num_actions)
    uniform = jnp.full((states.shape[0], env.num_actions), 1.0 / env.num_actions)

    def diagnostics(state):
        # r_φ of every observation and action (model() maps an observation to its cell first
        # where the reward model sees cells only).
        reward = model(state.phi, states[:, None], actions[None, :])
        proxy = proxy_model(tabular, reward)
        value = policy_value(proxy, policy.action_probs(state.ppo.policy_params, states))
        low, high = policy_value(proxy, uniform), optimal_value(proxy)
        return {"rm/proxy_value": value, "rm/proxy_score": (value - low) / (high - low)}

    return diagnostics


# What `zopg tune` may set (the ranges are chosen as zopg/algorithms/search_space.py says).
SEARCH_SPACE = SearchSpace(
    log_range("reward_model.learning_rate", 3e-3, 0.3),
    log_range("ppo.learning_rate", 3e-3, 0.3),
)

ALGORITHM = Algorithm(
    "rm-ppo-once",
    RMPPOOnceConfig,
    make_trainer,
    "Bradley-Terry reward model fitted once on reference pairs, then PPO on it (classic RLHF)",
    assumes="Bradley-Terry (reward-model likelihood)",
    search_space=SEARCH_SPACE,
)
