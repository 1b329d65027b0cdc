"""Speed of a vmapped batch of tuning trials against the same trials run one by one.

The trials of one structural group of paper_gridworld's tuning (ZPG: N 25, M 10, SGD; online DPO:
25 pairs, 1 update) on its first tuning layout at the full 1M-query budget, 3 seeds: once as one
compiled call vmapped over 16 trials, once as 16 calls of the same program without the trial
axis (compiled once). Both include compiling; the scores must agree. Writes
results/tune_speed.json. From the repository root:

    .venv/bin/python -m benchmarks.speed.tune_speed
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from zopg import store
from zopg.algorithms import registry
from zopg.experiments import load_experiment
from zopg.experiments.build import built_runs
from zopg.provenance import REPO_ROOT, environment, timestamp
from zopg.tuning import trials as trial_runs
from zopg.tuning.tune import parse_tune, tuning_experiment

CASES = {
    "zpg": {"num_pairs": 25, "optimizer": "sgd", "num_queries": 10},
    "dpo-online": {"num_pairs": 25, "updates_per_iteration": 1},
}


def measure(label: str, structure: dict, trials: int) -> dict:
    experiment = load_experiment(REPO_ROOT / "benchmarks/paper_gridworld.toml", include=False)
    spec = parse_tune(experiment, trials=trials, methods=[label])
    space = registry.get(
        next(m.algorithm for m in experiment.methods if m.label == label)
    ).search_space
    points = [dict(p, **structure) for p in space.sample(trials, spec.seed)]
    variant = tuning_experiment(experiment, spec, label, points[0])
    run = built_runs(variant)[0][-1]
    keys = trial_runs.seed_keys(spec.seed, spec.seeds)
    timings, scores = {}, {}
    for mode, vmapped in (("vmapped", True), ("trial_by_trial", False)):
        start = time.perf_counter()
        scores[mode] = trial_runs.score_group(run, points, space.traced_fields, keys, vmapped)
        timings[mode] = time.perf_counter() - start
    difference = float(np.max(np.abs(scores["vmapped"] - scores["trial_by_trial"])))
    return {
        "method": label,
        "structure": structure,
        "trials": trials,
        "seeds": spec.seeds,
        "iterations": run.training.num_iterations,
        "env": variant.envs[0].name,
        "seconds_vmapped": timings["vmapped"],
        "seconds_trial_by_trial": timings["trial_by_trial"],
        "speedup": timings["trial_by_trial"] / timings["vmapped"],
        "max_abs_value_difference": difference,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.tune_speed", description=__doc__
    )
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results/tune_speed.json")
    args = parser.parse_args(argv)
    report = {"benchmark": "tune_speed", "timestamp": timestamp(), **environment()}
    report["cases"] = []
    for label, structure in CASES.items():
        result = measure(label, structure, args.trials)
        report["cases"].append(result)
        print(
            f"{label}: {args.trials} trials x {result['seeds']} seeds x {result['iterations']} "
            f"iterations: vmapped {result['seconds_vmapped']:.1f} s, trial by trial "
            f"{result['seconds_trial_by_trial']:.1f} s, speed-up x{result['speedup']:.2f} "
            f"(max |difference| {result['max_abs_value_difference']:.2g})"
        )
    store.write_json_atomic(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
