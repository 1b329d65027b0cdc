"""Timing of the speed benchmarks: repeat and interleaved timing, rates, targets, tolerances."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def time_repeats(fn: Callable[[int], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `fn(i)` for i in range(repeats), after `warmup` untimed calls.

    Results are passed through `jax.block_until_ready` so asynchronous dispatch is not mistaken
    for speed; plain Python/NumPy results pass through unchanged.
    """
    import jax

    for i in range(warmup):
        jax.block_until_ready(fn(-1 - i))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(i))
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(
    fns: dict[str, Callable[[int], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Like `time_repeats` for several functions, timed in rounds of one call each.

    On a shared CPU the load changes over time; interleaving exposes every function to the same
    slow and fast phases, so ratios between them are steadier than with back-to-back blocks.
    """
    import jax

    for i in range(warmup):
        for fn in fns.values():
            jax.block_until_ready(fn(-1 - i))
    times = {name: [] for name in fns}
    for i in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(i))
            times[name].append(time.perf_counter() - start)
    return times


# A Monte Carlo check agrees with its reference when within this many standard errors.
TOLERANCE_SE = 5.0


def target(metric: str, value: float, minimum: float) -> dict:
    """A benchmark target: the metric, its value in this run, the bound and whether it was met."""
    return {"metric": metric, "min_ratio": minimum, "value": value, "met": value >= minimum}


def rate_summary(times: list[float], work: float, unit: str = "steps") -> dict:
    """Median rate (work per second) plus every repeat, so noise is visible in the record."""
    median = statistics.median(times)
    return {
        f"{unit}_per_repeat": work,
        "repeats_s": [round(t, 6) for t in times],
        "median_s": median,
        f"{unit}_per_s": work / median,
        f"{unit}_per_s_all": [work / t for t in times],
    }


def compile_training(training, rounds: int):
    """A training's train(key) compiled once (compile time kept apart from the timed runs):
    (compiled, the key of each round with a warm-up round first, a key for the baseline side,
    compile seconds)."""
    import jax

    key_runs, key_bare = jax.random.split(jax.random.key(0))
    run_keys = jax.random.split(key_runs, rounds + 1)
    start = time.perf_counter()
    compiled = jax.jit(training.train).lower(run_keys[0]).compile()
    return compiled, run_keys, key_bare, time.perf_counter() - start
