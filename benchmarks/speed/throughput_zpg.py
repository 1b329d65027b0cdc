"""Throughput section `zpg_training`: a whole JAX ZPG training run on the GridWorld cliff against
bare rollouts of the same trajectories (target) and the NumPy ZPG of throughput_numpy (target)."""

from __future__ import annotations

import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import zopg.envs
import zopg.policies
import zopg.preferences
from benchmarks.speed import throughput_numpy, timing
from zopg.algorithms import ZPGConfig, make_training
from zopg.algorithms.base import Problem
from zopg.algorithms.zeroth_order import make_difference_fn
from zopg.rollout import rollout_batch

# ZPG training (science.md §3) on the cliff with N pairs and M queries per pair. Step size, mu
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
    "and time steps (throughput_numpy.loop_rollouts), votes vectorised",
    "vectorised": "vectorised: batch array ops over the 2N trajectories of an iteration and its "
    "N x M votes, a Python loop over the H time steps, one iteration (one seed) at a time",
}
ZPG_SIZES = {
    # rounds interleave one timed call of each measured function (see timing.time_interleaved)
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
    np_delta = throughput_numpy.preference_differences(
        rng,
        throughput_numpy.gridworld_tables(params),
        theta_1.reshape(shape),
        theta_0.reshape(shape),
        settings,
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
        "tolerance_se": timing.TOLERANCE_SE,
        "agrees": bool(abs(z_score) <= timing.TOLERANCE_SE),
        "exact_value_difference": float(exact),
    }


def zpg_training(quick: bool, size: dict | None = None) -> dict:
    """JAX ZPG training vs bare rollouts of the same size (target) and a NumPy ZPG (target).

    `size` (keys as in ZPG_SIZES) replaces the table's sizes, e.g. more seeds on a GPU.
    """
    size = size or ZPG_SIZES["quick" if quick else "full"]
    seeds, iterations = size["seeds"], size["iterations"]
    n, m = ZPG_SETTINGS["num_pairs"], ZPG_SETTINGS["num_queries"]
    env, params, policy, oracle = zpg_problem()
    horizon = env.horizon(params)
    config = ZPGConfig(num_iterations=iterations, **ZPG_SETTINGS)
    # Training alone (no probe, no evaluator): what a real run spends per iteration.
    training = make_training(config, env, policy, oracle, params)
    key_runs, key_bare, key_init = jax.random.split(jax.random.key(0), 3)
    run_keys = jax.random.split(key_runs, (size["rounds"] + 1, seeds))

    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(training.train)).lower(run_keys[0]).compile()
    compile_s = time.perf_counter() - start
    # Bare rollouts: as many trajectories per call as one ZPG iteration rolls out over all seeds.
    theta = policy.init(key_init)  # the uniform policy ZPG starts from
    bare_batch = 2 * n * seeds
    start = time.perf_counter()
    bare = rollout_batch.lower(key_bare, policy, theta, env, params, bare_batch).compile()
    bare_compile_s = time.perf_counter() - start
    bare_keys = jax.random.split(key_bare, (size["rounds"] + 1, size["bare_calls"]))

    world = throughput_numpy.gridworld_tables(params)
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
                state[style] = throughput_numpy.zpg_step(
                    rng, world, state[style], ZPG_SETTINGS, style
                )

        return run

    runners = {"jax": run_jax, "bare": run_bare}
    runners.update({f"numpy_{style}": numpy_runner(style) for style in NUMPY_ZPG_STYLES})
    times = timing.time_interleaved(runners, size["rounds"])
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
    jax_result.update(timing.rate_summary(times["jax"], steps))
    jax_result["queries_per_repeat"] = queries
    jax_result["queries_per_s"] = queries / jax_result["median_s"]
    jax_result["seed_iterations_per_s"] = seeds * iterations / jax_result["median_s"]
    bare_result = {
        "compile_s": bare_compile_s,
        "trajectories_per_call": bare_batch,
        "calls_per_repeat": size["bare_calls"],
    }
    bare_result.update(
        timing.rate_summary(times["bare"], size["bare_calls"] * bare_batch * horizon)
    )
    np_iters = size["numpy_iterations"]
    numpy_results = {}
    for style, description in NUMPY_ZPG_STYLES.items():
        result = {"style": description, "iterations_per_repeat": np_iters}
        result.update(timing.rate_summary(times[f"numpy_{style}"], np_iters * 2 * n * horizon))
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
        "the JAX run is training alone (no exact-value probe; exact values are the evaluator's, "
        "outside the training scan)",
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
            "zpg_over_bare_rollouts": timing.target(
                "ratio_zpg_over_bare_rollouts (env steps/s)", over_bare, ZPG_TARGET_OVER_BARE
            ),
            "jax_over_numpy_zpg": timing.target(
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
