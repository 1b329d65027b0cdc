"""What common random numbers change (zopg.algorithms.common_random_numbers), measured against
independent pairs in the same run.

On gridworld/cliff-4x6 and gridworld/open-5x5 with the default tabular policy (θ = 0, the
uniform policy) and a Bradley-Terry teacher:

- ZPG's value differences (its defaults: N 50 pairs, M 10 votes, r_max 2): the variance of Δ̂
  per pair and of its per-iteration mean, the fraction of free ties, and the queries actually
  spent per iteration, over random sphere directions, at the default μ 5 and at μ 1 and 0.5;
- ZSPO's signs (its defaults: N 20 votes on batches of D 4): the fraction of free ties, the
  queries spent, and the sign agreement P(ŝ = sign(V(θ + μv) − V(θ))) with exact values; at
  θ = 0 ΔV is too small for 20 votes to resolve, so also at one direction of a random policy
  on the cliff where it is (the setting of tests/test_sign_methods.py), against the closed form
  for independent batches;
- short runs of ZPG and ZSPO at their defaults and a fixed query budget, 10 shared seeds, with
  and without CRN: the final normalised score (exact), paired differences over the seeds
  (zopg.analysis.paired.compare_paired), and the queries the runs actually spent.

Each CRN number comes with its independent-pairs baseline from the same run and their ratio or
difference. Writes results/crn_effect.json. From the repository root:

    .venv/bin/python -m benchmarks.studies.crn_effect          # about 10 minutes on the 2-core CPU
    .venv/bin/python -m benchmarks.studies.crn_effect --quick  # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

from zopg import store
from zopg.algorithms import ZPGConfig, ZSPOConfig, make_train
from zopg.algorithms.base import Problem
from zopg.algorithms.sign_zo import make_majority_sign
from zopg.algorithms.zeroth_order import make_difference_fn
from zopg.analysis.paired import compare_paired
from zopg.envs import make
from zopg.estimators import sphere_direction
from zopg.evaluation import make_evaluator
from zopg.exact import normalized_score
from zopg.policies import flat_view, make_policy
from zopg.preferences import Oracle, make_link
from zopg.provenance import REPO_ROOT, environment, timestamp
from zopg.rates.setting import (
    Point,
    make_setting,
    return_distribution,
    sign_agreement,
)

ENVS = ("gridworld/cliff-4x6", "gridworld/open-5x5")
DEFAULT_MU = 5.0  # ZPGConfig's and ZSPOConfig's default
MUS = (DEFAULT_MU, 1.0, 0.5)


def setting(env_id: str):
    env, params = make(env_id)
    policy = make_policy("tabular", env, params)  # init_scale 0: the uniform policy
    oracle = Oracle(make_link("bradley-terry"))
    problem = Problem.build(env, policy, oracle)
    theta = flat_view(policy.init(jax.random.key(0)))[0]
    return env, policy, oracle, problem, theta


def directions(problem, count: int, seed: int) -> jax.Array:
    keys = jax.random.split(jax.random.key(seed), count)
    return jax.vmap(lambda k: sphere_direction(k, problem.dim))(keys)


def zpg_pairs(problem, theta, mu: float, vs, seed: int) -> dict:
    """Per-pair Δ̂ of ZPG's defaults along each direction, with and without CRN."""
    base = ZPGConfig(mu=mu)
    n, m = base.num_pairs, base.num_queries
    keys = jax.random.split(jax.random.key(seed), vs.shape[0])
    arms = {}
    for crn in (False, True):
        difference = make_difference_fn(ZPGConfig(mu=mu, common_random_numbers=crn), problem)
        one = lambda k, v, f=difference: f(k, theta + mu * v, theta, n)  # noqa: E731
        delta, spent = jax.jit(jax.vmap(one))(keys, vs)
        delta, queries = np.asarray(delta, np.float64), np.asarray(spent.queries)
        arms[crn] = {
            "var_delta_hat_per_pair": float(delta.var(ddof=1)),
            "var_delta_hat_mean_per_iteration": float(delta.mean(axis=1).var(ddof=1)),
            "mean_delta_hat": float(delta.mean()),
            "free_tie_fraction": float(1.0 - queries.mean() / (n * m)),
            "queries_per_iteration": float(queries.mean()),
        }
    off, on = arms[False], arms[True]
    return {
        "mu": mu,
        "directions": int(vs.shape[0]),
        "pairs_per_direction": n,
        "votes_per_pair": m,
        "independent": off,
        "crn": on,
        "variance_ratio_per_pair": on["var_delta_hat_per_pair"] / off["var_delta_hat_per_pair"],
        "variance_ratio_per_iteration": on["var_delta_hat_mean_per_iteration"]
        / off["var_delta_hat_mean_per_iteration"],
        "queries_ratio": on["queries_per_iteration"] / off["queries_per_iteration"],
    }


def zspo_signs(problem, theta, mu: float, vs, seed: int) -> dict:
    """ZSPO's default sign step along each direction: free ties, queries and sign agreement."""
    base = ZSPOConfig(mu=mu)
    value = jax.jit(jax.vmap(lambda v: problem.exact_value(theta + mu * v)))
    delta_v = np.asarray(value(vs)) - float(problem.exact_value(theta))
    keys = jax.random.split(jax.random.key(seed), vs.shape[0])
    arms = {}
    for crn in (False, True):
        majority = make_majority_sign(problem, base.num_votes, base.batch_size, crn)
        one = lambda k, v, f=majority: f(k, theta + mu * v, theta)  # noqa: E731
        sign, _, spent = jax.jit(jax.vmap(one))(keys, vs)
        queries = np.asarray(spent.queries)
        decided = delta_v != 0.0
        arms[crn] = {
            "sign_agreement": float(
                np.mean(np.asarray(sign)[decided] == np.sign(delta_v[decided]))
            ),
            "free_tie_fraction": float(1.0 - queries.mean() / base.num_votes),
            "queries_per_iteration": float(queries.mean()),
        }
    off, on = arms[False], arms[True]
    return {
        "mu": mu,
        "directions": int(vs.shape[0]),
        "votes": base.num_votes,
        "batch_size": base.batch_size,
        "independent": off,
        "crn": on,
        "sign_agreement_difference": on["sign_agreement"] - off["sign_agreement"],
        "queries_ratio": on["queries_per_iteration"] / off["queries_per_iteration"],
    }


def zspo_fixed_direction(repeats: int) -> list[dict]:
    """ZSPO's sign agreement where ΔV is resolvable: the cliff at a random policy (logits
    N(0, 1), seed 2) along one direction with μ 3, where V(θ + μv) − V(θ) = 0.095 (the setting
    of tests/test_sign_methods.py), 21 votes; against the closed form for independent batches."""
    point = make_setting(Point("gridworld/cliff-4x6", policy_seed=2, logit_scale=1.0))
    base, theta = point.problem, point.theta
    v = sphere_direction(jax.random.key(2), point.dim)
    mu, votes = 3.0, 21
    support, probs = return_distribution(base)
    delta = float(base.exact_value(theta + mu * v) - base.exact_value(theta))
    rows = []
    for name in ("bradley-terry", "hard"):
        link = make_link(name)
        problem = Problem.build(base.env, base.policy, Oracle(link), base.env_params)
        for batch_size in (1, 4):
            closed_form = sign_agreement(
                link, support, probs(theta + mu * v), probs(theta), delta, batch_size, votes
            )
            row = {"teacher": name, "batch_size": batch_size, "closed_form": closed_form}
            keys = jax.random.split(jax.random.key(batch_size), repeats)
            for arm, crn in (("independent", False), ("crn", True)):
                majority = make_majority_sign(problem, votes, batch_size, crn)
                sign, _, spent = jax.jit(jax.vmap(majority, in_axes=(0, None, None)))(
                    keys, theta + mu * v, theta
                )
                row[arm] = float(np.mean(np.asarray(sign) == np.sign(delta)))
                row[f"{arm}_queries_per_sign"] = float(np.mean(np.asarray(spent.queries)))
            row["standard_error"] = float(np.sqrt(closed_form * (1 - closed_form) / repeats))
            row["crn_minus_closed_form"] = row["crn"] - closed_form
            rows.append(row)
    return rows


def short_runs(env, policy, oracle, config, budget: int, seeds: int) -> dict:
    """Final normalised scores of `seeds` shared seeds with and without CRN, at `budget`."""
    evaluator = make_evaluator(env, env.default_params, policy)
    low, high = evaluator.bounds
    keys = jax.random.split(jax.random.key(0), seeds)
    arms = {}
    for crn in (False, True):
        budgeted = dataclasses.replace(config, common_random_numbers=crn).with_budget(budget)
        train = make_train(budgeted, env, policy, oracle)
        start = time.perf_counter()
        params, metrics = jax.block_until_ready(jax.jit(jax.vmap(train))(keys))
        seconds = time.perf_counter() - start
        values = jax.vmap(lambda p: evaluator.value(jax.random.key(0), p)[0])(params)
        scores = np.asarray(normalized_score(np.asarray(values, np.float64), low, high))
        queries = np.asarray(metrics["budget/queries"])[:, -1]
        arms[crn] = {
            "iterations": budgeted.num_iterations,
            "scores": scores.tolist(),
            "mean_score": float(scores.mean()),
            "queries_spent": queries.tolist(),
            "mean_queries_spent": float(queries.mean()),
            "seconds": seconds,
        }
    off, on = arms[False], arms[True]
    paired = compare_paired(np.asarray(on["scores"]) - np.asarray(off["scores"]))
    return {
        "method": type(config).__name__.removesuffix("Config").lower(),
        "budget_queries": budget,
        "seeds": seeds,
        "independent": off,
        "crn": on,
        "score_difference": {k: paired[k] for k in ("mean_difference", "ci", "ci_method", "p")},
        "queries_spent_ratio": on["mean_queries_spent"] / off["mean_queries_spent"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.crn_effect", description=__doc__
    )
    parser.add_argument("--directions", type=int, default=400)
    parser.add_argument("--budget", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=4000, help="sign steps, fixed direction")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/crn_effect.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.directions, args.budget, args.seeds, args.repeats = 20, 10_000, 3, 200
    report = {"benchmark": "crn_effect", "timestamp": timestamp(), **environment()}
    report["settings"] = {
        "teacher": "bradley-terry",
        "policy": "tabular, θ = 0 (uniform)",
        "directions": args.directions,
        "budget_queries": args.budget,
        "seeds": args.seeds,
        "mus": list(MUS),
    }
    report["envs"] = {}
    for env_id in ENVS:
        env, policy, oracle, problem, theta = setting(env_id)
        vs = directions(problem, args.directions, seed=1)
        result = {"zpg_pairs": [], "zspo_signs": [], "runs": []}
        for mu in MUS:
            pairs = zpg_pairs(problem, theta, mu, vs, seed=2)
            signs = zspo_signs(problem, theta, mu, vs, seed=3)
            result["zpg_pairs"].append(pairs)
            result["zspo_signs"].append(signs)
            print(
                f"{env_id} μ {mu:g}: ZPG Var Δ̂ ratio {pairs['variance_ratio_per_pair']:.3f}, "
                f"free ties {pairs['crn']['free_tie_fraction']:.3f}; ZSPO free ties "
                f"{signs['crn']['free_tie_fraction']:.3f}, agreement "
                f"{signs['independent']['sign_agreement']:.3f} -> "
                f"{signs['crn']['sign_agreement']:.3f}",
                flush=True,
            )
        for config in (ZPGConfig(), ZSPOConfig()):
            run = short_runs(env, policy, oracle, config, args.budget, args.seeds)
            result["runs"].append(run)
            diff = run["score_difference"]
            print(
                f"{env_id} {run['method']}: score {run['independent']['mean_score']:.3f} -> "
                f"{run['crn']['mean_score']:.3f} (paired {diff['mean_difference']:+.3f}, CI "
                f"{diff['ci']}, p {diff['p']:.3g}); queries spent "
                f"x{run['queries_spent_ratio']:.3f}",
                flush=True,
            )
        report["envs"][env_id] = result
    report["zspo_fixed_direction"] = zspo_fixed_direction(args.repeats)
    for row in report["zspo_fixed_direction"]:
        print(
            f"ZSPO cliff fixed direction, {row['teacher']} D {row['batch_size']}: agreement "
            f"closed form {row['closed_form']:.3f}, independent {row['independent']:.3f}, "
            f"crn {row['crn']:.3f} (SE {row['standard_error']:.3f})",
            flush=True,
        )
    store.write_json_atomic(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
