"""brax adapter: a short rollout agrees with brax's own reset and step; frozen after done; errors.

brax compiles take tens of seconds on the 2-core CPU, so only inverted_pendulum on the default
backend runs by default; the other tasks and backends are marked slow.
"""

import jax
import numpy as np
import pytest

from zopg.envs import make
from zopg.envs.brax_env import BACKENDS, DEFAULT_BACKEND
from zopg.errors import ConfigError

STEPS = 30


def _compare_with_brax(env_id, backend, batch=4, steps=STEPS, action_scale=1.0):
    """(ours, brax's) per-step (obs, reward, done) under the same resets and actions."""
    from brax import envs

    env, params = make(env_id, backend=backend)
    reference = envs.get_environment(env.brax_name, backend=backend)

    def one_episode(key):
        reset_key, action_key = jax.random.split(key)
        shape = (steps, *env.action_shape)
        actions = action_scale * jax.random.uniform(action_key, shape, minval=-1, maxval=1)
        obs, state = env.reset(reset_key, params)
        r_state = reference.reset(reset_key)

        def body(carry, action):
            state, r_state = carry
            obs, state, reward, done = env.step(None, state, action, params)
            r_state = reference.step(r_state, action)
            return (state, r_state), (obs, reward, done, r_state.obs, r_state.reward, r_state.done)

        _, out = jax.lax.scan(body, (state, r_state), actions)
        return obs, r_state.obs, out

    keys = jax.random.split(jax.random.key(0), batch)
    return jax.jit(jax.vmap(one_episode))(keys)


def _check_agreement(first_obs, r_first_obs, out):
    obs, reward, done, r_obs, r_reward, r_done = (np.asarray(x) for x in out)
    np.testing.assert_allclose(first_obs, r_first_obs, rtol=1e-6, atol=1e-6)
    # Up to and including the first done, every step is brax's own.
    live = np.cumsum(r_done > 0.5, axis=1) - (r_done > 0.5) == 0
    np.testing.assert_allclose(obs[live], r_obs[live], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward[live], r_reward[live], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(done[live], r_done[live] > 0.5)
    # After it, ours is frozen (brax keeps simulating): same obs, zero reward, still done.
    for i in range(obs.shape[0]):
        ended = np.flatnonzero(done[i])
        if ended.size:
            t = ended[0]
            assert np.all(obs[i, t:] == obs[i, t])
            assert np.all(reward[i, t + 1 :] == 0) and np.all(done[i, t:])
    return done


def test_inverted_pendulum_rollout_agrees_with_brax_step():
    # Full-range random pushes topple the pole within the window, so termination is covered.
    first_obs, r_first_obs, out = _compare_with_brax("brax/inverted_pendulum", DEFAULT_BACKEND)
    done = _check_agreement(first_obs, r_first_obs, out)
    assert done[:, -1].any(), "expected a termination inside the window"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["brax/hopper", "brax/halfcheetah"])
def test_locomotion_rollout_agrees_with_brax_step(env_id):
    _check_agreement(*_compare_with_brax(env_id, DEFAULT_BACKEND, batch=2, steps=10))


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != DEFAULT_BACKEND])
def test_other_backends_agree_with_brax_step(backend):
    _check_agreement(*_compare_with_brax("brax/inverted_pendulum", backend, batch=2, steps=10))


def test_protocol_and_defaults():
    env, params = make("brax/hopper")
    assert env.action_kind == "continuous" and env.backend == DEFAULT_BACKEND
    assert env.action_shape == (3,) and env.observation_shape(params) == (11,)
    low, high = env.action_bounds(params)
    np.testing.assert_array_equal(low, -1.0)
    np.testing.assert_array_equal(high, 1.0)
    assert env.horizon(params) == 250
    again, _ = make("brax/hopper")
    assert again == env and hash(again) == hash(env), "equal configs share compiled functions"
    # default_params keeps make()'s horizon (for code that falls back on it).
    short, short_params = make("brax/hopper", horizon=40)
    assert short.default_params == short_params and short.horizon(short.default_params) == 40
    assert env.default_params == params


def test_errors_name_field_and_allowed_values():
    with pytest.raises(ConfigError, match=r"unknown backend 'warp'.*generalized.*spring"):
        make("brax/inverted_pendulum", backend="warp")
    with pytest.raises(ConfigError, match=r"unknown brax/hopper field.*'speed'.*ctrl_cost_weight"):
        make("brax/hopper", speed=2.0)
    with pytest.raises(ConfigError, match="horizon = 0"):
        make("brax/halfcheetah", horizon=0)
    env, params = make("brax/hopper", horizon=50, terminate_when_unhealthy=False)
    assert params.horizon == 50 and dict(env.kwargs) == {"terminate_when_unhealthy": False}
