"""Throughput of zopg's rollouts and ZPG training against NumPy baselines and bare rollouts.

Sections: GridWorld rollouts and ZPG training against plain NumPy, and ZPG on gymnax CartPole
against bare rollouts of the same policy. Writes results/throughput.json; `--only NAME` runs one
section and merges it into the existing file, keeping the other sections. From the repository
root:

    .venv/bin/python benchmarks/throughput.py                      # every section, fresh file
    .venv/bin/python benchmarks/throughput.py --only cartpole_zpg  # one section, merged
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import zopg.envs
import zopg.exact
import zopg.policies
import zopg.preferences
from zopg.algorithms.zeroth_order import Problem, make_difference_fn
from zopg.algorithms.zpg import ZPGConfig, make_train, make_trainer
from zopg.experiments import store
from zopg.policies import num_params
from zopg.rollout import masked_return, rollout_batch

try:
    from benchmarks import _report
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _report

TARGET_RATIO = 100.0  # JAX rollouts must be at least this many times the NumPy loop
TOLERANCE_SE = 5.0  # Monte Carlo means must lie within this many standard errors of exact values
GRIDWORLD_ENVS = ("gridworld/cliff-4x6", "gridworld/open-5x5")
LOGIT_SCALE = 1.5  # random, clearly non-uniform policy so the sampled actions matter

# ZPG training (algorithms.md §3) on the cliff with N pairs and M queries per pair. Step size, mu
# and r_max are pinned here rather than taken from ZPGConfig's defaults, so the JAX run and the
# NumPy iteration below are guaranteed to do the same thing.
ZPG_ENV = "gridworld/cliff-4x6"
ZPG_SETTINGS = {"num_pairs": 1000, "num_queries": 10, "step_size": 0.1, "mu": 3.0, "r_max": 2.0}
ZPG_TARGET_OVER_BARE = 0.5  # ZPG env steps/s must be at least this fraction of bare rollouts
# JAX ZPG env steps/s over the plain NumPy ZPG, whose rollouts are the per-trajectory loop that
# is the rollout benchmark's target baseline too. The vectorised NumPy ZPG is reported beside it.
ZPG_TARGET_OVER_NUMPY = 50.0
NUMPY_ZPG_STYLES = {
    "loop": "plain: the ZPG iteration in NumPy with rollouts as a Python loop over trajectories "
    "and time steps (numpy_loop_rollouts), votes vectorised",
    "vectorised": "vectorised: batch array ops over the 2N trajectories of an iteration and its "
    "N x M votes, a Python loop over the H time steps, one iteration (one seed) at a time",
}
NUMPY_ROLLOUTS = {}  # filled below, once the rollout functions exist
ZPG_SIZES = {
    # rounds interleave one timed call of each measured function (see _report.time_interleaved)
    "full": {
        "seeds": 8,
        "iterations": 150,
        "rounds": 7,
        "bare_calls": 20,
        "numpy_iterations": 4,
        "check_pairs": 20000,
    },
    "quick": {
        "seeds": 4,
        "iterations": 20,
        "rounds": 3,
        "bare_calls": 5,
        "numpy_iterations": 2,
        "check_pairs": 4000,
    },
}

SIZES = {
    "full": {
        "batch": 8192,
        "jax_repeats": 30,
        "loop_repeats": 6,
        "loop_seconds_per_repeat": 1.5,
        "vectorised_repeats": 9,
    },
    "quick": {
        "batch": 2048,
        "jax_repeats": 5,
        "loop_repeats": 3,
        "loop_seconds_per_repeat": 0.4,
        "vectorised_repeats": 3,
    },
}


# -- NumPy baselines, written independently of zopg ------------------------------------------


def numpy_gridworld(params) -> dict:
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


def numpy_loop_rollouts(rng: np.random.Generator, world: dict, probs: np.ndarray, num: int):
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


def numpy_vectorised_rollouts(rng: np.random.Generator, world: dict, probs: np.ndarray, num: int):
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


NUMPY_ROLLOUTS.update(loop=numpy_loop_rollouts, vectorised=numpy_vectorised_rollouts)


def numpy_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax: the action probabilities of a tabular policy."""
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def numpy_preference_differences(
    rng, world: dict, logits_1, logits_0, settings: dict, style: str = "vectorised"
):
    """Δ̂ of N fresh pairs (τ_1 from logits_1, τ_0 from logits_0) from M Bradley–Terry votes each."""
    n, m, r_max = settings["num_pairs"], settings["num_queries"], settings["r_max"]
    rollouts = NUMPY_ROLLOUTS[style]
    return_1 = rollouts(rng, world, numpy_softmax(logits_1), n)[2].sum(axis=1)
    return_0 = rollouts(rng, world, numpy_softmax(logits_0), n)[2].sum(axis=1)
    p_first = 1.0 / (1.0 + np.exp(return_0 - return_1))  # BT with scale 1 on the true returns
    p_hat = (rng.random((n, m)) < p_first[:, None]).mean(axis=1)
    high = 1.0 / (1.0 + math.exp(-r_max))
    p_hat = np.clip(p_hat, 1.0 - high, high)  # trim to [σ(−r_max), σ(r_max)]
    return np.log(p_hat) - np.log1p(-p_hat)  # σ⁻¹ = logit


def numpy_zpg_step(rng, world: dict, logits: np.ndarray, settings: dict, style: str):
    """One ZPG iteration: sphere direction, N pairs current vs perturbed, ĝ, SGD ascent."""
    mu, dim = settings["mu"], logits.size
    z = rng.standard_normal(dim)
    v = (z / np.linalg.norm(z)).reshape(logits.shape)
    delta = numpy_preference_differences(rng, world, logits + mu * v, logits, settings, style)
    gradient = (dim / mu) * delta.mean() * v
    return logits + settings["step_size"] * gradient


# -- measurement --------------------------------------------------------------------------------


def mean_check(returns, exact: float) -> dict:
    """Monte Carlo mean vs the exact value, in standard errors."""
    returns = np.asarray(returns, dtype=np.float64)
    mean = float(returns.mean())
    se = float(returns.std(ddof=1) / math.sqrt(returns.size))
    # A tiny absolute slack keeps a zero-variance case (e.g. slip 0, deterministic policy) sane.
    ok = abs(mean - exact) <= TOLERANCE_SE * se + 1e-6
    z = (mean - exact) / se if se > 0 else 0.0
    return {"n": int(returns.size), "mean": mean, "se": se, "z": z, "agrees": bool(ok)}


def measure_jax(key, policy, theta, env, params, size: dict) -> tuple[dict, np.ndarray]:
    batch = size["batch"]
    start = time.perf_counter()
    # Compile ahead of time so compile cost is reported separately and never enters a repeat.
    compiled = rollout_batch.lower(key, policy, theta, env, params, batch).compile()
    compile_s = time.perf_counter() - start
    keys = jax.random.split(key, size["jax_repeats"] + 1)
    kept = {}

    def run(i):
        traj = compiled(keys[i], theta, params)  # i = -1 is the untimed warm-up call
        if i == -1:
            kept["traj"] = traj
        return traj

    times = _report.time_repeats(run, size["jax_repeats"], warmup=1)
    result = {"compile_s": compile_s, "trajectories": batch}
    result.update(_report.rate_summary(times, batch * params.horizon))
    return result, np.asarray(masked_return(kept["traj"]))


def measure_numpy_loop(rng, world, probs, size: dict) -> tuple[dict, np.ndarray]:
    """Run whole trajectories until each repeat's time budget is spent; the rate is per repeat."""
    budget = size["loop_seconds_per_repeat"]
    chunk = 32  # check the clock every few trajectories, not every one
    rates, trajectories, returns = [], [], []
    for _ in range(size["loop_repeats"]):
        done, start = 0, time.perf_counter()
        while True:
            _, _, reward, _ = numpy_loop_rollouts(rng, world, probs, chunk)
            returns.append(reward.sum(axis=1))
            done += chunk
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                break
        rates.append(done * world["horizon"] / elapsed)
        trajectories.append(done)
    return {
        "trajectories_per_repeat": trajectories,
        "steps_per_s": float(np.median(rates)),
        "steps_per_s_all": rates,
    }, np.concatenate(returns)


def measure_numpy_vectorised(rng, world, probs, size: dict) -> tuple[dict, np.ndarray]:
    batch = size["batch"]
    kept = {}

    def run(i):
        out = numpy_vectorised_rollouts(rng, world, probs, batch)
        if i == -1:
            kept["reward"] = out[2]
        return out

    times = _report.time_repeats(run, size["vectorised_repeats"], warmup=1)
    result = {"trajectories": batch}
    result.update(_report.rate_summary(times, batch * world["horizon"]))
    return result, kept["reward"].sum(axis=1)


def gridworld_rollouts(quick: bool) -> dict:
    """JAX GridWorld rollouts vs the NumPy loop (target) and the vectorised NumPy baseline."""
    size = SIZES["quick" if quick else "full"]
    key = jax.random.key(0)
    rng = np.random.default_rng(0)
    per_env = {}
    for env_id in GRIDWORLD_ENVS:
        env, params = zopg.envs.make(env_id)
        policy = zopg.policies.make_policy("tabular", env, params)
        num_states = env.num_states(params)
        key, theta_key, rollout_key = jax.random.split(key, 3)
        theta = {"logits": LOGIT_SCALE * jax.random.normal(theta_key, (num_states, 4))}
        probs_jax = policy.action_probs(theta, jnp.arange(num_states))
        exact = float(zopg.exact.policy_value(env.tabular_model(params), probs_jax))
        probs = np.asarray(probs_jax, dtype=np.float64)
        probs /= probs.sum(axis=1, keepdims=True)  # float32 softmax rows may miss 1 by an ulp
        world = numpy_gridworld(params)

        jax_result, jax_returns = measure_jax(rollout_key, policy, theta, env, params, size)
        loop_result, loop_returns = measure_numpy_loop(rng, world, probs, size)
        vec_result, vec_returns = measure_numpy_vectorised(rng, world, probs, size)
        checks = {
            "exact_value": exact,
            "jax": mean_check(jax_returns, exact),
            "numpy_loop": mean_check(loop_returns, exact),
            "numpy_vectorised": mean_check(vec_returns, exact),
        }
        for name in ("jax", "numpy_loop", "numpy_vectorised"):
            c = checks[name]
            if not c["agrees"]:
                print(
                    f"WARNING: {env_id} {name} mean return {c['mean']:.4f} differs from the exact "
                    f"value {exact:.4f} by {c['z']:.1f} standard errors (> {TOLERANCE_SE})",
                    file=sys.stderr,
                )
        jax_rate = jax_result["steps_per_s"]
        per_env[env_id] = {
            "horizon": params.horizon,
            "slip": float(params.slip),
            "jax": jax_result,
            "numpy_loop": loop_result,
            "numpy_vectorised": vec_result,
            "ratio_jax_over_numpy_loop": jax_rate / loop_result["steps_per_s"],
            "ratio_jax_over_numpy_vectorised": jax_rate / vec_result["steps_per_s"],
            "mean_return_check": checks,
        }
    worst = min(r["ratio_jax_over_numpy_loop"] for r in per_env.values())
    return {
        "description": "env steps/s of fixed-horizon GridWorld rollouts with a tabular softmax "
        "policy (random logits); steps = trajectories x horizon; compile time excluded",
        "config": {**size, "envs": list(GRIDWORLD_ENVS), "logit_scale": LOGIT_SCALE},
        "envs": per_env,
        "target": _report.target("ratio_jax_over_numpy_loop (worst env)", worst, TARGET_RATIO),
        "checks_agree": all(
            c["agrees"]
            for r in per_env.values()
            for c in r["mean_return_check"].values()
            if isinstance(c, dict)
        ),
    }


def print_gridworld(result: dict) -> None:
    print(
        f"{'env':22} {'jax steps/s':>13} {'np loop':>11} {'np vec':>11} {'x loop':>8} "
        f"{'x vec':>7} {'compile':>8}  exact / jax / loop mean return"
    )
    for env_id, r in result["envs"].items():
        c = r["mean_return_check"]
        print(
            f"{env_id:22} {r['jax']['steps_per_s']:13.3e} {r['numpy_loop']['steps_per_s']:11.3e} "
            f"{r['numpy_vectorised']['steps_per_s']:11.3e} "
            f"{r['ratio_jax_over_numpy_loop']:8.1f} {r['ratio_jax_over_numpy_vectorised']:7.2f} "
            f"{r['jax']['compile_s']:7.2f}s  {c['exact_value']:.4f} / {c['jax']['mean']:.4f} / "
            f"{c['numpy_loop']['mean']:.4f}"
        )
    t = result["target"]
    print(
        f"target: jax/numpy_loop >= {t['min_ratio']:.0f}x -> {t['value']:.1f}x "
        f"({'met' if t['met'] else 'NOT met'}); mean-return checks "
        f"{'agree' if result['checks_agree'] else 'DISAGREE'}"
    )


def zpg_problem():
    env, params = zopg.envs.make(ZPG_ENV)
    policy = zopg.policies.make_policy("tabular", env, params)
    oracle = zopg.preferences.Oracle(zopg.preferences.make_link("bradley-terry"))
    return env, params, policy, oracle


def zpg_delta_check(size: dict) -> dict:
    """Mean Δ̂ of NumPy vs JAX at θ = uniform for one fixed direction (two-sample z-score).

    Both estimate the same (link- and trimming-biased) quantity, so they must agree with each
    other; the exact V difference is recorded for context only.
    """
    env, params, policy, oracle = zpg_problem()
    settings = {**ZPG_SETTINGS, "num_pairs": size["check_pairs"]}
    config = ZPGConfig(**settings)
    problem = Problem.build(env, policy, oracle, params)
    rng = np.random.default_rng(1)
    z = rng.standard_normal(problem.dim)
    theta_1 = settings["mu"] * z / np.linalg.norm(z)  # θ_0 = 0: the uniform policy
    theta_0 = np.zeros(problem.dim)
    difference = jax.jit(make_difference_fn(config, problem), static_argnums=3)
    jax_delta, _ = difference(
        jax.random.key(2),
        theta_1.astype(np.float32),
        theta_0.astype(np.float32),
        settings["num_pairs"],
    )
    jax_delta = np.asarray(jax_delta, dtype=np.float64)
    shape = (env.num_states(params), env.num_actions)
    np_delta = numpy_preference_differences(
        rng, numpy_gridworld(params), theta_1.reshape(shape), theta_0.reshape(shape), settings
    )
    se = [d.std(ddof=1) / math.sqrt(d.size) for d in (jax_delta, np_delta)]
    diff = np_delta.mean() - jax_delta.mean()
    z_score = diff / math.hypot(*se) if any(se) else 0.0
    exact = problem.exact_value(jnp.asarray(theta_1, jnp.float32)) - problem.exact_value(
        jnp.asarray(theta_0, jnp.float32)
    )
    return {
        "pairs": settings["num_pairs"],
        "jax_mean_delta_hat": float(jax_delta.mean()),
        "jax_se": float(se[0]),
        "numpy_mean_delta_hat": float(np_delta.mean()),
        "numpy_se": float(se[1]),
        "z": float(z_score),
        "tolerance_se": TOLERANCE_SE,
        "agrees": bool(abs(z_score) <= TOLERANCE_SE),
        "exact_value_difference": float(exact),
    }


def zpg_training(quick: bool) -> dict:
    """JAX ZPG training vs bare rollouts of the same size (target) and a NumPy ZPG (target)."""
    size = ZPG_SIZES["quick" if quick else "full"]
    seeds, iterations = size["seeds"], size["iterations"]
    n, m = ZPG_SETTINGS["num_pairs"], ZPG_SETTINGS["num_queries"]
    env, params, policy, oracle = zpg_problem()
    horizon = env.horizon(params)
    train = make_train(ZPGConfig(num_iterations=iterations, **ZPG_SETTINGS), env, policy, oracle)
    key_runs, key_bare, key_init = jax.random.split(jax.random.key(0), 3)
    run_keys = jax.random.split(key_runs, (size["rounds"] + 1, seeds))

    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(train)).lower(run_keys[0]).compile()
    compile_s = time.perf_counter() - start
    # Bare rollouts: as many trajectories per call as one ZPG iteration rolls out over all seeds.
    theta = policy.init(key_init)  # the uniform policy ZPG starts from
    bare_batch = 2 * n * seeds
    start = time.perf_counter()
    bare = rollout_batch.lower(key_bare, policy, theta, env, params, bare_batch).compile()
    bare_compile_s = time.perf_counter() - start
    bare_keys = jax.random.split(key_bare, (size["rounds"] + 1, size["bare_calls"]))

    world = numpy_gridworld(params)
    rng = np.random.default_rng(0)
    uniform = np.zeros((env.num_states(params), env.num_actions))
    state = {style: uniform for style in NUMPY_ZPG_STYLES}
    kept = {}

    def run_jax(i):  # i = -1 is the warm-up round
        kept["metrics"] = compiled(run_keys[i + 1])[1]
        return kept["metrics"]

    def run_bare(i):
        return [bare(k, theta, params) for k in bare_keys[i + 1]]

    def numpy_runner(style):
        def run(i):
            for _ in range(size["numpy_iterations"]):
                state[style] = numpy_zpg_step(rng, world, state[style], ZPG_SETTINGS, style)

        return run

    runners = {"jax": run_jax, "bare": run_bare}
    runners.update({f"numpy_{style}": numpy_runner(style) for style in NUMPY_ZPG_STYLES})
    times = _report.time_interleaved(runners, size["rounds"])
    # The run's own budget counters (cumulative per seed), summed over seeds.
    steps = int(np.asarray(kept["metrics"]["budget/env_steps"])[:, -1].sum())
    queries = int(np.asarray(kept["metrics"]["budget/queries"])[:, -1].sum())
    expected = seeds * iterations * 2 * n * horizon
    if steps != expected or queries != seeds * iterations * n * m:
        print(
            f"WARNING: ZPG budget counters ({steps} steps, {queries} queries) differ from "
            f"seeds x T x (2NH, NM) = ({expected}, {seeds * iterations * n * m})",
            file=sys.stderr,
        )

    jax_result = {"compile_s": compile_s, "seeds": seeds, "iterations": iterations}
    jax_result.update(_report.rate_summary(times["jax"], steps))
    jax_result["queries_per_repeat"] = queries
    jax_result["queries_per_s"] = queries / jax_result["median_s"]
    jax_result["seed_iterations_per_s"] = seeds * iterations / jax_result["median_s"]
    bare_result = {
        "compile_s": bare_compile_s,
        "trajectories_per_call": bare_batch,
        "calls_per_repeat": size["bare_calls"],
    }
    bare_result.update(
        _report.rate_summary(times["bare"], size["bare_calls"] * bare_batch * horizon)
    )
    np_iters = size["numpy_iterations"]
    numpy_results = {}
    for style, description in NUMPY_ZPG_STYLES.items():
        result = {"style": description, "iterations_per_repeat": np_iters}
        result.update(_report.rate_summary(times[f"numpy_{style}"], np_iters * 2 * n * horizon))
        result["iterations_per_s"] = np_iters / result["median_s"]
        result["queries_per_s"] = np_iters * n * m / result["median_s"]
        result["final_logits_finite"] = bool(np.isfinite(state[style]).all())
        numpy_results[style] = result

    over_bare = jax_result["steps_per_s"] / bare_result["steps_per_s"]
    # Both do 2NH env steps and NM queries per (seed-)iteration, so these are also ratios of
    # JAX seed-iterations/s to NumPy iterations/s.
    over_numpy = jax_result["steps_per_s"] / numpy_results["loop"]["steps_per_s"]
    over_vectorised = jax_result["steps_per_s"] / numpy_results["vectorised"]["steps_per_s"]
    return {
        "description": "one full ZPG training run (seeds vmapped, one compiled call) vs bare "
        "rollouts of the same trajectories per iteration and a NumPy ZPG; steps = env steps "
        "from the run's budget counters; medians over interleaved rounds; compile excluded; "
        "the JAX run's wall time includes its per-iteration exact-value metrics (tabular env)",
        "config": {
            **size,
            "env": ZPG_ENV,
            "horizon": horizon,
            **ZPG_SETTINGS,
            "link": "bradley-terry",
            "direction": "sphere",
            "optimizer": "sgd",
        },
        "jax_zpg": jax_result,
        "bare_rollouts": bare_result,
        "numpy_zpg": numpy_results["loop"],
        "numpy_zpg_vectorised": numpy_results["vectorised"],
        "ratio_zpg_over_bare_rollouts": over_bare,
        "ratio_jax_over_numpy_zpg": over_numpy,
        "ratio_jax_over_numpy_zpg_vectorised": over_vectorised,
        "targets": {
            "zpg_over_bare_rollouts": _report.target(
                "ratio_zpg_over_bare_rollouts (env steps/s)", over_bare, ZPG_TARGET_OVER_BARE
            ),
            "jax_over_numpy_zpg": _report.target(
                "ratio_jax_over_numpy_zpg (env steps/s)", over_numpy, ZPG_TARGET_OVER_NUMPY
            ),
        },
        "delta_hat_check": zpg_delta_check(size),
    }


def print_zpg(result: dict) -> None:
    j, b = result["jax_zpg"], result["bare_rollouts"]
    print(f"{'':26} {'iter/s':>9} {'env steps/s':>12} {'queries/s':>10} {'compile':>8}")
    print(
        f"{'jax zpg (per seed-iter)':26} {j['seed_iterations_per_s']:9.1f} "
        f"{j['steps_per_s']:12.3e} {j['queries_per_s']:10.3e} {j['compile_s']:7.2f}s"
    )
    print(f"{'bare rollouts':26} {'':9} {b['steps_per_s']:12.3e} {'':10} {b['compile_s']:7.2f}s")
    for name, n in (
        ("numpy zpg (loop)", result["numpy_zpg"]),
        ("numpy zpg (vectorised)", result["numpy_zpg_vectorised"]),
    ):
        print(
            f"{name:26} {n['iterations_per_s']:9.1f} "
            f"{n['steps_per_s']:12.3e} {n['queries_per_s']:10.3e}"
        )
    print(
        f"jax zpg / numpy zpg (vectorised), reported only: "
        f"{result['ratio_jax_over_numpy_zpg_vectorised']:.2f}x"
    )
    for t in result["targets"].values():
        print(
            f"target: {t['metric']} >= {t['min_ratio']:g} -> {t['value']:.2f} "
            f"({'met' if t['met'] else 'NOT met'})"
        )
    c = result["delta_hat_check"]
    print(
        f"mean Δ̂ at uniform θ, fixed v ({c['pairs']} pairs): numpy {c['numpy_mean_delta_hat']:.4f}"
        f" ± {c['numpy_se']:.4f}, jax {c['jax_mean_delta_hat']:.4f} ± {c['jax_se']:.4f}, "
        f"z = {c['z']:.2f} ({'agree' if c['agrees'] else 'DISAGREE'}); exact ΔV "
        f"{c['exact_value_difference']:.4f}"
    )


# -- ZPG on gymnax CartPole -------------------------------------------------------------------
# The control probe's CartPole ZPG (benchmarks/control_probe.py: MLP (16,), Bradley-Terry teacher
# with scale 20, trimming at r_max = 60, two-sided sphere directions, Adam) with N = 1024 pairs:
# one direction per iteration, so 2N = 2048 trajectories of H = 500 steps per iteration.
CARTPOLE_ENV = "gymnax/CartPole-v1"
CARTPOLE_HIDDEN = (16,)
CARTPOLE_SCALE = 20.0
CARTPOLE_SETTINGS = {
    "num_pairs": 1024,
    "num_queries": 5,
    "mu": 1.0,
    "step_size": 0.05,
    "two_sided": True,
    "r_max": 60.0,
    "optimizer": "adam",
}
CARTPOLE_SIZES = {
    # One seed. Rounds interleave one training run of `iterations` and as many bare calls.
    "full": {"iterations": 10, "rounds": 7, "check_iterations": 2},
    "quick": {"iterations": 2, "rounds": 2, "check_iterations": 1},
}


def cartpole_problem(oracle_utility=None):
    env, params = zopg.envs.make(CARTPOLE_ENV)
    policy = zopg.policies.make_policy("mlp", env, params, hidden_sizes=CARTPOLE_HIDDEN)
    link = zopg.preferences.BradleyTerry(scale=CARTPOLE_SCALE)
    oracle = zopg.preferences.Oracle(link=link, utility=oracle_utility)
    return env, params, policy, oracle


def cartpole_step_check(iterations: int) -> dict:
    """The run's env-step counter vs the valid steps of the trajectories its oracle was shown.

    A separate short, untimed run: its oracle's utility is the masked return (as by default) but
    also hands each batch's valid-step count to the host, so the counter is checked against
    trajectories the algorithm really compared rather than against its own arithmetic.
    """
    shown = []

    def recording_return(traj):
        jax.debug.callback(lambda n: shown.append(int(n)), jnp.sum(traj.valid))
        return masked_return(traj)

    env, params, policy, oracle = cartpole_problem(recording_return)
    config = ZPGConfig(num_iterations=iterations, **CARTPOLE_SETTINGS)
    _, metrics = make_train(config, env, policy, oracle, params)(jax.random.key(1))
    counted = int(jax.block_until_ready(metrics["budget/env_steps"])[-1])
    jax.effects_barrier()  # every callback has run
    return {
        "iterations": iterations,
        "budget_env_steps": counted,
        "valid_steps_shown_to_oracle": sum(shown),
        "batches_shown_to_oracle": len(shown),
        "agrees": counted == sum(shown) and len(shown) == 2 * iterations,
    }


def cartpole_zpg(quick: bool) -> dict:
    """One ZPG training run on CartPole (N = 1024) vs bare rollouts of the same policy and size."""
    size = CARTPOLE_SIZES["quick" if quick else "full"]
    iterations, rounds = size["iterations"], size["rounds"]
    n, m = CARTPOLE_SETTINGS["num_pairs"], CARTPOLE_SETTINGS["num_queries"]
    env, params, policy, oracle = cartpole_problem()
    horizon = env.horizon(params)
    config = ZPGConfig(num_iterations=iterations, **CARTPOLE_SETTINGS)
    trainer = make_trainer(config, env, policy, oracle, params)
    key_runs, key_bare = jax.random.split(jax.random.key(0))
    run_keys = jax.random.split(key_runs, rounds + 1)

    start = time.perf_counter()
    compiled = trainer.jitted_train().lower(run_keys[0]).compile()
    compile_s = time.perf_counter() - start
    # Bare rollouts of the policy ZPG starts from, one call per iteration with as many
    # trajectories as the iteration rolls out (ZPG rolls them out as two batches of N).
    trajectories = 2 * n
    theta = trainer.final_params(trainer.init(run_keys[0]))
    bare_keys = jax.random.split(key_bare, (rounds + 1, iterations))

    def rollout_trajectories(key, theta, params):
        return rollout_batch(key, policy, theta, env, params, trajectories)

    def rollout_as_zpg(key, theta, params):
        # ZPG's own rollout shapes, two batches of N (on this CPU a batch of 1024 runs about
        # twice as many steps/s as one of 2048), keeping what ZPG keeps: returns for the oracle
        # and valid steps for the counter (XLA drops the unused per-step outputs, as in ZPG).
        pair = [rollout_batch(k, policy, theta, env, params, n) for k in jax.random.split(key)]
        return [masked_return(traj) for traj in pair], sum(jnp.sum(traj.valid) for traj in pair)

    bare, bare_compile_s = {}, {}
    for name, fn in (("trajectories", rollout_trajectories), ("as_zpg", rollout_as_zpg)):
        start = time.perf_counter()
        bare[name] = jax.jit(fn).lower(key_bare, theta, params).compile()
        bare_compile_s[name] = time.perf_counter() - start
    valid, kept = {name: {} for name in ("zpg", *bare)}, {}

    def run_zpg(i):  # i = -1 is the warm-up round
        kept["metrics"] = metrics = compiled(run_keys[i + 1])[1]
        valid["zpg"][i] = metrics["budget/env_steps"][-1]
        return metrics

    def bare_runner(name):
        def run(i):
            out = [bare[name](k, theta, params) for k in bare_keys[i + 1]]
            # Valid steps are summed after timing; only the mask (or count) is kept.
            valid[name][i] = [o.valid if name == "trajectories" else o[1] for o in out]
            return out

        return run

    runners = {"zpg": run_zpg, **{f"bare_{name}": bare_runner(name) for name in bare}}
    times = _report.time_interleaved(runners, rounds)

    # Every step of the fixed horizon is simulated (steps after termination are masked, not
    # skipped), so "env steps" are trajectories x H on every side; valid steps (the budget
    # counter's unit) are reported beside them and depend on how long the episodes last.
    steps = iterations * trajectories * horizon
    counters = budget_counters(kept["metrics"], iterations, n, m, horizon)  # the last round
    step_check = cartpole_step_check(size["check_iterations"])
    if not (counters["agree"] and step_check["agrees"]):
        print(
            f"WARNING: CartPole ZPG budget counters differ from the expected numbers: "
            f"{counters}; {step_check}",
            file=sys.stderr,
        )

    zpg_result = {"compile_s": compile_s, "seeds": 1, "iterations": iterations}
    zpg_result.update(_report.rate_summary(times["zpg"], steps))
    zpg_valid = [int(valid["zpg"][i]) for i in range(rounds)]
    zpg_result.update(valid_rate(zpg_valid, times["zpg"]))
    zpg_result["iterations_per_s"] = iterations / zpg_result["median_s"]
    zpg_result["queries_per_s"] = iterations * n * m / zpg_result["median_s"]
    bare_results, ratios = {}, {}
    for name in bare:
        result = {
            "compile_s": bare_compile_s[name],
            "trajectories_per_call": trajectories,
            "calls_per_repeat": iterations,
        }
        result.update(_report.rate_summary(times[f"bare_{name}"], steps))
        counts = [int(sum(np.sum(v) for v in valid[name][i])) for i in range(rounds)]
        result.update(valid_rate(counts, times[f"bare_{name}"]))
        bare_results[name] = result
        ratios[name] = zpg_result["steps_per_s"] / result["steps_per_s"]
    bare_results["trajectories"]["calls"] = "rollout_batch of 2N, returning the full Trajectory"
    bare_results["as_zpg"]["calls"] = (
        "two rollout_batch of N (ZPG's batch shapes), returning only the masked returns and "
        "the valid-step count (what ZPG uses of its rollouts)"
    )
    return {
        "description": "one ZPG training run on gymnax CartPole-v1 (1 seed, T iterations in one "
        "compiled call) vs bare rollout_batch calls of the same MLP policy at ZPG's initial "
        "parameters, one call of 2N trajectories per iteration, either as one batch returning "
        "the full Trajectory or as ZPG's two batches of N keeping what ZPG keeps; env steps = "
        "trajectories x H (the fixed horizon is always simulated, steps after termination are "
        "masked); valid steps = the budget counter's unit; medians over interleaved rounds; "
        "compile excluded",
        "config": {
            **size,
            "env": CARTPOLE_ENV,
            "horizon": horizon,
            **CARTPOLE_SETTINGS,
            "direction": "sphere",
            "seeds": 1,
            "policy": f"mlp hidden={list(CARTPOLE_HIDDEN)} (d = {num_params(theta)})",
            "oracle": f"BradleyTerry(scale={CARTPOLE_SCALE}), teacher without imperfections",
            "trajectories_per_iteration": trajectories,
            "env_steps_per_iteration": trajectories * horizon,
            "queries_per_iteration": n * m,
        },
        "zpg": zpg_result,
        "bare_rollouts": bare_results["trajectories"],
        "bare_rollouts_as_zpg": bare_results["as_zpg"],
        "ratio_zpg_over_bare_rollouts": ratios["trajectories"],
        "ratio_zpg_over_bare_rollouts_as_zpg": ratios["as_zpg"],
        "targets": {
            "zpg_over_bare_rollouts": _report.target(
                "ratio_zpg_over_bare_rollouts (env steps/s)",
                ratios["trajectories"],
                ZPG_TARGET_OVER_BARE,
            ),
            "zpg_over_bare_rollouts_as_zpg": _report.target(
                "ratio_zpg_over_bare_rollouts_as_zpg (env steps/s)",
                ratios["as_zpg"],
                ZPG_TARGET_OVER_BARE,
            ),
        },
        "budget_counters": counters,
        "env_step_counter_check": step_check,
    }


def budget_counters(metrics, iterations: int, n: int, m: int, horizon: int) -> dict:
    """A run's cumulative counters after each iteration vs N M queries and 2N trajectories each.

    Valid env steps depend on the episodes, so per iteration they are only bounded here, by 2N
    (every episode lasts at least one step) and 2N H; cartpole_step_check pins them exactly.
    """
    queries, trajectories, env_steps = (
        np.diff(np.asarray(metrics[f"budget/{name}"]), prepend=0)
        for name in ("queries", "trajectories", "env_steps")
    )
    agree = (
        bool(np.all(queries == n * m))
        and bool(np.all(trajectories == 2 * n))
        and bool(np.all((env_steps >= 2 * n) & (env_steps <= 2 * n * horizon)))
    )
    return {
        "queries": int(queries.sum()),
        "trajectories": int(trajectories.sum()),
        "env_steps_valid": int(env_steps.sum()),
        "expected_per_iteration": {
            "queries": n * m,
            "trajectories": 2 * n,
            "env_steps_valid": f"{2 * n}..{2 * n * horizon} (2N..2NH)",
        },
        "iterations": iterations,
        "agree": agree,
    }


def valid_rate(valid_steps: list[int], times: list[float]) -> dict:
    """Valid (unmasked) steps per repeat and their rate; they differ between repeats."""
    rates = [v / t for v, t in zip(valid_steps, times, strict=True)]
    return {
        "valid_steps_per_repeat": valid_steps,
        "valid_steps_per_s": float(np.median(rates)),
        "valid_steps_per_s_all": rates,
    }


def print_cartpole(result: dict) -> None:
    c = result["config"]
    print(
        f"N = {c['num_pairs']} pairs, M = {c['num_queries']}, T = {c['iterations']}, 1 seed: "
        f"{c['trajectories_per_iteration']} trajectories x H = {c['horizon']} per iteration"
    )
    print(f"{'':22} {'env steps/s':>12} {'valid steps/s':>14} {'iter/s':>7} {'compile':>8}")
    for name, key in (
        ("zpg", "zpg"),
        ("bare rollouts", "bare_rollouts"),
        ("bare rollouts as zpg", "bare_rollouts_as_zpg"),
    ):
        r = result[key]
        per_iteration = f"{r['iterations_per_s']:7.2f}" if "iterations_per_s" in r else ""
        print(
            f"{name:22} {r['steps_per_s']:12.3e} {r['valid_steps_per_s']:14.3e} "
            f"{per_iteration:>7} {r['compile_s']:7.2f}s"
        )
    for t in result["targets"].values():
        print(
            f"target: {t['metric']} >= {t['min_ratio']:g} -> {t['value']:.2f} "
            f"({'met' if t['met'] else 'NOT met'})"
        )
    b, s = result["budget_counters"], result["env_step_counter_check"]
    print(
        f"budget counters ({b['queries']} queries, {b['trajectories']} trajectories, "
        f"{b['env_steps_valid']} valid steps) {'agree' if b['agree'] else 'DISAGREE'}; "
        f"env-step counter {s['budget_env_steps']} vs {s['valid_steps_shown_to_oracle']} valid "
        f"steps shown to the oracle ({'agree' if s['agrees'] else 'DISAGREE'})"
    )


# Later benchmarks add a (measure, print) pair here; `--only NAME` runs just that section.
SECTIONS = {
    "gridworld_rollouts": (gridworld_rollouts, print_gridworld),
    "zpg_training": (zpg_training, print_zpg),
    "cartpole_zpg": (cartpole_zpg, print_cartpole),
}


def section_run(name: str, quick: bool, runtime_s: float, load_before: float, env: dict) -> dict:
    """Where and when one section was measured; it travels with the section when files merge."""
    flags = " --quick" if quick else ""
    return {
        "timestamp": _report.timestamp(),
        "runtime_s": runtime_s,
        "quick": quick,
        "command": f".venv/bin/python benchmarks/throughput.py --only {name}{flags}",
        # The CPU is shared: other jobs' load inflates wall times, so it is recorded with them.
        "load_average_1m_before_after": [load_before, os.getloadavg()[0]],
        **env,
    }


ENV_KEYS = ("device", "host", "versions")


def differs(a, b) -> bool:
    """True when a value recorded in both differs (a key only one side records does not count)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return any(differs(a[key], b[key]) for key in a.keys() & b.keys())
    return a != b


def read_previous(path: Path) -> dict | None:
    """The existing report that --only merges into (None if there is none), checked up front."""
    if not path.exists():
        return None
    try:
        old = store.read_json(path)
    except ValueError as err:
        raise SystemExit(
            f"error: {path} is not valid JSON ({err}); move it aside or fix it"
        ) from None
    if not isinstance(old, dict) or old.get("benchmark") != "throughput":
        raise SystemExit(f"error: {path} is not a throughput report; refusing to merge into it")
    return old


def merge_report(old: dict | None, new: dict) -> dict:
    """`new` (sections just run) over `old` (the file as it was): other sections are kept.

    The top level describes the latest run. Each section keeps its own `run` record; sections
    written before per-section records existed get one from the old file's top level. Sections
    whose device, host or versions differ from the top level are listed in `mixed_environment`,
    and sections measured at --quick sizes in `quick_sections`.
    """
    sections = {}
    if old is not None:
        inherited = {key: old.get(key) for key in (*ENV_KEYS, "git", "timestamp", "quick")}
        for name, section in old.get("sections", {}).items():
            if "run" not in section:
                section = {**section, "run": {**inherited, "runtime_s": None, "inherited": True}}
            sections[name] = section
    sections.update(new["sections"])
    merged = {**new, "sections": sections}
    merged["mixed_environment"] = sorted(
        name
        for name, section in sections.items()
        if any(differs(section["run"].get(key), new[key]) for key in ENV_KEYS)
    )
    merged["quick_sections"] = sorted(
        name for name, section in sections.items() if section["run"].get("quick")
    )
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, about 90 s in all")
    parser.add_argument("--out", type=Path, default=_report.REPO_ROOT / "results/throughput.json")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable); the others already in --out are kept",
    )
    args = parser.parse_args(argv)
    # A full run replaces the file; --only replaces just its sections (read first, so a bad file
    # fails before minutes of measuring).
    old = read_previous(args.out) if args.only else None
    start = time.perf_counter()
    env = _report.environment()
    report = {
        "benchmark": "throughput",
        "timestamp": _report.timestamp(),
        "quick": args.quick,
        **env,
        "sections_run": list(dict.fromkeys(args.only or SECTIONS)),
        "sections": {},
    }
    device = report["device"]
    print(
        f"device: {device['platform']} ({device['device_kind']}) x{device['num_devices']}, "
        f"jax {report['versions']['jax']}, {report['host']['cpu_count']} CPUs"
    )
    for name in report["sections_run"]:
        measure, show = SECTIONS[name]
        print(f"\n== {name} ==")
        section_start, load_before = time.perf_counter(), os.getloadavg()[0]
        result = measure(args.quick)
        runtime_s = time.perf_counter() - section_start
        result["run"] = section_run(name, args.quick, runtime_s, load_before, env)
        report["sections"][name] = result
        show(result)
    report["runtime_s"] = time.perf_counter() - start
    report = merge_report(old, report)
    path = _report.write_json_atomic(args.out, report)
    print(f"\nwrote {path} in {report['runtime_s']:.1f} s")
    if report["mixed_environment"]:
        print(
            f"note: sections {report['mixed_environment']} were measured on another device, "
            "host or versions; see each section's `run`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
