"""The token family at matched queries (results/lm_methods): per gold and method, the gold at the
start, at its peak over the logged points and at the end; the drop from the peak to the end with
its interval over seeds; √KL to the reference at the peak and the end; and the queries each
method needs to reach RM+PPO's peak gold. Writes results/lm_methods/lm_methods.json (the table
block `lm_methods_curves` of docs/lm.md reads it).

Every number comes from metrics.csv: the gold is the evaluator's Monte Carlo value of the
teacher's utility (in the gold's reference sds) on 512 fresh sequences, the KL the per-prefix
estimate on the same sequences.

    .venv/bin/python -m benchmarks.reports.lm_methods_report [RESULTS_DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.reports.overoptimisation_report import run_report, stat
from zopg import store
from zopg.analysis.paired import CI_DESCRIPTIONS, CI_METHOD
from zopg.provenance import REPO_ROOT

DEFAULT_DIR = REPO_ROOT / "results" / "lm_methods"
# The method whose peak the others are asked to reach (the yardstick).
YARDSTICK = "rm-ppo"


def seed_curves(columns, env: str, method: str) -> dict:
    """[seeds, P + 1] arrays of queries, gold and KL, the initial policy's row first."""
    mask = (columns["env"] == env) & (columns["method"] == method)
    out = {}
    seeds = np.unique(columns["seed"][mask])
    for name in ("iteration", "queries", "value", "kl_to_reference"):
        rows = []
        for seed in seeds:
            found = np.flatnonzero(mask & (columns["seed"] == seed))
            order = found[np.argsort(columns["iteration"][found], kind="stable")]
            rows.append(np.asarray(columns[name][order], dtype=float))
        out[name] = np.stack(rows)
    if not np.all(out["iteration"][:, 0] == store.INITIAL_ITERATION):
        raise ValueError(f"{env} / {method}: metrics.csv has no initial rows; rerun the report")
    return out


def first_reach(queries, mean_gold, target) -> float | None:
    """The queries at the first logged point where the mean gold over seeds reaches target."""
    # A relative tolerance: the yardstick reaches its own peak (the two means are summed in
    # different orders).
    hit = np.flatnonzero(mean_gold >= target - 1e-9 * max(1.0, abs(target)))
    return float(queries[hit[0]]) if hit.size else None


def arm(curves: dict) -> dict:
    gold, kl, queries = curves["value"], curves["kl_to_reference"], curves["queries"]
    d = np.sqrt(np.maximum(kl, 0.0))
    gain = gold - gold[:, :1]
    mean = gain.mean(axis=0)
    # The peak of the seeds' mean curve, and each seed's gain there: the drop's interval is over
    # seeds at one shared point (each seed's own maximum would rise above its end by selection).
    peak = int(np.argmax(mean))
    return {
        "seeds": int(gold.shape[0]),
        "initial_gold": stat(gold[:, 0]),
        "peak_point": peak,
        "queries_at_peak": float(np.median(queries[:, peak])),
        "gain_at_peak": stat(gain[:, peak]),
        "gain_final": stat(gain[:, -1]),
        "drop": stat(gain[:, peak] - gain[:, -1]),
        "sqrt_kl_at_peak": stat(d[:, peak]),
        "sqrt_kl_final": stat(d[:, -1]),
        "seeds_ending_below_start": int(np.sum(gain[:, -1] < 0)),
        "queries_final": float(np.median(queries[:, -1])),
        "mean_queries": np.median(queries, axis=0).tolist(),
        "mean_gain": mean.tolist(),
        "mean_sqrt_kl": d.mean(axis=0).tolist(),
    }


def report(out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    columns = store.read_tidy(out_dir / "metrics.csv")
    summary = store.read_json(out_dir / "summary.json")
    golds = {}
    for env in dict.fromkeys(columns["env"]):
        arms = {
            method: arm(seed_curves(columns, env, method))
            for method in dict.fromkeys(columns["method"][columns["env"] == env])
        }
        if YARDSTICK in arms:
            target = arms[YARDSTICK]["gain_at_peak"]["mean"]
            for entry in arms.values():
                entry["queries_to_rm_ppo_peak"] = first_reach(
                    np.asarray(entry["mean_queries"]), np.asarray(entry["mean_gain"]), target
                )
        golds[env] = arms
    out = {
        "experiment": summary["experiment"],
        "seeds": summary["seeds"],
        "budget_queries": summary["budget_queries"],
        "gold": "the evaluator's Monte Carlo value of the teacher's utility on fresh sequences, "
        "in the gold's reference sds; gain = value minus the seed's initial value (the SFT "
        "reference's)",
        "peak": "the logged point where the mean gain over seeds is highest (the initial policy "
        "counts as a point); drop = each seed's gain there minus its final gain",
        "queries_to_rm_ppo_peak": "queries at the first logged point where a method's mean gain "
        f"reaches {YARDSTICK}'s peak mean gain; null: not within the budget",
        "ci": f"95% {CI_DESCRIPTIONS[CI_METHOD]} over seeds (zopg.analysis.paired)",
        "kl": "per-prefix estimate of KL(pi || pi_ref) over whole sequences on the evaluation's "
        "sequences (Evaluator.kl_estimate)",
        "golds": golds,
    }
    store.write_json_atomic(out_dir / "lm_methods.json", out)
    return out


def format_report(out: dict) -> str:
    def cell(s):
        if s["mean"] is None:
            return "n/a"
        low, high = s["ci95"]
        return f"{s['mean']:+.2f}" + ("" if low is None else f" [{low:+.2f}, {high:+.2f}]")

    lines = []
    for env, arms in out["golds"].items():
        lines.append(env)
        for method, a in arms.items():
            reach = a.get("queries_to_rm_ppo_peak")
            lines.append(
                f"  {method:14} peak {cell(a['gain_at_peak']):>22} at {a['queries_at_peak']:>8.0f}"
                f" q, √KL {a['sqrt_kl_at_peak']['mean']:.2f}; final {cell(a['gain_final']):>22},"
                f" √KL {a['sqrt_kl_final']['mean']:.2f}; drop {cell(a['drop']):>22}; "
                f"to RM+PPO's peak: {'-' if reach is None else f'{reach:.0f}'}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    return run_report(report, format_report, DEFAULT_DIR, argv)


if __name__ == "__main__":
    raise SystemExit(main())
