"""Exact trajectory KL to the reference (zopg.occupancy, the evaluator's eval/kl_to_reference):
against an enumeration of every trajectory of a tiny layout, against a Monte Carlo estimate over
sampled trajectories, and logged by the runner for every method on a tabular env."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg.algorithms import ZPGConfig, make_training
from zopg.envs import make
from zopg.evaluation import make_evaluator
from zopg.experiments.runner import train_seeds
from zopg.occupancy import state_occupancies, trajectory_kl_fn
from zopg.policies import make_policy
from zopg.preferences import Oracle, make_link
from zopg.rollout import rollout_batch


def two_policies(env, params, seed=0, scale=1.0):
    policy = make_policy("tabular", env, params, init_scale=scale)
    k1, k2 = jax.random.split(jax.random.key(seed))
    return policy, policy.init(k1), policy.init(k2)


def enumerated_kl(model, probs, ref_probs) -> float:
    """Σ_τ P(τ) log P(τ)/P_ref(τ) over every (a_0, s_1, …, a_{H−1}, s_H), in float64, with the
    transition probabilities in both P and P_ref (they cancel only on paper)."""
    transition = np.asarray(model.transition, np.float64)
    start = np.asarray(model.start, np.float64)
    num_states, num_actions = probs.shape
    steps = list(itertools.product(range(num_actions), range(num_states)))
    total = 0.0
    for s0 in np.flatnonzero(start):
        for path in itertools.product(steps, repeat=model.horizon):
            p, q, s = start[s0], start[s0], s0
            for a, following in path:
                move = transition[s, a, following]
                p *= probs[s, a] * move
                q *= ref_probs[s, a] * move
                s = following
                if p == 0.0:
                    break
            if p > 0.0:
                total += p * np.log(p / q)
    return total


def test_exact_kl_equals_the_enumeration_on_a_tiny_layout():
    env, params = make("gridworld", layout=["S.G", ".X."], horizon=3, slip=0.2)
    policy, theta, ref = two_policies(env, params, scale=1.5)
    num_states = env.num_states(params)
    probs = np.asarray(policy.action_probs(theta, jnp.arange(num_states)), np.float64)
    ref_probs = np.asarray(policy.action_probs(ref, jnp.arange(num_states)), np.float64)
    expected = enumerated_kl(env.tabular_model(params), probs, ref_probs)
    exact = float(trajectory_kl_fn(env, params, policy)(theta, ref))
    assert expected > 0.5  # the two policies differ: not a trivial zero
    assert exact == pytest.approx(expected, rel=1e-5)


def test_exact_kl_agrees_with_monte_carlo_log_ratios():
    """E_{τ∼π} Σ_t log π(a_t|s_t) − log π_ref(a_t|s_t) over fresh episodes of the cliff."""
    env, params = make("gridworld/cliff-4x6")
    policy, theta, ref = two_policies(env, params, seed=3)
    exact = float(trajectory_kl_fn(env, params, policy)(theta, ref))
    num = 20_000
    traj = rollout_batch(jax.random.key(4), policy, theta, env, params, num)
    ratio = policy.log_prob(theta, traj.obs, traj.action) - policy.log_prob(
        ref, traj.obs, traj.action
    )
    per_episode = np.asarray(jnp.sum(jnp.where(traj.valid, ratio, 0.0), axis=-1), np.float64)
    mean, stderr = per_episode.mean(), per_episode.std(ddof=1) / np.sqrt(num)
    assert exact > 1.0 and stderr < 0.05 * exact
    # Fixed seed; 4 standard errors fail by chance with probability ~6e-5.
    assert abs(mean - exact) < 4 * stderr


def test_occupancies_are_distributions_and_kl_of_a_policy_to_itself_is_zero():
    env, params = make("gridworld/cliff-4x6")
    policy, theta, _ = two_policies(env, params)
    model = env.tabular_model(params)
    probs = policy.action_probs(theta, jnp.arange(env.num_states(params)))
    occupancies = state_occupancies(model, probs)
    assert occupancies.shape == (model.horizon, env.num_states(params))
    np.testing.assert_allclose(occupancies.sum(axis=1), 1.0, rtol=1e-5)
    assert float(trajectory_kl_fn(env, params, policy)(theta, theta)) == 0.0


def test_saturated_logits_give_a_finite_kl():
    env, params = make("gridworld/open-5x5")
    policy, theta, ref = two_policies(env, params)
    extreme = jax.tree_util.tree_map(lambda x: 200.0 * x, theta)  # exp underflows in float32
    kl = float(trajectory_kl_fn(env, params, policy)(extreme, ref))
    assert np.isfinite(kl) and kl > 0


def test_the_runner_logs_kl_to_each_seeds_initial_policy():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params, init_scale=0.5)
    config = ZPGConfig(num_iterations=6, num_pairs=4, num_queries=2)
    training = make_training(config, env, policy, Oracle(make_link("bradley-terry")))
    evaluator = make_evaluator(env, params, policy)
    keys = jax.random.split(jax.random.key(0), 3)
    result = train_seeds(training, keys, np.array([2, 5]), evaluator)
    kl = result["metrics"]["eval/kl_to_reference"]
    assert kl.shape == (3, 2) and np.all(kl > 0)
    np.testing.assert_array_equal(result["initial"]["eval/kl_to_reference"], 0.0)
    # The last logged KL is the exact KL of each seed's final policy to its own initial one.
    carry = jax.vmap(training.init)(keys)
    initial = jax.vmap(training.final_params)(carry)
    for seed in range(3):
        final, _ = jax.jit(training.train)(keys[seed])
        own = jax.tree_util.tree_map(lambda x, s=seed: x[s], initial)
        expected = evaluator.kl_to_reference(final, own)
        assert kl[seed, -1] == pytest.approx(float(expected), rel=1e-4)


def test_monte_carlo_evaluators_have_no_kl():
    env, params = make("gymnax/CartPole-v1")
    policy = make_policy("mlp", env, params)
    assert make_evaluator(env, params, policy, episodes=4).kl_to_reference is None
