"""Throughput section `tokens_zpg`: bare sampling of token sequences from the SFT GRU (LoRA r 4)
against one ZPG run on the same policy with a Bradley-Terry teacher, per teacher and batch size.

An iteration of two-sided ZPG (one direction) rolls out N sequences at θ + μv and N at θ − μv,
2N in all, so N = B / 2 makes one iteration sample B sequences, as many as one bare call.

Two teachers, because the simulated human's cost is part of a ZPG iteration and is not ZPG's:
bigram-goodhart (a table lookup per token, next to nothing beside sampling) shows what ZPG adds
to sampling, and gold-gru (a random GRU twice as wide as the policy, read over every sequence)
what a costly simulated human adds on top.
"""

from __future__ import annotations

import time

import jax

import zopg.envs
import zopg.policies
import zopg.preferences
from benchmarks.speed import timing
from zopg.algorithms import ZPGConfig, make_training
from zopg.policies import num_params
from zopg.rollout import rollout_batch

# The bound: one ZPG iteration costs at most 1.25 times bare sampling of as many
# sequences, i.e. ZPG's sequences/s are at least 1 / 1.25 = 0.8 of bare sampling's.
ZPG_MAX_OVERHEAD = 1.25
TOKENS_ENV = "tokens/hmm-v16-l16"
TOKENS_POLICY = {"network": "gru", "parameterisation": "lora", "rank": 4}
# The teachers' golds, cheapest first (see the module docstring).
TOKENS_GOLDS = ("bigram-goodhart", "gold-gru")
TOKENS_LINK = "bradley-terry"
# ZPG as in the LM experiments' ZPG on LoRA (tests/test_lm_methods.py): one vote per pair,
# two-sided sphere directions, sgd. num_pairs is set from the batch: N = B / 2.
TOKENS_SETTINGS = {"num_queries": 1, "two_sided": True, "mu": 0.05, "step_size": 1e-5}
TOKENS_SIZES = {
    # One seed per batch. Rounds interleave one training run of `iterations` and as many bare
    # calls (one per iteration).
    "full": {"batches": [256, 4096], "iterations": 10, "rounds": 7},
    "quick": {"batches": [256], "iterations": 2, "rounds": 2},
}


def tokens_problem(gold: str):
    """The environment, the SFT GRU with LoRA adapters and a Bradley-Terry teacher on `gold`."""
    env, params = zopg.envs.make(TOKENS_ENV)
    policy = zopg.policies.make_policy("sft", env, params, **TOKENS_POLICY)
    utility = zopg.preferences.make_utility(gold).bind(env, params)
    oracle = zopg.preferences.Oracle(zopg.preferences.make_link(TOKENS_LINK), utility=utility)
    return env, params, policy, oracle


def measure_batch(problem, batch: int, iterations: int, rounds: int, settings: dict) -> dict:
    """One ZPG run of `iterations` iterations of `batch` sequences each vs as many bare calls."""
    env, params, policy, oracle = problem
    if batch % 2:
        raise ValueError(f"batch {batch}: must be even (two-sided ZPG rolls out 2N sequences)")
    config = ZPGConfig(num_iterations=iterations, num_pairs=batch // 2, **settings)
    # ZPG's own count of what an iteration rolls out (2N: N per side); the run's budget
    # counters are checked against it below.
    if int(config.unit_cost().trajectories) != batch:
        raise ValueError(f"ZPG with N = {batch // 2} does not roll out {batch} sequences")
    training = make_training(config, env, policy, oracle, params)
    compiled, run_keys, key_bare, compile_s = timing.compile_training(training, rounds)
    # Bare sampling of the policy ZPG starts from: one rollout_batch of B sequences per
    # iteration, keeping the sequences (the tokens); the rest of the Trajectory is dropped.
    # Beside it, the same sampling plus the teacher's gold utility of every sequence: what the
    # simulated human costs, which ZPG pays and RLHF with a real one would not.
    theta = training.final_params(training.init(run_keys[0]))
    bare_keys = jax.random.split(key_bare, (rounds + 1, iterations))

    def sample(key, theta, params):
        return rollout_batch(key, policy, theta, env, params, batch).action

    def sample_and_score(key, theta, params):
        traj = rollout_batch(key, policy, theta, env, params, batch)
        return traj.action, oracle.trajectory_utility(traj)

    bare, bare_compile_s = {}, {}
    for name, fn in (("sampling", sample), ("sampling_and_teacher", sample_and_score)):
        start = time.perf_counter()
        bare[name] = jax.jit(fn).lower(key_bare, theta, params).compile()
        bare_compile_s[name] = time.perf_counter() - start
    kept = {}

    def run_zpg(i):  # i = -1 is the warm-up round
        kept["metrics"] = metrics = compiled(run_keys[i + 1])[1]
        return metrics

    def bare_runner(name):
        def run(i):
            return [bare[name](k, theta, params) for k in bare_keys[i + 1]]

        return run

    runners = {"zpg": run_zpg, **{f"bare_{name}": bare_runner(name) for name in bare}}
    times = timing.time_interleaved(runners, rounds)
    sequences = iterations * batch
    length = env.horizon(params)

    zpg = {"compile_s": compile_s, "seeds": 1, "iterations": iterations}
    zpg.update(timing.rate_summary(times["zpg"], sequences, unit="sequences"))
    zpg["iterations_per_s"] = iterations / zpg["median_s"]
    zpg["tokens_per_s"] = zpg["sequences_per_s"] * length
    results, ratios, targets = {}, {}, {}
    for name in bare:
        result = {
            "compile_s": bare_compile_s[name],
            "sequences_per_call": batch,
            "calls_per_repeat": iterations,
        }
        result.update(timing.rate_summary(times[f"bare_{name}"], sequences, unit="sequences"))
        result["tokens_per_s"] = result["sequences_per_s"] * length
        results[name] = result
        ratios[name] = zpg["sequences_per_s"] / result["sequences_per_s"]
        targets[name] = overhead_target(f"ratio_zpg_over_bare_{name} (sequences/s)", ratios[name])
    results["sampling"]["calls"] = "rollout_batch of B sequences, returning the tokens"
    results["sampling_and_teacher"]["calls"] = (
        "rollout_batch of B sequences and the teacher's gold utility of each, returning both"
    )
    metrics = kept["metrics"]
    trajectories = int(metrics["budget/trajectories"][-1])
    queries = int(metrics["budget/queries"][-1])
    expected_queries = iterations * config.num_pairs * config.num_queries
    return {
        "batch": batch,
        "num_pairs": config.num_pairs,
        "sequences_per_iteration": batch,
        "zpg": zpg,
        "bare_sampling": results["sampling"],
        "bare_sampling_and_teacher": results["sampling_and_teacher"],
        "ratio_zpg_over_bare": ratios["sampling"],
        "zpg_overhead": 1.0 / ratios["sampling"],
        "ratio_zpg_over_bare_and_teacher": ratios["sampling_and_teacher"],
        "zpg_overhead_over_sampling_and_teacher": 1.0 / ratios["sampling_and_teacher"],
        "targets": {
            "zpg_over_bare_sampling": targets["sampling"],
            "zpg_over_bare_sampling_and_teacher": targets["sampling_and_teacher"],
        },
        # The last round's run: B sequences and N votes (M = 1) per iteration.
        "budget_counters": {
            "trajectories": trajectories,
            "queries": queries,
            "expected_trajectories": sequences,
            "expected_queries": expected_queries,
            "agree": trajectories == sequences and queries == expected_queries,
        },
    }


def overhead_target(metric: str, ratio: float) -> dict:
    """ZPG's sequences/s over a baseline's >= 1 / ZPG_MAX_OVERHEAD, said both ways round."""
    target = timing.target(metric, ratio, 1.0 / ZPG_MAX_OVERHEAD)
    target.update(
        {
            "zpg_overhead": 1.0 / ratio,
            "max_overhead": ZPG_MAX_OVERHEAD,
            "meaning": f"zpg overhead (baseline over ZPG sequences/s) <= {ZPG_MAX_OVERHEAD}",
        }
    )
    return target


def tokens_zpg(quick: bool, size: dict | None = None, settings: dict | None = None) -> dict:
    """Bare sampling vs one ZPG run on the SFT GRU (LoRA r 4), per teacher and batch of B
    sequences.

    `size` (keys as in TOKENS_SIZES) replaces the table's sizes and `settings` updates
    TOKENS_SETTINGS (not num_pairs, which is B / 2).
    """
    size = size or TOKENS_SIZES["quick" if quick else "full"]
    settings = {**TOKENS_SETTINGS, **(settings or {})}
    if "num_pairs" in settings:
        raise ValueError("num_pairs is set by the batch (N = B / 2); give `batches` instead")
    teachers, build_s = {}, {}
    for gold in TOKENS_GOLDS:
        start = time.perf_counter()
        problem = tokens_problem(gold)
        build_s[gold] = time.perf_counter() - start  # loads the SFT reference, binds the gold
        batches = {
            str(batch): measure_batch(problem, batch, size["iterations"], size["rounds"], settings)
            for batch in size["batches"]
        }
        teachers[gold] = {
            "oracle": f"Oracle({TOKENS_LINK}, utility={gold}), teacher without imperfections",
            "batches": batches,
        }
    env, params, policy, _ = problem
    d = num_params(policy.init(jax.random.key(0)))  # the LoRA factors ZPG perturbs
    return {
        "description": "per teacher and batch B: one ZPG training run on the token environment "
        "(1 seed, T iterations in one compiled call, each rolling out B = 2N sequences: N at "
        "θ + μv and N at θ − μv, scored by a Bradley-Terry teacher on the gold, one vote per "
        "pair) vs bare sampling, one rollout_batch call of B sequences per iteration of the same "
        "policy at ZPG's initial parameters keeping the sampled tokens, and vs the same sampling "
        "plus the teacher's gold utility of each sequence (the simulated human's cost, which ZPG "
        "pays); sequences/s over the run; medians over interleaved rounds; compile excluded. "
        "zpg_overhead = bare sampling's sequences/s over ZPG's (the issue's target: <= 1.25). "
        "Teachers: bigram-goodhart (a table lookup per token: ZPG's own overhead) and gold-gru "
        "(a random GRU of hidden 128, twice the policy's: a costly simulated human)",
        "config": {
            **size,
            "env": TOKENS_ENV,
            "sequence_length": env.horizon(params),
            "vocab": params.vocab,
            "policy": f"sft gru (embed {policy.embed}, hidden {policy.hidden}), lora rank "
            f"{policy.rank} on the frozen SFT reference (d = {d})",
            "d": d,
            "parameterisation": TOKENS_POLICY["parameterisation"],
            "rank": TOKENS_POLICY["rank"],
            "teachers": list(TOKENS_GOLDS),
            **settings,
            "direction": "sphere",
            "spend": "one-direction",
            "seeds": 1,
            "num_pairs": {str(b): b // 2 for b in size["batches"]},
            "sequences_per_iteration": "B = 2N (two-sided, one direction: N sequences at "
            "θ + μv and N at θ − μv), so N = B / 2",
            "problem_build_s": build_s,
        },
        "teachers": teachers,
        # The target per teacher and batch (against bare sampling), and the same bound
        # against sampling plus the teacher's scoring, which leaves out what the simulated human
        # costs.
        "targets": {
            f"{gold}_{name}_batch_{b}": r["targets"][name]
            for gold, teacher in teachers.items()
            for b, r in teacher["batches"].items()
            for name in ("zpg_over_bare_sampling", "zpg_over_bare_sampling_and_teacher")
        },
    }


def print_tokens(result: dict) -> None:
    c = result["config"]
    print(
        f"{c['env']}, {c['policy']}; T = {c['iterations']}, 1 seed, B = 2N sequences per iteration"
    )
    print(
        f"{'teacher':>16} {'B':>6} {'N':>5} {'zpg seq/s':>11} {'bare seq/s':>11} "
        f"{'+teacher':>11} {'overhead':>9} {'+teacher':>9} {'compile':>8}"
    )
    for gold, teacher in result["teachers"].items():
        for b, r in teacher["batches"].items():
            print(
                f"{gold:>16} {b:>6} {r['num_pairs']:>5} {r['zpg']['sequences_per_s']:11.3e} "
                f"{r['bare_sampling']['sequences_per_s']:11.3e} "
                f"{r['bare_sampling_and_teacher']['sequences_per_s']:11.3e} "
                f"{r['zpg_overhead']:9.2f} {r['zpg_overhead_over_sampling_and_teacher']:9.2f} "
                f"{r['zpg']['compile_s']:7.2f}s"
            )
    for name, t in result["targets"].items():
        print(
            f"target {name}: zpg overhead <= {t['max_overhead']:g} -> {t['zpg_overhead']:.2f} "
            f"({'met' if t['met'] else 'NOT met'})"
        )
    counters = [
        r["budget_counters"]["agree"]
        for teacher in result["teachers"].values()
        for r in teacher["batches"].values()
    ]
    print(f"budget counters (B trajectories, N queries per iteration) agree: {all(counters)}")
