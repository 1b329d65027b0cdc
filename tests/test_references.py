"""Reward-access references: exact policy gradient and OpenAI-ES on GridWorld."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from zopg import ConfigError
from zopg.algorithms import ESConfig, ExactPGConfig, make_train, make_training
from zopg.algorithms.es import centred_ranks
from zopg.envs import make
from zopg.exact import optimal_value, policy_value
from zopg.policies import make_policy

NUM_SEEDS = 8
# Small on purpose: ES only has to beat the uniform policy clearly, not converge.
ES_TEST_CONFIG = ESConfig(num_iterations=100, population_size=32)


@pytest.fixture(scope="module")
def open_grid():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    model = env.tabular_model(params)
    uniform = float(policy_value(model, jnp.full((env.num_states(params), 4), 0.25)))
    return env, params, policy, uniform, float(optimal_value(model))


@pytest.fixture(scope="module")
def es_run(open_grid):
    env, _, policy, _, _ = open_grid
    chex.clear_trace_counter()
    training = make_training(ES_TEST_CONFIG, env, policy, probe=True)
    train = jax.jit(chex.assert_max_traces(training.train, n=1))
    keys = jax.random.split(jax.random.key(7), NUM_SEEDS)
    final, metrics = jax.vmap(train)(keys)
    return train, keys, final, metrics


def test_exact_pg_reaches_95_percent_of_the_gap(open_grid):
    env, _, policy, uniform, best = open_grid
    config = ExactPGConfig(num_iterations=100)
    _, metrics = make_train(config, env, policy, probe=True)(jax.random.key(0))
    value = np.asarray(metrics["exact/value"])
    assert (value[-1] - uniform) / (best - uniform) >= 0.95
    assert value[-1] >= 0.95 * best
    # Ascent, not descent: the value rose from the first step on, and the gradient vanishes.
    assert value[0] > uniform
    grad_norm_sq = np.asarray(metrics["pg/grad_norm_sq"])
    assert grad_norm_sq[-1] < 0.01 * grad_norm_sq[0]
    # The algorithm's own gradient is the probe's exact gradient at the same iterate.
    np.testing.assert_allclose(grad_norm_sq, metrics["exact/grad_norm_sq"], rtol=1e-5)
    for key in ("budget/queries", "budget/trajectories", "budget/env_steps"):
        np.testing.assert_array_equal(metrics[key], 0)
        assert metrics[key].shape == (config.num_iterations,)


def test_exact_pg_first_step_is_one_gradient_step(open_grid):
    """With sgd, θ_1 = θ_0 + α ∇V(θ_0), so V after the first iteration is V(θ_0 + α ∇V)."""
    env, params, policy, _, _ = open_grid
    config = ExactPGConfig(num_iterations=1, optimizer="sgd", learning_rate=3.0)
    final, metrics = make_train(config, env, policy, probe=True)(jax.random.key(0))
    theta0 = policy.init(jax.random.split(jax.random.key(0))[0])
    model = env.tabular_model(params)
    states = jnp.arange(env.num_states(params))

    @jax.jit
    def value(p):
        return policy_value(model, policy.action_probs(p, states))

    grad = jax.jit(jax.grad(value))(theta0)
    expected = jax.tree_util.tree_map(lambda t, g: t + 3.0 * g, theta0, grad)
    np.testing.assert_allclose(final["logits"], expected["logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics["exact/value"][0], value(expected), rtol=1e-5)
    np.testing.assert_allclose(
        metrics["pg/grad_norm_sq"][0], jnp.sum(grad["logits"] ** 2), rtol=1e-5
    )


def test_es_beats_the_uniform_policy(es_run, open_grid):
    """One-sided t-test over seeds: the mean fraction of the gap closed exceeds 0.1.

    The bound is the mean minus t_{0.999, n−1}·sd/√n, so a chance pass is 0.1% likely if the true
    mean were at most 0.1; the runs' spread, not a guess, sets the margin. (Measured: mean 0.69,
    lower bound 0.29 with these seeds.)
    """
    _, _, _, metrics = es_run
    _, _, _, uniform, best = open_grid
    closed = (np.asarray(metrics["exact/value"][:, -1]) - uniform) / (best - uniform)
    n = closed.size
    lower = closed.mean() - stats.t.ppf(0.999, n - 1) * closed.std(ddof=1) / math.sqrt(n)
    print(f"ES gap closed per seed: {np.round(closed, 3)}; 99.9% lower bound {lower:.3f}")
    assert lower > 0.1


def test_es_budget_counters(es_run, open_grid):
    _, _, _, metrics = es_run
    params = open_grid[1]
    config = ES_TEST_CONFIG
    it = np.arange(1, config.num_iterations + 1)
    per_iteration = config.population_size * config.rollouts_per_member
    expected = np.broadcast_to(it * per_iteration, (NUM_SEEDS, it.size))
    np.testing.assert_array_equal(metrics["budget/trajectories"], expected)
    # GridWorld episodes always run the full horizon, so every step is valid.
    np.testing.assert_array_equal(metrics["budget/env_steps"], expected * params.horizon)
    np.testing.assert_array_equal(metrics["budget/queries"], 0)
    for key in ("budget/queries", "budget/trajectories", "budget/env_steps"):
        assert metrics[key].dtype == jnp.int32
    chex.assert_tree_all_finite((metrics["es/mean_return"], metrics["es/grad_norm"]))


def test_es_determinism_and_single_compilation(es_run):
    train, keys, final, batched = es_run
    final_again, again = jax.vmap(train)(keys)
    jax.tree_util.tree_map(np.testing.assert_array_equal, final, final_again)
    jax.tree_util.tree_map(np.testing.assert_array_equal, batched, again)
    assert not np.array_equal(batched["es/mean_return"][0], batched["es/mean_return"][1])
    _, first = train(keys[0])
    train(keys[1])
    # One compiled function serves every key (a second trace would raise in chex's wrapper).
    assert train._cache_size() == 1
    np.testing.assert_allclose(batched["exact/value"][0], first["exact/value"], rtol=1e-5)


def test_centred_ranks_share_ties():
    # Sorted: 1, 1 (ranks 0 and 1, so 0.5 each), 3 (rank 2), 5 (rank 3); scaled by 1/3, minus ½.
    got = centred_ranks(jnp.array([3.0, 1.0, 1.0, 5.0]))
    np.testing.assert_allclose(got, [2 / 3 - 0.5, 0.5 / 3 - 0.5, 0.5 / 3 - 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(centred_ranks(jnp.zeros(6)), 0.0)
    assert float(jnp.sum(centred_ranks(jnp.arange(7.0)))) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (ExactPGConfig(num_iterations=0), r"num_iterations = 0: must be an integer in \[1, inf\]"),
        (ExactPGConfig(learning_rate=-1.0), r"learning_rate = -1.0: must be in \(0, inf\)"),
        (ExactPGConfig(optimizer="lbfgs"), "optimizer = 'lbfgs': must be one of sgd, adam"),
        (ESConfig(population_size=7), "population_size = 7: must be even"),
        (ESConfig(population_size=0), r"population_size = 0: must be an integer in \[1, inf\]"),
        (ESConfig(sigma=0.0), r"sigma = 0.0: must be in \(0, inf\)"),
        (ESConfig(learning_rate="fast"), "learning_rate = 'fast': must be a real number"),
        (ESConfig(rollouts_per_member=0), "rollouts_per_member = 0"),
        (ESConfig(optimizer="rmsprop"), "optimizer = 'rmsprop': must be one of"),
        (ESConfig(num_iterations=10**8), "num_iterations.*exceed int32"),
        ("es", "config = 'str': must be the config of exactly one registered algorithm"),
    ],
)
def test_bad_configs(open_grid, config, match):
    env, _, policy, _, _ = open_grid
    with pytest.raises(ConfigError, match=match):
        make_train(config, env, policy)


def test_exact_pg_needs_a_tabular_env(open_grid):
    env, _, policy, _, _ = open_grid

    class NoModel:
        """GridWorld dynamics without the exact tabular model (as for gymnax or brax envs)."""

        num_actions, action_kind = env.num_actions, env.action_kind
        reset, step, horizon = env.reset, env.step, env.horizon
        num_states, default_params = env.num_states, env.default_params

    with pytest.raises(ConfigError, match="needs a tabular environment"):
        make_train(ExactPGConfig(), NoModel(), policy)
