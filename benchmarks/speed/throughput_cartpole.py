"""Throughput section `cartpole_zpg`: one ZPG training run on gymnax CartPole-v1 against bare
rollouts of the same policy, with its budget counters checked against what the oracle was shown."""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import zopg.envs
import zopg.policies
import zopg.preferences
from benchmarks.speed import timing
from zopg.algorithms import ZPGConfig, make_train, make_training
from zopg.policies import num_params
from zopg.rollout import masked_return, rollout_batch

# ZPG env steps/s must be at least this fraction of bare rollouts (as in zpg_training).
ZPG_TARGET_OVER_BARE = 0.5
# The control experiment's CartPole ZPG (benchmarks/control.toml, [methods.zpg]: MLP (16,),
# Bradley-Terry teacher with scale 20, trimming at r_max = 60, two-sided sphere directions, Adam)
# with N = 1024 pairs: one direction per iteration, so 2N = 2048 trajectories of H = 500 steps
# per iteration.
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


def cartpole_zpg(quick: bool, size: dict | None = None, settings: dict | None = None) -> dict:
    """One ZPG training run on CartPole (N = 1024) vs bare rollouts of the same policy and size.

    `size` (keys as in CARTPOLE_SIZES) replaces the table's sizes and `settings` updates
    CARTPOLE_SETTINGS, e.g. more pairs on a GPU; the step-counter check keeps the defaults.
    """
    size = size or CARTPOLE_SIZES["quick" if quick else "full"]
    settings = {**CARTPOLE_SETTINGS, **(settings or {})}
    iterations, rounds = size["iterations"], size["rounds"]
    n, m = settings["num_pairs"], settings["num_queries"]
    env, params, policy, oracle = cartpole_problem()
    horizon = env.horizon(params)
    config = ZPGConfig(num_iterations=iterations, **settings)
    training = make_training(config, env, policy, oracle, params)
    compiled, run_keys, key_bare, compile_s = timing.compile_training(training, rounds)
    # Bare rollouts of the policy ZPG starts from, one call per iteration with as many
    # trajectories as the iteration rolls out (ZPG rolls them out as two batches of N).
    trajectories = 2 * n
    theta = training.final_params(training.init(run_keys[0]))
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
    times = timing.time_interleaved(runners, rounds)

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
    zpg_result.update(timing.rate_summary(times["zpg"], steps))
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
        result.update(timing.rate_summary(times[f"bare_{name}"], steps))
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
            **settings,
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
            "zpg_over_bare_rollouts": timing.target(
                "ratio_zpg_over_bare_rollouts (env steps/s)",
                ratios["trajectories"],
                ZPG_TARGET_OVER_BARE,
            ),
            "zpg_over_bare_rollouts_as_zpg": timing.target(
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
