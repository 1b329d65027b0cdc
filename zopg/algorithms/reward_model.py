"""Reward models r_φ(s, a) fitted by Bradley–Terry maximum likelihood on labelled trajectory pairs.

A pair (τ_a, τ_b) with label p (the target probability that τ_a is preferred) contributes the
cross-entropy of p against σ(U_φ(τ_a) − U_φ(τ_b)), with U_φ(τ) = Σ_t r_φ(s_t, a_t) over valid
steps. The learner assumes the logistic link with scale 1 whatever the oracle's link is: that is
the standard reward-model recipe (Christiano et al. 2017), and a misspecified link is part of what
the comparison with link-aware methods measures. r_φ is identified only up to what the data can
see; for fixed-length episodes a constant shift of r_φ never changes U_φ differences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from zopg.algorithms.settings import Settings, choice, flag, integer, positive, real, sizes
from zopg.errors import ConfigError
from zopg.networks import MLP, observation_features
from zopg.preferences.utilities import automaton_states
from zopg.rollout import Trajectory

REWARD_MODELS = ("tabular", "mlp", "mlp-coordinates")
LABELS = ("soft", "hard")
ACTION_KINDS = ("discrete", "continuous")


@dataclasses.dataclass(frozen=True)
class RewardModelConfig(Settings):
    """How r_φ is parametrised and fitted. Defaults are our choice (tabular GridWorld).

    kind           tabular: one value per (state, action), needs a tabular env; mlp: tanh MLP
                   from features (one-hot state, or float obs) to one output per action, or for
                   continuous actions from concat(features, action scaled to [-1, 1]) to one
                   output; mlp-coordinates: the tanh MLP on a GridWorld cell's (row, column),
                   each scaled to [-1, 1] (cell_coordinates), one output per action. A one-hot
                   input gives every cell its own first-layer weights, so a cell the data never
                   visit keeps its initial guess; on coordinates the model is smooth across
                   cells and extrapolates to rarely or never visited ones (the over-optimisation
                   regime, science.md §9: a proxy PPO can exploit).
    hidden_sizes   hidden layers of the mlp.
    learning_rate  Adam step size.
    num_steps      gradient steps per refit (each on a fresh minibatch of pairs).
    batch_size     labelled pairs per gradient step, drawn uniformly from the buffer.
    labels         soft: the vote fraction p̂ of the M queries is the target (all of the
                   information in the votes about σ(Δ)); hard: the majority vote (½ on ties).
    l2             weight of ½‖φ‖² in the loss; pins the shift r_φ is otherwise free in and keeps
                   rarely seen (s, a) near 0.
    automaton_input
                   also see the state q of the teacher utility's automaton (tabular envs with a
                   path utility): r_φ(q, s, a), a Markov reward on the product. The control arm
                   of the non-Markov regime: if it recovers where r_φ(s, a) fails, the failure
                   is representational.
    cell_input     see only the cell of each observation (env.cell_of), not what else the
                   observation carries (GridWorld's observe_visited bit): r_φ(cell, a) beside a
                   policy of (bit, cell), the policy-richer-than-the-reward-model regime. Off by
                   default: the reward model sees the observation, as the policy does.
    """

    kind: str = choice("tabular", REWARD_MODELS)
    hidden_sizes: tuple[int, ...] = sizes((64, 64))
    learning_rate: float = positive(0.05)
    num_steps: int = integer(100)
    batch_size: int = integer(256)
    labels: str = choice("soft", LABELS)
    l2: float = real(1e-4, 0.0, math.inf, high_open=True)
    automaton_input: bool = flag(False)
    cell_input: bool = flag(False)

    def check(self, problem, prefix):
        if problem is None:
            return
        env = problem.env
        if self.kind == "tabular" and not hasattr(env, "num_states"):
            raise ConfigError(
                f"{prefix}kind = 'tabular' needs a tabular environment; {env!r} is not (use 'mlp')"
            )
        action_kind = getattr(env, "action_kind", None)
        if action_kind not in ACTION_KINDS:
            raise ConfigError(
                f"reward models need discrete or continuous actions; {env!r} has action_kind "
                f"{action_kind!r}"
            )
        if self.kind == "tabular" and action_kind == "continuous":
            raise ConfigError(f"{prefix}kind = 'tabular' needs discrete actions; use 'mlp'")
        if self.kind == "mlp-coordinates":
            check_coordinates(self, problem, prefix)
        if self.automaton_input and teacher_automaton(problem) is None:
            raise ConfigError(
                f"{prefix}automaton_input = true needs a tabular env and a teacher utility with "
                "a finite automaton (e.g. waypoint-goal)"
            )
        if self.cell_input and not hasattr(env, "cell_of"):
            raise ConfigError(f"{prefix}cell_input = true needs a GridWorld; {env!r} is not one")
        if self.cell_input and self.automaton_input:
            raise ConfigError(f"{prefix}cell_input and automaton_input exclude each other")

    def to_data(self) -> dict:
        data = super().to_data()
        if not self.cell_input:
            # Added later: left out at its default, so the run hashes of earlier runs stand.
            del data["cell_input"]
        return data


@dataclasses.dataclass(frozen=True)
class RewardModel:
    """r_φ(obs, action); broadcasts over leading axes of obs and action.

    Discrete actions (action_kind 'discrete'): a table over (state, action) or an MLP with one
    output per action. Continuous actions: an MLP on concat(features, scaled action), where the
    action is mapped affinely from [low, high] to [-1, 1] so that its inputs are on the scale of
    the tanh layers whatever the environment's units; actions are [..., action_dim].
    """

    kind: str
    num_actions: int | None
    features: Callable
    feature_dim: int
    num_states: int | None = None
    hidden_sizes: tuple[int, ...] = (64, 64)
    action_kind: str = "discrete"
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    cell_of: Callable | None = None  # obs -> cell (RewardModelConfig.cell_input), else None

    @property
    def _continuous(self) -> bool:
        return self.action_kind == "continuous"

    @property
    def _mlp(self) -> MLP:
        outputs = 1 if self._continuous else self.num_actions
        return MLP(hidden_sizes=tuple(self.hidden_sizes), num_outputs=outputs)

    def init(self, key):
        if self.kind == "tabular":
            # Zero start: every (s, a) the data never visits keeps reward 0, a neutral guess.
            return {"table": jnp.zeros((self.num_states, self.num_actions))}
        dim = self.feature_dim + (len(self.action_low) if self._continuous else 0)
        return self._mlp.init(key, jnp.zeros((dim,)))

    def __call__(self, params, obs, action):
        if self.cell_of is not None:
            obs = self.cell_of(obs)
        if self.kind == "tabular":
            return params["table"][obs, action]
        if self.kind == "mlp-coordinates":
            # The same function as below, evaluated once per cell and gathered: a batch of
            # pairs has thousands of steps but the grid only a few dozen cells.
            cells = self._mlp.apply(params, self.features(jnp.arange(self.num_states)))
            return cells[obs, action]
        x = self.features(obs)
        if self._continuous:
            low, high = jnp.asarray(self.action_low), jnp.asarray(self.action_high)
            scaled = (2.0 * jnp.asarray(action, jnp.float32) - (high + low)) / (high - low)
            lead = jnp.broadcast_shapes(x.shape[:-1], scaled.shape[:-1])
            x = jnp.broadcast_to(x, (*lead, x.shape[-1]))
            scaled = jnp.broadcast_to(scaled, (*lead, scaled.shape[-1]))
            return self._mlp.apply(params, jnp.concatenate([x, scaled], axis=-1))[..., 0]
        out = self._mlp.apply(params, x)
        return jnp.take_along_axis(out, jnp.asarray(action)[..., None], axis=-1)[..., 0]

    def table(self, params) -> jax.Array:
        """r_φ[s, a] for every state and action (tabular environments only)."""
        states = jnp.arange(self.num_states)
        actions = jnp.arange(self.num_actions)
        return self(params, states[:, None], actions[None, :])

    def utility(self, params, obs, action, valid) -> jax.Array:
        """U_φ(τ) = Σ_t r_φ(s_t, a_t) over valid steps (time is the last axis of valid)."""
        return jnp.sum(jnp.where(valid, self(params, obs, action), 0.0), axis=-1)


def teacher_automaton(problem):
    """The automaton of the problem's teacher utility on its tabular model, or None."""
    utility = getattr(problem.oracle, "utility", None)
    if not hasattr(problem.env, "tabular_model") or not hasattr(utility, "automaton"):
        return None
    return utility.automaton(problem.env.tabular_model(problem.env_params))


def automaton_view(automaton, num_cells: int):
    """traj -> traj whose obs are product states q·S + s, for a reward model that sees q."""

    def view(traj: Trajectory) -> Trajectory:
        return traj.replace(obs=traj.obs + num_cells * automaton_states(automaton, traj))

    return view


def make_reward_model(
    config: RewardModelConfig, env, env_params, num_states: int | None = None
) -> RewardModel:
    """num_states overrides the env's (a reward model over product states q·S + s)."""
    features, dim = observation_features(env, env_params)
    cell_of = None
    if config.cell_input:
        num_states = env.num_cells(env_params)
        cell_of = lambda obs: env.cell_of(obs, env_params)  # noqa: E731
    if num_states is not None:
        features, dim = (lambda obs: jax.nn.one_hot(obs, num_states)), num_states
    else:
        num_states = env.num_states(env_params) if hasattr(env, "num_states") else None
    if config.kind == "mlp-coordinates":
        features, dim = cell_coordinates(env_params)
    bounds = {}
    if env.action_kind == "continuous":
        low, high = env.action_bounds(env_params)
        bounds = {
            "action_low": tuple(float(x) for x in np.ravel(low)),
            "action_high": tuple(float(x) for x in np.ravel(high)),
        }
    return RewardModel(
        kind=config.kind,
        num_actions=env.num_actions,
        features=features,
        feature_dim=dim,
        num_states=num_states,
        hidden_sizes=tuple(config.hidden_sizes),
        action_kind=env.action_kind,
        cell_of=cell_of,
        **bounds,
    )


def cell_coordinates(env_params):
    """(features, 2): a GridWorld cell s = row · width + col -> (row, col), each mapped affinely
    to [-1, 1] (0 along a dimension of one cell), on the scale of the tanh layers."""
    height, width = len(env_params.layout), len(env_params.layout[0])

    def scaled(index, size):
        return 2.0 * index / (size - 1) - 1.0 if size > 1 else jnp.zeros_like(index)

    def features(obs):
        obs = jnp.asarray(obs)
        row = (obs // width).astype(jnp.float32)
        col = (obs % width).astype(jnp.float32)
        return jnp.stack([scaled(row, height), scaled(col, width)], axis=-1)

    return features, 2


def check_coordinates(config: RewardModelConfig, problem, prefix: str) -> None:
    """kind = 'mlp-coordinates' needs observations that are GridWorld cells (or cell_input)."""
    layout = getattr(problem.env_params, "layout", None)
    if layout is None:
        raise ConfigError(
            f"{prefix}kind = 'mlp-coordinates' needs a GridWorld (cells with a row and a "
            f"column); {problem.env!r} has none (use 'mlp')"
        )
    if config.automaton_input:
        raise ConfigError(
            f"{prefix}kind = 'mlp-coordinates' cannot take automaton_input (a product state "
            "has no coordinates)"
        )
    cells = len(layout) * len(layout[0])
    observed = problem.env.num_states(problem.env_params)
    if observed != cells and not getattr(config, "cell_input", False):
        raise ConfigError(
            f"{prefix}kind = 'mlp-coordinates' needs observations that are cells ({observed} "
            f"observations, {cells} cells): set cell_input = true"
        )


# -- labelled pairs -----------------------------------------------------------------------------


@struct.dataclass
class PairBuffer:
    """A fixed-capacity FIFO of labelled pairs (arrays inside a scan need static shapes).

    obs [C, 2, H, *obs_shape], action [C, 2, H], valid [C, 2, H]: the two trajectories of each
    pair; label [C]: target probability that the first is preferred; weight [C]: 1 for pairs
    with at least one answered query, else 0; count: pairs ever added (slot i holds pair
    count-1-((count-1-i) mod C) once full).
    """

    obs: jax.Array
    action: jax.Array
    valid: jax.Array
    label: jax.Array
    weight: jax.Array
    count: jax.Array

    @property
    def capacity(self) -> int:
        return self.label.shape[0]

    def size(self) -> jax.Array:
        return jnp.minimum(self.count, self.capacity)

    def filled(self) -> jax.Array:
        return jnp.arange(self.capacity) < self.count


def empty_buffer(capacity: int, example: Trajectory) -> PairBuffer:
    """An empty buffer for pairs of trajectories shaped like those of `example` (any batch)."""
    batch_ndim = len(example.batch_shape)

    def slots(x):
        return jnp.zeros((capacity, 2, *x.shape[batch_ndim:]), x.dtype)

    return PairBuffer(
        obs=slots(example.obs),
        action=slots(example.action),
        valid=slots(example.valid),
        label=jnp.zeros((capacity,)),
        weight=jnp.zeros((capacity,)),
        count=jnp.zeros((), jnp.int32),
    )


def add_pairs(
    buffer: PairBuffer, traj_a: Trajectory, traj_b: Trajectory, label, weight
) -> PairBuffer:
    """Append P pairs (batch shape [P]); once full, the oldest pairs are overwritten."""
    num = label.shape[0]
    slots = (buffer.count + jnp.arange(num)) % buffer.capacity
    both = lambda a, b: jnp.stack([a, b], axis=1)  # noqa: E731
    return buffer.replace(
        obs=buffer.obs.at[slots].set(both(traj_a.obs, traj_b.obs)),
        action=buffer.action.at[slots].set(both(traj_a.action, traj_b.action)),
        valid=buffer.valid.at[slots].set(both(traj_a.valid, traj_b.valid)),
        label=buffer.label.at[slots].set(label),
        weight=buffer.weight.at[slots].set(weight),
        count=buffer.count + num,
    )


def pair_weight(feedback) -> jax.Array:
    """1 for pairs with at least one answered query; a fully skipped pair carries no information."""
    return jnp.any(feedback.answered, axis=-1).astype(jnp.float32)


def pair_labels(config: RewardModelConfig, p_hat):
    """The fitting target from vote fractions p̂ (see RewardModelConfig.labels)."""
    if config.labels == "soft":
        return p_hat
    return jnp.where(p_hat > 0.5, 1.0, jnp.where(p_hat < 0.5, 0.0, 0.5))


def utility_gap(model: RewardModel, params, obs, action, valid) -> jax.Array:
    """U_φ(first) − U_φ(second) for pairs stacked on axis 1 (shape [P, 2, H, ...])."""
    utility = model.utility(params, obs, action, valid)
    return utility[:, 0] - utility[:, 1]


def bradley_terry_loss(gap, label, weight) -> jax.Array:
    """Weighted mean cross-entropy of soft labels against σ(gap)."""
    nll = -(label * jax.nn.log_sigmoid(gap) + (1.0 - label) * jax.nn.log_sigmoid(-gap))
    return jnp.sum(weight * nll) / jnp.maximum(jnp.sum(weight), 1.0)


def pair_accuracy(gap, label, weight) -> jax.Array:
    """Share of labelled, non-tied pairs whose preferred side r_φ ranks higher."""
    decided = (weight > 0) & (label != 0.5)
    right = (gap > 0) == (label > 0.5)
    return jnp.sum(decided & right) / jnp.maximum(jnp.sum(decided), 1)


def make_fit(config: RewardModelConfig, model: RewardModel):
    """(init_opt, fit): fit(key, params, opt_state, buffer) -> (params, opt_state, stats).

    Each refit runs `num_steps` Adam steps on minibatches drawn uniformly from the filled part of
    the buffer; params and optimizer state carry over between refits (warm start).
    """
    tx = optax.adam(config.learning_rate)

    def loss_fn(params, obs, action, valid, label, weight):
        gap = utility_gap(model, params, obs, action, valid)
        loss = bradley_terry_loss(gap, label, weight)
        penalty = 0.5 * sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(params))
        return loss + config.l2 * penalty, loss

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def fit(key, params, opt_state, buffer: PairBuffer):
        size = jnp.maximum(buffer.size(), 1)

        def _step(carry, k):
            params, opt_state = carry
            idx = jax.random.randint(k, (config.batch_size,), 0, size)
            batch = (buffer.obs[idx], buffer.action[idx], buffer.valid[idx])
            grads, loss = grad_fn(params, *batch, buffer.label[idx], buffer.weight[idx])
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        keys = jax.random.split(key, config.num_steps)
        (params, opt_state), losses = jax.lax.scan(_step, (params, opt_state), keys)
        gap = utility_gap(model, params, buffer.obs, buffer.action, buffer.valid)
        weight = jnp.where(buffer.filled(), buffer.weight, 0.0)
        stats = {
            "rm/loss": losses[-1],
            "rm/buffer_loss": bradley_terry_loss(gap, buffer.label, weight),
            "rm/accuracy": pair_accuracy(gap, buffer.label, weight),
        }
        return params, opt_state, stats

    return tx.init, fit
