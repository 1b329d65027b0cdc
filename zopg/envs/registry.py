"""The environment registry behind `zopg.envs.make(env_id, **overrides) -> (env, params)`."""

from __future__ import annotations

from collections.abc import Callable

from zopg.envs.gridworld import make_gridworld
from zopg.errors import unknown_name

# Built-in layouts. Slip, horizon and rewards are OUR choice (the paper's grid is not known to us):
# enough slip that the MDP is genuinely stochastic, and a horizon with slack over the shortest
# path so that a good policy reaches the goal with high probability.
OPEN_5X5 = ("S....", ".....", ".....", ".....", "....G")
CLIFF_4X6 = ("......", "......", "......", "SXXXXG")
GRIDWORLD_DEFAULTS = {"slip": 0.1, "goal_reward": 1.0, "trap_reward": -1.0, "step_reward": 0.0}


def _gridworld(layout, horizon):
    def factory(**overrides):
        fields = {"layout": layout, "horizon": horizon, **GRIDWORLD_DEFAULTS, **overrides}
        return make_gridworld(**fields)

    return factory


_REGISTRY: dict[str, Callable] = {
    "gridworld/open-5x5": _gridworld(OPEN_5X5, horizon=16),
    # The cliff gets a longer horizon: at 16 steps the safe "stay up" plateau has a gradient
    # ~10x flatter (exact-gradient norm 0.007 vs 0.06), which stalls every method for long.
    "gridworld/cliff-4x6": _gridworld(CLIFF_4X6, horizon=24),
    # A custom layout must be given: make("gridworld", layout=[...], horizon=...).
    "gridworld": _gridworld(None, horizon=16),
}


def _gymnax(env_id):
    def factory(**overrides):
        # Imported on first use: importing gymnax costs seconds (it pulls in seaborn).
        from zopg.envs.gymnax_env import make_gymnax

        return make_gymnax(env_id, **overrides)

    return factory


def _brax(env_id):
    def factory(**overrides):
        from zopg.envs.brax_env import make_brax

        return make_brax(env_id, **overrides)

    return factory


for _id in (
    "gymnax/CartPole-v1",
    "gymnax/Acrobot-v1",
    "gymnax/Pendulum-v1",
    "gymnax/MountainCarContinuous-v0",
):
    _REGISTRY[_id] = _gymnax(_id)
for _id in ("brax/inverted_pendulum", "brax/hopper", "brax/halfcheetah"):
    _REGISTRY[_id] = _brax(_id)


def register(env_id: str, factory: Callable) -> None:
    """Add an environment: `factory(**overrides) -> (env, params)`."""
    _REGISTRY[env_id] = factory


def registered_envs() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def make(env_id: str, **overrides):
    """Build `(env, params)` for a registered id; overrides replace any default field."""
    if env_id not in _REGISTRY:
        raise unknown_name("environment", env_id, _REGISTRY)
    return _REGISTRY[env_id](**overrides)
