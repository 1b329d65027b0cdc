"""Human queries the default ZPG and ZBCPG need to close 50% and 90% of the gap to the optimum."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

try:
    from benchmarks import _report
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import _report

from zopg.algorithms import ZBCPGConfig, ZPGConfig, zbcpg, zpg
from zopg.analysis import bootstrap_ci, first_crossing
from zopg.envs import make
from zopg.exact import optimal_value
from zopg.policies import make_policy
from zopg.preferences import Oracle, make_link

ENVS = ("gridworld/open-5x5", "gridworld/cliff-4x6")
ALGORITHMS = {"zpg": (zpg, ZPGConfig()), "zbcpg": (zbcpg, ZBCPGConfig())}
THRESHOLDS = (0.5, 0.9)


def _finite_or_none(x: float):
    return None if not np.isfinite(x) else float(x)


def measure(algo: str, env_id: str, num_seeds: int) -> dict:
    module, config = ALGORITHMS[algo]
    env, params = make(env_id)
    policy = make_policy("tabular", env, params)
    train = module.make_train(config, env, policy, Oracle(make_link("bradley-terry")))
    keys = jax.random.split(jax.random.key(0), num_seeds)
    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(train)).lower(keys).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(keys))
    run_s = time.perf_counter() - start

    v0 = float(metrics["exact/value_before"][0, 0])
    best = float(optimal_value(env.tabular_model(params)))
    gap = (np.asarray(metrics["exact/value"]) - v0) / (best - v0)
    queries = np.asarray(metrics["budget/queries"])
    result = {
        "config": {k: v for k, v in config.__dict__.items() if not callable(v)},
        "seeds": num_seeds,
        "budget_queries": int(queries[0, -1]),
        "initial_value": v0,
        "optimal_value": best,
        "final_gap_closed_median": float(np.median(gap[:, -1])),
        "final_gap_closed_ci95": bootstrap_ci(gap[:, -1]),
        "compile_s": compile_s,
        "run_s": run_s,
    }
    for threshold in THRESHOLDS:
        crossing = first_crossing(gap, queries, threshold)
        low, high = bootstrap_ci(crossing)
        result[f"queries_to_{int(threshold * 100)}pct"] = {
            "median": _finite_or_none(np.median(crossing)),
            "ci95": [_finite_or_none(low), _finite_or_none(high)],
            "seeds_reaching": int(np.isfinite(crossing).sum()),
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=_report.REPO_ROOT / "results/sample_efficiency.json"
    )
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds = {args.seeds}: must be >= 2 (confidence intervals need seeds)")
    started = time.perf_counter()
    results = {}
    print(f"{'method':7} {'env':22} {'queries to 50% (CI)':>30} {'queries to 90% (CI)':>30}")
    for algo in ALGORITHMS:
        for env_id in ENVS:
            r = measure(algo, env_id, args.seeds)
            results[f"{algo}/{env_id}"] = r
            cells = []
            for t in THRESHOLDS:
                q = r[f"queries_to_{int(t * 100)}pct"]
                fmt = lambda x: "never" if x is None else f"{x:.2e}"  # noqa: E731
                cells.append(f"{fmt(q['median'])} ({fmt(q['ci95'][0])}-{fmt(q['ci95'][1])})")
            print(f"{algo:7} {env_id:22} {cells[0]:>30} {cells[1]:>30}", flush=True)
    report = {
        "benchmark": "sample_efficiency",
        "description": "median over seeds of the human queries at which each seed first closes "
        "50% / 90% of the gap from the uniform policy's exact value to the finite-horizon "
        "optimum; 95% percentile bootstrap CI over seeds; Bradley-Terry teacher; default "
        "configs; tabular softmax policy",
        **_report.environment(),
        "results": results,
        "total_s": time.perf_counter() - started,
    }
    path = _report.write_json_atomic(args.out, report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
