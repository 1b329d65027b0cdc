"""The regimes built so that reward inference *can* fail (science.md §9): each failure
mechanism is present on a small version, and the building blocks are exact.

- policy richer than the reward model: the GridWorld observation with the waypoint-visited bit
  (a product model, sampled as modelled), a reward model of the cell only, and the cosine of its
  policy gradient with the true one (< 0.9), against the compatible-critic controls (>= 0.99);
- link shape with stakes: the win-rate fixed point and the mis-scaled optimum lose >= 0.1 of
  the gap on the chosen layout, reproducibly, as results/regimes/design.json records;
- hidden context: the mixture teacher's vote frequencies against w σ(Δ_A) + (1 − w) σ(Δ_B),
  its exact mean utility, and the aggregate a link-inverting learner reads;
- dimension without confounds: padding leaves V and ∇V as they are, with zero padded gradient.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError, regimes
from zopg.algorithms import Problem
from zopg.algorithms.reward_model import RewardModelConfig, make_reward_model
from zopg.envs import make
from zopg.exact import optimal_utility_value, policy_value, utility_value, utility_value_fn
from zopg.experiments.build import built_runs
from zopg.experiments.loading import load_experiment
from zopg.policies import flat_view, make_policy
from zopg.preferences import Oracle, Teacher, make_link, make_utility
from zopg.rollout import rollout_batch

ROOT = Path(__file__).resolve().parents[1]
DEAD_END = ["#.###", "S...G"]
DESIGN = ROOT / "results" / "regimes" / "design.json"


def dead_end(observe: bool):
    extra = {"observe_visited": [0, 1]} if observe else {}
    env, params = make("gridworld", layout=DEAD_END, horizon=12, slip=0.1, **extra)
    return env, params, make_utility("waypoint-goal", waypoint=(0, 1)).bind(env, params)


def env_table(name: str) -> dict:
    """The first [[envs]] table of benchmarks/<name>.toml."""
    with open(ROOT / "benchmarks" / f"{name}.toml", "rb") as f:
        return tomllib.load(f)["envs"][0]


# -- policy richer than the reward model -------------------------------------------------------


def test_the_visited_bit_is_a_product_model_sampled_as_modelled():
    env, params, _ = dead_end(observe=True)
    model = env.tabular_model(params)
    assert env.num_states(params) == 20 and env.num_cells(params) == 10
    np.testing.assert_allclose(model.transition.sum(-1), 1.0, atol=1e-6)
    obs, state = env.reset(jax.random.key(0), params)
    assert int(obs) == 5 and not bool(state.visited)  # S at (1, 0), bit clear
    # From (1, 1) with the bit clear, "up" enters the waypoint (0, 1): obs 1 + 10.
    state = state.replace(pos=jnp.int32(6))
    n = 40_000
    step = jax.jit(jax.vmap(lambda k: env.step(k, state, jnp.int32(0), params)[0]))
    counts = np.bincount(np.asarray(step(jax.random.split(jax.random.key(1), n))), minlength=20)
    expected = np.asarray(model.transition[6, 0])
    assert expected[11] == pytest.approx(0.9 + 0.1 / 4)
    sd = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts / n - expected) <= 5 * sd + 1e-9)
    np.testing.assert_array_equal(env.cell_of(np.arange(20), params), np.tile(np.arange(10), 2))


def test_the_bit_changes_no_value_of_a_cell_policy_and_lifts_the_ceiling():
    """A cell policy copied to both halves of the bit is worth the same on either model; V* is
    the same (the product model already had the bit); exact values agree with Monte Carlo."""
    bit_env, bit_params, bit_u = dead_end(observe=True)
    cell_env, cell_params, cell_u = dead_end(observe=False)
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(2), (10, 4)), axis=-1)
    lifted = jnp.concatenate([probs, probs])
    assert float(utility_value(bit_env, bit_params, bit_u, lifted)) == pytest.approx(
        float(utility_value(cell_env, cell_params, cell_u, probs)), abs=1e-6
    )
    assert float(optimal_utility_value(bit_env, bit_params, bit_u)) == pytest.approx(
        float(optimal_utility_value(cell_env, cell_params, cell_u)), abs=1e-6
    )
    policy = make_policy("tabular", bit_env, bit_params, init_scale=1.0)
    theta = policy.init(jax.random.key(3))
    n = 100_000
    values = bit_u(rollout_batch(jax.random.key(4), policy, theta, bit_env, bit_params, n))
    exact = float(utility_value_fn(bit_env, bit_params, bit_u, policy)(theta))
    assert abs(float(values.mean()) - exact) <= 5 * float(values.std()) / math.sqrt(n)


def test_a_cell_reward_model_sees_the_cell_only():
    env, params, utility = dead_end(observe=True)
    problem = Problem.build(
        env,
        make_policy("tabular", env, params),
        Oracle(make_link("bradley-terry"), Teacher(), utility),
        params,
    )
    model = make_reward_model(RewardModelConfig(cell_input=True), env, params)
    table = {"table": jax.random.normal(jax.random.key(0), (10, 4))}
    obs = jnp.arange(20)
    np.testing.assert_array_equal(
        model(table, obs[:, None], jnp.arange(4)[None]), table["table"][obs % 10]
    )
    assert RewardModelConfig(cell_input=True).to_data()["cell_input"] is True
    # Left out at its default, so the run hashes of earlier rm-ppo runs stand.
    assert "cell_input" not in RewardModelConfig().to_data()
    with pytest.raises(ConfigError, match="exclude each other"):
        RewardModelConfig(cell_input=True, automaton_input=True).check(problem, "")


@pytest.mark.parametrize(
    ("observe", "cell_only", "low", "high"),
    [
        (True, True, -1.0, 0.9),  # the regime: r(cell, a) beside a policy of (bit, cell)
        (True, False, 0.99, 1.0),  # control arm: the reward model sees what the policy sees
        # The compatible critic of the earlier regimes; slow, since the control arm above
        # keeps "a reward model that sees what the policy sees is compatible" in make test.
        pytest.param(False, True, 0.99, 1.0, marks=pytest.mark.slow),
    ],
)
def test_the_reward_models_policy_gradient_at_the_uniform_policy(observe, cell_only, low, high):
    env, params, utility = dead_end(observe)
    policy = make_policy("tabular", env, params)
    theta = policy.init(jax.random.key(0))
    cosine = regimes.gradient_cosine(env, params, policy, theta, utility, cell_only)
    assert low <= cosine <= high


def test_the_regime_file_gives_the_policy_the_bit_and_the_reward_model_the_cell():
    experiment = load_experiment(ROOT / "benchmarks" / "regime_richer_policy.toml")
    runs = {m.label: run for _, _, _, _, m, run in built_runs(experiment)}
    assert runs["zpg"].policy.num_states == 20
    assert runs["rm-ppo"].config.reward_model.cell_input
    assert not runs["rm-ppo-obs"].config.reward_model.cell_input


# -- link shape with stakes --------------------------------------------------------------------


def test_the_chosen_layout_has_stakes_reproducibly():
    """On the experiment's layout, the hard teacher's win-rate fixed point and the optimum of
    trap -1 each lose >= 0.1 of the gap to the E[u] optimum; recomputing gives the numbers that
    design.json records (and the experiment file uses its chosen point)."""
    table = env_table("regime_link_stakes")
    design = json.loads(DESIGN.read_text())["link_stakes"]["chosen"]
    assert table["layout"] == design["layout"]
    assert (table["slip"], table["horizon"], table["trap_reward"]) == (
        design["slip"],
        design["horizon"],
        design["trap_reward"],
    )
    point = stakes_point(table)
    assert point["loss of the fixed point"] >= 0.1
    assert point["loss of trap -1"] >= 0.1
    assert point == stakes_point(table)  # deterministic
    recorded = design["loss of the win-rate fixed point by teacher"]["hard"]
    assert point["loss of the fixed point"] == pytest.approx(recorded, abs=1e-4)


def stakes_point(table: dict) -> dict:
    env, params = make(
        "gridworld",
        layout=table["layout"],
        horizon=table["horizon"],
        slip=table["slip"],
        trap_reward=table["trap_reward"],
    )
    policy = make_policy("tabular", env, params)
    model = env.tabular_model(params)
    states = jnp.arange(env.num_states(params))
    uniform = float(policy_value(model, jnp.full((len(states), 4), 0.25)))
    best = float(optimal_utility_value(env, params, make_utility("return")))
    values = regimes.outcome_values(1.0, table["trap_reward"])

    def score(matrix):
        theta, _ = regimes.self_play_fixed_point(env, params, policy, matrix)
        value = float(policy_value(model, policy.action_probs(theta, states)))
        return (value - uniform) / (best - uniform)

    optimum = score(regimes.difference_matrix(values))
    return {
        "loss of the fixed point": optimum - score(regimes.win_matrix(values, make_link("hard"))),
        "loss of trap -1": optimum
        - score(regimes.difference_matrix(regimes.outcome_values(1.0, -1.0))),
    }


def test_outcome_probabilities_are_exact():
    env, params = make("gridworld", layout=["S.G", "XX."], horizon=3, slip=0.2)
    probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (6, 4)), axis=-1)
    goal, trap, timeout = (float(x) for x in regimes.outcome_probs(env, params, probs))
    model = env.tabular_model(params)
    # The return is goal 1, trap -1, so E[return] = P(goal) - P(trap).
    assert goal - trap == pytest.approx(float(policy_value(model, probs)), abs=1e-6)
    assert min(goal, trap, timeout) > 0 and goal + trap + timeout == pytest.approx(1.0)


def test_batch_comparisons_reduce_to_pairs_and_are_distributions():
    """ZSPO's batch win rate: one trajectory per side is the pair win rate, and the count
    vectors of a batch carry a multinomial distribution."""
    values, hard = regimes.outcome_values(1.0, -4.0), make_link("hard")
    np.testing.assert_array_equal(regimes.batch_counts(1), np.eye(3))
    np.testing.assert_allclose(
        regimes.batch_win_matrix(values, hard, 1), regimes.win_matrix(values, hard)
    )
    counts = regimes.batch_counts(4)
    assert counts.shape == (15, 3) and np.all(counts.sum(1) == 4)
    probs = regimes._batch_distribution(jnp.array([0.5, 0.2, 0.3]), jnp.asarray(counts))
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    # Four goals: 0.5 ** 4; two goals, one trap, one timeout: 12 · 0.5² · 0.2 · 0.3.
    assert float(probs[0]) == pytest.approx(0.5**4, rel=1e-5)
    row = int(np.flatnonzero((counts == [2, 1, 1]).all(1))[0])
    assert float(probs[row]) == pytest.approx(12 * 0.25 * 0.2 * 0.3, rel=1e-5)


# -- hidden context -----------------------------------------------------------------------------


def hidden(weights=(0.3, 0.7), link=None):
    env, params = make("gridworld", layout=["S.G", "X.."], horizon=4, slip=0.3)
    utility = make_utility(
        "hidden-context",
        weights=list(weights),
        components=[
            {"name": "grid-return", "trap_reward": -4.0},
            {"name": "grid-return", "trap_reward": 0.0, "goal_reward": 2.0},
        ],
    ).bind(env, params)
    oracle = Oracle(link or make_link("bradley-terry"), Teacher(), utility)
    return env, params, oracle


def test_hidden_context_votes_follow_the_mixture():
    """Vote frequencies of M votes per pair against w σ(Δ_A) + (1 − w) σ(Δ_B), each pair within
    5 binomial standard deviations, and the mean over pairs within 5 of its own."""
    env, params, oracle = hidden()
    policy = make_policy("tabular", env, params)
    traj = rollout_batch(
        jax.random.key(0), policy, policy.init(jax.random.key(0)), env, params, 400
    )
    a = jax.tree_util.tree_map(lambda x: x[:200], traj)
    b = jax.tree_util.tree_map(lambda x: x[200:], traj)
    m = 2000
    feedback = oracle.query(jax.random.key(1), a, b, m)
    types_a, types_b = oracle.utility.utilities(a), oracle.utility.utilities(b)
    sigma = jax.nn.sigmoid
    expected = np.asarray(
        0.3 * sigma(types_a[:, 0] - types_b[:, 0]) + 0.7 * sigma(types_a[:, 1] - types_b[:, 1])
    )
    assert len(np.unique(np.round(expected, 4))) >= 4  # pairs of several kinds
    freq = np.asarray(feedback.votes.mean(-1))
    sd = np.sqrt(expected * (1 - expected) / m)
    assert np.all(np.abs(freq - expected) <= 5 * sd + 1e-6)
    assert abs(freq.mean() - expected.mean()) <= 5 * np.sqrt(np.sum(sd**2)) / len(sd)
    assert int(feedback.queries) == 200 * m
    # Batch queries: each type compares the batches' means of its own utility.
    groups_a = jax.tree_util.tree_map(lambda x: x.reshape(50, 4, *x.shape[1:]), a)
    groups_b = jax.tree_util.tree_map(lambda x: x.reshape(50, 4, *x.shape[1:]), b)
    batch = oracle.query_batches(jax.random.key(2), groups_a, groups_b, m)
    mean_a, mean_b = types_a.reshape(50, 4, 2).mean(1), types_b.reshape(50, 4, 2).mean(1)
    p = np.asarray(
        0.3 * sigma(mean_a[:, 0] - mean_b[:, 0]) + 0.7 * sigma(mean_a[:, 1] - mean_b[:, 1])
    )
    sd = np.sqrt(p * (1 - p) / m)
    assert np.all(np.abs(np.asarray(batch.votes.mean(-1)) - p) <= 5 * sd + 1e-6)


def test_hidden_context_is_scored_by_the_mean_utility_exactly():
    env, params, oracle = hidden()
    problem = Problem.build(env, make_policy("tabular", env, params), oracle, params)
    # 0.3 (trap -4, goal 1) + 0.7 (trap 0, goal 2): trap -1.2, goal 1.7.
    mean_env, mean_params = make(
        "gridworld", layout=["S.G", "X.."], horizon=4, slip=0.3, trap_reward=-1.2, goal_reward=1.7
    )
    theta = jax.random.normal(jax.random.key(5), (problem.dim,))
    mean_value = policy_value(
        mean_env.tabular_model(mean_params),
        problem.policy.action_probs(problem.unravel(theta), jnp.arange(6)),
    )
    assert float(problem.exact_value(theta)) == pytest.approx(float(mean_value), abs=1e-5)


def test_hidden_context_refuses_what_it_cannot_define():
    with pytest.raises(ConfigError, match="sum to 1"):
        make_utility("hidden-context", weights=[0.5, 0.6], components=["return", "return"])
    with pytest.raises(ConfigError, match="components"):
        make_utility("hidden-context", weights=[1.0], components=[])
    oracle = hidden()[2]
    with pytest.raises(ConfigError, match="not defined for a hidden-context"):
        Oracle(oracle.link, Teacher(equal_threshold=0.1), oracle.utility)


def test_only_the_linear_link_passes_the_mean_difference_through():
    """σ⁻¹(w σ(Δ_A) + (1 − w) σ(Δ_B)) is w Δ_A + (1 − w) Δ_B for the linear link (inside its
    range) and not for BT: there it shrinks the trap penalty of the experiment's types."""
    types = [regimes.outcome_values(1.0, -8.0), regimes.outcome_values(1.0, 0.0)]
    mean = regimes.difference_matrix(regimes.outcome_values(1.0, -4.0))
    linear = make_link("linear", c=9.0)
    read = regimes.inverted_matrix(regimes.mixture_matrix(types, (0.5, 0.5), linear), linear)
    np.testing.assert_allclose(read, mean, atol=1e-5)
    bt = make_link("bradley-terry")
    read = regimes.inverted_matrix(regimes.mixture_matrix(types, (0.5, 0.5), bt), bt)
    assert -1.2 < read[1, 2] < -1.0  # trap against timeout: about -1.1, not -4


def test_the_hidden_context_file_builds_the_mixture_teacher():
    experiment = load_experiment(ROOT / "benchmarks" / "regime_hidden_context.toml")
    _, _, _, _, _, run = built_runs(experiment)[0]
    population = run.oracle.hidden_context
    assert population is not None and population.weights == (0.5, 0.5)
    assert run.evaluator.kind == "exact"


# -- dimension without confounds ---------------------------------------------------------------


def test_padding_changes_neither_value_nor_gradient():
    env, params = make("gridworld/open-5x5")
    model = env.tabular_model(params)
    states = jnp.arange(25)
    logits = jax.random.normal(jax.random.key(1), (25, 4))
    results = []
    for d in (None, 100, 3200):
        policy = make_policy("tabular", env, params, pad_to=d)
        theta = {**policy.init(jax.random.key(0)), "logits": logits}
        assert flat_view(theta)[0].shape == ((d or 100),)
        value, grad = jax.value_and_grad(
            lambda p, policy=policy: policy_value(model, policy.action_probs(p, states))
        )(theta)
        if d is not None:
            np.testing.assert_array_equal(np.asarray(grad["pad"]), 0.0)
        results.append((float(value), np.asarray(grad["logits"])))
    for value, grad in results[1:]:
        assert value == results[0][0]
        np.testing.assert_array_equal(grad, results[0][1])
    with pytest.raises(ConfigError, match="pad_to"):
        make_policy("tabular", env, params, pad_to=99)


@pytest.mark.slow  # the padding itself is checked fast above; this reads the experiment file
def test_the_dimension_file_pads_one_layout():
    experiment = load_experiment(ROOT / "benchmarks" / "regime_dimension_padded.toml")
    dims = {}
    for _, _, env_spec, _, _, run in built_runs(experiment):
        assert run.env_params.layout == make("gridworld/open-5x5")[1].layout
        assert run.env_params.horizon == 16
        dims[env_spec.name] = run.training.problem.dim
    assert dims == {f"d{d}": d for d in (100, 200, 400, 800, 1600, 3200)}
