"""Queries to 50% / 90% of the gap, from the results of benchmarks/sample_efficiency.toml.

Reads results/sample_efficiency/metrics.csv (run `zopg run sample_efficiency` first; `make
bench-sample-efficiency` does both) and writes results/sample_efficiency.json: per method and
env, the median over seeds of the human queries at which a seed's normalised exact value first
reaches each threshold, with a 95% percentile bootstrap CI over seeds. Trains nothing. From the
repository root:

    .venv/bin/python -m benchmarks.reports.sample_efficiency
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from zopg import store
from zopg.analysis import bootstrap_ci, first_crossing
from zopg.provenance import REPO_ROOT, environment

THRESHOLDS = (0.5, 0.9)


def _finite_or_none(x: float):
    return None if not np.isfinite(x) else float(x)


def crossings(columns: dict, method: str, env: str) -> dict:
    """Queries to each threshold for one (method, env) run: median and CI over seeds."""
    mask = (columns["method"] == method) & (columns["env"] == env)
    seeds = np.unique(columns["seed"][mask])
    per_seed = [mask & (columns["seed"] == s) for s in seeds]
    score = np.stack([columns["score"][m] for m in per_seed])
    queries = np.stack([columns["queries"][m] for m in per_seed])
    result = {
        "seeds": len(seeds),
        "budget_queries": float(queries[:, -1].max()),
        "logged_points": score.shape[1],
        "final_gap_closed_median": float(np.median(score[:, -1])),
        "final_gap_closed_ci95": bootstrap_ci(score[:, -1]),
    }
    for threshold in THRESHOLDS:
        crossing = first_crossing(score, queries, threshold)
        low, high = bootstrap_ci(crossing)
        result[f"queries_to_{int(threshold * 100)}pct"] = {
            "median": _finite_or_none(np.median(crossing)),
            "ci95": [_finite_or_none(low), _finite_or_none(high)],
            "seeds_reaching": int(np.isfinite(crossing).sum()),
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reports.sample_efficiency", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results/sample_efficiency")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/sample_efficiency.json")
    args = parser.parse_args(argv)
    if not (args.results / "metrics.csv").exists():
        parser.error(f"{args.results}: no metrics.csv; run `zopg run sample_efficiency` first")
    # Crossings are read at the logged iterations, as before metrics.csv had initial rows.
    columns = store.logged_rows(store.read_tidy(args.results / "metrics.csv"))
    pairs = list(dict.fromkeys(zip(columns["method"], columns["env"], strict=True)))
    results = {}
    fmt = lambda x: "never" if x is None else f"{x:.2e}"  # noqa: E731
    print(f"{'method':7} {'env':22} {'queries to 50% (CI)':>30} {'queries to 90% (CI)':>30}")
    for method, env in pairs:
        r = results[f"{method}/{env}"] = crossings(columns, method, env)
        cells = []
        for t in THRESHOLDS:
            q = r[f"queries_to_{int(t * 100)}pct"]
            cells.append(f"{fmt(q['median'])} ({fmt(q['ci95'][0])}-{fmt(q['ci95'][1])})")
        print(f"{method:7} {env:22} {cells[0]:>30} {cells[1]:>30}")
    report = {
        "benchmark": "sample_efficiency",
        "description": "median over seeds of the human queries at which each seed first closes "
        "50% / 90% of the gap from the uniform policy's exact value to the finite-horizon "
        "optimum, read at the experiment's logged iterations; 95% percentile bootstrap CI over "
        "seeds; Bradley-Terry teacher; default configs; tabular softmax policy",
        "source": str(args.results.relative_to(REPO_ROOT))
        if args.results.is_relative_to(REPO_ROOT)
        else str(args.results),
        **environment(),
        "results": results,
    }
    path = store.write_json_atomic(args.out, report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
