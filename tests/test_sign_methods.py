"""ZSPO, Par-S2ZPO and FedAvg DPO: the sign agreement against its closed form (science.md
§5), link invariance of the expected step, Par-S2ZPO with one block as ZSPO, federated
averaging and communication, and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from zopg import ConfigError
from zopg.algorithms import (
    FedAvgDPOConfig,
    ParS2ZPOConfig,
    ZSPOConfig,
    make_train,
    make_training,
)
from zopg.algorithms.base import Problem
from zopg.algorithms.sign_zo import make_majority_sign
from zopg.envs import make
from zopg.estimators import sphere_direction
from zopg.policies import flat_view, make_policy
from zopg.preferences import Oracle, make_link, value_difference
from zopg.rates.setting import (
    Point,
    majority_up,
    make_setting,
    return_distribution,
    sign_agreement,
    vote_probability,
)

# The cliff at a random policy: returns -1 (trap), 0 or 1 (goal); one direction, μ 3, where
# V(θ + μv) − V(θ) = 0.095.
MU, VOTES, REPEATS = 3.0, 21, 2000


@pytest.fixture(scope="module")
def cliff():
    setting = make_setting(Point("gridworld/cliff-4x6", policy_seed=2, logit_scale=1.0))
    v = sphere_direction(jax.random.key(2), setting.dim)
    return setting, v


def measured_agreement(setting, v, link, batch_size, sign_fn=None, votes=VOTES) -> float:
    """Frequency over REPEATS independent sign estimates that ŝ = sign(ΔV)."""
    base, theta = setting.problem, setting.theta
    problem = Problem.build(base.env, base.policy, Oracle(link), base.env_params)
    sign_fn = sign_fn or make_majority_sign(problem, votes, batch_size)
    keys = jax.random.split(jax.random.key(batch_size), REPEATS)
    signs, _, _ = jax.jit(jax.vmap(sign_fn, in_axes=(0, None, None)))(keys, theta + MU * v, theta)
    delta = float(base.exact_value(theta + MU * v) - base.exact_value(theta))
    return float(np.mean(np.asarray(signs) == np.sign(delta))), delta


CASES = [
    ("bradley-terry", {}, 1),
    ("bradley-terry", {}, 16),
    ("linear", {"c": 1.0}, 4),
    ("hard", {}, 1),
    ("hard", {}, 4),
    ("hard", {}, 16),
]


def agreement_failures(setting, v, cases, sign_fns=None) -> list[str]:
    """Cases where the measured agreement is more than 4.5 binomial SE from the closed form."""
    support, probs = return_distribution(setting.problem)
    theta = setting.theta
    failures = []
    for i, (name, kw, batch_size) in enumerate(cases):
        link = make_link(name, **kw)
        fn = None if sign_fns is None else sign_fns[i]
        freq, delta = measured_agreement(setting, v, link, batch_size, fn)
        exact = sign_agreement(
            link, support, probs(theta + MU * v), probs(theta), delta, batch_size, VOTES
        )
        se = math.sqrt(exact * (1 - exact) / REPEATS)
        if abs(freq - exact) > 4.5 * se:
            failures.append(f"{name} D={batch_size}: measured {freq:.4f}, closed form {exact:.4f}")
    return failures


def test_sign_agreement_matches_the_closed_form(cliff):
    setting, v = cliff
    assert agreement_failures(setting, v, CASES) == []


def test_an_even_number_of_votes_breaks_ties_with_a_fair_coin(cliff):
    """With N even, a tie of the votes must be a fair coin: the closed form counts half of the
    tie's probability for each sign. Under the hard teacher on single trajectories, equal
    returns make each vote itself a coin, ties are frequent (P(tie) ≈ 0.27 at N 8), and a tie
    always broken to +1 would move the agreement by about that much, against a binomial SE of
    0.011 at 2,000 repeats."""
    setting, v = cliff
    support, probs = return_distribution(setting.problem)
    theta, link, votes = setting.theta, make_link("hard"), 8
    freq, delta = measured_agreement(setting, v, link, 1, votes=votes)
    p = vote_probability(link, support, probs(theta + MU * v), probs(theta), 1)
    tie = stats.binom(votes, p).pmf(votes // 2)
    assert tie > 0.1  # the case must be one where ties matter
    exact = sign_agreement(link, support, probs(theta + MU * v), probs(theta), delta, 1, votes)
    se = math.sqrt(exact * (1 - exact) / REPEATS)
    assert abs(freq - exact) < 4.5 * se, (freq, exact, tie)


def test_the_agreement_check_catches_broken_sign_estimates(cliff):
    """Votes on single trajectories where D = 16 is claimed, or the sign flipped, must fail."""
    setting, v = cliff
    base = setting.problem
    problem = Problem.build(base.env, base.policy, Oracle(make_link("hard")), base.env_params)
    single = make_majority_sign(problem, VOTES, 1)
    assert agreement_failures(setting, v, [("hard", {}, 16)], [single]) != []
    right = make_majority_sign(problem, VOTES, 4)

    def flipped(key, theta_1, theta_0):
        sign, margin, spent = right(key, theta_1, theta_0)
        return -sign, margin, spent

    assert agreement_failures(setting, v, [("hard", {}, 4)], [flipped]) != []


def test_majority_up_is_the_binomial_tail():
    for n, p in ((21, 0.55), (20, 0.5), (8, 0.3)):
        b = stats.binom(n, p)
        half = 0.5 * b.pmf(n / 2) if n % 2 == 0 else 0.0
        assert majority_up(p, n) == pytest.approx(b.sf(n // 2) + half, abs=1e-12)


# A small layout where a random policy's return is -1, 0 or 1 with comparable odds.
SMALL = {"layout": ["....", "S..G", "XXXX"], "horizon": 8}


def exact_mean_updates(directions=256):
    """E[ŝ v] of ZSPO (D 64, N 21) under sharp BT / linear / hard teachers, and E[Δ̂ v] of ZPG
    assuming Bradley-Terry (M 10, r_max 2, one pair) under BT / linear / hard teachers, over
    the same sphere directions, each from the exact return distributions (no sampling)."""
    setting = make_setting(Point("gridworld", policy_seed=2, logit_scale=2.0), **SMALL)
    base, theta = setting.problem, setting.theta
    support, probs = return_distribution(base)
    keys = jax.random.split(jax.random.key(7), directions)
    dirs = np.asarray(jax.vmap(lambda k: sphere_direction(k, base.dim))(keys))
    p1 = np.asarray(jax.vmap(lambda v: probs(theta + v))(jnp.asarray(dirs)), np.float64)
    p0 = np.asarray(probs(theta), np.float64)
    sharp = {
        "bradley-terry": make_link("bradley-terry", scale=0.1),
        "linear": make_link("linear", c=0.2),
        "hard": make_link("hard"),
    }
    zspo = {}
    for name, link in sharp.items():
        coefficient = [
            2 * majority_up(vote_probability(link, support, p1[i], p0, 64), 21) - 1
            for i in range(directions)
        ]
        zspo[name] = np.asarray(coefficient) @ dirs / directions
    learner, m = make_link("bradley-terry"), 10
    k = np.arange(m + 1)
    answers = np.asarray(value_difference(jnp.asarray(k / m, jnp.float32), learner, 2.0))
    diffs = np.subtract.outer(np.asarray(support), np.asarray(support))
    zpg = {}
    for name, kw in (("bradley-terry", {}), ("linear", {"c": 1.0}), ("hard", {})):
        p = np.asarray(make_link(name, **kw).prob(jnp.asarray(diffs, jnp.float32)), np.float64)
        response = stats.binom.pmf(k, m, p[..., None]) @ answers  # E[Δ̂ | r1 - r0]
        zpg[name] = np.einsum("ri,ij,j->r", p1, response, p0) @ dirs / directions
    grad = np.asarray(jax.grad(base.exact_value)(theta))
    return zspo, zpg, grad


def cosine(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_expected_zspo_step_is_link_invariant_and_follows_the_gradient():
    """ZSPO's mean update direction is the same under three link shapes (cosine >= 0.99) and
    positively correlated with ∇V for each. ZPG assuming Bradley-Terry: a wrong link changes
    its expected step's length (here 1.46× under the hard teacher), its direction hardly at all
    (averaged over sphere directions, E[f(a·v) v] is parallel to a for any odd f)."""
    zspo, zpg, grad = exact_mean_updates()
    names = list(zspo)
    for i, a in enumerate(names):
        assert cosine(zspo[a], grad) > 0.5
        for b in names[i + 1 :]:
            assert cosine(zspo[a], zspo[b]) >= 0.99, (a, b)
    ratio = np.linalg.norm(zpg["hard"]) / np.linalg.norm(zpg["bradley-terry"])
    assert ratio > 1.2
    assert cosine(zpg["hard"], grad) > 0.5


def test_par_s2zpo_with_one_block_is_zspo_with_rademacher_directions():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    key = jax.random.key(0)
    zspo, m1 = make_train(
        ZSPOConfig(num_iterations=15, direction="rademacher"), env, policy, oracle
    )(key)
    par, m2 = make_train(ParS2ZPOConfig(num_iterations=15, num_blocks=1), env, policy, oracle)(key)
    np.testing.assert_array_equal(flat_view(zspo)[0], flat_view(par)[0])
    for name in ("queries", "trajectories", "judged_trajectories", "env_steps"):
        np.testing.assert_array_equal(m1[f"budget/{name}"], m2[f"budget/{name}"])


def test_budgets_and_communication():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    oracle = Oracle(make_link("bradley-terry"))
    config = ParS2ZPOConfig(num_iterations=3, num_blocks=4, num_votes=5, batch_size=3)
    _, metrics = make_train(config, env, policy, oracle)(jax.random.key(1))
    rounds = np.arange(1, 4)
    np.testing.assert_array_equal(metrics["budget/queries"], rounds * 4 * 5)
    np.testing.assert_array_equal(metrics["budget/trajectories"], rounds * 4 * 5 * 2 * 3)
    # A batch query shows the human 2D trajectories.
    np.testing.assert_array_equal(metrics["budget/judged_trajectories"], rounds * 4 * 5 * 2 * 3)
    np.testing.assert_array_equal(metrics["comm/bits"], rounds * (100 + 4))
    fed = FedAvgDPOConfig(
        num_iterations=6, num_agents=3, num_pairs=4, local_steps=3, num_eval_pairs=8
    )
    training = make_training(fed, env, policy, oracle)
    carry, metrics = jax.jit(training.run, static_argnums=2)(training.init(jax.random.key(2)), 0, 6)
    np.testing.assert_array_equal(metrics["budget/queries"], np.arange(1, 7) * 3 * 4 * 10)
    # Averaged after iterations 3 and 6: 2·K·d floats each time, every agent at the average.
    np.testing.assert_array_equal(metrics["comm/floats"], [0, 0, 600, 600, 600, 1200])
    state = carry["state"]
    np.testing.assert_allclose(state.thetas, np.broadcast_to(state.theta, state.thetas.shape))


def test_fedavg_agents_drift_between_averages():
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    fed = FedAvgDPOConfig(
        num_iterations=2, num_agents=3, num_pairs=4, local_steps=3, num_eval_pairs=8
    )
    training = make_training(fed, env, policy, Oracle(make_link("bradley-terry")))
    carry, _ = jax.jit(training.run, static_argnums=2)(training.init(jax.random.key(2)), 0, 2)
    thetas = np.asarray(carry["state"].thetas)
    assert not np.allclose(thetas[0], thetas[1])  # local steps on each agent's own pairs
    np.testing.assert_array_equal(carry["state"].theta, carry["state"].ref_theta)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (ZSPOConfig(batch_size=0), r"batch_size = 0: must be an integer in \[1, inf\]"),
        (ZSPOConfig(num_votes=0), r"num_votes = 0"),
        (ZSPOConfig(direction="cauchy"), "direction = 'cauchy': must be one of sphere"),
        (ParS2ZPOConfig(num_blocks=0), r"num_blocks = 0"),
        (ParS2ZPOConfig(num_blocks=101), r"num_blocks = 101: must be <= d = 100"),
        (FedAvgDPOConfig(num_agents=0), r"num_agents = 0"),
        (FedAvgDPOConfig(local_steps=0), r"local_steps = 0"),
    ],
)
def test_bad_configs(config, match):
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params)
    with pytest.raises(ConfigError, match=match):
        make_train(config, env, policy, Oracle(make_link("bradley-terry")))


def test_a_sign_method_given_a_link_is_refused():
    with pytest.raises(ConfigError, match="link = 'linear': sign methods invert no link"):
        ZSPOConfig.from_data({"link": "linear"})
    with pytest.raises(ConfigError, match=r"r_max = 2\.0: sign methods invert no link"):
        ParS2ZPOConfig.from_data({"r_max": 2.0})
