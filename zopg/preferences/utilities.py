"""Human utilities u(τ) (science.md §2b): frozen definitions with parameters, a registry like
the links', and the automaton that makes path utilities exact on tabular environments.

A utility is defined once (`make_utility(name, **params)`), then bound to an environment
(`bind(env, env_params)`), which checks its parameters against the env (a waypoint inside the
grid, a deadline within the horizon) and keeps what it needs of it as plain tuples, so a bound
utility stays frozen and hashable. A bound utility maps a Trajectory to one value per
trajectory. `automaton(model)` writes it as a Markov reward on the product of the tabular env's
cells with a finite set of automaton states q (None when there is no such form), which
`zopg.exact` evaluates exactly.

Definitions (exactly §2b; cells are GridWorld states, "live" steps start from a non-absorbing
cell, a step enters s' when it moves there from another cell):
  return            Σ_t r_t over valid steps.
  myopic-return     Σ_t γ^(L − t) r_t, L the last valid step (B-Pref weights a segment's end).
  waypoint-goal     goal_reward for entering G only once the waypoint W has been visited (s_0..s_t
                    include W), plus trap_reward for entering X, plus step_reward per live step.
  deadline          goal_reward only if G is entered at step t + 1 <= k (steps count from 1);
                    trap and step terms as in the return.
  revisit-penalty   return − c · #{valid steps that enter an already visited cell}.
  action-switches   return − c · #{t >= 1 valid: a_t != a_(t−1)} (discrete actions), or
                    − c · Σ_(t>=1 valid) ‖a_t − a_(t−1)‖₂ (continuous).
  grid-return       the GridWorld return with the teacher's own goal, trap and step rewards (each
                    left out takes the env's): annotators who weigh outcomes differently.
  hidden-context    a population of annotator types (components u_k, weights w_k): each query is
                    answered by a type drawn afresh with probability w_k, unseen by the learner,
                    so P(vote = 1) = Σ_k w_k σ(β Δ_k) (zopg.preferences.Oracle); its value, what
                    evaluation and the references score, is the population's mean Σ_k w_k u_k.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from zopg.errors import ConfigError, bad_value, checked_float, checked_int, unknown_name
from zopg.plugins import import_object, is_import_path
from zopg.rollout import Trajectory, masked_return, next_observations


@struct.dataclass
class Automaton:
    """A utility as a Markov reward on (automaton state q, cell s) of a tabular env.

    start [S] int: q after the start cell; next_state [Q, S, A, S'] int: q after the step
    (s, a, s'); reward [H, Q, S, A, S']: the utility's reward for step t (0-based) taken from
    (q, s) with a into s'. V = E Σ_t reward[t, q_t, s_t, a_t, s_(t+1)].
    """

    start: jax.Array
    next_state: jax.Array
    reward: jax.Array

    @property
    def num_states(self) -> int:
        return self.next_state.shape[0]


@dataclasses.dataclass(frozen=True)
class Grid:
    """What grid utilities need of a GridWorld: cell kinds, rewards and the horizon.

    goal, trap, wall and cell are indexed by the env's *states* (its observations): the cells,
    or with GridWorld's observe_visited the cells twice over (cell[state] gives the cell back),
    so a utility reads a trajectory's observations directly whatever else they carry.
    """

    height: int
    width: int
    goal: tuple[bool, ...]
    trap: tuple[bool, ...]
    wall: tuple[bool, ...]
    horizon: int
    goal_reward: float
    trap_reward: float
    step_reward: float
    cell: tuple[int, ...] = ()

    @classmethod
    def of(cls, env, env_params, utility: str) -> Grid:
        layout = getattr(env_params, "layout", None)
        if layout is None or not hasattr(env, "tabular_model"):
            raise ConfigError(f"utility {utility!r} needs a GridWorld; {env!r} is not one")
        cells = "".join(layout)
        states = np.arange(env.num_states(env_params))
        cell = env.cell_of(states, env_params) if hasattr(env, "cell_of") else states
        cell = tuple(int(c) for c in cell)
        return cls(
            height=len(layout),
            width=len(layout[0]),
            goal=tuple(cells[c] == "G" for c in cell),
            trap=tuple(cells[c] == "X" for c in cell),
            wall=tuple(cells[c] == "#" for c in cell),
            horizon=int(env_params.horizon),
            goal_reward=float(env_params.goal_reward),
            trap_reward=float(env_params.trap_reward),
            step_reward=float(env_params.step_reward),
            cell=cell,
        )

    def cell_of(self, obs) -> jax.Array:
        """The cell of each observation (state index)."""
        return jnp.asarray(self.cell, jnp.int32)[jnp.asarray(obs).astype(jnp.int32)]

    def arrays(self):
        """(goal, trap, live) as arrays over cells; live cells are the non-absorbing ones."""
        goal, trap = jnp.asarray(self.goal), jnp.asarray(self.trap)
        return goal, trap, ~(goal | trap)

    def step_terms(self, traj: Trajectory):
        """Per step: (live, entered a goal, entered a trap), bool [..., H]."""
        goal, trap, live_cell = self.arrays()
        cells = traj.obs.astype(jnp.int32)
        nxt = next_observations(traj).astype(jnp.int32)
        live = traj.valid & live_cell[cells]
        return live, live & goal[nxt], live & trap[nxt]

    def entry_reward(self, goal_pays=1.0):
        """[S, S'] reward of a live step from s into s' (0 from absorbing cells); the goal term
        scaled by goal_pays (broadcast against [S, S'])."""
        goal, trap = np.asarray(self.goal, np.float32), np.asarray(self.trap, np.float32)
        live = 1.0 - np.maximum(goal, trap)
        per_target = self.step_reward + self.trap_reward * trap
        reward = per_target[None, :] + self.goal_reward * goal[None, :] * goal_pays
        return reward * live[:, None]


class Utility:
    """Base of the utilities: a frozen dataclass; subclasses set name and markov."""

    name: ClassVar[str]
    # A sum of per-step terms in (s, a, s'): what a reward model r(s, a) can represent.
    markov: ClassVar[bool] = False
    # Fields that bind fills from the environment: never parameters a user sets.
    bound_fields: ClassVar[tuple[str, ...]] = ("grid", "discrete")

    def bind(self, env, env_params) -> Utility:
        del env, env_params
        return self

    def __call__(self, traj: Trajectory) -> jax.Array:
        raise NotImplementedError

    def automaton(self, model) -> Automaton | None:
        """The product form on a tabular model (after bind), or None (Monte Carlo only)."""
        del model
        return None

    def parameters(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in self.bound_fields
        }

    def _grid(self) -> Grid:
        grid = getattr(self, "grid", None)
        if grid is None:
            raise ConfigError(f"utility {self.name!r} must be bound to its env first (bind)")
        return grid


def _broadcast_reward(model, per_step, num_q: int = 1):
    """reward [H, Q, S, A, S'] from per_step(t) -> [Q or 1, S, A, S']."""
    steps = [
        jnp.broadcast_to(per_step(t), (num_q, *model.transition.shape))
        for t in range(model.horizon)
    ]
    return jnp.stack(steps)


def _single_state(model, per_step) -> Automaton:
    """A utility that needs no automaton state, only the time index (Q = 1)."""
    num_cells, num_actions, _ = model.transition.shape
    return Automaton(
        start=jnp.zeros((num_cells,), jnp.int32),
        next_state=jnp.zeros((1, num_cells, num_actions, num_cells), jnp.int32),
        reward=_broadcast_reward(model, per_step),
    )


@dataclasses.dataclass(frozen=True)
class Return(Utility):
    """Σ_t r_t over valid steps (the default)."""

    name: ClassVar[str] = "return"
    markov: ClassVar[bool] = True

    def __call__(self, traj):
        return masked_return(traj)

    def automaton(self, model):
        return _single_state(model, lambda t: model.reward[None])


def myopic_return(traj: Trajectory, gamma: float) -> jax.Array:
    """Σ_t γ^(L − t) r_t over valid steps, L each trajectory's last valid step."""
    reward = jnp.asarray(traj.reward, dtype=float)
    last = jnp.sum(traj.valid, axis=-1, keepdims=True) - 1
    back = (last - jnp.arange(traj.horizon)).astype(reward.dtype)
    weights = jnp.power(jnp.asarray(gamma, reward.dtype), jnp.maximum(back, 0.0))
    return jnp.sum(jnp.where(traj.valid, reward * weights, 0.0), axis=-1)


@dataclasses.dataclass(frozen=True)
class MyopicReturn(Utility):
    """Σ_t γ^(L − t) r_t: the end of a trajectory weighs most (γ in (0, 1])."""

    gamma: float = 0.9
    name: ClassVar[str] = "myopic-return"

    def __post_init__(self):
        value = checked_float("myopic-return.gamma", self.gamma, 0.0, 1.0, low_open=True)
        object.__setattr__(self, "gamma", value)

    def __call__(self, traj):
        return myopic_return(traj, self.gamma)

    def automaton(self, model):
        # Tabular episodes run all H steps, so L = H − 1 for every trajectory.
        horizon = model.horizon
        return _single_state(model, lambda t: model.reward[None] * self.gamma ** (horizon - 1 - t))


@dataclasses.dataclass(frozen=True)
class WaypointGoal(Utility):
    """The goal pays only once the waypoint cell (row, col) has been visited."""

    waypoint: tuple[int, int] = (0, 0)
    grid: Grid | None = None
    name: ClassVar[str] = "waypoint-goal"

    def __post_init__(self):
        point = self.waypoint
        if not (isinstance(point, tuple | list) and len(point) == 2):
            raise bad_value("waypoint-goal.waypoint", point, "must be [row, col]")
        cell = tuple(checked_int(f"waypoint-goal.waypoint[{i}]", v, 0) for i, v in enumerate(point))
        object.__setattr__(self, "waypoint", cell)

    def bind(self, env, env_params):
        grid = Grid.of(env, env_params, self.name)
        row, col = self.waypoint
        if not (row < grid.height and col < grid.width):
            raise bad_value(
                "waypoint-goal.waypoint",
                list(self.waypoint),
                f"must lie inside the {grid.height} x {grid.width} grid",
            )
        cell = row * grid.width + col
        if grid.wall[cell] or grid.goal[cell] or grid.trap[cell]:
            raise bad_value(
                "waypoint-goal.waypoint", list(self.waypoint), "must be a floor or start cell"
            )
        return dataclasses.replace(self, grid=grid)

    @property
    def cell(self) -> int:
        return self.waypoint[0] * self._grid().width + self.waypoint[1]

    def __call__(self, traj):
        grid = self._grid()
        live, goal, trap = grid.step_terms(traj)
        at_waypoint = grid.cell_of(traj.obs) == self.cell
        visited = jnp.cumsum(at_waypoint, axis=-1) > 0  # s_0 .. s_t include W
        terms = (
            grid.step_reward * live + grid.trap_reward * trap + grid.goal_reward * (goal & visited)
        )
        return jnp.sum(terms, axis=-1)

    def automaton(self, model):
        grid = self._grid()
        num_cells, num_actions, _ = model.transition.shape  # the env's states
        is_w = np.asarray(grid.cell) == self.cell
        # q = 1 once W has been visited; it can only switch on by entering W.
        nxt = np.broadcast_to(is_w[None, None, None, :], (2, num_cells, num_actions, num_cells))
        nxt = nxt | (np.arange(2)[:, None, None, None] == 1)
        paid = np.stack([grid.entry_reward(0.0), grid.entry_reward(1.0)])  # [Q, S, S']
        per_step = jnp.asarray(paid[:, :, None, :])
        return Automaton(
            start=jnp.asarray(is_w, jnp.int32),
            next_state=jnp.asarray(nxt, jnp.int32),
            reward=_broadcast_reward(model, lambda t: per_step, num_q=2),
        )


@dataclasses.dataclass(frozen=True)
class Deadline(Utility):
    """The goal pays only if entered at step k or earlier (steps count from 1)."""

    k: int = 8
    grid: Grid | None = None
    name: ClassVar[str] = "deadline"

    def __post_init__(self):
        object.__setattr__(self, "k", checked_int("deadline.k", self.k, 1))

    def bind(self, env, env_params):
        grid = Grid.of(env, env_params, self.name)
        if self.k > grid.horizon:
            raise bad_value("deadline.k", self.k, f"must be <= the horizon, {grid.horizon}")
        return dataclasses.replace(self, grid=grid)

    def __call__(self, traj):
        grid = self._grid()
        live, goal, trap = grid.step_terms(traj)
        in_time = jnp.arange(traj.horizon) + 1 <= self.k
        terms = (
            grid.step_reward * live + grid.trap_reward * trap + grid.goal_reward * (goal & in_time)
        )
        return jnp.sum(terms, axis=-1)

    def automaton(self, model):
        grid = self._grid()
        late, early = (jnp.asarray(grid.entry_reward(p)[None, :, None, :]) for p in (0.0, 1.0))
        return _single_state(model, lambda t: early if t + 1 <= self.k else late)


@dataclasses.dataclass(frozen=True)
class RevisitPenalty(Utility):
    """return − c per valid step that moves into a cell visited before (Monte Carlo only)."""

    c: float = 0.1
    grid: Grid | None = None
    name: ClassVar[str] = "revisit-penalty"

    def __post_init__(self):
        # Finite: an infinite c gives inf × 0 = NaN for a trajectory with no revisit.
        c = checked_float("revisit-penalty.c", self.c, 0.0, math.inf, high_open=True)
        object.__setattr__(self, "c", c)

    def bind(self, env, env_params):
        return dataclasses.replace(self, grid=Grid.of(env, env_params, self.name))

    def __call__(self, traj):
        grid = self._grid()
        num_cells = grid.height * grid.width
        cells = grid.cell_of(traj.obs)
        nxt = grid.cell_of(next_observations(traj))
        seen = jnp.cumsum(jax.nn.one_hot(cells, num_cells, dtype=jnp.int32), axis=-2) > 0
        seen_next = jnp.take_along_axis(seen, nxt[..., None], axis=-1)[..., 0]
        revisits = traj.valid & (nxt != cells) & seen_next
        return masked_return(traj) - self.c * jnp.sum(revisits, axis=-1)


@dataclasses.dataclass(frozen=True)
class ActionSwitches(Utility):
    """return − c per change of action (discrete) or − c‖a_t − a_(t−1)‖ (continuous)."""

    c: float = 1.0
    discrete: bool | None = None  # set by bind from the env's action kind
    name: ClassVar[str] = "action-switches"

    def __post_init__(self):
        # Finite: an infinite c gives inf × 0 = NaN for a trajectory with no switch.
        c = checked_float("action-switches.c", self.c, 0.0, math.inf, high_open=True)
        object.__setattr__(self, "c", c)

    def bind(self, env, env_params):
        kind = getattr(env, "action_kind", None)
        if kind not in ("discrete", "continuous"):
            raise ConfigError(
                "utility 'action-switches' needs discrete or continuous actions; "
                f"{env!r} has {kind!r}"
            )
        return dataclasses.replace(self, discrete=kind == "discrete")

    def parameters(self) -> dict:
        return {"c": self.c}

    def switches(self, traj) -> jax.Array:
        """The penalised amount of each trajectory (count of switches, or total action change)."""
        if self.discrete is None:
            raise ConfigError("utility 'action-switches' must be bound to its env first (bind)")
        time_axis = len(traj.batch_shape)
        now = jax.lax.slice_in_dim(traj.action, 1, traj.horizon, axis=time_axis)
        before = jax.lax.slice_in_dim(traj.action, 0, traj.horizon - 1, axis=time_axis)
        if self.discrete:
            change = (now != before).astype(jnp.float32)
        else:
            change = jnp.linalg.norm(jnp.asarray(now - before, jnp.float32), axis=-1)
        return jnp.sum(jnp.where(traj.valid[..., 1:], change, 0.0), axis=-1)

    def __call__(self, traj):
        return masked_return(traj) - self.c * self.switches(traj)

    def automaton(self, model):
        if not self.discrete:
            return None
        num_cells, num_actions, _ = model.transition.shape
        # q = the previous action; q = A before the first step.
        nxt = np.broadcast_to(
            np.arange(num_actions)[None, None, :, None],
            (num_actions + 1, num_cells, num_actions, num_cells),
        )
        prev = np.arange(num_actions + 1)[:, None]
        switched = (prev != np.arange(num_actions)[None, :]) & (prev < num_actions)  # [Q, A]
        penalty = jnp.asarray(self.c * switched, jnp.float32)[:, None, :, None]
        per_step = model.reward[None] - penalty
        return Automaton(
            start=jnp.full((num_cells,), num_actions, jnp.int32),
            next_state=jnp.asarray(nxt, jnp.int32),
            reward=_broadcast_reward(model, lambda t: per_step, num_q=num_actions + 1),
        )


@dataclasses.dataclass(frozen=True)
class GridReturn(Utility):
    """The GridWorld return with the teacher's own rewards (None: the env's)."""

    goal_reward: float | None = None
    trap_reward: float | None = None
    step_reward: float | None = None
    grid: Grid | None = None
    name: ClassVar[str] = "grid-return"
    markov: ClassVar[bool] = True

    def __post_init__(self):
        for field in ("goal_reward", "trap_reward", "step_reward"):
            value = getattr(self, field)
            if value is not None:
                object.__setattr__(self, field, checked_float(f"grid-return.{field}", value))

    def bind(self, env, env_params):
        grid = Grid.of(env, env_params, self.name)
        own = {
            f: getattr(self, f)
            for f in ("goal_reward", "trap_reward", "step_reward")
            if getattr(self, f) is not None
        }
        return dataclasses.replace(self, grid=dataclasses.replace(grid, **own))

    def __call__(self, traj):
        grid = self._grid()
        live, goal, trap = grid.step_terms(traj)
        terms = grid.step_reward * live + grid.trap_reward * trap + grid.goal_reward * goal
        return jnp.sum(terms, axis=-1)

    def automaton(self, model):
        per_step = jnp.asarray(self._grid().entry_reward()[None, :, None, :])
        return _single_state(model, lambda t: per_step)


@dataclasses.dataclass(frozen=True)
class HiddenContext(Utility):
    """A population of annotator types: type k (utility u_k) answers a query with probability
    w_k, drawn afresh for every query and never shown to the learner. Its value is the
    population's mean utility Σ_k w_k u_k; the Oracle votes with Σ_k w_k σ(β Δ_k)."""

    components: tuple[Utility, ...] = ()
    weights: tuple[float, ...] = ()
    name: ClassVar[str] = "hidden-context"

    def __post_init__(self):
        components, weights = tuple(self.components), tuple(self.weights)
        if not components or not all(isinstance(c, Utility) for c in components):
            raise bad_value(
                "hidden-context.components", components, "must be a non-empty list of utilities"
            )
        if any(isinstance(c, HiddenContext) for c in components):
            raise bad_value("hidden-context.components", components, "cannot nest hidden-context")
        if len(weights) != len(components):
            raise bad_value(
                "hidden-context.weights", list(weights), f"must be {len(components)} numbers"
            )
        weights = tuple(
            checked_float(f"hidden-context.weights[{i}]", w, 0.0, 1.0)
            for i, w in enumerate(weights)
        )
        if abs(sum(weights) - 1.0) > 1e-6:
            raise bad_value("hidden-context.weights", list(weights), "must sum to 1")
        object.__setattr__(self, "components", components)
        object.__setattr__(self, "weights", weights)

    def bind(self, env, env_params):
        bound = tuple(c.bind(env, env_params) for c in self.components)
        return dataclasses.replace(self, components=bound)

    def parameters(self) -> dict:
        return {
            "components": [{"name": c.name, **c.parameters()} for c in self.components],
            "weights": list(self.weights),
        }

    def utilities(self, traj) -> jax.Array:
        """u_k(τ) of every type, [..., K] (the batch shape, then the types)."""
        return jnp.stack([jnp.asarray(c(traj), float) for c in self.components], axis=-1)

    def __call__(self, traj):
        return self.utilities(traj) @ jnp.asarray(self.weights, float)

    def automaton(self, model):
        """Σ_k w_k reward_k when every component needs no automaton state (Q = 1: Markov or
        time-indexed utilities, whose automata differ only in reward); None otherwise (Monte
        Carlo: the product of several automata is not built here)."""
        automata = [c.automaton(model) for c in self.components]
        if any(a is None or a.num_states != 1 for a in automata):
            return None
        reward = sum(w * a.reward for w, a in zip(self.weights, automata, strict=True))
        return automata[0].replace(reward=reward)


def automaton_states(automaton: Automaton, traj: Trajectory) -> jax.Array:
    """q_t, the automaton state at each step's cell, [..., H] int: q_0 from the start cell,
    then q_(t+1) = next_state[q_t, s_t, a_t, s_(t+1)]."""
    time_axis = len(traj.batch_shape)
    cells = jnp.moveaxis(traj.obs.astype(jnp.int32), time_axis, 0)
    nxt = jnp.moveaxis(next_observations(traj).astype(jnp.int32), time_axis, 0)
    actions = jnp.moveaxis(jnp.asarray(traj.action, jnp.int32), time_axis, 0)

    def step(q, inputs):
        s, a, s_next = inputs
        return automaton.next_state[q, s, a, s_next], q

    _, states = jax.lax.scan(step, automaton.start[cells[0]], (cells, actions, nxt))
    return jnp.moveaxis(states, 0, time_axis)


UTILITIES: dict[str, type] = {
    cls.name: cls
    for cls in (
        Return,
        MyopicReturn,
        WaypointGoal,
        Deadline,
        RevisitPenalty,
        ActionSwitches,
        GridReturn,
        HiddenContext,
    )
}
# Built-in utilities defined on a higher floor (they need sequence policies and the SFT
# reference): named by import path, so this module never imports them, and resolved on use.
ELSEWHERE: dict[str, str] = {
    "gold-gru": "zopg.lm.gold:GoldGRU",
    "bigram-goodhart": "zopg.lm.gold:BigramGoodhart",
}


def _is_utility_class(found) -> bool:
    return isinstance(found, type) and issubclass(found, Utility)


def register_utility(cls: type, *, replace: bool = False) -> type:
    """Make a Utility subclass known by its `name` to make_utility and experiment files."""
    if not _is_utility_class(cls):
        raise bad_value("utility class", cls, "must be a subclass of zopg.preferences.Utility")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or is_import_path(name):
        raise bad_value("utility class name", name, "must be a non-empty string without ':'")
    if name in UTILITIES and not replace:
        raise bad_value("utility class name", name, "is taken; pass replace=True")
    UTILITIES[name] = cls
    return cls


def utility_names() -> tuple[str, ...]:
    """The built-in utilities and the registered ones, then those of the token family."""
    return (*UTILITIES, *ELSEWHERE)


def utility_class(name: str) -> type:
    """The Utility subclass a name stands for: built-in, registered, defined elsewhere
    (imported now) or given by import path ("package.module:NAME")."""
    if is_import_path(name) or name in ELSEWHERE:
        return import_object(
            "utility",
            ELSEWHERE.get(name, name),
            _is_utility_class,
            "a subclass of zopg.preferences.Utility",
        )
    if name not in UTILITIES:
        raise unknown_name("utility", name, [*UTILITIES, *ELSEWHERE, "'package.module:NAME'"])
    return UTILITIES[name]


def make_utility(name: str, **params) -> Utility:
    """A utility by name with its parameters (see the module docstring), unbound; or the
    `Utility` subclass named by import path ("package.module:NAME")."""
    cls = utility_class(name)
    allowed = [f.name for f in dataclasses.fields(cls) if f.name not in cls.bound_fields]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise bad_value(
            f"{name} utility parameter",
            unknown[0],
            f"known parameters: {', '.join(allowed) or 'none'}",
        )
    if "waypoint" in params and isinstance(params["waypoint"], list):
        params = {**params, "waypoint": tuple(params["waypoint"])}
    if cls is HiddenContext:
        params = {**params, **_hidden_context_parts(params)}
    return cls(**params)


def _hidden_context_parts(params: dict) -> dict:
    """components as utilities (from {name, parameters} tables) and weights as a tuple."""
    parts = {}
    if "components" in params:
        components = params["components"]
        if not isinstance(components, list | tuple):
            raise bad_value("hidden-context.components", components, "must be a list")
        made = []
        for i, c in enumerate(components):
            if isinstance(c, Utility):
                made.append(c)
            elif isinstance(c, str):
                made.append(make_utility(c))
            elif isinstance(c, dict) and isinstance(c.get("name"), str):
                made.append(make_utility(c["name"], **{k: v for k, v in c.items() if k != "name"}))
            else:
                raise bad_value(
                    f"hidden-context.components[{i}]",
                    c,
                    "must be a utility name or a table with 'name'",
                )
        parts["components"] = tuple(made)
    if "weights" in params:
        weights = params["weights"]
        if not isinstance(weights, list | tuple):
            raise bad_value("hidden-context.weights", weights, "must be a list of numbers")
        parts["weights"] = tuple(weights)
    return parts
