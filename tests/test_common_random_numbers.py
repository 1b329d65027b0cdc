"""Common random numbers (zopg.algorithms.common_random_numbers): off, nothing changes; on, the
pairs are coupled, identical pairs are free ties (Δ̂ = 0, no query), the ZPG estimate stays
unbiased with a smaller Δ̂ variance, and ZSPO's sign agreement does not fall.

The estimate checks use the chi-square statistic of tests/test_zpg.py over all d coordinates,
with its 99.9% quantile as the threshold; variance comparisons use the F distribution of a
ratio of sample variances at the 0.1% level.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from zopg import ConfigError
from zopg.algorithms import (
    ParS2ZPOConfig,
    ZBCPGConfig,
    ZPGConfig,
    ZSPOConfig,
    make_train,
)
from zopg.algorithms.base import Problem
from zopg.algorithms.common_random_numbers import same_trajectories
from zopg.algorithms.sign_zo import make_majority_sign
from zopg.algorithms.zeroth_order import estimator_config, make_difference_fn
from zopg.envs import make
from zopg.estimators import sphere_direction, zo_gradient
from zopg.policies import flat_view, make_policy
from zopg.preferences import Oracle, make_link, preference_rate, value_difference
from zopg.rates.setting import (
    Point,
    make_setting,
    return_distribution,
    sign_agreement,
)
from zopg.rollout import Trajectory, rollout_batch


@pytest.fixture(scope="module")
def open_grid():
    """open-5x5 at a random tabular policy (as in tests/test_zpg.py), with a BT oracle."""
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta, _ = flat_view(policy.init(jax.random.key(5)))
    problem = Problem.build(env, policy, Oracle(make_link("bradley-terry")))
    v = sphere_direction(jax.random.key(2), problem.dim)
    return problem, theta, v


# -- what counts as identical -----------------------------------------------------------------


def _trajectories(valid_steps=(4, 2)):
    """Two hand-made episodes of horizon 4: scalar obs, valid for the first k steps."""
    valid = jnp.asarray([[t < k for t in range(4)] for k in valid_steps])
    obs = jnp.asarray([[0, 1, 2, 3], [0, 5, 6, 7]])
    return Trajectory(
        obs=obs,
        action=jnp.asarray([[1, 1, 2, 2], [1, 2, 3, 0]]),
        reward=jnp.where(valid, 1.0, 0.0),
        log_prob=jnp.zeros((2, 4)),
        valid=valid,
        final_obs=jnp.asarray([4, 8]),
    )


def test_same_trajectories_reads_what_a_teacher_can_read():
    a = _trajectories()
    assert same_trajectories(a, a).tolist() == [True, True]
    # A different log-probability (the other policy's) is not something a teacher sees.
    assert same_trajectories(a, a.replace(log_prob=a.log_prob + 1.0)).tolist() == [True, True]
    # Episode 1 is valid for two steps: what happens after does not count ...
    after_end = a.replace(action=a.action.at[1, 3].set(3), obs=a.obs.at[1, 3].set(9))
    assert same_trajectories(a, after_end).tolist() == [True, True]
    # ... but the cell its last valid step entered (obs[2]) does, as does any valid step.
    entered = a.replace(obs=a.obs.at[1, 2].set(9))
    assert same_trajectories(a, entered).tolist() == [True, False]
    assert same_trajectories(a, a.replace(action=a.action.at[0, 1].set(0))).tolist() == [
        False,
        True,
    ]
    assert same_trajectories(a, a.replace(final_obs=a.final_obs.at[0].set(0))).tolist() == [
        False,
        True,
    ]
    # Ending at another step is another trajectory.
    shorter = a.replace(valid=a.valid.at[0, 3].set(False))
    assert same_trajectories(a, shorter).tolist() == [False, True]


# -- off: nothing changes ---------------------------------------------------------------------


@pytest.mark.parametrize("config_cls", [ZPGConfig, ZBCPGConfig, ZSPOConfig, ParS2ZPOConfig])
def test_off_leaves_the_config_data_and_so_every_run_hash(config_cls):
    """Left out of to_data at its default, so the run hashes of earlier runs stand."""
    off = config_cls()
    assert "common_random_numbers" not in off.to_data()
    assert config_cls.from_data(off.to_data()) == off
    on = dataclasses.replace(off, common_random_numbers=True)
    assert on.to_data()["common_random_numbers"] is True
    assert config_cls.from_data(on.to_data()) == on


def test_off_the_difference_is_the_one_before_common_random_numbers(open_grid):
    """Bit for bit the pre-CRN code: independent keys for the two sides, every query spent."""
    problem, theta, v = open_grid
    config = ZPGConfig(num_pairs=16, num_queries=3)
    difference = jax.jit(make_difference_fn(config, problem), static_argnums=3)
    key = jax.random.key(11)
    delta, spent = difference(key, theta + v, theta, 16)

    k1, k0, kq = jax.random.split(key, 3)
    run = lambda k, th: rollout_batch(  # noqa: E731
        k, problem.policy, problem.unravel(th), problem.env, problem.env_params, 16
    )
    traj_1, traj_0 = run(k1, theta + v), run(k0, theta)
    feedback = problem.oracle.query(kq, traj_1, traj_0, 3)
    expected = value_difference(preference_rate(feedback), problem.oracle.link, config.r_max)
    np.testing.assert_array_equal(delta, expected)
    assert int(spent.queries) == 16 * 3


# -- on: free ties ----------------------------------------------------------------------------


def test_identical_pairs_are_free_ties_with_zero_delta(open_grid):
    problem, theta, v = open_grid
    n, m = 64, 5
    config = ZPGConfig(num_pairs=n, num_queries=m, common_random_numbers=True)
    difference = jax.jit(make_difference_fn(config, problem), static_argnums=3)
    key = jax.random.key(3)
    # A small step: some pairs come out identical, others not.
    theta_1 = theta + 0.5 * v
    delta, spent = difference(key, theta_1, theta, n)
    k1 = jax.random.split(key, 3)[0]
    run = lambda th: rollout_batch(  # noqa: E731
        k1, problem.policy, problem.unravel(th), problem.env, problem.env_params, n
    )
    free = np.asarray(same_trajectories(run(theta_1), run(theta)))
    assert 0 < free.sum() < n
    np.testing.assert_array_equal(np.asarray(delta)[free], 0.0)
    assert np.any(np.asarray(delta)[~free] != 0.0)
    assert int(spent.queries) == m * int((~free).sum())
    assert int(spent.judged_trajectories) == 2 * m * int((~free).sum())
    assert int(spent.trajectories) == 2 * n  # both sides are still rolled out
    # The same policy on both sides: every pair is free, and nothing is spent but rollouts.
    delta, spent = difference(key, theta, theta, n)
    np.testing.assert_array_equal(delta, 0.0)
    assert int(spent.queries) == 0 and int(spent.trajectories) == 2 * n
    # Without CRN the same two policies are compared by a teacher, query by query.
    independent = jax.jit(
        make_difference_fn(dataclasses.replace(config, common_random_numbers=False), problem),
        static_argnums=3,
    )
    delta, spent = independent(key, theta, theta, n)
    assert int(spent.queries) == n * m and np.any(np.asarray(delta) != 0.0)


@pytest.mark.parametrize("algo", ["zpg", "zbcpg"])
def test_a_run_counts_only_the_queries_it_asks(algo):
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    fields = {"num_iterations": 6, "num_pairs": 8, "num_queries": 3, "mu": 0.5}
    if algo == "zpg":
        config, per_iteration = ZPGConfig(**fields), 8
    else:
        config, per_iteration = ZBCPGConfig(**fields, block_size=10, num_blocks=2), 16
    crn = dataclasses.replace(config, common_random_numbers=True)
    # The budget gives the same iterations: as if every query were spent.
    assert crn.with_budget(10_000).num_iterations == config.with_budget(10_000).num_iterations
    _, metrics = make_train(crn, env, policy, oracle)(jax.random.key(0))
    queries = np.diff(metrics["budget/queries"], prepend=0)
    asked = np.round((1.0 - metrics["zo/free_ties"]) * per_iteration * 3).astype(int)
    np.testing.assert_array_equal(queries, asked)
    assert queries.sum() < 6 * per_iteration * 3  # at μ 0.5 some pairs are free ties
    np.testing.assert_array_equal(metrics["budget/judged_trajectories"], 2 * np.cumsum(queries))
    # Rollouts and env steps are spent as without CRN.
    _, independent = make_train(config, env, policy, oracle)(jax.random.key(0))
    for name in ("budget/trajectories", "budget/env_steps"):
        np.testing.assert_array_equal(metrics[name], independent[name])
    assert "zo/free_ties" not in independent


def test_exact_differences_refuse_common_random_numbers(open_grid):
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    config = ZPGConfig(difference="exact", common_random_numbers=True)
    with pytest.raises(ConfigError, match=r"common_random_numbers = True: needs sampled"):
        make_train(config, env, policy, None)


# -- on: the ZPG estimate ---------------------------------------------------------------------


def ball_smoothed_gradient(problem, theta, mu, num=20_000):
    """grad V_mu(theta) = E_{u ~ unit ball} grad V(theta + mu u) by Monte Carlo of exact
    gradients, and the squared standard error of each coordinate (as in tests/test_zpg.py)."""
    grad = jax.grad(problem.exact_value)

    def at_ball_point(key):
        k_dir, k_rad = jax.random.split(key)
        z = jax.random.normal(k_dir, theta.shape)
        radius = jax.random.uniform(k_rad) ** (1.0 / theta.shape[0])
        return grad(theta + mu * radius * z / jnp.linalg.norm(z))

    g = np.asarray(jax.jit(jax.vmap(at_ball_point))(jax.random.split(jax.random.key(1), num)))
    return g.mean(0), g.var(0, ddof=1) / num


def gradient_estimates(problem, theta, config, num_samples):
    difference_fn = make_difference_fn(config, problem)
    est = estimator_config(config).validate(problem.dim)
    run = jax.vmap(lambda k: zo_gradient(k, theta, difference_fn, est, config.mu)[0])
    return np.asarray(jax.jit(run)(jax.random.split(jax.random.key(0), num_samples)))


def chi_square(g, target, target_var, scale=1.0):
    var = g.var(0, ddof=1) / g.shape[0] + target_var
    return float(np.sum((scale * g.mean(0) - target) ** 2 / var))


@pytest.mark.parametrize(
    "difference, num_queries, samples",
    [("return", 1, 4_000), ("preference", 200, 2_000)],
)
def test_the_coupled_estimate_is_unbiased(open_grid, difference, num_queries, samples):
    """E ĝ is the ball-smoothed gradient with CRN too. For returns exactly (each side keeps its
    own distribution); through the BT inversion up to its O(1/M) bias, below the sampling error
    at M = 200 (as for independent pairs in tests/test_zpg.py)."""
    problem, theta, _ = open_grid
    config = ZPGConfig(
        mu=0.5,
        difference=difference,
        num_pairs=32,
        num_queries=num_queries,
        two_sided=True,
        common_random_numbers=True,
    )
    g = gradient_estimates(problem, theta, config, samples)
    target, target_var = ball_smoothed_gradient(problem, theta, config.mu)
    threshold = stats.chi2.ppf(0.999, problem.dim)
    assert chi_square(g, target, target_var) < threshold
    # Power: an estimate off by half in scale is rejected by the same statistic.
    assert chi_square(g, target, target_var, scale=1.5) > threshold


@pytest.mark.parametrize("mu", [0.5, 5.0])
def test_coupling_lowers_the_variance_of_delta_hat(open_grid, mu):
    """Per-pair Δ̂ (BT votes, M 10) along one direction: the same mean, a smaller variance. At μ
    0.5 most of the variance goes (most pairs are free ties); at the default μ 5 a little."""
    problem, theta, v = open_grid
    n, repeats = 64, 800
    draws = {}
    for crn in (False, True):
        config = ZPGConfig(num_pairs=n, num_queries=10, common_random_numbers=crn)
        difference = jax.vmap(make_difference_fn(config, problem), in_axes=(0, None, None, None))
        keys = jax.random.split(jax.random.key(7), repeats)
        delta, _ = jax.jit(difference, static_argnums=3)(keys, theta + mu * v, theta, n)
        draws[crn] = np.asarray(delta).ravel()
    count = draws[True].size
    ratio = draws[True].var(ddof=1) / draws[False].var(ddof=1)
    assert ratio < stats.f.ppf(0.001, count - 1, count - 1)
    # Both means estimate the same E Δ̂ (Welch's t at the 0.1% level).
    assert stats.ttest_ind(draws[True], draws[False], equal_var=False).pvalue > 0.001


# -- on: ZSPO ---------------------------------------------------------------------------------

MU, VOTES, REPEATS = 3.0, 21, 4000


@pytest.fixture(scope="module")
def cliff():
    """The cliff at a random policy and one direction where V(θ + μv) − V(θ) = 0.095 (the
    setting of tests/test_sign_methods.py)."""
    setting = make_setting(Point("gridworld/cliff-4x6", policy_seed=2, logit_scale=1.0))
    return setting, sphere_direction(jax.random.key(2), setting.dim)


def measured_agreement(setting, v, link, batch_size, common):
    base, theta = setting.problem, setting.theta
    problem = Problem.build(base.env, base.policy, Oracle(link), base.env_params)
    sign_fn = make_majority_sign(problem, VOTES, batch_size, common)
    keys = jax.random.split(jax.random.key(batch_size), REPEATS)
    signs, _, spent = jax.jit(jax.vmap(sign_fn, in_axes=(0, None, None)))(
        keys, theta + MU * v, theta
    )
    delta = float(base.exact_value(theta + MU * v) - base.exact_value(theta))
    return float(np.mean(np.asarray(signs) == np.sign(delta))), delta, spent


def test_zspo_sign_agreement_with_and_without_common_random_numbers(cliff):
    """P(ŝ = sign ΔV) measured with CRN against the closed form for independent batches: never
    lower by more than 4.5 binomial SE; higher where the teacher is exact (hard link, D 4:
    0.885 against 0.847), as the coupled batch means differ by less noise."""
    setting, v = cliff
    support, probs = return_distribution(setting.problem)
    theta = setting.theta
    gains = {}
    for name, batch_size in (("bradley-terry", 1), ("bradley-terry", 4), ("hard", 4)):
        link = make_link(name)
        freq, delta, spent = measured_agreement(setting, v, link, batch_size, True)
        exact = sign_agreement(
            link, support, probs(theta + MU * v), probs(theta), delta, batch_size, VOTES
        )
        se = math.sqrt(exact * (1 - exact) / REPEATS)
        assert freq > exact - 4.5 * se, (name, batch_size, freq, exact)
        gains[(name, batch_size)] = (freq - exact) / se
        assert np.all(np.asarray(spent.queries) <= VOTES)
    assert gains[("hard", 4)] > 4.5


def test_zspo_free_ties_ask_nothing_and_add_nothing(cliff):
    setting, _ = cliff
    base, theta = setting.problem, setting.theta
    problem = Problem.build(base.env, base.policy, Oracle(make_link("bradley-terry")))
    sign_fn = make_majority_sign(problem, VOTES, 4, True)
    # θ against itself: every batch pair is identical, so the margin is 0 and ŝ a fair coin.
    keys = jax.random.split(jax.random.key(0), 400)
    signs, margins, spent = jax.jit(jax.vmap(sign_fn, in_axes=(0, None, None)))(keys, theta, theta)
    np.testing.assert_array_equal(margins, 0.0)
    np.testing.assert_array_equal(spent.queries, 0)
    np.testing.assert_array_equal(spent.trajectories, 2 * VOTES * 4)
    assert abs(float(np.mean(signs))) < 4.5 / math.sqrt(400)


def test_zspo_run_counts_only_the_queries_it_asks():
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    config = ZSPOConfig(num_iterations=6, num_votes=8, batch_size=2, mu=0.5)
    crn = dataclasses.replace(config, common_random_numbers=True)
    _, metrics = make_train(crn, env, policy, oracle)(jax.random.key(1))
    queries = np.diff(metrics["budget/queries"], prepend=0)
    np.testing.assert_array_equal(queries, np.round((1 - metrics["zo/free_ties"]) * 8))
    assert queries.sum() < 6 * 8
    # A batch query shows 2D trajectories; a free tie shows none.
    np.testing.assert_array_equal(metrics["budget/judged_trajectories"], 4 * np.cumsum(queries))
    _, independent = make_train(config, env, policy, oracle)(jax.random.key(1))
    for name in ("budget/trajectories", "budget/env_steps"):
        np.testing.assert_array_equal(metrics[name], independent[name])
