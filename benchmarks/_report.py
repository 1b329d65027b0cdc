"""Shared helpers for benchmarks: machine and version description, repeat timing, atomic JSON."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from zopg.experiments import store
from zopg.provenance import (  # noqa: F401  (re-exported for the benchmark scripts)
    REPO_ROOT,
    device,
    environment,
    git_revision,
    host,
    timestamp,
    versions,
)


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


def _jsonable(value):
    """Arrays and paths in benchmark results become lists and strings."""
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_atomic(path, data) -> Path:
    """Atomic JSON (see zopg.experiments.store): readers never see a half-written file."""
    return store.write_json_atomic(path, _walk(data))


def _walk(value):
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v) for v in value]
    return _jsonable(value)
