"""After the runs: tidy metrics.csv, summary.json, manifest.json and the figures, from the store."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from zopg import store
from zopg.analysis.stats import MIN_SEEDS_FOR_CI, bootstrap_ci, first_crossing, iqm
from zopg.errors import ConfigError
from zopg.exact import normalized_score
from zopg.provenance import device, git_revision, host, versions


def normaliser(run: dict):
    """value -> (V - V_uniform) / (V* - V_uniform): 0 at the uniform policy, 1 at the optimum;
    NaN where the run has no such bounds (Monte Carlo evaluation)."""
    low, high = run["uniform_value"], run["optimal_value"]
    if low is None or high is None or not np.isfinite(high - low) or high == low:
        return lambda v: np.full_like(np.asarray(v, dtype=float), np.nan)
    return lambda v: normalized_score(np.asarray(v, dtype=float), low, high)


def seed_statistics(values) -> dict:
    """Mean, IQM, median and the 95% bootstrap CI of the mean, over seeds."""
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)):
        return {"mean": None, "iqm": None, "median": None, "ci95": [None, None]}
    low, high = bootstrap_ci(values, np.mean)
    return {
        "mean": float(values.mean()),
        "iqm": float(iqm(values)),
        "median": float(np.median(values)),
        "ci95": [low, high],
    }


def queries_to_threshold(run: dict, threshold: float) -> dict:
    """Human queries at which each seed's score (value, without a score) first reaches the
    threshold, read at the logged iterations: median and 95% bootstrap CI over seeds (None
    where a seed never gets there, as an infinite value)."""
    metrics = run["metrics"]
    value = store.tidy_column(metrics, "value")
    score = normaliser(run)(value)
    curve = value if np.all(np.isnan(score)) else score
    crossing = first_crossing(curve, metrics["budget/queries"], threshold)
    low, high = bootstrap_ci(crossing, np.median)
    finite = lambda x: float(x) if np.isfinite(x) else None  # noqa: E731
    iterations = first_crossing(curve, np.asarray(run["iterations"]) + 1, threshold)
    judged = first_crossing(curve, metrics["budget/judged_trajectories"], threshold)
    return {
        "threshold": threshold,
        "of": "value" if curve is value else "score",
        "median": finite(np.median(crossing)),
        "ci95": [finite(low), finite(high)],
        "seeds_reaching": int(np.isfinite(crossing).sum()),
        # The same crossing counted in iterations (rounds) and in judged trajectories.
        "iterations_median": finite(np.median(iterations)),
        "judged_trajectories_median": finite(np.median(judged)),
    }


def summarise_run(run: dict, threshold: float | None = None) -> dict:
    metrics = run["metrics"]
    final = {name: values[:, -1] for name, values in metrics.items()}
    found = store.tidy_column(metrics, "value")
    value = np.full(run["seeds"], np.nan) if found is None else found[:, -1]
    extra = {} if threshold is None else {"to_threshold": queries_to_threshold(run, threshold)}
    broken = non_finite(run)
    if broken is not None:
        extra["non_finite"] = broken
    kl = store.tidy_column(metrics, "kl_to_reference")
    if kl is not None:
        # The exact trajectory KL of the final policy to the seed's initial policy.
        extra["kl_to_reference"] = seed_statistics(kl[:, -1])
    return {
        "method": run["method"],
        "algorithm": run["algorithm"],
        "reference": run["reference"],
        "env": run["env"],
        "link": run["link"],
        "sweep": run.get("sweep", {}),
        "iterations": run["num_iterations"],
        "seeds": run["seeds"],
        **{
            column: float(np.mean(final[store.TIDY_METRICS[column]]))
            for column in ("queries", "trajectories", "judged_trajectories", "env_steps")
        },
        "evaluation": run["evaluation"],
        "value": seed_statistics(value),
        "initial_value": seed_statistics(run["initial_value"]),
        "score": seed_statistics(normaliser(run)(value)),
        "uniform_value": run["uniform_value"],
        "optimal_value": run["optimal_value"],
        **extra,
        # The algorithm's own metrics at the last logged iteration, mean over seeds (e.g. RM+PPO's
        # charts/model_return, the return under its reward model, beside the true value).
        "final_metrics": {
            name: _nanmean(values[:, -1])
            for name, values in metrics.items()
            if not name.startswith(("budget/", "eval/"))
        },
    }


def non_finite(run: dict) -> dict | None:
    """Where a run's metrics stopped being finite: how many seeds, from which logged iteration,
    which metrics; None when every value is finite. The seed statistics of such a run are None
    (seed_statistics never averages a NaN away), and this says why."""
    iterations = np.asarray(run["iterations"])
    bad, names = None, []
    # Metrics the algorithm declares NaN when undefined (e.g. an accuracy over a batch of ties).
    undefined = set(run.get("nan_when_undefined", ()))
    for name, values in run["metrics"].items():
        if name in undefined:
            continue
        flags = ~np.isfinite(np.asarray(values, dtype=float))
        if flags.any():
            names.append(name)
            bad = flags if bad is None else bad | flags
    if bad is None:
        return None
    return {
        "seeds": int(bad.any(axis=1).sum()),
        "from_iteration": int(iterations[bad.any(axis=0).argmax()]),
        "metrics": sorted(names),
    }


def _nanmean(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else None


def load_runs(out_dir) -> tuple[dict, list[tuple[str, dict]], list[str], list[str]]:
    """(experiment record, [(run id, run)], [ids of runs not finished], [ids of stale runs]) of
    a results folder; each run is labelled with its panel's link and sweep point (one run may
    serve several: a reference every link panel, a run the swept field does not touch every
    sweep point). A run file whose run hash is not the one the experiment planned (made with
    other settings) is stale: left out and named, never merged."""
    record = store.read_experiment(out_dir)
    runs_dir = Path(out_dir) / "runs"
    loaded, runs, missing, stale = {}, [], [], []
    for entry in record["runs"]:
        rid = entry["run_id"]
        if not RUN_ID.fullmatch(rid):
            # A run id is a file name inside runs/: "../other/runs/x" would merge a foreign run.
            raise ConfigError(
                f"{Path(out_dir) / store.EXPERIMENT_FILE}: run id {rid!r} is not a file name"
            )
        if rid not in loaded:
            found = store.finished_run_hash(runs_dir, rid)
            expected = entry.get("run_hash")  # absent in folders written before it was stored
            if found is not None and expected is not None and found != expected:
                stale.append(rid)
                loaded[rid] = None
            else:
                # Shards still running, or a run that failed: report what is there. A damaged
                # run file is named and left out; it blocks no other run.
                try:
                    loaded[rid] = store.load_run(runs_dir, rid) if found else None
                except ConfigError as err:
                    print(f"zopg: {err}; left out", file=sys.stderr)
                    loaded[rid] = None
                if loaded[rid] is None:
                    missing.append(rid)
        if loaded[rid] is not None:
            runs.append(
                (rid, {**loaded[rid], "link": entry["link"], "sweep": entry.get("sweep", {})})
            )
    return record, runs, missing, stale


# What the runner names runs: labels and slugs joined by "__", no path separators.
RUN_ID = re.compile(r"(?!\.\.?$)[^/\\\x00]+")


def write_reports(out_dir) -> dict:
    """metrics.csv, summary.json, manifest.json and figures from the folder's run files."""
    from zopg.analysis.plots import plot_results

    out_dir = Path(out_dir)
    record, labelled, missing, stale = load_runs(out_dir)
    if not labelled:
        raise ConfigError(
            f"{out_dir}: none of the experiment's {len(missing)} runs has finished yet"
        )
    runs = [run for _, run in labelled]
    sweep_labels = [s["label"] for s in record.get("sweeps", [])]
    threshold = record.get("evaluation", {}).get("threshold")
    tidy = [
        {
            **{k: run[k] for k in ("method", "algorithm", "reference", "env", "link", "sweep")},
            "iterations": run["iterations"],
            "metrics": run["metrics"],
            "normalise": normaliser(run),
            # Each seed's row before training: curves start where nothing was spent.
            "initial_value": run["initial_value"],
            "initial_value_se": run.get("initial_value_se"),
        }
        for run in runs
    ]
    store.write_tidy(out_dir / "metrics.csv", tidy, sweep_labels)
    summary = {
        "experiment": record["name"],
        "budget_queries": record["budget_queries"],
        "budget_unit": record.get("budget_unit", "queries"),
        "seeds": record["seeds"],
        "value": "the evaluator's value of the teacher's utility: exact V(θ) where the env has "
        "an exact model, else the Monte Carlo mean over fresh episodes",
        "score": "(V - V_uniform) / (V* - V_uniform); V exact, V* the finite-horizon optimum",
        "ci": "95% percentile bootstrap over seeds",
        "sweeps": record.get("sweeps", []),
        "results": [summarise_run(run, threshold) for run in runs],
    }
    if missing:
        # Only when there are some: a complete folder's summary is the same however it was run.
        summary["missing_runs"] = missing
    if stale:
        summary["stale_runs"] = stale
    store.write_json_atomic(out_dir / "summary.json", summary)
    distinct = dict(labelled)
    manifest = {
        "experiment": record["name"],
        "source": record["source"],
        "config_hash": record["config_hash"],
        "config": {k: v for k, v in record.items() if k not in ("runs", "source")},
        "git": git_revision(),
        "versions": versions(),
        "host": host(),
        "device": device(),
        "runs": {
            rid: {
                "num_iterations": run["num_iterations"],
                # Runs written before init_s was measured lack it (their eval_s holds it).
                "init_s": run.get("init_s", 0.0),
                "compile_s": run["compile_s"],
                "run_s": run["run_s"],
                "eval_s": run["eval_s"],
                "devices": run["devices"],
            }
            for rid, run in distinct.items()
        },
        # Over distinct runs (a reference run is shared by the link panels).
        "init_s": sum(run.get("init_s", 0.0) for run in distinct.values()),
        "compile_s": sum(run["compile_s"] for run in distinct.values()),
        "run_s": sum(run["run_s"] for run in distinct.values()),
        "eval_s": sum(run["eval_s"] for run in distinct.values()),
        "wall_s_this_invocation": record.get("wall_s_this_invocation"),
    }
    store.write_json_atomic(out_dir / "manifest.json", manifest)
    plot_results(out_dir)
    return summary


def format_summary(summary: dict) -> str:
    """The summary table as text: one line per run, numbers exactly as in summary.json."""

    def fmt(x, spec=".3f"):
        return "n/a" if x is None else format(x, spec)

    scored = any(r["score"]["mean"] is not None for r in summary["results"])
    # Without an exact model there is no normalised score: show where each run started and the
    # IQM of its return instead of three columns of n/a.
    extra_header = (
        f"{'score':>7} {'score 95% CI':>17} {'IQM':>7}"
        if scored
        else f"{'initial':>8} {'value IQM':>9}"
    )
    header = (
        f"{'method':14} {'env':22} {'link':14} {'queries':>10} {'value':>8} "
        f"{'value 95% CI':>19} {extra_header}"
    )
    # The numbers stay as summary.json has them; below MIN_SEEDS_FOR_CI the header says not to
    # trust the intervals (the figures draw none).
    few = summary["seeds"] < MIN_SEEDS_FOR_CI or any(
        r["seeds"] < MIN_SEEDS_FOR_CI for r in summary["results"]
    )
    lines = [
        f"{summary['experiment']}: {summary['seeds']} seeds, budget "
        f"{summary['budget_queries']:,} {summary.get('budget_unit', 'queries').replace('_', ' ')}; "
        + (f"score = {summary['score']}" if scored else f"value = {summary.get('value', '')}"),
    ]
    if few:
        lines.append(
            f"WARNING n < {MIN_SEEDS_FOR_CI} seeds: the 95% CIs are unreliable (a bootstrap over "
            "so few seeds is far too narrow)"
        )
    lines.append(header)
    for r in summary["results"]:
        queries = "reference" if r["reference"] else f"{r['queries']:.3g}"
        point = ",".join(f"{k}={v}" for k, v in r.get("sweep", {}).items())
        method = f"{r['method']} [{point}]" if point else r["method"]
        s, v = r["score"], r["value"]
        v_ci = f"[{fmt(v['ci95'][0])}, {fmt(v['ci95'][1])}]"
        if scored:
            ci = f"[{fmt(s['ci95'][0])}, {fmt(s['ci95'][1])}]"
            extra = f"{fmt(s['mean']):>7} {ci:>17} {fmt(s['iqm']):>7}"
        else:
            initial = (r.get("initial_value") or {}).get("mean")
            extra = f"{fmt(initial):>8} {fmt(v['iqm']):>9}"
        lines.append(
            f"{method:14} {r['env']:22} {r['link']:14} {queries:>10} {fmt(v['mean']):>8} "
            f"{v_ci:>19} {extra}"
        )
    for r in summary["results"]:
        broken = r.get("non_finite")
        if broken:
            # Only the value decides whether the table's statistics are n/a; an algorithm's
            # diagnostic may be undefined on its own (a label accuracy over no strict pairs).
            consequence = (
                "; its value statistics are n/a" if "eval/value" in broken["metrics"] else ""
            )
            lines.append(
                f"! {r['method']} on {r['env']} ({r['link']}): {', '.join(broken['metrics'])} "
                f"non-finite in {broken['seeds']} of {r['seeds']} seeds from iteration "
                f"{broken['from_iteration']}{consequence}"
            )
    return "\n".join(lines)
