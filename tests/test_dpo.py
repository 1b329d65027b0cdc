"""DPO: loss formulas, labels, log-ratios, exact KL, learning on a deterministic bandit, budgets.

The bandit is a one-step GridWorld "XSG" without slip: from S, right enters the goal (+1), left
the trap (−1), up and down stay (0). There DPO's closed form holds, π* ∝ π_ref·exp(r/β), so with
β = 0.1 the preferred action's probability should approach 1.
"""

import math

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms import DPOOfflineConfig, DPOOnlineConfig, make_train, make_training
from zopg.algorithms.base import Problem
from zopg.algorithms.dpo_losses import (
    LabelledPairs,
    Steps,
    dpo_loss,
    labelled_loss,
    log_ratio,
    make_core,
    make_labels,
    mean_where,
    occupancy,
    trajectory_kl,
)
from zopg.envs import make
from zopg.policies import make_policy
from zopg.preferences import Feedback, Oracle, make_link
from zopg.rollout import rollout_batch

NUM_SEEDS = 8
RIGHT = 1
BANDIT_CONFIGS = {
    # Online with majority labels over an odd M (no ties); offline with soft labels.
    "online": DPOOnlineConfig(
        labels="majority",
        num_queries=3,
        num_iterations=60,
        num_pairs=32,
        num_eval_pairs=32,
        learning_rate=0.1,
    ),
    "offline": DPOOfflineConfig(
        labels="soft",
        num_queries=3,
        num_iterations=60,
        dataset_size=256,
        minibatch_size=32,
        num_eval_pairs=32,
        learning_rate=0.1,
    ),
}


@pytest.fixture(scope="module")
def bandit():
    env, params = make("gridworld", layout=["XSG"], horizon=1, slip=0.0)
    policy = make_policy("tabular", env, params)
    return env, params, policy, Oracle(make_link("bradley-terry"))


@pytest.fixture(scope="module", params=sorted(BANDIT_CONFIGS))
def bandit_run(request, bandit):
    """One compiled train per mode, run on NUM_SEEDS seeds at once.

    The train function is wrapped to count its traces: the vmapped run here and the single-key
    runs of the determinism test must share one trace (jit traces per-example shapes under vmap).
    """
    env, _, policy, oracle = bandit
    config = BANDIT_CONFIGS[request.param]
    # chex counts traces per code location, shared by both modes: start from zero.
    chex.clear_trace_counter()
    trainer = make_training(config, env, policy, oracle, probe=True)
    train = jax.jit(chex.assert_max_traces(trainer.train, n=1))
    keys = jax.random.split(jax.random.key(11), NUM_SEEDS)
    final, metrics = jax.vmap(train)(keys)
    return request.param, config, train, keys, final, metrics, trainer


# -- losses and labels ---------------------------------------------------------------------------

# Hand-computed at β = 0.5, H = 4, ε = 0.2 for margins Δ = 2 (βΔ = 1) and Δ = −1 (βΔ = −½):
# sigmoid log(1 + e^−1), log(1 + e^½); ipo (½ − 1)², (−¼ − 1)²;
# robust [0.8·log(1 + e^−1) − 0.2·log(1 + e)]/0.6, [0.8·log(1 + e^½) − 0.2·log(1 + e^−½)]/0.6;
# hinge relu(0), relu(1.5).
HAND_VALUES = {
    "sigmoid": (0.31326168751822286, 0.9740769841801067),
    "ipo": (0.25, 1.5625),
    "robust": (-0.02007164581511049, 1.1407436508467734),
    "hinge": (0.0, 1.5),
}


@pytest.mark.parametrize("loss", sorted(HAND_VALUES))
def test_loss_values_match_hand_computation(loss):
    got = dpo_loss(loss, jnp.array([2.0, -1.0]), beta=0.5, horizon=4, flip_rate=0.2)
    np.testing.assert_allclose(got, HAND_VALUES[loss], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss", sorted(HAND_VALUES))
def test_labelled_loss_hard_and_soft(loss):
    margin_ab = jnp.array([2.0, -1.0, 0.3])
    kwargs = {"beta": 0.5, "horizon": 4, "flip_rate": 0.2}
    forward = dpo_loss(loss, margin_ab, **kwargs)
    backward = dpo_loss(loss, -margin_ab, **kwargs)
    # Hard labels: the loss of the winner-minus-loser margin.
    np.testing.assert_allclose(labelled_loss(loss, margin_ab, 1.0, **kwargs), forward)
    np.testing.assert_allclose(labelled_loss(loss, margin_ab, 0.0, **kwargs), backward)
    # Soft label p̂ = 2/3 from votes (1, 1, 0): the mean over votes of the hard-label loss.
    soft = labelled_loss(loss, margin_ab, 2.0 / 3.0, **kwargs)
    np.testing.assert_allclose(soft, (2.0 * forward + backward) / 3.0, rtol=1e-6)


def _feedback(votes, answered=None):
    votes = jnp.asarray(votes, jnp.float32)
    answered = jnp.ones(votes.shape, bool) if answered is None else jnp.asarray(answered)
    return Feedback(votes=votes, answered=answered, queries=jnp.int32(votes.size))


def test_labels_majority_soft_ties_and_skips():
    votes = [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0], [1, 0, 1, 1], [0.5, 0.5, 1, 0]]
    answered = [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
    feedback = _feedback(votes, jnp.asarray(answered, bool))
    key = jax.random.key(0)
    soft, soft_w = make_labels(key, feedback, "soft", "random")
    np.testing.assert_allclose(soft, [0.5, 0.75, 0.25, 0.5, 0.5])
    np.testing.assert_array_equal(soft_w, [1, 1, 1, 0, 1])  # all skipped: no label
    dropped, drop_w = make_labels(key, feedback, "majority", "drop")
    np.testing.assert_array_equal(dropped[1:3], [1.0, 0.0])
    np.testing.assert_array_equal(drop_w, [0, 1, 1, 0, 0])  # ties (rows 0 and 4) dropped
    # Random tie-breaks: a fair coin per tied pair, over many pairs.
    many = _feedback(jnp.tile(jnp.array([[1.0, 0.0]]), (4000, 1)))
    coins, coin_w = make_labels(jax.random.key(1), many, "majority", "random")
    assert set(np.unique(coins)) == {0.0, 1.0}
    np.testing.assert_array_equal(coin_w, 1.0)
    # Fair coin: the mean is within 4 standard errors (sd ½ / √4000) of ½.
    assert abs(float(coins.mean()) - 0.5) < 4 * 0.5 / math.sqrt(4000)


def test_log_ratio_sums_valid_steps_only(bandit):
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta, ref = policy.init(jax.random.key(1)), policy.init(jax.random.key(2))
    steps = Steps(
        obs=jnp.array([[0, 1, 6], [3, 3, 3]]),
        action=jnp.array([[1, 2, 0], [3, 0, 1]]),
        valid=jnp.array([[True, True, False], [True, False, False]]),
    )
    lp = np.asarray(jax.nn.log_softmax(theta["logits"], -1))
    lp_ref = np.asarray(jax.nn.log_softmax(ref["logits"], -1))
    expected = [
        lp[0, 1] - lp_ref[0, 1] + lp[1, 2] - lp_ref[1, 2],
        lp[3, 3] - lp_ref[3, 3],
    ]
    np.testing.assert_allclose(log_ratio(policy, theta, ref, steps), expected, rtol=1e-5)


def test_exact_trajectory_kl_matches_monte_carlo():
    """Exact KL vs the mean of Σ_t log π_θ/π_ref over trajectories sampled from π_θ."""
    env, params = make("gridworld/cliff-4x6")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta, ref = policy.init(jax.random.key(3)), policy.init(jax.random.key(4))
    model = env.tabular_model(params)
    states = jnp.arange(env.num_states(params))
    probs = policy.action_probs(theta, states)
    dist = occupancy(model, probs)
    assert dist.shape == (params.horizon, env.num_states(params))
    np.testing.assert_allclose(dist.sum(-1), 1.0, rtol=1e-5)
    log_probs, ref_log_probs = policy.log_probs(theta, states), policy.log_probs(ref, states)
    exact = float(trajectory_kl(model, log_probs, ref_log_probs))
    assert float(trajectory_kl(model, log_probs, log_probs)) == pytest.approx(0.0, abs=1e-6)

    num = 20_000
    traj = rollout_batch(jax.random.key(5), policy, theta, env, params, num)
    samples = np.asarray(log_ratio(policy, theta, ref, Steps.of(traj)))
    standard_error = samples.std(ddof=1) / math.sqrt(num)
    assert abs(samples.mean() - exact) < 4 * standard_error


# -- training ------------------------------------------------------------------------------------


def test_recovers_the_preferred_action(bandit_run):
    mode, _, _, _, final, metrics, _ = bandit_run
    probs = np.asarray(jax.nn.softmax(final["logits"][:, 1], axis=-1))  # state 1 is S
    print(mode, "P(right | S) per seed:", np.round(probs[:, RIGHT], 3))
    assert np.median(probs[:, RIGHT]) >= 0.95
    assert np.median(metrics["rewards/accuracies"][:, -1]) >= 0.95
    # The implicit reward moved away from π_ref: KL grew, and exact value approaches 1.
    assert np.all(metrics["dpo/kl"][:, -1] > metrics["dpo/kl"][:, 0])
    assert np.median(metrics["exact/value"][:, -1]) >= 0.95


def test_budget_counters(bandit_run, bandit):
    mode, config, _, _, _, metrics, _ = bandit_run
    horizon = bandit[1].horizon
    it = np.arange(1, config.num_iterations + 1)[None, :]
    if mode == "online":
        pairs = it * config.num_pairs
    else:
        # Every query is spent labelling the dataset before the first step: flat afterwards.
        pairs = np.full_like(it, config.dataset_size)
    np.testing.assert_array_equal(
        metrics["budget/queries"], np.broadcast_to(pairs * config.num_queries, (NUM_SEEDS, it.size))
    )
    np.testing.assert_array_equal(
        metrics["budget/trajectories"], np.broadcast_to(2 * pairs, (NUM_SEEDS, it.size))
    )
    np.testing.assert_array_equal(
        metrics["budget/env_steps"], np.broadcast_to(2 * pairs * horizon, (NUM_SEEDS, it.size))
    )
    np.testing.assert_array_equal(
        metrics["budget/judged_trajectories"], 2 * metrics["budget/queries"]
    )
    for key in ("budget/queries", "budget/trajectories", "budget/env_steps"):
        assert metrics[key].dtype == jnp.int32
    names = ("losses/policy_loss", "rewards/margins", "dpo/kl", "rewards/accuracies", "exact/value")
    for key in names:
        assert metrics[key].shape == (NUM_SEEDS, config.num_iterations)
        chex.assert_tree_all_finite(metrics[key])


def test_determinism_and_single_compilation(bandit_run):
    mode, _, train, keys, _, batched, _ = bandit_run
    # The same keys give the same numbers (this re-run reuses the compiled vmapped function).
    _, again = jax.vmap(train)(keys)
    jax.tree_util.tree_map(np.testing.assert_array_equal, batched, again)
    loss = batched["losses/policy_loss"]
    assert not np.array_equal(loss[0], loss[1])
    if mode == "offline":
        return  # the single-key checks below compile once more; one mode is enough for them
    _, first = train(keys[0])
    _, other = train(keys[1])
    # One compiled function serves every key (a second trace would raise in chex's wrapper).
    assert train._cache_size() == 1
    # vmapped over seeds, it gives the same numbers as one seed at a time.
    np.testing.assert_allclose(batched["exact/value"][0], first["exact/value"], rtol=1e-5)
    np.testing.assert_allclose(batched["exact/value"][1], other["exact/value"], rtol=1e-5)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"loss": "kto"}, "loss = 'kto': must be one of sigmoid, ipo, robust, hinge"),
        ({"labels": "hard"}, "labels = 'hard': must be one of majority, soft"),
        ({"ties": "first"}, "ties = 'first': must be one of random, drop"),
        ({"beta": 0.0}, r"beta = 0.0: must be in \(0, inf\)"),
        ({"beta": "big"}, "beta = 'big': must be a real number"),
        ({"learning_rate": -1.0}, "learning_rate = -1.0"),
        ({"flip_rate": 0.5}, r"flip_rate = 0.5: must be in \[0, 0.5\)"),
        ({"num_queries": 0}, r"num_queries = 0: must be an integer in \[1, inf\]"),
        ({"num_pairs": 2.5}, r"num_pairs = 2.5: must be an integer in \[1, inf\]"),
        ({"num_iterations": True}, "num_iterations = True"),
        ({"dataset_size": 8, "minibatch_size": 16}, "minibatch_size = 16"),
        ({"num_iterations": 10**6, "num_pairs": 10**4}, "num_iterations.*exceed int32"),
        ({"dataset_size": 10**9}, "dataset_size.*exceed int32"),
    ],
)
def test_bad_configs(bandit, overrides, match):
    env, _, policy, oracle = bandit
    offline = "dataset_size" in overrides
    config = (DPOOfflineConfig if offline else DPOOnlineConfig)(**overrides)
    with pytest.raises(ConfigError, match=match):
        make_train(config, env, policy, oracle)


def test_needs_an_oracle_and_a_matching_reference(bandit):
    env, _, policy, oracle = bandit
    with pytest.raises(ConfigError, match="needs an oracle"):
        make_train(DPOOnlineConfig(), env, policy, None)
    wrong = make_policy("tabular", *make("gridworld/open-5x5")).init(jax.random.key(0))
    with pytest.raises(ConfigError, match="initial_params"):
        make_train(DPOOnlineConfig(), env, policy, oracle, initial_params=wrong)


def test_chunked_run_equals_one_run(bandit_run):
    """The runner splits runs into chunks; a boundary mid-epoch (offline) must change nothing."""
    mode, config, _, keys, final, whole, trainer = bandit_run
    if mode == "online":
        return  # the online state has no epoch order; the offline case is the one at risk
    # 8 steps per epoch: the boundary at 30 falls mid-epoch, and the second chunk reshuffles.
    half = config.num_iterations // 2
    run = jax.jit(trainer.run, static_argnums=2)  # one compilation serves both chunks
    carry, first = run(jax.jit(trainer.init)(keys[0]), 0, half)
    carry, second = run(carry, half, half)
    for name in ("losses/policy_loss", "exact/value", "budget/queries"):
        chunked = np.concatenate([first[name], second[name]])
        np.testing.assert_allclose(chunked, whole[name][0], rtol=1e-5, err_msg=name)
    params = trainer.final_params(carry)
    np.testing.assert_allclose(params["logits"], final["logits"][0], rtol=1e-5)


# -- non-tabular environments ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env_id", "policy_name"),
    [
        pytest.param("gymnax/Pendulum-v1", "gaussian", marks=pytest.mark.slow),
        ("gymnax/CartPole-v1", "mlp"),
    ],
)
def test_online_dpo_runs_on_control_envs(env_id, policy_name):
    """Online DPO with a Gaussian (continuous) and an MLP categorical policy: no exact model, so
    no KL or exact value, but finite losses and the budget R × P × M exactly."""
    env, params = make(env_id, horizon=20)
    policy = make_policy(policy_name, env, params, hidden_sizes=(16,))
    config = DPOOnlineConfig(num_iterations=3, num_pairs=8, num_queries=5, num_eval_pairs=16)
    oracle = Oracle(make_link("bradley-terry"))
    _, metrics = make_train(config, env, policy, oracle, params)(jax.random.key(0))
    it = np.arange(1, 4)
    np.testing.assert_array_equal(metrics["budget/queries"], it * 8 * 5)
    np.testing.assert_array_equal(metrics["budget/trajectories"], it * 2 * 8)
    steps = np.asarray(metrics["budget/env_steps"])
    if policy_name == "gaussian":
        np.testing.assert_array_equal(steps, it * 2 * 8 * 20)  # Pendulum never ends early
    else:
        assert np.all(np.diff(steps) > 0) and steps[-1] <= 3 * 2 * 8 * 20
    assert "dpo/kl" not in metrics and "exact/value" not in metrics
    for name in ("losses/policy_loss", "rewards/margins"):
        chex.assert_tree_all_finite(metrics[name])
    # The first loss is at θ = θ_ref: a zero margin, so the sigmoid loss is log 2.
    np.testing.assert_allclose(metrics["losses/policy_loss"][0], math.log(2.0), rtol=1e-5)
    # After one update the policy has moved: the next batch has a nonzero margin.
    assert float(jnp.abs(metrics["rewards/margins"][-1])) > 0


# -- the shared DPO core (make_core) against numpy references -------------------------------------

# From S in "XSG" (state 1): up and down stay (utility 0), right enters the goal (+1), left the
# trap (−1); a one-step episode's utility is its action's.
BANDIT_UTILITY = np.array([0.0, 1.0, 0.0, -1.0])
START = 1


def _core(problem, **overrides):
    return make_core(DPOOnlineConfig(**overrides), problem)


def _flat_logits(table):
    """The flat θ of a tabular policy whose logits are `table` [S, A]."""
    return jax.flatten_util.ravel_pytree({"logits": jnp.asarray(table, jnp.float32)})[0]


def _log_softmax(table):
    table = np.asarray(table, np.float64)
    return table - np.logaddexp.reduce(table, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def bandit_problem(bandit):
    env, params, policy, oracle = bandit
    return Problem.build(env, policy, oracle, params)


def test_core_init_and_diagnostics_match_numpy(bandit_problem):
    core = _core(bandit_problem, num_eval_pairs=64)
    key = jax.random.key(3)
    state = core.init(key)
    # θ_0 = θ_ref = the policy's initial parameters from the same key.
    np.testing.assert_array_equal(state.theta, bandit_problem.initial_theta(key))
    np.testing.assert_array_equal(state.ref_theta, state.theta)
    first, second = state.eval_set.first, state.eval_set.second
    assert first.action.shape == second.action.shape == (64, 1)
    np.testing.assert_array_equal(first.obs, START)
    np.testing.assert_array_equal(second.valid, True)
    a, b = np.asarray(first.action[:, 0]), np.asarray(second.action[:, 0])
    # The truth is the sign of the utility difference, by hand from the actions.
    truth = np.sign(BANDIT_UTILITY[a] - BANDIT_UTILITY[b])
    np.testing.assert_array_equal(state.eval_set.truth, truth)
    informative = truth != 0
    assert informative.sum() > 0
    # At θ = θ_ref every margin is 0: each informative pair counts half right; the KL is 0.
    at_ref = core.diagnostics(state)
    assert float(at_ref["rewards/accuracies"]) == 0.5
    assert float(at_ref["dpo/kl"]) == 0.0

    # Logits (up, right, down, left) = (0, 1, 2, 1) at S, reference uniform: the log-ratio margin
    # of a pair is the logit difference, 0 for right vs left (counted half right).
    logits = np.array([0.0, 1.0, 2.0, 1.0])
    table = np.zeros((3, 4))
    table[START] = logits
    moved = state.replace(theta=_flat_logits(table), ref_theta=_flat_logits(np.zeros((3, 4))))
    got = core.diagnostics(moved)
    margin = logits[a] - logits[b]
    right = np.where(np.sign(margin) == truth, 1.0, np.where(margin == 0, 0.5, 0.0))
    # The set has right answers, wrong ones and zero margins of unequal utility (a fixed seed).
    assert {0.0, 0.5, 1.0} <= set(right[informative])
    expected = right[informative].mean()
    np.testing.assert_allclose(got["rewards/accuracies"], expected, rtol=1e-6)
    p = np.exp(_log_softmax(logits))
    kl = float(np.sum(p * np.log(p / 0.25)))  # one step from S: the KL at S to uniform
    np.testing.assert_allclose(got["dpo/kl"], kl, rtol=1e-5)


def _label_accuracy(pairs):
    """By hand: over pairs of unequal utility with weight > 0, the label mass on the better one."""
    u_a = BANDIT_UTILITY[np.asarray(pairs.first.action[:, 0])]
    u_b = BANDIT_UTILITY[np.asarray(pairs.second.action[:, 0])]
    label, weight = np.asarray(pairs.label, np.float64), np.asarray(pairs.weight)
    informative = (u_a != u_b) & (weight > 0)
    agree = np.where(u_a > u_b, label, 1.0 - label)
    return agree[informative].mean(), u_a, u_b


def test_core_collect_soft_labels_and_their_accuracy(bandit_problem):
    num, m = 64, 3
    core = _core(bandit_problem, labels="soft", num_queries=m)
    theta = bandit_problem.initial_theta(jax.random.key(0))
    pairs, spent, accuracy = core.collect(jax.random.key(4), theta, num)
    assert pairs.label.shape == pairs.weight.shape == (num,)
    # Soft labels: the fraction of M = 3 votes, all answered (weight 1).
    votes = np.asarray(pairs.label) * m
    np.testing.assert_allclose(votes, np.round(votes), atol=1e-5)
    assert np.any((votes > 0.5) & (votes < 2.5))
    np.testing.assert_array_equal(pairs.weight, 1.0)
    expected, u_a, u_b = _label_accuracy(pairs)
    # The batch has equal-utility pairs (left out) and labels on the worse side (soft mass < 1).
    assert np.any(u_a == u_b) and np.any((u_a < u_b) & (votes > 0.5))
    np.testing.assert_allclose(accuracy, expected, rtol=1e-6)
    assert int(spent.queries) == num * m
    assert int(spent.trajectories) == int(spent.env_steps) == 2 * num


def test_core_collect_majority_labels_drop_ties(bandit_problem):
    num = 64
    # M = 2 votes: a 1–1 split is a tie, dropped (weight 0), also for pairs of unequal utility.
    core = _core(bandit_problem, labels="majority", ties="drop", num_queries=2)
    theta = bandit_problem.initial_theta(jax.random.key(0))
    pairs, spent, accuracy = core.collect(jax.random.key(5), theta, num)
    assert set(np.unique(pairs.label)) <= {0.0, 1.0}
    weight = np.asarray(pairs.weight)
    assert set(np.unique(weight)) == {0.0, 1.0}
    expected, u_a, u_b = _label_accuracy(pairs)
    assert np.any((u_a != u_b) & (weight == 0))
    np.testing.assert_allclose(accuracy, expected, rtol=1e-6)
    assert int(spent.queries) == 2 * num


# Hand-made pairs for a horizon-3 layout "XSG": steps in states 1 and 2 only (state 0 unvisited),
# some steps invalid (the episode ended).
PAIR_STEPS = {
    "first": (
        [[1, 1, 2], [1, 2, 2], [1, 2, 2], [1, 1, 1], [1, 2, 1]],
        [[1, 0, 3], [3, 1, 2], [2, 0, 0], [0, 1, 2], [3, 3, 1]],
    ),
    "second": (
        [[1, 2, 1], [1, 1, 2], [1, 1, 2], [1, 2, 2], [1, 1, 1]],
        [[2, 2, 0], [0, 3, 1], [1, 1, 3], [3, 0, 0], [1, 2, 3]],
    ),
}
PAIR_VALID = [[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]]
PAIR_LABELS = [1.0, 0.0, 0.75, 0.5, 1.0 / 3.0]


def _reference_loss(loss, margin, beta, horizon, eps):
    """The four losses of a margin in float64, from their definitions (science.md §7)."""
    z = beta * margin
    neg_log_sigmoid = np.logaddexp(0.0, -z)  # −log σ(z)
    if loss == "sigmoid":
        return neg_log_sigmoid
    if loss == "ipo":
        return (margin / horizon - 1.0 / (2.0 * beta)) ** 2
    if loss == "robust":
        log_sigmoid_neg = -np.logaddexp(0.0, z)  # log σ(−z)
        return ((1.0 - eps) * neg_log_sigmoid + eps * log_sigmoid_neg) / (1.0 - 2.0 * eps)
    return np.maximum(1.0 - z, 0.0)  # hinge


@pytest.mark.parametrize("loss", sorted(HAND_VALUES))
def test_core_apply_matches_numpy_loss_margin_and_adam_step(bandit, loss):
    env, params = make("gridworld", layout=["XSG"], horizon=3, slip=0.0)
    problem = Problem.build(env, make_policy("tabular", env, params), bandit[3], params)
    assert problem.horizon == 3
    beta, eps, lr = 0.7, 0.2, 0.05
    core = _core(problem, loss=loss, beta=beta, flip_rate=eps, learning_rate=lr, num_eval_pairs=4)
    rng = np.random.default_rng(0)
    theta, ref_theta = _flat_logits(rng.normal(size=(3, 4))), _flat_logits(rng.normal(size=(3, 4)))
    ref_log_probs = _log_softmax(np.asarray(ref_theta, np.float64).reshape(3, 4))
    valid = np.asarray(PAIR_VALID, bool)
    steps = [
        Steps(obs=jnp.asarray(obs), action=jnp.asarray(action), valid=jnp.asarray(valid))
        for obs, action in PAIR_STEPS.values()
    ]
    label = np.asarray(PAIR_LABELS)

    def reference(flat_theta, weight):
        """(mean weighted loss, β·mean weighted (2p − 1)Δ) in float64, by hand."""
        ratio = _log_softmax(flat_theta.reshape(3, 4)) - ref_log_probs
        first, second = (
            np.where(valid, ratio[np.asarray(obs), np.asarray(action)], 0.0).sum(-1)
            for obs, action in PAIR_STEPS.values()
        )
        m = first - second
        per_pair = label * _reference_loss(loss, m, beta, 3, eps) + (1 - label) * _reference_loss(
            loss, -m, beta, 3, eps
        )
        total = max(weight.sum(), 1.0)
        return (weight * per_pair).sum() / total, beta * (
            weight * (2 * label - 1) * m
        ).sum() / total

    # Several pairs dropped or kept, and a single kept pair (the mean divides by 1).
    for weight in (np.array([1.0, 1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0, 0.0])):
        pairs = LabelledPairs(
            *steps,
            jnp.asarray(label, jnp.float32),
            jnp.asarray(weight, jnp.float32),
        )
        opt_state = core.init(jax.random.key(0)).opt_state
        new_theta, _, got_loss, got_margin = core.apply(theta, opt_state, ref_theta, pairs)
        base = np.asarray(theta, np.float64)
        want_loss, want_margin = reference(base, weight)
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_margin, want_margin, rtol=1e-5, atol=1e-6)
        # Adam's first step moves each coordinate by lr·g/(|g| + 1e-8) = lr·sign(g); the gradient's
        # sign from central differences of the reference loss (state 0 unvisited: g = 0).
        grad = np.zeros_like(base)
        h = 1e-6
        for i in range(base.size):
            up, down = base.copy(), base.copy()
            up[i] += h
            down[i] -= h
            grad[i] = (reference(up, weight)[0] - reference(down, weight)[0]) / (2 * h)
        moved = np.abs(grad) > 1e-4
        assert moved.sum() >= 6
        step = np.asarray(new_theta, np.float64) - base
        np.testing.assert_allclose(step[moved], -lr * np.sign(grad[moved]), rtol=1e-4)
        np.testing.assert_array_equal(step[:4], 0.0)


def test_loss_defaults_are_one_step_without_flips():
    """Called without horizon and flip_rate (as zopg.algorithms.token_finetune does): H = 1 and
    ε = 0, so ipo is (Δ − 1/(2β))² and robust is the sigmoid loss, by hand in float64."""
    margin, beta = np.array([2.0, -1.0, 0.3]), 0.5
    ipo = lambda m: (m - 1.0 / (2.0 * beta)) ** 2  # noqa: E731
    sigmoid = lambda m: np.logaddexp(0.0, -beta * m)  # noqa: E731
    m = jnp.asarray(margin)
    np.testing.assert_allclose(dpo_loss("ipo", m, beta), ipo(margin), rtol=1e-6)
    np.testing.assert_allclose(dpo_loss("robust", m, beta), sigmoid(margin), rtol=1e-6)
    p = 0.75
    np.testing.assert_allclose(
        labelled_loss("ipo", m, p, beta), p * ipo(margin) + (1 - p) * ipo(-margin), rtol=1e-6
    )
    np.testing.assert_allclose(
        labelled_loss("robust", m, p, beta),
        p * sigmoid(margin) + (1 - p) * sigmoid(-margin),
        rtol=1e-6,
    )


def test_mean_where_is_nan_without_entries_and_the_masked_mean_otherwise():
    values = jnp.array([0.25, 0.5, 2.0, 7.0])
    assert np.isnan(float(mean_where(values, jnp.zeros(4, bool))))
    assert float(mean_where(values, jnp.array([False, True, False, False]))) == 0.5
    assert float(mean_where(values, jnp.array([True, False, True, False]))) == 1.125


@pytest.mark.parametrize("config", [DPOOnlineConfig, DPOOfflineConfig])
def test_the_missing_oracle_error_names_dpo(bandit, config):
    env, _, policy, _ = bandit
    with pytest.raises(ConfigError, match=r"^DPO learns from preferences and needs an oracle"):
        make_train(config(), env, policy, None)


def test_held_out_pairs_are_a_fixed_stream_of_the_seed(bandit, bandit_problem):
    """Reproducibility of recorded accuracies: a seed's held-out pairs are π_ref's rollouts under
    fold_in(key, 1), split in two for the two sides (policy.init consumes the key itself)."""
    env, params, policy, _ = bandit
    key = jax.random.key(7)
    state = _core(bandit_problem, num_eval_pairs=16).init(key)
    ref = bandit_problem.unravel(state.ref_theta)
    keys = jax.random.split(jax.random.fold_in(key, 1))
    for k, side in zip(keys, (state.eval_set.first, state.eval_set.second), strict=True):
        np.testing.assert_array_equal(
            side.action, rollout_batch(k, policy, ref, env, params, 16).action
        )


def test_unknown_loss_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"^unknown DPO loss 'kto'$"):
        dpo_loss("kto", jnp.zeros(2), 0.1)


LABELS_AND_TIES = (("soft", "random"), ("majority", "random"), ("majority", "drop"))


def test_make_labels_over_leading_axes_with_partial_skips():
    """Feedback of shape [2, 3, M] (leading axes follow the pairs' batch shape), some queries
    skipped (their votes must not count); labels by hand. They stay float32 under x64, which
    zopg.rates turns on for its float64 measurements."""
    votes = np.array(
        [
            [[1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 0]],
            [[1, 1, 1, 1], [0, 0, 1, 0.5], [0, 1, 1, 0]],
        ]
    )
    answered = np.array(
        [
            [[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 1]],
            [[0, 0, 0, 0], [1, 0, 1, 1], [0, 1, 1, 1]],
        ],
        bool,
    )
    feedback = _feedback(votes, jnp.asarray(answered))
    num = answered.sum(-1)
    vote_sum = np.where(answered, votes, 0.0).sum(-1)
    has_vote = num > 0
    soft, soft_w = make_labels(jax.random.key(0), feedback, "soft", "random")
    # Rows: ½ (2 answered), 1 (one answer), ¼, no answer (½, weight 0), ½, ⅔.
    np.testing.assert_allclose(soft, np.where(has_vote, vote_sum / np.maximum(num, 1), 0.5))
    np.testing.assert_array_equal(soft_w, has_vote)
    lead = 2 * vote_sum - num
    hard, hard_w = make_labels(jax.random.key(0), feedback, "majority", "drop")
    decided = lead != 0
    np.testing.assert_array_equal(np.asarray(hard)[decided], lead[decided] > 0)
    np.testing.assert_array_equal(hard_w, has_vote & decided)
    with jax.enable_x64(True):
        for labels in LABELS_AND_TIES:
            label, weight = make_labels(jax.random.key(0), feedback, *labels)
            assert label.dtype == weight.dtype == jnp.float32, labels


def test_log_ratio_sums_over_time_only_with_leading_axes():
    """Steps [2, 2, 3] (two batch axes before time): the sum runs over the last axis alone."""
    env, params = make("gridworld/open-5x5")
    policy = make_policy("tabular", env, params, init_scale=1.0)
    theta, ref = policy.init(jax.random.key(1)), policy.init(jax.random.key(2))
    rng = np.random.default_rng(1)
    obs, action = rng.integers(0, 25, (2, 2, 3)), rng.integers(0, 4, (2, 2, 3))
    valid = np.array([[[1, 1, 0], [1, 0, 0]], [[1, 1, 1], [0, 0, 0]]], bool)
    steps = Steps(obs=jnp.asarray(obs), action=jnp.asarray(action), valid=jnp.asarray(valid))
    ratio = _log_softmax(theta["logits"]) - _log_softmax(ref["logits"])
    expected = np.where(valid, ratio[obs, action], 0.0).sum(-1)
    np.testing.assert_allclose(log_ratio(policy, theta, ref, steps), expected, rtol=1e-5, atol=1e-6)
