"""Stochastic GridWorld with slip, traps and goals, plus its exact tabular model.

Semantics (other modules and tests rely on them):
- layout: equal-length strings; `S` start (exactly one), `G` goal (>= 1), `X` trap, `#` wall,
  `.` floor. State index = row * width + col, row 0 at the top.
- actions: 0 up, 1 right, 2 down, 3 left.
- slip: with probability `slip` the executed action is uniform over all 4 (it may equal the
  intended one); otherwise the intended action. Moving into a wall or off the grid stays put.
- reward: `goal_reward` on entering G, `trap_reward` on entering X, plus `step_reward` on every
  step taken from a non-absorbing state. G and X absorb: the agent stays and gets 0 from then on.
- episodes start at S and last exactly `horizon` steps; the return is the sum of the rewards.
- observe_visited = (row, col), optional: the observation also carries the bit "this cell has
  been visited" (s_0 .. s_t include it): obs = cell + num_cells * bit, so there are 2 * num_cells
  states and the tabular model is the product of cells and the bit (exact values, V* and exact
  gradients need nothing else). This is the waypoint-goal utility's automaton state, handed to
  the policy: a policy of the observation can then do what no policy of the cell can (leave a
  dead end after visiting it). `cell_of(obs)` gives the cell back; utilities and reward models
  that should see only the cell read it from there. Rewards and dynamics are the cell's.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import ConfigError, bad_value, check_range

CELLS = "SGX#."
# Building a run works through the exact model step by step (about a minute at 10,000 steps;
# 2**31 steps ran out of memory), and no layout needs longer episodes.
MAX_HORIZON = 10_000
NUM_ACTIONS = 4
# (d_row, d_col) for up, right, down, left.
MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))


@struct.dataclass
class GridWorldParams:
    """Everything that defines one GridWorld. Layout and horizon fix array shapes, so are static."""

    layout: tuple[str, ...] = struct.field(pytree_node=False)
    horizon: int = struct.field(pytree_node=False)
    slip: float = 0.1
    goal_reward: float = 1.0
    trap_reward: float = -1.0
    step_reward: float = 0.0
    # (row, col) whose "visited" bit the observation carries, or None (see the module docstring).
    observe_visited: tuple[int, int] | None = struct.field(pytree_node=False, default=None)


@struct.dataclass
class GridWorldState:
    pos: jax.Array  # the cell
    time: jax.Array
    visited: jax.Array | None = None  # the observe_visited bit (None when not observed)


@struct.dataclass
class TabularModel:
    """Exact finite-horizon MDP: P[s, a, s'], R[s, a, s'], start distribution, horizon."""

    transition: jax.Array
    reward: jax.Array
    start: jax.Array
    horizon: int = struct.field(pytree_node=False)


def validate_layout(layout) -> tuple[str, ...]:
    """Return the layout as a tuple of strings, or raise a ConfigError naming the broken rule."""
    if isinstance(layout, str):
        layout = tuple(row for row in layout.strip().splitlines())
    try:
        rows = tuple(str(row) for row in layout)
    except TypeError:
        raise bad_value("layout", layout, "must be a list of equal-length strings") from None
    if not rows or not rows[0]:
        raise bad_value("layout", layout, "must have at least one row and one column")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise bad_value(
                "layout",
                list(rows),
                f"rows must have equal length; row {i} has {len(row)}, row 0 has {width}",
            )
        bad = sorted(set(row) - set(CELLS))
        if bad:
            raise bad_value(
                "layout",
                list(rows),
                f"unknown character(s) {bad} in row {i}; allowed: "
                "S start, G goal, X trap, # wall, . floor",
            )
    text = "".join(rows)
    if text.count("S") != 1:
        raise bad_value(
            "layout", list(rows), f"must contain exactly one start 'S', found {text.count('S')}"
        )
    if text.count("G") < 1:
        raise bad_value("layout", list(rows), "must contain at least one goal 'G'")
    return rows


def validate_params(params: GridWorldParams) -> GridWorldParams:
    """Check every field; raise a ConfigError that names the field and the rule."""
    layout = validate_layout(params.layout)
    if isinstance(params.horizon, bool) or not isinstance(params.horizon, int | np.integer):
        raise bad_value("horizon", params.horizon, "must be an integer >= 1")
    if params.horizon < 1:
        raise bad_value("horizon", params.horizon, "must be an integer >= 1")
    if params.horizon > MAX_HORIZON:
        raise bad_value("horizon", params.horizon, f"must be an integer in [1, {MAX_HORIZON}]")
    numbers = {}
    for field in ("slip", "goal_reward", "trap_reward", "step_reward"):
        value = getattr(params, field)
        if isinstance(value, bool):
            raise bad_value(field, value, "must be a real number, not a bool")
        try:
            numbers[field] = float(value)
        except (TypeError, ValueError):
            raise bad_value(field, value, "must be a real number") from None
        except OverflowError:  # an int beyond a float's range (10**400)
            raise bad_value(field, value, "must be finite") from None
        if not np.isfinite(numbers[field]):
            raise bad_value(field, value, "must be finite")
    check_range("slip", numbers["slip"], 0.0, 1.0)
    visited = _checked_visited_cell(params.observe_visited, layout)
    # Stored as floats: an int reward past int32 (10**12) would overflow as a JAX scalar.
    return params.replace(
        layout=layout, horizon=int(params.horizon), observe_visited=visited, **numbers
    )


def _checked_visited_cell(point, layout) -> tuple[int, int] | None:
    """observe_visited as (row, col) of a floor or start cell inside the grid, or None."""
    if point is None:
        return None
    rule = "must be [row, col] of a floor or start cell inside the grid, or absent"
    if not (isinstance(point, tuple | list) and len(point) == 2):
        raise bad_value("observe_visited", point, rule)
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in point):
        raise bad_value("observe_visited", list(point), rule)
    row, col = (int(v) for v in point)
    if not (0 <= row < len(layout) and 0 <= col < len(layout[0])):
        raise bad_value("observe_visited", [row, col], rule)
    if layout[row][col] not in "S.":
        raise bad_value("observe_visited", [row, col], rule)
    return (row, col)


@lru_cache(maxsize=64)
def _tables(layout: tuple[str, ...]):
    """NumPy tables derived from a layout: next cell per (state, action), and cell kinds."""
    height, width = len(layout), len(layout[0])
    grid = np.array([list(row) for row in layout])
    num_states = height * width
    next_state = np.zeros((num_states, NUM_ACTIONS), dtype=np.int32)
    for r in range(height):
        for c in range(width):
            for a, (dr, dc) in enumerate(MOVES):
                nr, nc = r + dr, c + dc
                blocked = not (0 <= nr < height and 0 <= nc < width) or grid[nr, nc] == "#"
                next_state[r * width + c, a] = r * width + c if blocked else nr * width + nc
    flat = grid.reshape(-1)
    is_goal = flat == "G"
    is_trap = flat == "X"
    start = int(np.flatnonzero(flat == "S")[0])
    return next_state, is_goal, is_trap, start


class GridWorld:
    """Gymnax-style explicit-function environment; observations are integer state indices."""

    name = "gridworld"
    num_actions = NUM_ACTIONS
    action_kind = "discrete"

    def __init__(self, default_params: GridWorldParams):
        self.default_params = validate_params(default_params)

    def __repr__(self) -> str:
        return f"GridWorld(layout={self.default_params.layout!r})"

    # -- sizes -------------------------------------------------------------------------------
    def num_cells(self, params: GridWorldParams) -> int:
        return len(params.layout) * len(params.layout[0])

    def num_states(self, params: GridWorldParams) -> int:
        """Observations are 0 .. num_states - 1: the cells, twice with observe_visited."""
        return self.num_cells(params) * (1 if params.observe_visited is None else 2)

    def cell_of(self, obs, params: GridWorldParams):
        """The cell of an observation (NumPy or JAX integers, any shape)."""
        return obs % self.num_cells(params)

    def _visited_cell(self, params: GridWorldParams) -> int:
        row, col = params.observe_visited
        return row * len(params.layout[0]) + col

    def horizon(self, params: GridWorldParams) -> int:
        return params.horizon

    def observation_shape(self, params: GridWorldParams) -> tuple[int, ...]:
        return ()

    # -- dynamics ----------------------------------------------------------------------------
    def reset(self, key, params: GridWorldParams):
        """Every episode starts at S; the key is unused but kept for the common signature."""
        del key
        start = _tables(params.layout)[3]
        if params.observe_visited is None:
            state = GridWorldState(pos=jnp.int32(start), time=jnp.int32(0))
            return state.pos, state
        visited = jnp.asarray(start == self._visited_cell(params))
        state = GridWorldState(pos=jnp.int32(start), time=jnp.int32(0), visited=visited)
        return self._observation(state, params), state

    def _observation(self, state: GridWorldState, params: GridWorldParams):
        if state.visited is None:
            return state.pos
        return state.pos + self.num_cells(params) * state.visited.astype(state.pos.dtype)

    def step(self, key, state: GridWorldState, action, params: GridWorldParams):
        return self.step_from_uniform(jax.random.uniform(key), state, action, params)

    def step_from_uniform(self, u, state: GridWorldState, action, params: GridWorldParams):
        """`step` driven by one uniform u in [0, 1) instead of a key.

        Rollouts draw these uniforms in bulk, which is much cheaper than deriving a key per step.
        """
        next_table, is_goal, is_trap, _ = _tables(params.layout)
        absorbing = jnp.asarray(is_goal | is_trap)
        # One uniform decides both whether we slip and, if so, which action: conditional on
        # u < slip, u / slip is again uniform on [0, 1). Random draws dominate the cost here.
        slip = jnp.asarray(params.slip, dtype=u.dtype)
        slipped = u < slip
        random_action = jnp.minimum((u / jnp.maximum(slip, 1e-30) * 4).astype(jnp.int32), 3)
        executed = jnp.where(slipped, random_action, action)
        stay = absorbing[state.pos]
        moved = jnp.asarray(next_table)[state.pos, executed]
        next_pos = jnp.where(stay, state.pos, moved)
        reward = (
            params.step_reward
            + params.goal_reward * jnp.asarray(is_goal)[next_pos]
            + params.trap_reward * jnp.asarray(is_trap)[next_pos]
        )
        reward = jnp.where(stay, 0.0, reward).astype(jnp.float32)
        time = state.time + 1
        done = time >= params.horizon
        if params.observe_visited is None:
            return next_pos, GridWorldState(pos=next_pos, time=time), reward, done
        visited = state.visited | (next_pos == self._visited_cell(params))
        next_state = GridWorldState(pos=next_pos, time=time, visited=visited)
        return self._observation(next_state, params), next_state, reward, done

    # -- exact model ---------------------------------------------------------------------------
    def tabular_model(self, params: GridWorldParams) -> TabularModel:
        """P[s, a, s'] and R[s, a, s'] that the sampler above draws from, exactly."""
        next_table, is_goal, is_trap, start = _tables(params.layout)
        num_states = next_table.shape[0]
        absorbing = is_goal | is_trap
        onehot_next = jax.nn.one_hot(next_table, num_states)  # [S, A, S']
        slip = jnp.asarray(params.slip, dtype=jnp.float32)
        moving = (1.0 - slip) * onehot_next + slip * onehot_next.mean(axis=1, keepdims=True)
        stay = jnp.broadcast_to(jnp.eye(num_states)[:, None, :], moving.shape)
        transition = jnp.where(absorbing[:, None, None], stay, moving)
        entry = (
            params.step_reward
            + params.goal_reward * jnp.asarray(is_goal, jnp.float32)
            + params.trap_reward * jnp.asarray(is_trap, jnp.float32)
        )
        reward = jnp.broadcast_to(entry[None, None, :], transition.shape)
        reward = jnp.where(absorbing[:, None, None], 0.0, reward)
        start_dist = jax.nn.one_hot(start, num_states)
        model = TabularModel(
            transition=transition, reward=reward, start=start_dist, horizon=params.horizon
        )
        if params.observe_visited is None:
            return model
        return _with_visited_bit(model, self._visited_cell(params))


def _with_visited_bit(model: TabularModel, cell: int) -> TabularModel:
    """The product of a cell model with the bit "cell visited": states s + S * bit.

    P[(b, s), a, (b', s')] = P[s, a, s'] when b' = b or [s' = cell], else 0; rewards are the
    cell's, and the bit starts set when the start cell is `cell`.
    """
    num_cells = model.transition.shape[0]
    enters = jnp.arange(num_cells) == cell  # [S']
    to_bit = jnp.stack([~enters, enters]).astype(model.transition.dtype)  # from bit 0: [b', S']
    rows = []
    for bit in (0, 1):
        split = to_bit if bit == 0 else jnp.stack([jnp.zeros(num_cells), jnp.ones(num_cells)])
        # [S, A, b', S'] -> [S, A, 2S'] with the target bit as the high part of the index.
        blocks = model.transition[:, :, None, :] * split[None, None].astype(model.transition.dtype)
        rows.append(blocks.reshape(num_cells, model.transition.shape[1], 2 * num_cells))
    transition = jnp.concatenate(rows, axis=0)
    reward = jnp.tile(model.reward, (2, 1, 2))
    start = jnp.concatenate([model.start * ~enters, model.start * enters])
    return TabularModel(transition=transition, reward=reward, start=start, horizon=model.horizon)


def make_gridworld(layout, **overrides) -> tuple[GridWorld, GridWorldParams]:
    """Build a GridWorld from a layout and field overrides; every field is validated."""
    fields = {"horizon", "slip", "goal_reward", "trap_reward", "step_reward", "observe_visited"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown GridWorld field(s) {unknown}; allowed: layout, {', '.join(sorted(fields))}"
        )
    params = GridWorldParams(layout=validate_layout(layout), **overrides)
    env = GridWorld(params)
    return env, env.default_params
