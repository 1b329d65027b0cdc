"""Queries to a gold threshold against the number of perturbed parameters (results/lm_dimension):
per method and parameterisation, the number d of parameters the method perturbs, each seed's
queries to each gold gain in THRESHOLDS (reference sds; the first logged point at or above), their
median, the final gain, and per method the least-squares slope of log(median queries) against
log d with a seed-bootstrap interval. Writes results/lm_dimension/lm_dimension.json (the block
`lm_dimension` of docs/lm.md reads it).

    .venv/bin/python -m benchmarks.reports.lm_dimension_report [RESULTS_DIR]
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from benchmarks.reports.lm_methods_report import seed_curves
from benchmarks.reports.overoptimisation_report import run_report, stat
from zopg import store
from zopg.envs import make
from zopg.policies import make_policy
from zopg.provenance import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "results" / "lm_dimension"
# Gold gains (reference sds): a quarter and a half of a reference sd, fixed before the runs;
# 2 and 4, added after them because every arm had passed the first two by mid-budget and was
# still rising (their crossings read only the start of the curves).
FIXED_BEFORE_RUNS = (0.25, 0.5)
THRESHOLDS = (*FIXED_BEFORE_RUNS, 2.0, 4.0)
BOOTSTRAP = 2000


def perturbed_parameters(env_entry: dict, experiment: dict) -> int:
    """d: the size of the parameters the method moves under the entry's parameterisation."""
    overrides = {k: v for k, v in env_entry.get("overrides", {}).items()}
    env, env_params = make(env_entry["id"], **overrides)
    options = env_entry.get("policy_params") or experiment.get("policy_params") or {}
    name = env_entry.get("policy") or experiment["policy"]
    policy = make_policy(name, env, env_params, **options)
    params = policy.init(jax.random.PRNGKey(0))
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def crossings(queries, gain, threshold: float) -> np.ndarray:
    """Per seed, the queries at the first logged point with gain >= threshold (inf: never)."""
    out = np.full(gain.shape[0], np.inf)
    for seed in range(gain.shape[0]):
        hit = np.flatnonzero(gain[seed] >= threshold)
        if hit.size:
            out[seed] = queries[seed, hit[0]]
    return out


def median_or_none(values: np.ndarray) -> float | None:
    """The median over seeds, None when it is not reached (more than half never crossed)."""
    median = float(np.median(values))
    return median if np.isfinite(median) else None


def slope(ds, medians) -> float | None:
    """Least-squares slope of log(medians) against log(ds) over the finite points (>= 3)."""
    ds, medians = np.asarray(ds, float), np.asarray(medians, float)
    keep = np.isfinite(medians)
    if keep.sum() < 3:
        return None
    return float(np.polyfit(np.log(ds[keep]), np.log(medians[keep]), 1)[0])


def slope_interval(ds, per_seed: list[np.ndarray], seed: int = 0) -> list[float | None]:
    """95% percentile interval of the slope over resampled seeds (the same resample of seed
    indices for every d: the seeds are shared across parameterisations)."""
    rng = np.random.default_rng(seed)
    n = len(per_seed[0])
    slopes = []
    for _ in range(BOOTSTRAP):
        pick = rng.integers(0, n, n)
        medians = [np.median(c[pick]) for c in per_seed]
        value = slope(ds, medians)
        if value is not None:
            slopes.append(value)
    if len(slopes) < 0.9 * BOOTSTRAP:
        # Too many resamples never reach the threshold at three or more d: no interval.
        return [None, None]
    return [float(np.quantile(slopes, 0.025)), float(np.quantile(slopes, 0.975))]


def report(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    columns = store.read_tidy(out_dir / "metrics.csv")
    experiment = store.read_json(out_dir / "experiment.json")
    summary = store.read_json(out_dir / "summary.json")
    entries = {e.get("label") or e["id"]: e for e in experiment["envs"]}
    dims = {label: perturbed_parameters(entry, experiment) for label, entry in entries.items()}
    order = sorted(dims, key=dims.get)
    methods = {}
    for method in dict.fromkeys(columns["method"]):
        rows, per_threshold = [], {t: [] for t in THRESHOLDS}
        for label in order:
            curves = seed_curves(columns, label, method)
            gain = curves["value"] - curves["value"][:, :1]
            row = {
                "parameterisation": label,
                "d": dims[label],
                "final_gain": stat(gain[:, -1]),
                "sqrt_kl_final": stat(np.sqrt(np.maximum(curves["kl_to_reference"][:, -1], 0))),
            }
            for t in THRESHOLDS:
                cross = crossings(curves["queries"], gain, t)
                per_threshold[t].append(cross)
                row[f"queries_to_{t}"] = {
                    "median": median_or_none(cross),
                    "per_seed": [None if not np.isfinite(c) else float(c) for c in cross],
                }
            rows.append(row)
        ds = [dims[label] for label in order]
        fits = {}
        for t in THRESHOLDS:
            medians = [np.median(c) for c in per_threshold[t]]
            fits[str(t)] = {
                "slope": slope(ds, medians),
                "ci95": slope_interval(ds, per_threshold[t]),
                "points": int(np.isfinite(medians).sum()),
            }
        methods[method] = {"rows": rows, "slopes": fits}
    out = {
        "experiment": summary["experiment"],
        "seeds": summary["seeds"],
        "budget_queries": summary["budget_queries"],
        "thresholds": list(THRESHOLDS),
        "thresholds_fixed_before_runs": list(FIXED_BEFORE_RUNS),
        "queries": "per seed, the queries at the first logged point whose gold gain over the "
        "seed's start reaches the threshold (reference sds); the median over seeds is null when "
        "more than half never reach it within the budget",
        "slope": "least squares of log(median queries) against log d over the parameterisations "
        f"whose median is reached (at least 3); 95% percentile interval over {BOOTSTRAP} "
        "resamples of the seeds, shared across d",
        "methods": methods,
    }
    store.write_json_atomic(out_dir / "lm_dimension.json", out)
    return out


def format_report(out: dict) -> str:
    lines = []
    for method, entry in out["methods"].items():
        lines.append(method)
        for row in entry["rows"]:
            reach = [row[f"queries_to_{t}"]["median"] for t in out["thresholds"]]
            text = ", ".join("-" if r is None else f"{r:,.0f}" for r in reach)
            final, d = row["final_gain"]["mean"], row["sqrt_kl_final"]["mean"]
            lines.append(
                f"  {row['parameterisation']:8} d {row['d']:6}: final {final:+.2f}, √KL {d:.2f}; "
                f"queries to {out['thresholds']}: {text}"
            )
        for t, fit in entry["slopes"].items():
            lines.append(f"  slope at {t}: {fit['slope']} {fit['ci95']} ({fit['points']} points)")
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_report(report, format_report, DEFAULT_DIR, argv)


if __name__ == "__main__":
    raise SystemExit(main())
