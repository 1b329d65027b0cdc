"""ZPG and ZBCPG on GridWorld: estimates vs exact gradients, blocks, determinism, errors.

The estimate tests use a chi-square statistic over all d coordinates: sum_i (mean_i - target_i)^2
/ var_i, where var_i is the squared standard error of the estimate's mean plus that of the target
(itself a Monte Carlo average of exact gradients). Under the claim E[g] = target it follows a
chi-square law with d degrees of freedom, so the threshold is its 99.9% quantile.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from zopg import ConfigError
from zopg.algorithms import ZBCPGConfig, ZPGConfig, make_train, make_training
from zopg.algorithms.base import Problem, Spent
from zopg.algorithms.zeroth_order import estimator_config, make_difference_fn
from zopg.envs import make
from zopg.estimators import EstimatorConfig, block_zo_gradient, zo_gradient
from zopg.policies import flat_view, make_policy
from zopg.preferences import Oracle, Teacher, make_link, preference_rate
from zopg.rollout import masked_return, rollout_batch


@pytest.fixture(scope="module")
def setup():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta, _ = flat_view(policy.init(jax.random.key(5)))
    return env, params, policy, theta


def ball_smoothed_gradient(problem, theta, mu, num=20_000):
    """Monte Carlo of grad V_mu(theta) = E_{u ~ unit ball} grad V(theta + mu u), exact gradients.

    For sphere directions E[g] equals this (ball smoothing), whatever the sidedness.
    """
    grad = jax.grad(problem.exact_value)

    def at_ball_point(key):
        k_dir, k_rad = jax.random.split(key)
        z = jax.random.normal(k_dir, theta.shape)
        radius = jax.random.uniform(k_rad) ** (1.0 / theta.shape[0])
        return grad(theta + mu * radius * z / jnp.linalg.norm(z))

    g = np.asarray(jax.jit(jax.vmap(at_ball_point))(jax.random.split(jax.random.key(1), num)))
    return g.mean(0), g.var(0, ddof=1) / num


def estimates(setup, config, oracle, num_samples):
    env, _, policy, theta = setup
    problem = Problem.build(env, policy, oracle)
    difference_fn = make_difference_fn(config, problem)
    est = estimator_config(config).validate(problem.dim)
    run = jax.vmap(lambda k: zo_gradient(k, theta, difference_fn, est, config.mu)[0])
    keys = jax.random.split(jax.random.key(0), num_samples)
    return problem, np.asarray(jax.jit(run)(keys))


def chi_square(g, target, target_var, scale=1.0):
    var = g.var(0, ddof=1) / g.shape[0] + target_var
    return float(np.sum((scale * g.mean(0) - target) ** 2 / var))


@pytest.mark.parametrize("two_sided", [False, True])
def test_exact_difference_estimate_matches_exact_gradient(setup, two_sided):
    config = ZPGConfig(mu=0.3, difference="exact", two_sided=two_sided, num_pairs=1)
    problem, g = estimates(setup, config, None, 20_000)
    theta = setup[3]
    target, target_var = ball_smoothed_gradient(problem, theta, config.mu)
    threshold = stats.chi2.ppf(0.999, problem.dim)
    assert chi_square(g, target, target_var) < threshold
    # Power: an estimator off by 20% in scale is rejected by the same statistic.
    assert chi_square(g, target, target_var, scale=0.8) > threshold
    # Smoothing bias: grad V_mu is within 1% of the exact gradient at this mu.
    exact = np.asarray(jax.grad(problem.exact_value)(theta))
    assert np.linalg.norm(target - exact) < 0.01 * np.linalg.norm(exact)


@pytest.mark.parametrize("link", ["bradley-terry", "thurstone"])
def test_preference_estimate_matches_exact_gradient(setup, link):
    """With M = 200 votes per pair the link-inversion bias (O(1/M)) is below the sampling error."""
    config = ZPGConfig(
        mu=0.5, difference="preference", two_sided=True, num_pairs=64, num_queries=200
    )
    problem, g = estimates(setup, config, Oracle(make_link(link)), 3_000)
    target, target_var = ball_smoothed_gradient(problem, setup[3], config.mu)
    threshold = stats.chi2.ppf(0.999, problem.dim)
    assert chi_square(g, target, target_var) < threshold
    # Power: twice the right scale (e.g. d/mu for a two-sided estimate) is rejected.
    assert chi_square(g, target, target_var, scale=2.0) > threshold


def small_run(algo, **overrides):
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    fields = {"num_iterations": 5, "num_pairs": 8, "num_queries": 3, **overrides}
    if algo == "zpg":
        config = ZPGConfig(**fields)
    else:
        config = ZBCPGConfig(**{"block_size": 10, **fields})
    return config, env, make_train(config, env, policy, oracle, probe=True)


@pytest.mark.parametrize("optimizer", ["sgd", pytest.param("adam", marks=pytest.mark.slow)])
def test_zbcpg_changes_only_the_chosen_blocks(optimizer):
    config, env, train = small_run("zbcpg", num_blocks=3, optimizer=optimizer, num_iterations=1)
    one = ZBCPGConfig(**{**config.__dict__, "num_iterations": 2})
    policy = make_policy("tabular", env, env.default_params)
    train_2 = make_train(one, env, policy, Oracle(make_link("bradley-terry")))
    for seed in range(4):
        key = jax.random.key(seed)
        start, _ = flat_view(policy.init(jax.random.split(key)[0]))
        after_1, _ = flat_view(train(key)[0])
        changed = np.asarray(after_1 != start)
        assert changed.sum() == config.block_size * config.num_blocks
        # The second iteration moves other blocks, but never more than P * K coordinates.
        # (A T=2 program may round differently from a T=1 one, hence the 1e-5 floor.)
        after_2, _ = flat_view(train_2(key)[0])
        step_2 = np.abs(np.asarray(after_2 - after_1)) > 1e-5
        assert 0 < step_2.sum() <= config.block_size * config.num_blocks


@pytest.mark.parametrize("algo", ["zpg", "zbcpg"])
def test_budget_counters(algo):
    config, env, train = small_run(algo, num_blocks=2) if algo == "zbcpg" else small_run(algo)
    _, metrics = train(jax.random.key(0))
    blocks = getattr(config, "num_blocks", 1)
    horizon = env.horizon(env.default_params)
    it = np.arange(1, config.num_iterations + 1)
    per_iter_pairs = config.num_pairs * blocks
    np.testing.assert_array_equal(
        metrics["budget/queries"], it * per_iter_pairs * config.num_queries
    )
    np.testing.assert_array_equal(metrics["budget/trajectories"], it * 2 * per_iter_pairs)
    # Every pair query shows the human two trajectories.
    np.testing.assert_array_equal(
        metrics["budget/judged_trajectories"], it * 2 * per_iter_pairs * config.num_queries
    )
    np.testing.assert_array_equal(metrics["budget/env_steps"], it * 2 * per_iter_pairs * horizon)
    for key in ("exact/value", "exact/value_before", "exact/grad_norm_sq", "zo/delta_hat"):
        assert metrics[key].shape == (config.num_iterations,)
        chex.assert_tree_all_finite(metrics[key])
    # Values are chained: V after iteration t is V before iteration t + 1.
    np.testing.assert_allclose(
        metrics["exact/value"][:-1], metrics["exact/value_before"][1:], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("algo", ["zpg", pytest.param("zbcpg", marks=pytest.mark.slow)])
def test_determinism_and_single_compilation(algo):
    _, _, train = small_run(algo)
    _, first = train(jax.random.key(3))
    _, again = train(jax.random.key(3))
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, again)
    _, other = train(jax.random.key(4))
    assert not np.array_equal(first["zo/delta_hat"], other["zo/delta_hat"])
    # One compiled function serves every key ...
    assert train._cache_size() == 1
    # ... and tracing the same pure function again for new keys never re-traces. (chex counts
    # per code location, and both algorithms share the train loop's, so reset the counter.)
    chex.clear_trace_counter()
    counted = jax.jit(chex.assert_max_traces(train.__wrapped__, n=1))
    for seed in range(3):
        counted(jax.random.key(seed))
    # vmapped over seeds, it gives the same numbers as one seed at a time.
    _, batched = jax.vmap(train)(jnp.stack([jax.random.key(3), jax.random.key(4)]))
    np.testing.assert_allclose(batched["exact/value"][0], first["exact/value"], rtol=1e-5)


@pytest.mark.parametrize(
    ("algo", "overrides", "match"),
    [
        ("zpg", {"mu": 0.0}, r"mu = 0.0: must be in \(0, inf\)"),
        ("zpg", {"mu": -1.0}, "mu = -1.0"),
        ("zpg", {"num_pairs": 0}, r"num_pairs = 0: must be an integer in \[1, inf\]"),
        ("zpg", {"num_queries": 0}, r"num_queries = 0: must be an integer in \[1, inf\]"),
        ("zpg", {"num_iterations": 0}, "num_iterations = 0"),
        ("zpg", {"step_size": -0.1}, "step_size = -0.1"),
        ("zpg", {"direction": "cauchy"}, "direction = 'cauchy': must be one of sphere"),
        ("zpg", {"direction": "block-sphere", "block_size": 0}, r"block_size = 0.*\[1, inf\]"),
        ("zpg", {"direction": "block-sphere", "block_size": 97}, r"block_size = 97.*1\.\.96"),
        ("zpg", {"difference": "oracle"}, "difference = 'oracle': must be one of preference"),
        ("zpg", {"optimizer": "lbfgs"}, "optimizer = 'lbfgs': must be one of sgd, adam"),
        ("zpg", {"r_max": 0.0}, "r_max = 0.0"),
        ("zbcpg", {"block_size": 0}, r"block_size = 0.*\[1, inf\]"),
        ("zbcpg", {"block_size": 200}, r"block_size = 200.*1\.\.96"),
        ("zbcpg", {"num_blocks": 20}, "num_blocks = 20: must be <= 9"),
        ("zbcpg", {"num_blocks": 0}, "num_blocks = 0"),
        ("zbcpg", {"partition": "striped"}, "partition = 'striped': must be one of random"),
        ("zbcpg", {"direction": "block-sphere"}, "direction = 'block-sphere': must be one of"),
        ("zpg", {"link": "linear"}, "link = 'linear': must be a link"),
    ],
)
def test_bad_configs(algo, overrides, match):
    with pytest.raises(ConfigError, match=match):
        small_run(algo, **overrides)


class _NoModel:
    """GridWorld dynamics without the exact tabular model (as for gymnax or brax envs)."""

    def __init__(self, env):
        self.num_actions, self.action_kind = env.num_actions, env.action_kind
        self.reset, self.step, self.horizon = env.reset, env.step, env.horizon
        self.num_states, self.default_params = env.num_states, env.default_params


def test_exact_difference_needs_a_tabular_env():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    wrapped = _NoModel(env)
    with pytest.raises(ConfigError, match="needs a tabular environment"):
        make_train(ZPGConfig(difference="exact"), wrapped, policy, None)


def test_schedules_for_step_size_and_mu():
    """alpha and mu may be schedules (callables of the iteration, as in optax)."""
    import optax

    mu = optax.linear_schedule(2.0, 1.0, transition_steps=4)
    _, _, train = small_run("zpg", mu=mu, step_size=lambda t: 0.1 / jnp.sqrt(t + 1.0))
    _, metrics = train(jax.random.key(0))
    np.testing.assert_allclose(metrics["schedule/mu"], [2.0, 1.75, 1.5, 1.25, 1.0])
    np.testing.assert_allclose(
        metrics["schedule/step_size"], 0.1 / np.sqrt(np.arange(1, 6)), rtol=1e-6
    )


@pytest.mark.parametrize("algo", ["zpg", pytest.param("zbcpg", marks=pytest.mark.slow)])
def test_chunked_run_equals_one_run(algo):
    """Iteration keys depend on t only, so chunks [0, 2) + [2, 5) reproduce one [0, 5) scan."""
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    config_cls = ZPGConfig if algo == "zpg" else ZBCPGConfig
    fields = {"num_iterations": 5, "num_pairs": 8, "num_queries": 3}
    if algo == "zbcpg":
        fields["block_size"] = 10
    trainer = make_training(config_cls(**fields), env, policy, oracle)
    key = jax.random.key(9)
    final, whole = jax.jit(trainer.train)(key)
    run = jax.jit(trainer.run, static_argnums=2)
    carry, first = run(trainer.init(key), 0, 2)
    _, second = run(carry, 2, 3)
    for name, values in whole.items():
        np.testing.assert_array_equal(np.concatenate([first[name], second[name]]), values)
    # The runner's form, with traced bounds: the same state and the last iteration's metrics.
    advance = jax.jit(trainer.advance)
    carry, _ = advance(trainer.init(key), 0, 2)
    carry, last = advance(carry, 2, 5)
    np.testing.assert_array_equal(flat_view(trainer.final_params(carry))[0], flat_view(final)[0])
    for name, values in whole.items():
        np.testing.assert_array_equal(last[name], values[-1])


# -- wiring that the mutation run found untested (issue 26) -----------------------------------
#
# `make mutation` changed zopg/algorithms/zeroth_order.py one token at a time, and some of those
# mutants passed every test above: a config's two_sided, spend or partition not reaching the
# estimator, the optimizer or the sign of its step swapped, the step size dropped, the learner's
# mistake_rate ignored, the return difference or the unit cost miscounted, a refusal garbled.
# Each test below checks one piece of that wiring exactly (fixed keys, no sampling tolerance);
# benchmarks/studies/mutation_equivalent.toml says why the remaining mutants change nothing.

ALPHA, MU, PAIRS = 0.1, 2.0, 4
# The estimator's defaults, against which each setting of a case must change the estimate.
ESTIMATOR_DEFAULTS = {"two_sided": False, "spend": "one-direction", "partition": "random"}
ONE_ITERATION = {
    # ZPG with every estimator setting away from its default, and SGD.
    "zpg-sgd": (
        "zpg",
        {
            "two_sided": True,
            "spend": "many-directions",
            "direction": "block-sphere",
            "block_size": 7,
            "partition": "fixed",
        },
    ),
    # ZPG with Adam, and schedules that return Python ints (their metrics are still float32).
    "zpg-adam": ("zpg", {"optimizer": "adam", "mu": lambda t: 1, "step_size": lambda t: 2}),
    # ZBCPG: three blocks of a fixed partition into runs of 7, two-sided.
    "zbcpg-sgd": (
        "zbcpg",
        {"two_sided": True, "partition": "fixed", "block_size": 7, "num_blocks": 3},
    ),
}


@pytest.fixture(scope="module")
def cliff():
    """cliff-4x6 (d = 96) and a tabular policy starting at the uniform policy (θ = 0)."""
    env, params = make("gridworld/cliff-4x6")
    return env, params, make_policy("tabular", env, params)


def exact_difference(problem):
    """V(θ₁) − V(θ₀) from the tabular model, written out here rather than taken from zopg."""

    def difference(key, theta_1, theta_0, num_pairs):
        delta = problem.exact_value(theta_1) - problem.exact_value(theta_0)
        return jnp.full((num_pairs,), delta), Spent.zero()

    return difference


# One case in make test; the others in make test-all and the mutation runs.
@pytest.mark.parametrize(
    "case",
    [c if c == "zpg-sgd" else pytest.param(c, marks=pytest.mark.slow) for c in ONE_ITERATION],
)
def test_one_iteration_is_the_configured_estimate_and_step(cliff, case):
    """Iteration 0 of a trainer built from the config, against the estimator called with an
    EstimatorConfig written out from the same settings, and the optimizer's first step in closed
    form: SGD θ + αg; Adam θ + αg / (|g| + 1e-8) (after one step its bias-corrected moments are g
    and g²). Each estimator setting of a case changes g, so none may be lost on the way."""
    env, _, policy = cliff
    algo, fields = ONE_ITERATION[case]
    config_cls = ZPGConfig if algo == "zpg" else ZBCPGConfig
    config = config_cls(
        **{"difference": "exact", "num_pairs": PAIRS, "mu": MU, "step_size": ALPHA, **fields}
    )
    training = make_training(config, env, policy, None)
    trainer, problem = training.trainer, training.problem
    state = trainer.init(jax.random.key(0))
    theta, key = state.theta, jax.random.key(1)
    assert not np.any(theta)  # so the new θ is the step itself, with no rounding of θ + step
    new_state, spent, metrics = jax.jit(trainer.iterate)(state, jnp.int32(0), key)

    mu = config.mu(0) if callable(config.mu) else config.mu
    alpha = config.step_size(0) if callable(config.step_size) else config.step_size
    names = ("direction", "two_sided", "spend", "block_size", "partition")
    est = EstimatorConfig(num_pairs=PAIRS, **{k: fields[k] for k in names if k in fields})
    # The same estimate with each of the case's settings back at its default (one compilation).
    changed = sorted(ESTIMATOR_DEFAULTS.keys() & fields.keys())
    ests = [est] + [dataclasses.replace(est, **{k: ESTIMATOR_DEFAULTS[k]}) for k in changed]
    difference = exact_difference(problem)

    @jax.jit
    def estimates():
        if algo == "zpg":
            return [zo_gradient(key, theta, difference, e, mu)[:2] for e in ests]
        blocks = config.num_blocks
        return [block_zo_gradient(key, theta, difference, e, mu, blocks)[:2] for e in ests]

    (g, delta_hat), *others = jax.tree_util.tree_map(np.asarray, estimates())
    step = g if config.optimizer == "sgd" else g / (np.abs(g) + 1e-8)
    atol = 1e-6 * alpha * np.abs(step).max()
    np.testing.assert_allclose(new_state.theta, alpha * step, rtol=1e-5, atol=atol)
    for name, (other, _) in zip(changed, others, strict=True):
        assert np.linalg.norm(other - g) > 0.05 * np.linalg.norm(g), name
    if fields.get("partition") == "fixed":
        # Only whole blocks of the fixed partition {0..6}, {7..13}, ... move.
        moved = np.flatnonzero(np.asarray(new_state.theta) != np.asarray(theta))
        blocks = np.unique(moved // 7)
        whole = np.flatnonzero(np.isin(np.arange(problem.dim) // 7, blocks))
        np.testing.assert_array_equal(moved, whole)
        if algo == "zbcpg":
            assert len(blocks) == config.num_blocks
        else:
            assert 1 <= len(blocks) <= PAIRS  # one block per direction; two may coincide

    assert set(metrics) == {
        "zo/delta_hat",
        "zo/grad_estimate_norm",
        "schedule/mu",
        "schedule/step_size",
    }
    np.testing.assert_allclose(metrics["zo/delta_hat"], delta_hat, rtol=1e-5)
    np.testing.assert_allclose(metrics["zo/grad_estimate_norm"], np.linalg.norm(g), rtol=1e-5)
    for name, value in (("schedule/mu", mu), ("schedule/step_size", alpha)):
        assert metrics[name].dtype == jnp.float32, name
        assert metrics[name] == np.float32(value), name
    # The exact difference rolls nothing out and asks nothing.
    assert [int(x) for x in jax.tree_util.tree_leaves(spent)] == [0, 0, 0, 0]


def two_policies(cliff, num_pairs, key):
    """θ₁ = 2v against θ₀ = 0 (v a unit direction) on the cliff, and the rollouts
    make_difference_fn draws for them from `key` (one key per side, split as it splits them)."""
    env, params, policy = cliff
    unravel = Problem.build(env, policy).unravel
    theta_0 = jnp.zeros(flat_view(policy.init(jax.random.key(0)))[0].shape)
    v = jax.random.normal(jax.random.key(2), theta_0.shape)
    theta_1 = 2.0 * v / jnp.linalg.norm(v)
    k1, k0, kq = jax.random.split(key, 3)
    trajectories = [
        rollout_batch(k, policy, unravel(th), env, params, num_pairs)
        for k, th in ((k1, theta_1), (k0, theta_0))
    ]
    return theta_1, theta_0, trajectories, kq


def test_the_return_difference_is_the_pairs_utility_difference_and_asks_nothing(cliff):
    """difference = 'return': Δ̂ of each pair is u(τ₁) − u(τ₀) of its own two trajectories, and
    no query is spent. It needs no teacher: without an oracle (and whatever mistake_rate says,
    which is about a teacher's votes) it computes the same."""
    env, _, policy = cliff
    n, key = 32, jax.random.key(4)
    theta_1, theta_0, (traj_1, traj_0), _ = two_policies(cliff, n, key)
    config = ZPGConfig(difference="return", num_pairs=n, num_queries=3)
    problem = Problem.build(env, policy, Oracle(make_link("bradley-terry")))
    difference = jax.jit(make_difference_fn(config, problem), static_argnums=3)
    delta, spent = difference(key, theta_1, theta_0, n)

    expected = np.asarray(masked_return(traj_1) - masked_return(traj_0))
    np.testing.assert_array_equal(delta, expected)
    assert np.any(expected > 0) and np.any(expected < 0)
    steps = int(jnp.sum(traj_1.valid) + jnp.sum(traj_0.valid))
    assert int(spent.queries) == 0 and int(spent.judged_trajectories) == 0
    assert int(spent.trajectories) == 2 * n and int(spent.env_steps) == steps
    # One ZPG iteration is one call of N pairs: it spends what the config declares.
    cost = config.unit_cost()
    assert (cost.queries, cost.trajectories) == (int(spent.queries), int(spent.trajectories))

    no_teacher = dataclasses.replace(config, mistake_rate=0.2)
    bare = Problem.build(env, policy, None)
    difference = jax.jit(make_difference_fn(no_teacher, bare), static_argnums=3)
    np.testing.assert_array_equal(difference(key, theta_1, theta_0, n)[0], expected)


def test_mistake_rate_inverts_the_mistaken_teachers_link(cliff):
    """A teacher who flips each vote with probability ε answers with the effective link
    (1 − 2ε)σ(x) + ε; told ε, the learner inverts that: Δ̂ = σ⁻¹((p̂ − ε) / (1 − 2ε)), trimmed
    to ±r_max where p̂ is beyond (1 − 2ε)σ(±r_max) + ε. σ is the logistic (scipy's expit)."""
    env, _, policy = cliff
    eps, n, m, r_max, key = 0.25, 64, 10, 2.0, jax.random.key(6)
    theta_1, theta_0, (traj_1, traj_0), kq = two_policies(cliff, n, key)
    oracle = Oracle(make_link("bradley-terry"), teacher=Teacher(mistake=eps))
    problem = Problem.build(env, policy, oracle)
    config = ZPGConfig(num_pairs=n, num_queries=m, mistake_rate=eps, r_max=r_max)
    difference = jax.jit(make_difference_fn(config, problem), static_argnums=3)
    delta, spent = difference(key, theta_1, theta_0, n)

    p_hat = np.asarray(preference_rate(oracle.query(kq, traj_1, traj_0, m)), np.float64)
    low, high = ((1 - 2 * eps) * special.expit(x) + eps for x in (-r_max, r_max))
    inner = special.logit((np.clip(p_hat, low, high) - eps) / (1 - 2 * eps))
    expected = np.where(p_hat >= high, r_max, np.where(p_hat <= low, -r_max, inner))
    np.testing.assert_allclose(delta, expected, rtol=1e-5, atol=1e-6)
    # Some rates are inverted, not trimmed: there the model of the teacher decides Δ̂
    # (p̂ = 0.6 gives σ⁻¹(0.7) = 0.85; read as a perfect teacher's rate, σ⁻¹(0.6) = 0.41).
    assert np.any((np.abs(expected) < r_max) & (expected != 0.0))
    assert int(spent.queries) == config.unit_cost().queries == n * m


@pytest.mark.parametrize("algo", ["zpg", "zbcpg"])
def test_unit_cost_counts_queries_only_for_preferences(algo):
    """What budget matching and the overflow guard trust: N·M queries per iteration (per block
    for ZBCPG) for preferences, none for the return or exact differences (so no query budget
    can be matched), and two trajectories per pair."""
    if algo == "zpg":
        config, pairs = ZPGConfig(num_pairs=8, num_queries=3), 8
    else:
        config, pairs = ZBCPGConfig(num_pairs=8, num_queries=3, num_blocks=2), 16
    cost = config.unit_cost()
    assert (cost.queries, cost.trajectories, cost.judged_trajectories) == (
        3 * pairs,
        2 * pairs,
        6 * pairs,
    )
    assert config.with_budget(1000).num_iterations == 1000 // (3 * pairs)
    for difference in ("return", "exact"):
        other = dataclasses.replace(config, difference=difference)
        assert (other.unit_cost().queries, other.unit_cost().judged_trajectories) == (0, 0)
        with pytest.raises(ConfigError) as err:
            other.with_budget(1000)
        assert str(err.value) == (
            "num_iterations = 'budget': this method spends no queries: it cannot be matched"
        )
    assert dataclasses.replace(config, difference="return").unit_cost().trajectories == 2 * pairs


def test_refusals_name_what_is_missing(cliff):
    """The whole messages: which difference needs what, and what the problem lacks."""
    env, _, policy = cliff
    with pytest.raises(ConfigError) as err:
        make_train(ZPGConfig(), env, policy, None)
    assert str(err.value) == "difference = 'preference' needs an oracle; got oracle = None"
    wrapped = _NoModel(env)
    with pytest.raises(ConfigError) as err:
        make_train(ZPGConfig(difference="exact"), wrapped, policy, None)
    assert str(err.value) == (
        f"difference = 'exact' needs a tabular environment; {wrapped!r} has no tabular_model"
    )
