"""RM+PPO with a reward model fitted once (rm-ppo-once) and the over-optimisation regime: budget
accounting, the one fit, the proxy diagnostics, the coordinate reward model, and the failure
mechanism itself on a small version of benchmarks/regime_overoptimisation.toml.

Mechanism, with fixed seeds: seeds 1 and 2 of the regime's keys (zopg.experiments.runner
seed_keys(10)), n = 200 reference pairs × 10 votes, the regime's defaults, 200 PPO iterations
(the regime runs 1,000; iteration t's key does not depend on the length). With the MLP on cell
coordinates, PPO keeps raising the proxy (the exact value under r_φ) after the exact value's
peak while the exact value falls far. Control: the same seeds, so the same pairs, votes and PPO
keys, with a tabular reward model fitted once (it extrapolates nothing) does not fall. Measured
when the test was written (normalised scores; proxy: rm/proxy_score): MLP seed 1 peak 0.466 at
iteration 9 → −0.062 at 199 while the proxy went 0.62 → 0.93; seed 2 0.948 at 80 → 0.04 while
the proxy went 0.944 → 0.989 (a small gain in the proxy for most of the true gain); tabular
falls of 0.001 and 0.002. (Seed 2 here is not the regime's seed 2 number for number: the
regime vmaps 10 seeds, and float rounding in a batch of 10 instead of 2 sends PPO elsewhere.)
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms import make_training
from zopg.algorithms import reward_model as rm
from zopg.algorithms.ppo import PPOConfig
from zopg.algorithms.rm_ppo_once import RMPPOOnceConfig, proxy_model
from zopg.envs import make
from zopg.evaluation import make_evaluator
from zopg.exact import normalized_score, policy_value
from zopg.experiments.runner import seed_keys, train_seeds
from zopg.policies import make_policy
from zopg.preferences import Oracle, make_link
from zopg.rollout import rollout_batch

SMALL = RMPPOOnceConfig(
    num_pairs=20,
    num_queries=3,
    num_iterations=4,
    reward_model=rm.RewardModelConfig(kind="mlp-coordinates", num_steps=50, learning_rate=0.003),
    ppo=PPOConfig(num_iterations=2, num_trajectories=8, num_minibatches=2),
)


@pytest.fixture(scope="module")
def cliff():
    env, params = make("gridworld/cliff-4x6")
    return env, params, make_policy("tabular", env, params), Oracle(make_link("bradley-terry"))


@pytest.fixture(scope="module")
def small_training(cliff):
    """SMALL's init (where the reward model is fitted) and its four iterations, each compiled
    once for every test below (each starts from its own key)."""
    env, _, policy, oracle = cliff
    training = make_training(SMALL, env, policy, oracle)
    chex.clear_trace_counter()
    run = jax.jit(chex.assert_max_traces(lambda c: training.run(c, 0, 4), n=1))
    return training, jax.jit(training.init), run


@pytest.fixture(scope="module")
def small_run(small_training):
    _, init, run = small_training
    return run(init(jax.random.key(0)))


def test_every_query_is_spent_before_iteration_0(cliff, small_run):
    env, params, _, _ = cliff
    _, metrics = small_run
    horizon = env.horizon(params)
    queries = np.asarray(metrics["budget/queries"])
    trajectories = np.asarray(metrics["budget/trajectories"])
    np.testing.assert_array_equal(queries, 20 * 3)  # n × M at iteration 0, nothing later
    pairs, per_iteration = 2 * 20, 2 * 8  # K = 2 PPO iterations of 8 episodes
    np.testing.assert_array_equal(trajectories, pairs + per_iteration * np.arange(1, 5))
    np.testing.assert_array_equal(metrics["budget/env_steps"], trajectories * horizon)
    assert SMALL.fixed_cost().trajectories == 4 * per_iteration


def test_a_query_budget_sets_the_number_of_pairs():
    assert RMPPOOnceConfig(num_queries=10).with_budget(2_000).num_pairs == 200
    judged = RMPPOOnceConfig(num_queries=10).with_budget(2_000, "judged_trajectories")
    assert judged.num_pairs == 100  # a pair shows the human two trajectories per vote


def test_the_reward_model_is_fitted_once(small_training):
    _, init, run = small_training
    carry = init(jax.random.key(1))
    before = carry["state"].phi
    carry, _ = run(carry)
    chex.assert_trees_all_equal(carry["state"].phi, before)


def test_proxy_value_is_the_exact_value_under_the_reward_model(cliff, small_training):
    """rm/proxy_value against the Monte Carlo mean of Σ_t r_φ(s_t, a_t) over fresh episodes."""
    env, params, policy, _ = cliff
    training, init, run = small_training
    carry, _ = run(init(jax.random.key(2)))
    state = carry["state"]
    diagnostics = training.trainer.diagnostics(state)
    model = rm.make_reward_model(SMALL.reward_model, env, params)
    theta = state.ppo.policy_params
    traj = rollout_batch(jax.random.key(3), policy, theta, env, params, 20_000)
    proxy = np.asarray(model.utility(state.phi, traj.obs, traj.action, traj.valid))
    mean, stderr = proxy.mean(), proxy.std(ddof=1) / np.sqrt(proxy.size)
    assert abs(float(diagnostics["rm/proxy_value"]) - mean) < 4 * stderr + 1e-4
    assert 0.0 <= float(diagnostics["rm/proxy_score"]) <= 1.0 + 1e-5


def test_coordinate_features_are_the_scaled_row_and_column(cliff):
    _, params, _, _ = cliff
    features, dim = rm.cell_coordinates(params)
    assert dim == 2
    np.testing.assert_allclose(features(jnp.array(0)), [-1.0, -1.0])  # top left
    np.testing.assert_allclose(features(jnp.array(23)), [1.0, 1.0])  # bottom right (G)
    np.testing.assert_allclose(features(jnp.array(8)), [2 / 3 - 1, 4 / 5 - 1], rtol=1e-6)


def test_the_coordinate_model_is_the_mlp_of_each_cell(cliff):
    """Evaluated once per cell and gathered: the same numbers as the MLP on every step."""
    env, params, _, _ = cliff
    model = rm.make_reward_model(rm.RewardModelConfig(kind="mlp-coordinates"), env, params)
    phi = model.init(jax.random.key(0))
    obs = jax.random.randint(jax.random.key(1), (5, 24), 0, 24)
    action = jax.random.randint(jax.random.key(2), (5, 24), 0, 4)
    direct = model._mlp.apply(phi, model.features(obs))
    expected = jnp.take_along_axis(direct, action[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(model(phi, obs, action), expected, rtol=1e-5, atol=1e-6)


def test_coordinate_models_need_a_gridworld():
    env, params = make("gymnax/CartPole-v1")
    policy = make_policy("mlp", env, params)
    config = RMPPOOnceConfig(num_pairs=4, num_iterations=2)
    with pytest.raises(ConfigError, match="mlp-coordinates' needs a GridWorld"):
        make_training(config, env, policy, Oracle(make_link("bradley-terry")))


def test_proxy_model_pays_r_on_every_step():
    env, params = make("gridworld", layout=["S.G"], horizon=3, slip=0.0)
    model = env.tabular_model(params)
    reward = jnp.arange(12.0).reshape(3, 4)
    always_right = jnp.tile(jnp.array([0.0, 1.0, 0.0, 0.0]), (3, 1))
    # S -> . -> G -> G (absorbing; still pays r[G, right])
    expected = reward[0, 1] + reward[1, 1] + reward[2, 1]
    assert float(policy_value(proxy_model(model, reward), always_right)) == expected


# -- the mechanism --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mechanism_runs(cliff):
    """(MLP, tabular) fit-once runs: seeds 1 and 2 of the regime, n = 200, 200 iterations."""
    env, params, policy, oracle = cliff
    evaluator = make_evaluator(env, params, policy)
    keys = seed_keys(10)[1:3]
    logged = np.arange(200)
    out = {}
    for kind, learning_rate in (("mlp-coordinates", 0.003), ("tabular", 0.05)):
        config = RMPPOOnceConfig(
            num_pairs=200,
            num_iterations=200,
            reward_model=rm.RewardModelConfig(
                kind=kind, learning_rate=learning_rate, num_steps=4000
            ),
        )
        training = make_training(config, env, policy, oracle)
        result = train_seeds(training, keys, logged, evaluator)
        low, high = evaluator.bounds
        out[kind] = {
            "score": normalized_score(result["metrics"]["eval/value"], low, high),
            "proxy": result["metrics"]["rm/proxy_score"],
            "kl": result["metrics"]["eval/kl_to_reference"],
        }
    return out


def peak_to_end(score, proxy):
    """Per seed: (fall of the exact score from its peak to the end, rise of the proxy score
    over the same iterations)."""
    peak = np.argmax(score, axis=1)
    seeds = np.arange(score.shape[0])
    return score[seeds, peak] - score[:, -1], proxy[:, -1] - proxy[seeds, peak]


def test_the_proxy_rises_while_the_exact_value_falls(mechanism_runs):
    fall, rise = peak_to_end(
        mechanism_runs["mlp-coordinates"]["score"], mechanism_runs["mlp-coordinates"]["proxy"]
    )
    # Both seeds: the exact score loses more than 0.3 of the optimum's gap from its peak while
    # PPO keeps raising the proxy; in one by more than 0.1 of the proxy's range.
    assert np.all(fall > 0.3) and np.all(rise > 0.02) and np.any(rise > 0.1), (fall, rise)
    # The policy is far from the reference when it falls: most of the KL's maximum, 24 log 4.
    assert np.all(mechanism_runs["mlp-coordinates"]["kl"][:, -1] > 0.9 * 24 * np.log(4))


def test_control_a_tabular_model_fitted_on_the_same_pairs_does_not_fall(mechanism_runs):
    fall, _ = peak_to_end(mechanism_runs["tabular"]["score"], mechanism_runs["tabular"]["proxy"])
    mlp_fall, _ = peak_to_end(
        mechanism_runs["mlp-coordinates"]["score"], mechanism_runs["mlp-coordinates"]["proxy"]
    )
    assert np.all(fall < 0.05), fall
    assert np.all(mlp_fall > 6 * fall.max() + 0.2)
