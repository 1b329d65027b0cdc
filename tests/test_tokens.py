"""The token environment: sizes, every step's observation, the HMM prompt's law, and refusals."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.envs import TokenEnv, make
from zopg.envs.tokens import HMM_EMITS, HMM_STATES, hmm_sample, hmm_tables
from zopg.policies import make_policy
from zopg.rollout import rollout_batch

ENV_ID = "tokens/hmm-v16-l16"


def test_defaults_are_sixteen_tokens_of_sixteen():
    env, params = make(ENV_ID)
    assert isinstance(env, TokenEnv)
    assert (params.vocab, params.length, params.prompt_length) == (16, 16, 0)
    assert env.num_actions == 16 and env.action_kind == "discrete"
    assert env.horizon(params) == 16
    assert env.observation_shape(params) == (17,)
    assert env.token_shape(params) == (16, 16)


def test_every_step_writes_the_action_and_moves_the_position():
    env, params = make(ENV_ID, vocab=3, length=4)
    assert env.observation_shape(params) == (5,)
    obs, state = env.reset(jax.random.PRNGKey(0), params)
    np.testing.assert_array_equal(obs, [3, 3, 3, 3, 0])  # all pad (= vocab), position 0
    expected = [[2, 3, 3, 3, 1], [2, 0, 3, 3, 2], [2, 0, 1, 3, 3], [2, 0, 1, 2, 4]]
    for t, (action, want) in enumerate(zip([2, 0, 1, 2], expected, strict=True)):
        obs, state, reward, done = env.step(jax.random.PRNGKey(t), state, jnp.int32(action), params)
        np.testing.assert_array_equal(obs, want)
        assert obs.dtype == jnp.int32
        assert float(reward) == 0.0 and reward.dtype == jnp.float32
        assert bool(done) == (t == 3)
        assert int(state.time) == t + 1
    # A step past the end changes nothing (rollouts never take one, but it must not wrap).
    after, _, reward, done = env.step(jax.random.PRNGKey(9), state, jnp.int32(1), params)
    np.testing.assert_array_equal(after, obs)
    assert bool(done) and float(reward) == 0.0


def test_step_and_step_from_uniform_agree():
    env, params = make(ENV_ID, vocab=5, length=3)
    _, state = env.reset(jax.random.PRNGKey(0), params)
    a = env.step(jax.random.PRNGKey(1), state, jnp.int32(4), params)
    b = env.step_from_uniform(jnp.float32(0.7), state, jnp.int32(4), params)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_a_rollout_writes_its_actions_into_the_final_observation():
    env, params = make(ENV_ID, vocab=4, length=5, prompt_length=2)
    policy = make_policy("mlp", env, params)  # any discrete policy of the observation
    traj = rollout_batch(
        jax.random.PRNGKey(0), policy, policy.init(jax.random.PRNGKey(1)), env, params, 6
    )
    np.testing.assert_array_equal(traj.final_obs[:, 2:7], traj.action)
    np.testing.assert_array_equal(traj.final_obs[:, -1], 7)
    np.testing.assert_array_equal(traj.obs[:, :, -1], np.broadcast_to(np.arange(2, 7), (6, 5)))
    np.testing.assert_array_equal(traj.obs[:, 0, :2], traj.final_obs[:, :2])  # the prompt
    assert not np.any(np.asarray(traj.reward)) and np.all(traj.valid)


def test_the_hmm_is_fixed_by_its_seed_and_sparse():
    initial, transition, emission = hmm_tables(16, 0)
    assert initial.shape == (HMM_STATES,) and transition.shape == (HMM_STATES, HMM_STATES)
    assert emission.shape == (HMM_STATES, 16)
    np.testing.assert_allclose(transition.sum(axis=1), 1.0)
    np.testing.assert_allclose(emission.sum(axis=1), 1.0)
    assert np.all((emission > 0).sum(axis=1) <= HMM_EMITS)
    hmm_tables.cache_clear()  # built again from the seed alone, the same tables
    np.testing.assert_array_equal(hmm_tables(16, 0)[2], emission)
    assert not np.array_equal(hmm_tables(16, 1)[2], emission)


def test_prompts_are_deterministic_per_key_and_differ_across_keys():
    env, params = make(ENV_ID, prompt_length=6)
    obs_a, _ = env.reset(jax.random.PRNGKey(3), params)
    obs_b, _ = env.reset(jax.random.PRNGKey(3), params)
    obs_c, _ = env.reset(jax.random.PRNGKey(4), params)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.array_equal(obs_a[:6], obs_c[:6])
    assert np.all(obs_a[:6] < 16) and np.all(obs_a[6:-1] == 16) and int(obs_a[-1]) == 6


def brute_force_prompt_probs(vocab, seed, prompt_length):
    """P(prompt) for every prompt, summing over every hidden path (numpy, independent of the
    forward algorithm)."""
    initial, transition, emission = hmm_tables(vocab, seed)
    probs = {}
    for prompt in itertools.product(range(vocab), repeat=prompt_length):
        total = 0.0
        for path in itertools.product(range(HMM_STATES), repeat=prompt_length):
            p = initial[path[0]] * emission[path[0], prompt[0]]
            for t in range(1, prompt_length):
                p *= transition[path[t - 1], path[t]] * emission[path[t], prompt[t]]
            total += p
        probs[prompt] = total
    return probs


def test_prompt_log_prob_is_the_hmm_law_and_sampling_follows_it():
    env, params = make(ENV_ID, vocab=3, length=1, prompt_length=3, seed=5)
    exact = brute_force_prompt_probs(3, 5, 3)
    prompts = np.array(list(exact))
    probs = np.exp(np.asarray(env.prompt_log_prob(params, prompts), np.float64))
    np.testing.assert_allclose(probs, list(exact.values()), rtol=1e-5, atol=1e-7)
    assert abs(probs.sum() - 1.0) < 1e-5
    # Frequencies of 40,000 sampled prompts against the law: every cell within 5 sd.
    n = 40_000
    u = jax.random.uniform(jax.random.PRNGKey(0), (n, 3, 2))
    drawn = np.asarray(jax.vmap(lambda x: hmm_sample(x, 3, 5))(u))
    codes = drawn @ np.array([9, 3, 1])
    freq = np.bincount(codes, minlength=27) / n
    expected = np.array([exact[tuple(p)] for p in itertools.product(range(3), repeat=3)])
    assert np.all(np.abs(freq - expected) <= 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vocab": 1}, r"vocab = 1: must be an integer in \[2, 4096\]"),
        ({"length": 0}, r"length = 0: must be an integer in \[1, 4096\]"),
        ({"prompt_length": -1}, r"prompt_length = -1: must be an integer in \[0, 4096\]"),
        ({"vocab": 2.5}, r"vocab = 2.5: must be an integer"),
        ({"seed": True}, r"seed = True: must be an integer"),
        ({"vocabulary": 4}, r"unknown token-environment field\(s\) \['vocabulary'\]; allowed: "),
    ],
)
def test_bad_overrides_name_the_field_and_the_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(ENV_ID, **overrides)


def test_equal_settings_give_equal_envs():
    # Rollouts are jitted with the env as a static argument: equal envs share compiled code.
    assert make(ENV_ID, vocab=3)[0] == make(ENV_ID, vocab=3)[0]
    assert hash(make(ENV_ID, vocab=3)[0]) == hash(make(ENV_ID, vocab=3)[0])
