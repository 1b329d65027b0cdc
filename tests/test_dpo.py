"""DPO: loss formulas, labels, log-ratios, exact KL, learning on a deterministic bandit, budgets.

The bandit is a one-step GridWorld "XSG" without slip: from S, right enters the goal (+1), left
the trap (−1), up and down stay (0). There DPO's closed form holds, π* ∝ π_ref·exp(r/β), so with
β = 0.1 the preferred action's probability should approach 1.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.algorithms import DPOOfflineConfig, DPOOnlineConfig, make_train, make_training
from zopg.algorithms.dpo_losses import (
    Steps,
    dpo_loss,
    labelled_loss,
    log_ratio,
    make_labels,
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
