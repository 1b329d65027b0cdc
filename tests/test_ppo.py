"""PPO: GAE against a plain loop, learning on the true reward, budgets, determinism, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms import ppo
from zopg.algorithms.ppo import PPOConfig
from zopg.envs import make
from zopg.exact import optimal_value
from zopg.policies import make_policy

NUM_SEEDS = 4


@pytest.fixture(scope="module")
def open_grid():
    env, params = make("gridworld/open-5x5")
    return env, params, make_policy("tabular", env, params)


@pytest.fixture(scope="module")
def default_train(open_grid):
    """The default config's train, wrapped so that any re-trace fails; compiled once here."""
    env, _, policy = open_grid
    train = ppo.make_train(PPOConfig(), env, policy)
    # chex counts traces per code location, which Trainer.train shares with other algorithms.
    chex.clear_trace_counter()
    return jax.jit(chex.assert_max_traces(train.__wrapped__, n=1))


@pytest.fixture(scope="module")
def learning_run(open_grid):
    env, _, policy = open_grid
    keys = jax.random.split(jax.random.key(2025), NUM_SEEDS)
    train = ppo.make_train(PPOConfig(), env, policy)
    final_params, metrics = jax.jit(jax.vmap(train))(keys)
    return keys, metrics, final_params


def gae_loop(rewards, values, valid, gamma, lam):
    """GAE written the obvious way, one episode and one step at a time."""
    adv = np.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        last = 0.0
        for t in reversed(range(rewards.shape[1])):
            if not valid[i, t]:
                last = 0.0
                continue
            alive = t + 1 < rewards.shape[1] and valid[i, t + 1]
            next_value = values[i, t + 1] if alive else 0.0
            delta = rewards[i, t] + gamma * next_value - values[i, t]
            last = delta + gamma * lam * (last if alive else 0.0)
            adv[i, t] = last
    return adv


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0), (0.97, 1.0)])
def test_gae_matches_a_plain_loop(gamma, lam):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 9)).astype(np.float32)
    values = rng.normal(size=(6, 9)).astype(np.float32)
    # Episodes end at different steps (valid is a prefix), as with early termination.
    lengths = np.array([9, 1, 4, 7, 9, 2])
    valid = np.arange(9)[None, :] < lengths[:, None]
    rewards = np.where(valid, rewards, 0.0)
    adv, target = ppo.generalized_advantages(
        jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(valid), gamma, lam
    )
    expected = gae_loop(rewards, values, valid, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        target, np.where(valid, expected + values, 0.0), rtol=1e-5, atol=1e-5
    )
    if lam == 1.0:
        # λ = 1: the advantage is the discounted return-to-go minus the value.
        discounts = gamma ** np.arange(9)
        togo = [[np.sum(rewards[i, t:] * discounts[: 9 - t]) for t in range(9)] for i in range(6)]
        np.testing.assert_allclose(
            adv, np.where(valid, np.array(togo) - values, 0.0), rtol=1e-4, atol=1e-4
        )


def test_true_reward_ppo_reaches_95_percent_of_optimum(open_grid, learning_run):
    """The reference's claim: median final exact value over 4 seeds >= 95% of the optimum."""
    env, params, _ = open_grid
    _, metrics, _ = learning_run
    best = float(optimal_value(env.tabular_model(params)))
    final = np.asarray(metrics["exact/value"][:, -1])
    print(f"PPO true reward open-5x5: V*={best:.3f} final={np.round(final, 3)}")
    assert np.median(final) >= 0.95 * best
    np.testing.assert_array_equal(metrics["budget/queries"], 0)


def test_budget_counters(open_grid, learning_run):
    env, params, _ = open_grid
    _, metrics, _ = learning_run
    config = PPOConfig()
    horizon = env.horizon(params)
    it = np.arange(1, config.num_iterations + 1)
    for seed in range(NUM_SEEDS):
        np.testing.assert_array_equal(
            metrics["budget/trajectories"][seed], it * config.num_trajectories
        )
        # GridWorld episodes never end early, so every step of every rollout is valid.
        np.testing.assert_array_equal(
            metrics["budget/env_steps"][seed], it * config.num_trajectories * horizon
        )
    for name in ("losses/policy", "losses/value", "losses/entropy", "losses/approx_kl"):
        assert metrics[name].shape == (NUM_SEEDS, config.num_iterations)
        chex.assert_tree_all_finite(metrics[name])


def test_determinism_single_compilation_and_vmap(default_train, learning_run):
    keys, batched, _ = learning_run
    params_a, first = default_train(keys[0])
    params_b, again = default_train(keys[0])
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, again)
    jax.tree_util.tree_map(np.testing.assert_array_equal, params_a, params_b)
    _, other = default_train(keys[1])
    assert not np.array_equal(first["losses/policy"], other["losses/policy"])
    assert default_train._cache_size() == 1
    # vmapped over seeds, the same numbers as one seed at a time (up to fusion rounding).
    np.testing.assert_allclose(batched["exact/value"][0], first["exact/value"], atol=1e-4)


def test_chunked_run_equals_one_run(open_grid, default_train, learning_run):
    env, _, policy = open_grid
    trainer = ppo.make_trainer(PPOConfig(), env, policy)
    key = learning_run[0][0]
    _, whole = default_train(key)
    run = jax.jit(trainer.run, static_argnums=2)
    carry, first = run(trainer.init(key), 0, 50)
    _, second = run(carry, 50, 50)
    for name, values in whole.items():
        np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), values)


def test_mlp_policy_and_value_head_learn():
    """Pytree (flax) params: MLP policy with an MLP value head on one-hot state and time."""
    env, params = make("gridworld/open-5x5")
    policy = make_policy("mlp", env, params, hidden_sizes=(32,))
    config = PPOConfig(num_iterations=40, learning_rate=3e-3, value_learning_rate=3e-3)
    trainer = ppo.make_trainer(config, env, policy)
    assert ppo.make_value_head(config, env, params, policy).kind == "mlp"
    _, metrics = jax.jit(trainer.train)(jax.random.key(0))
    value = np.asarray(metrics["exact/value"])
    # From ~0.04 (near-uniform) to most of the optimum (1.0) within 40 iterations.
    assert value[0] < 0.3 and value[-1] > 0.8


def test_kl_penalty_keeps_the_policy_near_the_reference(open_grid, learning_run):
    env, _, policy = open_grid
    keys, _, free_params = learning_run
    states = jnp.arange(env.num_states(env.default_params))
    # Every seed starts at the uniform policy (init_scale 0), which is also π_ref.
    start = policy.action_probs(policy.init(keys[0]), states)

    def kl_to_start(params):
        probs = policy.action_probs(params, states)
        return float(jnp.mean(jnp.sum(probs * jnp.log(probs / start), axis=-1)))

    held, metrics = ppo.make_train(PPOConfig(kl_coef=1.0), env, policy)(keys[0])
    free = kl_to_start(jax.tree_util.tree_map(lambda x: x[0], free_params))
    assert kl_to_start(held) < 0.5 * free
    assert np.all(np.asarray(metrics["losses/kl_ref"]) >= 0.0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"num_iterations": 0}, "num_iterations = 0: must be an integer >= 1"),
        ({"num_trajectories": 2.5}, "num_trajectories = 2.5"),
        ({"num_epochs": 0}, "num_epochs = 0"),
        ({"num_minibatches": 7}, r"num_minibatches = 7: must divide .* 64 × 16"),
        ({"learning_rate": 0.0}, r"learning_rate = 0.0: must be in \(0, inf\)"),
        ({"value_learning_rate": -1.0}, "value_learning_rate = -1.0"),
        ({"clip": 0.0}, r"clip = 0.0: must be in \(0, inf\)"),
        ({"gae_lambda": 1.5}, r"gae_lambda = 1.5: must be in \[0, 1\]"),
        ({"gamma": -0.1}, r"gamma = -0.1: must be in \[0, 1\]"),
        ({"entropy_coef": -0.01}, "entropy_coef = -0.01"),
        ({"kl_coef": float("nan")}, "kl_coef = nan"),
        ({"max_grad_norm": 0.0}, "max_grad_norm = 0.0"),
        ({"normalize_advantages": 1}, "normalize_advantages = 1: must be True or False"),
        ({"value_head": "linear"}, "unknown value head 'linear'.*auto, mlp, tabular"),
        ({"value_hidden_sizes": (0,)}, r"value_hidden_sizes = \(0,\)"),
        ({"num_iterations": 10**7}, "num_iterations = 10000000: budget counters would exceed"),
    ],
)
def test_bad_configs(open_grid, overrides, match):
    env, _, policy = open_grid
    with pytest.raises(ConfigError, match=match):
        ppo.make_train(PPOConfig(**overrides), env, policy)


def test_continuous_actions_are_refused_clearly():
    env, params = make("gymnax/Pendulum-v1")
    policy = make_policy("gaussian", env, params)
    with pytest.raises(ConfigError, match="needs a categorical policy"):
        ppo.make_train(PPOConfig(), env, policy)
