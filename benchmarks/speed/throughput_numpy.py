"""NumPy baselines for the throughput benchmark: GridWorld rollouts and a ZPG iteration, written
independently of zopg (only the GridWorld layout and parameters are read from it)."""

from __future__ import annotations

import math

import numpy as np


def gridworld_tables(params) -> dict:
    """Tables for the GridWorld semantics in zopg/envs/gridworld.py, built from the layout."""
    layout = params.layout
    height, width = len(layout), len(layout[0])
    cells = "".join(layout)
    moves = ((-1, 0), (0, 1), (1, 0), (0, -1))  # up, right, down, left
    next_state = np.zeros((height * width, 4), dtype=np.int64)
    for r in range(height):
        for c in range(width):
            for a, (dr, dc) in enumerate(moves):
                nr, nc = r + dr, c + dc
                inside = 0 <= nr < height and 0 <= nc < width
                blocked = not inside or layout[nr][nc] == "#"
                next_state[r * width + c, a] = r * width + c if blocked else nr * width + nc
    is_goal = np.array([ch == "G" for ch in cells])
    is_trap = np.array([ch == "X" for ch in cells])
    entry_reward = (
        params.step_reward + params.goal_reward * is_goal + params.trap_reward * is_trap
    ).astype(np.float64)
    return {
        "next_state": next_state,
        "absorbing": is_goal | is_trap,
        "entry_reward": entry_reward,
        "start": cells.index("S"),
        "horizon": params.horizon,
        "slip": float(params.slip),
    }


def loop_rollouts(rng: np.random.Generator, world: dict, probs: np.ndarray, num: int):
    """Python loop over trajectories and steps; returns (obs, action, reward, log_prob) arrays.

    It records the same per-step outputs as the JAX Trajectory (the algorithms need them), and
    steps absorbing states too, so both sides do the same work for the same fixed horizon.
    """
    horizon, slip, start = world["horizon"], world["slip"], world["start"]
    next_state, absorbing, entry_reward = (
        world["next_state"],
        world["absorbing"],
        world["entry_reward"],
    )
    cdf = np.cumsum(probs, axis=1)
    log_probs = np.log(probs)
    obs = np.zeros((num, horizon), dtype=np.int64)
    action = np.zeros((num, horizon), dtype=np.int64)
    reward = np.zeros((num, horizon))
    log_prob = np.zeros((num, horizon))
    for i in range(num):
        # Drawing one trajectory's uniforms at once is the obvious cheap thing to do in NumPy.
        u = rng.random((horizon, 2))
        pos = start
        for t in range(horizon):
            row = cdf[pos]
            a = min(int(np.searchsorted(row, u[t, 0] * row[-1], side="right")), 3)
            # Slip: with probability `slip` execute a uniform action (u / slip is uniform again).
            executed = min(int(u[t, 1] / slip * 4), 3) if u[t, 1] < slip else a
            if absorbing[pos]:
                nxt, r = pos, 0.0
            else:
                nxt = next_state[pos, executed]
                r = entry_reward[nxt]
            obs[i, t], action[i, t], reward[i, t] = pos, a, r
            log_prob[i, t] = log_probs[pos, a]
            pos = nxt
    return obs, action, reward, log_prob


def vectorised_rollouts(rng: np.random.Generator, world: dict, probs: np.ndarray, num: int):
    """The same rollouts vectorised over the batch, with a Python loop over time only."""
    horizon, slip = world["horizon"], world["slip"]
    cdf = np.cumsum(probs, axis=1)
    log_probs = np.log(probs)
    obs = np.zeros((num, horizon), dtype=np.int64)
    action = np.zeros((num, horizon), dtype=np.int64)
    reward = np.zeros((num, horizon))
    log_prob = np.zeros((num, horizon))
    pos = np.full(num, world["start"], dtype=np.int64)
    for t in range(horizon):
        u = rng.random((2, num))
        rows = cdf[pos]
        a = np.minimum((rows <= (u[0] * rows[:, -1])[:, None]).sum(axis=1), 3)
        slipped = u[1] < slip
        random_action = np.minimum((u[1] / max(slip, 1e-30) * 4).astype(np.int64), 3)
        executed = np.where(slipped, random_action, a)
        stay = world["absorbing"][pos]
        nxt = np.where(stay, pos, world["next_state"][pos, executed])
        obs[:, t], action[:, t] = pos, a
        reward[:, t] = np.where(stay, 0.0, world["entry_reward"][nxt])
        log_prob[:, t] = log_probs[pos, a]
        pos = nxt
    return obs, action, reward, log_prob


# The two rollout styles a NumPy ZPG iteration can use (see throughput_zpg.NUMPY_ZPG_STYLES).
ROLLOUTS = {"loop": loop_rollouts, "vectorised": vectorised_rollouts}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax: the action probabilities of a tabular policy."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def preference_differences(
    rng, world: dict, logits_1, logits_0, settings: dict, style: str = "vectorised"
):
    """Δ̂ of N fresh pairs (τ_1 from logits_1, τ_0 from logits_0) from M Bradley–Terry votes each."""
    n, m, r_max = settings["num_pairs"], settings["num_queries"], settings["r_max"]
    rollouts = ROLLOUTS[style]
    return_1 = rollouts(rng, world, softmax(logits_1), n)[2].sum(axis=1)
    return_0 = rollouts(rng, world, softmax(logits_0), n)[2].sum(axis=1)
    p_first = 1.0 / (1.0 + np.exp(return_0 - return_1))  # BT with scale 1 on the true returns
    p_hat = (rng.random((n, m)) < p_first[:, None]).mean(axis=1)
    high = 1.0 / (1.0 + math.exp(-r_max))
    p_hat = np.clip(p_hat, 1.0 - high, high)  # trim to [σ(−r_max), σ(r_max)]
    return np.log(p_hat) - np.log1p(-p_hat)  # σ⁻¹ = logit


def zpg_step(rng, world: dict, logits: np.ndarray, settings: dict, style: str):
    """One ZPG iteration: sphere direction, N pairs current vs perturbed, ĝ, SGD ascent."""
    mu, dim = settings["mu"], logits.size
    z = rng.standard_normal(dim)
    v = (z / np.linalg.norm(z)).reshape(logits.shape)
    delta = preference_differences(rng, world, logits + mu * v, logits, settings, style)
    gradient = (dim / mu) * delta.mean() * v
    return logits + settings["step_size"] * gradient
