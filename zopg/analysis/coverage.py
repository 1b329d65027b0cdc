"""Measured coverage of the paired-difference intervals on the shapes 10-seed runs produce
(normal, skewed, converge/stall mixtures, ties at a ceiling): the evidence behind
paired.CI_METHOD. `python -m zopg.analysis.coverage [PATH]` writes results/ci_coverage.json.

Each shape draws per-seed scores of a method and of its baseline (or the differences directly)
with a known true mean difference; every interval method sees the same simulated data sets and
the same bootstrap resamples, and its coverage is the share of data sets whose interval holds
the truth, with its binomial standard error. `outside_range` is the share of data sets whose
differences all fall on one side of the truth: no range-respecting interval covers those, and
no interval of the seeds' own spread does when, as in a mixture with no stalled seed, the
spread is tiny.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from zopg.analysis.paired import CI_METHOD, INTERVAL_METHODS, mean_intervals, resample_counts

CONVERGED = 0.99  # mean of a converged seed's score: 1 - Exponential(0.01), never above 1
STALLED = 0.45  # a seed stalled on a plateau: Normal(0.45, 0.03)
SIMULATIONS = 4000
NUM_SEEDS = 10
NUM_RESAMPLES = 2000
# Data sets per vectorised block: [block, resamples] arrays of 16 MB.
BLOCK = 1000


def _converged(rng, size):
    return 1.0 - rng.exponential(1.0 - CONVERGED, size)


def _mixture(rng, stall_rate, size):
    """Each seed converges, or with probability stall_rate stalls."""
    stalled = rng.random(size) < stall_rate
    return np.where(stalled, rng.normal(STALLED, 0.03, size), _converged(rng, size))


def _mixture_mean(stall_rate):
    return stall_rate * STALLED + (1.0 - stall_rate) * CONVERGED


def _ceiling(rng, fall_rate, size):
    """Exactly 1 (the ceiling, e.g. CartPole's 500), or with probability fall_rate 1 - Exp(0.2)."""
    fell = rng.random(size) < fall_rate
    return np.where(fell, 1.0 - rng.exponential(0.2, size), 1.0)


# name -> (description, sampler(rng, shape) -> paired differences, true mean difference)
SHAPES = {
    "normal": (
        "differences ~ Normal(0.1, 0.2)",
        lambda rng, size: rng.normal(0.1, 0.2, size),
        0.1,
    ),
    "skewed": (
        "differences ~ Exponential(0.1) - 0.05",
        lambda rng, size: rng.exponential(0.1, size) - 0.05,
        0.05,
    ),
    "stall-vs-converged": (
        "method: 80/20 mixture of converged (1 - Exp(0.01)) and stalled (Normal(0.45, 0.03)); "
        "baseline: always converged",
        lambda rng, size: _mixture(rng, 0.2, size) - _converged(rng, size),
        _mixture_mean(0.2) - CONVERGED,
    ),
    "stall-vs-stall": (
        "method and baseline: independent 80/20 converged/stalled mixtures",
        lambda rng, size: _mixture(rng, 0.2, size) - _mixture(rng, 0.2, size),
        0.0,
    ),
    "stall-vs-rare-stall": (
        "method: 80/20 mixture; baseline: 95/5 mixture",
        lambda rng, size: _mixture(rng, 0.2, size) - _mixture(rng, 0.05, size),
        _mixture_mean(0.2) - _mixture_mean(0.05),
    ),
    "ceiling-ties": (
        "method and baseline at exactly 1 (a ceiling), falling by Exp(0.2) with probability "
        "0.3 (method) and 0.1 (baseline): many exact ties",
        lambda rng, size: _ceiling(rng, 0.3, size) - _ceiling(rng, 0.1, size),
        -0.2 * 0.2,
    ),
}


def measure_coverage(
    shapes=tuple(SHAPES),
    methods=INTERVAL_METHODS,
    simulations: int = SIMULATIONS,
    num_seeds: int = NUM_SEEDS,
    num_resamples: int = NUM_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """shape -> {description, truth, outside_range, methods: method -> {coverage, se,
    median_width, unbounded}}; deterministic for a given seed (data set draws from `seed`, the
    resamples from `seed + 1`)."""
    counts = resample_counts(num_seeds, num_resamples, seed + 1)
    out = {}
    for name in shapes:
        description, sample, truth = SHAPES[name]
        data = sample(np.random.default_rng(seed), (simulations, num_seeds))
        outside = (data.min(axis=1) > truth) | (data.max(axis=1) < truth)
        results = {}
        for method in methods:
            low, high = np.concatenate(
                [
                    np.stack(mean_intervals(data[i : i + BLOCK], method, confidence, counts=counts))
                    for i in range(0, simulations, BLOCK)
                ],
                axis=1,
            )
            covered = (low <= truth) & (truth <= high)
            coverage = float(covered.mean())
            width = high - low
            results[method] = {
                "coverage": coverage,
                "se": math.sqrt(coverage * (1.0 - coverage) / simulations),
                # Of the data sets the truth lies within: what the seeds could have shown.
                "coverage_within_range": float(covered[~outside].mean()),
                "median_width": float(np.median(width)),
                "unbounded": float(np.mean(~np.isfinite(width))),
            }
        out[name] = {
            "description": description,
            "truth": float(truth),
            "outside_range": float(outside.mean()),
            "methods": results,
        }
    return out


def coverage_report(**kwargs) -> dict:
    settings = {
        "simulations": SIMULATIONS,
        "num_seeds": NUM_SEEDS,
        "num_resamples": NUM_RESAMPLES,
        "confidence": 0.95,
        "seed": 0,
        **kwargs,
    }
    return {
        "what": "coverage of intervals of the mean paired difference over seeds, measured on "
        "simulated data sets of the shapes zopg runs produce (zopg.analysis.coverage)",
        **settings,
        "chosen": CI_METHOD,
        "se": "binomial standard error of the coverage, sqrt(c (1 - c) / simulations)",
        "outside_range": "share of data sets with every difference on one side of the truth",
        "coverage_within_range": "coverage over the data sets whose differences span the truth",
        "shapes": measure_coverage(**settings),
    }


def format_report(report: dict) -> str:
    """Coverage per shape and method; `spans`: the share of data sets whose differences span
    the truth (what a range-respecting interval can cover at most); the last column: the chosen
    interval's coverage over those data sets."""
    methods = list(next(iter(report["shapes"].values()))["methods"])
    chosen = report["chosen"]
    lines = [
        f"coverage of {report['confidence']:.0%} intervals, {report['num_seeds']} seeds, "
        f"{report['simulations']} data sets, {report['num_resamples']} resamples "
        f"(chosen: {chosen})",
        f"{'shape':20} {'spans':>6}"
        + "".join(f" {m:>17}" for m in methods)
        + f" {'chosen, spanning':>17}",
    ]
    for name, shape in report["shapes"].items():
        cells = "".join(f" {shape['methods'][m]['coverage']:>17.3f}" for m in methods)
        within = shape["methods"][chosen]["coverage_within_range"]
        lines.append(f"{name:20} {1 - shape['outside_range']:>6.3f}{cells} {within:>17.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from zopg.store import write_json_atomic

    parser = argparse.ArgumentParser(prog="python -m zopg.analysis.coverage")
    parser.add_argument("out", nargs="?", default="results/ci_coverage.json")
    parser.add_argument("--seeds", type=int, default=NUM_SEEDS, help="seeds per data set")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.seeds < 3:
        parser.error(f"--seeds {args.seeds}: an interval needs at least 3 seeds")
    path = Path(args.out)
    report = coverage_report(num_seeds=args.seeds)
    write_json_atomic(path, report)
    print(format_report(report))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
