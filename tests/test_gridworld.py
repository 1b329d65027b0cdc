"""GridWorld: sampler agrees with the tabular model, semantics, and clear errors on bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zopg import ConfigError
from zopg.envs import make, registered_envs


def test_transition_rows_are_distributions(builtin_env):
    _, env, params = builtin_env
    model = env.tabular_model(params)
    np.testing.assert_allclose(model.transition.sum(-1), 1.0, atol=1e-6)
    assert float(model.start.sum()) == pytest.approx(1.0)


def test_state_index_is_row_major():
    env, params = make("gridworld", layout=["..#", "S.G"], horizon=3)
    obs, _ = env.reset(jax.random.key(0), params)
    assert int(obs) == 3  # row 1, col 0 in a width-3 grid
    model = env.tabular_model(params)
    # Up from (1, 1) = state 4 reaches (0, 1) = state 1 without slip.
    no_slip = env.tabular_model(params.replace(slip=0.0))
    assert float(no_slip.transition[4, 0, 1]) == 1.0
    # Up from (1, 2) = state 5 is a G cell: absorbing, so it stays whatever the action.
    assert float(model.transition[5, 0, 5]) == 1.0
    # Right from (0, 1) hits the wall at (0, 2): stays put.
    assert float(no_slip.transition[1, 1, 1]) == 1.0


@pytest.mark.parametrize("slip", [0.0, 0.3, 1.0])
def test_step_samples_from_tabular_model(slip):
    """Empirical next-state frequencies of `step` match P[s, a, :] within 5 binomial SDs."""
    env, params = make("gridworld/cliff-4x6", slip=slip)
    model = env.tabular_model(params)
    n = 40_000
    keys = jax.random.split(jax.random.key(1), n)
    _, state = env.reset(keys[0], params)
    # From state 8 (row 1, col 2), action 2 (down).
    state = state.replace(pos=jnp.int32(8))
    step = jax.jit(jax.vmap(lambda k: env.step(k, state, jnp.int32(2), params)[0]))
    counts = np.bincount(np.asarray(step(keys)), minlength=24) / n
    expected = np.asarray(model.transition[8, 2])
    sd = np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(counts - expected) <= 5 * sd + 1e-9)


def test_rewards_and_absorption():
    env, params = make(
        "gridworld",
        layout=["XSG"],
        horizon=3,
        slip=0.0,
        goal_reward=2.0,
        trap_reward=-3.0,
        step_reward=-0.5,
    )
    key = jax.random.key(0)
    _, state = env.reset(key, params)
    _, state, reward, done = env.step(key, state, jnp.int32(1), params)  # into G
    assert float(reward) == pytest.approx(2.0 - 0.5) and not bool(done)
    _, state, reward, done = env.step(key, state, jnp.int32(3), params)  # G absorbs
    assert int(state.pos) == 2 and float(reward) == 0.0 and not bool(done)
    _, state, reward, done = env.step(key, state, jnp.int32(3), params)
    assert float(reward) == 0.0 and bool(done)  # exactly `horizon` steps
    _, state = env.reset(key, params)
    _, state, reward, _ = env.step(key, state, jnp.int32(3), params)  # into X
    assert int(state.pos) == 0 and float(reward) == pytest.approx(-3.0 - 0.5)
    # Off-grid moves stay put and still pay the step reward.
    _, state = env.reset(key, params)
    _, state, reward, _ = env.step(key, state, jnp.int32(0), params)
    assert int(state.pos) == 1 and float(reward) == pytest.approx(-0.5)


def test_builtin_layouts():
    _, params = make("gridworld/cliff-4x6")
    assert params.layout[-1] == "SXXXXG" and len(params.layout) == 4
    _, params = make("gridworld/open-5x5")
    assert params.layout[0][0] == "S" and params.layout[-1][-1] == "G"


def test_overrides_reach_params():
    _, params = make("gridworld/open-5x5", slip=0.25, horizon=7, goal_reward=3.0)
    assert (params.slip, params.horizon, params.goal_reward) == (0.25, 7, 3.0)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"layout": ["....", "...G"]}, "exactly one start 'S', found 0"),
        ({"layout": ["S..S", "...G"]}, "exactly one start 'S', found 2"),
        ({"layout": ["S...", "..G"]}, "equal length"),
        ({"layout": ["S..?", "...G"]}, r"unknown character.*'\?'"),
        ({"layout": ["S...", "...."]}, "at least one goal"),
        ({"slip": 1.5}, r"slip = 1.5: must be in \[0, 1\]"),
        ({"slip": -0.1}, r"slip = -0.1: must be in \[0, 1\]"),
        ({"slip": float("nan")}, "slip"),
        ({"horizon": 0}, "horizon = 0: must be an integer >= 1"),
        ({"horizon": 2.5}, "horizon = 2.5"),
        ({"goal_reward": "a lot"}, "goal_reward"),
        ({"colour": "red"}, r"unknown GridWorld field.*colour"),
    ],
)
def test_bad_input_names_field_and_rule(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make("gridworld/open-5x5", **overrides)


def test_unknown_env_lists_known_ids():
    with pytest.raises(ConfigError) as err:
        make("gridworld/maze-9x9")
    for env_id in registered_envs():
        assert env_id in str(err.value)


def test_custom_gridworld_needs_layout():
    with pytest.raises(ConfigError, match="layout"):
        make("gridworld")
