"""The normalised score that every summary publishes: 0 at the uniform policy, 1 at the optimum,
and (V − V_u) / (V* − V_u) in between, with V, V_u and V* recomputed here by a NumPy backward
induction that shares no code with `zopg.exact`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg.analysis.report import normaliser
from zopg.envs import make
from zopg.evaluation import make_evaluator
from zopg.policies import make_policy

# Deterministic layouts (an optimal stationary policy exists: the shortest safe path) and
# stochastic ones with other trap penalties (different utilities over the same cells).
DETERMINISTIC = [
    ("gridworld/open-5x5", {"slip": 0.0}),
    ("gridworld/cliff-4x6", {"slip": 0.0}),
    (
        "gridworld",
        {"layout": ["S...", ".XX.", "...G"], "horizon": 7, "trap_reward": -2.0, "slip": 0.0},
    ),
]
STOCHASTIC = [
    (
        "gridworld",
        {"layout": ["....", "S..G", ".XX."], "horizon": 6, "slip": 0.3, "trap_reward": -4.0},
    ),
    ("gridworld/open-5x5", {}),
    ("gridworld/cliff-4x6", {"slip": 0.2, "trap_reward": -0.5}),
]


def numpy_values(model, probs=None, discount=1.0):
    """V_0 from the start distribution by H backups in float64: under `probs` [S, A], or the
    optimum (max over actions at each step) when probs is None; also Q of the last backup,
    with the future discounted by `discount`."""
    p = np.asarray(model.transition, np.float64)
    r = np.einsum("sat,sat->sa", p, np.asarray(model.reward, np.float64))
    v = np.zeros(p.shape[0])
    for _ in range(model.horizon):
        q = r + discount * (p @ v)
        v = q.max(axis=1) if probs is None else (probs * q).sum(axis=1)
    return float(np.asarray(model.start, np.float64) @ v), q


def setting(env_id, overrides):
    env, params = make(env_id, **overrides)
    policy = make_policy("tabular", env, params)
    evaluator = make_evaluator(env, params, policy)
    model = env.tabular_model(params)
    return env, params, policy, evaluator, model


def scores(evaluator, values):
    low, high = evaluator.bounds
    return normaliser({"uniform_value": low, "optimal_value": high})(values)


def policy_for(policy, probs):
    """Tabular parameters whose action probabilities are `probs` (logits = log probs)."""
    logits = jnp.log(jnp.clip(jnp.asarray(probs, jnp.float32), 1e-30, 1.0))
    return {"logits": logits}


@pytest.mark.parametrize(("env_id", "overrides"), DETERMINISTIC + STOCHASTIC)
def test_bounds_and_scores_match_an_independent_backward_induction(env_id, overrides):
    env, params, policy, evaluator, model = setting(env_id, overrides)
    states, actions = env.num_states(params), env.num_actions
    uniform = np.full((states, actions), 1.0 / actions)
    v_uniform, _ = numpy_values(model, uniform)
    v_star, _ = numpy_values(model)
    assert v_star - v_uniform > 0.05  # a gap to normalise by
    low, high = evaluator.bounds
    np.testing.assert_allclose([low, high], [v_uniform, v_star], rtol=0, atol=1e-5)
    # The uniform policy scores exactly 0 (the evaluator's value is the bound itself).
    value, _ = evaluator.value(None, policy.init(jax.random.key(0)))
    assert float(scores(evaluator, float(value))) == pytest.approx(0.0, abs=1e-5)
    # Random policies: the published score is the ratio computed here.
    rng = np.random.default_rng(3)
    for _ in range(3):
        probs = rng.dirichlet(np.ones(actions), size=states)
        value, _ = evaluator.value(None, policy_for(policy, probs))
        v, _ = numpy_values(model, probs)
        expected = (v - v_uniform) / (v_star - v_uniform)
        assert float(scores(evaluator, float(value))) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("env_id", "overrides"), DETERMINISTIC)
def test_the_optimal_policy_scores_one(env_id, overrides):
    """On a deterministic layout the shortest optimal path is optimal at every step, whatever
    the time left: the greedy policy of the H-step Q with the future discounted a little (which
    breaks ties towards the goal sooner) is optimal, so its value is V* and its score 1 (an
    off-by-1% denominator shows)."""
    env, _, policy, evaluator, model = setting(env_id, overrides)
    _, q = numpy_values(model, discount=1 - 1e-4)
    greedy = np.eye(env.num_actions)[q.argmax(axis=1)]
    value, _ = evaluator.value(None, policy_for(policy, greedy))
    assert float(value) == pytest.approx(evaluator.bounds[1], abs=1e-5)
    assert float(scores(evaluator, float(value))) == pytest.approx(1.0, abs=1e-5)
