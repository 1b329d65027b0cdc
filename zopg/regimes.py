"""Exact computations behind the regimes where reward inference can fail (science.md §9).

Everything here runs on a GridWorld's exact model and trains nothing with samples (except the
reward model's least-squares fit, which needs trajectories):

- outcome utilities: when u(τ) = goal, trap or 0 by whether τ entered G, X or neither (step
  reward 0), every pairwise rule a teacher or learner uses is a matrix M[o, o'] over the three
  outcomes, and E_{τ∼π, τ'∼π̄} M(τ, τ') is bilinear in the two outcome distributions;
- self-play fixed points: exact gradient ascent of θ ↦ E_{o∼π_θ, o'∼π_θ̄}[M(o, o')] with
  θ̄ = stop_gradient(θ). M = σ(u_o − u_o') is the win rate (online DPO at small β, ZPG with one
  vote per pair); M = σ⁻¹(p(o, o')) the value difference a link-inverting learner estimates;
  M = r_o − r_o' makes it plain gradient ascent on the reward r (any mis-scaled reward);
- the reward model's policy gradient: a reward r(s, a) (or r(cell, a)) fitted by least squares
  to u(τ) on trajectories of π, and the exact gradient of π's value under it, to compare with
  the true ∇V_u (the compatible-critic property and where it breaks).
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zopg.exact import optimal_value, policy_value, utility_value_fn
from zopg.policies import flat_view
from zopg.preferences import value_difference
from zopg.rollout import rollout_batch

OUTCOMES = ("goal", "trap", "timeout")


# -- outcomes ----------------------------------------------------------------------------------


def outcome_rewards(env, env_params):
    """(model, entry): the exact model and entry[k, s, a, s'] = 1 for a step from a live state
    into a G (k = 0) or X (k = 1) cell, so that E[Σ_t entry] is P(goal), P(trap)."""
    model = env.tabular_model(env_params)
    cells = "".join(env_params.layout)
    cell = env.cell_of(np.arange(model.transition.shape[0]), env_params)
    live = np.array([cells[c] not in "GX" for c in cell], np.float32)
    entry = [
        live[:, None, None] * np.array([cells[c] == k for c in cell])[None, None, :] for k in "GX"
    ]
    shape = model.transition.shape
    return model, jnp.asarray(np.stack([np.broadcast_to(e, shape) for e in entry]), jnp.float32)


def _outcomes(model, entry, probs) -> jax.Array:
    goal, trap = (policy_value(model.replace(reward=entry[k]), probs) for k in (0, 1))
    return jnp.stack([goal, trap, 1.0 - goal - trap])


def outcome_probs(env, env_params, probs) -> jax.Array:
    """[P(goal), P(trap), P(timeout)] of the stationary policy probs[s, a], exactly and
    differentiably (G and X absorb, so each trajectory has exactly one outcome)."""
    return _outcomes(*outcome_rewards(env, env_params), probs)


def outcome_values(goal: float, trap: float) -> np.ndarray:
    """u over OUTCOMES for a GridWorld without step rewards."""
    return np.array([goal, trap, 0.0])


def difference_matrix(values) -> np.ndarray:
    """D[o, o'] = u_o − u_o'."""
    values = np.asarray(values, np.float64)
    return values[:, None] - values[None, :]


def win_matrix(values, link) -> np.ndarray:
    """M[o, o'] = σ(u_o − u_o'): the win rate of outcome o over o' for a teacher with `link`."""
    return np.asarray(link.prob(jnp.asarray(difference_matrix(values), jnp.float32)), np.float64)


def batch_counts(batch_size: int) -> np.ndarray:
    """Every outcome count vector (n_goal, n_trap, n_timeout) of a batch of `batch_size`
    trajectories, [C, 3]; for one trajectory, the OUTCOMES in their order."""
    counts = [
        (g, t, batch_size - g - t)
        for g in range(batch_size, -1, -1)
        for t in range(batch_size - g, -1, -1)
    ]
    return np.array(counts, np.float32)


def batch_win_matrix(values, link, batch_size: int) -> np.ndarray:
    """M[c, c'] = σ(mean utility of counts c − of c'): a teacher comparing the mean utilities of
    two batches (ZSPO's queries, science.md §5), over batch_counts(batch_size)."""
    means = batch_counts(batch_size) @ np.asarray(values, np.float64) / batch_size
    return win_matrix(means, link)


def _batch_distribution(outcome_probs, counts) -> jax.Array:
    """Multinomial probabilities of the count vectors `counts` [C, 3] for one batch."""
    size = jnp.sum(counts[0])
    log_coef = jax.scipy.special.gammaln(size + 1) - jnp.sum(
        jax.scipy.special.gammaln(counts + 1), axis=-1
    )
    return jnp.exp(log_coef) * jnp.prod(jnp.power(outcome_probs[None, :], counts), axis=-1)


def mixture_matrix(values_by_type, weights, link) -> np.ndarray:
    """P(o ≻ o') of a hidden-context teacher: Σ_k w_k σ(u_k(o) − u_k(o'))."""
    return sum(w * win_matrix(v, link) for w, v in zip(weights, values_by_type, strict=True))


def inverted_matrix(prob_matrix, link, r_max: float | None = None, num_votes=None) -> np.ndarray:
    """What a learner that inverts `link` reads as the value difference of outcomes o, o':
    σ⁻¹(p(o, o')) with infinitely many votes per pair and no trimming; with r_max, ZPG's
    Δ̂ = σ⁻¹(trim(p̂)) (zopg.preferences.value_difference), and with num_votes M its expectation
    over the vote fraction p̂ ~ Binomial(M, p) / M (the bias a finite M leaves)."""
    p = np.asarray(prob_matrix, np.float64)
    if r_max is None:
        return np.asarray(link.inverse(jnp.asarray(p, jnp.float32)), np.float64)
    if num_votes is None:
        return np.asarray(value_difference(jnp.asarray(p, jnp.float32), link, r_max), np.float64)
    k = np.arange(num_votes + 1)
    comb = np.array([math.comb(num_votes, int(i)) for i in k], np.float64)
    pmf = comb * p[..., None] ** k * (1.0 - p[..., None]) ** (num_votes - k)  # [..., M + 1]
    read = np.asarray(value_difference(jnp.asarray(k / num_votes, jnp.float32), link, r_max))
    return pmf @ read.astype(np.float64)


# -- self-play fixed points --------------------------------------------------------------------


def self_play_fixed_point(
    env,
    env_params,
    policy,
    matrix,
    num_iterations: int = 1500,
    learning_rate: float = 0.1,
    refit: bool = False,
    batch_size: int = 1,
):
    """θ after exact gradient ascent of E_{o∼π_θ, o'∼π_θ̄}[M(o, o')], θ̄ = stop_gradient(θ),
    from the policy's init at key 0 (the uniform policy for a tabular softmax at init_scale 0).
    Adam at `learning_rate`, as exact-pg's default. refit: M is a preference-probability
    matrix, and each step ascends the outcome reward a Bradley–Terry learner fits to it on the
    current policy's pairs (bt_outcome_reward), the limit of a reward model refitted every
    round. batch_size D > 1: o and o' are batches of D trajectories, M is over their count
    vectors (batch_counts, batch_win_matrix): the limit of ZSPO's batch comparisons. Returns
    (params, the gradient norm at each iteration)."""
    model, entry = outcome_rewards(env, env_params)
    params = policy.init(jax.random.key(0))
    states = jnp.arange(env.num_states(env_params))
    matrix = jnp.asarray(matrix, jnp.float32)
    # One trajectory per side is the plain outcome distribution (batch_counts(1) is OUTCOMES).
    counts = None if batch_size == 1 else jnp.asarray(batch_counts(batch_size))
    args = (policy, num_iterations, learning_rate, refit)
    return _ascent(model, entry, matrix, params, states, counts, *args)


def plain_ascent_scores(env, env_params, policy, num_steps: int = 300, step_size: float = 1.0):
    """Normalised scores (0 uniform, 1 V*) along exact gradient ascent on E[return] with plain
    steps θ ← θ + step_size ∇V from the policy's init at key 0, one per step: how long gradient
    dynamics take from the uniform policy (a long flat stretch is a plateau every sample-based
    learner has to cross too)."""
    model = env.tabular_model(env_params)
    states = jnp.arange(env.num_states(env_params))
    uniform = jnp.full((len(states), env.num_actions), 1.0 / env.num_actions)
    low, high = policy_value(model, uniform), optimal_value(model)
    params = policy.init(jax.random.key(0))
    values = _plain_ascent(model, params, states, policy, num_steps, step_size)
    return np.asarray((values - low) / (high - low))


@partial(jax.jit, static_argnums=(3, 4, 5))
def _plain_ascent(model, params, states, policy, num_steps, step_size):
    def value(p):
        return policy_value(model, policy.action_probs(p, states))

    def step(p, _):
        v, grad = jax.value_and_grad(value)(p)
        return jax.tree_util.tree_map(lambda a, g: a + step_size * g, p, grad), v

    return jax.lax.scan(step, params, None, length=num_steps)[1]


def bt_outcome_reward(prob_matrix, outcome_weights, num_steps: int = 50) -> jax.Array:
    """r over OUTCOMES (r_timeout = 0) maximising the Bradley–Terry likelihood of preference
    probabilities p[o, o'] on pairs drawn from the outcome distribution `outcome_weights`
    (Newton's method; a 1e-6 ridge keeps outcomes that never occur at finite reward)."""
    prob_matrix = jnp.asarray(prob_matrix, jnp.float32)
    pair = outcome_weights[:, None] * outcome_weights[None, :]

    def loss(free):
        r = jnp.concatenate([free, jnp.zeros(1)])
        gap = r[:, None] - r[None, :]
        nll = -(
            prob_matrix * jax.nn.log_sigmoid(gap) + (1 - prob_matrix) * jax.nn.log_sigmoid(-gap)
        )
        return jnp.sum(pair * nll) + 1e-6 * jnp.sum(free**2)

    def newton(free, _):
        step = jnp.linalg.solve(jax.hessian(loss)(free), jax.grad(loss)(free))
        return free - step, None

    free, _ = jax.lax.scan(newton, jnp.zeros(2), None, length=num_steps)
    return jnp.concatenate([free, jnp.zeros(1)])


@partial(jax.jit, static_argnums=(6, 7, 8, 9))
def _ascent(
    model, entry, matrix, params, states, counts, policy, num_iterations, learning_rate, refit
):
    # Compiled once per policy and model shape (layout and horizon); slip and rewards are data.
    tx = optax.adam(learning_rate)

    def outcomes(p):
        probs = _outcomes(model, entry, policy.action_probs(p, states))
        return probs if counts is None else _batch_distribution(probs, counts)

    def step(carry, _):
        params, opt_state = carry
        opponent = jax.lax.stop_gradient(outcomes(params))
        payoff = matrix
        if refit:
            reward = jax.lax.stop_gradient(bt_outcome_reward(matrix, opponent))
            payoff = reward[:, None] - reward[None, :]
        grad = jax.grad(lambda p: outcomes(p) @ payoff @ opponent)(params)
        updates, opt_state = tx.update(jax.tree_util.tree_map(jnp.negative, grad), opt_state)
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grad)))
        return (optax.apply_updates(params, updates), opt_state), norm

    (params, _), norms = jax.lax.scan(step, (params, tx.init(params)), None, length=num_iterations)
    return params, norms


def reward_optimum(env, env_params, policy, values, **kwargs):
    """θ after exact gradient ascent on E[r] for the outcome reward r = `values` (a fixed point
    of M = r_o − r_o', where the opponent drops out)."""
    return self_play_fixed_point(env, env_params, policy, difference_matrix(values), **kwargs)


# -- the reward model's policy gradient ----------------------------------------------------------


def fitted_reward(
    env, env_params, policy, params, utility, key, num_trajectories, cell_only, ridge=1e-3
):
    """r[state or cell, a]: least squares of the centred u(τ) on the centred (s, a) counts of
    `num_trajectories` trajectories of π (the compatible-critic projection; a BT fit to votes of
    a smooth link approximates it). cell_only: counts of (cell, a), what a reward model that sees
    only the cell can represent."""
    traj = rollout_batch(key, policy, params, env, env_params, num_trajectories)
    cells = env.num_cells(env_params) if cell_only else env.num_states(env_params)
    index = env.cell_of(traj.obs, env_params) if cell_only else traj.obs
    actions = env.num_actions
    counts = jax.nn.one_hot(index * actions + traj.action, cells * actions)
    counts = jnp.sum(jnp.where(traj.valid[..., None], counts, 0.0), axis=-2)
    x = np.asarray(counts, np.float64)
    y = np.asarray(utility(traj), np.float64)
    x, y = x - x.mean(0), y - y.mean()
    gram = x.T @ x / len(y) + ridge * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y / len(y)).reshape(cells, actions)


def reward_gradient(env, env_params, policy, params, reward, cell_only) -> jax.Array:
    """∇_θ of π's exact value under the reward r[state or cell, a] (paid on every step)."""
    model = env.tabular_model(env_params)
    states = jnp.arange(env.num_states(env_params))
    rows = env.cell_of(states, env_params) if cell_only else states
    per_step = jnp.asarray(reward, jnp.float32)[rows]
    model = model.replace(reward=jnp.broadcast_to(per_step[:, :, None], model.transition.shape))
    return jax.grad(lambda p: policy_value(model, policy.action_probs(p, states)))(params)


def gradient_cosine(
    env, env_params, policy, params, utility, cell_only, key=None, num_trajectories=100_000
) -> float:
    """cos(∇V under the fitted reward model, ∇V_u), both exact given the fit."""
    key = jax.random.key(0) if key is None else key
    reward = fitted_reward(
        env, env_params, policy, params, utility, key, num_trajectories, cell_only
    )
    fitted = reward_gradient(env, env_params, policy, params, reward, cell_only)
    true = jax.grad(utility_value_fn(env, env_params, utility, policy))(params)
    a = np.asarray(flat_view(fitted)[0], np.float64)
    b = np.asarray(flat_view(true)[0], np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
