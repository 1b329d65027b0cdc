"""Links against scipy, oracle vote statistics, teacher imperfections, query counting and errors."""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from zopg.errors import ConfigError
from zopg.preferences import (
    LINKS,
    BradleyTerry,
    Feedback,
    Hard,
    Linear,
    Oracle,
    Teacher,
    Thurstone,
    WeibullSymmetric,
    WeibullUtility,
    link_names,
    make_link,
    preference_rate,
    register_link,
    trim_probability,
    value_difference,
)
from zopg.preferences import links as links_module
from zopg.preferences.links import WithMistakes
from zopg.rollout import Trajectory

FLOAT32_EPS = float(np.finfo(np.float32).eps)

# One jitted function per entry point; the oracle and query count are static, so each distinct
# oracle compiles once and equal oracles share the compilation.
votes_jit = jax.jit(Oracle.votes_from_utilities, static_argnums=(0, 4))
query_jit = jax.jit(Oracle.query, static_argnums=(0, 4))
query_batches_jit = jax.jit(Oracle.query_batches, static_argnums=(0, 4))


INVERTIBLE_LINKS = [
    BradleyTerry(),
    BradleyTerry(scale=2.5),
    Thurstone(),
    Thurstone(scale=0.5),
    WeibullUtility(shape=0.5, scale=1.0),
    WeibullUtility(shape=1.0, scale=1.3),
    WeibullUtility(shape=2.0, scale=1.5),
    WeibullUtility(shape=5.0, scale=0.7),
    WeibullSymmetric(shape=2.0, scale=1.0),
    WeibullSymmetric(shape=0.7, scale=2.0),
    Linear(c=2.0),
]
ALL_LINKS = [*INVERTIBLE_LINKS, Hard()]


def binomial_tolerance(p, num_samples: int, sigmas: float = 5.0):
    """Allowed |frequency − p| for num_samples Bernoulli(p) draws."""
    p = np.asarray(p, dtype=np.float64)
    return sigmas * np.sqrt(p * (1.0 - p) / num_samples) + 1e-6


def make_trajectory(reward, valid=None) -> Trajectory:
    """A Trajectory with the given rewards [..., H]; observations and actions are dummies."""
    reward = jnp.asarray(reward, dtype=jnp.float32)
    valid = jnp.ones(reward.shape, dtype=bool) if valid is None else jnp.asarray(valid, bool)
    zeros = jnp.zeros(reward.shape, dtype=jnp.float32)
    return Trajectory(
        obs=zeros[..., None],
        action=jnp.zeros(reward.shape, dtype=jnp.int32),
        reward=reward,
        log_prob=zeros,
        valid=valid,
    )


def constant_trajectories(returns, horizon: int = 3) -> Trajectory:
    """Trajectories whose whole return sits on the first step; shape [*returns.shape, horizon]."""
    returns = np.asarray(returns, dtype=np.float32)
    reward = np.zeros((*returns.shape, horizon), dtype=np.float32)
    reward[..., 0] = returns
    return make_trajectory(reward)


def link_id(link) -> str:
    return repr(link)


# ---------------------------------------------------------------------------------------------
# Links

# Every link test evaluates 241 points through one jitted function, so each link compiles once
# (r_max is traced, so it is shared across r_max values too) instead of per shape and per call.
UNIT_GRID = np.linspace(-1.0, 1.0, 241)
UNANIMOUS_RATES = np.array([0.0, 0.5, 1.0], dtype=np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _link_facts(link, x, r_max):
    facts = {"prob": link.prob(x)}
    if link.invertible:
        facts["inverse"] = link.inverse(facts["prob"])
        facts["value_difference"] = value_difference(facts["prob"], link, r_max)
        facts["unanimous"] = value_difference(UNANIMOUS_RATES, link, r_max)
    return facts


def link_facts(link, x, r_max: float = 1.0) -> dict[str, np.ndarray]:
    """σ(x), σ⁻¹(σ(x)), Δ̂ = value_difference(σ(x)) and Δ̂ for rates 0, ½, 1, as float64 NumPy."""
    assert np.shape(x) == UNIT_GRID.shape
    facts = _link_facts(link, jnp.asarray(x, jnp.float32), r_max)
    return {name: np.asarray(value, dtype=np.float64) for name, value in facts.items()}


@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_bradley_terry_is_scipy_logistic(scale):
    x = 10.0 * UNIT_GRID
    prob = link_facts(BradleyTerry(scale), x)["prob"]
    np.testing.assert_allclose(prob, stats.logistic.cdf(x, scale=scale), atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_thurstone_is_scipy_normal_difference(scale):
    x = 10.0 * UNIT_GRID
    prob = link_facts(Thurstone(scale), x)["prob"]
    np.testing.assert_allclose(prob, stats.norm.cdf(x, scale=math.sqrt(2.0) * scale), atol=1e-6)


def weibull_difference_cdf_by_quad(x: float, shape: float, scale: float) -> float:
    """P(ε_0 − ε_1 < x) = ∫ f(e) F(x + e) de, integrated by scipy with scipy's Weibull."""
    noise = stats.weibull_min(shape, scale=scale)
    lower = max(0.0, -x)
    value, _ = integrate.quad(
        lambda e: noise.pdf(e) * noise.cdf(x + e), lower, np.inf, limit=200, epsabs=1e-10
    )
    return value


@pytest.mark.parametrize(("shape", "scale"), [(0.5, 1.0), (2.0, 1.5), (5.0, 0.7)])
def test_weibull_utility_matches_quadrature(shape, scale):
    x = 4.0 * scale * UNIT_GRID
    prob = link_facts(WeibullUtility(shape, scale), x)["prob"]
    every_20th = slice(None, None, 20)  # 13 points keep scipy's quad quick
    expected = [weibull_difference_cdf_by_quad(v, shape, scale) for v in x[every_20th]]
    np.testing.assert_allclose(prob[every_20th], expected, atol=1e-5)


def test_weibull_utility_with_shape_one_is_laplace():
    # Exponential noise: the difference is Laplace, σ(x) = 1 − ½·exp(−x/λ) for x >= 0.
    scale = 1.3
    x = 8.0 * UNIT_GRID
    prob = link_facts(WeibullUtility(1.0, scale), x)["prob"]
    np.testing.assert_allclose(prob, stats.laplace.cdf(x, scale=scale), atol=1e-5)


@pytest.mark.parametrize(("shape", "scale"), [(0.5, 1.0), (2.0, 1.5)])
def test_weibull_utility_matches_monte_carlo_random_utilities(shape, scale):
    num_samples = 200_000
    rng = np.random.default_rng(1234)
    noise = stats.weibull_min(shape, scale=scale)
    eps_first = noise.rvs(size=num_samples, random_state=rng)
    eps_second = noise.rvs(size=num_samples, random_state=rng)
    x = 2.0 * scale * UNIT_GRID
    predicted = link_facts(WeibullUtility(shape, scale), x)["prob"][::15]
    # The first trajectory wins when u_1 + ε_1 > u_0 + ε_0, i.e. ε_0 − ε_1 < x = u_1 − u_0.
    frequency = np.mean(eps_second[None, :] - eps_first[None, :] < x[::15, None], axis=1)
    assert np.all(np.abs(frequency - predicted) <= binomial_tolerance(predicted, num_samples))


@pytest.mark.parametrize(("shape", "scale"), [(2.0, 1.0), (0.7, 2.0)])
def test_weibull_symmetric_closed_form(shape, scale):
    x = 3.0 * scale * UNIT_GRID
    prob = link_facts(WeibullSymmetric(shape, scale), x)["prob"]
    expected = 0.5 + 0.5 * np.sign(x) * stats.weibull_min.cdf(np.abs(x), shape, scale=scale)
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_linear_and_hard_values():
    x = 6.0 * UNIT_GRID
    np.testing.assert_allclose(
        link_facts(Linear(2.0), x)["prob"], np.clip(0.5 + x / 4, 0, 1), atol=1e-6
    )
    expected_hard = np.where(x > 0, 1.0, np.where(x < 0, 0.0, 0.5))
    np.testing.assert_array_equal(link_facts(Hard(), x)["prob"], expected_hard)


@pytest.mark.parametrize("link", ALL_LINKS, ids=link_id)
def test_links_are_symmetric_monotone_and_half_at_zero(link):
    x = 6.0 * UNIT_GRID
    p = link_facts(link, x)["prob"]
    assert x[120] == 0.0 and p[120] == 0.5
    np.testing.assert_allclose(p[::-1], 1.0 - p, atol=2 * FLOAT32_EPS)
    assert np.all(np.diff(p) >= 0.0)
    assert p[0] >= 0.0 and p[-1] <= 1.0


@pytest.mark.parametrize("link", INVERTIBLE_LINKS, ids=link_id)
def test_inverse_undoes_prob_on_trimmed_range(link):
    # Largest |x| (up to 6) where σ(x) <= 1 − 1e-3, so float32 inversion stays well-conditioned.
    wide = 6.0 * UNIT_GRID
    r_max = float(wide[link_facts(link, wide)["prob"] <= 1.0 - 1e-3].max())
    x = r_max * UNIT_GRID
    facts = link_facts(link, x, r_max)
    # Rounding p to float32 moves x by about eps / σ'(x). A secant slope stays finite where
    # σ'(0) is infinite (Weibull shapes below 1).
    step = 1e-3
    slope = (link_facts(link, x + step)["prob"] - link_facts(link, x - step)["prob"]) / (2 * step)
    tolerance = 1e-5 * (1.0 + np.abs(x)) + 4.0 * FLOAT32_EPS / np.maximum(slope, 1e-12)
    assert np.all(np.abs(facts["inverse"] - x) <= tolerance)
    assert np.all(np.abs(facts["inverse"] - x) <= 0.01)
    assert np.all(np.abs(facts["value_difference"] - x) <= tolerance)


@pytest.mark.parametrize("link", INVERTIBLE_LINKS, ids=link_id)
@pytest.mark.parametrize("r_max", [0.3, 1.5, 40.0])
def test_unanimous_votes_give_plus_minus_r_max(link, r_max):
    # r_max = 40 is far beyond where every link saturates in float32 (σ(40) rounds to 1).
    delta = link_facts(link, UNIT_GRID, r_max)["unanimous"]
    # Linear(c) is flat beyond ±c, so it cannot claim a difference larger than c.
    expected_edge = min(r_max, link.c) if isinstance(link, Linear) else r_max
    np.testing.assert_array_equal(delta, np.float32([-expected_edge, 0.0, expected_edge]))


def test_rates_just_inside_the_trim_bounds_invert_continuously():
    link, r_max = BradleyTerry(), 3.0
    inside = float(link.prob(r_max)) - 1e-4
    delta = float(value_difference(inside, link, r_max))
    assert r_max - 0.01 < delta < r_max
    assert float(value_difference(0.999, Linear(0.5), 2.0)) == pytest.approx(0.499, abs=1e-5)


def test_trimming_clips_to_link_range_and_keeps_bt_finite_in_float32():
    link = BradleyTerry()
    trimmed = np.asarray(trim_probability(jnp.array([0.0, 0.3, 1.0]), link, 2.0))
    np.testing.assert_allclose(trimmed, [stats.logistic.cdf(-2.0), 0.3, stats.logistic.cdf(2.0)])
    # σ(50) rounds to 1 in float32; Δ̂ must still be ±r_max, not ±inf.
    np.testing.assert_array_equal(value_difference(jnp.array([0.0, 1.0]), link, 50.0), [-50, 50])


def test_hard_link_is_not_invertible():
    with pytest.raises(ConfigError, match="not invertible"):
        Hard().inverse(0.7)
    with pytest.raises(ConfigError, match="not invertible"):
        value_difference(0.7, Hard(), 1.0)


def test_make_link_registry():
    assert set(LINKS) == {
        "bradley-terry",
        "thurstone",
        "weibull",
        "weibull-symmetric",
        "linear",
    } | {"hard"}
    for name in LINKS:
        assert make_link(name).name == name
    assert make_link("bt", scale=2) == BradleyTerry(2.0)
    # Links hash by value, so equal links are one static jit argument.
    assert hash(make_link("bt", scale=2)) == hash(BradleyTerry(2.0))
    assert make_link("weibull", shape=3, scale=2.0) == WeibullUtility(3.0, 2.0)
    assert make_link("linear", c=0.5) == Linear(0.5)


# ---------------------------------------------------------------------------------------------
# Votes


def vote_frequencies(oracle, differences, num_queries, seed=0):
    differences = jnp.asarray(differences, jnp.float32)
    feedback = votes_jit(
        oracle, jax.random.key(seed), differences, jnp.zeros_like(differences), num_queries
    )
    return np.asarray(jnp.mean(feedback.votes, axis=-1)), feedback


DIFFERENCES = np.array([-2.0, -0.5, 0.0, 0.3, 0.7, 1.5], dtype=np.float32)


@pytest.mark.parametrize(
    "link", [BradleyTerry(), Thurstone(scale=2.0), WeibullUtility(0.8, 1.0)], ids=link_id
)
def test_vote_frequencies_follow_the_link(link):
    num_queries = 4000
    frequency, feedback = vote_frequencies(Oracle(link), DIFFERENCES, num_queries)
    predicted = np.asarray(link.prob(DIFFERENCES))
    assert np.all(np.abs(frequency - predicted) <= binomial_tolerance(predicted, num_queries))
    assert set(np.unique(np.asarray(feedback.votes))) <= {0.0, 1.0}
    assert bool(jnp.all(feedback.answered))


def test_votes_are_independent_across_queries_and_keys():
    num_queries = 4000
    _, feedback = vote_frequencies(Oracle(BradleyTerry()), [0.0], num_queries, seed=1)
    _, other = vote_frequencies(Oracle(BradleyTerry()), [0.0], num_queries, seed=2)
    votes, other_votes = np.asarray(feedback.votes[0]), np.asarray(other.votes[0])
    # Independent fair votes agree with their neighbour, and with another key's, half the time.
    tolerance = binomial_tolerance(0.5, num_queries - 1)
    assert abs(np.mean(votes[1:] == votes[:-1]) - 0.5) <= tolerance
    assert abs(np.mean(votes == other_votes) - 0.5) <= tolerance


def test_rationality_scales_the_difference():
    num_queries = 4000
    link = BradleyTerry()
    frequency, _ = vote_frequencies(
        Oracle(link, Teacher(rationality=3.0)), DIFFERENCES, num_queries
    )
    predicted = np.asarray(link.prob(3.0 * DIFFERENCES))
    tolerance = binomial_tolerance(predicted, num_queries)
    assert np.all(np.abs(frequency - predicted) <= tolerance)
    # The unscaled link would be far outside the tolerance: the test can tell them apart.
    assert np.any(np.abs(frequency - np.asarray(link.prob(DIFFERENCES))) > 5 * tolerance)


@pytest.mark.parametrize("link", [BradleyTerry(), Hard()], ids=link_id)
def test_mistakes_flip_votes(link):
    num_queries = 4000
    mistake = 0.2
    frequency, _ = vote_frequencies(
        Oracle(link, Teacher(mistake=mistake)), DIFFERENCES, num_queries
    )
    p = np.asarray(link.prob(DIFFERENCES), dtype=np.float64)
    predicted = (1.0 - mistake) * p + mistake * (1.0 - p)
    assert np.all(np.abs(frequency - predicted) <= binomial_tolerance(predicted, num_queries))


def test_skipped_queries_are_unanswered_but_counted():
    num_queries = 16
    oracle = Oracle(BradleyTerry(), Teacher(skip_threshold=0.0))
    utility_a = jnp.array([-1.0, -1.0, 1.0, 2.0])
    utility_b = jnp.array([-2.0, 1.0, -3.0, 5.0])
    feedback = votes_jit(oracle, jax.random.key(3), utility_a, utility_b, num_queries)
    answered = np.asarray(feedback.answered)
    assert answered.shape == (4, num_queries)
    np.testing.assert_array_equal(answered.all(axis=1), [False, True, True, True])
    np.testing.assert_array_equal(answered.any(axis=1), [False, True, True, True])
    np.testing.assert_array_equal(feedback.votes[0], 0.5)
    assert int(feedback.queries) == 4 * num_queries
    assert float(preference_rate(feedback)[0]) == 0.5


def test_ties_below_equal_threshold_are_exactly_half():
    num_queries = 64
    oracle = Oracle(BradleyTerry(), Teacher(equal_threshold=0.5, mistake=0.3))
    differences = jnp.array([-0.4, 0.0, 0.3, 0.6, -2.0])
    feedback = votes_jit(oracle, jax.random.key(4), differences, jnp.zeros(5), num_queries)
    votes = np.asarray(feedback.votes)
    np.testing.assert_array_equal(votes[:3], 0.5)  # mistakes cannot flip a tie
    assert set(np.unique(votes[3:])) <= {0.0, 1.0}


def test_myopia_weights_late_steps_more():
    # Returns favour `early` (3 > 1); with γ = ½ the teacher sees 3·γ⁴ = 0.1875 < 1.
    early = make_trajectory([[3.0, 0.0, 0.0, 0.0, 0.0]])
    late = make_trajectory([[0.0, 0.0, 0.0, 0.0, 1.0]])
    myopic = Oracle(Hard(), Teacher(myopia=0.5))
    np.testing.assert_allclose(myopic.trajectory_utility(early), [0.1875])
    np.testing.assert_allclose(myopic.trajectory_utility(late), [1.0])
    far_sighted = Oracle(Hard())
    np.testing.assert_allclose(far_sighted.trajectory_utility(early), [3.0])
    key = jax.random.key(5)
    np.testing.assert_array_equal(query_jit(myopic, key, early, late, 8).votes, 0.0)
    np.testing.assert_array_equal(query_jit(far_sighted, key, early, late, 8).votes, 1.0)


def test_utility_ignores_invalid_steps_and_uses_custom_utility():
    reward = [[1.0, 2.0, 4.0, 8.0]]
    traj = make_trajectory(reward, valid=[[True, True, False, False]])
    np.testing.assert_allclose(Oracle(Hard()).trajectory_utility(traj), [3.0])
    gamma = 0.5
    weighted = Oracle(Hard(), Teacher(myopia=gamma)).trajectory_utility(traj)
    # Weights count back from the last valid step (index 1), not from the horizon.
    np.testing.assert_allclose(weighted, [1.0 * gamma + 2.0])

    def final_reward(t):
        return t.reward[..., -1]

    custom = Oracle(Hard(), utility=final_reward)
    np.testing.assert_allclose(custom.trajectory_utility(make_trajectory(reward)), [8.0])


def test_query_counts_every_pair_and_query():
    num_queries = 7
    rng = np.random.default_rng(6)
    traj_a = make_trajectory(rng.normal(size=(4, 3, 5)))
    traj_b = make_trajectory(rng.normal(size=(4, 3, 5)))
    feedback = query_jit(Oracle(BradleyTerry()), jax.random.key(7), traj_a, traj_b, num_queries)
    assert feedback.votes.shape == (4, 3, num_queries)
    assert feedback.answered.shape == (4, 3, num_queries)
    assert feedback.queries.dtype == jnp.int32
    assert int(feedback.queries) == 4 * 3 * num_queries


def test_query_vmaps_over_keys_and_pairs():
    oracle = Oracle(Thurstone())
    traj_a = constant_trajectories(np.zeros((6, 2)))
    traj_b = constant_trajectories(np.ones((6, 2)))
    keys = jax.random.split(jax.random.key(8), 6)
    feedback = jax.jit(jax.vmap(lambda k, a, b: oracle.query(k, a, b, 5)))(keys, traj_a, traj_b)
    assert feedback.votes.shape == (6, 2, 5)
    assert int(jnp.sum(feedback.queries)) == 6 * 2 * 5


def test_equal_oracles_share_one_compilation():
    # Oracles hash by value, so an equal oracle built another way must not trigger a retrace.
    counting_query = chex.assert_max_traces(Oracle.query, n=1)
    query = jax.jit(counting_query, static_argnums=(0, 4))
    traj = constant_trajectories(np.zeros(3))
    query(Oracle(BradleyTerry(1.0)), jax.random.key(0), traj, traj, 4)
    query(Oracle(make_link("bt", scale=1)), jax.random.key(1), traj, traj, 4)


def test_query_batches_compares_mean_utilities():
    num_queries = 32
    # Group A's mean (2.5) beats B's (1.0) although three of A's four returns lose to every B.
    group_a = constant_trajectories([[10.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    group_b = constant_trajectories([[1.0, 1.0], [1.0, 1.0]])
    hard = query_batches_jit(Oracle(Hard()), jax.random.key(9), group_a, group_b, num_queries)
    assert hard.votes.shape == (2, num_queries)
    np.testing.assert_array_equal(hard.votes[0], 1.0)
    np.testing.assert_array_equal(hard.votes[1], 0.0)
    assert int(hard.queries) == 2 * num_queries

    num_queries = 4000
    link = BradleyTerry()
    soft = query_batches_jit(Oracle(link), jax.random.key(10), group_a, group_b, num_queries)
    predicted = np.asarray(link.prob(jnp.array([1.5, -1.0])))
    frequency = np.asarray(preference_rate(soft))
    assert np.all(np.abs(frequency - predicted) <= binomial_tolerance(predicted, num_queries))


def test_preference_rate_averages_answered_votes_only():
    votes = jnp.array([[1.0, 0.0, 1.0, 0.5], [1.0, 1.0, 0.0, 0.0]])
    answered = jnp.array([[True, True, True, False], [False, False, False, False]])
    feedback = Feedback(votes=votes, answered=answered, queries=jnp.int32(8))
    np.testing.assert_allclose(preference_rate(feedback), [2.0 / 3.0, 0.5])


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: BradleyTerry(scale=0.0), r"bradley-terry\.scale = 0\.0"),
        (lambda: BradleyTerry(scale=-1), r"bradley-terry\.scale"),
        (lambda: Thurstone(scale=math.nan), r"thurstone\.scale"),
        (lambda: Thurstone(scale="wide"), r"thurstone\.scale = 'wide'"),
        (lambda: WeibullUtility(shape=0.0), r"weibull\.shape"),
        (lambda: WeibullUtility(shape=500.0), r"weibull\.shape .*\[0\.1, 100\]"),
        (lambda: WeibullUtility(scale=math.inf), r"weibull\.scale"),
        (lambda: WeibullSymmetric(shape=-2.0), r"weibull-symmetric\.shape"),
        (lambda: Linear(c=0.0), r"linear\.c"),
        (lambda: Linear(c=True), r"linear\.c = True"),
        (
            lambda: make_link("logistic"),
            r"^unknown link 'logistic'; known links: 'package.module:NAME', bradley-terry, bt, "
            r"hard, linear, thurstone, weibull, weibull-symmetric$",
        ),
        (lambda: make_link(["bt"]), r"^unknown link \['bt'\]; known links: 'package"),
        (lambda: make_link("bt", shape=2.0), r"bradley-terry link parameter = 'shape'.*scale"),
        (
            lambda: make_link("hard", scale=1.0),
            r"^hard link parameter = 'scale': known parameters: none$",
        ),
        (
            lambda: make_link("bt", shape=1.0),
            r"^bradley-terry link parameter = 'shape': known parameters: scale$",
        ),
        (lambda: trim_probability(0.5, BradleyTerry(), 0.0), r"r_max = 0\.0"),
        (
            lambda: value_difference(0.5, BradleyTerry(), None),
            r"^r_max = None: must be positive and finite$",
        ),
        (
            lambda: WithMistakes(3, 0.1),
            r"^with-mistakes\.base = 3: must be a link \(see make_link\)$",
        ),
        (
            lambda: make_link("zopg.preferences.links:math"),
            r"^link 'zopg\.preferences\.links:math': must name a frozen dataclass with name, "
            r"invertible, saturation, prob, inverse \(see zopg\.preferences\.Link\); got <module",
        ),
        (
            lambda: make_link("nope.mod:X"),
            r"^link 'nope\.mod:X': cannot import 'nope\.mod': No module named 'nope'$",
        ),
        (lambda: value_difference(0.5, BradleyTerry(), -1.0), r"r_max = -1\.0"),
        (lambda: Teacher(rationality=0.0), r"teacher\.rationality = 0\.0: must be in \(0, inf\)"),
        (lambda: Teacher(rationality=math.inf), r"teacher\.rationality"),
        (lambda: Teacher(myopia=0.0), r"teacher\.myopia = 0\.0: must be in \(0, 1\]"),
        (lambda: Teacher(myopia=1.5), r"teacher\.myopia"),
        (lambda: Teacher(mistake=0.6), r"teacher\.mistake = 0\.6: must be in \[0, 0\.5\]"),
        (lambda: Teacher(mistake=-0.1), r"teacher\.mistake"),
        (lambda: Teacher(skip_threshold=math.nan), r"teacher\.skip_threshold"),
        (lambda: Teacher(equal_threshold=-1.0), r"teacher\.equal_threshold"),
        (lambda: Oracle("bt"), r"oracle\.link = 'bt'"),
        (lambda: Oracle(BradleyTerry(), teacher=0.5), r"oracle\.teacher"),
        (lambda: Oracle(BradleyTerry(), utility=3.0), r"oracle\.utility"),
        (
            lambda: Oracle(BradleyTerry(), Teacher(myopia=0.9), utility=lambda t: t.reward[..., 0]),
            r"oracle\.utility.*myopia",
        ),
    ],
)
def test_bad_configuration_is_rejected_by_name(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


@pytest.mark.parametrize("num_queries", [0, -3, 2.5, True, "4", None])
def test_bad_num_queries_is_rejected(num_queries):
    with pytest.raises(ConfigError, match=r"num_queries = .*static Python int >= 1"):
        Oracle(BradleyTerry()).votes_from_utilities(
            jax.random.key(0), jnp.zeros(2), jnp.zeros(2), num_queries
        )


def test_traced_num_queries_is_rejected():
    oracle = Oracle(BradleyTerry())
    with pytest.raises(ConfigError, match="num_queries"):
        jax.jit(oracle.votes_from_utilities)(jax.random.key(0), jnp.zeros(2), jnp.zeros(2), 3)


def test_mismatched_shapes_are_rejected():
    oracle = Oracle(BradleyTerry())
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match=r"traj_b batch shape = \(3,\).*\(2,\)"):
        oracle.query(key, constant_trajectories(np.zeros(2)), constant_trajectories(np.zeros(3)), 2)
    with pytest.raises(ConfigError, match=r"group_a batch shape = \(\)"):
        oracle.query_batches(key, make_trajectory([1.0, 2.0]), make_trajectory([1.0, 2.0]), 2)
    with pytest.raises(ConfigError, match=r"group_b leading batch shape"):
        oracle.query_batches(
            key, constant_trajectories(np.zeros((2, 4))), constant_trajectories(np.zeros((3, 4))), 2
        )
    with pytest.raises(ConfigError, match=r"utility_b shape"):
        oracle.votes_from_utilities(key, jnp.zeros(2), jnp.zeros(3), 2)
    wrong_shape = Oracle(BradleyTerry(), utility=lambda t: t.reward)
    with pytest.raises(ConfigError, match=r"oracle\.utility.*one value per trajectory"):
        wrong_shape.query(key, constant_trajectories([1.0]), constant_trajectories([2.0]), 2)


def renamed(link_class, name):
    """A frozen dataclass subclass of `link_class` registered under `name`."""
    return dataclasses.dataclass(frozen=True)(type("Renamed", (link_class,), {"name": name}))


# Whole messages, not fragments: each names the field, the value and the rule, and a message
# that drops or garbles one of them is a bug a user would meet.
WHOLE_MESSAGES = [
    (lambda: WeibullSymmetric(scale=-1.0), "weibull-symmetric.scale = -1.0: must be in (0, inf)"),
    (lambda: WeibullSymmetric(shape=0), "weibull-symmetric.shape = 0.0: must be in (0, inf)"),
    (
        lambda: Hard().inverse(0.7),
        "link = 'hard': the hard link is not invertible; use a sign-based method (e.g. zspo) or "
        "an invertible link",
    ),
    (
        lambda: register_link(int),
        "link class = <class 'int'>: must be a frozen dataclass with name, invertible, "
        "saturation, prob, inverse (see zopg.preferences.Link)",
    ),
    (
        lambda: register_link(BradleyTerry),
        "link class name = 'bradley-terry': is taken; pass replace=True",
    ),
    (
        lambda: register_link(renamed(BradleyTerry, "")),
        "link class name = '': must be a non-empty string without ':'",
    ),
    (
        lambda: register_link(renamed(BradleyTerry, "pkg.mod:LINK")),
        "link class name = 'pkg.mod:LINK': must be a non-empty string without ':'",
    ),
    (
        lambda: register_link(renamed(BradleyTerry, 3)),
        "link class name = 3: must be a non-empty string without ':'",
    ),
    (
        lambda: register_link(renamed(BradleyTerry, "bt")),
        "link class name = 'bt': is taken; pass replace=True",
    ),
]


@pytest.mark.parametrize(("build", "message"), WHOLE_MESSAGES)
def test_link_errors_say_the_field_the_value_and_the_rule(build, message, monkeypatch):
    monkeypatch.setattr(links_module, "_LINK_CLASSES", dict(links_module._LINK_CLASSES))
    with pytest.raises(ConfigError) as raised:
        build()
    assert str(raised.value) == message


def test_register_link_adds_and_replaces_by_name(monkeypatch):
    monkeypatch.setattr(links_module, "_LINK_CLASSES", dict(links_module._LINK_CLASSES))
    mine = register_link(renamed(BradleyTerry, "my-logistic"))
    assert make_link("my-logistic", scale=2).prob(0.0) == 0.5 and "my-logistic" in link_names()
    other = renamed(Thurstone, "my-logistic")
    assert register_link(other, replace=True) is other and isinstance(
        make_link("my-logistic"), other
    )
    assert mine is not other


@pytest.mark.parametrize(
    "link_class", [BradleyTerry, Thurstone, WeibullUtility, WeibullSymmetric, Linear]
)
def test_link_fields_are_stored_as_plain_floats(link_class):
    # Links are static jit arguments hashed by value: an int field must become the float that
    # the same link written with floats holds.
    fields = [field.name for field in dataclasses.fields(link_class)]
    link = link_class(**{name: 2 for name in fields})
    assert all(type(getattr(link, name)) is float for name in fields)
    assert link == link_class(**{name: 2.0 for name in fields})


def test_weibull_inverse_saturates_at_certainty():
    # The table ends where 1 - σ reaches 1e-7: certain preferences invert to ±inf, as for the
    # closed-form links, and even odds to 0.
    link = WeibullUtility()
    np.testing.assert_array_equal(link.inverse(jnp.array([0.0, 0.5, 1.0])), [-np.inf, 0.0, np.inf])


@pytest.mark.parametrize("link", INVERTIBLE_LINKS, ids=link_id)
def test_value_difference_stays_within_r_max_near_the_trim_bounds(link):
    # Probabilities at and just inside σ(±r_max), where the inverse lands on ±r_max up to
    # rounding: the estimate never leaves [-r_max, r_max].
    r_max = 2.0
    low, high = float(link.prob(-r_max)), float(link.prob(r_max))
    near = np.concatenate(
        [
            np.nextafter(np.float32(low), 1, dtype=np.float32) + np.arange(50) * 1e-8,
            np.nextafter(np.float32(high), 0, dtype=np.float32) - np.arange(50) * 1e-8,
            [low, high, 0.0, 1.0],
        ]
    ).astype(np.float32)
    delta = np.asarray(value_difference(jnp.asarray(near), link, r_max))
    assert np.all(np.abs(delta) <= r_max)
    assert delta[-4] == -r_max and delta[-3] == r_max and delta[-2] == -r_max and delta[-1] == r_max


@pytest.mark.parametrize("link", ALL_LINKS, ids=link_id)
def test_integer_utility_differences_are_read_as_floats(link):
    ints = jnp.array([-2, -1, 0, 1, 2])
    np.testing.assert_array_equal(link.prob(ints), link.prob(ints.astype(jnp.float32)))
    assert link.prob(ints).dtype == jnp.float32 and link.prob(1).dtype == jnp.float32


@pytest.mark.parametrize("num_queries", [0, -3, 2.5, True, None])
def test_num_queries_must_be_a_static_int_of_at_least_one(num_queries):
    rule = "must be a static Python int >= 1 (mark it static under jit)"
    message = f"num_queries = {num_queries!r}: {rule}"
    with pytest.raises(ConfigError) as raised:
        Oracle(BradleyTerry()).votes_from_utilities(jax.random.key(0), 1.0, 0.0, num_queries)
    assert str(raised.value) == message


def test_one_query_per_pair_is_allowed():
    feedback = Oracle(BradleyTerry()).votes_from_utilities(jax.random.key(0), 1.0, 0.0, 1)
    assert feedback.votes.shape == (1,) and int(feedback.queries) == 1


def test_preference_rate_averages_the_answered_votes_of_the_last_axis():
    # Pairs on two leading axes [2, 3], M = 4 votes each; rows with 0, 1 and several answers.
    votes = np.array(
        [
            [[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]],
            [[0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]],
        ],
        dtype=np.float32,
    )
    answered = np.ones(votes.shape, dtype=bool)
    answered[0, 0] = False  # nothing answered: ½
    answered[0, 1] = [False, False, False, True]  # one answer: that vote
    answered[1, 2, 3] = False
    rate = np.asarray(preference_rate(Feedback(jnp.asarray(votes), jnp.asarray(answered), 0)))
    expected = np.where(
        answered.sum(-1) > 0,
        (votes * answered).sum(-1) / np.maximum(answered.sum(-1), 1),
        0.5,
    )
    np.testing.assert_allclose(rate, expected, rtol=1e-6)
    assert rate[0, 0] == 0.5 and rate[0, 1] == 1.0 and rate[1, 2] == pytest.approx(2 / 3)


def trajectories(batch_shape, horizon=3):
    """Trajectories of the given batch shape whose returns are 0, 1, 2, ... in order."""
    size = math.prod(batch_shape)
    reward = np.zeros((size, horizon), np.float32)
    reward[:, 0] = np.arange(size)
    reward = reward.reshape(*batch_shape, horizon)
    shape = reward.shape
    return Trajectory(
        obs=jnp.zeros((*shape, 1)),
        action=jnp.zeros(shape, jnp.int32),
        reward=jnp.asarray(reward),
        valid=jnp.ones(shape, bool),
        log_prob=jnp.zeros(shape),
    )


@pytest.mark.parametrize(
    ("shape_a", "shape_b", "message"),
    [
        (
            (),
            (4,),
            "group_a batch shape = (): needs an axis of D trajectories just before the time axis",
        ),
        (
            (4,),
            (),
            "group_b batch shape = (): needs an axis of D trajectories just before the time axis",
        ),
        (
            (2, 3, 4),
            (2, 5, 4),
            "group_b leading batch shape = (2, 5): must equal group_a's (2, 3)",
        ),
    ],
)
def test_query_batches_names_the_group_with_the_wrong_shape(shape_a, shape_b, message):
    oracle = Oracle(BradleyTerry())
    with pytest.raises(ConfigError) as raised:
        oracle.query_batches(jax.random.key(0), trajectories(shape_a), trajectories(shape_b), 1)
    assert str(raised.value) == message


def test_query_batches_compares_group_means_on_the_axis_before_time():
    # Leading axes (2, 3), groups of D = 4 and 2: group means differ by known amounts.
    oracle = Oracle(BradleyTerry())
    group_a, group_b = trajectories((2, 3, 4)), trajectories((2, 3, 2))
    m = 4000
    feedback = oracle.query_batches(jax.random.key(3), group_a, group_b, m)
    mean_a = np.arange(24).reshape(2, 3, 4).mean(-1)
    mean_b = np.arange(12).reshape(2, 3, 2).mean(-1)
    p = stats.logistic.cdf(mean_a - mean_b)
    assert feedback.votes.shape == (2, 3, m) and int(feedback.queries) == 6 * m
    sd = np.sqrt(p * (1 - p) / m)
    assert np.all(np.abs(np.asarray(feedback.votes.mean(-1)) - p) <= 5 * sd + 1e-6)


def test_votes_refuse_shapes_that_do_not_broadcast_and_counts_beyond_int32():
    oracle, key = Oracle(BradleyTerry()), jax.random.key(0)
    with pytest.raises(ConfigError) as raised:
        oracle.votes_from_utilities(key, jnp.zeros(3), jnp.zeros(2), 1)
    assert str(raised.value) == "utility_b shape = (2,): must broadcast with utility_a's shape (3,)"
    with pytest.raises(ConfigError) as raised:
        oracle.votes_from_utilities(key, jnp.zeros(3), jnp.zeros(3), 2**31)
    assert str(raised.value) == (
        "num_queries = 2147483648: pairs × num_queries must fit in int32; got 6442450944"
    )
    # Exactly INT32_MAX queries still fit (traced abstractly: nothing is allocated).
    votes = jax.eval_shape(lambda k: oracle.votes_from_utilities(k, 1.0, 0.0, 2**31 - 1), key)
    assert votes.votes.shape == (2**31 - 1,)


def test_thresholds_are_strict_inequalities():
    # A difference equal to equal_threshold is no tie, and a utility equal to skip_threshold is
    # no skip: both teachers then vote as the plain one does.
    m, key = 4000, jax.random.key(4)
    plain = Oracle(BradleyTerry()).votes_from_utilities(key, 1.0, 0.0, m)
    for teacher in (Teacher(equal_threshold=1.0), Teacher(skip_threshold=0.0)):
        feedback = Oracle(BradleyTerry(), teacher).votes_from_utilities(key, 1.0, 0.0, m)
        np.testing.assert_array_equal(feedback.votes, plain.votes)
        assert bool(feedback.answered.all())
    skipped = Oracle(BradleyTerry(), Teacher(skip_threshold=0.5)).votes_from_utilities(
        key, 0.25, 0.0, m
    )
    assert not bool(skipped.answered.any()) and bool((skipped.votes == 0.5).all())


def test_feedback_types_follow_the_contract_whatever_the_input_types():
    # Integer rewards and utilities give float utilities and float votes, and answered is bool.
    traj = trajectories((3,))
    ints = traj.replace(reward=traj.reward.astype(jnp.int32))
    oracle = Oracle(BradleyTerry())
    assert oracle.trajectory_utility(ints).dtype == jnp.float32
    counted = Oracle(BradleyTerry(), utility=lambda t: jnp.sum(t.reward, -1).astype(jnp.int32))
    assert counted.trajectory_utility(ints).dtype == jnp.float32
    for teacher in (Teacher(), Teacher(skip_threshold=0.5)):
        feedback = Oracle(BradleyTerry(), teacher).votes_from_utilities(
            jax.random.key(0), jnp.array([2, 0]), jnp.array([1, 1]), 3
        )
        assert feedback.votes.dtype == jnp.float32 and feedback.answered.dtype == jnp.bool_


class ProbOnly:
    """Has a link's prob but no inverse: not a link."""

    def prob(self, x):
        return x


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: WithMistakes(BradleyTerry(), -0.1),
            "with-mistakes.mistake = -0.1: must be in [0, 0.5)",
        ),
        (
            lambda: WithMistakes(ProbOnly(), 0.1),
            f"with-mistakes.base = {ProbOnly()!r}: must be a link (see make_link)".split(" at 0x")[
                0
            ],
        ),
        (
            lambda: make_link("weibull", rate=1),
            "weibull link parameter = 'rate': known parameters: shape, scale",
        ),
    ],
)
def test_more_link_errors_say_the_field_the_value_and_the_rule(build, message):
    with pytest.raises(ConfigError) as raised:
        build()
    assert str(raised.value).startswith(message)


def test_a_mistaken_teacher_stores_its_rate_as_a_float():
    mistaken = WithMistakes(BradleyTerry(), 0)
    assert type(mistaken.mistake) is float and mistaken == WithMistakes(BradleyTerry(), 0.0)


@dataclasses.dataclass
class Unfrozen:
    """A link in all but being frozen (so unhashable)."""

    name = "unfrozen"

    def prob(self, x):
        return x

    def inverse(self, p):
        return p


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Oracle(ProbOnly()), "oracle.link = <"),
        (
            lambda: Oracle(Unfrozen()),
            "oracle.link = Unfrozen(): must be hashable (frozen) to be a static jit argument",
        ),
        (lambda: Oracle(BradleyTerry(), teacher=0.5), "oracle.teacher = 0.5: must be a Teacher"),
    ],
)
def test_oracle_errors_say_the_field_the_value_and_the_rule(build, message):
    with pytest.raises(ConfigError) as raised:
        build()
    assert str(raised.value).startswith(message)
    if message.endswith("<"):
        assert str(raised.value).endswith(": must be a link (see make_link)")


def test_a_utility_of_the_wrong_shape_is_named():
    traj = trajectories((3,))
    oracle = Oracle(BradleyTerry(), utility=lambda t: t.reward)
    with pytest.raises(ConfigError) as raised:
        oracle.trajectory_utility(traj)
    text = str(raised.value)
    assert text.startswith("oracle.utility = <function ")
    assert text.endswith(": must return one value per trajectory, shape (3,); got shape (3, 3)")


def hidden_oracle(weights=(0.25, 0.75)):
    """Two annotator types on the trajectories' returns: u_0 = R and u_1 = -R."""
    from zopg.preferences.utilities import HiddenContext, Utility

    @dataclasses.dataclass(frozen=True)
    class Scaled(Utility):
        factor: float = 1.0
        name = "scaled"

        def __call__(self, traj):
            return self.factor * jnp.sum(traj.reward, -1)

    population = HiddenContext(components=(Scaled(1.0), Scaled(-1.0)), weights=weights)
    return Oracle(BradleyTerry(), Teacher(), population)


def test_the_hidden_context_mixture_from_integer_utilities_and_its_bounds():
    oracle = hidden_oracle()
    # Per-type utilities as integers: read as floats, mixed by the weights.
    p = oracle.mixture_probability(jnp.array([[2, -2]]), jnp.array([[0, 0]]))
    expected = 0.25 * stats.logistic.cdf(2.0) + 0.75 * stats.logistic.cdf(-2.0)
    assert p.dtype == jnp.float32 and float(p[0]) == pytest.approx(expected, rel=1e-6)
    key, traj = jax.random.key(0), trajectories((3,))
    feedback = oracle.query(key, traj, traj, 2)
    assert feedback.answered.dtype == jnp.bool_ and bool(feedback.answered.all())
    with pytest.raises(ConfigError) as raised:
        oracle.query(key, traj, traj, 2**31)
    assert str(raised.value) == (
        "num_queries = 2147483648: pairs × num_queries must fit in int32; got 6442450944"
    )
    fits = jax.eval_shape(
        lambda k: oracle.query(k, trajectories(()), trajectories(()), 2**31 - 1), key
    )
    assert fits.votes.shape == (2**31 - 1,)


def test_oracle_refusals_of_combinations_say_both_settings():
    population = hidden_oracle().utility
    with pytest.raises(ConfigError) as raised:
        Oracle(BradleyTerry(), Teacher(myopia=0.9), utility=lambda t: t.reward[..., 0])
    assert str(raised.value).startswith("oracle.utility = <function ")
    assert str(raised.value).endswith(
        ": cannot be combined with teacher.myopia = 0.9 < 1; apply any discounting inside the "
        "custom utility"
    )
    rule = (
        "ties (equal_threshold) and skips (skip_threshold) are not defined for a hidden-context "
        "teacher"
    )
    for teacher in (Teacher(equal_threshold=0.1), Teacher(skip_threshold=0.0)):
        with pytest.raises(ConfigError) as raised:
            Oracle(BradleyTerry(), teacher, population)
        assert str(raised.value) == f"oracle.teacher = {teacher!r}: {rule}"
    # Either threshold alone, at its inactive value, is accepted.
    Oracle(BradleyTerry(), Teacher(equal_threshold=0.0, skip_threshold=-math.inf), population)
    with pytest.raises(ConfigError) as raised:
        Oracle(BradleyTerry(), utility=3.0)
    assert str(raised.value) == "oracle.utility = 3.0: must be callable or None"


@pytest.mark.parametrize(("utility_a", "utility_b"), [(0.0, -1.0), (-1.0, 0.0)])
def test_a_query_is_skipped_only_when_both_are_strictly_below_the_threshold(utility_a, utility_b):
    # One side exactly at skip_threshold = 0: that human still answers.
    teacher = Teacher(skip_threshold=0.0)
    feedback = Oracle(BradleyTerry(), teacher).votes_from_utilities(
        jax.random.key(0), utility_a, utility_b, 8
    )
    assert bool(feedback.answered.all())
