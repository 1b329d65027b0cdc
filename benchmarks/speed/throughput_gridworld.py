"""Throughput section `gridworld_rollouts`: JAX GridWorld rollouts against the NumPy loop (the
target baseline) and vectorised NumPy, with every mean return checked against the exact value."""

from __future__ import annotations

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import zopg.envs
import zopg.exact
import zopg.policies
from benchmarks.speed import throughput_numpy, timing
from zopg.rollout import masked_return, rollout_batch

TARGET_RATIO = 100.0  # JAX rollouts must be at least this many times the NumPy loop
GRIDWORLD_ENVS = ("gridworld/cliff-4x6", "gridworld/open-5x5")
LOGIT_SCALE = 1.5  # random, clearly non-uniform policy so the sampled actions matter

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


def mean_check(returns, exact: float) -> dict:
    """Monte Carlo mean vs the exact value, in standard errors."""
    returns = np.asarray(returns, dtype=np.float64)
    mean = float(returns.mean())
    se = float(returns.std(ddof=1) / math.sqrt(returns.size))
    # A tiny absolute slack keeps a zero-variance case (e.g. slip 0, deterministic policy) sane.
    ok = abs(mean - exact) <= timing.TOLERANCE_SE * se + 1e-6
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

    times = timing.time_repeats(run, size["jax_repeats"], warmup=1)
    result = {"compile_s": compile_s, "trajectories": batch}
    result.update(timing.rate_summary(times, batch * params.horizon))
    return result, np.asarray(masked_return(kept["traj"]))


def measure_numpy_loop(rng, world, probs, size: dict) -> tuple[dict, np.ndarray]:
    """Run whole trajectories until each repeat's time budget is spent; the rate is per repeat."""
    budget = size["loop_seconds_per_repeat"]
    chunk = 32  # check the clock every few trajectories, not every one
    rates, trajectories, returns = [], [], []
    for _ in range(size["loop_repeats"]):
        done, start = 0, time.perf_counter()
        while True:
            _, _, reward, _ = throughput_numpy.loop_rollouts(rng, world, probs, chunk)
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
        out = throughput_numpy.vectorised_rollouts(rng, world, probs, batch)
        if i == -1:
            kept["reward"] = out[2]
        return out

    times = timing.time_repeats(run, size["vectorised_repeats"], warmup=1)
    result = {"trajectories": batch}
    result.update(timing.rate_summary(times, batch * world["horizon"]))
    return result, kept["reward"].sum(axis=1)


def gridworld_rollouts(quick: bool, size: dict | None = None) -> dict:
    """JAX GridWorld rollouts vs the NumPy loop (target) and the vectorised NumPy baseline.

    `size` (keys as in SIZES) replaces the table's sizes, e.g. larger batches on a GPU.
    """
    size = size or SIZES["quick" if quick else "full"]
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
        world = throughput_numpy.gridworld_tables(params)

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
                    f"value {exact:.4f} by {c['z']:.1f} standard errors (> {timing.TOLERANCE_SE})",
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
        "target": timing.target("ratio_jax_over_numpy_loop (worst env)", worst, TARGET_RATIO),
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
