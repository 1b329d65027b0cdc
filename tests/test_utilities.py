"""Human utilities: hand-computed values, exact product-model values against Monte Carlo, the
teacher's utility everywhere it is scored, myopia from the last valid step, and the effective
link of a mistaken teacher."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, logit

from zopg import ConfigError
from zopg.algorithms import ExactPGConfig, PPOConfig, make_train
from zopg.algorithms.ppo import utility_reward
from zopg.envs import make
from zopg.evaluation import make_evaluator
from zopg.exact import optimal_utility_value, optimal_value, policy_value, utility_value
from zopg.policies import make_policy
from zopg.preferences import (
    BradleyTerry,
    Oracle,
    Teacher,
    WithMistakes,
    make_link,
    make_utility,
    preference_rate,
    value_difference,
)
from zopg.preferences.utilities import automaton_states
from zopg.rollout import Trajectory, masked_return, rollout_batch

# A 2 x 3 grid: S at (0, 0), G at (0, 2), a trap at (1, 0); cells 0..5 row by row.
TINY = ("S.G", "X..")
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


@pytest.fixture(scope="module")
def tiny():
    return make("gridworld", layout=list(TINY), horizon=4, slip=0.0, trap_reward=-2.0)


def path(cells, actions, final, rewards, valid=None):
    """One hand-written trajectory: cells s_0..s_(H−1), the cell after the last step."""
    h = len(cells)
    return Trajectory(
        obs=jnp.asarray(cells, jnp.int32),
        action=jnp.asarray(actions, jnp.int32),
        reward=jnp.asarray(rewards, jnp.float32),
        log_prob=jnp.zeros(h),
        valid=jnp.ones(h, bool) if valid is None else jnp.asarray(valid, bool),
        final_obs=jnp.asarray(final, jnp.int32),
    )


# Cells: 0 S, 1 floor, 2 G, 3 X, 4 floor, 5 floor.
DIRECT = path([0, 1, 2, 2], [RIGHT, RIGHT, UP, UP], 2, [0, 1, 0, 0])  # G entered at step 2
DETOUR = path([0, 1, 4, 5], [RIGHT, DOWN, RIGHT, UP], 2, [0, 0, 0, 1])  # via (1, 1), G at step 4
TRAPPED = path([0, 3, 3, 3], [DOWN, UP, UP, UP], 3, [-2, 0, 0, 0])
WANDER = path([0, 1, 0, 1], [RIGHT, LEFT, RIGHT, LEFT], 0, [0, 0, 0, 0])  # S, ., S, ., S


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("return", {}, [1.0, 1.0, -2.0, 0.0]),
        # Weights γ^(L − t) from the last step: the goal of DIRECT sits 2 steps before L = 3.
        ("myopic-return", {"gamma": 0.5}, [0.25, 1.0, -0.25, 0.0]),
        # Waypoint (1, 1) = cell 4: only DETOUR visits it before entering G.
        ("waypoint-goal", {"waypoint": (1, 1)}, [0.0, 1.0, -2.0, 0.0]),
        # G by step 3: DIRECT (step 2) pays, DETOUR (step 4) does not.
        ("deadline", {"k": 3}, [1.0, 0.0, -2.0, 0.0]),
        # WANDER re-enters S (steps 2 and 4) and cell 1 (step 3); TRAPPED stays put.
        ("revisit-penalty", {"c": 0.5}, [1.0, 1.0, -2.0, -1.5]),
        # Switches: DIRECT 1, DETOUR 3, TRAPPED 1, WANDER 3.
        ("action-switches", {"c": 0.25}, [0.75, 0.25, -2.25, -0.75]),
    ],
)
def test_utilities_match_hand_computed_values(tiny, name, params, expected):
    env, env_params = tiny
    utility = make_utility(name, **params).bind(env, env_params)
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), DIRECT, DETOUR, TRAPPED, WANDER)
    np.testing.assert_allclose(utility(batch), expected, rtol=1e-6, atol=1e-7)


def test_the_return_utility_is_the_env_return(tiny):
    env, env_params = tiny
    policy = make_policy("tabular", env, env_params, init_scale=2.0)
    traj = rollout_batch(
        jax.random.key(0), policy, policy.init(jax.random.key(1)), env, env_params, 256
    )
    for name in ("return", "waypoint-goal", "deadline"):
        params = {"waypoint": (0, 0)} if name == "waypoint-goal" else {}
        params = {"k": 4} if name == "deadline" else params
        # Visiting S first, or a deadline at the horizon, changes nothing: the plain return.
        utility = make_utility(name, **params).bind(env, env_params)
        np.testing.assert_allclose(utility(traj), masked_return(traj), atol=1e-6)


def test_automaton_states_follow_the_waypoint_bit(tiny):
    env, env_params = tiny
    utility = make_utility("waypoint-goal", waypoint=(1, 1)).bind(env, env_params)
    automaton = utility.automaton(env.tabular_model(env_params))
    np.testing.assert_array_equal(automaton_states(automaton, DETOUR), [0, 0, 1, 1])
    np.testing.assert_array_equal(automaton_states(automaton, DIRECT), [0, 0, 0, 0])


# Two layouts where the routes differ: the cliff, and a corridor with a waypoint above it.
LAYOUTS = {
    "cliff": ("gridworld/cliff-4x6", {}),
    "corridor": ("gridworld", {"layout": [".....", "S...G"], "horizon": 10, "slip": 0.2}),
}
EXACT_UTILITIES = [
    ("myopic-return", {"gamma": 0.8}),
    ("waypoint-goal", {"waypoint": (0, 2)}),
    ("deadline", {"k": 6}),
    ("action-switches", {"c": 0.1}),
]
EPISODES = 40_000


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_exact_product_values_agree_with_monte_carlo(layout):
    """E[u] by the product model against the mean of 40,000 rollouts, within 4 standard
    errors (a chance failure has probability ~6e-5 per comparison)."""
    env_id, overrides = LAYOUTS[layout]
    env, params = make(env_id, **overrides)
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta = policy.init(jax.random.key(3))
    probs = policy.action_probs(theta, jnp.arange(env.num_states(params)))
    traj = rollout_batch(jax.random.key(4), policy, theta, env, params, EPISODES)
    model = env.tabular_model(params)
    # The return through the product equals plain backward induction, and so does V*.
    ret = make_utility("return")
    np.testing.assert_allclose(
        utility_value(env, params, ret, probs), policy_value(model, probs), rtol=1e-5
    )
    np.testing.assert_allclose(
        optimal_utility_value(env, params, ret), optimal_value(model), rtol=1e-5
    )
    for name, utility_params in EXACT_UTILITIES:
        utility = make_utility(name, **utility_params).bind(env, params)
        samples = np.asarray(utility(traj))
        stderr = samples.std(ddof=1) / math.sqrt(EPISODES)
        exact = float(utility_value(env, params, utility, probs))
        assert abs(samples.mean() - exact) < 4 * stderr, (name, samples.mean(), exact, stderr)
        assert float(optimal_utility_value(env, params, utility)) >= exact


CORRIDOR = {"layout": [".....", "S...G"], "horizon": 10, "slip": 0.1}


def waypoint_visits(env, params, policy, final, utility):
    """P(the waypoint is visited) under the final policy, by Monte Carlo."""
    traj = rollout_batch(jax.random.key(9), policy, final, env, params, 4000)
    return float(
        jnp.mean(automaton_states(utility.automaton(env.tabular_model(params)), traj)[..., -1] > 0)
    )


def test_exact_pg_on_the_waypoint_utility_takes_the_waypoint_route():
    """Exact PG on u (the teacher's utility, through the problem) learns to pass (0, 2), where
    exact PG on the return goes straight along the bottom row; its exact value agrees with
    Monte Carlo within 4 standard errors."""
    env, params = make("gridworld", **CORRIDOR)
    policy = make_policy("tabular", env, params)
    utility = make_utility("waypoint-goal", waypoint=(0, 2))
    config = ExactPGConfig(num_iterations=150)
    with_u, metrics = make_train(
        config, env, policy, Oracle(make_link("bt"), utility=utility), params, probe=True
    )(jax.random.key(0))
    plain, _ = make_train(config, env, policy, None, params)(jax.random.key(0))
    bound = utility.bind(env, params)
    evaluator = make_evaluator(env, params, policy, bound, episodes=2)
    value, _ = evaluator.value(None, with_u)
    uniform, best = evaluator.bounds
    assert (float(value) - uniform) / (best - uniform) > 0.9
    np.testing.assert_allclose(metrics["exact/value"][-1], value, rtol=1e-5)
    assert waypoint_visits(env, params, policy, with_u, bound) > 0.8
    assert waypoint_visits(env, params, policy, plain, bound) < 0.3
    samples = np.asarray(
        bound(rollout_batch(jax.random.key(5), policy, with_u, env, params, EPISODES))
    )
    stderr = samples.std(ddof=1) / math.sqrt(EPISODES)
    assert abs(samples.mean() - float(value)) < 4 * stderr


def test_monte_carlo_evaluator_for_utilities_without_an_automaton(tiny):
    env, params = tiny
    policy = make_policy("tabular", env, params)
    evaluator = make_evaluator(env, params, policy, make_utility("revisit-penalty"), episodes=16)
    assert evaluator.kind == "monte-carlo" and math.isnan(evaluator.bounds[0])
    assert make_evaluator(env, params, policy, make_utility("deadline", k=2)).kind == "exact"


def test_exact_values_refuse_what_they_cannot_evaluate_in_one_line(tiny):
    """The whole message: which requirement failed and what to do instead."""
    env, params = tiny
    probs = jnp.full((env.num_states(params), env.num_actions), 0.25)
    with pytest.raises(ConfigError) as error:
        utility_value(env, params, make_utility("revisit-penalty"), probs)
    assert str(error.value) == (
        "utility 'revisit-penalty' has no finite automaton here: evaluate it by Monte Carlo"
    )
    cartpole, cartpole_params = make("gymnax/CartPole-v1")
    with pytest.raises(ConfigError) as error:
        utility_value(cartpole, cartpole_params, make_utility("return"), probs)
    assert str(error.value).startswith("exact utility values need a tabular environment; ")
    assert str(error.value).endswith(" is not")


def test_a_policy_of_the_automaton_state_that_ignores_it_has_the_cell_policys_value(tiny):
    """probs[q, s, a] equal for every automaton state q is the policy probs[s, a]: the same
    exact value (a 3-D table is read per state q, not as one more batch axis)."""
    env, params = tiny
    utility = make_utility("waypoint-goal", waypoint=(1, 1))
    logits = jax.random.normal(jax.random.key(5), (env.num_states(params), env.num_actions))
    probs = jax.nn.softmax(logits)
    num_q = utility.bind(env, params).automaton(env.tabular_model(params)).num_states
    assert num_q == 2
    per_state = jnp.broadcast_to(probs, (num_q, *probs.shape))
    value = utility_value(env, params, utility, per_state)
    assert value.shape == ()
    np.testing.assert_allclose(value, utility_value(env, params, utility, probs), rtol=1e-6)


def test_ppo_on_a_path_utility_is_paid_at_the_last_valid_step(tiny):
    env, params = tiny
    utility = make_utility("deadline", k=3).bind(env, params)
    batch = jax.tree_util.tree_map(lambda *x: jnp.stack(x), DIRECT, DETOUR)
    batch = batch.replace(valid=jnp.array([[True] * 4, [True, True, False, False]]))
    rewards = utility_reward(utility)(None, batch)
    np.testing.assert_allclose(rewards.sum(-1), utility(batch))
    np.testing.assert_array_equal(
        np.flatnonzero(np.asarray(rewards[0])), [3] if utility(batch)[0] else []
    )
    # A reference PPO run takes the teacher's utility and runs.
    oracle = Oracle(make_link("bt"), utility=make_utility("deadline", k=3))
    config = PPOConfig(num_iterations=2, num_trajectories=8, num_minibatches=2)
    _, metrics = make_train(config, env, make_policy("tabular", env, params), oracle, params)(
        jax.random.key(0)
    )
    assert np.all(np.isfinite(metrics["losses/policy_loss"]))


def test_myopia_counts_back_from_the_last_valid_step():
    """A terminated episode's last valid step weighs 1, not γ^(H − 1 − t) from the horizon."""
    traj = path(
        [0, 0, 0, 0], [0, 0, 0, 0], 0, [1.0, 1.0, 0.0, 0.0], valid=[True, True, False, False]
    )
    oracle = Oracle(make_link("hard"), Teacher(myopia=0.5))
    np.testing.assert_allclose(oracle.trajectory_utility(traj), 0.5 + 1.0)


@pytest.mark.parametrize(
    ("make_bad", "match"),
    [
        (
            lambda env, p: make_utility("smoothness"),
            "unknown utility 'smoothness'; known utilities",
        ),
        (lambda env, p: make_utility("deadline", when=3), "deadline utility parameter = 'when'"),
        (
            lambda env, p: make_utility("waypoint-goal", waypoint=(5, 0)).bind(env, p),
            r"waypoint = \[5, 0\]: must lie inside the 2 x 3 grid",
        ),
        (
            lambda env, p: make_utility("waypoint-goal", waypoint=(0, 2)).bind(env, p),
            "must be a floor or start cell",
        ),
        (lambda env, p: make_utility("waypoint-goal", waypoint=(-1, 0)), r"waypoint\[0\] = -1"),
        (
            lambda env, p: make_utility("deadline", k=5).bind(env, p),
            r"deadline.k = 5: must be <= the horizon, 4",
        ),
        (lambda env, p: make_utility("deadline", k=0), r"deadline.k = 0"),
        (lambda env, p: make_utility("myopic-return", gamma=1.5), r"myopic-return.gamma = 1.5"),
        (
            lambda env, p: make_utility("revisit-penalty").bind(*make("gymnax/CartPole-v1")),
            "needs a GridWorld",
        ),
    ],
)
def test_bad_utilities_are_refused_clearly(tiny, make_bad, match):
    with pytest.raises(ConfigError, match=match):
        make_bad(*tiny)


def test_effective_link_of_a_mistaken_teacher():
    """(1 − 2ε)σ + ε against scipy's logistic, its inverse, and Δ̂ from a mistaken teacher's
    votes: inverting the effective link recovers Δ; inverting σ alone shrinks it."""
    eps, x = 0.2, np.linspace(-2.0, 2.0, 9)
    link = WithMistakes(BradleyTerry(), eps)
    np.testing.assert_allclose(link.prob(x), (1 - 2 * eps) * expit(x) + eps, rtol=1e-6)
    p = (1 - 2 * eps) * expit(x) + eps
    np.testing.assert_allclose(
        link.inverse(p), logit((p - eps) / (1 - 2 * eps)), rtol=1e-4, atol=1e-5
    )
    oracle = Oracle(BradleyTerry(), Teacher(mistake=eps))
    m = 20_000
    feedback = oracle.votes_from_utilities(jax.random.key(0), jnp.asarray(x), 0.0, m)
    rate = np.asarray(preference_rate(feedback))
    # Delta method: sd of Δ̂ = sqrt(p(1 − p)/m) / σ_ε'(x); 5 sd, plus float32 slack.
    slope = (1 - 2 * eps) * expit(x) * (1 - expit(x))
    tol = 5 * np.sqrt(rate * (1 - rate) / m) / slope + 1e-4
    np.testing.assert_array_less(np.abs(np.asarray(value_difference(rate, link, 3.0)) - x), tol)
    naive = np.asarray(value_difference(rate, BradleyTerry(), 3.0))
    assert np.all(np.abs(naive[x != 0]) < 0.8 * np.abs(x[x != 0]))  # about (1 − 2ε)Δ near 0
    with pytest.raises(ConfigError, match=r"with-mistakes.mistake = 0.5"):
        WithMistakes(BradleyTerry(), 0.5)
