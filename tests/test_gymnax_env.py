"""gymnax adapter: transitions equal gymnax's own, masks stop returns at the first done, errors."""

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg.envs import make
from zopg.errors import ConfigError
from zopg.policies import make_policy
from zopg.rollout import masked_return, rollout_batch

GYMNAX = {
    "gymnax/CartPole-v1": ("discrete", 2, (4,), 500),
    "gymnax/Acrobot-v1": ("discrete", 3, (6,), 500),
    "gymnax/Pendulum-v1": ("continuous", None, (3,), 200),
    "gymnax/MountainCarContinuous-v0": ("continuous", None, (2,), 999),
}
STEPS = 40


@pytest.mark.parametrize("env_id", sorted(GYMNAX))
def test_protocol_attributes(env_id):
    env, params = make(env_id)
    kind, num_actions, obs_shape, horizon = GYMNAX[env_id]
    assert env.action_kind == kind
    assert env.num_actions == num_actions
    assert env.observation_shape(params) == obs_shape
    assert env.horizon(params) == horizon
    if kind == "continuous":
        low, high = env.action_bounds(params)
        assert low.shape == high.shape == env.action_shape == (1,)
        assert np.all(low < high)
    obs, _ = env.reset(jax.random.key(0), params)
    assert obs.shape == obs_shape and obs.dtype == jnp.float32


def _random_actions(key, env, params, shape):
    if env.action_kind == "discrete":
        return jax.random.randint(key, shape, 0, env.num_actions)
    low, high = env.action_bounds(params)
    return jax.random.uniform(key, (*shape, *env.action_shape), minval=low, maxval=high)


@pytest.mark.parametrize("env_id", sorted(GYMNAX))
def test_transitions_match_gymnax_step(env_id):
    """Along our own trajectories, each (key, state, action) gives gymnax's transition.

    A short max_steps_in_episode makes truncation happen inside the window, so terminal and
    truncated transitions are compared too (gymnax's pre-reset observation is in its info).
    """
    env, params = make(env_id, max_steps_in_episode=25)
    reference, _ = gymnax.make(env.gymnax_id)
    batch = 8

    def one_episode(key):
        reset_key, action_key, step_key = jax.random.split(key, 3)
        actions = _random_actions(action_key, env, params, (STEPS,))
        step_keys = jax.random.split(step_key, STEPS)
        _, state = env.reset(reset_key, params)

        def body(state, inputs):
            key, action = inputs
            obs, next_state, reward, done = env.step(key, state, action, params)
            r_obs, r_state, r_reward, terminated, truncated, info = reference.step(
                key, state, action, params.gymnax
            )
            ours = (obs, reward, done, next_state)
            theirs = (info["final_observation"], r_reward, terminated | truncated, r_state)
            return next_state, (ours, theirs, r_obs)

        return jax.lax.scan(body, state, (step_keys, actions))[1]

    ours, theirs, reset_obs = jax.jit(jax.vmap(one_episode))(
        jax.random.split(jax.random.key(1), batch)
    )
    (obs, reward, done, state), (r_obs, r_reward, r_done, r_state) = ours, theirs
    np.testing.assert_allclose(obs, r_obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reward, r_reward, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(done, r_done)
    assert bool(done.any()), "the window should contain terminal or truncated transitions"
    # Where gymnax did not reset, the whole next state agrees; where it did, ours did not reset.
    for ours_leaf, theirs_leaf in zip(
        jax.tree.leaves(state), jax.tree.leaves(r_state), strict=True
    ):
        keep = np.asarray(~done).reshape(done.shape + (1,) * (ours_leaf.ndim - done.ndim))
        np.testing.assert_allclose(
            np.where(keep, ours_leaf, 0), np.where(keep, theirs_leaf, 0), rtol=1e-6, atol=1e-6
        )
    assert np.all(np.diff(np.asarray(state.time), axis=1) == 1), "our time never resets"
    assert reset_obs.shape == obs.shape


@pytest.fixture(scope="module")
def cartpole_rollouts():
    env, params = make("gymnax/CartPole-v1", max_steps_in_episode=60)
    policy = make_policy("mlp", env, params, hidden_sizes=(8,))
    theta = policy.init(jax.random.key(3))
    traj = rollout_batch(jax.random.key(4), policy, theta, env, params, 32)
    return env, params, traj


def test_masks_stop_returns_at_first_done(cartpole_rollouts):
    """Replaying the stored actions through gymnax directly gives the same episode lengths.

    CartPole is deterministic given its first state, which its observation is. gymnax's own
    step auto-resets; the replay stops counting at its first `terminated | truncated`.
    """
    _, params, traj = cartpole_rollouts
    reference, _ = gymnax.make("CartPole-v1")
    step = jax.jit(jax.vmap(reference.step, in_axes=(None, 0, 0, None)))
    obs0 = traj.obs[:, 0]
    state = reference.reset_env(jax.random.key(0), params.gymnax)[1].replace(
        x=obs0[:, 0],
        x_dot=obs0[:, 1],
        theta=obs0[:, 2],
        theta_dot=obs0[:, 3],
        time=jnp.zeros(obs0.shape[0], jnp.int32),
    )
    alive = np.ones(obs0.shape[0], bool)
    expected_return = np.zeros(obs0.shape[0])
    expected_valid = np.zeros(traj.valid.shape, bool)
    for t in range(traj.horizon):
        _, state, reward, terminated, truncated, _ = step(
            jax.random.key(0), state, traj.action[:, t], params.gymnax
        )
        expected_valid[:, t] = alive
        expected_return += np.where(alive, np.asarray(reward), 0.0)
        alive &= ~np.asarray(terminated | truncated)
    np.testing.assert_array_equal(traj.valid, expected_valid)
    np.testing.assert_allclose(masked_return(traj), expected_return)
    assert np.all(np.asarray(traj.reward)[~expected_valid] == 0)
    lengths = np.asarray(traj.valid).sum(axis=1)
    # Both kinds of ending occur: early terminations and truncation at max_steps_in_episode.
    assert lengths.min() < 60 and lengths.max() == 60


def test_pendulum_never_terminates_and_truncates_at_max_steps():
    env, params = make("gymnax/Pendulum-v1", max_steps_in_episode=30, horizon=30)
    policy = make_policy("gaussian", env, params, hidden_sizes=())
    traj = rollout_batch(jax.random.key(0), policy, policy.init(jax.random.key(1)), env, params, 4)
    assert bool(traj.valid.all())
    assert np.all(np.asarray(traj.reward) < 0)


def test_unknown_env_lists_known_ids():
    with pytest.raises(ConfigError) as err:
        make("gymnax/Nope")
    message = str(err.value)
    for env_id in (*GYMNAX, "brax/hopper", "gridworld/open-5x5"):
        assert env_id in message


def test_override_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"unknown gymnax/CartPole-v1 field.*'grav'.*gravity"):
        make("gymnax/CartPole-v1", grav=1.0)
    with pytest.raises(ConfigError, match=r"horizon = 501: must be in 1..500"):
        make("gymnax/CartPole-v1", horizon=501)
    with pytest.raises(ConfigError, match="max_steps_in_episode"):
        make("gymnax/CartPole-v1", max_steps_in_episode=0)
    with pytest.raises(ConfigError, match="gravity = nan"):
        make("gymnax/CartPole-v1", gravity=float("nan"))
    env, params = make("gymnax/CartPole-v1", gravity=5.0, horizon=100)
    assert params.gymnax.gravity == 5.0 and env.horizon(params) == 100


def test_env_policy_mismatch_is_a_clear_error():
    cartpole, cp_params = make("gymnax/CartPole-v1")
    pendulum, pd_params = make("gymnax/Pendulum-v1")
    with pytest.raises(ConfigError, match=r"'mlp' needs discrete actions.*continuous.*'gaussian'"):
        make_policy("mlp", pendulum, pd_params)
    with pytest.raises(ConfigError, match=r"'gaussian' needs continuous actions.*discrete"):
        make_policy("gaussian", cartpole, cp_params)
    with pytest.raises(ConfigError, match="'tabular' needs a tabular environment"):
        make_policy("tabular", cartpole, cp_params)


def test_default_params_keep_what_make_was_given():
    """Code that falls back on env.default_params (make_train without env_params) must see
    make()'s overrides, not the package defaults."""
    from zopg.algorithms.base import Problem

    env, params = make("gymnax/CartPole-v1", horizon=50, gravity=9.0)
    assert env.default_params == params
    policy = make_policy("mlp", env, params, hidden_sizes=(4,))
    problem = Problem.build(env, policy, None)
    assert env.horizon(problem.env_params) == 50 and problem.env_params.gymnax.gravity == 9.0
    plain, plain_params = make("gymnax/CartPole-v1")
    assert plain.default_params == plain_params and env.horizon(plain_params) == 500
    assert hash(env) != hash(plain)  # different settings, different compiled functions
