"""Policies (sampling, log-probs, flat view) and rollouts (keys, masks, returns)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from zopg import ConfigError
from zopg.envs import make
from zopg.policies import MLPCategorical, TabularSoftmax, flat_view, make_policy, num_params
from zopg.rollout import Trajectory, masked_return, rollout, rollout_batch


def test_sampling_frequencies_match_probabilities():
    policy = TabularSoftmax(num_states=2, num_actions=4, init_scale=1.0)
    theta = policy.init(jax.random.key(0))
    n = 50_000
    keys = jax.random.split(jax.random.key(1), n)
    actions, log_probs = jax.vmap(lambda k: policy.sample_and_log_prob(k, theta, 1))(keys)
    probs = np.asarray(policy.action_probs(theta, 1))
    freq = np.bincount(np.asarray(actions), minlength=4) / n
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n))
    np.testing.assert_allclose(log_probs, np.log(probs)[np.asarray(actions)], rtol=1e-5)
    np.testing.assert_allclose(
        policy.log_prob(theta, jnp.ones(n, jnp.int32), actions), log_probs, rtol=1e-5
    )


@pytest.mark.parametrize("policy_name", ["tabular", "mlp"])
def test_uniform_sampler_matches_probabilities(policy_name):
    """The bulk-uniform sampler used by rollouts draws from pi(. | obs) with correct log-probs."""
    env, params = make("gridworld/open-5x5")
    policy = make_policy(policy_name, env, params)
    theta = jax.tree_util.tree_map(
        lambda x: x + jax.random.normal(jax.random.key(2), x.shape), policy.init(jax.random.key(0))
    )
    n, obs = 50_000, jnp.full((50_000,), 6, jnp.int32)
    u = jax.random.uniform(jax.random.key(3), (n,))
    actions, log_probs = jax.jit(lambda th, u, o: policy.uniform_sampler(th)(u, o))(theta, u, obs)
    probs = np.asarray(policy.action_probs(theta, 6))
    freq = np.bincount(np.asarray(actions), minlength=4) / n
    assert np.all(np.abs(freq - probs) <= 5 * np.sqrt(probs * (1 - probs) / n))
    np.testing.assert_allclose(log_probs, policy.log_prob(theta, obs, actions), rtol=1e-5)


def test_tabular_init_is_uniform_by_default():
    policy = TabularSoftmax(num_states=3, num_actions=4)
    probs = policy.action_probs(policy.init(jax.random.key(0)), jnp.arange(3))
    np.testing.assert_allclose(probs, 0.25)


def test_flat_view_round_trip():
    env, params = make("gridworld/open-5x5")
    for name in ("tabular", "mlp"):
        policy = make_policy(name, env, params)
        theta = policy.init(jax.random.key(0))
        flat, unravel = flat_view(theta)
        assert flat.ndim == 1 and flat.size == num_params(theta)
        rebuilt = unravel(flat + 1.0)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a + 1.0, b), theta, rebuilt)


def test_mlp_policy_on_gridworld_is_near_uniform_and_valid():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("mlp", env, params, hidden_sizes=(16,))
    assert isinstance(policy, MLPCategorical) and policy.num_states == 25
    theta = policy.init(jax.random.key(0))
    probs = policy.action_probs(theta, jnp.arange(25))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert float(jnp.abs(probs - 0.25).max()) < 0.05


def test_policy_errors():
    env, params = make("gridworld/open-5x5")
    with pytest.raises(
        ConfigError, match=r"unknown policy 'lstm'; known policies: .*mlp, sft, tabular"
    ):
        make_policy("lstm", env, params)
    with pytest.raises(ConfigError, match="num_states = 0"):
        TabularSoftmax(num_states=0, num_actions=4)
    with pytest.raises(ConfigError, match="hidden_sizes"):
        make_policy("mlp", env, params, hidden_sizes=(0,))


def test_rollout_shapes_keys_and_determinism(builtin_env, random_tabular):
    _, env, params = builtin_env
    policy, theta = random_tabular
    traj = rollout_batch(jax.random.key(0), policy, theta, env, params, 64)
    horizon = params.horizon
    assert traj.obs.shape == (64, horizon) and traj.reward.shape == (64, horizon)
    assert traj.horizon == horizon and traj.batch_shape == (64,)
    assert bool(traj.valid.all())  # GridWorld episodes last exactly `horizon` steps
    # Every trajectory has its own keys: with a random policy, sequences differ.
    assert len({tuple(row) for row in np.asarray(traj.action)}) > 32
    again = rollout_batch(jax.random.key(0), policy, theta, env, params, 64)
    np.testing.assert_array_equal(traj.action, again.action)
    # Recorded log-probs are those of the policy at the recorded observations.
    np.testing.assert_allclose(
        traj.log_prob, policy.log_prob(theta, traj.obs, traj.action), rtol=1e-5
    )
    # Episodes start at S.
    assert np.all(np.asarray(traj.obs[:, 0]) == int(env.reset(jax.random.key(0), params)[0]))


@struct.dataclass
class _CountdownState:
    time: jax.Array


class _Countdown:
    """Test env: reward 1 per step, terminates after 3 steps, then keeps paying (must be masked)."""

    num_actions = 2
    action_kind = "discrete"

    def reset(self, key, params):
        return jnp.int32(0), _CountdownState(time=jnp.int32(0))

    def step(self, key, state, action, params):
        time = state.time + 1
        return jnp.int32(0), _CountdownState(time=time), jnp.float32(1.0), time >= 3

    def horizon(self, params):
        return 5


def test_valid_mask_stops_at_termination():
    env = _Countdown()
    policy = TabularSoftmax(num_states=1, num_actions=2)
    traj = rollout(jax.random.key(0), policy, policy.init(jax.random.key(0)), env, None, 5)
    np.testing.assert_array_equal(traj.valid, [True, True, True, False, False])
    np.testing.assert_array_equal(traj.reward, [1, 1, 1, 0, 0])
    assert float(masked_return(traj)) == 3.0


def test_masked_return_ignores_invalid_steps():
    traj = Trajectory(
        obs=jnp.zeros((2, 3)),
        action=jnp.zeros((2, 3), jnp.int32),
        reward=jnp.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]]),
        log_prob=jnp.zeros((2, 3)),
        valid=jnp.array([[True, True, True], [True, False, False]]),
    )
    np.testing.assert_allclose(masked_return(traj), [7.0, 1.0])
