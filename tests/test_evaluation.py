"""Monte Carlo evaluation: agrees with exact values, standard error formula, jit/vmap, errors."""

import jax
import numpy as np
import pytest

from zopg.envs import make
from zopg.errors import ConfigError
from zopg.evaluation import episode_returns, evaluate, summarize_returns
from zopg.exact import value_fn
from zopg.policies import make_policy

EPISODES = 4000


@pytest.fixture(scope="module")
def gridworld():
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta = policy.init(jax.random.key(0))
    exact = float(value_fn(env.tabular_model(params), policy, env.num_states(params))(theta))
    return env, params, policy, theta, exact


def test_mc_return_agrees_with_exact_value(gridworld):
    env, params, policy, theta, exact = gridworld
    mean, stderr = evaluate(jax.random.key(1), policy, theta, env, params, EPISODES)
    assert 0 < float(stderr) < 0.05
    # Fixed seed; 4 standard errors fail by chance with probability ~6e-5.
    assert abs(float(mean) - exact) < 4 * float(stderr)


def test_stderr_is_sample_std_over_sqrt_n(gridworld):
    env, params, policy, theta, _ = gridworld
    key = jax.random.key(2)
    returns = np.asarray(episode_returns(key, policy, theta, env, params, 64))
    mean, stderr = evaluate(key, policy, theta, env, params, 64)  # same key, same episodes
    assert returns.shape == (64,)
    np.testing.assert_allclose(mean, returns.mean(), rtol=1e-5)
    np.testing.assert_allclose(stderr, returns.std(ddof=1) / 8.0, rtol=1e-4)


def test_vmaps_over_keys_and_params(gridworld):
    env, params, policy, _, _ = gridworld
    thetas = jax.vmap(policy.init)(jax.random.split(jax.random.key(3), 2))
    keys = jax.random.split(jax.random.key(4), 2)
    batched = jax.jit(jax.vmap(lambda k, th: evaluate(k, policy, th, env, params, 64)))
    means, stderrs = batched(keys, thetas)
    assert means.shape == stderrs.shape == (2,)
    second = jax.tree.map(lambda x: x[1], thetas)
    one = evaluate(keys[1], policy, second, env, params, 64)
    np.testing.assert_allclose(means[1], one[0], rtol=1e-5)


def test_fresh_episodes_per_key(gridworld):
    env, params, policy, theta, _ = gridworld
    a = episode_returns(jax.random.key(5), policy, theta, env, params, 64)
    b = episode_returns(jax.random.key(6), policy, theta, env, params, 64)
    assert not np.array_equal(a, b)


def test_summarize_and_errors():
    mean, stderr = summarize_returns(np.array([[1.0, 3.0], [2.0, 2.0]]))
    np.testing.assert_allclose(mean, [2.0, 2.0])
    np.testing.assert_allclose(stderr, [1.0, 0.0])
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    theta = policy.init(jax.random.key(0))
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="num_episodes"):
            evaluate(jax.random.key(0), policy, theta, env, params, bad)
