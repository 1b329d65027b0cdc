"""Exact evaluation against hand-computed values, finite differences and Monte Carlo rollouts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg.envs import make
from zopg.exact import optimal_value, policy_value, state_values, value_fn
from zopg.policies import make_policy
from zopg.rollout import masked_return, rollout_batch


def tiny(slip):
    # Start between a trap (left) and a goal (right); up/down leave the agent in place.
    return make(
        "gridworld",
        layout=["XSG"],
        horizon=2,
        slip=slip,
        goal_reward=1.0,
        trap_reward=-1.0,
        step_reward=-0.1,
    )


def test_policy_value_by_hand_uniform():
    """Uniform policy: each step from S goes to G, X or stays with prob 1/4, 1/4, 1/2."""
    env, params = tiny(slip=0.3)
    probs = jnp.full((3, 4), 0.25)
    per_step = -0.1 + 0.25 * 1.0 + 0.25 * -1.0  # from S, whatever the slip
    expected = per_step + 0.5 * per_step
    assert float(policy_value(env.tabular_model(params), probs)) == pytest.approx(expected)


def test_policy_value_by_hand_always_right():
    slip = 0.2
    env, params = tiny(slip)
    probs = jnp.zeros((3, 4)).at[:, 1].set(1.0)
    p_goal, p_trap = 1 - slip + slip / 4, slip / 4
    p_stay = 1 - p_goal - p_trap
    per_step = -0.1 + p_goal - p_trap
    expected = per_step + p_stay * per_step
    model = env.tabular_model(params)
    assert float(policy_value(model, probs)) == pytest.approx(expected, rel=1e-6)
    # Always-right is optimal here, and the optimum is the same value.
    assert float(optimal_value(model)) == pytest.approx(expected, rel=1e-6)


def test_optimal_value_bounds_every_policy(builtin_env):
    _, env, params = builtin_env
    model = env.tabular_model(params)
    best = float(optimal_value(model))
    logits = 3.0 * jax.random.normal(jax.random.key(0), (64, *model.transition.shape[:2]))
    values = jax.vmap(lambda lg: policy_value(model, jax.nn.softmax(lg)))(logits)
    assert float(values.max()) <= best + 1e-5
    # On these layouts the optimum reaches the goal with high probability.
    assert best > 0.9


def test_gradient_matches_finite_differences(builtin_env):
    _, env, params = builtin_env
    policy = make_policy("tabular", env, params, init_scale=0.5)
    theta = policy.init(jax.random.key(3))
    value = value_fn(env.tabular_model(params), policy, env.num_states(params))
    grad = jax.grad(value)(theta)["logits"]
    eps = 1e-2
    for i in range(4):
        direction = jax.random.normal(jax.random.key(10 + i), grad.shape)
        plus = value({"logits": theta["logits"] + eps * direction})
        minus = value({"logits": theta["logits"] - eps * direction})
        fd = float((plus - minus) / (2 * eps))
        exact = float(jnp.sum(grad * direction))
        # Central differences have O(eps^2) error; float32 round-off adds ~1e-6 / eps.
        assert fd == pytest.approx(exact, rel=2e-2, abs=5e-4)


class KeyDrivenOnly:
    """Hides an env's uniform-driven step, so rollouts take the generic per-step-key path."""

    def __init__(self, env):
        self._env = env
        self.num_actions, self.action_kind = env.num_actions, env.action_kind
        self.reset, self.step, self.horizon = env.reset, env.step, env.horizon


@pytest.mark.parametrize("path", ["uniforms", "keys"])
def test_monte_carlo_matches_policy_value(builtin_env, random_tabular, path):
    """Mean return of 200k rollouts lies within 5 standard errors of the exact value."""
    _, env, params = builtin_env
    policy, theta = random_tabular
    model = env.tabular_model(params)
    exact = float(policy_value(model, policy.action_probs(theta, jnp.arange(policy.num_states))))
    if path == "keys":
        env = KeyDrivenOnly(env)
    returns = np.asarray(
        masked_return(rollout_batch(jax.random.key(0), policy, theta, env, params, 200_000))
    )
    stderr = returns.std(ddof=1) / np.sqrt(returns.size)
    assert abs(returns.mean() - exact) <= 5 * stderr


def test_state_values_at_absorbing_states_are_zero():
    env, params = make("gridworld/cliff-4x6")
    values = state_values(env.tabular_model(params), jnp.full((24, 4), 0.25))
    for s in range(19, 24):  # bottom row except S: traps and goal
        assert float(values[s]) == 0.0


def test_float64_probabilities_on_float32_model():
    """Under x64, float64 probabilities on the float32 model run and match float32 to round-off;
    horizon 1 (no scan step) matches the one-step value by hand."""
    env, params = tiny(slip=0.3)
    model = env.tabular_model(params)
    probs32 = jax.nn.softmax(jax.random.normal(jax.random.key(0), (3, 4)), axis=-1)
    with jax.enable_x64(True):
        value64 = policy_value(model, jnp.asarray(probs32, jnp.float64))
        assert value64.dtype == jnp.float64
        value64 = float(value64)
    assert value64 == pytest.approx(float(policy_value(model, probs32)), rel=1e-6)
    env1, params1 = make("gridworld", layout=["XSG"], horizon=1, slip=0.0, step_reward=-0.1)
    probs = jnp.zeros((3, 4)).at[:, 1].set(1.0)
    assert float(policy_value(env1.tabular_model(params1), probs)) == pytest.approx(-0.1 + 1.0)
