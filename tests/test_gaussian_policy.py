"""Gaussian MLP policy: log-probs against jax.scipy.stats.norm, bounds, consistency; normaliser."""

import math

import jax
import jax.numpy as jnp
import jax.scipy.stats as jss
import numpy as np
import pytest

from zopg.errors import ConfigError
from zopg.policies import (
    MLPGaussian,
    NormalizedPolicy,
    RunningStats,
    flat_view,
    num_params,
)

LOW, HIGH = (-2.0, -1.0), (2.0, 3.0)  # different centres and half-ranges per dimension
OBS_DIM = 3


def _policy(bound, **kwargs):
    return MLPGaussian(obs_shape=(OBS_DIM,), low=LOW, high=HIGH, bound=bound, **kwargs)


@pytest.fixture(scope="module", params=["clip", "tanh"])
def setup(request):
    # A wide log-std makes clipping/saturation frequent, so bound handling is exercised.
    policy = _policy(request.param, hidden_sizes=(8,), init_log_std=0.3)
    params = policy.init(jax.random.key(0))
    # Shift the mean away from zero so the two tails differ.
    params = jax.tree.map(lambda x: x + 0.3, params)
    obs = jax.random.normal(jax.random.key(1), (512, OBS_DIM))
    keys = jax.random.split(jax.random.key(2), 512)
    action, log_prob = jax.jit(jax.vmap(lambda k, o: policy.sample_and_log_prob(k, params, o)))(
        keys, obs
    )
    return policy, params, obs, action, log_prob


def _reference_log_prob(policy, params, obs, action):
    """The same density from jax.scipy.stats.norm, written in action units."""
    mean, log_std = policy.distribution(params, obs)
    low, high = np.asarray(LOW), np.asarray(HIGH)
    center, half = (high + low) / 2, (high - low) / 2
    std = jnp.exp(log_std)
    if policy.bound == "tanh":
        y = np.clip((np.asarray(action) - center) / half, -1 + 1e-6, 1 - 1e-6)
        u = np.arctanh(y)
        per_dim = jss.norm.logpdf(u, mean, std) - np.log(half * (1 - np.tanh(u) ** 2))
    else:
        # Censored Gaussian over the action itself: density inside, tail mass at each bound.
        inside = jss.norm.logpdf(action, center + half * mean, half * std)
        upper = jss.norm.logsf(high, center + half * mean, half * std)
        lower = jss.norm.logcdf(low, center + half * mean, half * std)
        per_dim = jnp.where(action >= high, upper, jnp.where(action <= low, lower, inside))
    return jnp.sum(per_dim, axis=-1)


def test_log_prob_matches_scipy_norm(setup):
    policy, params, obs, action, log_prob = setup
    reference = _reference_log_prob(policy, params, obs, action)
    recomputed = policy.log_prob(params, obs, action)
    if policy.bound == "tanh":
        # Inverting tanh on a float32 action loses precision near the bounds; compare there
        # only where the action is clearly inside.
        y = np.abs((np.asarray(action) - np.add(LOW, HIGH) / 2) / (np.subtract(HIGH, LOW) / 2))
        inner = np.all(y < 0.99, axis=-1)
        assert inner.mean() > 0.5
        np.testing.assert_allclose(recomputed[inner], reference[inner], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(log_prob[inner], reference[inner], rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_allclose(recomputed, reference, rtol=1e-5, atol=1e-5)
        # The behaviour log-prob from sampling is the same function of the stored action.
        np.testing.assert_allclose(log_prob, recomputed, rtol=1e-6, atol=1e-6)


def test_actions_within_bounds_and_clip_mass_matches_tails(setup):
    policy, params, obs, action, _ = setup
    action = np.asarray(action)
    assert action.shape == (512, 2)
    assert np.all(action >= np.asarray(LOW)) and np.all(action <= np.asarray(HIGH))
    if policy.bound != "clip":
        return
    # The fraction of draws clipped onto the upper bound matches the Gaussian tail mass.
    mean, log_std = policy.distribution(params, obs)
    p_upper = np.asarray(jss.norm.sf(1.0, mean, jnp.exp(log_std)))
    at_upper = action >= np.asarray(HIGH)
    expected = p_upper.sum()
    sd = math.sqrt(np.sum(p_upper * (1 - p_upper)))
    assert at_upper.any()
    assert abs(at_upper.sum() - expected) < 5 * sd


@pytest.mark.parametrize("bound", ["clip", "tanh"])
def test_one_dimensional_distribution_normalises(bound):
    """Density over the interior plus the point masses at the bounds integrates to one."""
    policy = MLPGaussian(obs_shape=(2,), low=(-1.5,), high=(0.5,), bound=bound, init_log_std=0.2)
    params = jax.tree.map(lambda x: x + 0.2, policy.init(jax.random.key(0)))
    obs = jnp.array([0.3, -0.7])
    edges = np.linspace(-1.5, 0.5, 20001)
    grid = (edges[1:] + edges[:-1]) / 2
    density = np.exp(policy.log_prob(params, obs, grid[:, None]))
    total = density.sum() * (edges[1] - edges[0])
    if bound == "clip":
        total += np.exp(policy.log_prob(params, obs, jnp.array([[-1.5], [0.5]]))).sum()
    assert abs(total - 1.0) < 2e-3


def test_flat_view_is_mlp_plus_log_std():
    policy = _policy("clip", hidden_sizes=(5,))
    params = policy.init(jax.random.key(0))
    theta, unravel = flat_view(params)
    assert theta.shape == (num_params(params),)
    assert num_params(params) == OBS_DIM * 5 + 5 + 5 * 2 + 2 + 2
    assert "log_std" in params["params"]
    np.testing.assert_allclose(params["params"]["log_std"], -0.5)
    # Linear policies (no hidden layer) are allowed, as in ARS.
    assert num_params(_policy("clip", hidden_sizes=()).init(jax.random.key(0))) == 3 * 2 + 2 + 2
    mode = policy.mode(unravel(theta), jnp.zeros(OBS_DIM))
    assert np.all(np.abs(mode - np.add(LOW, HIGH) / 2) < 0.1), "starts near the range centre"


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown bound 'squash'; known bounds: clip, tanh"):
        _policy("squash")
    with pytest.raises(ConfigError, match="low < high"):
        MLPGaussian(obs_shape=(3,), low=(1.0,), high=(1.0,))
    with pytest.raises(ConfigError, match="hidden_sizes"):
        _policy("clip", hidden_sizes=(0,))


def test_running_stats_match_numpy_with_mask_and_merging():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(6, 50, 4)).astype(np.float32)
    mask = np.random.default_rng(1).random((6, 50)) < 0.7
    stats = RunningStats.zeros((4,))
    for chunk in range(3):  # merged in pieces of different content
        rows = slice(2 * chunk, 2 * chunk + 2)
        stats = jax.jit(RunningStats.update)(stats, data[rows], mask[rows])
    kept = data[mask]
    assert float(stats.count) == kept.shape[0]
    np.testing.assert_allclose(stats.mean, kept.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats.var, kept.var(axis=0), rtol=1e-4)
    frozen = stats.freeze(clip=5.0)
    hash(frozen)  # a static jit argument
    z = np.asarray(frozen(kept))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-3)


def test_normalized_policy_keeps_flat_view_and_normalises_obs():
    inner = _policy("clip", hidden_sizes=(4,))
    stats = RunningStats.zeros((OBS_DIM,)).update(
        jax.random.normal(jax.random.key(0), (100, OBS_DIM)) * 5 + 2
    )
    norm = stats.freeze()
    policy = NormalizedPolicy(inner, norm)
    params = policy.init(jax.random.key(1))
    assert flat_view(params)[0].shape == flat_view(inner.init(jax.random.key(1)))[0].shape
    obs = jnp.array([1.0, 20.0, -3.0])
    action = jnp.array([0.5, 0.0])
    np.testing.assert_allclose(
        policy.log_prob(params, obs, action), inner.log_prob(params, norm(obs), action)
    )
    np.testing.assert_allclose(
        policy.sample(jax.random.key(2), params, obs),
        inner.sample(jax.random.key(2), params, norm(obs)),
    )
    assert policy.action_kind == "continuous" and policy.action_shape == (2,)
    # No uniform sampler inside, so none outside: rollouts take the per-step-key path.
    assert not hasattr(policy, "uniform_sampler")
    # A method that could take observations but is not known to the wrapper is refused.
    with pytest.raises(AttributeError, match="does not forward"):
        policy._clip_log_prob  # noqa: B018
